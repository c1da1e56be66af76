//! The driver: runs a [`Replicator`] against the simulated [`Source`] and [`Store`] the
//! way cli/src/replicate_task/ does, with a fake clock and scripted outcomes, and
//! checks the replication invariants as it goes.
//!
//! Commands are carried out as the shell carries them out: `ReadWal` answers with the
//! WAL header, lengths and bytes; `Upload` builds the file once (first attempt) with
//! [`spec::materialize`] and PUTs it with `If-None-Match`; `CheckUpload` compares the
//! stored object with the built bytes; `Checkpoint` releases the read transaction,
//! checkpoints, lets writers go and takes the read transaction again (after its
//! `_walvault_seq` write). Upload and check answers are immediate or, in deferred mode,
//! wait in [`Harness::inflight`] until a test completes them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::source::{PS, Pages, PosKey, Source};
use super::store::{Store, first_diff};
use crate::keys::FileId;
use crate::replicator::{
    CheckResult, CheckpointMode, CheckpointResult, Command, Config, Event, Input, Position,
    Replicator, UploadResult,
};
use crate::restore_plan::Target;
use crate::spec;
use crate::time::Now;

mod checks;

/// What the store does with one upload attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A conditional PUT: `Stored`, or `AlreadyExists` when the key is taken.
    Ok,
    /// 5xx: nothing stored.
    Transient,
    Permanent,
    /// Stored, but the answer was lost (timeout after the write).
    UnknownStored,
    /// Not stored, and the answer was lost.
    UnknownLost,
    /// An earlier ambiguous attempt stored it: this one gets 412.
    ExistsOurs,
    /// The shell could not build the file (I/O error): `SourceChanged`.
    BuildFails,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// GET the object and compare.
    Real,
    Failed,
}

/// How the shell's checkpoint command goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CkptAnswer {
    /// Runs: with writers blocked and the read lock released, it copies everything.
    Run,
    /// An application reader pins half the WAL: a partial checkpoint.
    AppReader,
    /// SQLITE_BUSY: nothing copied.
    Busy,
    Fail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Req {
    Upload { file: FileId, attempt: u32 },
    Check { file: FileId, attempt: u32 },
}

impl Req {
    pub fn file(&self) -> FileId {
        match *self {
            Req::Upload { file, .. } | Req::Check { file, .. } => file,
        }
    }
}

type Window = Box<dyn FnOnce(&mut Source)>;

pub const WALL0: i64 = 1_760_000_000_000;

pub fn config() -> Config {
    Config {
        sync_interval_ms: 1_000,
        max_in_flight: 4,
        checkpoint_frames: 1_000_000,
        checkpoint_lock_ms: 2_000,
        truncate_bytes: u64::MAX,
        read_chunk_bytes: 4 * 1024 * 1024,
        seed: 7,
        ..Config::default()
    }
}

pub struct Harness {
    pub cfg: Config,
    pub src: Source,
    pub store: Store,
    pub engine: Replicator,
    pub now: u64,
    /// Upload and check answers wait in `inflight` until completed by the test.
    pub deferred: bool,
    /// The shell's `_walvault_seq` write before each read transaction.
    pub seq_write: bool,
    /// Scripted answers (immediate mode); default `Ok` / `Real` / `true` / `Run`.
    pub uploads: VecDeque<Outcome>,
    pub checks: VecDeque<CheckOutcome>,
    pub lock_answers: VecDeque<bool>,
    pub ckpt_answers: VecDeque<CkptAnswer>,
    /// What the application does while a checkpoint command has writers released and
    /// the read lock not yet taken again.
    pub ckpt_window: VecDeque<Window>,
    pub inflight: Vec<Req>,
    built: BTreeMap<FileId, Vec<u8>>,
    /// The bytes each outstanding upload carries (the shell's request owns them).
    pub sending: BTreeMap<FileId, Vec<u8>>,
    /// The last persisted position (survives crashes, like the state file).
    pub persisted: Option<Position>,
    /// Every command of the current engine instance, with the time it was seen.
    pub trace: Vec<(u64, Command)>,
    pub instance: u32,
    /// Images of files cut with no WAL (their header carries no WAL position).
    cut_images: BTreeMap<FileId, Vec<u8>>,
    /// The state each stored TXID claims (every file ending there must agree).
    pub claims: BTreeMap<u64, Vec<u8>>,
    verified: BTreeSet<u64>,
    /// Most requests the engine counted as outstanding at once.
    pub max_outstanding: usize,
    /// Most requests outstanding at the store at once, including those for files the
    /// engine dropped (`Forget`) while their request was still out.
    pub max_at_store: usize,
    forgotten: BTreeSet<FileId>,
    /// Deadlines `handle_timeout` could not act on (a real shell would busy-loop).
    pub spins: u32,
    last_durable: u64,
    last_persist: u64,
    pub stopped: bool,
    /// The shell's run mark: the run's first TXID, set at start, removed at a clean
    /// stop (survives crashes).
    pub run_mark: Option<u64>,
    pub halted: Option<String>,
    /// A stat's idle time when the caller's clock is wrong (stepped back an hour, say).
    pub stat_idle_override: Option<u64>,
    /// The WAL's hash when last written through [`Harness::commit`] or seen changed by
    /// a stat, and when: the modification time a stat reports.
    wal_written: (u64, u64),
}

