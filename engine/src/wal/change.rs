//! Classifying what happened to a WAL file between two reads
//! ([`classify_change`]): same generation, restarted, truncated or gone.

use super::{WAL_HEADER_SIZE, WalHeader};

/// What the caller should conclude when comparing a freshly read WAL
/// header/length with the generation it was following.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalChange {
    /// Same generation and the committed prefix is still fully present.
    Same,
    /// A valid header with different salts (or page size): SQLite restarted
    /// the WAL after a checkpoint. Frames of the old generation are gone.
    Reset,
    /// The file is shorter than our committed offset while still carrying our
    /// salts, or it is at least a header long but has no valid header.
    Truncated,
    /// The file is empty or shorter than a WAL header.
    Missing,
}

/// Compare the current state of the WAL file with the generation being
/// followed (`following`, whose committed prefix ends at `committed_offset`).
///
/// `current_header` is the result of [`WalHeader::parse`] on the file's first
/// 32 bytes (`None` if it failed), `current_len` is the file length.
///
/// Precedence: `current_len < 32` gives [`WalChange::Missing`] (whatever
/// `current_header` says); then no valid header gives
/// [`WalChange::Truncated`]; then different salts or page size give
/// [`WalChange::Reset`]; then `current_len < committed_offset` gives
/// [`WalChange::Truncated`]; otherwise [`WalChange::Same`].
pub fn classify_change(
    following: &WalHeader,
    committed_offset: u64,
    current_header: Option<&WalHeader>,
    current_len: u64,
) -> WalChange {
    if current_len < WAL_HEADER_SIZE {
        return WalChange::Missing;
    }
    let Some(current) = current_header else {
        return WalChange::Truncated;
    };
    if !following.same_generation(current) {
        return WalChange::Reset;
    }
    if current_len < committed_offset {
        return WalChange::Truncated;
    }
    WalChange::Same
}
