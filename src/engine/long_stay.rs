//! The engine's side of `long_stay` (`rules::long_stay`): each vehicle's stay state, the
//! threshold deadlines, and the places check that decides `usual_place`.
//!
//! Why a check handed to a worker, answered by a command, rather than a cache of every vehicle's
//! two largest places: the answer is needed once per episode (days apart), while a cache would
//! have to be refreshed for every vehicle as its history grows. And a 30-day places computation
//! of a busy car takes 30-50 ms: too long for the engine thread, which holds every device's
//! acknowledgement. So when a stay reaches the threshold its episode opens as pending (persisted)
//! and a [`LongStayCheck`] is queued; after the commit, the engine thread hands it to the places
//! worker (`thread`), which reads the history and sends back [`LongStayPlaces`], applied on the
//! engine thread like any command: it raises the alert if that episode is still open and has not
//! raised one (a repeated answer does nothing). `replay` runs each check right after the step's
//! commit, on its virtual clock, so fixtures stay deterministic. After a restart, a pending
//! episode's check is queued again.

use super::command::{Command, EngineError};
use super::places::PlacesJob;
use super::Engine;
use crate::event::{DeviceId, EventKind, Timestamp};
use crate::fast_hash::FastMap;
use crate::history::History;
use crate::risk::Reason;
use crate::rules::long_stay::{self, Episode, LongStayState, Threshold};
use crate::rules::DeadlineQueue;
use crate::store::{Store, StoreError, Writes};
use std::sync::Arc;

/// Every vehicle's `long_stay` state and deadline, and the checks waiting for the worker.
#[derive(Default)]
pub(super) struct LongStays {
    /// Only vehicles that have sent a valid fix have one.
    pub(super) states: FastMap<Arc<str>, LongStayState>,
    /// Vehicle id -> when its current stay reaches `long_stay_after`.
    due: DeadlineQueue<Arc<str>>,
    /// States changed since the last flush, encoded as they changed.
    unsaved: long_stay::Unsaved<Arc<str>>,
    checks: Vec<LongStayCheck>,
}

impl LongStays {
    /// The stored states of the vehicles in `known`; pending episodes are checked again.
    pub(super) fn load(
        store: &Store,
        known: impl Fn(&str) -> bool,
    ) -> Result<LongStays, StoreError> {
        let mut ls = LongStays::default();
        for kv in store.all_stay_states() {
            let (id, bytes) = kv?;
            let st = LongStayState::from_bytes(&bytes).map_err(|e| super::corrupt("stays", e))?;
            if known(&id) {
                ls.states.insert(Arc::from(id.as_str()), st);
            }
        }
        Ok(ls)
    }

    pub(super) fn next_deadline(&self) -> Option<Timestamp> {
        self.due.next_deadline()
    }

    /// Asks for the vehicle's stay state (`crate::prefetch`).
    pub(super) fn prefetch(&self, vid: &str) {
        if let Some(st) = self.states.get(vid) {
            crate::prefetch::object(st);
        }
    }

    /// Checks are waiting to be handed out.
    pub(super) fn has_checks(&self) -> bool {
        !self.checks.is_empty()
    }

    /// The vehicle's state changed: it is written in the next flush.
    fn mark(&mut self, vid: &Arc<str>) {
        if let Some(st) = self.states.get_mut(vid) {
            self.unsaved.put(vid, st);
        }
    }

    pub(super) fn flush(&mut self, writes: &mut Writes) {
        self.unsaved
            .write_all(|id, bytes| writes.put_stay_state(id, bytes));
    }
}

/// The question for the places worker: is the spot one of the vehicle's usual places?
pub struct LongStayCheck {
    pub vehicle_id: String,
    pub threshold: Threshold,
    pub job: PlacesJob,
}

