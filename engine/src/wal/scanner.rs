//! Incremental validation of the frames of one WAL generation
//! ([`WalScanner`]): salt and checksum-chain checks, grouping frames into
//! committed transactions ([`Txn`]) and reporting why scanning stopped
//! ([`ScanStop`]).
//!
//! The scanner streams: bytes may arrive in pieces of any size (down to one
//! byte), the checksum is computed as they arrive and no page is buffered.
//! The only allocation is the reused list of frames of the transaction in
//! progress.

use super::checksum::{ChecksumStream, wal_checksum};
use super::header::is_valid_page_size;
use super::{FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalHeader};

/// Frame header size as a `usize`, for buffer indexing.
const FH: usize = FRAME_HEADER_SIZE as usize;

/// A validated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef {
    /// Offset of the frame header in the WAL file.
    pub offset: u64,
    /// Database page number (>= 1) whose content the frame carries.
    pub pgno: u32,
}

impl FrameRef {
    /// Offset of the page data (just past the 24-byte frame header).
    pub fn data_offset(&self) -> u64 {
        self.offset.saturating_add(FRAME_HEADER_SIZE)
    }
}

/// One committed transaction found by the scanner (borrowed; valid during
/// the callback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Txn<'a> {
    /// The transaction's frames in WAL order, commit frame last. The same
    /// pgno may appear more than once; the last occurrence wins.
    pub frames: &'a [FrameRef],
    /// Database size in pages after the commit (from the commit frame).
    pub commit: u32,
    /// Offset just past the commit frame.
    pub end_offset: u64,
    /// Cumulative checksum after the commit frame (to [`WalScanner::resume`]).
    pub checksum: (u32, u32),
}

/// Why a scan stopped. Every variant except [`ScanStop::NeedMore`] carries the
/// offset of the offending frame; the scanner is left positioned there
/// ([`WalScanner::next_offset`] equals it) with its pending frames kept, so
/// the same bytes re-fed give the same answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanStop {
    /// The data ran out (possibly mid-frame; the partial frame is kept).
    NeedMore,
    /// The frame's salts differ from the header's: a leftover of an older
    /// WAL generation after the valid prefix. Detected from the frame header
    /// alone.
    SaltMismatch {
        /// Offset of the frame header.
        offset: u64,
    },
    /// The frame's checksum does not continue the chain: a torn or in-progress
    /// write, a rolled-back leftover, or garbage.
    ChecksumMismatch {
        /// Offset of the frame header.
        offset: u64,
    },
    /// The frame can never be valid (page number 0), or the scanner cannot
    /// scan at all: its header has an invalid page size or it was resumed at
    /// an offset that is not a frame boundary (then `offset` is that offset).
    InvalidFrame {
        /// Offset of the frame header.
        offset: u64,
    },
}

/// Incremental validator of one WAL generation.
///
/// Feed it the file's bytes in order, from [`WalScanner::next_offset`]; it
/// reports each committed transaction through a callback. Frames after the
/// last commit frame are kept *pending* (validated, not yet committed), so a
/// transaction may span several feeds.
///
/// Frames are valid as in SQLite's `walDecodeFrame`: salts equal the header
/// salts, page number non-zero, and the checksum, chained from the previous
/// frame (the header checksum for the first), matches. Scanning stops at the
/// first invalid frame. Only frames up to the last valid commit frame are
/// committed.
///
/// Page *contents* are not retained: a [`Txn`] gives frame offsets and the
/// caller reads the pages. Note that while a transaction is uncommitted SQLite
/// may overwrite one of its frames in place and re-checksum the rest at
/// commit time; the scanner then reports [`ScanStop::ChecksumMismatch`]. A
/// caller that sees a mismatch with pending frames should
/// [`WalScanner::rewind_to_commit`] and re-read from
/// [`WalScanner::committed_offset`] before concluding the tail is garbage.
#[derive(Clone, Debug)]
pub struct WalScanner {
    header: WalHeader,
    /// False if the header page size is invalid or the start offset is not a
    /// frame boundary; `feed` then always reports `InvalidFrame`.
    usable: bool,
    committed_offset: u64,
    committed_checksum: (u32, u32),
    /// Validated frames after the last commit (reused buffer).
    pending: Vec<FrameRef>,
    /// End of the last validated frame = start of the frame being assembled.
    pending_offset: u64,
    /// Checksum after the last validated frame.
    pending_checksum: (u32, u32),
    /// Bytes of the current frame consumed so far (`0..frame_size`).
    filled: usize,
    /// The current frame's header, as far as received.
    frame_header: [u8; FH],
    /// Running checksum of the current frame (valid once its header is
    /// complete).
    stream: ChecksumStream,
    /// Accept frames whose checksum does not match: the replicator's
    /// `SkipFrameChecksum` mutation (replicator/mutation.rs), for the simulator
    /// only. Always false otherwise.
    pub skip_checksum: bool,
}

