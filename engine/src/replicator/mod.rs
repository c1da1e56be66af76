//! The replication state machine: committed WAL transactions in, LTX uploads,
//! checkpoints and persisted positions out. Sans-IO in the quinn-proto style:
//! [`Replicator::handle`] takes inputs, [`Replicator::poll_command`] yields commands,
//! [`Replicator::poll_timeout`] names the next deadline. Time and randomness come from
//! the caller; the same machine runs in production and in the simulator.

mod follow;
mod queue;
mod types;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

pub use types::*;

use crate::backoff::Backoff;
use crate::keys::FileId;
use crate::ltx::{self, FLAG_NO_CHECKSUM, Header};
use crate::spec::{FileSpec, PageSet, PageSource};
use crate::time::Now;
use crate::wal::{WAL_HEADER_SIZE, WalChange, WalHeader};
use follow::{Follower, ReadOutcome};
use queue::{Entry, Queue, State};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for [`Input::Start`].
    Idle,
    /// Reading the whole WAL once to rebuild the page index and find the resume point.
    Scanning,
    Streaming,
    Stopped,
    Halted,
}

/// Where a checkpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ckpt {
    Idle,
    /// Waiting for writers to be blocked.
    Locking(CheckpointMode),
    /// Writers blocked: ship the WAL tail, then checkpoint (or give up at `deadline`).
    Locked {
        mode: CheckpointMode,
        deadline: u64,
    },
    /// The checkpoint runs; `frames` were in the WAL, all durable.
    Running {
        mode: CheckpointMode,
        frames: u64,
        header: WalHeader,
    },
}

struct ResumePoint {
    salt1: u32,
    salt2: u32,
    wal_end: u64,
    commit: u32,
}

pub struct Replicator {
    cfg: Config,
    page_size: u32,
    phase: Phase,
    now: Now,
    follow: Follower,
    queue: Queue,
    backoff: Backoff,
    next_txid: u64,
    durable: Position,
    /// Database size after the last file cut.
    shipped_commit: u32,
    db_len: u64,
    next_tick: Option<u64>,
    /// Offset and length of the outstanding WAL read.
    reading: Option<(u64, u64)>,
    ckpt: Ckpt,
    /// No new checkpoint attempt before this time (after an abandoned one).
    ckpt_not_before: u64,
    /// Our own complete checkpoint left the WAL ready to restart from this header.
    restart_expected: Option<WalHeader>,
    need_snapshot: Option<(SnapshotReason, u64)>,
    resume: Option<ResumePoint>,
    remote_empty: bool,
    /// First TXID the full file written at start must cover (bridges a hole).
    full_from: u64,
    /// Files dropped from the queue while their request was still out.
    orphans: std::collections::BTreeSet<FileId>,
    shutdown: bool,
    final_read_done: bool,
    /// `Some(false)`: a level-9 snapshot is wanted before stopping; `Some(true)`: cut.
    stop_snapshot: Option<bool>,
    out: VecDeque<Command>,
}

impl Replicator {
    pub fn new(cfg: Config) -> Self {
        let backoff = Backoff::new(cfg.backoff, cfg.seed);
        Replicator {
            cfg,
            page_size: 0,
            phase: Phase::Idle,
            now: Now::default(),
            follow: Follower::default(),
            queue: Queue::default(),
            backoff,
            next_txid: 1,
            durable: Position::default(),
            shipped_commit: 0,
            db_len: 0,
            next_tick: None,
            reading: None,
            ckpt: Ckpt::Idle,
            ckpt_not_before: 0,
            restart_expected: None,
            need_snapshot: None,
            resume: None,
            remote_empty: true,
            full_from: 1,
            orphans: std::collections::BTreeSet::new(),
            shutdown: false,
            final_read_done: false,
            stop_snapshot: None,
            out: VecDeque::new(),
        }
    }

    /// The last position known durable in the store.
    pub fn durable(&self) -> Position {
        self.durable
    }

    /// The TXID the next file will get.
    pub fn next_txid(&self) -> u64 {
        self.next_txid
    }

    /// Files cut but not yet durable.
    pub fn pending_files(&self) -> usize {
        self.queue.len()
    }

