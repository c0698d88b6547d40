//! Hostile input: random bytes, absurd lengths, half frames, floods of idle connections. The
//! daemon stays healthy, its memory bounded, and a good device is still served.

use crate::common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn garbage_absurd_lengths_and_idle_floods_leave_the_daemon_serving() {
    let d = Daemon::start(
        &["gt06", "jt808"],
        "[ingest]\nidle_timeout = \"3s\"\nmax_connections = 400\n",
    );
    let gt06 = d.port("gt06");
    let jt = d.port("jt808");
    let rss_before = rss_kib(d.pid());

    // Hundreds of connections that send half a frame, or nothing, and hang.
    let mut idle = Vec::new();
    for i in 0..300 {
        let port = if i % 2 == 0 { gt06 } else { jt };
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        match i % 3 {
            0 => s.write_all(&[0x78, 0x78, 0x1F, 0x12, 0x18]).unwrap(),
            1 => s.write_all(&[0x7E, 0x02, 0x00, 0x00]).unwrap(),
            _ => {}
        }
        idle.push(s);
    }
    // Random bytes and absurd length fields, a few MB in all.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for round in 0..20 {
        let port = if round % 2 == 0 { gt06 } else { jt };
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut junk = Vec::with_capacity(200_000);
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(seed as u8);
        }
        // A long frame claiming 65535 bytes, repeated.
        for _ in 0..50 {
            junk.extend_from_slice(&[0x79, 0x79, 0xFF, 0xFF, 0x94, 0x00]);
        }
        let _ = s.write_all(&junk);
    }

    // A good device is still served promptly.
    let start = Instant::now();
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login("868120145233604", 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(
        &gt06_location(2, (24, 5, 20, 12, 0, 0), 22.5, 114.0),
        &gt06_ack(0x12, 2),
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "good device waited {:?}",
        start.elapsed()
    );
    let (s, _) = http(d.admin, "GET", "/healthz", None, None).unwrap();
    assert_eq!(s, 200);

    // Idle connections are closed after the idle timeout.
    let mut first = Device {
        stream: idle.remove(0),
    };
    assert!(
        first.closed_by_server(Duration::from_secs(8)),
        "idle connection closed by the server"
    );

    // A peer that logs in, then trickles garbage (each byte a rejection): only a device's
    // events count as speaking, so it is closed after the idle timeout all the same, and
    // cannot hold a connection slot by trickling.
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login("868120145233612", 1), &gt06_ack(0x01, 1));
    let mut trickle = dev.stream;
    trickle
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let opened = Instant::now();
    let mut closed = false;
    // Bounded: a byte every 0.4 s for at most 12 s, stopping when the server closes.
    while !closed && opened.elapsed() < Duration::from_secs(12) {
        if trickle.write_all(&[0x00]).is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 16];
        closed = match std::io::Read::read(&mut trickle, &mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
    }
    assert!(closed, "a trickle of garbage kept its connection open");
    assert!(
        opened.elapsed() < Duration::from_secs(9),
        "closed only after {:?}",
        opened.elapsed()
    );

    // Memory stays bounded (no per-connection buffer grew with the junk).
    let rss_after = rss_kib(d.pid());
    assert!(
        rss_after < rss_before + 150 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The rejected frames were counted.
    let (_, metrics) = http(d.admin, "GET", "/metrics", None, None).unwrap();
    assert!(
        metrics.contains("lienwatch_frames_rejected_total"),
        "{metrics}"
    );
}

