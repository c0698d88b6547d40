//! History upkeep: logged fixes are filed by device every second, recent
//! fixes are sealed into the compact day files once their six-hour bucket has been over for an
//! hour (at start, then every few minutes), and fixes past `storage.history_retention` are
//! pruned. Both run on
//! the blocking pool in slices, beside the engine (which only ever adds recent keys), so they
//! never stall ingestion.

use crate::history::{clock_reference, History, CLOCK_AHEAD_OF_FIXES};
use crate::time::Timestamp;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A bucket stays open this long after it ends, so that the usual late fixes (a tracker's
/// store-and-forward after a tunnel) join it before it is sealed.
const SEAL_AFTER: Duration = Duration::from_secs(3600);
/// Buckets starting this far ahead of the clock only get fixes from trackers whose clocks run
/// ahead (suspect, kept in the history): sealed at every pass too, so that their runs do not
/// pile up until real time reaches them.
const FUTURE_SEALED_FROM: Duration = Duration::from_secs(86_400);
const SLICE: usize = 200_000;

/// How often logged fixes are filed under their own keys. The log is read whole by every track
/// query, so it must stay short; but each pass costs a sled insert per device it saw, and fewer
/// passes file longer runs. At a second, a fleet of 100,000 trackers reporting every 10 s logs
/// 10,000 fixes between passes; under the ingest bench's load (60,000 fixes a second from 2,000
/// devices) a run holds about 30 fixes, against 6 at a quarter second, and the history's cost on
/// the ack path fell from up to a third to within the runs' noise (README, performance).
const DRAIN_EVERY: Duration = Duration::from_secs(1);

/// Fixes a drain pass holds in memory at most (a few MB), whole log entries at a time.
const DRAIN_SLICE: usize = 50_000;

/// Starts the drain: every [`DRAIN_EVERY`], what the engine logged is filed by device. It ends
/// at `shutdown`, after the pass under way (await the handle before removing the store's folder).
pub fn spawn_drain(history: History, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let h = history.clone();
            match tokio::task::spawn_blocking(move || drain(&h)).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "history log drain failed"),
                Err(_) => break,
                Ok(Ok(_)) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(DRAIN_EVERY) => {}
            }
        }
    })
}

