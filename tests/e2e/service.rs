//! lienwatch under a service manager: sd_notify readiness, watchdog pings, clean stop on SIGTERM,
//! SIGHUP that does not kill, and the Prometheus metrics an operator watches.
//!
//! The service manager is played by a Unix datagram socket that the daemon finds in
//! `NOTIFY_SOCKET`, as systemd passes it to a `Type=notify` service.

use crate::common::metrics::metric;
use crate::common::*;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// GT06 examples from protocols.md §A.6 (IMEI 868120145233604).
const LOGIN: &str = "78 78 0D 01 08 68 12 01 45 23 36 04 00 01 69 70 0D 0A";
const LOGIN_REPLY: &str = "78 78 05 01 00 01 D9 DC 0D 0A";
/// 0x12 location, 2024-05-20 10:30:15 UTC, 22.543096 N 114.057865 E, serial 3.
const LOCATION: &str = "78 78 1F 12 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 3C 14 5A 01 CC 00 24 7C 0F 2A 31 00 03 6D E9 0D 0A";
const LOCATION_REPLY: &str = "78 78 05 12 00 03 90 3F 0D 0A";
const IMEI: &str = "868120145233604";

/// The service manager's end of `NOTIFY_SOCKET`.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { sock, path }
    }

    /// The next notification (one datagram, possibly several `KEY=value` lines), or `None` after
    /// `wait`.
    fn recv(&self, wait: Duration) -> Option<String> {
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Waits (at most `wait`) for a notification with the line `line`; returns every notification
    /// received before it.
    fn wait_for(&self, line: &str, wait: Duration, log: &dyn Fn() -> String) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no {line} within {wait:?}; received {before:?}; daemon log:\n{}",
                    log()
                );
            }
            if let Some(m) = self.recv(left) {
                if m.lines().any(|l| l == line) {
                    return before;
                }
                before.push(m);
            }
        }
    }

    /// Every notification that arrives within `window`.
    fn collect(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            if let Some(m) = self.recv(left) {
                out.push(m);
            }
        }
    }
}

fn count(msgs: &[String], line: &str) -> usize {
    msgs.iter()
        .flat_map(|m| m.lines())
        .filter(|l| *l == line)
        .count()
}

#[test]
fn ready_means_trackers_can_connect_watchdog_pings_and_sigterm_stops_cleanly() {
    let mut svc = Daemon::configure(&["gt06"], "");
    let notify = NotifySocket::bind(svc.dir.path());
    let notify_path = notify.path.to_str().expect("utf-8 path").to_string();
    // WATCHDOG_PID is left unset: sd_notify then takes the watchdog as meant for this process.
    svc.spawn_with_env(&[
        ("NOTIFY_SOCKET", &notify_path),
        ("WATCHDOG_USEC", "1000000"),
    ]);
    let log = svc.log_reader();

    let before_ready = notify.wait_for("READY=1", Duration::from_secs(30), &log);
    assert_eq!(
        count(&before_ready, "WATCHDOG=1"),
        0,
        "watchdog pings before READY: {before_ready:?}"
    );

    // At READY, a tracker can connect at once (no retry) and is answered; so is the admin API.
    let stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], svc.port("gt06"))),
        Duration::from_secs(2),
    )
    .expect("the GT06 port accepts connections as soon as READY=1 is sent");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut dev = Device { stream };
    dev.exchange(LOGIN, LOGIN_REPLY);
    let (status, _) = http(svc.admin, "GET", "/healthz", None, None).expect("admin API is up");
    assert_eq!(status, 200);

    // WATCHDOG_USEC = 1 s: a ping about every 0.25 s (the engine answered each probe). Pings
    // are a rate, so this counts them over a real-time window.
    let window = notify.collect(Duration::from_secs(3));
    let pings = count(&window, "WATCHDOG=1");
    assert!(
        (6..=16).contains(&pings),
        "{pings} watchdog pings in 3 s with WATCHDOG_USEC=1000000 (expected about 12): {window:?}"
    );

    // `systemctl reload` sends SIGHUP: it must never take the daemon down.
    signal(svc.pid(), "HUP");
    svc.wait_metric("lienwatch_config_reloads_total", &[("result", "ok")], |v| {
        v >= 1.0
    });
    assert!(svc.running(), "SIGHUP killed lienwatch:\n{}", svc.log());
    let (status, _) = http(svc.admin, "GET", "/healthz", None, None).expect("admin API is up");
    assert_eq!(status, 200);

    // A position acknowledged to the device, then SIGTERM while the device is still connected.
    dev.exchange(LOCATION, LOCATION_REPLY);
    signal(svc.pid(), "TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &log);
    let code = svc.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "exit after SIGTERM:\n{}", svc.log());
    assert!(
        dev.closed_by_server(Duration::from_secs(2)),
        "the tracker connection was left open"
    );
    assert!(
        svc.log().contains("lienwatch stopped"),
        "no orderly shutdown in the log:\n{}",
        svc.log()
    );

    // Restarted, the acknowledged position is there.
    svc.spawn();
    let (status, dev_json) = svc.api("GET", &format!("/v1/devices/{IMEI}"), None);
    assert_eq!(status, 200, "{dev_json}\n{}", svc.log());
    let pos = &dev_json["position"];
    assert_eq!(pos["time"], "2024-05-20T10:30:15Z", "{dev_json}");
    let lat = pos["lat"].as_f64().expect("lat");
    let lon = pos["lon"].as_f64().expect("lon");
    assert!((lat - 22.543096).abs() < 1e-6, "{dev_json}");
    assert!((lon - 114.057865).abs() < 1e-6, "{dev_json}");
}

