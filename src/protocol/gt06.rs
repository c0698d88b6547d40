//! GT06 / Concox (protocols.md §A): framing, message decoding and the per-connection session.
//!
//! Three layers, each usable on its own:
//! - [`parse_frame`]: one frame at the front of a byte slice, framed by its length field and
//!   checked (stop bytes, CRC-16/X-25). Borrows, never allocates.
//! - [`decode_packet`]: a checked frame to a typed [`Message`]. Borrows, never allocates.
//! - [`Gt06Session`]: login state, time offsets, normalised events and the exact replies.

use super::{Output, Rejection, Session, SessionConfig, SessionError};
use crate::event::{
    AlarmReport, Alarms, DeviceId, Event, EventKind, Fix, Position, Protocol, Timestamp,
};
use bytes::{Buf, Bytes, BytesMut};

/// CRC-16/X-25 ("CRC-ITU", §A.2). Slice-by-16 tables, built at compile time: a 0x12 frame is
/// about 32 checked bytes, two 16-byte strides.
const X25: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_IBM_SDLC);

/// CRC-16/X-25 of `bytes` (the coverage is LEN through SERIAL, §A.2).
pub fn crc16_x25(bytes: &[u8]) -> u16 {
    X25.checksum(bytes)
}

/// Smallest LEN a frame can declare: PROTO (1) + SERIAL (2) + CRC (2).
const MIN_LEN: usize = 5;

pub const PROTO_LOGIN: u8 = 0x01;
pub const PROTO_LOCATION: u8 = 0x12;
pub const PROTO_STATUS: u8 = 0x13;
pub const PROTO_ALARM: u8 = 0x16;
pub const PROTO_LOCATION_UTC: u8 = 0x22;
pub const PROTO_ALARM_UTC: u8 = 0x26;
pub const PROTO_ALARM_FENCES: u8 = 0x27;
pub const PROTO_TIME_REQUEST: u8 = 0x8A;
pub const PROTO_INFO: u8 = 0x94;
pub const PROTO_LOCATION_4G: u8 = 0xA0;
pub const PROTO_ALARM_4G: u8 = 0xA4;

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
    let computed = X25.checksum(covered);
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
}

const COORD_SCALE: f64 = 1_800_000.0;

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
        if yy > 99 {
            return Err(DecodeError::BadTime);
        }
        let device_time = Timestamp::from_civil(2000 + yy as i32, mo, dd, hh, mi, ss)
            .ok_or(DecodeError::BadTime)?;
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
        })
    }

    pub fn valid(&self) -> bool {
        self.course_status & 0x1000 != 0
    }

    /// Bit 10 set means north; clear means south (the opposite sense of bit 11).
    pub fn lat(&self) -> f64 {
        let v = self.lat_raw as f64 / COORD_SCALE;
        if self.course_status & 0x0400 != 0 {
            v
        } else {
            -v
        }
    }

    pub fn lon(&self) -> f64 {
        let v = self.lon_raw as f64 / COORD_SCALE;
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
        }
    }
}

/// Login 0x01 (§A.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Login<'a> {
    /// 8 bytes of BCD, leading 0 nibble included.
    pub imei_bcd: &'a [u8],
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
    /// `None` when the GPS block carries an impossible date (no fix time yet): the alarm still
    /// counts, the position does not.
    pub gps: Option<Gps>,
    pub status: Status,
    pub alarm_code: u8,
    /// 0x27 fence number (0xFF = none).
    pub fence: Option<u8>,
}

