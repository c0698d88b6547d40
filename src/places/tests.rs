//! The stay and place rules, one test per rule, and the synthetic life end to end.

use super::synthetic::{daily_reports, life, LifeConfig, Spot};
use super::*;
use geo::{Distance, Haversine, Point};

const MIN: i64 = 60_000;
const HOME: Spot = Spot {
    lat: 22.543096,
    lon: 114.057865,
};

/// Local midnight, Monday 2 November 2026, Asia/Shanghai.
fn t0() -> Timestamp {
    Timestamp::from_secs(1_793_577_600 - 8 * 3600)
}

fn at(min: i64) -> Timestamp {
    t0().add_millis(min * MIN)
}

fn params() -> Params {
    Params::from_rules(200.0, Duration::from_secs(20 * 60), "Asia/Shanghai").unwrap()
}

fn fix(min: i64, s: Spot) -> Fix {
    Fix {
        time: at(min),
        lat: s.lat,
        lon: s.lon,
        valid: true,
        lbs: false,
    }
}

/// Fixes at `s` (with a few metres of alternating noise) every `every` minutes in `[from, to]`.
fn parked(s: Spot, from: i64, to: i64, every: i64) -> Vec<Fix> {
    let mut v = Vec::new();
    let mut m = from;
    let mut i = 0;
    while m <= to {
        let d = if i % 2 == 0 { 15.0 } else { -15.0 };
        v.push(fix(m, s.offset(d, -d)));
        m += every;
        i += 1;
    }
    if v.last().is_some_and(|f| f.time != at(to)) {
        v.push(fix(to, s));
    }
    v
}

/// Driving east from `s` for `mins` minutes at 36 km/h, a fix a minute (600 m apart).
fn drive(s: Spot, from: i64, mins: i64) -> Vec<Fix> {
    (1..=mins)
        .map(|i| fix(from + i, s.offset(600.0 * i as f64, 0.0)))
        .collect()
}

fn dist(a: (f64, f64), b: Spot) -> f64 {
    Haversine.distance(Point::new(a.1, a.0), Point::new(b.lon, b.lat))
}

fn cat(parts: Vec<Vec<Fix>>) -> Vec<Fix> {
    parts.into_iter().flatten().collect()
}

#[test]
fn a_gap_with_no_fix_between_fixes_at_the_spot_belongs_to_the_stay() {
    // 20:00 arrive, one fix, then nothing (heartbeats) until 07:00, then leave.
    let fixes = cat(vec![
        vec![fix(20 * 60, HOME), fix(31 * 60, HOME.offset(10.0, 5.0))],
        drive(HOME, 31 * 60, 10),
    ]);
    let s = stays(fixes, at(31 * 60 + 10), &params());
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].since, s[0].until, s[0].open),
        (at(20 * 60), at(31 * 60), false)
    );
}

#[test]
fn one_or_two_jumps_away_and_back_do_not_end_a_stay() {
    for jumps in 1..=2 {
        let mut fixes = parked(HOME, 0, 60, 5);
        for j in 0..jumps {
            fixes.push(fix(61 + j, HOME.offset(800.0, 300.0 * j as f64)));
        }
        fixes.extend(parked(HOME, 65, 120, 5));
        fixes.extend(drive(HOME, 120, 10));
        let s = stays(fixes, at(130), &params());
        assert_eq!(s.len(), 1, "{jumps} jumps");
        assert_eq!((s[0].since, s[0].until), (at(0), at(120)));
        assert!(dist((s[0].lat, s[0].lon), HOME) < 20.0);
    }
}

#[test]
fn three_fixes_away_are_a_departure_and_the_stay_ends_at_its_last_fix_there() {
    let fixes = cat(vec![
        parked(HOME, 0, 60, 5),
        drive(HOME, 60, 3),
        parked(HOME, 70, 120, 5),
    ]);
    let s = stays(fixes, at(120), &params());
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].since, s[0].until, s[0].open), (at(0), at(60), false));
    assert_eq!((s[1].since, s[1].until, s[1].open), (at(70), at(120), true));
}

#[test]
fn a_vehicle_whose_last_fix_was_moving_counts_as_stopped_there_until_now() {
    // The rule as the contract states it: the last fix is "at the spot" of a stay still open.
    let fixes = cat(vec![parked(HOME, 0, 60, 10), drive(HOME, 60, 5)]);
    let s = stays(fixes, at(300), &params());
    assert_eq!(s.len(), 2);
    assert_eq!((s[1].since, s[1].until, s[1].open), (at(65), at(300), true));
}

