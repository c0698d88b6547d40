//! Teltonika Codec 8 / Codec 8 Extended, Codec 16 and Codec 7 (the GH-series personal and asset
//! trackers) over TCP and UDP (protocols.md §C). Command codecs (12, 13, 14) carry no position;
//! they are rejected with the codec named, so that an operator sees them.
//!
//! Two layers:
//! - a pure, allocation-free parser: [`decode_frame`] (TCP framing, CRC), [`decode_datagram`]
//!   (UDP header) and [`AvlData`], whose records and IO elements are borrowed views read on
//!   demand, validated once up front so that iterating them cannot fail;
//! - the sessions [`TeltonikaSession`] (TCP: IMEI handshake, then AVL packets) and
//!   [`TeltonikaUdpSession`] (one datagram per `feed`), which turn records into [`Event`]s and
//!   push the exact replies the device waits for.

use super::downlink::{Downlink, EncodeError, Encoded};
use super::{Output, Rejection, Session, SessionConfig, SessionError};
use crate::event::{
    AlarmReport, Alarms, AnswerKey, CommandAnswer, DeviceId, Event, EventKind, Fix, Position,
    Protocol,
};
use bytes::{Buf, Bytes, BytesMut};

/// Codec 8 (protocols.md §C.2).
pub const CODEC_8: u8 = 0x08;
/// Codec 8 Extended: 2-byte IO ids and counts, plus variable-length (NX) elements.
pub const CODEC_8E: u8 = 0x8E;
/// Codec 16: Codec 8 with 2-byte IO ids and a generation-type byte. FMB devices can be switched
/// to it; accepting it costs a few lines and keeps such devices from resending forever.
pub const CODEC_16: u8 = 0x10;
/// Codec 7, the GH-series personal and asset trackers: 4-byte times from 2007, masked fields.
pub const CODEC_7: u8 = 0x07;
/// Codec 7 times count seconds from 2007-01-01T00:00:00Z.
const GH_EPOCH_S: u64 = 1_167_609_600;

/// TCP: 4-byte preamble + 4-byte length before the data, 4-byte CRC field after it (§C.2).
pub const TCP_OVERHEAD: usize = 12;
/// Smallest AVL data: codec id, N1, N2.
const MIN_DATA: usize = 3;
/// Timestamp (8) + priority (1) + GPS element (15), the fixed head of every record (§C.3).
const RECORD_HEAD: usize = 24;
/// IMEI handshake: `00 0F` + 15 ASCII digits (§C.1).
const IMEI_LEN: usize = 15;
const HANDSHAKE_LEN: usize = 2 + IMEI_LEN;

/// Slice-by-16 tables: the CRC covers every byte of every packet, so it is most of the cost of
/// decoding one, and the byte-at-a-time table is about twice as slow.
static CRC16: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_ARC);

/// CRC-16/ARC ("CRC-16/IBM") as Teltonika computes it over codec id .. N2 (§C.2).
pub fn crc16(data: &[u8]) -> u16 {
    CRC16.checksum(data)
}

/// Why AVL data (codec id .. N2) was not accepted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AvlError {
    #[error("AVL data shorter than its records")]
    Truncated,
    #[error("unsupported codec 0x{0:02X}")]
    UnsupportedCodec(u8),
    #[error("record counts differ (N1 {n1}, N2 {n2})")]
    CountMismatch { n1: u8, n2: u8 },
    #[error("AVL packet without records")]
    NoRecords,
    #[error("bytes left between the last record and N2")]
    TrailingBytes,
}

impl AvlError {
    /// A static label for [`Rejection::reason`].
    pub fn reason(self) -> &'static str {
        match self {
            AvlError::Truncated => "AVL data truncated",
            AvlError::UnsupportedCodec(c) => {
                super::unsupported_reason("teltonika", &format!("codec 0x{c:02X}"))
            }
            AvlError::CountMismatch { .. } => "AVL record counts differ",
            AvlError::NoRecords => "AVL packet without records",
            AvlError::TrailingBytes => "AVL data has trailing bytes",
        }
    }
}

/// Why a TCP frame was not accepted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    /// More bytes are needed; nothing is wrong yet.
    #[error("incomplete frame")]
    Incomplete,
    #[error("frame does not start with the 4 zero bytes")]
    BadPreamble,
    /// The declared data length is below the minimum or over the configured limit: the frame is
    /// not waited for (a hostile length must not make us buffer it).
    #[error("declared data length {0} out of range")]
    BadLength(u32),
    /// The whole frame is `len` bytes; skip it (the device resends what it never sees acked).
    #[error("CRC mismatch")]
    BadCrc { len: usize },
    #[error("{err}")]
    Avl { err: AvlError, len: usize },
}

/// A validated AVL packet: codec id, record count and the records, borrowed from the input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AvlData<'a> {
    codec: u8,
    count: u8,
    layout: Layout,
    records: &'a [u8],
}

impl<'a> AvlData<'a> {
    /// Validates `codec | N1 | records | N2`: known codec, N1 == N2 > 0, every record within
    /// bounds and nothing left over. After this, reading records cannot fail.
    pub fn parse(data: &'a [u8]) -> Result<Self, AvlError> {
        let (&[codec, n1], rest) = data.split_first_chunk::<2>().ok_or(AvlError::Truncated)?;
        let (records, &[n2]) = rest.split_last_chunk::<1>().ok_or(AvlError::Truncated)?;
        let layout = Layout::of(codec).ok_or(AvlError::UnsupportedCodec(codec))?;
        if n1 != n2 {
            return Err(AvlError::CountMismatch { n1, n2 });
        }
        if n1 == 0 {
            return Err(AvlError::NoRecords);
        }
        // Some Codec 8 firmware adds a group of 16-byte values after the 8-byte group (Traccar's
        // "extended" option); it is recognised when only that reading accounts for every byte.
        let layout = match (layout.walk(records, n1), codec) {
            (Ok(()), _) => layout,
            (Err(e), CODEC_8) => {
                let x16 = Layout {
                    x16: true,
                    ..layout
                };
                x16.walk(records, n1).map_err(|_| e)?;
                x16
            }
            (Err(e), _) => return Err(e),
        };
        Ok(AvlData {
            codec,
            count: n1,
            layout,
            records,
        })
    }

    pub fn codec(&self) -> u8 {
        self.codec
    }

    /// Number of records, the figure the device expects back in the ack.
    pub fn count(&self) -> u8 {
        self.count
    }

    pub fn records(&self) -> Records<'a> {
        Records {
            layout: self.layout,
            remaining: self.count,
            rest: self.records,
        }
    }
}

/// The widths that differ between codecs (protocols.md §C.3 IO element table).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Layout {
    /// Width of IO ids and of the event IO id.
    id: usize,
    /// Width of the total and per-group counts.
    count: usize,
    /// Codec 16's generation-type byte after the event IO id.
    generation: bool,
    /// Codec 8E's variable-length group.
    nx: bool,
    /// Codec 7: a global mask says which of the GPS element and the 1-, 2- and 4-byte IO groups
    /// are present; the GPS element has its own mask.
    gh: bool,
    /// A group of 16-byte values after the 8-byte group (see [`AvlData::parse`]).
    x16: bool,
}

impl Layout {
    const C8: Layout = Layout {
        id: 1,
        count: 1,
        generation: false,
        nx: false,
        gh: false,
        x16: false,
    };
    const C7: Layout = Layout {
        id: 1,
        count: 1,
        generation: false,
        nx: false,
        gh: true,
        x16: false,
    };
    const C8E: Layout = Layout {
        id: 2,
        count: 2,
        generation: false,
        nx: true,
        gh: false,
        x16: false,
    };
    const C16: Layout = Layout {
        id: 2,
        count: 1,
        generation: true,
        nx: false,
        gh: false,
        x16: false,
    };

