//! Connection shards: a listener's connections polled by a few tasks, one per runtime worker,
//! whose events go to the engine together.
//!
//! A connection still reads, decodes, waits for the commit that makes its events durable and
//! only then replies (`super::tcp`). What a shard changes is how the waiting is done. A task per
//! connection handed the engine one batch and one answer channel per frame, and the engine
//! thread woke each connection from outside the runtime. A shard gathers what all its
//! connections decoded in one pass into one batch, hands that to the engine, and on its answer
//! wakes the batch's connections within its own task, which then write their replies in one
//! run: one hand-over and one cross-thread wake per pass instead of per frame.
//!
//! A panic in one connection ends that connection only, as it would in a task of its own.

use crate::engine::{CommitTicket, EngineHandle};
use crate::event::{Event, Timestamp};
use crate::store::StoreError;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The shards of one listener; connections are dealt to them in turn.
pub struct Shards {
    shards: Vec<(mpsc::UnboundedSender<Connection>, Arc<Gather>)>,
    next: usize,
}

impl Shards {
    /// One shard per worker of the current runtime, each a task on `tracker` that ends once
    /// the `Shards` is dropped and its last connection and commit are done.
    pub fn start(engine: &EngineHandle, tracker: &TaskTracker) -> Shards {
        let n = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let shards = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let gather = Arc::new(Gather::default());
                // Outside tokio's budget: a budget spent part-way through a pass would send the shard
                // to the back of the run queue with the rest of the pass undone; a pass is bounded
                // instead, by `PASSES_PER_POLL` and each woken connection polled once in it.
                tracker.spawn(tokio::task::coop::unconstrained(run(
                    rx,
                    gather.clone(),
                    engine.clone(),
                )));
                (tx, gather)
            })
            .collect();
        Shards { shards, next: 0 }
    }

    /// Places a connection on the next shard. `make` receives the shard's [`Gather`], through
    /// which the connection commits.
    pub fn place<F, Fut>(&mut self, make: F)
    where
        F: FnOnce(Arc<Gather>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let i = self.next % self.shards.len();
        self.next = self.next.wrapping_add(1);
        let (tx, gather) = &self.shards[i];
        let conn = make(gather.clone());
        let guarded = std::panic::AssertUnwindSafe(conn).catch_unwind().map(|r| {
            if r.is_err() {
                tracing::error!("connection task panicked; the connection is closed");
            }
        });
        // The shard's task lives as long as this sender, so the send cannot fail.
        let _ = tx.send(Box::pin(guarded));
    }
}

/// A shard's open batch: what its connections decoded since the batch last left for the engine.
#[derive(Default)]
pub struct Gather {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    events: Vec<Event>,
    landing: Arc<Landing>,
}

impl Gather {
    /// Moves `events` (leaving it empty, with its capacity) into the shard's open batch and
    /// waits until that batch is on disk.
    pub async fn commit(&self, events: &mut Vec<Event>) -> Result<(), StoreError> {
        let landing = {
            let mut open = self.open.lock().map_err(|_| StoreError::Closed)?;
            open.events.append(events);
            open.landing.clone()
        };
        std::future::poll_fn(|cx| landing.poll(cx)).await
    }

    /// Takes the open batch, if it holds anything, leaving `spare` in its place.
    fn take(&self, spare: &mut Vec<Event>) -> Option<(Vec<Event>, Arc<Landing>)> {
        let mut open = self.open.lock().ok()?;
        if open.events.is_empty() {
            return None;
        }
        let events = std::mem::replace(&mut open.events, std::mem::take(spare));
        Some((events, std::mem::take(&mut open.landing)))
    }
}

/// The outcome of one batch's commit, awaited by every connection with events in it.
#[derive(Default)]
struct Landing {
    state: Mutex<LandingState>,
}

enum LandingState {
    Waiting(Vec<Waker>),
    Landed(bool),
}

impl Default for LandingState {
    fn default() -> Self {
        LandingState::Waiting(Vec::new())
    }
}