#[test]
fn an_approach_fix_does_not_anchor_the_stay() {
    // Arriving: fixes 300 m and 150 m out, one on arrival, heartbeats all night, one on leaving,
    // and the way out passes where the approach was.
    let fixes = vec![
        fix(0, HOME.offset(0.0, -300.0)),
        fix(1, HOME.offset(0.0, -150.0)),
        fix(2, HOME),
        fix(600, HOME.offset(20.0, 0.0)),
        fix(601, HOME.offset(0.0, -280.0)),
        fix(602, HOME.offset(0.0, -900.0)),
        fix(603, HOME.offset(0.0, -1500.0)),
        fix(604, HOME.offset(0.0, -2100.0)),
    ];
    let s = stays(fixes, at(604), &params());
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].since, s[0].until), (at(2), at(600)));
    assert!(dist((s[0].lat, s[0].lon), HOME) < 20.0);
}

#[test]
fn two_fixes_elsewhere_that_make_a_stay_are_no_jump() {
    // A tracker reporting hourly: parked at home, then two fixes an hour apart at another spot,
    // then back home. The visit is a stay of its own, not a jump.
    let other = HOME.offset(3000.0, 0.0);
    let fixes = cat(vec![
        parked(HOME, 0, 180, 60),
        vec![fix(240, other), fix(300, other)],
        parked(HOME, 360, 480, 60),
    ]);
    let s = stays(fixes, at(480), &params());
    let spans: Vec<(Timestamp, Timestamp)> = s.iter().map(|s| (s.since, s.until)).collect();
    assert_eq!(
        spans,
        vec![(at(0), at(180)), (at(240), at(300)), (at(360), at(480))]
    );
}

#[test]
fn invalid_and_lbs_fixes_are_ignored_entirely() {
    let far = HOME.offset(1500.0, 0.0);
    let mut fixes = parked(HOME, 0, 60, 10);
    for m in 61..70 {
        // Cell positions far off, some flagged valid; and no-fix reports.
        fixes.push(Fix {
            lbs: true,
            ..fix(m, far)
        });
        fixes.push(Fix {
            valid: false,
            ..fix(m, Spot { lat: 0.0, lon: 0.0 })
        });
    }
    fixes.extend(parked(HOME, 70, 120, 10));
    let s = stays(fixes, at(120), &params());
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].since, at(0));

    // A spot seen only through LBS or invalid fixes is no stay.
    let only: Vec<Fix> = (0..100)
        .flat_map(|m| {
            [
                Fix {
                    lbs: true,
                    ..fix(m, far)
                },
                Fix {
                    valid: false,
                    ..fix(m, far)
                },
            ]
        })
        .collect();
    assert!(stays(only, at(200), &params()).is_empty());
}

#[test]
fn a_stay_needs_stay_min() {
    let short = cat(vec![parked(HOME, 0, 19, 1), drive(HOME, 19, 5)]);
    assert!(stays(short, at(25), &params()).is_empty());
    let long = cat(vec![parked(HOME, 0, 20, 1), drive(HOME, 20, 5)]);
    assert_eq!(stays(long, at(25), &params()).len(), 1);
}

#[test]
fn night_and_day_split_across_midnight_in_shanghai() {
    let work = HOME.offset(6000.0, 3000.0);
    // Home 19:00 Monday to 08:00 Tuesday (13 h, 10 h of night); work 09:00-18:00 (9 h, none).
    let fixes = cat(vec![
        parked(HOME, 19 * 60, 32 * 60, 30),
        drive(HOME, 32 * 60, 10),
        parked(work, 33 * 60, 42 * 60, 30),
        drive(work, 42 * 60, 10),
    ]);
    let p = places(fixes, at(42 * 60 + 10), &params());
    assert_eq!(p.places.len(), 2);
    let (home, work_p) = (&p.places[0], &p.places[1]);
    assert_eq!(
        (home.dwell_hours, home.night_hours, home.kind),
        (13.0, 10.0, PlaceKind::Night)
    );
    assert_eq!(
        (work_p.dwell_hours, work_p.night_hours, work_p.kind),
        (9.0, 0.0, PlaceKind::Day)
    );
    assert!(dist((home.lat, home.lon), HOME) < 20.0);
    assert!(dist((work_p.lat, work_p.lon), work) < 20.0);
    assert_eq!(home.last_arrived, at(19 * 60));
    assert_eq!(home.last_left, Some(at(32 * 60)));
}

