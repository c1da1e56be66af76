//! One simulated run: the event loop in simulated time and everything it drives.
//!
//! - the application (app.rs) runs the plan's workload on real SQLite;
//! - the replicator "process" is the real `Replicator` plus a shell that carries out
//!   its commands exactly as cli/src/replicate_task.rs does (shell.rs);
//! - store requests travel with latency and faults (requests.rs) to the in-memory
//!   store (store.rs);
//! - crashes kill the process at event boundaries or between two commands;
//! - after every SQLite operation the oracle records the new source state, and after
//!   every store change the checker re-verifies what the change can affect.
//!
//! The first broken invariant ends the run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use walvault_engine::keys::FileId;
use walvault_engine::replicator::{CheckResult, Position, RemoteTip, Replicator, UploadResult};
use walvault_engine::time::Now;

use crate::app::{self, App};
use crate::checker::Checker;
use crate::coverage::{Cov, Coverage};
use crate::disk::Disk;
use crate::invariant::{Inv, Violation};
use crate::mutation::Mutation;
use crate::oracle::Oracle;
use crate::params::Params;
use crate::plan::{AppOp, Fault, FaultEntry, Plan, Site, StopKind};
use crate::queue::EventQueue;
use crate::replica_db::{ReplicaDb, WalHandle};
use crate::rng::{Purpose, Stream};
use crate::store::{Digest32, Store};
use crate::trace::Trace;

/// Unix time (ms) of simulated time zero: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// A run that reaches this many events is stuck (reported as a liveness failure).
pub const MAX_EVENTS: u64 = 400_000;

#[derive(Clone, Debug)]
pub enum Completion {
    /// File, the attempt the command carried, outcome.
    Upload(FileId, u32, UploadResult),
    Check(FileId, u32, CheckResult),
}

pub enum Ev {
    App(usize),
    Crash(usize),
    Restart(u64),
    Loss(usize),
    Calm,
    Deadline,
    Grace,
    End,
    /// A request reaches the store.
    Apply(u64),
    /// A second copy of a PUT reaches the store.
    DupApply(u64),
    /// A response reaches the process that sent the request.
    Respond(u64),
    /// A completion produced inside the process (staging failure, a mutation).
    Local {
        inc: u64,
        c: Completion,
    },
    /// The same completion delivered again; `req` counts the requests made for that
    /// file when the original was delivered.
    Dup {
        inc: u64,
        c: Completion,
        req: u32,
    },
}

pub enum OpKind {
    Put {
        key: String,
        id: FileId,
        attempt: u32,
        bytes: Arc<Vec<u8>>,
        digest: Digest32,
    },
    Get {
        key: String,
        id: FileId,
        attempt: u32,
        expected: Result<Arc<Vec<u8>>, String>,
    },
    List,
    Header {
        key: String,
        id: FileId,
    },
}

pub enum OpOutcome {
    Put(bool),
    Check(CheckResult),
    List(Result<Vec<(String, u64)>, String>),
    Header(Result<Vec<u8>, String>),
}

pub struct StoreOp {
    pub inc: u64,
    pub kind: OpKind,
    pub fault: Option<Fault>,
    pub outcome: Option<OpOutcome>,
    /// Counts towards the upload window (uploads and checks).
    pub counted: bool,
    /// The response is handed to the engine (false for a mutation's extra copies).
    pub deliver: bool,
    pub seq: u64,
}

pub struct Running {
    pub engine: Replicator,
    pub db: ReplicaDb,
    pub staged: BTreeMap<FileId, (Arc<Vec<u8>>, Digest32)>,
    pub stopping: bool,
    pub first_header: Option<[u8; 32]>,
    pub last_cut_max: u64,
    pub failures_seen: BTreeMap<FileId, u32>,
    pub unknown_seen: BTreeSet<FileId>,
    pub exists_seen: BTreeSet<FileId>,
    /// The last handle_timeout at this time emitted nothing: do not fire it again
    /// until something else happens.
    pub idle_timer_at: Option<u64>,
    /// Requests (uploads and checks) made per file.
    pub requests: BTreeMap<FileId, u32>,
}

