#![no_main]
//! Feeds arbitrary bytes to the Teltonika TCP session (before and after the IMEI handshake, in
//! reads split where the input says) and to the UDP session as one datagram. Checks the session
//! contract: no panic, the buffer stays within the frame limit, every ack is 4 or 7 bytes.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lienwatch::protocol::teltonika::{TeltonikaSession, TeltonikaUdpSession};
use lienwatch::protocol::{Output, Session, SessionConfig};

const HANDSHAKE: &[u8] = b"\x00\x0F356307042441013";

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let cfg = SessionConfig {
        max_frame: 1280,
        ..SessionConfig::default()
    };
    let mut tcp = TeltonikaSession::new(cfg.clone());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    if ctl & 1 == 1 {
        buf.extend_from_slice(HANDSHAKE);
    }
    let cut = usize::from(ctl >> 1).max(1);
    for chunk in data.chunks(cut) {
        buf.extend_from_slice(chunk);
        if tcp.feed(&mut buf, &mut out).is_err() {
            break;
        }
        assert!(buf.len() <= cfg.max_frame, "buffer {}", buf.len());
    }
    tcp.finish(&mut buf, &mut out);
    for o in &out {
        if let Output::Reply(r) = o {
            assert!(matches!(r.len(), 1 | 4), "reply {r:?}");
        }
    }

    let mut udp = TeltonikaUdpSession::new(cfg);
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    let _ = udp.feed(&mut buf, &mut out);
    assert!(buf.is_empty());
    for o in &out {
        if let Output::Reply(r) = o {
            assert_eq!(r.len(), 7);
        }
    }
});
