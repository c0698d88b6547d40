//! The engine: per-device state and rules, and the single writer of the store.
//!
//! Connection tasks hand it batches of events and wait for the commit (`thread`); the admin API,
//! `replay`, the watchdog and reload send it typed commands (`command`, one file per resource).
//! Whatever arrives while a flush runs is applied together and flushed once; only then are the
//! waiting replies released, so a reply that acknowledges data is sent only after that data is
//! on disk (CONTRACT.md durability). `replay` drives the same `Engine` synchronously on a
//! virtual clock.

pub mod admission;
pub mod command;
pub mod commands;
pub mod control;
pub mod devices;
pub mod loans;
pub mod long_stay;
pub mod places;
mod queue_rows;
pub mod registrations;
pub mod risk;
#[cfg(test)]
pub(crate) mod testing;
pub mod thread;
mod vehicle_rules;
pub mod vehicles;
pub mod view;
pub mod zones;

pub use command::{Command, EngineError};
pub use thread::{spawn, spawn_on_host_clock, EngineHandle};

use crate::alert::outbox::Outbox;
use crate::alert::{Alert, AlertType};
use crate::event::{DeviceId, Event, EventKind};
use crate::fast_hash::{FastMap, FastSet};
use crate::registry::Vehicle;
use crate::rules::{
    DeadlineQueue, DeviceRuleState, HeldReappearance, Outcome, Rules, SilenceTracker,
    VehicleContext,
};
use crate::store::{DeviceRecord, Store, StoreError};
use crate::time::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use view::{DeviceStateView, VehicleDeviceView, VehicleSummary, VehicleView};

/// How far the host clock must step forward to count as time nobody watched
/// ([`Engine::clock_stepped`]): a smaller step brings a silence alert forward by no more than
/// itself, and a clock stepped by a few seconds again and again (a paused virtual machine)
/// must not hold silence alerts back for good.
pub const GRACE_AFTER_STEP_MS: i64 = 60_000;

/// Events of a batch whose objects are asked for in one step ([`Engine::ingest`]): enough to
/// overlap their cache misses, few enough that what was asked for is still in cache when used.
pub const PREFETCH_CHUNK: usize = 16;

/// A backlog's newest fix this close to a login is where a device back from a silence is now.
const BACKLOG_NOW_MS: i64 = 5 * 60_000;

/// What the engine was told at construction.
#[derive(Clone)]
pub struct EngineConfig {
    pub rules: crate::rules::RuleConfig,
    pub accept_unknown: bool,
    /// Most devices in no vehicle admitted (`ingest.max_unknown_devices`).
    pub max_unknown_devices: usize,
    /// Fixes dated further ahead of their arrival are suspect (`ingest.max_future`).
    pub max_future: Duration,
    pub commit_window: Duration,
    /// Points of each risk reason (`[risk.points]`).
    pub risk_points: crate::risk::Points,
    /// How long fixes are kept in the history; `None` keeps none (benchmarks measure its cost).
    pub history_retention: Option<Duration>,
    /// Resolved `[[webhook]]`s, in config order: alerts are queued for those whose filter matches.
    pub webhooks: Vec<crate::alert::webhook::Webhook>,
}

impl EngineConfig {
    /// The engine's part of the daemon's configuration, with the resolved webhooks.
    pub fn from_config(
        cfg: &crate::config::Config,
        webhooks: Vec<crate::alert::webhook::Webhook>,
    ) -> Self {
        EngineConfig {
            rules: cfg.rules.clone(),
            accept_unknown: cfg.ingest.accept_unknown,
            max_unknown_devices: cfg.ingest.max_unknown_devices,
            max_future: cfg.ingest.max_future,
            commit_window: cfg.storage.commit_window,
            history_retention: Some(cfg.storage.history_retention),
            risk_points: cfg.risk.resolved.clone(),
            webhooks,
        }
    }
}

/// Which vehicle each registered device belongs to; read by the login policy from any thread,
/// written only by the engine.
pub type Registered = Arc<RwLock<FastMap<DeviceId, Arc<str>>>>;