/// Starts sealing and pruning: at once, then every tenth of the retention (between a second
/// and ten minutes). It ends at `shutdown`, after the pass under way.
pub fn spawn_sealing(
    history: History,
    retention: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // A pass every few minutes: sealing keeps the recent tree small; with a short retention
    // (tests, trials) pruning must keep up with it.
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    tokio::spawn(async move {
        loop {
            let h = history.clone();
            let pass = tokio::task::spawn_blocking(move || upkeep(&h, retention));
            match pass.await {
                Ok(Ok((sealed, pruned))) => {
                    if sealed > 0 || pruned > 0 {
                        tracing::debug!(sealed, pruned, "history upkeep");
                    }
                }
                // Already counted and logged step by step.
                Ok(Err(_)) => {}
                Err(_) => break,
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// Files everything logged so far, a slice at a time.
fn drain(h: &History) -> Result<(), crate::store::StoreError> {
    while h.drain_log(DRAIN_SLICE)? as usize >= DRAIN_SLICE {}
    Ok(())
}

/// Seals, then prunes. Pruning runs whatever sealing did: it is what frees space on a full disk
/// (where sealing fails first), and one bucket that cannot be sealed must not keep every day file
/// past retention. An error of either counts in `lienwatch_history_upkeep_errors_total`.
fn upkeep(h: &History, retention: Duration) -> Result<(u64, u64), crate::store::StoreError> {
    upkeep_at(h, retention, Timestamp::now())
}

/// [`upkeep`] at `now`. The cutoff is taken after sealing, which files what was logged, so
/// that it counts the newest fixes (`history::clock_reference`).
fn upkeep_at(
    h: &History,
    retention: Duration,
    now: Timestamp,
) -> Result<(u64, u64), crate::store::StoreError> {
    both(
        || seal(h, now),
        || {
            let newest = h.newest_fix()?;
            if let Some(newest) = newest.filter(|n| now > n.add(CLOCK_AHEAD_OF_FIXES)) {
                tracing::warn!(
                    newest_fix = %newest,
                    ahead_s = now.since(newest) / 1000,
                    "the host clock is more than a day ahead of the newest fix: pruning \
                     counts the retention from a day after that fix (is the host clock right?)"
                );
            }
            prune(h, clock_reference(now, newest).sub(retention))
        },
    )
}

/// Runs `seal`, then `prune` whatever `seal` gave; the first error, once both have run.
fn both<E: std::fmt::Display>(
    seal: impl FnOnce() -> Result<u64, E>,
    prune: impl FnOnce() -> Result<u64, E>,
) -> Result<(u64, u64), E> {
    let sealing = seal();
    let pruning = prune();
    for e in [sealing.as_ref().err(), pruning.as_ref().err()]
        .into_iter()
        .flatten()
    {
        metrics::counter!("lienwatch_history_upkeep_errors_total").increment(1);
        tracing::warn!(error = %e, "history upkeep step failed");
    }
    Ok((sealing?, pruning?))
}

fn seal(h: &History, now: Timestamp) -> Result<u64, crate::store::StoreError> {
    // What the last run logged but never filed (a kill) is sealed in this pass, not the next.
    drain(h)?;
    let mut sealed = 0;
    loop {
        let s = h.compact_window(
            now.add_millis(-(SEAL_AFTER.as_millis() as i64)),
            now.add(FUTURE_SEALED_FROM),
            SLICE,
        )?;
        sealed += s.fixes;
        metrics::counter!("lienwatch_history_sealed_total").increment(s.fixes);
        if (s.fixes as usize) < SLICE {
            break;
        }
    }
    Ok(sealed)
}

fn prune(h: &History, cutoff: Timestamp) -> Result<u64, crate::store::StoreError> {
    let mut pruned = 0;
    loop {
        let s = h.prune(cutoff, SLICE)?;
        let n = s.fixes + s.blocks;
        pruned += n;
        metrics::counter!("lienwatch_history_pruned_total").increment(n);
        if (n as usize) < SLICE {
            break;
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::testing::log_fixes;

    /// The pass takes its cutoff after sealing has filed what the engine logged: a fix logged
    /// just before a pass with the host clock a year forward counts, and the history stays.
    /// As the fixes move on, what is past the retention goes.
    #[test]
    fn a_pass_with_the_host_clock_set_forward_keeps_the_history() {
        let store = crate::store::Store::temporary().unwrap();
        let h = store.history();
        let day = 86_400;
        log_fixes(&store, "1", &[1_000 * day, 1_100 * day]);
        let all = |h: &History| {
            h.track(
                "1",
                Timestamp::from_secs(0),
                Timestamp::from_secs(2_000 * day),
                100,
            )
            .unwrap()
            .len()
        };
        let retention = Duration::from_secs(180 * day as u64);
        upkeep_at(h, retention, Timestamp::from_secs(1_465 * day)).unwrap();
        assert_eq!(all(h), 2, "a year forward: nothing pruned");
        // Time goes on and fixes with it: the fixes now past 180 days go.
        log_fixes(&store, "1", &[1_290 * day]);
        upkeep_at(h, retention, Timestamp::from_secs(1_290 * day)).unwrap();
        assert_eq!(all(h), 1, "the fixes of days 1,000 and 1,100 go");
    }

    #[test]
    fn pruning_runs_when_sealing_fails() {
        let mut pruned = false;
        let r = both(
            || Err::<u64, _>("no space left on device"),
            || {
                pruned = true;
                Ok(7)
            },
        );
        assert!(pruned, "pruning is what frees the space");
        assert_eq!(r, Err("no space left on device"));
        assert_eq!(both(|| Ok::<_, &str>(1), || Ok(2)), Ok((1, 2)));
    }
}
