//! The 32-byte WAL file header: [`WalHeader`] parsing (with SQLite's
//! validity rules), encoding, and frame offset arithmetic.

use super::checksum::wal_checksum;
use super::{FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalError};

/// Magic for a WAL whose checksums read words as little-endian u32s.
pub const WAL_MAGIC_LE: u32 = 0x377f_0682;
/// Magic for a WAL whose checksums read words as big-endian u32s.
pub const WAL_MAGIC_BE: u32 = 0x377f_0683;
/// The only WAL format version SQLite writes or accepts.
pub const WAL_FORMAT_VERSION: u32 = 3_007_000;
/// Smallest SQLite page size.
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest SQLite page size.
pub const MAX_PAGE_SIZE: u32 = 65_536;

/// Whether `page_size` is a power of two in `512..=65536`.
///
/// Note: unlike the *database* header (where 65536 is stored as 1 in a 16-bit
/// field), the WAL header stores the page size as a plain u32, so 64 KiB
/// pages are written as 65536 and the value 1 is invalid. This matches
/// SQLite: `sqlite3WalFrames` writes `szPage` verbatim and `walIndexRecover`
/// rejects `szPage < 512`.
pub fn is_valid_page_size(page_size: u32) -> bool {
    page_size.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size)
}

/// A parsed, validated WAL header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    /// Magic `0x377f0683`: checksums read big-endian words. Otherwise
    /// (`0x377f0682`) little-endian words.
    pub big_endian_checksums: bool,
    /// Page size in bytes (512..=65536).
    pub page_size: u32,
    /// Checkpoint sequence number.
    pub checkpoint_seq: u32,
    /// Salt-1: incremented by SQLite at each WAL restart.
    pub salt1: u32,
    /// Salt-2: randomised by SQLite at each WAL restart.
    pub salt2: u32,
    /// Header checksum, first word; seeds the frame checksum chain.
    pub checksum1: u32,
    /// Header checksum, second word.
    pub checksum2: u32,
}

#[inline]
fn be32(b: &[u8; 32], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

impl WalHeader {
    /// Build a header with correct checksums from its fields.
    pub fn new(
        page_size: u32,
        big_endian_checksums: bool,
        checkpoint_seq: u32,
        salt1: u32,
        salt2: u32,
    ) -> WalHeader {
        let mut h = WalHeader {
            big_endian_checksums,
            page_size,
            checkpoint_seq,
            salt1,
            salt2,
            checksum1: 0,
            checksum2: 0,
        };
        let enc = h.encode();
        h.checksum1 = be32(&enc, 24);
        h.checksum2 = be32(&enc, 28);
        h
    }

    /// Parse and validate the first 32 bytes of `b` (extra bytes are ignored):
    /// magic, format version, page size and header checksum, checked in that
    /// order.
    pub fn parse(b: &[u8]) -> Result<WalHeader, WalError> {
        let Some(b) = b.first_chunk::<32>() else {
            return Err(WalError::Truncated);
        };
        let magic = be32(b, 0);
        let big_endian_checksums = match magic {
            WAL_MAGIC_LE => false,
            WAL_MAGIC_BE => true,
            other => return Err(WalError::BadMagic(other)),
        };
        let version = be32(b, 4);
        if version != WAL_FORMAT_VERSION {
            return Err(WalError::BadVersion(version));
        }
        let page_size = be32(b, 8);
        if !is_valid_page_size(page_size) {
            return Err(WalError::BadPageSize(page_size));
        }
        let checksum1 = be32(b, 24);
        let checksum2 = be32(b, 28);
        let (c1, c2) = wal_checksum(big_endian_checksums, &b[..24], 0, 0);
        if (c1, c2) != (checksum1, checksum2) {
            return Err(WalError::HeaderChecksum);
        }
        Ok(WalHeader {
            big_endian_checksums,
            page_size,
            checkpoint_seq: be32(b, 12),
            salt1: be32(b, 16),
            salt2: be32(b, 20),
            checksum1,
            checksum2,
        })
    }

    /// Encode as the 32 bytes SQLite would write. The checksum is recomputed
    /// from the other fields (`checksum1`/`checksum2` are ignored).
    pub fn encode(&self) -> [u8; 32] {
        let magic = if self.big_endian_checksums {
            WAL_MAGIC_BE
        } else {
            WAL_MAGIC_LE
        };
        let words = [
            magic,
            WAL_FORMAT_VERSION,
            self.page_size,
            self.checkpoint_seq,
            self.salt1,
            self.salt2,
        ];
        let mut out = [0u8; 32];
        for (dst, w) in out.chunks_exact_mut(4).zip(words) {
            dst.copy_from_slice(&w.to_be_bytes());
        }
        let (c1, c2) = wal_checksum(self.big_endian_checksums, &out[..24], 0, 0);
        out[24..28].copy_from_slice(&c1.to_be_bytes());
        out[28..32].copy_from_slice(&c2.to_be_bytes());
        out
    }

    /// Size of one frame: 24-byte frame header plus one page.
    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE + u64::from(self.page_size)
    }

    /// Byte offset of frame `index` (0-based). Saturates instead of
    /// overflowing.
    pub fn frame_offset(&self, index: u64) -> u64 {
        WAL_HEADER_SIZE.saturating_add(index.saturating_mul(self.frame_size()))
    }

    /// The index of the frame starting exactly at `offset`, if `offset` is a
    /// frame boundary (`offset == frame_offset(i)`); the end of the last frame
    /// is also a boundary.
    pub fn frame_index(&self, offset: u64) -> Option<u64> {
        let rel = offset.checked_sub(WAL_HEADER_SIZE)?;
        let fs = self.frame_size();
        (rel % fs == 0).then_some(rel / fs)
    }

    /// Whether `other` belongs to the same WAL generation: equal salts and
    /// page size. (SQLite changes the salts every time it restarts the WAL.)
    pub fn same_generation(&self, other: &WalHeader) -> bool {
        self.salt1 == other.salt1 && self.salt2 == other.salt2 && self.page_size == other.page_size
    }

    /// The header checksum as a pair: the seed of the frame checksum chain.
    pub fn checksum(&self) -> (u32, u32) {
        (self.checksum1, self.checksum2)
    }
}
