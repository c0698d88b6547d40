//! lienwatch: ingestion daemon for auto-loan collateral GPS trackers.
//!
//! Data flows one way: sources (`ingest`, `replay`) -> sans-I/O protocol sessions (`protocol`)
//! -> normalised events (`event`) -> the engine (per-device state, rules) -> the store and alert
//! outbox (`store`) -> delivery (`alert`).

pub mod admin;
pub mod alert;
pub mod backoff;
pub mod config;
pub mod daemon;
pub mod downlink;
pub mod duration;
pub mod encode;
pub mod engine;
pub mod event;
pub mod fast_hash;
pub mod fixture;
pub mod history;
pub mod ingest;
pub mod log_priority;
pub mod places;
pub mod prefetch;
pub mod protocol;
pub mod registry;
pub mod replay;
pub mod risk;
pub mod rules;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod time;
