//! Makes sled's blob files durable with the flush that acknowledges them.
//!
//! Why: sled 0.34 writes a page over a quarter of its 512 KiB segment (a vehicle with a fence of
//! some thousands of points, a leaf of large zones) to a file of its own, `blobs/<lsn>`, and
//! points to it from its log; its flush syncs the log only. After a power cut the log can hold a
//! pointer to a blob the page cache never wrote, which recovery skips as dangling: the `PUT`
//! answered 201 is gone. A kill -9 loses nothing either way (the page cache survives it), so
//! only a power cut shows this.
//!
//! Who: the engine's blob thread before it answers a command that writes (`engine::thread`;
//! device replies do not wait, as the API's limits keep every record they cover far smaller,
//! `registry::MAX_FIELD`), the zone import's writer, and each background pass before the
//! journal drops what it filed.
//!
//! How: after sled's flush, every blob file not yet done is checked, synced, and then the
//! folder (for the new names). A blob is written once, by the thread that wrote its page, as
//! `[crc32][kind][page]` (sled's `blob_io`), and never changed: one whose checksum holds is
//! complete, so synced after that check it is durable whole and never synced again. One whose
//! checksum does not hold yet may still be being written by another thread: it is synced at
//! each call until it holds. A name counts as done only once the folder's sync has succeeded.
//! The folder is listed at every call: it holds one file per large page, and the calls come
//! per command, per background pass and per import slice, never per device reply.

use super::StoreError;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// sled's blob checksum: CRC-32 (IEEE, as `crc32fast`) of the kind byte and the page, stored
/// little-endian in the first four bytes.
const BLOB_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

pub struct BlobSync {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Blob files synced once complete, with the folder synced after them.
    synced: HashSet<OsString>,
    /// A sync failed: every later call fails, until a restart.
    sync_failed: bool,
}

/// Whether a blob file holds all it was written with (its checksum matches its content), and
/// its length.
fn complete(file: &mut File) -> std::io::Result<(bool, u64)> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let whole = match bytes.split_first_chunk::<4>() {
        Some((crc, rest)) if !rest.is_empty() => {
            u32::from_le_bytes(*crc) == BLOB_CRC.checksum(rest)
        }
        _ => false,
    };
    Ok((whole, bytes.len() as u64))
}

/// Writes a file's pages to disk a megabyte at a time, waiting for each, before its `fsync`.
///
/// Why: sled's flush is an `fsync` of its log, which on ext4 (`data=ordered`) commits the
/// file system's journal, and a commit first writes the data of every block allocated in it.
/// Synced in one go, a 12 MB blob is allocated and written inside one commit, and the engine's
/// next flush, which device replies wait for, waits for all 12 MB (on a slow disk, most of a
/// second). A megabyte at a time, no commit holds more than one.
fn write_out(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const CHUNK: u64 = 1 << 20;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let mut at = 0;
    while at < len {
        let n = CHUNK.min(len - at);
        // SAFETY: a plain system call on a file descriptor this function borrows open; it
        // reads and writes no memory of the program.
        let r = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                at as libc::off64_t,
                n as libc::off64_t,
                flags,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        at += n;
    }
    Ok(())
}

