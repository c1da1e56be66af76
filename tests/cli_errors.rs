//! What users see when something is wrong: one-line errors that say what to do, and
//! exit codes scripts can rely on. Also: restore never overwrites without --force.

mod e2e_support;
mod support;

use e2e_support::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_database_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("r").display());
    let o = run(
        &[
            "watch",
            dir.path().join("nope.db").to_str().unwrap(),
            "-b",
            &url,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn non_wal_database_offers_the_pragma() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rollback.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let url = format!("file://{}", dir.path().join("r").display());
    let o = run(&["watch", db.to_str().unwrap(), "-b", &url], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("PRAGMA journal_mode=WAL"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_url_says_what_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    create_db(&db);
    let o = run(&["watch", db.to_str().unwrap(), "-b", "ftp://x/y"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("file://") && stderr(&o).contains("s3://"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unreachable_endpoint_and_missing_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    create_db(&db);
    let port = support::s3_server::free_port();
    let env = vec![
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let endpoint = format!("http://127.0.0.1:{port}");
    let o = run(
        &[
            "watch",
            db.to_str().unwrap(),
            "-b",
            "s3://bucket/p",
            "--endpoint",
            &endpoint,
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));

    let Some(server) = support::s3_server::S3Server::start() else {
        return;
    };
    let o = run(
        &[
            "watch",
            db.to_str().unwrap(),
            "-b",
            "s3://no-such-bucket/p",
            "--endpoint",
            &server.endpoint,
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn restore_refuses_to_overwrite_and_handles_missing_backups() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("r").display());
    let db = dir.path().join("snap.db");
    create_db(&db);
    Workload::open(&db, 3).run(50, None);
    let o = run(&["snapshot", db.to_str().unwrap(), "-b", &url], &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let out = dir.path().join("out.db");
    std::fs::write(&out, b"precious").unwrap();
    let o = run(
        &["restore", "snap", "-o", out.to_str().unwrap(), "-b", &url],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"precious",
        "a refused restore must not touch the file"
    );

    let o = run(
        &[
            "restore",
            "snap",
            "-o",
            out.to_str().unwrap(),
            "-b",
            &url,
            "--if-not-exists",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    let o = run(
        &[
            "restore",
            "snap",
            "-o",
            out.to_str().unwrap(),
            "-b",
            &url,
            "--force",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    checkpoint_truncate(&db);
    walvault::compare::compare_pages(&db, &out, page_size(&db)).unwrap();

    let o = run(
        &[
            "restore",
            "other",
            "-o",
            dir.path().join("x.db").to_str().unwrap(),
            "-b",
            &url,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no backup of 'other'"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("x.db").exists());

    let o = run(&["list", "-b", &url], &[]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "snap");
    let o = run(&["list", "-b", &url, "snap"], &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("restorable: TXID"), "{text}");
}

#[test]
fn replaced_database_halts_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("r").display());
    let db = dir.path().join("swap.db");
    create_db(&db);
    let log = dir.path().join("watch.log");
    let mut w = Watcher::start(&[&db], &url, &[], &log);
    let other = dir.path().join("other.db");
    create_db(&other);
    std::fs::rename(&other, &db).unwrap();
    let code = w.wait(std::time::Duration::from_secs(30));
    assert_eq!(
        code,
        Some(1),
        "walvault must stop when its database is replaced:\n{}",
        w.log_text()
    );
    assert!(
        w.log_text().contains("was replaced by another file"),
        "{}",
        w.log_text()
    );
}
