//! The watched SQLite database as the shell touches it: opening and checking it, the
//! long read transaction that keeps SQLite from restarting the WAL behind walvault's
//! back, checkpoints, and raw reads of WAL frames and database pages.
//!
//! Like Litestream, walvault writes one row to its own `_walvault_seq` table before
//! taking the read transaction: a read transaction on a fully checkpointed WAL would
//! use read-mark 0, which does not stop a WAL restart.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags};
use walvault_engine::replicator::{CheckpointMode, CheckpointResult};
use walvault_engine::spec::PageReader;

pub struct Database {
    pub path: PathBuf,
    pub wal_path: PathBuf,
    pub page_size: u32,
    conn: Connection,
    /// Second connection holding the write lock while a checkpoint is prepared.
    writer: Option<Connection>,
    /// Our one handle on the database file, open for as long as `conn`. Closing *any*
    /// descriptor of a file drops every POSIX lock this process holds on it, SQLite's
    /// included; an application closing its last connection would then think it is
    /// alone, checkpoint and delete the WAL under us. So pages are read through this
    /// handle and it is never closed before `conn`.
    db_file: File,
    in_read_tx: bool,
}

/// The stem users and the store know a database by (`/data/app.db` → `app`).
pub fn db_name(path: &Path) -> Result<String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("cannot derive a database name from {}", path.display()))?;
    Ok(stem.to_string())
}

pub fn wal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

impl Database {
    pub fn open(path: &Path) -> Result<Database> {
        if !path.exists() {
            bail!("database {} does not exist: check the path", path.display());
        }
        refuse_if_litestream_is_running(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .with_context(|| format!("{} is not a readable SQLite database", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!(
                "database {} is in '{mode}' journal mode, not WAL: run `sqlite3 {} 'PRAGMA journal_mode=WAL;'` \
                 (walvault replicates WAL-mode databases only)",
                path.display(),
                path.display()
            );
        }
        disable_lookaside(&conn);
        // Our connection must never checkpoint on its own, not even when it closes last
        // (that would fold the WAL away and lose the resume point); the engine decides.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -256;
             CREATE TABLE IF NOT EXISTS _walvault_seq (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL);",
        )
        .with_context(|| format!("preparing {} for replication", path.display()))?;
        let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let db_file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Database {
            wal_path: wal_path(path),
            path: path.to_path_buf(),
            page_size,
            conn,
            db_file,
            in_read_tx: false,
            writer: None,
        })
    }

    /// Writes a row (so the WAL holds an unbackfilled frame), then opens the read
    /// transaction that pins the WAL until [`Database::release_read_lock`].
    pub fn acquire_read_lock(&mut self) -> Result<()> {
        if self.in_read_tx {
            return Ok(());
        }
        self.conn
            .execute(
                "INSERT INTO _walvault_seq (id, seq) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1",
                [],
            )
            .context("writing the _walvault_seq row")?;
        self.conn.execute_batch("BEGIN")?;
        let _: i64 = self
            .conn
            .query_row("SELECT COUNT(1) FROM _walvault_seq", [], |r| r.get(0))?;
        self.in_read_tx = true;
        Ok(())
    }

    pub fn release_read_lock(&mut self) -> Result<()> {
        if self.in_read_tx {
            self.conn.execute_batch("ROLLBACK")?;
            self.in_read_tx = false;
        }
        Ok(())
    }

