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
use crate::alert::{Alert, AlertType};
use crate::event::{DeviceId, Event, EventKind, Timestamp};
use crate::registry::{LoanStatus, Vehicle};
use crate::rules::{DeviceRuleState, Outcome, Rules, SilenceTracker, VehicleContext};
use crate::store::{DeviceRecord, Store, StoreError};
use serde_json::json;
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

/// Which vehicle each registered device belongs to; read by the login policy and the API from
/// any thread, written only by the engine.
pub type Registered = Arc<RwLock<HashMap<DeviceId, Arc<str>>>>;

pub struct Engine {
    pub store: Store,
    /// Alerts are written here in the same commit as the state change that raised them.
    pub outbox: Outbox,
    cfg: EngineConfig,
    rules: Rules,
    /// Last-known position and last-seen of every device ever heard from.
    devices: HashMap<DeviceId, DeviceRecord>,
    /// The registry, and each registered device's rule state.
    vehicles: HashMap<String, Vehicle>,
    states: HashMap<DeviceId, DeviceRuleState>,
    registered: Registered,
    /// Silence deadlines: O(log n) per update, no scans.
    tracker: SilenceTracker,
    /// When this engine started (the `startup_grace` reference).
    pub started_at: Timestamp,
    /// Records and rule states changed since the last flush.
    dirty: HashSet<DeviceId>,
    dirty_states: HashSet<DeviceId>,
    /// Alerts raised since `take_alerts` was last called.
    raised: Vec<Alert>,
    /// Alerts raised so far (persisted); part of each alert's id.
    alert_count: u64,
    /// Counters the metrics endpoint reports.
    pub stats: Stats,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub positions_stored: u64,
    pub events: u64,
    pub commits: u64,
}

