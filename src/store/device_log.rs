//! The last-known records of one group commit as one write: the `devices_log` tree.
//!
//! Why: the engine thread holds every device's acknowledgement until its commit is on disk, so
//! what it writes per commit bounds the acknowledgement rate. One sled insert per changed device
//! (hundreds a commit) was most of that; one entry per commit, holding every changed record, is
//! a single insert. A background pass ([`DeviceLog::fold`]) files the newest record of each
//! device under its own key in `devices` and removes the entries it filed, so the log stays
//! short; a device reporting several times between passes is filed once.
//!
//! Layout: key = entry number (u64 BE, increasing); value = `[u16 BE length][record]` per
//! record, each a `DeviceRecord` in the layout of `devices`. Reading every device back is
//! `devices` overlaid with the entries in order ([`DeviceLog::all`]).
//!
//! Crashes: an entry is written before the commit's flush, so an acknowledged record is in the
//! log or in `devices`. A fold flushes what it filed before removing the entries, so a kill
//! between the two leaves entries whose records are filed already: filed again next time.

use super::{decode_device, DeviceRecord, StoreError};
use crate::fast_hash::FastMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The log and the tree it is folded into. Cheap to clone; the engine appends, one background
/// pass folds.
#[derive(Clone)]
pub struct DeviceLog {
    db: sled::Db,
    log: sled::Tree,
    devices: sled::Tree,
    next: Arc<AtomicU64>,
}

fn corrupt(msg: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: "devices_log",
        msg: msg.to_string(),
    }
}

/// Calls `f` with the id and encoded record of each record of an entry.
fn each_record(
    entry: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
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
    pub(super) fn open(db: &sled::Db, devices: &sled::Tree) -> Result<DeviceLog, StoreError> {
        let log = db.open_tree("devices_log")?;
        let next = match log.last()? {
            Some((k, _)) => entry_number(&k)? + 1,
            None => 0,
        };
        Ok(DeviceLog {
            db: db.clone(),
            log,
            devices: devices.clone(),
            next: Arc::new(AtomicU64::new(next)),
        })
    }

    /// Appends one entry holding `records` (nothing if there are none). Not durable until the
    /// database's next flush (the engine's commit).
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
        if buf.is_empty() {
            return Ok(());
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.log.insert(n.to_be_bytes(), buf)?;
        Ok(())
    }

    /// Files the newest record of each device of the oldest `max` entries into `devices`, then
    /// removes those entries. Returns how many entries it folded.
    pub fn fold(&self, max: usize) -> Result<usize, StoreError> {
        let mut newest: FastMap<Vec<u8>, Vec<u8>> = FastMap::default();
        let mut keys = Vec::new();
        for kv in self.log.iter().take(max) {
            let (k, v) = kv?;
            each_record(&v, |id, rec| {
                newest.insert(id.to_vec(), rec.to_vec());
                Ok(())
            })?;
            keys.push(k);
        }
        if keys.is_empty() {
            return Ok(0);
        }
        for (id, rec) in newest {
            self.devices.insert(id, rec)?;
        }
        // Filed before the entries go: a kill in between files them again, never loses them.
        self.db.flush()?;
        for k in &keys {
            self.log.remove(k)?;
        }
        Ok(keys.len())
    }

    /// Entries not folded yet.
    pub fn pending(&self) -> usize {
        self.log.len()
    }

    /// Every device's newest record: `devices` overlaid with the log, in entry order.
    pub fn all(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut all: FastMap<Vec<u8>, DeviceRecord> = FastMap::default();
        for kv in self.devices.iter() {
            let (k, v) = kv?;
            all.insert(k.to_vec(), decode_device(&v)?);
        }
        for kv in self.log.iter() {
            let (_, v) = kv?;
            each_record(&v, |id, rec| {
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
        for kv in self.log.iter().rev() {
            let (_, v) = kv?;
            let mut found = None;
            each_record(&v, |rid, rec| {
                if rid == id.as_bytes() {
                    found = Some(decode_device(rec)?);
                }
                Ok(())
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        match self.devices.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => decode_device(&v).map(Some),
        }
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

fn entry_number(k: &[u8]) -> Result<u64, StoreError> {
    let b: [u8; 8] = k.try_into().map_err(|_| corrupt("bad entry key"))?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
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
            s.put_devices([&rec("1001", 10), &rec("1002", 10)])
                .expect("put");
            s.put_devices([&rec("1001", 20)]).expect("put");
            s.put_devices(std::iter::empty()).expect("nothing");
            assert_eq!(s.device_log().pending(), 2);
            assert_eq!(last_seen(&s), [("1001".into(), 20), ("1002".into(), 10)]);
            assert_eq!(s.device_log().fold(1).expect("fold"), 1);
            assert_eq!(last_seen(&s), [("1001".into(), 20), ("1002".into(), 10)]);
            s.put_devices([&rec("1002", 30), &rec(&long, 5)])
                .expect("put");
            assert_eq!(s.device_log().fold(100).expect("fold"), 2);
            assert_eq!(s.device_log().pending(), 0);
            s.put_devices([&rec("1001", 40)]).expect("put");
            s.flush().expect("flush");
        }
        let s = crate::store::reopen(|| Store::open(dir.path(), 8));
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
        // New entries go after the ones left from before.
        s.put_devices([&rec("1001", 50)]).expect("put");
        assert_eq!(
            s.get_device("1001")
                .expect("get")
                .map(|r| r.last_seen.secs()),
            Some(50)
        );
    }

    #[test]
    fn a_damaged_entry_is_an_error_not_a_panic() {
        let s = Store::temporary().expect("store");
        let log = s.device_log();
        for bad in [&[0u8][..], &[0, 9, 1], &[0, 1, 0x80], &[0, 2, 5, b'1']] {
            log.log.insert(u64::MAX.to_be_bytes(), bad).expect("insert");
            assert!(s.all_devices().is_err(), "{bad:?}");
            assert!(log.fold(10).is_err(), "{bad:?}");
        }
    }
}
