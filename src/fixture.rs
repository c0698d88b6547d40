//! Captured protocol sessions (`protocol-fixtures/`): the format, and the protocol-level check.
//!
//! A fixture is a TOML file of steps on a virtual clock. A step may carry device bytes on a
//! connection, the exact reply expected for them, the decoded events expected, admin API calls and
//! the alerts expected by then. `protocol-fixtures/README.md` documents the format; `replay`
//! (crate::replay) runs the whole pipeline; [`check_protocol`] runs only the sessions, which is
//! what a decoder's own tests need.

use crate::event::{DeviceId, Timestamp};
use crate::protocol::{self, Output, SessionConfig, WireProtocol};
use crate::time::parse_utc_offset;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Wire protocol of the device connections (`gt06`, `jt808`, `teltonika`, `teltonika-udp`, `h02`).
    pub protocol: String,
    /// Virtual clock at the start (RFC 3339).
    pub start: Timestamp,
    /// Device clock offset for the listener (`"+08:00"`), as `[[listener]] utc_offset`.
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// Extra daemon config (TOML text merged over the defaults), e.g. a `[rules]` table.
    #[serde(default)]
    pub config: Option<String>,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Set the virtual clock to this instant before the step.
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// Advance the virtual clock by this duration before the step (`"5s"`, `"7h"`).
    #[serde(default)]
    pub after: Option<String>,
    /// Connection number (a device reconnecting uses a new number). Default 1.
    #[serde(default = "one")]
    pub connection: u32,
    /// Bytes the device sends, as hex; a list sends them as separate reads.
    #[serde(default)]
    pub device: Option<Chunks>,
    /// Close the connection after this step.
    #[serde(default)]
    pub close: bool,
    /// Exact bytes the server must send back for this step's device bytes (hex); absent with
    /// `device` present means no reply at all.
    #[serde(default)]
    pub reply: Option<String>,
    /// Decoded events expected from this step's device bytes, in order. Each object is matched
    /// against the `decode` JSON of the event: every key given must be equal (numbers to 1e-6).
    #[serde(default)]
    pub decoded: Option<Vec<Value>>,
    /// An admin API call: `"PUT /v1/vehicles/V-1"`.
    #[serde(default)]
    pub api: Option<String>,
    /// JSON body of the API call.
    #[serde(default)]
    pub body: Option<String>,
    /// Expected HTTP status of the API call.
    #[serde(default)]
    pub status: Option<u16>,
    /// Expected response body of the API call, matched like `decoded` (every key given must be
    /// equal; arrays must have the same length), e.g. a track's `positions` or a vehicle's places.
    #[serde(default)]
    pub response: Option<Value>,
    /// Alerts expected to be raised during this step (after its clock change and its input), in
    /// order; matched like `decoded`. Absent means none.
    #[serde(default)]
    pub alerts: Option<Vec<Value>>,
    /// Exact bytes lienwatch sends on this step's connection on its own during the step, after
    /// any reply: a command to the device (hex). Absent means none.
    #[serde(default)]
    pub downlink: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    /// The reply carries the server's clock (GT06 0x8A): exact only on replay's virtual clock,
    /// so runs against a live daemon check its length only.
    #[serde(default)]
    pub clock_dependent: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Chunks {
    One(String),
    Many(Vec<String>),
}

