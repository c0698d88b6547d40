#![no_main]
//! Feeds arbitrary bytes to a JT/T 808 session in reads of varying size, and checks the session
//! contract: no panic, a bounded buffer, and replies that are themselves well-formed frames.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lienwatch::protocol::jt808::{self, Jt808Session};
use lienwatch::protocol::{Output, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    // The first byte picks max_frame and the read size, so both the bound and the
    // partial-frame paths get exercised.
    let Some((&knob, data)) = data.split_first() else {
        return;
    };
    let max_frame = 64 + usize::from(knob & 0x0F) * 128;
    let step = 1 + usize::from(knob >> 4) * 17;
    // Authentication enforced (a listener's connection) or not (MQTT), and a registration
    // policy that refuses some terminal ids, so both sides of each check are reached.
    let cfg = SessionConfig {
        max_frame,
        require_auth: knob & 0x10 != 0,
        bind_terminal: std::sync::Arc::new(|_, terminal_id: &str| terminal_id.len() % 2 == 0),
        ..SessionConfig::default()
    };
    let mut s = Jt808Session::new(cfg);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        if s.feed(&mut buf, &mut out).is_err() {
            break;
        }
        assert!(buf.len() <= max_frame);
    }
    s.finish(&mut buf, &mut out);
    let mut raw = Vec::new();
    for o in &out {
        if let Output::Reply(r) = o {
            assert!(r.len() >= 2 && r[0] == jt808::FLAG && r[r.len() - 1] == jt808::FLAG);
            jt808::unescape_into(&r[1..r.len() - 1], &mut raw).expect("reply escaping");
            jt808::parse_frame(&raw).expect("reply parses");
        }
    }
    // The parser on its own, on the raw input as if it were one unescaped frame.
    let _ = jt808::parse_frame(data).map(|f| jt808::parse_location(f.body, 28_800));
});
