//! Expiry deadlines of open commands: O(log n) to set, clear and pop, never a scan.

use crate::time::Timestamp;
use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
pub struct Deadlines {
    by_time: BTreeSet<(Timestamp, u64)>,
    by_id: HashMap<u64, Timestamp>,
}

impl Deadlines {
    pub fn set(&mut self, id: u64, at: Timestamp) {
        self.clear(id);
        self.by_time.insert((at, id));
        self.by_id.insert(id, at);
    }

    pub fn clear(&mut self, id: u64) {
        if let Some(at) = self.by_id.remove(&id) {
            self.by_time.remove(&(at, id));
        }
    }

    pub fn next(&self) -> Option<Timestamp> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// The next id due at `now`, removed.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<u64> {
        let &(at, id) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.clear(id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_forgets_cleared() {
        let mut d = Deadlines::default();
        let t = Timestamp::from_secs;
        d.set(1, t(30));
        d.set(2, t(10));
        d.set(3, t(20));
        d.set(2, t(25));
        d.clear(3);
        assert_eq!(d.next(), Some(t(25)));
        assert_eq!(d.pop_due(t(24)), None);
        assert_eq!(d.pop_due(t(40)), Some(2));
        assert_eq!(d.pop_due(t(40)), Some(1));
        assert_eq!(d.pop_due(t(40)), None);
        assert_eq!(d.next(), None);
    }
}
