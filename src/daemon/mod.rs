//! `lienwatch run`: opens the store, starts the engine, the listeners, the admin API and the
//! delivery workers, and shuts them down in order. Each part has its file: `listeners`,
//! `delivery` (webhook workers), `reload` (SIGHUP), `retention` (alerts), `history_upkeep`,
//! `device_log_upkeep` (both started through `upkeep`, public so that benchmarks run what the
//! daemon runs), `secrets`.

mod delivery;
pub mod device_log_upkeep;
pub mod history_upkeep;
mod listeners;
mod reload;
mod retention;
pub mod secrets;
pub mod upkeep;

use crate::config::Config;
use crate::engine::{self, Engine, EngineConfig};
use crate::store::Store;
use crate::time::Timestamp;
use delivery::{resolve_webhooks, Delivery};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("storage.path {path}: {msg}")]
    Storage { path: String, msg: String },
    #[error("{what} {addr}: cannot bind: {msg}")]
    Bind {
        what: String,
        addr: String,
        msg: String,
    },
    #[error("{0}")]
    Other(String),
}

/// How long shutdown waits for connections to finish their last commit.
const DRAIN: Duration = Duration::from_secs(5);

/// Changes the log filter at run time (SIGHUP reload of `[log] level`).
pub type LogReload = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What `run` needs besides the config.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// The file the config came from; SIGHUP re-reads it. `None`: built-in defaults, no reload.
    pub config_path: Option<std::path::PathBuf>,
    pub log_reload: Option<LogReload>,
}

