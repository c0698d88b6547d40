//! Part 2 "finding the car" end to end: risk zones over the admin API, and the alerts they and
//! the vehicle-wide rules raise (risk_zone_enter, risk_zone_dwell, device_separation,
//! all_silent, reappeared with its distance), with the real binary, GT06 devices over real TCP
//! and a real webhook receiver. Durations are configured short (seconds), so real time passes.

use crate::common::receiver::{Receiver, Request};
use crate::common::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const WIRED: &str = "868120145233604";
const WIRELESS: &str = "868120145233612";
/// Home: Futian, Shenzhen.
const HOME: (f64, f64) = (22.5431, 114.0579);

/// The rules' own alerts: the risk tier's are tested in `risk.rs`.
const TYPES: &str = r#"types = ["risk_zone_enter", "risk_zone_dwell", "device_separation", "all_silent", "reappeared", "silent_overdue", "geofence_exit", "geofence_return"]"#;

fn config(receiver_url: &str, rules: &str) -> String {
    format!(
        "[rules]\n{rules}\n\n[[webhook]]\nurl = \"{receiver_url}\"\nsecret = \"zones-secret\"\n{TYPES}\n"
    )
}

/// A positioned GT06 0x12 fix at 2024-05-20 `h:m:s` UTC.
fn fix(serial: u16, (h, m, s): (u8, u8, u8), (lat, lon): (f64, f64)) -> Vec<u8> {
    gt06_location(serial, (24, 5, 20, h, m, s), lat, lon)
}

/// One GT06 unit on its own connection, numbering its frames.
struct Unit {
    dev: Device,
    serial: u16,
}

impl Unit {
    fn login(d: &Daemon, imei: &str) -> Unit {
        let mut dev = d.connect("gt06");
        dev.exchange_bytes(&gt06_login(imei, 1), &gt06_ack(0x01, 1));
        Unit { dev, serial: 1 }
    }

    /// Sends a fix and waits for its acknowledgement: the alerts it raised are committed.
    fn at(&mut self, t: (u8, u8, u8), p: (f64, f64)) {
        self.serial += 1;
        let s = self.serial;
        self.dev.exchange_bytes(&fix(s, t, p), &gt06_ack(0x12, s));
    }
}

fn north(p: (f64, f64), metres: f64) -> (f64, f64) {
    (p.0 + metres / 111_195.0, p.1)
}

fn types(reqs: &[Request]) -> Vec<String> {
    reqs.iter()
        .map(|r| r.json()["type"].as_str().unwrap_or("").to_string())
        .collect()
}

fn count(rx: &Receiver, t: &str) -> usize {
    rx.of_type(t).len()
}

fn pawnshop(dwell: &str) -> String {
    json!({"name": "福田典当行", "kind": "pawnshop", "dwell_after": dwell,
           "geometry": {"type": "Circle", "center": [HOME.1, HOME.0], "radius_m": 300}})
    .to_string()
}

