//! Idle databases give up their SQLite connection (decision 21), against the real
//! binary and a `file://` replica: a released database holds no descriptor on its
//! files, the first change takes the connection back and continues the chain
//! incrementally, and an application that checkpoints the WAL away while walvault is
//! released costs one full snapshot, after which that database keeps its connection.
//! Every case ends with a restore compared page for page with the source.

mod e2e_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_support::*;

const RELEASED: &str = "idle: connection closed";
const WOKE: &str = "connection taken again";
const PINNED: &str = "keeps its connection from now on";
const WAIT: Duration = Duration::from_secs(60);

/// Files of `db` that process `pid` has open (the database, its WAL, its -shm).
fn open_files_of(pid: u32, db: &Path) -> Vec<String> {
    let db = std::fs::canonicalize(db).unwrap();
    let db = db.to_string_lossy().into_owned();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with(&db))
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Files that hold the whole database (snapshots and full level-0 files).
fn full_files(url: &str, name: &str) -> usize {
    remote_files(url, name, None)
        .iter()
        .filter(|(id, h, n)| id.min_txid == 1 || u64::from(h.commit) == *n)
        .count()
}

#[test]
fn released_database_holds_nothing_and_wakes_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idle.db");
    create_db(&db);
    let url = format!("file://{}", dir.path().join("replica").display());
    // The application keeps its connection open, like a server.
    let mut work = Workload::open(&db, 11);
    work.run(200, None);
    let log = dir.path().join("watch.log");
    let w = Watcher::start_with(&[&db], &url, &[], &log, &["--release-idle-after", "300ms"]);
    w.wait_for_log(RELEASED, 1, WAIT);
    assert_eq!(
        open_files_of(w.pid(), &db),
        Vec::<String>::new(),
        "a released database keeps no descriptor"
    );
    // Changes wake it; it is released again once they are shipped and it is quiet.
    for round in 1..=3 {
        work.run(150, None);
        w.wait_for_log(WOKE, round, WAIT);
        w.wait_for_log(RELEASED, round + 1, WAIT);
    }
    w.stop();
    let files = remote_files(&url, "idle", None);
    assert_contiguous_l0(&files);
    assert_eq!(full_files(&url, "idle"), 1, "wakes continue the chain");
    let pages = restore_and_compare("idle", &db, &url, &dir.path().join("r.db"), &[]);
    assert_eq!(pages, work.page_count());
}

#[test]
fn wal_checkpointed_away_while_released_costs_one_snapshot_then_pins() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cron.db");
    create_db(&db);
    let url = format!("file://{}", dir.path().join("replica").display());
    // An application that opens, writes and closes each time, like a cron job.
    let write_and_close = |seed: u64| {
        let mut work = Workload::open(&db, seed);
        work.run(40, None);
    };
    write_and_close(1);
    let log = dir.path().join("watch.log");
    let w = Watcher::start_with(&[&db], &url, &[], &log, &["--release-idle-after", "300ms"]);
    w.wait_for_log(RELEASED, 1, WAIT);
    assert_eq!(full_files(&url, "cron"), 1);
    // walvault stopped while the job runs, so it cannot see the WAL before the job's
    // last connection checkpoints it into the database and deletes it.
    signal(w.pid(), "-STOP");
    write_and_close(2);
    assert!(
        !dir.path().join("cron.db-wal").exists(),
        "the last connection's close folds the WAL away"
    );
    signal(w.pid(), "-CONT");
    w.wait_for_log(PINNED, 1, WAIT);
    // Past the snapshot's upload and any quiet period that would have released it.
    std::thread::sleep(Duration::from_millis(1_500));
    let released = w.log_text().matches(RELEASED).count();
    // From now on walvault's connection keeps the job's close from folding the WAL
    // away: the next runs are shipped as incremental files.
    for seed in 3..=5 {
        write_and_close(seed);
        std::thread::sleep(Duration::from_millis(400));
    }
    w.stop();
    assert_eq!(
        w_count(&log, RELEASED),
        released,
        "a pinned database is never released again"
    );
    assert_contiguous_l0(&remote_files(&url, "cron", None));
    assert_eq!(
        full_files(&url, "cron"),
        2,
        "the initial snapshot and one after the folded WAL"
    );
    restore_and_compare("cron", &db, &url, &dir.path().join("r.db"), &[]);
}

fn w_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn zero_keeps_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kept.db");
    create_db(&db);
    let url = format!("file://{}", dir.path().join("replica").display());
    let mut work = Workload::open(&db, 5);
    work.run(50, None);
    let log = dir.path().join("watch.log");
    let w = Watcher::start_with(&[&db], &url, &[], &log, &["--release-idle-after", "0"]);
    work.run(50, None);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(!w.log_text().contains(RELEASED));
    assert!(
        !open_files_of(w.pid(), &db).is_empty(),
        "the connection stays open"
    );
    w.stop();
    restore_and_compare("kept", &db, &url, &dir.path().join("r.db"), &[]);
}
