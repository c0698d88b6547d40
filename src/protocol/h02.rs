//! H02 (Sinotrack "HQ"): the text protocol `*HQ,<id>,<cmd>,...#` and its fixed-length binary `$`
//! variant (protocols.md §D).
//!
//! Neither form has a checksum, so validation is strict: a text message must be printable ASCII
//! with a well-formed maker, id and command, and every field of a V1 must parse; a binary frame
//! must be valid BCD with a real date. Anything else is skipped up to the next `*` or `$`.
//!
//! Replies: none. The vendor documents require no reply to V1 and none to XT (§D.4); Traccar's
//! optional `V4` echo carries the server time and is not needed for delivery, and an unsolicited
//! reply could not be held back behind the store's commit anyway. Every message a device sends
//! is therefore fire-and-forget, and the session only ever emits events.
//!
//! Messages understood:
//! - `V1` location: a position, valid for `A` (or `B`, a BeiDou fix), invalid for `V`, empty or a
//!   coding-scheme digit; coordinates with or without leading zeros, dotless, or `-dd-mm.mmmm`.
//!   An invalid V1 whose fields do not make a fix (empty or zeroed) is a heartbeat with its
//!   status word;
//! - the other V-messages that carry the same fix fields after their own prefix or before their
//!   own suffix (V2, V4 command answers, V5, V6, V8, V19, VI1) and `VP1` (validity first, date
//!   only): positions;
//! - `BC`, the blind-area batch: the fixes a device stored while it had no network, each a
//!   buffered position (history, not live rules); see [`parse_bc`];
//! - `XT`, `HTBT`, `NBR` (cell list, no fix), `LINK`, `ALRM`, and any other well-formed
//!   command: a heartbeat, because any message proves the device alive. A trailing
//!   8-hex-digit status word (NBR sends one) is decoded into its alarm report.
//! - binary `$`: the 32-byte form with a 10-digit id and the 42-byte form with a 15-digit IMEI
//!   (§D.5).
//!
//! Makers are two letters of either case (`*HQ`, `*hq`, `*TH`); an empty id stands for the
//! connection's device.

use super::downlink::{Downlink, EncodeError, Encoded};
use super::{Output, Rejection, Session, SessionConfig, SessionError};
use crate::event::Timestamp;
use crate::event::{
    AlarmReport, Alarms, CommandAnswer, DeviceId, Event, EventKind, Fix, Position, Protocol,
};
use bytes::{Buf, Bytes, BytesMut};

/// Length of the binary `$` frame with a 10-digit id (§D.5).
pub const BINARY_LEN: usize = 32;
/// Length of the binary frame with a 15-digit IMEI: 8 id bytes (the last nibble is filler) and
/// 7 more bytes of extensions after the status word.
pub const BINARY_LONG_LEN: usize = 42;
/// Extra id bytes of the long form.
const LONG_ID_EXTRA: usize = 3;
/// Knots to km/h.
const KNOT_KMH: f64 = 1.852;

/// Why a message was not accepted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum H02Error {
    #[error("not printable ASCII")]
    NotText,
    #[error("bad maker, id or command")]
    BadHeader,
    #[error("bad V1 field: {0}")]
    BadField(&'static str),
    #[error("impossible date or time")]
    BadTime,
    #[error("binary frame is not valid BCD")]
    BadBcd,
    #[error("bad BC point: {0}")]
    BadPoint(&'static str),
}

impl H02Error {
    /// A static label for [`Rejection::reason`].
    pub fn reason(self) -> &'static str {
        match self {
            H02Error::NotText => "H02 message not printable ASCII",
            H02Error::BadHeader => "H02 bad maker, id or command",
            H02Error::BadField(_) => "H02 bad V1 field",
            H02Error::BadTime => "H02 impossible date or time",
            H02Error::BadBcd => "H02 binary frame not BCD",
            H02Error::BadPoint(_) => "H02 bad BC point",
        }
    }
}

/// A decoded H02 message.
#[derive(Clone, PartialEq, Debug)]
pub enum Message<'a> {
    /// V1 text or a binary frame.
    Location {
        id: &'a str,
        position: Position,
        status: Option<u32>,
    },
    /// A `BC` blind-area batch: the fixes stored while the device had no network, oldest
    /// first as sent, each with its status word.
    Batch {
        id: &'a str,
        points: Vec<(Position, Option<u32>)>,
    },
    /// Any other well-formed message: a sign of life.
    Heartbeat {
        id: &'a str,
        command: &'a str,
        status: Option<u32>,
    },
}

/// The status word's active-low bits (protocols.md §D.3) as normalised alarms. Every mapped
/// condition is `known` (the word is sent whole in every report), active when its bit is 0:
/// - bit 19 (running on backup battery): POWER_CUT;
/// - bit 20 (battery/power removed) or bit 28 (power-off / removal alarm): TAMPER;
/// - bit 1 (SOS/robbery): SOS; bit 2: OVERSPEED;
/// - bit 0 (theft/burglar alarm): TOW, as in protocols.md §F.3 (Traccar calls it vibration; for
///   collateral an armed car disturbed is the "illegal move" signal);
/// - bit 26 (GPRS blocked): JAMMING; bit 27 (fuel/power cut state): IMMOBILISED.
///
/// Bits 17 and 25 are left out: the vendor documents disagree on them.
pub fn status_alarms(status: u32) -> AlarmReport {
    let low = |bit: u32| status & (1 << bit) == 0;
    AlarmReport::NONE
        .with(Alarms::POWER_CUT, low(19))
        .with(Alarms::TAMPER, low(20) || low(28))
        .with(Alarms::SOS, low(1))
        .with(Alarms::OVERSPEED, low(2))
        .with(Alarms::TOW, low(0))
        .with(Alarms::JAMMING, low(26))
        .with(Alarms::IMMOBILISED, low(27))
}

/// Parses one text message, `*` to `#` inclusive. A message without a date or time is rejected;
/// the session reads those with [`parse_text_at`] and its clock.
pub fn parse_text(line: &[u8], utc_offset_s: Option<i32>) -> Result<Message<'_>, H02Error> {
    parse_text_at(line, utc_offset_s, None)
}

