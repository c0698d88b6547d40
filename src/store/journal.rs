//! The commit journal: what each group commit adds to the last-known records and to the
//! position history, as one record appended to a plain file and synced, beside sled.
//!
//! Why not a sled tree: those two parts are most of a commit's bytes (hundreds of records and
//! fixes), and written once, read once by a background pass, then dropped. In a sled tree each
//! entry was written as a page delta, rewritten with its leaf every few inserts (a leaf of 16
//! entries of tens of KB is rewritten as a blob file), and removed again the same way: about
//! 560 bytes written per position for about 150 bytes of data. Here each byte is written once.
//!
//! Layout: files `journal/<first sequence number, 20 digits>.log`, each a run of records
//! `[payload length u32 LE][crc32 of the rest u32 LE][sequence u64 LE][devices length u32 LE]
//! [devices part][history part]`. Sequence numbers increase by one, across files. Each append
//! writes eight zero bytes after its record (an empty header: where the records end), which the
//! next append overwrites; a file is cut to its records when the next one starts.
//!
//! Files are reused: a filed file becomes a spare (`<first>.spare`, at most [`SPARES`]) and the
//! next file is a spare renamed. Overwriting blocks a file already has, a synced append writes
//! only its data; growing a file, it also writes the inode (the new size), which made half the
//! cost of each commit's sync. A reused file holds older records past what is written; they
//! read as the end of the file, since their sequence numbers are not the next ones. A new file
//! gets the same: an append that would grow it writes a megabyte of zeros past its record
//! ([`AHEAD`]), which the next appends overwrite.
//!
//! Two consumers file the records into sled ([`Part::Devices`]: the device log fold;
//! [`Part::History`]: the history drain). Each writes how far it filed into sled with what it
//! filed, flushes, and then says so here ([`Journal::filed`]); a record goes once the parts it
//! holds are filed (a commit that changed no device record needs no fold), a file once all its
//! records have gone. Until then records stay in memory too, so that readers and the passes never
//! read the file back: the passes run every second, so that is a few seconds of commits.
//!
//! Crashes: a commit's record is synced before its replies go out. A kill in the middle of an
//! append leaves a torn last record, which opening drops (its commit was never acknowledged).

use super::StoreError;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A file is closed and a new one started past this size, so that filed commits free their
/// space within seconds.
const FILE_BYTES: u64 = 16 << 20;

/// Filed files kept for reuse. One is enough in a steady state (the passes file a second's worth
/// of commits, a file holds more); two cover a pass that runs late.
const SPARES: usize = 2;

/// Written after each record: an empty header, where the records end.
const END: [u8; 8] = [0; 8];

/// Zeros written ahead of the records when an append would grow the file. A sync that grows a
/// file also writes its inode (the new size), which made half the cost of each commit's sync:
/// this way one commit in a megabyte's worth pays it, and the others overwrite blocks the file
/// has, as in a reused file. Zeros read as the end mark.
const AHEAD: u64 = 1 << 20;

/// What is written ahead (zero-initialised, so it costs no bytes in the binary).
static ZEROS: [u8; AHEAD as usize] = [0; AHEAD as usize];

/// The two parts of a commit's record, each filed by its own background pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Part {
    Devices = 0,
    History = 1,
}

impl Part {
    pub const ALL: [Part; 2] = [Part::Devices, Part::History];

    /// Where the part's pass says how far it filed, in the `meta` tree.
    fn filed_key(self) -> &'static str {
        match self {
            Part::Devices => "journal.devices_filed",
            Part::History => "journal.history_filed",
        }
    }
}

/// One commit's record.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub seq: u64,
    /// `store::DeviceLog`'s entry layout.
    pub devices: Vec<u8>,
    /// `history`'s log entry layout.
    pub history: Vec<u8>,
}

/// One file of the journal: where it starts, and its last record holding each part (0: none).
#[derive(Clone, Copy, Debug, PartialEq)]
struct FileSpan {
    first: u64,
    last: [u64; 2],
}

impl FileSpan {
    fn note(&mut self, e: &Entry) {
        for part in Part::ALL {
            if !e.part(part).is_empty() {
                self.last[part as usize] = e.seq;
            }
        }
    }
}

impl Entry {
    fn part(&self, part: Part) -> &[u8] {
        match part {
            Part::Devices => &self.devices,
            Part::History => &self.history,
        }
    }

    /// Every part it holds is filed.
    fn filed(&self, filed: [u64; 2]) -> bool {
        Part::ALL
            .iter()
            .all(|&p| self.part(p).is_empty() || self.seq <= filed[p as usize])
    }
}

