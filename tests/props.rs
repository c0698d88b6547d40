//! Property and fixture tests of the protocol sessions, of places, of the long_stay rule and of
//! what a device's rule state leaves to its record, in one binary. The files
//! stay where they are, so proptest finds each one's `.proptest-regressions` beside it as before.

#[path = "fixtures_protocol.rs"]
mod fixtures_protocol;
#[path = "prop_commands.rs"]
mod prop_commands;
#[path = "prop_gt06.rs"]
mod prop_gt06;
#[path = "prop_h02.rs"]
mod prop_h02;
#[path = "prop_history.rs"]
mod prop_history;
#[path = "prop_jt808.rs"]
mod prop_jt808;
#[path = "prop_long_stay.rs"]
mod prop_long_stay;
#[path = "prop_places.rs"]
mod prop_places;
#[path = "prop_rule_state.rs"]
mod prop_rule_state;
#[path = "prop_teltonika.rs"]
mod prop_teltonika;

use std::path::Path;

/// The fixture checks pass on an empty directory; this fails instead, per protocol.
#[test]
fn fixtures_are_found_for_every_protocol() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures");
    for p in ["gt06", "jt808", "teltonika", "h02", "alerts"] {
        // `find` passes a path that is not a directory through as a file: count real files.
        let found = lienwatch::fixture::find(&[root.join(p)])
            .into_iter()
            .filter(|f| f.is_file())
            .count();
        assert!(found > 0, "no fixture under {}", root.join(p).display());
    }
}
