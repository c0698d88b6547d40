//! Risk zone visits: `risk_zone_enter` and `risk_zone_dwell` (CONTRACT.md "Alerts added").
//!
//! - A usable live fix strictly inside a zone the device is not visiting starts a visit and
//!   raises `risk_zone_enter`.
//! - A visit ends when a usable live fix is more than `geofence_margin_m` outside its zone (or the
//!   zone was deleted); a fix outside within the margin keeps it (GPS jitter at a yard's gate
//!   must not make a new visit). Leaving and coming back is a new visit, with its own alerts.
//! - `risk_zone_dwell` fires once per visit when it has lasted the zone's `dwell_after` (else
//!   `rules.risk_zone_dwell_after`), on the clock, whether or not the device keeps reporting: a
//!   car parked at a pawn shop with its trackers pulled is the case that matters. The caller
//!   keeps [`deadline`] in a deadline queue and calls [`on_due`] when it falls due.
//! - Buffered fixes and fixes older than the newest one a visit has used are ignored, as for the
//!   geofence.

use super::{AlertDraft, RuleConfig};
use crate::alert::AlertType;
use crate::event::{Fix, Timestamp};
use crate::registry::{Placement, Zone, ZoneSet};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// One visit in progress.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ZoneVisit {
    pub zone_id: String,
    /// When the visit started (the clock at the entering fix), moved with each step of the host
    /// clock since, so that the dwell is the time the daemon watched.
    pub since: Timestamp,
    /// Fix time of the newest fix this visit has used.
    pub fix_time: Timestamp,
    pub dwell_alerted: bool,
}

fn dwell_after(cfg: &RuleConfig, z: &Zone) -> std::time::Duration {
    z.dwell_after.unwrap_or(cfg.risk_zone_dwell_after)
}

fn details(z: &Zone) -> serde_json::Value {
    json!({"zone_id": &*z.id, "zone_name": z.name, "zone_kind": &*z.kind})
}

/// Applies one fix to a device's visits. Returns whether a visit began or ended; the newest fix
/// time each visit keeps moves without that (progress, which the engine writes later and takes
/// back from the device's record after a crash: `VehicleRules::catch_up`).
pub fn on_fix(
    cfg: &RuleConfig,
    zones: &ZoneSet,
    visits: &mut Vec<ZoneVisit>,
    fix: &Fix,
    now: Timestamp,
    out: &mut Vec<AlertDraft>,
) -> bool {
    let p = &fix.position;
    if fix.buffered || !p.is_usable() || zones.is_empty() && visits.is_empty() {
        return false;
    }
    if visits.iter().any(|v| p.time < v.fix_time) {
        return false;
    }
    let before = visits.len();
    visits.retain(|v| {
        zones
            .get(&v.zone_id)
            .is_some_and(|z| match z.geometry.index().locate(p.lon, p.lat, true) {
                Placement::Inside | Placement::OutsideUnmeasured => true,
                Placement::Outside(d) => d <= cfg.geofence_margin_m,
            })
    });
    let mut changed = visits.len() != before;
    for v in visits.iter_mut() {
        v.fix_time = p.time;
    }
    zones.containing(p.lon, p.lat, |z| {
        if !visits.iter().any(|v| *v.zone_id == *z.id) {
            visits.push(ZoneVisit {
                zone_id: z.id.to_string(),
                since: now,
                fix_time: p.time,
                dwell_alerted: false,
            });
            out.push(AlertDraft {
                kind: AlertType::RiskZoneEnter,
                details: details(z),
            });
            changed = true;
        }
    });
    changed
}

/// When the earliest dwell alert of these visits is due. A visit that began before the daemon
/// started (or before a step of the clock forward) is not due before `grace_end`, the end of
/// `startup_grace` after it: one that reached its dwell while the daemon was down waits for the
/// trackers to be heard, as silence does, lest a start raise a dwell for every car that left a
/// zone in the meantime. A visit that began since is watched whole and keeps its time.
pub fn deadline(
    cfg: &RuleConfig,
    zones: &ZoneSet,
    visits: &[ZoneVisit],
    grace_end: Timestamp,
) -> Option<Timestamp> {
    let watched_from = grace_end.sub(cfg.startup_grace);
    visits
        .iter()
        .filter(|v| !v.dwell_alerted)
        .filter_map(|v| {
            let due = v.since.add(dwell_after(cfg, zones.get(&v.zone_id)?));
            Some(if v.since < watched_from {
                due.max(grace_end)
            } else {
                due
            })
        })
        .min()
}

