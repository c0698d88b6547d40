//! Position history (CONTRACT.md "Position history"): every accepted fix of every device, kept in
//! fix-time order for `storage.history_retention`, each device and fix time once.
//!
//! Three stages, because the stages of a fix's life want different layouts:
//! - **log** (the history part of the commit journal, `store::journal`): the engine adds every
//!   fix of a group commit to that commit's record, so an acknowledged fix is in the history
//!   after any crash at the cost of one append per commit, not a write per fix (the engine
//!   thread is what bounds the acknowledgement rate);
//! - **recent** (sled): a background pass ([`History::drain_log`]) files the logged fixes by
//!   device and six-hour bucket, one key per device and bucket a pass (a run), so that a late
//!   batch lands in its time order and a busy fleet costs a write per device a pass, not one per
//!   fix; readers return a fix time present in two runs once;
//! - **blocks** ([`segments`], day files beside sled): a background pass ([`History::compact`])
//!   moves every fix of a sealed six-hour bucket into one delta-encoded block ([`codec`]),
//!   ~13 bytes a fix, and [`History::prune`] drops whole day files past the retention.
//!
//! Readers merge them (a fix present in two stages, after a crash between a block's index entry
//! and the removal of its recent keys, is returned once).

pub mod codec;
pub mod keys;
pub mod places;
pub mod segments;
pub mod track;

use crate::event::DeviceId;
use crate::fast_hash::FastMap;
use crate::store::journal::{Journal, Part};
use crate::store::{StoreError, StoredPosition};
use crate::time::Timestamp;
use segments::{Loc, Segments};
use std::ops::ControlFlow;
use std::sync::Arc;

/// One stored fix and what lienwatch concluded about it.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryFix {
    pub pos: StoredPosition,
    /// Dated more than `ingest.max_future` ahead of its arrival (CONTRACT.md "Trust at the
    /// edges"): kept, shown as `"suspect": "future"`, never a last-known position.
    pub suspect_future: bool,
}

impl HistoryFix {
    /// The position object of the track API: CONTRACT.md "Positions", plus `suspect`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.pos.to_json();
        if self.suspect_future {
            v["suspect"] = serde_json::json!("future");
        }
        v
    }
}

/// What one compaction or prune pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PassStats {
    pub fixes: u64,
    pub blocks: u64,
}

/// The history trees. Cheap to clone; safe to read from any thread.
#[derive(Clone)]
pub struct History {
    journal: Journal,
    /// Where the drain says how far it filed (`journal.history_filed`).
    meta: sled::Tree,
    recent: sled::Tree,
    blocks: Arc<Segments>,
    /// Blocks of the first layout, kept in sled: still read, and moved into [`Segments`] by
    /// [`History::compact`].
    legacy: sled::Tree,
    /// Numbers drain passes: sled's ids never repeat, across restarts too (log keys start again
    /// at 0 once the log is empty, and a run keyed by one could overwrite an older run).
    db: sled::Db,
    /// One drain at a time: the drain task and a sealing pass both drain, and two at once would
    /// file the same records twice and could write their marks out of order.
    draining: Arc<std::sync::Mutex<()>>,
}

/// The fixes of one commit, encoded as a log entry: `[len][device id][block length][block]`
/// per fix.
#[derive(Default)]
pub struct Staged {
    buf: Vec<u8>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Logged fixes grouped by device and six-hour bucket, in the order they were logged: what a
/// drain pass files as runs.
#[derive(Default)]
struct Runs {
    by_device: FastMap<Vec<u8>, Vec<(i64, Vec<HistoryFix>)>>,
    fixes: u64,
    /// The newest fix time among the trusted fixes (not `suspect_future`), in milliseconds.
    newest_trusted: Option<i64>,
}

impl Runs {
    /// Adds the fixes of one log entry.
    fn add(&mut self, entry: &[u8]) -> Result<(), StoreError> {
        each_logged(entry, None, |id, fix| {
            let bucket = keys::bucket_of(fix.pos.time);
            let buckets = match self.by_device.get_mut(id) {
                Some(b) => b,
                None => self.by_device.entry(id.to_vec()).or_default(),
            };
            if !fix.suspect_future {
                let t = fix.pos.time.millis();
                self.newest_trusted = Some(self.newest_trusted.map_or(t, |n| n.max(t)));
            }
            match buckets.iter_mut().find(|(b, _)| *b == bucket) {
                Some((_, fixes)) => fixes.push(fix),
                None => buckets.push((bucket, vec![fix])),
            }
            self.fixes += 1;
            Ok(())
        })
    }
}

/// Calls `f` with each `(device id, fix)` of a log entry, or only of device `only`: the others'
/// fixes are skipped undecoded, since a track query reads the whole log.
fn each_logged(
    entry: &[u8],
    only: Option<&[u8]>,
    mut f: impl FnMut(&[u8], HistoryFix) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut rest = entry;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if tail.len() < len + 2 {
            return Err(corrupt("log entry truncated"));
        }
        let (id, tail) = tail.split_at(len);
        let blen = u16::from_be_bytes([tail[0], tail[1]]) as usize;
        let tail = &tail[2..];
        if tail.len() < blen {
            return Err(corrupt("log entry truncated"));
        }
        let (block, tail) = tail.split_at(blen);
        rest = tail;
        if only.is_some_and(|o| o != id) {
            continue;
        }
        for fix in codec::decode(block).map_err(corrupt)? {
            f(id, fix)?;
        }
    }
    Ok(())
}

/// Calls `f` with the first key and the device prefix of each device in `tree`, in key order,
/// until it breaks; keys this module does not write are passed over.
fn each_device(
    tree: &sled::Tree,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(), StoreError> {
    let mut start: Vec<u8> = Vec::new();
    while let Some(kv) = tree.range(start.clone()..).next() {
        let (k, _) = kv?;
        let Some((prefix, _)) = keys::split(&k) else {
            start = keys::past(&k);
            continue;
        };
        if f(&k, prefix)?.is_break() {
            break;
        }
        start = keys::past(prefix);
    }
    Ok(())
}

/// How far the host clock may run ahead of the newest fix before pruning stops following it.
/// A fleet whose every tracker sends no fix for a day is rare (parked cars send heartbeats,
/// wireless units a fix a day, domain.md): then its fixes past the retention stay on disk,
/// hidden from reads, until fixes come again; a host clock set forward costs at most a day
/// of history.
pub const CLOCK_AHEAD_OF_FIXES: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The time retentions count back from at `now`, given the newest trusted fix: `now`, but no
/// later than [`CLOCK_AHEAD_OF_FIXES`] after that fix ([`History::clock_reference`]).
pub fn clock_reference(now: Timestamp, newest_fix: Option<Timestamp>) -> Timestamp {
    match newest_fix {
        Some(newest) => now.min(newest.add(CLOCK_AHEAD_OF_FIXES)),
        None => now,
    }
}

/// The `meta` key of [`History::newest_fix`].
const NEWEST_FIX: &[u8] = b"history_newest_fix";

fn corrupt(msg: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: "history",
        msg: msg.to_string(),
    }
}