    fn of(codec: u8) -> Option<Layout> {
        match codec {
            CODEC_8 => Some(Layout::C8),
            CODEC_8E => Some(Layout::C8E),
            CODEC_16 => Some(Layout::C16),
            CODEC_7 => Some(Layout::C7),
            _ => None,
        }
    }

    /// Checks that `n` records fill `records` exactly.
    fn walk(self, records: &[u8], n: u8) -> Result<(), AvlError> {
        let mut pos = 0usize;
        for _ in 0..n {
            let rec = records.get(pos..).ok_or(AvlError::Truncated)?;
            pos += self.record_len(rec).ok_or(AvlError::Truncated)?;
        }
        if pos != records.len() {
            return Err(AvlError::TrailingBytes);
        }
        Ok(())
    }

    /// Bytes before the first IO group: event id, generation type, total IO count.
    fn io_head(self) -> usize {
        self.id + usize::from(self.generation) + self.count
    }

    /// Length of the record at the start of `rec`, or `None` if it runs past the end. Fixed-width
    /// groups are skipped by arithmetic; only NX elements are walked one by one.
    fn record_len(self, rec: &[u8]) -> Option<usize> {
        if self.gh {
            return gh_record_len(rec);
        }
        let mut pos = RECORD_HEAD + self.io_head();
        for width in [1usize, 2, 4, 8] {
            let n = read_uint(rec.get(pos..)?, self.count)?;
            pos += self.count + n * (self.id + width);
        }
        if self.x16 {
            let n = read_uint(rec.get(pos..)?, self.count)?;
            pos += self.count + n * (self.id + 16);
        }
        if self.nx {
            let n = read_uint(rec.get(pos..)?, 2)?;
            pos += 2;
            for _ in 0..n {
                let len = read_uint(rec.get(pos + 2..)?, 2)?;
                pos += 4 + len;
            }
        }
        if pos <= rec.len() {
            Some(pos)
        } else {
            None
        }
    }
}

/// Widths of the Codec 7 GPS element's fields, by location-mask bit: coordinates (two f32),
/// altitude, angle, speed, satellites, LAC + cell id, signal, operator.
const GH_LOCATION_FIELDS: [usize; 8] = [8, 2, 1, 1, 1, 4, 1, 4];

/// Length of a Codec 7 record: time (4), global mask, the GPS element if bit 0, then the 1-, 2-
/// and 4-byte IO groups for bits 1..3 (a count and id/value pairs each).
fn gh_record_len(rec: &[u8]) -> Option<usize> {
    let mask = *rec.get(4)?;
    let mut pos = 5;
    if mask & 1 != 0 {
        let lm = *rec.get(pos)?;
        pos += 1;
        for (bit, w) in GH_LOCATION_FIELDS.iter().enumerate() {
            if lm & (1 << bit) != 0 {
                pos += w;
            }
        }
    }
    for (bit, w) in [(1u8, 1usize), (2, 2), (3, 4)] {
        if mask & (1 << bit) != 0 {
            let n = usize::from(*rec.get(pos)?);
            pos += 1 + n * (1 + w);
        }
    }
    (pos <= rec.len()).then_some(pos)
}

/// Big-endian unsigned integer of `width` (1, 2, 4 or 8) bytes at the start of `b`.
#[inline]
fn read_uint(b: &[u8], width: usize) -> Option<usize> {
    Some(match width {
        1 => usize::from(*b.first()?),
        2 => usize::from(u16::from_be_bytes(*b.first_chunk::<2>()?)),
        _ => return None,
    })
}

#[inline]
fn take<'a, const N: usize>(b: &mut &'a [u8]) -> Option<&'a [u8; N]> {
    let (head, rest) = b.split_first_chunk::<N>()?;
    *b = rest;
    Some(head)
}

#[inline]
fn take_n(b: &mut &[u8], width: usize) -> Option<u64> {
    Some(match width {
        1 => u64::from(take::<1>(b)?[0]),
        2 => u64::from(u16::from_be_bytes(*take::<2>(b)?)),
        4 => u64::from(u32::from_be_bytes(*take::<4>(b)?)),
        8 => u64::from_be_bytes(*take::<8>(b)?),
        _ => return None,
    })
}

/// Iterator over the records of a validated packet.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    layout: Layout,
    remaining: u8,
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        let l = self.layout;
        let len = l.record_len(self.rest)?;
        let (rec, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        let mut b = rec;
        if l.gh {
            return gh_record(b, l);
        }
        let timestamp_ms = u64::from_be_bytes(*take::<8>(&mut b)?);
        let [priority] = *take::<1>(&mut b)?;
        let lon_e7 = i32::from_be_bytes(*take::<4>(&mut b)?);
        let lat_e7 = i32::from_be_bytes(*take::<4>(&mut b)?);
        let altitude_m = i16::from_be_bytes(*take::<2>(&mut b)?);
        let angle = u16::from_be_bytes(*take::<2>(&mut b)?);
        let [satellites] = *take::<1>(&mut b)?;
        let speed_kmh = u16::from_be_bytes(*take::<2>(&mut b)?);
        let event_io = take_n(&mut b, l.id)? as u16;
        if l.generation {
            take::<1>(&mut b)?;
        }
        take_n(&mut b, l.count)?;
        Some(Record {
            timestamp_ms,
            priority,
            lon_e7,
            lat_e7,
            altitude_m,
            angle,
            satellites,
            speed_kmh,
            event_io,
            located: true,
            layout: l,
            groups: 0b1111,
            io: b,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (
            usize::from(self.remaining),
            Some(usize::from(self.remaining)),
        )
    }
}

/// A Codec 7 record (its length already checked): the fields that are present, zero otherwise.
fn gh_record(mut b: &[u8], layout: Layout) -> Option<Record<'_>> {
    let t = u32::from_be_bytes(*take::<4>(&mut b)?);
    let [mask] = *take::<1>(&mut b)?;
    let mut rec = Record {
        timestamp_ms: (u64::from(t & 0x3FFF_FFFF) + GH_EPOCH_S) * 1000,
        priority: (t >> 30) as u8,
        lon_e7: 0,
        lat_e7: 0,
        altitude_m: 0,
        angle: 0,
        satellites: 0,
        speed_kmh: 0,
        event_io: 0,
        located: false,
        layout,
        groups: (mask >> 1) & 0b0111,
        io: &[],
    };
    if mask & 1 != 0 {
        let [lm] = *take::<1>(&mut b)?;
        let has = |bit: u8| lm & (1 << bit) != 0;
        if has(0) {
            let lat = f32::from_be_bytes(*take::<4>(&mut b)?);
            let lon = f32::from_be_bytes(*take::<4>(&mut b)?);
            if lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0 {
                rec.lat_e7 = (f64::from(lat) * 1e7).round() as i32;
                rec.lon_e7 = (f64::from(lon) * 1e7).round() as i32;
                rec.located = true;
            }
        }
        if has(1) {
            rec.altitude_m = i16::from_be_bytes(*take::<2>(&mut b)?);
        }
        if has(2) {
            // One byte for the whole circle.
            rec.angle = (u32::from(take::<1>(&mut b)?[0]) * 360 / 256) as u16;
        }
        if has(3) {
            rec.speed_kmh = u16::from(take::<1>(&mut b)?[0]);
        }
        if has(4) {
            rec.satellites = take::<1>(&mut b)?[0];
        }
        for (bit, w) in [(5u8, 4usize), (6, 1), (7, 4)] {
            if has(bit) {
                b = b.get(w..)?;
            }
        }
    }
    rec.io = b;
    Some(rec)
}

