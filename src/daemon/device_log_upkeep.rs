//! Device log upkeep: every second, the last-known records the engine logged one entry per
//! commit are filed under their devices' keys (`store::DeviceLog::fold`), on the blocking pool
//! beside the engine, so that the log stays short and a restart reads little of it.

use crate::store::DeviceLog;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FOLD_EVERY: Duration = Duration::from_secs(1);
/// Entries per slice: a busy second's commits. A pass folds slices until one comes back short
/// (or [`SLICES_PER_PASS`]), so that a commit rate above it (`storage.commit_window = "0ms"` on fast disks) cannot leave
/// the journal, and the memory that mirrors it, growing for good.
const SLICE: usize = 4096;
/// Most slices a pass folds, so that a shutdown waits for a bounded pass: 16 slices a second are
/// 65,536 commits, far beyond what a commit window of 0 makes on a fast disk.
const SLICES_PER_PASS: usize = 16;

/// Starts the pass; it ends at `shutdown`, after the fold under way (await the handle before
/// removing the store's folder).
pub fn spawn(log: DeviceLog, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(FOLD_EVERY) => {}
            }
            let l = log.clone();
            let folded =
                tokio::task::spawn_blocking(move || l.fold_all(SLICE, SLICES_PER_PASS)).await;
            metrics::gauge!("lienwatch_journal_records").set(log.journal_records() as f64);
            match folded {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "device log fold failed"),
                Err(_) => break,
            }
        }
    })
}
