//! Every protocol fixture against the real daemon over real sockets: each step's device bytes go
//! out on a real TCP connection (or UDP datagram) and the reply must come back byte-exact, as in
//! replay, and so must every command lienwatch sends on its own (`downlink`). Admin API steps go
//! over HTTP. (Alerts, API answer bodies and virtual time are `replay`'s: see tests/replay.rs.)

use crate::common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

#[test]
fn every_fixture_is_answered_byte_exact_over_real_sockets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures");
    let files = lienwatch::fixture::find(&[root]);
    let mut checked = 0;
    for f in &files {
        let fx = lienwatch::fixture::load(f).unwrap();
        let (proto, udp) = match fx.protocol.as_str() {
            "teltonika-udp" => ("teltonika/udp".to_string(), true),
            p => (p.to_string(), false),
        };
        let spec = match &fx.utc_offset {
            Some(o) => format!("{proto}@{o}"),
            None => proto.clone(),
        };
        // The fixtures' JT/T 808 auth codes derive from the default key.
        let d = Daemon::start(
            &[spec.as_str()],
            "[ingest]\njt808_auth_key = \"lienwatch\"\n",
        );
        let port = d.port(&spec);
        let mut conns: BTreeMap<u32, Device> = BTreeMap::new();
        let udp_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp_sock
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        // "No reply" is checked by a later reply: over TCP the next one on the connection (or
        // its close), over UDP the next answered datagram (or, at the end, the last answered one
        // sent again), which must be the first thing to arrive.
        let mut udp_answered: Option<(Vec<Vec<u8>>, Vec<u8>)> = None;
        let mut udp_silence_owed = false;
        for (i, step) in fx.steps.iter().enumerate() {
            let ctx = format!("{} step {}", f.display(), i + 1);
            if let Some(api) = &step.api {
                let (method, path) = api.split_once(' ').unwrap();
                let (s, v) = d.api(method, path, step.body.as_deref());
                if let Some(want) = step.status {
                    assert_eq!(s, want, "{ctx}: {v}");
                }
            }
            let Some(chunks) = &step.device else {
                read_downlink(&mut conns, step, &ctx);
                continue;
            };
            let want = lienwatch::protocol::parse_hex(step.reply.as_deref().unwrap_or("")).unwrap();
            let chunks = chunks.decode().unwrap();
            if udp {
                for c in &chunks {
                    udp_sock.send_to(c, ("127.0.0.1", port)).unwrap();
                }
                if want.is_empty() {
                    udp_silence_owed = true;
                } else {
                    let mut b = vec![0u8; 2048];
                    let n = udp_sock
                        .recv(&mut b)
                        .unwrap_or_else(|e| panic!("{ctx}: no reply: {e}"));
                    assert_eq!(
                        lienwatch::protocol::to_hex(&b[..n]),
                        lienwatch::protocol::to_hex(&want),
                        "{ctx}"
                    );
                    udp_silence_owed = false;
                    udp_answered = Some((chunks.clone(), want));
                }
            } else {
                let dev = conns
                    .entry(step.connection)
                    .or_insert_with(|| Device::connect(("127.0.0.1", port)));
                for c in &chunks {
                    dev.send(c);
                    // Real time between the pieces, as a device on a slow link writes them.
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !want.is_empty() {
                    let mut got = vec![0u8; want.len()];
                    dev.stream
                        .read_exact(&mut got)
                        .unwrap_or_else(|e| panic!("{ctx}: no reply: {e}"));
                    if step.clock_dependent {
                        assert_eq!(got.len(), want.len(), "{ctx}");
                    } else {
                        assert_eq!(
                            lienwatch::protocol::to_hex(&got),
                            lienwatch::protocol::to_hex(&want),
                            "{ctx}"
                        );
                    }
                }
            }
            read_downlink(&mut conns, step, &ctx);
            if step.close {
                if let Some(mut dev) = conns.remove(&step.connection) {
                    dev.expect_no_more_replies();
                }
            }
        }
        // Every reply that arrived was one a step expected.
        for (_, mut dev) in std::mem::take(&mut conns) {
            dev.expect_no_more_replies();
        }
        if udp_silence_owed {
            let (chunks, want) = udp_answered
                .as_ref()
                .expect("an answered datagram, to check the silence after it with");
            for c in chunks {
                udp_sock.send_to(c, ("127.0.0.1", port)).unwrap();
            }
            let mut b = vec![0u8; 2048];
            let n = udp_sock
                .recv(&mut b)
                .expect("the answer to the resent datagram");
            assert_eq!(
                lienwatch::protocol::to_hex(&b[..n]),
                lienwatch::protocol::to_hex(want),
                "{}: a reply to a datagram that expects none",
                f.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 5, "fixtures found: {checked}");
    eprintln!("{checked} fixtures answered byte-exact over real sockets");
}

/// A command lienwatch sends on its own (within 1 s of its cause): the exact bytes the step
/// expects, read from the step's connection.
fn read_downlink(conns: &mut BTreeMap<u32, Device>, step: &lienwatch::fixture::Step, ctx: &str) {
    let Some(hex) = &step.downlink else { return };
    let want = lienwatch::protocol::parse_hex(hex).unwrap();
    let dev = conns
        .get_mut(&step.connection)
        .unwrap_or_else(|| panic!("{ctx}: downlink on a connection not open"));
    let mut got = vec![0u8; want.len()];
    dev.stream
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{ctx}: no downlink: {e}"));
    assert_eq!(
        lienwatch::protocol::to_hex(&got),
        lienwatch::protocol::to_hex(&want),
        "{ctx}: downlink"
    );
}
