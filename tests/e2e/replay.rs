//! `lienwatch replay` over every fixture, through the binary: same sessions, engine, rules and
//! store as the daemon, on a virtual clock. It must pass them all, print the alerts they raise,
//! and fail loudly when a fixture expects something else.

use std::process::Command;

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lienwatch"))
        .arg("replay")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run lienwatch replay")
}

#[test]
fn every_fixture_replays_through_the_whole_pipeline() {
    let out = replay(&["protocol-fixtures"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("FAIL"), "{stderr}");
    // Alerts come out as JSON lines, with the fields of CONTRACT.md.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let types: Vec<&str> = alerts.iter().filter_map(|a| a["type"].as_str()).collect();
    for t in [
        "geofence_exit",
        "geofence_return",
        "silent_overdue",
        "reappeared",
        "power_cut",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    for a in &alerts {
        for k in [
            "id",
            "type",
            "vehicle_id",
            "device_id",
            "loan",
            "position",
            "detected_at",
            "details",
        ] {
            assert!(a.get(k).is_some(), "{k} missing in {a}");
        }
    }
    // Deterministic: the same ids on a second run (virtual clock, no randomness).
    let again = replay(&["protocol-fixtures"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}

#[test]
fn a_fixture_expecting_something_else_fails() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wrong.toml");
    std::fs::write(
        &f,
        r#"
name = "wrong reply"
protocol = "gt06"
start = "2024-05-20T10:00:00Z"
[[step]]
device = "78 78 0D 01 08 68 12 01 45 23 36 04 00 01 69 70 0D 0A"
reply = "78 78 05 01 00 02 D9 DC 0D 0A"
[[step]]
after = "1h"
alerts = [{ type = "silent_overdue" }]
"#,
    )
    .unwrap();
    let out = replay(&[f.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("step 1: reply differs"), "{stderr}");
    assert!(stderr.contains("step 2: alerts"), "{stderr}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = 1\n").unwrap();
    let out = replay(&[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
    // A bad fixture does not stop the others: the one after it still runs and is told.
    let out = replay(&[bad.to_str().unwrap(), f.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("BAD") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    assert!(stderr.contains("step 1: reply differs"), "{stderr}");
}

/// A fixture's config is the daemon's: its GT06 listener's `gt06_locate` text goes out for
/// `locate`, and its JT/T 808 key makes other authentication codes than the default key's.
#[test]
fn replay_uses_the_listener_and_ingest_settings_of_the_config() {
    let dir = tempfile::tempdir().unwrap();
    // 0x80, length 9 (flag 1 and "DWXX#"), serial 1.
    let mut content = vec![0x09, 0, 0, 0, 1];
    content.extend_from_slice(b"DWXX#");
    let downlink = lienwatch::protocol::to_hex(&crate::common::gt06_frame(0x80, &content, 1));
    let f = dir.path().join("locate_text.toml");
    std::fs::write(
        &f,
        format!(
            r#"
name = "gt06 locate text from the listener"
protocol = "gt06"
start = "2024-05-20T10:30:00Z"
config = '''
[[listener]]
protocol = "gt06"
bind = "127.0.0.1:5023"
gt06_locate = "DWXX#"
'''
[[step]]
device = "78 78 0D 01 08 68 12 01 45 23 36 04 00 01 69 70 0D 0A"
reply = "78 78 05 01 00 01 D9 DC 0D 0A"
[[step]]
after = "1s"
api = "POST /v1/devices/868120145233604/commands"
body = '{{"type": "locate"}}'
status = 202
downlink = "{downlink}"
"#
        ),
    )
    .unwrap();
    let out = replay(&[f.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // The JT/T 808 fixtures' codes come from the default key: under another, they differ.
    let jt = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("protocol-fixtures/jt808/jt808-2013.toml"),
    )
    .unwrap();
    assert!(
        !jt.contains("\nconfig"),
        "the fixture brings no config of its own"
    );
    let cfg = dir.path().join("other-key.toml");
    std::fs::write(
        &cfg,
        "[ingest]\njt808_auth_key = \"another-key-0123456789\"\n",
    )
    .unwrap();
    let jt_file = dir.path().join("jt808.toml");
    std::fs::write(&jt_file, &jt).unwrap();
    let out = replay(&["--config", cfg.to_str().unwrap(), jt_file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reply differs"), "{stderr}");
    // A fixture with a config of its own changes what it names, over the operator's file:
    // the key still comes from `--config`.
    let own = dir.path().join("jt808-own-config.toml");
    std::fs::write(
        &own,
        format!("config = '''\n[rules]\nstay_min = \"30m\"\n'''\n{jt}"),
    )
    .unwrap();
    let out = replay(&["--config", cfg.to_str().unwrap(), own.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reply differs"), "{stderr}");
    let out = replay(&[own.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// A gate pointed at the wrong folder fails instead of passing on nothing.
#[test]
fn replay_of_a_folder_without_fixtures_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay(&[dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no fixture"), "{stderr}");
}
