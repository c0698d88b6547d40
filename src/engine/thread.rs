//! The engine thread and the handle that connection tasks, the admin API and the daemon hold.
//!
//! The engine runs on a thread of its own, never on the tokio runtime, because every sled call
//! blocks. It drains whatever arrived while the previous flush ran (group commit), applies it,
//! flushes once, and only then answers every waiting batch and command.

use super::command::{Command, EngineError};
use super::Engine;
use crate::event::{DeviceId, Event};
use crate::store::StoreError;
use crate::time::{Clock, StepWatch, Timestamp};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Called after the commit that covers a command: sends its answer, or the store's error.
type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// A command bound to its answer channel, type-erased for the queue.
type Job = Box<dyn FnOnce(&mut Engine, Timestamp) -> Answer + Send>;

/// A command's completion, and whether it waits for sled's blob files (`Command::WRITES`).
struct Answer {
    complete: Completion,
    after_blobs: bool,
}

impl Answer {
    /// For what answers nobody (a notification, a places check's result).
    fn none() -> Answer {
        Answer {
            complete: Box::new(|_| {}),
            after_blobs: false,
        }
    }
}

enum Msg {
    Ingest {
        events: Vec<Event>,
        received_at: Timestamp,
        /// The commit's outcome, and the batch's vector emptied for the sender's next batch.
        done: oneshot::Sender<(Result<(), StoreError>, Vec<Event>)>,
    },
    Command(Job),
    /// Flush and stop.
    Shutdown(oneshot::Sender<Result<(), String>>),
}

/// The async side of the engine. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: flume::Sender<Msg>,
    pub registered: super::Registered,
    pub admission: crate::protocol::Admission,
    pub terminal_binding: crate::protocol::TerminalBinding,
    /// Connections register here to be handed commands for their device.
    pub command_links: std::sync::Arc<crate::downlink::Links>,
}

