//! Sans-I/O protocol cores.
//!
//! Each wire protocol is one module with a pure session: bytes in, normalised events and the exact
//! reply bytes out. It knows framing, checksums, login state and replies; it knows nothing about
//! sockets, clocks or storage. The TCP and UDP listeners, MQTT raw payloads, `lienwatch decode`
//! and `lienwatch replay` all drive the same session types (the split rumqttc makes between
//! `MqttState` and its event loop).
//!
//! The contract every session keeps:
//! - `feed` consumes every complete frame at the front of the buffer and leaves a partial one;
//! - garbage and bad checksums are skipped (reported as [`Output::Rejected`]) and the stream
//!   resyncs on the next start marker; they never end the session;
//! - the buffer never holds more than [`SessionConfig::max_frame`] bytes of undecodable data;
//! - a reply appears in the output after the events of the frame it answers, so the caller can
//!   release it once those events are on disk (the durability promise in CONTRACT.md);
//! - `feed` never panics, whatever the bytes.

pub mod downlink;
pub mod gt06;
pub mod gt06_command;
pub mod gt06_wifi;
pub mod h02;
pub mod h02_command;
pub mod json;
pub mod jt808;
pub mod jt808_command;
pub mod jt808_items;
pub mod teltonika;
pub mod teltonika_command;

use crate::event::{DeviceId, Event, Protocol, Timestamp};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// Decides at login whether a device may keep its session (`[ingest] accept_unknown`).
pub type Admission = Arc<dyn Fn(&DeviceId) -> bool + Send + Sync>;

/// The server's clock, for replies that carry the time (GT06 0x8A). Injected so that replay and
/// tests are deterministic.
pub use crate::time::Clock;

/// Decides whether a JT/T 808 terminal number may register with this terminal id (the id in its
/// registration body): true binds a new number to the id, or confirms the id it is bound to.
pub type TerminalBinding = Arc<dyn Fn(&DeviceId, &str) -> bool + Send + Sync>;

/// Per-listener settings a session needs. Pure data plus the admission check.
#[derive(Clone)]
pub struct SessionConfig {
    /// Offset of the device clock from UTC in seconds, for devices configured to local time.
    /// `None` means the protocol's own rule (UTC, or GMT+8 for JT/T 808).
    pub utc_offset_s: Option<i32>,
    /// Largest frame accepted; a longer declared length or an unframed run this long is dropped.
    pub max_frame: usize,
    /// Login policy.
    pub admit: Admission,
    /// Key from which JT/T 808 authentication codes are derived (see `jt808::auth_code`).
    pub auth_key: Arc<[u8]>,
    /// Id used when a frame does not carry one (MQTT raw payloads take it from the topic).
    pub default_device_id: Option<DeviceId>,
    /// Server time for replies that carry it.
    pub clock: Clock,
    /// `lienwatch decode`: data frames decode without a login (their events carry the device id
    /// only when the frame itself does; otherwise it is empty) and nothing is refused.
    pub sessionless: bool,
    /// `lienwatch decode`: each message as its bytes say, nothing carried from one to the next
    /// (a Teltonika packet's newest record does not take its older records' IO).
    pub verbatim: bool,
    /// JT/T 808 over a connection: nothing but registration, authentication and heartbeats
    /// before a valid authentication, and then only frames of the terminal that authenticated.
    /// Off where there is no connection to hold it (MQTT raw payloads: the broker is the gate).
    pub require_auth: bool,
    /// JT/T 808 registration policy (see [`TerminalBinding`]).
    pub bind_terminal: TerminalBinding,
}

/// The default `ingest.max_frame`: room for the largest message a device sends whole, an H02
/// `BC` batch of 100 points (about 7 KB).
pub const DEFAULT_MAX_FRAME: usize = 8192;

impl SessionConfig {
    /// Whether `id` may keep its session (`[ingest] accept_unknown`). A sessionless decoder
    /// refuses nothing: where its events go (MQTT) applies the policy to them.
    pub fn admits(&self, id: &DeviceId) -> bool {
        self.sessionless || (self.admit)(id)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            utc_offset_s: None,
            max_frame: DEFAULT_MAX_FRAME,
            admit: Arc::new(|_| true),
            auth_key: Arc::from(&b"lienwatch"[..]),
            default_device_id: None,
            clock: Arc::new(Timestamp::now),
            sessionless: false,
            verbatim: false,
            require_auth: false,
            bind_terminal: Arc::new(|_, _| true),
        }
    }
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("utc_offset_s", &self.utc_offset_s)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

/// Why bytes were skipped. The reason is a static string so that it can label metrics; a frame of
/// a type a decoder cannot read names that type in it ([`Rejection::unsupported`]), so an operator
/// sees what the fleet sends that lienwatch does not read yet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rejection {
    pub reason: &'static str,
    pub bytes: usize,
    /// The first bytes of a frame that was sound but not understood, for the log.
    pub sample: Option<Bytes>,
}