struct Writer {
    file: File,
    /// Where the records of `file` end (the next append's offset).
    len: u64,
    /// How long `file` is: past `len`, zeros or a reused file's older records.
    size: u64,
    /// Filed files kept for reuse, by the names they had.
    spares: Vec<u64>,
    /// The journal's files, oldest first; the last is the one written.
    files: VecDeque<FileSpan>,
    next: u64,
    buf: Vec<u8>,
    /// What the commit under way added to each part, written by [`Journal::commit`].
    staged: [Vec<u8>; 2],
    /// Moves to the next file that fail before they start (tests of a disk that refuses).
    #[cfg(test)]
    fail_rolls: u32,
}

/// The journal. Cheap to clone; the engine appends, the passes read and file.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Records not filed by both parts yet, oldest first.
    entries: RwLock<VecDeque<Arc<Entry>>>,
    /// How far each part has filed (durably, in sled).
    filed: [AtomicU64; 2],
    /// sled's blob files, synced with each pass's flush before records go (`blob_sync`): a
    /// run of fixes filed into a large page must be on disk before the journal drops it.
    blobs: std::sync::OnceLock<Arc<super::blob_sync::BlobSync>>,
    /// The log file of the database the passes file into, synced after sled's flush.
    sled: std::sync::OnceLock<Arc<super::sled_file::SledFile>>,
    _temporary: Option<tempfile::TempDir>,
}

fn io_err(what: &str, e: std::io::Error) -> StoreError {
    StoreError::io(format_args!("journal: {what}"), e)
}

fn corrupt(msg: String) -> StoreError {
    StoreError::Corrupt {
        tree: "journal",
        msg,
    }
}

fn poisoned(what: &'static str) -> StoreError {
    StoreError::Poisoned { what }
}

fn file_name(first: u64) -> String {
    format!("{first:020}.log")
}

fn spare_name(first: u64) -> String {
    format!("{first:020}.spare")
}

/// Syncs the folder, so that a file created or removed in it stays so after a crash.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync journal folder", e))
}

const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

fn checksum(rest: &[u8]) -> u32 {
    CRC.checksum(rest)
}

/// The whole record at the start of `bytes`, if there is one, and its length.
fn record(bytes: &[u8]) -> Option<(Entry, usize)> {
    let head = bytes.get(..8)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let rest = bytes.get(8..8 + len).filter(|r| r.len() >= 12)?;
    if checksum(rest) != crc {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&rest[..8]);
    let dlen = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
    let (devices, history) = rest[12..].split_at_checked(dlen)?;
    let entry = Entry {
        seq: u64::from_le_bytes(seq),
        devices: devices.to_vec(),
        history: history.to_vec(),
    };
    Some((entry, 8 + len))
}

/// Parses the records of the file that starts at sequence number `first`: the entries and the
/// length of its valid prefix. The end mark, a torn record, or a record out of sequence (an
/// older one, in a reused file) ends it.
fn parse(bytes: &[u8], first: u64) -> (Vec<Entry>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((entry, len)) = bytes.get(at..).and_then(record) {
        if entry.seq != first + out.len() as u64 {
            break;
        }
        out.push(entry);
        at += len;
    }
    (out, at)
}

/// What follows a file's records: nothing, the end mark or an older record of a reused file
/// (a clean end), or anything else (a write cut short, or damage).
fn ends_cleanly(after: &[u8]) -> bool {
    after.is_empty() || after.starts_with(&END) || record(after).is_some()
}

/// Opens the file that starts at `first` for appends from its start: a spare renamed, if there
/// is one, else a new file. Returns it with its length. The caller syncs the folder.
fn start_file(dir: &Path, first: u64, spares: &mut Vec<u64>) -> Result<(File, u64), StoreError> {
    let path = dir.join(file_name(first));
    if let Some(old) = spares.pop() {
        if let Err(e) = std::fs::rename(dir.join(spare_name(old)), &path) {
            tracing::warn!(error = %e, spare = %spare_name(old), "commit journal: a spare file could not be reused");
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err("create journal file", e))?;
    let size = file
        .metadata()
        .map_err(|e| io_err("create journal file", e))?
        .len();
    Ok((file, size))
}

/// How far each part was filed (devices, history), from the `meta` tree (0: nothing yet).
pub(crate) fn filed_through(meta: &sled::Tree) -> Result<[u64; 2], StoreError> {
    let mut filed = [0; 2];
    for part in Part::ALL {
        let key = part.filed_key();
        if let Some(v) = meta.get(key)? {
            filed[part as usize] = v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt(format!("{key}: not a u64")))?;
        }
    }
    Ok(filed)
}

impl Journal {
    /// Opens the journal in `dir` (created if missing), where the parts have filed every record
    /// up to `filed` (devices, history). Records both have filed are dropped, with their files.
    pub fn open(dir: &Path, filed: [u64; 2]) -> Result<Journal, StoreError> {
        Self::open_in(dir.to_path_buf(), filed, None)
    }

    /// A journal in a folder removed with it (`replay`, tests).
    pub fn temporary() -> Result<Journal, StoreError> {
        let t = tempfile::Builder::new()
            .prefix("lienwatch-journal")
            .tempdir()
            .map_err(|e| io_err("temporary folder", e))?;
        Self::open_in(t.path().to_path_buf(), [0, 0], Some(t))
    }

