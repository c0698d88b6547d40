//! Position history (CONTRACT.md "Position history"): every accepted fix of every device, kept in
//! fix-time order for `storage.history_retention`, each device and fix time once.
//!
//! Two trees, because the two halves of a fix's life want different layouts:
//! - **recent**: the engine writes each fix under its own key in the same group commit as the
//!   last-known position, so an acknowledged fix is in the history after any crash, and a late
//!   batch or a re-sent fix lands in its time order (same key: kept once);
//! - **blocks**: a background pass ([`History::compact`]) moves every fix of a sealed
//!   six-hour bucket into one delta-encoded block ([`codec`]), ~12 bytes a fix instead of
//!   sled's ~100 for a key of its own, and [`History::prune`] drops whole blocks past the
//!   retention.
//!
//! Readers merge both (a fix present in both, after a crash between the block write and the
//! removal of its recent keys, is returned once).

pub mod codec;
pub mod keys;
pub mod places;
pub mod track;

use crate::event::DeviceId;
use crate::store::{StoreError, StoredPosition};
use crate::time::Timestamp;
use std::ops::ControlFlow;

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
    recent: sled::Tree,
    blocks: sled::Tree,
}

fn corrupt(msg: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: "history",
        msg: msg.to_string(),
    }
}

impl History {
    pub(crate) fn open(db: &sled::Db) -> Result<History, StoreError> {
        Ok(History {
            recent: db.open_tree("history_recent")?,
            blocks: db.open_tree("history")?,
        })
    }

    /// Stages fixes for the engine's next flush (one batch for the whole commit).
    pub fn stage(&self, batch: &mut sled::Batch, device: &DeviceId, fix: &HistoryFix) {
        let Some(prefix) = keys::device_prefix(device.as_str()) else {
            return;
        };
        let mut value = Vec::with_capacity(24);
        codec::encode(std::slice::from_ref(fix), &mut value);
        batch.insert(keys::with(&prefix, fix.pos.time.millis()), value);
    }

