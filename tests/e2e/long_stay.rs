//! `long_stay` end to end, with the real binary, a GT06 unit over real TCP and a real webhook
//! receiver: a long stay at a usual place and at an unusual one. The car's past days reach the
//! daemon as the late fixes a tracker uploads from its memory (so the history holds its places,
//! and being old they raise nothing); its stays now are live, and `long_stay_after` is seconds, so
//! the threshold passes in real time on the daemon's clock, with no fix at that moment.

use crate::common::receiver::{Receiver, Request};
use crate::common::*;
use lienwatch::time::Timestamp;
use serde_json::json;
use std::time::Duration;

const IMEI: &str = "868120145233604";
const HOME: (f64, f64) = (22.543096, 114.057865);
const WORK: (f64, f64) = (22.589861, 114.120183);
/// A lot 11 km from home the car has never been to.
const LOT: (f64, f64) = (22.619538, 113.979967);
const H: i64 = 3_600_000;
const MIN: i64 = 60_000;

fn config(receiver_url: &str) -> String {
    format!(
        "[rules]\nstay_min = \"1s\"\nlong_stay_after = \"3s\"\n\n[[webhook]]\nurl = \"{receiver_url}\"\nsecret = \"stay-secret\"\ntypes = [\"long_stay\", \"risk_tier_changed\"]\n"
    )
}

fn between(a: (f64, f64), b: (f64, f64), f: f64) -> (f64, f64) {
    (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f)
}

/// The GT06 unit, numbering its frames and keeping its fix times in order.
struct Unit {
    dev: Device,
    serial: u16,
    last: Timestamp,
}

impl Unit {
    fn login(d: &Daemon) -> Unit {
        let mut dev = d.connect("gt06");
        dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
        Unit {
            dev,
            serial: 1,
            last: Timestamp::from_millis(0),
        }
    }

    /// Sends a fix taken at `t` and waits for its acknowledgement (it is committed).
    fn fix_at(&mut self, t: Timestamp, p: (f64, f64)) {
        self.serial += 1;
        let s = self.serial;
        self.dev.exchange_bytes(
            &gt06_location(s, gt06_civil(t), p.0, p.1),
            &gt06_ack(0x12, s),
        );
        self.last = t;
    }

    /// A live fix: taken now (whole seconds, as GT06 carries them), a second after the previous
    /// one at the earliest.
    fn live(&mut self, p: (f64, f64)) -> Timestamp {
        let now = Timestamp::from_millis(Timestamp::now().millis() / 1000 * 1000);
        let t = now.max(self.last.add_millis(1000));
        self.fix_at(t, p);
        t
    }

    /// Three days of nights at home and days at work, up to last night at home. Returns when
    /// the car came home last evening.
    fn upload_past_days(&mut self) -> Timestamp {
        let midnight = Timestamp::now().millis() / (24 * H) * (24 * H);
        let mut home_since = 0;
        for d in (1..=3).rev() {
            let day = midnight - d * 24 * H;
            let mut fixes: Vec<(i64, (f64, f64))> =
                (0..=4).map(|i| (day + 2 * i * H, HOME)).collect();
            for i in 1..=3 {
                fixes.push((
                    day + 8 * H + 10 * i * MIN,
                    between(HOME, WORK, i as f64 / 4.0),
                ));
            }
            fixes.extend((0..=4).map(|i| (day + 8 * H + 40 * MIN + 2 * i * H, WORK)));
            for i in 1..=3 {
                fixes.push((
                    day + 17 * H + 10 * i * MIN,
                    between(WORK, HOME, i as f64 / 4.0),
                ));
            }
            home_since = day + 17 * H + 40 * MIN;
            fixes.extend((0..=3).map(|i| (home_since + 2 * i * H, HOME)));
            for (t, p) in fixes {
                self.fix_at(Timestamp::from_millis(t), p);
            }
        }
        Timestamp::from_millis(home_since)
    }

    /// A heartbeat (0x13: alive, no fix), once the daemon's clock is a second past the
    /// threshold of the stay that began at `since`. Until the car is heard from past it, its
    /// stay is not known to have lasted (it counts up to the last word, as for places). Returns
    /// when it was sent.
    fn heartbeat_past_threshold(&mut self, since: Timestamp) -> Timestamp {
        let past = since.add_millis(4_000);
        wait_for(Duration::from_secs(30), "the threshold to pass", || {
            (Timestamp::now() >= past).then_some(())
        });
        self.serial += 1;
        let s = self.serial;
        let sent = Timestamp::now();
        self.dev.exchange_bytes(
            &gt06_frame(0x13, &[0x46, 0x06, 0x04, 0x00, 0x02], s),
            &gt06_ack(0x13, s),
        );
        sent
    }

    /// Drives from `a` towards `b` (three fixes on the way: the departure is proven).
    fn drive(&mut self, a: (f64, f64), b: (f64, f64)) {
        for i in 1..=3 {
            self.live(between(a, b, i as f64 / 4.0));
        }
    }
}

fn long_stays(rx: &Receiver) -> Vec<serde_json::Value> {
    rx.of_type("long_stay").iter().map(Request::json).collect()
}

fn risk_codes(d: &Daemon) -> Vec<String> {
    let (s, v) = d.api("GET", "/v1/vehicles/V-LS", None);
    assert_eq!(s, 200, "{v}");
    v["risk"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str().map(str::to_string))
        .collect()
}

