//! Who may keep a session: a registered device always; a device in no vehicle while
//! `[ingest] accept_unknown` holds, up to `ingest.max_unknown_devices` of them.
//!
//! Every id a listener admits becomes a stored device, kept in memory and on disk for good. A
//! listener is open to the internet, and the ids are the peer's to choose: a stream of H02
//! messages with a new id each, or spoofed Teltonika datagrams, would grow both without bound.
//! The cap bounds what strangers can cost; a device already stored keeps its session beyond it.

use super::Registered;
use crate::event::DeviceId;
use crate::fast_hash::FastSet;
use std::sync::RwLock;

/// The default `ingest.max_unknown_devices`: room for every tracker fitted before its loan is
/// booked at a large lender, a few hundred bytes of memory each.
pub const DEFAULT_MAX_UNKNOWN: usize = 10_000;

pub struct Admissions {
    accept_unknown: bool,
    max_unknown: usize,
    registered: Registered,
    /// Devices in no vehicle that are stored, or admitted and about to be (their login is in
    /// the commit behind the admission). Written by logins of new ids and by the engine.
    unknown: RwLock<FastSet<DeviceId>>,
}

impl Admissions {
    pub fn new(accept_unknown: bool, max_unknown: usize, registered: Registered) -> Self {
        Admissions {
            accept_unknown,
            max_unknown,
            registered,
            unknown: RwLock::new(FastSet::default()),
        }
    }

    /// Whether `id` may keep its session; a refusal is counted. Called at each login (H02: each
    /// message of a new id; MQTT: each message), so the usual answer takes read locks only.
    pub fn admits(&self, id: &DeviceId) -> bool {
        let ok = self.decide(id);
        if !ok {
            metrics::counter!("lienwatch_devices_refused_total").increment(1);
        }
        ok
    }

    fn decide(&self, id: &DeviceId) -> bool {
        if self.registered.read().is_ok_and(|r| r.contains_key(id)) {
            return true;
        }
        if !self.accept_unknown {
            return false;
        }
        if self.unknown.read().is_ok_and(|u| u.contains(id)) {
            return true;
        }
        let Ok(mut unknown) = self.unknown.write() else {
            return false;
        };
        if unknown.contains(id) {
            return true;
        }
        if unknown.len() >= self.max_unknown {
            if crate::ingest::log_budget() {
                tracing::warn!(
                    device = %id,
                    limit = self.max_unknown,
                    "device refused: ingest.max_unknown_devices devices in no vehicle are stored \
                     (register them, or raise the limit)"
                );
            }
            return false;
        }
        unknown.insert(id.clone());
        metrics::gauge!("lienwatch_devices_unregistered").set(unknown.len() as f64);
        true
    }

    /// A stored device that is in no vehicle (at start, or taken off its vehicle): it keeps
    /// its session whatever the count.
    pub(super) fn stored_unregistered(&self, id: &DeviceId) {
        if let Ok(mut unknown) = self.unknown.write() {
            if unknown.insert(id.clone()) {
                metrics::gauge!("lienwatch_devices_unregistered").set(unknown.len() as f64);
            }
        }
    }

    /// A device put on a vehicle: its place among the strangers is free.
    pub(super) fn now_registered(&self, id: &DeviceId) {
        if let Ok(mut unknown) = self.unknown.write() {
            if unknown.remove(id) {
                metrics::gauge!("lienwatch_devices_unregistered").set(unknown.len() as f64);
            }
        }
    }

    /// Devices in no vehicle, stored or admitted.
    pub fn unregistered(&self) -> usize {
        self.unknown.read().map(|u| u.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn registered(ids: &[&str]) -> Registered {
        let v: Arc<str> = Arc::from("car-1");
        Arc::new(RwLock::new(
            ids.iter().map(|i| (DeviceId::new(i), v.clone())).collect(),
        ))
    }

    #[test]
    fn strangers_are_admitted_up_to_the_limit_and_known_ones_beyond_it() {
        let a = Admissions::new(true, 2, registered(&["1"]));
        a.stored_unregistered(&DeviceId::new("10"));
        // One place left: the first new id takes it, the next is refused, however often.
        assert!(a.admits(&DeviceId::new("11")));
        assert!(!a.admits(&DeviceId::new("12")));
        assert!(!a.admits(&DeviceId::new("12")));
        // Already stored or admitted: admitted again; registered: always.
        assert!(a.admits(&DeviceId::new("10")));
        assert!(a.admits(&DeviceId::new("11")));
        assert!(a.admits(&DeviceId::new("1")));
        assert_eq!(a.unregistered(), 2);
        // A stranger put on a vehicle frees its place.
        a.now_registered(&DeviceId::new("10"));
        assert!(a.admits(&DeviceId::new("12")));
        assert_eq!(a.unregistered(), 2);
        // A device taken off its vehicle is stored: it counts, and keeps its session.
        a.stored_unregistered(&DeviceId::new("1"));
        assert_eq!(a.unregistered(), 3);
        assert!(a.admits(&DeviceId::new("1")));
        assert!(!a.admits(&DeviceId::new("13")));
    }

    #[test]
    fn accept_unknown_false_admits_the_registry_only() {
        let a = Admissions::new(false, 100, registered(&["1"]));
        assert!(a.admits(&DeviceId::new("1")));
        assert!(!a.admits(&DeviceId::new("2")));
        assert_eq!(a.unregistered(), 0);
    }
}
