//! Time: instants, the injectable clock, civil dates and UTC offsets, in one place.
//!
//! Decoders build instants with arithmetic only (no calendar library on the hot path); rules and
//! the engine read the time only through a [`Clock`], so that `replay` and tests run hours of
//! silence in milliseconds.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The time source of the engine, the outbox and the sessions (GT06 0x8A replies): wall time in
/// the daemon, virtual time in replay and tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// Tells a step of the host clock (NTP correcting a wrong clock, a `date -s`, a host resumed
/// from suspend) from its run, by reading it against the monotonic clock. Only the daemon's
/// engine watches: a virtual clock jumps on purpose.
#[derive(Debug)]
pub struct StepWatch {
    last: (Timestamp, std::time::Instant),
}

impl StepWatch {
    /// What counts as a step: far more than any slew (NTP slews a clock by at most half a
    /// millisecond a second) or a reading's lateness, and less than anything that would move a
    /// rule.
    pub const STEP_MS: i64 = 2_000;

    pub fn new(now: Timestamp) -> StepWatch {
        StepWatch {
            last: (now, std::time::Instant::now()),
        }
    }

    /// Reads the host clock at `now`: how far it moved beyond (or, negative, short of) the
    /// monotonic clock since the last reading, in milliseconds, when that is a step.
    pub fn observe(&mut self, now: Timestamp) -> Option<i64> {
        let at = (now, std::time::Instant::now());
        let step = Self::step(self.last, at);
        self.last = at;
        step
    }

    fn step(
        before: (Timestamp, std::time::Instant),
        after: (Timestamp, std::time::Instant),
    ) -> Option<i64> {
        let wall = after.0.millis().saturating_sub(before.0.millis());
        let mono = i64::try_from(after.1.saturating_duration_since(before.1).as_millis())
            .unwrap_or(i64::MAX);
        let d = wall.saturating_sub(mono);
        (d.abs() >= Self::STEP_MS).then_some(d)
    }
}

/// How far a time the engine keeps moves with a step of the host clock of `step_ms` (0 at a
/// start, where the step is not known), never past `now`: what keeps a duration counted from it
/// the time the daemon watched, and brings a time left ahead of the clock back to it.
pub fn step_shift(t: Timestamp, step_ms: i64, now: Timestamp) -> i64 {
    step_ms.min(now.since(t))
}

/// A time `t` read from the host clock, given the last step of it: `step_ms` taken in when the
/// clock read `stepped_at`. A time read before the step (a batch in flight while it happened)
/// comes back in the clock after it; one read after it is unchanged. The two lie on either side
/// of half the step, which is at least [`StepWatch::STEP_MS`].
pub fn across_step(t: Timestamp, stepped_at: Timestamp, step_ms: i64) -> Timestamp {
    let half = stepped_at.add_millis(-step_ms / 2);
    let before = if step_ms > 0 { t < half } else { t > half };
    if before {
        t.add_millis(step_ms)
    } else {
        t
    }
}

