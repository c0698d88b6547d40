//! MQTT source: at-least-once ingestion through a broker.
//!
//! MQTT v5 (rumqttc `v5`), because two settings lienwatch needs are protocol features there and
//! only broker configuration in 3.1.1: the session expiry (`mqtt.session_expiry`: how long the
//! broker keeps our subscriptions and queue while we are away) and the receive maximum
//! (`mqtt.max_inflight`: the broker never has more unacknowledged messages out to us than that,
//! whatever its own `max_inflight_messages`). `clean_start = false` with a stable client id makes
//! the session persistent; acks are manual.
//!
//! Two tasks:
//! - the **poll task** drives rumqttc's event loop and never awaits anything else that could block
//!   (the request-channel deadlock), handing each publish to the pipeline in arrival order;
//! - the **pipeline** decodes, commits batches to the engine (several commits may be in flight;
//!   the engine groups them), and PUBACKs each message only after the commit covering it returned
//!   Ok, in arrival order (MQTT-4.6.0-2). A malformed payload is acked in its turn, counted and
//!   dropped, so it is never redelivered forever. A failed commit acks nothing more from that
//!   connection and forces a reconnect, after which the broker redelivers (MQTT-4.4.0-1); the
//!   store keeps the newest fix, so the duplicates are harmless.
//!
//! Every connection gets a fresh `EventLoop` and client: an ack still queued for a connection that
//! dropped goes to a dead channel instead of reaching the next connection, where its packet id
//! might by then name a different, uncommitted message.

use crate::config::MqttConfig;
use crate::engine::EngineHandle;
use crate::event::{DeviceId, Event, Timestamp};
use crate::protocol::json::{self, PayloadError};
use crate::protocol::{Output, SessionConfig, WireProtocol};
use futures_util::stream::{FuturesOrdered, StreamExt};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, Publish, RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop, MqttOptions};
use rumqttc::{Outgoing, Transport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Commits the pipeline keeps in flight at once; the engine merges them into its group commit.
const PIPELINED_COMMITS: usize = 4;
/// Most messages decoded into one commit. The receive maximum normally keeps batches far
/// smaller; the cap only bounds a commit when a broker sends more than it should.
const MAX_BATCH: usize = 1024;
/// How long shutdown waits for in-flight commits to be acked before disconnecting anyway.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(4);

/// Why the MQTT source could not start (configuration the validator cannot check by itself).
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.url {0:?}: expected mqtt://host:port or mqtts://host:port")]
    Url(String),
    #[error("mqtt.ca_file {path}: {msg}")]
    CaFile { path: String, msg: String },
    #[error("mqtt.url is mqtts:// but no mqtt.ca_file is set and no system CA bundle was found")]
    NoRoots,
    #[error("mqtt.password_file: {0}")]
    Password(String),
    #[error("mqtt.subscription[{index}].format {format:?} is not supported")]
    Format { index: usize, format: String },
}

/// What a subscription's payloads are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    OwnTracks,
    /// Raw device frames, one fresh sessionless decoder per message.
    Raw(WireProtocol),
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "json" => Format::Json,
            "owntracks" => Format::OwnTracks,
            "gt06" => Format::Raw(WireProtocol::Gt06),
            "jt808" => Format::Raw(WireProtocol::Jt808),
            "teltonika" => Format::Raw(WireProtocol::Teltonika),
            _ => return None,
        })
    }
}

/// A configured subscription: the filter sent to the broker and where the device id sits.
#[derive(Clone, Debug)]
pub struct Route {
    /// The topic filter with `{device_id}` replaced by `+`.
    pub filter: String,
    /// Index of the `{device_id}` level, if the configured topic has one.
    pub device_level: Option<usize>,
    pub format: Format,
}

impl Route {
    pub fn new(topic: &str, format: Format) -> Route {
        let mut device_level = None;
        let levels: Vec<&str> = topic
            .split('/')
            .enumerate()
            .map(|(i, l)| {
                if l == "{device_id}" {
                    device_level.get_or_insert(i);
                    "+"
                } else {
                    l
                }
            })
            .collect();
        Route {
            filter: levels.join("/"),
            device_level,
            format,
        }
    }

