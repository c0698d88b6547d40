//! Which PUBACKs may go out, and when: the pure bookkeeping of one session, kept apart from its
//! I/O (as rumqttc keeps `MqttState` apart from its event loop) so that it can be tested alone.
//!
//! The rules it enforces:
//! - a message is acknowledged only after the commit that covers it returned Ok (durability);
//! - acknowledgements leave in the order the messages arrived (MQTT-4.6.0-2), so a message
//!   whose commit finished early waits for the ones before it;
//! - nothing is acknowledged on a connection other than the one the message came on: packet ids
//!   are per connection, and after a reconnect the broker redelivers what was not acked;
//! - after a failed commit nothing more from that connection is acknowledged; the caller
//!   reconnects so that the broker redelivers everything unacknowledged.

use std::collections::VecDeque;

/// Identifies one commit handed out by [`AckLedger::stage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(u64);

/// What the caller must do after a commit finished.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict<M> {
    /// Messages to acknowledge now, in this order.
    pub ack: Vec<M>,
    /// The commit failed: drop the connection so that the broker redelivers.
    pub reconnect: bool,
}

struct Entry<M> {
    commit: CommitId,
    msg: M,
}

/// The acknowledgement ledger of one session, generic over the message handle `M`.
pub struct AckLedger<M> {
    /// The connection the entries belong to.
    conn: u64,
    /// Set once a commit of `conn` failed: nothing more of `conn` is acknowledged.
    poisoned: bool,
    /// Messages of `conn` not acknowledged yet, in arrival order.
    entries: VecDeque<Entry<M>>,
    /// Commits of `conn` that returned Ok while messages before theirs were still waiting.
    done: Vec<CommitId>,
    next: u64,
}

impl<M> Default for AckLedger<M> {
    fn default() -> Self {
        AckLedger {
            conn: 0,
            poisoned: false,
            entries: VecDeque::new(),
            done: Vec::new(),
            next: 0,
        }
    }
}

