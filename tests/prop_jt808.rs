//! Property tests for the JT/T 808 session (protocols.md §B): it never panics and stays bounded
//! on any input, escaping round-trips, generated 0x0200 frames decode to what was encoded and get
//! the right 0x8001, and how a stream is split into reads does not change what comes out.

use bytes::BytesMut;
use lienwatch::event::{Alarms, AnswerKey, Event, EventKind, Fix};
use lienwatch::protocol::jt808::{self, Jt808Session};
use lienwatch::protocol::{Output, Session, SessionConfig};
use proptest::prelude::*;

/// A small encoder written independently of the crate's, so that the tests do not check the
/// decoder against itself.
fn encode(msg_id: u16, version: Option<u8>, terminal: &[u8], serial: u16, body: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&msg_id.to_be_bytes());
    let attrs = body.len() as u16 | if version.is_some() { 0x4000 } else { 0 };
    raw.extend_from_slice(&attrs.to_be_bytes());
    if let Some(v) = version {
        raw.push(v);
    }
    raw.extend_from_slice(terminal);
    raw.extend_from_slice(&serial.to_be_bytes());
    raw.extend_from_slice(body);
    let check = raw.iter().fold(0u8, |a, b| a ^ b);
    raw.push(check);
    let mut wire = vec![0x7E];
    for b in raw {
        match b {
            0x7E => wire.extend_from_slice(&[0x7D, 0x02]),
            0x7D => wire.extend_from_slice(&[0x7D, 0x01]),
            _ => wire.push(b),
        }
    }
    wire.push(0x7E);
    wire
}

fn bcd(n: u8) -> u8 {
    (n / 10) << 4 | (n % 10)
}

#[derive(Debug, Clone)]
struct Loc {
    alarm: u32,
    status: u32,
    lat: u32,
    lon: u32,
    alt: u16,
    speed: u16,
    course: u16,
    /// yy, mm, dd, hh, mi, ss
    time: [u8; 6],
    satellites: Option<u8>,
    /// Unknown vendor item to skip.
    extra: Option<(u8, Vec<u8>)>,
}

impl Loc {
    fn body(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.alarm.to_be_bytes());
        b.extend_from_slice(&self.status.to_be_bytes());
        b.extend_from_slice(&self.lat.to_be_bytes());
        b.extend_from_slice(&self.lon.to_be_bytes());
        b.extend_from_slice(&self.alt.to_be_bytes());
        b.extend_from_slice(&self.speed.to_be_bytes());
        b.extend_from_slice(&self.course.to_be_bytes());
        b.extend(self.time.iter().map(|&x| bcd(x)));
        if let Some((id, v)) = &self.extra {
            b.push(*id);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        if let Some(n) = self.satellites {
            b.extend_from_slice(&[0x31, 1, n]);
        }
        b
    }
}

fn loc() -> impl Strategy<Value = Loc> {
    (
        (
            any::<u32>(),
            any::<u32>(),
            0u32..=90_000_000,
            0u32..=180_000_000,
        ),
        (any::<u16>(), any::<u16>(), 0u16..360),
        (0u8..100, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60),
        proptest::option::of(any::<u8>()),
        proptest::option::of((0x50u8..=0xFF, proptest::collection::vec(any::<u8>(), 0..12))),
    )
        .prop_map(
            |((alarm, status, lat, lon), (alt, speed, course), t, satellites, extra)| Loc {
                alarm,
                status,
                lat,
                lon,
                alt,
                speed,
                course,
                time: [t.0, t.1, t.2, t.3, t.4, t.5],
                satellites,
                // 0x31 is the satellites item, and vendor item 0xEE also carries a satellite
                // count; keep the vendor item distinct from both.
                extra: extra.filter(|(id, _)| *id != 0x31 && *id != 0xEE),
            },
        )
}

/// Terminal number: 6 BCD bytes (2013) or a version byte and 10 (2019).
fn terminal() -> impl Strategy<Value = (Option<u8>, Vec<u8>)> {
    prop_oneof![
        proptest::collection::vec(0u8..100, 6)
            .prop_map(|d| (None, d.into_iter().map(bcd).collect())),
        (any::<u8>(), proptest::collection::vec(0u8..100, 10))
            .prop_map(|(v, d)| (Some(v), d.into_iter().map(bcd).collect())),
    ]
}

