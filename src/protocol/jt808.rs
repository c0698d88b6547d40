//! JT/T 808 (2011, 2013 and 2019 headers) as a sans-I/O session (protocols.md §B).
//!
//! Layers, each usable on its own (the fuzz target, benches and tests drive them directly):
//! - framing: [`unescape_into`] / [`escape_into`] for the `7D` escaping between `7E` flags (§B.1);
//! - [`parse_frame`]: an unescaped frame to a borrowed [`Header`] and body, after the XOR check
//!   (§B.3) and the body-length check (§B.7); it allocates nothing;
//! - [`parse_location`] / [`alarm_report`]: a 0x0200 body to a normalised [`Fix`] (§B.5, §F.3);
//! - [`Jt808Session`]: admission, authentication, subpackage reassembly and byte-exact replies
//!   (§B.4, CONTRACT.md "What a tracker sees").
//!
//! Platform serial rule: each session keeps its own counter, starting at 0 and incremented before
//! every reply, so the first reply carries serial 1. Read as one session, the worked examples of
//! protocols.md §B.6 (register, auth, heartbeat, location, batch) carry 1, 2, 3, 4, 5 this way.

use super::downlink::{Downlink, EncodeError, Encoded};
use super::jt808_command::{
    encode_locate, encode_track, general_response, location_answer, result_text, QUERY_LOCATION,
    TEMPORARY_TRACKING,
};
use super::jt808_items;
use super::{Output, Rejection, Session, SessionConfig, SessionError};
use crate::event::{
    AlarmReport, Alarms, AnswerKey, CommandAnswer, DeviceId, Event, EventKind, Fix, Position,
    Props, Protocol, Timestamp,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::VecDeque;

/// Frame delimiter.
pub const FLAG: u8 = 0x7E;
/// Escape byte: `7D 01` stands for `7D`, `7D 02` for `7E`.
pub const ESC: u8 = 0x7D;

/// Message ids this module knows (protocols.md §B.4, §B.5).
pub mod msg {
    pub const TERMINAL_RESPONSE: u16 = 0x0001;
    pub const HEARTBEAT: u16 = 0x0002;
    pub const LOGOUT: u16 = 0x0003;
    /// 2019: the terminal asks the platform's time (§B.5), answered by [`TIME_ANSWER`].
    pub const TIME_QUERY: u16 = 0x0004;
    pub const TIME_ANSWER: u16 = 0x8004;
    pub const REGISTER: u16 = 0x0100;
    pub const AUTH: u16 = 0x0102;
    pub const LOCATION: u16 = 0x0200;
    /// Answer to a position query (0x8201): the query's serial, then a 0x0200 body.
    pub const LOCATION_ANSWER: u16 = 0x0201;
    pub const BATCH: u16 = 0x0704;
    pub const PASSTHROUGH: u16 = 0x0900;
    /// Location batch of some vendors: length byte and 0x0200 body per item.
    pub const BATCH_2: u16 = 0x0210;
    /// Vendor location report (Jimi/JT701-style locks and asset trackers): a one-byte serial
    /// and the JT600 binary location block.
    pub const VENDOR_LOCATION: u16 = 0x5501;
    /// The same, sent from the device's blind-area buffer.
    pub const VENDOR_BLIND: u16 = 0x5502;
    /// Platform answer to the vendor reports, when attribute bit 15 asks for one.
    pub const VENDOR_RESPONSE: u16 = 0x4401;
    pub const PLATFORM_RESPONSE: u16 = 0x8001;
    /// Request to send subpackages again (§B.5 "Subpackaging").
    pub const RESEND_PACKAGES: u16 = 0x8003;
    pub const REGISTER_RESPONSE: u16 = 0x8100;
}

/// Most package ids one 0x8003 asks for: its count is a BYTE in 2013 headers (§B.5).
const MAX_RESEND_IDS: usize = 255;

/// Result codes of 0x8001 (§B.4).
pub mod result {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const MESSAGE_ERROR: u8 = 2;
    pub const NOT_SUPPORTED: u8 = 3;
    /// 0x8100 result "terminal already registered": the number is bound to another terminal id.
    pub const TERMINAL_REGISTERED: u8 = 3;
    /// 0x8100 result "no such terminal", used when the admission policy refuses a device.
    pub const NO_SUCH_TERMINAL: u8 = 4;
}

/// Whether [`Jt808Session`] reads messages of this id (anything else is answered "not
/// supported").
fn understood(msg_id: u16) -> bool {
    matches!(
        msg_id,
        msg::REGISTER
            | msg::AUTH
            | msg::LOCATION
            | msg::LOCATION_ANSWER
            | msg::BATCH
            | msg::BATCH_2
            | msg::VENDOR_LOCATION
            | msg::VENDOR_BLIND
            | msg::PASSTHROUGH
            | msg::TERMINAL_RESPONSE
            | msg::HEARTBEAT
            | msg::LOGOUT
            | msg::TIME_QUERY
    )
}

/// Most subpackaged messages reassembled at once per session; the oldest is dropped beyond this.
pub const MAX_REASSEMBLIES: usize = 4;
/// Bytes held for reassembly per session, as a multiple of `max_frame`.
pub const REASSEMBLY_FRAMES: usize = 16;

/// Why a frame could not be parsed. `as_str` gives the static reason used in [`Rejection`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    #[error("0x7D not followed by 0x01 or 0x02")]
    BadEscape,
    #[error("frame shorter than its header")]
    Short,
    #[error("check byte mismatch")]
    Checksum,
    #[error("body length differs from the attributes")]
    BodyLength,
    #[error("encrypted body")]
    Encrypted,
    #[error("bad subpackage numbering")]
    Package,
}

impl FrameError {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameError::BadEscape => "jt808: bad escape",
            FrameError::Short => "jt808: frame too short",
            FrameError::Checksum => "jt808: check byte mismatch",
            FrameError::BodyLength => "jt808: body length mismatch",
            FrameError::Encrypted => "jt808: encrypted body",
            FrameError::Package => "jt808: bad subpackage numbering",
        }
    }
}

/// Why a message body could not be decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body truncated")]
    Truncated,
    #[error("time is not a valid BCD date")]
    BadTime,
    #[error("coordinates are not valid BCD or off the globe")]
    BadCoordinates,
}

impl BodyError {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyError::Truncated => "jt808: body truncated",
            BodyError::BadTime => "jt808: invalid BCD time",
            BodyError::BadCoordinates => "jt808: bad coordinates",
        }
    }
}

/// Subpackage numbers from the header (§B.2): `index` counts from 1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Package {
    pub total: u16,
    pub index: u16,
}

/// A parsed header, borrowing the terminal number from the frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header<'a> {
    pub msg_id: u16,
    pub attrs: u16,
    /// Protocol version byte of a 2019 header; `None` for 2011/2013.
    pub version: Option<u8>,
    /// Raw BCD terminal number: 6 bytes (2011/2013) or 10 (2019). Echoed as is in replies.
    pub terminal: &'a [u8],
    pub serial: u16,
    pub package: Option<Package>,
}

/// An unescaped, checked frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Frame<'a> {
    pub header: Header<'a>,
    pub body: &'a [u8],
}

/// A bounds-checked big-endian reader, so that no device byte can cause a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (a, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
}

/// XOR of every byte: the JT/T 808 check code (§B.3).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// Un-escapes the bytes between two flags into `dst` (cleared first). A `7D` followed by anything
/// but `01`/`02`, or at the very end, is malformed (§B.1).
pub fn unescape_into(src: &[u8], dst: &mut Vec<u8>) -> Result<(), FrameError> {
    unescape(src, dst, false)
}

/// [`unescape_into`], or with `keep_bare` a `7D` followed by anything but `01`/`02` (or at the
/// end) kept as a data byte. Some terminals escape only `7E`: Traccar's test frame for
/// `ALARM_ACCELERATION` carries cell ids with a bare `7D` (`0A 7D A0 03`), and its check byte and
/// declared length add up only when each is a data byte. The caller accepts such a reading only
/// where both do ([`parse_frame`]).
fn unescape(src: &[u8], dst: &mut Vec<u8>, keep_bare: bool) -> Result<(), FrameError> {
    dst.clear();
    dst.reserve(src.len());
    let mut rest = src;
    // Copy escape-free runs in bulk: most frames have no escape at all.
    while let Some(i) = rest.iter().position(|&b| b == ESC) {
        dst.extend_from_slice(&rest[..i]);
        let taken = match rest.get(i + 1) {
            Some(0x01) => {
                dst.push(ESC);
                2
            }
            Some(0x02) => {
                dst.push(FLAG);
                2
            }
            _ if keep_bare => {
                dst.push(ESC);
                1
            }
            _ => return Err(FrameError::BadEscape),
        };
        rest = &rest[(i + taken).min(rest.len())..];
    }
    dst.extend_from_slice(rest);
    Ok(())
}

/// Escapes `src` for the wire (`7E → 7D 02`, `7D → 7D 01`), without the flags.
pub fn escape_into(src: &[u8], dst: &mut impl BufMut) {
    for &b in src {
        match b {
            FLAG => dst.put_slice(&[ESC, 0x02]),
            ESC => dst.put_slice(&[ESC, 0x01]),
            _ => dst.put_u8(b),
        }
    }
}

/// Parses an unescaped frame (flags removed, check byte last) into header and body views.
///
/// Checks the XOR first, then the header for the version found in attribute bit 14, then that
/// the body length in the attributes matches what is there (§B.2, §B.7).
pub fn parse_frame(data: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (&check, content) = data.split_last().ok_or(FrameError::Short)?;
    if checksum(content) != check {
        return Err(FrameError::Checksum);
    }
    let mut r = Reader(content);
    let msg_id = r.u16().ok_or(FrameError::Short)?;
    let attrs = r.u16().ok_or(FrameError::Short)?;
    let (version, terminal) = if attrs & 0x4000 != 0 {
        let v = r.u8().ok_or(FrameError::Short)?;
        (Some(v), r.take(10).ok_or(FrameError::Short)?)
    } else {
        (None, r.take(6).ok_or(FrameError::Short)?)
    };
    // The vendor reports and their answer keep a one-byte serial and use attribute bits 10..15
    // for their own flags (bit 15: answer requested), so neither packaging nor encryption applies.
    let vendor = matches!(
        msg_id,
        msg::VENDOR_LOCATION | msg::VENDOR_BLIND | msg::VENDOR_RESPONSE
    );
    let serial = if vendor {
        u16::from(r.u8().ok_or(FrameError::Short)?)
    } else {
        r.u16().ok_or(FrameError::Short)?
    };
    let package = if !vendor && attrs & 0x2000 != 0 {
        let total = r.u16().ok_or(FrameError::Short)?;
        let index = r.u16().ok_or(FrameError::Short)?;
        if total == 0 || index == 0 || index > total {
            return Err(FrameError::Package);
        }
        Some(Package { total, index })
    } else {
        None
    };
    if !vendor && attrs & 0x1C00 != 0 {
        return Err(FrameError::Encrypted);
    }
    let body = r.0;
    if body.len() != usize::from(attrs & 0x03FF) {
        return Err(FrameError::BodyLength);
    }
    Ok(Frame {
        header: Header {
            msg_id,
            attrs,
            version,
            terminal,
            serial,
            package,
        },
        body,
    })
}