pub struct Engine {
    store: Store,
    /// Alerts are written here in the same commit as the state change that raised them.
    outbox: Outbox,
    cfg: EngineConfig,
    rules: Rules,
    /// Last-known position and last-seen of every device ever heard from.
    devices: FastMap<DeviceId, DeviceRecord>,
    /// The registry, in id order (the vehicle list pages through it), and each registered
    /// device's rule state.
    vehicles: BTreeMap<String, Vehicle>,
    states: FastMap<DeviceId, DeviceRuleState>,
    registered: Registered,
    /// The login policy, which counts the devices in no vehicle.
    admissions: Arc<admission::Admissions>,
    /// When each device was bound to its vehicle (`Store::put_bound`); devices bound before this
    /// was kept have none.
    bound_since: FastMap<DeviceId, Timestamp>,
    /// JT/T 808 terminal numbers bound to their registration's terminal id.
    terminal_ids: Arc<registrations::TerminalIds>,
    /// Silence deadlines: O(log n) per update, no scans.
    tracker: SilenceTracker,
    /// Silent devices that logged in: their `reappeared` waits for the next message, which
    /// brings the position (`rules::REAPPEAR_HOLD`). Kept in the store too, so that a restart
    /// during the hold raises it with the silence it ended.
    held: FastMap<DeviceId, HeldReappearance>,
    /// Where each held device was last known before it went silent: `distance_m` counts from
    /// there, not from a fix of the backlog it uploads while held. In memory only (a hold lasts
    /// under a second; a crash within it loses the distance, not the alert).
    held_from: FastMap<DeviceId, (f64, f64)>,
    held_due: DeadlineQueue<DeviceId>,
    /// Risk zones and the vehicle-wide rules' state and deadlines (`vehicle_rules`).
    vrules: vehicle_rules::VehicleRules,
    /// When this engine started, or the host clock last stepped (the `startup_grace` reference).
    started_at: Timestamp,
    /// Records and rule states changed since the last flush.
    dirty: FastSet<DeviceId>,
    dirty_states: FastSet<DeviceId>,
    /// Each vehicle's risk reasons, and those changed since the last flush.
    risk: FastMap<String, crate::risk::RiskState>,
    dirty_risk: FastSet<String>,
    /// Set while one command moves several of a vehicle's reasons (`risk_in_one_step`): the
    /// tier's change is then raised once, at the end.
    tier_alerts_held: bool,
    /// The collections queue's dense rows (`queue_rows`), written with every risk change.
    queue: queue_rows::QueueRows,
    /// Every accepted fix since the last flush, staged for the history (same commit).
    history: crate::history::History,
    history_staged: crate::history::Staged,
    /// The newest fix time among the trusted fixes seen (at start: the history's and the devices'
    /// newest). A fix is too old for the history when it is past the retention counted from
    /// `history::clock_reference`: with a host clock set a year forward, the fixes the trackers
    /// date right are kept, not dropped as a year old.
    newest_fix: Option<Timestamp>,
    /// Alerts raised since `take_alerts` was last called.
    raised: Vec<Alert>,
    /// Alerts raised and not yet in the outbox, with their webhooks: the commit's flush writes
    /// them in one batch with `writes` (a flush that fails keeps both for the next one).
    unqueued: Vec<(Alert, Vec<usize>)>,
    /// This commit's writes to sled's trees, applied at its flush with its alerts in one
    /// crash-atomic batch (`store::Writes`).
    writes: crate::store::Writes,
    /// Alerts raised so far (persisted); part of each alert's id.
    alert_count: u64,
    /// `alert_count` as last written: a commit that raised nothing writes nothing for it.
    alert_count_saved: u64,
    /// Commands to devices (`crate::downlink`).
    commands: crate::downlink::Commands,
    /// Counters for benchmarks and tests.
    pub stats: Stats,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub positions_stored: u64,
    /// Fixes written to the history.
    pub history_fixes: u64,
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
    /// Loads the registry, the devices and the rule states. The outbox is opened by the caller
    /// (`Store::open_outbox`) in the same database, so alerts and state share each commit.
    pub fn open(
        store: Store,
        outbox: Outbox,
        cfg: EngineConfig,
        now: Timestamp,
    ) -> Result<Engine, StoreError> {
        let mut devices = FastMap::default();
        for rec in store.all_devices()? {
            devices.insert(rec.device_id.clone(), rec);
        }
        let mut vehicles = BTreeMap::new();
        let mut map = FastMap::default();
        for kv in store.all_vehicles() {
            let (id, body) = kv?;
            let vehicle = Vehicle::from_stored(&id, &body)
                .map_err(|e| corrupt("vehicles", format!("{id}: {e}")))?;
            let shared: Arc<str> = Arc::from(id.as_str());
            for d in &vehicle.devices {
                map.insert(d.id.clone(), shared.clone());
            }
            vehicles.insert(id, vehicle);
        }
        let mut states = FastMap::default();
        for kv in store.all_rule_states() {
            let (id, bytes) = kv?;
            let st = DeviceRuleState::from_bytes(&bytes).map_err(|e| corrupt("rules", e))?;
            if map.contains_key(&id) {
                states.insert(id, st);
            }
        }
        // The times a commit leaves to the device's record (`differs_beyond_progress`).
        for (id, st) in states.iter_mut() {
            if let Some(rec) = devices.get(id) {
                st.catch_up(rec.last_seen, rec.last_valid().map(|p| p.time));
            }
        }
        let mut bound_since = FastMap::default();
        for kv in store.all_bound() {
            let (id, vehicle, since) = kv?;
            // A device off its vehicle keeps its record: bound to that vehicle again (deleted and
            // put back), it keeps its time.
            if map.get(&id).is_some_and(|v| **v == *vehicle) {
                bound_since.insert(id, since);
            }
        }
        // Reappearances held when the daemon stopped: raised when their hold ends (at once if
        // it has), with the silence they ended.
        let mut held = FastMap::default();
        let mut held_due = DeadlineQueue::new();
        for kv in store.all_held() {
            let (id, h) = kv?;
            if map.contains_key(&id) {
                held_due.set(id.clone(), Some(h.due()));
                held.insert(id, h);
            }
        }
        let mut bound = HashMap::new();
        for kv in store.all_registrations() {
            let (id, terminal_id) = kv?;
            bound.insert(id, terminal_id);
        }
        let mut risk: FastMap<String, crate::risk::RiskState> = FastMap::default();
        for kv in store.all_risk() {
            let (id, bytes) = kv?;
            let st = crate::risk::RiskState::from_bytes(&bytes).map_err(|e| corrupt("risk", e))?;
            if vehicles.contains_key(&id) {
                risk.insert(id, st);
            }
        }
        // The overdue band follows each loan from the start, also where the stored reasons lag
        // it (a database written before the risk score): written with the first commit.
        let mut dirty_risk = FastSet::default();
        for (id, v) in &vehicles {
            if crate::risk::Reason::overdue(&v.loan).is_none() && !risk.contains_key(id) {
                continue;
            }
            if risk.entry(id.clone()).or_default().set_loan(&v.loan, now) {
                dirty_risk.insert(id.clone());
            }
        }
        let newest_fix = devices
            .values()
            .filter_map(|r| r.position.map(|p| p.time))
            .chain(store.history().newest_fix()?)
            .max();
        let alert_count = store.alerts_raised()?;
        let commands = crate::downlink::Commands::load(&store)?;
        let mut vrules = vehicle_rules::VehicleRules::load(&store, |id| vehicles.contains_key(id))?;
        vrules.catch_up(&vehicles, |id| {
            vehicle_rules::newest_fix_since_bound(&devices, &states, id)
        });
        let rules = Rules::new(cfg.rules.clone(), now);
        let registered: Registered = Arc::new(RwLock::new(map));
        let admissions = Arc::new(admission::Admissions::new(
            cfg.accept_unknown,
            cfg.max_unknown_devices,
            registered.clone(),
        ));
        if let Ok(reg) = registered.read() {
            for id in devices.keys().filter(|id| !reg.contains_key(*id)) {
                admissions.stored_unregistered(id);
            }
        }
        let mut e = Engine {
            risk,
            dirty_risk,
            tier_alerts_held: false,
            queue: queue_rows::QueueRows::default(),
            history: store.history().clone(),
            history_staged: crate::history::Staged::default(),
            newest_fix,
            store,
            outbox,
            rules,
            cfg,
            devices,
            vehicles,
            states,
            registered,
            admissions,
            bound_since,
            terminal_ids: Arc::new(registrations::TerminalIds::new(bound)),
            tracker: SilenceTracker::new(),
            held,
            held_due,
            held_from: FastMap::default(),
            vrules,
            started_at: now,
            dirty: FastSet::default(),
            dirty_states: FastSet::default(),
            raised: Vec::new(),
            unqueued: Vec::new(),
            writes: crate::store::Writes::default(),
            alert_count,
            alert_count_saved: alert_count,
            commands,
            stats: Stats::default(),
        };
        for (id, v) in &e.vehicles {
            e.queue
                .set(id, Some(v), e.risk.get(id), &e.cfg.risk_points, now);
        }
        // A clock set back while the daemon was stopped, or a kill between a step back's sled
        // writes and its journal record.
        e.bring_back_to(now);
        // Reasons a database written before their reconciliation may still hold (a separation
        // with a tracker since taken off): ended now rather than at the vehicle's next put.
        let ids: Vec<String> = e.vehicles.keys().cloned().collect();
        for id in ids {
            e.risk_reconcile(&id, now);
        }
        e.rebuild_deadlines();
        Ok(e)
    }

    /// Applies a command and commits it: the synchronous path of `replay` and tests.
    pub fn execute<C: Command>(
        &mut self,
        cmd: C,
        now: Timestamp,
    ) -> Result<C::Output, EngineError> {
        let out = cmd.apply(self, now)?;
        self.flush()?;
        Ok(out)
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
        self.rebuild_vehicle_deadlines();
    }

    pub fn registered(&self) -> Registered {
        self.registered.clone()
    }

