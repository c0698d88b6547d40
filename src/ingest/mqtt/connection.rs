//! One session's connection: drives rumqttc's event loop, (re)connects with backoff,
//! (re)subscribes, and hands every publish to the session's pipeline in arrival order.
//!
//! The loop never awaits anything that could wait on the loop itself (rumqttc's request-channel
//! deadlock). Every connection gets a fresh `EventLoop` and client: an ack still queued for a
//! connection that dropped goes to a dead channel instead of reaching the next connection, where
//! its packet id might by then name a different, uncommitted message.

use super::options::Plan;
use crate::event::Timestamp;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, Publish, RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop};
use rumqttc::Outgoing;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for in-flight commits to be acked before disconnecting anyway.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(4);

/// What the connection hands to the pipeline, in order.
// Publish is the large variant and nearly every message: boxing it would allocate per message.
#[allow(clippy::large_enum_variant)]
pub(super) enum Inbound {
    /// A new connection starts; its acks go through `client`.
    Connected { conn: u64, client: AsyncClient },
    Publish {
        conn: u64,
        publish: Publish,
        received_at: Timestamp,
    },
}

/// Capped exponential backoff with jitter: 100 ms doubling to 30 s, reset on ConnAck.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Self {
        Backoff { next: Self::MIN }
    }
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to 20% jitter so that a fleet of daemons does not reconnect in lockstep.
        d + d.mul_f64(fastrand::f64() * 0.2)
    }
}

/// Runs session `index` until `shutdown`; then lets `pipeline` ack what it committed (it ends
/// once `tx` is dropped and its commits are done), disconnects and returns.
pub(super) async fn run(
    plan: Plan,
    index: u16,
    tx: flume::Sender<Inbound>,
    pipeline: JoinHandle<()>,
    reconnect: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let opts = plan.session(index);
    let client_id = opts.client_id();
    let filters: Vec<Filter> = plan
        .routes
        .iter()
        .map(|r| {
            let mut f = Filter::new(plan.layout.filter(&r.filter), QoS::AtLeastOnce);
            f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
            f
        })
        .collect();
    let stale: Vec<String> = plan
        .routes
        .iter()
        .map(|r| plan.layout.other_filter(&r.filter))
        .collect();
    let mut backoff = Backoff::new();
    let mut conn: u64 = 0;
    let mut subscribed_once = false;
    let mut last: Option<(AsyncClient, EventLoop)> = None;
    // Whether this session counts in `lienwatch_mqtt_connected` (connected sessions).
    let mut connected = false;
    'conn: while !shutdown.is_cancelled() {
        conn += 1;
        let (client, mut el) = AsyncClient::new(opts.clone(), plan.channel);
        let _ = tx.send(Inbound::Connected {
            conn,
            client: client.clone(),
        });
        let failed = loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    last = Some((client, el));
                    break 'conn;
                }
                _ = reconnect.notified() => break None,
                r = el.poll() => match r {
                    Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                        let _ = tx.send(Inbound::Publish {
                            conn,
                            publish,
                            received_at: Timestamp::now(),
                        });
                    }
                    Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                        backoff.reset();
                        if !connected {
                            connected = true;
                            metrics::gauge!("lienwatch_mqtt_connected").increment(1.0);
                        }
                        on_connack(&ack, &client_id, &client, &filters, &stale, &mut subscribed_once);
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(s))) => {
                        for (i, code) in s.return_codes.iter().enumerate() {
                            if !matches!(code, SubscribeReasonCode::Success(_)) {
                                tracing::error!(client_id, filter = filters.get(i).map(|f| f.path.as_str()).unwrap_or("?"), ?code, "mqtt subscription refused by the broker");
                            }
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Disconnect(d))) => {
                        tracing::warn!(client_id, reason = ?d.reason_code, "mqtt broker sent DISCONNECT");
                    }
                    Ok(_) => {}
                    Err(e) => break Some(e),
                },
            }
        };
        // Drop this connection's loop before waiting, so acks queued for it fail fast.
        drop(el);
        drop(client);
        disconnected(&mut connected);
        metrics::counter!("lienwatch_mqtt_reconnects_total").increment(1);
        let wait = backoff.step();
        match failed {
            Some(e) => {
                tracing::warn!(client_id, error = %e, retry_in = ?wait, "mqtt connection lost")
            }
            None => {
                tracing::warn!(client_id, retry_in = ?wait, "mqtt reconnecting to get unacknowledged messages redelivered")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }

    // Shutdown: take no new messages, let the pipeline ack what it committed, then disconnect.
    drop(tx);
    let Some((client, mut el)) = last else {
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, pipeline).await;
        disconnected(&mut connected);
        return;
    };
    let drained = async {
        let mut pipeline = pipeline;
        let mut alive = true;
        loop {
            tokio::select! {
                _ = &mut pipeline => break,
                // Keep the connection alive so the acks go out; new publishes are not acked and
                // come back after the restart. After an error, polling again would reconnect and
                // could carry this connection's acks onto the next one: stop polling instead.
                r = el.poll(), if alive => alive = r.is_ok(),
            }
        }
        if alive {
            let _ = client.try_disconnect();
            loop {
                match el.poll().await {
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
    disconnected(&mut connected);
    tracing::info!(client_id, "mqtt session stopped");
}

fn disconnected(connected: &mut bool) {
    if std::mem::take(connected) {
        metrics::gauge!("lienwatch_mqtt_connected").decrement(1.0);
    }
}

/// Subscribes when the broker has no session for us, and once per process so that
/// subscriptions added to the configuration since the session was created take effect
/// (re-subscribing an existing filter keeps its queue; retained messages are not resent).
/// Once per process it also drops the filters of the other session layout, which an earlier
/// `mqtt.sessions` may have left in the persistent session: keeping both would deliver every
/// message twice. Messages already queued for the session stay queued.
fn on_connack(
    ack: &ConnAck,
    client_id: &str,
    client: &AsyncClient,
    filters: &[Filter],
    stale: &[String],
    subscribed_once: &mut bool,
) {
    tracing::info!(
        client_id,
        session_present = ack.session_present,
        "mqtt connected"
    );
    if ack.session_present && *subscribed_once {
        return;
    }
    // A fresh client per connection: its channel is empty, so `try_` cannot find it full.
    match client.try_subscribe_many(filters.to_vec()) {
        Ok(()) => *subscribed_once = true,
        Err(e) => tracing::error!(client_id, error = %e, "mqtt subscribe could not be queued"),
    }
    if ack.session_present {
        for f in stale {
            if let Err(e) = client.try_unsubscribe(f.clone()) {
                tracing::warn!(client_id, filter = %f, error = %e, "mqtt unsubscribe could not be queued");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.step();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(120));
        for _ in 0..20 {
            b.step();
        }
        assert!(b.step() <= Duration::from_secs(36));
        b.reset();
        assert!(b.step() <= Duration::from_millis(120));
    }
}
