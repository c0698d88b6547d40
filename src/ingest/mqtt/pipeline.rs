//! One session's pipeline: decodes what its connection received, commits it to the engine
//! (several commits in flight; the engine merges them, and those of the other sessions, into
//! its group commit) and PUBACKs what the ledger releases.

use super::ack_ledger::{AckLedger, CommitId};
use super::connection::Inbound;
use super::payload::{decode_publish, Outcome};
use super::routing::Route;
use crate::engine::EngineHandle;
use crate::protocol::SessionConfig;
use crate::store::StoreError;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::AsyncClient;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::Notify;

/// Commits one session keeps in flight at once. More than one, so that a session keeps decoding
/// and handing over while the engine flushes; the engine groups them.
const PIPELINED_COMMITS: usize = 4;

type Commit = Pin<Box<dyn Future<Output = (CommitId, usize, Result<(), StoreError>)> + Send>>;

/// Runs until the connection side drops its sender and every commit has finished.
pub(super) async fn run(
    rx: flume::Receiver<Inbound>,
    routes: Arc<[Route]>,
    scfg: SessionConfig,
    engine: EngineHandle,
    reconnect: Arc<Notify>,
    max_batch: usize,
) {
    let mut ledger: AckLedger<(Publish, Outcome)> = AckLedger::new();
    let mut client: Option<AsyncClient> = None;
    let mut inflight: FuturesUnordered<Commit> = FuturesUnordered::new();
    // A `Connected` read while gathering a batch, to be handled after that batch.
    let mut held: Option<Inbound> = None;
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some((commit, messages, result)) = inflight.next(), if !inflight.is_empty() => {
                if let Err(e) = &result {
                    metrics::counter!("lienwatch_mqtt_messages_total", "outcome" => "commit_failed")
                        .increment(messages as u64);
                    tracing::error!(error = %e, messages, "commit failed; mqtt messages not acknowledged, reconnecting for redelivery");
                }
                let verdict = ledger.finished(commit, result.is_ok());
                if verdict.reconnect {
                    reconnect.notify_one();
                }
                ack(client.as_ref(), verdict.ack).await;
            }
            first = next(&rx, &mut held), if open && inflight.len() < PIPELINED_COMMITS => {
                let Some(first) = first else { open = false; continue };
                let (conn, publish, received_at) = match first {
                    Inbound::Connected { conn, client: c } => {
                        let dropped = ledger.connected(conn);
                        if dropped > 0 {
                            metrics::counter!("lienwatch_mqtt_acks_dropped_total").increment(dropped as u64);
                        }
                        client = Some(c);
                        continue;
                    }
                    Inbound::Publish { conn, publish, received_at } => (conn, publish, received_at),
                };
                // Gather what is already waiting, up to the next connection change.
                let mut msgs = vec![publish];
                let mut newest = received_at;
                while msgs.len() < max_batch {
                    match rx.try_recv() {
                        Ok(Inbound::Publish { conn: c, publish, received_at }) if c == conn => {
                            newest = newest.max(received_at);
                            msgs.push(publish);
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let mut events = Vec::new();
                let mut batch = Vec::with_capacity(msgs.len());
                for p in msgs {
                    let (ev, outcome) = decode_publish(&routes, &scfg, &p.topic, &p.payload);
                    events.extend(ev);
                    batch.push((p, outcome));
                }
                let messages = batch.len();
                // Not staged: from a connection that ended or failed; the broker redelivers.
                let Some(commit) = ledger.stage(conn, batch) else { continue };
                let engine = engine.clone();
                inflight.push(Box::pin(async move {
                    let r = if events.is_empty() { Ok(()) } else { engine.commit(events, newest).await };
                    (commit, messages, r)
                }));
            }
            else => break,
        }
    }
}

/// The held item first, then the channel; `None` once the channel is closed and drained.
async fn next(rx: &flume::Receiver<Inbound>, held: &mut Option<Inbound>) -> Option<Inbound> {
    match held.take() {
        Some(i) => Some(i),
        None => rx.recv_async().await.ok(),
    }
}

/// PUBACKs released messages in order. An ack for a connection that has since dropped fails on
/// its dead channel; the broker redelivers that message and it is committed again.
async fn ack(client: Option<&AsyncClient>, msgs: Vec<(Publish, Outcome)>) {
    let Some(client) = client else { return };
    for (p, outcome) in msgs {
        match client.ack(&p).await {
            Ok(()) => {
                metrics::counter!("lienwatch_mqtt_messages_total", "outcome" => outcome.as_str())
                    .increment(1);
            }
            Err(_) => {
                metrics::counter!("lienwatch_mqtt_acks_dropped_total").increment(1);
            }
        }
    }
}
