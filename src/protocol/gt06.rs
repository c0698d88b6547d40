//! Placeholder: replaced by the real decoder.
use super::{Output, Session, SessionConfig, SessionError};
use crate::event::{DeviceId, Protocol};
use bytes::BytesMut;

pub struct Gt06Session {
    _cfg: SessionConfig,
}

impl Gt06Session {
    pub fn new(cfg: SessionConfig) -> Self {
        Gt06Session { _cfg: cfg }
    }
}

impl Session for Gt06Session {
    fn protocol(&self) -> Protocol {
        Protocol::Gt06
    }
    fn feed(&mut self, _buf: &mut BytesMut, _out: &mut Vec<Output>) -> Result<(), SessionError> {
        Err(SessionError::Fatal("not implemented"))
    }
    fn device_id(&self) -> Option<&DeviceId> {
        None
    }
}
