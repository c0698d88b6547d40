//! Stays: where a vehicle stood still, found in one pass over its valid fixes.
//!
//! The one implementation of the stay rule: the places computation feeds a whole history through
//! [`StayTracker`], and the `long_stay` rule feeds it live, one fix at a time.
//!
//! - A fix within `stay_radius_m` of the current spot's centre extends the stay to its time, so a
//!   gap with no fix between two fixes at the spot (heartbeats only, a sleeping tracker) belongs
//!   to the stay.
//! - Once the vehicle has been at a spot for `stay_min`, up to [`MAX_OUTLIERS`] fixes in a row
//!   away from it are held back: if the next fix is at the spot again they were a GPS jump and
//!   are dropped; one more away (or two away that make a stay of their own) and the vehicle has
//!   left: the stay ends at its last fix at the spot, and the held-back fixes start the next one.
//!   Before `stay_min`, a fix away simply starts a new spot (a car passing by).
//! - The centre is the mean of the stay's fixes weighted by the time until the next one: a parked
//!   tracker reports rarely and a moving one often, so an unweighted mean would be pulled towards
//!   the approach and departure fixes of a short stay.

use super::extent::{dlon, Cover, Extent, M_PER_DEG};
use super::Fix;
use crate::time::Timestamp;
use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How many fixes in a row may land away from the spot and still be a GPS jump.
pub const MAX_OUTLIERS: usize = 2;

/// A period of at least `stay_min` at one spot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stay {
    /// The time-weighted centre of its fixes.
    pub lat: f64,
    pub lon: f64,
    /// The first fix at the spot.
    pub since: Timestamp,
    /// The last fix at the spot, or `now` for a stay still going at the end of the input.
    pub until: Timestamp,
    /// Still going: the last fix was at the spot and `until` is the caller's `now`.
    pub open: bool,
    /// Valid fixes that made it up.
    pub fixes: u32,
    /// Covers its fixes, in metres east and north of (`lat`, `lon`).
    pub extent: Extent,
}

impl Stay {
    pub fn duration_ms(&self) -> i64 {
        self.until.since(self.since)
    }
}

/// The stay the vehicle is in now, as [`StayTracker::current`] sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurrentStay {
    pub lat: f64,
    pub lon: f64,
    pub since: Timestamp,
    /// The newest fix at the spot.
    pub last_fix: Timestamp,
    /// From `since` to the `now` asked about.
    pub duration: Duration,
}

/// The spot a [`StayTracker`] is watching, whether or not it is a stay yet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spot {
    pub since: Timestamp,
    /// The newest fix at the spot.
    pub last_fix: Timestamp,
    pub lat: f64,
    pub lon: f64,
    /// Fixes away from the spot are held back: not yet known whether the vehicle left.
    pub unresolved: bool,
}

/// A valid GNSS fix reduced to what the rule needs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pt {
    pub time: Timestamp,
    pub lat: f64,
    pub lon: f64,
}

impl Pt {
    /// `None` for what the rule ignores: invalid and LBS/Wi-Fi fixes, coordinates that are not
    /// a place on earth (a device can send anything), and 0/0, which devices send marked valid
    /// before their first fix (as `Position::is_usable` and `long_stay` ignore it).
    pub fn usable(f: &Fix) -> Option<Pt> {
        let ok = f.valid
            && !f.lbs
            && f.lat.is_finite()
            && f.lon.is_finite()
            && (-90.0..=90.0).contains(&f.lat)
            && (-180.0..=180.0).contains(&f.lon)
            && !(f.lat.abs() < 1e-6 && f.lon.abs() < 1e-6);
        ok.then_some(Pt {
            time: f.time,
            lat: f.lat,
            lon: f.lon,
        })
    }

    fn point(&self) -> Point {
        Point::new(self.lon, self.lat)
    }
}

/// A spot being watched: maybe a stay, maybe a car passing by.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
struct Candidate<C: Cover> {
    /// The first fix: origin of the offsets below and of the extent's frame.
    lat0: f64,
    lon0: f64,
    /// Metres per degree of longitude at `lat0`.
    mx: f64,
    since: Timestamp,
    /// The newest fix at the spot, as offsets from the origin in degrees.
    last_time: Timestamp,
    last_dlat: f64,
    last_dlon: f64,
    /// Time-weighted sums (weights in seconds) over every fix but the newest.
    w: f64,
    w_dlat: f64,
    w_dlon: f64,
    fixes: u32,
    extent: C,
}

/// The newest fix weighs this much (seconds) until the next one says how long it stood.
const LAST_WEIGHT_S: f64 = 1.0;

