//! Property test of the real restore (`walvault restore`, the binary, so
//! `cli/src/restore.rs` end to end): for random workloads replicated by the real
//! `walvault watch` into a `file://` replica, restoring at EVERY TXID that exists
//! remotely gives exactly the source database at that TXID, page for page; restoring at
//! a timestamp (each file's timestamp, and 1 ms either side) gives the newest TXID at or
//! before it.
//!
//! How the source state at every remote TXID is known. The test drives replication one
//! step at a time, and each step commits exactly one transaction to the source:
//! * a round of the workload: one random transaction (inserts, updates, deletes, blobs
//!   that grow the file, deletes that free pages), or a `VACUUM` that shrinks it;
//! * starting `walvault watch` (its `_walvault_seq` write; commits made while it was
//!   stopped, or an application `wal_checkpoint(TRUNCATE)` in between, ride along in
//!   the file it ships, a full-database file after the checkpoint);
//! * `walvault snapshot` while `watch` is stopped (a level-0 file and a level-9 snapshot
//!   ending at the same TXID).
//!
//! After each step the test waits until the replica holds the whole source WAL (the
//! newest level-0 file's header ends at the WAL's last commit, with the WAL's salts),
//! asserts that exactly one new TXID appeared, and records the source image under it.
//! Nothing else writes meanwhile: the test is the only application, and walvault's own
//! checkpoints are off (`--checkpoint-frames` far above what a run writes; they would
//! add `_walvault_seq` commits at times the test does not control; the engine's model
//! test and the simulator cover them at every TXID). The application's own automatic
//! checkpoints stay on; runs end with a clean stop or a SIGKILL (the next run then
//! skips TXIDs: a fenced first file, whose end is the TXID to restore).
//!
//! The oracle is SQLite itself, not walvault's WAL parser: the database and its WAL
//! are copied aside, SQLite recovers the copied WAL and checkpoints it into the copy
//! (`wal_checkpoint(TRUNCATE)`), and the copy's bytes are the image at that TXID.
//!
//! The timestamp oracle is the definition: the largest TXID among the files whose
//! header time is at or before T (every level-0 file is kept, so the chain from TXID 1
//! is complete and that TXID is reachable); before the first file, restore must fail.
//! The binary's summary line names the TXID it restored; the test checks it and the
//! bytes.
//!
//! Seeds: `RESTORE_PROPERTY_SEEDS=7,8,9` runs others (the default six take ~20 s in
//! a debug build).

mod e2e_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e_support::{bin, run};
use rusqlite::Connection;
use walvault::storage::{ReplicaUrl, Store, StoreOptions};
use walvault_engine::ltx::Header;
use walvault_engine::wal::{WalHeader, WalScanner};

const NAME: &str = "prop";
const DEFAULT_SEEDS: [u64; 6] = [1, 2, 3, 4, 5, 6];

/// xorshift64*: the whole case follows from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Case {
    seed: u64,
    rng: Rng,
    dir: tempfile::TempDir,
    db: PathBuf,
    url: String,
    conn: Connection,
    rt: tokio::runtime::Runtime,
    store: Store,
    watcher: Option<Child>,
    log: PathBuf,
    /// Source image at each TXID that ends a remote file.
    images: BTreeMap<u64, Vec<u8>>,
    tip: u64,
    /// Distinguishes rows so every round changes the database.
    serial: i64,
    /// What happened, for the failure message.
    trace: Vec<String>,
}