impl EngineHandle {
    /// Hands the events to the engine and waits until they are on disk. `events` comes back
    /// empty with its capacity, so that a source fills the same vector batch after batch: one
    /// allocated on a worker and freed on the engine thread per batch costs the allocator a
    /// cross-thread free each time.
    pub async fn commit(
        &self,
        events: &mut Vec<Event>,
        received_at: Timestamp,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send_async(Msg::Ingest {
                events: std::mem::take(events),
                received_at,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        let (result, emptied) = rx.await.map_err(|_| StoreError::Closed)?;
        *events = emptied;
        result
    }

    /// Applies a command on the engine thread; its answer comes back once its writes are on disk.
    pub async fn run<C: Command>(&self, cmd: C) -> Result<C::Output, EngineError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |engine, now| {
            let result = cmd.apply(engine, now);
            Answer {
                complete: Box::new(move |flushed: Result<(), &StoreError>| {
                    let answer = match (result, flushed) {
                        (Ok(v), Ok(())) => Ok(v),
                        (Ok(_), Err(e)) => Err(EngineError::Store(e.to_string())),
                        (Err(e), _) => Err(e),
                    };
                    let _ = tx.send(answer);
                }),
                after_blobs: C::WRITES,
            }
        });
        self.tx
            .send_async(Msg::Command(job))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Applies a command without waiting for its answer (a connection reporting what it sent:
    /// it must not stall the device behind a commit). The queue keeps the caller's order.
    pub async fn notify<C: Command<Output = ()>>(&self, cmd: C) {
        let job: Job = Box::new(move |engine, now| {
            if let Err(e) = cmd.apply(engine, now) {
                tracing::debug!(error = %e, "notification not applied");
            }
            Answer::none()
        });
        let _ = self.tx.send_async(Msg::Command(job)).await;
    }

    /// Stops the engine: answered once its last flush is done and its store let go, with that
    /// flush's failure if it failed (what was applied since the last commit is then not on
    /// disk). From then on every commit and command is refused (`StoreError::Closed`,
    /// `EngineError::Stopped`); the thread itself ends when the last handle is dropped.
    pub async fn shutdown(&self) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        if self.tx.send_async(Msg::Shutdown(done)).await.is_ok() {
            return rx.await.unwrap_or(Ok(()));
        }
        Ok(())
    }

    /// The vehicle a device is bound to, if any (read without a round trip).
    pub fn vehicle_of(&self, device: &DeviceId) -> Option<String> {
        self.registered
            .read()
            .ok()?
            .get(device)
            .map(|v| v.to_string())
    }
}

/// Starts the engine thread on `clock`. After [`EngineHandle::shutdown`] it refuses what it is
/// sent, and it ends once the last handle is dropped.
pub fn spawn(
    engine: Engine,
    clock: Clock,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    spawn_watching(engine, clock, None)
}

/// The daemon's engine thread: on the host clock, watching it for steps
/// ([`Engine::clock_stepped`]), each logged with its size and counted in
/// `lienwatch_clock_steps_total` once the engine has taken it in.
/// `watch` is made with the clock reading the engine was opened at, so that a step while it
/// opened (seconds, with a large registry) is seen too.
pub fn spawn_on_host_clock(
    engine: Engine,
    watch: StepWatch,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    spawn_watching(engine, crate::time::wall_clock(), Some(watch))
}

fn spawn_watching(
    engine: Engine,
    clock: Clock,
    steps: Option<StepWatch>,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    // Bounded: when the disk cannot keep up, connection tasks wait instead of growing memory.
    let (tx, rx) = flume::bounded(8192);
    let handle = EngineHandle {
        tx,
        registered: engine.registered(),
        admission: engine.admission(),
        terminal_binding: engine.terminal_binding(),
        command_links: engine.command_links(),
    };
    // The long_stay places checks: history reads too long for this thread (`super::long_stay`).
    // The worker holds a weak sender only, so that it never keeps the engine's queue open.
    let (checks, check_rx) = flume::unbounded();
    let history = engine.history().clone();
    let answers = handle.tx.downgrade();
    std::thread::Builder::new()
        .name("lienwatch-places".into())
        .spawn(move || places_worker(check_rx, history, answers))?;
    let jh = std::thread::Builder::new()
        .name("lienwatch-engine".into())
        .spawn(move || run(engine, rx, clock, checks, steps))?;
    Ok((handle, jh))
}

/// Answers `long_stay` places checks, one at a time, as engine commands; stops with the engine.
fn places_worker(
    rx: flume::Receiver<super::long_stay::LongStayCheck>,
    history: crate::history::History,
    answers: flume::WeakSender<Msg>,
) {
    while let Ok(check) = rx.recv() {
        let answer = check.run(&history);
        let Some(tx) = answers.upgrade() else {
            return;
        };
        let job: Job = Box::new(move |engine, now| {
            if let Err(e) = answer.apply(engine, now) {
                tracing::warn!(error = %e, "long_stay answer not applied");
            }
            Answer::none()
        });
        if tx.send(Msg::Command(job)).is_err() {
            return;
        }
    }
}

const MAX_BATCH: usize = 4096;

/// A commit's answers queued for the blob thread, and whether they wait for its sync (writes
/// of a commit that made it to disk) or only for the answers queued before them (a failed
/// commit's, which carry their own error).
struct Waiting {
    answers: Vec<Completion>,
    sync: bool,
}

/// Answers commands once sled's blob files are synced too (`store::blob_sync`), on a thread of
/// its own: a command that wrote a large fence waits for its file's sync, the devices whose
/// replies the same commit covers do not (their records are never in a blob file).
struct BlobSyncer {
    tx: Option<flume::Sender<Waiting>>,
    thread: Option<std::thread::JoinHandle<()>>,
    blobs: Option<std::sync::Arc<crate::store::BlobSync>>,
}

impl BlobSyncer {
    fn start(blobs: Option<std::sync::Arc<crate::store::BlobSync>>) -> BlobSyncer {
        let mut syncer = BlobSyncer {
            tx: None,
            thread: None,
            blobs,
        };
        if let Some(b) = syncer.blobs.clone() {
            let (tx, rx) = flume::unbounded::<Waiting>();
            let spawned = std::thread::Builder::new()
                .name("lienwatch-blobs".into())
                .spawn(move || {
                    while let Ok(first) = rx.recv() {
                        // Whatever waits by now shares one sync.
                        let waiting: Vec<_> = std::iter::once(first).chain(rx.try_iter()).collect();
                        let synced = if waiting.iter().any(|w| w.sync) {
                            b.sync_new().map(|_| ())
                        } else {
                            Ok(())
                        };
                        if let Err(e) = &synced {
                            tracing::error!(error = %e, "syncing the store's blob files failed; the admin writes waiting for it are not acknowledged");
                            metrics::counter!("lienwatch_commit_failures_total").increment(1);
                        }
                        for c in waiting.into_iter().flat_map(|w| w.answers) {
                            c(synced.as_ref().map(|_| ()));
                        }
                    }
                });
            match spawned {
                Ok(jh) => {
                    syncer.tx = Some(tx);
                    syncer.thread = Some(jh);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no blob sync thread; commands sync on the engine thread")
                }
            }
        }
        syncer
    }