    /// What syncs the store's blob files before an admin write is answered (`engine::thread`).
    pub fn blobs(&self) -> Option<std::sync::Arc<crate::store::BlobSync>> {
        self.store.blobs()
    }

    /// The position history (read-only here: `replay` answers track queries from it).
    pub fn history(&self) -> &crate::history::History {
        &self.history
    }

    /// How long fixes are kept (zero when the history is off).
    pub fn history_retention(&self) -> Duration {
        self.cfg.history_retention.unwrap_or_default()
    }

    /// The JT/T 808 registration policy for protocol sessions.
    pub fn terminal_binding(&self) -> crate::protocol::TerminalBinding {
        self.terminal_ids.binding()
    }

    /// The login policy for protocol sessions (`[ingest] accept_unknown`,
    /// `ingest.max_unknown_devices`; [`admission::Admissions`]).
    pub fn admission(&self) -> crate::protocol::Admission {
        let admissions = self.admissions.clone();
        Arc::new(move |id: &DeviceId| admissions.admits(id))
    }

    /// The host clock stepped by `step_ms` (negative: back) and now reads `now`
    /// (`time::StepWatch`). A step forward of more than [`GRACE_AFTER_STEP_MS`] is time nobody
    /// watched: as after the daemon's own downtime (CONTRACT.md, `startup_grace`), no silence
    /// alert falls due within the grace after it, so that an NTP correction at boot does not raise
    /// a silence alert for every overdue car. A step back leaves times ahead of the clock; each is
    /// brought back to `now` ([`Engine::bring_back_to`]), or a tracker that then went silent would
    /// alert only once the clock caught up with it, and the grace ends no later than it would
    /// have from a start at `now`. Zone visits in progress, open commands and held reappearances
    /// move with the step, so that a dwell, a command's life and a hold are the time the daemon
    /// watched (`VehicleRules::move_visit_starts`, `Commands::clock_stepped`).
    pub fn clock_stepped(&mut self, now: Timestamp, step_ms: i64) {
        self.vrules.move_visit_starts(step_ms, now);
        // Progress waiting to be written is dated in the clock before the step.
        self.vrules.write_all_progress();
        self.commands.clock_stepped(&self.store, step_ms, now);
        self.move_holds(step_ms, now);
        self.risk_clock_stepped(step_ms, now);
        if step_ms < 0 {
            self.bring_back_to(now);
            self.started_at = self.started_at.min(now);
        } else if step_ms > GRACE_AFTER_STEP_MS {
            self.started_at = self.started_at.max(now);
        }
        self.rules = Rules::new(self.cfg.rules.clone(), self.started_at);
        self.rebuild_deadlines();
    }

    /// Moves each held `reappeared` by `step_ms`, its login and the silence it ended alike, so
    /// that its hold lasts as watched and its `silent_s` stays what it was; a login still ahead
    /// of `now` (a start with the clock set back) is brought back to it. Written with the next
    /// commit, so that a restart finds the hold where it is now.
    fn move_holds(&mut self, step_ms: i64, now: Timestamp) {
        let moved: Vec<(DeviceId, HeldReappearance)> = (self.held.iter_mut())
            .filter_map(|(id, h)| {
                let by = crate::time::step_shift(h.at, step_ms, now);
                (by != 0).then(|| {
                    *h = h.moved(by);
                    (id.clone(), *h)
                })
            })
            .collect();
        for (id, h) in moved {
            self.held_due.set(id.clone(), Some(h.due()));
            self.keep_held(&id, Some(&h));
        }
    }

    /// Brings the times a device was last heard (its record's and its rule state's) and bound,
    /// the starts of zone visits, open commands' times and held logins that lie ahead of `now`
    /// back to it, to be written with the next commit: only a clock set back, while running or
    /// while stopped, leaves such times.
    fn bring_back_to(&mut self, now: Timestamp) {
        self.vrules.move_visit_starts(0, now);
        self.commands.clock_stepped(&self.store, 0, now);
        self.move_holds(0, now);
        self.risk_clock_stepped(0, now);
        for (id, rec) in self.devices.iter_mut() {
            if rec.last_seen > now {
                rec.last_seen = now;
                self.dirty.insert(id.clone());
            }
        }
        for (id, st) in self.states.iter_mut() {
            let mut moved = false;
            for t in [&mut st.last_seen, &mut st.registered_at]
                .into_iter()
                .flatten()
            {
                if *t > now {
                    *t = now;
                    moved = true;
                }
            }
            if moved {
                self.dirty_states.insert(id.clone());
            }
        }
    }

    /// SIGHUP: new rule thresholds and (when the set of webhooks is unchanged) their settings.
    pub fn reconfigure(
        &mut self,
        rules: crate::rules::RuleConfig,
        webhooks: Option<Vec<crate::alert::webhook::Webhook>>,
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
        self.ingest_arrivals(&[(events, received_at)]);
    }

    /// Applies the batches of a group commit, each with the time it arrived, in their order.
    ///
    /// The events go by chunks of [`PREFETCH_CHUNK`] across batches (a device's read is most
    /// often one event, so a pipeline per batch would ask for each object just before its use):
    /// before a chunk is applied, the objects of the chunks after it are asked for, a step at a
    /// time (`crate::prefetch`).
    pub fn ingest_arrivals<E: AsRef<[Event]>>(&mut self, arrivals: &[(E, Timestamp)]) {
        let max_future = self.cfg.max_future.as_millis().min(i64::MAX as u128) as i64;
        let retention_ms = self
            .cfg
            .history_retention
            .map(|r| r.as_millis().min(i64::MAX as u128 / 2) as i64);
        let items: Vec<(&Event, Timestamp)> = arrivals
            .iter()
            .flat_map(|(events, at)| events.as_ref().iter().map(move |ev| (ev, *at)))
            .collect();
        let chunk = |k: usize| {
            let rest = items.get(k * PREFETCH_CHUNK..).unwrap_or_default();
            &rest[..rest.len().min(PREFETCH_CHUNK)]
        };
        self.prefetch(&[], 0, &[], chunk(0));
        let mut shapes = self.prefetch(&[], 0, chunk(0), chunk(1));
        for k in 0..items.len().div_ceil(PREFETCH_CHUNK) {
            shapes = self.prefetch(chunk(k), shapes, chunk(k + 1), chunk(k + 2));
            for &(ev, received_at) in chunk(k) {
                self.ingest_one(ev, received_at, max_future, retention_ms);
            }
        }
    }

