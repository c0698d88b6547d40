//! The alert outbox: every alert and its per-webhook delivery state, kept in sled.
//!
//! # Durability
//! [`Outbox::insert`] only writes; it never flushes. The engine flushes the `sled::Db` once per
//! group commit, so an alert becomes durable in the same flush as the state change that raised
//! it: after a crash either both survive or neither does, and an alert is never lost while its
//! cause is remembered. Call [`Outbox::notify`] after that flush so that workers deliver at once.
//!
//! Delivery outcomes written by the workers are not flushed either: they ride on the next group
//! commit or sled's periodic flush. Losing one to a crash only means the alert is sent again, which
//! receivers must tolerate anyway (the alert `id` is their idempotency key).
//!
//! # Layout
//! One tree, `outbox`, so that every change is a single atomic `apply_batch`. Keys start with a
//! one-byte tag; numbers are big-endian so that key order is numeric order:
//!
//! | key | value |
//! |---|---|
//! | `a` seq | [`AlertRecord`]: alert id, targets, insert time, the exact JSON body |
//! | `d` wid seq | [`DeliveryRecord`] for one (alert, webhook) |
//! | `q` wid due seq | empty: the schedule of pending deliveries, ordered by next attempt time |
//! | `s` state seq | empty: the overall state of each alert, for filtered listing |
//! | `w` name | wid (u32): stable webhook ids, so that reordering the config is harmless |
//! | `m` ... | counters (pending alerts, pending deliveries per webhook) |
//!
//! `wid` is a persistent id for a webhook name; the public API speaks of webhook *indexes* (the
//! order of the names given to [`Outbox::open`]), which the outbox maps to wids.

use super::Alert;
use crate::event::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The injectable clock (shared with the protocol sessions), so that tests can age alerts by days
/// without sleeping.
pub type Clock = crate::time::Clock;

const TREE: &str = "outbox";
const T_ALERT: u8 = b'a';
const T_DELIVERY: u8 = b'd';
const T_QUEUE: u8 = b'q';
const T_STATE: u8 = b's';
const T_WEBHOOK: u8 = b'w';
const K_PENDING: &[u8] = b"mpending";
const K_WEBHOOK_PENDING: &[u8] = b"mw";
const K_NEXT_WID: &[u8] = b"mnextwid";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("outbox record {what} is corrupt: {why}")]
    Corrupt { what: String, why: String },
    #[error("alert cannot be serialised: {0}")]
    Json(#[from] serde_json::Error),
    #[error("webhook index {0} is not configured")]
    UnknownWebhook(usize),
    #[error("two webhooks share the name {0:?}; give each a distinct `name`")]
    DuplicateWebhook(String),
}

pub type Result<T> = std::result::Result<T, OutboxError>;

/// Delivery state of one (alert, webhook), and the overall state of an alert in the API.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Delivered,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Failed => "failed",
        }
    }

    /// For `?state=` query parameters.
    pub fn parse(s: &str) -> Option<Self> {
        [State::Pending, State::Delivered, State::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    fn tag(self) -> u8 {
        match self {
            State::Pending => 0,
            State::Delivered => 1,
            State::Failed => 2,
        }
    }
}

/// What is stored per alert. The body is kept as bytes so that every attempt sends exactly the
/// same bytes (and signature input) however `Alert`'s serialisation evolves.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AlertRecord {
    id: String,
    created_at: i64,
    targets: Vec<u32>,
    body: Vec<u8>,
}

/// Delivery state of one alert to one webhook.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub state: State,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the worker should try next (meaningful while pending).
    pub next_attempt_at: Timestamp,
    /// When the alert entered the outbox: `max_age` counts from here.
    pub created_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
}

/// One pending delivery handed to a worker.
#[derive(Clone, Debug)]
pub struct Job {
    pub seq: u64,
    pub alert_id: String,
    /// The alert JSON, identical on every attempt.
    pub body: bytes::Bytes,
    pub record: DeliveryRecord,
}