    /// Committed transactions read but not yet cut into a file.
    pub fn unshipped_txns(&self) -> u64 {
        self.follow.batch.txns
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped | Phase::Halted)
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    /// The next monotonic deadline (ms) at which [`Replicator::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<u64> {
        if matches!(self.phase, Phase::Idle | Phase::Stopped | Phase::Halted) {
            return None;
        }
        let lock_deadline = match self.ckpt {
            Ckpt::Locked { deadline, .. } => Some(deadline),
            _ => None,
        };
        // Files the window holds back wait for a completion, not for a timer: reporting
        // their (past) deadline would make the caller spin.
        let queue_deadline = if self.outstanding() < self.cfg.max_in_flight.max(1) {
            self.queue.next_deadline()
        } else {
            None
        };
        [self.next_tick, queue_deadline, lock_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Requests at the store: the queue's plus those of files dropped while in flight.
    fn outstanding(&self) -> usize {
        self.queue.outstanding() + self.orphans.len()
    }

    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        if matches!(self.phase, Phase::Idle | Phase::Stopped | Phase::Halted) {
            return;
        }
        if let Ckpt::Locked { deadline, .. } = self.ckpt
            && deadline <= now.mono_ms
        {
            // Shipping the tail took too long: never hold writers hostage to the store.
            self.abandon_checkpoint();
        }
        if self.next_tick.is_some_and(|t| t <= now.mono_ms) {
            self.next_tick = Some(now.mono_ms + self.cfg.sync_interval_ms);
            if self.phase == Phase::Streaming && !self.shutdown {
                self.start_read();
            }
        }
        self.dispatch();
    }

    pub fn handle(&mut self, now: Now, input: Input<'_>) {
        self.now = now;
        if matches!(self.phase, Phase::Stopped | Phase::Halted) {
            return;
        }
        match input {
            Input::Start {
                page_size,
                local,
                remote,
            } => self.on_start(page_size, local, remote),
            Input::WalRead {
                header,
                file_len,
                db_len,
                offset,
                data,
            } => self.on_wal_read(header, file_len, db_len, offset, data),
            Input::UploadDone { file, result } => self.on_upload_done(file, result),
            Input::CheckDone { file, result } => self.on_check_done(file, result),
            Input::WritersLocked { ok } => self.on_writers_locked(ok),
            Input::CheckpointDone { mode, result } => self.on_checkpoint_done(mode, result),
            Input::Shutdown { snapshot } => {
                if !self.shutdown {
                    self.shutdown = true;
                    if matches!(self.ckpt, Ckpt::Locked { .. }) {
                        self.abandon_checkpoint();
                    }
                    self.stop_snapshot = snapshot.then_some(false);
                    if self.phase == Phase::Streaming {
                        self.start_read();
                    }
                }
            }
        }
        self.dispatch();
        self.maybe_stopped();
    }

