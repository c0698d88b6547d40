//! Trust at the edges (CONTRACT.md "Trust at the edges"), end to end over real sockets: a device
//! clock from the future, a big admin PUT while devices wait for their acks, webhooks behind a
//! private CA.

use crate::common::receiver::Receiver;
use crate::common::tls::make_certs;
use crate::common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const IMEI: &str = "868120145233604";

fn vehicle() -> String {
    json!({
        "loan": {"id": "L-1", "status": "overdue", "days_past_due": 40},
        "devices": [{"id": IMEI, "kind": "wired"}],
        "geofence": {"type": "Circle", "center": [114.057865, 22.543096], "radius_m": 1000}
    })
    .to_string()
}

fn alerts(d: &Daemon) -> Vec<serde_json::Value> {
    let (s, v) = d.api("GET", "/v1/alerts", None);
    assert_eq!(s, 200, "{v}");
    v["alerts"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_fix_from_the_future_is_acknowledged_but_good_fixes_win_and_no_rule_sees_it() {
    let d = Daemon::start(&["gt06"], "");
    assert_eq!(d.api("PUT", "/v1/vehicles/V-1", Some(&vehicle())).0, 201);
    assert_eq!(
        d.metric("lienwatch_fixes_suspect_total", &[("reason", "future")]),
        0.0
    );
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));

    // Whole seconds: a GT06 fix carries no milliseconds.
    let now = lienwatch::event::Timestamp::from_secs(lienwatch::event::Timestamp::now().secs());
    // A year ahead and 6 km outside the fence: answered, so the device stops resending it.
    let future = now.add(Duration::from_secs(365 * 86_400));
    dev.exchange_bytes(
        &gt06_location(2, gt06_civil(future), 22.6, 114.057865),
        &gt06_ack(0x12, 2),
    );
    assert!(alerts(&d).is_empty(), "no rule saw the future fix");
    assert_eq!(
        d.metric("lienwatch_fixes_suspect_total", &[("reason", "future")]),
        1.0
    );

    // Genuine fixes after it: inside, then outside. Each becomes the last-known position.
    let t1 = now.add_millis(-60_000);
    dev.exchange_bytes(
        &gt06_location(3, gt06_civil(t1), 22.543096, 114.057865),
        &gt06_ack(0x12, 3),
    );
    let (_, dv) = d.api("GET", &format!("/v1/devices/{IMEI}"), None);
    assert_eq!(dv["position"]["time"], t1.to_string(), "{dv}");
    let t2 = now.add_millis(-30_000);
    dev.exchange_bytes(
        &gt06_location(4, gt06_civil(t2), 22.6, 114.057865),
        &gt06_ack(0x12, 4),
    );
    let (_, dv) = d.api("GET", &format!("/v1/devices/{IMEI}"), None);
    assert_eq!(dv["position"]["time"], t2.to_string(), "{dv}");
    let a = alerts(&d);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["type"], "geofence_exit");
    assert_eq!(a[0]["position"]["time"], t2.to_string());

    // A tamper alarm (0x26, code 0x13) on a fix dated a year ahead: the fix stays out, the
    // alarm is still the tracker's, raised with the last trusted position.
    let (y, mo, dd, h, mi, se) = gt06_civil(future.add(Duration::from_secs(60)));
    let mut c = vec![y, mo, dd, h, mi, se, 0xC9];
    c.extend_from_slice(&((23.0f64 * 1_800_000.0).round() as u32).to_be_bytes());
    c.extend_from_slice(&((114.0f64 * 1_800_000.0).round() as u32).to_be_bytes());
    c.extend_from_slice(&[
        0x00, 0x14, 0x5A, 0x09, 0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31,
    ]);
    c.extend_from_slice(&[0x46, 0x04, 0x03, 0x13, 0x02]);
    dev.exchange_bytes(&gt06_frame(0x26, &c, 5), &gt06_ack(0x26, 5));
    let a = alerts(&d);
    let tamper: Vec<_> = a.iter().filter(|x| x["type"] == "tamper").collect();
    assert_eq!(tamper.len(), 1, "{a:?}");
    assert_eq!(tamper[0]["position"]["time"], t2.to_string());
    let (_, dv) = d.api("GET", &format!("/v1/devices/{IMEI}"), None);
    assert_eq!(dv["position"]["time"], t2.to_string(), "{dv}");
}

