//! `/v1/alerts`: the outbox as the integrator sees it, newest first.

use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::alert::outbox::{AlertView, State as DeliveryState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `pending`, `delivered` or `failed`.
    state: Option<String>,
    /// Alerts per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// The `seq` of the last alert of the previous page.
    before: Option<u64>,
    /// Only this vehicle's alerts.
    vehicle_id: Option<String>,
}

/// A page of alerts.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AlertPage {
    /// Each alert object (CONTRACT.md "Alerts") plus `state`, `attempts`, `last_error`, `seq`
    /// and `deliveries`.
    #[schema(value_type = Vec<Object>)]
    alerts: Vec<AlertView>,
}

/// Alerts with their delivery state, newest first.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", params(AlertQuery),
    security(("bearer" = [])),
    responses((status = 200, body = AlertPage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<AlertQuery>, QueryRejection>,
) -> Result<Json<AlertPage>, ApiError> {
    let Query(q) = q?;
    let state =
        match q.state.as_deref() {
            None => None,
            Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
                ApiError::bad_request("state must be pending, delivered or failed")
            })?),
        };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let outbox = st.outbox.clone();
    let alerts = tokio::task::spawn_blocking(move || match &q.vehicle_id {
        Some(v) => outbox.list_for_vehicle(v, state, limit, q.before),
        None => outbox.list(state, limit, q.before),
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(AlertPage { alerts }))
}
