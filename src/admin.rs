//! The admin HTTP API (CONTRACT.md "Admin HTTP API"): health, metrics, registry and alerts.
//!
//! Reads go straight to the store; every change runs on the engine thread (`EngineHandle::api`)
//! so that it is validated, applied and committed in one place, and a rejected request changes
//! nothing.

use crate::engine::EngineHandle;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
pub struct AdminState {
    pub engine: EngineHandle,
    pub token: Arc<str>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub outbox: Option<crate::alert::outbox::Outbox>,
}

pub fn router(state: AdminState) -> Router {
    let v1 = Router::new()
        .route("/v1/devices/{id}", get(get_device))
        .route(
            "/v1/vehicles/{id}",
            get(get_vehicle).put(put_vehicle).delete(delete_vehicle),
        )
        .route("/v1/loans/{id}", axum::routing::put(put_loan))
        .route("/v1/alerts", get(list_alerts))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(v1)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        // A province-sized fence runs to megabytes of GeoJSON; axum's default cap is 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .with_state(state)
}

/// A JSON error body with a 4xx/5xx status.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

fn reply((status, body): crate::engine::ApiReply) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn auth(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), st.token.as_bytes()) => next.run(req).await,
        _ => error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(st): State<AdminState>) -> Response {
    match &st.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "metrics are not enabled"),
    }
}

async fn get_device(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    if !crate::event::DeviceId::is_valid(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            "a device id is a string of decimal digits",
        );
    }
    let store = st.engine.store.clone();
    let rec = tokio::task::spawn_blocking(move || store.get_device(&id)).await;
    match rec {
        Ok(Ok(Some(rec))) => {
            let vehicle = st.engine.vehicle_of(rec.device_id.as_str());
            Json(rec.to_json(vehicle.as_deref())).into_response()
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "device never seen"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_vehicle(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    reply(st.engine.api(move |e, _| e.api_get_vehicle(&id)).await)
}

async fn put_vehicle(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    reply(
        st.engine
            .api(move |e, now| e.api_put_vehicle(&id, &body, now))
            .await,
    )
}

async fn delete_vehicle(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    reply(st.engine.api(move |e, _| e.api_delete_vehicle(&id)).await)
}

async fn put_loan(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    reply(
        st.engine
            .api(move |e, now| e.api_put_loan(&id, &body, now))
            .await,
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    state: Option<String>,
    limit: Option<usize>,
    before: Option<u64>,
}

async fn list_alerts(
    State(st): State<AdminState>,
    q: Result<Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameters: state, limit, before",
        );
    };
    let Some(outbox) = st.outbox.clone() else {
        return Json(json!({"alerts": []})).into_response();
    };
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => match crate::alert::outbox::State::parse(s) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "state must be pending, delivered or failed",
                )
            }
        },
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return error(StatusCode::BAD_REQUEST, "limit must be between 1 and 1000");
    }
    let r = tokio::task::spawn_blocking(move || outbox.list(state, limit, q.before)).await;
    match r {
        Ok(Ok(v)) => Json(json!({ "alerts": v })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
