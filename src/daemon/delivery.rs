//! The webhook workers, one per `[[webhook]]`, restartable on reload.

use super::DaemonError;
use crate::alert::outbox::Outbox;
use crate::alert::webhook::Webhook;
use crate::config::Config;
use tokio_util::sync::CancellationToken;

pub struct Delivery {
    stop: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Delivery {
    /// Starts a worker per webhook; each retries its pending alerts at once.
    pub fn start(
        outbox: &Outbox,
        webhooks: Vec<Webhook>,
        client: &reqwest::Client,
    ) -> Result<Delivery, DaemonError> {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for (i, w) in webhooks.into_iter().enumerate() {
            let name = w.name.clone();
            let client = w
                .client(client)
                .map_err(|e| DaemonError::Other(format!("webhook {name}: HTTP client: {e}")))?;
            let jh = crate::alert::webhook::spawn(
                outbox.clone(),
                i,
                w,
                client,
                stop.clone(),
                Default::default(),
            )
            .map_err(|e| DaemonError::Other(format!("webhook {name}: {e}")))?;
            workers.push(jh);
        }
        Ok(Delivery { stop, workers })
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
