//! The compact layout of stored fixes: a block of fixes of one device in time order, each field
//! delta-encoded against the previous fix as a zigzag LEB128 varint.
//!
//! A parked car's fixes repeat their coordinates, a moving car's change by a few hundred
//! micro-degrees, and fix times step by seconds: most fields fit in one or two bytes, so a fix
//! costs 10-15 bytes instead of the ~60 of a self-describing record. Coordinates are kept in
//! micro-degrees (about 11 cm), the precision the API prints; speed in 0.1 km/h; altitude in
//! decimetres; times in milliseconds.

use super::HistoryFix;
use crate::event::{Cell, WifiAp};
use crate::store::StoredPosition;
use crate::time::Timestamp;

const VERSION: u8 = 1;

const VALID: u8 = 1;
const SATELLITES: u8 = 1 << 1;
const ALTITUDE: u8 = 1 << 2;
const CELL: u8 = 1 << 3;
const WIFI: u8 = 1 << 4;
const SUSPECT_FUTURE: u8 = 1 << 5;
/// The time step is not whole seconds (most devices report whole seconds: one byte saved).
const MILLIS: u8 = 1 << 6;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("history block: unknown version {0}")]
    Version(u8),
    #[error("history block: truncated")]
    Truncated,
    #[error("history block: value out of range")]
    Range,
}

