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

/// Pings the watchdog every quarter of its interval, but only after the engine thread (the part
/// that would stall: it owns the store) has answered a round trip within half the interval. If
/// the engine hangs, the pings stop and systemd restarts the service. A ping is at most three
/// quarters of the interval after the last: an engine that answers within half of it, a long
/// sync say, is never killed for it, and a hung one is warned of before systemd acts.
pub fn spawn_watchdog(engine: EngineHandle, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let (pause, answer_within) = (interval / 4, interval / 2);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            let probe = engine.run(crate::engine::control::Ping);
            match tokio::time::timeout(answer_within.max(Duration::from_millis(100)), probe).await {
                Ok(Ok(())) => {
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

/// What the operator asked for with a signal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Signal {
    /// SIGTERM or SIGINT: shut down gracefully.
    Terminate,
    /// SIGHUP: reload what can change without a restart.
    Reload,
}

/// The signals the daemon listens to. SIGHUP is caught so that `systemctl reload` (and a stray
/// HUP) reloads instead of killing the process.
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    pub async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s.as_mut() {
                Some(s) => {
                    if s.recv().await.is_none() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => { tracing::info!("SIGTERM: shutting down"); Signal::Terminate }
            _ = recv(&mut self.int) => { tracing::info!("SIGINT: shutting down"); Signal::Terminate }
            _ = recv(&mut self.hup) => { tracing::info!("SIGHUP: reloading the configuration"); Signal::Reload }
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}