/// One AVL record (protocols.md §C.3), fields as sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Record<'a> {
    /// Milliseconds since the Unix epoch, UTC (unless the device was configured otherwise).
    pub timestamp_ms: u64,
    /// 0 low, 1 high, 2 panic.
    pub priority: u8,
    /// Degrees × 10⁷, west negative.
    pub lon_e7: i32,
    /// Degrees × 10⁷, south negative.
    pub lat_e7: i32,
    pub altitude_m: i16,
    pub angle: u16,
    /// 0 means no fix: the position repeats the last valid one (§C.3).
    pub satellites: u8,
    pub speed_kmh: u16,
    /// The IO that triggered the record; 0 for a periodic record.
    pub event_io: u16,
    /// The record carries coordinates (Codec 7 records may carry IO only).
    pub located: bool,
    layout: Layout,
    /// Which of the 1-, 2-, 4- and 8-byte IO groups are present (bits 0..3).
    groups: u8,
    /// The IO groups, from the N1 count on.
    io: &'a [u8],
}

impl<'a> Record<'a> {
    /// The IO elements in wire order: 1-, 2-, 4-, 8-byte groups, then NX (8E).
    pub fn io(&self) -> IoElements<'a> {
        IoElements {
            layout: self.layout,
            groups: self.groups,
            rest: self.io,
            group: 0,
            left: 0,
        }
    }

    /// The device's fix flag: Teltonika has none, so "satellites in use" stands for it (§C.3).
    pub fn has_fix(&self) -> bool {
        self.satellites != 0
    }

    /// Alarm conditions the record's IO elements report (protocols.md §F.3). Only conditions
    /// whose IO is present are `known`, so a record silent about an IO never clears its state.
    /// - IO 252 unplug: POWER_CUT, active when non-zero.
    /// - IO 66 external voltage: POWER_CUT active below 1000 mV, known off at or above it (a
    ///   wired unit reading mains voltage has its power).
    /// - IO 246 towing: TOW. IO 249 jamming and IO 318 GNSS jamming (any non-zero level): JAMMING.
    /// - IO 239 ignition and IO 247 crash are states or events the rules do not use.
    pub fn alarms(&self) -> AlarmReport {
        let mut r = AlarmReport::NONE;
        let mut power_cut = false;
        let mut tow = false;
        let mut jam = false;
        for io in self.io() {
            let Some(v) = io.value.as_u64() else {
                continue;
            };
            match io.id {
                252 => {
                    r.known.insert(Alarms::POWER_CUT);
                    power_cut |= v != 0;
                }
                66 => {
                    r.known.insert(Alarms::POWER_CUT);
                    power_cut |= v < 1000;
                }
                246 => {
                    r.known.insert(Alarms::TOW);
                    tow |= v != 0;
                }
                249 | 318 => {
                    r.known.insert(Alarms::JAMMING);
                    jam |= v != 0;
                }
                _ => {}
            }
        }
        r.active.set(Alarms::POWER_CUT, power_cut);
        r.active.set(Alarms::TOW, tow);
        r.active.set(Alarms::JAMMING, jam);
        r
    }
}

/// An IO element value. Fixed widths are unsigned big-endian; meaning and sign are per model.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IoValue<'a> {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    /// A Codec 8E NX element, kept raw (§C.6).
    Bytes(&'a [u8]),
}

impl IoValue<'_> {
    /// The value of a fixed-width element.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            IoValue::U8(v) => Some(u64::from(v)),
            IoValue::U16(v) => Some(u64::from(v)),
            IoValue::U32(v) => Some(u64::from(v)),
            IoValue::U64(v) => Some(v),
            IoValue::Bytes(_) => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IoElement<'a> {
    pub id: u16,
    pub value: IoValue<'a>,
}

/// Iterator over a record's IO elements.
#[derive(Clone, Debug)]
pub struct IoElements<'a> {
    layout: Layout,
    groups: u8,
    rest: &'a [u8],
    /// Next group to open: 0..=3 fixed widths, 4 NX, 5 done.
    group: u8,
    /// Elements left in the open group.
    left: usize,
}

impl<'a> Iterator for IoElements<'a> {
    type Item = IoElement<'a>;

    #[inline]
    fn next(&mut self) -> Option<IoElement<'a>> {
        while self.left == 0 {
            if self.group <= 3 && self.groups & (1 << self.group) == 0 {
                self.group += 1;
                continue;
            }
            let width = match self.group {
                0..=3 => self.layout.count,
                4 if self.layout.nx => 2,
                4 if self.layout.x16 => self.layout.count,
                _ => return None,
            };
            self.left = take_n(&mut self.rest, width)? as usize;
            self.group += 1;
        }
        self.left -= 1;
        let id = take_n(&mut self.rest, self.layout.id)? as u16;
        let value = match self.group {
            1 => IoValue::U8(take::<1>(&mut self.rest)?[0]),
            2 => IoValue::U16(u16::from_be_bytes(*take::<2>(&mut self.rest)?)),
            3 => IoValue::U32(u32::from_be_bytes(*take::<4>(&mut self.rest)?)),
            4 => IoValue::U64(u64::from_be_bytes(*take::<8>(&mut self.rest)?)),
            _ if self.layout.x16 => IoValue::Bytes(take::<16>(&mut self.rest)?),
            _ => {
                let len = usize::from(u16::from_be_bytes(*take::<2>(&mut self.rest)?));
                let (v, rest) = self.rest.split_at_checked(len)?;
                self.rest = rest;
                IoValue::Bytes(v)
            }
        };
        Some(IoElement { id, value })
    }
}

/// Decodes one TCP AVL frame at the start of `buf` (protocols.md §C.2): preamble, length
/// (bounded by `max_frame` for the whole frame), CRC-16/ARC over codec .. N2, then the packet.
/// Returns the packet and the frame's length.
pub fn decode_frame(buf: &[u8], max_frame: usize) -> Result<(AvlData<'_>, usize), FrameError> {
    let Some((head, _)) = buf.split_first_chunk::<8>() else {
        if buf.iter().take(4).any(|&b| b != 0) {
            return Err(FrameError::BadPreamble);
        }
        return Err(FrameError::Incomplete);
    };
    let [p0, p1, p2, p3, l0, l1, l2, l3] = *head;
    if [p0, p1, p2, p3] != [0, 0, 0, 0] {
        return Err(FrameError::BadPreamble);
    }
    let declared = u32::from_be_bytes([l0, l1, l2, l3]);
    let data_len = declared as usize;
    if data_len < MIN_DATA || data_len > max_frame.saturating_sub(TCP_OVERHEAD) {
        return Err(FrameError::BadLength(declared));
    }
    let total = data_len + TCP_OVERHEAD;
    let frame = buf.get(..total).ok_or(FrameError::Incomplete)?;
    let (data, crc_field) = frame
        .get(8..)
        .and_then(|b| b.split_last_chunk::<4>())
        .ok_or(FrameError::Incomplete)?;
    if u32::from_be_bytes(*crc_field) != u32::from(crc16(data)) {
        return Err(FrameError::BadCrc { len: total });
    }
    let avl = AvlData::parse(data).map_err(|err| FrameError::Avl { err, len: total })?;
    Ok((avl, total))
}

/// Why a UDP datagram was not accepted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram shorter than its header")]
    Truncated,
    #[error("datagram length field does not match its size")]
    BadLength,
    #[error("IMEI is not 15 ASCII digits")]
    BadImei,
    #[error("{0}")]
    Avl(AvlError),
}

impl DatagramError {
    pub fn reason(self) -> &'static str {
        match self {
            DatagramError::Truncated => "UDP datagram truncated",
            DatagramError::BadLength => "UDP length field mismatch",
            DatagramError::BadImei => "bad IMEI",
            DatagramError::Avl(e) => e.reason(),
        }
    }
}

