//! SIGHUP reloads webhook settings and rule thresholds without a restart, and refuses an
//! invalid file while the running configuration stays in force.

use crate::common::receiver::Receiver;
use crate::common::*;
use std::time::Duration;

const IMEI: &str = "868120145233604";

fn webhook(url: &str) -> String {
    format!(
        "[[webhook]]\nname = \"collections\"\nurl = \"{url}\"\nsecret = \"s3cret-0123456789\"\ntypes = [\"geofence_exit\", \"geofence_return\"]\n"
    )
}

fn exit_fix(d: &Daemon, serial: u16, lat: f64) {
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(
        &gt06_location(serial, (24, 5, 20, 10, serial as u8, 0), lat, 114.057865),
        &gt06_ack(0x12, serial),
    );
}

#[test]
fn sighup_applies_new_webhook_settings_and_refuses_a_bad_file() {
    let first = Receiver::start();
    let second = Receiver::start();
    let d = Daemon::start(&["gt06"], &webhook(&first.url()));
    let body = serde_json::json!({
        "loan": {"id": "L-1", "status": "overdue"},
        "devices": [{"id": IMEI}],
        "geofence": {"type": "Circle", "center": [114.057865, 22.543096], "radius_m": 1000}
    })
    .to_string();
    assert_eq!(d.api("PUT", "/v1/vehicles/V-1", Some(&body)).0, 201);
    exit_fix(&d, 2, 22.70);
    first.wait_for(Duration::from_secs(5), "exit at the first receiver", |a| {
        a.len() == 1
    });

    // Point the webhook elsewhere and reload.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, cfg.replace(&first.url(), &second.url())).unwrap();
    signal(d.pid(), "HUP");
    d.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
        v >= 1.0
    });
    // Return, then a new exit: both go to the second receiver only.
    exit_fix(&d, 3, 22.5431);
    exit_fix(&d, 4, 22.71);
    second.wait_for(
        Duration::from_secs(5),
        "alerts at the second receiver",
        |a| a.len() == 2,
    );
    assert_eq!(first.all().len(), 1);

    // An invalid file is refused; the daemon keeps running with what it had.
    std::fs::write(&d.config, "[rules]\nsilence_after = \"soon\"\n").unwrap();
    signal(d.pid(), "HUP");
    d.wait_metric(
        "lienwatch_config_reloads_total",
        &[("result", "error")],
        |v| v >= 1.0,
    );
    assert_eq!(
        d.metric("lienwatch_config_reloads_total", &[("result", "ok")]),
        1.0,
        "the refused reload counted as applied"
    );
    let (s, _) = http(d.admin, "GET", "/healthz", None, None).unwrap();
    assert_eq!(s, 200);
    exit_fix(&d, 5, 22.5431);
    second.wait_for(
        Duration::from_secs(5),
        "still delivering after a refused reload",
        |a| a.len() == 3,
    );
    assert!(d.log().contains("reload refused"), "{}", d.log());
}

/// `[risk.points]` is read at start only: a reload that changes it says so in the journal
/// rather than leaving the old points in force without a word.
#[test]
fn a_reload_names_changed_risk_points_as_needing_a_restart() {
    let d = Daemon::start(&["gt06"], "");
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        format!("{cfg}\n[risk.points]\nsilent_overdue = 50\n"),
    )
    .unwrap();
    signal(d.pid(), "HUP");
    d.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
        v >= 1.0
    });
    wait_for(Duration::from_secs(5), "the restart warning", || {
        let log = d.log();
        (log.contains("take effect only after a restart") && log.contains("[risk.points]"))
            .then_some(())
    });
}
