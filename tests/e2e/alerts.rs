//! Alerts end to end: the real binary, a GT06 device over real TCP, the admin API and a real
//! HTTP receiver checking every webhook's signature (CONTRACT.md "Alerts", "Webhook delivery",
//! "Rules").

use crate::common::receiver::{self, Receiver};
use crate::common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const IMEI: &str = "868120145233604";
const SECRET: &str = "whsec-test-0123456789";

/// The Part 1 alerts only: the risk tier's own alerts are tested in `risk.rs`.
const PART1_TYPES: &str = r#"types = ["geofence_exit", "geofence_return", "silent_overdue", "reappeared", "power_cut", "power_restored", "tamper"]"#;

fn config(receiver_url: &str, rules: &str) -> String {
    format!("[rules]\n{rules}\n\n[[webhook]]\nurl = \"{receiver_url}\"\nsecret = \"{SECRET}\"\n{PART1_TYPES}\n")
}

fn vehicle(status: &str) -> String {
    json!({
        "vin": "LSVAU2180N2183294",
        "plate": "粤B12345",
        "loan": {"id": "L-2026-0001", "status": status, "days_past_due": 37},
        "devices": [{"id": IMEI, "kind": "wired"}],
        "geofence": {"type": "Circle", "center": [114.057865, 22.543096], "radius_m": 1000}
    })
    .to_string()
}

/// A GT06 0x12 fix; `valid = false` clears the "positioned" bit (protocols.md A.5).
fn fix(serial: u16, min: u8, lat: f64, lon: f64, valid: bool) -> Vec<u8> {
    let mut c = vec![24, 5, 20, 10, min, 0, 0xC9];
    c.extend_from_slice(&((lat * 1_800_000.0).round() as u32).to_be_bytes());
    c.extend_from_slice(&((lon * 1_800_000.0).round() as u32).to_be_bytes());
    let status: u16 = if valid { 0x145A } else { 0x045A };
    c.push(0x3C);
    c.extend_from_slice(&status.to_be_bytes());
    c.extend_from_slice(&[0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31]);
    gt06_frame(0x12, &c, serial)
}

/// Every alert the daemon has raised, newest first. An alert is committed before the reply that
/// acknowledges the fix raising it, so right after that reply this is complete.
fn raised(d: &Daemon) -> Vec<serde_json::Value> {
    let (s, v) = d.api("GET", "/v1/alerts", None);
    assert_eq!(s, 200, "{v}");
    v["alerts"].as_array().cloned().unwrap_or_default()
}

fn verify(r: &receiver::Request) {
    use hmac::{KeyInit, Mac};
    let ts = r.header("X-Lienwatch-Timestamp").expect("timestamp header");
    let sig = r.header("X-Lienwatch-Signature").expect("signature header");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, want, "signature");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let now = lienwatch::event::Timestamp::now().secs();
    assert!(
        (now - ts.parse::<i64>().unwrap()).abs() < 60,
        "timestamp is unix seconds of the attempt"
    );
    assert_eq!(
        r.header("X-Lienwatch-Alert-Id"),
        r.json()["id"].as_str(),
        "id header matches body"
    );
}

