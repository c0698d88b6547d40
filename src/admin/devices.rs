//! `/v1/devices/{id}`: what lienwatch knows of one tracker.

use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::engine::devices::GetDevice;
use crate::engine::registrations::ResetRegistration;
use crate::engine::view::{Deleted, DeviceView};
use axum::extract::{Path, State};
use axum::Json;

/// The device's last-known position, last-seen time, protocol and vehicle; 404 if never seen.
#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "the device id (decimal digits)")),
    security(("bearer" = [])),
    responses((status = 200, body = DeviceView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let cmd = GetDevice::parse(&id)?;
    Ok(Json(st.engine.run(cmd).await?))
}

/// Lets a JT/T 808 terminal number register again with another terminal id (a replaced unit).
#[utoipa::path(delete, path = "/v1/devices/{id}/registration", tag = "devices",
    params(("id" = String, Path, description = "the terminal number (decimal digits)")),
    security(("bearer" = [])),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_registration(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let id = GetDevice::parse(&id)?.id;
    Ok(Json(st.engine.run(ResetRegistration { id }).await?))
}
