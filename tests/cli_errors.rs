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

/// A replica of `plan.db` with history: a snapshot (level 9) after some writes, then
/// level-0 files from `walvault watch`. Returns the URL and the files, oldest first.
fn backup_with_history(dir: &std::path::Path) -> (String, Vec<walvault_engine::keys::FileId>) {
    let url = format!("file://{}", dir.join("r").display());
    let db = dir.join("plan.db");
    create_db(&db);
    let mut work = Workload::open(&db, 9);
    work.run(40, None);
    let o = run(&["snapshot", db.to_str().unwrap(), "-b", &url], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let w = Watcher::start(&[&db], &url, &[], &dir.join("watch.log"));
    for _ in 0..4 {
        work.run(20, None);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    w.stop();
    let mut ids: Vec<_> = remote_files(&url, "plan", None)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    ids.sort_by_key(|id| (id.max_txid, std::cmp::Reverse(id.level)));
    (url, ids)
}

fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `--dry-run` prints the plan (the newest snapshot, then the level-0 files after it;
/// with `--txid`, up to that TXID) and writes nothing: no output, no temporary file,
/// an existing output untouched even with `--force`.
#[test]
fn restore_dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ids) = backup_with_history(dir.path());
    let snap = *ids
        .iter()
        .filter(|id| id.level == 9)
        .max_by_key(|id| id.max_txid)
        .expect("a snapshot");
    let after: Vec<_> = ids
        .iter()
        .filter(|id| id.level == 0 && id.min_txid > snap.max_txid)
        .copied()
        .collect();
    assert!(
        after.len() >= 3,
        "too few files after the snapshot: {ids:?}"
    );
    for w in after.windows(2) {
        assert_eq!(w[0].max_txid + 1, w[1].min_txid, "{ids:?}");
    }
    assert_eq!(after[0].min_txid, snap.max_txid + 1, "{ids:?}");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("restored.db");
    let plan_of = |o: &std::process::Output| -> (String, Vec<String>) {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut lines = text.lines();
        let head = lines.next().unwrap_or_default().to_string();
        let files = lines
            .map(|l| l.trim().split(" (").next().unwrap_or_default().to_string())
            .collect();
        (head, files)
    };
    let expect = |files: &[walvault_engine::keys::FileId]| -> Vec<String> {
        std::iter::once(snap)
            .chain(files.iter().copied())
            .map(|id| id.to_string())
            .collect()
    };

    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "plan", "-o", out.to_str().unwrap(), "-b", &url];
        args.extend_from_slice(extra);
        run(&args, &[])
    };
    let o = restore(&["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tip = after.last().unwrap().max_txid;
    assert_eq!(
        plan_of(&o),
        (
            format!(
                "would restore TXID {tip:016x} from {} files:",
                after.len() + 1
            ),
            expect(&after)
        ),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        dir_entries(&out_dir).is_empty(),
        "a dry run wrote {:?}",
        dir_entries(&out_dir)
    );

    let txid = after[1].max_txid;
    let o = restore(&["--dry-run", "--txid", &format!("{txid:x}")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        plan_of(&o),
        (
            format!("would restore TXID {txid:016x} from 3 files:"),
            expect(&after[..2])
        )
    );
    assert!(dir_entries(&out_dir).is_empty());

    // An existing output is left alone, with or without --force.
    std::fs::write(&out, b"precious").unwrap();
    for extra in [&["--dry-run"][..], &["--dry-run", "--force"][..]] {
        let o = restore(extra);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        assert_eq!(plan_of(&o).1, expect(&after), "{extra:?}");
        assert_eq!(std::fs::read(&out).unwrap(), b"precious", "{extra:?}");
        assert_eq!(dir_entries(&out_dir), vec!["restored.db".to_string()]);
    }
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: plain libc calls on a descriptor this function owns; `name` is a
    // NUL-terminated buffer that outlives the calls reading it.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = std::fs::File::from_raw_fd(m);
        assert_eq!(libc::grantpt(m), 0, "grantpt");
        assert_eq!(libc::unlockpt(m), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_str()
            .unwrap()
            .to_owned();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .unwrap();
        (master, slave)
    }
}

/// The progress display: on a terminal it shows (the control: stderr on a
/// pseudo-terminal), and captured output (pipes, as in scripts and CI logs) has no
/// progress line and no terminal control sequence.
#[test]
fn restore_progress_only_on_a_terminal() {
    use std::io::Read;
    const PROGRESS: &str = "restoring plan: ";
    let dir = tempfile::tempdir().unwrap();
    let (url, ids) = backup_with_history(dir.path());
    assert!(ids.len() >= 3, "{ids:?}");

    let piped = dir.path().join("piped.db");
    let o = run(
        &["restore", "plan", "-o", piped.to_str().unwrap(), "-b", &url],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = stderr(&o);
    assert!(err.contains("restored "), "{err}");
    assert!(
        !err.contains(PROGRESS) && !err.contains('\r') && !err.contains('\x1b'),
        "progress output on a pipe: {err:?}"
    );

    let (mut master, slave) = pty();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave descriptor is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let on_tty = dir.path().join("tty.db");
    let status = {
        let mut cmd = std::process::Command::new(bin());
        cmd.args([
            "restore",
            "plan",
            "-o",
            on_tty.to_str().unwrap(),
            "-b",
            &url,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(slave);
        let mut child = cmd.spawn().unwrap();
        child.wait().unwrap()
    };
    let shown = reader.join().unwrap();
    assert!(status.success(), "{shown}");
    assert!(
        shown.contains(PROGRESS) && shown.contains("\x1b[K"),
        "no progress on a terminal: {shown:?}"
    );
    assert_eq!(
        std::fs::read(&piped).unwrap(),
        std::fs::read(&on_tty).unwrap()
    );
}
