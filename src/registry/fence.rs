//! Geofences: GeoJSON Polygon, MultiPolygon or Circle, validated (closed rings, coordinates in
//! range, no self-intersection) and compiled once into a [`FenceIndex`].

use super::fence_index::{AreaIndex, FenceIndex, Shape};
use geo::algorithm::line_intersection::{line_intersection, LineIntersection};
use geo::orient::Direction;
use geo::{Coord, Line, LineString, MultiPolygon, Orient, Point, Polygon};
use rstar::{RTree, RTreeObject, AABB};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

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
    #[error("{ring} position {index} needs [lon, lat] or [lon, lat, altitude], got {len} numbers")]
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
    #[error("{hole} lies outside its polygon's exterior ring")]
    HoleOutside { hole: RingRef },
    #[error("{a} and {b} overlap (a hole inside a hole)")]
    HolesOverlap { a: RingRef, b: RingRef },
    #[error("circle center: {0}")]
    BadCenter(CoordProblem),
    #[error("circle radius_m must be a finite number above 0 and at most {MAX_RADIUS_M} (1,000 km), got {0}")]
    BadRadius(f64),
}

/// The largest circle accepted: a bigger one is a typo (and would never alert).
pub const MAX_RADIUS_M: f64 = 1_000_000.0;

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

/// A validated geofence: the GeoJSON as given (echoed back) plus its compiled index.
///
/// The source is kept as compact JSON text, not a `serde_json::Value`: a parsed value costs
/// several times the text (a 5,000-vertex ring: about 600 KB against 200 KB), and it is only
/// needed to echo the fence back.
#[derive(Clone)]
pub struct Geofence {
    index: Arc<FenceIndex>,
    /// The compiled fence keeps rings apart from itself ([`Geofence::prefetch_shape`]): known
    /// here, beside the vehicle's other fields, so that the engine's prefetch need not look the
    /// vehicle up again for a fence that has none.
    flat_rings: bool,
}

impl PartialEq for Geofence {
    fn eq(&self, other: &Self) -> bool {
        self.index.tag == other.index.tag && self.index.source.get() == other.index.source.get()
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
                if !c.radius_m.is_finite() || c.radius_m <= 0.0 || c.radius_m > MAX_RADIUS_M {
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
        // Validated once here, off the engine thread; copies of it are then plain memcpys.
        let raw = serde_json::value::RawValue::from_string(text.clone())
            .map_err(|e| GeofenceError::Malformed(e.to_string()))?;
        let tag = fnv1a(text.as_bytes());
        let index = Arc::new(FenceIndex {
            shape,
            tag,
            source: raw,
        });
        Ok(Geofence {
            flat_rings: index.has_flat_rings(),
            index,
        })
    }

    /// The GeoJSON as the API was given it.
    pub fn source(&self) -> serde_json::Value {
        serde_json::from_str(self.index.source.get()).unwrap_or(serde_json::Value::Null)
    }

    /// The same, as raw JSON: copied, not parsed, so a large fence costs a memcpy.
    pub fn source_raw(&self) -> Box<serde_json::value::RawValue> {
        self.index.source.clone()
    }

    /// The same, as compact JSON text.
    pub fn source_json(&self) -> &str {
        self.index.source.get()
    }

    pub fn index(&self) -> &FenceIndex {
        &self.index
    }

    /// A stable fingerprint of the fence; rule state keeps it to notice that a fence was replaced.
    pub fn tag(&self) -> u64 {
        self.index.tag
    }

    /// Asks the cache for the compiled fence, before a fix is tested against it.
    pub fn prefetch(&self) {
        crate::prefetch::object(&*self.index);
    }

    /// Asks the cache for what the compiled fence points to (a small polygon's rings), one step
    /// after [`Geofence::prefetch`] brought the fence itself.
    pub fn prefetch_shape(&self) {
        self.index.prefetch_shape();
    }

    /// Whether [`Geofence::prefetch_shape`] has anything to ask for; read without touching the
    /// compiled fence.
    pub fn has_flat_rings(&self) -> bool {
        self.flat_rings
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
            if !(2..=3).contains(&s.len()) || s.get(2).is_some_and(|alt| !alt.is_finite()) {
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
    check_holes(&built, polygon)?;
    let mut it = built.into_iter().map(LineString::new);
    let exterior = it.next().unwrap_or_else(|| LineString::new(vec![]));
    // The interval tree counts windings: holes must run against the exterior, whatever
    // orientation the client drew them in (RFC 7946 only recommends one).
    Ok(Polygon::new(exterior, it.collect()).orient(Direction::Default))
}

/// Holes must lie inside their exterior ring and not inside one another (RFC 7946 §3.1.6). Rings
/// are already known not to cross, so one vertex off the other ring's boundary decides.
fn check_holes(rings: &[Vec<Coord<f64>>], polygon: Option<usize>) -> Result<(), GeofenceError> {
    use geo::coordinate_position::{CoordPos, CoordinatePosition};
    let Some((shell, holes)) = rings.split_first() else {
        return Ok(());
    };
    let area = |r: &[Coord<f64>]| Polygon::new(LineString::new(r.to_vec()), vec![]);
    // Where ring `r` stands against polygon `p`: its first vertex not on `p`'s boundary.
    let position = |p: &Polygon<f64>, r: &[Coord<f64>]| {
        r.iter()
            .map(|c| p.coordinate_position(c))
            .find(|pos| *pos != CoordPos::OnBoundary)
            .unwrap_or(CoordPos::OnBoundary)
    };
    let shell = area(shell);
    for (i, h) in holes.iter().enumerate() {
        if position(&shell, h) == CoordPos::Outside {
            return Err(GeofenceError::HoleOutside {
                hole: RingRef {
                    polygon,
                    ring: i + 1,
                },
            });
        }
    }
    if holes.len() > 1 {
        // Only holes whose bounding box holds another hole's vertex can contain it: an R-tree of
        // the boxes keeps a fence with thousands of holes near-linear.
        use rstar::primitives::{GeomWithData, Rectangle};
        let boxes: Vec<GeomWithData<Rectangle<[f64; 2]>, usize>> = holes
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (lo, hi) = h.iter().fold(
                    ([f64::MAX, f64::MAX], [f64::MIN, f64::MIN]),
                    |(lo, hi), c| {
                        (
                            [lo[0].min(c.x), lo[1].min(c.y)],
                            [hi[0].max(c.x), hi[1].max(c.y)],
                        )
                    },
                );
                GeomWithData::new(Rectangle::from_corners(lo, hi), i)
            })
            .collect();
        let tree = RTree::bulk_load(boxes);
        for (j, h) in holes.iter().enumerate() {
            let Some(v) = h.first() else { continue };
            for cand in tree.locate_all_at_point(&[v.x, v.y]) {
                let i = cand.data;
                if i != j && position(&area(&holes[i]), h) == CoordPos::Inside {
                    return Err(GeofenceError::HolesOverlap {
                        a: RingRef {
                            polygon,
                            ring: i + 1,
                        },
                        b: RingRef {
                            polygon,
                            ring: j + 1,
                        },
                    });
                }
            }
        }
    }
    Ok(())
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