    fn open_in(
        dir: PathBuf,
        filed: [u64; 2],
        temporary: Option<tempfile::TempDir>,
    ) -> Result<Journal, StoreError> {
        super::create_dir_durably(&dir).map_err(|e| io_err("create journal folder", e))?;
        let mut firsts: Vec<u64> = Vec::new();
        let mut spares: Vec<u64> = Vec::new();
        for de in std::fs::read_dir(&dir).map_err(|e| io_err("read journal folder", e))? {
            let de = de.map_err(|e| io_err("read journal folder", e))?;
            let name = de.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let number = |suffix| {
                name.strip_suffix(suffix)
                    .and_then(|n| n.parse::<u64>().ok())
            };
            if let Some(first) = number(".log") {
                firsts.push(first);
            } else if let Some(first) = number(".spare") {
                spares.push(first);
            }
        }
        firsts.sort_unstable();
        spares.sort_unstable();
        for extra in spares.split_off(spares.len().min(SPARES)) {
            std::fs::remove_file(dir.join(spare_name(extra)))
                .map_err(|e| io_err("remove spare journal file", e))?;
        }
        let mut entries = VecDeque::new();
        let mut prev: Option<u64> = None;
        let mut files = VecDeque::new();
        let mut tail_len = 0;
        for (i, &first) in firsts.iter().enumerate() {
            let path = dir.join(file_name(first));
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io_err("read journal file", e))?;
            let (recs, valid) = parse(&bytes, first);
            let is_last = i + 1 == firsts.len();
            if valid < bytes.len() {
                // A file is cut to its records when the next one starts.
                if !is_last {
                    return Err(corrupt(format!(
                        "{}: a damaged record before the last file",
                        file_name(first)
                    )));
                }
                // The file written last goes on with its end mark, or the older records of a
                // reused file; anything else is an append cut short, whose commit was never
                // acknowledged. (Damage inside the last file reads the same way and loses what
                // follows it: said in the log.) Cut, so that only the file written is ever longer
                // than its records.
                if !ends_cleanly(&bytes[valid..]) {
                    tracing::warn!(
                        file = %file_name(first),
                        kept = valid,
                        dropped = bytes.len() - valid,
                        "commit journal: bytes after the last whole record dropped (a write cut short)"
                    );
                }
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(valid as u64).and_then(|_| f.sync_all()))
                    .map_err(|e| io_err("truncate torn journal record", e))?;
            } else if is_last && !recs.is_empty() {
                // Its last record may be in the page cache only (a kill between the append and
                // its sync, the append ending exactly at the record): synced before anything
                // files it, or a power cut could take a record whose filed mark survives.
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_err("sync journal file", e))?;
            }
            let mut span = FileSpan {
                first,
                last: [0, 0],
            };
            for r in recs {
                if prev.is_some_and(|p| r.seq != p + 1) {
                    return Err(corrupt(format!(
                        "{}: record {} out of sequence",
                        file_name(first),
                        r.seq
                    )));
                }
                prev = Some(r.seq);
                span.note(&r);
                if !r.filed(filed) {
                    entries.push_back(Arc::new(r));
                }
            }
            files.push_back(span);
            if is_last {
                tail_len = valid as u64;
            }
        }
        let last = prev.unwrap_or(0).max(filed[0]).max(filed[1]);
        let next = last + 1;
        // Appends go to a new file: a file's name says where it starts.
        let first = next;
        // The last file, if it holds no record (cut to nothing above, so its length is
        // `tail_len`), or a new one.
        let (file, size) = if files.back().map(|f| f.first) == Some(first) {
            let file = OpenOptions::new()
                .write(true)
                .open(dir.join(file_name(first)))
                .map_err(|e| io_err("open journal file", e))?;
            (file, tail_len)
        } else {
            files.push_back(FileSpan {
                first,
                last: [0, 0],
            });
            tail_len = 0;
            start_file(&dir, first, &mut spares)?
        };
        sync_dir(&dir)?;
        let journal = Journal {
            inner: Arc::new(Inner {
                dir,
                writer: Mutex::new(Writer {
                    file,
                    len: tail_len,
                    size,
                    spares,
                    files,
                    next,
                    buf: Vec::new(),
                    staged: [Vec::new(), Vec::new()],
                    #[cfg(test)]
                    fail_rolls: 0,
                }),
                entries: RwLock::new(entries),
                filed: [AtomicU64::new(filed[0]), AtomicU64::new(filed[1])],
                blobs: std::sync::OnceLock::new(),
                sled: std::sync::OnceLock::new(),
                _temporary: temporary,
            }),
        };
        journal.release()?;
        Ok(journal)
    }

    /// Adds `bytes` to `part` of the commit under way (a part is a run of items, so two stagings
    /// read as one). Not durable until [`Journal::commit`].
    pub fn stage(&self, part: Part, bytes: Vec<u8>) {
        if let Ok(mut w) = self.inner.writer.lock() {
            let staged = &mut w.staged[part as usize];
            // Most commits stage each part once: taken as it is, not copied.
            if staged.is_empty() {
                *staged = bytes;
            } else {
                staged.extend_from_slice(&bytes);
            }
        }
    }

    /// What is staged for `part` and not committed yet. Readers take it before
    /// [`Journal::unfiled`]: a commit in between then shows its parts twice, never not at all.
    pub fn staged(&self, part: Part) -> Vec<u8> {
        self.inner
            .writer
            .lock()
            .map(|w| w.staged[part as usize].clone())
            .unwrap_or_default()
    }

    /// Writes what was staged as one record and syncs it; nothing if nothing was staged. The
    /// engine's commit calls this once per group commit, after sled's flush.
    pub fn commit(&self) -> Result<(), StoreError> {
        let mut w = self
            .inner
            .writer
            .lock()
            .map_err(|_| poisoned("the journal's writer"))?;
        if w.staged.iter().all(|p| p.is_empty()) {
            return Ok(());
        }
        if w.len >= FILE_BYTES {
            // The last commit filled the file, and moving to the next one failed then: nothing
            // is written past a full file, so this commit fails too, its parts staged for the next.
            self.roll(&mut w)?;
        }
        let [devices, history] = std::mem::take(&mut w.staged);
        let dlen = u32::try_from(devices.len()).map_err(|_| corrupt("part over 4 GiB".into()))?;
        let len = u32::try_from(12 + devices.len() + history.len())
            .map_err(|_| corrupt("record over 4 GiB".into()))?;
        let seq = w.next;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&dlen.to_le_bytes());
        buf.extend_from_slice(&devices);
        buf.extend_from_slice(&history);
        let crc = checksum(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let record_len = buf.len() as u64;
        buf.extend_from_slice(&END);
        let end = w.len + buf.len() as u64;
        // Up to where the file is cut for the next one: past that, it grows only once.
        let ahead = if end > w.size {
            AHEAD.min(FILE_BYTES.saturating_sub(end)) as usize
        } else {
            0
        };
        let written = w
            .file
            .write_all_at(&buf, w.len)
            .and_then(|_| w.file.write_all_at(&ZEROS[..ahead], end))
            .and_then(|_| w.file.sync_data())
            .map_err(|e| io_err("append to journal", e));
        if let Err(e) = written {
            // What part of the record reached the file is cut off at the next open, and no
            // later record may follow it in this file. The parts stay staged for the next try.
            let _ = w.file.set_len(w.len);
            w.size = w.len;
            w.staged = [devices, history];
            w.buf = buf;
            return Err(e);
        }
        w.size = w.size.max(end + ahead as u64);
        w.len += record_len;
        w.next = seq + 1;
        w.buf = buf;
        let entry = Arc::new(Entry {
            seq,
            devices,
            history,
        });
        if let Some(f) = w.files.back_mut() {
            f.note(&entry);
        }
        // Held while the writer is: a reader that found the staged parts gone finds the record.
        // Pushed before the move to the next file: the record is on disk whatever that does.
        self.inner
            .entries
            .write()
            .map_err(|_| poisoned("the journal's index"))?
            .push_back(entry);
        if w.len >= FILE_BYTES {
            if let Err(e) = self.roll(&mut w) {
                // This commit is durable and answered as such; the next one tries again first.
                tracing::warn!(error = %e, "commit journal: the next file could not be started");
            }
        }
        drop(w);
        Ok(())
    }

    /// Ends the full file and starts the next. Its first step cuts the full file to its records
    /// (the end mark, a reused file's older ones), durably before a record follows in the next
    /// file: only the file written may be longer. The writer takes the new file only once it
    /// is in the folder durably, so a failure at any step leaves it on the full file, which no
    /// record follows until a later try succeeds.
    fn roll(&self, w: &mut Writer) -> Result<(), StoreError> {
        let len = w.len;
        w.file
            .set_len(len)
            .and_then(|_| w.file.sync_data())
            .map_err(|e| io_err("cut journal file", e))?;
        w.size = len;
        let next = w.next;
        let (file, size) = start_file(&self.inner.dir, next, &mut w.spares)?;
        #[cfg(test)]
        if w.fail_rolls > 0 {
            w.fail_rolls -= 1;
            return Err(io_err(
                "sync journal folder",
                std::io::Error::other("injected"),
            ));
        }
        sync_dir(&self.inner.dir)?;
        (w.file, w.size) = (file, size);
        w.len = 0;
        w.files.push_back(FileSpan {
            first: next,
            last: [0, 0],
        });
        Ok(())
    }

    /// The records holding `part` it has not filed yet, oldest first.
    pub fn unfiled(&self, part: Part) -> Vec<Arc<Entry>> {
        let after = self.filed_at(part);
        match self.inner.entries.read() {
            Ok(e) => e
                .iter()
                .filter(|e| e.seq > after && !e.part(part).is_empty())
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// How far `part` has filed.
    fn filed_at(&self, part: Part) -> u64 {
        self.inner.filed[part as usize].load(Ordering::Acquire)
    }

    /// `part`'s pass has filed every record up to `seq` into `db`: makes what it filed durable
    /// (sled's log file and its new blob files), then says so in `meta`, durably too, and only
    /// then lets the journal drop what no part still needs. A crash before the mark is on disk
    /// files those records again; the mark never reaches the disk before them.
    pub fn filed_into(
        &self,
        part: Part,
        seq: u64,
        db: &sled::Db,
        meta: &sled::Tree,
    ) -> Result<(), StoreError> {
        let flush = || match self.inner.sled.get() {
            Some(f) => f.flush(db).map(drop),
            None => db.flush().map(drop).map_err(StoreError::from),
        };
        flush()?;
        if let Some(b) = self.inner.blobs.get() {
            b.sync_new()?;
        }
        meta.insert(part.filed_key(), &seq.to_be_bytes())?;
        flush()?;
        self.filed(part, seq)
    }

    /// The blob files of the database the passes file into, to sync before records go.
    pub(super) fn sync_blobs_of(&self, blobs: Arc<super::blob_sync::BlobSync>) {
        let _ = self.inner.blobs.set(blobs);
    }

    /// The log file of the database the passes file into (`sled_file`).
    pub(super) fn sync_sled_of(&self, file: Arc<super::sled_file::SledFile>) {
        let _ = self.inner.sled.set(file);
    }

    /// `part` has filed every record up to `seq`, durably: records whose parts are all filed
    /// are dropped, with the files that held only such records.
    fn filed(&self, part: Part, seq: u64) -> Result<(), StoreError> {
        self.inner.filed[part as usize].fetch_max(seq, Ordering::AcqRel);
        self.release()
    }

    fn release(&self) -> Result<(), StoreError> {
        let filed = [self.filed_at(Part::Devices), self.filed_at(Part::History)];
        if let Ok(mut e) = self.inner.entries.write() {
            // Front first: a record filed behind one that is not waits for it (a few seconds).
            while e.front().is_some_and(|e| e.filed(filed)) {
                e.pop_front();
            }
        }
        let mut w = self
            .inner
            .writer
            .lock()
            .map_err(|_| poisoned("the journal's writer"))?;
        let mut removed = false;
        // The file being written is never removed.
        while w.files.len() > 1 && w.files[0].last[0] <= filed[0] && w.files[0].last[1] <= filed[1]
        {
            if let Some(f) = w.files.pop_front() {
                let path = self.inner.dir.join(file_name(f.first));
                let gone = if w.spares.len() < SPARES {
                    std::fs::rename(&path, self.inner.dir.join(spare_name(f.first)))
                        .map(|()| w.spares.push(f.first))
                } else {
                    std::fs::remove_file(&path)
                };
                gone.or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| io_err("release filed journal file", e))?;
                removed = true;
            }
        }
        drop(w);
        if removed {
            sync_dir(&self.inner.dir)?;
        }
        Ok(())
    }

    /// Records held (not filed by both parts).
    pub fn len(&self) -> usize {
        self.inner.entries.read().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The journal's files and their total size in bytes.
    pub fn disk_bytes(&self) -> (usize, u64) {
        let files = match self.inner.writer.lock() {
            Ok(w) => w.files.iter().map(|f| f.first).collect::<Vec<_>>(),
            Err(_) => return (0, 0),
        };
        let bytes = files
            .iter()
            .filter_map(|f| std::fs::metadata(self.inner.dir.join(file_name(*f))).ok())
            .map(|m| m.len())
            .sum();
        (files.len(), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Journal {
        fn append(&self, devices: Vec<u8>, history: Vec<u8>) -> Result<(), StoreError> {
            self.stage(Part::Devices, devices);
            self.stage(Part::History, history);
            self.commit()
        }
    }

    fn seqs(j: &Journal, part: Part) -> Vec<u64> {
        j.unfiled(part).iter().map(|e| e.seq).collect()
    }

    #[test]
    fn records_come_back_after_a_reopen_until_the_parts_they_hold_are_filed() {
        let dir = tempfile::tempdir().expect("dir");
        let j = Journal::open(dir.path(), [0, 0]).expect("open");
        j.append(b"d1".to_vec(), b"h1".to_vec()).expect("append");
        j.append(Vec::new(), Vec::new()).expect("empty");
        j.append(b"d2".to_vec(), Vec::new()).expect("append");
        j.append(Vec::new(), b"h3".to_vec()).expect("append");
        assert_eq!(seqs(&j, Part::Devices), [1, 2]);
        assert_eq!(seqs(&j, Part::History), [1, 3]);
        j.filed(Part::Devices, 2).expect("filed");
        assert!(seqs(&j, Part::Devices).is_empty());
        assert_eq!(seqs(&j, Part::History), [1, 3], "history has filed nothing");
        assert_eq!(j.len(), 3, "1 waits for history, and 2 behind it");
        drop(j);

        let j = Journal::open(dir.path(), [2, 1]).expect("reopen");
        assert!(seqs(&j, Part::Devices).is_empty());
        assert_eq!(seqs(&j, Part::History), [3]);
        assert_eq!(j.len(), 1, "2 held no fixes: it waits for nothing");
        let e = j.unfiled(Part::History);
        assert_eq!(
            (&e[0].devices[..], &e[0].history[..]),
            (&b""[..], &b"h3"[..])
        );
        // New records continue the numbering.
        j.append(b"d4".to_vec(), Vec::new()).expect("append");
        assert_eq!(seqs(&j, Part::Devices), [4]);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_appends_go_on() {
        let dir = tempfile::tempdir().expect("dir");
        let j = Journal::open(dir.path(), [0, 0]).expect("open");
        j.append(b"d1".to_vec(), b"h1".to_vec()).expect("append");
        j.append(b"d2".to_vec(), b"h2".to_vec()).expect("append");
        drop(j);
        // A kill in the middle of the second append: cut the file a few bytes into the second
        // record (before its end mark).
        let path = dir.path().join(file_name(1));
        let (_, len) = parse(&std::fs::read(&path).expect("read"), 1);
        let f = OpenOptions::new().write(true).open(&path).expect("file");
        f.set_len(len as u64 - 3).expect("cut");
        drop(f);
        let bytes = std::fs::read(&path).expect("read");
        let (_, valid) = parse(&bytes, 1);
        assert!(!ends_cleanly(&bytes[valid..]), "a write cut short is told");

        let j = Journal::open(dir.path(), [0, 0]).expect("reopen");
        assert_eq!(seqs(&j, Part::Devices), [1]);
        j.append(b"d2'".to_vec(), Vec::new()).expect("append");
        drop(j);
        let j = Journal::open(dir.path(), [0, 0]).expect("reopen");
        let e = j.unfiled(Part::Devices);
        assert_eq!(e.len(), 2);
        assert_eq!((e[1].seq, &e[1].devices[..]), (2, &b"d2'"[..]));
    }

    #[test]
    fn appends_overwrite_zeros_written_ahead_a_megabyte_at_a_time() {
        let dir = tempfile::tempdir().expect("dir");
        let j = Journal::open(dir.path(), [0, 0]).expect("open");
        let path = dir.path().join(file_name(1));
        let size = || std::fs::metadata(&path).expect("meta").len();
        j.append(b"d1".to_vec(), b"h1".to_vec()).expect("append");
        let first = size();
        assert!(first > AHEAD, "zeros ahead of the first record: {first}");
        for i in 0..100u8 {
            j.append(vec![i; 100], Vec::new()).expect("append");
        }
        assert_eq!(
            size(),
            first,
            "appends within the zeros do not grow the file"
        );
        // One that does not fit grows it, with zeros ahead again.
        j.append(vec![1; AHEAD as usize], Vec::new())
            .expect("append");
        assert!(size() > first + AHEAD, "grown: {}", size());
        drop(j);
        let j = Journal::open(dir.path(), [0, 0]).expect("reopen");
        assert_eq!(j.len(), 102);
        assert_eq!(seqs(&j, Part::Devices).last(), Some(&102));
    }

    #[test]
    fn a_file_goes_once_both_parts_filed_all_its_records() {
        let dir = tempfile::tempdir().expect("dir");
        let j = Journal::open(dir.path(), [0, 0]).expect("open");
        let big = vec![7u8; (FILE_BYTES / 3) as usize];
        for _ in 0..4 {
            j.append(big.clone(), b"h".to_vec()).expect("append");
        }
        // Records 1..=3 filled the first file; 4 is in the second, 5 will start the third.
        assert_eq!(j.disk_bytes().0, 2);
        j.filed(Part::Devices, 4).expect("filed");
        assert_eq!(j.disk_bytes().0, 2, "history has not filed them");
        j.filed(Part::History, 3).expect("filed");
        assert_eq!(j.disk_bytes().0, 1);
        assert_eq!(j.len(), 1);
        drop(j);
        let j = Journal::open(dir.path(), [4, 3]).expect("reopen");
        assert_eq!(seqs(&j, Part::History), [4]);
        assert!(seqs(&j, Part::Devices).is_empty());
    }

    fn spares(dir: &Path) -> Vec<std::fs::Metadata> {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".spare"))
            .map(|e| e.metadata().expect("meta"))
            .collect()
    }

    /// Records 1..=3 fill the first file, which is filed and kept as a spare; 4..=6 fill the
    /// second; the third, which starts at 7, is the spare renamed, not written yet.
    fn with_a_reused_file(dir: &Path) -> Journal {
        let j = Journal::open(dir, [0, 0]).expect("open");
        let big = vec![7u8; (FILE_BYTES / 3) as usize];
        for _ in 0..3 {
            j.append(big.clone(), Vec::new()).expect("append");
        }
        j.filed(Part::Devices, 3).expect("filed");
        let kept = spares(dir);
        assert_eq!(kept.len(), 1, "the first file is kept as a spare");
        assert!(kept[0].len() >= FILE_BYTES);
        for _ in 0..3 {
            j.append(big.clone(), Vec::new()).expect("append");
        }
        assert!(spares(dir).is_empty());
        let third = std::fs::metadata(dir.join(file_name(7))).expect("meta");
        assert!(third.len() >= FILE_BYTES);
        j
    }

    #[test]
    fn a_filed_file_is_reused_and_its_older_records_read_as_its_end() {
        let dir = tempfile::tempdir().expect("dir");
        let j = with_a_reused_file(dir.path());
        j.append(b"d7".to_vec(), b"h7".to_vec()).expect("append");
        drop(j);
        // Records 1..=3 are still in the third file, past 7 and its end mark: they read as its
        // end, a clean one (no warning of a write cut short).
        let bytes = std::fs::read(dir.path().join(file_name(7))).expect("read");
        let (recs, valid) = parse(&bytes, 7);
        assert_eq!(recs.len(), 1);
        assert!(ends_cleanly(&bytes[valid..]));
        let j = Journal::open(dir.path(), [3, 0]).expect("reopen");
        assert_eq!(seqs(&j, Part::Devices), [4, 5, 6, 7]);
        assert_eq!(seqs(&j, Part::History), [7]);
        assert_eq!(
            std::fs::metadata(dir.path().join(file_name(7)))
                .expect("meta")
                .len(),
            (8 + 12 + 4) as u64,
            "cut to its record at open: only the file written is longer"
        );
        j.append(b"d8".to_vec(), Vec::new()).expect("append");
        drop(j);
        let j = Journal::open(dir.path(), [3, 0]).expect("reopen");
        assert_eq!(seqs(&j, Part::Devices), [4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_reused_file_not_written_yet_opens_as_an_empty_file() {
        let dir = tempfile::tempdir().expect("dir");
        // A kill right after the next file started: it holds records 1..=3 only, which end it
        // cleanly (no warning of a write cut short).
        drop(with_a_reused_file(dir.path()));
        let bytes = std::fs::read(dir.path().join(file_name(7))).expect("read");
        assert_eq!(parse(&bytes, 7).1, 0);
        assert!(ends_cleanly(&bytes));
        let j = Journal::open(dir.path(), [3, 0]).expect("reopen");
        assert_eq!(seqs(&j, Part::Devices), [4, 5, 6]);
        j.append(b"d7".to_vec(), Vec::new()).expect("append");
        drop(j);
        let j = Journal::open(dir.path(), [3, 0]).expect("reopen");
        assert_eq!(seqs(&j, Part::Devices), [4, 5, 6, 7]);
    }

    /// A thread that panicked while writing leaves the journal refusing commits, and says why:
    /// neither the data nor the disk is at fault.
    #[test]
    fn a_panic_while_writing_is_reported_as_such() {
        let j = Journal::temporary().expect("journal");
        let writer = j.inner.clone();
        let panicked = std::thread::spawn(move || {
            let _w = writer.writer.lock().expect("writer");
            panic!("a writer dies holding the lock");
        })
        .join();
        assert!(panicked.is_err());
        j.stage(Part::Devices, b"d1".to_vec());
        let e = j.commit().expect_err("refused");
        assert!(matches!(e, StoreError::Poisoned { .. }), "{e:?}");
        assert!(e.to_string().contains("panic"), "{e}");
    }

    #[test]
    fn a_commit_that_fills_its_file_holds_when_the_next_file_cannot_start() {
        let dir = tempfile::tempdir().expect("dir");
        let j = Journal::open(dir.path(), [0, 0]).expect("open");
        let big = vec![7u8; (FILE_BYTES / 3) as usize];
        let fail_rolls = |n| j.inner.writer.lock().expect("writer").fail_rolls = n;
        j.append(big.clone(), Vec::new()).expect("append");
        j.append(big.clone(), Vec::new()).expect("append");
        // The third fills the first file; the folder will not take the next.
        fail_rolls(1);
        j.append(big.clone(), b"h3".to_vec())
            .expect("on disk: the commit holds");
        assert_eq!(seqs(&j, Part::History), [3], "readable before any restart");
        // The next commit tries again first, and fails before it writes anything.
        fail_rolls(1);
        j.stage(Part::Devices, b"d4".to_vec());
        assert!(j.commit().is_err());
        assert_eq!(j.staged(Part::Devices), b"d4", "kept for the next try");
        j.commit().expect("the next file starts");
        assert_eq!(seqs(&j, Part::Devices), [1, 2, 3, 4]);
        assert_eq!(j.disk_bytes().0, 2);
        drop(j);
        let j = Journal::open(dir.path(), [0, 0]).expect("reopen");
        assert_eq!(seqs(&j, Part::Devices), [1, 2, 3, 4]);
        assert_eq!(seqs(&j, Part::History), [3]);
        j.append(b"d5".to_vec(), Vec::new()).expect("append");
    }

    #[test]
    fn a_file_of_fixes_alone_goes_once_the_history_filed_them() {
        let dir = tempfile::tempdir().expect("dir");
        let j = Journal::open(dir.path(), [0, 0]).expect("open");
        let big = vec![7u8; (FILE_BYTES / 3) as usize];
        for _ in 0..4 {
            j.append(Vec::new(), big.clone()).expect("append");
        }
        assert_eq!(j.disk_bytes().0, 2);
        // No fold ever ran: these records held no device record for it to file.
        j.filed(Part::History, 3).expect("filed");
        assert_eq!(j.disk_bytes().0, 1);
        assert_eq!(j.len(), 1);
    }

    #[test]
    fn damage_before_the_last_file_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let j = Journal::open(dir.path(), [0, 0]).expect("open");
        j.append(b"d1".to_vec(), Vec::new()).expect("append");
        drop(j);
        let j = Journal::open(dir.path(), [0, 0]).expect("reopen");
        j.append(b"d2".to_vec(), Vec::new()).expect("append");
        drop(j);
        let path = dir.path().join(file_name(1));
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).expect("write");
        assert!(Journal::open(dir.path(), [0, 0]).is_err());
        // The README's way out: the damaged file and every later one moved out of the folder;
        // the journal then opens, and goes on.
        let aside = tempfile::tempdir().expect("aside");
        for f in [file_name(1), file_name(2)] {
            std::fs::rename(dir.path().join(&f), aside.path().join(&f)).expect("move");
        }
        let j = Journal::open(dir.path(), [0, 0]).expect("opens without them");
        j.append(b"d3".to_vec(), Vec::new()).expect("append");
        drop(j);
        assert_eq!(Journal::open(dir.path(), [0, 0]).expect("reopen").len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A kill can leave the file written last cut anywhere, and a bad disk can flip a byte
        /// in it: opening never panics, and gives back the committed records up to the damage,
        /// in order, and nothing after it.
        #[test]
        fn a_damaged_last_file_opens_to_a_prefix_of_what_was_committed(
            records in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)),
                1..12,
            ),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            flip in proptest::prelude::any::<Option<(proptest::sample::Index, u8)>>(),
        ) {
            let dir = tempfile::tempdir().expect("dir");
            let j = Journal::open(dir.path(), [0, 0]).expect("open");
            let mut committed = Vec::new();
            for (d, h) in &records {
                j.append(d.clone(), h.clone()).expect("append");
                if !(d.is_empty() && h.is_empty()) {
                    committed.push((d.clone(), h.clone()));
                }
            }
            drop(j);
            let path = dir.path().join(file_name(1));
            let mut bytes = std::fs::read(&path).expect("read");
            // The records and a little of the zeros written ahead of them: a cut past that
            // keeps the whole file.
            let span = (parse(&bytes, 1).1 + 2 * END.len()).min(bytes.len());
            let at = cut.index(span + 1);
            if at < span {
                bytes.truncate(at);
            }
            if let Some((at, x)) = flip {
                let within = span.min(bytes.len());
                if within > 0 {
                    let i = at.index(within);
                    bytes[i] ^= x.max(1);
                }
            }
            std::fs::write(&path, &bytes).expect("write");
            let j = Journal::open(dir.path(), [0, 0]).expect("reopen");
            let back: Vec<(Vec<u8>, Vec<u8>)> = {
                let e = j.inner.entries.read().expect("entries");
                e.iter().map(|e| (e.devices.clone(), e.history.clone())).collect()
            };
            proptest::prop_assert!(back.len() <= committed.len());
            proptest::prop_assert_eq!(&back[..], &committed[..back.len()]);
            // Appends go on after what was kept, and read back after another reopen.
            j.append(b"next".to_vec(), Vec::new()).expect("append");
            drop(j);
            let j = Journal::open(dir.path(), [0, 0]).expect("reopen");
            let last = j.unfiled(Part::Devices).last().map(|e| e.devices.clone());
            proptest::prop_assert_eq!(last.as_deref(), Some(&b"next"[..]));
            proptest::prop_assert_eq!(j.len(), back.len() + 1);
        }
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..200usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let (e, valid) = parse(&bytes, (n % 3) as u64);
            assert!(valid <= bytes.len());
            // A record is at least its length, checksum, sequence number and part length.
            assert!(e.len() <= n / 20 + 1);
        }
    }
}