/// A decoded UDP datagram (protocols.md §C.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Datagram<'a> {
    pub packet_id: u16,
    pub avl_packet_id: u8,
    pub imei: &'a str,
    pub data: AvlData<'a>,
}

impl Datagram<'_> {
    /// `00 05 | packet id | 01 | AVL packet id | accepted`; the packet id is echoed as the wiki
    /// shows (Traccar writes 0 there; §C.4).
    pub fn ack(&self, accepted: u8) -> [u8; 7] {
        let [p0, p1] = self.packet_id.to_be_bytes();
        [0x00, 0x05, p0, p1, 0x01, self.avl_packet_id, accepted]
    }
}

/// Decodes one whole UDP datagram: `len(2) | packet id(2) | 01 | AVL packet id | 00 0F | IMEI |
/// codec | N1 | records | N2`. There is no CRC over UDP, so the length field must match exactly.
pub fn decode_datagram(d: &[u8]) -> Result<Datagram<'_>, DatagramError> {
    let mut b = d;
    let len = u16::from_be_bytes(*take::<2>(&mut b).ok_or(DatagramError::Truncated)?);
    if usize::from(len) != b.len() {
        return Err(DatagramError::BadLength);
    }
    let packet_id = u16::from_be_bytes(*take::<2>(&mut b).ok_or(DatagramError::Truncated)?);
    // The "not usable" byte (01) is not checked: the wiki only fixes its value in acks.
    let [_, avl_packet_id] = *take::<2>(&mut b).ok_or(DatagramError::Truncated)?;
    let imei_len = u16::from_be_bytes(*take::<2>(&mut b).ok_or(DatagramError::Truncated)?);
    if usize::from(imei_len) != IMEI_LEN {
        return Err(DatagramError::BadImei);
    }
    let imei = take::<IMEI_LEN>(&mut b).ok_or(DatagramError::Truncated)?;
    let imei = imei_str(imei).ok_or(DatagramError::BadImei)?;
    let data = AvlData::parse(b).map_err(DatagramError::Avl)?;
    Ok(Datagram {
        packet_id,
        avl_packet_id,
        imei,
        data,
    })
}

/// Decodes AVL data carried without the TCP session around it (protocols.md §E.2: MQTT payloads
/// may or may not keep the TCP preamble, length and CRC). A payload starting with the 4 zero
/// bytes is a whole TCP frame, CRC checked; anything else must be `codec | N1 | records | N2`.
pub fn decode_avl_payload(payload: &[u8], max_frame: usize) -> Result<AvlData<'_>, FrameError> {
    if payload.first_chunk::<4>() == Some(&[0, 0, 0, 0]) {
        let (avl, len) = decode_frame(payload, max_frame)?;
        if len != payload.len() {
            return Err(FrameError::Avl {
                err: AvlError::TrailingBytes,
                len: payload.len(),
            });
        }
        return Ok(avl);
    }
    AvlData::parse(payload).map_err(|err| FrameError::Avl {
        err,
        len: payload.len(),
    })
}

fn imei_str(b: &[u8]) -> Option<&str> {
    if b.iter().all(u8::is_ascii_digit) {
        std::str::from_utf8(b).ok()
    } else {
        None
    }
}

/// What a session has seen of a device's records, across its packets.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordWatermark {
    /// The newest record time the session has had, of those not ahead of the server's clock by
    /// more than [`AHEAD_MS`]: a clock a year ahead (a GPS week-rollover bug, corrected since)
    /// must not make every later record of the connection history.
    newest_ms: Option<u64>,
    /// `decode`: each record as it is, with its own IO; nothing merged.
    pub verbatim: bool,
}

/// How far ahead of the server's clock a record may be and still move the watermark: the
/// default `ingest.max_future`, beyond which the engine holds a fix suspect anyway.
const AHEAD_MS: u64 = 10 * 60_000;

/// The events of one AVL packet. Only the newest record the session has had is news: the others
/// were saved before it (records the device could not send, or its send period's), and Teltonika
/// sends them newest first by default (parameter 1010), a backlog over several packets, or
/// oldest first. Taken as live, an older record's IO would set the car's state back (a
/// `power_restored` from before the cut) and its position would release a `reappeared` with the
/// wrong distance; so an older position is buffered (history and last-known position, no live
/// rule) and an older IO-only record is a sign of life without its IO (domain.md §3.5).
///
/// The live record carries each condition as the newest record of the packet that names it
/// says: an IO sent only in the record made at its event (an "eventual" unplug) still counts
/// when a periodic record follows it in the packet.
pub fn packet_events(
    device: &DeviceId,
    data: &AvlData<'_>,
    utc_offset_s: Option<i32>,
    now: crate::event::Timestamp,
    seen: &mut RecordWatermark,
) -> Vec<Event> {
    let records: Vec<Record<'_>> = data.records().collect();
    let mut by_time: Vec<usize> = (0..records.len()).collect();
    by_time.sort_by_key(|&i| records[i].timestamp_ms);
    // The first record of the packet's newest time, unless the session already had newer.
    let live = by_time
        .last()
        .map(|&i| records[i].timestamp_ms)
        .and_then(|t| records.iter().position(|r| r.timestamp_ms == t))
        .filter(|&i| seen.newest_ms.is_none_or(|s| records[i].timestamp_ms >= s));
    let mut merged = AlarmReport::NONE;
    for &i in &by_time {
        let r = records[i].alarms();
        merged.active = merged
            .active
            .difference(r.known)
            .union(r.active.intersection(r.known));
        merged.known = merged.known.union(r.known);
    }
    // Record times as the device keeps them (`utc_offset_s` shifts both alike, near enough).
    let limit = u64::try_from(now.millis())
        .unwrap_or(0)
        .saturating_add(AHEAD_MS);
    if let Some(t) = by_time
        .iter()
        .rev()
        .map(|&i| records[i].timestamp_ms)
        .find(|&t| t <= limit)
    {
        seen.newest_ms = Some(seen.newest_ms.map_or(t, |s| s.max(t)));
    }
    let verbatim = seen.verbatim;
    records
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let mut ev = record_event(device, rec, utc_offset_s);
            let is_live = Some(i) == live;
            match &mut ev.kind {
                EventKind::Position(fix) if is_live && !verbatim => fix.alarms = merged,
                EventKind::Heartbeat { alarms } if is_live && !verbatim => *alarms = merged,
                EventKind::Position(fix) if !is_live => fix.buffered = true,
                EventKind::Heartbeat { alarms } if !is_live && !verbatim => {
                    *alarms = AlarmReport::NONE
                }
                _ => {}
            }
            ev
        })
        .collect()
}

/// The normalised event for one record. A no-fix record keeps the coordinates it carries but is
/// `valid: false`, so it only counts as a sign of life (§C.3). `utc_offset_s` undoes a device
/// clock set to local time.
pub fn record_event(device: &DeviceId, rec: &Record<'_>, utc_offset_s: Option<i32>) -> Event {
    // Codec 8/8E/16 carry coordinates as raw integers, and over UDP or bare MQTT payloads no CRC
    // vouches for them: a latitude of 214.7° is no place. The record still counts (its acks and
    // IO), as a sign of life.
    let on_earth =
        rec.lat_e7.unsigned_abs() <= 900_000_000 && rec.lon_e7.unsigned_abs() <= 1_800_000_000;
    if !rec.located || !on_earth {
        // A Codec 7 record of IO values only: a sign of life, not a position at 0/0.
        return Event {
            device_id: device.clone(),
            protocol: Protocol::Teltonika,
            kind: EventKind::Heartbeat {
                alarms: rec.alarms(),
            },
        };
    }
    let ms = i64::try_from(rec.timestamp_ms).unwrap_or(i64::MAX);
    let offset_ms = i64::from(utc_offset_s.unwrap_or(0)) * 1000;
    let position = Position {
        time: crate::event::Timestamp::from_millis(ms.saturating_sub(offset_ms)),
        lat: f64::from(rec.lat_e7) / 1e7,
        lon: f64::from(rec.lon_e7) / 1e7,
        valid: rec.has_fix(),
        speed_kmh: f64::from(rec.speed_kmh),
        course: rec.angle,
        satellites: Some(rec.satellites),
        altitude_m: Some(f64::from(rec.altitude_m)),
        cell: None,
        wifi: None,
    };
    Event {
        device_id: device.clone(),
        protocol: Protocol::Teltonika,
        kind: EventKind::Position(Fix {
            position,
            alarms: rec.alarms(),
            buffered: false,
            props: Default::default(),
        }),
    }
}

