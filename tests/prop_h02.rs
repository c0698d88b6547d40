//! Property tests for the H02 session: arbitrary input never panics and never grows the buffer
//! past the frame limit; how a stream is split into reads does not change what comes out; random
//! V1, binary and `BC` batch messages decode back to their fields; nothing is ever answered.

use bytes::BytesMut;
use lienwatch::event::{Alarms, EventKind, Timestamp};
use lienwatch::protocol::h02::{status_alarms, H02Session};
use lienwatch::protocol::{Output, Session, SessionConfig};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct V1 {
    id: String,
    /// Seconds since 2000-01-01, so every date is real.
    secs: i64,
    valid: bool,
    lat_deg: u32,
    lat_min_e4: u32,
    north: bool,
    lon_deg: u32,
    lon_min_e4: u32,
    east: bool,
    knots_e2: u32,
    course: u16,
    status: u32,
}

const Y2000: i64 = 946_684_800;

impl V1 {
    fn time(&self) -> Timestamp {
        Timestamp::from_secs(Y2000 + self.secs)
    }

    fn lat(&self) -> f64 {
        let v = f64::from(self.lat_deg) + f64::from(self.lat_min_e4) / 10_000.0 / 60.0;
        if self.north {
            v
        } else {
            -v
        }
    }

    fn lon(&self) -> f64 {
        let v = f64::from(self.lon_deg) + f64::from(self.lon_min_e4) / 10_000.0 / 60.0;
        if self.east {
            v
        } else {
            -v
        }
    }

    /// `hhmmss` and `ddmmyy` of the instant.
    fn civil(&self) -> (String, String) {
        let t = self.time().to_jiff().to_zoned(jiff::tz::TimeZone::UTC);
        (
            format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second()),
            format!("{:02}{:02}{:02}", t.day(), t.month(), t.year() - 2000),
        )
    }

    fn text(&self) -> String {
        let (hms, dmy) = self.civil();
        format!(
            "*HQ,{},V1,{hms},{},{:02}{:02}.{:04},{},{:03}{:02}.{:04},{},{:03}.{:02},{:03},{dmy},{:08X}#",
            self.id,
            if self.valid { 'A' } else { 'V' },
            self.lat_deg,
            self.lat_min_e4 / 10_000,
            self.lat_min_e4 % 10_000,
            if self.north { 'N' } else { 'S' },
            self.lon_deg,
            self.lon_min_e4 / 10_000,
            self.lon_min_e4 % 10_000,
            if self.east { 'E' } else { 'W' },
            self.knots_e2 / 100,
            self.knots_e2 % 100,
            self.course,
            self.status,
        )
    }

    /// The 32-byte binary form (protocols.md §D.5); the id must be 10 digits and speed whole.
    fn binary(&self) -> Vec<u8> {
        fn bcd(digits: &str) -> Vec<u8> {
            digits
                .as_bytes()
                .chunks(2)
                .map(|p| ((p[0] - b'0') << 4) | (p.get(1).map_or(0, |d| d - b'0')))
                .collect()
        }
        let (hms, dmy) = self.civil();
        let mut f = vec![b'$'];
        f.extend(bcd(&self.id));
        f.extend(bcd(&hms));
        f.extend(bcd(&dmy));
        f.extend(bcd(&format!("{:02}{:06}", self.lat_deg, self.lat_min_e4)));
        f.push(0x06);
        let mut lon = bcd(&format!("{:03}{:06}0", self.lon_deg, self.lon_min_e4));
        let flags =
            (u8::from(self.valid) << 1) | (u8::from(self.north) << 2) | (u8::from(self.east) << 3);
        if let Some(last) = lon.last_mut() {
            *last |= flags;
        }
        f.extend(lon);
        f.extend(bcd(&format!(
            "{:03}{:03}",
            self.knots_e2 / 100,
            self.course
        )));
        f.extend_from_slice(&self.status.to_be_bytes());
        f.extend_from_slice(&[0xFF, 0x00, 0x24]);
        f
    }
}

