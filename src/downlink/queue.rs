//! The engine's side of commands: the open ones in memory (queued or sent), per-device queues in
//! creation order, expiry deadlines, and which devices have a command due at their connection.
//!
//! Every change is written through to the store at once; the engine's next flush makes it
//! durable, in the same group commit as the events that caused it. Where answers name their
//! command (GT06's server flag, JT/T 808's reply serial), the first [`MAX_IN_FLIGHT`] of a
//! device's queue go out together, so that one the device leaves unanswered holds back none of
//! the others; elsewhere (Teltonika, H02) only the head does. A command is handed again to a new
//! connection (or after a login on the same one) until it is answered, fails or expires.

use super::deadlines::Deadlines;
use super::links::{Dispatch, Links};
use super::record::{CommandRecord, CommandState};
use crate::event::{AnswerKey, CommandAnswer, DeviceId, Event, EventKind, Protocol};
use crate::protocol::downlink::Downlink;
use crate::store::{Store, StoreError, StoredPosition};
use crate::time::Timestamp;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

pub struct Commands {
    open: HashMap<u64, CommandRecord>,
    queues: HashMap<DeviceId, VecDeque<u64>>,
    /// Open command -> the link generation it was last handed to.
    handed: HashMap<u64, u64>,
    /// Handed commands' withdrawal flags ([`Dispatch::withdrawn`]).
    withdrawn: HashMap<u64, Arc<std::sync::atomic::AtomicBool>>,
    deadlines: Deadlines,
    next_id: u64,
    /// Devices whose queue head may need handing to their connection.
    due: HashSet<DeviceId>,
    /// In-order commands (`AnswerKey::InOrder`) written more than once: each send may be answered.
    resent: HashSet<u64>,
    /// Devices that may still send an answer to an in-order command that has ended, and until when
    /// their next command waits, so that the stray answer finds nothing in flight to close.
    quiet: HashMap<DeviceId, Timestamp>,
    links: Arc<Links>,
}

/// How long an in-order device's next command waits after one ended that may still be answered:
/// one that expired unanswered while in flight, or one written twice (a login in between). A
/// Codec 12 or H02 answer comes in seconds; without the wait, a late one would close the next
/// command with the earlier one's answer.
pub const STRAY_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Commands of one device in flight at once where answers name their command.
pub const MAX_IN_FLIGHT: usize = 8;

/// Whether a protocol's answers name the command they answer, so that several can be in flight.
fn answers_name_their_command(p: Protocol) -> bool {
    matches!(p, Protocol::Gt06 | Protocol::Jt808)
}

/// Whether an answer with this key could be another command's: an in-order answer names no
/// command, and an H02 `V4` names only the command's word, which the next command may share
/// (`S20,1`, then `S20,0`). A late or second answer with such a key must not close the next.
fn key_is_shared(key: Option<AnswerKey>) -> bool {
    matches!(key, Some(AnswerKey::InOrder | AnswerKey::Word(_)))
}

/// `lienwatch_commands_total{protocol, outcome}`.
fn count(protocol: Protocol, outcome: &'static str) {
    metrics::counter!("lienwatch_commands_total", "protocol" => protocol.as_str(), "outcome" => outcome)
        .increment(1);
}

impl Commands {
    /// The open commands from the store; every device with one is due at its next contact.
    pub fn load(store: &Store) -> Result<Commands, StoreError> {
        let mut c = Commands {
            open: HashMap::new(),
            queues: HashMap::new(),
            handed: HashMap::new(),
            withdrawn: HashMap::new(),
            deadlines: Deadlines::default(),
            next_id: store.last_command_id()?.map_or(1, |n| n + 1),
            due: HashSet::new(),
            resent: HashSet::new(),
            quiet: HashMap::new(),
            links: Arc::new(Links::default()),
        };
        let mut open: Vec<CommandRecord> = store.open_commands().collect::<Result<_, _>>()?;
        // The open set as a store written before its writes were one batch may have kept it.
        open.retain(|r| r.state.is_open());
        open.sort_by_key(|r| r.id);
        for r in open {
            c.deadlines.set(r.id, r.expires_at);
            c.queues
                .entry(r.device_id.clone())
                .or_default()
                .push_back(r.id);
            c.open.insert(r.id, r);
        }
        Ok(c)
    }

    pub fn links(&self) -> Arc<Links> {
        self.links.clone()
    }

    /// The device's open commands, queued or sent.
    pub fn open_for(&self, device: &DeviceId) -> usize {
        self.queues.get(device).map_or(0, VecDeque::len)
    }

