//! SIGHUP: what can change without a restart, and what cannot.

use super::delivery::{resolve_webhooks, Delivery};
use super::{DaemonError, RunOptions};
use crate::config::Config;
use crate::engine::control::Reconfigure;

/// What the running daemon took from secrets at start (or the last reload). A reload compares
/// what the config says now with these, not with the file names: a file's name stays the same
/// when the secret in it is rotated.
pub struct Held {
    pub admin_token: crate::admin::AdminToken,
    /// The zone the console shows times in: `rules.timezone`, applied with the rules.
    pub console_zone: crate::admin::ConsoleZone,
    pub mqtt_password: Option<String>,
}

/// The MQTT password `cfg` names, inline or from its file.
pub fn mqtt_password(cfg: &Config) -> Result<Option<String>, String> {
    match &cfg.mqtt {
        Some(m) => m.password().map_err(|e| format!("mqtt.password_file: {e}")),
        None => Ok(None),
    }
}

/// SIGHUP: re-reads the config file and applies what can change without a restart — the log
/// level, the `[rules]` thresholds, the admin token and the settings of the existing
/// `[[webhook]]`s (url, secret, filter, timeouts). Everything else is logged as needing a
/// restart, at this reload and every later one until the restart. An invalid file changes
/// nothing. Returns the configuration now in force: the sections that wait for a restart stay
/// as they were.
pub async fn reload(
    current: &Config,
    held: &mut Held,
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
    if current.admin.bind != next.admin.bind {
        restart_needed.push("admin.bind");
    }
    // A generated token is kept in the running store, whatever `storage.path` now says.
    let mut probe = next.clone();
    probe.storage.path = current.storage.path.clone();
    let token = super::secrets::admin_token(&probe).map_err(DaemonError::Other)?;
    let mqtt_password = mqtt_password(&next).map_err(DaemonError::Other)?;
    if mqtt_password != held.mqtt_password {
        restart_needed.push("the MQTT password");
    }
    if !same(&current.console, &next.console) {
        restart_needed.push("[console]");
    }
    if !same(&current.risk.resolved, &next.risk.resolved) {
        restart_needed.push("[risk.points]");
    }
    if !same(&current.log.format, &next.log.format) {
        restart_needed.push("log.format");
    }
    // Webhooks are matched by name: tables only put in another order are the same webhooks,
    // taken in the order the outbox keeps them.
    let mut webhooks = webhooks;
    let kept = outbox.webhook_names();
    let same_names =
        webhooks.len() == kept.len() && webhooks.iter().all(|w| kept.contains(&w.name));
    if same_names {
        webhooks.sort_by_key(|w| kept.iter().position(|n| *n == w.name));
    }
    // Everything that can fail is done before anything changes: a refused reload leaves the
    // running configuration, its workers included, as it was.
    let prepared = if same_names {
        Some(Delivery::prepare(webhooks.clone(), client)?)
    } else {
        None
    };

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
        .run(Reconfigure {
            rules,
            webhooks: hooks,
        })
        .await
        .map_err(|e| DaemonError::Other(e.to_string()))?;
    tracing::info!("rule thresholds reloaded");
    if let Ok(mut z) = held.console_zone.write() {
        z.clone_from(&next.rules.timezone);
    }
    if !held.admin_token.matches(&token) {
        held.admin_token.replace(&token);
        tracing::info!("admin token replaced");
    }
    let mut in_force = current.clone();
    in_force.rules = next.rules.clone();
    in_force.log.level = next.log.level.clone();
    in_force.admin.token = next.admin.token.clone();
    in_force.admin.token_file = next.admin.token_file.clone();
    if prepared.is_some() && delivery.runs(&webhooks) {
        in_force.webhooks = next.webhooks.clone();
        tracing::info!(
            webhooks = webhooks.len(),
            "webhook settings unchanged; their workers go on"
        );
    } else if let Some(prepared) = prepared {
        delivery.stop().await;
        *delivery = Delivery::start(outbox, prepared)?;
        in_force.webhooks = next.webhooks.clone();
        tracing::info!(webhooks = webhooks.len(), "webhook settings reloaded");
    } else {
        restart_needed.push("adding, removing or renaming [[webhook]]s");
    }
    if !restart_needed.is_empty() {
        tracing::warn!(
            sections = %restart_needed.join(", "),
            "changed settings that take effect only after a restart"
        );
    }
    Ok(in_force)
}
