//! The real daemon under test: the `lienwatch` binary, started with a config in a temporary
//! directory and listeners on free loopback ports, driven over real sockets.
#![allow(dead_code)]

pub mod faketime;
pub mod jt808;
pub mod metrics;
pub mod mosquitto;
pub mod receiver;
pub mod tls;
pub mod wait;

pub use wait::{wait_for, wait_for_async};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789";

/// What the daemon logs once its admin API listens.
const READY: &str = "admin API ready";

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub admin: SocketAddr,
    pub ports: Vec<(String, u16)>,
    pub child: Option<Child>,
    /// "admin API ready" lines in the log before the last spawn: healthy means one more.
    ready_lines: usize,
}

impl Daemon {
    /// Starts lienwatch with one TCP listener per protocol in `protocols` (plus `extra` TOML).
    pub fn start(protocols: &[&str], extra: &str) -> Daemon {
        let mut d = Self::configure(protocols, extra);
        d.spawn();
        d
    }

    /// Writes the config without starting the daemon (for tests that control its environment).
    pub fn configure(protocols: &[&str], extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        // Every port stays bound until all are chosen: released one at a time, the same port
        // could come back twice (the admin API and a listener on one port).
        let mut held_tcp = Vec::new();
        let mut held_udp = Vec::new();
        let mut tcp_port = || {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            let port = l.local_addr().expect("port").port();
            held_tcp.push(l);
            port
        };
        let admin: SocketAddr = format!("127.0.0.1:{}", tcp_port()).parse().expect("addr");
        let mut toml = format!(
            "[storage]\npath = {:?}\n\n[admin]\nbind = \"{admin}\"\ntoken = \"{TOKEN}\"\n\n[log]\nlevel = \"info\"\n\n",
            dir.path().join("data")
        );
        let mut ports = Vec::new();
        // "proto", "proto/udp", "proto@+08:00" (a device clock offset).
        for p in protocols {
            let (spec, offset) = p.split_once('@').map_or((*p, None), |(a, b)| (a, Some(b)));
            let (proto, transport) = spec.split_once('/').unwrap_or((spec, "tcp"));
            let port = if transport == "udp" {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("free udp port");
                let port = sock.local_addr().expect("port").port();
                held_udp.push(sock);
                port
            } else {
                tcp_port()
            };
            toml.push_str(&format!(
                "[[listener]]\nprotocol = \"{proto}\"\nbind = \"127.0.0.1:{port}\"\ntransport = \"{transport}\"\n"
            ));
            if let Some(o) = offset {
                toml.push_str(&format!("utc_offset = \"{o}\"\n"));
            }
            toml.push('\n');
            ports.push((p.to_string(), port));
        }
        toml.push_str(extra);
        let config = dir.path().join("lienwatch.toml");
        std::fs::write(&config, toml).expect("write config");
        drop((held_tcp, held_udp));
        Daemon {
            dir,
            config,
            admin,
            ports,
            child: None,
            ready_lines: 0,
        }
    }

