//! Property and fixture tests of the protocol sessions, in one binary. The files stay where they
//! are, so proptest finds each one's `.proptest-regressions` beside it as before.

#[path = "fixtures_protocol.rs"]
mod fixtures_protocol;
#[path = "prop_gt06.rs"]
mod prop_gt06;
#[path = "prop_h02.rs"]
mod prop_h02;
#[path = "prop_jt808.rs"]
mod prop_jt808;
#[path = "prop_teltonika.rs"]
mod prop_teltonika;
