//! Property tests for places: random lives (parked, driving, jumping, invalid and LBS fixes,
//! anywhere on earth) keep the output's invariants; how two devices' fixes with equal times are
//! interleaved does not change the result; the live tracker and the batch agree; garbage input
//! never panics.

use lienwatch::places::synthetic::Spot;
use lienwatch::places::{places, stays, Fix, Params, PlaceKind, StayTracker};
use lienwatch::time::Timestamp;
use proptest::prelude::*;
use std::time::Duration;

const T0: i64 = 1_793_548_800_000;

#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// Stay near the current spot (metres of noise).
    Park(f64),
    /// Move this far, east and north.
    Drive(f64, f64),
    /// One fix this far off, the car not moving.
    Jump(f64, f64),
    Invalid,
    Lbs,
}

pub(crate) fn step() -> impl Strategy<Value = (u32, Step)> {
    let dt = prop_oneof![1u32..60, 60u32..3600, 3600u32..40_000];
    let s = prop_oneof![
        6 => (0.0f64..40.0).prop_map(Step::Park),
        3 => (-3000.0f64..3000.0, -3000.0f64..3000.0).prop_map(|(x, y)| Step::Drive(x, y)),
        1 => (-1500.0f64..1500.0, -1500.0f64..1500.0).prop_map(|(x, y)| Step::Jump(x, y)),
        1 => Just(Step::Invalid),
        1 => Just(Step::Lbs),
    ];
    (dt, s)
}

/// Fixes in strictly increasing time from a start spot and steps.
pub(crate) fn live(start: Spot, steps: &[(u32, Step)]) -> Vec<Fix> {
    let mut t = T0;
    let mut at = start;
    let mut out = Vec::new();
    for (i, (dt, s)) in steps.iter().enumerate() {
        t += i64::from(*dt) * 1000;
        let (p, valid, lbs) = match *s {
            Step::Park(n) => {
                let a = i as f64;
                (at.offset(n * a.cos(), n * a.sin()), true, false)
            }
            Step::Drive(x, y) => {
                at = at.offset(x, y);
                (at, true, false)
            }
            Step::Jump(x, y) => (at.offset(x, y), true, false),
            Step::Invalid => (Spot { lat: 0.0, lon: 0.0 }, false, false),
            Step::Lbs => (at.offset(900.0, 0.0), true, true),
        };
        // Keep coordinates on earth, as the decoders do.
        let lat = p.lat.clamp(-89.9, 89.9);
        let lon = (p.lon + 180.0).rem_euclid(360.0) - 180.0;
        out.push(Fix {
            time: Timestamp(t),
            lat,
            lon,
            valid,
            lbs,
        });
    }
    out
}

fn params(radius: f64, min_s: u64, tz: &str) -> Params {
    Params::from_rules(radius, Duration::from_secs(min_s), tz).expect("valid params")
}

