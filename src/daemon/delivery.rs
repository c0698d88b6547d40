//! The webhook workers, one per `[[webhook]]`, restartable on reload.

use super::DaemonError;
use crate::alert::outbox::Outbox;
use crate::alert::webhook::Webhook;
use crate::config::Config;
use tokio_util::sync::CancellationToken;

pub struct Delivery {
    stop: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// Each running webhook's settings digest, in the outbox's order.
    settings: Vec<[u8; 32]>,
}

/// Each webhook with the HTTP client it goes through: what can fail (a private CA that does
/// not parse) fails here, before any worker stops or starts, so that a reload either replaces
/// the whole set of workers or leaves the running one alone.
pub struct Prepared(Vec<(Webhook, reqwest::Client)>);

impl Delivery {
    /// Builds every webhook's HTTP client.
    pub fn prepare(
        webhooks: Vec<Webhook>,
        client: &reqwest::Client,
    ) -> Result<Prepared, DaemonError> {
        webhooks
            .into_iter()
            .map(|w| match w.client(client) {
                Ok(c) => Ok((w, c)),
                Err(e) => Err(DaemonError::Other(format!(
                    "webhook {}: HTTP client: {e}",
                    w.name
                ))),
            })
            .collect::<Result<_, _>>()
            .map(Prepared)
    }

    /// Whether the running workers are these webhooks', every setting the same: then a reload
    /// has nothing to restart (a restart cuts the requests in flight and retries every pending
    /// alert at once, past its backoff).
    pub fn runs(&self, webhooks: &[Webhook]) -> bool {
        webhooks.len() == self.settings.len()
            && webhooks
                .iter()
                .zip(&self.settings)
                .all(|(w, s)| w.settings == *s)
    }

    /// Starts a worker per webhook; each retries its pending alerts at once. All or none: a
    /// worker that cannot start stops those started before it.
    pub fn start(outbox: &Outbox, prepared: Prepared) -> Result<Delivery, DaemonError> {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        let settings = prepared.0.iter().map(|(w, _)| w.settings).collect();
        for (i, (w, client)) in prepared.0.into_iter().enumerate() {
            let name = w.name.clone();
            match crate::alert::webhook::spawn(
                outbox.clone(),
                i,
                w,
                client,
                stop.clone(),
                Default::default(),
            ) {
                Ok(jh) => workers.push(jh),
                Err(e) => {
                    stop.cancel();
                    return Err(DaemonError::Other(format!("webhook {name}: {e}")));
                }
            }
        }
        Ok(Delivery {
            stop,
            workers,
            settings,
        })
    }

    pub async fn stop(&mut self) {
        self.stop.cancel();
        for w in self.workers.drain(..) {
            let _ = w.await;
        }
    }
}

/// The `[[webhook]]` tables with their secrets read.
pub fn resolve_webhooks(cfg: &Config) -> Result<Vec<Webhook>, DaemonError> {
    cfg.webhooks
        .iter()
        .enumerate()
        .map(|(i, w)| {
            w.resolve()
                .map_err(|e| DaemonError::Other(format!("webhook[{i}]: {e}")))
        })
        .collect()
}