#[test]
fn the_same_hours_are_night_in_shanghai_and_day_in_utc() {
    // 19:00-08:00 Shanghai is 11:00-00:00 UTC: night 21:00-24:00 UTC only, 3 h of 13.
    let fixes = parked(HOME, 19 * 60, 32 * 60, 30);
    let utc = Params::from_rules(200.0, Duration::from_secs(1200), "UTC").unwrap();
    let p = places(fixes, at(32 * 60), &utc);
    assert_eq!(
        (p.places[0].night_hours, p.places[0].kind),
        (3.0, PlaceKind::Day)
    );
}

#[test]
fn stays_near_each_other_are_one_place_far_ones_are_not() {
    let near = HOME.offset(120.0, 0.0);
    let far = HOME.offset(1000.0, 0.0);
    let fixes = cat(vec![
        parked(HOME, 0, 60, 10),
        drive(HOME, 60, 3),
        parked(near, 70, 100, 10),
        drive(near, 100, 3),
        parked(far, 110, 170, 10),
        drive(far, 170, 3),
    ]);
    let p = places(fixes, at(173), &params());
    assert_eq!(p.places.len(), 2);
    assert_eq!((p.places[0].visits, p.places[0].dwell_hours), (2, 1.5));
    assert_eq!((p.places[1].visits, p.places[1].dwell_hours), (1, 1.0));
    // Covers both visits' fixes around a centre 40 m from the longer one: the shorter one's
    // fixes are 80 m from it, plus 21 m of noise.
    assert!(
        (95..=115).contains(&p.places[0].radius_m),
        "{}",
        p.places[0].radius_m
    );
    assert!(p.places[1].radius_m <= 30, "{}", p.places[1].radius_m);
}

#[test]
fn places_are_ordered_by_dwell_largest_first() {
    let a = HOME.offset(3000.0, 0.0);
    let b = HOME.offset(0.0, 3000.0);
    let fixes = cat(vec![
        parked(a, 0, 30, 5),
        drive(a, 30, 5),
        parked(HOME, 40, 200, 5),
        drive(HOME, 200, 5),
        parked(b, 210, 300, 5),
        drive(b, 300, 5),
    ]);
    let p = places(fixes, at(305), &params());
    let dwell: Vec<f64> = p.places.iter().map(|p| p.dwell_hours).collect();
    assert_eq!(dwell, vec![2.7, 1.5, 0.5]);
}

#[test]
fn an_open_stay_counts_up_to_now_and_is_the_last_stop() {
    let fixes = cat(vec![
        parked(HOME, 0, 60, 10),
        drive(HOME, 60, 5),
        parked(HOME.offset(5000.0, 0.0), 70, 80, 5),
    ]);
    let p = places(fixes, at(190), &params());
    let last = p.last_stop.unwrap();
    assert_eq!((last.since, last.dwell_hours), (at(70), 2.0));
    assert!(dist((last.lat, last.lon), HOME.offset(5000.0, 0.0)) < 20.0);
    // The vehicle is there now and never left it before.
    let there = p.places.iter().find(|p| p.last_arrived == at(70)).unwrap();
    assert_eq!(there.last_left, None);
}

#[test]
fn a_closed_stay_is_the_last_stop_after_the_vehicle_left() {
    let fixes = cat(vec![parked(HOME, 0, 60, 10), drive(HOME, 60, 5)]);
    let p = places(fixes, at(66), &params());
    let last = p.last_stop.unwrap();
    assert_eq!((last.since, last.dwell_hours), (at(0), 1.0));
    assert_eq!(p.places[0].last_left, Some(at(60)));
}

#[test]
fn a_jump_as_the_very_last_fix_ends_the_stay_without_extending_anything() {
    let mut fixes = parked(HOME, 0, 60, 10);
    fixes.push(fix(61, HOME.offset(900.0, 0.0)));
    let s = stays(fixes, at(500), &params());
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].until, s[0].open), (at(60), false));
}

