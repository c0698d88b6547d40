//! Teltonika over TCP and UDP and H02 over TCP against the real daemon: handshake and record-count
//! acknowledgements byte-exact, the policy refusal `00`, positions read back through the API
//! (protocols.md C and D, CONTRACT.md "What a tracker sees").

use crate::common::*;
use std::time::Duration;

const IMEI_HANDSHAKE: &str = "00 0F 33 35 36 33 30 37 30 34 32 34 34 31 30 31 33";
/// protocols.md C.5 #3: Codec 8, one record, IO 252 unplug (power cut), 2024-05-20 10:30:15 UTC.
const CODEC8_UNPLUG: &str = "00 00 00 00 00 00 00 34 08 01 00 00 01 8F 95 8D 46 D8 01 43 FB D9 5A 0D 6F CD B0 00 23 00 5A 09 00 3E FC 07 04 EF 01 F0 01 15 04 FC 01 02 42 00 00 43 0F 6E 01 10 00 BC 61 4E 00 01 00 00 93 00";
/// protocols.md C.5 #4: Codec 8E, Buenos Aires.
const CODEC8E_BA: &str = "00 00 00 00 00 00 00 33 8E 01 00 00 01 8F 95 8D 46 D8 01 DD 33 AE 5A EB 5F E4 1C 00 19 01 0E 07 00 00 00 EF 00 03 00 02 00 EF 00 00 F0 00 00 01 00 42 31 5A 00 00 00 00 00 00 01 00 00 63 F4";

#[test]
fn teltonika_tcp_handshake_and_record_counts() {
    let d = Daemon::start(&["teltonika"], "");
    let mut dev = d.connect("teltonika");
    dev.exchange(IMEI_HANDSHAKE, "01");
    dev.exchange(CODEC8_UNPLUG, "00 00 00 01");
    let (s, v) = d.api("GET", "/v1/devices/356307042441013", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["protocol"], "teltonika");
    assert_eq!(v["position"]["time"], "2024-05-20T10:30:15Z");
    assert!((v["position"]["lat"].as_f64().unwrap() - 22.543096).abs() < 1e-6);
    // A corrupted CRC: no acknowledgement (the device resends), the session goes on.
    let mut bad = lienwatch::protocol::parse_hex(CODEC8E_BA).unwrap();
    let n = bad.len();
    bad[n - 1] ^= 0xFF;
    dev.send(&bad);
    dev.exchange(CODEC8E_BA, "00 00 00 01");
    // The 8E record has the same device time: an equal time counts as newest and replaces it.
    let (_, v) = d.api("GET", "/v1/devices/356307042441013", None);
    assert!(
        (v["position"]["lat"].as_f64().unwrap() + 34.603722).abs() < 1e-6,
        "{v}"
    );
    // Two acknowledgements in all: none for the corrupted frame.
    dev.expect_no_more_replies();
}

#[test]
fn teltonika_refused_by_policy_gets_00() {
    let d = Daemon::start(&["teltonika"], "[ingest]\naccept_unknown = false\n");
    let mut dev = d.connect("teltonika");
    dev.exchange(IMEI_HANDSHAKE, "00");
    assert!(dev.closed_by_server(Duration::from_secs(3)));
}

#[test]
fn teltonika_udp_datagram_is_acknowledged() {
    let d = Daemon::start(&["teltonika/udp"], "");
    let port = d.port("teltonika/udp");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // protocols.md C.4 layout, with the C.5 #3 record: packet id CAFE, AVL packet id 05.
    let avl = lienwatch::protocol::parse_hex(CODEC8_UNPLUG).unwrap();
    let payload = &avl[8..avl.len() - 4]; // codec id .. N2
    let mut body = vec![0xCA, 0xFE, 0x01, 0x05, 0x00, 0x0F];
    body.extend_from_slice(b"352093086403655");
    body.extend_from_slice(payload);
    let mut dgram = (body.len() as u16).to_be_bytes().to_vec();
    dgram.extend(body);
    sock.send_to(&dgram, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("ack");
    assert_eq!(&buf[..n], &[0x00, 0x05, 0xCA, 0xFE, 0x01, 0x05, 0x01]);
    let (s, v) = d.api("GET", "/v1/devices/352093086403655", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["position"]["time"], "2024-05-20T10:30:15Z");
}

/// A Codec 8 record at `ts_ms` at Shenzhen, its IO 252 (unplug) and IO 66 (external voltage)
/// saying whether the power is cut.
fn codec8_record(ts_ms: i64, cut: bool) -> Vec<u8> {
    let mut r = ts_ms.to_be_bytes().to_vec();
    r.push(1);
    r.extend_from_slice(&[0x43, 0xFB, 0xD9, 0x5A, 0x0D, 0x6F, 0xCD, 0xB0]);
    r.extend_from_slice(&[0x00, 0x23, 0x00, 0x5A, 0x09, 0x00, 0x3E]);
    let volts: u16 = if cut { 0 } else { 12_000 };
    r.extend_from_slice(&[
        if cut { 0xFC } else { 0 },
        2,
        1,
        0xFC,
        u8::from(cut),
        1,
        0x42,
    ]);
    r.extend_from_slice(&volts.to_be_bytes());
    r.extend_from_slice(&[0, 0]);
    r
}

/// A Teltonika UDP datagram (protocols.md C.4) of one Codec 8 record.
fn udp_datagram(imei: &str, packet: u16, record: &[u8]) -> Vec<u8> {
    let mut body = packet.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x01, packet as u8, 0x00, imei.len() as u8]);
    body.extend_from_slice(imei.as_bytes());
    body.extend_from_slice(&[0x08, 1]);
    body.extend_from_slice(record);
    body.push(1);
    let mut d = (body.len() as u16).to_be_bytes().to_vec();
    d.extend(body);
    d
}