pub(crate) fn spot() -> impl Strategy<Value = Spot> {
    (-80.0f64..80.0, -180.0f64..180.0).prop_map(|(lat, lon)| Spot { lat, lon })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn output_invariants_hold(
        start in spot(),
        steps in prop::collection::vec(step(), 0..300),
        radius in 50.0f64..500.0,
        min_s in 60u64..7200,
        tz in prop::sample::select(vec!["UTC", "Asia/Shanghai", "Europe/Berlin", "America/Sao_Paulo"]),
        after_s in 0i64..200_000,
    ) {
        let fixes = live(start, &steps);
        let now = Timestamp(fixes.last().map_or(T0, |f| f.time.millis()) + after_s * 1000);
        let p = params(radius, min_s, tz);
        let s = stays(fixes.iter().copied(), now, &p);
        for w in s.windows(2) {
            prop_assert!(w[0].until <= w[1].since, "overlap {:?}", w);
            prop_assert!(!w[0].open);
        }
        for st in &s {
            prop_assert!(st.since <= st.until && st.until <= now);
            prop_assert!(st.duration_ms() >= (min_s * 1000) as i64);
            prop_assert!(st.lat.is_finite() && st.lon.is_finite());
        }
        let out = places(fixes.iter().copied(), now, &p);
        prop_assert_eq!(out.places.iter().map(|q| q.visits as usize).sum::<usize>(), s.len());
        for w in out.places.windows(2) {
            prop_assert!(w[0].dwell_hours >= w[1].dwell_hours);
        }
        for q in &out.places {
            prop_assert!(q.visits >= 1);
            prop_assert!(q.night_hours <= q.dwell_hours, "{:?}", q);
            prop_assert!(q.night_hours >= 0.0);
            match q.kind {
                PlaceKind::Night => prop_assert!(q.night_hours + 0.1 >= q.dwell_hours / 2.0),
                PlaceKind::Day => prop_assert!(q.night_hours <= q.dwell_hours / 2.0 + 0.1),
            }
            prop_assert!(q.last_left.is_none_or(|l| l <= now));
            prop_assert!((-90.0..=90.0).contains(&q.lat) && (-180.0..=180.0).contains(&q.lon));
        }
        match (&out.last_stop, s.last()) {
            (None, None) => {}
            (Some(l), Some(st)) => prop_assert_eq!(l.since, st.since),
            (a, b) => prop_assert!(false, "last_stop {:?} vs last stay {:?}", a, b),
        }
    }

    #[test]
    fn the_live_tracker_and_the_batch_agree(
        start in spot(),
        steps in prop::collection::vec(step(), 0..200),
        after_s in 0i64..100_000,
    ) {
        let fixes = live(start, &steps);
        let now = Timestamp(fixes.last().map_or(T0, |f| f.time.millis()) + after_s * 1000);
        let p = params(200.0, 1200, "UTC");
        let mut t = StayTracker::new(200.0, Duration::from_secs(1200));
        let mut live_stays: Vec<_> = fixes.iter().filter_map(|f| t.push(f)).collect();
        t.finish(now, |s| live_stays.push(s));
        prop_assert_eq!(live_stays, stays(fixes.iter().copied(), now, &p));
    }

    /// Two devices in one car report at the same instants; the merge may put either first.
    #[test]
    fn interleaving_of_equal_times_does_not_matter(
        start in spot(),
        a in prop::collection::vec(step(), 1..150),
        b_jumps in prop::collection::vec(prop::option::weighted(0.8, (-2000.0f64..2000.0, -2000.0f64..2000.0)), 150),
        order in prop::collection::vec(any::<bool>(), 150),
    ) {
        let da = live(start, &a);
        // The second device: at the first one's positions give or take, or somewhere else.
        let db: Vec<Fix> = da.iter().zip(&b_jumps).map(|(f, j)| {
            let (x, y) = j.map_or((3000.0, 0.0), |(x, y)| (x.clamp(-30.0, 30.0), y.clamp(-30.0, 30.0)));
            let s = Spot { lat: f.lat, lon: f.lon }.offset(x, y);
            Fix { lat: s.lat.clamp(-89.9, 89.9), lon: (s.lon + 180.0).rem_euclid(360.0) - 180.0, valid: true, lbs: false, ..*f }
        }).collect();
        let merged = |flip: &dyn Fn(usize) -> bool| -> Vec<Fix> {
            da.iter().zip(&db).enumerate().flat_map(|(i, (x, y))| if flip(i) { [*y, *x] } else { [*x, *y] }).collect()
        };
        let p = params(200.0, 1200, "Asia/Shanghai");
        let now = Timestamp(da.last().map_or(T0, |f| f.time.millis()) + 3_600_000);
        let one = places(merged(&|_| false), now, &p);
        let other = places(merged(&|i| order[i % order.len()]), now, &p);
        prop_assert_eq!(one, other);
    }

    #[test]
    fn garbage_never_panics(
        // Fix times in any order over a year (the endpoint asks for days, at most months, of
        // history; the night split costs one step per day a stay spans).
        raw in prop::collection::vec((T0..T0 + 366 * 86_400_000, any::<f64>(), any::<f64>(), any::<bool>(), any::<bool>()), 0..200),
        now in T0 - 86_400_000..T0 + 400 * 86_400_000,
        radius in prop_oneof![Just(0.001), 1.0f64..1e7],
        min_s in 0u64..1_000_000,
    ) {
        let fixes: Vec<Fix> = raw.iter().map(|&(t, lat, lon, valid, lbs)| Fix {
            time: Timestamp(t), lat, lon, valid, lbs,
        }).collect();
        let p = params(radius, min_s, "Europe/Berlin");
        let _ = places(fixes.iter().copied(), Timestamp(now), &p);
        let mut sorted = fixes;
        sorted.sort_by_key(|f| f.time);
        let _ = places(sorted, Timestamp(now), &p);
    }
}