/// A square ring of about `n` vertices around Guangdong, as GeoJSON text. Positions carry an
/// altitude (as survey exports do), so 12 MB is reached with fewer vertices.
fn big_fence(n: usize) -> String {
    let side = n / 4;
    let mut pts = Vec::with_capacity(n + 1);
    for i in 0..side {
        pts.push([109.0 + 8.0 * i as f64 / side as f64, 20.0]);
    }
    for i in 0..side {
        pts.push([117.0, 20.0 + 5.0 * i as f64 / side as f64]);
    }
    for i in 0..side {
        pts.push([117.0 - 8.0 * i as f64 / side as f64, 25.0]);
    }
    for i in 0..side {
        pts.push([109.0, 25.0 - 5.0 * i as f64 / side as f64]);
    }
    let pts: Vec<[f64; 3]> = pts
        .iter()
        .chain(std::iter::once(&pts[0]))
        .enumerate()
        .map(|(i, p)| [p[0], p[1], 12.345678901234 + (i % 1000) as f64 * 0.001])
        .collect();
    let last = pts.len() - 1;
    let mut pts = pts;
    pts[last][2] = pts[0][2];
    json!({
        "loan": {"id": "L-BIG", "status": "current"},
        "devices": [{"id": "990000000000001", "kind": "wired"}],
        "geofence": {"type": "Polygon", "coordinates": [pts]}
    })
    .to_string()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Runs of the same request, of which all but one must keep every ack within budget: a shared
/// machine can hold a whole process now and then (the same second showed in two daemons at
/// once), while heavy work on the ack path stalls most runs.
const ATTEMPTS: usize = 3;

/// Times a device's acks before and while an admin request runs (on a thread of its own);
/// asserts the request's status (`statuses[i]` for attempt `i`: a repeated PUT replaces) and
/// that no ack waited much longer than before, in all but one of [`ATTEMPTS`] runs of the
/// same request (stopping once that is decided). Returns the last request's answer.
fn acks_do_not_wait_for(
    d: &Daemon,
    what: &str,
    method: &'static str,
    path: &'static str,
    body: String,
    statuses: [u16; ATTEMPTS],
) -> String {
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    let t = gt06_civil(lienwatch::event::Timestamp::now().add_millis(-60_000));
    let mut serial = 2u16;
    let mut ack = |dev: &mut Device| {
        let started = Instant::now();
        dev.exchange_bytes(
            &gt06_location(serial, t, 22.5, 114.0),
            &gt06_ack(0x12, serial),
        );
        serial = serial.wrapping_add(1);
        started.elapsed()
    };
    let mut stalls = Vec::new();
    let mut clean = 0;
    let mut last = String::new();
    for status in statuses {
        let mut before: Vec<Duration> = (0..100).map(|_| ack(&mut dev)).collect();
        let admin = d.admin;
        let body = body.clone();
        let call = std::thread::spawn(move || {
            let started = Instant::now();
            let r = http(admin, method, path, Some(&body), Some(TOKEN));
            (r, started.elapsed())
        });
        let mut during = Vec::new();
        let mut slow = Vec::new();
        let started = Instant::now();
        while !call.is_finished() {
            let at = started.elapsed();
            let took = ack(&mut dev);
            if took > Duration::from_millis(100) {
                slow.push((at, took));
            }
            during.push(took);
        }
        let (r, took) = call.join().unwrap();
        let (got, text) = r.expect("answered");
        assert_eq!(got, status, "{}", &text[..text.len().min(300)]);
        let (b50, b99) = (percentile(&mut before, 0.5), percentile(&mut before, 0.99));
        let worst = during.iter().max().copied().unwrap_or_default();
        let d99 = if during.is_empty() {
            Duration::ZERO
        } else {
            percentile(&mut during, 0.99)
        };
        println!(
            "ack latency: before p50 {b50:?} p99 {b99:?}; during {what} ({took:?}, {} acks) p99 {d99:?}, worst {worst:?}",
            during.len()
        );
        // The contract's budget is 50 ms added; asserted loosely here, as a shared CI machine's
        // scheduler adds noise of its own.
        if worst < b99 + Duration::from_millis(500) {
            clean += 1;
            last = text;
            if clean == ATTEMPTS - 1 {
                return last;
            }
            continue;
        }
        // Where the time went: the daemon's slowest group commit says whether its own
        // commits (apply and flush) were slow or the wait was elsewhere.
        let slowest_commit = d.metric("lienwatch_commit_seconds", &[("quantile", "1")]);
        println!(
            "an ack waited {worst:?} (p99 before {b99:?}); acks over 100 ms (offset, wait): {slow:?}; \
             slowest commit {slowest_commit:.3} s"
        );
        stalls.push(worst);
        last = text;
        assert!(
            stalls.len() < 2,
            "an ack waited {stalls:?} during {what}, in {} of the runs",
            stalls.len()
        );
    }
    last
}

#[test]
fn a_12_mb_fence_put_does_not_stall_device_acks() {
    let _turn = heavy_io_turn();
    let d = Daemon::start(&["gt06"], "");
    let body = big_fence(300_000);
    assert!(body.len() > 12_000_000, "{} bytes", body.len());
    acks_do_not_wait_for(
        &d,
        "a 12 MB fence PUT",
        "PUT",
        "/v1/vehicles/V-BIG",
        body,
        [201, 200, 200],
    );
}

/// A nationwide zone list in one request: its store write (megabytes through sled, then their
/// flush) happens off the engine thread, so the devices' acks do not wait for it.
#[test]
fn a_bulk_zone_import_does_not_stall_device_acks() {
    let _turn = heavy_io_turn();
    let mut d = Daemon::start(&["gt06"], "");
    let n = 30_000;
    let features: Vec<_> = (0..n)
        .map(|i| {
            let (x, y) = (73.0 + (i % 300) as f64 * 0.2, 18.0 + (i / 300) as f64 * 0.3);
            let d = 0.002;
            json!({"type": "Feature", "id": format!("Z-{i}"),
                "properties": {"name": format!("典当行 {i}"), "kind": "pawnshop"},
                "geometry": {"type": "Polygon",
                    "coordinates": [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]]}})
        })
        .collect();
    let body = json!({"type": "FeatureCollection", "features": features}).to_string();
    let text = acks_do_not_wait_for(
        &d,
        "a 30,000-zone import",
        "POST",
        "/v1/zones",
        body,
        [200; ATTEMPTS],
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["upserted"], n);
    // The zones are there, through the engine, and from the store after a kill -9 right
    // after the answer.
    let (s, z) = d.api("GET", "/v1/zones/Z-29999", None);
    assert_eq!((s, z["name"].as_str()), (200, Some("典当行 29999")), "{z}");
    d.kill9();
    d.spawn();
    let (s, list) = d.api("GET", "/v1/zones?kind=pawnshop", None);
    assert_eq!(s, 200);
    assert_eq!(list["zones"].as_array().map(Vec::len), Some(n));
}

