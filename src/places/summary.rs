//! From stays to places: grouped, measured, ordered.

use super::cluster::cluster;
use super::extent::{dlon, Extent, M_PER_DEG};
use super::night::night_ms;
use super::stay::Stay;
use super::view::{round_coord, round_hours, LastStop, Place, PlaceKind, Places};
use super::Params;

/// `stays` in time order, as [`super::stays`] returns them.
pub fn summarise(stays: &[Stay], params: &Params) -> Places {
    let mut places: Vec<(i64, Place)> = cluster(stays, params.stay_radius_m)
        .iter()
        .map(|members| place(stays, members, params))
        .collect();
    places.sort_by(|(da, a), (db, b)| {
        db.cmp(da)
            .then(b.last_arrived.cmp(&a.last_arrived))
            .then(a.lat.total_cmp(&b.lat))
            .then(a.lon.total_cmp(&b.lon))
    });
    let last_stop = stays.iter().max_by_key(|s| s.since).map(|s| LastStop {
        lat: round_coord(s.lat),
        lon: round_coord(s.lon),
        since: s.since,
        dwell_hours: round_hours(s.duration_ms()),
    });
    Places {
        places: places.into_iter().map(|(_, p)| p).collect(),
        last_stop,
    }
}

/// One place from its stays (`members`, never empty); with its dwell in ms, for ordering.
fn place(stays: &[Stay], members: &[usize], params: &Params) -> (i64, Place) {
    let first = &stays[members[0]];
    let (lat0, lon0) = (first.lat, first.lon);
    let mx = M_PER_DEG * lat0.to_radians().cos();
    // Offsets of each stay's centre from the first one's, in metres east and north.
    let offset = |s: &Stay| (dlon(s.lon, lon0) * mx, (s.lat - lat0) * M_PER_DEG);

    let (mut dwell, mut night, mut w, mut wx, mut wy) = (0i64, 0i64, 0.0, 0.0, 0.0);
    let mut last_arrived = first.since;
    let mut last_left = None;
    for s in members.iter().map(|&i| &stays[i]) {
        let ms = s.duration_ms();
        dwell += ms;
        night += night_ms(s.since, s.until, &params.timezone);
        let weight = ms.max(1) as f64;
        let (x, y) = offset(s);
        w += weight;
        wx += weight * x;
        wy += weight * y;
        last_arrived = last_arrived.max(s.since);
        if !s.open {
            last_left = last_left.max(Some(s.until));
        }
    }
    let (cx, cy) = (wx / w, wy / w);
    let extent = members.iter().fold(Extent::default(), |acc, &i| {
        let (x, y) = offset(&stays[i]);
        acc.merge(stays[i].extent.moved_origin(cx - x, cy - y))
    });
    let lat = lat0 + cy / M_PER_DEG;
    let lon = dlon(lon0 + if mx > 0.0 { cx / mx } else { 0.0 }, 0.0);
    let place = Place {
        lat: round_coord(lat),
        lon: round_coord(lon),
        radius_m: extent.radius().ceil().min(u32::MAX as f64) as u32,
        visits: members.len() as u32,
        dwell_hours: round_hours(dwell),
        night_hours: round_hours(night),
        kind: if night * 2 >= dwell {
            PlaceKind::Night
        } else {
            PlaceKind::Day
        },
        last_arrived,
        last_left,
    };
    (dwell, place)
}
