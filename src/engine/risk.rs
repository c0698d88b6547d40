//! The engine's side of the risk score: which events move which reasons, `risk_tier_changed`
//! when a vehicle's tier goes up, and the collections queue (`GET /v1/vehicles` ordered by risk).

use super::command::{Command, EngineError};
use super::queue_rows::Row;
use super::view::{VehiclePage, VehicleSummary};
use super::Engine;
use crate::alert::AlertType;
use crate::event::DeviceId;
use crate::registry::LoanStatus;
use crate::risk::{Reason, RiskState, RiskView, Tier};
use crate::time::Timestamp;

impl Engine {
    /// A vehicle's risk at `now`.
    pub(super) fn risk_of(&self, vehicle_id: &str, now: Timestamp) -> Option<RiskView> {
        let v = self.vehicles.get(vehicle_id)?;
        let empty = RiskState::default();
        let st = self.risk.get(vehicle_id).unwrap_or(&empty);
        Some(st.assess(&v.loan, &self.cfg.risk_points, now))
    }

    /// Changes a vehicle's risk reasons; raises `risk_tier_changed` (about `device`) when the
    /// tier went up. The state is written in this commit.
    pub(super) fn update_risk(
        &mut self,
        vehicle_id: &str,
        device: &DeviceId,
        now: Timestamp,
        f: impl FnOnce(&mut RiskState),
    ) {
        let Some(before) = self.risk_of(vehicle_id, now) else {
            return;
        };
        let st = self.risk.entry(vehicle_id.to_string()).or_default();
        st.expire(now);
        f(st);
        self.risk_changed(vehicle_id, now);
        if !self.tier_alerts_held {
            self.raise_if_tier_rose(vehicle_id, device, before, now);
        }
    }

    /// `risk_tier_changed` when the vehicle's tier is now above `before`'s.
    fn raise_if_tier_rose(
        &mut self,
        vehicle_id: &str,
        device: &DeviceId,
        before: RiskView,
        now: Timestamp,
    ) {
        let Some(after) = self.risk_of(vehicle_id, now) else {
            return;
        };
        if after.tier > before.tier {
            let details = serde_json::json!({
                "from": before.tier,
                "to": after.tier,
                "score": after.score,
                "reasons": after.reasons,
            });
            self.raise(vehicle_id, device, AlertType::RiskTierChanged, details, now);
        }
    }

    /// Runs changes to one vehicle (a command's, or one message's alerts), which may move several of its reasons (a loan
    /// turning overdue while its device is silent: the band and `silent_overdue`), and raises
    /// at most one `risk_tier_changed`, from `before`, its risk before the command changed
    /// anything (a loan reopened rises from `none`, not from the reasons it held when closed),
    /// to the tier after. A vehicle just created had no tier to go up from (`before` none).
    /// The alert names `device`, or for a command the vehicle's first.
    pub(super) fn risk_in_one_step(
        &mut self,
        vehicle_id: &str,
        before: Option<RiskView>,
        device: Option<&DeviceId>,
        now: Timestamp,
        f: impl FnOnce(&mut Engine),
    ) {
        let held = std::mem::replace(&mut self.tier_alerts_held, true);
        f(self);
        self.tier_alerts_held = held;
        if held {
            return;
        }
        let device = device
            .cloned()
            .unwrap_or_else(|| self.first_device(vehicle_id));
        if let Some(before) = before {
            self.raise_if_tier_rose(vehicle_id, &device, before, now);
        }
    }

    /// Ends the episode reasons that nothing holds any more after a registry or loan change
    /// (call it after `vehicle_rules_sync`): a fence removed or replaced restarts every
    /// placement without a `geofence_return`, a silent device taken off the vehicle sends no
    /// `reappeared` to it, a tracker taken off ends the separations it was in, a vehicle left
    /// with one tracker has no `all_silent`, and a closed loan forgets its long stay.
    ///
    /// The excursion is read from the placements alone, not from whether the device outside
    /// still speaks: a put of the loan alone must not end what the next fix would not.
    pub(super) fn risk_reconcile(&mut self, vehicle_id: &str, now: Timestamp) {
        let outside = self.devices_where(vehicle_id, None, |_, st| {
            st.placement == crate::rules::FencePlacement::Outside
        });
        let silent = self
            .vehicles
            .get(vehicle_id)
            .is_some_and(|v| crate::risk::Reason::overdue(&v.loan).is_some())
            && self.devices_where(vehicle_id, None, |_, st| st.silent_alerted);
        let unusual = self
            .vrules
            .long_stay
            .states
            .get(vehicle_id)
            .is_some_and(|s| s.unusual_open());
        let (all_silent, separated) = self.vrules.episodes_open(vehicle_id);
        let Some(st) = self.risk.get(vehicle_id) else {
            return;
        };
        let ends: Vec<Reason> = [
            (outside, Reason::OutsideGeofence),
            (silent, Reason::SilentOverdue),
            (unusual, Reason::LongStayUnusual),
            (all_silent, Reason::AllSilent),
            (separated, Reason::DeviceSeparation),
        ]
        .into_iter()
        .filter(|&(held, r)| !held && st.holds(r))
        .map(|(_, r)| r)
        .collect();
        if !ends.is_empty() {
            // Reasons only end here: the tier cannot rise, so no device is named.
            self.update_risk(vehicle_id, &DeviceId::new(""), now, |s| {
                for r in ends {
                    s.close(r);
                }
            });
        }
    }

