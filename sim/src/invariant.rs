//! The invariants, named as in the failure catalog (shared/reference/failure-catalog.md),
//! and the violation a run reports when one breaks.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Inv {
    /// 1. Every commit at or below the reported durable position survives any crash
    ///    and restores exactly (also: the persisted position never runs ahead of the
    ///    store, and data loss is never reported where there was none).
    Durability,
    /// 2. Every TXID in the store restores to exactly the source database at the WAL
    ///    position its file claims.
    Restore,
    /// 3. TXIDs are contiguous: none skipped, none reused with other contents.
    Chain,
    /// 4. No checkpoint folds WAL frames that are not durable remotely.
    Checkpoint,
    /// 5. A duplicate or late completion changes nothing.
    Duplicate,
    /// 6. Uploads in flight and files queued stay under their bounds; no storms.
    Bounds,
    /// 7. No panic on any input sequence.
    Panic,
    /// 8. Once faults stop, lag returns to zero within a bound, the WAL stops growing,
    ///    and replication never halts without cause.
    Liveness,
    /// Lossy profile: lost acknowledged writes must be detected and reported.
    Detection,
    /// The harness itself failed (an unexpected SQLite error, a broken oracle).
    Harness,
}

impl Inv {
    pub const ALL: &'static [Inv] = &[
        Inv::Durability,
        Inv::Restore,
        Inv::Chain,
        Inv::Checkpoint,
        Inv::Duplicate,
        Inv::Bounds,
        Inv::Panic,
        Inv::Liveness,
        Inv::Detection,
        Inv::Harness,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Inv::Durability => "I1-durability",
            Inv::Restore => "I2-restore-exact",
            Inv::Chain => "I3-txid-chain",
            Inv::Checkpoint => "I4-checkpoint-safety",
            Inv::Duplicate => "I5-duplicate-completion",
            Inv::Bounds => "I6-bounds",
            Inv::Panic => "I7-no-panic",
            Inv::Liveness => "I8-liveness",
            Inv::Detection => "lossy-detection",
            Inv::Harness => "harness",
        }
    }

    pub fn parse(s: &str) -> Option<Inv> {
        Inv::ALL.iter().copied().find(|i| i.name() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub inv: Inv,
    pub at_ms: u64,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {}ms: {}",
            self.inv.name(),
            self.at_ms,
            self.detail
        )
    }
}
