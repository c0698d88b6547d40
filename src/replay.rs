//! `lienwatch replay` and `lienwatch decode`: captured bytes through the daemon's own code.
//!
//! Replay runs each fixture (`crate::fixture`) through the same sessions, engine, rules and
//! store as the daemon, in a throwaway database, on a virtual clock: hours of silence pass in
//! milliseconds. It prints every alert as a JSON line and reports every difference between what a
//! fixture expects (replies, decoded events, API statuses, alerts) and what lienwatch produced.

use crate::config::Config;
use crate::downlink::{LinkGuard, Links, Mailbox};
use crate::engine::commands::{
    CommandRefused, CommandSent, CreateCommand, GetCommand, ListDeviceCommands,
};
use crate::engine::devices::GetDevice;
use crate::engine::loans::SetLoan;
use crate::engine::places::PlacesInputs;
use crate::engine::registrations::ResetRegistration;
use crate::engine::vehicles::{DeleteVehicle, GetVehicle, PutVehicle};
use crate::engine::zones::{DeleteZone, GetZone, ImportZones, PutZone};
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::event::Timestamp;
use crate::fixture::{self, Fixture};
use crate::history::track::TrackQuery;
use crate::protocol::downlink::EncodeError;
use crate::protocol::{self, Output, SessionConfig, WireProtocol};
use crate::store::Store;
use bytes::BytesMut;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Fixture(#[from] fixture::FixtureError),
    #[error("{0}")]
    Setup(String),
    /// The store or the engine failed under the replay: no fault of the fixture.
    #[error("{0}")]
    Runtime(String),
}

impl ReplayError {
    /// What the command exits with (CONTRACT.md "CLI": 1 runtime failure, 2 bad usage or
    /// config).
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::Runtime(_) => 1,
            ReplayError::Fixture(_) | ReplayError::Setup(_) => 2,
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub fixtures: usize,
    pub failures: usize,
}

