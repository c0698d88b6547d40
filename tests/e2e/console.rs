//! The web console (CONTRACT.md "Console") in a real browser: Debian's headless chromium driven
//! through chromedriver (WebDriver) against the real daemon with real GT06 trackers connected.
//! The console shows a panel only when the daemon describes its endpoint in `/v1/openapi.json`;
//! this daemon describes them all (track, places, zones, commands, risk), and the walk-through
//! asserts every one.
//!
//! Without chromium and chromedriver a local run skips with a message; under CI (`CI=true`, and
//! `.ci/run` installs them) it fails.

use crate::common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WIRED: &str = "868120145233604";
const WIRELESS: &str = "868120145233612";
const OTHER: &str = "868120145233620";
const ANSWER: &str = "Lat:N22.543100,Lon:E114.057800,Course:0,Speed:0";

/// chromedriver on a free loopback port, with its own temporary chromium profile. Dropping it
/// ends the browser (found by its profile directory) and chromedriver itself.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
    chromium: PathBuf,
}

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

impl Driver {
    /// `None` (after a message) when chromium or chromedriver is missing outside CI.
    fn start() -> Option<Driver> {
        let chromium = find_in_path(&["chromium", "chromium-browser"]);
        let driver = find_in_path(&["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "chromium or chromedriver is not installed, and CI=true: the console cannot be \
                 tested (apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "SKIPPED: chromium or chromedriver is not installed (apt-get install chromium \
                 chromium-driver); the console was not tested in a browser"
            );
            return None;
        };
        let profile = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let d = Driver {
            child,
            port,
            profile,
            chromium,
        };
        wait_for(Duration::from_secs(20), "chromedriver to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Some(d)
    }

    async fn client(&self) -> Client {
        let data = self.profile.path().join("chromium");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", data.display()),
                    "--window-size=1440,900", "--lang=en-US", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--disable-extensions",
                ],
                "prefs": {"intl.accept_languages": "en-US,en"}
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        b.capabilities(caps);
        b.connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("a chromium session: {e}\n{}", self.log()))
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.profile.path().join("chromedriver.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The browser processes this driver started: every process whose command line names this
    /// test's profile directory.
    fn browser_pids(&self) -> Vec<u32> {
        let needle = self.profile.path().to_string_lossy().into_owned();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            })
            .collect()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for pid in self.browser_pids() {
            signal(pid, "KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET that keeps the response headers (the harness's `http` returns the body only).
fn get_with_headers(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("response");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head, resp[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

/// The console's files need no token and carry a strict policy; the data behind them does.
#[test]
fn console_files_are_served_with_a_strict_policy_and_no_data() {
    let d = Daemon::start(
        &["gt06"],
        "[console]\ntile_url = \"https://{s}.tiles.example/{z}/{x}/{y}.png\"\ntile_crs = \"gcj02\"\n",
    );
    let (s, head, body) = get_with_headers(d.admin, "/");
    assert_eq!(s, 200, "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = header(&head, "content-security-policy").expect("CSP on the page");
    for want in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: https://*.tiles.example;",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(want), "{want} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&head, "cache-control"), Some("no-cache"));
    let etag = header(&head, "etag").expect("etag").to_string();
    let html = String::from_utf8_lossy(&body);
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );

    for (path, ty) in [
        ("/console/js/main.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        (
            "/console/vendor/leaflet/leaflet.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/vendor/leaflet/images/marker-icon.png",
            "image/png",
        ),
        ("/console/config.json", "application/json"),
    ] {
        let (s, head, _) = get_with_headers(d.admin, path);
        assert_eq!(s, 200, "{path}: {head}");
        assert_eq!(header(&head, "content-type"), Some(ty), "{path}");
        assert!(header(&head, "content-security-policy").is_some(), "{path}");
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    }
    let (s, _, _) = get_with_headers(d.admin, "/console/nothing.js");
    assert_eq!(s, 404);

    // Revalidation: the same file answers 304 to its ETag.
    let mut st = TcpStream::connect(d.admin).unwrap();
    write!(
        st,
        "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    st.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 304"), "{r}");

    // The page learns the map settings, and nothing secret, from config.json.
    let (_, _, body) = get_with_headers(d.admin, "/console/config.json");
    let c: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(c["tile_url"], "https://{s}.tiles.example/{z}/{x}/{y}.png");
    assert_eq!(c["tile_crs"], "gcj02");
    assert!(!String::from_utf8_lossy(&body).contains(TOKEN));

    // The data is still behind the token.
    let (s, _) = http(d.admin, "GET", "/v1/vehicles", None, None).unwrap();
    assert_eq!(s, 401);
}

#[test]
fn check_config_names_bad_console_keys() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[console]\ntile_crs = \"bd09\"\n", "console.tile_crs"),
        (
            "[console]\ntile_url = \"https://t.example/tiles.png\"\n",
            "console.tile_url",
        ),
        ("[console]\ntile_colour = \"red\"\n", "tile_colour"),
    ] {
        let p = dir.path().join("console.toml");
        std::fs::write(&p, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
            .args(["check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(key), "{text}: {err}");
    }
    let p = dir.path().join("good.toml");
    std::fs::write(&p, "[console]\ntile_url = \"\"\ntile_crs = \"gcj02\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienwatch"))
        .args(["check-config", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The UTC civil time `secs_ago` seconds ago, as GT06 dates carry it.
fn civil_ago(secs_ago: i64) -> (u8, u8, u8, u8, u8, u8) {
    gt06_civil(lienwatch::time::Timestamp::now().add_millis(-secs_ago * 1000))
}

/// A GT06 LBS-only report (0x28): no GNSS fix, the serving cell only.
fn gt06_lbs(serial: u16, at: (u8, u8, u8, u8, u8, u8)) -> Vec<u8> {
    let mut c = vec![at.0, at.1, at.2, at.3, at.4, at.5];
    c.extend_from_slice(&460u16.to_be_bytes());
    c.push(0);
    for i in 0..7u8 {
        c.extend_from_slice(&[0x24, 0x7C, 0x0F, 0x2A, 0x31, 60 + i]);
    }
    c.extend_from_slice(&[0x00, 0x00, 0x01]);
    gt06_frame(0x28, &c, serial)
}

/// A GT06 0x12 location whose fix flag is off (course/status bit 12 clear): coordinates the
/// device still holds from an old fix, which lienwatch stores as `valid: false`.
fn gt06_stale_location(serial: u16, at: (u8, u8, u8, u8, u8, u8), lat: f64, lon: f64) -> Vec<u8> {
    let mut c = vec![at.0, at.1, at.2, at.3, at.4, at.5, 0xC0];
    c.extend_from_slice(&((lat * 1_800_000.0).round() as u32).to_be_bytes());
    c.extend_from_slice(&((lon * 1_800_000.0).round() as u32).to_be_bytes());
    c.extend_from_slice(&[
        0x00, 0x04, 0x5A, 0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31,
    ]);
    gt06_frame(0x12, &c, serial)
}

/// The wired tracker after its fixes: it stays connected and answers every online command
/// (0x80) with a short text reply (0x15) carrying the server flag back, as GT06 units do.
fn answer_commands(mut dev: Device, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = dev
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut serial = 100u16;
        while !stop.load(Ordering::Relaxed) {
            match dev.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return,
            }
            loop {
                let Some(start) = buf
                    .windows(2)
                    .position(|w| w == [0x78, 0x78] || w == [0x79, 0x79])
                else {
                    buf.clear();
                    break;
                };
                buf.drain(..start);
                let (hdr, len) = if buf[0] == 0x78 {
                    if buf.len() < 3 {
                        break;
                    }
                    (3, buf[2] as usize)
                } else {
                    if buf.len() < 4 {
                        break;
                    }
                    (4, u16::from_be_bytes([buf[2], buf[3]]) as usize)
                };
                let total = hdr + len + 2;
                if buf.len() < total {
                    break;
                }
                let frame: Vec<u8> = buf.drain(..total).collect();
                // proto, content, serial (2), crc (2)
                if len >= 5 && frame[hdr] == 0x80 {
                    let content = &frame[hdr + 1..hdr + len - 4];
                    if content.len() >= 5 {
                        let flag = &content[1..5];
                        let mut reply = vec![(4 + ANSWER.len()) as u8];
                        reply.extend_from_slice(flag);
                        reply.extend_from_slice(ANSWER.as_bytes());
                        reply.extend_from_slice(&[0x00, 0x02]);
                        serial = serial.wrapping_add(1);
                        let _ = dev.stream.write_all(&gt06_frame(0x15, &reply, serial));
                    }
                }
            }
        }
    })
}

/// Polls a script in the page until it returns something truthy (not false, null, 0 or "").
async fn wait_js(c: &Client, script: &str, limit: Duration, what: &str) -> Value {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        match c.execute(script, vec![]).await {
            Ok(v) => {
                let truthy = match &v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return v;
                }
                last = v;
            }
            Err(e) => last = Value::String(e.to_string()),
        }
        if Instant::now() > deadline {
            let status = c
                .execute(
                    "return document.getElementById('status')?.textContent",
                    vec![],
                )
                .await
                .unwrap_or(Value::Null);
            panic!("timed out after {limit:?} waiting for {what} (last: {last}; status line: {status})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status line shows no refresh error (a panel that failed to draw), once the page's
/// refresh has said anything.
async fn no_error_shown(c: &Client) {
    wait_js(
        c,
        "return document.getElementById('status').textContent",
        Duration::from_secs(30),
        "the status line",
    )
    .await;
    let s = js(
        c,
        "const s = document.getElementById('status'); return [s.className, s.textContent]",
    )
    .await;
    assert_ne!(s[0], "error", "the console shows an error: {s}");
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Types `token` into the sign-in form, once it is shown, and submits it.
async fn sign_in(c: &Client, token: &str) -> Result<(), String> {
    let failed =
        |what: &'static str| move |e: fantoccini::error::CmdError| format!("sign-in, {what}: {e}");
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#token"))
        .await
        .map_err(failed("the form"))?
        .send_keys(token)
        .await
        .map_err(failed("typing the token"))?;
    c.find(Locator::Css("#signin-submit"))
        .await
        .map_err(failed("the button"))?
        .click()
        .await
        .map_err(failed("clicking"))?;
    Ok(())
}

/// Waits until the open page has refreshed itself twice more: what came before is shown.
async fn two_more_polls(c: &Client, what: &str) {
    let polls = js(c, "return window.lienwatch.polls")
        .await
        .as_i64()
        .unwrap_or(0);
    wait_js(
        c,
        &format!("return window.lienwatch.polls >= {}", polls + 2),
        Duration::from_secs(30),
        what,
    )
    .await;
}

fn has_op(api: &Value, path: &str, method: &str) -> bool {
    api["paths"].as_object().is_some_and(|ps| {
        ps.iter().any(|(p, item)| {
            let norm: String = {
                let mut out = String::new();
                let mut depth = 0;
                for ch in p.chars() {
                    match ch {
                        '{' => {
                            depth += 1;
                            out.push_str("{}");
                        }
                        '}' => depth -= 1,
                        _ if depth > 0 => {}
                        _ => out.push(ch),
                    }
                }
                out
            };
            norm == path && item.get(method).is_some()
        })
    })
}

#[test]
fn console_in_headless_chromium() {
    let Some(driver) = Driver::start() else {
        return;
    };
    // The lender's zone (`rules.timezone`, in which the console shows times and days) is one
    // where it is about noon now: "today" holds the last hour's fixes whatever the hour of the
    // run, and it is not the browser's zone.
    let now_s = lienwatch::time::Timestamp::now().secs();
    let utc_hour = now_s.rem_euclid(86_400) / 3600;
    let offset_h = match (12 - utc_hour).rem_euclid(24) {
        h if h > 14 => h - 24,
        h => h,
    };
    let zone = match offset_h {
        0 => "Etc/GMT".to_string(),
        h if h > 0 => format!("Etc/GMT-{h}"),
        h => format!("Etc/GMT+{}", -h),
    };
    let local = now_s + offset_h * 3600;
    let midnight =
        lienwatch::time::Timestamp::from_secs(local - local.rem_euclid(86_400) - offset_h * 3600);
    let day_starts = midnight
        .to_string()
        .replace('Z', ".000Z")
        .replace(':', "%3A");
    let d = Daemon::start(
        &["gt06"],
        &format!("[rules]\ntimezone = \"{zone}\"\n\n[console]\ntile_url = \"\"\n"),
    );
    let fence = r#"{"type": "Circle", "center": [114.05, 22.54], "radius_m": 20000}"#;
    // Ids in an order the plain list would get wrong: the current loan sorts first by id.
    let (s, v) = d.api(
        "PUT",
        "/v1/vehicles/A-CURRENT",
        Some(&format!(
            r#"{{"vin": "LSVAU2180N2180001", "plate": "B-00001",
                "loan": {{"id": "L-1", "status": "current", "days_past_due": 0}},
                "devices": [{{"id": "{OTHER}", "kind": "wired"}}], "geofence": {fence}}}"#
        )),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = d.api(
        "PUT",
        "/v1/vehicles/B-OVERDUE",
        Some(&format!(
            r#"{{"vin": "LSVAU2180N2183294", "plate": "粤B12345",
                "loan": {{"id": "L-2", "status": "overdue", "days_past_due": 95}},
                "devices": [{{"id": "{WIRED}", "kind": "wired"}}, {{"id": "{WIRELESS}", "kind": "wireless"}}],
                "geofence": {fence}}}"#
        )),
    );
    assert_eq!(s, 201, "{v}");
    let (_, api) = d.api("GET", "/v1/openapi.json", None);
    let has_track = has_op(&api, "/v1/devices/{}/track", "get");
    let has_commands =
        has_op(&api, "/v1/devices/{}/commands", "post") && has_op(&api, "/v1/commands/{}", "get");
    let has_zones = has_op(&api, "/v1/zones/{}", "put") && has_op(&api, "/v1/zones", "get");
    // Every panel's endpoint exists now: the walk-through below checks them all.
    assert!(
        has_track && has_commands && has_zones,
        "track {has_track}, commands {has_commands}, zones {has_zones}"
    );
    if has_zones {
        let (s, v) = d.api(
            "PUT",
            "/v1/zones/Z-PAWN",
            Some(
                r#"{"name": "Futian pawnshop", "kind": "pawnshop",
                     "geometry": {"type": "Circle", "center": [114.06, 22.55], "radius_m": 300}}"#,
            ),
        );
        assert!(s == 200 || s == 201, "{v}");
    }

    // The overdue car's wired tracker drives through Shenzhen over the last hour and stays
    // connected; its wireless tracker has a cell report and then a position without a fix.
    let mut wired = d.connect("gt06");
    wired.exchange_bytes(&gt06_login(WIRED, 1), &gt06_ack(0x01, 1));
    for i in 0..6u16 {
        let at = civil_ago(3000 - 500 * i as i64);
        let (lat, lon) = (22.52 + 0.004 * i as f64, 114.03 + 0.005 * i as f64);
        wired.exchange_bytes(&gt06_location(2 + i, at, lat, lon), &gt06_ack(0x12, 2 + i));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answering = answer_commands(wired, stop.clone());
    let mut wireless = d.connect("gt06");
    wireless.exchange_bytes(&gt06_login(WIRELESS, 1), &gt06_ack(0x01, 1));
    wireless.exchange_bytes(&gt06_lbs(2, civil_ago(300)), &gt06_ack(0x28, 2));
    wireless.exchange_bytes(
        &gt06_stale_location(3, civil_ago(120), 22.541, 114.052),
        &gt06_ack(0x12, 3),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let c = driver.client().await;
        let day = (zone.as_str(), day_starts.as_str(), offset_h);
        let outcome = browse(
            &c,
            &d,
            &mut wireless,
            day,
            has_track,
            has_commands,
            has_zones,
        )
        .await;
        // The session ends (and chromium with it) whatever happened; the driver's drop ends
        // anything left behind.
        let _ = c.close().await;
        outcome
    });
    stop.store(true, Ordering::Relaxed);
    let _ = answering.join();
    if let Err(e) = result {
        panic!("{e}\n--- chromedriver log (tail) ---\n{}", driver.log());
    }
    drop(driver);
}

/// The walk through the console; an error names the step.
async fn browse(
    c: &Client,
    d: &Daemon,
    wireless: &mut Device,
    (zone, day_starts, offset_h): (&str, &str, i64),
    has_track: bool,
    has_commands: bool,
    has_zones: bool,
) -> Result<(), String> {
    let base = format!("http://{}", d.admin);
    let (_, head, _) = get_with_headers(d.admin, "/");
    let csp = header(&head, "content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("img-src 'self' data:;"),
        "the page's policy, with no tile host: {csp}"
    );
    let step = |what: &'static str| move |e: fantoccini::error::CmdError| format!("{what}: {e}");
    let long = Duration::from_secs(30);
    c.goto(&format!("{base}/")).await.map_err(step("open /"))?;

    // A wrong token gets nothing: the refusal, and no queue.
    sign_in(c, "wrong-token-0000000000").await?;
    wait_js(
        c,
        "return document.getElementById('signin-message').textContent.includes('refused')",
        long,
        "the wrong token to be refused",
    )
    .await;
    assert_eq!(
        js(
            c,
            "return document.querySelectorAll('#queue, tr.vehicle-row').length"
        )
        .await,
        0
    );
    assert_eq!(
        js(c, "return sessionStorage.getItem('lienwatch.token')").await,
        Value::Null
    );

    // The right token: the queue, the overdue car first.
    sign_in(c, TOKEN).await?;
    wait_js(
        c,
        "return document.querySelectorAll('tr.vehicle-row').length === 2",
        long,
        "both vehicles in the queue",
    )
    .await;
    let first = js(
        c,
        "return document.querySelector('tr.vehicle-row').dataset.vehicleId",
    )
    .await;
    assert_eq!(first, "B-OVERDUE", "the car most at risk comes first");
    let tiers = js(
        c,
        "return [...document.querySelectorAll('tr.vehicle-row')].map(r => r.dataset.tier)",
    )
    .await;
    if tiers[0] != "" {
        // Risk exists: the overdue car (95 days) is scored above the current one.
        assert_ne!(tiers[0], "none", "{tiers}");
        assert_eq!(tiers[1], "none", "{tiers}");
    }
    let href = js(c, "return location.href").await;
    assert!(!href.as_str().unwrap_or("").contains(TOKEN), "{href}");
    // Every request is counted below, however many the walk makes.
    js(
        c,
        "performance.setResourceTimingBufferSize(100000); return true",
    )
    .await;

    // A fleet deeper than a page: 120 more vehicles, a page of 100 at a time.
    for i in 0..120 {
        let body = format!(
            r#"{{"loan": {{"id": "L-Z{i}", "status": "current"}},
                "devices": [{{"id": "86000000000{i:04}", "kind": "wired"}}]}}"#
        );
        let (s, v) = d.api("PUT", &format!("/v1/vehicles/Z-{i:03}"), Some(&body));
        assert_eq!(s, 201, "{v}");
    }
    wait_js(
        c,
        "return document.querySelectorAll('tr.vehicle-row').length === 100 \
         && !document.getElementById('queue-next').hidden \
         && document.getElementById('queue-prev').hidden",
        long,
        "the first page of 122 vehicles",
    )
    .await;
    c.find(Locator::Css("#queue-next"))
        .await
        .map_err(step("next page"))?
        .click()
        .await
        .map_err(step("open the next page"))?;
    wait_js(
        c,
        "return document.querySelectorAll('tr.vehicle-row').length === 22 \
         && document.getElementById('queue-page').textContent === 'Page 2' \
         && document.getElementById('queue-next').hidden \
         && !document.getElementById('queue-prev').hidden \
         && !document.querySelector(\"tr.vehicle-row[data-vehicle-id='B-OVERDUE']\")",
        long,
        "the second page: the last 22",
    )
    .await;
    c.find(Locator::Css("#queue-prev"))
        .await
        .map_err(step("previous page"))?
        .click()
        .await
        .map_err(step("back to the first page"))?;
    wait_js(
        c,
        "return document.querySelectorAll('tr.vehicle-row').length === 100 \
         && document.querySelector('tr.vehicle-row').dataset.vehicleId === 'B-OVERDUE'",
        long,
        "the first page again",
    )
    .await;

    // The queue keeps its filter across the pages of the console: an officer works the
    // overdue cars one by one and comes back to the same list. A malformed vehicle address on
    // the way shows that no such vehicle is there, and nothing of another one.
    js(
        c,
        "const s = document.getElementById('filter-loan'); s.value = 'overdue'; \
         s.dispatchEvent(new Event('change')); return true",
    )
    .await;
    wait_js(
        c,
        "const rows = [...document.querySelectorAll('tr.vehicle-row')]; \
         return rows.length === 1 && rows[0].dataset.vehicleId === 'B-OVERDUE'",
        long,
        "the overdue cars only",
    )
    .await;
    js(c, "location.hash = '#/vehicle/100%'; return true").await;
    wait_js(
        c,
        "const head = document.getElementById('vehicle-head'); \
         return head && head.querySelector('p.error') \
           && document.getElementById('vehicle-body').hidden \
           && document.querySelectorAll('button.locate').length === 0",
        long,
        "a malformed vehicle address: no such vehicle",
    )
    .await;
    assert_eq!(js(c, "return window.lienwatch.errors").await, json!([]));
    js(c, "history.back(); return true").await;
    wait_js(
        c,
        "const rows = [...document.querySelectorAll('tr.vehicle-row')]; \
         return document.getElementById('filter-loan').value === 'overdue' \
           && rows.length === 1 && rows[0].dataset.vehicleId === 'B-OVERDUE'",
        long,
        "back on the queue, still filtered",
    )
    .await;
    // Signing out forgets them: the next officer starts from the whole queue.
    c.find(Locator::Css("#signout"))
        .await
        .map_err(step("sign out"))?
        .click()
        .await
        .map_err(step("click sign out"))?;
    sign_in(c, TOKEN).await?;
    wait_js(
        c,
        "return document.getElementById('filter-loan').value === '' \
          && document.querySelectorAll('tr.vehicle-row').length === 100",
        long,
        "the whole queue again after signing in again",
    )
    .await;
    // A zone kind is free text: one that is also a property name of every object is shown
    // as written.
    assert_eq!(
        js(
            c,
            "return import('/console/js/i18n.js').then(m => [m.code('constructor'), m.code('pawnshop')])"
        )
        .await,
        json!(["constructor", "Pawnshop"])
    );

    // The vehicle page: both devices on the map, the GNSS fix and the cell fix drawn apart.
    c.find(Locator::Css("tr.vehicle-row[data-vehicle-id='B-OVERDUE']"))
        .await
        .map_err(step("queue row"))?
        .click()
        .await
        .map_err(step("open the vehicle"))?;
    js(c, "window.notReloaded = true; return true").await;
    wait_js(
        c,
        "return document.querySelectorAll('#vehicle-map path.lw-fix-valid').length === 1 \
         && document.querySelectorAll('#vehicle-map path.lw-fix-invalid').length === 1",
        long,
        "a GNSS marker and an LBS marker",
    )
    .await;
    let labels = js(
        c,
        "return [...document.querySelectorAll('#vehicle-map .leaflet-tooltip')].map(t => t.textContent).join('\\n')",
    )
    .await;
    let labels = labels.as_str().unwrap_or_default().to_string();
    assert!(
        labels.contains(WIRED) && labels.contains("GPS fix") && labels.contains("ago"),
        "{labels}"
    );
    assert!(
        labels.contains(WIRELESS) && labels.contains("LBS"),
        "{labels}"
    );
    assert_eq!(
        js(
            c,
            "return document.querySelectorAll('#devices .device').length"
        )
        .await,
        2
    );
    wait_js(
        c,
        "return document.querySelectorAll('#vehicle-map path.lw-geofence').length === 1",
        long,
        "the geofence",
    )
    .await;
    no_error_shown(c).await;
    if has_track {
        wait_js(
            c,
            "return document.querySelectorAll('#vehicle-map path.lw-track').length >= 1",
            long,
            "today's track",
        )
        .await;
        // Today is the lender's day: from its midnight, and named.
        assert_eq!(
            js(
                c,
                "return document.getElementById('track-zone').textContent"
            )
            .await,
            json!(zone)
        );
        let asked = js(
            c,
            &format!(
                "return performance.getEntriesByType('resource').map(e => e.name) \
                   .some(n => n.includes('/track?') && n.includes('from={day_starts}'))"
            ),
        )
        .await;
        assert_eq!(asked, json!(true), "the track of the day from {day_starts}");
    } else {
        assert_eq!(
            js(c, "return document.getElementById('panel-track').hidden").await,
            true,
            "without the track endpoint its panel is hidden"
        );
    }
    if has_zones {
        wait_js(
            c,
            "return document.querySelectorAll('#vehicle-map path.lw-zone').length === 1",
            long,
            "the nearby risk zone",
        )
        .await;
    }

    // The screenshot for the README, once the map has settled.
    wait_js(
        c,
        "return !document.querySelector('#vehicle-map .leaflet-zoom-anim')",
        long,
        "the map to settle",
    )
    .await;
    let png = c.screenshot().await.map_err(step("screenshot"))?;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).map_err(|e| e.to_string())?;
    std::fs::write(docs.join("console-vehicle.png"), &png).map_err(|e| e.to_string())?;

