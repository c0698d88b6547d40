#![no_main]
//! Feeds arbitrary bytes to a GT06 session in chunks whose sizes come from the input itself,
//! checking the contract of `protocol::Session`: no panic, no fatal error without a refusal, and
//! never more than `max_frame` bytes of undecodable data held.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lienwatch::event::Timestamp;
use lienwatch::protocol::gt06::Gt06Session;
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
                // Acks and time replies in `78 78` frames; AZ735 reports are acked in `79 79`.
                let short = (r.len() == 10 || r.len() == 16) && r[..2] == [0x78, 0x78];
                let extended = r.len() == 11 && r[..2] == [0x79, 0x79];
                assert!(short || extended, "unexpected reply {r:?}");
            }
        }
    }
    session.finish(&mut buf, &mut out);
    assert!(buf.is_empty());
});
