//! Places from the history (CONTRACT.md "Places"): each device of the vehicle over the last
//! `days`, its fixes streamed from the store into a stay pass of its own (and a second one where
//! another device saw the car leave, [`crate::places::device_stays`]), then the stays of all of
//! them made the car's ([`crate::places::vehicle_places`]). Memory holds stays, never a month
//! of fixes.

use super::History;
use crate::engine::places::PlacesJob;
use crate::places::{Fix, PlacesReport};
use crate::store::StoreError;
use crate::time::Timestamp;
use std::ops::ControlFlow;

/// Runs a places query at `now`. Invalid, LBS and suspect fixes are dropped while reading (they
/// never count).
pub fn run(history: &History, job: &PlacesJob, now: Timestamp) -> Result<PlacesReport, StoreError> {
    let span = job
        .retention
        .min(std::time::Duration::from_secs(job.days as u64 * 86_400));
    let from = now.sub(span);
    // A device's last stay counts up to its last word, not through a silence after it (a
    // tracker cut while driving has not "stayed" on the motorway since).
    let until: Vec<Timestamp> = job
        .devices
        .iter()
        .map(|d| job.last_heard.get(d).map_or(now, |&t| t.min(now)))
        .collect();
    // Only when no device of the car has a fix in the window is a fix from before it where
    // the car stands: one device's newer fixes elsewhere (the car moved, and that tracker was
    // taken off and left behind) would otherwise put a month at a spot the car left.
    let quiet = job
        .devices
        .iter()
        .all(|d| job.newest_fix.get(d).is_none_or(|p| p.time < from));
    let oldest = now.sub(job.retention);
    let all = crate::places::device_stays(&until, &job.params, |i, sink| {
        let d = &job.devices[i];
        // What it sent before it was bound to this vehicle is another car's (a reused tracker);
        // by arrival, so that a backlog uploaded after the binding still counts.
        let bound = job.bound_since.get(d).copied();
        // No fix in the window, and its newest before it: a car parked since before the window
        // that sends heartbeats only stands there from the window's start (a stay is clipped to
        // the window as one that began in it would be), not nowhere. Not a fix older than the
        // history kept, nor one an LBS report or a fix without position came after.
        let ours = |p: &crate::store::StoredPosition| bound.is_none_or(|b| p.received_at >= b);
        let seed = job
            .newest_fix
            .get(d)
            .filter(|p| quiet && p.time >= oldest && job.fix_is_last_word.contains(d) && ours(p));
        if let Some(p) = seed {
            sink(&Fix {
                time: from,
                lat: p.lat,
                lon: p.lon,
                valid: true,
                lbs: false,
            });
        }
        history.for_each(d.as_str(), from, now.add_millis(1), |h| {
            let p = &h.pos;
            let ours = bound.is_none_or(|b| p.received_at >= b);
            if ours && p.valid && !h.suspect_future && p.cell.is_none() && p.wifi.is_none() {
                sink(&Fix {
                    time: p.time,
                    lat: p.lat,
                    lon: p.lon,
                    valid: true,
                    lbs: false,
                });
            }
            ControlFlow::Continue(())
        })
    })?;
    Ok(PlacesReport {
        vehicle_id: job.vehicle_id.clone(),
        timezone: job.timezone.clone(),
        days: job.days,
        places: crate::places::vehicle_places(all, &job.params),
    })
}