/// Raises `risk_zone_dwell` for every visit whose dwell time has passed. Returns whether the
/// visits changed.
pub fn on_due(
    cfg: &RuleConfig,
    zones: &ZoneSet,
    visits: &mut [ZoneVisit],
    now: Timestamp,
    out: &mut Vec<AlertDraft>,
) -> bool {
    let mut changed = false;
    for v in visits.iter_mut().filter(|v| !v.dwell_alerted) {
        let Some(z) = zones.get(&v.zone_id) else {
            continue;
        };
        if v.since.add(dwell_after(cfg, z)) <= now {
            v.dwell_alerted = true;
            changed = true;
            let mut d = details(z);
            d["dwell_s"] = json!(now.since(v.since).max(0) / 1000);
            out.push(AlertDraft {
                kind: AlertType::RiskZoneDwell,
                details: d,
            });
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Position;
    use crate::registry::Zone;
    use serde_json::json;

    const T0: i64 = 1_795_305_600_000;
    const M: i64 = 60_000;

    fn zones() -> ZoneSet {
        let a = json!({"name": "东门", "kind": "pawnshop", "geometry": {"type": "Circle", "center": [114.0, 22.6], "radius_m": 200}});
        let b = json!({"kind": "used_car_market", "dwell_after": "30m", "geometry": {"type": "Polygon", "coordinates": [[[114.1, 22.6], [114.11, 22.6], [114.11, 22.61], [114.1, 22.61], [114.1, 22.6]]]}});
        ZoneSet::from_zones([
            Zone::from_json("Z-A", &serde_json::to_vec(&a).unwrap()).unwrap(),
            Zone::from_json("Z-B", &serde_json::to_vec(&b).unwrap()).unwrap(),
        ])
    }

    fn fix(lon: f64, lat: f64, t: i64) -> Fix {
        Fix::live(Position {
            time: Timestamp(t),
            lat,
            lon,
            valid: true,
            ..Default::default()
        })
    }

    fn kinds(out: &[AlertDraft]) -> Vec<AlertType> {
        out.iter().map(|a| a.kind).collect()
    }

    /// A visit that began before the start is not due within the start's grace; one that began
    /// since keeps its own time, however short its dwell.
    #[test]
    fn only_visits_from_before_the_start_wait_for_the_grace() {
        let (cfg, z) = (RuleConfig::default(), zones());
        let start = T0;
        let grace_end = Timestamp(start + cfg.startup_grace.as_millis() as i64);
        let visit = |since: i64| ZoneVisit {
            zone_id: "Z-B".into(),
            since: Timestamp(since),
            fix_time: Timestamp(since),
            dwell_alerted: false,
        };
        // Z-B's dwell is 30 minutes.
        let before = [visit(start - 40 * M)];
        assert_eq!(deadline(&cfg, &z, &before, grace_end), Some(grace_end));
        let since = [visit(start - 25 * M)];
        assert_eq!(deadline(&cfg, &z, &since, grace_end), Some(grace_end));
        let after = [visit(start + M)];
        assert_eq!(
            deadline(&cfg, &z, &after, grace_end),
            Some(Timestamp(start + 31 * M))
        );
    }

    #[test]
    fn enter_dwell_once_leave_and_reenter() {
        let (cfg, z) = (RuleConfig::default(), zones());
        let mut v = vec![];
        let mut out = vec![];
        let mut now = T0;
        let send = |lon, lat, now: i64, v: &mut Vec<ZoneVisit>, out: &mut Vec<AlertDraft>| {
            on_fix(&cfg, &z, v, &fix(lon, lat, now), Timestamp(now), out)
        };
        assert!(!send(114.05, 22.6, now, &mut v, &mut out));
        assert!(send(114.0, 22.6, now + M, &mut v, &mut out));
        assert_eq!(kinds(&out), [AlertType::RiskZoneEnter]);
        assert_eq!(out[0].details["zone_name"], "东门");
        assert_eq!(out[0].details["zone_kind"], "pawnshop");
        now += M;
        // Still inside, then within the margin outside: the same visit, whose fix time moves
        // (progress, not reported).
        assert!(!send(114.0005, 22.6, now + M, &mut v, &mut out));
        assert_eq!(v[0].fix_time, Timestamp(now + M));
        send(
            114.0,
            22.6 + 230.0 / 111_195.0,
            now + 2 * M,
            &mut v,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let due = deadline(&cfg, &z, &v, Timestamp(0)).unwrap();
        assert_eq!(due, Timestamp(now + 2 * 3600 * 1000));
        assert!(!on_due(
            &cfg,
            &z,
            &mut v,
            Timestamp(due.millis() - 1),
            &mut out
        ));
        assert!(on_due(&cfg, &z, &mut v, due, &mut out));
        assert_eq!(kinds(&out)[1], AlertType::RiskZoneDwell);
        assert_eq!(out[1].details["dwell_s"], json!(7200));
        assert_eq!(deadline(&cfg, &z, &v, Timestamp(0)), None, "once per visit");
        // An invalid fix far away, and an older fix far away: nothing.
        let mut lbs = fix(115.0, 23.0, now + 3 * M);
        lbs.position.valid = false;
        on_fix(&cfg, &z, &mut v, &lbs, Timestamp(now), &mut out);
        on_fix(
            &cfg,
            &z,
            &mut v,
            &fix(115.0, 23.0, now),
            Timestamp(now),
            &mut out,
        );
        assert_eq!(v.len(), 1);
        // Out by more than the margin: the visit ends; back in: a new visit.
        send(114.0, 22.61, now + 4 * M, &mut v, &mut out);
        assert!(v.is_empty());
        send(114.0, 22.6, now + 5 * M, &mut v, &mut out);
        assert_eq!(kinds(&out)[2..], [AlertType::RiskZoneEnter]);
        // The zone's own dwell_after.
        let mut w = vec![];
        let mut o2 = vec![];
        on_fix(
            &cfg,
            &z,
            &mut w,
            &fix(114.105, 22.605, T0),
            Timestamp(T0),
            &mut o2,
        );
        assert_eq!(
            deadline(&cfg, &z, &w, Timestamp(0)),
            Some(Timestamp(T0 + 30 * M))
        );
        assert_eq!(o2[0].details["zone_id"], "Z-B");
    }
}
