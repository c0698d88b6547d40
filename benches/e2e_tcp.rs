//! End-to-end load: acknowledged GT06 positions per second over loopback TCP.
//!
//! N simulated devices (default 2,000) each log in, then send a 0x12 location and wait for its
//! reply before sending the next. The same clients run, in one process, against a bare tokio
//! TCP reader that frames GT06 by length and answers each frame at once
//! (the baseline: sockets and framing only), and against lienwatch's real ingestion path (session,
//! engine, sled on disk, group commit; replies only after the flush), with the background passes
//! the daemon runs beside it on the daemon's schedules (history log drain and device log fold
//! every second, during lienwatch's slices; sealing at start). The figure that matters is
//! the ratio, since absolute numbers depend on the machine. Each side also reports its reply
//! latency (p50, p99: from writing a location to reading its whole reply), since a higher rate
//! bought with a worse tail would not be a win, and the bytes written per ack to files and to
//! the disk (Linux's `/proc/self/io` for files; for the disk, the sectors written to the device
//! that holds the temporary folder, from `/proc/diskstats`: the whole device, so any other writer
//! counts too, and the kernel's writeback of a slice may land in the next). Not `write_bytes`
//! of `/proc/self/io`: it counts a page each time one is dirtied, and when a synced append
//! overwrites blocks a file has, that was 450 KB a sync where the device took 22 KB.
//! It also prints the TCP segments sent per ack (Linux's `/proc/net/snmp`, the whole host, both
//! ends of the loopback): 2 is a location and its reply, each carrying the other side's ACK;
//! above 2 are ACKs sent on their own, which a reply later than the peer's delayed-ACK timeout
//! (40 ms) brings about, and which both ends pay for. The CPU per ack comes whole and by
//! thread: the runtime's workers (both sides' connections and the clients), the engine thread,
//! sled's threads and the rest (Linux's per-thread `schedstat`), so that a change on one of them
//! shows without a profiler. Beside the latency it prints the share of the acks that went to
//! the busiest tenth of the devices, which says whether a side favours some devices.
//!
//! Both sides stay up with their devices connected and take turns in `ROUNDS` pairs of slices
//! of `SECONDS` each (default 8 of 4 s): the ratio is over all slices, with each pair's ratio
//! beside it. Slices a few seconds apart see the same phase of a shared machine, whose speed
//! drifts by 2x over minutes. Then one slice each with history off, with every device on a
//! vehicle of its own, and with the devices on vehicles in pairs says what the history and the
//! rules cost.
//!
//! `cargo bench --bench e2e_tcp` (env: `DEVICES`, `SECONDS`, `ROUNDS`, `COMMIT_WINDOW_US`, and
//! `ONLY` = `bare` or `lienwatch` to run one side, e.g. under `perf stat`, or `ratio` for the
//! paired slices alone; `REGISTERED=1` puts every device on a vehicle for the paired slices too,
//! as a lender's fleet is, and `REGISTERED=2` puts them on vehicles in wired + wireless pairs).

#[path = "common/proc_cpu.rs"]
mod proc_cpu;

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
#[derive(Default)]
struct Run {
    acks: u64,
    secs: f64,
    latencies_us: Vec<u32>,
    /// The acks of the busiest tenth of the devices, and of all the devices whose task came
    /// back: their ratio is 0.1 when every device is served alike.
    busiest_tenth_acks: u64,
    counted_acks: u64,
    /// CPU time of the whole process (clients included) over the measured window.
    cpu_secs: f64,
    /// The same, by kind of thread.
    threads: ThreadCpu,
    /// Bytes the process wrote to files (sockets aside) and to the disk in the window.
    written: Written,
    /// TCP segments the host sent in the window.
    segments: u64,
}

/// TCP segments this host has sent (`OutSegs` in `/proc/net/snmp`; 0 where there is none).
fn tcp_segments_sent() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutSegs")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `wchar` from `/proc/self/io` (bytes passed to `write` and `pwrite` on files; socket sends are
/// not counted) and the bytes written to the temporary folder's device (`/proc/diskstats`), on
/// Linux.
#[derive(Default, Clone, Copy)]
struct Written {
    file: u64,
    disk: u64,
}

impl Written {
    fn now() -> Written {
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Written {
            file: field("wchar:"),
            disk: device_bytes_written(),
        }
    }

    fn since(self, start: Written) -> Written {
        Written {
            file: self.file.saturating_sub(start.file),
            disk: self.disk.saturating_sub(start.disk),
        }
    }
}

