//! What the engine shows of its state: the answers of the read commands, serialised as the API's
//! JSON (CONTRACT.md "Admin HTTP API") and described for `/v1/openapi.json`.

use crate::event::{DeviceId, Protocol};
use crate::registry::{DeviceKind, Loan};
use crate::rules::FencePlacement;
use crate::time::Timestamp;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// A position (CONTRACT.md "Positions"): the device's fix and when lienwatch received it.
/// Documentation only: positions serialise through `StoredPosition::to_json`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PositionDoc {
    /// The device's fix time, UTC.
    #[schema(format = DateTime)]
    time: String,
    lat: f64,
    lon: f64,
    /// The device's own fix flag: false for no fix, LBS-only or a repeated old fix.
    valid: bool,
    speed_kmh: f64,
    course: u16,
    satellites: Option<u8>,
    altitude_m: Option<f64>,
    #[schema(format = DateTime)]
    received_at: String,
}

/// One device as `GET /v1/devices/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceView {
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    #[schema(value_type = String)]
    pub protocol: Protocol,
    pub first_seen: Timestamp,
    /// Receive time of the device's last message of any kind.
    pub last_seen: Timestamp,
    /// The vehicle the device is bound to, if any.
    pub vehicle_id: Option<String>,
    /// The last-known position: the newest fix by device time.
    #[schema(value_type = Option<PositionDoc>)]
    pub position: Option<serde_json::Value>,
    /// The newest valid fix, when the last-known position is a newer one without a fix (LBS,
    /// no fix): where the car was last really seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PositionDoc>)]
    pub last_valid_position: Option<serde_json::Value>,
}

/// What the rules currently hold about a registered device.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceStateView {
    /// Where the device was last placed against its vehicle's geofence.
    #[schema(value_type = Option<String>)]
    pub geofence: Option<FencePlacement>,
    /// A `silent_overdue` alert is open.
    pub silent: bool,
    /// Alarm conditions alerted and not yet reported off.
    pub alarms: Vec<&'static str>,
    /// When the device will count as silent if it sends nothing.
    pub silence_deadline: Option<Timestamp>,
}

/// A device of a vehicle: its binding, its last-known position and its rule state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VehicleDeviceView {
    #[schema(value_type = String)]
    pub id: DeviceId,
    pub kind: DeviceKind,
    #[serde(
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub silence_after: Option<Duration>,
    pub last_seen: Option<Timestamp>,
    #[schema(value_type = Option<String>)]
    pub protocol: Option<Protocol>,
    #[schema(value_type = Option<PositionDoc>)]
    pub position: Option<serde_json::Value>,
    /// The newest valid fix, when the last-known position is a newer one without a fix (LBS,
    /// no fix): where the car was last really seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PositionDoc>)]
    pub last_valid_position: Option<serde_json::Value>,
    pub state: DeviceStateView,
}

/// A vehicle as `GET /v1/vehicles/{id}` shows it: the body it was registered with, and each
/// device's last-known position and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct VehicleView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    pub loan: Loan,
    pub devices: Vec<VehicleDeviceView>,
    /// The geofence exactly as it was given (GeoJSON Polygon or MultiPolygon, or a Circle).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub geofence: Option<Box<serde_json::value::RawValue>>,
    /// The risk score, tier and the reasons that hold now.
    pub risk: crate::risk::RiskView,
}

/// One line of the vehicle list (`GET /v1/vehicles`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VehicleSummary {
    pub vehicle_id: String,
    pub vin: Option<String>,
    pub plate: Option<String>,
    pub loan: Loan,
    /// The newest `last_seen` of the vehicle's devices.
    pub last_seen: Option<Timestamp>,
    pub risk: Option<crate::risk::RiskView>,
    /// The newest fix (by device time) of any of the vehicle's devices.
    #[schema(value_type = Option<PositionDoc>)]
    pub position: Option<serde_json::Value>,
    /// The newest valid fix of any of its devices, when `position` is a newer one without a
    /// fix (LBS, no fix): where the car was last really seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PositionDoc>)]
    pub last_valid_position: Option<serde_json::Value>,
}

/// A page of the vehicle list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VehiclePage {
    pub vehicles: Vec<VehicleSummary>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// What `PUT /v1/loans/{id}` changed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoanUpdated {
    pub loan: Loan,
    /// The vehicles that secure this loan.
    pub vehicles: Vec<String>,
}

/// What `DELETE /v1/vehicles/{id}` removed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
}
