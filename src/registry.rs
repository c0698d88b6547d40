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

use crate::event::DeviceId;
use geo::algorithm::line_intersection::{line_intersection, LineIntersection};
use geo::indexed::IntervalTreeMultiPolygon;
use geo::orient::Direction;
use geo::{
    Contains, Coord, Distance, Haversine, Line, LineString, MultiPolygon, Orient, Point, Polygon,
};
use rstar::{PointDistance, RTree, RTreeObject, AABB};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
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
}

/// Which ring a geofence error is about: `ring 0` for a Polygon, `polygon 1 ring 0` for a
/// MultiPolygon (ring 0 is the exterior, the rest are holes, as in GeoJSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingRef {
    pub polygon: Option<usize>,
    pub ring: usize,
}

impl fmt::Display for RingRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.polygon {
            Some(p) => write!(f, "polygon {p} ring {}", self.ring),
            None => write!(f, "ring {}", self.ring),
        }
    }
}

/// Why a geofence was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeofenceError {
    #[error("type {0:?} is not supported (Polygon, MultiPolygon or Circle)")]
    UnknownType(String),
    #[error("{0}")]
    Malformed(String),
    #[error("a MultiPolygon needs at least one polygon")]
    NoPolygons,
    #[error("polygon {0} has no rings")]
    NoRings(usize),
    #[error("{0} has {1} positions; a ring needs at least 4 (3 corners and the closing one)")]
    TooFewPositions(RingRef, usize),
    #[error("{0} is not closed (its last position must equal its first)")]
    NotClosed(RingRef),
    #[error("{0} has fewer than 3 distinct corners")]
    Degenerate(RingRef),
    #[error("{ring} position {index} needs [lon, lat], got {len} numbers")]
    BadPosition {
        ring: RingRef,
        index: usize,
        len: usize,
    },
    #[error("{ring} position {index}: {what}")]
    BadCoordinate {
        ring: RingRef,
        index: usize,
        what: CoordProblem,
    },
    #[error("{ring} intersects itself near [{lon}, {lat}]")]
    SelfIntersection { ring: RingRef, lon: f64, lat: f64 },
    #[error("{a} crosses {b} near [{lon}, {lat}]")]
    RingsCross {
        a: RingRef,
        b: RingRef,
        lon: f64,
        lat: f64,
    },
    #[error("circle center: {0}")]
    BadCenter(CoordProblem),
    #[error("circle radius_m must be a finite number above 0, got {0}")]
    BadRadius(f64),
}

/// What is wrong with one coordinate pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CoordProblem {
    NonFinite,
    Longitude(f64),
    Latitude(f64),
}

impl fmt::Display for CoordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoordProblem::NonFinite => f.write_str("coordinates must be finite numbers"),
            CoordProblem::Longitude(v) => write!(f, "longitude {v} is outside -180..180"),
            CoordProblem::Latitude(v) => write!(f, "latitude {v} is outside -90..90"),
        }
    }
}

fn check_lon_lat(lon: f64, lat: f64) -> Result<(), CoordProblem> {
    if !lon.is_finite() || !lat.is_finite() {
        Err(CoordProblem::NonFinite)
    } else if !(-180.0..=180.0).contains(&lon) {
        Err(CoordProblem::Longitude(lon))
    } else if !(-90.0..=90.0).contains(&lat) {
        Err(CoordProblem::Latitude(lat))
    } else {
        Ok(())
    }
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
    /// Parses and validates a `PUT /v1/vehicles/{id}` body. Nothing is stored on error.
    pub fn from_json(id: &str, body: &[u8]) -> Result<Vehicle, RegistryError> {
        if !Self::is_valid_id(id) {
            return Err(RegistryError::BadVehicleId);
        }
        let raw: VehicleBody =
            serde_json::from_slice(body).map_err(|e| RegistryError::Body(e.to_string()))?;
        let mut v = raw.validate()?;
        v.id = id.to_owned();
        Ok(v)
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

/// A validated geofence: the GeoJSON as given (echoed back) plus its compiled index.
///
/// The source is kept as compact JSON text, not a `serde_json::Value`: a parsed value costs
/// several times the text (a 5,000-vertex ring: about 600 KB against 200 KB), and it is only
/// needed to echo the fence back.
#[derive(Clone)]
pub struct Geofence {
    index: Arc<FenceIndex>,
}

impl PartialEq for Geofence {
    fn eq(&self, other: &Self) -> bool {
        self.index.tag == other.index.tag && self.index.source == other.index.source
    }
}

impl fmt::Debug for Geofence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Geofence")
            .field("kind", &self.index.kind_name())
            .field("tag", &self.index.tag)
            .finish()
    }
}

