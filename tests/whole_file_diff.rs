//! A WAL that restarted where walvault could not see it (while an idle database was
//! released, or while walvault was stopped) is answered with a whole-database file
//! built as the pages that changed against the checksums of the shipped state
//! (decision 23), against the real binary and a `file://` replica. Every case checks
//! that only one file in the store holds every page, that the chain stays contiguous,
//! and that a restore equals the source page for page.

mod e2e_support;

use std::path::Path;
use std::time::Duration;

use e2e_support::*;

const DIFFED: &str = "whole-database file built as the pages that changed";
const WAIT: Duration = Duration::from_secs(60);

/// Commits, checkpoints with RESTART (walvault holds no read lock, so it completes),
/// then commits again: the WAL starts a new generation walvault never saw begin.
fn restart_wal_unseen(work: &mut Workload) {
    work.run(40, None);
    let (busy, log, done): (i64, i64, i64) = work
        .conn()
        .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        (busy, log),
        (0, done),
        "the application's checkpoint completed"
    );
    work.run(10, None);
}

/// Files holding every page of their database, and the pages of the file that was
/// built as a diff (the one after the first that does not start at TXID 1).
fn whole_files_and_diff(url: &str, name: &str) -> (usize, Vec<(u64, u64)>) {
    let files = remote_files(url, name, None);
    assert_contiguous_l0(&files);
    let whole = files
        .iter()
        .filter(|(id, h, n)| id.min_txid == 1 || u64::from(h.commit) == *n)
        .count();
    let partial = files
        .iter()
        .filter(|(id, h, n)| id.min_txid > 1 && *n < u64::from(h.commit))
        .map(|(_, h, n)| (*n, u64::from(h.commit)))
        .collect();
    (whole, partial)
}

fn setup(dir: &Path, name: &str) -> (std::path::PathBuf, String, Workload) {
    let db = dir.join(format!("{name}.db"));
    create_db(&db);
    let url = format!("file://{}", dir.join("replica").display());
    let mut work = Workload::open(&db, 21);
    work.run(300, None);
    (db, url, work)
}

#[test]
fn wal_restarted_while_released_ships_only_the_changed_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url, mut work) = setup(dir.path(), "srv");
    let log = dir.path().join("watch.log");
    let w = Watcher::start_with(&[&db], &url, &[], &log, &["--release-idle-after", "300ms"]);
    w.wait_for_log("idle: connection closed", 1, WAIT);
    // Stopped, so it cannot look at the WAL before the new generation has frames.
    signal(w.pid(), "-STOP");
    restart_wal_unseen(&mut work);
    signal(w.pid(), "-CONT");
    w.wait_for_log(DIFFED, 1, WAIT);
    work.run(20, None);
    w.stop();
    let (whole, diffs) = whole_files_and_diff(&url, "srv");
    assert_eq!(whole, 1, "only the initial snapshot holds every page");
    assert!(!diffs.is_empty(), "the wake's file holds only some pages");
    let pages = restore_and_compare("srv", &db, &url, &dir.path().join("r.db"), &[]);
    assert_eq!(pages, work.page_count());
    assert_recorded_checksum(&url, "srv", None, &db);
}

#[test]
fn restart_after_the_wal_restarted_ships_only_the_changed_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url, mut work) = setup(dir.path(), "job");
    let log = dir.path().join("watch.log");
    // A clean stop saves the checksums of the shipped state.
    Watcher::start(&[&db], &url, &[], &log).stop();
    restart_wal_unseen(&mut work);
    let w = Watcher::start(&[&db], &url, &[], &log);
    w.wait_for_log(DIFFED, 1, WAIT);
    work.run(20, None);
    w.stop();
    let (whole, diffs) = whole_files_and_diff(&url, "job");
    assert_eq!(whole, 1, "only the first run's snapshot holds every page");
    assert!(!diffs.is_empty());
    let pages = restore_and_compare("job", &db, &url, &dir.path().join("r.db"), &[]);
    assert_eq!(pages, work.page_count());
    assert_recorded_checksum(&url, "job", None, &db);
}

#[test]
fn without_the_shipped_state_s_checksums_the_file_holds_every_page() {
    // The control: a state directory that lost its checksums (here: a crash, which
    // leaves none behind) cannot diff, and ships every page instead.
    let dir = tempfile::tempdir().unwrap();
    let (db, url, mut work) = setup(dir.path(), "ctl");
    let log = dir.path().join("watch.log");
    let w = Watcher::start(&[&db], &url, &[], &log);
    work.run(5, None);
    std::thread::sleep(Duration::from_millis(500));
    w.kill();
    restart_wal_unseen(&mut work);
    let w = Watcher::start(&[&db], &url, &[], &log);
    work.run(20, None);
    w.stop();
    assert_eq!(log_count(&log, DIFFED), 0);
    let (whole, _) = whole_files_and_diff(&url, "ctl");
    assert_eq!(
        whole, 2,
        "the snapshot and the file after the unseen restart"
    );
    restore_and_compare("ctl", &db, &url, &dir.path().join("r.db"), &[]);
}
