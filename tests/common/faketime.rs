//! libfaketime, to run the daemon with its host clock set wrong (and the monotonic clock left
//! alone, `FAKETIME_DONT_FAKE_MONOTONIC`).
#![allow(dead_code)]

/// libfaketime, to run the daemon with its clock set wrong. Missing, a local run skips the
/// test with a message; under CI (`CI=true`, and .ci/run installs it) it fails.
pub fn library() -> Option<std::path::PathBuf> {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .chain([std::path::PathBuf::from(
            "/usr/lib/faketime/libfaketime.so.1",
        )])
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libfaketime is not installed, and CI=true: the clock test cannot run"
        );
        eprintln!("SKIPPED: libfaketime is not installed (apt-get install faketime)");
    }
    found
}
