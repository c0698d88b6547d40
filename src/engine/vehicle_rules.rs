//! The engine's side of the vehicle-wide rules (`rules::zones`, `rules::separation`,
//! `rules::all_silent`): the zone registry, each vehicle's rule state, the dwell and all-silent
//! deadlines, and the hooks the engine calls after the Part 1 rules have seen an event, on each
//! tick, after a registry change and in each commit.

use super::Engine;
use crate::alert::AlertType;
use crate::event::{DeviceId, Event, EventKind, Timestamp};
use crate::fast_hash::{FastMap, FastSet};
use crate::registry::{DeviceKind, LoanStatus, Placement, Zone, ZoneSet};
use crate::rules::{
    all_silent, separation, zones, DeadlineQueue, Outcome, SilenceTracker, VehicleRuleState,
};
use crate::store::{Store, StoreError, Writes};
use std::sync::Arc;

/// How long a vehicle's state may go unwritten when only its progress moved: the separation
/// rings' new fixes and the newest fix time of its zone visits. Those moved at every fix of a
/// vehicle with two trackers (the usual wired + wireless pair), and writing the state each time
/// was most of what such a fix cost the commit (about 840 bytes per fix to sled). A kill loses
/// at most this much of a ring, whose fixes are thinned to one every few minutes anyway; each
/// device's newest fix, and the visits' fix times, come back from its record
/// ([`VehicleRules::catch_up`]).
const PROGRESS_WRITE_MS: i64 = 5 * 60_000;

/// The newest usable fix of `id` that it sent since it was bound to its vehicle this time (its
/// rule state's `registered_at`, which each binding sets afresh), from its record: what
/// [`VehicleRules::catch_up`] takes back. A tracker moved from another car, or off this one and
/// tried on a bench, brings no fix of that other place into this car's rings.
pub(super) fn newest_fix_since_bound(
    devices: &FastMap<DeviceId, crate::store::DeviceRecord>,
    states: &FastMap<DeviceId, crate::rules::DeviceRuleState>,
    id: &DeviceId,
) -> Option<crate::store::StoredPosition> {
    let p = devices.get(id).and_then(|r| r.last_valid())?;
    let since = states.get(id).and_then(|s| s.registered_at);
    let bound = since.is_none_or(|since| p.received_at >= since);
    bound.then_some(p)
}

/// Zones, vehicle rule states and their deadlines.
#[derive(Default)]
pub(super) struct VehicleRules {
    pub(super) zones: ZoneSet,
    /// Only vehicles with something to remember have an entry.
    states: FastMap<Arc<str>, VehicleRuleState>,
    /// Device id -> its earliest pending `risk_zone_dwell`.
    dwell: SilenceTracker,
    /// Vehicle id -> when all its devices will have gone silent.
    silent: DeadlineQueue<Arc<str>>,
    /// Vehicles whose state changed since the last flush.
    dirty: FastSet<Arc<str>>,
    /// Vehicles whose state only progressed since it was written (see [`PROGRESS_WRITE_MS`]),
    /// with when it first did; and the same, in that order, for the tick that writes them.
    progressed: FastMap<Arc<str>, Timestamp>,
    progress_due: std::collections::VecDeque<(Timestamp, Arc<str>)>,
    /// `long_stay`: its own states, deadlines and places checks.
    pub(super) long_stay: super::long_stay::LongStays,
}

impl VehicleRules {
    /// Asks for the vehicle's rule states (`crate::prefetch`).
    pub(super) fn prefetch(&self, vid: &str) {
        if let Some(st) = self.states.get(vid) {
            crate::prefetch::object(st);
        }
        self.long_stay.prefetch(vid);
    }

    /// The zones and the vehicle rule states of the vehicles in `known`.
    pub(super) fn load(
        store: &Store,
        known: impl Fn(&str) -> bool,
    ) -> Result<VehicleRules, StoreError> {
        let mut zs = Vec::new();
        for kv in store.all_zones() {
            let (id, body) = kv?;
            let z = Zone::from_stored(&id, &body).map_err(|e| super::corrupt("zones", e))?;
            zs.push(z);
        }
        let mut states = FastMap::default();
        for kv in store.all_vehicle_rule_states() {
            let (id, bytes) = kv?;
            let st = VehicleRuleState::from_bytes(&bytes)
                .map_err(|e| super::corrupt("vehicle_rules", e))?;
            if known(&id) {
                states.insert(Arc::from(id.as_str()), st);
            }
        }
        metrics::gauge!("lienwatch_risk_zones").set(zs.len() as f64);
        Ok(VehicleRules {
            zones: ZoneSet::from_zones(zs),
            states,
            long_stay: super::long_stay::LongStays::load(store, &known)?,
            ..VehicleRules::default()
        })
    }

    /// Whether the vehicle has an `all_silent` and a `device_separation` episode open.
    pub(super) fn episodes_open(&self, vid: &str) -> (bool, bool) {
        self.states
            .get(vid)
            .map_or((false, false), |s| (s.all_silent, !s.separated.is_empty()))
    }

    pub(super) fn next_deadline(&self) -> Option<Timestamp> {
        let progress = (self.progress_due.front()).map(|(at, _)| at.add_millis(PROGRESS_WRITE_MS));
        [
            self.dwell.next_deadline(),
            self.silent.next_deadline(),
            self.long_stay.next_deadline(),
            progress,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves the start of every visit whose dwell has not yet alerted by `step_ms`, a step of the
    /// host clock, so that a dwell is the time the daemon watched: a clock corrected forward by
    /// hours raises no `risk_zone_dwell` at once, and one corrected back holds none back by the
    /// correction. A start still ahead of `now` (a start of the daemon with the clock set back,
    /// where the step is not known) is brought back to it.
    pub(super) fn move_visit_starts(&mut self, step_ms: i64, now: Timestamp) {
        for (vid, st) in self.states.iter_mut() {
            let mut moved = false;
            let open = st
                .devices
                .iter_mut()
                .flat_map(|d| d.visits.iter_mut())
                .filter(|v| !v.dwell_alerted);
            for v in open {
                let since = v
                    .since
                    .add_millis(crate::time::step_shift(v.since, step_ms, now));
                if since != v.since {
                    v.since = since;
                    moved = true;
                }
            }
            if moved {
                self.dirty.insert(vid.clone());
            }
        }
    }

    /// At start: what a commit leaves to the device records (see [`PROGRESS_WRITE_MS`]). Each
    /// device of a vehicle with two or more gets its newest usable fix into its ring, and each
    /// visit's fix time is raised to that fix's; as for the geofence (`DeviceRuleState::
    /// catch_up`), that fix may be a buffered one the visits did not use.
    pub(super) fn catch_up(
        &mut self,
        vehicles: &std::collections::BTreeMap<String, crate::registry::Vehicle>,
        newest: impl Fn(&DeviceId) -> Option<crate::store::StoredPosition>,
    ) {
        for (vid, v) in vehicles {
            // The rules do not run for a closed loan.
            if v.loan.status == LoanStatus::Closed {
                continue;
            }
            let ring = v.devices.len() > 1;
            if !ring && !self.states.contains_key(vid.as_str()) {
                continue;
            }
            let mut st = self.states.remove(vid.as_str()).unwrap_or_default();
            for d in &v.devices {
                let Some(p) = newest(&d.id) else {
                    continue;
                };
                if ring {
                    let rf = separation::RingFix::new(p.time.millis(), p.lat, p.lon);
                    let mem = st.device_mut(&d.id);
                    if mem.recent.0.last().is_none_or(|f| f.t < rf.t) {
                        mem.recent.push(rf);
                    }
                }
                if let Some(mem) = st.devices.iter_mut().find(|m| m.id == d.id) {
                    for visit in &mut mem.visits {
                        visit.fix_time = visit.fix_time.max(p.time);
                    }
                }
            }
            if !st.is_empty() {
                self.states.insert(Arc::from(vid.as_str()), st);
            }
        }
    }

    /// The vehicle's state moved only in its progress at `at`: written within
    /// [`PROGRESS_WRITE_MS`], unless something else writes it first.
    fn progressed(&mut self, vid: &Arc<str>, at: Timestamp) {
        if !self.progressed.contains_key(vid) {
            self.progressed.insert(vid.clone(), at);
            self.progress_due.push_back((at, vid.clone()));
        }
    }

    /// Marks for the next flush the states whose progress has waited long enough by `now` (or
    /// is dated ahead of it: a step of the clock back).
    fn progress_due(&mut self, now: Timestamp) {
        while let Some((at, vid)) = self.progress_due.front() {
            if at.add_millis(PROGRESS_WRITE_MS) > now && *at <= now {
                break;
            }
            if self.progressed.get(vid) == Some(at) {
                self.dirty.insert(vid.clone());
            }
            self.progress_due.pop_front();
        }
    }

    /// Marks every state whose progress is unwritten for the next flush (the last one, at a
    /// stop).
    pub(super) fn write_all_progress(&mut self) {
        self.dirty.extend(self.progressed.keys().cloned());
    }

    /// Stages the changed states for the commit's batch (an empty one is deleted).
    pub(super) fn flush(&mut self, writes: &mut Writes) {
        let ids: Vec<Arc<str>> = self.dirty.iter().cloned().collect();
        for id in ids {
            let bytes = self
                .states
                .get(&id)
                .filter(|s| !s.is_empty())
                .map(VehicleRuleState::to_bytes);
            writes.put_vehicle_rule_state(&id, bytes.as_deref());
            self.dirty.remove(&id);
            self.progressed.remove(&id);
        }
        // Entries of states written since: the engine's next wake looks at the front.
        while let Some((at, vid)) = self.progress_due.front() {
            if self.progressed.get(vid) == Some(at) {
                break;
            }
            self.progress_due.pop_front();
        }
        self.long_stay.flush(writes);
    }
}

/// Whether a device of `vehicle` was heard from within its silence threshold at `now`.
fn speaks(
    cfg: &crate::rules::RuleConfig,
    vehicle: &crate::registry::Vehicle,
    states: &crate::fast_hash::FastMap<DeviceId, crate::rules::DeviceRuleState>,
    d: &DeviceId,
    now: Timestamp,
) -> bool {
    match (vehicle.device(d), states.get(d)) {
        (Some(b), Some(st)) => crate::rules::silence::heard_lately(cfg, b, st, now),
        _ => false,
    }
}

fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    use geo::{Distance, Haversine, Point};
    Haversine.distance(Point::new(a.1, a.0), Point::new(b.1, b.0))
}

/// A `reappeared` alert's `distance_m`: from where the device went silent to where it is, to
/// 0.1 m. A 0/0 "fix" before the silence says nothing about where the device was.
pub(super) fn set_reappeared_distance(
    details: &mut serde_json::Value,
    silent_at: (f64, f64),
    now_at: (f64, f64),
) {
    if silent_at.0.abs() > 1e-6 || silent_at.1.abs() > 1e-6 {
        details["distance_m"] =
            serde_json::json!((distance_m(silent_at, now_at) * 10.0).round() / 10.0);
    }
}

/// What the device's record and rule state said before an event, for the vehicle-wide rules.
pub(super) struct Before {
    /// Its newest usable position.
    pub position: Option<(f64, f64)>,
    /// Where it was when it went silent, for a `reappeared` this event releases: its newest
    /// usable position when the hold began (a backlog uploaded since has moved `position`).
    pub silent_at: Option<(f64, f64)>,
    /// That position's fix time.
    pub fix_time: Option<Timestamp>,
    /// The time of its newest fix inside its fence: what another tracker's word "outside" must
    /// be newer than to hold an exit back.
    pub inside_at: Option<Timestamp>,
}

impl Engine {
    /// Before the last flush of a stop: every vehicle state whose progress is not written yet
    /// (see [`PROGRESS_WRITE_MS`]), so that a clean stop loses none of it.
    pub(super) fn write_all_progress(&mut self) {
        self.vrules.write_all_progress();
    }

