//! "Silent while overdue" and the deadline structure that drives it.
//!
//! A device's silence clock starts at the later of its last event (any event: position,
//! heartbeat, login, alarm; by `received_at`, so buffered fixes with old fix times still count)
//! and its registration. It is armed only while the loan is `overdue` and no silence alert is
//! outstanding, and fires `silence_after` later (per-device override, else the wired or
//! wireless default), but never before `daemon_start + startup_grace`: deadlines that fall into
//! the grace fire at its end, so devices get a chance to reconnect after the daemon's downtime
//! and only the ones that stay silent alert.
//!
//! [`SilenceTracker`] holds one deadline per device, ordered, for 1,000,000 devices: O(log n)
//! per change, no scans, deadlines kept at one-second resolution (rounded up, so never early).

use super::{DeviceRuleState, RuleConfig, VehicleContext};
use crate::event::{DeviceId, Timestamp};
use crate::fast_hash::FastMap;
use crate::registry::{DeviceBinding, DeviceKind, LoanStatus};
use std::collections::BTreeSet;
use std::hash::Hash;
use std::time::Duration;

/// The silence threshold that applies to a device.
pub fn silence_after(cfg: &RuleConfig, ctx: &VehicleContext<'_>) -> Duration {
    threshold(cfg, ctx.device)
}

/// The silence threshold of a device binding: its own, else its kind's default.
pub fn threshold(cfg: &RuleConfig, device: &DeviceBinding) -> Duration {
    device.silence_after.unwrap_or(match device.kind {
        DeviceKind::Wired => cfg.silence_after,
        DeviceKind::Wireless => cfg.silence_after_wireless,
    })
}

/// Heard from within its silence threshold at `now`. What a tracker last said of the car (outside
/// its fence, in a zone) speaks for the car only while the tracker still speaks: one that died or
/// was thrown away there must not hold the car's excursion open for good.
pub fn heard_lately(
    cfg: &RuleConfig,
    device: &DeviceBinding,
    state: &DeviceRuleState,
    now: Timestamp,
) -> bool {
    let limit = threshold(cfg, device).as_millis().min(i64::MAX as u128) as i64;
    state.last_seen.is_some_and(|t| now.since(t) < limit)
}

