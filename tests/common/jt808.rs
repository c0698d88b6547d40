//! A JT/T 808 2013 terminal for tests: registers, authenticates with the server key of the test
//! config, and sends messages over a real TCP connection.

use super::{Daemon, Device};
use lienwatch::event::Timestamp;
use lienwatch::protocol::jt808::{auth_code, encode_frame, parse_frame, unescape_into};

/// The `[ingest]` table that fixes the authentication key, so the test can compute codes.
pub const KEY_CONFIG: &str = "[ingest]\njt808_auth_key = \"lienwatch\"\n";

pub fn bcd(number: &str) -> Vec<u8> {
    let digits = format!("{number:0>12}");
    let b = digits.as_bytes();
    (0..6)
        .map(|k| ((b[2 * k] - b'0') << 4) | (b[2 * k + 1] - b'0'))
        .collect()
}

fn bcd2(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// A 0x0200 location body at `t` (sent as GMT+8 BCD, as terminals do).
pub fn location_body(t: Timestamp, lat: f64, lon: f64, valid: bool) -> Vec<u8> {
    let status: u32 = if valid { 0x0002 } else { 0 };
    let mut b = vec![0, 0, 0, 0];
    b.extend_from_slice(&status.to_be_bytes());
    b.extend_from_slice(&((lat * 1e6).round() as u32).to_be_bytes());
    b.extend_from_slice(&((lon * 1e6).round() as u32).to_be_bytes());
    b.extend_from_slice(&[0x00, 0x23, 0x02, 0x6F, 0x00, 0x5A]);
    let local = t.add_millis(8 * 3600 * 1000).to_jiff();
    let s = local.strftime("%y %m %d %H %M %S").to_string();
    for part in s.split(' ') {
        b.push(bcd2(part.parse().unwrap_or(0)));
    }
    b
}

/// A 0x0704 body: `type` 1 is a blind-area (stored) batch.
pub fn batch_body(kind: u8, items: &[Vec<u8>]) -> Vec<u8> {
    let mut b = (items.len() as u16).to_be_bytes().to_vec();
    b.push(kind);
    for it in items {
        b.extend_from_slice(&(it.len() as u16).to_be_bytes());
        b.extend_from_slice(it);
    }
    b
}

pub struct Terminal {
    pub dev: Device,
    pub number: String,
    serial: u16,
}

impl Terminal {
    /// Connects to the daemon's `jt808` listener and authenticates (registration first).
    pub fn authenticated(d: &Daemon, number: &str) -> Terminal {
        let mut t = Terminal {
            dev: d.connect("jt808"),
            number: number.to_string(),
            serial: 0,
        };
        let mut reg = vec![0x00, 0x2C, 0x01, 0x2C];
        reg.extend_from_slice(b"GPS01");
        reg.extend_from_slice(&[0u8; 20]);
        let mut id = number.as_bytes()[number.len().saturating_sub(7)..].to_vec();
        id.resize(7, 0);
        reg.extend_from_slice(&id);
        reg.push(1);
        reg.extend_from_slice(b"B12345");
        let (mid, _) = t.send(0x0100, &reg);
        assert_eq!(mid, 0x8100, "registration reply");
        let code = auth_code(b"lienwatch", &lienwatch::event::DeviceId::new(number));
        assert_eq!(t.result_of(0x0102, code.as_bytes()), 0, "authenticated");
        t
    }

    /// Sends a message and returns the reply's message id and body.
    pub fn send(&mut self, msg_id: u16, body: &[u8]) -> (u16, Vec<u8>) {
        self.serial += 1;
        let f = encode_frame(msg_id, None, &bcd(&self.number), self.serial, body);
        self.dev.send(&f);
        self.read_frame()
    }

    /// Reads one frame sent by the server: its message id and body.
    pub fn read_frame(&mut self) -> (u16, Vec<u8>) {
        let mut raw = self.dev.read_exact(1);
        assert_eq!(raw, [0x7E]);
        loop {
            let b = self.dev.read_exact(1);
            raw.extend_from_slice(&b);
            if b == [0x7E] && raw.len() > 2 {
                break;
            }
        }
        let mut data = Vec::new();
        unescape_into(&raw[1..raw.len() - 1], &mut data).expect("escaping");
        let f = parse_frame(&data).expect("a frame");
        (f.header.msg_id, f.body.to_vec())
    }

    /// The result byte of the 0x8001 general response to a message.
    pub fn result_of(&mut self, msg_id: u16, body: &[u8]) -> u8 {
        let (id, reply) = self.send(msg_id, body);
        assert_eq!(id, 0x8001, "general response");
        assert_eq!(&reply[2..4], &msg_id.to_be_bytes(), "answers that message");
        reply[4]
    }
}