#[test]
fn geofence_exit_and_return_are_delivered_signed_and_invalid_fixes_never_count() {
    let rx = Receiver::start();
    let d = Daemon::start(&["gt06"], &config(&rx.url(), ""));
    let (s, v) = d.api("PUT", "/v1/vehicles/V-1", Some(&vehicle("overdue")));
    assert_eq!(s, 201, "{v}");

    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    // Inside: nothing.
    dev.exchange_bytes(&fix(2, 0, 22.5431, 114.0579, true), &gt06_ack(0x12, 2));
    // Far outside but not positioned, then 0/0: never count.
    dev.exchange_bytes(&fix(3, 1, 22.60, 114.057865, false), &gt06_ack(0x12, 3));
    dev.exchange_bytes(&fix(4, 2, 0.0, 0.0, true), &gt06_ack(0x12, 4));
    // Just outside the fence but within the 50 m margin: nothing.
    dev.exchange_bytes(
        &fix(5, 3, 22.543096 + 1020.0 / 111_195.0, 114.057865, true),
        &gt06_ack(0x12, 5),
    );
    assert_eq!(
        raised(&d),
        Vec::<serde_json::Value>::new(),
        "no alert for inside, invalid, 0/0 or in-margin fixes"
    );
    assert!(
        rx.all().is_empty(),
        "no alert for inside, invalid, 0/0 or in-margin fixes: {:?}",
        rx.all().len()
    );

    // 6.3 km north: exit, delivered within a second or so.
    let sent = Instant::now();
    dev.exchange_bytes(&fix(6, 4, 22.60, 114.057865, true), &gt06_ack(0x12, 6));
    let got = rx.wait_for(Duration::from_secs(5), "geofence_exit", |a| !a.is_empty());
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "raised and delivered promptly"
    );
    let r = &got[0];
    verify(r);
    let a = r.json();
    assert_eq!(a["type"], "geofence_exit");
    assert_eq!(a["vehicle_id"], "V-1");
    assert_eq!(a["device_id"], IMEI);
    assert_eq!(a["vin"], "LSVAU2180N2183294");
    assert_eq!(a["plate"], "粤B12345");
    assert_eq!(
        a["loan"],
        json!({"id": "L-2026-0001", "status": "overdue", "days_past_due": 37})
    );
    assert_eq!(a["position"]["time"], "2024-05-20T10:04:00Z");
    assert!((a["position"]["lat"].as_f64().unwrap() - 22.60).abs() < 1e-5);
    assert!(a["detected_at"].as_str().is_some());
    let dist = a["details"]["distance_outside_m"].as_f64().unwrap();
    assert!((5200.0..5400.0).contains(&dist), "distance outside {dist}");
    assert!(a["id"].as_str().is_some_and(|s| !s.is_empty()));

    // Still outside: one alert per excursion.
    dev.exchange_bytes(&fix(7, 5, 22.61, 114.057865, true), &gt06_ack(0x12, 7));
    // Back inside: geofence_return.
    dev.exchange_bytes(&fix(8, 6, 22.5431, 114.0579, true), &gt06_ack(0x12, 8));
    let all = rx.wait_for(Duration::from_secs(5), "geofence_return", |a| a.len() >= 2);
    // Both alerts delivered, one attempt each: the receiver has all it will ever get.
    wait_for(Duration::from_secs(5), "both alerts delivered", || {
        let r = raised(&d);
        (r.len() >= 2 && r.iter().all(|a| a["state"] == "delivered")).then_some(())
    });
    assert!(raised(&d).iter().all(|a| a["attempts"] == 1));
    let all2 = rx.all();
    let types: Vec<(serde_json::Value, serde_json::Value)> = all2
        .iter()
        .map(|r| (r.json()["type"].clone(), r.json()["id"].clone()))
        .collect();
    assert_eq!(all2.len(), 2, "exactly exit then return: {types:?}");
    assert_eq!(all[1].json()["type"], "geofence_return");
    verify(&all[1]);

    // GET /v1/alerts shows both, delivered, newest first.
    let (s, v) = d.api("GET", "/v1/alerts?state=delivered", None);
    assert_eq!(s, 200, "{v}");
    let list = v["alerts"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    assert_eq!(list[0]["type"], "geofence_return");
    assert_eq!(list[0]["state"], "delivered");
    assert_eq!(list[1]["attempts"], 1);
    // One vehicle's alerts, as its console page asks for them.
    let (s, v) = d.api("GET", "/v1/alerts?vehicle_id=V-1&limit=1", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["alerts"][0]["type"], "geofence_return", "{v}");
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = d.api("GET", "/v1/alerts?vehicle_id=V-2", None);
    assert_eq!(v["alerts"], serde_json::json!([]), "{v}");

    // GET /v1/vehicles shows the device with its last-known position.
    let (s, v) = d.api("GET", "/v1/vehicles/V-1", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["devices"][0]["position"]["time"], "2024-05-20T10:06:00Z",
        "{v}"
    );
    assert_eq!(v["loan"]["status"], "overdue");
}

