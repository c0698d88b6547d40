//! Commands of the daemon itself: the watchdog's round trip and SIGHUP's new settings.

use super::command::{Command, EngineError};
use super::Engine;
use crate::alert::webhook::Webhook;
use crate::rules::RuleConfig;
use crate::time::Timestamp;

/// A round trip through the engine thread and its commit: answered only if the thread (which
/// owns the store and would be the part to stall) is alive and its flush works.
pub struct Ping;

impl Command for Ping {
    type Output = ();
    const WRITES: bool = false;

    fn apply(self, _e: &mut Engine, _now: Timestamp) -> Result<(), EngineError> {
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
