//! The metric families lienwatch exports (README "Metrics"), described and set to zero at start
//! so that dashboards and `rate()` alerts work on a fresh instance (CONTRACT.md "API description
//! and metrics").
//!
//! A labelled family is zeroed for every label value known at start: each configured listener's
//! protocol, each webhook, each alert type, each delivery outcome. `reason` labels that depend on
//! what devices send start with the value `none`.

use crate::alert::webhook::Webhook;
use crate::alert::AlertType;
use crate::config::Config;
use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Webhook delivery outcomes (`lienwatch_webhook_attempts_total{outcome}`).
pub const WEBHOOK_OUTCOMES: [&str; 5] = [
    "delivered",
    "http_error",
    "timeout",
    "connect_error",
    "error",
];

/// MQTT message outcomes (`lienwatch_mqtt_messages_total{outcome}`).
pub const MQTT_OUTCOMES: [&str; 6] = [
    "stored",
    "ignored",
    "malformed",
    "refused",
    "unrouted",
    "commit_failed",
];

/// Describes every family and zeroes its known series.
pub fn register(cfg: &Config, webhooks: &[Webhook]) {
    describe();
    let mut protocols: Vec<&'static str> =
        cfg.listeners.iter().map(|l| l.protocol.name()).collect();
    protocols.sort_unstable();
    protocols.dedup();
    for p in &protocols {
        let p = *p;
        metrics::gauge!("lienwatch_connections", "protocol" => p).set(0.0);
        metrics::counter!("lienwatch_connections_total", "protocol" => p).absolute(0);
        metrics::counter!("lienwatch_connections_refused_total", "protocol" => p, "reason" => "limit")
            .absolute(0);
        metrics::counter!("lienwatch_connections_idle_closed_total", "protocol" => p).absolute(0);
        metrics::counter!("lienwatch_sessions_ended_total", "protocol" => p, "reason" => "none")
            .absolute(0);
        metrics::counter!("lienwatch_frames_decoded_total", "protocol" => p).absolute(0);
        metrics::counter!("lienwatch_frames_rejected_total", "protocol" => p, "reason" => "none")
            .absolute(0);
    }
    let mut downlinks: Vec<&'static str> = cfg
        .listeners
        .iter()
        .map(|l| l.protocol.protocol().as_str())
        .collect();
    downlinks.sort_unstable();
    downlinks.dedup();
    for p in downlinks {
        for o in COMMAND_OUTCOMES {
            metrics::counter!("lienwatch_commands_total", "protocol" => p, "outcome" => o)
                .absolute(0);
        }
    }
    metrics::counter!("lienwatch_positions_stored_total").absolute(0);
    metrics::counter!("lienwatch_history_fixes_total").absolute(0);
    metrics::counter!("lienwatch_history_pruned_total").absolute(0);
    metrics::counter!("lienwatch_history_sealed_total").absolute(0);
    metrics::counter!("lienwatch_history_upkeep_errors_total").absolute(0);
    metrics::counter!("lienwatch_history_blocks_lost_total").absolute(0);
    metrics::counter!("lienwatch_clock_steps_total").absolute(0);
    metrics::counter!("lienwatch_fixes_suspect_total", "reason" => "future").absolute(0);
    metrics::counter!("lienwatch_devices_refused_total").absolute(0);
    metrics::counter!("lienwatch_commit_failures_total").absolute(0);
    let _ = metrics::histogram!("lienwatch_commit_seconds");
    metrics::gauge!("lienwatch_outbox_depth").set(0.0);
    metrics::gauge!("lienwatch_risk_zones").set(0.0);
    metrics::gauge!("lienwatch_devices_unregistered").set(0.0);
    metrics::gauge!("lienwatch_journal_records").set(0.0);
    for t in AlertType::ALL {
        metrics::counter!("lienwatch_alerts_raised_total", "type" => t.as_str()).absolute(0);
    }
    for w in webhooks {
        let name = w.name.clone();
        metrics::gauge!("lienwatch_webhook_pending", "webhook" => name.clone()).set(0.0);
        metrics::gauge!("lienwatch_webhook_in_flight", "webhook" => name.clone()).set(0.0);
        metrics::counter!("lienwatch_webhook_failed_total", "webhook" => name.clone()).absolute(0);
        let _ = metrics::histogram!("lienwatch_webhook_latency_seconds", "webhook" => name.clone());
        for o in WEBHOOK_OUTCOMES {
            metrics::counter!("lienwatch_webhook_attempts_total", "webhook" => name.clone(), "outcome" => o)
                .absolute(0);
        }
    }
    for s in ["400", "401", "404", "409", "422"] {
        metrics::counter!("lienwatch_admin_rejected_total", "status" => s).absolute(0);
    }
    for r in ["ok", "error"] {
        metrics::counter!("lienwatch_config_reloads_total", "result" => r).absolute(0);
    }
    if cfg.mqtt.is_some() {
        metrics::gauge!("lienwatch_mqtt_connected").set(0.0);
        metrics::counter!("lienwatch_mqtt_reconnects_total").absolute(0);
        metrics::counter!("lienwatch_mqtt_acks_dropped_total").absolute(0);
        metrics::counter!("lienwatch_mqtt_unknown_alarms_total").absolute(0);
        for o in MQTT_OUTCOMES {
            metrics::counter!("lienwatch_mqtt_messages_total", "outcome" => o).absolute(0);
        }
    }
}

