//! Which connection speaks for which device. A connection registers when its session knows the
//! device (before the batch that says so is committed, so the engine sees the link when it
//! applies the login); the newest connection of a device wins; dropping the guard unregisters,
//! and the newest of the device's other live connections (a cloned IMEI, a terminal pointed
//! twice at one host) speaks for it again.

use super::Mailbox;
use crate::event::DeviceId;
use crate::protocol::downlink::Downlink;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A command handed to a connection to encode and write.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub id: u64,
    pub device_id: DeviceId,
    pub command: Downlink,
    /// Past this, the connection does not write it: a connection slow to take its mail (a
    /// write to a slow reader) would otherwise send a command already expired, right ahead of
    /// the next one. On the monotonic clock, so that a step of the host clock while it waits
    /// moves it no more than the engine moves the command's expiry
    /// (`Commands::clock_stepped`).
    pub deadline: std::time::Instant,
    /// Set when the command is cancelled after it was handed out: a connection that took it
    /// from its mailbox but has not written it yet (it writes its mail one command at a time)
    /// drops it.
    pub withdrawn: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct Link {
    generation: u64,
    mailbox: Arc<Mailbox>,
}

#[derive(Default)]
pub struct Links {
    /// Each device's live connections, the newest last: the one commands go to.
    map: Mutex<HashMap<DeviceId, Vec<Link>>>,
    generations: AtomicU64,
}

impl Links {
    /// Makes `mailbox` the way to `device` until the guard is dropped or a newer connection
    /// registers.
    pub fn register(self: &Arc<Self>, device: DeviceId, mailbox: Arc<Mailbox>) -> LinkGuard {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut m) = self.map.lock() {
            m.entry(device.clone()).or_default().push(Link {
                generation,
                mailbox,
            });
        }
        LinkGuard {
            links: self.clone(),
            device,
            generation,
        }
    }

    /// Takes command `id` back from every connection of `device` that has not yet taken it
    /// from its mailbox (a command cancelled right after it was handed out).
    pub fn withdraw(&self, device: &DeviceId, id: u64) {
        if let Ok(m) = self.map.lock() {
            for l in m.get(device).into_iter().flatten() {
                l.mailbox.withdraw(id);
            }
        }
    }

    /// The device's connection: its generation and mailbox.
    pub fn get(&self, device: &DeviceId) -> Option<(u64, Arc<Mailbox>)> {
        let m = self.map.lock().ok()?;
        m.get(device)
            .and_then(|ls| ls.last())
            .map(|l| (l.generation, l.mailbox.clone()))
    }
}

/// Unregisters its link when dropped (the connection ended or now speaks for another device).
pub struct LinkGuard {
    links: Arc<Links>,
    device: DeviceId,
    generation: u64,
}

impl LinkGuard {
    pub fn device(&self) -> &DeviceId {
        &self.device
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.links.map.lock() {
            if let Some(ls) = m.get_mut(&self.device) {
                ls.retain(|l| l.generation != self.generation);
                if ls.is_empty() {
                    m.remove(&self.device);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two live connections for one device: the newest speaks for it; when it ends, the other
    /// does again; when both end, none.
    #[test]
    fn the_newest_live_connection_speaks_for_the_device() {
        let links = Arc::new(Links::default());
        let id = DeviceId::new("868120145233604");
        let (a, b) = (Mailbox::new(), Mailbox::new());
        let older = links.register(id.clone(), a.clone());
        let newer = links.register(id.clone(), b.clone());
        let now = |links: &Links| links.get(&id).map(|(_, m)| m);
        assert!(now(&links).is_some_and(|m| Arc::ptr_eq(&m, &b)));
        drop(newer);
        assert!(now(&links).is_some_and(|m| Arc::ptr_eq(&m, &a)));
        let newer = links.register(id.clone(), b.clone());
        drop(older);
        assert!(now(&links).is_some_and(|m| Arc::ptr_eq(&m, &b)));
        drop(newer);
        assert!(now(&links).is_none());
    }
}
