//! Property tests for commands to devices (CONTRACT.md "Commands to devices"): every encoded
//! command is a well-formed frame of its protocol carrying exactly what was asked, numbered as
//! the session numbers it; every answer built by a small independent encoder comes out of the
//! session as the answer to that command (same key, same text, same fix), whatever the read
//! boundaries; and sessions never encode a command before their device logged in.

use bytes::BytesMut;
use lienwatch::event::{AnswerKey, CommandAnswer, DeviceId, EventKind};
use lienwatch::protocol::downlink::{Downlink, EncodeError};
use lienwatch::protocol::gt06::{self, Gt06Session};
use lienwatch::protocol::h02::H02Session;
use lienwatch::protocol::jt808::{self, Jt808Session};
use lienwatch::protocol::teltonika::TeltonikaSession;
use lienwatch::protocol::{Output, Session, SessionConfig};
use proptest::prelude::*;

const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
const ARC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);

/// Feeds `bytes` in reads of `step` bytes; every output in order.
fn feed(s: &mut dyn Session, bytes: &[u8], step: usize) -> Vec<Output> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        s.feed(&mut buf, &mut out).expect("no session error");
    }
    out
}

fn answers(out: &[Output]) -> Vec<CommandAnswer> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => match &e.kind {
                EventKind::CommandAnswer(a) => Some(a.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn text() -> impl Strategy<Value = String> {
    "[ -~]{1,200}"
}

fn gt06_frame(extended: bool, proto: u8, content: &[u8], serial: u16) -> Vec<u8> {
    let len = 1 + content.len() + 4;
    let mut f = if extended {
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

fn gt06_login() -> Vec<u8> {
    gt06_frame(
        false,
        0x01,
        &[0x08, 0x68, 0x12, 0x01, 0x45, 0x23, 0x36, 0x04],
        1,
    )
}

fn jt808_frame(
    msg_id: u16,
    version: Option<u8>,
    terminal: &[u8],
    serial: u16,
    body: &[u8],
) -> Vec<u8> {
    let mut raw = msg_id.to_be_bytes().to_vec();
    let attrs = body.len() as u16 | if version.is_some() { 0x4000 } else { 0 };
    raw.extend_from_slice(&attrs.to_be_bytes());
    raw.extend(version);
    raw.extend_from_slice(terminal);
    raw.extend_from_slice(&serial.to_be_bytes());
    raw.extend_from_slice(body);
    raw.push(raw.iter().fold(0u8, |a, b| a ^ b));
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// GT06: 0x80 carries flag and text; a 0x15 or 0x21 answer echoing the flag is its answer.
    #[test]
    fn gt06_commands_and_answers(id in 1u64..u32::MAX as u64, text in text(), answer in text(),
                                 long in any::<bool>(), step in 1usize..40) {
        let mut s = Gt06Session::new(SessionConfig::default());
        prop_assert_eq!(s.encode_command(id, &Downlink::Locate).err(), Some(EncodeError::NotReady));
        feed(&mut s, &gt06_login(), 64);
        let enc = s.encode_command(id, &Downlink::Raw(text.clone())).unwrap();
        prop_assert_eq!(enc.key, AnswerKey::ServerFlag(id as u32));
        let (p, n) = gt06::parse_frame(&enc.bytes, 4096).unwrap().unwrap();
        prop_assert_eq!((p.proto, n, p.serial), (0x80, enc.bytes.len(), 1));
        prop_assert_eq!(p.content[0] as usize, 4 + text.len());
        prop_assert_eq!(&p.content[1..5], &(id as u32).to_be_bytes()[..]);
        prop_assert_eq!(&p.content[5..], text.as_bytes());
        let track = s.encode_command(id, &Downlink::Track { interval_s: 10, duration_s: 60 });
        prop_assert!(matches!(track, Err(EncodeError::Unsupported(_))));

        let mut c = Vec::new();
        let frame = if long {
            c.extend_from_slice(&(id as u32).to_be_bytes());
            c.push(1);
            c.extend_from_slice(answer.as_bytes());
            gt06_frame(true, 0x21, &c, 9)
        } else {
            c.push((4 + answer.len()) as u8);
            c.extend_from_slice(&(id as u32).to_be_bytes());
            c.extend_from_slice(answer.as_bytes());
            c.extend_from_slice(&[0, 2]);
            gt06_frame(false, 0x15, &c, 9)
        };
        let got = answers(&feed(&mut s, &frame, step));
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(got[0].key, AnswerKey::ServerFlag(id as u32));
        prop_assert_eq!(got[0].text.as_deref(), Some(answer.trim_end_matches('\0')));
    }

    /// JT/T 808: 0x8201/0x8202 in the terminal's header form and number, the session's next
    /// serial; 0x0201 and 0x0001 naming that serial answer it, 0x0201 with its fix.
    #[test]
    fn jt808_commands_and_answers(digits in "[1-9][0-9]{10}", v2019 in any::<bool>(),
                                  interval in 1u16.., duration in 1u32.., result in 0u8..4,
                                  lat in 0u32..90_000_000, lon in 0u32..180_000_000, step in 1usize..30) {
        let id = DeviceId::new(&digits);
        let cfg = SessionConfig { require_auth: true, ..SessionConfig::default() };
        let code = jt808::auth_code(&cfg.auth_key, &id);
        let mut s = Jt808Session::new(cfg);
        let width = if v2019 { 20 } else { 12 };
        let padded = format!("{digits:0>width$}");
        let terminal: Vec<u8> = padded.as_bytes().chunks(2).map(|p| (p[0] - b'0') << 4 | (p[1] - b'0')).collect();
        let version = v2019.then_some(1u8);
        // Before authentication: nothing goes out.
        feed(&mut s, &jt808_frame(0x0002, version, &terminal, 1, &[]), 64);
        prop_assert_eq!(s.encode_command(1, &Downlink::Locate).err(), Some(EncodeError::NotReady));
        let auth = if v2019 {
            let mut b = vec![code.len() as u8];
            b.extend_from_slice(code.as_bytes());
            b.extend_from_slice(b"868120145233604");
            b.extend_from_slice(&[0u8; 20]);
            b
        } else {
            code.into_bytes()
        };
        feed(&mut s, &jt808_frame(0x0102, version, &terminal, 2, &auth), 64);
        prop_assert_eq!(s.commands_to(), Some(&id));

        // Replies so far carried serials 1 and 2.
        let enc = s.encode_command(1, &Downlink::Locate).unwrap();
        prop_assert_eq!(enc.key, AnswerKey::Reply { serial: 3, msg_id: 0x8201 });
        prop_assert_eq!(enc.bytes.to_vec(), jt808_frame(0x8201, version, &terminal, 3, &[]));
        let enc = s.encode_command(2, &Downlink::Track { interval_s: interval, duration_s: duration }).unwrap();
        let mut body = interval.to_be_bytes().to_vec();
        body.extend_from_slice(&duration.to_be_bytes());
        prop_assert_eq!(enc.bytes.to_vec(), jt808_frame(0x8202, version, &terminal, 4, &body));
        prop_assert!(matches!(s.encode_command(3, &Downlink::Raw("x".into())), Err(EncodeError::Unsupported(_))));

        let mut loc = 3u16.to_be_bytes().to_vec();
        loc.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        loc.extend_from_slice(&lat.to_be_bytes());
        loc.extend_from_slice(&lon.to_be_bytes());
        loc.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x24, 0x05, 0x20, 0x18, 0x30, 0x15]);
        let mut stream = jt808_frame(0x0201, version, &terminal, 3, &loc);
        stream.extend(jt808_frame(0x0001, version, &terminal, 4, &[0, 4, 0x82, 0x02, result]));
        let out = feed(&mut s, &stream, step);
        let got = answers(&out);
        prop_assert_eq!(got.len(), 2);
        prop_assert_eq!(got[0].key, AnswerKey::Reply { serial: 3, msg_id: 0x8201 });
        let fix = got[0].position.expect("0x0201 carries a fix");
        prop_assert!((fix.lat - lat as f64 / 1e6).abs() < 1e-9 && (fix.lon - lon as f64 / 1e6).abs() < 1e-9);
        // The same fix is also a position event, before its answer.
        let positions: Vec<_> = out.iter().filter_map(|o| match o {
            Output::Event(e) => e.position().copied(),
            _ => None,
        }).collect();
        prop_assert_eq!(positions, vec![fix]);
        prop_assert_eq!(got[1].key, AnswerKey::Reply { serial: 4, msg_id: 0x8202 });
        prop_assert_eq!(got[1].ok, result == 0);
    }

    /// Teltonika: Codec 12 commands are CRC-checked frames of type 0x05 with the text; a type
    /// 0x06 response is the answer, whatever the reads, and is not acknowledged.
    #[test]
    fn teltonika_codec12(text in text(), answer in text(), step in 1usize..50) {
        let mut s = TeltonikaSession::new(SessionConfig::default());
        prop_assert_eq!(s.encode_command(1, &Downlink::Locate).err(), Some(EncodeError::NotReady));
        let mut hs = vec![0x00, 0x0F];
        hs.extend_from_slice(b"356307042441013");
        feed(&mut s, &hs, 64);
        let enc = s.encode_command(1, &Downlink::Raw(text.clone())).unwrap();
        let b = enc.bytes.to_vec();
        let len = u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize;
        prop_assert_eq!(b.len(), len + 12);
        prop_assert_eq!(&b[..4], &[0u8; 4][..]);
        let data = &b[8..8 + len];
        prop_assert_eq!(u32::from_be_bytes(b[8 + len..].try_into().unwrap()), u32::from(ARC.checksum(data)));
        prop_assert_eq!(&data[..3], &[0x0C, 1, 5][..]);
        prop_assert_eq!(&data[7..7 + text.len()], text.as_bytes());

        let mut d = vec![0x0C, 1, 6];
        d.extend_from_slice(&(answer.len() as u32).to_be_bytes());
        d.extend_from_slice(answer.as_bytes());
        d.push(1);
        let mut f = vec![0, 0, 0, 0];
        f.extend_from_slice(&(d.len() as u32).to_be_bytes());
        f.extend_from_slice(&d);
        f.extend_from_slice(&u32::from(ARC.checksum(&d)).to_be_bytes());
        let out = feed(&mut s, &f, step);
        let got = answers(&out);
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(got[0].key, AnswerKey::InOrder);
        prop_assert_eq!(got[0].text.as_deref(), Some(answer.as_str()));
        prop_assert!(!out.iter().any(|o| matches!(o, Output::Reply(_) | Output::Rejected(_))));
    }

    /// H02: raw text goes out as `*HQ,<id>,<text>#`; a `V4` is the answer.
    #[test]
    fn h02_raw_and_v4(text in "[A-Z0-9,]{1,60}", step in 1usize..20) {
        let mut s = H02Session::new(SessionConfig::default());
        prop_assert_eq!(s.encode_command(1, &Downlink::Raw(text.clone())).err(), Some(EncodeError::NotReady));
        feed(&mut s, b"*HQ,4106012345,XT#", 64);
        let enc = s.encode_command(1, &Downlink::Raw(text.clone())).unwrap();
        prop_assert_eq!(enc.bytes.to_vec(), format!("*HQ,4106012345,{text}#").into_bytes());
        prop_assert!(matches!(s.encode_command(1, &Downlink::Locate), Err(EncodeError::Unsupported(_))));
        let v4 = format!("*HQ,4106012345,V4,{text}#");
        let got = answers(&feed(&mut s, v4.as_bytes(), step));
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(got[0].text.clone(), Some(v4[1..v4.len() - 1].to_string()));
        // The V4 echoes the command word, which is what ties it to the command.
        prop_assert_eq!(got[0].key, enc.key);
        let other = format!("*HQ,4106012345,V4,X{text}#");
        let got = answers(&feed(&mut s, other.as_bytes(), step));
        if enc.key != AnswerKey::InOrder {
            prop_assert_ne!(got[0].key, enc.key);
        }
    }

    /// The answer decoders never panic, and only well-formed answers come out.
    #[test]
    fn answer_decoders_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        use lienwatch::protocol::{gt06_command, h02_command, jt808_command, teltonika_command};
        for (extended, proto) in [(false, 0x15), (true, 0x21)] {
            let p = gt06::Packet { extended, proto, content: &bytes, serial: 0 };
            if let Some(a) = gt06_command::answer(&p) {
                // The flag is the 4 bytes after the length byte (0x15) or at the start (0x21).
                let at = usize::from(!extended);
                prop_assert_eq!(&a.flag.to_be_bytes()[..], &bytes[at..at + 4]);
            }
        }
        if let Some(r) = jt808_command::general_response(&bytes) {
            prop_assert_eq!(r.serial.to_be_bytes(), [bytes[0], bytes[1]]);
            prop_assert_eq!(r.result, bytes[4]);
        }
        if let Some((serial, rest)) = jt808_command::location_answer(&bytes) {
            prop_assert_eq!(serial.to_be_bytes(), [bytes[0], bytes[1]]);
            prop_assert_eq!(rest.len() + 2, bytes.len());
        }
        if let Some(t) = teltonika_command::response_text(&bytes) {
            prop_assert_eq!(&bytes[..3], &[0x0C, 1, 6][..]);
            prop_assert!(bytes.len() >= 8, "{}", t);
            prop_assert_eq!(bytes.last(), Some(&1));
        }
        let _ = h02_command::answer(&bytes);
    }
}
