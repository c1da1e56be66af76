//! The replicator's side of SQLite, mirroring cli/src/database.rs step for step: its
//! connection (no checkpoint on close, no autocheckpoint, the `_walvault_seq` table),
//! the long read transaction taken after a `_walvault_seq` write, writers blocked with
//! BEGIN IMMEDIATE on a second connection, the checkpoint steps, raw WAL reads, and
//! page reads through the run's one long-lived database handle.
//!
//! The checkpoint is split into its steps so the simulator can let the application
//! run between them, as another process would in production.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use walvault_engine::replicator::CheckpointResult;
use walvault_engine::spec::PageReader;

use crate::app::{exec, open};
use crate::memfs::{self, MemFile};

pub struct ReplicaDb {
    pub page_size: u32,
    conn: Connection,
    writer: Option<Connection>,
    in_read_tx: bool,
}

fn err(what: &str, e: rusqlite::Error) -> String {
    format!("{what}: {e}")
}

impl ReplicaDb {
    /// `Database::open`: WAL mode check, no checkpoint on close, no autocheckpoint,
    /// the `_walvault_seq` table, the page size.
    pub fn open(path: &Path) -> Result<ReplicaDb, String> {
        let conn = open(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err("opening the database", e))?;
        conn.busy_timeout(Duration::ZERO)
            .map_err(|e| err("busy timeout", e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| err("journal mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("database is in '{mode}' journal mode, not WAL"));
        }
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(|e| err("no checkpoint on close", e))?;
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -256;
             CREATE TABLE IF NOT EXISTS _walvault_seq (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL);",
        )
        .map_err(|e| err("preparing the database for replication", e))?;
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| err("page size", e))?;
        Ok(ReplicaDb {
            page_size,
            conn,
            writer: None,
            in_read_tx: false,
        })
    }

    pub fn in_read_tx(&self) -> bool {
        self.in_read_tx
    }

    pub fn writers_locked(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| !w.is_autocommit())
    }

    /// A `_walvault_seq` write, then BEGIN and a read: the read transaction takes a
    /// non-zero read mark, so SQLite cannot restart the WAL under the replicator.
    pub fn acquire_read_lock(&mut self) -> Result<(), String> {
        if self.in_read_tx {
            return Ok(());
        }
        // Through the statement cache: these run at every start and checkpoint.
        exec(
            &self.conn,
            "INSERT INTO _walvault_seq (id, seq) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1",
        )
        .map_err(|e| err("writing the _walvault_seq row", e))?;
        exec(&self.conn, "BEGIN").map_err(|e| err("BEGIN", e))?;
        let r: rusqlite::Result<i64> = self
            .conn
            .prepare_cached("SELECT COUNT(1) FROM _walvault_seq")
            .and_then(|mut s| s.query_row([], |r| r.get(0)));
        if let Err(e) = r {
            let _ = exec(&self.conn, "ROLLBACK");
            return Err(err("reading _walvault_seq", e));
        }
        self.in_read_tx = true;
        Ok(())
    }

    pub fn release_read_lock(&mut self) -> Result<(), String> {
        if self.in_read_tx {
            exec(&self.conn, "ROLLBACK").map_err(|e| err("ROLLBACK", e))?;
            self.in_read_tx = false;
        }
        Ok(())
    }

    /// BEGIN IMMEDIATE on a second connection (production waits 100 ms; here a held
    /// lock is one held longer than that). The read transaction stays held.
    pub fn lock_writers(&mut self, path: &Path) -> Result<bool, String> {
        if self.writer.is_none() {
            let w = open(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| err("opening the writer connection", e))?;
            w.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .map_err(|e| err("no checkpoint on close", e))?;
            w.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -64;")
                .map_err(|e| err("writer pragmas", e))?;
            w.busy_timeout(Duration::ZERO)
                .map_err(|e| err("busy timeout", e))?;
            self.writer = Some(w);
        }
        let Some(w) = self.writer.as_ref() else {
            return Ok(false);
        };
        Ok(w.execute_batch("BEGIN IMMEDIATE").is_ok())
    }

    /// Lets writers go; the writer connection is closed (as production does).
    pub fn unlock_writers(&mut self) -> Result<(), String> {
        if let Some(w) = self.writer.take()
            && !w.is_autocommit()
        {
            w.execute_batch("ROLLBACK")
                .map_err(|e| err("ROLLBACK of the writer lock", e))?;
        }
        Ok(())
    }

    /// One `PRAGMA wal_checkpoint(...)` on the replicator's connection.
    pub fn checkpoint_step(&self, truncate: bool) -> Result<CheckpointResult, String> {
        let sql = if truncate {
            "PRAGMA wal_checkpoint(TRUNCATE)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_row([], |r| {
                    Ok(CheckpointResult {
                        busy: r.get::<_, i64>(0)? != 0,
                        log_frames: r.get(1)?,
                        checkpointed_frames: r.get(2)?,
                    })
                })
            })
            .map_err(|e| err(sql, e))
    }

    /// The process dies: connections close (writer first), locks go with them.
    pub fn close(mut self) {
        if let Some(w) = self.writer.take() {
            drop(w);
        }
        drop(self);
    }
}