    /// Moves the reasons' times with a step of the host clock (0 at a start with the clock set
    /// back), written with the next commit.
    pub(super) fn risk_clock_stepped(&mut self, step_ms: i64, now: Timestamp) {
        let moved: Vec<String> = (self.risk.iter_mut())
            .filter_map(|(id, st)| st.clock_stepped(step_ms, now).then(|| id.clone()))
            .collect();
        for id in moved {
            self.risk_changed(&id, now);
        }
    }

    /// The vehicle's reasons, loan or existence changed: written in this commit, and its queue
    /// row follows at once.
    pub(super) fn risk_changed(&mut self, vehicle_id: &str, now: Timestamp) {
        self.dirty_risk.insert(vehicle_id.to_string());
        self.queue.set(
            vehicle_id,
            self.vehicles.get(vehicle_id),
            self.risk.get(vehicle_id),
            &self.cfg.risk_points,
            now,
        );
    }

    /// What an alert does to its vehicle's reasons.
    pub(super) fn risk_on_alert(
        &mut self,
        vehicle_id: &str,
        device: &DeviceId,
        kind: AlertType,
        details: &serde_json::Value,
        now: Timestamp,
    ) {
        let separation = self.cfg.rules.separation_m;
        let cfg = self.rules.config();
        let others_silent = self.other_devices(vehicle_id, device, |_, st| st.silent_alerted);
        let others_outside = self.other_devices(vehicle_id, device, |d, st| {
            crate::rules::geofence::holds_car_outside(cfg, d, st, now, None)
        });
        let change: Box<dyn FnOnce(&mut RiskState)> = match kind {
            AlertType::PowerCut | AlertType::Tamper => {
                Box::new(move |s| s.hold(Reason::PowerCutOrTamper, now))
            }
            AlertType::SilentOverdue => Box::new(move |s| s.open(Reason::SilentOverdue, now)),
            AlertType::Reappeared => {
                let far = details
                    .get("distance_m")
                    .and_then(|d| d.as_f64())
                    .is_some_and(|d| d > separation);
                Box::new(move |s| {
                    if !others_silent {
                        s.close(Reason::SilentOverdue);
                    }
                    if far {
                        s.hold(Reason::ReappearedFar, now);
                    }
                })
            }
            AlertType::GeofenceExit => Box::new(move |s| s.open(Reason::OutsideGeofence, now)),
            AlertType::RiskZoneEnter => Box::new(move |s| s.hold(Reason::RiskZoneEnter, now)),
            AlertType::RiskZoneDwell => Box::new(move |s| s.hold(Reason::RiskZoneDwell, now)),
            AlertType::DeviceSeparation => Box::new(move |s| s.open(Reason::DeviceSeparation, now)),
            AlertType::AllSilent => Box::new(move |s| s.open(Reason::AllSilent, now)),
            AlertType::LongStay if details["usual_place"] == false => {
                Box::new(move |s| s.open(Reason::LongStayUnusual, now))
            }
            AlertType::GeofenceReturn => Box::new(move |s| {
                if !others_outside {
                    s.close(Reason::OutsideGeofence)
                }
            }),
            _ => return,
        };
        self.update_risk(vehicle_id, device, now, change);
    }

    /// Ends the `all_silent` and `device_separation` reasons once their episodes have ended.
    pub(super) fn risk_episodes(
        &mut self,
        vehicle_id: &str,
        device: &DeviceId,
        all_silent: bool,
        separated: bool,
        now: Timestamp,
    ) {
        let Some(st) = self.risk.get(vehicle_id) else {
            return;
        };
        let end_silent = !all_silent && st.holds(Reason::AllSilent);
        let end_separated = !separated && st.holds(Reason::DeviceSeparation);
        if end_silent || end_separated {
            self.update_risk(vehicle_id, device, now, |s| {
                if end_silent {
                    s.close(Reason::AllSilent);
                }
                if end_separated {
                    s.close(Reason::DeviceSeparation);
                }
            });
        }
    }

