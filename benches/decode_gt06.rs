//! GT06 decode throughput: lienwatch's frame parser + decoder against the `gt06` crate on the
//! same 0x12 frames (both check the CRC and build a fix with float coordinates and a time), and
//! the whole session `feed` over a login followed by many locations.
//!
//! Run: `cargo bench --bench decode_gt06`

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lienwatch::event::Timestamp;
use lienwatch::protocol::gt06::{decode_packet, parse_frame, Gt06Session, Message};
use lienwatch::protocol::{Output, Session, SessionConfig};
use std::hint::black_box;
use std::sync::Arc;

const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);

fn frame(proto: u8, content: &[u8], serial: u16) -> Vec<u8> {
    let mut f = vec![0x78, 0x78, (content.len() + 5) as u8, proto];
    f.extend_from_slice(content);
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = X25.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    f
}

/// `n` distinct classic 0x12 frames around Shenzhen (protocols.md A.6 example 2, varied).
fn locations(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut c = vec![24, 5, 20, 10, (i / 60 % 60) as u8, (i % 60) as u8, 0xC9];
            c.extend_from_slice(&(40_577_573u32 + i as u32 * 37).to_be_bytes());
            c.extend_from_slice(&(205_304_157u32 + i as u32 * 53).to_be_bytes());
            c.push((i % 120) as u8);
            c.extend_from_slice(&(0x1400u16 | (i as u16 % 360)).to_be_bytes());
            c.extend_from_slice(&[0x01, 0xCC, 0x00, 0x24, 0x7C, 0x0F, 0x2A, 0x31]);
            frame(0x12, &c, i as u16)
        })
        .collect()
}

fn decode_0x12(c: &mut Criterion) {
    let frames = locations(64);
    let mut g = c.benchmark_group("decode_0x12");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("lienwatch", |b| {
        b.iter(|| {
            for f in &frames {
                let Ok(Some((p, _))) = parse_frame(black_box(f), 4096) else {
                    panic!("frame rejected")
                };
                let Ok(Message::Location(l)) = decode_packet(&p) else {
                    panic!("not a location")
                };
                black_box(l.gps.position(0));
            }
        })
    });
    g.bench_function("gt06_crate", |b| {
        b.iter(|| {
            for f in &frames {
                let m = gt06::parse_packet(black_box(f)).expect("gt06 crate rejects frame");
                black_box(m);
            }
        })
    });
    g.finish();
}

fn session_feed(c: &mut Criterion) {
    const N: usize = 1000;
    let mut stream = frame(0x01, &[0x08, 0x68, 0x12, 0x01, 0x45, 0x23, 0x36, 0x04], 1);
    for f in locations(N) {
        stream.extend_from_slice(&f);
    }
    let cfg = SessionConfig {
        clock: Arc::new(|| Timestamp::from_secs(1_716_201_015)),
        ..SessionConfig::default()
    };
    let mut g = c.benchmark_group("session_feed");
    g.throughput(Throughput::Elements(N as u64 + 1));
    g.bench_function("login_plus_1000_locations", |b| {
        b.iter_batched(
            || {
                (
                    Gt06Session::new(cfg.clone()),
                    BytesMut::from(&stream[..]),
                    Vec::<Output>::with_capacity(2 * N + 2),
                )
            },
            |(mut s, mut buf, mut out)| {
                s.feed(&mut buf, &mut out).expect("feed");
                assert_eq!(out.len(), 2 * N + 2);
                (s, buf, out)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, decode_0x12, session_feed);
criterion_main!(benches);
