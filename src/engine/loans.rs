//! `PUT /v1/loans/{id}`: the lender's system reports a loan's status.

use super::command::{Command, EngineError};
use super::view::LoanUpdated;
use super::Engine;
use crate::registry::{Loan, LoanStatus};
use crate::time::Timestamp;

/// Updates every vehicle that secures the loan; a loan turning overdue while a device is already
/// silent alerts at once (CONTRACT.md "Rules").
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoanBody {
    pub status: LoanStatus,
    #[serde(default)]
    pub days_past_due: Option<u32>,
}

pub struct SetLoan {
    pub loan_id: String,
    pub body: LoanBody,
}

impl SetLoan {
    pub fn from_json(loan_id: &str, body: &[u8]) -> Result<SetLoan, EngineError> {
        let body: LoanBody = serde_json::from_slice(body)
            .map_err(|e| EngineError::Invalid(format!("loan body: {e}")))?;
        Ok(SetLoan {
            loan_id: loan_id.to_string(),
            body,
        })
    }
}

impl Command for SetLoan {
    type Output = LoanUpdated;

    fn apply(self, e: &mut Engine, now: Timestamp) -> Result<LoanUpdated, EngineError> {
        let ids = vehicles_of_loan(e, &self.loan_id);
        if ids.is_empty() {
            return Err(EngineError::NotFound(format!(
                "no vehicle has loan {:?}",
                self.loan_id
            )));
        }
        set_on(e, &ids, self.body.status, self.body.days_past_due, now)?;
        Ok(LoanUpdated {
            loan: Loan {
                id: self.loan_id,
                status: self.body.status,
                days_past_due: self.body.days_past_due,
            },
            vehicles: ids,
        })
    }
}

/// The vehicles that secure `loan_id`.
fn vehicles_of_loan(e: &Engine, loan_id: &str) -> Vec<String> {
    e.vehicles
        .values()
        .filter(|v| v.loan.id == loan_id)
        .map(|v| v.id.clone())
        .collect()
}

/// A loan's status is the loan's: the vehicles that secure `loan`'s id and show it otherwise
/// take its status, as `PUT /v1/loans/{id}` would give them (`PutVehicle`, after its writes).
pub(super) fn align(e: &mut Engine, loan: &Loan, now: Timestamp) -> Result<(), EngineError> {
    let others: Vec<String> = (e.vehicles.values())
        .filter(|v| {
            v.loan.id == loan.id
                && (v.loan.status, v.loan.days_past_due) != (loan.status, loan.days_past_due)
        })
        .map(|v| v.id.clone())
        .collect();
    set_on(e, &others, loan.status, loan.days_past_due, now)
}