/// A frame in the vendor form of 0x5501 / 0x5502: 2013 header with a one-byte serial.
pub fn encode_vendor_frame(msg_id: u16, terminal: &[u8], serial: u8, body: &[u8]) -> Bytes {
    let mut raw = Vec::with_capacity(12 + body.len());
    raw.extend_from_slice(&msg_id.to_be_bytes());
    raw.extend_from_slice(&((body.len().min(0x3FF)) as u16).to_be_bytes());
    raw.extend_from_slice(terminal);
    raw.push(serial);
    raw.extend_from_slice(body.get(..0x3FF).unwrap_or(body));
    raw.push(checksum(&raw));
    let mut out = BytesMut::with_capacity(raw.len() * 2 + 2);
    out.put_u8(FLAG);
    escape_into(&raw, &mut out);
    out.put_u8(FLAG);
    out.freeze()
}

/// Builds a complete escaped frame, flags included. The header mirrors `version` (2019 when
/// `Some`) and echoes `terminal` as given; bodies over 1023 bytes cannot be expressed and are cut.
pub fn encode_frame(
    msg_id: u16,
    version: Option<u8>,
    terminal: &[u8],
    serial: u16,
    body: &[u8],
) -> Bytes {
    let body = &body[..body.len().min(0x03FF)];
    let mut raw = Vec::with_capacity(17 + body.len() + 1);
    raw.extend_from_slice(&msg_id.to_be_bytes());
    let mut attrs = body.len() as u16;
    if version.is_some() {
        attrs |= 0x4000;
    }
    raw.extend_from_slice(&attrs.to_be_bytes());
    if let Some(v) = version {
        raw.push(v);
    }
    raw.extend_from_slice(terminal);
    raw.extend_from_slice(&serial.to_be_bytes());
    raw.extend_from_slice(body);
    raw.push(checksum(&raw));
    let mut out = BytesMut::with_capacity(raw.len() * 2 + 2);
    out.put_u8(FLAG);
    escape_into(&raw, &mut out);
    out.put_u8(FLAG);
    out.freeze()
}

/// The authentication code lienwatch hands out in 0x8100 and expects back in 0x0102: the first
/// 16 uppercase hex characters of HMAC-SHA256(key, terminal digits).
///
/// Derived rather than stored, so that any lienwatch instance sharing the key verifies any
/// terminal without a lookup table; the digits are the normalised id, so a terminal keeps its
/// code whether it pads its number to 12 (2013) or 20 (2019) digits.
pub fn auth_code(key: &[u8], terminal: &DeviceId) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key");
    mac.update(terminal.as_str().as_bytes());
    let digest = mac.finalize().into_bytes();
    hex::encode_upper(&digest[..8])
}

/// Compares without an early exit, so response timing does not leak how much of a code matched.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The terminal id of a 0x0100 body (§B.5): after province, city, maker and model, 7 bytes in
/// 2011/2013 (maker 5, model 8 in 2011 or 20 in 2013) and 30 in 2019 (maker 11, model 30); NULs
/// and spaces trimmed. The 2011 and 2013 layouts are told apart by length (a 2013 body holds at
/// least 37 bytes before the plate).
pub fn registration_terminal_id(body: &[u8], v2019: bool) -> String {
    let range = if v2019 {
        45..75
    } else if body.len() >= 37 {
        29..36
    } else {
        17..24
    };
    let raw = body.get(range).unwrap_or(&[]);
    let end = raw
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |i| i + 1);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The auth code a 0x0102 body carries: 2013 sends the whole body (§B.5); 2019 sends a length
/// byte first. Both readings are tried for a 2019 header, because firmware in the field mixes
/// them up; trailing NUL padding is ignored.
fn auth_candidates(body: &[u8], v2019: bool) -> [Option<&[u8]>; 2] {
    let prefixed = if v2019 {
        body.split_first()
            .and_then(|(&n, rest)| rest.get(..usize::from(n)))
            .map(trim)
    } else {
        None
    };
    [prefixed, Some(trim(body))]
}

/// Drops trailing NUL padding.
fn trim(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &s[..end]
}

fn bcd2(b: u8) -> Option<u8> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

/// `t` as BCD `YYMMDDhhmmss` in UTC (0x8004); years past 2099 are not representable and are
/// clamped to 99.
fn utc_bcd(t: Timestamp) -> [u8; 6] {
    let ms = t.millis();
    let days = ms.div_euclid(86_400_000);
    let secs = ms.rem_euclid(86_400_000) / 1000;
    let (y, mo, d) = crate::time::civil_from_days(days);
    let bcd = |v: i64| {
        let v = v.clamp(0, 99) as u8;
        ((v / 10) << 4) | (v % 10)
    };
    [
        bcd(y - 2000),
        bcd(i64::from(mo)),
        bcd(i64::from(d)),
        bcd(secs / 3600),
        bcd(secs % 3600 / 60),
        bcd(secs % 60),
    ]
}

/// BCD `YYMMDDhhmmss` in the device's zone to UTC; `None` for a non-BCD nibble or an impossible
/// date. `utc_offset_s` is the zone of the device clock (GMT+8 by default, §F.2).
pub fn parse_bcd_time(b: [u8; 6], utc_offset_s: i32) -> Option<Timestamp> {
    let [y, mo, d, h, mi, s] = b.map(bcd2);
    let t = Timestamp::from_civil(2000 + i32::from(y?), mo?, d?, h?, mi?, s?)?;
    Some(t.add_millis(-i64::from(utc_offset_s) * 1000))
}

/// Alarm DWORD and status DWORD to the normalised conditions (§B.5, §F.3).
///
/// Every mapped condition is `known`: JT/T 808 sends the whole word in every report, so a clear
/// bit means the condition ended. Bits 15–17 are vendor reuse (G10LS) of bits the 2013 standard
/// reserves.
pub fn alarm_report(alarm: u32, status: u32) -> AlarmReport {
    let bit = |w: u32, n: u32| w & (1 << n) != 0;
    AlarmReport::NONE
        .with(Alarms::SOS, bit(alarm, 0))
        .with(Alarms::OVERSPEED, bit(alarm, 1))
        .with(Alarms::TAMPER, bit(alarm, 5) || bit(alarm, 17))
        .with(Alarms::LOW_POWER, bit(alarm, 7))
        .with(Alarms::POWER_CUT, bit(alarm, 8))
        .with(Alarms::LOW_BATTERY, bit(alarm, 15))
        .with(Alarms::VIBRATION, bit(alarm, 16))
        .with(Alarms::DEVICE_GEOFENCE, bit(alarm, 20))
        .with(Alarms::TOW, bit(alarm, 28))
        .with(Alarms::IMMOBILISED, bit(status, 10) || bit(status, 11))
}

/// The alarm and status words at the head of a 0x0200 body whose fix cannot be read (§B.5):
/// they stand on their own, so a power cut in a report with a clock of zeros still counts.
fn head_alarms(body: &[u8]) -> AlarmReport {
    let mut r = Reader(body);
    match (r.u32(), r.u32()) {
        (Some(alarm), Some(status)) => alarm_report(alarm, status),
        _ => AlarmReport::NONE,
    }
}

/// Decodes a 0x0200 body (also the items of 0x0704 and 0x0201's tail): the 28-byte basic block,
/// then additional items until the body ends (`jt808_items`). Unknown items are skipped; a
/// truncated item list ends the walk without failing the fix (the basic block is complete).
pub fn parse_location(body: &[u8], utc_offset_s: i32) -> Result<Fix, BodyError> {
    location(body, utc_offset_s, None)
}

/// A 0x0200 whose clock cannot be read (zeros: a terminal with no fix since it started) but that
/// carries a cell or Wi-Fi list: those are the only place such a unit can give, in a garage or
/// after a cold start. An invalid fix stamped `now`, or `None` without a list.
pub fn cell_report(body: &[u8], now: Timestamp) -> Option<Fix> {
    // A date of zeros only (a clock reset since the start ticks its time from zero): a clock
    // garbled otherwise is a damaged report, answered "message error" so that the terminal
    // sends it again.
    if body.get(22..25)? != [0u8; 3] {
        return None;
    }
    let fix = location(body, 0, Some(now)).ok()?;
    (fix.position.cell.is_some() || fix.position.wifi.is_some()).then_some(fix)
}

/// [`parse_location`]; with `bad_time`, a clock that cannot be read is that time and the fix is
/// invalid.
fn location(body: &[u8], utc_offset_s: i32, bad_time: Option<Timestamp>) -> Result<Fix, BodyError> {
    let mut r = Reader(body);
    let alarm = r.u32().ok_or(BodyError::Truncated)?;
    let status = r.u32().ok_or(BodyError::Truncated)?;
    let lat_raw = r.u32().ok_or(BodyError::Truncated)?;
    let lon_raw = r.u32().ok_or(BodyError::Truncated)?;
    let altitude = r.u16().ok_or(BodyError::Truncated)?;
    let speed = r.u16().ok_or(BodyError::Truncated)?;
    let course = r.u16().ok_or(BodyError::Truncated)?;
    let time = r.array::<6>().ok_or(BodyError::Truncated)?;
    let (time, readable) = match (parse_bcd_time(time, utc_offset_s), bad_time) {
        (Some(t), _) => (t, true),
        (None, Some(t)) => (t, false),
        (None, None) => return Err(BodyError::BadTime),
    };
    let mut lat = f64::from(lat_raw) / 1e6;
    let mut lon = f64::from(lon_raw) / 1e6;
    if status & (1 << 2) != 0 {
        lat = -lat;
    }
    if status & (1 << 3) != 0 {
        lon = -lon;
    }
    let mut position = Position {
        time,
        lat,
        lon,
        valid: readable && status & (1 << 1) != 0,
        speed_kmh: f64::from(speed) / 10.0,
        course,
        altitude_m: Some(f64::from(altitude)),
        ..Position::default()
    };
    let mut props = Props::default();
    jt808_items::read_items(r.0, &mut position, &mut props);
    Ok(Fix {
        position,
        alarms: alarm_report(alarm, status),
        buffered: false,
        props,
    })
}

/// A 6-byte terminal number that is not BCD: some vendors pack the first 14 digits of the IMEI
/// as a 48-bit integer there. The id is those digits and the IMEI's Luhn check digit.
fn packed_imei(raw: &[u8]) -> Option<DeviceId> {
    let b: [u8; 6] = raw.try_into().ok()?;
    let mut v = 0u64;
    for x in b {
        v = v << 8 | u64::from(x);
    }
    let digits = v.to_string();
    Some(DeviceId::new(&format!("{digits}{}", luhn(&digits))))
}

/// The Luhn check digit of a string of decimal digits.
fn luhn(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// BCD digits to an integer; `None` for a nibble over 9.
fn bcd_int(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |acc, &x| {
        let (hi, lo) = (x >> 4, x & 0x0F);
        (hi <= 9 && lo <= 9).then(|| acc * 100 + u64::from(hi) * 10 + u64::from(lo))
    })
}

