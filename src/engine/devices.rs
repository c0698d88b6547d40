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
        })
    }
}