    /// After a loan or registry change: the overdue band follows the loan. A vehicle just
    /// registered had no tier to go up from: its first tier raises nothing.
    pub(super) fn risk_on_loan(&mut self, vehicle_id: &str, created: bool, now: Timestamp) {
        let Some(v) = self.vehicles.get(vehicle_id) else {
            return;
        };
        let loan = v.loan.clone();
        if created {
            let st = self.risk.entry(vehicle_id.to_string()).or_default();
            let _ = st.set_loan(&loan, now);
            self.risk_changed(vehicle_id, now);
            return;
        }
        // `silent_overdue` is a silence while the loan is overdue: a loan brought current
        // drops it (its `reappeared` still comes), and one overdue again while the device is
        // still silent, already alerted, takes it back.
        let silent = crate::risk::Reason::overdue(&loan).is_some()
            && self.devices_where(vehicle_id, None, |_, st| st.silent_alerted);
        let device = self.first_device(vehicle_id);
        self.update_risk(vehicle_id, &device, now, |s| {
            let _ = s.set_loan(&loan, now);
            if silent && !s.holds(Reason::SilentOverdue) {
                s.open(Reason::SilentOverdue, now);
            } else if !silent {
                s.close(Reason::SilentOverdue);
            }
        });
    }

    /// Whether another device of the vehicle is in a state (a vehicle-level reason ends only
    /// when none of its devices still holds it).
    pub(super) fn other_devices(
        &self,
        vehicle_id: &str,
        device: &DeviceId,
        test: impl Fn(&crate::registry::DeviceBinding, &crate::rules::DeviceRuleState) -> bool,
    ) -> bool {
        self.devices_where(vehicle_id, Some(device), test)
    }

    /// Whether a device of the vehicle, `except` one, is in a state.
    fn devices_where(
        &self,
        vehicle_id: &str,
        except: Option<&DeviceId>,
        test: impl Fn(&crate::registry::DeviceBinding, &crate::rules::DeviceRuleState) -> bool,
    ) -> bool {
        self.vehicles.get(vehicle_id).is_some_and(|v| {
            v.devices
                .iter()
                .filter(|d| Some(&d.id) != except)
                .any(|d| self.states.get(&d.id).is_some_and(|st| test(d, st)))
        })
    }

    /// The device a vehicle-wide risk alert names: the vehicle's first.
    fn first_device(&self, vehicle_id: &str) -> DeviceId {
        self.vehicles
            .get(vehicle_id)
            .and_then(|v| v.devices.first())
            .map_or_else(|| DeviceId::new(""), |d| d.id.clone())
    }
}

/// `GET /v1/vehicles?tier=..&loan_status=..&limit=N&after=CURSOR`: the collections queue,
/// highest score first, ties the longest-silent first, then by id.
pub struct RiskQueue {
    pub tiers: Option<Vec<Tier>>,
    pub loan_statuses: Option<Vec<LoanStatus>>,
    pub limit: usize,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// Where a page ends: the sort key of its last vehicle, as an opaque string.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Debug)]
struct Key {
    neg_score: i64,
    /// Never seen sorts first (the longest silence of all).
    last_seen: i64,
    id: String,
}

impl Key {
    fn cursor(&self) -> String {
        format!(
            "{}.{}.{}",
            -self.neg_score,
            self.last_seen,
            hex::encode(self.id.as_bytes())
        )
    }