/// Body of the vendor reports 0x5501 / 0x5502: the JT600 binary location (BCD `DDMMYYhhmmss`
/// UTC, latitude `DDMMmmmm` and longitude `DDDMMmmmm` in BCD sharing a nibble with the flags:
/// bit 0 valid, bit 1 north, bit 2 east; BCD speed in km/h; course in 2° units), then RSSI,
/// satellites, odometer, battery, cell, product, status and alarm words.
pub fn parse_vendor_location(body: &[u8]) -> Result<Fix, BodyError> {
    let mut r = Reader(body);
    let t = r.array::<6>().ok_or(BodyError::Truncated)?;
    let [d, mo, y, h, mi, se] = t.map(bcd2);
    let time = Timestamp::from_civil(
        2000 + i32::from(y.ok_or(BodyError::BadTime)?),
        mo.ok_or(BodyError::BadTime)?,
        d.ok_or(BodyError::BadTime)?,
        h.ok_or(BodyError::BadTime)?,
        mi.ok_or(BodyError::BadTime)?,
        se.ok_or(BodyError::BadTime)?,
    )
    .ok_or(BodyError::BadTime)?;
    let coords = r.take(9).ok_or(BodyError::Truncated)?;
    let lat_raw = bcd_int(&coords[..4]).ok_or(BodyError::BadCoordinates)?;
    // Longitude: 9 digits, the last nibble of the 5th byte is the flags.
    let lon_raw = bcd_int(&coords[4..8])
        .zip(bcd2(coords[8] & 0xF0))
        .map(|(v, last)| v * 10 + u64::from(last) / 10)
        .ok_or(BodyError::BadCoordinates)?;
    let flags = coords[8] & 0x0F;
    let to_deg = |raw: u64| (raw / 1_000_000) as f64 + (raw % 1_000_000) as f64 / 10_000.0 / 60.0;
    let mut lat = to_deg(lat_raw);
    let mut lon = to_deg(lon_raw);
    if lat > 90.0 || lon > 180.0 {
        return Err(BodyError::BadCoordinates);
    }
    if flags & 0b010 == 0 {
        lat = -lat;
    }
    if flags & 0b100 == 0 {
        lon = -lon;
    }
    let speed = r.take(1).and_then(bcd_int).ok_or(BodyError::Truncated)?;
    let course = u16::from(r.u8().ok_or(BodyError::Truncated)?) * 2;
    let _rssi = r.u8();
    let satellites = r.u8();
    let mut alarms = AlarmReport::NONE;
    // Odometer (4), battery (1), cell id (4), LAC (2), then product, status and alarm words.
    if r.take(11).is_some() {
        if let (Some(product), Some(status), Some(alarm)) = (r.u8(), r.u16(), r.u16()) {
            let bit = |n: u16| alarm & (1 << n) != 0;
            alarms = match product {
                1 | 2 => AlarmReport::NONE.with(Alarms::LOW_POWER, bit(0)),
                3 => AlarmReport::NONE
                    .with(Alarms::OVERSPEED, bit(0))
                    .with(Alarms::LOW_POWER, bit(1))
                    .with(Alarms::VIBRATION, bit(2))
                    .with(Alarms::LOW_BATTERY, bit(3))
                    .with(Alarms::IMMOBILISED, status & (1 << 5) != 0),
                _ => AlarmReport::NONE,
            };
        }
    }
    Ok(Fix {
        position: Position {
            time,
            lat,
            lon,
            valid: flags & 1 != 0,
            speed_kmh: speed as f64,
            course: course % 360,
            satellites,
            ..Position::default()
        },
        alarms,
        buffered: false,
        props: Default::default(),
    })
}

/// 0x0900 transparent data of type 0xF0 (OBD boxes): BCD time in the device zone, archive flag,
/// vehicle type, sub-type, then for sub-types 0x01 (data items, 2-byte ids) and 0x03 (events,
/// 1-byte ids) the items and the status / latitude / longitude words of 0x0200. `None` when the
/// data carries no location.
pub fn parse_transparent_location(body: &[u8], utc_offset_s: i32) -> Option<Fix> {
    let mut r = Reader(body);
    if r.u8()? != 0xF0 {
        return None;
    }
    let time = parse_bcd_time(r.array::<6>()?, utc_offset_s)?;
    let archived = r.u8()? != 0;
    let _vehicle = r.u8()?;
    let id_len = match r.u8()? {
        0x01 => 2,
        0x03 => 1,
        _ => return None,
    };
    let count = r.u8()?;
    for _ in 0..count {
        r.take(id_len)?;
        let len = r.u8()?;
        r.take(usize::from(len))?;
    }
    let status = r.u32()?;
    let mut lat = f64::from(r.u32()?) / 1e6;
    let mut lon = f64::from(r.u32()?) / 1e6;
    if status & (1 << 2) != 0 {
        lat = -lat;
    }
    if status & (1 << 3) != 0 {
        lon = -lon;
    }
    if lat.abs() > 90.0 || lon.abs() > 180.0 {
        return None;
    }
    Some(Fix {
        position: Position {
            time,
            lat,
            lon,
            valid: status & (1 << 1) != 0,
            ..Position::default()
        },
        alarms: AlarmReport::NONE,
        buffered: archived,
        props: Default::default(),
    })
}

/// The terminal this session last saw, with its normalised id and admission verdict, so that a
/// steady stream of frames neither allocates ids nor re-asks the admission policy.
struct Terminal {
    raw: [u8; 10],
    len: usize,
    id: DeviceId,
    admitted: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct PartialKey {
    terminal: [u8; 10],
    terminal_len: usize,
    msg_id: u16,
    total: u16,
    first_serial: u16,
}

struct Partial {
    key: PartialKey,
    /// Received packages sorted by index; a `Vec` so that a huge declared total costs nothing.
    parts: Vec<(u16, Vec<u8>)>,
    bytes: usize,
}

/// What a stored package costs beyond its bytes (its index and its vector), counted against the
/// budget so that empty packages cannot pile up without limit.
const PART_OVERHEAD: usize = std::mem::size_of::<(u16, Vec<u8>)>();

/// Subpackage reassembly (§B.5 "Subpackaging"), bounded in messages and in bytes.
struct Reassembler {
    partials: VecDeque<Partial>,
    bytes: usize,
    max_bytes: usize,
}

impl Reassembler {
    fn evict_oldest(&mut self, out: &mut Vec<Output>) {
        if let Some(p) = self.partials.pop_front() {
            self.bytes -= p.bytes;
            out.push(reject("jt808: subpackage reassembly dropped", p.bytes));
        }
    }

    /// The package indices of `key`'s message not received yet, lowest first, at most `max`.
    fn missing(&self, key: &PartialKey, max: usize) -> Vec<u16> {
        let Some(p) = self.partials.iter().find(|p| p.key == *key) else {
            return Vec::new();
        };
        let mut have = p.parts.iter().map(|(i, _)| *i).peekable();
        let mut out = Vec::new();
        for i in 1..=key.total {
            if have.peek() == Some(&i) {
                have.next();
            } else {
                out.push(i);
                if out.len() == max {
                    break;
                }
            }
        }
        out
    }

    /// Stores one package; returns the whole body once the last missing package arrives.
    fn add(
        &mut self,
        key: PartialKey,
        index: u16,
        data: &[u8],
        out: &mut Vec<Output>,
    ) -> Option<Vec<u8>> {
        let pos = match self.partials.iter().position(|p| p.key == key) {
            Some(i) => i,
            None => {
                while self.partials.len() >= MAX_REASSEMBLIES {
                    self.evict_oldest(out);
                }
                self.partials.push_back(Partial {
                    key,
                    parts: Vec::new(),
                    bytes: 0,
                });
                self.partials.len() - 1
            }
        };
        let p = self.partials.get_mut(pos)?;
        let cost = data.len() + PART_OVERHEAD;
        match p.parts.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(j) => {
                // A resent package (its ack was lost): keep the newest copy.
                let old = std::mem::replace(&mut p.parts[j].1, data.to_vec());
                p.bytes -= old.len() + PART_OVERHEAD;
                self.bytes -= old.len() + PART_OVERHEAD;
            }
            Err(j) => p.parts.insert(j, (index, data.to_vec())),
        }
        p.bytes += cost;
        self.bytes += cost;
        if p.parts.len() == usize::from(key.total) {
            let done = self.partials.remove(pos)?;
            self.bytes -= done.bytes;
            let mut body = Vec::with_capacity(done.bytes);
            for (_, part) in done.parts {
                body.extend_from_slice(&part);
            }
            return Some(body);
        }
        while self.bytes > self.max_bytes {
            self.evict_oldest(out);
        }
        None
    }
}

fn reject(reason: &'static str, bytes: usize) -> Output {
    Output::Rejected(Rejection::new(reason, bytes))
}

/// One JT/T 808 connection.
pub struct Jt808Session {
    cfg: SessionConfig,
    terminal: Option<Terminal>,
    /// The terminal that authenticated on this connection (`require_auth`).
    authenticated: Option<DeviceId>,
    /// The authenticated terminal's number as it sends it, for commands: the cached `terminal`
    /// follows every frame, a refused one from another number included.
    authenticated_raw: Option<([u8; 10], usize)>,
    /// Serial of the last reply sent; see the module docs for the rule.
    serial: u16,
    /// Header version of the last accepted frame, mirrored in commands (2019 when `Some`).
    version: Option<u8>,
    /// Reused buffer for un-escaping, so steady-state framing does not allocate.
    scratch: Vec<u8>,
    /// Bytes of a partial frame already searched for its closing flag, so a frame arriving a
    /// byte at a time is scanned once, not once per read.
    scanned: usize,
    reassembly: Reassembler,
}

impl Jt808Session {
    pub fn new(cfg: SessionConfig) -> Self {
        let max_bytes = cfg.max_frame.saturating_mul(REASSEMBLY_FRAMES);
        Jt808Session {
            cfg,
            terminal: None,
            authenticated: None,
            authenticated_raw: None,
            serial: 0,
            version: None,
            scratch: Vec::new(),
            scanned: 1,
            reassembly: Reassembler {
                partials: VecDeque::new(),
                bytes: 0,
                max_bytes,
            },
        }
    }

    fn utc_offset_s(&self) -> i32 {
        self.cfg.utc_offset_s.unwrap_or(8 * 3600)
    }

