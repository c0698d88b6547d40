//! Device alarms: `power_cut` (with `power_restored`) and `tamper`.
//!
//! Raised on the edge from off to on only, once per change of state, however many frames repeat
//! the condition. A report that says the condition is off (`known && !active`) clears it, so a
//! later cut alerts again. A frame that says nothing about a condition leaves it as it was.
//! Events (GT06 alarm codes, MQTT JSON alarms) alert each time they come and latch nothing,
//! except that an event in a valid fix no newer than the last one that alerted for it is a frame
//! sent again (its acknowledgement was lost) and alerts once.

use super::{AlertDraft, DeviceRuleState};
use crate::alert::AlertType;
use crate::event::{AlarmReport, Alarms, Timestamp};
use serde_json::json;

/// The conditions this rule watches and the alert each raises.
const WATCHED: [(Alarms, AlertType); 2] = [
    (Alarms::POWER_CUT, AlertType::PowerCut),
    (Alarms::TAMPER, AlertType::Tamper),
];

/// Where the state keeps the device time of the newest event that alerted for `cond`.
fn event_at(state: &mut DeviceRuleState, cond: Alarms) -> &mut Option<Timestamp> {
    if cond == Alarms::POWER_CUT {
        &mut state.power_cut_event_at
    } else {
        &mut state.tamper_event_at
    }
}

/// Applies one live report to the state, pushing the alerts it raises. `fix_time` is the device
/// time of the valid fix that carried the report, when it came in one: a valid fix's clock is
/// the satellites', so an event no newer than the last one that alerted is a resend.
pub(crate) fn apply(
    state: &mut DeviceRuleState,
    report: AlarmReport,
    fix_time: Option<Timestamp>,
    out: &mut Vec<AlertDraft>,
) {
    for (cond, kind) in WATCHED {
        // An event alerts each time it is reported. A state the same frame gives for the
        // condition (a GT06 power cut in the terminal-info bits beside the alarm code) is
        // recorded as alerted, so that the next frame repeating it does not alert a second time;
        // and an event for a cut that state already told of, still on, is that same cut.
        if report.events.contains(cond) {
            let told = report.known.contains(cond)
                && report.active.contains(cond)
                && state.alarms_alerted.contains(cond);
            let last = event_at(state, cond);
            let resent = matches!((fix_time, *last), (Some(t), Some(l)) if t <= l);
            if !told && !resent {
                out.push(AlertDraft {
                    kind,
                    details: json!({}),
                });
            }
            if fix_time > *last {
                *last = fix_time;
            }
            if report.known.contains(cond) {
                state.alarms_alerted.insert(cond);
            }
            continue;
        }
        if !report.known.contains(cond) {
            continue;
        }
        let on = report.active.contains(cond);
        let was = state.alarms_alerted.contains(cond);
        if on && !was {
            state.alarms_alerted.insert(cond);
            out.push(AlertDraft {
                kind,
                details: json!({}),
            });
        } else if !on && was {
            state.alarms_alerted.set(cond, false);
            // Only power has a "back to normal" alert type; a tamper switch closing again proves
            // nothing (the unit may be hidden elsewhere).
            if cond == Alarms::POWER_CUT {
                out.push(AlertDraft {
                    kind: AlertType::PowerRestored,
                    details: json!({}),
                });
            }
        }
    }
}
