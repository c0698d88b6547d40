//! The compiled fence: point-in-fence and distance-outside in well under a microsecond,
//! whatever the fence size.

use geo::indexed::IntervalTreeMultiPolygon;
use geo::{Contains, Coord, Distance, Haversine, MultiPolygon, Point};
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

/// Polygon fence: an interval tree answers containment in O(log n + k), an R-tree of boundary
/// segments gives the nearest boundary point in O(log n), and the metres are Haversine from the
/// fix to that point (accurate whatever the fence size; the scaled plane only picks the segment).
pub(super) struct AreaIndex {
    contains: IntervalTreeMultiPolygon<f64>,
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
