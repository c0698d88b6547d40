//! Which connection speaks for which device. A connection registers when its session knows the
//! device (before the batch that says so is committed, so the engine sees the link when it
//! applies the login); the newest connection of a device wins; dropping the guard unregisters.

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
    /// the next one.
    pub expires_at: crate::time::Timestamp,
}

struct Link {
    generation: u64,
    mailbox: Arc<Mailbox>,
}

#[derive(Default)]
pub struct Links {
    map: Mutex<HashMap<DeviceId, Link>>,
    generations: AtomicU64,
}

impl Links {
    /// Makes `mailbox` the way to `device` until the guard is dropped or a newer connection
    /// registers.
    pub fn register(self: &Arc<Self>, device: DeviceId, mailbox: Arc<Mailbox>) -> LinkGuard {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut m) = self.map.lock() {
            m.insert(
                device.clone(),
                Link {
                    generation,
                    mailbox,
                },
            );
        }
        LinkGuard {
            links: self.clone(),
            device,
            generation,
        }
    }

    /// The device's connection: its generation and mailbox.
    pub fn get(&self, device: &DeviceId) -> Option<(u64, Arc<Mailbox>)> {
        let m = self.map.lock().ok()?;
        m.get(device).map(|l| (l.generation, l.mailbox.clone()))
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
            if m.get(&self.device)
                .is_some_and(|l| l.generation == self.generation)
            {
                m.remove(&self.device);
            }
        }
    }
}