#[test]
fn no_valid_fix_no_places_and_no_last_stop() {
    let p = places(Vec::new(), at(0), &params());
    assert_eq!(p, Places::default());
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json, serde_json::json!({"places": [], "last_stop": null}));
}

#[test]
fn fixes_at_the_same_time_give_one_result_whatever_their_order() {
    // Two devices: one at home, one with a jump at the same instants.
    let a = parked(HOME, 0, 100, 5);
    let b: Vec<Fix> = a
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let s = if i % 7 == 3 {
                HOME.offset(700.0, 0.0)
            } else {
                HOME.offset(40.0, 40.0)
            };
            Fix {
                lat: s.lat,
                lon: s.lon,
                ..*f
            }
        })
        .collect();
    let ab: Vec<Fix> = a.iter().zip(&b).flat_map(|(x, y)| [*x, *y]).collect();
    let ba: Vec<Fix> = a.iter().zip(&b).flat_map(|(x, y)| [*y, *x]).collect();
    assert_eq!(stays(ab, at(100), &params()), stays(ba, at(100), &params()));
}

/// Each device's stays are found apart, then the car's: two trackers apart (one dropped at a
/// lot) each make their place, where one stream of both would switch spots at every fix and
/// find none; two trackers together make one stay, not twice the dwell.
#[test]
fn two_trackers_apart_each_keep_their_place_and_together_stay_once() {
    let lot = HOME.offset(3000.0, 0.0);
    let p = params();
    // 10 hours, a fix every 5 minutes from each, 2.5 minutes apart.
    let wired = parked(HOME, 0, 600, 5);
    let dropped: Vec<Fix> = parked(lot, 0, 600, 5)
        .into_iter()
        .map(|f| Fix {
            time: f.time.add_millis(150_000),
            ..f
        })
        .collect();
    let mut merged = cat(vec![wired.clone(), dropped.clone()]);
    merged.sort_by_key(|f| f.time);
    assert!(
        places(merged, at(605), &p).places.is_empty(),
        "one stream switches spots at every fix"
    );
    let mut apart = stays(wired.clone(), at(605), &p);
    apart.extend(stays(dropped, at(605), &p));
    let got = vehicle_places(apart, &p);
    assert_eq!(got.places.len(), 2, "{got:?}");
    assert!(got.places.iter().all(|pl| pl.dwell_hours >= 10.0));

    // Together at home, the second tracker 40 m off and reporting in between: one stay of the
    // car, 10 hours, its centre between the two.
    let near: Vec<Fix> = parked(HOME.offset(40.0, 0.0), 2, 602, 5);
    let mut both = stays(wired, at(605), &p);
    both.extend(stays(near, at(605), &p));
    let car = merge_stays(both, p.stay_radius_m);
    assert_eq!(car.len(), 1, "{car:?}");
    assert_eq!((car[0].since, car[0].until), (at(0), at(605)));
    assert!(car[0].open);
    assert!(dist((car[0].lat, car[0].lon), HOME.offset(20.0, 0.0)) < 10.0);
    let got = vehicle_places(car, &p);
    assert_eq!(got.places.len(), 1);
    assert!((got.places[0].dwell_hours - 10.1).abs() < 0.1, "{got:?}");
}

/// The car's places from each device's fixes, as the history query finds them.
fn car_places(devices: &[Vec<Fix>], now: Timestamp, p: &Params) -> Places {
    let until = vec![now; devices.len()];
    let stays = device_stays(&until, p, |i, sink| {
        devices[i].iter().for_each(sink);
        Ok::<(), ()>(())
    })
    .unwrap();
    vehicle_places(stays, p)
}

