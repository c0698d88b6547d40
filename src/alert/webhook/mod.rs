//! Signed webhook delivery (CONTRACT.md "Webhook delivery").
//!
//! One worker task per configured webhook reads that webhook's schedule from the [`Outbox`] and
//! POSTs each pending alert, signed, with at most `max_in_flight` requests at a time. Workers are
//! independent: a dead receiver only slows its own worker, never ingestion (the engine only writes
//! to sled) nor other webhooks. Every attempt's outcome is written back to sled, so a restart
//! resumes where the last run stopped; memory stays bounded by `max_in_flight` bodies whatever the
//! backlog.

mod retry;
mod signature;
mod worker;

pub use retry::{backoff, RetryPolicy};
pub use signature::{sign, verify, HEADER_ALERT_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
pub use worker::spawn;

use super::AlertType;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// A PEM file of CA certificates trusted for this webhook in addition to the system's
    /// roots: a collections system behind a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
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
            .field("ca_file", &self.ca_file)
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
    #[error("webhook.ca_file: {0}")]
    CaFile(String),
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
        let (name, renamed_from) = match &self.name {
            Some(n) if n.trim().is_empty() => return Err(WebhookConfigError::EmptyName),
            Some(n) => (n.clone(), None),
            None => {
                let name = redact_url(&self.url);
                let before = url_with_path(&self.url);
                (name.clone(), Some(before).filter(|b| *b != name))
            }
        };
        let (ca, ca_bytes) = match &self.ca_file {
            None => (None, Vec::new()),
            Some(path) => {
                let certs = crate::config::pem_certificates(path);
                let certs = certs.map_err(WebhookConfigError::CaFile)?;
                (Some(certs), std::fs::read(path).unwrap_or_default())
            }
        };
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        let settings = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for part in [
                name.as_bytes(),
                url.as_str().as_bytes(),
                &secret,
                format!("{:?}", self.types).as_bytes(),
                &self.timeout.as_millis().to_be_bytes(),
                &self.max_age.as_millis().to_be_bytes(),
                &max_in_flight.to_be_bytes(),
                &ca_bytes,
            ] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            h.finalize().into()
        };
        Ok(Webhook {
            name,
            renamed_from,
            url,
            ca,
            secret: Arc::from(secret),
            types: self.types.clone(),
            timeout: self.timeout,
            max_age: self.max_age,
            max_in_flight,
            settings,
        })
    }
}

/// `scheme://host:port`, and for a URL with a path `/…` and 8 hex digits of the path's SHA-256:
/// safe for labels, logs and `/metrics`, which needs no token. A chat bot's webhook carries its
/// token in the path (`/open-apis/bot/v2/hook/<token>`, `/services/T…/B…/<secret>`), and in the
/// query, which is never shown; two paths on one host still get two names.
fn redact_url(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    url_parts(raw, |path| match path {
        "" | "/" => String::new(),
        p => {
            let h = Sha256::digest(p.as_bytes());
            format!("/…{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
        }
    })
}

/// `scheme://host:port/path`: the default name of earlier releases, under which a store may
/// still hold an unnamed webhook's deliveries.
fn url_with_path(raw: &str) -> String {
    url_parts(raw, str::to_string)
}

/// `scheme://host:port` and what `path` makes of the URL's path; never credentials or query.
fn url_parts(raw: &str, path: impl FnOnce(&str) -> String) -> String {
    match reqwest::Url::parse(raw) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let host = u.host_str().unwrap_or("");
            format!("{}://{host}{port}{}", u.scheme(), path(u.path()))
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// A validated webhook, ready for a worker.
#[derive(Clone)]
pub struct Webhook {
    /// Pass these, in config order, to [`Outbox::open`].
    pub name: String,
    /// The name an unnamed webhook had before its default name left out the URL's path
    /// (`scheme://host:port/path`): its deliveries in the store move to `name` at start
    /// ([`crate::alert::outbox::Outbox::rename_webhooks`]).
    pub renamed_from: Option<String>,
    pub url: reqwest::Url,
    pub secret: Arc<[u8]>,
    pub types: Option<Vec<AlertType>>,
    pub timeout: Duration,
    pub max_age: Duration,
    pub max_in_flight: usize,
    /// Extra trusted roots from `ca_file`.
    pub ca: Option<Vec<reqwest::Certificate>>,
    /// A digest of every setting above (the CA file's bytes for `ca`): a reload whose webhooks
    /// all keep theirs leaves their workers running.
    pub settings: [u8; 32],
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

    /// The HTTP client for this webhook: `shared` unless it trusts a private CA, which needs a
    /// client of its own.
    pub fn client(&self, shared: &reqwest::Client) -> Result<reqwest::Client, reqwest::Error> {
        match &self.ca {
            None => Ok(shared.clone()),
            Some(certs) => client_builder().tls_certs_merge(certs.clone()).build(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let z = parse("url = \"http://x\"\nsecret = \"a\"\ntypes = [\"risk_zone_dwell\", \"device_separation\", \"all_silent\"]")
            .unwrap();
        assert!(z.matches(AlertType::RiskZoneDwell) && z.matches(AlertType::AllSilent));
        assert!(!z.matches(AlertType::RiskZoneEnter));
        let w = c.resolve().unwrap();
        // The default name shows neither credentials, query nor path (a chat bot's token
        // lives in it), and remembers the name of earlier releases to move deliveries from.
        assert!(w.name.starts_with("https://example.com/…"), "{}", w.name);
        assert!(
            !w.name.contains("hook") && !w.name.contains("u:p"),
            "{}",
            w.name
        );
        assert_eq!(w.renamed_from.as_deref(), Some("https://example.com/hook"));
        let other = parse("url = \"https://example.com/hook2\"\nsecret = \"a\"").unwrap();
        assert_ne!(other.resolve().unwrap().name, w.name);
        let root = parse("url = \"https://example.com:8443/\"\nsecret = \"a\"").unwrap();
        let root = root.resolve().unwrap();
        assert_eq!(root.name, "https://example.com:8443");
        assert_eq!(
            root.renamed_from.as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(w.max_in_flight, 4);
        assert_eq!(&*w.secret, b"abc");
        assert!(!format!("{c:?}{w:?}").contains("abc"));
        assert_eq!(
            targets(&[w.clone(), w], AlertType::SilentOverdue),
            vec![0, 1]
        );
    }

    /// The settings digest is the same for the same table and moves with any setting, the
    /// secret included (a secret file rewritten under the same config).
    #[test]
    fn settings_digest_follows_every_setting() {
        let digest = |extra: &str| {
            parse(&format!(
                "url = \"https://h.example/hook\"\nsecret = \"abc\"\n{extra}"
            ))
            .unwrap()
            .resolve()
            .unwrap()
            .settings
        };
        assert_eq!(digest(""), digest(""));
        for extra in [
            "timeout = \"3s\"",
            "max_in_flight = 2",
            "types = [\"tamper\"]",
        ] {
            assert_ne!(digest(""), digest(extra), "{extra}");
        }
        let other = parse("url = \"https://h.example/hook\"\nsecret = \"abd\"").unwrap();
        assert_ne!(digest(""), other.resolve().unwrap().settings);
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
            ca_file: None,
        };
        let w = c.resolve().unwrap();
        assert_eq!(&*w.secret, b"hunter2");
        assert_eq!(w.name, "collections");
        assert_eq!(w.max_in_flight, 2);

        // A CA file that is not PEM is named, with the key.
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let e = WebhookConfig {
            ca_file: Some(bad),
            ..c
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("webhook.ca_file:"), "{e}");
    }
}
