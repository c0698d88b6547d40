//! Writes: queueing an alert for its webhooks, recording each delivery attempt, pruning old
//! alerts. None of them flushes (see "Durability" in `mod.rs`).

use super::keys::*;
use super::*;

impl Outbox {
    /// Records an alert and a pending delivery for each target webhook (indexes into the names
    /// given at open; duplicates ignored), in a batch of its own. Returns the alert's sequence
    /// number. The engine writes its alerts with [`Outbox::stage`] instead, in its commit's batch.
    ///
    /// Does **not** flush: the caller's flush makes it durable; then call [`Outbox::notify`].
    /// With no target the alert is stored as `delivered` with 0 attempts (nothing to deliver,
    /// but visible in the API).
    pub fn insert(&self, alert: &Alert, targets: &[usize]) -> Result<u64> {
        let mut staged = self.stage([(alert, targets)])?;
        let (tree, batch) = staged.batch();
        tree.apply_batch(batch)?;
        Ok(staged.applied().start)
    }

    /// Prepares the records of `alerts` (each with its target webhooks) as one batch, for the
    /// caller to write together with the state changes that raised them; see [`StagedAlerts`].
    /// Until it is applied or dropped, delivery outcomes wait, so that the pending counts it
    /// writes stay true.
    pub fn stage<'a>(
        &self,
        alerts: impl IntoIterator<Item = (&'a Alert, &'a [usize])>,
    ) -> Result<StagedAlerts<'_>> {
        #[cfg(test)]
        if self
            .inner
            .fail_inserts
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(OutboxError::Sled(sled::Error::Io(std::io::Error::other(
                "injected",
            ))));
        }
        // Encoded before the locks are taken: the workers wait only for the batch's keys.
        let now = self.now();
        let delivery = DeliveryRecord::new_pending(now);
        let del_bytes = postcard::to_allocvec(&delivery).map_err(|e| corrupt("new delivery", e))?;
        let mut records = Vec::new();
        for (alert, targets) in alerts {
            let mut idx: Vec<usize> = targets.to_vec();
            idx.sort_unstable();
            idx.dedup();
            if let Some(&bad) = idx.iter().find(|&&i| i >= self.inner.wids.len()) {
                return Err(OutboxError::UnknownWebhook(bad));
            }
            let rec = AlertRecord {
                id: alert.id.clone(),
                created_at: now.millis(),
                targets: idx.iter().map(|&i| self.inner.wids[i]).collect(),
                body: serde_json::to_vec(alert)?,
            };
            let rec_bytes = postcard::to_allocvec(&rec).map_err(|e| corrupt("new alert", e))?;
            records.push((rec_bytes, idx, rec.targets, alert.vehicle_id.as_str()));
        }
        let c = self.lock();
        let next_seq = self
            .inner
            .next_seq
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut pending_alerts = c.pending_alerts;
        let mut pending_by_webhook = c.pending_by_webhook.clone();
        let mut seq = *next_seq;
        let mut b = sled::Batch::default();
        for (rec_bytes, idx, wids, vehicle_id) in records {
            b.insert(&alert_key(seq), rec_bytes);
            b.insert(vehicle_key(vehicle_id, seq), &[]);
            for (&i, &wid) in idx.iter().zip(&wids) {
                b.insert(&delivery_key(wid, seq), del_bytes.clone());
                b.insert(&queue_key(wid, now, seq), &[]);
                pending_by_webhook[i] += 1;
                b.insert(
                    webhook_pending_key(wid),
                    &pending_by_webhook[i].to_be_bytes(),
                );
            }
            let state = if idx.is_empty() {
                State::Delivered
            } else {
                State::Pending
            };
            b.insert(&state_key(state, seq), &[]);
            if state == State::Pending {
                pending_alerts += 1;
                b.insert(K_PENDING, &pending_alerts.to_be_bytes());
            }
            seq += 1;
        }
        Ok(StagedAlerts {
            outbox: self,
            counters: c,
            next_seq,
            batch: Some(b),
            seq,
            pending_alerts,
            pending_by_webhook,
        })
    }

    /// Persists the outcome of one attempt: attempts + 1, the error, the new schedule entry or
    /// none, and the alert's overall state. Ignored if the delivery is no longer pending.
    pub fn record_attempt(
        &self,
        webhook: usize,
        seq: u64,
        at: Timestamp,
        outcome: &AttemptOutcome,
    ) -> Result<()> {
        let wid = self.wid(webhook)?;
        let mut c = self.lock();
        let Some(mut rec) = self.load_delivery(wid, seq)? else {
            return Ok(());
        };
        if rec.state != State::Pending {
            return Ok(());
        }
        let Some(alert) = self.load_alert(seq)? else {
            return Ok(());
        };
        let mut b = sled::Batch::default();
        b.remove(&queue_key(wid, rec.next_attempt_at, seq));
        rec.attempts = rec.attempts.saturating_add(1);
        rec.last_attempt_at = Some(at);
        match outcome {
            AttemptOutcome::Delivered => {
                rec.state = State::Delivered;
                rec.last_error = None;
            }
            AttemptOutcome::Retry {
                error,
                next_attempt_at,
            } => {
                rec.last_error = Some(error.clone());
                rec.next_attempt_at = *next_attempt_at;
                b.insert(&queue_key(wid, *next_attempt_at, seq), &[]);
            }
            AttemptOutcome::GiveUp { error } => {
                rec.state = State::Failed;
                rec.last_error = Some(error.clone());
            }
        }
        let new_state = overall(&self.deliveries_with(&alert, seq, wid, &rec)?);
        let alert_state =
            (rec.state != State::Pending && new_state != State::Pending).then_some(new_state);
        self.write_delivery(&mut c, b, webhook, seq, &rec, alert_state)
    }

    /// Writes webhook `webhook`'s delivery `rec` of alert `seq` in batch `b`. One that left
    /// `pending` leaves the webhook's pending count, and `alert_state`, when given (it was the
    /// alert's last pending delivery), moves the alert there and out of the pending alerts.
    fn write_delivery(
        &self,
        c: &mut Counters,
        mut b: sled::Batch,
        webhook: usize,
        seq: u64,
        rec: &DeliveryRecord,
        alert_state: Option<State>,
    ) -> Result<()> {
        let wid = self.wid(webhook)?;
        b.insert(
            &delivery_key(wid, seq),
            postcard::to_allocvec(rec).map_err(|e| corrupt("delivery", e))?,
        );
        let finished = rec.state != State::Pending;
        if let Some(state) = alert_state {
            b.remove(&state_key(State::Pending, seq));
            b.insert(&state_key(state, seq), &[]);
            b.insert(K_PENDING, &c.pending_alerts.saturating_sub(1).to_be_bytes());
        }
        if finished {
            b.insert(
                webhook_pending_key(wid),
                &c.pending_by_webhook[webhook]
                    .saturating_sub(1)
                    .to_be_bytes(),
            );
        }
        self.inner.tree.apply_batch(b)?;
        if alert_state.is_some() {
            c.pending_alerts = c.pending_alerts.saturating_sub(1);
        }
        if finished {
            c.pending_by_webhook[webhook] = c.pending_by_webhook[webhook].saturating_sub(1);
        }
        self.publish_gauges(c);
        Ok(())
    }

    /// The deliveries of `alert`, with `rec` as webhook `wid`'s. One that cannot be read counts
    /// as failed: it is never retried ([`Outbox::fail_unreadable`]).
    fn deliveries_with(
        &self,
        alert: &AlertRecord,
        seq: u64,
        wid: u32,
        rec: &DeliveryRecord,
    ) -> Result<Vec<DeliveryRecord>> {
        let mut all = Vec::with_capacity(alert.targets.len());
        for &t in &alert.targets {
            if t == wid {
                all.push(rec.clone());
                continue;
            }
            match self.load_delivery(t, seq) {
                Ok(Some(r)) => all.push(r),
                Ok(None) => {}
                Err(OutboxError::Corrupt { .. }) => all.push(DeliveryRecord {
                    state: State::Failed,
                    ..rec.clone()
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    /// A pending delivery whose records cannot be read: off the schedule, failed (a fresh
    /// record where its own is unreadable), out of the pending counts, and the alert's state
    /// moved on when it was the last one pending. An alert whose own record cannot be read keeps
    /// its state: which webhooks it had is lost.
    pub(super) fn fail_unreadable(
        &self,
        webhook: usize,
        seq: u64,
        queue_key: &[u8],
        why: &str,
    ) -> Result<()> {
        let wid = self.wid(webhook)?;
        let mut c = self.lock();
        let mut b = sled::Batch::default();
        b.remove(queue_key);
        let now = self.now();
        let mut rec = match self.load_delivery(wid, seq) {
            Ok(Some(r)) if r.state == State::Pending => r,
            Ok(_) => {
                self.inner.tree.apply_batch(b)?;
                return Ok(());
            }
            Err(_) => DeliveryRecord::new_pending(now),
        };
        rec.state = State::Failed;
        rec.last_error = Some(format!("its stored record cannot be read: {why}"));
        // Counted out once: another webhook may have finished the alert already, counting this
        // delivery failed ([`Outbox::deliveries_with`]). Where the alert's record cannot be read,
        // the configured webhooks' deliveries say whether any is still pending.
        let still_pending = self
            .inner
            .tree
            .contains_key(state_key(State::Pending, seq))?;
        let alert_done = still_pending
            && match self.load_alert(seq) {
                Ok(Some(alert)) => {
                    overall(&self.deliveries_with(&alert, seq, wid, &rec)?) != State::Pending
                }
                _ => {
                    let mut pending = false;
                    for &other in self.inner.wids.iter().filter(|&&w| w != wid) {
                        if let Ok(Some(r)) = self.load_delivery(other, seq) {
                            pending |= r.state == State::Pending;
                        }
                    }
                    !pending
                }
            };
        let alert_state = alert_done.then_some(State::Failed);
        self.write_delivery(&mut c, b, webhook, seq, &rec, alert_state)
    }

    /// Deletes delivered and failed alerts that entered the outbox before `cutoff`, oldest first
    /// and at most `max` per call, with their delivery records and index entries; returns how many
    /// went. Pending alerts are never pruned, whatever their age. Not flushed: it rides on the
    /// next commit (a crash only brings an already finished alert back for the next pass).
    ///
    /// The scan reads and parses without the outbox's lock, which the engine thread takes for
    /// each commit that raised alerts: delivered and failed are final states, so nothing else
    /// writes what this removes. Only the batch is written under the lock, in turn with the
    /// workers'.
    pub fn prune(&self, cutoff: Timestamp, max: usize) -> Result<usize> {
        let mut pruned = 0;
        let mut floor = read_u64(&self.inner.tree, K_SEQ_FLOOR)?;
        for state in [State::Delivered, State::Failed] {
            let mut b = sled::Batch::default();
            for kv in self.inner.tree.scan_prefix(&state_key(state, 0)[..2]) {
                if pruned >= max {
                    break;
                }
                let (k, _) = kv?;
                let seq = be_u64(&k[k.len().saturating_sub(8)..])
                    .ok_or_else(|| corrupt("state key", "short key"))?;
                let Some(rec) = self.load_alert(seq)? else {
                    b.remove(k);
                    continue;
                };
                // Sequence order is insertion order: the first young one ends the pass.
                if rec.created_at >= cutoff.millis() {
                    break;
                }
                b.remove(k);
                b.remove(&alert_key(seq));
                if let Some(vehicle) = vehicle_of(&rec.body) {
                    b.remove(vehicle_key(&vehicle, seq));
                }
                for &wid in &rec.targets {
                    b.remove(&delivery_key(wid, seq));
                }
                floor = floor.max(seq + 1);
                pruned += 1;
            }
            // In the same batch as the removals: no kill can leave a number free for reuse.
            b.insert(K_SEQ_FLOOR, &floor.to_be_bytes());
            let _c = self.lock();
            self.inner.tree.apply_batch(b)?;
        }
        Ok(pruned)
    }
}

/// Alerts prepared as one batch of the outbox's tree ([`Outbox::stage`]): write
/// [`StagedAlerts::batch`] (alone, or in one atomic write with other trees), then call
/// [`StagedAlerts::applied`]. Dropped without that, nothing changes. Holds the outbox's lock.
pub struct StagedAlerts<'a> {
    outbox: &'a Outbox,
    counters: MutexGuard<'a, Counters>,
    next_seq: MutexGuard<'a, u64>,
    batch: Option<sled::Batch>,
    /// The sequence number after the last staged alert.
    seq: u64,
    pending_alerts: u64,
    pending_by_webhook: Vec<u64>,
}

impl StagedAlerts<'_> {
    /// The outbox's tree and the batch to write to it (an empty batch the second time).
    pub fn batch(&mut self) -> (&sled::Tree, sled::Batch) {
        (
            &self.outbox.inner.tree,
            self.batch.take().unwrap_or_default(),
        )
    }

    /// The batch is written: the staged alerts are the outbox's. Returns their sequence numbers.
    pub fn applied(mut self) -> std::ops::Range<u64> {
        let first = *self.next_seq;
        *self.next_seq = self.seq;
        self.counters.pending_alerts = self.pending_alerts;
        self.counters.pending_by_webhook = std::mem::take(&mut self.pending_by_webhook);
        self.outbox.publish_gauges(&self.counters);
        first..self.seq
    }
}