/// A wired unit and a battery unit in the same car that reports once a day from the garage:
/// the battery unit's fixes are all at home, one stay of the whole fortnight by its own; the
/// wired unit saw the car leave every morning. Home stays the car's nights, one visit a night,
/// and work its days, as with the wired unit alone.
#[test]
fn a_unit_reporting_once_a_day_does_not_make_home_one_visit() {
    let p = params();
    for seed in [42, 3] {
        let cfg = LifeConfig::new(seed, 14);
        let l = life(&cfg);
        let daily = daily_reports(&cfg, &l, 6.0);
        assert_eq!(daily.len(), 14);
        let alone = car_places(std::slice::from_ref(&daily), l.now, &p);
        assert_eq!(alone.places.len(), 1, "seed {seed}: {alone:?}");
        assert_eq!(alone.places[0].visits, 1, "seed {seed}: one stay, 13 days");

        let wired = car_places(std::slice::from_ref(&l.fixes), l.now, &p);
        let both = car_places(&[l.fixes.clone(), daily], l.now, &p);
        let home = &both.places[0];
        assert!(
            dist((home.lat, home.lon), l.home) < 100.0,
            "seed {seed}: {both:?}"
        );
        assert_eq!(home.kind, PlaceKind::Night, "seed {seed}: {home:?}");
        assert_eq!(home.visits, wired.places[0].visits, "seed {seed}: {home:?}");
        assert!(
            (home.dwell_hours - wired.places[0].dwell_hours).abs() < 2.0,
            "seed {seed}: {home:?} against {:?}",
            wired.places[0]
        );
        let work = &both.places[1];
        assert!(
            dist((work.lat, work.lon), l.work) < 100.0,
            "seed {seed}: {both:?}"
        );
        assert_eq!((work.kind, work.visits), (PlaceKind::Day, 10));
        assert_eq!(
            both.last_stop.map(|s| s.since),
            wired.last_stop.map(|s| s.since)
        );
    }
}

/// The wired unit taken off in the garage and tied to an e-bike that rides about: the car,
/// with its battery unit, stays where it is hidden. The e-bike's comings and goings are not the
/// car's, so its stay there stays whole.
#[test]
fn a_tracker_taken_off_and_ridden_away_does_not_cut_the_cars_stay() {
    let p = params();
    let cfg = LifeConfig::new(7, 10);
    let l = life(&cfg);
    let garage = l.home.offset(-4000.0, -3000.0);
    // The battery unit: once a day at 06:00, always in the garage.
    let hidden: Vec<Fix> = (0..10).map(|d| fix(d * 1440 + 360, garage)).collect();
    // The e-bike starts from the garage at 07:00 on the first day and lives the car's life from
    // then on, far from the garage, but for a morning back there on the sixth day (over the
    // battery unit's 06:00 report, so that only the car's absence at the next one tells).
    let back = (5 * 1440 + 300, 5 * 1440 + 480);
    let mut bike = parked(garage, 0, 420, 30);
    bike.extend(
        l.fixes
            .iter()
            .copied()
            .filter(|f| f.time > at(440) && (f.time < at(back.0 - 30) || f.time > at(back.1 + 30))),
    );
    bike.extend(parked(garage, back.0, back.1, 30));
    bike.sort_by_key(|f| f.time);
    let got = car_places(&[bike, hidden], l.now, &p);
    let hide = got
        .places
        .iter()
        .find(|q| dist((q.lat, q.lon), garage) < 100.0)
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(hide.visits, 1, "{hide:?}");
    assert!(hide.dwell_hours > 9.0 * 24.0, "{hide:?}");
}

#[test]
fn older_fixes_than_one_already_seen_are_ignored() {
    let mut fixes = parked(HOME, 0, 60, 10);
    fixes.push(fix(5, HOME.offset(3000.0, 0.0)));
    fixes.extend(parked(HOME, 70, 90, 10));
    let s = stays(fixes, at(90), &params());
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].since, s[0].until), (at(0), at(90)));
}

#[test]
fn the_tracker_says_where_the_vehicle_is_staying_now() {
    let p = params();
    let mut t = p.tracker();
    for f in parked(HOME, 0, 10, 5) {
        assert_eq!(t.push(&f), None);
    }
    // Only 10 minutes so far; at 30 it has stayed 30.
    assert_eq!(t.current(at(15)), None);
    let c = t.current(at(30)).unwrap();
    assert_eq!(
        (c.since, c.last_fix, c.duration),
        (at(0), at(10), Duration::from_secs(1800))
    );
    assert!(dist((c.lat, c.lon), HOME) < 20.0);
    // A fix away: unresolved, no current stay; back at the spot: the same stay goes on.
    t.push(&fix(31, HOME.offset(900.0, 0.0)));
    assert_eq!(t.current(at(31)), None);
    t.push(&fix(32, HOME));
    assert_eq!(t.current(at(32)).unwrap().since, at(0));
    // Leaving: the third fix away ends the stay and hands it back.
    let ended: Vec<Stay> = drive(HOME, 40, 3)
        .iter()
        .filter_map(|f| t.push(f))
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].since, ended[0].until), (at(0), at(32)));
    // On the road: the newest fix is a spot of its own, not yet stay_min old.
    assert_eq!(t.current(at(50)), None);
}

