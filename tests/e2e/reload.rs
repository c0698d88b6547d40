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

/// V-1 on an overdue loan, its tracker `IMEI`, a 1 km fence around where `exit_fix` starts.
fn put_fenced_car(d: &Daemon) {
    let body = serde_json::json!({
        "loan": {"id": "L-1", "status": "overdue"},
        "devices": [{"id": IMEI}],
        "geofence": {"type": "Circle", "center": [114.057865, 22.543096], "radius_m": 1000}
    })
    .to_string();
    assert_eq!(d.api("PUT", "/v1/vehicles/V-1", Some(&body)).0, 201);
}

#[test]
fn sighup_applies_new_webhook_settings_and_refuses_a_bad_file() {
    let first = Receiver::start();
    let second = Receiver::start();
    let d = Daemon::start(&["gt06"], &webhook(&first.url()));
    put_fenced_car(&d);
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

/// A reload that changes no webhook setting leaves the webhook workers running: a restart
/// would cut their requests in flight and retry every pending alert at once, past its backoff.
/// The alert raised after it still goes out.
#[test]
fn a_reload_without_webhook_changes_keeps_the_workers() {
    let rx = Receiver::start();
    let d = Daemon::start(&["gt06"], &webhook(&rx.url()));
    put_fenced_car(&d);
    signal(d.pid(), "HUP");
    d.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
        v >= 1.0
    });
    let log = d.log();
    assert!(log.contains("webhook settings unchanged"), "{log}");
    assert!(!log.contains("webhook settings reloaded"), "{log}");
    exit_fix(&d, 2, 22.70);
    rx.wait_for(Duration::from_secs(5), "the exit", |a| a.len() == 1);
}

/// Webhooks are matched by name: tables put in another order, one of them pointed elsewhere,
/// are reloaded, not refused as if renamed.
#[test]
fn a_reload_takes_webhook_tables_in_another_order() {
    let (a, b, c) = (Receiver::start(), Receiver::start(), Receiver::start());
    let hook = |name: &str, url: &str| {
        format!(
            "[[webhook]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"s3cret-0123456789\"\ntypes = [\"geofence_exit\"]\n"
        )
    };
    let d = Daemon::start(
        &["gt06"],
        &format!("{}{}", hook("a", &a.url()), hook("b", &b.url())),
    );
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let first = cfg.find("[[webhook]]").unwrap();
    let swapped = format!(
        "{}{}{}",
        &cfg[..first],
        hook("b", &c.url()),
        hook("a", &a.url())
    );
    assert!(!swapped.contains(&b.url()), "{swapped}");
    std::fs::write(&d.config, swapped).unwrap();
    signal(d.pid(), "HUP");
    d.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
        v >= 1.0
    });
    put_fenced_car(&d);
    exit_fix(&d, 2, 22.70);
    a.wait_for(Duration::from_secs(5), "the exit at a", |x| x.len() == 1);
    c.wait_for(Duration::from_secs(5), "the exit at b's new url", |x| {
        x.len() == 1
    });
    assert!(b.all().is_empty(), "b's old url still used");
    assert!(!d.log().contains("only after a restart"), "{}", d.log());
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

/// A token leaked: the operator writes a new one to `token_file` and reloads. The old token
/// stops working at once, the new one works, and no tracker connection is dropped.
#[test]
fn a_reload_replaces_the_admin_token_from_its_file() {
    let mut d = Daemon::configure(&["gt06"], "");
    let file = d.dir.path().join("admin.token");
    std::fs::write(&file, "first-token-0123456789\n").unwrap();
    let cfg = std::fs::read_to_string(&d.config).unwrap().replace(
        &format!("token = \"{TOKEN}\""),
        &format!("token_file = {:?}", file.display().to_string()),
    );
    std::fs::write(&d.config, cfg).unwrap();
    d.spawn();
    let get = |token: &str| {
        http(d.admin, "GET", "/v1/alerts", None, Some(token))
            .expect("admin API")
            .0
    };
    assert_eq!(get("first-token-0123456789"), 200);
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));

    std::fs::write(&file, "second-token-9876543210\n").unwrap();
    signal(d.pid(), "HUP");
    d.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
        v >= 1.0
    });
    assert_eq!(
        get("first-token-0123456789"),
        401,
        "the leaked token is revoked"
    );
    assert_eq!(get("second-token-9876543210"), 200);
    dev.exchange_bytes(
        &gt06_location(2, (24, 5, 20, 10, 0, 0), 22.5, 114.05),
        &gt06_ack(0x12, 2),
    );
    assert!(
        !d.log().contains("take effect only after a restart"),
        "{}",
        d.log()
    );
}

/// A change that needs a restart is named at every reload until the restart, not only at the
/// first: a second reload must not take the waiting change for one in force.
#[test]
fn a_change_waiting_for_a_restart_is_named_at_every_reload() {
    let d = Daemon::start(&["gt06"], "");
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{cfg}\n[ingest]\nmax_frame = 4096\n")).unwrap();
    let warnings = || {
        d.log()
            .lines()
            .filter(|l| l.contains("take effect only after a restart") && l.contains("[ingest]"))
            .count()
    };
    for n in 1..=2 {
        signal(d.pid(), "HUP");
        d.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
            v >= n as f64
        });
        wait_for(Duration::from_secs(5), "the restart warning", || {
            (warnings() >= n).then_some(())
        });
    }
}

/// `systemctl reload` while the store is still opening (it can take a while on a large
/// database): the reload waits for the daemon to be ready instead of ending it, as an unhandled
/// SIGHUP would.
#[test]
fn a_sighup_during_start_up_does_not_end_the_daemon() {
    let mut d = Daemon::configure(&["gt06"], "");
    d.spawn_with_env(&[]);
    wait_for(Duration::from_secs(20), "the store opening", || {
        d.log().contains("opening the store").then_some(())
    });
    signal(d.pid(), "HUP");
    d.wait_healthy();
    d.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
        v >= 1.0
    });
    assert!(d.running());
}

/// `rules.timezone` is reloaded with the rules, and the console shows times in it from then on.
#[test]
fn a_reload_moves_the_consoles_time_zone_with_the_rules() {
    let d = Daemon::start(&["gt06"], "");
    let zone = || {
        let (s, body) = http(d.admin, "GET", "/console/config.json", None, None).expect("console");
        assert_eq!(s, 200);
        serde_json::from_str::<serde_json::Value>(&body).expect("json")["timezone"].clone()
    };
    assert_eq!(zone(), "UTC");
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        format!("{cfg}\n[rules]\ntimezone = \"Asia/Shanghai\"\n"),
    )
    .unwrap();
    signal(d.pid(), "HUP");
    d.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
        v >= 1.0
    });
    assert_eq!(zone(), "Asia/Shanghai");
}
