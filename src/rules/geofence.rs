//! Geofence exit and return.
//!
//! Placement is a three-state machine per device: `Unknown` (no usable live fix since the fence
//! was set), `Inside`, `Outside`.
//!
//! - A usable live fix more than `geofence_margin_m` outside while `Unknown` or `Inside` raises
//!   `geofence_exit` (with `distance_outside_m`) and moves to `Outside`: one alert per excursion,
//!   and a car first seen outside alerts too.
//! - A usable live fix strictly inside moves to `Inside`; from `Outside` it raises
//!   `geofence_return`.
//! - A fix outside but within the margin (or on the boundary) changes nothing: GPS jitter along
//!   the fence line must not flap.
//! - Unusable fixes (`!Position::is_usable()`: no fix, LBS, 0/0) are ignored.
//! - A live fix older than the newest fix already used is ignored (a re-sent old fix must not
//!   flip the placement back).
//! - **Buffered fixes leave the placement untouched.** They describe the past; moving to
//!   `Outside` on one would swallow the exit alert of the next live fix, and an old `Inside`
//!   would make the next live outside fix look like a new excursion. They still update the
//!   last-known position (the store's job) and count as a sign of life (silence rule).
//! - When the vehicle's fence is replaced (its tag changes) placement restarts at `Unknown`, so a
//!   car outside its new fence alerts once.

use super::{AlertDraft, DeviceRuleState, FencePlacement, RuleConfig};
use crate::alert::AlertType;
use crate::event::Fix;
use crate::registry::{DeviceBinding, Geofence, Placement};
use crate::time::Timestamp;
use serde_json::json;

/// Whether this device puts its car outside the fence at `now`: its last valid fix was outside,
/// and it still speaks (heard within its silence threshold). One dead or thrown away out there
/// no longer holds the car's excursion. With `newer_than`, only a word "outside" newer than that
/// (another tracker's last fix inside) counts.
pub fn holds_car_outside(
    cfg: &RuleConfig,
    device: &DeviceBinding,
    state: &DeviceRuleState,
    now: Timestamp,
    newer_than: Option<Timestamp>,
) -> bool {
    state.placement == FencePlacement::Outside
        && super::silence::heard_lately(cfg, device, state, now)
        && newer_than.is_none_or(|t| state.fence_fix_time.is_some_and(|f| f > t))
}

/// Resets the placement when the fence it was decided against is gone or replaced.
pub(crate) fn sync_fence(fence: Option<&Geofence>, state: &mut DeviceRuleState) {
    let tag = fence.map_or(0, Geofence::tag);
    if state.fence_tag != tag {
        state.fence_tag = tag;
        state.placement = FencePlacement::Unknown;
        state.fence_fix_time = None;
    }
}

/// Applies one live (not buffered) fix. Call [`sync_fence`] first.
pub(crate) fn apply(
    cfg: &RuleConfig,
    fence: &Geofence,
    state: &mut DeviceRuleState,
    fix: &Fix,
    out: &mut Vec<AlertDraft>,
) {
    let p = &fix.position;
    if fix.buffered || !p.is_usable() {
        return;
    }
    if state.fence_fix_time.is_some_and(|t| p.time < t) {
        return;
    }
    state.fence_fix_time = Some(p.time);
    // Once outside, only "back inside or not" matters: skip the distance search.
    let measure = state.placement != FencePlacement::Outside;
    match fence.index().locate(p.lon, p.lat, measure) {
        Placement::Inside => {
            if state.placement == FencePlacement::Outside {
                out.push(AlertDraft {
                    kind: AlertType::GeofenceReturn,
                    details: json!({}),
                });
            }
            state.placement = FencePlacement::Inside;
        }
        // One alert per excursion: a fence that measures even when asked not to (a circle is
        // cheap to measure) must not alert again while the car stays out.
        Placement::Outside(d)
            if d > cfg.geofence_margin_m && state.placement != FencePlacement::Outside =>
        {
            state.placement = FencePlacement::Outside;
            out.push(AlertDraft {
                kind: AlertType::GeofenceExit,
                details: json!({ "distance_outside_m": (d * 10.0).round() / 10.0 }),
            });
        }
        Placement::Outside(_) | Placement::OutsideUnmeasured => {}
    }
}