impl<M> AckLedger<M> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new connection started: what was unacknowledged on the old one is forgotten (the
    /// broker redelivers it). Returns how many messages that was.
    pub fn connected(&mut self, conn: u64) -> usize {
        let dropped = self.entries.len();
        self.conn = conn;
        self.poisoned = false;
        self.entries.clear();
        self.done.clear();
        dropped
    }

    /// Registers messages that arrived, in order, on connection `conn`, as one commit.
    /// Returns `None` when they are not to be committed for acknowledgement: they came on a
    /// connection that is no longer current, or the current one is poisoned.
    pub fn stage(&mut self, conn: u64, msgs: impl IntoIterator<Item = M>) -> Option<CommitId> {
        if conn != self.conn || self.poisoned {
            return None;
        }
        let commit = CommitId(self.next);
        self.next += 1;
        self.entries
            .extend(msgs.into_iter().map(|msg| Entry { commit, msg }));
        Some(commit)
    }

    /// A commit finished. Commits may finish in any order; a commit the ledger no longer knows
    /// (its connection ended) changes nothing.
    pub fn finished(&mut self, commit: CommitId, ok: bool) -> Verdict<M> {
        let known = self.entries.iter().any(|e| e.commit == commit);
        if !known {
            return Verdict {
                ack: Vec::new(),
                reconnect: false,
            };
        }
        if !ok {
            self.poisoned = true;
            self.entries.clear();
            self.done.clear();
            return Verdict {
                ack: Vec::new(),
                reconnect: true,
            };
        }
        self.done.push(commit);
        let mut ack = Vec::new();
        while let Some(front) = self.entries.front() {
            if !self.done.contains(&front.commit) {
                break;
            }
            if let Some(e) = self.entries.pop_front() {
                ack.push(e.msg);
            }
        }
        // A commit is finished with once none of its messages wait any more.
        let entries = &self.entries;
        self.done.retain(|c| entries.iter().any(|e| e.commit == *c));
        Verdict {
            ack,
            reconnect: false,
        }
    }

    /// Messages received on the current connection and not acknowledged yet.
    pub fn waiting(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn acks_wait_for_their_commit_and_go_in_arrival_order() {
        let mut l = AckLedger::new();
        l.connected(1);
        let a = l.stage(1, [1, 2]).expect("staged");
        let b = l.stage(1, [3]).expect("staged");
        let c = l.stage(1, [4, 5]).expect("staged");
        // The later commits finish first: nothing may overtake 1 and 2.
        assert_eq!(l.finished(c, true).ack, Vec::<i32>::new());
        assert_eq!(l.finished(b, true).ack, Vec::<i32>::new());
        assert_eq!(l.waiting(), 5);
        let v = l.finished(a, true);
        assert_eq!(v.ack, vec![1, 2, 3, 4, 5]);
        assert!(!v.reconnect);
        assert_eq!(l.waiting(), 0);
    }

    #[test]
    fn a_failed_commit_acks_nothing_more_on_its_connection() {
        let mut l = AckLedger::new();
        l.connected(1);
        let a = l.stage(1, [1]).expect("staged");
        let b = l.stage(1, [2]).expect("staged");
        let c = l.stage(1, [3]).expect("staged");
        assert_eq!(l.finished(a, true).ack, vec![1]);
        let v = l.finished(b, false);
        assert!(v.reconnect);
        assert!(v.ack.is_empty());
        // The commit after the failed one succeeded, but its message came after an
        // unacknowledged one: it is redelivered with it.
        assert!(l.finished(c, true).ack.is_empty());
        assert_eq!(l.stage(1, [4]), None);
        // The next connection starts clean.
        l.connected(2);
        let d = l.stage(2, [5]).expect("staged");
        assert_eq!(l.finished(d, true).ack, vec![5]);
    }

    #[test]
    fn a_new_connection_forgets_the_old_ones_messages() {
        let mut l = AckLedger::new();
        l.connected(1);
        let a = l.stage(1, ["old"]).expect("staged");
        assert_eq!(l.connected(2), 1);
        // The old commit finishing late acks nothing: its packet id is meaningless now.
        assert!(l.finished(a, true).ack.is_empty());
        // Messages still coming through from the old connection are not staged.
        assert_eq!(l.stage(1, ["late"]), None);
        let b = l.stage(2, ["new"]).expect("staged");
        assert_eq!(l.finished(b, true).ack, vec!["new"]);
    }

    #[test]
    fn an_empty_commit_still_keeps_the_order() {
        let mut l = AckLedger::new();
        l.connected(1);
        let a = l.stage(1, [1]).expect("staged");
        let empty = l.stage(1, Vec::<i32>::new()).expect("staged");
        let b = l.stage(1, [2]).expect("staged");
        assert!(l.finished(empty, true).ack.is_empty());
        assert!(l.finished(b, true).ack.is_empty());
        assert_eq!(l.finished(a, true).ack, vec![1, 2]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Stage this many messages on the current connection.
        Stage(usize),
        /// Finish the pending commit at this index (modulo), Ok or not.
        Finish(usize, bool),
        /// Reconnect.
        Reconnect,
        /// Stage on a connection that has ended.
        StageStale,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..5).prop_map(Op::Stage),
            6 => (any::<usize>(), prop::bool::weighted(0.9)).prop_map(|(i, ok)| Op::Finish(i, ok)),
            1 => Just(Op::Reconnect),
            1 => Just(Op::StageStale),
        ]
    }

    proptest! {
        /// Whatever the interleaving: every ack is of a message whose own commit returned Ok,
        /// on the connection it came on, with every earlier message of that connection acked
        /// before it; nothing is acked twice; and once every commit returned Ok, everything of
        /// the current connection since its last failure is acked.
        #[test]
        fn acks_are_durable_ordered_and_complete(ops in prop::collection::vec(op(), 0..200)) {
            let mut l: AckLedger<(u64, u64)> = AckLedger::new();
            let mut conn = 1u64;
            l.connected(conn);
            let mut seq = 0u64;
            // (commit, messages) not yet finished.
            let mut pending: Vec<(CommitId, Vec<(u64, u64)>)> = Vec::new();
            let mut ok_msgs = std::collections::HashSet::new();
            let mut acked: Vec<(u64, u64)> = Vec::new();
            let mut poisoned = false;
            let mut must_ack = Vec::new();
            for o in ops {
                match o {
                    Op::Stage(n) => {
                        let msgs: Vec<_> = (0..n).map(|_| { seq += 1; (conn, seq) }).collect();
                        match l.stage(conn, msgs.clone()) {
                            Some(c) => {
                                prop_assert!(!poisoned);
                                must_ack.extend(msgs.iter().copied());
                                pending.push((c, msgs));
                            }
                            None => prop_assert!(poisoned),
                        }
                    }
                    Op::StageStale => {
                        seq += 1;
                        prop_assert_eq!(l.stage(conn.wrapping_sub(1), [(conn - 1, seq)]), None);
                    }
                    Op::Finish(i, ok) => {
                        if pending.is_empty() { continue; }
                        let (c, msgs) = pending.remove(i % pending.len());
                        if ok { ok_msgs.extend(msgs.iter().copied()); }
                        let v = l.finished(c, ok);
                        if !ok && msgs.first().is_some_and(|m| m.0 == conn) && !poisoned {
                            prop_assert!(v.reconnect);
                            poisoned = true;
                            must_ack.clear();
                        }
                        for m in v.ack {
                            prop_assert_eq!(m.0, conn, "acked on another connection");
                            prop_assert!(ok_msgs.contains(&m), "acked before its commit");
                            if let Some(last) = acked.last() {
                                if last.0 == m.0 {
                                    prop_assert!(last.1 < m.1, "out of order");
                                }
                            }
                            acked.push(m);
                        }
                    }
                    Op::Reconnect => {
                        conn += 1;
                        l.connected(conn);
                        poisoned = false;
                        must_ack.clear();
                    }
                }
            }
            // Every staged message of the current connection is acked once all commits finish Ok.
            let before = std::mem::take(&mut pending);
            for (c, msgs) in before {
                ok_msgs.extend(msgs.iter().copied());
                for m in l.finished(c, true).ack {
                    prop_assert!(ok_msgs.contains(&m));
                    acked.push(m);
                }
            }
            let set: std::collections::HashSet<_> = acked.iter().copied().collect();
            prop_assert_eq!(set.len(), acked.len(), "acked twice");
            if !poisoned {
                for m in &must_ack {
                    prop_assert!(set.contains(m), "never acked: {:?}", m);
                }
            }
            // Per connection, acks are a prefix-ordered sequence.
            for w in acked.windows(2) {
                if w[0].0 == w[1].0 {
                    prop_assert!(w[0].1 < w[1].1);
                }
            }
        }
    }
}