fn micro(deg: f64) -> i64 {
    (deg * 1e6).round() as i64
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_uvar(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_ivar(out: &mut Vec<u8>, v: i64) {
    put_uvar(out, zigzag(v));
}

/// The block of `fixes` (in time order) in a buffer of its own, sized for the usual ~13 bytes
/// a fix.
pub fn to_vec(fixes: &[HistoryFix]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fixes.len() * 14 + 8);
    encode(fixes, &mut out);
    out
}

/// Appends `fixes` (in time order) to `out` as one block.
pub fn encode(fixes: &[HistoryFix], out: &mut Vec<u8>) {
    out.push(VERSION);
    put_uvar(out, fixes.len() as u64);
    let (mut t, mut lat, mut lon) = (0i64, 0i64, 0i64);
    for f in fixes {
        let p = &f.pos;
        let mut flags = 0;
        if p.valid {
            flags |= VALID;
        }
        if p.satellites.is_some() {
            flags |= SATELLITES;
        }
        if p.altitude_m.is_some() {
            flags |= ALTITUDE;
        }
        if p.cell.is_some() {
            flags |= CELL;
        }
        if p.wifi.is_some() {
            flags |= WIFI;
        }
        if f.suspect_future {
            flags |= SUSPECT_FUTURE;
        }
        let (ft, flat, flon) = (p.time.millis(), micro(p.lat), micro(p.lon));
        let dt = ft.wrapping_sub(t);
        if dt % 1000 != 0 {
            flags |= MILLIS;
        }
        out.push(flags);
        put_ivar(out, if flags & MILLIS != 0 { dt } else { dt / 1000 });
        put_ivar(out, flat - lat);
        put_ivar(out, flon - lon);
        (t, lat, lon) = (ft, flat, flon);
        put_uvar(out, (p.speed_kmh.max(0.0) * 10.0).round() as u64);
        put_uvar(out, p.course as u64);
        if let Some(s) = p.satellites {
            out.push(s);
        }
        if let Some(a) = p.altitude_m {
            put_ivar(out, (a * 10.0).round() as i64);
        }
        put_ivar(out, p.received_at.millis().wrapping_sub(ft));
        if let Some(c) = p.cell {
            put_uvar(out, c.mcc as u64);
            put_uvar(out, c.mnc as u64);
            put_uvar(out, c.lac as u64);
            put_uvar(out, c.cid);
        }
        if let Some(w) = p.wifi {
            out.extend_from_slice(&w.mac);
            put_ivar(out, w.rssi as i64);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.buf.split_first().ok_or(CodecError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    fn uvar(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Range)
    }

    fn ivar(&mut self) -> Result<i64, CodecError> {
        self.uvar().map(unzigzag)
    }

    fn small<T: TryFrom<u64>>(&mut self) -> Result<T, CodecError> {
        T::try_from(self.uvar()?).map_err(|_| CodecError::Range)
    }
}

/// Decodes one block, calling `f` for each fix in order (no allocation per fix, so that a month
/// of 10-second fixes streams into the places computation).
pub fn decode_each(
    buf: &[u8],
    mut f: impl FnMut(HistoryFix) -> std::ops::ControlFlow<()>,
) -> Result<(), CodecError> {
    let mut r = Reader { buf };
    let v = r.byte()?;
    if v != VERSION {
        return Err(CodecError::Version(v));
    }
    let n = r.uvar()?;
    let (mut t, mut lat, mut lon) = (0i64, 0i64, 0i64);
    for _ in 0..n {
        let flags = r.byte()?;
        let dt = r.ivar()?;
        let dt = if flags & MILLIS != 0 {
            dt
        } else {
            dt.checked_mul(1000).ok_or(CodecError::Range)?
        };
        t = t.wrapping_add(dt);
        // Stored data is checked, not trusted: a corrupt delta is an error, not a panic.
        lat = lat.checked_add(r.ivar()?).ok_or(CodecError::Range)?;
        lon = lon.checked_add(r.ivar()?).ok_or(CodecError::Range)?;
        let speed = r.uvar()? as f64 / 10.0;
        let course: u16 = r.small()?;
        let satellites = if flags & SATELLITES != 0 {
            Some(r.byte()?)
        } else {
            None
        };
        let altitude_m = if flags & ALTITUDE != 0 {
            Some(r.ivar()? as f64 / 10.0)
        } else {
            None
        };
        let received_at = Timestamp::from_millis(t.wrapping_add(r.ivar()?));
        let cell = if flags & CELL != 0 {
            Some(Cell {
                mcc: r.small()?,
                mnc: r.small()?,
                lac: r.small()?,
                cid: r.uvar()?,
            })
        } else {
            None
        };
        let wifi = if flags & WIFI != 0 {
            let mut mac = [0u8; 6];
            for m in &mut mac {
                *m = r.byte()?;
            }
            let rssi = i16::try_from(r.ivar()?).map_err(|_| CodecError::Range)?;
            Some(WifiAp { mac, rssi })
        } else {
            None
        };
        let fix = HistoryFix {
            pos: StoredPosition {
                time: Timestamp::from_millis(t),
                lat: lat as f64 / 1e6,
                lon: lon as f64 / 1e6,
                valid: flags & VALID != 0,
                speed_kmh: speed,
                course,
                satellites,
                altitude_m,
                received_at,
                cell,
                wifi,
            },
            suspect_future: flags & SUSPECT_FUTURE != 0,
        };
        if f(fix).is_break() {
            break;
        }
    }
    Ok(())
}

/// Decodes one block into a vector.
pub fn decode(buf: &[u8]) -> Result<Vec<HistoryFix>, CodecError> {
    let mut out = Vec::new();
    decode_each(buf, |f| {
        out.push(f);
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(t: i64, lat: f64, lon: f64) -> HistoryFix {
        HistoryFix {
            pos: StoredPosition {
                time: Timestamp::from_millis(t),
                lat,
                lon,
                valid: true,
                speed_kmh: 42.5,
                course: 271,
                satellites: Some(9),
                altitude_m: Some(-12.3),
                received_at: Timestamp::from_millis(t + 1_204),
                cell: None,
                wifi: None,
            },
            suspect_future: false,
        }
    }

    #[test]
    fn a_block_round_trips_at_micro_degree_precision() {
        let mut fixes = vec![
            fix(1_764_000_000_000, 22.543096, 114.057865),
            fix(1_764_000_010_000, 22.543196, 114.057765),
            fix(1_764_000_010_250, 22.543196, 114.057765),
            fix(1_764_000_011_000, 22.543196, 114.057765),
        ];
        fixes[1].pos.valid = false;
        fixes[1].pos.satellites = None;
        fixes[1].pos.altitude_m = None;
        fixes[1].pos.cell = Some(Cell {
            mcc: 460,
            mnc: 0,
            lac: 9340,
            cid: 3_913_081,
        });
        fixes[1].pos.wifi = Some(WifiAp {
            mac: [1, 2, 3, 4, 5, 6],
            rssi: -71,
        });
        fixes[1].suspect_future = true;
        let mut buf = Vec::new();
        encode(&fixes, &mut buf);
        assert_eq!(decode(&buf).unwrap(), fixes);
    }

    #[test]
    fn a_moving_car_costs_about_a_dozen_bytes_a_fix() {
        let fixes: Vec<_> = (0..1000)
            .map(|i| {
                fix(
                    1_764_000_000_000 + i * 10_000,
                    22.5 + i as f64 * 1e-4,
                    114.0,
                )
            })
            .collect();
        let mut buf = Vec::new();
        encode(&fixes, &mut buf);
        let per_fix = buf.len() as f64 / 1000.0;
        assert!(per_fix < 15.0, "{per_fix} bytes per fix");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode(&[fix(1, 1.0, 2.0)], &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err());
        }
        assert_eq!(decode(&[9]), Err(CodecError::Version(9)));
        assert!(
            decode(&[VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err()
        );
        // Two latitude deltas of i64::MAX: the sum overflows (a panic in a checked build).
        let mut buf = vec![VERSION];
        put_uvar(&mut buf, 2);
        for _ in 0..2 {
            buf.push(0);
            put_ivar(&mut buf, 1);
            put_ivar(&mut buf, i64::MAX);
            put_ivar(&mut buf, 0);
            put_uvar(&mut buf, 0);
            put_uvar(&mut buf, 0);
        }
        assert_eq!(decode(&buf), Err(CodecError::Range));
    }
}
