//! Commands of the daemon itself: the watchdog's round trip and SIGHUP's new settings.

use super::command::{Command, EngineError};
use super::Engine;
use crate::alert::webhook::Webhook;
use crate::rules::RuleConfig;
use crate::time::Timestamp;

/// A round trip through the engine thread and its commit: answered only if the thread (which
/// owns the store and would be the part to stall) is alive, its flush works, and the blob files'
/// sync has not failed (commits go on without it, but admin writes and the filing passes fail
/// until a restart, and the journal grows).
pub struct Ping;

impl Command for Ping {
    type Output = ();
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<(), EngineError> {
        if e.store.blobs().is_some_and(|b| b.failed()) {
            return Err(EngineError::Store(
                "a sync of sled's blob files failed; a restart recovers from what is on disk"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// SIGHUP: new rule thresholds and, when the set of webhooks is unchanged, their settings.
pub struct Reconfigure {
    pub rules: RuleConfig,
    pub webhooks: Option<Vec<Webhook>>,
}

impl Command for Reconfigure {
    type Output = ();

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<(), EngineError> {
        e.reconfigure(self.rules, self.webhooks);
        Ok(())
    }
}

/// The engine's counters (benchmarks report acknowledged positions per flush from these).
pub struct GetStats;

impl Command for GetStats {
    type Output = super::Stats;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<super::Stats, EngineError> {
        Ok(e.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a failed sync of the blob files the watchdog's probe fails, so that systemd
    /// restarts a daemon whose admin writes and filing passes can no longer succeed.
    #[test]
    fn the_watchdog_probe_fails_after_a_failed_blob_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), 16).unwrap();
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = crate::engine::testing::engine_at(store.clone(), t0);
        assert!(Ping.apply(&mut e, t0).is_ok());
        store.blobs().unwrap().fail_for_test();
        assert!(matches!(Ping.apply(&mut e, t0), Err(EngineError::Store(_))));
    }
}
