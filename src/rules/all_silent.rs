//! `all_silent`: every device of a vehicle with two or more devices silent past its own
//! `silence_after` (多设备离线; CONTRACT.md "Alerts added"). One device dark may be coverage; all
//! of them dark together is removal or a jammer.
//!
//! Raised for any loan that is not closed (unlike `silent_overdue`, which waits for overdue),
//! once per episode; the episode ends when any of the devices speaks. The vehicle's deadline is
//! the latest of its devices' silence deadlines, never before the startup grace ends.

use super::silence::{silence_after, silence_base};
use super::{AlertDraft, DeviceRuleState, RuleConfig, VehicleContext};
use crate::alert::AlertType;
use crate::event::{DeviceId, Timestamp};
use crate::registry::{LoanStatus, Vehicle};
use serde_json::json;

/// When the vehicle's devices will all have been silent past their thresholds, if that can
/// raise an alert (`alerted`: an episode is already open).
pub fn deadline<'a>(
    cfg: &RuleConfig,
    grace_end: Timestamp,
    vehicle: &Vehicle,
    state_of: impl Fn(&DeviceId) -> Option<&'a DeviceRuleState>,
    alerted: bool,
) -> Option<Timestamp> {
    if alerted || vehicle.loan.status == LoanStatus::Closed || vehicle.devices.len() < 2 {
        return None;
    }
    let mut latest: Option<Timestamp> = None;
    for i in 0..vehicle.devices.len() {
        let ctx = VehicleContext::at(vehicle, i)?;
        let base = silence_base(state_of(&ctx.device.id)?)?;
        let due = base.add(silence_after(cfg, &ctx));
        latest = Some(latest.map_or(due, |l| l.max(due)));
    }
    Some(latest?.max(grace_end))
}

/// The deadline fell due: the alert if it still holds (the deadline is recomputed, so a stale
/// queue entry is harmless).
pub fn on_due<'a>(
    cfg: &RuleConfig,
    grace_end: Timestamp,
    vehicle: &Vehicle,
    state_of: impl Fn(&DeviceId) -> Option<&'a DeviceRuleState> + Copy,
    now: Timestamp,
) -> Option<AlertDraft> {
    let due = deadline(cfg, grace_end, vehicle, state_of, false)?;
    if due > now {
        return None;
    }
    let devices: Vec<serde_json::Value> = vehicle
        .devices
        .iter()
        .map(|d| {
            let st = state_of(&d.id);
            json!({
                "id": d.id.as_str(),
                "kind": d.kind,
                "last_seen": st.and_then(|s| s.last_seen),
                "silent_s": st.and_then(silence_base).map(|b| now.since(b).max(0) / 1000),
            })
        })
        .collect();
    Some(AlertDraft {
        kind: AlertType::AllSilent,
        details: json!({ "devices": devices }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const T0: i64 = 1_795_305_600_000;
    const H: i64 = 3_600_000;

    fn vehicle(status: &str, n: usize) -> Vehicle {
        let devices: Vec<serde_json::Value> = [
            json!({"id": "111", "kind": "wired"}),
            json!({"id": "222", "kind": "wireless"}),
        ][..n]
            .to_vec();
        let b = json!({"loan": {"id": "L", "status": status}, "devices": devices});
        Vehicle::from_json("V", &serde_json::to_vec(&b).unwrap()).unwrap()
    }

    fn seen(t: i64) -> DeviceRuleState {
        DeviceRuleState {
            last_seen: Some(Timestamp(t)),
            registered_at: Some(Timestamp(T0)),
            ..Default::default()
        }
    }

    #[test]
    fn the_last_device_to_go_quiet_sets_the_deadline() {
        let cfg = RuleConfig::default();
        let states: HashMap<DeviceId, DeviceRuleState> = [
            (DeviceId::new("111"), seen(T0 + H)),
            (DeviceId::new("222"), seen(T0)),
        ]
        .into();
        let of = |id: &DeviceId| states.get(id);
        let v = vehicle("current", 2);
        let g = Timestamp(T0);
        // Wired: T0 + 1h + 6h; wireless: T0 + 48h.
        assert_eq!(
            deadline(&cfg, g, &v, of, false),
            Some(Timestamp(T0 + 48 * H))
        );
        assert_eq!(on_due(&cfg, g, &v, of, Timestamp(T0 + 47 * H)), None);
        let a = on_due(&cfg, g, &v, of, Timestamp(T0 + 48 * H)).unwrap();
        assert_eq!(a.kind, AlertType::AllSilent);
        assert_eq!(a.details["devices"][0]["id"], "111");
        assert_eq!(a.details["devices"][0]["silent_s"], json!(47 * 3600));
        assert!(a.details["devices"][1]["last_seen"].is_string());
        assert_eq!(deadline(&cfg, g, &v, of, true), None);
        assert_eq!(deadline(&cfg, g, &vehicle("closed", 2), of, false), None);
        assert_eq!(deadline(&cfg, g, &vehicle("overdue", 1), of, false), None);
        // Never before the startup grace ends.
        let late = Timestamp(T0 + 100 * H);
        assert_eq!(deadline(&cfg, late, &v, of, false), Some(late));
    }
}