pub struct Starting {
    pub db: ReplicaDb,
    pub local: Option<Position>,
    /// The run mark the previous run left (it did not stop cleanly).
    pub unfinished_run: Option<u64>,
    pub list_max: u64,
    pub chain_end: u64,
}

pub enum Proc {
    Down,
    Starting(Box<Starting>),
    Running(Box<Running>),
}

pub struct RunOptions {
    pub print: bool,
    pub keep_dir_on_failure: bool,
    pub tag: String,
    /// A busy loop of the engine's timer is a violation (otherwise a warning).
    pub strict: bool,
    /// Check the oracle against SQLite's own view after every commit.
    pub paranoid: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            print: false,
            keep_dir_on_failure: false,
            tag: "run".into(),
            strict: false,
            paranoid: false,
        }
    }
}

pub struct RunReport {
    pub seed: u64,
    pub violation: Option<Violation>,
    pub warnings: Vec<Violation>,
    pub trace_hash: String,
    pub events: u64,
    pub sim_ms: u64,
    pub coverage: Coverage,
    pub plan: Plan,
    pub dir: Option<PathBuf>,
    pub files: u64,
}

pub struct World {
    pub plan: Plan,
    pub params: Params,
    pub mutation: Option<Mutation>,
    pub strict: bool,
    pub now: u64,
    pub q: EventQueue<Ev>,
    pub trace: Trace,
    pub cov: Coverage,
    pub lat: Stream,
    pub frng: Stream,
    pub crng: Stream,
    pub srng: Stream,
    fault_map: BTreeMap<(Site, u64), Fault>,
    pub recorded: Vec<FaultEntry>,
    site_n: BTreeMap<Site, u64>,
    pub app: App,
    pub db_file: File,
    pub wal: WalHandle,
    pub oracle: Oracle,
    pub store: Store,
    pub disk: Disk,
    pub checker: Checker,
    pub proc: Proc,
    pub inc: u64,
    restart_token: u64,
    pub ops: BTreeMap<u64, StoreOp>,
    pub next_op: u64,
    pub calm: bool,
    pub violation: Option<Violation>,
    pub warnings: Vec<Violation>,
    pub events: u64,
    /// Requests of the current process that count towards the window.
    pub outstanding: usize,
    pub requests_issued: u64,
    pub max_delivered_seq: u64,
    pub commands: u64,
    pub after_deadline: bool,
    pub idle_cuts: u64,
    pub last_commit_at: u64,
    pub lag_zero_since_commit: bool,
    pub calm_writes_done: bool,
    pub end_scheduled: bool,
    pub files_cut: u64,
    pub last_oracle_spill: u64,
    /// Downtime after a clean stop completes.
    pub pending_down_ms: u64,
    pub last_interleave_at: Option<u64>,
    /// Check the oracle against SQLite after every commit (not only on a sample).
    pub paranoid: bool,
    pub oracle_conn: Option<rusqlite::Connection>,
    /// Time and resulting state of the application's latest commit.
    pub last_app_commit: Option<(u64, u32)>,
    /// Bodies of PUTs that will reach the store a second time, and their process.
    pub dup_bodies: BTreeMap<u64, (String, Arc<Vec<u8>>, Digest32)>,
    pub dup_inc: BTreeMap<u64, u64>,
}

fn pick_small_op(r: &mut Stream, page_size: u32) -> AppOp {
    use crate::plan::CkptMode;
    let seed = r.u64();
    match r.below(7) {
        0 | 1 => AppOp::Insert {
            rows: r.range(1, 3) as u32,
            size: r.range(8, u64::from(page_size)) as u32,
            seed,
        },
        2 => AppOp::Update {
            rows: r.range(1, 3) as u32,
            size: r.range(8, u64::from(page_size)) as u32,
            seed,
        },
        3 => AppOp::Checkpoint {
            mode: CkptMode::Passive,
        },
        4 => AppOp::Checkpoint {
            mode: CkptMode::Full,
        },
        5 => AppOp::Checkpoint {
            mode: CkptMode::Restart,
        },
        _ => AppOp::Checkpoint {
            mode: CkptMode::Truncate,
        },
    }
}

