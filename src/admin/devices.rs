//! `/v1/devices/{id}`: what lienwatch knows of one tracker.

use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::engine::devices::GetDevice;
use crate::engine::view::DeviceView;
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
