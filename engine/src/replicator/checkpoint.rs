//! Checkpoints: started only when everything read is durable, run with writers
//! blocked after the WAL's tail is shipped, abandoned if that takes too long, and the
//! bookkeeping that lets our own WAL restart continue the chain.

use super::*;

impl Replicator {
    /// Starts a checkpoint when the WAL is long enough and everything read is durable.
    pub(super) fn maybe_checkpoint(&mut self) {
        // Mutation: do not wait until everything read is durable.
        let early = self.mutated(M::CheckpointBeforeDurable);
        if self.shutdown
            || self.phase != Phase::Streaming
            || self.reading.is_some()
            || self.ckpt != Ckpt::Idle
            || self.now.mono_ms < self.ckpt_not_before
            || (!self.queue.is_empty() && !early)
            || (!self.follow.batch.is_empty() && !early)
            || self.need_snapshot.is_some()
            || self.mutated(M::NeverCheckpoint)
        {
            return;
        }
        let Some(mode) = self.checkpoint_due() else {
            return;
        };
        self.ckpt = Ckpt::Locking(mode);
        self.out.push_back(Command::LockWriters);
    }

    /// The checkpoint the WAL's length calls for, if any.
    pub(super) fn checkpoint_due(&self) -> Option<CheckpointMode> {
        let g = self.follow.generation.as_ref()?;
        let end = g.scanner.committed_offset();
        let frames = self.wal_frames();
        if end >= self.cfg.truncate_bytes {
            Some(CheckpointMode::Truncate)
        } else if frames >= self.cfg.checkpoint_frames {
            Some(CheckpointMode::Passive)
        } else {
            None
        }
    }

    pub(super) fn on_writers_locked(&mut self, ok: bool) {
        let Ckpt::Locking(mode) = self.ckpt else {
            if ok {
                // Not expecting it (shutdown meanwhile): let writers go at once.
                self.out.push_back(Command::UnlockWriters);
            }
            return;
        };
        if !ok || self.shutdown {
            if ok {
                self.out.push_back(Command::UnlockWriters);
            }
            self.ckpt = Ckpt::Idle;
            self.ckpt_not_before = self.now.mono_ms + 10 * self.cfg.sync_interval_ms;
            self.emit(Event::CheckpointDone {
                mode,
                busy: true,
                shipped_frames: 0,
                log_frames: -1,
                restart_expected: false,
            });
            return;
        }
        self.ckpt = Ckpt::Locked {
            mode,
            deadline: self.now.mono_ms + self.cfg.checkpoint_lock_ms,
        };
        // Writers are blocked: whatever the WAL holds now is all there is. Read it.
        let off = self.follow.next_offset();
        self.read_at(off);
    }

    /// With writers blocked and every frame read and durable, run the checkpoint.
    pub(super) fn maybe_run_checkpoint(&mut self) {
        let Ckpt::Locked { mode, .. } = self.ckpt else {
            return;
        };
        let early = self.mutated(M::CheckpointBeforeDurable);
        if self.reading.is_some()
            || (!self.queue.is_empty() && !early)
            || (!self.follow.batch.is_empty() && !early)
            || self.need_snapshot.is_some()
        {
            return;
        }
        let Some(g) = self.follow.generation.as_ref() else {
            self.abandon_checkpoint();
            return;
        };
        let frames =
            g.scanner.committed_offset().saturating_sub(WAL_HEADER_SIZE) / g.header.frame_size();
        self.ckpt = Ckpt::Running {
            mode,
            frames,
            header: g.header,
        };
        self.out.push_back(Command::Checkpoint { mode });
    }

    pub(super) fn abandon_checkpoint(&mut self) {
        if matches!(self.ckpt, Ckpt::Locked { .. }) {
            self.out.push_back(Command::UnlockWriters);
        }
        self.ckpt = Ckpt::Idle;
        self.ckpt_not_before = self.now.mono_ms + 10 * self.cfg.sync_interval_ms;
    }

    pub(super) fn on_checkpoint_done(
        &mut self,
        mode: CheckpointMode,
        result: Result<CheckpointResult, String>,
    ) {
        let Ckpt::Running {
            mode: want,
            frames,
            header,
        } = self.ckpt
        else {
            return;
        };
        if want != mode {
            return;
        }
        self.ckpt = Ckpt::Idle;
        match result {
            Ok(r) => {
                let complete =
                    !r.busy && r.log_frames >= 0 && r.log_frames == r.checkpointed_frames;
                match mode {
                    CheckpointMode::Passive => {
                        self.restart_expected = (complete
                            && u64::try_from(r.log_frames).ok() == Some(frames))
                        .then_some(header);
                    }
                    CheckpointMode::Truncate if !r.busy => {
                        // Frames written between letting writers go and the truncation
                        // were folded into the database unseen: only a full file is safe.
                        self.follow.forget_generation();
                        self.follow.clear_batch();
                        self.need_snapshot = Some((SnapshotReason::AfterTruncate, self.chain_next));
                    }
                    CheckpointMode::Truncate => {}
                }
                self.emit(Event::CheckpointDone {
                    mode,
                    busy: r.busy,
                    shipped_frames: frames,
                    log_frames: r.log_frames,
                    restart_expected: self.restart_expected.is_some(),
                });
            }
            Err(error) => self.emit(Event::CheckpointFailed { error }),
        }
        if self.restart_expected.is_none() && self.need_snapshot.is_none() {
            // Busy, partial or failed (a reader pins the WAL, say): trying again at once
            // would only add a `_walvault_seq` transaction per attempt. Wait a while.
            self.ckpt_not_before = self.now.mono_ms + 10 * self.cfg.sync_interval_ms;
        }
        self.start_read();
    }
}