/// Cumulative ppm table → the fault at the drawn index.
fn draw_table(r: &mut Stream, table: &[(u32, Fault)]) -> Option<Fault> {
    let total: u64 = table.iter().map(|(p, _)| u64::from(*p)).sum();
    if total == 0 {
        return None;
    }
    let mut x = r.below(1_000_000);
    for (p, f) in table {
        if x < u64::from(*p) {
            return Some(f.clone());
        }
        x -= u64::from(*p);
    }
    None
}

impl World {
    pub fn new(plan: Plan, opts: &RunOptions) -> Result<World, String> {
        let params = plan.params.clone();
        let seed = plan.seed;
        app::pin_sqlite_prng(seed);
        let dir = app::run_dir(seed, &opts.tag);
        let app = App::create(
            dir,
            params.page_size,
            params.auto_vacuum,
            params.app_autocheckpoint,
        )?;
        let db_file = app.open_db_handle()?;
        let mut oracle = Oracle::new(seed, params.page_size, &db_file)?;
        let mut wal = WalHandle::new(app.wal_path.clone());
        oracle.observe(wal.get())?;
        let fault_map = if plan.replay_faults {
            plan.fault_map()
        } else {
            BTreeMap::new()
        };
        Ok(World {
            mutation: plan.mutation,
            strict: opts.strict,
            lat: Stream::new(seed, Purpose::Latency),
            frng: Stream::new(seed, Purpose::Faults),
            crng: Stream::new(seed, Purpose::Crash),
            srng: Stream::new(seed, Purpose::Content),
            fault_map,
            recorded: Vec::new(),
            site_n: BTreeMap::new(),
            now: 0,
            q: EventQueue::default(),
            trace: Trace::new(opts.print),
            cov: Coverage::default(),
            app,
            db_file,
            wal,
            oracle,
            store: Store::default(),
            disk: Disk::default(),
            checker: Checker::new(params.lossy),
            proc: Proc::Down,
            inc: 0,
            restart_token: 0,
            ops: BTreeMap::new(),
            next_op: 0,
            calm: false,
            violation: None,
            warnings: Vec::new(),
            events: 0,
            outstanding: 0,
            requests_issued: 0,
            max_delivered_seq: 0,
            commands: 0,
            after_deadline: false,
            idle_cuts: 0,
            last_commit_at: 0,
            lag_zero_since_commit: false,
            calm_writes_done: false,
            end_scheduled: false,
            files_cut: 0,
            last_oracle_spill: 0,
            pending_down_ms: 0,
            dup_bodies: BTreeMap::new(),
            dup_inc: BTreeMap::new(),
            last_app_commit: None,
            paranoid: opts.paranoid,
            last_interleave_at: None,
            oracle_conn: None,
            params,
            plan,
        })
    }

    pub fn now(&self) -> Now {
        Now::new(self.now, EPOCH_MS + self.now as i64)
    }

    pub fn fail(&mut self, inv: Inv, detail: String) {
        if self.violation.is_none() {
            let at_ms = self.now;
            self.trace.record(
                self.now,
                "VIOLATION",
                &[inv as u64],
                detail.as_bytes(),
                || format!("{}: {detail}", inv.name()),
            );
            self.violation = Some(Violation { inv, at_ms, detail });
        }
    }

    pub fn set_violation(&mut self, v: Violation) {
        self.fail(v.inv, v.detail);
    }

    pub fn warn(&mut self, inv: Inv, detail: String) {
        if self.strict {
            self.fail(inv, detail);
        } else if !self.warnings.iter().any(|w| w.inv == inv) {
            self.warnings.push(Violation {
                inv,
                at_ms: self.now,
                detail,
            });
        }
    }

