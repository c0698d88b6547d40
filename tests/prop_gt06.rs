//! Property tests for the GT06 session: robustness on arbitrary bytes, independence from read
//! boundaries, field round trips through a small independent encoder, and no wrong replies after
//! corruption.

use bytes::BytesMut;
use lienwatch::event::{EventKind, Timestamp};
use lienwatch::protocol::gt06::Gt06Session;
use lienwatch::protocol::{events, replies, Output, Session, SessionConfig};
use proptest::prelude::*;
use std::sync::Arc;

/// Independent of the decoder's CRC (a different table layout of the same algorithm).
const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);

fn frame(proto: u8, content: &[u8], serial: u16) -> Vec<u8> {
    let len = 1 + content.len() + 2 + 2;
    let mut f = if len > 255 {
        let mut f = vec![0x79, 0x79];
        f.extend_from_slice(&(len as u16).to_be_bytes());
        f
    } else {
        vec![0x78, 0x78, len as u8]
    };
    f.push(proto);
    f.extend_from_slice(content);
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = X25.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    f
}

fn ack(proto: u8, serial: u16) -> Vec<u8> {
    let mut f = vec![0x78, 0x78, 0x05, proto];
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = X25.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    f
}

fn login(serial: u16) -> Vec<u8> {
    frame(
        0x01,
        &[0x08, 0x68, 0x12, 0x01, 0x45, 0x23, 0x36, 0x04],
        serial,
    )
}

#[derive(Clone, Debug)]
struct Loc {
    proto: u8,
    ymdhms: [u8; 6],
    sats: u8,
    lat_raw: u32,
    lon_raw: u32,
    speed: u8,
    course: u16,
    valid: bool,
    north: bool,
    west: bool,
    reupload: bool,
    trailing: Vec<u8>,
    serial: u16,
}

impl Loc {
    fn encode(&self) -> Vec<u8> {
        let mut c = self.ymdhms.to_vec();
        c.push(0xC0 | self.sats);
        c.extend_from_slice(&self.lat_raw.to_be_bytes());
        c.extend_from_slice(&self.lon_raw.to_be_bytes());
        c.push(self.speed);
        let cs = self.course
            | if self.valid { 0x1000 } else { 0 }
            | if self.west { 0x0800 } else { 0 }
            | if self.north { 0x0400 } else { 0 };
        c.extend_from_slice(&cs.to_be_bytes());
        c.extend_from_slice(&[0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31]);
        if self.proto == 0x22 {
            c.extend_from_slice(&[1, 0, self.reupload as u8]);
        }
        c.extend_from_slice(&self.trailing);
        frame(self.proto, &c, self.serial)
    }
}

fn loc_strategy() -> impl Strategy<Value = Loc> {
    (
        prop_oneof![Just(0x12u8), Just(0x22u8)],
        (0u8..100, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60),
        0u8..16,
        0u32..=90 * 1_800_000,
        0u32..=180 * 1_800_000,
        any::<u8>(),
        0u16..=360,
        any::<(bool, bool, bool, bool)>(),
        prop::collection::vec(any::<u8>(), 0..8),
        any::<u16>(),
    )
        .prop_map(
            |(proto, t, sats, lat_raw, lon_raw, speed, course, flags, trailing, serial)| Loc {
                proto,
                ymdhms: [t.0, t.1, t.2, t.3, t.4, t.5],
                sats,
                lat_raw,
                lon_raw,
                speed,
                course,
                valid: flags.0,
                north: flags.1,
                west: flags.2,
                reupload: flags.3 && proto == 0x22,
                trailing,
                serial,
            },
        )
}

/// A valid frame a logged-in device may send.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        loc_strategy().prop_map(|l| l.encode()),
        (any::<u8>(), any::<u16>()).prop_map(|(ti, s)| frame(
            0x13,
            &[ti, 0x06, 0x04, 0x00, 0x02],
            s
        )),
        (any::<u16>()).prop_map(|s| frame(0x8A, &[], s)),
        (any::<u16>()).prop_map(|s| frame(0x94, &[0x00, 0x04, 0x9F], s)),
        (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(ti, code, s)| {
            let mut c = vec![
                0x18, 0x05, 0x14, 0x0A, 0x1E, 0x0F, 0xC9, 0x02, 0x6B, 0x2A, 0x25, 0x0C, 0x3C, 0xB1,
                0x5D, 0x00, 0x14, 0x5A, 0x09, 0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31,
            ];
            c.extend_from_slice(&[ti, 0x04, 0x03, code, 0x02]);
            frame(0x16, &c, s)
        }),
        (
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..300),
            any::<u16>()
        )
            .prop_map(|(p, c, s)| frame(p | 0x40, &c, s)),
        clone_strategy().prop_map(|c| c.encode()),
        lbs_strategy().prop_map(|l| l.encode()),
        // Every type the decoder reads, with arbitrary content (LBS, Wi-Fi, modular, text, ...).
        (
            prop::sample::select(KNOWN_TYPES),
            prop::collection::vec(any::<u8>(), 0..120),
            any::<bool>(),
            any::<u16>()
        )
            .prop_map(|(p, c, ext, s)| if ext {
                frame_ext(p, &c, s)
            } else {
                frame(p, &c, s)
            }),
    ]
}