/// A backlog sent newest first over several UDP datagrams: the first brings the cut, live; the
/// next, an hour older, says the power was there, and is buffered against the newest record the
/// peer has had, so it sets nothing back (no `power_restored` while the unit is cut off).
#[test]
fn a_teltonika_udp_backlog_over_datagrams_sets_no_state_back() {
    const IMEI: &str = "352093086403655";
    let d = Daemon::start(&["teltonika/udp"], "");
    let (s, v) = d.api(
        "PUT",
        "/v1/vehicles/V-1",
        Some(&format!(
            r#"{{"loan": {{"id": "L-1", "status": "overdue"}}, "devices": [{{"id": "{IMEI}", "kind": "wired"}}]}}"#
        )),
    );
    assert!(s == 200 || s == 201, "{v}");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = d.port("teltonika/udp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let exchange = |packet: u16, record: Vec<u8>| {
        sock.send_to(&udp_datagram(IMEI, packet, &record), ("127.0.0.1", port))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).expect("ack");
        assert_eq!(buf[n - 1], 1, "one record acknowledged");
    };
    let kinds = |d: &Daemon| -> Vec<String> {
        let (_, v) = d.api("GET", "/v1/alerts", None);
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["type"].as_str().map(str::to_string))
            .filter(|t| t.starts_with("power"))
            .collect()
    };
    exchange(1, codec8_record(now - 60_000, true));
    // Alerts are committed before the acknowledgement.
    assert_eq!(kinds(&d), ["power_cut"]);
    exchange(2, codec8_record(now - 3_600_000, false));
    exchange(3, codec8_record(now - 7_200_000, false));
    assert_eq!(kinds(&d), ["power_cut"], "an older record set the cut back");
    // Live again: the power comes back.
    exchange(4, codec8_record(now - 30_000, false));
    assert_eq!(kinds(&d), ["power_restored", "power_cut"]);
}

#[test]
fn h02_text_and_binary_are_stored() {
    let d = Daemon::start(&["h02"], "");
    let mut dev = d.connect("h02");
    // protocols.md D.6; H02 expects no reply to V1.
    dev.send(
        b"*HQ,4106012345,V1,103015,A,2232.5858,N,11403.4719,E,033.64,090,200524,FFF7FBFF#\r\n",
    );
    dev.send(b"*HQ,4106012345,XT#");
    let (s, v) = stored(&d, "4106012345");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["protocol"], "h02");
    assert_eq!(v["position"]["time"], "2024-05-20T10:30:15Z");
    assert!((v["position"]["speed_kmh"].as_f64().unwrap() - 62.3).abs() < 0.1);
    // The binary `$` reference vector (D.5).
    dev.send_hex("24 41 06 01 16 60 12 45 43 13 11 16 50 35 31 30 06 00 43 18 21 0E 00 00 00 FF FF FB FF FF 00 24");
    let (s, v) = stored(&d, "4106011660");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["position"]["time"], "2016-11-13T12:45:43Z");
    // No reply to any of them.
    dev.expect_no_more_replies();
}

/// H02 sends no reply to wait for: the device as soon as the API shows a position for it.
fn stored(d: &Daemon, id: &str) -> (u16, serde_json::Value) {
    wait_for(
        Duration::from_secs(5),
        &format!("a position of {id}"),
        || {
            let (s, v) = d.api("GET", &format!("/v1/devices/{id}"), None);
            (s == 200 && v["position"].is_object()).then_some((s, v))
        },
    )
}

/// H02 has no login: with `accept_unknown = false` an unregistered id is refused when it first
/// appears (the connection is closed and the refusal counted), and nothing of it is stored.
#[test]
fn h02_unknown_device_is_refused_when_accept_unknown_is_false() {
    let d = Daemon::start(&["h02"], "[ingest]\naccept_unknown = false\n");
    let (s, v) = d.api(
        "PUT",
        "/v1/vehicles/V-H02",
        Some(
            &serde_json::json!({
                "loan": {"id": "L-H02", "status": "current"},
                "devices": [{"id": "4106012345", "kind": "wired"}]
            })
            .to_string(),
        ),
    );
    assert_eq!(s, 201, "{v}");
    let mut stranger = d.connect("h02");
    stranger.send(
        b"*HQ,4106019999,V1,103015,A,2232.5858,N,11403.4719,E,033.64,090,200524,FFF7FBFF#\r\n",
    );
    assert!(
        stranger.closed_by_server(Duration::from_secs(3)),
        "refused: closed"
    );
    assert!(
        d.metric("lienwatch_devices_refused_total", &[]) >= 1.0,
        "the refusal is counted"
    );
    let mut known = d.connect("h02");
    known.send(
        b"*HQ,4106012345,V1,103015,A,2232.5858,N,11403.4719,E,033.64,090,200524,FFF7FBFF#\r\n",
    );
    let (s, _) = stored(&d, "4106012345");
    assert_eq!(s, 200);
    // Asked after the registered device's fix is stored: the stranger's came first and is not.
    let (s, _) = d.api("GET", "/v1/devices/4106019999", None);
    assert_eq!(s, 404, "a refused device is not stored");
}
