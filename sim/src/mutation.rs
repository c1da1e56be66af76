//! Deliberately broken behaviours, switched on per run, that the invariants must catch.
//! Two kinds, each reproducing a known class of replicator bug:
//!
//! - *shell* mutations break the simulated shell's side of the contract (what
//!   production's replicate_task/ and database.rs do);
//! - *engine* mutations (`engine-*`) break the real engine at its decision points
//!   (walvault-engine's `mutations` feature, `replicator/mutation.rs`), switched on
//!   with `Replicator::set_mutation` in every engine the run starts.
//!
//! `tests/mutations.rs` shows each is caught, and by which invariant, within a stated
//! number of seeds.

use serde::{Deserialize, Serialize};
use walvault_engine::replicator::Mutation as EngineMutation;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mutation {
    /// Reports `Stored` as soon as the PUT is sent, before the store has it (and even
    /// if the PUT then fails).
    AckBeforeStore,
    /// A failed upload is reported as stored: the next files go ahead over a hole.
    DropFailedUpload,
    /// Runs a checkpoint as soon as writers are to be locked, before the WAL tail is
    /// durable remotely.
    CheckpointOnLock,
    /// Skips the salt check: after the WAL changes generation, keeps presenting the
    /// old header, so frames of another generation are read as a continuation.
    SkipSaltCheck,
    /// Persists a position one TXID ahead of what is durable.
    PersistAhead,
    /// Starts after a TXID that is not in the store (skips one).
    TipSkipsTxid,
    /// Builds files from a stale page: the newest page of each file comes from the
    /// database file instead of its WAL frame.
    StalePageRead,
    /// Builds a whole-database file that continues a chain twice, the second time
    /// against the checksum table the first build left behind (as rebuilding a lost
    /// staged copy from the spec would): only page 1 and growth pages go in.
    DiffAgainstOwnState,
    /// Answers a duplicate completion by sending the upload again.
    DuplicateResend,
    /// Sends every PUT twice (SDK retries behind the engine's back).
    DoublePut,
    /// A failed upload's completion is never delivered (a hung request, no timeout).
    LostCompletion,
    /// The shell panics on its 50th command.
    PanicInShell,
    /// A WAL read made while the database's connection is released is taken as
    /// unchanged whatever it shows: the shell never takes the lock again to wake.
    ReleaseIgnoresChange,
    /// Engine: checkpoints before every frame it folds is durable remotely.
    EngineCheckpointBeforeDurable,
    /// Engine: no WAL salt check (a reset is continued, never answered with a full file).
    EngineSkipSaltCheck,
    /// Engine: a failed upload is forgotten as if stored instead of retried.
    EngineDropFailedUpload,
    /// Engine: durability advances past a file still missing (non-contiguous acks).
    EngineDurablePastHole,
    /// Engine: TXIDs after a restart follow the local position only (no fence, no tip).
    EngineReuseTxids,
    /// Engine: completions applied whatever attempt and state (no attempt numbers).
    EngineAcceptAnyCompletion,
    /// Engine: sends without regard to the window.
    EngineIgnoreWindow,
    /// Engine: a completion for a file no longer queued panics.
    EnginePanicOnUnknownCompletion,
    /// Engine: a failed upload is never retried.
    EngineNeverRetry,
    /// Engine: never asks for a checkpoint.
    EngineNeverCheckpoint,
    /// Engine: a failed upload or check is retried at once, without backoff.
    EngineRetryWithoutBackoff,
    /// Engine: the WAL page index keeps each page's first frame, not its newest.
    EngineStaleFrameIndex,
    /// Engine: a check that finds nothing takes the file as stored.
    EngineCheckAbsentAsStored,
    /// Engine: persists the newest file cut instead of the newest durable one.
    EnginePersistNewestCut,
    /// Engine: WAL frames accepted whatever their checksum.
    EngineSkipFrameChecksum,
    /// Engine: quiet spells ship without the half-interval spacing.
    EngineQuietShipUnspaced,
}