/// How many bytes of an unsupported frame are kept for the log: enough to see its type and
/// layout, bounded so that a long frame cannot bloat the output.
pub const SAMPLE_MAX: usize = 96;

/// Distinct reasons interned for unsupported types. Types are bounded per protocol (a GT06 type is
/// one byte), but a device can invent H02 commands, so the table is capped too.
const MAX_INTERNED: usize = 512;

impl Rejection {
    /// Input skipped for a reason that does not depend on the message type (garbage, checksums).
    pub fn new(reason: &'static str, bytes: usize) -> Self {
        Rejection {
            reason,
            bytes,
            sample: None,
        }
    }

    /// A checked frame of a type this decoder does not read: the reason names the protocol and the
    /// type (`gt06: unsupported message 0x95`) and the frame's head is kept for the log.
    pub fn unsupported(protocol: &str, kind: &str, frame: &[u8]) -> Self {
        Rejection {
            reason: unsupported_reason(protocol, kind),
            bytes: frame.len(),
            sample: Some(Bytes::copy_from_slice(
                frame.get(..SAMPLE_MAX).unwrap_or(frame),
            )),
        }
    }

    /// A frame of a known type whose content is not what its type promises; the reason says what
    /// is wrong and names the type.
    pub fn malformed(protocol: &str, kind: &str, what: &str, frame: &[u8]) -> Self {
        Rejection {
            reason: intern(&format!("{protocol}: {what} in message {kind}")),
            bytes: frame.len(),
            sample: Some(Bytes::copy_from_slice(
                frame.get(..SAMPLE_MAX).unwrap_or(frame),
            )),
        }
    }
}

/// The reason [`Rejection::unsupported`] gives, for decoders that report through their own error
/// types: `<protocol>: unsupported message <kind>`.
pub fn unsupported_reason(protocol: &str, kind: &str) -> &'static str {
    intern(&format!("{protocol}: unsupported message {kind}"))
}

/// A `'static` copy of `s`, made once per distinct string: metric labels need `'static` and the set
/// of types a fleet sends is small. Past [`MAX_INTERNED`] strings, a shared overflow label is used.
fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static TABLE: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| Mutex::new(HashSet::new()));
    let mut t = match table.lock() {
        Ok(t) => t,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(&found) = t.get(s) {
        return found;
    }
    if t.len() >= MAX_INTERNED {
        return "unsupported message (too many distinct types to name)";
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    t.insert(leaked);
    leaked
}

/// One item a session produced, in stream order.
#[derive(Clone, PartialEq, Debug)]
pub enum Output {
    Event(Event),
    /// Bytes to send to the device once every event before it is durable.
    Reply(Bytes),
    /// Input skipped (garbage before a start marker, bad checksum, frame before login, ...).
    Rejected(Rejection),
    /// A sound message that makes no event (a GT06 time request, an information transfer),
    /// named for `decode`, which prints every message it reads; sources have nothing to do with
    /// it beyond its reply.
    Message(&'static str),
}

/// The events in a session's output, in order.
pub fn events(out: &[Output]) -> Vec<&Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// The replies in a session's output, in order.
pub fn replies(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply(b) => Some(b.to_vec()),
            _ => None,
        })
        .collect()
}

/// A condition after which the connection cannot go on. Replies already in the output are still
/// owed (a Teltonika refusal `00`, for instance) and are sent before closing.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SessionError {
    #[error("device {0} refused by the admission policy")]
    Refused(String),
    #[error("{0}")]
    Fatal(&'static str),
}

/// A sans-I/O protocol session: one per TCP connection (or per UDP peer, MQTT topic, decode run).
pub trait Session: Send {
    fn protocol(&self) -> Protocol;

    /// Consumes every complete frame at the front of `buf`, appending what they produced to
    /// `out`. Leaves an incomplete frame in `buf` for the next call.
    fn feed(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> Result<(), SessionError>;

    /// Called when the peer closed its side: whatever is left in `buf` is a truncated frame.
    fn finish(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) {
        if !buf.is_empty() {
            out.push(Output::Rejected(Rejection::new(
                "truncated frame at end of stream",
                buf.len(),
            )));
            buf.clear();
        }
    }

    /// The device this session speaks for, once known.
    fn device_id(&self) -> Option<&DeviceId>;

    /// Encodes a command to [`Session::commands_to`], numbered and framed as this connection
    /// speaks (the caller writes it between replies, never ahead of an owed one).
    /// The device that commands on this connection go to: the one that logged in (JT/T 808:
    /// authenticated), so that a peer naming another device's number cannot draw its commands.
    fn commands_to(&self) -> Option<&DeviceId> {
        self.device_id()
    }

    /// `id` is the command's own number; protocols that carry a correlation field of their
    /// choosing (GT06's server flag) put it there.
    fn encode_command(
        &mut self,
        _id: u64,
        _cmd: &downlink::Downlink,
    ) -> Result<downlink::Encoded, downlink::EncodeError> {
        Err(downlink::EncodeError::Unsupported(
            "this protocol has no downlink",
        ))
    }
}

/// The protocols a listener, an MQTT raw subscription or `decode` can speak.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WireProtocol {
    Gt06,
    Jt808,
    Teltonika,
    TeltonikaUdp,
    H02,
}