#[test]
fn enter_dwell_once_leave_and_reenter_is_a_new_visit_and_visits_survive_a_restart() {
    let rx = Receiver::start();
    // A visit that began before a start is not due within the start's grace: short here.
    let mut d = Daemon::start(&["gt06"], &config(&rx.url(), "startup_grace = \"3s\""));
    let (s, v) = d.api("PUT", "/v1/zones/Z-1", Some(&pawnshop("2s")));
    assert_eq!(s, 201, "{v}");
    let body = json!({"loan": {"id": "L-1", "status": "current"}, "devices": [{"id": WIRED}]});
    let (s, v) = d.api("PUT", "/v1/vehicles/V-1", Some(&body.to_string()));
    assert_eq!(s, 201, "{v}");

    let mut u = Unit::login(&d, WIRED);
    u.at((10, 0, 0), north(HOME, 2000.0));
    u.at((10, 1, 0), HOME);
    let got = rx.wait_for(Duration::from_secs(5), "risk_zone_enter", |a| !a.is_empty());
    let a = got[0].json();
    assert_eq!(a["type"], "risk_zone_enter");
    assert_eq!(a["vehicle_id"], "V-1");
    assert_eq!(a["device_id"], WIRED);
    assert_eq!(
        a["details"],
        json!({"zone_id": "Z-1", "zone_name": "福田典当行", "zone_kind": "pawnshop"})
    );
    assert_eq!(a["position"]["time"], "2024-05-20T10:01:00Z");
    // Inside and just outside within the margin: the same visit. The dwell fires on the clock.
    u.at((10, 2, 0), north(HOME, 320.0));
    let got = rx.wait_for(Duration::from_secs(10), "risk_zone_dwell", |a| {
        types(a).contains(&"risk_zone_dwell".to_string())
    });
    let dwell = got
        .iter()
        .find(|r| r.json()["type"] == "risk_zone_dwell")
        .unwrap()
        .json();
    assert_eq!(dwell["details"]["zone_id"], "Z-1");
    assert!(
        dwell["details"]["dwell_s"].as_i64().unwrap() >= 2,
        "{dwell}"
    );
    u.at((10, 3, 0), HOME);
    // Leave (2 km), come back: a new visit with its own alerts.
    u.at((10, 4, 0), north(HOME, 2000.0));
    assert_eq!(types(&rx.all()), ["risk_zone_enter", "risk_zone_dwell"]);
    u.at((10, 5, 0), HOME);
    rx.wait_for(Duration::from_secs(5), "second enter", |a| {
        types(a).iter().filter(|t| *t == "risk_zone_enter").count() == 2
    });

    // A restart in the middle of the second visit: its dwell still fires, once, when the
    // start's grace is over, and the visit is remembered (another fix inside is no new visit).
    assert_eq!(d.terminate(), Some(0));
    d.spawn();
    let mut u = Unit::login(&d, WIRED);
    u.at((10, 6, 0), HOME);
    rx.wait_for(Duration::from_secs(10), "second dwell", |a| {
        types(a).iter().filter(|t| *t == "risk_zone_dwell").count() == 2
    });
    u.at((10, 7, 0), HOME);
    // Alerts are committed before the fix's acknowledgement: the outbox is complete here.
    let (_, v) = d.api("GET", "/v1/alerts", None);
    let raised: Vec<&str> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter_map(|a| a["type"].as_str())
        .filter(|t| *t != "risk_tier_changed")
        .collect();
    assert_eq!(
        raised,
        [
            "risk_zone_enter",
            "risk_zone_dwell",
            "risk_zone_enter",
            "risk_zone_dwell"
        ]
    );
}

fn two_units(status: &str) -> String {
    json!({"loan": {"id": "L-2", "status": status, "days_past_due": 40},
           "devices": [{"id": WIRED, "kind": "wired"}, {"id": WIRELESS, "kind": "wireless"}]})
    .to_string()
}

#[test]
fn separation_of_the_two_units_and_its_end() {
    let rx = Receiver::start();
    let d = Daemon::start(&["gt06"], &config(&rx.url(), "separation_m = 2000"));
    let (s, v) = d.api("PUT", "/v1/vehicles/V-2", Some(&two_units("current")));
    assert_eq!(s, 201, "{v}");
    let mut w = Unit::login(&d, WIRED);
    let mut s = Unit::login(&d, WIRELESS);
    w.at((10, 0, 0), HOME);
    s.at((10, 1, 0), north(HOME, 50.0));
    w.at((10, 2, 0), HOME);
    // The wireless unit reports 5 km away (planted on something else).
    s.at((10, 3, 0), north(HOME, 5000.0));
    let got = rx.wait_for(Duration::from_secs(5), "device_separation", |a| {
        !a.is_empty()
    });
    let a = got[0].json();
    assert_eq!(a["type"], "device_separation");
    assert_eq!(a["device_id"], WIRELESS);
    assert_eq!(a["details"]["device_ids"], json!([WIRELESS, WIRED]));
    let dist = a["details"]["distance_m"].as_f64().unwrap();
    assert!((4950.0..5050.0).contains(&dist), "{dist}");
    // The same episode while they stay apart; it ends when they are together again...
    w.at((10, 4, 0), HOME);
    s.at((10, 30, 0), north(HOME, 100.0));
    w.at((10, 31, 0), HOME);
    assert_eq!(count(&rx, "device_separation"), 1);
    // ...so the next separation is a new episode.
    s.at((10, 32, 0), north(HOME, 3000.0));
    rx.wait_for(Duration::from_secs(5), "second episode", |a| a.len() == 2);
    assert_eq!(count(&rx, "device_separation"), 2);
}

