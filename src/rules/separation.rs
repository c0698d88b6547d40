//! `device_separation`: two devices of one vehicle far apart (子母分离; CONTRACT.md "Alerts added").
//!
//! Each device keeps a short ring of its recent valid fixes ([`FixRing`]). A new valid fix of
//! device A is compared with device B's fix nearest to it in time, at most 2 h apart, as the
//! contract says; so a wireless unit's once-a-day fix meets the wired unit's fix of its moment.
//! One case more: when B is a wireless unit (it sleeps between rare fixes by design) and A has a
//! fix of its own nearer in time to B's, B's fix already met A's fix of its moment, and A's new
//! one is not held against it: a wired fix an hour later, the car driven off, is no separation
//! from the wireless unit's morning fix at home. A wired B gets no such allowance: a wired unit
//! that stops reporting while the other moves off is the unit cut and left behind (domain.md,
//! signal 12, "one moves while the other does not").
//! More than `separation_m` apart opens an episode for the pair (one alert); back within it ends
//! the episode.

use super::{AlertDraft, RuleConfig};
use crate::alert::AlertType;
use crate::event::{DeviceId, Fix};
use crate::registry::DeviceKind;
use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Fixes further apart in time are never compared.
pub const MAX_GAP_S: i64 = 2 * 3600;
/// Fixes a ring keeps: thinned evenly over the last two hours when a device reports often.
pub const RING: usize = 16;

/// A valid fix as the ring keeps it: seconds, micro-degrees (a decimetre; 12 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RingFix {
    pub t: i64,
    pub lat: i32,
    pub lon: i32,
}

impl RingFix {
    pub fn new(t_ms: i64, lat: f64, lon: f64) -> Self {
        RingFix {
            t: t_ms.div_euclid(1000),
            lat: (lat * 1e6).round() as i32,
            lon: (lon * 1e6).round() as i32,
        }
    }

    fn point(&self) -> Point<f64> {
        Point::new(f64::from(self.lon) / 1e6, f64::from(self.lat) / 1e6)
    }

    pub fn distance_m(&self, other: &RingFix) -> f64 {
        Haversine.distance(self.point(), other.point())
    }
}

/// Recent valid fixes of one device, in fix-time order.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct FixRing(pub Vec<RingFix>);

impl FixRing {
    /// Adds a fix in time order (a buffered one may be older). Fixes more than 2 h older than
    /// the newest go; past [`RING`] fixes, the one whose removal leaves the smallest gap goes
    /// (never the newest), so the ring stays spread over the window.
    pub fn push(&mut self, f: RingFix) {
        let v = &mut self.0;
        match v.binary_search_by_key(&f.t, |x| x.t) {
            Ok(i) => v[i] = f,
            Err(i) => v.insert(i, f),
        }
        let newest = v.last().map_or(f.t, |x| x.t);
        v.retain(|x| newest - x.t <= MAX_GAP_S);
        while v.len() > RING {
            let i = (1..v.len() - 1)
                .min_by_key(|&i| v[i + 1].t - v[i - 1].t)
                .unwrap_or(0);
            v.remove(i);
        }
    }

    /// The fix nearest to `t` in time, at most [`MAX_GAP_S`] away.
    pub fn nearest(&self, t: i64) -> Option<RingFix> {
        let v = &self.0;
        let i = v.partition_point(|x| x.t < t);
        let cands = [i.checked_sub(1).and_then(|j| v.get(j)), v.get(i)];
        cands
            .into_iter()
            .flatten()
            .filter(|x| (x.t - t).abs() <= MAX_GAP_S)
            .min_by_key(|x| (x.t - t).abs())
            .copied()
    }
}