impl Chunks {
    pub fn decode(&self) -> Result<Vec<Vec<u8>>, String> {
        match self {
            Chunks::One(s) => Ok(vec![protocol::parse_hex(s)?]),
            Chunks::Many(v) => v.iter().map(|s| protocol::parse_hex(s)).collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: {msg}")]
    Load { path: String, msg: String },
}

/// The fixture files named: files as given, directories searched for `*.toml`, sorted.
pub fn find(paths: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            for e in entries {
                if e.is_dir() || e.extension().is_some_and(|x| x == "toml") {
                    walk(&e, out);
                }
            }
        } else {
            out.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

pub fn load(path: &Path) -> Result<Fixture, FixtureError> {
    let err = |msg: String| FixtureError::Load {
        path: path.display().to_string(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let f: Fixture = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    if WireProtocol::parse(&f.protocol).is_none() {
        return Err(err(format!("unknown protocol {:?}", f.protocol)));
    }
    for (i, s) in f.steps.iter().enumerate() {
        if let Some(d) = &s.device {
            d.decode()
                .map_err(|e| err(format!("step {}: device: {e}", i + 1)))?;
        }
        if let Some(r) = &s.reply {
            protocol::parse_hex(r).map_err(|e| err(format!("step {}: reply: {e}", i + 1)))?;
        }
        if let Some(r) = &s.downlink {
            protocol::parse_hex(r).map_err(|e| err(format!("step {}: downlink: {e}", i + 1)))?;
        }
        if let Some(a) = &s.after {
            parse_duration(a).map_err(|e| err(format!("step {}: after: {e}", i + 1)))?;
        }
    }
    Ok(f)
}

/// Parses `"500ms"`, `"3s"`, `"6h"`, `"2d"`, `"1h 30m"`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))
}

/// Checks `actual` against `expected`: every key in an expected object must match; arrays match
/// element-wise and must have the same length; numbers are equal to within 1e-6.
pub fn json_subset(expected: &Value, actual: &Value) -> Result<(), String> {
    fn go(e: &Value, a: &Value, path: &str) -> Result<(), String> {
        match (e, a) {
            (Value::Object(eo), Value::Object(ao)) => {
                for (k, ev) in eo {
                    let av = ao
                        .get(k)
                        .ok_or_else(|| format!("{path}.{k}: missing (actual {a})"))?;
                    go(ev, av, &format!("{path}.{k}"))?;
                }
                Ok(())
            }
            (Value::Array(ea), Value::Array(aa)) => {
                if ea.len() != aa.len() {
                    return Err(format!("{path}: expected {e}, got {a}"));
                }
                for (i, (x, y)) in ea.iter().zip(aa).enumerate() {
                    go(x, y, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                if (x - y).abs() <= 1e-6 {
                    Ok(())
                } else {
                    Err(format!("{path}: expected {x}, got {y}"))
                }
            }
            _ if e == a => Ok(()),
            _ => Err(format!("{path}: expected {e}, got {a}")),
        }
    }
    go(expected, actual, "")
}

/// Matches a list of expected objects against actual ones, in order and count.
pub fn json_list(expected: &[Value], actual: &[Value]) -> Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!(
            "expected {} item(s), got {}: {}",
            expected.len(),
            actual.len(),
            serde_json::to_string(actual).unwrap_or_default()
        ));
    }
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        json_subset(e, a).map_err(|m| format!("item {}: {m}", i + 1))?;
    }
    Ok(())
}

/// The session settings a fixture asks for.
pub fn session_config(f: &Fixture) -> Result<SessionConfig, String> {
    // A fixture's connection is a listener's connection: JT/T 808 authentication is enforced.
    let mut cfg = SessionConfig {
        require_auth: true,
        ..SessionConfig::default()
    };
    if let Some(o) = &f.utc_offset {
        cfg.utc_offset_s = Some(parse_utc_offset(o)?);
    }
    Ok(cfg)
}

/// What one step's device bytes produced at the protocol level.
#[derive(Debug, Default)]
pub struct StepOutput {
    pub events: Vec<crate::event::Event>,
    pub reply: Vec<u8>,
    pub decoded: Vec<Value>,
    pub device_ids: Vec<DeviceId>,
    pub rejected: usize,
    pub closed_by_session: bool,
}

/// Runs only the protocol sessions of a fixture and checks replies and decoded events; returns
/// one message per mismatch (empty when the fixture passes). Alerts and API steps are left to
/// `replay`.
pub fn check_protocol(f: &Fixture) -> Vec<String> {
    let mut problems = Vec::new();
    let wire = match WireProtocol::parse(&f.protocol) {
        Some(w) => w,
        None => return vec![format!("unknown protocol {:?}", f.protocol)],
    };
    let mut cfg = match session_config(f) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    // The sessions see the fixture's virtual clock.
    let clock = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(f.start.millis()));
    let c2 = clock.clone();
    cfg.clock = std::sync::Arc::new(move || {
        Timestamp::from_millis(c2.load(std::sync::atomic::Ordering::Relaxed))
    });
    let mut conns: BTreeMap<u32, (Box<dyn protocol::Session>, bytes::BytesMut)> = BTreeMap::new();
    // Commands created by API steps, numbered as a fresh store numbers them, in order: each step
    // that expects a downlink sends the oldest on its connection's session.
    let mut commands = std::collections::VecDeque::new();
    let mut next_command = 1u64;
    for (i, step) in f.steps.iter().enumerate() {
        let n = i + 1;
        if let Some(cmd) = command_of(step, wire) {
            commands.push_back((next_command, cmd));
            next_command += 1;
        }
        let mut now = Timestamp::from_millis(clock.load(std::sync::atomic::Ordering::Relaxed));
        if let Some(at) = step.at {
            now = at;
        }
        if let Some(d) = step.after.as_deref().and_then(|a| parse_duration(a).ok()) {
            now = now.add(d);
        }
        clock.store(now.millis(), std::sync::atomic::Ordering::Relaxed);
        if let Some(chunks) = &step.device {
            let (session, buf) = conns
                .entry(step.connection)
                .or_insert_with(|| (wire.session(cfg.clone()), bytes::BytesMut::new()));
            let out = run_chunks(session.as_mut(), buf, chunks);
            check_step(n, step, &out, &mut problems);
        }
        if let Some(want) = &step.downlink {
            let sent = match (commands.pop_front(), conns.get_mut(&step.connection)) {
                (Some((id, cmd)), Some((session, _))) => session
                    .encode_command(id, &cmd)
                    .map(|e| e.bytes.to_vec())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            check_downlink(n, want, &sent, &mut problems);
        }
        if step.close {
            if let Some((mut s, mut buf)) = conns.remove(&step.connection) {
                let mut out = Vec::new();
                s.finish(&mut buf, &mut out);
            }
        }
    }
    problems
}

/// The command an API step creates (`POST /v1/devices/{id}/commands`), if it is one the
/// protocol carries.
fn command_of(step: &Step, wire: WireProtocol) -> Option<protocol::downlink::Downlink> {
    let api = step.api.as_deref()?;
    let path = api.strip_prefix("POST ")?.trim().trim_matches('/');
    let device = path
        .strip_prefix("v1/devices/")?
        .strip_suffix("/commands")?;
    let body = step.body.as_deref().unwrap_or("").as_bytes();
    let c = crate::engine::commands::CreateCommand::parse(device, body).ok()?;
    protocol::downlink::carries(wire.protocol(), &c.command).then_some(c.command)
}

/// Compares the command bytes sent during a step with the ones expected.
pub fn check_downlink(n: usize, want: &str, sent: &[u8], problems: &mut Vec<String>) {
    let want = protocol::parse_hex(want).unwrap_or_default();
    if want != sent {
        problems.push(format!(
            "step {n}: downlink differs\n  expected: {}\n  actual:   {}",
            protocol::to_hex(&want),
            protocol::to_hex(sent)
        ));
    }
}

/// Feeds a step's chunks into a session and collects what came out.
pub fn run_chunks(
    session: &mut dyn protocol::Session,
    buf: &mut bytes::BytesMut,
    chunks: &Chunks,
) -> StepOutput {
    let mut so = StepOutput::default();
    let mut out = Vec::new();
    for chunk in chunks.decode().unwrap_or_default() {
        buf.extend_from_slice(&chunk);
        if session.feed(buf, &mut out).is_err() {
            so.closed_by_session = true;
            break;
        }
    }
    for o in out {
        match o {
            Output::Event(e) => {
                so.decoded.push(e.to_json());
                so.device_ids.push(e.device_id.clone());
                so.events.push(e);
            }
            Output::Reply(b) => so.reply.extend_from_slice(&b),
            Output::Rejected(_) => so.rejected += 1,
            Output::Message(_) => {}
        }
    }
    so
}

/// Compares a step's protocol output with its expectations.
pub fn check_step(n: usize, step: &Step, out: &StepOutput, problems: &mut Vec<String>) {
    let want = step
        .reply
        .as_deref()
        .map(|r| protocol::parse_hex(r).unwrap_or_default())
        .unwrap_or_default();
    if want != out.reply {
        problems.push(format!(
            "step {n}: reply differs\n  expected: {}\n  actual:   {}",
            protocol::to_hex(&want),
            protocol::to_hex(&out.reply)
        ));
    }
    if let Some(exp) = &step.decoded {
        if let Err(m) = json_list(exp, &out.decoded) {
            problems.push(format!("step {n}: decoded: {m}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        let a = json!({"type": "position", "lat": 22.5430961, "alarms": ["power_cut"], "x": 1});
        assert!(json_subset(&json!({"lat": 22.543096}), &a).is_ok());
        assert!(json_subset(&json!({"lat": 22.5431}), &a).is_err());
        assert!(json_subset(&json!({"alarms": []}), &a).is_err());
        assert!(json_subset(&json!({"missing": 1}), &a).is_err());
    }
}
