//! Deliberately broken decisions of the engine, for the simulator's mutation tests.
//!
//! Each one breaks the engine at the decision point where a known class of replicator
//! bug would live. They exist in the code only with the `mutations` cargo feature
//! (walvault-sim enables it; the `walvault` binary never does), and even then nothing
//! changes until a caller switches one on for one engine with
//! [`Replicator::set_mutation`](super::Replicator::set_mutation): one build serves the
//! unmutated and every mutated run. Without the feature every check below is the
//! constant `false`. walvault-sim's `tests/mutations.rs` shows that each is caught, by
//! which invariant, within a stated number of seeds.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    /// Checkpoint as soon as the WAL is long enough, without waiting until every frame
    /// it folds is durable remotely (decision 6's condition dropped).
    CheckpointBeforeDurable,
    /// No WAL salt (generation) check: a WAL restarted by someone else is taken as the
    /// continuation of the one followed, and at start-up the resume point is trusted
    /// whatever generation the WAL is in now, so a reset is never answered with a full
    /// file.
    SkipSaltCheck,
    /// A failed upload (transient or permanent error) is forgotten as if it were stored
    /// instead of being retried.
    DropFailedUpload,
    /// Durability advances to the newest stored file even when files before it are
    /// still missing (acknowledgements taken out of order).
    DurablePastHole,
    /// On start, new TXIDs follow the local position only: the store's tip, the run
    /// mark and the fence after an unclean stop are ignored, so TXIDs are reused.
    ReuseTxids,
    /// A completion is applied whatever attempt it answers and whatever state its file
    /// is in (decision 18's attempt numbers ignored).
    AcceptAnyCompletion,
    /// Uploads and checks are sent without regard to the window (`max_in_flight`).
    IgnoreWindow,
    /// A completion for a file that is no longer queued hits an `expect`.
    PanicOnUnknownCompletion,
    /// A failed upload is never retried: it stays "in flight" for ever.
    NeverRetry,
    /// No checkpoint is ever requested: the WAL grows without bound.
    NeverCheckpoint,
    /// A failed upload or check is retried at once, without backoff.
    RetryWithoutBackoff,
    /// The page index of a WAL generation keeps the first frame of each page instead
    /// of the newest (full files and growth pages read a stale version).
    StaleFrameIndex,
    /// A check that finds nothing under the file's key takes the file as stored.
    CheckAbsentAsStored,
    /// The position persisted after an acknowledgement is the newest file cut, not the
    /// newest durable one.
    PersistNewestCut,
    /// WAL frames are accepted whatever their checksum: a commit frame the application
    /// only half wrote before dying is taken as a commit.
    SkipFrameChecksum,
    /// Shipping when the writer goes quiet ignores the half-interval spacing: a writer
    /// with short pauses costs a file (a PUT) per pause (decision 24's bound dropped).
    QuietShipUnspaced,
}

#[cfg(feature = "mutations")]
impl Mutation {
    pub const ALL: &'static [Mutation] = &[
        Mutation::CheckpointBeforeDurable,
        Mutation::SkipSaltCheck,
        Mutation::DropFailedUpload,
        Mutation::DurablePastHole,
        Mutation::ReuseTxids,
        Mutation::AcceptAnyCompletion,
        Mutation::IgnoreWindow,
        Mutation::PanicOnUnknownCompletion,
        Mutation::NeverRetry,
        Mutation::NeverCheckpoint,
        Mutation::RetryWithoutBackoff,
        Mutation::StaleFrameIndex,
        Mutation::CheckAbsentAsStored,
        Mutation::PersistNewestCut,
        Mutation::SkipFrameChecksum,
        Mutation::QuietShipUnspaced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutation::CheckpointBeforeDurable => "checkpoint-before-durable",
            Mutation::SkipSaltCheck => "skip-salt-check",
            Mutation::DropFailedUpload => "drop-failed-upload",
            Mutation::DurablePastHole => "durable-past-hole",
            Mutation::ReuseTxids => "reuse-txids",
            Mutation::AcceptAnyCompletion => "accept-any-completion",
            Mutation::IgnoreWindow => "ignore-window",
            Mutation::PanicOnUnknownCompletion => "panic-on-unknown-completion",
            Mutation::NeverRetry => "never-retry",
            Mutation::NeverCheckpoint => "never-checkpoint",
            Mutation::RetryWithoutBackoff => "retry-without-backoff",
            Mutation::StaleFrameIndex => "stale-frame-index",
            Mutation::CheckAbsentAsStored => "check-absent-as-stored",
            Mutation::PersistNewestCut => "persist-newest-cut",
            Mutation::SkipFrameChecksum => "skip-frame-checksum",
            Mutation::QuietShipUnspaced => "quiet-ship-unspaced",
        }
    }
}

impl super::Replicator {
    /// Switches a deliberately broken decision on (or, with `None`, off) for this
    /// engine. Only with the `mutations` feature; see the module comment.
    #[cfg(feature = "mutations")]
    pub fn set_mutation(&mut self, mutation: Option<Mutation>) {
        self.mutation = mutation;
    }

    /// Whether decision point `m` is broken in this engine.
    #[cfg(feature = "mutations")]
    #[inline]
    pub(super) fn mutated(&self, m: Mutation) -> bool {
        self.mutation == Some(m)
    }

    #[cfg(not(feature = "mutations"))]
    #[inline(always)]
    pub(super) fn mutated(&self, _m: Mutation) -> bool {
        false
    }
}
