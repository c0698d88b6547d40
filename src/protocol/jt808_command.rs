//! JT/T 808 platform commands (protocols.md §B.5): position query 0x8201 (answered by 0x0201,
//! the query's serial and a 0x0200 body) and temporary tracking 0x8202 (answered by the terminal's
//! general response 0x0001). Pure functions; `jt808::Jt808Session` numbers them with its own
//! serial and mirrors the terminal's header version and number.

use super::jt808::encode_frame;
use bytes::Bytes;

pub const QUERY_LOCATION: u16 = 0x8201;
pub const TEMPORARY_TRACKING: u16 = 0x8202;

/// 0x8201, empty body.
pub fn encode_locate(version: Option<u8>, terminal: &[u8], serial: u16) -> Bytes {
    encode_frame(QUERY_LOCATION, version, terminal, serial, &[])
}

/// 0x8202: interval in seconds (WORD; 0 stops tracking), valid for `duration_s` (DWORD).
pub fn encode_track(
    version: Option<u8>,
    terminal: &[u8],
    serial: u16,
    interval_s: u16,
    duration_s: u32,
) -> Bytes {
    let mut body = [0u8; 6];
    body[..2].copy_from_slice(&interval_s.to_be_bytes());
    body[2..].copy_from_slice(&duration_s.to_be_bytes());
    encode_frame(TEMPORARY_TRACKING, version, terminal, serial, &body)
}

/// The terminal's general response 0x0001: the serial and id of the platform message it answers
/// and its result (0 success, 1 failure, 2 message error, 3 not supported).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GeneralResponse {
    pub serial: u16,
    pub msg_id: u16,
    pub result: u8,
}

pub fn general_response(body: &[u8]) -> Option<GeneralResponse> {
    let &[s1, s2, m1, m2, result] = body.first_chunk::<5>()?;
    Some(GeneralResponse {
        serial: u16::from_be_bytes([s1, s2]),
        msg_id: u16::from_be_bytes([m1, m2]),
        result,
    })
}

/// The result code as the command's answer text.
pub fn result_text(result: u8) -> &'static str {
    match result {
        0 => "success",
        1 => "failure",
        2 => "message error",
        3 => "not supported",
        _ => "unknown result",
    }
}

/// 0x0201: the serial of the 0x8201 it answers, and the location body after it.
pub fn location_answer(body: &[u8]) -> Option<(u16, &[u8])> {
    let (serial, rest) = body.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*serial), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_hex;
    use crate::protocol::to_hex;

    const TERMINAL: [u8; 6] = [0x01, 0x39, 0x12, 0x34, 0x56, 0x78];

    #[test]
    fn query_and_tracking_in_both_header_forms() {
        // 2013: id, attrs 0, number, serial 3, check.
        assert_eq!(
            to_hex(&encode_locate(None, &TERMINAL, 3)),
            "7E 82 01 00 00 01 39 12 34 56 78 00 03 B0 7E"
        );
        let mut t2019 = [0u8; 10];
        t2019[4..].copy_from_slice(&TERMINAL);
        assert_eq!(
            to_hex(&encode_locate(Some(1), &t2019, 3)),
            "7E 82 01 40 00 01 00 00 00 00 01 39 12 34 56 78 00 03 F1 7E"
        );
        // 10 s for 30 min.
        assert_eq!(
            to_hex(&encode_track(None, &TERMINAL, 4, 10, 1800)),
            "7E 82 02 00 06 01 39 12 34 56 78 00 04 00 0A 00 00 07 08 B7 7E"
        );
    }

    #[test]
    fn answers_name_the_platform_serial() {
        // protocols.md §B.6 #7: 0x0001 acking platform 0x8105 serial 0x0010.
        let body = parse_hex("00 10 81 05 00").unwrap();
        assert_eq!(
            general_response(&body),
            Some(GeneralResponse {
                serial: 0x10,
                msg_id: 0x8105,
                result: 0
            })
        );
        assert_eq!(general_response(&body[..4]), None);
        assert_eq!(location_answer(&[0, 7, 1, 2]), Some((7, &[1u8, 2][..])));
        assert_eq!(location_answer(&[0]), None);
    }
}
