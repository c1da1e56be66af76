//! End to end against the real binary: `walvault watch` replicates a busy database
//! (inserts, updates, deletes, growth past 1 000 pages, VACUUM) into a `file://` and
//! an `s3://` replica (a real S3-compatible server on 127.0.0.1); restarts after a clean
//! stop and after SIGKILL continue the same TXID chain; restores equal the source
//! page for page.

mod e2e_support;
mod support;

use std::path::Path;

use e2e_support::*;

type Env = Vec<(&'static str, String)>;

fn replicate_busy_database(url: &str, env: &Env, endpoint: Option<String>, dir: &Path) {
    let db = dir.join("busy.db");
    create_db(&db);
    let log = dir.join("watch.log");
    let w = Watcher::start(&[&db], url, env, &log);
    let mut work = Workload::open(&db, 42);
    work.run(3_000, Some(1_800));
    let pages = work.page_count();
    assert!(
        pages > 1_000,
        "the workload should grow the database past 1 000 pages, got {pages}"
    );
    w.stop();
    let files = remote_files(url, "busy", endpoint);
    let last = assert_contiguous_l0(&files);
    assert!(last > 5, "expected many files, got {last}");
    let compared = restore_and_compare("busy", &db, url, &dir.join("restored.db"), env);
    assert_eq!(compared, work.page_count());
}

fn restarts_continue_the_chain(url: &str, env: &Env, endpoint: Option<String>, dir: &Path) {
    let db = dir.join("restart.db");
    create_db(&db);
    let log = dir.join("watch.log");
    // Only walvault checkpoints here, so the WAL keeps its generation across restarts
    // and every restart must resume rather than upload the database again.
    let mut work = Workload::open(&db, 7).without_autocheckpoint();
    work.run(300, None);
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(1_500, None);
    w.stop();
    let after_first = assert_contiguous_l0(&remote_files(url, "restart", endpoint.clone()));

    // Clean restart, more writes, then SIGKILL right after a burst of writes.
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(400, None);
    w.kill();
    // Writes while the replicator is down, then a third run.
    work.run(200, None);
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(300, None);
    w.stop();

    let files = remote_files(url, "restart", endpoint);
    let last = assert_contiguous_l0(&files);
    assert!(last > after_first, "the chain must grow after restarts");
    let full: Vec<_> = files
        .iter()
        .filter(|(id, h, n)| id.min_txid == 1 || u64::from(h.commit) == *n)
        .collect();
    assert_eq!(
        full.len(),
        1,
        "only the first file may hold the whole database: {full:?}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.matches("resuming the existing chain").count() >= 1,
        "restarts must resume:\n{log_text}"
    );
    restore_and_compare("restart", &db, url, &dir.join("restored.db"), env);
}

/// While walvault is down the application checkpoints and restarts the WAL: the
/// frames walvault never saw are folded into the database file, so the only safe
/// continuation is one full-database file under the next TXID, and restore still
/// yields exactly the source.
fn wal_reset_while_down(url: &str, env: &Env, endpoint: Option<String>, dir: &Path) {
    let db = dir.join("reset.db");
    create_db(&db);
    let log = dir.join("watch.log");
    let mut work = Workload::open(&db, 11).without_autocheckpoint();
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(300, None);
    w.stop();
    work.run(100, None);
    work.conn()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    work.run(100, None);
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(100, None);
    w.stop();
    let files = remote_files(url, "reset", endpoint);
    assert_contiguous_l0(&files);
    let full: Vec<_> = files
        .iter()
        .filter(|(id, h, n)| id.min_txid > 1 && u64::from(h.commit) == *n)
        .collect();
    assert_eq!(
        full.len(),
        1,
        "exactly one full-database file after the reset: {full:?}"
    );
    restore_and_compare("reset", &db, url, &dir.join("restored.db"), env);
}

#[test]
fn file_replica_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    replicate_busy_database(&url, &Vec::new(), None, dir.path());
}

#[test]
fn file_replica_wal_reset_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    wal_reset_while_down(&url, &Vec::new(), None, dir.path());
}

#[test]
fn file_replica_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    restarts_continue_the_chain(&url, &Vec::new(), None, dir.path());
}

fn s3_env(server: &support::s3_server::S3Server) -> Env {
    let mut env: Env = server.env_vars();
    env.push(("AWS_ENDPOINT_URL_S3", server.endpoint.clone()));
    env
}

#[test]
fn s3_replica_round_trip() {
    let Some(server) = support::s3_server::S3Server::start() else {
        return;
    };
    server.create_bucket("e2e");
    support::s3_server::set_test_aws_env();
    let dir = tempfile::tempdir().unwrap();
    replicate_busy_database(
        "s3://e2e/backups",
        &s3_env(&server),
        Some(server.endpoint.clone()),
        dir.path(),
    );
}

#[test]
fn s3_replica_restarts() {
    let Some(server) = support::s3_server::S3Server::start() else {
        return;
    };
    server.create_bucket("e2e-restart");
    support::s3_server::set_test_aws_env();
    let dir = tempfile::tempdir().unwrap();
    restarts_continue_the_chain(
        "s3://e2e-restart/x/y",
        &s3_env(&server),
        Some(server.endpoint.clone()),
        dir.path(),
    );
}

#[test]
fn s3_replica_wal_reset_while_down() {
    let Some(server) = support::s3_server::S3Server::start() else {
        return;
    };
    server.create_bucket("e2e-reset");
    support::s3_server::set_test_aws_env();
    let dir = tempfile::tempdir().unwrap();
    wal_reset_while_down(
        "s3://e2e-reset",
        &s3_env(&server),
        Some(server.endpoint.clone()),
        dir.path(),
    );
}