/// A decoded message, borrowing the frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Message<'a> {
    Login(Login<'a>),
    Location(Location),
    Status(Status),
    Alarm(AlarmPacket),
    TimeRequest,
    /// 0x94: sub-type and data (§A.5). Not acknowledged.
    Info {
        kind: u8,
        data: &'a [u8],
    },
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
            let imei_bcd = c.get(..8).ok_or(DecodeError::Truncated)?;
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
            let gps = Gps::parse(c)?;
            // 0x22: flags follow the 8-byte LBS block; 0xA0: the 4G LBS block (MNC is 2 bytes
            // when MCC bit 15 is set, LAC 4, cell 8).
            let flags_at = match p.proto {
                PROTO_LOCATION_UTC => Some(26),
                PROTO_LOCATION_4G => be16(c, 18).map(|mcc| {
                    let mnc = if mcc & 0x8000 != 0 { 2 } else { 1 };
                    18 + 2 + mnc + 4 + 8
                }),
                _ => None,
            };
            let flags = flags_at.and_then(|at| c.get(at..at + 3));
            Message::Location(Location {
                gps,
                acc: flags.and_then(|f| f.first()).map(|&a| a != 0),
                upload_mode: flags.and_then(|f| f.get(1)).copied(),
                reupload: flags.and_then(|f| f.get(2)).is_some_and(|&r| r == 1),
            })
        }
        PROTO_STATUS => {
            let &terminal_info = c.first().ok_or(DecodeError::Truncated)?;
            Message::Status(Status {
                terminal_info,
                voltage_level: c.get(1).copied(),
                gsm_level: c.get(2).copied(),
            })
        }
        PROTO_ALARM | PROTO_ALARM_UTC | PROTO_ALARM_FENCES | PROTO_ALARM_4G => {
            let gps = match Gps::parse(c) {
                Ok(g) => Some(g),
                Err(DecodeError::BadTime) => None,
                Err(e) => return Err(e),
            };
            // The LBS length byte counts itself (9 for 2G: 1 + MCC 2 + MNC 1 + LAC 2 + cell 3).
            let lbs_len = c.get(18).copied().ok_or(DecodeError::Truncated)?.max(1) as usize;
            let at = 18 + lbs_len;
            let Some(&[terminal_info, voltage, gsm, alarm_code]) = c.get(at..at + 4) else {
                return Err(DecodeError::Truncated);
            };
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
            })
        }
        PROTO_TIME_REQUEST => Message::TimeRequest,
        PROTO_INFO => {
            let (&kind, data) = c.split_first().ok_or(DecodeError::Truncated)?;
            Message::Info { kind, data }
        }
        other => Message::Unsupported(other),
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