fn corrupt(tree: &'static str, msg: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree,
        msg: msg.to_string(),
    }
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
            Outbox::open_with_clock(&store.db, &names, clock).map_err(|e| corrupt("outbox", e))?;
        let mut devices = HashMap::new();
        for rec in store.all_devices() {
            let rec = rec?;
            devices.insert(rec.device_id.clone(), rec);
        }
        let mut vehicles = HashMap::new();
        let mut map = HashMap::new();
        for kv in store.vehicles.iter() {
            let (k, v) = kv?;
            let id = String::from_utf8_lossy(&k).to_string();
            let vehicle = Vehicle::from_json(&id, &v)
                .map_err(|e| corrupt("vehicles", format!("{id}: {e}")))?;
            for d in &vehicle.devices {
                map.insert(d.id.clone(), Arc::from(id.as_str()));
            }
            vehicles.insert(id, vehicle);
        }
        let mut states = HashMap::new();
        for kv in store.rules.iter() {
            let (k, v) = kv?;
            let id = DeviceId::new(&String::from_utf8_lossy(&k));
            let st = DeviceRuleState::from_bytes(&v).map_err(|e| corrupt("rules", e))?;
            if map.contains_key(&id) {
                states.insert(id, st);
            }
        }
        let alert_count = store
            .meta
            .get("alerts_raised")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let rules = Rules::new(cfg.rules.clone(), now);
        let mut e = Engine {
            store,
            outbox,
            rules,
            cfg,
            devices,
            vehicles,
            states,
            registered: Arc::new(RwLock::new(map)),
            tracker: SilenceTracker::new(),
            started_at: now,
            dirty: HashSet::new(),
            dirty_states: HashSet::new(),
            raised: Vec::new(),
            alert_count,
            stats: Stats::default(),
        };
        e.rebuild_deadlines();
        Ok(e)
    }

    /// Every registered device's silence deadline from its persisted state.
    fn rebuild_deadlines(&mut self) {
        self.tracker = SilenceTracker::new();
        for v in self.vehicles.values() {
            for d in &v.devices {
                let st = self.states.entry(d.id.clone()).or_default();
                self.tracker.set(
                    &d.id,
                    self.rules
                        .silence_deadline(VehicleContext::new(v, &d.id), st),
                );
            }
        }
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
            let ok = accept_unknown || reg.read().map(|s| s.contains_key(id)).unwrap_or(false);
            if !ok {
                metrics::counter!("lienwatch_devices_refused_total").increment(1);
            }
            ok
        })
    }

    /// SIGHUP: new rule thresholds and (when the set of webhooks is unchanged) their settings.
    pub fn reconfigure(
        &mut self,
        rules: crate::rules::RuleConfig,
        webhooks: Option<Vec<crate::alert::webhook::Webhook>>,
        _now: Timestamp,
    ) {
        self.rules = Rules::new(rules.clone(), self.started_at);
        self.cfg.rules = rules;
        if let Some(w) = webhooks {
            self.cfg.webhooks = w;
        }
        self.rebuild_deadlines();
    }

    /// Applies a batch of events received at `received_at`: last-known positions first, then the
    /// rules. Nothing is durable until `flush`.
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
                    metrics::counter!("lienwatch_positions_stored_total").increment(1);
                }
            }
            self.dirty.insert(ev.device_id.clone());

            let Some(vid) = self.vehicle_id_of(&ev.device_id) else {
                continue;
            };
            let Some(vehicle) = self.vehicles.get(&*vid) else {
                continue;
            };
            let ctx = VehicleContext::new(vehicle, &ev.device_id);
            let st = self.states.entry(ev.device_id.clone()).or_default();
            let out = self.rules.on_event(ctx, st, ev, received_at);
            self.apply_outcome(&vid, &ev.device_id, out, received_at);
        }
    }

    /// Cheap per event: the id is shared, not copied.
    fn vehicle_id_of(&self, id: &DeviceId) -> Option<Arc<str>> {
        self.registered.read().ok()?.get(id).cloned()
    }

    /// Records what a rule call decided: deadline, state to persist, alerts to raise.
    fn apply_outcome(&mut self, vehicle_id: &str, device: &DeviceId, out: Outcome, now: Timestamp) {
        self.tracker.set(device, out.silence_deadline);
        if out.changed {
            self.dirty_states.insert(device.clone());
        }
        for draft in out.alerts {
            self.raise(vehicle_id, device, draft.kind, draft.details, now);
        }
    }

    /// Dresses a rule's draft as an alert and queues it in the outbox (same commit).
    fn raise(
        &mut self,
        vehicle_id: &str,
        device: &DeviceId,
        kind: AlertType,
        details: serde_json::Value,
        now: Timestamp,
    ) {
        let Some(v) = self.vehicles.get(vehicle_id) else {
            return;
        };
        self.alert_count += 1;
        let id = alert_id(vehicle_id, device, kind, now, self.alert_count);
        let alert = Alert {
            id,
            kind,
            vehicle_id: vehicle_id.to_string(),
            device_id: device.clone(),
            vin: v.vin.clone(),
            plate: v.plate.clone(),
            loan: v.loan.clone(),
            position: self
                .devices
                .get(device)
                .and_then(|r| r.position.map(|p| p.position())),
            detected_at: now,
            details,
        };
        let targets = crate::alert::webhook::targets(&self.cfg.webhooks, kind);
        if let Err(e) = self.outbox.insert(&alert, &targets) {
            tracing::error!(error = %e, alert = %alert.id, "cannot queue alert");
        }
        metrics::counter!("lienwatch_alerts_raised_total", "type" => kind.as_str()).increment(1);
        tracing::info!(alert = %alert.id, r#type = kind.as_str(), vehicle = vehicle_id, device = %device, "alert raised");
        self.raised.push(alert);
    }

    /// Time-driven work up to `now`: silence deadlines that fell due.
    pub fn tick(&mut self, now: Timestamp) {
        while self.tracker.next_deadline().is_some_and(|t| t <= now) {
            for id in self.tracker.pop_due(now) {
                let Some(vid) = self.vehicle_id_of(&id) else {
                    continue;
                };
                let Some(vehicle) = self.vehicles.get(&*vid) else {
                    continue;
                };
                let ctx = VehicleContext::new(vehicle, &id);
                let st = self.states.entry(id.clone()).or_default();
                let out = self.rules.on_silence_due(ctx, st, now);
                self.apply_outcome(&vid, &id, out, now);
            }
        }
    }

    /// When `tick` next has something to do.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.tracker.next_deadline()
    }

    /// Alerts raised since the last call (replay prints them).
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.raised)
    }

    /// Writes every changed record and flushes: the commit that replies wait for. Alerts were
    /// written to the outbox when raised, so they land in this same flush, before the states
    /// that remember them.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        for id in self.dirty.drain() {
            if let Some(rec) = self.devices.get(&id) {
                self.store.put_device(rec)?;
            }
        }
        for id in self.dirty_states.drain() {
            match self.states.get(&id) {
                Some(st) => {
                    self.store
                        .rules
                        .insert(id.as_str().as_bytes(), st.to_bytes())?;
                }
                None => {
                    self.store.rules.remove(id.as_str().as_bytes())?;
                }
            }
        }
        self.store
            .meta
            .insert("alerts_raised", &self.alert_count.to_be_bytes())?;
        self.store.flush()?;
        self.stats.commits += 1;
        Ok(())
    }

    // ---- registry (admin API) ----

    fn vehicle_view(&self, v: &Vehicle) -> serde_json::Value {
        let mut body = v.to_json();
        body["id"] = json!(v.id);
        let devices: Vec<serde_json::Value> = v
            .devices
            .iter()
            .map(|d| {
                let mut o = serde_json::to_value(d).unwrap_or_default();
                let rec = self.devices.get(&d.id);
                let st = self.states.get(&d.id);
                o["last_seen"] = json!(rec.map(|r| r.last_seen));
                o["protocol"] = json!(rec.map(|r| r.protocol));
                o["position"] = rec
                    .and_then(|r| r.position.as_ref())
                    .map(|p| p.to_json())
                    .unwrap_or(serde_json::Value::Null);
                o["state"] = json!({
                    "geofence": st.map(|s| s.placement),
                    "silent": st.map(|s| s.silent_alerted).unwrap_or(false),
                    "alarms": st.map(|s| s.alarms_alerted.names()).unwrap_or_default(),
                    "silence_deadline": self.tracker.deadline(&d.id),
                });
                o
            })
            .collect();
        body["devices"] = json!(devices);
        body
    }

    pub fn api_get_vehicle(&mut self, id: &str) -> ApiReply {
        match self.vehicles.get(id) {
            Some(v) => (200, self.vehicle_view(v)),
            None => (404, json!({"error": format!("no vehicle {id:?}")})),
        }
    }

    pub fn api_put_vehicle(&mut self, id: &str, body: &[u8], now: Timestamp) -> ApiReply {
        let mut vehicle = match Vehicle::from_json(id, body) {
            Ok(v) => v,
            Err(e) => return (400, json!({"error": e.to_string()})),
        };
        vehicle.id = id.to_string();
        // A device watches one car: binding it to a second vehicle is a conflict.
        if let Ok(reg) = self.registered.read() {
            for d in &vehicle.devices {
                if let Some(other) = reg.get(&d.id) {
                    if &**other != id {
                        return (
                            409,
                            json!({"error": format!("device {} is bound to vehicle {other:?}; remove it there first", d.id)}),
                        );
                    }
                }
            }
        }
        let text = vehicle.to_json().to_string();
        if let Err(e) = self.store.vehicles.insert(id.as_bytes(), text.as_bytes()) {
            return (500, json!({"error": e.to_string()}));
        }
        let old = self.vehicles.insert(id.to_string(), vehicle);
        let created = old.is_none();
        // Devices dropped from the vehicle stop being watched.
        if let Some(old) = old {
            let kept: HashSet<&DeviceId> =
                self.vehicles[id].devices.iter().map(|d| &d.id).collect();
            let dropped: Vec<DeviceId> = old
                .devices
                .iter()
                .filter(|d| !kept.contains(&d.id))
                .map(|d| d.id.clone())
                .collect();
            for d in dropped {
                self.unregister(&d);
            }
        }
        let ids: Vec<DeviceId> = self.vehicles[id]
            .devices
            .iter()
            .map(|d| d.id.clone())
            .collect();
        if let Ok(mut reg) = self.registered.write() {
            for d in &ids {
                reg.insert(d.clone(), Arc::from(id));
            }
        }
        for d in &ids {
            let Some(vehicle) = self.vehicles.get(id) else {
                break;
            };
            let Some(ctx) = VehicleContext::new(vehicle, d) else {
                continue;
            };
            let st = self.states.entry(d.clone()).or_default();
            let out = self.rules.on_registered(ctx, st, now);
            self.apply_outcome(id, d, out, now);
        }
        let view = self.vehicle_view(&self.vehicles[id]);
        (if created { 201 } else { 200 }, view)
    }

    fn unregister(&mut self, d: &DeviceId) {
        if let Some(mut st) = self.states.remove(d) {
            let _ = self.rules.on_unregistered(&mut st);
        }
        self.dirty_states.insert(d.clone());
        self.tracker.set(d, None);
        if let Ok(mut reg) = self.registered.write() {
            reg.remove(d);
        }
    }

    pub fn api_delete_vehicle(&mut self, id: &str) -> ApiReply {
        let Some(v) = self.vehicles.remove(id) else {
            return (404, json!({"error": format!("no vehicle {id:?}")}));
        };
        if let Err(e) = self.store.vehicles.remove(id.as_bytes()) {
            self.vehicles.insert(id.to_string(), v);
            return (500, json!({"error": e.to_string()}));
        }
        for d in &v.devices {
            self.unregister(&d.id);
        }
        (200, json!({"deleted": id}))
    }

    pub fn api_put_loan(&mut self, loan_id: &str, body: &[u8], now: Timestamp) -> ApiReply {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct LoanBody {
            status: LoanStatus,
            #[serde(default)]
            days_past_due: Option<u32>,
        }
        let b: LoanBody = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => return (400, json!({"error": format!("loan body: {e}")})),
        };
        let ids: Vec<String> = self
            .vehicles
            .values()
            .filter(|v| v.loan.id == loan_id)
            .map(|v| v.id.clone())
            .collect();
        if ids.is_empty() {
            return (
                404,
                json!({"error": format!("no vehicle has loan {loan_id:?}")}),
            );
        }
        for vid in &ids {
            let Some(v) = self.vehicles.get_mut(vid) else {
                continue;
            };
            v.loan.status = b.status;
            v.loan.days_past_due = b.days_past_due;
            let text = v.to_json().to_string();
            if let Err(e) = self.store.vehicles.insert(vid.as_bytes(), text.as_bytes()) {
                return (500, json!({"error": e.to_string()}));
            }
            let devices: Vec<DeviceId> = v.devices.iter().map(|d| d.id.clone()).collect();
            for d in devices {
                let Some(vehicle) = self.vehicles.get(vid) else {
                    break;
                };
                let Some(ctx) = VehicleContext::new(vehicle, &d) else {
                    continue;
                };
                let st = self.states.entry(d.clone()).or_default();
                let out = self.rules.on_loan_change(ctx, st, now);
                self.apply_outcome(vid, &d, out, now);
            }
        }
        (
            200,
            json!({"loan": {"id": loan_id, "status": b.status, "days_past_due": b.days_past_due}, "vehicles": ids}),
        )
    }
}

/// A stable, unique alert id (the receiver's idempotency key): derived from what the alert is
/// about and the engine's alert counter, so replay produces the same ids every run.
fn alert_id(vehicle: &str, device: &DeviceId, kind: AlertType, at: Timestamp, n: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(vehicle.as_bytes());
    h.update([0]);
    h.update(device.as_str().as_bytes());
    h.update([0]);
    h.update(kind.as_str().as_bytes());
    h.update(at.millis().to_be_bytes());
    h.update(n.to_be_bytes());
    let d = h.finalize();
    format!("lw_{}", hex::encode(&d[..16]))
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
        // The daemon reads alerts from the outbox; the in-memory list is for replay.
        engine.raised.clear();
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

impl EngineHandle {
    /// The vehicle a device is bound to, if any.
    pub fn vehicle_of(&self, device: &str) -> Option<String> {
        self.registered
            .read()
            .ok()?
            .get(device)
            .map(|v| v.to_string())
    }
}