impl<C: Cover> Candidate<C> {
    fn start(p: Pt) -> Candidate<C> {
        let mut extent = C::default();
        extent.add(0.0, 0.0);
        Candidate {
            lat0: p.lat,
            lon0: p.lon,
            mx: M_PER_DEG * p.lat.to_radians().cos(),
            since: p.time,
            last_time: p.time,
            last_dlat: 0.0,
            last_dlon: 0.0,
            w: 0.0,
            w_dlat: 0.0,
            w_dlon: 0.0,
            fixes: 1,
            extent,
        }
    }

    /// Centre as offsets from the origin, in degrees.
    fn centre_offset(&self) -> (f64, f64) {
        let w = self.w + LAST_WEIGHT_S;
        (
            (self.w_dlat + LAST_WEIGHT_S * self.last_dlat) / w,
            (self.w_dlon + LAST_WEIGHT_S * self.last_dlon) / w,
        )
    }

    fn centre(&self) -> (f64, f64) {
        let (a, b) = self.centre_offset();
        (self.lat0 + a, wrap_lon(self.lon0 + b))
    }

    /// Whether `p` is within `r` metres of the centre. On the plane tangent at the origin, with
    /// no trigonometry: this runs for every fix of every vehicle (`long_stay`), and within a
    /// stay radius of a few hundred metres it differs from the haversine distance by far less
    /// than a GNSS fix's own error; far from the spot both say "away".
    fn within_m(&self, p: &Pt, r: f64) -> bool {
        let (a, b) = self.centre_offset();
        let dy = (p.lat - self.lat0 - a) * M_PER_DEG;
        let dx = wrap_lon(dlon(p.lon, self.lon0) - b) * self.mx;
        dx * dx + dy * dy <= r * r
    }

    fn add(&mut self, p: Pt) {
        let weight = (p.time.since(self.last_time) as f64 / 1000.0).max(LAST_WEIGHT_S);
        self.w += weight;
        self.w_dlat += weight * self.last_dlat;
        self.w_dlon += weight * self.last_dlon;
        self.last_time = p.time;
        self.last_dlat = p.lat - self.lat0;
        self.last_dlon = dlon(p.lon, self.lon0);
        self.fixes += 1;
        self.extent
            .add(self.last_dlon * self.mx, self.last_dlat * M_PER_DEG);
    }

    fn into_stay(self, until: Timestamp, open: bool) -> Stay {
        let (a, b) = self.centre_offset();
        let (lat, lon) = self.centre();
        Stay {
            lat,
            lon,
            since: self.since,
            until,
            open,
            fixes: self.fixes,
            extent: self
                .extent
                .extent()
                .moved_origin(b * self.mx, a * M_PER_DEG),
        }
    }
}

fn wrap_lon(lon: f64) -> f64 {
    dlon(lon, 0.0)
}

/// Follows one vehicle's valid fixes, in fix-time order, and says where it is staying.
///
/// Constant size (no allocation): one per vehicle is cheap to keep for the `long_stay` rule,
/// which persists it (serde) so that a stay in progress survives a restart, and keeps no
/// [`Cover`] (`StayTracker<NoCover>`): its stays' `extent` is empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct StayTracker<C: Cover = Extent> {
    radius_m: f64,
    stay_min_ms: i64,
    cand: Option<Candidate<C>>,
    /// Fixes away from the spot, held back until they prove to be a jump or a departure.
    away: [Option<Pt>; MAX_OUTLIERS],
    newest: Option<Timestamp>,
}

impl StayTracker {
    /// A tracker that keeps each stay's covering octagon, as places need.
    pub fn new(stay_radius_m: f64, stay_min: Duration) -> StayTracker {
        StayTracker::with_cover(stay_radius_m, stay_min)
    }
}

impl<C: Cover> StayTracker<C> {
    /// A tracker that keeps what `C` keeps of each stay's area.
    pub fn with_cover(stay_radius_m: f64, stay_min: Duration) -> StayTracker<C> {
        let mut t = StayTracker {
            radius_m: 0.0,
            stay_min_ms: 1,
            cand: None,
            away: [None; MAX_OUTLIERS],
            newest: None,
        };
        t.set_rule(stay_radius_m, stay_min);
        t
    }

    /// Takes a new radius and `stay_min` (a reloaded config) for what comes next: a tracker kept
    /// across a change would otherwise judge stays by the old rule.
    pub fn set_rule(&mut self, stay_radius_m: f64, stay_min: Duration) {
        self.radius_m = stay_radius_m;
        // At least 1 ms: a single fix is never a stay, which keeps `push` to one stay a call.
        self.stay_min_ms = stay_min.as_millis().clamp(1, i64::MAX as u128) as i64;
    }

