//! The engine: per-device state and rules, and the single writer of the store.
//!
//! It runs on a thread of its own, never on the tokio runtime, because every sled call blocks.
//! Connection tasks send it batches of events and wait for the commit: the engine drains whatever
//! arrived while the previous flush ran (group commit), applies it, writes the device records and
//! any alerts, flushes once, and only then answers every waiting batch. A reply that
//! acknowledges data is therefore sent only after that data is on disk (CONTRACT.md durability).
//!
//! `replay` drives the same `Engine` synchronously on a virtual clock.

use crate::alert::outbox::Outbox;
use crate::event::{DeviceId, Event, EventKind, Timestamp};
use crate::store::{DeviceRecord, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The engine's clock: wall time in the daemon, virtual time in replay.
pub type Clock = crate::protocol::Clock;

/// The reply to an admin API call: an HTTP status and a JSON body.
pub type ApiReply = (u16, serde_json::Value);

type ApiFn = Box<dyn FnOnce(&mut Engine, Timestamp) -> ApiReply + Send>;

enum Command {
    Ingest {
        events: Vec<Event>,
        received_at: Timestamp,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Api {
        f: ApiFn,
        done: oneshot::Sender<ApiReply>,
    },
    /// Flush and stop.
    Shutdown { done: oneshot::Sender<()> },
}

/// What the engine was told at construction.
#[derive(Clone)]
pub struct EngineConfig {
    pub rules: crate::rules::RuleConfig,
    pub accept_unknown: bool,
    pub commit_window: Duration,
    /// Resolved `[[webhook]]`s, in config order: alerts are queued for those whose filter matches.
    pub webhooks: Vec<crate::alert::webhook::Webhook>,
}

/// Devices lienwatch knows from its registry: the login policy reads it from any thread.
pub type Registered = Arc<RwLock<HashSet<DeviceId>>>;

pub struct Engine {
    pub store: Store,
    /// Alerts are written here in the same commit as the state change that raised them.
    pub outbox: Outbox,
    cfg: EngineConfig,
    devices: HashMap<DeviceId, DeviceRecord>,
    registered: Registered,
    /// When this engine started (the `startup_grace` reference).
    pub started_at: Timestamp,
    /// Records changed since the last flush.
    dirty: HashSet<DeviceId>,
    /// Counters the metrics endpoint reports.
    pub stats: Stats,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub positions_stored: u64,
    pub events: u64,
    pub commits: u64,
}

impl Engine {
    pub fn open(
        store: Store,
        cfg: EngineConfig,
        now: Timestamp,
        clock: Clock,
    ) -> Result<Engine, StoreError> {
        let names: Vec<String> = cfg.webhooks.iter().map(|w| w.name.clone()).collect();
        let outbox =
            Outbox::open_with_clock(&store.db, &names, clock).map_err(|e| StoreError::Corrupt {
                tree: "outbox",
                msg: e.to_string(),
            })?;
        let mut devices = HashMap::new();
        for rec in store.all_devices() {
            let rec = rec?;
            devices.insert(rec.device_id.clone(), rec);
        }
        Ok(Engine {
            store,
            outbox,
            cfg,
            devices,
            registered: Arc::new(RwLock::new(HashSet::new())),
            started_at: now,
            dirty: HashSet::new(),
            stats: Stats::default(),
        })
    }

    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    pub fn registered(&self) -> Registered {
        self.registered.clone()
    }

    /// The login policy for protocol sessions (`[ingest] accept_unknown`).
    pub fn admission(&self) -> crate::protocol::Admission {
        let accept_unknown = self.cfg.accept_unknown;
        let reg = self.registered.clone();
        Arc::new(move |id: &DeviceId| {
            accept_unknown || reg.read().map(|s| s.contains(id)).unwrap_or(false)
        })
    }

    pub fn device(&self, id: &str) -> Option<&DeviceRecord> {
        self.devices.get(id)
    }

    /// Applies a batch of events received at `received_at`. Nothing is durable until `flush`.
    pub fn ingest(&mut self, events: &[Event], received_at: Timestamp) {
        for ev in events {
            self.stats.events += 1;
            let rec = self.devices.entry(ev.device_id.clone()).or_insert_with(|| {
                DeviceRecord::new(ev.device_id.clone(), ev.protocol, received_at)
            });
            rec.protocol = ev.protocol;
            if received_at > rec.last_seen {
                rec.last_seen = received_at;
            }
            if let EventKind::Position(fix) = &ev.kind {
                if rec.offer_position(&fix.position, received_at) {
                    self.stats.positions_stored += 1;
                }
            }
            self.dirty.insert(ev.device_id.clone());
        }
    }

    /// Time-driven work (silence deadlines) up to `now`.
    pub fn tick(&mut self, _now: Timestamp) {}

    /// When `tick` next has something to do.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        None
    }

    /// Writes every changed record and flushes: the commit that replies wait for.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        for id in self.dirty.drain() {
            if let Some(rec) = self.devices.get(&id) {
                self.store.put_device(rec)?;
            }
        }
        self.store.flush()?;
        self.stats.commits += 1;
        Ok(())
    }
}