    fn parse(s: &str) -> Option<Key> {
        let mut it = s.splitn(3, '.');
        let score: i64 = it.next()?.parse().ok()?;
        let last_seen: i64 = it.next()?.parse().ok()?;
        let id = String::from_utf8(hex::decode(it.next()?).ok()?).ok()?;
        Some(Key {
            neg_score: score.checked_neg()?,
            last_seen,
            id,
        })
    }
}

impl RiskQueue {
    /// From the query's raw parameters (comma-separated lists).
    pub fn parse(
        tier: Option<&str>,
        loan_status: Option<&str>,
        limit: Option<usize>,
        after: Option<String>,
    ) -> Result<RiskQueue, EngineError> {
        let tiers = tier
            .map(|t| {
                t.split(',')
                    .map(|x| {
                        Tier::parse(x.trim()).ok_or_else(|| {
                            EngineError::Invalid(format!(
                                "tier: expected high, medium, low or none, got {x:?}"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let loan_statuses = loan_status
            .map(|t| {
                t.split(',')
                    .map(|x| match x.trim() {
                        "current" => Ok(LoanStatus::Current),
                        "overdue" => Ok(LoanStatus::Overdue),
                        "closed" => Ok(LoanStatus::Closed),
                        other => Err(EngineError::Invalid(format!(
                            "loan_status: expected current, overdue or closed, got {other:?}"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if let Some(a) = &after {
            Key::parse(a)
                .ok_or_else(|| EngineError::Invalid("after: not a cursor of this list".into()))?;
        }
        Ok(RiskQueue {
            tiers,
            loan_statuses,
            limit: limit.unwrap_or(100),
            after,
        })
    }
}

impl Command for RiskQueue {
    type Output = VehiclePage;
    const WRITES: bool = false;

    /// Scored at `now`, so a reason that expired a second ago no longer counts. Scans the dense
    /// rows (`queue_rows`), allocates nothing per vehicle, and works in two passes: first every
    /// match's score alone, then the longest-silent order (a lookup of each device) only among
    /// those that can still make the page, the ties of its lowest score.
    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<VehiclePage, EngineError> {
        if self.limit == 0 || self.limit > super::vehicles::MAX_PAGE {
            return Err(EngineError::Invalid(format!(
                "limit must be between 1 and {}",
                super::vehicles::MAX_PAGE
            )));
        }
        let after = self.after.as_deref().and_then(Key::parse);
        let after = after
            .as_ref()
            .map(|a| (a.neg_score, a.last_seen, a.id.as_str()));
        let (vehicles, risk, devices) = (&e.vehicles, &e.risk, &e.devices);
        let last_seen = |r: &Row| {
            r.devices
                .iter()
                .filter_map(|d| devices.get(d))
                .map(|r| r.last_seen.millis())
                .max()
                .unwrap_or(i64::MIN)
        };
        let all = e.queue.current(&e.cfg.risk_points, now, |id| {
            (vehicles.get(id), risk.get(id))
        });
        // Pass 1: (negated score, last_seen if already needed, vehicle id) of every match after
        // the cursor.
        let mut rows: Vec<(i64, Option<i64>, &Row)> = Vec::new();
        for r in all {
            if let Some(ls) = &self.loan_statuses {
                if !ls.contains(&r.status) {
                    continue;
                }
            }
            if let Some(ts) = &self.tiers {
                if !ts.contains(&r.tier) {
                    continue;
                }
            }
            let neg = -(r.score as i64);
            let mut seen = None;
            if let Some(a) = after {
                if neg < a.0 {
                    continue;
                }
                if neg == a.0 {
                    let ls = last_seen(r);
                    if (neg, ls, &*r.id) <= a {
                        continue;
                    }
                    seen = Some(ls);
                }
            }
            rows.push((neg, seen, r));
        }
        let n = self.limit.min(rows.len());
        let more = rows.len() > n;
        // Pass 2: only scores up to the page's lowest can be on it.
        if more {
            let (_, &mut (bound, _, _), _) = rows.select_nth_unstable_by_key(n - 1, |r| r.0);
            rows.retain(|r| r.0 <= bound);
        }
        let mut keys: Vec<(i64, i64, &str)> = rows
            .iter()
            .map(|&(neg, seen, r)| (neg, seen.unwrap_or_else(|| last_seen(r)), &*r.id))
            .collect();
        if keys.len() > n {
            keys.select_nth_unstable(n);
        }
        keys.truncate(n);
        keys.sort_unstable();
        let next = match keys.last() {
            Some(&(neg_score, last_seen, id)) if more => Some(
                Key {
                    neg_score,
                    last_seen,
                    id: id.to_string(),
                }
                .cursor(),
            ),
            _ => None,
        };
        let page: Vec<String> = keys.iter().map(|k| k.2.to_string()).collect();
        let e: &Engine = e;
        let vehicles: Vec<VehicleSummary> = page
            .iter()
            .filter_map(|id| e.vehicles.get(id))
            .map(|v| e.vehicle_summary(v, now))
            .collect();
        Ok(VehiclePage { vehicles, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{engine_at, live_fix, put_vehicle};

    /// Pages of 7 (so the second pass cuts inside groups of equal score and equal last_seen)
    /// follow each other without gap or repeat, in the order of one page holding them all.
    #[test]
    fn small_pages_walk_the_whole_queue_in_order() {
        use crate::event::{AlarmReport, Alarms, Event, EventKind, Protocol};
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        for i in 0..50u32 {
            let loan = match i % 3 {
                0 => serde_json::json!({"id": "L", "status": "current"}),
                1 => serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 10}),
                _ => serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 100}),
            };
            let body = serde_json::json!({"loan": loan, "devices": [{"id": format!("86{i:013}")}]});
            put_vehicle(&mut e, &format!("V-{i:02}"), body, t0);
        }
        // Some never heard from; the others in three batches (equal last_seen within each).
        for i in 0..40u32 {
            let alarms = if i % 7 == 0 {
                AlarmReport::raised(Alarms::POWER_CUT)
            } else {
                AlarmReport::NONE
            };
            let ev = Event {
                device_id: DeviceId::new(&format!("86{i:013}")),
                protocol: Protocol::Gt06,
                kind: EventKind::Alarm { alarms },
            };
            e.ingest(&[ev], t0.add_millis(i64::from(i % 3) * 1000));
        }
        let page = |e: &mut Engine, after: Option<String>| {
            RiskQueue::parse(None, None, Some(7), after)
                .and_then(|q| q.apply(e, t0))
                .unwrap()
        };
        let all = RiskQueue::parse(None, None, Some(100), None)
            .and_then(|q| q.apply(&mut e, t0))
            .unwrap();
        assert_eq!(all.vehicles.len(), 50);
        assert!(all.next.is_none());
        let score = |v: &VehicleSummary| v.risk.as_ref().map_or(0, |r| r.score);
        assert!(all
            .vehicles
            .windows(2)
            .all(|w| score(&w[0]) >= score(&w[1])));
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let p = page(&mut e, after);
            walked.extend(p.vehicles.iter().map(|v| v.vehicle_id.clone()));
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let want: Vec<String> = all.vehicles.iter().map(|v| v.vehicle_id.clone()).collect();
        assert_eq!(walked, want);
    }

    fn put(e: &mut Engine, body: serde_json::Value, now: Timestamp) {
        put_vehicle(e, "V-1", body, now);
    }

    fn reasons(e: &Engine, now: Timestamp) -> Vec<&'static str> {
        let r = e.risk_of("V-1", now).unwrap();
        let mut codes: Vec<_> = r.reasons.iter().map(|r| r.code).collect();
        codes.sort_unstable();
        codes
    }

    /// A loan turning overdue while its device is silent moves two reasons (the band and
    /// `silent_overdue`): the tier's rise is one alert, from where it was to where it ends.
    #[test]
    fn one_loan_change_raises_one_tier_alert() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let current = serde_json::json!({"id": "L", "status": "current"});
        put(
            &mut e,
            serde_json::json!({"loan": current, "devices": [{"id": "868120145233604"}]}),
            t0,
        );
        let later = t0.add_millis(3 * 86_400_000);
        e.tick(later);
        let _ = e.take_alerts();
        set_loan(
            &mut e,
            r#"{"status": "overdue", "days_past_due": 10}"#,
            later,
        );
        let alerts = e.take_alerts();
        let tiers: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == AlertType::RiskTierChanged)
            .map(|a| (a.details["from"].clone(), a.details["to"].clone()))
            .collect();
        assert_eq!(
            tiers,
            [(serde_json::json!("none"), serde_json::json!("medium"))],
            "{alerts:?}"
        );
        assert!(alerts.iter().any(|a| a.kind == AlertType::SilentOverdue));
        assert_eq!(reasons(&e, later), ["overdue_1_30", "silent_overdue"]);
    }

    /// A fence taken away from a car outside it ends `outside_geofence` (no `geofence_return`
    /// will), and a vehicle whose stored reasons lag its overdue loan gets its band at start.
    #[test]
    fn reasons_follow_the_registry_and_the_loan_from_the_start() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let loan = serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 40});
        let fence = serde_json::json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 500});
        let device = serde_json::json!([{"id": "868120145233604"}]);
        put(
            &mut e,
            serde_json::json!({"loan": loan, "devices": device, "geofence": fence}),
            t0,
        );
        let far = live_fix("868120145233604", t0.add_millis(60_000), 22.6, 114.2);
        let t1 = t0.add_millis(61_000);
        e.ingest(&[far], t1);
        assert_eq!(reasons(&e, t1), ["outside_geofence", "overdue_31_90"]);
        put(
            &mut e,
            serde_json::json!({"loan": loan, "devices": device}),
            t1,
        );
        assert_eq!(reasons(&e, t1), ["overdue_31_90"]);
        // The stored reasons lost (as in a database from before the risk score): the band is
        // back as soon as the engine opens.
        e.flush().unwrap();
        let store = e.store.clone();
        drop(e);
        let mut w = crate::store::Writes::default();
        w.put_risk("V-1", None);
        store.apply(&mut w, None).unwrap();
        let e = engine_at(store, t1);
        assert_eq!(reasons(&e, t1), ["overdue_31_90"]);
    }

    fn set_loan(e: &mut Engine, body: &str, now: Timestamp) {
        use crate::engine::loans::SetLoan;
        SetLoan::from_json("L", body.as_bytes())
            .and_then(|c| c.apply(e, now))
            .unwrap();
    }

    /// A lone tracker outside its fence, quiet for longer than its silence threshold (a car in
    /// an underground garage): the lender's nightly loan update does not end the excursion,
    /// which only a fix back inside ends.
    #[test]
    fn a_loan_update_keeps_the_excursion_of_a_quiet_tracker_outside() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let fence = serde_json::json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 500});
        let loan = serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 37});
        put(
            &mut e,
            serde_json::json!({"loan": loan, "devices": [{"id": "868120145233604"}], "geofence": fence}),
            t0,
        );
        let t1 = t0.add_millis(60_000);
        e.ingest(&[live_fix("868120145233604", t1, 22.6, 114.2)], t1);
        let quiet = t1.add_millis(7 * 3_600_000);
        e.tick(quiet);
        set_loan(
            &mut e,
            r#"{"status": "overdue", "days_past_due": 38}"#,
            quiet,
        );
        assert_eq!(
            reasons(&e, quiet),
            ["outside_geofence", "overdue_31_90", "silent_overdue"]
        );
        let back = quiet.add_millis(60_000);
        e.ingest(&[live_fix("868120145233604", back, 22.5, 114.0)], back);
        // Back from 23 km away after the silence: `reappeared_far` takes the place.
        assert_eq!(reasons(&e, back), ["overdue_31_90", "reappeared_far"]);
    }

    /// The tracker behind a separation taken off the car ends `device_separation` at once, and
    /// a car left with one tracker has no `all_silent`: neither waits for the other tracker's
    /// next report, which may be days away.
    #[test]
    fn taking_a_tracker_off_ends_the_episodes_it_was_in() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let loan = serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 40});
        let (wired, wireless) = ("868120145233604", "868120145233612");
        let both = serde_json::json!({"loan": loan, "devices": [
            {"id": wired, "kind": "wired"}, {"id": wireless, "kind": "wireless"}]});
        put(&mut e, both.clone(), t0);
        let at = |m: i64| t0.add_millis(m * 60_000);
        e.ingest(&[live_fix(wired, at(1), 22.5, 114.0)], at(1));
        e.ingest(&[live_fix(wireless, at(5), 22.6, 114.0)], at(5));
        assert_eq!(reasons(&e, at(5)), ["device_separation", "overdue_31_90"]);
        let alone =
            serde_json::json!({"loan": loan, "devices": [{"id": wireless, "kind": "wireless"}]});
        put(&mut e, alone.clone(), at(6));
        assert_eq!(reasons(&e, at(6)), ["overdue_31_90"]);
        // Both trackers back, then both silent: `all_silent`, until one is taken off.
        put(&mut e, both, at(7));
        let silent = at(7 + 3 * 24 * 60);
        e.tick(silent);
        assert!(
            reasons(&e, silent).contains(&"all_silent"),
            "{:?}",
            reasons(&e, silent)
        );
        put(&mut e, alone, silent);
        assert!(
            !reasons(&e, silent).contains(&"all_silent"),
            "{:?}",
            reasons(&e, silent)
        );
    }

    /// One message that reports a power cut and puts the car outside its fence moves two
    /// reasons: its tier rise is one alert, from where it was to where it ends.
    #[test]
    fn one_message_raises_one_tier_alert() {
        use crate::event::{AlarmReport, Alarms, EventKind};
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let fence = serde_json::json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 500});
        let loan = serde_json::json!({"id": "L", "status": "current"});
        put(
            &mut e,
            serde_json::json!({"loan": loan, "devices": [{"id": "868120145233604"}], "geofence": fence}),
            t0,
        );
        let t1 = t0.add_millis(60_000);
        let mut ev = live_fix("868120145233604", t1, 22.6, 114.2);
        if let EventKind::Position(f) = &mut ev.kind {
            f.alarms = AlarmReport::raised(Alarms::POWER_CUT);
        }
        e.ingest(&[ev], t1);
        let alerts = e.take_alerts();
        let tiers: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == AlertType::RiskTierChanged)
            .map(|a| {
                (
                    a.details["from"].clone(),
                    a.details["to"].clone(),
                    a.device_id.clone(),
                )
            })
            .collect();
        assert_eq!(
            tiers,
            [(
                serde_json::json!("none"),
                serde_json::json!("medium"),
                DeviceId::new("868120145233604")
            )],
            "{alerts:?}"
        );
        assert_eq!(reasons(&e, t1), ["outside_geofence", "power_cut_or_tamper"]);
    }

    /// A power cut raised while the host clock was a year ahead, then the clock corrected
    /// back: the reason holds its 7 days as watched, and its `since` is not in the future.
    #[test]
    fn a_step_back_of_the_clock_leaves_a_power_cut_its_seven_days() {
        use crate::event::{AlarmReport, Alarms, Event, EventKind, Protocol};
        let (hour, day, year) = (3_600_000, 86_400_000, 365 * 86_400_000);
        let ahead = Timestamp::from_secs(1_826_841_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), ahead);
        let loan = serde_json::json!({"id": "L", "status": "current"});
        put(
            &mut e,
            serde_json::json!({"loan": loan, "devices": [{"id": "868120145233604"}]}),
            ahead,
        );
        let cut = Event {
            device_id: DeviceId::new("868120145233604"),
            protocol: Protocol::Gt06,
            kind: EventKind::Alarm {
                alarms: AlarmReport::raised(Alarms::POWER_CUT),
            },
        };
        e.ingest(&[cut], ahead);
        assert_eq!(reasons(&e, ahead), ["power_cut_or_tamper"]);
        let t1 = ahead.add_millis(hour - year);
        e.clock_stepped(t1, -year);
        let r = e.risk_of("V-1", t1).unwrap();
        assert!(r.reasons.iter().all(|r| r.since <= t1), "{r:?}");
        let end = t1.add_millis(7 * day - hour);
        assert_eq!(reasons(&e, end.add_millis(-1)), ["power_cut_or_tamper"]);
        assert!(reasons(&e, end).is_empty(), "{:?}", reasons(&e, end));
    }

    /// A database whose stored reasons hold a separation its vehicle state no longer has (a
    /// tracker taken off by a build that left the reason): the start ends it.
    #[test]
    fn the_start_ends_reasons_no_episode_holds() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = engine_at(store.clone(), t0);
        let loan = serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 40});
        let (wired, wireless) = ("868120145233604", "868120145233612");
        let both = serde_json::json!({"loan": loan, "devices": [
            {"id": wired, "kind": "wired"}, {"id": wireless, "kind": "wireless"}]});
        put(&mut e, both, t0);
        let at = |m: i64| t0.add_millis(m * 60_000);
        e.ingest(&[live_fix(wired, at(1), 22.5, 114.0)], at(1));
        e.ingest(&[live_fix(wireless, at(5), 22.6, 114.0)], at(5));
        assert_eq!(reasons(&e, at(5)), ["device_separation", "overdue_31_90"]);
        e.flush().unwrap();
        drop(e);
        let mut w = crate::store::Writes::default();
        w.put_vehicle_rule_state("V-1", None);
        store.apply(&mut w, None).unwrap();
        let e = crate::engine::testing::reopen_at(&store, at(6));
        assert_eq!(reasons(&e, at(6)), ["overdue_31_90"]);
    }

    /// A car on a loan 45 days overdue whose one tracker has been silent past its threshold
    /// (reasons `overdue_31_90` and `silent_overdue`), and when.
    fn silent_on_an_overdue_loan() -> (Engine, Timestamp) {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let loan = serde_json::json!({"id": "L", "status": "overdue", "days_past_due": 45});
        put(
            &mut e,
            serde_json::json!({"loan": loan, "devices": [{"id": "868120145233604"}]}),
            t0,
        );
        let t1 = t0.add_millis(60_000);
        e.ingest(&[live_fix("868120145233604", t1, 22.5, 114.0)], t1);
        let quiet = t1.add_millis(7 * 3_600_000);
        e.tick(quiet);
        assert_eq!(reasons(&e, quiet), ["overdue_31_90", "silent_overdue"]);
        (e, quiet)
    }

    /// A closed loan is at tier `none`: opened again, its rise is reported from `none`. Its
    /// episodes ended with it: reopened as `current`, the silence it had is no reason (only an
    /// overdue loan's silence is), and the tier stays `none`.
    #[test]
    fn a_reopened_loan_rises_from_none() {
        let (mut e, quiet) = silent_on_an_overdue_loan();
        set_loan(&mut e, r#"{"status": "closed"}"#, quiet);
        let _ = e.take_alerts();
        let tiers = |e: &mut Engine| -> Vec<(serde_json::Value, serde_json::Value)> {
            e.take_alerts()
                .iter()
                .filter(|a| a.kind == AlertType::RiskTierChanged)
                .map(|a| (a.details["from"].clone(), a.details["to"].clone()))
                .collect()
        };
        set_loan(
            &mut e,
            r#"{"status": "overdue", "days_past_due": 45}"#,
            quiet,
        );
        let none = serde_json::json!("none");
        assert_eq!(tiers(&mut e), [(none, serde_json::json!("medium"))]);
        set_loan(&mut e, r#"{"status": "closed"}"#, quiet);
        set_loan(&mut e, r#"{"status": "current"}"#, quiet);
        assert_eq!(tiers(&mut e), []);
        assert_eq!(reasons(&e, quiet), Vec::<&str>::new());
    }

    /// `silent_overdue` holds while a silence is alerted and the loan is overdue: brought
    /// current, the car leaves the queue's silence band (its `reappeared` still comes when it
    /// speaks); overdue again while still silent, it takes the reason back without a second
    /// `silent_overdue`.
    #[test]
    fn a_silence_counts_only_while_the_loan_is_overdue() {
        let (mut e, quiet) = silent_on_an_overdue_loan();
        let _ = e.take_alerts();
        set_loan(&mut e, r#"{"status": "current"}"#, quiet);
        assert_eq!(reasons(&e, quiet), Vec::<&str>::new());
        let later = quiet.add_millis(3_600_000);
        set_loan(
            &mut e,
            r#"{"status": "overdue", "days_past_due": 5}"#,
            later,
        );
        assert_eq!(reasons(&e, later), ["overdue_1_30", "silent_overdue"]);
        let kinds: Vec<AlertType> = e.take_alerts().iter().map(|a| a.kind).collect();
        assert!(!kinds.contains(&AlertType::SilentOverdue), "{kinds:?}");
        // Current again, then the device speaks: `reappeared`, as for any alerted silence.
        set_loan(&mut e, r#"{"status": "current"}"#, later);
        let back = later.add_millis(60_000);
        e.ingest(&[live_fix("868120145233604", back, 22.5, 114.0)], back);
        e.tick(back.add_millis(5_000));
        let kinds: Vec<AlertType> = e.take_alerts().iter().map(|a| a.kind).collect();
        assert!(kinds.contains(&AlertType::Reappeared), "{kinds:?}");
    }

    /// A queue row shows the newest fix of any of the car's trackers, not the position of the
    /// one heard last: the wired unit cut out and left powered at home keeps sending heartbeats
    /// beside its old home fix, the battery unit on the car reported from 200 km away. The
    /// newest fix without a position brings the newest valid one beside it.
    #[test]
    fn a_queue_row_shows_the_newest_fix_of_any_tracker() {
        use crate::event::{Event, EventKind, Protocol};
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let (wired, wireless) = ("868120145233604", "868120145233605");
        put(
            &mut e,
            serde_json::json!({"loan": {"id": "L", "status": "overdue", "days_past_due": 40},
                "devices": [{"id": wired, "kind": "wired"}, {"id": wireless, "kind": "wireless"}]}),
            t0,
        );
        let at = |min: i64| t0.add_millis(min * 60_000);
        e.ingest(&[live_fix(wired, at(1), 22.5, 114.0)], at(1));
        e.ingest(&[live_fix(wireless, at(60), 24.3, 114.0)], at(60));
        let beat = Event {
            device_id: DeviceId::new(wired),
            protocol: Protocol::Gt06,
            kind: EventKind::Heartbeat {
                alarms: crate::event::AlarmReport::NONE,
            },
        };
        e.ingest(&[beat], at(90));
        let row = |e: &mut Engine| {
            let page = RiskQueue::parse(None, None, Some(10), None)
                .and_then(|q| q.apply(e, at(91)))
                .unwrap();
            page.vehicles.into_iter().next().unwrap()
        };
        let v = row(&mut e);
        assert_eq!(v.last_seen, Some(at(90)));
        assert_eq!(v.position.as_ref().unwrap()["lat"], 24.3);
        assert!(v.last_valid_position.is_none());
        // A newer report without a fix: shown, with the newest valid fix beside it.
        let mut lbs = live_fix(wired, at(100), 0.0, 0.0);
        if let EventKind::Position(f) = &mut lbs.kind {
            f.position.valid = false;
        }
        e.ingest(&[lbs], at(100));
        let v = row(&mut e);
        assert_eq!(v.position.as_ref().unwrap()["valid"], false);
        assert_eq!(v.last_valid_position.as_ref().unwrap()["lat"], 24.3);
    }

    #[test]
    fn cursors_round_trip_and_bad_parameters_are_refused() {
        let k = Key {
            neg_score: -55,
            last_seen: i64::MIN,
            id: "V-1.x".into(),
        };
        assert_eq!(Key::parse(&k.cursor()), Some(k));
        // A score whose negation overflows is no cursor (a 400, not a panic).
        assert_eq!(Key::parse(&format!("{}.0.00", i64::MIN)), None);
        assert!(RiskQueue::parse(None, None, None, Some(format!("{}.0.00", i64::MIN))).is_err());
        assert!(RiskQueue::parse(Some("high,urgent"), None, None, None).is_err());
        assert!(RiskQueue::parse(None, Some("late"), None, None).is_err());
        assert!(RiskQueue::parse(None, None, None, Some("zzz".into())).is_err());
        let q = RiskQueue::parse(Some("high, medium"), Some("overdue"), Some(5), None).unwrap();
        assert_eq!(q.tiers, Some(vec![Tier::High, Tier::Medium]));
    }
}
