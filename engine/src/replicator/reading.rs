//! Following the WAL from the engine's side: asking for reads, taking in what they
//! return, noticing a changed WAL generation, and the start-up scan that finds where
//! to resume.

use super::*;

impl Replicator {
    pub(super) fn start_read(&mut self) {
        let ckpt_busy = matches!(self.ckpt, Ckpt::Locking(_) | Ckpt::Running { .. });
        if self.reading.is_none() && !ckpt_busy && !self.final_read_done {
            let off = self.follow.next_offset();
            self.read_at(off);
        }
    }

    /// How many bytes a read at `offset` asks for.
    pub(super) fn read_len(&self, offset: u64) -> u64 {
        let max_len = self.cfg.read_chunk_bytes.max(1);
        if let Some(len) = self.read_grow {
            return len.min(max_len);
        }
        match self.follow.generation.as_ref() {
            // A reused WAL file keeps old frames after the live ones: peek at one frame
            // instead of re-reading megabytes of stale bytes on every tick. If it became
            // valid, the read comes back full and the rest follows at once.
            Some(g) if self.follow.stale_at == Some(offset) => max_len.min(g.header.frame_size()),
            _ => max_len,
        }
    }

    pub(super) fn read_at(&mut self, offset: u64) {
        let max_len = self.read_len(offset);
        self.reading = Some((offset, max_len));
        self.out.push_back(Command::ReadWal { offset, max_len });
    }

    pub(super) fn on_wal_read(
        &mut self,
        header: Option<&[u8]>,
        file_len: u64,
        db_len: u64,
        offset: u64,
        data: &[u8],
    ) {
        let Some((want, max_len)) = self.reading else {
            return;
        };
        if want != offset {
            return;
        }
        self.reading = None;
        self.db_len = db_len;
        self.quiet.read_len = file_len;
        self.quiet.read_at_ms = self.now.mono_ms;
        self.quiet.changed_since_read = false;
        // On a first read, adopt whatever generation is there and scan it from the start.
        let chunk_full = data.len() as u64 >= max_len;
        let (mut offset, mut data) = (offset, data);
        if self.follow.generation.is_none()
            && offset == 0
            && (self.phase == Phase::Scanning || self.need_snapshot.is_some())
            && let Some(h) = header.and_then(|b| WalHeader::parse(b).ok())
        {
            self.follow.adopt(h);
            self.follow.clear_batch();
            let skip = data.len().min(WAL_HEADER_SIZE as usize);
            (offset, data) = (WAL_HEADER_SIZE, &data[skip..]);
        }
        let before = self.follow.committed_offset();
        let broken = Broken {
            keep_first_frame: self.mutated(M::StaleFrameIndex),
            skip_frame_checksum: self.mutated(M::SkipFrameChecksum),
        };
        match self
            .follow
            .on_read(header, file_len, offset, data, chunk_full, broken)
        {
            ReadOutcome::More(next) => {
                self.note_growth(before);
                // A full short read (a peek past the live frames of a reused WAL) is
                // followed by reads twice as long: what is read stays within about twice
                // what is new, instead of a whole chunk of stale frames per look.
                let cap = self.cfg.read_chunk_bytes.max(1);
                self.read_grow = (max_len < cap).then(|| max_len.saturating_mul(2).min(cap));
                self.read_at(next)
            }
            ReadOutcome::End => {
                self.read_grow = None;
                self.note_growth(before);
                self.on_read_end()
            }
            ReadOutcome::Changed { change, new_header } => {
                self.read_grow = None;
                self.on_wal_changed(change, new_header)
            }
        }
    }

    /// Growth of the old generation after our checkpoint means a later restart could
    /// drop frames we never saw: stop trusting the checkpoint's promise.
    pub(super) fn note_growth(&mut self, before: u64) {
        if self.follow.committed_offset() > before {
            self.restart_expected = None;
            self.note_new_commits();
        }
    }