/// Parses one text message; `now` stands in for the fix time of a report whose time or date
/// fields are empty (devices send them so before their clock is set; such fixes are invalid).
///
/// Every V-message that carries a fix (V1, and V2, V4, V5, V6, V8, V19, VI1: the same fields after
/// a command-specific prefix, §D.2) becomes a location; lowercase makers (`*hq`) and the `VP1`
/// form (validity first, date only) are read too. An empty id is the connection's own device.
pub fn parse_text_at(
    line: &[u8],
    utc_offset_s: Option<i32>,
    now: Option<Timestamp>,
) -> Result<Message<'_>, H02Error> {
    let inner = line
        .strip_prefix(b"*")
        .and_then(|l| l.strip_suffix(b"#"))
        .ok_or(H02Error::BadHeader)?;
    if !inner.iter().all(|b| (0x20..0x7F).contains(b)) {
        return Err(H02Error::NotText);
    }
    let text = std::str::from_utf8(inner).map_err(|_| H02Error::NotText)?;
    let mut fields = text.split(',');
    let maker = fields.next().unwrap_or_default();
    let id = fields.next().unwrap_or_default();
    let command = fields.next().unwrap_or_default();
    let maker_ok = maker.len() == 2 && maker.bytes().all(|b| b.is_ascii_alphabetic());
    let command_ok = (1..=8).contains(&command.len())
        && command
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !(maker_ok && (id.is_empty() || valid_id(id)) && command_ok) {
        return Err(H02Error::BadHeader);
    }
    let rest: Vec<&str> = fields.collect();
    let located = |(position, status)| Message::Location {
        id,
        position,
        status,
    };
    if command == "V1" {
        return match parse_v1(&rest, utc_offset_s, now) {
            Ok(fix) => Ok(located(fix)),
            Err(_) if no_fix(&rest) => Ok(Message::Heartbeat {
                id,
                command,
                status: v1_status(&rest),
            }),
            Err(e) => Err(e),
        };
    }
    if command == "BC" {
        let now = now.ok_or(H02Error::BadTime)?;
        let points = parse_bc(&rest, utc_offset_s, now)?;
        return Ok(Message::Batch { id, points });
    }
    if command == "VP1" {
        if let Some(p) = parse_vp1(&rest) {
            return Ok(located((p, None)));
        }
    } else if command.starts_with('V') && command != "V0" && command != "V3" {
        // The fix follows a prefix whose length depends on the command (V4 echoes the command
        // it answers and its arguments): the first place where the V1 fields parse is the fix.
        for skip in 0..rest.len().min(12) {
            if let Ok(fix) = parse_v1(&rest[skip..], utc_offset_s, now) {
                return Ok(located(fix));
            }
        }
    }
    // The status word ends the message, or follows its date when fields come after it (an NBR
    // ending `,ddmmyy,FFFFFBFF,5`, as in Traccar's frames). A cell id of 8 digits elsewhere is
    // not it.
    let fields: Vec<&str> = text.split(',').collect();
    let status = fields
        .windows(2)
        .rev()
        .find(|w| digits(w[0], 6).is_some() && w[1].len() == 8)
        .and_then(|w| parse_status(w[1]))
        .or_else(|| {
            fields
                .last()
                .filter(|s| s.len() == 8)
                .and_then(|s| parse_status(s))
        });
    Ok(Message::Heartbeat {
        id,
        command,
        status,
    })
}

/// Whether a V1's validity field says it has no fix (`V`, empty or a coding-scheme digit,
/// §D.2). Such reports come with empty or zeroed fields (`,V,,N,,E,`, hemisphere `0`) that do not
/// parse as a fix, but they are the device speaking.
fn no_fix(f: &[&str]) -> bool {
    f.get(1)
        .is_some_and(|v| *v == "V" || v.bytes().all(|b| b.is_ascii_digit()))
}

/// The status word of a V1 that has no usable fix: the first 8-hex-digit field after the
/// course (§D.2, §D.3).
fn v1_status(f: &[&str]) -> Option<u32> {
    f.get(8..)?.iter().find_map(|s| parse_status(s))
}

/// `VP1,A,lat,N|S,lon,E|W,speed,course,ddmmyy`: the fix of some IMEI-numbered models, dated but
/// not timed (midnight UTC of its date). `VP1,V,...` is a cell list, read as a heartbeat.
fn parse_vp1(f: &[&str]) -> Option<Position> {
    let [validity, lat, ns, lon, ew, speed, course, date, ..] = f else {
        return None;
    };
    if !matches!(*validity, "A" | "B") {
        return None;
    }
    let lat = hemisphere(coordinate(lat, 2)?, ns, "N", "S")?;
    let lon = hemisphere(coordinate(lon, 3)?, ew, "E", "W")?;
    let knots = decimal(speed.trim())?;
    let course = decimal(course).filter(|c| *c <= 360.0)?;
    let time = date_time(date, "000000", None)?;
    Some(position(
        time,
        lat,
        lon,
        true,
        knots,
        course.round() as u16 % 360,
    ))
}

/// A fix as H02 reports one: speed in knots, no altitude, satellites, cell or Wi-Fi.
fn position(time: Timestamp, lat: f64, lon: f64, valid: bool, knots: f64, course: u16) -> Position {
    Position {
        time,
        lat,
        lon,
        valid,
        speed_kmh: knots * KNOT_KMH,
        course,
        ..Position::default()
    }
}

/// Most points a `BC` batch carries (the vendor's V1.0.5 document: "no more than 100 points").
pub const BC_MAX_POINTS: usize = 100;

/// How far past `now` a `BC` point's time may fall and still be this month's: a device clock
/// set to local time east of UTC runs up to 14 hours ahead.
const BC_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// The fields after `BC` (`HQ,<id>,BC,hhmmss,length,<point>;<point>;...`), per the vendor's
/// "GPS Tracker Communication Protocol" V1.0.5 §4 "Blind Spots Uploading": each point is
/// `S,lat,N|S,lon,E|W,speed,course,DDHHmmss,status,mcc,mnc,lac,cid`, points are separated by
/// `;`, and the server sends no reply.
///
/// - A point's time is day of month and time of day only: it is placed in the latest month (of
///   the device's calendar) that puts it no later than a day after `now`, and the month before
///   when that day does not exist (a 31st in a 30-day month). Stored fixes are hours or days
///   old, so the month of arrival or the one before is right.
/// - The header's time and length are not needed and not trusted (the document's own example
///   does not add up), but must be digits, so text that is no batch is not read as one.
/// - Cell fields (hexadecimal in the document's example, decimal in its V1) are not read, as for
///   V1. A stray space around a field is allowed (the document's example has one).
/// - Every point must parse: without a checksum, one malformed point means the text is not what
///   it claims to be.
pub fn parse_bc(
    f: &[&str],
    utc_offset_s: Option<i32>,
    now: Timestamp,
) -> Result<Vec<(Position, Option<u32>)>, H02Error> {
    let short_digits = |s: &str, n: usize| s.len() <= n && s.bytes().all(|b| b.is_ascii_digit());
    match f {
        [time, len, ..] if short_digits(time, 6) && short_digits(len, 5) => {}
        _ => return Err(H02Error::BadField("BC header")),
    }
    // The points' own commas were split with the header's: join them back and split on `;`.
    let segment = f.get(2..).unwrap_or_default().join(",");
    let segment = segment.trim().trim_end_matches(';');
    if segment.is_empty() {
        return Ok(Vec::new());
    }
    let points: Vec<&str> = segment.split(';').collect();
    if points.len() > BC_MAX_POINTS {
        return Err(H02Error::BadPoint("more than 100 points"));
    }
    points
        .iter()
        .map(|p| bc_point(p, utc_offset_s, now))
        .collect()
}