impl WalScanner {
    /// Start at the first frame (offset 32), chaining from the header
    /// checksum.
    pub fn new(header: WalHeader) -> Self {
        Self::resume(header, WAL_HEADER_SIZE, header.checksum())
    }

    /// Resume after a known committed position: `committed_offset` just past
    /// a commit frame (or 32 for the start), `checksum` the cumulative
    /// checksum there (e.g. from [`Txn::checksum`]). If `committed_offset` is
    /// not a frame boundary of `header`, or `header.page_size` is invalid,
    /// every `feed` returns [`ScanStop::InvalidFrame`] at that offset.
    pub fn resume(header: WalHeader, committed_offset: u64, checksum: (u32, u32)) -> Self {
        let usable =
            is_valid_page_size(header.page_size) && header.frame_index(committed_offset).is_some();
        WalScanner {
            header,
            usable,
            committed_offset,
            committed_checksum: checksum,
            pending: Vec::new(),
            pending_offset: committed_offset,
            pending_checksum: checksum,
            skip_checksum: false,
            filled: 0,
            frame_header: [0; FH],
            stream: ChecksumStream::default(),
        }
    }

    /// The header of the generation being scanned.
    pub fn header(&self) -> &WalHeader {
        &self.header
    }

    /// Offset just past the last commit frame seen (32 if none).
    pub fn committed_offset(&self) -> u64 {
        self.committed_offset
    }

    /// Cumulative checksum at [`WalScanner::committed_offset`].
    pub fn committed_checksum(&self) -> (u32, u32) {
        self.committed_checksum
    }

    /// Where the next byte fed must start: past the pending uncommitted frames
    /// and past the bytes of a partially received frame.
    pub fn next_offset(&self) -> u64 {
        self.pending_offset.saturating_add(self.filled as u64)
    }

    /// Validated frames after the last commit frame, in WAL order.
    pub fn pending_frames(&self) -> &[FrameRef] {
        &self.pending
    }

    /// Capacity of the reused pending-frame buffer (allocation tests).
    #[cfg(test)]
    pub(crate) fn pending_capacity(&self) -> usize {
        self.pending.capacity()
    }

