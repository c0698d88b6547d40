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
mod token;
mod track;
mod vehicles;
pub(crate) mod zones;

pub use console::ConsoleZone;
pub use token::AdminToken;

pub use error::{status_of, ApiError};
pub use openapi::openapi;

use crate::engine::{EngineError, EngineHandle};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The largest request body: a province-sized fence or a nationwide zone list runs to
/// megabytes of GeoJSON (axum's default cap is 2 MB).
pub const MAX_BODY: usize = 16 << 20;

#[derive(Clone)]
pub struct AdminState {
    pub engine: EngineHandle,
    pub token: AdminToken,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub outbox: crate::alert::outbox::Outbox,
    /// Read directly (off the engine thread): a month of fixes is read without stalling ingest.
    pub history: crate::history::History,
    pub history_retention: std::time::Duration,
    /// The console's map settings (`[console]`).
    pub console: crate::config::ConsoleConfig,
    /// `rules.timezone`: the console shows times and days in it.
    pub timezone: console::ConsoleZone,
    /// Zone changes, one at a time; a bulk import's store write off the engine thread.
    pub zones: zones::ZoneWrites,
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
        .routes(routes!(commands::get, commands::cancel))
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
        .merge(console::router(&state.console, state.timezone.clone()))
        .merge(v1)
        .fallback(no_such_endpoint)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

async fn auth(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    if authorized(&st, &req) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

fn authorized(st: &AdminState, req: &Request) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|t| st.token.matches(t))
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's name is matched without
/// regard to case (RFC 7235 §2.1), as HTTP clients and proxies may write it `bearer`.
fn bearer_token(v: &str) -> Option<&str> {
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Every `/v1/...` request needs the token, also one for a path that does not exist: without it
/// the answer is 401, so that the API's shape is not told to whoever asks.
async fn no_such_endpoint(State(st): State<AdminState>, req: Request) -> ApiError {
    if req.uri().path().starts_with("/v1/") && !authorized(&st, &req) {
        return ApiError::unauthorized();
    }
    ApiError::not_found("no such endpoint")
}

/// axum's own refusals (a method the path does not take, a body over [`MAX_BODY`], a path or
/// query it cannot read) come as text or with no body: every 4xx leaves as `{"error": ...}`
/// (CONTRACT.md "Admin HTTP API"), counted as the API's own are.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() || json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    out
}

/// Runs a request's heavy work off the async runtime: a large fence's validation takes real CPU,
/// a zone import's store write real I/O.
async fn off_runtime<T: Send + 'static>(
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_bearer_scheme_is_matched_without_case() {
        for h in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
            assert_eq!(super::bearer_token(h), Some("abc"), "{h:?}");
        }
        for h in ["Basic abc", "Bearerabc", "Bearer", "Token abc"] {
            assert_eq!(super::bearer_token(h), None, "{h:?}");
        }
    }
}