    /// Answers a commit's commands: reads at once and writes once the blob files are synced;
    /// if the commit failed, each with its error, but behind the writes of earlier commits still
    /// waiting for their sync, so that no client hears of a later failure before an earlier
    /// success.
    fn complete(&self, answers: Vec<Answer>, flushed: Result<(), std::sync::Arc<StoreError>>) {
        let mut waiting = Vec::new();
        for a in answers {
            match &flushed {
                Ok(()) if a.after_blobs => waiting.push(a.complete),
                Ok(()) => (a.complete)(Ok(())),
                Err(e) => {
                    let (e, c) = (e.clone(), a.complete);
                    waiting.push(Box::new(move |_| c(Err(&e))));
                }
            }
        }
        if waiting.is_empty() {
            return;
        }
        let sync = flushed.is_ok();
        let waiting = match &self.tx {
            Some(tx) => match tx.send(Waiting {
                answers: waiting,
                sync,
            }) {
                Ok(()) => return,
                Err(flume::SendError(back)) => back.answers,
            },
            None => waiting,
        };
        let synced = if sync { self.sync_here() } else { Ok(()) };
        for c in waiting {
            c(synced.as_ref().map(|_| ()));
        }
    }

    /// Syncs on the calling thread (no syncer thread, or the last flush).
    fn sync_here(&self) -> Result<(), StoreError> {
        crate::store::BlobSync::sync_if_any(self.blobs.as_deref())
    }