fn reject(out: &mut Vec<Output>, reason: &'static str, bytes: usize) {
    out.push(Output::Rejected(Rejection::new(reason, bytes)));
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TcpState {
    Handshake,
    Open,
    Refused,
}

/// One Teltonika TCP connection: IMEI handshake, then AVL packets (protocols.md §C.1).
pub struct TeltonikaSession {
    cfg: SessionConfig,
    state: TcpState,
    device: Option<DeviceId>,
    seen: RecordWatermark,
}

impl TeltonikaSession {
    pub fn new(cfg: SessionConfig) -> Self {
        TeltonikaSession {
            seen: RecordWatermark {
                verbatim: cfg.verbatim,
                ..RecordWatermark::default()
            },
            cfg,
            state: TcpState::Handshake,
            device: None,
        }
    }

    /// Handles the front of the buffer before the IMEI is known. Returns `false` when it needs
    /// more bytes.
    fn handshake(
        &mut self,
        buf: &mut BytesMut,
        out: &mut Vec<Output>,
    ) -> Result<bool, SessionError> {
        if buf.first_chunk::<4>() == Some(&[0, 0, 0, 0]) {
            return Ok(self.packet_before_handshake(buf, out));
        }
        if buf.len() < 4 && buf.iter().all(|&b| b == 0) {
            // `00`, `00 00`...: a handshake or a preamble; wait to tell.
            return Ok(false);
        }
        match check_handshake(buf) {
            Handshake::Partial => Ok(false),
            Handshake::Garbage => {
                let skip = next_handshake_start(buf);
                reject(out, "garbage before IMEI handshake", skip);
                buf.advance(skip);
                Ok(true)
            }
            Handshake::Imei(imei) => {
                let id = DeviceId::new(imei);
                buf.advance(HANDSHAKE_LEN);
                self.device = Some(id.clone());
                if self.cfg.admits(&id) {
                    self.state = TcpState::Open;
                    out.push(Output::Event(Event {
                        device_id: id,
                        protocol: Protocol::Teltonika,
                        kind: EventKind::Login,
                    }));
                    out.push(Output::Reply(Bytes::from_static(&[0x01])));
                    Ok(true)
                } else {
                    self.state = TcpState::Refused;
                    out.push(Output::Reply(Bytes::from_static(&[0x00])));
                    Err(SessionError::Refused(id.to_string()))
                }
            }
        }
    }

    /// An AVL preamble where the IMEI should be (no handshake starts `00 00`). With a configured
    /// `default_device_id` (MQTT raw payloads, `decode` of bare frames) the packets belong to
    /// that device and the session is open from here; otherwise the packet is skipped whole.
    fn packet_before_handshake(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> bool {
        if let Some(id) = self.cfg.default_device_id.clone() {
            self.device = Some(id);
            self.state = TcpState::Open;
            return true;
        }
        match decode_frame(buf, self.cfg.max_frame) {
            Err(FrameError::Incomplete) => false,
            Err(FrameError::BadCrc { len }) | Err(FrameError::Avl { len, .. }) | Ok((_, len)) => {
                reject(out, "AVL packet before IMEI handshake", len);
                buf.advance(len);
                true
            }
            Err(FrameError::BadPreamble) | Err(FrameError::BadLength(_)) => {
                reject(out, "garbage before IMEI handshake", 1);
                buf.advance(1);
                true
            }
        }
    }

    /// Handles the front of the buffer once the connection is open. Returns `false` when it
    /// needs more bytes.
    fn packet(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> bool {
        if buf.first() == Some(&0xFF) {
            // Keep-alive ping (§C.1, Traccar's reading): nothing to answer.
            buf.advance(1);
            return true;
        }
        match decode_frame(buf, self.cfg.max_frame) {
            Err(FrameError::Incomplete) => false,
            Err(FrameError::BadPreamble) => {
                let skip = next_preamble(buf);
                reject(out, "garbage before AVL preamble", skip);
                buf.advance(skip);
                true
            }
            Err(FrameError::BadLength(_)) => {
                // Not waited for: drop the first byte and look for the next preamble.
                reject(out, "AVL length out of range", 1);
                buf.advance(1);
                true
            }
            Err(FrameError::BadCrc { len }) => {
                // No ack: the device resends the packet.
                reject(out, "AVL CRC mismatch", len);
                buf.advance(len);
                true
            }
            Err(FrameError::Avl {
                err: AvlError::UnsupportedCodec(super::teltonika_command::CODEC_12),
                len,
            }) if self.codec12_response(buf, len, out) => {
                buf.advance(len);
                true
            }
            Err(FrameError::Avl { err, len }) => {
                let frame = buf.get(..len).unwrap_or(&[]);
                out.push(Output::Rejected(match err {
                    AvlError::UnsupportedCodec(c) => {
                        Rejection::unsupported("teltonika", &format!("codec 0x{c:02X}"), frame)
                    }
                    _ => Rejection::new(err.reason(), len),
                }));
                buf.advance(len);
                true
            }
            Ok((avl, len)) => {
                if let Some(dev) = &self.device {
                    let now = (self.cfg.clock)();
                    let events =
                        packet_events(dev, &avl, self.cfg.utc_offset_s, now, &mut self.seen);
                    out.extend(events.into_iter().map(Output::Event));
                }
                let ack = u32::from(avl.count()).to_be_bytes();
                out.push(Output::Reply(Bytes::copy_from_slice(&ack)));
                buf.advance(len);
                true
            }
        }
    }
}

impl TeltonikaSession {
    /// A CRC-checked Codec 12 frame of `len` bytes at the front of `buf`: if it is a command
    /// response, its answer event (no acknowledgement: a response is not AVL data).
    fn codec12_response(&self, buf: &[u8], len: usize, out: &mut Vec<Output>) -> bool {
        let data = buf.get(8..len.saturating_sub(4)).unwrap_or(&[]);
        let (Some(text), Some(dev)) = (
            super::teltonika_command::response_text(data),
            self.device.as_ref(),
        ) else {
            return false;
        };
        out.push(Output::Event(Event {
            device_id: dev.clone(),
            protocol: Protocol::Teltonika,
            kind: EventKind::CommandAnswer(CommandAnswer {
                key: AnswerKey::InOrder,
                ok: true,
                text: Some(text),
                position: None,
            }),
        }));
        true
    }
}

enum Handshake<'a> {
    Partial,
    Garbage,
    Imei(&'a str),
}

fn check_handshake(buf: &[u8]) -> Handshake<'_> {
    let prefix_ok = buf
        .iter()
        .take(HANDSHAKE_LEN)
        .enumerate()
        .all(|(i, &b)| match i {
            0 => b == 0x00,
            1 => b == IMEI_LEN as u8,
            _ => b.is_ascii_digit(),
        });
    if !prefix_ok {
        return Handshake::Garbage;
    }
    match buf.get(2..HANDSHAKE_LEN).and_then(imei_str) {
        Some(imei) => Handshake::Imei(imei),
        None => Handshake::Partial,
    }
}

/// Bytes to skip to the next place a handshake could start (`00`, then `0F` if present).
fn next_handshake_start(buf: &[u8]) -> usize {
    (1..buf.len())
        .find(|&i| buf.get(i) == Some(&0x00) && buf.get(i + 1).is_none_or(|&b| b == IMEI_LEN as u8))
        .unwrap_or(buf.len())
}

/// Bytes to skip to the next place a 4-zero preamble (or a ping byte) could start, keeping a
/// partial preamble at the end of the buffer.
fn next_preamble(buf: &[u8]) -> usize {
    (1..buf.len())
        .find(|&i| {
            buf.get(i) == Some(&0xFF)
                || buf
                    .get(i..)
                    .is_some_and(|r| r.iter().take(4).all(|&b| b == 0))
        })
        .unwrap_or(buf.len())
}

impl Session for TeltonikaSession {
    fn protocol(&self) -> Protocol {
        Protocol::Teltonika
    }

    fn feed(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> Result<(), SessionError> {
        loop {
            if buf.is_empty() {
                return Ok(());
            }
            let progressed = match self.state {
                TcpState::Handshake => self.handshake(buf, out)?,
                TcpState::Open => self.packet(buf, out),
                TcpState::Refused => {
                    let id = self.device.as_ref().map(|d| d.to_string());
                    buf.clear();
                    return Err(SessionError::Refused(id.unwrap_or_default()));
                }
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    fn device_id(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }

    fn encode_command(&mut self, _id: u64, cmd: &Downlink) -> Result<Encoded, EncodeError> {
        if self.state != TcpState::Open || self.device.is_none() {
            return Err(EncodeError::NotReady);
        }
        let text = match cmd {
            Downlink::Locate => super::teltonika_command::LOCATE_TEXT,
            Downlink::Raw(t) => t.as_str(),
            Downlink::Track { .. } => {
                return Err(EncodeError::Unsupported(
                    "Teltonika tracking is a model parameter: send its setparam text as raw",
                ))
            }
        };
        Ok(Encoded {
            bytes: Bytes::from(super::teltonika_command::encode_command(text)),
            key: AnswerKey::InOrder,
        })
    }
}

/// One UDP peer: every `feed` holds exactly one datagram, consumed whole (protocols.md §C.4).
pub struct TeltonikaUdpSession {
    cfg: SessionConfig,
    device: Option<DeviceId>,
    /// What the peer's datagrams showed of each device's records: a forwarder, or a NAT port
    /// reused, can bring several devices through one address, interleaved.
    seen: std::collections::HashMap<DeviceId, RecordWatermark>,
}

/// The most devices one UDP peer's session keeps a watermark for; past it they start again.
const DEVICES_PER_PEER: usize = 1024;

impl TeltonikaUdpSession {
    pub fn new(cfg: SessionConfig) -> Self {
        TeltonikaUdpSession {
            seen: std::collections::HashMap::new(),
            cfg,
            device: None,
        }
    }
}

impl Session for TeltonikaUdpSession {
    fn protocol(&self) -> Protocol {
        Protocol::Teltonika
    }

    /// Emits one event per record, then the 7-byte ack. An admission refusal sends no ack and
    /// returns [`SessionError::Refused`]; a bad datagram is `Rejected` with no ack.
    fn feed(&mut self, buf: &mut BytesMut, out: &mut Vec<Output>) -> Result<(), SessionError> {
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len();
        if n > self.cfg.max_frame {
            reject(out, "UDP datagram over limit", n);
            buf.clear();
            return Ok(());
        }
        let d = match decode_datagram(buf) {
            Ok(d) => d,
            Err(e) => {
                reject(out, e.reason(), n);
                buf.clear();
                return Ok(());
            }
        };
        let dev = match &self.device {
            Some(dev) if dev.as_str() == d.imei => dev.clone(),
            _ => DeviceId::new(d.imei),
        };
        // Asked for every datagram, as a UDP peer has no login to ask at: a device taken out of
        // the registry is refused from its next one.
        if !self.cfg.admits(&dev) {
            reject(out, "device refused", n);
            buf.clear();
            return Err(SessionError::Refused(dev.to_string()));
        }
        if self.device.as_ref() != Some(&dev) {
            self.device = Some(dev.clone());
        }
        if self.seen.len() >= DEVICES_PER_PEER && !self.seen.contains_key(&dev) {
            self.seen.clear();
        }
        let verbatim = self.cfg.verbatim;
        let seen = self.seen.entry(dev.clone()).or_insert(RecordWatermark {
            verbatim,
            ..RecordWatermark::default()
        });
        let now = (self.cfg.clock)();
        let events = packet_events(&dev, &d.data, self.cfg.utc_offset_s, now, seen);
        out.extend(events.into_iter().map(Output::Event));
        out.push(Output::Reply(Bytes::copy_from_slice(
            &d.ack(d.data.count()),
        )));
        buf.clear();
        Ok(())
    }

    fn device_id(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_hex;

    const WIKI_C8: &str = "00 00 00 00 00 00 00 36 08 01 00 00 01 6B 40 D8 EA 30 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 05 02 15 03 01 01 01 42 5E 0F 01 F1 00 00 60 1A 01 4E 00 00 00 00 00 00 00 00 01 00 00 C7 CF";
    const WIKI_C8E: &str = "00 00 00 00 00 00 00 4A 8E 01 00 00 01 6B 41 2C EE 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 05 00 01 00 01 01 00 01 00 11 00 1D 00 01 00 10 01 5E 2C 88 00 02 00 0B 00 00 00 00 35 44 C8 7A 00 0E 00 00 00 00 1D D7 E0 6A 00 00 01 00 00 29 94";
    const OWN_UNPLUG: &str = "00 00 00 00 00 00 00 34 08 01 00 00 01 8F 95 8D 46 D8 01 43 FB D9 5A 0D 6F CD B0 00 23 00 5A 09 00 3E FC 07 04 EF 01 F0 01 15 04 FC 01 02 42 00 00 43 0F 6E 01 10 00 BC 61 4E 00 01 00 00 93 00";
    const OWN_8E_NEG: &str = "00 00 00 00 00 00 00 33 8E 01 00 00 01 8F 95 8D 46 D8 01 DD 33 AE 5A EB 5F E4 1C 00 19 01 0E 07 00 00 00 EF 00 03 00 02 00 EF 00 00 F0 00 00 01 00 42 31 5A 00 00 00 00 00 00 01 00 00 63 F4";
    const HANDSHAKE: &str = "00 0F 33 35 36 33 30 37 30 34 32 34 34 31 30 31 33";

    fn hex(s: &str) -> Vec<u8> {
        parse_hex(s).expect("test hex")
    }

    /// Two devices behind one UDP address (a forwarder, a reused NAT port), interleaved: each
    /// one's records are judged against its own newest. An hour-old record after the device's
    /// own newer one is buffered; the other device's hour-old record, its first, is live.
    #[test]
    fn a_udp_session_keeps_each_devices_records_apart() {
        let avl = hex(OWN_UNPLUG);
        let data = &avl[8..avl.len() - 4];
        let datagram = |imei: &str, shift_ms: i64| {
            let mut data = data.to_vec();
            let t = i64::from_be_bytes(data[2..10].try_into().unwrap()) + shift_ms;
            data[2..10].copy_from_slice(&t.to_be_bytes());
            let mut body = vec![0xCA, 0xFE, 0x01, 0x05, 0x00, imei.len() as u8];
            body.extend_from_slice(imei.as_bytes());
            body.extend_from_slice(&data);
            let mut d = (body.len() as u16).to_be_bytes().to_vec();
            d.extend(body);
            d
        };
        let mut u = TeltonikaUdpSession::new(SessionConfig::default());
        let mut buffered = |dgram: Vec<u8>| {
            let (out, _) = crate::protocol::decode_all(&mut u, &dgram);
            let b: Vec<bool> = out
                .iter()
                .filter_map(|o| match o {
                    Output::Event(Event {
                        kind: EventKind::Position(f),
                        ..
                    }) => Some(f.buffered),
                    _ => None,
                })
                .collect();
            assert_eq!(b.len(), 1, "{out:?}");
            b[0]
        };
        let (a, b) = ("352093086403655", "352093086403656");
        assert!(!buffered(datagram(a, 0)));
        assert!(buffered(datagram(a, -3_600_000)));
        assert!(!buffered(datagram(b, -3_600_000)));
        // Interleaved: each device's backlog is judged against its own newest record.
        assert!(buffered(datagram(a, -5_400_000)));
        assert!(buffered(datagram(b, -7_200_000)));
        assert!(buffered(datagram(a, -60_000)));
        assert!(!buffered(datagram(b, -1_800_000)));
        assert!(!buffered(datagram(a, 60_000)));
    }

    fn ios(rec: &Record<'_>) -> Vec<(u16, u64)> {
        rec.io()
            .map(|e| (e.id, e.value.as_u64().unwrap_or(u64::MAX)))
            .collect()
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0xBB3D);
    }

    #[test]
    fn wiki_codec8_decodes() {
        let f = hex(WIKI_C8);
        let (avl, len) = decode_frame(&f, 4096).expect("valid frame");
        assert_eq!(len, f.len());
        assert_eq!((avl.codec(), avl.count()), (CODEC_8, 1));
        let rec = avl.records().next().expect("one record");
        assert_eq!(rec.timestamp_ms, 0x0000_016B_40D8_EA30);
        assert_eq!((rec.priority, rec.satellites, rec.event_io), (1, 0, 1));
        assert_eq!(
            ios(&rec),
            vec![(21, 3), (1, 1), (66, 24_079), (241, 24_602), (78, 0)]
        );
        assert!(!rec.has_fix());
        // IO 66 = 24 V: power known present.
        let a = rec.alarms();
        assert!(a.known.contains(Alarms::POWER_CUT) && a.active.is_empty());
    }

    #[test]
    fn wiki_codec8e_decodes() {
        let f = hex(WIKI_C8E);
        let (avl, _) = decode_frame(&f, 4096).expect("valid frame");
        let rec = avl.records().next().expect("one record");
        assert_eq!(
            ios(&rec),
            vec![
                (1, 1),
                (17, 29),
                (16, 22_949_000),
                (11, 893_700_218),
                (14, 500_686_954)
            ]
        );
    }

    #[test]
    fn own_examples_decode() {
        let f = hex(OWN_UNPLUG);
        let (avl, _) = decode_frame(&f, 4096).expect("valid frame");
        let rec = avl.records().next().expect("one record");
        assert_eq!((rec.lon_e7, rec.lat_e7), (1_140_578_650, 225_430_960));
        assert_eq!(
            (rec.altitude_m, rec.angle, rec.satellites, rec.speed_kmh),
            (35, 90, 9, 62)
        );
        assert_eq!(rec.event_io, 252);
        let a = rec.alarms();
        assert!(a.active.contains(Alarms::POWER_CUT));
        let f = hex(OWN_8E_NEG);
        let (avl, _) = decode_frame(&f, 4096).expect("valid frame");
        let rec = avl.records().next().expect("one record");
        assert_eq!((rec.lon_e7, rec.lat_e7), (-583_815_590, -346_037_220));
        assert_eq!(ios(&rec), vec![(239, 0), (240, 0), (66, 12_634)]);
    }

    #[test]
    fn bad_crc_and_bad_lengths_are_rejected() {
        let mut f = hex(WIKI_C8);
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(matches!(
            decode_frame(&f, 4096),
            Err(FrameError::BadCrc { .. })
        ));
        let huge = [0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            decode_frame(&huge, 4096),
            Err(FrameError::BadLength(0x7FFF_FFFF))
        );
        assert_eq!(decode_frame(&[0, 0, 0], 4096), Err(FrameError::Incomplete));
        assert_eq!(decode_frame(&[0, 1], 4096), Err(FrameError::BadPreamble));
        // A preamble followed by part of the length is only incomplete.
        assert_eq!(
            decode_frame(&[0, 0, 0, 0, 0, 0, 1], 4096),
            Err(FrameError::Incomplete)
        );
    }

    #[test]
    fn tcp_session_handshake_packet_and_ping() {
        let mut s = TeltonikaSession::new(SessionConfig::default());
        let mut buf = BytesMut::from(&hex(HANDSHAKE)[..]);
        buf.extend_from_slice(&[0xFF]);
        buf.extend_from_slice(&hex(OWN_UNPLUG));
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).expect("no error");
        assert!(buf.is_empty());
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(matches!(&out[0], Output::Event(e) if e.kind == EventKind::Login));
        assert_eq!(out[1], Output::Reply(Bytes::from_static(&[1])));
        assert!(matches!(&out[2], Output::Event(e) if e.device_id.as_str() == "356307042441013"));
        assert_eq!(out[3], Output::Reply(Bytes::from_static(&[0, 0, 0, 1])));
    }

    /// A Codec 8 packet of fixed records at 22.5, 114.0, each `(timestamp ms, IO 252)`; a
    /// record without IO 252 has no IO at all.
    fn codec8(records: &[(u64, Option<u8>)]) -> Vec<u8> {
        let mut data = vec![CODEC_8, records.len() as u8];
        for &(t, unplugged) in records {
            data.extend_from_slice(&t.to_be_bytes());
            data.push(0);
            data.extend_from_slice(&1_140_000_000i32.to_be_bytes());
            data.extend_from_slice(&225_000_000i32.to_be_bytes());
            data.extend_from_slice(&[0, 0, 0, 0, 9, 0, 0]);
            // Event IO 0; one 1-byte element or none, none wider.
            match unplugged {
                Some(v) => data.extend_from_slice(&[0, 1, 1, 252, v, 0, 0, 0]),
                None => data.extend_from_slice(&[0, 0, 0, 0, 0, 0]),
            }
        }
        data.push(records.len() as u8);
        let mut f = vec![0, 0, 0, 0];
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(&data);
        f.extend_from_slice(&u32::from(crc16(&data)).to_be_bytes());
        f
    }

    /// The fixes a session makes of `packets` after the handshake: (time, buffered, power cut
    /// reported on).
    fn fixes_of(packets: &[Vec<u8>]) -> Vec<(u64, bool, bool)> {
        fixes_at(SessionConfig::default().clock, packets)
    }

    fn fixes_at(clock: crate::time::Clock, packets: &[Vec<u8>]) -> Vec<(u64, bool, bool)> {
        let mut s = TeltonikaSession::new(SessionConfig {
            clock,
            ..SessionConfig::default()
        });
        let mut buf = BytesMut::from(&hex(HANDSHAKE)[..]);
        let mut out = Vec::new();
        for p in packets {
            buf.extend_from_slice(p);
            s.feed(&mut buf, &mut out).expect("no error");
        }
        out.iter()
            .filter_map(|o| match o {
                Output::Event(Event {
                    kind: EventKind::Position(f),
                    ..
                }) => Some((
                    f.position.time.millis() as u64,
                    f.buffered,
                    f.alarms.active.contains(Alarms::POWER_CUT),
                )),
                _ => None,
            })
            .collect()
    }

    /// Records sent together, newest first (Teltonika's default) or oldest first, or a backlog
    /// over several packets: only the newest the session has had is live. An older record's
    /// unplug IO would otherwise raise a `power_cut` a day late and set the state back; it is
    /// history (buffered).
    #[test]
    fn only_the_newest_record_is_live() {
        let now = 1_716_200_000_000u64;
        let day = 86_400_000u64;
        for records in [
            [
                (now, Some(0)),
                (now - day, Some(1)),
                (now - 2 * day, Some(0)),
            ],
            [
                (now - 2 * day, Some(0)),
                (now - day, Some(1)),
                (now, Some(0)),
            ],
        ] {
            let fixes = fixes_of(&[codec8(&records)]);
            assert_eq!(fixes.len(), 3);
            for (t, buffered, _) in &fixes {
                assert_eq!(*buffered, *t != now, "{records:?}");
            }
            let live = fixes.iter().find(|f| !f.1).unwrap();
            assert!(!live.2, "the newest record says the power is on");
        }
        // A backlog newest first over two packets: the second packet is all history.
        let fixes = fixes_of(&[
            codec8(&[(now, Some(1))]),
            codec8(&[(now - day, Some(0)), (now - 2 * day, Some(0))]),
        ]);
        let flags: Vec<bool> = fixes.iter().map(|f| f.1).collect();
        assert_eq!(flags, [false, true, true]);
        assert!(fixes[0].2);
    }

    /// Raw frames from an MQTT broker (no session across messages, no login) merge as a
    /// connection does; only `decode` prints each record verbatim.
    #[test]
    fn only_decode_keeps_each_record_verbatim() {
        let now = 1_716_200_000_000u64;
        let packet = codec8(&[(now, None), (now - 30_000, Some(1))]);
        for (verbatim, cut) in [(false, true), (true, false)] {
            let mut s = TeltonikaSession::new(SessionConfig {
                sessionless: true,
                verbatim,
                default_device_id: Some(DeviceId::new("868120145233604")),
                ..SessionConfig::default()
            });
            let mut buf = BytesMut::from(&packet[..]);
            let mut out = Vec::new();
            s.feed(&mut buf, &mut out).expect("no error");
            let newest = out.iter().find_map(|o| match o {
                Output::Event(Event {
                    kind: EventKind::Position(f),
                    ..
                }) if !f.buffered => Some(f.alarms.active.contains(Alarms::POWER_CUT)),
                _ => None,
            });
            assert_eq!(newest, Some(cut), "verbatim {verbatim}");
        }
    }

    /// A record a year ahead of the server's clock (a week-rollover bug, corrected since) does
    /// not make every later record of the connection history.
    #[test]
    fn a_clock_far_ahead_does_not_bury_the_records_after_it() {
        let now = 1_716_200_000_000u64;
        let year = 365 * 86_400_000u64;
        let clock: crate::time::Clock =
            std::sync::Arc::new(move || crate::event::Timestamp::from_millis(now as i64));
        let fixes = fixes_at(
            clock,
            &[
                codec8(&[(now + year, Some(0))]),
                codec8(&[(now - 1000, Some(0))]),
            ],
        );
        let flags: Vec<bool> = fixes.iter().map(|f| f.1).collect();
        assert_eq!(flags, [false, false]);
    }

    /// An IO sent only in the record made at its event (an "eventual" unplug), followed in the
    /// packet by a periodic record without it: the live record carries it.
    #[test]
    fn an_eventual_io_in_an_older_record_reaches_the_live_one() {
        let now = 1_716_200_000_000u64;
        let fixes = fixes_of(&[codec8(&[(now, None), (now - 30_000, Some(1))])]);
        assert_eq!(fixes, [(now, false, true), (now - 30_000, true, true)]);
        // A newer record that says otherwise wins.
        let fixes = fixes_of(&[codec8(&[(now, Some(0)), (now - 30_000, Some(1))])]);
        assert_eq!(fixes[0], (now, false, false));
    }

    #[test]
    fn refused_device_gets_zero_and_an_error() {
        let cfg = SessionConfig {
            admit: std::sync::Arc::new(|_| false),
            ..SessionConfig::default()
        };
        let mut s = TeltonikaSession::new(cfg);
        let mut buf = BytesMut::from(&hex(HANDSHAKE)[..]);
        let mut out = Vec::new();
        let err = s.feed(&mut buf, &mut out).expect_err("refused");
        assert_eq!(err, SessionError::Refused("356307042441013".into()));
        assert_eq!(out, vec![Output::Reply(Bytes::from_static(&[0]))]);
    }

    #[test]
    fn absurd_length_is_not_buffered() {
        let mut s = TeltonikaSession::new(SessionConfig::default());
        let mut buf = BytesMut::from(&hex(HANDSHAKE)[..]);
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).expect("ok");
        buf.extend_from_slice(&[0, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3]);
        buf.extend_from_slice(&hex(WIKI_C8));
        out.clear();
        s.feed(&mut buf, &mut out).expect("ok");
        assert!(buf.is_empty());
        let replies: Vec<_> = out
            .iter()
            .filter(|o| matches!(o, Output::Reply(_)))
            .collect();
        assert_eq!(
            replies,
            vec![&Output::Reply(Bytes::from_static(&[0, 0, 0, 1]))]
        );
    }

    #[test]
    fn frames_before_the_handshake() {
        // Without a default id the packet is skipped whole, then the handshake works.
        let mut s = TeltonikaSession::new(SessionConfig::default());
        let mut buf = BytesMut::from(&hex(OWN_UNPLUG)[..]);
        buf.extend_from_slice(&hex(HANDSHAKE));
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).expect("ok");
        assert!(buf.is_empty());
        assert!(matches!(out[0], Output::Rejected(ref r) if r.bytes == 64));
        assert_eq!(out.len(), 3);
        // With one (MQTT raw payloads, decode) the packet is that device's.
        let cfg = SessionConfig {
            default_device_id: Some(DeviceId::new("868120145233604")),
            ..SessionConfig::default()
        };
        let mut s = TeltonikaSession::new(cfg);
        let mut buf = BytesMut::from(&hex(OWN_UNPLUG)[..]);
        let mut out = Vec::new();
        s.feed(&mut buf, &mut out).expect("ok");
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], Output::Event(e) if e.device_id.as_str() == "868120145233604"));
    }

    #[test]
    fn avl_payload_with_or_without_tcp_envelope() {
        let f = hex(OWN_UNPLUG);
        let whole = decode_avl_payload(&f, 4096).expect("framed");
        let bare = decode_avl_payload(&f[8..f.len() - 4], 4096).expect("bare");
        assert_eq!(whole, bare);
        assert!(decode_avl_payload(&f[..f.len() - 1], 4096).is_err());
    }

    #[test]
    fn utc_offset_shifts_time() {
        let f = hex(OWN_UNPLUG);
        let (avl, _) = decode_frame(&f, 4096).expect("valid");
        let rec = avl.records().next().expect("record");
        let id = DeviceId::new("1");
        let e = record_event(&id, &rec, Some(3600));
        let p = e.position().expect("position");
        assert_eq!(p.time.to_string(), "2024-05-20T09:30:15Z");
    }

    /// No CRC over UDP or a bare MQTT payload: a latitude of 214.7° is no position, but the
    /// record is still a sign of life.
    #[test]
    fn coordinates_off_the_earth_are_no_position() {
        let f = hex(OWN_UNPLUG);
        let mut bare = f[8..f.len() - 4].to_vec();
        bare[15..19].copy_from_slice(&0x7FFF_FFFFi32.to_be_bytes());
        let avl = decode_avl_payload(&bare, 4096).expect("bare");
        let rec = avl.records().next().expect("record");
        assert_eq!(rec.lat_e7, i32::MAX);
        let e = record_event(&DeviceId::new("1"), &rec, None);
        assert!(e.position().is_none(), "{e:?}");
        assert!(matches!(e.kind, EventKind::Heartbeat { .. }));
    }
}