#[test]
fn silence_while_overdue_then_reappeared() {
    let rx = Receiver::start();
    let d = Daemon::start(
        &["gt06"],
        &config(&rx.url(), "silence_after = \"2s\"\nstartup_grace = \"0s\""),
    );
    let (s, v) = d.api("PUT", "/v1/vehicles/V-2", Some(&vehicle("current")));
    assert_eq!(s, 201, "{v}");
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(&fix(2, 0, 22.5431, 114.0579, true), &gt06_ack(0x12, 2));
    // A current loan: silence raises nothing. The device must really stay silent past its
    // threshold (2 s), so real time passes here.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(raised(&d), Vec::<serde_json::Value>::new());
    assert!(rx.of_type("silent_overdue").is_empty());
    // The loan turns overdue while the device is already silent: alert at once.
    let t = Instant::now();
    let (s, v) = d.api(
        "PUT",
        "/v1/loans/L-2026-0001",
        Some(r#"{"status": "overdue", "days_past_due": 31}"#),
    );
    assert_eq!(s, 200, "{v}");
    let got = rx.wait_for(Duration::from_secs(3), "silent_overdue", |a| !a.is_empty());
    assert!(t.elapsed() < Duration::from_secs(2));
    let a = got[0].json();
    verify(&got[0]);
    assert_eq!(a["type"], "silent_overdue");
    assert_eq!(a["loan"]["days_past_due"], 31);
    assert_eq!(a["position"]["time"], "2024-05-20T10:00:00Z");
    // One alert per silence: a second threshold of real silence passes without a second alert.
    std::thread::sleep(Duration::from_millis(2500));
    let silences = raised(&d)
        .iter()
        .filter(|a| a["type"] == "silent_overdue")
        .count();
    assert_eq!(silences, 1);
    assert_eq!(rx.of_type("silent_overdue").len(), 1);
    // It speaks again: reappeared, with its new position.
    dev.exchange_bytes(&fix(3, 30, 22.5432, 114.0578, true), &gt06_ack(0x12, 3));
    let got = rx.wait_for(Duration::from_secs(3), "reappeared", |a| {
        a.iter().any(|r| r.json()["type"] == "reappeared")
    });
    let re = got
        .iter()
        .find(|r| r.json()["type"] == "reappeared")
        .unwrap()
        .json();
    assert_eq!(re["position"]["time"], "2024-05-20T10:30:00Z");
    // And goes silent again past its threshold: a new silence alert.
    rx.wait_for(Duration::from_secs(6), "second silence", |a| {
        a.iter()
            .filter(|r| r.json()["type"] == "silent_overdue")
            .count()
            == 2
    });
}

#[test]
fn a_failing_receiver_gets_the_same_alert_id_until_it_succeeds() {
    let rx = Receiver::start();
    rx.fail_next(&[500, 503]);
    let d = Daemon::start(&["gt06"], &config(&rx.url(), ""));
    d.api("PUT", "/v1/vehicles/V-3", Some(&vehicle("overdue")));
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(&fix(2, 0, 22.70, 114.057865, true), &gt06_ack(0x12, 2));
    let all = rx.wait_for(Duration::from_secs(30), "third attempt", |a| a.len() >= 3);
    let ids: Vec<&str> = all
        .iter()
        .map(|r| r.header("X-Lienwatch-Alert-Id").unwrap())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "same id on every attempt: {ids:?}"
    );
    assert!(
        all.iter().all(|r| r.body == all[0].body),
        "same body on every attempt"
    );
    for r in &all {
        verify(r);
    }
    let a = wait_for(Duration::from_secs(5), "marked delivered", || {
        raised(&d)
            .into_iter()
            .next()
            .filter(|a| a["state"] == "delivered")
    });
    assert_eq!(a["attempts"], 3, "{a}");
}

#[test]
fn an_alert_raised_while_the_receiver_is_down_survives_sigkill() {
    // The receiver's port is reserved but nothing listens yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let mut d = Daemon::start(&["gt06"], &config(&url, ""));
    d.api("PUT", "/v1/vehicles/V-4", Some(&vehicle("overdue")));
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(&fix(2, 0, 22.70, 114.057865, true), &gt06_ack(0x12, 2));
    // Pending, with failed attempts.
    let id = wait_for(Duration::from_secs(5), "alert pending", || {
        let (_, v) = d.api("GET", "/v1/alerts?state=pending", None);
        let first = v["alerts"].as_array().and_then(|l| l.first().cloned())?;
        first["id"].as_str().map(str::to_string)
    });
    d.kill9();
    let rx = Receiver::start_at(format!("127.0.0.1:{port}").parse().unwrap());
    d.spawn();
    let got = rx.wait_for(Duration::from_secs(10), "alert after restart", |a| {
        !a.is_empty()
    });
    assert_eq!(got[0].header("X-Lienwatch-Alert-Id"), Some(id.as_str()));
    assert_eq!(got[0].json()["type"], "geofence_exit");
    verify(&got[0]);
}

