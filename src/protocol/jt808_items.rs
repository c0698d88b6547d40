//! JT/T 808 location additional items: the `id BYTE | len BYTE | value` list after the 28-byte
//! basic block of 0x0200 (also 0x0201, 0x0704, 0x0210).
//!
//! Standard items are JT/T 808-2013 §8.18 tables 27 and 28 (the 2019 edition keeps them). The
//! vendor items (ids 0x50 and up, 0xE0–0xFF) are the ones common loan trackers send, read only in
//! the lengths their makers use: one id means different things to different vendors, so a length
//! that does not fit is skipped rather than guessed at. No item can fail the fix.

use crate::event::{AreaCrossing, AreaRef, Cell, Position, Props, RouteTime, WifiAp};

/// Reads every item of `items` into the position (satellites, serving cell, strongest Wi-Fi)
/// and its properties. A truncated last item ends the walk.
///
/// The serving cell and Wi-Fi are kept only where the terminal has no usable GNSS fix
/// (`Position::cell`; 0/0 marked valid is none): many loan trackers add their cell list to
/// every report, and a valid fix that carried one would be taken for an LBS report and left out
/// of places and `long_stay`.
pub fn read_items(mut items: &[u8], pos: &mut Position, props: &mut Props) {
    while let [id, len, rest @ ..] = items {
        let Some((value, next)) = rest.split_at_checked(usize::from(*len)) else {
            break;
        };
        read_item(*id, value, pos, props);
        items = next;
    }
    if pos.is_usable() {
        pos.cell = None;
        pos.wifi = None;
    }
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |acc, &x| acc << 8 | u64::from(x))
}

fn word(b: &[u8]) -> u16 {
    be(b) as u16
}

