//! MQTT source: at-least-once ingestion through a broker.
//!
//! MQTT v5 (rumqttc `v5`), because two settings lienwatch needs are protocol features there and
//! only broker configuration in 3.1.1: the session expiry (`mqtt.session_expiry`: how long the
//! broker keeps our subscriptions and queue while we are away) and the receive maximum
//! (`mqtt.max_inflight`: the broker should never have more unacknowledged messages out to us
//! than that). `clean_start = false` with a stable client id makes the session persistent; acks
//! are manual.
//!
//! A message is acknowledged only after the commit that covers it, so the window of
//! unacknowledged messages is also the most one commit can hold: it has to be large (thousands)
//! for group commits to pay. Where the broker caps the window below that, `mqtt.sessions`
//! spreads the subscription over several sessions of one MQTT 5 shared-subscription group,
//! whose windows add up; their commits meet in the engine's group commit.
//!
//! Each session is one task ([`session`]) over its [`connection`]: it decodes ([`payload`],
//! routed by [`routing`]), commits, and PUBACKs what the pure [`ack_ledger`] releases: only
//! after the commit covering it returned Ok, in arrival order (MQTT-4.6.0-2), on the connection
//! it came on. A malformed payload is acked in its turn, counted and dropped, so it is never
//! redelivered forever. A failed commit acks nothing more from that connection and forces a
//! reconnect, after which the broker redelivers (MQTT-4.4.0-1); the store keeps the newest fix,
//! so the duplicates are harmless.

pub mod ack_ledger;
mod connection;
mod options;
pub mod payload;
pub mod routing;
mod session;

pub use payload::{decode_publish, Outcome};
pub use routing::{filter_matches, Format, Route, SessionLayout};

use crate::config::MqttConfig;
use crate::engine::EngineHandle;
use crate::protocol::SessionConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// Starts the MQTT source. Returns once the configuration is checked; connecting (and
/// reconnecting, with backoff) happens in the background until `shutdown`, after which each
/// session acks what was committed, disconnects and ends; the handle ends after the last.
///
/// `before` is the session count of the last run (`Store::mqtt_sessions`). Sessions above a
/// lowered count are retired (drained, then deleted at the broker, see `Session::retiring`);
/// `remember` records the new count once none is left (at once when there is nothing to
/// retire), so that a retirement cut short by a stop is done again at the next start.
pub fn spawn(
    cfg: &MqttConfig,
    scfg: SessionConfig,
    engine: EngineHandle,
    shutdown: CancellationToken,
    before: Option<u16>,
    remember: impl FnOnce(u16) + Send + 'static,
) -> Result<JoinHandle<()>, MqttError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plan = options::plan(cfg)?;
    tracing::info!(
        url = %cfg.url,
        client_id = %cfg.client_id,
        sessions = plan.layout.sessions,
        subscriptions = plan.routes.len(),
        "mqtt source starting"
    );
    let now = plan.layout.sessions;
    let retired = now..before.unwrap_or(now).max(now);
    if !retired.is_empty() {
        tracing::info!(
            sessions = ?retired,
            "mqtt sessions above mqtt.sessions: draining and deleting them"
        );
    }
    let start = |index: u16, retiring: bool| {
        let session = session::Session {
            plan: plan.clone(),
            index,
            scfg: scfg.clone(),
            engine: engine.clone(),
            retiring,
        };
        tokio::spawn(session.run(shutdown.clone()))
    };
    let sessions: Vec<JoinHandle<bool>> = (0..now).map(|i| start(i, false)).collect();
    let retiring: Vec<JoinHandle<bool>> = retired.map(|i| start(i, true)).collect();
    let retirement = tokio::spawn(async move {
        let mut all = true;
        for r in retiring {
            all &= r.await.unwrap_or(false);
        }
        if all && before != Some(now) {
            remember(now);
        }
    });
    Ok(tokio::spawn(async move {
        for s in sessions {
            let _ = s.await;
        }
        let _ = retirement.await;
    }))
}
