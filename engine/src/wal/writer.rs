//! Test-support WAL writer ([`WalWriter`]): produces WAL bytes in memory
//! exactly as SQLite lays them out, with correct cumulative checksums, plus
//! helpers to model restarts, torn writes and corruption. For tests and the
//! simulator; not used by the replication path.

use super::checksum::wal_checksum;
use super::scanner::FrameRef;
use super::{FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalHeader};

const FH: usize = FRAME_HEADER_SIZE as usize;
const HS: usize = WAL_HEADER_SIZE as usize;

/// Writes a WAL file into a `Vec<u8>`.
///
/// Frames are written at a cursor. After [`WalWriter::restart`] the cursor
/// goes back to the first frame and new frames overwrite the old ones in
/// place, leaving any longer tail of the previous generation behind, just as
/// SQLite does.
#[derive(Clone, Debug)]
pub struct WalWriter {
    header: WalHeader,
    buf: Vec<u8>,
    cursor: usize,
    checksum: (u32, u32),
    /// Cursor and checksum just past the last commit frame (or the header).
    last_commit: (usize, (u32, u32)),
}

impl WalWriter {
    /// Start a WAL with the given header fields (`page_size` in bytes; 65536
    /// is written as 65536, as SQLite does). An invalid page size is written
    /// as-is, which is useful to test header rejection.
    pub fn new(
        page_size: u32,
        big_endian: bool,
        salt1: u32,
        salt2: u32,
        checkpoint_seq: u32,
    ) -> Self {
        let header = WalHeader::new(page_size, big_endian, checkpoint_seq, salt1, salt2);
        let mut buf = Vec::new();
        buf.extend_from_slice(&header.encode());
        WalWriter {
            header,
            buf,
            cursor: HS,
            checksum: header.checksum(),
            last_commit: (HS, header.checksum()),
        }
    }

    /// The current header (with its checksum).
    pub fn header(&self) -> &WalHeader {
        &self.header
    }

    /// The whole file, including any stale tail past the cursor.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Mutable access to the file, e.g. to flip bits.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Consume the writer, returning the file.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Offset where the next frame will be written.
    pub fn next_offset(&self) -> u64 {
        self.cursor as u64
    }

    /// Cumulative checksum after the last frame appended (the header checksum
    /// if none).
    pub fn checksum(&self) -> (u32, u32) {
        self.checksum
    }

    /// Append a frame for page `pgno` with correct salts and checksum.
    /// `commit` is the database size in pages for a commit frame, else 0.
    /// `data` is truncated or zero-padded to the page size.
    pub fn append_frame(&mut self, pgno: u32, data: &[u8], commit: u32) -> FrameRef {
        let (s1, s2) = (self.header.salt1, self.header.salt2);
        self.append_frame_with_salts(pgno, data, commit, s1, s2)
    }

    /// Like [`WalWriter::append_frame`] but with the given salts (the checksum
    /// chain is still continued correctly), to model frames whose only defect
    /// is their generation.
    pub fn append_frame_with_salts(
        &mut self,
        pgno: u32,
        data: &[u8],
        commit: u32,
        salt1: u32,
        salt2: u32,
    ) -> FrameRef {
        let page_size = self.header.page_size as usize;
        let start = self.cursor;
        let end = start + FH + page_size;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let be = self.header.big_endian_checksums;
        let (hdr, page) = self.buf[start..end].split_at_mut(FH);
        for (dst, w) in hdr.chunks_exact_mut(4).zip([pgno, commit, salt1, salt2]) {
            dst.copy_from_slice(&w.to_be_bytes());
        }
        let n = data.len().min(page_size);
        page[..n].copy_from_slice(&data[..n]);
        page[n..].fill(0);
        let (c1, c2) = self.checksum;
        let sum = wal_checksum(be, &hdr[..8], c1, c2);
        let sum = wal_checksum(be, page, sum.0, sum.1);
        hdr[16..20].copy_from_slice(&sum.0.to_be_bytes());
        hdr[20..24].copy_from_slice(&sum.1.to_be_bytes());
        self.checksum = sum;
        self.cursor = end;
        if commit != 0 {
            self.last_commit = (end, sum);
        }
        FrameRef {
            offset: start as u64,
            pgno,
        }
    }

    /// Write raw bytes at the cursor (overwriting or extending), advancing it.
    /// The checksum chain is not affected: models garbage or torn writes.
    pub fn append_raw(&mut self, bytes: &[u8]) {
        let end = self.cursor + bytes.len();
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[self.cursor..end].copy_from_slice(bytes);
        self.cursor = end;
    }

    /// Restart the WAL as SQLite does after a full checkpoint: increment the
    /// checkpoint sequence, take new salts, rewrite the header in place and
    /// move the cursor back to the first frame. Old frames stay in the file
    /// until overwritten.
    pub fn restart(&mut self, salt1: u32, salt2: u32) {
        self.header = WalHeader::new(
            self.header.page_size,
            self.header.big_endian_checksums,
            self.header.checkpoint_seq.wrapping_add(1),
            salt1,
            salt2,
        );
        if self.buf.len() < HS {
            self.buf.resize(HS, 0);
        }
        self.buf[..HS].copy_from_slice(&self.header.encode());
        self.cursor = HS;
        self.checksum = self.header.checksum();
        self.last_commit = (HS, self.checksum);
    }

    /// Roll back the uncommitted frames as SQLite does: the cursor and
    /// checksum chain return to just past the last commit frame, and the
    /// rolled-back frames stay in the file until overwritten.
    pub fn rollback(&mut self) {
        (self.cursor, self.checksum) = self.last_commit;
    }

    /// Truncate the file to `len` bytes, e.g. to model a torn write (the
    /// cursor is clamped to it; the checksum chain is not rewound).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
        self.cursor = self.cursor.min(len);
    }
}