/// One `BC` point: `S,lat,N|S,lon,E|W,speed,course,DDHHmmss[,status[,mcc,mnc,lac,cid]]`, the cell
/// fields up to 8 hex digits each.
fn bc_point(
    point: &str,
    utc_offset_s: Option<i32>,
    now: Timestamp,
) -> Result<(Position, Option<u32>), H02Error> {
    let f: Vec<&str> = point.split(',').map(str::trim).collect();
    let [validity, lat, ns, lon, ew, speed, course, when, rest @ ..] = f.as_slice() else {
        return Err(H02Error::BadPoint("fewer than 8 fields"));
    };
    let valid = match *validity {
        "A" | "B" => true,
        "V" => false,
        _ => return Err(H02Error::BadPoint("validity")),
    };
    let lat = coordinate(lat, 2)
        .and_then(|v| hemisphere(v, ns, "N", "S"))
        .filter(|v| v.abs() <= 90.0)
        .ok_or(H02Error::BadPoint("latitude"))?;
    let lon = coordinate(lon, 3)
        .and_then(|v| hemisphere(v, ew, "E", "W"))
        .filter(|v| v.abs() <= 180.0)
        .ok_or(H02Error::BadPoint("longitude"))?;
    let knots = decimal(speed).ok_or(H02Error::BadPoint("speed"))?;
    let course = decimal(course)
        .filter(|c| *c <= 360.0)
        .ok_or(H02Error::BadPoint("course"))?;
    let status = match rest.first() {
        None => None,
        Some(s) => Some(parse_status(s).ok_or(H02Error::BadPoint("status"))?),
    };
    // mcc, mnc, lac, cid: not read, but what is there must look like them.
    let cell_ok = |c: &&str| c.len() <= 8 && c.bytes().all(|b| b.is_ascii_hexdigit());
    if rest.len() > 5 || !rest.iter().skip(1).all(cell_ok) {
        return Err(H02Error::BadPoint("cell"));
    }
    let time = bc_time(when, utc_offset_s, now).ok_or(H02Error::BadPoint("time"))?;
    Ok((
        position(time, lat, lon, valid, knots, course.round() as u16 % 360),
        status,
    ))
}

/// `DDHHmmss` in the device's calendar, placed in the month of `now` or one of the two before
/// (see [`parse_bc`]).
fn bc_time(when: &str, utc_offset_s: Option<i32>, now: Timestamp) -> Option<Timestamp> {
    let v = digits(when, 8)?;
    let (day, h, m, s) = (v / 1_000_000, v / 10_000 % 100, v / 100 % 100, v % 100);
    let offset_ms = i64::from(utc_offset_s.unwrap_or(0)) * 1000;
    let local_now = now.add_millis(offset_ms);
    let (mut year, mut month, _) =
        crate::time::civil_from_days(local_now.millis().div_euclid(86_400_000));
    for _ in 0..3 {
        let t = i32::try_from(year)
            .ok()
            .and_then(|y| Timestamp::from_civil(y, month, day as u8, h as u8, m as u8, s as u8));
        if let Some(t) = t.map(|t| t.add_millis(-offset_ms)) {
            if t.since(now) <= BC_AHEAD_MS {
                return Some(t);
            }
        }
        (year, month) = if month == 1 {
            (year - 1, 12)
        } else {
            (year, month - 1)
        };
    }
    None
}

fn hemisphere(v: f64, h: &str, pos: &str, neg: &str) -> Option<f64> {
    if h == pos {
        Some(v)
    } else if h == neg {
        Some(-v)
    } else {
        None
    }
}

