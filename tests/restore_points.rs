//! Point-in-time restore with the real binary: the source is recorded at several
//! points while `walvault watch` runs; `restore --txid` of the TXID that ends each
//! point, and `restore --timestamp` of a time just after it, give exactly that state.
//! (Every single TXID and file timestamp, with random workloads, is covered by
//! tests/restore_property.rs; the engine's model test covers the plan.)

mod e2e_support;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e_support::*;
use rusqlite::Connection;

/// SHA-256 of the user tables' rows (walvault's own `_walvault_seq` moves on with
/// every checkpoint, so it is left out).
fn content_digest(db: &std::path::Path) -> String {
    let c = Connection::open(db).unwrap();
    let mut text = String::new();
    for table in ["kv", "big"] {
        let mut st = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY id"))
            .unwrap();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let id: i64 = r.get(0).unwrap();
            let v: rusqlite::types::Value = r.get(1).unwrap();
            text.push_str(&format!("{table}:{id}:{v:?}\n"));
        }
    }
    walvault::integrity::sha256_hex(text.as_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits until the replica's newest TXID has not moved for a while (everything written
/// so far is shipped) and returns it.
fn settled_tip(url: &str) -> u64 {
    let mut last = 0;
    let mut stable = 0;
    for _ in 0..200 {
        let tip = remote_files(url, "points", None)
            .iter()
            .map(|(id, _, _)| id.max_txid)
            .max()
            .unwrap_or(0);
        if tip == last && tip > 0 {
            stable += 1;
            if stable >= 4 {
                return tip;
            }
        } else {
            stable = 0;
            last = tip;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the replica did not settle");
}

#[test]
fn restore_at_recorded_points_by_txid_and_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let db = dir.path().join("points.db");
    create_db(&db);
    let w = Watcher::start(&[&db], &url, &[], &dir.path().join("watch.log"));
    let mut work = Workload::open(&db, 5);
    let mut points = Vec::new();
    for round in 0..6 {
        work.run(150, if round == 3 { Some(100) } else { None });
        let txid = settled_tip(&url);
        // A time after the point's last file and before the next round's first.
        std::thread::sleep(Duration::from_millis(20));
        points.push((txid, now_ms(), content_digest(&db)));
        std::thread::sleep(Duration::from_millis(20));
    }
    w.stop();
    for (i, (txid, at, digest)) in points.iter().enumerate() {
        let by_txid = dir.path().join(format!("txid-{i}.db"));
        let o = run(
            &[
                "restore",
                "points",
                "-o",
                by_txid.to_str().unwrap(),
                "-b",
                &url,
                "--txid",
                &format!("{txid:016x}"),
            ],
            &[],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            &content_digest(&by_txid),
            digest,
            "restore --txid {txid:x} differs from the source at that point"
        );

        let by_time = dir.path().join(format!("time-{i}.db"));
        let ts = walvault_engine::time::format_rfc3339_ms(*at);
        let o = run(
            &[
                "restore",
                "points",
                "-o",
                by_time.to_str().unwrap(),
                "-b",
                &url,
                "--timestamp",
                &ts,
            ],
            &[],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            &content_digest(&by_time),
            digest,
            "restore --timestamp {ts} differs from the source at that point"
        );
        let ok: String = Connection::open(&by_time)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
    }
    // Before the first file there is nothing to restore.
    let o = run(
        &[
            "restore",
            "points",
            "-o",
            dir.path().join("early.db").to_str().unwrap(),
            "-b",
            &url,
            "--timestamp",
            "2000-01-01T00:00:00Z",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!dir.path().join("early.db").exists());
}

/// The stored object of a level-0 file in a `file://` replica.
fn l0_object(replica: &std::path::Path, id: walvault_engine::keys::FileId) -> std::path::PathBuf {
    let name = format!("{:016x}-{:016x}.ltx", id.min_txid, id.max_txid);
    let mut dirs = vec![replica.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|n| n == name.as_str())
                && p.parent().is_some_and(|d| d.ends_with("0"))
            {
                return p;
            }
        }
    }
    panic!("no object for {id} under {}", replica.display());
}

/// A replicator's uploads land out of order, so a latest restore can meet a hole with
/// files above it while an upload is in flight: it lists again and restores the newest
/// state once the file lands (and `verify`, listing the same way, finds nothing wrong).
/// A hole that stays is a lost file: the restore fails, names the gap, creates nothing,
/// `verify` exits 1, and `--txid` of the state before the gap still restores.
#[test]
fn a_latest_restore_waits_out_a_file_in_flight_and_fails_on_a_lost_one() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let db = dir.path().join("points.db");
    create_db(&db);
    let w = Watcher::start(&[&db], &url, &[], &dir.path().join("watch.log"));
    let mut work = Workload::open(&db, 11);
    for _ in 0..4 {
        work.run(100, None);
        settled_tip(&url);
    }
    w.stop();
    drop(work);
    let mut l0: Vec<_> = remote_files(&url, "points", None)
        .into_iter()
        .map(|(id, _, _)| id)
        .filter(|id| id.level == 0)
        .collect();
    l0.sort_by_key(|id| id.min_txid);
    assert!(l0.len() >= 4, "too few files: {l0:?}");
    let victim = l0[l0.len() / 2];
    let object = l0_object(&replica, victim);
    let aside = dir.path().join("in-flight.ltx");
    let before_gap = format!("{:016x}", victim.min_txid - 1);

    // In flight: the file lands while the restore is listing again.
    std::fs::rename(&object, &aside).unwrap();
    let out = dir.path().join("latest.db");
    let child = std::process::Command::new(bin())
        .args(["restore", "points", "-o", out.to_str().unwrap(), "-b", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let verify = std::process::Command::new(bin())
        .args(["verify", "points", "-b", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::rename(&aside, &object).unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("listing again"), "{stderr}");
    let v = verify.wait_with_output().unwrap();
    let (vout, err) = (
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr),
    );
    assert_eq!(v.status.code(), Some(0), "{vout}{err}");
    assert!(err.contains("listing again"), "{err}");
    checkpoint_truncate(&db);
    walvault::compare::compare_pages(&db, &out, page_size(&db)).unwrap();

    // Lost: the restore fails after its relists and says what can be restored.
    std::fs::rename(&object, &aside).unwrap();
    let lost = dir.path().join("lost.db");
    let lost_args = [
        "restore",
        "points",
        "-o",
        lost.to_str().unwrap(),
        "-b",
        &url,
    ];
    let o = run(&lost_args, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("gap after {before_gap}")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("--txid {before_gap}")), "{stderr}");
    assert!(!lost.exists());
    let v = run(&["verify", "points", "-b", &url], &[]);
    assert_eq!(
        v.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let o = run(&[&lost_args[..], &["--txid", &before_gap]].concat(), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ok: String = Connection::open(&lost)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}
