//! Risk score and tier per vehicle (CONTRACT.md "Risk tier and the collections queue"): the sum
//! of the points of the reasons that hold now, capped at 100, so a collections team works its
//! cars in order (分层分类管理).
//!
//! Pure: the engine tells a vehicle's [`RiskState`] what happened (an alert, an episode's end, a
//! loan change) and asks it for the reasons at an instant. Reasons that hold for a time after an
//! alert (a tamper: 7 days) carry their end, and simply stop counting when it passes: no timer,
//! no scan of every vehicle, and a page of the queue is always scored at the moment it is read.

pub mod points;

pub use points::{Points, PointsError};

use crate::registry::{Loan, LoanStatus};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Why a vehicle is at risk; its code is also its `[risk.points]` key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    #[serde(rename = "overdue_1_30")]
    Overdue1To30,
    #[serde(rename = "overdue_31_90")]
    Overdue31To90,
    #[serde(rename = "overdue_90_plus")]
    Overdue90Plus,
    SilentOverdue,
    AllSilent,
    PowerCutOrTamper,
    RiskZoneDwell,
    RiskZoneEnter,
    LongStayUnusual,
    DeviceSeparation,
    OutsideGeofence,
    ReappearedFar,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Overdue1To30,
        Reason::Overdue31To90,
        Reason::Overdue90Plus,
        Reason::SilentOverdue,
        Reason::AllSilent,
        Reason::PowerCutOrTamper,
        Reason::RiskZoneDwell,
        Reason::RiskZoneEnter,
        Reason::LongStayUnusual,
        Reason::DeviceSeparation,
        Reason::OutsideGeofence,
        Reason::ReappearedFar,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::Overdue1To30 => "overdue_1_30",
            Reason::Overdue31To90 => "overdue_31_90",
            Reason::Overdue90Plus => "overdue_90_plus",
            Reason::SilentOverdue => "silent_overdue",
            Reason::AllSilent => "all_silent",
            Reason::PowerCutOrTamper => "power_cut_or_tamper",
            Reason::RiskZoneDwell => "risk_zone_dwell",
            Reason::RiskZoneEnter => "risk_zone_enter",
            Reason::LongStayUnusual => "long_stay_unusual",
            Reason::DeviceSeparation => "device_separation",
            Reason::OutsideGeofence => "outside_geofence",
            Reason::ReappearedFar => "reappeared_far",
        }
    }

    pub fn parse(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The default points of CONTRACT.md.
    pub fn default_points(self) -> u32 {
        match self {
            Reason::Overdue1To30 => 15,
            Reason::Overdue31To90 => 30,
            Reason::Overdue90Plus => 40,
            Reason::SilentOverdue => 25,
            Reason::AllSilent => 35,
            Reason::PowerCutOrTamper => 25,
            Reason::RiskZoneDwell => 30,
            Reason::RiskZoneEnter => 10,
            Reason::LongStayUnusual => 20,
            Reason::DeviceSeparation => 30,
            Reason::OutsideGeofence => 15,
            Reason::ReappearedFar => 15,
        }
    }

    /// How long an alert keeps this reason after it (`None`: until its episode ends).
    pub fn hold_ms(self) -> Option<i64> {
        const DAY: i64 = 86_400_000;
        match self {
            Reason::PowerCutOrTamper | Reason::RiskZoneEnter | Reason::ReappearedFar => {
                Some(7 * DAY)
            }
            Reason::RiskZoneDwell => Some(30 * DAY),
            _ => None,
        }
    }

    /// The overdue band of a loan, if it is overdue.
    pub fn overdue(loan: &Loan) -> Option<Reason> {
        if loan.status != LoanStatus::Overdue {
            return None;
        }
        Some(match loan.days_past_due.unwrap_or(1) {
            0..=30 => Reason::Overdue1To30,
            31..=90 => Reason::Overdue31To90,
            _ => Reason::Overdue90Plus,
        })
    }
}

/// The collections tiers, lowest first (so `>` means "went up").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    None,
    Low,
    Medium,
    High,
}