    /// A three-step pipeline, one chunk apart, each step reading only what the step before asked
    /// for: for `after`, the objects found by key (the device's record and rule state, its
    /// vehicle and the vehicle's rule states, the zone grid's bitmap word); for `next`, what
    /// those point to (the vehicle's devices and compiled fence, the zone grid's cell of the
    /// fix); for `now`, what the fence points to (a small polygon's rings), for the events whose
    /// bit is set in `shapes`. Returns those bits for `next`.
    fn prefetch(
        &self,
        now: &[(&Event, Timestamp)],
        shapes: u64,
        next: &[(&Event, Timestamp)],
        after: &[(&Event, Timestamp)],
    ) -> u64 {
        const _: () = assert!(PREFETCH_CHUNK <= u64::BITS as usize);
        let Ok(reg) = self.registered.read() else {
            return 0;
        };
        let vehicle = |ev: &Event| {
            reg.get(&ev.device_id)
                .and_then(|vid| self.vehicles.get(&**vid))
        };
        for (i, (ev, _)) in now.iter().enumerate() {
            if shapes & (1 << i) == 0 {
                continue;
            }
            if let Some(f) = vehicle(ev).and_then(|v| v.geofence.as_ref()) {
                f.prefetch_shape();
            }
        }
        let mut next_shapes = 0;
        for (i, (ev, _)) in next.iter().enumerate() {
            if let Some(v) = vehicle(ev) {
                v.prefetch_rule_data();
                if v.geofence.as_ref().is_some_and(|f| f.has_flat_rings()) {
                    next_shapes |= 1 << i;
                }
            }
            if let Some(p) = ev.position() {
                self.vrules.zones.prefetch(p.lon, p.lat);
            }
        }
        for (ev, _) in after {
            if let Some(r) = self.devices.get(&ev.device_id) {
                crate::prefetch::object(r);
            }
            if let Some(st) = self.states.get(&ev.device_id) {
                crate::prefetch::object(st);
            }
            if let Some(p) = ev.position() {
                self.vrules.zones.prefetch_bitmap(p.lon, p.lat);
            }
            if let Some(vid) = reg.get(&ev.device_id) {
                if let Some(v) = self.vehicles.get(&**vid) {
                    crate::prefetch::object(v);
                }
                self.vrules.prefetch(vid);
            }
        }
        next_shapes
    }

    /// One event of [`Engine::ingest`].
    fn ingest_one(
        &mut self,
        ev: &Event,
        received_at: Timestamp,
        max_future: i64,
        retention_ms: Option<i64>,
    ) {
        self.stats.events += 1;
        // Dated beyond `ingest.max_future` (CONTRACT.md "Trust at the edges").
        let from_the_future = |p: &crate::event::Position| p.time.since(received_at) > max_future;
        match &ev.kind {
            // An answer's fix dated in the future is no more where the car is than any other
            // such fix (CONTRACT.md "Trust at the edges"): the command keeps the answer, not the
            // position. The fix itself, if the device also reported it, is kept as suspect.
            EventKind::CommandAnswer(a) if a.position.as_ref().is_some_and(from_the_future) => {
                let mut trusted = ev.clone();
                if let EventKind::CommandAnswer(a) = &mut trusted.kind {
                    a.position = None;
                }
                self.commands.on_event(&self.store, &trusted, received_at);
            }
            _ => self.commands.on_event(&self.store, ev, received_at),
        }
        let rec = match self.devices.entry(ev.device_id.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                // A new record is rare: the registry's lock is taken only then.
                if self
                    .registered
                    .read()
                    .is_ok_and(|r| !r.contains_key(&ev.device_id))
                {
                    self.admissions.stored_unregistered(&ev.device_id);
                }
                v.insert(DeviceRecord::new(
                    ev.device_id.clone(),
                    ev.protocol,
                    received_at,
                ))
            }
        };
        rec.protocol = ev.protocol;
        if received_at > rec.last_seen {
            rec.last_seen = received_at;
        }
        let mut suspect = None;
        let last_valid = rec.last_valid();
        let before = last_valid.map(|p| (p.lat, p.lon));
        let newest_before = last_valid.map(|p| p.time);
        if let EventKind::Position(fix) = &ev.kind {
            if from_the_future(&fix.position) {
                // A clock a year ahead (GPS week rollover, or a spoofer) would win "newest
                // fix" forever and freeze the car: the fix is counted and kept out of the
                // last-known position and the rules; the device still counts as alive.
                metrics::counter!("lienwatch_fixes_suspect_total", "reason" => "future")
                    .increment(1);
                suspect = Some(Event {
                    device_id: ev.device_id.clone(),
                    protocol: ev.protocol,
                    kind: EventKind::Heartbeat { alarms: fix.alarms },
                });
            } else {
                if rec.offer_position(&fix.position, received_at) {
                    self.stats.positions_stored += 1;
                }
                if self.newest_fix.is_none_or(|t| fix.position.time > t) {
                    self.newest_fix = Some(fix.position.time);
                }
            }
            // Every fix goes to the history, valid or not, live or late, suspect or not
            // (CONTRACT.md "Position history"), unless it is already past the retention.
            let oldest_kept = retention_ms.map(|ms| {
                crate::history::clock_reference(received_at, self.newest_fix).add_millis(-ms)
            });
            if oldest_kept.is_some_and(|t| fix.position.time >= t) {
                let h = crate::history::HistoryFix {
                    pos: crate::store::StoredPosition::new(&fix.position, received_at),
                    suspect_future: suspect.is_some(),
                };
                self.history
                    .stage(&mut self.history_staged, &ev.device_id, &h);
                self.stats.history_fixes += 1;
            }
        }
        self.dirty.insert(ev.device_id.clone());

        let Some(vid) = self.vehicle_id_of(&ev.device_id) else {
            return;
        };
        let Some(vehicle) = self.vehicles.get(&*vid) else {
            return;
        };
        let ctx = VehicleContext::new(vehicle, &ev.device_id);
        let st = self.states.entry(ev.device_id.clone()).or_default();
        let before = vehicle_rules::Before {
            position: before,
            silent_at: None,
            fix_time: newest_before,
            inside_at: (st.placement == crate::rules::FencePlacement::Inside)
                .then_some(st.fence_fix_time)
                .flatten(),
        };
        let ev = suspect.as_ref().unwrap_or(ev);
        // Nearly always empty: no hashing on the ingest path then.
        let awaiting_fix = !self.held.is_empty() && self.held.contains_key(&ev.device_id);
        let mut out = self
            .rules
            .on_event_awaiting(ctx, st, ev, received_at, awaiting_fix);
        let silent_at = self.hold_or_release(&ev.device_id, &mut out, before.position);
        let before = vehicle_rules::Before {
            silent_at: silent_at.or(before.position),
            ..before
        };
        self.vehicle_rules_on_event(&vid, ev, before, &mut out, received_at);
        self.apply_outcome(&vid, &ev.device_id, out, received_at);
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
        match out.alerts.len() {
            0 => {}
            1 => {
                for draft in out.alerts {
                    self.raise(vehicle_id, device, draft.kind, draft.details, now);
                }
            }
            // One message that cuts the power and leaves the fence: its tier rise is one alert.
            _ => {
                let before = self.risk_of(vehicle_id, now);
                self.risk_in_one_step(vehicle_id, before, Some(device), now, |e| {
                    for draft in out.alerts {
                        e.raise(vehicle_id, device, draft.kind, draft.details, now);
                    }
                });
            }
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
                .and_then(|r| r.position)
                .map(|p| crate::alert::AlertPosition::new(p.position(), p.received_at)),
            detected_at: now,
            details,
        };
        let targets = crate::alert::webhook::targets(&self.cfg.webhooks, kind);
        self.unqueued.push((alert.clone(), targets));
        metrics::counter!("lienwatch_alerts_raised_total", "type" => kind.as_str()).increment(1);
        tracing::info!(alert = %alert.id, r#type = kind.as_str(), vehicle = vehicle_id, device = %device, "alert raised");
        let details = alert.details.clone();
        self.raised.push(alert);
        self.risk_on_alert(vehicle_id, device, kind, &details, now);
    }