    /// Blocks the application's writers by taking the write lock (BEGIN IMMEDIATE) on
    /// a second connection, trying for about 200 ms. The read transaction stays held,
    /// so a failed attempt costs nothing. Returns whether writers are now blocked.
    pub fn lock_writers(&mut self) -> Result<bool> {
        if self.writer.is_none() {
            let w = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            disable_lookaside(&w);
            w.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )?;
            w.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -64;")?;
            self.writer = Some(w);
        }
        let Some(w) = self.writer.as_ref() else {
            return Ok(false);
        };
        // SQLite's default busy handler sleeps up to 100 ms between tries; a writer
        // that commits back to back leaves only microsecond gaps, which so few tries
        // rarely hit (the WAL then grew to 1.6 GB under the highest commit rate).
        // Polling every half millisecond finds a gap.
        w.busy_handler(Some(poll_for_lock))?;
        Ok(w.execute_batch("BEGIN IMMEDIATE").is_ok())
    }

    /// Lets writers go (the read lock was never released).
    pub fn unlock_writers(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take()
            && !w.is_autocommit()
        {
            w.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    /// With writers blocked (and every frame replicated): PASSIVE checkpoint from a
    /// second connection, let writers go, then (TRUNCATE mode) truncate the WAL, and
    /// take the read lock again. If the checkpoint backfilled everything, the next
    /// write (often our own `_walvault_seq` row) restarts the WAL, and the engine knows
    /// that nothing it had not shipped was in it.
    pub fn checkpoint(&mut self, mode: CheckpointMode) -> Result<CheckpointResult> {
        self.release_read_lock()?;
        let mut result = checkpoint_row(&self.conn, "PRAGMA wal_checkpoint(PASSIVE)")
            .context("running a PASSIVE checkpoint");
        self.unlock_writers()?;
        if mode == CheckpointMode::Truncate && result.is_ok() {
            // Writers may slip in between letting them go and this: the engine answers
            // a TRUNCATE with a full snapshot for that reason.
            self.conn
                .busy_timeout(std::time::Duration::from_millis(500))?;
            result = checkpoint_row(&self.conn, "PRAGMA wal_checkpoint(TRUNCATE)")
                .context("running a TRUNCATE checkpoint");
            self.conn.busy_timeout(std::time::Duration::from_secs(5))?;
        }
        let reacquire = self.acquire_read_lock();
        let result = result?;
        reacquire?;
        Ok(result)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Fails when the path no longer names the file we replicate (the database was
    /// replaced or deleted): replicating the old inode would silently freeze.
    pub fn check_still_same_file(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let ours = self.db_file.metadata()?;
        match std::fs::metadata(&self.path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => Ok(()),
            Ok(_) => bail!(
                "{} was replaced by another file while being replicated: restart walvault so it \
                 replicates the new file (it will continue the chain with a full snapshot)",
                self.path.display()
            ),
            Err(e) => bail!(
                "{} disappeared while being replicated ({e}): restore it or stop walvault",
                self.path.display()
            ),
        }
    }

    /// Page access for building files, through the long-lived database handle.
    pub fn pages(&self) -> FilePages<'_> {
        FilePages {
            wal: File::open(&self.wal_path).ok(),
            db: &self.db_file,
        }
    }
}

fn checkpoint_row(conn: &Connection, sql: &str) -> Result<CheckpointResult> {
    Ok(conn.query_row(sql, [], |r| {
        Ok(CheckpointResult {
            busy: r.get::<_, i64>(0)? != 0,
            log_frames: r.get(1)?,
            checkpointed_frames: r.get(2)?,
        })
    })?)
}

/// Two replicators on one database corrupt each other's chain (Litestream overwrites
/// without conditions). Refuse to start while a `litestream replicate` process on this
/// machine names this database, on its command line or in its config file. (Handing a
/// database over from a stopped Litestream is fine: walvault continues its chain.)
fn refuse_if_litestream_is_running(path: &Path) -> Result<()> {
    let Ok(abs) = std::fs::canonicalize(path) else {
        return Ok(());
    };
    if let Some(pid) = litestream_replicating(&abs) {
        bail!(
            "Litestream (pid {pid}) is replicating {} right now: stop it before starting walvault. \
             Two replicators on one database overwrite each other's files; walvault continues \
             Litestream's chain once Litestream has stopped",
            path.display()
        );
    }
    Ok(())
}

/// A running `litestream replicate`: its pid, working directory and arguments.
struct LitestreamProcess {
    pid: u32,
    cwd: PathBuf,
    args: Vec<String>,
}

/// How long one scan of `/proc` answers for: `watch` opens its databases one after the
/// other, and 1 000 databases must not mean 1 000 scans of every process's cmdline.
const PROCESS_SCAN_REUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The running `litestream replicate` processes, from a scan at most
/// [`PROCESS_SCAN_REUSE`] old.
fn litestream_processes() -> std::sync::Arc<Vec<LitestreamProcess>> {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    static LAST: Mutex<Option<(Instant, Arc<Vec<LitestreamProcess>>)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, found)) = last.as_ref()
        && at.elapsed() < PROCESS_SCAN_REUSE
    {
        return Arc::clone(found);
    }
    let found = Arc::new(scan_litestream_processes());
    *last = Some((Instant::now(), Arc::clone(&found)));
    found
}