#[test]
fn invalid_geometry_is_refused_naming_the_fault_counted_and_changes_nothing() {
    let d = Daemon::start(&["gt06"], "");
    let body = |g: serde_json::Value| {
        json!({"loan": {"id": "L-1", "status": "current"}, "devices": [{"id": IMEI}], "geofence": g})
            .to_string()
    };
    for (g, fault) in [
        (
            json!({"type": "Circle", "center": [114.0, 22.5], "radius_m": 1e300}),
            "radius_m",
        ),
        (
            json!({"type": "Polygon", "coordinates": [[[113.9, 22.5, 0.0, 1.0, 2.0], [114.1, 22.5], [114.1, 22.7], [113.9, 22.5]]]}),
            "5 numbers",
        ),
        (
            json!({"type": "Polygon", "coordinates": [
                [[113.9, 22.5], [114.1, 22.5], [114.1, 22.7], [113.9, 22.7], [113.9, 22.5]],
                [[115.0, 23.0], [115.1, 23.0], [115.1, 23.1], [115.0, 23.0]]]}),
            "outside its polygon's exterior",
        ),
    ] {
        let (s, v) = d.api("PUT", "/v1/vehicles/V-1", Some(&body(g)));
        assert_eq!(s, 400, "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains(fault), "{v}");
    }
    // Over the limits that keep every alert record small (README, PUT /v1/vehicles).
    let long_plate = json!({"plate": "粤".repeat(129), "loan": {"id": "L-1", "status": "current"},
        "devices": [{"id": IMEI}]});
    let (s, v) = d.api("PUT", "/v1/vehicles/V-1", Some(&long_plate.to_string()));
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("plate: at most 128 characters"))
    );
    let seventeen: Vec<_> = (0..17)
        .map(|i| json!({"id": format!("86812014523{i:04}")}))
        .collect();
    let many = json!({"loan": {"id": "L-1", "status": "current"}, "devices": seventeen});
    let (s, v) = d.api("PUT", "/v1/vehicles/V-1", Some(&many.to_string()));
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("devices: at most 16 devices on a vehicle"))
    );
    assert_eq!(
        d.api("GET", "/v1/vehicles/V-1", None).0,
        404,
        "nothing was stored"
    );
    assert_eq!(
        d.metric("lienwatch_admin_rejected_total", &[("status", "400")]),
        5.0
    );
}

