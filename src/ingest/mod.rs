//! Sources: sockets and brokers to protocol sessions and back.
//!
//! Each source drives the sans-I/O sessions of `crate::protocol`, hands the events to the engine,
//! waits for the commit that covers them, and only then sends the replies (or MQTT acks) that
//! acknowledge them.

pub mod mqtt;
pub mod tcp;
pub mod udp;

use crate::protocol::{Output, Rejection};
use bytes::Bytes;

/// Sorts a session's outputs into the events for the engine and the replies for the device,
/// counting and (rate-limited) logging rejections. A source keeps one for its life, so that the
/// decoded counter is looked up in the registry once, not for every batch.
pub struct Sorter {
    protocol: &'static str,
    decoded: metrics::Counter,
}

impl Sorter {
    pub fn new(protocol: &'static str) -> Self {
        Sorter {
            protocol,
            decoded: metrics::counter!("lienwatch_frames_decoded_total", "protocol" => protocol),
        }
    }

    /// Drains `outs`, appending its events to `events` and its replies to `replies`, in order.
    pub fn sort(
        &self,
        outs: &mut Vec<Output>,
        events: &mut Vec<crate::event::Event>,
        replies: &mut Vec<Bytes>,
        peer: &dyn std::fmt::Display,
    ) {
        let before = events.len();
        for o in outs.drain(..) {
            match o {
                Output::Event(e) => events.push(e),
                Output::Reply(b) => replies.push(b),
                Output::Message(_) => {}
                Output::Rejected(r) => rejected(self.protocol, r, &peer.to_string()),
            }
        }
        self.decoded.increment((events.len() - before) as u64);
    }
}

/// Counts a rejection and logs it, at most a few times a second across the process, so that a
/// flood of garbage cannot flood the journal. A sound frame of a type lienwatch does not read is
/// logged at info with its hex (the reason names the type): that is what an operator needs to see
/// what the fleet sends; garbage and bad checksums stay at debug.
pub fn rejected(protocol: &'static str, r: Rejection, peer: &str) {
    metrics::counter!("lienwatch_frames_rejected_total", "protocol" => protocol, "reason" => r.reason)
        .increment(1);
    if !log_budget() {
        return;
    }
    match &r.sample {
        Some(sample) => tracing::info!(
            protocol,
            peer,
            reason = r.reason,
            bytes = r.bytes,
            hex = %crate::protocol::to_hex(sample),
            "frame not decoded"
        ),
        None => tracing::debug!(
            protocol,
            peer,
            reason = r.reason,
            bytes = r.bytes,
            "input rejected"
        ),
    }
}

/// A process-wide token bucket for noisy log lines: 5 a second.
pub fn log_budget() -> bool {
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
    static WINDOW: AtomicI64 = AtomicI64::new(0);
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let now = crate::event::Timestamp::now().secs();
    if WINDOW.swap(now, Ordering::Relaxed) != now {
        COUNT.store(0, Ordering::Relaxed);
    }
    COUNT.fetch_add(1, Ordering::Relaxed) < 5
}