fn read_item(id: u8, v: &[u8], pos: &mut Position, props: &mut Props) {
    match (id, v.len()) {
        // §8.18 table 27.
        (0x01, 4) => props.odometer_m = Some(be(v) * 100),
        (0x02, 2) => props.fuel_l = Some(f32::from(word(v)) / 10.0),
        (0x03, 2) => props.tacho_speed_kmh = Some(f32::from(word(v)) / 10.0),
        (0x04, 2) => props.alarm_event_id = Some(word(v)),
        // Table 28: location type BYTE, then the area id DWORD unless the type is 0.
        (0x11, 1) => props.overspeed_area = Some(AreaRef { kind: v[0], id: 0 }),
        (0x11, 5) => {
            props.overspeed_area = Some(AreaRef {
                kind: v[0],
                id: be(&v[1..]) as u32,
            })
        }
        // Table 29: type BYTE, id DWORD, direction BYTE (0 in, 1 out).
        (0x12, 6) => {
            props.area_crossing = Some(AreaCrossing {
                kind: v[0],
                id: be(&v[1..5]) as u32,
                out: v[5] == 1,
            })
        }
        // Table 30: route id DWORD, time WORD (s), result BYTE (0 too short, 1 too long).
        (0x13, 7) => {
            props.route_time = Some(RouteTime {
                id: be(&v[..4]) as u32,
                seconds: word(&v[4..6]),
                too_long: v[6] == 1,
            })
        }
        (0x25, 4) => props.vehicle_signal = Some(be(v) as u32),
        (0x2A, 2) => props.io = Some(word(v)),
        // AD0 is bits 0–15, AD1 bits 16–31.
        (0x2B, 4) => props.analog = Some([word(&v[2..]), word(&v[..2])]),
        (0x30, 1) => props.rssi = Some(v[0]),
        (0x31, 1) => pos.satellites = Some(v[0]),
        // Vendor items.
        (0x06 | 0xD4 | 0xE1 | 0xE9, 1) if v[0] <= 100 => props.battery_pct = Some(v[0]),
        // G10LS: battery level 0–10, then a reserved byte.
        (0x56, 2) if v[0] <= 10 => props.battery_pct = Some(v[0] * 10),
        (0x61, 2) => props.power_v = Some(f32::from(word(v)) / 100.0),
        (0x82 | 0xD3 | 0xFE, 2) => props.power_v = Some(f32::from(word(v)) / 10.0),
        (0xFE, 1) if v[0] <= 100 => props.battery_pct = Some(v[0]),
        (0xF1, 4) => props.power_v = Some((be(v) as f64 / 1000.0) as f32),
        (0x69, 2) => props.battery_v = Some(f32::from(word(v)) / 100.0),
        (0xE1, 2) => props.power_v = Some(f32::from(word(v)) / 10.0),
        // MCC WORD, MNC WORD, then (LAC 3 bytes, cell id DWORD, signal BYTE) per cell.
        (0xE1, n) if n >= 12 && (n - 4).is_multiple_of(8) => {
            pos.cell = Some(Cell {
                mcc: word(&v[..2]),
                mnc: word(&v[2..4]),
                lac: be(&v[4..7]) as u32,
                cid: be(&v[7..11]),
            })
        }
        // G10LS 2G cells: count BYTE, then (MCC WORD, MNC BYTE, LAC WORD, cell id WORD,
        // signal BYTE) per cell; the first is the serving one.
        (0x53, n) if n >= 9 && usize::from(v[0]) * 8 == n - 1 => {
            pos.cell = Some(Cell {
                mcc: word(&v[1..3]),
                mnc: u16::from(v[3]),
                lac: u32::from(word(&v[4..6])),
                cid: u64::from(word(&v[6..8])),
            })
        }
        // G10LS 4G cells: the same with a cell id DWORD (10 bytes a cell).
        (0x5D, n) if n >= 11 && usize::from(v[0]) * 10 == n - 1 => {
            pos.cell = Some(Cell {
                mcc: word(&v[1..3]),
                mnc: u16::from(v[3]),
                lac: u32::from(word(&v[4..6])),
                cid: be(&v[6..10]),
            })
        }
        // G10LS Wi-Fi: count BYTE, then (BSSID, signal in dBm as a signed byte) per access
        // point.
        (0x54, n) if n >= 8 && usize::from(v[0]) * 7 == n - 1 => pos.wifi = strongest(&v[1..]),
        // Reserved BYTE, level BYTE (%), voltage WORD (1/100 V).
        (0xE3, 4 | 6) if v[1] <= 100 => {
            props.battery_pct = Some(v[1]);
            props.battery_v = Some(f32::from(word(&v[2..4])) / 100.0);
        }
        // Charging flag BYTE, level BYTE (%).
        (0xE4, 2) if v[1] <= 100 => props.battery_pct = Some(v[1]),
        (0xEB, n) => read_eb(v, n, pos, props),
        // Signal BYTE, power WORD (mV), battery WORD (mV), satellites BYTE.
        (0xEE, 6) => {
            props.rssi = Some(v[0]);
            props.power_v = Some(f32::from(word(&v[1..3])) / 1000.0);
            props.battery_v = Some(f32::from(word(&v[3..5])) / 1000.0);
            pos.satellites = Some(v[5]);
        }
        // Wi-Fi list: (BSSID, signal in dBm as a signed byte) per access point.
        (0xEC | 0xF4, n) if n >= 7 && n.is_multiple_of(7) => pos.wifi = strongest(v),
        _ => {}
    }
}

/// The strongest of a list of (BSSID, signal in dBm as a signed byte) access points.
fn strongest(list: &[u8]) -> Option<WifiAp> {
    list.chunks_exact(7)
        .map(|ap| WifiAp {
            mac: [ap[0], ap[1], ap[2], ap[3], ap[4], ap[5]],
            rssi: i16::from(ap[6] as i8),
        })
        .max_by_key(|ap| ap.rssi)
}

