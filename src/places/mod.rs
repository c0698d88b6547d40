//! Places: where a vehicle stays (常驻点), and where it is or last was stopped (最后停车点).
//!
//! After a tracker is removed, a collections team stakes out the places the car usually sleeps;
//! this module finds them from a vehicle's position history. It is pure (no I/O, no clock): the
//! caller streams each device's fixes in fix-time order (once, or twice for a device whose stays
//! another device's departures may cut) and passes the current time; memory holds the stays.
//!
//! - [`stay`]: the stay rule, also used live by the `long_stay` alert ([`StayTracker`]).
//! - [`departures`]: a device's stay cut where another device of the car saw it leave.
//! - [`cluster`], [`summary`]: stays grouped into places, measured and ordered.
//! - [`night`]: the 21:00-07:00 local-time part of a stay.
//! - [`synthetic`]: a deterministic synthetic life for tests and benchmarks.

pub mod cluster;
pub mod departures;
pub mod extent;
pub mod night;
pub mod stay;
pub mod summary;
pub mod synthetic;
pub mod view;

pub use stay::{CurrentStay, Stay, StayTracker};
pub use view::{LastStop, Place, PlaceKind, Places, PlacesReport};

use crate::event::Position;
use crate::time::Timestamp;
use jiff::tz::TimeZone;
use std::time::Duration;

/// One position as the places computation needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fix {
    /// The device's fix time.
    pub time: Timestamp,
    pub lat: f64,
    pub lon: f64,
    /// The device's own fix flag.
    pub valid: bool,
    /// A cell or Wi-Fi report: kilometres off, never used for stays even if marked valid.
    pub lbs: bool,
}

