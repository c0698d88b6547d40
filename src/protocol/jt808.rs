//! Placeholder: replaced by the real decoder.
use super::{Output, Session, SessionConfig, SessionError};
use crate::event::{DeviceId, Protocol};
use bytes::BytesMut;

pub struct Jt808Session {
    _cfg: SessionConfig,
}

impl Jt808Session {
    pub fn new(cfg: SessionConfig) -> Self {
        Jt808Session { _cfg: cfg }
    }
}

impl Session for Jt808Session {
    fn protocol(&self) -> Protocol {
        Protocol::Jt808
    }
    fn feed(&mut self, _buf: &mut BytesMut, _out: &mut Vec<Output>) -> Result<(), SessionError> {
        Err(SessionError::Fatal("not implemented"))
    }
    fn device_id(&self) -> Option<&DeviceId> {
        None
    }
}
