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
        })
    }
}
