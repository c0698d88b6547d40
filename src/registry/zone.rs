//! Risk zones (二押点, used-car markets, pawn shops): places where a collateral car has no
//! business, shared by every vehicle (CONTRACT.md "Risk zones").
//!
//! A zone's geometry follows the geofence rules exactly ([`Geofence`]: Polygon, MultiPolygon or
//! Circle, validated and compiled once). Bodies come one at a time (`PUT /v1/zones/{id}`) or as a
//! GeoJSON `FeatureCollection` ([`zones_from_feature_collection`]), where an error names the
//! feature so a lender can fix a list of tens of thousands.

use super::{Geofence, GeofenceError, Vehicle};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Why a zone (or a list of them) was refused. Every message names the field and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZoneError {
    #[error("invalid zone body: {0}")]
    Body(String),
    #[error("zone id must be 1 to 128 printable characters without '/'")]
    BadId,
    #[error("kind must be a non-empty string (pawnshop, used_car_market, second_pledge, ...)")]
    NoKind,
    #[error("dwell_after must be longer than zero")]
    ZeroDwell,
    #[error("geometry: {0}")]
    Geometry(#[from] GeofenceError),
    #[error("invalid FeatureCollection: {0}")]
    Collection(String),
    #[error("features[{index}]{}: {error}", id.as_ref().map(|i| format!(" (id {i:?})")).unwrap_or_default())]
    Feature {
        index: usize,
        id: Option<String>,
        error: Box<ZoneError>,
    },
    #[error("the feature has no id (give the feature an \"id\" or properties.id)")]
    NoFeatureId,
    #[error("zone id {0:?} appears more than once")]
    DuplicateId(String),
    #[error("{field}: at most {max} characters")]
    TooLong { field: &'static str, max: usize },
}

/// Longest zone name and kind: every zone alert carries them (see `registry::MAX_FIELD`).
pub const MAX_ZONE_TEXT: usize = 256;

/// One risk zone, validated, its geometry compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    pub id: Arc<str>,
    pub name: String,
    /// Free text (`pawnshop`, `used_car_market`, `second_pledge`, ...); the list filters on it.
    pub kind: Arc<str>,
    pub geometry: Geofence,
    /// Overrides `rules.risk_zone_dwell_after` for this zone.
    pub dwell_after: Option<Duration>,
}

/// The body of `PUT /v1/zones/{id}`, as given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneBody {
    /// Optional: what `GET` shows may be sent back as is, if it names the same zone.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    kind: String,
    geometry: serde_json::Value,
    #[serde(default, with = "crate::duration::option")]
    dwell_after: Option<Duration>,
}

/// The stored and shown form: the body plus nothing else (the id is the key).
#[derive(Serialize)]
struct Stored<'a> {
    name: &'a str,
    kind: &'a str,
    geometry: &'a serde_json::value::RawValue,
    #[serde(
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    dwell_after: &'a Option<Duration>,
}

impl Zone {
    /// Parses and validates a `PUT /v1/zones/{id}` body.
    /// A zone as the API takes it: [`Zone::from_stored`], within the API's limits.
    pub fn from_json(id: &str, body: &[u8]) -> Result<Zone, ZoneError> {
        Self::from_stored(id, body)?.within_limits()
    }

    /// The name and kind are at most [`MAX_ZONE_TEXT`] characters. Checked on what the API
    /// takes, not on what is stored: a zone kept before the limit still loads.
    fn within_limits(self) -> Result<Zone, ZoneError> {
        for (field, text) in [("name", &*self.name), ("kind", &*self.kind)] {
            if text.chars().count() > MAX_ZONE_TEXT {
                return Err(ZoneError::TooLong {
                    field,
                    max: MAX_ZONE_TEXT,
                });
            }
        }
        Ok(self)
    }

    /// A zone as stored (the same body as the API's).
    pub fn from_stored(id: &str, body: &[u8]) -> Result<Zone, ZoneError> {
        let b: ZoneBody =
            serde_json::from_slice(body).map_err(|e| ZoneError::Body(e.to_string()))?;
        if b.id.as_deref().is_some_and(|given| given != id) {
            return Err(ZoneError::Body(format!(
                "id {:?} in the body differs from {id:?} in the path",
                b.id.unwrap_or_default()
            )));
        }
        Self::build(id, b.name, Some(b.kind), b.geometry, b.dwell_after)
    }

    fn build(
        id: &str,
        name: Option<String>,
        kind: Option<String>,
        geometry: serde_json::Value,
        dwell_after: Option<Duration>,
    ) -> Result<Zone, ZoneError> {
        if !Vehicle::is_valid_id(id) {
            return Err(ZoneError::BadId);
        }
        let kind = kind
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .ok_or(ZoneError::NoKind)?;
        if dwell_after == Some(Duration::ZERO) {
            return Err(ZoneError::ZeroDwell);
        }
        Ok(Zone {
            id: Arc::from(id),
            name: name.unwrap_or_default(),
            kind: Arc::from(kind),
            geometry: Geofence::from_json(geometry)?,
            dwell_after,
        })
    }

