//! The rules engine: pure functions from (registry, per-device state, event, time) to alerts.
//!
//! No I/O, no clock, no store: time always comes in as a [`Timestamp`], so the daemon and
//! `replay` (virtual clock) run the very same code.
//!
//! # How the engine thread uses it
//!
//! - Build one [`Rules`] at start: `Rules::new(cfg, daemon_start)` (`daemon_start` = the virtual
//!   clock's start in replay). Keep one [`SilenceTracker`] and, per registered device, one
//!   [`DeviceRuleState`] (persisted; see below).
//! - At start, for every registered device: `tracker.set(id, rules.silence_deadline(ctx, &state))`.
//! - Every call below returns an [`Outcome`]: the alerts to raise (`AlertDraft`: the caller adds
//!   id, vehicle, loan, position, `detected_at`), and the device's silence deadline, which the
//!   caller must hand to `tracker.set(id, outcome.silence_deadline)` after **every** call.
//! - [`Rules::on_event`] for every decoded event (update the last-known position first, so that
//!   the alerts' `position` is the new one). `ctx` is `None` for unregistered devices: no rules.
//! - [`Rules::on_registered`] for every device of a vehicle after each `PUT /v1/vehicles` (new
//!   or replaced; it is idempotent), [`Rules::on_unregistered`] for devices dropped from it or
//!   deleted with it, [`Rules::on_loan_change`] for every device of every vehicle whose loan a
//!   `PUT /v1/loans` changed. These may raise `silent_overdue` at once (loan turned overdue
//!   while the device was already silent).
//! - Whenever `now >= tracker.next_deadline()`: for each id of `tracker.pop_due(now)`,
//!   [`Rules::on_silence_due`].
//! - **Persist the state after every call where `Outcome::changed` is true**, in the same commit
//!   as the alerts the call raised (the outbox). Then a restart neither repeats an alert (the
//!   flags say it was raised) nor forgets one (an excursion or silence in progress stays armed).
//!   [`DeviceRuleState::to_bytes`] gives a compact postcard encoding.
//!
//! Loan status: `closed` raises nothing at all. Geofence and alarm alerts are raised whatever the
//! loan status otherwise; silence alerts only while `overdue`.

pub mod alarm;
pub mod all_silent;
pub mod geofence;
pub mod long_stay;
pub mod separation;
pub mod silence;
pub mod vehicle_state;
pub mod zones;

pub use silence::{DeadlineQueue, SilenceTracker};
pub use vehicle_state::VehicleRuleState;

use crate::alert::AlertType;
use crate::event::{Alarms, Event, EventKind, Timestamp};
use crate::registry::{DeviceBinding, DeviceKind, LoanStatus, Vehicle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

/// The `[rules]` config table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Silence threshold for wired devices (they report every few minutes).
    #[serde(with = "crate::duration")]
    pub silence_after: Duration,
    /// Silence threshold for battery devices (they may report once a day).
    #[serde(with = "crate::duration")]
    pub silence_after_wireless: Duration,
    /// How far outside a fix must be to count as outside (GPS jitter along the fence).
    pub geofence_margin_m: f64,
    /// No silence alert this soon after start.
    #[serde(with = "crate::duration")]
    pub startup_grace: Duration,
    /// Local time for night and day (places): an IANA zone name.
    pub timezone: String,
    /// A vehicle within this distance of a spot is staying there (places).
    pub stay_radius_m: f64,
    /// ... for at least this long: a stay.
    #[serde(with = "crate::duration")]
    pub stay_min: Duration,
    /// A stay this long raises `long_stay`.
    #[serde(with = "crate::duration")]
    pub long_stay_after: Duration,
    /// How long a visit to a risk zone lasts before `risk_zone_dwell` (a zone may override it).
    #[serde(with = "crate::duration")]
    pub risk_zone_dwell_after: Duration,
    /// Two devices of one vehicle this far apart: `device_separation`; a silent device that
    /// comes back this far from where it went silent counts as `reappeared_far` (risk).
    pub separation_m: f64,
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            silence_after: Duration::from_secs(6 * 3600),
            silence_after_wireless: Duration::from_secs(48 * 3600),
            geofence_margin_m: 50.0,
            startup_grace: Duration::from_secs(600),
            timezone: "UTC".to_string(),
            stay_radius_m: 200.0,
            stay_min: Duration::from_secs(20 * 60),
            long_stay_after: Duration::from_secs(72 * 3600),
            risk_zone_dwell_after: Duration::from_secs(2 * 3600),
            separation_m: 2000.0,
        }
    }
}

/// Why a `[rules]` table is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleConfigError {
    #[error("rules.geofence_margin_m must be a finite number >= 0, got {0}")]
    BadMargin(f64),
    #[error("rules.{0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("rules.timezone: unknown time zone {0:?} (an IANA name such as \"Asia/Shanghai\")")]
    BadTimezone(String),
    #[error("rules.stay_radius_m must be a number between 10 and 10000, got {0}")]
    BadStayRadius(f64),
    #[error("rules.separation_m must be a finite number > 0, got {0}")]
    BadSeparation(f64),
    #[error("rules.long_stay_after must be at least rules.stay_min (a long stay is a stay first)")]
    LongStayShorterThanStay,
}

impl RuleConfig {
    /// Checks values serde cannot (for `check-config`).
    pub fn validate(&self) -> Result<(), RuleConfigError> {
        if !self.geofence_margin_m.is_finite() || self.geofence_margin_m < 0.0 {
            return Err(RuleConfigError::BadMargin(self.geofence_margin_m));
        }
        if self.silence_after.is_zero() {
            return Err(RuleConfigError::ZeroDuration("silence_after"));
        }
        if self.silence_after_wireless.is_zero() {
            return Err(RuleConfigError::ZeroDuration("silence_after_wireless"));
        }
        if self.stay_min.is_zero() {
            return Err(RuleConfigError::ZeroDuration("stay_min"));
        }
        if !(10.0..=10_000.0).contains(&self.stay_radius_m) {
            return Err(RuleConfigError::BadStayRadius(self.stay_radius_m));
        }
        self.time_zone()?;
        if self.risk_zone_dwell_after.is_zero() {
            return Err(RuleConfigError::ZeroDuration("risk_zone_dwell_after"));
        }
        if !self.separation_m.is_finite() || self.separation_m <= 0.0 {
            return Err(RuleConfigError::BadSeparation(self.separation_m));
        }
        if self.long_stay_after.is_zero() {
            return Err(RuleConfigError::ZeroDuration("long_stay_after"));
        }
        if self.long_stay_after < self.stay_min {
            return Err(RuleConfigError::LongStayShorterThanStay);
        }
        Ok(())
    }
}

impl RuleConfigError {
    /// The config key at fault, for `check-config`'s message.
    pub fn key(&self) -> String {
        match self {
            RuleConfigError::BadMargin(_) => "rules.geofence_margin_m".into(),
            RuleConfigError::ZeroDuration(k) => format!("rules.{k}"),
            RuleConfigError::BadTimezone(_) => "rules.timezone".into(),
            RuleConfigError::BadStayRadius(_) => "rules.stay_radius_m".into(),
            RuleConfigError::BadSeparation(_) => "rules.separation_m".into(),
            RuleConfigError::LongStayShorterThanStay => "rules.long_stay_after".into(),
        }
    }
}

