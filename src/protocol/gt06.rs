//! GT06 / Concox (protocols.md §A): framing, message decoding and the per-connection session.
//!
//! Three layers, each usable on its own:
//! - [`parse_frame`]: one frame at the front of a byte slice, framed by its length field and
//!   checked (stop bytes, CRC-16/X-25). Borrows, never allocates.
//! - [`decode_packet`]: a checked frame to a typed [`Message`]. Borrows, never allocates.
//! - [`Gt06Session`]: login state, time offsets, normalised events and the exact replies.

use super::downlink::{Downlink, EncodeError, Encoded};
use super::gt06_wifi::BareWifi;
use super::{Output, Rejection, Session, SessionConfig, SessionError};
use crate::event::{
    AlarmReport, Alarms, AnswerKey, Cell, CommandAnswer, DeviceId, Event, EventKind, Fix, Position,
    Protocol, Timestamp, WifiAp,
};
use bytes::{Buf, Bytes, BytesMut};

/// CRC-16/X-25 ("CRC-ITU", §A.2). Slice-by-16 tables, built at compile time: a 0x12 frame is
/// about 32 checked bytes, two 16-byte strides.
const X25: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_IBM_SDLC);

/// The crate's compile-time tables: `TABLES[k][b]` is the CRC contribution of byte `b` followed
/// by `k` zero bytes, which lets [`crc16_x25`] fold 16, 8, 4 or 2 bytes per step.
const TABLES: [[u16; 256]; 16] = *X25.table();

/// Folds `N` bytes into the (reflected, 16-bit) register: only the first two bytes meet the
/// register, every byte is an independent table lookup, so the loads run in parallel.
#[inline(always)]
fn fold<const N: usize>(crc: u16, chunk: &[u8; N]) -> u16 {
    let [lo, hi] = crc.to_le_bytes();
    let mut acc = 0u16;
    let mut i = 0;
    while i < N {
        let b = match i {
            0 => chunk[0] ^ lo,
            1 => chunk[1] ^ hi,
            _ => chunk[i],
        };
        acc ^= TABLES[N - 1 - i][b as usize];
        i += 1;
    }
    acc
}

/// CRC-16/X-25 of `bytes` (the coverage is LEN through SERIAL, §A.2). Same result as
/// `X25.checksum`, specialised for the short frames of GT06 (a 0x12 covers 30 bytes: 16 + 8 +
/// 4 + 2 instead of a 30-step dependency chain).
pub fn crc16_x25(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    let mut rest = bytes;
    while let Some((c, r)) = rest.split_first_chunk::<16>() {
        crc = fold(crc, c);
        rest = r;
    }
    if let Some((c, r)) = rest.split_first_chunk::<8>() {
        crc = fold(crc, c);
        rest = r;
    }
    if let Some((c, r)) = rest.split_first_chunk::<4>() {
        crc = fold(crc, c);
        rest = r;
    }
    if let Some((c, r)) = rest.split_first_chunk::<2>() {
        crc = fold(crc, c);
        rest = r;
    }
    if let Some(&b) = rest.first() {
        crc = (crc >> 8) ^ TABLES[0][((crc as u8) ^ b) as usize];
    }
    !crc
}

/// Smallest LEN a frame can declare: PROTO (1) + SERIAL (2) + CRC (2).
const MIN_LEN: usize = 5;

pub const PROTO_LOGIN: u8 = 0x01;
pub const PROTO_LOCATION: u8 = 0x12;
pub const PROTO_STATUS: u8 = 0x13;
/// Heartbeat of the GK310 (§A.4): a status byte and battery, answered like 0x13.
pub const PROTO_HEARTBEAT_GK310: u8 = 0x23;
pub const PROTO_ALARM: u8 = 0x16;
pub const PROTO_LOCATION_UTC: u8 = 0x22;
pub const PROTO_ALARM_UTC: u8 = 0x26;
pub const PROTO_ALARM_FENCES: u8 = 0x27;
pub const PROTO_TIME_REQUEST: u8 = 0x8A;
pub const PROTO_INFO: u8 = 0x94;
pub const PROTO_LOCATION_4G: u8 = 0xA0;
pub const PROTO_ALARM_4G: u8 = 0xA4;
/// AZ735 / SL4X GPS+LBS+status; in `79 79` frames the AZ735 extended layout (length-prefixed GPS).
pub const PROTO_GPS_STATUS_4: u8 = 0x32;
/// X1 location (4 bytes of data/alarm flags before the GPS block); SL4X sends LBS under it.
pub const PROTO_X1_GPS: u8 = 0x34;
/// Jimi modular report (`79 79`): type-length modules, GPS in module 0x33.
pub const PROTO_GPS_MODULAR: u8 = 0x70;
/// Text answer to a server command (`79 79`); "where" answers carry a position.
pub const PROTO_STRING_INFO: u8 = 0x21;
/// Address request (JM-VL03 §6): a fix and the phone number the address is for.
pub const PROTO_ADDRESS_REQUEST: u8 = 0x2A;
/// Address answer in UTF-16 (Chinese), `78 78` frame.
pub const PROTO_ADDRESS_CN: u8 = 0x17;
/// Address answer in ASCII (English), `79 79` frame.
pub const PROTO_ADDRESS_EN: u8 = 0x97;
/// LBS alarm of the GK310 / JM-LL301 (4G cell, no GPS block).
pub const PROTO_LBS_ALARM: u8 = 0xA5;
/// LBS address request of the GK310 (4G cell, then a phone number).
pub const PROTO_LBS_ADDRESS: u8 = 0xA7;
/// LBS + status alarm without a fix (JM01 and others).
pub const PROTO_LBS_STATUS: u8 = 0x19;

/// A checked frame, borrowing the input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Packet<'a> {
    /// `79 79` frame with a 2-byte length (§A.1).
    pub extended: bool,
    pub proto: u8,
    /// Bytes between PROTO and SERIAL.
    pub content: &'a [u8],
    /// The device's information serial number; replies echo it (§A.1).
    pub serial: u16,
}

/// Why the bytes at a start marker are not a frame. The caller skips the marker and resyncs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    #[error("no start marker at the front")]
    NoStartMarker,
    #[error("declared length {0} is below the minimum of 5")]
    LengthTooSmall(usize),
    #[error("frame of {declared} bytes exceeds the limit of {max}")]
    TooLong { declared: usize, max: usize },
    #[error("no 0D 0A at the end the length declares")]
    BadStop,
    #[error("checksum {received:#06x} does not match {computed:#06x}")]
    BadCrc { received: u16, computed: u16 },
}

impl FrameError {
    /// A static label for metrics and [`Rejection`].
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::NoStartMarker => "no start marker",
            FrameError::LengthTooSmall(_) => "length field too small",
            FrameError::TooLong { .. } => "declared length over max_frame",
            FrameError::BadStop => "bad stop bytes",
            FrameError::BadCrc { .. } => "bad crc",
        }
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at + 2) {
        Some(&[h, l]) => Some(u16::from_be_bytes([h, l])),
        _ => None,
    }
}

#[inline]
fn be32(b: &[u8], at: usize) -> Option<u32> {
    match b.get(at..at + 4) {
        Some(&[a, b2, c, d]) => Some(u32::from_be_bytes([a, b2, c, d])),
        _ => None,
    }
}

/// Parses the frame at the front of `buf` (§A.1): framed by LEN, then the stop bytes at the
/// computed end and the CRC are checked. Trailing vendor bytes inside LEN are kept in `content`.
///
/// `Ok(None)`: a plausible frame that is not complete yet (its declared size is at most
/// `max_frame`, so waiting for it keeps memory bounded). `Ok(Some((packet, n)))`: `n` bytes make
/// up the frame.
pub fn parse_frame(
    buf: &[u8],
    max_frame: usize,
) -> Result<Option<(Packet<'_>, usize)>, FrameError> {
    let (extended, len_size) = match buf {
        [0x78, 0x78, ..] => (false, 1),
        [0x79, 0x79, ..] => (true, 2),
        [] | [0x78] | [0x79] => return Ok(None),
        _ => return Err(FrameError::NoStartMarker),
    };
    // Even the smallest frame must fit, or a header could sit in the buffer forever.
    let min_total = 2 + len_size + MIN_LEN + 2;
    if min_total > max_frame {
        return Err(FrameError::TooLong {
            declared: min_total,
            max: max_frame,
        });
    }
    let len = if extended {
        match be16(buf, 2) {
            Some(l) => l as usize,
            None => return Ok(None),
        }
    } else {
        match buf.get(2) {
            Some(&l) => l as usize,
            None => return Ok(None),
        }
    };
    if len < MIN_LEN {
        return Err(FrameError::LengthTooSmall(len));
    }
    let total = 2 + len_size + len + 2;
    if total > max_frame {
        return Err(FrameError::TooLong {
            declared: total,
            max: max_frame,
        });
    }
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    if frame.get(total - 2..) != Some(&[0x0D, 0x0A][..]) {
        return Err(FrameError::BadStop);
    }
    // CRC covers LEN .. SERIAL; the CRC itself sits just before 0D 0A.
    let crc_at = total - 4;
    let received = be16(frame, crc_at).unwrap_or(0);
    let covered = frame.get(2..crc_at).unwrap_or(&[]);
    let computed = crc16_x25(covered);
    if received != computed {
        return Err(FrameError::BadCrc { received, computed });
    }
    let proto_at = 2 + len_size;
    let serial_at = crc_at - 2;
    let proto = frame.get(proto_at).copied().unwrap_or(0);
    let content = frame.get(proto_at + 1..serial_at).unwrap_or(&[]);
    let serial = be16(frame, serial_at).unwrap_or(0);
    Ok(Some((
        Packet {
            extended,
            proto,
            content,
            serial,
        },
        total,
    )))
}

/// Offset of the first `78 78` or `79 79` in `buf`.
pub fn find_start(buf: &[u8]) -> Option<usize> {
    buf.windows(2)
        .position(|w| w[0] == w[1] && (w[0] == 0x78 || w[0] == 0x79))
}

/// The 18-byte GPS block shared by locations and alarms (§A.5), still in wire units.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Gps {
    /// The device's clock reading taken as if it were UTC; the session applies the offset.
    pub device_time: Timestamp,
    pub satellites: u8,
    /// Degrees × 1 800 000, unsigned; the hemisphere is in `course_status`.
    pub lat_raw: u32,
    pub lon_raw: u32,
    pub speed_kmh: u8,
    /// Bit 12 fix valid, bit 11 west, bit 10 north, bits 9..0 course (§A.5).
    pub course_status: u16,
    /// Read from a text answer (`WHERE#`), which gives no satellite count.
    pub from_text: bool,
}

/// Degrees per raw unit (§A.5: degrees × 1 800 000).
const DEG_PER_UNIT: f64 = 1.0 / 1_800_000.0;

