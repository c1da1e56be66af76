//! One simulated run: the event loop in simulated time and everything it drives.
//!
//! - the application (app.rs) runs the plan's workload on real SQLite;
//! - the replicator "process" is the real `Replicator` plus a shell that carries out
//!   its commands exactly as cli/src/replicate_task/ does (shell.rs);
//! - store requests travel with latency and faults (requests.rs) to the in-memory
//!   store (store.rs);
//! - crashes kill the process at event boundaries or between two commands;
//! - after every SQLite operation the oracle records the new source state, and after
//!   every store change the checker re-verifies what the change can affect.
//!
//! The first broken invariant ends the run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use walvault_engine::keys::FileId;
use walvault_engine::replicator::{CheckResult, Position, Replicator, UploadResult};
use walvault_engine::time::Now;

use crate::app::{self, App};
use crate::checker::Checker;
use crate::coverage::{Cov, Coverage};
use crate::disk::Disk;
use crate::invariant::{Inv, Violation};
use crate::memfs::{self, MemFile};
use crate::mutation::Mutation;
use crate::oracle::Oracle;
use crate::params::Params;
use crate::plan::{AppOp, Fault, FaultEntry, Plan, Site};
use crate::queue::EventQueue;
use crate::replica_db::{ReplicaDb, WalHandle};
use crate::rng::{Purpose, Stream};
use crate::store::{Digest32, Store};
use crate::trace::Trace;
pub use crate::world_run::run_plan;

/// Unix time (ms) of simulated time zero: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// A run that reaches this many events is stuck (reported as a liveness failure).
pub const MAX_EVENTS: u64 = 400_000;
/// Commands the engine may have executed at one instant of simulated time (in one
/// drain, or in drains of events due at that instant) before the run fails as a busy
/// loop. Time stands still there, so the event bound would take minutes to see it.
/// Seeds 0-9999 execute at most 16 462 at one instant (a long WAL read a frame at a
/// time).
pub const MAX_INSTANT_COMMANDS: u64 = 100_000;

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
    /// A WAL read that found SQLite busy while taking the lock again, tried again.
    RetryRead {
        inc: u64,
        offset: u64,
        max_len: u64,
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
    /// The replicator's connection; `None` while released (idle, decision 21).
    pub db: Option<ReplicaDb>,
    pub release: crate::release::ReleaseState,
    pub staged: BTreeMap<FileId, (Arc<Vec<u8>>, Digest32)>,
    /// Page checksums of the state the last level-0 file built produces (as the
    /// shell's `DbTask::sums`; this run only: the simulator saves none at a stop).
    pub sums: Option<(u64, walvault_engine::dbsum::PageSums)>,
    pub stopping: bool,
    pub first_header: Option<[u8; 32]>,
    pub last_cut_max: u64,
    /// When this process last cut a file (not counting a level-9 snapshot at a stop).
    pub last_cut_at: Option<u64>,
    pub failures_seen: BTreeMap<FileId, u32>,
    pub unknown_seen: BTreeSet<FileId>,
    pub exists_seen: BTreeSet<FileId>,
    /// The last handle_timeout at this time emitted nothing: do not fire it again
    /// until something else happens.
    pub idle_timer_at: Option<u64>,
    /// Requests (uploads and checks) made per file.
    pub requests: BTreeMap<FileId, u32>,
    /// When each file's recent uploads (`false`) and checks (`true`) were sent, within
    /// the storm window ([`crate::params::Params::storm_bound`]).
    pub sent_at: BTreeMap<(FileId, bool), std::collections::VecDeque<u64>>,
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
    /// Events taken from the queue (timers, application operations, request legs,
    /// completions, crashes).
    pub events: u64,
    /// Records of the canonical trace: the queue's events and everything they set off
    /// (engine commands, source states, store writes), one line each in `run`.
    pub trace_records: u64,
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
    pub(crate) fault_map: BTreeMap<(Site, u64), Fault>,
    pub recorded: Vec<FaultEntry>,
    pub(crate) site_n: BTreeMap<Site, u64>,
    pub app: App,
    pub db_file: MemFile,
    pub wal: WalHandle,
    pub oracle: Oracle,
    pub store: Store,
    pub disk: Disk,
    pub checker: Checker,
    pub proc: Proc,
    pub inc: u64,
    pub(crate) restart_token: u64,
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
    /// Commands executed at the current instant of simulated time: (instant, count).
    pub instant_commands: (u64, u64),
    /// The last stat of the WAL: (writes it had seen, the stamp it reported).
    pub last_wal_stat: Option<(u64, u64)>,
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
            instant_commands: (0, 0),
            last_wal_stat: None,
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
                memfs::set_time(self.now);
                self.events += 1;
                self.fire_timer();
            } else {
                let Some((t, ev)) = self.q.pop() else { break };
                self.now = self.now.max(t);
                memfs::set_time(self.now);
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

    pub(crate) fn fire_timer(&mut self) {
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
    pub(crate) fn after_event(&mut self) {
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
    pub(crate) fn lag_zero_now(&self) -> bool {
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

    pub(crate) fn dispatch(&mut self, ev: Ev) {
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
            Ev::RetryRead {
                inc,
                offset,
                max_len,
            } => self.retry_read(inc, offset, max_len),
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

    pub(crate) fn deadline(&mut self, grace: bool) {
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
}
