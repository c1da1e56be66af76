//! The simulated shell's checkpoint steps, as production's replicate_task/ and
//! database.rs carry them out: block writers with BEGIN IMMEDIATE, then (with every WAL
//! frame durable) release the read transaction, checkpoint PASSIVE from a second
//! connection, let writers go, TRUNCATE if asked, and take the read transaction again.
//! Between the steps the application may run and the process may be killed.

use walvault_engine::replicator::{CheckpointMode, CheckpointResult, Input};

use crate::coverage::Cov;
use crate::mutation::Mutation;
use crate::plan::{Fault, Site};
use crate::world::{Proc, World};

impl World {
    pub(crate) fn exec_lock_writers(&mut self) {
        if self.mutation == Some(Mutation::CheckpointOnLock) {
            // Mutation: checkpoint now, before the WAL tail is shipped.
            let _ = self.checkpoint_steps(CheckpointMode::Passive);
            if !matches!(self.proc, Proc::Running(_)) || self.violation.is_some() {
                return;
            }
        }
        let path = self.app.db_path.clone();
        let now = self.now();
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        let Some(db) = r.db.as_mut() else {
            self.fatal("internal: writers to block while released".into());
            return;
        };
        let ok = match db.lock_writers(&path) {
            Ok(ok) => ok,
            Err(e) => {
                self.fatal(format!("blocking writers: {e}"));
                return;
            }
        };
        if !ok {
            self.cov.hit(Cov::LockWritersBusy);
        }
        r.engine.handle(now, Input::WritersLocked { ok });
    }

    pub(crate) fn exec_checkpoint(&mut self, mode: CheckpointMode) {
        self.cov.hit(match mode {
            CheckpointMode::Passive => Cov::EngineCheckpointPassive,
            CheckpointMode::Truncate => Cov::EngineCheckpointTruncate,
        });
        let Some(result) = self.checkpoint_steps(mode) else {
            return;
        };
        let now = self.now();
        if let Proc::Running(r) = &mut self.proc {
            r.engine.handle(now, Input::CheckpointDone { mode, result });
        }
    }

    /// Between two steps of a checkpoint: the application may run, the process may die.
    /// False when the process died.
    pub(crate) fn checkpoint_gap(&mut self) -> bool {
        if let Some(Fault::Kill { down_ms }) = self.decide(Site::Drain) {
            self.cov.hit(Cov::CrashDuringCheckpoint);
            self.trace.record(self.now, "crash", &[down_ms], &[], || {
                format!("SIGKILL inside a checkpoint, down for {down_ms}ms")
            });
            self.kill(down_ms);
            return false;
        }
        if let Some(Fault::App { op }) = self.decide(Site::Interleave) {
            self.cov.hit(Cov::InterleavedInCheckpoint);
            self.app_op(&op, "inside checkpoint");
        }
        self.violation.is_none() && matches!(self.proc, Proc::Running(_))
    }

    /// `Database::checkpoint`, step by step. `None` when the process died meanwhile.
    pub(crate) fn checkpoint_steps(
        &mut self,
        mode: CheckpointMode,
    ) -> Option<Result<CheckpointResult, String>> {
        let durable = match &self.proc {
            Proc::Running(r) => r.engine.durable(),
            _ => return None,
        };
        if let Err(v) = self
            .checker
            .check_checkpoint(durable, &self.oracle, self.now)
        {
            self.set_violation(v);
            return None;
        }
        macro_rules! db {
            () => {
                match &mut self.proc {
                    Proc::Running(r) => match r.db.as_mut() {
                        Some(db) => db,
                        None => return None,
                    },
                    _ => return None,
                }
            };
        }
        if let Err(e) = db!().release_read_lock() {
            return Some(Err(e));
        }
        self.observe();
        if !self.checkpoint_gap() {
            return None;
        }
        let mut result = db!().checkpoint_step(false);
        self.observe();
        if !self.checkpoint_gap() {
            return None;
        }
        if let Err(e) = db!().unlock_writers() {
            return Some(Err(e));
        }
        self.observe();
        if !self.checkpoint_gap() {
            return None;
        }
        if mode == CheckpointMode::Truncate && result.is_ok() {
            result = db!().checkpoint_step(true);
            self.observe();
            if !self.checkpoint_gap() {
                return None;
            }
        }
        let reacquire = db!().acquire_read_lock();
        self.observe();
        if reacquire.is_err() {
            self.cov.hit(Cov::ReadLockLost);
        }
        let text = format!("{result:?} / read lock {reacquire:?}");
        self.trace.record(
            self.now,
            "checkpoint",
            &[mode as u64],
            text.as_bytes(),
            || text.clone(),
        );
        Some(match (result, reacquire) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Ok(r), Ok(())) => Ok(r),
        })
    }
}
