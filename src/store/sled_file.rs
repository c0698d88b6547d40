//! The sync of a sled database's log file that sled's own flush leaves out.
//!
//! Why: on Linux, sled 0.34's `flush` writes its buffers with `pwrite` and
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` (`pagecache/iobuf.rs`), which neither
//! writes the file's metadata (blocks a segment newly takes, the file's length) nor flushes the
//! disk's write cache; only its background thread's `fsync`, once a second, does. A kill -9
//! loses nothing of it (the kernel keeps the pages), but a power cut can: what an
//! acknowledgement covers is made durable here, on the same file, before the acknowledgement.
//!
//! A failed sync is sticky: Linux may mark the pages it could not write as clean, so a later
//! sync that succeeds says nothing about them. Every flush after one fails, until a restart
//! recovers from what is on disk.

use super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct SledFile {
    /// `None` for a temporary database, which nothing needs to survive.
    file: Option<std::fs::File>,
    path: PathBuf,
    failed: AtomicBool,
}

impl SledFile {
    /// The log file of the sled database at `dir` (sled 0.34 keeps it as `db`).
    pub fn open(dir: &Path) -> Result<SledFile, StoreError> {
        let path = dir.join("db");
        let file = std::fs::File::open(&path).map_err(|e| StoreError::io_at("open", &path, e))?;
        Ok(SledFile {
            file: Some(file),
            path,
            failed: AtomicBool::new(false),
        })
    }

    /// For a temporary database: its flush is sled's alone.
    pub fn temporary() -> SledFile {
        SledFile {
            file: None,
            path: PathBuf::new(),
            failed: AtomicBool::new(false),
        }
    }

    /// sled's flush, then the file's `fdatasync`; returns what sled flushed.
    pub fn flush(&self, db: &sled::Db) -> Result<usize, StoreError> {
        let n = db.flush()?;
        self.sync()?;
        Ok(n)
    }

    /// The file's `fdatasync` alone, for writes sled has already flushed.
    pub fn sync(&self) -> Result<(), StoreError> {
        let Some(f) = &self.file else {
            return Ok(());
        };
        let failed = || {
            StoreError::io_at(
                "sync",
                &self.path,
                std::io::Error::other("an earlier sync of this file failed; restart the daemon"),
            )
        };
        if self.failed.load(Ordering::Acquire) {
            return Err(failed());
        }
        f.sync_data().map_err(|e| {
            self.failed.store(true, Ordering::Release);
            StoreError::io_at("sync", &self.path, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_and_syncs_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let f = SledFile::open(dir.path()).expect("sled keeps its log as `db`");
        db.insert("k", "v").unwrap();
        assert!(f.flush(&db).unwrap() > 0);
        assert!(SledFile::open(&dir.path().join("none")).is_err());
        assert_eq!(SledFile::temporary().flush(&db).unwrap(), 0);
    }
}
