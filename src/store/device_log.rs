//! The last-known records of one group commit as one write: the devices part of the commit
//! journal ([`super::journal`]), filed into the `devices` tree in the background.
//!
//! Why: the engine thread holds every device's acknowledgement until its commit is on disk, so
//! what it writes per commit bounds the acknowledgement rate. One sled insert per changed device
//! (hundreds a commit) was most of that; one journal part per commit, holding every changed
//! record, is a single append. A background pass ([`DeviceLog::fold`]) files the newest record of
//! each device under its own key in `devices`; a device reporting several times between passes
//! is filed once.
//!
//! Layout of a part: `[u16 BE length][record]` per record, each a `DeviceRecord` in the layout
//! of `devices`. Reading every device back is `devices` overlaid with the parts not filed yet,
//! in order ([`DeviceLog::all`]).
//!
//! Crashes: a commit's part is synced before its replies. A fold writes how far it filed
//! (`meta` key `journal.devices_filed`) with what it filed and flushes before the journal may
//! drop those records, so a kill in between files them again, never loses them.
//!
//! Databases written before the journal kept these parts in the `devices_log` tree, one entry
//! per commit: opening files what is left there first ([`DeviceLog::open`]).

use super::journal::{Journal, Part};
use super::{decode_device, DeviceRecord, StoreError};
use crate::fast_hash::FastMap;

/// The journal's devices part and the tree it is folded into. Cheap to clone; the engine
/// appends, one background pass folds.
#[derive(Clone)]
pub struct DeviceLog {
    db: sled::Db,
    devices: sled::Tree,
    meta: sled::Tree,
    journal: Journal,
}

fn corrupt(msg: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: "devices_log",
        msg: msg.to_string(),
    }
}

/// Calls `f` with the id and encoded record of each record of a part.
fn each_record<'a>(
    entry: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut rest = entry;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = u16::from_be_bytes(*len) as usize;
        let Some((rec, tail)) = tail.split_at_checked(len) else {
            return Err(corrupt("entry truncated"));
        };
        // The id is the record's first field: a postcard string (varint length, then bytes).
        let (id_len, id_at) = varint(rec).ok_or_else(|| corrupt("record without an id"))?;
        let id = id_at
            .checked_add(id_len)
            .and_then(|end| rec.get(id_at..end))
            .ok_or_else(|| corrupt("record truncated"))?;
        f(id, rec)?;
        rest = tail;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(corrupt("entry truncated"))
    }
}

impl DeviceLog {
    /// Opens the log over `journal`, first filing into `devices` what a database written before
    /// the journal left in its `devices_log` tree.
    pub(super) fn open(
        db: &sled::Db,
        devices: &sled::Tree,
        meta: &sled::Tree,
        journal: Journal,
    ) -> Result<DeviceLog, StoreError> {
        let legacy = db.open_tree("devices_log")?;
        if !legacy.is_empty() {
            let mut newest: FastMap<Vec<u8>, Vec<u8>> = FastMap::default();
            for kv in legacy.iter() {
                let (_, v) = kv?;
                each_record(&v, |id, rec| {
                    newest.insert(id.to_vec(), rec.to_vec());
                    Ok(())
                })?;
            }
            for (id, rec) in newest {
                devices.insert(id, rec)?;
            }
            db.flush()?;
            legacy.clear()?;
            db.flush()?;
        }
        Ok(DeviceLog {
            db: db.clone(),
            devices: devices.clone(),
            meta: meta.clone(),
            journal,
        })
    }