/// 10-digit ids and 15-digit IMEIs are what devices send (§D.1); a little slack either way.
fn valid_id(id: &str) -> bool {
    (6..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

fn parse_status(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// A non-negative decimal (`033.64`, `90`); empty means 0 (§D.2 speed and course).
fn decimal(s: &str) -> Option<f64> {
    if s.is_empty() {
        return Some(0.0);
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || int.len() > 6
        || frac.len() > 6
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// `ddmm.mmmm` (lat, `deg` = 2) or `dddmm.mmmm` (lon, `deg` = 3), 3 to 6 decimals, with or
/// without the leading zeros (`701.8915` is 7° 01.8915'), the dotless form (`37573392`) with 4
/// implied decimals, or the `-dd-mm.mmmm` form some firmware sends (degrees and minutes split by
/// dashes, the hemisphere still in its own field) (§D.2).
fn coordinate(s: &str, deg: usize) -> Option<f64> {
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if let Some(dashed) = s.strip_prefix('-') {
        let (d, m) = dashed.split_once('-')?;
        let (mi, mf) = m.split_once('.')?;
        if d.len() > deg || !all_digits(d) || mi.len() > 2 || !all_digits(mi) || !all_digits(mf) {
            return None;
        }
        let minutes: f64 = m.parse().ok()?;
        if minutes >= 60.0 || mf.len() > 6 {
            return None;
        }
        return Some(d.parse::<f64>().ok()? + minutes / 60.0);
    }
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None if s.len() == deg + 6 => s.split_at_checked(deg + 2)?,
        None => return None,
    };
    if int.is_empty()
        || int.len() > deg + 2
        || !(3..=6).contains(&frac.len())
        || !all_digits(int)
        || !all_digits(frac)
    {
        return None;
    }
    let (d, m) = int.split_at_checked(int.len().saturating_sub(2))?;
    let degrees: f64 = if d.is_empty() { 0.0 } else { d.parse().ok()? };
    let minutes: f64 = format!("{m}.{frac}").parse().ok()?;
    if minutes >= 60.0 {
        return None;
    }
    Some(degrees + minutes / 60.0)
}

/// Date `ddmmyy` and time `hhmmss`, UTC unless the device clock is offset (§F.2).
fn date_time(date: &str, time: &str, utc_offset_s: Option<i32>) -> Option<Timestamp> {
    let d = digits(date, 6)?;
    let t = digits(time, 6)?;
    let ts = Timestamp::from_civil(
        2000 + (d % 100) as i32,
        ((d / 100) % 100) as u8,
        (d / 10_000) as u8,
        (t / 10_000) as u8,
        ((t / 100) % 100) as u8,
        (t % 100) as u8,
    )?;
    Some(ts.add_millis(-i64::from(utc_offset_s.unwrap_or(0)) * 1000))
}

/// `hhmmss,S,lat,N|S,lon,E|W,speed,course,[battery,]ddmmyy[,status[,extra…]]` (§D.2).
///
/// Validity `A` or `B` (a BeiDou fix) is a fix; `V`, empty or a digit (the coding-scheme field of
/// V2 / VI1) is not. The status word is the field after the date or, when SIM data comes between
/// (V19), the last 8-hex-digit field.
fn parse_v1(
    f: &[&str],
    utc_offset_s: Option<i32>,
    now: Option<Timestamp>,
) -> Result<(Position, Option<u32>), H02Error> {
    let field = |i: usize, name: &'static str| f.get(i).copied().ok_or(H02Error::BadField(name));
    let time = field(0, "time")?;
    let valid = match field(1, "validity")? {
        "A" | "B" => true,
        "V" | "" => false,
        v if v.bytes().all(|b| b.is_ascii_digit()) => false,
        _ => return Err(H02Error::BadField("validity")),
    };
    let lat = coordinate(field(2, "latitude")?, 2).ok_or(H02Error::BadField("latitude"))?;
    let lat = hemisphere(lat, field(3, "latitude hemisphere")?, "N", "S")
        .ok_or(H02Error::BadField("latitude hemisphere"))?;
    let lon = coordinate(field(4, "longitude")?, 3).ok_or(H02Error::BadField("longitude"))?;
    let lon = hemisphere(lon, field(5, "longitude hemisphere")?, "E", "W")
        .ok_or(H02Error::BadField("longitude hemisphere"))?;
    let knots = decimal(field(6, "speed")?.trim()).ok_or(H02Error::BadField("speed"))?;
    let course = decimal(field(7, "course")?.trim())
        .filter(|c| *c <= 360.0)
        .ok_or(H02Error::BadField("course"))?;
    let is_date = |d: &str| d.is_empty() || digits(d, 6).is_some();
    // A battery field may come before the date (some V1 firmware).
    let date_at = match (f.get(8), f.get(9)) {
        (Some(d), _) if is_date(d) => 8,
        (Some(b), Some(d)) if b.len() <= 3 && digits(b, b.len()).is_some() && is_date(d) => 9,
        _ => return Err(H02Error::BadField("date")),
    };
    let date = field(date_at, "date")?;
    let status = match f.get(date_at + 1) {
        None => None,
        Some(s) if s.len() == 8 => Some(parse_status(s).ok_or(H02Error::BadField("status"))?),
        Some(_) => f[date_at + 1..].iter().rev().find_map(|s| parse_status(s)),
    };
    if lat.abs() > 90.0 || lon.abs() > 180.0 {
        return Err(H02Error::BadField("coordinates out of range"));
    }
    let time = if date.is_empty() || time.is_empty() {
        // No clock yet: the report is only as good as its arrival time, and never valid.
        match now {
            Some(t) if !valid => t,
            _ => return Err(H02Error::BadTime),
        }
    } else {
        date_time(date, time, utc_offset_s).ok_or(H02Error::BadTime)?
    };
    Ok((
        position(time, lat, lon, valid, knots, course.round() as u16),
        status,
    ))
}

/// BCD digits of `bytes`, two per byte, or `None` if a nibble is not 0–9.
fn bcd(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, &b| {
        let (hi, lo) = (b >> 4, b & 0x0F);
        (hi <= 9 && lo <= 9).then(|| acc * 100 + u64::from(hi) * 10 + u64::from(lo))
    })
}

/// Whether the first bytes of a would-be binary frame are consistent with §D.5, so that a stray
/// `$` is dropped as soon as the next bytes show it, without waiting for 32 bytes.
fn binary_prefix_ok(b: &[u8]) -> bool {
    b.iter().enumerate().skip(1).all(|(i, &x)| match i {
        1..=15 | 17..=20 | 22..=24 => x >> 4 <= 9 && x & 0x0F <= 9,
        21 => x >> 4 <= 9,
        _ => true,
    })
}

/// Parses a 32-byte binary frame (§D.5): BCD id, time, date, coordinates, speed and course, the
/// flags nibble (bit 1 valid, bit 2 north, bit 3 east) and the raw status word.
pub fn parse_binary(
    frame: &[u8; BINARY_LEN],
    utc_offset_s: Option<i32>,
) -> Result<(DeviceId, Position, u32), H02Error> {
    parse_binary_at(frame, 0, utc_offset_s)
}

/// Parses the long binary frame: the same fields as [`parse_binary`] after a 15-digit IMEI.
pub fn parse_binary_long(
    frame: &[u8; BINARY_LONG_LEN],
    utc_offset_s: Option<i32>,
) -> Result<(DeviceId, Position, u32), H02Error> {
    parse_binary_at(frame, LONG_ID_EXTRA, utc_offset_s)
}

/// The binary fields with the id `extra` bytes longer than 5.
fn parse_binary_at(
    frame: &[u8],
    extra: usize,
    utc_offset_s: Option<i32>,
) -> Result<(DeviceId, Position, u32), H02Error> {
    let (id, frame) = if extra == 0 {
        let id = bcd(frame.get(1..6).ok_or(H02Error::BadBcd)?).ok_or(H02Error::BadBcd)?;
        (format!("{id:010}"), frame)
    } else {
        let id_bytes = frame.get(1..9).ok_or(H02Error::BadBcd)?;
        // 15 digits: every nibble but the last, which pads the IMEI to 8 bytes.
        let mut id = bcd(id_bytes.get(..7).ok_or(H02Error::BadBcd)?).ok_or(H02Error::BadBcd)?;
        let last = id_bytes.get(7).copied().unwrap_or(0xFF) >> 4;
        if last > 9 {
            return Err(H02Error::BadBcd);
        }
        id = id * 10 + u64::from(last);
        (
            format!("{id:015}"),
            frame.get(extra..).ok_or(H02Error::BadBcd)?,
        )
    };
    let get = |r: std::ops::Range<usize>| frame.get(r).ok_or(H02Error::BadBcd);
    let hms = bcd(get(6..9)?).ok_or(H02Error::BadBcd)?;
    let dmy = bcd(get(9..12)?).ok_or(H02Error::BadBcd)?;
    let lat_raw = bcd(get(12..16)?).ok_or(H02Error::BadBcd)?;
    let lon_bytes = get(17..22)?;
    let (lon_full, flags) = match lon_bytes.split_last() {
        Some((&last, head)) => (
            bcd(head)
                .zip(bcd(&[last & 0xF0]))
                .map(|(h, l)| h * 10 + l / 10),
            last & 0x0F,
        ),
        None => (None, 0),
    };
    let lon_raw = lon_full.ok_or(H02Error::BadBcd)?;
    let speed_course = bcd(get(22..25)?).ok_or(H02Error::BadBcd)?;
    let status = frame
        .get(25..29)
        .and_then(|s| s.first_chunk::<4>())
        .map(|s| u32::from_be_bytes(*s))
        .ok_or(H02Error::BadBcd)?;

    let time = Timestamp::from_civil(
        2000 + (dmy % 100) as i32,
        ((dmy / 100) % 100) as u8,
        (dmy / 10_000) as u8,
        (hms / 10_000) as u8,
        ((hms / 100) % 100) as u8,
        (hms % 100) as u8,
    )
    .ok_or(H02Error::BadTime)?
    .add_millis(-i64::from(utc_offset_s.unwrap_or(0)) * 1000);
    // ddmmmmmm and dddmmmmmm: minutes with 4 implied decimals.
    let lat_min = (lat_raw % 1_000_000) as f64 / 10_000.0;
    let lon_min = (lon_raw % 1_000_000) as f64 / 10_000.0;
    if lat_min >= 60.0 || lon_min >= 60.0 {
        return Err(H02Error::BadField("binary minutes"));
    }
    let mut lat = (lat_raw / 1_000_000) as f64 + lat_min / 60.0;
    let mut lon = (lon_raw / 1_000_000) as f64 + lon_min / 60.0;
    if lat > 90.0 || lon > 180.0 {
        return Err(H02Error::BadField("coordinates out of range"));
    }
    if flags & 0b0100 == 0 {
        lat = -lat;
    }
    if flags & 0b1000 == 0 {
        lon = -lon;
    }
    let course = (speed_course % 1000) as u16;
    if course > 360 {
        return Err(H02Error::BadField("course"));
    }
    let fix = position(
        time,
        lat,
        lon,
        flags & 0b0010 != 0,
        (speed_course / 1000) as f64,
        course,
    );
    Ok((DeviceId::new(&id), fix, status))
}

fn reject(out: &mut Vec<Output>, reason: &'static str, bytes: usize) {
    out.push(Output::Rejected(Rejection::new(reason, bytes)));
}

/// One H02 connection (or UDP peer). The device id comes from each message; the session keeps
/// the last one seen.
pub struct H02Session {
    cfg: SessionConfig,
    device: Option<DeviceId>,
}

impl H02Session {
    pub fn new(cfg: SessionConfig) -> Self {
        H02Session { cfg, device: None }
    }

    /// Stamps an event with a (possibly new) device id, reusing the cached one when unchanged.
    /// H02 has no login: a new id is put to the admission policy (`[ingest] accept_unknown`)
    /// when it first appears, and a refused one ends the session.
    fn device(&mut self, id: &str) -> Result<DeviceId, SessionError> {
        match &self.device {
            Some(d) if d.as_str() == id => Ok(d.clone()),
            _ => {
                let d = DeviceId::new(id);
                if !self.cfg.admits(&d) {
                    self.device = None;
                    return Err(SessionError::Refused(d.to_string()));
                }
                self.device = Some(d.clone());
                Ok(d)
            }
        }
    }

    fn emit(
        &mut self,
        msg: Message<'_>,
        len: usize,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        let fix = |position, status: Option<u32>, buffered| {
            EventKind::Position(Fix {
                position,
                alarms: status.map(status_alarms).unwrap_or_default(),
                buffered,
                props: Default::default(),
            })
        };
        let heartbeat = |status: Option<u32>| EventKind::Heartbeat {
            alarms: status.map(status_alarms).unwrap_or_default(),
        };
        let (Message::Location { id, .. }
        | Message::Heartbeat { id, .. }
        | Message::Batch { id, .. }) = &msg;
        // An empty id (some firmware leaves it out) is the device this connection speaks for.
        let device_id = if id.is_empty() {
            match self
                .device
                .clone()
                .or_else(|| self.cfg.default_device_id.clone())
            {
                Some(d) => d,
                None => {
                    reject(out, "H02 message without an id before any id", len);
                    return Ok(());
                }
            }
        } else {
            self.device(id)?
        };
        let mut push = |kind| {
            out.push(Output::Event(Event {
                device_id: device_id.clone(),
                protocol: Protocol::H02,
                kind,
            }))
        };
        match msg {
            Message::Location {
                position, status, ..
            } => push(fix(position, status, false)),
            Message::Heartbeat { status, .. } => push(heartbeat(status)),
            // An empty batch still proves the device alive.
            Message::Batch { points, .. } if points.is_empty() => push(heartbeat(None)),
            // Recorded while out of coverage: history, not news; the live rules skip buffered
            // fixes.
            Message::Batch { points, .. } => {
                for (p, s) in points {
                    push(fix(p, s, true));
                }
            }
        }
        Ok(())
    }

    /// A `V4` is also the answer to the command in flight with the word it echoes (after its own
    /// event, which named the device).
    fn command_answer(&self, line: &[u8], out: &mut Vec<Output>) {
        let (Some((text, key)), Some(device_id)) = (super::h02_command::answer(line), &self.device)
        else {
            return;
        };
        out.push(Output::Event(Event {
            device_id: device_id.clone(),
            protocol: Protocol::H02,
            kind: EventKind::CommandAnswer(CommandAnswer {
                key,
                ok: true,
                text: Some(text),
                position: None,
            }),
        }));
    }

    /// Handles a text message at the front of `buf`. Returns `false` when it needs more bytes.
    fn text(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> Result<bool, SessionError> {
        let max = self.cfg.max_frame.max(2);
        let stop = buf
            .iter()
            .take(max)
            .enumerate()
            .skip(1)
            .find(|(_, &b)| matches!(b, b'#' | b'*' | b'$'));
        match stop {
            Some((end, b'#')) => {
                let len = end + 1;
                let now = (self.cfg.clock)();
                let parsed = buf
                    .get(..len)
                    .map(|l| parse_text_at(l, self.cfg.utc_offset_s, Some(now)));
                match parsed {
                    Some(Ok(msg)) => {
                        self.emit(msg, len, out)?;
                        self.command_answer(buf.get(..len).unwrap_or(&[]), out);
                    }
                    Some(Err(e)) => reject(out, e.reason(), len),
                    None => reject(out, "H02 internal framing error", len),
                }
                buf.advance(len);
            }
            Some((start, _)) => {
                reject(out, "H02 text message without '#'", start);
                buf.advance(start);
            }
            None if buf.len() >= max => {
                reject(out, "H02 text message over limit", max);
                buf.advance(max);
            }
            None => return Ok(false),
        }
        Ok(true)
    }

    /// Handles a binary frame at the front of `buf`. Returns `false` when it needs more bytes.
    ///
    /// The short form (10-digit id) and the long form (15-digit IMEI) share the marker; neither
    /// has a length or checksum. The long form is taken when its time and date are valid BCD where
    /// the short form's are not (an IMEI's digits fall where the short form has its clock).
    fn binary(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> Result<bool, SessionError> {
        let avail = buf.len().min(BINARY_LONG_LEN);
        let head = buf.get(..avail).unwrap_or(&[]);
        let short_ok = binary_prefix_ok(head.get(..avail.min(BINARY_LEN)).unwrap_or(&[]));
        let long_ok = long_prefix_ok(head);
        if !short_ok && !long_ok {
            reject(out, "H02 stray '$'", 1);
            buf.advance(1);
            return Ok(true);
        }
        // Undecided until the clock fields of both readings (up to byte 15) are in.
        if short_ok && long_ok && avail < 1 + 8 + 6 {
            return Ok(false);
        }
        let long = long_ok && !(short_ok && clock_ok(head.get(6..12)));
        let parsed = if long {
            let Some(frame) = buf.first_chunk::<BINARY_LONG_LEN>() else {
                return Ok(false);
            };
            (
                parse_binary_long(frame, self.cfg.utc_offset_s),
                BINARY_LONG_LEN,
            )
        } else {
            let Some(frame) = buf.first_chunk::<BINARY_LEN>() else {
                return Ok(false);
            };
            (parse_binary(frame, self.cfg.utc_offset_s), BINARY_LEN)
        };
        match parsed {
            (Ok((id, position, status)), len) => {
                let id = self.device(id.as_str())?;
                out.push(Output::Event(Event {
                    device_id: id,
                    protocol: Protocol::H02,
                    kind: EventKind::Position(Fix {
                        position,
                        alarms: status_alarms(status),
                        buffered: false,
                        props: Default::default(),
                    }),
                }));
                buf.advance(len);
            }
            (Err(e), _) => {
                // No checksum: drop only the marker and rescan, in case a real frame follows.
                reject(out, e.reason(), 1);
                buf.advance(1);
            }
        }
        Ok(true)
    }
}

/// Whether 6 BCD bytes read as `hhmmss ddmmyy` with plausible values.
fn clock_ok(b: Option<&[u8]>) -> bool {
    let Some(b) = b else { return false };
    let Some(v) = bcd(b) else { return false };
    let (hms, dmy) = (v / 1_000_000, v % 1_000_000);
    let (h, mi, se) = (hms / 10_000, hms / 100 % 100, hms % 100);
    let (d, mo) = (dmy / 10_000, dmy / 100 % 100);
    h < 24 && mi < 60 && se < 61 && (1..=31).contains(&d) && (1..=12).contains(&mo)
}

/// [`binary_prefix_ok`] for the long form: the IMEI (7 BCD bytes and a digit), then the same
/// fields 3 bytes later, with a plausible clock once it is in.
fn long_prefix_ok(b: &[u8]) -> bool {
    let fields_ok = b.iter().enumerate().skip(1).all(|(i, &x)| match i {
        1..=7 | 9..=18 | 20..=23 | 25..=27 => x >> 4 <= 9 && x & 0x0F <= 9,
        8 | 24 => x >> 4 <= 9,
        _ => true,
    });
    fields_ok && (b.len() < 15 || clock_ok(b.get(9..15)))
}

impl Session for H02Session {
    fn protocol(&self) -> Protocol {
        Protocol::H02
    }

    fn feed(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> Result<(), SessionError> {
        loop {
            let step = match buf.first() {
                None => return Ok(()),
                Some(b'*') => self.text(buf, out),
                Some(b'$') => self.binary(buf, out),
                Some(_) => {
                    let skip = buf
                        .iter()
                        .position(|&b| b == b'*' || b == b'$')
                        .unwrap_or(buf.len());
                    // Line ends after `#` belong to the message before; anything else is noise.
                    let noise = buf
                        .get(..skip)
                        .is_some_and(|g| g.iter().any(|&b| !b.is_ascii_whitespace()));
                    if noise {
                        reject(out, "H02 garbage between messages", skip);
                    }
                    buf.advance(skip);
                    Ok(true)
                }
            };
            match step {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                // A refused device: nothing more of this input is read.
                Err(e) => {
                    buf.clear();
                    return Err(e);
                }
            }
        }
    }

    fn device_id(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }

    fn encode_command(&mut self, _id: u64, cmd: &Downlink) -> Result<Encoded, EncodeError> {
        let Some(id) = self.device.as_ref().filter(|d| !d.as_str().is_empty()) else {
            return Err(EncodeError::NotReady);
        };
        match cmd {
            Downlink::Raw(text) => Ok(Encoded {
                bytes: Bytes::from(super::h02_command::encode(id.as_str(), text)),
                key: super::h02_command::key(text),
            }),
            _ => Err(EncodeError::Unsupported(
                "H02 command words are per model: send them as raw",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{events, parse_hex};

    const D6: &str =
        "*HQ,4106012345,V1,103015,A,2232.5858,N,11403.4719,E,033.64,090,200524,FFF7FBFF#";
    const BIN: &str =
        "24 41 06 01 16 60 12 45 43 13 11 16 50 35 31 30 06 00 43 18 21 0E 00 00 00 FF FF FB FF FF 00 24";

    fn feed(bytes: &[u8]) -> (Vec<Output>, BytesMut) {
        let mut s = H02Session::new(SessionConfig::default());
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).expect("h02 never fails");
        (out, buf)
    }

    #[test]
    fn a_new_id_is_put_to_the_admission_policy() {
        let admit: crate::protocol::Admission =
            std::sync::Arc::new(|id: &DeviceId| id.as_str() == "4106012345");
        let mut s = H02Session::new(SessionConfig {
            admit: admit.clone(),
            ..SessionConfig::default()
        });
        let mut out = Vec::new();
        let mut buf = BytesMut::from(format!("{D6}\r\n").as_bytes());
        s.feed(&mut buf, &mut out)
            .expect("a registered id is admitted");
        assert_eq!(events(&out).len(), 1, "{out:?}");
        // The binary vector carries 4106011660, which the policy refuses: the session ends
        // with nothing of it, and none of the input is left to read.
        out.clear();
        let mut buf = BytesMut::from(&parse_hex(BIN).expect("hex")[..]);
        let e = s.feed(&mut buf, &mut out).expect_err("refused");
        assert!(
            matches!(&e, SessionError::Refused(id) if id == "4106011660"),
            "{e:?}"
        );
        assert!(events(&out).is_empty() && buf.is_empty(), "{out:?}");
        // A sessionless decoder (MQTT raw payloads, `decode`) leaves the policy to its caller.
        let mut s = H02Session::new(SessionConfig {
            admit,
            sessionless: true,
            ..SessionConfig::default()
        });
        let mut buf = BytesMut::from(&parse_hex(BIN).expect("hex")[..]);
        s.feed(&mut buf, &mut out)
            .expect("sessionless refuses nothing");
        assert_eq!(events(&out).len(), 1);
    }

    #[test]
    fn v1_worked_example() {
        let (out, buf) = feed(format!("{D6}\r\n").as_bytes());
        assert!(buf.is_empty());
        assert_eq!(out.len(), 1, "{out:?}");
        let e = events(&out)[0];
        assert_eq!(e.device_id.as_str(), "4106012345");
        let p = e.position().expect("position");
        assert_eq!(p.time.to_string(), "2024-05-20T10:30:15Z");
        assert!((p.lat - 22.543_097).abs() < 1e-6, "{}", p.lat);
        assert!((p.lon - 114.057_865).abs() < 1e-6, "{}", p.lon);
        assert!((p.speed_kmh - 62.301_28).abs() < 1e-9);
        assert_eq!((p.course, p.valid), (90, true));
        let a = e.alarms();
        assert_eq!(a.active, Alarms::POWER_CUT);
        assert!(a.known.contains(Alarms::TAMPER));
    }

    #[test]
    fn binary_reference_vector() {
        let (out, buf) = feed(&parse_hex(BIN).expect("hex"));
        assert!(buf.is_empty());
        let e = events(&out)[0];
        assert_eq!(e.device_id.as_str(), "4106011660");
        let p = e.position().expect("position");
        assert_eq!(p.time.to_string(), "2016-11-13T12:45:43Z");
        assert!((p.lat - 50.588_55).abs() < 1e-6);
        assert!((p.lon - 4.530_35).abs() < 1e-6);
        assert!(p.valid);
        assert!(e.alarms().active.is_empty());
    }

    #[test]
    fn heartbeat_and_garbage() {
        let (out, _) = feed(b"xx\x00*HQ,4106012345,XT#zz*HQ,4106012345,NBR,103015,460,0,0,1,9340,3d84,30,200524,FFFFFBFE#");
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert!(matches!(ev[0].kind, EventKind::Heartbeat { .. }));
        assert_eq!(ev[1].alarms().active, Alarms::TOW);
        let rejected = out
            .iter()
            .filter(|o| matches!(o, Output::Rejected(_)))
            .count();
        assert_eq!(rejected, 2);
    }

    /// An NBR whose status word is followed by another field (Traccar's frames end
    /// `,281216,FFFFFBFF,2#`): the word after the date is read, here a power cut (bit 19).
    #[test]
    fn a_status_word_before_a_last_field_is_read() {
        let (out, _) = feed(b"*HQ,4106012345,NBR,103015,460,0,0,1,9340,3d84,30,200524,FFF7FBFF,5#");
        let ev = events(&out);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].alarms().active.contains(Alarms::POWER_CUT), "{ev:?}");
        // An 8-digit cell id before the date is not the status word.
        let (out, _) = feed(b"*HQ,4106012345,NBR,103015,460,0,0,1,9340,12345678,30,200524,5#");
        assert!(events(&out)[0].alarms().known.is_empty());
    }

    #[test]
    fn impossible_dates_and_bad_fields_are_rejected() {
        for bad in [
            "*HQ,4106012345,V1,103015,A,2232.5858,N,11403.4719,E,033.64,090,300224,FFFFFBFF#",
            "*HQ,4106012345,V1,253015,A,2232.5858,N,11403.4719,E,033.64,090,200524,FFFFFBFF#",
            "*HQ,4106012345,V1,103015,A,2272.5858,N,11403.4719,E,033.64,090,200524,FFFFFBFF#",
            "*HQ,4106012345,V1,103015,X,2232.5858,N,11403.4719,E,033.64,090,200524,FFFFFBFF#",
            "*HQ,41060A2345,V1,103015,A,2232.5858,N,11403.4719,E,033.64,090,200524,FFFFFBFF#",
        ] {
            let (out, buf) = feed(bad.as_bytes());
            assert!(buf.is_empty());
            assert!(events(&out).is_empty(), "{bad} accepted");
        }
    }

    /// A V1 without a fix whose fields are empty or zeroed (frames from Traccar's test suite) is
    /// still the device speaking: a heartbeat carrying its status word's alarms. A V1 that claims
    /// a fix must still parse whole.
    #[test]
    fn invalid_v1_without_fields_is_a_heartbeat_with_its_status() {
        let (out, _) = feed(b"*HQ,353505510948929,V1,,V,,N,,E,0.00,0,,FFFFF7FF,f0,a,11a0,c0c6#");
        let ev = events(&out);
        assert_eq!(ev.len(), 1, "{out:?}");
        let EventKind::Heartbeat { alarms } = ev[0].kind else {
            panic!("heartbeat expected: {out:?}")
        };
        assert!(alarms.known.contains(Alarms::POWER_CUT) && alarms.active.is_empty());
        let (out, _) = feed(b"*HQ,353588020068342,V1,000000,V,0.0000,0,0.0000,0,0.00,0.00,000000,ffffffff,000106,000002,000203,004c87,16#");
        let ev = events(&out);
        assert!(
            matches!(ev[..], [e] if matches!(e.kind, EventKind::Heartbeat { .. })),
            "{out:?}"
        );
        // The status word's alarms ride along: bit 19 clear is a power cut.
        let (out, _) = feed(b"*HQ,4106012345,V1,,V,,N,,E,0.00,0,,FFF7FFFF#");
        assert!(events(&out)[0].alarms().active.contains(Alarms::POWER_CUT));
        // A fix claimed with a broken coordinate is still rejected.
        let (out, _) = feed(b"*HQ,4106012345,V1,103015,A,,N,,E,0.00,0,200524,FFFFFBFF#");
        assert!(events(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn partial_and_overlong_lines() {
        let (out, buf) = feed(b"*HQ,4106012345,V1,1030");
        assert!(out.is_empty());
        assert_eq!(buf.len(), 22);
        let max = SessionConfig::default().max_frame;
        let long = vec![b'1'; max + 1000];
        let mut data = b"*HQ,".to_vec();
        data.extend_from_slice(&long);
        let (out, buf) = feed(&data);
        assert!(buf.len() < max);
        assert!(matches!(out[0], Output::Rejected(_)));
    }

    #[test]
    fn stray_dollar_before_text_is_dropped_at_once() {
        let (out, buf) = feed(format!("${D6}").as_bytes());
        assert!(buf.is_empty());
        assert_eq!(events(&out).len(), 1);
    }

    /// The example of the vendor's V1.0.5 document, §4 "Blind Spots Uploading (BC)", with its
    /// stray space, received on 2024-06-04.
    const BC: &str = "*HQ,353505910449999,BC,052825,138,A,2239.4210,N,11400.8825,E,0.00,348,03182512,FFFFFFFF,1CC,0,25FC,F48;A,2239.4210,N,11400.8825,E,0.00,348, 03182612,FFFFFFFF,1CC,0,25FC,F48#";

    fn feed_at(bytes: &[u8], now: &str, utc_offset_s: Option<i32>) -> Vec<Output> {
        let now = Timestamp::parse_rfc3339(now).expect("time");
        let cfg = SessionConfig {
            clock: std::sync::Arc::new(move || now),
            utc_offset_s,
            ..SessionConfig::default()
        };
        let mut s = H02Session::new(cfg);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).expect("h02 never fails");
        assert!(buf.is_empty());
        out
    }

    fn times(out: &[Output]) -> Vec<String> {
        events(out)
            .iter()
            .filter_map(|e| e.position().map(|p| p.time.to_string()))
            .collect()
    }

    #[test]
    fn bc_batch_is_buffered_positions_without_a_reply() {
        let out = feed_at(BC.as_bytes(), "2024-06-04T08:00:00Z", None);
        assert!(out.iter().all(|o| matches!(o, Output::Event(_))), "{out:?}");
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        for e in &ev {
            assert_eq!(e.device_id.as_str(), "353505910449999");
            let EventKind::Position(fix) = &e.kind else {
                panic!("{e:?}");
            };
            assert!(fix.buffered);
            let p = &fix.position;
            assert!((p.lat - 22.657_017).abs() < 1e-6, "{}", p.lat);
            assert!((p.lon - 114.014_708).abs() < 1e-6, "{}", p.lon);
            assert_eq!((p.valid, p.course, p.speed_kmh), (true, 348, 0.0));
            assert!(e.alarms().active.is_empty());
        }
        assert_eq!(
            times(&out),
            ["2024-06-03T18:25:12Z", "2024-06-03T18:26:12Z"]
        );
    }

    #[test]
    fn bc_times_fall_in_the_latest_month_they_can() {
        let one = |when: &str| {
            format!(
                "*HQ,4106012345,BC,120000,60,V,2232.5858,S,11403.4719,W,1.00,90,{when},FFFFFFFE#"
            )
        };
        // Received on the 2nd: the 30th is last month's; the 2nd itself this month's.
        let out = feed_at(one("30235959").as_bytes(), "2024-03-02T00:10:00Z", None);
        assert_eq!(times(&out), ["2024-01-30T23:59:59Z"], "no 30 February");
        let out = feed_at(one("02000500").as_bytes(), "2024-03-02T00:10:00Z", None);
        assert_eq!(times(&out), ["2024-03-02T00:05:00Z"]);
        // A 31st received on 1 May: April has none, so March.
        let out = feed_at(one("31120000").as_bytes(), "2024-05-01T00:00:00Z", None);
        assert_eq!(times(&out), ["2024-03-31T12:00:00Z"]);
        // Over the new year.
        let out = feed_at(one("28080000").as_bytes(), "2025-01-03T00:00:00Z", None);
        assert_eq!(times(&out), ["2024-12-28T08:00:00Z"]);
        // A device on local time (+08:00): its 1st, 07:00 is 31 May 23:00 UTC, received in June.
        let out = feed_at(
            one("01070000").as_bytes(),
            "2024-06-01T01:00:00Z",
            Some(8 * 3600),
        );
        assert_eq!(times(&out), ["2024-05-31T23:00:00Z"]);
        let ev = events(&out);
        let p = ev[0].position().expect("position");
        assert!(!p.valid && p.lat < 0.0 && p.lon < 0.0);
        assert_eq!(ev[0].alarms().active, Alarms::TOW);
    }

    #[test]
    fn bad_bc_batches_are_rejected_whole() {
        let good = "A,2239.4210,N,11400.8825,E,0.00,348,03182512,FFFFFFFF";
        let at = "2024-06-04T08:00:00Z";
        for bad in [
            format!("*HQ,4106012345,BC,052825,138,{good};X,2239.4210,N,11400.8825,E,0,0,03182512#"),
            format!("*HQ,4106012345,BC,052825,138,{good};A,2239.4210,N,11400.8825,E,0,0,3318251#"),
            format!("*HQ,4106012345,BC,052825,138,{good};A,2239.4210,N,11400.8825,E,0,0#"),
            format!("*HQ,4106012345,BC,052825,138,{good};A,9239.4210,N,11400.8825,E,0,0,03182512#"),
            format!("*HQ,4106012345,BC,052825,138,{good},GGGGGGGG#"),
            format!("*HQ,4106012345,BC,05:28,138,{good}#"),
            format!("*HQ,4106012345,BC,052825,{}#", vec![good; 101].join(";")),
        ] {
            let out = feed_at(bad.as_bytes(), at, None);
            assert!(events(&out).is_empty(), "{bad} accepted");
            assert!(matches!(out[..], [Output::Rejected(_)]), "{out:?}");
        }
        // Without a clock a batch cannot be dated.
        let line = format!("*HQ,4106012345,BC,052825,138,{good}#");
        assert_eq!(parse_text(line.as_bytes(), None), Err(H02Error::BadTime));
        // An empty batch is a sign of life; 100 points (about 6 KB) fit the default frame.
        let out = feed_at(b"*HQ,4106012345,BC,052825,0,#", at, None);
        assert!(matches!(events(&out)[0].kind, EventKind::Heartbeat { .. }));
        let full = format!("*HQ,4106012345,BC,052825,0,{}#", vec![good; 100].join(";"));
        assert_eq!(feed_at(full.as_bytes(), at, None).len(), 100);
    }
}