/// Bytes written to the device that holds the temporary folder (where the databases are), from
/// its sectors written in `/proc/diskstats`; 0 where that cannot be told.
fn device_bytes_written() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(dev) = std::fs::metadata(std::env::temp_dir()).map(|m| m.dev()) else {
        return 0;
    };
    // glibc's encoding of a device number.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stats = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    stats
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f.first().and_then(|v| v.parse().ok()) == Some(major)
                && f.get(1).and_then(|v| v.parse().ok()) == Some(minor)
        })
        .and_then(|f| f.get(9).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |sectors| sectors * 512)
}

impl Run {
    /// Adds another slice of the same side.
    fn absorb(&mut self, other: &Run) {
        self.acks += other.acks;
        self.busiest_tenth_acks += other.busiest_tenth_acks;
        self.counted_acks += other.counted_acks;
        self.secs += other.secs;
        self.cpu_secs += other.cpu_secs;
        self.threads = self.threads.plus(other.threads);
        self.written.file += other.written.file;
        self.written.disk += other.written.disk;
        self.segments += other.segments;
        self.latencies_us.extend_from_slice(&other.latencies_us);
        self.latencies_us.sort_unstable();
    }

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
        let per_ack = |b: u64| b as f64 / self.acks.max(1) as f64;
        let us = |secs: f64| secs * 1e6 / self.acks.max(1) as f64;
        let t = self.threads;
        println!(
            "{name:<20}: {:>9} acks in {:.1}s = {:>10.0} acks/s ({devices} devices); reply p50 {:.2} ms, p99 {:.2} ms, busiest tenth of the devices {:.0}% of the acks; {:.1} us CPU/ack (runtime workers {:.1}, engine {:.1}, sled {:.1}, other {:.1}); {:.2} TCP segments per ack; written per ack {:.0} B to files, {:.0} B to disk",
            self.acks,
            self.secs,
            self.rate(),
            self.quantile_ms(0.50),
            self.quantile_ms(0.99),
            self.busiest_tenth_acks as f64 * 100.0 / self.counted_acks.max(1) as f64,
            self.cpu_us_per_ack(),
            us(t.workers),
            us(t.engine),
            us(t.sled),
            us(t.other),
            per_ack(self.segments),
            per_ack(self.written.file),
            per_ack(self.written.disk),
        );
    }
}

/// CPU time of this process's threads so far, in seconds, by what they run: the tokio runtime's
/// workers (both sides' connections and the clients), the engine thread, sled's I/O and flusher
/// threads, and the rest. From each thread's `schedstat` (Linux, nanoseconds); zeros elsewhere.
/// A thread that ends within a slice takes its time with it, and none of these do.
#[derive(Default, Clone, Copy)]
struct ThreadCpu {
    workers: f64,
    engine: f64,
    sled: f64,
    other: f64,
}

