//! The history's block codec: any fixes round-trip at the precision it promises, and any bytes
//! decode to an error or to fixes, never a panic.

use lienwatch::event::{Cell, WifiAp};
use lienwatch::history::{codec, HistoryFix};
use lienwatch::store::StoredPosition;
use lienwatch::time::Timestamp;
use proptest::prelude::*;

fn fix() -> impl Strategy<Value = HistoryFix> {
    (
        (
            0i64..4_000_000_000_000,
            -90_000_000i64..90_000_000,
            -180_000_000i64..180_000_000,
        ),
        (
            any::<bool>(),
            0u32..3000,
            0u16..360,
            proptest::option::of(any::<u8>()),
        ),
        (
            proptest::option::of(-5000i64..90_000),
            -100_000i64..100_000_000,
        ),
        proptest::option::of((any::<u16>(), any::<u16>(), any::<u32>(), any::<u64>())),
        proptest::option::of((any::<[u8; 6]>(), any::<i16>())),
        any::<bool>(),
    )
        .prop_map(
            |((t, lat, lon), (valid, speed, course, sats), (alt, lag), cell, wifi, suspect)| {
                HistoryFix {
                    pos: StoredPosition {
                        time: Timestamp::from_millis(t),
                        lat: lat as f64 / 1e6,
                        lon: lon as f64 / 1e6,
                        valid,
                        speed_kmh: speed as f64 / 10.0,
                        course,
                        satellites: sats,
                        altitude_m: alt.map(|a| a as f64 / 10.0),
                        received_at: Timestamp::from_millis(t + lag),
                        cell: cell.map(|(mcc, mnc, lac, cid)| Cell { mcc, mnc, lac, cid }),
                        wifi: wifi.map(|(mac, rssi)| WifiAp { mac, rssi }),
                    },
                    suspect_future: suspect,
                }
            },
        )
}

fn close(a: &HistoryFix, b: &HistoryFix) -> bool {
    let (p, q) = (&a.pos, &b.pos);
    p.time == q.time
        && (p.lat - q.lat).abs() < 1e-9
        && (p.lon - q.lon).abs() < 1e-9
        && p.valid == q.valid
        && (p.speed_kmh - q.speed_kmh).abs() < 1e-9
        && p.course == q.course
        && p.satellites == q.satellites
        && p.altitude_m.zip(q.altitude_m).map_or(
            p.altitude_m.is_none() && q.altitude_m.is_none(),
            |(x, y)| (x - y).abs() < 1e-9,
        )
        && p.received_at == q.received_at
        && p.cell == q.cell
        && p.wifi == q.wifi
        && a.suspect_future == b.suspect_future
}

proptest! {
    #[test]
    fn blocks_round_trip(mut fixes in proptest::collection::vec(fix(), 0..200)) {
        fixes.sort_by_key(|f| f.pos.time);
        let mut buf = Vec::new();
        codec::encode(&fixes, &mut buf);
        let back = codec::decode(&buf).unwrap();
        prop_assert_eq!(back.len(), fixes.len());
        for (a, b) in fixes.iter().zip(&back) {
            prop_assert!(close(a, b), "{:?} != {:?}", a, b);
        }
    }

    #[test]
    fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode(&bytes);
        let mut v = vec![1u8];
        v.extend_from_slice(&bytes);
        let _ = codec::decode(&v);
    }
}
