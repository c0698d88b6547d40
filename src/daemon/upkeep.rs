//! The background passes beside the engine, in one place so that the daemon and the benchmarks
//! run the same set: the history's log drain and sealing (`history_upkeep`) and the device log
//! fold (`device_log_upkeep`).
//!
//! Two kinds, on two schedules: the drain and the fold follow ingestion (every second, they
//! file what the last second's commits logged), while sealing and pruning run at start and then
//! every few minutes. Benchmarks that take turns with a baseline start the first kind for each
//! of their slices and the second once, as the daemon does ([`spawn_following`],
//! [`spawn_sealing`]).

use crate::store::Store;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running passes; they end at the `shutdown` given to [`spawn`], after the pass under way.
pub struct Upkeep {
    drain: Option<JoinHandle<()>>,
    sealing: Option<JoinHandle<()>>,
    fold: Option<JoinHandle<()>>,
}

/// Starts every pass over `store`'s trees: what the daemon runs.
pub fn spawn(store: &Store, history_retention: Duration, shutdown: CancellationToken) -> Upkeep {
    let mut all = spawn_following(store, shutdown.clone());
    all.sealing = spawn_sealing(store, history_retention, shutdown).sealing;
    all
}

/// Starts the passes that file what ingestion logged (history drain, device log fold).
pub fn spawn_following(store: &Store, shutdown: CancellationToken) -> Upkeep {
    Upkeep {
        drain: Some(super::history_upkeep::spawn_drain(
            store.history().clone(),
            shutdown.clone(),
        )),
        sealing: None,
        fold: Some(super::device_log_upkeep::spawn(
            store.device_log().clone(),
            shutdown,
        )),
    }
}

/// Starts the history's sealing and pruning alone.
pub fn spawn_sealing(
    store: &Store,
    history_retention: Duration,
    shutdown: CancellationToken,
) -> Upkeep {
    Upkeep {
        drain: None,
        sealing: Some(super::history_upkeep::spawn_sealing(
            store.history().clone(),
            history_retention,
            shutdown,
        )),
        fold: None,
    }
}

impl Upkeep {
    /// Waits for the short passes (drain, fold) to end; a sealing pass, which may be long, is
    /// left to end with the runtime, as it can stop anywhere.
    pub async fn stopped(self) {
        drop(self.sealing);
        for h in [self.drain, self.fold].into_iter().flatten() {
            let _ = h.await;
        }
    }

    /// Waits for every pass to end: before a store's folder is removed (sled hangs flushing
    /// into a removed folder).
    pub async fn all_stopped(self) {
        for h in [self.drain, self.fold, self.sealing].into_iter().flatten() {
            let _ = h.await;
        }
    }
}