#[test]
fn the_tracker_and_the_batch_agree() {
    let l = life(&LifeConfig::new(3, 7));
    let p = params();
    let mut t = p.tracker();
    let mut live: Vec<Stay> = l.fixes.iter().filter_map(|f| t.push(f)).collect();
    t.finish(l.now, |s| live.push(s));
    assert_eq!(live, stays(l.fixes.iter().copied(), l.now, &p));
}

#[test]
fn params_refuse_an_unknown_zone_and_a_bad_radius() {
    let d = Duration::from_secs(60);
    assert!(matches!(
        Params::from_rules(200.0, d, "Mars/Olympus"),
        Err(PlacesError::UnknownTimeZone { .. })
    ));
    assert!(matches!(
        Params::from_rules(0.0, d, "UTC"),
        Err(PlacesError::BadRadius(_))
    ));
    assert!(matches!(
        Params::from_rules(f64::NAN, d, "UTC"),
        Err(PlacesError::BadRadius(_))
    ));
    assert!(Params::from_rules(200.0, d, "Asia/Shanghai").is_ok());
}

#[test]
fn the_report_serialises_as_the_contract_shows() {
    let fixes = cat(vec![
        parked(HOME, 19 * 60, 32 * 60, 30),
        drive(HOME, 32 * 60, 5),
    ]);
    let report = PlacesReport {
        vehicle_id: "V-1".into(),
        timezone: "Asia/Shanghai".into(),
        days: 30,
        places: places(fixes, at(32 * 60 + 5), &params()),
    };
    let v = serde_json::to_value(&report).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys.len(), 5);
    for k in ["vehicle_id", "timezone", "days", "places", "last_stop"] {
        assert!(keys.contains(&k), "{k}");
    }
    let place = &v["places"][0];
    let mut pk: Vec<&str> = place
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    pk.sort();
    assert_eq!(
        pk,
        [
            "dwell_hours",
            "kind",
            "last_arrived",
            "last_left",
            "lat",
            "lon",
            "night_hours",
            "radius_m",
            "visits"
        ]
    );
    assert_eq!(place["kind"], "night");
    assert_eq!(place["dwell_hours"], 13.0);
    assert_eq!(place["last_arrived"], "2026-11-02T11:00:00Z");
    assert_eq!(place["last_left"], "2026-11-03T00:00:00Z");
    let lat = place["lat"].as_f64().unwrap();
    assert_eq!(lat, (lat * 1e6).round() / 1e6);
    assert_eq!(v["last_stop"]["since"], "2026-11-02T11:00:00Z");
    assert_eq!(v["last_stop"]["dwell_hours"], 13.0);
}

/// 14 days of a synthetic car: home first (a night place, within 100 m), work second (day), the
/// one-off visit last or absent, and the last stop at home since its last arrival. A few seeds,
/// one of them reporting every 10 s all the time.
#[test]
fn fourteen_days_of_synthetic_life() {
    for seed in [42, 1, 2, 3, 4, 5] {
        let cfg = if seed == 5 {
            LifeConfig::dense(seed, 14, 10)
        } else {
            LifeConfig::new(seed, 14)
        };
        let l = life(&cfg);
        let p = places(l.fixes.iter().copied(), l.now, &params());
        let home = &p.places[0];
        assert!(
            dist((home.lat, home.lon), l.home) < 100.0,
            "seed {seed}: {home:?}"
        );
        assert_eq!(home.kind, PlaceKind::Night, "seed {seed}: {home:?}");
        let work = &p.places[1];
        assert!(
            dist((work.lat, work.lon), l.work) < 100.0,
            "seed {seed}: {work:?}"
        );
        assert_eq!(
            (work.kind, work.visits),
            (PlaceKind::Day, 10),
            "seed {seed}: {work:?}"
        );
        let visit = p
            .places
            .iter()
            .position(|q| dist((q.lat, q.lon), l.visit) < 100.0);
        assert!(
            visit.is_none_or(|i| i == p.places.len() - 1),
            "seed {seed}: {:?}",
            p.places
        );
        let last = p.last_stop.unwrap();
        assert!(
            dist((last.lat, last.lon), l.home) < 100.0,
            "seed {seed}: {last:?}"
        );
        assert!(
            last.since.since(l.last_stop.since).abs() <= 5 * MIN,
            "seed {seed}: {last:?} vs {:?}",
            l.last_stop
        );
        let dwell = l.now.since(l.last_stop.since) as f64 / 3_600_000.0;
        assert!(
            (last.dwell_hours - dwell).abs() <= 0.2,
            "seed {seed}: {last:?}"
        );
    }
}

