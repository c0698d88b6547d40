//! `/v1/loans/{id}`: the lender's system reports a loan's status.

use super::error::{ApiError, ErrorBody};
use super::{off_runtime, AdminState};
use crate::engine::loans::{LoanBody, SetLoan};
use crate::engine::view::LoanUpdated;
use axum::extract::{Path, State};
use axum::Json;

/// Updates every vehicle that secures the loan.
#[utoipa::path(put, path = "/v1/loans/{id}", tag = "loans",
    params(("id" = String, Path, description = "the loan id")),
    request_body = LoanBody,
    security(("bearer" = [])),
    responses((status = 200, body = LoanUpdated), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn put(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<LoanUpdated>, ApiError> {
    let cmd = off_runtime(move || SetLoan::from_json(&id, &body)).await?;
    Ok(Json(st.engine.run(cmd).await?))
}