#[test]
fn closed_loans_stay_quiet_and_bad_requests_change_nothing() {
    let rx = Receiver::start();
    let d = Daemon::start(
        &["gt06"],
        &config(&rx.url(), "silence_after = \"1s\"\nstartup_grace = \"0s\""),
    );
    // Bad bodies: 400 naming the problem, nothing stored.
    let bad = json!({
        "loan": {"id": "L-9", "status": "overdue"},
        "devices": [{"id": IMEI}],
        "geofence": {"type": "Polygon", "coordinates": [[[113.9, 22.5], [114.1, 22.5], [114.1, 22.7], [113.9, 22.7]]]}
    });
    let (s, v) = d.api("PUT", "/v1/vehicles/V-5", Some(&bad.to_string()));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("closed"), "{v}");
    let (s, v) = d.api("PUT", "/v1/vehicles/V-5", Some(r#"{"loan": {"id": "L-9", "status": "overdue"}, "devices": [{"id": "1"}], "colour": "red"}"#));
    assert_eq!(s, 400, "{v}");
    let (s, _) = d.api("PUT", "/v1/vehicles/V-5", Some("{not json"));
    assert_eq!(s, 400);
    let (s, _) = d.api("GET", "/v1/vehicles/V-5", None);
    assert_eq!(s, 404, "nothing stored");
    // Without the token: 401, nothing stored.
    let (s, _) = http(
        d.admin,
        "PUT",
        "/v1/vehicles/V-5",
        Some(&vehicle("closed")),
        None,
    )
    .unwrap();
    assert_eq!(s, 401);
    let (s, _) = d.api("GET", "/v1/vehicles/V-5", None);
    assert_eq!(s, 404);

    // A closed loan: exits and silence raise nothing.
    let (s, _) = d.api("PUT", "/v1/vehicles/V-5", Some(&vehicle("closed")));
    assert_eq!(s, 201);
    // The same device on a second vehicle is a conflict.
    let (s, v) = d.api("PUT", "/v1/vehicles/V-6", Some(&vehicle("overdue")));
    assert_eq!(s, 409, "{v}");
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(&fix(2, 0, 22.70, 114.057865, true), &gt06_ack(0x12, 2));
    // The exit would be committed before the reply: none.
    assert_eq!(raised(&d), Vec::<serde_json::Value>::new(), "no exit alert");
    // Silence needs real time: past its threshold (1 s), still nothing.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(rx.all().is_empty(), "closed loan stays quiet");
    let (_, v) = d.api("GET", "/v1/alerts", None);
    assert_eq!(v["alerts"], json!([]));
}

#[test]
fn unknown_devices_are_refused_when_accept_unknown_is_false() {
    let d = Daemon::start(&["gt06"], "[ingest]\naccept_unknown = false\n");
    let mut stranger = d.connect("gt06");
    stranger.send(&gt06_login("868120145230001", 1));
    assert!(
        stranger.closed_by_server(Duration::from_secs(3)),
        "refused: no reply, closed"
    );
    let (s, _) = d.api("PUT", "/v1/vehicles/V-7", Some(&vehicle("current")));
    assert_eq!(s, 201);
    let mut known = d.connect("gt06");
    known.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    let (_, m) = http(d.admin, "GET", "/metrics", None, None).unwrap();
    assert!(
        m.contains("lienwatch_devices_refused_total"),
        "refusals are counted"
    );
    let (s, _) = d.api("GET", "/v1/devices/868120145230001", None);
    assert_eq!(s, 404, "a refused device is not stored");
}

#[test]
fn a_restart_neither_repeats_nor_forgets_an_excursion() {
    let rx = Receiver::start();
    let mut d = Daemon::start(&["gt06"], &config(&rx.url(), ""));
    d.api("PUT", "/v1/vehicles/V-8", Some(&vehicle("overdue")));
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(&fix(2, 0, 22.70, 114.057865, true), &gt06_ack(0x12, 2));
    rx.wait_for(Duration::from_secs(5), "exit", |a| a.len() == 1);
    d.kill9();
    d.spawn();
    // Still outside after the restart: the excursion is remembered, no second exit.
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(&fix(2, 1, 22.71, 114.057865, true), &gt06_ack(0x12, 2));
    // A second exit would be committed before that reply.
    let exits = raised(&d)
        .iter()
        .filter(|a| a["type"] == "geofence_exit")
        .count();
    assert_eq!(exits, 1, "no second exit alert after restart");
    // And the return is not forgotten.
    dev.exchange_bytes(&fix(3, 2, 22.5431, 114.0579, true), &gt06_ack(0x12, 3));
    rx.wait_for(Duration::from_secs(5), "return after restart", |a| {
        a.iter().any(|r| r.json()["type"] == "geofence_return")
    });
    // Delivery is at least once (a kill can lose the record of a success, and the alert is sent
    // again with its id); what must not happen is a second alert. The return was raised after
    // anything the still-outside fix could have raised, and is delivered now.
    let mut ids: Vec<String> = rx
        .of_type("geofence_exit")
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "no second exit alert after restart: {ids:?}");
}