impl LongStayCheck {
    /// Reads the vehicle's places of the 30 days up to its arrival at the spot (so that the stay
    /// being judged does not vote for itself) and answers. A history that cannot be read counts
    /// as no place known: the spot is unusual, and the alert still goes out.
    pub fn run(&self, history: &History) -> LongStayPlaces {
        let th = &self.threshold;
        let usual = match crate::history::places::run(history, &self.job, th.since) {
            Ok(r) => long_stay::is_usual(
                &r.places.places,
                th.lat,
                th.lon,
                self.job.params.stay_radius_m,
            ),
            Err(e) => {
                tracing::warn!(vehicle = %self.vehicle_id, error = %e, "long_stay: places unreadable");
                false
            }
        };
        LongStayPlaces {
            vehicle_id: self.vehicle_id.clone(),
            since: th.since,
            usual,
        }
    }
}

/// The places worker's answer for the episode that began at `since`.
pub struct LongStayPlaces {
    pub vehicle_id: String,
    pub since: Timestamp,
    pub usual: bool,
}

impl Command for LongStayPlaces {
    type Output = ();

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<(), EngineError> {
        let vid: Arc<str> = Arc::from(self.vehicle_id.as_str());
        let Some(st) = e.vrules.long_stay.states.get_mut(&vid) else {
            return Ok(());
        };
        let Some(draft) = st.resolve(self.since, self.usual, now) else {
            return Ok(());
        };
        e.vrules.long_stay.mark(&vid);
        // The alert's position: the device heard from last.
        let device = e.vehicles.get(&*vid).and_then(|v| {
            v.devices
                .iter()
                .max_by_key(|d| e.devices.get(&d.id).map(|r| r.last_seen))
                .map(|d| d.id.clone())
        });
        if let Some(device) = device {
            e.raise(&vid, &device, draft.kind, draft.details, now);
        }
        Ok(())
    }
}

impl Engine {
    /// An event of one of the vehicle's devices (not closed: the caller checks). A valid fix
    /// feeds the stay, and ends the episode when the vehicle left, and with it the
    /// `long_stay_unusual` reason. Any other word (a heartbeat, a fix without GNSS) is news that
    /// the stay goes on: a threshold that fell due while the vehicle was not heard from is armed
    /// again, due at once.
    pub(super) fn long_stay_on_event(
        &mut self,
        vid: &Arc<str>,
        ev: &crate::event::Event,
        received_at: Timestamp,
    ) {
        let cfg = self.rules.config();
        let ls = &mut self.vrules.long_stay;
        let fix = match &ev.kind {
            EventKind::Position(fix) if fix.position.valid => fix,
            _ => {
                if let Some(st) = ls.states.get_mut(vid) {
                    if let Some(d) = st.arm(cfg) {
                        ls.due.set(vid.clone(), Some(d));
                    }
                }
                return;
            }
        };
        let st = ls
            .states
            .entry(vid.clone())
            .or_insert_with(|| LongStayState::new(cfg));
        let ended = st.on_fix(&crate::places::Fix::from(&fix.position), received_at);
        if let Some(d) = st.arm(cfg) {
            ls.due.set(vid.clone(), Some(d));
        }
        if st.needs_save() {
            ls.unsaved.put(vid, st);
        }
        if let Some(Episode::Alerted { usual: false, .. }) = ended {
            self.update_risk(vid, &ev.device_id, received_at, |s| {
                s.close(Reason::LongStayUnusual)
            });
        }
    }

    /// Stays that reached the threshold by `now`: their episodes open and their checks queue.
    pub(super) fn long_stay_tick(&mut self, now: Timestamp) {
        let cfg = self.rules.config();
        while self
            .vrules
            .long_stay
            .due
            .next_deadline()
            .is_some_and(|t| t <= now)
        {
            for vid in self.vrules.long_stay.due.pop_due(now) {
                let Some(v) = self.vehicles.get(&*vid) else {
                    continue;
                };
                // The stay counts up to the vehicle's last word (`rules::long_stay`).
                let heard = v
                    .devices
                    .iter()
                    .filter_map(|d| self.devices.get(&d.id).map(|r| r.last_seen))
                    .max()
                    .unwrap_or(Timestamp::from_millis(i64::MIN));
                let ls = &mut self.vrules.long_stay;
                let Some(st) = ls.states.get_mut(&vid) else {
                    continue;
                };
                st.disarm();
                if let Some(th) = st.on_due(cfg, now, heard) {
                    ls.unsaved.put(&vid, st);
                    ls.checks.push(check(
                        &vid,
                        th,
                        v.devices.iter().map(|d| d.id.clone()).collect(),
                        &self.bound_since,
                        cfg,
                        self.cfg.history_retention.unwrap_or_default(),
                    ));
                }
                match st.arm(cfg) {
                    Some(d) if d > now => ls.due.set(vid.clone(), Some(d)),
                    // Due and still nothing to raise: armed again, it would fall due at this
                    // same `now` for ever. The vehicle's next word arms it anew.
                    Some(_) => st.disarm(),
                    None => {}
                }
            }
        }
    }

