//! Vehicles, loans, devices and geofences: the collateral registry (CONTRACT.md "Admin HTTP API").
//!
//! [`Vehicle::from_json`] turns a `PUT /v1/vehicles/{id}` body into a validated vehicle, or a
//! [`RegistryError`] whose message is fit for a 4xx `{"error": ...}`. A vehicle serialises back to
//! the same body shape (the geofence echoed exactly as given), so storing the body as JSON and
//! parsing it again on start is the intended persistence. (Not postcard: the echoed GeoJSON is a
//! `serde_json::Value`, which needs a self-describing format.)
//!
//! The geofence is compiled once at parse time into a [`FenceIndex`] (`Send + Sync`, shared by
//! `Arc`) so that the rules test a position in well under a microsecond, whatever the fence size.

mod fence;
mod fence_index;
mod zone;
mod zone_index;

pub use fence::{CoordProblem, Geofence, GeofenceError, RingRef};
pub use fence_index::{FenceIndex, Placement};
pub use zone::{zones_from_feature_collection, Zone, ZoneError};
pub use zone_index::ZoneSet;

use crate::event::DeviceId;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;

/// Loan status as the lender's system reports it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoanStatus {
    Current,
    Overdue,
    Closed,
}

/// The loan a vehicle secures.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Loan {
    pub id: String,
    pub status: LoanStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_past_due: Option<u32>,
}

/// Wired units report every few minutes; wireless ones sleep for hours or days (domain.md §3).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Wired,
    Wireless,
}

/// Why a registry body was refused. Every message names the field and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// Not JSON, wrong types, missing or unknown fields (serde's own message).
    #[error("invalid vehicle body: {0}")]
    Body(String),
    #[error("vehicle id must be 1 to 128 printable characters without '/'")]
    BadVehicleId,
    #[error("loan: id must not be empty")]
    EmptyLoanId,
    #[error("devices: a vehicle needs at least one device")]
    NoDevices,
    #[error("devices: device id {0} is listed more than once")]
    DuplicateDevice(String),
    #[error("devices[{0}]: silence_after must be longer than zero")]
    ZeroSilenceAfter(usize),
    #[error("geofence: {0}")]
    Geofence(#[from] GeofenceError),
    #[error("{field}: at most {max} characters")]
    TooLong { field: String, max: usize },
    #[error("devices: at most {MAX_DEVICES} devices on a vehicle")]
    TooManyDevices,
}

/// Longest `vin`, `plate` and loan id (device ids are 1 to 32 digits). Every alert carries
/// them, and a device's reply waits only for what sled keeps inline: a page of records this
/// small never reaches the 128 KiB that sled writes to a file of its own (`store::blob_sync`).
/// A VIN has 17 characters.
pub const MAX_FIELD: usize = 128;
/// Most devices on one vehicle: its rule state keeps recent fixes per device and a state per
/// pair, so this bounds its size (for the same reason). A car carries one to three.
pub const MAX_DEVICES: usize = 16;

/// `field` is at most [`MAX_FIELD`] characters.
fn check_len(field: &str, value: &str) -> Result<(), RegistryError> {
    if value.chars().count() > MAX_FIELD {
        return Err(RegistryError::TooLong {
            field: field.to_string(),
            max: MAX_FIELD,
        });
    }
    Ok(())
}

/// One device bound to a vehicle.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBinding {
    pub id: DeviceId,
    #[serde(default)]
    pub kind: DeviceKind,
    /// Overrides the `[rules]` default for this device's kind (a wireless unit on a 72 h schedule).
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub silence_after: Option<Duration>,
}

