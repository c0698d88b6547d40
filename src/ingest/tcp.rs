//! TCP listeners: one task per connection, each with its own protocol session.
//!
//! A connection reads, decodes, commits the events, then writes the replies, in that order; it
//! never has more than one batch in flight, so a device that waits for its reply is answered as
//! soon as its data is durable. A cap on connections, an idle timeout and the sessions' frame
//! limit bound what any peer can cost; one bad connection only ever closes itself.

use crate::config::Listener;
use crate::downlink::{Dispatch, LinkGuard, Mailbox};
use crate::engine::commands::{CommandRefused, CommandSent};
use crate::engine::EngineHandle;
use crate::event::Timestamp;
use crate::ingest::codec::{CodecError, SessionCodec};
use crate::protocol::downlink::EncodeError;
use crate::protocol::{Session, SessionConfig};
use bytes::BytesMut;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts connections until `shutdown`; connection tasks are tracked so shutdown can wait.
pub async fn serve(
    listener: TcpListener,
    cfg: Listener,
    session_cfg: SessionConfig,
    engine: EngineHandle,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let proto = cfg.protocol.name();
    let open = Arc::new(Open::default());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => {
                open.close_all();
                break;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    if crate::ingest::log_budget() {
                        tracing::warn!(protocol = proto, error = %e, "accept failed");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!("lienwatch_connections_refused_total", "protocol" => proto, "reason" => "limit").increment(1);
            if crate::ingest::log_budget() {
                tracing::warn!(protocol = proto, %peer, limit = cfg.max_connections, "connection limit reached; refusing");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let scfg = session_cfg.clone();
        let engine = engine.clone();
        let lcfg = cfg.clone();
        // Registered before the task starts, so that a shutdown from now on reaches it.
        let entry = open.insert();
        tracker.spawn(async move {
            metrics::gauge!("lienwatch_connections", "protocol" => proto).increment(1.0);
            metrics::counter!("lienwatch_connections_total", "protocol" => proto).increment(1);
            let r = connection(
                stream,
                &peer.to_string(),
                &lcfg,
                scfg,
                &engine,
                &entry.mailbox,
            )
            .await;
            drop(entry);
            if let Err(e) = r {
                if crate::ingest::log_budget() {
                    tracing::debug!(protocol = proto, %peer, error = %e, "connection closed");
                }
            }
            // The slot is free before the gauge says so, so a drop in the gauge is a free slot.
            drop(permit);
            metrics::gauge!("lienwatch_connections", "protocol" => proto).decrement(1.0);
        });
    }
}

/// The listener's open connections, by their mailboxes: a shutdown closes each one.
#[derive(Default)]
struct Open {
    boxes: Mutex<HashMap<u64, Arc<Mailbox>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Open {
    fn insert(self: &Arc<Self>) -> OpenEntry {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mailbox = Mailbox::new();
        if let Ok(mut m) = self.boxes.lock() {
            m.insert(id, mailbox.clone());
        }
        OpenEntry {
            open: self.clone(),
            id,
            mailbox,
        }
    }

    fn close_all(&self) {
        if let Ok(m) = self.boxes.lock() {
            m.values().for_each(|b| b.close());
        }
    }
}

/// A connection's place in [`Open`]; dropping it closes the mailbox and gives the place up.
struct OpenEntry {
    open: Arc<Open>,
    id: u64,
    mailbox: Arc<Mailbox>,
}

impl Drop for OpenEntry {
    fn drop(&mut self) {
        self.mailbox.close();
        if let Ok(mut m) = self.open.boxes.lock() {
            m.remove(&self.id);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("idle timeout")]
    Idle,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

async fn connection(
    stream: TcpStream,
    peer: &str,
    cfg: &Listener,
    scfg: SessionConfig,
    engine: &EngineHandle,
    mailbox: &Arc<Mailbox>,
) -> Result<(), ConnError> {
    let proto = cfg.protocol.name();
    let max_frame = scfg.max_frame;
    let (rd, mut wr) = stream.into_split();
    let codec = SessionCodec::new(cfg.protocol.session(scfg), max_frame);
    let mut framed = FramedRead::with_capacity(rd, codec, 2048);
    // One idle timer for the connection's whole life: made anew per message, it would lock the
    // timer wheel twice. The shutdown and the commands for the device come through one mailbox
    // (`crate::downlink::Mailbox`), one flag word to look at on each wake.
    let mut last_input = Instant::now();
    let idle = tokio::time::sleep(cfg.idle_timeout);
    tokio::pin!(idle);
    let mut replies = BytesMut::new();
    // Commands for this connection's device arrive in the mailbox once it has registered (below).
    let mut link: Option<LinkGuard> = None;
    loop {
        let next = tokio::select! {
            biased;
            () = mailbox.ready() => {
                if mailbox.is_closed() {
                    break;
                }
                // Between batches: never ahead of a reply that waits for its commit.
                for d in mailbox.take() {
                    send_command(framed.decoder_mut().session_mut(), d, &mut wr, cfg, engine)
                        .await?;
                }
                continue;
            }
            r = framed.next() => r,
            _ = &mut idle => {
                // The timer is moved only when it fires: until then input just notes the time.
                let due = last_input + cfg.idle_timeout;
                if due > Instant::now() {
                    idle.as_mut().reset(due);
                    continue;
                }
                metrics::counter!("lienwatch_connections_idle_closed_total", "protocol" => proto)
                    .increment(1);
                return Err(ConnError::Idle);
            }
        };
        let outs = match next {
            None => break,
            Some(Err(CodecError::Io(e))) => return Err(e.into()),
            Some(Err(CodecError::Session(e))) => {
                metrics::counter!("lienwatch_sessions_ended_total", "protocol" => proto, "reason" => session_reason(&e)).increment(1);
                if crate::ingest::log_budget() {
                    tracing::info!(protocol = proto, peer, error = %e, "session ended by protocol");
                }
                break;
            }
            Some(Ok(outs)) => outs,
        };
        let split = crate::ingest::split(proto, outs, peer);
        // Registered before the commit of the login, so the engine sees the link when it applies it.
        if let Some(id) = framed.decoder().session().commands_to() {
            if !id.as_str().is_empty() && link.as_ref().map(LinkGuard::device) != Some(id) {
                link = Some(engine.command_links.register(id.clone(), mailbox.clone()));
            }
        }
        if !split.events.is_empty() {
            // Replies wait for the commit: if it fails, the device gets nothing and resends.
            engine.commit(split.events, Timestamp::now()).await?;
        }
        // One write per batch, however many frames it answers.
        match split.replies.as_slice() {
            [] => {}
            [one] => wr.write_all(one).await?,
            many => {
                replies.clear();
                for r in many {
                    replies.extend_from_slice(r);
                }
                wr.write_all(&replies).await?;
            }
        }
        last_input = Instant::now();
    }
    let _ = wr.shutdown().await;
    Ok(())
}

/// Encodes a command on the connection's own session and writes it, then tells the engine what
/// was sent (or that the session can never express it). A session that is not ready (a JT/T 808
/// terminal not yet authenticated) leaves the command queued for the next login.
async fn send_command(
    session: &mut dyn Session,
    d: Dispatch,
    wr: &mut OwnedWriteHalf,
    cfg: &Listener,
    engine: &EngineHandle,
) -> Result<(), ConnError> {
    if session.commands_to() != Some(&d.device_id) {
        return Ok(());
    }
    let proto = cfg.protocol.name();
    match session.encode_command(d.id, &cfg.localise(d.command)) {
        Ok(enc) => {
            wr.write_all(&enc.bytes).await?;
            tracing::info!(protocol = proto, device = %d.device_id, command = d.id, hex = %crate::protocol::to_hex(&enc.bytes), "command sent");
            engine
                .notify(CommandSent {
                    id: d.id,
                    key: enc.key,
                })
                .await;
        }
        Err(EncodeError::NotReady) => {}
        Err(EncodeError::Unsupported(reason)) => {
            engine
                .notify(CommandRefused {
                    id: d.id,
                    reason: reason.to_string(),
                })
                .await;
        }
    }
    Ok(())
}

fn session_reason(e: &crate::protocol::SessionError) -> &'static str {
    match e {
        crate::protocol::SessionError::Refused(_) => "refused",
        crate::protocol::SessionError::Fatal(r) => r,
    }
}
