//! Commands to devices as engine state (CONTRACT.md "Commands to devices"): kept in the store
//! with their lifecycle, one at a time per device in order, handed to the connection that owns
//! the device, matched to its answer, expired on the engine's clock.
//!
//! - [`record`]: the stored command and its states;
//! - [`queue`]: the engine's side, per-device queues and the state machine;
//! - [`deadlines`]: expiry times, popped in order (no scan);
//! - [`links`]: which connection speaks for which device, so the engine can hand it a command;
//! - [`mailbox`]: where a connection finds the commands handed to it.
//!
//! The bytes come from each protocol module's pure encoders, called by the connection on its
//! own session (serials and header forms are per connection); the connection writes them between
//! the replies it already sends, and tells the engine what it sent.

pub mod deadlines;
pub mod links;
pub mod mailbox;
pub mod queue;
pub mod record;

pub use links::{Dispatch, LinkGuard, Links};
pub use mailbox::Mailbox;
pub use queue::Commands;
pub use record::{CommandRecord, CommandState};
