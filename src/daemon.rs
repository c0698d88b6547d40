//! `lienwatch run`: opens the store, starts the engine, the listeners, the admin API and the
//! delivery workers, and shuts them down in order.

use crate::config::{Config, Transport};
use crate::engine::{self, Engine, EngineConfig};
use crate::event::Timestamp;
use crate::protocol::SessionConfig;
use crate::store::Store;
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
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();

    let path = cfg.storage.path.clone();
    let storage_err = |msg: String| DaemonError::Storage {
        path: path.display().to_string(),
        msg,
    };
    std::fs::create_dir_all(&path).map_err(|e| storage_err(e.to_string()))?;
    let store = Store::open(&path, cfg.storage.cache_mb).map_err(|e| storage_err(e.to_string()))?;

    let auth_key: Arc<[u8]> = match &cfg.ingest.jt808_auth_key {
        Some(k) => Arc::from(k.as_bytes()),
        None => Arc::from(
            store
                .meta_or_init("jt808_auth_key", || crate::store::random_hex().into_bytes())
                .map_err(|e| storage_err(e.to_string()))?,
        ),
    };
    let token = admin_token(&cfg, &store).map_err(storage_err)?;

    let webhooks = resolve_webhooks(&cfg)?;
    let now = Timestamp::now();
    let ecfg = EngineConfig {
        rules: cfg.rules.clone(),
        accept_unknown: cfg.ingest.accept_unknown,
        commit_window: cfg.storage.commit_window,
        webhooks: webhooks.clone(),
    };
    let engine = Engine::open(store, ecfg, now, Arc::new(Timestamp::now))
        .map_err(|e| storage_err(e.to_string()))?;
    let outbox = engine.outbox();
    let (handle, engine_thread) = engine::spawn(engine, Arc::new(Timestamp::now))
        .map_err(|e| DaemonError::Other(format!("cannot start the engine thread: {e}")))?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    // Delivery: one worker per webhook, reading the outbox; pending alerts are retried at once.
    let client = crate::alert::webhook::client_builder()
        .build()
        .map_err(|e| DaemonError::Other(format!("webhook HTTP client: {e}")))?;
    let mut delivery = Delivery::start(&outbox, webhooks, &client)?;

    // Bind everything before announcing readiness: a port in use is a startup error.
    let listeners = cfg
        .listeners_checked("config")
        .map_err(|e| DaemonError::Other(e.to_string()))?;
    let mut servers = Vec::new();
    for l in listeners {
        let scfg = SessionConfig {
            utc_offset_s: l.utc_offset_s,
            max_frame: cfg.ingest.max_frame,
            admit: handle.admission.clone(),
            auth_key: auth_key.clone(),
            default_device_id: None,
            clock: Arc::new(Timestamp::now),
            sessionless: false,
        };
        let what = format!("listener {} ({:?})", l.protocol.name(), l.transport);
        let bind_err = |e: std::io::Error| DaemonError::Bind {
            what: what.clone(),
            addr: l.bind.to_string(),
            msg: e.to_string(),
        };
        match l.transport {
            Transport::Tcp => {
                let sock = tokio::net::TcpListener::bind(l.bind)
                    .await
                    .map_err(bind_err)?;
                tracing::info!(protocol = l.protocol.name(), addr = %sock.local_addr().unwrap_or(l.bind), "tcp listener ready");
                servers.push(tokio::spawn(crate::ingest::tcp::serve(
                    sock,
                    l,
                    scfg,
                    handle.clone(),
                    shutdown.clone(),
                    tracker.clone(),
                )));
            }
            Transport::Udp => {
                let sock = tokio::net::UdpSocket::bind(l.bind)
                    .await
                    .map_err(bind_err)?;
                tracing::info!(protocol = l.protocol.name(), addr = %l.bind, "udp listener ready");
                servers.push(tokio::spawn(crate::ingest::udp::serve(
                    sock,
                    l,
                    scfg,
                    handle.clone(),
                    shutdown.clone(),
                )));
            }
        }
    }

    // MQTT after the listeners: its raw-frame payloads use the same session settings.
    let mqtt = match &cfg.mqtt {
        Some(m) => {
            let scfg = SessionConfig {
                max_frame: cfg.ingest.max_frame,
                admit: handle.admission.clone(),
                auth_key: auth_key.clone(),
                ..SessionConfig::default()
            };
            let task = crate::ingest::mqtt::spawn(m, scfg, handle.clone(), shutdown.clone())
                .map_err(|e| DaemonError::Other(e.to_string()))?;
            Some(task)
        }
        None => None,
    };

    let admin_addr = cfg
        .admin_bind("config")
        .map_err(|e| DaemonError::Other(e.to_string()))?;
    let admin_sock = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|e| DaemonError::Bind {
            what: "admin.bind".into(),
            addr: admin_addr.to_string(),
            msg: e.to_string(),
        })?;
    let state = crate::admin::AdminState {
        engine: handle.clone(),
        token: Arc::from(token.as_str()),
        metrics,
        outbox: Some(outbox.clone()),
    };
    let app = crate::admin::router(state);
    let sd = shutdown.clone();
    let admin = tokio::spawn(async move {
        let _ = axum::serve(admin_sock, app)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await;
    });
    tracing::info!(addr = %admin_addr, "admin API ready");

    spawn_retention(
        outbox.clone(),
        cfg.storage.alert_retention,
        shutdown.clone(),
    );
    crate::service::spawn_watchdog(handle.clone(), shutdown.clone());
    crate::service::notify_ready();
    crate::service::notify_status("running");
    tracing::info!("lienwatch running");

    let mut signals = crate::service::Signals::new();
    let mut current = cfg;
    while crate::service::Signals::next(&mut signals).await == crate::service::Signal::Reload {
        crate::service::notify_reloading();
        let result = reload(&current, &opts, &handle, &outbox, &client, &mut delivery).await;
        let outcome = match result {
            Ok(next) => {
                current = next;
                "ok"
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration stays in force");
                "error"
            }
        };
        // Counted after the reload took effect (or was refused and logged): whoever sees the
        // counter move knows the outcome.
        metrics::counter!("lienwatch_config_reloads_total", "result" => outcome).increment(1);
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
    handle.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    // Delivery stops last: alerts raised during the drain are on disk and resume after restart.
    delivery.stop().await;
    tracing::info!("lienwatch stopped");
    Ok(())
}

