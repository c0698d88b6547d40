//! Property tests of what a device's rule state leaves unwritten: the engine writes a state
//! only when it changed beyond `last_seen` and the geofence's newest fix time
//! (`DeviceRuleState::differs_beyond_progress`), and takes those two from the device's record at
//! start (`catch_up`). On random streams of fixes (inside and outside the fence, valid or not,
//! live or buffered, out of order), heartbeats, logins and silences, a crash after any step
//! restores exactly the state in memory, except that the geofence's time may be raised to a
//! buffered fix's, never lowered.

use lienwatch::event::{AlarmReport, DeviceId, Event, EventKind, Fix, Position, Protocol};
use lienwatch::registry::Vehicle;
use lienwatch::rules::{DeviceRuleState, RuleConfig, Rules, VehicleContext};
use lienwatch::time::Timestamp;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Fix {
        after_ms: i64,
        age_ms: i64,
        inside: bool,
        valid: bool,
        buffered: bool,
    },
    Heartbeat {
        after_ms: i64,
    },
    Login {
        after_ms: i64,
    },
    /// The device's silence deadline fires (the clock runs past it).
    Silence,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1i64..600_000, 0i64..3_600_000, any::<bool>(), prop::bool::weighted(0.85), prop::bool::weighted(0.2))
            .prop_map(|(after_ms, age_ms, inside, valid, buffered)| Step::Fix { after_ms, age_ms, inside, valid, buffered }),
        2 => (1i64..600_000).prop_map(|after_ms| Step::Heartbeat { after_ms }),
        1 => (1i64..600_000).prop_map(|after_ms| Step::Login { after_ms }),
        1 => Just(Step::Silence),
    ]
}

/// What the device's record keeps of the same stream: its last message of any kind, and the
/// fix time of its newest usable fix.
#[derive(Default)]
struct Record {
    last_seen: Option<Timestamp>,
    newest_fix: Option<Timestamp>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_crash_after_any_step_restores_the_state_in_memory(steps in prop::collection::vec(step(), 1..120)) {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let vehicle = Vehicle::from_json(
            "V-1",
            br#"{"loan": {"id": "L", "status": "overdue"},
                 "devices": [{"id": "111", "kind": "wired"}],
                 "geofence": {"type": "Circle", "center": [114.0, 22.5], "radius_m": 1000}}"#,
        )
        .expect("vehicle");
        let id = DeviceId::new("111");
        let rules = Rules::new(RuleConfig::default(), t0);
        let ctx = || VehicleContext::new(&vehicle, &id);
        let (mut memory, mut stored, mut record) =
            (DeviceRuleState::default(), DeviceRuleState::default(), Record::default());
        let mut now = t0;
        let mut any_buffered = false;
        for s in &steps {
            let kind = match *s {
                Step::Fix { after_ms, age_ms, inside, valid, buffered } => {
                    now = now.add_millis(after_ms);
                    let (lat, lon) = if inside { (22.5, 114.0) } else { (22.6, 114.1) };
                    let position = Position {
                        time: now.add_millis(-age_ms),
                        lat,
                        lon,
                        valid,
                        satellites: Some(9),
                        ..Default::default()
                    };
                    if position.is_usable() {
                        record.newest_fix = record.newest_fix.max(Some(position.time));
                        any_buffered |= buffered;
                    }
                    Some(EventKind::Position(Fix {
                        position,
                        alarms: AlarmReport::NONE,
                        buffered,
                        props: Default::default(),
                    }))
                }
                Step::Heartbeat { after_ms } => {
                    now = now.add_millis(after_ms);
                    Some(EventKind::Heartbeat { alarms: AlarmReport::NONE })
                }
                Step::Login { after_ms } => {
                    now = now.add_millis(after_ms);
                    Some(EventKind::Login)
                }
                Step::Silence => None,
            };
            let changed = match kind {
                Some(kind) => {
                    record.last_seen = record.last_seen.max(Some(now));
                    let ev = Event { device_id: id.clone(), protocol: Protocol::Gt06, kind };
                    rules.on_event(ctx(), &mut memory, &ev, now).changed
                }
                None => {
                    now = now.add_millis(7 * 3_600_000);
                    rules.on_silence_due(ctx(), &mut memory, now).changed
                }
            };
            if changed {
                stored = memory.clone();
            }
            // A crash here: the store holds `stored`, the journal `record`.
            let mut restored = stored.clone();
            if let Some(last_seen) = record.last_seen {
                restored.catch_up(last_seen, record.newest_fix);
            }
            prop_assert_eq!(restored.last_seen, memory.last_seen);
            prop_assert_eq!(restored.fence_fix_time.is_some(), memory.fence_fix_time.is_some());
            prop_assert!(restored.fence_fix_time >= memory.fence_fix_time);
            if !any_buffered {
                prop_assert_eq!(restored.fence_fix_time, memory.fence_fix_time);
            }
            let times_aside = |s: &DeviceRuleState| DeviceRuleState {
                last_seen: None,
                fence_fix_time: None,
                ..s.clone()
            };
            prop_assert_eq!(times_aside(&restored), times_aside(&memory));
        }
    }
}
