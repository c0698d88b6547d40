//! A real HTTP server that receives webhooks for the tests: records every request and answers
//! with a scripted sequence of statuses (then 200).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").expect("bind receiver"))
    }

    /// Starts on a given address (to come up where a webhook already points).
    pub fn start_at(addr: SocketAddr) -> Receiver {
        Self::on(TcpListener::bind(addr).expect("bind receiver"))
    }

    fn on(l: TcpListener) -> Receiver {
        let addr = l.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let (r, sc) = (requests.clone(), script.clone());
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut rd = BufReader::new(s.try_clone().expect("clone"));
                let mut line = String::new();
                if rd.read_line(&mut line).is_err() {
                    continue;
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
                let _ = rd.read_exact(&mut body);
                r.lock().unwrap().push(Request {
                    path,
                    headers,
                    body,
                });
                let status = sc.lock().unwrap().pop_front().unwrap_or(200);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            addr,
            requests,
            script,
        }
    }

    /// The next requests get these statuses, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses.iter().copied());
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/lienwatch", self.addr)
    }

    pub fn all(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the recorded requests, or panics after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.all();
            if pred(&all) {
                return all;
            }
            if Instant::now() > deadline {
                let bodies: Vec<String> = all
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.body).to_string())
                    .collect();
                panic!("timed out waiting for {what}; received: {bodies:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Alerts of a type received so far (successful or not).
    pub fn of_type(&self, t: &str) -> Vec<Request> {
        self.all()
            .into_iter()
            .filter(|r| r.json()["type"] == t)
            .collect()
    }
}