#[test]
fn the_connection_cap_refuses_extra_connections_but_keeps_serving() {
    let d = Daemon::start(&["gt06"], "[ingest]\nmax_connections = 5\n");
    let mut held = Vec::new();
    for i in 0..5 {
        let mut dev = d.connect("gt06");
        dev.exchange_bytes(
            &gt06_login(&format!("86812014523{i:04}"), 1),
            &gt06_ack(0x01, 1),
        );
        held.push(dev);
    }
    let mut extra = d.connect("gt06");
    assert!(
        extra.closed_by_server(Duration::from_secs(3)),
        "the sixth connection is refused"
    );
    // The held ones still work.
    held[0].exchange_bytes(
        &gt06_location(2, (24, 5, 20, 12, 0, 0), 22.5, 114.0),
        &gt06_ack(0x12, 2),
    );
    drop(held);
    // Their slots are free once the daemon has seen them close.
    d.wait_metric("lienwatch_connections", &[("protocol", "gt06")], |v| {
        v == 0.0
    });
    let mut again = d.connect("gt06");
    again.exchange_bytes(&gt06_login("868120145230000", 1), &gt06_ack(0x01, 1));
}

/// Device ids are the peer's to choose, and each one admitted is stored for good: with
/// `accept_unknown`, no more than `ingest.max_unknown_devices` devices in no vehicle are admitted.
/// A stored one keeps its session beyond the cap, a registered one frees its place, and a
/// restart counts the stored ones again.
#[test]
fn a_flood_of_new_device_ids_stops_at_the_unknown_device_limit() {
    let mut d = Daemon::start(&["gt06", "h02"], "[ingest]\nmax_unknown_devices = 3\n");
    let at = |id: &str, hhmmss: &str| {
        format!("*HQ,{id},V1,{hhmmss},A,2232.5858,N,11403.4719,E,033.64,090,200524,FFF7FBFF#\r\n")
            .into_bytes()
    };
    let h02 = |id: &str| at(id, "103015");
    // An H02 stream naming a new id in each message (H02 has no login): three are stored, the
    // fourth closes the connection, refused and counted.
    let mut flood = d.connect("h02");
    for i in 0..3 {
        flood.send(&h02(&format!("410601000{i}")));
    }
    flood.send(&h02("4106010003"));
    assert!(
        flood.closed_by_server(Duration::from_secs(3)),
        "the fourth new id is refused"
    );
    for i in 0..3 {
        let (s, v) = d.api("GET", &format!("/v1/devices/410601000{i}"), None);
        assert_eq!(s, 200, "{v}");
    }
    let (s, _) = d.api("GET", "/v1/devices/4106010003", None);
    assert_eq!(s, 404, "a refused id is not stored");
    assert!(d.metric("lienwatch_devices_refused_total", &[]) >= 1.0);
    assert_eq!(d.metric("lienwatch_devices_unregistered", &[]), 3.0);
    // GT06 logins too: a new IMEI gets no login reply; a stored device's id still logs in.
    let mut stranger = d.connect("gt06");
    stranger.send(&gt06_login("868120145239999", 1));
    assert!(
        stranger.closed_by_server(Duration::from_secs(3)),
        "a new IMEI beyond the limit is refused"
    );
    let mut known = d.connect("h02");
    known.send(&at("4106010001", "104500"));
    wait_for(
        Duration::from_secs(5),
        "the stored device's new fix",
        || {
            let (_, v) = d.api("GET", "/v1/devices/4106010001", None);
            (v["position"]["time"] == "2024-05-20T10:45:00Z").then_some(())
        },
    );
    // Put on a vehicle, a stranger frees its place for the next new id.
    let body = serde_json::json!({
        "loan": {"id": "L-1", "status": "current"},
        "devices": [{"id": "4106010000", "kind": "wired"}]
    });
    let (s, v) = d.api("PUT", "/v1/vehicles/V-1", Some(&body.to_string()));
    assert_eq!(s, 201, "{v}");
    assert_eq!(d.metric("lienwatch_devices_unregistered", &[]), 2.0);
    let mut next = d.connect("gt06");
    next.exchange_bytes(&gt06_login("868120145239999", 1), &gt06_ack(0x01, 1));
    // After a restart the stored strangers count again: the limit still holds.
    d.terminate();
    d.spawn();
    assert_eq!(d.metric("lienwatch_devices_unregistered", &[]), 3.0);
    let mut late = d.connect("h02");
    late.send(&h02("4106010004"));
    assert!(
        late.closed_by_server(Duration::from_secs(3)),
        "still at the limit after a restart"
    );
}