/// Every protocol number the decoder reads in some layout.
const KNOWN_TYPES: &[u8] = &[
    0x01, 0x10, 0x11, 0x12, 0x13, 0x16, 0x18, 0x19, 0x1A, 0x1E, 0x21, 0x2A, 0x22, 0x24, 0x25, 0x26,
    0x27, 0x28, 0x2C, 0x2D, 0x2E, 0x31, 0x32, 0x33, 0x34, 0x36, 0x37, 0x38, 0x39, 0x70, 0x8A, 0x94,
    0xA0, 0xA1, 0xA2, 0xA4, 0x17, 0xA5, 0xA7, 0xF3,
];

/// A `79 79` frame whatever the length.
fn frame_ext(proto: u8, content: &[u8], serial: u16) -> Vec<u8> {
    let len = 1 + content.len() + 2 + 2;
    let mut f = vec![0x79, 0x79];
    f.extend_from_slice(&(len as u16).to_be_bytes());
    f.push(proto);
    f.extend_from_slice(content);
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = X25.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    f
}

fn ack_ext(proto: u8, serial: u16) -> Vec<u8> {
    let mut f = vec![0x79, 0x79, 0x00, 0x05, proto];
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = X25.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    f
}

/// How a clone wraps the standard GPS block.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    /// GPS block first, in a `78 78` frame of the given type.
    First(u8),
    /// X1 0x34: 4 bytes of data/alarm flags first.
    X1,
    /// QH302R 0x12: the IMEI first, content exactly 34 bytes.
    Imei,
    /// AZ735 0x32 in a `79 79` frame: a GPS length byte after the date.
    Az735,
}

#[derive(Clone, Debug)]
struct CloneLoc {
    wrap: Wrap,
    loc: Loc,
}

impl CloneLoc {
    fn encode(&self) -> Vec<u8> {
        let l = &self.loc;
        let mut gps = l.ymdhms.to_vec();
        if matches!(self.wrap, Wrap::Az735) {
            gps.push(0x0C);
        }
        gps.push(0xC0 | l.sats);
        gps.extend_from_slice(&l.lat_raw.to_be_bytes());
        gps.extend_from_slice(&l.lon_raw.to_be_bytes());
        gps.push(l.speed);
        let cs = l.course
            | if l.valid { 0x1000 } else { 0 }
            | if l.west { 0x0800 } else { 0 }
            | if l.north { 0x0400 } else { 0 };
        gps.extend_from_slice(&cs.to_be_bytes());
        match self.wrap {
            Wrap::First(p) => {
                // SR411 mini 0x24 and LW 0xA2 are told apart from their LBS forms by length.
                let len = match p {
                    0x24 => 0x2E - 5,
                    0xA2 => 0x40 - 5,
                    0x36 => 0x35 - 5,
                    _ => gps.len() + l.trailing.len(),
                };
                gps.extend_from_slice(&l.trailing);
                gps.resize(len.max(18), 0);
                frame(p, &gps, l.serial)
            }
            Wrap::X1 => {
                let mut c = vec![0, 0, 0, 0];
                c.extend_from_slice(&gps);
                c.extend_from_slice(&l.trailing);
                frame(0x34, &c, l.serial)
            }
            Wrap::Imei => {
                let mut c = vec![0x08, 0x66, 0x70, 0x30, 0x66, 0x50, 0x22, 0x97];
                c.extend_from_slice(&gps);
                c.resize(34, 0);
                frame(0x12, &c, l.serial)
            }
            Wrap::Az735 => {
                gps.extend_from_slice(&l.trailing);
                frame_ext(0x32, &gps, l.serial)
            }
        }
    }

    fn reply(&self) -> Vec<u8> {
        match self.wrap {
            Wrap::First(p) => ack(p, self.loc.serial),
            Wrap::X1 => ack(0x34, self.loc.serial),
            Wrap::Imei => ack(0x12, self.loc.serial),
            Wrap::Az735 => ack_ext(0x32, self.loc.serial),
        }
    }
}

