//! JT/T 808 2013 and 2019 terminals over real TCP: registration and authentication with codes
//! derived from the server key, byte-exact replies mirroring the version and terminal number,
//! positions read back through the admin API with Beijing time converted to UTC.

use crate::common::*;

const KEY: &str = "[ingest]\njt808_auth_key = \"lienwatch\"\n";

#[test]
fn jt808_2013_terminal_registers_authenticates_and_is_stored() {
    let d = Daemon::start(&["jt808"], KEY);
    let mut t = d.connect("jt808");
    // B.6 #1 register -> 0x8100 result 0 with the code derived from the key and the terminal.
    let code = lienwatch::protocol::jt808::auth_code(
        b"lienwatch",
        &lienwatch::event::DeviceId::new("13912345678"),
    );
    assert_eq!(code, "263BBCA97C727740");
    t.exchange(
        "7E 01 00 00 2D 01 39 12 34 56 78 00 01 00 2C 01 2C 47 50 53 30 31 43 4C 2D 57 49 52 45 44 2D 30 31 00 00 00 00 00 00 00 00 00 41 31 32 33 34 35 36 01 D4 C1 42 31 32 33 34 35 3B 7E",
        "7E 81 00 00 13 01 39 12 34 56 78 00 01 00 01 00 32 36 33 42 42 43 41 39 37 43 37 32 37 37 34 30 DB 7E",
    );
    // A code lienwatch never issued: result 1. The right one: result 0.
    t.exchange(
        "7E 01 02 00 0A 01 39 12 34 56 78 00 02 41 55 54 48 31 32 33 34 35 36 34 7E",
        "7E 80 01 00 05 01 39 12 34 56 78 00 02 00 02 01 02 01 B6 7E",
    );
    t.exchange(
        "7E 01 02 00 10 01 39 12 34 56 78 00 07 32 36 33 42 42 43 41 39 37 43 37 32 37 37 34 30 5D 7E",
        "7E 80 01 00 05 01 39 12 34 56 78 00 03 00 07 01 02 00 B3 7E",
    );
    // Heartbeat, then the B.6 #4 location with its escaped serial.
    t.exchange(
        "7E 00 02 00 00 01 39 12 34 56 78 00 03 31 7E",
        "7E 80 01 00 05 01 39 12 34 56 78 00 04 00 03 00 02 00 B1 7E",
    );
    t.exchange(
        "7E 02 00 00 28 01 39 12 34 56 78 00 7D 01 00 00 01 00 00 0C 00 03 01 57 FA F8 06 CC 62 89 00 23 02 6F 00 5A 24 05 20 18 30 15 01 04 00 01 E2 40 30 01 19 31 01 09 83 7E",
        "7E 80 01 00 05 01 39 12 34 56 78 00 05 00 7D 01 02 00 00 CE 7E",
    );
    // The blind-area batch (B.6 #5): older fixes, acknowledged once, not replacing the newest.
    t.exchange(
        "7E 07 04 00 4B 01 39 12 34 56 78 00 05 00 02 01 00 22 00 00 00 00 00 0C 00 02 01 57 FA F8 06 CC 62 89 00 23 00 00 00 00 24 05 20 03 00 00 01 04 00 01 E2 40 00 22 00 00 00 00 00 0C 00 02 01 57 FA FC 06 CC 62 8E 00 23 00 00 00 00 24 05 20 09 00 00 01 04 00 01 E2 40 77 7E",
        "7E 80 01 00 05 01 39 12 34 56 78 00 06 00 05 07 04 00 B4 7E",
    );
    let (s, v) = d.api("GET", "/v1/devices/13912345678", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["protocol"], "jt808");
    let p = &v["position"];
    assert_eq!(
        p["time"], "2024-05-20T10:30:15Z",
        "GMT+8 18:30:15 is 10:30:15 UTC: {v}"
    );
    assert!((p["lat"].as_f64().unwrap() - 22.543096).abs() < 1e-6);
    assert!((p["lon"].as_f64().unwrap() - 114.057865).abs() < 1e-6);
    assert_eq!(p["speed_kmh"].as_f64(), Some(62.3));
    assert_eq!(p["satellites"], 9);
}

#[test]
fn jt808_2019_terminal_gets_2019_replies_and_is_stored() {
    let d = Daemon::start(&["jt808"], KEY);
    let mut t = d.connect("jt808");
    t.exchange(
        "7E 01 00 40 54 01 00 00 00 00 01 39 12 34 56 78 00 01 00 2C 01 2C 47 50 53 30 31 00 00 00 00 00 00 43 4C 2D 57 49 52 45 44 2D 30 31 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 41 31 32 33 34 35 36 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 D4 C1 42 31 32 33 34 35 03 7E",
        "7E 81 00 40 13 01 00 00 00 00 01 39 12 34 56 78 00 01 00 01 00 32 36 33 42 42 43 41 39 37 43 37 32 37 37 34 30 9A 7E",
    );
    t.exchange(
        "7E 01 02 40 34 01 00 00 00 00 01 39 12 34 56 78 00 03 10 32 36 33 42 42 43 41 39 37 43 37 32 37 37 34 30 38 36 38 31 32 30 31 34 35 32 33 33 36 30 34 56 31 2E 30 2E 30 00 00 00 00 00 00 00 00 00 00 00 00 00 00 7D 02 7E",
        "7E 80 01 40 05 01 00 00 00 00 01 39 12 34 56 78 00 02 00 03 01 02 00 F7 7E",
    );
    t.exchange(
        "7E 02 00 40 2A 01 00 00 00 00 01 39 12 34 56 78 00 04 00 02 01 00 00 00 04 03 01 57 FA F8 06 CC 62 89 00 0C 01 C8 00 B5 24 05 20 18 31 15 30 01 12 31 01 07 F6 03 01 02 03 E3 7D 02 01 1C 7E",
        "7E 80 01 40 05 01 00 00 00 00 01 39 12 34 56 78 00 03 00 04 02 00 00 F0 7E",
    );
    let (s, v) = d.api("GET", "/v1/devices/13912345678", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["position"]["time"], "2024-05-20T10:31:15Z", "{v}");
    assert_eq!(v["position"]["satellites"], 7);
}
