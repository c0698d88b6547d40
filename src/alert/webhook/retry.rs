//! The retry decision, pure: what to do after an attempt, given its result, the alert's age and
//! how often it was tried. No I/O, so it is tested on its own; the worker (`worker.rs`) only
//! carries it out.

use crate::alert::outbox::{AttemptOutcome, DeliveryRecord};
use crate::time::Timestamp;
use std::time::Duration;

/// Delay before the retry that follows failed attempt number `attempts` (1-based): exponential,
/// capped, with jitter in [50%, 100%] so that many alerts failing together spread out.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    crate::backoff::jitter(crate::backoff::exponential(attempts, base, max), 0.5, 1.0)
}

/// A webhook's retry settings.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// After this age an alert is given up on (`failed`).
    pub max_age: Duration,
    /// The first retry waits between half of this and this; each later one doubles.
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Delivered on success; on failure a retry after a growing delay, the last one landing
    /// exactly at `max_age` so that `failed` is reported on time, or give up once that age is
    /// reached.
    pub fn decide(
        &self,
        result: Result<(), String>,
        record: &DeliveryRecord,
        now: Timestamp,
    ) -> AttemptOutcome {
        let error = match result {
            Ok(()) => return AttemptOutcome::Delivered,
            Err(e) => e,
        };
        let deadline = record.created_at.add(self.max_age);
        if now >= deadline {
            return AttemptOutcome::GiveUp { error };
        }
        let attempts = record.attempts.saturating_add(1);
        let delay = backoff(attempts, self.base, self.max);
        AttemptOutcome::Retry {
            error,
            next_attempt_at: now.add(delay).min(deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let base = Duration::from_secs(4);
        let max = Duration::from_secs(600);
        for _ in 0..100 {
            let first = backoff(1, base, max);
            assert!(first >= Duration::from_secs(2) && first <= Duration::from_secs(4));
            let big = backoff(40, base, max);
            assert!(big >= Duration::from_secs(300) && big <= max);
        }
        assert!(backoff(5, base, max) >= Duration::from_secs(32));
    }

    fn record(created_s: i64, attempts: u32) -> DeliveryRecord {
        DeliveryRecord {
            state: crate::alert::outbox::State::Pending,
            attempts,
            last_error: None,
            next_attempt_at: Timestamp::from_secs(created_s),
            created_at: Timestamp::from_secs(created_s),
            last_attempt_at: None,
        }
    }

    #[test]
    fn decides_delivered_retry_and_give_up() {
        let p = RetryPolicy {
            max_age: Duration::from_secs(3600),
            base: Duration::from_secs(4),
            max: Duration::from_secs(600),
        };
        let now = Timestamp::from_secs(1000);
        assert_eq!(
            p.decide(Ok(()), &record(0, 0), now),
            AttemptOutcome::Delivered
        );
        match p.decide(Err("HTTP 500".into()), &record(0, 0), now) {
            AttemptOutcome::Retry {
                error,
                next_attempt_at,
            } => {
                assert_eq!(error, "HTTP 500");
                let wait = next_attempt_at.since(now);
                assert!((2000..=4000).contains(&wait), "{wait}");
            }
            other => panic!("{other:?}"),
        }
        // Close to max_age: the retry is pulled in to land exactly at the deadline.
        match p.decide(Err("x".into()), &record(0, 30), Timestamp::from_secs(3590)) {
            AttemptOutcome::Retry {
                next_attempt_at, ..
            } => {
                assert_eq!(next_attempt_at, Timestamp::from_secs(3600))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.decide(Err("x".into()), &record(0, 31), Timestamp::from_secs(3600)),
            AttemptOutcome::GiveUp { error: "x".into() }
        );
    }
}