impl Serialize for Geofence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Geofence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Geofence::from_json(v).map_err(|e| serde::de::Error::custom(format!("geofence: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CircleBody {
    #[serde(rename = "type")]
    _type: String,
    center: Vec<f64>,
    radius_m: f64,
}

impl Geofence {
    /// Parses and validates a GeoJSON `Polygon` / `MultiPolygon` or a `Circle` object.
    pub fn from_json(source: serde_json::Value) -> Result<Geofence, GeofenceError> {
        let ty = source
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| GeofenceError::Malformed("a \"type\" string is required".into()))?;
        let shape = match ty {
            "Circle" => {
                let c: CircleBody = serde_json::from_value(source.clone())
                    .map_err(|e| GeofenceError::Malformed(e.to_string()))?;
                let [lon, lat] = c.center[..] else {
                    return Err(GeofenceError::Malformed(format!(
                        "circle center needs [lon, lat], got {} numbers",
                        c.center.len()
                    )));
                };
                check_lon_lat(lon, lat).map_err(GeofenceError::BadCenter)?;
                if !c.radius_m.is_finite() || c.radius_m <= 0.0 {
                    return Err(GeofenceError::BadRadius(c.radius_m));
                }
                Shape::Circle {
                    center: Point::new(lon, lat),
                    radius_m: c.radius_m,
                }
            }
            "Polygon" | "MultiPolygon" => {
                let g: geojson::Geometry = serde_json::from_value(source.clone())
                    .map_err(|e| GeofenceError::Malformed(e.to_string()))?;
                let polys = match g.value {
                    geojson::GeometryValue::Polygon { coordinates } => {
                        vec![build_polygon(&coordinates, None)?]
                    }
                    geojson::GeometryValue::MultiPolygon { coordinates } => {
                        if coordinates.is_empty() {
                            return Err(GeofenceError::NoPolygons);
                        }
                        coordinates
                            .iter()
                            .enumerate()
                            .map(|(i, p)| build_polygon(p, Some(i)))
                            .collect::<Result<Vec<_>, _>>()?
                    }
                    other => return Err(GeofenceError::UnknownType(other.type_name().into())),
                };
                Shape::Area(AreaIndex::new(MultiPolygon(polys)))
            }
            other => return Err(GeofenceError::UnknownType(other.into())),
        };
        let text = source.to_string();
        let tag = fnv1a(text.as_bytes());
        Ok(Geofence {
            index: Arc::new(FenceIndex {
                shape,
                tag,
                source: text.into_boxed_str(),
            }),
        })
    }

    /// The GeoJSON as the API was given it.
    pub fn source(&self) -> serde_json::Value {
        serde_json::from_str(&self.index.source).unwrap_or(serde_json::Value::Null)
    }

    /// The same, as compact JSON text.
    pub fn source_json(&self) -> &str {
        &self.index.source
    }

    pub fn index(&self) -> &FenceIndex {
        &self.index
    }

    /// A stable fingerprint of the fence; rule state keeps it to notice that a fence was replaced.
    pub fn tag(&self) -> u64 {
        self.index.tag
    }
}

/// FNV-1a: stable across builds and Rust versions, unlike `DefaultHasher`, because the tag is
/// persisted.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn build_polygon(
    rings: &[Vec<geojson::Position>],
    polygon: Option<usize>,
) -> Result<Polygon<f64>, GeofenceError> {
    if rings.is_empty() {
        return Err(GeofenceError::NoRings(polygon.unwrap_or(0)));
    }
    let mut built: Vec<Vec<Coord<f64>>> = Vec::with_capacity(rings.len());
    for (r, ring) in rings.iter().enumerate() {
        let rr = RingRef { polygon, ring: r };
        let mut coords = Vec::with_capacity(ring.len());
        for (index, p) in ring.iter().enumerate() {
            let s = p.as_slice();
            if s.len() < 2 {
                return Err(GeofenceError::BadPosition {
                    ring: rr,
                    index,
                    len: s.len(),
                });
            }
            check_lon_lat(s[0], s[1]).map_err(|what| GeofenceError::BadCoordinate {
                ring: rr,
                index,
                what,
            })?;
            coords.push(Coord { x: s[0], y: s[1] });
        }
        if coords.len() < 4 {
            return Err(GeofenceError::TooFewPositions(rr, coords.len()));
        }
        if coords.first() != coords.last() {
            return Err(GeofenceError::NotClosed(rr));
        }
        // Repeated consecutive positions are harmless in GeoJSON; drop them so that zero-length
        // segments do not confuse the intersection test.
        coords.dedup();
        if coords.len() < 4 {
            return Err(GeofenceError::Degenerate(rr));
        }
        built.push(coords);
    }
    check_simple(&built, polygon)?;
    let mut it = built.into_iter().map(LineString::new);
    let exterior = it.next().unwrap_or_else(|| LineString::new(vec![]));
    // The interval tree counts windings: holes must run against the exterior, whatever
    // orientation the client drew them in (RFC 7946 only recommends one).
    Ok(Polygon::new(exterior, it.collect()).orient(Direction::Default))
}