fn near(a: &serde_json::Value, p: (f64, f64), metres: f64) -> bool {
    let (lat, lon) = (a["lat"].as_f64().unwrap(), a["lon"].as_f64().unwrap());
    let dy = (lat - p.0) * 111_195.0;
    let dx = (lon - p.1) * 111_195.0 * p.0.to_radians().cos();
    dx.hypot(dy) <= metres
}

#[test]
fn long_stay_at_home_is_usual_at_a_strange_lot_unusual_and_holds_a_risk_reason_until_it_leaves() {
    let rx = Receiver::start();
    let mut d = Daemon::start(&["gt06"], &config(&rx.url()));
    let body = json!({"loan": {"id": "L-LS", "status": "current"}, "devices": [{"id": IMEI, "kind": "wired"}]});
    let (s, v) = d.api("PUT", "/v1/vehicles/V-LS", Some(&body.to_string()));
    assert_eq!(s, 201, "{v}");
    let mut u = Unit::login(&d);
    let home_since = u.upload_past_days();
    // Old stays of hours, far past the threshold: uploaded late, they raise nothing.
    let (_, places) = d.api("GET", "/v1/vehicles/V-LS/places?days=30", None);
    let ps = places["places"].as_array().unwrap();
    assert!(ps.len() >= 2 && near(&ps[0], HOME, 100.0), "{places}");
    assert!(near(&ps[1], WORK, 100.0), "{places}");
    assert!(long_stays(&rx).is_empty());

    // A live fix at home: the car has been there since last evening, long past the threshold.
    u.live(HOME);
    let got = rx.wait_for(Duration::from_secs(15), "long_stay at home", |a| {
        a.iter().any(|r| r.json()["type"] == "long_stay")
    });
    let a = got
        .iter()
        .find(|r| r.json()["type"] == "long_stay")
        .unwrap()
        .json();
    assert_eq!(a["vehicle_id"], "V-LS");
    assert_eq!(a["device_id"], IMEI);
    // Home is the largest place of the days before it came home.
    assert_eq!(a["details"]["usual_place"], true, "{a}");
    assert_eq!(a["details"]["since"], json!(home_since));
    assert!(near(&a["details"], HOME, 30.0), "{a}");
    let detected = Timestamp::parse_rfc3339(a["detected_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        a["details"]["stayed_s"].as_i64().unwrap(),
        detected.since(home_since) / 1000,
        "{a}"
    );
    // A usual place adds no risk.
    assert!(!risk_codes(&d).contains(&"long_stay_unusual".to_string()));

    // Off to a lot it has never been to: the home episode ends, a new one begins there. Two
    // fixes, then nothing past the threshold: no alert until the car is heard from again.
    u.drive(HOME, LOT);
    let lot_since = u.live(LOT);
    u.live(LOT);
    let heard = u.heartbeat_past_threshold(lot_since);
    let got = rx.wait_for(Duration::from_secs(15), "long_stay at the lot", |a| {
        a.iter().filter(|r| r.json()["type"] == "long_stay").count() == 2
            && a.iter().any(|r| r.json()["type"] == "risk_tier_changed")
    });
    let lot = long_stays(&rx)[1].clone();
    assert_eq!(lot["details"]["usual_place"], false, "{lot}");
    assert!(near(&lot["details"], LOT, 30.0), "{lot}");
    assert_eq!(lot["details"]["since"], json!(lot_since));
    let detected = Timestamp::parse_rfc3339(lot["detected_at"].as_str().unwrap()).unwrap();
    assert!(
        detected >= heard,
        "raised at the heartbeat, not at the threshold: {lot}"
    );
    assert!(lot["details"]["stayed_s"].as_i64().unwrap() >= 3, "{lot}");
    let tier = got
        .iter()
        .find(|r| r.json()["type"] == "risk_tier_changed")
        .unwrap()
        .json();
    assert_eq!(tier["details"]["to"], "low", "{tier}");
    assert_eq!(tier["details"]["reasons"][0]["code"], "long_stay_unusual");
    assert_eq!(risk_codes(&d), ["long_stay_unusual"]);

    // A restart in the episode: it is remembered, so more fixes at the lot raise nothing.
    assert_eq!(d.terminate(), Some(0));
    d.spawn();
    let mut u2 = Unit::login(&d);
    u2.last = u.last;
    u2.serial = u.serial;
    u2.live(LOT);
    assert_eq!(risk_codes(&d), ["long_stay_unusual"]);
    // It drives off: the episode, and the reason, end with the departure's commit.
    u2.drive(LOT, HOME);
    assert!(risk_codes(&d).is_empty(), "{:?}", risk_codes(&d));
    assert_eq!(long_stays(&rx).len(), 2, "one per episode");

    // Back at the lot for another unusual stay; then the loan is closed and opened again. The
    // closed loan forgot the episode, so the reason goes with it instead of holding for good.
    u2.drive(HOME, LOT);
    let since = u2.live(LOT);
    u2.live(LOT);
    u2.heartbeat_past_threshold(since);
    rx.wait_for(
        Duration::from_secs(15),
        "a second long_stay at the lot",
        |a| a.iter().filter(|r| r.json()["type"] == "long_stay").count() == 3,
    );
    assert_eq!(risk_codes(&d), ["long_stay_unusual"]);
    for status in ["closed", "overdue"] {
        let body = json!({"status": status, "days_past_due": 40}).to_string();
        let (s, v) = d.api("PUT", "/v1/loans/L-LS", Some(&body));
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(risk_codes(&d), ["overdue_31_90"]);
}
