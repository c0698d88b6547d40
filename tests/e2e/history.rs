//! Position history over real sockets (CONTRACT.md "Position history"): the track API in both
//! formats, late batches in their time order, retention, suspect fixes, and SIGKILL.

use crate::common::jt808::{batch_body, location_body, Terminal, KEY_CONFIG};
use crate::common::*;
use lienwatch::event::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IMEI: &str = "868120145233604";

/// Now, in whole seconds (a GT06 fix carries no milliseconds).
fn now_s() -> Timestamp {
    Timestamp::from_secs(Timestamp::now().secs())
}

fn track(d: &Daemon, id: &str, query: &str) -> Vec<serde_json::Value> {
    let (s, v) = d.api("GET", &format!("/v1/devices/{id}/track{query}"), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["device_id"], id);
    v["positions"].as_array().cloned().unwrap_or_default()
}

fn times(ps: &[serde_json::Value]) -> Vec<String> {
    ps.iter()
        .map(|p| p["time"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn q(t: Timestamp) -> String {
    t.to_string().replace(':', "%3A")
}

#[test]
fn fixes_come_back_in_time_order_filtered_in_json_and_geojson() {
    let d = Daemon::start(&["gt06"], "");
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    let now = now_s();
    // Sent out of order, one re-sent: each fix once, in fix-time order; the future one suspect.
    let offsets = [-600i64, -300, -900, -120, -300];
    for (i, off) in offsets.iter().enumerate() {
        let t = now.add_millis(off * 1000);
        let serial = 2 + i as u16;
        dev.exchange_bytes(
            &gt06_location(serial, gt06_civil(t), 22.5 + *off as f64 * -1e-5, 114.05),
            &gt06_ack(0x12, serial),
        );
    }
    let future = now.add(Duration::from_secs(3 * 86_400));
    dev.exchange_bytes(
        &gt06_location(9, gt06_civil(future), 22.6, 114.05),
        &gt06_ack(0x12, 9),
    );
    let want: Vec<String> = [-900i64, -600, -300, -120]
        .iter()
        .map(|o| now.add_millis(o * 1000).to_string())
        .collect();
    let all = track(&d, IMEI, "");
    assert_eq!(times(&all), want, "the last 24 h by default, oldest first");
    assert_eq!(all[0]["valid"], true);
    assert!(all[0]["received_at"].is_string());
    assert!(all.iter().all(|p| p.get("suspect").is_none()));

    // [from, to): the bounds are inclusive and exclusive.
    let from = now.add_millis(-600_000);
    let to = now.add_millis(-120_000);
    let part = track(&d, IMEI, &format!("?from={}&to={}", q(from), q(to)));
    assert_eq!(times(&part), want[1..3].to_vec());
    let two = track(&d, IMEI, "?limit=2");
    assert_eq!(times(&two), want[..2].to_vec());

    // The future fix is kept, marked, and is not the last-known position.
    let later = track(
        &d,
        IMEI,
        &format!("?from={}&to={}", q(now), q(future.add_millis(1000))),
    );
    assert_eq!(times(&later), vec![future.to_string()]);
    assert_eq!(later[0]["suspect"], "future");
    let (_, dv) = d.api("GET", &format!("/v1/devices/{IMEI}"), None);
    assert_eq!(dv["position"]["time"], want[3]);

    // GeoJSON: the same positions as Point features, longitude first.
    let (s, text) = http(
        d.admin,
        "GET",
        &format!("/v1/devices/{IMEI}/track?format=geojson"),
        None,
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(s, 200);
    let g: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(g["type"], "FeatureCollection");
    let fs = g["features"].as_array().unwrap();
    assert_eq!(fs.len(), 4);
    for (f, p) in fs.iter().zip(&all) {
        assert_eq!(f["type"], "Feature");
        assert_eq!(f["geometry"]["type"], "Point");
        assert_eq!(f["geometry"]["coordinates"][0], p["lon"]);
        assert_eq!(f["geometry"]["coordinates"][1], p["lat"]);
        assert_eq!(f["properties"]["time"], p["time"]);
        assert_eq!(f["properties"]["speed_kmh"], p["speed_kmh"]);
    }

    // Bad requests: 400 naming the parameter; a device never seen: 404; no token: 401.
    for (query, word) in [
        ("?from=yesterday", "from"),
        ("?limit=100001", "limit"),
        ("?format=kml", "format"),
        (&format!("?from={}&to={}", q(to), q(from)), "before"),
        // A misspelt parameter is not the default range in disguise.
        ("?start=2026-11-01T00:00:00Z", "start"),
    ] {
        let (s, v) = d.api("GET", &format!("/v1/devices/{IMEI}/track{query}"), None);
        assert_eq!(s, 400, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains(word), "{v}");
    }
    assert_eq!(d.api("GET", "/v1/devices/999/track", None).0, 404);
    let (s, _) = http(
        d.admin,
        "GET",
        &format!("/v1/devices/{IMEI}/track"),
        None,
        None,
    )
    .unwrap();
    assert_eq!(s, 401);
}

#[test]
fn a_late_blind_area_batch_lands_in_its_time_order() {
    let d = Daemon::start(&["jt808"], KEY_CONFIG);
    let number = "13912340001";
    let mut t = Terminal::authenticated(&d, number);
    let now = now_s();
    let at = |min: i64| now.add_millis(-min * 60_000);
    for m in [30, 10] {
        assert_eq!(
            t.result_of(0x0200, &location_body(at(m), 22.54, 114.05, true)),
            0
        );
    }
    // Back from a tunnel: the fixes it stored, uploaded after the live ones.
    let items: Vec<Vec<u8>> = [25, 20, 15]
        .iter()
        .map(|&m| location_body(at(m), 22.55, 114.06, m != 20))
        .collect();
    assert_eq!(t.result_of(0x0704, &batch_body(1, &items)), 0);
    let ps = track(&d, number, "");
    let want: Vec<String> = [30, 25, 20, 15, 10]
        .iter()
        .map(|&m| at(m).to_string())
        .collect();
    assert_eq!(times(&ps), want);
    assert_eq!(ps[2]["valid"], false, "invalid fixes are kept too");
    let (_, dv) = d.api("GET", &format!("/v1/devices/{number}"), None);
    assert_eq!(
        dv["position"]["time"],
        at(10).to_string(),
        "late fixes never replace a newer one"
    );
}

#[test]
fn fixes_older_than_the_retention_disappear() {
    let mut d = Daemon::configure(&["gt06"], "");
    let toml = std::fs::read_to_string(&d.config).unwrap();
    let toml = toml.replacen("[storage]\n", "[storage]\nhistory_retention = \"1m\"\n", 1);
    std::fs::write(&d.config, toml).unwrap();
    d.spawn();
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    let now = now_s();
    let old = now.add_millis(-50_000);
    dev.exchange_bytes(
        &gt06_location(2, gt06_civil(old), 22.5, 114.0),
        &gt06_ack(0x12, 2),
    );
    dev.exchange_bytes(
        &gt06_location(3, gt06_civil(now), 22.5, 114.0),
        &gt06_ack(0x12, 3),
    );
    // Older than the retention on arrival: never kept.
    let ancient = now.add_millis(-3_600_000);
    dev.exchange_bytes(
        &gt06_location(4, gt06_civil(ancient), 22.5, 114.0),
        &gt06_ack(0x12, 4),
    );
    assert_eq!(
        times(&track(&d, IMEI, "")),
        vec![old.to_string(), now.to_string()]
    );
    // Once `old` is past the minute, it is gone from the track and pruned from disk.
    wait_for(Duration::from_secs(40), "the old fix to be pruned", || {
        let ps = times(&track(&d, IMEI, ""));
        let pruned = d.metric("lienwatch_history_pruned_total", &[]);
        (ps == vec![now.to_string()] && pruned >= 1.0).then_some(())
    });
    assert_eq!(d.metric("lienwatch_history_fixes_total", &[]), 2.0);
}

#[test]
fn every_acknowledged_fix_is_in_the_track_after_sigkill() {
    let mut d = Daemon::start(&["gt06"], "");
    let port = d.port("gt06");
    const DEVICES: usize = 8;
    let imei = |i: usize| format!("86812014600{i:04}");
    let start = now_s().add_millis(-3_000_000);
    let acked: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(vec![0; DEVICES]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for i in 0..DEVICES {
        let (acked, stop) = (acked.clone(), stop.clone());
        let id = imei(i);
        threads.push(std::thread::spawn(move || {
            let mut dev = Device::connect(("127.0.0.1", port));
            dev.exchange_bytes(&gt06_login(&id, 1), &gt06_ack(0x01, 1));
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut k = 1u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && Instant::now() < deadline
                && k < 2900
            {
                let serial = (k + 1) as u16;
                let t = start.add_millis(k as i64 * 1000);
                let frame = gt06_location(serial, gt06_civil(t), 22.5 + k as f64 * 1e-5, 114.0);
                if std::io::Write::write_all(&mut dev.stream, &frame).is_err() {
                    return;
                }
                let mut r = [0u8; 10];
                if std::io::Read::read_exact(&mut dev.stream, &mut r).is_err() {
                    return;
                }
                acked.lock().unwrap()[i] = k;
                k += 1;
            }
        }));
    }
    wait_for(
        Duration::from_secs(15),
        "acknowledgements to every device",
        || acked.lock().unwrap().iter().all(|&k| k >= 5).then_some(()),
    );
    d.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    d.spawn();
    for (i, &k) in acked.iter().enumerate() {
        let ps = track(&d, &imei(i), "?limit=100000");
        let got = times(&ps);
        // Every acknowledged fix, in order, each once (one more may have been written but not
        // yet acknowledged when the kill came).
        let want: Vec<String> = (1..=k)
            .map(|j| start.add_millis(j as i64 * 1000).to_string())
            .collect();
        assert!(got.len() >= want.len(), "device {i}: {} of {k}", got.len());
        assert_eq!(got[..want.len()], want[..], "device {i}");
    }
}

/// Sealing moves old fixes into the day files beside sled: they read back in order across
/// kills, and a late fix joins its sealed bucket once.
#[test]
fn sealed_fixes_read_back_after_kills_and_a_late_fix_joins_its_sealed_bucket() {
    let mut d = Daemon::start(&["gt06"], "");
    let base = now_s().add_millis(-2 * 86_400_000);
    let at = |k: i64| base.add_millis(k * 1_800_000);
    // Twelve hours of fixes, half-hourly: three six-hour buckets at least. Fix 7 comes late.
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    for k in (0..24).filter(|&k| k != 7) {
        let serial = 2 + k as u16;
        dev.exchange_bytes(
            &gt06_location(serial, gt06_civil(at(k)), 22.5 + k as f64 * 1e-3, 114.0),
            &gt06_ack(0x12, serial),
        );
    }
    let window = format!("?from={}&to={}", q(at(-1)), q(at(30)));
    let want = |ks: &mut dyn Iterator<Item = i64>| -> Vec<String> {
        ks.map(|k| at(k).to_string()).collect()
    };
    // SIGKILL, restart, and wait for the start-up pass to seal `n` fixes.
    let kill_and_seal = |d: &mut Daemon, n: f64| {
        d.kill9();
        d.spawn();
        wait_for(
            Duration::from_secs(30),
            "the logged fixes to be sealed",
            || (d.metric("lienwatch_history_sealed_total", &[]) >= n).then_some(()),
        );
    };
    // Killed before any background pass could seal: the start-up pass seals what was logged.
    kill_and_seal(&mut d, 23.0);
    let files: Vec<_> = std::fs::read_dir(d.dir.path().join("data").join("history"))
        .expect("the history folder")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".blocks"))
        .collect();
    assert!(!files.is_empty(), "sealed fixes live in day files");
    assert_eq!(
        times(&track(&d, IMEI, &window)),
        want(&mut (0..24).filter(|&k| k != 7))
    );
    // A window inside the sealed buckets, and the limit.
    let inner = format!("?from={}&to={}&limit=3", q(at(5)), q(at(20)));
    assert_eq!(
        times(&track(&d, IMEI, &inner)),
        want(&mut [5, 6, 8].into_iter())
    );
    // The late fix, and a copy of one already sealed: each kept once.
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    for (serial, k) in [(40u16, 7i64), (41, 3)] {
        dev.exchange_bytes(
            &gt06_location(serial, gt06_civil(at(k)), 22.5 + k as f64 * 1e-3, 114.0),
            &gt06_ack(0x12, serial),
        );
    }
    assert_eq!(times(&track(&d, IMEI, &window)), want(&mut (0..24)));
    kill_and_seal(&mut d, 2.0);
    let ps = track(&d, IMEI, &window);
    assert_eq!(times(&ps), want(&mut (0..24)));
    assert_eq!(ps[7]["lat"], serde_json::json!(22.507));
}

/// A host clock set a year forward prunes none of the history: the retention counts from a day
/// after the newest fix, and the daemon says the clock looks wrong; fixes the trackers date right
/// meanwhile are kept. With the clock right again, the track has every fix.
#[test]
fn a_host_clock_set_a_year_forward_prunes_no_history() {
    let Some(faketime) = crate::common::faketime::library() else {
        return;
    };
    let mut d = Daemon::configure(&["gt06"], "");
    let toml = std::fs::read_to_string(&d.config).unwrap();
    let toml = toml.replacen("[storage]\n", "[storage]\nhistory_retention = \"30d\"\n", 1);
    std::fs::write(&d.config, toml).unwrap();
    d.spawn();
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    let now = now_s();
    let sent: Vec<Timestamp> = [20i64, 10, 0]
        .iter()
        .map(|days| now.add_millis(-days * 86_400_000))
        .collect();
    for (i, t) in sent.iter().enumerate() {
        let serial = 2 + i as u16;
        dev.exchange_bytes(
            &gt06_location(serial, gt06_civil(*t), 22.5, 114.0),
            &gt06_ack(0x12, serial),
        );
    }
    drop(dev);
    // Up to a time well ahead: the fix sent in the wrong-clock phase may be dated a second
    // ahead of the real clock when the track is read.
    let all = |d: &Daemon| {
        times(&track(
            d,
            IMEI,
            "?from=2000-01-01T00%3A00%3A00Z&to=2100-01-01T00%3A00%3A00Z",
        ))
    };
    let want: Vec<String> = sent.iter().map(|t| t.to_string()).collect();
    assert_eq!(all(&d), want);
    assert_eq!(d.terminate(), Some(0));

    let lib = faketime.to_string_lossy().to_string();
    d.spawn_with_env(&[
        ("LD_PRELOAD", &lib),
        ("FAKETIME", "+400d"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    d.wait_healthy();
    // The upkeep pass at start seals, then prunes; a stop waits for the pass under way.
    let log = d.log_reader();
    wait_for(Duration::from_secs(30), "the clock warning", || {
        log()
            .contains("the host clock is more than a day ahead of the newest fix")
            .then_some(())
    });
    assert!(
        all(&d).is_empty(),
        "past the retention by the host clock, hidden"
    );
    // A fix the tracker dates right, while the host clock is wrong: kept, not dropped as a
    // year old.
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
    let meanwhile = now_s().max(now.add_millis(1000));
    dev.exchange_bytes(
        &gt06_location(9, gt06_civil(meanwhile), 22.5, 114.0),
        &gt06_ack(0x12, 9),
    );
    drop(dev);
    assert_eq!(d.terminate(), Some(0));

    d.spawn();
    let mut want = want;
    want.push(meanwhile.to_string());
    assert_eq!(all(&d), want, "every fix is still there");
}
