#![no_main]
//! Feeds arbitrary bytes to a GT06 session in chunks whose sizes come from the input itself,
//! checking the contract of `protocol::Session`: no panic, no fatal error without a refusal, and
//! never more than `max_frame` bytes of undecodable data held.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lienwatch::event::Timestamp;
use lienwatch::protocol::gt06::{self, Gt06Session};
use lienwatch::protocol::gt06_wifi;
use lienwatch::protocol::{Output, Session, SessionConfig};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // Small limits reach the length checks more often; the first byte picks one.
    let max_frame = 16 + (first as usize) * 4;
    let cfg = SessionConfig {
        max_frame,
        clock: Arc::new(|| Timestamp::from_secs(1_716_201_015)),
        ..SessionConfig::default()
    };
    let mut session = Gt06Session::new(cfg);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut input = rest;
    let mut step = 1usize;
    while !input.is_empty() {
        // Chunk sizes cycle through 1..=37 bytes so frames straddle reads in many ways.
        let n = step.min(input.len());
        step = step % 37 + 1;
        let (chunk, tail) = input.split_at(n);
        input = tail;
        buf.extend_from_slice(chunk);
        session
            .feed(&mut buf, &mut out)
            .expect("admission accepts every device, so no error is possible");
        assert!(buf.len() < max_frame, "buffer holds {} bytes", buf.len());
        for o in out.drain(..) {
            if let Output::Reply(r) = o {
                // A bare Wi-Fi report is answered with its type and time bytes, unframed.
                if let [0x78, 0x78, 0x00, gt06_wifi::PROTO_WIFI | gt06_wifi::PROTO_WIFI_OLD, .., 0x0D, 0x0A] = r[..] {
                    assert_eq!(r.len(), 12, "bare Wi-Fi answer {r:?}");
                    continue;
                }
                // Every other reply is one well-formed frame: acks, time and address answers.
                match gt06::parse_frame(&r, 4096) {
                    Ok(Some((_, n))) => assert_eq!(n, r.len(), "reply {r:?}"),
                    other => panic!("reply {r:?} is not a frame: {other:?}"),
                }
            }
        }
    }
    session.finish(&mut buf, &mut out);
    assert!(buf.is_empty());
});
