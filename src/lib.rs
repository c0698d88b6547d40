//! lienwatch: ingestion daemon for auto-loan collateral GPS trackers.
//!
//! Data flows one way: sources (`ingest`, `replay`) -> sans-I/O protocol sessions (`protocol`)
//! -> normalised events (`event`) -> the engine (per-device state, rules) -> the store and alert
//! outbox (`store`) -> delivery (`alert`).

pub mod alert;
pub mod duration;
pub mod event;
pub mod fixture;
pub mod protocol;
pub mod registry;
pub mod rules;
