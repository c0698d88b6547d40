//! Alert retention: delivered and failed alerts older than `storage.alert_retention` go.

use crate::alert::outbox::Outbox;
use crate::history::History;
use crate::time::Timestamp;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Alerts a slice removes at most, so that a large backlog never holds the outbox for long.
const SLICE: usize = 5_000;

/// Prunes finished alerts older than the retention, at start and then hourly, in slices.
pub fn spawn(outbox: Outbox, history: History, retention: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let (ob, h) = (outbox.clone(), history.clone());
            match tokio::task::spawn_blocking(move || {
                prune_pass(&ob, &h, retention, Timestamp::now())
            })
            .await
            {
                Ok(Ok(0)) => {}
                Ok(Ok(total)) => {
                    tracing::info!(pruned = total, "old delivered and failed alerts removed")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "pruning old alerts failed"),
                Err(_) => break,
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    });
}

/// One pass at `now`, slice after slice. The retention counts back from the history's clock
/// reference (`History::clock_reference`), not from the host clock alone: a host clock set a
/// year forward must not delete every finished alert at once.
fn prune_pass(
    outbox: &Outbox,
    history: &History,
    retention: Duration,
    now: Timestamp,
) -> Result<usize, String> {
    let reference = history.clock_reference(now).map_err(|e| e.to_string())?;
    let cutoff = reference.sub(retention);
    let mut total = 0;
    loop {
        let n = outbox.prune(cutoff, SLICE).map_err(|e| e.to_string())?;
        total += n;
        if n < SLICE {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::outbox::testing::alert;
    use crate::history::testing::log_fixes;
    use crate::store::Store;
    use std::sync::Arc;

    const DAY: i64 = 86_400;

    /// Logs a fix at `t` and files it, as the drain does.
    fn log_fix(store: &Store, t: i64) {
        log_fixes(store, "1", &[t]);
        store.history().drain_log(usize::MAX).unwrap();
    }

    /// A delivered alert outlives a pass with the host clock a year forward, and goes once the
    /// fleet's fixes say its retention is over.
    #[test]
    fn a_host_clock_set_forward_does_not_prune_finished_alerts() {
        let store = Store::temporary().unwrap();
        let outbox = store
            .open_outbox(&[], Arc::new(|| Timestamp::from_secs(1_000 * DAY)))
            .unwrap();
        // No webhook: delivered at once, so the retention applies to it.
        let seq = outbox.insert(&alert("a1"), &[]).unwrap();
        store.flush().unwrap();
        log_fix(&store, 1_000 * DAY);
        let retention = Duration::from_secs(90 * DAY as u64);
        let h = store.history();
        assert_eq!(
            prune_pass(&outbox, h, retention, Timestamp::from_secs(1_400 * DAY)),
            Ok(0)
        );
        assert!(outbox.view(seq).unwrap().is_some());
        log_fix(&store, 1_095 * DAY);
        assert_eq!(
            prune_pass(&outbox, h, retention, Timestamp::from_secs(1_095 * DAY)),
            Ok(1)
        );
        assert!(outbox.view(seq).unwrap().is_none());
    }
}