impl Landing {
    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        let Ok(mut state) = self.state.lock() else {
            return Poll::Ready(Err(StoreError::Closed));
        };
        match &mut *state {
            LandingState::Landed(true) => Poll::Ready(Ok(())),
            LandingState::Landed(false) => Poll::Ready(Err(StoreError::Closed)),
            LandingState::Waiting(wakers) => {
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    fn land(&self, ok: bool) {
        let wakers = match self.state.lock() {
            Ok(mut state) => match std::mem::replace(&mut *state, LandingState::Landed(ok)) {
                LandingState::Waiting(w) => w,
                LandingState::Landed(_) => Vec::new(),
            },
            Err(_) => return,
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Passes over the connections in one poll of the shard before it lets other tasks run: each
/// pass polls the connections that were woken, hands their batch to the engine and lands the
/// commits that answered.
const PASSES_PER_POLL: usize = 4;

async fn run(
    mut arrivals: mpsc::UnboundedReceiver<Connection>,
    gather: Arc<Gather>,
    engine: EngineHandle,
) {
    let mut conns: FuturesUnordered<Connection> = FuturesUnordered::new();
    let mut inflight: VecDeque<(CommitTicket, Arc<Landing>)> = VecDeque::new();
    let mut spare: Vec<Event> = Vec::new();
    let mut listening = true;
    std::future::poll_fn(|cx| {
        let mut settled = false;
        for _ in 0..PASSES_PER_POLL {
            while listening {
                match arrivals.poll_recv(cx) {
                    Poll::Ready(Some(c)) => conns.push(c),
                    Poll::Ready(None) => listening = false,
                    Poll::Pending => break,
                }
            }
            // A ticket still waiting for room in the engine's queue is driven on; the answers
            // come in the order the tickets were begun, so they are taken from the front.
            for (ticket, _) in inflight.iter_mut().skip(1) {
                let _ = ticket.poll_queued(cx);
            }
            let mut landed = false;
            while let Some((ticket, _)) = inflight.front_mut() {
                let Poll::Ready((result, emptied)) = Pin::new(ticket).poll(cx) else {
                    break;
                };
                if let Some((_, landing)) = inflight.pop_front() {
                    landing.land(result.is_ok());
                }
                if spare.capacity() < emptied.capacity() {
                    spare = emptied;
                }
                landed = true;
            }
            // Until each woken connection has been polled once, or a budget ran out.
            while let Poll::Ready(Some(())) = conns.poll_next_unpin(cx) {}
            let sent = match gather.take(&mut spare) {
                Some((events, landing)) => {
                    inflight.push_back((engine.begin_commit(events, Timestamp::now()), landing));
                    true
                }
                None => false,
            };
            if !landed && !sent {
                settled = true;
                break;
            }
        }
        if !listening && conns.is_empty() && inflight.is_empty() {
            Poll::Ready(())
        } else {
            // Passes that ended on their limit may have left work (a batch begun but not yet
            // queued): come back once the other tasks have had their turn.
            if !settled {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::control::GetStats;
    use crate::engine::{Engine, EngineConfig};
    use crate::event::{DeviceId, EventKind, Protocol};
    use crate::store::Store;

    fn login(i: usize) -> Event {
        Event {
            device_id: DeviceId::new(&format!("86812000000{i:04}")),
            protocol: Protocol::Gt06,
            kind: EventKind::Login,
        }
    }

    /// A real engine on a store in a temporary folder, committing as soon as anything arrives
    /// (no commit window), so that batches from separate senders would be separate commits.
    fn engine(dir: &std::path::Path) -> EngineHandle {
        let store = Store::open(dir, 8).expect("store");
        let outbox = store
            .open_outbox(&[], Arc::new(Timestamp::now))
            .expect("outbox");
        let cfg = EngineConfig {
            commit_window: std::time::Duration::ZERO,
            ..EngineConfig::from_config(&Default::default(), Vec::new())
        };
        let engine = Engine::open(store, outbox, cfg, Timestamp::now()).expect("engine");
        crate::engine::spawn(engine, Arc::new(Timestamp::now))
            .expect("engine thread")
            .0
    }

    #[tokio::test]
    async fn connections_of_one_pass_share_one_commit_and_each_is_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let before = engine.run(GetStats).await.expect("stats");
        let tracker = TaskTracker::new();
        let mut shards = Shards::start(&engine, &tracker);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..50 {
            let tx = tx.clone();
            shards.place(move |gather| async move {
                let mut events = vec![login(i)];
                let r = gather.commit(&mut events).await;
                // The vector comes back empty, to be filled again.
                let _ = tx.send((r.is_ok(), events.is_empty()));
            });
        }
        drop(tx);
        let mut answered = 0;
        while let Some((ok, emptied)) = rx.recv().await {
            assert!(ok && emptied);
            answered += 1;
        }
        assert_eq!(answered, 50);
        let after = engine.run(GetStats).await.expect("stats");
        assert_eq!(after.events - before.events, 50);
        // This runtime has one worker: one shard, one pass, one batch. The other commit is the
        // first `GetStats`'s own.
        assert!(after.commits - before.commits <= 2, "{after:?} {before:?}");
        // The shard ends once its listener lets go of it and its connections are done.
        drop(shards);
        tracker.close();
        tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait())
            .await
            .expect("the shard ended");
    }

    #[tokio::test]
    async fn a_panicking_connection_ends_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let tracker = TaskTracker::new();
        let mut shards = Shards::start(&engine, &tracker);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..3 {
            let tx = tx.clone();
            shards.place(move |gather| async move {
                let mut events = vec![login(i)];
                let r = gather.commit(&mut events).await;
                if i == 1 {
                    panic!("connection {i} failed");
                }
                let _ = tx.send((i, r.is_ok()));
            });
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some((i, ok)) = rx.recv().await {
            assert!(ok);
            seen.push(i);
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 2]);
        // The shard outlived the panic: a connection placed now is still served.
        let (tx, rx) = tokio::sync::oneshot::channel();
        shards.place(move |gather| async move {
            let _ = tx.send(gather.commit(&mut vec![login(9)]).await.is_ok());
        });
        assert_eq!(rx.await, Ok(true));
    }

    #[tokio::test]
    async fn a_stopped_engine_fails_every_waiting_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        engine.shutdown().await;
        let tracker = TaskTracker::new();
        let mut shards = Shards::start(&engine, &tracker);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..5 {
            let tx = tx.clone();
            shards.place(move |gather| async move {
                let _ = tx.send(gather.commit(&mut vec![login(i)]).await.is_err());
            });
        }
        drop(tx);
        let mut failed = 0;
        while let Some(err) = rx.recv().await {
            assert!(err);
            failed += 1;
        }
        assert_eq!(failed, 5);
    }
}
