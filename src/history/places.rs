//! Places from the history (CONTRACT.md "Places"): every device of the vehicle, merged in
//! fix-time order, over the last `days`.

use super::History;
use crate::engine::places::PlacesJob;
use crate::places::{Fix, PlacesReport};
use crate::store::StoreError;
use crate::time::Timestamp;
use std::ops::ControlFlow;

/// Runs a places query at `now`. Invalid, LBS and suspect fixes are dropped while reading (they
/// never count), so a month of a parked car's heartbeat noise costs nothing to hold.
pub fn run(history: &History, job: &PlacesJob, now: Timestamp) -> Result<PlacesReport, StoreError> {
    let span = job
        .retention
        .min(std::time::Duration::from_secs(job.days as u64 * 86_400));
    let from = now.add_millis(-(span.as_millis().min(i64::MAX as u128 / 2) as i64));
    let mut fixes: Vec<Fix> = Vec::new();
    for d in &job.devices {
        history.for_each(d.as_str(), from, now.add_millis(1), |h| {
            let p = &h.pos;
            if p.valid && !h.suspect_future && p.cell.is_none() && p.wifi.is_none() {
                fixes.push(Fix {
                    time: p.time,
                    lat: p.lat,
                    lon: p.lon,
                    valid: true,
                    lbs: false,
                });
            }
            ControlFlow::Continue(())
        })?;
    }
    if job.devices.len() > 1 {
        // Each device's fixes are in order already: a stable sort of runs is cheap.
        fixes.sort_by_key(|f| f.time);
    }
    Ok(PlacesReport {
        vehicle_id: job.vehicle_id.clone(),
        timezone: job.timezone.clone(),
        days: job.days,
        places: crate::places::places(fixes, now, &job.params),
    })
}
