//! Test files are grouped into a few binaries (`autotests = false`), so a new file under
//! `tests/` runs only once a grouping file names it; this test fails for one that is not named.

use std::path::Path;

/// The `.rs` files directly in `dir`, by name.
fn rs_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rs"))
        .collect();
    out.sort();
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_test_file_belongs_to_a_test_binary() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let manifest = read(&tests.join("../Cargo.toml"));
    let mut missing = Vec::new();

    // Top level: the grouping files, and the files they include by path.
    let props = read(&tests.join("props.rs"));
    for f in rs_files(&tests) {
        let grouping = manifest.contains(&format!("path = \"tests/{f}\""));
        if !grouping && !props.contains(&format!("#[path = \"{f}\"]")) {
            missing.push(format!("tests/{f}"));
        }
    }
    // Subdirectories: a binary's modules, or the shared harness.
    for (dir, root, decl) in [("e2e", "main.rs", "mod "), ("common", "mod.rs", "pub mod ")] {
        let root_text = read(&tests.join(dir).join(root));
        for f in rs_files(&tests.join(dir)) {
            let name = f.trim_end_matches(".rs");
            if f != root && !root_text.contains(&format!("{decl}{name};")) {
                missing.push(format!("tests/{dir}/{f}"));
            }
        }
    }
    for e in std::fs::read_dir(&tests).unwrap().filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && name != "e2e" && name != "common" {
            missing.push(format!("tests/{name}/"));
        }
    }
    assert!(
        missing.is_empty(),
        "not compiled into any test binary (name them in tests/props.rs, tests/e2e/main.rs or \
         a [[test]] entry of Cargo.toml): {missing:?}"
    );
    assert!(manifest.contains("path = \"tests/e2e/main.rs\""));
    assert!(manifest.contains("path = \"tests/props.rs\""));
}
