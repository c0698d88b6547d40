//! Watches the host clock against the monotonic clock. A step of the host clock (NTP correcting
//! a wrong clock, a `date -s`, a host resumed from suspend) moves everything lienwatch dates by
//! it: each fix's `received_at`, silence and its alerts, the retentions. A step is logged and
//! counted in `lienwatch_clock_steps_total`, so that what follows it can be explained.

use crate::time::Timestamp;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the two clocks are read.
const EVERY: Duration = Duration::from_secs(5);

/// What counts as a step: far more than any slew (NTP slews a clock by at most half a
/// millisecond a second) or a tick's lateness, and less than anything that would move a rule.
const STEP_MS: i64 = 2_000;

/// Reads both clocks every few seconds until `shutdown`.
pub fn spawn(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut last = (Timestamp::now(), Instant::now());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
            let now = (Timestamp::now(), Instant::now());
            if let Some(ms) = step(last, now) {
                metrics::counter!("lienwatch_clock_steps_total").increment(1);
                tracing::warn!(
                    step_s = ms as f64 / 1000.0,
                    host_clock = %now.0,
                    "the host clock stepped (set, corrected, or the host resumed): times, silence \
                     and retention follow it from now on"
                );
            }
            last = now;
        }
    });
}

/// How far the host clock moved beyond (or short of) the monotonic clock between two
/// readings, in milliseconds, when that is a step.
fn step(before: (Timestamp, Instant), after: (Timestamp, Instant)) -> Option<i64> {
    let wall = after.0.millis().saturating_sub(before.0.millis());
    let mono =
        i64::try_from(after.1.saturating_duration_since(before.1).as_millis()).unwrap_or(i64::MAX);
    let d = wall.saturating_sub(mono);
    (d.abs() >= STEP_MS).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_either_way_is_told_from_a_slew() {
        let t0 = Instant::now();
        let w0 = Timestamp::from_secs(1_800_000_000);
        let after = |wall_ms: i64, mono_ms: u64| {
            (w0.add_millis(wall_ms), t0 + Duration::from_millis(mono_ms))
        };
        assert_eq!(step((w0, t0), after(5_000, 5_000)), None);
        // NTP's fastest slew over 5 s, and a tick a second late: no step.
        assert_eq!(step((w0, t0), after(5_003, 5_000)), None);
        assert_eq!(step((w0, t0), after(6_000, 6_000)), None);
        assert_eq!(
            step((w0, t0), after(400 * 86_400_000 + 5_000, 5_000)),
            Some(400 * 86_400_000)
        );
        assert_eq!(
            step((w0, t0), after(-3_600_000 + 5_000, 5_000)),
            Some(-3_600_000)
        );
        assert_eq!(step((w0, t0), after(7_500, 5_000)), Some(2_500));
    }
}