/// Item 0xEB, two vendor forms: a cell list (MCC WORD, MNC BYTE, then LAC WORD, cell id WORD,
/// signal BYTE per cell; an MCC is over 200), or extended items `len WORD | id WORD | value`
/// where `len` counts the id and the value.
fn read_eb(v: &[u8], n: usize, pos: &mut Position, props: &mut Props) {
    if n >= 8 && (n - 3).is_multiple_of(5) && word(&v[..2]) > 200 {
        pos.cell = Some(Cell {
            mcc: word(&v[..2]),
            mnc: u16::from(v[2]),
            lac: u32::from(word(&v[3..5])),
            cid: u64::from(word(&v[5..7])),
        });
        return;
    }
    let mut rest = v;
    while let [l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some((item, next)) = tail.split_at_checked(len) else {
            return;
        };
        if let [i0, i1, value @ ..] = item {
            match (u16::from_be_bytes([*i0, *i1]), value.len()) {
                (0x002D, 2) => props.battery_v = Some(f32::from(word(value)) / 1000.0),
                (0x002D, 4) => props.power_v = Some((be(value) as f64 / 1000.0) as f32),
                (0x00A8 | 0x00E1, 1) if value[0] <= 100 => props.battery_pct = Some(value[0]),
                (0x00CE, 2) => props.power_v = Some(f32::from(word(value)) / 100.0),
                _ => {}
            }
        }
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(items: &[u8]) -> (Position, Props) {
        let (mut p, mut props) = (Position::default(), Props::default());
        read_items(items, &mut p, &mut props);
        (p, props)
    }

    #[test]
    fn standard_items_of_tables_27_and_28() {
        let items = [
            &[0x01, 4, 0x00, 0x01, 0xE2, 0x40][..], // 123456 × 100 m
            &[0x02, 2, 0x01, 0xF4],                 // 50.0 L
            &[0x03, 2, 0x02, 0x6F],                 // 62.3 km/h
            &[0x04, 2, 0x00, 0x07],
            &[0x11, 5, 1, 0, 0, 0, 9],
            &[0x12, 6, 2, 0, 0, 0, 5, 1],
            &[0x13, 7, 0, 0, 0, 3, 0x01, 0x2C, 0],
            &[0x25, 4, 0, 0, 0, 0x11],
            &[0x2A, 2, 0, 0x02],
            &[0x2B, 4, 0x00, 0x64, 0x01, 0x2C],
            &[0x30, 1, 25],
            &[0x31, 1, 9],
        ]
        .concat();
        let (p, props) = read(&items);
        assert_eq!(props.odometer_m, Some(12_345_600));
        assert_eq!(props.fuel_l, Some(50.0));
        assert_eq!(props.tacho_speed_kmh, Some(62.3));
        assert_eq!(props.alarm_event_id, Some(7));
        assert_eq!(props.overspeed_area, Some(AreaRef { kind: 1, id: 9 }));
        assert_eq!(
            props.area_crossing,
            Some(AreaCrossing {
                kind: 2,
                id: 5,
                out: true
            })
        );
        assert_eq!(
            props.route_time,
            Some(RouteTime {
                id: 3,
                seconds: 300,
                too_long: false
            })
        );
        assert_eq!(props.vehicle_signal, Some(0x11));
        assert_eq!(props.io, Some(2));
        assert_eq!(props.analog, Some([300, 100]));
        assert_eq!(props.rssi, Some(25));
        assert_eq!(p.satellites, Some(9));
    }

    #[test]
    fn unknown_short_and_truncated_items_are_skipped() {
        // 0x01 with 3 bytes, an unknown 0x99, a good 0x30, then a cut 0x31.
        let items = [0x01, 3, 1, 2, 3, 0x99, 2, 0, 0, 0x30, 1, 7, 0x31, 5, 1];
        let (p, props) = read(&items);
        assert_eq!(props.odometer_m, None);
        assert_eq!(props.rssi, Some(7));
        assert_eq!(p.satellites, None);
        let (_, props) = read(&[0xEB, 2, 0xFF]);
        assert_eq!(props, Props::default());
    }

    /// A GNSS fix with a cell list and a Wi-Fi list is a GNSS fix: neither is kept on it.
    #[test]
    fn a_valid_fix_keeps_no_cell_or_wifi() {
        let valid = |lat: f64, lon: f64| Position {
            valid: true,
            lat,
            lon,
            ..Position::default()
        };
        let mut items = vec![0xE1, 12, 0x01, 0xCC, 0x00, 0x00, 0x25, 0x03, 0x00];
        items.extend_from_slice(&[0x00, 0x00, 0x10, 0x3C, 0x20]);
        items.extend_from_slice(&[0xEC, 7, 1, 2, 3, 4, 5, 6, 0xC0]);
        let mut p = valid(22.543096, 114.057865);
        read_items(&items, &mut p, &mut Props::default());
        assert_eq!((p.cell, p.wifi), (None, None));
        let (p, _) = read(&items);
        assert!(p.cell.is_some() && p.wifi.is_some(), "no fix: {p:?}");
        // 0/0 marked valid is no fix either: the cell is all that places the report.
        let mut p = valid(0.0, 0.0);
        read_items(&items, &mut p, &mut Props::default());
        assert!(p.cell.is_some() && p.wifi.is_some(), "0/0: {p:?}");
    }

    #[test]
    fn vendor_battery_power_cell_and_wifi() {
        let (_, props) = read(&[0xE3, 6, 0x00, 0x64, 0x01, 0x9A, 0x00, 0x00]);
        assert_eq!((props.battery_pct, props.battery_v), (Some(100), Some(4.1)));
        let (_, props) = read(&[0xE1, 2, 0x00, 0x72, 0x69, 2, 0x01, 0x8B]);
        assert_eq!((props.power_v, props.battery_v), (Some(11.4), Some(3.95)));
        let (_, props) = read(&[0x56, 2, 9, 0]);
        assert_eq!(props.battery_pct, Some(90));
        let (p, _) = read(&[0xEB, 8, 0x01, 0xCC, 0x00, 0x25, 0x03, 0x00, 0x10, 0x3C]);
        assert_eq!(
            p.cell,
            Some(Cell {
                mcc: 460,
                mnc: 0,
                lac: 0x2503,
                cid: 0x10
            })
        );
        let (_, props) = read(&[
            0xEB, 12, 0x00, 0x04, 0x00, 0x2D, 0x0F, 0xA5, 0x00, 0x03, 0x00, 0xA8, 0x4C, 0x00,
        ]);
        assert_eq!(
            (props.battery_v, props.battery_pct),
            (Some(4.005), Some(76))
        );
        let (p, _) = read(&[0xF4, 14, 1, 2, 3, 4, 5, 6, 0xB0, 7, 8, 9, 10, 11, 12, 0xC8]);
        let w = p.wifi.expect("wifi");
        assert_eq!((w.mac, w.rssi), ([7, 8, 9, 10, 11, 12], -56));
    }

    /// The G10LS cell and Wi-Fi lists (its manual, table 20): 0x53 2G cells, 0x5D 4G cells,
    /// 0x54 access points, each a count and fixed-size entries; a count that does not match the
    /// length is another vendor's item and skipped.
    #[test]
    fn g10ls_cell_and_wifi_lists() {
        let (p, _) = read(&[
            0x53, 17, 2, 0x01, 0xCC, 0x01, 0x25, 0x03, 0x10, 0x3C, 0x20, 0x01, 0xCC, 0x01, 0x25,
            0x04, 0x10, 0x3D, 0x18,
        ]);
        let want = Cell {
            mcc: 460,
            mnc: 1,
            lac: 0x2503,
            cid: 0x103C,
        };
        assert_eq!(p.cell, Some(want));
        let (p, _) = read(&[
            0x5D, 11, 1, 0x01, 0xCC, 0x00, 0x25, 0x03, 0x00, 0x00, 0x10, 0x3C, 0x20,
        ]);
        assert_eq!(p.cell, Some(Cell { mnc: 0, ..want }));
        let (p, _) = read(&[
            0x54, 15, 2, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0xC4, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x66, 0xBA,
        ]);
        let w = p.wifi.expect("wifi");
        assert_eq!((w.mac, w.rssi), ([0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF], -60));
        // A count that does not fit its length.
        let (p, _) = read(&[0x53, 9, 2, 0x01, 0xCC, 0x01, 0x25, 0x03, 0x10, 0x3C, 0x20]);
        assert_eq!(p.cell, None);
        let (p, _) = read(&[0x54, 7, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(p.wifi, None);
    }
}