impl From<&Position> for Fix {
    fn from(p: &Position) -> Fix {
        Fix {
            time: p.time,
            lat: p.lat,
            lon: p.lon,
            valid: p.valid,
            lbs: p.cell.is_some() || p.wifi.is_some(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlacesError {
    #[error("unknown time zone {name:?}: {reason}")]
    UnknownTimeZone { name: String, reason: String },
    #[error("stay radius must be a positive number of metres, not {0}")]
    BadRadius(f64),
}

/// The `[rules]` settings places use.
#[derive(Clone, Debug)]
pub struct Params {
    /// A vehicle within this distance of a spot is staying there (`rules.stay_radius_m`).
    pub stay_radius_m: f64,
    /// ... for at least this long (`rules.stay_min`).
    pub stay_min: Duration,
    /// Local time for night and day (`rules.timezone`).
    pub timezone: TimeZone,
}

impl Params {
    /// From the configuration's values; `timezone` is an IANA name such as "Asia/Shanghai".
    pub fn from_rules(
        stay_radius_m: f64,
        stay_min: Duration,
        timezone: &str,
    ) -> Result<Params, PlacesError> {
        if !(stay_radius_m.is_finite() && stay_radius_m > 0.0) {
            return Err(PlacesError::BadRadius(stay_radius_m));
        }
        let tz = time_zone(timezone)?;
        Ok(Params {
            stay_radius_m,
            stay_min,
            timezone: tz,
        })
    }

    pub fn tracker(&self) -> StayTracker {
        StayTracker::new(self.stay_radius_m, self.stay_min)
    }
}

/// An IANA time zone from the host's database, else from the copy compiled in: a host can have a
/// partial `/usr/share/zoneinfo` (minimal containers keep UTC only), which jiff would not look past.
pub fn time_zone(name: &str) -> Result<TimeZone, PlacesError> {
    TimeZone::get(name).or_else(|host_err| {
        jiff::tz::TimeZoneDatabase::bundled()
            .get(name)
            .map_err(|_| PlacesError::UnknownTimeZone {
                name: name.to_string(),
                reason: host_err.to_string(),
            })
    })
}

/// The stays in `fixes` (fix-time order, all devices merged), oldest first. A stay still going
/// at the end counts up to `now`.
///
/// Fixes with the same time (two devices reporting at once) are taken in a fixed order
/// (by position), so the result does not depend on how the merge interleaved them.
pub fn stays(fixes: impl IntoIterator<Item = Fix>, now: Timestamp, params: &Params) -> Vec<Stay> {
    let mut tracker = params.tracker();
    let mut out = Vec::new();
    let mut same_time: Vec<Fix> = Vec::new();
    let flush = |same: &mut Vec<Fix>, tracker: &mut StayTracker, out: &mut Vec<Stay>| {
        if same.len() > 1 {
            same.sort_by(|a, b| a.lat.total_cmp(&b.lat).then(a.lon.total_cmp(&b.lon)));
        }
        for f in same.drain(..) {
            out.extend(tracker.push(&f));
        }
    };
    for f in fixes {
        if stay::Pt::usable(&f).is_none() {
            continue;
        }
        if same_time.first().is_some_and(|g| g.time != f.time) {
            flush(&mut same_time, &mut tracker, &mut out);
        }
        same_time.push(f);
    }
    flush(&mut same_time, &mut tracker, &mut out);
    tracker.finish(now, |s| out.push(s));
    out
}

/// Places and the last stop from a vehicle's fixes (see [`stays`]).
pub fn places(fixes: impl IntoIterator<Item = Fix>, now: Timestamp, params: &Params) -> Places {
    summary::summarise(&stays(fixes, now, params), params)
}

/// Places and the last stop from the stays of each of a vehicle's devices, found apart (each
/// device's fixes through a [`StayTracker`] of its own, or [`stays`]).
///
/// One stream of all the devices' fixes would do while they ride together, but two trackers
/// apart (one removed and dropped somewhere, CONTRACT.md's device separation) would take turns
/// moving one spot, and neither would ever stay long enough to be a stay. Stays at one spot at
/// overlapping times are then made one stay of the car ([`merge_stays`]), so that a car parked
/// at home with two trackers stays there once.
pub fn vehicle_places(stays: Vec<Stay>, params: &Params) -> Places {
    summary::summarise(&merge_stays(stays, params.stay_radius_m), params)
}

/// The stays of each of a vehicle's devices, found apart (see [`vehicle_places`]), then cut
/// where another of them saw the car leave ([`departures`]); all of them, for
/// [`vehicle_places`].
///
/// `read(i, sink)` feeds device `i`'s fixes to `sink` in fix-time order; it is called a second
/// time for a device whose stays a cut may change, so the caller streams (a month of fixes is
/// never held). Device `i`'s last stay counts up to `until[i]`.
pub fn device_stays<E>(
    until: &[Timestamp],
    params: &Params,
    mut read: impl FnMut(usize, &mut dyn FnMut(&Fix)) -> Result<(), E>,
) -> Result<Vec<Stay>, E> {
    let mut own = Vec::with_capacity(until.len());
    for (i, &end) in until.iter().enumerate() {
        let mut tracker = params.tracker();
        let mut stays = Vec::new();
        read(i, &mut |f| stays.extend(tracker.push(f)))?;
        tracker.finish(end, |s| stays.push(s));
        own.push(stays);
    }
    let evidence = departures::Departures::new(&own, params.stay_radius_m, params.stay_min);
    let mut all = Vec::new();
    for (i, &end) in until.iter().enumerate() {
        if !evidence.may_cut(i) {
            all.extend_from_slice(&own[i]);
            continue;
        }
        let mut tracker = departures::CuttingTracker::new(params.tracker(), &evidence, i);
        read(i, &mut |f| all.extend(tracker.push(f)))?;
        tracker.finish(end, |s| all.push(s));
    }
    Ok(all)
}

/// Stays of several devices as the car's: two at overlapping times with centres within
/// `radius_m` become one, with the union of their times, the time-weighted centre and both
/// extents. The result is in `since` order, as [`stays`] gives it.
pub fn merge_stays(mut all: Vec<Stay>, radius_m: f64) -> Vec<Stay> {
    use geo::{Distance, Haversine, Point};
    all.sort_by_key(|s| (s.since, s.until));
    let mut out: Vec<Stay> = Vec::with_capacity(all.len());
    // Indices into `out` of the stays that may still overlap what comes (sorted by `since`, a
    // stay that ended before the next one began never will).
    let mut live: Vec<usize> = Vec::new();
    for s in all {
        live.retain(|&i| out[i].until >= s.since);
        let here = Point::new(s.lon, s.lat);
        let same = live
            .iter()
            .copied()
            .find(|&i| Haversine.distance(Point::new(out[i].lon, out[i].lat), here) <= radius_m);
        match same {
            Some(i) => out[i] = joined(&out[i], &s),
            None => {
                live.push(out.len());
                out.push(s);
            }
        }
    }
    out
}

/// One stay from two at one spot at overlapping times.
fn joined(a: &Stay, b: &Stay) -> Stay {
    use extent::{dlon, M_PER_DEG};
    let (wa, wb) = (a.duration_ms().max(1) as f64, b.duration_ms().max(1) as f64);
    let mx = M_PER_DEG * a.lat.to_radians().cos();
    // `b`'s centre and the joint one, in metres east and north of `a`'s.
    let (bx, by) = (dlon(b.lon, a.lon) * mx, (b.lat - a.lat) * M_PER_DEG);
    let (cx, cy) = (bx * wb / (wa + wb), by * wb / (wa + wb));
    let until = a.until.max(b.until);
    Stay {
        lat: a.lat + cy / M_PER_DEG,
        lon: dlon(a.lon + if mx > 0.0 { cx / mx } else { 0.0 }, 0.0),
        since: a.since.min(b.since),
        until,
        open: (a.open && a.until == until) || (b.open && b.until == until),
        fixes: a.fixes.saturating_add(b.fixes),
        extent: a
            .extent
            .moved_origin(cx, cy)
            .merge(b.extent.moved_origin(cx - bx, cy - by)),
    }
}

#[cfg(test)]
mod tests;
