//! Signed webhook delivery (CONTRACT.md "Webhook delivery").
//!
//! One worker task per configured webhook reads that webhook's schedule from the [`Outbox`] and
//! POSTs each pending alert, signed, with at most `max_in_flight` requests at a time. Workers are
//! independent: a dead receiver only slows its own worker, never ingestion (the engine only writes
//! to sled) nor other webhooks. Every attempt's outcome is written back to sled, so a restart
//! resumes where the last run stopped; memory stays bounded by `max_in_flight` bodies whatever the
//! backlog.

use super::outbox::{AttemptOutcome, Job, Outbox, OutboxError};
use super::AlertType;
use crate::event::Timestamp;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const HEADER_ALERT_ID: &str = "X-Lienwatch-Alert-Id";
pub const HEADER_TIMESTAMP: &str = "X-Lienwatch-Timestamp";
pub const HEADER_SIGNATURE: &str = "X-Lienwatch-Signature";

const DEFAULT_MAX_IN_FLIGHT: usize = 4;

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_age() -> Duration {
    Duration::from_secs(3 * 86_400)
}

/// A `[[webhook]]` table as written in the config file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Identifies the webhook in metrics, the API and the outbox on disk. Defaults to the URL
    /// without credentials or query string; set it to rename the URL without losing its backlog.
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Alert types to deliver; absent = all.
    #[serde(default)]
    pub types: Option<Vec<AlertType>>,
    /// Per attempt.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// After this long without success an alert is `failed` for this webhook.
    #[serde(default = "default_max_age", with = "crate::duration")]
    pub max_age: Duration,
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

// Hand-written so that secrets never reach logs.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("types", &self.types)
            .field("timeout", &self.timeout)
            .field("max_age", &self.max_age)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// A config problem, naming the offending key (`check-config` prints it with the file name).
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("webhook.url: {0}")]
    Url(String),
    #[error("webhook: set exactly one of `secret` or `secret_file`")]
    SecretChoice,
    #[error("webhook.secret_file: cannot read {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("webhook.{0}: the secret is empty")]
    EmptySecret(&'static str),
    #[error("webhook.types: an empty list matches no alert; leave `types` out to deliver all")]
    EmptyTypes,
    #[error("webhook.{0}: must be greater than zero")]
    Zero(&'static str),
    #[error("webhook.name: must not be empty")]
    EmptyName,
}

impl WebhookConfig {
    /// Whether this webhook wants alerts of this type.
    pub fn matches(&self, kind: AlertType) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(&kind))
    }

    /// Validates the table and reads the secret file: what the daemon and `check-config` call.
    pub fn resolve(&self) -> Result<Webhook, WebhookConfigError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| WebhookConfigError::Url(format!("{:?}: {e}", redact_url(&self.url))))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(WebhookConfigError::Url(format!(
                "{:?} is not an http:// or https:// URL",
                redact_url(&self.url)
            )));
        }
        let secret: Vec<u8> = match (&self.secret, &self.secret_file) {
            (Some(s), None) => {
                if s.is_empty() {
                    return Err(WebhookConfigError::EmptySecret("secret"));
                }
                s.as_bytes().to_vec()
            }
            (None, Some(path)) => {
                let raw = std::fs::read(path).map_err(|source| WebhookConfigError::SecretFile {
                    path: path.clone(),
                    source,
                })?;
                // Files written by `echo` end in a newline that is not part of the secret.
                let trimmed = raw.trim_ascii_end();
                if trimmed.is_empty() {
                    return Err(WebhookConfigError::EmptySecret("secret_file"));
                }
                trimmed.to_vec()
            }
            _ => return Err(WebhookConfigError::SecretChoice),
        };
        if self.types.as_ref().is_some_and(Vec::is_empty) {
            return Err(WebhookConfigError::EmptyTypes);
        }
        if self.timeout.is_zero() {
            return Err(WebhookConfigError::Zero("timeout"));
        }
        if self.max_age.is_zero() {
            return Err(WebhookConfigError::Zero("max_age"));
        }
        if self.max_in_flight == Some(0) {
            return Err(WebhookConfigError::Zero("max_in_flight"));
        }
        let name = match &self.name {
            Some(n) if n.trim().is_empty() => return Err(WebhookConfigError::EmptyName),
            Some(n) => n.clone(),
            None => redact_url(&self.url),
        };
        Ok(Webhook {
            name,
            url,
            secret: Arc::from(secret),
            types: self.types.clone(),
            timeout: self.timeout,
            max_age: self.max_age,
            max_in_flight: self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
        })
    }
}

