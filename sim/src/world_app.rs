//! The application side of a run: running workload operations on SQLite and
//! recording each new source state in the oracle.

use crate::coverage::Cov;
use crate::invariant::Inv;
use crate::plan::{AppOp, Fault, Site};

use crate::world::*;

impl World {
    /// Runs the application operation and lets the oracle see its effect.
    pub fn app_op(&mut self, op: &AppOp, why: &str) {
        let r = self.app.run(op);
        match r {
            Err(e) => self.fail(Inv::Harness, e),
            Ok(o) => {
                let kind = match op {
                    AppOp::Insert { .. } => 1,
                    AppOp::Update { .. } => 2,
                    AppOp::Delete { .. } => 3,
                    AppOp::Large { .. } => 4,
                    AppOp::Vacuum => 5,
                    AppOp::IncrementalVacuum => 6,
                    AppOp::Ddl { .. } => 7,
                    AppOp::LongBegin { .. } => 8,
                    AppOp::LongEnd { .. } => 9,
                    AppOp::Checkpoint { .. } => 10,
                };
                self.trace.record(
                    self.now,
                    "app",
                    &[kind, u64::from(o.committed), u64::from(o.busy)],
                    why.as_bytes(),
                    || format!("{why} {op:?} -> {o:?}"),
                );
                if o.committed {
                    match op {
                        AppOp::Vacuum => self.cov.hit(Cov::Vacuum),
                        AppOp::Large { .. } => self.cov.hit(Cov::LargeAlloc),
                        _ => {}
                    }
                }
                if let AppOp::Checkpoint { mode } = op {
                    self.note_app_checkpoint(*mode, o.busy);
                }
            }
        }
        self.observe_as(true);
        self.maybe_torn_append();
    }

    /// The application may die appending its next transaction (torn_append.rs). Not
    /// while its long transaction is open: its spilled frames sit where these would go.
    fn maybe_torn_append(&mut self) {
        if self.params.host.torn_append == 0 || self.violation.is_some() || self.app.long_open() {
            return;
        }
        let Some(Fault::TornAppend { frames, seed }) = self.decide(Site::TornAppend) else {
            return;
        };
        let (Some(p), Some(wal)) = (self.oracle.append_point(), self.wal.get()) else {
            return;
        };
        wal.write_at(&crate::torn_append::torn_frames(&p, frames, seed), p.offset);
        self.cov.hit(Cov::TornAppend);
        self.trace
            .record(self.now, "torn-append", &[p.offset, u64::from(frames)], &[], || {
                format!(
                    "the application died appending {frames} frames at WAL offset {} (commit frame half written)",
                    p.offset
                )
            });
    }

    pub(crate) fn note_app_checkpoint(&mut self, mode: crate::plan::CkptMode, busy: bool) {
        use crate::plan::CkptMode;
        if busy {
            self.cov.hit(Cov::AppCheckpointBusy);
            return;
        }
        self.cov.hit(match mode {
            CkptMode::Passive => Cov::AppCheckpointPassive,
            CkptMode::Full => Cov::AppCheckpointFull,
            CkptMode::Restart => Cov::AppCheckpointRestart,
            CkptMode::Truncate => Cov::AppCheckpointTruncate,
        });
        if self.outstanding > 0 {
            self.cov.hit(Cov::CheckpointDuringUpload);
        }
        if matches!(self.proc, Proc::Down) && matches!(mode, CkptMode::Restart | CkptMode::Truncate)
        {
            self.cov.hit(Cov::WalResetWhileDown);
        }
    }

    /// The oracle follows the WAL after any SQLite operation.
    pub fn observe(&mut self) {
        self.observe_as(false);
    }

    /// Compares the oracle's source image with SQLite's own view of the database
    /// (`sqlite3_serialize` through a separate read-only connection).
    pub(crate) fn oracle_cross_check(&mut self) {
        if self.oracle_conn.is_none() {
            match crate::app::open(
                &self.app.db_path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(c) => self.oracle_conn = Some(c),
                Err(e) => {
                    self.fail(
                        Inv::Harness,
                        format!("opening the oracle check connection: {e}"),
                    );
                    return;
                }
            }
        }
        let Some(c) = self.oracle_conn.as_ref() else {
            return;
        };
        let data = match c.serialize(rusqlite::MAIN_DB) {
            Ok(d) => d,
            Err(e) => {
                self.fail(Inv::Harness, format!("serializing the source: {e}"));
                return;
            }
        };
        let img = self.oracle.image();
        if !img.eq_bytes(&data) {
            let diff: Vec<usize> = img.differing_pages(&data).take(10).collect();
            let detail = format!(
                "the oracle's source image ({} bytes) differs from SQLite's ({} bytes) at state #{}, pages {diff:?}",
                img.len(),
                data.len(),
                self.oracle.current()
            );
            self.fail(Inv::Harness, detail);
        }
    }

    /// `app`: the operation was the application's (not the replicator's own write).
    pub fn observe_as(&mut self, why_app: bool) {
        match self.oracle.observe(self.wal.get()) {
            Err(e) => self.fail(Inv::Harness, e),
            Ok(o) => {
                if o.commits > 0 {
                    let cur = self.oracle.current();
                    let s = self.oracle.state(cur);
                    self.trace.record(
                        self.now,
                        "commit",
                        &[u64::from(cur), s.checksum, u64::from(s.commit), s.end],
                        &[],
                        || {
                            format!(
                                "source state #{cur}: {} pages, checksum {:016x}, WAL {:08x}@{}",
                                s.commit, s.checksum, s.salt1, s.end
                            )
                        },
                    );
                    self.last_commit_at = self.now;
                    if why_app {
                        self.last_app_commit = Some((self.now, cur));
                    }
                    self.lag_zero_since_commit = false;
                    if matches!(self.proc, Proc::Down) {
                        self.cov.hit(Cov::WritesWhileDown);
                    }
                }
                if o.shrank {
                    self.cov.hit(Cov::DbShrank);
                }
                self.last_oracle_spill = o.uncommitted_frames;
                if o.commits > 0 && (self.paranoid || self.srng.chance(5_000)) {
                    self.oracle_cross_check();
                }
            }
        }
    }
}
