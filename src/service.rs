//! Running under systemd: readiness, watchdog, stopping, signals (sd_notify(3)).
//!
//! Without `NOTIFY_SOCKET` every notification is a no-op, so the same binary runs by hand.

use crate::engine::EngineHandle;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

pub fn notify_status(s: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(s)]);
}

/// Pings the watchdog at half its interval, but only after the engine thread (the part that
/// would stall: it owns the store) has answered a round trip. If the engine hangs, the pings
/// stop and systemd restarts the service.
pub fn spawn_watchdog(engine: EngineHandle, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
            let probe = engine.api(|_, _| (200, serde_json::Value::Null));
            match tokio::time::timeout(period.max(Duration::from_millis(100)), probe).await {
                Ok((200, _)) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                _ => tracing::warn!("engine did not answer the watchdog probe; not pinging"),
            }
        }
    });
}

/// `RELOADING=1` with the monotonic timestamp systemd 253+ requires; send `notify_ready()` when
/// the reload is done.
pub fn notify_reloading() {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::monotonic_usec_now()
            .unwrap_or(sd_notify::NotifyState::Status("reloading")),
    ]);
}

/// Resolves on SIGTERM or SIGINT. SIGHUP (`systemctl reload`) is caught here so that it can never
/// terminate the daemon (its default action); it is logged and otherwise ignored.
pub async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); return; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); return; }
            Some(()) = hangup => tracing::warn!("SIGHUP: this build does not reload its configuration; restart to apply changes"),
        }
    }
}
