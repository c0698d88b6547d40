//! One broker connection: rumqttc's event loop behind a poll that survives cancellation,
//! subscriptions, and the reconnect backoff.
//!
//! Every connection gets a fresh `EventLoop` and client: an ack still queued for a connection
//! that dropped goes to a dead channel instead of reaching the next connection, where its packet
//! id might by then name a different, uncommitted message.

use rumqttc::v5::mqttbytes::v5::{ConnAck, Filter};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

type Polling =
    Pin<Box<dyn Future<Output = (Box<EventLoop>, Result<Event, ConnectionError>)> + Send>>;

/// The event loop of one connection. [`Connection::next`] may be dropped unfinished (it sits in
/// a `select!` beside commits) without losing anything: the poll in progress is kept and
/// resumed, so a request rumqttc took from its channel is never dropped half-written.
///
/// The loop lives in a box of its own: each event moves it into a poll and back out, and a
/// pointer moves where the whole loop (its options, state and buffers) would be copied twice.
pub(super) struct Connection {
    idle: Option<Box<EventLoop>>,
    polling: Option<Polling>,
}

impl Connection {
    pub fn new(opts: MqttOptions, channel: usize) -> (AsyncClient, Connection) {
        let (client, el) = AsyncClient::new(opts, channel);
        (
            client,
            Connection {
                idle: Some(Box::new(el)),
                polling: None,
            },
        )
    }

    /// The next event; cancel-safe.
    pub async fn next(&mut self) -> Result<Event, ConnectionError> {
        if self.polling.is_none() {
            // Not reachable: the loop is either idle or polling.
            let Some(mut el) = self.idle.take() else {
                return Err(ConnectionError::RequestsDone);
            };
            self.polling = Some(Box::pin(async move {
                let r = el.poll().await;
                (el, r)
            }));
        }
        let Some(polling) = self.polling.as_mut() else {
            return Err(ConnectionError::RequestsDone);
        };
        let (el, r) = polling.await;
        self.polling = None;
        self.idle = Some(el);
        r
    }
}

/// The reconnect backoff: 100 ms doubling to 30 s with jitter.
pub(super) fn reconnect_backoff() -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
}

/// How long a connection must have held, from its CONNACK, for the next reconnect to start the
/// backoff afresh.
pub(super) const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// The wait before reconnecting after a connection that `lived` this long from its CONNACK
/// (`None`: it never got one). One cut soon after its CONNACK (a commit that keeps failing, a
/// session another client takes over) keeps the backoff growing, as one refused does: reset at
/// each CONNACK, it would reconnect ten times a second and have the broker send its whole
/// window again each time.
pub(super) fn reconnect_delay(
    backoff: &mut crate::backoff::Backoff,
    lived: Option<Duration>,
) -> Duration {
    if lived.is_some_and(|d| d >= STABLE_CONNECTION) {
        backoff.reset();
    }
    backoff.next_delay()
}

/// What a session subscribes to, and what it drops from an earlier layout.
pub(super) struct Subscriptions {
    pub filters: Vec<Filter>,
    /// The filters of the other session layout (see `SessionLayout::other_filter`).
    pub stale: Vec<String>,
}

impl Subscriptions {
    /// Subscribes at every CONNACK, session or not: a SUBSCRIBE queued is not one the broker
    /// took (a connection cut before its SUBACK, a refusal, a broker restored from a snapshot
    /// older than the subscription would leave a session that holds nothing, for good).
    /// Re-subscribing an existing filter keeps its queue, and retained messages are not resent
    /// (`RetainForwardRule::OnNewSubscribe`); subscriptions added to the configuration since
    /// the session was created take effect too. With a session it also drops the filters of the
    /// other session layout, which an earlier `mqtt.sessions` may have left in the persistent
    /// session: keeping both would deliver every message twice. Messages already queued for the
    /// session stay queued.
    pub fn on_connack(&mut self, ack: &ConnAck, client_id: &str, client: &AsyncClient) {
        tracing::info!(
            client_id,
            session_present = ack.session_present,
            "mqtt connected"
        );
        // A fresh client per connection: its channel is empty, so `try_` cannot find it full.
        // A retiring session subscribes to nothing.
        if !self.filters.is_empty() {
            if let Err(e) = client.try_subscribe_many(self.filters.clone()) {
                tracing::error!(client_id, error = %e, "mqtt subscribe could not be queued")
            }
        }
        if ack.session_present {
            for f in &self.stale {
                if let Err(e) = client.try_unsubscribe(f.clone()) {
                    tracing::warn!(client_id, filter = %f, error = %e, "mqtt unsubscribe could not be queued");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections cut soon after their CONNACK back off further each time, as refused ones
    /// do; one that held starts again from the first step.
    #[test]
    fn only_a_connection_that_held_starts_the_backoff_afresh() {
        let mut b = reconnect_backoff();
        let short = Some(Duration::from_millis(50));
        let waits: Vec<Duration> = (0..9)
            .map(|i| reconnect_delay(&mut b, if i % 2 == 0 { short } else { None }))
            .collect();
        assert!(waits[0] < Duration::from_millis(200), "{waits:?}");
        assert!(waits[8] >= Duration::from_secs(20), "{waits:?}");
        let after = reconnect_delay(&mut b, Some(STABLE_CONNECTION));
        assert!(after < Duration::from_millis(200), "{after:?}");
    }
}
