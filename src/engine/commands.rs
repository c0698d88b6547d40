//! Commands to devices (CONTRACT.md "Commands to devices"): create, read and list them, and the
//! connections' reports of what they sent. The state lives in `crate::downlink`.

use super::command::{Command, EngineError};
use super::Engine;
use crate::downlink::CommandRecord;
use crate::event::{AnswerKey, DeviceId};
use crate::protocol::downlink::{carries, text_limit, text_ok, Downlink, MAX_TEXT};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// How long a command waits for its device unless the request says otherwise.
pub const DEFAULT_EXPIRES: Duration = Duration::from_secs(24 * 3600);
/// The longest a command may wait.
pub const MAX_EXPIRES: Duration = Duration::from_secs(30 * 24 * 3600);
/// Open commands (queued or sent) a device may have; one more is a 409.
pub const MAX_OPEN_PER_DEVICE: usize = 32;

/// The body of `POST /v1/devices/{id}/commands`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// `locate`, `track` or `raw`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `track`: how often the device reports, e.g. `"10s"` (1 s to 65535 s).
    pub interval: Option<String>,
    /// `track`: for how long, e.g. `"30m"`.
    pub duration: Option<String>,
    /// `raw`: the device's own command text, printable ASCII, at most 256 bytes.
    pub text: Option<String>,
    /// How long the command waits for the device; default `"24h"`, at most `"30d"`.
    pub expires: Option<String>,
}

/// A command as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommandView {
    /// `cmd_<n>`.
    pub id: String,
    pub device_id: String,
    pub protocol: String,
    /// `locate`, `track` or `raw`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `queued`, `sent`, `answered`, `failed` or `expired`.
    pub state: &'static str,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// When it was last written to the device.
    pub sent_at: Option<Timestamp>,
    pub answered_at: Option<Timestamp>,
    /// The device's answer text (GT06 0x15/0x21, Teltonika Codec 12, the JT/T 808 result).
    pub answer: Option<String>,
    /// The fix the device answered with (JT/T 808 0x0201, a GT06 `WHERE#` answer).
    #[schema(value_type = Option<super::view::PositionDoc>)]
    pub position: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// `track`: seconds between reports and for how long.
    pub interval_s: Option<u16>,
    pub duration_s: Option<u32>,
    /// `raw`: the text sent.
    pub text: Option<String>,
}

impl From<&CommandRecord> for CommandView {
    fn from(r: &CommandRecord) -> Self {
        let (interval_s, duration_s, text) = match &r.command {
            Downlink::Locate => (None, None, None),
            Downlink::Track {
                interval_s,
                duration_s,
            } => (Some(*interval_s), Some(*duration_s), None),
            Downlink::Raw(t) => (None, None, Some(t.clone())),
        };
        CommandView {
            id: r.api_id(),
            device_id: r.device_id.to_string(),
            protocol: r.protocol.as_str().to_string(),
            kind: r.command.kind(),
            state: r.state.as_str(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            sent_at: r.sent_at,
            answered_at: r.answered_at,
            answer: r.answer.clone(),
            position: r.position.as_ref().map(|p| p.to_json()),
            error: r.error.clone(),
            interval_s,
            duration_s,
            text,
        }
    }
}

/// `{"commands": [...]}`, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommandList {
    pub commands: Vec<CommandView>,
}

fn device_id(id: &str) -> Result<DeviceId, EngineError> {
    if !DeviceId::is_valid(id) {
        return Err(EngineError::Invalid(
            "a device id is a string of decimal digits".into(),
        ));
    }
    Ok(DeviceId::new(id))
}

fn duration(field: &str, s: &str) -> Result<Duration, EngineError> {
    crate::duration::parse(s).map_err(|e| EngineError::Invalid(format!("{field}: {e}")))
}

/// `POST /v1/devices/{id}/commands`.
pub struct CreateCommand {
    pub device: DeviceId,
    pub command: Downlink,
    pub expires: Duration,
}

