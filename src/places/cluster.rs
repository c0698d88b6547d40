//! Places: stays grouped by location.
//!
//! Two stays whose centres are within `stay_radius_m` of each other belong to one place, and so,
//! transitively, do their neighbours' neighbours: the connected components of the "within radius"
//! graph. Components do not depend on the order of the stays, unlike greedy "join the nearest
//! place so far" clustering. Pairs are found with a sweep over stays sorted by latitude, so only
//! stays in the same latitude band are compared.

use super::extent::M_PER_DEG;
use super::stay::Stay;
use geo::{Distance, Haversine, Point};

/// Groups of indices into `stays`, each group one place; groups and their members in index order.
pub fn cluster(stays: &[Stay], radius_m: f64) -> Vec<Vec<usize>> {
    let n = stays.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut by_lat: Vec<usize> = (0..n).collect();
    by_lat.sort_by(|&a, &b| stays[a].lat.total_cmp(&stays[b].lat));
    let band_deg = radius_m / M_PER_DEG;
    for (i, &a) in by_lat.iter().enumerate() {
        let pa = Point::new(stays[a].lon, stays[a].lat);
        // Degrees of longitude that span the radius at this latitude (capped near the poles).
        let lon_band = band_deg / stays[a].lat.to_radians().cos().max(1e-6);
        for &b in &by_lat[i + 1..] {
            if stays[b].lat - stays[a].lat > band_deg {
                break;
            }
            // A stay's many visits to one place are joined after the first few: skip them cheaply.
            if dlon_abs(stays[a].lon, stays[b].lon) > lon_band
                || find(&mut parent, a) == find(&mut parent, b)
            {
                continue;
            }
            if Haversine.distance(pa, Point::new(stays[b].lon, stays[b].lat)) <= radius_m {
                union(&mut parent, a, b);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of_root = vec![usize::MAX; n];
    for i in 0..n {
        let r = find(&mut parent, i);
        if group_of_root[r] == usize::MAX {
            group_of_root[r] = groups.len();
            groups.push(Vec::new());
        }
        groups[group_of_root[r]].push(i);
    }
    groups
}

/// |a - b| in degrees of longitude, across the antimeridian too.
fn dlon_abs(a: f64, b: f64) -> f64 {
    let d = (a - b).abs() % 360.0;
    d.min(360.0 - d)
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // The smaller index as root keeps the result independent of the pair order.
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi] = lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::extent::Extent;
    use crate::time::Timestamp;

    fn stay(lat: f64, lon: f64) -> Stay {
        Stay {
            lat,
            lon,
            since: Timestamp(0),
            until: Timestamp(1),
            open: false,
            fixes: 1,
            extent: Extent::default(),
        }
    }

    /// Metres north of (22.5, 114.0), in degrees of latitude.
    fn north(m: f64) -> f64 {
        22.5 + m / M_PER_DEG
    }

    #[test]
    fn stays_within_the_radius_are_one_place_others_are_not() {
        let stays = [
            stay(north(0.0), 114.0),
            stay(north(2000.0), 114.0),
            stay(north(150.0), 114.0),
            stay(north(2100.0), 114.0),
            stay(north(5000.0), 114.0),
        ];
        assert_eq!(
            cluster(&stays, 200.0),
            vec![vec![0, 2], vec![1, 3], vec![4]]
        );
    }

    #[test]
    fn neighbours_of_neighbours_join_whatever_the_order() {
        let a = [
            stay(north(0.0), 114.0),
            stay(north(180.0), 114.0),
            stay(north(360.0), 114.0),
        ];
        assert_eq!(cluster(&a, 200.0), vec![vec![0, 1, 2]]);
        let b = [a[2], a[0], a[1]];
        assert_eq!(cluster(&b, 200.0), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn same_latitude_far_apart_in_longitude_stay_apart() {
        let stays = [stay(22.5, 114.0), stay(22.5, 114.01), stay(22.5, 114.0005)];
        assert_eq!(cluster(&stays, 200.0), vec![vec![0, 2], vec![1]]);
    }

    #[test]
    fn no_stays_no_places() {
        assert!(cluster(&[], 200.0).is_empty());
    }
}
