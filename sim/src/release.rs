//! Releasing an idle database's connection in simulated time, mirroring cli/src/idle.rs
//! and the release steps of cli/src/replicate_task/ (decision 21): once the engine is
//! quiescent (at once after start-up, then after `release_idle_ms`), the engine is told
//! and the connection closes.
//! While released, a WAL read identical to the last one made under the lock is fed to
//! the engine; anything else takes the lock again and reads again first.

use std::hash::{DefaultHasher, Hash, Hasher};

use walvault_engine::replicator::Input;

use crate::coverage::Cov;
use crate::replica_db::{ReplicaDb, WalChunk};
use crate::world::{Ev, Proc, World};

/// As `idle::PIN_ABOVE_BYTES` in the shell (no simulated database comes near it).
pub const PIN_ABOVE_BYTES: u64 = 64 << 20;

/// How long the shell waits before taking the lock again after SQLite said busy.
pub const ATTACH_RETRY_MS: u64 = 1_000;

/// One WAL read's answer, reduced to what tells two answers apart (`ReadSignature`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadSig {
    offset: u64,
    max_len: u64,
    file_len: u64,
    db_len: u64,
    digest: u64,
}

impl ReadSig {
    pub fn of(offset: u64, max_len: u64, chunk: &WalChunk) -> ReadSig {
        // Fixed keys: the same bytes hash the same in every run.
        let mut h = DefaultHasher::new();
        chunk.header.hash(&mut h);
        chunk.data.hash(&mut h);
        ReadSig {
            offset,
            max_len,
            file_len: chunk.file_len,
            db_len: chunk.db_len,
            digest: h.finish(),
        }
    }
}

/// One process's release state (`IdleState`), with simulated milliseconds.
#[derive(Default)]
pub struct ReleaseState {
    last_locked_read: Option<ReadSig>,
    quiet_since: Option<u64>,
    released_before: bool,
    woke: bool,
    pinned: bool,
    /// A read waiting to take the lock again after a busy attempt.
    pub retry_read: Option<(u64, u64)>,
}

impl ReleaseState {
    fn should_release(&mut self, quiescent: bool, now: u64, after: u64) -> bool {
        if !quiescent {
            self.quiet_since = None;
            return false;
        }
        self.woke = false;
        let since = *self.quiet_since.get_or_insert(now);
        !self.pinned && (!self.released_before || now - since >= after)
    }

    fn released(&mut self) {
        self.released_before = true;
        self.quiet_since = None;
    }

    /// `IdleState::set_locked_read`: the signature of a read that left the engine
    /// quiescent, else `None`.
    pub fn set_locked_read(&mut self, sig: Option<ReadSig>) {
        self.last_locked_read = sig;
    }

    pub fn unchanged(&self, sig: &ReadSig) -> bool {
        self.last_locked_read.as_ref() == Some(sig)
    }

    fn last_read_was(&self, next: (u64, u64)) -> bool {
        self.last_locked_read
            .is_some_and(|s| (s.offset, s.max_len) == next)
    }

    /// `IdleState::on_whole_file`: `None` unless the whole-database file answers a
    /// wake; then whether it pinned the database.
    pub fn on_whole_file(&mut self, db_bytes: u64) -> Option<bool> {
        if !self.woke || self.pinned {
            return None;
        }
        self.pinned = db_bytes > PIN_ABOVE_BYTES;
        Some(self.pinned)
    }
}

/// Whether an error from taking the lock is SQLite's "busy" or "locked".
fn is_busy(e: &str) -> bool {
    e.contains("database is locked") || e.contains("busy")
}

impl World {
    /// After the engine has run out of commands: release a quiescent database.
    pub(crate) fn maybe_release(&mut self) {
        let Some(after) = self.params.release_idle_ms else {
            return;
        };
        let (now_ms, now) = (self.now, self.now());
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        if r.db.is_none() || r.release.retry_read.is_some() {
            return;
        }
        let quiescent = r.engine.is_quiescent();
        if !r.release.last_read_was(r.engine.next_read())
            || !r.release.should_release(quiescent, now_ms, after)
        {
            return;
        }
        r.engine.handle(now, Input::ReadLockReleased);
        if let Some(mut db) = r.db.take() {
            let _ = db.release_read_lock();
            db.close();
        }
        r.engine.shrink_to_fit();
        r.release.released();
        self.cov.hit(Cov::IdleReleased);
        self.trace.record(self.now, "release", &[], &[], || {
            "idle: connection closed until the WAL changes".into()
        });
        self.observe();
    }

    /// A read made while released differs from the last one under the lock: take the
    /// connection and the lock again. True when held again (the caller reads again);
    /// false when busy (a retry is scheduled) or failed (the task ended).
    pub(crate) fn reattach(&mut self, offset: u64, max_len: u64) -> bool {
        let path = self.app.db_path.clone();
        let attached = ReplicaDb::open(&path).and_then(|mut db| match db.acquire_read_lock() {
            Ok(()) => Ok(db),
            Err(e) => {
                db.close();
                Err(e)
            }
        });
        self.observe();
        let inc = self.inc;
        let Proc::Running(r) = &mut self.proc else {
            return false;
        };
        match attached {
            Ok(db) => {
                r.db = Some(db);
                r.release.woke = true;
                r.release.quiet_since = None;
                self.cov.hit(Cov::IdleWoke);
                self.trace.record(self.now, "attach", &[], &[], || {
                    "the database changed: connection taken again".into()
                });
                true
            }
            Err(e) if is_busy(&e) => {
                r.release.retry_read = Some((offset, max_len));
                self.cov.hit(Cov::AttachBusy);
                self.trace
                    .record(self.now, "attach-busy", &[], e.as_bytes(), || {
                        format!("taking the read lock again: {e}; retrying")
                    });
                self.q.push(
                    self.now + ATTACH_RETRY_MS,
                    Ev::RetryRead {
                        inc,
                        offset,
                        max_len,
                    },
                );
                false
            }
            Err(e) => {
                self.fatal(format!("taking the read lock again: {e}"));
                false
            }
        }
    }

    /// The retry of a read that found SQLite busy while taking the lock again.
    pub(crate) fn retry_read(&mut self, inc: u64, offset: u64, max_len: u64) {
        if inc != self.inc {
            return;
        }
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        if r.release.retry_read.take() != Some((offset, max_len)) {
            return;
        }
        self.exec_read_wal(offset, max_len);
        self.drain();
    }
}