    /// Feeds one fix. Invalid and LBS fixes, and fixes older than one already fed, are ignored.
    /// Returns the stay this fix ended, if one did (the vehicle has left).
    pub fn push(&mut self, fix: &Fix) -> Option<Stay> {
        let p = Pt::usable(fix)?;
        if self.newest.is_some_and(|t| p.time < t) {
            return None;
        }
        self.newest = Some(p.time);
        self.step(p)
    }

    /// The stay the vehicle is in at `now`: its newest valid fix is at a spot it has been at for
    /// at least `stay_min` up to `now`. `None` while fixes away from the spot are unresolved.
    pub fn current(&self, now: Timestamp) -> Option<CurrentStay> {
        let c = self.cand.as_ref()?;
        if self.away[0].is_some() {
            return None;
        }
        let until = now.max(c.last_time);
        let ms = until.since(c.since);
        if ms < self.stay_min_ms {
            return None;
        }
        let (lat, lon) = c.centre();
        Some(CurrentStay {
            lat,
            lon,
            since: c.since,
            last_fix: c.last_time,
            duration: Duration::from_millis(ms as u64),
        })
    }

    /// Another source says the vehicle left its spot after the newest fix there (see
    /// [`super::departures`]): the stay, if it is one, ends at that fix, and the next fix starts
    /// a new spot.
    pub fn leave(&mut self) -> Option<Stay> {
        self.depart()
    }

    /// The time of the newest fix fed (older ones are ignored).
    pub fn newest(&self) -> Option<Timestamp> {
        self.newest
    }

    /// The spot being watched (a stay or not yet): when the vehicle arrived there, its centre,
    /// and whether fixes away from it are held back (a jump, or a departure not yet proven).
    pub fn spot(&self) -> Option<Spot> {
        let c = self.cand.as_ref()?;
        let (lat, lon) = c.centre();
        Some(Spot {
            since: c.since,
            last_fix: c.last_time,
            lat,
            lon,
            unresolved: self.away[0].is_some(),
        })
    }

    /// Ends the input at `now`, passing every remaining stay to `out`. A stay whose last fix was
    /// at the spot counts up to `now`; if fixes away from it were still unresolved, it ends at its
    /// last fix there and nothing is extended (a jump and a departure cannot be told apart).
    pub fn finish(mut self, now: Timestamp, mut out: impl FnMut(Stay)) {
        if self.away[0].is_none() {
            if let Some(c) = self.cand.take() {
                let until = now.max(c.last_time);
                if until.since(c.since) >= self.stay_min_ms {
                    out(c.into_stay(until, true));
                }
            }
            return;
        }
        while self.away[0].is_some() {
            if let Some(s) = self.depart() {
                out(s);
            }
        }
        if let Some(s) = self.cand.take().and_then(|c| self.closed(c)) {
            out(s);
        }
    }

    fn step(&mut self, p: Pt) -> Option<Stay> {
        let Some(c) = self.cand.as_mut() else {
            self.cand = Some(Candidate::start(p));
            return None;
        };
        if c.within_m(&p, self.radius_m) {
            c.add(p);
            self.away = [None; MAX_OUTLIERS];
            return None;
        }
        // Not yet stay_min at the spot: nothing to protect, a passing car. Holding fixes back
        // here would let an approach fix anchor a spot that the real stay then "jumps" away from.
        if p.time.since(c.since) < self.stay_min_ms {
            let ended = self.depart();
            let again = self.step(p);
            debug_assert!(again.is_none());
            return ended;
        }
        let n = self.away.iter().take_while(|s| s.is_some()).count();
        // Held-back fixes that make a stay of their own elsewhere are no jump: a parked tracker
        // that reports once at arrival and once at departure must not look like one.
        let settled = self.away[0].is_some_and(|a| {
            p.time.since(a.time) >= self.stay_min_ms
                && Haversine.distance(a.point(), p.point()) <= self.radius_m
        });
        if n < MAX_OUTLIERS && !settled {
            self.away[n] = Some(p);
            return None;
        }
        let ended = self.depart();
        let again = self.step(p);
        debug_assert!(again.is_none());
        ended
    }

    /// The vehicle left: the candidate ends at its last fix at the spot, and the fixes held back
    /// start the next one (at most MAX_OUTLIERS of them, so this never ends another stay).
    fn depart(&mut self) -> Option<Stay> {
        let ended = self.cand.take().and_then(|c| self.closed(c));
        let away = std::mem::replace(&mut self.away, [None; MAX_OUTLIERS]);
        for p in away.into_iter().flatten() {
            let again = self.step(p);
            debug_assert!(again.is_none());
        }
        ended
    }

    fn closed(&self, c: Candidate<C>) -> Option<Stay> {
        (c.last_time.since(c.since) >= self.stay_min_ms).then(|| c.into_stay(c.last_time, false))
    }
}