    /// The body as stored and shown (`GET /v1/zones/{id}` adds the id); the geometry copied as
    /// text, not re-parsed.
    pub fn stored_json(&self) -> String {
        let raw = self.geometry.source_raw();
        serde_json::to_string(&Stored {
            name: &self.name,
            kind: &self.kind,
            geometry: &raw,
            dwell_after: &self.dwell_after,
        })
        .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct Collection {
    #[serde(rename = "type")]
    ty: String,
    features: Vec<Feature>,
}

/// A GeoJSON feature; foreign members are allowed (RFC 7946 §6.1), so unknown keys pass.
#[derive(Deserialize)]
struct Feature {
    #[serde(rename = "type", default)]
    ty: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    properties: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    geometry: Option<serde_json::Value>,
}

fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn prop_str(
    props: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<String>, ZoneError> {
    match props.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ZoneError::Body(format!(
            "properties.{key} must be a string, got {other}"
        ))),
    }
}

impl Feature {
    fn id(&self) -> Option<String> {
        self.id.as_ref().and_then(id_text).or_else(|| {
            self.properties
                .as_ref()
                .and_then(|p| p.get("id"))
                .and_then(id_text)
        })
    }

    fn into_zone(self, id: &str) -> Result<Zone, ZoneError> {
        if self.ty.as_deref().is_some_and(|t| t != "Feature") {
            return Err(ZoneError::Body("type must be \"Feature\"".into()));
        }
        let props = self.properties.unwrap_or_default();
        let dwell_after = prop_str(&props, "dwell_after")?
            .map(|s| crate::duration::parse(&s))
            .transpose()
            .map_err(|e| ZoneError::Body(format!("properties.dwell_after: {e}")))?;
        let mut geometry = self
            .geometry
            .ok_or_else(|| ZoneError::Body("geometry is required".into()))?;
        // GeoJSON has no circle: a Point with properties.radius_m is one (how POI lists come).
        if geometry.get("type").and_then(|t| t.as_str()) == Some("Point") {
            let radius = props
                .get("radius_m")
                .and_then(|r| r.as_f64())
                .ok_or_else(|| {
                    ZoneError::Body("a Point zone needs properties.radius_m (metres)".into())
                })?;
            let center = geometry.get("coordinates").cloned().unwrap_or_default();
            geometry = serde_json::json!({"type": "Circle", "center": center, "radius_m": radius});
        }
        Zone::build(
            id,
            prop_str(&props, "name")?,
            prop_str(&props, "kind")?,
            geometry,
            dwell_after,
        )?
        .within_limits()
    }
}

/// Parses and validates a whole `POST /v1/zones` FeatureCollection: every zone, or the first
/// error with the feature's index and id.
pub fn zones_from_feature_collection(body: &[u8]) -> Result<Vec<Zone>, ZoneError> {
    let c: Collection =
        serde_json::from_slice(body).map_err(|e| ZoneError::Collection(e.to_string()))?;
    if c.ty != "FeatureCollection" {
        return Err(ZoneError::Collection(format!(
            "type must be \"FeatureCollection\", got {:?}",
            c.ty
        )));
    }
    let mut seen = HashSet::with_capacity(c.features.len());
    let mut zones = Vec::with_capacity(c.features.len());
    for (index, f) in c.features.into_iter().enumerate() {
        let id = f.id();
        let at = |error: ZoneError| ZoneError::Feature {
            index,
            id: id.clone(),
            error: Box::new(error),
        };
        let Some(zid) = id.clone() else {
            return Err(at(ZoneError::NoFeatureId));
        };
        if !seen.insert(zid.clone()) {
            return Err(at(ZoneError::DuplicateId(zid)));
        }
        zones.push(f.into_zone(&zid).map_err(at)?);
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn square() -> serde_json::Value {
        json!({"type": "Polygon", "coordinates": [[[113.9, 22.5], [114.1, 22.5], [114.1, 22.7], [113.9, 22.7], [113.9, 22.5]]]})
    }

    #[test]
    fn body_parses_and_round_trips() {
        let b = json!({"name": "东门二押", "kind": "pawnshop", "geometry": square(), "dwell_after": "30m"});
        let z = Zone::from_json("Z-1", &serde_json::to_vec(&b).unwrap()).unwrap();
        assert_eq!((&*z.id, &*z.kind), ("Z-1", "pawnshop"));
        assert_eq!(z.dwell_after, Some(Duration::from_secs(1800)));
        let stored: serde_json::Value = serde_json::from_str(&z.stored_json()).unwrap();
        assert_eq!(stored, b);
        let again = Zone::from_json("Z-1", z.stored_json().as_bytes()).unwrap();
        assert_eq!(again, z);
    }

    #[test]
    fn bad_bodies_are_named() {
        let e = |b: serde_json::Value| {
            Zone::from_json("Z", &serde_json::to_vec(&b).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(e(json!({"kind": "", "geometry": square()})).contains("kind"));
        assert!(
            e(json!({"kind": "x", "geometry": square(), "dwell_after": "0s"}))
                .contains("dwell_after")
        );
        assert!(e(json!({"kind": "x", "geometry": square(), "colour": 1})).contains("colour"));
        assert!(e(json!({"id": "Y", "kind": "x", "geometry": square()})).contains("differs"));
        assert!(Zone::from_json(
            "Z",
            br#"{"id":"Z","kind":"x","geometry":{"type":"Circle","center":[1,1],"radius_m":5}}"#
        )
        .is_ok());
        let open = json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]});
        assert!(e(json!({"kind": "x", "geometry": open})).contains("not closed"));
        assert_eq!(
            Zone::from_json(
                "a/b",
                br#"{"kind":"x","geometry":{"type":"Circle","center":[1,1],"radius_m":5}}"#
            ),
            Err(ZoneError::BadId)
        );
    }

    #[test]
    fn feature_collection_all_or_the_bad_feature_named() {
        let fc = json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": "Z-1", "properties": {"name": "a", "kind": "pawnshop"}, "geometry": square()},
            {"type": "Feature", "id": 7, "properties": {"kind": "used_car_market", "dwell_after": "1h"},
             "geometry": {"type": "Circle", "center": [114.0, 22.6], "radius_m": 300}},
            {"type": "Feature", "properties": {"id": "Z-3", "kind": "second_pledge", "radius_m": 150, "extra": true},
             "geometry": {"type": "Point", "coordinates": [114.0, 22.6]}}
        ]});
        let zones = zones_from_feature_collection(&serde_json::to_vec(&fc).unwrap()).unwrap();
        let ids: Vec<&str> = zones.iter().map(|z| &*z.id).collect();
        assert_eq!(ids, ["Z-1", "7", "Z-3"]);
        assert!(zones[2].geometry.index().contains(114.0, 22.6005));

        let mut bad = fc.clone();
        bad["features"][1]["geometry"]["radius_m"] = json!(-1);
        let e = zones_from_feature_collection(&serde_json::to_vec(&bad).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("features[1] (id \"7\"): geometry: circle radius_m"),
            "{e}"
        );
        let mut dup = fc.clone();
        dup["features"][2]["properties"]["id"] = json!("Z-1");
        let e = zones_from_feature_collection(&serde_json::to_vec(&dup).unwrap()).unwrap_err();
        assert!(e.to_string().contains("features[2]"), "{e}");
        let e = zones_from_feature_collection(br#"{"type":"Feature","features":[]}"#).unwrap_err();
        assert!(e.to_string().contains("FeatureCollection"), "{e}");
        let noid = json!({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"kind": "x"}, "geometry": square()}]});
        let e = zones_from_feature_collection(&serde_json::to_vec(&noid).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("features[0]: the feature has no id"),
            "{e}"
        );
    }

    #[test]
    fn a_long_name_or_kind_is_refused_by_the_api_but_loads_from_the_store() {
        let long = "典".repeat(MAX_ZONE_TEXT + 1);
        for (field, body) in [
            (
                "name",
                json!({"name": long, "kind": "pawnshop", "geometry": {"type": "Circle", "center": [114.0, 22.5], "radius_m": 100}}),
            ),
            (
                "kind",
                json!({"kind": long, "geometry": {"type": "Circle", "center": [114.0, 22.5], "radius_m": 100}}),
            ),
        ] {
            let b = serde_json::to_vec(&body).unwrap();
            let e = Zone::from_json("Z-1", &b).unwrap_err().to_string();
            assert_eq!(e, format!("{field}: at most {MAX_ZONE_TEXT} characters"));
            assert!(Zone::from_stored("Z-1", &b).is_ok(), "{field}");
        }
        let fc = json!({"type": "FeatureCollection", "features": [{"type": "Feature", "id": "Z-2",
            "properties": {"name": long, "kind": "pawnshop", "radius_m": 50},
            "geometry": {"type": "Point", "coordinates": [114.0, 22.5]}}]});
        let fc = serde_json::to_vec(&fc).unwrap();
        let e = zones_from_feature_collection(&fc).unwrap_err().to_string();
        assert!(e.contains("at most 256 characters"), "{e}");
    }
}
