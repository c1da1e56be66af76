//! Releasing an idle database's connection in simulated time, with the engine's
//! release decisions (`walvault_engine::release`, as the shell's cli/src/idle.rs) and
//! the release steps of cli/src/replicate_task/ (decision 21): once the engine is
//! quiescent (at once after start-up, then after `release_idle_ms`), the engine is told
//! and the connection closes.
//! While released, a WAL read identical to the last one made under the lock is fed to
//! the engine; anything else takes the lock again and reads again first.

use walvault_engine::release::Release;
use walvault_engine::replicator::Input;

use crate::coverage::Cov;
use crate::replica_db::ReplicaDb;
use crate::world::{Ev, Proc, World};

/// How long the shell waits before taking the lock again after SQLite said busy.
pub const ATTACH_RETRY_MS: u64 = 1_000;

/// One process's release state: the engine's decisions (the shell's `IdleState`
/// holds the same) and the read waiting to take the lock again after a busy attempt.
pub struct ReleaseState {
    pub decisions: Release,
    pub retry_read: Option<(u64, u64)>,
}

impl ReleaseState {
    pub fn new(after_ms: Option<u64>, pin_above: Option<u64>) -> ReleaseState {
        let decisions = Release::new(after_ms);
        ReleaseState {
            decisions: match pin_above {
                Some(bytes) => decisions.with_pin_above(bytes),
                None => decisions,
            },
            retry_read: None,
        }
    }
}

/// Whether an error from taking the lock is SQLite's "busy" or "locked".
fn is_busy(e: &str) -> bool {
    e.contains("database is locked") || e.contains("busy")
}

impl World {
    /// After the engine has run out of commands: release a quiescent database.
    pub(crate) fn maybe_release(&mut self) {
        if self.params.release_idle_ms.is_none() {
            return;
        }
        let (now_ms, now) = (self.now, self.now());
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        if r.db.is_none() || r.release.retry_read.is_some() {
            return;
        }
        let quiescent = r.engine.is_quiescent();
        let decisions = &mut r.release.decisions;
        if !decisions.last_read_was(r.engine.next_read())
            || !decisions.should_release(quiescent, now_ms)
        {
            return;
        }
        r.engine.handle(now, Input::ReadLockReleased);
        if let Some(mut db) = r.db.take() {
            let _ = db.release_read_lock();
            db.close();
        }
        r.engine.shrink_to_fit();
        r.release.decisions.released();
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
                r.release.decisions.woke();
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
