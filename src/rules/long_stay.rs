//! `long_stay`: the vehicle has stayed at one spot (as for places) for `rules.long_stay_after`
//! (长期停留; CONTRACT.md "Alerts added"). A car parked for days where it never goes has often
//! been handed to a pawn lot; one parked at home has not: `usual_place` tells them apart.
//!
//! Per vehicle: one [`StayTracker`] fed with the valid GNSS fixes of all its devices (the stay
//! rule of places itself, so "a stay" means the same in both), whether its newest fix came in
//! live, and the open episode. Pure: time comes in.
//!
//! - The stay counts up to the vehicle's last word, as places count a device's last stay: the
//!   threshold is a deadline on the clock (`since + long_stay_after`), reached once one of the
//!   vehicle's devices is heard from at or after it. A parked tracker that only sends heartbeats
//!   reaches it at its first heartbeat past the deadline, a sleeping one at its next wake-up; a
//!   car not heard from since is not known to have stayed (it is silent, which silence tells).
//! - Only a stay whose newest fix arrived live (within [`LIVE_WITHIN_MS`] of its fix time) counts
//!   up to the clock: a device uploading last week's buffered fixes builds stays it has long left,
//!   and raises nothing until a live fix shows the vehicle still there.
//! - Reaching the threshold opens the episode as *pending*: whether the spot is a usual place
//!   takes 30 days of history, which the engine reads off its thread; the answer
//!   ([`LongStayState::resolve`]) raises the alert if that episode is still open. One alert per
//!   episode; the episode ends when the tracker's spot changes (the vehicle left).

use super::{AlertDraft, RuleConfig};
use crate::alert::AlertType;
use crate::places::extent::NoCover;
use crate::places::{Fix, Place, StayTracker};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A fix received this long after its fix time is an upload from the device's memory, not news
/// of where the vehicle is now.
pub const LIVE_WITHIN_MS: i64 = 30 * 60 * 1000;

/// How many of the vehicle's largest places count as usual (CONTRACT.md: the two largest).
pub const USUAL_PLACES: usize = 2;

/// The days of history `usual_place` looks at.
pub const USUAL_DAYS: u32 = 30;

/// The open episode, named by when the vehicle arrived at the spot.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Episode {
    /// The threshold was reached; the places answer is awaited.
    Pending { since: Timestamp },
    /// The alert was raised.
    Alerted { since: Timestamp, usual: bool },
}

impl Episode {
    pub fn since(self) -> Timestamp {
        match self {
            Episode::Pending { since } | Episode::Alerted { since, .. } => since,
        }
    }
}

/// A stay that reached the threshold: what the places check needs.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Threshold {
    pub since: Timestamp,
    pub lat: f64,
    pub lon: f64,
}

/// What the rule remembers about one vehicle; persisted with the alert it raises.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct LongStayState {
    /// Without the covering octagon, which only places read.
    tracker: StayTracker<NoCover>,
    /// The newest fix fed arrived live.
    live: bool,
    episode: Option<Episode>,
    /// The deadline the caller's queue holds for this vehicle ([`LongStayState::arm`]); not
    /// persisted: the queue is rebuilt at start.
    #[serde(skip)]
    armed: Option<Timestamp>,
    /// Where its bytes wait in the caller's [`Unsaved`] list, if they may still; not persisted.
    #[serde(skip)]
    slot: Option<u32>,
    /// What the last copy handed to the caller's [`Unsaved`] held; not persisted.
    #[serde(skip)]
    saved: Option<Saved>,
}

/// The parts of a state that decide what it raises, as last handed out for writing.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Saved {
    since: Option<Timestamp>,
    live: bool,
    episode: Option<Episode>,
    newest: Option<Timestamp>,
}

/// A state whose stay only grew is written again once its newest fix is this much newer than
/// the stored one's.
pub const REWRITE_AFTER_MS: i64 = 10 * 60 * 1000;

