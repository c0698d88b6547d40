//! The alert outbox: every alert and its per-webhook delivery state, kept in sled.
//!
//! # Durability
//! The outbox never flushes. The engine writes a commit's alerts ([`Outbox::stage`]) in one
//! crash-atomic batch with the state changes that raised them (`store::Writes`) and flushes the
//! `sled::Db` once per group commit: after a crash either both survive or neither does, so an
//! alert is never lost while its cause is remembered, nor raised again under a new id because
//! its cause was forgotten. Call [`Outbox::notify`] after that flush so that workers deliver at
//! once.
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
//! | `v` len vehicle seq | empty: each vehicle's alerts, for its own listing |
//! | `w` name | wid (u32): stable webhook ids, so that reordering the config is harmless |
//! | `m` ... | counters (pending alerts, pending deliveries per webhook), next webhook id, `seq` floor |
//!
//! `wid` is a persistent id for a webhook name; the public API speaks of webhook *indexes* (the
//! order of the names given to [`Outbox::open`]), which the outbox maps to wids.

mod keys;
mod schedule;
mod view;
mod write;

pub use view::{AlertView, DeliveryView};
pub use write::StagedAlerts;

use super::Alert;
use crate::event::Timestamp;
use keys::*;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The injectable clock (shared with the protocol sessions), so that tests can age alerts by days
/// without sleeping.
pub type Clock = crate::time::Clock;

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

impl DeliveryRecord {
    /// A delivery not tried yet, due at `now`.
    fn new_pending(now: Timestamp) -> Self {
        DeliveryRecord {
            state: State::Pending,
            attempts: 0,
            last_error: None,
            next_attempt_at: now,
            created_at: now,
            last_attempt_at: None,
        }
    }
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
    /// Alerts below this sequence number are on disk: the engine's flush moves it
    /// ([`Outbox::mark_durable`]). Workers send nothing above it, so that a crash before the
    /// commit cannot leave a receiver holding an alert the daemon then raises again anew.
    durable: std::sync::atomic::AtomicU64,
    /// Inserts that fail before they write (tests of a store that refuses).
    #[cfg(test)]
    fail_inserts: std::sync::atomic::AtomicU32,
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
        }
        .max(read_u64(&tree, K_SEQ_FLOOR)?);
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
        index_vehicles(&tree)?;
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
                // What sled holds at open is on disk.
                durable: std::sync::atomic::AtomicU64::new(next_seq),
                #[cfg(test)]
                fail_inserts: std::sync::atomic::AtomicU32::new(0),
            }),
        };
        outbox.publish_gauges(&outbox.lock());
        Ok(outbox)
    }

    /// Moves each `(old, new)` webhook name's deliveries to the new name, before
    /// [`Outbox::open`]: a name is only a key to the webhook's stable id. Nothing moves where
    /// the old name is unknown or the new one already has deliveries.
    pub fn rename_webhooks(db: &sled::Db, renames: &[(String, String)]) -> Result<()> {
        let tree = db.open_tree(TREE)?;
        let key = |name: &str| {
            let mut k = vec![T_WEBHOOK];
            k.extend_from_slice(name.as_bytes());
            k
        };
        for (old, new) in renames {
            let (from, to) = (key(old), key(new));
            let Some(wid) = tree.get(&from)? else {
                continue;
            };
            if tree.get(&to)?.is_some() {
                continue;
            }
            let mut b = sled::Batch::default();
            b.insert(to, wid);
            b.remove(from);
            tree.apply_batch(b)?;
            tracing::info!(from = %old, to = %new, "webhook deliveries moved to the webhook's new default name");
        }
        Ok(())
    }

    /// The next `n` inserts fail before they write anything.
    #[cfg(test)]
    pub(crate) fn fail_inserts(&self, n: u32) {
        self.inner
            .fail_inserts
            .store(n, std::sync::atomic::Ordering::Relaxed);
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
}

