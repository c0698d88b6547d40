//! A connection's inbox: the commands handed to it for its device, and the word to close.
//!
//! One small shared object with one flag word, because a connection task looks at it every time
//! it wakes (twice for each position it acknowledges): a channel and a cancellation token side by
//! side cost several cache lines, a lock and a budget check on each look, across thousands of
//! connections whose state is never in cache.

use super::Dispatch;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

const MAIL: u8 = 1;
const CLOSED: u8 = 2;

#[derive(Default)]
pub struct Mailbox {
    state: AtomicU8,
    waker: AtomicWaker,
    queue: Mutex<VecDeque<Dispatch>>,
}

impl Mailbox {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Hands a command to the connection; false once the box is closed (the connection is gone
    /// or going), so that the engine hands it to the device's next connection instead.
    pub fn send(&self, d: Dispatch) -> bool {
        if self.is_closed() {
            return false;
        }
        match self.queue.lock() {
            // Handed again before the connection looked (a login committed after its link was
            // registered hands its commands anew): written once.
            Ok(mut q) => match q.iter_mut().find(|p| p.id == d.id) {
                Some(pending) => *pending = d,
                None => q.push_back(d),
            },
            Err(_) => return false,
        }
        self.state.fetch_or(MAIL, Ordering::Release);
        self.waker.wake();
        true
    }

    /// Takes back command `id` if the connection has not taken it yet.
    pub fn withdraw(&self, id: u64) {
        if let Ok(mut q) = self.queue.lock() {
            q.retain(|d| d.id != id);
        }
    }

    /// Closes the box: the connection ends at its next look, and commands are refused.
    pub fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// The commands handed over so far, oldest first.
    pub fn take(&self) -> VecDeque<Dispatch> {
        // The flag goes before the queue is read: a command pushed meanwhile sets it again.
        self.state.fetch_and(!MAIL, Ordering::AcqRel);
        self.queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// Ready when there is mail or the box is closed.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.load(Ordering::Acquire) != 0 {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.state.load(Ordering::Acquire) != 0 {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// [`Mailbox::poll_ready`] as a future.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeviceId;
    use crate::protocol::downlink::Downlink;

    fn cmd(id: u64) -> Dispatch {
        Dispatch {
            id,
            device_id: DeviceId::new("1"),
            command: Downlink::Locate,
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(3600),
            withdrawn: Default::default(),
        }
    }

    /// A command handed twice before the connection takes its mail is written once.
    #[test]
    fn a_command_handed_twice_before_a_look_is_taken_once() {
        let m = Mailbox::new();
        assert!(m.send(cmd(1)));
        assert!(m.send(cmd(2)));
        assert!(m.send(cmd(1)));
        let ids: Vec<u64> = m.take().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, [1, 2]);
        assert!(m.send(cmd(1)));
        assert_eq!(
            m.take().len(),
            1,
            "a later hand after a look goes out again"
        );
    }

    #[tokio::test]
    async fn wakes_for_mail_in_order_and_refuses_once_closed() {
        let m = Mailbox::new();
        let waiting = tokio::spawn({
            let m = m.clone();
            async move {
                m.ready().await;
                m.take().into_iter().map(|d| d.id).collect::<Vec<_>>()
            }
        });
        tokio::task::yield_now().await;
        assert!(m.send(cmd(1)));
        assert!(m.send(cmd(2)));
        let got = waiting.await.expect("task");
        // The waiter may run between the two sends and see one; what it saw is the oldest.
        assert_eq!(got[0], 1);
        let rest: Vec<u64> = m.take().into_iter().map(|d| d.id).collect();
        assert_eq!([got, rest].concat(), vec![1, 2]);
        // Nothing left: not ready until something happens.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(m.poll_ready(&mut cx).is_pending());
        m.close();
        assert!(m.poll_ready(&mut cx).is_ready());
        assert!(m.is_closed());
        assert!(!m.send(cmd(3)), "a closed box takes nothing");
        assert!(m.take().is_empty());
    }
}