    // Live: a new fix shows up without a reload (the cell-only tracker gets a GNSS fix).
    let at = civil_ago(5);
    wireless.exchange_bytes(&gt06_location(3, at, 22.546, 114.058), &gt06_ack(0x12, 3));
    wait_js(
        c,
        "return window.notReloaded === true \
         && document.querySelectorAll('#vehicle-map path.lw-fix-valid').length === 2 \
         && document.querySelectorAll('#vehicle-map path.lw-fix-invalid').length === 0",
        long,
        "the new fix drawn by the page's own refresh",
    )
    .await;
    // The two trackers' labels are on different sides of their markers, not over each other.
    assert_eq!(
        js(
            c,
            "return ['right', 'left'].every(s => \
               document.querySelectorAll(`#vehicle-map .leaflet-tooltip-${s}`).length > 0)"
        )
        .await,
        json!(true)
    );

    // A fix dated hours ahead is kept as suspect: it is not drawn on the track, and the fix
    // after it still comes in at the next refresh.
    if has_track {
        let count = "return Number((document.getElementById('track-info').textContent \
            .match(/\\d+/) || [0])[0])";
        // Two refreshes after the last fix, the track holds it.
        two_more_polls(c, "two more refreshes of the vehicle page").await;
        let before = js(c, count).await.as_i64().unwrap_or(0);
        wireless.exchange_bytes(
            &gt06_location(4, civil_ago(-3 * 3600), 23.5, 114.5),
            &gt06_ack(0x12, 4),
        );
        wireless.exchange_bytes(
            &gt06_location(5, civil_ago(1), 22.547, 114.059),
            &gt06_ack(0x12, 5),
        );
        wait_js(
            c,
            &format!(
                "const info = document.getElementById('track-info').textContent; \
                 return info.startsWith('{} ') && info.includes('1 dated in the future')",
                before + 1
            ),
            long,
            "the fix after a future one on the track, the future one not drawn",
        )
        .await;
        // Every read since the last trusted fix brings the future one again: it is counted once.
        two_more_polls(c, "two more refreshes with the future fix").await;
        let info = js(
            c,
            "return document.getElementById('track-info').textContent",
        )
        .await;
        assert!(
            info.as_str()
                .unwrap_or("")
                .contains("(1 dated in the future"),
            "{info}"
        );
    }

