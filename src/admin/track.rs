//! `/v1/devices/{id}/track`: a device's stored fixes in time order (CONTRACT.md "Position
//! history"), as JSON or GeoJSON.

use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::engine::devices::GetDevice;
use crate::history::track::{self, TrackQuery};
use crate::time::Timestamp;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrackParams {
    /// RFC 3339; default a day before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// RFC 3339, exclusive; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Most positions returned (default 10000, at most 100000).
    // Taken as text, so that a bad one gets the track's own 400.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    limit: Option<String>,
    /// `json` (default) or `geojson`.
    format: Option<String>,
}

/// The track body, for the OpenAPI description.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TrackBody {
    device_id: String,
    /// Positions as in CONTRACT.md "Positions", oldest first; a suspect fix has `"suspect"`.
    positions: Vec<serde_json::Value>,
}

/// A device's fixes with `from <= time < to`, oldest first; 404 for a device never seen.
#[utoipa::path(get, path = "/v1/devices/{id}/track", tag = "devices",
    params(("id" = String, Path, description = "the device id (decimal digits)"), TrackParams),
    security(("bearer" = [])),
    responses((status = 200, body = TrackBody,
            description = "JSON, or a GeoJSON FeatureCollection with format=geojson"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    p: Result<Query<TrackParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = p?;
    let now = Timestamp::now();
    let q = TrackQuery::parse(
        &id,
        p.from.as_deref(),
        p.to.as_deref(),
        p.limit.as_deref(),
        p.format.as_deref(),
        now,
    )?;
    // 404 for a device never seen, from the engine's registry of devices.
    st.engine
        .run(GetDevice {
            id: q.device.clone(),
        })
        .await?;
    let (history, retention) = (st.history.clone(), st.history_retention);
    let (body, media) = tokio::task::spawn_blocking(move || {
        let fixes = track::read(&history, &q, retention, now)?;
        Ok::<_, crate::store::StoreError>(track::render(&q, &fixes))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, media)], body).into_response())
}
