//! GT06 online commands (protocols.md §A.3 item 6): the server's 0x80 and the device's text
//! answers, 0x15 in a short frame and 0x21 in an extended one. Pure functions; the session
//! (`gt06::Gt06Session`) numbers and sends them.
//!
//! 0x80 content: command length (server flag + text), the 4-byte server flag, the ASCII text.
//! The device echoes the flag in its answer, which is how an answer finds its command.

use super::gt06::{crc16_x25, Gps, Packet};

pub const PROTO_COMMAND: u8 = 0x80;
/// Text answer in a short (`78 78`) frame: length, server flag, text.
pub const PROTO_ANSWER: u8 = 0x15;
/// Text answer in an extended (`79 79`) frame: server flag, encoding, text.
pub const PROTO_ANSWER_LONG: u8 = 0x21;

/// What `locate` sends unless the listener says otherwise (`gt06_locate`).
pub const LOCATE_TEXT: &str = "WHERE#";

/// The longest text a short 0x80 frame can hold: LEN = 1 + 1 + 4 + text + 2 + 2 <= 255.
pub const MAX_COMMAND_TEXT: usize = 255 - 10;

/// `78 78 LEN 80 CMDLEN FLAG TEXT SERIAL CRC 0D 0A`. `None` if the text does not fit.
pub fn encode(flag: u32, text: &[u8], serial: u16) -> Option<Vec<u8>> {
    if text.len() > MAX_COMMAND_TEXT {
        return None;
    }
    let len = u8::try_from(text.len() + 10).ok()?;
    let cmd_len = u8::try_from(text.len() + 4).ok()?;
    let mut f = Vec::with_capacity(text.len() + 15);
    f.extend_from_slice(&[0x78, 0x78, len, PROTO_COMMAND, cmd_len]);
    f.extend_from_slice(&flag.to_be_bytes());
    f.extend_from_slice(text);
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = crc16_x25(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    Some(f)
}

/// A text answer: the server flag it echoes and its text.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Answer {
    pub flag: u32,
    pub text: String,
}

/// The answer in a checked frame, if it is one: 0x15 in a short frame (the length byte bounds
/// the text; a trailing language word is not text), 0x21 in an extended frame (encoding 1 is
/// ASCII, anything else UTF-16BE).
pub fn answer(p: &Packet<'_>) -> Option<Answer> {
    let c = p.content;
    match (p.proto, p.extended) {
        (PROTO_ANSWER, false) => {
            let cmd_len = usize::from(*c.first()?);
            let flag = u32::from_be_bytes(c.get(1..5)?.try_into().ok()?);
            let raw = c.get(5..1 + cmd_len.max(4))?;
            Some(Answer {
                flag,
                text: String::from_utf8_lossy(raw)
                    .trim_end_matches('\0')
                    .to_string(),
            })
        }
        (PROTO_ANSWER_LONG, true) => {
            let flag = u32::from_be_bytes(c.get(..4)?.try_into().ok()?);
            let enc = *c.get(4)?;
            let raw = c.get(5..)?;
            let text = if enc == 1 {
                String::from_utf8_lossy(raw).into_owned()
            } else {
                encoding_rs::UTF_16BE
                    .decode_without_bom_handling(raw)
                    .0
                    .into_owned()
            };
            Some(Answer {
                flag,
                text: text.trim_end_matches('\0').to_string(),
            })
        }
        _ => None,
    }
}

/// The fix a `WHERE#` answer spells out, if the text is one.
pub fn answer_fix(text: &str) -> Option<Gps> {
    super::gt06::where_answer(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::gt06::parse_frame;
    use crate::protocol::to_hex;

    #[test]
    fn where_command_bytes() {
        let f = encode(1, b"WHERE#", 1).unwrap();
        assert_eq!(
            to_hex(&f),
            "78 78 10 80 0A 00 00 00 01 57 48 45 52 45 23 00 01 38 9F 0D 0A"
        );
        // It is a well-formed frame by the decoder's own rules.
        let (p, n) = parse_frame(&f, 1024).unwrap().unwrap();
        assert_eq!((p.proto, n), (PROTO_COMMAND, f.len()));
        assert!(encode(1, &[b'A'; MAX_COMMAND_TEXT + 1], 1).is_none());
    }

    #[test]
    fn short_and_long_answers_echo_the_flag() {
        let mut c = vec![4 + 5];
        c.extend_from_slice(&7u32.to_be_bytes());
        c.extend_from_slice(b"OK!\0\0");
        c.extend_from_slice(&[0x00, 0x02]);
        let p = Packet {
            extended: false,
            proto: PROTO_ANSWER,
            content: &c,
            serial: 3,
        };
        assert_eq!(
            answer(&p),
            Some(Answer {
                flag: 7,
                text: "OK!".into()
            })
        );
        let mut c = 9u32.to_be_bytes().to_vec();
        c.push(1);
        c.extend_from_slice(
            b"Lat:N22.543096,Lon:E114.057865,Course:90.00,Speed:0.0,DateTime:2024-05-20 10:30:15",
        );
        let p = Packet {
            extended: true,
            proto: PROTO_ANSWER_LONG,
            content: &c,
            serial: 4,
        };
        let a = answer(&p).unwrap();
        assert_eq!(a.flag, 9);
        let fix = answer_fix(&a.text).unwrap().position(0);
        assert!((fix.lat - 22.543096).abs() < 1e-5 && (fix.lon - 114.057865).abs() < 1e-5);
        // Truncated content is no answer.
        let p = Packet {
            extended: false,
            proto: PROTO_ANSWER,
            content: &[9, 0, 0],
            serial: 1,
        };
        assert_eq!(answer(&p), None);
    }
}
