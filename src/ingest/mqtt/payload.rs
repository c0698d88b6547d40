//! Payloads to events: JSON, OwnTracks and raw device frames, one MQTT message at a time.

use super::routing::{route, Format, Route};
use crate::event::{DeviceId, Event};
use crate::protocol::json::{self, PayloadError};
use crate::protocol::{Output, SessionConfig, WireProtocol};

/// What happened to one message, for `lienwatch_mqtt_messages_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Events committed (and the message acked).
    Stored,
    /// Valid but nothing to store (an OwnTracks `lwt`, an empty array, a frame without a fix).
    Ignored,
    /// Rejected by the decoder; acked so the broker does not redeliver it forever.
    Malformed,
    /// Every device in it refused by `[ingest] accept_unknown = false`.
    Refused,
    /// On a topic none of the configured subscriptions match (a subscription left in the
    /// persistent session by an older configuration).
    Unrouted,
}

impl Outcome {
    /// Every outcome, each at the index of its discriminant (`outcome as usize`).
    pub const ALL: [Outcome; 5] = [
        Outcome::Stored,
        Outcome::Ignored,
        Outcome::Malformed,
        Outcome::Refused,
        Outcome::Unrouted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Ignored => "ignored",
            Outcome::Malformed => "malformed",
            Outcome::Refused => "refused",
            Outcome::Unrouted => "unrouted",
        }
    }
}

/// Decodes one publish into events. Pure apart from rate-limited logging and counters; the
/// benchmark and tests call it directly.
pub fn decode_publish(
    routes: &[Route],
    scfg: &SessionConfig,
    topic: &[u8],
    payload: &[u8],
) -> (Vec<Event>, Outcome) {
    let Ok(topic) = std::str::from_utf8(topic) else {
        malformed("<not utf-8>", &"topic is not UTF-8");
        return (Vec::new(), Outcome::Malformed);
    };
    let Some((route, device)) = route(routes, topic) else {
        return (Vec::new(), Outcome::Unrouted);
    };
    let decoded = match route.format {
        Format::Json => json::decode_json(payload, device).map_err(DecodeError::from),
        Format::OwnTracks => {
            json::decode_owntracks(payload, topic, device).map_err(DecodeError::from)
        }
        Format::Raw(w) => decode_raw(w, scfg, topic, device, payload),
    };
    let mut events = match decoded {
        Ok(d) => {
            if !d.unknown_alarms.is_empty() {
                metrics::counter!("lienwatch_mqtt_unknown_alarms_total")
                    .increment(d.unknown_alarms.len() as u64);
                if crate::ingest::log_budget() {
                    tracing::warn!(topic, names = ?d.unknown_alarms, "unknown alarm names ignored");
                }
            }
            d.events
        }
        Err(e) => {
            malformed(topic, &e);
            return (Vec::new(), Outcome::Malformed);
        }
    };
    if events.is_empty() {
        return (events, Outcome::Ignored);
    }
    events.retain(|e| (scfg.admit)(&e.device_id));
    if events.is_empty() {
        metrics::counter!("lienwatch_devices_refused_total", "protocol" => "mqtt").increment(1);
        return (events, Outcome::Refused);
    }
    (events, Outcome::Stored)
}

fn malformed(topic: &str, e: &dyn std::fmt::Display) {
    if crate::ingest::log_budget() {
        tracing::warn!(topic, error = %e, "malformed MQTT payload acknowledged and dropped");
    }
}

/// Raw frames: a fresh sessionless decoder per message, the device id from the topic for frames
/// that do not carry one. Replies have nowhere to go and are dropped.
fn decode_raw(
    w: WireProtocol,
    scfg: &SessionConfig,
    topic: &str,
    device: Option<&str>,
    payload: &[u8],
) -> Result<json::Decoded, DecodeError> {
    let default_device_id = match device {
        Some(d) if DeviceId::is_valid(d) => Some(DeviceId::new(d)),
        Some(d) => return Err(DecodeError::BadDeviceId(d.chars().take(40).collect())),
        None => None,
    };
    // protocols.md §E.2: an FMx may publish its AVL data bare (codec id first), without the
    // TCP preamble, length and CRC the session reads.
    if let (WireProtocol::Teltonika, Some(dev)) = (w, &default_device_id) {
        if payload.first_chunk::<4>() != Some(&[0, 0, 0, 0]) {
            let avl = crate::protocol::teltonika::decode_avl_payload(payload, scfg.max_frame)
                .map_err(|e| DecodeError::Avl(e.to_string()))?;
            // One packet per message, no session across them: the packet's own newest record
            // is the live one.
            let mut seen = crate::protocol::teltonika::RecordWatermark::default();
            let events: Vec<Event> = crate::protocol::teltonika::packet_events(
                dev,
                &avl,
                scfg.utc_offset_s,
                (scfg.clock)(),
                &mut seen,
            );
            metrics::counter!("lienwatch_frames_decoded_total", "protocol" => w.name())
                .increment(events.len() as u64);
            return Ok(json::Decoded {
                events,
                unknown_alarms: Vec::new(),
            });
        }
    }
    let cfg = SessionConfig {
        default_device_id: default_device_id.clone(),
        sessionless: true,
        ..scfg.clone()
    };
    let mut session = w.session(cfg);
    let (outs, err) = crate::protocol::decode_all(session.as_mut(), payload);
    let mut events = Vec::new();
    let mut rejected = 0usize;
    for o in outs {
        match o {
            Output::Event(e) if DeviceId::is_valid(e.device_id.as_str()) => events.push(e),
            Output::Event(_) => rejected += 1,
            Output::Reply(_) | Output::Message(_) => {}
            Output::Rejected(r) => {
                rejected += 1;
                crate::ingest::rejected(w.name(), r, topic);
            }
        }
    }
    // The topic names the device (and a broker ACL may allow a device its own topic only): a
    // frame for another device is refused whole, as a JSON payload naming another one is.
    if let Some(t) = &default_device_id {
        if let Some(e) = events.iter().find(|e| &e.device_id != t) {
            return Err(DecodeError::Payload(PayloadError::DeviceMismatch {
                payload: e.device_id.to_string(),
                topic: t.to_string(),
            }));
        }
    }
    metrics::counter!("lienwatch_frames_decoded_total", "protocol" => w.name())
        .increment(events.len() as u64);
    if events.is_empty() {
        if let Some(e) = err {
            return Err(DecodeError::Session(e));
        }
        if rejected > 0 {
            return Err(DecodeError::NothingDecoded);
        }
    }
    Ok(json::Decoded {
        events,
        unknown_alarms: Vec::new(),
    })
}