    /// Every dwell and all-silent deadline from the persisted states (start, reconfigure).
    /// The dwell deadlines of the visits to the zones `changed` says were just replaced: a zone
    /// whose `dwell_after` went from a day to an hour must raise the dwell of a car already in
    /// it at the hour, not at the day's end.
    pub(super) fn rearm_dwell(&mut self, changed: impl Fn(&str) -> bool) {
        let r = &mut self.vrules;
        let cfg = self.rules.config();
        for (vid, st) in &r.states {
            if self
                .vehicles
                .get(&**vid)
                .is_none_or(|v| v.loan.status == LoanStatus::Closed)
            {
                continue;
            }
            for d in &st.devices {
                if d.visits.iter().any(|v| changed(&v.zone_id)) {
                    r.dwell.set(
                        &d.id,
                        zones::deadline(cfg, &r.zones, &d.visits, self.rules.grace_end()),
                    );
                }
            }
        }
    }

    pub(super) fn rebuild_vehicle_deadlines(&mut self) {
        let r = &mut self.vrules;
        r.dwell = SilenceTracker::new();
        r.silent = DeadlineQueue::new();
        let cfg = self.rules.config();
        for (vid, v) in &self.vehicles {
            let closed = v.loan.status == LoanStatus::Closed;
            if let Some(st) = r.states.get(vid.as_str()) {
                for d in st.devices.iter().filter(|_| !closed) {
                    r.dwell.set(
                        &d.id,
                        zones::deadline(cfg, &r.zones, &d.visits, self.rules.grace_end()),
                    );
                }
            }
            let alerted = r.states.get(vid.as_str()).is_some_and(|s| s.all_silent);
            let due = all_silent::deadline(
                cfg,
                self.rules.grace_end(),
                v,
                |id| self.states.get(id),
                alerted,
            );
            r.silent.set(Arc::from(vid.as_str()), due);
        }
        self.rebuild_long_stay();
    }