    /// Handles the bytes between two flags (escaped, non-empty).
    fn frame(&mut self, raw: &[u8], out: &mut Vec<Output>) -> Result<(), SessionError> {
        let wire_len = raw.len() + 2;
        if raw.len() > self.cfg.max_frame {
            out.push(reject("jt808: frame over max_frame", wire_len));
            return Ok(());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let data: Result<&[u8], FrameError> = if raw.contains(&ESC) {
            match unescape_into(raw, &mut scratch) {
                Ok(()) => Ok(scratch.as_slice()),
                // A bare `7D` from a terminal that escapes only `7E`: taken as data when the
                // check byte and the declared length then hold.
                Err(FrameError::BadEscape)
                    if unescape(raw, &mut scratch, true).is_ok()
                        && parse_frame(&scratch).is_ok() =>
                {
                    Ok(scratch.as_slice())
                }
                Err(e) => Err(e),
            }
        } else {
            Ok(raw)
        };
        let res = match data.and_then(parse_frame) {
            Ok(frame) => self.handle(frame, wire_len, out),
            Err(e) => {
                out.push(reject(e.as_str(), wire_len));
                Ok(())
            }
        };
        self.scratch = scratch;
        res
    }

    /// The cached id and admission verdict for `raw`, refreshed only when the terminal changes.
    fn terminal(&mut self, raw: &[u8]) -> Option<(DeviceId, bool)> {
        if let Some(t) = &self.terminal {
            if t.raw.get(..t.len) == Some(raw) {
                return Some((t.id.clone(), t.admitted));
            }
        }
        let id = DeviceId::from_bcd(raw).or_else(|| packed_imei(raw))?;
        let admitted = self.cfg.admits(&id);
        let mut buf = [0u8; 10];
        let len = raw.len().min(10);
        buf[..len].copy_from_slice(&raw[..len]);
        self.terminal = Some(Terminal {
            raw: buf,
            len,
            id: id.clone(),
            admitted,
        });
        Some((id, admitted))
    }

    fn handle(
        &mut self,
        frame: Frame<'_>,
        wire_len: usize,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        let h = frame.header;
        let Some((id, admitted)) = self.terminal(h.terminal) else {
            out.push(reject("jt808: terminal number is not BCD", wire_len));
            return Ok(());
        };
        // A frame for another terminal on a connection that authenticated is that frame's
        // fault, refused alone, whether or not its number is one the admission policy knows:
        // the authenticated terminal keeps its session.
        if self.cfg.require_auth && self.authenticated.as_ref().is_some_and(|a| *a != id) {
            out.push(reject(
                "jt808: frame for another terminal than the authenticated one",
                wire_len,
            ));
            self.ack(&h, result::FAILURE, out);
            return Ok(());
        }
        if !admitted {
            match h.msg_id {
                msg::REGISTER => {
                    let mut body = [0u8; 3];
                    body[..2].copy_from_slice(&h.serial.to_be_bytes());
                    body[2] = result::NO_SUCH_TERMINAL;
                    self.reply(&h, msg::REGISTER_RESPONSE, &body, out);
                }
                msg::AUTH => self.ack(&h, result::FAILURE, out),
                _ => out.push(reject("jt808: device refused", wire_len)),
            }
            return Err(SessionError::Refused(id.to_string()));
        }
        if self.cfg.require_auth {
            // CONTRACT.md "Trust at the edges": anyone who knows a terminal number could
            // otherwise move a car on the map.
            let refusal = match &self.authenticated {
                Some(_) => None,
                // Unpackaged: before authentication nothing may hold reassembly memory.
                None if h.package.is_none_or(|p| p.total <= 1)
                    && matches!(
                        h.msg_id,
                        msg::REGISTER | msg::AUTH | msg::HEARTBEAT | msg::TIME_QUERY
                    ) =>
                {
                    None
                }
                None => Some("jt808: message before authentication"),
            };
            if let Some(reason) = refusal {
                out.push(reject(reason, wire_len));
                self.ack(&h, result::FAILURE, out);
                return Ok(());
            }
        }
        self.version = h.version;
        match h.package {
            // A message lienwatch does not read (a G10LS voice recording, 0x0801, comes in
            // packages of 1000 bytes) is not held for reassembly: each package is answered
            // "not supported" at once, as the whole would be.
            Some(p) if p.total > 1 && understood(h.msg_id) => {
                let mut terminal = [0u8; 10];
                let terminal_len = h.terminal.len().min(10);
                terminal[..terminal_len].copy_from_slice(&h.terminal[..terminal_len]);
                let key = PartialKey {
                    terminal,
                    terminal_len,
                    msg_id: h.msg_id,
                    total: p.total,
                    first_serial: h.serial.wrapping_sub(p.index - 1),
                };
                match self.reassembly.add(key, p.index, frame.body, out) {
                    Some(body) => self.dispatch(&h, &body, &id, out),
                    // The last package, and some before it are missing: acknowledged on a
                    // connection that ended (or before a restart), they were never stored. Ask
                    // for them again (§B.5, 0x8003) instead of acknowledging a message that
                    // cannot be whole.
                    None if p.index == p.total => {
                        let missing = self.reassembly.missing(&key, MAX_RESEND_IDS);
                        let mut body = Vec::with_capacity(4 + 2 * missing.len());
                        body.extend_from_slice(&key.first_serial.to_be_bytes());
                        // At most 255: fits the BYTE of 2013 and the WORD of 2019.
                        let n = missing.len() as u16;
                        if h.version.is_some() {
                            body.extend_from_slice(&n.to_be_bytes());
                        } else {
                            body.push(n as u8);
                        }
                        for i in missing {
                            body.extend_from_slice(&i.to_be_bytes());
                        }
                        self.reply(&h, msg::RESEND_PACKAGES, &body, out);
                    }
                    None => self.ack(&h, result::OK, out),
                }
            }
            _ => self.dispatch(&h, frame.body, &id, out),
        }
        Ok(())
    }

    fn event(&self, id: &DeviceId, kind: EventKind) -> Output {
        Output::Event(Event {
            device_id: id.clone(),
            protocol: Protocol::Jt808,
            kind,
        })
    }

    fn heartbeat(&self, id: &DeviceId) -> Output {
        self.event(
            id,
            EventKind::Heartbeat {
                alarms: AlarmReport::NONE,
            },
        )
    }

    /// One complete message (reassembled if it was subpackaged): its events, then its reply.
    fn dispatch(&mut self, h: &Header<'_>, body: &[u8], id: &DeviceId, out: &mut Vec<Output>) {
        match h.msg_id {
            msg::REGISTER => {
                let terminal_id = registration_terminal_id(body, h.version.is_some());
                if !(self.cfg.bind_terminal)(id, &terminal_id) {
                    out.push(reject(
                        "jt808: registration with another terminal id than the bound one",
                        body.len(),
                    ));
                    let mut reply = [0u8; 3];
                    reply[..2].copy_from_slice(&h.serial.to_be_bytes());
                    reply[2] = result::TERMINAL_REGISTERED;
                    self.reply(h, msg::REGISTER_RESPONSE, &reply, out);
                    return;
                }
                out.push(self.event(id, EventKind::Registered));
                let code = auth_code(&self.cfg.auth_key, id);
                let mut reply = Vec::with_capacity(3 + code.len());
                reply.extend_from_slice(&h.serial.to_be_bytes());
                reply.push(result::OK);
                reply.extend_from_slice(code.as_bytes());
                self.reply(h, msg::REGISTER_RESPONSE, &reply, out);
            }
            msg::AUTH => {
                // Sessionless (`decode`, MQTT raw payloads) there is no key the code was given
                // under, nor a connection to hold: the message reads as the login it is.
                let want = auth_code(&self.cfg.auth_key, id);
                let ok = self.cfg.sessionless
                    || auth_candidates(body, h.version.is_some())
                        .into_iter()
                        .flatten()
                        .any(|c| ct_eq(c, want.as_bytes()));
                if ok {
                    self.authenticated = Some(id.clone());
                    self.authenticated_raw = self.terminal.as_ref().map(|t| (t.raw, t.len));
                    out.push(self.event(id, EventKind::Login));
                    self.ack(h, result::OK, out);
                } else {
                    out.push(reject("jt808: wrong auth code", body.len()));
                    self.ack(h, result::FAILURE, out);
                }
            }
            msg::LOCATION => match parse_location(body, self.utc_offset_s()).or_else(|e| {
                // A clock of zeros with a cell or Wi-Fi list: kept, as the only place it gives.
                match e {
                    BodyError::BadTime => cell_report(body, (self.cfg.clock)()).ok_or(e),
                    e => Err(e),
                }
            }) {
                Ok(fix) => {
                    out.push(self.event(id, EventKind::Position(fix)));
                    self.ack(h, result::OK, out);
                }
                Err(e) => {
                    // Unreadable (a clock of zeros), but the device is talking: a sign of life,
                    // so that it does not look silent, with the alarms its words still give.
                    out.push(reject(e.as_str(), body.len()));
                    let alarms = head_alarms(body);
                    out.push(self.event(id, EventKind::Heartbeat { alarms }));
                    self.ack(h, result::MESSAGE_ERROR, out);
                }
            },
            msg::LOCATION_ANSWER => {
                // A fix like any other, and the answer to the 0x8201 whose serial it names.
                let read = match location_answer(body) {
                    Some((serial, b)) => {
                        let fix = parse_location(b, self.utc_offset_s());
                        if let Err(e) = &fix {
                            out.push(reject(e.as_str(), body.len()));
                            out.push(self.event(
                                id,
                                EventKind::Heartbeat {
                                    alarms: head_alarms(b),
                                },
                            ));
                        }
                        // A terminal with no fix since it started sends a clock of zeros: it
                        // did answer, so the locate is answered, without a position. A body
                        // cut short answers nothing: the locate goes out again.
                        let answer = match &fix {
                            Ok(f) => Some((None, Some(f.position))),
                            Err(e @ BodyError::BadTime) => {
                                Some((Some(format!("no readable position: {}", e.as_str())), None))
                            }
                            Err(_) => None,
                        };
                        let read = fix.is_ok();
                        if let Ok(fix) = fix {
                            out.push(self.event(id, EventKind::Position(fix)));
                        }
                        if let Some((text, position)) = answer {
                            out.push(self.event(
                                id,
                                EventKind::CommandAnswer(CommandAnswer {
                                    key: AnswerKey::Reply {
                                        serial,
                                        msg_id: QUERY_LOCATION,
                                    },
                                    ok: true,
                                    text,
                                    position,
                                }),
                            ));
                        }
                        read
                    }
                    None => {
                        out.push(reject(BodyError::Truncated.as_str(), body.len()));
                        out.push(self.heartbeat(id));
                        false
                    }
                };
                let code = if read {
                    result::OK
                } else {
                    result::MESSAGE_ERROR
                };
                self.ack(h, code, out);
            }
            msg::BATCH => self.batch(h, body, id, out),
            msg::BATCH_2 => self.batch_2(h, body, id, out),
            msg::VENDOR_LOCATION | msg::VENDOR_BLIND => {
                match parse_vendor_location(body) {
                    Ok(mut fix) => {
                        fix.buffered = h.msg_id == msg::VENDOR_BLIND;
                        out.push(self.event(id, EventKind::Position(fix)));
                    }
                    Err(e) => {
                        out.push(reject(e.as_str(), body.len()));
                        out.push(self.heartbeat(id));
                    }
                }
                if h.attrs & 0x8000 != 0 {
                    let mut reply = [0u8; 3];
                    reply[..2].copy_from_slice(&h.msg_id.to_be_bytes());
                    reply[2] = result::OK;
                    self.serial = self.serial.wrapping_add(1);
                    out.push(Output::Reply(encode_vendor_frame(
                        msg::VENDOR_RESPONSE,
                        h.terminal,
                        self.serial as u8,
                        &reply,
                    )));
                }
            }
            msg::PASSTHROUGH => {
                match parse_transparent_location(body, self.utc_offset_s()) {
                    Some(fix) => out.push(self.event(id, EventKind::Position(fix))),
                    None => out.push(self.heartbeat(id)),
                }
                self.ack(h, result::OK, out);
            }
            msg::TERMINAL_RESPONSE => match general_response(body) {
                // A terminal that also acknowledges a 0x8201 with a general response: only its
                // 0x0201 carries the position the locate asked for, so a success waits for it.
                Some(r) if r.msg_id == QUERY_LOCATION && r.result == result::OK => {
                    out.push(self.heartbeat(id))
                }
                Some(r) => out.push(self.event(
                    id,
                    EventKind::CommandAnswer(CommandAnswer {
                        key: AnswerKey::Reply {
                            serial: r.serial,
                            msg_id: r.msg_id,
                        },
                        ok: r.result == result::OK,
                        text: Some(result_text(r.result).to_string()),
                        position: None,
                    }),
                )),
                None => out.push(self.heartbeat(id)),
            },
            msg::HEARTBEAT | msg::LOGOUT => {
                // Answered before authentication too (CONTRACT.md "Trust at the edges"), but only
                // an authenticated terminal's heartbeat is its sign of life: anyone who knows a
                // terminal number could otherwise keep a silent car from alerting.
                if !self.cfg.require_auth || self.authenticated.is_some() {
                    out.push(self.heartbeat(id));
                }
                self.ack(h, result::OK, out);
            }
            msg::TIME_QUERY => {
                // A terminal without a GNSS time sets its clock from the answer: UTC as BCD
                // YYMMDDhhmmss (2019, 0x8004). Its fixes are stamped with that clock.
                if !self.cfg.require_auth || self.authenticated.is_some() {
                    out.push(self.heartbeat(id));
                }
                let body = utc_bcd((self.cfg.clock)());
                self.reply(h, msg::TIME_ANSWER, &body, out);
            }
            _ => {
                // Still a sign of life for the silence rule (§F.2: last packet of any kind), and
                // counted by type so that an operator sees what the fleet sends.
                out.push(self.heartbeat(id));
                out.push(Output::Rejected(Rejection::unsupported(
                    "jt808",
                    &format!("0x{:04X}", h.msg_id),
                    body,
                )));
                self.ack(h, result::NOT_SUPPORTED, out);
            }
        }
    }

    /// 0x0704: count, type (1 = blind-area back-fill), then length-prefixed 0x0200 bodies.
    /// A bad item is skipped (resending it would not help); a batch whose structure is cut short
    /// keeps the items before the cut and is answered "message error" so the device resends.
    fn batch(&mut self, h: &Header<'_>, body: &[u8], id: &DeviceId, out: &mut Vec<Output>) {
        let mut r = Reader(body);
        let (Some(count), Some(kind)) = (r.u16(), r.u8()) else {
            out.push(reject(BodyError::Truncated.as_str(), body.len()));
            self.ack(h, result::MESSAGE_ERROR, out);
            return;
        };
        let offset = self.utc_offset_s();
        let mut complete = true;
        let mut events = 0;
        for _ in 0..count {
            let Some(item) = r.u16().and_then(|n| r.take(usize::from(n))) else {
                complete = false;
                break;
            };
            match parse_location(item, offset) {
                Ok(mut fix) => {
                    fix.buffered = kind == 1;
                    out.push(self.event(id, EventKind::Position(fix)));
                    events += 1;
                }
                Err(e) => out.push(reject(e.as_str(), item.len())),
            }
        }
        if events == 0 {
            out.push(self.heartbeat(id));
        }
        if complete {
            self.ack(h, result::OK, out);
        } else {
            out.push(reject("jt808: batch truncated", r.0.len()));
            self.ack(h, result::MESSAGE_ERROR, out);
        }
    }

    /// 0x0210: items of a length byte and a 0x0200 body. A 7-byte body (battery level and a
    /// time) carries no fix and is a sign of life.
    fn batch_2(&mut self, h: &Header<'_>, body: &[u8], id: &DeviceId, out: &mut Vec<Output>) {
        let offset = self.utc_offset_s();
        let mut r = Reader(body);
        let mut events = 0;
        if body.len() != 7 {
            while let Some(item) = r.u8().and_then(|n| r.take(usize::from(n))) {
                match parse_location(item, offset) {
                    Ok(fix) => {
                        out.push(self.event(id, EventKind::Position(fix)));
                        events += 1;
                    }
                    Err(e) => out.push(reject(e.as_str(), item.len())),
                }
            }
        }
        if events == 0 {
            out.push(self.heartbeat(id));
        }
        self.ack(h, result::OK, out);
    }

    /// 0x8001 {serial, msg id, result} to the message in `h`.
    fn ack(&mut self, h: &Header<'_>, result: u8, out: &mut Vec<Output>) {
        let mut body = [0u8; 5];
        body[..2].copy_from_slice(&h.serial.to_be_bytes());
        body[2..4].copy_from_slice(&h.msg_id.to_be_bytes());
        body[4] = result;
        self.reply(h, msg::PLATFORM_RESPONSE, &body, out);
    }

    /// A platform message to the terminal of `h`, in its header version, with the next serial.
    fn reply(&mut self, h: &Header<'_>, msg_id: u16, body: &[u8], out: &mut Vec<Output>) {
        self.serial = self.serial.wrapping_add(1);
        out.push(Output::Reply(encode_frame(
            msg_id,
            h.version,
            h.terminal,
            self.serial,
            body,
        )));
    }
}

impl Session for Jt808Session {
    fn protocol(&self) -> Protocol {
        Protocol::Jt808
    }

