//! Sealed blocks on disk, outside sled: one append-only file per UTC day of the blocks' buckets,
//! and a small sled index from `(bucket, device)` ([`keys::by_bucket`]) to where the block lies.
//!
//! The index is a sled database of its own (`index/` in the folder), not a tree of the main
//! one: its entries live for the whole retention, and sled frees a segment of its log only once
//! every page in it has moved. Long-lived index pages mixed into the segments of the busy log
//! and recent trees pinned them, and the main database grew by ~8 MB a day for 1,000 cars;
//! apart, both stay flat (`cargo bench --bench history_size`, `TRACE=1`).
//!
//! Why not sled: a sealed block is written once and read rarely, and sled's log-structured
//! pages keep several copies of it until its segment cleaner catches up (about 7x the payload
//! in `cargo bench --bench history_size`). A flat file keeps each block once, and retention
//! becomes deleting whole day files instead of rewriting pages.
//!
//! Record: `[0xB1][len][device id][bucket i64 BE][block len u32 BE][block][crc32c u32 BE]`, the
//! CRC over everything before it. The index points only at records that are synced
//! ([`Segments::sync`] before the index entry is written), so a torn record after a crash is
//! never read; the next seal appends past it. A bucket re-sealed with a late fix is appended
//! again in the same day file; the older copy is garbage that leaves with the file.

use super::keys;
use crate::store::StoreError;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

const MAGIC: u8 = 0xB1;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
/// Buckets per UTC day (`keys::BUCKET_MS` is six hours).
const BUCKETS_PER_DAY: i64 = 86_400_000 / keys::BUCKET_MS;

/// Where one sealed block lies: the index entry's value, `[offset u64 BE][record len u32 BE]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loc {
    pub offset: u64,
    pub len: u32,
}

impl Loc {
    fn to_bytes(self) -> [u8; 12] {
        let mut b = [0; 12];
        b[..8].copy_from_slice(&self.offset.to_be_bytes());
        b[8..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Loc> {
        let b: &[u8; 12] = b.try_into().ok()?;
        Some(Loc {
            offset: u64::from_be_bytes(b[..8].try_into().ok()?),
            len: u32::from_be_bytes(b[8..].try_into().ok()?),
        })
    }
}

/// The day files and their index.
pub struct Segments {
    dir: PathBuf,
    index: sled::Tree,
    index_db: sled::Db,
    /// Syncs the index's log file, which sled's flush does not.
    index_file: crate::store::sled_file::SledFile,
    /// Files appended to since the last [`Segments::sync`], by day. Only the upkeep pass writes.
    open: Mutex<HashMap<i64, File>>,
    /// A temporary store's folder, removed when the history is dropped.
    _temporary: Option<tempfile::TempDir>,
}

/// Empty buckets in a row after which [`Segments::range`] seeks the next bucket the index
/// holds instead of asking for each one (four days of 6-hour buckets).
const SKIP_AFTER_MISSES: u32 = 16;

fn day_of(bucket: i64) -> i64 {
    bucket.div_euclid(BUCKETS_PER_DAY)
}

fn corrupt(msg: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: "history segments",
        msg: msg.to_string(),
    }
}

impl Segments {
    pub fn open(
        dir: PathBuf,
        temporary: Option<tempfile::TempDir>,
    ) -> Result<Segments, StoreError> {
        crate::store::create_dir_durably(&dir).map_err(|e| StoreError::io_at("create", &dir, e))?;
        let db = sled::Config::new()
            .path(dir.join("index"))
            .cache_capacity(16 << 20)
            .flush_every_ms(Some(1000))
            .open()?;
        Ok(Segments {
            index_file: crate::store::sled_file::SledFile::open(&dir.join("index"))?,
            dir,
            index: db.open_tree("blocks")?,
            index_db: db,
            open: Mutex::new(HashMap::new()),
            _temporary: temporary,
        })
    }

    fn path(&self, day: i64) -> PathBuf {
        self.dir.join(format!("{day}.blocks"))
    }

