//! Following the WAL: validates what the caller read, keeps the committed-page index
//! of the current WAL generation and the batch of changes not yet cut into a file.
//!
//! Holds page *locations* only (page number → frame offset), never page contents.

use std::collections::BTreeMap;

use crate::wal::{ScanStop, WalChange, WalHeader, WalScanner, classify_change};

/// Changes committed since the last file was cut.
#[derive(Debug, Default)]
pub struct Batch {
    /// Newest frame of each page changed in the batch.
    pub pages: BTreeMap<u32, u64>,
    /// Database size in pages after the batch's last transaction.
    pub commit: u32,
    /// WAL offset of the batch's first frame, and just past its last commit frame.
    pub start: u64,
    pub end: u64,
    pub txns: u64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.txns == 0
    }
}

/// One WAL generation being followed.
pub struct Generation {
    pub header: WalHeader,
    pub scanner: WalScanner,
    /// Newest committed frame of every page in this generation.
    pub index: BTreeMap<u32, u64>,
    /// Database size after the last committed transaction (0: none yet).
    pub commit: u32,
}

/// What a WAL read told the follower.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// More data may follow at this offset right away (the chunk was full).
    More(u64),
    /// Reached the end of the valid, committed WAL.
    End,
    /// The generation the follower was on is gone.
    Changed {
        change: WalChange,
        new_header: Option<WalHeader>,
    },
}

/// Deliberately broken following (the replicator's mutations, mutation.rs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Broken {
    /// `StaleFrameIndex`: the page index keeps each page's first frame, not its newest.
    pub keep_first_frame: bool,
    /// `SkipFrameChecksum`: frames are accepted whatever their checksum.
    pub skip_frame_checksum: bool,
}

#[derive(Default)]
pub struct Follower {
    pub generation: Option<Generation>,
    pub batch: Batch,
    /// When set, the scan clears the batch at this WAL end offset (resume point) and
    /// records that it was found.
    pub resume_at: Option<u64>,
    pub resume_found: Option<u32>,
    /// The valid prefix ended at this offset on stale or torn bytes (not at end of file).
    pub stale_at: Option<u64>,
}

impl Follower {
    /// The offset the next read should start at (0 when no generation is known).
    pub fn next_offset(&self) -> u64 {
        self.generation
            .as_ref()
            .map_or(0, |g| g.scanner.next_offset())
    }

    pub fn committed_offset(&self) -> u64 {
        self.generation
            .as_ref()
            .map_or(0, |g| g.scanner.committed_offset())
    }

    /// Starts following a fresh generation whose header was just read.
    pub fn adopt(&mut self, header: WalHeader) {
        self.stale_at = None;
        self.generation = Some(Generation {
            header,
            scanner: WalScanner::new(header),
            index: BTreeMap::new(),
            commit: 0,
        });
    }

    pub fn forget_generation(&mut self) {
        self.stale_at = None;
        self.generation = None;
    }

    /// Takes the batch, leaving an empty one that starts where this one ended.
    pub fn take_batch(&mut self) -> Batch {
        let end = self.batch.end;
        std::mem::replace(
            &mut self.batch,
            Batch {
                start: end,
                end,
                ..Batch::default()
            },
        )
    }

    pub fn clear_batch(&mut self) {
        let end = self.committed_offset();
        self.batch = Batch {
            start: end,
            end,
            ..Batch::default()
        };
    }

    /// Consumes one read. `header` is the WAL's first 32 bytes as read now.
    /// `broken` holds the follower's mutations (mutation.rs; all off in production).
    pub fn on_read(
        &mut self,
        header: Option<&[u8]>,
        file_len: u64,
        offset: u64,
        data: &[u8],
        chunk_full: bool,
        broken: Broken,
    ) -> ReadOutcome {
        let current = header.and_then(|h| WalHeader::parse(h).ok());
        let Some(generation) = self.generation.as_mut() else {
            return match current {
                Some(h) => ReadOutcome::Changed {
                    change: WalChange::Reset,
                    new_header: Some(h),
                },
                None => ReadOutcome::End,
            };
        };
        let change = classify_change(
            &generation.header,
            generation.scanner.committed_offset(),
            current.as_ref(),
            file_len,
        );
        if change != WalChange::Same {
            return ReadOutcome::Changed {
                change,
                new_header: current,
            };
        }
        if offset != generation.scanner.next_offset() {
            // A read for an offset we no longer want (a stale answer): ask again.
            return ReadOutcome::More(generation.scanner.next_offset());
        }
        let batch = &mut self.batch;
        let resume_at = self.resume_at;
        let resume_found = &mut self.resume_found;
        let index = &mut generation.index;
        let commit = &mut generation.commit;
        let keep_first = broken.keep_first_frame;
        generation.scanner.skip_checksum = broken.skip_frame_checksum;
        let stop = generation.scanner.feed(data, &mut |txn| {
            if batch.txns == 0 {
                batch.start = txn.frames.first().map_or(txn.end_offset, |f| f.offset);
            }
            for f in txn.frames {
                if keep_first {
                    index.entry(f.pgno).or_insert(f.offset);
                } else {
                    index.insert(f.pgno, f.offset);
                }
                batch.pages.insert(f.pgno, f.offset);
            }
            *commit = txn.commit;
            batch.commit = txn.commit;
            batch.end = txn.end_offset;
            batch.txns += 1;
            if resume_at == Some(txn.end_offset) {
                *resume_found = Some(txn.commit);
                *batch = Batch {
                    start: txn.end_offset,
                    end: txn.end_offset,
                    ..Batch::default()
                };
            }
        });
        self.stale_at = None;
        match stop {
            ScanStop::NeedMore if chunk_full => ReadOutcome::More(generation.scanner.next_offset()),
            _ => {
                // The end of the valid prefix: an in-progress transaction, leftovers of an
                // older generation, or a torn frame. Re-read uncommitted frames next time.
                generation.scanner.rewind_to_commit();
                if stop != ScanStop::NeedMore
                    && generation.scanner.next_offset() == generation.scanner.committed_offset()
                {
                    // Stale bytes right after the last commit (a reused WAL file): the
                    // next read need only look at one frame to see whether that changed.
                    self.stale_at = Some(generation.scanner.committed_offset());
                }
                ReadOutcome::End
            }
        }
    }
}
