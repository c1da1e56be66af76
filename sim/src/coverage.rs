//! Coverage counters: how often each rare situation was reached. A sweep that never
//! reaches "crash between ack and persist" proves nothing about it, so the sweep
//! summary lists every counter and BATTLE_TESTING.md requires each rare one above zero.

use std::collections::BTreeMap;

macro_rules! counters {
    ($($variant:ident => $name:literal, $rare:literal;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Cov { $($variant),* }

        impl Cov {
            pub const ALL: &'static [Cov] = &[$(Cov::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(Cov::$variant => $name),* }
            }

            /// Rare events: a sweep must reach each of them at least once.
            pub fn rare(self) -> bool {
                match self { $(Cov::$variant => $rare),* }
            }

            pub fn from_name(s: &str) -> Option<Cov> {
                match s { $($name => Some(Cov::$variant),)* _ => None }
            }
        }
    };
}

counters! {
    AmbiguousPutThenRetry => "ambiguous put then retry", true;
    AmbiguousPutResolvedStored => "ambiguous put resolved as stored", true;
    AlreadyExistsThenMatch => "412 then check matches", true;
    CheckAbsent => "check found nothing (re-upload)", true;
    CheckFailed => "check read failed", true;
    PutTransient => "put transient error", false;
    PutPermanent => "put permanent error (403)", true;
    PutLostResponse => "put response lost (timeout)", true;
    PutLateWrite => "put landed after the client gave up", true;
    PutDuplicateDelivery => "put delivered twice to the store", true;
    Throttled => "throttled (503 SlowDown burst)", true;
    TornAppend => "torn append ignored (the application died mid-write)", true;
    Outage => "request during a store outage (503)", true;
    Stall => "stalled response", true;
    OutOfOrderCompletion => "completions out of order", true;
    DuplicateCompletion => "duplicate completion delivered", true;
    LateCompletion => "late completion of an older attempt", true;
    ZombieWrite => "write of a killed process landed later", true;
    TxidsFenced => "restart after an unclean stop (TXIDs fenced)", true;
    GetStale => "stale GET (404 on a written key)", true;
    GetTruncated => "truncated GET detected", true;
    ListLagged => "LIST missing recent files", true;
    StaleTip => "restart from a stale LIST tip", false;
    CheckpointDuringUpload => "checkpoint during upload", true;
    EngineCheckpointPassive => "engine checkpoint (passive)", true;
    EngineCheckpointTruncate => "engine checkpoint (truncate)", true;
    CheckpointRestartContinued => "WAL restart after our checkpoint continued", true;
    LockWritersBusy => "lock writers busy", true;
    CheckpointAbandoned => "checkpoint abandoned (unlock writers)", true;
    ReadLockLost => "read lock not re-acquired after checkpoint", false;
    IdleReleased => "idle database released (connection closed)", true;
    IdleWoke => "released database woke on a change", true;
    IdleWokeToSnapshot => "wake found the WAL restarted (whole-database file)", true;
    IdlePinned => "that wake pinned the database (keeps it open)", true;
    DiffedWholeFile => "whole-database file built as the pages that changed", true;
    ShippedWhenQuiet => "batch shipped when the writer went quiet", true;
    StatFuture => "WAL stat: modified in the future (clock step)", true;
    StatMissedWrite => "WAL stat: a coarse mtime hid a write", true;
    AttachBusy => "taking the lock again was busy (retried)", true;
    AppCheckpointPassive => "app checkpoint PASSIVE", true;
    AppCheckpointFull => "app checkpoint FULL", true;
    AppCheckpointRestart => "app checkpoint RESTART", true;
    AppCheckpointTruncate => "app checkpoint TRUNCATE", true;
    AppCheckpointBusy => "app checkpoint busy", false;
    WalResetWhileDown => "WAL reset while the replicator was down", true;
    WalResetDetected => "WAL reset detected (full snapshot)", true;
    WritesWhileDown => "writes while the replicator was down", true;
    LongTxnSpill => "uncommitted frames in the WAL", true;
    TornWalRead => "torn WAL read (mid-append)", true;
    Interleaved => "app operation between replicator steps", true;
    InterleavedInCheckpoint => "app operation inside a checkpoint", true;
    Vacuum => "VACUUM", true;
    LargeAlloc => "large allocation", true;
    DbShrank => "database shrank", true;
    CrashBetweenAckAndPersist => "crash between ack and persist", true;
    CrashWithUploadInFlight => "crash with an upload in flight", true;
    CrashDuringCheckpoint => "crash inside a checkpoint", true;
    CrashWhileWritersLocked => "crash while writers locked", true;
    CrashInDrain => "crash inside a command drain", true;
    CleanStop => "clean stop", true;
    CleanStopSnapshot => "clean stop with level-9 snapshot", true;
    Resumed => "restart resumed the chain", true;
    SnapshotNoResume => "restart without a resume point (full file)", true;
    SourceChanged => "staging failed (source changed, full file)", true;
    PersistFsyncLie => "position fsync lied", true;
    PersistTorn => "position write torn", true;
    PersistFailed => "position write failed (exit)", true;
    PositionLost => "restart without a usable local position", true;
    StartupFailed => "startup failed (retried)", true;
    RemoteBehind => "store behind the local position (reported)", false;
    LossyLoss => "store lost an acknowledged write", false;
    OrphanFile => "orphan file (cut dropped)", false;
    WindowFull => "upload window full", true;
    ByteCompare => "byte-for-byte restore comparison", true;
    IntegrityCheck => "integrity_check of a restore", true;
    RestoreCheck => "restore checks", true;
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub counts: BTreeMap<Cov, u64>,
}

impl Coverage {
    pub fn hit(&mut self, c: Cov) {
        *self.counts.entry(c).or_insert(0) += 1;
    }

    pub fn add(&mut self, c: Cov, n: u64) {
        if n > 0 {
            *self.counts.entry(c).or_insert(0) += n;
        }
    }

    pub fn get(&self, c: Cov) -> u64 {
        self.counts.get(&c).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Coverage) {
        for (k, v) in &other.counts {
            *self.counts.entry(*k).or_insert(0) += v;
        }
    }

    /// Counters as (name, count) for JSON.
    pub fn to_named(&self) -> BTreeMap<String, u64> {
        self.counts
            .iter()
            .map(|(k, v)| (k.name().to_string(), *v))
            .collect()
    }

    pub fn from_named(m: &BTreeMap<String, u64>) -> Coverage {
        let mut c = Coverage::default();
        for (k, v) in m {
            if let Some(cov) = Cov::from_name(k) {
                c.counts.insert(cov, *v);
            }
        }
        c
    }
}
