//! Alerts: what lienwatch tells collection systems (CONTRACT.md "Alerts").
//!
//! An alert is raised by the rules, written to the outbox in the same store commit as the state
//! change that raised it (`outbox`), and delivered to each matching webhook (`webhook`).

pub mod outbox;
pub mod webhook;

use crate::event::{DeviceId, Position, Timestamp};
use crate::registry::Loan;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Alert types (CONTRACT.md). Serialised in snake_case: `geofence_exit`, ...
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    GeofenceExit,
    GeofenceReturn,
    SilentOverdue,
    Reappeared,
    PowerCut,
    PowerRestored,
    Tamper,
    RiskTierChanged,
    RiskZoneEnter,
    RiskZoneDwell,
    DeviceSeparation,
    AllSilent,
    LongStay,
}

impl AlertType {
    pub const ALL: [AlertType; 13] = [
        AlertType::GeofenceExit,
        AlertType::GeofenceReturn,
        AlertType::SilentOverdue,
        AlertType::Reappeared,
        AlertType::PowerCut,
        AlertType::PowerRestored,
        AlertType::Tamper,
        AlertType::RiskTierChanged,
        AlertType::RiskZoneEnter,
        AlertType::RiskZoneDwell,
        AlertType::DeviceSeparation,
        AlertType::AllSilent,
        AlertType::LongStay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::GeofenceExit => "geofence_exit",
            AlertType::GeofenceReturn => "geofence_return",
            AlertType::SilentOverdue => "silent_overdue",
            AlertType::Reappeared => "reappeared",
            AlertType::PowerCut => "power_cut",
            AlertType::PowerRestored => "power_restored",
            AlertType::Tamper => "tamper",
            AlertType::RiskTierChanged => "risk_tier_changed",
            AlertType::RiskZoneEnter => "risk_zone_enter",
            AlertType::RiskZoneDwell => "risk_zone_dwell",
            AlertType::DeviceSeparation => "device_separation",
            AlertType::AllSilent => "all_silent",
            AlertType::LongStay => "long_stay",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for AlertType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A position in an alert, the same as the API shows it (CONTRACT.md "Positions"): the fix,
/// its coordinates rounded to 6 decimals, and when lienwatch received it (absent only in alerts
/// stored before it was added).
#[derive(Clone, Copy, PartialEq, Debug, Serialize, Deserialize)]
pub struct AlertPosition {
    #[serde(flatten)]
    pub fix: Position,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Timestamp>,
}

impl AlertPosition {
    pub fn new(fix: Position, received_at: Timestamp) -> AlertPosition {
        AlertPosition {
            fix: Position {
                lat: crate::event::round6(fix.lat),
                lon: crate::event::round6(fix.lon),
                ..fix
            },
            received_at: Some(received_at),
        }
    }
}

/// The alert object: the same in the webhook body, `GET /v1/alerts` and `replay` output.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Alert {
    /// Stable across retries and restarts: the receiver's idempotency key.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: AlertType,
    pub vehicle_id: String,
    pub device_id: DeviceId,
    pub vin: Option<String>,
    pub plate: Option<String>,
    pub loan: Loan,
    /// Last-known position of the device when the alert was raised (none if it never had a fix).
    pub position: Option<AlertPosition>,
    pub detected_at: Timestamp,
    pub details: serde_json::Value,
}
