//! The application side of the SQLite world: the per-seed directory, the database,
//! SQLite's PRNG pinned to the seed, and the application's three connections (writes,
//! a long transaction that spills uncommitted frames, and checkpoints of every mode
//! from another connection). The replicator's own connections are in replica_db.rs.
//!
//! Every connection has a zero busy timeout: the simulation is single-threaded, so a
//! lock held now stays held until a later event, and waiting would only burn time.
//! A lock that production would wait for (100 ms, 5 s) is modelled as one held longer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use crate::memfs::{self, MemFile};
use crate::memvfs;
use crate::plan::{AppOp, CkptMode};
use crate::rng::SplitMix;

/// Pins SQLite's process-wide PRNG (WAL salts, temp names) to `seed`. Must be called
/// before each run: the PRNG is global and a sweep runs many seeds per process.
pub fn pin_sqlite_prng(seed: u64) {
    // 0 would mean "the OS's randomness": any other value seeds the PRNG.
    let h = crate::rng::SplitMix(seed).next_u64();
    let x = match (h >> 32) as u32 {
        0 => 1,
        v => v as i32,
    };
    // SAFETY: SQLITE_TESTCTRL_PRNG_SEED takes (int seed, sqlite3 *db); a null db means
    // "seed with x". It only resets the PRNG state; single-threaded use.
    unsafe {
        rusqlite::ffi::sqlite3_test_control(
            rusqlite::ffi::SQLITE_TESTCTRL_PRNG_SEED,
            x,
            std::ptr::null_mut::<rusqlite::ffi::sqlite3>(),
        );
    }
}

/// Opens `path` through the simulator's in-memory VFS (`memvfs.rs`).
pub fn open(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    Connection::open_with_flags_and_vfs(path, flags, memvfs::name())
}

/// The directory a run works in. Its files live in memory (`memfs.rs`); the path is
/// on tmpfs, when there is one, for the files of a failed run kept for inspection.
pub fn run_dir(seed: u64, tag: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("walvault-sim-{}-{tag}-{seed}", std::process::id()))
}

pub fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Something was committed.
    pub committed: bool,
    /// A lock was held by someone else (the operation did nothing).
    pub busy: bool,
    /// For checkpoints: (busy, log frames, checkpointed frames).
    pub ckpt: Option<(bool, i64, i64)>,
}