/// `scheme://host:port/path`: a URL without credentials or query, safe for labels and logs.
fn redact_url(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                port,
                u.path()
            )
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// A validated webhook, ready for a worker.
#[derive(Clone)]
pub struct Webhook {
    /// Pass these, in config order, to [`Outbox::open`].
    pub name: String,
    pub url: reqwest::Url,
    pub secret: Arc<[u8]>,
    pub types: Option<Vec<AlertType>>,
    pub timeout: Duration,
    pub max_age: Duration,
    pub max_in_flight: usize,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("types", &self.types)
            .field("timeout", &self.timeout)
            .field("max_age", &self.max_age)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    pub fn matches(&self, kind: AlertType) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(&kind))
    }
}

/// The `targets` argument of [`Outbox::insert`]: indexes of the webhooks that want `kind`.
pub fn targets(webhooks: &[Webhook], kind: AlertType) -> Vec<usize> {
    (0..webhooks.len())
        .filter(|&i| webhooks[i].matches(kind))
        .collect()
}

/// A client builder with the settings delivery needs: redirects are not followed (a 3xx is a
/// failure, so a redirect to a page that answers 200 to a GET cannot pass for a delivery), and a
/// `User-Agent` naming lienwatch. Add proxy or TLS settings, then `build()` once and share it.
/// The rustls crypto provider must be installed first.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lienwatch/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this never fails.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-Lienwatch-Signature` value: `v1=` + lowercase hex HMAC-SHA256(secret,
/// `"<timestamp>.<raw body>"`).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks a signature header in constant time, for receivers and tests. Receivers should also
/// reject timestamps far from their own clock, to refuse replays.
pub fn verify(secret: &[u8], timestamp: i64, signature: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("v1=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&raw).is_ok()
}

/// Tuning that is not in the config file (tests shrink the delays).
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The first retry waits between half of this and this; each later one doubles.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest sleep between schedule checks, so that a clock jump cannot stall the worker.
    pub poll_interval: Duration,
    /// On shutdown, how long in-flight requests may finish before they are abandoned (their
    /// alerts stay pending and are sent again after restart).
    pub shutdown_grace: Duration,
    /// Schedule entries read per start-up sweep step.
    pub sweep_budget: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            backoff_base: Duration::from_secs(4),
            backoff_max: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(2),
            sweep_budget: 1024,
        }
    }
}

/// Delay before the retry that follows failed attempt number `attempts` (1-based): exponential,
/// capped, with jitter in [50%, 100%] so that many alerts failing together spread out.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(max);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

struct Ctx {
    outbox: Outbox,
    index: usize,
    webhook: Webhook,
    client: reqwest::Client,
    opts: WorkerOptions,
}

/// Starts the delivery worker for webhook `index` (its position in the names given to
/// [`Outbox::open`]). It runs until `cancel` fires. The `client` is shared by all workers; the
/// per-attempt timeout comes from the webhook's config.
pub fn spawn(
    outbox: Outbox,
    index: usize,
    webhook: Webhook,
    client: reqwest::Client,
    cancel: CancellationToken,
    opts: WorkerOptions,
) -> Result<JoinHandle<()>, OutboxError> {
    let notify = outbox.notifier(index)?;
    let ctx = Arc::new(Ctx {
        outbox,
        index,
        webhook,
        client,
        opts,
    });
    Ok(tokio::spawn(run(ctx, notify, cancel)))
}

