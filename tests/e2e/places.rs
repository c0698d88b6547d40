//! Places over real sockets (CONTRACT.md "Places"): fourteen days of a car's life, uploaded by a
//! wired GT06 tracker and a battery one that reports once a day, come back as its night spot, its
//! work spot and its last stop.

use crate::common::*;
use lienwatch::places::synthetic::{daily_reports, life, LifeConfig, Spot};
use lienwatch::time::Timestamp;
use std::io::{Read, Write};
use std::time::Duration;

const IMEI: &str = "868120145299001";
const WIRELESS: &str = "868120145299002";
const DAY_MS: i64 = 86_400_000;

/// A GT06 0x12 location; `valid` is the GPS-positioned bit of the course/status word.
fn location(serial: u16, t: Timestamp, lat: f64, lon: f64, valid: bool) -> Vec<u8> {
    let (y, mo, d, h, mi, s) = gt06_civil(t);
    let mut c = vec![y, mo, d, h, mi, s, 0xC9];
    c.extend_from_slice(&((lat * 1_800_000.0).round() as u32).to_be_bytes());
    c.extend_from_slice(&((lon * 1_800_000.0).round() as u32).to_be_bytes());
    let status = if valid { 0x14 } else { 0x04 };
    c.extend_from_slice(&[
        0x00, status, 0x5A, 0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31,
    ]);
    gt06_frame(0x12, &c, serial)
}

fn distance_m(a: Spot, lat: f64, lon: f64) -> f64 {
    let dy = (lat - a.lat) * 111_195.0;
    let dx = (lon - a.lon) * 111_195.0 * a.lat.to_radians().cos();
    dx.hypot(dy)
}

#[test]
fn fourteen_days_give_the_night_spot_the_work_spot_and_the_last_stop() {
    let d = Daemon::start(&["gt06"], "[rules]\ntimezone = \"Asia/Shanghai\"\n");
    let vehicle = serde_json::json!({
        "loan": {"id": "L-9", "status": "overdue", "days_past_due": 12},
        "devices": [{"id": IMEI, "kind": "wired"}, {"id": WIRELESS, "kind": "wireless"}]
    });
    assert_eq!(
        d.api("PUT", "/v1/vehicles/V-9", Some(&vehicle.to_string()))
            .0,
        201
    );

    // Fourteen local days ending at the last Shanghai midnight: all in the past.
    let now = Timestamp::now().millis();
    let midnight = (now + 8 * 3_600_000).div_euclid(DAY_MS) * DAY_MS - 8 * 3_600_000;
    let cfg = LifeConfig {
        start: Timestamp::from_millis(midnight - 14 * DAY_MS),
        ..LifeConfig::new(11, 14)
    };
    let life = life(&cfg);
    assert!(life.fixes.len() > 1000, "{} fixes", life.fixes.len());

    // Uploaded as a tracker does after a gap: frames back to back, the acks read in chunks.
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut serial: u16 = 1;
    for chunk in life.fixes.chunks(500) {
        let mut out = Vec::new();
        for f in chunk {
            serial = serial.wrapping_add(1);
            // An LBS report is no GPS fix: sent as one without the positioned bit.
            out.extend(location(serial, f.time, f.lat, f.lon, f.valid && !f.lbs));
        }
        dev.stream.write_all(&out).unwrap();
        let mut acks = vec![0u8; chunk.len() * 10];
        dev.stream.read_exact(&mut acks).unwrap();
    }

    // The battery unit in the same car: a fix a day at 06:00, each time in the garage at home.
    // By itself it stayed there the whole fortnight; the wired unit saw the car leave each day.
    let mut unit = d.connect("gt06");
    unit.exchange_bytes(&gt06_login(WIRELESS, 1), &gt06_ack(0x01, 1));
    for (i, f) in daily_reports(&cfg, &life, 6.0).iter().enumerate() {
        let serial = 2 + i as u16;
        unit.exchange_bytes(
            &location(serial, f.time, f.lat, f.lon, true),
            &gt06_ack(0x12, serial),
        );
    }

    let (s, v) = d.api("GET", "/v1/vehicles/V-9/places?days=30", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["vehicle_id"], "V-9");
    assert_eq!(v["timezone"], "Asia/Shanghai");
    assert_eq!(v["days"], 30);
    let places = v["places"].as_array().unwrap();
    assert!(places.len() >= 2, "{v:#}");
    let at = |p: &serde_json::Value, spot: Spot| {
        distance_m(spot, p["lat"].as_f64().unwrap(), p["lon"].as_f64().unwrap())
    };
    // The night spot first, within 100 m, kind night.
    assert!(at(&places[0], life.home) < 100.0, "{:#}", places[0]);
    assert_eq!(places[0]["kind"], "night");
    assert!(places[0]["night_hours"].as_f64().unwrap() > 100.0);
    // A visit a night, not one of the fortnight.
    assert!(
        places[0]["visits"].as_u64().unwrap() >= 12,
        "{:#}",
        places[0]
    );
    // The work spot second, kind day.
    assert!(at(&places[1], life.work) < 100.0, "{:#}", places[1]);
    assert_eq!(places[1]["kind"], "day");
    // The one-off visit: last, or absent.
    if let Some(i) = places.iter().position(|p| at(p, life.visit) < 200.0) {
        assert_eq!(i, places.len() - 1, "{v:#}");
        assert_eq!(places[i]["visits"], 1);
    }
    // Ordered by dwell.
    let dwell: Vec<f64> = places
        .iter()
        .map(|p| p["dwell_hours"].as_f64().unwrap())
        .collect();
    assert!(dwell.windows(2).all(|w| w[0] >= w[1]), "{dwell:?}");
    // The last stop: where the car is now, since it arrived.
    let last = &v["last_stop"];
    assert!(
        distance_m(
            life.last_stop.spot,
            last["lat"].as_f64().unwrap(),
            last["lon"].as_f64().unwrap()
        ) < 100.0,
        "{last}"
    );
    let since = Timestamp::parse_rfc3339(last["since"].as_str().unwrap()).unwrap();
    assert!(
        (since.millis() - life.last_stop.since.millis()).abs() <= 30 * 60_000,
        "since {since} vs {}",
        life.last_stop.since
    );

    // The track of the last day holds that day's fixes, oldest first.
    let (s, t) = d.api(
        "GET",
        &format!("/v1/devices/{IMEI}/track?limit=100000"),
        None,
    );
    assert_eq!(s, 200);
    let got = t["positions"].as_array().unwrap().len();
    let want = life
        .fixes
        .iter()
        .filter(|f| f.time.millis() >= now - DAY_MS)
        .map(|f| f.time)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        got >= want.saturating_sub(1) && got <= want + 1,
        "{got} vs {want}"
    );

    // Bad requests.
    assert_eq!(d.api("GET", "/v1/vehicles/V-9/places?days=0", None).0, 400);
    let (s, v) = d.api("GET", "/v1/vehicles/V-9/places?day=7", None);
    assert_eq!(s, 400, "a misspelt parameter is refused: {v}");
    assert!(v["error"].as_str().unwrap_or("").contains("day"), "{v}");
    assert_eq!(d.api("GET", "/v1/vehicles/nope/places", None).0, 404);
}
