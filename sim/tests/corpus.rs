//! Replays the regression corpus (`chaos-seeds/`): every entry must behave as it says
//! (pass, or for canaries fail with the stated invariant).

use std::path::PathBuf;

use walvault_sim::corpus::load;

#[test]
fn regressions_behave_as_recorded() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chaos-seeds");
    let entries = load(&dir).expect("chaos-seeds/ loads");
    assert!(!entries.is_empty(), "the corpus is empty");
    let mut failures = Vec::new();
    for (path, e) in &entries {
        if let Err(msg) = e.check() {
            failures.push(format!("{}: {msg} ({})", path.display(), e.note));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