/// Every step of a command's life (`crate::downlink`).
const COMMAND_OUTCOMES: [&str; 5] = ["queued", "sent", "answered", "failed", "expired"];

fn describe() {
    describe_counter!(
        "lienwatch_commands_total",
        "commands to devices, by protocol and outcome (queued, sent, answered, failed, expired)"
    );
    describe_gauge!("lienwatch_connections", "tracker TCP connections open now");
    describe_counter!(
        "lienwatch_connections_total",
        "tracker TCP connections accepted"
    );
    describe_counter!(
        "lienwatch_connections_refused_total",
        "connections refused (reason=limit: max_connections reached)"
    );
    describe_counter!(
        "lienwatch_connections_idle_closed_total",
        "connections closed after the idle timeout"
    );
    describe_counter!(
        "lienwatch_sessions_ended_total",
        "sessions the protocol ended (refused device or protocol error)"
    );
    describe_counter!(
        "lienwatch_frames_decoded_total",
        "messages decoded into events"
    );
    describe_counter!(
        "lienwatch_frames_rejected_total",
        "input dropped, by protocol and reason"
    );
    describe_counter!(
        "lienwatch_positions_stored_total",
        "fixes that became a device's last-known position"
    );
    describe_counter!(
        "lienwatch_history_fixes_total",
        "fixes written to the position history (every accepted fix, valid or not, late or suspect)"
    );
    describe_counter!(
        "lienwatch_history_pruned_total",
        "recent fixes and sealed blocks removed past storage.history_retention"
    );
    describe_counter!(
        "lienwatch_history_sealed_total",
        "fixes sealed into the compact day files of the history (a re-sealed bucket counts again)"
    );
    describe_counter!(
        "lienwatch_history_upkeep_errors_total",
        "history sealing or pruning passes that failed (each step is tried at every pass)"
    );
    describe_counter!(
        "lienwatch_history_blocks_lost_total",
        "sealed history blocks that failed their check when a late fix was sealed into their bucket: their fixes are lost, the bucket is sealed again with the new ones"
    );
    describe_counter!(
        "lienwatch_clock_steps_total",
        "steps of the host clock against the monotonic clock (set, corrected, or the host resumed)"
    );
    describe_counter!(
        "lienwatch_fixes_suspect_total",
        "fixes kept out of last-known positions and rules (reason=future: dated beyond ingest.max_future)"
    );
    describe_counter!(
        "lienwatch_devices_refused_total",
        "logins refused by accept_unknown = false or ingest.max_unknown_devices"
    );
    describe_gauge!(
        "lienwatch_devices_unregistered",
        "stored devices in no vehicle (ingest.max_unknown_devices caps new ones)"
    );
    describe_histogram!(
        "lienwatch_commit_seconds",
        "duration of each group commit (apply + flush)"
    );
    describe_counter!(
        "lienwatch_commit_failures_total",
        "commits that failed: nothing in them was acknowledged"
    );
    describe_counter!("lienwatch_alerts_raised_total", "alerts raised, by type");
    describe_gauge!(
        "lienwatch_risk_zones",
        "risk zones loaded (PUT and POST /v1/zones)"
    );
    describe_gauge!(
        "lienwatch_journal_records",
        "commits in the commit journal not yet filed into the database by both passes"
    );
    describe_gauge!(
        "lienwatch_outbox_depth",
        "alerts not yet delivered to every webhook"
    );
    describe_gauge!(
        "lienwatch_webhook_pending",
        "alerts waiting for this webhook"
    );
    describe_gauge!(
        "lienwatch_webhook_in_flight",
        "requests to this webhook in progress"
    );
    describe_counter!(
        "lienwatch_webhook_attempts_total",
        "delivery attempts, by outcome"
    );
    describe_histogram!(
        "lienwatch_webhook_latency_seconds",
        "duration of each delivery attempt"
    );
    describe_counter!(
        "lienwatch_webhook_failed_total",
        "alerts given up on after max_age"
    );
    describe_counter!(
        "lienwatch_admin_rejected_total",
        "admin API requests refused, by HTTP status (nothing was changed)"
    );
    describe_counter!(
        "lienwatch_config_reloads_total",
        "SIGHUP reloads, by result (ok, error)"
    );
    describe_gauge!("lienwatch_mqtt_connected", "1 while the MQTT session is up");
    describe_counter!("lienwatch_mqtt_reconnects_total", "MQTT reconnects");
    describe_counter!("lienwatch_mqtt_messages_total", "MQTT messages, by outcome");
    describe_counter!(
        "lienwatch_mqtt_acks_dropped_total",
        "PUBACKs not sent because their session ended"
    );
    describe_counter!(
        "lienwatch_mqtt_unknown_alarms_total",
        "alarm names in JSON payloads that lienwatch does not know"
    );
}
