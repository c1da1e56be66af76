//! `watch --ship-when-quiet` (decision 24) with the real binary and a `file://` replica:
//! a writer that stops has its last commits cut before the next tick, and the replica
//! restores to the source page for page. On by default (250 ms, with the default 1 s
//! interval); 0 turns it off, and then no early cut happens.

mod e2e_support;

use std::time::Duration;

use e2e_support::*;

const EARLY: &str = "the writer went quiet: shipping before the tick";

/// `rounds` bursts of ten commits, each followed by `pause`: the number of early cuts.
fn bursts(extra: &[&str], rounds: usize, pause: Duration) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    create_db(&db);
    let url = format!("file://{}", dir.path().join("replica").display());
    let log = dir.path().join("watch.log");
    let w = Watcher::start_with(&[&db], &url, &[], &log, extra);
    let mut work = Workload::open(&db, 5);
    // Each stop meets the tick at a random phase: several make an early cut all but certain.
    for _ in 0..rounds {
        work.run(10, None);
        std::thread::sleep(pause);
    }
    w.stop();
    assert_contiguous_l0(&remote_files(&url, "q", None));
    restore_and_compare("q", &db, &url, &dir.path().join("r.db"), &[]);
    log_count(&log, EARLY)
}

#[test]
fn a_quiet_writer_is_shipped_before_the_tick() {
    // Ticks every 100 ms (the test watcher's interval); a quiet period of 40 ms.
    let fast = ["--ship-when-quiet", "40ms"];
    assert!(bursts(&fast, 12, Duration::from_millis(250)) >= 1);
}

#[test]
fn on_by_default_at_the_default_interval() {
    // 1 s ticks, the default quiet period of 250 ms: a stop lands more than 250 ms before
    // the next tick three times in four, so six stops all but certainly give an early cut.
    let defaults = ["--sync-interval", "1s"];
    assert!(bursts(&defaults, 6, Duration::from_millis(1_300)) >= 1);
}

#[test]
fn zero_turns_it_off() {
    let off = ["--ship-when-quiet", "0"];
    assert_eq!(bursts(&off, 12, Duration::from_millis(250)), 0);
}
