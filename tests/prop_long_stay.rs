//! Property tests of the `long_stay` rule's state machine on random lives (parked, driving,
//! jumping, invalid and LBS fixes), driven as the engine drives it: each fix, then the clock up to
//! the next fix with the deadline fired when it falls due, the places answer coming back at once.
//! Every alert is for a stay that places, given the same fixes and time, also sees open and long
//! enough, with the same arrival; one alert per episode; the state survives a round trip at
//! every step.

use crate::prop_places::{live, spot, step};
use lienwatch::places::{stays, Params};
use lienwatch::rules::long_stay::LongStayState;
use lienwatch::rules::RuleConfig;
use lienwatch::time::Timestamp;
use proptest::prelude::*;
use std::time::Duration;

const AFTER_S: u64 = 6 * 3600;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn alerts_are_long_open_stays_once_each(start in spot(), steps in prop::collection::vec(step(), 1..200)) {
        let cfg = RuleConfig {
            long_stay_after: Duration::from_secs(AFTER_S),
            ..RuleConfig::default()
        };
        let params = Params::from_rules(cfg.stay_radius_m, cfg.stay_min, "UTC").expect("params");
        let fixes = live(start, &steps);
        let mut st = LongStayState::new(&cfg);
        let mut alerted: Vec<Timestamp> = Vec::new();
        for (i, f) in fixes.iter().enumerate() {
            st.on_fix(f, f.time.add_millis(3000));
            prop_assert_eq!(&LongStayState::from_bytes(&st.to_bytes()).expect("decodes"), &st);
            // The clock runs until the next fix (or a day past the last).
            let until = fixes
                .get(i + 1)
                .map_or(f.time.add_millis(86_400_000), |n| n.time.add_millis(-1));
            let Some(due) = st.deadline(&cfg).filter(|d| *d <= until) else {
                continue;
            };
            let due = due.max(f.time.add_millis(3000));
            // A heartbeat at the deadline: the vehicle is heard from there.
            let th = st.on_due(&cfg, due, due);
            prop_assert!(th.is_some(), "a due deadline opens the episode");
            let th = th.expect("checked");
            prop_assert_eq!(st.deadline(&cfg), None);
            let a = st.resolve(th.since, false, due).expect("the episode is open");
            prop_assert!(st.resolve(th.since, false, due).is_none(), "one alert per episode");
            prop_assert!(a.details["stayed_s"].as_u64().unwrap_or(0) >= AFTER_S);
            // Places over the same fixes at the same time: the last stay is this one, open.
            let all = stays(fixes[..=i].iter().copied(), due, &params);
            let last = all.last().expect("places sees the stay");
            prop_assert!(last.open);
            prop_assert_eq!(last.since, th.since);
            prop_assert!(last.duration_ms() >= AFTER_S as i64 * 1000);
            // Episodes are told apart by their arrival: each alert's is new.
            prop_assert!(alerted.last().is_none_or(|t| *t < th.since));
            alerted.push(th.since);
        }
    }
}
