//! MQTT JSON payloads: lienwatch's canonical position message and OwnTracks `location`.
//!
//! Pure functions from a payload (and what the topic says about the device) to normalised
//! events; the MQTT source (`crate::ingest::mqtt`) owns the broker, acks and topics.
//!
//! Choices that are part of the contract of these decoders:
//! - A payload is accepted or rejected whole: one bad element of a JSON array rejects the message
//!   (the error names the index), so a message is never half-stored.
//! - Unknown keys are ignored (producers add fields); unknown alarm names are ignored too and
//!   reported in [`Decoded::unknown_alarms`], so that a new alarm type upstream never costs the
//!   position it came with, while the caller can still count and log it.
//! - When both the topic and the payload name the device they must agree: a mismatch is more
//!   likely a misrouted or spoofed message than a device with two names.
//! - Coordinates must be finite and in range, times must be real instants: garbage is an error,
//!   never a fix at null island or in 1970 (an OwnTracks `tst` of 0 included).

use crate::event::Timestamp;
use crate::event::{AlarmReport, Alarms, DeviceId, Event, EventKind, Fix, Position, Protocol};
use serde::Deserialize;

/// OwnTracks reports without a fix flag; a location coarser than this (cell or Wi-Fi
/// positioning) is stored but marked not valid, so geofence rules do not act on it.
pub const OWNTRACKS_MAX_VALID_ACCURACY_M: f64 = 500.0;

/// Fix times a payload may carry, in Unix seconds: the years 2000 to 3000. A device clock at
/// the epoch (or garbage) is not a fix time.
const FIX_SECS: std::ops::RangeInclusive<i64> = 946_684_800..=32_503_680_000;

/// Why a payload was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("not valid JSON for this format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("expected a JSON object or an array of objects")]
    NotAnObject,
    #[error("no device id: the payload has none and the topic does not carry one")]
    NoDeviceId,
    #[error("device id {0:?} is not a string of 1 to 32 decimal digits")]
    BadDeviceId(String),
    #[error("device id {payload:?} in the payload differs from {topic:?} in the topic")]
    DeviceMismatch { payload: String, topic: String },
    #[error("time {0:?} is not an RFC 3339 time")]
    BadTime(String),
    #[error("{field} = {value} is out of range")]
    OutOfRange { field: &'static str, value: f64 },
    #[error("element {index}: {source}")]
    Element {
        index: usize,
        #[source]
        source: Box<PayloadError>,
    },
}

/// What a payload decoded to.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub events: Vec<Event>,
    /// Alarm names that `Alarms::from_name` does not know (ignored, reported for metrics).
    pub unknown_alarms: Vec<String>,
}

/// A device id as producers send it: a string, or (leniently) a non-negative integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Str(String),
    Num(u64),
}

impl IdValue {
    fn into_string(self) -> String {
        match self {
            IdValue::Str(s) => s,
            IdValue::Num(n) => n.to_string(),
        }
    }
}

/// The canonical message (CONTRACT.md "MQTT payloads"; extras from protocols.md E.4).
#[derive(Deserialize)]
struct Canonical {
    #[serde(default)]
    device_id: Option<IdValue>,
    time: String,
    lat: f64,
    lon: f64,
    #[serde(default)]
    valid: Option<bool>,
    #[serde(default)]
    speed_kmh: Option<f64>,
    #[serde(default)]
    course: Option<f64>,
    #[serde(default)]
    alarms: Option<Vec<String>>,
    #[serde(default)]
    satellites: Option<u8>,
    #[serde(default, alias = "altitude_m")]
    alt_m: Option<f64>,
    #[serde(default)]
    buffered: Option<bool>,
}