    fn on_start(&mut self, page_size: u32, local: Option<Position>, remote: RemoteTip) {
        if self.phase != Phase::Idle {
            return;
        }
        if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
            self.halt(format!("database page size {page_size} is not valid"));
            return;
        }
        self.page_size = page_size;
        self.next_txid = remote.max_txid.saturating_add(1);
        self.remote_empty = remote.max_txid == 0;
        // A hole below the tip (a file lost while later ones landed, or no snapshot at
        // all): resuming would extend a chain no restore can reach. One full file from
        // just past the reachable end bridges it.
        let chain_end = remote.chain_end.min(remote.max_txid);
        self.full_from = chain_end + 1;
        if let Some(l) = local
            && l.txid > remote.max_txid
        {
            self.emit(Event::RemoteBehind {
                local_txid: l.txid,
                remote_txid: remote.max_txid,
            });
        }
        let has_hole = chain_end < remote.max_txid;
        let from_header = remote.newest.filter(|h| {
            !has_hole && h.max_txid == remote.max_txid && h.wal_salt1 | h.wal_salt2 != 0
        });
        self.resume = match (from_header, local) {
            (Some(h), _) => Some(ResumePoint {
                salt1: h.wal_salt1,
                salt2: h.wal_salt2,
                wal_end: h.wal_offset + h.wal_size,
                commit: h.commit,
            }),
            (None, Some(l))
                if !has_hole && l.txid == remote.max_txid && l.txid > 0 && l.wal_end > 0 =>
            {
                Some(ResumePoint {
                    salt1: l.salt1,
                    salt2: l.salt2,
                    wal_end: l.wal_end,
                    commit: l.commit,
                })
            }
            _ => None,
        };
        if let Some(h) = remote.newest.filter(|h| h.max_txid == chain_end) {
            self.durable = Position {
                txid: chain_end,
                salt1: h.wal_salt1,
                salt2: h.wal_salt2,
                wal_end: h.wal_offset + h.wal_size,
                commit: h.commit,
            };
        } else {
            self.durable = Position {
                txid: chain_end,
                ..Position::default()
            };
        }
        self.follow.resume_at = self.resume.as_ref().map(|r| r.wal_end);
        self.phase = Phase::Scanning;
        self.next_tick = Some(self.now.mono_ms + self.cfg.sync_interval_ms);
        self.read_at(0);
    }

    fn start_read(&mut self) {
        let ckpt_busy = matches!(self.ckpt, Ckpt::Locking(_) | Ckpt::Running { .. });
        if self.reading.is_none() && !ckpt_busy && !self.final_read_done {
            let off = self.follow.next_offset();
            self.read_at(off);
        }
    }

    fn read_at(&mut self, offset: u64) {
        let mut max_len = self.cfg.read_chunk_bytes.max(1);
        if let Some(g) = self.follow.generation.as_ref()
            && self.follow.stale_at == Some(offset)
        {
            // A reused WAL file keeps old frames after the live ones: peek at one frame
            // instead of re-reading megabytes of stale bytes on every tick. If it became
            // valid, the read comes back full and the rest follows at once.
            max_len = max_len.min(g.header.frame_size());
        }
        self.reading = Some((offset, max_len));
        self.out.push_back(Command::ReadWal { offset, max_len });
    }

    fn on_wal_read(
        &mut self,
        header: Option<&[u8]>,
        file_len: u64,
        db_len: u64,
        offset: u64,
        data: &[u8],
    ) {
        let Some((want, max_len)) = self.reading else {
            return;
        };
        if want != offset {
            return;
        }
        self.reading = None;
        self.db_len = db_len;
        // On a first read, adopt whatever generation is there and scan it from the start.
        let chunk_full = data.len() as u64 >= max_len;
        let (mut offset, mut data) = (offset, data);
        if self.follow.generation.is_none()
            && offset == 0
            && (self.phase == Phase::Scanning || self.need_snapshot.is_some())
            && let Some(h) = header.and_then(|b| WalHeader::parse(b).ok())
        {
            self.follow.adopt(h);
            self.follow.clear_batch();
            let skip = data.len().min(WAL_HEADER_SIZE as usize);
            (offset, data) = (WAL_HEADER_SIZE, &data[skip..]);
        }
        let before = self.follow.committed_offset();
        match self
            .follow
            .on_read(header, file_len, offset, data, chunk_full)
        {
            ReadOutcome::More(next) => {
                self.note_growth(before);
                self.read_at(next)
            }
            ReadOutcome::End => {
                self.note_growth(before);
                self.on_read_end()
            }
            ReadOutcome::Changed { change, new_header } => self.on_wal_changed(change, new_header),
        }
    }

    /// Growth of the old generation after our checkpoint means a later restart could
    /// drop frames we never saw: stop trusting the checkpoint's promise.
    fn note_growth(&mut self, before: u64) {
        if self.follow.committed_offset() > before {
            self.restart_expected = None;
        }
    }

    fn on_wal_changed(&mut self, change: WalChange, new_header: Option<WalHeader>) {
        if self.phase == Phase::Scanning {
            match new_header {
                Some(h) => {
                    self.follow.adopt(h);
                    self.follow.clear_batch();
                    self.read_at(WAL_HEADER_SIZE);
                }
                None => {
                    self.follow.forget_generation();
                    self.on_read_end();
                }
            }
            return;
        }
        let continues = match (change, new_header, self.restart_expected) {
            // A restart increments salt-1 in the shared WAL index, so exactly one restart
            // since our checkpoint shows as salt-1 + 1. (The checkpoint sequence is kept
            // per connection and is not reliable.) The read that follows every checkpoint
            // happens under our new read mark, so no second restart can hide in between
            // unnoticed, and growth of the old generation clears `restart_expected`.
            (WalChange::Reset, Some(new), Some(old)) => {
                new.salt1 == old.salt1.wrapping_add(1)
                    && new.page_size == old.page_size
                    && self.follow.batch.is_empty()
            }
            _ => false,
        };
        self.restart_expected = None;
        self.emit(Event::WalChanged { change, continues });
        match new_header {
            Some(h) => self.follow.adopt(h),
            None => self.follow.forget_generation(),
        }
        self.follow.clear_batch();
        if !continues && self.need_snapshot.is_none() {
            self.need_snapshot = Some((SnapshotReason::WalReset, self.next_txid));
        }
        if new_header.is_some() {
            self.read_at(WAL_HEADER_SIZE);
        } else {
            self.on_read_end();
        }
    }

    fn on_read_end(&mut self) {
        if self.phase == Phase::Scanning {
            self.finish_scan();
        }
        if self.shutdown {
            // The read that reached the end after the shutdown request is the last one.
            self.final_read_done = true;
        }
        if self.phase != Phase::Streaming {
            return;
        }
        if let Some((reason, min_txid)) = self.need_snapshot {
            if self.has_room() {
                self.cut_full(reason, min_txid);
            }
        } else if !self.follow.batch.is_empty() && self.has_room() {
            self.cut_incremental();
        }
        self.maybe_checkpoint();
        self.maybe_run_checkpoint();
    }

    fn finish_scan(&mut self) {
        self.phase = Phase::Streaming;
        let resume = self.resume.take();
        let found = self.follow.resume_found.take();
        self.follow.resume_at = None;
        if self.remote_empty {
            self.follow.clear_batch();
            self.need_snapshot = Some((SnapshotReason::Initial, 1));
            return;
        }
        let generation = self.follow.generation.as_ref();
        let same_gen = |r: &ResumePoint| {
            generation.is_some_and(|g| g.header.salt1 == r.salt1 && g.header.salt2 == r.salt2)
        };
        match resume {
            Some(r) if same_gen(&r) && (found.is_some() || r.wal_end == WAL_HEADER_SIZE) => {
                self.shipped_commit = found.unwrap_or(r.commit);
                self.emit(Event::Resumed {
                    txid: self.durable.txid,
                    wal_end: r.wal_end,
                });
            }
            _ => {
                self.follow.clear_batch();
                self.need_snapshot = Some((SnapshotReason::NoResumePoint, self.full_from));
            }
        }
    }

    fn has_room(&self) -> bool {
        matches!(self.ckpt, Ckpt::Locked { .. })
            || self.queue.len() < self.cfg.max_in_flight.max(1) * 4
    }

    fn take_txid(&mut self) -> u64 {
        let t = self.next_txid;
        self.next_txid += 1;
        t
    }

    fn base_header(&self, commit: u32, min_txid: u64, max_txid: u64) -> Header {
        Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: self.page_size,
            commit,
            min_txid,
            max_txid,
            timestamp_ms: self.now.wall_ms,
            node_id: self.cfg.node_id,
            ..Header::default()
        }
    }

    fn cut_incremental(&mut self) {
        let Some(generation) = self.follow.generation.as_ref() else {
            return;
        };
        if generation.header.page_size != self.page_size {
            self.halt(format!(
                "WAL page size {} differs from the database page size {}",
                generation.header.page_size, self.page_size
            ));
            return;
        }
        let (salt1, salt2) = (generation.header.salt1, generation.header.salt2);
        let lock = ltx::lock_pgno(self.page_size);
        let batch = self.follow.take_batch();
        let commit = batch.commit;
        let mut pages: Vec<(u32, PageSource)> = Vec::with_capacity(batch.pages.len());
        let mut growth = self.shipped_commit.saturating_add(1);
        let generation = self.follow.generation.as_ref();
        let push_growth_until =
            |pages: &mut Vec<(u32, PageSource)>, until: u32, growth: &mut u32| {
                // Pages the database grew by but this batch did not write: the newest
                // version SQLite would read (an earlier frame, else the database file).
                while *growth < until && *growth <= commit {
                    if *growth != lock {
                        let src = generation
                            .and_then(|g| g.index.get(growth).copied())
                            .map_or(PageSource::Db, PageSource::Wal);
                        pages.push((*growth, src));
                    }
                    *growth += 1;
                }
            };
        for (&pgno, &off) in batch.pages.range(1..=commit) {
            if pgno == lock {
                continue;
            }
            push_growth_until(&mut pages, pgno, &mut growth);
            pages.push((pgno, PageSource::Wal(off)));
            if pgno >= growth {
                growth = pgno + 1;
            }
        }
        push_growth_until(&mut pages, commit.saturating_add(1), &mut growth);
        let txid = self.take_txid();
        let mut header = self.base_header(commit, txid, txid);
        header.wal_offset = batch.start;
        header.wal_size = batch.end - batch.start;
        header.wal_salt1 = salt1;
        header.wal_salt2 = salt2;
        let spec = FileSpec {
            header,
            pages: PageSet::List(pages),
            prev_commit: Some(self.shipped_commit),
        };
        let position = Position {
            txid,
            salt1,
            salt2,
            wal_end: batch.end,
            commit,
        };
        self.shipped_commit = commit;
        let file = FileId {
            level: 0,
            min_txid: txid,
            max_txid: txid,
        };
        self.emit(Event::FileCut {
            file,
            pages: spec.page_count(),
            txns: batch.txns,
        });
        self.enqueue(file, spec, position);
    }

    fn cut_full(&mut self, reason: SnapshotReason, min_txid: u64) {
        let generation = self.follow.generation.as_ref();
        let commit = match generation.map(|g| g.commit).filter(|&c| c > 0) {
            Some(c) => c,
            None => u32::try_from(self.db_len / u64::from(self.page_size)).unwrap_or(u32::MAX),
        };
        if commit == 0 {
            return; // Nothing to snapshot yet; try again next tick.
        }
        if let Some(g) = generation
            && g.header.page_size != self.page_size
        {
            let msg = format!(
                "WAL page size {} differs from the database page size {}",
                g.header.page_size, self.page_size
            );
            self.halt(msg);
            return;
        }
        let overlay: Vec<(u32, u64)> = generation
            .map(|g| g.index.range(1..=commit).map(|(&p, &o)| (p, o)).collect())
            .unwrap_or_default();
        let (salt1, salt2, wal_end) = generation
            .map(|g| (g.header.salt1, g.header.salt2, g.scanner.committed_offset()))
            .unwrap_or((0, 0, 0));
        let txid = self.take_txid();
        let min_txid = min_txid.min(txid);
        let mut header = self.base_header(commit, min_txid, txid);
        if wal_end >= WAL_HEADER_SIZE {
            header.wal_offset = WAL_HEADER_SIZE;
            header.wal_size = wal_end - WAL_HEADER_SIZE;
            header.wal_salt1 = salt1;
            header.wal_salt2 = salt2;
        }
        let spec = FileSpec {
            header,
            pages: PageSet::Full { overlay },
            prev_commit: None,
        };
        let position = Position {
            txid,
            salt1,
            salt2,
            wal_end,
            commit,
        };
        self.follow.clear_batch();
        self.shipped_commit = commit;
        self.need_snapshot = None;
        let file = FileId {
            level: 0,
            min_txid,
            max_txid: txid,
        };
        self.emit(Event::SnapshotStarted {
            txid,
            reason,
            pages: commit,
        });
        self.emit(Event::FileCut {
            file,
            pages: spec.page_count(),
            txns: 0,
        });
        self.enqueue(file, spec, position);
    }

    fn enqueue(&mut self, file: FileId, spec: FileSpec, position: Position) {
        self.queue.push(Entry {
            file,
            spec: Arc::new(spec),
            position,
            attempt: 0,
            check_attempt: 0,
            state: State::Ready {
                not_before: self.now.mono_ms,
            },
        });
    }

    /// Sends what is due, oldest first, within the window.
    fn dispatch(&mut self) {
        if !matches!(self.phase, Phase::Streaming | Phase::Scanning) {
            return;
        }
        let window = self.cfg.max_in_flight.max(1);
        let mut outstanding = self.outstanding();
        let now = self.now.mono_ms;
        let mut cmds = Vec::new();
        for e in self.queue.iter_mut() {
            if outstanding >= window {
                break;
            }
            match e.state {
                State::Ready { not_before } if not_before <= now => {
                    e.state = State::InFlight;
                    e.attempt += 1;
                    cmds.push(Command::Upload {
                        file: e.file,
                        spec: Arc::clone(&e.spec),
                        attempt: e.attempt,
                    });
                    outstanding += 1;
                }
                State::NeedsCheck { not_before } if not_before <= now => {
                    e.state = State::Checking;
                    cmds.push(Command::CheckUpload {
                        file: e.file,
                        spec: Arc::clone(&e.spec),
                    });
                    outstanding += 1;
                }
                _ => {}
            }
        }
        self.out.extend(cmds);
    }

    fn on_upload_done(&mut self, file: FileId, result: UploadResult) {
        let now = self.now.mono_ms;
        if self.orphans.remove(&file) {
            return; // Its slot in the window is free again; the file itself was replaced.
        }
        let Some(e) = self.queue.get_mut(file) else {
            return;
        };
        if e.state != State::InFlight {
            return; // A duplicate or late completion changes nothing.
        }
        match result {
            UploadResult::Stored => e.state = State::Stored,
            UploadResult::AlreadyExists | UploadResult::Unknown(_) => {
                e.state = State::NeedsCheck { not_before: now };
            }
            UploadResult::Transient(err) | UploadResult::Permanent(err) => {
                let attempt = e.attempt;
                let delay = self.backoff.delay(attempt);
                if let Some(e) = self.queue.get_mut(file) {
                    e.state = State::Ready {
                        not_before: now + delay,
                    };
                }
                self.emit(Event::UploadRetry {
                    file,
                    attempt,
                    delay_ms: delay,
                    error: err,
                });
            }
            UploadResult::SourceChanged(_) => {
                let min = file.min_txid;
                for dropped in self.queue.drain_from(min) {
                    if dropped.file != file
                        && matches!(dropped.state, State::InFlight | State::Checking)
                    {
                        self.orphans.insert(dropped.file);
                    }
                    self.out.push_back(Command::Forget { file: dropped.file });
                }
                self.follow.forget_generation();
                self.follow.clear_batch();
                self.need_snapshot = Some((SnapshotReason::SourceChanged, min));
                self.start_read();
            }
        }
        self.advance_durable();
    }

    fn on_check_done(&mut self, file: FileId, result: CheckResult) {
        let now = self.now.mono_ms;
        if self.orphans.remove(&file) {
            return;
        }
        let Some(e) = self.queue.get_mut(file) else {
            return;
        };
        if e.state != State::Checking {
            return;
        }
        match result {
            CheckResult::Matches => e.state = State::Stored,
            CheckResult::Absent => {
                let attempt = e.attempt;
                let delay = self.backoff.delay(attempt);
                if let Some(e) = self.queue.get_mut(file) {
                    e.state = State::Ready {
                        not_before: now + delay,
                    };
                }
            }
            CheckResult::Failed(err) => {
                e.check_attempt += 1;
                let attempt = e.check_attempt;
                let delay = self.backoff.delay(attempt);
                if let Some(e) = self.queue.get_mut(file) {
                    e.state = State::NeedsCheck {
                        not_before: now + delay,
                    };
                }
                self.emit(Event::UploadRetry {
                    file,
                    attempt,
                    delay_ms: delay,
                    error: err,
                });
            }
            CheckResult::Differs => {
                self.halt(format!(
                    "another writer stored different contents under {file}: this database has two \
                     replicators writing one chain. Stop the other one (or use a different replica URL), \
                     then restart walvault"
                ));
                return;
            }
        }
        self.advance_durable();
    }

    fn advance_durable(&mut self) {
        let done = self.queue.pop_durable();
        let Some(last) = done.last() else { return };
        self.durable = last.position;
        for e in &done {
            self.out.push_back(Command::Forget { file: e.file });
        }
        self.out.push_back(Command::Persist(self.durable));
        self.emit(Event::Durable {
            txid: self.durable.txid,
        });
        // A slot opened: cut what accumulated meanwhile (after a fresh read).
        if (!self.follow.batch.is_empty() || self.need_snapshot.is_some())
            && self.phase == Phase::Streaming
        {
            if self.final_read_done {
                // Shutting down: cut what the final read left behind, read nothing new.
                if self.reading.is_none() {
                    self.on_read_end();
                }
            } else {
                self.start_read();
            }
        } else {
            // Everything read is durable: the moment a checkpoint is safe.
            self.maybe_checkpoint();
            self.maybe_run_checkpoint();
        }
    }

    /// Starts a checkpoint when the WAL is long enough and everything read is durable.
    fn maybe_checkpoint(&mut self) {
        if self.shutdown
            || self.phase != Phase::Streaming
            || self.reading.is_some()
            || self.ckpt != Ckpt::Idle
            || self.now.mono_ms < self.ckpt_not_before
            || !self.queue.is_empty()
            || !self.follow.batch.is_empty()
            || self.need_snapshot.is_some()
        {
            return;
        }
        let Some(g) = self.follow.generation.as_ref() else {
            return;
        };
        let end = g.scanner.committed_offset();
        let frames = end.saturating_sub(WAL_HEADER_SIZE) / g.header.frame_size();
        let mode = if end >= self.cfg.truncate_bytes {
            CheckpointMode::Truncate
        } else if frames >= self.cfg.checkpoint_frames {
            CheckpointMode::Passive
        } else {
            return;
        };
        self.ckpt = Ckpt::Locking(mode);
        self.out.push_back(Command::LockWriters);
    }

    fn on_writers_locked(&mut self, ok: bool) {
        let Ckpt::Locking(mode) = self.ckpt else {
            if ok {
                // Not expecting it (shutdown meanwhile): let writers go at once.
                self.out.push_back(Command::UnlockWriters);
            }
            return;
        };
        if !ok || self.shutdown {
            if ok {
                self.out.push_back(Command::UnlockWriters);
            }
            self.ckpt = Ckpt::Idle;
            self.ckpt_not_before = self.now.mono_ms + 10 * self.cfg.sync_interval_ms;
            self.emit(Event::CheckpointDone {
                mode,
                busy: true,
                shipped_frames: 0,
                log_frames: -1,
                restart_expected: false,
            });
            return;
        }
        self.ckpt = Ckpt::Locked {
            mode,
            deadline: self.now.mono_ms + self.cfg.checkpoint_lock_ms,
        };
        // Writers are blocked: whatever the WAL holds now is all there is. Read it.
        let off = self.follow.next_offset();
        self.read_at(off);
    }

    /// With writers blocked and every frame read and durable, run the checkpoint.
    fn maybe_run_checkpoint(&mut self) {
        let Ckpt::Locked { mode, .. } = self.ckpt else {
            return;
        };
        if self.reading.is_some()
            || !self.queue.is_empty()
            || !self.follow.batch.is_empty()
            || self.need_snapshot.is_some()
        {
            return;
        }
        let Some(g) = self.follow.generation.as_ref() else {
            self.abandon_checkpoint();
            return;
        };
        let frames =
            g.scanner.committed_offset().saturating_sub(WAL_HEADER_SIZE) / g.header.frame_size();
        self.ckpt = Ckpt::Running {
            mode,
            frames,
            header: g.header,
        };
        self.out.push_back(Command::Checkpoint { mode });
    }

    fn abandon_checkpoint(&mut self) {
        if matches!(self.ckpt, Ckpt::Locked { .. }) {
            self.out.push_back(Command::UnlockWriters);
        }
        self.ckpt = Ckpt::Idle;
        self.ckpt_not_before = self.now.mono_ms + 10 * self.cfg.sync_interval_ms;
    }

    fn on_checkpoint_done(
        &mut self,
        mode: CheckpointMode,
        result: Result<CheckpointResult, String>,
    ) {
        let Ckpt::Running {
            mode: want,
            frames,
            header,
        } = self.ckpt
        else {
            return;
        };
        if want != mode {
            return;
        }
        self.ckpt = Ckpt::Idle;
        match result {
            Ok(r) => {
                let complete =
                    !r.busy && r.log_frames >= 0 && r.log_frames == r.checkpointed_frames;
                match mode {
                    CheckpointMode::Passive => {
                        self.restart_expected = (complete
                            && u64::try_from(r.log_frames).ok() == Some(frames))
                        .then_some(header);
                    }
                    CheckpointMode::Truncate if !r.busy => {
                        // Frames written between letting writers go and the truncation
                        // were folded into the database unseen: only a full file is safe.
                        self.follow.forget_generation();
                        self.follow.clear_batch();
                        self.need_snapshot = Some((SnapshotReason::AfterTruncate, self.next_txid));
                    }
                    CheckpointMode::Truncate => {}
                }
                self.emit(Event::CheckpointDone {
                    mode,
                    busy: r.busy,
                    shipped_frames: frames,
                    log_frames: r.log_frames,
                    restart_expected: self.restart_expected.is_some(),
                });
            }
            Err(error) => self.emit(Event::CheckpointFailed { error }),
        }
        if self.restart_expected.is_none() && self.need_snapshot.is_none() {
            // Busy, partial or failed (a reader pins the WAL, say): trying again at once
            // would only add a `_walvault_seq` transaction per attempt. Wait a while.
            self.ckpt_not_before = self.now.mono_ms + 10 * self.cfg.sync_interval_ms;
        }
        self.start_read();
    }

    fn maybe_stopped(&mut self) {
        if self.shutdown
            && self.phase == Phase::Streaming
            && self.final_read_done
            && self.reading.is_none()
            && self.ckpt == Ckpt::Idle
            && self.queue.is_empty()
            && self.need_snapshot.is_none()
            && self.follow.batch.is_empty()
        {
            if self.stop_snapshot == Some(false) {
                self.stop_snapshot = Some(true);
                if self.cut_snapshot_level() {
                    self.dispatch();
                    return;
                }
            }
            self.phase = Phase::Stopped;
            self.out.push_back(Command::Stopped);
        }
    }

    /// A level-9 snapshot (TXIDs 1..=durable) of the state everything durable reaches.
    /// Only valid when nothing is pending, so the page index is exactly that state.
    fn cut_snapshot_level(&mut self) -> bool {
        let txid = self.durable.txid;
        let g = self.follow.generation.as_ref();
        let end = g.map_or(0, |g| g.scanner.committed_offset());
        if txid == 0 || self.shipped_commit == 0 || end != self.durable.wal_end {
            return false;
        }
        let commit = self.shipped_commit;
        let overlay: Vec<(u32, u64)> = g
            .map(|g| g.index.range(1..=commit).map(|(&p, &o)| (p, o)).collect())
            .unwrap_or_default();
        let mut header = self.base_header(commit, 1, txid);
        if let Some(g) = g
            && end >= WAL_HEADER_SIZE
        {
            header.wal_offset = WAL_HEADER_SIZE;
            header.wal_size = end - WAL_HEADER_SIZE;
            header.wal_salt1 = g.header.salt1;
            header.wal_salt2 = g.header.salt2;
        }
        let spec = FileSpec {
            header,
            pages: PageSet::Full { overlay },
            prev_commit: None,
        };
        let file = FileId {
            level: crate::keys::SNAPSHOT_LEVEL,
            min_txid: 1,
            max_txid: txid,
        };
        self.emit(Event::FileCut {
            file,
            pages: spec.page_count(),
            txns: 0,
        });
        let position = self.durable;
        self.enqueue(file, spec, position);
        true
    }

    fn halt(&mut self, reason: String) {
        self.phase = Phase::Halted;
        self.out.push_back(Command::Halt { reason });
    }

    fn emit(&mut self, e: Event) {
        self.out.push_back(Command::Event(e));
    }
}
