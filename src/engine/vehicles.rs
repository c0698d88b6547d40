//! Registry commands for vehicles: put, get, delete, list.

use super::command::{Command, EngineError};
use super::view::{Deleted, VehicleView};
use super::Engine;
use crate::event::DeviceId;
use crate::registry::Vehicle;
use crate::rules::VehicleContext;
use crate::time::Timestamp;
use std::collections::HashSet;
use std::sync::Arc;

/// `PUT /v1/vehicles/{id}`: create or replace a vehicle. The body is parsed and its geofence
/// compiled by [`PutVehicle::from_json`] before the command reaches the engine thread, so a large
/// fence never stalls ingestion.
pub struct PutVehicle {
    pub vehicle: Vehicle,
    /// The body as it will be stored, serialised before the engine thread sees it.
    stored: String,
}

/// What a put did.
pub struct PutOutcome {
    pub created: bool,
    pub view: VehicleView,
}

impl PutVehicle {
    pub fn from_json(id: &str, body: &[u8]) -> Result<PutVehicle, EngineError> {
        let vehicle =
            Vehicle::from_json(id, body).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let stored = vehicle.stored_json();
        Ok(PutVehicle { vehicle, stored })
    }
}

impl Command for PutVehicle {
    type Output = PutOutcome;

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<PutOutcome, EngineError> {
        let PutVehicle { vehicle, stored } = self;
        let id = vehicle.id.clone();
        // A device watches one car: binding it to a second vehicle is a conflict.
        for d in &vehicle.devices {
            if let Some(other) = e.vehicle_id_of(&d.id) {
                if *other != *id {
                    return Err(EngineError::Conflict(format!(
                        "device {} is bound to vehicle {other:?}; remove it there first",
                        d.id
                    )));
                }
            }
        }
        e.writes.put_vehicle(&id, stored.as_bytes());
        let loan = vehicle.loan.clone();
        let kept: HashSet<DeviceId> = vehicle.devices.iter().map(|d| d.id.clone()).collect();
        let before = e.risk_of(&id, now);
        let old = e.vehicles.insert(id.clone(), vehicle);
        let created = old.is_none();
        // Devices dropped from the vehicle stop being watched.
        if let Some(old) = old {
            for d in old.devices.iter().filter(|d| !kept.contains(&d.id)) {
                e.unregister(&d.id);
            }
        }
        // A device new to this vehicle: its places count from now (a reused tracker's history
        // is the car it was on before), unless it was on this same vehicle last (deleted and
        // put back).
        for d in &kept {
            if e.vehicle_id_of(d).is_none() {
                let since = match e.store.bound(&e.writes, d)? {
                    Some((last, since)) if last == id => since,
                    _ => {
                        e.writes.put_bound(d, Some((&id, now)));
                        now
                    }
                };
                e.bound_since.insert(d.clone(), since);
            }
        }
        // The other vehicles of its loan follow this one's.
        super::loans::align(e, &loan, now)?;
        if let Ok(mut reg) = e.registered.write() {
            let shared: Arc<str> = Arc::from(id.as_str());
            for d in &kept {
                reg.insert(d.clone(), shared.clone());
            }
        }
        for d in &kept {
            e.admissions.now_registered(d);
        }
        e.risk_in_one_step(&id, before, None, now, |e| {
            e.risk_on_loan(&id, created, now);
            e.for_each_device(&id, now, |rules, ctx, st, now| {
                rules.on_registered(ctx, st, now)
            });
            e.vehicle_rules_sync(&id);
            e.risk_reconcile(&id, now);
        });
        let view = e.vehicle_view(&id, now).ok_or_else(|| not_found(&id))?;
        Ok(PutOutcome { created, view })
    }
}

/// `GET /v1/vehicles/{id}`.
pub struct GetVehicle {
    pub id: String,
}

impl Command for GetVehicle {
    type Output = VehicleView;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<VehicleView, EngineError> {
        e.vehicle_view(&self.id, now)
            .ok_or_else(|| not_found(&self.id))
    }
}

/// `DELETE /v1/vehicles/{id}`: stop watching it.
pub struct DeleteVehicle {
    pub id: String,
}

impl Command for DeleteVehicle {
    type Output = Deleted;

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<Deleted, EngineError> {
        if !e.vehicles.contains_key(&self.id) {
            return Err(not_found(&self.id));
        }
        e.writes.remove_vehicle(&self.id);
        if let Some(v) = e.vehicles.remove(&self.id) {
            for d in &v.devices {
                e.unregister(&d.id);
            }
        }
        e.risk.remove(&self.id);
        e.risk_changed(&self.id, now);
        e.vehicle_rules_sync(&self.id);
        Ok(Deleted { deleted: self.id })
    }
}

/// The largest page of the vehicle list (`risk::RiskQueue`).
pub const MAX_PAGE: usize = 1000;

fn not_found(id: &str) -> EngineError {
    EngineError::NotFound(format!("no vehicle {id:?}"))
}

/// Used by the loan command too: the context of each device of a vehicle, for a rule call.
pub(super) fn device_ids(e: &Engine, vehicle_id: &str) -> Vec<DeviceId> {
    e.vehicles
        .get(vehicle_id)
        .map(|v| v.devices.iter().map(|d| d.id.clone()).collect())
        .unwrap_or_default()
}

impl Engine {
    /// Runs a rule entry point for every device of a vehicle and records the outcomes.
    pub(super) fn for_each_device(
        &mut self,
        vehicle_id: &str,
        now: Timestamp,
        f: impl Fn(
            &crate::rules::Rules,
            VehicleContext<'_>,
            &mut crate::rules::DeviceRuleState,
            Timestamp,
        ) -> crate::rules::Outcome,
    ) {
        for d in device_ids(self, vehicle_id) {
            let Some(vehicle) = self.vehicles.get(vehicle_id) else {
                return;
            };
            let Some(ctx) = VehicleContext::new(vehicle, &d) else {
                continue;
            };
            let st = self.states.entry(d.clone()).or_default();
            let out = f(&self.rules, ctx, st, now);
            self.apply_outcome(vehicle_id, &d, out, now);
        }
    }
}
