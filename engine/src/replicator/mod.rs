//! The replication state machine: committed WAL transactions in, LTX uploads,
//! checkpoints and persisted positions out. Sans-IO in the quinn-proto style:
//! [`Replicator::handle`] takes inputs, [`Replicator::poll_command`] yields commands,
//! [`Replicator::poll_timeout`] names the next deadline. Time and randomness come from
//! the caller; the same machine runs in production and in the simulator.

mod checkpoint;
mod cutting;
mod follow;
mod mutation;
mod queue;
mod quiet;
mod reading;
mod types;
mod uploads;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

#[cfg(feature = "mutations")]
pub use mutation::Mutation;
pub use queue::{State as UploadState, WindowEntry};
pub use types::*;

use crate::backoff::Backoff;
use crate::keys::FileId;
use crate::ltx::{self, FLAG_NO_CHECKSUM, Header};
use crate::spec::{FileSpec, PageSet, PageSource};
use crate::time::Now;
use crate::wal::{WAL_HEADER_SIZE, WalChange, WalHeader};
use follow::{Broken, Follower, ReadOutcome};
use mutation::Mutation as M;
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
    /// First TXID of the next file: one past the last file cut (or the chain end at
    /// start). Below `next_txid` only after a fence or a dropped cut, so that one file
    /// spans the skipped TXIDs and the chain stays contiguous.
    chain_next: u64,
    durable: Position,
    /// Database size after the last file cut.
    shipped_commit: u32,
    db_len: u64,
    next_tick: Option<u64>,
    /// Looks between ticks and cuts when the writer goes quiet (quiet.rs).
    quiet: quiet::QuietShip,
    /// Offset and length of the outstanding WAL read.
    reading: Option<(u64, u64)>,
    /// Length of the next read while a chain of short reads keeps coming back full.
    read_grow: Option<u64>,
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
    /// A deliberately broken decision (mutation.rs); `None` unless a test sets one.
    #[cfg(feature = "mutations")]
    mutation: Option<mutation::Mutation>,
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
            chain_next: 1,
            durable: Position::default(),
            shipped_commit: 0,
            db_len: 0,
            next_tick: None,
            quiet: quiet::QuietShip::default(),
            reading: None,
            read_grow: None,
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
            #[cfg(feature = "mutations")]
            mutation: None,
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

    /// The upload window file by file (state and attempt numbers), and the files
    /// dropped while in flight whose answer is still awaited. For checks that an input
    /// changed nothing; decisions never need it.
    pub fn window(&self) -> (Vec<WindowEntry>, Vec<FileId>) {
        (self.queue.view(), self.orphans.iter().copied().collect())
    }

    /// Committed transactions read but not yet cut into a file.
    pub fn unshipped_txns(&self) -> u64 {
        self.follow.batch.txns
    }

    /// Nothing is in progress: every committed transaction read is durable, and no
    /// read, checkpoint (running or due, even if put off), snapshot or shutdown is
    /// pending. Only then may the caller let go of its read lock
    /// ([`Input::ReadLockReleased`]).
    pub fn is_quiescent(&self) -> bool {
        self.phase == Phase::Streaming
            && !self.shutdown
            && self.reading.is_none()
            && self.ckpt == Ckpt::Idle
            && self.queue.is_empty()
            && self.orphans.is_empty()
            && self.need_snapshot.is_none()
            && self.follow.batch.is_empty()
            && self.checkpoint_due().is_none()
    }

    /// Gives back spare capacity of queues that have emptied: what an idle database
    /// keeps for as long as it stays idle.
    pub fn shrink_to_fit(&mut self) {
        self.queue.shrink_to_fit();
        self.out.shrink_to_fit();
        if self.orphans.is_empty() {
            self.orphans = std::collections::BTreeSet::new();
        }
        if self.follow.batch.pages.is_empty() {
            self.follow.batch.pages = std::collections::BTreeMap::new();
        }
    }

    /// Committed frames in the WAL's current generation, as far as read.
    pub fn wal_frames(&self) -> u64 {
        self.follow.generation.as_ref().map_or(0, |g| {
            g.scanner.committed_offset().saturating_sub(WAL_HEADER_SIZE) / g.header.frame_size()
        })
    }

    /// The `(offset, max_len)` of the WAL read the next tick asks for.
    pub fn next_read(&self) -> (u64, u64) {
        let offset = self.follow.next_offset();
        (offset, self.read_len(offset))
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
        [
            self.next_tick,
            self.quiet.next_look,
            queue_deadline,
            lock_deadline,
        ]
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
            // A tick's read always ships what it finds (also a look's chain in flight).
            self.quiet.looking = false;
            self.quiet.quiet_len = None;
            if self.phase == Phase::Streaming && !self.shutdown {
                self.start_read();
            }
        } else if self.quiet.next_look.is_some_and(|t| t <= now.mono_ms) {
            self.look();
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
                unfinished_run,
            } => self.on_start(page_size, local, remote, unfinished_run),
            Input::WalRead {
                header,
                file_len,
                db_len,
                offset,
                data,
            } => self.on_wal_read(header, file_len, db_len, offset, data),
            Input::UploadDone {
                file,
                attempt,
                result,
            } => self.on_upload_done(file, attempt, result),
            Input::CheckDone {
                file,
                attempt,
                result,
            } => self.on_check_done(file, attempt, result),
            Input::WalStat {
                len,
                stamp,
                idle_ms,
            } => self.on_wal_stat(len, stamp, idle_ms),
            Input::WritersLocked { ok } => self.on_writers_locked(ok),
            Input::CheckpointDone { mode, result } => self.on_checkpoint_done(mode, result),
            Input::ReadLockReleased => {
                // Without our read mark the WAL can restart any number of times, and
                // growth of the old generation goes unseen: the restart our checkpoint
                // prepared proves nothing any more.
                self.restart_expected = None;
            }
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

    fn on_start(
        &mut self,
        page_size: u32,
        local: Option<Position>,
        remote: RemoteTip,
        unfinished_run: Option<u64>,
    ) {
        if self.phase != Phase::Idle {
            return;
        }
        if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
            self.halt(format!("database page size {page_size} is not valid"));
            return;
        }
        self.page_size = page_size;
        // New files go above every TXID that may be in use: the listing's, the one this
        // machine saw acknowledged (a lagging LIST can hide it), and after a run that did
        // not stop cleanly its start plus a fence for the files it may still have had in
        // flight (a run never has more than the queue's length past its durable TXID).
        let local_txid = local.map_or(0, |l| l.txid);
        let mut known = remote
            .max_txid
            .max(local_txid)
            .max(unfinished_run.unwrap_or(0));
        // Without a local position a non-empty store was written by a run this
        // machine knows nothing about (a wiped state directory, another host).
        let unknown_writer = local.is_none() && remote.max_txid > 0;
        let mut fence = if unfinished_run.is_none() && !unknown_writer {
            0
        } else {
            fence_width(self.cfg.seed, self.cfg.max_in_flight)
        };
        if self.mutated(M::ReuseTxids) {
            // Mutation: trust the local position alone, no fence.
            (known, fence) = (local_txid, 0);
        }
        self.next_txid = known.saturating_add(fence).saturating_add(1);
        if fence > 0 {
            self.emit(Event::TxidsFenced {
                known,
                next: self.next_txid,
            });
        }
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
                if !has_hole
                    && l.txid == remote.max_txid
                    && l.txid == known
                    && l.txid > 0
                    && l.wal_end > 0 =>
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
        if self.resume.is_some() && remote.max_txid < known {
            self.resume = None; // The listing lags what was acknowledged: full file.
        }
        self.chain_next = self.durable.txid + 1;
        self.follow.resume_at = self.resume.as_ref().map(|r| r.wal_end);
        self.phase = Phase::Scanning;
        self.next_tick = Some(self.now.mono_ms + self.cfg.sync_interval_ms);
        self.read_at(0);
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

    fn halt(&mut self, reason: String) {
        self.phase = Phase::Halted;
        self.out.push_back(Command::Halt { reason });
    }

    fn emit(&mut self, e: Event) {
        self.out.push_back(Command::Event(e));
    }
}

/// TXIDs skipped after a run that did not stop cleanly: far more than a run can have
/// sent past its durable TXID (its queue holds at most 4 windows, a checkpoint's tail
/// a few more), plus a per-run random part so that two runs that both crash before
/// their first file lands never pick the same key for it.
fn fence_width(seed: u64, window: usize) -> u64 {
    let fence_min = (window as u64).saturating_mul(16).max(1024);
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    fence_min.saturating_add(z % fence_min)
}
