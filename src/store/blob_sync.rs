//! Makes sled's blob files durable with the flush that acknowledges them.
//!
//! Why: sled 0.34 writes a page over a quarter of its 512 KiB segment (a vehicle with a fence of
//! some thousands of points, a leaf of large zones) to a file of its own, `blobs/<lsn>`, and
//! points to it from its log; its flush syncs the log only. After a power cut the log can hold a
//! pointer to a blob the page cache never wrote, which recovery skips as dangling: the `PUT`
//! answered 201 is gone. A kill -9 loses nothing either way (the page cache survives it), so
//! only a power cut shows this.
//!
//! Who: the engine's blob thread before it answers a command (`engine::thread`: device replies
//! do not wait, as no record they cover is that large), the zone import's writer, and each
//! background pass before the journal drops what it filed.
//!
//! How: after sled's flush, every blob file not yet synced is synced, then the folder (for the
//! new names). A blob is written once, by the thread that wrote its page, as `[crc32][kind]
//! [page]` (sled's `blob_io`), and never changed: one whose checksum holds is complete, and once
//! synced it is never synced again. One that does not hold yet may still be being written by
//! another thread, and is synced again at each call until it does. The folder's modification
//! time, once a second old with every file in it synced, lets a call with no new blob skip the
//! folder with one `stat`.

use super::StoreError;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How old the folder's last change must be before its time is trusted to show the next one:
/// file times move in coarse ticks (a few milliseconds).
const SETTLED: Duration = Duration::from_secs(1);

/// sled's blob checksum: CRC-32 (IEEE, as `crc32fast`) of the kind byte and the page, stored
/// little-endian in the first four bytes.
const BLOB_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

pub struct BlobSync {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Blob files synced once complete.
    synced: HashSet<OsString>,
    /// The folder's modification time when it last held nothing to sync, and was settled.
    quiet: Option<SystemTime>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Corrupt {
        tree: "blobs",
        msg: format!("{what} {}: {e}", path.display()),
    }
}

/// Whether a blob file holds all it was written with: its checksum matches its content.
fn complete(file: &mut File) -> std::io::Result<bool> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(match bytes.split_first_chunk::<4>() {
        Some((crc, rest)) if !rest.is_empty() => {
            u32::from_le_bytes(*crc) == BLOB_CRC.checksum(rest)
        }
        _ => false,
    })
}

fn settled(t: SystemTime, now: SystemTime) -> bool {
    now.duration_since(t).is_ok_and(|age| age >= SETTLED)
}

impl BlobSync {
    /// For the sled database in `db_dir`.
    pub fn new(db_dir: &Path) -> BlobSync {
        BlobSync {
            dir: db_dir.join("blobs"),
            state: Mutex::new(State::default()),
        }
    }

    /// Syncs the blob files written since the last call (and any still settling); call after
    /// sled's flush, before answering for what it flushed. Returns how many files it synced.
    pub fn sync_new(&self) -> Result<usize, StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let dir_time = match std::fs::metadata(&self.dir).and_then(|m| m.modified()) {
            Ok(t) => t,
            // sled makes the folder when it opens; nothing to sync without it.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("stat", &self.dir, e)),
        };
        if st.quiet == Some(dir_time) {
            return Ok(0);
        }
        let now = SystemTime::now();
        let mut present = HashSet::new();
        let mut synced = 0;
        let mut settling = false;
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io("list", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("list", &self.dir, e))?;
            let name = entry.file_name();
            if !st.synced.contains(&name) {
                let path = entry.path();
                // sled removes the blobs of replaced pages: one gone since the listing is fine.
                let mut file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("open", &path, e)),
                };
                file.sync_all().map_err(|e| io("sync", &path, e))?;
                synced += 1;
                // Read after the sync: complete now means complete in what was synced.
                if complete(&mut file).map_err(|e| io("read", &path, e))? {
                    st.synced.insert(name.clone());
                } else {
                    settling = true;
                }
            }
            present.insert(name);
        }
        if synced > 0 {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("sync", &self.dir, e))?;
        }
        st.synced.retain(|n| present.contains(n));
        st.quiet = (!settling && settled(dir_time, now)).then_some(dir_time);
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

    fn backdate(path: &Path, by: Duration) {
        File::open(path)
            .and_then(|f| f.set_modified(SystemTime::now() - by))
            .expect("set time");
    }

    #[test]
    fn complete_blobs_are_synced_once_partial_ones_until_complete_and_a_quiet_folder_is_a_stat() {
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
        // Everything synced and the folder's time settled: it is not listed again.
        backdate(&dir, Duration::from_secs(5));
        assert_eq!(s.sync_new().unwrap(), 0);
        assert!(s.state.lock().unwrap().quiet.is_some());
        // A new blob moves the folder's time and is found.
        std::fs::write(dir.join("300"), blob(b"newer")).unwrap();
        assert_eq!(s.sync_new().unwrap(), 1);
        // A removed blob is forgotten.
        std::fs::remove_file(dir.join("100")).unwrap();
        s.sync_new().unwrap();
        let names = s.state.lock().unwrap().synced.clone();
        assert!(!names.contains(&OsString::from("100")), "{names:?}");
        assert!(names.contains(&OsString::from("300")), "{names:?}");
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
