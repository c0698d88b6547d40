//! The compiled fence: point-in-fence and distance-outside in well under a microsecond,
//! whatever the fence size.

use geo::indexed::IntervalTreeMultiPolygon;
use geo::{Contains, Coord, Distance, GeoNum, Haversine, Kernel, MultiPolygon, Orientation, Point};
use rstar::{PointDistance, RTree, RTreeObject, AABB};

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
    pub(super) shape: Shape,
    pub(super) tag: u64,
    pub(super) source: Box<serde_json::value::RawValue>,
}

#[allow(clippy::large_enum_variant)] // one per fence, behind an Arc: inline saves a pointer chase
pub(super) enum Shape {
    Circle { center: Point<f64>, radius_m: f64 },
    Area(AreaIndex),
}

impl FenceIndex {
    pub(super) fn kind_name(&self) -> &'static str {
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

    /// Asks the cache for what [`FenceIndex::contains`] reads beyond this object (a small
    /// polygon's rings), once this object itself is at hand.
    pub(super) fn prefetch_shape(&self) {
        if let Shape::Area(a) = &self.shape {
            a.prefetch_rings();
        }
    }

    /// Whether [`FenceIndex::prefetch_shape`] has anything to ask for.
    pub(super) fn has_flat_rings(&self) -> bool {
        matches!(&self.shape, Shape::Area(a) if matches!(a.contains, Containment::Flat(_)))
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

    /// `[min_lon, min_lat, max_lon, max_lat]` holding the whole fence (a circle's box is a
    /// little generous): what a spatial index of many fences files this one under.
    pub fn bbox(&self) -> [f64; 4] {
        match &self.shape {
            Shape::Area(a) => a.bbox,
            Shape::Circle { center, radius_m } => {
                // Haversine's mean radius: metres per degree of latitude, 0.1% to spare.
                let dlat = radius_m / 111_195.0 * 1.001;
                let (lon, lat) = (center.x(), center.y());
                let edge = (lat.abs() + dlat).min(90.0);
                let cos = edge.to_radians().cos();
                let dlon = if edge >= 89.999 || cos < 1e-9 {
                    360.0
                } else {
                    dlat / cos
                };
                [
                    (lon - dlon).max(-180.0),
                    (lat - dlat).max(-90.0),
                    (lon + dlon).min(180.0),
                    (lat + dlat).min(90.0),
                ]
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

/// A fence of at most this many coordinates (all rings together) is tested ring by ring rather
/// than through an interval tree: 512 bytes, which [`crate::prefetch::object`] asks for whole.
const FLAT_RINGS_MAX: usize = 32;

/// How a polygon fence answers "inside?".
enum Containment {
    /// Every ring's coordinates, closed, one after the other with a NaN coordinate between
    /// rings: a small fence is one allocation that the engine asks for ahead of the fix
    /// (`FenceIndex::prefetch_shape`), where a tree is a pointer chase per level.
    Flat(Box<[Coord<f64>]>),
    Tree(IntervalTreeMultiPolygon<f64>),
}

/// The winding number over every segment of every ring, with the rules the interval tree
/// applies to the segments it finds (an upward edge counts its start, a downward edge its end,
/// horizontal edges none, a point on any edge is on the boundary, orientation by geo's robust
/// kernel). The tree only skips segments that cannot count, so both answer alike; the tests
/// check that, boundary points included.
fn flat_contains(coords: &[Coord<f64>], p: Coord<f64>) -> bool {
    let on_edge = |a: Coord<f64>, b: Coord<f64>| p.x >= a.x.min(b.x) && p.x <= a.x.max(b.x);
    let mut winding = 0i32;
    for w in coords.windows(2) {
        let (a, b) = (w[0], w[1]);
        // The NaN between rings ends one ring and starts the next: no segment joins them.
        if a.x.is_nan() || b.x.is_nan() {
            continue;
        }
        if a.y <= p.y {
            if b.y >= p.y {
                let o = <f64 as GeoNum>::Ker::orient2d(a, b, p);
                if o == Orientation::CounterClockwise && b.y != p.y {
                    winding += 1;
                } else if o == Orientation::Collinear && on_edge(a, b) {
                    return false;
                }
            }
        } else if b.y <= p.y {
            let o = <f64 as GeoNum>::Ker::orient2d(a, b, p);
            if o == Orientation::Clockwise {
                winding -= 1;
            } else if o == Orientation::Collinear && on_edge(a, b) {
                return false;
            }
        }
    }
    winding != 0
}

/// Polygon fence: containment by winding number, over the rings themselves for a small fence
/// and through an interval tree (O(log n + k)) for a large one; an R-tree of boundary segments
/// gives the nearest boundary point in O(log n), and the metres are Haversine from the fix to
/// that point (accurate whatever the fence size; the scaled plane only picks the segment).
pub(super) struct AreaIndex {
    contains: Containment,
    bbox: [f64; 4],
    kx: f64,
    segments: RTree<Seg>,
}

impl AreaIndex {
    pub(super) fn new(mp: MultiPolygon<f64>) -> Self {
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
        let rings = || {
            mp.0.iter()
                .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
        };
        // Each ring and the NaN before it, but the first.
        let coords = rings()
            .map(|r| r.0.len() + 1)
            .sum::<usize>()
            .saturating_sub(1);
        let contains = if coords <= FLAT_RINGS_MAX {
            let nan = Coord {
                x: f64::NAN,
                y: f64::NAN,
            };
            let mut flat = Vec::with_capacity(coords);
            for r in rings() {
                if !flat.is_empty() {
                    flat.push(nan);
                }
                flat.extend_from_slice(&r.0);
            }
            Containment::Flat(flat.into_boxed_slice())
        } else {
            Containment::Tree(IntervalTreeMultiPolygon::new(&mp))
        };
        AreaIndex {
            contains,
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
            && match &self.contains {
                Containment::Flat(rings) => flat_contains(rings, Coord { x: lon, y: lat }),
                Containment::Tree(t) => t.contains(&Coord { x: lon, y: lat }),
            }
    }

    /// Asks the cache for a small fence's rings (a tree is left alone: its nodes are many).
    pub(super) fn prefetch_rings(&self) {
        if let Containment::Flat(rings) = &self.contains {
            crate::prefetch::object(&rings[..]);
        }
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
    use geo::{LineString, Polygon};
    use proptest::prelude::*;

    /// Rings on a half-unit grid, so that vertices and edge midpoints (points on the boundary)
    /// are exact; closed, but not necessarily simple: the two answers must agree on any rings.
    fn ring() -> impl Strategy<Value = Vec<Coord<f64>>> {
        prop::collection::vec((-8i32..=8, -8i32..=8), 3..=9).prop_map(|pts| {
            let mut r: Vec<Coord<f64>> = pts
                .into_iter()
                .map(|(x, y)| Coord {
                    x: f64::from(x) / 2.0,
                    y: f64::from(y) / 2.0,
                })
                .collect();
            r.push(r[0]);
            r
        })
    }

    fn multipolygon() -> impl Strategy<Value = MultiPolygon<f64>> {
        prop::collection::vec((ring(), prop::collection::vec(ring(), 0..=1)), 1..=2).prop_map(
            |polys| {
                MultiPolygon(
                    polys
                        .into_iter()
                        .map(|(ext, holes)| {
                            Polygon::new(
                                LineString::new(ext),
                                holes.into_iter().map(LineString::new).collect(),
                            )
                        })
                        .collect(),
                )
            },
        )
    }

    proptest! {
        /// The flat test answers as the interval tree did, at grid points, at every vertex and
        /// at every edge's midpoint and quarter points.
        #[test]
        fn flat_rings_answer_as_the_interval_tree(mp in multipolygon(), grid in prop::collection::vec((-10i32..=10, -10i32..=10), 20)) {
            let area = AreaIndex::new(mp.clone());
            prop_assume!(matches!(area.contains, Containment::Flat(_)));
            let tree = IntervalTreeMultiPolygon::new(&mp);
            let mut points: Vec<Coord<f64>> = grid
                .into_iter()
                .map(|(x, y)| Coord { x: f64::from(x) / 4.0, y: f64::from(y) / 4.0 })
                .collect();
            for p in &mp.0 {
                for r in std::iter::once(p.exterior()).chain(p.interiors()) {
                    for l in r.lines() {
                        points.push(l.start);
                        for t in [0.25, 0.5, 0.75] {
                            points.push(l.start + (l.end - l.start) * t);
                        }
                    }
                }
            }
            for p in points {
                let inside_box = p.x > area.bbox[0]
                    && p.y > area.bbox[1]
                    && p.x < area.bbox[2]
                    && p.y < area.bbox[3];
                prop_assert_eq!(
                    area.contains(p.x, p.y),
                    inside_box && tree.contains(&p),
                    "at {:?}", p
                );
            }
        }
    }

    #[test]
    fn small_fences_are_flat_and_large_ones_a_tree() {
        let ring = |n: usize| {
            let mut r: Vec<Coord<f64>> = (0..n)
                .map(|i| {
                    let a = i as f64 / n as f64 * std::f64::consts::TAU;
                    Coord {
                        x: a.cos(),
                        y: a.sin(),
                    }
                })
                .collect();
            r.push(r[0]);
            MultiPolygon(vec![Polygon::new(LineString::new(r), vec![])])
        };
        // 31 vertices and the closing one: 32 coordinates, the most kept flat.
        for (n, flat) in [(31, true), (32, false)] {
            let a = AreaIndex::new(ring(n));
            assert_eq!(matches!(a.contains, Containment::Flat(_)), flat, "{n}");
            assert!(a.contains(0.0, 0.0));
            assert!(!a.contains(0.999_9, 0.999_9));
        }
    }
}
