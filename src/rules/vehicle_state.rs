//! What the vehicle-wide rules (risk zones, separation, all-silent) remember about one vehicle:
//! one small record per vehicle, persisted in the same commit as the alerts it remembers, kept
//! apart from [`super::DeviceRuleState`] so that each layout changes on its own.

use super::separation::FixRing;
use super::zones::ZoneVisit;
use crate::event::DeviceId;
use crate::registry::Vehicle;
use serde::{Deserialize, Serialize};

/// One device's part: its zone visits and its recent valid fixes.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct DeviceMemory {
    pub id: DeviceId,
    pub visits: Vec<ZoneVisit>,
    pub recent: FixRing,
}

#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct VehicleRuleState {
    pub devices: Vec<DeviceMemory>,
    /// An `all_silent` episode is open.
    pub all_silent: bool,
    /// Device pairs whose `device_separation` episode is open.
    pub separated: Vec<(DeviceId, DeviceId)>,
}

impl VehicleRuleState {
    /// Whether another of the vehicle's devices has already told what this zone alert would: a
    /// visit is the car's (CONTRACT.md "Alerts added": once per episode), so while another
    /// tracker is in the zone an entry says nothing new, nor a dwell once another has dwelt.
    /// Only trackers that still speak count (`speaks`): one that died in the zone must not
    /// silence the car's later visits.
    pub fn zone_visit_told(
        &self,
        vehicle: &Vehicle,
        device: &DeviceId,
        draft: &super::AlertDraft,
        speaks: impl Fn(&DeviceId) -> bool,
    ) -> bool {
        let dwell = match draft.kind {
            crate::alert::AlertType::RiskZoneEnter => false,
            crate::alert::AlertType::RiskZoneDwell => true,
            _ => return false,
        };
        let Some(zone) = draft.details.get("zone_id").and_then(|z| z.as_str()) else {
            return false;
        };
        self.devices
            .iter()
            .filter(|d| d.id != *device && vehicle.device(&d.id).is_some() && speaks(&d.id))
            .any(|d| {
                d.visits
                    .iter()
                    .any(|v| v.zone_id == zone && (v.dwell_alerted || !dwell))
            })
    }

    /// Ends the visits to `zone` of devices other than `device` whose newest fix there is older
    /// than `t`: `device` saw the car outside the zone after them (its fix before the one that
    /// entered), so those visits ended unseen, and a battery unit's visit from the car's last
    /// stop there must not make its next visit, days later, look like the same one. Returns
    /// the devices whose visits changed.
    pub fn end_visits_seen_left(
        &mut self,
        device: &DeviceId,
        zone: &str,
        t: crate::time::Timestamp,
    ) -> Vec<DeviceId> {
        let mut ended = Vec::new();
        for d in self.devices.iter_mut().filter(|d| d.id != *device) {
            let before = d.visits.len();
            d.visits.retain(|v| v.zone_id != zone || v.fix_time >= t);
            if d.visits.len() != before {
                ended.push(d.id.clone());
            }
        }
        ended
    }

    /// The device's part, created empty if new.
    pub fn device_mut(&mut self, id: &DeviceId) -> &mut DeviceMemory {
        let i = match self.devices.iter().position(|d| &d.id == id) {
            Some(i) => i,
            None => {
                self.devices.push(DeviceMemory {
                    id: id.clone(),
                    visits: Vec::new(),
                    recent: FixRing::default(),
                });
                self.devices.len() - 1
            }
        };
        &mut self.devices[i]
    }

    pub fn device(&self, id: &DeviceId) -> Option<&DeviceMemory> {
        self.devices.iter().find(|d| &d.id == id)
    }

    /// Forgets devices no longer bound to the vehicle, and pairs that name one. Returns whether
    /// anything went.
    pub fn retain_bound(&mut self, v: &Vehicle) -> bool {
        let before = (self.devices.len(), self.separated.len());
        self.devices.retain(|d| v.device(&d.id).is_some());
        self.separated
            .retain(|(a, b)| v.device(a).is_some() && v.device(b).is_some());
        // `all_silent` is for two trackers or more: one left alone is the silence rule's.
        let all_silent = self.all_silent && v.devices.len() > 1;
        let changed =
            before != (self.devices.len(), self.separated.len()) || all_silent != self.all_silent;
        self.all_silent = all_silent;
        changed
    }

    /// Ends every visit and episode (the loan was closed); the recent fixes stay. Returns
    /// whether anything ended.
    pub fn end_episodes(&mut self) -> bool {
        let open = self.all_silent
            || !self.separated.is_empty()
            || self.devices.iter().any(|d| !d.visits.is_empty());
        self.all_silent = false;
        self.separated.clear();
        for d in &mut self.devices {
            d.visits.clear();
        }
        open
    }

    /// Nothing worth storing.
    pub fn is_empty(&self) -> bool {
        !self.all_silent
            && self.separated.is_empty()
            && self
                .devices
                .iter()
                .all(|d| d.visits.is_empty() && d.recent.0.is_empty())
    }

    /// Compact binary form for the store (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::encode::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, super::StateDecodeError> {
        Ok(postcard::from_bytes(b)?)
    }
}