impl RuleConfig {
    /// `timezone` resolved from the time zone database.
    pub fn time_zone(&self) -> Result<jiff::tz::TimeZone, RuleConfigError> {
        jiff::tz::TimeZone::get(&self.timezone)
            .map_err(|_| RuleConfigError::BadTimezone(self.timezone.clone()))
    }
}

/// Where the device was last placed relative to its vehicle's fence.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FencePlacement {
    #[default]
    Unknown,
    Inside,
    Outside,
}

/// Everything the rules remember about one device; what survives restarts.
///
/// Small and flat on purpose: persisted after every change beyond the two times every event
/// moves, which the device's record keeps ([`DeviceRuleState::differs_beyond_progress`]).
/// Timestamps are stored as epoch
/// milliseconds (not RFC 3339 strings) to keep the postcard encoding at a few dozen bytes.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct DeviceRuleState {
    pub placement: FencePlacement,
    /// Tag of the fence `placement` refers to (0: none); a new fence restarts at `Unknown`.
    pub fence_tag: u64,
    /// Fix time of the newest live fix the geofence rule used; older fixes are ignored.
    #[serde(with = "opt_millis")]
    pub fence_fix_time: Option<Timestamp>,
    /// A `silent_overdue` alert was raised and the device has not spoken since.
    pub silent_alerted: bool,
    /// Alarm conditions (power cut, tamper) alerted and not yet reported off.
    pub alarms_alerted: Alarms,
    /// `received_at` of the newest event of any kind.
    #[serde(with = "opt_millis")]
    pub last_seen: Option<Timestamp>,
    /// When the device was bound to its current vehicle; silence counts from here if later.
    #[serde(with = "opt_millis")]
    pub registered_at: Option<Timestamp>,
    /// Device time of the newest valid fix that carried a `power_cut` event, and of the newest
    /// that carried a `tamper` event: a frame sent again after its acknowledgement was lost,
    /// alone or among others, is the same alarm (protocols.md C.6: de-duplicate on device, timestamp and
    /// event). Last, so that states written before them read as the shorter layout (see
    /// [`DeviceRuleState::from_bytes`]).
    #[serde(with = "opt_millis")]
    pub power_cut_event_at: Option<Timestamp>,
    #[serde(with = "opt_millis")]
    pub tamper_event_at: Option<Timestamp>,
}

/// The state's layout before `alarm_events_at` was kept.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct DeviceRuleStateV1 {
    placement: FencePlacement,
    fence_tag: u64,
    #[serde(with = "opt_millis")]
    fence_fix_time: Option<Timestamp>,
    silent_alerted: bool,
    alarms_alerted: Alarms,
    #[serde(with = "opt_millis")]
    last_seen: Option<Timestamp>,
    #[serde(with = "opt_millis")]
    registered_at: Option<Timestamp>,
}

impl From<DeviceRuleStateV1> for DeviceRuleState {
    fn from(s: DeviceRuleStateV1) -> Self {
        DeviceRuleState {
            placement: s.placement,
            fence_tag: s.fence_tag,
            fence_fix_time: s.fence_fix_time,
            silent_alerted: s.silent_alerted,
            alarms_alerted: s.alarms_alerted,
            last_seen: s.last_seen,
            registered_at: s.registered_at,
            power_cut_event_at: None,
            tamper_event_at: None,
        }
    }
}

/// Why stored rule state could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("rule state: {0}")]
pub struct StateDecodeError(#[from] postcard::Error);

impl DeviceRuleState {
    /// Whether it differs from `before` in more than the two times a device's stream moves
    /// (`last_seen` at every event, `fence_fix_time` at every live usable fix of a device with a
    /// fence). Those two are not written on their own: the device's record, which the same commit
    /// writes for every event (`store::DeviceRecord`), holds them too, and
    /// [`DeviceRuleState::catch_up`] takes them from it at start. A registered device's steady
    /// stream of fixes then no longer writes its rule state to sled at every commit.
    pub fn differs_beyond_progress(&self, mut before: DeviceRuleState) -> bool {
        // Each time counts only where it appeared or went, not where it moved.
        if before.last_seen.is_some() && self.last_seen.is_some() {
            before.last_seen = self.last_seen;
        }
        if before.fence_fix_time.is_some() && self.fence_fix_time.is_some() {
            before.fence_fix_time = self.fence_fix_time;
        }
        *self != before
    }

    /// At start: the times a commit left to the device's record (see
    /// [`DeviceRuleState::differs_beyond_progress`]), `last_seen` (its last message of any
    /// kind) and `newest_fix` (the fix time of its newest usable fix). That fix may be one the
    /// geofence did not use (buffered): the geofence then ignores live fixes older than it, which
    /// say less about where the car is than it does.
    pub fn catch_up(&mut self, last_seen: Timestamp, newest_fix: Option<Timestamp>) {
        if let Some(t) = self.last_seen.as_mut() {
            *t = (*t).max(last_seen);
        }
        if let (Some(t), Some(newest)) = (self.fence_fix_time.as_mut(), newest_fix) {
            *t = (*t).max(newest);
        }
    }

    /// Compact binary form for the store (postcard; about 20 to 40 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::encode::to_vec(self).unwrap_or_default()
    }

    /// Reads the current layout, or the one before it (fields were added at the end, so an
    /// older state fails to decode as the newer layout and is read as the older one).
    pub fn from_bytes(b: &[u8]) -> Result<Self, StateDecodeError> {
        match postcard::from_bytes(b) {
            Ok(s) => Ok(s),
            Err(e) => postcard::from_bytes::<DeviceRuleStateV1>(b)
                .map(DeviceRuleState::from)
                .map_err(|_| StateDecodeError(e)),
        }
    }
}

mod opt_millis {
    use crate::event::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&t.millis()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.map(Timestamp::from_millis))
    }
}

/// An alert before the caller dresses it as a [`crate::alert::Alert`].
#[derive(Clone, PartialEq, Debug)]
pub struct AlertDraft {
    pub kind: AlertType,
    /// The alert's `details` object.
    pub details: serde_json::Value,
}

/// What one call decided.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Outcome {
    /// Alerts to raise, in order.
    pub alerts: Vec<AlertDraft>,
    /// The device's silence deadline now: pass to [`SilenceTracker::set`] (`None` clears it).
    pub silence_deadline: Option<Timestamp>,
    /// The state changed and must be persisted (with the alerts, in one commit).
    pub changed: bool,
    /// A silent device logged in: its `reappeared` waits for what it says next.
    pub held: Option<HeldReappearance>,
}

/// How long a silent device's `reappeared` waits after its login for the message that follows
/// it. A tracker back from a long silence opens a new connection, and its login (GT06 0x01,
/// JT/T 808 authentication, Teltonika IMEI) carries no position; a fix sent right after it
/// brings `details.distance_m`, how far the car moved while silent. Short enough that the alert
/// still comes within 1 s of the login (CONTRACT.md "Webhook delivery") when nothing follows.
pub const REAPPEAR_HOLD: std::time::Duration = std::time::Duration::from_millis(800);

/// A `reappeared` held after a login: what it will say, and until when it waits.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct HeldReappearance {
    /// Where the silence counted from, before the login moved `last_seen`.
    pub silent_since: Option<Timestamp>,
    /// `last_seen` before the login.
    pub last_seen: Option<Timestamp>,
    /// When the login came: the device spoke again then.
    pub at: Timestamp,
}

