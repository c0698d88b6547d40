//! The one webhook receiver of the tests: a real HTTP server on loopback that records every
//! request and answers from a script (then a default), one thread per connection so that
//! concurrent deliveries are really concurrent and can be counted.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Status(u16),
    /// Hold the request this long, then answer 200 (longer than the webhook timeout: a timeout).
    Hang(Duration),
}

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

struct Shared {
    requests: Mutex<Vec<Request>>,
    script: Mutex<VecDeque<Reply>>,
    default: Reply,
    /// Held before answering every request (a slow receiver).
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    stop: AtomicBool,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub fn start() -> Receiver {
        Self::scripted(&[], Reply::Status(200))
    }

    /// Starts on a given address (to come up where a webhook already points).
    pub fn start_at(addr: SocketAddr) -> Receiver {
        Self::with(addr, &[], Reply::Status(200), Duration::ZERO)
    }

    /// Answers the first requests from `script`, then `default`.
    pub fn scripted(script: &[Reply], default: Reply) -> Receiver {
        Self::with(
            "127.0.0.1:0".parse().expect("addr"),
            script,
            default,
            Duration::ZERO,
        )
    }

    pub fn with(addr: SocketAddr, script: &[Reply], default: Reply, delay: Duration) -> Receiver {
        Self::serve_on(addr, script, default, delay, None)
    }

    /// Answers 200 over HTTPS with this certificate chain and key (PEM files).
    pub fn tls(cert: &std::path::Path, key: &std::path::Path) -> Receiver {
        let cfg = super::tls::server_config(cert, key);
        Self::serve_on(
            "127.0.0.1:0".parse().expect("addr"),
            &[],
            Reply::Status(200),
            Duration::ZERO,
            Some(cfg),
        )
    }

    fn serve_on(
        addr: SocketAddr,
        script: &[Reply],
        default: Reply,
        delay: Duration,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        let listener = TcpListener::bind(addr).expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(script.iter().copied().collect()),
            default,
            delay,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let sh = sh.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve(s, &sh),
                    Some(cfg) => {
                        let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(conn, s), &sh)
                    }
                });
            }
        });
        Receiver { addr, shared }
    }

    /// The next requests get these statuses, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        let mut script = self.shared.script.lock().expect("script");
        script.extend(statuses.iter().map(|s| Reply::Status(*s)));
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/lienwatch", self.addr)
    }

    /// The URL for a receiver started with [`Receiver::tls`] (its certificate is for 127.0.0.1).
    pub fn https_url(&self) -> String {
        format!("https://{}/hooks/lienwatch", self.addr)
    }

    /// Every request so far, whatever was answered.
    pub fn all(&self) -> Vec<Request> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// The alert id of every request so far, in arrival order.
    pub fn ids(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|r| r.header("X-Lienwatch-Alert-Id").unwrap_or("").to_string())
            .collect()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `pred` holds for the recorded requests, or panics after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let waited = super::wait::try_for(timeout, || {
            let all = self.all();
            pred(&all).then_some(all)
        });
        waited.unwrap_or_else(|| {
            let bodies: Vec<String> = self
                .all()
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).to_string())
                .collect();
            panic!("timed out waiting for {what}; received: {bodies:#?}")
        })
    }

    /// Alerts of a type received so far (successful or not).
    pub fn of_type(&self, t: &str) -> Vec<Request> {
        self.all()
            .into_iter()
            .filter(|r| r.json()["type"] == t)
            .collect()
    }
}

impl Drop for Receiver {
    /// Stops accepting, so the port is free again and no thread outlives the test.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One connection: requests until the client closes (keep-alive, as a real server does).
fn serve(s: impl Read + Write, sh: &Shared) {
    let mut rd = BufReader::new(s);
    loop {
        let mut line = String::new();
        match rd.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if rd.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.trim().split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut body = vec![0u8; len];
        if rd.read_exact(&mut body).is_err() {
            return;
        }
        let now = sh.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        sh.max_in_flight.fetch_max(now, Ordering::SeqCst);
        sh.requests.lock().expect("requests").push(Request {
            path,
            headers,
            body,
        });
        let reply = sh
            .script
            .lock()
            .expect("script")
            .pop_front()
            .unwrap_or(sh.default);
        // Both model a receiver that takes real time to answer.
        if !sh.delay.is_zero() {
            std::thread::sleep(sh.delay);
        }
        let status = match reply {
            Reply::Status(s) => s,
            Reply::Hang(d) => {
                std::thread::sleep(d);
                200
            }
        };
        let written = write!(
            rd.get_mut(),
            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n"
        )
        .and_then(|()| rd.get_mut().flush());
        sh.in_flight.fetch_sub(1, Ordering::SeqCst);
        if written.is_err() {
            return;
        }
    }
}
