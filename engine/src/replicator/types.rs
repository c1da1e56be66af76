//! The replicator's vocabulary: configuration, the inputs the caller feeds in, the
//! commands it carries out, and the events it reports.

use std::sync::Arc;

use crate::backoff::BackoffConfig;
use crate::keys::FileId;
use crate::ltx::Header;
use crate::spec::FileSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How often committed transactions are cut into a level-0 file.
    pub sync_interval_ms: u64,
    /// Uploads in flight at once (the window); files become durable strictly in order.
    /// Above 1 they may also *land* out of order (decision 25).
    pub max_in_flight: usize,
    pub backoff: BackoffConfig,
    /// Request a PASSIVE checkpoint once this many committed frames sit in the WAL and
    /// all of them are durable.
    pub checkpoint_frames: u64,
    /// Longest time writers stay blocked while the WAL tail is shipped before a
    /// checkpoint; past it the checkpoint is abandoned and retried later.
    pub checkpoint_lock_ms: u64,
    /// Past this WAL size (bytes) the checkpoint is TRUNCATE, the safety brake against
    /// a WAL that readers keep from restarting.
    pub truncate_bytes: u64,
    /// Largest WAL read asked for at once.
    pub read_chunk_bytes: u64,
    /// Ship the batch once no commit has arrived for this long, without waiting for
    /// the tick (a stat of the WAL a quiet period after the last write the previous one
    /// reported, while a writer is active; at most once per half sync interval). 0, or
    /// more than half the sync interval: only at ticks. `watch` passes 250 ms unless
    /// told otherwise; this default stays 0 so the engine's own tests see ticks only
    /// unless they ask.
    pub quiet_ship_ms: u64,
    /// Seeds the retry jitter.
    pub seed: u64,
    pub node_id: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync_interval_ms: 1_000,
            max_in_flight: 1,
            backoff: BackoffConfig::default(),
            checkpoint_frames: 1_000,
            checkpoint_lock_ms: 2_000,
            truncate_bytes: 256 * 1024 * 1024,
            read_chunk_bytes: 4 * 1024 * 1024,
            quiet_ship_ms: 0,
            seed: 0,
            node_id: 0,
        }
    }
}

/// Where replication stands: the last durable file and the WAL position it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub txid: u64,
    pub salt1: u32,
    pub salt2: u32,
    /// Offset just past the last WAL frame the durable chain covers (0: no WAL).
    pub wal_end: u64,
    pub commit: u32,
}

/// What the caller found in the store at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteTip {
    /// Highest TXID of any file of this database (0: none). New files go above it.
    pub max_txid: u64,
    /// Highest TXID a restore reaches: through a snapshot and a contiguous chain
    /// (0: none). Below `max_txid` when the store has a hole (files after a lost one).
    pub chain_end: u64,
    /// Header of the file that ends at `chain_end` (the lowest level holding it).
    pub newest: Option<Header>,
}

