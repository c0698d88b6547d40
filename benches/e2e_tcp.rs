//! End-to-end load: acknowledged GT06 positions per second over loopback TCP.
//!
//! N simulated devices (default 2,000) each log in, then send a 0x12 location and wait for its
//! reply before sending the next, for a fixed time. The same clients run, in one process,
//! against a bare tokio TCP reader that frames GT06 by length and answers each frame at once
//! (the baseline: sockets and framing only), and against lienwatch's real ingestion path (session,
//! engine, sled on disk, group commit; replies only after the flush), with the background passes
//! the daemon runs beside it (history log drain, device log fold). The figure that matters is
//! the ratio, since absolute numbers depend on the machine. Each side also reports its reply
//! latency (p50, p99: from writing a location to reading its whole reply), since a higher rate
//! bought with a worse tail would not be a win.
//!
//! The baseline and lienwatch (history on) take turns for `ROUNDS` rounds (default 3), and the
//! ratio is reported per round and as their median; then one run each with history off and
//! with every device on a vehicle says what the history and the rules cost.
//!
//! `cargo bench --bench e2e_tcp` (env: `DEVICES`, `SECONDS`, `ROUNDS`, `COMMIT_WINDOW_US`, and
//! `ONLY` = `bare` or `lienwatch` to run one side, e.g. under `perf stat`, or `ratio` for the
//! rounds alone).

use bytes::{Buf, BytesMut};
use lienwatch::config::{Listener, Transport};
use lienwatch::engine::vehicles::{GetVehicle, PutVehicle};
use lienwatch::engine::{Engine, EngineConfig};
use lienwatch::event::Timestamp;
use lienwatch::protocol::{SessionConfig, WireProtocol};
use lienwatch::store::Store;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The daemon's allocator (`src/main.rs`), so that the ingest path is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);

fn frame(proto: u8, content: &[u8], serial: u16) -> Vec<u8> {
    let len = (1 + content.len() + 2 + 2) as u8;
    let mut f = vec![0x78, 0x78, len, proto];
    f.extend_from_slice(content);
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = X25.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0d, 0x0a]);
    f
}

fn imei_bcd(i: u32) -> [u8; 8] {
    let digits = format!("{:0>16}", device_id(i));
    let b = digits.as_bytes();
    let mut out = [0u8; 8];
    for k in 0..8 {
        out[k] = ((b[2 * k] - b'0') << 4) | (b[2 * k + 1] - b'0');
    }
    out
}

/// A 0x12 location dated `serial` seconds after a base 20 h ago: recent enough to be kept in
/// the history, each serial its own fix time.
fn location(serial: u16) -> Vec<u8> {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| Timestamp::now().secs() - 20 * 3600);
    let t = base + serial as i64;
    let (y, mo, d) = lienwatch::time::civil_from_days(t.div_euclid(86_400));
    let sod = t.rem_euclid(86_400);
    let mut c = vec![
        (y % 100) as u8,
        mo,
        d,
        (sod / 3600) as u8,
        (sod / 60 % 60) as u8,
        (sod % 60) as u8,
        0xC9,
    ];
    c.extend_from_slice(&0x026B_2A25u32.to_be_bytes());
    c.extend_from_slice(&0x0C3C_B15Du32.to_be_bytes());
    c.extend_from_slice(&[
        0x3C, 0x14, 0x5A, 0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31,
    ]);
    frame(0x12, &c, serial)
}

