//! Deliberately broken behaviours, switched on per run, that the invariants must catch.
//! The engine may not be edited for them, so each one breaks the simulated shell's
//! side of the contract (what production's replicate_task.rs/database.rs do) in a way
//! that reproduces a known class of replicator bug. `tests/mutations.rs` shows each
//! is caught, and by which invariant, within a stated number of seeds.

use serde::{Deserialize, Serialize};

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
    /// Answers a duplicate completion by sending the upload again.
    DuplicateResend,
    /// Sends every PUT twice (SDK retries behind the engine's back).
    DoublePut,
    /// A failed upload's completion is never delivered (a hung request, no timeout).
    LostCompletion,
    /// The shell panics on its 50th command.
    PanicInShell,
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
        Mutation::DuplicateResend,
        Mutation::DoublePut,
        Mutation::LostCompletion,
        Mutation::PanicInShell,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutation::AckBeforeStore => "ack-before-store",
            Mutation::DropFailedUpload => "drop-failed-upload",
            Mutation::CheckpointOnLock => "checkpoint-on-lock",
            Mutation::SkipSaltCheck => "skip-salt-check",
            Mutation::PersistAhead => "persist-ahead",
            Mutation::TipSkipsTxid => "tip-skips-txid",
            Mutation::StalePageRead => "stale-page-read",
            Mutation::DuplicateResend => "duplicate-resend",
            Mutation::DoublePut => "double-put",
            Mutation::LostCompletion => "lost-completion",
            Mutation::PanicInShell => "panic-in-shell",
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
