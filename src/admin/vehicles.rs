//! `/v1/vehicles`: the registry's vehicles and the list the collections desk pages through.

use super::error::{ApiError, ErrorBody};
use super::{off_runtime, put_status, AdminState};
use crate::engine::risk::RiskQueue;
use crate::engine::vehicles::{DeleteVehicle, GetVehicle, PutVehicle};
use crate::engine::view::{Deleted, VehiclePage, VehicleView};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

/// The queue's filters and paging.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated tiers to keep: `high`, `medium`, `low`, `none`.
    tier: Option<String>,
    /// Comma-separated loan statuses to keep: `current`, `overdue`, `closed`.
    loan_status: Option<String>,
    /// Vehicles per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// The collections queue: vehicles by risk score, highest first (ties: the longest silent
/// first), a page at a time.
#[utoipa::path(get, path = "/v1/vehicles", tag = "vehicles", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = VehiclePage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<VehiclePage>, ApiError> {
    let Query(q) = q?;
    let cmd = RiskQueue::parse(
        q.tier.as_deref(),
        q.loan_status.as_deref(),
        q.limit,
        q.after,
    )?;
    Ok(Json(st.engine.run(cmd).await?))
}

/// The vehicle, its loan, and each device's last-known position and rule state.
#[utoipa::path(get, path = "/v1/vehicles/{id}", tag = "vehicles",
    params(("id" = String, Path, description = "the lender's vehicle id")),
    security(("bearer" = [])),
    responses((status = 200, body = VehicleView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<VehicleView>, ApiError> {
    Ok(Json(st.engine.run(GetVehicle { id }).await?))
}

/// Creates or replaces a vehicle (CONTRACT.md "Vehicle body"); 201 when it is new.
#[utoipa::path(put, path = "/v1/vehicles/{id}", tag = "vehicles",
    params(("id" = String, Path, description = "the lender's vehicle id")),
    request_body(content = Object, description = "vin, plate, loan, devices and an optional geofence (GeoJSON Polygon, MultiPolygon or Circle); vin, plate and loan.id at most 128 characters, at most 16 devices; other vehicles that secure the same loan take its status and days_past_due"),
    security(("bearer" = [])),
    responses((status = 200, body = VehicleView), (status = 201, body = VehicleView),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn put(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<VehicleView>), ApiError> {
    let cmd = off_runtime(move || PutVehicle::from_json(&id, &body)).await?;
    let out = st.engine.run(cmd).await?;
    Ok((put_status(out.created), Json(out.view)))
}

/// Stops watching a vehicle.
#[utoipa::path(delete, path = "/v1/vehicles/{id}", tag = "vehicles",
    params(("id" = String, Path, description = "the lender's vehicle id")),
    security(("bearer" = [])),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    Ok(Json(st.engine.run(DeleteVehicle { id }).await?))
}
