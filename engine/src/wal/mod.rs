//! SQLite write-ahead-log (WAL) reader: header parsing, checksum chain
//! validation, incremental transaction scanning and generation-change
//! classification. Pure (no I/O): callers feed bytes they read themselves.
//!
//! Format reference: <https://sqlite.org/fileformat2.html#walformat>, checked
//! against SQLite's `wal.c` (`walIndexRecover`, `walDecodeFrame`,
//! `walChecksumBytes`, `sqlite3WalFrames`).
//!
//! Submodules:
//! - [`header`]: the 32-byte WAL header ([`WalHeader`]) and its validation.
//! - [`checksum`]: the WAL checksum ([`wal_checksum`]).
//! - [`scanner`]: the incremental frame validator ([`WalScanner`]).
//! - [`change`]: comparing a re-read WAL with the generation being followed
//!   ([`classify_change`]).
//! - [`writer`]: a test-support WAL writer ([`WalWriter`]).

pub mod change;
pub mod checksum;
pub mod header;
pub mod scanner;
pub mod writer;

#[cfg(test)]
mod tests;

pub use change::{WalChange, classify_change};
pub use checksum::wal_checksum;
pub use header::{
    MAX_PAGE_SIZE, MIN_PAGE_SIZE, WAL_FORMAT_VERSION, WAL_MAGIC_BE, WAL_MAGIC_LE, WalHeader,
    is_valid_page_size,
};
pub use scanner::{FrameRef, ScanStop, Txn, WalScanner};
pub use writer::WalWriter;

/// Size in bytes of the WAL file header.
pub const WAL_HEADER_SIZE: u64 = 32;
/// Size in bytes of each frame header (the page data follows it).
pub const FRAME_HEADER_SIZE: u64 = 24;

/// Why a WAL header was rejected. SQLite treats a WAL whose header fails any
/// of these checks as containing no valid frames.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WalError {
    /// Fewer than [`WAL_HEADER_SIZE`] bytes were supplied.
    #[error("WAL header truncated: need 32 bytes")]
    Truncated,
    /// The magic number is neither `0x377f0682` nor `0x377f0683`.
    #[error("bad WAL magic {0:#010x}")]
    BadMagic(u32),
    /// The file format version is not 3007000.
    #[error("unsupported WAL format version {0}")]
    BadVersion(u32),
    /// The page size is not a power of two in 512..=65536.
    #[error("invalid WAL page size {0}")]
    BadPageSize(u32),
    /// The header checksum does not match the first 24 header bytes.
    #[error("WAL header checksum mismatch")]
    HeaderChecksum,
}