/// A pair's key: the two ids in order.
pub fn pair(a: &DeviceId, b: &DeviceId) -> (DeviceId, DeviceId) {
    if a.as_str() <= b.as_str() {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

/// The new fix of `device` (already pushed into `mine`) against each other device's ring.
/// `separated` holds the pairs whose episode is open. Returns whether `separated` changed.
pub fn compare(
    cfg: &RuleConfig,
    device: &DeviceId,
    new: RingFix,
    mine: &FixRing,
    others: &[(&DeviceId, &FixRing, DeviceKind)],
    separated: &mut Vec<(DeviceId, DeviceId)>,
    out: &mut Vec<AlertDraft>,
) -> bool {
    let mut changed = false;
    for (other, ring, kind) in others {
        let Some(theirs) = ring.nearest(new.t) else {
            continue;
        };
        // A wireless unit's fix that one of ours strictly closer in time already met.
        let gap = (new.t - theirs.t).abs();
        if *kind == DeviceKind::Wireless
            && mine
                .nearest(theirs.t)
                .is_some_and(|m| (m.t - theirs.t).abs() < gap)
        {
            continue;
        }
        let d = new.distance_m(&theirs);
        let key = pair(device, other);
        let open = separated.iter().position(|p| *p == key);
        match open {
            None if d > cfg.separation_m => {
                separated.push(key);
                changed = true;
                out.push(AlertDraft {
                    kind: AlertType::DeviceSeparation,
                    details: json!({
                        "distance_m": (d * 10.0).round() / 10.0,
                        "device_ids": [device.as_str(), other.as_str()],
                        "time_gap_s": (new.t - theirs.t).abs(),
                    }),
                });
            }
            Some(i) if d <= cfg.separation_m => {
                separated.remove(i);
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

/// A valid, usable fix as a ring entry.
pub fn ring_fix(fix: &Fix) -> Option<RingFix> {
    let p = &fix.position;
    p.is_usable()
        .then(|| RingFix::new(p.time.millis(), p.lat, p.lon))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_305_600;

    fn at(t: i64, lat: f64) -> RingFix {
        RingFix {
            t,
            lat: (lat * 1e6) as i32,
            lon: 114_000_000,
        }
    }

    #[test]
    fn ring_keeps_two_hours_spread_and_the_newest() {
        let mut r = FixRing::default();
        for k in 0..1000 {
            r.push(at(T + k * 10, 22.6));
        }
        assert_eq!(r.0.len(), RING);
        assert_eq!(r.0.last().unwrap().t, T + 9990);
        assert!(r.0[0].t >= T + 9990 - MAX_GAP_S);
        let span = r.0.last().unwrap().t - r.0[0].t;
        assert!(span > MAX_GAP_S - 600, "{span}");
        // Nearest in time, both sides, and nothing beyond 2 h.
        let mut r = FixRing::default();
        r.push(at(T, 1.0));
        r.push(at(T + 100, 2.0));
        assert_eq!(r.nearest(T + 40).unwrap().t, T);
        assert_eq!(r.nearest(T + 60).unwrap().t, T + 100);
        assert_eq!(r.nearest(T + 100 + MAX_GAP_S + 1), None);
        // A buffered older fix goes in order.
        r.push(at(T + 50, 3.0));
        assert_eq!(
            r.0.iter().map(|x| x.t).collect::<Vec<_>>(),
            [T, T + 50, T + 100]
        );
    }

    #[test]
    fn sparse_fix_meets_the_fix_of_its_moment_and_episodes_end() {
        let cfg = RuleConfig::default();
        let (wired, wireless) = (DeviceId::new("1"), DeviceId::new("2"));
        let mut w = FixRing::default();
        let mut s = FixRing::default();
        let mut sep = vec![];
        let mut out = vec![];
        // The car sits at home (22.6) for an hour, the wired unit reporting every minute.
        for k in 0..60 {
            w.push(at(T + k * 60, 22.6));
        }
        // The wireless unit's fix at T + 30 min, 5 km north (planted elsewhere): compared with the
        // wired fix of that minute, not the newest.
        let f = at(T + 1800, 22.645);
        s.push(f);
        assert!(compare(
            &cfg,
            &wireless,
            f,
            &s,
            &[(&wired, &w, DeviceKind::Wired)],
            &mut sep,
            &mut out
        ));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].details["device_ids"], json!(["2", "1"]));
        assert!((out[0].details["distance_m"].as_f64().unwrap() - 5004.0).abs() < 10.0);
        assert!(out[0].details["time_gap_s"].as_i64().unwrap() <= 240);
        // A new wired fix an hour later is not compared with the old wireless fix.
        let g = at(T + 5400, 22.7);
        w.push(g);
        assert!(!compare(
            &cfg,
            &wired,
            g,
            &w,
            &[(&wireless, &s, DeviceKind::Wireless)],
            &mut sep,
            &mut out
        ));
        // The wireless unit reports near the car again: the episode ends, no alert.
        let h = at(T + 5460, 22.701);
        s.push(h);
        assert!(compare(
            &cfg,
            &wireless,
            h,
            &s,
            &[(&wired, &w, DeviceKind::Wired)],
            &mut sep,
            &mut out
        ));
        assert!(sep.is_empty());
        assert_eq!(out.len(), 1);
    }

    /// The wired unit cut and left behind: its last fix at home, then nothing, while the
    /// wireless unit, which last reported beside it, moves off with the car. Its new fix is
    /// compared with the wired unit's nearest in time, a wired unit's silence being no excuse;
    /// and the episode ends when it is back within reach of that fix.
    #[test]
    fn a_wired_unit_left_behind_is_separated_from_the_wireless_one_moving_off() {
        let cfg = RuleConfig::default();
        let (wired, wireless) = (DeviceId::new("1"), DeviceId::new("2"));
        let mut w = FixRing::default();
        let mut s = FixRing::default();
        let mut sep = vec![];
        let mut out = vec![];
        w.push(at(T - 300, 22.40));
        s.push(at(T - 240, 22.40));
        let moved = at(T, 22.45);
        s.push(moved);
        assert!(compare(
            &cfg,
            &wireless,
            moved,
            &s,
            &[(&wired, &w, DeviceKind::Wired)],
            &mut sep,
            &mut out
        ));
        assert_eq!(out.len(), 1, "5.5 km from where the wired unit stayed");
        let back = at(T + 2, 22.40);
        s.push(back);
        assert!(compare(
            &cfg,
            &wireless,
            back,
            &s,
            &[(&wired, &w, DeviceKind::Wired)],
            &mut sep,
            &mut out
        ));
        assert!(sep.is_empty(), "back within reach: the episode ends");
    }
}