/// When the silence clock started: the later of the last event and the registration.
pub fn silence_base(state: &DeviceRuleState) -> Option<Timestamp> {
    match (state.last_seen, state.registered_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// When a `silent_overdue` alert is due for this device, if one can be.
pub fn deadline(
    cfg: &RuleConfig,
    grace_end: Timestamp,
    ctx: &VehicleContext<'_>,
    state: &DeviceRuleState,
) -> Option<Timestamp> {
    if ctx.vehicle.loan.status != LoanStatus::Overdue || state.silent_alerted {
        return None;
    }
    let due = silence_base(state)?.add(silence_after(cfg, ctx));
    Some(due.max(grace_end))
}

/// Ordered deadlines for one key type, updated lazily.
///
/// Nearly every update comes from a device speaking, which only moves its deadline later. Such
/// an update touches the hash map alone (O(1)); the ordered set keeps the older, earlier entry,
/// and when that entry comes due, `pop_due` finds the real deadline in the map and re-queues it.
/// Only a deadline moving earlier, or being cleared, touches the set (O(log n)). Each key has
/// exactly one entry in `order`, at `queued <= deadline`.
struct Queue<K> {
    /// Key -> (deadline, where it is queued in `order`).
    at: FastMap<K, (u64, u64)>,
    order: BTreeSet<(u64, K)>,
}

impl<K: Ord + Hash + Clone> Queue<K> {
    fn new() -> Self {
        Queue {
            at: FastMap::default(),
            order: BTreeSet::new(),
        }
    }

    fn set(&mut self, k: K, ms: Option<u64>) {
        match (ms, self.at.get_mut(&k)) {
            (Some(s), Some((deadline, queued))) => {
                if s >= *queued {
                    *deadline = s;
                } else {
                    let old = *queued;
                    *deadline = s;
                    *queued = s;
                    self.order.remove(&(old, k.clone()));
                    self.order.insert((s, k));
                }
            }
            (Some(s), None) => {
                self.at.insert(k.clone(), (s, s));
                self.order.insert((s, k));
            }
            (None, Some(_)) => {
                if let Some((_, queued)) = self.at.remove(&k) {
                    self.order.remove(&(queued, k));
                }
            }
            (None, None) => {}
        }
    }

    fn get(&self, k: &K) -> Option<u64> {
        self.at.get(k).map(|(d, _)| *d)
    }

    /// The earliest queued entry: never later than the earliest deadline, so sleeping until it
    /// never misses one (it may wake early once per stale entry).
    fn first(&self) -> Option<u64> {
        self.order.first().map(|(s, _)| *s)
    }

    fn pop_due(&mut self, now_ms: u64, out: &mut Vec<K>) {
        while let Some((s, _)) = self.order.first() {
            if *s > now_ms {
                break;
            }
            let Some((_, k)) = self.order.pop_first() else {
                break;
            };
            match self.at.get_mut(&k) {
                Some((deadline, _)) if *deadline <= now_ms => {
                    self.at.remove(&k);
                    out.push(k);
                }
                Some((deadline, queued)) => {
                    // Stale: the device spoke since; queue it at its real deadline.
                    *queued = *deadline;
                    self.order.insert((*deadline, k));
                }
                None => {}
            }
        }
    }
}

/// Pending silence deadlines of all devices.
///
/// Device ids that are plain numbers (IMEIs, phone numbers: nearly all of them) are kept as
/// `u64`, so an entry costs a few dozen bytes and no string; other ids fall back to a second
/// queue keyed by [`DeviceId`]. Deadlines are milliseconds since the epoch: an alert on the
/// clock is raised at its moment, not up to a second after it (CONTRACT.md: within 1 s).
pub struct SilenceTracker {
    numeric: Queue<u64>,
    other: Queue<DeviceId>,
}

impl Default for SilenceTracker {
    fn default() -> Self {
        Self::new()
    }
}

enum Key {
    Num(u64),
    Other,
}

fn key(id: &DeviceId) -> Key {
    let s = id.as_str();
    // Leading zeros would not survive the round trip through a number.
    if s.len() <= 19 && (s == "0" || !s.starts_with('0')) && s.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.parse::<u64>() {
            return Key::Num(n);
        }
    }
    Key::Other
}

fn to_ms(t: Timestamp) -> u64 {
    t.millis().max(0) as u64
}

fn from_ms(ms: u64) -> Timestamp {
    Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

impl SilenceTracker {
    pub fn new() -> Self {
        SilenceTracker {
            numeric: Queue::new(),
            other: Queue::new(),
        }
    }

    /// Sets (or with `None` clears) the device's deadline: O(1) when it moves later (a device
    /// speaking), O(log n) otherwise.
    pub fn set(&mut self, id: &DeviceId, deadline: Option<Timestamp>) {
        let ms = deadline.map(to_ms);
        match key(id) {
            Key::Num(n) => self.numeric.set(n, ms),
            Key::Other => self.other.set(id.clone(), ms),
        }
    }

    /// The device's pending deadline.
    pub fn deadline(&self, id: &DeviceId) -> Option<Timestamp> {
        let s = match key(id) {
            Key::Num(n) => self.numeric.get(&n),
            Key::Other => self.other.get(id),
        }?;
        Some(from_ms(s))
    }

    /// How long the engine may sleep: never later than the earliest pending deadline (it can be
    /// earlier, once per deadline that moved later; `pop_due` then returns nothing for it).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let s = match (self.numeric.first(), self.other.first()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(from_ms(s))
    }

    /// Removes and returns every device whose deadline is at or before `now`, earliest first
    /// within each key kind. Call [`super::Rules::on_silence_due`] for each.
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<DeviceId> {
        let now = to_ms(now);
        let mut nums = Vec::new();
        self.numeric.pop_due(now, &mut nums);
        let mut out: Vec<DeviceId> = nums
            .into_iter()
            .map(|n| DeviceId::new(&n.to_string()))
            .collect();
        self.other.pop_due(now, &mut out);
        out
    }

    /// Number of pending deadlines.
    pub fn len(&self) -> usize {
        self.numeric.at.len() + self.other.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Deadlines keyed by anything else (vehicle ids for `all_silent`), ordered the same lazy way
/// as [`SilenceTracker`]: O(1) when a deadline moves later, no scans.
pub struct DeadlineQueue<K>(Queue<K>);

impl<K: Ord + Hash + Clone> Default for DeadlineQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Hash + Clone> DeadlineQueue<K> {
    pub fn new() -> Self {
        DeadlineQueue(Queue::new())
    }

    /// Sets (or with `None` clears) the key's deadline.
    pub fn set(&mut self, k: K, deadline: Option<Timestamp>) {
        self.0.set(k, deadline.map(to_ms));
    }

    pub fn deadline(&self, k: &K) -> Option<Timestamp> {
        self.0.get(k).map(from_ms)
    }

    /// Never later than the earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.0.first().map(from_ms)
    }

    /// Removes and returns every key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<K> {
        let mut out = Vec::new();
        self.0.pop_due(to_ms(now), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s)
    }

    #[test]
    fn tracker_orders_updates_and_pops() {
        let mut t = SilenceTracker::new();
        assert_eq!(t.next_deadline(), None);
        t.set(&id("868120145233604"), Some(Timestamp::from_secs(300)));
        t.set(&id("13912345678"), Some(Timestamp::from_secs(100)));
        // Leading zero and over-long ids take the string path and still work.
        t.set(&id("0042"), Some(Timestamp::from_secs(200)));
        t.set(
            &id("123456789012345678901234"),
            Some(Timestamp::from_secs(250)),
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.next_deadline(), Some(Timestamp::from_secs(100)));
        // Moving a deadline later replaces it (no duplicate entry) lazily: the old entry wakes
        // the engine once, pops nothing, and is re-queued at the real deadline.
        t.set(&id("13912345678"), Some(Timestamp::from_secs(400)));
        assert_eq!(t.len(), 4);
        assert_eq!(
            t.deadline(&id("13912345678")),
            Some(Timestamp::from_secs(400))
        );
        assert!(t.next_deadline() <= Some(Timestamp::from_secs(200)));
        assert!(t.pop_due(Timestamp::from_secs(150)).is_empty());
        assert_eq!(t.next_deadline(), Some(Timestamp::from_secs(200)));
        // Moving a deadline earlier takes effect at once.
        t.set(&id("0042"), Some(Timestamp::from_secs(180)));
        assert_eq!(t.next_deadline(), Some(Timestamp::from_secs(180)));
        t.set(&id("0042"), Some(Timestamp::from_secs(200)));
        assert!(t.pop_due(Timestamp::from_secs(199)).is_empty());
        let due = t.pop_due(Timestamp::from_secs(300));
        assert_eq!(due.len(), 3);
        assert!(due.contains(&id("868120145233604")));
        assert!(due.contains(&id("0042")));
        assert!(due.contains(&id("123456789012345678901234")));
        assert_eq!(t.deadline(&id("0042")), None);
        assert_eq!(t.len(), 1);
        t.set(&id("13912345678"), None);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        assert!(t.pop_due(Timestamp::from_secs(10_000)).is_empty());
    }

    /// Due at the millisecond, neither early nor up to a second late.
    #[test]
    fn deadlines_fall_due_at_their_millisecond() {
        let mut t = SilenceTracker::new();
        t.set(&id("1"), Some(Timestamp::from_millis(1_500)));
        assert_eq!(t.deadline(&id("1")), Some(Timestamp::from_millis(1_500)));
        assert_eq!(t.next_deadline(), Some(Timestamp::from_millis(1_500)));
        assert!(t.pop_due(Timestamp::from_millis(1_499)).is_empty());
        assert_eq!(t.pop_due(Timestamp::from_millis(1_500)), vec![id("1")]);
        // Far past and far future clamp instead of wrapping.
        t.set(&id("2"), Some(Timestamp::from_millis(-5_000)));
        t.set(&id("3"), Some(Timestamp::from_millis(i64::MAX)));
        assert_eq!(t.pop_due(Timestamp::from_secs(0)), vec![id("2")]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn lazy_tracker_pops_exactly_what_an_eager_model_pops() {
        use std::collections::BTreeMap;
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..50 {
            let mut t = SilenceTracker::new();
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            let mut now = 0u32;
            for _ in 0..400 {
                let dev = rng.u64(1..40);
                match rng.u8(0..10) {
                    0 => {
                        t.set(&id(&dev.to_string()), None);
                        model.remove(&dev);
                    }
                    1..=7 => {
                        let d = now + rng.u32(0..100);
                        t.set(
                            &id(&dev.to_string()),
                            Some(Timestamp::from_secs(i64::from(d))),
                        );
                        model.insert(dev, d);
                    }
                    _ => {
                        now += rng.u32(0..30);
                        let mut got: Vec<u64> = t
                            .pop_due(Timestamp::from_secs(i64::from(now)))
                            .iter()
                            .map(|d| d.as_str().parse().unwrap())
                            .collect();
                        got.sort();
                        let want: Vec<u64> = model
                            .iter()
                            .filter(|(_, &d)| d <= now)
                            .map(|(&k, _)| k)
                            .collect();
                        model.retain(|_, d| *d > now);
                        assert_eq!(got, want, "at {now}");
                        // Sleeping until next_deadline never oversleeps a real deadline.
                        let earliest = model.values().min().copied();
                        let next = t.next_deadline().map(|t| t.secs() as u32);
                        assert!(earliest.is_none() || next.is_some_and(|n| n <= earliest.unwrap()));
                    }
                }
                assert_eq!(t.len(), model.len());
            }
        }
    }
}