    // Locate now: the command's state until the tracker's answer.
    if has_commands {
        c.find(Locator::Css(&format!(
            "button.locate[data-device='{WIRED}']"
        )))
        .await
        .map_err(step("locate button"))?
        .click()
        .await
        .map_err(step("press locate"))?;
        wait_js(
            c,
            &format!(
                "const s = document.querySelector(\".command-state[data-device='{WIRED}']\"); \
                 return s && s.dataset.state === 'answered' && s.textContent.includes('Lat:N22')"
            ),
            Duration::from_secs(60),
            "the locate command answered",
        )
        .await;
    } else {
        assert_eq!(
            js(
                c,
                "return document.querySelectorAll('button.locate').length"
            )
            .await,
            0,
            "without the commands endpoint there is no locate button"
        );
    }

    // The published GCJ-02 test vectors (eviltransform: Shanghai, Shenzhen, Beijing), computed
    // by the console's own module in the browser.
    let got = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             import('/console/js/gcj02.js').then(m => done([ \
               m.wgs84ToGcj02(31.1774276, 121.5272106), m.wgs84ToGcj02(22.543847, 113.912316), \
               m.wgs84ToGcj02(39.911954, 116.377817), m.wgs84ToGcj02(48.8566, 2.3522)]))",
            vec![],
        )
        .await
        .map_err(step("gcj02 module"))?;
    let want = [
        (31.17530398364597, 121.531541859215),
        (22.540796131694766, 113.9171764808363),
        (39.91334545536069, 116.38404722455657),
        (48.8566, 2.3522),
    ];
    for (i, (lat, lon)) in want.iter().enumerate() {
        let g = &got[i];
        let (gl, gn) = (g[0].as_f64().unwrap(), g[1].as_f64().unwrap());
        assert!(
            (gl - lat).abs() < 1e-7 && (gn - lon).abs() < 1e-7,
            "gcj02 #{i}: {g}"
        );
    }

    // Simplified Chinese, switched in place.
    c.find(Locator::Css("#lang"))
        .await
        .map_err(step("language"))?
        .select_by_value("zh")
        .await
        .map_err(step("choose zh"))?;
    wait_js(
        c,
        "return document.getElementById('nav-queue').textContent === '催收队列' \
         && document.querySelector('#panel-devices h2')?.textContent === '设备'",
        long,
        "the page in Chinese",
    )
    .await;
    c.find(Locator::Css("#lang"))
        .await
        .map_err(step("language"))?
        .select_by_value("en")
        .await
        .map_err(step("choose en"))?;
    if has_commands {
        // The page was built anew: the locate answer is read back from the server.
        wait_js(
            c,
            &format!(
                "const s = document.querySelector(\".command-state[data-device='{WIRED}']\"); \
                 return s && s.dataset.state === 'answered' && s.textContent.includes('Lat:N22')"
            ),
            long,
            "the locate answer read back after the page was rebuilt",
        )
        .await;
    }

    // The zones page: the list is read once, not at every poll, and again when asked.
    if has_zones {
        let zone_reads = "return performance.getEntriesByType('resource') \
            .filter(e => new URL(e.name).pathname === '/v1/zones').length";
        let before = js(c, zone_reads).await.as_i64().unwrap_or(0);
        c.find(Locator::Css("#nav-zones"))
            .await
            .map_err(step("zones link"))?
            .click()
            .await
            .map_err(step("open zones"))?;
        wait_js(
            c,
            "return document.querySelectorAll('#zone-rows tr').length === 1 \
             && document.querySelectorAll('#zones-map path.lw-zone').length === 1",
            long,
            "the zone listed and drawn",
        )
        .await;
        let token_checks = "return performance.getEntriesByType('resource') \
            .filter(e => new URL(e.name).pathname === '/v1/alerts').length";
        let checks_before = js(c, token_checks).await.as_i64().unwrap_or(0);
        two_more_polls(c, "two more polls of the zones page").await;
        assert_eq!(js(c, zone_reads).await.as_i64(), Some(before + 1));
        // Each poll still asks something with the token, so a revoked one is noticed.
        assert!(
            js(c, token_checks).await.as_i64().unwrap_or(0) > checks_before,
            "the zones page's polls check the token"
        );
        c.find(Locator::Css("#zones-reload"))
            .await
            .map_err(step("reload zones"))?
            .click()
            .await
            .map_err(step("press reload"))?;
        wait_js(
            c,
            &format!("{zone_reads} === {}", before + 2),
            long,
            "the zones read again on request",
        )
        .await;
    }

    // The alerts list, deeper than a page: 120 loans fall overdue, each raising its car's tier.
    for i in 0..120 {
        let (s, v) = d.api(
            "PUT",
            &format!("/v1/loans/L-Z{i}"),
            Some(r#"{"status": "overdue", "days_past_due": 95}"#),
        );
        assert_eq!(s, 200, "{v}");
    }
    let (_, all) = d.api("GET", "/v1/alerts?limit=1000", None);
    let total = all["alerts"].as_array().map_or(0, Vec::len);
    assert!(total >= 120, "every tier raised is an alert: {total}");
    c.find(Locator::Css("#nav-alerts"))
        .await
        .map_err(step("alerts link"))?
        .click()
        .await
        .map_err(step("open alerts"))?;
    let rows_seq = "[...document.querySelectorAll('#alert-rows tr.alert-row')].map(r => Number(r.dataset.seq))";
    wait_js(
        c,
        "return document.querySelectorAll('#alert-rows tr.alert-row').length === 100 \
         && !document.getElementById('alerts-next').hidden \
         && document.getElementById('alerts-prev').hidden",
        long,
        "the newest 100 alerts",
    )
    .await;
    let first = js(c, &format!("return {rows_seq}")).await;
    // No webhook here: an alert went nowhere, and the list says so rather than "delivered".
    assert_eq!(
        js(
            c,
            "return document.querySelector('#alert-rows tr.alert-row td:nth-child(5)').textContent"
        )
        .await,
        json!("not sent: no webhook takes this type")
    );
    c.find(Locator::Css("#alerts-next"))
        .await
        .map_err(step("older alerts"))?
        .click()
        .await
        .map_err(step("open older alerts"))?;
    wait_js(
        c,
        &format!(
            "return document.querySelectorAll('#alert-rows tr.alert-row').length === {} \
             && document.getElementById('alerts-page').textContent === 'Page 2' \
             && !document.getElementById('alerts-prev').hidden",
            (total - 100).min(100)
        ),
        long,
        "the next older alerts",
    )
    .await;
    let second = js(c, &format!("return {rows_seq}")).await;
    let seqs = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default()
    };
    let (first, second) = (seqs(&first), seqs(&second));
    let mut both: Vec<u64> = first.iter().chain(&second).copied().collect();
    let listed: Vec<u64> = all["alerts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["seq"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(
        both,
        listed[..both.len()],
        "two pages, newest first, none twice or missed"
    );
    both.dedup();
    assert_eq!(both.len(), first.len() + second.len());
    c.find(Locator::Css("#alerts-prev"))
        .await
        .map_err(step("newer alerts"))?
        .click()
        .await
        .map_err(step("back to the newest alerts"))?;
    wait_js(
        c,
        &format!(
            "return {rows_seq}[0] === {} && document.getElementById('alerts-prev').hidden",
            first[0]
        ),
        long,
        "the newest alerts again",
    )
    .await;

    // Nothing came from another host, nothing was blocked, nothing threw.
    let foreign = js(
        c,
        "return performance.getEntriesByType('resource').map(e => e.name) \
           .filter(n => !n.startsWith(location.origin + '/'))",
    )
    .await;
    assert_eq!(foreign, json!([]), "fetched from another host");
    no_error_shown(c).await;
    assert_eq!(js(c, "return window.lienwatch.csp").await, json!([]));
    assert_eq!(js(c, "return window.lienwatch.errors").await, json!([]));

    // A daemon that takes the request and never answers: the page gives up after 30 s and
    // says so (instead of showing stale data as fresh), then recovers by itself.
    js(
        c,
        "window.realFetch = window.fetch; \
         window.fetch = (u, o) => new Promise((_, fail) => o && o.signal && \
           o.signal.addEventListener('abort', () => fail(new DOMException('aborted', 'AbortError')))); \
         return true",
    )
    .await;
    wait_js(
        c,
        "const s = document.getElementById('status'); \
         return s.className === 'error' && s.textContent.includes('no answer within 30 s')",
        Duration::from_secs(60),
        "the status line saying the daemon did not answer",
    )
    .await;
    js(c, "window.fetch = window.realFetch; return true").await;
    let status = wait_js(
        c,
        "const s = document.getElementById('status'); \
         return s.className === '' && s.textContent.startsWith('Updated') && s.textContent",
        long,
        "the page refreshed again",
    )
    .await;
    // Its time is the lender's (`rules.timezone`, hours away from the browser's), as every
    // other time on the page.
    let shown = status.as_str().unwrap_or_default();
    let minutes = shown
        .split(|ch: char| !ch.is_ascii_digit() && ch != ':')
        .find_map(|w| {
            let mut p = w.split(':');
            let (h, m) = (
                p.next()?.parse::<i64>().ok()?,
                p.next()?.parse::<i64>().ok()?,
            );
            Some(h * 60 + m)
        })
        .ok_or_else(|| format!("no time in the status line: {shown:?}"))?;
    let local_now =
        (lienwatch::time::Timestamp::now().secs() + offset_h * 3600).rem_euclid(86_400) / 60;
    let apart = (minutes - local_now).rem_euclid(1440);
    if apart.min(1440 - apart) > 2 {
        return Err(format!(
            "the status line's time is not in {zone}: {shown:?}, now there is {:02}:{:02}",
            local_now / 60,
            local_now % 60
        ));
    }

    // A vehicle deleted while its page is open: nothing of it stays, least of all its trackers'
    // "locate now".
    js(c, "location.hash = '#/vehicle/Z-000'; return true").await;
    wait_js(
        c,
        "return !document.getElementById('vehicle-body').hidden \
          && document.querySelectorAll('#devices .device').length === 1",
        long,
        "a vehicle page",
    )
    .await;
    let (s, v) = d.api("DELETE", "/v1/vehicles/Z-000", None);
    assert!(s == 200 || s == 204, "{s} {v}");
    wait_js(
        c,
        "return document.getElementById('vehicle-body').hidden \
          && document.querySelectorAll('#devices .device, button.locate').length === 0 \
          && document.querySelector('#vehicle-head p.error')",
        long,
        "the deleted vehicle's page emptied",
    )
    .await;

    // A token that stops working: back to sign-in with a message, the data gone.
    js(
        c,
        "sessionStorage.setItem('lienwatch.token', 'revoked-token-000000'); return true",
    )
    .await;
    wait_js(
        c,
        "const m = document.getElementById('signin-message'); \
         return m && m.textContent.includes('sign in again') \
           && document.querySelectorAll('#alerts, #vehicle, #queue').length === 0",
        long,
        "sign-in again after the token was refused",
    )
    .await;
    assert_eq!(
        js(c, "return sessionStorage.getItem('lienwatch.token')").await,
        Value::Null
    );
    Ok(())
}