/// Days before each month in a common year.
const DAYS_BEFORE: [u16; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

/// Days since 1970-01-01 of 2000-01-01.
const DAYS_TO_2000: i64 = 10_957;

/// GT06 time fields (year 2000 + YY, YY ≤ 99) to a timestamp, `None` for an impossible date.
/// Within 2000..=2099 every fourth year is a leap year, so the calendar needs no division: this
/// runs once per fix and is on the hot path (`Timestamp::from_civil` gives the same instants).
fn civil_2000(yy: u8, mo: u8, dd: u8, hh: u8, mi: u8, ss: u8) -> Option<Timestamp> {
    let leap = yy & 3 == 0;
    let dim = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if yy > 99 || dd == 0 || dd > dim || hh > 23 || mi > 59 || ss > 60 {
        return None;
    }
    let before = *DAYS_BEFORE.get(mo as usize - 1)? as i64 + i64::from(leap && mo > 2);
    let y = yy as i64;
    let days = DAYS_TO_2000 + y * 365 + (y + 3) / 4 + before + dd as i64 - 1;
    let secs = days * 86_400 + hh as i64 * 3600 + mi as i64 * 60 + ss as i64;
    Some(Timestamp::from_secs(secs))
}

impl Gps {
    /// Parses the block at the start of `b`. `Err` for a short block, an impossible date or
    /// coordinates off the globe: such a frame is rejected rather than given an invented fix.
    pub fn parse(b: &[u8]) -> Result<Gps, DecodeError> {
        let Some(&[yy, mo, dd, hh, mi, ss, info]) = b.get(..7) else {
            return Err(DecodeError::Truncated);
        };
        let (Some(lat_raw), Some(lon_raw), Some(&speed_kmh), Some(course_status)) =
            (be32(b, 7), be32(b, 11), b.get(15), be16(b, 16))
        else {
            return Err(DecodeError::Truncated);
        };
        let device_time = civil_2000(yy, mo, dd, hh, mi, ss).ok_or(DecodeError::BadTime)?;
        if lat_raw > 90 * 1_800_000 || lon_raw > 180 * 1_800_000 {
            return Err(DecodeError::BadCoordinates);
        }
        Ok(Gps {
            device_time,
            satellites: info & 0x0F,
            lat_raw,
            lon_raw,
            speed_kmh,
            course_status,
            from_text: false,
        })
    }

    /// Course bit 12 and at least one satellite (§A.7): a positioned flag with no satellites is
    /// an old fix repeated. A position from text (`WHERE#`) counts no satellites and trusts
    /// the flag.
    pub fn valid(&self) -> bool {
        self.course_status & 0x1000 != 0 && (self.satellites > 0 || self.from_text)
    }

    /// Bit 10 set means north; clear means south (the opposite sense of bit 11).
    pub fn lat(&self) -> f64 {
        let v = self.lat_raw as f64 * DEG_PER_UNIT;
        if self.course_status & 0x0400 != 0 {
            v
        } else {
            -v
        }
    }

    pub fn lon(&self) -> f64 {
        let v = self.lon_raw as f64 * DEG_PER_UNIT;
        if self.course_status & 0x0800 != 0 {
            -v
        } else {
            v
        }
    }

    pub fn course(&self) -> u16 {
        self.course_status & 0x03FF
    }

    /// The normalised fix, with the device clock read at `utc_offset_s` (UTC = local − offset).
    pub fn position(&self, utc_offset_s: i32) -> Position {
        Position {
            time: self.device_time.add_millis(-(utc_offset_s as i64) * 1000),
            lat: self.lat(),
            lon: self.lon(),
            valid: self.valid(),
            speed_kmh: self.speed_kmh as f64,
            course: self.course(),
            satellites: Some(self.satellites),
            altitude_m: None,
            cell: None,
            wifi: None,
        }
    }
}

/// Login 0x01 (§A.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Login<'a> {
    /// 8 bytes of BCD, leading 0 nibble included.
    pub imei_bcd: &'a [u8; 8],
    pub type_code: Option<u16>,
    /// Device clock offset east of UTC in seconds, from the timezone/language word.
    pub utc_offset_s: Option<i32>,
}

/// Locations 0x12, 0x22, 0xA0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Location {
    pub gps: Gps,
    /// 0x22 / 0xA0 ACC byte.
    pub acc: Option<bool>,
    pub upload_mode: Option<u8>,
    /// Re-upload flag: the fix was buffered while offline.
    pub reupload: bool,
    /// The time is UTC by construction (Unix seconds, or a text answer the server asked for), so
    /// no device clock offset applies.
    pub utc: bool,
    /// Metres, from the modular report's fix module.
    pub altitude_m: Option<i16>,
}

impl Location {
    /// A location with the 3 flag bytes of a 0x22 (§A.5: ACC, upload mode, re-upload), when
    /// the frame has them.
    fn flagged(gps: Gps, flags: Option<&[u8]>) -> Self {
        Location {
            gps,
            acc: flags.and_then(|f| f.first()).map(|&a| a != 0),
            upload_mode: flags.and_then(|f| f.get(1)).copied(),
            reupload: flags.and_then(|f| f.get(2)).is_some_and(|&r| r == 1),
            utc: false,
            altitude_m: None,
        }
    }

    /// A location with no ACC / upload flags.
    pub fn plain(gps: Gps, utc: bool) -> Self {
        Location {
            gps,
            acc: None,
            upload_mode: None,
            reupload: false,
            utc,
            altitude_m: None,
        }
    }
}

/// An LBS or Wi-Fi report without a GNSS fix (§A.4: 0x24, 0x28, 0x2C, 0x2E, 0xA1, ...): the cell
/// and Wi-Fi data are kept, the position is never valid.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Lbs {
    /// The report's device time, when the message carries one.
    pub device_time: Option<Timestamp>,
    pub cell: Option<Cell>,
    pub wifi: Option<WifiAp>,
}

/// Status block of 0x13 and alarm packets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Status {
    pub terminal_info: u8,
    pub voltage_level: Option<u8>,
    pub gsm_level: Option<u8>,
}

/// Alarms 0x16, 0x26, 0x27, 0xA4.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AlarmPacket {
    /// `None` when the GPS block carries an impossible date (no fix time yet) or coordinates off
    /// the globe: the alarm still counts, the position does not.
    pub gps: Option<Gps>,
    pub status: Status,
    /// `None` where the layout has no alarm code (VXT01).
    pub alarm_code: Option<u8>,
    /// 0x27 fence number (0xFF = none).
    pub fence: Option<u8>,
    /// The serving cell of an LBS alarm (0xA5), which has no GPS block.
    pub cell: Option<Cell>,
}

/// A decoded message, borrowing the frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Message<'a> {
    Login(Login<'a>),
    Location(Location),
    /// 0x13 heartbeat: terminal info, voltage, GSM level, then the alarm byte (§A.5).
    Status {
        status: Status,
        alarm_code: Option<u8>,
    },
    Alarm(AlarmPacket),
    /// 0x23: a sign of life that expects the short reply (§A.4).
    Heartbeat,
    TimeRequest,
    /// 0x94: sub-type and data (§A.5). Not acknowledged.
    Info {
        kind: u8,
        data: &'a [u8],
    },
    /// Cell / Wi-Fi report without a fix.
    Lbs(Lbs),
    /// 0x2A: the device asks for the address of its fix, to text it to `phone`.
    AddressRequest {
        gps: Gps,
        phone: &'a [u8],
        /// 0x01 Chinese, 0x02 English, 0x00 no answer wanted.
        language: u8,
    },
    /// A text answer (0x21) that carries no position.
    Text,
    /// A protocol number this decoder does not handle.
    Unsupported(u8),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("content too short for its protocol number")]
    Truncated,
    #[error("impossible date/time")]
    BadTime,
    #[error("coordinates off the globe")]
    BadCoordinates,
    #[error("IMEI is not BCD")]
    BadImei,
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated content",
            DecodeError::BadTime => "invalid device time",
            DecodeError::BadCoordinates => "coordinates out of range",
            DecodeError::BadImei => "login IMEI not BCD",
        }
    }
}

/// Timezone/language word of the login (§A.5): bits 15..4 = |offset| as decimal hhmm, bit 3 =
/// west. `None` for values that are not a real offset.
fn login_offset(word: u16) -> Option<i32> {
    let v = (word >> 4) as i32;
    let (h, m) = (v / 100, v % 100);
    if h > 14 || m > 59 {
        return None;
    }
    let s = h * 3600 + m * 60;
    Some(if word & 0x08 != 0 { -s } else { s })
}

/// Decodes a checked frame. Extra bytes past the known layout are ignored (§A.7: clones append
/// mileage, ignition and more).
pub fn decode_packet<'a>(p: &Packet<'a>) -> Result<Message<'a>, DecodeError> {
    let c = p.content;
    Ok(match p.proto {
        PROTO_LOGIN => {
            let imei_bcd = c.first_chunk::<8>().ok_or(DecodeError::Truncated)?;
            if imei_bcd.iter().any(|&b| b >> 4 > 9 || b & 0x0F > 9) {
                return Err(DecodeError::BadImei);
            }
            Message::Login(Login {
                imei_bcd,
                type_code: be16(c, 8),
                utc_offset_s: be16(c, 10).and_then(login_offset),
            })
        }
        PROTO_LOCATION | PROTO_LOCATION_UTC | PROTO_LOCATION_4G => {
            // QH302R clones put the IMEI (8 BCD bytes) before the GPS block of a 0x12: the
            // content is then 8 bytes longer than the standard 26.
            let at = if p.proto == PROTO_LOCATION && c.len() == 34 && is_bcd(&c[..8]) {
                8
            } else {
                0
            };
            let c = c.get(at..).ok_or(DecodeError::Truncated)?;
            let gps = Gps::parse(c)?;
            // 0x22: flags follow the 8-byte LBS block, 9 bytes in SeeWorld's LEN 0x2F with its
            // 4-byte cell id (§A.7); 0xA0: the 4G LBS block (MNC is 2 bytes when MCC bit 15 is
            // set, LAC 4, cell 8).
            // An MCC with bit 15 set has a 2-byte MNC before the LAC (§A.4), in 0x22 as in 0xA0.
            let wide_mnc = be16(c, 18).is_some_and(|mcc| mcc & 0x8000 != 0);
            let flags_at = match p.proto {
                PROTO_LOCATION_UTC if !p.extended && c.len() == SEEWORLD_0X22_CONTENT => {
                    Some(27 + usize::from(wide_mnc))
                }
                PROTO_LOCATION_UTC => Some(26 + usize::from(wide_mnc)),
                PROTO_LOCATION_4G => be16(c, 18).map(|mcc| {
                    let mnc = if mcc & 0x8000 != 0 { 2 } else { 1 };
                    18 + 2 + mnc + 4 + 8
                }),
                _ => None,
            };
            Message::Location(Location::flagged(
                gps,
                flags_at.and_then(|at| c.get(at..at + 3)),
            ))
        }
        // GPS + LBS 0x2D and 0x37 carry the flags of a 0x22 after their LBS block, as Traccar
        // reads them (ACC, upload mode, re-upload): a re-uploaded fix is buffered, not live.
        0x2D | 0x37 => {
            let gps = Gps::parse(c)?;
            let at = 26 + usize::from(be16(c, 18).is_some_and(|mcc| mcc & 0x8000 != 0));
            Message::Location(Location::flagged(gps, c.get(at..at + 3)))
        }
        proto if gps_first(proto, p.extended, c.len()) => {
            Message::Location(Location::plain(Gps::parse(c)?, false))
        }
        PROTO_X1_GPS if !p.extended && c.len() != SL4X_LBS_CONTENT => {
            let gps = Gps::parse(c.get(4..).ok_or(DecodeError::Truncated)?)?;
            Message::Location(Location::plain(gps, false))
        }
        PROTO_GPS_STATUS_4 | 0x33 if p.extended => decode_az735(c)?,
        PROTO_GPS_MODULAR if p.extended => decode_modular(c)?,
        PROTO_STRING_INFO if p.extended => decode_string_info(c)?,
        proto if lbs_layout(proto, p.extended, c.len()).is_some() => {
            let layout = lbs_layout(proto, p.extended, c.len()).unwrap_or_default();
            Message::Lbs(decode_lbs(c, layout)?)
        }
        super::gt06_wifi::PROTO_WIFI_4 if !p.extended => {
            let (device_time, wifi) =
                super::gt06_wifi::decode_wifi_4(c).ok_or(DecodeError::Truncated)?;
            Message::Lbs(Lbs {
                device_time,
                cell: None,
                wifi,
            })
        }
        PROTO_STATUS => {
            let &terminal_info = c.first().ok_or(DecodeError::Truncated)?;
            Message::Status {
                status: Status {
                    terminal_info,
                    voltage_level: c.get(1).copied(),
                    gsm_level: c.get(2).copied(),
                },
                alarm_code: c.get(3).copied(),
            }
        }
        PROTO_ALARM | PROTO_ALARM_UTC | PROTO_ALARM_FENCES | PROTO_ALARM_4G => {
            let gps = match Gps::parse(c) {
                Ok(g) => Some(g),
                Err(DecodeError::BadTime | DecodeError::BadCoordinates) => None,
                Err(e) => return Err(e),
            };
            let layout = AlarmLayout::of(p.proto, p.extended, c.len());
            let at = layout.status_at(c)?;
            let Some(&[terminal_info, voltage, gsm, alarm_byte]) = c.get(at..at + 4) else {
                return Err(DecodeError::Truncated);
            };
            let alarm_code = (layout != AlarmLayout::Vxt01).then_some(alarm_byte);
            Message::Alarm(AlarmPacket {
                gps,
                status: Status {
                    terminal_info,
                    voltage_level: Some(voltage),
                    gsm_level: Some(gsm),
                },
                alarm_code,
                fence: if p.proto == PROTO_ALARM_FENCES {
                    c.get(at + 5).copied()
                } else {
                    None
                },
                cell: None,
            })
        }
        PROTO_HEARTBEAT_GK310 if !p.extended => Message::Heartbeat,
        PROTO_TIME_REQUEST => Message::TimeRequest,
        PROTO_ADDRESS_REQUEST if !p.extended => {
            let gps = Gps::parse(c)?;
            let phone = c.get(18..39).ok_or(DecodeError::Truncated)?;
            let language = c.get(40).copied().unwrap_or(0);
            Message::AddressRequest {
                gps,
                phone,
                language,
            }
        }
        // MCC 2, MNC 1, LAC 2, cell 3, then the status block of the alarm packets. Longer frames
        // under this number are Space10x multi-cell lists.
        // An MCC with bit 15 set has a 2-byte MNC (§A.4): the status block a byte later.
        PROTO_LBS_STATUS if !p.extended && c.len() < 0x17 - 5 => {
            let wide_mnc = be16(c, 0).is_some_and(|mcc| mcc & 0x8000 != 0);
            cell_alarm(c, 8 + usize::from(wide_mnc), None)?
        }
        // GK310 / JM-LL301 LBS alarm: the 4G cell block, then the status block of the alarm
        // packets and a language byte. No date: the server's time.
        PROTO_LBS_ALARM if !p.extended => {
            let (cell, at) = cell_4g(c)?;
            cell_alarm(c, at, cell)?
        }
        // GK310 LBS address request: the same 4G cell, then the phone number the address is
        // for. lienwatch has no address to give; it keeps the cell and acknowledges.
        PROTO_LBS_ADDRESS if !p.extended => Message::Lbs(Lbs {
            device_time: None,
            cell: cell_4g(c)?.0,
            wifi: None,
        }),
        PROTO_INFO => {
            let (&kind, data) = c.split_first().ok_or(DecodeError::Truncated)?;
            Message::Info { kind, data }
        }
        other => Message::Unsupported(other),
    })
}

