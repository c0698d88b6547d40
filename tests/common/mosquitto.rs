//! A real mosquitto broker for tests and benchmarks: a free loopback port, a generated config
//! that does not lose QoS 1 messages (protocols.md E.3b: persistence on, no queue limit), and
//! stop / restart on the same port with the same persistence directory.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `N` distinct loopback ports that were free a moment ago: all are held until all are picked,
/// where one pick after another can be handed the same port twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("bound port").port())
}

pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker with an unlimited per-client inflight window (each client's MQTT v5
    /// receive maximum then decides) and no queue bound.
    pub fn start() -> Mosquitto {
        Self::start_with("max_inflight_messages 0\n")
    }

    /// Starts a broker with extra config lines appended.
    pub fn start_with(extra: &str) -> Mosquitto {
        let [port] = free_ports();
        Self::start_on(port, extra)
    }

    /// Starts a broker on `port` with extra config lines appended; for a config that names
    /// other ports, all taken from one [`free_ports`] call so that none is picked twice.
    pub fn start_on(port: u16, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {}/\n\
             autosave_interval 1\n\
             max_queued_messages 0\n\
             max_queued_bytes 0\n\
             log_dest file {}\n\
             log_type error\nlog_type warning\nlog_type notice\n\
             user root\n\
             {extra}",
            dir.path().display(),
            dir.path().join("mosquitto.log").display(),
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            port,
            dir,
            conf,
            child: None,
        };
        m.spawn();
        m
    }

    /// The broker's process id while it runs: the benches read its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (Debian package mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("mosquitto exited early ({st}):\n{}", self.log());
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mosquitto did not listen on {}:\n{}", self.port, self.log());
    }

    /// SIGTERM: mosquitto writes its persistence file and exits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
