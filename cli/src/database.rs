//! The watched SQLite database as the shell touches it: opening and checking it, the
//! long read transaction that keeps SQLite from restarting the WAL behind walvault's
//! back, checkpoints, raw reads of WAL frames and database pages, and letting go of
//! all of it while the database is idle (decision 21).
//!
//! Like Litestream, walvault writes one row to its own `_walvault_seq` table before
//! taking the read transaction: a read transaction on a fully checkpointed WAL would
//! use read-mark 0, which does not stop a WAL restart.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags};
use walvault_engine::replicator::{CheckpointMode, CheckpointResult};
use walvault_engine::spec::PageReader;

use crate::litestream_guard::refuse_if_litestream_is_running;

pub struct Database {
    pub path: PathBuf,
    pub wal_path: PathBuf,
    pub page_size: u32,
    /// Device and inode of the file first opened: the database must stay that file.
    identity: (u64, u64),
    /// The connection and handle while attached; `None` while released (idle).
    open: Option<Attached>,
}

/// What an attached database holds. Fields drop in order: both connections close
/// before `db_file` (see there).
struct Attached {
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

/// Whether an error is SQLite's "busy" or "locked": worth trying again shortly.
pub fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    })
}

impl Database {
    /// Opens and checks the database; it comes back attached (connection open, no
    /// read transaction yet).
    pub fn open(path: &Path) -> Result<Database> {
        if !path.exists() {
            bail!("database {} does not exist: check the path", path.display());
        }
        refuse_if_litestream_is_running(path)?;
        let (conn, page_size) = connect(path)?;
        let db_file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let m = db_file.metadata()?;
        Ok(Database {
            wal_path: wal_path(path),
            path: path.to_path_buf(),
            page_size,
            identity: (m.dev(), m.ino()),
            open: Some(Attached {
                conn,
                writer: None,
                db_file,
                in_read_tx: false,
            }),
        })
    }

    pub fn is_attached(&self) -> bool {
        self.open.is_some()
    }

    /// Opens the connection again after [`Database::release`] and takes the read lock.
    /// Fails when the path now names another file, the database left WAL mode or its
    /// page size changed; SQLite's busy errors ([`is_busy`]) are worth a retry.
    pub fn attach(&mut self) -> Result<()> {
        if self.open.is_none() {
            // The handle first, so that a replaced file is caught before SQLite opens it.
            let db_file = File::open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            self.check_identity(&db_file.metadata()?)?;
            let (conn, page_size) = connect(&self.path)?;
            if page_size != self.page_size {
                bail!(
                    "the page size of {} changed from {} to {page_size} while it was idle: restart \
                     walvault to replicate it with the new page size",
                    self.path.display(),
                    self.page_size
                );
            }
            self.open = Some(Attached {
                conn,
                writer: None,
                db_file,
                in_read_tx: false,
            });
        }
        self.acquire_read_lock()
    }

    /// Ends the read transaction and closes both connections and the file handle, so an
    /// idle database costs no SQLite memory, `-shm` mapping or descriptor. Our
    /// connection never checkpoints on close, so the WAL stays as it is.
    pub fn release(&mut self) -> Result<()> {
        let result = self.release_read_lock();
        self.open = None;
        result
    }

    fn attached(&mut self) -> Result<&mut Attached> {
        match self.open.as_mut() {
            Some(a) => Ok(a),
            None => bail!(
                "internal error: {} was used while released (idle)",
                self.path.display()
            ),
        }
    }

    /// Writes a row (so the WAL holds an unbackfilled frame), then opens the read
    /// transaction that pins the WAL until [`Database::release_read_lock`].
    pub fn acquire_read_lock(&mut self) -> Result<()> {
        let a = self.attached()?;
        if a.in_read_tx {
            return Ok(());
        }
        a.conn
            .execute(
                "INSERT INTO _walvault_seq (id, seq) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1",
                [],
            )
            .context("writing the _walvault_seq row")?;
        a.conn.execute_batch("BEGIN")?;
        let _: i64 = a
            .conn
            .query_row("SELECT COUNT(1) FROM _walvault_seq", [], |r| r.get(0))?;
        a.in_read_tx = true;
        Ok(())
    }