#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("device id {0:?} in the topic is not a string of 1 to 32 decimal digits")]
    BadDeviceId(String),
    #[error("{0}")]
    Session(crate::protocol::SessionError),
    #[error("no frame in the payload decoded to an event with a device id")]
    NothingDecoded,
    #[error("bare Teltonika AVL data: {0}")]
    Avl(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_outcome_sits_at_its_own_index() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{}", o.as_str());
        }
    }

    /// protocols.md §E.2: Teltonika AVL data over MQTT with or without its TCP envelope.
    #[test]
    fn teltonika_avl_with_or_without_its_tcp_envelope() {
        use crate::protocol::{parse_hex, WireProtocol};
        let routes = vec![Route::new(
            "fmb/{device_id}/data",
            Format::Raw(WireProtocol::Teltonika),
        )];
        let scfg = SessionConfig::default();
        // protocols.md C.5 #3: Codec 8, one record, 2024-05-20 10:30:15 UTC.
        let whole = parse_hex("00 00 00 00 00 00 00 34 08 01 00 00 01 8F 95 8D 46 D8 01 43 FB D9 5A 0D 6F CD B0 00 23 00 5A 09 00 3E FC 07 04 EF 01 F0 01 15 04 FC 01 02 42 00 00 43 0F 6E 01 10 00 BC 61 4E 00 01 00 00 93 00").unwrap();
        let bare = &whole[8..whole.len() - 4];
        for payload in [&whole[..], bare] {
            let (ev, o) = decode_publish(&routes, &scfg, b"fmb/356307042441013/data", payload);
            assert_eq!((ev.len(), o), (1, Outcome::Stored));
            assert_eq!(ev[0].device_id.as_str(), "356307042441013");
            let p = ev[0].position().expect("a fix");
            assert_eq!(p.time.to_string(), "2024-05-20T10:30:15Z");
        }
        let (_, o) = decode_publish(&routes, &scfg, b"fmb/356307042441013/data", &bare[..10]);
        assert_eq!(o, Outcome::Malformed);
    }

    /// A frame naming another device than its topic is refused whole: a broker ACL that lets a
    /// device publish to its own topic only is then the gate CONTRACT.md says it is.
    #[test]
    fn a_raw_frame_for_another_device_than_its_topic_is_refused() {
        use crate::protocol::{parse_hex, WireProtocol};
        let routes = vec![Route::new(
            "gt/{device_id}",
            Format::Raw(WireProtocol::Gt06),
        )];
        let scfg = SessionConfig::default();
        // protocols.md A.6: a GT06 login of IMEI 123456789012345.
        let login = parse_hex("78 78 0D 01 01 23 45 67 89 01 23 45 00 01 8C DD 0D 0A").unwrap();
        let (ev, o) = decode_publish(&routes, &scfg, b"gt/123456789012345", &login);
        assert_eq!((ev.len(), o), (1, Outcome::Stored));
        let (ev, o) = decode_publish(&routes, &scfg, b"gt/999999999999999", &login);
        assert_eq!((ev.len(), o), (0, Outcome::Malformed));
    }

    #[test]
    fn decode_publish_outcomes() {
        let routes = vec![
            Route::new("t/{device_id}/json", Format::Json),
            Route::new("owntracks/+/+", Format::OwnTracks),
        ];
        let scfg = SessionConfig::default();
        let ok = br#"{"time": "2026-11-22T08:15:30Z", "lat": 1, "lon": 2}"#;
        let (ev, o) = decode_publish(&routes, &scfg, b"t/42/json", ok);
        assert_eq!((ev.len(), o), (1, Outcome::Stored));
        assert_eq!(ev[0].device_id.as_str(), "42");
        let (_, o) = decode_publish(&routes, &scfg, b"t/4x/json", ok);
        assert_eq!(o, Outcome::Malformed);
        let (_, o) = decode_publish(&routes, &scfg, b"t/42/json", b"{");
        assert_eq!(o, Outcome::Malformed);
        let (_, o) = decode_publish(&routes, &scfg, b"other/42", ok);
        assert_eq!(o, Outcome::Unrouted);
        let (_, o) = decode_publish(&routes, &scfg, b"owntracks/a/1", br#"{"_type": "lwt"}"#);
        assert_eq!(o, Outcome::Ignored);
        let (_, o) = decode_publish(&routes, &scfg, &[0xff, 0xfe], ok);
        assert_eq!(o, Outcome::Malformed);
        let refuse = SessionConfig {
            admit: Arc::new(|_| false),
            ..SessionConfig::default()
        };
        let (ev, o) = decode_publish(&routes, &refuse, b"t/42/json", ok);
        assert_eq!((ev.len(), o), (0, Outcome::Refused));
    }
}
