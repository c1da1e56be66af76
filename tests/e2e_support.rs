//! Shared pieces of the end-to-end tests: running the real `walvault` binary,
//! a deterministic SQLite workload, and checks on what landed in the replica.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Sends `sig` (e.g. `-STOP`) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// How many times `needle` occurs in the log file.
pub fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_walvault")
}

const READY: &str = "starting replication";

/// A running `walvault watch`.
pub struct Watcher {
    child: Option<Child>,
    log: PathBuf,
}

impl Watcher {
    pub fn start(dbs: &[&Path], url: &str, env: &[(&'static str, String)], log: &Path) -> Watcher {
        Watcher::start_with(dbs, url, env, log, &[])
    }

    /// [`Watcher::start`] with `extra` arguments for `watch`.
    pub fn start_with(
        dbs: &[&Path],
        url: &str,
        env: &[(&'static str, String)],
        log: &Path,
        extra: &[&str],
    ) -> Watcher {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("watch").args(dbs).args(["-b", url, "-v"]);
        // Ticks every 100 ms unless the test sets its own interval.
        if !extra.contains(&"--sync-interval") {
            cmd.args(["--sync-interval", "100ms"]);
        }
        cmd.args(extra);
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd.stdout(Stdio::null()).stderr(logf.try_clone().unwrap());
        let before = std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches(READY)
            .count();
        let child = cmd.spawn().expect("spawning walvault watch");
        let w = Watcher {
            child: Some(child),
            log: log.to_path_buf(),
        };
        // Ready once every database holds its read lock and knows the replica's tip.
        let start = Instant::now();
        while w.log_text().matches(READY).count() < before + dbs.len() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "walvault watch did not start:\n{}",
                w.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        w
    }

    /// SIGTERM, then wait: a clean stop must exit 0 after shipping everything.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
        let status = wait_timeout(&mut child, Duration::from_secs(60));
        assert_eq!(
            status,
            Some(0),
            "walvault watch did not exit 0 on SIGTERM; log:\n{}",
            self.log_text()
        );
    }

    /// Waits for the process to exit on its own; `None` on timeout (then it is killed).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        wait_timeout(&mut child, timeout)
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until the log holds `needle` at least `n` times.
    pub fn wait_for_log(&self, needle: &str, n: usize, timeout: Duration) {
        let start = Instant::now();
        while self.log_text().matches(needle).count() < n {
            assert!(
                start.elapsed() < timeout,
                "no {n} x '{needle}' in the log within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.output().expect("running walvault")
}

pub fn create_db(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         CREATE TABLE big (id INTEGER PRIMARY KEY, data BLOB NOT NULL);",
    )
    .unwrap();
}

/// Deterministic mixed workload: inserts, updates, deletes, multi-statement
/// transactions, blobs that grow the file, and an optional VACUUM after `vacuum_at`.
pub struct Workload {
    conn: Connection,
    x: u64,
    pub commits: u64,
}

impl Workload {
    pub fn open(path: &Path, seed: u64) -> Workload {
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
        Workload {
            conn,
            x: seed | 1,
            commits: 0,
        }
    }

    /// The application's own checkpoints off: only walvault checkpoints.
    pub fn without_autocheckpoint(self) -> Workload {
        self.conn
            .execute_batch("PRAGMA wal_autocheckpoint=0")
            .unwrap();
        self
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    pub fn run(&mut self, txns: u64, vacuum_at: Option<u64>) {
        for i in 0..txns {
            let ops = 1 + Self::next(&mut self.x) % 3;
            let tx = self.conn.unchecked_transaction().unwrap();
            for _ in 0..ops {
                let r = Self::next(&mut self.x);
                let id = (r >> 8) % 2_000;
                match r % 10 {
                    0..=3 => {
                        tx.execute(
                            "INSERT OR REPLACE INTO kv (id, v) VALUES (?1, ?2)",
                            rusqlite::params![id as i64, format!("v{r:x}")],
                        )
                        .unwrap();
                    }
                    4 | 5 => {
                        tx.execute("UPDATE kv SET v = v || 'u' WHERE id = ?1", [id as i64])
                            .unwrap();
                    }
                    6 => {
                        tx.execute("DELETE FROM kv WHERE id = ?1", [id as i64])
                            .unwrap();
                    }
                    _ => {
                        let len = 3_000 + (r >> 16) % 6_000;
                        let blob: Vec<u8> = (0..len).map(|j| (j ^ r) as u8).collect();
                        tx.execute("INSERT INTO big (data) VALUES (?1)", [blob])
                            .unwrap();
                    }
                }
            }
            tx.commit().unwrap();
            self.commits += 1;
            if vacuum_at == Some(i) {
                self.conn
                    .execute_batch("DELETE FROM big WHERE id % 3 = 0; VACUUM;")
                    .unwrap();
                self.commits += 2;
            }
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(15));
            }
        }
    }

    pub fn page_count(&self) -> u64 {
        self.conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap()
    }
}

/// Folds the WAL into the database file so the file holds the source's final state.
pub fn checkpoint_truncate(path: &Path) {
    let c = Connection::open(path).unwrap();
    let (busy, _, _): (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(busy, 0, "checkpoint of the source was busy");
}

pub fn page_size(path: &Path) -> usize {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}

/// Restores `name` with the real binary and compares it page for page with `source`.
pub fn restore_and_compare(
    name: &str,
    source: &Path,
    url: &str,
    out: &Path,
    env: &[(&'static str, String)],
) -> u64 {
    let o = run(
        &["restore", name, "-o", out.to_str().unwrap(), "-b", url],
        env,
    );
    assert!(
        o.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    checkpoint_truncate(source);
    let pages = walvault::compare::compare_pages(source, out, page_size(source)).unwrap();
    let ok: String = Connection::open(out)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    pages
}

/// Runs `f` with the store at `url` open, on a runtime of this thread.
pub fn with_store<T>(
    url: &str,
    endpoint: Option<String>,
    f: impl AsyncFnOnce(walvault::storage::Store) -> T,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = walvault::storage::ReplicaUrl::parse(url).unwrap();
        let opts = walvault::storage::StoreOptions {
            endpoint,
            ..Default::default()
        };
        f(walvault::storage::Store::open(&url, &opts).await.unwrap()).await
    })
}

/// The LTX files of `name` in the replica, with their headers.
pub fn remote_files(
    url: &str,
    name: &str,
    endpoint: Option<String>,
) -> Vec<(
    walvault_engine::keys::FileId,
    walvault_engine::ltx::Header,
    u64,
)> {
    with_store(url, endpoint, async |store| {
        let files = walvault::remote::list_files(&store, name).await.unwrap();
        let mut out = Vec::new();
        for f in files {
            let bytes = match store.get(&walvault::remote::key(&store, name, f.id)).await {
                Ok(b) => b,
                // Deleted between listing and reading (a running Litestream retires files).
                Err(walvault::storage::StoreError::NotFound(_)) => continue,
                Err(e) => panic!("reading {}: {e}", f.id),
            };
            let (h, pages, _) =
                walvault_engine::ltx::decode_all(&bytes).expect("every stored file decodes");
            out.push((f.id, h, pages.len() as u64));
        }
        out
    })
}

/// Level-0 TXIDs must form one contiguous chain from 1 with no duplicates.
pub fn assert_contiguous_l0(
    files: &[(
        walvault_engine::keys::FileId,
        walvault_engine::ltx::Header,
        u64,
    )],
) -> u64 {
    let mut l0: Vec<_> = files
        .iter()
        .filter(|(id, _, _)| id.level == 0)
        .map(|(id, _, _)| *id)
        .collect();
    l0.sort();
    let mut next = 1;
    for id in &l0 {
        assert_eq!(
            id.min_txid, next,
            "L0 chain broken at {id:?}; chain: {l0:?}"
        );
        next = id.max_txid + 1;
    }
    next - 1
}

/// Every level-0 file carries walvault's SHA-256 of its bytes, and each one after the
/// first names the SHA-256 of the file it extends: the hash chain is unbroken.
pub fn assert_hash_chain(url: &str, name: &str, endpoint: Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = walvault::storage::ReplicaUrl::parse(url).unwrap();
        let opts = walvault::storage::StoreOptions {
            endpoint,
            ..Default::default()
        };
        let store = walvault::storage::Store::open(&url, &opts).await.unwrap();
        let mut files = walvault::remote::list_files(&store, name).await.unwrap();
        files.retain(|f| f.id.level == 0);
        files.sort_by_key(|f| f.id.min_txid);
        let mut prev: Option<(u64, String)> = None;
        for f in &files {
            let key = walvault::remote::key(&store, name, f.id);
            let meta = store
                .metadata(&key)
                .await
                .unwrap()
                .expect("listed object exists");
            let sha = meta
                .get(walvault::storage::METADATA_SHA256)
                .unwrap_or_else(|| panic!("{key} has no digest"));
            let bytes = store.get(&key).await.unwrap();
            assert_eq!(
                sha,
                &walvault::integrity::sha256_hex(&bytes),
                "{key}: recorded digest is wrong"
            );
            if let Some((max, p)) = &prev
                && max + 1 == f.id.min_txid
            {
                assert_eq!(
                    meta.get(walvault::storage::METADATA_PREV_SHA256),
                    Some(p),
                    "{key}: chain link"
                );
            }
            prev = Some((f.id.max_txid, sha.clone()));
        }
    });
}

/// `walvault verify` finds nothing wrong with `name`, in default and in `--full` mode.
pub fn assert_verify_ok(url: &str, name: &str, env: &[(&'static str, String)]) {
    for full in [false, true] {
        let mut args = vec!["verify", name, "-b", url];
        if full {
            args.push("--full");
        }
        let o = run(&args, env);
        assert_eq!(
            o.status.code(),
            Some(0),
            "walvault {} found problems:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The database checksum walvault recorded for its newest level-0 file equals the
/// checksum of the source database's current state, computed here independently.
pub fn assert_recorded_checksum(url: &str, name: &str, endpoint: Option<String>, source: &Path) {
    let ps = page_size(source);
    let bytes = db_image(source);
    let lock = walvault_engine::ltx::lock_pgno(ps as u32);
    let mut sum = walvault_engine::dbsum::ImageSum::default();
    for (i, page) in bytes.chunks(ps).enumerate() {
        let pgno = i as u32 + 1;
        if pgno != lock {
            sum.add(pgno, page);
        }
    }
    let expected = format!("{:016x}", sum.value());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = walvault::storage::ReplicaUrl::parse(url).unwrap();
        let opts = walvault::storage::StoreOptions {
            endpoint,
            ..Default::default()
        };
        let store = walvault::storage::Store::open(&url, &opts).await.unwrap();
        let files = walvault::remote::list_files(&store, name).await.unwrap();
        let newest = files
            .iter()
            .filter(|f| f.id.level == 0)
            .max_by_key(|f| f.id.max_txid)
            .unwrap();
        let key = walvault::remote::key(&store, name, newest.id);
        let meta = store.metadata(&key).await.unwrap().unwrap();
        assert_eq!(
            meta.get(walvault::storage::METADATA_DB_CHECKSUM),
            Some(&expected),
            "{key}: recorded database checksum"
        );
    });
}

/// The database's current image without checkpointing it: the database file with the
/// committed WAL frames applied (newest wins), cut to the last commit's size.
pub fn db_image(path: &Path) -> Vec<u8> {
    use walvault_engine::wal::{WalHeader, WalScanner};
    let mut image = std::fs::read(path).unwrap();
    let wal = std::fs::read(walvault::database::wal_path(path)).unwrap_or_default();
    let Some(header) = wal.get(..32).and_then(|h| WalHeader::parse(h).ok()) else {
        return image;
    };
    let ps = header.page_size as usize;
    let mut scanner = WalScanner::new(header);
    let mut commit = None;
    scanner.feed(&wal[32..], &mut |txn| {
        for f in txn.frames {
            let at = f.offset as usize + 24;
            let page = &wal[at..at + ps];
            let off = (f.pgno as usize - 1) * ps;
            if image.len() < off + ps {
                image.resize(off + ps, 0);
            }
            image[off..off + ps].copy_from_slice(page);
        }
        commit = Some(txn.commit as usize);
    });
    if let Some(c) = commit {
        image.resize(c * ps, 0);
    }
    image
}
