//! The area a set of fixes covers, kept in constant space while fixes stream in.
//!
//! A place's `radius_m` must cover its fixes, but the batch pass keeps no fixes. An octagon (the
//! point set's extreme projections on eight directions) costs eight numbers, merges across stays
//! by taking maxima, and its farthest vertex over-states the true covering radius by at most 8 %
//! (1 / cos 22.5°), where a bounding box could over-state it by 41 %.

/// Metres per degree of latitude (and of longitude at the equator), on the mean earth radius
/// that `geo::Haversine` uses.
pub(crate) const M_PER_DEG: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;

/// Longitude difference `a - b` in (-180, 180], so that a spot on the antimeridian has one centre.
pub(crate) fn dlon(a: f64, b: f64) -> f64 {
    let d = a - b;
    if d > 180.0 {
        d - 360.0
    } else if d <= -180.0 {
        d + 360.0
    } else {
        d
    }
}

const S: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// Unit vectors every 45°, counter-clockwise from east.
const DIRS: [(f64, f64); 8] = [
    (1.0, 0.0),
    (S, S),
    (0.0, 1.0),
    (-S, S),
    (-1.0, 0.0),
    (-S, -S),
    (0.0, -1.0),
    (S, -S),
];

/// Support values of a point set in a local east/north frame (metres from some origin): for each
/// direction, the largest projection of any point on it. Empty while all are `-inf`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Extent([f64; 8]);

impl Default for Extent {
    fn default() -> Self {
        Extent([f64::NEG_INFINITY; 8])
    }
}

impl Extent {
    /// Adds a point `(x, y)` metres east and north of the frame's origin.
    #[inline]
    pub fn add(&mut self, x: f64, y: f64) {
        for (h, (ux, uy)) in self.0.iter_mut().zip(DIRS) {
            *h = h.max(x * ux + y * uy);
        }
    }

    /// The same points seen from an origin `(dx, dy)` metres from the current one.
    pub fn moved_origin(self, dx: f64, dy: f64) -> Extent {
        let mut h = self.0;
        for (h, (ux, uy)) in h.iter_mut().zip(DIRS) {
            *h -= dx * ux + dy * uy;
        }
        Extent(h)
    }

    /// The union of two extents in the same frame.
    pub fn merge(self, other: Extent) -> Extent {
        let mut h = self.0;
        for (a, b) in h.iter_mut().zip(other.0) {
            *a = a.max(b);
        }
        Extent(h)
    }

    /// A radius around the frame's origin that covers every point added: the distance to the
    /// octagon's farthest vertex. 0 when empty.
    pub fn radius(&self) -> f64 {
        if self.0.iter().any(|h| !h.is_finite()) {
            return 0.0;
        }
        let mut r2: f64 = 0.0;
        for (k, &(ck, sk)) in DIRS.iter().enumerate() {
            let j = (k + 1) % 8;
            let (cj, sj) = DIRS[j];
            let (hk, hj) = (self.0[k], self.0[j]);
            // Intersection of the support lines k and k+1 (their determinant is sin 45°).
            let x = (hk * sj - hj * sk) / S;
            let y = (ck * hj - cj * hk) / S;
            r2 = r2.max(x * x + y * y);
        }
        r2.sqrt()
    }
}

/// What a stay keeps of the area its fixes cover. The places computation needs the octagon (a
/// place's radius); the live `long_stay` rule only needs to know whether a fix is at the spot,
/// and keeping eight numbers it never reads would cost each vehicle's state a cache line.
pub trait Cover:
    Copy + Default + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned
{
    fn add(&mut self, x: f64, y: f64);
    /// The octagon, or an empty one if none is kept.
    fn extent(&self) -> Extent;
}

impl Cover for Extent {
    #[inline]
    fn add(&mut self, x: f64, y: f64) {
        Extent::add(self, x, y)
    }

    fn extent(&self) -> Extent {
        *self
    }
}

/// No cover kept. Stored as an empty [`Extent`], so that a tracker's stored form is the same
/// with or without one (states written before either read back).
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub struct NoCover;

impl Cover for NoCover {
    #[inline]
    fn add(&mut self, _: f64, _: f64) {}

    fn extent(&self) -> Extent {
        Extent::default()
    }
}

impl serde::Serialize for NoCover {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Extent::default().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for NoCover {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Extent::deserialize(d).map(|_| NoCover)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_at_the_origin_has_radius_zero() {
        let mut e = Extent::default();
        assert_eq!(e.radius(), 0.0);
        e.add(0.0, 0.0);
        assert!(e.radius() < 1e-9);
    }

    #[test]
    fn a_circle_of_points_is_covered_within_eight_percent() {
        let mut e = Extent::default();
        for i in 0..360 {
            let a = (i as f64).to_radians() + 0.1;
            e.add(100.0 * a.cos(), 100.0 * a.sin());
        }
        let r = e.radius();
        assert!((100.0..=108.3).contains(&r), "{r}");
    }

    #[test]
    fn moving_the_origin_and_merging_cover_both_sets() {
        // Points at (0,0) and (300,0) in frame A; frame B's origin is A's (150,0).
        let mut a = Extent::default();
        a.add(0.0, 0.0);
        let mut b = Extent::default();
        b.add(150.0, 0.0);
        let merged = a.moved_origin(150.0, 0.0).merge(b);
        let r = merged.radius();
        assert!((150.0..=162.5).contains(&r), "{r}");
    }
}