    /// A fault decision at the next site of `site`: drawn from the seed's fault stream
    /// (and recorded into the plan) or, in replay, taken from the plan.
    pub fn decide(&mut self, site: Site) -> Option<Fault> {
        let n = self.site_n.entry(site).or_insert(0);
        let idx = *n;
        *n += 1;
        if self.calm {
            return None;
        }
        // The application takes time too: at most one interleaved operation per
        // simulated millisecond (a drain happens at one instant).
        if site == Site::Interleave && self.last_interleave_at == Some(self.now) {
            return None;
        }
        let f = if self.plan.replay_faults {
            self.fault_map.get(&(site, idx)).cloned()
        } else {
            self.draw(site)
        };
        if site == Site::Interleave && f.is_some() {
            self.last_interleave_at = Some(self.now);
        }
        if let Some(f) = &f {
            self.recorded.push(FaultEntry {
                site,
                n: idx,
                fault: f.clone(),
            });
        }
        f
    }

    fn draw(&mut self, site: Site) -> Option<Fault> {
        let p = &self.params;
        let s = &p.store;
        let h = &p.host;
        let r = &mut self.frng;
        match site {
            Site::Put => draw_table(
                r,
                &[
                    (s.put_transient, Fault::PutTransient),
                    (s.put_permanent, Fault::PutPermanent),
                    (s.put_ambiguous_after, Fault::PutAmbiguousAfter),
                    (s.put_ambiguous_before, Fault::PutAmbiguousBefore),
                    (s.put_lost_response, Fault::PutLostResponse),
                    (s.put_late_write, Fault::PutLateWrite),
                    (s.put_duplicate, Fault::PutDuplicate { delay_ms: 0 }),
                    (s.throttle_burst, Fault::Throttle { ms: s.throttle_ms }),
                ],
            )
            .map(|f| match f {
                Fault::PutDuplicate { .. } => Fault::PutDuplicate {
                    delay_ms: r.range(1, 3_000),
                },
                f => f,
            }),
            Site::Get => draw_table(
                r,
                &[
                    (s.get_transient, Fault::GetTransient),
                    (s.get_stale, Fault::GetStale),
                    (s.get_truncated, Fault::GetTruncated),
                    (s.get_corrupt, Fault::GetCorrupt { at: 0 }),
                ],
            )
            .map(|f| match f {
                Fault::GetCorrupt { .. } => Fault::GetCorrupt { at: r.u64() },
                f => f,
            }),
            Site::List => r.chance(s.list_transient).then_some(Fault::ListTransient),
            Site::WalRead => r.chance(h.torn_read).then(|| Fault::TornRead {
                cut: r.below(1_000_000) as u32,
                garbage: r.coin(),
            }),
            Site::Interleave => r.chance(h.interleave).then(|| Fault::App {
                op: pick_small_op(r, p.page_size),
            }),
            Site::Dup => r.chance(h.dup_completion).then(|| Fault::Duplicate {
                delay_ms: r.range(0, 500),
            }),
            Site::Staging => r.chance(h.staging_fail).then_some(Fault::StagingFail),
            Site::Persist => draw_table(
                r,
                &[
                    (h.fsync_lie, Fault::FsyncLie),
                    (h.torn_write, Fault::TornWrite),
                    (h.persist_fail, Fault::PersistFail),
                ],
            ),
            Site::Drain => r.chance(p.crashes.in_drain).then(|| Fault::Kill {
                down_ms: r.range(p.crashes.down_min_ms, p.crashes.down_max_ms),
            }),
        }
    }

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
    }

    fn note_app_checkpoint(&mut self, mode: crate::plan::CkptMode, busy: bool) {
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
    fn oracle_cross_check(&mut self) {
        if self.oracle_conn.is_none() {
            match rusqlite::Connection::open_with_flags(
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
        if &data[..] != img {
            let ps = self.params.page_size as usize;
            let diff: Vec<usize> = (0..data.len().min(img.len()) / ps)
                .filter(|i| data[i * ps..(i + 1) * ps] != img[i * ps..(i + 1) * ps])
                .map(|i| i + 1)
                .take(10)
                .collect();
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

    pub fn schedule_restart_pub(&mut self, at: u64) {
        self.schedule_restart(at);
    }

    fn schedule_restart(&mut self, at: u64) {
        self.restart_token += 1;
        let t = self.restart_token;
        self.q.push(at, Ev::Restart(t));
    }

    pub fn run(&mut self) {
        for (i, op) in self.plan.workload.iter().enumerate() {
            self.q.push(op.t, Ev::App(i));
        }
        for (i, c) in self.plan.crashes.iter().enumerate() {
            self.q.push(c.t, Ev::Crash(i));
        }
        if self.params.lossy {
            for (i, l) in self.plan.losses.iter().enumerate() {
                self.q.push(l.t, Ev::Loss(i));
            }
        }
        self.q.push(self.plan.calm_at(), Ev::Calm);
        self.q.push(self.plan.liveness_deadline(), Ev::Deadline);
        self.schedule_restart(0);
        while self.violation.is_none() {
            let timer = match &self.proc {
                Proc::Running(r) => r
                    .engine
                    .poll_timeout()
                    .filter(|&t| r.idle_timer_at != Some(t.max(self.now))),
                _ => None,
            };
            let qt = self.q.peek_time();
            if let Some(t) = timer
                && qt.is_none_or(|q| t < q)
            {
                self.now = self.now.max(t);
                self.events += 1;
                self.fire_timer();
            } else {
                let Some((t, ev)) = self.q.pop() else { break };
                self.now = self.now.max(t);
                self.events += 1;
                if matches!(ev, Ev::End) {
                    self.final_checks();
                    break;
                }
                self.dispatch(ev);
            }
            if self.events > MAX_EVENTS {
                self.fail(
                    Inv::Liveness,
                    format!("no end after {MAX_EVENTS} events (a busy loop in simulated time)"),
                );
            }
            self.after_event();
        }
    }

    fn fire_timer(&mut self) {
        let now = self.now();
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        self.trace.record(self.now, "timer", &[], &[], String::new);
        r.engine.handle_timeout(now);
        let before = self.commands;
        self.drain();
        if self.commands == before
            && let Proc::Running(r) = &mut self.proc
            && r.engine.poll_timeout().is_some_and(|t| t <= self.now)
        {
            // Firing the deadline did nothing and it is still due: production's task
            // would spin on it (sleep_until a past instant) until something else happens.
            r.idle_timer_at = Some(self.now);
            let pending = r.engine.pending_files();
            self.warn(
                Inv::Bounds,
                format!(
                    "busy loop: the engine's deadline stays in the past and firing it does nothing ({pending} files queued, window {} full)",
                    self.params.max_in_flight
                ),
            );
        }
    }

    /// Cheap per-event checks.
    fn after_event(&mut self) {
        if self.violation.is_some() {
            return;
        }
        if let Proc::Running(r) = &self.proc {
            let window = self.params.max_in_flight.max(1);
            if r.engine.pending_files() > window * 4 + 2 {
                let n = r.engine.pending_files();
                self.fail(
                    Inv::Bounds,
                    format!("{n} files queued, above the bound of {}", window * 4 + 2),
                );
                return;
            }
            if self.calm && !self.lag_zero_since_commit && self.lag_zero_now() {
                self.lag_zero_since_commit = true;
                if self.calm_writes_done && !self.end_scheduled && !self.after_deadline {
                    // Lag is zero and the workload is over: finish with an idle window.
                    self.end_scheduled = true;
                    self.after_deadline = true;
                    self.idle_cuts = 0;
                    let idle = (25 * self.params.sync_interval_ms).max(2_000)
                        + self.params.checkpoint_lock_ms
                        + 10 * self.params.sync_interval_ms;
                    self.q.push(self.now + idle, Ev::End);
                }
            }
        }
    }

    /// Lag is zero by the engine's own account: nothing pending and its durable
    /// position is where the WAL's last commit is.
    fn lag_zero_now(&self) -> bool {
        let Proc::Running(r) = &self.proc else {
            return false;
        };
        if r.stopping || r.engine.pending_files() > 0 || r.engine.unshipped_txns() > 0 {
            return false;
        }
        let d = r.engine.durable();
        match self.oracle.wal_position() {
            Some((s1, s2, end)) => (d.salt1, d.salt2, d.wal_end) == (s1, s2, end) && d.txid > 0,
            None => d.txid > 0 && d.salt1 | d.salt2 == 0,
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::App(i) => {
                let op = self.plan.workload[i].op.clone();
                self.app_op(&op, "workload");
                if self.calm
                    && !self.plan.workload[i + 1..]
                        .iter()
                        .any(|o| o.t >= self.plan.calm_at())
                {
                    self.calm_writes_done = true;
                }
            }
            Ev::Crash(i) => {
                let c = self.plan.crashes[i].clone();
                self.crash_event(c.kind, c.down_ms);
            }
            Ev::Restart(token) => {
                if token == self.restart_token && matches!(self.proc, Proc::Down) {
                    self.start_process();
                }
            }
            Ev::Loss(i) => {
                let pick = self.plan.losses[i].pick;
                if let Some(key) = self.store.lose(pick, self.now) {
                    self.trace
                        .record(self.now, "loss", &[], key.as_bytes(), || {
                            format!("store lost {key}")
                        });
                    self.cov.hit(Cov::LossyLoss);
                    self.checker.on_lost(&key);
                }
            }
            Ev::Calm => {
                self.calm = true;
                self.store.throttle_until = 0;
                self.trace.record(self.now, "calm", &[], &[], || {
                    "faults stop; lag must return to zero".into()
                });
                if !self
                    .plan
                    .workload
                    .iter()
                    .any(|o| o.t >= self.plan.calm_at())
                {
                    self.calm_writes_done = true;
                }
                if self.app.long_open() {
                    self.app_op(&AppOp::LongEnd { commit: true }, "calm");
                }
                match &mut self.proc {
                    Proc::Down => self.schedule_restart(self.now),
                    Proc::Running(r) if r.stopping => {}
                    _ => {}
                }
            }
            Ev::Deadline => self.deadline(false),
            Ev::Grace => self.deadline(true),
            Ev::End => {}
            Ev::Apply(id) => self.apply(id, false),
            Ev::DupApply(id) => self.apply(id, true),
            Ev::Respond(id) => self.respond(id),
            Ev::Local { inc, c } => {
                if inc == self.inc {
                    self.deliver(c, false);
                }
            }
            Ev::Dup { inc, c, req } => {
                if inc == self.inc {
                    self.deliver_duplicate(c, req);
                }
            }
        }
    }

    fn deadline(&mut self, grace: bool) {
        if self.end_scheduled && !grace {
            return;
        }
        if self.lag_zero_since_commit {
            if !self.end_scheduled {
                self.end_scheduled = true;
                self.after_deadline = true;
                self.idle_cuts = 0;
                let idle = (25 * self.params.sync_interval_ms).max(2_000);
                self.q.push(self.now + idle, Ev::End);
            }
            return;
        }
        if !grace {
            // A commit of the replicator's own (the `_walvault_seq` row after a
            // checkpoint) may be on its way: one more sync round.
            let g = 5 * self.params.sync_interval_ms
                + 2 * (self.params.latency.base_ms + self.params.latency.jitter_ms)
                + 1_000;
            self.q.push(self.now + g, Ev::Grace);
            return;
        }
        let why = match &self.proc {
            Proc::Down => "the replicator is not running".to_string(),
            Proc::Starting(_) => "the replicator is still starting".to_string(),
            Proc::Running(r) => {
                let d = r.engine.durable();
                format!(
                    "durable TXID {} at WAL {:08x}@{}, {} files pending, {} transactions unshipped; source WAL at {:?}",
                    d.txid,
                    d.salt1,
                    d.wal_end,
                    r.engine.pending_files(),
                    r.engine.unshipped_txns(),
                    self.oracle.wal_position()
                )
            }
        };
        self.fail(
            Inv::Liveness,
            format!(
                "lag did not return to zero within {}ms of the faults stopping: {why}",
                self.params.liveness_bound_ms()
            ),
        );
    }

    fn crash_event(&mut self, kind: StopKind, down_ms: u64) {
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
                if r.db.writers_locked() {
                    self.cov.hit(Cov::CrashWhileWritersLocked);
                }
                let Running { engine, db, .. } = *r;
                drop(engine);
                db.close();
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
                db.close();
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
    fn start_process(&mut self) {
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

impl World {
    /// End of the run: lag is zero, the idle database costs nothing, the latest
    /// restore equals the source byte for byte and passes integrity_check, and the
    /// oracle agrees with SQLite's own file.
    fn final_checks(&mut self) {
        self.trace
            .record(self.now, "end", &[], &[], || "final checks".into());
        let lossy = self.checker.lost_any();
        if !self.lag_zero_since_commit && !self.lag_zero_now() {
            self.fail(
                Inv::Liveness,
                "lag is not zero at the end of the idle window".into(),
            );
            return;
        }
        let durable = match &self.proc {
            Proc::Running(r) => r.engine.durable().txid,
            _ => {
                self.fail(
                    Inv::Liveness,
                    "the replicator is not running at the end".into(),
                );
                return;
            }
        };
        if self.idle_cuts > 1 {
            let n = self.idle_cuts;
            self.fail(
                Inv::Bounds,
                format!(
                    "{n} files cut while the database was idle (at most one, after a checkpoint)"
                ),
            );
            return;
        }
        let frames = self.oracle.wal_frames();
        if frames >= self.params.checkpoint_frames + 2 {
            self.fail(
                Inv::Liveness,
                format!(
                    "the WAL holds {frames} frames at the end of the idle window (checkpoint threshold {}): it keeps growing",
                    self.params.checkpoint_frames
                ),
            );
            return;
        }
        if !lossy {
            if let Err(e) = self.checker.lag_zero(durable, &self.oracle) {
                self.fail(Inv::Liveness, format!("at the end: {e}"));
                return;
            }
            if let Err(v) = self
                .checker
                .cross_check_plan(walvault_engine::restore_plan::Target::Latest, self.now)
            {
                self.set_violation(v);
                return;
            }
            match self.checker.restore_bytes(durable) {
                Err(e) => {
                    self.fail(
                        Inv::Durability,
                        format!("restore of the final TXID failed: {e}"),
                    );
                    return;
                }
                Ok((bytes, _)) => {
                    self.cov.hit(Cov::ByteCompare);
                    if bytes.as_slice() != self.oracle.image() {
                        self.fail(
                            Inv::Restore,
                            format!(
                                "the final restore ({} bytes) differs from the source ({} bytes)",
                                bytes.len(),
                                self.oracle.image().len()
                            ),
                        );
                        return;
                    }
                    if let Err(e) = self.integrity_check(&bytes) {
                        self.fail(Inv::Restore, e);
                        return;
                    }
                    self.cov.hit(Cov::IntegrityCheck);
                }
            }
        }
        self.kill(0);
        self.restart_token += 1;
        match self.app.final_checkpoint() {
            Err(e) => self.fail(Inv::Harness, e),
            Ok((busy, log, done)) if !busy && log == done => {
                use std::os::unix::fs::FileExt;
                let len = self.db_file.metadata().map(|m| m.len()).unwrap_or(0) as usize;
                let mut file = vec![0u8; len];
                if let Err(e) = self.db_file.read_exact_at(&mut file, 0) {
                    self.fail(
                        Inv::Harness,
                        format!("reading the final database file: {e}"),
                    );
                } else if file.as_slice() != self.oracle.image() {
                    self.fail(
                        Inv::Harness,
                        format!(
                            "the oracle's source image ({} bytes) differs from SQLite's own file ({len} bytes)",
                            self.oracle.image().len()
                        ),
                    );
                }
            }
            Ok(_) => {}
        }
        if self.params.lossy {
            self.final_detection();
        }
    }

    /// `PRAGMA integrity_check` on a restored image, as `walvault restore` runs it.
    fn integrity_check(&self, bytes: &[u8]) -> Result<(), String> {
        let path = self.app.dir.join("restored.db");
        std::fs::write(&path, bytes).map_err(|e| format!("writing the restore: {e}"))?;
        let verdict: Result<String, String> = (|| {
            let c = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
            c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .map_err(|e| e.to_string())
        })();
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
        match verdict {
            Ok(v) if v == "ok" => Ok(()),
            Ok(v) => Err(format!("the final restore fails integrity_check: {v}")),
            Err(e) => Err(format!("the final restore does not open: {e}")),
        }
    }

    /// Lossy profile: after losses, a restart must report that the store is behind
    /// what was acknowledged (when the local position says so).
    fn final_detection(&mut self) {
        let truth = self.checker.max_txid();
        let local = self.disk.load();
        let Some(l) = local else { return };
        if l.txid <= truth {
            return;
        }
        let mut e = Replicator::new(self.params.engine_config(self.inc + 1));
        e.handle(
            self.now(),
            walvault_engine::replicator::Input::Start {
                page_size: self.params.page_size,
                local,
                remote: RemoteTip {
                    max_txid: truth,
                    chain_end: truth,
                    newest: None,
                },
                unfinished_run: None,
            },
        );
        let mut reported = false;
        while let Some(c) = e.poll_command() {
            if matches!(
                c,
                walvault_engine::replicator::Command::Event(
                    walvault_engine::replicator::Event::RemoteBehind { .. }
                )
            ) {
                reported = true;
            }
        }
        if reported {
            self.cov.hit(Cov::RemoteBehind);
        } else {
            self.fail(
                Inv::Detection,
                format!("the store lost TXIDs above {truth} (acknowledged up to {}) and a restart does not report it", l.txid),
            );
        }
    }
}

/// Runs one plan to completion (or its first violation).
pub fn run_plan(plan: Plan, opts: &RunOptions) -> RunReport {
    let _turn = crate::process_lock();
    let seed = plan.seed;
    let mut world = match World::new(plan.clone(), opts) {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(app::run_dir(seed, &opts.tag));
            return RunReport {
                seed,
                violation: Some(Violation {
                    inv: Inv::Harness,
                    at_ms: 0,
                    detail: e,
                }),
                warnings: Vec::new(),
                trace_hash: String::new(),
                events: 0,
                sim_ms: 0,
                coverage: Coverage::default(),
                plan,
                dir: None,
                files: 0,
            };
        }
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    if let Err(payload) = r {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        let loc = crate::panics::take_location().unwrap_or_default();
        world.violation = Some(Violation {
            inv: Inv::Panic,
            at_ms: world.now,
            detail: format!("panic: {msg} {loc}"),
        });
    }
    let mut cov = std::mem::take(&mut world.cov);
    cov.add(Cov::RestoreCheck, world.checker.restore_checks);
    cov.add(Cov::OrphanFile, world.checker.orphans);
    let mut out_plan = world.plan.clone();
    if !out_plan.replay_faults {
        out_plan.faults = std::mem::take(&mut world.recorded);
        out_plan.replay_faults = true;
    }
    let failed = world.violation.is_some();
    let dir = world.app.dir.clone();
    let report = RunReport {
        seed,
        violation: world.violation.take(),
        warnings: std::mem::take(&mut world.warnings),
        trace_hash: world.trace.hash_hex(),
        events: world.events,
        sim_ms: world.now,
        coverage: cov,
        plan: out_plan,
        dir: (failed && opts.keep_dir_on_failure).then(|| dir.clone()),
        files: world.files_cut,
    };
    if let Proc::Running(r) = std::mem::replace(&mut world.proc, Proc::Down) {
        let Running { engine, db, .. } = *r;
        drop(engine);
        db.close();
    }
    if let Proc::Starting(s) = std::mem::replace(&mut world.proc, Proc::Down) {
        s.db.close();
    }
    world.oracle_conn = None;
    world.app.close();
    drop(world);
    if !(failed && opts.keep_dir_on_failure) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report
}
