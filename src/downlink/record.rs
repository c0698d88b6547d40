//! A command as stored and shown.

use crate::event::{AnswerKey, DeviceId, Protocol};
use crate::protocol::downlink::Downlink;
use crate::store::StoredPosition;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Where a command is in its life. `Queued` and `Sent` are open; the rest are final.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum CommandState {
    /// Waiting for the device (offline, or behind an earlier command).
    Queued,
    /// Written to the device's connection; waiting for its answer.
    Sent,
    Answered,
    /// Refused by the device, or not expressible on its connection.
    Failed,
    /// Not answered before `expires_at`.
    Expired,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Sent => "sent",
            CommandState::Answered => "answered",
            CommandState::Failed => "failed",
            CommandState::Expired => "expired",
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, CommandState::Queued | CommandState::Sent)
    }
}

/// Everything lienwatch keeps about one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: u64,
    pub device_id: DeviceId,
    pub protocol: Protocol,
    pub command: Downlink,
    pub state: CommandState,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The last time it was written to the device (a command is sent again after a reconnect
    /// until it is answered).
    pub sent_at: Option<Timestamp>,
    pub answered_at: Option<Timestamp>,
    pub answer: Option<String>,
    pub position: Option<StoredPosition>,
    /// What its answer will carry, from the last send.
    pub key: Option<AnswerKey>,
    /// Why it failed.
    pub error: Option<String>,
}

impl CommandRecord {
    /// The API id: `cmd_<n>`.
    pub fn api_id(&self) -> String {
        format!("cmd_{}", self.id)
    }

    /// The number of `cmd_<n>` as [`CommandRecord::api_id`] spells it: `cmd_+7` and `cmd_007`
    /// name no command.
    pub fn parse_api_id(s: &str) -> Option<u64> {
        let n: u64 = s.strip_prefix("cmd_")?.parse().ok()?;
        (s.len() == 4 + n.to_string().len()).then_some(n)
    }
}