    /// A login of a silent device holds its `reappeared`; the next usable position releases it
    /// (or the hold's end), with what the hold remembered of the silence (the login moved
    /// `last_seen`).
    /// Starts, keeps or ends the device's hold of `reappeared` as `out` says; `before` is its
    /// newest usable position before this event. Returns where it was before the silence, when
    /// this event ends a hold that knew it.
    fn hold_or_release(
        &mut self,
        device: &DeviceId,
        out: &mut Outcome,
        before: Option<(f64, f64)>,
    ) -> Option<(f64, f64)> {
        if let Some(h) = out.held.take() {
            // A second login while held: the first one is when it spoke again.
            if !self.held.contains_key(device) {
                self.keep_held(device, Some(&h));
                if let Some(p) = before {
                    self.held_from.insert(device.clone(), p);
                }
            }
            let h = *self.held.entry(device.clone()).or_insert(h);
            self.held_due.set(device.clone(), Some(h.due()));
            return None;
        }
        // Nearly always empty: no hashing on the ingest path then.
        if self.held.is_empty() {
            return None;
        }
        let (h, from) = self.end_hold(device)?;
        if let Some(a) = out
            .alerts
            .iter_mut()
            .find(|a| a.kind == crate::alert::AlertType::Reappeared)
        {
            a.details = h.draft().details;
        }
        from
    }

    /// Ends the device's hold, if it has one: in memory, in the deadline queue and in the store.
    /// With it, where the device was before its silence, if known.
    fn end_hold(&mut self, device: &DeviceId) -> Option<(HeldReappearance, Option<(f64, f64)>)> {
        let h = self.held.remove(device)?;
        let from = self.held_from.remove(device);
        self.held_due.set(device.clone(), None);
        self.keep_held(device, None);
        Some((h, from))
    }

    /// Writes a hold through to the store (durable with the commit that carries its cause).
    fn keep_held(&mut self, device: &DeviceId, held: Option<&HeldReappearance>) {
        self.writes.put_held(device, held);
    }

    /// Time-driven work up to `now`: silence deadlines that fell due.
    pub fn tick(&mut self, now: Timestamp) {
        self.commands.expire_due(&self.store, now);
        while self.held_due.next_deadline().is_some_and(|t| t <= now) {
            for id in self.held_due.pop_due(now) {
                let Some((h, from)) = self.end_hold(&id) else {
                    continue;
                };
                let Some(vid) = self.vehicle_id_of(&id) else {
                    continue;
                };
                let Some(ctx) = self
                    .vehicles
                    .get(&*vid)
                    .and_then(|v| VehicleContext::new(v, &id))
                else {
                    continue;
                };
                // No live fix within the hold. A backlog uploaded in it counts only when its
                // newest fix is from the last minutes before the login (a whole JT/T 808 or H02
                // batch, where the car is now): one sent a frame at a time, oldest first, is
                // still near where the device went silent when the hold runs out.
                let recent = self
                    .devices
                    .get(&id)
                    .and_then(|r| r.last_valid())
                    .filter(|p| p.received_at >= h.at && p.time >= h.at.add_millis(-BACKLOG_NOW_MS))
                    .map(|p| (p.lat, p.lon));
                let st = self.states.entry(id.clone()).or_default();
                let mut out = self.rules.on_hold_expired(ctx, st, h);
                if let (Some(from), Some(to)) = (from, recent) {
                    for a in out
                        .alerts
                        .iter_mut()
                        .filter(|a| a.kind == AlertType::Reappeared)
                    {
                        vehicle_rules::set_reappeared_distance(&mut a.details, from, to);
                    }
                }
                self.apply_outcome(&vid, &id, out, now);
            }
        }
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
        self.vehicle_rules_tick(now);
    }