impl BlobSync {
    /// For the sled database in `db_dir`.
    pub fn new(db_dir: &Path) -> BlobSync {
        BlobSync {
            dir: db_dir.join("blobs"),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a sync has failed, so that every later one fails until a restart: the
    /// watchdog's probe fails too, for systemd to give the daemon that restart.
    pub fn failed(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_failed
    }

    /// As after a failed sync (the disk's failure cannot be made in a test).
    #[cfg(test)]
    pub(crate) fn fail_for_test(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_failed = true;
    }

    /// [`BlobSync::sync_new`] where the store has blob files to sync (an on-disk store), else
    /// nothing: for callers that hold a store of either kind.
    pub fn sync_if_any(blobs: Option<&BlobSync>) -> Result<(), StoreError> {
        blobs.map_or(Ok(()), |b| b.sync_new().map(|_| ()))
    }

    /// Syncs the blob files written since the last call (and any still being written); call
    /// after sled's flush, before answering for what it flushed. Returns how many files it
    /// synced.
    pub fn sync_new(&self) -> Result<usize, StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Linux may mark pages it failed to write as clean: a later sync that succeeds says
        // nothing about them (as in `sled_file`).
        if st.sync_failed {
            return Err(StoreError::io_at(
                "sync",
                &self.dir,
                std::io::Error::other("an earlier sync of a blob file failed; restart the daemon"),
            ));
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            // sled makes the folder when it opens; nothing to sync without it.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io_at("list", &self.dir, e)),
        };
        let mut present = HashSet::new();
        let mut done = Vec::new();
        let mut synced = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io_at("list", &self.dir, e))?;
            let name = entry.file_name();
            if !st.synced.contains(&name) {
                let path = entry.path();
                // sled removes the blobs of replaced pages: one gone since the listing is fine.
                let mut file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io_at("open", &path, e)),
                };
                // Checked before the sync: complete then is complete in what the sync wrote.
                let (whole, len) =
                    complete(&mut file).map_err(|e| StoreError::io_at("read", &path, e))?;
                if let Err(e) = write_out(&file, len) {
                    st.sync_failed = true;
                    return Err(StoreError::io_at("write out", &path, e));
                }
                if let Err(e) = file.sync_all() {
                    st.sync_failed = true;
                    return Err(StoreError::io_at("sync", &path, e));
                }
                synced += 1;
                if whole {
                    done.push(name.clone());
                }
            }
            present.insert(name);
        }
        if synced > 0 {
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                st.sync_failed = true;
                return Err(StoreError::io_at("sync", &self.dir, e));
            }
        }
        st.synced.retain(|n| present.contains(n));
        st.synced.extend(done);
        Ok(synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob file as sled writes it: checksum, kind byte, page.
    fn blob(page: &[u8]) -> Vec<u8> {
        let mut rest = vec![1u8];
        rest.extend_from_slice(page);
        let mut out = BLOB_CRC.checksum(&rest).to_le_bytes().to_vec();
        out.extend_from_slice(&rest);
        out
    }

    #[test]
    fn complete_blobs_are_synced_once_and_partial_ones_until_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let s = BlobSync::new(tmp.path());
        // No folder yet: nothing to do.
        assert_eq!(s.sync_new().unwrap(), 0);
        let dir = tmp.path().join("blobs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("100"), blob(b"a page")).unwrap();
        // Another thread part-way through its write: the checksum does not hold yet.
        let whole = blob(&[7u8; 4096]);
        std::fs::write(dir.join("200"), &whole[..1000]).unwrap();
        assert_eq!(s.sync_new().unwrap(), 2);
        // The complete one is done; the partial one is synced again at each call.
        assert_eq!(s.sync_new().unwrap(), 1);
        std::fs::write(dir.join("200"), &whole).unwrap();
        assert_eq!(s.sync_new().unwrap(), 1);
        assert_eq!(s.sync_new().unwrap(), 0);
        // A new blob is found.
        std::fs::write(dir.join("300"), blob(b"newer")).unwrap();
        assert_eq!(s.sync_new().unwrap(), 1);
        // A removed blob is forgotten.
        std::fs::remove_file(dir.join("100")).unwrap();
        s.sync_new().unwrap();
        let names = s.state.lock().unwrap().synced.clone();
        assert!(!names.contains(&OsString::from("100")), "{names:?}");
        assert!(names.contains(&OsString::from("300")), "{names:?}");
    }

    /// A folder that cannot be listed is an I/O error naming it, not a corrupt record.
    #[test]
    fn an_unreadable_blobs_folder_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("blobs"),
            b"a file where the folder should be",
        )
        .unwrap();
        let s = BlobSync::new(tmp.path());
        let e = s.sync_new().unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("store: list ") && msg.contains("blobs"),
            "{msg}"
        );
        assert!(BlobSync::sync_if_any(None).is_ok());
        assert!(BlobSync::sync_if_any(Some(&s)).is_err());
    }

    /// sled's own blob files are recognised as complete: synced once, then left alone.
    #[test]
    fn a_real_sled_blob_is_synced_once() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(tmp.path()).open().unwrap();
        db.insert("fence", vec![42u8; 300 << 10]).unwrap();
        db.flush().unwrap();
        let s = BlobSync::new(tmp.path());
        assert_eq!(s.sync_new().unwrap(), 1, "one blob file, synced");
        assert_eq!(s.sync_new().unwrap(), 0, "complete: not synced again");
    }
}