    /// Starts `lienwatch run` and waits until it is healthy.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
        self.wait_healthy();
    }

    /// Starts `lienwatch run` with exactly these service-manager variables (inherited ones are
    /// removed, so a test never talks to a real service manager), without waiting.
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        self.spawn_under(&[], env);
    }

    /// As [`Daemon::spawn_with_env`], run by `wrapper` (a program and its arguments, given the
    /// daemon's command line after them), which is then the child this harness holds.
    pub fn spawn_under(&mut self, wrapper: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let bin = env!("CARGO_BIN_EXE_lienwatch");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.ready_lines = self.log().matches(READY).count();
        self.child = Some(cmd.spawn().expect("spawn lienwatch"));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Reads the log without borrowing the daemon (for failure messages of long waits).
    pub fn log_reader(&self) -> impl Fn() -> String {
        let path = self.dir.path().join("daemon.log");
        move || std::fs::read_to_string(&path).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("lienwatch exited early ({st}):\n{}", self.log());
                }
            }
            // Ours, not another test's daemon that took the admin port freed a moment ago (this
            // one then fails to bind it and exits): its own log says its admin API is up.
            // Listeners are bound before the admin API, so they are ready too.
            if self.log().matches(READY).count() > self.ready_lines
                && matches!(
                    http(self.admin, "GET", "/healthz", None, None),
                    Ok((200, _))
                )
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("lienwatch did not become healthy:\n{}", self.log());
    }

    pub fn port(&self, proto: &str) -> u16 {
        self.ports
            .iter()
            .find(|(p, _)| p == proto)
            .map(|(_, port)| *port)
            .expect("listener for protocol")
    }

    pub fn connect(&self, proto: &str) -> Device {
        Device::connect(("127.0.0.1", self.port(proto)))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        signal(self.child.as_ref()?.id(), "TERM");
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits (bounded) for the process to exit; its exit code (`None`: killed after the wait).
    pub fn wait_exit(&mut self, wait: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// GET/PUT/DELETE on the admin API with the token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, text) =
            http(self.admin, method, path, body, Some(TOKEN)).expect("admin API reachable");
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, v)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A device on a real TCP connection.
pub struct Device {
    pub stream: TcpStream,
}

impl Device {
    pub fn connect(addr: impl std::net::ToSocketAddrs) -> Device {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Device { stream }
    }

    pub fn send_hex(&mut self, hex: &str) {
        let bytes = lienwatch::protocol::parse_hex(hex).expect("hex");
        self.stream.write_all(&bytes).expect("send");
    }

    /// Reads exactly `n` bytes (the reply the test expects), failing after the read timeout.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.stream
            .read_exact(&mut buf)
            .expect("reply within the timeout");
        buf
    }

    /// Sends `hex` and asserts the exact reply `want` (hex).
    pub fn exchange(&mut self, hex: &str, want: &str) {
        self.send_hex(hex);
        let want = lienwatch::protocol::parse_hex(want).expect("hex");
        let got = self.read_exact(want.len());
        assert_eq!(
            lienwatch::protocol::to_hex(&got),
            lienwatch::protocol::to_hex(&want),
            "reply to {hex}"
        );
    }

    /// Closes the device's sending side and reads until the server closes. The server sends
    /// every reply it owes before it closes, so a byte read here is a reply nobody expected:
    /// "no reply" is checked by an event that must come after it, not by waiting.
    pub fn expect_no_more_replies(&mut self) {
        // Fails only when the server already closed (or reset) the connection: then read on.
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server did not close after the device did: {e}"),
        }
        assert!(
            rest.is_empty(),
            "unexpected reply bytes {}",
            lienwatch::protocol::to_hex(&rest)
        );
    }

    /// True once the server has closed the connection (read returns 0).
    pub fn closed_by_server(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut b = [0u8; 64];
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// A minimal HTTP/1.1 client over a real socket (the tests need no client library for this).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    // Generous: a debug build on a loaded machine takes many seconds over a 12 MB geofence.
    s.set_read_timeout(Some(Duration::from_secs(180)))?;
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {text:?}")))?;
    let body = match text.split_once("\r\n\r\n") {
        Some((head, b))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(b)
        }
        Some((_, b)) => b.to_string(),
        None => String::new(),
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GT06 frame builder for tests: `78 78 len proto content serial crc 0D 0A` (protocols.md A.1).
pub fn gt06_frame(proto: u8, content: &[u8], serial: u16) -> Vec<u8> {
    const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
    let len = (1 + content.len() + 4) as u8;
    let mut f = vec![0x78, 0x78, len, proto];
    f.extend_from_slice(content);
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = X25.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    f
}

/// The reply lienwatch owes a GT06 frame: `78 78 05 proto serial crc 0D 0A`.
pub fn gt06_ack(proto: u8, serial: u16) -> Vec<u8> {
    gt06_frame(proto, &[], serial)
}

/// A GT06 login for an IMEI (15 digits).
pub fn gt06_login(imei: &str, serial: u16) -> Vec<u8> {
    let digits = format!("0{imei}");
    let b = digits.as_bytes();
    let bcd: Vec<u8> = (0..8)
        .map(|k| ((b[2 * k] - b'0') << 4) | (b[2 * k + 1] - b'0'))
        .collect();
    gt06_frame(0x01, &bcd, serial)
}

/// `(yy, mm, dd, hh, mi, ss)` of a UTC instant, as a GT06 fix carries it.
pub fn gt06_civil(t: lienwatch::time::Timestamp) -> (u8, u8, u8, u8, u8, u8) {
    let dt = t.to_jiff().to_zoned(jiff::tz::TimeZone::UTC).datetime();
    (
        (dt.year() % 100) as u8,
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
    )
}

/// A GT06 0x12 location at Shenzhen with the given UTC time (protocols.md A.6 #2 layout).
pub fn gt06_location(
    serial: u16,
    (y, mo, d, h, mi, s): (u8, u8, u8, u8, u8, u8),
    lat: f64,
    lon: f64,
) -> Vec<u8> {
    let mut c = vec![y, mo, d, h, mi, s, 0xC9];
    c.extend_from_slice(&((lat * 1_800_000.0).round() as u32).to_be_bytes());
    c.extend_from_slice(&((lon * 1_800_000.0).round() as u32).to_be_bytes());
    // speed 60, course/status 0x145A: positioned, north, east, 90 degrees; then LBS.
    c.extend_from_slice(&[
        0x3C, 0x14, 0x5A, 0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31,
    ]);
    gt06_frame(0x12, &c, serial)
}

impl Device {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends a frame and asserts the exact reply.
    pub fn exchange_bytes(&mut self, frame: &[u8], want: &[u8]) {
        self.send(frame);
        let got = self.read_exact(want.len());
        assert_eq!(
            lienwatch::protocol::to_hex(&got),
            lienwatch::protocol::to_hex(want),
            "reply to {}",
            lienwatch::protocol::to_hex(frame)
        );
    }
}

/// A turn for a test that writes megabytes (a bulk zone import, a 12 MB fence): such tests run
/// one at a time, so that a test timing one daemon's acks measures that daemon, not another
/// test's writes on the same disk. Held until the returned guard is dropped.
pub fn heavy_io_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resident memory of a process in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
