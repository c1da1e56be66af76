//! Streaming LTX reader over `Read` (no `Seek`): one compressed-page buffer, the
//! legacy frame state, and the list of pages seen (to check the index against).

use std::io::Read;

use super::filecrc::FileDigest;
use super::index::{IndexEntry, MAX_ENTRY_LEN, parse_index};
use super::legacy::LegacyPages;
use super::lz4block::{decompress_page, max_compressed_size};
use super::{
    CHECKSUM_FLAG, DbChecksum, HEADER_SIZE, Header, LtxError, PAGE_FLAG_BLOCK, PAGE_HEADER_SIZE,
    TRAILER_SIZE, Trailer, missing_before, missing_tail,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pages,
    Done,
    Failed,
}

/// Reads one LTX file from `R`.
pub struct Decoder<R: Read> {
    r: R,
    header: Header,
    digest: FileDigest,
    pos: u64,
    lock: u32,
    prev_pgno: u32,
    state: State,
    seen: Vec<IndexEntry>,
    cbuf: Vec<u8>,
    legacy: Option<LegacyPages>,
    db_checksum: Option<DbChecksum>,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header.
    pub fn new(mut r: R) -> Result<Self, LtxError> {
        let mut b = [0u8; HEADER_SIZE];
        r.read_exact(&mut b)
            .map_err(|e| LtxError::from_io(&e, "header"))?;
        let header = Header::decode(&b)?;
        let mut digest = FileDigest::new();
        digest.update(&b);
        Ok(Decoder {
            r,
            header,
            digest,
            pos: HEADER_SIZE as u64,
            lock: header.lock_pgno(),
            prev_pgno: 0,
            state: State::Pages,
            seen: Vec::new(),
            cbuf: vec![0u8; max_compressed_size(header.page_size as usize)],
            legacy: None,
            db_checksum: (header.is_snapshot() && !header.no_checksum()).then(DbChecksum::new),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.pos
    }

    /// The pages decoded so far, as the index must list them.
    pub fn pages_seen(&self) -> &[IndexEntry] {
        &self.seen
    }

    fn read(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), LtxError> {
        self.r
            .read_exact(buf)
            .map_err(|e| LtxError::from_io(&e, what))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Decodes the next page into `buf` (`page_size` bytes) and returns its number;
    /// `Ok(None)` at the terminator (and on every later call). Any error other than a
    /// wrong buffer size leaves the decoder failed.
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        match self.state {
            State::Done => return Ok(None),
            State::Failed => return Err(LtxError::InvalidState("decoder failed earlier")),
            State::Pages => {}
        }
        if buf.len() != self.header.page_size as usize {
            return Err(LtxError::PageSizeMismatch {
                expected: self.header.page_size as usize,
                got: buf.len(),
            });
        }
        let result = self.next_page_inner(buf);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn next_page_inner(&mut self, buf: &mut [u8]) -> Result<Option<u32>, LtxError> {
        let offset = self.pos;
        let mut ph = [0u8; PAGE_HEADER_SIZE];
        self.read(&mut ph, "page header")?;
        self.digest.update(&ph);
        let pgno = u32::from_be_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let flags = u16::from_be_bytes([ph[4], ph[5]]);
        if pgno == 0 && flags == 0 {
            if self.header.is_snapshot()
                && let Some(e) = missing_tail(1, self.prev_pgno, self.header.commit, self.lock)
            {
                return Err(e);
            }
            self.state = State::Done;
            return Ok(None);
        }
        if pgno == 0 {
            return Err(LtxError::Corrupt(format!(
                "page header with page number 0 and flags {flags:#06x}"
            )));
        }
        if flags & !PAGE_FLAG_BLOCK != 0 {
            return Err(LtxError::Corrupt(format!(
                "page {pgno} has invalid flags {flags:#06x}"
            )));
        }
        if pgno <= self.prev_pgno {
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
        if self.header.is_snapshot()
            && let Some(e) = missing_before(1, self.prev_pgno, pgno, self.lock)
        {
            return Err(e);
        }

        if flags & PAGE_FLAG_BLOCK != 0 {
            let mut sb = [0u8; 4];
            self.read(&mut sb, "page size field")?;
            self.digest.update(&sb);
            let size = u32::from_be_bytes(sb) as usize;
            if size == 0 || size > self.cbuf.len() {
                return Err(LtxError::Corrupt(format!(
                    "page {pgno}: compressed size {size} out of range"
                )));
            }
            let mut cbuf = std::mem::take(&mut self.cbuf);
            let res = match cbuf.get_mut(..size) {
                Some(block) => self
                    .read(block, "page data")
                    .and_then(|()| decompress_page(block, buf)),
                None => Err(LtxError::Corrupt("compressed buffer too small".into())),
            };
            self.cbuf = cbuf;
            res?;
        } else {
            // Legacy encoding. The file checksum covers the page header as stored and
            // the uncompressed page, like the block encoding minus its size field: this
            // is what ltx v0.5.2's decoder hashes for frame-encoded pages.
            let legacy = self.legacy.get_or_insert_with(LegacyPages::default);
            let n = legacy.read_page(&mut self.r, buf)?;
            self.pos += n;
        }
        self.digest.update(buf);
        self.seen.push(IndexEntry {
            pgno,
            offset,
            size: self.pos - offset,
        });
        if let Some(c) = self.db_checksum.as_mut() {
            c.add(pgno, buf);
        }
        self.prev_pgno = pgno;
        Ok(Some(pgno))
    }

    /// After `next_page` returned `Ok(None)`: reads the index and trailer, checks that
    /// the index lists exactly the pages seen (pgno, offset, size), that its stored
    /// length is right, that nothing follows the trailer, the file checksum, the
    /// trailer rules, and (snapshots with checksums) the post-apply checksum.
    pub fn finish(mut self) -> Result<Trailer, LtxError> {
        self.finish_checks()
    }

    /// Like [`Decoder::finish`], and hands back the reader (positioned after the
    /// trailer) so a caller hashing the stream can complete its digest.
    pub fn finish_into_inner(mut self) -> Result<R, LtxError> {
        self.finish_checks()?;
        Ok(self.r)
    }

    fn finish_checks(&mut self) -> Result<Trailer, LtxError> {
        match self.state {
            State::Done => {}
            State::Failed => return Err(LtxError::InvalidState("decoder failed earlier")),
            State::Pages => {
                return Err(LtxError::InvalidState(
                    "finish called before the end of the page block",
                ));
            }
        }
        // Longest possible index + its length + trailer, plus one byte to detect excess.
        let max_index = self
            .seen
            .len()
            .saturating_mul(MAX_ENTRY_LEN)
            .saturating_add(super::varint::MAX_VARINT_LEN);
        let limit = max_index.saturating_add(8 + TRAILER_SIZE + 1);
        let mut tail = std::mem::take(&mut self.cbuf);
        tail.clear();
        (&mut self.r)
            .take(limit as u64)
            .read_to_end(&mut tail)
            .map_err(|e| LtxError::from_io(&e, "page index"))?;

        let seen = &self.seen;
        let mut listed = 0usize;
        let used = parse_index(&tail, |i, e| {
            listed = i + 1;
            match seen.get(i) {
                Some(s) if *s == e => Ok(()),
                Some(s) => Err(LtxError::IndexMismatch(format!(
                    "entry {i} is page {} at {} size {}, the page block has page {} at {} size {}",
                    e.pgno, e.offset, e.size, s.pgno, s.offset, s.size
                ))),
                None => Err(LtxError::IndexMismatch(format!(
                    "index lists more than the {} pages read",
                    seen.len()
                ))),
            }
        })?;
        if listed != seen.len() {
            return Err(LtxError::IndexMismatch(format!(
                "index lists {listed} pages, the page block has {}",
                seen.len()
            )));
        }
        // `used` counts the index and its u64 length (checked by parse_index).
        let trailer_bytes = tail
            .get(used..used + TRAILER_SIZE)
            .ok_or(LtxError::Truncated("trailer"))?;
        let trailer = Trailer::decode(trailer_bytes)?;
        if tail.len() > used + TRAILER_SIZE {
            return Err(LtxError::Corrupt(
                "unexpected bytes after the trailer".into(),
            ));
        }
        // Hash the index, its length and the post-apply checksum.
        self.digest.update(tail.get(..used + 8).unwrap_or(&[]));
        let computed = CHECKSUM_FLAG | self.digest.finalize();
        if computed != trailer.file_checksum {
            return Err(LtxError::ChecksumMismatch {
                expected: trailer.file_checksum,
                actual: computed,
            });
        }
        trailer.validate(&self.header)?;
        if let Some(c) = self.db_checksum
            && c.value() != trailer.post_apply_checksum
        {
            return Err(LtxError::ChecksumMismatch {
                expected: trailer.post_apply_checksum,
                actual: c.value(),
            });
        }
        Ok(trailer)
    }
}

/// A whole decoded file: header, `(pgno, page)` in file order, trailer.
pub type DecodedFile = (Header, Vec<(u32, Vec<u8>)>, Trailer);

/// Decodes a whole file held in memory (tests and small files).
pub fn decode_all(bytes: &[u8]) -> Result<DecodedFile, LtxError> {
    let mut dec = Decoder::new(bytes)?;
    let header = *dec.header();
    let mut buf = vec![0u8; header.page_size as usize];
    let mut pages = Vec::new();
    while let Some(pgno) = dec.next_page(&mut buf)? {
        pages.push((pgno, buf.clone()));
    }
    let trailer = dec.finish()?;
    Ok((header, pages, trailer))
}

/// Reads and validates just the header from the first 100 bytes of a file.
pub fn peek_header(b: &[u8]) -> Result<Header, LtxError> {
    Header::decode(b)
}
