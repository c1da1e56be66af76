//! Turning what was read into files: incremental level-0 files (growth pages
//! included), full-database files, level-9 snapshots, and their place in the queue.

use super::*;

impl Replicator {
    pub(super) fn has_room(&self) -> bool {
        matches!(self.ckpt, Ckpt::Locked { .. })
            || self.queue.len() < self.cfg.max_in_flight.max(1) * 4
    }

    /// The TXID range of the next file: from one past the last file cut to the next
    /// unused TXID (a single TXID unless TXIDs were skipped).
    pub(super) fn take_range(&mut self) -> (u64, u64) {
        let max = self.next_txid;
        let min = self.chain_next.min(max);
        self.next_txid += 1;
        self.chain_next = self.next_txid;
        (min, max)
    }

    pub(super) fn base_header(&self, commit: u32, min_txid: u64, max_txid: u64) -> Header {
        Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: self.page_size,
            commit,
            min_txid,
            max_txid,
            timestamp_ms: self.now.wall_ms,
            node_id: self.cfg.node_id,
            ..Header::default()
        }
    }

    pub(super) fn cut_incremental(&mut self) {
        let Some(generation) = self.follow.generation.as_ref() else {
            return;
        };
        if generation.header.page_size != self.page_size {
            self.halt(format!(
                "WAL page size {} differs from the database page size {}",
                generation.header.page_size, self.page_size
            ));
            return;
        }
        let (salt1, salt2) = (generation.header.salt1, generation.header.salt2);
        let lock = ltx::lock_pgno(self.page_size);
        let batch = self.follow.take_batch();
        let commit = batch.commit;
        let mut pages: Vec<(u32, PageSource)> = Vec::with_capacity(batch.pages.len());
        let mut growth = self.shipped_commit.saturating_add(1);
        let generation = self.follow.generation.as_ref();
        let push_growth_until =
            |pages: &mut Vec<(u32, PageSource)>, until: u32, growth: &mut u32| {
                // Pages the database grew by but this batch did not write: the newest
                // version SQLite would read (an earlier frame, else the database file).
                while *growth < until && *growth <= commit {
                    if *growth != lock {
                        let src = generation
                            .and_then(|g| g.index.get(growth).copied())
                            .map_or(PageSource::Db, PageSource::Wal);
                        pages.push((*growth, src));
                    }
                    *growth += 1;
                }
            };
        for (&pgno, &off) in batch.pages.range(1..=commit) {
            if pgno == lock {
                continue;
            }
            push_growth_until(&mut pages, pgno, &mut growth);
            pages.push((pgno, PageSource::Wal(off)));
            if pgno >= growth {
                growth = pgno + 1;
            }
        }
        push_growth_until(&mut pages, commit.saturating_add(1), &mut growth);
        let (min_txid, txid) = self.take_range();
        let mut header = self.base_header(commit, min_txid, txid);
        header.wal_offset = batch.start;
        header.wal_size = batch.end - batch.start;
        header.wal_salt1 = salt1;
        header.wal_salt2 = salt2;
        let spec = FileSpec {
            header,
            pages: PageSet::List(pages),
            prev_commit: Some(self.shipped_commit),
        };
        let position = Position {
            txid,
            salt1,
            salt2,
            wal_end: batch.end,
            commit,
        };
        self.shipped_commit = commit;
        let file = FileId {
            level: 0,
            min_txid,
            max_txid: txid,
        };
        self.emit(Event::FileCut {
            file,
            pages: spec.page_count(),
            txns: batch.txns,
        });
        self.enqueue(file, spec, position);
    }

    pub(super) fn cut_full(&mut self, reason: SnapshotReason, min_txid: u64) {
        let generation = self.follow.generation.as_ref();
        let commit = match generation.map(|g| g.commit).filter(|&c| c > 0) {
            Some(c) => c,
            None => u32::try_from(self.db_len / u64::from(self.page_size)).unwrap_or(u32::MAX),
        };
        if commit == 0 {
            return; // Nothing to snapshot yet; try again next tick.
        }
        if let Some(g) = generation
            && g.header.page_size != self.page_size
        {
            let msg = format!(
                "WAL page size {} differs from the database page size {}",
                g.header.page_size, self.page_size
            );
            self.halt(msg);
            return;
        }
        let overlay: Vec<(u32, u64)> = generation
            .map(|g| g.index.range(1..=commit).map(|(&p, &o)| (p, o)).collect())
            .unwrap_or_default();
        let (salt1, salt2, wal_end) = generation
            .map(|g| (g.header.salt1, g.header.salt2, g.scanner.committed_offset()))
            .unwrap_or((0, 0, 0));
        let (next_min, txid) = self.take_range();
        let min_txid = min_txid.min(next_min);
        let mut header = self.base_header(commit, min_txid, txid);
        if wal_end >= WAL_HEADER_SIZE {
            header.wal_offset = WAL_HEADER_SIZE;
            header.wal_size = wal_end - WAL_HEADER_SIZE;
            header.wal_salt1 = salt1;
            header.wal_salt2 = salt2;
        }
        let spec = FileSpec {
            header,
            pages: PageSet::Full { overlay },
            prev_commit: None,
        };
        let position = Position {
            txid,
            salt1,
            salt2,
            wal_end,
            commit,
        };
        self.follow.clear_batch();
        self.shipped_commit = commit;
        self.need_snapshot = None;
        let file = FileId {
            level: 0,
            min_txid,
            max_txid: txid,
        };
        self.emit(Event::SnapshotStarted {
            txid,
            reason,
            pages: commit,
        });
        self.emit(Event::FileCut {
            file,
            pages: spec.page_count(),
            txns: 0,
        });
        self.enqueue(file, spec, position);
    }

    /// A level-9 snapshot (TXIDs 1..=durable) of the state everything durable reaches.
    /// Only valid when nothing is pending, so the page index is exactly that state.
    pub(super) fn cut_snapshot_level(&mut self) -> bool {
        let txid = self.durable.txid;
        let g = self.follow.generation.as_ref();
        let end = g.map_or(0, |g| g.scanner.committed_offset());
        if txid == 0 || self.shipped_commit == 0 || end != self.durable.wal_end {
            return false;
        }
        let commit = self.shipped_commit;
        let overlay: Vec<(u32, u64)> = g
            .map(|g| g.index.range(1..=commit).map(|(&p, &o)| (p, o)).collect())
            .unwrap_or_default();
        let mut header = self.base_header(commit, 1, txid);
        if let Some(g) = g
            && end >= WAL_HEADER_SIZE
        {
            header.wal_offset = WAL_HEADER_SIZE;
            header.wal_size = end - WAL_HEADER_SIZE;
            header.wal_salt1 = g.header.salt1;
            header.wal_salt2 = g.header.salt2;
        }
        let spec = FileSpec {
            header,
            pages: PageSet::Full { overlay },
            prev_commit: None,
        };
        let file = FileId {
            level: crate::keys::SNAPSHOT_LEVEL,
            min_txid: 1,
            max_txid: txid,
        };
        self.emit(Event::FileCut {
            file,
            pages: spec.page_count(),
            txns: 0,
        });
        let position = self.durable;
        self.enqueue(file, spec, position);
        true
    }

    pub(super) fn enqueue(&mut self, file: FileId, spec: FileSpec, position: Position) {
        self.queue.push(Entry {
            file,
            spec: Arc::new(spec),
            position,
            attempt: 0,
            check_attempt: 0,
            state: State::Ready {
                not_before: self.now.mono_ms,
            },
        });
    }
}