impl HeldReappearance {
    /// Raised without a distance at this time if nothing else came.
    pub fn due(&self) -> Timestamp {
        self.at.add(REAPPEAR_HOLD)
    }

    /// The same hold with its times moved by `ms` (a step of the host clock).
    pub fn moved(self, ms: i64) -> Self {
        HeldReappearance {
            silent_since: self.silent_since.map(|t| t.add_millis(ms)),
            last_seen: self.last_seen.map(|t| t.add_millis(ms)),
            at: self.at.add_millis(ms),
        }
    }

    /// The held alert, raised now.
    pub fn draft(&self) -> AlertDraft {
        reappeared_draft(self.silent_since, self.at, self.last_seen)
    }
}

/// A closed loan's episodes end with it: the rules do not watch it, so a placement or an alarm
/// kept from then would be stale when it reopens (a payment reversed), and a wire cut again, or
/// the car outside its fence then, would raise nothing.
/// The silence too: a device still silent when the loan reopens is alerted again, as one that
/// is silent when a loan turns overdue is (CONTRACT.md). The newest fix time used stays, so that
/// an old frame sent again after the reopening does not place the car.
fn end_if_closed(ctx: &VehicleContext<'_>, state: &mut DeviceRuleState) {
    if ctx.closed() {
        state.placement = FencePlacement::Unknown;
        state.alarms_alerted = Alarms::NONE;
        state.silent_alerted = false;
    }
}

/// `reappeared`: `silent_s` is the Part 2 name; `distance_m` is added by the engine, which
/// knows where the device went silent.
pub fn reappeared_draft(
    silent_since: Option<Timestamp>,
    now: Timestamp,
    last_seen: Option<Timestamp>,
) -> AlertDraft {
    let silent_for = silent_since.map(|b| now.since(b).max(0) / 1000);
    AlertDraft {
        kind: AlertType::Reappeared,
        details: json!({
            "silent_for_s": silent_for,
            "silent_s": silent_for,
            "last_seen": last_seen,
        }),
    }
}

/// The registry facts the rules need about one device.
#[derive(Clone, Copy, Debug)]
pub struct VehicleContext<'a> {
    pub vehicle: &'a Vehicle,
    pub device: &'a DeviceBinding,
}

impl<'a> VehicleContext<'a> {
    /// The context of `device` within `vehicle`, if it is bound to it.
    pub fn new(vehicle: &'a Vehicle, device: &crate::event::DeviceId) -> Option<Self> {
        Some(VehicleContext {
            vehicle,
            device: vehicle.device(device)?,
        })
    }

    /// The context of the `index`-th device of `vehicle` (when the caller's device map already
    /// knows where the device sits: no search).
    pub fn at(vehicle: &'a Vehicle, index: usize) -> Option<Self> {
        Some(VehicleContext {
            vehicle,
            device: vehicle.devices.get(index)?,
        })
    }

    fn closed(&self) -> bool {
        self.vehicle.loan.status == LoanStatus::Closed
    }
}

/// The rules with their configuration and the daemon's start (for the startup grace).
#[derive(Clone, Debug)]
pub struct Rules {
    cfg: RuleConfig,
    grace_end: Timestamp,
}

impl Rules {
    pub fn new(cfg: RuleConfig, daemon_start: Timestamp) -> Self {
        let grace_end = daemon_start.add(cfg.startup_grace);
        Rules { cfg, grace_end }
    }

    pub fn config(&self) -> &RuleConfig {
        &self.cfg
    }

    /// No silence alert fires before this instant.
    pub fn grace_end(&self) -> Timestamp {
        self.grace_end
    }

    /// The device's silence deadline from its state (for rebuilding the tracker at start).
    pub fn silence_deadline(
        &self,
        ctx: Option<VehicleContext<'_>>,
        state: &DeviceRuleState,
    ) -> Option<Timestamp> {
        let ctx = ctx?;
        silence::deadline(&self.cfg, self.grace_end, &ctx, state)
    }

    /// One event from a device, received at `received_at`.
    ///
    /// Any event is a sign of life (clears an outstanding silence with `reappeared`). Live fixes
    /// feed the geofence rule; live fixes, heartbeats and alarm messages feed the alarm rule.
    /// Buffered fixes only count as a sign of life (see [`geofence`]).
    pub fn on_event(
        &self,
        ctx: Option<VehicleContext<'_>>,
        state: &mut DeviceRuleState,
        event: &Event,
        received_at: Timestamp,
    ) -> Outcome {
        self.on_event_awaiting(ctx, state, event, received_at, false)
    }

    /// [`Rules::on_event`] while the device's `reappeared` is held (`awaiting_fix`): until the
    /// hold runs out, only a usable live position releases it. A GT06 unit sends a status packet
    /// between its login and its first fix, and a released alert would carry no `distance_m`.
    /// A buffered fix holds it too (and starts a hold): a tracker back from a silence uploads
    /// what it logged, oldest first, and the first of those is a few hundred metres from where
    /// it went silent, not where it is now.
    pub fn on_event_awaiting(
        &self,
        ctx: Option<VehicleContext<'_>>,
        state: &mut DeviceRuleState,
        event: &Event,
        received_at: Timestamp,
        awaiting_fix: bool,
    ) -> Outcome {
        let before = state.clone();
        let previous_base = silence::silence_base(state);
        state.last_seen = Some(state.last_seen.map_or(received_at, |t| t.max(received_at)));
        let Some(ctx) = ctx else {
            return Outcome {
                changed: *state != before,
                ..Outcome::default()
            };
        };
        let mut alerts = Vec::new();
        let mut held = None;
        if state.silent_alerted {
            if ctx.closed() {
                state.silent_alerted = false;
            } else if matches!(event.kind, EventKind::Login | EventKind::Registered)
                || matches!(&event.kind, EventKind::Position(f) if f.buffered)
                || (awaiting_fix
                    && !matches!(&event.kind, EventKind::Position(f) if f.position.is_usable()))
            {
                // Still silent until it says more (see [`REAPPEAR_HOLD`]).
                held = Some(HeldReappearance {
                    silent_since: previous_base,
                    last_seen: before.last_seen,
                    at: received_at,
                });
            } else {
                state.silent_alerted = false;
                alerts.push(reappeared_draft(
                    previous_base,
                    received_at,
                    before.last_seen,
                ));
            }
        }
        if !ctx.closed() {
            geofence::sync_fence(ctx.vehicle.geofence.as_ref(), state);
            match &event.kind {
                EventKind::Position(fix) if !fix.buffered => {
                    // Only a valid fix's clock tells a resend: a device without a fix may
                    // repeat an old time in every frame.
                    let time = fix.position.valid.then_some(fix.position.time);
                    alarm::apply(state, fix.alarms, time, &mut alerts);
                    if let Some(fence) = &ctx.vehicle.geofence {
                        geofence::apply(&self.cfg, fence, state, fix, &mut alerts);
                    }
                }
                EventKind::Position(_)
                | EventKind::Login
                | EventKind::Registered
                | EventKind::CommandAnswer(_) => {}
                EventKind::Heartbeat { alarms } | EventKind::Alarm { alarms } => {
                    alarm::apply(state, *alarms, None, &mut alerts);
                }
            }
        }
        Outcome {
            alerts,
            silence_deadline: silence::deadline(&self.cfg, self.grace_end, &ctx, state),
            changed: state.differs_beyond_progress(before),
            held,
        }
    }