/// The async side: what connection tasks and the admin API hold.
#[derive(Clone)]
pub struct EngineHandle {
    tx: flume::Sender<Command>,
    pub store: Store,
    pub registered: Registered,
    pub admission: crate::protocol::Admission,
}

impl EngineHandle {
    /// Hands events to the engine and waits until they are on disk.
    pub async fn commit(
        &self,
        events: Vec<Event>,
        received_at: Timestamp,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send_async(Command::Ingest {
                events,
                received_at,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the engine thread; its writes are committed before the reply comes back.
    pub async fn api(
        &self,
        f: impl FnOnce(&mut Engine, Timestamp) -> ApiReply + Send + 'static,
    ) -> ApiReply {
        let (done, rx) = oneshot::channel();
        let sent = self
            .tx
            .send_async(Command::Api {
                f: Box::new(f),
                done,
            })
            .await;
        if sent.is_err() {
            return (503, serde_json::json!({"error": "engine stopped"}));
        }
        rx.await
            .unwrap_or((503, serde_json::json!({"error": "engine stopped"})))
    }

    /// Flushes and stops the engine thread.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send_async(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the engine thread.
pub fn spawn(
    engine: Engine,
    clock: Clock,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    // Bounded: when the disk cannot keep up, connection tasks wait instead of growing memory.
    let (tx, rx) = flume::bounded(8192);
    let handle = EngineHandle {
        tx,
        store: engine.store.clone(),
        registered: engine.registered(),
        admission: engine.admission(),
    };
    let jh = std::thread::Builder::new()
        .name("lienwatch-engine".into())
        .spawn(move || run(engine, rx, clock))?;
    Ok((handle, jh))
}

const MAX_BATCH: usize = 4096;

fn run(mut engine: Engine, rx: flume::Receiver<Command>, clock: Clock) {
    let mut batch: Vec<Command> = Vec::with_capacity(256);
    loop {
        // Sleep until a command arrives or a deadline falls due.
        let first = match engine.next_wakeup() {
            Some(t) => {
                let wait = t.since(clock()).max(0) as u64;
                match rx.recv_timeout(Duration::from_millis(wait.min(60_000))) {
                    Ok(c) => Some(c),
                    Err(flume::RecvTimeoutError::Timeout) => None,
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => break,
            },
        };
        batch.extend(first);
        if !engine.cfg.commit_window.is_zero() && !batch.is_empty() {
            let until = Instant::now() + engine.cfg.commit_window;
            while batch.len() < MAX_BATCH {
                match rx.recv_deadline(until) {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }

        let started = Instant::now();
        let now = clock();
        let mut ingest_done = Vec::new();
        let mut api_done = Vec::new();
        let mut shutdown = None;
        for cmd in batch.drain(..) {
            match cmd {
                Command::Ingest {
                    events,
                    received_at,
                    done,
                } => {
                    engine.ingest(&events, received_at);
                    ingest_done.push(done);
                }
                Command::Api { f, done } => {
                    let reply = f(&mut engine, now);
                    api_done.push((done, reply));
                }
                Command::Shutdown { done } => shutdown = Some(done),
            }
        }
        engine.tick(now);
        let result = engine.flush();
        metrics::histogram!("lienwatch_commit_seconds").record(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                engine.outbox.notify();
                for d in ingest_done {
                    let _ = d.send(Ok(()));
                }
                for (d, reply) in api_done {
                    let _ = d.send(reply);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; nothing in this batch is acknowledged");
                metrics::counter!("lienwatch_commit_failures_total").increment(1);
                for d in ingest_done {
                    let _ = d.send(Err(StoreError::Closed));
                }
                for (d, _) in api_done {
                    let _ = d.send((503, serde_json::json!({"error": format!("{e}")})));
                }
            }
        }
        if let Some(done) = shutdown {
            let _ = done.send(());
            break;
        }
    }
    // Last flush on the way out: anything applied is made durable.
    if let Err(e) = engine.flush() {
        tracing::error!(error = %e, "final flush failed");
    }
}

// Registry endpoints: filled in with the registry.
impl Engine {
    pub fn api_get_vehicle(&mut self, _id: &str) -> ApiReply {
        (501, serde_json::json!({"error": "not implemented"}))
    }
    pub fn api_put_vehicle(&mut self, _id: &str, _body: &[u8], _now: Timestamp) -> ApiReply {
        (501, serde_json::json!({"error": "not implemented"}))
    }
    pub fn api_delete_vehicle(&mut self, _id: &str) -> ApiReply {
        (501, serde_json::json!({"error": "not implemented"}))
    }
    pub fn api_put_loan(&mut self, _id: &str, _body: &[u8], _now: Timestamp) -> ApiReply {
        (501, serde_json::json!({"error": "not implemented"}))
    }
}

impl EngineHandle {
    pub fn vehicle_of(&self, _device: &str) -> Option<String> {
        None
    }
}

impl Engine {
    /// Alerts raised since the last call (replay prints them; the daemon counts them).
    pub fn take_alerts(&mut self) -> Vec<crate::alert::Alert> {
        Vec::new()
    }
}