/// Decodes `format = "json"`: one canonical object or an array of them.
///
/// `topic_device` is the `{device_id}` level of the topic, if the subscription has one. `valid`
/// defaults to true (a producer that sends coordinates without saying otherwise has a fix).
pub fn decode_json(payload: &[u8], topic_device: Option<&str>) -> Result<Decoded, PayloadError> {
    let topic_device = topic_device.map(checked_id).transpose()?;
    let value: serde_json::Value = serde_json::from_slice(payload)?;
    let mut out = Decoded::default();
    match value {
        serde_json::Value::Object(_) => {
            let c: Canonical = serde_json::from_value(value)?;
            canonical(c, topic_device.as_ref(), &mut out)?;
        }
        serde_json::Value::Array(items) => {
            out.events.reserve(items.len());
            for (index, item) in items.into_iter().enumerate() {
                let at = |e: PayloadError| PayloadError::Element {
                    index,
                    source: Box::new(e),
                };
                if !item.is_object() {
                    return Err(at(PayloadError::NotAnObject));
                }
                let c: Canonical = serde_json::from_value(item).map_err(|e| at(e.into()))?;
                canonical(c, topic_device.as_ref(), &mut out).map_err(at)?;
            }
        }
        _ => return Err(PayloadError::NotAnObject),
    }
    Ok(out)
}

fn canonical(
    c: Canonical,
    topic_device: Option<&DeviceId>,
    out: &mut Decoded,
) -> Result<(), PayloadError> {
    let device_id = match (c.device_id.map(IdValue::into_string), topic_device) {
        (Some(p), Some(t)) if p != t.as_str() => {
            return Err(PayloadError::DeviceMismatch {
                payload: p,
                topic: t.to_string(),
            })
        }
        (_, Some(t)) => t.clone(),
        (Some(p), None) => checked_id(&p)?,
        (None, None) => return Err(PayloadError::NoDeviceId),
    };
    let time =
        Timestamp::parse_rfc3339(&c.time).ok_or_else(|| PayloadError::BadTime(c.time.clone()))?;
    if !FIX_SECS.contains(&time.secs()) {
        return Err(PayloadError::BadTime(c.time));
    }
    // Edge events (protocols.md E.4): each listed alarm happened, and alerts; the next one listed
    // alerts again, and nothing is said about when a condition ends.
    let mut listed = Alarms::NONE;
    for name in c.alarms.unwrap_or_default() {
        match Alarms::from_name(&name) {
            Some(a) => listed.insert(a),
            None => out.unknown_alarms.push(name),
        }
    }
    let alarms = AlarmReport::occurred(listed);
    let position = Position {
        time,
        lat: in_range("lat", c.lat, -90.0, 90.0)?,
        lon: in_range("lon", c.lon, -180.0, 180.0)?,
        valid: c.valid.unwrap_or(true),
        speed_kmh: in_range("speed_kmh", c.speed_kmh.unwrap_or(0.0), 0.0, 2000.0)?,
        course: course(c.course)?,
        satellites: c.satellites,
        altitude_m: c
            .alt_m
            .map(|a| in_range("alt_m", a, -1000.0, 100_000.0))
            .transpose()?,
        cell: None,
        wifi: None,
    };
    out.events.push(Event {
        device_id,
        protocol: Protocol::Json,
        kind: EventKind::Position(Fix {
            position,
            alarms,
            buffered: c.buffered.unwrap_or(false),
            props: Default::default(),
        }),
    });
    Ok(())
}

/// The part of an OwnTracks message lienwatch reads (protocols.md E.1).
#[derive(Deserialize)]
struct OwnTracks {
    #[serde(rename = "_type")]
    kind: String,
    #[serde(default)]
    tst: Option<i64>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    vel: Option<f64>,
    #[serde(default)]
    cog: Option<f64>,
    #[serde(default)]
    acc: Option<f64>,
    #[serde(default)]
    alt: Option<f64>,
}

/// The device level of an OwnTracks topic: `<base>/<user>/<device>[/...]`, the third level.
pub fn owntracks_device(topic: &str) -> Option<&str> {
    topic.split('/').nth(2)
}