    /// After the Part 1 rules saw `ev` (their alerts in `out`, not yet raised): the
    /// `reappeared` distance, then zones, separation and the all-silent clock. New alerts join
    /// `out`, for the same device.
    pub(super) fn vehicle_rules_on_event(
        &mut self,
        vid: &Arc<str>,
        ev: &Event,
        Before {
            position: last_position,
            silent_at: before,
            fix_time: newest_before,
            inside_at,
        }: Before,
        out: &mut Outcome,
        received_at: Timestamp,
    ) {
        // The car is outside its fence while any of its devices is (CONTRACT.md "Rules": one
        // alert per excursion of the vehicle): a second tracker following the first out, or
        // coming back before it, says nothing new. A tracker left behind inside does not end
        // the excursion of the one that left with the car. One silent past its threshold out
        // there (dead, or thrown away) no longer speaks for the car. Nor, for an exit, does
        // one whose word "outside" is older than this device's last fix inside: a battery unit
        // that last woke on a trip must not swallow the exit of the car's flight a day later.
        let cfg = self.rules.config();
        let told = |kind: AlertType| out.alerts.iter().any(|a| a.kind == kind);
        let newer_than = if told(AlertType::GeofenceExit) {
            Some(inside_at)
        } else if told(AlertType::GeofenceReturn) {
            Some(None)
        } else {
            None
        };
        if let Some(newer_than) = newer_than {
            if self.other_devices(vid, &ev.device_id, |d, st| {
                crate::rules::geofence::holds_car_outside(cfg, d, st, received_at, newer_than)
            }) {
                out.alerts.retain(|a| {
                    !matches!(a.kind, AlertType::GeofenceExit | AlertType::GeofenceReturn)
                });
            }
        }
        let Some(vehicle) = self.vehicles.get(&**vid) else {
            return;
        };
        let fix = match &ev.kind {
            EventKind::Position(f) => Some(f),
            _ => None,
        };
        if let Some(a) = out
            .alerts
            .iter_mut()
            .find(|a| a.kind == AlertType::Reappeared)
        {
            let now_at = fix
                .filter(|f| f.position.is_usable())
                .map(|f| (f.position.lat, f.position.lon));
            if let (Some(b), Some(n)) = (before, now_at) {
                set_reappeared_distance(&mut a.details, b, n);
            }
        }
        if vehicle.loan.status == LoanStatus::Closed {
            return;
        }
        self.long_stay_on_event(vid, ev, received_at);
        let Some(vehicle) = self.vehicles.get(&**vid) else {
            return;
        };
        let r = &mut self.vrules;
        let cfg = self.rules.config();
        let mut st = r.states.remove(&**vid).unwrap_or_default();
        // `changed`: written with this commit; `progressed`: only the rings and the visits' fix
        // times moved, written within `PROGRESS_WRITE_MS`.
        let (mut changed, mut progressed) = (false, false);
        // Any sign of life ends an all-silent episode.
        if st.all_silent {
            st.all_silent = false;
            changed = true;
        }
        if let Some(fix) = fix {
            // A fix older than the device's newest (sent again after its acknowledgement was
            // lost) says nothing new of where the car is: it must not open a visit that a newer
            // fix ended (protocols.md C.6), as the geofence and `long_stay` ignore it too. (It
            // still meets the other tracker's fixes of its moment, for separation.)
            let newer = newest_before.is_none_or(|t| fix.position.time >= t);
            // Most devices visit nothing: no memory is made for them until they do.
            let at = st.devices.iter().position(|d| d.id == ev.device_id);
            let mut fresh = Vec::new();
            let visits = match at {
                Some(i) => &mut st.devices[i].visits,
                None => &mut fresh,
            };
            progressed |= !visits.is_empty();
            if newer && zones::on_fix(cfg, &r.zones, visits, fix, received_at, &mut out.alerts) {
                changed = true;
                r.dwell.set(
                    &ev.device_id,
                    zones::deadline(cfg, &r.zones, visits, self.rules.grace_end()),
                );
            }
            if !fresh.is_empty() {
                st.device_mut(&ev.device_id).visits = fresh;
            }
            if let (Some(t), Some((lat, lon))) = (newest_before, last_position) {
                for a in out
                    .alerts
                    .iter()
                    .filter(|a| a.kind == AlertType::RiskZoneEnter)
                {
                    let Some(zone) = a.details.get("zone_id").and_then(|z| z.as_str()) else {
                        continue;
                    };
                    // Only a previous fix outside the zone says the car left it: one inside (a
                    // backlog uploaded from the yard) says it was there all along. Any distance
                    // out counts: the fix before a car turns in is often just by the gate.
                    let outside = r.zones.get(zone).is_some_and(|z| {
                        !matches!(
                            z.geometry.index().locate(lon, lat, false),
                            Placement::Inside
                        )
                    });
                    if !outside {
                        continue;
                    }
                    for other in st.end_visits_seen_left(&ev.device_id, zone, t) {
                        changed = true;
                        let visits = st.device(&other).map_or(&[][..], |d| &d.visits[..]);
                        r.dwell.set(
                            &other,
                            zones::deadline(cfg, &r.zones, visits, self.rules.grace_end()),
                        );
                    }
                }
            }
            let states = &self.states;
            let live = |d: &DeviceId| speaks(cfg, vehicle, states, d, received_at);
            out.alerts
                .retain(|a| !st.zone_visit_told(vehicle, &ev.device_id, a, live));
            if let Some(rf) = separation::ring_fix(fix).filter(|_| vehicle.devices.len() > 1) {
                st.device_mut(&ev.device_id).recent.push(rf);
                progressed = true;
                if let Some(i) = st.devices.iter().position(|d| d.id == ev.device_id) {
                    let others: Vec<(&DeviceId, &separation::FixRing, DeviceKind)> = st
                        .devices
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .filter_map(|(_, d)| {
                            vehicle.device(&d.id).map(|b| (&d.id, &d.recent, b.kind))
                        })
                        .collect();
                    changed |= separation::compare(
                        cfg,
                        &ev.device_id,
                        rf,
                        &st.devices[i].recent,
                        &others,
                        &mut st.separated,
                        &mut out.alerts,
                    );
                }
            }
        }
        if vehicle.devices.len() > 1 {
            let due = all_silent::deadline(
                cfg,
                self.rules.grace_end(),
                vehicle,
                |id| self.states.get(id),
                st.all_silent,
            );
            r.silent.set(vid.clone(), due);
        }
        if changed {
            r.dirty.insert(vid.clone());
        } else if progressed {
            r.progressed(vid, received_at);
        }
        let (silent_open, separated_open) = (st.all_silent, !st.separated.is_empty());
        if !st.is_empty() {
            r.states.insert(vid.clone(), st);
        }
        self.risk_episodes(vid, &ev.device_id, silent_open, separated_open, received_at);
    }

    /// Dwell, all-silent and long-stay deadlines that fell due by `now`.
    pub(super) fn vehicle_rules_tick(&mut self, now: Timestamp) {
        self.long_stay_tick(now);
        self.vrules.progress_due(now);
        while self.vrules.dwell.next_deadline().is_some_and(|t| t <= now) {
            for id in self.vrules.dwell.pop_due(now) {
                let Some(vid) = self.vehicle_id_of(&id) else {
                    continue;
                };
                if self
                    .vehicles
                    .get(&*vid)
                    .is_none_or(|v| v.loan.status == LoanStatus::Closed)
                {
                    continue;
                }
                let r = &mut self.vrules;
                let cfg = self.rules.config();
                let Some(mem) = r
                    .states
                    .get_mut(&*vid)
                    .and_then(|s| s.devices.iter_mut().find(|d| d.id == id))
                else {
                    continue;
                };
                let mut drafts = Vec::new();
                if zones::on_due(cfg, &r.zones, &mut mem.visits, now, &mut drafts) {
                    r.dirty.insert(vid.clone());
                }
                r.dwell.set(
                    &id,
                    zones::deadline(cfg, &r.zones, &mem.visits, self.rules.grace_end()),
                );
                if let (Some(st), Some(v)) = (r.states.get(&*vid), self.vehicles.get(&*vid)) {
                    let states = &self.states;
                    let live = |d: &DeviceId| speaks(cfg, v, states, d, now);
                    drafts.retain(|d| !st.zone_visit_told(v, &id, d, live));
                }
                for d in drafts {
                    self.raise(&vid, &id, d.kind, d.details, now);
                }
            }
        }
        while self.vrules.silent.next_deadline().is_some_and(|t| t <= now) {
            for vid in self.vrules.silent.pop_due(now) {
                let Some(v) = self.vehicles.get(&*vid) else {
                    continue;
                };
                let cfg = self.rules.config();
                let grace_end = self.rules.grace_end();
                let of = |id: &DeviceId| self.states.get(id);
                let Some(draft) = all_silent::on_due(cfg, grace_end, v, of, now) else {
                    let alerted = self.vrules.states.get(&vid).is_some_and(|s| s.all_silent);
                    let due = all_silent::deadline(cfg, grace_end, v, of, alerted);
                    self.vrules.silent.set(vid, due);
                    continue;
                };
                // The alert's device (and so its position) is the one heard from last.
                let device = v
                    .devices
                    .iter()
                    .max_by_key(|d| self.devices.get(&d.id).map(|r| r.last_seen))
                    .map(|d| d.id.clone());
                let Some(device) = device else {
                    continue;
                };
                self.vrules
                    .states
                    .entry(vid.clone())
                    .or_default()
                    .all_silent = true;
                self.vrules.dirty.insert(vid.clone());
                self.raise(&vid, &device, draft.kind, draft.details, now);
            }
        }
    }

    /// After a vehicle was put or its loan changed: forget unbound devices, re-arm deadlines.
    pub(super) fn vehicle_rules_sync(&mut self, vehicle_id: &str) {
        self.long_stay_sync(vehicle_id);
        let key: Arc<str> = Arc::from(vehicle_id);
        let Some(v) = self.vehicles.get(vehicle_id) else {
            self.vrules.states.remove(vehicle_id);
            self.vrules.dirty.insert(key.clone());
            self.vrules.silent.set(key, None);
            return;
        };
        let r = &mut self.vrules;
        let cfg = self.rules.config();
        let closed = v.loan.status == LoanStatus::Closed;
        if let Some(st) = r.states.get_mut(vehicle_id) {
            if st.retain_bound(v) {
                r.dirty.insert(key.clone());
            }
            // A closed loan's episodes end with it (the rules do not watch it): a zone visit or
            // an episode kept from then would swallow the alerts of the loan reopened.
            if closed && st.end_episodes() {
                r.dirty.insert(key.clone());
            }
            for d in &st.devices {
                let due = (!closed)
                    .then(|| zones::deadline(cfg, &r.zones, &d.visits, self.rules.grace_end()))
                    .flatten();
                r.dwell.set(&d.id, due);
            }
        }
        let alerted = r.states.get(vehicle_id).is_some_and(|s| s.all_silent);
        let due = all_silent::deadline(
            cfg,
            self.rules.grace_end(),
            v,
            |id| self.states.get(id),
            alerted,
        );
        r.silent.set(key, due);
    }
}

#[cfg(test)]
mod tests {
    use crate::alert::AlertType;
    use crate::engine::testing::{buffered_fix, engine_at, live_fix, login, put_vehicle};
    use crate::time::Timestamp;

    const WIRED: &str = "868120145233604";
    const WIRELESS: &str = "868120145233612";

