//! Idle databases give up their SQLite connection (decision 21), against the real
//! binary and a `file://` replica: a released database holds no descriptor on its
//! files, the first change takes the connection back and continues the chain
//! incrementally, and an application that checkpoints the WAL away while walvault is
//! released costs one whole-database file (of the pages that changed when it can be),
//! after which a small database is released again.
//! Every case ends with a restore compared page for page with the source.

mod e2e_support;

use std::path::Path;
use std::time::Duration;

use e2e_support::*;

const RELEASED: &str = "idle: connection closed";
const WOKE: &str = "connection taken again";
const PINNED: &str = "keeps its connection from now on";
const DIFFED: &str = "whole-database file built as the pages that changed";
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
fn wal_checkpointed_away_while_released_costs_one_whole_file_then_releases_again() {
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
    w.wait_for_log(WOKE, 1, WAIT);
    // A small database is not pinned: it is released again once quiet.
    w.wait_for_log(RELEASED, 2, WAIT);
    w.stop();
    assert_eq!(log_count(&log, PINNED), 0);
    assert_eq!(log_count(&log, "WalReset"), 1, "one whole-database file");
    // That file holds every page unless a WAL generation existed to name (then it is
    // built as the pages that changed).
    assert_eq!(
        full_files(&url, "cron") + log_count(&log, DIFFED),
        2,
        "the initial snapshot and the file after the folded WAL"
    );
    assert_contiguous_l0(&remote_files(&url, "cron", None));
    restore_and_compare("cron", &db, &url, &dir.path().join("r.db"), &[]);
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
