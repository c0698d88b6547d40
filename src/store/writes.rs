//! The sled writes of one engine commit, held in memory until the commit's flush applies them
//! with its alerts as one crash-atomic batch ([`super::Store::apply`]).
//!
//! Why: sled makes durable whatever its log holds when any thread flushes (its own flusher every
//! second, the journal's filing passes), so writes made one tree at a time while a commit is
//! applied can reach the disk in part. An alert on disk without the rule state that remembers
//! raising it is raised again, under a new id, when the device resends the fix a kill left
//! unacknowledged; a loan on disk without the alert its change raised loses the alert. Held here
//! and written in one batch, a commit's alerts and states reach the disk together or not at all.

use super::{Store, StoreError};
use crate::event::{DeviceId, Timestamp};
use std::collections::BTreeMap;

/// The trees the engine writes in its commits, in [`Writes::trees`] order.
#[derive(Clone, Copy)]
enum Tree {
    Vehicles,
    Rules,
    Risk,
    Bound,
    Held,
    Registrations,
    VehicleRules,
    Stays,
    Meta,
}

const TREES: usize = 9;

/// One tree's writes: a value (`Some`) or a deletion (`None`) by key; a later write to a key
/// replaces an earlier one.
type TreeWrites = BTreeMap<Box<[u8]>, Option<Box<[u8]>>>;

#[derive(Default, Debug)]
pub struct Writes {
    trees: [TreeWrites; TREES],
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.trees.iter().all(BTreeMap::is_empty)
    }

    fn put(&mut self, tree: Tree, key: &[u8], value: Option<&[u8]>) {
        self.trees[tree as usize].insert(key.into(), value.map(Into::into));
    }

    /// A write to `key` of `tree` staged here: `Some(None)` when it is deleted.
    fn staged(&self, tree: Tree, key: &[u8]) -> Option<Option<&[u8]>> {
        self.trees[tree as usize].get(key).map(Option::as_deref)
    }

    pub fn put_vehicle(&mut self, id: &str, body: &[u8]) {
        self.put(Tree::Vehicles, id.as_bytes(), Some(body));
    }

    pub fn remove_vehicle(&mut self, id: &str) {
        self.put(Tree::Vehicles, id.as_bytes(), None);
    }

    /// Writes (`Some`) or deletes (`None`) a device's rule state.
    pub fn put_rule_state(&mut self, id: &DeviceId, state: Option<&[u8]>) {
        self.put(Tree::Rules, id.as_str().as_bytes(), state);
    }

    /// Writes a vehicle's risk state, or removes it (`None`).
    pub fn put_risk(&mut self, vehicle_id: &str, state: Option<&[u8]>) {
        self.put(Tree::Risk, vehicle_id.as_bytes(), state);
    }

    /// Records when `device` was bound to `vehicle`; `None` forgets it.
    pub fn put_bound(&mut self, device: &DeviceId, bound: Option<(&str, Timestamp)>) {
        let value = bound.map(|(vehicle, since)| {
            let mut v = since.millis().to_be_bytes().to_vec();
            v.extend_from_slice(vehicle.as_bytes());
            v
        });
        self.put(Tree::Bound, device.as_str().as_bytes(), value.as_deref());
    }

    /// Keeps `device`'s held `reappeared`; `None` forgets it.
    pub fn put_held(&mut self, device: &DeviceId, held: Option<&crate::rules::HeldReappearance>) {
        let value = held.map(|h| {
            let ms = |t: Option<Timestamp>| t.map_or(i64::MIN, Timestamp::millis);
            [ms(h.silent_since), ms(h.last_seen), h.at.millis()]
                .iter()
                .flat_map(|m| m.to_be_bytes())
                .collect::<Vec<u8>>()
        });
        self.put(Tree::Held, device.as_str().as_bytes(), value.as_deref());
    }

    pub fn put_registration(&mut self, id: &DeviceId, terminal_id: &str) {
        self.put(
            Tree::Registrations,
            id.as_str().as_bytes(),
            Some(terminal_id.as_bytes()),
        );
    }

    pub fn remove_registration(&mut self, id: &DeviceId) {
        self.put(Tree::Registrations, id.as_str().as_bytes(), None);
    }

    /// Writes (`Some`) or deletes (`None`) a vehicle's rule state.
    pub fn put_vehicle_rule_state(&mut self, id: &str, state: Option<&[u8]>) {
        self.put(Tree::VehicleRules, id.as_bytes(), state);
    }

    /// Writes (`Some`) or deletes (`None`) a vehicle's `long_stay` rule state.
    pub fn put_stay_state(&mut self, id: &str, state: Option<&[u8]>) {
        self.put(Tree::Stays, id.as_bytes(), state);
    }

    /// How many alerts were ever raised ([`Store::alerts_raised`]).
    pub fn set_alerts_raised(&mut self, n: u64) {
        self.put(
            Tree::Meta,
            super::ALERTS_RAISED.as_bytes(),
            Some(&n.to_be_bytes()),
        );
    }
}

