//! The outbox's key layout (see the table in `mod.rs`): one-byte tags, big-endian numbers so that
//! key order is numeric order.

use super::{DeliveryRecord, OutboxError, Result, State};
use crate::time::Timestamp;

pub(super) const TREE: &str = "outbox";
pub(super) const T_ALERT: u8 = b'a';
pub(super) const T_DELIVERY: u8 = b'd';
pub(super) const T_QUEUE: u8 = b'q';
pub(super) const T_STATE: u8 = b's';
pub(super) const T_WEBHOOK: u8 = b'w';
pub(super) const T_VEHICLE: u8 = b'v';
pub(super) const K_PENDING: &[u8] = b"mpending";
pub(super) const K_WEBHOOK_PENDING: &[u8] = b"mw";
pub(super) const K_NEXT_WID: &[u8] = b"mnextwid";
/// One past the highest `seq` pruning removed: `seq` is the API's paging cursor, so a new alert
/// never takes a number an earlier one had, even when pruning emptied the outbox.
pub(super) const K_SEQ_FLOOR: &[u8] = b"mseqfloor";
/// Set once every alert has its `v` key (alerts written before the index get theirs at open).
pub(super) const K_VEHICLE_INDEXED: &[u8] = b"mvindexed";

pub(super) fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

pub(super) fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Times are stored as u64 for ordering; times before 1970 clamp to 0 (never happens in practice).
pub(super) fn time_key(t: Timestamp) -> u64 {
    t.millis().max(0) as u64
}

pub(super) fn alert_key(seq: u64) -> [u8; 9] {
    let mut k = [T_ALERT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// `v` len(u32) vehicle: the prefix of one vehicle's alerts (the length keeps "V-1" apart from
/// "V-10").
pub(super) fn vehicle_prefix(vehicle: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + vehicle.len() + 8);
    k.push(T_VEHICLE);
    k.extend_from_slice(&(vehicle.len() as u32).to_be_bytes());
    k.extend_from_slice(vehicle.as_bytes());
    k
}

pub(super) fn vehicle_key(vehicle: &str, seq: u64) -> Vec<u8> {
    let mut k = vehicle_prefix(vehicle);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The vehicle an alert's stored body names.
pub(super) fn vehicle_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Of {
        vehicle_id: String,
    }
    serde_json::from_slice::<Of>(body)
        .ok()
        .map(|o| o.vehicle_id)
}

pub(super) fn delivery_key(wid: u32, seq: u64) -> [u8; 13] {
    let mut k = [T_DELIVERY; 13];
    k[1..5].copy_from_slice(&wid.to_be_bytes());
    k[5..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn queue_prefix(wid: u32) -> [u8; 5] {
    let mut k = [T_QUEUE; 5];
    k[1..].copy_from_slice(&wid.to_be_bytes());
    k
}

pub(super) fn queue_key(wid: u32, due: Timestamp, seq: u64) -> [u8; 21] {
    let mut k = [T_QUEUE; 21];
    k[1..5].copy_from_slice(&wid.to_be_bytes());
    k[5..13].copy_from_slice(&time_key(due).to_be_bytes());
    k[13..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// (due, seq) from a queue key.
pub(super) fn parse_queue_key(k: &[u8]) -> Option<(u64, u64)> {
    if k.len() != 21 {
        return None;
    }
    Some((be_u64(&k[5..13])?, be_u64(&k[13..])?))
}

pub(super) fn state_key(state: State, seq: u64) -> [u8; 10] {
    let mut k = [T_STATE; 10];
    k[1] = state.tag();
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn webhook_pending_key(wid: u32) -> Vec<u8> {
    let mut k = K_WEBHOOK_PENDING.to_vec();
    k.extend_from_slice(&wid.to_be_bytes());
    k
}

pub(super) fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64> {
    Ok(tree.get(key)?.and_then(|v| be_u64(&v)).unwrap_or(0))
}

pub(super) fn corrupt(what: impl Into<String>, why: impl std::fmt::Display) -> OutboxError {
    OutboxError::Corrupt {
        what: what.into(),
        why: why.to_string(),
    }
}

/// Overall state: pending if any target is pending, else failed if any failed, else delivered
/// (which includes an alert with no target at all).
pub(super) fn overall(records: &[DeliveryRecord]) -> State {
    if records.iter().any(|r| r.state == State::Pending) {
        State::Pending
    } else if records.iter().any(|r| r.state == State::Failed) {
        State::Failed
    } else {
        State::Delivered
    }
}