impl History {
    /// Opens the history in `db` over the commit `journal`, with its sealed blocks in the folder
    /// `blocks_dir` (removed with the last clone when it is `temporary`). What a database
    /// written before the journal left in its `history_log` tree is filed first.
    pub(crate) fn open(
        db: &sled::Db,
        journal: Journal,
        blocks_dir: std::path::PathBuf,
        temporary: Option<tempfile::TempDir>,
    ) -> Result<History, StoreError> {
        let h = History {
            journal,
            meta: db.open_tree("meta")?,
            recent: db.open_tree("history_recent")?,
            blocks: Arc::new(Segments::open(blocks_dir, temporary)?),
            legacy: db.open_tree("history")?,
            db: db.clone(),
            draining: Arc::default(),
        };
        let log = db.open_tree("history_log")?;
        if !log.is_empty() {
            let mut runs = Runs::default();
            for kv in log.iter() {
                let (_, v) = kv?;
                runs.add(&v)?;
            }
            h.file(runs)?;
            db.flush()?;
            log.clear()?;
            db.flush()?;
        }
        Ok(h)
    }

    /// Adds a fix to the commit's log entry.
    pub fn stage(&self, staged: &mut Staged, device: &DeviceId, fix: &HistoryFix) {
        let id = device.as_str().as_bytes();
        let Ok(len) = u8::try_from(id.len()) else {
            return;
        };
        staged.buf.push(len);
        staged.buf.extend_from_slice(id);
        let at = staged.buf.len();
        staged.buf.extend_from_slice(&[0, 0]);
        codec::encode(std::slice::from_ref(fix), &mut staged.buf);
        let blen = (staged.buf.len() - at - 2) as u16;
        staged.buf[at..at + 2].copy_from_slice(&blen.to_be_bytes());
    }

    /// Adds the staged fixes to the commit under way (one journal record for all of a
    /// commit's fixes). Not durable until the store's next flush (the engine's commit).
    pub fn apply(&self, staged: Staged) -> Result<(), StoreError> {
        if !staged.is_empty() {
            self.journal.stage(Part::History, staged.buf);
        }
        Ok(())
    }

    /// Files the fixes of the oldest commits not filed yet (whole commits, until at least
    /// `max_fixes`) as runs: one recent key per device and bucket, keyed by its first fix and by
    /// this pass (a number no pass had before); then says how far it filed and flushes, and only
    /// then lets the journal drop them. A crash in between files them again under new keys;
    /// readers and sealing return each fix time once. Returns how many fixes it filed.
    ///
    /// One insert at a time, not one `sled::Batch`: sled applies a batch under a lock that
    /// stops every other writer, the engine's commit included.
    pub fn drain_log(&self, max_fixes: usize) -> Result<u64, StoreError> {
        let _one = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let entries = self.journal.unfiled(Part::History);
        let mut runs = Runs::default();
        let mut last = None;
        for e in &entries {
            if runs.fixes as usize >= max_fixes {
                break;
            }
            runs.add(&e.history)
                .map_err(|err| corrupt(format!("journal record {}: {err}", e.seq)))?;
            last = Some(e.seq);
        }
        let Some(last) = last else {
            return Ok(0);
        };
        let filed = runs.fixes;
        self.file(runs)?;
        self.journal
            .filed_into(Part::History, last, &self.db, &self.meta)?;
        Ok(filed)
    }

    /// Writes each device's and bucket's fixes as one run, and moves the newest trusted fix
    /// time forward (durable with the caller's flush, like the runs).
    fn file(&self, runs: Runs) -> Result<(), StoreError> {
        if runs.fixes == 0 {
            return Ok(());
        }
        if let Some(t) = runs.newest_trusted {
            if self.newest_fix()?.is_none_or(|n| n.millis() < t) {
                self.meta.insert(NEWEST_FIX, &t.to_be_bytes())?;
            }
        }
        let pass = self.db.generate_id()?;
        let mut prefix = Vec::with_capacity(48);
        let mut value = Vec::with_capacity(256);
        for (id, buckets) in runs.by_device {
            prefix.clear();
            prefix.push(id.len() as u8);
            prefix.extend_from_slice(&id);
            for (_, mut fixes) in buckets {
                // Of two copies of a fix time, the one logged first stays (see `sort_dedup`).
                sort_dedup(&mut fixes);
                value.clear();
                codec::encode(&fixes, &mut value);
                let first = fixes.first().map_or(0, |f| f.pos.time.millis());
                self.recent
                    .insert(keys::run(&prefix, first, pass), &value[..])?;
            }
        }
        Ok(())
    }

