//! Streaming LTX writer. Holds one compressed-page buffer and the encoded page index,
//! never the whole file. Pages are written as `pgno | flags=0x0001 | size | LZ4 block`.

use std::io::Write;

use super::filecrc::FileDigest;
use super::header::validate_post_apply;
use super::index::{IndexEntry, append_entry};
use super::lz4block::max_compressed_size;
use super::{
    CHECKSUM_FLAG, DbChecksum, HEADER_SIZE, Header, LtxError, PAGE_FLAG_BLOCK, PAGE_HEADER_SIZE,
    Trailer, missing_before, missing_tail,
};

/// Writes one LTX file to `W`.
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    digest: FileDigest,
    bytes_written: u64,
    lock: u32,
    prev_pgno: u32,
    pages_written: u32,
    /// Start of the trailing run of consecutive (lock page skipped) pages written.
    run_start: u32,
    /// First page of the range that must be present in full (1 for snapshots).
    required_from: Option<u64>,
    /// A contiguity failure found when the requirement arrived after pages were written.
    deferred: Option<LtxError>,
    /// Encoded index entries so far.
    index: Vec<u8>,
    /// Compressed page buffer, sized once.
    cbuf: Vec<u8>,
    /// LZ4's match table, allocated once per file instead of once per page (the
    /// 16-bit one; a 64 KiB page upgrades it on first use).
    table: lz4_flex::block::CompressTable,
    /// Running database checksum (snapshots with checksums only): the trailer's
    /// post-apply checksum must equal it.
    db_checksum: Option<DbChecksum>,
    /// Set after a failed write: the output is inconsistent from then on.
    poisoned: bool,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it.
    pub fn new(mut w: W, header: &Header) -> Result<Self, LtxError> {
        header.validate()?;
        let bytes = header.encode();
        w.write_all(&bytes)
            .map_err(|e| LtxError::Io(e.to_string()))?;
        let mut digest = FileDigest::new();
        digest.update(&bytes);
        Ok(Encoder {
            w,
            header: *header,
            digest,
            bytes_written: HEADER_SIZE as u64,
            lock: header.lock_pgno(),
            prev_pgno: 0,
            pages_written: 0,
            run_start: 0,
            required_from: header.is_snapshot().then_some(1),
            deferred: None,
            index: Vec::new(),
            cbuf: vec![0u8; max_compressed_size(header.page_size as usize)],
            table: lz4_flex::block::CompressTable::small(),
            db_checksum: (header.is_snapshot() && !header.no_checksum()).then(DbChecksum::new),
            poisoned: false,
        })
    }

    /// The header this encoder writes.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// For incremental files: require that every page in `(prev_commit, header.commit]`
    /// except the lock page is written (growth pages), checked as pages arrive and at
    /// [`Encoder::finish`]. Best called before the first page; if pages were already
    /// written, a gap among them is reported by `finish`.
    pub fn require_growth_pages(&mut self, prev_commit: u32) {
        let first = u64::from(prev_commit) + 1;
        if self.required_from.is_some_and(|f| f <= first) {
            return;
        }
        // Pages already written at or above `first` must form one run reaching down to it.
        let first_storable = super::skip_lock(first, self.lock);
        if self.deferred.is_none()
            && self.pages_written > 0
            && u64::from(self.prev_pgno) >= first_storable
            && u64::from(self.run_start) > first_storable
        {
            self.deferred = Some(LtxError::MissingPages {
                from: u32::try_from(first_storable).unwrap_or(u32::MAX),
                to: self.run_start - 1,
            });
        }
        self.required_from = Some(first);
    }

    /// Compresses and writes page `pgno`. Pages must be strictly ascending, within
    /// `1..=commit`, never the lock page, and exactly `page_size` bytes long.
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), LtxError> {
        if self.poisoned {
            return Err(LtxError::InvalidState(
                "encoder unusable after a failed write",
            ));
        }
        if data.len() != self.header.page_size as usize {
            return Err(LtxError::PageSizeMismatch {
                expected: self.header.page_size as usize,
                got: data.len(),
            });
        }
        if pgno == 0 || pgno <= self.prev_pgno {
            return Err(LtxError::PageOutOfOrder {
                prev: self.prev_pgno,
                pgno,
            });
        }
        if pgno > self.header.commit {
            return Err(LtxError::PageAboveCommit {
                pgno,
                commit: self.header.commit,
            });
        }
        if pgno == self.lock {
            return Err(LtxError::LockPage(pgno));
        }
        if let Some(first) = self.required_from
            && let Some(e) = missing_before(first, self.prev_pgno, pgno, self.lock)
        {
            return Err(e);
        }

        let n = lz4_flex::block::compress_into_with_table(data, &mut self.cbuf, &mut self.table)
            .map_err(|e| LtxError::Corrupt(format!("LZ4 compression failed: {e}")))?;
        let block = self
            .cbuf
            .get(..n)
            .ok_or_else(|| LtxError::Corrupt("LZ4 output overran its buffer".into()))?;
        let size =
            u32::try_from(n).map_err(|_| LtxError::Corrupt("compressed page too large".into()))?;
        let mut head = [0u8; PAGE_HEADER_SIZE + 4];
        head[..4].copy_from_slice(&pgno.to_be_bytes());
        head[4..6].copy_from_slice(&PAGE_FLAG_BLOCK.to_be_bytes());
        head[6..].copy_from_slice(&size.to_be_bytes());
        if let Err(e) = self
            .w
            .write_all(&head)
            .and_then(|()| self.w.write_all(block))
        {
            self.poisoned = true;
            return Err(LtxError::Io(e.to_string()));
        }
        self.digest.update(&head);
        self.digest.update(data);

        let offset = self.bytes_written;
        let len = (head.len() + n) as u64;
        self.bytes_written += len;
        append_entry(
            &mut self.index,
            &IndexEntry {
                pgno,
                offset,
                size: len,
            },
        );
        if let Some(c) = self.db_checksum.as_mut() {
            c.add(pgno, data);
        }
        let continues = self.pages_written > 0
            && u64::from(pgno) == super::next_storable(u64::from(self.prev_pgno), self.lock);
        if !continues {
            self.run_start = pgno;
        }
        self.prev_pgno = pgno;
        self.pages_written += 1;
        Ok(())
    }

    /// Number of pages written so far.
    pub fn pages_written(&self) -> u32 {
        self.pages_written
    }

    /// Bytes written to the output so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Writes the terminator, the page index and the trailer; returns the writer
    /// (flushed) and the trailer.
    ///
    /// Checks: snapshots contain every page `1..=commit` but the lock page, and so do
    /// required growth ranges; with NoChecksum `post_apply_checksum` must be 0, without
    /// it non-zero with bit 63 set, and for snapshots equal to the checksum of the pages
    /// written (for an empty database, the empty checksum).
    pub fn finish(mut self, post_apply_checksum: u64) -> Result<(W, Trailer), LtxError> {
        if self.poisoned {
            return Err(LtxError::InvalidState(
                "encoder unusable after a failed write",
            ));
        }
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if let Some(first) = self.required_from
            && let Some(e) = missing_tail(first, self.prev_pgno, self.header.commit, self.lock)
        {
            return Err(e);
        }
        validate_post_apply(&self.header, post_apply_checksum)?;
        if let Some(c) = self.db_checksum
            && c.value() != post_apply_checksum
        {
            return Err(LtxError::ChecksumMismatch {
                expected: c.value(),
                actual: post_apply_checksum,
            });
        }
        if !self.header.no_checksum()
            && self.header.commit == 0
            && post_apply_checksum != CHECKSUM_FLAG
        {
            return Err(LtxError::InvalidTrailer(
                "an empty database has the empty checksum",
            ));
        }

        // Terminator, index entries, index terminator and index length.
        let mut tail = std::mem::take(&mut self.index);
        let index_start = PAGE_HEADER_SIZE;
        let mut out = Vec::with_capacity(PAGE_HEADER_SIZE + tail.len() + 9);
        out.extend_from_slice(&[0u8; PAGE_HEADER_SIZE]);
        out.append(&mut tail);
        out.push(0);
        let index_len = (out.len() - index_start) as u64;
        out.extend_from_slice(&index_len.to_be_bytes());
        out.extend_from_slice(&post_apply_checksum.to_be_bytes());
        self.digest.update(&out);
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: CHECKSUM_FLAG | self.digest.finalize(),
        };
        out.extend_from_slice(&trailer.file_checksum.to_be_bytes());
        self.w
            .write_all(&out)
            .and_then(|()| self.w.flush())
            .map_err(|e| LtxError::Io(e.to_string()))?;
        Ok((self.w, trailer))
    }
}
