//! What the engine's unit tests share: an engine on a temporary store, a vehicle put through
//! its command, and a live fix.

use super::command::Command;
use super::vehicles::PutVehicle;
use super::{Engine, EngineConfig};
use crate::event::{AlarmReport, DeviceId, Event, EventKind, Fix, Position, Protocol};
use crate::store::Store;
use crate::time::Timestamp;
use std::sync::Arc;

/// An engine at `t0` on `store`, with the default config and no history retention.
pub(crate) fn engine_at(store: Store, t0: Timestamp) -> Engine {
    let outbox = store.open_outbox(&[], Arc::new(move || t0)).unwrap();
    let cfg = EngineConfig {
        history_retention: None,
        ..EngineConfig::from_config(&Default::default(), Vec::new())
    };
    Engine::open(store, outbox, cfg, t0).unwrap()
}

/// [`engine_at`] on a store a test has just dropped its engine on (`store::reopen`).
pub(crate) fn reopen_at(store: &Store, t: Timestamp) -> Engine {
    crate::store::reopen(|| Ok::<_, std::convert::Infallible>(engine_at(store.clone(), t)))
}

/// An engine at `t0` on `store` that keeps history for `retention`.
pub(crate) fn engine_with_history(
    store: Store,
    t0: Timestamp,
    retention: std::time::Duration,
) -> Engine {
    let outbox = store.open_outbox(&[], Arc::new(move || t0)).unwrap();
    let cfg = EngineConfig {
        history_retention: Some(retention),
        ..EngineConfig::from_config(&Default::default(), Vec::new())
    };
    Engine::open(store, outbox, cfg, t0).unwrap()
}

/// `PUT /v1/vehicles/{id}` with `body`.
pub(crate) fn put_vehicle(e: &mut Engine, id: &str, body: serde_json::Value, now: Timestamp) {
    PutVehicle::from_json(id, body.to_string().as_bytes())
        .and_then(|c| c.apply(e, now))
        .unwrap();
}

/// A valid live GT06 fix of `device` at `t`.
pub(crate) fn live_fix(device: &str, t: Timestamp, lat: f64, lon: f64) -> Event {
    Event {
        device_id: DeviceId::new(device),
        protocol: Protocol::Gt06,
        kind: EventKind::Position(Fix {
            position: Position {
                time: t,
                lat,
                lon,
                valid: true,
                satellites: Some(9),
                ..Default::default()
            },
            alarms: AlarmReport::NONE,
            buffered: false,
            props: Default::default(),
        }),
    }
}

/// [`live_fix`] sent from the device's memory (a backlog uploaded after a silence).
pub(crate) fn buffered_fix(device: &str, t: Timestamp, lat: f64, lon: f64) -> Event {
    let mut ev = live_fix(device, t, lat, lon);
    if let EventKind::Position(f) = &mut ev.kind {
        f.buffered = true;
    }
    ev
}

/// A GT06 login of `device`.
pub(crate) fn login(device: &str) -> Event {
    Event {
        device_id: DeviceId::new(device),
        protocol: Protocol::Gt06,
        kind: EventKind::Login,
    }
}

/// An engine at `t0` on `store` with vehicle `V-1` on an overdue loan and one wired device,
/// `111` (the default 6 h silence threshold).
pub(crate) fn overdue_car_at(store: Store, t0: Timestamp) -> Engine {
    let mut e = engine_at(store, t0);
    put_vehicle(
        &mut e,
        "V-1",
        serde_json::json!({"loan": {"id": "L", "status": "overdue"},
            "devices": [{"id": "111", "kind": "wired"}]}),
        t0,
    );
    e
}

/// The alerts of `kind` raised since the last call.
pub(crate) fn take_count(e: &mut Engine, kind: crate::alert::AlertType) -> usize {
    e.take_alerts().iter().filter(|a| a.kind == kind).count()
}