/// A UTC instant in milliseconds since the Unix epoch. Serialises as RFC 3339.
///
/// Kept as a plain integer so that decoders build it with arithmetic only (no calendar library on
/// the hot path) and so that it orders, hashes and stores as eight bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn from_secs(s: i64) -> Self {
        Timestamp(s * 1000)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Wall-clock now.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }

    /// A civil date and time (treated as UTC) to a timestamp. `None` when a field is out of range,
    /// so that decoders reject garbage dates instead of inventing instants.
    pub fn from_civil(year: i32, month: u8, day: u8, hour: u8, min: u8, sec: u8) -> Option<Self> {
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour as i64 * 3600 + min as i64 * 60 + sec as i64;
        Some(Timestamp(secs * 1000))
    }

    pub fn add_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: std::time::Duration) -> Self {
        self.add_millis(d.as_millis().min(i64::MAX as u128) as i64)
    }

    /// `d` before this time (a retention counted back from now), saturating.
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, d: std::time::Duration) -> Self {
        self.add_millis(-(d.as_millis().min(i64::MAX as u128) as i64))
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t: jiff::Timestamp = s.parse().ok()?;
        Some(Timestamp(t.as_millisecond()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.to_jiff();
        if self.0.rem_euclid(1000) == 0 {
            write!(f, "{}", t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            write!(f, "{}", t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// RFC 3339 in human-readable formats (JSON, TOML); eight bytes in binary ones (the store).
impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return i64::deserialize(d).map(Timestamp);
        }
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }
}

/// Documented in the API description as an RFC 3339 date-time string.
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y as i64 - 1 } else { y as i64 };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date (proleptic Gregorian) from days since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses a UTC offset such as `"+08:00"`, `"-03:30"` or `"0"` into seconds.
pub fn parse_utc_offset(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if t == "0" || t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(format!("{s:?} is not an offset like \"+08:00\"")),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let h: i32 = h.parse().map_err(|_| format!("{s:?}: bad hours"))?;
    let m: i32 = m.parse().map_err(|_| format!("{s:?}: bad minutes"))?;
    if h > 14 || m > 59 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_either_way_is_told_from_a_slew() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let w0 = Timestamp::from_secs(1_800_000_000);
        let after = |wall_ms: i64, mono_ms: u64| {
            (w0.add_millis(wall_ms), t0 + Duration::from_millis(mono_ms))
        };
        let step = |a| StepWatch::step((w0, t0), a);
        assert_eq!(step(after(5_000, 5_000)), None);
        // NTP's fastest slew over 5 s, and a reading a second late: no step.
        assert_eq!(step(after(5_003, 5_000)), None);
        assert_eq!(step(after(6_000, 6_000)), None);
        assert_eq!(
            step(after(400 * 86_400_000 + 5_000, 5_000)),
            Some(400 * 86_400_000)
        );
        assert_eq!(step(after(-3_600_000 + 5_000, 5_000)), Some(-3_600_000));
        assert_eq!(step(after(7_500, 5_000)), Some(2_500));
        // A watch reads against its own last reading.
        let mut w = StepWatch::new(Timestamp::now());
        assert_eq!(w.observe(Timestamp::now()), None);
        assert_eq!(
            w.observe(Timestamp::now().add_millis(60_000))
                .map(|ms| ms / 1000),
            Some(60)
        );
        assert_eq!(w.observe(Timestamp::now().add_millis(60_000)), None);
    }

    /// A time read before a step comes back in the clock after it; one read after it stays.
    #[test]
    fn times_read_across_a_step_land_in_the_clock_after_it() {
        let at = Timestamp::from_secs(1_800_000_000);
        let day = 86_400_000;
        // Forward a day: read a second before the step, and a second after it.
        assert_eq!(
            across_step(at.add_millis(-day - 1000), at, day),
            at.add_millis(-1000)
        );
        assert_eq!(
            across_step(at.add_millis(1000), at, day),
            at.add_millis(1000)
        );
        // Back a year: read a second before it (a year ahead), and right after it.
        let year = 365 * day;
        assert_eq!(
            across_step(at.add_millis(year - 1000), at, -year),
            at.add_millis(-1000)
        );
        assert_eq!(across_step(at, at, -year), at);
        // The smallest step: two seconds.
        assert_eq!(across_step(at.add_millis(-2000), at, 2000), at);
        assert_eq!(
            across_step(at.add_millis(-500), at, 2000),
            at.add_millis(-500)
        );
    }

    #[test]
    fn civil_round_trips() {
        for days in [-719_468, -1, 0, 1, 10_957, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y as i32, m, d), days, "{days}");
        }
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+08:00").unwrap(), 28_800);
        assert_eq!(parse_utc_offset("-03:30").unwrap(), -12_600);
        assert_eq!(parse_utc_offset("0").unwrap(), 0);
        assert!(parse_utc_offset("8").is_err());
        assert!(parse_utc_offset("+15:00").is_err());
    }
}
