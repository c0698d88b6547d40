//! Bounded waits for a fact (an API answer, a metric, a received request): polled often, so a
//! test takes as long as the daemon needs, and fails with a message instead of hanging.
#![allow(dead_code)]

use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// Polls `f` until it returns `Some`; `None` once `limit` has passed.
pub fn try_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it returns `Some`, panicking with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    try_for(limit, f).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// The same inside a tokio test: yields to the runtime between polls, so the tasks under test
/// (on the same thread) make progress.
pub async fn wait_for_async(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