    /// Calls `f` for each of the device's fixes with `from <= time < to`, oldest first, until
    /// it breaks. Blocks are read a bucket at a time and merged with the recent fixes.
    pub fn for_each(
        &self,
        device: &str,
        from: Timestamp,
        to: Timestamp,
        mut f: impl FnMut(HistoryFix) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let Some(prefix) = keys::device_prefix(device) else {
            return Ok(());
        };
        if from >= to {
            return Ok(());
        }
        // Read in the order fixes move (log, recent, blocks), so a fix moved by a background
        // pass meanwhile is seen in the stage it left or the one it reached, never in neither.
        // The log holds the last moments of every device, the recent tree the unsealed
        // buckets and late arrivals: both are read whole for this device.
        let mut recent = Vec::new();
        let staged = self.journal.staged(Part::History);
        let logged = self.journal.unfiled(Part::History);
        for entry in logged.iter().map(|e| &e.history[..]).chain([&staged[..]]) {
            each_logged(entry, Some(&prefix[1..]), |_, fix| {
                if fix.pos.time >= from && fix.pos.time < to {
                    recent.push(fix);
                }
                Ok(())
            })?;
        }
        // A run keyed before `from` may hold later fixes of its bucket, never of the next one.
        let runs_from = keys::bucket_start(keys::bucket_of(from)).millis();
        for kv in self
            .recent
            .range(keys::with(&prefix, runs_from)..keys::with(&prefix, to.millis()))
        {
            let (_, v) = kv?;
            codec::decode_each(&v, |fix| {
                if fix.pos.time >= from && fix.pos.time < to {
                    recent.push(fix);
                }
                ControlFlow::Continue(())
            })
            .map_err(corrupt)?;
        }
        let lo = keys::with(&prefix, keys::bucket_of(from));
        let hi = keys::with(
            &prefix,
            keys::bucket_of(to.add_millis(-1)).saturating_add(1),
        );
        for kv in self.legacy.range(lo.clone()..hi.clone()) {
            let (_, v) = kv?;
            codec::decode_each(&v, |fix| {
                if fix.pos.time >= from && fix.pos.time < to {
                    recent.push(fix);
                }
                ControlFlow::Continue(())
            })
            .map_err(corrupt)?;
        }
        recent.sort_by_key(|f| f.pos.time);
        let mut recent = recent.into_iter().peekable();
        // The merge yields fixes in time order, copies of one time next to each other: each
        // is held until the next time comes, so that the copy kept is the one `keep_later`
        // picks, as when the copies are sealed together.
        let mut last: Option<HistoryFix> = None;
        let mut stopped = false;
        let mut emit = |fix: HistoryFix, last: &mut Option<HistoryFix>| -> ControlFlow<()> {
            match last {
                Some(held) if fix.pos.time <= held.pos.time => {
                    if fix.pos.time == held.pos.time && keep_later(held, &fix) {
                        *held = fix;
                    }
                    ControlFlow::Continue(())
                }
                _ => match last.replace(fix) {
                    Some(done) => f(done),
                    None => ControlFlow::Continue(()),
                },
            }
        };
        let (first, last_bucket) = (keys::bucket_of(from), keys::bucket_of(to.add_millis(-1)));
        self.blocks.range(&prefix, first, last_bucket, |v| {
            let mut flow = ControlFlow::Continue(());
            codec::decode_each(v, |fix| {
                if fix.pos.time < from || fix.pos.time >= to {
                    return ControlFlow::Continue(());
                }
                while let Some(r) = recent.next_if(|r| r.pos.time < fix.pos.time) {
                    if emit(r, &mut last).is_break() {
                        flow = ControlFlow::Break(());
                        return flow;
                    }
                }
                flow = emit(fix, &mut last);
                flow
            })
            .map_err(corrupt)?;
            if flow.is_break() {
                stopped = true;
            }
            Ok(flow)
        })?;
        if !stopped {
            for r in recent {
                if emit(r, &mut last).is_break() {
                    stopped = true;
                    break;
                }
            }
        }
        if !stopped {
            if let Some(held) = last {
                let _ = f(held);
            }
        }
        Ok(())
    }

