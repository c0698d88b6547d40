//! Vehicles, loans, devices and geofences: the collateral registry (CONTRACT.md "Admin HTTP API").

use serde::{Deserialize, Serialize};

/// Loan status as the lender's system reports it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoanStatus {
    Current,
    Overdue,
    Closed,
}

/// The loan a vehicle secures.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Loan {
    pub id: String,
    pub status: LoanStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_past_due: Option<u32>,
}

/// Wired units report every few minutes; wireless ones sleep for hours or days (domain.md §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Wired,
    Wireless,
}