/// Changed states waiting for the caller's next write, each encoded when it changed.
///
/// Why encode then rather than at the write: a commit holds hundreds of vehicles, and by the
/// time it is written their states have left the cache; encoding a state while the fix that
/// changed it has it at hand saves those misses. A state changed again before the write replaces
/// its own entry (the state remembers where it is), so each vehicle is written once per commit.
/// The bytes share one buffer, kept from commit to commit: no allocation per state.
pub struct Unsaved<K> {
    /// Key and where its bytes lie in `bytes` (`None`: delete).
    items: Vec<(K, Option<(u32, u32)>)>,
    bytes: Vec<u8>,
}

impl<K> Default for Unsaved<K> {
    fn default() -> Self {
        Unsaved {
            items: Vec::new(),
            bytes: Vec::new(),
        }
    }
}

impl<K: PartialEq + Clone> Unsaved<K> {
    /// Encodes `state` as it is now, for `key`.
    pub fn put(&mut self, key: &K, state: &mut LongStayState) {
        let Ok(range) = crate::encode::append(&*state, &mut self.bytes) else {
            return;
        };
        let (Ok(start), Ok(end)) = (u32::try_from(range.start), u32::try_from(range.end)) else {
            // Over 4 GiB waiting in one commit: keep the list exact rather than wrap.
            self.bytes.truncate(range.start);
            return;
        };
        state.saved = Some(state.snapshot());
        self.set(key, Some((start, end)), &mut state.slot);
    }

    /// The state of `key` is gone: delete it at the next write.
    pub fn delete(&mut self, key: &K) {
        self.set(key, None, &mut None);
    }

    fn set(&mut self, key: &K, bytes: Option<(u32, u32)>, slot: &mut Option<u32>) {
        // The slot may be from a list taken since: it counts only if it still holds this key.
        // A replaced entry's old bytes stay in the buffer unread until the write.
        if let Some(item) = slot
            .and_then(|i| self.items.get_mut(i as usize))
            .filter(|(k, _)| k == key)
        {
            item.1 = bytes;
            return;
        }
        *slot = u32::try_from(self.items.len()).ok();
        self.items.push((key.clone(), bytes));
    }

    /// Hands everything to write to `write` (bytes, or `None`: delete), in the order first
    /// changed; the list starts empty again.
    pub fn write_all(&mut self, mut write: impl FnMut(&K, Option<&[u8]>)) {
        let bytes = &self.bytes;
        for (k, range) in &self.items {
            // Every range was appended to this buffer since it was last cleared.
            write(k, range.map(|(a, b)| &bytes[a as usize..b as usize]));
        }
        self.items.clear();
        self.bytes.clear();
    }
}

impl LongStayState {
    pub fn new(cfg: &RuleConfig) -> LongStayState {
        LongStayState {
            tracker: StayTracker::with_cover(cfg.stay_radius_m, cfg.stay_min),
            live: false,
            episode: None,
            armed: None,
            slot: None,
            saved: None,
        }
    }

    /// Follows the config's stay rule (at start and on reload): the tracker is stored with the
    /// rule it was made under.
    pub fn reconfigure(&mut self, cfg: &RuleConfig) {
        self.tracker.set_rule(cfg.stay_radius_m, cfg.stay_min);
    }

    fn snapshot(&self) -> Saved {
        Saved {
            since: self.tracker.spot().map(|s| s.since),
            live: self.live,
            episode: self.episode,
            newest: self.tracker.newest(),
        }
    }

    /// Whether the stored copy falls short of this state in what it decides: the spot's arrival
    /// (the deadline counts from it), whether it is live, the episode; or more than
    /// [`REWRITE_AFTER_MS`] of fixes at the same spot. A parked car's next fixes there change
    /// only the centre's weights and the last fix time, so writing each of them would cost one
    /// store write per fix for nothing a restart needs: a kill loses at most those minutes of
    /// weights, never the arrival or an episode.
    pub fn needs_save(&self) -> bool {
        let Some(s) = self.saved else {
            return true;
        };
        let now = self.snapshot();
        if (s.since, s.live, s.episode) != (now.since, now.live, now.episode) {
            return true;
        }
        match (s.newest, now.newest) {
            (Some(a), Some(b)) => b.since(a) >= REWRITE_AFTER_MS,
            (a, b) => a != b,
        }
    }

