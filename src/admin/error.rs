//! Errors as the API shows them: `{"error": "..."}` with the status that says what was wrong.

use crate::engine::EngineError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error body and its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// The error body (`{"error": "..."}`), for the OpenAPI description.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// A query string that does not fit its handler's parameters: 400 with serde's words, which
/// name the parameter (`unknown field `status``, `limit: invalid digit found in string`).
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        let text = r.body_text();
        let why = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        Self::bad_request(format!("query parameters: {why}"))
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// The one mapping from the engine's errors to HTTP statuses (the admin API and `replay`).
pub fn status_of(e: &EngineError) -> StatusCode {
    match e {
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::Invalid(_) => StatusCode::BAD_REQUEST,
        EngineError::Conflict(_) => StatusCode::CONFLICT,
        EngineError::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
        EngineError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        EngineError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::new(status_of(&e), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Every refused request is counted by status: a rise of 401s is someone guessing tokens,
        // of 400s a broken integration.
        metrics::counter!("lienwatch_admin_rejected_total", "status" => self.status.as_str().to_owned())
            .increment(1);
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}
