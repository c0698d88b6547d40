//! Reading the daemon's Prometheus metrics: counters are barriers (a reload, a refusal, a
//! webhook attempt has happened once its counter moved).
#![allow(dead_code)]

use super::{http, Daemon};
use std::time::Duration;

/// Sum of every series of `name` (exact metric name) whose labels include all of `labels`
/// (0 when there is none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

impl Daemon {
    /// `GET /metrics`.
    pub fn scrape(&self) -> String {
        let (status, text) = http(self.admin, "GET", "/metrics", None, None).expect("/metrics");
        assert_eq!(status, 200, "{text}");
        text
    }

    /// One metric now (see [`metric`]).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.scrape(), name, labels)
    }

    /// Scrapes until `ok` holds for the text (bounded); the last scrape either way.
    pub fn scrape_until(&self, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        super::wait::try_for(Duration::from_secs(5), || {
            last = self.scrape();
            ok(&last).then_some(())
        });
        last
    }

    /// Waits until `ok` holds for the metric's value, panicking after 10 s; the value.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let mut seen = 0.0;
        let reached = super::wait::try_for(Duration::from_secs(10), || {
            seen = self.metric(name, labels);
            ok(seen).then_some(seen)
        });
        reached.unwrap_or_else(|| panic!("{name}{labels:?} stayed at {seen}:\n{}", self.log()))
    }
}
