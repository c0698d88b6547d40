//! Teltonika AVL decoding: lienwatch's parser against nom-teltonika 0.3 on the same frames.
//!
//! Frames are built with nom-teltonika's own encoder: Codec 8 and Codec 8 Extended, one record
//! and the most typical records that fit in the 1280-byte frame Teltonika documents. Each side
//! checks the preamble, length and CRC, then reads every field of every record and every IO
//! element into a sum handed to `black_box`, so neither side can skip work.
//!
//! Run with `cargo bench --bench decode_teltonika`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lienwatch::protocol::teltonika::{decode_frame, IoValue};
use nom_teltonika::encoder::{encode_avl_frame, AvlRecordFields};
use nom_teltonika::protocol::{
    AvlCodec, AvlTimestamp, FrameView, GpsElement, IoId, IoValueView, Priority,
};
use std::hint::black_box;

const GPS: GpsElement = GpsElement {
    longitude_raw: 1_140_578_650,
    latitude_raw: 225_430_960,
    altitude_meters: 35,
    angle_degrees: 90,
    satellites: 9,
    speed_kph: 62,
};

/// A typical FMB record: ignition, movement, GSM, unplug; external and battery voltage;
/// odometer; one 8-byte value; in 8E also a 12-byte beacon element.
fn records(codec: AvlCodec, count: usize) -> Vec<AvlRecordFields<'static>> {
    static U8: [(u16, u8); 4] = [(239, 1), (240, 1), (21, 4), (252, 0)];
    static U16: [(u16, u16); 2] = [(66, 12_800), (67, 3_950)];
    static U32: [(u16, u32); 1] = [(16, 12_345_678)];
    static U64: [(u16, u64); 1] = [(78, 0x0102_0304_0506_0708)];
    let u8s: &'static [(IoId, u8)] = U8.map(|(i, v)| (IoId::from(i), v)).to_vec().leak();
    let u16s: &'static [(IoId, u16)] = U16.map(|(i, v)| (IoId::from(i), v)).to_vec().leak();
    let u32s: &'static [(IoId, u32)] = U32.map(|(i, v)| (IoId::from(i), v)).to_vec().leak();
    let u64s: &'static [(IoId, u64)] = U64.map(|(i, v)| (IoId::from(i), v)).to_vec().leak();
    let bytes: &'static [(IoId, &'static [u8])] = vec![(IoId::from(385), &[0xAB; 12][..])].leak();
    (0..count)
        .map(|i| {
            let ts = AvlTimestamp::from(1_716_201_015_000 + 1_000 * i as u64);
            let mut r = AvlRecordFields::new(ts, Priority::Low, GPS)
                .with_event_io_id(IoId::from(239))
                .with_io_u8(u8s)
                .with_io_u16(u16s)
                .with_io_u32(u32s)
                .with_io_u64(u64s);
            if codec == AvlCodec::Codec8Extended {
                r = r.with_io_bytes(bytes);
            }
            r
        })
        .collect()
}

/// The frame with the most records that fit, and its record count.
fn fullest(codec: AvlCodec) -> (Vec<u8>, usize) {
    let mut best = None;
    for n in 1..=255 {
        match encode_avl_frame(codec, &records(codec, n)) {
            Ok(f) => best = Some((f, n)),
            Err(_) => break,
        }
    }
    best.expect("one record fits")
}

fn lienwatch_sum(frame: &[u8]) -> u64 {
    let (avl, _) = decode_frame(frame, 1280).expect("valid frame");
    let mut acc = 0u64;
    for r in avl.records() {
        acc = acc
            .wrapping_add(r.timestamp_ms)
            .wrapping_add(u64::from(r.priority))
            .wrapping_add(r.lon_e7 as u64)
            .wrapping_add(r.lat_e7 as u64)
            .wrapping_add(r.altitude_m as u64)
            .wrapping_add(u64::from(r.angle))
            .wrapping_add(u64::from(r.satellites))
            .wrapping_add(u64::from(r.speed_kmh))
            .wrapping_add(u64::from(r.event_io));
        for io in r.io() {
            let v = match io.value {
                IoValue::U8(v) => u64::from(v),
                IoValue::U16(v) => u64::from(v),
                IoValue::U32(v) => u64::from(v),
                IoValue::U64(v) => v,
                IoValue::Bytes(b) => b.iter().map(|&x| u64::from(x)).sum(),
            };
            acc = acc.wrapping_add(u64::from(io.id)).wrapping_add(v);
        }
    }
    acc
}

fn nom_sum(frame: &[u8]) -> u64 {
    let mut input = frame;
    let Ok(FrameView::Avl(p)) = nom_teltonika::decoder::take_frame(&mut input) else {
        panic!("valid frame");
    };
    let mut acc = 0u64;
    for r in p.records() {
        let g = r.gps();
        acc = acc
            .wrapping_add(u64::from(r.timestamp()))
            .wrapping_add(u64::from(u8::from(r.priority())))
            .wrapping_add(g.longitude_raw as u64)
            .wrapping_add(g.latitude_raw as u64)
            .wrapping_add(g.altitude_meters as i16 as u64)
            .wrapping_add(u64::from(g.angle_degrees))
            .wrapping_add(u64::from(g.satellites))
            .wrapping_add(u64::from(g.speed_kph))
            .wrapping_add(r.event_io_id().map_or(0, |i| u64::from(u16::from(i))));
        for io in r.io_elements() {
            let v = match io.value() {
                IoValueView::U8(v) => u64::from(v),
                IoValueView::U16(v) => u64::from(v),
                IoValueView::U32(v) => u64::from(v),
                IoValueView::U64(v) => v,
                IoValueView::Bytes(b) => b.iter().map(|&x| u64::from(x)).sum(),
            };
            acc = acc
                .wrapping_add(u64::from(u16::from(io.id())))
                .wrapping_add(v);
        }
    }
    acc
}

fn decode(c: &mut Criterion) {
    for (codec, name) in [
        (AvlCodec::Codec8, "codec8"),
        (AvlCodec::Codec8Extended, "codec8e"),
    ] {
        let one = (
            encode_avl_frame(codec, &records(codec, 1)).expect("one record"),
            1,
        );
        let full = fullest(codec);
        let mut g = c.benchmark_group(format!("decode_{name}"));
        for (frame, n) in [one, full] {
            // Both decoders must agree before their speed means anything.
            assert_eq!(lienwatch_sum(&frame), nom_sum(&frame), "{name} x{n}");
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(BenchmarkId::new("lienwatch", n), &frame, |b, f| {
                b.iter(|| lienwatch_sum(black_box(f)))
            });
            g.bench_with_input(BenchmarkId::new("nom-teltonika", n), &frame, |b, f| {
                b.iter(|| nom_sum(black_box(f)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
