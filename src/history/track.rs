//! The track query (CONTRACT.md "Position history"): which fixes, and how they are written out.
//!
//! Rendering streams straight from the stored fixes into the response bytes: a day of a car
//! reporting every 10 s is 8,640 positions, and building a JSON tree for each would cost more
//! than reading them.

use super::HistoryFix;
use crate::engine::EngineError;
use crate::event::{Cell, DeviceId, WifiAp};
use crate::time::Timestamp;
use serde::Serialize;

pub const DEFAULT_LIMIT: usize = 10_000;
pub const MAX_LIMIT: usize = 100_000;
const DEFAULT_SPAN_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackFormat {
    Json,
    GeoJson,
}

/// A validated track request.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackQuery {
    pub device: DeviceId,
    pub from: Timestamp,
    pub to: Timestamp,
    pub limit: usize,
    pub format: TrackFormat,
}

fn time_param(name: &str, v: Option<&str>) -> Result<Option<Timestamp>, EngineError> {
    v.map(|s| {
        Timestamp::parse_rfc3339(s).ok_or_else(|| {
            EngineError::Invalid(format!(
                "{name}: not an RFC 3339 time up to 9999-12-30: {s:?}"
            ))
        })
    })
    .transpose()
}

impl TrackQuery {
    /// From the query's raw parameters; `to` defaults to `now`, `from` to a day before `to`.
    pub fn parse(
        device: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: Option<&str>,
        format: Option<&str>,
        now: Timestamp,
    ) -> Result<TrackQuery, EngineError> {
        if !DeviceId::is_valid(device) {
            return Err(EngineError::Invalid(format!(
                "device id {device:?}: expected decimal digits"
            )));
        }
        let to = time_param("to", to)?.unwrap_or(now);
        let from = time_param("from", from)?.unwrap_or(to.add_millis(-DEFAULT_SPAN_MS));
        if from >= to {
            return Err(EngineError::Invalid("from must be before to".into()));
        }
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "limit: expected a number from 1 to {MAX_LIMIT}, got {s:?}"
                    )))
                }
            },
        };
        let format = match format {
            None | Some("json") => TrackFormat::Json,
            Some("geojson") => TrackFormat::GeoJson,
            Some(other) => {
                return Err(EngineError::Invalid(format!(
                    "format: expected json or geojson, got {other:?}"
                )))
            }
        };
        Ok(TrackQuery {
            device: DeviceId::new(device),
            from,
            to,
            limit,
            format,
        })
    }
}

/// The fixes a query asks for. Fixes past the retention are left out even while their block
/// waits for the next prune, so the track never shows what the retention promises is gone.
pub fn read(
    history: &super::History,
    q: &TrackQuery,
    retention: std::time::Duration,
    now: Timestamp,
) -> Result<Vec<HistoryFix>, crate::store::StoreError> {
    let floor = now.sub(retention);
    let from = q.from.max(floor);
    if from >= q.to {
        return Ok(Vec::new());
    }
    history.track(q.device.as_str(), from, q.to, q.limit)
}

/// The fields of a position other than its coordinates, in the order of CONTRACT.md
/// "Positions" (the GeoJSON properties).
#[derive(Serialize)]
struct Props<'a> {
    time: Timestamp,
    valid: bool,
    speed_kmh: f64,
    course: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    satellites: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    altitude_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cell: Option<&'a Cell>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wifi: Option<&'a WifiAp>,
    received_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    suspect: Option<&'static str>,
}

impl<'a> Props<'a> {
    fn of(f: &'a HistoryFix) -> Self {
        let p = &f.pos;
        Props {
            time: p.time,
            valid: p.valid,
            speed_kmh: p.speed_kmh,
            course: p.course,
            satellites: p.satellites,
            altitude_m: p.altitude_m,
            cell: p.cell.as_ref(),
            wifi: p.wifi.as_ref(),
            received_at: p.received_at,
            suspect: f.suspect_future.then_some("future"),
        }
    }
}

/// A position of the JSON track: the API's position object, its coordinates beside the rest.
#[derive(Serialize)]
struct Point<'a> {
    lat: f64,
    lon: f64,
    #[serde(flatten)]
    props: Props<'a>,
}

#[derive(Serialize)]
struct Geometry {
    r#type: &'static str,
    coordinates: [f64; 2],
}

#[derive(Serialize)]
struct Feature<'a> {
    r#type: &'static str,
    geometry: Geometry,
    properties: Props<'a>,
}

struct Positions<'a>(&'a [HistoryFix]);