/// How an alarm packet lays out the block between the GPS block and the status block. Clones
/// reuse 0x16 with other layouts, told apart by LEN (§A.7).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AlarmLayout {
    /// An LBS length byte, then MCC 2, MNC 1, LAC 2, cell 3 (§A.5; 4G: a longer cell block).
    Standard,
    /// SeeWorld 0x16, LEN 0x26: the length byte, then a 4-byte cell id (§A.7).
    SeeWorld,
    /// VXT01 0x16, LEN 0x24: no length byte before the 8-byte LBS block; the byte in the alarm
    /// position is a vendor extension, not an alarm code.
    Vxt01,
}

impl AlarmLayout {
    fn of(proto: u8, extended: bool, content_len: usize) -> Self {
        match (proto, extended, content_len + 5) {
            (PROTO_ALARM, false, 0x26) => AlarmLayout::SeeWorld,
            (PROTO_ALARM, false, 0x24) => AlarmLayout::Vxt01,
            _ => AlarmLayout::Standard,
        }
    }

    /// Offset of the terminal-info byte in the content. The standard length byte counts itself
    /// (9 for 2G, §A.5), but many units send 8, counting the block only: below 9 it is read as
    /// 9, since the block is there either way. Longer values (4G cells) skip the extra bytes;
    /// 0 means no LBS block at all.
    fn status_at(self, c: &[u8]) -> Result<usize, DecodeError> {
        Ok(match self {
            AlarmLayout::Vxt01 => 18 + 8,
            AlarmLayout::SeeWorld => 19 + 9,
            AlarmLayout::Standard => match c.get(18).copied().ok_or(DecodeError::Truncated)? {
                0 => 19,
                len => 18 + usize::from(len.max(9)),
            },
        })
    }
}

/// Content length of a SeeWorld 0x22 (LEN 0x2F): a 4-byte cell id, then the flags and
/// odometer, travel time, temperature and humidity (§A.7).
const SEEWORLD_0X22_CONTENT: usize = 0x2F - 5;

/// Content length of an SL4X 0x34 (LEN 0x37): an LBS report, not an X1 location.
const SL4X_LBS_CONTENT: usize = 0x37 - 5;

fn is_bcd(b: &[u8]) -> bool {
    b.iter().all(|&x| x >> 4 <= 9 && x & 0x0F <= 9)
}

/// Message types whose content opens with the 18-byte GPS block (§A.5), as the GT06 family and
/// its clones send them: GPS (0x10), GPS+LBS (0x11, 0x25, 0x2D, 0x31, 0x37, 0x38), GPS+phone
/// (0x1A), GPS+LBS extended (0x1E), AZ735 / SL4X status (0x32 in `78 78` frames), TRX16i RFID
/// location (0x36 with LEN 0x35), GPS+LBS+RFID (0x17 with LEN 0x28), Jimi alarm module (0x39),
/// the LW 4G status (0xA2 with LEN 0x40) and the SR411 mini (0x24 with LEN 0x2E). Lengths are
/// what tells the clones' reuse of a type apart.
fn gps_first(proto: u8, extended: bool, content_len: usize) -> bool {
    match proto {
        0x10 | 0x11 | 0x1A | 0x1E | 0x25 | 0x2D | 0x31 | 0x37 | 0x38 | 0x39 => true,
        PROTO_GPS_STATUS_4 => !extended,
        // TRX16i: LEN 0x35. Jimi 4G units send a status report under the same number.
        0x36 => !extended && content_len == 0x35 - 5,
        0xA2 => !extended && content_len == 0x40 - 5,
        0x24 => !extended && content_len == 0x2E - 5,
        // GPS + LBS + RFID in a normal frame (LEN 0x28); the bare 0x17 is a Wi-Fi report.
        0x17 => !extended && content_len == 0x28 - 5,
        _ => false,
    }
}

/// How an LBS / Wi-Fi report lays out its first cell (§A.4 multi-cell reports).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct LbsLayout {
    /// A timing-advance byte before the MCC (SL4X), instead of after the cells.
    ta_first: bool,
    /// MNC always on 2 bytes (SL4X), not only when MCC bit 15 says so.
    mnc_wide: bool,
    lac_len: usize,
    cid_len: usize,
    /// Cells in the block (each followed by one RSSI byte).
    cells: usize,
    /// A Wi-Fi list follows the cells.
    wifi: bool,
}

/// The LBS-only types: multi-cell (0x24, 0x28, 0x2E), LBS + Wi-Fi (0x2C, 0x18), 4G LBS (0xA1),
/// 4G LBS + Wi-Fi (0xA2), SL4X LBS (0x34 with LEN 0x37) and Wi-Fi (0x33 in `78 78` frames).
fn lbs_layout(proto: u8, extended: bool, content_len: usize) -> Option<LbsLayout> {
    let base = LbsLayout {
        ta_first: false,
        mnc_wide: false,
        lac_len: 2,
        cid_len: 3,
        cells: 7,
        wifi: false,
    };
    Some(match proto {
        0x24 | 0x28 | 0x2E if !extended || proto != 0x24 => base,
        0x2C | 0x18 => LbsLayout { wifi: true, ..base },
        0xA1 => LbsLayout {
            lac_len: 4,
            cid_len: 8,
            ..base
        },
        0xA2 => LbsLayout {
            lac_len: 4,
            cid_len: 8,
            wifi: true,
            ..base
        },
        PROTO_X1_GPS if !extended && content_len == SL4X_LBS_CONTENT => LbsLayout {
            ta_first: true,
            mnc_wide: true,
            cid_len: 4,
            ..base
        },
        0x33 if !extended => LbsLayout {
            cid_len: 4,
            cells: 6,
            wifi: true,
            ..base
        },
        _ => return None,
    })
}

/// An LBS alarm: the status block of the alarm packets (terminal info, voltage, GSM level,
/// alarm code) at `at`, after the cell block.
fn cell_alarm(c: &[u8], at: usize, cell: Option<Cell>) -> Result<Message<'_>, DecodeError> {
    let Some(&[terminal_info, voltage, gsm, alarm_code]) = c.get(at..at + 4) else {
        return Err(DecodeError::Truncated);
    };
    Ok(Message::Alarm(AlarmPacket {
        gps: None,
        status: Status {
            terminal_info,
            voltage_level: Some(voltage),
            gsm_level: Some(gsm),
        },
        alarm_code: Some(alarm_code),
        fence: None,
        cell,
    }))
}

/// The 4G cell block of 0xA5 / 0xA7: MCC 2 (bit 15: MNC on 2 bytes), MNC, LAC 4, cell id 8.
/// The cell (`None` when LAC and cell id are 0) and the offset after the block.
fn cell_4g(c: &[u8]) -> Result<(Option<Cell>, usize), DecodeError> {
    let mcc = be16(c, 0).ok_or(DecodeError::Truncated)?;
    let mnc_len = if mcc & 0x8000 != 0 { 2 } else { 1 };
    let mnc = be_n(c, 2, mnc_len).ok_or(DecodeError::Truncated)? as u16;
    let lac = be_n(c, 2 + mnc_len, 4).ok_or(DecodeError::Truncated)? as u32;
    let cid = be_n(c, 6 + mnc_len, 8).ok_or(DecodeError::Truncated)?;
    let cell = (lac != 0 || cid != 0).then_some(Cell {
        mcc: mcc & 0x7FFF,
        mnc,
        lac,
        cid,
    });
    Ok((cell, 14 + mnc_len))
}

fn be_n(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(n)?)?;
    Some(bytes.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
}