impl V1 {
    /// The same fix in the forms the field sends besides a plain V1: another V command with its
    /// own prefix or suffix fields, a lowercase maker, coordinates without leading zeros or in the
    /// dashed form, padded speed, an empty course.
    fn variant(&self, kind: u8) -> String {
        let (hms, dmy) = self.civil();
        let v = if self.valid { 'A' } else { 'V' };
        let ns = if self.north { 'N' } else { 'S' };
        let ew = if self.east { 'E' } else { 'W' };
        let (lat_m, lat_f) = (self.lat_min_e4 / 10_000, self.lat_min_e4 % 10_000);
        let (lon_m, lon_f) = (self.lon_min_e4 / 10_000, self.lon_min_e4 % 10_000);
        let speed = format!("{}.{:02}", self.knots_e2 / 100, self.knots_e2 % 100);
        let plain_lat = format!("{:02}{lat_m:02}.{lat_f:04}", self.lat_deg);
        let plain_lon = format!("{:03}{lon_m:02}.{lon_f:04}", self.lon_deg);
        let st = format!("{:08X}", self.status);
        let id = &self.id;
        let c = self.course;
        match kind % 6 {
            // V4: the answered command and its arguments come first.
            0 => format!("*TH,{id},V4,S20,DONE,130305,{hms},{v},{plain_lat},{ns},{plain_lon},{ew},{speed},{c},{dmy},{st}#"),
            // V19: SIM data between the date and the status word.
            1 => format!("*HQ,{id},V19,{hms},{v},{plain_lat},{ns},{plain_lon},{ew},{speed},{c},{dmy},,5492932630888,8954315265044716555,{st}#"),
            // Lowercase maker, leading zeros dropped, padded speed.
            2 => format!(
                "*hq,{id},V1,{hms},{v},{}{lat_m:02}.{lat_f:04},{ns},{}{lon_m:02}.{lon_f:04},{ew},  {speed},{c},{dmy},{st}#",
                self.lat_deg, self.lon_deg
            ),
            // Dashed degrees and minutes.
            3 => format!(
                "*HQ,{id},V1,{hms},{v},-{}-{lat_m}.{lat_f:04},{ns},-{}-{lon_m}.{lon_f:04},{ew},{speed},{c},{dmy},{st}#",
                self.lat_deg, self.lon_deg
            ),
            // V6 / V8 / VI1 with trailing cell fields.
            4 => format!("*HQ,{id},V6,{hms},{v},{plain_lat},{ns},{plain_lon},{ew},{speed},{c},{dmy},{st},310,260,32936,13641#"),
            // A battery field before the date.
            _ => format!("*HQ,{id},V1,{hms},{v},{plain_lat},{ns},{plain_lon},{ew},{speed},{c},4,{dmy},{st}#"),
        }
    }

    /// The 42-byte binary form with a 15-digit IMEI (8 id bytes, 10 extension bytes).
    fn binary_long(&self) -> Vec<u8> {
        let mut ten = self.clone();
        ten.id.truncate(10);
        let short = ten.binary();
        let mut f = vec![b'$'];
        let digits = format!("{}0", &self.id[..15]);
        f.extend(
            digits
                .as_bytes()
                .chunks(2)
                .map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0')),
        );
        f.extend_from_slice(&short[6..29]);
        f.extend_from_slice(&[0xFF, 0x01, 0x12, 0x00, 0x64, 0xBA, 0x73, 0x00, 0x5E, 0xCC]);
        f
    }
}

/// Whether the first 12 bytes of a long binary frame also read as a short frame with a real clock
/// (the id's last digits where the short form has its time): the forms cannot be told apart then.
fn long_reads_as_short(f: &[u8]) -> bool {
    let b = |i: usize| f.get(i).map(|x| (x >> 4) * 10 + (x & 0x0F)).unwrap_or(99);
    let bcd = f[1..12].iter().all(|x| x >> 4 <= 9 && x & 0x0F <= 9);
    bcd && b(6) < 24
        && b(7) < 60
        && b(8) < 61
        && (1..=31).contains(&b(9))
        && (1..=12).contains(&b(10))
}