    pub(super) fn on_wal_changed(&mut self, change: WalChange, new_header: Option<WalHeader>) {
        if self.phase == Phase::Scanning {
            match new_header {
                Some(h) => {
                    self.follow.adopt(h);
                    self.follow.clear_batch();
                    self.read_at(WAL_HEADER_SIZE);
                }
                None => {
                    self.follow.forget_generation();
                    self.on_read_end();
                }
            }
            return;
        }
        let skip_salts = self.mutated(M::SkipSaltCheck);
        let continues = match (change, new_header, self.restart_expected) {
            // Mutation: any restart is taken as a continuation.
            (WalChange::Reset, Some(_), _) if skip_salts => true,
            // A restart increments salt-1 in the shared WAL index, so exactly one restart
            // since our checkpoint shows as salt-1 + 1. (The checkpoint sequence is kept
            // per connection and is not reliable.) The read that follows every checkpoint
            // happens under our new read mark, so no second restart can hide in between
            // unnoticed, and growth of the old generation clears `restart_expected`.
            (WalChange::Reset, Some(new), Some(old)) => {
                new.salt1 == old.salt1.wrapping_add(1)
                    && new.page_size == old.page_size
                    && self.follow.batch.is_empty()
            }
            _ => false,
        };
        self.restart_expected = None;
        self.emit(Event::WalChanged { change, continues });
        match new_header {
            Some(h) => self.follow.adopt(h),
            None => self.follow.forget_generation(),
        }
        self.follow.clear_batch();
        if !continues && self.need_snapshot.is_none() {
            self.need_snapshot = Some((SnapshotReason::WalReset, self.chain_next));
        }
        if new_header.is_some() {
            self.read_at(WAL_HEADER_SIZE);
        } else {
            self.on_read_end();
        }
    }

    pub(super) fn on_read_end(&mut self) {
        let may_cut = self.end_of_chain_may_cut();
        if self.phase == Phase::Scanning {
            self.finish_scan();
        }
        if self.shutdown {
            // The read that reached the end after the shutdown request is the last one.
            self.final_read_done = true;
        }
        if self.phase != Phase::Streaming {
            return;
        }
        if let Some((reason, min_txid)) = self.need_snapshot {
            if self.has_room() {
                self.cut_full(reason, min_txid);
                self.note_cut();
            }
        } else if !self.follow.batch.is_empty() && self.has_room() && may_cut {
            self.cut_incremental();
            self.note_cut();
        }
        self.maybe_checkpoint();
        self.maybe_run_checkpoint();
        self.schedule_look();
    }

    pub(super) fn finish_scan(&mut self) {
        self.phase = Phase::Streaming;
        let resume = self.resume.take();
        let found = self.follow.resume_found.take();
        self.follow.resume_at = None;
        if self.remote_empty {
            self.follow.clear_batch();
            self.need_snapshot = Some((SnapshotReason::Initial, 1));
            return;
        }
        let generation = self.follow.generation.as_ref();
        let same_gen = |r: &ResumePoint| {
            generation.is_some_and(|g| g.header.salt1 == r.salt1 && g.header.salt2 == r.salt2)
        };
        if self.mutated(M::SkipSaltCheck)
            && let Some(r) = resume.as_ref()
            && generation.is_some()
        {
            // Mutation: resume whatever generation the WAL is in now; what the scan
            // collected past the resume offset (or all of it) is shipped as the next file.
            self.shipped_commit = found.unwrap_or(r.commit);
            self.emit(Event::Resumed {
                txid: self.durable.txid,
                wal_end: r.wal_end,
            });
            return;
        }
        match resume {
            Some(r) if same_gen(&r) && (found.is_some() || r.wal_end == WAL_HEADER_SIZE) => {
                self.shipped_commit = found.unwrap_or(r.commit);
                self.emit(Event::Resumed {
                    txid: self.durable.txid,
                    wal_end: r.wal_end,
                });
            }
            _ => {
                self.follow.clear_batch();
                self.need_snapshot = Some((SnapshotReason::NoResumePoint, self.full_from));
            }
        }
    }
}