/// Date, then MCC/MNC, then the cells (first one kept: the serving cell), then for Wi-Fi reports
/// a count and (BSSID, RSSI) pairs, of which the strongest is kept.
fn decode_lbs(c: &[u8], l: LbsLayout) -> Result<Lbs, DecodeError> {
    let Some(&[yy, mo, dd, hh, mi, ss]) = c.get(..6) else {
        return Err(DecodeError::Truncated);
    };
    // LBS reports are often sent before the clock is set; the cell is still worth keeping.
    let device_time = civil_2000(yy, mo, dd, hh, mi, ss);
    let mut at = 6 + usize::from(l.ta_first);
    let mcc = be16(c, at).ok_or(DecodeError::Truncated)?;
    at += 2;
    let mnc_len = if l.mnc_wide || mcc & 0x8000 != 0 {
        2
    } else {
        1
    };
    let mnc = be_n(c, at, mnc_len).ok_or(DecodeError::Truncated)? as u16;
    at += mnc_len;
    let lac = be_n(c, at, l.lac_len).ok_or(DecodeError::Truncated)? as u32;
    let cid = be_n(c, at + l.lac_len, l.cid_len).ok_or(DecodeError::Truncated)?;
    let cell = (lac != 0 || cid != 0).then_some(Cell {
        mcc: mcc & 0x7FFF,
        mnc,
        lac,
        cid,
    });
    at += l.cells * (l.lac_len + l.cid_len + 1) + usize::from(!l.ta_first);
    let mut wifi: Option<WifiAp> = None;
    if l.wifi {
        let count = c.get(at).copied().unwrap_or(0) as usize;
        for i in 0..count {
            let Some(ap) = c.get(at + 1 + i * 7..at + 8 + i * 7) else {
                break;
            };
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&ap[..6]);
            let rssi = -i16::from(ap[6]);
            if wifi.is_none_or(|w| rssi > w.rssi) {
                wifi = Some(WifiAp { mac, rssi });
            }
        }
    }
    Ok(Lbs {
        device_time,
        cell,
        wifi,
    })
}

/// AZ735 extended 0x32 / 0x33 (`79 79`): date, then a GPS length byte (0 = no fix in this report)
/// before the usual satellites, coordinates, speed and course/status.
fn decode_az735(c: &[u8]) -> Result<Message<'_>, DecodeError> {
    let gps_len = c.get(6).copied().ok_or(DecodeError::Truncated)?;
    if gps_len == 0 {
        let Some(&[yy, mo, dd, hh, mi, ss]) = c.get(..6) else {
            return Err(DecodeError::Truncated);
        };
        return Ok(Message::Lbs(Lbs {
            device_time: civil_2000(yy, mo, dd, hh, mi, ss),
            cell: None,
            wifi: None,
        }));
    }
    // Drop the length byte: what remains is the standard block.
    let mut block = [0u8; 18];
    let (date, rest) = (c.get(..6), c.get(7..19));
    let (Some(date), Some(rest)) = (date, rest) else {
        return Err(DecodeError::Truncated);
    };
    block[..6].copy_from_slice(date);
    block[6..].copy_from_slice(rest);
    Ok(Message::Location(Location::plain(
        Gps::parse(&block)?,
        false,
    )))
}

/// Jimi modular report 0x70: (type u16, length u16, data) modules; module 0x33 is the fix: Unix
/// time u32, satellites, altitude i16, then coordinates, speed and course/status as in §A.5. A
/// zero time is a unit without a fix; the serving cell (module 0x11: MCC, MNC, LAC u16, cell
/// u24) is then kept.
fn decode_modular(c: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut at = 0;
    let mut fix = None;
    let mut cell = None;
    while let (Some(kind), Some(len)) = (be16(c, at), be16(c, at + 2)) {
        let data = c
            .get(at + 4..at + 4 + len as usize)
            .ok_or(DecodeError::Truncated)?;
        match kind {
            0x33 => {
                let (Some(t), Some(&sats), Some(lat_raw), Some(lon_raw), Some(&speed), Some(cs)) = (
                    be32(data, 0),
                    data.get(4),
                    be32(data, 7),
                    be32(data, 11),
                    data.get(15),
                    be16(data, 16),
                ) else {
                    return Err(DecodeError::Truncated);
                };
                if t == 0 {
                    // No fix yet: the module is sent zeroed.
                } else if lat_raw > 90 * 1_800_000 || lon_raw > 180 * 1_800_000 {
                    return Err(DecodeError::BadCoordinates);
                } else {
                    let gps = Gps {
                        device_time: Timestamp::from_secs(i64::from(t)),
                        satellites: sats,
                        lat_raw,
                        lon_raw,
                        speed_kmh: speed,
                        course_status: cs,
                        from_text: false,
                    };
                    let mut loc = Location::plain(gps, true);
                    loc.altitude_m = data.get(5..7).map(|a| i16::from_be_bytes([a[0], a[1]]));
                    fix = Some(loc);
                }
            }
            0x11 => {
                if let (Some(mcc), Some(mnc), Some(lac), Some(cid)) = (
                    be16(data, 0),
                    be16(data, 2),
                    be16(data, 4),
                    be_n(data, 6, 3),
                ) {
                    cell = (cid != 0).then_some(Cell {
                        mcc,
                        mnc,
                        lac: u32::from(lac),
                        cid,
                    });
                }
            }
            _ => {}
        }
        at += 4 + len as usize;
    }
    Ok(match fix {
        Some(loc) => Message::Location(loc),
        None => Message::Lbs(Lbs {
            device_time: None,
            cell,
            wifi: None,
        }),
    })
}

/// 0x21 text answer: server flag (4), encoding (1 = ASCII, else UTF-16BE), text. A "where" answer
/// reads `...Lat:N54.739332,Lon:E25.273270,Course:126.53,Speed:0.0000,DateTime:2017-05-26  10:27:47`.
fn decode_string_info(c: &[u8]) -> Result<Message<'_>, DecodeError> {
    let (Some(&enc), Some(raw)) = (c.get(4), c.get(5..)) else {
        return Err(DecodeError::Truncated);
    };
    let text = if enc == 1 {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        encoding_rs::UTF_16BE
            .decode_without_bom_handling(raw)
            .0
            .into_owned()
    };
    Ok(match where_answer(&text) {
        Some(gps) => Message::Location(Location::plain(gps, true)),
        None => Message::Text,
    })
}

/// The value after `key` up to the next comma.
fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let start = text.find(key)? + key.len();
    let rest = text.get(start..)?;
    Some(rest.split(',').next().unwrap_or(rest).trim())
}

pub(crate) fn where_answer(text: &str) -> Option<Gps> {
    let hem = |v: &str, pos: char, neg: char| -> Option<(f64, bool)> {
        let mut ch = v.chars();
        let h = ch.next()?;
        let deg: f64 = ch.as_str().parse().ok()?;
        (deg.is_finite() && (h == pos || h == neg)).then_some((deg, h == neg))
    };
    let (lat, south) = hem(field(text, "Lat:")?, 'N', 'S')?;
    let (lon, west) = hem(field(text, "Lon:")?, 'E', 'W')?;
    let course: f64 = field(text, "Course:")?.parse().ok()?;
    let speed: f64 = field(text, "Speed:")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let dt = field(text, "DateTime:")?;
    let mut parts = dt
        .split(['-', ':', ' '])
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>().ok());
    let mut next = || parts.next().flatten();
    let (y, mo, d, h, mi, se) = (next()?, next()?, next()?, next()?, next()?, next()?);
    let yy = u8::try_from(y.checked_sub(2000)?).ok()?;
    let device_time = civil_2000(yy, mo as u8, d as u8, h as u8, mi as u8, se as u8)?;
    if !(0.0..=90.0).contains(&lat)
        || !(0.0..=180.0).contains(&lon)
        || !(0.0..=360.0).contains(&course)
    {
        return None;
    }
    let mut course_status = 0x1000 | (course.round() as u16 % 360);
    if !south {
        course_status |= 0x0400;
    }
    if west {
        course_status |= 0x0800;
    }
    Some(Gps {
        device_time,
        satellites: 0,
        lat_raw: (lat * 1_800_000.0).round() as u32,
        lon_raw: (lon * 1_800_000.0).round() as u32,
        speed_kmh: speed.clamp(0.0, 255.0).round() as u8,
        course_status,
        from_text: true,
    })
}

/// The alarm byte of alarm packets (§A.5, §F.3).
pub fn alarm_code_flags(code: u8) -> Alarms {
    match code {
        0x01 => Alarms::SOS,
        0x02 => Alarms::POWER_CUT,
        0x03 => Alarms::VIBRATION,
        0x04 | 0x05 => Alarms::DEVICE_GEOFENCE,
        0x06 => Alarms::OVERSPEED,
        0x09 => Alarms::TOW,
        0x0E | 0x0F | 0x19 => Alarms::LOW_BATTERY,
        0x13 | 0x18 | 0x32 => Alarms::TAMPER,
        _ => Alarms::NONE,
    }
}

/// Alarm conditions from the terminal-info byte plus the alarm code of alarm and status packets.
///
/// The alarm code names one alarm that occurred (§A.5): an event, reported each time it comes
/// and latching nothing, since no GT06 message ends a tamper or an SOS. The terminal-info byte
/// is state: bits 5..3 say which condition holds, bit 2 (external power connected) clears
/// POWER_CUT unless this very frame says power cut, and bit 7 is the immobiliser relay (§A.5
/// terminal information, §F.3).
pub fn alarm_report(terminal_info: u8, alarm_code: Option<u8>) -> AlarmReport {
    let occurred = alarm_code.map(alarm_code_flags).unwrap_or(Alarms::NONE);
    let state = match (terminal_info >> 3) & 0x07 {
        0b001 => Alarms::VIBRATION,
        0b010 => Alarms::POWER_CUT,
        0b011 => Alarms::LOW_BATTERY,
        0b100 => Alarms::SOS,
        // Removal on most variants (§A.5); VXT01, the layout without an alarm code, means
        // overspeed by it.
        0b111 if alarm_code.is_some() => Alarms::TAMPER,
        _ => Alarms::NONE,
    };
    let mut r = AlarmReport::raised(state);
    r.events = occurred;
    r.active.insert(occurred);
    let said = state.union(occurred);
    if terminal_info & 0x04 != 0 && !said.contains(Alarms::POWER_CUT) {
        r = r.with(Alarms::POWER_CUT, false);
    }
    // 111 is a level, as power is: other bits say the tracker is back in place, so that its
    // next removal alerts again.
    if alarm_code.is_some() && !said.contains(Alarms::TAMPER) {
        r = r.with(Alarms::TAMPER, false);
    }
    r.with(Alarms::IMMOBILISED, terminal_info & 0x80 != 0)
}

/// The acknowledgement a location-bearing frame expects: the short `78 78` ack echoing type and
/// serial, except the AZ735 extended reports, which are answered in a `79 79` frame.
fn reply_for(pkt: &Packet<'_>) -> Option<Bytes> {
    Some(
        if pkt.extended && matches!(pkt.proto, PROTO_GPS_STATUS_4 | 0x33) {
            Bytes::copy_from_slice(&ack_extended(pkt.proto, pkt.serial))
        } else {
            Bytes::copy_from_slice(&ack(pkt.proto, pkt.serial))
        },
    )
}

/// The answer to an address request (JM-VL03 §5, 0x17 / 0x97): `ALARMSMS&&<address>&&<phone>##`
/// after a 4-byte server flag, in UTF-16 in a `78 78` frame for Chinese, in ASCII in a `79 79`
/// frame for English. lienwatch has no geocoder: the "address" is the fix's coordinates, which is
/// what the user who texted the device for its address can use. Language 0: no answer wanted.
pub fn address_reply(
    position: &Position,
    phone: &[u8],
    language: u8,
    serial: u16,
) -> Option<Vec<u8>> {
    let address = format!("{:.6},{:.6}", position.lat, position.lon);
    let (proto, text): (u8, Vec<u8>) = match language {
        0x01 => (
            PROTO_ADDRESS_CN,
            address.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        ),
        0x02 => (PROTO_ADDRESS_EN, address.into_bytes()),
        _ => return None,
    };
    let mut content = vec![0, 0, 0, 0];
    content.extend_from_slice(b"ALARMSMS&&");
    content.extend_from_slice(&text);
    content.extend_from_slice(b"&&");
    content.extend_from_slice(phone);
    content.extend_from_slice(b"##");
    let mut body = Vec::with_capacity(content.len() + 8);
    let len = 1 + 1 + content.len() + 2 + 2;
    let mut f = if proto == PROTO_ADDRESS_EN {
        let mut f = vec![0x79, 0x79];
        f.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
        f
    } else {
        vec![0x78, 0x78, u8::try_from(len).ok()?]
    };
    body.push(proto);
    body.push(u8::try_from(content.len()).ok()?);
    body.extend_from_slice(&content);
    body.extend_from_slice(&serial.to_be_bytes());
    f.extend_from_slice(&body);
    let crc = X25.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    Some(f)
}

