//! What the delivery workers read: wake-ups, due deliveries, the start-up sweep.

use super::keys::*;
use super::*;

impl Outbox {
    /// Wakes every worker. Call after the flush that made new alerts durable.
    pub fn notify(&self) {
        for n in &self.inner.notifiers {
            // notify_one keeps a permit if the worker is busy, so no wake-up is lost.
            n.notify_one();
        }
    }

    /// The wake-up handle of one webhook's worker.
    pub fn notifier(&self, webhook: usize) -> Result<Arc<Notify>> {
        self.inner
            .notifiers
            .get(webhook)
            .cloned()
            .ok_or(OutboxError::UnknownWebhook(webhook))
    }

    /// Alerts currently `pending` (the `lienwatch_outbox_depth` gauge).
    pub fn pending_alerts(&self) -> u64 {
        self.lock().pending_alerts
    }

    /// Deliveries still pending for one webhook.
    pub fn pending_deliveries(&self, webhook: usize) -> Result<u64> {
        self.lock()
            .pending_by_webhook
            .get(webhook)
            .copied()
            .ok_or(OutboxError::UnknownWebhook(webhook))
    }

    /// The delivery record of one alert for one webhook.
    pub fn delivery(&self, webhook: usize, seq: u64) -> Result<Option<DeliveryRecord>> {
        self.load_delivery(self.wid(webhook)?, seq)
    }

    fn job(&self, seq: u64, record: DeliveryRecord) -> Result<Option<Job>> {
        Ok(self.load_alert(seq)?.map(|a| Job {
            seq,
            alert_id: a.id,
            body: bytes::Bytes::from(a.body),
            record,
        }))
    }

    /// A schedule entry whose records cannot be read (disk damage, or a record written by a
    /// build that lays it out otherwise) is taken off the schedule, its delivery failed and out
    /// of the pending counts, and logged, so that the deliveries behind it still go out: left
    /// there, every scan stopped at it, and its webhook got nothing more.
    fn set_aside(
        &self,
        webhook: usize,
        queue_key: &[u8],
        seq: Option<u64>,
        e: &OutboxError,
    ) -> Result<()> {
        tracing::error!(error = %e, "outbox: a delivery whose records cannot be read is taken off the schedule and failed");
        match seq {
            Some(seq) => self.fail_unreadable(webhook, seq, queue_key, &e.to_string()),
            None => {
                self.inner.tree.remove(queue_key)?;
                Ok(())
            }
        }
    }

    /// Every alert inserted so far is on disk: called after the flush that covers them.
    pub fn mark_durable(&self) {
        let next = *self
            .inner
            .next_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner
            .durable
            .fetch_max(next, std::sync::atomic::Ordering::Release);
    }

    /// Whether alert `seq` is on disk, and so may be sent.
    fn is_durable(&self, seq: u64) -> bool {
        seq < self
            .inner
            .durable
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Up to `max` pending deliveries for `webhook` that are due at `now`, oldest due first,
    /// skipping `busy` ones (in flight). Also returns the next due time after those, so the worker
    /// knows how long it may sleep. Reads at most `max + busy.len() + 2` schedule entries.
    ///
    /// No retry is put further ahead than `horizon` (the backoff's cap) of when it was decided:
    /// one that lies further ahead of `now` was decided before the host clock stepped back, and
    /// is due now, not after the step's size (a day's correction would hold it a day).
    pub fn due(
        &self,
        webhook: usize,
        now: Timestamp,
        horizon: std::time::Duration,
        busy: &HashSet<u64>,
        max: usize,
    ) -> Result<(Vec<Job>, Option<Timestamp>)> {
        let wid = self.wid(webhook)?;
        let mut jobs = Vec::new();
        let mut next = None;
        let prefix = queue_prefix(wid);
        // Those due by now, then those past the horizon: two ranges of the schedule's order.
        let past_horizon = queue_key(wid, now.add(horizon).add_millis(1), 0);
        let ranges = [
            self.inner.tree.range(prefix.to_vec()..),
            self.inner.tree.range(past_horizon.to_vec()..),
        ];
        for (stepped, range) in ranges.into_iter().enumerate() {
            for kv in range {
                let (k, _) = kv?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let Some((due, seq)) = parse_queue_key(&k) else {
                    self.set_aside(webhook, &k, None, &corrupt("queue key", "length"))?;
                    continue;
                };
                if stepped == 0 && due > time_key(now) {
                    next = Some(Timestamp::from_millis(due as i64));
                    break;
                }
                if busy.contains(&seq) || !self.is_durable(seq) {
                    continue;
                }
                if jobs.len() >= max {
                    next = Some(Timestamp::from_millis(due as i64).min(now));
                    break;
                }
                let loaded = self.load_delivery(wid, seq).and_then(|rec| match rec {
                    Some(rec) if rec.state == State::Pending => self.job(seq, rec).map(Some),
                    _ => Ok(None),
                });
                match loaded {
                    Ok(Some(Some(job))) => jobs.push(job),
                    Ok(Some(None)) => {}
                    // Cannot happen with atomic batches; drop the entry rather than rescan it
                    // forever.
                    Ok(None) => {
                        self.inner.tree.remove(&k)?;
                    }
                    Err(e @ OutboxError::Corrupt { .. }) => {
                        self.set_aside(webhook, &k, Some(seq), &e)?
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((jobs, next))
    }

    /// The start-up sweep: walks the whole schedule once from `cursor` (exclusive; `None` = from
    /// the start), ignoring due times, and returns up to `max` deliveries not attempted since
    /// `since` and not `busy`, plus the cursor to continue from (`None` when done). This is how
    /// pending alerts are retried right after a restart instead of after their stored backoff.
    /// Reads at most `budget` entries per call so a huge backlog never stalls the worker.
    pub fn sweep(
        &self,
        webhook: usize,
        cursor: Option<&[u8]>,
        since: Timestamp,
        busy: &HashSet<u64>,
        max: usize,
        budget: usize,
    ) -> Result<(Vec<Job>, Option<Vec<u8>>)> {
        let wid = self.wid(webhook)?;
        let prefix = queue_prefix(wid);
        let start: Vec<u8> = match cursor {
            Some(c) => {
                let mut s = c.to_vec();
                s.push(0); // the smallest key after `c`
                s
            }
            None => prefix.to_vec(),
        };
        let mut jobs = Vec::new();
        let mut last: Vec<u8> = cursor.map_or_else(|| prefix.to_vec(), <[u8]>::to_vec);
        for (visited, kv) in self.inner.tree.range(start..).enumerate() {
            let (k, _) = kv?;
            if !k.starts_with(&prefix) {
                return Ok((jobs, None));
            }
            if jobs.len() >= max || visited >= budget {
                return Ok((jobs, Some(last)));
            }
            last = k.to_vec();
            let Some((_, seq)) = parse_queue_key(&k) else {
                self.set_aside(webhook, &k, None, &corrupt("queue key", "length"))?;
                continue;
            };
            // Not yet on disk: `due` sends it once it is.
            if busy.contains(&seq) || !self.is_durable(seq) {
                continue;
            }
            let loaded = self.load_delivery(wid, seq).and_then(|rec| match rec {
                Some(rec)
                    if rec.state == State::Pending
                        && rec.last_attempt_at.is_none_or(|t| t < since) =>
                {
                    self.job(seq, rec)
                }
                _ => Ok(None),
            });
            match loaded {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) => {}
                Err(e @ OutboxError::Corrupt { .. }) => {
                    self.set_aside(webhook, &k, Some(seq), &e)?
                }
                Err(e) => return Err(e),
            }
        }
        Ok((jobs, None))
    }
}