    /// Feeds one fix of any of the vehicle's devices, received at `received_at`. Returns the
    /// episode it ended (the vehicle left the spot), if any. Invalid, LBS and out-of-order fixes
    /// change nothing.
    pub fn on_fix(&mut self, fix: &Fix, received_at: Timestamp) -> Option<Episode> {
        let accepted = fix.valid
            && !fix.lbs
            && !(fix.lat.abs() < 1e-6 && fix.lon.abs() < 1e-6)
            && self.tracker.newest().is_none_or(|t| fix.time >= t);
        if !accepted {
            return None;
        }
        self.tracker.push(fix);
        if self.tracker.newest() != Some(fix.time) {
            return None;
        }
        self.live = received_at.since(fix.time) <= LIVE_WITHIN_MS;
        let since = self.tracker.spot().map(|s| s.since);
        match self.episode {
            Some(e) if Some(e.since()) != since => self.episode.take(),
            _ => None,
        }
    }

    /// When the current stay reaches the threshold, if that can raise anything.
    pub fn deadline(&self, cfg: &RuleConfig) -> Option<Timestamp> {
        if self.episode.is_some() || !self.live {
            return None;
        }
        let s = self.tracker.spot()?;
        if s.unresolved {
            return None;
        }
        Some(s.since.add(cfg.long_stay_after))
    }

    /// The deadline the caller must put in its queue, if any: only when it has none there or an
    /// earlier one is due. A later or vanished deadline leaves the queued one (the usual case, a
    /// fix at the same spot or on the move, touches no queue): when it falls due, the caller
    /// calls [`LongStayState::disarm`] and [`LongStayState::on_due`], which checks again, and
    /// arms anew.
    pub fn arm(&mut self, cfg: &RuleConfig) -> Option<Timestamp> {
        let d = self.deadline(cfg)?;
        if self.armed.is_some_and(|a| a <= d) {
            return None;
        }
        self.armed = Some(d);
        Some(d)
    }

    /// The caller's queue no longer holds a deadline for this vehicle (it fell due, or the queue
    /// was rebuilt).
    pub fn disarm(&mut self) {
        self.armed = None;
    }

    /// The deadline fell due, and the vehicle was last heard from at `heard`: if that is at or
    /// after the deadline, the episode opens (pending) and the places check it needs. Otherwise
    /// nothing: the caller arms the deadline again at the vehicle's next word.
    pub fn on_due(
        &mut self,
        cfg: &RuleConfig,
        now: Timestamp,
        heard: Timestamp,
    ) -> Option<Threshold> {
        let due = self.deadline(cfg)?;
        if due > now || due > heard {
            return None;
        }
        let cur = self.tracker.current(now)?;
        // In whole milliseconds, as the deadline is: a threshold of "72h 1ns" is due at 72h.
        if cur.duration.as_millis() < cfg.long_stay_after.as_millis() {
            return None;
        }
        self.episode = Some(Episode::Pending { since: cur.since });
        Some(Threshold {
            since: cur.since,
            lat: cur.lat,
            lon: cur.lon,
        })
    }

    /// The places answer for the episode that began at `since`: the alert, if that episode is
    /// still open and has not raised one.
    pub fn resolve(&mut self, since: Timestamp, usual: bool, now: Timestamp) -> Option<AlertDraft> {
        if self.episode != Some(Episode::Pending { since }) {
            return None;
        }
        let spot = self.tracker.spot()?;
        self.episode = Some(Episode::Alerted { since, usual });
        let round = |x: f64| (x * 1e6).round() / 1e6;
        Some(AlertDraft {
            kind: AlertType::LongStay,
            details: json!({
                "lat": round(spot.lat),
                "lon": round(spot.lon),
                "since": since,
                "stayed_s": now.since(since).max(0) / 1000,
                "usual_place": usual,
            }),
        })
    }

    /// The open episode's places check, if it is still awaited (after a restart).
    /// An episode at a spot outside the vehicle's usual places raised its alert and is still
    /// open: what the `long_stay_unusual` risk reason lasts for.
    pub fn unusual_open(&self) -> bool {
        matches!(self.episode, Some(Episode::Alerted { usual: false, .. }))
    }

    pub fn pending(&self) -> Option<Threshold> {
        let Some(Episode::Pending { since }) = self.episode else {
            return None;
        };
        let s = self.tracker.spot()?;
        Some(Threshold {
            since,
            lat: s.lat,
            lon: s.lon,
        })
    }