fn v1() -> impl Strategy<Value = V1> {
    (
        prop_oneof!["[0-9]{10}", "[0-9]{15}"],
        0i64..3_000_000_000,
        any::<bool>(),
        (0u32..90, 0u32..600_000, any::<bool>()),
        (0u32..180, 0u32..600_000, any::<bool>()),
        0u32..100_000,
        0u16..360,
        any::<u32>(),
    )
        .prop_map(
            |(
                id,
                secs,
                valid,
                (lat_deg, lat_min_e4, north),
                (lon_deg, lon_min_e4, east),
                knots_e2,
                course,
                status,
            )| V1 {
                id,
                secs,
                valid,
                lat_deg,
                lat_min_e4,
                north,
                lon_deg,
                lon_min_e4,
                east,
                knots_e2,
                course,
                status,
            },
        )
}

fn run(chunks: &[&[u8]], cfg: SessionConfig) -> (Vec<Output>, usize) {
    let mut s = H02Session::new(cfg);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        s.feed(&mut buf, &mut out).expect("H02 sessions never fail");
    }
    (out, buf.len())
}

fn check(out: &[Output], m: &V1, knots: f64) -> Result<(), TestCaseError> {
    // A V4 is also the answer to a command in flight: that event follows the fix.
    let out: Vec<&Output> = out
        .iter()
        .filter(|o| !matches!(o, Output::Event(e) if matches!(e.kind, EventKind::CommandAnswer(_))))
        .collect();
    prop_assert_eq!(out.len(), 1, "{:?}", out);
    let Output::Event(e) = out[0] else {
        return Err(TestCaseError::fail(format!("not an event: {out:?}")));
    };
    prop_assert_eq!(e.device_id.as_str(), m.id.as_str());
    let EventKind::Position(fix) = &e.kind else {
        return Err(TestCaseError::fail("not a position"));
    };
    let p = fix.position;
    prop_assert_eq!(p.time, m.time());
    prop_assert!((p.lat - m.lat()).abs() < 1e-9, "{} vs {}", p.lat, m.lat());
    prop_assert!((p.lon - m.lon()).abs() < 1e-9, "{} vs {}", p.lon, m.lon());
    prop_assert_eq!(p.valid, m.valid);
    prop_assert!((p.speed_kmh - knots * 1.852).abs() < 1e-9);
    prop_assert_eq!(p.course, m.course);
    prop_assert_eq!(fix.alarms, status_alarms(m.status));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        data in prop::collection::vec(
            // Biased towards the bytes the framing reacts to.
            any::<u16>().prop_map(|x| {
                let b = (x >> 8) as u8;
                match x % 9 {
                    0 => b'*',
                    1 => b'$',
                    2 => b'#',
                    3 => b',',
                    4 => b'0' + b % 10,
                    5 => b';',
                    _ => b,
                }
            }),
            0..4000,
        ),
        cut in 1usize..600,
    ) {
        let cfg = SessionConfig { max_frame: 512, ..SessionConfig::default() };
        let mut s = H02Session::new(cfg);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in data.chunks(cut) {
            buf.extend_from_slice(chunk);
            prop_assert!(s.feed(&mut buf, &mut out).is_ok());
            prop_assert!(buf.len() <= 512, "buffer {}", buf.len());
        }
        prop_assert!(out.iter().all(|o| !matches!(o, Output::Reply(_))));
    }

    #[test]
    fn v1_text_round_trips(m in v1()) {
        let (out, left) = run(&[m.text().as_bytes()], SessionConfig::default());
        prop_assert_eq!(left, 0);
        check(&out, &m, f64::from(m.knots_e2) / 100.0)?;
    }

    #[test]
    fn binary_round_trips(mut m in v1()) {
        m.id.truncate(10);
        let (out, left) = run(&[&m.binary()], SessionConfig::default());
        prop_assert_eq!(left, 0);
        check(&out, &m, f64::from(m.knots_e2 / 100))?;
    }

    #[test]
    fn v_message_variants_round_trip(m in v1(), kind in any::<u8>()) {
        let text = m.variant(kind);
        let (out, left) = run(&[text.as_bytes()], SessionConfig::default());
        prop_assert_eq!(left, 0);
        check(&out, &m, f64::from(m.knots_e2) / 100.0).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    }

    #[test]
    fn long_binary_round_trips(mut m in v1()) {
        m.id = format!("{:0<15}", m.id);
        let f = m.binary_long();
        prop_assume!(!long_reads_as_short(&f));
        let (out, left) = run(&[&f], SessionConfig::default());
        prop_assert_eq!(left, 0);
        check(&out, &m, f64::from(m.knots_e2 / 100))?;
    }

    #[test]
    fn bc_batch_round_trips(
        points in prop::collection::vec((v1(), 0i64..27 * 86_400, 0u8..4), 1..=100),
        now_secs in 0i64..3_000_000_000,
        offset_h in -12i32..=14,
    ) {
        // Points up to 27 days old: the month of arrival or the one before, never ambiguous.
        let now = Timestamp::from_secs(Y2000 + 27 * 86_400 + now_secs);
        let offset_s = offset_h * 3600;
        let mut pts = Vec::new();
        for (m, age, form) in &points {
            let mut m = m.clone();
            m.secs = now_secs + 27 * 86_400 - age;
            // The device writes its own clock, `offset_s` ahead of UTC.
            let local = V1 { secs: m.secs + i64::from(offset_s), ..m.clone() };
            let (hms, dmy) = local.civil();
            let when = format!("{}{hms}", &dmy[..2]);
            let cell = match form {
                0 => String::new(),
                1 => ",1CC,0,25FC,F48".into(),
                2 => ",460,0,9376,8532".into(),
                _ => ", 1CC,0,25FC,F48".into(),
            };
            let text = m.text();
            // V1 text: `*HQ,id,V1,hhmmss,S,lat,N,lon,E,speed,course,ddmmyy,status#`.
            let f: Vec<&str> = text.trim_end_matches('#').split(',').collect();
            pts.push((m.clone(), format!(
                "{},{},{},{},{},{},{},{when},{}{cell}",
                f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[12],
            )));
        }
        let line = format!(
            "*HQ,4106012345,BC,000000,0,{}#",
            pts.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>().join(";"),
        );
        let cfg = SessionConfig {
            clock: std::sync::Arc::new(move || now),
            utc_offset_s: Some(offset_s),
            ..SessionConfig::default()
        };
        let (out, left) = run(&[line.as_bytes()], cfg);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(out.len(), pts.len(), "{:?}", out);
        for (o, (m, _)) in out.iter().zip(&pts) {
            let Output::Event(e) = o else {
                return Err(TestCaseError::fail(format!("not an event: {o:?}")));
            };
            let EventKind::Position(fix) = &e.kind else {
                return Err(TestCaseError::fail("not a position"));
            };
            prop_assert!(fix.buffered);
            let m = V1 { id: "4106012345".into(), ..m.clone() };
            check(std::slice::from_ref(o), &m, f64::from(m.knots_e2) / 100.0)?;
        }
    }

    #[test]
    fn splitting_a_stream_does_not_change_the_output(
        msgs in prop::collection::vec((v1(), 0u8..4), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut stream = Vec::new();
        for (m, kind) in &msgs {
            match kind {
                0 => stream.extend_from_slice(m.text().as_bytes()),
                1 => stream.extend_from_slice(format!("{}\r\n", m.text()).as_bytes()),
                2 => stream.extend_from_slice(format!("*HQ,{},XT#", m.id).as_bytes()),
                _ => {
                    let mut b = m.clone();
                    b.id.truncate(10);
                    stream.extend_from_slice(&b.binary());
                }
            }
        }
        let (whole, left) = run(&[&stream], SessionConfig::default());
        prop_assert_eq!(left, 0);
        prop_assert_eq!(whole.len(), msgs.len());
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len())).collect();
        at.sort_unstable();
        at.dedup();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in at {
            chunks.push(&stream[prev..c]);
            prev = c;
        }
        chunks.push(&stream[prev..]);
        let (split, left) = run(&chunks, SessionConfig::default());
        prop_assert_eq!(left, 0);
        prop_assert_eq!(whole, split);
    }
}

#[test]
fn status_word_bits_are_active_low() {
    let idle = status_alarms(0xFFFF_FBFF);
    assert!(idle.active.is_empty());
    for (bit, cond) in [
        (19, Alarms::POWER_CUT),
        (20, Alarms::TAMPER),
        (28, Alarms::TAMPER),
        (1, Alarms::SOS),
        (0, Alarms::TOW),
        (26, Alarms::JAMMING),
        (27, Alarms::IMMOBILISED),
    ] {
        let r = status_alarms(!(1u32 << bit));
        assert_eq!(r.active, cond, "bit {bit}");
        assert!(r.known.contains(cond));
    }
}