/// Decodes `format = "owntracks"`. Only `_type: location` produces a fix; every other `_type`
/// (`lwt`, `transition`, `waypoint`, ...) decodes to nothing, which is not an error.
///
/// The device id comes from `topic_device` (the subscription's `{device_id}` level) when given,
/// else from the third level of `topic` (`owntracks/{user}/{device}`); either way it must be
/// decimal digits, as every lienwatch device id is.
pub fn decode_owntracks(
    payload: &[u8],
    topic: &str,
    topic_device: Option<&str>,
) -> Result<Decoded, PayloadError> {
    let value: serde_json::Value = serde_json::from_slice(payload)?;
    if !value.is_object() {
        return Err(PayloadError::NotAnObject);
    }
    let m: OwnTracks = serde_json::from_value(value)?;
    if m.kind != "location" {
        return Ok(Decoded::default());
    }
    let device_id = checked_id(
        topic_device
            .or_else(|| owntracks_device(topic))
            .ok_or(PayloadError::NoDeviceId)?,
    )?;
    let missing = |f: &str| {
        PayloadError::Json(<serde_json::Error as serde::de::Error>::custom(
            format_args!("missing field `{f}`"),
        ))
    };
    let tst = m.tst.ok_or_else(|| missing("tst"))?;
    // A phone clock at 0 (or a garbage value) is not a fix time.
    if !FIX_SECS.contains(&tst) {
        return Err(PayloadError::OutOfRange {
            field: "tst",
            value: tst as f64,
        });
    }
    let acc = m
        .acc
        .map(|a| in_range("acc", a, 0.0, f64::MAX))
        .transpose()?;
    let position = Position {
        time: Timestamp::from_secs(tst),
        lat: in_range("lat", m.lat.ok_or_else(|| missing("lat"))?, -90.0, 90.0)?,
        lon: in_range("lon", m.lon.ok_or_else(|| missing("lon"))?, -180.0, 180.0)?,
        valid: acc.is_none_or(|a| a <= OWNTRACKS_MAX_VALID_ACCURACY_M),
        speed_kmh: in_range("vel", m.vel.unwrap_or(0.0), 0.0, 2000.0)?,
        course: course(m.cog)?,
        satellites: None,
        altitude_m: m
            .alt
            .map(|a| in_range("alt", a, -1000.0, 100_000.0))
            .transpose()?,
        cell: None,
        wifi: None,
    };
    Ok(Decoded {
        events: vec![Event {
            device_id,
            protocol: Protocol::Owntracks,
            kind: EventKind::Position(Fix::live(position)),
        }],
        unknown_alarms: Vec::new(),
    })
}

fn checked_id(s: &str) -> Result<DeviceId, PayloadError> {
    if DeviceId::is_valid(s) {
        Ok(DeviceId::new(s))
    } else {
        Err(PayloadError::BadDeviceId(s.chars().take(40).collect()))
    }
}

fn in_range(field: &'static str, v: f64, lo: f64, hi: f64) -> Result<f64, PayloadError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(PayloadError::OutOfRange { field, value: v })
    }
}