fn clone_strategy() -> impl Strategy<Value = CloneLoc> {
    let wrap = prop_oneof![
        prop::sample::select(
            &[
                0x10u8, 0x11, 0x1A, 0x1E, 0x24, 0x25, 0x2D, 0x31, 0x32, 0x36, 0x37, 0x38, 0x39,
                0xA2
            ][..]
        )
        .prop_map(Wrap::First),
        Just(Wrap::X1),
        Just(Wrap::Imei),
        Just(Wrap::Az735),
    ];
    (wrap, loc_strategy()).prop_map(|(wrap, mut loc)| {
        loc.reupload = false;
        CloneLoc { wrap, loc }
    })
}

/// A multi-cell LBS report (0x28 layout): date, MCC, MNC, 7 cells of LAC, cell id and RSSI.
#[derive(Clone, Debug)]
struct Lbs {
    proto: u8,
    ymdhms: [u8; 6],
    mcc: u16,
    mnc: u8,
    lac: u16,
    cid: u32,
    serial: u16,
}

impl Lbs {
    fn encode(&self) -> Vec<u8> {
        let mut c = self.ymdhms.to_vec();
        c.extend_from_slice(&self.mcc.to_be_bytes());
        c.push(self.mnc);
        for i in 0..7u8 {
            c.extend_from_slice(&self.lac.to_be_bytes());
            c.extend_from_slice(&self.cid.to_be_bytes()[1..]);
            c.push(60 + i);
        }
        c.push(0); // timing advance
        if self.proto == 0x2C {
            c.push(0); // no Wi-Fi access points
        }
        c.extend_from_slice(&[0x00, 0x01]); // language
        frame(self.proto, &c, self.serial)
    }
}

fn lbs_strategy() -> impl Strategy<Value = Lbs> {
    (
        prop::sample::select(&[0x28u8, 0x2E, 0x2C][..]),
        (0u8..100, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60),
        0u16..0x8000,
        any::<u8>(),
        1u16..,
        0u32..0x0100_0000,
        any::<u16>(),
    )
        .prop_map(|(proto, t, mcc, mnc, lac, cid, serial)| Lbs {
            proto,
            ymdhms: [t.0, t.1, t.2, t.3, t.4, t.5],
            mcc,
            mnc,
            lac,
            cid,
            serial,
        })
}

/// A Wi-Fi report in the bare form of 0x69 / 0x17: the length byte counts the access points, no
/// serial, no CRC; answered with the type and the six time bytes.
#[derive(Clone, Debug)]
struct BareWifi {
    proto: u8,
    ymdhms: [u8; 6],
    aps: Vec<([u8; 6], u8)>,
    mcc: u16,
    mnc: u8,
    cells: Vec<(u16, u16, u8)>,
}

fn to_bcd(x: u8) -> u8 {
    (x / 10) << 4 | (x % 10)
}

impl BareWifi {
    fn time(&self) -> Vec<u8> {
        self.ymdhms.iter().map(|&x| to_bcd(x)).collect()
    }

    fn encode(&self) -> Vec<u8> {
        let mut f = vec![0x78, 0x78, self.aps.len() as u8, self.proto];
        f.extend(self.time());
        for (mac, rssi) in &self.aps {
            f.extend_from_slice(mac);
            f.push(*rssi);
        }
        f.push(self.cells.len() as u8);
        f.extend_from_slice(&self.mcc.to_be_bytes());
        f.push(self.mnc);
        for (lac, cid, rssi) in &self.cells {
            f.extend_from_slice(&lac.to_be_bytes());
            f.extend_from_slice(&cid.to_be_bytes());
            f.push(*rssi);
        }
        f.extend_from_slice(&[0x0D, 0x0A]);
        f
    }

    fn reply(&self) -> Vec<u8> {
        let mut r = vec![0x78, 0x78, 0x00, self.proto];
        r.extend(self.time());
        r.extend_from_slice(&[0x0D, 0x0A]);
        r
    }
}

fn bare_wifi_strategy() -> impl Strategy<Value = BareWifi> {
    (
        prop::sample::select(&[0x69u8, 0x17][..]),
        (0u8..100, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60),
        prop::collection::vec((any::<[u8; 6]>(), 1u8..=100), 0..6),
        (1u16..1000, any::<u8>()),
        prop::collection::vec((1u16.., any::<u16>(), any::<u8>()), 0..6),
    )
        .prop_map(|(proto, t, aps, (mcc, mnc), cells)| BareWifi {
            proto,
            ymdhms: [t.0, t.1, t.2, t.3, t.4, t.5],
            aps,
            mcc,
            mnc,
            cells,
        })
}