pub async fn run(cfg: Config, opts: RunOptions) -> Result<(), DaemonError> {
    // First: a SIGHUP while the store opens (which can take a while) would otherwise end the
    // process, as an unhandled SIGHUP does; now it waits for the loop below.
    let mut signals = crate::service::Signals::new();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let webhooks = resolve_webhooks(&cfg)?;
    crate::telemetry::register(&cfg, &webhooks);

    let path = cfg.storage.path.clone();
    let storage_err = |msg: String| DaemonError::Storage {
        path: path.display().to_string(),
        msg,
    };
    crate::store::create_dir_durably(&path).map_err(|e| storage_err(e.to_string()))?;
    tracing::info!(path = %path.display(), "opening the store");
    let store = Store::open(&path, cfg.storage.cache_mb).map_err(|e| storage_err(e.to_string()))?;
    let auth_key = secrets::jt808_auth_key(&cfg, &store).map_err(storage_err)?;
    let token = secrets::admin_token(&cfg).map_err(storage_err)?;
    let admin_token = crate::admin::AdminToken::new(&token);
    let console_zone: crate::admin::ConsoleZone =
        Arc::new(std::sync::RwLock::new(cfg.rules.timezone.clone()));
    let mut held = reload::Held {
        admin_token: admin_token.clone(),
        console_zone: console_zone.clone(),
        mqtt_password: reload::mqtt_password(&cfg).map_err(DaemonError::Other)?,
    };

    let names: Vec<String> = webhooks.iter().map(|w| w.name.clone()).collect();
    // Unnamed webhooks' deliveries, kept under the URL-with-path names of earlier releases.
    let renames: Vec<(String, String)> = webhooks
        .iter()
        .filter_map(|w| w.renamed_from.clone().map(|old| (old, w.name.clone())))
        // A configured webhook named as the old default (a `name` kept when its URL changed)
        // keeps its own deliveries.
        .filter(|(old, _)| !names.contains(old))
        .collect();
    store
        .rename_outbox_webhooks(&renames)
        .map_err(|e| storage_err(e.to_string()))?;
    let outbox = store
        .open_outbox(&names, crate::time::wall_clock())
        .map_err(|e| storage_err(e.to_string()))?;
    let ecfg = EngineConfig::from_config(&cfg, webhooks.clone());
    let history = store.history().clone();
    // Its trees, for the background passes started once the daemon is up (and its meta).
    let upkeep_store = store.clone();
    let zone_writer = store.zone_writer();
    let opened_at = Timestamp::now();
    let steps = crate::time::StepWatch::new(opened_at);
    let engine = Engine::open(store, outbox.clone(), ecfg, opened_at)
        .map_err(|e| storage_err(e.to_string()))?;
    let (handle, _) = engine::spawn_on_host_clock(engine, steps)
        .map_err(|e| DaemonError::Other(format!("cannot start the engine thread: {e}")))?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    // Delivery: one worker per webhook, reading the outbox; pending alerts are retried at once.
    let client = crate::alert::webhook::client_builder()
        .build()
        .map_err(|e| DaemonError::Other(format!("webhook HTTP client: {e}")))?;
    let mut delivery = Delivery::start(&outbox, Delivery::prepare(webhooks, &client)?)?;

    let shared = listeners::Shared {
        engine: handle.clone(),
        auth_key: auth_key.clone(),
        max_frame: cfg.ingest.max_frame,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    let servers = listeners::start(&cfg.listeners, &shared).await?;

    // MQTT after the listeners: its raw-frame payloads use the same session settings.
    let mqtt = match &cfg.mqtt {
        Some(m) => {
            let scfg = crate::protocol::SessionConfig {
                max_frame: cfg.ingest.max_frame,
                admit: handle.admission.clone(),
                auth_key: auth_key.clone(),
                ..crate::protocol::SessionConfig::default()
            };
            let before = upkeep_store
                .mqtt_sessions()
                .map_err(|e| storage_err(e.to_string()))?;
            let keep = upkeep_store.clone();
            let remember = move |n| {
                if let Err(e) = keep.set_mqtt_sessions(n) {
                    tracing::warn!(error = %e, "cannot record mqtt.sessions; a lowered count is checked again at the next start");
                }
            };
            let task = crate::ingest::mqtt::spawn(
                m,
                scfg,
                handle.clone(),
                shutdown.clone(),
                before,
                remember,
            )
            .map_err(|e| DaemonError::Other(e.to_string()))?;
            Some(task)
        }
        None => None,
    };

    let admin_sock = tokio::net::TcpListener::bind(cfg.admin.bind)
        .await
        .map_err(|e| DaemonError::Bind {
            what: "admin.bind".into(),
            addr: cfg.admin.bind.to_string(),
            msg: e.to_string(),
        })?;
    let state = crate::admin::AdminState {
        engine: handle.clone(),
        token: admin_token.clone(),
        metrics,
        outbox: outbox.clone(),
        history: history.clone(),
        history_retention: cfg.storage.history_retention,
        console: cfg.console.clone(),
        timezone: console_zone,
        zones: crate::admin::zones::ZoneWrites::new(zone_writer),
    };
    let app = crate::admin::router(state);
    let sd = shutdown.clone();
    let admin = tokio::spawn(async move {
        let _ = axum::serve(admin_sock, app)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await;
    });
    tracing::info!(addr = %cfg.admin.bind, "admin API ready");

    retention::spawn(
        outbox.clone(),
        history.clone(),
        cfg.storage.alert_retention,
        shutdown.clone(),
    );
    let passes = upkeep::spawn(
        &upkeep_store,
        cfg.storage.history_retention,
        shutdown.clone(),
    );
    crate::service::spawn_watchdog(handle.clone(), shutdown.clone());
    crate::service::notify_ready();
    crate::service::notify_status("running");
    tracing::info!("lienwatch running");

    let mut current = cfg;
    while crate::service::Signals::next(&mut signals).await == crate::service::Signal::Reload {
        crate::service::notify_reloading();
        match reload::reload(
            &current,
            &mut held,
            &opts,
            &handle,
            &outbox,
            &client,
            &mut delivery,
        )
        .await
        {
            Ok(next) => {
                current = next;
                metrics::counter!("lienwatch_config_reloads_total", "result" => "ok").increment(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration stays in force");
                metrics::counter!("lienwatch_config_reloads_total", "result" => "error")
                    .increment(1);
            }
        }
        crate::service::notify_ready();
    }
    crate::service::notify_stopping();
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("connections still busy after {DRAIN:?}; closing them");
    }
    for s in servers {
        let _ = s.await;
    }
    // Before the engine stops: the MQTT task acks what was committed, then disconnects.
    if let Some(m) = mqtt {
        let _ = m.await;
    }
    let _ = admin.await;
    // Answered once the engine's last flush is done; its thread ends with the last handle.
    let last_flush = handle.shutdown().await;
    // The short passes finish the one under way before the store closes.
    passes.stopped().await;
    // Delivery stops last: alerts raised during the drain are on disk and resume after restart.
    delivery.stop().await;
    // What was applied after the last commit is not on disk: a failure, not a clean stop.
    last_flush.map_err(|e| DaemonError::Storage {
        path: path.display().to_string(),
        msg: format!("final flush failed: {e}"),
    })?;
    tracing::info!("lienwatch stopped");
    Ok(())
}
