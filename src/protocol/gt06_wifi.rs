//! GT06-family Wi-Fi reports (Concox/Jimi 0x69 and the older 0x17, 0xF3).
//!
//! 0x69 and 0x17 do not follow the §A.1 frame: the byte where LEN belongs holds the number of
//! access points, and there is no serial and no CRC. The frame is
//! `78 78 | n | proto | BCD YY MM DD hh mm ss | n × (BSSID 6, signal 1) | cells m | MCC 2 | MNC 1 |
//! m × (LAC 2, cell id 2, signal 1) | 0D 0A`, and the device expects `78 78 00 | proto | the same
//! six time bytes | 0D 0A` back. (Some units send a 0x17 GPS+LBS+RFID report in a normal frame
//! instead; the session tries the normal frame first.) 0xF3 is framed normally: binary time,
//! a count, then per access point two reserved bytes and the BSSID, and is not acknowledged.
//!
//! None of them carries a fix: they become invalid positions keeping the serving cell and the
//! strongest access point, as the LBS reports do.

use crate::event::{Cell, Timestamp, WifiAp};

pub const PROTO_WIFI: u8 = 0x69;
pub const PROTO_WIFI_OLD: u8 = 0x17;
pub const PROTO_WIFI_4: u8 = 0xF3;

/// The shortest bare report: no access point, no cell.
pub const MIN_BARE: usize = 16;

/// A Wi-Fi report in the bare (unframed) form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BareWifi {
    pub proto: u8,
    /// The time bytes as sent, echoed in the reply.
    pub time_bcd: [u8; 6],
    /// The device's clock reading taken as if it were UTC; `None` if it is not a real date.
    pub device_time: Option<Timestamp>,
    pub cell: Option<Cell>,
    pub wifi: Option<WifiAp>,
}

impl BareWifi {
    /// The acknowledgement the device waits for.
    pub fn reply(&self) -> [u8; 12] {
        let t = self.time_bcd;
        [
            0x78, 0x78, 0x00, self.proto, t[0], t[1], t[2], t[3], t[4], t[5], 0x0D, 0x0A,
        ]
    }
}

/// The bytes at the front are not a bare Wi-Fi report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NotBare;

fn bcd(b: u8) -> Option<u8> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |acc, &x| acc << 8 | u64::from(x))
}

/// Reads a bare 0x69 / 0x17 report at the front of `buf`. `Ok(None)`: consistent so far but not
/// complete (at most `max` bytes, so waiting stays bounded); `Ok(Some((report, n)))`: `n` bytes.
pub fn parse_bare(buf: &[u8], max: usize) -> Result<Option<(BareWifi, usize)>, NotBare> {
    let (n_ap, proto) = match buf {
        [0x78, 0x78, n, p @ (PROTO_WIFI | PROTO_WIFI_OLD), ..] => (usize::from(*n), *p),
        [] | [0x78] | [0x78, 0x78] | [0x78, 0x78, _] => return Ok(None),
        _ => return Err(NotBare),
    };
    let aps_at = 10;
    let cells_at = aps_at + n_ap * 7;
    // Even with no cell the frame has the count, MCC, MNC and the stop bytes.
    if cells_at + 6 > max {
        return Err(NotBare);
    }
    let head = buf.get(4..buf.len().min(10)).unwrap_or_default();
    if head.iter().any(|&b| bcd(b).is_none()) {
        return Err(NotBare);
    }
    let Some(t) = buf.get(4..10) else {
        return Ok(None);
    };
    let time_bcd: [u8; 6] = t.try_into().map_err(|_| NotBare)?;
    let fields = time_bcd.map(bcd);
    let [Some(yy), Some(mo), Some(dd), Some(hh), Some(mi), Some(ss)] = fields else {
        return Err(NotBare);
    };
    let Some(&n_cells) = buf.get(cells_at) else {
        return Ok(None);
    };
    let total = cells_at + 1 + 3 + usize::from(n_cells) * 5 + 2;
    if total > max {
        return Err(NotBare);
    }
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    if frame[total - 2..] != [0x0D, 0x0A] {
        return Err(NotBare);
    }
    let wifi = frame[aps_at..cells_at]
        .chunks_exact(7)
        .map(|ap| WifiAp {
            mac: [ap[0], ap[1], ap[2], ap[3], ap[4], ap[5]],
            rssi: -i16::from(ap[6]),
        })
        .max_by_key(|ap| ap.rssi);
    let mcc = be(&frame[cells_at + 1..cells_at + 3]) as u16;
    let mnc = u16::from(frame[cells_at + 3]);
    let cell = frame
        .get(cells_at + 4..cells_at + 8)
        .filter(|_| n_cells > 0)
        .map(|c| Cell {
            mcc,
            mnc,
            lac: be(&c[..2]) as u32,
            cid: be(&c[2..]),
        })
        .filter(|c| c.lac != 0 || c.cid != 0);
    let device_time = Timestamp::from_civil(2000 + i32::from(yy), mo, dd, hh, mi, ss);
    Ok(Some((
        BareWifi {
            proto,
            time_bcd,
            device_time,
            cell,
            wifi,
        },
        total,
    )))
}