    pub fn episode(&self) -> Option<Episode> {
        self.episode
    }

    /// Compact binary form for the store (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::encode::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, super::StateDecodeError> {
        Ok(postcard::from_bytes(b)?)
    }
}

/// Whether a spot is one of the vehicle's usual places: within reach of one of its
/// [`USUAL_PLACES`] largest (`places` largest first, as places orders them). A stay joins a place
/// when its centre is within `stay_radius_m` of one of the place's stays, whose centres all lie
/// within the place's `radius_m` of its centre.
pub fn is_usual(places: &[Place], lat: f64, lon: f64, stay_radius_m: f64) -> bool {
    use geo::{Distance, Haversine, Point};
    places.iter().take(USUAL_PLACES).any(|p| {
        Haversine.distance(Point::new(p.lon, p.lat), Point::new(lon, lat))
            <= f64::from(p.radius_m) + stay_radius_m
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: i64 = 1_795_305_600_000;

    /// What a write would receive, as owned pairs.
    fn take<K: PartialEq + Clone>(u: &mut Unsaved<K>) -> Vec<(K, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        u.write_all(|k, b| out.push((k.clone(), b.map(<[u8]>::to_vec))));
        out
    }
    const MIN: i64 = 60_000;
    const H: i64 = 60 * MIN;
    const HOME: (f64, f64) = (22.543096, 114.057865);
    const LOT: (f64, f64) = (22.619538, 113.979967);

    fn cfg() -> RuleConfig {
        RuleConfig {
            long_stay_after: Duration::from_secs(72 * 3600),
            ..RuleConfig::default()
        }
    }

    fn fix(t: i64, (lat, lon): (f64, f64)) -> Fix {
        Fix {
            time: Timestamp(t),
            lat,
            lon,
            valid: true,
            lbs: false,
        }
    }

    /// Feeds a live fix (received 5 s after it was taken).
    fn live(s: &mut LongStayState, t: i64, p: (f64, f64)) -> Option<Episode> {
        s.on_fix(&fix(t, p), Timestamp(t + 5000))
    }

    #[test]
    fn a_parked_car_is_written_on_arrival_every_ten_minutes_and_when_it_leaves() {
        fn feed(
            s: &mut LongStayState,
            u: &mut Unsaved<&'static str>,
            writes: &mut Vec<i64>,
            t: i64,
            p: (f64, f64),
        ) {
            live(s, t, p);
            if s.needs_save() {
                u.put(&"V", s);
                writes.push(t);
            }
        }
        let c = cfg();
        let mut s = LongStayState::new(&c);
        let mut u = Unsaved::default();
        let mut w = Vec::new();
        // A fix a minute for 25 minutes at the lot.
        for m in 0..25 {
            feed(&mut s, &mut u, &mut w, T0 + m * MIN, LOT);
        }
        assert_eq!(w, vec![T0, T0 + 10 * MIN, T0 + 20 * MIN]);
        // A jump away is held back, not written; back at the lot, nothing new either.
        w.clear();
        feed(&mut s, &mut u, &mut w, T0 + 25 * MIN, HOME);
        feed(&mut s, &mut u, &mut w, T0 + 26 * MIN, LOT);
        assert!(w.is_empty());
        // Leaving (three fixes away): the new spot's arrival is written.
        for m in 27..30 {
            feed(&mut s, &mut u, &mut w, T0 + m * MIN, HOME);
        }
        assert_eq!(w, vec![T0 + 29 * MIN]);
        // A restart reads what was written: the new spot, arrived at its first fix.
        let stored = take(&mut u).pop().and_then(|(_, b)| b).unwrap();
        let back = LongStayState::from_bytes(&stored).unwrap();
        assert_eq!(back.deadline(&c), Some(Timestamp(T0 + 27 * MIN + 72 * H)));
        assert!(back.needs_save());
    }

    #[test]
    fn each_changed_state_is_written_once_per_commit_with_its_latest_bytes() {
        let c = cfg();
        let (mut a, mut b) = (LongStayState::new(&c), LongStayState::new(&c));
        let mut u: Unsaved<&str> = Unsaved::default();
        live(&mut a, T0, LOT);
        u.put(&"A", &mut a);
        u.put(&"B", &mut b);
        live(&mut a, T0 + MIN, LOT);
        u.put(&"A", &mut a);
        let first = take(&mut u);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], ("A", Some(a.to_bytes())));
        assert_eq!(first[1], ("B", Some(b.to_bytes())));
        // Next commit: B's old slot (1) now points past the list, A's (0) at B: both are new.
        u.put(&"B", &mut b);
        u.put(&"A", &mut a);
        u.delete(&"B");
        let second = take(&mut u);
        assert_eq!(
            second,
            vec![
                ("B", Some(b.to_bytes())),
                ("A", Some(a.to_bytes())),
                ("B", None)
            ]
        );
        assert!(take(&mut u).is_empty());
    }

    #[test]
    fn a_parked_car_heard_from_reaches_the_threshold_once_per_episode() {
        let c = cfg();
        let mut s = LongStayState::new(&c);
        assert_eq!(s.deadline(&c), None);
        live(&mut s, T0, LOT);
        live(&mut s, T0 + 10 * MIN, LOT);
        // No fix after this one: the deadline is on the clock.
        let due = s.deadline(&c).unwrap();
        assert_eq!(due, Timestamp(T0 + 72 * H));
        // Not heard from since the last fix, the car is not known to have stayed: nothing.
        let quiet = s.clone().on_due(&c, due, Timestamp(T0 + 10 * MIN));
        assert_eq!(quiet, None);
        // Heard from a second before the deadline: not yet either; a heartbeat at it: due.
        assert_eq!(
            s.clone().on_due(&c, due, Timestamp(T0 + 72 * H - 1000)),
            None
        );
        assert_eq!(
            s.on_due(
                &c,
                Timestamp(T0 + 72 * H - 1000),
                Timestamp(T0 + 72 * H - 1000)
            ),
            None
        );
        let th = s.on_due(&c, due, due).unwrap();
        assert_eq!(th.since, Timestamp(T0));
        assert!((th.lat - LOT.0).abs() < 1e-6);
        // Pending: no second deadline, no second threshold.
        assert_eq!(s.deadline(&c), None);
        assert_eq!(
            s.on_due(&c, Timestamp(T0 + 100 * H), Timestamp(T0 + 100 * H)),
            None
        );
        // A stale answer (another episode) raises nothing; the right one raises once.
        assert_eq!(s.resolve(Timestamp(T0 - 1), false, due), None);
        let a = s
            .resolve(th.since, false, Timestamp(T0 + 72 * H + 40))
            .unwrap();
        assert_eq!(a.kind, AlertType::LongStay);
        assert_eq!(a.details["stayed_s"], 72 * 3600);
        assert_eq!(a.details["usual_place"], false);
        assert_eq!(s.resolve(th.since, false, due), None);
        // More fixes at the spot: the same episode. A survives-restart round trip keeps it.
        assert_eq!(live(&mut s, T0 + 80 * H, LOT), None);
        let back = LongStayState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        // Leaving ends it (after the outlier guard: three fixes away).
        live(&mut s, T0 + 81 * H, HOME);
        live(&mut s, T0 + 81 * H + MIN, HOME);
        let ended = live(&mut s, T0 + 81 * H + 2 * MIN, HOME);
        assert_eq!(
            ended,
            Some(Episode::Alerted {
                since: Timestamp(T0),
                usual: false
            })
        );
        // A new spot: a new deadline from its arrival.
        assert_eq!(s.deadline(&c), Some(Timestamp(T0 + 153 * H)));
    }

    /// A state kept across a reload (or stored before a restart) follows the new stay rule, and
    /// a threshold finer than the clock's millisecond is due at its deadline: either mismatch
    /// left a deadline that fell due and raised nothing, re-armed at the same instant for ever.
    #[test]
    fn the_threshold_is_reached_at_its_deadline_under_the_rule_in_force() {
        let old = RuleConfig {
            stay_min: Duration::from_secs(3600),
            long_stay_after: Duration::from_secs(3 * 3600),
            ..RuleConfig::default()
        };
        let new = RuleConfig {
            stay_min: Duration::from_secs(600),
            long_stay_after: Duration::from_secs(1800),
            ..RuleConfig::default()
        };
        let mut s = LongStayState::new(&old);
        live(&mut s, T0, LOT);
        live(&mut s, T0 + MIN, LOT);
        let mut s = LongStayState::from_bytes(&s.to_bytes()).unwrap();
        let due = s.deadline(&new).unwrap();
        assert_eq!(due, Timestamp(T0 + 30 * MIN));
        assert_eq!(
            s.clone().on_due(&new, due, due),
            None,
            "judged by the old stay_min"
        );
        s.reconfigure(&new);
        assert_eq!(
            s.on_due(&new, due, due).map(|th| th.since),
            Some(Timestamp(T0))
        );

        let fine = RuleConfig {
            long_stay_after: Duration::from_secs(72 * 3600) + Duration::from_nanos(1),
            ..RuleConfig::default()
        };
        let mut s = LongStayState::new(&fine);
        live(&mut s, T0, LOT);
        let due = s.deadline(&fine).unwrap();
        assert_eq!(due, Timestamp(T0 + 72 * H));
        assert!(s.on_due(&fine, due, due).is_some());
    }

    #[test]
    fn a_jump_away_is_no_departure_and_invalid_or_lbs_fixes_never_count() {
        let c = cfg();
        let mut s = LongStayState::new(&c);
        live(&mut s, T0, LOT);
        live(&mut s, T0 + H, LOT);
        let th = s
            .on_due(&c, Timestamp(T0 + 73 * H), Timestamp(T0 + 73 * H))
            .unwrap();
        s.resolve(th.since, true, Timestamp(T0 + 73 * H));
        // One GPS jump 10 km off, then back: the episode stays open.
        assert_eq!(live(&mut s, T0 + 74 * H, HOME), None);
        assert_eq!(live(&mut s, T0 + 75 * H, LOT), None);
        // Invalid and LBS fixes far away change nothing.
        let mut bad = fix(T0 + 76 * H, HOME);
        bad.valid = false;
        assert_eq!(s.on_fix(&bad, Timestamp(T0 + 76 * H)), None);
        let lbs = Fix {
            lbs: true,
            ..fix(T0 + 77 * H, HOME)
        };
        for i in 0..5 {
            assert_eq!(s.on_fix(&lbs, Timestamp(T0 + 77 * H + i)), None);
        }
        assert!(matches!(
            s.episode(),
            Some(Episode::Alerted { usual: true, .. })
        ));
    }

    #[test]
    fn an_upload_of_old_fixes_raises_nothing_until_a_live_fix_is_there() {
        let c = cfg();
        let mut s = LongStayState::new(&c);
        // Four days at the lot, uploaded a week later.
        let now = T0 + 7 * 24 * H;
        for i in 0..=96 {
            s.on_fix(&fix(T0 + i * H, LOT), Timestamp(now));
        }
        assert_eq!(s.deadline(&c), None);
        assert_eq!(s.on_due(&c, Timestamp(now), Timestamp(now)), None);
        // Then a live fix at the same spot: the stay since the first fix is long past due.
        live(&mut s, now - 5000, LOT);
        assert_eq!(s.deadline(&c), Some(Timestamp(T0 + 72 * H)));
        let th = s.on_due(&c, Timestamp(now), Timestamp(now)).unwrap();
        assert_eq!(th.since, Timestamp(T0));
        assert_eq!(s.pending(), Some(th));
    }

    #[test]
    fn usual_means_one_of_the_two_largest_places() {
        let place = |(lat, lon): (f64, f64), dwell: f64| Place {
            lat,
            lon,
            radius_m: 60,
            visits: 3,
            dwell_hours: dwell,
            night_hours: 0.0,
            kind: crate::places::PlaceKind::Day,
            last_arrived: Timestamp(T0),
            last_left: None,
        };
        let third = (22.589861, 114.120183);
        let ps = [place(HOME, 300.0), place(third, 100.0), place(LOT, 5.0)];
        assert!(is_usual(&ps, HOME.0 + 0.002, HOME.1, 200.0));
        assert!(is_usual(&ps, third.0, third.1, 200.0));
        assert!(!is_usual(&ps, LOT.0, LOT.1, 200.0));
        assert!(!is_usual(&[], HOME.0, HOME.1, 200.0));
    }
}
