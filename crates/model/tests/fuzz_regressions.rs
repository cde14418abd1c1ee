//! Inputs `cargo fuzz run fuzz_record_load` found, replayed through what the target calls:
//! loading them as a record document is an error, never a panic.

use sellsync_model::{LoadError, RecordDoc};

#[test]
fn fuzz_record_load_regressions_are_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions/fuzz_record_load");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let err = RecordDoc::load(&bytes, &"fuzz".parse().unwrap())
            .err()
            .unwrap_or_else(|| panic!("{} loads", path.display()));
        // The two committed inputs make automerge 0.12.0 panic; the error says it failed.
        assert!(
            matches!(err, LoadError::Panicked(_) | LoadError::Automerge(_)),
            "{}: {err}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 2, "no inputs in {}", dir.display());
}