impl Case {
    fn new(seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(format!("{NAME}.db"));
        let page_size = [512, 1024, 4096][rng.below(3) as usize];
        let conn = Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA page_size={page_size}; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE big (id INTEGER PRIMARY KEY, data BLOB NOT NULL);"
        ))
        .unwrap();
        let url = format!("file://{}", dir.path().join("replica").display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt
            .block_on(Store::open(
                &ReplicaUrl::parse(&url).unwrap(),
                &StoreOptions::default(),
            ))
            .unwrap();
        Case {
            seed,
            rng,
            log: dir.path().join("watch.log"),
            dir,
            db,
            url,
            conn,
            rt,
            store,
            watcher: None,
            images: BTreeMap::new(),
            tip: 0,
            serial: 0,
            trace: vec![format!("page size {page_size}")],
        }
    }

    fn context(&self) -> String {
        format!(
            "seed {} (RESTORE_PROPERTY_SEEDS={} reruns it); steps: {}",
            self.seed,
            self.seed,
            self.trace.join(", ")
        )
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `walvault watch`, ready once it holds its read lock (after its `_walvault_seq`
    /// write) and knows the replica's tip.
    fn start(&mut self) {
        const READY: &str = "starting replication";
        let before = self.log_text().matches(READY).count();
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin())
            .arg("watch")
            .arg(&self.db)
            .args(["-b", &self.url, "--sync-interval", "100ms", "-v"])
            .args(["--checkpoint-frames", "100000000"])
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        self.watcher = Some(child);
        let started = Instant::now();
        while self.log_text().matches(READY).count() <= before {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "walvault watch did not start ({}):\n{}",
                self.context(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.trace.push("start".into());
        self.step_shipped("start");
    }

    /// SIGTERM (a clean stop ships everything) or SIGKILL (everything is already
    /// shipped: the next run fences off TXIDs).
    fn stop(&mut self, kill: bool) {
        let mut child = self.watcher.take().unwrap();
        if kill {
            child.kill().unwrap();
            child.wait().unwrap();
            self.trace.push("kill".into());
        } else {
            let st = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(st.success());
            let status = child.wait().unwrap();
            assert_eq!(
                status.code(),
                Some(0),
                "walvault watch did not stop cleanly ({}):\n{}",
                self.context(),
                self.log_text()
            );
            self.trace.push("stop".into());
        }
        // Nothing was pending: a stop adds no TXID.
        assert_eq!(
            self.remote_tip(),
            self.tip,
            "a stop with nothing pending added a TXID ({})",
            self.context()
        );
    }

    /// One random transaction; it always inserts a new row, so it always commits
    /// something.
    fn write_txn(&mut self) {
        self.serial += 1;
        let tx = self.conn.unchecked_transaction().unwrap();
        tx.execute(
            "INSERT INTO kv (id, v) VALUES (?1, ?2)",
            rusqlite::params![100_000 + self.serial, format!("round {}", self.serial)],
        )
        .unwrap();
        let ops = self.rng.below(12);
        let mut what = Vec::new();
        for _ in 0..ops {
            let r = self.rng.next();
            let id = (r >> 8) % 400;
            match r % 10 {
                0..=3 => {
                    let len = 1 + (r >> 20) % 300;
                    tx.execute(
                        "INSERT OR REPLACE INTO kv (id, v) VALUES (?1, ?2)",
                        rusqlite::params![id as i64, "x".repeat(len as usize)],
                    )
                    .unwrap();
                }
                4 => {
                    tx.execute(
                        "UPDATE kv SET v = v || 'u' WHERE id % 7 = ?1",
                        [(id % 7) as i64],
                    )
                    .unwrap();
                }
                5 => {
                    tx.execute(
                        "DELETE FROM kv WHERE id BETWEEN ?1 AND ?1 + 30",
                        [id as i64],
                    )
                    .unwrap();
                }
                6 | 7 => {
                    let len = 200 + (r >> 16) % 9_000;
                    let blob: Vec<u8> = (0..len).map(|j| (j ^ r) as u8).collect();
                    tx.execute("INSERT INTO big (data) VALUES (?1)", [blob])
                        .unwrap();
                    what.push("blob");
                }
                _ => {
                    tx.execute("DELETE FROM big WHERE id % 3 = ?1", [(id % 3) as i64])
                        .unwrap();
                    what.push("free");
                }
            }
        }
        tx.commit().unwrap();
        self.trace
            .push(format!("txn({ops} ops {})", what.join("+")));
    }

    fn vacuum(&mut self) {
        self.conn.execute_batch("VACUUM").unwrap();
        self.trace.push("vacuum".into());
    }

    /// A round while `watch` runs: one commit, shipped as one new TXID.
    fn round(&mut self) {
        if self.rng.below(8) == 0 {
            self.vacuum();
        } else {
            self.write_txn();
        }
        self.step_shipped("commit");
    }

    /// Between runs: commits that the next start ships, an application checkpoint that
    /// empties the WAL (the next start writes a full-database file), or a snapshot.
    fn between_runs(&mut self) {
        match self.rng.below(4) {
            0 => {}
            1 => {
                for _ in 0..1 + self.rng.below(3) {
                    self.write_txn();
                }
            }
            2 => {
                let (busy, _, _): (i64, i64, i64) = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .unwrap();
                assert_eq!(busy, 0);
                self.trace.push("app checkpoint".into());
                self.write_txn();
            }
            _ => {
                let o = run(
                    &["snapshot", self.db.to_str().unwrap(), "-b", &self.url],
                    &[],
                );
                assert!(
                    o.status.success(),
                    "walvault snapshot failed ({}): {}",
                    self.context(),
                    String::from_utf8_lossy(&o.stderr)
                );
                self.trace.push("snapshot".into());
                // The process has exited: everything it wrote is in place.
                self.record_new_tip("snapshot");
                let ids = self.ids();
                assert!(
                    ids.iter()
                        .any(|id| id.level == 9 && id.min_txid == 1 && id.max_txid == self.tip),
                    "no snapshot ending at {:016x}: {ids:?}",
                    self.tip
                );
            }
        }
    }

    fn ids(&self) -> Vec<walvault_engine::keys::FileId> {
        self.rt
            .block_on(walvault::remote::list_files(&self.store, NAME))
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    }

    fn remote_tip(&self) -> u64 {
        self.ids().iter().map(|id| id.max_txid).max().unwrap_or(0)
    }

    fn header(&self, id: walvault_engine::keys::FileId) -> Header {
        self.rt
            .block_on(walvault::remote::read_header(&self.store, NAME, id))
            .unwrap()
    }

    /// Waits until the newest level-0 file ends where the source WAL's last commit
    /// ends (same WAL generation), then records the new TXID.
    fn step_shipped(&mut self, what: &str) {
        let started = Instant::now();
        loop {
            let ids = self.ids();
            let newest = ids
                .iter()
                .filter(|id| id.level == 0 && id.max_txid > self.tip)
                .max_by_key(|id| id.max_txid);
            if let Some(&id) = newest {
                let h = self.header(id);
                if Some((h.wal_salt1, h.wal_salt2, h.wal_offset + h.wal_size))
                    == wal_commit_end(&self.db)
                {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the replica did not catch up with the source after {what} ({}); files {ids:?}\n{}",
                self.context(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.record_new_tip(what);
    }

    /// Exactly one TXID must have appeared since the last step: the state it ends is
    /// the source's current one.
    fn record_new_tip(&mut self, what: &str) {
        let ids = self.ids();
        let new: BTreeSet<u64> = ids
            .iter()
            .map(|id| id.max_txid)
            .filter(|&t| t > self.tip)
            .collect();
        assert_eq!(
            new.len(),
            1,
            "{what} should add exactly one TXID after {:016x}, the replica has {new:x?} ({})",
            self.tip,
            self.context()
        );
        let txid = *new.iter().next().unwrap();
        self.images.insert(txid, self.source_image());
        self.tip = txid;
        self.trace.push(format!("=> {txid:x}"));
    }

    /// The source's current state as SQLite sees it: the database and WAL copied
    /// aside, the copy's WAL recovered and checkpointed by SQLite, the copy's bytes.
    fn source_image(&self) -> Vec<u8> {
        let copy = self.dir.path().join("oracle");
        let _ = fs::remove_dir_all(&copy);
        fs::create_dir_all(&copy).unwrap();
        let db = copy.join("copy.db");
        fs::copy(&self.db, &db).unwrap();
        let wal = walvault::database::wal_path(&self.db);
        if wal.exists() {
            fs::copy(&wal, walvault::database::wal_path(&db)).unwrap();
        }
        {
            let c = Connection::open(&db).unwrap();
            let (busy, log, done): (i64, i64, i64) = c
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap();
            assert_eq!((busy, log, done), (0, 0, 0), "oracle checkpoint incomplete");
        }
        let image = fs::read(&db).unwrap();
        fs::remove_dir_all(&copy).unwrap();
        image
    }

    /// Restores with the real binary; `Ok((txid, bytes))` or `Err(stderr)`.
    fn restore(&self, target: &[&str]) -> Result<(u64, Vec<u8>), String> {
        let out = self.dir.path().join("restored.db");
        let mut args = vec![
            "restore",
            NAME,
            "-o",
            out.to_str().unwrap(),
            "-b",
            &self.url,
        ];
        args.extend_from_slice(target);
        let o = run(&args, &[]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            assert!(!out.exists(), "a failed restore left its output");
            return Err(stderr);
        }
        let txid = stderr
            .split("to TXID ")
            .nth(1)
            .and_then(|s| s.get(..16))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .unwrap_or_else(|| panic!("no TXID in the restore summary: {stderr}"));
        let bytes = fs::read(&out).unwrap();
        fs::remove_file(&out).unwrap();
        Ok((txid, bytes))
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if let Some(mut c) = self.watcher.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Salts and end offset of the last committed transaction in `db`'s WAL (parsed with
/// walvault's WAL scanner: only to know when the replica has caught up, never as the
/// oracle of page contents).
fn wal_commit_end(db: &Path) -> Option<(u32, u32, u64)> {
    let wal = fs::read(walvault::database::wal_path(db)).ok()?;
    let header = WalHeader::parse(wal.get(..32)?).ok()?;
    let mut scanner = WalScanner::new(header);
    let mut end = None;
    scanner.feed(&wal[32..], &mut |txn| end = Some(txn.end_offset));
    Some((header.salt1, header.salt2, end?))
}

/// The first page where two images differ, for the failure message.
fn first_difference(a: &[u8], b: &[u8], page_size: usize) -> String {
    if a.len() != b.len() {
        return format!("{} bytes vs {} bytes", a.len(), b.len());
    }
    match a
        .chunks(page_size)
        .zip(b.chunks(page_size))
        .position(|(x, y)| x != y)
    {
        Some(i) => format!("page {} differs", i + 1),
        None => "identical".into(),
    }
}

fn page_size_of(image: &[u8]) -> usize {
    match u16::from_be_bytes([image[16], image[17]]) {
        1 => 65_536,
        n => n as usize,
    }
}

fn run_case(seed: u64) -> (usize, usize) {
    let mut c = Case::new(seed);
    let runs = 3;
    for r in 0..runs {
        if r > 0 {
            c.between_runs();
        }
        c.start();
        for _ in 0..3 + c.rng.below(4) {
            c.round();
        }
        let kill = c.rng.below(4) == 0 && r + 1 < runs;
        c.stop(kill);
    }
    let ctx = c.context();

    // Every TXID that ends a remote file has a recorded image, and no other exists.
    let ids = c.ids();
    let remote: BTreeSet<u64> = ids.iter().map(|id| id.max_txid).collect();
    let recorded: BTreeSet<u64> = c.images.keys().copied().collect();
    assert_eq!(remote, recorded, "remote TXIDs vs recorded states ({ctx})");

    // Restore at every TXID.
    let mut failures = Vec::new();
    for (&txid, image) in &c.images {
        match c.restore(&["--txid", &format!("{txid:016x}")]) {
            Ok((got, bytes)) => {
                if got != txid || bytes != *image {
                    failures.push(format!(
                        "--txid {txid:x}: restored TXID {got:x}, {}",
                        first_difference(&bytes, image, page_size_of(image))
                    ));
                }
            }
            Err(e) => failures.push(format!("--txid {txid:x} failed: {e}")),
        }
    }
    let (latest, image) = c.images.last_key_value().unwrap();
    match c.restore(&[]) {
        Ok((got, bytes)) if got == *latest && bytes == *image => {}
        Ok((got, _)) => failures.push(format!("latest: TXID {got:x}, expected {latest:x}")),
        Err(e) => failures.push(format!("latest failed: {e}")),
    }

    // Restore at each file's timestamp and 1 ms either side.
    let times: Vec<(i64, u64)> = ids
        .iter()
        .map(|&id| (c.header(id).timestamp_ms, id.max_txid))
        .collect();
    let targets: BTreeSet<i64> = times.iter().flat_map(|&(t, _)| [t - 1, t, t + 1]).collect();
    for &t in &targets {
        let ts = walvault_engine::time::format_rfc3339_ms(t);
        let expected = times
            .iter()
            .filter(|&&(ft, _)| ft <= t)
            .map(|&(_, txid)| txid)
            .max();
        match (expected, c.restore(&["--timestamp", &ts])) {
            (None, Err(_)) => {}
            (None, Ok((got, _))) => failures.push(format!(
                "--timestamp {ts} is before every file but restored TXID {got:x}"
            )),
            (Some(e), Err(err)) => {
                failures.push(format!("--timestamp {ts} (expected {e:x}) failed: {err}"))
            }
            (Some(e), Ok((got, bytes))) => {
                let image = &c.images[&e];
                if got != e || bytes != *image {
                    failures.push(format!(
                        "--timestamp {ts}: restored TXID {got:x}, expected {e:x} ({})",
                        first_difference(&bytes, image, page_size_of(image))
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} restores wrong ({ctx}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    if std::env::var_os("RESTORE_PROPERTY_VERBOSE").is_some() {
        eprintln!("{ctx}");
    }
    (c.images.len(), targets.len())
}

#[test]
fn restore_at_every_remote_txid_and_timestamp() {
    let seeds: Vec<u64> = match std::env::var("RESTORE_PROPERTY_SEEDS") {
        Ok(s) => s
            .split(',')
            .map(|x| x.trim().parse().expect("RESTORE_PROPERTY_SEEDS: numbers"))
            .collect(),
        Err(_) => DEFAULT_SEEDS.to_vec(),
    };
    for seed in seeds {
        let started = Instant::now();
        let (txids, times) = run_case(seed);
        eprintln!(
            "seed {seed}: {txids} TXIDs and {times} timestamps restored and compared in {:?}",
            started.elapsed()
        );
    }
}