/// A vehicle: the collateral, its loan, its trackers and where it should stay.
///
/// Deserialising (serde) runs the full validation; prefer [`Vehicle::from_json`], which also sets
/// the id (it comes from the URL, not the body) and keeps the error typed.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(try_from = "VehicleBody", into = "VehicleBody")]
pub struct Vehicle {
    /// From the URL; not part of the body (empty after a bare serde deserialisation).
    pub id: String,
    pub vin: Option<String>,
    pub plate: Option<String>,
    pub loan: Loan,
    pub devices: Vec<DeviceBinding>,
    pub geofence: Option<Geofence>,
}

/// The body exactly as the API takes it, before validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    pub loan: Loan,
    pub devices: Vec<DeviceBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geofence: Option<serde_json::Value>,
}

impl VehicleBody {
    /// Checks everything and compiles the geofence.
    pub fn validate(self) -> Result<Vehicle, RegistryError> {
        if self.loan.id.trim().is_empty() {
            return Err(RegistryError::EmptyLoanId);
        }
        if self.devices.is_empty() {
            return Err(RegistryError::NoDevices);
        }
        let mut seen = HashSet::with_capacity(self.devices.len());
        for (i, d) in self.devices.iter().enumerate() {
            if !seen.insert(d.id.as_str()) {
                return Err(RegistryError::DuplicateDevice(d.id.to_string()));
            }
            if d.silence_after == Some(Duration::ZERO) {
                return Err(RegistryError::ZeroSilenceAfter(i));
            }
        }
        let geofence = self.geofence.map(Geofence::from_json).transpose()?;
        Ok(Vehicle {
            id: String::new(),
            vin: self.vin,
            plate: self.plate,
            loan: self.loan,
            devices: self.devices,
            geofence,
        })
    }
}

impl TryFrom<VehicleBody> for Vehicle {
    type Error = RegistryError;
    fn try_from(b: VehicleBody) -> Result<Self, RegistryError> {
        b.validate()
    }
}

impl From<Vehicle> for VehicleBody {
    fn from(v: Vehicle) -> Self {
        VehicleBody {
            vin: v.vin,
            plate: v.plate,
            loan: v.loan,
            devices: v.devices,
            geofence: v.geofence.map(|g| g.source()),
        }
    }
}

impl Vehicle {
    /// Asks the cache for what the rules read of the vehicle beyond its own fields: its devices
    /// and its compiled fence (`crate::prefetch`).
    pub fn prefetch_rule_data(&self) {
        crate::prefetch::object(&self.devices[..]);
        if let Some(f) = &self.geofence {
            f.prefetch();
        }
    }

    /// Parses and validates a `PUT /v1/vehicles/{id}` body. Nothing is stored on error.
    pub fn from_json(id: &str, body: &[u8]) -> Result<Vehicle, RegistryError> {
        Self::from_stored(id, body)?.within_limits()
    }

    /// A vehicle as stored (the same body as the API's), without the API's limits: one kept
    /// before a limit still loads.
    pub fn from_stored(id: &str, body: &[u8]) -> Result<Vehicle, RegistryError> {
        if !Self::is_valid_id(id) {
            return Err(RegistryError::BadVehicleId);
        }
        let raw: VehicleBody =
            serde_json::from_slice(body).map_err(|e| RegistryError::Body(e.to_string()))?;
        let mut v = raw.validate()?;
        v.id = id.to_owned();
        Ok(v)
    }

    /// [`MAX_FIELD`] and [`MAX_DEVICES`], checked on what the API takes.
    fn within_limits(self) -> Result<Vehicle, RegistryError> {
        if self.devices.len() > MAX_DEVICES {
            return Err(RegistryError::TooManyDevices);
        }
        check_len("vin", self.vin.as_deref().unwrap_or_default())?;
        check_len("plate", self.plate.as_deref().unwrap_or_default())?;
        check_len("loan.id", &self.loan.id)?;
        Ok(self)
    }

    /// The body as stored: the same shape as the API body, with the geofence copied as text
    /// rather than re-parsed (a province-sized fence is megabytes; this runs off the engine
    /// thread for a PUT).
    pub fn stored_json(&self) -> String {
        self.stored_json_with(&self.loan)
    }