    /// Queues a command; it goes out when it reaches the head of its device's queue and the
    /// device is connected.
    pub fn create(
        &mut self,
        store: &Store,
        device_id: DeviceId,
        protocol: Protocol,
        command: Downlink,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<CommandRecord, StoreError> {
        let rec = CommandRecord {
            id: self.next_id,
            device_id: device_id.clone(),
            protocol,
            command,
            state: CommandState::Queued,
            created_at: now,
            expires_at,
            sent_at: None,
            answered_at: None,
            answer: None,
            position: None,
            key: None,
            error: None,
        };
        store.put_command(&rec)?;
        self.next_id += 1;
        if let Downlink::Raw(text) = &rec.command {
            tracing::info!(command = %rec.api_id(), device = %device_id, text, "raw command queued");
        }
        count(protocol, "queued");
        self.deadlines.set(rec.id, expires_at);
        self.queues
            .entry(device_id.clone())
            .or_default()
            .push_back(rec.id);
        self.due.insert(device_id);
        self.open.insert(rec.id, rec.clone());
        Ok(rec)
    }

    /// An event from a device: a login makes its command go out again on this connection, an
    /// answer closes the command in flight, and any sign of life makes its head due. A JT/T 808
    /// registration is no login here: it may come on a second connection while the first,
    /// authenticated one holds the command, which would get it twice.
    pub fn on_event(&mut self, store: &Store, ev: &Event, received_at: Timestamp) {
        let Some(q) = self.queues.get(&ev.device_id) else {
            return;
        };
        match &ev.kind {
            EventKind::Login => {
                for id in q {
                    self.handed.remove(id);
                }
            }
            EventKind::CommandAnswer(a) => {
                // The command in flight with the answer's key: an in-order device has only its
                // head in flight; a key that names its command is the newest sent with it, as a
                // reply serial counts round on a connection of days while an older command with
                // the same serial may still wait for an answer that never came.
                let matches = |id: &u64| {
                    self.open.get(id).is_some_and(|rec| {
                        rec.state == CommandState::Sent
                            && match (rec.key, a.key) {
                                (Some(AnswerKey::InOrder), AnswerKey::InOrder) => true,
                                (Some(k), got) => k == got,
                                (None, _) => false,
                            }
                    })
                };
                let answered = match a.key {
                    AnswerKey::InOrder => q.iter().copied().find(matches),
                    _ => (q.iter().copied().filter(matches))
                        .max_by_key(|id| self.open.get(id).and_then(|r| r.sent_at)),
                };
                match answered {
                    Some(id) => self.on_answer(store, id, a, received_at),
                    None => {
                        tracing::debug!(device = %ev.device_id, key = ?a.key, "answer to no command in flight")
                    }
                }
            }
            _ => {}
        }
        self.due.insert(ev.device_id.clone());
    }

    fn on_answer(&mut self, store: &Store, id: u64, a: &CommandAnswer, now: Timestamp) {
        let state = if a.ok {
            CommandState::Answered
        } else {
            CommandState::Failed
        };
        self.finish_at(store, id, state, false, now, |r| {
            r.answered_at = Some(now);
            r.answer = a.text.clone();
            r.position = a.position.map(|p| StoredPosition::new(&p, now));
        });
    }

    /// The connection wrote the command: it is in flight with this key.
    pub fn sent(&mut self, store: &Store, id: u64, key: AnswerKey, now: Timestamp) {
        let Some(rec) = self.open.get_mut(&id) else {
            return;
        };
        if rec.state == CommandState::Sent && key_is_shared(Some(key)) {
            self.resent.insert(id);
        }
        rec.state = CommandState::Sent;
        rec.sent_at = Some(now);
        rec.key = Some(key);
        count(rec.protocol, "sent");
        if let Err(e) = store.put_command(rec) {
            tracing::error!(error = %e, "cannot store a sent command");
        }
    }

    /// The connection cannot express the command: it fails, and the next one is due.
    pub fn refused(&mut self, store: &Store, id: u64, reason: &str, now: Timestamp) {
        self.finish_at(store, id, CommandState::Failed, false, now, |r| {
            r.error = Some(reason.to_string());
        });
    }

    /// An operator withdraws an open command (a relay command for a car whose loan was cured
    /// while it was off): it fails with `reason` and is never sent again. One already written to
    /// the device may still be carried out; its late answer then closes nothing, as after an
    /// expiry in flight. Returns the record, or `None` when no open command has that id.
    pub fn cancel(
        &mut self,
        store: &Store,
        id: u64,
        reason: &str,
        now: Timestamp,
    ) -> Option<CommandRecord> {
        if let Some(rec) = self.open.get(&id) {
            self.links.withdraw(&rec.device_id, id);
        }
        self.finish_at(store, id, CommandState::Failed, true, now, |r| {
            r.error = Some(reason.to_string());
        })
    }

    /// Expires every open command whose time has come, and ends the waits that are over.
    pub fn expire_due(&mut self, store: &Store, now: Timestamp) {
        while let Some(id) = self.deadlines.pop_due(now) {
            self.finish_at(store, id, CommandState::Expired, true, now, |_| {});
        }
        if !self.quiet.is_empty() {
            let due = &mut self.due;
            self.quiet.retain(|device, until| {
                let waiting = *until > now;
                if !waiting {
                    due.insert(device.clone());
                }
                waiting
            });
        }
    }

    /// A step of the host clock by `step_ms` (0 at a start): each open command's times move
    /// with it, so that it stays open for the life it was given, as the daemon watched it. A
    /// day's correction forward expired every open command at once; a year's correction back
    /// left each open, a raw relay command too, for a year. Times still ahead of `now` (a start
    /// with the clock set back, where the step is not known) are brought back to it; so are the
    /// stray-answer waits.
    pub fn clock_stepped(&mut self, store: &Store, step_ms: i64, now: Timestamp) {
        for rec in self.open.values_mut() {
            let by = crate::time::step_shift(rec.created_at, step_ms, now);
            let sent_at = rec.sent_at.map(|t| t.add_millis(by).min(now));
            if by == 0 && sent_at == rec.sent_at {
                continue;
            }
            rec.created_at = rec.created_at.add_millis(by);
            rec.expires_at = rec.expires_at.add_millis(by);
            rec.sent_at = sent_at;
            self.deadlines.set(rec.id, rec.expires_at);
            if let Err(e) = store.put_command(rec) {
                tracing::error!(error = %e, command = %rec.api_id(), "cannot store a command's times after a clock step");
            }
        }
        let longest = now.add(STRAY_ANSWER_WAIT);
        for until in self.quiet.values_mut() {
            *until = until.add_millis(step_ms).min(longest);
        }
    }

    pub fn next_deadline(&self) -> Option<Timestamp> {
        let quiet = self.quiet.values().min().copied();
        match (self.deadlines.next(), quiet) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves an open command to a final state; the device's next command becomes due, at once
    /// or after [`STRAY_ANSWER_WAIT`]. `given_up`: it ends without its answer (expired,
    /// cancelled). Returns the finished record, `None` when no open command has that id.
    fn finish_at(
        &mut self,
        store: &Store,
        id: u64,
        state: CommandState,
        given_up: bool,
        now: Timestamp,
        fill: impl FnOnce(&mut CommandRecord),
    ) -> Option<CommandRecord> {
        let mut rec = self.open.remove(&id)?;
        // An in-order or H02 word-keyed command given up sent, or one handed to its connection
        // and maybe being written (its `sent` comes after the write): its answer may still come,
        // and must not close the next one.
        let unanswered_in_flight = given_up
            && match rec.state {
                CommandState::Sent => key_is_shared(rec.key),
                _ => self.handed.contains_key(&id) && !answers_name_their_command(rec.protocol),
            };
        if self.resent.remove(&id) || unanswered_in_flight {
            self.quiet
                .insert(rec.device_id.clone(), now.add(STRAY_ANSWER_WAIT));
        }
        rec.state = state;
        fill(&mut rec);
        self.deadlines.clear(id);
        self.handed.remove(&id);
        // A copy not yet written (handed again after a login, or cancelled) is dropped by its
        // connection: the command is over.
        if let Some(flag) = self.withdrawn.remove(&id) {
            flag.store(true, std::sync::atomic::Ordering::Release);
        }
        if let Some(q) = self.queues.get_mut(&rec.device_id) {
            q.retain(|&x| x != id);
            if q.is_empty() {
                self.queues.remove(&rec.device_id);
            }
        }
        count(rec.protocol, state.as_str());
        if let Err(e) = store.put_command(&rec) {
            tracing::error!(error = %e, "cannot store a finished command");
        }
        self.due.insert(rec.device_id.clone());
        Some(rec)
    }

    /// After a commit: hands each due device's head command (its first [`MAX_IN_FLIGHT`] where
    /// answers name their command) to its connection, unless that connection already has it.
    /// `now` is the engine's clock, which dates the commands' expiry, read when the monotonic
    /// clock read `read_at`: a connection's deadline counts from then, so that it never falls
    /// after the engine's expiry by the length of a commit.
    pub fn dispatch(&mut self, now: Timestamp, read_at: std::time::Instant) {
        for device in self.due.drain() {
            if self.quiet.contains_key(&device) {
                continue;
            }
            let Some(q) = self.queues.get(&device) else {
                continue;
            };
            let Some((generation, mailbox)) = self.links.get(&device) else {
                continue;
            };
            let together = q
                .front()
                .and_then(|h| self.open.get(h))
                .is_some_and(|r| answers_name_their_command(r.protocol));
            let n = if together { MAX_IN_FLIGHT } else { 1 };
            for &id in q.iter().take(n) {
                let Some(rec) = self.open.get(&id) else {
                    continue;
                };
                if self.handed.get(&id) == Some(&generation) {
                    continue;
                }
                let life = rec.expires_at.since(now).max(0).unsigned_abs();
                let d = Dispatch {
                    id,
                    device_id: device.clone(),
                    command: rec.command.clone(),
                    // Past the monotonic clock's range only for lives of centuries.
                    deadline: (read_at.checked_add(std::time::Duration::from_millis(life)))
                        .unwrap_or(read_at + std::time::Duration::from_secs(1 << 32)),
                    withdrawn: self.withdrawn.entry(id).or_default().clone(),
                };
                if !mailbox.send(d) {
                    break;
                }
                self.handed.insert(id, generation);
            }
        }
    }

    /// An open command from memory; a final one from the store.
    pub fn get(&self, store: &Store, id: u64) -> Result<Option<CommandRecord>, StoreError> {
        match self.open.get(&id) {
            Some(r) => Ok(Some(r.clone())),
            None => store.get_command(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(key: AnswerKey, ok: bool) -> Event {
        Event {
            device_id: DeviceId::new("1"),
            protocol: Protocol::Gt06,
            kind: EventKind::CommandAnswer(CommandAnswer {
                key,
                ok,
                text: Some("done".into()),
                position: None,
            }),
        }
    }

    /// The ids handed to a connection's mailbox since the last look.
    fn ids(m: &crate::downlink::Mailbox) -> Vec<u64> {
        m.take().iter().map(|d| d.id).collect()
    }

    /// Commands on a fresh store, with device "1" connected: its mailbox and link.
    fn connected() -> (
        Store,
        Commands,
        Arc<crate::downlink::Mailbox>,
        crate::downlink::links::LinkGuard,
    ) {
        let store = Store::temporary().unwrap();
        let c = Commands::load(&store).unwrap();
        let mailbox = crate::downlink::Mailbox::new();
        let guard = c.links().register(DeviceId::new("1"), mailbox.clone());
        (store, c, mailbox, guard)
    }

    /// A step of the host clock moves an open command's times with it: a day forward does not
    /// expire it at once, and a year back does not keep a raw command open for a year. A start
    /// with the clock set back (the step unknown) counts its life from the start.
    #[test]
    fn open_commands_live_their_time_across_clock_steps() {
        let (hour, day) = (3_600_000, 24 * 3_600_000);
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = Store::temporary().unwrap();
        let mut c = Commands::load(&store).unwrap();
        let state = |c: &Commands, id| c.get(&store, id).unwrap().unwrap().state;
        for step in [day, -365 * day] {
            let raw = Downlink::Raw("RELAY,1#".into());
            let dev = DeviceId::new("1");
            let rec = (c.create(&store, dev, Protocol::Gt06, raw, t0.add_millis(day), t0)).unwrap();
            let key = AnswerKey::ServerFlag(rec.id as u32);
            c.sent(&store, rec.id, key, t0.add_millis(hour / 2));
            let t1 = t0.add_millis(hour + step);
            c.clock_stepped(&store, step, t1);
            c.expire_due(&store, t1);
            c.expire_due(&store, t1.add_millis(23 * hour - 1));
            assert_eq!(state(&c, rec.id), CommandState::Sent, "step {step}");
            let shown = c.get(&store, rec.id).unwrap().unwrap();
            assert_eq!(shown.created_at, t1.add_millis(-hour), "step {step}");
            assert_eq!(shown.sent_at, Some(t1.add_millis(-hour / 2)), "step {step}");
            c.expire_due(&store, t1.add_millis(23 * hour));
            assert_eq!(state(&c, rec.id), CommandState::Expired, "step {step}");
        }
        // Created with the clock a year ahead, then a start with it right.
        let ahead = t0.add_millis(365 * day);
        let dev = DeviceId::new("2");
        let rec = c
            .create(
                &store,
                dev,
                Protocol::Gt06,
                Downlink::Locate,
                ahead.add_millis(day),
                ahead,
            )
            .unwrap();
        let key = AnswerKey::ServerFlag(rec.id as u32);
        c.sent(&store, rec.id, key, ahead.add_millis(60_000));
        drop(c);
        let mut c = Commands::load(&store).unwrap();
        c.clock_stepped(&store, 0, t0);
        let shown = c.get(&store, rec.id).unwrap().unwrap();
        assert_eq!((shown.created_at, shown.sent_at), (t0, Some(t0)));
        c.expire_due(&store, t0.add_millis(day - 1));
        assert_eq!(state(&c, rec.id), CommandState::Sent);
        c.expire_due(&store, t0.add_millis(day));
        assert_eq!(state(&c, rec.id), CommandState::Expired);
    }

    #[test]
    fn handed_in_order_answered_by_key_expired_on_time_kept_across_reopen() {
        let store = Store::temporary().unwrap();
        let t = Timestamp::from_secs;
        let dev = DeviceId::new("1");
        let mut c = Commands::load(&store).unwrap();
        let mailbox = crate::downlink::Mailbox::new();
        let a = c
            .create(
                &store,
                dev.clone(),
                Protocol::Gt06,
                Downlink::Locate,
                t(100),
                t(0),
            )
            .unwrap();
        let b = c
            .create(
                &store,
                dev.clone(),
                Protocol::Gt06,
                Downlink::Raw("X#".into()),
                t(50),
                t(1),
            )
            .unwrap();
        // Offline: nothing goes out.
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        let guard = c.links().register(dev.clone(), mailbox.clone());
        c.on_event(&store, &answer(AnswerKey::InOrder, true), t(2));
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert_eq!(
            ids(&mailbox),
            vec![a.id, b.id],
            "both, in order: GT06 answers name their command"
        );
        // Not handed twice to the same connection.
        c.on_event(&store, &answer(AnswerKey::InOrder, true), t(3));
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert!(ids(&mailbox).is_empty());
        c.sent(&store, a.id, AnswerKey::ServerFlag(1), t(3));
        // An answer with another key is not its answer.
        c.on_event(&store, &answer(AnswerKey::ServerFlag(9), true), t(4));
        assert_eq!(
            c.get(&store, a.id).unwrap().unwrap().state,
            CommandState::Sent
        );
        c.on_event(&store, &answer(AnswerKey::ServerFlag(1), true), t(5));
        let done = c.get(&store, a.id).unwrap().unwrap();
        assert_eq!(
            (done.state, done.answer.as_deref()),
            (CommandState::Answered, Some("done"))
        );
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert!(ids(&mailbox).is_empty(), "the next was out already");
        // Reopened (a restart): the open one is still there, and expires on time.
        drop(guard);
        let mut c = Commands::load(&store).unwrap();
        assert_eq!(c.next_deadline(), Some(t(50)));
        c.expire_due(&store, t(49));
        assert_eq!(
            c.get(&store, b.id).unwrap().unwrap().state,
            CommandState::Queued
        );
        c.expire_due(&store, t(50));
        assert_eq!(
            c.get(&store, b.id).unwrap().unwrap().state,
            CommandState::Expired
        );
        assert_eq!(c.next_deadline(), None);
        let listed: Vec<u64> = store
            .device_commands(&dev, 10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, vec![b.id, a.id], "newest first");
        let more = c
            .create(&store, dev, Protocol::Gt06, Downlink::Locate, t(200), t(60))
            .unwrap();
        assert_eq!(more.id, b.id + 1, "ids never repeat");
    }

    /// Where answers name their command, one the device leaves unanswered holds back none of
    /// the others, up to [`MAX_IN_FLIGHT`]; an in-order device gets one at a time.
    #[test]
    fn keyed_commands_go_out_together_in_order_ones_one_at_a_time() {
        let t = Timestamp::from_secs;
        for (protocol, together) in [
            (Protocol::Gt06, true),
            (Protocol::Jt808, true),
            (Protocol::Teltonika, false),
            (Protocol::H02, false),
        ] {
            let (store, mut c, mailbox, _guard) = connected();
            let dev = DeviceId::new("1");
            let made: Vec<u64> = (0..MAX_IN_FLIGHT as i64 + 2)
                .map(|i| {
                    c.create(
                        &store,
                        dev.clone(),
                        protocol,
                        Downlink::Locate,
                        t(1000),
                        t(i),
                    )
                    .unwrap()
                    .id
                })
                .collect();
            c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
            let want = if together { MAX_IN_FLIGHT } else { 1 };
            assert_eq!(ids(&mailbox), made[..want], "{protocol:?}");
            for (i, &id) in made[..want].iter().enumerate() {
                let key = if together {
                    AnswerKey::ServerFlag(i as u32)
                } else {
                    AnswerKey::InOrder
                };
                c.sent(&store, id, key, t(20));
            }
            if together {
                // The second answered while the first never is: the next in line goes out.
                c.on_event(&store, &answer(AnswerKey::ServerFlag(1), true), t(21));
                c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
                assert_eq!(ids(&mailbox), [made[want]], "{protocol:?}");
                assert_eq!(
                    c.get(&store, made[0]).unwrap().unwrap().state,
                    CommandState::Sent
                );
            } else {
                c.on_event(&store, &answer(AnswerKey::InOrder, true), t(21));
                c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
                assert_eq!(ids(&mailbox), [made[1]], "{protocol:?}");
            }
        }
    }

    /// An in-order command that expires while its connection writes it (handed, its `sent`
    /// not yet in): the next one waits for a stray answer as after an expiry in flight.
    #[test]
    fn an_in_order_command_expired_while_written_holds_the_next_back() {
        let (store, mut c, mailbox, _guard) = connected();
        let t = Timestamp::from_secs;
        let dev = DeviceId::new("1");
        let mut create = |expires: i64| {
            let p = Protocol::Teltonika;
            let cmd = Downlink::Locate;
            c.create(&store, dev.clone(), p, cmd, t(expires), t(0))
                .unwrap()
                .id
        };
        let (a, b) = (create(10), create(1000));
        c.dispatch(t(0), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![a]);
        c.expire_due(&store, t(10));
        c.dispatch(t(10), std::time::Instant::now());
        assert!(ids(&mailbox).is_empty(), "b waits for a's stray answer");
        c.on_event(&store, &answer(AnswerKey::InOrder, true), t(11));
        let state = |c: &Commands, id| c.get(&store, id).unwrap().unwrap().state;
        assert_eq!(state(&c, b), CommandState::Queued);
        c.expire_due(&store, t(10).add(STRAY_ANSWER_WAIT));
        c.dispatch(t(70), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![b]);
    }

    /// A JT/T 808 reply serial counts round on a connection of days: an answer naming a serial
    /// two open commands were sent with answers the newer, not the one left unanswered days ago.
    #[test]
    fn a_reply_serial_used_twice_answers_the_newer_command() {
        let (store, mut c, _mailbox, _guard) = connected();
        let t = Timestamp::from_secs;
        let dev = DeviceId::new("1");
        let mut create = || {
            let p = Protocol::Jt808;
            let cmd = Downlink::Locate;
            c.create(&store, dev.clone(), p, cmd, t(30 * 86_400), t(0))
                .unwrap()
                .id
        };
        let (old, new) = (create(), create());
        let key = AnswerKey::Reply {
            serial: 5,
            msg_id: 0x8201,
        };
        c.sent(&store, old, key, t(1));
        c.sent(&store, new, key, t(4 * 86_400));
        c.on_event(&store, &answer(key, true), t(4 * 86_400 + 2));
        let state = |c: &Commands, id| c.get(&store, id).unwrap().unwrap().state;
        assert_eq!(state(&c, new), CommandState::Answered);
        assert_eq!(state(&c, old), CommandState::Sent);
    }

    /// H02 answers name only the command's word. `S20,1` written twice (a reconnect) is
    /// answered twice; the second `V4,S20` must not close `S20,0` queued behind it, and a late
    /// answer to an `S20,1` that expired in flight must not either.
    #[test]
    fn a_second_answer_with_the_same_h02_word_closes_nothing_after_it() {
        let (store, mut c, mailbox, _guard) = connected();
        let t = Timestamp::from_secs;
        let dev = DeviceId::new("1");
        let raw = |c: &mut Commands, text: &str, expires: i64| {
            c.create(
                &store,
                dev.clone(),
                Protocol::H02,
                Downlink::Raw(text.into()),
                t(expires),
                t(0),
            )
            .unwrap()
            .id
        };
        let word = AnswerKey::word("S20");
        let state = |c: &Commands, id| c.get(&store, id).unwrap().unwrap().state;
        // Written, then written again after a reconnect.
        let (on, off) = (raw(&mut c, "S20,1", 1000), raw(&mut c, "S20,0", 1000));
        c.dispatch(t(0), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![on]);
        c.sent(&store, on, word, t(1));
        c.sent(&store, on, word, t(2));
        c.on_event(&store, &answer(word, true), t(3));
        assert_eq!(state(&c, on), CommandState::Answered);
        c.dispatch(t(3), std::time::Instant::now());
        assert!(
            ids(&mailbox).is_empty(),
            "the second write's answer may still come"
        );
        c.on_event(&store, &answer(word, true), t(4));
        assert_eq!(
            state(&c, off),
            CommandState::Queued,
            "the second answer closed nothing"
        );
        c.expire_due(&store, t(3).add(STRAY_ANSWER_WAIT));
        c.dispatch(t(70), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![off]);
        c.sent(&store, off, word, t(70));
        c.on_event(&store, &answer(word, true), t(71));
        assert_eq!(state(&c, off), CommandState::Answered);
        // Expired in flight: its late answer closes nothing either.
        let (short, next) = (raw(&mut c, "S20,1", 200), raw(&mut c, "S20,0", 1000));
        c.dispatch(t(150), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![short]);
        c.sent(&store, short, word, t(150));
        c.expire_due(&store, t(200));
        assert_eq!(state(&c, short), CommandState::Expired);
        c.dispatch(t(200), std::time::Instant::now());
        assert!(
            ids(&mailbox).is_empty(),
            "the next command waits for a stray answer"
        );
        c.on_event(&store, &answer(word, true), t(210));
        assert_eq!(state(&c, next), CommandState::Queued);
    }

    /// A cancelled command is never handed out again, and the next one goes in its place: at
    /// once when it was only queued, after the stray-answer wait when it was in flight on an
    /// in-order device (its late answer must not close the next one). Cancelled again, or a
    /// final one: nothing. After a restart it stays final.
    /// A command cancelled after it was handed to the connection is taken back from its
    /// mailbox, or, already taken, flagged so that the connection does not write it; so is a
    /// copy of a command answered meanwhile.
    #[test]
    fn a_command_cancelled_in_the_mailbox_is_never_written() {
        let (store, mut c, mailbox, _guard) = connected();
        let t = Timestamp::from_secs;
        let create = |c: &mut Commands| {
            let p = Protocol::Gt06;
            c.create(
                &store,
                DeviceId::new("1"),
                p,
                Downlink::Locate,
                t(1000),
                t(0),
            )
            .unwrap()
            .id
        };
        let (p, q) = (create(&mut c), create(&mut c));
        c.dispatch(t(0), std::time::Instant::now());
        assert!(c
            .cancel(&store, q, "cancelled by the operator", t(1))
            .is_some());
        let taken = mailbox.take();
        assert_eq!(taken.iter().map(|d| d.id).collect::<Vec<_>>(), vec![p]);
        // Taken by the connection, not yet written: its flag tells the connection to drop it.
        assert!(c
            .cancel(&store, p, "cancelled by the operator", t(2))
            .is_some());
        assert!(taken[0]
            .withdrawn
            .load(std::sync::atomic::Ordering::Acquire));
        // Answered while a copy waits to be written (handed again after a login): the copy is
        // dropped too.
        let r = create(&mut c);
        c.dispatch(t(3), std::time::Instant::now());
        let copy = mailbox.take();
        c.sent(&store, r, AnswerKey::ServerFlag(r as u32), t(4));
        c.on_event(&store, &answer(AnswerKey::ServerFlag(r as u32), true), t(5));
        assert_eq!(
            c.get(&store, r).unwrap().unwrap().state,
            CommandState::Answered
        );
        assert!(copy[0].withdrawn.load(std::sync::atomic::Ordering::Acquire));
    }

    #[test]
    fn a_cancelled_command_gives_its_place_to_the_next() {
        let (store, mut c, mailbox, _guard) = connected();
        let t = Timestamp::from_secs;
        let dev = DeviceId::new("1");
        let create = |c: &mut Commands| {
            let cmd = Downlink::Raw("setdigout 1".into());
            c.create(&store, dev.clone(), Protocol::Teltonika, cmd, t(1000), t(0))
                .unwrap()
                .id
        };
        let (a, b, z) = (create(&mut c), create(&mut c), create(&mut c));
        let state = |c: &Commands, id| c.get(&store, id).unwrap().unwrap().state;
        // Queued behind `a`: cancelled, it never goes out.
        let r = c
            .cancel(&store, b, "cancelled by the operator", t(1))
            .unwrap();
        assert_eq!(r.state, CommandState::Failed);
        assert_eq!(r.error.as_deref(), Some("cancelled by the operator"));
        assert!(c.cancel(&store, b, "again", t(1)).is_none());
        c.dispatch(t(1), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![a]);
        c.sent(&store, a, AnswerKey::InOrder, t(2));
        // In flight: its answer may still come, so `z` waits.
        assert!(c
            .cancel(&store, a, "cancelled by the operator", t(3))
            .is_some());
        c.dispatch(t(3), std::time::Instant::now());
        assert!(ids(&mailbox).is_empty(), "z waits for a's stray answer");
        c.on_event(&store, &answer(AnswerKey::InOrder, true), t(4));
        assert_eq!(
            state(&c, a),
            CommandState::Failed,
            "the late answer changes nothing"
        );
        assert_eq!(state(&c, z), CommandState::Queued);
        c.expire_due(&store, t(3).add(STRAY_ANSWER_WAIT));
        c.dispatch(t(70), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![z]);
        let c = Commands::load(&store).unwrap();
        assert_eq!(c.open_for(&dev), 1, "only z is open after a restart");
        assert_eq!(state(&c, b), CommandState::Failed);
    }

    /// A late in-order answer (Teltonika, H02 without a word) must not close the command sent
    /// after the one it answers.
    #[test]
    fn an_in_order_answer_after_an_expiry_or_a_resend_finds_nothing_to_close() {
        let (store, mut c, mailbox, _guard) = connected();
        let t = Timestamp::from_secs;
        let dev = DeviceId::new("1");
        let create = |c: &mut Commands, expires: i64, now: i64| {
            c.create(
                &store,
                dev.clone(),
                Protocol::Teltonika,
                Downlink::Locate,
                t(expires),
                t(now),
            )
            .unwrap()
            .id
        };
        let (a, b, z) = (
            create(&mut c, 10, 0),
            create(&mut c, 1000, 0),
            create(&mut c, 1000, 0),
        );
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![a]);
        c.sent(&store, a, AnswerKey::InOrder, t(1));
        // `a` expires in flight, unanswered: `b` waits.
        c.expire_due(&store, t(10));
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert!(
            ids(&mailbox).is_empty(),
            "the next command waits for a stray answer"
        );
        let wait_ends = t(10).add(STRAY_ANSWER_WAIT);
        assert_eq!(c.next_deadline(), Some(wait_ends));
        // `a`'s late answer closes nothing.
        c.on_event(&store, &answer(AnswerKey::InOrder, true), t(20));
        let state = |c: &Commands, id| c.get(&store, id).unwrap().unwrap().state;
        assert_eq!(state(&c, b), CommandState::Queued);
        c.expire_due(&store, wait_ends);
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![b], "then it goes");
        c.sent(&store, b, AnswerKey::InOrder, wait_ends);
        // A login on the same connection: `b` is written again, and each write may be answered.
        c.on_event(
            &store,
            &Event {
                kind: EventKind::Login,
                ..answer(AnswerKey::InOrder, true)
            },
            t(80),
        );
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![b]);
        c.sent(&store, b, AnswerKey::InOrder, t(80));
        c.on_event(&store, &answer(AnswerKey::InOrder, true), t(81));
        assert_eq!(state(&c, b), CommandState::Answered);
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert!(
            ids(&mailbox).is_empty(),
            "the second write's answer may still come"
        );
        c.on_event(&store, &answer(AnswerKey::InOrder, true), t(82));
        c.expire_due(&store, t(81).add(STRAY_ANSWER_WAIT));
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![z]);
        assert_eq!(
            state(&c, z),
            CommandState::Queued,
            "the stray answer closed nothing"
        );
        // An answered command written once leaves no wait.
        c.sent(&store, z, AnswerKey::InOrder, t(200));
        c.on_event(&store, &answer(AnswerKey::InOrder, true), t(201));
        assert_eq!(state(&c, z), CommandState::Answered);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_registration_sends_nothing_again_where_a_login_does() {
        let (store, mut c, mailbox, _guard) = connected();
        let t = Timestamp::from_secs;
        let dev = DeviceId::new("1");
        let a = c
            .create(
                &store,
                dev.clone(),
                Protocol::Jt808,
                Downlink::Locate,
                t(100),
                t(0),
            )
            .unwrap();
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![a.id]);
        c.sent(
            &store,
            a.id,
            AnswerKey::Reply {
                serial: 1,
                msg_id: 0x8201,
            },
            t(1),
        );
        let event = |kind| Event {
            kind,
            ..answer(AnswerKey::InOrder, true)
        };
        c.on_event(&store, &event(EventKind::Registered), t(2));
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert!(
            ids(&mailbox).is_empty(),
            "a registration is no new session here"
        );
        c.on_event(&store, &event(EventKind::Login), t(3));
        c.dispatch(Timestamp::from_secs(0), std::time::Instant::now());
        assert_eq!(ids(&mailbox), vec![a.id], "an authentication is");
    }
}
