//! Departures that another tracker of the car saw.
//!
//! A wireless unit that wakes once a day in the garage (domain.md section 3) sends one fix a day,
//! all at home. By the stay rule (CONTRACT.md "Places": a gap belongs to the stay when the fixes
//! on both sides are at the spot) that is one stay of the whole month, and
//! [`super::merge_stays`] would fold every night of the wired unit into it: home as one visit of
//! a month, its kind "day". The wired unit saw the car leave every morning; its stays say so.
//!
//! So a device's gap between two fixes at its spot is cut (the stay ends at the first, and the
//! second starts a new spot) when another device of the vehicle was at that spot at both fixes,
//! in two different stays of its own with a trip between them (a stay elsewhere, or `stay_min`
//! away): it left the spot and came back in between, and the car with it. A shorter break is
//! as likely a few GPS jumps that split that device's stay, and cuts nothing. A tracker planted elsewhere (domain.md #12, one tied to an e-bike) is not at the
//! car's spot at both fixes and cuts nothing, so the stay of the car it left stays whole.

use super::stay::{Pt, Stay, StayTracker};
use super::Fix;
use crate::time::Timestamp;
use geo::{Distance, Haversine, Point};

/// Each device's own stays, as evidence for the others'.
pub struct Departures<'a> {
    /// Per device, oldest first and not overlapping (as a [`StayTracker`] gives them).
    stays: &'a [Vec<Stay>],
    radius_m: f64,
    /// Two stays of a device at one spot `stay_min` apart (or with a stay elsewhere between
    /// them) are a trip: a shorter break is as likely a few GPS jumps that split one stay.
    trip_ms: i64,
}

impl<'a> Departures<'a> {
    pub fn new(
        stays: &'a [Vec<Stay>],
        radius_m: f64,
        stay_min: std::time::Duration,
    ) -> Departures<'a> {
        Departures {
            stays,
            radius_m,
            trip_ms: stay_min.as_millis().min(i64::MAX as u128) as i64,
        }
    }

    /// Whether a stay's centre is within the radius of (`lat`, `lon`).
    fn near(&self, lat: f64, lon: f64) -> impl Fn(&Stay) -> bool + Copy + '_ {
        let here = Point::new(lon, lat);
        move |s: &Stay| Haversine.distance(Point::new(s.lon, s.lat), here) <= self.radius_m
    }

    /// Whether `own[a]` and `own[b]` (a < b), both at the spot `near` says, were a trip away
    /// from it: a stay elsewhere between them, or a break of `stay_min` at least.
    fn trip(&self, own: &[Stay], a: usize, b: usize, near: impl Fn(&Stay) -> bool) -> bool {
        own[a + 1..b].iter().any(|s| !near(s)) || own[b].since.since(own[a].until) >= self.trip_ms
    }

    /// Whether a device other than `device` was within the radius of (`lat`, `lon`) at both
    /// `t1` and `t2`, in two different stays: it left the spot in between.
    pub fn left_between(
        &self,
        device: usize,
        lat: f64,
        lon: f64,
        t1: Timestamp,
        t2: Timestamp,
    ) -> bool {
        let near = self.near(lat, lon);
        self.others(device)
            .any(|own| match (covering(own, t1), covering(own, t2)) {
                (Some(a), Some(b)) => {
                    a < b && near(&own[a]) && near(&own[b]) && self.trip(own, a, b, near)
                }
                _ => false,
            })
    }

    /// Whether a device other than `device` was within the radius of (`lat`, `lon`) at `t1`,
    /// then left and was back by `until`: the time after a device's last fix at its spot, which
    /// its stay counts up to its last word, has no second fix of its own to compare.
    pub fn left_and_back(
        &self,
        device: usize,
        lat: f64,
        lon: f64,
        t1: Timestamp,
        until: Timestamp,
    ) -> bool {
        let near = self.near(lat, lon);
        self.others(device).any(|own| {
            covering(own, t1).is_some_and(|a| {
                near(&own[a])
                    && own[a + 1..]
                        .iter()
                        .take_while(|s| s.since <= until)
                        .enumerate()
                        .any(|(i, s)| near(s) && self.trip(own, a, a + 1 + i, near))
            })
        })
    }

    /// Whether cuts could change any of `device`'s stays: another device has two stays within
    /// twice the radius of one of them, both overlapping it in time. Loose on purpose (a stay's
    /// centre moves as it grows); a device this says no for keeps the stays it found alone.
    pub fn may_cut(&self, device: usize) -> bool {
        let Some(own) = self.stays.get(device) else {
            return false;
        };
        own.iter().any(|x| {
            let here = Point::new(x.lon, x.lat);
            self.others(device).any(|other| {
                let from = other.partition_point(|s| s.until < x.since);
                other[from..]
                    .iter()
                    .take_while(|s| s.since <= x.until)
                    .filter(|s| {
                        Haversine.distance(Point::new(s.lon, s.lat), here) <= 2.0 * self.radius_m
                    })
                    .nth(1)
                    .is_some()
            })
        })
    }

    fn others(&self, device: usize) -> impl Iterator<Item = &'a [Stay]> {
        self.stays
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != device)
            .map(|(_, s)| s.as_slice())
    }
}

/// The index of the stay in `stays` (oldest first, not overlapping) that `t` falls in.
fn covering(stays: &[Stay], t: Timestamp) -> Option<usize> {
    let k = stays.partition_point(|s| s.since <= t);
    (k > 0 && stays[k - 1].until >= t).then(|| k - 1)
}

/// A [`StayTracker`] for one device that ends its spot where [`Departures`] says the car left.
pub struct CuttingTracker<'a> {
    tracker: StayTracker,
    departures: &'a Departures<'a>,
    device: usize,
}

impl<'a> CuttingTracker<'a> {
    pub fn new(
        tracker: StayTracker,
        departures: &'a Departures<'a>,
        device: usize,
    ) -> CuttingTracker<'a> {
        CuttingTracker {
            tracker,
            departures,
            device,
        }
    }

    /// As [`StayTracker::push`]. Fixes held back as possible jumps are left to the stay rule.
    pub fn push(&mut self, fix: &Fix) -> Option<Stay> {
        if Pt::usable(fix).is_some() && self.left_before(fix.time) {
            let ended = self.tracker.leave();
            let again = self.tracker.push(fix);
            debug_assert!(again.is_none());
            return ended;
        }
        self.tracker.push(fix)
    }

    /// As [`StayTracker::finish`]; the time after the last fix at the spot up to `now` is cut
    /// where another device left the spot and was back there by `now`.
    pub fn finish(mut self, now: Timestamp, mut out: impl FnMut(Stay)) {
        let left = self.tracker.spot().is_some_and(|spot| {
            !spot.unresolved
                && now > spot.last_fix
                && self.departures.left_and_back(
                    self.device,
                    spot.lat,
                    spot.lon,
                    spot.last_fix,
                    now,
                )
        });
        if left {
            if let Some(s) = self.tracker.leave() {
                out(s);
            }
        }
        self.tracker.finish(now, out)
    }

    /// Whether another device saw the car leave the spot between its newest fix there and `t`.
    fn left_before(&self, t: Timestamp) -> bool {
        self.tracker.spot().is_some_and(|spot| {
            !spot.unresolved
                && t > spot.last_fix
                && self
                    .departures
                    .left_between(self.device, spot.lat, spot.lon, spot.last_fix, t)
        })
    }
}