/// A tile server of its own on another loopback port (another origin): every tile is the same
/// small PNG. Counts the requests it answered; stops when told.
fn tile_server(
    stop: Arc<AtomicBool>,
) -> (
    u16,
    Arc<std::sync::atomic::AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let png: &'static [u8] = include_bytes!("../../console/vendor/leaflet/images/layers.png");
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tile server");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().expect("addr").port();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let t = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                png.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(png);
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    (port, served, t)
}

/// With `[console] tile_url` set, the browser fetches tiles from that host (allowed by the
/// page's policy) and from nowhere else but the admin address.
#[test]
fn console_draws_on_the_configured_tiles() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (port, served, server) = tile_server(stop.clone());
    let tiles = format!("http://127.0.0.1:{port}");
    let d = Daemon::start(
        &["gt06"],
        &format!("[console]\ntile_url = \"{tiles}/{{z}}/{{x}}/{{y}}.png\"\ntile_crs = \"gcj02\"\n"),
    );
    let (s, v) = d.api(
        "PUT",
        "/v1/vehicles/V-1",
        Some(
            r#"{"loan": {"id": "L-1", "status": "overdue", "days_past_due": 3},
                 "devices": [{"id": "868120145233604", "kind": "wired"}]}"#,
        ),
    );
    assert_eq!(s, 201, "{v}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome: Result<(), String> = rt.block_on(async {
        let c = driver.client().await;
        let r = async {
            let base = format!("http://{}", d.admin);
            c.goto(&format!("{base}/")).await.map_err(|e| e.to_string())?;
            wait_js(&c, "return !!document.getElementById('token')", Duration::from_secs(30), "sign-in").await;
            js(&c, &format!("sessionStorage.setItem('lienwatch.token', '{TOKEN}'); location.hash = '#/vehicle/V-1'; return true")).await;
            wait_js(
                &c,
                "return document.querySelectorAll('#vehicle-map img.leaflet-tile-loaded').length >= 4",
                Duration::from_secs(30),
                "tiles from the configured server",
            )
            .await;
            let foreign = js(
                &c,
                &format!(
                    "return performance.getEntriesByType('resource').map(e => e.name) \
                       .filter(n => !n.startsWith(location.origin + '/') && !n.startsWith('{tiles}/'))"
                ),
            )
            .await;
            assert_eq!(foreign, json!([]), "fetched from a host that is neither");
            assert_eq!(js(&c, "return window.lienwatch.csp").await, json!([]));
            assert_eq!(js(&c, "return window.lienwatch.errors").await, json!([]));
            Ok(())
        }
        .await;
        let _ = c.close().await;
        r
    });
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    if let Err(e) = outcome {
        panic!("{e}\n--- chromedriver log (tail) ---\n{}", driver.log());
    }
    assert!(
        served.load(Ordering::Relaxed) >= 4,
        "the tile server was asked"
    );
}