/// 0xF3 content: binary YY MM DD hh mm ss, count, then (2 reserved bytes, BSSID) per access
/// point. It carries no signal strength: the first access point is kept, with signal 0.
pub fn decode_wifi_4(c: &[u8]) -> Option<(Option<Timestamp>, Option<WifiAp>)> {
    let [yy, mo, dd, hh, mi, ss, count, aps @ ..] = c else {
        return None;
    };
    let device_time = Timestamp::from_civil(2000 + i32::from(*yy), *mo, *dd, *hh, *mi, *ss);
    let wifi = aps
        .chunks_exact(8)
        .take(usize::from(*count))
        .map(|ap| WifiAp {
            mac: [ap[2], ap[3], ap[4], ap[5], ap[6], ap[7]],
            rssi: 0,
        })
        .next();
    Some((device_time, wifi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_hex;

    #[test]
    fn bare_report_with_aps_and_cells() {
        // Traccar Gt06ProtocolDecoderTest: three access points, five cells of MCC 460.
        let b = parse_hex("787803691604130318491475905BD30E25001E10BBF7635D14759006E626560501CC0028660F213228660F1F2828660EA81E286610731428660F20140D0A").unwrap();
        let (r, n) = parse_bare(&b, 2048).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(r.device_time.unwrap().to_string(), "2016-04-13T03:18:49Z");
        assert_eq!(
            r.cell,
            Some(Cell {
                mcc: 460,
                mnc: 0,
                lac: 0x2866,
                cid: 0x0F21
            })
        );
        let w = r.wifi.unwrap();
        assert_eq!((w.mac, w.rssi), ([0x14, 0x75, 0x90, 0x5B, 0xD3, 0x0E], -37));
        assert_eq!(
            r.reply(),
            [0x78, 0x78, 0, 0x69, 0x16, 0x04, 0x13, 0x03, 0x18, 0x49, 0x0D, 0x0A]
        );
    }

    #[test]
    fn incomplete_and_foreign_bytes() {
        let b =
            parse_hex("7878006919012105090303028f01007549e05a00bc9c5c5a007a8d1a5a0d0a").unwrap();
        for cut in 0..b.len() {
            assert_eq!(parse_bare(&b[..cut], 2048), Ok(None), "cut at {cut}");
        }
        assert!(parse_bare(&b, 2048).unwrap().is_some());
        assert_eq!(parse_bare(&b, 20), Err(NotBare));
        // Not BCD time, another type, a wrong end.
        assert_eq!(
            parse_bare(&parse_hex("7878006919ff").unwrap(), 2048),
            Err(NotBare)
        );
        assert_eq!(
            parse_bare(&parse_hex("78780d01").unwrap(), 2048),
            Err(NotBare)
        );
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] = 0;
        assert_eq!(parse_bare(&bad, 2048), Err(NotBare));
    }

    #[test]
    fn wifi_4_reads_binary_time_and_first_ap() {
        let (t, w) = decode_wifi_4(&[20, 12, 11, 10, 38, 42, 1, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(t.unwrap().to_string(), "2020-12-11T10:38:42Z");
        assert_eq!(w.unwrap().mac, [1, 2, 3, 4, 5, 6]);
        assert_eq!(decode_wifi_4(&[20, 12, 11]), None);
    }
}