pub struct App {
    pub dir: PathBuf,
    pub db_path: PathBuf,
    pub wal_path: PathBuf,
    pub page_size: u32,
    app: Option<Connection>,
    long: Option<Connection>,
    ckpt: Option<Connection>,
    long_open: bool,
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// One statement without results through the connection's statement cache (the hot
/// path of every write: parsing `BEGIN IMMEDIATE` and `COMMIT` again each time was a
/// visible share of a run).
pub(crate) fn exec(c: &Connection, sql: &str) -> rusqlite::Result<()> {
    c.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn max_id(c: &Connection) -> rusqlite::Result<i64> {
    c.prepare_cached("SELECT coalesce(max(id), 0) FROM t")?
        .query_row([], |r| r.get(0))
}

fn conn(path: &Path, autockpt: u32, cache_pages: i64) -> rusqlite::Result<Connection> {
    let c = open(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::ZERO)?;
    c.execute_batch(&format!(
        "PRAGMA synchronous = OFF; PRAGMA temp_store = MEMORY; PRAGMA cache_size = {cache_pages};
         PRAGMA wal_autocheckpoint = {autockpt};"
    ))?;
    Ok(c)
}

impl App {
    /// Creates the database (page size, auto-vacuum, WAL mode, schema) in a fresh dir.
    pub fn create(
        dir: PathBuf,
        page_size: u32,
        auto_vacuum: bool,
        autockpt: u32,
    ) -> Result<App, String> {
        memfs::remove_dir(&dir);
        let db_path = dir.join("sim.db");
        let setup = || -> rusqlite::Result<(Connection, Connection, Connection)> {
            let app = open(
                &db_path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            app.busy_timeout(Duration::ZERO)?;
            app.execute_batch(&format!(
                "PRAGMA page_size = {page_size}; PRAGMA auto_vacuum = {};",
                if auto_vacuum { "INCREMENTAL" } else { "NONE" }
            ))?;
            let mode: String = app.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            assert_eq!(mode, "wal");
            app.execute_batch(&format!(
                "PRAGMA synchronous = OFF; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8192;
                 PRAGMA wal_autocheckpoint = {autockpt};
                 CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
                 CREATE INDEX t_k ON t (k);
                 CREATE TABLE big (id INTEGER PRIMARY KEY, v BLOB);"
            ))?;
            let long = conn(&db_path, autockpt, 8)?;
            let ckpt = conn(&db_path, 0, -2048)?;
            Ok((app, long, ckpt))
        };
        let (app, long, ckpt) = setup().map_err(|e| format!("creating the database: {e}"))?;
        Ok(App {
            wal_path: wal_path(&db_path),
            db_path,
            dir,
            page_size,
            app: Some(app),
            long: Some(long),
            ckpt: Some(ckpt),
            long_open: false,
        })
    }

    /// The one long-lived handle on the database file, opened once per run (in
    /// production, closing any descriptor of the file would drop every POSIX lock the
    /// process holds on it).
    pub fn open_db_handle(&self) -> Result<MemFile, String> {
        memfs::open(&self.db_path)
            .ok_or_else(|| format!("opening {}: no such file", self.db_path.display()))
    }

    pub fn long_open(&self) -> bool {
        self.long_open
    }

    /// Runs one operation. `Err` only for errors a correct harness never sees.
    pub fn run(&mut self, op: &AppOp) -> Result<Outcome, String> {
        let r = self.run_inner(op);
        match r {
            Ok(o) => Ok(o),
            Err(e) if is_busy(&e) => {
                if let Some(c) = self.app.as_ref()
                    && !c.is_autocommit()
                {
                    let _ = c.execute_batch("ROLLBACK");
                }
                Ok(Outcome {
                    busy: true,
                    ..Outcome::default()
                })
            }
            Err(e) => Err(format!("application operation {op:?} failed: {e}")),
        }
    }

    fn run_inner(&mut self, op: &AppOp) -> rusqlite::Result<Outcome> {
        let committed = Outcome {
            committed: true,
            ..Outcome::default()
        };
        let Some(app) = self.app.as_ref() else {
            return Ok(Outcome::default());
        };
        match *op {
            AppOp::Insert { rows, size, seed } => {
                let mut g = SplitMix(seed);
                exec(app, "BEGIN IMMEDIATE")?;
                {
                    let mut st = app.prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)")?;
                    for _ in 0..rows {
                        let k = (g.next_u64() % 1000) as i64;
                        let len = (g.next_u64() % u64::from(size.max(1))) as usize + 1;
                        st.execute(params![k, g.bytes(len)])?;
                    }
                }
                exec(app, "COMMIT")?;
                Ok(committed)
            }
            AppOp::Update { rows, size, seed } => {
                let mut g = SplitMix(seed);
                exec(app, "BEGIN IMMEDIATE")?;
                let max: i64 = max_id(app)?;
                if max > 0 {
                    let mut st = app.prepare_cached("UPDATE t SET k = ?1, v = ?2 WHERE id = ?3")?;
                    for _ in 0..rows {
                        let id = (g.next_u64() % max as u64) as i64 + 1;
                        let len = (g.next_u64() % u64::from(size.max(1))) as usize + 1;
                        st.execute(params![(g.next_u64() % 1000) as i64, g.bytes(len), id])?;
                    }
                }
                exec(app, "COMMIT")?;
                Ok(committed)
            }
            AppOp::Delete { rows, seed } => {
                let mut g = SplitMix(seed);
                exec(app, "BEGIN IMMEDIATE")?;
                if g.next_u64().is_multiple_of(4) {
                    exec(app, "DELETE FROM big WHERE id = (SELECT min(id) FROM big)")?;
                } else {
                    let max: i64 = max_id(app)?;
                    if max > 0 {
                        let mut st = app.prepare_cached("DELETE FROM t WHERE id = ?1")?;
                        for _ in 0..rows {
                            st.execute(params![(g.next_u64() % max as u64) as i64 + 1])?;
                        }
                    }
                }
                exec(app, "COMMIT")?;
                Ok(committed)
            }
            AppOp::Large { pages, seed } => {
                let mut g = SplitMix(seed);
                let len = pages as usize * self.page_size as usize;
                app.prepare_cached("INSERT INTO big (v) VALUES (?1)")?
                    .execute(params![g.bytes(len)])?;
                Ok(committed)
            }
            AppOp::Vacuum => {
                app.execute_batch("VACUUM")?;
                Ok(committed)
            }
            AppOp::IncrementalVacuum => {
                app.execute_batch("PRAGMA incremental_vacuum")?;
                Ok(committed)
            }
            AppOp::Ddl { kind, seed } => {
                let n = seed % 4;
                let sql = match kind {
                    0 => {
                        format!(
                            "CREATE TABLE IF NOT EXISTS x{n} (a INTEGER PRIMARY KEY, b BLOB);
                             INSERT INTO x{n} (b) VALUES (x'00');"
                        )
                    }
                    1 => format!("DROP TABLE IF EXISTS x{n}"),
                    _ => {
                        if seed & 16 == 0 {
                            format!("CREATE INDEX IF NOT EXISTS t_v{n} ON t (v)")
                        } else {
                            format!("DROP INDEX IF EXISTS t_v{n}")
                        }
                    }
                };
                // One transaction per operation: the oracle observes after each.
                app.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; COMMIT;"))?;
                Ok(committed)
            }
            AppOp::LongBegin { rows, size, seed } => {
                if self.long_open {
                    return Ok(Outcome::default());
                }
                let Some(long) = self.long.as_ref() else {
                    return Ok(Outcome::default());
                };
                let mut g = SplitMix(seed);
                exec(long, "BEGIN IMMEDIATE")?;
                self.long_open = true;
                let r = (|| -> rusqlite::Result<()> {
                    let mut st = long.prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)")?;
                    for _ in 0..rows {
                        let len = (g.next_u64() % u64::from(size.max(1))) as usize + 1;
                        st.execute(params![(g.next_u64() % 1000) as i64, g.bytes(len)])?;
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    let _ = exec(long, "ROLLBACK");
                    self.long_open = false;
                    return Err(e);
                }
                Ok(Outcome::default())
            }
            AppOp::LongEnd { commit } => {
                if !self.long_open {
                    return Ok(Outcome::default());
                }
                let Some(long) = self.long.as_ref() else {
                    return Ok(Outcome::default());
                };
                self.long_open = false;
                if commit {
                    if let Err(e) = exec(long, "COMMIT") {
                        let _ = exec(long, "ROLLBACK");
                        return Err(e);
                    }
                    Ok(committed)
                } else {
                    exec(long, "ROLLBACK")?;
                    Ok(Outcome::default())
                }
            }
            AppOp::Checkpoint { mode } => self.checkpoint(mode),
        }
    }

    fn checkpoint(&self, mode: CkptMode) -> rusqlite::Result<Outcome> {
        let Some(c) = self.ckpt.as_ref() else {
            return Ok(Outcome::default());
        };
        let (busy, log, done): (i64, i64, i64) = c
            .prepare_cached(mode.sql())?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(Outcome {
            committed: false,
            busy: busy != 0,
            ckpt: Some((busy != 0, log, done)),
        })
    }

    /// End of the run: commit nothing more, fold the WAL into the database file so the
    /// file alone holds the final state (the oracle is checked against it).
    pub fn final_checkpoint(&mut self) -> Result<(bool, i64, i64), String> {
        if self.long_open {
            if let Some(l) = self.long.as_ref() {
                let _ = l.execute_batch("ROLLBACK");
            }
            self.long_open = false;
        }
        let o = self
            .checkpoint(CkptMode::Truncate)
            .map_err(|e| format!("final checkpoint: {e}"))?;
        Ok(o.ckpt.unwrap_or((true, -1, -1)))
    }

    /// Closes every application connection.
    pub fn close(&mut self) {
        self.long = None;
        self.ckpt = None;
        self.app = None;
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.close();
    }
}
