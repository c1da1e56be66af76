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
    // Six rounds with pauses of several sync intervals: each round ends up in files of
    // its own however fast the machine writes (the file count is asserted below).
    for round in 0..6 {
        work.run(500, (round == 3).then_some(300));
        std::thread::sleep(std::time::Duration::from_millis(400));
    }
    let pages = work.page_count();
    assert!(
        pages > 1_000,
        "the workload should grow the database past 1 000 pages, got {pages}"
    );
    w.stop();
    let files = remote_files(url, "busy", endpoint.clone());
    let last = assert_contiguous_l0(&files);
    assert_hash_chain(url, "busy", endpoint.clone());
    assert!(last > 6, "expected a file per round at least, got {last}");
    assert_verify_ok(url, "busy", env);
    let compared = restore_and_compare("busy", &db, url, &dir.join("restored.db"), env);
    assert_recorded_checksum(url, "busy", endpoint.clone(), &db);
    assert_eq!(compared, work.page_count());
}

type Files = Vec<(
    walvault_engine::keys::FileId,
    walvault_engine::ltx::Header,
    u64,
)>;

/// Files that hold the whole database (a snapshot or a full-database level-0 file).
fn full_files(files: &Files) -> usize {
    files
        .iter()
        .filter(|(id, h, n)| id.min_txid == 1 || u64::from(h.commit) == *n)
        .count()
}

fn restarts_continue_the_chain(url: &str, env: &Env, endpoint: Option<String>, dir: &Path) {
    let db = dir.join("restart.db");
    create_db(&db);
    let log = dir.join("watch.log");
    // Only walvault checkpoints here, so the WAL keeps its generation across restarts.
    let mut work = Workload::open(&db, 7).without_autocheckpoint();
    work.run(300, None);
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(1_500, None);
    w.stop();
    let files = remote_files(url, "restart", endpoint.clone());
    let after_first = assert_contiguous_l0(&files);
    assert_eq!(full_files(&files), 1, "one initial snapshot");

    // A clean stop and restart resumes the chain: nothing is uploaded again.
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(1_200, None);
    w.stop();
    let files = remote_files(url, "restart", endpoint.clone());
    let after_second = assert_contiguous_l0(&files);
    assert!(
        after_second > after_first,
        "the chain must grow after a restart"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        full_files(&files),
        1,
        "a clean restart must not upload the database again: {files:?}\n{log_text}"
    );
    assert!(
        log_text.contains("resuming the existing chain"),
        "a clean restart must resume:\n{log_text}"
    );
    // The page checksums survived the clean restart: the newest file records the state.
    assert_recorded_checksum(url, "restart", endpoint.clone(), &db);

    // SIGKILL right after a burst of writes, more writes while down, a third run. If the
    // kill lands between one of walvault's checkpoints and the WAL restart it causes,
    // the next run cannot prove the restart harmless and writes one full-database file:
    // at most one, never a storm.
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(400, None);
    w.kill();
    work.run(200, None);
    let w = Watcher::start(&[&db], url, env, &log);
    work.run(300, None);
    w.stop();
    let files = remote_files(url, "restart", endpoint.clone());
    let last = assert_contiguous_l0(&files);
    // Restarts pick the chain up from the store's tip: the links survive them.
    assert_hash_chain(url, "restart", endpoint);
    assert!(last > after_second, "the chain must grow after SIGKILL");
    assert!(
        full_files(&files) <= 2,
        "at most one full-database file after a SIGKILL: {files:?}"
    );
    assert_verify_ok(url, "restart", env);
    restore_and_compare("restart", &db, url, &dir.join("restored.db"), env);
}

/// While walvault is down the application checkpoints and restarts the WAL: the
/// frames walvault never saw are folded into the database file, so the only safe
/// continuation is one whole-database file under the next TXID, and restore still
/// yields exactly the source. walvault stopped cleanly, so it kept the shipped state's
/// page checksums and that file carries only the pages that changed (decision 23).
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
        full,
        Vec::<&_>::new(),
        "no file after the reset holds every page"
    );
    assert_eq!(
        log_count(&log, "whole-database file built as the pages that changed"),
        1,
        "exactly one whole-database file after the reset"
    );
    assert_verify_ok(url, "reset", env);
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
    let url = "s3://e2e/backups";
    replicate_busy_database(
        url,
        &s3_env(&server),
        Some(server.endpoint.clone()),
        dir.path(),
    );

    // A restore asks for each file once: one GET that brings the bytes and the
    // metadata checked against them, no HEAD (the server's access log counts them).
    let files = remote_files(url, "busy", Some(server.endpoint.clone()));
    let before = server.log().len();
    let out = dir.path().join("counted.db");
    let o = run(
        &["restore", "busy", "-o", out.to_str().unwrap(), "-b", url],
        &s3_env(&server),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = server.log();
    let requests: Vec<&str> = log[before..]
        .lines()
        .filter(|l| l.contains(" HTTP/1.1\""))
        .collect();
    let count = |method: &str, suffix: &str| {
        requests
            .iter()
            .filter(|l| l.contains(&format!("\"{method} ")) && l.contains(suffix))
            .count()
    };
    assert_eq!(count("HEAD", ""), 0, "{requests:#?}");
    assert_eq!(count("GET", ".ltx"), files.len(), "{requests:#?}");
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

/// One process, several databases, one store: each keeps its own chain and restores
/// exactly; JSON logs are machine-readable.
#[test]
fn several_databases_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let names = ["alpha", "beta", "gamma"];
    let paths: Vec<_> = names
        .iter()
        .map(|n| dir.path().join(format!("{n}.db")))
        .collect();
    for p in &paths {
        create_db(p);
    }
    let log = dir.path().join("watch.log");
    let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let env: Env = vec![("WALVAULT_LOG_FORMAT", "json".to_string())];
    let w = Watcher::start(&refs, &url, &env, &log);
    for (i, p) in paths.iter().enumerate() {
        Workload::open(p, 100 + i as u64).run(300 + 100 * i as u64, None);
    }
    let text = w.log_text();
    w.stop();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
    for (n, p) in names.iter().zip(&paths) {
        let files = remote_files(&url, n, None);
        assert_contiguous_l0(&files);
        restore_and_compare(
            n,
            p,
            &url,
            &dir.path().join(format!("{n}-restored.db")),
            &env,
        );
    }
}
