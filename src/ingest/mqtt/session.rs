//! One session: connects (and reconnects), decodes what arrives, commits it to the engine and
//! PUBACKs what the ledger releases, all in one task.
//!
//! One task rather than a poll task and a pipeline: with a small window every message waits for
//! its round trip through the engine, and each hand-over between tasks adds a wake-up to it.
//! The event loop's poll survives the `select!` (see [`Connection`]), so the commits can be
//! awaited beside it without ever awaiting anything that waits on the loop itself.

use super::ack_ledger::{AckLedger, CommitId};
use super::connection::{reconnect_backoff, reconnect_delay, Connection, Subscriptions};
use super::options::Plan;
use super::payload::{decode_publish, Outcome};
use crate::engine::EngineHandle;
use crate::event::Timestamp;
use crate::protocol::SessionConfig;
use crate::store::StoreError;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, RetainForwardRule, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as MqttEvent};
use rumqttc::Outgoing;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Commits one session keeps in flight at once, so that it keeps decoding and handing over
/// while the engine flushes; the engine groups them with the other sessions' commits.
const PIPELINED_COMMITS: usize = 4;
/// How long shutdown waits for in-flight commits to be acked before disconnecting anyway.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(4);
/// A retiring session is drained once the broker has sent nothing for this long.
const RETIRE_QUIET: Duration = Duration::from_secs(3);

type Commit = Pin<Box<dyn Future<Output = (CommitId, usize, Result<(), StoreError>)> + Send>>;

/// What a session works with.
pub(super) struct Session {
    pub plan: Plan,
    pub index: u16,
    pub scfg: SessionConfig,
    pub engine: EngineHandle,
    /// A session above a lowered `mqtt.sessions`: it leaves the share group, takes in what the
    /// broker queued for it (committed and acked like any message), and once the broker is quiet
    /// has the broker delete it. Left alone, the broker would go on queueing its share of every
    /// message (mosquitto shares among offline members too) for as long as it keeps the session.
    pub retiring: bool,
}

/// Messages received and not yet handed to a commit.
struct Open {
    msgs: Vec<Publish>,
    newest: Timestamp,
}

/// PUBACKs released by the ledger and not yet taken by the request channel (a broker that
/// sends more than the window can fill it); they go out in order.
struct Acks {
    queue: VecDeque<(Publish, Outcome)>,
    /// `lienwatch_mqtt_messages_total` by outcome, in [`Outcome::ALL`]'s order: looked up once
    /// per session rather than in the registry for every message.
    counted: [metrics::Counter; Outcome::ALL.len()],
}

impl Default for Acks {
    fn default() -> Self {
        Acks {
            queue: VecDeque::new(),
            counted: Outcome::ALL.map(
                |o| metrics::counter!("lienwatch_mqtt_messages_total", "outcome" => o.as_str()),
            ),
        }
    }
}

impl Acks {
    fn send(&mut self, client: &AsyncClient) {
        while let Some((p, outcome)) = self.queue.front() {
            // The loop is alive while this runs, so an error means the channel is full.
            if client.try_ack(p).is_err() {
                return;
            }
            self.counted[*outcome as usize].increment(1);
            self.queue.pop_front();
        }
    }

    /// The connection ended: these are redelivered instead.
    fn drop_all(&mut self) {
        if !self.queue.is_empty() {
            metrics::counter!("lienwatch_mqtt_acks_dropped_total")
                .increment(self.queue.len() as u64);
            self.queue.clear();
        }
    }
}

