//! UDP listeners (Teltonika, H02): every datagram is self-contained, and its acknowledgement is
//! sent back to the sender after the commit. Each peer keeps its session across its datagrams
//! (`Peers`), so that what a session remembers of a device holds over UDP too: a Teltonika
//! backlog sent newest first over several datagrams is buffered against the newest record the
//! peer has had, instead of each datagram's newest record taken as live.

use crate::config::Listener;
use crate::engine::EngineHandle;
use crate::event::Timestamp;
use crate::protocol::{Session, SessionConfig};
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

pub async fn serve(
    socket: UdpSocket,
    cfg: Listener,
    session_cfg: SessionConfig,
    engine: EngineHandle,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let proto = cfg.protocol.name();
    // Commits run concurrently (one task per datagram, bounded) so that one slow flush does not
    // stall the socket; the bound keeps a flood from growing memory.
    let inflight = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.min(4096)));
    let sorter = Arc::new(crate::ingest::Sorter::new(proto));
    let mut buf = vec![0u8; 65_536];
    let mut peers = Peers::new(cfg.max_connections.clamp(2, PEERS_MAX));
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    if crate::ingest::log_budget() {
                        tracing::warn!(protocol = proto, error = %e, "udp receive failed");
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        // Decoded here, in arrival order, on the peer's own session; committed in a task.
        let mut d = BytesMut::from(&buf[..n]);
        let mut out = Vec::new();
        {
            let session = peers.session(peer, || cfg.protocol.session(session_cfg.clone()));
            let _ = session.feed(&mut d, &mut out);
            session.finish(&mut d, &mut out);
        }
        let (engine, socket, sorter) = (engine.clone(), socket.clone(), sorter.clone());
        tokio::spawn(async move {
            let (mut events, mut replies) = (Vec::new(), Vec::new());
            sorter.sort(&mut out, &mut events, &mut replies, &peer);
            if !events.is_empty() && engine.commit(&mut events, Timestamp::now()).await.is_err() {
                return;
            }
            for r in replies {
                let _ = socket.send_to(&r, peer).await;
            }
            drop(permit);
        });
    }
}

/// The most peers whose sessions a UDP listener keeps.
const PEERS_MAX: usize = 65_536;

/// The sessions of the peers heard most recently, at most `cap`: two generations, the older
/// dropped whole when the newer is full, so that a flood of new source addresses costs O(1) a
/// datagram and bounded memory. A peer dropped starts a new session, as every datagram did
/// before sessions were kept.
struct Peers {
    current: HashMap<SocketAddr, Box<dyn Session>>,
    previous: HashMap<SocketAddr, Box<dyn Session>>,
    cap: usize,
}

impl Peers {
    fn new(cap: usize) -> Peers {
        Peers {
            current: HashMap::new(),
            previous: HashMap::new(),
            cap,
        }
    }

    /// The peer's session, made with `new` for a peer not kept.
    fn session(
        &mut self,
        peer: SocketAddr,
        new: impl FnOnce() -> Box<dyn Session>,
    ) -> &mut dyn Session {
        // A peer heard lately is found in one lookup; only a new one moves anything.
        if !self.current.contains_key(&peer) {
            let kept = self.previous.remove(&peer);
            if self.current.len() >= self.cap / 2 {
                self.previous = std::mem::take(&mut self.current);
            }
            if let Some(s) = kept {
                self.current.insert(peer, s);
            }
        }
        self.current.entry(peer).or_insert_with(new).as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::WireProtocol;

    /// At most `cap` sessions whatever the number of peers; a peer heard again keeps its own.
    #[test]
    fn peers_keep_recent_sessions_within_the_cap() {
        let mut peers = Peers::new(8);
        let made = std::cell::Cell::new(0);
        let addr = |i: u16| SocketAddr::from(([127, 0, 0, 1], 10_000 + i));
        let hear = |peers: &mut Peers, i: u16| {
            peers.session(addr(i), || {
                made.set(made.get() + 1);
                WireProtocol::TeltonikaUdp.session(SessionConfig::default())
            });
        };
        hear(&mut peers, 0);
        for i in 1..1000 {
            hear(&mut peers, i);
            hear(&mut peers, 0);
            assert!(peers.current.len() + peers.previous.len() <= 8);
        }
        assert_eq!(made.get(), 1000, "peer 0 kept its session throughout");
    }
}
