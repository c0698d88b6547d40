//! The collections queue's rows: each vehicle's score, tier and loan status, kept dense.
//!
//! Why: a page of `GET /v1/vehicles` must weigh every vehicle. Reading each one's risk reasons
//! from a map (a hash, a key and a list behind pointers) costs several cache misses per vehicle,
//! some 40 ms on 100,000 vehicles; a row per vehicle in one vector scans in memory order. A row
//! is written whenever the vehicle's reasons or loan change, and says until when its score holds
//! (the first held reason to expire), so that time moving on is caught when a page reads it,
//! with no scan of every vehicle on the clock.

use crate::event::DeviceId;
use crate::fast_hash::FastMap;
use crate::registry::{LoanStatus, Vehicle};
use crate::risk::{Points, RiskState, Tier};
use crate::time::Timestamp;
use std::sync::Arc;

/// One vehicle as the queue sorts and filters it.
#[derive(Clone, Debug)]
pub(super) struct Row {
    pub id: Arc<str>,
    pub score: u32,
    pub tier: Tier,
    pub status: LoanStatus,
    /// Its devices: their last contact orders equal scores, looked up only for those.
    pub devices: Box<[DeviceId]>,
    /// The score holds before this time (ms); after it, a reason may have expired.
    until: i64,
}

/// Every registered vehicle's row, and where each one is.
#[derive(Default)]
pub(super) struct QueueRows {
    rows: Vec<Row>,
    at: FastMap<Arc<str>, usize>,
}

impl QueueRows {
    /// Writes the vehicle's row from its loan and reasons at `now` (`None`: it was deleted).
    pub fn set(
        &mut self,
        id: &str,
        vehicle: Option<&Vehicle>,
        risk: Option<&RiskState>,
        points: &Points,
        now: Timestamp,
    ) {
        let Some(v) = vehicle else {
            if let Some(i) = self.at.remove(id) {
                self.rows.swap_remove(i);
                if let Some(moved) = self.rows.get(i) {
                    self.at.insert(moved.id.clone(), i);
                }
            }
            return;
        };
        let (score, tier, until) = score(v, risk, points, now);
        match self.at.get(id) {
            Some(&i) => {
                let r = &mut self.rows[i];
                (r.score, r.tier, r.status, r.until) = (score, tier, v.loan.status, until);
                r.devices = v.devices.iter().map(|d| d.id.clone()).collect();
            }
            None => {
                let id: Arc<str> = Arc::from(id);
                self.at.insert(id.clone(), self.rows.len());
                self.rows.push(Row {
                    id,
                    score,
                    tier,
                    status: v.loan.status,
                    devices: v.devices.iter().map(|d| d.id.clone()).collect(),
                    until,
                });
            }
        }
    }

    /// Every row, brought to `now` first: a row whose score may have changed since it was
    /// written is scored again (`lookup` gives its vehicle and reasons).
    pub fn current<'a>(
        &mut self,
        points: &Points,
        now: Timestamp,
        lookup: impl Fn(&str) -> (Option<&'a Vehicle>, Option<&'a RiskState>),
    ) -> &[Row] {
        for r in self.rows.iter_mut().filter(|r| r.until <= now.millis()) {
            if let (Some(v), risk) = lookup(&r.id) {
                (r.score, r.tier, r.until) = score(v, risk, points, now);
            }
        }
        &self.rows
    }
}

fn score(
    v: &Vehicle,
    risk: Option<&RiskState>,
    points: &Points,
    now: Timestamp,
) -> (u32, Tier, i64) {
    let empty = RiskState::default();
    let st = risk.unwrap_or(&empty);
    let (score, tier) = st.score(&v.loan, points, now);
    let until = st.next_expiry(now).map_or(i64::MAX, Timestamp::millis);
    (score, tier, until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::risk::Reason;

    const DAY: i64 = 86_400_000;

    fn vehicle(id: &str, status: &str) -> Vehicle {
        let body = serde_json::json!({
            "loan": {"id": "L", "status": status, "days_past_due": 10},
            "devices": [{"id": format!("86{}", id.len()), "kind": "wired"}],
        });
        Vehicle::from_json(id, &serde_json::to_vec(&body).unwrap()).unwrap()
    }

    #[test]
    fn a_reason_that_expires_leaves_the_row_when_a_page_reads_it() {
        let t0 = Timestamp(1_795_305_600_000);
        let points = Points::default();
        let v = vehicle("V-1", "overdue");
        let mut st = RiskState::default();
        st.set_loan(&v.loan, t0);
        st.hold(Reason::PowerCutOrTamper, t0);
        let mut q = QueueRows::default();
        q.set("V-1", Some(&v), Some(&st), &points, t0);
        let lookup = |_: &str| (Some(&v), Some(&st));
        let full = st.score(&v.loan, &points, t0).0;
        assert_eq!(q.current(&points, t0, lookup)[0].score, full);
        // A week later the power cut no longer counts; the overdue band still does.
        let later = t0.add_millis(7 * DAY);
        let r = &q.current(&points, later, lookup)[0];
        assert_eq!(r.score, st.score(&v.loan, &points, later).0);
        assert!(r.score < full && r.score > 0);
        assert_eq!(r.until, i64::MAX);
    }

    #[test]
    fn deleting_a_row_keeps_the_others_findable() {
        let t0 = Timestamp(1_795_305_600_000);
        let points = Points::default();
        let vs: Vec<Vehicle> = (0..4)
            .map(|i| {
                vehicle(
                    &format!("V-{i}"),
                    if i % 2 == 0 { "overdue" } else { "current" },
                )
            })
            .collect();
        let mut q = QueueRows::default();
        for v in &vs {
            q.set(&v.id, Some(v), None, &points, t0);
        }
        q.set("V-0", None, None, &points, t0);
        q.set("V-9", None, None, &points, t0);
        // V-3 moved into V-0's slot: a later change to it must land on its own row.
        let closed = vehicle("V-3", "closed");
        q.set("V-3", Some(&closed), None, &points, t0);
        let rows = q.current(&points, t0, |_| (None, None));
        let mut ids: Vec<(&str, LoanStatus)> = rows.iter().map(|r| (&*r.id, r.status)).collect();
        ids.sort_by_key(|r| r.0);
        assert_eq!(
            ids,
            vec![
                ("V-1", LoanStatus::Current),
                ("V-2", LoanStatus::Overdue),
                ("V-3", LoanStatus::Closed)
            ]
        );
    }
}
