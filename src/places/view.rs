//! What the places computation answers, shaped as the API shows it.

use crate::time::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /v1/vehicles/{id}/places`: the endpoint fills in the first three fields.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct PlacesReport {
    pub vehicle_id: String,
    /// The IANA name of `rules.timezone`.
    pub timezone: String,
    pub days: u32,
    #[serde(flatten)]
    pub places: Places,
}

/// Where the vehicle stays, and where it is (or last was) stopped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Places {
    /// Largest `dwell_hours` first.
    pub places: Vec<Place>,
    /// The stay the vehicle is in now or ended last; null if none.
    pub last_stop: Option<LastStop>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Place {
    /// The dwell-weighted centre of its stays, 6 decimals.
    pub lat: f64,
    pub lon: f64,
    /// Covers every fix of its stays, in whole metres.
    pub radius_m: u32,
    /// Its stays.
    pub visits: u32,
    /// Total time of its stays, 0.1 h.
    pub dwell_hours: f64,
    /// The part of `dwell_hours` between 21:00 and 07:00 local time, 0.1 h.
    pub night_hours: f64,
    pub kind: PlaceKind,
    /// When its newest stay began.
    pub last_arrived: Timestamp,
    /// When its newest finished stay ended; null if the vehicle is there now and never left it
    /// before.
    pub last_left: Option<Timestamp>,
}

/// `night` when at least half of the dwell is at night (home, usually), else `day` (work).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlaceKind {
    Night,
    Day,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct LastStop {
    pub lat: f64,
    pub lon: f64,
    pub since: Timestamp,
    /// From `since` to its last fix, or to now if the vehicle is still there; 0.1 h.
    pub dwell_hours: f64,
}

/// Coordinates to 6 decimals (about 0.1 m).
pub(crate) fn round_coord(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Milliseconds to hours, to 0.1 h.
pub(crate) fn round_hours(ms: i64) -> f64 {
    (ms as f64 / 360_000.0).round() / 10.0
}
