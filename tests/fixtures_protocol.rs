//! Every fixture in `protocol-fixtures/` replays at the protocol level: exact replies and the
//! decoded events each step expects. (The full pipeline, with alerts, is `tests/replay.rs`.)

use std::path::Path;

#[test]
fn every_fixture_passes_at_the_protocol_level() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures");
    let files = lienwatch::fixture::find(&[root]);
    let mut failures = Vec::new();
    for f in &files {
        let fx = match lienwatch::fixture::load(f) {
            Ok(fx) => fx,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        for p in lienwatch::fixture::check_protocol(&fx) {
            failures.push(format!("{}: {p}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "fixture failures:\n{}",
        failures.join("\n")
    );
    eprintln!("{} fixture file(s) checked", files.len());
}