impl Tier {
    pub fn of(score: u32, loan: &Loan) -> Tier {
        if loan.status == LoanStatus::Closed {
            return Tier::None;
        }
        match score {
            60.. => Tier::High,
            30.. => Tier::Medium,
            1.. => Tier::Low,
            0 => Tier::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::None => "none",
            Tier::Low => "low",
            Tier::Medium => "medium",
            Tier::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        [Tier::None, Tier::Low, Tier::Medium, Tier::High]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// A reason that holds from `since`, until its episode ends or until `until`.
#[derive(Clone, Copy, PartialEq, Debug, Serialize, Deserialize)]
struct Held {
    reason: Reason,
    since: Timestamp,
    until: Option<Timestamp>,
}

/// What a vehicle's risk remembers; persisted with the vehicle's other state.
#[derive(Clone, Default, PartialEq, Debug, Serialize, Deserialize)]
pub struct RiskState {
    held: Vec<Held>,
}

/// One reason as the API shows it.
#[derive(Clone, PartialEq, Debug, Serialize, utoipa::ToSchema)]
pub struct ReasonView {
    #[schema(value_type = String)]
    pub code: &'static str,
    pub points: u32,
    #[schema(value_type = String)]
    pub since: Timestamp,
}

/// A vehicle's risk as `GET /v1/vehicles/{id}` and the queue show it.
#[derive(Clone, PartialEq, Debug, Serialize, utoipa::ToSchema)]
pub struct RiskView {
    #[schema(value_type = String)]
    pub tier: Tier,
    pub score: u32,
    pub reasons: Vec<ReasonView>,
}

impl RiskState {
    pub fn from_bytes(b: &[u8]) -> Result<RiskState, postcard::Error> {
        postcard::from_bytes(b)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        crate::encode::to_vec(self).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether a reason is held (expired or not).
    pub fn holds(&self, reason: Reason) -> bool {
        self.held.iter().any(|h| h.reason == reason)
    }

    /// An episode begins (kept from its first start while it stays open).
    pub fn open(&mut self, reason: Reason, now: Timestamp) {
        if !self
            .held
            .iter()
            .any(|h| h.reason == reason && h.until.is_none())
        {
            self.held.retain(|h| h.reason != reason);
            self.held.push(Held {
                reason,
                since: now,
                until: None,
            });
        }
    }

    /// Moves each reason's `since` and `until` with a step of the host clock of `step_ms` (0
    /// at a start), never past `now` (`time::step_shift`): a hold lasts as long as the daemon
    /// watched it, and a year's correction back does not keep a power cut for a year. Returns
    /// whether anything moved.
    pub fn clock_stepped(&mut self, step_ms: i64, now: Timestamp) -> bool {
        let mut moved = false;
        for h in &mut self.held {
            let by = crate::time::step_shift(h.since, step_ms, now);
            if by != 0 {
                h.since = h.since.add_millis(by);
                h.until = h.until.map(|u| u.add_millis(by));
                moved = true;
            }
        }
        moved
    }

    /// An episode ended.
    pub fn close(&mut self, reason: Reason) {
        self.held.retain(|h| h.reason != reason);
    }

    /// An alert that counts for a while: from now for the reason's hold time (a new alert
    /// restarts it).
    pub fn hold(&mut self, reason: Reason, now: Timestamp) {
        let until = reason.hold_ms().map(|ms| now.add_millis(ms));
        self.held.retain(|h| h.reason != reason);
        self.held.push(Held {
            reason,
            since: now,
            until,
        });
    }

    /// The loan's overdue band replaces any other band (and none for a loan not overdue).
    /// Returns whether that changed anything.
    pub fn set_loan(&mut self, loan: &Loan, now: Timestamp) -> bool {
        let before = self.held.clone();
        let band = Reason::overdue(loan);
        for r in [
            Reason::Overdue1To30,
            Reason::Overdue31To90,
            Reason::Overdue90Plus,
        ] {
            if Some(r) != band {
                self.close(r);
            }
        }
        if let Some(b) = band {
            self.open(b, now);
        }
        self.held != before
    }

    /// Drops reasons whose time has passed (so the stored state stays small).
    pub fn expire(&mut self, now: Timestamp) -> bool {
        let before = self.held.len();
        self.held.retain(|h| h.until.is_none_or(|u| u > now));
        self.held.len() != before
    }

    /// When the first reason that still counts at `now` stops counting, if one ever does: the
    /// score holds until then.
    pub fn next_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.held
            .iter()
            .filter_map(|h| h.until)
            .filter(|&u| u > now)
            .min()
    }

    /// The score and tier at `now`, as [`RiskState::assess`] gives them, without building the
    /// list of reasons: what the queue computes for every vehicle, so no allocation.
    pub fn score(&self, loan: &Loan, points: &Points, now: Timestamp) -> (u32, Tier) {
        if loan.status == LoanStatus::Closed {
            return (0, Tier::None);
        }
        let score = self
            .held
            .iter()
            .filter(|h| h.until.is_none_or(|u| u > now))
            .map(|h| points.of(h.reason))
            .sum::<u32>()
            .min(100);
        (score, Tier::of(score, loan))
    }

    /// The reasons that hold at `now`, with their points, and the score and tier they make.
    pub fn assess(&self, loan: &Loan, points: &Points, now: Timestamp) -> RiskView {
        let mut reasons: Vec<ReasonView> = self
            .held
            .iter()
            .filter(|h| h.until.is_none_or(|u| u > now))
            .map(|h| ReasonView {
                code: h.reason.code(),
                points: points.of(h.reason),
                since: h.since,
            })
            .collect();
        reasons.sort_by(|a, b| b.points.cmp(&a.points).then(a.code.cmp(b.code)));
        let score = reasons.iter().map(|r| r.points).sum::<u32>().min(100);
        let tier = Tier::of(score, loan);
        if tier == Tier::None && loan.status == LoanStatus::Closed {
            reasons.clear();
            return RiskView {
                tier,
                score: 0,
                reasons,
            };
        }
        RiskView {
            tier,
            score,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loan(status: LoanStatus, days: Option<u32>) -> Loan {
        Loan {
            id: "L".into(),
            status,
            days_past_due: days,
        }
    }

    const T0: Timestamp = Timestamp::from_secs(1_764_000_000);
    const DAY: i64 = 86_400_000;

    #[test]
    fn score_is_the_sum_of_what_holds_capped_and_tiered() {
        let p = Points::default();
        let mut s = RiskState::default();
        let l = loan(LoanStatus::Overdue, Some(45));
        s.set_loan(&l, T0);
        assert_eq!(s.assess(&l, &p, T0).score, 30);
        assert_eq!(s.assess(&l, &p, T0).tier, Tier::Medium);
        s.open(Reason::SilentOverdue, T0);
        s.hold(Reason::PowerCutOrTamper, T0);
        let v = s.assess(&l, &p, T0);
        assert_eq!((v.score, v.tier), (80, Tier::High));
        assert_eq!(v.reasons[0].code, "overdue_31_90");
        s.open(Reason::AllSilent, T0);
        s.open(Reason::DeviceSeparation, T0);
        assert_eq!(s.assess(&l, &p, T0).score, 100);
        // A closed loan is always none.
        let closed = loan(LoanStatus::Closed, None);
        let v = s.assess(&closed, &p, T0);
        assert_eq!((v.tier, v.score, v.reasons.len()), (Tier::None, 0, 0));
        // The queue's allocation-free score agrees.
        for l in [&l, &closed] {
            let v = s.assess(l, &p, T0);
            assert_eq!(s.score(l, &p, T0), (v.score, v.tier));
        }
    }

    #[test]
    fn timed_reasons_drop_out_on_time_and_episodes_keep_their_start() {
        let p = Points::default();
        let l = loan(LoanStatus::Current, None);
        let mut s = RiskState::default();
        s.hold(Reason::PowerCutOrTamper, T0);
        s.open(Reason::OutsideGeofence, T0);
        s.open(Reason::OutsideGeofence, T0.add_millis(DAY));
        let at = |d: i64| s.assess(&l, &p, T0.add_millis(d)).score;
        assert_eq!(at(7 * DAY - 1), 40);
        assert_eq!(at(7 * DAY), 15);
        let v = s.assess(&l, &p, T0.add_millis(8 * DAY));
        assert_eq!(v.reasons[0].since, T0);
        assert!(s.expire(T0.add_millis(8 * DAY)));
        s.close(Reason::OutsideGeofence);
        assert!(s.is_empty());
        // The loan's band moves with it.
        let mut s = RiskState::default();
        s.set_loan(&loan(LoanStatus::Overdue, Some(10)), T0);
        s.set_loan(&loan(LoanStatus::Overdue, Some(120)), T0);
        let v = s.assess(&loan(LoanStatus::Overdue, Some(120)), &p, T0);
        assert_eq!(v.reasons.len(), 1);
        assert_eq!(v.reasons[0].code, "overdue_90_plus");
        s.set_loan(&loan(LoanStatus::Current, None), T0);
        assert!(s.is_empty());
        let back = RiskState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn tiers_order_and_parse() {
        assert!(Tier::High > Tier::Medium && Tier::Medium > Tier::Low && Tier::Low > Tier::None);
        for t in ["none", "low", "medium", "high"] {
            assert_eq!(Tier::parse(t).unwrap().as_str(), t);
        }
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.code()), Some(r));
        }
    }
}