    /// Adds `records` to the commit under way. Not durable until the store's next flush (the
    /// engine's commit).
    pub fn append<'a>(
        &self,
        records: impl IntoIterator<Item = &'a DeviceRecord>,
    ) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for rec in records {
            // The length goes first: a placeholder, set once the record is encoded after it.
            let at = buf.len();
            buf.extend_from_slice(&[0, 0]);
            let r = crate::encode::append(rec, &mut buf).map_err(corrupt)?;
            let len = u16::try_from(r.len()).map_err(|_| corrupt("record over 64 KiB"))?;
            buf[at..at + 2].copy_from_slice(&len.to_be_bytes());
        }
        if !buf.is_empty() {
            self.journal.stage(Part::Devices, buf);
        }
        Ok(())
    }

    /// Files the newest record of each device of the oldest `max` commits into `devices`, and
    /// lets the journal drop them. Returns how many commits it folded.
    pub fn fold(&self, max: usize) -> Result<usize, StoreError> {
        let entries = self.journal.unfiled(Part::Devices);
        let entries = &entries[..entries.len().min(max)];
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let mut newest: FastMap<&[u8], &[u8]> = FastMap::default();
        for e in entries {
            each_record(&e.devices, |id, rec| {
                newest.insert(id, rec);
                Ok(())
            })
            .map_err(|err| corrupt(format!("journal record {}: {err}", e.seq)))?;
        }
        for (id, rec) in newest {
            self.devices.insert(id, rec)?;
        }
        self.journal
            .filed_into(Part::Devices, last, &self.db, &self.meta)?;
        Ok(entries.len())
    }

    /// Folds `slice` commits at a time until none is left, or `slices` slices; returns how many
    /// it folded.
    pub fn fold_all(&self, slice: usize, slices: usize) -> Result<usize, StoreError> {
        let mut total = 0;
        for _ in 0..slices {
            let n = self.fold(slice.max(1))?;
            total += n;
            if n < slice.max(1) {
                break;
            }
        }
        Ok(total)
    }

    /// Commits not folded yet.
    pub fn pending(&self) -> usize {
        self.journal.unfiled(Part::Devices).len()
    }

    /// Commits the journal holds: not filed by this fold or by the history's drain.
    pub fn journal_records(&self) -> usize {
        self.journal.len()
    }

    /// The parts not filed yet. Taken before `devices` is read: a fold in between leaves in
    /// `devices` records these hold too. `all` runs before the fold starts (the engine's open);
    /// `get` may see an older record of a device in a part than the one a concurrent fold has
    /// just filed, never a missing one.
    fn unfiled(&self) -> Unfiled {
        let staged = self.journal.staged(Part::Devices);
        Unfiled {
            committed: self.journal.unfiled(Part::Devices),
            staged,
        }
    }

    /// Every device's newest record: `devices` overlaid with the parts not filed yet, in
    /// commit order.
    pub fn all(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let unfiled = self.unfiled();
        let mut all: FastMap<Vec<u8>, DeviceRecord> = FastMap::default();
        for kv in self.devices.iter() {
            let (k, v) = kv?;
            all.insert(k.to_vec(), decode_device(&v)?);
        }
        for part in unfiled.parts() {
            each_record(part, |id, rec| {
                all.insert(id.to_vec(), decode_device(rec)?);
                Ok(())
            })?;
        }
        let mut out: Vec<DeviceRecord> = all.into_values().collect();
        out.sort_by(|a, b| a.device_id.as_str().cmp(b.device_id.as_str()));
        Ok(out)
    }

    /// One device's newest record.
    pub fn get(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let unfiled = self.unfiled();
        let mut found = None;
        for part in unfiled.parts().rev() {
            each_record(part, |rid, rec| {
                if rid == id.as_bytes() {
                    found = Some(rec);
                }
                Ok(())
            })?;
            if found.is_some() {
                break;
            }
        }
        match found {
            Some(rec) => decode_device(rec).map(Some),
            None => match self.devices.get(id.as_bytes())? {
                None => Ok(None),
                Some(v) => decode_device(&v).map(Some),
            },
        }
    }
}

/// The devices parts not filed yet: the committed records, oldest first, then what the commit
/// under way staged.
struct Unfiled {
    committed: Vec<std::sync::Arc<super::journal::Entry>>,
    staged: Vec<u8>,
}

impl Unfiled {
    fn parts(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.committed
            .iter()
            .map(|e| &e.devices[..])
            .chain(std::iter::once(&self.staged[..]))
    }
}

