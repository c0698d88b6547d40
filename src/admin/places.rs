//! `/v1/vehicles/{id}/places`: where the car sleeps and works, and where it last stopped.

use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::engine::places::PlacesInputs;
use crate::places::PlacesReport;
use crate::time::Timestamp;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlacesParams {
    /// Days of history to look at (default 30, at most 366).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 366)]
    days: Option<String>,
}

/// The vehicle's places from the history of all its devices, largest dwell first, and its
/// last stop; 404 for an unknown vehicle.
#[utoipa::path(get, path = "/v1/vehicles/{id}/places", tag = "vehicles",
    params(("id" = String, Path, description = "the vehicle id"), PlacesParams),
    security(("bearer" = [])),
    responses((status = 200, body = PlacesReport), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    p: Result<Query<PlacesParams>, QueryRejection>,
) -> Result<Json<PlacesReport>, ApiError> {
    let Query(p) = p?;
    let cmd = PlacesInputs::parse(&id, p.days.as_deref())?;
    let job = st.engine.run(cmd).await?;
    let history = st.history.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::history::places::run(&history, &job, Timestamp::now())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(report))
}