    pub fn apply(&self, batch: sled::Batch) -> Result<(), StoreError> {
        Ok(self.recent.apply_batch(batch)?)
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
        // Recent fixes are few (the unsealed buckets and late arrivals): read them all once.
        let mut recent = Vec::new();
        for kv in self
            .recent
            .range(keys::with(&prefix, from.millis())..keys::with(&prefix, to.millis()))
        {
            let (_, v) = kv?;
            codec::decode_each(&v, |fix| {
                recent.push(fix);
                ControlFlow::Continue(())
            })
            .map_err(corrupt)?;
        }
        let mut recent = recent.into_iter().peekable();
        let mut last: Option<Timestamp> = None;
        let mut stopped = false;
        let mut emit = |fix: HistoryFix, last: &mut Option<Timestamp>| -> ControlFlow<()> {
            if last.is_some_and(|t| fix.pos.time <= t) {
                return ControlFlow::Continue(());
            }
            *last = Some(fix.pos.time);
            f(fix)
        };
        let lo = keys::with(&prefix, keys::bucket_of(from));
        let hi = keys::with(
            &prefix,
            keys::bucket_of(to.add_millis(-1)).saturating_add(1),
        );
        'blocks: for kv in self.blocks.range(lo..hi) {
            let (_, v) = kv?;
            let mut flow = ControlFlow::Continue(());
            codec::decode_each(&v, |fix| {
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
                break 'blocks;
            }
        }
        if !stopped {
            for r in recent {
                if emit(r, &mut last).is_break() {
                    break;
                }
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
    /// `max_fixes` of them per call (so a pass never holds much in memory). Each block is written
    /// before its recent keys are removed: a crash in between leaves a fix in both trees, which
    /// readers return once and the next pass merges again.
    pub fn compact(
        &self,
        sealed_before: Timestamp,
        max_fixes: usize,
    ) -> Result<PassStats, StoreError> {
        let sealed = keys::bucket_of(sealed_before);
        let mut stats = PassStats::default();
        let mut group: Vec<(sled::IVec, HistoryFix)> = Vec::new();
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
            if bucket >= sealed {
                // The rest of this device's keys are newer still: skip to the next device.
                iter = self.recent.range(keys::past(prefix)..);
                continue;
            }
            if group_key
                .as_ref()
                .is_some_and(|(p, b)| p.as_slice() != prefix || *b != bucket)
            {
                if stats.fixes as usize >= max_fixes {
                    break;
                }
                if let Some((p, b)) = group_key.take() {
                    self.seal(&p, b, std::mem::take(&mut group))?;
                    stats.blocks += 1;
                }
            }
            if group_key.is_none() {
                group_key = Some((prefix.to_vec(), bucket));
            }
            let fixes = codec::decode(&v).map_err(corrupt)?;
            for fix in fixes {
                group.push((k.clone(), fix));
                stats.fixes += 1;
            }
        }
        if let Some((p, b)) = group_key {
            self.seal(&p, b, group)?;
            stats.blocks += 1;
        }
        Ok(stats)
    }

    /// Merges recent fixes into their bucket's block, then removes their recent keys.
    fn seal(
        &self,
        prefix: &[u8],
        bucket: i64,
        recent: Vec<(sled::IVec, HistoryFix)>,
    ) -> Result<(), StoreError> {
        let key = keys::with(prefix, bucket);
        let mut fixes = match self.blocks.get(&key)? {
            Some(v) => codec::decode(&v).map_err(corrupt)?,
            None => Vec::new(),
        };
        let mut removals = sled::Batch::default();
        for (k, fix) in recent {
            removals.remove(k);
            fixes.push(fix);
        }
        // Stable: a fix already in the block stays ahead of a re-sent copy of itself.
        fixes.sort_by_key(|f| f.pos.time);
        fixes.dedup_by_key(|f| f.pos.time);
        let mut value = Vec::with_capacity(fixes.len() * 14 + 8);
        codec::encode(&fixes, &mut value);
        self.blocks.insert(key, value)?;
        self.recent.apply_batch(removals)?;
        Ok(())
    }

    /// Removes every fix older than `cutoff` (whole blocks, and recent keys). At most
    /// `max_keys` keys per call; returns how many went.
    pub fn prune(&self, cutoff: Timestamp, max_keys: usize) -> Result<PassStats, StoreError> {
        let mut stats = PassStats::default();
        // A block goes when its whole bucket is older than the cutoff; readers filter the
        // partial bucket at the edge.
        let last_bucket = keys::bucket_of(cutoff) - 1;
        for (tree, is_blocks) in [(&self.blocks, true), (&self.recent, false)] {
            let mut start: Vec<u8> = Vec::new();
            loop {
                let Some(kv) = tree.range(start.clone()..).next() else {
                    break;
                };
                let (k, _) = kv?;
                let Some((prefix, _)) = keys::split(&k) else {
                    start = keys::past(&k);
                    continue;
                };
                let prefix = prefix.to_vec();
                let end = if is_blocks {
                    keys::with(&prefix, last_bucket.saturating_add(1))
                } else {
                    keys::with(&prefix, cutoff.millis())
                };
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for kv in tree.range(k.to_vec()..end) {
                    let (old, _) = kv?;
                    batch.remove(old);
                    n += 1;
                    if stats.fixes + stats.blocks + n >= max_keys as u64 {
                        break;
                    }
                }
                tree.apply_batch(batch)?;
                if is_blocks {
                    stats.blocks += n;
                } else {
                    stats.fixes += n;
                }
                if stats.fixes + stats.blocks >= max_keys as u64 {
                    return Ok(stats);
                }
                start = keys::past(&prefix);
            }
        }
        Ok(stats)
    }

    /// Bytes of fixes kept (keys and values, before sled's own overhead): for benchmarks and
    /// the size figures in the README.
    pub fn payload_bytes(&self) -> (u64, u64) {
        let sum = |t: &sled::Tree| {
            t.iter()
                .flatten()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>()
        };
        (sum(&self.recent), sum(&self.blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(t: i64) -> HistoryFix {
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

    fn history() -> History {
        let db = sled::Config::new().temporary(true).open().unwrap();
        History::open(&db).unwrap()
    }

    fn write(h: &History, dev: &str, times: &[i64]) {
        let mut b = sled::Batch::default();
        for &t in times {
            h.stage(&mut b, &DeviceId::new(dev), &fix(t));
        }
        h.apply(b).unwrap();
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
}
