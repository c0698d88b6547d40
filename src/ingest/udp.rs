//! UDP listeners (Teltonika, H02): every datagram is self-contained, so each one gets a fresh
//! session; its acknowledgement is sent back to the sender after the commit.

use crate::config::Listener;
use crate::engine::EngineHandle;
use crate::event::Timestamp;
use crate::protocol::SessionConfig;
use bytes::BytesMut;
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
        let datagram = BytesMut::from(&buf[..n]);
        let (scfg, engine, socket, wp, sorter) = (
            session_cfg.clone(),
            engine.clone(),
            socket.clone(),
            cfg.protocol,
            sorter.clone(),
        );
        tokio::spawn(async move {
            let mut session = wp.session(scfg);
            let mut d = datagram;
            let mut out = Vec::new();
            let _ = session.feed(&mut d, &mut out);
            session.finish(&mut d, &mut out);
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