/// Bytes rich in flags and escapes, where framing bugs hide.
fn noisy_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            1 => Just(0x7Eu8),
            1 => Just(0x7Du8),
            1 => Just(0x01u8),
            1 => Just(0x02u8),
        ],
        0..max,
    )
}

/// A well-framed message with a correct check byte but arbitrary id and body, to reach the
/// message handlers with hostile bodies.
fn framed_junk() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(0x0001u16),
            Just(0x0002),
            Just(0x0100),
            Just(0x0102),
            Just(0x0200),
            Just(0x0704),
            Just(0x0210),
            Just(0x0201),
            Just(0x0900),
            Just(0x5501),
            Just(0x5502),
            any::<u16>()
        ],
        terminal(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..120),
        proptest::option::of((1u16..5, 1u16..5)),
    )
        .prop_map(|(id, (v, t), serial, body, pkg)| match pkg {
            // Subpackaged: splice the package fields in after the serial.
            Some((total, index)) => {
                let mut f = encode(id, v, &t, serial, &body);
                let mut raw = Vec::new();
                let mut it = f[1..f.len() - 1].iter();
                while let Some(&b) = it.next() {
                    raw.push(if b == 0x7D {
                        if it.next() == Some(&0x01) {
                            0x7D
                        } else {
                            0x7E
                        }
                    } else {
                        b
                    });
                }
                raw.pop();
                let hlen = if v.is_some() { 17 } else { 12 };
                let attrs = u16::from_be_bytes([raw[2], raw[3]]) | 0x2000;
                raw[2..4].copy_from_slice(&attrs.to_be_bytes());
                let mut p = total.to_be_bytes().to_vec();
                p.extend_from_slice(&index.to_be_bytes());
                raw.splice(hlen..hlen, p);
                let check = raw.iter().fold(0u8, |a, b| a ^ b);
                raw.push(check);
                f.clear();
                f.push(0x7E);
                for b in raw {
                    match b {
                        0x7E => f.extend_from_slice(&[0x7D, 0x02]),
                        0x7D => f.extend_from_slice(&[0x7D, 0x01]),
                        _ => f.push(b),
                    }
                }
                f.push(0x7E);
                f
            }
            None => encode(id, v, &t, serial, &body),
        })
}

fn feed_chunks(s: &mut Jt808Session, chunks: &[&[u8]], max: usize) -> Vec<Output> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        if s.feed(&mut buf, &mut out).is_err() {
            break;
        }
        assert!(buf.len() <= max, "buffer holds {} > {max}", buf.len());
    }
    s.finish(&mut buf, &mut out);
    assert!(buf.is_empty());
    out
}

