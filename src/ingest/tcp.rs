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
use crate::event::{Event, Timestamp};
use crate::ingest::Sorter;
use crate::protocol::downlink::EncodeError;
use crate::protocol::{Output, Rejection, Session, SessionConfig};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a new connection has to make its first event (a login, a fix) before it is closed,
/// when the idle timeout is longer. Trackers speak as soon as they connect.
pub const FIRST_WORD: std::time::Duration = std::time::Duration::from_secs(60);

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
    Store(#[from] crate::store::StoreError),
}

/// Room asked of the read buffer before each read: a whole GT06 or JT/T 808 frame, most often.
const READ_ROOM: usize = 2048;

async fn connection(
    stream: TcpStream,
    peer: &str,
    cfg: &Listener,
    scfg: SessionConfig,
    engine: &EngineHandle,
    mailbox: &Arc<Mailbox>,
) -> Result<(), ConnError> {
    let proto = cfg.protocol.name();
    // Bounds the read buffer even if a session misbehaves: beyond this, the buffer is dropped.
    let hard_limit = scfg.max_frame.saturating_mul(2).max(1024);
    let (mut rd, mut wr) = stream.into_split();
    let mut session = cfg.protocol.session(scfg);
    let sorter = Sorter::new(proto);
    // The connection's buffers live as long as it does: each batch reuses them, and the
    // engine hands the events' vector back with the commit's outcome.
    let mut input = BytesMut::with_capacity(READ_ROOM);
    let mut outs: Vec<Output> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut replies: Vec<Bytes> = Vec::new();
    let mut joined = BytesMut::new();
    // One idle timer for the connection's whole life: made anew per message, it would lock the
    // timer wheel twice. The shutdown and the commands for the device come through one mailbox
    // (`crate::downlink::Mailbox`), one flag word to look at on each wake.
    let opened = Instant::now();
    let mut last_input = opened;
    // Until the device names itself (its first event), the connection has `FIRST_WORD` at most:
    // a real tracker speaks at once, and a peer that never does must not hold a slot of
    // `max_connections` for the whole idle timeout.
    let mut heard = false;
    let idle = tokio::time::sleep(cfg.idle_timeout.min(FIRST_WORD));
    tokio::pin!(idle);
    // Commands for this connection's device arrive in the mailbox once it has registered (below).
    let mut link: Option<LinkGuard> = None;
    loop {
        // `reserve` takes back the room of what was consumed before it allocates.
        input.reserve(READ_ROOM);
        let read = tokio::select! {
            biased;
            () = mailbox.ready() => {
                if mailbox.is_closed() {
                    break;
                }
                // Between batches: never ahead of a reply that waits for its commit.
                for d in mailbox.take() {
                    send_command(session.as_mut(), d, &mut wr, cfg, proto, engine).await?;
                }
                continue;
            }
            r = rd.read_buf(&mut input) => r?,
            _ = &mut idle => {
                // The timer is moved only when it fires: until then input just notes the time.
                let due = if heard {
                    last_input + cfg.idle_timeout
                } else {
                    opened + cfg.idle_timeout.min(FIRST_WORD)
                };
                if due > Instant::now() {
                    idle.as_mut().reset(due);
                    continue;
                }
                metrics::counter!("lienwatch_connections_idle_closed_total", "protocol" => proto)
                    .increment(1);
                return Err(ConnError::Idle);
            }
        };
        let closed = read == 0;
        // Every complete frame in the buffer; what a session error ends is answered first, so
        // that owed replies (a Teltonika refusal `00`) still reach the device.
        let ended = session.feed(&mut input, &mut outs).err();
        if closed && ended.is_none() {
            session.finish(&mut input, &mut outs);
        }
        if input.len() > hard_limit {
            outs.push(Output::Rejected(Rejection::new(
                "buffer over limit",
                input.len(),
            )));
            input.clear();
        }
        sorter.sort(&mut outs, &mut events, &mut replies, &peer);
        // Input counts against the idle timeout only when a device's session made an event of
        // it. Bytes trickled into a frame that never completes, garbage (a rejection for each
        // byte) and messages before a login (a JT/T 808 heartbeat is answered before
        // authentication) do not keep a peer open.
        let produced = !events.is_empty();
        // Registered before the commit of the login, so the engine sees the link when it applies it.
        if let Some(id) = session.commands_to() {
            if !id.as_str().is_empty() && link.as_ref().map(LinkGuard::device) != Some(id) {
                link = Some(engine.command_links.register(id.clone(), mailbox.clone()));
            }
        }
        if !events.is_empty() {
            // Replies wait for the commit: if it fails, the device gets nothing and resends.
            engine.commit(&mut events, Timestamp::now()).await?;
        }
        // One write per batch, however many frames it answers.
        match replies.as_slice() {
            [] => {}
            [one] => write(&mut wr, one, cfg.idle_timeout, proto).await?,
            many => {
                joined.clear();
                for r in many {
                    joined.extend_from_slice(r);
                }
                write(&mut wr, &joined, cfg.idle_timeout, proto).await?;
            }
        }
        replies.clear();
        if let Some(e) = ended {
            metrics::counter!("lienwatch_sessions_ended_total", "protocol" => proto, "reason" => session_reason(&e)).increment(1);
            if crate::ingest::log_budget() {
                tracing::info!(protocol = proto, peer, error = %e, "session ended by protocol");
            }
            break;
        }
        if closed {
            break;
        }
        if produced {
            heard = true;
            last_input = Instant::now();
        }
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
    proto: &'static str,
    engine: &EngineHandle,
) -> Result<(), ConnError> {
    if session.commands_to() != Some(&d.device_id)
        || std::time::Instant::now() >= d.deadline
        || d.withdrawn.load(std::sync::atomic::Ordering::Acquire)
    {
        return Ok(());
    }
    match session.encode_command(d.id, &cfg.localise(d.command)) {
        Ok(enc) => {
            write(wr, &enc.bytes, cfg.idle_timeout, proto).await?;
            let at = Timestamp::now();
            tracing::info!(protocol = proto, device = %d.device_id, command = d.id, hex = %crate::protocol::to_hex(&enc.bytes), "command sent");
            engine
                .notify(CommandSent {
                    id: d.id,
                    key: enc.key,
                    at,
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

/// Writes `bytes` whole. A peer that stops reading fills the socket's buffers and would hold
/// its connection (and its slot under `max_connections`) for good, out of the idle timer's
/// reach: a write that waits longer than `idle_timeout` closes the connection as idle. The
/// socket nearly always takes a reply at once, with no timer made.
async fn write(
    wr: &mut OwnedWriteHalf,
    bytes: &[u8],
    limit: std::time::Duration,
    proto: &'static str,
) -> Result<(), ConnError> {
    let n = match wr.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e.into()),
    };
    let Some(rest) = bytes.get(n..).filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    match tokio::time::timeout(limit, wr.write_all(rest)).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            metrics::counter!("lienwatch_connections_idle_closed_total", "protocol" => proto)
                .increment(1);
            Err(ConnError::Idle)
        }
    }
}

fn session_reason(e: &crate::protocol::SessionError) -> &'static str {
    match e {
        crate::protocol::SessionError::Refused(_) => "refused",
        crate::protocol::SessionError::Fatal(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that never reads: the write gives up after its limit instead of holding the
    /// connection for good, and a peer that reads gets everything.
    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_gives_up() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (_peer, (conn, _)) = (peer.unwrap(), accepted.unwrap());
        let (_rd, mut wr) = conn.into_split();
        // Far more than loopback's buffers on both sides hold.
        let big = vec![0u8; 64 << 20];
        let r = write(&mut wr, &big, std::time::Duration::from_millis(300), "gt06").await;
        assert!(matches!(r, Err(ConnError::Idle)), "{r:?}");

        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (mut peer, (conn, _)) = (peer.unwrap(), accepted.unwrap());
        let (_rd, mut wr) = conn.into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut got)
                .await
                .map(|_| got.len())
        });
        let data = vec![7u8; 8 << 20];
        write(&mut wr, &data, std::time::Duration::from_secs(10), "gt06")
            .await
            .unwrap();
        drop(wr);
        drop(_rd);
        assert_eq!(reader.await.unwrap().unwrap(), data.len());
    }

    /// A command whose time ran out while it waited in the mailbox is not written.
    /// An expired command, or one cancelled after the connection took it from its mailbox, is
    /// not written.
    #[tokio::test]
    async fn an_expired_or_withdrawn_command_is_not_written() {
        use crate::downlink::Dispatch;
        use crate::event::DeviceId;
        use crate::protocol::downlink::Downlink;
        let t0 = Timestamp::now();
        let engine =
            crate::engine::testing::engine_at(crate::store::Store::temporary().unwrap(), t0);
        let (engine, _thread) =
            crate::engine::spawn(engine, std::sync::Arc::new(Timestamp::now)).unwrap();
        let cfg = crate::config::Config::load(None).unwrap().listeners[0].clone();
        let id = DeviceId::new("868120145233604");
        let mut session = cfg.protocol.session(SessionConfig {
            default_device_id: Some(id.clone()),
            ..SessionConfig::default()
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (peer, accepted) =
            tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
        let (mut peer, (conn, _)) = (peer.unwrap(), accepted.unwrap());
        let (_rd, mut wr) = conn.into_split();
        let command = |deadline| Dispatch {
            id: 7,
            device_id: id.clone(),
            command: Downlink::Locate,
            deadline,
            withdrawn: Default::default(),
        };
        let proto = cfg.protocol.name();
        // Expired a millisecond ago; withdrawn; then an hour to go.
        let now = std::time::Instant::now();
        let past = now.checked_sub(std::time::Duration::from_millis(1));
        let hour = now + std::time::Duration::from_secs(3600);
        let withdrawn = command(hour);
        withdrawn
            .withdrawn
            .store(true, std::sync::atomic::Ordering::Release);
        for d in [command(past.unwrap_or(now)), withdrawn, command(hour)] {
            send_command(session.as_mut(), d, &mut wr, &cfg, proto, &engine)
                .await
                .unwrap();
        }
        drop(wr);
        drop(_rd);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut got)
            .await
            .unwrap();
        // One 0x80 frame: the live command's, whose server flag is its id.
        assert_eq!(got.get(3), Some(&0x80), "{got:02X?}");
        assert_eq!(got.len(), usize::from(got[2]) + 5, "one frame: {got:02X?}");
        assert_eq!(got.get(5..9), Some(&7u32.to_be_bytes()[..]), "{got:02X?}");
    }
}
