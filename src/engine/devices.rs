//! `GET /v1/devices/{id}`: a device's last-known position, from the engine's own map.

use super::command::{Command, EngineError};
use super::view::DeviceView;
use super::Engine;
use crate::event::DeviceId;
use crate::time::Timestamp;

pub struct GetDevice {
    pub id: DeviceId,
}

impl GetDevice {
    /// Device ids are decimal digits (CONTRACT.md "Names").
    pub fn parse(id: &str) -> Result<GetDevice, EngineError> {
        if !DeviceId::is_valid(id) {
            return Err(EngineError::Invalid(
                "a device id is a string of decimal digits".into(),
            ));
        }
        Ok(GetDevice {
            id: DeviceId::new(id),
        })
    }
}

impl Command for GetDevice {
    type Output = DeviceView;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<DeviceView, EngineError> {
        let rec = e
            .devices
            .get(&self.id)
            .ok_or_else(|| EngineError::NotFound("device never seen".into()))?;
        Ok(DeviceView {
            device_id: rec.device_id.clone(),
            protocol: rec.protocol,
            first_seen: rec.first_seen,
            last_seen: rec.last_seen,
            vehicle_id: e.vehicle_id_of(&self.id).map(|v| v.to_string()),
            position: rec.position.as_ref().map(|p| p.to_json()),
            last_valid_position: rec.last_valid_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::command::Command;
    use crate::engine::testing::{engine_at, live_fix};
    use crate::event::EventKind;

    /// CONTRACT.md "Positions": the newest fix is the last-known position even without a fix;
    /// the newest valid one is shown beside it.
    #[test]
    fn a_newer_fix_without_a_fix_is_the_last_known_and_the_valid_one_stays_beside_it() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let id = "868120145233604";
        e.ingest(&[live_fix(id, t0, 22.5, 114.0)], t0);
        let mut lbs = live_fix(id, t0.add_millis(60_000), 0.0, 0.0);
        if let EventKind::Position(f) = &mut lbs.kind {
            f.position.valid = false;
        }
        e.ingest(&[lbs], t0.add_millis(61_000));
        let view = |e: &mut crate::engine::Engine| {
            let v = GetDevice {
                id: DeviceId::new(id),
            }
            .apply(e, t0)
            .unwrap();
            serde_json::to_value(v).unwrap()
        };
        let v = view(&mut e);
        assert_eq!(v["position"]["valid"], false);
        assert_eq!(
            v["position"]["time"],
            serde_json::json!(t0.add_millis(60_000))
        );
        assert_eq!(v["last_valid_position"]["time"], serde_json::json!(t0));
        assert_eq!(v["last_valid_position"]["lat"], 22.5);
        // A valid fix again: one position, nothing beside it.
        let t = t0.add_millis(120_000);
        e.ingest(&[live_fix(id, t, 22.6, 114.0)], t);
        let v = view(&mut e);
        assert_eq!(v["position"]["valid"], true);
        assert!(v.get("last_valid_position").is_none(), "{v}");
    }
}
