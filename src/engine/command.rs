//! The engine's typed commands: what the admin API, `replay`, the watchdog and reload ask of it.
//!
//! As in tokio's mini-redis (`src/cmd/`), each command is a small struct, parsed at the edge (HTTP
//! in `crate::admin`, fixtures in `crate::replay`) and applied here on the engine thread, where
//! its writes join the next group commit. A command answers in the domain's terms (a view or an
//! [`EngineError`]); status codes exist only in the admin layer.

use super::Engine;
use crate::time::Timestamp;

/// A request the engine applies on its thread.
pub trait Command: Send + 'static {
    /// What the command answers once its writes are on disk.
    type Output: Send + 'static;

    /// Whether the answer waits for sled's blob files to be synced too (`store::blob_sync`):
    /// anything that may write does. A read or a ping does not, so that it is answered, and the
    /// watchdog fed, even while that sync fails.
    const WRITES: bool = true;

    /// Validates against the engine's state and applies. A command that fails changes nothing.
    fn apply(self, engine: &mut Engine, now: Timestamp) -> Result<Self::Output, EngineError>;
}

/// Why a command was refused or could not be carried out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or invalid; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// The request contradicts the registry (a device bound to another vehicle).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but the thing it names cannot do it (a command the device's protocol
    /// cannot carry).
    #[error("{0}")]
    Unsupported(String),
    /// The store failed; nothing in the commit was acknowledged.
    #[error("store: {0}")]
    Store(String),
    /// The engine thread has stopped (shutdown).
    #[error("the engine is not running")]
    Stopped,
}

impl From<crate::store::StoreError> for EngineError {
    fn from(e: crate::store::StoreError) -> Self {
        EngineError::Store(e.to_string())
    }
}