impl CreateCommand {
    /// Parses and validates a request body (off the engine thread).
    pub fn parse(device: &str, body: &[u8]) -> Result<CreateCommand, EngineError> {
        let device = device_id(device)?;
        let b: CommandBody = serde_json::from_slice(body)
            .map_err(|e| EngineError::Invalid(format!("bad command body: {e}")))?;
        let need = |field: &str, v: &Option<String>| -> Result<String, EngineError> {
            v.clone().ok_or_else(|| {
                EngineError::Invalid(format!("a {} command needs \"{field}\"", b.kind))
            })
        };
        let command = match b.kind.as_str() {
            "locate" => Downlink::Locate,
            "track" => {
                let interval = duration("interval", &need("interval", &b.interval)?)?;
                let total = duration("duration", &need("duration", &b.duration)?)?;
                // The wire carries whole seconds: a fraction is refused, not cut.
                for (field, d) in [("interval", interval), ("duration", total)] {
                    if d.subsec_nanos() != 0 {
                        return Err(EngineError::Invalid(format!(
                            "{field}: whole seconds (the device is told seconds)"
                        )));
                    }
                }
                let interval_s = u16::try_from(interval.as_secs())
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or_else(|| EngineError::Invalid("interval: 1 s to 65535 s".into()))?;
                let duration_s = u32::try_from(total.as_secs())
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or_else(|| EngineError::Invalid("duration: 1 s to 4294967295 s".into()))?;
                Downlink::Track {
                    interval_s,
                    duration_s,
                }
            }
            "raw" => {
                let text = need("text", &b.text)?;
                if !text_ok(&text) {
                    return Err(EngineError::Invalid(format!(
                        "text: 1 to {MAX_TEXT} bytes of printable ASCII"
                    )));
                }
                Downlink::Raw(text)
            }
            other => {
                return Err(EngineError::Invalid(format!(
                    "unknown command type {other:?} (locate, track or raw)"
                )))
            }
        };
        let unexpected = match command {
            Downlink::Track { .. } => b.text.is_some(),
            Downlink::Raw(_) => b.interval.is_some() || b.duration.is_some(),
            Downlink::Locate => b.text.is_some() || b.interval.is_some() || b.duration.is_some(),
        };
        if unexpected {
            return Err(EngineError::Invalid(format!(
                "a {} command takes no other fields",
                b.kind
            )));
        }
        let expires = match &b.expires {
            Some(s) => duration("expires", s)?,
            None => DEFAULT_EXPIRES,
        };
        if expires.is_zero() || expires > MAX_EXPIRES {
            return Err(EngineError::Invalid(
                "expires: more than 0 and at most 30d".into(),
            ));
        }
        Ok(CreateCommand {
            device,
            command,
            expires,
        })
    }
}

impl Command for CreateCommand {
    type Output = CommandView;
    /// A command record is far below the size sled keeps in a blob file: the answer need not
    /// wait for their sync, whose failure would report a 5xx for a command that still goes out.
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<CommandView, EngineError> {
        let protocol = e
            .devices
            .get(&self.device)
            .map(|r| r.protocol)
            .ok_or_else(|| {
                EngineError::NotFound("device never seen: its protocol is unknown".into())
            })?;
        if !carries(protocol, &self.command) {
            return Err(EngineError::Unsupported(format!(
                "a {} device cannot carry a {} command",
                protocol,
                self.command.kind()
            )));
        }
        if let Downlink::Raw(text) = &self.command {
            let limit = text_limit(protocol);
            if text.len() > limit {
                return Err(EngineError::Unsupported(format!(
                    "a {protocol} command's text holds at most {limit} bytes, not {}",
                    text.len()
                )));
            }
        }
        // A button pressed again and again, or a script in a loop, for a tracker that is off:
        // each would wait in memory and on disk, and go out on the next login.
        if e.commands.open_for(&self.device) >= MAX_OPEN_PER_DEVICE {
            return Err(EngineError::Conflict(format!(
                "device {} has {MAX_OPEN_PER_DEVICE} open commands: wait for them to be \
                 answered or to expire",
                self.device
            )));
        }
        let rec = e.commands.create(
            &e.store,
            self.device,
            protocol,
            self.command,
            now.add(self.expires),
            now,
        )?;
        Ok(CommandView::from(&rec))
    }
}

/// `GET /v1/commands/{id}`.
pub struct GetCommand {
    pub id: u64,
}

impl GetCommand {
    pub fn parse(id: &str) -> Result<GetCommand, EngineError> {
        CommandRecord::parse_api_id(id)
            .map(|id| GetCommand { id })
            .ok_or_else(|| EngineError::NotFound(format!("no command {id:?}")))
    }
}