/// A postcard (LEB128) varint at the start of `b`: its value and its length in bytes.
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v: usize = 0;
    for (i, &byte) in b.iter().enumerate().take(5) {
        v |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::Part;
    use crate::event::{DeviceId, Protocol, Timestamp};
    use crate::store::{DeviceRecord, Store, StoredPosition};

    fn rec(id: &str, t: i64) -> DeviceRecord {
        let mut r = DeviceRecord::new(DeviceId::new(id), Protocol::Gt06, Timestamp::from_secs(1));
        r.last_seen = Timestamp::from_secs(t);
        r.position = Some(StoredPosition {
            time: Timestamp::from_secs(t),
            lat: 22.5,
            lon: 114.0 + t as f64 * 1e-4,
            valid: true,
            speed_kmh: 0.0,
            course: 0,
            satellites: None,
            altitude_m: None,
            received_at: Timestamp::from_secs(t + 1),
            cell: None,
            wifi: None,
        });
        r
    }

    fn last_seen(s: &Store) -> Vec<(String, i64)> {
        let all = s.all_devices().expect("read");
        all.iter()
            .map(|r| (r.device_id.as_str().to_string(), r.last_seen.secs()))
            .collect()
    }

    #[test]
    fn the_newest_record_wins_before_and_after_a_fold_and_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let long = "9".repeat(32);
        {
            let s = Store::open(dir.path(), 8).expect("open");
            // Two group commits, and one that changed no record.
            s.put_devices([&rec("1001", 10), &rec("1002", 10)])
                .expect("put");
            s.flush().expect("commit");
            s.put_devices([&rec("1001", 20)]).expect("put");
            s.flush().expect("commit");
            s.put_devices(std::iter::empty()).expect("nothing");
            s.flush().expect("commit");
            assert_eq!(s.device_log().pending(), 2);
            assert_eq!(last_seen(&s), [("1001".into(), 20), ("1002".into(), 10)]);
            assert_eq!(s.device_log().fold(1).expect("fold"), 1);
            assert_eq!(last_seen(&s), [("1001".into(), 20), ("1002".into(), 10)]);
            s.put_devices([&rec("1002", 30), &rec(&long, 5)])
                .expect("put");
            s.flush().expect("commit");
            // More commits than a slice: one pass folds them all.
            assert_eq!(s.device_log().fold_all(1, 10).expect("fold"), 2);
            assert_eq!(s.device_log().pending(), 0);
            // Staged, not committed yet: read, but only durable once flushed.
            s.put_devices([&rec("1001", 40)]).expect("put");
            assert_eq!(
                s.get_device("1001")
                    .expect("get")
                    .map(|r| r.last_seen.secs()),
                Some(40)
            );
            s.flush().expect("flush");
        }
        let s = crate::store::reopen(|| Store::open(dir.path(), 8));
        assert_eq!(
            s.device_log().pending(),
            1,
            "the last commit was never folded"
        );
        assert_eq!(
            last_seen(&s),
            [("1001".into(), 40), ("1002".into(), 30), (long.clone(), 5)]
        );
        let a = s.get_device("1001").expect("get").expect("1001");
        assert_eq!(a.position, rec("1001", 40).position);
        assert_eq!(
            s.get_device(&long)
                .expect("get")
                .map(|r| r.last_seen.secs()),
            Some(5)
        );
        assert!(s.get_device("1003").expect("get").is_none());
        // New commits go after the ones left from before.
        s.put_devices([&rec("1001", 50)]).expect("put");
        s.flush().expect("commit");
        assert_eq!(
            s.get_device("1001")
                .expect("get")
                .map(|r| r.last_seen.secs()),
            Some(50)
        );
        assert_eq!(s.device_log().fold(100).expect("fold"), 2);
        assert_eq!(last_seen(&s)[0], ("1001".into(), 50));
    }

    #[test]
    fn what_a_database_before_the_journal_logged_is_filed_at_open() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let s = Store::open(dir.path(), 8).expect("open");
            s.put_devices([&rec("1001", 10)]).expect("put");
            s.flush().expect("commit");
            s.device_log().fold(10).expect("fold");
            // As the layout before the journal left them: entries in the `devices_log` tree.
            let mut entry = Vec::new();
            for r in [rec("1001", 20), rec("1002", 5)] {
                let enc = postcard::to_allocvec(&r).expect("encode");
                entry.extend_from_slice(&(enc.len() as u16).to_be_bytes());
                entry.extend_from_slice(&enc);
            }
            let log = s.db.open_tree("devices_log").expect("tree");
            log.insert(0u64.to_be_bytes(), entry).expect("insert");
            s.db.flush().expect("flush");
        }
        let s = crate::store::reopen(|| Store::open(dir.path(), 8));
        assert_eq!(last_seen(&s), [("1001".into(), 20), ("1002".into(), 5)]);
        assert!(s.db.open_tree("devices_log").expect("tree").is_empty());
        assert_eq!(s.device_log().pending(), 0);
    }

    #[test]
    fn a_damaged_part_is_an_error_not_a_panic() {
        for bad in [&[0u8][..], &[0, 9, 1], &[0, 1, 0x80], &[0, 2, 5, b'1']] {
            let s = Store::temporary().expect("store");
            s.journal.stage(Part::Devices, bad.to_vec());
            s.flush().expect("commit");
            assert!(s.all_devices().is_err(), "{bad:?}");
            assert!(s.device_log().fold(10).is_err(), "{bad:?}");
        }
    }
}
