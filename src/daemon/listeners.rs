//! Binds every configured tracker listener and starts its server task. Everything is bound before
//! readiness is announced: a port in use is a start-up error, not a silent gap.

use super::DaemonError;
use crate::config::{Listener, Transport};
use crate::engine::EngineHandle;
use crate::protocol::SessionConfig;
use crate::time::Timestamp;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every listener's sessions share.
pub struct Shared {
    pub engine: EngineHandle,
    pub auth_key: Arc<[u8]>,
    pub max_frame: usize,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// Binds each listener and spawns its server; returns the server tasks.
pub async fn start(
    listeners: &[Listener],
    sh: &Shared,
) -> Result<Vec<JoinHandle<()>>, DaemonError> {
    let mut servers = Vec::new();
    for l in listeners {
        let l = l.clone();
        let scfg = SessionConfig {
            utc_offset_s: l.utc_offset_s,
            max_frame: sh.max_frame,
            admit: sh.engine.admission.clone(),
            auth_key: sh.auth_key.clone(),
            default_device_id: None,
            clock: Arc::new(Timestamp::now),
            sessionless: false,
            verbatim: false,
            require_auth: true,
            bind_terminal: sh.engine.terminal_binding.clone(),
        };
        let bind_err = |e: std::io::Error| DaemonError::Bind {
            what: format!("listener {} ({:?})", l.protocol.name(), l.transport),
            addr: l.bind.to_string(),
            msg: e.to_string(),
        };
        match l.transport {
            Transport::Tcp => {
                let sock = tokio::net::TcpListener::bind(l.bind)
                    .await
                    .map_err(bind_err)?;
                tracing::info!(protocol = l.protocol.name(), addr = %sock.local_addr().unwrap_or(l.bind), "tcp listener ready");
                servers.push(tokio::spawn(crate::ingest::tcp::serve(
                    sock,
                    l,
                    scfg,
                    sh.engine.clone(),
                    sh.shutdown.clone(),
                    sh.tracker.clone(),
                )));
            }
            Transport::Udp => {
                let sock = tokio::net::UdpSocket::bind(l.bind)
                    .await
                    .map_err(bind_err)?;
                tracing::info!(protocol = l.protocol.name(), addr = %l.bind, "udp listener ready");
                servers.push(tokio::spawn(crate::ingest::udp::serve(
                    sock,
                    l,
                    scfg,
                    sh.engine.clone(),
                    sh.shutdown.clone(),
                )));
            }
        }
    }
    Ok(servers)
}