/// Events and replies, without rejections (whose byte counts depend on read boundaries).
fn meaningful(out: Vec<Output>) -> Vec<Output> {
    out.into_iter()
        .filter(|o| !matches!(o, Output::Rejected(_)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        chunks in proptest::collection::vec(noisy_bytes(300), 1..8),
        max in 32usize..512,
    ) {
        let cfg = SessionConfig { max_frame: max, ..SessionConfig::default() };
        let mut s = Jt808Session::new(cfg);
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        feed_chunks(&mut s, &refs, max);
    }

    #[test]
    fn well_framed_junk_never_panics(
        frames in proptest::collection::vec(framed_junk(), 1..10),
        garbage in noisy_bytes(20),
    ) {
        let mut s = Jt808Session::new(SessionConfig::default());
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend_from_slice(f);
            stream.extend_from_slice(&garbage);
        }
        let out = feed_chunks(&mut s, &[&stream], 4096);
        // Every reply is itself a well-formed frame.
        for o in &out {
            if let Output::Reply(r) = o {
                prop_assert!(r.len() >= 2 && r[0] == 0x7E && r[r.len() - 1] == 0x7E);
                let mut raw = Vec::new();
                jt808::unescape_into(&r[1..r.len() - 1], &mut raw).unwrap();
                prop_assert!(jt808::parse_frame(&raw).is_ok());
            }
        }
    }

    #[test]
    fn escape_round_trips(data in noisy_bytes(400)) {
        let mut escaped = Vec::new();
        jt808::escape_into(&data, &mut escaped);
        prop_assert!(!escaped.contains(&0x7E));
        prop_assert_eq!(escaped.len(), data.len() + data.iter().filter(|&&b| b == 0x7E || b == 0x7D).count());
        let mut back = Vec::new();
        jt808::unescape_into(&escaped, &mut back).unwrap();
        prop_assert_eq!(back, data);
    }

    /// On a listener's connection (authentication enforced), no frame sequence without a valid
    /// authentication yields a position, and every location is answered "failure".
    #[test]
    fn without_authentication_no_position_is_ever_emitted(
        frames in proptest::collection::vec(
            prop_oneof![
                framed_junk(),
                loc().prop_map(|l| encode(0x0200, None, &[0x01, 0x39, 0x12, 0x34, 0x56, 0x78], 9, &l.body())),
            ],
            1..12,
        ),
    ) {
        let cfg = SessionConfig { require_auth: true, ..SessionConfig::default() };
        let mut s = Jt808Session::new(cfg);
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let out = feed_chunks(&mut s, &refs, 4096);
        for o in &out {
            match o {
                Output::Event(e) => prop_assert!(!matches!(e.kind, EventKind::Position(_)), "{:?}", e),
                Output::Reply(r) if r.get(1..3) == Some(&[0x80, 0x01][..]) && r.len() >= 20 => {
                    let mut raw = Vec::new();
                    lienwatch::protocol::jt808::unescape_into(&r[1..r.len() - 1], &mut raw).unwrap();
                    let f = lienwatch::protocol::jt808::parse_frame(&raw).unwrap();
                    if f.body.get(2..4) == Some(&[0x02, 0x00][..]) {
                        prop_assert_eq!(f.body[4], 1, "a location before authentication");
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn generated_locations_decode_and_are_acknowledged(
        l in loc(),
        (version, term) in terminal(),
        serial in any::<u16>(),
    ) {
        let body = l.body();
        let frame = encode(0x0200, version, &term, serial, &body);
        let mut s = Jt808Session::new(SessionConfig::default());
        let out = feed_chunks(&mut s, &[&frame], 4096);
        prop_assert_eq!(out.len(), 2, "{:?}", out);
        let fix: Fix = match &out[0] {
            Output::Event(e) => match &e.kind {
                EventKind::Position(f) => *f,
                k => return Err(TestCaseError::fail(format!("not a position: {k:?}"))),
            },
            o => return Err(TestCaseError::fail(format!("not an event: {o:?}"))),
        };
        let p = fix.position;
        let sign = |neg: bool| if neg { -1.0 } else { 1.0 };
        prop_assert_eq!(p.lat, sign(l.status & 4 != 0) * f64::from(l.lat) / 1e6);
        prop_assert_eq!(p.lon, sign(l.status & 8 != 0) * f64::from(l.lon) / 1e6);
        prop_assert_eq!(p.valid, l.status & 2 != 0);
        prop_assert_eq!(p.speed_kmh, f64::from(l.speed) / 10.0);
        prop_assert_eq!(p.course, l.course);
        prop_assert_eq!(p.altitude_m, Some(f64::from(l.alt)));
        prop_assert_eq!(p.satellites, l.satellites);
        let [y, mo, d, h, mi, sec] = l.time;
        let local = lienwatch::event::Timestamp::from_civil(2000 + i32::from(y), mo, d, h, mi, sec).unwrap();
        prop_assert_eq!(p.time, local.add_millis(-8 * 3600 * 1000));
        prop_assert_eq!(fix.alarms.active.contains(Alarms::POWER_CUT), l.alarm & (1 << 8) != 0);
        prop_assert_eq!(fix.alarms.active.contains(Alarms::TOW), l.alarm & (1 << 28) != 0);
        prop_assert_eq!(
            fix.alarms.active.contains(Alarms::TAMPER),
            l.alarm & ((1 << 5) | (1 << 17)) != 0
        );
        prop_assert_eq!(
            fix.alarms.active.contains(Alarms::IMMOBILISED),
            l.status & ((1 << 10) | (1 << 11)) != 0
        );
        let mut ack = serial.to_be_bytes().to_vec();
        ack.extend_from_slice(&[0x02, 0x00, 0x00]);
        let want = encode(0x8001, version, &term, 1, &ack);
        prop_assert_eq!(&out[1], &Output::Reply(want.into()));
    }

    #[test]
    fn splitting_the_stream_changes_nothing(
        locs in proptest::collection::vec(loc(), 1..5),
        (version, term) in terminal(),
        junk in proptest::collection::vec(framed_junk(), 0..3),
        garbage in noisy_bytes(16),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut stream = garbage.clone();
        for (i, l) in locs.iter().enumerate() {
            stream.extend_from_slice(&encode(0x0200, version, &term, i as u16, &l.body()));
            stream.extend_from_slice(&encode(0x0002, version, &term, 100 + i as u16, &[]));
        }
        for j in &junk {
            stream.extend_from_slice(&garbage);
            stream.extend_from_slice(j);
        }
        let whole = meaningful(feed_chunks(&mut Jt808Session::new(SessionConfig::default()), &[&stream], 4096));
        prop_assert!(whole.len() >= locs.len() * 4);

        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&stream[last..p]);
            last = p;
        }
        chunks.push(&stream[last..]);
        let split = meaningful(feed_chunks(&mut Jt808Session::new(SessionConfig::default()), &chunks, 4096));
        prop_assert_eq!(whole, split);
    }
}

/// The vendor form of 0x5501 / 0x5502 (one-byte serial), written independently of the crate.
fn encode_vendor(msg_id: u16, answer: bool, terminal: &[u8], serial: u8, body: &[u8]) -> Vec<u8> {
    let mut raw = msg_id.to_be_bytes().to_vec();
    let attrs = body.len() as u16 | if answer { 0x8000 } else { 0 };
    raw.extend_from_slice(&attrs.to_be_bytes());
    raw.extend_from_slice(terminal);
    raw.push(serial);
    raw.extend_from_slice(body);
    let check = raw.iter().fold(0u8, |a, b| a ^ b);
    raw.push(check);
    let mut wire = vec![0x7E];
    for b in raw {
        match b {
            0x7E => wire.extend_from_slice(&[0x7D, 0x02]),
            0x7D => wire.extend_from_slice(&[0x7D, 0x01]),
            _ => wire.push(b),
        }
    }
    wire.push(0x7E);
    wire
}

#[derive(Debug, Clone)]
struct VendorLoc {
    /// dd, mm, yy, hh, mi, ss
    time: [u8; 6],
    lat_deg: u8,
    lat_min_e4: u32,
    lon_deg: u16,
    lon_min_e4: u32,
    valid: bool,
    north: bool,
    east: bool,
    speed: u8,
    course_half: u8,
}

impl VendorLoc {
    fn body(&self) -> Vec<u8> {
        let digits = |s: String| -> Vec<u8> {
            s.as_bytes()
                .chunks(2)
                .map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0'))
                .collect()
        };
        let mut b: Vec<u8> = self.time.iter().map(|&x| bcd(x)).collect();
        b.extend(digits(format!("{:02}{:06}", self.lat_deg, self.lat_min_e4)));
        let flags = u8::from(self.valid) | u8::from(self.north) << 1 | u8::from(self.east) << 2;
        let mut lon = digits(format!("{:03}{:06}0", self.lon_deg, self.lon_min_e4));
        if let Some(last) = lon.last_mut() {
            *last |= flags;
        }
        b.extend(lon);
        b.push(bcd(self.speed));
        b.push(self.course_half);
        // RSSI, satellites, odometer, battery, cell id, LAC, product, status, alarm.
        b.extend_from_slice(&[
            20, 7, 0, 0, 0, 10, 90, 0, 0, 0x30, 0x39, 0x10, 0x93, 1, 0, 0, 0, 0,
        ]);
        b
    }
}

fn vendor_loc() -> impl Strategy<Value = VendorLoc> {
    (
        (1u8..=28, 1u8..=12, 0u8..100, 0u8..24, 0u8..60, 0u8..60),
        (0u8..90, 0u32..600_000, 0u16..180, 0u32..600_000),
        any::<(bool, bool, bool)>(),
        0u8..100,
        0u8..180,
    )
        .prop_map(
            |(
                t,
                (lat_deg, lat_min_e4, lon_deg, lon_min_e4),
                (valid, north, east),
                speed,
                course_half,
            )| VendorLoc {
                time: [t.0, t.1, t.2, t.3, t.4, t.5],
                lat_deg,
                lat_min_e4,
                lon_deg,
                lon_min_e4,
                valid,
                north,
                east,
                speed,
                course_half,
            },
        )
}

proptest! {
    /// 0x5501 / 0x5502 decode to the encoded fix (UTC time, BCD degrees and minutes); 0x5502 is
    /// the blind-area buffer; the 0x4401 answer comes exactly when attribute bit 15 asks for it.
    #[test]
    fn vendor_locations_decode_and_are_answered(
        l in vendor_loc(),
        blind in any::<bool>(),
        answer in any::<bool>(),
        digits in proptest::collection::vec(0u8..100, 6),
        serial in any::<u8>(),
    ) {
        let term: Vec<u8> = digits.into_iter().map(bcd).collect();
        let id = if blind { 0x5502 } else { 0x5501 };
        let frame = encode_vendor(id, answer, &term, serial, &l.body());
        let mut s = Jt808Session::new(SessionConfig::default());
        let out = feed_chunks(&mut s, &[&frame], 4096);
        prop_assert_eq!(out.len(), 1 + usize::from(answer), "{:?}", out);
        let Output::Event(e) = &out[0] else {
            return Err(TestCaseError::fail(format!("not an event: {out:?}")));
        };
        let EventKind::Position(fix) = &e.kind else {
            return Err(TestCaseError::fail("not a position"));
        };
        let p = fix.position;
        let deg = |d: f64, m: u32| d + f64::from(m) / 10_000.0 / 60.0;
        let lat = deg(f64::from(l.lat_deg), l.lat_min_e4) * if l.north { 1.0 } else { -1.0 };
        let lon = deg(f64::from(l.lon_deg), l.lon_min_e4) * if l.east { 1.0 } else { -1.0 };
        prop_assert!((p.lat - lat).abs() < 1e-9 && (p.lon - lon).abs() < 1e-9, "{:?}", p);
        let [d, mo, y, h, mi, sec] = l.time;
        let t = lienwatch::event::Timestamp::from_civil(2000 + i32::from(y), mo, d, h, mi, sec).unwrap();
        prop_assert_eq!(p.time, t);
        prop_assert_eq!(p.valid, l.valid);
        prop_assert_eq!(p.speed_kmh, f64::from(l.speed));
        prop_assert_eq!(p.course, u16::from(l.course_half) * 2 % 360);
        prop_assert_eq!(fix.buffered, blind);
        if answer {
            let mut body = id.to_be_bytes().to_vec();
            body.push(0);
            let want = encode_vendor(0x4401, false, &term, 1, &body);
            prop_assert_eq!(&out[1], &Output::Reply(want.into()));
        }
    }

    /// A 0x0201 answer (query serial, then a 0x0200 body) is a position like 0x0200.
    #[test]
    fn location_answers_decode(
        l in loc(),
        (version, term) in terminal(),
        serial in any::<u16>(),
        query in any::<u16>(),
    ) {
        let mut body = query.to_be_bytes().to_vec();
        body.extend_from_slice(&l.body());
        let frame = encode(0x0201, version, &term, serial, &body);
        let mut s = Jt808Session::new(SessionConfig::default());
        let out = feed_chunks(&mut s, &[&frame], 4096);
        prop_assert_eq!(out.len(), 3, "{:?}", out);
        let Output::Event(e) = &out[0] else {
            return Err(TestCaseError::fail(format!("not an event: {out:?}")));
        };
        let p = e.position().ok_or_else(|| TestCaseError::fail("not a position"))?;
        let sign = |neg: bool| if neg { -1.0 } else { 1.0 };
        prop_assert_eq!(p.lat, sign(l.status & 4 != 0) * f64::from(l.lat) / 1e6);
        prop_assert_eq!(p.course, l.course);
        // And the answer to the 0x8201 whose serial it names, with the same fix.
        let Output::Event(Event { kind: EventKind::CommandAnswer(a), .. }) = &out[1] else {
            return Err(TestCaseError::fail(format!("not an answer: {out:?}")));
        };
        prop_assert_eq!(a.key, AnswerKey::Reply { serial: query, msg_id: 0x8201 });
        prop_assert_eq!(a.position.as_ref(), Some(p));
        let mut ack = serial.to_be_bytes().to_vec();
        ack.extend_from_slice(&[0x02, 0x01, 0x00]);
        prop_assert_eq!(&out[2], &Output::Reply(encode(0x8001, version, &term, 1, &ack).into()));
    }

    /// Every item of a 0x0210 batch (a length byte and a 0x0200 body each) is a position, and
    /// the batch is acknowledged once.
    #[test]
    fn batch_2_items_all_decode(
        items in proptest::collection::vec(loc(), 1..5),
        (version, term) in terminal(),
        serial in any::<u16>(),
    ) {
        let mut body = Vec::new();
        for l in &items {
            let b = l.body();
            body.push(b.len() as u8);
            body.extend_from_slice(&b);
        }
        prop_assume!(body.len() <= 0x3FF && body.len() != 7);
        let frame = encode(0x0210, version, &term, serial, &body);
        let mut s = Jt808Session::new(SessionConfig::default());
        let out = feed_chunks(&mut s, &[&frame], 4096);
        prop_assert_eq!(out.len(), items.len() + 1, "{:?}", out);
        for (o, l) in out.iter().zip(&items) {
            let Output::Event(e) = o else {
                return Err(TestCaseError::fail(format!("not an event: {o:?}")));
            };
            let p = e.position().ok_or_else(|| TestCaseError::fail("not a position"))?;
            prop_assert_eq!(p.course, l.course);
        }
        let mut ack = serial.to_be_bytes().to_vec();
        ack.extend_from_slice(&[0x02, 0x10, 0x00]);
        prop_assert_eq!(&out[items.len()], &Output::Reply(encode(0x8001, version, &term, 1, &ack).into()));
    }
}

/// The standard additional items (JT/T 808-2013 tables 27/28), encoded here from their values.
#[derive(Debug, Clone)]
struct Items {
    odometer: u32,
    fuel: u16,
    tacho: u16,
    event: u16,
    area: (u8, u32),
    crossing: (u8, u32, bool),
    route: (u32, u16, bool),
    signal: u32,
    io: u16,
    analog: (u16, u16),
    rssi: u8,
}

impl Items {
    fn encoded(&self) -> Vec<Vec<u8>> {
        let item = |id: u8, v: &[u8]| [&[id, v.len() as u8][..], v].concat();
        let mut area = vec![self.area.0];
        if self.area.0 != 0 {
            area.extend_from_slice(&self.area.1.to_be_bytes());
        }
        let mut crossing = vec![self.crossing.0];
        crossing.extend_from_slice(&self.crossing.1.to_be_bytes());
        crossing.push(u8::from(self.crossing.2));
        let mut route = self.route.0.to_be_bytes().to_vec();
        route.extend_from_slice(&self.route.1.to_be_bytes());
        route.push(u8::from(self.route.2));
        let analog = (u32::from(self.analog.1) << 16) | u32::from(self.analog.0);
        vec![
            item(0x01, &self.odometer.to_be_bytes()),
            item(0x02, &self.fuel.to_be_bytes()),
            item(0x03, &self.tacho.to_be_bytes()),
            item(0x04, &self.event.to_be_bytes()),
            item(0x11, &area),
            item(0x12, &crossing),
            item(0x13, &route),
            item(0x25, &self.signal.to_be_bytes()),
            item(0x2A, &self.io.to_be_bytes()),
            item(0x2B, &analog.to_be_bytes()),
            item(0x30, &[self.rssi]),
        ]
    }
}

fn items() -> impl Strategy<Value = Items> {
    (
        (any::<u32>(), any::<u16>(), any::<u16>(), any::<u16>()),
        (
            (0u8..=4, any::<u32>()),
            (1u8..=4, any::<u32>(), any::<bool>()),
        ),
        (
            (any::<u32>(), any::<u16>(), any::<bool>()),
            any::<u32>(),
            any::<u16>(),
        ),
        ((any::<u16>(), any::<u16>()), any::<u8>()),
    )
        .prop_map(
            |(
                (odometer, fuel, tacho, event),
                (area, crossing),
                (route, signal, io),
                (analog, rssi),
            )| {
                Items {
                    odometer,
                    fuel,
                    tacho,
                    event,
                    area: (area.0, if area.0 == 0 { 0 } else { area.1 }),
                    crossing,
                    route,
                    signal,
                    io,
                    analog,
                    rssi,
                }
            },
        )
}

proptest! {
    /// Every standard additional item comes out with the value it was encoded with, in any
    /// order, among unknown items and before a truncated one: no item can cost the fix.
    #[test]
    fn standard_items_round_trip_among_unknown_and_cut_items(
        it in items(),
        order in Just((0..11usize).collect::<Vec<_>>()).prop_shuffle(),
        junk in proptest::collection::vec((0x40u8..=0x4F, proptest::collection::vec(any::<u8>(), 0..8)), 0..4),
        tail in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let encoded = it.encoded();
        let mut body = vec![0u8; 22];
        body.extend_from_slice(&[0x24, 0x05, 0x20, 0x18, 0x30, 0x15]);
        for (n, &i) in order.iter().enumerate() {
            body.extend_from_slice(&encoded[i]);
            if let Some((id, v)) = junk.get(n) {
                body.extend_from_slice(&[*id, v.len() as u8]);
                body.extend_from_slice(v);
            }
        }
        // A last item whose declared length runs past the body.
        if let Some((&id, rest)) = tail.split_first() {
            body.extend_from_slice(&[id, 200]);
            body.extend_from_slice(rest);
        }
        let fix = jt808::parse_location(&body, 28_800).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let p = fix.props;
        prop_assert_eq!(p.odometer_m, Some(u64::from(it.odometer) * 100));
        prop_assert_eq!(p.fuel_l, Some(f32::from(it.fuel) / 10.0));
        prop_assert_eq!(p.tacho_speed_kmh, Some(f32::from(it.tacho) / 10.0));
        prop_assert_eq!(p.alarm_event_id, Some(it.event));
        let area = p.overspeed_area.ok_or_else(|| TestCaseError::fail("0x11 lost"))?;
        prop_assert_eq!((area.kind, area.id), it.area);
        let c = p.area_crossing.ok_or_else(|| TestCaseError::fail("0x12 lost"))?;
        prop_assert_eq!((c.kind, c.id, c.out), it.crossing);
        let r = p.route_time.ok_or_else(|| TestCaseError::fail("0x13 lost"))?;
        prop_assert_eq!((r.id, r.seconds, r.too_long), it.route);
        prop_assert_eq!(p.vehicle_signal, Some(it.signal));
        prop_assert_eq!(p.io, Some(it.io));
        prop_assert_eq!(p.analog, Some([it.analog.0, it.analog.1]));
        prop_assert_eq!(p.rssi, Some(it.rssi));
    }

    /// Any list of items, of any ids and lengths, never fails a complete basic block.
    #[test]
    fn arbitrary_items_never_fail_the_fix(items in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut body = vec![0u8; 22];
        body.extend_from_slice(&[0x24, 0x05, 0x20, 0x18, 0x30, 0x15]);
        body.extend_from_slice(&items);
        prop_assert!(jt808::parse_location(&body, 28_800).is_ok());
    }
}
