//! Alert retention: delivered and failed alerts older than `storage.alert_retention` go.

use crate::time::Timestamp;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Prunes finished alerts older than the retention, at start and then hourly, in slices so that
/// a large backlog never holds the outbox for long.
pub fn spawn(
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
