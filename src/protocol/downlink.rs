//! Commands to devices as the sessions see them: what to say, not when (the engine decides when;
//! `crate::downlink`). Each protocol module encodes them beside its decoders, with the session's
//! own numbering and header form, and decodes the device's answer into
//! [`crate::event::EventKind::CommandAnswer`].

use crate::event::{AnswerKey, Protocol};
use bytes::Bytes;

/// Longest `raw` text and command text accepted (a GT06 0x80 carries it in a one-byte length).
pub const MAX_TEXT: usize = 256;

/// A command to one device.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Downlink {
    /// Report the position now (GT06 `WHERE#`, JT/T 808 0x8201, Teltonika `getgps`).
    Locate,
    /// Report every `interval_s` for `duration_s` (JT/T 808 0x8202, temporary tracking).
    Track { interval_s: u16, duration_s: u32 },
    /// Text the device's own command language understands (GT06, Teltonika, H02).
    Raw(String),
}

impl Downlink {
    pub fn kind(&self) -> &'static str {
        match self {
            Downlink::Locate => "locate",
            Downlink::Track { .. } => "track",
            Downlink::Raw(_) => "raw",
        }
    }
}

/// Whether a protocol has a downlink for this kind of command at all: the 422 of the API.
/// GT06 and Teltonika tracking and JT/T 808 text are model-specific (send them as `raw` where the
/// model has a text command); MQTT sources have no downlink.
pub fn carries(protocol: Protocol, cmd: &Downlink) -> bool {
    matches!(
        (protocol, cmd),
        (Protocol::Gt06, Downlink::Locate | Downlink::Raw(_))
            | (Protocol::Jt808, Downlink::Locate | Downlink::Track { .. })
            | (Protocol::Teltonika, Downlink::Locate | Downlink::Raw(_))
            | (Protocol::H02, Downlink::Raw(_))
    )
}

/// The longest `raw` text a protocol's frame holds, where that is less than [`MAX_TEXT`]: a
/// GT06 0x80 frame counts its whole length in one byte.
pub fn text_limit(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Gt06 => super::gt06_command::MAX_COMMAND_TEXT,
        _ => MAX_TEXT,
    }
}

/// Whether text may go to a device: printable ASCII, 1 to [`MAX_TEXT`] bytes.
pub fn text_ok(text: &str) -> bool {
    (1..=MAX_TEXT).contains(&text.len()) && text.bytes().all(|b| (0x20..0x7F).contains(&b))
}

/// A command as bytes for the wire, and the key its answer will carry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Encoded {
    pub bytes: Bytes,
    pub key: AnswerKey,
}

/// Why a session did not encode a command.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum EncodeError {
    /// Not yet: the device has not logged in (JT/T 808: authenticated) on this connection. The
    /// command waits for its next login.
    #[error("the device has not logged in on this connection")]
    NotReady,
    /// Never: the protocol cannot carry this command, or its text.
    #[error("{0}")]
    Unsupported(&'static str),
}