    pub fn release_read_lock(&mut self) -> Result<()> {
        if let Some(a) = self.open.as_mut()
            && a.in_read_tx
        {
            a.conn.execute_batch("ROLLBACK")?;
            a.in_read_tx = false;
        }
        Ok(())
    }

    /// Blocks the application's writers by taking the write lock (BEGIN IMMEDIATE) on
    /// a second connection, trying for about 200 ms. The read transaction stays held,
    /// so a failed attempt costs nothing. Returns whether writers are now blocked.
    pub fn lock_writers(&mut self) -> Result<bool> {
        let path = self.path.clone();
        let a = self.attached()?;
        if a.writer.is_none() {
            let w = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            disable_lookaside(&w);
            w.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )?;
            w.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -64;")?;
            a.writer = Some(w);
        }
        let Some(w) = a.writer.as_ref() else {
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
        if let Some(a) = self.open.as_mut()
            && let Some(w) = a.writer.take()
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
        let a = self.attached()?;
        let mut result = checkpoint_row(&a.conn, "PRAGMA wal_checkpoint(PASSIVE)")
            .context("running a PASSIVE checkpoint");
        self.unlock_writers()?;
        let a = self.attached()?;
        if mode == CheckpointMode::Truncate && result.is_ok() {
            // Writers may slip in between letting them go and this: the engine answers
            // a TRUNCATE with a full snapshot for that reason.
            a.conn.busy_timeout(std::time::Duration::from_millis(500))?;
            result = checkpoint_row(&a.conn, "PRAGMA wal_checkpoint(TRUNCATE)")
                .context("running a TRUNCATE checkpoint");
            a.conn.busy_timeout(std::time::Duration::from_secs(5))?;
        }
        let reacquire = self.acquire_read_lock();
        let result = result?;
        reacquire?;
        Ok(result)
    }

    /// Fails when the path no longer names the file we replicate (the database was
    /// replaced or deleted): replicating the old inode would silently freeze.
    pub fn check_still_same_file(&self) -> Result<()> {
        match std::fs::metadata(&self.path) {
            Ok(now) => self.check_identity(&now),
            Err(e) => bail!(
                "{} disappeared while being replicated ({e}): restore it or stop walvault",
                self.path.display()
            ),
        }
    }

    fn check_identity(&self, now: &std::fs::Metadata) -> Result<()> {
        if (now.dev(), now.ino()) != self.identity {
            bail!(
                "{} was replaced by another file while being replicated: restart walvault so it \
                 replicates the new file (it will continue the chain with a full snapshot)",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Page access for building files, through the long-lived database handle.
    pub fn pages(&self) -> Result<FilePages<'_>> {
        let Some(a) = self.open.as_ref() else {
            bail!(
                "{} is released (idle): its pages are not read without the read lock",
                self.path.display()
            );
        };
        Ok(FilePages {
            wal: File::open(&self.wal_path).ok(),
            db: &a.db_file,
        })
    }
}

/// Opens our connection to `path` and checks it: WAL mode, no checkpoint of its own
/// (not even on close), our `_walvault_seq` table. Returns it and the page size.
fn connect(path: &Path) -> Result<(Connection, u32)> {
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
    Ok((conn, page_size))
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

pub use walvault_engine::release::WalChunk;

/// The WAL's length, modification time in ns, and how many ms ago that was (0, 0, 0
/// when there is none): a look between ticks (`Command::StatWal`). A failing stat
/// answers "no WAL", which only makes the engine read at its next look or tick; a
/// modification time in the future (a clock step) counts as just now.
pub fn stat_wal(wal_path: &Path) -> (u64, u64, u64) {
    let Ok(m) = std::fs::metadata(wal_path) else {
        return (0, 0, 0);
    };
    let modified = m.modified().ok();
    let stamp = modified
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let idle_ms = modified
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map_or(0, |d| d.as_millis() as u64);
    (m.len(), stamp, idle_ms)
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
