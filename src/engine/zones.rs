//! Risk zone commands: put, get, delete, list by kind, and the all-or-nothing bulk import.
//!
//! Bodies are parsed and every geometry compiled before a command reaches the engine thread
//! ([`PutZone::from_json`], [`ImportZones::from_json`]): a list of tens of thousands of zones
//! costs the engine one batch write and an index rebuild, never the validation.

use super::command::{Command, EngineError};
use super::view::Deleted;
use super::Engine;
use crate::registry::{zones_from_feature_collection, Zone};
use crate::store::ZoneWriter;
use crate::time::Timestamp;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// A zone as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ZoneView {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// The geometry exactly as it was given (GeoJSON Polygon or MultiPolygon, or a Circle).
    #[schema(value_type = Object)]
    pub geometry: Box<serde_json::value::RawValue>,
    /// Absent: `rules.risk_zone_dwell_after`.
    #[serde(
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub dwell_after: Option<Duration>,
}

impl ZoneView {
    fn of(z: &Zone) -> Self {
        ZoneView {
            id: z.id.to_string(),
            name: z.name.clone(),
            kind: z.kind.to_string(),
            geometry: z.geometry.source_raw(),
            dwell_after: z.dwell_after,
        }
    }
}

/// `GET /v1/zones`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZoneList {
    pub zones: Vec<ZoneView>,
}

/// What a bulk import did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Imported {
    /// Zones written (new or replaced).
    pub upserted: usize,
    /// Of those, the new ones.
    pub created: usize,
}

fn zone_count(e: &Engine) {
    metrics::gauge!("lienwatch_risk_zones").set(e.vrules.zones.len() as f64);
}

fn not_found(id: &str) -> EngineError {
    EngineError::NotFound(format!("no zone {id:?}"))
}

/// `PUT /v1/zones/{id}`.
pub struct PutZone {
    zone: Zone,
    stored: String,
}

pub struct PutZoneOutcome {
    pub created: bool,
    pub view: ZoneView,
}

impl PutZone {
    pub fn from_json(id: &str, body: &[u8]) -> Result<PutZone, EngineError> {
        let zone = Zone::from_json(id, body).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let stored = zone.stored_json();
        Ok(PutZone { zone, stored })
    }
}

impl Command for PutZone {
    type Output = PutZoneOutcome;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<PutZoneOutcome, EngineError> {
        let id = self.zone.id.clone();
        e.store.put_zones([(&*id, Some(self.stored.as_bytes()))])?;
        let view = ZoneView::of(&self.zone);
        let created = e.vrules.zones.upsert(self.zone);
        e.rearm_dwell(|z| *z == *id);
        zone_count(e);
        Ok(PutZoneOutcome { created, view })
    }
}

/// `GET /v1/zones/{id}`.
pub struct GetZone {
    pub id: String,
}

impl Command for GetZone {
    type Output = ZoneView;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<ZoneView, EngineError> {
        e.vrules
            .zones
            .get(&self.id)
            .map(|z| ZoneView::of(z))
            .ok_or_else(|| not_found(&self.id))
    }
}

/// `DELETE /v1/zones/{id}`: visits in progress end with the device's next fix.
pub struct DeleteZone {
    pub id: String,
}

impl Command for DeleteZone {
    type Output = Deleted;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<Deleted, EngineError> {
        if e.vrules.zones.get(&self.id).is_none() {
            return Err(not_found(&self.id));
        }
        e.store.put_zones([(self.id.as_str(), None)])?;
        e.vrules.zones.remove(&self.id);
        zone_count(e);
        Ok(Deleted { deleted: self.id })
    }
}

/// `GET /v1/zones?kind=K`: every zone (of that kind), in id order.
pub struct ListZones {
    pub kind: Option<String>,
}

/// The zones a [`ListZones`] found, shared with the engine: taken on the engine thread (a
/// pointer each), sorted and turned into their views by the reader
/// ([`ZoneSnapshot::into_list`]), off it: tens of thousands of zones are tens of megabytes of
/// geometry, and admin requests never stall ingestion (CONTRACT.md).
pub struct ZoneSnapshot(Vec<std::sync::Arc<Zone>>);

impl ZoneSnapshot {
    pub fn into_list(mut self) -> ZoneList {
        self.0.sort_by(|a, b| a.id.cmp(&b.id));
        ZoneList {
            zones: self.0.iter().map(|z| ZoneView::of(z)).collect(),
        }
    }
}

impl Command for ListZones {
    type Output = ZoneSnapshot;
    const WRITES: bool = false;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<ZoneSnapshot, EngineError> {
        Ok(ZoneSnapshot(e.vrules.zones.unordered(self.kind.as_deref())))
    }
}

/// `POST /v1/zones`: a GeoJSON FeatureCollection validated whole, refused whole with the bad
/// feature named, else upserted: in one store batch in the engine's turn, or beforehand in
/// slices off the engine thread ([`ImportZones::write_ahead`]), which the engine then indexes.
pub struct ImportZones {
    zones: Vec<Zone>,
    stored: Vec<String>,
    /// Already on disk ([`ImportZones::write_ahead`]): the engine's turn only indexes them.
    written: bool,
}

impl ImportZones {
    pub fn from_json(body: &[u8]) -> Result<ImportZones, EngineError> {
        let zones =
            zones_from_feature_collection(body).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let stored = zones.iter().map(Zone::stored_json).collect();
        Ok(ImportZones {
            zones,
            stored,
            written: false,
        })
    }

    /// Writes the zones to the store on the calling thread, durably, before the engine takes
    /// the command (see [`ZoneWriter`]). The caller holds zone changes back meanwhile, and
    /// hands the command to the engine whatever this returns: on a failure part-way it keeps
    /// only the zones that reached the disk, so that the engine indexes exactly what the store
    /// holds. A crash between the two loses nothing: the zones load from the store at the next
    /// start.
    pub fn write_ahead(&mut self, w: &ZoneWriter) -> Result<(), EngineError> {
        let mut written = 0;
        let result = w.put_durably(
            self.zones
                .iter()
                .zip(&self.stored)
                .map(|(z, b)| (&*z.id, b.as_bytes())),
            &mut written,
        );
        self.written = true;
        self.stored = Vec::new();
        self.zones.truncate(written);
        Ok(result?)
    }

    /// How many zones the command holds (after [`ImportZones::write_ahead`], those written).
    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }
}

impl Command for ImportZones {
    type Output = Imported;

    fn apply(self, e: &mut Engine, _now: Timestamp) -> Result<Imported, EngineError> {
        if !self.written {
            e.store.put_zones(
                self.zones
                    .iter()
                    .zip(&self.stored)
                    .map(|(z, b)| (&*z.id, Some(b.as_bytes()))),
            )?;
        }
        let upserted = self.zones.len();
        let ids: std::collections::HashSet<std::sync::Arc<str>> =
            self.zones.iter().map(|z| z.id.clone()).collect();
        let created = e.vrules.zones.upsert_many(self.zones);
        e.rearm_dwell(|z| ids.contains(z));
        zone_count(e);
        Ok(Imported { upserted, created })
    }
}
