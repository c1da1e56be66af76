//! The source at recorded points of a compatibility workload: what the replica had
//! reached, when, and the database's image then; restoring each point with both tools
//! and comparing with that image page for page.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::e2e_support::*;
use crate::litestream_rig::*;
use rusqlite::Connection;
use walvault_engine::keys::FileId;

/// The source database as it was at one point of a workload: the TXID the replica had
/// reached, a wall time after every file up to that TXID and before the next one, and
/// the database's image (every page, as a restore must rebuild it) in a file.
pub struct SourcePoint {
    pub txid: u64,
    pub at_ms: i64,
    pub image: PathBuf,
}

/// When the replica counts as settled at its tip.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The tip has not moved for a while.
    Tip,
    /// The same, and a level-1 file ends at the tip. Where Litestream's L0 retention
    /// deletes compacted level-0 files, only such a point stays restorable.
    L1AtTip,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `name`'s files in the replica, from one listing (no downloads).
pub fn list_ids(rig: &Rig, prefix: &str, name: &str) -> Vec<FileId> {
    list_files(rig, prefix, name).iter().map(|f| f.id).collect()
}

/// Waits until the replica's newest TXID has stayed the same over four listings
/// 100 ms apart (the replicator has shipped everything committed so far) and `how`
/// holds, and returns that TXID.
pub fn settled_tip(rig: &Rig, prefix: &str, name: &str, how: Settle) -> u64 {
    let start = Instant::now();
    let (mut last, mut stable) = (0, 0);
    loop {
        let ids = list_ids(rig, prefix, name);
        let tip = ids.iter().map(|id| id.max_txid).max().unwrap_or(0);
        if tip == last && tip > 0 {
            stable += 1;
        } else {
            (last, stable) = (tip, 0);
        }
        let ready = match how {
            Settle::Tip => true,
            Settle::L1AtTip => ids.iter().any(|id| id.level == 1 && id.max_txid == tip),
        };
        if stable >= 3 && ready {
            return tip;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the replica of {name} did not settle: {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The source's committed state, without checkpointing it: the database file with the
/// WAL's committed frames applied. A read transaction is held meanwhile, so no
/// checkpoint can restart or truncate the WAL between the two reads.
pub fn source_image(db: &Path) -> Vec<u8> {
    let c = Connection::open(db).unwrap();
    c.execute_batch("BEGIN").unwrap();
    let _: i64 = c
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    let image = db_image(db);
    c.execute_batch("COMMIT").unwrap();
    image
}

/// Records the source at the replica's settled tip, while the replicator keeps
/// running: the TXID, a wall time a few ms after the tip's files were listed (so no
/// file's timestamp equals it: Litestream restores files strictly before a time,
/// walvault at or before it), and the image. Retried when the replica moved while the
/// image was taken (a replicator's own write to its `_*_seq` table).
///
/// Returns once the next whole second after the probe time has begun: Litestream
/// refuses `-timestamp` after the newest upload time (S3 LastModified, whole seconds),
/// so the caller must let the replicator upload something after the point, and that
/// upload must fall in a later second. Every test does.
pub fn record_point(
    rig: &Rig,
    prefix: &str,
    name: &str,
    db: &Path,
    how: Settle,
    points: &mut Vec<SourcePoint>,
) {
    for _ in 0..5 {
        let txid = settled_tip(rig, prefix, name, how);
        std::thread::sleep(Duration::from_millis(5));
        let at_ms = now_ms();
        std::thread::sleep(Duration::from_millis(5));
        let image = source_image(db);
        if settled_tip(rig, prefix, name, how) != txid {
            continue;
        }
        let path = rig.path(&format!("{name}-source-{}.db", points.len()));
        std::fs::write(&path, image).unwrap();
        points.push(SourcePoint {
            txid,
            at_ms,
            image: path,
        });
        let next_second = (at_ms / 1000 + 1) * 1000 + 20;
        let wait = next_second - now_ms();
        if wait > 0 {
            std::thread::sleep(Duration::from_millis(wait as u64));
        }
        return;
    }
    panic!("the replica of {name} kept moving while the source was recorded");
}

/// Every recorded point restores, with both tools, by TXID (`--txid` / `-txid`) and
/// by time (`--timestamp` / `-timestamp` at the recorded wall time), to exactly the
/// source's image at that point, page for page, and passes `integrity_check`.
pub fn restores_equal_source(rig: &Rig, prefix: &str, name: &str, points: &[SourcePoint]) {
    assert!(!points.is_empty());
    let files = rig.files(prefix, name);
    let url = rig.wv_url(prefix);
    for (i, p) in points.iter().enumerate() {
        // The premise of the time probes: no file is timestamped at the probe itself,
        // where the tools' boundaries differ.
        if let Some((id, _, _)) = files.iter().find(|(_, h, _)| h.timestamp_ms == p.at_ms) {
            panic!("{id} is timestamped exactly at probe {}", p.at_ms);
        }
        let ts = walvault_engine::time::format_rfc3339_ms(p.at_ms);
        let ps = page_size(&p.image);
        let outs = [
            ("wv-txid", rig.path(&format!("{name}-p{i}-wv-txid.db"))),
            ("ls-txid", rig.path(&format!("{name}-p{i}-ls-txid.db"))),
            ("wv-time", rig.path(&format!("{name}-p{i}-wv-time.db"))),
            ("ls-time", rig.path(&format!("{name}-p{i}-ls-time.db"))),
        ];
        wv_restore(&url, name, &outs[0].1, Some(p.txid), &rig.env());
        rig.ls_restore(prefix, name, &outs[1].1, Some(p.txid));
        let o = run(
            &[
                "restore",
                name,
                "-o",
                outs[2].1.to_str().unwrap(),
                "-b",
                &url,
                "--timestamp",
                &ts,
            ],
            &rig.env(),
        );
        assert!(
            o.status.success(),
            "walvault restore --timestamp {ts} (point {i}, TXID {:x}) failed:\n{}",
            p.txid,
            output_text(&o)
        );
        let o = rig.litestream(&[
            "restore",
            "-integrity-check",
            "full",
            "-o",
            outs[3].1.to_str().unwrap(),
            "-timestamp",
            &ts,
            &rig.ls_url(prefix, name),
        ]);
        let text = output_text(&o);
        assert!(
            o.status.success(),
            "litestream restore -timestamp {ts} (point {i}, TXID {:x}) failed:\n{text}",
            p.txid
        );
        assert_no_warnings("litestream restore", &text);
        for (what, out) in &outs {
            if let Err(e) = walvault::compare::compare_pages(&p.image, out, ps) {
                panic!(
                    "{what} restore of point {i} (TXID {:x}, {ts}) differs from the source \
                     at that point: {e:#}",
                    p.txid
                );
            }
            integrity_ok(out);
        }
    }
}