    /// The places checks to run (the daemon's worker, or `replay` in line).
    pub fn take_long_stay_checks(&mut self) -> Vec<LongStayCheck> {
        std::mem::take(&mut self.vrules.long_stay.checks)
    }

    /// Every deadline and pending check from the states (start, reconfigure).
    pub(super) fn rebuild_long_stay(&mut self) {
        let cfg = self.rules.config();
        let retention = self.cfg.history_retention.unwrap_or_default();
        let ls = &mut self.vrules.long_stay;
        ls.due = DeadlineQueue::new();
        ls.checks.clear();
        for (vid, st) in ls.states.iter_mut() {
            st.disarm();
            st.reconfigure(cfg);
            let Some(v) = self.vehicles.get(&**vid) else {
                continue;
            };
            if v.loan.status == crate::registry::LoanStatus::Closed {
                continue;
            }
            if let Some(d) = st.arm(cfg) {
                ls.due.set(vid.clone(), Some(d));
            }
            if let Some(th) = st.pending() {
                let devices = v.devices.iter().map(|d| d.id.clone()).collect();
                ls.checks
                    .push(check(vid, th, devices, &self.bound_since, cfg, retention));
            }
        }
    }

    /// After a vehicle was put, deleted or its loan changed: a deleted or closed vehicle's stay
    /// is forgotten (a closed loan raises nothing).
    pub(super) fn long_stay_sync(&mut self, vehicle_id: &str) {
        let key: Arc<str> = Arc::from(vehicle_id);
        let cfg = self.rules.config();
        let ls = &mut self.vrules.long_stay;
        let open = self
            .vehicles
            .get(vehicle_id)
            .is_some_and(|v| v.loan.status != crate::registry::LoanStatus::Closed);
        if !open {
            if ls.states.remove(vehicle_id).is_some() {
                ls.unsaved.delete(&key);
            }
            ls.due.set(key, None);
            return;
        }
        if let Some(st) = ls.states.get_mut(vehicle_id) {
            st.disarm();
            let due = st.arm(cfg);
            ls.due.set(key, due);
        }
    }
}

fn check(
    vid: &str,
    threshold: Threshold,
    devices: Vec<DeviceId>,
    bound: &crate::fast_hash::FastMap<DeviceId, crate::time::Timestamp>,
    cfg: &crate::rules::RuleConfig,
    retention: std::time::Duration,
) -> LongStayCheck {
    // A reused tracker's places on the car it was on before are not this car's usual ones.
    let bound_since = super::places::bound_since(bound, &devices);
    LongStayCheck {
        vehicle_id: vid.to_string(),
        threshold,
        job: PlacesJob {
            vehicle_id: vid.to_string(),
            days: long_stay::USUAL_DAYS,
            devices,
            // Night and day do not matter here: the places are ordered by dwell alone.
            params: crate::places::Params {
                stay_radius_m: cfg.stay_radius_m,
                stay_min: cfg.stay_min,
                timezone: jiff::tz::TimeZone::UTC,
            },
            timezone: "UTC".into(),
            retention,
            // The stay being judged is live (a fix came within minutes): it counts up to now.
            last_heard: Default::default(),
            bound_since,
            // The places before the stay: a fix newer than the window says nothing of them.
            newest_fix: Default::default(),
            fix_is_last_word: Default::default(),
        },
    }
}
