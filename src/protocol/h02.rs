//! Placeholder: replaced by the real decoder.
use super::{Output, Session, SessionConfig, SessionError};
use crate::event::{DeviceId, Protocol};
use bytes::BytesMut;

pub struct H02Session {
    _cfg: SessionConfig,
}

impl H02Session {
    pub fn new(cfg: SessionConfig) -> Self {
        H02Session { _cfg: cfg }
    }
}

impl Session for H02Session {
    fn protocol(&self) -> Protocol {
        Protocol::H02
    }
    fn feed(&mut self, _buf: &mut BytesMut, _out: &mut Vec<Output>) -> Result<(), SessionError> {
        Err(SessionError::Fatal("not implemented"))
    }
    fn device_id(&self) -> Option<&DeviceId> {
        None
    }
}