impl ThreadCpu {
    fn now() -> ThreadCpu {
        let mut t = ThreadCpu::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return t;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let secs = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |ns| ns / 1e9);
            let comm = comm.trim();
            let kind = if comm.starts_with("tokio-r") {
                &mut t.workers
            } else if comm.starts_with("lienwatch-engin") {
                &mut t.engine
            } else if comm.starts_with("sled") || comm.starts_with("log") {
                &mut t.sled
            } else {
                &mut t.other
            };
            *kind += secs;
        }
        t
    }

    fn zip(self, o: ThreadCpu, f: impl Fn(f64, f64) -> f64) -> ThreadCpu {
        ThreadCpu {
            workers: f(self.workers, o.workers),
            engine: f(self.engine, o.engine),
            sled: f(self.sled, o.sled),
            other: f(self.other, o.other),
        }
    }

    fn plus(self, o: ThreadCpu) -> ThreadCpu {
        self.zip(o, |a, b| a + b)
    }

    fn since(self, start: ThreadCpu) -> ThreadCpu {
        self.zip(start, |a, b| a - b)
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

/// A side's devices, connected and logged in once, each with the serial of its next location.
type Fleet = Vec<(TcpStream, u16)>;

async fn connect_fleet(addr: SocketAddr, devices: u32) -> Fleet {
    connect_all(addr, devices)
        .await
        .into_iter()
        .map(|s| (s, 2))
        .collect()
}

/// Lets every device of `fleet` send and wait for its reply for `secs`, then takes the
/// connections back (each finishes the location it has in flight) for the next slice.
async fn run_slice(fleet: &mut Fleet, secs: f64) -> Run {
    let acked = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    let start = Instant::now();
    let cpu_start = proc_cpu::cpu_secs("self");
    let threads_start = ThreadCpu::now();
    let written_start = Written::now();
    let segments_start = tcp_segments_sent();
    for (mut s, mut serial) in fleet.drain(..) {
        let (acked, go) = (acked.clone(), go.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = [0u8; 10];
            let mut lat = Vec::with_capacity(4096);
            while go.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if s.write_all(&location(serial)).await.is_err() {
                    return (None, lat);
                }
                if s.read_exact(&mut r).await.is_err() {
                    return (None, lat);
                }
                if go.load(Ordering::Relaxed) {
                    acked.fetch_add(1, Ordering::Relaxed);
                    lat.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                serial = serial.wrapping_add(1);
            }
            (Some((s, serial)), lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    go.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_secs = proc_cpu::cpu_secs("self") - cpu_start;
    let threads = ThreadCpu::now().since(threads_start);
    let written = Written::now().since(written_start);
    let segments = tcp_segments_sent().saturating_sub(segments_start);
    let n = acked.load(Ordering::Relaxed);
    let mut latencies_us = Vec::with_capacity(n as usize);
    let mut per_device = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(Ok((conn, l))) = tokio::time::timeout(Duration::from_secs(5), t).await {
            per_device.push(l.len() as u64);
            latencies_us.extend(l);
            fleet.extend(conn);
        }
    }
    latencies_us.sort_unstable();
    per_device.sort_unstable_by(|a, b| b.cmp(a));
    Run {
        acks: n,
        secs: elapsed,
        latencies_us,
        busiest_tenth_acks: per_device.iter().take(per_device.len().div_ceil(10)).sum(),
        counted_acks: per_device.iter().sum(),
        cpu_secs,
        threads,
        written,
        segments,
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
    let secs: f64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("ONLY").unwrap_or_default();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        .max(1);
    rt.block_on(async move {
        // Both sides stay up with their devices connected, and take turns in slices of a few
        // seconds: on a shared machine whose speed drifts by 2x over minutes, sides measured
        // far apart would measure the drift as much as lienwatch. The ratio is over all slices.
        let mut bare = (only != "lienwatch").then_some(Bare::start(devices).await);
        // 1: a vehicle per device; 2: a wired and a wireless device per vehicle.
        let registered: u32 = std::env::var("REGISTERED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut lw = if only != "bare" {
            Some(Lienwatch::start(devices, true, registered).await)
        } else {
            None
        };
        let (mut bare_all, mut on) = (Run::default(), Run::default());
        let mut on_commits = 0;
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let mut b = None;
            if let Some(side) = bare.as_mut() {
                let run = run_slice(&mut side.fleet, secs).await;
                run.report(&format!("slice {round}: bare tokio reader"), devices);
                bare_all.absorb(&run);
                b = Some(run);
            }
            if let Some(side) = lw.as_mut() {
                let (run, commits) = side.slice(secs).await;
                run.report(
                    &format!("slice {round}: lienwatch (durable, history on)"),
                    devices,
                );
                on.absorb(&run);
                on_commits += commits;
                if let Some(b) = b {
                    ratios.push(run.rate() / b.rate());
                }
            }
        }
        if let Some(side) = bare.take() {
            side.stop.cancel();
            bare_all.report("bare tokio reader, all slices", devices);
        }
        if let Some(side) = lw.take() {
            side.stop().await;
            on.report("lienwatch (durable, history on), all slices", devices);
            println!(
                "group commits: {on_commits} ({:.0} acknowledged positions per flush)",
                on.acks as f64 / on_commits.max(1) as f64
            );
        }
        if !ratios.is_empty() {
            println!(
                "ratio lienwatch / bare = {:.2} over all slices; by slice {} (median {:.2})",
                on.rate() / bare_all.rate(),
                list(&ratios),
                median(&ratios)
            );
            println!(
                "CPU per ack, bare / lienwatch = {:.2} (the rate ratio a CPU-bound run would show)",
                bare_all.cpu_us_per_ack() / on.cpu_us_per_ack(),
            );
        }
        if only == "bare" || only == "ratio" {
            return;
        }
        // What the history and the rules cost: one slice each, against all history-on slices.
        let (off, off_commits) = lienwatch_once(devices, secs * 2.0, false, 0).await;
        off.report("lienwatch (durable, history off)", devices);
        // Every device on a vehicle: fence, overdue loan, zones, long_stay, risk all run.
        let (reg, reg_commits) = lienwatch_once(devices, secs * 2.0, true, 1).await;
        reg.report(
            "lienwatch (durable, history on, every device on a vehicle)",
            devices,
        );
        // A wired and a wireless device per vehicle: the separation rule runs too.
        let (pairs, pairs_commits) = lienwatch_once(devices, secs * 2.0, true, 2).await;
        pairs.report(
            "lienwatch (durable, history on, devices on vehicles in wired + wireless pairs)",
            devices,
        );
        for (name, run, commits) in [
            ("history off", &off, off_commits),
            ("on vehicles", &reg, reg_commits),
            ("on vehicles in pairs", &pairs, pairs_commits),
        ] {
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
        println!(
            "in pairs / unregistered: rate {:.2}, CPU per ack {:.2}",
            pairs.rate() / on.rate(),
            pairs.cpu_us_per_ack() / on.cpu_us_per_ack(),
        );
    });
}

/// Device `i`'s IMEI: the id lienwatch gives it (its login carries it as 16 BCD digits).
fn device_id(i: u32) -> String {
    (868_120_000_000_000u64 + i as u64).to_string()
}

/// Puts every device on a vehicle, as a lender's fleet is: an overdue loan (the silence
/// deadline moves with each fix) and a 2 km circle around where the devices report. One device
/// per vehicle, or (`per_vehicle` 2) a wired and a wireless one, the usual pair (domain.md),
/// which also runs the separation rule.
fn register_all(engine: &mut Engine, devices: u32, per_vehicle: u32) {
    let now = Timestamp::now();
    let per_vehicle = per_vehicle.max(1);
    for i in 0..devices.div_ceil(per_vehicle) {
        let kinds = ["wired", "wireless"];
        let bound: Vec<serde_json::Value> = (0..per_vehicle)
            .map(|k| i * per_vehicle + k)
            .filter(|&d| d < devices)
            .map(|d| serde_json::json!({"id": device_id(d), "kind": kinds[(d % 2) as usize]}))
            .collect();
        let body = serde_json::json!({
            "loan": {"id": format!("L-{i}"), "status": "overdue", "days_past_due": 40},
            "devices": bound,
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

/// lienwatch's real ingestion path (session, engine, sled on disk, group commit) on a fresh
/// database, with its devices connected, measured in slices.
struct Lienwatch {
    handle: lienwatch::engine::EngineHandle,
    store: Store,
    stop: CancellationToken,
    /// Sealing and pruning, started once as the daemon starts them (at start, then every few
    /// minutes), not with every slice.
    sealing: lienwatch::daemon::upkeep::Upkeep,
    fleet: Fleet,
    /// Devices per vehicle (0: none on a vehicle).
    registered: u32,
    _dir: tempfile::TempDir,
}

impl Lienwatch {
    async fn start(devices: u32, history: bool, registered: u32) -> Self {
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
        // With the daemon's default retention.
        let retention = lienwatch::config::Config::default()
            .storage
            .history_retention;
        let mut engine =
            Engine::open(store.clone(), outbox, ecfg, Timestamp::now()).expect("engine");
        if registered > 0 {
            register_all(&mut engine, devices, registered);
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
        let fleet = connect_fleet(addr, devices).await;
        let sealing = lienwatch::daemon::upkeep::spawn_sealing(&store, retention, stop.clone());
        Lienwatch {
            handle,
            store,
            stop,
            sealing,
            fleet,
            registered,
            _dir: dir,
        }
    }

    /// One measured slice and the group commits in it. The background passes that follow
    /// ingestion (history log drain, device log fold) run during lienwatch's slices only, so
    /// that their cost is counted against lienwatch and not against the baseline.
    async fn slice(&mut self, secs: f64) -> (Run, u64) {
        let upkeep = CancellationToken::new();
        let passes = lienwatch::daemon::upkeep::spawn_following(&self.store, upkeep.clone());
        let before = commits(&self.handle).await;
        let run = run_slice(&mut self.fleet, secs).await;
        let commits = commits(&self.handle).await - before;
        upkeep.cancel();
        passes.all_stopped().await;
        (run, commits)
    }

    async fn stop(self) {
        self.stop.cancel();
        if self.registered > 0 {
            // The rules did run: the first vehicle's device is placed inside its fence.
            let v = self
                .handle
                .run(GetVehicle {
                    id: "V-00000".into(),
                })
                .await
                .expect("vehicle");
            let state = serde_json::to_value(&v.devices[0].state).unwrap_or_default();
            assert_eq!(state["geofence"], "inside", "rules did not run: {state}");
        }
        // Before the folder goes with `_dir`.
        self.sealing.all_stopped().await;
        let _ = self.handle.shutdown().await;
    }
}

/// The baseline's listener and devices.
struct Bare {
    stop: CancellationToken,
    fleet: Fleet,
}

impl Bare {
    async fn start(devices: u32) -> Self {
        let stop = CancellationToken::new();
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(bare_server(l, stop.clone()));
        let fleet = connect_fleet(addr, devices).await;
        Bare { stop, fleet }
    }
}

/// One side started, measured for one slice, stopped: for the runs that are not paired.
async fn lienwatch_once(devices: u32, secs: f64, history: bool, registered: u32) -> (Run, u64) {
    let mut lw = Lienwatch::start(devices, history, registered).await;
    let r = lw.slice(secs).await;
    lw.stop().await;
    r
}
