//! The replicator process's life: crashes, kills, failed start-ups, restarts.

use crate::coverage::Cov;
use crate::plan::StopKind;
use crate::replica_db::ReplicaDb;

use crate::world::*;

impl World {
    pub fn schedule_restart_pub(&mut self, at: u64) {
        self.schedule_restart(at);
    }

    pub(crate) fn schedule_restart(&mut self, at: u64) {
        self.restart_token += 1;
        let t = self.restart_token;
        self.q.push(at, Ev::Restart(t));
    }

    pub(crate) fn crash_event(&mut self, kind: StopKind, down_ms: u64) {
        if self.calm {
            return;
        }
        match kind {
            StopKind::Kill => {
                self.trace.record(self.now, "crash", &[down_ms], &[], || {
                    format!("SIGKILL, down for {down_ms}ms")
                });
                self.kill(down_ms);
            }
            StopKind::Clean | StopKind::CleanSnapshot => {
                let snapshot = kind == StopKind::CleanSnapshot;
                let now = self.now();
                let Proc::Running(r) = &mut self.proc else {
                    return;
                };
                if r.stopping {
                    return;
                }
                r.stopping = true;
                self.trace
                    .record(self.now, "stop", &[u64::from(snapshot)], &[], || {
                        format!("SIGTERM (snapshot: {snapshot})")
                    });
                r.engine.handle(
                    now,
                    walvault_engine::replicator::Input::Shutdown { snapshot },
                );
                self.cov.hit(if snapshot {
                    Cov::CleanStopSnapshot
                } else {
                    Cov::CleanStop
                });
                self.pending_down_ms = down_ms;
                self.drain();
            }
        }
    }

    /// The replicator process dies: connections close, staged files and everything
    /// not on disk are lost; requests already sent may still reach the store.
    pub fn kill(&mut self, down_ms: u64) {
        match std::mem::replace(&mut self.proc, Proc::Down) {
            Proc::Running(r) => {
                if self.outstanding > 0 {
                    self.cov.hit(Cov::CrashWithUploadInFlight);
                }
                if r.db.as_ref().is_some_and(|d| d.writers_locked()) {
                    self.cov.hit(Cov::CrashWhileWritersLocked);
                }
                let Running { engine, db, .. } = *r;
                drop(engine);
                if let Some(db) = db {
                    db.close();
                }
            }
            Proc::Starting(s) => s.db.close(),
            Proc::Down => {}
        }
        self.outstanding = 0;
        self.disk.crash();
        self.observe();
        let at = if self.calm {
            self.now
        } else {
            self.now + down_ms
        };
        self.schedule_restart(at);
    }

    pub fn startup_failed(&mut self, why: String) {
        self.cov.hit(Cov::StartupFailed);
        self.trace
            .record(self.now, "start-failed", &[], why.as_bytes(), || {
                format!("startup failed: {why}")
            });
        match std::mem::replace(&mut self.proc, Proc::Down) {
            Proc::Starting(s) => s.db.close(),
            Proc::Running(r) => {
                let Running { engine, db, .. } = *r;
                drop(engine);
                if let Some(db) = db {
                    db.close();
                }
            }
            Proc::Down => {}
        }
        self.observe();
        let delay = if self.calm {
            200
        } else {
            self.crng.range(100, 2_000)
        };
        self.schedule_restart(self.now + delay);
    }

    /// A new process: open the database, take the read lock, read the local position,
    /// LIST the store (then read the tip's header), then `Input::Start`.
    pub(crate) fn start_process(&mut self) {
        self.inc += 1;
        self.outstanding = 0;
        self.trace.record(self.now, "start", &[self.inc], &[], || {
            format!("process #{} starts", self.inc)
        });
        let mut db = match ReplicaDb::open(&self.app.db_path) {
            Ok(db) => db,
            Err(e) => {
                self.observe();
                self.startup_failed(e);
                return;
            }
        };
        self.observe();
        if let Err(e) = db.acquire_read_lock() {
            db.close();
            self.observe();
            self.startup_failed(e);
            return;
        }
        self.observe();
        let local = self.disk.load();
        let unfinished_run = self.disk.unfinished_run();
        if local.is_none() && !self.store.is_empty() {
            self.cov.hit(Cov::PositionLost);
        }
        self.proc = Proc::Starting(Box::new(Starting {
            db,
            local,
            unfinished_run,
            list_max: 0,
            chain_end: 0,
        }));
        self.issue(OpKind::List, false, true);
    }
}
