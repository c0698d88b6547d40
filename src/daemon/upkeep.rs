//! The background passes beside the engine, in one place so that the daemon and the benchmarks
//! run the same set: the history's log drain and sealing (`history_upkeep`) and the device log
//! fold (`device_log_upkeep`).

use crate::store::Store;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running passes; they end at the `shutdown` given to [`spawn`], after the pass under way.
pub struct Upkeep {
    drain: JoinHandle<()>,
    sealing: JoinHandle<()>,
    fold: JoinHandle<()>,
}

/// Starts every pass over `store`'s trees.
pub fn spawn(store: &Store, history_retention: Duration, shutdown: CancellationToken) -> Upkeep {
    let [drain, sealing] =
        super::history_upkeep::spawn(store.history().clone(), history_retention, shutdown.clone());
    let fold = super::device_log_upkeep::spawn(store.device_log().clone(), shutdown);
    Upkeep {
        drain,
        sealing,
        fold,
    }
}

impl Upkeep {
    /// Waits for the short passes (drain, fold) to end; a sealing pass, which may be long, is
    /// left to end with the runtime, as it can stop anywhere.
    pub async fn stopped(self) {
        drop(self.sealing);
        let _ = self.drain.await;
        let _ = self.fold.await;
    }

    /// Waits for every pass to end: before a store's folder is removed (sled hangs flushing
    /// into a removed folder).
    pub async fn all_stopped(self) {
        let _ = self.drain.await;
        let _ = self.fold.await;
        let _ = self.sealing.await;
    }
}