    /// Splits on `7E`. The closing flag of a frame stays in the buffer as the possible opening
    /// flag of the next one, since devices may share flags between frames (§B.1); empty frames
    /// are skipped and bytes between frames are rejected as garbage.
    fn feed(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> Result<(), SessionError> {
        loop {
            let Some(start) = buf.iter().position(|&b| b == FLAG) else {
                if !buf.is_empty() {
                    out.push(reject("jt808: garbage without a flag", buf.len()));
                    buf.clear();
                }
                self.scanned = 1;
                return Ok(());
            };
            if start > 0 {
                out.push(reject("jt808: garbage before a flag", start));
                buf.advance(start);
                self.scanned = 1;
            }
            let from = self.scanned.clamp(1, buf.len());
            let Some(end) = buf[from..]
                .iter()
                .position(|&b| b == FLAG)
                .map(|i| i + from)
            else {
                if buf.len() > self.cfg.max_frame {
                    out.push(reject("jt808: no closing flag within max_frame", buf.len()));
                    buf.clear();
                    self.scanned = 1;
                } else {
                    self.scanned = buf.len();
                }
                return Ok(());
            };
            self.scanned = 1;
            if end == 1 {
                buf.advance(1);
                continue;
            }
            let res = self.frame(&buf[1..end], out);
            buf.advance(end);
            res?;
        }
    }

    fn finish(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) {
        // A lone flag is the closing flag of the last frame, kept in case it opened another.
        if buf.iter().any(|&b| b != FLAG) {
            out.push(reject("truncated frame at end of stream", buf.len()));
        }
        buf.clear();
        self.scanned = 1;
    }

    fn device_id(&self) -> Option<&DeviceId> {
        self.terminal.as_ref().map(|t| &t.id)
    }

    fn commands_to(&self) -> Option<&DeviceId> {
        if self.cfg.require_auth {
            self.authenticated.as_ref()
        } else {
            self.device_id()
        }
    }

    /// Only to a terminal that authenticated on this connection (when authentication is
    /// enforced), in its header version and with its number as it sends it.
    fn encode_command(&mut self, _id: u64, cmd: &Downlink) -> Result<Encoded, EncodeError> {
        if self.cfg.sessionless {
            return Err(EncodeError::NotReady);
        }
        let (raw, len) = if self.cfg.require_auth {
            // The terminal that authenticated, whatever number the last frame carried.
            match (&self.authenticated, self.authenticated_raw) {
                (Some(_), Some(r)) => r,
                _ => return Err(EncodeError::NotReady),
            }
        } else {
            match &self.terminal {
                Some(t) if t.admitted => (t.raw, t.len),
                _ => return Err(EncodeError::NotReady),
            }
        };
        let terminal = raw.get(..len).unwrap_or(&[]);
        let serial = self.serial.wrapping_add(1);
        let (bytes, msg_id) = match cmd {
            Downlink::Locate => (
                encode_locate(self.version, terminal, serial),
                QUERY_LOCATION,
            ),
            Downlink::Track {
                interval_s,
                duration_s,
            } => (
                encode_track(self.version, terminal, serial, *interval_s, *duration_s),
                TEMPORARY_TRACKING,
            ),
            Downlink::Raw(_) => {
                return Err(EncodeError::Unsupported(
                    "JT/T 808 has no text command; use locate or track",
                ))
            }
        };
        self.serial = serial;
        Ok(Encoded {
            bytes,
            key: AnswerKey::Reply { serial, msg_id },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_hex, to_hex};
    use std::sync::Arc;

    fn hex(s: &str) -> Vec<u8> {
        parse_hex(s).unwrap()
    }

    fn run(s: &mut Jt808Session, bytes: &[u8]) -> (Vec<Output>, Option<SessionError>) {
        crate::protocol::decode_all(s, bytes)
    }

    #[test]
    fn vendor_answer_is_a_frame_in_the_vendor_form() {
        // A 0x5502 with attribute bit 15 (answer requested), from the public corpus.
        let f = hex("7e55028c37850011000200c008052106305122348621113550170700001e080000000aaa0000000000000300000000100100020200140a030000000c06003bffa8ffc3c77e");
        let mut s = Jt808Session::new(SessionConfig::default());
        let (out, _) = run(&mut s, &f);
        let reply = out
            .iter()
            .find_map(|o| match o {
                Output::Reply(b) => Some(b.to_vec()),
                _ => None,
            })
            .expect("answer");
        let mut raw = Vec::new();
        unescape_into(&reply[1..reply.len() - 1], &mut raw).unwrap();
        let frame = parse_frame(&raw).unwrap();
        assert_eq!(frame.header.msg_id, msg::VENDOR_RESPONSE);
        assert_eq!(frame.header.terminal, &f[5..11]);
        assert_eq!(frame.body, &[0x55, 0x02, 0x00]);
    }

    /// A reply (as [`replies`] gives it) without its flags and escapes, for [`parse_frame`].
    fn unframed(reply: &str) -> Vec<u8> {
        let wire = hex(reply);
        let mut raw = Vec::new();
        unescape_into(&wire[1..wire.len() - 1], &mut raw).unwrap();
        raw
    }

    fn replies(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::Reply(b) => Some(to_hex(b)),
                _ => None,
            })
            .collect()
    }

    fn fixes(out: &[Output]) -> Vec<Fix> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(Event {
                    kind: EventKind::Position(f),
                    ..
                }) => Some(*f),
                _ => None,
            })
            .collect()
    }

    const B6_4: &str = "7E 02 00 00 28 01 39 12 34 56 78 00 7D 01 00 00 01 00 00 0C 00 03 01 57 FA F8 06 CC 62 89 00 23 02 6F 00 5A 24 05 20 18 30 15 01 04 00 01 E2 40 30 01 19 31 01 09 83 7E";

    #[test]
    fn escaping_matches_the_reference_demo() {
        let mut out = Vec::new();
        escape_into(&hex("30 7E 08 7D 55"), &mut out);
        assert_eq!(out, hex("30 7D 02 08 7D 01 55"));
        let mut back = Vec::new();
        unescape_into(&out, &mut back).unwrap();
        assert_eq!(back, hex("30 7E 08 7D 55"));
        assert_eq!(
            unescape_into(&hex("30 7D 03"), &mut back),
            Err(FrameError::BadEscape)
        );
        assert_eq!(
            unescape_into(&hex("30 7D"), &mut back),
            Err(FrameError::BadEscape)
        );
    }

    #[test]
    fn parses_2013_and_2019_headers() {
        let f = hex("00 02 00 00 01 23 45 67 89 00 00 0A 81");
        let fr = parse_frame(&f).unwrap();
        assert_eq!(fr.header.msg_id, 0x0002);
        assert_eq!(fr.header.version, None);
        assert_eq!(fr.header.terminal, &hex("01 23 45 67 89 00")[..]);
        assert_eq!(fr.header.serial, 10);
        assert!(fr.body.is_empty());

        let reg = hex("7E 01 00 40 54 01 00 00 00 00 01 39 12 34 56 78 00 01 00 2C 01 2C 47 50 53 30 31 00 00 00 00 00 00 43 4C 2D 57 49 52 45 44 2D 30 31 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 41 31 32 33 34 35 36 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 D4 C1 42 31 32 33 34 35 03 7E");
        let fr = parse_frame(&reg[1..reg.len() - 1]).unwrap();
        assert_eq!(fr.header.version, Some(1));
        assert_eq!(fr.header.terminal.len(), 10);
        assert_eq!(fr.header.serial, 1);
        assert_eq!(fr.body.len(), 0x54);

        let mut bad = f.clone();
        bad[11] ^= 1;
        assert_eq!(parse_frame(&bad), Err(FrameError::Checksum));
        // Declares a 1-byte body but carries none (check byte fixed up).
        let mut short = hex("00 02 00 01 01 23 45 67 89 00 00 0A");
        short.push(checksum(&short));
        assert_eq!(parse_frame(&short), Err(FrameError::BodyLength));
        assert_eq!(parse_frame(&[]), Err(FrameError::Short));
        assert_eq!(parse_frame(&[0x00]), Err(FrameError::Short));
    }

    #[test]
    fn location_with_power_cut_and_escaped_serial() {
        let mut s = Jt808Session::new(SessionConfig::default());
        let (out, err) = run(&mut s, &hex(B6_4));
        assert!(err.is_none());
        let f = fixes(&out);
        assert_eq!(f.len(), 1);
        let p = f[0].position;
        assert_eq!(p.lat, 22.543096);
        assert_eq!(p.lon, 114.057865);
        assert_eq!(p.time.to_string(), "2024-05-20T10:30:15Z");
        assert_eq!(p.speed_kmh, 62.3);
        assert_eq!(p.course, 90);
        assert_eq!(p.satellites, Some(9));
        assert_eq!(p.altitude_m, Some(35.0));
        assert!(p.valid);
        assert!(f[0].alarms.active.contains(Alarms::POWER_CUT));
        assert!(f[0].alarms.known.contains(Alarms::TAMPER));
        assert!(!f[0].alarms.active.contains(Alarms::TAMPER));
        assert_eq!(s.device_id().unwrap().as_str(), "13912345678");
        // First reply of the session: platform serial 1 (B.6 #4 shows 4, being the 4th).
        assert_eq!(
            replies(&out),
            vec!["7E 80 01 00 05 01 39 12 34 56 78 00 01 00 7D 01 02 00 00 CA 7E"]
        );
    }

    /// A terminal that escapes only `7E` sends `7D` bare (Traccar's frame for
    /// `ALARM_ACCELERATION`, three cell ids `0A 7D A0 xx` in item 0x5D): its check byte and
    /// length hold with each `7D` as data, so it is decoded and acknowledged. A bare `7D` where
    /// they do not hold is still a bad escape.
    #[test]
    fn a_bare_7d_is_data_when_the_check_byte_and_length_say_so() {
        let frame = "7E0200008201215233475100030000000000000003015A7F6106CF8CEC003D0000000021071311481901040000005630011931011AE10200755D3D0601CC0024990A7DA0032301CC002499099B2941FC01CC002499099B29430B01CC0024990A7DA0290601CC0024990A7DA015FD01CC0026220994506BFFFE157C010400000001F10C000000000000000000000000997E";
        let mut s = Jt808Session::new(SessionConfig::default());
        let (out, err) = run(&mut s, &hex(frame));
        assert!(err.is_none());
        assert!(
            !out.iter().any(|o| matches!(o, Output::Rejected(_))),
            "{out:?}"
        );
        let f = fixes(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].position.time.to_string(), "2021-07-13T03:48:19Z");
        assert!(
            (f[0].position.lat - 22.708065).abs() < 1e-6,
            "{}",
            f[0].position.lat
        );
        assert_eq!(
            replies(&out),
            vec!["7E 80 01 00 05 01 21 52 33 47 51 00 01 00 03 02 00 00 D3 7E"]
        );
        // One bare 7D more, in the serial: the check byte no longer holds.
        let mut bad = hex(frame);
        bad[12] = 0x7D;
        let (out, _) = run(&mut Jt808Session::new(SessionConfig::default()), &bad);
        assert!(fixes(&out).is_empty());
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Rejected(r) if r.reason == "jt808: bad escape")));
    }

    #[test]
    fn b6_sequence_reproduces_the_platform_serials() {
        let mut s = Jt808Session::new(SessionConfig::default());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Register; its reply carries the derived code, not the example's AUTH123456.
        buf.extend_from_slice(&hex("7E 01 00 00 2D 01 39 12 34 56 78 00 01 00 2C 01 2C 47 50 53 30 31 43 4C 2D 57 49 52 45 44 2D 30 31 00 00 00 00 00 00 00 00 00 41 31 32 33 34 35 36 01 D4 C1 42 31 32 33 34 35 3B 7E"));
        s.feed(&mut buf, &mut out).unwrap();
        let code = auth_code(b"lienwatch", &DeviceId::new("13912345678"));
        let expected = encode_frame(
            0x8100,
            None,
            &hex("01 39 12 34 56 78"),
            1,
            &[&[0, 1, 0][..], code.as_bytes()].concat(),
        );
        assert_eq!(out.last(), Some(&Output::Reply(expected)));
        out.clear();
        buf.extend_from_slice(&hex("7E 00 02 00 00 01 39 12 34 56 78 00 03 31 7E"));
        s.feed(&mut buf, &mut out).unwrap();
        // Serial 2 here (the example's 3 follows an auth reply).
        assert_eq!(
            replies(&out),
            vec!["7E 80 01 00 05 01 39 12 34 56 78 00 02 00 03 00 02 00 B7 7E"]
        );
    }

    /// A 2019 terminal asks the time (0x0004): the answer is 0x8004 with UTC as BCD
    /// YYMMDDhhmmss, in its 2019 header, not "not supported".
    #[test]
    fn a_time_query_is_answered_with_the_time() {
        let now = Timestamp::from_civil(2026, 12, 2, 9, 5, 7).unwrap();
        // As the daemon runs it: before authentication too (a cold terminal sets its clock
        // first).
        let mut s = Jt808Session::new(SessionConfig {
            clock: std::sync::Arc::new(move || now),
            require_auth: true,
            ..SessionConfig::default()
        });
        let (out, err) = run(
            &mut s,
            &hex("7E 00 04 40 00 01 00 00 00 00 01 39 12 34 56 78 00 05 70 7E"),
        );
        assert!(err.is_none(), "{err:?}");
        let r = replies(&out);
        assert_eq!(r.len(), 1, "{r:?}");
        let raw = unframed(&r[0]);
        let f = parse_frame(&raw).unwrap();
        assert_eq!(f.header.msg_id, 0x8004);
        assert_eq!(f.header.version, Some(1));
        assert_eq!(f.body, &hex("26 12 02 09 05 07")[..]);
        assert_eq!(
            utc_bcd(Timestamp::from_civil(2031, 1, 9, 23, 59, 59).unwrap()),
            [0x31, 0x01, 0x09, 0x23, 0x59, 0x59]
        );
    }

    /// A refused frame from another number does not take the commands of the terminal that
    /// authenticated on the connection: they still go to it, with its number.
    #[test]
    fn commands_go_to_the_authenticated_terminal_after_a_foreign_frame() {
        use crate::protocol::{events, Session};
        let mut s = Jt808Session::new(SessionConfig {
            require_auth: true,
            ..SessionConfig::default()
        });
        let ours = hex("01 39 12 34 56 78");
        let code = auth_code(b"lienwatch", &DeviceId::new("13912345678"));
        let (out, _) = run(
            &mut s,
            &encode_frame(0x0102, None, &ours, 1, code.as_bytes()),
        );
        assert!(
            events(&out).iter().any(|e| e.kind == EventKind::Login),
            "{out:?}"
        );
        let theirs = hex("01 39 99 99 99 99");
        let (out, _) = run(&mut s, &encode_frame(0x0002, None, &theirs, 2, &[]));
        assert!(events(&out).is_empty(), "{out:?}");
        let enc = s
            .encode_command(1, &Downlink::Locate)
            .expect("sent to the authenticated one");
        assert_eq!(enc.bytes.get(5..11), Some(&ours[..]), "{:02X?}", enc.bytes);
    }

    /// With unknown devices refused, a frame from an unknown number on a connection another
    /// terminal authenticated on is refused alone (0x8001 result 1); the session goes on.
    #[test]
    fn an_unknown_number_on_an_authenticated_connection_is_refused_alone() {
        use crate::protocol::events;
        let mut s = Jt808Session::new(SessionConfig {
            require_auth: true,
            admit: Arc::new(|id: &DeviceId| id.as_str() == "13912345678"),
            ..SessionConfig::default()
        });
        let ours = hex("01 39 12 34 56 78");
        let code = auth_code(b"lienwatch", &DeviceId::new("13912345678"));
        let (_, err) = run(
            &mut s,
            &encode_frame(0x0102, None, &ours, 1, code.as_bytes()),
        );
        assert_eq!(err, None);
        let unknown = hex("01 39 99 99 99 99");
        let (out, err) = run(&mut s, &encode_frame(0x0200, None, &unknown, 2, &[]));
        assert_eq!(err, None, "the session ends: {out:?}");
        assert!(events(&out).is_empty(), "{out:?}");
        assert!(
            out.iter().any(|o| matches!(o, Output::Rejected(r)
                if r.reason.contains("another terminal"))),
            "{out:?}"
        );
        assert_eq!(
            out.last(),
            Some(&Output::Reply(encode_frame(
                0x8001,
                None,
                &unknown,
                2,
                &[0, 2, 0x02, 0x00, 1]
            )))
        );
        let (out, err) = run(&mut s, &encode_frame(0x0002, None, &ours, 3, &[]));
        assert_eq!(err, None);
        assert_eq!(
            events(&out).len(),
            1,
            "the terminal's own heartbeat: {out:?}"
        );
    }

    /// The answers a 0x8201 locate can get: a 0x0201 whose clock is zeros (no fix since the
    /// terminal started) still answers it, without a position; a general response 0x0001 that
    /// only acknowledges it waits for the 0x0201, and one that refuses it answers it as failed.
    #[test]
    fn locate_answers_without_a_fix_and_general_responses() {
        use crate::protocol::events;
        let mut s = Jt808Session::new(SessionConfig::default());
        let term = hex("01 39 12 34 56 78");
        let answers = |out: &[Output]| -> Vec<CommandAnswer> {
            events(out)
                .into_iter()
                .filter_map(|e| match &e.kind {
                    EventKind::CommandAnswer(a) => Some(a.clone()),
                    _ => None,
                })
                .collect()
        };
        let mut body = vec![0x00, 0x07];
        body.extend_from_slice(&[0u8; 28]);
        let (out, err) = run(&mut s, &encode_frame(0x0201, None, &term, 1, &body));
        assert_eq!(err, None);
        let a = answers(&out);
        assert_eq!(a.len(), 1, "{out:?}");
        let key = AnswerKey::Reply {
            serial: 7,
            msg_id: QUERY_LOCATION,
        };
        assert_eq!((a[0].key, a[0].ok, a[0].position), (key, true, None));
        assert!(
            a[0].text
                .as_deref()
                .is_some_and(|t| t.starts_with("no readable position")),
            "{a:?}"
        );
        // A body cut short answers nothing: the locate goes out again.
        let (out, _) = run(
            &mut s,
            &encode_frame(0x0201, None, &term, 9, &[0x00, 0x07, 1, 2]),
        );
        assert!(answers(&out).is_empty(), "{out:?}");
        let general = |result: u8| {
            let mut b = vec![0x00, 0x08];
            b.extend_from_slice(&QUERY_LOCATION.to_be_bytes());
            b.push(result);
            encode_frame(0x0001, None, &term, 2, &b)
        };
        let (out, _) = run(&mut s, &general(0));
        assert!(answers(&out).is_empty(), "{out:?}");
        assert_eq!(events(&out).len(), 1, "a sign of life: {out:?}");
        let (out, _) = run(&mut s, &general(1));
        let a = answers(&out);
        assert_eq!(a.len(), 1, "{out:?}");
        assert!(!a[0].ok, "{a:?}");
    }

    /// A heartbeat before authentication is answered but is no sign of life: whoever knows a
    /// terminal number must not keep a silent car from alerting.
    #[test]
    fn a_heartbeat_before_authentication_is_answered_and_no_sign_of_life() {
        use crate::protocol::events;
        let mut s = Jt808Session::new(SessionConfig {
            require_auth: true,
            ..SessionConfig::default()
        });
        let term = hex("01 39 12 34 56 78");
        let (out, err) = run(&mut s, &encode_frame(0x0002, None, &term, 1, &[]));
        assert_eq!(err, None);
        assert!(events(&out).is_empty(), "{out:?}");
        assert_eq!(
            out.last(),
            Some(&Output::Reply(encode_frame(
                0x8001,
                None,
                &term,
                1,
                &[0, 1, 0x00, 0x02, 0]
            )))
        );
        let code = auth_code(b"lienwatch", &DeviceId::new("13912345678"));
        run(
            &mut s,
            &encode_frame(0x0102, None, &term, 2, code.as_bytes()),
        );
        let (out, _) = run(&mut s, &encode_frame(0x0002, None, &term, 3, &[]));
        assert_eq!(events(&out).len(), 1, "after authentication: {out:?}");
        // Sessionless (MQTT raw payloads, `decode`) a heartbeat is one, as before.
        let mut s = Jt808Session::new(SessionConfig::default());
        let (out, _) = run(&mut s, &encode_frame(0x0002, None, &term, 1, &[]));
        assert_eq!(events(&out).len(), 1, "{out:?}");
    }

    #[test]
    fn auth_right_and_wrong_codes() {
        let key: &[u8] = b"lienwatch";
        let id = DeviceId::new("13912345678");
        let code = auth_code(key, &id);
        assert_eq!(code.len(), 16);
        assert!(code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        assert_ne!(code, auth_code(b"other", &id));
        assert_ne!(code, auth_code(key, &DeviceId::new("13912345679")));

        let term = hex("01 39 12 34 56 78");
        let mut s = Jt808Session::new(SessionConfig::default());
        let good = [encode_frame(0x0102, None, &term, 7, code.as_bytes())].concat();
        let (out, _) = run(&mut s, &good);
        assert!(matches!(&out[0], Output::Event(e) if e.kind == EventKind::Login));
        assert_eq!(
            out[1],
            Output::Reply(encode_frame(0x8001, None, &term, 1, &[0, 7, 1, 2, 0]))
        );
        let (out, _) = run(
            &mut s,
            &hex("7E 01 02 00 0A 01 39 12 34 56 78 00 02 41 55 54 48 31 32 33 34 35 36 34 7E"),
        );
        assert_eq!(
            replies(&out),
            vec!["7E 80 01 00 05 01 39 12 34 56 78 00 02 00 02 01 02 01 B6 7E"]
        );

        // 2019: length-prefixed code, IMEI and version after it.
        let term19 = hex("00 00 00 00 01 39 12 34 56 78");
        let mut body = vec![16u8];
        body.extend_from_slice(code.as_bytes());
        body.extend_from_slice(b"868120145233604");
        body.extend_from_slice(&[0u8; 20]);
        let (out, _) = run(&mut s, &encode_frame(0x0102, Some(1), &term19, 2, &body));
        assert_eq!(
            out.last(),
            Some(&Output::Reply(encode_frame(
                0x8001,
                Some(1),
                &term19,
                3,
                &[0, 2, 1, 2, 0]
            )))
        );
    }

    #[test]
    fn refused_devices_get_a_refusal_then_the_session_ends() {
        let cfg = SessionConfig {
            admit: Arc::new(|id: &DeviceId| id.as_str() != "13912345678"),
            ..SessionConfig::default()
        };
        let reg = hex("7E 01 00 00 2D 01 39 12 34 56 78 00 01 00 2C 01 2C 47 50 53 30 31 43 4C 2D 57 49 52 45 44 2D 30 31 00 00 00 00 00 00 00 00 00 41 31 32 33 34 35 36 01 D4 C1 42 31 32 33 34 35 3B 7E");
        let mut s = Jt808Session::new(cfg.clone());
        let (out, err) = run(&mut s, &reg);
        assert_eq!(err, Some(SessionError::Refused("13912345678".into())));
        assert_eq!(
            replies(&out),
            vec![to_hex(&encode_frame(
                0x8100,
                None,
                &hex("01 39 12 34 56 78"),
                1,
                &[0, 1, 4]
            ))]
        );
        let mut s = Jt808Session::new(cfg);
        let (out, err) = run(&mut s, &hex(B6_4));
        assert!(err.is_some());
        assert!(replies(&out).is_empty());
        assert!(matches!(out[..], [Output::Rejected(_)]));
    }

    #[test]
    fn admission_is_asked_once_per_terminal() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let cfg = SessionConfig {
            admit: Arc::new(move |_: &DeviceId| {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }),
            ..SessionConfig::default()
        };
        let mut s = Jt808Session::new(cfg);
        let hb = hex("7E 00 02 00 00 01 39 12 34 56 78 00 03 31 7E");
        let stream = [hb.clone(), hb.clone(), hex(B6_4), hb].concat();
        let (out, _) = run(&mut s, &stream);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(replies(&out).len(), 4);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_outputs() {
        let hb = hex("7E 00 02 00 00 01 39 12 34 56 78 00 03 31 7E");
        let stream = [&b"zz"[..], &hex(B6_4), &hb, &hb].concat();
        let (whole, _) = run(&mut Jt808Session::new(SessionConfig::default()), &stream);
        let mut s = Jt808Session::new(SessionConfig::default());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in &stream {
            buf.put_u8(*b);
            s.feed(&mut buf, &mut out).unwrap();
            assert!(buf.len() <= 64);
        }
        s.finish(&mut buf, &mut out);
        let keep = |o: &Vec<Output>| -> Vec<Output> {
            o.iter()
                .filter(|o| !matches!(o, Output::Rejected(_)))
                .cloned()
                .collect()
        };
        assert_eq!(keep(&whole), keep(&out));
        assert_eq!(keep(&out).len(), 6);
    }

    #[test]
    fn traccar_south_west_frame() {
        let mut s = Jt808Session::new(SessionConfig::default());
        let (out, _) = run(&mut s, &hex("7e020000220014012499170007000000000000400e012af16f02cbd2ba000000000000150101194257010400000077a97e"));
        let f = fixes(&out);
        assert_eq!(f[0].position.lat, -19.591535);
        assert_eq!(f[0].position.lon, -46.912186);
        assert_eq!(f[0].position.time.to_string(), "2015-01-01T11:42:57Z");
        assert!(f[0].position.valid);
        assert_eq!(s.device_id().unwrap().as_str(), "1401249917");
    }

    #[test]
    fn configured_offset_replaces_beijing_time() {
        let cfg = SessionConfig {
            utc_offset_s: Some(0),
            ..SessionConfig::default()
        };
        let mut s = Jt808Session::new(cfg);
        let (out, _) = run(&mut s, &hex(B6_4));
        assert_eq!(
            fixes(&out)[0].position.time.to_string(),
            "2024-05-20T18:30:15Z"
        );
    }

    #[test]
    fn bad_time_is_rejected_with_message_error() {
        let term = hex("01 39 12 34 56 78");
        let mut body = hex(B6_4)[14..14 + 0x28].to_vec();
        body[22..28].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut s = Jt808Session::new(SessionConfig::default());
        let (out, _) = run(&mut s, &encode_frame(0x0200, None, &term, 9, &body));
        assert!(fixes(&out).is_empty());
        assert!(matches!(&out[0], Output::Rejected(r) if r.reason == BodyError::BadTime.as_str()));
        // Still a sign of life: a device with a broken clock must not look silent.
        assert!(
            matches!(&out[1], Output::Event(e) if matches!(e.kind, EventKind::Heartbeat { .. }))
        );
        assert_eq!(
            out[2],
            Output::Reply(encode_frame(0x8001, None, &term, 1, &[0, 9, 2, 0, 2]))
        );
        body[22] = 0x2A;
        assert_eq!(parse_location(&body, 0), Err(BodyError::BadTime));
    }

    /// A 0x0200 with a clock of zeros loses its fix, not the alarms of its alarm and status
    /// words: the heartbeat carries them (here bit 8, main power cut).
    #[test]
    fn bad_time_heartbeat_keeps_the_alarm_words() {
        let term = hex("01 39 12 34 56 78");
        let mut body = hex(B6_4)[14..14 + 0x28].to_vec();
        body[..4].copy_from_slice(&(1u32 << 8).to_be_bytes());
        body[22..28].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut s = Jt808Session::new(SessionConfig::default());
        let (out, _) = run(&mut s, &encode_frame(0x0200, None, &term, 9, &body));
        let alarms = match &out[1] {
            Output::Event(Event {
                kind: EventKind::Heartbeat { alarms },
                ..
            }) => *alarms,
            other => panic!("heartbeat expected: {other:?}"),
        };
        assert!(alarms.active.contains(Alarms::POWER_CUT), "{alarms:?}");
        assert!(alarms.known.contains(Alarms::TAMPER) && !alarms.active.contains(Alarms::TAMPER));
        assert_eq!(
            out[2],
            Output::Reply(encode_frame(0x8001, None, &term, 1, &[0, 9, 2, 0, 2]))
        );
    }

    /// A cold-started terminal with no fix: a clock of zeros, and a cell item (0xE1). The cell
    /// is its only place: kept, on an invalid fix stamped with the server's time, and the report
    /// acknowledged (result 0).
    #[test]
    fn a_clock_of_zeros_keeps_its_cell() {
        let now = Timestamp::from_civil(2026, 12, 2, 9, 0, 0).unwrap();
        let mut s = Jt808Session::new(SessionConfig {
            clock: std::sync::Arc::new(move || now),
            ..SessionConfig::default()
        });
        let (out, err) = run(
            &mut s,
            &hex("7E 02 00 00 2A 01 39 12 34 56 78 00 40 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 E1 0C 01 CC 00 00 00 25 03 00 00 10 3C 20 53 7E"),
        );
        assert!(err.is_none(), "{err:?}");
        let f = fixes(&out);
        assert_eq!(f.len(), 1, "{out:?}");
        let p = f[0].position;
        assert!(!p.valid);
        assert_eq!(p.time, now);
        let cell = p.cell.expect("the cell");
        assert_eq!((cell.mcc, cell.mnc), (460, 0));
        assert!(f[0].alarms.active.contains(Alarms::POWER_CUT));
        let r = replies(&out);
        assert_eq!(r.len(), 1);
        let raw = unframed(&r[0]);
        assert_eq!(
            parse_frame(&raw).unwrap().body,
            &[0x00, 0x40, 0x02, 0x00, 0x00][..]
        );
    }

    #[test]
    fn truncated_items_do_not_fail_the_fix() {
        let body = hex(B6_4)[14..14 + 0x28].to_vec();
        for cut in 0..body.len() {
            let r = parse_location(&body[..cut], 28800);
            assert_eq!(r.is_ok(), cut >= 28, "cut {cut}");
        }
        // An item claiming more bytes than remain.
        let mut b = body[..28].to_vec();
        b.extend_from_slice(&[0x31, 0x05, 0x09]);
        assert_eq!(parse_location(&b, 0).unwrap().position.satellites, None);
    }

    #[test]
    fn alarm_bits_map_to_conditions() {
        let r = alarm_report(1 << 17, 1 << 11);
        assert_eq!(r.active, Alarms::TAMPER.union(Alarms::IMMOBILISED));
        let r = alarm_report(
            (1 << 0) | (1 << 1) | (1 << 7) | (1 << 15) | (1 << 16) | (1 << 20) | (1 << 28),
            0,
        );
        for a in [
            Alarms::SOS,
            Alarms::OVERSPEED,
            Alarms::LOW_POWER,
            Alarms::LOW_BATTERY,
            Alarms::VIBRATION,
            Alarms::DEVICE_GEOFENCE,
            Alarms::TOW,
        ] {
            assert!(r.active.contains(a), "{a:?}");
        }
        let none = alarm_report(0, 0);
        assert!(none.active.is_empty());
        assert!(none.known.contains(Alarms::POWER_CUT));
        assert!(!none.known.contains(Alarms::JAMMING));
    }

    #[test]
    fn garbage_empty_frames_and_bounds() {
        let mut s = Jt808Session::new(SessionConfig::default());
        let hb = hex("7E 00 02 00 00 01 39 12 34 56 78 00 03 31 7E");
        let stream = [&b"xx"[..], &[0x7E, 0x7E], &hb, &b"junk"[..], &hb].concat();
        let (out, err) = run(&mut s, &stream);
        assert!(err.is_none());
        assert_eq!(replies(&out).len(), 2);
        let rejected = out
            .iter()
            .filter(|o| matches!(o, Output::Rejected(_)))
            .count();
        assert_eq!(rejected, 2, "{out:?}");

        let cfg = SessionConfig {
            max_frame: 64,
            ..SessionConfig::default()
        };
        let mut s = Jt808Session::new(cfg);
        let mut buf = BytesMut::from(&[0x7E; 1][..]);
        buf.extend_from_slice(&[0x11; 100]);
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).unwrap();
        assert!(buf.is_empty());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn subpackaged_batch_reassembles() {
        let p1 = hex("7E 07 04 20 25 01 39 12 34 56 78 00 10 00 02 00 01 00 02 01 00 22 00 00 00 00 00 0C 00 02 01 57 FA F8 06 CC 62 89 00 23 00 00 00 00 24 05 20 03 00 00 01 04 00 01 5A 7E");
        let p2 = hex("7E 07 04 20 26 01 39 12 34 56 78 00 11 00 02 00 02 E2 40 00 22 00 00 00 00 00 0C 00 02 01 57 FA FC 06 CC 62 8E 00 23 00 00 00 00 24 05 20 09 00 00 01 04 00 01 E2 40 51 7E");
        let term = hex("01 39 12 34 56 78");
        // Out of order, too.
        for (a, b) in [(&p1, &p2), (&p2, &p1)] {
            let mut s = Jt808Session::new(SessionConfig::default());
            let (o1, _) = run(&mut s, a);
            assert_eq!(o1.len(), 1);
            let (o2, _) = run(&mut s, b);
            let f = fixes(&o2);
            assert_eq!(f.len(), 2);
            assert!(f.iter().all(|f| f.buffered));
            assert_eq!(f[0].position.time.to_string(), "2024-05-19T19:00:00Z");
            assert_eq!(f[1].position.lat, 22.5431);
            assert!(matches!(o2.last(), Some(Output::Reply(_))));
            assert_eq!(o2.len(), 3);
        }
        let mut s = Jt808Session::new(SessionConfig::default());
        let (o, _) = run(&mut s, &[p1, p2].concat());
        assert_eq!(
            replies(&o),
            vec![
                to_hex(&encode_frame(0x8001, None, &term, 1, &[0, 0x10, 7, 4, 0])),
                to_hex(&encode_frame(0x8001, None, &term, 2, &[0, 0x11, 7, 4, 0])),
            ]
        );
    }

    /// The last package of a message whose first one was lost (acknowledged, then a restart):
    /// 0x8003 asks for it by the first package's serial, and the message completes when it
    /// comes again.
    #[test]
    fn a_last_package_without_the_ones_before_asks_for_them_again() {
        let p1 = hex("7E 07 04 20 25 01 39 12 34 56 78 00 10 00 02 00 01 00 02 01 00 22 00 00 00 00 00 0C 00 02 01 57 FA F8 06 CC 62 89 00 23 00 00 00 00 24 05 20 03 00 00 01 04 00 01 5A 7E");
        let p2 = hex("7E 07 04 20 26 01 39 12 34 56 78 00 11 00 02 00 02 E2 40 00 22 00 00 00 00 00 0C 00 02 01 57 FA FC 06 CC 62 8E 00 23 00 00 00 00 24 05 20 09 00 00 01 04 00 01 E2 40 51 7E");
        let term = hex("01 39 12 34 56 78");
        let mut s = Jt808Session::new(SessionConfig::default());
        let (o, _) = run(&mut s, &p2);
        // First serial 0x0010, one id (BYTE count in a 2013 header), package 1.
        assert_eq!(
            replies(&o),
            vec![to_hex(&encode_frame(
                0x8003,
                None,
                &term,
                1,
                &[0, 0x10, 1, 0, 1]
            ))]
        );
        assert!(fixes(&o).is_empty());
        let (o, _) = run(&mut s, &p1);
        assert_eq!(fixes(&o).len(), 2, "whole again");
        assert_eq!(
            replies(&o),
            vec![to_hex(&encode_frame(
                0x8001,
                None,
                &term,
                2,
                &[0, 0x10, 7, 4, 0]
            ))]
        );
    }

    /// A 0x0704 package with a `len`-byte body of filler.
    fn package(serial: u16, total: u16, index: u16, len: u16) -> Vec<u8> {
        package_of(0x0704, serial, total, index, len)
    }

    /// A package of message `msg_id` with a `len`-byte body of filler.
    fn package_of(msg_id: u16, serial: u16, total: u16, index: u16, len: u16) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&msg_id.to_be_bytes());
        raw.extend_from_slice(&(0x2000u16 | len).to_be_bytes());
        raw.extend_from_slice(&hex("01 39 12 34 56 78"));
        raw.extend_from_slice(&serial.to_be_bytes());
        raw.extend_from_slice(&total.to_be_bytes());
        raw.extend_from_slice(&index.to_be_bytes());
        raw.extend(std::iter::repeat_n(0x55, usize::from(len)));
        raw.push(checksum(&raw));
        let mut wire = vec![FLAG];
        escape_into(&raw, &mut wire);
        wire.push(FLAG);
        wire
    }

    /// A message lienwatch does not read, in packages (a voice recording, 0x0801): nothing is
    /// held, and each package is answered "not supported" at once, the last one too (not a
    /// request for the others again).
    #[test]
    fn packages_of_an_unread_message_are_not_held() {
        let mut s = Jt808Session::new(SessionConfig::default());
        let mut out = Vec::new();
        for i in 1..=5u16 {
            let mut buf = BytesMut::from(&package_of(0x0801, 100 + i - 1, 5, i, 1000)[..]);
            s.feed(&mut buf, &mut out).unwrap();
            assert!(s.reassembly.partials.is_empty());
            assert_eq!(s.reassembly.bytes, 0);
        }
        let r = replies(&out);
        assert_eq!(r.len(), 5, "{r:?}");
        for (i, reply) in r.iter().enumerate() {
            let raw = unframed(reply);
            let f = parse_frame(&raw).unwrap();
            assert_eq!(f.header.msg_id, 0x8001);
            let serial = 100 + i as u16;
            let mut want = serial.to_be_bytes().to_vec();
            want.extend_from_slice(&[0x08, 0x01, result::NOT_SUPPORTED]);
            assert_eq!(f.body, &want[..]);
        }
    }

    #[test]
    fn reassembly_is_bounded() {
        let cfg = SessionConfig {
            max_frame: 128,
            ..SessionConfig::default()
        };
        // Many messages, one package each: the count bound drops the oldest.
        let mut s = Jt808Session::new(cfg.clone());
        let mut out = Vec::new();
        for m in 0..20u16 {
            let mut buf = BytesMut::from(&package(m * 3, 3, 1, 100)[..]);
            s.feed(&mut buf, &mut out).unwrap();
            assert!(s.reassembly.partials.len() <= MAX_REASSEMBLIES);
        }
        let dropped = |out: &[Output]| {
            out.iter()
                .filter(|o| matches!(o, Output::Rejected(r) if r.reason.contains("reassembly")))
                .count()
        };
        assert_eq!(dropped(&out), 20 - MAX_REASSEMBLIES);
        assert_eq!(replies(&out).len(), 20);

        // One message of many packages: the byte bound drops it.
        let mut s = Jt808Session::new(cfg.clone());
        let mut out = Vec::new();
        for i in 1..=60u16 {
            let mut buf = BytesMut::from(&package(i - 1, 1000, i, 100)[..]);
            s.feed(&mut buf, &mut out).unwrap();
            assert!(s.reassembly.bytes <= 128 * REASSEMBLY_FRAMES);
        }
        assert!(dropped(&out) >= 2);
        assert!(fixes(&out).is_empty());

        // Empty packages cost their bookkeeping: they cannot pile up past the budget either.
        let mut s = Jt808Session::new(cfg.clone());
        let mut out = Vec::new();
        for i in 1..=5000u16 {
            let mut buf = BytesMut::from(&package(i - 1, 65_535, i, 0)[..]);
            s.feed(&mut buf, &mut out).unwrap();
        }
        let parts: usize = s.reassembly.partials.iter().map(|p| p.parts.len()).sum();
        assert!(parts * PART_OVERHEAD <= 128 * REASSEMBLY_FRAMES, "{parts}");
        assert!(dropped(&out) >= 1);

        // Before authentication nothing is reassembled, a heartbeat's packages included.
        let mut s = Jt808Session::new(SessionConfig {
            require_auth: true,
            ..cfg
        });
        let mut out = Vec::new();
        let mut buf = BytesMut::from(&package_of(0x0002, 0, 3, 1, 0)[..]);
        s.feed(&mut buf, &mut out).unwrap();
        assert!(s.reassembly.partials.is_empty());
        assert!(
            out.iter().any(
                |o| matches!(o, Output::Rejected(r) if r.reason.contains("before authentication"))
            ),
            "{out:?}"
        );
    }
}
