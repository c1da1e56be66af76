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
