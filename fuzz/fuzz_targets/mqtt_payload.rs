#![no_main]
//! Arbitrary topic and payload bytes through the MQTT payload decoders: JSON, OwnTracks and the
//! full per-message path (topic routing, raw-frame sessions). None may panic; whatever decodes
//! must carry a valid device id.
use libfuzzer_sys::fuzz_target;
use lienwatch::event::DeviceId;
use lienwatch::ingest::mqtt::{decode_publish, Format, Route};
use lienwatch::protocol::json;
use lienwatch::protocol::{SessionConfig, WireProtocol};
use std::sync::OnceLock;

fn routes() -> &'static [Route] {
    static R: OnceLock<Vec<Route>> = OnceLock::new();
    R.get_or_init(|| {
        vec![
            Route::new("t/{device_id}/json", Format::Json),
            Route::new("o/+/+", Format::OwnTracks),
            Route::new("g/{device_id}", Format::Raw(WireProtocol::Gt06)),
            Route::new("j/{device_id}", Format::Raw(WireProtocol::Jt808)),
            Route::new("k/{device_id}", Format::Raw(WireProtocol::Teltonika)),
            Route::new("#", Format::Json),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: topic length; then the topic; the rest is the payload.
    let Some((&n, rest)) = data.split_first() else { return };
    let n = (n as usize).min(rest.len());
    let (topic, payload) = rest.split_at(n);
    let topic_str = String::from_utf8_lossy(topic);
    let level = topic_str.split('/').nth(1);

    for d in [
        json::decode_json(payload, level),
        json::decode_owntracks(payload, &topic_str, level),
        json::decode_owntracks(payload, &topic_str, None),
    ]
    .into_iter()
    .flatten()
    {
        for e in d.events {
            assert!(DeviceId::is_valid(e.device_id.as_str()));
        }
    }
    let (events, _) = decode_publish(routes(), &SessionConfig::default(), topic, payload);
    for e in events {
        assert!(DeviceId::is_valid(e.device_id.as_str()));
    }
});