/// Decodes a `held` value as [`Writes::put_held`] encodes it.
pub(super) fn decode_held(v: &[u8]) -> Option<crate::rules::HeldReappearance> {
    let field = |i: usize| {
        let b: [u8; 8] = v.get(i * 8..i * 8 + 8)?.try_into().ok()?;
        Some(i64::from_be_bytes(b))
    };
    let opt = |ms: i64| (ms != i64::MIN).then(|| Timestamp::from_millis(ms));
    Some(crate::rules::HeldReappearance {
        silent_since: opt(field(0)?),
        last_seen: opt(field(1)?),
        at: Timestamp::from_millis(field(2)?),
    })
}

/// Decodes a `bound` value: since when, then the vehicle's id.
pub(super) fn decode_bound(v: &[u8]) -> Option<(String, Timestamp)> {
    let (since, vehicle) = v.split_first_chunk::<8>()?;
    Some((
        String::from_utf8_lossy(vehicle).into_owned(),
        Timestamp::from_millis(i64::from_be_bytes(*since)),
    ))
}

impl Store {
    /// The vehicle `device` was last bound to, and since when, with `staged` (this commit's
    /// writes, not yet applied) read over the store.
    pub fn bound(
        &self,
        staged: &Writes,
        device: &DeviceId,
    ) -> Result<Option<(String, Timestamp)>, StoreError> {
        let key = device.as_str().as_bytes();
        Ok(match staged.staged(Tree::Bound, key) {
            Some(v) => v.and_then(decode_bound),
            None => self.bound.get(key)?.and_then(|v| decode_bound(&v)),
        })
    }

    /// Writes `writes`, and `also` (the outbox's batch of the same commit), as one batch that
    /// sled recovers whole or not at all; `writes` is left empty once it is. Not durable until
    /// [`Store::flush`].
    ///
    /// Like any sled batch it takes sled's process-wide write lock, so it waits for a flush
    /// another thread has under way (the journal's filing passes flush once a second); a commit
    /// that staged nothing takes no lock.
    pub fn apply(
        &self,
        writes: &mut Writes,
        also: Option<(&sled::Tree, sled::Batch)>,
    ) -> Result<(), StoreError> {
        let trees = [
            &self.vehicles,
            &self.rules,
            &self.risk,
            &self.bound,
            &self.held,
            &self.registrations,
            &self.vehicle_rules,
            &self.stays,
            &self.meta,
        ];
        let mut parts: Vec<(&sled::Tree, sled::Batch)> = Vec::new();
        for (tree, staged) in trees.into_iter().zip(&writes.trees) {
            if staged.is_empty() {
                continue;
            }
            let mut batch = sled::Batch::default();
            for (k, v) in staged {
                match v {
                    Some(v) => batch.insert(&**k, &**v),
                    None => batch.remove(&**k),
                }
            }
            parts.push((tree, batch));
        }
        parts.extend(also);
        match parts.len() {
            0 => {}
            // One tree: its batch alone is recovered whole.
            1 => {
                if let Some((tree, batch)) = parts.pop() {
                    tree.apply_batch(batch)?;
                }
            }
            _ => {
                use sled::transaction::{TransactionError, Transactional};
                let trees: Vec<&sled::Tree> = parts.iter().map(|(t, _)| *t).collect();
                trees
                    .as_slice()
                    .transaction(|tx| {
                        for (t, (_, batch)) in tx.iter().zip(&parts) {
                            t.apply_batch(batch)?;
                        }
                        Ok::<
                            _,
                            sled::transaction::ConflictableTransactionError<
                                std::convert::Infallible,
                            >,
                        >(())
                    })
                    .map_err(|e| match e {
                        TransactionError::Storage(e) => StoreError::Sled(e),
                        TransactionError::Abort(never) => match never {},
                    })?;
            }
        }
        *writes = Writes::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit's writes reach the trees only when applied, and a read of a binding sees the
    /// commit's own write first.
    #[test]
    fn writes_stay_out_of_the_trees_until_applied() {
        let store = Store::temporary().unwrap();
        let d = DeviceId::new("1");
        let mut w = Writes::default();
        w.put_bound(&d, Some(("V-1", Timestamp::from_secs(5))));
        w.put_rule_state(&d, Some(b"state"));
        w.set_alerts_raised(3);
        assert_eq!(store.bound.get("1").unwrap(), None);
        assert_eq!(
            store.bound(&w, &d).unwrap(),
            Some(("V-1".to_string(), Timestamp::from_secs(5)))
        );
        w.put_bound(&d, None);
        assert_eq!(store.bound(&w, &d).unwrap(), None, "the later write wins");
        w.put_bound(&d, Some(("V-2", Timestamp::from_secs(6))));
        store.apply(&mut w, None).unwrap();
        assert!(w.is_empty());
        assert_eq!(
            store.bound(&w, &d).unwrap(),
            Some(("V-2".to_string(), Timestamp::from_secs(6)))
        );
        assert_eq!(store.alerts_raised().unwrap(), 3);
        assert_eq!(
            store.all_rule_states().next().unwrap().unwrap().1,
            b"state".to_vec()
        );
        w.put_rule_state(&d, None);
        store.apply(&mut w, None).unwrap();
        assert!(store.all_rule_states().next().is_none(), "deleted");
    }
}