fn wal_hash(wal: &[u8]) -> u64 {
    wal.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Harness {
    pub fn new(cfg: Config, src: Source) -> Self {
        Harness {
            engine: Replicator::new(cfg.clone()),
            cfg,
            src,
            store: Store::default(),
            now: 1_000,
            deferred: false,
            seq_write: true,
            uploads: VecDeque::new(),
            checks: VecDeque::new(),
            lock_answers: VecDeque::new(),
            ckpt_answers: VecDeque::new(),
            ckpt_window: VecDeque::new(),
            inflight: Vec::new(),
            built: BTreeMap::new(),
            sending: BTreeMap::new(),
            persisted: None,
            trace: Vec::new(),
            instance: 0,
            cut_images: BTreeMap::new(),
            claims: BTreeMap::new(),
            verified: BTreeSet::new(),
            max_outstanding: 0,
            max_at_store: 0,
            forgotten: BTreeSet::new(),
            spins: 0,
            last_durable: 0,
            last_persist: 0,
            stopped: false,
            run_mark: None,
            halted: None,
            stat_idle_override: None,
            wal_written: (0, 0),
        }
    }

    pub fn t(&self) -> Now {
        Now::new(self.now, WALL0 + self.now as i64)
    }

    /// Takes the read lock and starts the engine from the persisted position and the
    /// store's tip, as the shell does.
    pub fn start(&mut self) {
        self.src.acquire_read_lock(self.seq_write);
        let remote = self.store.tip();
        let local = self.persisted;
        let unfinished_run = self.run_mark.take();
        self.engine.handle(
            self.t(),
            Input::Start {
                page_size: PS,
                local,
                remote,
                unfinished_run,
            },
        );
        self.run_mark = Some(self.engine.next_txid());
        self.drain();
    }

    /// Kills the process: in-flight uploads for which `landed` says so reach the store,
    /// everything else in memory is gone, SQLite's locks are released.
    pub fn crash(&mut self, landed: &dyn Fn(usize, FileId) -> bool) {
        for (i, r) in std::mem::take(&mut self.inflight).into_iter().enumerate() {
            if let Req::Upload { file, .. } = r
                && landed(i, file)
                && let Some(bytes) = self.sending.get(&file).cloned()
                && self.store.put_if_absent(file, &bytes)
            {
                self.on_stored(file);
            }
        }
        self.built.clear();
        self.sending.clear();
        self.forgotten.clear();
        self.trace.clear();
        self.src.release_read_lock();
        self.src.writers_locked = false;
        self.instance += 1;
        let mut cfg = self.cfg.clone();
        cfg.seed = cfg.seed.wrapping_add(u64::from(self.instance));
        self.engine = Replicator::new(cfg);
        self.last_persist = 0;
        self.stopped = false;
    }

    /// Runs every queued command (and what answering them queues) to completion.
    pub fn drain(&mut self) {
        let mut n = 0u32;
        while let Some(cmd) = self.engine.poll_command() {
            n += 1;
            assert!(n < 200_000, "command storm");
            self.trace.push((self.now, cmd.clone()));
            self.execute(cmd);
        }
    }

    /// Moves the clock forward by `ms`, firing every timer due on the way.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        let mut n = 0u32;
        while let Some(t) = self.engine.poll_timeout() {
            if t > target {
                break;
            }
            n += 1;
            assert!(n < 1_000_000, "timer storm");
            self.now = self.now.max(t);
            let seen = self.trace.len();
            self.engine.handle_timeout(self.t());
            self.drain();
            if self.trace.len() == seen && self.engine.poll_timeout() == Some(t) && t <= self.now {
                // A deadline that handle_timeout cannot act on: a shell sleeping until
                // it would wake at once, forever. Step the clock to get past it.
                self.spins += 1;
                self.now = (self.now + 10).min(target);
                if self.now == target {
                    break;
                }
            }
        }
        self.now = target;
    }

    /// One sync interval.
    pub fn tick(&mut self) {
        self.advance(self.cfg.sync_interval_ms);
    }

    /// An application transaction; `None` when writers are blocked.
    pub fn commit(&mut self, pages: &[u32], commit: u32) -> Option<PosKey> {
        let key = self.src.commit_txn(pages, commit);
        self.note_wal_written();
        key
    }

    /// The WAL's modification time as a stat would report it: when it last changed.
    fn note_wal_written(&mut self) -> u64 {
        let hash = wal_hash(self.src.wal_bytes());
        if hash != self.wal_written.0 {
            self.wal_written = (hash, self.now);
        }
        hash
    }

    fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::ReadWal { offset, max_len } => {
                let wal = self.src.wal_bytes().to_vec();
                let len = wal.len() as u64;
                let header = (len >= 32).then(|| &wal[..32]);
                let start = offset.min(len) as usize;
                let end = offset.saturating_add(max_len).min(len) as usize;
                let db_len = self.src.db.len() as u64;
                self.engine.handle(
                    self.t(),
                    Input::WalRead {
                        header,
                        file_len: len,
                        db_len,
                        offset,
                        data: &wal[start..end.max(start)],
                    },
                );
            }
            Command::StatWal => {
                // The hash stands in for the modification stamp: any write changes it.
                // Writes other than commits (a truncation) count as just now.
                let stamp = self.note_wal_written();
                let len = self.src.wal_bytes().len() as u64;
                let idle_ms = self
                    .stat_idle_override
                    .unwrap_or(self.now - self.wal_written.1);
                self.engine.handle(
                    self.t(),
                    Input::WalStat {
                        len,
                        stamp,
                        idle_ms,
                    },
                );
            }
            Command::Upload {
                file,
                spec,
                attempt,
            } => {
                assert!(
                    !self.inflight.iter().any(|r| r.file() == file),
                    "{file} sent again while a request for it is outstanding"
                );
                if !self.built.contains_key(&file) {
                    match spec::materialize(&spec, &mut Pages(&self.src), Vec::new()) {
                        Ok((bytes, _)) => {
                            self.built.insert(file, bytes);
                        }
                        Err(e) => {
                            let result = UploadResult::SourceChanged(e.to_string());
                            self.engine.handle(
                                self.t(),
                                Input::UploadDone {
                                    file,
                                    attempt,
                                    result,
                                },
                            );
                            return;
                        }
                    }
                }
                if self.deferred {
                    self.sending.insert(file, self.built[&file].clone());
                    self.inflight.push(Req::Upload { file, attempt });
                    self.note_outstanding();
                } else {
                    let o = self.uploads.pop_front().unwrap_or(Outcome::Ok);
                    self.resolve_upload(file, attempt, o);
                }
            }
            Command::CheckUpload {
                file,
                spec,
                attempt,
            } => {
                assert!(
                    !self.inflight.iter().any(|r| r.file() == file),
                    "{file} checked while a request for it is outstanding"
                );
                if !self.built.contains_key(&file)
                    && let Ok((bytes, _)) =
                        spec::materialize(&spec, &mut Pages(&self.src), Vec::new())
                {
                    self.built.insert(file, bytes);
                }
                if self.deferred {
                    self.inflight.push(Req::Check { file, attempt });
                    self.note_outstanding();
                } else {
                    let o = self.checks.pop_front().unwrap_or(CheckOutcome::Real);
                    self.resolve_check(file, attempt, o);
                }
            }
            Command::Forget { file } => {
                self.built.remove(&file);
                self.forgotten.insert(file);
            }
            Command::LockWriters => {
                // Invariant: writers are blocked only when everything read is durable.
                assert_eq!(
                    self.engine.pending_files(),
                    0,
                    "LockWriters with files pending"
                );
                assert_eq!(
                    self.engine.unshipped_txns(),
                    0,
                    "LockWriters with unshipped txns"
                );
                let ok = self.lock_answers.pop_front().unwrap_or(true) && !self.src.txn_open();
                if ok {
                    self.src.writers_locked = true;
                }
                self.engine.handle(self.t(), Input::WritersLocked { ok });
            }
            Command::UnlockWriters => {
                self.src.writers_locked = false;
            }
            Command::Checkpoint { mode } => self.checkpoint(mode),
            Command::Persist(p) => self.on_persist(p),
            Command::Event(Event::FileCut { file, .. }) => {
                if self.src.salts().is_none() {
                    self.cut_images.insert(file, self.src.image());
                }
            }
            Command::Event(_) => {}
            Command::Stopped => {
                self.stopped = true;
                self.run_mark = None;
                self.src.release_read_lock();
            }
            Command::Halt { reason } => {
                self.halted = Some(reason);
                self.src.release_read_lock();
                self.src.writers_locked = false;
            }
        }
    }

    fn note_outstanding(&mut self) {
        let counted = self
            .inflight
            .iter()
            .filter(|r| !self.forgotten.contains(&r.file()))
            .count();
        self.max_outstanding = self.max_outstanding.max(counted);
        self.max_at_store = self.max_at_store.max(self.inflight.len());
        assert!(
            counted <= self.cfg.max_in_flight.max(1),
            "{counted} requests outstanding, window is {}",
            self.cfg.max_in_flight
        );
    }

    fn checkpoint(&mut self, mode: CheckpointMode) {
        // Invariant: writers are blocked and every committed frame is durable.
        assert!(
            self.src.writers_locked,
            "Checkpoint without writers blocked"
        );
        let d = self.engine.durable();
        let (s1, s2, end) = self.src.pos();
        assert_eq!(
            (d.salt1, d.salt2, d.wal_end),
            (s1, s2, end),
            "Checkpoint while WAL frames are not durable"
        );
        self.src.release_read_lock();
        let answer = self.ckpt_answers.pop_front().unwrap_or(CkptAnswer::Run);
        let mut result = match answer {
            CkptAnswer::Run => {
                let (log, done) = self.src.checkpoint();
                Ok(CheckpointResult {
                    busy: false,
                    log_frames: log as i64,
                    checkpointed_frames: done as i64,
                })
            }
            CkptAnswer::AppReader => {
                let half = self.src.frames_in_wal() / 2;
                self.src.read_mark = Some(half);
                let (log, done) = self.src.checkpoint();
                self.src.read_mark = None;
                Ok(CheckpointResult {
                    busy: false,
                    log_frames: log as i64,
                    checkpointed_frames: done as i64,
                })
            }
            CkptAnswer::Busy => Ok(CheckpointResult {
                busy: true,
                log_frames: -1,
                checkpointed_frames: -1,
            }),
            CkptAnswer::Fail => Err("disk I/O error".to_string()),
        };
        self.src.writers_locked = false;
        if let Some(w) = self.ckpt_window.pop_front() {
            w(&mut self.src);
        }
        if mode == CheckpointMode::Truncate && answer == CkptAnswer::Run {
            let (log, done) = self.src.checkpoint();
            self.src.truncate_wal();
            result = Ok(CheckpointResult {
                busy: false,
                log_frames: log as i64,
                checkpointed_frames: done as i64,
            });
        }
        self.src.acquire_read_lock(self.seq_write);
        self.engine
            .handle(self.t(), Input::CheckpointDone { mode, result });
    }

    fn resolve_upload(&mut self, file: FileId, attempt: u32, o: Outcome) {
        let bytes = match self.sending.remove(&file) {
            Some(b) => b,
            None => self
                .built
                .get(&file)
                .cloned()
                .expect("built before sending"),
        };
        let put = |h: &mut Self| {
            let stored = h.store.put_if_absent(file, &bytes);
            if stored {
                h.on_stored(file);
            }
            stored
        };
        let result = match o {
            Outcome::Ok => {
                if put(self) {
                    UploadResult::Stored
                } else {
                    UploadResult::AlreadyExists
                }
            }
            Outcome::Transient => UploadResult::Transient("503 SlowDown".into()),
            Outcome::Permanent => UploadResult::Permanent("403 AccessDenied".into()),
            Outcome::UnknownStored => {
                put(self);
                UploadResult::Unknown("connection reset".into())
            }
            Outcome::UnknownLost => UploadResult::Unknown("timeout".into()),
            Outcome::ExistsOurs => {
                put(self);
                UploadResult::AlreadyExists
            }
            Outcome::BuildFails => UploadResult::SourceChanged("injected read error".into()),
        };
        self.engine.handle(
            self.t(),
            Input::UploadDone {
                file,
                attempt,
                result,
            },
        );
    }

    fn resolve_check(&mut self, file: FileId, attempt: u32, o: CheckOutcome) {
        let result = match o {
            CheckOutcome::Failed => CheckResult::Failed("GET 500".into()),
            CheckOutcome::Real => match (self.store.get(file), self.built.get(&file)) {
                (None, _) => CheckResult::Absent,
                (Some(theirs), Some(ours)) if theirs == &ours[..] => CheckResult::Matches,
                (Some(_), Some(_)) => CheckResult::Differs,
                (Some(_), None) => CheckResult::Failed("cannot rebuild our file".into()),
            },
        };
        self.engine.handle(
            self.t(),
            Input::CheckDone {
                file,
                attempt,
                result,
            },
        );
    }

    /// Completes outstanding request `i` (deferred mode).
    pub fn complete(&mut self, i: usize, upload: Outcome, check: CheckOutcome) {
        let r = self.inflight.remove(i);
        match r {
            Req::Upload { file, attempt } => self.resolve_upload(file, attempt, upload),
            Req::Check { file, attempt } => self.resolve_check(file, attempt, check),
        }
        self.drain();
    }

    /// Completes every outstanding request successfully, repeatedly, until none is left.
    pub fn complete_all(&mut self) {
        let mut n = 0;
        while !self.inflight.is_empty() {
            n += 1;
            assert!(n < 10_000);
            self.complete(0, Outcome::Ok, CheckOutcome::Real);
        }
    }

    /// A file reached the store: record the state it claims.
    fn on_stored(&mut self, file: FileId) {
        let h = *self.store.header(file).expect("just stored");
        let expected = if h.wal_offset == 0 {
            self.cut_images
                .get(&file)
                .cloned()
                .unwrap_or_else(|| panic!("{file} has no WAL position and was not cut here"))
        } else {
            let key = (h.wal_salt1, h.wal_salt2, h.wal_offset + h.wal_size);
            self.src
                .state_at(key)
                .cloned()
                .unwrap_or_else(|| panic!("{file} claims WAL position {key:?}, never committed"))
        };
        assert_eq!(
            expected.len(),
            h.commit as usize * PS as usize,
            "{file}: commit size differs from the source's size at its position"
        );
        match self.claims.get(&file.max_txid) {
            Some(prev) => assert!(
                prev == &expected,
                "two files claim TXID {} with different states",
                file.max_txid
            ),
            None => {
                self.claims.insert(file.max_txid, expected);
            }
        }
        self.verified.retain(|&t| t < file.max_txid);
    }

    fn on_persist(&mut self, p: Position) {
        assert!(
            p.txid >= self.last_persist,
            "Persist went backwards: {} after {}",
            p.txid,
            self.last_persist
        );
        assert!(
            p.txid <= self.engine.durable().txid,
            "Persist ahead of durable"
        );
        assert!(
            self.store.level0_holes(p.txid).is_empty(),
            "Persist over a hole"
        );
        let (txid, image) = self
            .store
            .restore(Target::Txid(p.txid))
            .unwrap_or_else(|e| panic!("persisted TXID {} does not restore: {e}", p.txid));
        assert_eq!(txid, p.txid);
        if p.wal_end > 0 {
            let want = self
                .src
                .state_at((p.salt1, p.salt2, p.wal_end))
                .unwrap_or_else(|| panic!("persisted position {p:?} was never committed"));
            if let Some(d) = first_diff(&image, want) {
                panic!("persisted {p:?} restores to another state: {d}");
            }
            assert_eq!(p.commit as usize * PS as usize, want.len());
        }
        self.last_persist = p.txid;
        self.persisted = Some(p);
    }

    /// A durable-position baseline after a crash (durable may move either way then).
    pub fn reset_durable_floor(&mut self) {
        self.last_durable = 0;
    }

    /// Asks the engine to stop and runs until it reports `Stopped` (or halts).
    pub fn shutdown(&mut self, snapshot: bool) {
        self.engine.handle(self.t(), Input::Shutdown { snapshot });
        self.drain();
        let mut n = 0;
        while !self.stopped && self.halted.is_none() {
            n += 1;
            assert!(n < 2_000, "shutdown never finished");
            self.complete_all();
            self.advance(self.cfg.sync_interval_ms);
        }
    }
}