#[test]
fn the_synthetic_life_is_the_same_for_the_same_seed() {
    let a = life(&LifeConfig::new(9, 3));
    let b = life(&LifeConfig::new(9, 3));
    assert_eq!(a.fixes, b.fixes);
    assert!(a.fixes.windows(2).all(|w| w[0].time <= w[1].time));
    let dense = life(&LifeConfig::dense(9, 2, 10));
    assert!(dense.fixes.len() > 2 * 8640, "{}", dense.fixes.len());
}

#[test]
fn a_cell_or_wifi_report_is_an_lbs_fix() {
    let gps = crate::event::Position {
        time: at(1),
        lat: 22.5,
        lon: 114.0,
        valid: true,
        ..Default::default()
    };
    assert_eq!(
        Fix::from(&gps),
        Fix {
            time: at(1),
            lat: 22.5,
            lon: 114.0,
            valid: true,
            lbs: false
        }
    );
    let cell = crate::event::Position {
        cell: Some(crate::event::Cell::default()),
        ..gps
    };
    assert!(Fix::from(&cell).lbs);
}

/// The `long_stay` rule keeps one tracker per vehicle: it must stay small and never allocate.
#[test]
fn a_tracker_is_small() {
    use crate::places::extent::NoCover;
    assert!(
        std::mem::size_of::<StayTracker>() <= 320,
        "{}",
        std::mem::size_of::<StayTracker>()
    );
    // Without the octagon: a cache line less.
    let slim = std::mem::size_of::<StayTracker<NoCover>>();
    assert!(slim + 64 <= std::mem::size_of::<StayTracker>(), "{slim}");
}

/// A tracker without the octagon stores the same bytes as one with it, so that `long_stay`
/// states written before it read back, and the same stay comes out.
#[test]
fn a_tracker_without_cover_reads_and_writes_the_same_form() {
    use crate::places::extent::NoCover;
    let mut full: StayTracker = StayTracker::new(150.0, std::time::Duration::from_secs(600));
    let mut slim: StayTracker<NoCover> =
        StayTracker::with_cover(150.0, std::time::Duration::from_secs(600));
    for k in 0..20i64 {
        let f = Fix {
            time: Timestamp(1_795_305_600_000 + k * 60_000),
            lat: 22.543096 + (k % 3) as f64 * 1e-5,
            lon: 114.057865,
            valid: true,
            lbs: false,
        };
        full.push(&f);
        slim.push(&f);
    }
    let stored = postcard::to_allocvec(&full).expect("encode");
    let read: StayTracker<NoCover> = postcard::from_bytes(&stored).expect("decode");
    assert_eq!(read.spot(), full.spot());
    assert_eq!(read, slim);
    let back: StayTracker =
        postcard::from_bytes(&postcard::to_allocvec(&slim).expect("encode")).expect("decode");
    assert_eq!(back.spot(), full.spot());
    assert_eq!(
        stored.len(),
        postcard::to_allocvec(&slim).expect("encode").len()
    );
}

/// A tracker that sends 0/0 marked valid for half an hour after a reboot, at home: no stay at
/// 0/0, and the night at home stays one stay.
#[test]
fn zero_zero_fixes_are_no_place() {
    let null = Spot { lat: 0.0, lon: 0.0 };
    let fixes = cat(vec![
        parked(HOME, 20 * 60, 23 * 60, 5),
        (0..8).map(|i| fix(23 * 60 + 5 + 5 * i, null)).collect(),
        parked(HOME, 23 * 60 + 45, 31 * 60, 5),
        drive(HOME, 31 * 60, 10),
    ]);
    let s = stays(fixes, at(31 * 60 + 10), &params());
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].since, s[0].until), (at(20 * 60), at(31 * 60)));
}