/// `79 79 00 05 <proto> <serial> <crc> 0D 0A`: the ack for reports sent in extended frames.
pub fn ack_extended(proto: u8, serial: u16) -> [u8; 11] {
    let [s1, s2] = serial.to_be_bytes();
    let mut f = [0x79, 0x79, 0x00, 0x05, proto, s1, s2, 0, 0, 0x0D, 0x0A];
    let [c1, c2] = X25.checksum(&f[2..7]).to_be_bytes();
    f[7] = c1;
    f[8] = c2;
    f
}

/// `78 78 05 <proto> <serial> <crc> 0D 0A` (§A.3).
pub fn ack(proto: u8, serial: u16) -> [u8; 10] {
    let [s1, s2] = serial.to_be_bytes();
    let mut f = [0x78, 0x78, 0x05, proto, s1, s2, 0, 0, 0x0D, 0x0A];
    let [c1, c2] = X25.checksum(&f[2..6]).to_be_bytes();
    f[6] = c1;
    f[7] = c2;
    f
}

/// `78 78 0B 8A YY MM DD hh mm ss <serial> <crc> 0D 0A` with UTC `now` (§A.3 item 5).
pub fn time_reply(now: Timestamp, serial: u16) -> [u8; 16] {
    let secs = now.secs();
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let yy = (y - 2000).clamp(0, 255) as u8;
    let [s1, s2] = serial.to_be_bytes();
    let mut f = [
        0x78,
        0x78,
        0x0B,
        PROTO_TIME_REQUEST,
        yy,
        mo,
        d,
        (sod / 3600) as u8,
        (sod / 60 % 60) as u8,
        (sod % 60) as u8,
        s1,
        s2,
        0,
        0,
        0x0D,
        0x0A,
    ];
    let [c1, c2] = X25.checksum(&f[2..12]).to_be_bytes();
    f[12] = c1;
    f[13] = c2;
    f
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// One GT06 connection: login state and the timezone the login announced.
pub struct Gt06Session {
    cfg: SessionConfig,
    device: Option<DeviceId>,
    /// Offset from the login's timezone field, applied to classic 0x12/0x16 only (§A.5).
    login_offset_s: Option<i32>,
    /// Serial of the last command sent (0x80), the server's own count.
    command_serial: u16,
}

impl Gt06Session {
    /// A session that already knows its device (`cfg.default_device_id`: MQTT raw payloads) or
    /// needs none (`cfg.sessionless`: `decode`, where the id is left empty) accepts frames before
    /// any login.
    pub fn new(cfg: SessionConfig) -> Self {
        Gt06Session {
            device: cfg
                .default_device_id
                .clone()
                .or_else(|| cfg.sessionless.then(|| DeviceId::new(""))),
            cfg,
            login_offset_s: None,
            command_serial: 0,
        }
    }

    /// Offset to read this message's device clock with: the listener's setting wins; otherwise
    /// UTC, except classic 0x12/0x16 after a login that carried a timezone.
    fn offset_for(&self, proto: u8) -> i32 {
        match self.cfg.utc_offset_s {
            Some(o) => o,
            None if proto == PROTO_LOCATION || proto == PROTO_ALARM => {
                self.login_offset_s.unwrap_or(0)
            }
            None => 0,
        }
    }

    fn event(&self, id: &DeviceId, kind: EventKind) -> Output {
        Output::Event(Event {
            device_id: id.clone(),
            protocol: Protocol::Gt06,
            kind,
        })
    }

    /// A bare Wi-Fi report of `n` bytes: an invalid position with its cell and access point,
    /// acknowledged with its time bytes.
    fn handle_bare_wifi(&mut self, r: &BareWifi, n: usize, out: &mut Vec<Output>) {
        let Some(id) = self.device.clone() else {
            out.push(Output::Rejected(Rejection::new("frame before login", n)));
            return;
        };
        let fix = self.network_fix(r.proto, r.device_time, r.cell, r.wifi);
        out.push(self.event(&id, EventKind::Position(fix)));
        out.push(Output::Reply(Bytes::copy_from_slice(&r.reply())));
    }

    /// An LBS or Wi-Fi report as an invalid fix that keeps its cell and access point, dated by
    /// the device's clock when it sent one (in its zone), else on arrival.
    fn network_fix(
        &self,
        proto: u8,
        device_time: Option<Timestamp>,
        cell: Option<Cell>,
        wifi: Option<WifiAp>,
    ) -> Fix {
        let time = match device_time {
            Some(t) => t.add_millis(-i64::from(self.offset_for(proto)) * 1000),
            None => (self.cfg.clock)(),
        };
        Fix::live(Position {
            time,
            valid: false,
            cell,
            wifi,
            ..Position::default()
        })
    }

    /// A checked frame whose fix cannot be used (a zero date before the first fix, coordinates
    /// off the globe): the fix is dropped, but the device is talking, so it is a heartbeat, and
    /// the usual reply goes out so that the device does not send the frame again and again
    /// (§A.3). Before a login it is dropped like any frame (§A.7).
    fn unusable_fix(&self, pkt: &Packet<'_>, e: DecodeError, n: usize, out: &mut Vec<Output>) {
        let Some(id) = self.device.clone() else {
            out.push(Output::Rejected(Rejection::new("frame before login", n)));
            return;
        };
        out.push(Output::Rejected(Rejection::new(e.reason(), n)));
        out.push(self.event(
            &id,
            EventKind::Heartbeat {
                alarms: AlarmReport::NONE,
            },
        ));
        // An address request is answered with the fix's address, which there is none of.
        if pkt.proto != PROTO_ADDRESS_REQUEST {
            if let Some(r) = reply_for(pkt) {
                out.push(Output::Reply(r));
            }
        }
    }

    /// Handles one checked frame of `n` bytes.
    fn handle(
        &mut self,
        pkt: &Packet<'_>,
        frame: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        let n = frame.len();
        let reject = |reason| Output::Rejected(Rejection::new(reason, n));
        let msg = match decode_packet(pkt) {
            Ok(m) => m,
            Err(e @ (DecodeError::BadTime | DecodeError::BadCoordinates)) => {
                self.unusable_fix(pkt, e, n, out);
                return Ok(());
            }
            Err(e) => {
                out.push(reject(e.reason()));
                return Ok(());
            }
        };
        if let Message::Login(login) = msg {
            let Some(id) = DeviceId::from_imei_bcd(login.imei_bcd) else {
                out.push(reject("login IMEI not BCD"));
                return Ok(());
            };
            if !self.cfg.admits(&id) {
                self.device = None;
                return Err(SessionError::Refused(id.to_string()));
            }
            out.push(self.event(&id, EventKind::Login));
            out.push(Output::Reply(Bytes::copy_from_slice(&ack(
                PROTO_LOGIN,
                pkt.serial,
            ))));
            self.device = Some(id);
            self.login_offset_s = login.utc_offset_s;
            return Ok(());
        }
        let Some(id) = self.device.clone() else {
            // §A.7: drop and stay silent; the device logs in again.
            out.push(reject("frame before login"));
            return Ok(());
        };
        if let Some(a) = super::gt06_command::answer(pkt) {
            // A command's text answer; a `WHERE#` answer spells out a fix, which is a fix too
            // (the 0x21 form is read as one below).
            let position = super::gt06_command::answer_fix(&a.text).map(|g| g.position(0));
            out.push(self.event(
                &id,
                EventKind::CommandAnswer(CommandAnswer {
                    key: AnswerKey::ServerFlag(a.flag),
                    ok: true,
                    text: Some(a.text),
                    position,
                }),
            ));
            if pkt.proto == super::gt06_command::PROTO_ANSWER {
                if let Some(p) = position {
                    out.push(self.event(&id, EventKind::Position(Fix::live(p))));
                }
                return Ok(());
            }
        }
        let reply = match msg {
            Message::Login(_) => None,
            Message::Location(loc) => {
                let offset = if loc.utc {
                    0
                } else {
                    self.offset_for(pkt.proto)
                };
                let mut position = loc.gps.position(offset);
                position.altitude_m = loc.altitude_m.map(f64::from);
                let fix = Fix {
                    position,
                    alarms: AlarmReport::NONE,
                    buffered: loc.reupload,
                    props: Default::default(),
                };
                out.push(self.event(&id, EventKind::Position(fix)));
                // A text answer closes a command exchange: nothing to acknowledge.
                if pkt.proto == PROTO_STRING_INFO {
                    None
                } else {
                    reply_for(pkt)
                }
            }
            Message::Lbs(lbs) => {
                let fix = self.network_fix(pkt.proto, lbs.device_time, lbs.cell, lbs.wifi);
                out.push(self.event(&id, EventKind::Position(fix)));
                // 0xF3 is not acknowledged.
                (pkt.proto != super::gt06_wifi::PROTO_WIFI_4)
                    .then(|| reply_for(pkt))
                    .flatten()
            }
            // A text answer is the device's side of a command exchange: nothing to acknowledge.
            Message::Text => None,
            Message::AddressRequest {
                gps,
                phone,
                language,
            } => {
                let position = gps.position(self.offset_for(pkt.proto));
                out.push(self.event(&id, EventKind::Position(Fix::live(position))));
                address_reply(&position, phone, language, pkt.serial).map(Bytes::from)
            }
            Message::Status { status, alarm_code } => {
                let alarms = alarm_report(status.terminal_info, alarm_code);
                out.push(self.event(&id, EventKind::Heartbeat { alarms }));
                reply_for(pkt)
            }
            Message::Alarm(a) => {
                let alarms = alarm_report(a.status.terminal_info, a.alarm_code);
                let kind = match a.gps {
                    Some(gps) => EventKind::Position(Fix {
                        position: gps.position(self.offset_for(pkt.proto)),
                        alarms,
                        buffered: false,
                        props: Default::default(),
                    }),
                    None => match a.cell {
                        // An LBS alarm: an invalid position that keeps the cell.
                        Some(cell) => EventKind::Position(Fix {
                            position: Position {
                                time: (self.cfg.clock)(),
                                valid: false,
                                cell: Some(cell),
                                ..Position::default()
                            },
                            alarms,
                            buffered: false,
                            props: Default::default(),
                        }),
                        None => EventKind::Alarm { alarms },
                    },
                };
                out.push(self.event(&id, kind));
                reply_for(pkt)
            }
            Message::TimeRequest => {
                out.push(Output::Message("time_request"));
                let now = (self.cfg.clock)();
                out.push(Output::Reply(Bytes::copy_from_slice(&time_reply(
                    now, pkt.serial,
                ))));
                None
            }
            // Information transfer is not acknowledged (§A.5); nothing in it feeds the rules yet.
            Message::Info { .. } => {
                out.push(Output::Message("info"));
                None
            }
            Message::Heartbeat => {
                out.push(self.event(
                    &id,
                    EventKind::Heartbeat {
                        alarms: AlarmReport::NONE,
                    },
                ));
                reply_for(pkt)
            }
            // A checked frame from a logged-in device proves it alive even when its type is not
            // read. protocols.md names no reply for such types, so none is sent; the rejection
            // still logs the type for the operator.
            Message::Unsupported(kind) => {
                out.push(self.event(
                    &id,
                    EventKind::Heartbeat {
                        alarms: AlarmReport::NONE,
                    },
                ));
                out.push(Output::Rejected(Rejection::unsupported(
                    "gt06",
                    &format!("0x{kind:02X}"),
                    frame,
                )));
                None
            }
        };
        if let Some(r) = reply {
            out.push(Output::Reply(r));
        }
        Ok(())
    }
}

impl Session for Gt06Session {
    fn protocol(&self) -> Protocol {
        Protocol::Gt06
    }

    fn feed(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> Result<(), SessionError> {
        let max = self.cfg.max_frame;
        loop {
            // Skip garbage up to the next start marker; a lone trailing 78/79 may be half of one.
            let start = match find_start(buf) {
                Some(p) => p,
                None => match buf.last() {
                    Some(0x78 | 0x79) => buf.len() - 1,
                    _ => buf.len(),
                },
            };
            if start > 0 {
                out.push(Output::Rejected(Rejection::new(
                    "garbage before start marker",
                    start,
                )));
                buf.advance(start);
            }
            if buf.len() < 2 {
                return Ok(());
            }
            if let Some(bare) = bare_wifi(buf, max) {
                match bare {
                    Some((report, n)) => {
                        self.handle_bare_wifi(&report, n, out);
                        buf.advance(n);
                        continue;
                    }
                    // As below: a checked frame already behind the marker makes it noise.
                    None if complete_frame_after_start(buf, max) => {
                        out.push(Output::Rejected(Rejection::new(
                            "start marker not followed by a frame",
                            2,
                        )));
                        buf.advance(2);
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            match parse_frame(buf, max) {
                Ok(Some((pkt, n))) => {
                    let r = self.handle(&pkt, buf.get(..n).unwrap_or(&[]), out);
                    buf.advance(n);
                    r?;
                }
                Ok(None) => {
                    // Incomplete. If a complete, checked frame already follows the marker, the
                    // marker was noise (a chance `78 78` with a large length): skip it now rather
                    // than stall the device until that length has arrived.
                    if complete_frame_after_start(buf, max) {
                        out.push(Output::Rejected(Rejection::new(
                            "start marker not followed by a frame",
                            2,
                        )));
                        buf.advance(2);
                        continue;
                    }
                    return Ok(());
                }
                Err(e) => {
                    out.push(Output::Rejected(Rejection::new(e.reason(), 2)));
                    buf.advance(2);
                }
            }
        }
    }

    fn device_id(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }

    fn encode_command(&mut self, id: u64, cmd: &Downlink) -> Result<Encoded, EncodeError> {
        if self.device.as_ref().is_none_or(|d| d.as_str().is_empty()) {
            return Err(EncodeError::NotReady);
        }
        let text = match cmd {
            Downlink::Locate => super::gt06_command::LOCATE_TEXT,
            Downlink::Raw(t) => t.as_str(),
            Downlink::Track { .. } => {
                return Err(EncodeError::Unsupported(
                    "GT06 tracking commands are model-specific: send the model's text as raw",
                ))
            }
        };
        // The flag is the command's number, so an answer names its command across reconnects.
        let flag = id as u32;
        self.command_serial = self.command_serial.wrapping_add(1);
        let bytes = super::gt06_command::encode(flag, text.as_bytes(), self.command_serial).ok_or(
            EncodeError::Unsupported("text too long for a GT06 command (245 bytes at most)"),
        )?;
        Ok(Encoded {
            bytes: Bytes::from(bytes),
            key: AnswerKey::ServerFlag(flag),
        })
    }
}

/// A bare Wi-Fi report (`gt06_wifi`) at the front: `Some(Some(..))` complete, `Some(None)` not
/// complete yet. `None` when the bytes are a normal frame (checked first: a 0x17 may be either)
/// or not a bare report.
fn bare_wifi(buf: &[u8], max: usize) -> Option<Option<(BareWifi, usize)>> {
    use super::gt06_wifi::{parse_bare, MIN_BARE, PROTO_WIFI, PROTO_WIFI_OLD};
    match buf {
        // LEN may be an access point count below the frame minimum: wait for the type byte.
        [0x78, 0x78, _] if max >= MIN_BARE => return Some(None),
        [0x78, 0x78, _, PROTO_WIFI | PROTO_WIFI_OLD, ..] => {}
        _ => return None,
    }
    if matches!(parse_frame(buf, max), Ok(Some(_))) {
        return None;
    }
    parse_bare(buf, max).ok()
}

/// Whether a complete frame with good stop bytes and CRC starts somewhere after offset 0.
fn complete_frame_after_start(buf: &[u8], max: usize) -> bool {
    let mut from = 1;
    while let Some(rest) = buf.get(from..) {
        let Some(p) = find_start(rest) else {
            return false;
        };
        if let Some(tail) = rest.get(p..) {
            if matches!(parse_frame(tail, max), Ok(Some(_))) {
                return true;
            }
        }
        from += p + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_all, events, parse_hex, replies};
    use std::sync::Arc;

    fn hex(s: &str) -> Vec<u8> {
        parse_hex(s).expect("hex")
    }

    const LOGIN: &str = "78 78 0D 01 08 68 12 01 45 23 36 04 00 01 69 70 0D 0A";
    const LOGIN_TZ: &str = "78 78 11 01 08 68 12 01 45 23 36 04 36 15 32 00 00 01 C4 91 0D 0A";
    const LOC12: &str = "78 78 1F 12 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 3C 14 5A 01 CC 00 24 7C 0F 2A 31 00 03 6D E9 0D 0A";
    const LOC22: &str = "78 78 22 22 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 3C 14 5A 01 CC 00 24 7C 0F 2A 31 01 00 00 00 04 0C 52 0D 0A";
    const HEARTBEAT: &str = "78 78 0A 13 46 06 04 00 02 00 05 CC 4B 0D 0A";
    const POWER_CUT: &str = "78 78 25 16 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 00 14 5A 09 01 CC 00 24 7C 0F 2A 31 50 04 03 02 02 00 06 17 69 0D 0A";
    const TAMPER: &str = "78 78 25 26 18 05 14 0A 1E 0F C9 02 6B 2A 25 0C 3C B1 5D 00 14 5A 09 01 CC 00 24 7C 0F 2A 31 50 04 03 13 02 00 07 A5 5B 0D 0A";
    const TIME_REQ: &str = "78 78 05 8A 00 08 61 57 0D 0A";
    const INFO94: &str = "79 79 00 08 94 00 04 9F 00 09 26 B2 0D 0A";

    fn session() -> Gt06Session {
        Gt06Session::new(SessionConfig {
            clock: Arc::new(|| Timestamp::from_civil(2024, 5, 20, 10, 30, 15).unwrap()),
            ..SessionConfig::default()
        })
    }

    #[test]
    fn crc_check_value_and_agreement_with_crate() {
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
        let data: Vec<u8> = (0..300u32).map(|i| (i * 131 + 7) as u8).collect();
        for start in 0..5 {
            for end in start..data.len() {
                assert_eq!(
                    crc16_x25(&data[start..end]),
                    X25.checksum(&data[start..end])
                );
            }
        }
    }

    #[test]
    fn civil_2000_matches_from_civil() {
        for yy in 0..=99u8 {
            for mo in 0..=13u8 {
                for dd in [0, 1, 15, 28, 29, 30, 31, 32] {
                    let want = Timestamp::from_civil(2000 + yy as i32, mo, dd, 23, 59, 59);
                    assert_eq!(civil_2000(yy, mo, dd, 23, 59, 59), want, "{yy} {mo} {dd}");
                }
            }
        }
        assert_eq!(civil_2000(24, 5, 20, 24, 0, 0), None);
        assert_eq!(civil_2000(100, 1, 1, 0, 0, 0), None);
    }

    #[test]
    fn reference_frames_parse() {
        for f in [
            "78 78 0D 01 01 23 45 67 89 01 23 45 00 01 8C DD 0D 0A",
            "78 78 1F 12 0B 08 1D 11 2E 10 CF 02 7A C7 EB 0C 46 58 49 00 14 8F 01 CC 00 28 7D 00 1F B8 00 03 80 81 0D 0A",
            "78 78 11 01 07 52 53 36 78 90 02 42 70 00 32 01 00 05 12 79 0D 0A",
            "78 78 0A 13 40 04 04 00 01 00 0F DC EE 0D 0A",
            "78 78 22 22 0F 0C 1D 02 33 05 C9 02 7A C8 18 0C 46 58 60 00 14 00 01 CC 00 28 7D 00 1F 71 00 00 01 00 08 20 86 0D 0A",
            "78 78 25 26 0F 0C 1D 03 0B 26 C9 02 7A C8 18 0C 46 58 60 00 04 00 09 01 CC 00 28 7D 00 1F 71 80 04 04 13 02 00 0C 47 2A 0D 0A",
            LOGIN, LOGIN_TZ, LOC12, LOC22, HEARTBEAT, POWER_CUT, TAMPER, TIME_REQ, INFO94,
        ] {
            let b = hex(f);
            let (p, n) = parse_frame(&b, 4096).unwrap().unwrap();
            assert_eq!(n, b.len(), "{f}");
            decode_packet(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn doc_location_decodes() {
        let b = hex("78 78 1F 12 0B 08 1D 11 2E 10 CF 02 7A C7 EB 0C 46 58 49 00 14 8F 01 CC 00 28 7D 00 1F B8 00 03 80 81 0D 0A");
        let (p, _) = parse_frame(&b, 4096).unwrap().unwrap();
        let Message::Location(l) = decode_packet(&p).unwrap() else {
            panic!("not a location")
        };
        let pos = l.gps.position(0);
        assert_eq!(pos.time.to_string(), "2011-08-29T17:46:16Z");
        assert!((pos.lat - 23.111668).abs() < 1e-6);
        assert!((pos.lon - 114.409285).abs() < 1e-6);
        assert_eq!(
            (pos.valid, pos.course, pos.satellites),
            (true, 143, Some(15))
        );
        assert_eq!(p.serial, 3);
    }

    #[test]
    fn replies_match_protocol_examples() {
        assert_eq!(ack(0x01, 1).to_vec(), hex("78 78 05 01 00 01 D9 DC 0D 0A"));
        assert_eq!(
            ack(0x26, 0x1C).to_vec(),
            hex("78 78 05 26 00 1C 9D 86 0D 0A")
        );
        assert_eq!(ack(0x22, 4).to_vec(), hex("78 78 05 22 00 04 62 2E 0D 0A"));
        let t = Timestamp::from_civil(2015, 12, 29, 0, 0, 21).unwrap();
        assert_eq!(
            time_reply(t, 6).to_vec(),
            hex("78 78 0B 8A 0F 0C 1D 00 00 15 00 06 F0 86 0D 0A")
        );
    }

    #[test]
    fn civil_round_trip() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2024, 12, 31), (2099, 3, 1)] {
            let t = Timestamp::from_civil(y, m, d, 0, 0, 0).unwrap();
            assert_eq!(civil_from_days(t.secs() / 86_400), (y as i64, m, d));
        }
    }

    #[test]
    fn session_flow_events_then_replies() {
        let mut s = session();
        let stream: Vec<u8> = [LOGIN, LOC12, HEARTBEAT, POWER_CUT, TIME_REQ, INFO94]
            .iter()
            .flat_map(|f| hex(f))
            .collect();
        let (out, err) = decode_all(&mut s, &stream);
        assert!(err.is_none());
        assert_eq!(s.device_id().unwrap().as_str(), "868120145233604");
        // login, location, heartbeat, alarm: event then reply each; time request: no event, a
        // reply; information transfer: no event, no reply.
        let kinds: Vec<&str> = out
            .iter()
            .map(|o| match o {
                Output::Event(_) => "E",
                Output::Reply(_) => "R",
                Output::Rejected(_) => "X",
                Output::Message(_) => "M",
            })
            .collect();
        assert_eq!(
            kinds,
            ["E", "R", "E", "R", "E", "R", "E", "R", "M", "R", "M"]
        );
        let r = replies(&out);
        assert_eq!(r[0], hex("78 78 05 01 00 01 D9 DC 0D 0A"));
        assert_eq!(r[2], hex("78 78 05 13 00 05 AF D5 0D 0A"));
        assert_eq!(r[3], hex("78 78 05 16 00 06 A4 F3 0D 0A"));
        assert_eq!(r[4], hex("78 78 0B 8A 18 05 14 0A 1E 0F 00 08 6D 60 0D 0A"));
        let ev = events(&out);
        let EventKind::Heartbeat { alarms } = ev[2].kind else {
            panic!("heartbeat expected")
        };
        // 0x46: external power connected, no alarm bits: power is known to be on.
        assert!(alarms.known.contains(Alarms::POWER_CUT));
        assert!(!alarms.active.contains(Alarms::POWER_CUT));
        let EventKind::Position(fix) = ev[3].kind else {
            panic!("position expected")
        };
        assert!(fix.alarms.active.contains(Alarms::POWER_CUT));
        assert!(!fix.alarms.active.contains(Alarms::IMMOBILISED));
        assert!(fix.alarms.known.contains(Alarms::IMMOBILISED));
    }

    #[test]
    fn tamper_alarm_and_reply() {
        let mut s = session();
        let stream: Vec<u8> = [LOGIN, TAMPER].iter().flat_map(|f| hex(f)).collect();
        let (out, _) = decode_all(&mut s, &stream);
        let ev = events(&out);
        let EventKind::Position(fix) = ev[1].kind else {
            panic!("position expected")
        };
        assert!(fix.alarms.active.contains(Alarms::TAMPER));
        // Terminal info 0x50 also says power cut (bits 5..3 = 010).
        assert!(fix.alarms.active.contains(Alarms::POWER_CUT));
        assert_eq!(replies(&out)[1], hex("78 78 05 26 00 07 33 D4 0D 0A"));
    }

    #[test]
    fn login_timezone_applies_to_classic_frames_only() {
        let mut s = session();
        let stream: Vec<u8> = [LOGIN_TZ, LOC12, LOC22]
            .iter()
            .flat_map(|f| hex(f))
            .collect();
        let (out, _) = decode_all(&mut s, &stream);
        let ev = events(&out);
        assert_eq!(
            ev[1].position().unwrap().time.to_string(),
            "2024-05-20T02:30:15Z"
        );
        assert_eq!(
            ev[2].position().unwrap().time.to_string(),
            "2024-05-20T10:30:15Z"
        );
        assert_eq!(login_offset(0x3200), Some(8 * 3600));
        assert_eq!(login_offset(0x4DD8), Some(-(12 * 3600 + 45 * 60)));
    }

    #[test]
    fn listener_offset_applies_to_every_frame() {
        let mut s = Gt06Session::new(SessionConfig {
            utc_offset_s: Some(3600),
            ..SessionConfig::default()
        });
        let stream: Vec<u8> = [LOGIN_TZ, LOC12, LOC22]
            .iter()
            .flat_map(|f| hex(f))
            .collect();
        let (out, _) = decode_all(&mut s, &stream);
        let ev = events(&out);
        assert_eq!(
            ev[1].position().unwrap().time.to_string(),
            "2024-05-20T09:30:15Z"
        );
        assert_eq!(
            ev[2].position().unwrap().time.to_string(),
            "2024-05-20T09:30:15Z"
        );
    }

    #[test]
    fn refused_device_gets_no_reply() {
        let mut s = Gt06Session::new(SessionConfig {
            admit: Arc::new(|_| false),
            ..SessionConfig::default()
        });
        let (out, err) = decode_all(&mut s, &hex(LOGIN));
        assert_eq!(err, Some(SessionError::Refused("868120145233604".into())));
        assert!(replies(&out).is_empty() && events(&out).is_empty());
    }

    #[test]
    fn a_login_imei_of_reporting_body_01_keeps_its_own_leading_zero() {
        let mut f = vec![0x78, 0x78, 0x0D, PROTO_LOGIN];
        f.extend_from_slice(&[0x00, 0x13, 0x45, 0x67, 0x89, 0x01, 0x23, 0x45, 0x00, 0x01]);
        let crc = crc16_x25(&f[2..]);
        f.extend_from_slice(&crc.to_be_bytes());
        f.extend_from_slice(&[0x0D, 0x0A]);
        let mut s = session();
        let (out, err) = decode_all(&mut s, &f);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(events(&out)[0].device_id.as_str(), "013456789012345");
    }

    #[test]
    fn frame_before_login_is_dropped() {
        let mut s = session();
        let (out, _) = decode_all(&mut s, &hex(LOC12));
        assert_eq!(
            out,
            vec![Output::Rejected(Rejection::new("frame before login", 36))]
        );
    }

    #[test]
    fn default_device_id_stands_in_for_a_login() {
        let mut s = Gt06Session::new(SessionConfig {
            default_device_id: Some(DeviceId::new("123456789012345")),
            ..SessionConfig::default()
        });
        let (out, _) = decode_all(&mut s, &hex(LOC12));
        let ev = events(&out);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].device_id.as_str(), "123456789012345");
        assert_eq!(replies(&out).len(), 1);
    }

    #[test]
    fn bad_crc_resyncs_and_garbage_is_skipped() {
        let mut s = session();
        let mut bad = hex(LOGIN);
        bad[10] ^= 0xFF;
        let mut stream = vec![0x00, 0x78, 0x11];
        stream.extend(bad);
        stream.extend(hex(LOGIN));
        let (out, _) = decode_all(&mut s, &stream);
        assert_eq!(replies(&out), vec![hex("78 78 05 01 00 01 D9 DC 0D 0A")]);
    }

    #[test]
    fn noise_marker_with_long_length_does_not_stall() {
        let mut s = session();
        let mut buf = BytesMut::from(&[0x78, 0x78, 0xF0, 0x01][..]);
        buf.extend_from_slice(&hex(LOGIN));
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).unwrap();
        assert_eq!(replies(&out).len(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_length_and_unframed_data_stay_bounded() {
        let mut s = Gt06Session::new(SessionConfig {
            max_frame: 64,
            ..SessionConfig::default()
        });
        let mut buf = BytesMut::from(&[0x79, 0x79, 0xFF, 0xFF, 0x01][..]);
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).unwrap();
        assert!(buf.len() < 64);
        buf.extend_from_slice(&[0x55; 1000]);
        s.feed(&mut buf, &mut out).unwrap();
        assert!(buf.is_empty());
    }

    #[test]
    fn trailing_vendor_bytes_are_tolerated() {
        // 0x12 with 4 extra bytes (LEN 0x23), CRC recomputed.
        let mut f = hex(LOC12);
        f[2] = 0x23;
        let tail = f.split_off(f.len() - 6);
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend_from_slice(&tail[..2]);
        let crc = crc16_x25(&f[2..]);
        f.extend_from_slice(&crc.to_be_bytes());
        f.extend_from_slice(&[0x0D, 0x0A]);
        let (p, n) = parse_frame(&f, 4096).unwrap().unwrap();
        assert_eq!(n, f.len());
        assert!(matches!(decode_packet(&p), Ok(Message::Location(_))));
    }

    #[test]
    fn impossible_date_rejects_location() {
        let mut f = hex(LOC12);
        f[5] = 13; // month 13
        let crc = crc16_x25(&f[2..f.len() - 4]);
        let at = f.len() - 4;
        f[at..at + 2].copy_from_slice(&crc.to_be_bytes());
        let (p, _) = parse_frame(&f, 4096).unwrap().unwrap();
        assert_eq!(decode_packet(&p), Err(DecodeError::BadTime));
    }

    #[test]
    fn address_request_is_answered_with_the_fix() {
        // JM-VL03 protocol §6 example (Chinese answer requested).
        const REQ: &str = "78 78 2E 2A 0F 0C 1D 07 11 39 CA 02 7A C8 00 0C 46 58 00 00 14 D8 31 32 35 32 30 31 33 35 33 32 31 37 37 30 37 39 00 00 00 00 00 00 01 00 2A 6E CE 0D 0A";
        let mut s = session();
        let stream: Vec<u8> = [LOGIN, REQ].iter().flat_map(|f| hex(f)).collect();
        let (out, _) = decode_all(&mut s, &stream);
        let ev = events(&out);
        let p = ev[1].position().expect("position");
        assert_eq!(p.time.to_string(), "2015-12-29T07:17:57Z");
        assert!((p.lat - 23.11168).abs() < 1e-6 && (p.lon - 114.409244).abs() < 1e-6);
        let r = &replies(&out)[1];
        assert_eq!(&r[..4], &[0x78, 0x78, r.len() as u8 - 5, PROTO_ADDRESS_CN]);
        assert_eq!(
            r[4] as usize,
            r.len() - 4 - 1 - 6,
            "length byte counts flag to ##"
        );
        let text: Vec<u8> = "23.111680,114.409244"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let body = &r[5..r.len() - 6];
        assert_eq!(&body[..4], &[0, 0, 0, 0]);
        assert_eq!(&body[4..14], b"ALARMSMS&&");
        assert_eq!(&body[14..14 + text.len()], &text[..]);
        assert_eq!(&body[body.len() - 2..], b"##");
        assert_eq!(&body[body.len() - 23..body.len() - 2], &hex(REQ)[22..43]);
        assert_eq!(&r[r.len() - 6..r.len() - 4], &[0x00, 0x2A]);
        assert_eq!(
            crc16_x25(&r[2..r.len() - 4]).to_be_bytes(),
            [r[r.len() - 4], r[r.len() - 3]]
        );
    }

    /// The events of `frames` sent after a login, the login's left out.
    fn after_login(frames: &[&str]) -> Vec<Event> {
        let mut s = session();
        let mut stream = hex(LOGIN);
        for f in frames {
            stream.extend(hex(f));
        }
        let (out, err) = decode_all(&mut s, &stream);
        assert!(err.is_none(), "{err:?}");
        events(&out).into_iter().skip(1).cloned().collect()
    }

    /// The status block sits after the LBS block whatever the LBS length byte says below 9, and
    /// where the (proto, LEN) layouts of §A.7 put it. Frames from Traccar's test suite (LBS
    /// length 8; SeeWorld; VXT01) and §A.6 #5 rebuilt with length 8, CRCs checked.
    #[test]
    fn alarm_status_block_follows_the_layout() {
        let alarms = |f: &str| after_login(&[f])[0].alarms();
        // 0x26 with length 8: terminal info 0x06 (external power on), alarm 0x0C. Read one byte
        // early, the GSM level 0x03 passed for the alarm code (vibration).
        let r = alarms(
            "78782526160913063918c002780fab0c44750f00040008027f14084c0038420600030c020007398e0d0a",
        );
        assert!(!r.active.contains(Alarms::VIBRATION), "{r:?}");
        assert!(r.known.contains(Alarms::POWER_CUT) && !r.active.contains(Alarms::POWER_CUT));
        // §A.6 #5 with length 8 and alarm 0x00: no power cut.
        let r = alarms(
            "787825161805140a1e0fc9026b2a250c3cb15d00145a0801cc00247c0f2a314604020002000757c60d0a",
        );
        assert!(r.active.is_empty(), "{r:?}");
        // SeeWorld 0x16 (LEN 0x26, 4-byte cell id): terminal info 0x00, tamper 0x13.
        let r = alarms("78782616170A080C0E24C0027C58AD0C2B8B0100454E0901CC0025030328E7A0005D4B13021EC373170D0A");
        assert_eq!(r.active, Alarms::TAMPER);
        // VXT01 0x16 (LEN 0x24, no length byte): terminal info 0x62 says SOS; the byte in the
        // alarm position (0x04) is a vendor extension, not an alarm code.
        let r = alarms(
            "7878241617070a150e24ca01fba0040780e177005c0001720253360027db6204e40400004bf1e90d0a",
        );
        assert_eq!(r.active, Alarms::SOS);
        // Length 9 (§A.6 #5) and a 4G block of 16 keep their offsets.
        assert!(alarms(POWER_CUT).active.contains(Alarms::POWER_CUT));
        let r = alarms("78782da41a0509160203cf05be31f80c306530001c0010012ed000007ef40000000006428b074205041302ff0009389c0d0a");
        assert!(r.active.contains(Alarms::TAMPER), "{r:?}");
    }

    /// SeeWorld 0x22 (LEN 0x2F): the 4-byte cell id puts ACC, upload mode and re-upload one
    /// byte later. A frame from Traccar's test suite with the upload-mode byte set to 0x01 (CRC
    /// recomputed): a live fix, not a buffered one.
    #[test]
    fn seeworld_location_flags_follow_the_4_byte_cell_id() {
        let ev = after_login(&["78782f221709130f3a32cc02c55f2a089f9afc005c2101360481fe066d9b03000100000025d4000000000020002d0360c7c70d0a"]);
        let EventKind::Position(fix) = &ev[0].kind else {
            panic!("position expected: {ev:?}")
        };
        assert!(!fix.buffered);
        assert!(fix.position.valid);
    }

    /// 0x22 with MCC bit 15 set: a 2-byte MNC puts ACC, upload mode and re-upload one byte
    /// later (§A.4). Upload mode 0x01 is a live fix; the re-upload flag is a buffered one.
    #[test]
    fn location_flags_follow_a_2_byte_mnc() {
        let fix = |f: &str| match &after_login(&[f])[0].kind {
            EventKind::Position(fix) => *fix,
            other => panic!("position expected: {other:?}"),
        };
        let live = "787823221805140a1e0fc9026b2a250c3cb15d3c145a81cc0000247c0f2a310101000004";
        assert!(!fix(&format!("{live}2b470d0a")).buffered);
        let again = "787823221805140a1e0fc9026b2a250c3cb15d3c145a81cc0000247c0f2a310105010004";
        assert!(fix(&format!("{again}03770d0a")).buffered);
    }

    /// 0x37 (and 0x2D) carry ACC, upload mode and re-upload after their LBS block, as a 0x22
    /// does. Traccar's 0x37 frame has the re-upload flag set: a buffered fix, which the rules
    /// must not take for where the car is now; the same frame with the flag cleared (CRC
    /// recomputed) is live.
    #[test]
    fn gps_lbs_0x37_reads_its_re_upload_flag() {
        let fix = |f: &str| match &after_login(&[f])[0].kind {
            EventKind::Position(fix) => *fix,
            other => panic!("position expected: {other:?}"),
        };
        let head = "7878353714080d05000ac500a886eb0b7522f000100001fe0a05ea004f1b0000";
        let tail = "002e0400002328003b0217c0003c0401020001002c";
        assert!(fix(&format!("{head}01{tail}468a0d0a")).buffered);
        assert!(!fix(&format!("{head}00{tail}efd70d0a")).buffered);
    }

    /// 0x19 LBS status with a 2-byte MNC (MCC bit 15, §A.4): the status block a byte later.
    /// Read at the fixed offset, the cell id's last byte was taken for the terminal info and
    /// the GSM level 0x02 for a power-cut code.
    #[test]
    fn lbs_status_follows_a_2_byte_mnc() {
        let ev = after_login(&["7878131981cc0000247c0f2a3104040201020007c68a0d0a"]);
        let r = ev[0].alarms();
        assert!(r.events.contains(Alarms::SOS), "{r:?}");
        assert!(!r.active.contains(Alarms::POWER_CUT), "{r:?}");
    }

    /// Terminal info bits 5..3 = 111 is a removal (§A.5), outside VXT01: a frame from
    /// Traccar's test suite (terminal info 0x7C, alarm 0x00).
    #[test]
    fn terminal_info_111_is_a_tamper() {
        let ev = after_login(&[
            "7878251613020C12141AC5027951430C2A16F60014000900000000001A00007C550300020002F1E70D0A",
        ]);
        assert_eq!(ev[0].alarms().active, Alarms::TAMPER);
    }

    /// Course bit 12 set but no satellites: an old fix repeated, not a valid one (§A.7).
    #[test]
    fn a_positioned_flag_without_satellites_is_no_valid_fix() {
        let ev = after_login(&[
            "78781F121805140A1E0FC0026B2A250C3CB15D00145A01CC00247C0F2A31000372A50D0A",
        ]);
        let EventKind::Position(fix) = &ev[0].kind else {
            panic!("position expected: {ev:?}")
        };
        assert!(!fix.position.valid, "{fix:?}");
    }

    /// A heartbeat's alarm byte (§A.5: terminal info, voltage, GSM, alarm, language) is read, as
    /// an event: 0x13 is tamper.
    #[test]
    fn heartbeat_alarm_byte_is_an_event() {
        let ev = after_login(&["78780a1340040413020009b0d00d0a", HEARTBEAT]);
        let EventKind::Heartbeat { alarms } = ev[0].kind else {
            panic!("heartbeat expected: {ev:?}")
        };
        assert!(alarms.events.contains(Alarms::TAMPER), "{alarms:?}");
        assert_eq!(alarms.active.names(), ["tamper"]);
        // Alarm 0x00: nothing occurred.
        assert!(ev[1].alarms().events.is_empty() && ev[1].alarms().active.is_empty());
    }

    /// 0x23, the GK310 heartbeat (§A.4), is a sign of life and gets the short reply. The frame
    /// is from Traccar's test suite.
    #[test]
    fn gk310_heartbeat_is_answered() {
        let mut s = session();
        let stream: Vec<u8> = [LOGIN, "78780B23C00122040001000818720D0A"]
            .iter()
            .flat_map(|f| hex(f))
            .collect();
        let (out, _) = decode_all(&mut s, &stream);
        let ev = events(&out);
        assert!(matches!(ev[1].kind, EventKind::Heartbeat { .. }), "{out:?}");
        assert_eq!(replies(&out)[1], hex("78 78 05 23 00 08 F2 9E 0D 0A"));
    }

    /// A checked frame of a type lienwatch does not read (Jimi 4G status 0x36, GK310 / GL21L
    /// 0xA3; frames from Traccar's test suite) still proves the device alive. protocols.md names
    /// no reply for these, so none is sent, and the type is still reported as not decoded.
    #[test]
    fn undecoded_types_are_a_sign_of_life() {
        for f in [
            "787817360005040002003201010018020192006a015f0324aeaf0d0a",
            "78780ca346000106640c01123d5f5e0d0a",
            "78782ca3110b10081336f000000000000000000004003901cc0000009191000000000906170304050400010003e0940d0a",
        ] {
            let mut s = session();
            let mut stream = hex(LOGIN);
            stream.extend(hex(f));
            let (out, _) = decode_all(&mut s, &stream);
            let ev = events(&out);
            assert_eq!(ev.len(), 2, "{f}: {out:?}");
            assert!(matches!(ev[1].kind, EventKind::Heartbeat { .. }), "{f}");
            assert_eq!(replies(&out).len(), 1, "{f}: only the login is answered");
            assert!(out.iter().any(|o| matches!(o, Output::Rejected(r) if r.reason.contains("unsupported"))));
        }
    }

    /// `frame` with bytes `at..` of the whole frame replaced and the CRC recomputed.
    fn patched(frame: &str, at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut f = hex(frame);
        f[at..at + bytes.len()].copy_from_slice(bytes);
        let crc_at = f.len() - 4;
        let crc = crc16_x25(&f[2..crc_at]);
        f[crc_at..crc_at + 2].copy_from_slice(&crc.to_be_bytes());
        f
    }

    /// A location or alarm whose fix cannot be used (a zero date, coordinates off the globe)
    /// still proves the device alive and gets its usual reply, so that it is not sent forever.
    #[test]
    fn unusable_fixes_are_a_sign_of_life_and_answered() {
        let zero_date = [0u8; 6];
        let off_globe = 91u32 * 1_800_000;
        for (frame, patch, ack_of) in [
            (patched(LOC12, 4, &zero_date), "0x12 zero date", (0x12, 3)),
            (patched(LOC22, 4, &zero_date), "0x22 zero date", (0x22, 4)),
            (
                patched(LOC12, 11, &off_globe.to_be_bytes()),
                "0x12 latitude 91",
                (0x12, 3),
            ),
            (
                patched(POWER_CUT, 11, &off_globe.to_be_bytes()),
                "0x16 latitude 91",
                (0x16, 6),
            ),
        ] {
            let mut s = session();
            let mut stream = hex(LOGIN);
            stream.extend(&frame);
            let (out, _) = decode_all(&mut s, &stream);
            let ev = events(&out);
            assert_eq!(ev.len(), 2, "{patch}: {out:?}");
            assert!(ev[1].position().is_none(), "{patch}: no fix");
            assert_eq!(
                replies(&out).get(1),
                Some(&ack(ack_of.0, ack_of.1).to_vec()),
                "{patch}"
            );
        }
        // The alarm keeps its code without a position.
        let mut s = session();
        let mut stream = hex(LOGIN);
        stream.extend(patched(POWER_CUT, 11, &off_globe.to_be_bytes()));
        let (out, _) = decode_all(&mut s, &stream);
        assert!(events(&out)[1].alarms().active.contains(Alarms::POWER_CUT));
    }

    /// Alarm codes are events (§A.5): the tamper code occurred, no tamper state is claimed by it
    /// (no GT06 message ends that event). Terminal info 0x50 still gives the power-cut state.
    #[test]
    fn alarm_codes_are_events_not_states() {
        let r = after_login(&[TAMPER])[0].alarms();
        assert!(r.events.contains(Alarms::TAMPER), "{r:?}");
        assert!(!r.known.contains(Alarms::TAMPER), "{r:?}");
        assert!(r.known.contains(Alarms::POWER_CUT) && r.active.contains(Alarms::POWER_CUT));
        let r = alarm_report(0x46, Some(0x02));
        assert!(r.events.contains(Alarms::POWER_CUT) && r.active.contains(Alarms::POWER_CUT));
        assert!(
            !r.known.contains(Alarms::POWER_CUT),
            "a cut code is not cleared by bit 2"
        );
    }

    #[test]
    fn terminal_info_mapping() {
        let r = alarm_report(0x04, None);
        assert!(r.known.contains(Alarms::POWER_CUT) && r.active.is_empty());
        let r = alarm_report(0x04, Some(0x02));
        assert!(r.active.contains(Alarms::POWER_CUT));
        let r = alarm_report(0x80 | 0x20, None);
        assert!(r.active.contains(Alarms::SOS) && r.active.contains(Alarms::IMMOBILISED));
        let r = alarm_report(0x18, Some(0x09));
        assert!(r.active.contains(Alarms::LOW_BATTERY) && r.active.contains(Alarms::TOW));
        assert!(!r.known.contains(Alarms::POWER_CUT));
        // 111 is a removal, a level: other bits end it, so that the next removal alerts again.
        let r = alarm_report(0x38 | 0x04, Some(0x00));
        assert!(r.active.contains(Alarms::TAMPER), "{r:?}");
        let r = alarm_report(0x04, Some(0x00));
        assert!(r.known.contains(Alarms::TAMPER) && !r.active.contains(Alarms::TAMPER));
        // VXT01 (no alarm code): 111 is overspeed there, and says nothing of tamper.
        let r = alarm_report(0x38, None);
        assert!(!r.known.contains(Alarms::TAMPER), "{r:?}");
    }
}