    /// Feed bytes that start exactly at [`WalScanner::next_offset`] (the caller
    /// guarantees this; the scanner cannot detect misplaced bytes other than
    /// through checksum failures). Calls `on_txn` for each complete committed
    /// transaction, in order. Stops at the first invalid frame or when the
    /// data runs out; bytes after the stopping point are ignored.
    ///
    /// Empty `data` returns [`ScanStop::NeedMore`] (or `InvalidFrame` for an
    /// unusable scanner). Does not allocate except to grow the reused pending
    /// frame list beyond its previous maximum.
    pub fn feed(&mut self, data: &[u8], on_txn: &mut dyn FnMut(&Txn<'_>)) -> ScanStop {
        if !self.usable {
            return ScanStop::InvalidFrame {
                offset: self.next_offset(),
            };
        }
        let page_size = self.header.page_size as usize;
        let mut rest = data;
        loop {
            // 1. Frame header.
            if self.filled < FH {
                let take = (FH - self.filled).min(rest.len());
                let (head, tail) = rest.split_at(take);
                if let Some(dst) = self.frame_header.get_mut(self.filled..self.filled + take) {
                    dst.copy_from_slice(head);
                }
                self.filled += take;
                rest = tail;
                if self.filled < FH {
                    return ScanStop::NeedMore;
                }
                if let Some(stop) = self.check_frame_header() {
                    return stop;
                }
            }
            // 2. Page data.
            let remaining = (FH + page_size).saturating_sub(self.filled);
            if remaining > 0 {
                let take = remaining.min(rest.len());
                let (chunk, tail) = rest.split_at(take);
                self.stream.update(chunk);
                self.filled += take;
                rest = tail;
                if take < remaining {
                    return ScanStop::NeedMore;
                }
            }
            // 3. Complete frame.
            if let Some(stop) = self.finish_frame(on_txn) {
                return stop;
            }
        }
    }

    /// Drop pending uncommitted frames and any partial frame;
    /// [`WalScanner::next_offset`] returns to [`WalScanner::committed_offset`].
    pub fn rewind_to_commit(&mut self) {
        self.pending.clear();
        self.pending_offset = self.committed_offset;
        self.pending_checksum = self.committed_checksum;
        self.filled = 0;
    }

    /// Validate a complete frame header (salts, pgno) and start its checksum.
    fn check_frame_header(&mut self) -> Option<ScanStop> {
        let (pgno, _commit, salt1, salt2, _, _) = decode_frame_header(&self.frame_header);
        let offset = self.pending_offset;
        if salt1 != self.header.salt1 || salt2 != self.header.salt2 {
            self.filled = 0;
            return Some(ScanStop::SaltMismatch { offset });
        }
        if pgno == 0 {
            self.filled = 0;
            return Some(ScanStop::InvalidFrame { offset });
        }
        let be = self.header.big_endian_checksums;
        let (s1, s2) = self.pending_checksum;
        // The checksum covers the first 8 header bytes (pgno, commit).
        let seed = wal_checksum(be, &self.frame_header[..8], s1, s2);
        self.stream = ChecksumStream::start(be, seed);
        None
    }

    /// Verify a fully received frame's checksum; record it, and report the
    /// transaction if it is a commit frame.
    fn finish_frame(&mut self, on_txn: &mut dyn FnMut(&Txn<'_>)) -> Option<ScanStop> {
        let (pgno, commit, _, _, c1, c2) = decode_frame_header(&self.frame_header);
        let offset = self.pending_offset;
        self.filled = 0;
        let sum = self.stream.sum();
        if sum != (c1, c2) && !self.skip_checksum {
            return Some(ScanStop::ChecksumMismatch { offset });
        }
        self.pending.push(FrameRef { offset, pgno });
        self.pending_offset = offset.saturating_add(self.header.frame_size());
        self.pending_checksum = sum;
        if commit != 0 {
            self.committed_offset = self.pending_offset;
            self.committed_checksum = sum;
            on_txn(&Txn {
                frames: &self.pending,
                commit,
                end_offset: self.pending_offset,
                checksum: sum,
            });
            self.pending.clear();
        }
        None
    }
}

/// Decode a frame header: (pgno, commit, salt1, salt2, checksum1, checksum2).
pub(crate) fn decode_frame_header(h: &[u8; FH]) -> (u32, u32, u32, u32, u32, u32) {
    let mut w = [0u32; 6];
    for (dst, bytes) in w.iter_mut().zip(h.chunks_exact(4)) {
        if let Some(b) = bytes.first_chunk::<4>() {
            *dst = u32::from_be_bytes(*b);
        }
    }
    let [pgno, commit, salt1, salt2, c1, c2] = w;
    (pgno, commit, salt1, salt2, c1, c2)
}
