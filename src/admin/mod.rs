//! The admin HTTP API (CONTRACT.md "Admin HTTP API"): health, metrics, the registry, alerts,
//! its own OpenAPI description, and the web console that shows them.
//!
//! This is the only layer that speaks HTTP. Each resource has its file: it parses the request
//! into an engine command (bodies are parsed and validated here, off the engine thread), sends it
//! through the [`EngineHandle`], and maps the answer or [`EngineError`] to a status code
//! ([`ApiError`]). A rejected request changes nothing.

mod alerts;
mod commands;
mod console;
mod devices;
mod error;
mod loans;
mod openapi;
mod places;
mod service;
mod track;
mod vehicles;
mod zones;

pub use error::{status_of, ApiError};
pub use openapi::openapi;

use crate::engine::{EngineError, EngineHandle};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The largest request body: a province-sized fence or a nationwide zone list runs to
/// megabytes of GeoJSON (axum's default cap is 2 MB).
pub const MAX_BODY: usize = 16 << 20;

#[derive(Clone)]
pub struct AdminState {
    pub engine: EngineHandle,
    pub token: Arc<str>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub outbox: crate::alert::outbox::Outbox,
    /// Read directly (off the engine thread): a month of fixes is read without stalling ingest.
    pub history: crate::history::History,
    pub history_retention: std::time::Duration,
    /// The console's map settings (`[console]`).
    pub console: crate::config::ConsoleConfig,
}

/// Every `/v1` route with its OpenAPI operation, bearer-protected.
fn v1() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(vehicles::list))
        .routes(routes!(vehicles::get, vehicles::put, vehicles::delete))
        .routes(routes!(loans::put))
        .routes(routes!(devices::get))
        .routes(routes!(devices::delete_registration))
        .routes(routes!(track::get))
        .routes(routes!(places::get))
        .routes(routes!(commands::create, commands::list))
        .routes(routes!(commands::get))
        .routes(routes!(alerts::list))
        .routes(routes!(zones::list, zones::import))
        .routes(routes!(zones::get, zones::put, zones::delete))
}

pub fn router(state: AdminState) -> Router {
    let (v1, _) = v1()
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .split_for_parts();
    Router::new()
        .merge(service::router())
        .merge(console::router(&state.console))
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
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
        _ => ApiError::unauthorized().into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a request body off the async runtime: a large fence's validation takes real CPU.
async fn parse_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// The status of a PUT that creates or replaces (CONTRACT.md): 201 when it created.
fn put_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}