/// A ring segment tagged with where it came from, for the intersection check.
struct TaggedSeg {
    ring: usize,
    idx: usize,
    line: Line<f64>,
}

impl RTreeObject for TaggedSeg {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_corners(
            [self.line.start.x, self.line.start.y],
            [self.line.end.x, self.line.end.y],
        )
    }
}

/// Rejects rings that cross themselves or each other, in O(n log n) for ordinary shapes: every
/// segment is tested only against the segments whose bounding boxes overlap its own (an R-tree
/// query), not against all others.
fn check_simple(rings: &[Vec<Coord<f64>>], polygon: Option<usize>) -> Result<(), GeofenceError> {
    let mut segs = Vec::new();
    for (r, ring) in rings.iter().enumerate() {
        for (i, w) in ring.windows(2).enumerate() {
            segs.push(TaggedSeg {
                ring: r,
                idx: i,
                line: Line::new(w[0], w[1]),
            });
        }
    }
    let ring_len: Vec<usize> = rings.iter().map(|r| r.len() - 1).collect();
    let tree = RTree::bulk_load(segs);
    for s in tree.iter() {
        for t in tree.locate_in_envelope_intersecting(&s.envelope()) {
            // Each pair once.
            if (t.ring, t.idx) <= (s.ring, s.idx) {
                continue;
            }
            let Some(x) = line_intersection(s.line, t.line) else {
                continue;
            };
            if s.ring == t.ring {
                let n = ring_len[s.ring];
                let adjacent = t.idx == s.idx + 1 || (s.idx == 0 && t.idx == n - 1);
                // Neighbours meet at their shared corner; anything more (an overlap, a spike
                // folding back) is a self-intersection.
                if adjacent && matches!(x, LineIntersection::SinglePoint { .. }) {
                    continue;
                }
                let at = intersection_point(&x);
                return Err(GeofenceError::SelfIntersection {
                    ring: RingRef {
                        polygon,
                        ring: s.ring,
                    },
                    lon: at.x,
                    lat: at.y,
                });
            }
            // A hole may touch the exterior (or another hole) at a point, not cross it.
            let crossing = match x {
                LineIntersection::SinglePoint { is_proper, .. } => is_proper,
                LineIntersection::Collinear { intersection } => {
                    intersection.start != intersection.end
                }
            };
            if crossing {
                let at = intersection_point(&x);
                return Err(GeofenceError::RingsCross {
                    a: RingRef {
                        polygon,
                        ring: s.ring,
                    },
                    b: RingRef {
                        polygon,
                        ring: t.ring,
                    },
                    lon: at.x,
                    lat: at.y,
                });
            }
        }
    }
    Ok(())
}

fn intersection_point(x: &LineIntersection<f64>) -> Coord<f64> {
    match x {
        LineIntersection::SinglePoint { intersection, .. } => *intersection,
        LineIntersection::Collinear { intersection } => intersection.start,
    }
}

/// Where a position stands relative to a fence.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Placement {
    /// Strictly inside (a point on the boundary is not inside).
    Inside,
    /// Outside by this many metres (0 on the boundary).
    Outside(f64),
    /// Outside, distance not computed (asked for containment only).
    OutsideUnmeasured,
}

/// The compiled fence. `Send + Sync`; lives behind an `Arc` in [`Geofence`].
pub struct FenceIndex {
    shape: Shape,
    tag: u64,
    source: Box<str>,
}

#[allow(clippy::large_enum_variant)] // one per fence, behind an Arc: inline saves a pointer chase
enum Shape {
    Circle { center: Point<f64>, radius_m: f64 },
    Area(AreaIndex),
}

impl FenceIndex {
    fn kind_name(&self) -> &'static str {
        match self.shape {
            Shape::Circle { .. } => "circle",
            Shape::Area(_) => "polygon",
        }
    }

    /// Is `(lon, lat)` inside the fence proper?
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        match &self.shape {
            Shape::Circle { center, radius_m } => {
                Haversine.distance(*center, Point::new(lon, lat)) <= *radius_m
            }
            Shape::Area(a) => a.contains(lon, lat),
        }
    }

    /// Inside, or how far outside. With `measure == false` an outside point is not measured,
    /// which is all the rules need once a device is already known to be outside.
    pub fn locate(&self, lon: f64, lat: f64, measure: bool) -> Placement {
        match &self.shape {
            Shape::Circle { center, radius_m } => {
                let d = Haversine.distance(*center, Point::new(lon, lat));
                if d <= *radius_m {
                    Placement::Inside
                } else {
                    Placement::Outside(d - radius_m)
                }
            }
            Shape::Area(a) => {
                if a.contains(lon, lat) {
                    Placement::Inside
                } else if measure {
                    Placement::Outside(a.distance_m(lon, lat))
                } else {
                    Placement::OutsideUnmeasured
                }
            }
        }
    }

    /// Metres from `(lon, lat)` to the fence, 0 when inside.
    pub fn distance_outside_m(&self, lon: f64, lat: f64) -> f64 {
        match self.locate(lon, lat, true) {
            Placement::Outside(d) => d,
            _ => 0.0,
        }
    }
}

