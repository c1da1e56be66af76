//! LTX v3 file codec (the format Litestream 0.5.x writes and reads).
//!
//! Owns the shared constants, the error type, the CRC-64/GO-ISO instance and the
//! re-exports of the codec's public surface. The format itself is described in
//! `shared/reference/ltx-v3.md`; each submodule owns one part of it:
//!
//! - [`header`]: the 100-byte header and the 16-byte trailer, with validation.
//! - [`checksum`]: the rolling database checksum.
//! - `filecrc`: the running file checksum (table or, with `simd-crc`, SIMD CRC-64).
//! - [`varint`]: LEB128 uvarints as Go's `encoding/binary` writes them.
//! - [`index`]: the page index that follows the page block.
//! - [`lz4block`]: LZ4 block helpers shared by both page encodings.
//! - [`legacy`]: delimiting and decoding the legacy one-LZ4-frame-per-page encoding.
//! - [`encoder`] / [`decoder`]: streaming writer and reader.
//!
//! Everything here is pure: no file system, clock, thread or randomness, and no
//! panics on any input.

pub mod checksum;
pub mod decoder;
pub mod encoder;
mod filecrc;
pub mod header;
pub mod index;
pub mod legacy;
pub mod lz4block;
pub mod varint;

#[cfg(test)]
mod tests;

pub use checksum::{DbChecksum, page_checksum};
pub use decoder::{DecodedFile, Decoder, decode_all, peek_header};
pub use encoder::Encoder;
pub use header::{Header, Trailer};
pub use index::IndexEntry;

/// The first four bytes of every LTX file (format versions 1-3 share it).
pub const MAGIC: &[u8; 4] = b"LTX1";
/// Size of the file header.
pub const HEADER_SIZE: usize = 100;
/// Size of the file trailer (post-apply checksum, file checksum).
pub const TRAILER_SIZE: usize = 16;
/// Size of a page header (pgno u32, flags u16); also the size of the terminator.
pub const PAGE_HEADER_SIZE: usize = 6;
/// Header flag: database checksums are not tracked (both must be zero).
pub const FLAG_NO_CHECKSUM: u32 = 0x2;
/// Page flag: a u32 size follows the page header and the data is one LZ4 block.
pub const PAGE_FLAG_BLOCK: u16 = 0x0001;
/// Set on every stored checksum so that it is never zero.
pub const CHECKSUM_FLAG: u64 = 1 << 63;
/// Smallest valid page size.
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest valid page size.
pub const MAX_PAGE_SIZE: u32 = 65536;
/// Byte offset of SQLite's lock (pending-byte) page.
pub const PENDING_BYTE: u32 = 0x4000_0000;

/// Everything that can go wrong encoding or decoding an LTX file.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum LtxError {
    #[error("not an LTX file (bad magic)")]
    BadMagic,
    #[error("invalid LTX header flags {0:#010x}")]
    InvalidFlags(u32),
    #[error("invalid page size {0} (must be a power of two in 512..=65536)")]
    InvalidPageSize(u32),
    #[error("invalid LTX header: {0}")]
    InvalidHeader(&'static str),
    #[error("invalid LTX trailer: {0}")]
    InvalidTrailer(&'static str),
    #[error("page {pgno} does not follow page {prev} (pages must be strictly ascending)")]
    PageOutOfOrder { prev: u32, pgno: u32 },
    #[error("page {pgno} is above the commit size {commit}")]
    PageAboveCommit { pgno: u32, commit: u32 },
    #[error("page {0} is the SQLite lock page and may not be stored")]
    LockPage(u32),
    #[error("page buffer is {got} bytes, the page size is {expected}")]
    PageSizeMismatch { expected: usize, got: usize },
    #[error("pages {from}..={to} are missing (snapshot or database growth must be contiguous)")]
    MissingPages { from: u32, to: u32 },
    #[error("LTX data truncated: {0}")]
    Truncated(&'static str),
    #[error("corrupt LTX data: {0}")]
    Corrupt(String),
    /// Decoder: `expected` is the value stored in the file, `actual` the computed one.
    /// Encoder (snapshot post-apply check): `expected` is computed from the pages
    /// written, `actual` the value passed to `finish`.
    #[error("checksum mismatch: expected {expected:#018x}, got {actual:#018x}")]
    ChecksumMismatch { expected: u64, actual: u64 },
    #[error("page index does not match the page block: {0}")]
    IndexMismatch(String),
    #[error("codec used out of order: {0}")]
    InvalidState(&'static str),
    #[error("I/O error: {0}")]
    Io(String),
}

impl LtxError {
    /// Maps an I/O error, turning an unexpected end of input into [`LtxError::Truncated`].
    pub fn from_io(e: &std::io::Error, what: &'static str) -> LtxError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            LtxError::Truncated(what)
        } else {
            LtxError::Io(e.to_string())
        }
    }
}

impl From<std::io::Error> for LtxError {
    fn from(e: std::io::Error) -> Self {
        LtxError::from_io(&e, "unexpected end of input")
    }
}

/// The page number holding SQLite's pending byte; it is never stored in a file.
pub fn lock_pgno(page_size: u32) -> u32 {
    // page_size == 0 is invalid anyway; avoid a division by zero.
    PENDING_BYTE / page_size.max(1) + 1
}

/// True when `page_size` is a power of two in `512..=65536`.
pub fn is_valid_page_size(page_size: u32) -> bool {
    page_size.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size)
}

/// CRC-64 with the ISO polynomial as Go's `hash/crc64` computes it.
pub fn crc64() -> &'static crc::Crc<u64> {
    static CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO);
    &CRC
}