/// The result of one attempt, decided by the retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; try again at this time.
    Retry {
        error: String,
        next_attempt_at: Timestamp,
    },
    /// Failed and too old to retry (`max_age`).
    GiveUp {
        error: String,
    },
}

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

/// Counters kept in memory and persisted in the same batch as each change, so that the depth gauge
/// costs nothing to read and is exact after a restart.
struct Counters {
    pending_alerts: u64,
    /// Pending deliveries, by webhook index.
    pending_by_webhook: Vec<u64>,
}

struct Inner {
    tree: sled::Tree,
    names: Vec<String>,
    wids: Vec<u32>,
    notifiers: Vec<Arc<Notify>>,
    clock: Clock,
    /// Serialises read-modify-write of an alert's records (workers of different webhooks update
    /// the same alert's overall state). Held only for in-memory work and one batch write.
    counters: Mutex<Counters>,
    next_seq: Mutex<u64>,
}

/// Handle to the outbox. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("webhooks", &self.inner.names)
            .finish_non_exhaustive()
    }
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Times are stored as u64 for ordering; times before 1970 clamp to 0 (never happens in practice).
fn time_key(t: Timestamp) -> u64 {
    t.millis().max(0) as u64
}

fn alert_key(seq: u64) -> [u8; 9] {
    let mut k = [T_ALERT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn delivery_key(wid: u32, seq: u64) -> [u8; 13] {
    let mut k = [T_DELIVERY; 13];
    k[1..5].copy_from_slice(&wid.to_be_bytes());
    k[5..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn queue_prefix(wid: u32) -> [u8; 5] {
    let mut k = [T_QUEUE; 5];
    k[1..].copy_from_slice(&wid.to_be_bytes());
    k
}

fn queue_key(wid: u32, due: Timestamp, seq: u64) -> [u8; 21] {
    let mut k = [T_QUEUE; 21];
    k[1..5].copy_from_slice(&wid.to_be_bytes());
    k[5..13].copy_from_slice(&time_key(due).to_be_bytes());
    k[13..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// (due, seq) from a queue key.
fn parse_queue_key(k: &[u8]) -> Option<(u64, u64)> {
    if k.len() != 21 {
        return None;
    }
    Some((be_u64(&k[5..13])?, be_u64(&k[13..])?))
}

fn state_key(state: State, seq: u64) -> [u8; 10] {
    let mut k = [T_STATE; 10];
    k[1] = state.tag();
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn webhook_pending_key(wid: u32) -> Vec<u8> {
    let mut k = K_WEBHOOK_PENDING.to_vec();
    k.extend_from_slice(&wid.to_be_bytes());
    k
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64> {
    Ok(tree.get(key)?.and_then(|v| be_u64(&v)).unwrap_or(0))
}

fn corrupt(what: impl Into<String>, why: impl std::fmt::Display) -> OutboxError {
    OutboxError::Corrupt {
        what: what.into(),
        why: why.to_string(),
    }
}

/// Overall state: pending if any target is pending, else failed if any failed, else delivered
/// (which includes an alert with no target at all).
fn overall(records: &[DeliveryRecord]) -> State {
    if records.iter().any(|r| r.state == State::Pending) {
        State::Pending
    } else if records.iter().any(|r| r.state == State::Failed) {
        State::Failed
    } else {
        State::Delivered
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in the daemon's Db with the wall clock. `webhooks` are the
    /// configured webhook names in config order; indexes into this slice are what
    /// [`Outbox::insert`] and the workers use. Names, not positions, identify a webhook on disk.
    pub fn open(db: &sled::Db, webhooks: &[String]) -> Result<Outbox> {
        Self::open_with_clock(db, webhooks, Arc::new(Timestamp::now))
    }

    /// As [`Outbox::open`], with an injected clock (replay, tests).
    pub fn open_with_clock(db: &sled::Db, webhooks: &[String], clock: Clock) -> Result<Outbox> {
        let tree = db.open_tree(TREE)?;
        let mut seen = HashSet::new();
        let mut wids = Vec::with_capacity(webhooks.len());
        for name in webhooks {
            if !seen.insert(name.as_str()) {
                return Err(OutboxError::DuplicateWebhook(name.clone()));
            }
            let mut key = vec![T_WEBHOOK];
            key.extend_from_slice(name.as_bytes());
            let wid = match tree.get(&key)? {
                Some(v) => {
                    be_u32(&v).ok_or_else(|| corrupt(format!("webhook {name:?}"), "bad id"))?
                }
                None => {
                    let next = tree.get(K_NEXT_WID)?.and_then(|v| be_u32(&v)).unwrap_or(0);
                    let mut b = sled::Batch::default();
                    b.insert(key, &next.to_be_bytes());
                    b.insert(K_NEXT_WID, &(next + 1).to_be_bytes());
                    tree.apply_batch(b)?;
                    next
                }
            };
            wids.push(wid);
        }
        let next_seq = match tree.scan_prefix([T_ALERT]).next_back() {
            Some(kv) => {
                let (k, _) = kv?;
                be_u64(&k[1..]).ok_or_else(|| corrupt("alert key", "short key"))? + 1
            }
            None => 1,
        };
        // Deliveries to a webhook that left the config stay pending until it comes back under
        // the same name; say so instead of letting the backlog hide.
        for kv in tree.scan_prefix([T_WEBHOOK]) {
            let (k, v) = kv?;
            let Some(wid) = be_u32(&v) else { continue };
            if !wids.contains(&wid) {
                let left = read_u64(&tree, &webhook_pending_key(wid))?;
                if left > 0 {
                    tracing::warn!(
                        webhook = %String::from_utf8_lossy(&k[1..]),
                        pending = left,
                        "webhook no longer configured; its pending alerts stay pending"
                    );
                }
            }
        }
        let counters = Counters {
            pending_alerts: read_u64(&tree, K_PENDING)?,
            pending_by_webhook: wids
                .iter()
                .map(|&w| read_u64(&tree, &webhook_pending_key(w)))
                .collect::<Result<_>>()?,
        };
        let outbox = Outbox {
            inner: Arc::new(Inner {
                tree,
                names: webhooks.to_vec(),
                wids,
                notifiers: webhooks.iter().map(|_| Arc::new(Notify::new())).collect(),
                clock,
                counters: Mutex::new(counters),
                next_seq: Mutex::new(next_seq),
            }),
        };
        outbox.publish_gauges(&outbox.lock());
        Ok(outbox)
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves nothing half-written in sled (batches are atomic),
        // so the counters are still usable.
        self.inner
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn publish_gauges(&self, c: &Counters) {
        metrics::gauge!("lienwatch_outbox_depth").set(c.pending_alerts as f64);
        for (i, n) in c.pending_by_webhook.iter().enumerate() {
            metrics::gauge!("lienwatch_webhook_pending", "webhook" => self.inner.names[i].clone())
                .set(*n as f64);
        }
    }

    /// Now, by the outbox's clock (the workers use it too).
    pub fn now(&self) -> Timestamp {
        (self.inner.clock)()
    }

    pub fn webhook_names(&self) -> &[String] {
        &self.inner.names
    }

    /// Records an alert and a pending delivery for each target webhook (indexes into the names
    /// given at open; duplicates ignored). Returns the alert's sequence number.
    ///
    /// Does **not** flush: the caller's group-commit flush makes it durable together with the
    /// state change that raised it; then call [`Outbox::notify`]. With no target the alert is
    /// stored as `delivered` with 0 attempts (nothing to deliver, but visible in the API).
    pub fn insert(&self, alert: &Alert, targets: &[usize]) -> Result<u64> {
        let mut idx: Vec<usize> = targets.to_vec();
        idx.sort_unstable();
        idx.dedup();
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.inner.wids.len()) {
            return Err(OutboxError::UnknownWebhook(bad));
        }
        let body = serde_json::to_vec(alert)?;
        let now = self.now();
        let rec = AlertRecord {
            id: alert.id.clone(),
            created_at: now.millis(),
            targets: idx.iter().map(|&i| self.inner.wids[i]).collect(),
            body,
        };
        let rec_bytes = postcard::to_allocvec(&rec).map_err(|e| corrupt("new alert", e))?;
        let delivery = DeliveryRecord {
            state: State::Pending,
            attempts: 0,
            last_error: None,
            next_attempt_at: now,
            created_at: now,
            last_attempt_at: None,
        };
        let del_bytes = postcard::to_allocvec(&delivery).map_err(|e| corrupt("new delivery", e))?;

        let mut c = self.lock();
        let mut next_seq = self
            .inner
            .next_seq
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let seq = *next_seq;
        let mut b = sled::Batch::default();
        b.insert(&alert_key(seq), rec_bytes);
        for (&i, &wid) in idx.iter().zip(&rec.targets) {
            b.insert(&delivery_key(wid, seq), del_bytes.clone());
            b.insert(&queue_key(wid, now, seq), &[]);
            b.insert(
                webhook_pending_key(wid),
                &(c.pending_by_webhook[i] + 1).to_be_bytes(),
            );
        }
        let state = if idx.is_empty() {
            State::Delivered
        } else {
            State::Pending
        };
        b.insert(&state_key(state, seq), &[]);
        if state == State::Pending {
            b.insert(K_PENDING, &(c.pending_alerts + 1).to_be_bytes());
        }
        self.inner.tree.apply_batch(b)?;
        *next_seq = seq + 1;
        for &i in &idx {
            c.pending_by_webhook[i] += 1;
        }
        if state == State::Pending {
            c.pending_alerts += 1;
        }
        self.publish_gauges(&c);
        Ok(seq)
    }

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

    fn wid(&self, webhook: usize) -> Result<u32> {
        self.inner
            .wids
            .get(webhook)
            .copied()
            .ok_or(OutboxError::UnknownWebhook(webhook))
    }

    fn load_alert(&self, seq: u64) -> Result<Option<AlertRecord>> {
        match self.inner.tree.get(alert_key(seq))? {
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| corrupt(format!("alert {seq}"), e)),
            None => Ok(None),
        }
    }

    fn load_delivery(&self, wid: u32, seq: u64) -> Result<Option<DeliveryRecord>> {
        match self.inner.tree.get(delivery_key(wid, seq))? {
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| corrupt(format!("delivery {wid}/{seq}"), e)),
            None => Ok(None),
        }
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

    /// Up to `max` pending deliveries for `webhook` that are due at `now`, oldest due first,
    /// skipping `busy` ones (in flight). Also returns the next due time after those, so the worker
    /// knows how long it may sleep. Reads at most `max + busy.len() + 1` schedule entries.
    pub fn due(
        &self,
        webhook: usize,
        now: Timestamp,
        busy: &HashSet<u64>,
        max: usize,
    ) -> Result<(Vec<Job>, Option<Timestamp>)> {
        let wid = self.wid(webhook)?;
        let mut jobs = Vec::new();
        let mut next = None;
        for kv in self.inner.tree.scan_prefix(queue_prefix(wid)) {
            let (k, _) = kv?;
            let (due, seq) = parse_queue_key(&k).ok_or_else(|| corrupt("queue key", "length"))?;
            if due > time_key(now) {
                next = Some(Timestamp::from_millis(due as i64));
                break;
            }
            if busy.contains(&seq) {
                continue;
            }
            if jobs.len() >= max {
                next = Some(Timestamp::from_millis(due as i64));
                break;
            }
            match self.load_delivery(wid, seq)? {
                Some(rec) if rec.state == State::Pending => {
                    if let Some(job) = self.job(seq, rec)? {
                        jobs.push(job);
                    }
                }
                // Cannot happen with atomic batches; drop the entry rather than rescan it forever.
                _ => {
                    self.inner.tree.remove(&k)?;
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
            let (_, seq) = parse_queue_key(&k).ok_or_else(|| corrupt("queue key", "length"))?;
            if busy.contains(&seq) {
                continue;
            }
            if let Some(rec) = self.load_delivery(wid, seq)? {
                let fresh = rec.last_attempt_at.is_none_or(|t| t < since);
                if rec.state == State::Pending && fresh {
                    if let Some(job) = self.job(seq, rec)? {
                        jobs.push(job);
                    }
                }
            }
        }
        Ok((jobs, None))
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
        b.insert(
            &delivery_key(wid, seq),
            postcard::to_allocvec(&rec).map_err(|e| corrupt("delivery", e))?,
        );

        let finished = rec.state != State::Pending;
        let mut others = Vec::with_capacity(alert.targets.len());
        for &t in &alert.targets {
            if t == wid {
                others.push(rec.clone());
            } else if let Some(r) = self.load_delivery(t, seq)? {
                others.push(r);
            }
        }
        let new_state = overall(&others);
        let alert_done = finished && new_state != State::Pending;
        if alert_done {
            b.remove(&state_key(State::Pending, seq));
            b.insert(&state_key(new_state, seq), &[]);
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
        if alert_done {
            c.pending_alerts = c.pending_alerts.saturating_sub(1);
        }
        if finished {
            c.pending_by_webhook[webhook] = c.pending_by_webhook[webhook].saturating_sub(1);
        }
        self.publish_gauges(&c);
        Ok(())
    }

    /// Deletes delivered and failed alerts that entered the outbox before `cutoff`, oldest first
    /// and at most `max` per call, with their delivery records and index entries; returns how many
    /// went. Pending alerts are never pruned, whatever their age. Not flushed: it rides on the
    /// next commit (a crash only brings an already finished alert back for the next pass).
    pub fn prune(&self, cutoff: Timestamp, max: usize) -> Result<usize> {
        // Serialised with the workers' record_attempt, which moves alerts between states.
        let _c = self.lock();
        let mut pruned = 0;
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
                for &wid in &rec.targets {
                    b.remove(&delivery_key(wid, seq));
                }
                pruned += 1;
            }
            self.inner.tree.apply_batch(b)?;
        }
        Ok(pruned)
    }

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
            if let Some(view) = self.view(seq)? {
                out.push(view);
            }
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeviceId;
    use crate::registry::{Loan, LoanStatus};
    use std::sync::atomic::{AtomicI64, Ordering};

    fn alert(id: &str) -> Alert {
        Alert {
            id: id.to_string(),
            kind: super::super::AlertType::GeofenceExit,
            vehicle_id: "V-1".into(),
            device_id: DeviceId::new("123456789012345"),
            vin: None,
            plate: None,
            loan: Loan {
                id: "L-1".into(),
                status: LoanStatus::Overdue,
                days_past_due: Some(37),
            },
            position: None,
            detected_at: Timestamp::from_secs(1_800_000_000),
            details: serde_json::json!({"distance_outside_m": 1830.5}),
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("hook{i}")).collect()
    }

    #[test]
    fn insert_schedule_and_overall_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let now = Arc::new(AtomicI64::new(1_000_000));
        let n2 = now.clone();
        let ob = Outbox::open_with_clock(
            &db,
            &names(2),
            Arc::new(move || Timestamp::from_millis(n2.load(Ordering::SeqCst))),
        )
        .unwrap();
        let s1 = ob.insert(&alert("a1"), &[0, 1, 1]).unwrap();
        let s2 = ob.insert(&alert("a2"), &[]).unwrap();
        assert!(s2 > s1);
        assert!(matches!(
            ob.insert(&alert("x"), &[2]),
            Err(OutboxError::UnknownWebhook(2))
        ));
        assert_eq!(ob.pending_alerts(), 1);
        assert_eq!(ob.pending_deliveries(0).unwrap(), 1);

        let v2 = ob.view(s2).unwrap().unwrap();
        assert_eq!((v2.state, v2.attempts), (State::Delivered, 0));

        let busy = HashSet::new();
        let (jobs, _) = ob.due(0, ob.now(), &busy, 10).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].alert_id, "a1");
        assert_eq!(
            &jobs[0].body[..],
            &serde_json::to_vec(&alert("a1")).unwrap()[..]
        );

        let later = Timestamp::from_millis(1_005_000);
        let retry = AttemptOutcome::Retry {
            error: "HTTP 500".into(),
            next_attempt_at: later,
        };
        ob.record_attempt(0, s1, ob.now(), &retry).unwrap();
        let (jobs, next) = ob.due(0, ob.now(), &busy, 10).unwrap();
        assert!(jobs.is_empty());
        assert_eq!(next, Some(later));
        now.store(1_005_000, Ordering::SeqCst);
        assert_eq!(ob.due(0, ob.now(), &busy, 10).unwrap().0.len(), 1);

        ob.record_attempt(0, s1, ob.now(), &AttemptOutcome::Delivered)
            .unwrap();
        let v1 = ob.view(s1).unwrap().unwrap();
        assert_eq!(v1.state, State::Pending, "webhook 1 still pending");
        assert_eq!(v1.attempts, 2);
        ob.record_attempt(
            1,
            s1,
            ob.now(),
            &AttemptOutcome::GiveUp {
                error: "old".into(),
            },
        )
        .unwrap();
        let v1 = ob.view(s1).unwrap().unwrap();
        assert_eq!(v1.state, State::Failed);
        assert_eq!(v1.last_error.as_deref(), Some("old"));
        assert_eq!(ob.pending_alerts(), 0);
        assert_eq!(ob.pending_deliveries(0).unwrap(), 0);
        // Recording again after the end changes nothing.
        ob.record_attempt(0, s1, ob.now(), &AttemptOutcome::Delivered)
            .unwrap();
        assert_eq!(ob.view(s1).unwrap().unwrap().attempts, 3);

        let json = serde_json::to_value(&v1).unwrap();
        assert_eq!(json["id"], "a1");
        assert_eq!(json["type"], "geofence_exit");
        assert_eq!(json["state"], "failed");
        assert_eq!(json["attempts"], 3);
        assert_eq!(json["last_error"], "old");
    }

    #[test]
    fn reopen_recovers_sequence_counters_and_webhook_ids() {
        let dir = tempfile::tempdir().unwrap();
        let s1;
        {
            let db = sled::open(dir.path()).unwrap();
            let ob = Outbox::open(&db, &names(2)).unwrap();
            s1 = ob.insert(&alert("a1"), &[1]).unwrap();
            ob.insert(&alert("a2"), &[0, 1]).unwrap();
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        // Reordered config: names, not positions, identify webhooks.
        let ob = Outbox::open(&db, &["hook1".to_string(), "hook0".to_string()]).unwrap();
        assert_eq!(ob.pending_alerts(), 2);
        assert_eq!(ob.pending_deliveries(0).unwrap(), 2);
        assert_eq!(ob.pending_deliveries(1).unwrap(), 1);
        let s3 = ob.insert(&alert("a3"), &[]).unwrap();
        assert_eq!(s3, s1 + 2);
        let v = ob.view(s1).unwrap().unwrap();
        assert_eq!(v.deliveries.len(), 1);
        assert_eq!(v.deliveries[0].webhook, "hook1");
        assert!(matches!(
            Outbox::open(&db, &["x".to_string(), "x".to_string()]),
            Err(OutboxError::DuplicateWebhook(_))
        ));
    }

    #[test]
    fn sweep_visits_each_pending_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let ob = Outbox::open(&db, &names(1)).unwrap();
        for i in 0..10 {
            ob.insert(&alert(&format!("a{i}")), &[0]).unwrap();
        }
        let boot = ob.now();
        let busy: HashSet<u64> = [3].into_iter().collect();
        let mut cursor = None;
        let mut seen = Vec::new();
        for _ in 0..20 {
            let (jobs, c) = ob.sweep(0, cursor.as_deref(), boot, &busy, 2, 3).unwrap();
            seen.extend(jobs.iter().map(|j| j.seq));
            cursor = c;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none());
        assert_eq!(seen, vec![1, 2, 4, 5, 6, 7, 8, 9, 10]);
    }
}
