//! The history's block codec: any fixes round-trip at the precision it promises, and any bytes
//! decode to an error or to fixes, never a panic. And the history's stages: whatever order
//! writes, re-sent fixes, drain passes and seals come in, a read returns each fix time once, in
//! order, as a plain set of `(device, time)` would.

use lienwatch::event::DeviceId;
use lienwatch::event::{Cell, WifiAp};
use lienwatch::history::{codec, HistoryFix, Staged};
use lienwatch::store::StoredPosition;
use lienwatch::time::Timestamp;
use proptest::prelude::*;
use std::collections::BTreeSet;

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

/// One step of the history's life, as the engine and the upkeep passes take them.
#[derive(Debug, Clone)]
enum Step {
    /// A group commit: `(device, fix time in minutes)` pairs, re-sent ones included.
    Commit(Vec<(u8, i64)>),
    /// A drain pass of at most this many fixes (whole log entries).
    Drain(usize),
    /// A seal of the buckets that ended before this minute.
    Seal(i64),
    /// A prune of the fixes older than this minute.
    Prune(i64),
}

fn step() -> impl Strategy<Value = Step> {
    // Three days of minutes: a dozen six-hour buckets, so runs, late fixes and seals mix.
    const MINUTES: i64 = 3 * 24 * 60;
    prop_oneof![
        4 => proptest::collection::vec((0u8..3, 0..MINUTES), 1..40).prop_map(Step::Commit),
        2 => (1usize..80).prop_map(Step::Drain),
        1 => (0..MINUTES + 600).prop_map(Step::Seal),
        1 => (0..MINUTES).prop_map(Step::Prune),
    ]
}

/// The first minute of the history's six-hour bucket that holds minute `m`.
fn bucket_start_minute(m: i64) -> i64 {
    m.div_euclid(360) * 360
}

fn at_minute(m: i64) -> HistoryFix {
    HistoryFix {
        pos: StoredPosition {
            time: Timestamp::from_secs(m * 60),
            lat: 22.5,
            lon: 114.0 + m as f64 * 1e-5,
            valid: true,
            speed_kmh: 0.0,
            course: 0,
            satellites: None,
            altitude_m: None,
            received_at: Timestamp::from_secs(m * 60),
            cell: None,
            wifi: None,
        },
        suspect_future: false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_order_of_commits_drains_and_seals_reads_each_fix_once(
        steps in proptest::collection::vec(step(), 1..30),
        ranges in proptest::collection::vec((0u8..3, 0i64..5000, 0i64..5000), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = lienwatch::store::Store::open(dir.path(), 16).unwrap();
        let h = store.history();
        let mut model: BTreeSet<(u8, i64)> = BTreeSet::new();
        // Fixes older than a prune's cutoff may linger in a block whose bucket it cuts (readers
        // apply the retention): not compared between a cutoff and the start of its bucket.
        let mut cutoffs: Vec<i64> = Vec::new();
        for s in &steps {
            match s {
                Step::Commit(fixes) => {
                    let mut staged = Staged::default();
                    for &(d, m) in fixes {
                        h.stage(&mut staged, &DeviceId::new(&format!("86812{d}")), &at_minute(m));
                        model.insert((d, m));
                    }
                    h.apply(staged).unwrap();
                    // The engine's commit: sled, then the journal's record.
                    store.flush().unwrap();
                }
                Step::Drain(n) => {
                    h.drain_log(*n).unwrap();
                }
                Step::Seal(m) => {
                    h.compact(Timestamp::from_secs(m * 60), 1_000_000).unwrap();
                }
                Step::Prune(m) => {
                    // As the upkeep does: what is logged is filed first.
                    while h.drain_log(1_000).unwrap() > 0 {}
                    loop {
                        let p = h.prune(Timestamp::from_secs(m * 60), 7).unwrap();
                        if p.fixes + p.blocks == 0 {
                            break;
                        }
                    }
                    model.retain(|&(_, t)| t >= *m);
                    cutoffs.push(*m);
                }
            }
        }
        let certain = |m: i64| {
            cutoffs
                .iter()
                .all(|&c| m >= c || m < bucket_start_minute(c))
        };
        let read = |d: u8, from: i64, to: i64| -> Vec<i64> {
            h.track(
                &format!("86812{d}"),
                Timestamp::from_secs(from * 60),
                Timestamp::from_secs(to * 60),
                usize::MAX,
            )
            .unwrap()
            .iter()
            .map(|f| f.pos.time.secs() / 60)
            .filter(|&m| certain(m))
            .collect()
        };
        for &(d, a, b) in ranges.iter().chain([(0, 0, 5000), (1, 0, 5000), (2, 0, 5000)].iter()) {
            let want: Vec<i64> = model
                .range((d, a)..(d, b.max(a)))
                .map(|&(_, m)| m)
                .filter(|&m| certain(m))
                .collect();
            prop_assert_eq!(read(d, a, b), want, "device {} [{}, {})", d, a, b);
        }
        // Everything filed and sealed: the same answers from the blocks alone.
        while h.drain_log(1_000).unwrap() > 0 {}
        h.compact(Timestamp::from_secs(10_000 * 60), 1_000_000).unwrap();
        for d in 0..3u8 {
            let want: Vec<i64> = model
                .range((d, 0)..(d, 5000))
                .map(|&(_, m)| m)
                .filter(|&m| certain(m))
                .collect();
            prop_assert_eq!(read(d, 0, 5000), want, "device {} sealed", d);
        }
    }
}
