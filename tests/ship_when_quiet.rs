//! `watch --ship-when-quiet` (decision 24) with the real binary and a `file://` replica:
//! a writer that stops has its last commits cut before the next tick, and the replica
//! restores to the source page for page. Without the flag, no early cut happens.

mod e2e_support;

use std::time::Duration;

use e2e_support::*;

const EARLY: &str = "the writer went quiet: shipping before the tick";

fn bursts(extra: &[&str]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    create_db(&db);
    let url = format!("file://{}", dir.path().join("replica").display());
    let log = dir.path().join("watch.log");
    // Ticks every 100 ms (the test watcher's interval); a quiet period of 40 ms.
    let w = Watcher::start_with(&[&db], &url, &[], &log, extra);
    let mut work = Workload::open(&db, 5);
    // Each stop meets the tick at a random phase: a dozen make an early cut all but certain.
    for _ in 0..12 {
        work.run(10, None);
        std::thread::sleep(Duration::from_millis(250));
    }
    w.stop();
    assert_contiguous_l0(&remote_files(&url, "q", None));
    restore_and_compare("q", &db, &url, &dir.path().join("r.db"), &[]);
    log_count(&log, EARLY)
}

#[test]
fn a_quiet_writer_is_shipped_before_the_tick() {
    assert!(bursts(&["--ship-when-quiet", "40ms"]) >= 1);
}

#[test]
fn off_by_default() {
    assert_eq!(bursts(&[]), 0);
}
