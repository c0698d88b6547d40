//! Hash maps on the per-position path: foldhash in place of the standard SipHash.
//!
//! Why: every fix looks its device, vehicle and rule states up by id, and SipHash of a short id
//! costs more than the rest of such a lookup. foldhash is seeded per process
//! (`foldhash::fast::RandomState`), so ids cannot be chosen in advance to collide in a running
//! daemon.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