#[test]
fn webhooks_trust_a_private_ca_from_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path(), "hook");
    let rx = Receiver::tls(&cert, &key);
    let hook = |ca_line: &str| {
        format!(
            "[[webhook]]\nurl = \"{}\"\nsecret = \"whsec-0123456789\"\n{ca_line}\n",
            rx.https_url()
        )
    };
    // Without the CA the receiver's certificate is unknown: attempts fail, nothing arrives.
    let plain = Daemon::start(&["gt06"], &hook(""));
    // With it, the same receiver gets the alert.
    let trusting = Daemon::start(
        &["gt06"],
        &hook(&format!("ca_file = {:?}", ca.display().to_string())),
    );
    for d in [&plain, &trusting] {
        assert_eq!(d.api("PUT", "/v1/vehicles/V-1", Some(&vehicle())).0, 201);
        let mut dev = d.connect("gt06");
        dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
        let t = gt06_civil(lienwatch::event::Timestamp::now().add_millis(-60_000));
        dev.exchange_bytes(&gt06_location(2, t, 22.6, 114.057865), &gt06_ack(0x12, 2));
    }
    let got = rx.wait_for(Duration::from_secs(15), "the alert over TLS", |r| {
        !r.is_empty()
    });
    assert_eq!(got[0].json()["type"], "geofence_exit");
    let failed = plain.wait_metric("lienwatch_webhook_attempts_total", &[], |v| v >= 1.0);
    assert!(failed >= 1.0);
    assert_eq!(
        plain.metric(
            "lienwatch_webhook_attempts_total",
            &[("outcome", "delivered")]
        ),
        0.0,
        "a receiver signed by an unknown CA is never trusted"
    );
    assert_eq!(
        rx.all().len(),
        1,
        "only the daemon that trusts the CA delivered"
    );
}

