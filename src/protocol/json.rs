//! Placeholder: MQTT JSON and OwnTracks payloads (issue: MQTT ingestion).