/// A boundary segment in the fence's scaled plane (x = lon · cos(lat0), y = lat), where degrees
/// are roughly isotropic so that "nearest" in the R-tree is nearest on the ground.
struct Seg {
    a: [f64; 2],
    b: [f64; 2],
}

impl Seg {
    fn closest(&self, p: &[f64; 2]) -> [f64; 2] {
        let (dx, dy) = (self.b[0] - self.a[0], self.b[1] - self.a[1]);
        let len2 = dx * dx + dy * dy;
        let t = if len2 > 0.0 {
            (((p[0] - self.a[0]) * dx + (p[1] - self.a[1]) * dy) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        [self.a[0] + t * dx, self.a[1] + t * dy]
    }
}

impl RTreeObject for Seg {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_corners(self.a, self.b)
    }
}

impl PointDistance for Seg {
    fn distance_2(&self, p: &[f64; 2]) -> f64 {
        let c = self.closest(p);
        let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
        dx * dx + dy * dy
    }
}

/// Polygon fence: an interval tree answers containment in O(log n + k), an R-tree of boundary
/// segments gives the nearest boundary point in O(log n), and the metres are Haversine from the
/// fix to that point (accurate whatever the fence size; the scaled plane only picks the segment).
struct AreaIndex {
    contains: IntervalTreeMultiPolygon<f64>,
    bbox: [f64; 4],
    kx: f64,
    segments: RTree<Seg>,
}

impl AreaIndex {
    fn new(mp: MultiPolygon<f64>) -> Self {
        let mut bbox = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for p in &mp.0 {
            for c in p.exterior().coords() {
                bbox = [
                    bbox[0].min(c.x),
                    bbox[1].min(c.y),
                    bbox[2].max(c.x),
                    bbox[3].max(c.y),
                ];
            }
        }
        let lat0 = (bbox[1] + bbox[3]) / 2.0;
        let kx = lat0.to_radians().cos().max(0.01);
        let mut segs = Vec::new();
        for p in &mp.0 {
            for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
                for l in ring.lines() {
                    segs.push(Seg {
                        a: [l.start.x * kx, l.start.y],
                        b: [l.end.x * kx, l.end.y],
                    });
                }
            }
        }
        AreaIndex {
            contains: IntervalTreeMultiPolygon::new(&mp),
            bbox,
            kx,
            segments: RTree::bulk_load(segs),
        }
    }

    fn contains(&self, lon: f64, lat: f64) -> bool {
        // The bounding box settles most far-away points without touching the tree.
        lon > self.bbox[0]
            && lat > self.bbox[1]
            && lon < self.bbox[2]
            && lat < self.bbox[3]
            && self.contains.contains(&Coord { x: lon, y: lat })
    }

    fn distance_m(&self, lon: f64, lat: f64) -> f64 {
        let q = [lon * self.kx, lat];
        let fix = Point::new(lon, lat);
        let Some(first) = self.segments.nearest_neighbor(&q) else {
            return f64::INFINITY;
        };
        let c = first.closest(&q);
        let d2 = first.distance_2(&q);
        let best = Haversine.distance(fix, Point::new(c[0] / self.kx, c[1]));
        // The scaled plane is exact only at the fence's mid latitude; elsewhere the segment
        // nearest on the ground may be another one, at most `stretch` times farther in the plane.
        // Near the mid latitude (the usual case) that band is empty and one query suffices.
        let reach = d2.sqrt() * 1.01;
        let (lo, hi) = ((lat - reach).max(-89.9), (lat + reach).min(89.9));
        let cos_min = lo.to_radians().cos().min(hi.to_radians().cos()).max(0.01);
        let cos_max = if lo <= 0.0 && hi >= 0.0 {
            1.0
        } else {
            lo.to_radians().cos().max(hi.to_radians().cos())
        };
        let stretch = (cos_max / self.kx).max(1.0) / (cos_min / self.kx).min(1.0);
        if stretch < 1.000_5 {
            return best;
        }
        let mut best = best;
        let r2 = d2 * stretch * stretch;
        for seg in self.segments.locate_within_distance(q, r2) {
            let c = seg.closest(&q);
            best = best.min(Haversine.distance(fix, Point::new(c[0] / self.kx, c[1])));
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
