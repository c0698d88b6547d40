//! `/v1/devices/{id}/commands` and `/v1/commands/{id}`: commands to devices (locate now,
//! tracking mode, raw text), kept until the device comes back.

use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::engine::commands::{
    CancelCommand, CommandBody, CommandList, CommandView, CreateCommand, GetCommand,
    ListDeviceCommands,
};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CommandQuery {
    /// Commands per answer, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// Queues a command for the device: sent within 1 s if it is connected, else within 1 s of its
/// next login, until it expires. 422 for a type the device's protocol cannot carry.
#[utoipa::path(post, path = "/v1/devices/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "the device id (decimal digits)")),
    request_body = CommandBody,
    security(("bearer" = [])),
    responses((status = 202, body = CommandView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    let cmd = CreateCommand::parse(&id, &body)?;
    let view = st.engine.run(cmd).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// One command and where it is: `queued`, `sent`, `answered`, `failed` or `expired`, with the
/// device's answer.
#[utoipa::path(get, path = "/v1/commands/{id}", tag = "commands",
    params(("id" = String, Path, description = "the command id (`cmd_<n>`)")),
    security(("bearer" = [])),
    responses((status = 200, body = CommandView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CommandView>, ApiError> {
    Ok(Json(st.engine.run(GetCommand::parse(&id)?).await?))
}

/// Withdraws a command still `queued` or `sent` (a relay command for a car whose loan was cured
/// while it was off): it becomes `failed`, `error` "cancelled by the operator", and is never sent
/// again. One already written to the device may still be carried out. 409 for a command already
/// `answered`, `failed` or `expired`.
#[utoipa::path(delete, path = "/v1/commands/{id}", tag = "commands",
    params(("id" = String, Path, description = "the command id (`cmd_<n>`)")),
    security(("bearer" = [])),
    responses((status = 200, body = CommandView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CommandView>, ApiError> {
    Ok(Json(st.engine.run(CancelCommand::parse(&id)?).await?))
}

/// The device's commands, newest first.
#[utoipa::path(get, path = "/v1/devices/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "the device id (decimal digits)"), CommandQuery),
    security(("bearer" = [])),
    responses((status = 200, body = CommandList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    q: Result<Query<CommandQuery>, QueryRejection>,
) -> Result<Json<CommandList>, ApiError> {
    let Query(q) = q?;
    let cmd = ListDeviceCommands::parse(&id, q.limit)?;
    Ok(Json(st.engine.run(cmd).await?))
}
