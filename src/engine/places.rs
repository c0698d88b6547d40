//! What `GET /v1/vehicles/{id}/places` needs from the engine: the vehicle's devices and the
//! current `[rules]` settings. The history itself is read off the engine thread
//! (`crate::history::places`), since a month of 10-second fixes takes tens of milliseconds.

use super::command::{Command, EngineError};
use super::Engine;
use crate::event::DeviceId;
use crate::time::Timestamp;

/// The most days a places query may span.
pub const MAX_DAYS: u32 = 366;

/// `GET /v1/vehicles/{id}/places?days=N`, resolved against the registry.
pub struct PlacesInputs {
    pub vehicle_id: String,
    pub days: u32,
}

/// A places query ready to run on the history.
#[derive(Clone)]
pub struct PlacesJob {
    pub vehicle_id: String,
    pub days: u32,
    pub devices: Vec<DeviceId>,
    pub params: crate::places::Params,
    pub timezone: String,
    pub retention: std::time::Duration,
    /// When each device was last heard from: its last stay counts up to then, not through a
    /// silence after it. A device not in it counts up to the query's `now`.
    pub last_heard: std::collections::HashMap<DeviceId, Timestamp>,
    /// When each device was bound to this vehicle: the fixes it sent before then are another
    /// car's (a reused tracker). A device not in it (bound before this was kept) counts whole.
    pub bound_since: std::collections::HashMap<DeviceId, Timestamp>,
    /// Each device's newest usable fix (its record's): when every device's is older than the
    /// window, where a car parked since before it stands, sending heartbeats only.
    pub newest_fix: std::collections::HashMap<DeviceId, crate::store::StoredPosition>,
    /// The devices whose last word with a position is that fix: no LBS report or fix without
    /// position came after it (a tracker shielded or jammed since says nothing of the spot).
    pub fix_is_last_word: std::collections::HashSet<DeviceId>,
}

impl PlacesInputs {
    pub fn parse(vehicle_id: &str, days: Option<&str>) -> Result<PlacesInputs, EngineError> {
        let days = match days {
            None => 30,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=MAX_DAYS).contains(&n) => n,
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "days: expected a number from 1 to {MAX_DAYS}, got {s:?}"
                    )))
                }
            },
        };
        Ok(PlacesInputs {
            vehicle_id: vehicle_id.to_string(),
            days,
        })
    }
}

impl Command for PlacesInputs {
    type Output = PlacesJob;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<PlacesJob, EngineError> {
        let v = e
            .vehicles
            .get(&self.vehicle_id)
            .ok_or_else(|| EngineError::NotFound(format!("no vehicle {:?}", self.vehicle_id)))?;
        let rules = &e.cfg.rules;
        let params =
            crate::places::Params::from_rules(rules.stay_radius_m, rules.stay_min, &rules.timezone)
                .map_err(|err| EngineError::Invalid(err.to_string()))?;
        Ok(PlacesJob {
            vehicle_id: self.vehicle_id,
            days: self.days,
            devices: v.devices.iter().map(|d| d.id.clone()).collect(),
            params,
            timezone: rules.timezone.clone(),
            retention: e.history_retention(),
            last_heard: v
                .devices
                .iter()
                .filter_map(|d| Some((d.id.clone(), e.devices.get(&d.id)?.last_seen)))
                .collect(),
            bound_since: bound_since(&e.bound_since, v.devices.iter().map(|d| &d.id)),
            newest_fix: v
                .devices
                .iter()
                .filter_map(|d| Some((d.id.clone(), e.devices.get(&d.id)?.last_valid()?)))
                .collect(),
            fix_is_last_word: v
                .devices
                .iter()
                .filter(|d| {
                    e.devices
                        .get(&d.id)
                        .and_then(|r| r.position)
                        .is_some_and(|p| p.position().is_usable())
                })
                .map(|d| d.id.clone())
                .collect(),
        })
    }
}

/// When each of `devices` was bound to its vehicle, for those with a known time.
pub(super) fn bound_since<'d>(
    bound: &crate::fast_hash::FastMap<DeviceId, Timestamp>,
    devices: impl IntoIterator<Item = &'d DeviceId>,
) -> std::collections::HashMap<DeviceId, Timestamp> {
    devices
        .into_iter()
        .filter_map(|d| Some((d.clone(), *bound.get(d)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{live_fix, put_vehicle};
    use crate::engine::vehicles::DeleteVehicle;
    use crate::engine::EngineConfig;
    use crate::store::Store;
    use std::sync::Arc;

    /// A tracker taken off one car and put on another: the second car's places start at its
    /// binding, or a team would be sent to the first borrower's home. Kept across a restart.
    #[test]
    fn a_reused_tracker_brings_no_places_of_its_earlier_car() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let at = |min: i64| t0.add_millis(min * 60_000);
        let store = Store::temporary().unwrap();
        let open = |store: Store| {
            let outbox = store.open_outbox(&[], Arc::new(move || t0)).unwrap();
            let cfg = EngineConfig {
                history_retention: Some(std::time::Duration::from_secs(180 * 86_400)),
                ..EngineConfig::from_config(&Default::default(), Vec::new())
            };
            Engine::open(store, outbox, cfg, t0).unwrap()
        };
        let mut e = open(store.clone());
        let body = serde_json::json!({"loan": {"id": "L", "status": "current"},
            "devices": [{"id": "123456789012345", "kind": "wired"}]});
        put_vehicle(&mut e, "V-1", body.clone(), t0);
        let (first_home, second_home) = ((22.5, 114.0), (22.7, 114.2));
        let stay = |e: &mut Engine, from: i64, (lat, lon): (f64, f64)| {
            for m in (from..from + 120).step_by(10) {
                e.ingest(&[live_fix("123456789012345", at(m), lat, lon)], at(m));
            }
            e.flush().unwrap();
        };
        stay(&mut e, 0, first_home);
        DeleteVehicle { id: "V-1".into() }
            .apply(&mut e, at(200))
            .unwrap();
        put_vehicle(&mut e, "V-2", body, at(200));
        stay(&mut e, 300, second_home);
        let places = |e: &mut Engine| {
            let job = PlacesInputs {
                vehicle_id: "V-2".into(),
                days: 30,
            }
            .apply(e, at(500))
            .unwrap();
            let r = crate::history::places::run(e.store.history(), &job, at(500)).unwrap();
            r.places
                .places
                .iter()
                .map(|p| ((p.lat * 10.0).round() / 10.0, (p.lon * 10.0).round() / 10.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(places(&mut e), [second_home]);
        drop(e);
        let mut e = open(store);
        assert_eq!(places(&mut e), [second_home], "after a restart");
        // V-2 deleted and put back with its tracker: the same car, its places kept.
        DeleteVehicle { id: "V-2".into() }
            .apply(&mut e, at(450))
            .unwrap();
        put_vehicle(
            &mut e,
            "V-2",
            serde_json::json!({"loan": {"id": "L", "status": "current"},
                "devices": [{"id": "123456789012345", "kind": "wired"}]}),
            at(460),
        );
        assert_eq!(places(&mut e), [second_home], "put back");
    }
}
