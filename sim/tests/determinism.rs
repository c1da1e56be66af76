//! Determinism: a seed is a pure function of itself. Same seed, same trace hash
//! (whatever the verbosity); a recorded plan replays to the same hash; SQLite's PRNG
//! pinned to the seed writes the same WAL bytes.

use walvault_sim::app::{App, pin_sqlite_prng, run_dir};
use walvault_sim::plan::{AppOp, Plan};
use walvault_sim::{RunOptions, run_plan, seed_plan};

fn quiet(tag: &str) -> RunOptions {
    RunOptions {
        tag: tag.into(),
        ..RunOptions::default()
    }
}

#[test]
fn same_seed_same_trace_and_replay_matches() {
    for seed in [3u64, 11] {
        let a = run_plan(seed_plan(seed, None), &quiet("det-a"));
        let b = run_plan(seed_plan(seed, None), &quiet("det-b"));
        assert!(a.violation.is_none(), "seed {seed}: {:?}", a.violation);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.events, b.events);
        // The plan a run reports (with its fault decisions) replays exactly, also
        // after a round trip through JSON.
        let plan = Plan::from_json(&a.plan.to_json()).expect("plan JSON");
        let c = run_plan(plan, &quiet("det-c"));
        assert_eq!(a.trace_hash, c.trace_hash, "seed {seed}: replay differs");
    }
}

#[test]
fn printing_does_not_change_the_hash() {
    let opts = RunOptions {
        print: true,
        tag: "det-print".into(),
        ..RunOptions::default()
    };
    let a = run_plan(seed_plan(5, None), &opts);
    let b = run_plan(seed_plan(5, None), &quiet("det-quiet"));
    assert_eq!(a.trace_hash, b.trace_hash);
}

fn wal_bytes(seed: u64, tag: &str) -> Vec<u8> {
    let _turn = walvault_sim::process_lock();
    pin_sqlite_prng(seed);
    let mut app = App::create(run_dir(seed, tag), 1024, false, 0).expect("create");
    for i in 0..20u64 {
        let op = if i % 7 == 6 {
            AppOp::Checkpoint {
                mode: walvault_sim::plan::CkptMode::Restart,
            }
        } else {
            AppOp::Insert {
                rows: 3,
                size: 700,
                seed: i,
            }
        };
        app.run(&op).expect("op");
    }
    let bytes = walvault_sim::memfs::read(&app.wal_path).expect("WAL");
    let dir = app.dir.clone();
    app.close();
    drop(app);
    walvault_sim::memfs::remove_dir(&dir);
    bytes
}

#[test]
fn pinned_sqlite_prng_gives_the_same_wal_bytes() {
    let a = wal_bytes(42, "wal-a");
    let b = wal_bytes(42, "wal-b");
    let c = wal_bytes(43, "wal-c");
    assert!(a.len() > 32);
    assert_eq!(a, b, "same seed, same WAL (salts included)");
    assert_ne!(a[16..24], c[16..24], "another seed, other salts");
}