async fn run(ctx: Arc<Ctx>, notify: Arc<tokio::sync::Notify>, cancel: CancellationToken) {
    let name = ctx.webhook.name.clone();
    let max = ctx.webhook.max_in_flight.max(1);
    let boot = ctx.outbox.now();
    // The start-up sweep gives every pending alert one attempt right away, whatever its stored
    // backoff: an outage of lienwatch should not add up to 10 minutes of delay.
    let mut sweep: Option<Vec<u8>> = None;
    let mut sweeping = true;
    let mut busy: HashSet<u64> = HashSet::new();
    let mut tasks: tokio::task::JoinSet<u64> = tokio::task::JoinSet::new();
    let mut task_seq: HashMap<tokio::task::Id, u64> = HashMap::new();
    tracing::info!(webhook = %name, "webhook worker started");

    loop {
        let now = ctx.outbox.now();
        let mut next_due: Option<Timestamp> = None;
        let mut start = |job: Job, busy: &mut HashSet<u64>| {
            busy.insert(job.seq);
            let seq = job.seq;
            let handle = tasks.spawn(attempt(ctx.clone(), job));
            task_seq.insert(handle.id(), seq);
        };
        if busy.len() < max {
            match ctx.outbox.due(ctx.index, now, &busy, max - busy.len()) {
                Ok((jobs, next)) => {
                    next_due = next;
                    for job in jobs {
                        start(job, &mut busy);
                    }
                }
                Err(e) => tracing::error!(webhook = %name, error = %e, "reading the outbox"),
            }
        }
        if sweeping && busy.len() < max {
            match ctx.outbox.sweep(
                ctx.index,
                sweep.as_deref(),
                boot,
                &busy,
                max - busy.len(),
                ctx.opts.sweep_budget,
            ) {
                Ok((jobs, cursor)) => {
                    for job in jobs {
                        start(job, &mut busy);
                    }
                    sweeping = cursor.is_some();
                    sweep = cursor;
                }
                Err(e) => {
                    tracing::error!(webhook = %name, error = %e, "start-up sweep of the outbox");
                    sweeping = false;
                }
            }
        }
        metrics::gauge!("lienwatch_webhook_in_flight", "webhook" => name.clone())
            .set(busy.len() as f64);

        let poll = ctx.opts.poll_interval;
        let wait = if busy.len() >= max {
            poll // a finishing request wakes us
        } else if sweeping {
            Duration::ZERO
        } else {
            next_due.map_or(poll, |d| {
                Duration::from_millis(d.since(now).max(0) as u64).min(poll)
            })
        };
        if wait.is_zero() {
            tokio::task::yield_now().await;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match done {
                    Ok((id, _)) => id,
                    Err(e) => {
                        tracing::error!(webhook = %name, error = %e, "delivery task failed");
                        e.id()
                    }
                };
                if let Some(seq) = task_seq.remove(&id) {
                    busy.remove(&seq);
                }
            }
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    // Let requests already sent finish briefly; anything abandoned stays pending on disk.
    let grace = ctx.opts.shutdown_grace;
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    metrics::gauge!("lienwatch_webhook_in_flight", "webhook" => name.clone()).set(0.0);
    tracing::info!(webhook = %name, "webhook worker stopped");
}

/// The error text without the URL (it may carry credentials), with its causes.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// One POST of one alert; records the outcome and returns the alert's seq.
async fn attempt(ctx: Arc<Ctx>, job: Job) -> u64 {
    let wh = &ctx.webhook;
    let at = ctx.outbox.now();
    let ts = at.secs();
    let started = Instant::now();
    let res = ctx
        .client
        .post(wh.url.clone())
        .timeout(wh.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_ALERT_ID, job.alert_id.as_str())
        .header(HEADER_TIMESTAMP, ts.to_string())
        .header(HEADER_SIGNATURE, sign(&wh.secret, ts, &job.body))
        .body(job.body.clone())
        .send()
        .await;
    let result: Result<(), (String, &'static str)> = match res {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err((format!("HTTP {}", resp.status()), "http_error")),
        Err(e) if e.is_timeout() => Err((
            format!("timed out after {}", crate::duration::format(wh.timeout)),
            "timeout",
        )),
        Err(e) if e.is_connect() => Err((describe(e), "connect_error")),
        Err(e) => Err((describe(e), "error")),
    };
    metrics::histogram!("lienwatch_webhook_latency_seconds", "webhook" => wh.name.clone())
        .record(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(()) => "delivered",
        Err((_, l)) => l,
    };
    metrics::counter!("lienwatch_webhook_attempts_total", "webhook" => wh.name.clone(), "outcome" => label)
        .increment(1);

    let now = ctx.outbox.now();
    let outcome = match result {
        Ok(()) => AttemptOutcome::Delivered,
        Err((error, _)) => {
            let deadline = job.record.created_at.add(wh.max_age);
            if now >= deadline {
                metrics::counter!("lienwatch_webhook_failed_total", "webhook" => wh.name.clone())
                    .increment(1);
                tracing::warn!(webhook = %wh.name, alert = %job.alert_id, %error,
                    "giving up on alert after max_age");
                AttemptOutcome::GiveUp { error }
            } else {
                let attempts = job.record.attempts.saturating_add(1);
                let delay = backoff(attempts, ctx.opts.backoff_base, ctx.opts.backoff_max);
                // The last try lands exactly at max_age, so `failed` is reported on time.
                let next_attempt_at = now.add(delay).min(deadline);
                tracing::debug!(webhook = %wh.name, alert = %job.alert_id, %error, attempts,
                    "delivery failed; will retry");
                AttemptOutcome::Retry {
                    error,
                    next_attempt_at,
                }
            }
        }
    };
    if let Err(e) = ctx.outbox.record_attempt(ctx.index, job.seq, now, &outcome) {
        tracing::error!(webhook = %wh.name, alert = %job.alert_id, error = %e,
            "recording a delivery attempt");
    }
    job.seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip() {
        let sig = sign(b"s3cret", 1_700_000_000, b"{\"id\":\"a\"}");
        assert!(sig.starts_with("v1="));
        assert_eq!(sig.len(), 3 + 64);
        assert_eq!(sig, sig.to_lowercase());
        assert!(verify(b"s3cret", 1_700_000_000, &sig, b"{\"id\":\"a\"}"));
        assert!(!verify(b"other", 1_700_000_000, &sig, b"{\"id\":\"a\"}"));
        assert!(!verify(b"s3cret", 1_700_000_001, &sig, b"{\"id\":\"a\"}"));
        assert!(!verify(b"s3cret", 1_700_000_000, &sig, b"{\"id\":\"b\"}"));
        assert!(!verify(b"s3cret", 1_700_000_000, "v1=zz", b""));
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"),
        // split as "<timestamp>.<body>" would be.
        let sig = sign(b"key", 0, b"");
        assert!(verify(b"key", 0, &sig, b""));
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"key").unwrap();
        m.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"key").unwrap();
        m.update(b"42.{}");
        let expect = format!("v1={}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(sign(b"key", 42, b"{}"), expect);
    }

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

    fn parse(toml: &str) -> Result<WebhookConfig, toml::de::Error> {
        toml::from_str(toml)
    }

    #[test]
    fn config_defaults_and_filter() {
        let c = parse(
            r#"url = "https://u:p@example.com/hook?token=x"
secret = "abc"
types = ["geofence_exit", "silent_overdue"]"#,
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.max_age, Duration::from_secs(3 * 86400));
        assert!(c.matches(AlertType::GeofenceExit));
        assert!(!c.matches(AlertType::Tamper));
        let w = c.resolve().unwrap();
        assert_eq!(w.name, "https://example.com/hook");
        assert_eq!(w.max_in_flight, 4);
        assert_eq!(&*w.secret, b"abc");
        assert!(!format!("{c:?}{w:?}").contains("abc"));
        assert_eq!(
            targets(&[w.clone(), w], AlertType::SilentOverdue),
            vec![0, 1]
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(parse("url = \"http://x\"\nsecret = \"a\"\nbogus = 1").is_err());
        let both = parse("url = \"http://x\"\nsecret = \"a\"\nsecret_file = \"/nope\"").unwrap();
        assert!(both
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("secret_file"));
        let neither = parse("url = \"http://x\"").unwrap();
        assert!(matches!(
            neither.resolve(),
            Err(WebhookConfigError::SecretChoice)
        ));
        let missing = parse("url = \"http://x\"\nsecret_file = \"/nonexistent/secret\"").unwrap();
        let e = missing.resolve().unwrap_err().to_string();
        assert!(e.contains("webhook.secret_file"), "{e}");
        let bad_url = parse("url = \"ftp://x\"\nsecret = \"a\"").unwrap();
        assert!(bad_url
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("webhook.url"));
        let empty = parse("url = \"http://x\"\nsecret = \"a\"\ntypes = []").unwrap();
        assert!(empty
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("webhook.types"));
        assert!(parse("url = \"http://x\"\nsecret = \"a\"\ntimeout = \"soon\"").is_err());
    }

    #[test]
    fn secret_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "hunter2\n").unwrap();
        let c = WebhookConfig {
            name: Some("collections".into()),
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
            secret_file: Some(p),
            types: None,
            timeout: default_timeout(),
            max_age: default_max_age(),
            max_in_flight: Some(2),
        };
        let w = c.resolve().unwrap();
        assert_eq!(&*w.secret, b"hunter2");
        assert_eq!(w.name, "collections");
        assert_eq!(w.max_in_flight, 2);
    }
}
