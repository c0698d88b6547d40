//! Alerts as the API shows them (`GET /v1/alerts`): the alert with its delivery state.

use super::keys::*;
use super::*;

/// Per-webhook delivery status in [`AlertView`].
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct DeliveryView {
    pub webhook: String,
    pub state: State,
    pub attempts: u32,
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
}

/// An alert as `GET /v1/alerts` shows it: the alert's own fields plus `state`, `attempts` and
/// `last_error`, flat in one object. `seq` is the paging cursor (pass it as `before`), and
/// `deliveries` breaks the state down per webhook.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: Alert,
    pub state: State,
    /// Attempts summed over all target webhooks.
    pub attempts: u32,
    /// The most recent error of any target webhook, if the last attempt there failed.
    pub last_error: Option<String>,
    pub seq: u64,
    pub deliveries: Vec<DeliveryView>,
}

impl Outbox {
    /// Alerts for `GET /v1/alerts`, newest first: at most `limit`, only those with `state` if
    /// given, only those older than the cursor `before` (a `seq` from a previous page). Reads only
    /// the entries it returns (plus their delivery records), whatever the outbox size.
    pub fn list(
        &self,
        state: Option<State>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<AlertView>> {
        let end = before.unwrap_or(u64::MAX);
        let seqs: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match state {
            None => Box::new(self.inner.tree.range(alert_key(0)..alert_key(end)).rev()),
            Some(s) => Box::new(
                self.inner
                    .tree
                    .range(state_key(s, 0)..state_key(s, end))
                    .rev(),
            ),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for kv in seqs {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv?;
            let seq = be_u64(&k[k.len().saturating_sub(8)..])
                .ok_or_else(|| corrupt("list key", "short key"))?;
            if let Some(view) = self.readable(seq)? {
                out.push(view);
            }
        }
        Ok(out)
    }

    /// One vehicle's alerts, newest first, as [`Outbox::list`] pages them. Reads that vehicle's
    /// alerts only (all of them in the worst case, when `state` matches none).
    pub fn list_for_vehicle(
        &self,
        vehicle: &str,
        state: Option<State>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<AlertView>> {
        let end = before.unwrap_or(u64::MAX);
        let range = vehicle_key(vehicle, 0)..vehicle_key(vehicle, end);
        let mut out = Vec::with_capacity(limit.min(1024));
        for kv in self.inner.tree.range(range).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv?;
            let seq = be_u64(&k[k.len().saturating_sub(8)..])
                .ok_or_else(|| corrupt("vehicle key", "short key"))?;
            if let Some(view) = self
                .readable(seq)?
                .filter(|v| state.is_none_or(|s| v.state == s))
            {
                out.push(view);
            }
        }
        Ok(out)
    }

    /// [`Outbox::view`] for a listing: an alert whose records cannot be read is logged and left
    /// out, so that one damaged record does not fail every page that holds it.
    fn readable(&self, seq: u64) -> Result<Option<AlertView>> {
        match self.view(seq) {
            Err(e @ OutboxError::Corrupt { .. }) => {
                tracing::error!(error = %e, "outbox: an alert whose records cannot be read is left out of a listing");
                Ok(None)
            }
            r => r,
        }
    }

    /// One alert with its delivery state.
    pub fn view(&self, seq: u64) -> Result<Option<AlertView>> {
        let Some(rec) = self.load_alert(seq)? else {
            return Ok(None);
        };
        let alert: Alert =
            serde_json::from_slice(&rec.body).map_err(|e| corrupt(format!("alert {seq}"), e))?;
        let mut records = Vec::with_capacity(rec.targets.len());
        let mut deliveries = Vec::with_capacity(rec.targets.len());
        for &wid in &rec.targets {
            let Some(r) = self.load_delivery(wid, seq)? else {
                continue;
            };
            deliveries.push(DeliveryView {
                webhook: self.name_of(wid)?,
                state: r.state,
                attempts: r.attempts,
                last_error: r.last_error.clone(),
                next_attempt_at: (r.state == State::Pending).then_some(r.next_attempt_at),
            });
            records.push(r);
        }
        let last_error = records
            .iter()
            .filter(|r| r.last_error.is_some())
            .max_by_key(|r| r.last_attempt_at)
            .and_then(|r| r.last_error.clone());
        Ok(Some(AlertView {
            alert,
            state: overall(&records),
            attempts: records.iter().map(|r| r.attempts).sum(),
            last_error,
            seq,
            deliveries,
        }))
    }

    /// Name for a wid; also finds webhooks no longer configured (their records stay on disk).
    fn name_of(&self, wid: u32) -> Result<String> {
        if let Some(i) = self.inner.wids.iter().position(|&w| w == wid) {
            return Ok(self.inner.names[i].clone());
        }
        for kv in self.inner.tree.scan_prefix([T_WEBHOOK]) {
            let (k, v) = kv?;
            if be_u32(&v) == Some(wid) {
                return Ok(String::from_utf8_lossy(&k[1..]).into_owned());
            }
        }
        Ok(format!("#{wid}"))
    }
}