    /// Up to `limit` fixes with `from <= time < to`, oldest first.
    pub fn track(
        &self,
        device: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<HistoryFix>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.for_each(device, from, to, |fix| {
            out.push(fix);
            if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(out)
    }

    /// Moves the recent fixes of buckets that ended before `sealed_before` into blocks, at most
    /// `max_fixes` of them per call (so a pass never holds much in memory); blocks of the first
    /// layout still in sled move first. Blocks are appended and synced before the index points
    /// at them, and the index is written before the recent keys are removed: a crash anywhere
    /// leaves a fix in one stage or two, which readers return once and the next pass merges.
    pub fn compact(
        &self,
        sealed_before: Timestamp,
        max_fixes: usize,
    ) -> Result<PassStats, StoreError> {
        self.compact_window(sealed_before, Timestamp::from_millis(i64::MAX), max_fixes)
    }

    /// [`History::compact`], and also the buckets from `future_from` on: a tracker whose clock
    /// runs months ahead files a run into such a bucket at every drain pass, and with no bucket
    /// to seal until real time gets there, its keys would pile up for months. Those buckets are
    /// sealed (and sealed again with what comes later) like any late bucket.
    pub fn compact_window(
        &self,
        sealed_before: Timestamp,
        future_from: Timestamp,
        max_fixes: usize,
    ) -> Result<PassStats, StoreError> {
        let mut pending = Pending::default();
        let mut stats = self.migrate_legacy(max_fixes, &mut pending)?;
        // Visible before any bucket is sealed again: a seal merges with the indexed block.
        self.commit(std::mem::take(&mut pending))?;
        if stats.fixes as usize >= max_fixes {
            return Ok(stats);
        }
        let sealed = keys::bucket_of(sealed_before);
        let future = keys::bucket_of(future_from).max(sealed);
        let mut group: Vec<HistoryFix> = Vec::new();
        let mut group_key: Option<(Vec<u8>, i64)> = None;
        let mut iter = self.recent.iter();
        while let Some(kv) = iter.next() {
            let (k, v) = kv?;
            let Some((prefix, t)) = keys::split(&k) else {
                // Not a key this module writes: drop it rather than trip on it forever.
                self.recent.remove(&k)?;
                continue;
            };
            let bucket = keys::bucket_of(Timestamp::from_millis(t));
            if bucket >= sealed && bucket < future {
                // This device's current buckets: on to its future ones, if any (then the next
                // device).
                let from = keys::bucket_start(future).millis();
                iter = self.recent.range(keys::with(prefix, from)..);
                continue;
            }
            if group_key
                .as_ref()
                .is_some_and(|(p, b)| p.as_slice() != prefix || *b != bucket)
            {
                if let Some((p, b)) = group_key.take() {
                    stats.fixes += self.seal(&p, b, std::mem::take(&mut group), &mut pending)?;
                    stats.blocks += 1;
                }
                if stats.fixes as usize >= max_fixes {
                    break;
                }
                if pending.fixes >= COMMIT_EVERY {
                    self.commit(std::mem::take(&mut pending))?;
                }
            }
            if group_key.is_none() {
                group_key = Some((prefix.to_vec(), bucket));
            }
            codec::decode_each(&v, |fix| {
                group.push(fix);
                ControlFlow::Continue(())
            })
            .map_err(corrupt)?;
            pending.recent.remove(k);
        }
        if let Some((p, b)) = group_key {
            stats.fixes += self.seal(&p, b, group, &mut pending)?;
            stats.blocks += 1;
        }
        self.commit(pending)?;
        Ok(stats)
    }

    /// Moves blocks of the first layout (sled values) into the day files.
    fn migrate_legacy(
        &self,
        max_fixes: usize,
        pending: &mut Pending,
    ) -> Result<PassStats, StoreError> {
        let mut stats = PassStats::default();
        for kv in self.legacy.iter() {
            let (k, v) = kv?;
            pending.legacy.remove(k.clone());
            let Some((prefix, bucket)) = keys::split(&k) else {
                continue;
            };
            let fixes = codec::decode(&v).map_err(corrupt)?;
            stats.fixes += fixes.len() as u64;
            stats.blocks += 1;
            self.seal(prefix, bucket, fixes, pending)?;
            if stats.fixes as usize >= max_fixes {
                break;
            }
        }
        Ok(stats)
    }

    /// Merges `fixes` into their bucket's block and appends the result to the day files;
    /// returns how many fix times `fixes` held (runs filed twice after a crash repeat some).
    fn seal(
        &self,
        prefix: &[u8],
        bucket: i64,
        mut fixes: Vec<HistoryFix>,
        pending: &mut Pending,
    ) -> Result<u64, StoreError> {
        sort_dedup(&mut fixes);
        let moved = fixes.len() as u64;
        // A block that fails its check is lost whatever this pass does: sealing over it keeps
        // the new fixes readable, and the passes going for every other device and bucket
        // (stopping here, each pass would stop at it again).
        let old = match self.blocks.get(prefix, bucket) {
            Err(StoreError::Corrupt { msg, .. }) => Err(msg),
            other => other?
                .map(|b| codec::decode(&b).map_err(|e| e.to_string()))
                .transpose(),
        };
        match old {
            Ok(Some(mut merged)) => {
                merged.append(&mut fixes);
                fixes = merged;
            }
            Ok(None) => {}
            Err(msg) => {
                metrics::counter!("lienwatch_history_blocks_lost_total").increment(1);
                tracing::error!(bucket, error = %msg, "a sealed history block failed its check: its fixes are lost, and the bucket is sealed again with the new ones");
            }
        }
        // A fix already in the block stays ahead of a re-sent copy of itself.
        sort_dedup(&mut fixes);
        let loc = self.blocks.append(prefix, bucket, &codec::to_vec(&fixes))?;
        pending.fixes += fixes.len();
        pending.index.push((prefix.to_vec(), bucket, loc));
        Ok(moved)
    }

    /// Makes a slice of sealed blocks durable and visible, then forgets their earlier copies.
    fn commit(&self, pending: Pending) -> Result<(), StoreError> {
        if pending.index.is_empty() {
            return Ok(());
        }
        self.blocks.sync()?;
        self.blocks.index(&pending.index)?;
        self.recent.apply_batch(pending.recent)?;
        self.legacy.apply_batch(pending.legacy)?;
        Ok(())
    }

    /// The newest fix time the history has filed, of the fixes not dated beyond
    /// `ingest.max_future`: the devices' clock, which a host clock set wrong does not move.
    pub fn newest_fix(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.meta.get(NEWEST_FIX)?.and_then(|v| {
            let b: [u8; 8] = v.as_ref().try_into().ok()?;
            Some(Timestamp::from_millis(i64::from_be_bytes(b)))
        }))
    }

    /// The time retentions count back from at `now`: `now`, but no later than a day after the
    /// newest filed fix ([`CLOCK_AHEAD_OF_FIXES`]). A host clock set a year forward would
    /// otherwise delete the whole history, and every finished alert, at the next pass; the
    /// devices' own clocks say how much time has really passed. The track hides fixes past the
    /// retention by the host clock (`track`), so a clock set back right brings them back.
    pub fn clock_reference(&self, now: Timestamp) -> Result<Timestamp, StoreError> {
        Ok(clock_reference(now, self.newest_fix()?))
    }

    /// Removes every fix older than `cutoff`: whole blocks (index entries, then whole day
    /// files), and recent keys. At most `max_keys` keys per call; returns how many went.
    pub fn prune(&self, cutoff: Timestamp, max_keys: usize) -> Result<PassStats, StoreError> {
        let mut stats = PassStats::default();
        // A block goes when its whole bucket is older than the cutoff; readers filter the
        // partial bucket at the edge.
        let (entries, _files) = self.blocks.prune(keys::bucket_of(cutoff), max_keys)?;
        stats.blocks = entries;
        if entries >= max_keys as u64 {
            return Ok(stats);
        }
        // Blocks of the first layout go by whole buckets too; recent runs to the fix.
        for (tree, legacy) in [(&self.legacy, true), (&self.recent, false)] {
            each_device(tree, |first, prefix| {
                let budget = (max_keys as u64).saturating_sub(stats.fixes + stats.blocks);
                if budget == 0 {
                    return Ok(ControlFlow::Break(()));
                }
                if legacy {
                    stats.blocks += self.prune_legacy(first, prefix, cutoff, budget)?;
                } else {
                    stats.fixes += self.prune_runs(first, prefix, cutoff, budget)?;
                }
                Ok(ControlFlow::Continue(()))
            })?;
        }
        Ok(stats)
    }

    /// Drops a device's blocks of the first layout whose bucket ended before `cutoff`'s, from
    /// key `first` on, at most `budget` of them; returns how many went.
    fn prune_legacy(
        &self,
        first: &[u8],
        prefix: &[u8],
        cutoff: Timestamp,
        budget: u64,
    ) -> Result<u64, StoreError> {
        let end = keys::with(prefix, keys::bucket_of(cutoff));
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.legacy.range(first.to_vec()..end) {
            let (old, _) = kv?;
            batch.remove(old);
            n += 1;
            if n >= budget {
                break;
            }
        }
        self.legacy.apply_batch(batch)?;
        Ok(n)
    }

    /// Drops a device's recent fixes older than `cutoff`, from key `first` on: a run wholly
    /// older goes, a run that straddles the cutoff is rewritten with its newer fixes only (by
    /// compare-and-swap: a run that changed since it was read is left for the next prune).
    /// Returns the fixes dropped, stopping once `budget` is spent.
    fn prune_runs(
        &self,
        first: &[u8],
        prefix: &[u8],
        cutoff: Timestamp,
        budget: u64,
    ) -> Result<u64, StoreError> {
        let mut batch = sled::Batch::default();
        let mut dropped = 0;
        let mut kept = Vec::new();
        for kv in self
            .recent
            .range(first.to_vec()..keys::with(prefix, cutoff.millis()))
        {
            let (k, v) = kv?;
            kept.clear();
            let mut old = 0;
            codec::decode_each(&v, |fix| {
                if fix.pos.time < cutoff {
                    old += 1;
                } else {
                    kept.push(fix);
                }
                ControlFlow::Continue(())
            })
            .map_err(corrupt)?;
            if kept.is_empty() {
                batch.remove(k);
            } else if old > 0
                && self
                    .recent
                    .compare_and_swap(&k, Some(&v), Some(codec::to_vec(&kept)))?
                    .is_err()
            {
                continue;
            }
            dropped += old;
            if dropped >= budget {
                break;
            }
        }
        self.recent.apply_batch(batch)?;
        Ok(dropped)
    }

    /// Bytes of fixes kept (keys and values; blocks with their index entries), before the
    /// stores' own overhead: for benchmarks and the size figures in the README.
    pub fn payload_bytes(&self) -> (u64, u64) {
        let sum = |t: &sled::Tree| {
            t.iter()
                .flatten()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>()
        };
        (
            sum(&self.recent),
            sum(&self.legacy) + self.blocks.payload_bytes(),
        )
    }

    /// Bytes the day files of sealed blocks take on disk (their index database aside).
    pub fn blocks_disk_bytes(&self) -> u64 {
        self.blocks.disk_bytes()
    }
}

/// Blocks sealed into the day files but not yet visible, and the keys their fixes leave.
#[derive(Default)]
struct Pending {
    index: Vec<(Vec<u8>, i64, Loc)>,
    recent: sled::Batch,
    legacy: sled::Batch,
    fixes: usize,
}

/// Fixes sealed between two syncs of the day files: an fsync per few thousand blocks, and a
/// bounded batch of removals in memory.
const COMMIT_EVERY: usize = 50_000;

/// Of two copies of one fix time, whether the later one is kept instead of the first: only
/// when the first was suspect and the later is not (a fix first seen dated in the future, sent
/// again once its time had come, is the trusted fix the device record holds).
fn keep_later(kept: &HistoryFix, later: &HistoryFix) -> bool {
    kept.suspect_future && !later.suspect_future
}

/// Sorts fixes by time and keeps one copy of each time: the first, unless [`keep_later`].
fn sort_dedup(fixes: &mut Vec<HistoryFix>) {
    // Stable, so that "first" is the order the copies came in.
    fixes.sort_by_key(|f| f.pos.time);
    fixes.dedup_by(|later, kept| {
        if later.pos.time != kept.pos.time {
            return false;
        }
        if keep_later(kept, later) {
            std::mem::swap(kept, later);
        }
        true
    });
}

/// What tests of other modules share: a fix, and fixes logged as the engine's commit logs them.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A valid fix at `t` seconds, a little further north each second.
    pub(crate) fn fix(t: i64) -> HistoryFix {
        HistoryFix {
            pos: StoredPosition {
                time: Timestamp::from_secs(t),
                lat: 22.5 + t as f64 * 1e-5,
                lon: 114.0,
                valid: true,
                speed_kmh: 10.0,
                course: 90,
                satellites: Some(8),
                altitude_m: None,
                received_at: Timestamp::from_secs(t + 1),
                cell: None,
                wifi: None,
            },
            suspect_future: false,
        }
    }

