//! `/v1/zones`: risk zones (二押点, used-car markets, pawn shops), one at a time or a whole
//! GeoJSON list at once (CONTRACT.md "Risk zones").

use super::error::{ApiError, ErrorBody};
use super::{off_runtime, put_status, AdminState};
use crate::engine::view::Deleted;
use crate::engine::zones::{
    DeleteZone, GetZone, ImportZones, Imported, ListZones, PutZone, ZoneList, ZoneView,
};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

/// Zone changes one at a time: a bulk import writes its zones to the store off the engine
/// thread (`ImportZones::write_ahead`) before the engine indexes them, and no other change of
/// a zone may land between the two.
#[derive(Clone)]
pub struct ZoneWrites {
    writer: crate::store::ZoneWriter,
    turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Bulk imports one at a time from their first byte: each holds its body and its parsed
    /// zones (several times the body for large polygons), so concurrent imports of 128 MiB each
    /// could take gigabytes. Single zone changes do not wait for it.
    import: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl ZoneWrites {
    pub fn new(writer: crate::store::ZoneWriter) -> Self {
        ZoneWrites {
            writer,
            turn: Default::default(),
            import: Default::default(),
        }
    }

    /// Runs a zone change in its turn, in a task of its own that goes to its end even if the
    /// request goes away (a client's timeout must not leave an import written but not indexed,
    /// nor let the next change in before this one reached the engine).
    async fn in_turn<T: Send + 'static>(
        &self,
        change: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    ) -> Result<T, ApiError> {
        let turn = self.turn.clone().lock_owned().await;
        tokio::spawn(async move {
            let out = change.await;
            drop(turn);
            out
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    }
}

/// The largest bulk import: a nationwide list of 100,000 zones in compact GeoJSON. The other
/// routes keep `MAX_BODY`.
pub const MAX_IMPORT: usize = 128 << 20;

/// How long an import's body may take to arrive: 128 MiB at 250 KB/s.
const IMPORT_READ: std::time::Duration = std::time::Duration::from_secs(10 * 60);

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ZoneQuery {
    /// Only zones of this kind (`pawnshop`, `used_car_market`, ...).
    kind: Option<String>,
}

/// Every zone, in id order, optionally of one kind.
#[utoipa::path(get, path = "/v1/zones", tag = "zones", params(ZoneQuery),
    security(("bearer" = [])),
    responses((status = 200, body = ZoneList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<ZoneQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(q) = q?;
    let zones = st.engine.run(ListZones { kind: q.kind }).await?;
    // Sorted, viewed and written off the runtime's workers too: they carry the devices.
    let body = tokio::task::spawn_blocking(move || serde_json::to_vec(&zones.into_list()))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Upserts every feature of a GeoJSON FeatureCollection as a zone (id from the feature's `id`
/// or `properties.id`; `name`, `kind`, `dwell_after`, and `radius_m` for a Point, from
/// `properties`), or, if one is invalid, none of them: 400 names the first bad feature. A
/// storage failure part-way puts in force the zones written before it, and says how many.
#[utoipa::path(post, path = "/v1/zones", tag = "zones",
    request_body(content = Object, description = "a GeoJSON FeatureCollection of zones"),
    security(("bearer" = [])),
    responses((status = 200, body = Imported), (status = 400, body = ErrorBody),
        (status = 408, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn import(
    State(st): State<AdminState>,
    body: axum::body::Body,
) -> Result<Json<Imported>, ApiError> {
    // One import's body in memory at a time; one that stalls its upload holds up the others
    // for `IMPORT_READ` at most.
    let import = st.zones.import.clone().lock_owned().await;
    let body = match tokio::time::timeout(IMPORT_READ, axum::body::to_bytes(body, MAX_IMPORT)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a zone list is limited to {} MiB", MAX_IMPORT >> 20),
            ))
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the zone list was not received within {} minutes",
                    IMPORT_READ.as_secs() / 60
                ),
            ))
        }
    };
    let cmd = off_runtime(move || ImportZones::from_json(&body)).await?;
    let all = cmd.zone_count();
    let (engine, writer) = (st.engine.clone(), st.zones.writer.clone());
    let imported = st
        .zones
        .in_turn(async move {
            // Held to the end of the write, even when the client goes away before it.
            let _import = import;
            let (cmd, wrote) = off_runtime(move || {
                let mut cmd = cmd;
                let wrote = cmd.write_ahead(&writer);
                Ok((cmd, wrote))
            })
            .await?;
            // What reached the disk is put in force, all of it or the part before a failure.
            let written = cmd.zone_count();
            let indexed = engine.run(cmd).await;
            match wrote {
                Ok(()) => Ok(indexed?),
                Err(e) => Err(ApiError::internal(format!(
                    "{e}: {written} of the {all} zones were written and are in force; send the \
                     list again"
                ))),
            }
        })
        .await?;
    Ok(Json(imported))
}

/// One zone.
#[utoipa::path(get, path = "/v1/zones/{id}", tag = "zones",
    params(("id" = String, Path, description = "the lender's zone id")),
    security(("bearer" = [])),
    responses((status = 200, body = ZoneView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<ZoneView>, ApiError> {
    Ok(Json(st.engine.run(GetZone { id }).await?))
}

/// Creates or replaces a zone: `name`, `kind`, `geometry` (as for geofences), optional
/// `dwell_after`; 201 when it is new.
#[utoipa::path(put, path = "/v1/zones/{id}", tag = "zones",
    params(("id" = String, Path, description = "the lender's zone id")),
    request_body(content = Object, description = "name, kind, geometry (GeoJSON Polygon, MultiPolygon or Circle), optional dwell_after; name and kind at most 256 characters"),
    security(("bearer" = [])),
    responses((status = 200, body = ZoneView), (status = 201, body = ZoneView),
        (status = 400, body = ErrorBody)))]
pub async fn put(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<ZoneView>), ApiError> {
    let cmd = off_runtime(move || PutZone::from_json(&id, &body)).await?;
    let engine = st.engine.clone();
    let out = st
        .zones
        .in_turn(async move { Ok(engine.run(cmd).await?) })
        .await?;
    Ok((put_status(out.created), Json(out.view)))
}

/// Removes a zone; visits in progress end with the device's next fix.
#[utoipa::path(delete, path = "/v1/zones/{id}", tag = "zones",
    params(("id" = String, Path, description = "the lender's zone id")),
    security(("bearer" = [])),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let engine = st.engine.clone();
    let deleted = st
        .zones
        .in_turn(async move { Ok(engine.run(DeleteZone { id }).await?) })
        .await?;
    Ok(Json(deleted))
}