/// Frames a device may send, the bare Wi-Fi reports included. (They have no CRC, so the
/// corruption property cannot hold for them.)
fn any_frame_or_bare_wifi() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => any_frame(),
        1 => bare_wifi_strategy().prop_map(|w| w.encode()),
    ]
}

fn session(max_frame: usize) -> Gt06Session {
    let cfg = SessionConfig {
        max_frame,
        clock: Arc::new(|| Timestamp::from_secs(1_716_201_015)),
        ..SessionConfig::default()
    };
    Gt06Session::new(cfg)
}

/// Feeds `stream` cut at `cuts` (offsets, any order) and returns everything produced.
fn run(stream: &[u8], cuts: &[usize], max_frame: usize) -> Vec<Output> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    let mut s = session(max_frame);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        buf.extend_from_slice(&stream[at..p]);
        at = p;
        s.feed(&mut buf, &mut out).expect("no fatal error");
        assert!(buf.len() < max_frame.max(2), "buffer {} bytes", buf.len());
    }
    s.finish(&mut buf, &mut out);
    out
}

fn is_subsequence<T: PartialEq>(sub: &[T], full: &[T]) -> bool {
    let mut it = full.iter();
    sub.iter().all(|x| it.any(|y| y == x))
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        pieces in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            Just(vec![0x78, 0x78]),
            Just(vec![0x79, 0x79]),
            any_frame_or_bare_wifi(),
            Just(login(1)),
        ], 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        max_frame in 2usize..600,
    ) {
        let stream: Vec<u8> = pieces.concat();
        run(&stream, &cuts, max_frame);
    }

    #[test]
    fn splitting_does_not_change_outputs(
        frames in prop::collection::vec(any_frame_or_bare_wifi(), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut stream = login(1);
        for f in &frames {
            stream.extend_from_slice(f);
        }
        let whole = run(&stream, &[], 4096);
        let split = run(&stream, &cuts, 4096);
        prop_assert_eq!(&whole, &split);
        // Login + one reply per location/heartbeat/alarm/time request.
        prop_assert!(!replies(&whole).is_empty());
    }

    #[test]
    fn locations_round_trip(loc in loc_strategy()) {
        let mut stream = login(1);
        stream.extend(loc.encode());
        let out = run(&stream, &[], 4096);
        let ev = events(&out);
        prop_assert_eq!(ev.len(), 2);
        let EventKind::Position(fix) = &ev[1].kind else {
            return Err(TestCaseError::fail("not a position"));
        };
        let p = fix.position;
        let [yy, mo, dd, hh, mi, ss] = loc.ymdhms;
        let t = Timestamp::from_civil(2000 + yy as i32, mo, dd, hh, mi, ss).unwrap();
        prop_assert_eq!(p.time, t);
        let lat = loc.lat_raw as f64 / 1_800_000.0 * if loc.north { 1.0 } else { -1.0 };
        let lon = loc.lon_raw as f64 / 1_800_000.0 * if loc.west { -1.0 } else { 1.0 };
        prop_assert!((p.lat - lat).abs() < 1e-9);
        prop_assert!((p.lon - lon).abs() < 1e-9);
        // Positioned and at least one satellite (protocols.md A.7).
        prop_assert_eq!(p.valid, loc.valid && loc.sats > 0);
        prop_assert_eq!(p.speed_kmh, loc.speed as f64);
        prop_assert_eq!(p.course, loc.course);
        prop_assert_eq!(p.satellites, Some(loc.sats));
        prop_assert_eq!(fix.buffered, loc.reupload);
        prop_assert_eq!(
            replies(&out),
            vec![ack(0x01, 1), ack(loc.proto, loc.serial)]
        );
    }

    #[test]
    fn one_corrupted_byte_never_gives_a_wrong_reply(
        frames in prop::collection::vec(any_frame(), 1..8),
        at in any::<usize>(),
        xor in 1u8..=255,
        cuts in prop::collection::vec(any::<usize>(), 0..5),
    ) {
        let mut stream = login(1);
        for f in &frames {
            stream.extend_from_slice(f);
        }
        let good = run(&stream, &[], 4096);
        let i = at % stream.len();
        stream[i] ^= xor;
        let bad = run(&stream, &cuts, 4096);
        let (rg, rb) = (replies(&good), replies(&bad));
        prop_assert!(is_subsequence(&rb, &rg), "corrupted stream replied {:?}, good {:?}", rb, rg);
        let ev = |o: &[Output]| -> Vec<lienwatch::event::Event> {
            o.iter().filter_map(|x| match x {
                Output::Event(e) => Some(e.clone()),
                _ => None,
            }).collect()
        };
        prop_assert!(is_subsequence(&ev(&bad), &ev(&good)));
    }
}

