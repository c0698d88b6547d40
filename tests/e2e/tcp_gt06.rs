//! A GT06 tracker over real TCP against the real daemon: every reply byte-exact (protocols.md
//! A.6, CONTRACT.md "What a tracker sees"), positions read back through the admin API.

use crate::common::*;
use std::time::Duration;

const IMEI: &str = "868120145233604";

#[test]
fn gt06_device_session_is_answered_byte_exact_and_stored() {
    let d = Daemon::start(&["gt06"], "");
    let mut dev = d.connect("gt06");

    // A location before login is dropped without a reply: the device will log in again. (The
    // login's reply below is the first thing the device reads, so no reply came before it.)
    dev.send_hex("78 78 1F 12 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 3C 14 5A 01 CC 00 24 7C 0F 2A 31 00 03 6D E9 0D 0A");

    // Login (protocols.md A.6 #1) and its documented reply.
    dev.exchange(
        "78 78 0D 01 08 68 12 01 45 23 36 04 00 01 69 70 0D 0A",
        "78 78 05 01 00 01 D9 DC 0D 0A",
    );
    // Heartbeat 0x13 (#4).
    dev.exchange(
        "78 78 0A 13 46 06 04 00 02 00 05 CC 4B 0D 0A",
        "78 78 05 13 00 05 AF D5 0D 0A",
    );
    // 0x12 location (#2), answered as Traccar does.
    dev.exchange_bytes(
        &lienwatch::protocol::parse_hex("78 78 1F 12 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 3C 14 5A 01 CC 00 24 7C 0F 2A 31 00 03 6D E9 0D 0A").unwrap(),
        &gt06_ack(0x12, 3),
    );
    // 0x22 location (#3) with its documented ack.
    dev.exchange(
        "78 78 22 22 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 3C 14 5A 01 CC 00 24 7C 0F 2A 31 01 00 00 00 04 0C 52 0D 0A",
        "78 78 05 22 00 04 62 2E 0D 0A",
    );
    // Power-cut alarm 0x16 (#5) and tamper alarm 0x26 (#6).
    dev.exchange(
        "78 78 25 16 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 00 14 5A 09 01 CC 00 24 7C 0F 2A 31 50 04 03 02 02 00 06 17 69 0D 0A",
        "78 78 05 16 00 06 A4 F3 0D 0A",
    );
    dev.exchange(
        "78 78 25 26 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 00 14 5A 09 01 CC 00 24 7C 0F 2A 31 50 04 03 13 02 00 07 A5 5B 0D 0A",
        "78 78 05 26 00 07 33 D4 0D 0A",
    );

    // Time request 0x8A: the reply carries the server's UTC time; check its frame and clock.
    dev.send_hex("78 78 05 8A 00 08 61 57 0D 0A");
    let r = dev.read_exact(16);
    assert_eq!(&r[..4], &[0x78, 0x78, 0x0B, 0x8A]);
    assert_eq!(&r[10..12], &[0x00, 0x08], "serial echoed");
    assert_eq!(r, gt06_frame(0x8A, &r[4..10], 8), "CRC and terminator");
    let server =
        lienwatch::event::Timestamp::from_civil(2000 + r[4] as i32, r[5], r[6], r[7], r[8], r[9])
            .unwrap();
    assert!(
        (lienwatch::event::Timestamp::now().since(server)).abs() < 5_000,
        "time is UTC now"
    );

    // Garbage between frames is skipped; a bad CRC is dropped; the next good frame is answered.
    dev.send_hex("00 11 22 78 33 0D 0A FF");
    dev.send_hex("78 78 0A 13 46 06 04 00 02 00 05 CC 4C 0D 0A");
    dev.exchange(
        "78 78 0A 13 46 06 04 00 02 00 05 CC 4B 0D 0A",
        "78 78 05 13 00 05 AF D5 0D 0A",
    );
    // A frame split across writes.
    let frame = gt06_location(9, (24, 5, 20, 10, 31, 0), 22.55, 114.06);
    dev.send(&frame[..7]);
    // Real time between the two writes, as on a slow link, so the halves arrive apart.
    std::thread::sleep(Duration::from_millis(100));
    dev.exchange_bytes(&frame[7..], &gt06_ack(0x12, 9));

    // The stored last-known position is the newest fix by device time.
    let (s, v) = d.api("GET", &format!("/v1/devices/{IMEI}"), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["device_id"], IMEI);
    assert_eq!(v["protocol"], "gt06");
    let p = &v["position"];
    assert_eq!(p["time"], "2024-05-20T10:31:00Z", "{v}");
    assert!((p["lat"].as_f64().unwrap() - 22.55).abs() < 1e-5, "{v}");
    assert!((p["lon"].as_f64().unwrap() - 114.06).abs() < 1e-5, "{v}");
    assert_eq!(p["valid"], true);
    assert_eq!(p["speed_kmh"].as_f64(), Some(60.0));
    assert_eq!(p["course"], 90);
    assert!(p["received_at"].is_string());

    // An older fix sent late does not replace it.
    dev.exchange_bytes(
        &gt06_location(10, (24, 5, 20, 9, 0, 0), 23.0, 113.0),
        &gt06_ack(0x12, 10),
    );
    let (_, v) = d.api("GET", &format!("/v1/devices/{IMEI}"), None);
    assert_eq!(v["position"]["time"], "2024-05-20T10:31:00Z", "{v}");
    // Every reply was one the test expected (none for the frame with the bad CRC).
    dev.expect_no_more_replies();
}

#[test]
fn owed_replies_are_sent_when_the_device_closes_its_side() {
    let d = Daemon::start(&["gt06"], "");
    let mut dev = d.connect("gt06");
    let mut burst = gt06_login("868120145233604", 1);
    burst.extend(gt06_location(2, (24, 5, 20, 10, 0, 0), 22.5, 114.0));
    dev.send(&burst);
    dev.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut want = gt06_ack(0x01, 1);
    want.extend(gt06_ack(0x12, 2));
    assert_eq!(dev.read_exact(want.len()), want);
    assert!(
        dev.closed_by_server(Duration::from_secs(2)),
        "server closes after the owed replies"
    );
}

/// An LBS-only report (0x28, no GNSS fix) is stored as an invalid position that keeps its
/// serving cell, so a recovery team can still place the car roughly (protocols.md A.4).
#[test]
fn an_lbs_report_is_an_invalid_position_that_keeps_its_cell_in_the_api() {
    let d = Daemon::start(&["gt06"], "");
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    // Date, MCC 460, MNC 0, seven cells of LAC 0x247C, cell id 0x0F2A31 and RSSI, timing
    // advance, language.
    let mut c = vec![24, 5, 20, 10, 30, 15];
    c.extend_from_slice(&460u16.to_be_bytes());
    c.push(0);
    for i in 0..7u8 {
        c.extend_from_slice(&[0x24, 0x7C, 0x0F, 0x2A, 0x31, 60 + i]);
    }
    c.extend_from_slice(&[0x00, 0x00, 0x01]);
    dev.exchange_bytes(&gt06_frame(0x28, &c, 2), &gt06_ack(0x28, 2));
    let (s, v) = d.api("GET", &format!("/v1/devices/{IMEI}"), None);
    assert_eq!(s, 200, "{v}");
    let p = &v["position"];
    assert_eq!(p["valid"], false, "{v}");
    assert_eq!(p["cell"]["mcc"], 460, "{v}");
    assert_eq!(p["cell"]["lac"], 0x247C, "{v}");
    assert_eq!(p["cell"]["cid"], 0x0F2A31, "{v}");
}