    /// Answers what waits, and stops the thread.
    fn stop(&mut self) {
        self.tx = None;
        if let Some(jh) = self.thread.take() {
            if jh.join().is_err() {
                tracing::error!(
                    "the blob sync thread panicked; the commands it held were not answered"
                );
            }
        }
    }
}

/// The longest the engine sleeps before it reads the host clock again (CONTRACT.md: an alert is
/// raised within 1 s of its event).
const MAX_WAIT_MS: u64 = 1_000;

/// Applies the batches gathered so far in one pass (`Engine::ingest_arrivals`), and keeps their
/// vectors, emptied, to hand back to their senders with the commit's outcome.
fn ingest(
    engine: &mut Engine,
    arrivals: &mut Vec<(Vec<Event>, Timestamp)>,
    emptied: &mut Vec<Vec<Event>>,
) {
    if !arrivals.is_empty() {
        engine.ingest_arrivals(arrivals);
        emptied.extend(arrivals.drain(..).map(|(mut events, _)| {
            events.clear();
            events
        }));
    }
}

fn run(
    mut engine: Engine,
    rx: flume::Receiver<Msg>,
    clock: Clock,
    checks: flume::Sender<super::long_stay::LongStayCheck>,
    mut steps: Option<StepWatch>,
) {
    let mut batch: Vec<Msg> = Vec::with_capacity(256);
    let mut arrivals: Vec<(Vec<Event>, Timestamp)> = Vec::with_capacity(256);
    let commit_window = engine.cfg.commit_window;
    let mut syncer = BlobSyncer::start(engine.blobs());
    let mut stopping = None;
    // A step of the host clock seen and not yet taken in by a commit, in milliseconds; the last
    // one taken in, with the clock's reading then.
    let mut stepped: Option<i64> = None;
    let mut last_step: Option<(Timestamp, i64)> = None;
    let watching = steps.is_some();
    let mut watch = |now: Timestamp, stepped: &mut Option<i64>| {
        if let Some(ms) = steps.as_mut().and_then(|w| w.observe(now)) {
            *stepped = Some(stepped.unwrap_or(0).saturating_add(ms));
        }
    };
    loop {
        // Sleep until a message arrives or a deadline falls due; when watching the host clock,
        // a second at most, so that a step is taken in within one.
        let wakeup = engine.next_wakeup();
        let first = if wakeup.is_some() || watching {
            // A second at most: the wait runs on the monotonic clock, the deadlines on the
            // host clock, and a step of the host clock must not hold what fell due with it.
            let wait = wakeup.map_or(MAX_WAIT_MS, |t| t.since(clock()).max(0) as u64);
            match rx.recv_timeout(Duration::from_millis(wait.min(MAX_WAIT_MS))) {
                Ok(c) => Some(c),
                Err(flume::RecvTimeoutError::Timeout) => {
                    let now = clock();
                    watch(now, &mut stepped);
                    if stepped.is_none() && wakeup.is_none_or(|t| now < t) {
                        continue;
                    }
                    None
                }
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => break,
            }
        };
        batch.extend(first);
        if !commit_window.is_zero() && !batch.is_empty() && rx.len() < MAX_BATCH {
            // Sleep through the window instead of receiving each arrival: a waiting receiver
            // costs every sender a futex wake and this thread a context switch per message.
            std::thread::sleep(commit_window);
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }

        let started = Instant::now();
        let now = clock();
        watch(now, &mut stepped);
        let step = stepped.take();
        if let Some(ms) = step {
            engine.clock_stepped(now, ms);
            last_step = Some((now, ms));
        }
        let mut ingest_done = Vec::new();
        let mut emptied = Vec::new();
        let mut completions = Vec::new();
        let mut shutdown = None;
        let stored_before = engine.stats.positions_stored;
        let history_before = engine.stats.history_fixes;
        for msg in batch.drain(..) {
            match msg {
                Msg::Ingest {
                    events,
                    received_at,
                    done,
                } => {
                    // Read before a step of the host clock and taken in after it: dated in the
                    // clock after it, so that what it begins (a zone visit, a held login) moves
                    // with the step as what the engine held did, and nothing is dated ahead.
                    let received_at = match last_step {
                        Some((at, ms)) => crate::time::across_step(received_at, at, ms).min(now),
                        None if watching => received_at.min(now),
                        None => received_at,
                    };
                    arrivals.push((events, received_at));
                    ingest_done.push(done);
                }
                Msg::Command(job) => {
                    // Commands see every batch that arrived before them.
                    ingest(&mut engine, &mut arrivals, &mut emptied);
                    completions.push(job(&mut engine, now));
                }
                Msg::Shutdown(done) => shutdown = Some(done),
            }
        }
        ingest(&mut engine, &mut arrivals, &mut emptied);
        // Counted once per commit, not per event: every metric update is a registry lookup.
        metrics::counter!("lienwatch_positions_stored_total")
            .increment(engine.stats.positions_stored - stored_before);
        metrics::counter!("lienwatch_history_fixes_total")
            .increment(engine.stats.history_fixes - history_before);
        engine.tick(now);
        let result = engine.flush();
        // The daemon reads alerts from the outbox; the in-memory list is for replay.
        engine.take_alerts();
        metrics::histogram!("lienwatch_commit_seconds").record(started.elapsed().as_secs_f64());
        if let Some(ms) = step {
            // After the commit that applied it (whether or not its flush held), so that the
            // count tells an observer the engine has taken the step in.
            metrics::counter!("lienwatch_clock_steps_total").increment(1);
            tracing::warn!(
                step_s = ms as f64 / 1000.0,
                host_clock = %now,
                "the host clock stepped (set, corrected, or the host resumed): zone dwells, \
                 open commands and held reappearances keep the time watched, other times and \
                 retention follow the clock from now on; after a step forward of over a minute, \
                 no silence alert falls due before the startup grace has passed"
            );
        }
        match &result {
            Ok(()) => {
                engine.outbox.notify();
                engine.dispatch_commands(now, started);
                // Pending episodes are on disk now: their checks may go.
                for c in engine.take_long_stay_checks() {
                    let _ = checks.send(c);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; nothing in this batch is acknowledged");
                metrics::counter!("lienwatch_commit_failures_total").increment(1);
            }
        }
        // In arrival order, as `emptied` was filled.
        for (d, events) in ingest_done.into_iter().zip(emptied) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(_) => Err(StoreError::Closed),
            };
            let _ = d.send((outcome, events));
        }
        syncer.complete(completions, result.map_err(std::sync::Arc::new));
        if let Some(done) = shutdown {
            stopping = Some(done);
            break;
        }
    }
    // Last flush on the way out: anything applied is made durable, and the engine's store and
    // the places worker are let go before the shutdown is answered.
    engine.write_all_progress();
    let last = engine
        .flush()
        .and_then(|()| syncer.sync_here())
        .map_err(|e| e.to_string());
    syncer.stop();
    if let Err(e) = &last {
        tracing::error!(error = %e, "final flush failed");
    }
    drop(engine);
    drop(checks);
    if let Some(done) = stopping {
        let _ = done.send(last);
    }
    // The queue stays open until the last handle is gone, and whatever reaches it from now on
    // is refused at once, so that its sender learns the engine is gone instead of waiting.
    // Closing the queue here instead would strand a message sent between a last drain and the
    // close (flume cannot do both in one step), and its sender would wait forever.
    for refused in rx.iter() {
        drop(refused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::event::{EventKind, Protocol};
    use crate::store::Store;
    use std::sync::Arc;

    /// A batch dated just before a step back of the host clock, taken in after it: the device
    /// is not left heard "a year from now", which would hold its silence alert that long.
    #[tokio::test]
    async fn a_batch_dated_before_a_step_back_is_dated_at_the_step() {
        use std::sync::atomic::{AtomicI64, Ordering};
        let year = 365 * 86_400_000;
        let ahead = Timestamp::from_secs(1_826_841_600);
        let host = Arc::new(AtomicI64::new(ahead.millis()));
        let read = host.clone();
        let clock: Clock = Arc::new(move || Timestamp(read.load(Ordering::Relaxed)));
        let store = Store::temporary().expect("store");
        let outbox = store.open_outbox(&[], clock.clone()).expect("outbox");
        let cfg = EngineConfig::from_config(&Default::default(), Vec::new());
        let engine = Engine::open(store, outbox, cfg, ahead).expect("engine");
        let (handle, _thread) =
            spawn_watching(engine, clock, Some(StepWatch::new(ahead))).expect("thread");
        host.store(ahead.millis() - year, Ordering::Relaxed);
        let device = DeviceId::new("868120000000001");
        let mut events = vec![Event {
            device_id: device.clone(),
            protocol: Protocol::Gt06,
            kind: EventKind::Login,
        }];
        handle
            .commit(&mut events, ahead.add_millis(1_000))
            .await
            .expect("commit");
        let view = handle
            .run(crate::engine::devices::GetDevice { id: device })
            .await
            .expect("device");
        assert_eq!(view.last_seen, ahead.add_millis(-year));
        handle.shutdown().await.expect("last flush");
    }

    /// A fix read just before a step of the host clock forward and taken in after it: the zone
    /// visit it begins moves with the step, so its dwell alert does not fall due at once.
    #[tokio::test]
    async fn a_visit_begun_by_a_batch_dated_before_a_step_forward_moves_with_it() {
        use crate::engine::command::Command;
        use crate::engine::testing::{live_fix, put_vehicle};
        use std::sync::atomic::{AtomicI64, Ordering};
        let day = 86_400_000;
        let t0 = Timestamp::from_secs(1_795_305_600);
        let host = Arc::new(AtomicI64::new(t0.millis()));
        let read = host.clone();
        let clock: Clock = Arc::new(move || Timestamp(read.load(Ordering::Relaxed)));
        let store = Store::temporary().expect("store");
        let outbox = store.open_outbox(&[], clock.clone()).expect("outbox");
        let alerts = outbox.clone();
        let cfg = EngineConfig::from_config(&Default::default(), Vec::new());
        let mut engine = Engine::open(store, outbox, cfg, t0).expect("engine");
        let car = serde_json::json!({"loan": {"id": "L", "status": "overdue"},
            "devices": [{"id": "111", "kind": "wired"}]});
        put_vehicle(&mut engine, "V-1", car, t0);
        let zone = br#"{"name": "Pawn", "kind": "pawn_shop", "dwell_after": "1h",
            "geometry": {"type": "Circle", "center": [114.0, 22.6], "radius_m": 300}}"#;
        crate::engine::zones::PutZone::from_json("Z-1", zone)
            .and_then(|c| c.apply(&mut engine, t0))
            .expect("zone");
        let (handle, _thread) =
            spawn_watching(engine, clock, Some(StepWatch::new(t0))).expect("thread");
        host.store(t0.millis() + day, Ordering::Relaxed);
        let read_at = t0.add_millis(1_000);
        let mut events = vec![live_fix("111", read_at, 22.6, 114.0)];
        handle.commit(&mut events, read_at).await.expect("commit");
        use crate::alert::AlertType;
        let kinds: Vec<AlertType> = (alerts.list(None, 10, None).expect("alerts").into_iter())
            .map(|a| a.alert.kind)
            .collect();
        assert_eq!(kinds, [AlertType::RiskZoneEnter]);
        handle.shutdown().await.expect("last flush");
    }

    /// A commit that failed is answered behind the writes of an earlier commit that still wait
    /// for the blob sync (here, an 8 MB file to write out): its client never hears of the later
    /// failure first.
    #[test]
    fn a_failed_commit_is_answered_after_earlier_writes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("blobs")).expect("blobs");
        std::fs::write(tmp.path().join("blobs").join("7"), vec![1u8; 8 << 20]).expect("blob");
        let mut syncer = BlobSyncer::start(Some(Arc::new(crate::store::BlobSync::new(tmp.path()))));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = |name: &'static str, after_blobs: bool| {
            let order = order.clone();
            Answer {
                complete: Box::new(move |r: Result<(), &StoreError>| {
                    order.lock().expect("order").push((name, r.is_ok()))
                }),
                after_blobs,
            }
        };
        syncer.complete(vec![answer("write", true), answer("read", false)], Ok(()));
        syncer.complete(
            vec![answer("failed write", true), answer("failed read", false)],
            Err(Arc::new(StoreError::Closed)),
        );
        syncer.stop();
        assert_eq!(
            *order.lock().expect("order"),
            [
                ("read", true),
                ("write", true),
                ("failed write", false),
                ("failed read", false)
            ]
        );
    }

    /// Batches sent right after a shutdown land while the thread makes its final flush: each
    /// is refused, none left waiting for an answer that would never come.
    #[tokio::test]
    async fn a_commit_after_shutdown_is_refused_not_left_waiting() {
        for round in 0..20 {
            let store = Store::temporary().expect("store");
            let outbox = store
                .open_outbox(&[], Arc::new(Timestamp::now))
                .expect("outbox");
            let cfg = EngineConfig::from_config(&Default::default(), Vec::new());
            let engine = Engine::open(store, outbox, cfg, Timestamp::now()).expect("engine");
            let (handle, thread) = spawn(engine, Arc::new(Timestamp::now)).expect("thread");
            handle.shutdown().await.expect("last flush");
            let mut events = vec![Event {
                device_id: DeviceId::new("868120000000001"),
                protocol: Protocol::Gt06,
                kind: EventKind::Login,
            }];
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                handle.commit(&mut events, Timestamp::now()),
            )
            .await;
            assert!(
                matches!(answer, Ok(Err(StoreError::Closed))),
                "round {round}: {answer:?}"
            );
            // The thread ends with the last handle.
            drop(handle);
            let joined = tokio::task::spawn_blocking(move || thread.join());
            let joined = tokio::time::timeout(Duration::from_secs(10), joined).await;
            assert!(
                matches!(joined, Ok(Ok(Ok(())))),
                "round {round}: {joined:?}"
            );
        }
    }
}
