//! The daemon's outer shell: health, authentication, metrics, config errors, clean shutdown.

use crate::common::*;
use std::process::Command;

#[test]
fn health_auth_metrics_and_clean_shutdown() {
    let mut d = Daemon::start(&["gt06"], "");
    let (s, _) = http(d.admin, "GET", "/healthz", None, None).unwrap();
    assert_eq!(s, 200);

    // A missing or wrong token gets 401 and a JSON error.
    let (s, body) = http(d.admin, "GET", "/v1/devices/123", None, None).unwrap();
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (s, _) = http(
        d.admin,
        "GET",
        "/v1/devices/123",
        None,
        Some("wrong-token-xxxxxxx"),
    )
    .unwrap();
    assert_eq!(s, 401);

    let (s, v) = d.api("GET", "/v1/devices/123", None);
    assert_eq!(s, 404, "{v}");
    let (s, v) = d.api("GET", "/v1/devices/not-digits", None);
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.api("GET", "/v1/nothing-here", None);
    assert_eq!(s, 404, "{v}");

    let (s, text) = http(d.admin, "GET", "/metrics", None, None).unwrap();
    assert_eq!(s, 200);
    let _ = text;

    assert_eq!(
        d.terminate(),
        Some(0),
        "exit code after SIGTERM:\n{}",
        d.log()
    );
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[storage]\npath = \"/tmp/x\"\n[rules]\nsilence_after = \"6h\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[rules]\nsilence_after = \"6h\"\ngeofence_margin = 5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("bad.toml") && err.contains("geofence_margin"),
        "{err}"
    );

    let bad2 = dir.path().join("bad2.toml");
    std::fs::write(
        &bad2,
        "[[listener]]\nprotocol = \"gt06\"\nbind = \"0.0.0.0:99999\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
        .args(["check-config", "--config"])
        .arg(&bad2)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("listener[0].bind"), "{err}");
}

#[test]
fn decode_rejects_bad_input_without_panicking() {
    let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
        .args(["decode", "--protocol", "gt06", "zz"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
        .args(["decode", "--protocol", "nope", "00"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A sound message that makes no event still prints, with its own type, and exits 0: a GT06
/// time request (protocols.md A.6 #7), and a JT/T 808 authentication, read as the login it is
/// whatever key its code was made with (`decode` has no session to check it against).
#[test]
fn decode_prints_messages_that_make_no_event() {
    let decode = |protocol: &str, hex: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
            .args(["decode", "--protocol", protocol, hex])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
    };
    let lines = decode("gt06", "78 78 05 8A 00 08 61 57 0D 0A");
    assert_eq!(lines, [serde_json::json!({"type": "time_request"})]);
    // 0x0102 from terminal 013912345678, serial 1, auth code "0123456789".
    let auth = lienwatch::protocol::jt808::encode_frame(
        0x0102,
        None,
        &[0x01, 0x39, 0x12, 0x34, 0x56, 0x78],
        1,
        b"0123456789",
    );
    let lines = decode("jt808", &lienwatch::protocol::to_hex(&auth));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "login");
    assert_eq!(lines[0]["device_id"], "13912345678");
}
