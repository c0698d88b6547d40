//! JT/T 808 decoding throughput: the pure parser on a 0x0200 frame (un-escaping, XOR check,
//! header, location body) and a session fed a stream of location frames with their replies.
//!
//! `cargo bench --bench decode_jt808`

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lienwatch::protocol::jt808::{self, Jt808Session};
use lienwatch::protocol::{parse_hex, Session, SessionConfig};
use std::hint::black_box;

/// protocols.md B.6 #4: a 0x0200 with a power-cut alarm, three items and an escaped serial.
const LOCATION: &str = "7E 02 00 00 28 01 39 12 34 56 78 00 7D 01 00 00 01 00 00 0C 00 03 01 57 FA F8 06 CC 62 89 00 23 02 6F 00 5A 24 05 20 18 30 15 01 04 00 01 E2 40 30 01 19 31 01 09 83 7E";

fn location_stream(n: u16) -> Vec<u8> {
    let frame = parse_hex(LOCATION).unwrap_or_default();
    let inner = &frame[1..frame.len() - 1];
    let mut raw = Vec::new();
    jt808::unescape_into(inner, &mut raw).unwrap_or_default();
    let f = jt808::parse_frame(&raw).ok();
    let (terminal, body) = f.map(|f| (f.header.terminal, f.body)).unwrap_or_default();
    let mut stream = Vec::new();
    for serial in 0..n {
        stream.extend_from_slice(&jt808::encode_frame(0x0200, None, terminal, serial, body));
    }
    stream
}

fn bench(c: &mut Criterion) {
    let frame = parse_hex(LOCATION).unwrap_or_default();
    let inner = frame[1..frame.len() - 1].to_vec();
    let mut g = c.benchmark_group("jt808");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_0200_frame", |b| {
        let mut scratch = Vec::with_capacity(64);
        b.iter(|| {
            jt808::unescape_into(black_box(&inner), &mut scratch).ok();
            let f = jt808::parse_frame(&scratch).ok();
            black_box(f.map(|f| jt808::parse_location(f.body, 28_800)))
        })
    });

    const N: u16 = 1000;
    let stream = location_stream(N);
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("session_feed_0200_stream", |b| {
        let mut out = Vec::with_capacity(2 * usize::from(N));
        b.iter(|| {
            let mut s = Jt808Session::new(SessionConfig::default());
            let mut buf = BytesMut::from(black_box(&stream[..]));
            out.clear();
            s.feed(&mut buf, &mut out).ok();
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