    /// Appends a sealed block; it is readable once [`Segments::sync`] and [`Segments::index`]
    /// have run for it.
    pub fn append(&self, prefix: &[u8], bucket: i64, block: &[u8]) -> Result<Loc, StoreError> {
        let block_len = u32::try_from(block.len()).map_err(|_| corrupt("block over 4 GiB"))?;
        let mut rec = Vec::with_capacity(prefix.len() + block.len() + 18);
        rec.push(MAGIC);
        rec.extend_from_slice(prefix);
        rec.extend_from_slice(&bucket.to_be_bytes());
        rec.extend_from_slice(&block_len.to_be_bytes());
        rec.extend_from_slice(block);
        let crc = CRC.checksum(&rec);
        rec.extend_from_slice(&crc.to_be_bytes());
        let day = day_of(bucket);
        let path = self.path(day);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let file = match open.entry(day) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(&path)
                    .map_err(|e| StoreError::io_at("open", &path, e))?,
            ),
        };
        // Append after whatever is there, a torn record of a crash included.
        let offset = file
            .metadata()
            .map_err(|e| StoreError::io_at("stat", &path, e))?
            .len();
        std::io::Write::write_all(file, &rec).map_err(|e| StoreError::io_at("write", &path, e))?;
        Ok(Loc {
            offset,
            len: rec.len() as u32,
        })
    }

    /// Makes every appended record durable; only then may the index point at it.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for (day, f) in open.drain() {
            f.sync_data()
                .map_err(|e| StoreError::io_at("sync", &self.path(day), e))?;
        }
        // A new file's directory entry must be durable too.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io_at("sync", &self.dir, e))
    }

    /// Points the index at synced records (`(device prefix, bucket, where)`), in one sled
    /// batch, flushed: the caller removes the fixes' earlier copies from the main database
    /// next, which must never reach the disk before this does.
    pub fn index(&self, entries: &[(Vec<u8>, i64, Loc)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (prefix, bucket, loc) in entries {
            batch.insert(keys::by_bucket(*bucket, prefix), &loc.to_bytes()[..]);
        }
        self.index.apply_batch(batch)?;
        self.index_file.flush(&self.index_db)?;
        Ok(())
    }

    /// The block stored for a device's bucket, if any.
    pub fn get(&self, prefix: &[u8], bucket: i64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.index.get(keys::by_bucket(bucket, prefix))? {
            Some(v) => self.read(prefix, bucket, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Calls `f` with each stored block of the device in buckets `from..=to`, in time order:
    /// one index lookup per bucket (a day's track is four, a month's places 120).
    pub fn range(
        &self,
        prefix: &[u8],
        from: i64,
        to: i64,
        mut f: impl FnMut(&[u8]) -> Result<std::ops::ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        // Only the buckets the index holds at all: a query from 1970 costs no more than one
        // over the retention.
        let bucket_of = |kv: Option<(sled::IVec, sled::IVec)>| {
            kv.and_then(|(k, _)| keys::split_by_bucket(&k).map(|(b, _)| b))
        };
        let (Some(oldest), Some(newest)) = (
            bucket_of(self.index.first()?),
            bucket_of(self.index.last()?),
        ) else {
            return Ok(());
        };
        let mut bucket = from.max(oldest);
        let mut misses = 0;
        while bucket <= to.min(newest) {
            if let Some(block) = self.get(prefix, bucket)? {
                misses = 0;
                if f(&block)?.is_break() {
                    break;
                }
            } else {
                misses += 1;
            }
            bucket += 1;
            // A long run of buckets no device has (a fix a broken clock dated decades ahead
            // puts the index's newest bucket there): on to the next bucket the index holds.
            if misses >= SKIP_AFTER_MISSES {
                misses = 0;
                let next = self.index.range(keys::bucket_floor(bucket)..).next();
                match bucket_of(next.transpose()?) {
                    Some(b) => bucket = bucket.max(b),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Reads and checks the record an index entry points at.
    fn read(&self, prefix: &[u8], bucket: i64, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let loc = Loc::from_bytes(value).ok_or_else(|| corrupt("index entry"))?;
        let path = self.path(day_of(bucket));
        let file = File::open(&path).map_err(|e| StoreError::io_at("open", &path, e))?;
        // A corrupt entry must not size the buffer: the record lies within its file.
        let size = file
            .metadata()
            .map_err(|e| StoreError::io_at("stat", &path, e))?
            .len();
        if loc.offset.saturating_add(loc.len as u64) > size {
            return Err(corrupt(format!(
                "index entry past the end of {}",
                path.display()
            )));
        }
        let mut rec = vec![0; loc.len as usize];
        file.read_exact_at(&mut rec, loc.offset)
            .map_err(|e| StoreError::io_at("read", &path, e))?;
        let head = 1 + prefix.len() + 8 + 4;
        if rec.len() < head + 4 {
            return Err(corrupt(format!("short record in {}", path.display())));
        }
        let (body, crc) = rec.split_at(rec.len() - 4);
        if CRC.checksum(body).to_be_bytes() != crc {
            return Err(corrupt(format!("checksum in {}", path.display())));
        }
        // The record must be the one the key names: a misdirected index entry is corruption,
        // not another device's fixes.
        if body[0] != MAGIC
            || &body[1..1 + prefix.len()] != prefix
            || body[1 + prefix.len()..1 + prefix.len() + 8] != bucket.to_be_bytes()
        {
            return Err(corrupt(format!("record mismatch in {}", path.display())));
        }
        let mut block = body[head..].to_vec();
        block.shrink_to_fit();
        Ok(block)
    }

    /// Drops every block of a bucket before `first_kept`: index entries first (readers stop
    /// seeing them), then whole day files. A day file goes only when all its buckets are
    /// before `first_kept`. At most `max_keys` index entries per call; returns
    /// `(entries, files)` removed.
    pub fn prune(&self, first_kept: i64, max_keys: usize) -> Result<(u64, u64), StoreError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0u64;
        for kv in self.index.range(..keys::bucket_floor(first_kept)) {
            let (k, _) = kv?;
            batch.remove(k);
            removed += 1;
            if removed >= max_keys as u64 {
                break;
            }
        }
        self.index.apply_batch(batch)?;
        if removed >= max_keys as u64 {
            return Ok((removed, 0));
        }
        // Every index entry before `first_kept` is gone, on disk before any file goes: a kill
        // between the two must not leave entries pointing at deleted files.
        self.index_file.flush(&self.index_db)?;
        let last_day = day_of(first_kept) - 1;
        let mut files = 0;
        let rd =
            std::fs::read_dir(&self.dir).map_err(|e| StoreError::io_at("list", &self.dir, e))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(day) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".blocks"))
                .and_then(|d| d.parse::<i64>().ok())
            else {
                continue;
            };
            if day <= last_day {
                let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                open.remove(&day);
                std::fs::remove_file(e.path())
                    .map_err(|err| StoreError::io_at("remove", &e.path(), err))?;
                files += 1;
            }
        }
        Ok((removed, files))
    }

    /// Bytes of the day files (sealed blocks, garbage of re-sealed buckets included).
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".blocks"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Bytes of the blocks the index points at (the payload, without garbage).
    pub fn payload_bytes(&self) -> u64 {
        self.index
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some(k.len() as u64 + 12 + u64::from(Loc::from_bytes(&v)?.len)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs() -> (tempfile::TempDir, Segments) {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path().join("h"), None).unwrap();
        (dir, s)
    }

    fn put(s: &Segments, dev: &str, bucket: i64, block: &[u8]) {
        let p = keys::device_prefix(dev).unwrap();
        let loc = s.append(&p, bucket, block).unwrap();
        s.sync().unwrap();
        s.index(&[(p, bucket, loc)]).unwrap();
    }

    fn get(s: &Segments, dev: &str, bucket: i64) -> Option<Vec<u8>> {
        s.get(&keys::device_prefix(dev).unwrap(), bucket).unwrap()
    }

    /// A block another device has decades ahead (a broken clock) does not make a device's
    /// range ask for every bucket up to it, and gaps in the device's own blocks lose nothing.
    #[test]
    fn a_range_skips_long_runs_of_empty_buckets() {
        let (_d, s) = segs();
        for b in [0, 1, 2, 400, 401] {
            put(&s, "1", b, format!("b{b}").as_bytes());
        }
        put(&s, "2", 200, b"other");
        put(&s, "2", 10_000_000, b"decades ahead");
        let mut got = Vec::new();
        let p = keys::device_prefix("1").unwrap();
        s.range(&p, 0, i64::MAX, |b| {
            got.push(String::from_utf8_lossy(b).into_owned());
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(got, ["b0", "b1", "b2", "b400", "b401"]);
    }

    #[test]
    fn blocks_come_back_and_a_resealed_bucket_reads_its_newest_copy() {
        let (_d, s) = segs();
        put(&s, "1", 100, b"first");
        put(&s, "2", 100, b"other");
        put(&s, "1", 101, b"next");
        put(&s, "1", 100, b"first, merged");
        assert_eq!(get(&s, "1", 100).as_deref(), Some(&b"first, merged"[..]));
        assert_eq!(get(&s, "2", 100).as_deref(), Some(&b"other"[..]));
        assert_eq!(get(&s, "1", 102), None);
        let p = keys::device_prefix("1").unwrap();
        let mut seen = Vec::new();
        s.range(&p, 0, 200, |b| {
            seen.push(b.to_vec());
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(seen, vec![b"first, merged".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn a_torn_tail_is_skipped_and_a_flipped_byte_is_reported() {
        let (d, s) = segs();
        put(&s, "1", 8, b"kept");
        let file = d.path().join("h").join("2.blocks");
        // A crash mid-append: half a record, never indexed.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &[MAGIC, 1, b'1', 0, 0]))
            .unwrap();
        put(&s, "1", 9, b"after");
        assert_eq!(get(&s, "1", 8).as_deref(), Some(&b"kept"[..]));
        assert_eq!(get(&s, "1", 9).as_deref(), Some(&b"after"[..]));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[13] ^= 0x40;
        std::fs::write(&file, bytes).unwrap();
        assert!(s.get(&keys::device_prefix("1").unwrap(), 8).is_err());
        // An entry whose length runs past its file (4 GiB here) is corruption, read as an error
        // without a buffer of that size.
        let p = keys::device_prefix("1").unwrap();
        let huge = Loc {
            offset: 0,
            len: u32::MAX,
        };
        s.index(&[(p.clone(), 9, huge)]).unwrap();
        let err = s.get(&p, 9).unwrap_err().to_string();
        assert!(err.contains("past the end"), "{err}");
    }

    #[test]
    fn prune_drops_old_entries_then_whole_old_files() {
        let (d, s) = segs();
        for b in 0..12 {
            put(&s, "1", b, b"x");
            put(&s, "2", b, b"y");
        }
        // Keep from bucket 6 (day 1, its third bucket): day 0 goes, day 1 stays.
        let (entries, files) = s.prune(6, 1_000).unwrap();
        assert_eq!((entries, files), (12, 1));
        assert!(!d.path().join("h").join("0.blocks").exists());
        assert!(d.path().join("h").join("1.blocks").exists());
        assert_eq!(get(&s, "1", 5), None);
        assert_eq!(get(&s, "2", 6).as_deref(), Some(&b"y"[..]));
        // In slices: no file goes until every old entry has.
        let (entries, files) = s.prune(12, 3).unwrap();
        assert_eq!((entries, files), (3, 0));
        while s.prune(12, 3).unwrap().0 > 0 {}
        assert!(!d.path().join("h").join("1.blocks").exists());
    }
}