#[test]
fn watchdog_meant_for_another_process_is_not_pinged() {
    let mut svc = Daemon::configure(&["gt06"], "");
    let notify = NotifySocket::bind(svc.dir.path());
    let notify_path = notify.path.to_str().expect("utf-8 path").to_string();
    // systemd sets WATCHDOG_PID to the main process; a daemon that sees another pid (it was
    // started by something that inherited the variables) must leave the watchdog alone.
    svc.spawn_with_env(&[
        ("NOTIFY_SOCKET", &notify_path),
        ("WATCHDOG_USEC", "200000"),
        ("WATCHDOG_PID", "1"),
    ]);
    let log = svc.log_reader();
    notify.wait_for("READY=1", Duration::from_secs(30), &log);
    // Seven and a half watchdog periods of real time, in which a wrongly pinging daemon would
    // have pinged several times.
    let window = notify.collect(Duration::from_millis(1500));
    assert_eq!(count(&window, "WATCHDOG=1"), 0, "{window:?}");
    assert!(
        window
            .iter()
            .flat_map(|m| m.lines())
            .any(|l| l.starts_with("STATUS=")),
        "no STATUS= after READY: {window:?}"
    );

    signal(svc.pid(), "TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &log);
    assert_eq!(
        svc.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        svc.log()
    );
}

#[test]
fn metrics_move_with_traffic() {
    let d = Daemon::start(&["gt06"], "");
    let gt06 = [("protocol", "gt06")];
    let before = d.scrape();
    let conns = metric(&before, "lienwatch_connections_total", &gt06);
    let decoded = metric(&before, "lienwatch_frames_decoded_total", &gt06);
    let rejected = metric(&before, "lienwatch_frames_rejected_total", &gt06);
    let commits = metric(&before, "lienwatch_commit_seconds_count", &[]);

    // A tracker that logs in and reports a position.
    let mut dev = d.connect("gt06");
    dev.exchange(LOGIN, LOGIN_REPLY);
    dev.exchange(LOCATION, LOCATION_REPLY);
    // Another that sends garbage before its login (the login's reply proves the garbage was read).
    let mut noisy = d.connect("gt06");
    noisy.send_hex("00 11 22 33 44 55 66 77");
    noisy.exchange(LOGIN, LOGIN_REPLY);

    let during = d.scrape_until(|t| {
        metric(t, "lienwatch_connections", &gt06) == 2.0
            && metric(t, "lienwatch_frames_rejected_total", &gt06) > rejected
    });
    assert_eq!(
        metric(&during, "lienwatch_connections", &gt06),
        2.0,
        "open connections:\n{during}"
    );
    assert!(
        metric(&during, "lienwatch_connections_total", &gt06) >= conns + 2.0,
        "connections_total did not count 2 connections:\n{during}"
    );
    assert!(
        metric(&during, "lienwatch_frames_decoded_total", &gt06) >= decoded + 1.0,
        "frames_decoded_total did not count the position:\n{during}"
    );
    assert!(
        metric(&during, "lienwatch_frames_rejected_total", &gt06) >= rejected + 1.0,
        "frames_rejected_total did not count the garbage:\n{during}"
    );
    assert!(
        metric(&during, "lienwatch_commit_seconds_count", &[]) > commits,
        "commit_seconds did not record the position's commit:\n{during}"
    );
    assert!(
        metric(&during, "lienwatch_commit_seconds_sum", &[]) > 0.0,
        "{during}"
    );

    // Closed connections leave the gauge.
    drop(dev);
    drop(noisy);
    let after = d.scrape_until(|t| metric(t, "lienwatch_connections", &gt06) == 0.0);
    assert_eq!(
        metric(&after, "lienwatch_connections", &gt06),
        0.0,
        "connections gauge after both closed:\n{after}"
    );
}

/// A daemon whose host clock a test can step (libfaketime's offset, read within a second; the
/// monotonic clock left alone), with an overdue car whose tracker logged in once: the offset
/// file to write, and the count of `silent_overdue` alerts.
fn daemon_with_a_clock_to_step(rules: &str) -> Option<(Daemon, std::path::PathBuf)> {
    let lib = crate::common::faketime::library()?;
    let mut d = Daemon::configure(&["gt06"], &format!("[rules]\n{rules}"));
    let offset = d.dir.path().join("faketime-offset");
    std::fs::write(&offset, "+0d\n").unwrap();
    let (lib, file) = (lib.to_string_lossy(), offset.to_string_lossy());
    d.spawn_with_env(&[
        ("LD_PRELOAD", &lib),
        ("FAKETIME_TIMESTAMP_FILE", &file),
        ("FAKETIME_CACHE_DURATION", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    d.wait_healthy();
    let imei = "868120145233604";
    let body = format!(
        r#"{{"loan": {{"id": "L-1", "status": "overdue"}}, "devices": [{{"id": "{imei}"}}]}}"#
    );
    assert_eq!(d.api("PUT", "/v1/vehicles/V-1", Some(&body)).0, 201);
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(imei, 1), &gt06_ack(0x01, 1));
    drop(dev);
    assert_eq!(d.metric("lienwatch_clock_steps_total", &[]), 0.0);
    assert_eq!(silent_alerts(&d), 0.0);
    Some((d, offset))
}

fn silent_alerts(d: &Daemon) -> f64 {
    d.metric(
        "lienwatch_alerts_raised_total",
        &[("type", "silent_overdue")],
    )
}

/// A step of the host clock while the daemon runs (libfaketime's offset moved from none to
/// 400 days) is counted and logged with its size: what an operator needs to explain the
/// `received_at` times that follow it. With no startup grace, what fell due with the step (here
/// an overdue car's silence) is raised within seconds, not at the engine's next minute.
#[test]
fn a_step_of_the_host_clock_is_counted_and_logged() {
    let Some((mut d, offset)) =
        daemon_with_a_clock_to_step("silence_after = \"1h\"\nstartup_grace = \"0s\"\n")
    else {
        return;
    };
    std::fs::write(&offset, "+400d\n").unwrap();
    // The new offset is read within a second, and the alert is raised within a second of that
    // (the engine slept up to a minute before).
    wait_for(Duration::from_secs(10), "the silence that fell due", || {
        (silent_alerts(&d) == 1.0).then_some(())
    });
    wait_for(Duration::from_secs(30), "the step to be counted", || {
        (d.metric("lienwatch_clock_steps_total", &[]) == 1.0).then_some(())
    });
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("the host clock stepped"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(line.contains("step_s=3456000"), "400 days: {line}");
    assert_eq!(d.terminate(), Some(0));
}

/// A forward step (an NTP correction at boot on a board without a real-time clock) is time the
/// daemon did not watch, as its own downtime is (CONTRACT.md, `startup_grace`): the silence it
/// carries past raises nothing when the step is taken in, and a tracker that stays silent
/// alerts once the grace after the step has passed.
#[test]
fn a_step_of_the_host_clock_holds_silence_alerts_for_the_grace() {
    let Some((mut d, offset)) =
        daemon_with_a_clock_to_step("silence_after = \"1h\"\nstartup_grace = \"4s\"\n")
    else {
        return;
    };
    std::fs::write(&offset, "+400d\n").unwrap();
    // Counted once the engine has taken the step in and committed the tick after it.
    wait_for(Duration::from_secs(30), "the step to be counted", || {
        (d.metric("lienwatch_clock_steps_total", &[]) == 1.0).then_some(())
    });
    assert_eq!(silent_alerts(&d), 0.0, "raised at the step");
    wait_for(
        Duration::from_secs(30),
        "the silence after the grace",
        || (silent_alerts(&d) == 1.0).then_some(()),
    );
    assert_eq!(d.terminate(), Some(0));
}
