//! Retry delays: one exponential backoff with jitter for every retry loop (webhook deliveries,
//! broker reconnects), so that many failures at once spread out instead of retrying in lockstep.

use std::time::Duration;

/// `base * 2^(attempt-1)`, capped at `max`; `attempt` counts from 1.
pub fn exponential(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << exp).min(max)
}

/// `d` scaled by a random factor in `[lo, hi)`.
pub fn jitter(d: Duration, lo: f64, hi: f64) -> Duration {
    d.mul_f64(lo + fastrand::f64() * (hi - lo))
}

/// A backoff that remembers its attempts: each `next_delay` doubles up to `max`, with up to 20%
/// added jitter; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        jitter(exponential(self.attempt, self.base, self.max), 1.0, 1.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let (b, m) = (Duration::from_secs(1), Duration::from_secs(600));
        assert_eq!(exponential(1, b, m), b);
        assert_eq!(exponential(5, b, m), Duration::from_secs(16));
        assert_eq!(exponential(40, b, m), m);
        assert_eq!(exponential(0, b, m), b);
    }

    #[test]
    fn stateful_backoff_grows_within_jitter_and_resets() {
        let mut bo = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let d1 = bo.next_delay();
        assert!(d1 >= Duration::from_millis(100) && d1 < Duration::from_millis(120));
        let d2 = bo.next_delay();
        assert!(d2 >= Duration::from_millis(200) && d2 < Duration::from_millis(240));
        for _ in 0..20 {
            assert!(bo.next_delay() < Duration::from_secs(36));
        }
        bo.reset();
        assert!(bo.next_delay() < Duration::from_millis(120));
    }
}