    /// Logs fixes of `device` at `times` (seconds) and makes them durable, as a commit does;
    /// the drain has not filed them yet.
    pub(crate) fn log_fixes(store: &crate::store::Store, device: &str, times: &[i64]) {
        let mut staged = Staged::default();
        for &t in times {
            store
                .history()
                .stage(&mut staged, &DeviceId::new(device), &fix(t));
        }
        store.history().apply(staged).unwrap();
        store.flush().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::testing::fix;
    use super::*;

    fn history() -> History {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::temporary().unwrap();
        History::open(&db, journal, dir.path().to_path_buf(), Some(dir)).unwrap()
    }

    /// The history in `db`, its journal and blocks in `dir`, as a restart opens them.
    fn open_at(db: &sled::Db, dir: &std::path::Path) -> History {
        let meta = db.open_tree("meta").unwrap();
        let [_, filed] = crate::store::journal::filed_through(&meta).unwrap();
        // Only the history part is written here: the devices part stands where it does.
        let journal = Journal::open(&dir.join("journal"), [filed, filed]).unwrap();
        History::open(db, journal, dir.join("h"), None).unwrap()
    }

    /// One group commit of `b`.
    fn commit(h: &History, b: Staged) {
        h.apply(b).unwrap();
        h.journal.commit().unwrap();
    }

    fn write(h: &History, dev: &str, times: &[i64]) {
        let mut b = Staged::default();
        for &t in times {
            h.stage(&mut b, &DeviceId::new(dev), &fix(t));
        }
        commit(h, b);
        h.drain_log(usize::MAX).unwrap();
    }

    #[test]
    fn logged_fixes_are_read_before_and_after_the_drain() {
        let h = history();
        let mut b = Staged::default();
        for t in [30, 10, 20] {
            h.stage(&mut b, &DeviceId::new("5"), &fix(t));
        }
        h.stage(&mut b, &DeviceId::new("6"), &fix(15));
        commit(&h, b);
        assert_eq!(times(&h, "5", 0, 100), vec![10, 20, 30]);
        assert_eq!(h.drain_log(10).unwrap(), 4);
        assert_eq!(times(&h, "5", 0, 100), vec![10, 20, 30]);
        assert_eq!(times(&h, "6", 0, 100), vec![15]);
        assert_eq!(h.drain_log(10).unwrap(), 0);
    }

    #[test]
    fn a_drain_pass_files_one_run_per_device_and_bucket() {
        let h = history();
        let bucket = keys::BUCKET_MS / 1000;
        for batch in [[5, 7, 9], [6, bucket + 1, 8]] {
            let mut b = Staged::default();
            for t in batch {
                h.stage(&mut b, &DeviceId::new("5"), &fix(t));
                h.stage(&mut b, &DeviceId::new("6"), &fix(t));
            }
            commit(&h, b);
        }
        assert_eq!(h.drain_log(usize::MAX).unwrap(), 12);
        // Two devices, two buckets each: four keys, each a run in time order.
        assert_eq!(h.recent.len(), 4);
        assert_eq!(
            times(&h, "5", 0, 2 * bucket),
            vec![5, 6, 7, 8, 9, bucket + 1]
        );
        // A range that starts inside a run reads the run's later fixes only.
        assert_eq!(times(&h, "6", 7, bucket + 2), vec![7, 8, 9, bucket + 1]);
        // A pass of at most one fix still takes a whole log entry.
        let mut b = Staged::default();
        for t in [3, 4] {
            h.stage(&mut b, &DeviceId::new("5"), &fix(t));
        }
        commit(&h, b);
        assert_eq!(h.drain_log(1).unwrap(), 2);
        assert_eq!(times(&h, "5", 0, 10), vec![3, 4, 5, 6, 7, 8, 9]);
    }

    /// A 30-day places query over `dev` alone, last heard at `last_heard` (200 m, 20 minutes,
    /// UTC, 180 days of history kept).
    fn places_job(dev: &DeviceId, last_heard: Timestamp) -> crate::engine::places::PlacesJob {
        crate::engine::places::PlacesJob {
            vehicle_id: "V".into(),
            days: 30,
            devices: vec![dev.clone()],
            params: crate::places::Params::from_rules(
                200.0,
                std::time::Duration::from_secs(1200),
                "UTC",
            )
            .unwrap(),
            timezone: "UTC".into(),
            retention: std::time::Duration::from_secs(180 * 86_400),
            last_heard: [(dev.clone(), last_heard)].into(),
            bound_since: Default::default(),
            newest_fix: Default::default(),
            fix_is_last_word: Default::default(),
        }
    }

    /// A tracker cut while driving: its last fix is no stay, however long the silence after it;
    /// a device's last stay counts up to when it was last heard from.
    #[test]
    fn places_count_a_devices_last_stay_up_to_its_last_word() {
        let h = history();
        let dev = DeviceId::new("1");
        let mut b = Staged::default();
        // An hour parked (a fix a minute), then 10 minutes driving north (1.1 km a minute),
        // then nothing.
        for t in (0..=3600).step_by(60) {
            let mut f = fix(t);
            f.pos.lat = 22.5;
            h.stage(&mut b, &dev, &f);
        }
        for i in 1..=10 {
            let mut f = fix(3600 + i * 60);
            f.pos.lat = 22.5 + i as f64 * 0.01;
            h.stage(&mut b, &dev, &f);
        }
        commit(&h, b);
        let now = Timestamp::from_secs(10 * 86_400);
        let mut job = places_job(&dev, Timestamp::from_secs(4201));
        let r = places::run(&h, &job, now).unwrap();
        assert_eq!(r.places.places.len(), 1, "{:?}", r.places);
        assert!((r.places.places[0].lat - 22.5).abs() < 1e-4);
        assert!((r.places.places[0].dwell_hours - 1.0).abs() < 0.05);
        let last = r.places.last_stop.unwrap();
        assert_eq!(last.since, Timestamp::from_secs(0));
        // Without its last word, the fix on the road would have "stayed" there for 10 days.
        job.last_heard.clear();
        let r = places::run(&h, &job, now).unwrap();
        assert_eq!(r.places.places.len(), 2);
        assert!((r.places.places[0].lat - 22.6).abs() < 1e-4);
        assert!(r.places.places[0].dwell_hours > 200.0);
    }

    /// A car parked since before the window, its tracker sending heartbeats only: no fix in
    /// the window, yet it stands where its newest fix put it, from the window's start until it
    /// was last heard. Without that fix, no place and no last stop.
    #[test]
    fn a_car_parked_since_before_the_window_is_its_last_stop() {
        let h = history();
        let dev = DeviceId::new("1");
        let mut b = Staged::default();
        let mut f = fix(3600);
        f.pos.lat = 22.5;
        h.stage(&mut b, &dev, &f);
        commit(&h, b);
        let day = 86_400;
        let now = Timestamp::from_secs(40 * day);
        let mut job = places_job(&dev, Timestamp::from_secs(40 * day - 60));
        job.newest_fix = [(dev.clone(), f.pos)].into();
        job.fix_is_last_word = [dev.clone()].into();
        let r = places::run(&h, &job, now).unwrap();
        assert_eq!(r.places.places.len(), 1, "{:?}", r.places);
        assert!((r.places.places[0].lat - 22.5).abs() < 1e-4);
        let last = r.places.last_stop.expect("the last stop");
        assert_eq!(last.since, Timestamp::from_secs(10 * day));
        assert!((last.dwell_hours - 30.0 * 24.0).abs() < 0.1, "{last:?}");
        let none = |job: &crate::engine::places::PlacesJob| {
            places::run(&h, job, now)
                .unwrap()
                .places
                .last_stop
                .is_none()
        };
        // Not when an LBS report or a fix without position came after it (shielded, jammed).
        let mut other = job.clone();
        other.fix_is_last_word.clear();
        assert!(none(&other));
        // Not when another tracker of the car has a fix in the window: the car moved.
        let mut other = job.clone();
        let dev2 = DeviceId::new("2");
        other.devices.push(dev2.clone());
        let mut moved = f.pos;
        moved.time = Timestamp::from_secs(35 * day);
        other.newest_fix.insert(dev2, moved);
        assert!(none(&other));
        // Not a fix older than the history kept.
        let mut other = job.clone();
        other.retention = std::time::Duration::from_secs(35 * 86_400);
        assert!(none(&other));
        // A fix from before the tracker was bound to this car is another car's.
        job.bound_since = [(dev.clone(), Timestamp::from_secs(2 * day))].into();
        assert!(none(&job));
    }

    /// A tracker whose clock runs a year ahead: each drain pass files a run into a bucket a
    /// year away. Sealing takes those buckets too (again with what comes later), so its keys
    /// do not pile up until real time gets there; current buckets stay open.
    #[test]
    fn buckets_far_in_the_future_are_sealed_at_every_pass() {
        let h = history();
        let now = 1_000 * 86_400;
        let year = 365 * 86_400;
        for pass in 0..5 {
            write(&h, "ahead", &[now + year + pass * 10]);
            write(&h, "right", &[now + pass * 10]);
        }
        assert_eq!(h.recent.len(), 10, "a run per pass and device");
        let at = |s: i64| Timestamp::from_secs(s);
        let s = h
            .compact_window(at(now - 3600), at(now + 86_400), 1_000)
            .unwrap();
        assert_eq!(s.fixes, 5);
        assert_eq!(h.recent.len(), 5, "the current bucket stays open");
        assert_eq!(times(&h, "ahead", now + year, now + year + 100).len(), 5);
        // Later passes merge into the sealed block.
        write(&h, "ahead", &[now + year + 60]);
        h.compact_window(at(now - 3600), at(now + 86_400), 1_000)
            .unwrap();
        assert_eq!(times(&h, "ahead", now + year, now + year + 100).len(), 6);
        assert_eq!(times(&h, "right", now, now + 100).len(), 5);
        assert_eq!(h.recent.len(), 5);
    }

    /// The drain task and a sealing pass drain at once: each record is filed once.
    #[test]
    fn two_drains_at_once_file_each_record_once() {
        let h = history();
        for c in 0..200 {
            let mut b = Staged::default();
            for i in 0..10 {
                h.stage(&mut b, &DeviceId::new(&format!("{i}")), &fix(c));
            }
            commit(&h, b);
        }
        let filed: u64 = std::thread::scope(|s| {
            let passes: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0;
                        loop {
                            let got = h.drain_log(10).unwrap();
                            if got == 0 {
                                return n;
                            }
                            n += got;
                        }
                    })
                })
                .collect();
            passes.into_iter().map(|p| p.join().unwrap()).sum()
        });
        assert_eq!(filed, 2000);
    }

    #[test]
    fn a_run_filed_after_a_restart_never_replaces_an_earlier_one() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let h = open_at(&db, dir.path());
        write(&h, "1", &[10, 20, 30]);
        drop(h);
        // Reopened with the log empty. The device re-sends 10.
        let again = open_at(&db, dir.path());
        write(&again, "1", &[10]);
        assert_eq!(times(&again, "1", 0, 100), vec![10, 20, 30]);
        assert_eq!(again.recent.len(), 2);
    }

    #[test]
    fn prune_rewrites_a_run_that_straddles_the_cutoff() {
        let h = history();
        write(&h, "1", &[10, 20, 30]);
        let s = h.prune(Timestamp::from_secs(25), 1_000).unwrap();
        assert_eq!(s.fixes, 2);
        assert_eq!(times(&h, "1", 0, 100), vec![30]);
        assert_eq!(h.recent.len(), 1);
        assert_eq!(h.prune(Timestamp::from_secs(25), 1_000).unwrap().fixes, 0);
        assert_eq!(h.prune(Timestamp::from_secs(31), 1_000).unwrap().fixes, 1);
        assert!(h.recent.is_empty());
    }

    fn times(h: &History, dev: &str, from: i64, to: i64) -> Vec<i64> {
        h.track(
            dev,
            Timestamp::from_secs(from),
            Timestamp::from_secs(to),
            1_000_000,
        )
        .unwrap()
        .iter()
        .map(|f| f.pos.time.secs())
        .collect()
    }

    #[test]
    fn fixes_come_back_in_time_order_once_across_compaction() {
        let h = history();
        let day = 86_400;
        write(&h, "1", &[10, day + 5, 20, 2 * day]);
        write(&h, "2", &[15]);
        write(&h, "1", &[20]); // re-sent: kept once
        assert_eq!(times(&h, "1", 0, 3 * day), vec![10, 20, day + 5, 2 * day]);
        let s = h
            .compact(Timestamp::from_secs(day + 6 * 3600), 1_000_000)
            .unwrap();
        assert_eq!(s.fixes, 4); // device 1: 10, 20; device 2: 15; ... day+5 is sealed too
                                // A late fix into a sealed bucket, and a copy of one already in a block.
        write(&h, "1", &[12, 10]);
        assert_eq!(
            times(&h, "1", 0, 3 * day),
            vec![10, 12, 20, day + 5, 2 * day]
        );
        assert_eq!(times(&h, "1", 11, day + 5), vec![12, 20]);
        h.compact(Timestamp::from_secs(day + 6 * 3600), 1_000_000)
            .unwrap();
        assert_eq!(
            times(&h, "1", 0, 3 * day),
            vec![10, 12, 20, day + 5, 2 * day]
        );
        assert_eq!(times(&h, "2", 0, 3 * day), vec![15]);
        assert_eq!(
            h.track(
                "1",
                Timestamp::from_secs(0),
                Timestamp::from_secs(3 * day),
                2
            )
            .unwrap()
            .len(),
            2
        );
    }

    /// A sealed block that fails its check loses its own fixes only: the next pass seals the
    /// bucket again with the new ones, and every other device's fixes are sealed.
    #[test]
    fn a_corrupt_block_stops_no_seal() {
        let h = history();
        write(&h, "1", &[10]);
        write(&h, "2", &[15]);
        h.compact(Timestamp::from_secs(6 * 3600), 1_000_000)
            .unwrap();
        let p = keys::device_prefix("1").unwrap();
        let bad = segments::Loc {
            offset: 0,
            len: u32::MAX,
        };
        h.blocks.index(&[(p, 0, bad)]).unwrap();
        write(&h, "1", &[20]);
        write(&h, "2", &[16]);
        h.compact(Timestamp::from_secs(6 * 3600), 1_000_000)
            .unwrap();
        assert_eq!(times(&h, "1", 0, 100), vec![20]);
        assert_eq!(times(&h, "2", 0, 100), vec![15, 16]);
        assert!(h.recent.is_empty(), "everything sealed");
    }

    /// A fix first seen dated in the future (suspect) and sent again once its time had come is
    /// kept once, as the trusted copy, at every stage: in the log, filed, and sealed into a block
    /// that held the suspect copy. A suspect copy after a trusted one changes nothing.
    #[test]
    fn a_trusted_copy_of_a_suspect_fix_is_the_one_kept() {
        let h = history();
        let day = 86_400;
        let suspect = |t| HistoryFix {
            suspect_future: true,
            ..fix(t)
        };
        let stage = |h: &History, f: HistoryFix| {
            let mut b = Staged::default();
            h.stage(&mut b, &DeviceId::new("3"), &f);
            commit(h, b);
        };
        let flags = |h: &History| -> Vec<(i64, bool)> {
            h.track(
                "3",
                Timestamp::from_secs(0),
                Timestamp::from_secs(3 * day),
                100,
            )
            .unwrap()
            .iter()
            .map(|f| (f.pos.time.secs(), f.suspect_future))
            .collect()
        };
        // Both copies in the log, then filed.
        stage(&h, suspect(10));
        stage(&h, fix(10));
        stage(&h, fix(20));
        stage(&h, suspect(20));
        assert_eq!(flags(&h), vec![(10, false), (20, false)]);
        h.drain_log(usize::MAX).unwrap();
        assert_eq!(flags(&h), vec![(10, false), (20, false)]);
        // The suspect copy sealed into a block; the trusted one arrives after.
        stage(&h, suspect(30));
        h.drain_log(usize::MAX).unwrap();
        h.compact(Timestamp::from_secs(day + 6 * 3600), 1_000_000)
            .unwrap();
        assert_eq!(flags(&h), vec![(10, false), (20, false), (30, true)]);
        stage(&h, fix(30));
        assert_eq!(flags(&h), vec![(10, false), (20, false), (30, false)]);
        h.drain_log(usize::MAX).unwrap();
        assert_eq!(flags(&h), vec![(10, false), (20, false), (30, false)]);
        h.compact(Timestamp::from_secs(day + 6 * 3600), 1_000_000)
            .unwrap();
        assert_eq!(flags(&h), vec![(10, false), (20, false), (30, false)]);
        // The track's limit still counts whole fixes.
        assert_eq!(
            h.track("3", Timestamp::from_secs(0), Timestamp::from_secs(day), 2)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_crash_between_block_and_removal_still_reads_each_fix_once() {
        let h = history();
        write(&h, "7", &[100, 200]);
        h.compact(Timestamp::from_secs(86_400), 100).unwrap();
        // As if the removal had not happened: the same fixes in recent again.
        write(&h, "7", &[100, 200, 300]);
        assert_eq!(times(&h, "7", 0, 1000), vec![100, 200, 300]);
    }

    #[test]
    fn prune_drops_what_is_older_than_the_cutoff() {
        let h = history();
        let day = 86_400;
        write(&h, "1", &[10, day, 3 * day]);
        write(&h, "2", &[20, 3 * day + 1]);
        h.compact(Timestamp::from_secs(2 * day), 1_000_000).unwrap();
        write(&h, "1", &[30]); // late, still recent
        let s = h.prune(Timestamp::from_secs(2 * day), 1_000_000).unwrap();
        assert_eq!((s.blocks, s.fixes), (3, 1));
        assert_eq!(times(&h, "1", 0, 4 * day), vec![3 * day]);
        assert_eq!(times(&h, "2", 0, 4 * day), vec![3 * day + 1]);
    }

    /// A host clock set a year forward must not prune the history: the cutoff counts back from
    /// a day after the newest filed fix when that is earlier. A fix dated in the future
    /// (suspect) does not move it, and it outlives a restart.
    #[test]
    fn a_host_clock_set_forward_does_not_prune_the_history() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400;
        let retention = std::time::Duration::from_secs(30 * day as u64);
        {
            let h = open_at(&db, dir.path());
            assert_eq!(h.newest_fix().unwrap(), None);
            assert_eq!(
                h.clock_reference(Timestamp::from_secs(100 * day))
                    .unwrap()
                    .sub(retention),
                Timestamp::from_secs(70 * day),
                "no fix yet: the host clock"
            );
            write(&h, "1", &[10 * day, 40 * day]);
            write(&h, "2", &[39 * day]);
            let mut b = Staged::default();
            let mut ahead = fix(400 * day);
            ahead.suspect_future = true;
            h.stage(&mut b, &DeviceId::new("3"), &ahead);
            commit(&h, b);
            h.drain_log(usize::MAX).unwrap();
            assert_eq!(
                h.newest_fix().unwrap(),
                Some(Timestamp::from_secs(40 * day))
            );
        }
        let h = open_at(&db, dir.path());
        assert_eq!(
            h.newest_fix().unwrap(),
            Some(Timestamp::from_secs(40 * day))
        );
        // The host clock a year on: the cutoff is 30 days before a day after the newest fix.
        let cutoff = h
            .clock_reference(Timestamp::from_secs(405 * day))
            .unwrap()
            .sub(retention);
        assert_eq!(cutoff, Timestamp::from_secs(11 * day));
        h.prune(cutoff, 1_000_000).unwrap();
        assert_eq!(times(&h, "1", 0, 41 * day), vec![40 * day]);
        assert_eq!(times(&h, "2", 0, 41 * day), vec![39 * day]);
        // A host clock within a day of the newest fix counts from itself, as before.
        for now in [38 * day, 40 * day + 3600] {
            assert_eq!(
                h.clock_reference(Timestamp::from_secs(now))
                    .unwrap()
                    .sub(retention),
                Timestamp::from_secs(now - 30 * day)
            );
        }
        // Newer fixes move the reference on, and an older one does not move it back.
        write(&h, "1", &[50 * day]);
        write(&h, "2", &[45 * day]);
        assert_eq!(
            h.newest_fix().unwrap(),
            Some(Timestamp::from_secs(50 * day))
        );
    }

    #[test]
    fn compaction_works_in_slices() {
        let h = history();
        let many: Vec<i64> = (0..100).map(|i| i * 7 * 3600).collect();
        write(&h, "1", &many);
        let mut rounds = 0;
        while h
            .compact(Timestamp::from_secs(1_000 * 3600), 10)
            .unwrap()
            .fixes
            > 0
        {
            rounds += 1;
            assert!(rounds < 100);
        }
        assert!(rounds >= 5);
        assert_eq!(times(&h, "1", 0, 1_000 * 3600), many);
    }

    #[test]
    fn blocks_of_the_first_layout_are_read_and_moved_into_the_day_files() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let h = open_at(&db, dir.path());
        // As the first layout sealed them: the block as a sled value of the `history` tree.
        let p = keys::device_prefix("3").unwrap();
        let mut block = Vec::new();
        codec::encode(&[fix(100), fix(200)], &mut block);
        db.open_tree("history")
            .unwrap()
            .insert(keys::with(&p, 0), block)
            .unwrap();
        write(&h, "3", &[150, 300]);
        assert_eq!(times(&h, "3", 0, 1000), vec![100, 150, 200, 300]);
        let s = h.compact(Timestamp::from_secs(86_400), 1_000).unwrap();
        assert_eq!(s.fixes, 4);
        assert!(db.open_tree("history").unwrap().is_empty());
        assert_eq!(times(&h, "3", 0, 1000), vec![100, 150, 200, 300]);
        assert!(h.blocks_disk_bytes() > 0);
    }
}