impl Command for GetCommand {
    type Output = CommandView;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<CommandView, EngineError> {
        e.commands
            .get(&e.store, self.id)?
            .map(|r| CommandView::from(&r))
            .ok_or_else(|| EngineError::NotFound(format!("no command cmd_{}", self.id)))
    }
}

/// `DELETE /v1/commands/{id}`: an operator withdraws a command that is still `queued` or
/// `sent`; it becomes `failed` ("cancelled") and is never sent again.
pub struct CancelCommand {
    pub id: u64,
}

impl CancelCommand {
    pub fn parse(id: &str) -> Result<CancelCommand, EngineError> {
        GetCommand::parse(id).map(|g| CancelCommand { id: g.id })
    }
}

impl Command for CancelCommand {
    type Output = CommandView;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<CommandView, EngineError> {
        if let Some(rec) = e
            .commands
            .cancel(&e.store, self.id, "cancelled by the operator", now)
        {
            tracing::info!(command = %rec.api_id(), device = %rec.device_id, "command cancelled");
            return Ok(CommandView::from(&rec));
        }
        match e.commands.get(&e.store, self.id)? {
            Some(r) => Err(EngineError::Conflict(format!(
                "command cmd_{} is already {}: only a queued or sent command can be cancelled",
                self.id,
                r.state.as_str()
            ))),
            None => Err(EngineError::NotFound(format!("no command cmd_{}", self.id))),
        }
    }
}

/// `GET /v1/devices/{id}/commands`: newest first.
pub struct ListDeviceCommands {
    pub device: DeviceId,
    pub limit: usize,
}

impl ListDeviceCommands {
    pub fn parse(device: &str, limit: Option<usize>) -> Result<Self, EngineError> {
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(EngineError::Invalid("limit: 1 to 1000".into()));
        }
        Ok(ListDeviceCommands {
            device: device_id(device)?,
            limit,
        })
    }
}

impl Command for ListDeviceCommands {
    type Output = CommandList;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<CommandList, EngineError> {
        if !e.devices.contains_key(&self.device) {
            return Err(EngineError::NotFound("device never seen".into()));
        }
        let commands = e
            .store
            .device_commands(&self.device, self.limit)?
            .iter()
            .map(CommandView::from)
            .collect();
        Ok(CommandList { commands })
    }
}

/// A connection wrote a command to its device.
pub struct CommandSent {
    pub id: u64,
    pub key: AnswerKey,
    /// When the connection wrote it. The engine may take this notice after the device's answer
    /// was read (and stamped), so its own clock would make the answer come before the command.
    pub at: Timestamp,
}

impl Command for CommandSent {
    type Output = ();

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<(), EngineError> {
        // Not after the engine's clock: a notice written before a step back arrives after it.
        e.commands
            .sent(&e.store, self.id, self.key, self.at.min(now));
        Ok(())
    }
}

/// A connection's session cannot express a command: it fails.
pub struct CommandRefused {
    pub id: u64,
    pub reason: String,
}