impl WireProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "gt06" => WireProtocol::Gt06,
            "jt808" => WireProtocol::Jt808,
            "teltonika" => WireProtocol::Teltonika,
            "teltonika-udp" => WireProtocol::TeltonikaUdp,
            "h02" => WireProtocol::H02,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            WireProtocol::Gt06 => "gt06",
            WireProtocol::Jt808 => "jt808",
            WireProtocol::Teltonika => "teltonika",
            WireProtocol::TeltonikaUdp => "teltonika-udp",
            WireProtocol::H02 => "h02",
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            WireProtocol::Gt06 => Protocol::Gt06,
            WireProtocol::Jt808 => Protocol::Jt808,
            WireProtocol::Teltonika | WireProtocol::TeltonikaUdp => Protocol::Teltonika,
            WireProtocol::H02 => Protocol::H02,
        }
    }

    /// Traccar's default ports, which devices in the field are usually configured for.
    pub fn default_port(self) -> u16 {
        match self {
            WireProtocol::Gt06 => 5023,
            WireProtocol::Jt808 => 5015,
            WireProtocol::Teltonika | WireProtocol::TeltonikaUdp => 5027,
            WireProtocol::H02 => 5013,
        }
    }

    /// A fresh session for one connection.
    pub fn session(self, cfg: SessionConfig) -> Box<dyn Session> {
        match self {
            WireProtocol::Gt06 => Box::new(gt06::Gt06Session::new(cfg)),
            WireProtocol::Jt808 => Box::new(jt808::Jt808Session::new(cfg)),
            WireProtocol::Teltonika => Box::new(teltonika::TeltonikaSession::new(cfg)),
            WireProtocol::TeltonikaUdp => Box::new(teltonika::TeltonikaUdpSession::new(cfg)),
            WireProtocol::H02 => Box::new(h02::H02Session::new(cfg)),
        }
    }
}

/// Drives a session over a complete byte string (for `decode`, replay and tests): feeds it all,
/// then finishes the stream.
pub fn decode_all(session: &mut dyn Session, bytes: &[u8]) -> (Vec<Output>, Option<SessionError>) {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    let err = session.feed(&mut buf, &mut out).err();
    if err.is_none() {
        session.finish(&mut buf, &mut out);
    }
    (out, err)
}

/// Parses hex with optional whitespace, `0x` prefixes and separators (`78 78 0D`, `7878-0d`).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let mut digits = Vec::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            rest = r;
            continue;
        }
        // By character, not byte: a BOM or a pasted non-breaking space is an error, not a
        // slice through the middle of a character.
        let mut chars = rest.chars();
        let Some(c) = chars.next() else { break };
        rest = chars.as_str();
        match c {
            '0'..='9' | 'a'..='f' | 'A'..='F' => digits.push(c as u8),
            ' ' | '\t' | '\n' | '\r' | ':' | '-' | ',' => {}
            _ => return Err(format!("{c:?} is not a hex digit")),
        }
    }
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks(2) {
        let hi = (pair[0] as char).to_digit(16).unwrap_or(0) as u8;
        let lo = (pair[1] as char).to_digit(16).unwrap_or(0) as u8;
        out.push(hi << 4 | lo);
    }
    Ok(out)
}

/// Uppercase hex with spaces between bytes, the form protocols.md and the fixtures use.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = parse_hex("78 78 0d 01\n0x08-68").unwrap();
        assert_eq!(b, vec![0x78, 0x78, 0x0d, 0x01, 0x08, 0x68]);
        assert_eq!(to_hex(&b), "78 78 0D 01 08 68");
        assert!(parse_hex("7").is_err());
        assert!(parse_hex("zz").is_err());
        // Not ASCII: an error, never a slice through a character.
        assert!(parse_hex("\u{feff}78 78").is_err());
        assert!(parse_hex("78\u{a0}78").is_err());
    }

    #[test]
    fn unsupported_reasons_name_the_type_and_are_interned() {
        let a = Rejection::unsupported("gt06", "0x95", &[0x78, 0x78, 0x05, 0x95]);
        let b = Rejection::unsupported("gt06", "0x95", &[0x78; 200]);
        assert_eq!(a.reason, "gt06: unsupported message 0x95");
        assert!(std::ptr::eq(a.reason, b.reason));
        assert_eq!(b.sample.map(|s| s.len()), Some(SAMPLE_MAX));
        assert_eq!(b.bytes, 200);
    }
}