/// Gives every alert written before the vehicle index its `v` key, once.
fn index_vehicles(tree: &sled::Tree) -> Result<()> {
    if tree.get(K_VEHICLE_INDEXED)?.is_some() {
        return Ok(());
    }
    let mut b = sled::Batch::default();
    let mut n = 0usize;
    for kv in tree.scan_prefix([T_ALERT]) {
        let (k, v) = kv?;
        let (Some(seq), Ok(rec)) = (be_u64(&k[1..]), postcard::from_bytes::<AlertRecord>(&v))
        else {
            continue;
        };
        let Some(vehicle) = vehicle_of(&rec.body) else {
            continue;
        };
        b.insert(vehicle_key(&vehicle, seq), &[]);
        n += 1;
        if n.is_multiple_of(10_000) {
            tree.apply_batch(std::mem::take(&mut b))?;
        }
    }
    b.insert(K_VEHICLE_INDEXED, &[]);
    tree.apply_batch(b)?;
    if n > 0 {
        tracing::info!(alerts = n, "outbox: alerts indexed by vehicle");
    }
    Ok(())
}

/// What tests of other modules share: an alert to put in the outbox.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::event::DeviceId;
    use crate::registry::{Loan, LoanStatus};

    /// A geofence exit of vehicle V-1, an overdue loan, raised at a fixed time.
    pub(crate) fn alert(id: &str) -> Alert {
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
}