impl Mutation {
    pub const ALL: &'static [Mutation] = &[
        Mutation::AckBeforeStore,
        Mutation::DropFailedUpload,
        Mutation::CheckpointOnLock,
        Mutation::SkipSaltCheck,
        Mutation::PersistAhead,
        Mutation::TipSkipsTxid,
        Mutation::StalePageRead,
        Mutation::DiffAgainstOwnState,
        Mutation::DuplicateResend,
        Mutation::DoublePut,
        Mutation::LostCompletion,
        Mutation::PanicInShell,
        Mutation::ReleaseIgnoresChange,
        Mutation::EngineCheckpointBeforeDurable,
        Mutation::EngineSkipSaltCheck,
        Mutation::EngineDropFailedUpload,
        Mutation::EngineDurablePastHole,
        Mutation::EngineReuseTxids,
        Mutation::EngineAcceptAnyCompletion,
        Mutation::EngineIgnoreWindow,
        Mutation::EnginePanicOnUnknownCompletion,
        Mutation::EngineNeverRetry,
        Mutation::EngineNeverCheckpoint,
        Mutation::EngineRetryWithoutBackoff,
        Mutation::EngineStaleFrameIndex,
        Mutation::EngineCheckAbsentAsStored,
        Mutation::EnginePersistNewestCut,
        Mutation::EngineSkipFrameChecksum,
        Mutation::EngineQuietShipUnspaced,
    ];

    /// The engine's decision point this mutation breaks (`None`: a shell mutation).
    pub fn engine(self) -> Option<EngineMutation> {
        Some(match self {
            Mutation::EngineCheckpointBeforeDurable => EngineMutation::CheckpointBeforeDurable,
            Mutation::EngineSkipSaltCheck => EngineMutation::SkipSaltCheck,
            Mutation::EngineDropFailedUpload => EngineMutation::DropFailedUpload,
            Mutation::EngineDurablePastHole => EngineMutation::DurablePastHole,
            Mutation::EngineReuseTxids => EngineMutation::ReuseTxids,
            Mutation::EngineAcceptAnyCompletion => EngineMutation::AcceptAnyCompletion,
            Mutation::EngineIgnoreWindow => EngineMutation::IgnoreWindow,
            Mutation::EnginePanicOnUnknownCompletion => EngineMutation::PanicOnUnknownCompletion,
            Mutation::EngineNeverRetry => EngineMutation::NeverRetry,
            Mutation::EngineNeverCheckpoint => EngineMutation::NeverCheckpoint,
            Mutation::EngineRetryWithoutBackoff => EngineMutation::RetryWithoutBackoff,
            Mutation::EngineStaleFrameIndex => EngineMutation::StaleFrameIndex,
            Mutation::EngineCheckAbsentAsStored => EngineMutation::CheckAbsentAsStored,
            Mutation::EnginePersistNewestCut => EngineMutation::PersistNewestCut,
            Mutation::EngineSkipFrameChecksum => EngineMutation::SkipFrameChecksum,
            Mutation::EngineQuietShipUnspaced => EngineMutation::QuietShipUnspaced,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mutation::AckBeforeStore => "ack-before-store",
            Mutation::DropFailedUpload => "drop-failed-upload",
            Mutation::CheckpointOnLock => "checkpoint-on-lock",
            Mutation::SkipSaltCheck => "skip-salt-check",
            Mutation::PersistAhead => "persist-ahead",
            Mutation::TipSkipsTxid => "tip-skips-txid",
            Mutation::StalePageRead => "stale-page-read",
            Mutation::DiffAgainstOwnState => "diff-against-own-state",
            Mutation::DuplicateResend => "duplicate-resend",
            Mutation::DoublePut => "double-put",
            Mutation::LostCompletion => "lost-completion",
            Mutation::PanicInShell => "panic-in-shell",
            Mutation::ReleaseIgnoresChange => "release-ignores-change",
            Mutation::EngineCheckpointBeforeDurable => "engine-checkpoint-before-durable",
            Mutation::EngineSkipSaltCheck => "engine-skip-salt-check",
            Mutation::EngineDropFailedUpload => "engine-drop-failed-upload",
            Mutation::EngineDurablePastHole => "engine-durable-past-hole",
            Mutation::EngineReuseTxids => "engine-reuse-txids",
            Mutation::EngineAcceptAnyCompletion => "engine-accept-any-completion",
            Mutation::EngineIgnoreWindow => "engine-ignore-window",
            Mutation::EnginePanicOnUnknownCompletion => "engine-panic-on-unknown-completion",
            Mutation::EngineNeverRetry => "engine-never-retry",
            Mutation::EngineNeverCheckpoint => "engine-never-checkpoint",
            Mutation::EngineRetryWithoutBackoff => "engine-retry-without-backoff",
            Mutation::EngineStaleFrameIndex => "engine-stale-frame-index",
            Mutation::EngineCheckAbsentAsStored => "engine-check-absent-as-stored",
            Mutation::EnginePersistNewestCut => "engine-persist-newest-cut",
            Mutation::EngineSkipFrameChecksum => "engine-skip-frame-checksum",
            Mutation::EngineQuietShipUnspaced => "engine-quiet-ship-unspaced",
        }
    }

    pub fn parse(s: &str) -> Option<Mutation> {
        Mutation::ALL.iter().copied().find(|m| m.name() == s)
    }
}

impl std::fmt::Display for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