fn scan_litestream_processes() -> Vec<LitestreamProcess> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_litestream = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|n| n == "litestream");
        if !is_litestream || !args.iter().any(|a| a == "replicate") {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        found.push(LitestreamProcess { pid, cwd, args });
    }
    found
}

/// The pid of a running `litestream replicate` that covers `db` (an absolute path).
fn litestream_replicating(db: &Path) -> Option<u32> {
    let db_s = db.to_string_lossy();
    for p in litestream_processes().iter() {
        let names_db = |arg: &str| std::fs::canonicalize(p.cwd.join(arg)).is_ok_and(|c| c == db);
        if p.args
            .iter()
            .skip(2)
            .any(|a| !a.starts_with('-') && names_db(a))
        {
            return Some(p.pid);
        }
        let config = p
            .args
            .iter()
            .position(|a| a == "-config" || a == "--config")
            .and_then(|i| p.args.get(i + 1))
            .map(|c| p.cwd.join(c))
            .unwrap_or_else(|| PathBuf::from("/etc/litestream.yml"));
        if std::fs::read_to_string(&config).is_ok_and(|text| text.contains(db_s.as_ref())) {
            return Some(p.pid);
        }
    }
    None
}

/// What one WAL read returned.
pub struct WalChunk {
    pub header: Option<[u8; 32]>,
    pub file_len: u64,
    pub db_len: u64,
    pub data: Vec<u8>,
}

/// Reads the WAL header and up to `max_len` bytes at `offset`, allocating only what
/// is there to read (an idle database allocates nothing). `db_path` is only stat'ed:
/// opening and closing it would drop SQLite's locks (see [`Database`]).
pub fn read_wal(db_path: &Path, wal_path: &Path, offset: u64, max_len: u64) -> Result<WalChunk> {
    let db_len = std::fs::metadata(db_path).map(|m| m.len()).unwrap_or(0);
    let file = match File::open(wal_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(WalChunk {
                header: None,
                file_len: 0,
                db_len,
                data: Vec::new(),
            });
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", wal_path.display())),
    };
    let file_len = file.metadata()?.len();
    let mut header = None;
    if file_len >= 32 {
        let mut h = [0u8; 32];
        file.read_exact_at(&mut h, 0)?;
        header = Some(h);
    }
    let want = file_len.saturating_sub(offset).min(max_len);
    let mut data = vec![0u8; usize::try_from(want)?];
    let mut got = 0usize;
    while got < data.len() {
        match file.read_at(&mut data[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    data.truncate(got);
    Ok(WalChunk {
        header,
        file_len,
        db_len,
        data,
    })
}

/// [`PageReader`] over the real WAL and database files.
pub struct FilePages<'a> {
    wal: Option<File>,
    db: &'a File,
}

impl PageReader for FilePages<'_> {
    fn read_wal_frame(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match &self.wal {
            Some(w) => w.read_exact_at(buf, offset),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the WAL file is gone",
            )),
        }
    }

    fn read_db_page(&mut self, pgno: u32, buf: &mut [u8]) -> std::io::Result<()> {
        walvault_engine::spec::read_page_at(|b, off| self.db.read_at(b, off), pgno, buf)
    }
}

/// Turns off SQLite's per-connection lookaside allocator (48 kB preallocated per
/// connection). Our connections run a handful of small statements, so it buys nothing
/// and costs 48 MB at 1 000 databases.
fn disable_lookaside(conn: &Connection) {
    // SAFETY: the handle is valid for `conn`'s lifetime; SQLITE_DBCONFIG_LOOKASIDE takes
    // (void* buffer, int slot size, int slot count), and a null buffer with zero slots
    // disables lookaside. Called right after open, before any lookaside memory is used.
    unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            0 as std::ffi::c_int,
            0 as std::ffi::c_int,
        );
    }
}

/// Busy handler for taking the write lock: retry every 0.5 ms, about 400 times.
fn poll_for_lock(tries: i32) -> bool {
    if tries >= 400 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_micros(500));
    true
}
