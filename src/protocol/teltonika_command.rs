//! Teltonika Codec 12 (GPRS commands) over TCP: the server's command (type 0x05) and the device's
//! response (type 0x06), both in the AVL packet frame of protocols.md §C.2 with CRC-16/ARC.
//! Codec 12 carries no serial: a response answers the command in flight, in order. Pure
//! functions; `teltonika::TeltonikaSession` recognises responses on an open connection.
//!
//! `00000000 | data length | 0C | 01 | type | text length (4) | text | 01 | 0000 CRC`

use super::teltonika::crc16;

pub const CODEC_12: u8 = 0x0C;
pub const TYPE_COMMAND: u8 = 0x05;
pub const TYPE_RESPONSE: u8 = 0x06;
/// What `locate` sends: the device answers with its current fix as text.
pub const LOCATE_TEXT: &str = "getgps";

/// A Codec 12 message of `kind` carrying `text`.
pub fn encode(kind: u8, text: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(text.len() + 8);
    data.extend_from_slice(&[CODEC_12, 1, kind]);
    data.extend_from_slice(&(text.len() as u32).to_be_bytes());
    data.extend_from_slice(text);
    data.push(1);
    let mut f = Vec::with_capacity(data.len() + 12);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(&data);
    f.extend_from_slice(&u32::from(crc16(&data)).to_be_bytes());
    f
}

/// A command to the device (type 0x05).
pub fn encode_command(text: &str) -> Vec<u8> {
    encode(TYPE_COMMAND, text.as_bytes())
}

/// The text of a Codec 12 response, given the AVL data of a CRC-checked frame (codec id .. N2).
/// `None` if it is not a well-formed single response.
pub fn response_text(data: &[u8]) -> Option<String> {
    let (&[codec, n1, kind], rest) = data.split_first_chunk::<3>()?;
    if codec != CODEC_12 || n1 != 1 || kind != TYPE_RESPONSE {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let (text, tail) = (rest.get(..len)?, rest.get(len..)?);
    if tail != [1] {
        return None;
    }
    Some(String::from_utf8_lossy(text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::to_hex;

    #[test]
    fn getinfo_matches_the_wiki_example() {
        // Teltonika wiki, Codec 12 "getinfo": CRC 0x4312.
        assert_eq!(
            to_hex(&encode_command("getinfo")),
            "00 00 00 00 00 00 00 0F 0C 01 05 00 00 00 07 67 65 74 69 6E 66 6F 01 00 00 43 12"
        );
        assert_eq!(
            to_hex(&encode_command(LOCATE_TEXT)),
            "00 00 00 00 00 00 00 0E 0C 01 05 00 00 00 06 67 65 74 67 70 73 01 00 00 CC D7"
        );
    }

    #[test]
    fn responses_round_trip_and_commands_are_not_responses() {
        let f = encode(TYPE_RESPONSE, b"GPS:1 Sat:7 Lat:54.667 Long:25.279");
        let data = &f[8..f.len() - 4];
        assert_eq!(
            response_text(data).as_deref(),
            Some("GPS:1 Sat:7 Lat:54.667 Long:25.279")
        );
        let c = encode_command("getgps");
        assert_eq!(response_text(&c[8..c.len() - 4]), None);
        assert_eq!(response_text(&data[..data.len() - 1]), None);
    }
}