proptest! {
    /// The clones' location types carry the standard GPS block behind their own wrapping: the
    /// same coordinates, time and flags come out, and each gets its own acknowledgement.
    #[test]
    fn clone_locations_round_trip(c in clone_strategy()) {
        let mut stream = login(1);
        stream.extend(c.encode());
        let out = run(&stream, &[], 4096);
        let ev = events(&out);
        prop_assert_eq!(ev.len(), 2, "{:?}", out);
        let EventKind::Position(fix) = &ev[1].kind else {
            return Err(TestCaseError::fail("not a position"));
        };
        let (l, p) = (&c.loc, fix.position);
        let [yy, mo, dd, hh, mi, ss] = l.ymdhms;
        prop_assert_eq!(p.time, Timestamp::from_civil(2000 + yy as i32, mo, dd, hh, mi, ss).unwrap());
        let lat = l.lat_raw as f64 / 1_800_000.0 * if l.north { 1.0 } else { -1.0 };
        let lon = l.lon_raw as f64 / 1_800_000.0 * if l.west { -1.0 } else { 1.0 };
        prop_assert!((p.lat - lat).abs() < 1e-9);
        prop_assert!((p.lon - lon).abs() < 1e-9);
        prop_assert_eq!((p.valid, p.course, p.speed_kmh), (l.valid && l.sats > 0, l.course, l.speed as f64));
        prop_assert_eq!(replies(&out), vec![ack(0x01, 1), c.reply()]);
    }

    /// LBS-only reports become invalid positions that keep the serving cell, never valid fixes.
    #[test]
    fn lbs_reports_keep_their_cell_and_are_never_valid(l in lbs_strategy()) {
        let mut stream = login(1);
        stream.extend(l.encode());
        let out = run(&stream, &[], 4096);
        let ev = events(&out);
        prop_assert_eq!(ev.len(), 2, "{:?}", out);
        let p = ev[1].position().copied().ok_or_else(|| TestCaseError::fail("no position"))?;
        prop_assert!(!p.valid && !p.is_usable());
        let cell = p.cell.ok_or_else(|| TestCaseError::fail("cell lost"))?;
        prop_assert_eq!((cell.mcc, cell.mnc, cell.lac, cell.cid), (l.mcc, u16::from(l.mnc), u32::from(l.lac), u64::from(l.cid)));
        prop_assert_eq!(replies(&out), vec![ack(0x01, 1), ack(l.proto, l.serial)]);
    }

    /// Bare Wi-Fi reports become invalid positions at their own time that keep the first cell
    /// and the strongest access point, answered with exactly their type and time bytes.
    #[test]
    fn bare_wifi_reports_keep_cell_and_strongest_ap(w in bare_wifi_strategy(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let mut stream = login(1);
        stream.extend(w.encode());
        let out = run(&stream, &cuts, 4096);
        let ev = events(&out);
        prop_assert_eq!(ev.len(), 2, "{:?}", out);
        let p = ev[1].position().copied().ok_or_else(|| TestCaseError::fail("no position"))?;
        prop_assert!(!p.valid && !p.is_usable());
        let [yy, mo, dd, hh, mi, ss] = w.ymdhms;
        prop_assert_eq!(p.time, Timestamp::from_civil(2000 + yy as i32, mo, dd, hh, mi, ss).unwrap());
        match w.cells.first() {
            Some(&(lac, cid, _)) => {
                let c = p.cell.ok_or_else(|| TestCaseError::fail("cell lost"))?;
                prop_assert_eq!((c.mcc, c.mnc, c.lac, c.cid), (w.mcc, u16::from(w.mnc), u32::from(lac), u64::from(cid)));
            }
            None => prop_assert!(p.cell.is_none()),
        }
        match w.aps.iter().map(|a| a.1).min() {
            Some(best) => {
                let ap = p.wifi.ok_or_else(|| TestCaseError::fail("access point lost"))?;
                prop_assert_eq!(ap.rssi, -i16::from(best));
                prop_assert!(w.aps.iter().any(|a| a.0 == ap.mac && a.1 == best));
            }
            None => prop_assert!(p.wifi.is_none()),
        }
        prop_assert_eq!(replies(&out), vec![ack(0x01, 1), w.reply()]);
    }
}