/// The same CRC with a slice-by-16 table, used for bulk hashing without `simd-crc`
/// (`filecrc`). Produces exactly the values of [`crc64`].
#[cfg_attr(feature = "simd-crc", allow(dead_code))]
pub(crate) type FastCrc = crc::Crc<u64, crc::Table<16>>;

#[cfg_attr(feature = "simd-crc", allow(dead_code))]
pub(crate) fn fast_crc64() -> &'static FastCrc {
    static CRC: FastCrc = FastCrc::new(&crc::CRC_64_GO_ISO);
    &CRC
}

/// Next page number after `p` that may be stored (skips the lock page), in u64 so
/// it cannot overflow.
pub(crate) fn next_storable(p: u64, lock: u32) -> u64 {
    skip_lock(p + 1, lock)
}

/// `p`, or the page after it when `p` is the lock page.
pub(crate) fn skip_lock(p: u64, lock: u32) -> u64 {
    if p == u64::from(lock) { p + 1 } else { p }
}

/// The last storable page of a database of `commit` pages (0 when there is none).
pub(crate) fn last_storable(commit: u32, lock: u32) -> u64 {
    if commit == lock {
        u64::from(commit) - 1
    } else {
        u64::from(commit)
    }
}

/// Checks that the pages `first..=commit` (minus the lock page) are all present,
/// given that every page was written in order and the last written page is `prev`
/// (0 when none), and that the check for gaps *inside* the range ran page by page.
/// Returns the missing tail, if any.
pub(crate) fn missing_tail(first: u64, prev: u32, commit: u32, lock: u32) -> Option<LtxError> {
    let first = skip_lock(first, lock);
    let last = last_storable(commit, lock);
    if first > last {
        return None;
    }
    let expected = if u64::from(prev) >= first {
        next_storable(u64::from(prev), lock)
    } else {
        first
    };
    if expected <= last {
        Some(LtxError::MissingPages {
            from: u32::try_from(expected).unwrap_or(u32::MAX),
            to: commit,
        })
    } else {
        None
    }
}

/// Checks that writing `pgno` after `prev` leaves no gap inside the required range
/// starting at `first`.
pub(crate) fn missing_before(first: u64, prev: u32, pgno: u32, lock: u32) -> Option<LtxError> {
    let first = skip_lock(first, lock);
    if u64::from(pgno) <= first {
        return None;
    }
    let expected = if u64::from(prev) >= first {
        next_storable(u64::from(prev), lock)
    } else {
        first
    };
    if u64::from(pgno) > expected {
        Some(LtxError::MissingPages {
            from: u32::try_from(expected).unwrap_or(u32::MAX),
            to: pgno - 1,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc64().checksum(b"123456789"), 0xb909_56c7_75a4_1001);
        assert_eq!(fast_crc64().checksum(b"123456789"), 0xb909_56c7_75a4_1001);
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        assert_eq!(crc64().checksum(&data), fast_crc64().checksum(&data));
    }

    #[test]
    fn lock_page_math() {
        assert_eq!(lock_pgno(512), 2_097_153);
        assert_eq!(lock_pgno(1024), 1_048_577);
        assert_eq!(lock_pgno(4096), 262_145);
        assert_eq!(lock_pgno(65536), 16_385);
        assert_eq!(lock_pgno(0), PENDING_BYTE + 1);
    }

    #[test]
    fn page_sizes() {
        for s in [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
            assert!(is_valid_page_size(s));
        }
        for s in [0, 1, 256, 511, 513, 1000, 4095, 131_072, u32::MAX] {
            assert!(!is_valid_page_size(s));
        }
    }

    #[test]
    fn contiguity_helpers() {
        let lock = 10;
        // Range 1..=12 with lock page 10: pages 1..=9, 11, 12.
        assert_eq!(missing_tail(1, 12, 12, lock), None);
        assert_eq!(
            missing_tail(1, 9, 12, lock),
            Some(LtxError::MissingPages { from: 11, to: 12 })
        );
        assert_eq!(
            missing_tail(1, 0, 12, lock),
            Some(LtxError::MissingPages { from: 1, to: 12 })
        );
        assert_eq!(missing_tail(1, 9, 10, lock), None); // commit is the lock page
        assert_eq!(missing_tail(13, 5, 12, lock), None); // nothing required
        assert_eq!(missing_before(1, 9, 11, lock), None);
        assert_eq!(
            missing_before(1, 8, 11, lock),
            Some(LtxError::MissingPages { from: 9, to: 10 })
        );
        assert_eq!(missing_before(5, 2, 4, lock), None); // below the range
        assert_eq!(
            missing_before(5, 2, 6, lock),
            Some(LtxError::MissingPages { from: 5, to: 5 })
        );
        assert_eq!(missing_before(10, 2, 11, lock), None); // range starts at the lock page
    }
}
