//! Every fixture in `protocol-fixtures/` replays at the protocol level: exact replies and the
//! decoded events each step expects. (The full pipeline, with alerts, is `tests/replay.rs`.)

use std::path::Path;

#[test]
fn every_fixture_passes_at_the_protocol_level() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures");
    let files = lienwatch::fixture::find(&[root]);
    let mut failures = Vec::new();
    for f in &files {
        let fx = match lienwatch::fixture::load(f) {
            Ok(fx) => fx,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        for p in lienwatch::fixture::check_protocol(&fx) {
            failures.push(format!("{}: {p}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "fixture failures:\n{}",
        failures.join("\n")
    );
    eprintln!("{} fixture file(s) checked", files.len());
}

/// One frame of the public corpus (`protocol-fixtures/corpus/*.json`).
struct CorpusFrame {
    protocol: &'static str,
    line: u64,
    call: String,
    wire: lienwatch::protocol::WireProtocol,
    bytes: Vec<u8>,
    expect: Option<serde_json::Value>,
    /// The events the frame must decode to (one frame per message type carries this).
    decoded: Option<Vec<serde_json::Value>>,
    /// The exact reply, hex; empty for none.
    reply: Option<String>,
}

fn corpus() -> Vec<CorpusFrame> {
    use lienwatch::protocol::{parse_hex, WireProtocol};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures/corpus");
    let mut out = Vec::new();
    for protocol in ["gt06", "h02", "jt808", "teltonika"] {
        let text = std::fs::read_to_string(root.join(format!("{protocol}.json")))
            .unwrap_or_else(|e| panic!("{protocol}.json: {e}"));
        let doc: serde_json::Value = serde_json::from_str(&text).expect("corpus json");
        for f in doc["frames"].as_array().expect("frames") {
            let bytes = match (f["hex"].as_str(), f["text"].as_str()) {
                (Some(h), _) => parse_hex(h).expect("corpus hex"),
                (None, Some(t)) => t.as_bytes().to_vec(),
                _ => panic!("frame without data: {f}"),
            };
            let wire = match (protocol, f["udp"].as_bool()) {
                ("teltonika", Some(true)) => WireProtocol::TeltonikaUdp,
                _ => WireProtocol::parse(protocol).expect("protocol"),
            };
            out.push(CorpusFrame {
                protocol,
                line: f["line"].as_u64().unwrap_or(0),
                call: f["call"].as_str().unwrap_or("").to_string(),
                wire,
                bytes,
                expect: f.get("expect").cloned(),
                decoded: f["decoded"].as_array().cloned(),
                reply: f["reply"].as_str().map(str::to_string),
            });
        }
    }
    out
}

/// Why a position-bearing frame does not decode as the corpus says, or `None` if it does.
fn corpus_failure(f: &CorpusFrame) -> Option<String> {
    let lines = match lienwatch::replay::decode_bytes(f.wire, &f.bytes) {
        Ok(l) => l,
        Err((l, e)) if l.is_empty() => return Some(e),
        Err((l, _)) => l,
    };
    let positions: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "position")
        .collect();
    let Some(first) = positions.first() else {
        return Some(format!("no position: {}", lines.join(" ")));
    };
    for p in &positions {
        let (lat, lon) = (p["lat"].as_f64()?, p["lon"].as_f64()?);
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Some(format!("off the globe: {p}"));
        }
    }
    if let Some(e) = &f.expect {
        let close = |k: &str| {
            (first[k].as_f64().unwrap_or(f64::NAN) - e[k].as_f64().unwrap_or(0.0)).abs() < 1e-4
        };
        if !close("lat")
            || !close("lon")
            || first["time"] != e["time"]
            || first["valid"] != e["valid"]
        {
            return Some(format!("decoded {first}, expected {e}"));
        }
    }
    None
}

/// Whether every frame in the input is complete and carries a good checksum, computed here
/// independently of the sessions. Frames that fail it (edited by hand in the public suites, or
/// cut short) cannot be told from line noise, so lienwatch rightly drops them: they are listed,
/// not counted. H02 has no checksum.
fn checksum_valid(f: &CorpusFrame) -> Result<(), String> {
    use lienwatch::protocol::{gt06, jt808, teltonika, WireProtocol};
    let b = &f.bytes;
    match f.wire {
        WireProtocol::Gt06 => {
            let mut at = 0;
            while at < b.len() {
                let rest = &b[at..];
                let total = match rest {
                    [0x78, 0x78, l, ..] => *l as usize + 5,
                    [0x79, 0x79, h, l, ..] => u16::from_be_bytes([*h, *l]) as usize + 6,
                    _ => return Err(format!("no start marker at byte {at}")),
                };
                let Some(frame) = rest.get(..total) else {
                    return Err(format!("length {total} runs past the {} bytes", rest.len()));
                };
                let crc_at = total - 4;
                let want = u16::from_be_bytes([frame[crc_at], frame[crc_at + 1]]);
                if frame[total - 2..] != [0x0D, 0x0A] || gt06::crc16_x25(&frame[2..crc_at]) != want
                {
                    return Err("bad CRC or stop bytes".into());
                }
                at += total;
            }
            Ok(())
        }
        WireProtocol::Jt808 => {
            for part in b.split(|&x| x == jt808::FLAG).filter(|p| !p.is_empty()) {
                let mut raw = Vec::new();
                jt808::unescape_into(part, &mut raw).map_err(|e| format!("escape: {e:?}"))?;
                let Some((&check, body)) = raw.split_last() else {
                    return Err("empty frame".into());
                };
                if jt808::checksum(body) != check {
                    return Err("check byte mismatch".into());
                }
            }
            Ok(())
        }
        WireProtocol::Teltonika => {
            if b.len() < 8 || b[..4] != [0, 0, 0, 0] {
                return Ok(()); // not an AVL packet (IMEI handshake): nothing to check
            }
            let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
            let Some(data) = b.get(8..8 + len) else {
                return Err(format!("data length {len} runs past the {} bytes", b.len()));
            };
            let Some(crc) = b.get(8 + len..12 + len) else {
                return Err("no CRC".into());
            };
            if u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]])
                != u32::from(teltonika::crc16(data))
            {
                return Err("AVL CRC mismatch".into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[test]
fn public_corpus_positions_decode() {
    let frames = corpus();
    let mut per: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut failures = Vec::new();
    let mut excluded = Vec::new();
    for f in frames
        .iter()
        .filter(|f| f.call.starts_with("verifyPosition"))
    {
        if let Err(why) = checksum_valid(f) {
            excluded.push(format!("{} line {}: {why}", f.protocol, f.line));
            continue;
        }
        let e = per.entry(f.protocol).or_default();
        e.1 += 1;
        match corpus_failure(f) {
            None => e.0 += 1,
            Some(why) => failures.push(format!("{} line {}: {why}", f.protocol, f.line)),
        }
    }
    let (ok, total) = per.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    for (p, (o, t)) in &per {
        eprintln!("{p}: {o}/{t}");
    }
    eprintln!("corpus: {ok} of {total} position-bearing frames (checksum valid) decode");
    for f in &failures {
        eprintln!("  {f}");
    }
    eprintln!("excluded, checksum not valid: {}", excluded.len());
    for f in &excluded {
        eprintln!("  {f}");
    }
    assert!(ok * 100 >= total * 95, "{ok} of {total} decode");
}

/// One real frame of every supported message type decodes to the values recorded with it and
/// gets exactly the recorded reply, through `decode`'s code path (a session without a login).
#[test]
fn public_corpus_types_decode_to_their_values_and_replies() {
    use lienwatch::protocol::{decode_all, parse_hex, replies, SessionConfig};
    let mut checked = 0;
    let mut failures = Vec::new();
    for f in corpus() {
        let Some(want) = &f.decoded else { continue };
        checked += 1;
        let lines = match lienwatch::replay::decode_bytes(f.wire, &f.bytes) {
            Ok(l) => l,
            Err((_, e)) => {
                failures.push(format!("{} line {}: {e}", f.protocol, f.line));
                continue;
            }
        };
        let got: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Err(e) = lienwatch::fixture::json_list(want, &got) {
            failures.push(format!("{} line {}: {e}", f.protocol, f.line));
        }
        if let Some(hex) = &f.reply {
            let cfg = SessionConfig {
                sessionless: true,
                default_device_id: Some(lienwatch::event::DeviceId::new("")),
                ..SessionConfig::default()
            };
            let mut session = f.wire.session(cfg);
            let (out, _) = decode_all(session.as_mut(), &f.bytes);
            let got: Vec<u8> = replies(&out).concat();
            let want = parse_hex(hex).expect("reply hex");
            if got != want {
                failures.push(format!(
                    "{} line {}: reply {} expected {}",
                    f.protocol,
                    f.line,
                    lienwatch::protocol::to_hex(&got),
                    lienwatch::protocol::to_hex(&want)
                ));
            }
        }
    }
    assert!(checked >= 60, "only {checked} frames carry values");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{checked} message types checked against their recorded values");
}
