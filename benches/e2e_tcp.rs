//! End-to-end load: acknowledged GT06 positions per second over loopback TCP.
//!
//! N simulated devices (default 2,000) each log in, then send a 0x12 location and wait for its
//! reply before sending the next, for a fixed time. The same clients run twice in one process:
//! against a bare tokio TCP reader that frames GT06 by length and answers each frame at once
//! (the baseline: sockets and framing only), and against lienwatch's real ingestion path (session,
//! engine, sled on disk, group commit; replies only after the flush). The figure that matters is
//! the ratio, since absolute numbers depend on the machine.
//!
//! `cargo bench --bench e2e_tcp` (env: `DEVICES`, `SECONDS`, `COMMIT_WINDOW_US`, and `ONLY` =
//! `bare` or `lienwatch` to run one side, e.g. under `perf stat`).

use bytes::{Buf, BytesMut};
use lienwatch::config::{Listener, Transport};
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
    let digits = format!("{:016}", 868_120_000_000_000u64 + i as u64);
    let b = digits.as_bytes();
    let mut out = [0u8; 8];
    for k in 0..8 {
        out[k] = ((b[2 * k] - b'0') << 4) | (b[2 * k + 1] - b'0');
    }
    out
}

fn location(serial: u16, sec: u8) -> Vec<u8> {
    let mut c = vec![24, 5, 20, 10, 30, sec % 60, 0xC9];
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

async fn run_clients(addr: SocketAddr, devices: u32, secs: u64) -> (u64, f64) {
    let acked = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    // Connect and log in first, so the measured window holds only locations.
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
    let start = Instant::now();
    for mut s in conns {
        let (acked, go) = (acked.clone(), go.clone());
        tasks.push(tokio::spawn(async move {
            let mut serial: u16 = 2;
            let mut r = [0u8; 10];
            while go.load(Ordering::Relaxed) {
                if s.write_all(&location(serial, serial as u8)).await.is_err() {
                    return;
                }
                if s.read_exact(&mut r).await.is_err() {
                    return;
                }
                acked.fetch_add(1, Ordering::Relaxed);
                serial = serial.wrapping_add(1);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    go.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let n = acked.load(Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    (n, elapsed)
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
    rt.block_on(async move {
        // Baseline.
        let mut bare_rate = f64::NAN;
        if only != "lienwatch" {
        let stop = CancellationToken::new();
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(bare_server(l, stop.clone()));
        let (bare_n, bare_t) = run_clients(addr, devices, secs).await;
        stop.cancel();
        bare_rate = bare_n as f64 / bare_t;
        println!("bare tokio reader : {bare_n:>9} acks in {bare_t:.1}s = {bare_rate:>10.0} acks/s ({devices} devices)");
        }
        if only == "bare" {
            return;
        }

        // lienwatch: real session, engine, sled on disk, group commit.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 64).expect("store");
        let ecfg = EngineConfig {
            rules: Default::default(),
            accept_unknown: true,
        max_future: Duration::from_secs(600),
            // The daemon's default unless COMMIT_WINDOW_US says otherwise.
            commit_window: std::env::var("COMMIT_WINDOW_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_micros)
                .unwrap_or(lienwatch::config::StorageConfig::default().commit_window),
            webhooks: Vec::new(),
        };
        let outbox = store.open_outbox(&[], Arc::new(Timestamp::now)).expect("outbox");
        let engine = Engine::open(store, outbox, ecfg, Timestamp::now()).expect("engine");
        let (handle, _thread) = lienwatch::engine::spawn(engine, Arc::new(Timestamp::now)).expect("engine thread");
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let cfg = Listener {
            protocol: WireProtocol::Gt06,
            bind: addr,
            transport: Transport::Tcp,
            utc_offset_s: None,
            idle_timeout: Duration::from_secs(60),
            max_connections: 20_000,
        };
        let scfg = SessionConfig {
            admit: handle.admission.clone(),
            ..SessionConfig::default()
        };
        let stop = CancellationToken::new();
        tokio::spawn(lienwatch::ingest::tcp::serve(l, cfg, scfg, handle.clone(), stop.clone(), TaskTracker::new()));
        let (lw_n, lw_t) = run_clients(addr, devices, secs).await;
        stop.cancel();
        let lw_rate = lw_n as f64 / lw_t;
        println!("lienwatch (durable): {lw_n:>9} acks in {lw_t:.1}s = {lw_rate:>10.0} acks/s ({devices} devices)");
        let commits = handle
            .run(lienwatch::engine::control::GetStats)
            .await
            .map(|s| s.commits)
            .unwrap_or(0)
            .max(1);
        println!(
            "group commits: {commits} ({:.0} acknowledged positions per flush)",
            lw_n as f64 / commits as f64
        );
        println!("ratio lienwatch / bare = {:.2}", lw_rate / bare_rate);
        handle.shutdown().await;
    });
}
