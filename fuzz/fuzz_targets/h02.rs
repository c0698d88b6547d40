#![no_main]
//! Feeds arbitrary bytes to the H02 session in reads split where the input says. Checks the
//! session contract: no panic, the buffer stays within the frame limit, no replies ever.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lienwatch::protocol::h02::H02Session;
use lienwatch::protocol::{Output, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let cfg = SessionConfig {
        max_frame: 512,
        ..SessionConfig::default()
    };
    let mut s = H02Session::new(cfg.clone());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in data.chunks(usize::from(ctl).max(1)) {
        buf.extend_from_slice(chunk);
        assert!(s.feed(&mut buf, &mut out).is_ok());
        assert!(buf.len() <= cfg.max_frame, "buffer {}", buf.len());
    }
    s.finish(&mut buf, &mut out);
    assert!(out.iter().all(|o| !matches!(o, Output::Reply(_))));
});