    /// [`Vehicle::stored_json`] with another loan: what a loan change writes, without a copy of
    /// the compiled fence.
    pub fn stored_json_with(&self, loan: &Loan) -> String {
        #[derive(Serialize)]
        struct Stored<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            vin: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            plate: &'a Option<String>,
            loan: &'a Loan,
            devices: &'a [DeviceBinding],
            #[serde(skip_serializing_if = "Option::is_none")]
            geofence: Option<&'a serde_json::value::RawValue>,
        }
        let raw = self.geofence.as_ref().map(|g| g.source_raw());
        serde_json::to_string(&Stored {
            vin: &self.vin,
            plate: &self.plate,
            loan,
            devices: &self.devices,
            geofence: raw.as_deref(),
        })
        .unwrap_or_default()
    }

    /// The body shape (CONTRACT.md), for storage and `GET`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(VehicleBody::from(self.clone())).unwrap_or(serde_json::Value::Null)
    }

    /// Vehicle ids are the lender's choice; refuse only what would break URLs and logs.
    pub fn is_valid_id(id: &str) -> bool {
        !id.is_empty() && id.len() <= 128 && !id.contains('/') && !id.chars().any(char::is_control)
    }

    pub fn device(&self, id: &DeviceId) -> Option<&DeviceBinding> {
        self.devices.iter().find(|d| &d.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{Distance, Haversine, Point};
    use serde_json::json;

    fn body(geofence: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "vin": "LSVAU2180N2183294",
            "plate": "粤B12345",
            "loan": {"id": "L-2026-0001", "status": "overdue", "days_past_due": 37},
            "devices": [
                {"id": "123456789012345", "kind": "wired"},
                {"id": "13912345678", "kind": "wireless", "silence_after": "72h"}
            ],
            "geofence": geofence
        }))
        .unwrap()
    }

    fn square() -> serde_json::Value {
        json!({"type": "Polygon", "coordinates": [[[113.9, 22.5], [114.1, 22.5], [114.1, 22.7], [113.9, 22.7], [113.9, 22.5]]]})
    }

    fn fence_err(g: serde_json::Value) -> String {
        match Vehicle::from_json("V-1", &body(g)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn contract_body_parses_and_round_trips() {
        let v = Vehicle::from_json("V-1", &body(square())).unwrap();
        assert_eq!(v.id, "V-1");
        assert_eq!(v.loan.status, LoanStatus::Overdue);
        assert_eq!(v.devices.len(), 2);
        assert_eq!(v.devices[1].kind, DeviceKind::Wireless);
        assert_eq!(
            v.devices[1].silence_after,
            Some(Duration::from_secs(72 * 3600))
        );
        let fence = v.geofence.as_ref().unwrap().index();
        assert!(fence.contains(114.0, 22.6));
        assert!(!fence.contains(114.2, 22.6));
        // Echoed as given, and parses again to the same vehicle.
        let back = v.to_json();
        assert_eq!(back["geofence"], square());
        assert!(back.get("id").is_none());
        let again = Vehicle::from_json("V-1", &serde_json::to_vec(&back).unwrap()).unwrap();
        assert_eq!(again, v);
        assert_eq!(again.geofence.unwrap().tag(), v.geofence.unwrap().tag());
    }

    #[test]
    fn serde_deserialize_validates_too() {
        let bad = body(json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 0}));
        assert!(serde_json::from_slice::<Vehicle>(&bad).is_err());
        let good = body(json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 10}));
        assert!(serde_json::from_slice::<Vehicle>(&good).is_ok());
    }

    #[test]
    fn no_geofence_is_fine() {
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[{"id":"1"}]}"#;
        let v = Vehicle::from_json("V-1", b).unwrap();
        assert!(v.geofence.is_none());
        assert_eq!(v.devices[0].kind, DeviceKind::Wired);
        assert_eq!(v.vin, None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[{"id":"1"}],"colour":"red"}"#;
        let e = Vehicle::from_json("V-1", b).unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[{"id":"1","imei":"2"}]}"#;
        assert!(Vehicle::from_json("V-1", b).is_err());
        let b = br#"{"loan":{"id":"L","status":"late"},"devices":[{"id":"1"}]}"#;
        assert!(Vehicle::from_json("V-1", b).is_err());
        let b = br#"{"id":"V-1","loan":{"id":"L","status":"current"},"devices":[{"id":"1"}]}"#;
        assert!(Vehicle::from_json("V-1", b).is_err());
    }

    #[test]
    fn device_problems_are_named() {
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[{"id":"1"},{"id":"1"}]}"#;
        assert_eq!(
            Vehicle::from_json("V-1", b).unwrap_err(),
            RegistryError::DuplicateDevice("1".into())
        );
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[]}"#;
        assert_eq!(
            Vehicle::from_json("V-1", b).unwrap_err(),
            RegistryError::NoDevices
        );
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[{"id":"12ab"}]}"#;
        assert!(Vehicle::from_json("V-1", b).is_err());
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[{"id":"1","silence_after":"0s"}]}"#;
        assert_eq!(
            Vehicle::from_json("V-1", b).unwrap_err(),
            RegistryError::ZeroSilenceAfter(0)
        );
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[{"id":"1","silence_after":"soon"}]}"#;
        assert!(Vehicle::from_json("V-1", b).is_err());
        let b = br#"{"loan":{"id":"L","status":"current"},"devices":[{"id":"1"}]}"#;
        assert_eq!(
            Vehicle::from_json("a/b", b).unwrap_err(),
            RegistryError::BadVehicleId
        );
        assert!(Vehicle::from_json("V-1", b"not json").is_err());
    }

    #[test]
    fn unclosed_ring() {
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[113.9, 22.5], [114.1, 22.5], [114.1, 22.7], [113.9, 22.7]]]}),
        );
        assert_eq!(
            e,
            "geofence: ring 0 is not closed (its last position must equal its first)"
        );
    }

    #[test]
    fn short_ring() {
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[113.9, 22.5], [114.1, 22.5], [113.9, 22.5]]]}),
        );
        assert!(e.contains("ring 0 has 3 positions"), "{e}");
        let e = fence_err(json!({"type": "Polygon", "coordinates": []}));
        assert!(e.contains("polygon 0 has no rings"), "{e}");
        let e = fence_err(json!({"type": "MultiPolygon", "coordinates": []}));
        assert!(e.contains("at least one polygon"), "{e}");
        // Four positions but only two distinct corners.
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[1.0, 1.0], [2.0, 2.0], [2.0, 2.0], [1.0, 1.0]]]}),
        );
        assert!(e.contains("fewer than 3 distinct"), "{e}");
    }

    #[test]
    fn self_intersecting_ring() {
        // A bow tie.
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]}),
        );
        assert!(
            e.starts_with("geofence: ring 0 intersects itself near [0.5, 0.5]"),
            "{e}"
        );
        // A spike that folds back along its own edge.
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]}),
        );
        assert!(e.contains("intersects itself"), "{e}");
        // In a MultiPolygon the polygon is named.
        let e = fence_err(json!({"type": "MultiPolygon", "coordinates": [
            [[[10.0, 10.0], [11.0, 10.0], [11.0, 11.0], [10.0, 10.0]]],
            [[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]
        ]}));
        assert!(e.contains("polygon 1 ring 0 intersects itself"), "{e}");
    }

    #[test]
    fn hole_crossing_exterior() {
        let e = fence_err(json!({"type": "Polygon", "coordinates": [
            [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]],
            [[1.0, 1.0], [5.0, 1.0], [5.0, 2.0], [1.0, 2.0], [1.0, 1.0]]
        ]}));
        assert!(
            e.contains("ring 1 crosses ring 0") || e.contains("ring 0 crosses ring 1"),
            "{e}"
        );
        // A proper hole is fine and is outside the fence.
        let g = Geofence::from_json(json!({"type": "Polygon", "coordinates": [
            [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]],
            [[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0], [1.0, 1.0]]
        ]}))
        .unwrap();
        assert!(g.index().contains(0.5, 0.5));
        assert!(!g.index().contains(2.0, 2.0));
        // 1 degree of latitude from the hole's edge.
        let d = g.index().distance_outside_m(2.0, 2.0);
        assert!((d - 111_195.0).abs() < 200.0, "{d}");
    }

    #[test]
    fn bad_coordinates() {
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[113.9, 22.5], [194.1, 22.5], [114.1, 22.7], [113.9, 22.5]]]}),
        );
        assert_eq!(
            e,
            "geofence: ring 0 position 1: longitude 194.1 is outside -180..180"
        );
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[22.5, 113.9], [22.5, 114.1], [22.7, 114.1], [22.5, 113.9]]]}),
        );
        assert!(e.contains("latitude 113.9 is outside -90..90"), "{e}");
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[113.9], [114.1, 22.5], [114.1, 22.7], [113.9, 22.5]]]}),
        );
        assert!(e.contains("position 0 needs [lon, lat]"), "{e}");
        let e = fence_err(json!({"type": "Polygon", "coordinates": [[["a", 1], [1, 2]]]}));
        assert!(e.starts_with("geofence:"), "{e}");
        let e = fence_err(json!({"type": "Circle", "center": [114.0, 95.0], "radius_m": 10}));
        assert!(e.contains("circle center: latitude 95"), "{e}");
    }

    #[test]
    fn circle_radius_and_types() {
        for r in [json!(0), json!(-5), json!(0.0)] {
            let e = fence_err(json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": r}));
            assert!(
                e.contains("radius_m must be a finite number above 0"),
                "{e}"
            );
        }
        let e = fence_err(json!({"type": "Circle", "center": [114.0, 22.5]}));
        assert!(e.contains("radius_m"), "{e}");
        let e =
            fence_err(json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 5, "r": 1}));
        assert!(e.contains("unknown field"), "{e}");
        let e = fence_err(json!({"type": "Point", "coordinates": [114.0, 22.5]}));
        assert!(e.contains("type \"Point\" is not supported"), "{e}");
        let e = fence_err(json!({"type": "Ellipse"}));
        assert!(e.contains("type \"Ellipse\" is not supported"), "{e}");
        let e = fence_err(json!({"coordinates": []}));
        assert!(e.contains("\"type\" string is required"), "{e}");
    }

    #[test]
    fn circle_distance() {
        let g = Geofence::from_json(
            json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 2000}),
        )
        .unwrap();
        assert!(g.index().contains(114.0, 22.51));
        // 0.1 degree of latitude north is about 11,119.5 m from the centre.
        let d = g.index().distance_outside_m(114.0, 22.6);
        assert!((d - 9_119.5).abs() < 5.0, "{d}");
    }

    #[test]
    fn polygon_distance_uses_the_nearest_edge() {
        let g = Geofence::from_json(square()).unwrap();
        // Due east of the east edge by 0.01 degree of longitude at 22.6 N: 1026.6 m.
        let d = g.index().distance_outside_m(114.11, 22.6);
        assert!((d - 1026.6).abs() < 2.0, "{d}");
        // Beyond a corner: the distance is to the corner.
        let d = g.index().distance_outside_m(114.11, 22.71);
        let corner = Haversine.distance(Point::new(114.11, 22.71), Point::new(114.1, 22.7));
        assert!((d - corner).abs() < 0.5, "{d} vs {corner}");
        assert_eq!(g.index().distance_outside_m(114.0, 22.6), 0.0);
    }

    #[test]
    fn large_rings_validate_quickly() {
        // 5,000-vertex circle-ish ring: must pass, and a crossing near the end must be found.
        let n = 5000;
        let mut ring: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let a = i as f64 / n as f64 * std::f64::consts::TAU;
                [114.0 + 0.5 * a.cos(), 22.5 + 0.5 * a.sin()]
            })
            .collect();
        ring.push(ring[0]);
        let t = std::time::Instant::now();
        let g = Geofence::from_json(json!({"type": "Polygon", "coordinates": [ring.clone()]}));
        assert!(g.is_ok());
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        ring.swap(2500, 2502);
        let e = Geofence::from_json(json!({"type": "Polygon", "coordinates": [ring]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("intersects itself"), "{e}");
    }

    #[test]
    fn collinear_and_repeated_vertices_are_fine() {
        let g = Geofence::from_json(json!({"type": "Polygon", "coordinates": [[
            [0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [0.0, 0.0]
        ]]}));
        assert!(g.is_ok(), "{g:?}");
        // Clockwise exteriors are accepted too.
        let g = Geofence::from_json(json!({"type": "Polygon", "coordinates": [[
            [0.0, 0.0], [0.0, 2.0], [2.0, 2.0], [2.0, 0.0], [0.0, 0.0]
        ]]}))
        .unwrap();
        assert!(g.index().contains(1.0, 1.0));
    }

    #[test]
    fn indexed_distance_matches_brute_force() {
        let n = 500;
        let mut ring: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let a = i as f64 / n as f64 * std::f64::consts::TAU;
                let r = 0.3 * (1.0 + 0.2 * (5.0 * a).sin());
                [114.0 + r * a.cos(), 30.0 + r * a.sin()]
            })
            .collect();
        ring.push(ring[0]);
        let g =
            Geofence::from_json(json!({"type": "Polygon", "coordinates": [ring.clone()]})).unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let (lon, lat) = (113.0 + rng.f64() * 2.0, 29.0 + rng.f64() * 2.0);
            if g.index().contains(lon, lat) {
                continue;
            }
            let fast = g.index().distance_outside_m(lon, lat);
            // Brute force: densify every edge and take the nearest sample.
            let mut best = f64::INFINITY;
            for w in ring.windows(2) {
                for k in 0..=20 {
                    let t = k as f64 / 20.0;
                    let q = Point::new(
                        w[0][0] + t * (w[1][0] - w[0][0]),
                        w[0][1] + t * (w[1][1] - w[0][1]),
                    );
                    best = best.min(Haversine.distance(Point::new(lon, lat), q));
                }
            }
            // The samples are at most a few tens of metres apart; the index may differ from the
            // true nearest point only by the local projection's error (well under 0.1 %).
            assert!(fast <= best * 1.001 + 0.5, "{fast} > {best}");
            assert!(fast >= best * 0.995 - 30.0, "{fast} << {best}");
        }
    }

    #[test]
    fn fence_index_is_send_sync() {
        fn is<T: Send + Sync>() {}
        is::<FenceIndex>();
        is::<Geofence>();
        is::<Vehicle>();
    }

    #[test]
    fn strict_geometry_names_the_fault() {
        // A circle too large to mean anything.
        let e = fence_err(json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 1e300}));
        assert!(e.contains("radius_m") && e.contains("1,000 km"), "{e}");
        assert!(Vehicle::from_json(
            "V-1",
            &body(json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 1_000_000.0}))
        )
        .is_ok());
        // Positions of 5 numbers; 3 (with altitude) are fine.
        let e = fence_err(
            json!({"type": "Polygon", "coordinates": [[[113.9, 22.5, 0.0, 1.0, 2.0], [114.1, 22.5], [114.1, 22.7], [113.9, 22.5]]]}),
        );
        assert!(
            e.contains("ring 0 position 0") && e.contains("5 numbers"),
            "{e}"
        );
        assert!(Vehicle::from_json(
            "V-1",
            &body(json!({"type": "Polygon", "coordinates": [[[113.9, 22.5, 10.0], [114.1, 22.5, 10.0], [114.1, 22.7, 10.0], [113.9, 22.5, 10.0]]]}))
        )
        .is_ok());
        // A hole outside its shell.
        let e = fence_err(json!({"type": "Polygon", "coordinates": [
            [[113.9, 22.5], [114.1, 22.5], [114.1, 22.7], [113.9, 22.7], [113.9, 22.5]],
            [[115.0, 23.0], [115.1, 23.0], [115.1, 23.1], [115.0, 23.0]]]}));
        assert!(e.contains("ring 1 lies outside"), "{e}");
        // A hole inside a hole.
        let e = fence_err(json!({"type": "MultiPolygon", "coordinates": [[
            [[113.0, 22.0], [115.0, 22.0], [115.0, 24.0], [113.0, 24.0], [113.0, 22.0]],
            [[113.5, 22.5], [114.5, 22.5], [114.5, 23.5], [113.5, 23.5], [113.5, 22.5]],
            [[113.8, 22.8], [114.2, 22.8], [114.2, 23.2], [113.8, 22.8]]]]}));
        assert!(
            e.contains("polygon 0 ring 1 and polygon 0 ring 2 overlap"),
            "{e}"
        );
        // A proper hole is accepted.
        assert!(Vehicle::from_json(
            "V-1",
            &body(json!({"type": "Polygon", "coordinates": [
                [[113.0, 22.0], [115.0, 22.0], [115.0, 24.0], [113.0, 24.0], [113.0, 22.0]],
                [[113.5, 22.5], [114.5, 22.5], [114.5, 23.5], [113.5, 22.5]]]}))
        )
        .is_ok());
    }

    #[test]
    fn stored_body_round_trips_without_reparsing_the_fence() {
        let v = Vehicle::from_json("V-1", &body(square())).unwrap();
        let stored = v.stored_json();
        let back = Vehicle::from_json("V-1", stored.as_bytes()).unwrap();
        assert_eq!(back, v);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
            v.to_json()
        );
    }

    /// The API's limits keep every alert record small (`store::blob_sync`); a vehicle stored
    /// before them still loads.
    #[test]
    fn long_fields_and_too_many_devices_are_refused_by_the_api_but_load_from_the_store() {
        let long = "X".repeat(MAX_FIELD + 1);
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut b: serde_json::Value = serde_json::from_slice(&body(json!(null))).unwrap();
            b.as_object_mut().unwrap().remove("geofence");
            f(&mut b);
            serde_json::to_vec(&b).unwrap()
        };
        for (field, b) in [
            ("vin", with(&|b| b["vin"] = json!(long))),
            ("plate", with(&|b| b["plate"] = json!(long))),
            ("loan.id", with(&|b| b["loan"]["id"] = json!(long))),
        ] {
            let e = Vehicle::from_json("V-1", &b).unwrap_err().to_string();
            assert_eq!(e, format!("{field}: at most {MAX_FIELD} characters"));
            assert!(Vehicle::from_stored("V-1", &b).is_ok(), "{field}");
        }
        // Exactly at the limit is fine, counted in characters, not bytes.
        let ok = with(&|b| b["plate"] = json!("粤".repeat(MAX_FIELD)));
        assert!(Vehicle::from_json("V-1", &ok).is_ok());
        let many = with(&|b| {
            b["devices"] = json!((0..=MAX_DEVICES)
                .map(|i| json!({"id": format!("86000000000{i:04}")}))
                .collect::<Vec<_>>())
        });
        let e = Vehicle::from_json("V-1", &many).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("devices: at most {MAX_DEVICES} devices on a vehicle")
        );
        assert!(Vehicle::from_stored("V-1", &many).is_ok());
    }
}