#[test]
fn a_province_sized_fence_of_megabytes_is_accepted_and_used() {
    let rx = Receiver::start();
    let d = Daemon::start(&["gt06"], &config(&rx.url(), ""));
    // A 60,000-vertex ring (about 2.5 MB of GeoJSON) around the Pearl River delta.
    let n = 60_000;
    let mut ring: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            let r = 1.5 + 0.05 * (a * 40.0).sin();
            [113.5 + r * a.cos(), 22.8 + r * a.sin()]
        })
        .collect();
    ring.push(ring[0]);
    let body = json!({
        "loan": {"id": "L-P", "status": "overdue"},
        "devices": [{"id": IMEI}],
        "geofence": {"type": "Polygon", "coordinates": [ring]}
    })
    .to_string();
    assert!(body.len() > 2_000_000, "{} bytes", body.len());
    let (s, v) = d.api("PUT", "/v1/vehicles/V-P", Some(&body));
    assert_eq!(s, 201, "{v}");
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(&fix(2, 0, 22.543096, 114.057865, true), &gt06_ack(0x12, 2));
    assert_eq!(
        raised(&d),
        Vec::<serde_json::Value>::new(),
        "Shenzhen is inside"
    );
    assert!(rx.all().is_empty(), "Shenzhen is inside");
    dev.exchange_bytes(&fix(3, 1, 25.0, 116.0, true), &gt06_ack(0x12, 3));
    let got = rx.wait_for(Duration::from_secs(5), "exit from the big fence", |a| {
        !a.is_empty()
    });
    assert_eq!(got[0].json()["type"], "geofence_exit");
}

/// An unnamed webhook's default name shows no part of its URL's path, where chat bots carry
/// their token, so `/metrics` (no token needed) does not show it. Deliveries a store holds under
/// the URL-with-path name of earlier releases move to the new name at start and still go out.
#[test]
fn an_unnamed_webhook_keeps_its_path_out_of_metrics_and_its_old_deliveries() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/t0ken-in-path");
    let mut d = Daemon::configure(&["gt06"], &config(&url, ""));
    {
        // A store written by an earlier release: one alert pending under the old name.
        let store = lienwatch::store::Store::open(&d.dir.path().join("data"), 8).unwrap();
        let ob = store
            .open_outbox(
                std::slice::from_ref(&url),
                std::sync::Arc::new(lienwatch::time::Timestamp::now),
            )
            .unwrap();
        let old = crate::webhook_delivery::alert("old-1", lienwatch::alert::AlertType::Tamper);
        ob.insert(&old, &[0]).unwrap();
        store.flush().unwrap();
    }
    let rx = Receiver::start_at(format!("127.0.0.1:{port}").parse().unwrap());
    d.spawn();
    let got = rx.wait_for(Duration::from_secs(10), "the old alert", |a| !a.is_empty());
    assert_eq!(got[0].header("X-Lienwatch-Alert-Id"), Some("old-1"));
    verify(&got[0]);
    let metrics = d.scrape();
    assert!(metrics.contains("lienwatch_webhook_pending"), "{metrics}");
    assert!(!metrics.contains("t0ken"), "the path reached /metrics");
    let (_, v) = d.api("GET", "/v1/alerts", None);
    assert!(!v.to_string().contains("t0ken"), "{v}");
}
