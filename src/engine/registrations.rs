//! JT/T 808 registrations: each terminal number bound to the terminal id of its first
//! registration (CONTRACT.md "Trust at the edges"), so that knowing a registered number is not
//! enough to be handed its authentication code. Read by the sessions of every connection, written
//! here and persisted by the engine in the commit that covers the registration.

use super::command::{Command, EngineError};
use super::view::Deleted;
use super::Engine;
use crate::event::DeviceId;
use crate::protocol::TerminalBinding;
use crate::time::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Terminal number -> terminal id, shared with the sessions.
#[derive(Default)]
pub struct TerminalIds {
    bound: RwLock<HashMap<DeviceId, Box<str>>>,
    /// Bindings made by sessions since the last commit.
    unsaved: Mutex<Vec<(DeviceId, Box<str>)>>,
}

impl TerminalIds {
    pub fn new(bound: HashMap<DeviceId, Box<str>>) -> Self {
        TerminalIds {
            bound: RwLock::new(bound),
            unsaved: Mutex::new(Vec::new()),
        }
    }

    /// The sessions' policy: a new number is bound to the id it registers with; a known one
    /// may register again only with the same id.
    pub fn binding(self: &Arc<Self>) -> TerminalBinding {
        let ids = self.clone();
        Arc::new(move |number: &DeviceId, terminal_id: &str| ids.bind(number, terminal_id))
    }

    fn bind(&self, number: &DeviceId, terminal_id: &str) -> bool {
        if let Ok(r) = self.bound.read() {
            if let Some(t) = r.get(number) {
                return &**t == terminal_id;
            }
        }
        let Ok(mut w) = self.bound.write() else {
            return false;
        };
        match w.get(number) {
            Some(t) => &**t == terminal_id,
            None => {
                w.insert(number.clone(), terminal_id.into());
                if let Ok(mut u) = self.unsaved.lock() {
                    u.push((number.clone(), terminal_id.into()));
                }
                true
            }
        }
    }

    /// Bindings to write in the coming commit.
    pub(super) fn take_unsaved(&self) -> Vec<(DeviceId, Box<str>)> {
        self.unsaved
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default()
    }

    fn forget(&self, number: &DeviceId) -> bool {
        if let Ok(mut u) = self.unsaved.lock() {
            u.retain(|(n, _)| n != number);
        }
        self.bound
            .write()
            .map(|mut w| w.remove(number).is_some())
            .unwrap_or(false)
    }
}

/// `DELETE /v1/devices/{id}/registration`: an operator lets a terminal number register again,
/// with whatever terminal id it sends next (a replaced unit).
pub struct ResetRegistration {
    pub id: DeviceId,
}

impl Command for ResetRegistration {
    type Output = Deleted;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<Deleted, EngineError> {
        e.writes.remove_registration(&self.id);
        if !e.terminal_ids.forget(&self.id) {
            return Err(EngineError::NotFound(format!(
                "terminal {} has no registration",
                self.id
            )));
        }
        Ok(Deleted {
            deleted: self.id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_bound_to_its_first_terminal_id_until_forgotten() {
        let ids = Arc::new(TerminalIds::default());
        let bind = ids.binding();
        let n = DeviceId::new("13912345678");
        assert!(bind(&n, "A123456"));
        assert!(bind(&n, "A123456"), "the same unit registers again");
        assert!(!bind(&n, "B999999"), "another unit with the same number");
        assert_eq!(ids.take_unsaved().len(), 1);
        assert!(ids.take_unsaved().is_empty());
        assert!(ids.forget(&n));
        assert!(!ids.forget(&n));
        assert!(bind(&n, "B999999"), "after a reset the next unit binds");
    }
}
