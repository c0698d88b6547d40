//! Night: 21:00 to 07:00 local time, where the car sleeps.
//!
//! Each night's bounds are converted from local wall time to instants in the zone, so a night
//! across a DST change lasts what it really lasted (9 or 11 hours), and a stay across midnight is
//! split exactly.

use crate::time::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

const NIGHT_START_H: i8 = 21;
const NIGHT_END_H: i8 = 7;

/// Milliseconds of `[since, until)` that fall between 21:00 and 07:00 local time in `tz`.
pub fn night_ms(since: Timestamp, until: Timestamp, tz: &TimeZone) -> i64 {
    let (since, until) = (clamp(since), clamp(until));
    if until <= since {
        return 0;
    }
    // The night that may cover `since` began on the local day before it.
    let Some(mut day) = tz.to_datetime(since.to_jiff()).date().yesterday().ok() else {
        return 0;
    };
    let mut total = 0i64;
    loop {
        let (Some(start), Some(end)) = (
            local(tz, day, NIGHT_START_H),
            day.tomorrow().ok().and_then(|d| local(tz, d, NIGHT_END_H)),
        ) else {
            return total;
        };
        if start >= until.millis() {
            return total;
        }
        total += (end.min(until.millis()) - start.max(since.millis())).max(0);
        match day.tomorrow() {
            Ok(d) => day = d,
            Err(_) => return total,
        }
    }
}

/// Into the range of instants the calendar knows (years -9999 to 9999).
fn clamp(t: Timestamp) -> Timestamp {
    let (lo, hi) = (
        jiff::Timestamp::MIN.as_millisecond(),
        jiff::Timestamp::MAX.as_millisecond(),
    );
    Timestamp(t.millis().clamp(lo, hi))
}

/// `hour`:00 local on `day`, in ms since the epoch; a time skipped by DST maps to the instant
/// after the gap, a repeated one to its first occurrence.
fn local(tz: &TimeZone, day: Date, hour: i8) -> Option<i64> {
    let dt = day.at(hour, 0, 0, 0);
    let t = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
    Some(t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn utc(y: i32, mo: u8, d: u8, h: u8, mi: u8) -> Timestamp {
        Timestamp::from_civil(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn the_tz_database_is_there_on_any_host() {
        assert!(TimeZone::get("Asia/Shanghai").is_ok());
        assert!(TimeZone::get("UTC").is_ok());
        assert!(TimeZone::get("Europe/Berlin").is_ok());
        // The copy compiled in, used where the host has no zone files or only some.
        let bundled = jiff::tz::TimeZoneDatabase::bundled();
        for name in ["Asia/Shanghai", "UTC"] {
            assert!(bundled.get(name).is_ok(), "{name}");
            assert!(crate::places::time_zone(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn a_stay_across_midnight_in_shanghai_is_split_exactly() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        // 19:30 local on 2 Dec to 08:15 local on 3 Dec: night 21:00-07:00 = 10 h of 12.75 h.
        let since = utc(2026, 12, 2, 11, 30);
        let until = utc(2026, 12, 3, 0, 15);
        assert_eq!(night_ms(since, until, &tz), 10 * H);
        // 06:00 to 22:00 local the same day: 1 h in the morning, 1 h in the evening.
        let since = utc(2026, 12, 2, 22, 0);
        let until = utc(2026, 12, 3, 14, 0);
        assert_eq!(night_ms(since, until, &tz), 2 * H);
        // All inside one day's daytime.
        assert_eq!(
            night_ms(utc(2026, 12, 3, 2, 0), utc(2026, 12, 3, 9, 0), &tz),
            0
        );
    }

    #[test]
    fn several_days_add_up() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        // Three full local days from local midnight: 3 * 10 h.
        let since = utc(2026, 12, 1, 16, 0);
        let until = utc(2026, 12, 4, 16, 0);
        assert_eq!(night_ms(since, until, &tz), 30 * H);
    }

    #[test]
    fn a_night_across_a_dst_change_lasts_what_it_lasted() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        // 28-29 March 2026: clocks go from 02:00 to 03:00 CET -> CEST. 21:00 CET = 20:00 UTC,
        // 07:00 CEST = 05:00 UTC: 9 hours.
        let since = utc(2026, 3, 28, 12, 0);
        let until = utc(2026, 3, 29, 12, 0);
        assert_eq!(night_ms(since, until, &tz), 9 * H);
        // 24-25 October 2026: back from CEST to CET, 11 hours.
        let since = utc(2026, 10, 24, 12, 0);
        let until = utc(2026, 10, 25, 12, 0);
        assert_eq!(night_ms(since, until, &tz), 11 * H);
    }

    #[test]
    fn empty_or_reversed_intervals_have_no_night() {
        let tz = TimeZone::UTC;
        let t = utc(2026, 12, 1, 22, 0);
        assert_eq!(night_ms(t, t, &tz), 0);
        assert_eq!(night_ms(t, utc(2026, 12, 1, 21, 0), &tz), 0);
    }
}