impl Session {
    /// Runs until `shutdown`; then acks what was committed, disconnects and returns. A retiring
    /// session also returns once it is drained and deleted: true then.
    pub async fn run(self, shutdown: CancellationToken) -> bool {
        let opts = self.plan.session(self.index);
        let client_id = opts.client_id();
        let mut subs = if self.retiring {
            Subscriptions {
                filters: Vec::new(),
                stale: self
                    .plan
                    .routes
                    .iter()
                    .flat_map(|r| {
                        [
                            self.plan.layout.filter(&r.filter),
                            self.plan.layout.other_filter(&r.filter),
                        ]
                    })
                    .collect(),
            }
        } else {
            Subscriptions {
                filters: self
                    .plan
                    .routes
                    .iter()
                    .map(|r| {
                        let mut f =
                            Filter::new(self.plan.layout.filter(&r.filter), QoS::AtLeastOnce);
                        f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                        f
                    })
                    .collect(),
                stale: self
                    .plan
                    .routes
                    .iter()
                    .map(|r| self.plan.layout.other_filter(&r.filter))
                    .collect(),
            }
        };
        let mut drained = false;
        let mut ledger: AckLedger<(Publish, Outcome)> = AckLedger::new();
        // Commits outlive their connection: one that finishes later acks nothing (the ledger
        // has forgotten it), but its data is stored all the same.
        let mut commits: FuturesUnordered<Commit> = FuturesUnordered::new();
        let mut acks = Acks::default();
        let mut backoff = reconnect_backoff();
        let mut conn: u64 = 0;
        // Whether this session counts in `lienwatch_mqtt_connected` (connected sessions).
        let mut connected = false;
        let mut last: Option<(AsyncClient, Connection)> = None;
        // One waiter for the session's life, on a token of its own: each poll of a token's
        // waiter locks the token, and the daemon's is shared by every session and listener.
        let shutdown = shutdown.child_token();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        'conn: while !shutdown.is_cancelled() {
            conn += 1;
            let dropped = ledger.connected(conn);
            if dropped > 0 {
                metrics::counter!("lienwatch_mqtt_acks_dropped_total").increment(dropped as u64);
            }
            acks.drop_all();
            let (client, mut c) = Connection::new(opts.clone(), self.plan.channel);
            let mut open = Open {
                msgs: Vec::new(),
                newest: Timestamp::now(),
            };
            // Retiring: when the broker has been quiet long enough to call the session drained.
            let quiet = tokio::time::sleep(RETIRE_QUIET);
            tokio::pin!(quiet);
            let mut heard = false;
            let mut up_since: Option<std::time::Instant> = None;
            let failed = loop {
                acks.send(&client);
                if open.msgs.len() >= self.plan.max_batch && commits.len() < PIPELINED_COMMITS {
                    self.submit(&mut open, conn, &mut ledger, &mut commits);
                }
                let idle = self.retiring
                    && heard
                    && open.msgs.is_empty()
                    && commits.is_empty()
                    && acks.queue.is_empty();
                tokio::select! {
                    biased;
                    _ = &mut cancelled => {
                        last = Some((client, c));
                        break 'conn;
                    }
                    () = &mut quiet, if idle => {
                        drained = true;
                        last = Some((client, c));
                        break 'conn;
                    }
                    Some((commit, messages, result)) = commits.next(), if !commits.is_empty() => {
                        if finished(&mut ledger, &mut acks, commit, messages, result) {
                            break None;
                        }
                    }
                    // A full batch waiting for a commit to finish: nothing more is read until
                    // one does. The broker's window bounds QoS 1, but nothing bounds QoS 0
                    // (delivered on a QoS 1 subscription when published so) but this.
                    r = c.next(), if open.msgs.len() < self.plan.max_batch => match r {
                        Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                            open.newest = Timestamp::now();
                            open.msgs.push(p);
                            quiet.as_mut().reset(tokio::time::Instant::now() + RETIRE_QUIET);
                        }
                        Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                            heard = true;
                            quiet.as_mut().reset(tokio::time::Instant::now() + RETIRE_QUIET);
                            up_since.get_or_insert_with(std::time::Instant::now);
                            if !std::mem::replace(&mut connected, true) {
                                metrics::gauge!("lienwatch_mqtt_connected").increment(1.0);
                            }
                            subs.on_connack(&ack, &client_id, &client);
                        }
                        Ok(MqttEvent::Incoming(Packet::SubAck(s))) => {
                            for (i, code) in s.return_codes.iter().enumerate() {
                                if !matches!(code, SubscribeReasonCode::Success(_)) {
                                    tracing::error!(client_id, filter = subs.filters.get(i).map(|f| f.path.as_str()).unwrap_or("?"), ?code, "mqtt subscription refused by the broker");
                                }
                            }
                        }
                        Ok(MqttEvent::Incoming(Packet::Disconnect(d))) => {
                            tracing::warn!(client_id, reason = ?d.reason_code, "mqtt broker sent DISCONNECT");
                        }
                        Ok(_) => {}
                        Err(e) => break Some(e),
                    },
                    // Only when the loop has nothing more at hand: what arrived together is
                    // committed together.
                    _ = std::future::ready(()), if !open.msgs.is_empty() && commits.len() < PIPELINED_COMMITS => {
                        self.submit(&mut open, conn, &mut ledger, &mut commits);
                    }
                }
            };
            // Received, not committed: the broker redelivers them to the next connection.
            drop(open);
            drop(c);
            drop(client);
            acks.drop_all();
            disconnected(&mut connected);
            metrics::counter!("lienwatch_mqtt_reconnects_total").increment(1);
            let wait = reconnect_delay(&mut backoff, up_since.map(|t| t.elapsed()));
            match failed {
                Some(e) => {
                    tracing::warn!(client_id, error = %e, retry_in = ?wait, "mqtt connection lost")
                }
                None => {
                    tracing::warn!(client_id, retry_in = ?wait, "mqtt reconnecting to get unacknowledged messages redelivered")
                }
            }
            tokio::select! {
                _ = &mut cancelled => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }

        // Shutdown: take no new messages, ack what the in-flight commits cover, then disconnect.
        if let Some((client, mut c)) = last {
            let drained = async {
                let mut alive = true;
                while alive && (!commits.is_empty() || !acks.queue.is_empty()) {
                    acks.send(&client);
                    tokio::select! {
                        biased;
                        Some((commit, messages, result)) = commits.next(), if !commits.is_empty() => {
                            finished(&mut ledger, &mut acks, commit, messages, result);
                        }
                        // Publishes arriving now are not acked and come back after the restart.
                        // After an error, polling again would reconnect: stop instead.
                        r = c.next() => alive = r.is_ok(),
                    }
                }
                if alive && client.try_disconnect().is_ok() {
                    loop {
                        match c.next().await {
                            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
            };
            if tokio::time::timeout(SHUTDOWN_DRAIN, drained).await.is_err() {
                tracing::warn!(
                    client_id,
                    "mqtt shutdown timed out; unacknowledged messages will be redelivered"
                );
            }
        } else {
            // Not connected: let the commits finish so that their data is stored.
            let _ = tokio::time::timeout(SHUTDOWN_DRAIN, async {
                while commits.next().await.is_some() {}
            })
            .await;
        }
        disconnected(&mut connected);
        if drained && !shutdown.is_cancelled() {
            let forgotten = tokio::select! {
                r = forget(opts) => r,
                _ = &mut cancelled => false,
            };
            if forgotten {
                tracing::info!(
                    client_id,
                    "mqtt session above mqtt.sessions drained and deleted"
                );
                return true;
            }
        }
        tracing::info!(client_id, "mqtt session stopped");
        false
    }

    /// Decodes the open messages and hands them to the engine as one commit.
    fn submit(
        &self,
        open: &mut Open,
        conn: u64,
        ledger: &mut AckLedger<(Publish, Outcome)>,
        commits: &mut FuturesUnordered<Commit>,
    ) {
        let msgs = std::mem::take(&mut open.msgs);
        let mut events = Vec::new();
        let mut batch = Vec::with_capacity(msgs.len());
        for p in msgs {
            let (ev, outcome) = decode_publish(&self.plan.routes, &self.scfg, &p.topic, &p.payload);
            events.extend(ev);
            batch.push((p, outcome));
        }
        let messages = batch.len();
        // Not staged: the connection's earlier commit failed; the broker redelivers.
        let Some(commit) = ledger.stage(conn, batch) else {
            return;
        };
        let engine = self.engine.clone();
        let received_at = open.newest;
        commits.push(Box::pin(async move {
            let r = if events.is_empty() {
                Ok(())
            } else {
                engine.commit(&mut events, received_at).await
            };
            (commit, messages, r)
        }));
    }
}

/// Has the broker delete a drained session: a clean start discards what it held, and an expiry
/// of 0 ends it at the disconnect (MQTT 5 §3.1.2.4, §3.1.2.11.2).
async fn forget(mut opts: rumqttc::v5::MqttOptions) -> bool {
    opts.set_clean_start(true).set_session_expiry_interval(None);
    let (client, mut c) = Connection::new(opts, 16);
    let done = async {
        loop {
            match c.next().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    if client.try_disconnect().is_err() {
                        return false;
                    }
                }
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(SHUTDOWN_DRAIN, done)
        .await
        .unwrap_or(false)
}

/// Books a finished commit; queues the acks it releases. True when the connection must be
/// dropped so that the broker redelivers.
fn finished(
    ledger: &mut AckLedger<(Publish, Outcome)>,
    acks: &mut Acks,
    commit: CommitId,
    messages: usize,
    result: Result<(), StoreError>,
) -> bool {
    if let Err(e) = &result {
        metrics::counter!("lienwatch_mqtt_messages_total", "outcome" => "commit_failed")
            .increment(messages as u64);
        tracing::error!(error = %e, messages, "commit failed; mqtt messages not acknowledged, reconnecting for redelivery");
    }
    let verdict = ledger.finished(commit, result.is_ok());
    acks.queue.extend(verdict.ack);
    verdict.reconnect
}

fn disconnected(connected: &mut bool) {
    if std::mem::take(connected) {
        metrics::gauge!("lienwatch_mqtt_connected").decrement(1.0);
    }
}