impl Serialize for Positions<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|f| Point {
            lat: crate::event::round6(f.pos.lat),
            lon: crate::event::round6(f.pos.lon),
            props: Props::of(f),
        }))
    }
}

struct Features<'a>(&'a [HistoryFix]);

impl Serialize for Features<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|f| Feature {
            r#type: "Feature",
            geometry: Geometry {
                r#type: "Point",
                coordinates: [
                    crate::event::round6(f.pos.lon),
                    crate::event::round6(f.pos.lat),
                ],
            },
            properties: Props::of(f),
        }))
    }
}

#[derive(Serialize)]
struct JsonTrack<'a> {
    device_id: &'a DeviceId,
    positions: Positions<'a>,
}

#[derive(Serialize)]
struct GeoJsonTrack<'a> {
    r#type: &'static str,
    features: Features<'a>,
}

/// The response body and its media type.
pub fn render(q: &TrackQuery, fixes: &[HistoryFix]) -> (Vec<u8>, &'static str) {
    let mut out = Vec::with_capacity(64 + fixes.len() * 200);
    let written = match q.format {
        TrackFormat::Json => serde_json::to_writer(
            &mut out,
            &JsonTrack {
                device_id: &q.device,
                positions: Positions(fixes),
            },
        ),
        TrackFormat::GeoJson => serde_json::to_writer(
            &mut out,
            &GeoJsonTrack {
                r#type: "FeatureCollection",
                features: Features(fixes),
            },
        ),
    };
    // Writing plain structs into a Vec cannot fail.
    debug_assert!(written.is_ok());
    let media = match q.format {
        TrackFormat::Json => "application/json",
        TrackFormat::GeoJson => "application/geo+json",
    };
    (out, media)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredPosition;

    const NOW: Timestamp = Timestamp::from_secs(1_764_000_000);

    #[test]
    fn defaults_and_bad_parameters() {
        let q = TrackQuery::parse("12345", None, None, None, None, NOW).unwrap();
        assert_eq!(
            (q.from, q.to, q.limit),
            (NOW.add_millis(-DEFAULT_SPAN_MS), NOW, 10_000)
        );
        let bad = |from, to, limit, format| {
            TrackQuery::parse("12345", from, to, limit, format, NOW)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(Some("yesterday"), None, None, None).contains("from"));
        assert!(bad(None, Some("2026-13-01T00:00:00Z"), None, None).contains("to"));
        assert!(bad(None, Some("9999-12-31T23:59:59Z"), None, None).contains("up to 9999-12-30"));
        assert!(
            TrackQuery::parse("12345", None, Some("9999-12-30T00:00:00Z"), None, None, NOW).is_ok()
        );
        assert!(bad(
            Some("2026-11-02T00:00:00Z"),
            Some("2026-11-01T00:00:00Z"),
            None,
            None
        )
        .contains("before"));
        assert!(bad(None, None, Some("100001"), None).contains("limit"));
        assert!(bad(None, None, Some("0"), None).contains("limit"));
        assert!(bad(None, None, None, Some("kml")).contains("format"));
        assert!(TrackQuery::parse("12a", None, None, None, None, NOW).is_err());
    }

    #[test]
    fn both_formats_carry_the_same_positions() {
        let f = HistoryFix {
            pos: StoredPosition {
                time: NOW,
                lat: 22.5430961,
                lon: 114.0578649,
                valid: true,
                speed_kmh: 0.0,
                course: 0,
                satellites: Some(9),
                altitude_m: None,
                received_at: NOW.add_millis(1204),
                cell: None,
                wifi: None,
            },
            suspect_future: true,
        };
        let mut q = TrackQuery::parse("12345", None, None, None, None, NOW).unwrap();
        let (json, media) = render(&q, std::slice::from_ref(&f));
        assert_eq!(media, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["device_id"], "12345");
        assert_eq!(v["positions"][0]["lat"], 22.543096);
        assert_eq!(v["positions"][0]["suspect"], "future");
        assert_eq!(v["positions"][0], f.to_json());
        q.format = TrackFormat::GeoJson;
        let (geo, media) = render(&q, std::slice::from_ref(&f));
        assert_eq!(media, "application/geo+json");
        let g: serde_json::Value = serde_json::from_slice(&geo).unwrap();
        assert_eq!(g["type"], "FeatureCollection");
        assert_eq!(
            g["features"][0]["geometry"]["coordinates"],
            serde_json::json!([114.057865, 22.543096])
        );
        assert_eq!(g["features"][0]["properties"]["satellites"], 9);
        assert!(g["features"][0]["properties"].get("lat").is_none());
    }
}
