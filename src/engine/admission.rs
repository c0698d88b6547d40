//! Who may keep a session: a registered device always; a device in no vehicle while
//! `[ingest] accept_unknown` holds, up to `ingest.max_unknown_devices` of them.
//!
//! Every id a listener admits becomes a stored device, kept in memory and on disk for good. A
//! listener is open to the internet, and the ids are the peer's to choose: a stream of H02
//! messages with a new id each, or spoofed Teltonika datagrams, would grow both without bound.
//! The cap bounds what strangers can cost; a device already stored keeps its session beyond it.

use super::Registered;
use crate::event::DeviceId;
use crate::fast_hash::{FastMap, FastSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// The default `ingest.max_unknown_devices`: room for every tracker fitted before its loan is
/// booked at a large lender, a few hundred bytes of memory each.
pub const DEFAULT_MAX_UNKNOWN: usize = 10_000;

/// How long an admitted stranger holds its place before its first record is stored. A frame
/// admitted and then never stored (a JT/T 808 location before authentication, a session that
/// ends) gives its place back after this.
const RESERVATION: Duration = Duration::from_secs(60);

pub struct Admissions {
    accept_unknown: bool,
    max_unknown: usize,
    registered: Registered,
    strangers: RwLock<Strangers>,
    reservation: Duration,
}

/// Devices in no vehicle: those stored, and those admitted whose first record is on its way
/// (the commit behind the admission), so that a burst of new ids in one read cannot pass the
/// cap before any of them is stored.
#[derive(Default)]
struct Strangers {
    stored: FastSet<DeviceId>,
    reserved: FastMap<DeviceId, Instant>,
    /// No reservation is older than this (one may be younger: given back since), so that a
    /// refusal at the cap looks at one time, not at every reservation.
    oldest: Option<Instant>,
}

impl Strangers {
    fn knows(&self, id: &DeviceId) -> bool {
        self.stored.contains(id) || self.reserved.contains_key(id)
    }

    fn places_taken(&self) -> usize {
        self.stored.len() + self.reserved.len()
    }
}

impl Admissions {
    pub fn new(accept_unknown: bool, max_unknown: usize, registered: Registered) -> Self {
        Admissions {
            accept_unknown,
            max_unknown,
            registered,
            strangers: RwLock::new(Strangers::default()),
            reservation: RESERVATION,
        }
    }

    /// Whether `id` may keep its session; a refusal is counted. Called at each login (H02: each
    /// message of a new id; MQTT: each message), so the usual answer, and a refusal at the cap,
    /// take read locks only.
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
        let now = Instant::now();
        let expired = |at: &Instant| now.saturating_duration_since(*at) >= self.reservation;
        {
            let Ok(s) = self.strangers.read() else {
                return false;
            };
            if s.knows(id) {
                return true;
            }
            if s.places_taken() >= self.max_unknown && !s.oldest.is_some_and(|t| expired(&t)) {
                return self.refuse(id);
            }
        }
        let Ok(mut s) = self.strangers.write() else {
            return false;
        };
        if s.knows(id) {
            return true;
        }
        if s.places_taken() >= self.max_unknown {
            s.reserved.retain(|_, at| !expired(at));
            s.oldest = s.reserved.values().min().copied();
            if s.places_taken() >= self.max_unknown {
                drop(s);
                return self.refuse(id);
            }
        }
        s.reserved.insert(id.clone(), now);
        s.oldest = Some(s.oldest.map_or(now, |t| t.min(now)));
        true
    }

    fn refuse(&self, id: &DeviceId) -> bool {
        if crate::ingest::log_budget() {
            tracing::warn!(
                device = %id,
                limit = self.max_unknown,
                "device refused: ingest.max_unknown_devices devices in no vehicle are stored \
                 (register them, or raise the limit)"
            );
        }
        false
    }

    /// A stored device that is in no vehicle (its first record, at start, or taken off its
    /// vehicle): it keeps its session whatever the count.
    pub(super) fn stored_unregistered(&self, id: &DeviceId) {
        if let Ok(mut s) = self.strangers.write() {
            s.reserved.remove(id);
            if s.stored.insert(id.clone()) {
                metrics::gauge!("lienwatch_devices_unregistered").set(s.stored.len() as f64);
            }
        }
    }

    /// A device put on a vehicle: its place among the strangers is free.
    pub(super) fn now_registered(&self, id: &DeviceId) {
        if let Ok(mut s) = self.strangers.write() {
            s.reserved.remove(id);
            if s.stored.remove(id) {
                metrics::gauge!("lienwatch_devices_unregistered").set(s.stored.len() as f64);
            }
        }
    }

    /// Stored devices in no vehicle.
    pub fn unregistered(&self) -> usize {
        self.strangers.read().map(|s| s.stored.len()).unwrap_or(0)
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
        // One place left: the first new id takes it (admitted, its record on its way), the
        // next is refused, however often.
        assert!(a.admits(&DeviceId::new("11")));
        assert!(!a.admits(&DeviceId::new("12")));
        assert!(!a.admits(&DeviceId::new("12")));
        a.stored_unregistered(&DeviceId::new("11"));
        // Already stored: admitted again; registered: always.
        assert!(a.admits(&DeviceId::new("10")));
        assert!(a.admits(&DeviceId::new("11")));
        assert!(a.admits(&DeviceId::new("1")));
        assert_eq!(a.unregistered(), 2);
        // A stranger put on a vehicle frees its place.
        a.now_registered(&DeviceId::new("10"));
        assert!(a.admits(&DeviceId::new("12")));
        a.stored_unregistered(&DeviceId::new("12"));
        assert_eq!(a.unregistered(), 2);
        // A device taken off its vehicle is stored: it counts, and keeps its session.
        a.stored_unregistered(&DeviceId::new("1"));
        assert_eq!(a.unregistered(), 3);
        assert!(a.admits(&DeviceId::new("1")));
        assert!(!a.admits(&DeviceId::new("13")));
    }

    /// An admitted stranger whose record never comes (a JT/T 808 frame refused before
    /// authentication) gives its place back once its reservation is over.
    #[test]
    fn a_place_admitted_and_never_stored_is_given_back() {
        let mut a = Admissions::new(true, 1, registered(&[]));
        assert!(a.admits(&DeviceId::new("20")));
        assert!(!a.admits(&DeviceId::new("21")));
        a.reservation = Duration::ZERO;
        assert!(a.admits(&DeviceId::new("21")));
        assert_eq!(a.unregistered(), 0);
    }

    #[test]
    fn accept_unknown_false_admits_the_registry_only() {
        let a = Admissions::new(false, 100, registered(&["1"]));
        assert!(a.admits(&DeviceId::new("1")));
        assert!(!a.admits(&DeviceId::new("2")));
        assert_eq!(a.unregistered(), 0);
    }
}