impl Command for CommandRefused {
    type Output = ();

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<(), EngineError> {
        e.commands.refused(&e.store, self.id, &self.reason, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::engine_at;
    use crate::event::{CommandAnswer, Event, EventKind, Position, Protocol};

    /// The wire carries whole seconds: a fraction is refused with the field, not cut. A
    /// command id is only the spelling the API gives it.
    #[test]
    fn track_takes_whole_seconds_and_ids_have_one_spelling() {
        let track = |i: &str, d: &str| {
            let body = format!(r#"{{"type": "track", "interval": "{i}", "duration": "{d}"}}"#);
            CreateCommand::parse("868120145233604", body.as_bytes())
        };
        assert!(matches!(
            track("1500ms", "30m"),
            Err(EngineError::Invalid(m)) if m.starts_with("interval: whole seconds")
        ));
        assert!(matches!(
            track("10s", "90500ms"),
            Err(EngineError::Invalid(m)) if m.starts_with("duration: whole seconds")
        ));
        let ok = track("2000ms", "30m").unwrap();
        assert!(matches!(
            ok.command,
            Downlink::Track {
                interval_s: 2,
                duration_s: 1800
            }
        ));
        assert_eq!(GetCommand::parse("cmd_7").unwrap().id, 7);
        for bad in ["cmd_+7", "cmd_007", "cmd_", "cmd_-1", "7", "cmd_7 "] {
            assert!(GetCommand::parse(bad).is_err(), "{bad}");
        }
        assert!(CancelCommand::parse("cmd_007").is_err());
    }

    /// A device that is off does not collect commands without end: the 33rd open one is a
    /// conflict, and one closed (here expired) makes room again.
    #[test]
    fn a_device_holds_at_most_so_many_open_commands() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let dev = "868120145233604";
        let login = Event {
            device_id: DeviceId::new(dev),
            protocol: Protocol::Gt06,
            kind: EventKind::Login,
        };
        e.ingest(&[login], t0);
        let locate = |e: &mut Engine, expires: &str, now: Timestamp| {
            let body = format!(r#"{{"type": "locate", "expires": "{expires}"}}"#);
            CreateCommand::parse(dev, body.as_bytes()).and_then(|c| c.apply(e, now))
        };
        assert!(locate(&mut e, "1h", t0).is_ok());
        for _ in 1..MAX_OPEN_PER_DEVICE {
            locate(&mut e, "24h", t0).unwrap();
        }
        let full = locate(&mut e, "24h", t0);
        assert!(
            matches!(full, Err(EngineError::Conflict(_))),
            "{:?}",
            full.err()
        );
        let later = t0.add_millis(3_600_000);
        e.tick(later);
        assert!(locate(&mut e, "24h", later).is_ok());
    }

    /// The engine moves open commands with a step of the host clock: after a year's correction
    /// back, a command expires a day after it was made, as the daemon watched it.
    #[test]
    fn a_step_back_of_the_clock_leaves_a_command_its_day() {
        let (hour, year) = (3_600_000, 365 * 24 * 3_600_000);
        let ahead = Timestamp::from_secs(1_826_841_600);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), ahead);
        let dev = "868120145233604";
        let login = Event {
            device_id: DeviceId::new(dev),
            protocol: Protocol::Gt06,
            kind: EventKind::Login,
        };
        e.ingest(&[login], ahead);
        let v = CreateCommand::parse(dev, br#"{"type": "raw", "text": "RELAY,1#"}"#)
            .and_then(|c| c.apply(&mut e, ahead))
            .unwrap();
        let id = CommandRecord::parse_api_id(&v.id).unwrap();
        let t1 = ahead.add_millis(hour - year);
        e.clock_stepped(t1, -year);
        let state = |e: &mut Engine| GetCommand { id }.apply(e, t1).unwrap().state;
        e.tick(t1.add_millis(23 * hour - 1));
        assert_eq!(state(&mut e), "queued");
        e.tick(t1.add_millis(23 * hour));
        assert_eq!(state(&mut e), "expired");
    }

    /// A locate answer whose fix is dated beyond `ingest.max_future` closes its command with
    /// the answer's text, without the fix; one of the present keeps its fix.
    #[test]
    fn an_answer_dated_in_the_future_keeps_its_text_not_its_position() {
        let t0 = Timestamp::from_secs(1_700_000_000);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        let dev = "868120145233604";
        let ev = |kind| Event {
            device_id: DeviceId::new(dev),
            protocol: Protocol::Gt06,
            kind,
        };
        e.ingest(&[ev(EventKind::Login)], t0);
        for (hours_ahead, flag) in [(24, 7), (0, 8)] {
            let v = CreateCommand::parse(dev, br#"{"type": "locate"}"#)
                .and_then(|c| c.apply(&mut e, t0))
                .unwrap();
            let id = CommandRecord::parse_api_id(&v.id).unwrap();
            let key = AnswerKey::ServerFlag(flag);
            CommandSent { id, key, at: t0 }.apply(&mut e, t0).unwrap();
            let answer = CommandAnswer {
                key,
                ok: true,
                text: Some("Lat:N22.500000,Lon:E114.000000".into()),
                position: Some(Position {
                    time: t0.add_millis(hours_ahead * 3_600_000),
                    lat: 22.5,
                    lon: 114.0,
                    valid: true,
                    ..Default::default()
                }),
            };
            e.ingest(&[ev(EventKind::CommandAnswer(answer))], t0.add_millis(1000));
            let v = GetCommand { id }.apply(&mut e, t0).unwrap();
            assert_eq!(v.state, "answered", "{v:?}");
            assert_eq!(v.answer.as_deref(), Some("Lat:N22.500000,Lon:E114.000000"));
            assert_eq!(v.position.is_some(), hours_ahead == 0, "{v:?}");
        }
    }
}