    /// `Some(device level value)` when `topic` matches this route's filter.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Option<&'t str>> {
        if !filter_matches(&self.filter, topic) {
            return None;
        }
        Some(self.device_level.and_then(|i| topic.split('/').nth(i)))
    }
}

/// MQTT topic filter matching (`+` one level, `#` the rest; `$` topics only match explicitly).
/// Shared subscriptions (`$share/<group>/<filter>`) match on the filter part.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, f)) => f,
            None => return false,
        },
        None => filter,
    };
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What happened to one message, for `lienwatch_mqtt_messages_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Events committed (and the message acked).
    Stored,
    /// Valid but nothing to store (an OwnTracks `lwt`, an empty array, a frame without a fix).
    Ignored,
    /// Rejected by the decoder; acked so the broker does not redeliver it forever.
    Malformed,
    /// Every device in it refused by `[ingest] accept_unknown = false`.
    Refused,
    /// On a topic none of the configured subscriptions match (a subscription left in the
    /// persistent session by an older configuration).
    Unrouted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Ignored => "ignored",
            Outcome::Malformed => "malformed",
            Outcome::Refused => "refused",
            Outcome::Unrouted => "unrouted",
        }
    }
}

/// Decodes one publish into events. Pure apart from rate-limited logging and counters; the
/// benchmark and tests call it directly.
pub fn decode_publish(
    routes: &[Route],
    scfg: &SessionConfig,
    topic: &[u8],
    payload: &[u8],
) -> (Vec<Event>, Outcome) {
    let Ok(topic) = std::str::from_utf8(topic) else {
        malformed("<not utf-8>", &"topic is not UTF-8");
        return (Vec::new(), Outcome::Malformed);
    };
    let Some((route, device)) = routes.iter().find_map(|r| r.matches(topic).map(|d| (r, d))) else {
        return (Vec::new(), Outcome::Unrouted);
    };
    let decoded = match route.format {
        Format::Json => json::decode_json(payload, device).map_err(DecodeError::from),
        Format::OwnTracks => {
            json::decode_owntracks(payload, topic, device).map_err(DecodeError::from)
        }
        Format::Raw(w) => decode_raw(w, scfg, topic, device, payload),
    };
    let mut events = match decoded {
        Ok(d) => {
            if !d.unknown_alarms.is_empty() {
                metrics::counter!("lienwatch_mqtt_unknown_alarms_total")
                    .increment(d.unknown_alarms.len() as u64);
                if crate::ingest::log_budget() {
                    tracing::warn!(topic, names = ?d.unknown_alarms, "unknown alarm names ignored");
                }
            }
            d.events
        }
        Err(e) => {
            malformed(topic, &e);
            return (Vec::new(), Outcome::Malformed);
        }
    };
    if events.is_empty() {
        return (events, Outcome::Ignored);
    }
    events.retain(|e| (scfg.admit)(&e.device_id));
    if events.is_empty() {
        metrics::counter!("lienwatch_devices_refused_total", "protocol" => "mqtt").increment(1);
        return (events, Outcome::Refused);
    }
    (events, Outcome::Stored)
}

fn malformed(topic: &str, e: &dyn std::fmt::Display) {
    if crate::ingest::log_budget() {
        tracing::warn!(topic, error = %e, "malformed MQTT payload acknowledged and dropped");
    }
}

/// Raw frames: a fresh sessionless decoder per message, the device id from the topic for frames
/// that do not carry one. Replies have nowhere to go and are dropped.
fn decode_raw(
    w: WireProtocol,
    scfg: &SessionConfig,
    topic: &str,
    device: Option<&str>,
    payload: &[u8],
) -> Result<json::Decoded, DecodeError> {
    let default_device_id = match device {
        Some(d) if DeviceId::is_valid(d) => Some(DeviceId::new(d)),
        Some(d) => return Err(DecodeError::BadDeviceId(d.chars().take(40).collect())),
        None => None,
    };
    let cfg = SessionConfig {
        default_device_id,
        sessionless: true,
        ..scfg.clone()
    };
    let mut session = w.session(cfg);
    let (outs, err) = crate::protocol::decode_all(session.as_mut(), payload);
    let mut events = Vec::new();
    let mut rejected = 0usize;
    for o in outs {
        match o {
            Output::Event(e) if DeviceId::is_valid(e.device_id.as_str()) => events.push(e),
            Output::Event(_) => rejected += 1,
            Output::Reply(_) => {}
            Output::Rejected(r) => {
                rejected += 1;
                crate::ingest::rejected(w.name(), r, topic);
            }
        }
    }
    metrics::counter!("lienwatch_frames_decoded_total", "protocol" => w.name())
        .increment(events.len() as u64);
    if events.is_empty() {
        if let Some(e) = err {
            return Err(DecodeError::Session(e));
        }
        if rejected > 0 {
            return Err(DecodeError::NothingDecoded);
        }
    }
    Ok(json::Decoded {
        events,
        unknown_alarms: Vec::new(),
    })
}

#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("device id {0:?} in the topic is not a string of decimal digits")]
    BadDeviceId(String),
    #[error("{0}")]
    Session(crate::protocol::SessionError),
    #[error("no frame in the payload decoded to an event with a device id")]
    NothingDecoded,
}

/// Everything needed to (re)connect.
struct Plan {
    opts: MqttOptions,
    routes: Arc<[Route]>,
    /// Request channel capacity: every ack of a full inflight window, plus control requests.
    channel: usize,
    max_batch: usize,
}

fn plan(cfg: &MqttConfig) -> Result<Plan, MqttError> {
    let (tls, rest) = if let Some(r) = cfg.url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = cfg.url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(MqttError::Url(cfg.url.clone()));
    };
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| MqttError::Url(cfg.url.clone()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| MqttError::Url(cfg.url.clone()))?;
    if host.is_empty() {
        return Err(MqttError::Url(cfg.url.clone()));
    }
    let mut routes = Vec::new();
    for (index, s) in cfg.subscriptions.iter().enumerate() {
        let format = Format::parse(&s.format).ok_or_else(|| MqttError::Format {
            index,
            format: s.format.clone(),
        })?;
        routes.push(Route::new(&s.topic, format));
    }

    let mut opts = MqttOptions::new(cfg.client_id.clone(), host, port);
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(
            cfg.session_expiry.as_secs().min(u32::MAX as u64) as u32
        ))
        .set_receive_maximum(Some(cfg.max_inflight))
        .set_max_packet_size(Some(cfg.max_packet_size.min(u32::MAX as usize) as u32))
        .set_keep_alive(cfg.keep_alive)
        .set_manual_acks(true);
    if let Some(user) = &cfg.username {
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => crate::config::read_secret(f).map_err(MqttError::Password)?,
            (None, None) => String::new(),
        };
        opts.set_credentials(user.clone(), password);
    }
    if tls {
        let ca = match &cfg.ca_file {
            Some(p) => std::fs::read(p).map_err(|e| MqttError::CaFile {
                path: p.display().to_string(),
                msg: e.to_string(),
            })?,
            None => system_roots()?,
        };
        // rumqttc parses the PEM and builds the rustls config with the process-wide provider
        // (ring, installed by the daemon); its `Default` would panic if a platform store fails.
        opts.set_transport(Transport::tls(ca, None, None));
    }
    let inflight = cfg.max_inflight as usize;
    Ok(Plan {
        opts,
        routes: routes.into(),
        channel: inflight + 16,
        max_batch: MAX_BATCH,
    })
}

/// The platform CA bundle as PEM, from the usual Linux and BSD locations (`SSL_CERT_FILE` first).
fn system_roots() -> Result<Vec<u8>, MqttError> {
    let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let known = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    env.into_iter()
        .chain(known.iter().map(std::path::PathBuf::from))
        .find_map(|p| std::fs::read(p).ok().filter(|b| !b.is_empty()))
        .ok_or(MqttError::NoRoots)
}

/// Starts the MQTT source. Returns once the configuration is checked; connecting (and
/// reconnecting, with backoff) happens in the background until `shutdown`, after which the task
/// acks what was committed, disconnects and ends.
pub fn spawn(
    cfg: &MqttConfig,
    scfg: SessionConfig,
    engine: EngineHandle,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, MqttError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plan = plan(cfg)?;
    tracing::info!(url = %cfg.url, client_id = %cfg.client_id, subscriptions = plan.routes.len(), "mqtt source starting");
    Ok(tokio::spawn(run(plan, scfg, engine, shutdown)))
}

/// A publish on its way through the pipeline, with the client of the connection it came on.
struct Inbound {
    publish: Publish,
    client: AsyncClient,
    conn: u64,
    received_at: Timestamp,
}

/// Capped exponential backoff with jitter: 100 ms doubling to 30 s, reset on ConnAck.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Backoff { next: Self::MIN }
    }
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to 20% jitter so that a fleet of daemons does not reconnect in lockstep.
        d + d.mul_f64(fastrand::f64() * 0.2)
    }
}

async fn run(plan: Plan, scfg: SessionConfig, engine: EngineHandle, shutdown: CancellationToken) {
    let (tx, rx) = flume::unbounded::<Inbound>();
    let reconnect = Arc::new(Notify::new());
    let pipeline = tokio::spawn(pipeline(
        rx,
        plan.routes.clone(),
        scfg,
        engine,
        reconnect.clone(),
        plan.max_batch,
    ));
    let filters: Vec<Filter> = plan
        .routes
        .iter()
        .map(|r| {
            let mut f = Filter::new(r.filter.clone(), QoS::AtLeastOnce);
            f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
            f
        })
        .collect();
    let mut backoff = Backoff::new();
    let mut conn: u64 = 0;
    let mut subscribed_once = false;
    let mut last: Option<(AsyncClient, EventLoop)> = None;
    'conn: while !shutdown.is_cancelled() {
        conn += 1;
        let (client, mut el) = AsyncClient::new(plan.opts.clone(), plan.channel);
        let failed = loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    last = Some((client, el));
                    break 'conn;
                }
                _ = reconnect.notified() => break None,
                r = el.poll() => match r {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                        backoff.reset();
                        metrics::gauge!("lienwatch_mqtt_connected").set(1.0);
                        on_connack(&ack, &client, &filters, &mut subscribed_once);
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                        let _ = tx.send(Inbound {
                            publish,
                            client: client.clone(),
                            conn,
                            received_at: Timestamp::now(),
                        });
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(s))) => {
                        for (i, code) in s.return_codes.iter().enumerate() {
                            if !matches!(code, SubscribeReasonCode::Success(_)) {
                                tracing::error!(filter = filters.get(i).map(|f| f.path.as_str()).unwrap_or("?"), ?code, "mqtt subscription refused by the broker");
                            }
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Disconnect(d))) => {
                        tracing::warn!(reason = ?d.reason_code, "mqtt broker sent DISCONNECT");
                    }
                    Ok(_) => {}
                    Err(e) => break Some(e),
                },
            }
        };
        // Drop this connection's loop before waiting, so acks queued for it fail fast.
        drop(el);
        drop(client);
        metrics::gauge!("lienwatch_mqtt_connected").set(0.0);
        metrics::counter!("lienwatch_mqtt_reconnects_total").increment(1);
        let wait = backoff.step();
        match failed {
            Some(e) => tracing::warn!(error = %e, retry_in = ?wait, "mqtt connection lost"),
            None => {
                tracing::warn!(retry_in = ?wait, "mqtt reconnecting to get unacknowledged messages redelivered")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }

    // Shutdown: take no new messages, let the pipeline ack what it committed, then disconnect.
    drop(tx);
    let Some((client, mut el)) = last else {
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, pipeline).await;
        metrics::gauge!("lienwatch_mqtt_connected").set(0.0);
        return;
    };
    let drained = async {
        let mut pipeline = pipeline;
        let mut alive = true;
        loop {
            tokio::select! {
                _ = &mut pipeline => break,
                // Keep the connection alive so the acks go out; new publishes are not acked and
                // come back after the restart. After an error, polling again would reconnect and
                // could carry this connection's acks onto the next one: stop polling instead.
                r = el.poll(), if alive => alive = r.is_ok(),
            }
        }
        if alive {
            let _ = client.try_disconnect();
            loop {
                match el.poll().await {
                    Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_DRAIN, drained).await.is_err() {
        tracing::warn!("mqtt shutdown timed out; unacknowledged messages will be redelivered");
    }
    metrics::gauge!("lienwatch_mqtt_connected").set(0.0);
    tracing::info!("mqtt source stopped");
}

/// Subscribes when the broker has no session for us, and once per process so that
/// subscriptions added to the configuration since the session was created take effect
/// (re-subscribing an existing filter keeps its queue; retained messages are not resent).
fn on_connack(ack: &ConnAck, client: &AsyncClient, filters: &[Filter], subscribed_once: &mut bool) {
    tracing::info!(session_present = ack.session_present, "mqtt connected");
    if ack.session_present && *subscribed_once {
        return;
    }
    // A fresh client per connection: its channel is empty, so `try_` cannot find it full.
    match client.try_subscribe_many(filters.to_vec()) {
        Ok(()) => *subscribed_once = true,
        Err(e) => tracing::error!(error = %e, "mqtt subscribe could not be queued"),
    }
}

type Batch = Vec<(Inbound, Outcome)>;

/// Decodes, commits and acks in arrival order (see the module docs).
async fn pipeline(
    rx: flume::Receiver<Inbound>,
    routes: Arc<[Route]>,
    scfg: SessionConfig,
    engine: EngineHandle,
    reconnect: Arc<Notify>,
    max_batch: usize,
) {
    let mut inflight = FuturesOrdered::new();
    // Nothing from a connection at or before this one is acked: a commit of it failed.
    let mut poisoned: u64 = 0;
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some((batch, result)) = inflight.next(), if !inflight.is_empty() => {
                let batch: Batch = batch;
                match result {
                    Ok(()) => ack_batch(batch, poisoned).await,
                    Err(e) => {
                        let newest = batch.iter().map(|(m, _)| m.conn).max().unwrap_or(0);
                        poisoned = poisoned.max(newest);
                        metrics::counter!("lienwatch_mqtt_messages_total", "outcome" => "commit_failed")
                            .increment(batch.len() as u64);
                        tracing::error!(error = %e, messages = batch.len(), "commit failed; mqtt messages not acknowledged, reconnecting for redelivery");
                        reconnect.notify_one();
                    }
                }
            }
            first = rx.recv_async(), if open && inflight.len() < PIPELINED_COMMITS => {
                let Ok(first) = first else { open = false; continue };
                let mut msgs = vec![first];
                while msgs.len() < max_batch {
                    match rx.try_recv() {
                        Ok(m) => msgs.push(m),
                        Err(_) => break,
                    }
                }
                let received_at = msgs.iter().map(|m| m.received_at).max().unwrap_or_else(Timestamp::now);
                let mut events = Vec::new();
                let mut batch: Batch = Vec::with_capacity(msgs.len());
                for m in msgs {
                    let (ev, outcome) = decode_publish(&routes, &scfg, &m.publish.topic, &m.publish.payload);
                    events.extend(ev);
                    batch.push((m, outcome));
                }
                let engine = engine.clone();
                inflight.push_back(async move {
                    let r = if events.is_empty() { Ok(()) } else { engine.commit(events, received_at).await };
                    (batch, r)
                });
            }
            else => break,
        }
    }
}

/// PUBACKs a committed batch in order. An ack for a connection that has since dropped fails on
/// its dead channel; the broker redelivers that message and it is committed again.
async fn ack_batch(batch: Batch, poisoned: u64) {
    for (m, outcome) in batch {
        if m.conn <= poisoned {
            continue;
        }
        match m.client.ack(&m.publish).await {
            Ok(()) => {
                metrics::counter!("lienwatch_mqtt_messages_total", "outcome" => outcome.as_str())
                    .increment(1);
            }
            Err(_) => {
                metrics::counter!("lienwatch_mqtt_acks_dropped_total").increment(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_turn_the_placeholder_into_a_wildcard() {
        let r = Route::new("trackers/{device_id}/position", Format::Json);
        assert_eq!(r.filter, "trackers/+/position");
        assert_eq!(r.device_level, Some(1));
        assert_eq!(r.matches("trackers/123/position"), Some(Some("123")));
        assert_eq!(r.matches("trackers/123/status"), None);
        assert_eq!(r.matches("trackers/123/position/x"), None);
        let r = Route::new("owntracks/#", Format::OwnTracks);
        assert_eq!(r.device_level, None);
        assert_eq!(r.matches("owntracks/alice/42"), Some(None));
    }

    #[test]
    fn filter_matching_follows_the_spec() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("#", "a/b"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("+/x", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS/x"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(!filter_matches("a/b", "a"));
        assert!(filter_matches("$share/g/a/+", "a/b"));
        assert!(filter_matches("a//c", "a//c"));
    }

    #[test]
    fn decode_publish_outcomes() {
        let routes = vec![
            Route::new("t/{device_id}/json", Format::Json),
            Route::new("owntracks/+/+", Format::OwnTracks),
        ];
        let scfg = SessionConfig::default();
        let ok = br#"{"time": "2026-11-22T08:15:30Z", "lat": 1, "lon": 2}"#;
        let (ev, o) = decode_publish(&routes, &scfg, b"t/42/json", ok);
        assert_eq!((ev.len(), o), (1, Outcome::Stored));
        assert_eq!(ev[0].device_id.as_str(), "42");
        let (_, o) = decode_publish(&routes, &scfg, b"t/4x/json", ok);
        assert_eq!(o, Outcome::Malformed);
        let (_, o) = decode_publish(&routes, &scfg, b"t/42/json", b"{");
        assert_eq!(o, Outcome::Malformed);
        let (_, o) = decode_publish(&routes, &scfg, b"other/42", ok);
        assert_eq!(o, Outcome::Unrouted);
        let (_, o) = decode_publish(&routes, &scfg, b"owntracks/a/1", br#"{"_type": "lwt"}"#);
        assert_eq!(o, Outcome::Ignored);
        let (_, o) = decode_publish(&routes, &scfg, &[0xff, 0xfe], ok);
        assert_eq!(o, Outcome::Malformed);
        let refuse = SessionConfig {
            admit: Arc::new(|_| false),
            ..SessionConfig::default()
        };
        let (ev, o) = decode_publish(&routes, &refuse, b"t/42/json", ok);
        assert_eq!((ev.len(), o), (0, Outcome::Refused));
    }

    #[test]
    fn plan_reads_the_url_and_rejects_bad_ones() {
        let cfg: crate::config::Config = toml::from_str(
            r#"
            [mqtt]
            url = "mqtt://[::1]:18830"
            client_id = "lw"
            [[mqtt.subscription]]
            topic = "a/{device_id}"
            "#,
        )
        .unwrap();
        let mut m = cfg.mqtt.unwrap();
        let p = plan(&m).unwrap();
        assert_eq!(p.opts.broker_address(), ("::1".to_string(), 18830));
        assert!(!p.opts.clean_start());
        assert_eq!(p.opts.receive_maximum(), Some(m.max_inflight));
        m.url = "tcp://x:1".into();
        assert!(matches!(plan(&m), Err(MqttError::Url(_))));
        m.url = "mqtts://x:1".into();
        m.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(plan(&m), Err(MqttError::CaFile { .. })));
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.step();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(120));
        for _ in 0..20 {
            b.step();
        }
        assert!(b.step() <= Duration::from_secs(36));
        b.reset();
        assert!(b.step() <= Duration::from_millis(120));
    }
}