    /// An engine at `t0` with one vehicle, V-1, on `loan` with a wired and a wireless tracker,
    /// and `geofence` if given.
    /// [`two_tracker_car`] on a loan 40 days overdue, without a geofence: the zone tests' car.
    fn overdue_two_tracker_car(t0: Timestamp) -> crate::engine::Engine {
        two_tracker_car(
            t0,
            serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 40}),
            None,
        )
    }

    fn two_tracker_car(
        t0: Timestamp,
        loan: serde_json::Value,
        geofence: Option<serde_json::Value>,
    ) -> crate::engine::Engine {
        two_tracker_car_on(
            crate::store::Store::temporary().unwrap(),
            t0,
            loan,
            geofence,
        )
    }

    /// [`two_tracker_car`] on `store`.
    fn two_tracker_car_on(
        store: crate::store::Store,
        t0: Timestamp,
        loan: serde_json::Value,
        geofence: Option<serde_json::Value>,
    ) -> crate::engine::Engine {
        let mut e = engine_at(store, t0);
        let mut body = serde_json::json!({
            "loan": loan,
            "devices": [{"id": WIRED, "kind": "wired"}, {"id": WIRELESS, "kind": "wireless"}],
        });
        if let Some(g) = geofence {
            body["geofence"] = g;
        }
        put_vehicle(&mut e, "V-1", body, t0);
        e
    }

    /// The zone tests' pawn shop, Z-1: a 300 m circle around (114.0, 22.6), its dwell `dwell`.
    fn put_shop(e: &mut crate::engine::Engine, dwell: &str, now: Timestamp) {
        use crate::engine::command::Command;
        let body = format!(
            r#"{{"name": "Pawn", "kind": "pawnshop", "dwell_after": "{dwell}",
            "geometry": {{"type": "Circle", "center": [114.0, 22.6], "radius_m": 300}}}}"#
        );
        crate::engine::zones::PutZone::from_json("Z-1", body.as_bytes())
            .and_then(|c| c.apply(e, now))
            .unwrap();
    }

    /// The details of the `reappeared` alerts raised since the last look.
    fn reappeared_details(e: &mut crate::engine::Engine) -> Vec<serde_json::Value> {
        e.take_alerts()
            .into_iter()
            .filter(|a| a.kind == AlertType::Reappeared)
            .map(|a| a.details)
            .collect()
    }

    /// The zone alerts raised since the last look.
    fn zone_alerts(e: &mut crate::engine::Engine) -> Vec<AlertType> {
        e.take_alerts()
            .into_iter()
            .filter(|a| matches!(a.kind, AlertType::RiskZoneEnter | AlertType::RiskZoneDwell))
            .map(|a| a.kind)
            .collect()
    }

    /// V-1's stored vehicle rule state, if any.
    fn stored(store: &crate::store::Store) -> Option<crate::rules::VehicleRuleState> {
        store
            .all_vehicle_rule_states()
            .map(|kv| kv.unwrap())
            .find(|(id, _)| id == "V-1")
            .map(|(_, b)| crate::rules::VehicleRuleState::from_bytes(&b).unwrap())
    }

    fn overdue() -> serde_json::Value {
        serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 40})
    }

    /// A pair of trackers on a car: each fix moves a separation ring, which is written every
    /// few minutes, not at every commit; the tick after `PROGRESS_WRITE_MS` writes it.
    #[test]
    fn a_pair_writes_its_rings_every_few_minutes_not_at_every_fix() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = two_tracker_car_on(store.clone(), t0, overdue(), None);
        let at = |s: i64| t0.add_millis(s * 1000);
        for s in (30..=270).step_by(30) {
            e.ingest(&[live_fix(WIRED, at(s), 22.5, 114.0)], at(s));
            e.tick(at(s));
            e.flush().unwrap();
        }
        assert_eq!(stored(&store), None, "progress alone, for 4 minutes");
        e.tick(at(30 + 300));
        e.flush().unwrap();
        let st = stored(&store).expect("written 5 minutes after the first fix");
        let ring = &st
            .device(&crate::event::DeviceId::new(WIRED))
            .unwrap()
            .recent;
        assert_eq!(ring.0.last().map(|f| f.t), Some(at(270).secs()));
    }

    /// A kill before a pair's rings were written: the start takes each tracker's newest fix
    /// from its record, so the wireless unit's next fix far from it still raises
    /// `device_separation`.
    #[test]
    fn after_a_kill_the_rings_start_from_the_records() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = two_tracker_car_on(store.clone(), t0, overdue(), None);
        let at = |m: i64| t0.add_millis(m * 60_000);
        for m in 1..=4 {
            e.ingest(&[live_fix(WIRED, at(m), 22.5, 114.0)], at(m));
            e.flush().unwrap();
        }
        assert_eq!(stored(&store), None);
        drop(e);
        let mut e = crate::engine::testing::reopen_at(&store, at(5));
        e.ingest(&[live_fix(WIRELESS, at(5), 22.6, 114.0)], at(5));
        let separated = crate::engine::testing::take_count(&mut e, AlertType::DeviceSeparation);
        assert_eq!(separated, 1);
    }

    /// A kill while a car sits in a zone, its visit's newest fix time not written since the
    /// visit began: the start takes it from the device's record, so an older fix outside,
    /// sent late, still does not end the visit (and a new entry alert would follow).
    #[test]
    fn after_a_kill_a_visit_ignores_fixes_older_than_the_record() {
        use crate::engine::command::Command;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = two_tracker_car_on(store.clone(), t0, overdue(), None);
        let zone = br#"{"name": "Pawn", "kind": "pawn_shop",
            "geometry": {"type": "Circle", "center": [114.0, 22.6], "radius_m": 300}}"#;
        crate::engine::zones::PutZone::from_json("Z-1", zone)
            .and_then(|c| c.apply(&mut e, t0))
            .unwrap();
        let at = |m: i64| t0.add_millis(m * 60_000);
        for m in 1..=4 {
            e.ingest(&[live_fix(WIRED, at(m), 22.6, 114.0)], at(m));
            e.flush().unwrap();
        }
        let enter = |e: &mut crate::engine::Engine| {
            crate::engine::testing::take_count(e, AlertType::RiskZoneEnter)
        };
        assert_eq!(enter(&mut e), 1);
        drop(e);
        let mut e = crate::engine::testing::reopen_at(&store, at(5));
        e.ingest(&[live_fix(WIRED, at(2), 22.5, 114.0)], at(5));
        e.ingest(&[live_fix(WIRED, at(6), 22.6, 114.0)], at(6));
        assert_eq!(enter(&mut e), 0, "the same visit");
    }

    /// What is more than progress is written at once: a separation episode that opens (before a
    /// kill could lose it), and the deletion of a vehicle whose rings were waiting, which the
    /// wait does not bring back.
    #[test]
    fn an_episode_and_a_deletion_are_written_at_once() {
        use crate::engine::command::Command;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = two_tracker_car_on(store.clone(), t0, overdue(), None);
        let at = |m: i64| t0.add_millis(m * 60_000);
        e.ingest(&[live_fix(WIRED, at(1), 22.5, 114.0)], at(1));
        e.ingest(&[live_fix(WIRELESS, at(2), 22.6, 114.0)], at(2));
        e.flush().unwrap();
        let st = stored(&store).expect("the episode is written with its alert");
        assert_eq!(st.separated.len(), 1);
        e.ingest(&[live_fix(WIRED, at(3), 22.5, 114.0)], at(3));
        crate::engine::vehicles::DeleteVehicle { id: "V-1".into() }
            .apply(&mut e, at(4))
            .unwrap();
        e.flush().unwrap();
        assert_eq!(stored(&store), None);
        e.tick(at(10));
        e.flush().unwrap();
        assert_eq!(
            stored(&store),
            None,
            "the waiting progress went with the vehicle"
        );
    }

    /// A step of the host clock back writes the progress that waits, dated before the step
    /// (its wait would otherwise last the step's size).
    #[test]
    fn a_step_back_writes_the_progress_that_waits() {
        let t0 = Timestamp::from_secs(1_826_841_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = two_tracker_car_on(store.clone(), t0, overdue(), None);
        let t = t0.add_millis(60_000);
        e.ingest(&[live_fix(WIRED, t, 22.5, 114.0)], t);
        e.flush().unwrap();
        assert_eq!(stored(&store), None);
        let year = 365 * 24 * 3_600_000;
        e.clock_stepped(t.add_millis(-year), -year);
        e.flush().unwrap();
        assert!(stored(&store).is_some());
    }

    /// A tracker that reported elsewhere before it was bound to this car (moved from another
    /// car, or tried on a bench): after a restart, that fix is not in the car's ring, so the
    /// other tracker's fix at the car is no separation.
    #[test]
    fn a_restart_leaves_fixes_from_before_the_binding_out_of_the_rings() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = engine_at(store.clone(), t0);
        let at = |m: i64| t0.add_millis(m * 60_000);
        e.ingest(&[live_fix(WIRED, at(1), 22.9, 114.0)], at(1));
        let body = serde_json::json!({"loan": overdue(),
            "devices": [{"id": WIRED, "kind": "wired"}, {"id": WIRELESS, "kind": "wireless"}]});
        put_vehicle(&mut e, "V-1", body, at(2));
        e.flush().unwrap();
        drop(e);
        let mut e = crate::engine::testing::reopen_at(&store, at(3));
        e.ingest(&[live_fix(WIRELESS, at(3), 22.5, 114.0)], at(3));
        let separated = crate::engine::testing::take_count(&mut e, AlertType::DeviceSeparation);
        assert_eq!(separated, 0);
    }

    #[derive(Clone, Debug)]
    struct Step {
        wired: bool,
        after_s: i64,
        age_s: i64,
        /// 0: home; 1: in the pawn shop zone; 2: far from both (a separation).
        place: u8,
        valid: bool,
        buffered: bool,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        (
            any::<bool>(),
            1i64..3_600,
            0i64..1_800,
            0u8..3,
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(wired, after_s, age_s, place, valid, buffered)| Step {
                wired,
                after_s,
                age_s,
                place,
                valid,
                buffered,
            })
    }

    type Memory = crate::rules::vehicle_state::DeviceMemory;

    /// A device's visits as they must come back exactly: zone, start, dwell alerted.
    fn visits(d: Option<&Memory>) -> Vec<(String, Timestamp, bool)> {
        let visits = d.iter().flat_map(|d| &d.visits);
        visits
            .map(|v| (v.zone_id.clone(), v.since, v.dwell_alerted))
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(120))]

        /// On random streams of a pair's fixes (home, in a zone, far away; valid or not, live or
        /// buffered, late), with the clock running its deadlines, a crash after any commit
        /// restores what was written plus what a start takes from the records: the visits, the
        /// episodes and the all-silent flag exactly, each ring's newest fix, and each visit's
        /// newest fix time or a later one. Whatever a fix changes beyond its progress must be
        /// written at that commit.
        #[test]
        fn a_crash_after_any_commit_restores_what_the_rules_need(
            steps in proptest::collection::vec(step(), 1..80)
        ) {
            use crate::engine::command::Command;
            use crate::event::{DeviceId, EventKind};
            use proptest::prelude::*;
            let t0 = Timestamp::from_secs(1_795_305_600);
            let store = crate::store::Store::temporary().unwrap();
            let mut e = two_tracker_car_on(store.clone(), t0, overdue(), None);
            let zone = br#"{"name": "Pawn", "kind": "pawn_shop", "dwell_after": "30m",
                "geometry": {"type": "Circle", "center": [114.0, 22.6], "radius_m": 300}}"#;
            crate::engine::zones::PutZone::from_json("Z-1", zone)
                .and_then(|c| c.apply(&mut e, t0))
                .unwrap();
            let places = [(22.5, 114.0), (22.6, 114.0), (22.8, 114.2)];
            let mut now = t0;
            for s in &steps {
                now = now.add_millis(s.after_s * 1000);
                let (lat, lon) = places[usize::from(s.place)];
                let device = if s.wired { WIRED } else { WIRELESS };
                let mut ev = live_fix(device, now.add_millis(-s.age_s * 1000), lat, lon);
                if let EventKind::Position(f) = &mut ev.kind {
                    f.position.valid = s.valid;
                    f.buffered = s.buffered;
                }
                e.ingest(&[ev], now);
                e.tick(now);
                e.flush().unwrap();
                let known = |id: &str| e.vehicles.contains_key(id);
                let mut back = super::VehicleRules::load(&store, known).unwrap();
                back.catch_up(&e.vehicles, |id| {
                    super::newest_fix_since_bound(&e.devices, &e.states, id)
                });
                let memory = e.vrules.states.get("V-1").cloned().unwrap_or_default();
                let back = back.states.get("V-1").cloned().unwrap_or_default();
                let (mut sm, mut sb) = (memory.separated.clone(), back.separated.clone());
                sm.sort();
                sb.sort();
                prop_assert_eq!(sm, sb);
                prop_assert_eq!(memory.all_silent, back.all_silent);
                for id in [WIRED, WIRELESS].map(DeviceId::new) {
                    let (m, b) = (memory.device(&id), back.device(&id));
                    prop_assert_eq!(visits(m), visits(b), "{}", id);
                    let fix_times = |d: Option<&Memory>| -> Vec<Timestamp> {
                        d.iter().flat_map(|d| &d.visits).map(|v| v.fix_time).collect()
                    };
                    for (tm, tb) in fix_times(m).into_iter().zip(fix_times(b)) {
                        prop_assert!(tb >= tm, "{}", id);
                    }
                    let newest = |d: Option<&Memory>| d.and_then(|d| d.recent.0.last().map(|f| f.t));
                    prop_assert_eq!(newest(m), newest(b), "{}", id);
                }
            }
        }
    }

    /// A tracker taken off the car (the car put again without it), tried on a bench, and put
    /// back: after a restart, the bench's fix is not in the car's ring (its binding to this car
    /// is new, though the car is the one it was on before).
    #[test]
    fn a_restart_leaves_a_fix_from_off_the_car_out_of_the_rings() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = two_tracker_car_on(store.clone(), t0, overdue(), None);
        let at = |m: i64| t0.add_millis(m * 60_000);
        e.ingest(&[live_fix(WIRED, at(1), 22.5, 114.0)], at(1));
        let alone = serde_json::json!({"loan": overdue(),
            "devices": [{"id": WIRELESS, "kind": "wireless"}]});
        put_vehicle(&mut e, "V-1", alone, at(2));
        e.ingest(&[live_fix(WIRED, at(3), 22.9, 114.0)], at(3));
        let both = serde_json::json!({"loan": overdue(),
            "devices": [{"id": WIRED, "kind": "wired"}, {"id": WIRELESS, "kind": "wireless"}]});
        put_vehicle(&mut e, "V-1", both, at(4));
        e.flush().unwrap();
        drop(e);
        let mut e = crate::engine::testing::reopen_at(&store, at(5));
        e.ingest(&[live_fix(WIRELESS, at(5), 22.5, 114.0)], at(5));
        let separated = crate::engine::testing::take_count(&mut e, AlertType::DeviceSeparation);
        assert_eq!(separated, 0);
    }

    /// A clean stop writes the rings whose progress was waiting.
    #[tokio::test]
    async fn a_stop_writes_the_rings_that_wait() {
        let t0 = Timestamp::now();
        let store = crate::store::Store::temporary().unwrap();
        let e = two_tracker_car_on(store.clone(), t0, overdue(), None);
        let (handle, _thread) =
            crate::engine::spawn(e, std::sync::Arc::new(Timestamp::now)).unwrap();
        let mut events = vec![live_fix(WIRED, t0, 22.5, 114.0)];
        handle.commit(&mut events, t0).await.unwrap();
        assert_eq!(stored(&store), None);
        // Answered after the last flush.
        handle.shutdown().await.unwrap();
        assert!(stored(&store).is_some());
    }

    /// The outbox refuses an alert (a store error): the commit that carries the rule state
    /// which raised it fails and writes neither, and the next one writes both, so that the
    /// state is never on disk without its alert.
    #[test]
    fn an_alert_the_outbox_refused_is_written_by_the_next_commit() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = two_tracker_car(
            t0,
            serde_json::json!({"id": "L", "status": "current"}),
            Some(serde_json::json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 2000})),
        );
        e.flush().unwrap();
        e.outbox.fail_inserts(u32::MAX);
        let t = t0.add_millis(60_000);
        e.ingest(&[live_fix(WIRED, t, 22.6, 114.0)], t);
        let raised = e.take_alerts();
        assert!(raised.iter().any(|a| a.kind == AlertType::GeofenceExit));
        let listed = |e: &crate::engine::Engine| {
            e.outbox
                .list(None, 10, None)
                .unwrap()
                .into_iter()
                .filter(|v| v.alert.kind == AlertType::GeofenceExit)
                .count()
        };
        assert_eq!(listed(&e), 0);
        assert!(e.flush().is_err(), "the commit of its rule state fails");
        e.outbox.fail_inserts(0);
        e.flush().expect("the store takes it now");
        assert_eq!(listed(&e), 1);
        // Once, not again at the commit after.
        e.flush().unwrap();
        assert_eq!(listed(&e), 1);
    }

    /// An alert's `position` is the device's last-known position as the API shows it: rounded
    /// coordinates and `received_at` (CONTRACT.md "Positions").
    #[test]
    fn an_alerts_position_is_the_apis_position() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = two_tracker_car(
            t0,
            serde_json::json!({"id": "L", "status": "current"}),
            Some(serde_json::json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 2000})),
        );
        let t = t0.add_millis(60_000);
        let received = t.add_millis(1_234);
        e.ingest(
            &[live_fix(WIRED, t, 22.643_095_999_999_998, 114.0)],
            received,
        );
        let alerts = e.take_alerts();
        let exit = alerts
            .iter()
            .find(|a| a.kind == AlertType::GeofenceExit)
            .expect("geofence_exit");
        let shown = serde_json::to_value(exit).unwrap();
        let api = e.devices[&crate::event::DeviceId::new(WIRED)].to_json(Some("V-1"));
        assert_eq!(shown["position"], api["position"]);
        assert_eq!(shown["position"]["lat"], serde_json::json!(22.643096));
        assert_eq!(
            shown["position"]["received_at"],
            serde_json::json!(received)
        );
    }

    /// Two trackers on one fenced car: the car's excursion is one `geofence_exit` and one
    /// `geofence_return`, however its trackers follow each other out and back; a tracker left
    /// inside (removed and dropped at home) does not end the excursion of the other.
    #[test]
    fn a_car_with_two_trackers_leaves_and_returns_once() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = two_tracker_car(
            t0,
            serde_json::json!({"id": "L", "status": "current"}),
            Some(serde_json::json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 2000})),
        );
        let mut minute = 0;
        let mut fix = |e: &mut crate::engine::Engine, device: &str, lat: f64| {
            minute += 1;
            let t = t0.add_millis(minute * 60_000);
            e.ingest(&[live_fix(device, t, lat, 114.0)], t);
            e.take_alerts()
                .into_iter()
                .filter(|a| matches!(a.kind, AlertType::GeofenceExit | AlertType::GeofenceReturn))
                .map(|a| (a.kind, a.device_id.as_str().to_string()))
                .collect::<Vec<_>>()
        };
        let (home, away) = (22.5, 22.6);
        assert!(fix(&mut e, WIRED, home).is_empty());
        assert!(fix(&mut e, WIRELESS, home).is_empty());
        assert_eq!(
            fix(&mut e, WIRED, away),
            [(AlertType::GeofenceExit, WIRED.to_string())]
        );
        assert!(fix(&mut e, WIRELESS, away).is_empty(), "the same excursion");
        assert!(
            fix(&mut e, WIRED, home).is_empty(),
            "the wireless unit is still out"
        );
        assert_eq!(
            fix(&mut e, WIRELESS, home),
            [(AlertType::GeofenceReturn, WIRELESS.to_string())]
        );
        // The wired unit cut out and left at home while the car leaves with the other.
        assert_eq!(
            fix(&mut e, WIRELESS, away),
            [(AlertType::GeofenceExit, WIRELESS.to_string())]
        );
        assert!(
            fix(&mut e, WIRED, home).is_empty(),
            "still out with the car"
        );
        assert!(fix(&mut e, WIRELESS, away).is_empty());
    }

    /// A tracker that died (or was thrown away) outside the fence speaks for the car only until
    /// its silence threshold: after it, the other tracker's return and next exit are the car's.
    #[test]
    fn a_tracker_dead_outside_stops_holding_the_excursion_after_its_silence_threshold() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = two_tracker_car(
            t0,
            serde_json::json!({"id": "L", "status": "current"}),
            Some(serde_json::json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 2000})),
        );
        let fix = |e: &mut crate::engine::Engine, device: &str, minutes: i64, lat: f64| {
            let t = t0.add_millis(minutes * 60_000);
            e.ingest(&[live_fix(device, t, lat, 114.0)], t);
            e.take_alerts()
                .into_iter()
                .filter(|a| matches!(a.kind, AlertType::GeofenceExit | AlertType::GeofenceReturn))
                .map(|a| a.kind)
                .collect::<Vec<_>>()
        };
        let (home, away, h) = (22.5, 22.6, 60);
        assert!(fix(&mut e, WIRED, 1, home).is_empty());
        assert!(fix(&mut e, WIRELESS, 2, home).is_empty());
        assert_eq!(fix(&mut e, WIRED, 3, away), [AlertType::GeofenceExit]);
        // The wireless unit's last word: outside. Its silence threshold is 48 h.
        assert!(fix(&mut e, WIRELESS, 4, away).is_empty());
        assert!(
            fix(&mut e, WIRED, 5, home).is_empty(),
            "heard from 1 minute ago"
        );
        // The wired unit leaves again: the wireless unit's "outside" is older than the wired
        // unit's fix at home, so this is a new excursion.
        assert_eq!(fix(&mut e, WIRED, 47 * h, away), [AlertType::GeofenceExit]);
        assert_eq!(
            fix(&mut e, WIRED, 49 * h, home),
            [AlertType::GeofenceReturn],
            "silent 49 h: no longer the car"
        );
        assert_eq!(fix(&mut e, WIRED, 50 * h, away), [AlertType::GeofenceExit]);
        let reasons = e.risk_of("V-1", t0.add_millis(50 * h * 60_000)).unwrap();
        assert!(reasons.reasons.iter().any(|r| r.code == "outside_geofence"));
        assert_eq!(
            fix(&mut e, WIRED, 51 * h, home),
            [AlertType::GeofenceReturn]
        );
        let reasons = e.risk_of("V-1", t0.add_millis(51 * h * 60_000)).unwrap();
        assert!(
            !reasons.reasons.iter().any(|r| r.code == "outside_geofence"),
            "{:?}",
            reasons.reasons
        );
    }

    /// The battery unit last woke outside, on a trip; the wired unit came home after it. When
    /// the car leaves at night (its flight), the battery unit's old word "outside" must not
    /// make the wired unit's exit part of that trip.
    #[test]
    fn a_battery_units_old_word_outside_does_not_swallow_the_cars_flight() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = two_tracker_car(
            t0,
            serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 40}),
            Some(serde_json::json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 2000})),
        );
        let fix = |e: &mut crate::engine::Engine, device: &str, minutes: i64, lat: f64| {
            let t = t0.add_millis(minutes * 60_000);
            e.ingest(&[live_fix(device, t, lat, 114.0)], t);
            e.take_alerts()
                .into_iter()
                .filter(|a| matches!(a.kind, AlertType::GeofenceExit | AlertType::GeofenceReturn))
                .map(|a| a.kind)
                .collect::<Vec<_>>()
        };
        let (home, away, far) = (22.5, 22.6, 22.9);
        assert!(fix(&mut e, WIRED, 1, home).is_empty());
        assert!(fix(&mut e, WIRELESS, 2, home).is_empty());
        assert_eq!(fix(&mut e, WIRED, 10, away), [AlertType::GeofenceExit]);
        assert!(fix(&mut e, WIRELESS, 20, away).is_empty(), "the same trip");
        assert!(fix(&mut e, WIRED, 30, home).is_empty());
        assert!(fix(&mut e, WIRED, 40, home).is_empty());
        assert_eq!(
            fix(&mut e, WIRED, 14 * 60, far),
            [AlertType::GeofenceExit],
            "the flight, 14 hours later"
        );
        assert!(fix(&mut e, WIRED, 15 * 60, far).is_empty());
    }

    /// Two trackers on one car at a pawn shop: one `risk_zone_enter` and one `risk_zone_dwell`
    /// for the car's visit; a new visit once both have left.
    #[test]
    fn a_car_with_two_trackers_visits_a_zone_once() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = overdue_two_tracker_car(t0);
        put_shop(&mut e, "1h", t0);
        let kinds = zone_alerts;
        let at = |m: i64| t0.add_millis(m * 60_000);
        let (shop, home) = (22.6, 22.5);
        e.ingest(&[live_fix(WIRED, at(1), shop, 114.0)], at(1));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneEnter]);
        e.ingest(&[live_fix(WIRELESS, at(2), shop, 114.0)], at(2));
        assert!(kinds(&mut e).is_empty(), "the same visit");
        e.tick(at(90));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneDwell], "one dwell");
        // The wired unit saw the car away after the wireless unit's last word from the shop:
        // back there, the car's visit is a new one.
        e.ingest(&[live_fix(WIRED, at(91), home, 114.0)], at(91));
        e.ingest(&[live_fix(WIRED, at(92), shop, 114.0)], at(92));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneEnter], "seen away");
        for (m, d) in [(93, WIRED), (94, WIRELESS)] {
            e.ingest(&[live_fix(d, at(m), home, 114.0)], at(m));
        }
        e.ingest(&[live_fix(WIRELESS, at(95), shop, 114.0)], at(95));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneEnter], "a new visit");
        // The wireless unit dies in the shop. While it may just be asleep (its threshold is
        // 48 h), its visit is the car's; after that, the other tracker's visit is a new one. The
        // wired unit's fix before each entry (at 94, home) is older than the wireless unit's
        // word from the shop (95): only the silence decides.
        for (late, told) in [(8 * 60, false), (49 * 60, true)] {
            let mut e = two_tracker_car(
                t0,
                serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 40}),
                None,
            );
            put_shop(&mut e, "1h", t0);
            e.ingest(&[live_fix(WIRED, at(94), home, 114.0)], at(94));
            e.ingest(&[live_fix(WIRELESS, at(95), shop, 114.0)], at(95));
            assert_eq!(kinds(&mut e), [AlertType::RiskZoneEnter]);
            let m = 95 + late;
            e.ingest(&[live_fix(WIRED, at(m), shop, 114.0)], at(m));
            let want: &[AlertType] = if told {
                &[AlertType::RiskZoneEnter]
            } else {
                &[]
            };
            assert_eq!(
                kinds(&mut e),
                want,
                "the wireless unit silent {late} minutes"
            );
        }
    }

    /// A battery unit's fix from the car's short stop at a yard opens a visit that no later fix
    /// of its own ends. The wired unit saw the car leave and, hours later, come back: that is a
    /// new visit, with its enter and its dwell. A fix sent again after its acknowledgement was
    /// lost opens nothing.
    #[test]
    fn a_visit_seen_ended_by_the_other_tracker_does_not_swallow_the_next() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = overdue_two_tracker_car(t0);
        put_shop(&mut e, "1h", t0);
        let kinds = zone_alerts;
        let at = |m: i64| t0.add_millis(m * 60_000);
        let (yard, road) = (22.6, 22.5);
        e.ingest(&[live_fix(WIRED, at(0), yard, 114.0)], at(0));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneEnter]);
        e.ingest(&[live_fix(WIRELESS, at(5), yard, 114.0)], at(5));
        e.ingest(&[live_fix(WIRED, at(10), yard, 114.0)], at(10));
        assert!(kinds(&mut e).is_empty(), "the same visit");
        e.ingest(&[live_fix(WIRED, at(20), road, 114.0)], at(20));
        // The battery unit's visit dwells on the clock (it may be the one on the car).
        e.tick(at(65));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneDwell]);
        e.ingest(&[live_fix(WIRED, at(400), road, 114.0)], at(400));
        // The fix before it turns in is by the gate, 30 m outside the yard's 300 m.
        let gate = 22.6 - 330.0 / 111_195.0;
        e.ingest(&[live_fix(WIRED, at(479), gate, 114.0)], at(479));
        e.ingest(&[live_fix(WIRED, at(480), yard, 114.0)], at(480));
        assert_eq!(
            kinds(&mut e),
            [AlertType::RiskZoneEnter],
            "back at the yard"
        );
        e.tick(at(541));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneDwell], "its own dwell");
        // The wired unit leaves; its fix at the yard from before comes again.
        e.ingest(&[live_fix(WIRED, at(560), road, 114.0)], at(560));
        e.ingest(&[live_fix(WIRED, at(540), yard, 114.0)], at(561));
        assert!(kinds(&mut e).is_empty(), "a fix sent again opens nothing");
        e.tick(at(700));
        assert!(kinds(&mut e).is_empty());
    }

    /// The wired unit reconnects at a pawn shop the battery unit already placed the car in, and
    /// uploads what it logged there before its live fix: its newest fix before the live one is
    /// in the shop, so the battery unit's visit goes on (one enter, one dwell on time).
    #[test]
    fn a_backlog_from_inside_the_zone_does_not_end_the_other_trackers_visit() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let at = |m: i64| t0.add_millis(m * 60_000);
        let mut e = overdue_two_tracker_car(t0);
        put_shop(&mut e, "1h", t0);
        let kinds = zone_alerts;
        e.ingest(&[live_fix(WIRED, at(-60), 22.5, 114.0)], at(-60));
        e.ingest(&[live_fix(WIRELESS, at(0), 22.6, 114.0)], at(0));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneEnter]);
        let backlog: Vec<_> = [20, 35, 50]
            .into_iter()
            .map(|m| buffered_fix(WIRED, at(m), 22.6, 114.0))
            .collect();
        e.ingest(&backlog, at(55));
        e.ingest(&[live_fix(WIRED, at(55), 22.6, 114.0)], at(55));
        assert!(kinds(&mut e).is_empty(), "the same visit");
        e.tick(at(61));
        assert_eq!(kinds(&mut e), [AlertType::RiskZoneDwell], "on time, once");
    }

    /// A start after downtime: a visit that reached its dwell while the daemon was down waits
    /// for the start's grace, so that a car that left meanwhile says so with its first live fix
    /// (no dwell for it), while a car still there gets its dwell when the grace ends.
    #[test]
    fn a_start_after_downtime_hears_the_trackers_before_a_dwell() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let at = |m: i64| t0.add_millis(m * 60_000);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = two_tracker_car_on(
            store.clone(),
            t0,
            serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 40}),
            None,
        );
        const STAYS: &str = "868120145299777";
        put_vehicle(
            &mut e,
            "V-2",
            serde_json::json!({"loan": {"id": "L2", "status": "overdue", "days_past_due": 40},
                "devices": [{"id": STAYS, "kind": "wired"}]}),
            t0,
        );
        put_shop(&mut e, "1h", t0);
        e.ingest(&[live_fix(WIRED, at(1), 22.6, 114.0)], at(1));
        e.ingest(&[live_fix(STAYS, at(1), 22.6, 114.0)], at(1));
        e.flush().unwrap();
        drop(e);
        let dwells = |e: &mut crate::engine::Engine| {
            e.take_alerts()
                .into_iter()
                .filter(|a| a.kind == AlertType::RiskZoneDwell)
                .map(|a| a.vehicle_id.clone())
                .collect::<Vec<_>>()
        };
        // Down for three hours; the first car left the shop meanwhile.
        let mut e = crate::engine::testing::reopen_at(&store, at(180));
        e.tick(at(180));
        assert!(
            dwells(&mut e).is_empty(),
            "nothing before the trackers are heard"
        );
        e.ingest(&[live_fix(WIRED, at(183), 22.5, 114.0)], at(183));
        e.tick(at(200));
        assert_eq!(dwells(&mut e), ["V-2".to_string()]);
    }

    /// A zone's `dwell_after` shortened while a car is in it: the dwell comes at the new time,
    /// by a single put or by a bulk import.
    #[test]
    fn a_shorter_dwell_applies_to_a_visit_in_progress() {
        use crate::engine::command::Command;
        use crate::engine::zones::ImportZones;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let at = |m: i64| t0.add_millis(m * 60_000);
        let mut e = overdue_two_tracker_car(t0);
        put_shop(&mut e, "24h", t0);
        let dwells = |e: &mut crate::engine::Engine| {
            e.take_alerts()
                .into_iter()
                .filter(|a| a.kind == AlertType::RiskZoneDwell)
                .count()
        };
        e.ingest(&[live_fix(WIRED, at(1), 22.6, 114.0)], at(1));
        put_shop(&mut e, "1h", at(30));
        e.tick(at(62));
        assert_eq!(dwells(&mut e), 1, "at the new hour, not the day's end");

        // The same through an import, for the next visit.
        e.ingest(&[live_fix(WIRED, at(70), 22.5, 114.0)], at(70));
        put_shop(&mut e, "24h", at(71));
        e.ingest(&[live_fix(WIRED, at(80), 22.6, 114.0)], at(80));
        let features = br#"{"type": "FeatureCollection", "features": [{"type": "Feature",
            "id": "Z-1", "properties": {"name": "Pawn", "kind": "pawnshop", "dwell_after": "30m",
            "radius_m": 300}, "geometry": {"type": "Point", "coordinates": [114.0, 22.6]}}]}"#;
        ImportZones::from_json(features)
            .and_then(|c| c.apply(&mut e, at(90)))
            .unwrap();
        e.tick(at(111));
        assert_eq!(dwells(&mut e), 1, "half an hour after it came");
    }

    /// A tracker back from a silence on a new connection: its login holds `reappeared` until
    /// the fix that follows, which gives `distance_m`; a login alone raises it after the hold.
    #[test]
    fn a_reconnecting_tracker_reappears_with_its_distance() {
        use crate::event::{Event, EventKind};
        let reappeared = reappeared_details;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = overdue_two_tracker_car(t0);
        let seen = t0.add_millis(60_000);
        e.ingest(&[live_fix(WIRED, seen, 22.5, 114.0)], seen);
        let silent = t0.add_millis(3 * 86_400_000);
        e.tick(silent);
        assert!(e
            .take_alerts()
            .iter()
            .any(|a| a.kind == AlertType::SilentOverdue && a.device_id.as_str() == WIRED));

        let back = silent.add_millis(3_600_000);
        e.ingest(&[login(WIRED)], back);
        assert!(reappeared(&mut e).is_empty(), "held for the fix");
        // A status packet between the login and the fix: still held.
        let status = Event {
            kind: EventKind::Heartbeat {
                alarms: Default::default(),
            },
            ..login(WIRED)
        };
        e.ingest(&[status], back.add_millis(300));
        assert!(reappeared(&mut e).is_empty(), "still held for the fix");
        let fix_at = back.add_millis(600);
        e.ingest(&[live_fix(WIRED, fix_at, 22.6, 114.0)], fix_at);
        let r = reappeared(&mut e);
        assert_eq!(r.len(), 1, "{r:?}");
        let d = r[0]["distance_m"].as_f64().expect("distance_m");
        assert!((d - 11_119.5).abs() < 50.0, "{d}");
        assert_eq!(r[0]["silent_s"], serde_json::json!(back.since(seen) / 1000));
        assert_eq!(r[0]["last_seen"], serde_json::json!(seen));
        // Nothing more when the hold would have run out.
        e.tick(fix_at.add_millis(60_000));
        assert!(reappeared(&mut e).is_empty());

        // Silent again, then a login and nothing else: raised when the hold runs out.
        let silent = fix_at.add_millis(3 * 86_400_000);
        e.tick(silent);
        let _ = e.take_alerts();
        let back = silent.add_millis(60_000);
        e.ingest(&[login(WIRED)], back);
        e.tick(back.add_millis(700));
        assert!(reappeared(&mut e).is_empty());
        e.tick(back.add(crate::rules::REAPPEAR_HOLD));
        let r = reappeared(&mut e);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].get("distance_m").is_none(), "{r:?}");
        assert_eq!(
            r[0]["silent_s"],
            serde_json::json!(back.since(fix_at) / 1000)
        );
    }

    /// A tracker back from a silence uploads what it logged meanwhile, oldest first, before
    /// its live fix: `distance_m` is from where it went silent to its live fix, not to the
    /// first fix of the backlog, a few hundred metres from home; with no live fix within the
    /// hold, there is none.
    #[test]
    fn a_backlog_after_the_silence_does_not_shorten_the_distance() {
        use crate::event::Event;
        let buffered = |t: Timestamp, lat: f64| buffered_fix(WIRED, t, lat, 114.0);
        let reappeared = reappeared_details;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = overdue_two_tracker_car(t0);
        let seen = t0.add_millis(60_000);
        e.ingest(&[live_fix(WIRED, seen, 22.5, 114.0)], seen);
        let mut last = seen;
        for round in 0..2 {
            let silent = last.add_millis(3 * 86_400_000);
            e.tick(silent);
            let _ = e.take_alerts();
            let back = silent.add_millis(3_600_000);
            // Logged while out of coverage: 300 m from home, then 120 km away.
            let backlog: Vec<Event> = (0..4)
                .map(|i| buffered(silent.add_millis(i * 600_000), 22.5027 + i as f64 * 0.36))
                .collect();
            let mut frames = vec![login(WIRED)];
            frames.extend(backlog);
            e.ingest(&frames, back);
            assert!(reappeared(&mut e).is_empty(), "held for the live fix");
            let r = if round == 0 {
                let at = back.add_millis(400);
                e.ingest(&[live_fix(WIRED, at, 23.6, 114.0)], at);
                reappeared(&mut e)
            } else {
                e.tick(back.add(crate::rules::REAPPEAR_HOLD));
                reappeared(&mut e)
            };
            assert_eq!(r.len(), 1, "{r:?}");
            if round == 0 {
                let d = r[0]["distance_m"].as_f64().expect("distance_m");
                assert!((d - 122_314.0).abs() < 1_000.0, "{d}");
            } else {
                // No live fix within the hold, and the backlog's newest fix is from 30 minutes
                // after the silence began, hours before the login: no measure of where it is.
                assert!(r[0].get("distance_m").is_none(), "{r:?}");
            }
            // The next round goes silent from where this one ended.
            last = back.add_millis(1_000);
            e.ingest(&[live_fix(WIRED, last, 22.5, 114.0)], last);
        }
    }

    /// A batch uploaded within the hold whose newest fix is from the minutes before the login
    /// (a JT/T 808 0x0704 in one message): with no live fix, that newest fix gives the distance.
    #[test]
    fn a_batch_ending_at_the_login_gives_the_distance() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = overdue_two_tracker_car(t0);
        e.ingest(&[live_fix(WIRED, t0, 22.5, 114.0)], t0);
        let silent = t0.add_millis(3 * 86_400_000);
        e.tick(silent);
        let _ = e.take_alerts();
        let back = silent.add_millis(3_600_000);
        let mut frames = vec![login(WIRED)];
        for (m, lat) in [(-50, 22.503), (-20, 22.9), (-2, 23.6)] {
            frames.push(buffered_fix(WIRED, back.add_millis(m * 60_000), lat, 114.0));
        }
        e.ingest(&frames, back);
        e.tick(back.add(crate::rules::REAPPEAR_HOLD));
        let r: Vec<_> = e
            .take_alerts()
            .into_iter()
            .filter(|a| a.kind == AlertType::Reappeared)
            .collect();
        assert_eq!(r.len(), 1);
        let d = r[0].details["distance_m"].as_f64().expect("distance_m");
        assert!((d - 122_314.0).abs() < 1_000.0, "{d}");
    }

    /// A silent device of an overdue car logs in (its `reappeared` held for the fix): that ends
    /// the car's `all_silent` episode, and raises no second one.
    #[test]
    fn a_login_ends_all_silent_without_raising_it_again() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = two_tracker_car(
            t0,
            serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 100}),
            None,
        );
        let seen = t0.add_millis(60_000);
        e.ingest(
            &[
                live_fix(WIRED, seen, 22.5, 114.0),
                live_fix(WIRELESS, seen, 22.5, 114.0),
            ],
            seen,
        );
        let silent = t0.add_millis(10 * 86_400_000);
        e.tick(silent);
        let count = |e: &mut crate::engine::Engine| {
            e.take_alerts()
                .iter()
                .filter(|a| a.kind == AlertType::AllSilent)
                .count()
        };
        assert_eq!(count(&mut e), 1);
        let back = silent.add_millis(60_000);
        e.ingest(&[login(WIRED)], back);
        e.tick(back.add_millis(300));
        e.tick(back.add(crate::rules::REAPPEAR_HOLD));
        assert_eq!(count(&mut e), 0, "the login ended the episode");
    }

    /// A restart while `reappeared` is held: the hold is kept in the store, so the alert comes
    /// when it ends, with the silence the login ended; and the vehicle's `all_silent` episode,
    /// which the login ended, is not raised again.
    #[test]
    fn a_reappearance_held_across_a_restart_keeps_the_length_of_the_silence() {
        use crate::event::{Event, EventKind, Protocol};
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = engine_at(store.clone(), t0);
        put_vehicle(
            &mut e,
            "V-1",
            serde_json::json!({
                "loan": {"id": "L", "status": "overdue", "days_past_due": 40},
                "devices": [{"id": WIRED, "kind": "wired"}],
            }),
            t0,
        );
        let seen = t0.add_millis(60_000);
        e.ingest(&[live_fix(WIRED, seen, 22.5, 114.0)], seen);
        let silent = t0.add_millis(3 * 86_400_000);
        e.tick(silent);
        let _ = e.take_alerts();
        let back = silent.add_millis(3_600_000);
        let event = |kind| Event {
            device_id: crate::event::DeviceId::new(WIRED),
            protocol: Protocol::Gt06,
            kind,
        };
        e.ingest(&[event(EventKind::Login)], back);
        e.flush().unwrap();
        drop(e);

        let mut e = engine_at(store, back.add_millis(300));
        e.ingest(
            &[event(EventKind::Heartbeat {
                alarms: Default::default(),
            })],
            back.add_millis(500),
        );
        assert!(e.take_alerts().is_empty(), "still held for a fix");
        e.tick(back.add(crate::rules::REAPPEAR_HOLD));
        let r: Vec<_> = e
            .take_alerts()
            .into_iter()
            .filter(|a| a.kind == AlertType::Reappeared)
            .map(|a| a.details)
            .collect();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            r[0]["silent_s"],
            serde_json::json!(back.since(seen) / 1000),
            "the silence the login ended, not the seconds since it"
        );
    }
}