#[test]
fn all_silent_with_two_devices_then_one_reappears_far_away() {
    let rx = Receiver::start();
    let d = Daemon::start(
        &["gt06"],
        &config(
            &rx.url(),
            "silence_after = \"1s\"\nsilence_after_wireless = \"2s\"\nstartup_grace = \"0s\"",
        ),
    );
    let (s, v) = d.api("PUT", "/v1/vehicles/V-3", Some(&two_units("overdue")));
    assert_eq!(s, 201, "{v}");
    let mut w = Unit::login(&d, WIRED);
    let mut s = Unit::login(&d, WIRELESS);
    w.at((10, 0, 0), HOME);
    s.at((10, 0, 30), HOME);
    // Both go quiet: each its silent_overdue, then all_silent once the wireless unit's 2 s pass.
    let got = rx.wait_for(Duration::from_secs(10), "all_silent", |a| {
        let t = types(a);
        t.contains(&"all_silent".to_string())
            && t.iter().filter(|t| *t == "silent_overdue").count() == 2
    });
    let all = got
        .iter()
        .find(|r| r.json()["type"] == "all_silent")
        .unwrap()
        .json();
    assert_eq!(all["vehicle_id"], "V-3");
    let devices = all["details"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["id"], WIRED);
    assert_eq!(devices[1]["id"], WIRELESS);
    assert!(devices.iter().all(|d| d["last_seen"].is_string()), "{all}");
    // Real time passing: most of another silence threshold goes by without a second alert.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(&rx, "all_silent"), 1, "one per episode");

    // The wired unit speaks again 10 km north of where it went silent.
    w.at((12, 0, 0), north(HOME, 10_000.0));
    let got = rx.wait_for(Duration::from_secs(5), "reappeared", |a| {
        types(a).contains(&"reappeared".to_string())
    });
    let re = got
        .iter()
        .find(|r| r.json()["type"] == "reappeared")
        .unwrap()
        .json();
    let dist = re["details"]["distance_m"].as_f64().unwrap();
    assert!((9950.0..10050.0).contains(&dist), "{re}");
    assert!(re["details"]["silent_s"].as_i64().unwrap() >= 1, "{re}");
}

