//! Placeholder: replaced by the real decoder.
use super::{Output, Session, SessionConfig, SessionError};
use crate::event::{DeviceId, Protocol};
use bytes::BytesMut;

pub struct TeltonikaSession {
    _cfg: SessionConfig,
}

impl TeltonikaSession {
    pub fn new(cfg: SessionConfig) -> Self {
        TeltonikaSession { _cfg: cfg }
    }
}

impl Session for TeltonikaSession {
    fn protocol(&self) -> Protocol {
        Protocol::Teltonika
    }
    fn feed(&mut self, _buf: &mut BytesMut, _out: &mut Vec<Output>) -> Result<(), SessionError> {
        Err(SessionError::Fatal("not implemented"))
    }
    fn device_id(&self) -> Option<&DeviceId> {
        None
    }
}

pub struct TeltonikaUdpSession {
    _cfg: SessionConfig,
}

impl TeltonikaUdpSession {
    pub fn new(cfg: SessionConfig) -> Self {
        TeltonikaUdpSession { _cfg: cfg }
    }
}

impl Session for TeltonikaUdpSession {
    fn protocol(&self) -> Protocol {
        Protocol::Teltonika
    }
    fn feed(&mut self, _buf: &mut BytesMut, _out: &mut Vec<Output>) -> Result<(), SessionError> {
        Err(SessionError::Fatal("not implemented"))
    }
    fn device_id(&self) -> Option<&DeviceId> {
        None
    }
}