/// The run's handle on the WAL file. Production opens the WAL for every read and
/// every file it builds; the WAL carries no POSIX lock and its inode never changes
/// while the application's connections are open, so one handle is the same thing.
pub struct WalHandle {
    path: PathBuf,
    file: Option<MemFile>,
}

impl WalHandle {
    pub fn new(path: PathBuf) -> WalHandle {
        WalHandle { path, file: None }
    }

    /// The WAL, or `None` while it does not exist.
    pub fn get(&mut self) -> Option<&MemFile> {
        if self.file.is_none() {
            self.file = memfs::open(&self.path);
        }
        self.file.as_ref()
    }
}

pub use walvault_engine::release::WalChunk;

/// `database::read_wal`, first half: the database file's length (production stats the
/// path; here the run's database handle), the WAL's length and header.
pub fn read_wal_head(db: &MemFile, wal: Option<&MemFile>) -> Result<WalChunk, String> {
    let db_len = db.len();
    let Some(file) = wal else {
        return Ok(WalChunk {
            header: None,
            file_len: 0,
            db_len,
            data: Vec::new(),
        });
    };
    let file_len = file.len();
    let mut header = None;
    if file_len >= 32 {
        let mut h = [0u8; 32];
        file.read_exact_at(&mut h, 0)
            .map_err(|e| format!("reading the WAL header: {e}"))?;
        header = Some(h);
    }
    Ok(WalChunk {
        header,
        file_len,
        db_len,
        data: Vec::new(),
    })
}

/// Second half: up to `max_len` bytes at `offset`, as many as the length read first
/// allows (the application may have written in between).
pub fn read_wal_data(
    chunk: &mut WalChunk,
    wal: Option<&MemFile>,
    offset: u64,
    max_len: u64,
) -> Result<(), String> {
    let Some(file) = wal else {
        return Ok(());
    };
    let want = chunk.file_len.saturating_sub(offset).min(max_len);
    let mut data = Vec::with_capacity(want as usize);
    file.read_into(&mut data, offset, want);
    chunk.data = data;
    Ok(())
}

/// `FilePages`: the WAL and the database through the run's handles.
/// `stale_page` (a mutation) serves the first WAL page from the database file.
pub struct Pages<'a> {
    pub wal: Option<&'a MemFile>,
    pub db: &'a MemFile,
    pub page_size: u64,
    pub stale_page: bool,
}

impl PageReader for Pages<'_> {
    fn read_wal_frame(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match &self.wal {
            Some(w) => {
                w.read_exact_at(buf, offset)?;
                if self.stale_page {
                    self.stale_page = false;
                    let pgno = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    if pgno > 0 {
                        let (_, page) = buf.split_at_mut(24);
                        self.read_db_page(pgno, page)?;
                    }
                }
                Ok(())
            }
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