fn square_feature(i: usize) -> serde_json::Value {
    let (x, y) = (
        100.0 + (i % 200) as f64 * 0.1,
        20.0 + (i / 200) as f64 * 0.1,
    );
    let kind = if i.is_multiple_of(2) {
        "pawnshop"
    } else {
        "used_car_market"
    };
    json!({"type": "Feature", "id": format!("Z-{i}"),
           "properties": {"name": format!("zone {i}"), "kind": kind},
           "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]]}})
}

#[test]
fn zone_api_bulk_import_all_or_nothing_kind_filter_and_404s() {
    let _turn = heavy_io_turn();
    let d = Daemon::start(&["gt06"], "");
    let features: Vec<serde_json::Value> = (0..20_000).map(square_feature).collect();
    let fc = json!({"type": "FeatureCollection", "features": features});
    let (s, v) = d.api("POST", "/v1/zones", Some(&fc.to_string()));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["upserted"], 20_000);
    let (s, v) = d.api("GET", "/v1/zones/Z-12345", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["kind"], "used_car_market");
    assert_eq!(v["geometry"]["type"], "Polygon");
    let (s, v) = d.api("GET", "/v1/zones?kind=pawnshop", None);
    assert_eq!(s, 200);
    let pawn = v["zones"].as_array().unwrap();
    assert_eq!(pawn.len(), 10_000);
    assert!(pawn.iter().all(|z| z["kind"] == "pawnshop"));

    // One bad feature among many: 400 naming it, and nothing changed (not even the good ones).
    let mut features: Vec<serde_json::Value> = (0..5).map(square_feature).collect();
    for f in &mut features {
        f["properties"]["kind"] = json!("second_pledge");
    }
    features.push(json!({"type": "Feature", "id": "Z-NEW",
        "properties": {"kind": "second_pledge"},
        "geometry": {"type": "Polygon", "coordinates": [[[114.0, 22.5], [114.1, 22.5], [114.1, 22.6], [114.0, 22.6]]]}}));
    let fc = json!({"type": "FeatureCollection", "features": features});
    let (s, v) = d.api("POST", "/v1/zones", Some(&fc.to_string()));
    assert_eq!(s, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("features[5]") && e.contains("Z-NEW") && e.contains("not closed"),
        "{e}"
    );
    let (_, v) = d.api("GET", "/v1/zones?kind=second_pledge", None);
    assert_eq!(v["zones"], json!([]));
    let (_, v) = d.api("GET", "/v1/zones/Z-0", None);
    assert_eq!(v["kind"], "pawnshop", "unchanged");
    assert_eq!(d.api("GET", "/v1/zones/Z-NEW", None).0, 404);

    // One at a time: create, replace, delete; 404s.
    let (s, v) = d.api("PUT", "/v1/zones/Z-P", Some(&pawnshop("45m")));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["dwell_after"], "45m");
    let (s, _) = d.api("PUT", "/v1/zones/Z-P", Some(&pawnshop("1h")));
    assert_eq!(s, 200);
    let (s, v) = d.api("PUT", "/v1/zones/Z-Q", Some(r#"{"kind": "x", "geometry": {"type": "Circle", "center": [114, 22], "radius_m": 2000000}}"#));
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("radius_m"), "{v}");
    let (s, v) = d.api("DELETE", "/v1/zones/Z-P", None);
    assert_eq!((s, &v["deleted"]), (200, &json!("Z-P")));
    assert_eq!(d.api("DELETE", "/v1/zones/Z-P", None).0, 404);
    assert_eq!(d.api("GET", "/v1/zones/Z-P", None).0, 404);
    let (s, _) = d.api("GET", "/v1/zones?colour=red", None);
    assert_eq!(s, 400);
}

#[test]
fn check_config_names_bad_part_two_rule_keys() {
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let f = dir.path().join("lw.toml");
        std::fs::write(&f, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
            .args(["check-config", "--config"])
            .arg(&f)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run("[rules]\nseparation_m = 1500\nrisk_zone_dwell_after = \"90m\"\n");
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run("[rules]\nseparation_metres = 1500\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("separation_metres"), "{err}");
    let (code, err) = run("[rules]\nseparation_m = -1\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("rules.separation_m"), "{err}");
    let (code, err) = run("[rules]\nrisk_zone_dwell_after = \"soon\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("risk_zone_dwell_after"), "{err}");
    let (code, err) =
        run("[rules]\nlong_stay_after = \"48h\"\n\n[risk.points]\nlong_stay_unusual = 35\n");
    assert_eq!(code, Some(0), "{err}");
    // A long stay is a stay first: shorter than stay_min is refused.
    let (code, err) = run("[rules]\nstay_min = \"30m\"\nlong_stay_after = \"10m\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("rules.long_stay_after"), "{err}");
    let (code, err) = run("[rules]\nlong_stay_after = \"a while\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("long_stay_after"), "{err}");
    // [risk.points] keys are reason codes: a wrong one, or points out of range, named.
    let (code, err) = run("[risk.points]\nsilence = 10\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("risk.points.silence"), "{err}");
    let (code, err) = run("[risk.points]\nlong_stay_unusual = 120\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("risk.points.long_stay_unusual"), "{err}");
}

/// Sends a request's head and the first `sent` bytes of its body; the connection closes, with
/// the answer unread, when the returned stream is dropped.
fn send_part(d: &Daemon, method: &str, path: &str, body: &str, sent: usize) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(d.admin).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        d.admin,
        body.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&body.as_bytes()[..sent]).expect("body");
    s
}

/// A client gone mid-request: a zone PUT cut short changes nothing; an import abandoned while
/// its zones are being written goes to its end (`admin::zones`: a zone change, once started,
/// is not dropped with its request), and all of it is in force in the engine and on disk, after
/// a kill -9 too, never a part written but not indexed.
#[test]
fn a_client_that_hangs_up_mid_request_leaves_zones_whole() {
    let _turn = heavy_io_turn();
    let mut d = Daemon::start(&["gt06"], "");
    let body = pawnshop("45m");
    drop(send_part(
        &d,
        "PUT",
        "/v1/zones/Z-HALF",
        &body,
        body.len() / 2,
    ));
    let (s, v) = d.api("PUT", "/v1/zones/Z-KEEP", Some(&body));
    assert_eq!(s, 201, "{v}");
    assert_eq!(d.api("GET", "/v1/zones/Z-HALF", None).0, 404);

    // sled's log grows as the import's slices are written: hang up once a few megabytes of
    // its 30,000 zones are in, well before the end.
    let log = d.dir.path().join("data").join("db");
    let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let n = 30_000;
    let features: Vec<serde_json::Value> = (0..n).map(square_feature).collect();
    let fc = json!({"type": "FeatureCollection", "features": features}).to_string();
    let client = send_part(&d, "POST", "/v1/zones", &fc, fc.len());
    wait_for(
        Duration::from_secs(60),
        "the import's first slices on disk",
        || (size() > before + (2 << 20)).then_some(()),
    );
    let all = |d: &Daemon| {
        let (s, v) = d.api("GET", "/v1/zones", None);
        assert_eq!(s, 200, "{v}");
        v["zones"].as_array().map(Vec::len).unwrap_or(0)
    };
    // Still being written (its zones take effect together at the end): the hang-up is mid-way.
    assert_eq!(all(&d), 1, "the import ended before the client hung up");
    drop(client);
    // Z-KEEP and every zone of the import.
    wait_for(
        Duration::from_secs(60),
        "the abandoned import in force",
        || (all(&d) == n + 1).then_some(()),
    );
    d.kill9();
    d.spawn();
    assert_eq!(all(&d), n + 1);
    assert_eq!(d.api("GET", "/v1/zones/Z-HALF", None).0, 404);
}