    /// A held `reappeared` whose wait ran out: the login alone ends the silence, without a
    /// distance. Nothing if something else ended it meanwhile.
    pub fn on_hold_expired(
        &self,
        ctx: VehicleContext<'_>,
        state: &mut DeviceRuleState,
        held: HeldReappearance,
    ) -> Outcome {
        if !state.silent_alerted {
            return Outcome::default();
        }
        state.silent_alerted = false;
        let alerts = if ctx.closed() {
            Vec::new()
        } else {
            vec![held.draft()]
        };
        Outcome {
            alerts,
            silence_deadline: silence::deadline(&self.cfg, self.grace_end, &ctx, state),
            changed: true,
            held: None,
        }
    }

    /// The tracker says the device's deadline passed. Raises `silent_overdue` if it still holds
    /// (the deadline is recomputed, so a stale tracker entry is harmless).
    pub fn on_silence_due(
        &self,
        ctx: Option<VehicleContext<'_>>,
        state: &mut DeviceRuleState,
        now: Timestamp,
    ) -> Outcome {
        match ctx {
            Some(ctx) => self.check_silence(&ctx, state, now),
            None => Outcome::default(),
        }
    }

    /// The vehicle's loan changed (status or days past due). A loan turning overdue while the
    /// device is already silent alerts at once (after the startup grace).
    pub fn on_loan_change(
        &self,
        ctx: VehicleContext<'_>,
        state: &mut DeviceRuleState,
        now: Timestamp,
    ) -> Outcome {
        let before = state.clone();
        end_if_closed(&ctx, state);
        let mut out = self.check_silence(&ctx, state, now);
        out.changed |= *state != before;
        out
    }

    /// The device is (still) bound to `ctx.vehicle` after a `PUT`: starts its silence clock if it
    /// is newly registered, and forgets the placement if the fence changed.
    pub fn on_registered(
        &self,
        ctx: VehicleContext<'_>,
        state: &mut DeviceRuleState,
        now: Timestamp,
    ) -> Outcome {
        let before = state.clone();
        if state.registered_at.is_none() {
            state.registered_at = Some(now);
        }
        geofence::sync_fence(ctx.vehicle.geofence.as_ref(), state);
        end_if_closed(&ctx, state);
        let mut out = self.check_silence(&ctx, state, now);
        out.changed |= *state != before;
        out
    }

    /// The device is no longer bound to any vehicle. Keeps only `last_seen`; persist the result
    /// (or delete the state) and clear the tracker entry.
    pub fn on_unregistered(&self, state: &mut DeviceRuleState) -> Outcome {
        let before = state.clone();
        *state = DeviceRuleState {
            last_seen: state.last_seen,
            ..DeviceRuleState::default()
        };
        Outcome {
            changed: *state != before,
            ..Outcome::default()
        }
    }