mod jt808_auth {
    use crate::common::*;
    use lienwatch::protocol::jt808::{auth_code, encode_frame, parse_frame, unescape_into};

    const KEY: &str = "[ingest]\njt808_auth_key = \"lienwatch\"\n";
    const NUMBER: &str = "13912345678";
    const OTHER: &str = "13987654321";

    fn bcd(number: &str) -> Vec<u8> {
        let digits = format!("{number:0>12}");
        let b = digits.as_bytes();
        (0..6)
            .map(|k| ((b[2 * k] - b'0') << 4) | (b[2 * k + 1] - b'0'))
            .collect()
    }

    /// A 2013 registration body: province, city, maker (5), model (20), terminal id (7),
    /// plate colour, plate.
    fn register_body(terminal_id: &str) -> Vec<u8> {
        let mut b = vec![0x00, 0x2C, 0x01, 0x2C];
        b.extend_from_slice(b"GPS01");
        b.extend_from_slice(&[0u8; 20]);
        let mut id = terminal_id.as_bytes().to_vec();
        id.resize(7, 0);
        b.extend_from_slice(&id);
        b.push(1);
        b.extend_from_slice(b"B12345");
        b
    }

    /// A 0x0200 body at Shenzhen, 2024-05-20 18:30:15 GMT+8.
    fn location_body() -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0, 0, 0x0C, 0x00, 0x02];
        b.extend_from_slice(&22_543_096u32.to_be_bytes());
        b.extend_from_slice(&114_057_865u32.to_be_bytes());
        b.extend_from_slice(&[0x00, 0x23, 0x02, 0x6F, 0x00, 0x5A]);
        b.extend_from_slice(&[0x24, 0x05, 0x20, 0x18, 0x30, 0x15]);
        b
    }

    struct Terminal {
        dev: Device,
        serial: u16,
    }

    impl Terminal {
        fn connect(d: &Daemon) -> Terminal {
            Terminal {
                dev: d.connect("jt808"),
                serial: 0,
            }
        }

        /// Sends a message as `number` and returns the reply's message id and body.
        fn send(&mut self, number: &str, msg_id: u16, body: &[u8]) -> (u16, Vec<u8>) {
            self.serial += 1;
            let f = encode_frame(msg_id, None, &bcd(number), self.serial, body);
            self.dev.send(&f);
            // Read one frame: 7E ... 7E.
            let mut raw = self.dev.read_exact(1);
            assert_eq!(raw, [0x7E]);
            loop {
                let b = self.dev.read_exact(1);
                raw.extend_from_slice(&b);
                if b == [0x7E] && raw.len() > 2 {
                    break;
                }
            }
            let mut data = Vec::new();
            unescape_into(&raw[1..raw.len() - 1], &mut data).expect("escaping");
            let f = parse_frame(&data).expect("a reply frame");
            (f.header.msg_id, f.body.to_vec())
        }

        /// The result byte of the 0x8001 answering a message.
        fn result_of(&mut self, number: &str, msg_id: u16, body: &[u8]) -> u8 {
            let (id, reply) = self.send(number, msg_id, body);
            assert_eq!(id, 0x8001, "general response");
            assert_eq!(&reply[2..4], &msg_id.to_be_bytes(), "answers that message");
            reply[4]
        }

        fn register(&mut self, number: &str, terminal_id: &str) -> (u8, Vec<u8>) {
            let (id, reply) = self.send(number, 0x0100, &register_body(terminal_id));
            assert_eq!(id, 0x8100);
            (reply[2], reply[3..].to_vec())
        }

        fn authenticate(&mut self, number: &str) -> u8 {
            let code = auth_code(b"lienwatch", &lienwatch::event::DeviceId::new(number));
            self.result_of(number, 0x0102, code.as_bytes())
        }
    }

    fn stored(d: &Daemon, number: &str) -> bool {
        d.api("GET", &format!("/v1/devices/{number}"), None).0 == 200
    }

    #[test]
    fn nothing_but_register_auth_and_heartbeat_before_a_valid_authentication() {
        let d = Daemon::start(&["jt808"], KEY);
        let mut t = Terminal::connect(&d);
        assert_eq!(
            t.result_of(NUMBER, 0x0200, &location_body()),
            1,
            "no auth yet"
        );
        assert_eq!(t.result_of(NUMBER, 0x0002, &[]), 0, "heartbeats are fine");
        assert_eq!(
            t.result_of(NUMBER, 0x0102, b"AUTH123456"),
            1,
            "a wrong code"
        );
        assert_eq!(
            t.result_of(NUMBER, 0x0200, &location_body()),
            1,
            "still not"
        );
        // The heartbeat is a sign of life; no position was stored.
        let (_, v) = d.api("GET", &format!("/v1/devices/{NUMBER}"), None);
        assert!(v["position"].is_null(), "{v}");
        assert_eq!(t.authenticate(NUMBER), 0);
        assert_eq!(t.result_of(NUMBER, 0x0200, &location_body()), 0);
        let (_, v) = d.api("GET", &format!("/v1/devices/{NUMBER}"), None);
        assert_eq!(v["position"]["time"], "2024-05-20T10:30:15Z", "{v}");

        // The connection belongs to NUMBER now: another number on it is refused and counted.
        assert_eq!(t.result_of(OTHER, 0x0200, &location_body()), 1);
        assert_eq!(
            t.authenticate(OTHER),
            1,
            "nor can it authenticate on this connection"
        );
        assert!(
            !stored(&d, OTHER),
            "nothing was stored for the other number"
        );
        let refused = d.metric("lienwatch_frames_rejected_total", &[("protocol", "jt808")]);
        assert!(refused >= 5.0, "rejections are counted: {refused}");

        // Losing the connection loses the authentication; a new one authenticates again.
        drop(t);
        let mut t = Terminal::connect(&d);
        assert_eq!(t.result_of(NUMBER, 0x0200, &location_body()), 1);
        assert_eq!(t.authenticate(NUMBER), 0);
        assert_eq!(t.result_of(NUMBER, 0x0200, &location_body()), 0);
    }

    #[test]
    fn a_number_stays_bound_to_its_terminal_id_until_an_operator_resets_it() {
        let mut d = Daemon::start(&["jt808"], KEY);
        let mut t = Terminal::connect(&d);
        let (result, code) = t.register(NUMBER, "A123456");
        assert_eq!(result, 0);
        assert_eq!(
            String::from_utf8(code).unwrap(),
            auth_code(b"lienwatch", &lienwatch::event::DeviceId::new(NUMBER))
        );
        // The same unit may register again; another unit with the same number may not, and is
        // not handed the code.
        assert_eq!(t.register(NUMBER, "A123456").0, 0);
        let mut intruder = Terminal::connect(&d);
        let (result, code) = intruder.register(NUMBER, "EVIL001");
        assert_eq!(result, 3, "terminal already registered");
        assert!(code.is_empty(), "no code for the intruder");

        // The binding survives a restart.
        drop((t, intruder));
        d.terminate();
        d.spawn();
        let mut t = Terminal::connect(&d);
        assert_eq!(t.register(NUMBER, "EVIL001").0, 3);

        // An operator resets it (a replaced unit): the next registration binds anew.
        let path = format!("/v1/devices/{NUMBER}/registration");
        let (s, v) = d.api("DELETE", &path, None);
        assert_eq!(s, 200, "{v}");
        let (s, _) = d.api("DELETE", &path, None);
        assert_eq!(s, 404, "nothing left to reset");
        assert_eq!(t.register(NUMBER, "B654321").0, 0);
        assert_eq!(t.register(NUMBER, "A123456").0, 3);
    }
}