/// Degrees 0..=360 (360 folds to 0), rounded to whole degrees as the wire protocols carry them.
fn course(c: Option<f64>) -> Result<u16, PayloadError> {
    let c = in_range("course", c.unwrap_or(0.0), 0.0, 360.0)?;
    Ok((c.round() as u16) % 360)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(e: &Event) -> &Fix {
        match &e.kind {
            EventKind::Position(f) => f,
            k => panic!("not a position: {k:?}"),
        }
    }

    #[test]
    fn canonical_object_decodes_every_field() {
        let p = br#"{"device_id": "123456789012345", "time": "2026-11-22T08:15:30Z",
            "lat": 22.543096, "lon": 114.057865, "valid": true, "speed_kmh": 12.5,
            "course": 271, "alarms": ["power_cut", "tamper"], "satellites": 9, "hdop": 0.9}"#;
        let d = decode_json(p, None).unwrap();
        assert_eq!(d.events.len(), 1);
        let e = &d.events[0];
        assert_eq!(e.device_id.as_str(), "123456789012345");
        assert_eq!(e.protocol, Protocol::Json);
        let f = fix(e);
        assert_eq!(f.position.time.to_string(), "2026-11-22T08:15:30Z");
        assert_eq!(f.position.lat, 22.543096);
        assert_eq!(f.position.lon, 114.057865);
        assert!(f.position.valid);
        assert_eq!(f.position.speed_kmh, 12.5);
        assert_eq!(f.position.course, 271);
        assert_eq!(f.position.satellites, Some(9));
        assert!(f.alarms.active.contains(Alarms::POWER_CUT));
        assert!(f.alarms.active.contains(Alarms::TAMPER));
        assert!(d.unknown_alarms.is_empty());
    }

    #[test]
    fn canonical_times_before_2000_are_refused() {
        let p = br#"{"device_id": "1", "time": "1970-01-01T00:00:00Z", "lat": 1, "lon": 2}"#;
        assert!(matches!(
            decode_json(p, None),
            Err(PayloadError::BadTime(_))
        ));
        let p = br#"{"device_id": "1", "time": "2000-01-01T00:00:00Z", "lat": 1, "lon": 2}"#;
        assert!(decode_json(p, None).is_ok());
    }

    #[test]
    fn canonical_defaults_and_topic_device() {
        let p = br#"{"time": "2026-11-22T16:15:30+08:00", "lat": -33.5, "lon": -70.25}"#;
        let d = decode_json(p, Some("13912345678")).unwrap();
        let e = &d.events[0];
        assert_eq!(e.device_id.as_str(), "13912345678");
        let f = fix(e);
        assert_eq!(f.position.time.to_string(), "2026-11-22T08:15:30Z");
        assert!(f.position.valid);
        assert_eq!(f.position.speed_kmh, 0.0);
        assert_eq!(f.position.course, 0);
        assert!(f.alarms.active.is_empty());
        assert_eq!(
            f.alarms,
            AlarmReport::NONE,
            "no alarm: nothing said about any"
        );
        // The payload may repeat the topic's id.
        let p =
            br#"{"device_id": 13912345678, "time": "2026-11-22T08:15:30Z", "lat": 1, "lon": 2}"#;
        assert_eq!(decode_json(p, Some("13912345678")).unwrap().events.len(), 1);
    }

    #[test]
    fn canonical_array_is_all_or_nothing() {
        let p = br#"[{"device_id": "1", "time": "2026-11-22T08:15:30Z", "lat": 1, "lon": 2},
                     {"device_id": "2", "time": "2026-11-22T08:15:31Z", "lat": 3, "lon": 4}]"#;
        let d = decode_json(p, None).unwrap();
        let ids: Vec<_> = d.events.iter().map(|e| e.device_id.to_string()).collect();
        assert_eq!(ids, ["1", "2"]);
        let p = br#"[{"device_id": "1", "time": "2026-11-22T08:15:30Z", "lat": 1, "lon": 2},
                     {"device_id": "2", "time": "yesterday", "lat": 3, "lon": 4}]"#;
        let err = decode_json(p, None).unwrap_err();
        assert!(
            matches!(&err, PayloadError::Element { index: 1, source } if matches!(**source, PayloadError::BadTime(_))),
            "{err}"
        );
        assert!(decode_json(b"[]", None).unwrap().events.is_empty());
        assert!(matches!(
            decode_json(b"[1]", None),
            Err(PayloadError::Element { index: 0, .. })
        ));
    }

    #[test]
    fn canonical_rejects_malformed_payloads() {
        let ok_time = r#""time": "2026-11-22T08:15:30Z""#;
        let cases: Vec<(String, Option<&str>)> = vec![
            ("not json".into(), None),
            ("42".into(), None),
            (format!(r#"{{{ok_time}, "lat": 1, "lon": 2}}"#), None),
            (
                format!(r#"{{"device_id": "12a", {ok_time}, "lat": 1, "lon": 2}}"#),
                None,
            ),
            (
                format!(r#"{{"device_id": "1", {ok_time}, "lat": 91, "lon": 2}}"#),
                None,
            ),
            (
                format!(r#"{{"device_id": "1", {ok_time}, "lat": 1, "lon": -180.5}}"#),
                None,
            ),
            (
                format!(r#"{{"device_id": "1", {ok_time}, "lon": 2}}"#),
                None,
            ),
            (r#"{"device_id": "1", "lat": 1, "lon": 2}"#.into(), None),
            (
                format!(r#"{{"device_id": "1", {ok_time}, "lat": 1, "lon": 2, "course": 400}}"#),
                None,
            ),
            (
                format!(r#"{{"device_id": "1", {ok_time}, "lat": 1, "lon": 2, "speed_kmh": -1}}"#),
                None,
            ),
            (
                format!(r#"{{"device_id": "1", {ok_time}, "lat": "1", "lon": 2}}"#),
                None,
            ),
            (
                format!(r#"{{"device_id": "2", {ok_time}, "lat": 1, "lon": 2}}"#),
                Some("1"),
            ),
            (format!(r#"{{{ok_time}, "lat": 1, "lon": 2}}"#), Some("abc")),
        ];
        for (p, topic) in cases {
            assert!(
                decode_json(p.as_bytes(), topic).is_err(),
                "accepted {p} (topic {topic:?})"
            );
        }
        let err = decode_json(
            format!(r#"{{"device_id": "2", {ok_time}, "lat": 1, "lon": 2}}"#).as_bytes(),
            Some("1"),
        )
        .unwrap_err();
        assert!(matches!(err, PayloadError::DeviceMismatch { .. }), "{err}");
    }

    #[test]
    fn unknown_alarm_names_are_reported_not_fatal() {
        let p = br#"{"device_id": "7", "time": "2026-11-22T08:15:30Z", "lat": 1, "lon": 2,
            "alarms": ["tow", "spaceship"]}"#;
        let d = decode_json(p, None).unwrap();
        assert_eq!(fix(&d.events[0]).alarms.active, Alarms::TOW);
        assert_eq!(d.unknown_alarms, ["spaceship"]);
    }

    #[test]
    fn owntracks_location_from_the_topic() {
        let p = br#"{"_type": "location", "tst": 1716201015, "lat": 22.543096, "lon": 114.057865,
            "vel": 60, "cog": 90, "acc": 12, "alt": 30, "batt": 80, "tid": "ph"}"#;
        let d = decode_owntracks(p, "owntracks/alice/868120145233604", None).unwrap();
        let e = &d.events[0];
        assert_eq!(e.device_id.as_str(), "868120145233604");
        assert_eq!(e.protocol, Protocol::Owntracks);
        let f = fix(e);
        assert_eq!(f.position.time.to_string(), "2024-05-20T10:30:15Z");
        assert_eq!(f.position.speed_kmh, 60.0);
        assert_eq!(f.position.course, 90);
        assert_eq!(f.position.altitude_m, Some(30.0));
        assert!(f.position.valid);
        // A coarse (network) location is kept but not valid.
        let p =
            br#"{"_type": "location", "tst": 1716201015, "lat": 22.5, "lon": 114.0, "acc": 2500}"#;
        let d = decode_owntracks(p, "owntracks/alice/42", None).unwrap();
        assert!(!fix(&d.events[0]).position.valid);
        // The placeholder level wins over the OwnTracks convention.
        let d = decode_owntracks(p, "phones/42/x/y", Some("42")).unwrap();
        assert_eq!(d.events[0].device_id.as_str(), "42");
    }

    #[test]
    fn owntracks_other_types_are_ignored_and_bad_ones_rejected() {
        for t in ["lwt", "transition", "waypoint", "card"] {
            let p = format!(r#"{{"_type": "{t}", "tst": 1716201015}}"#);
            let d = decode_owntracks(p.as_bytes(), "owntracks/alice/phone", None).unwrap();
            assert!(d.events.is_empty(), "{t}");
        }
        let loc = br#"{"_type": "location", "tst": 1716201015, "lat": 1, "lon": 2}"#;
        assert!(matches!(
            decode_owntracks(loc, "owntracks/alice/phone", None),
            Err(PayloadError::BadDeviceId(_))
        ));
        assert!(matches!(
            decode_owntracks(loc, "owntracks/alice", None),
            Err(PayloadError::NoDeviceId)
        ));
        for bad in [
            r#"{"_type": "location", "lat": 1, "lon": 2}"#,
            r#"{"_type": "location", "tst": 0, "lat": 1, "lon": 2}"#,
            r#"{"_type": "location", "tst": 1716201015, "lon": 2}"#,
            r#"{"_type": "location", "tst": 1716201015, "lat": 1, "lon": 2, "acc": -5}"#,
            r#"{"tst": 1716201015, "lat": 1, "lon": 2}"#,
            r#"["_type"]"#,
        ] {
            assert!(
                decode_owntracks(bad.as_bytes(), "owntracks/a/1", None).is_err(),
                "{bad}"
            );
        }
    }
}
