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
        let ids: Vec<String> = e
            .vehicles
            .values()
            .filter(|v| v.loan.id == self.loan_id)
            .map(|v| v.id.clone())
            .collect();
        if ids.is_empty() {
            return Err(EngineError::NotFound(format!(
                "no vehicle has loan {:?}",
                self.loan_id
            )));
        }
        // Store first, for every vehicle: a store error then leaves memory as it was.
        for vid in &ids {
            if let Some(v) = e.vehicles.get(vid) {
                let mut next = v.clone();
                next.loan.status = self.body.status;
                next.loan.days_past_due = self.body.days_past_due;
                e.store.put_vehicle(vid, next.stored_json().as_bytes())?;
            }
        }
        for vid in &ids {
            if let Some(v) = e.vehicles.get_mut(vid) {
                v.loan.status = self.body.status;
                v.loan.days_past_due = self.body.days_past_due;
            }
            e.risk_in_one_step(vid, true, now, |e| {
                e.for_each_device(vid, now, |rules, ctx, st, now| {
                    rules.on_loan_change(ctx, st, now)
                });
                e.risk_on_loan(vid, false, now);
                e.risk_reconcile(vid, now);
            });
            e.vehicle_rules_sync(vid);
        }
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