impl RemoteTip {
    /// The tip of a store holding exactly these files (no hole: `chain_end == max_txid`).
    pub fn contiguous(max_txid: u64, newest: Option<Header>) -> RemoteTip {
        RemoteTip {
            max_txid,
            chain_end: max_txid,
            newest,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    Passive,
    Truncate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointResult {
    /// SQLite reported SQLITE_BUSY (the checkpoint could not finish).
    pub busy: bool,
    /// Frames in the WAL when the checkpoint ran (`-1` when unknown).
    pub log_frames: i64,
    /// Frames copied back into the database (`-1` when unknown).
    pub checkpointed_frames: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadResult {
    Stored,
    /// `If-None-Match` failed: something already sits under the key.
    AlreadyExists,
    Transient(String),
    Permanent(String),
    /// The request may or may not have been carried out.
    Unknown(String),
    /// The file could not be built because its source changed underneath.
    SourceChanged(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// The object exists and is byte-for-byte the file we meant to upload.
    Matches,
    Absent,
    /// The object exists with other contents: another writer.
    Differs,
    Failed(String),
}

/// Everything the caller feeds in.
#[derive(Debug)]
pub enum Input<'a> {
    /// First input: what was persisted locally and what the store holds.
    Start {
        page_size: u32,
        local: Option<Position>,
        remote: RemoteTip,
        /// `Some` when the previous run of this database did not stop cleanly (the
        /// shell's run mark was left behind), with the [`Replicator::next_txid`] it
        /// recorded at its start (0: unknown). Its requests may still land ("zombie"
        /// writes), so the TXIDs it may have used are fenced off. `None`: it stopped
        /// cleanly, or there was none.
        unfinished_run: Option<u64>,
    },
    /// Answer to [`Command::ReadWal`]: the WAL header bytes (if the file has one), the
    /// WAL and database file lengths, and up to `max_len` bytes starting at `offset`.
    WalRead {
        header: Option<&'a [u8]>,
        file_len: u64,
        db_len: u64,
        offset: u64,
        data: &'a [u8],
    },
    /// Outcome of [`Command::Upload`]; `attempt` echoes the command's, so a late or
    /// duplicated outcome of an earlier attempt is told apart from the current one.
    UploadDone {
        file: FileId,
        attempt: u32,
        result: UploadResult,
    },
    /// Outcome of [`Command::CheckUpload`], echoing its `attempt`.
    CheckDone {
        file: FileId,
        attempt: u32,
        result: CheckResult,
    },
    /// Answer to [`Command::StatWal`]: the WAL file's length (0 if there is none), a
    /// stamp that changes when the file is written (its modification time in ns), and
    /// how long ago it was last written (now minus the modification time; 0 when
    /// unknown, which only delays a cut).
    WalStat { len: u64, stamp: u64, idle_ms: u64 },
    /// Answer to [`Command::LockWriters`]: `false` when writers could not be blocked.
    WritersLocked { ok: bool },
    CheckpointDone {
        mode: CheckpointMode,
        result: Result<CheckpointResult, String>,
    },
    /// Ship what is committed, finish uploads, then report [`Command::Stopped`]. With
    /// `snapshot`, first write a level-9 snapshot of the final state.
    Shutdown { snapshot: bool },
    /// The caller let go of its read lock while the engine was
    /// [quiescent](Replicator::is_quiescent) (an idle database's connection closed to
    /// save memory), and takes it again before answering a read that shows any change.
    /// Until then the application may checkpoint and restart the WAL unseen, so no
    /// restart is taken for the one our own checkpoint prepared: a changed WAL
    /// generation is answered with a whole-database file (which the caller builds as
    /// the pages that changed when it knows the checksums of the shipped state,
    /// [`crate::spec::materialize_against`]).
    ReadLockReleased,
}

/// Everything the engine asks the caller to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    ReadWal {
        offset: u64,
        max_len: u64,
    },
    /// Answer with [`Input::WalStat`]: a look between ticks that reads nothing (no read
    /// lock needed either). A stale or coarse answer only changes when a batch is cut,
    /// never what it holds: only reads feed files.
    StatWal,
    /// Build (first attempt) and upload this file with `If-None-Match: *`. Retries carry
    /// the same spec; a caller may reuse what it built the first time.
    Upload {
        file: FileId,
        spec: Arc<FileSpec>,
        attempt: u32,
    },
    /// An upload's outcome is unknown or its key was taken: does the store hold our file?
    CheckUpload {
        file: FileId,
        spec: Arc<FileSpec>,
        attempt: u32,
    },
    /// The caller may drop anything it kept for this file.
    Forget {
        file: FileId,
    },
    /// Block the application's writers (release the read transaction, then BEGIN
    /// IMMEDIATE) and answer with [`Input::WritersLocked`]. While they are blocked the
    /// engine ships the WAL's tail, so a checkpoint never folds away an unshipped frame.
    LockWriters,
    /// Let writers go again without checkpointing (took too long), and take the read
    /// transaction again.
    UnlockWriters,
    /// With writers blocked and every WAL frame durable: checkpoint from a second
    /// connection, let writers go, take the read transaction again, then answer with
    /// [`Input::CheckpointDone`].
    Checkpoint {
        mode: CheckpointMode,
    },
    /// Persist this position atomically before relying on it.
    Persist(Position),
    Event(Event),
    /// Shutdown finished: nothing committed is left unshipped.
    Stopped,
    /// Replication of this database cannot continue; the reason says why and what to do.
    Halt {
        reason: String,
    },
}

/// Things worth a log line, a metric or a webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    SnapshotStarted {
        txid: u64,
        reason: SnapshotReason,
        pages: u32,
    },
    FileCut {
        file: FileId,
        pages: u64,
        txns: u64,
    },
    Durable {
        txid: u64,
    },
    UploadRetry {
        file: FileId,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    Resumed {
        txid: u64,
        wal_end: u64,
    },
    RemoteBehind {
        local_txid: u64,
        remote_txid: u64,
    },
    /// The previous run did not stop cleanly (or is unknown): TXIDs after `known` up
    /// to `next` are skipped, so none a late write of that run may hold is reused.
    TxidsFenced {
        known: u64,
        next: u64,
    },
    /// `restart_expected`: the checkpoint folded exactly the frames the engine shipped,
    /// so the WAL restart that follows continues the chain.
    CheckpointDone {
        mode: CheckpointMode,
        busy: bool,
        shipped_frames: u64,
        log_frames: i64,
        restart_expected: bool,
    },
    /// The writer went quiet for `quiet_ms`: `txns` transactions are cut into a file
    /// before the tick.
    ShippedWhenQuiet {
        quiet_ms: u64,
        txns: u64,
    },
    /// The WAL generation changed; `continues` when it was our own checkpoint's restart.
    WalChanged {
        change: crate::wal::WalChange,
        continues: bool,
    },
    CheckpointFailed {
        error: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotReason {
    /// Nothing in the store yet.
    Initial,
    /// The store's chain does not line up with this WAL (restart after downtime, a
    /// restore to an older point, another writer's chain).
    NoResumePoint,
    /// The WAL was restarted or truncated by someone else.
    WalReset,
    /// After the engine's own TRUNCATE checkpoint (frames could slip in before it).
    AfterTruncate,
    /// A file's source changed while it was being built.
    SourceChanged,
}