    /// When `tick` next has something to do.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        [
            self.tracker.next_deadline(),
            self.held_due.next_deadline(),
            self.commands.next_deadline(),
            self.vrules.next_deadline(),
            // Places checks waiting for the worker: go round at once.
            self.vrules
                .long_stay
                .has_checks()
                .then_some(Timestamp::from_millis(0)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// After a commit: commands due at connected devices go to their connections. `read_at` is
    /// when the monotonic clock read what `now` is on the host clock.
    pub fn dispatch_commands(&mut self, now: Timestamp, read_at: std::time::Instant) {
        self.commands.dispatch(now, read_at);
    }

    /// Where connections register to receive commands for their device.
    pub fn command_links(&self) -> Arc<crate::downlink::Links> {
        self.commands.links()
    }

    /// Alerts raised since the last call (replay prints them).
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.raised)
    }

    /// Writes every changed record and flushes: the commit that replies wait for. The alerts
    /// raised since the last commit go into sled in one batch with the states that remember
    /// them (`store::Writes`), none of which is in sled before. (Device records and fixes go to
    /// the commit journal after sled's flush; command records and zones are written as they
    /// change, and hold nothing an alert depends on.)
    ///
    /// A write that fails leaves what it had not written staged, so that the next commit
    /// writes it again.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        // One write for every changed record (`store::DeviceLog`).
        let devices = &self.devices;
        self.store
            .put_devices(self.dirty.iter().filter_map(|id| devices.get(id)))?;
        self.dirty.clear();
        for id in &self.dirty_states {
            let bytes = self.states.get(id).map(DeviceRuleState::to_bytes);
            self.writes.put_rule_state(id, bytes.as_deref());
        }
        self.dirty_states.clear();
        self.history
            .apply(std::mem::take(&mut self.history_staged))?;
        for id in &self.dirty_risk {
            let bytes = self
                .risk
                .get(id)
                .filter(|s| !s.is_empty())
                .map(crate::risk::RiskState::to_bytes);
            self.writes.put_risk(id, bytes.as_deref());
        }
        self.dirty_risk.clear();
        self.vrules.flush(&mut self.writes);
        for (id, terminal_id) in self.terminal_ids.take_unsaved() {
            self.writes.put_registration(&id, &terminal_id);
        }
        if self.alert_count != self.alert_count_saved {
            self.writes.set_alerts_raised(self.alert_count);
            self.alert_count_saved = self.alert_count;
        }
        // The commit's alerts and every state change of its own in one batch, which sled
        // recovers whole or not at all (`store::Writes`).
        if self.unqueued.is_empty() {
            self.store.apply(&mut self.writes, None)?;
        } else {
            let mut alerts = self
                .outbox
                .stage(self.unqueued.iter().map(|(a, t)| (a, t.as_slice())))
                .map_err(|e| StoreError::Outbox(e.to_string()))?;
            self.store.apply(&mut self.writes, Some(alerts.batch()))?;
            alerts.applied();
            self.unqueued.clear();
        }
        // sled's trees, then the journal's record of this commit (`Store::flush`).
        self.store.flush()?;
        // The alerts of this commit are on disk: the webhook workers may send them.
        self.outbox.mark_durable();
        self.stats.commits += 1;
        Ok(())
    }

    /// Stops watching a device: its rule state goes, its deadline goes, logins see it unknown.
    fn unregister(&mut self, d: &DeviceId) {
        self.bound_since.remove(d);
        self.end_hold(d);
        if let Some(mut st) = self.states.remove(d) {
            let _ = self.rules.on_unregistered(&mut st);
        }
        self.dirty_states.insert(d.clone());
        self.tracker.set(d, None);
        // Counted among the strangers before the registry lets it go, so that a login in
        // between never finds a stored device neither registered nor stored.
        if self.devices.contains_key(d) {
            self.admissions.stored_unregistered(d);
        }
        if let Ok(mut reg) = self.registered.write() {
            reg.remove(d);
        }
    }

    fn vehicle_view(&self, id: &str, now: Timestamp) -> Option<VehicleView> {
        let v = self.vehicles.get(id)?;
        let devices = v
            .devices
            .iter()
            .map(|d| {
                let rec = self.devices.get(&d.id);
                let st = self.states.get(&d.id);
                VehicleDeviceView {
                    id: d.id.clone(),
                    kind: d.kind,
                    silence_after: d.silence_after,
                    last_seen: rec.map(|r| r.last_seen),
                    protocol: rec.map(|r| r.protocol),
                    position: rec.and_then(|r| r.position.as_ref()).map(|p| p.to_json()),
                    last_valid_position: rec.and_then(DeviceRecord::last_valid_json),
                    state: DeviceStateView {
                        geofence: st.map(|s| s.placement),
                        silent: st.map(|s| s.silent_alerted).unwrap_or(false),
                        alarms: st.map(|s| s.alarms_alerted.names()).unwrap_or_default(),
                        silence_deadline: self.tracker.deadline(&d.id),
                    },
                }
            })
            .collect();
        Some(VehicleView {
            id: v.id.clone(),
            vin: v.vin.clone(),
            plate: v.plate.clone(),
            loan: v.loan.clone(),
            devices,
            geofence: v.geofence.as_ref().map(|g| g.source_raw()),
            risk: self.risk_of(id, now)?,
        })
    }

    /// A vehicle's row: its position is the newest fix of any of its trackers, as a device's is
    /// its newest (CONTRACT.md), not the position of the tracker heard last: a wired unit cut
    /// out and left powered at home sends heartbeats beside its old home fix while the battery
    /// unit on the car reports from elsewhere.
    fn vehicle_summary(&self, v: &Vehicle, now: Timestamp) -> VehicleSummary {
        let records = || v.devices.iter().filter_map(|d| self.devices.get(&d.id));
        let position = records().filter_map(|r| r.position).max_by_key(|p| p.time);
        let last_valid = records()
            .filter_map(|r| r.last_valid())
            .max_by_key(|p| p.time);
        VehicleSummary {
            vehicle_id: v.id.clone(),
            vin: v.vin.clone(),
            plate: v.plate.clone(),
            loan: v.loan.clone(),
            last_seen: records().map(|r| r.last_seen).max(),
            risk: self.risk_of(&v.id, now),
            position: position.map(|p| p.to_json()),
            last_valid_position: last_valid
                .filter(|lv| position.is_some_and(|p| !p.position().is_usable() && p != *lv))
                .map(|lv| lv.to_json()),
        }
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

#[cfg(test)]
mod tests {
    use super::testing::{engine_with_history, live_fix};
    use super::*;

    /// A commit cut short (killed before its flush) leaves nothing of itself in sled, where
    /// another thread's flush would make it durable: its alerts and the rule states that remember
    /// them are written together, at its flush. So the fix a device resends, having had no
    /// acknowledgement, raises the excursion's alert once, not a second time under a new id.
    #[test]
    fn a_commit_cut_short_leaves_no_alert_without_its_rule_state() {
        use super::testing::{put_vehicle, reopen_at, take_count};
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = Store::temporary().unwrap();
        let mut e = super::testing::engine_at(store.clone(), t0);
        put_vehicle(
            &mut e,
            "V-1",
            serde_json::json!({"loan": {"id": "L", "status": "current"},
                "devices": [{"id": "111", "kind": "wired"}],
                "geofence": {"type": "Circle", "center": [114.0, 22.5], "radius_m": 2000}}),
            t0,
        );
        e.ingest(&[live_fix("111", t0, 22.5, 114.0)], t0);
        e.flush().unwrap();
        let t = t0.add_millis(60_000);
        let outside = live_fix("111", t, 22.6, 114.0);
        e.ingest(std::slice::from_ref(&outside), t);
        assert_eq!(take_count(&mut e, AlertType::GeofenceExit), 1);
        let exits = |e: &Engine| {
            e.outbox
                .list(None, 10, None)
                .unwrap()
                .iter()
                .filter(|v| v.alert.kind == AlertType::GeofenceExit)
                .count()
        };
        assert_eq!(exits(&e), 0, "not in sled before the commit's flush");
        drop(e);
        let mut e = reopen_at(&store, t);
        e.ingest(&[outside], t);
        assert_eq!(take_count(&mut e, AlertType::GeofenceExit), 1);
        e.flush().unwrap();
        assert_eq!(exits(&e), 1);
        let t = t.add_millis(60_000);
        e.ingest(&[live_fix("111", t, 22.61, 114.0)], t);
        e.flush().unwrap();
        drop(e);
        let e = reopen_at(&store, t);
        assert_eq!(
            exits(&e),
            1,
            "one alert for the excursion, after a restart too"
        );
    }

    /// A forward step of the host clock (an NTP correction at boot) carries an overdue car's
    /// silence deadline past: as after the daemon's downtime, no alert before the startup grace
    /// has passed from the step, and none for a tracker heard within it. One that stays silent
    /// alerts when the grace ends.
    #[test]
    fn a_forward_step_of_the_clock_gets_the_startup_grace() {
        let minute = 60_000;
        let t0 = Timestamp::from_secs(1_795_305_600);
        for heard_in_grace in [false, true] {
            let mut e = super::testing::overdue_car_at(Store::temporary().unwrap(), t0);
            let seen = t0.add_millis(20 * minute);
            e.ingest(&[live_fix("111", seen, 22.5, 114.0)], seen);
            let step = 400 * 24 * 60 * minute;
            let t1 = seen.add_millis(step + minute);
            e.clock_stepped(t1, step);
            e.tick(t1);
            let silent = |e: &mut Engine| super::testing::take_count(e, AlertType::SilentOverdue);
            assert_eq!(silent(&mut e), 0, "the step alone alerts nothing");
            if heard_in_grace {
                let back = t1.add_millis(2 * minute);
                e.ingest(&[live_fix("111", back, 22.5, 114.0)], back);
            }
            e.tick(t1.add_millis(9 * minute));
            assert_eq!(silent(&mut e), 0, "within the grace");
            e.tick(t1.add_millis(10 * minute + 1));
            assert_eq!(
                silent(&mut e),
                usize::from(!heard_in_grace),
                "after the grace, heard in it: {heard_in_grace}"
            );
        }
    }

    /// A step back (a clock set a year ahead by mistake, then corrected) leaves the time a tracker
    /// was last heard a year ahead of the clock. It counts from the step instead, so that a tracker
    /// that went silent before the correction alerts after its threshold, not a year later.
    #[test]
    fn a_step_back_of_the_clock_counts_silence_from_the_step() {
        let hour = 3_600_000;
        let ahead = Timestamp::from_secs(1_826_841_600);
        // The same engine, then one restarted on the store after the step.
        for restart in [false, true] {
            let store = Store::temporary().unwrap();
            let mut e = super::testing::overdue_car_at(store.clone(), ahead);
            let seen = ahead.add_millis(hour);
            e.ingest(&[live_fix("111", seen, 22.5, 114.0)], seen);
            e.flush().unwrap();
            let step = -365 * 24 * hour;
            let t1 = seen.add_millis(step);
            e.clock_stepped(t1, step);
            e.flush().unwrap();
            if restart {
                drop(e);
                e = super::testing::reopen_at(&store, t1);
            }
            let silent = |e: &mut Engine| super::testing::take_count(e, AlertType::SilentOverdue);
            e.tick(t1.add_millis(6 * hour - 1));
            assert_eq!(silent(&mut e), 0, "restart: {restart}");
            e.tick(t1.add_millis(6 * hour));
            assert_eq!(silent(&mut e), 1, "restart: {restart}");
        }
    }

    /// A clock set back while the daemon was stopped (or a kill between a step back's writes):
    /// at start, times ahead of the clock count from the start, the record's too, which
    /// `catch_up` would otherwise raise the rule state's back to.
    #[test]
    fn a_start_with_the_clock_set_back_counts_silence_from_the_start() {
        let hour = 3_600_000;
        let ahead = Timestamp::from_secs(1_826_841_600);
        let store = Store::temporary().unwrap();
        let mut e = super::testing::overdue_car_at(store.clone(), ahead);
        let seen = ahead.add_millis(hour);
        e.ingest(&[live_fix("111", seen, 22.5, 114.0)], seen);
        e.flush().unwrap();
        drop(e);
        let start = seen.add_millis(-365 * 24 * hour);
        let mut e = super::testing::reopen_at(&store, start);
        let silent = |e: &mut Engine| super::testing::take_count(e, AlertType::SilentOverdue);
        e.tick(start.add_millis(6 * hour - 1));
        assert_eq!(silent(&mut e), 0);
        e.tick(start.add_millis(6 * hour));
        assert_eq!(silent(&mut e), 1);
    }

    /// A car at a pawn shop (a zone with a 1 h dwell) while the host clock steps: its dwell is
    /// the time the daemon watched. A step forward of a day raises no dwell alert at once, and
    /// a step back of a year (in the same engine, or after a restart) holds none back by the
    /// year: each alerts when the visit has been watched for an hour, and says so.
    #[test]
    fn a_zone_dwell_is_the_time_the_daemon_watched_across_clock_steps() {
        let (minute, day) = (60_000, 24 * 3_600_000);
        let t0 = Timestamp::from_secs(1_795_305_600);
        for (step, restart) in [(day, false), (-365 * day, false), (-365 * day, true)] {
            let store = Store::temporary().unwrap();
            let (mut e, entered) = at_the_pawn_shop(store.clone(), t0);
            let t1 = entered.add_millis(10 * minute + step);
            e.clock_stepped(t1, step);
            e.flush().unwrap();
            if restart {
                drop(e);
                e = super::testing::reopen_at(&store, t1);
            }
            let case = format!("step {step} ms, restart: {restart}");
            e.tick(t1.add_millis(50 * minute - 1));
            assert_eq!(dwells(&mut e), Vec::<i64>::new(), "{case}");
            e.tick(t1.add_millis(50 * minute));
            assert_eq!(dwells(&mut e), [3600], "{case}");
        }
    }

    /// The clock set back by a year while the daemon was stopped: a visit that began before it
    /// counts from the start, not from a year ahead.
    #[test]
    fn a_start_with_the_clock_set_back_counts_a_zone_visit_from_the_start() {
        let t0 = Timestamp::from_secs(1_826_841_600);
        let store = Store::temporary().unwrap();
        let (mut e, entered) = at_the_pawn_shop(store.clone(), t0);
        e.flush().unwrap();
        drop(e);
        let start = entered.add_millis(-365 * 24 * 3_600_000);
        let mut e = super::testing::reopen_at(&store, start);
        e.tick(start.add_millis(3_600_000 - 1));
        assert_eq!(dwells(&mut e), Vec::<i64>::new());
        e.tick(start.add_millis(3_600_000));
        assert_eq!(dwells(&mut e), [3600]);
    }

    /// A tracker back from a silence logs in, and its `reappeared` is held for the fix that
    /// follows; then the host clock steps. The hold still ends after its time, and the alert
    /// still says how long the tracker was silent: after a step back (while running, or while
    /// stopped) and after a step forward (with a restart after it, too).
    #[test]
    fn a_held_reappearance_keeps_its_hold_and_its_silence_across_steps() {
        let (hour, day) = (3_600_000, 24 * 3_600_000);
        let hold = crate::rules::REAPPEAR_HOLD.as_millis() as i64;
        let t0 = Timestamp::from_secs(1_826_841_600);
        // (step, whether the engine is told of it, a restart after it)
        let cases = [
            (-365 * day, true, false),
            (-365 * day, false, true),
            (day, true, false),
            (day, true, true),
        ];
        for (step, told, restart) in cases {
            let case = format!("step {step} ms, told: {told}, restart: {restart}");
            let store = Store::temporary().unwrap();
            let mut e = super::testing::overdue_car_at(store.clone(), t0);
            let seen = t0.add_millis(hour);
            e.ingest(&[live_fix("111", seen, 22.5, 114.0)], seen);
            e.tick(seen.add_millis(6 * hour));
            let silent = super::testing::take_count(&mut e, AlertType::SilentOverdue);
            assert_eq!(silent, 1, "{case}");
            let login = Event {
                device_id: DeviceId::new("111"),
                protocol: crate::event::Protocol::Gt06,
                kind: EventKind::Login,
            };
            let back = seen.add_millis(7 * hour);
            e.ingest(&[login], back);
            assert!(reappeared(&mut e).is_empty(), "held for its fix: {case}");
            let t1 = back.add_millis(step);
            if told {
                e.clock_stepped(t1, step);
            }
            e.flush().unwrap();
            if restart {
                drop(e);
                e = super::testing::reopen_at(&store, t1);
            }
            e.tick(t1.add_millis(hold - 1));
            assert!(reappeared(&mut e).is_empty(), "{case}");
            e.tick(t1.add_millis(hold));
            assert_eq!(reappeared(&mut e), [7 * 3600], "{case}");
        }
    }

    /// The `silent_s` of each `reappeared` raised since the last call.
    fn reappeared(e: &mut Engine) -> Vec<i64> {
        e.take_alerts()
            .iter()
            .filter(|a| a.kind == AlertType::Reappeared)
            .filter_map(|a| a.details["silent_s"].as_i64())
            .collect()
    }

    /// An overdue car that entered a pawn shop zone (dwell 1 h) a minute after `t0`, and when.
    fn at_the_pawn_shop(store: Store, t0: Timestamp) -> (Engine, Timestamp) {
        use super::command::Command;
        let mut e = super::testing::overdue_car_at(store, t0);
        let zone = br#"{"name": "Pawn", "kind": "pawn_shop", "dwell_after": "1h",
            "geometry": {"type": "Circle", "center": [114.0, 22.6], "radius_m": 300}}"#;
        super::zones::PutZone::from_json("Z-1", zone)
            .and_then(|c| c.apply(&mut e, t0))
            .unwrap();
        let entered = t0.add_millis(60_000);
        e.ingest(&[live_fix("111", entered, 22.6, 114.0)], entered);
        let entries = super::testing::take_count(&mut e, AlertType::RiskZoneEnter);
        assert_eq!(entries, 1);
        (e, entered)
    }

    /// The `dwell_s` of each `risk_zone_dwell` raised since the last call.
    fn dwells(e: &mut Engine) -> Vec<i64> {
        e.take_alerts()
            .iter()
            .filter(|a| a.kind == AlertType::RiskZoneDwell)
            .filter_map(|a| a.details["dwell_s"].as_i64())
            .collect()
    }

    /// Steps forward of a minute or less (a virtual machine paused for seconds, again and
    /// again) bring a silence alert forward by no more than themselves, and must not hold it
    /// back for good: they leave the grace alone.
    #[test]
    fn small_steps_forward_do_not_hold_silence_back() {
        let minute = 60_000;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let mut e = super::testing::overdue_car_at(Store::temporary().unwrap(), t0);
        let seen = t0.add_millis(20 * minute);
        e.ingest(&[live_fix("111", seen, 22.5, 114.0)], seen);
        // A 30 s step every five minutes for six hours.
        let mut now = seen;
        while now < seen.add_millis(6 * 60 * minute) {
            now = now.add_millis(5 * minute);
            e.clock_stepped(now, 30_000);
            e.tick(now);
        }
        let silent = super::testing::take_count(&mut e, AlertType::SilentOverdue);
        assert_eq!(silent, 1);
    }

    /// A registered device's fixes and heartbeats move only the times its record holds too:
    /// its rule state is not written for them, and a restart takes them from the record. Its
    /// silence then counts from its last message, not from the last state written, and an
    /// older fix sent after the restart is still too old for the geofence.
    #[test]
    fn the_times_every_event_moves_come_back_from_the_device_record() {
        let minute = 60_000;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = Store::temporary().unwrap();
        let mut e = super::testing::engine_at(store.clone(), t0);
        super::testing::put_vehicle(
            &mut e,
            "V-1",
            serde_json::json!({"loan": {"id": "L", "status": "overdue"},
                "devices": [{"id": "111", "kind": "wired"}],
                "geofence": {"type": "Circle", "center": [114.0, 22.5], "radius_m": 1000}}),
            t0,
        );
        let id = crate::event::DeviceId::new("111");
        let stored = |store: &Store| {
            store
                .all_rule_states()
                .map(|kv| kv.unwrap())
                .find(|(d, _)| *d == id)
                .map(|(_, b)| DeviceRuleState::from_bytes(&b).unwrap())
                .unwrap()
        };
        let first = t0.add_millis(minute);
        e.ingest(&[live_fix("111", first, 22.5, 114.0)], first);
        e.flush().unwrap();
        assert_eq!(stored(&store).last_seen, Some(first));
        // An hour of fixes inside the fence: the state written with the first stays as it was.
        let mut last = first;
        for m in 2..=60 {
            last = t0.add_millis(m * minute);
            e.ingest(&[live_fix("111", last, 22.5, 114.0)], last);
            e.flush().unwrap();
        }
        assert_eq!(stored(&store).last_seen, Some(first), "not written per fix");
        assert_eq!(stored(&store).fence_fix_time, Some(first));
        drop(e);
        let restart = last.add_millis(minute);
        let reopen = || super::testing::reopen_at(&store, restart);
        let kinds = |e: &mut Engine| {
            e.take_alerts()
                .into_iter()
                .map(|a| a.kind)
                .filter(|k| *k != AlertType::RiskTierChanged)
                .collect::<Vec<_>>()
        };
        // Silence counts from the last fix (6 h by default), not the first.
        let mut e = reopen();
        e.tick(last.add_millis(6 * 60 * minute - 1));
        assert_eq!(kinds(&mut e), []);
        e.tick(last.add_millis(6 * 60 * minute));
        assert_eq!(kinds(&mut e), [AlertType::SilentOverdue]);
        drop(e);
        // A fix from before the newest, outside the fence: too old for the geofence.
        let mut e = reopen();
        let late = restart.add_millis(1000);
        e.ingest(
            &[live_fix("111", last.add_millis(-minute), 23.5, 115.0)],
            late,
        );
        assert_eq!(kinds(&mut e), [], "an older fix moved the geofence");
    }

    /// With the host clock set a year forward, the fixes trackers date right are newer than
    /// the newest fix known and go to the history; a fix older than the retention before that
    /// fix does not. Before, every fix looked a year old on arrival and was dropped.
    #[test]
    fn fixes_dated_right_are_kept_while_the_host_clock_is_a_year_ahead() {
        let day = 86_400_000;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = Store::temporary().unwrap();
        let mut e = engine_with_history(store.clone(), t0, Duration::from_secs(3 * 86_400));
        e.ingest(&[live_fix("1", t0, 22.5, 114.0)], t0.add_millis(2_000));
        e.flush().unwrap();
        drop(e);
        // Restarted with the host clock a year on: the newest fix comes from the store.
        let ahead = t0.add_millis(367 * day);
        let mut e = engine_with_history(store, ahead, Duration::from_secs(3 * 86_400));
        e.ingest(
            &[
                live_fix("1", t0.add_millis(60_000), 22.5, 114.0),
                live_fix("1", t0.add_millis(-5 * day), 22.5, 114.0),
            ],
            ahead,
        );
        e.ingest(&[live_fix("2", t0.add_millis(120_000), 22.6, 114.1)], ahead);
        e.flush().unwrap();
        let times = |id: &str| -> Vec<Timestamp> {
            let mut v = Vec::new();
            e.history()
                .for_each(id, Timestamp::from_millis(0), ahead, |f| {
                    v.push(f.pos.time);
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            v
        };
        assert_eq!(times("1"), [t0, t0.add_millis(60_000)]);
        assert_eq!(times("2"), [t0.add_millis(120_000)]);
    }
}