/// Sets a loan's status on `ids` and runs what a loan change moves: the rules (an overdue loan
/// with a silent device alerts at once) and the risk tier. A loan's status is the loan's, so a
/// vehicle put with a loan other vehicles secure brings them along too (`PutVehicle`).
pub(super) fn set_on(
    e: &mut Engine,
    ids: &[String],
    status: LoanStatus,
    days_past_due: Option<u32>,
    now: Timestamp,
) -> Result<(), EngineError> {
    // Each vehicle's record with the loan as put, written with the commit's batch.
    for vid in ids {
        if let Some(v) = e.vehicles.get(vid) {
            let loan = Loan {
                status,
                days_past_due,
                ..v.loan.clone()
            };
            e.writes
                .put_vehicle(vid, v.stored_json_with(&loan).as_bytes());
        }
    }
    for vid in ids {
        let before = e.risk_of(vid, now);
        if let Some(v) = e.vehicles.get_mut(vid) {
            v.loan.status = status;
            v.loan.days_past_due = days_past_due;
        }
        e.risk_in_one_step(vid, before, None, now, |e| {
            e.for_each_device(vid, now, |rules, ctx, st, now| {
                rules.on_loan_change(ctx, st, now)
            });
            e.risk_on_loan(vid, false, now);
            e.vehicle_rules_sync(vid);
            e.risk_reconcile(vid, now);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::engine::testing::{engine_at, put_vehicle, reopen_at};
    use crate::registry::LoanStatus;
    use crate::time::Timestamp;
    use serde_json::json;

    /// A loan secured by two cars, the second put with the loan overdue: the first car's loan is
    /// overdue too, in memory, on disk and in its risk reasons, not left `current` beside it.
    #[test]
    fn a_vehicle_put_with_a_shared_loan_moves_the_loan_on_every_car() {
        let t0 = Timestamp::from_secs(1_795_305_600);
        let store = crate::store::Store::temporary().unwrap();
        let mut e = engine_at(store.clone(), t0);
        let car = |loan: serde_json::Value, device: &str| json!({"loan": loan, "devices": [{"id": device}]});
        put_vehicle(
            &mut e,
            "V-1",
            car(json!({"id": "L", "status": "current"}), "111"),
            t0,
        );
        put_vehicle(
            &mut e,
            "V-3",
            car(json!({"id": "M", "status": "current"}), "333"),
            t0,
        );
        let overdue = json!({"id": "L", "status": "overdue", "days_past_due": 40});
        let t1 = t0.add_millis(60_000);
        put_vehicle(&mut e, "V-2", car(overdue, "222"), t1);
        let loan_of = |e: &crate::engine::Engine, id: &str| {
            let v = &e.vehicles[id];
            (v.loan.status, v.loan.days_past_due)
        };
        for id in ["V-1", "V-2"] {
            assert_eq!(loan_of(&e, id), (LoanStatus::Overdue, Some(40)), "{id}");
            let r = e.risk_of(id, t1).unwrap();
            assert!(
                r.reasons.iter().any(|r| r.code == "overdue_31_90"),
                "{id}: {r:?}"
            );
        }
        // Another loan is left alone.
        assert_eq!(loan_of(&e, "V-3"), (LoanStatus::Current, None));
        e.flush().unwrap();
        drop(e);
        let e = reopen_at(&store, t1);
        assert_eq!(loan_of(&e, "V-1"), (LoanStatus::Overdue, Some(40)));
        assert_eq!(loan_of(&e, "V-3"), (LoanStatus::Current, None));
    }

    /// A loan closed while its car's wire was cut and it was outside its fence, then reopened (a
    /// payment reversed): the episodes ended with the closed loan, so the wire cut again and
    /// the car outside again raise their alerts on the reopened one.
    #[test]
    fn a_reopened_loan_starts_its_episodes_afresh() {
        use crate::alert::AlertType;
        use crate::engine::command::Command;
        use crate::engine::testing::live_fix;
        use crate::event::{AlarmReport, Alarms, EventKind};
        let t0 = Timestamp::from_secs(1_795_305_600);
        let at = |m: i64| t0.add_millis(m * 60_000);
        let mut e = engine_at(crate::store::Store::temporary().unwrap(), t0);
        const DEV: &str = "868120145233604";
        put_vehicle(
            &mut e,
            "V-1",
            json!({"loan": {"id": "L", "status": "overdue", "days_past_due": 40},
                "devices": [{"id": DEV}],
                "geofence": {"type": "Circle", "center": [114.0, 22.5], "radius_m": 2000}}),
            t0,
        );
        let fix = |e: &mut crate::engine::Engine, m: i64, lat: f64, cut: bool| {
            let mut ev = live_fix(DEV, at(m), lat, 114.0);
            if let EventKind::Position(f) = &mut ev.kind {
                f.alarms = AlarmReport::NONE.with(Alarms::POWER_CUT, cut);
            }
            e.ingest(&[ev], at(m));
            let mut kinds: Vec<AlertType> = e
                .take_alerts()
                .into_iter()
                .map(|a| a.kind)
                .filter(|k| matches!(k, AlertType::PowerCut | AlertType::GeofenceExit))
                .collect();
            kinds.sort_by_key(|k| format!("{k:?}"));
            kinds
        };
        let loan = |e: &mut crate::engine::Engine, m: i64, body: &str| {
            super::SetLoan::from_json("L", body.as_bytes())
                .and_then(|c| c.apply(e, at(m)))
                .unwrap();
        };
        assert_eq!(
            fix(&mut e, 1, 22.6, true),
            [AlertType::GeofenceExit, AlertType::PowerCut]
        );
        loan(&mut e, 2, r#"{"status": "closed"}"#);
        // Power back and the car home while the loan is closed: not watched.
        assert!(fix(&mut e, 3, 22.5, false).is_empty());
        loan(&mut e, 4, r#"{"status": "overdue", "days_past_due": 41}"#);
        assert_eq!(
            fix(&mut e, 5, 22.6, true),
            [AlertType::GeofenceExit, AlertType::PowerCut]
        );
    }
}