/// Alarm conditions from the terminal-info byte plus, for alarm packets, the alarm code.
///
/// Edge-style for the alarm conditions (GT06 says nothing about those it does not raise), but
/// two bits are states: bit 2 (external power connected) clears POWER_CUT unless this very frame
/// says power cut, and bit 7 is the immobiliser relay (§A.5 terminal information).
pub fn alarm_report(terminal_info: u8, alarm_code: Option<u8>) -> AlarmReport {
    let mut raised = alarm_code.map(alarm_code_flags).unwrap_or(Alarms::NONE);
    raised.insert(match (terminal_info >> 3) & 0x07 {
        0b001 => Alarms::VIBRATION,
        0b010 => Alarms::POWER_CUT,
        0b011 => Alarms::LOW_BATTERY,
        0b100 => Alarms::SOS,
        _ => Alarms::NONE,
    });
    let mut r = AlarmReport::raised(raised);
    if terminal_info & 0x04 != 0 && !raised.contains(Alarms::POWER_CUT) {
        r = r.with(Alarms::POWER_CUT, false);
    }
    r.with(Alarms::IMMOBILISED, terminal_info & 0x80 != 0)
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

    /// Handles one checked frame of `n` bytes.
    fn handle(
        &mut self,
        pkt: &Packet<'_>,
        n: usize,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        let reject = |reason| Output::Rejected(Rejection { reason, bytes: n });
        let msg = match decode_packet(pkt) {
            Ok(m) => m,
            Err(e) => {
                out.push(reject(e.reason()));
                return Ok(());
            }
        };
        if let Message::Login(login) = msg {
            let Some(id) = DeviceId::from_bcd(login.imei_bcd) else {
                out.push(reject("login IMEI not BCD"));
                return Ok(());
            };
            if !(self.cfg.admit)(&id) {
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
        let reply = match msg {
            Message::Login(_) => None,
            Message::Location(loc) => {
                let fix = Fix {
                    position: loc.gps.position(self.offset_for(pkt.proto)),
                    alarms: AlarmReport::NONE,
                    buffered: loc.reupload,
                };
                out.push(self.event(&id, EventKind::Position(fix)));
                Some(ack(pkt.proto, pkt.serial))
            }
            Message::Status(st) => {
                let alarms = alarm_report(st.terminal_info, None);
                out.push(self.event(&id, EventKind::Heartbeat { alarms }));
                Some(ack(pkt.proto, pkt.serial))
            }
            Message::Alarm(a) => {
                let alarms = alarm_report(a.status.terminal_info, Some(a.alarm_code));
                let kind = match a.gps {
                    Some(gps) => EventKind::Position(Fix {
                        position: gps.position(self.offset_for(pkt.proto)),
                        alarms,
                        buffered: false,
                    }),
                    None => EventKind::Alarm { alarms },
                };
                out.push(self.event(&id, kind));
                Some(ack(pkt.proto, pkt.serial))
            }
            Message::TimeRequest => {
                let now = (self.cfg.clock)();
                out.push(Output::Reply(Bytes::copy_from_slice(&time_reply(
                    now, pkt.serial,
                ))));
                None
            }
            // Information transfer is not acknowledged (§A.5); nothing in it feeds the rules yet.
            Message::Info { .. } => None,
            Message::Unsupported(_) => {
                out.push(reject("unsupported message"));
                None
            }
        };
        if let Some(r) = reply {
            out.push(Output::Reply(Bytes::copy_from_slice(&r)));
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
                out.push(Output::Rejected(Rejection {
                    reason: "garbage before start marker",
                    bytes: start,
                }));
                buf.advance(start);
            }
            if buf.len() < 2 {
                return Ok(());
            }
            match parse_frame(buf, max) {
                Ok(Some((pkt, n))) => {
                    let r = self.handle(&pkt, n, out);
                    buf.advance(n);
                    r?;
                }
                Ok(None) => {
                    // Incomplete. If a complete, checked frame already follows the marker, the
                    // marker was noise (a chance `78 78` with a large length): skip it now rather
                    // than stall the device until that length has arrived.
                    if complete_frame_after_start(buf, max) {
                        out.push(Output::Rejected(Rejection {
                            reason: "start marker not followed by a frame",
                            bytes: 2,
                        }));
                        buf.advance(2);
                        continue;
                    }
                    return Ok(());
                }
                Err(e) => {
                    out.push(Output::Rejected(Rejection {
                        reason: e.reason(),
                        bytes: 2,
                    }));
                    buf.advance(2);
                }
            }
        }
    }

    fn device_id(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }
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
    use crate::protocol::{decode_all, parse_hex};
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

    fn replies(out: &[Output]) -> Vec<Vec<u8>> {
        out.iter()
            .filter_map(|o| match o {
                Output::Reply(b) => Some(b.to_vec()),
                _ => None,
            })
            .collect()
    }

    fn events(out: &[Output]) -> Vec<&Event> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
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
        // login, location, heartbeat, alarm: event then reply each; time request: reply only.
        let kinds: Vec<&str> = out
            .iter()
            .map(|o| match o {
                Output::Event(_) => "E",
                Output::Reply(_) => "R",
                Output::Rejected(_) => "X",
            })
            .collect();
        assert_eq!(kinds, ["E", "R", "E", "R", "E", "R", "E", "R", "R"]);
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
    fn frame_before_login_is_dropped() {
        let mut s = session();
        let (out, _) = decode_all(&mut s, &hex(LOC12));
        assert_eq!(
            out,
            vec![Output::Rejected(Rejection {
                reason: "frame before login",
                bytes: 36
            })]
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
    }
}