    fn check_silence(
        &self,
        ctx: &VehicleContext<'_>,
        state: &mut DeviceRuleState,
        now: Timestamp,
    ) -> Outcome {
        let deadline = silence::deadline(&self.cfg, self.grace_end, ctx, state);
        match deadline {
            Some(d) if d <= now => {
                state.silent_alerted = true;
                let base = silence::silence_base(state);
                let after = silence::silence_after(&self.cfg, ctx);
                Outcome {
                    alerts: vec![AlertDraft {
                        kind: AlertType::SilentOverdue,
                        details: json!({
                            "silent_for_s": base.map(|b| now.since(b).max(0) / 1000),
                            "silence_after_s": after.as_secs(),
                            "last_seen": state.last_seen,
                            "device_kind": match ctx.device.kind {
                                DeviceKind::Wired => "wired",
                                DeviceKind::Wireless => "wireless",
                            },
                        }),
                    }],
                    silence_deadline: None,
                    changed: true,
                    held: None,
                }
            }
            d => Outcome {
                silence_deadline: d,
                ..Outcome::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AlarmReport, DeviceId, Fix, Position, Protocol};
    use serde_json::json;

    const H: i64 = 3600 * 1000;
    const M: i64 = 60 * 1000;
    /// The virtual clock starts here (2026-11-22T00:00:00Z).
    const T0: i64 = 1_795_305_600_000;

    fn square() -> serde_json::Value {
        json!({"type": "Polygon", "coordinates": [[[113.9, 22.5], [114.1, 22.5], [114.1, 22.7], [113.9, 22.7], [113.9, 22.5]]]})
    }

    fn vehicle(status: &str, fence: Option<serde_json::Value>) -> Vehicle {
        let mut body = json!({
            "loan": {"id": "L-1", "status": status},
            "devices": [
                {"id": "111", "kind": "wired"},
                {"id": "222", "kind": "wireless"},
                {"id": "333", "kind": "wireless", "silence_after": "72h"}
            ]
        });
        if let Some(f) = fence {
            body["geofence"] = f;
        }
        Vehicle::from_json("V-1", &serde_json::to_vec(&body).unwrap()).unwrap()
    }

    fn live(lon: f64, lat: f64, t: i64) -> EventKind {
        EventKind::Position(Fix::live(Position {
            time: Timestamp(t),
            lat,
            lon,
            valid: true,
            ..Default::default()
        }))
    }

    fn with_fix(k: EventKind, f: impl FnOnce(&mut Fix)) -> EventKind {
        match k {
            EventKind::Position(mut fix) => {
                f(&mut fix);
                EventKind::Position(fix)
            }
            other => other,
        }
    }

    const IN: (f64, f64) = (114.0, 22.6);
    const FAR: (f64, f64) = (114.2, 22.6);
    /// About 31 m east of the east edge: within the 50 m margin.
    const NEAR: (f64, f64) = (114.1003, 22.6);
    /// About 103 m east of the east edge.
    const BEYOND: (f64, f64) = (114.101, 22.6);

    /// One device driven like the engine thread drives it, on a virtual clock.
    struct Sim {
        rules: Rules,
        vehicle: Vehicle,
        id: DeviceId,
        state: DeviceRuleState,
        tracker: SilenceTracker,
        now: i64,
        log: Vec<AlertDraft>,
    }

    impl Sim {
        fn new(vehicle: Vehicle, device: &str) -> Sim {
            Self::started_at(vehicle, device, T0, T0)
        }

        /// Daemon started at `start`, device registered at `reg`.
        fn started_at(vehicle: Vehicle, device: &str, start: i64, reg: i64) -> Sim {
            let mut s = Sim {
                rules: Rules::new(RuleConfig::default(), Timestamp(start)),
                vehicle,
                id: DeviceId::new(device),
                state: DeviceRuleState::default(),
                tracker: SilenceTracker::new(),
                now: reg,
                log: vec![],
            };
            let o = s.reregister();
            let kinds = s.apply(o);
            assert!(kinds.is_empty(), "alert at registration: {kinds:?}");
            s
        }

        fn reregister(&mut self) -> Outcome {
            let ctx = VehicleContext::new(&self.vehicle, &self.id).unwrap();
            self.rules
                .on_registered(ctx, &mut self.state, Timestamp(self.now))
        }

        fn ctx(&self) -> Option<VehicleContext<'_>> {
            VehicleContext::new(&self.vehicle, &self.id)
        }

        fn apply(&mut self, o: Outcome) -> Vec<AlertType> {
            self.tracker.set(&self.id, o.silence_deadline);
            let kinds = o.alerts.iter().map(|a| a.kind).collect();
            self.log.extend(o.alerts);
            kinds
        }

        /// Runs the clock to `t`, firing due silence deadlines on the way.
        fn run_to(&mut self, t: i64) -> Vec<AlertType> {
            let mut out = vec![];
            while let Some(d) = self.tracker.next_deadline() {
                if d.millis() > t {
                    break;
                }
                self.now = self.now.max(d.millis());
                for id in self.tracker.pop_due(Timestamp(self.now)) {
                    assert_eq!(id, self.id);
                    let ctx = VehicleContext::new(&self.vehicle, &id);
                    let o = self
                        .rules
                        .on_silence_due(ctx, &mut self.state, Timestamp(self.now));
                    out.extend(self.apply(o));
                }
            }
            self.now = self.now.max(t);
            out
        }

        fn send(&mut self, kind: EventKind) -> Vec<AlertType> {
            let ev = Event {
                device_id: self.id.clone(),
                protocol: Protocol::Gt06,
                kind,
            };
            let ctx = VehicleContext::new(&self.vehicle, &self.id);
            let o = self
                .rules
                .on_event(ctx, &mut self.state, &ev, Timestamp(self.now));
            self.apply(o)
        }

        fn fix(&mut self, (lon, lat): (f64, f64)) -> Vec<AlertType> {
            self.now += M;
            let t = self.now;
            self.send(live(lon, lat, t))
        }

        fn set_loan(&mut self, status: LoanStatus) -> Vec<AlertType> {
            self.vehicle.loan.status = status;
            let ctx = VehicleContext::new(&self.vehicle, &self.id).unwrap();
            let o = self
                .rules
                .on_loan_change(ctx, &mut self.state, Timestamp(self.now));
            self.apply(o)
        }

        /// Simulates a restart: state through its stored bytes, tracker rebuilt, new start time.
        fn restart(&mut self, at: i64) {
            let bytes = self.state.to_bytes();
            self.state = DeviceRuleState::from_bytes(&bytes).unwrap();
            self.rules = Rules::new(RuleConfig::default(), Timestamp(at));
            self.tracker = SilenceTracker::new();
            self.now = at;
            let d = self.rules.silence_deadline(self.ctx(), &self.state);
            self.tracker.set(&self.id, d);
        }
    }

    use AlertType::*;

    #[test]
    fn first_fix_outside_alerts() {
        let mut s = Sim::new(vehicle("current", Some(square())), "111");
        assert_eq!(s.fix(FAR), vec![GeofenceExit]);
        let d = s.log[0].details["distance_outside_m"].as_f64().unwrap();
        // 0.1 degree of longitude at 22.6 N is about 10,266 m; rounded to 0.1 m.
        assert!((d - 10_266.0).abs() < 10.0, "{d}");
        assert_eq!((d * 10.0).round(), d * 10.0);
        assert_eq!(s.state.placement, FencePlacement::Outside);
    }

    #[test]
    fn excursion_alerts_once_and_returns() {
        let mut s = Sim::new(vehicle("current", Some(square())), "111");
        assert_eq!(s.fix(IN), vec![]);
        assert_eq!(s.state.placement, FencePlacement::Inside);
        assert_eq!(s.fix(NEAR), vec![], "within the margin");
        assert_eq!(s.state.placement, FencePlacement::Inside);
        assert_eq!(s.fix(BEYOND), vec![GeofenceExit]);
        assert_eq!(s.fix(FAR), vec![]);
        assert_eq!(s.fix(BEYOND), vec![]);
        assert_eq!(s.fix(NEAR), vec![], "within the margin keeps Outside");
        assert_eq!(s.state.placement, FencePlacement::Outside);
        assert_eq!(s.fix(IN), vec![GeofenceReturn]);
        assert_eq!(s.fix(IN), vec![]);
        assert_eq!(s.fix(FAR), vec![GeofenceExit], "a new excursion");
    }

    #[test]
    fn within_margin_while_unknown_stays_unknown() {
        let mut s = Sim::new(vehicle("current", Some(square())), "111");
        assert_eq!(s.fix(NEAR), vec![]);
        assert_eq!(s.state.placement, FencePlacement::Unknown);
        assert_eq!(s.fix(BEYOND), vec![GeofenceExit]);
    }

    #[test]
    fn unusable_fixes_never_count() {
        let mut s = Sim::new(vehicle("current", Some(square())), "111");
        s.fix(IN);
        s.now += M;
        let invalid = with_fix(live(FAR.0, FAR.1, s.now), |f| f.position.valid = false);
        assert_eq!(s.send(invalid), vec![]);
        let null_island = live(0.0, 0.0, s.now);
        assert_eq!(s.send(null_island), vec![]);
        assert_eq!(s.send(EventKind::Login), vec![]);
        assert_eq!(
            s.send(EventKind::Heartbeat {
                alarms: AlarmReport::NONE
            }),
            vec![]
        );
        assert_eq!(s.state.placement, FencePlacement::Inside);
    }

    #[test]
    fn buffered_fixes_do_not_move_the_placement() {
        let mut s = Sim::new(vehicle("current", Some(square())), "111");
        s.fix(IN);
        s.now += M;
        let old = with_fix(live(FAR.0, FAR.1, s.now - H), |f| f.buffered = true);
        assert_eq!(s.send(old), vec![]);
        assert_eq!(s.state.placement, FencePlacement::Inside);
        // The next live fix outside still alerts: the buffered one did not swallow it.
        assert_eq!(s.fix(FAR), vec![GeofenceExit]);
        // A buffered fix inside does not fake a return either.
        let back = with_fix(live(IN.0, IN.1, s.now), |f| f.buffered = true);
        assert_eq!(s.send(back), vec![]);
        assert_eq!(s.state.placement, FencePlacement::Outside);
        // Buffered alarms do not fire either.
        let cut = with_fix(live(IN.0, IN.1, s.now), |f| {
            f.buffered = true;
            f.alarms = AlarmReport::raised(Alarms::POWER_CUT)
        });
        assert_eq!(s.send(cut), vec![]);
    }

    #[test]
    fn late_live_fix_older_than_the_placement_is_ignored() {
        let mut s = Sim::new(vehicle("current", Some(square())), "111");
        s.fix(IN);
        let stale = live(FAR.0, FAR.1, s.now - 10 * M);
        assert_eq!(s.send(stale), vec![]);
        assert_eq!(s.state.placement, FencePlacement::Inside);
    }

    #[test]
    fn circles_and_multipolygons() {
        let circle = json!({"type": "Circle", "center": [114.0, 22.6], "radius_m": 1000});
        let mut s = Sim::new(vehicle("current", Some(circle)), "111");
        assert_eq!(s.fix((114.0, 22.605)), vec![]); // ~556 m from the centre
        assert_eq!(s.fix((114.0, 22.6093)), vec![]); // ~1034 m: within the margin
        assert_eq!(s.fix((114.0, 22.611)), vec![GeofenceExit]); // ~1223 m
        let d = s.log[0].details["distance_outside_m"].as_f64().unwrap();
        assert!((d - 223.1).abs() < 1.0, "{d}");
        // Further out, still the same excursion: a circle always measures, yet alerts once.
        assert_eq!(s.fix((114.0, 22.62)), vec![]);
        assert_eq!(s.fix((114.0, 22.7)), vec![]);
        assert_eq!(s.fix((114.0, 22.6)), vec![GeofenceReturn]);

        let multi = json!({"type": "MultiPolygon", "coordinates": [
            [[[113.9, 22.5], [114.0, 22.5], [114.0, 22.6], [113.9, 22.6], [113.9, 22.5]]],
            [[[115.0, 23.0], [115.1, 23.0], [115.1, 23.1], [115.0, 23.1], [115.0, 23.0]]]
        ]});
        let mut s = Sim::new(vehicle("current", Some(multi)), "111");
        assert_eq!(s.fix((113.95, 22.55)), vec![]);
        assert_eq!(
            s.fix((115.05, 23.05)),
            vec![],
            "the other part is inside too"
        );
        assert_eq!(s.fix((114.5, 22.8)), vec![GeofenceExit]);
        assert_eq!(s.fix((115.05, 23.05)), vec![GeofenceReturn]);
    }

    #[test]
    fn no_fence_no_geofence_alerts() {
        let mut s = Sim::new(vehicle("current", None), "111");
        assert_eq!(s.fix(FAR), vec![]);
        assert_eq!(s.state.placement, FencePlacement::Unknown);
    }

    #[test]
    fn replacing_the_fence_restarts_placement() {
        let mut s = Sim::new(vehicle("current", Some(square())), "111");
        assert_eq!(s.fix(FAR), vec![GeofenceExit]);
        assert_eq!(s.fix(FAR), vec![]);
        // Same fence re-PUT: nothing changes.
        s.vehicle = vehicle("current", Some(square()));
        let o = s.reregister();
        assert!(!o.changed);
        assert_eq!(s.state.placement, FencePlacement::Outside);
        // A new fence the car is also outside of: one new alert.
        s.vehicle = vehicle(
            "current",
            Some(json!({"type": "Circle", "center": [114.0, 22.6], "radius_m": 500})),
        );
        let o = s.reregister();
        assert!(o.changed);
        assert_eq!(s.state.placement, FencePlacement::Unknown);
        assert_eq!(s.fix(FAR), vec![GeofenceExit]);
    }

    fn alarm(report: AlarmReport) -> EventKind {
        EventKind::Alarm { alarms: report }
    }

    #[test]
    fn power_cut_edges() {
        let mut s = Sim::new(vehicle("current", None), "111");
        let cut = AlarmReport::raised(Alarms::POWER_CUT);
        let ok = AlarmReport::NONE.with(Alarms::POWER_CUT, false);
        assert_eq!(s.send(alarm(cut)), vec![PowerCut]);
        assert_eq!(s.send(alarm(cut)), vec![], "repeated frames alert once");
        let fix = with_fix(live(IN.0, IN.1, s.now), |f| f.alarms = cut);
        assert_eq!(s.send(fix), vec![]);
        // A frame silent about power leaves it cut.
        assert_eq!(s.send(alarm(AlarmReport::raised(Alarms::SOS))), vec![]);
        assert!(s.state.alarms_alerted.contains(Alarms::POWER_CUT));
        assert_eq!(
            s.send(EventKind::Heartbeat { alarms: ok }),
            vec![PowerRestored]
        );
        assert_eq!(s.send(EventKind::Heartbeat { alarms: ok }), vec![]);
        assert_eq!(
            s.send(alarm(cut)),
            vec![PowerCut],
            "a later cut alerts again"
        );
    }

    /// MQTT JSON alarms are events (protocols.md E.4): each one listed alerts, the next one too,
    /// and nothing ends a condition (no `power_restored`).
    #[test]
    fn alarm_events_alert_each_time_and_latch_nothing() {
        let mut s = Sim::new(vehicle("current", None), "333");
        let cut = AlarmReport::occurred(Alarms::POWER_CUT);
        let fix = |s: &mut Sim, report| {
            s.now += M;
            with_fix(live(IN.0, IN.1, s.now), |f| f.alarms = report)
        };
        let k = fix(&mut s, cut);
        assert_eq!(s.send(k), vec![PowerCut]);
        let k = fix(&mut s, AlarmReport::NONE);
        assert_eq!(s.send(k), vec![]);
        let k = fix(&mut s, cut);
        assert_eq!(s.send(k), vec![PowerCut], "the next cut alerts again");
        assert!(!s.state.alarms_alerted.contains(Alarms::POWER_CUT));
    }

    /// A device whose acknowledgement was lost sends the same frame again: the same events at
    /// the same device time are that one alarm (protocols.md C.6), also after a restart; the
    /// same event at a later time is a new one.
    #[test]
    fn an_alarm_frame_sent_again_alerts_once() {
        use crate::protocol::gt06::alarm_report;
        let mut s = Sim::new(vehicle("current", None), "111");
        let at = |t: i64, report| with_fix(live(IN.0, IN.1, t), |f| f.alarms = report);
        let tamper = alarm_report(0x46, Some(0x13));
        let t1 = s.now;
        assert_eq!(s.send(at(t1, tamper)), vec![Tamper]);
        s.now += 30_000;
        assert_eq!(s.send(at(t1, tamper)), vec![], "the same frame again");
        s.restart(s.now + 60_000);
        assert_eq!(s.send(at(t1, tamper)), vec![], "again after a restart");
        // An unrelated fix between does not make the resent frame new.
        assert_eq!(s.send(at(t1 + M, AlarmReport::NONE)), vec![]);
        assert_eq!(s.send(at(t1, tamper)), vec![]);
        // Two events in one frame: each is told once; one of them later alerts again.
        let both = AlarmReport::occurred(Alarms::TAMPER.union(Alarms::POWER_CUT));
        let t2 = t1 + 2 * M;
        assert_eq!(s.send(at(t2, both)), vec![PowerCut, Tamper]);
        assert_eq!(s.send(at(t2, both)), vec![]);
        assert_eq!(s.send(at(t2 + 1000, tamper)), vec![Tamper]);
        // Frames whose acks were lost, sent again in turn: each is the alarm it was.
        let cut = AlarmReport::occurred(Alarms::POWER_CUT);
        let (t3, t4) = (t2 + 2 * M, t2 + 3 * M);
        assert_eq!(s.send(at(t3, tamper)), vec![Tamper]);
        assert_eq!(s.send(at(t4, cut)), vec![PowerCut]);
        assert_eq!(s.send(at(t3, tamper)), vec![]);
        assert_eq!(s.send(at(t4, cut)), vec![]);
        // Without a valid fix's time (an alarm with no fix, or a fix without position that
        // may repeat an old time) nothing tells a resend apart: each alerts.
        assert_eq!(s.send(alarm(tamper)), vec![Tamper]);
        assert_eq!(s.send(alarm(tamper)), vec![Tamper]);
        let stale = |t: i64| {
            with_fix(live(IN.0, IN.1, t), |f| {
                f.alarms = tamper;
                f.position.valid = false;
            })
        };
        assert_eq!(s.send(stale(t1)), vec![Tamper]);
        assert_eq!(s.send(stale(t1)), vec![Tamper]);
    }

    /// GT06 alarm codes are events (protocols.md §A.5): each tamper code alerts, the next one
    /// too; a power cut given both as a code and as terminal-info state alerts once, and the
    /// state's end restores it.
    #[test]
    fn gt06_alarm_codes_alert_each_time_power_cut_state_once() {
        use crate::protocol::gt06::alarm_report;
        let mut s = Sim::new(vehicle("current", None), "111");
        let tamper = alarm_report(0x46, Some(0x13));
        assert_eq!(s.send(alarm(tamper)), vec![Tamper]);
        assert_eq!(
            s.send(alarm(tamper)),
            vec![Tamper],
            "the next tamper alerts"
        );
        let heartbeat = |ti| EventKind::Heartbeat {
            alarms: alarm_report(ti, None),
        };
        assert_eq!(
            s.send(alarm(alarm_report(0x50, Some(0x02)))),
            vec![PowerCut]
        );
        assert_eq!(s.send(heartbeat(0x50)), vec![], "the cut state repeated");
        assert_eq!(
            s.send(alarm(alarm_report(0x50, Some(0x02)))),
            vec![],
            "the code again while the state says the same cut goes on"
        );
        assert_eq!(s.send(heartbeat(0x46)), vec![PowerRestored]);
        assert_eq!(s.send(alarm(tamper)), vec![Tamper]);
        // A cut the heartbeat told of first: its alarm packet is that same cut.
        assert_eq!(s.send(heartbeat(0x50)), vec![PowerCut]);
        assert_eq!(s.send(alarm(alarm_report(0x50, Some(0x02)))), vec![]);
    }

    #[test]
    fn tamper_edges() {
        let mut s = Sim::new(vehicle("overdue", None), "222");
        let both = AlarmReport::raised(Alarms::TAMPER.union(Alarms::POWER_CUT));
        assert_eq!(s.send(alarm(both)), vec![PowerCut, Tamper]);
        assert_eq!(s.send(alarm(AlarmReport::raised(Alarms::TAMPER))), vec![]);
        let off = AlarmReport::NONE.with(Alarms::TAMPER, false);
        assert_eq!(
            s.send(alarm(off)),
            vec![],
            "no alert type for tamper cleared"
        );
        assert_eq!(
            s.send(alarm(AlarmReport::raised(Alarms::TAMPER))),
            vec![Tamper]
        );
    }

    #[test]
    fn wired_silence_default_and_reappearance() {
        let mut s = Sim::new(vehicle("overdue", Some(square())), "111");
        s.fix(IN); // heard at T0 + 1 min
        let heard = s.now;
        assert_eq!(s.tracker.deadline(&s.id), Some(Timestamp(heard + 6 * H)));
        assert_eq!(s.run_to(heard + 6 * H - 1000), vec![]);
        assert_eq!(s.run_to(heard + 6 * H), vec![SilentOverdue]);
        let d = &s.log.last().unwrap().details;
        assert_eq!(d["silent_for_s"], json!(6 * 3600));
        assert_eq!(d["silence_after_s"], json!(6 * 3600));
        assert_eq!(d["device_kind"], json!("wired"));
        // One alert per silence.
        assert_eq!(s.run_to(heard + 100 * H), vec![]);
        assert!(s.tracker.is_empty());
        // Any event ends it: a heartbeat.
        assert_eq!(
            s.send(EventKind::Heartbeat {
                alarms: AlarmReport::NONE
            }),
            vec![Reappeared]
        );
        assert_eq!(
            s.log.last().unwrap().details["silent_for_s"],
            json!(100 * 3600)
        );
        assert_eq!(s.send(EventKind::Login), vec![]);
        // Armed again for the next silence.
        let again = s.now;
        assert_eq!(s.run_to(again + 6 * H), vec![SilentOverdue]);
    }

    #[test]
    fn wireless_default_and_override() {
        let mut s = Sim::new(vehicle("overdue", None), "222");
        s.fix(IN);
        let heard = s.now;
        assert_eq!(s.run_to(heard + 47 * H), vec![]);
        assert_eq!(s.run_to(heard + 48 * H), vec![SilentOverdue]);
        assert_eq!(s.log[0].details["device_kind"], json!("wireless"));

        let mut s = Sim::new(vehicle("overdue", None), "333");
        s.fix(IN);
        let heard = s.now;
        assert_eq!(s.run_to(heard + 71 * H), vec![]);
        assert_eq!(s.run_to(heard + 72 * H), vec![SilentOverdue]);
    }

    #[test]
    fn never_heard_from_counts_from_registration() {
        let reg = T0 + 2 * H;
        let mut s = Sim::started_at(vehicle("overdue", None), "111", T0, reg);
        assert_eq!(s.run_to(reg + 6 * H - 1000), vec![]);
        assert_eq!(s.run_to(reg + 6 * H), vec![SilentOverdue]);
        assert_eq!(s.log[0].details["last_seen"], json!(null));
        // Re-PUT of the same vehicle does not restart the clock or repeat the alert.
        let o = s.reregister();
        assert_eq!(s.apply(o), vec![]);
        assert_eq!(s.state.registered_at, Some(Timestamp(reg)));
    }

    #[test]
    fn loan_turning_overdue_while_silent_alerts_at_once() {
        let mut s = Sim::new(vehicle("current", None), "111");
        s.fix(IN);
        assert_eq!(
            s.tracker.deadline(&s.id),
            None,
            "current loans are not tracked"
        );
        assert_eq!(
            s.run_to(s.now + 30 * H),
            vec![],
            "current loans: no silence alert"
        );
        assert_eq!(s.set_loan(LoanStatus::Overdue), vec![SilentOverdue]);
        assert_eq!(s.set_loan(LoanStatus::Overdue), vec![]);
        // Loan turning overdue before the threshold only arms the deadline.
        let mut s = Sim::new(vehicle("current", None), "111");
        s.fix(IN);
        let heard = s.now;
        s.now += H;
        assert_eq!(s.set_loan(LoanStatus::Overdue), vec![]);
        assert_eq!(s.tracker.deadline(&s.id), Some(Timestamp(heard + 6 * H)));
        // And back to current disarms it.
        assert_eq!(s.set_loan(LoanStatus::Current), vec![]);
        assert_eq!(s.tracker.deadline(&s.id), None);
    }

    #[test]
    fn reappearance_is_reported_after_the_loan_is_cured() {
        let mut s = Sim::new(vehicle("overdue", None), "222");
        s.fix(IN);
        assert_eq!(s.run_to(s.now + 48 * H), vec![SilentOverdue]);
        assert_eq!(s.set_loan(LoanStatus::Current), vec![]);
        assert_eq!(
            s.set_loan(LoanStatus::Overdue),
            vec![],
            "still the same silence"
        );
        assert_eq!(s.set_loan(LoanStatus::Current), vec![]);
        assert_eq!(s.fix(IN), vec![Reappeared]);
        assert_eq!(s.tracker.deadline(&s.id), None);
    }

    #[test]
    fn closed_loans_are_quiet() {
        let mut s = Sim::new(vehicle("closed", Some(square())), "111");
        assert_eq!(s.fix(FAR), vec![]);
        assert_eq!(
            s.send(alarm(AlarmReport::raised(Alarms::POWER_CUT))),
            vec![]
        );
        assert_eq!(s.run_to(s.now + 1000 * H), vec![]);
        assert!(s.tracker.is_empty());
        // A silent device whose loan closes does not announce its reappearance.
        let mut s = Sim::new(vehicle("overdue", None), "111");
        s.fix(IN);
        assert_eq!(s.run_to(s.now + 7 * H), vec![SilentOverdue]);
        assert_eq!(s.set_loan(LoanStatus::Closed), vec![]);
        assert_eq!(s.fix(IN), vec![]);
        assert!(!s.state.silent_alerted);
    }

    #[test]
    fn geofence_and_alarms_fire_for_current_loans() {
        let mut s = Sim::new(vehicle("current", Some(square())), "111");
        assert_eq!(s.fix(FAR), vec![GeofenceExit]);
        assert_eq!(
            s.send(alarm(AlarmReport::raised(Alarms::TAMPER))),
            vec![Tamper]
        );
    }

    #[test]
    fn startup_grace_defers_and_never_bursts() {
        // Heard at T0, daemon down from T0 + 1h to T0 + 30h.
        let mut s = Sim::new(vehicle("overdue", None), "111");
        s.fix(IN);
        s.run_to(T0 + H);
        let start = T0 + 30 * H;
        s.restart(start);
        // The deadline fell in the downtime: it waits for the end of the grace.
        assert_eq!(s.tracker.deadline(&s.id), Some(Timestamp(start + 10 * M)));
        assert_eq!(s.run_to(start + 10 * M - 1000), vec![]);
        // The device reconnects within the grace: nothing at all.
        s.now = start + 5 * M;
        assert_eq!(s.send(EventKind::Login), vec![]);
        assert_eq!(s.run_to(start + 5 * H), vec![]);
        assert_eq!(
            s.tracker.deadline(&s.id),
            Some(Timestamp(start + 5 * M + 6 * H))
        );

        // One that stays silent alerts once, at the end of the grace.
        let mut s = Sim::new(vehicle("overdue", None), "111");
        s.fix(IN);
        s.restart(T0 + 30 * H);
        assert_eq!(s.run_to(T0 + 30 * H + 10 * M), vec![SilentOverdue]);
        assert_eq!(s.now, T0 + 30 * H + 10 * M);

        // A loan turning overdue during the grace waits for its end too.
        let mut s = Sim::new(vehicle("current", None), "111");
        s.fix(IN);
        s.restart(T0 + 30 * H);
        s.now += M;
        assert_eq!(s.set_loan(LoanStatus::Overdue), vec![]);
        assert_eq!(s.run_to(T0 + 30 * H + 10 * M), vec![SilentOverdue]);
    }

    #[test]
    fn restart_neither_repeats_nor_forgets() {
        let mut s = Sim::new(vehicle("overdue", Some(square())), "111");
        assert_eq!(s.fix(FAR), vec![GeofenceExit]);
        assert_eq!(
            s.send(alarm(AlarmReport::raised(Alarms::POWER_CUT))),
            vec![PowerCut]
        );
        assert_eq!(s.run_to(s.now + 7 * H), vec![SilentOverdue]);
        let now = s.now;
        s.restart(now);
        // Nothing repeats...
        assert_eq!(s.run_to(now + 100 * H), vec![]);
        // ...and nothing is forgotten: each outstanding condition ends with its alert.
        assert_eq!(s.fix(FAR), vec![Reappeared]);
        assert_eq!(
            s.send(alarm(AlarmReport::raised(Alarms::POWER_CUT))),
            vec![]
        );
        let ok = AlarmReport::NONE.with(Alarms::POWER_CUT, false);
        assert_eq!(s.send(alarm(ok)), vec![PowerRestored]);
        assert_eq!(s.fix(IN), vec![GeofenceReturn]);

        // A silence in progress survives a restart: it fires at its deadline (no grace needed).
        let mut s = Sim::new(vehicle("overdue", None), "111");
        s.fix(IN);
        let heard = s.now;
        s.restart(heard + 2 * H);
        assert_eq!(s.run_to(heard + 6 * H), vec![SilentOverdue]);
    }

    #[test]
    fn state_encoding_is_compact_and_round_trips() {
        let st = DeviceRuleState {
            placement: FencePlacement::Outside,
            fence_tag: u64::MAX,
            fence_fix_time: Some(Timestamp(T0)),
            silent_alerted: true,
            alarms_alerted: Alarms::POWER_CUT.union(Alarms::TAMPER),
            last_seen: Some(Timestamp(T0 + 1)),
            registered_at: Some(Timestamp(T0 - 1)),
            power_cut_event_at: None,
            tamper_event_at: Some(Timestamp(T0 - 2)),
        };
        let b = st.to_bytes();
        assert!(b.len() <= 56, "{} bytes", b.len());
        assert_eq!(DeviceRuleState::from_bytes(&b).unwrap(), st);
        assert!(DeviceRuleState::from_bytes(&b[..3]).is_err());
        // A state without any alarm event costs two bytes more than the layout before.
        let plain = DeviceRuleState {
            power_cut_event_at: None,
            tamper_event_at: None,
            ..st.clone()
        };
        let old = DeviceRuleStateV1 {
            placement: plain.placement,
            fence_tag: plain.fence_tag,
            fence_fix_time: plain.fence_fix_time,
            silent_alerted: plain.silent_alerted,
            alarms_alerted: plain.alarms_alerted,
            last_seen: plain.last_seen,
            registered_at: plain.registered_at,
        };
        let old = crate::encode::to_vec(&old).unwrap();
        assert_eq!(plain.to_bytes().len(), old.len() + 2);
        assert_eq!(
            DeviceRuleState::from_bytes(&old).unwrap(),
            plain,
            "a state written before the alarm events were kept still reads"
        );
        let j = serde_json::to_value(&st).unwrap();
        assert_eq!(j["placement"], json!("outside"));
    }

    #[test]
    fn unregistered_devices_get_no_rules() {
        let rules = Rules::new(RuleConfig::default(), Timestamp(T0));
        let mut st = DeviceRuleState::default();
        let ev = Event {
            device_id: DeviceId::new("999"),
            protocol: Protocol::Json,
            kind: EventKind::Alarm {
                alarms: AlarmReport::raised(Alarms::POWER_CUT),
            },
        };
        let o = rules.on_event(None, &mut st, &ev, Timestamp(T0));
        assert!(o.alerts.is_empty() && o.silence_deadline.is_none());
        assert_eq!(st.last_seen, Some(Timestamp(T0)));
        assert!(o.changed);
        // Unregistering keeps only last_seen.
        let mut s = Sim::new(vehicle("overdue", Some(square())), "111");
        s.fix(FAR);
        let o = s.rules.on_unregistered(&mut s.state);
        assert!(o.changed && o.silence_deadline.is_none());
        assert_eq!(
            s.state,
            DeviceRuleState {
                last_seen: Some(Timestamp(s.now)),
                ..Default::default()
            }
        );
    }

    #[test]
    fn rule_config_table() {
        let c: RuleConfig = toml::from_str("").unwrap();
        assert_eq!(c, RuleConfig::default());
        let c: RuleConfig = toml::from_str(
            "silence_after = \"2h\"\nsilence_after_wireless = \"3d\"\ngeofence_margin_m = 25\nstartup_grace = \"1m\"",
        )
        .unwrap();
        assert_eq!(c.silence_after, Duration::from_secs(7200));
        assert_eq!(c.silence_after_wireless, Duration::from_secs(3 * 86400));
        assert_eq!(c.geofence_margin_m, 25.0);
        assert_eq!(c.startup_grace, Duration::from_secs(60));
        assert!(toml::from_str::<RuleConfig>("silence = \"2h\"").is_err());
        assert!(toml::from_str::<RuleConfig>("silence_after = \"soon\"").is_err());
        let bad = RuleConfig {
            geofence_margin_m: -1.0,
            ..Default::default()
        };
        assert_eq!(bad.validate(), Err(RuleConfigError::BadMargin(-1.0)));
        assert!(RuleConfig::default().validate().is_ok());
    }
}