/// The admin token: configured, or generated once and kept in `<storage>/admin.token` (0600) so
/// that `lienwatch run` works with no config and the operator can read the token from a file.
fn admin_token(cfg: &Config, store: &Store) -> Result<String, String> {
    if let Some(t) = &cfg.admin.token {
        return Ok(t.trim().to_string());
    }
    if let Some(p) = &cfg.admin.token_file {
        return crate::config::read_secret(p);
    }
    let _ = store;
    let p = cfg.storage.path.join("admin.token");
    if let Ok(t) = crate::config::read_secret(&p) {
        return Ok(t);
    }
    let t = crate::store::random_hex();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        f.write_all(t.as_bytes())
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    tracing::info!(file = %p.display(), "generated an admin API token");
    Ok(t)
}

/// The webhook workers, restartable on reload.
struct Delivery {
    stop: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Delivery {
    fn start(
        outbox: &crate::alert::outbox::Outbox,
        webhooks: Vec<crate::alert::webhook::Webhook>,
        client: &reqwest::Client,
    ) -> Result<Delivery, DaemonError> {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for (i, w) in webhooks.into_iter().enumerate() {
            let name = w.name.clone();
            let jh = crate::alert::webhook::spawn(
                outbox.clone(),
                i,
                w,
                client.clone(),
                stop.clone(),
                Default::default(),
            )
            .map_err(|e| DaemonError::Other(format!("webhook {name}: {e}")))?;
            workers.push(jh);
        }
        Ok(Delivery { stop, workers })
    }

    async fn stop(&mut self) {
        self.stop.cancel();
        for w in self.workers.drain(..) {
            let _ = w.await;
        }
    }
}

/// SIGHUP: re-reads the config file and applies what can change without a restart — the log
/// level, the `[rules]` thresholds and the settings of the existing `[[webhook]]`s (url, secret,
/// filter, timeouts). Everything else is logged as needing a restart. An invalid file changes
/// nothing.
async fn reload(
    current: &Config,
    opts: &RunOptions,
    engine: &crate::engine::EngineHandle,
    outbox: &crate::alert::outbox::Outbox,
    client: &reqwest::Client,
    delivery: &mut Delivery,
) -> Result<Config, DaemonError> {
    let Some(path) = &opts.config_path else {
        return Err(DaemonError::Other(
            "running on built-in defaults: there is no config file to reload".into(),
        ));
    };
    let next = Config::load(Some(path)).map_err(|e| DaemonError::Other(e.to_string()))?;
    let webhooks = resolve_webhooks(&next)?;

    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut restart_needed = Vec::new();
    if !same(&current.storage, &next.storage) {
        restart_needed.push("[storage]");
    }
    if !same(&current.ingest, &next.ingest) {
        restart_needed.push("[ingest]");
    }
    if !same(&current.listeners, &next.listeners) {
        restart_needed.push("[[listener]]");
    }
    if !same(&current.mqtt, &next.mqtt) {
        restart_needed.push("[mqtt]");
    }
    if !same(&current.admin, &next.admin) {
        restart_needed.push("[admin]");
    }
    if !same(&current.log.format, &next.log.format) {
        restart_needed.push("log.format");
    }
    let names: Vec<String> = webhooks.iter().map(|w| w.name.clone()).collect();
    let same_names = names.as_slice() == outbox.webhook_names();

    if let Some(set) = &opts.log_reload {
        if current.log.level != next.log.level {
            set(&next.log.level).map_err(DaemonError::Other)?;
            tracing::info!(level = %next.log.level, "log level reloaded");
        }
    }
    let rules = next.rules.clone();
    let hooks = if same_names {
        Some(webhooks.clone())
    } else {
        None
    };
    engine
        .api(move |e, now| {
            e.reconfigure(rules, hooks, now);
            (200, serde_json::Value::Null)
        })
        .await;
    tracing::info!("rule thresholds reloaded");
    if same_names {
        delivery.stop().await;
        *delivery = Delivery::start(outbox, webhooks, client)?;
        tracing::info!(webhooks = names.len(), "webhook settings reloaded");
    } else {
        restart_needed.push("adding, removing or renaming [[webhook]]s");
    }
    if !restart_needed.is_empty() {
        tracing::warn!(
            sections = %restart_needed.join(", "),
            "changed settings that take effect only after a restart"
        );
    }
    Ok(next)
}

/// The `[[webhook]]` tables with their secrets read.
fn resolve_webhooks(cfg: &Config) -> Result<Vec<crate::alert::webhook::Webhook>, DaemonError> {
    cfg.webhooks
        .iter()
        .enumerate()
        .map(|(i, w)| {
            w.resolve()
                .map_err(|e| DaemonError::Other(format!("webhook[{i}]: {e}")))
        })
        .collect()
}

/// Prunes finished alerts older than the retention, at start and then hourly, in slices so that
/// a large backlog never holds the outbox for long.
fn spawn_retention(
    outbox: crate::alert::outbox::Outbox,
    retention: Duration,
    shutdown: CancellationToken,
) {
    const SLICE: usize = 5_000;
    tokio::spawn(async move {
        loop {
            let cutoff =
                Timestamp::now().add_millis(-(retention.as_millis().min(i64::MAX as u128) as i64));
            let mut total = 0;
            loop {
                let ob = outbox.clone();
                match tokio::task::spawn_blocking(move || ob.prune(cutoff, SLICE)).await {
                    Ok(Ok(n)) => {
                        total += n;
                        if n < SLICE {
                            break;
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "pruning old alerts failed");
                        break;
                    }
                    Err(_) => break,
                }
            }
            if total > 0 {
                tracing::info!(pruned = total, "old delivered and failed alerts removed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    });
}
