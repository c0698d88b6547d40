//! Everything that runs real parts together: the `lienwatch` binary on loopback ports driven as
//! trackers, brokers, service managers and webhook receivers would, the webhook workers against a
//! real receiver, and the deploy files. One binary, so the crate and its dependencies are linked
//! once for all of them; one module per subject.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod api;
mod commands;
mod console;
mod crash;
mod daemon_basics;
mod deploy;
mod history;
mod hostile;
mod layout;
mod long_stay;
mod mqtt;
mod places;
mod reload;
mod replay;
mod risk;
mod risk_zones;
mod service;
mod tcp_fixtures;
mod tcp_gt06;
mod tcp_jt808;
mod teltonika_h02;
mod trust;
mod webhook_delivery;
