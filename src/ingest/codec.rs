//! The thin tokio-util codec around a sans-I/O session: `FramedRead` hands it the socket's bytes,
//! the session turns them into outputs, and each `decode` call yields one batch. Errors from the
//! session end the stream; garbage never does (it is a `Rejected` output).

use crate::protocol::{Output, Session, SessionError};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

pub struct SessionCodec {
    session: Box<dyn Session>,
    /// A session error held back until the outputs produced before it have been handed out, so
    /// that owed replies (a Teltonika refusal `00`) still reach the device.
    pending_error: Option<SessionError>,
    /// Bounds the read buffer even if a session misbehaves: beyond this, the buffer is dropped.
    hard_limit: usize,
}

impl SessionCodec {
    pub fn new(session: Box<dyn Session>, max_frame: usize) -> Self {
        SessionCodec {
            session,
            pending_error: None,
            hard_limit: max_frame.saturating_mul(2).max(1024),
        }
    }

    pub fn session(&self) -> &dyn Session {
        self.session.as_ref()
    }

    /// For commands to the device, encoded with the session's own numbering.
    pub fn session_mut(&mut self) -> &mut dyn Session {
        self.session.as_mut()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl SessionCodec {
    /// Feeds the session. A session error with outputs before it is held back until those
    /// outputs have been handed out.
    fn feed(&mut self, src: &mut BytesMut) -> Result<Vec<Output>, CodecError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e.into());
        }
        let mut out = Vec::new();
        if let Err(e) = self.session.feed(src, &mut out) {
            if out.is_empty() {
                return Err(e.into());
            }
            self.pending_error = Some(e);
        }
        Ok(out)
    }
}

impl Decoder for SessionCodec {
    type Item = Vec<Output>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<Output>>, CodecError> {
        let mut out = self.feed(src)?;
        if src.len() > self.hard_limit {
            out.push(Output::Rejected(super::Rejection::new(
                "buffer over limit",
                src.len(),
            )));
            src.clear();
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Vec<Output>>, CodecError> {
        let mut out = self.feed(src)?;
        if self.pending_error.is_none() {
            self.session.finish(src, &mut out);
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}
