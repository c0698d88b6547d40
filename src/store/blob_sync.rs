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
//! new names). A blob file is written once, in one call, by the thread that wrote the page, so
//! a file whose last write is a second old is complete: synced then, it is never synced again.
//! Younger ones are synced at each flush until they are that old, as another thread may still
//! be writing one. The folder's modification time, once a second old with every file in it
//! synced, lets a flush with no new blob skip the folder with one `stat`.

use super::StoreError;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How old a file's or the folder's last change must be to be trusted as final. File times
/// move in coarse ticks (a few milliseconds), and a blob is written in one call.
const SETTLED: Duration = Duration::from_secs(1);

pub struct BlobSync {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Blob files synced after their last write.
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
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("open", &path, e)),
                };
                let written = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .map_err(|e| io("stat", &path, e))?;
                file.sync_all().map_err(|e| io("sync", &path, e))?;
                synced += 1;
                if settled(written, now) {
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

    fn backdate(path: &Path, by: Duration) {
        let t = SystemTime::now() - by;
        File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(t))
            .or_else(|_| File::open(path).and_then(|f| f.set_modified(t)))
            .expect("set time");
    }

    #[test]
    fn new_blobs_are_synced_settling_ones_again_and_a_quiet_folder_costs_a_stat() {
        let tmp = tempfile::tempdir().unwrap();
        let s = BlobSync::new(tmp.path());
        // No folder yet: nothing to do.
        assert_eq!(s.sync_new().unwrap(), 0);
        let dir = tmp.path().join("blobs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("100"), b"old").unwrap();
        backdate(&dir.join("100"), Duration::from_secs(5));
        std::fs::write(dir.join("200"), b"new").unwrap();
        // Both synced; the young one stays to be synced again, as a writer may not be done.
        assert_eq!(s.sync_new().unwrap(), 2);
        assert_eq!(s.sync_new().unwrap(), 1);
        backdate(&dir.join("200"), Duration::from_secs(5));
        assert_eq!(s.sync_new().unwrap(), 1);
        // Everything settled: a folder whose time has not moved is not listed again.
        backdate(&dir, Duration::from_secs(5));
        assert_eq!(s.sync_new().unwrap(), 0);
        assert!(s.state.lock().unwrap().quiet.is_some());
        // A new blob moves the folder's time and is found.
        std::fs::write(dir.join("300"), b"newer").unwrap();
        assert_eq!(s.sync_new().unwrap(), 1);
        // A removed blob is forgotten.
        std::fs::remove_file(dir.join("100")).unwrap();
        s.sync_new().unwrap();
        let names = s.state.lock().unwrap().synced.clone();
        assert!(!names.contains(&OsString::from("100")), "{names:?}");
    }
}