/// The baseline: frames GT06 by its length byte and answers every frame immediately.
async fn bare_server(listener: TcpListener, stop: CancellationToken) {
    loop {
        let (mut s, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(2048);
            loop {
                match s.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut out = Vec::new();
                while buf.len() >= 5 && buf[0] == 0x78 && buf[1] == 0x78 {
                    let total = buf[2] as usize + 5;
                    if buf.len() < total {
                        break;
                    }
                    let proto = buf[3];
                    let serial = [buf[total - 6], buf[total - 5]];
                    let _crc_ok = X25.checksum(&buf[2..total - 4])
                        == u16::from_be_bytes([buf[total - 4], buf[total - 3]]);
                    out.extend_from_slice(&frame(proto, &[], u16::from_be_bytes(serial)));
                    buf.advance(total);
                }
                if !out.is_empty() && s.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// What one side achieved: acks, the measured time, and every reply's latency in microseconds.
struct Run {
    acks: u64,
    secs: f64,
    latencies_us: Vec<u32>,
    /// CPU time of the whole process (clients included) over the measured window.
    cpu_secs: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.acks as f64 / self.secs
    }

    /// The latency at quantile `q` (0..=1), in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    /// Microseconds of CPU per ack: on a shared machine this moves far less than the rate.
    fn cpu_us_per_ack(&self) -> f64 {
        self.cpu_secs * 1e6 / self.acks as f64
    }

    fn report(&self, name: &str, devices: u32) {
        println!(
            "{name:<20}: {:>9} acks in {:.1}s = {:>10.0} acks/s ({devices} devices); reply p50 {:.2} ms, p99 {:.2} ms; {:.1} us CPU/ack",
            self.acks,
            self.secs,
            self.rate(),
            self.quantile_ms(0.50),
            self.quantile_ms(0.99),
            self.cpu_us_per_ack(),
        );
    }
}

/// User plus system CPU time of this process so far, in seconds (Linux; NaN elsewhere).
fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some(rest) = stat.rsplit(')').next() else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // The kernel reports in USER_HZ, 100 on every Linux architecture that matters here.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Connects and logs in every device, so that the measured window holds only locations.
async fn connect_all(addr: SocketAddr, devices: u32) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for i in 0..devices {
        let mut s = loop {
            match TcpStream::connect(addr).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let _ = s.set_nodelay(true);
        s.write_all(&frame(0x01, &imei_bcd(i), 1))
            .await
            .expect("login");
        let mut r = [0u8; 10];
        s.read_exact(&mut r).await.expect("login reply");
        conns.push(s);
    }
    conns
}

async fn run_clients(conns: Vec<TcpStream>, secs: u64) -> Run {
    let acked = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    let start = Instant::now();
    let cpu_start = process_cpu_secs();
    for mut s in conns {
        let (acked, go) = (acked.clone(), go.clone());
        tasks.push(tokio::spawn(async move {
            let mut serial: u16 = 2;
            let mut r = [0u8; 10];
            let mut lat = Vec::with_capacity(4096);
            while go.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if s.write_all(&location(serial)).await.is_err() {
                    break;
                }
                if s.read_exact(&mut r).await.is_err() {
                    break;
                }
                if go.load(Ordering::Relaxed) {
                    acked.fetch_add(1, Ordering::Relaxed);
                    lat.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                serial = serial.wrapping_add(1);
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    go.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_secs = process_cpu_secs() - cpu_start;
    let n = acked.load(Ordering::Relaxed);
    let mut latencies_us = Vec::with_capacity(n as usize);
    for t in tasks {
        if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(5), t).await {
            latencies_us.extend(l);
        }
    }
    latencies_us.sort_unstable();
    Run {
        acks: n,
        secs: elapsed,
        latencies_us,
        cpu_secs,
    }
}

async fn commits(handle: &lienwatch::engine::EngineHandle) -> u64 {
    handle
        .run(lienwatch::engine::control::GetStats)
        .await
        .map(|s| s.commits)
        .unwrap_or(0)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn list(xs: &[f64]) -> String {
    xs.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // `cargo test --benches` runs this with `--test`-style args; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e_tcp: skipped (run with cargo bench --bench e2e_tcp)");
        return;
    }
    let devices: u32 = std::env::var("DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let secs: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("ONLY").unwrap_or_default();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    rt.block_on(async move {
        // The baseline and lienwatch (history on, as the daemon runs) take turns, round after
        // round, and each round's ratio compares two runs a few seconds apart: on a shared
        // machine whose speed drifts by 2x over minutes, one baseline for the whole bench would
        // measure the drift as much as lienwatch.
        let mut ratios = Vec::new();
        let mut cpu_ratios = Vec::new();
        let mut on_runs = Vec::new();
        for round in 1..=rounds {
            let mut bare = None;
            if only != "lienwatch" {
                let stop = CancellationToken::new();
                let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = l.local_addr().expect("addr");
                tokio::spawn(bare_server(l, stop.clone()));
                let run = run_clients(connect_all(addr, devices).await, secs).await;
                stop.cancel();
                run.report(&format!("round {round}: bare tokio reader"), devices);
                bare = Some(run);
            }
            if only == "bare" {
                continue;
            }
            // lienwatch: real session, engine, sled on disk, group commit, position history,
            // on a fresh database.
            let (on, on_commits) = run_lienwatch(devices, secs, true, false).await;
            on.report(&format!("round {round}: lienwatch (durable, history on)"), devices);
            println!(
                "round {round}: group commits: {on_commits} ({:.0} acknowledged positions per flush)",
                on.acks as f64 / on_commits.max(1) as f64
            );
            if let Some(bare) = bare {
                ratios.push(on.rate() / bare.rate());
                cpu_ratios.push(bare.cpu_us_per_ack() / on.cpu_us_per_ack());
            }
            on_runs.push(on);
        }
        if !ratios.is_empty() {
            println!(
                "ratio lienwatch / bare by round = {}; median {:.2}",
                list(&ratios),
                median(&ratios)
            );
            println!(
                "CPU per ack, bare / lienwatch by round = {}; median {:.2} (the rate ratio a \
                 CPU-bound run would show)",
                list(&cpu_ratios),
                median(&cpu_ratios)
            );
        }
        if only == "bare" || only == "ratio" {
            return;
        }
        // What the history and the rules cost: one run each, against the history-on round
        // measured last (the nearest in time).
        let Some(on) = on_runs.last() else { return };
        let (off, off_commits) = run_lienwatch(devices, secs, false, false).await;
        off.report("lienwatch (durable, history off)", devices);
        // Every device on a vehicle: fence, overdue loan, zones, long_stay, risk all run.
        let (reg, reg_commits) = run_lienwatch(devices, secs, true, true).await;
        reg.report(
            "lienwatch (durable, history on, every device on a vehicle)",
            devices,
        );
        for (name, run, commits) in [("history off", &off, off_commits), ("on vehicles", &reg, reg_commits)] {
            println!(
                "{name}: group commits: {commits} ({:.0} acknowledged positions per flush)",
                run.acks as f64 / commits.max(1) as f64
            );
        }
        println!(
            "history on / off: rate {:.2}, CPU per ack {:.2} (cost of history: {:.0}%)",
            on.rate() / off.rate(),
            on.cpu_us_per_ack() / off.cpu_us_per_ack(),
            (1.0 - on.rate() / off.rate()) * 100.0
        );
        println!(
            "on vehicles / unregistered: rate {:.2}, CPU per ack {:.2} (cost of the rules, \
             long_stay's write included: {:.0}%)",
            reg.rate() / on.rate(),
            reg.cpu_us_per_ack() / on.cpu_us_per_ack(),
            (1.0 - reg.rate() / on.rate()) * 100.0
        );
    });
}

/// Device `i`'s IMEI: the id lienwatch gives it (its login carries it as 16 BCD digits).
fn device_id(i: u32) -> String {
    (868_120_000_000_000u64 + i as u64).to_string()
}

/// Puts every device on a vehicle of its own, as a lender's fleet is: an overdue loan (the
/// silence deadline moves with each fix) and a 2 km circle around where the devices report.
fn register_all(engine: &mut Engine, devices: u32) {
    let now = Timestamp::now();
    for i in 0..devices {
        let body = serde_json::json!({
            "loan": {"id": format!("L-{i}"), "status": "overdue", "days_past_due": 40},
            "devices": [{"id": device_id(i), "kind": "wired"}],
            "geofence": {"type": "Circle", "center": [114.0573, 22.5432], "radius_m": 2000},
        });
        let cmd = PutVehicle::from_json(
            &format!("V-{i:05}"),
            &serde_json::to_vec(&body).unwrap_or_default(),
        )
        .expect("vehicle body");
        engine.execute(cmd, now).expect("put vehicle");
    }
}

/// One measured window against lienwatch's real ingestion path; returns it and its commits.
async fn run_lienwatch(devices: u32, secs: u64, history: bool, registered: bool) -> (Run, u64) {
    // lienwatch: real session, engine, sled on disk, group commit.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 64).expect("store");
    let defaults = EngineConfig::from_config(&Default::default(), Vec::new());
    let ecfg = EngineConfig {
        // The daemon's default unless COMMIT_WINDOW_US says otherwise.
        commit_window: std::env::var("COMMIT_WINDOW_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_micros)
            .unwrap_or(defaults.commit_window),
        history_retention: if history {
            defaults.history_retention
        } else {
            None
        },
        ..defaults
    };
    let outbox = store
        .open_outbox(&[], Arc::new(Timestamp::now))
        .expect("outbox");
    // The background passes the daemon runs beside the engine, so that their cost is counted.
    let upkeep = CancellationToken::new();
    // With the daemon's default retention.
    let retention = lienwatch::config::Config::default()
        .storage
        .history_retention;
    let passes = lienwatch::daemon::upkeep::spawn(&store, retention, upkeep.clone());
    let mut engine = Engine::open(store, outbox, ecfg, Timestamp::now()).expect("engine");
    if registered {
        register_all(&mut engine, devices);
    }
    let (handle, _thread) =
        lienwatch::engine::spawn(engine, Arc::new(Timestamp::now)).expect("engine thread");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let cfg = Listener {
        protocol: WireProtocol::Gt06,
        bind: addr,
        transport: Transport::Tcp,
        utc_offset_s: None,
        idle_timeout: Duration::from_secs(60),
        max_connections: 20_000,
        gt06_locate: None,
    };
    let scfg = SessionConfig {
        admit: handle.admission.clone(),
        ..SessionConfig::default()
    };
    let stop = CancellationToken::new();
    tokio::spawn(lienwatch::ingest::tcp::serve(
        l,
        cfg,
        scfg,
        handle.clone(),
        stop.clone(),
        TaskTracker::new(),
    ));
    let conns = connect_all(addr, devices).await;
    let commits_before = commits(&handle).await;
    let lw = run_clients(conns, secs).await;
    stop.cancel();
    // The logins' commits are not the measured window's.
    let commits = commits(&handle).await - commits_before;
    if registered {
        // The rules did run: the first vehicle's device is placed inside its fence.
        let v = handle
            .run(GetVehicle {
                id: "V-00000".into(),
            })
            .await
            .expect("vehicle");
        let state = serde_json::to_value(&v.devices[0].state).unwrap_or_default();
        assert_eq!(state["geofence"], "inside", "rules did not run: {state}");
    }
    handle.shutdown().await;
    // The passes end before the database's folder goes.
    upkeep.cancel();
    passes.all_stopped().await;
    (lw, commits)
}