#[cfg(test)]
mod tests {
    use super::testing::alert;
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    const HORIZON: std::time::Duration = std::time::Duration::from_secs(600);

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("hook{i}")).collect()
    }

    /// A retry decided before the host clock stepped back a day is due at once, not a day
    /// later; one decided after the step waits its backoff.
    #[test]
    fn a_retry_from_before_a_step_back_of_the_clock_is_due_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let day = 86_400_000;
        let now = Arc::new(AtomicI64::new(1_800_000_000_000 + day));
        let n2 = now.clone();
        let ob = Outbox::open_with_clock(
            &db,
            &names(1),
            Arc::new(move || Timestamp::from_millis(n2.load(Ordering::SeqCst))),
        )
        .unwrap();
        let (a, b) = (
            ob.insert(&alert("a"), &[0]).unwrap(),
            ob.insert(&alert("b"), &[0]).unwrap(),
        );
        ob.mark_durable();
        let retry = |at: Timestamp| AttemptOutcome::Retry {
            error: "connection refused".into(),
            next_attempt_at: at,
        };
        ob.record_attempt(0, a, ob.now(), &retry(ob.now().add_millis(4_000)))
            .unwrap();
        now.fetch_sub(day, Ordering::SeqCst);
        ob.record_attempt(0, b, ob.now(), &retry(ob.now().add_millis(4_000)))
            .unwrap();
        let busy = HashSet::new();
        let (jobs, next) = ob.due(0, ob.now(), HORIZON, &busy, 10).unwrap();
        let ids: Vec<_> = jobs.iter().map(|j| j.alert_id.as_str()).collect();
        assert_eq!(ids, ["a"]);
        assert_eq!(next, Some(ob.now().add_millis(4_000)));
    }

    /// Alerts staged for a commit whose write then failed: dropped unapplied, they change
    /// nothing, and the next commit stages them again under the same sequence numbers, counted
    /// once. Two alerts in one batch count two, on disk too.
    #[test]
    fn staged_alerts_dropped_unapplied_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let ob =
            Outbox::open_with_clock(&db, &names(2), Arc::new(|| Timestamp::from_secs(1))).unwrap();
        let (a, b) = (alert("a"), alert("b"));
        let both = [(&a, &[0usize, 1][..]), (&b, &[1usize][..])];
        drop(ob.stage(both).unwrap());
        assert_eq!(ob.pending_alerts(), 0);
        assert!(ob.list(None, 10, None).unwrap().is_empty());
        let mut staged = ob.stage(both).unwrap();
        let (tree, batch) = staged.batch();
        tree.apply_batch(batch).unwrap();
        assert_eq!(staged.applied(), 1..3, "a fresh outbox numbers from 1");
        assert_eq!(ob.pending_alerts(), 2);
        assert_eq!(ob.pending_deliveries(0).unwrap(), 1);
        assert_eq!(ob.pending_deliveries(1).unwrap(), 2);
        let ids: Vec<String> = ob
            .list(None, 10, None)
            .unwrap()
            .into_iter()
            .map(|v| v.alert.id)
            .collect();
        assert_eq!(ids, ["b", "a"]);
        drop(ob);
        let ob = Outbox::open(&db, &names(2)).unwrap();
        assert_eq!(ob.pending_alerts(), 2, "the counts on disk");
        assert_eq!(ob.pending_deliveries(1).unwrap(), 2);
        assert_eq!(ob.insert(&alert("c"), &[]).unwrap(), 3);
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
        // Nothing goes out before the commit that holds it is on disk.
        let (jobs, _) = ob.due(0, ob.now(), HORIZON, &busy, 10).unwrap();
        assert!(jobs.is_empty());
        ob.mark_durable();
        let (jobs, _) = ob.due(0, ob.now(), HORIZON, &busy, 10).unwrap();
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
        let (jobs, next) = ob.due(0, ob.now(), HORIZON, &busy, 10).unwrap();
        assert!(jobs.is_empty());
        assert_eq!(next, Some(later));
        now.store(1_005_000, Ordering::SeqCst);
        assert_eq!(ob.due(0, ob.now(), HORIZON, &busy, 10).unwrap().0.len(), 1);

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
        let db = crate::store::reopen(|| sled::open(dir.path()));
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

    /// `GET /v1/alerts?vehicle_id=`: one vehicle's alerts without reading the others', paged
    /// and filtered like the whole list; alerts from before the index get it at open; pruned
    /// alerts leave no key behind.
    #[test]
    fn one_vehicles_alerts_are_listed_from_their_own_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let ob = Outbox::open(&db, &names(1)).unwrap();
        let of = |v: &str| Alert {
            vehicle_id: v.into(),
            ..alert(&format!("a-{v}"))
        };
        let s1 = ob.insert(&of("V-1"), &[0]).unwrap();
        ob.insert(&of("V-10"), &[0]).unwrap();
        let s3 = ob.insert(&of("V-1"), &[]).unwrap();
        ob.insert(&of("V-2"), &[]).unwrap();
        let seqs = |views: Vec<AlertView>| views.iter().map(|v| v.seq).collect::<Vec<_>>();
        let list = |v: &str, state, limit, before| ob.list_for_vehicle(v, state, limit, before);
        assert_eq!(seqs(list("V-1", None, 10, None).unwrap()), [s3, s1]);
        assert_eq!(seqs(list("V-1", None, 1, Some(s3)).unwrap()), [s1]);
        assert_eq!(
            seqs(list("V-1", Some(State::Pending), 10, None).unwrap()),
            [s1]
        );
        assert_eq!(list("V-10", None, 10, None).unwrap().len(), 1);
        assert!(list("V-3", None, 10, None).unwrap().is_empty());

        // An outbox written before the index: every key gone, and the mark.
        for kv in ob.inner.tree.scan_prefix([T_VEHICLE]) {
            ob.inner.tree.remove(kv.unwrap().0).unwrap();
        }
        ob.inner.tree.remove(K_VEHICLE_INDEXED).unwrap();
        drop(ob);
        let ob = Outbox::open(&db, &names(1)).unwrap();
        let got = ob.list_for_vehicle("V-1", None, 10, None).unwrap();
        assert_eq!(seqs(got), [s3, s1]);

        // Pruning the delivered ones takes their keys too.
        let pruned = ob.prune(Timestamp::from_millis(i64::MAX), 100).unwrap();
        assert_eq!(pruned, 2);
        assert_eq!(ob.inner.tree.scan_prefix([T_VEHICLE]).count(), 2);
        let got = ob.list_for_vehicle("V-1", None, 10, None).unwrap();
        assert_eq!(seqs(got), [s1]);
    }

    /// `seq` is the paging cursor: an outbox that pruning emptied does not give the next alert
    /// a number an earlier one had, after a restart either.
    #[test]
    fn numbers_are_not_reused_after_pruning_empties_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let ob = Outbox::open(&db, &names(1)).unwrap();
        ob.insert(&alert("a1"), &[]).unwrap();
        let last = ob.insert(&alert("a2"), &[]).unwrap();
        assert_eq!(ob.prune(Timestamp::from_millis(i64::MAX), 100).unwrap(), 2);
        drop(ob);
        let ob = Outbox::open(&db, &names(1)).unwrap();
        assert!(ob.insert(&alert("a3"), &[]).unwrap() > last);
    }

    /// A delivery record that cannot be read is set aside, failed: the deliveries behind it
    /// still go out (the sweep and the schedule both), the pending counts drop, and listings
    /// leave out an alert that cannot be read instead of failing.
    #[test]
    fn an_unreadable_record_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let ob = Outbox::open(&db, &names(1)).unwrap();
        let seqs: Vec<u64> = (0..3)
            .map(|i| ob.insert(&alert(&format!("a{i}")), &[0]).unwrap())
            .collect();
        ob.mark_durable();
        let wid = ob.wid(0).unwrap();
        ob.inner
            .tree
            .insert(delivery_key(wid, seqs[0]), &[0xFF; 3][..])
            .unwrap();
        let busy = HashSet::new();
        let (jobs, _) = ob.sweep(0, None, ob.now(), &busy, 10, 100).unwrap();
        let ids: Vec<_> = jobs.iter().map(|j| j.alert_id.as_str()).collect();
        assert_eq!(ids, ["a1", "a2"]);
        let (jobs, _) = ob.due(0, ob.now(), HORIZON, &busy, 10).unwrap();
        let ids: Vec<_> = jobs.iter().map(|j| j.alert_id.as_str()).collect();
        assert_eq!(ids, ["a1", "a2"]);
        // Failed with a fresh record, and out of the pending counts.
        assert_eq!(ob.pending_deliveries(0).unwrap(), 2);
        assert_eq!(ob.pending_alerts(), 2);
        let a0 = ob.view(seqs[0]).unwrap().unwrap();
        assert_eq!(a0.state, State::Failed);
        assert!(a0.last_error.unwrap().contains("cannot be read"));
        // An alert whose own record cannot be read is left out of a listing.
        ob.inner
            .tree
            .insert(alert_key(seqs[1]), &[0xFF; 3][..])
            .unwrap();
        let listed: Vec<String> = ob
            .list(None, 10, None)
            .unwrap()
            .into_iter()
            .map(|v| v.alert.id)
            .collect();
        assert_eq!(listed, ["a2", "a0"]);
    }

    /// A webhook renamed before open keeps its deliveries (its id) under the new name.
    /// An alert finished by one webhook while another's delivery cannot be read is counted out
    /// of the pending alerts once, not again when that delivery is set aside.
    #[test]
    fn an_unreadable_sibling_is_counted_out_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let ob = Outbox::open(&db, &names(2)).unwrap();
        let a = ob.insert(&alert("a"), &[0, 1]).unwrap();
        ob.insert(&alert("b"), &[0]).unwrap();
        ob.mark_durable();
        assert_eq!(ob.pending_alerts(), 2);
        let w1 = ob.wid(1).unwrap();
        ob.inner
            .tree
            .insert(delivery_key(w1, a), &[0xFF; 3][..])
            .unwrap();
        ob.record_attempt(0, a, ob.now(), &AttemptOutcome::Delivered)
            .unwrap();
        assert_eq!(ob.pending_alerts(), 1);
        let busy = HashSet::new();
        let (jobs, _) = ob.sweep(1, None, ob.now(), &busy, 10, 100).unwrap();
        assert!(jobs.is_empty());
        assert_eq!(ob.pending_alerts(), 1, "counted out once");
        assert_eq!(ob.pending_deliveries(1).unwrap(), 0);
        assert_eq!(ob.view(a).unwrap().unwrap().state, State::Failed);
    }

    #[test]
    fn a_renamed_webhook_keeps_its_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let old = vec!["https://h.example/hook/s3cret".to_string()];
        let ob = Outbox::open(&db, &old).unwrap();
        ob.insert(&alert("a"), &[0]).unwrap();
        drop(ob);
        let new = vec!["https://h.example/…12345678".to_string()];
        Outbox::rename_webhooks(&db, &[(old[0].clone(), new[0].clone())]).unwrap();
        let ob = Outbox::open(&db, &new).unwrap();
        assert_eq!(ob.pending_deliveries(0).unwrap(), 1);
        // Again: nothing left to move.
        drop(ob);
        Outbox::rename_webhooks(&db, &[(old[0].clone(), new[0].clone())]).unwrap();
        assert_eq!(
            Outbox::open(&db, &new)
                .unwrap()
                .pending_deliveries(0)
                .unwrap(),
            1
        );
    }

    #[test]
    fn sweep_visits_each_pending_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let ob = Outbox::open(&db, &names(1)).unwrap();
        for i in 0..10 {
            ob.insert(&alert(&format!("a{i}")), &[0]).unwrap();
        }
        ob.mark_durable();
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