/// Replays fixture files (directories are searched for `*.toml`), printing alerts to `out` and
/// problems to stderr.
pub fn run_files(
    cfg: &Config,
    paths: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Report, ReplayError> {
    let files = fixture::find(paths);
    if files.is_empty() {
        // A gate pointed at the wrong folder must not pass on nothing.
        return Err(ReplayError::Setup(format!(
            "no fixture (*.toml) found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut report = Report::default();
    // A fixture that cannot be read or set up is told and skipped, so that the others still
    // run; the command then exits as for bad input.
    let mut unreadable = 0;
    for f in files {
        let fx = match fixture::load(&f) {
            Ok(fx) => fx,
            Err(e) => {
                unreadable += 1;
                eprintln!("BAD  {}: {e}", f.display());
                continue;
            }
        };
        let problems = match run_fixture(cfg, &fx, out) {
            Ok(p) => p,
            Err(e @ ReplayError::Runtime(_)) => return Err(e),
            Err(e) => {
                unreadable += 1;
                eprintln!("BAD  {} ({}): {e}", f.display(), fx.name);
                continue;
            }
        };
        report.fixtures += 1;
        if !problems.is_empty() {
            report.failures += 1;
            eprintln!("FAIL {} ({})", f.display(), fx.name);
            for p in problems {
                eprintln!("  {p}");
            }
        } else {
            eprintln!("ok   {} ({})", f.display(), fx.name);
        }
    }
    if unreadable > 0 {
        return Err(ReplayError::Setup(format!(
            "{unreadable} fixture(s) could not be read or set up (BAD above); {} of {} that ran failed",
            report.failures, report.fixtures
        )));
    }
    Ok(report)
}

/// Runs one fixture; returns the list of mismatches (empty: it passed).
pub fn run_fixture(
    base: &Config,
    fx: &Fixture,
    out: &mut dyn Write,
) -> Result<Vec<String>, ReplayError> {
    let cfg = match &fx.config {
        None => base.clone(),
        Some(extra) => base
            .with_overrides(extra, &format!("fixture {:?} config", fx.name))
            .map_err(|e| ReplayError::Setup(e.to_string()))?,
    };
    let wire = WireProtocol::parse(&fx.protocol)
        .ok_or_else(|| ReplayError::Setup(format!("unknown protocol {:?}", fx.protocol)))?;
    let clock = Arc::new(AtomicI64::new(fx.start.millis()));
    let now = || Timestamp::from_millis(clock.load(Ordering::Relaxed));
    let store = Store::temporary().map_err(|e| ReplayError::Runtime(e.to_string()))?;
    // Replay raises alerts but delivers none: no webhooks.
    let ecfg = EngineConfig {
        commit_window: std::time::Duration::ZERO,
        ..EngineConfig::from_config(&cfg, Vec::new())
    };
    let c1 = clock.clone();
    let engine_clock: crate::time::Clock =
        Arc::new(move || Timestamp::from_millis(c1.load(Ordering::Relaxed)));
    let outbox = store
        .open_outbox(&[], engine_clock)
        .map_err(|e| ReplayError::Runtime(e.to_string()))?;
    let mut engine = Engine::open(store, outbox, ecfg, now())
        .map_err(|e| ReplayError::Runtime(e.to_string()))?;
    let mut scfg = fixture::session_config(fx).map_err(ReplayError::Setup)?;
    // As a connection to the config's listener of this protocol: its frame limit, key, device
    // clock offset and GT06 locate text, as the daemon would use them.
    let listener = cfg.listeners.iter().find(|l| l.protocol == wire).cloned();
    scfg.max_frame = cfg.ingest.max_frame;
    if let Some(k) = &cfg.ingest.jt808_auth_key {
        scfg.auth_key = Arc::from(k.as_bytes());
    }
    if fx.utc_offset.is_none() {
        scfg.utc_offset_s = listener.as_ref().and_then(|l| l.utc_offset_s);
    }
    scfg.admit = engine.admission();
    scfg.bind_terminal = engine.terminal_binding();
    let c2 = clock.clone();
    scfg.clock = Arc::new(move || Timestamp::from_millis(c2.load(Ordering::Relaxed)));

    let mut problems = Vec::new();
    let mut conns: BTreeMap<u32, Conn> = BTreeMap::new();
    let links = engine.command_links();
    for (i, step) in fx.steps.iter().enumerate() {
        let n = i + 1;
        let mut t = now();
        if let Some(at) = step.at {
            t = at;
        }
        if let Some(d) = step.after.as_deref() {
            t = t.add(fixture::parse_duration(d).map_err(ReplayError::Setup)?);
        }
        clock.store(t.millis(), Ordering::Relaxed);
        engine.tick(t);

        if let Some(api) = &step.api {
            let (status, body) = call_api(&mut engine, api, step.body.as_deref().unwrap_or(""), t);
            if let Some(want) = step.status {
                if want != status {
                    problems.push(format!(
                        "step {n}: {api}: expected status {want}, got {status}: {body}"
                    ));
                }
            } else if status >= 400 {
                problems.push(format!("step {n}: {api}: status {status}: {body}"));
            }
            if let Some(want) = &step.response {
                if let Err(m) = fixture::json_subset(want, &body) {
                    problems.push(format!("step {n}: {api}: response: {m}"));
                }
            }
        }
        if let Some(chunks) = &step.device {
            let conn = conns
                .entry(step.connection)
                .or_insert_with(|| Conn::new(wire.session(scfg.clone())));
            let so = fixture::run_chunks(conn.session.as_mut(), &mut conn.buf, chunks);
            fixture::check_step(n, step, &so, &mut problems);
            conn.link(&links);
            engine.ingest(&so.events, t);
        }
        if step.close {
            if let Some(mut c) = conns.remove(&step.connection) {
                let mut o = Vec::new();
                c.session.finish(&mut c.buf, &mut o);
                ingest_outputs(&mut engine, o, t);
            }
        }
        // As the daemon's commit does after applying what arrived: deadlines the step's input
        // made due at once (a word from a vehicle whose `long_stay` threshold passed unheard).
        engine.tick(t);
        if let Err(e) = engine.flush() {
            problems.push(format!("step {n}: store: {e}"));
        }
        // The daemon's places worker, in line: long_stay's usual_place at this step's time.
        for check in engine.take_long_stay_checks() {
            let answer = check.run(engine.history());
            if let Err(e) = engine.execute(answer, t) {
                problems.push(format!("step {n}: long_stay: {e}"));
            }
        }
        // As after a daemon's commit: due commands go to their connections.
        engine.dispatch_commands(t, std::time::Instant::now());
        for (&k, conn) in conns.iter_mut() {
            let sent = conn.send_commands(&mut engine, listener.as_ref(), t);
            if k == step.connection {
                fixture::check_downlink(
                    n,
                    step.downlink.as_deref().unwrap_or(""),
                    &sent,
                    &mut problems,
                );
            } else if !sent.is_empty() {
                problems.push(format!(
                    "step {n}: unexpected downlink on connection {k}: {}",
                    protocol::to_hex(&sent)
                ));
            }
        }
        if step.downlink.is_some() && !conns.contains_key(&step.connection) {
            problems.push(format!(
                "step {n}: downlink expected on a closed connection"
            ));
        }
        let alerts = engine.take_alerts();
        let alert_json: Vec<serde_json::Value> = alerts
            .iter()
            .map(|a| serde_json::to_value(a).unwrap_or_default())
            .collect();
        for a in &alert_json {
            let _ = writeln!(out, "{a}");
        }
        let expected = step.alerts.as_deref().unwrap_or(&[]);
        if let Err(m) = fixture::json_list(expected, &alert_json) {
            problems.push(format!("step {n}: alerts: {m}"));
        }
    }
    Ok(problems)
}

/// A device connection of a fixture, with its link for commands as a TCP connection has one.
struct Conn {
    session: Box<dyn protocol::Session>,
    buf: BytesMut,
    mailbox: Arc<Mailbox>,
    link: Option<LinkGuard>,
}

impl Conn {
    fn new(session: Box<dyn protocol::Session>) -> Self {
        Conn {
            session,
            buf: BytesMut::new(),
            mailbox: Mailbox::new(),
            link: None,
        }
    }

    /// Registers for the session's device once it is known (before its events are applied).
    fn link(&mut self, links: &Arc<Links>) {
        if let Some(id) = self.session.commands_to() {
            if self.link.as_ref().map(LinkGuard::device) != Some(id) {
                self.link = Some(links.register(id.clone(), self.mailbox.clone()));
            }
        }
    }

    /// Encodes the commands handed to this connection, as `ingest::tcp` does; their bytes.
    fn send_commands(
        &mut self,
        engine: &mut Engine,
        listener: Option<&crate::config::Listener>,
        t: Timestamp,
    ) -> Vec<u8> {
        let mut sent = Vec::new();
        for d in self.mailbox.take() {
            if self.session.commands_to() != Some(&d.device_id) {
                continue;
            }
            let command = match listener {
                Some(l) => l.localise(d.command),
                None => d.command,
            };
            let _ = match self.session.encode_command(d.id, &command) {
                Ok(enc) => {
                    sent.extend_from_slice(&enc.bytes);
                    engine.execute(
                        CommandSent {
                            id: d.id,
                            key: enc.key,
                            at: t,
                        },
                        t,
                    )
                }
                Err(EncodeError::NotReady) => Ok(()),
                Err(EncodeError::Unsupported(reason)) => engine.execute(
                    CommandRefused {
                        id: d.id,
                        reason: reason.to_string(),
                    },
                    t,
                ),
            };
        }
        sent
    }
}

fn ingest_outputs(engine: &mut Engine, outs: Vec<Output>, t: Timestamp) {
    let events: Vec<_> = outs
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    engine.ingest(&events, t);
}

/// Parses a fixture's `"PUT /v1/vehicles/V-1"` into the engine command the admin API would send,
/// applies it, and answers with the status and body the API would give.
fn call_api(engine: &mut Engine, api: &str, body: &str, now: Timestamp) -> (u16, Value) {
    let (method, target) = api.split_once(' ').unwrap_or((api, ""));
    let (path, query) = target.trim().split_once('?').unwrap_or((target.trim(), ""));
    let param = |name: &str| query_param(query, name);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = body.as_bytes();
    let answer: Result<(u16, Value), EngineError> = match (method, parts.as_slice()) {
        ("GET", ["v1", "vehicles", id]) => engine
            .execute(GetVehicle { id: id.to_string() }, now)
            .map(|v| (200, json(&v))),
        ("PUT", ["v1", "vehicles", id]) => PutVehicle::from_json(id, body)
            .and_then(|c| engine.execute(c, now))
            .map(|o| (if o.created { 201 } else { 200 }, json(&o.view))),
        ("DELETE", ["v1", "vehicles", id]) => engine
            .execute(DeleteVehicle { id: id.to_string() }, now)
            .map(|v| (200, json(&v))),
        ("PUT", ["v1", "loans", id]) => SetLoan::from_json(id, body)
            .and_then(|c| engine.execute(c, now))
            .map(|v| (200, json(&v))),
        ("GET", ["v1", "devices", id]) => GetDevice::parse(id)
            .and_then(|c| engine.execute(c, now))
            .map(|v| (200, json(&v))),
        ("GET", ["v1", "devices", id, "track"]) => TrackQuery::parse(
            id,
            param("from").as_deref(),
            param("to").as_deref(),
            param("limit").as_deref(),
            param("format").as_deref(),
            now,
        )
        .and_then(|q| {
            engine.execute(
                GetDevice {
                    id: q.device.clone(),
                },
                now,
            )?;
            let fixes =
                crate::history::track::read(engine.history(), &q, engine.history_retention(), now)
                    .map_err(|e| EngineError::Store(e.to_string()))?;
            let (bytes, _) = crate::history::track::render(&q, &fixes);
            Ok((200, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
        }),
        ("GET", ["v1", "vehicles", id, "places"]) => {
            PlacesInputs::parse(id, param("days").as_deref())
                .and_then(|c| engine.execute(c, now))
                .and_then(|job| {
                    crate::history::places::run(engine.history(), &job, now)
                        .map(|r| (200, json(&r)))
                        .map_err(|e| EngineError::Store(e.to_string()))
                })
        }
        ("POST", ["v1", "devices", id, "commands"]) => CreateCommand::parse(id, body)
            .and_then(|c| engine.execute(c, now))
            .map(|v| (202, json(&v))),
        ("GET", ["v1", "devices", id, "commands"]) => ListDeviceCommands::parse(id, None)
            .and_then(|c| engine.execute(c, now))
            .map(|v| (200, json(&v))),
        ("GET", ["v1", "commands", id]) => GetCommand::parse(id)
            .and_then(|c| engine.execute(c, now))
            .map(|v| (200, json(&v))),
        ("DELETE", ["v1", "devices", id, "registration"]) => GetDevice::parse(id)
            .and_then(|c| engine.execute(ResetRegistration { id: c.id }, now))
            .map(|v| (200, json(&v))),
        ("PUT", ["v1", "zones", id]) => PutZone::from_json(id, body)
            .and_then(|c| engine.execute(c, now))
            .map(|o| (if o.created { 201 } else { 200 }, json(&o.view))),
        ("GET", ["v1", "zones", id]) => engine
            .execute(GetZone { id: id.to_string() }, now)
            .map(|v| (200, json(&v))),
        ("DELETE", ["v1", "zones", id]) => engine
            .execute(DeleteZone { id: id.to_string() }, now)
            .map(|v| (200, json(&v))),
        ("POST", ["v1", "zones"]) => ImportZones::from_json(body)
            .and_then(|c| engine.execute(c, now))
            .map(|v| (200, json(&v))),
        _ => {
            return (
                404,
                serde_json::json!({"error": format!("replay does not support {api:?}")}),
            )
        }
    };
    answer.unwrap_or_else(|e| {
        (
            crate::admin::status_of(&e).as_u16(),
            serde_json::json!({"error": e.to_string()}),
        )
    })
}

/// A query parameter, with the percent-escapes a time carries (`%3A`, `%2B`) decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            v.replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2B", "+")
                .replace("%2b", "+")
        })
    })
}

fn json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `lienwatch decode`: every message in `bytes` as a JSON line. On bad input, the lines decoded
/// so far and a message.
pub fn decode_bytes(
    wire: WireProtocol,
    bytes: &[u8],
) -> Result<Vec<String>, (Vec<String>, String)> {
    // No session: frames decode without their login or handshake; an id the bytes do not carry
    // stays empty and is left out of the output.
    let cfg = SessionConfig {
        sessionless: true,
        verbatim: true,
        default_device_id: Some(crate::event::DeviceId::new("")),
        ..SessionConfig::default()
    };
    let mut session = wire.session(cfg);
    let (outs, err) = protocol::decode_all(session.as_mut(), bytes);
    let mut lines = Vec::new();
    let mut rejected = Vec::new();
    for o in outs {
        match o {
            Output::Event(e) => lines.push(e.to_json().to_string()),
            Output::Reply(_) => {}
            Output::Message(kind) => lines.push(serde_json::json!({ "type": kind }).to_string()),
            Output::Rejected(r) => rejected.push(format!("{} ({} bytes)", r.reason, r.bytes)),
        }
    }
    if let Some(e) = err {
        return Err((lines, e.to_string()));
    }
    if !rejected.is_empty() {
        return Err((lines, format!("rejected input: {}", rejected.join("; "))));
    }
    if lines.is_empty() {
        return Err((lines, "no complete message in the input".into()));
    }
    Ok(lines)
}
