//! The upload window: sending files and checks in TXID order, taking in their
//! outcomes (retries with backoff, ambiguous outcomes resolved by content), and
//! advancing durability over the contiguous prefix.

use super::*;

impl Replicator {
    /// Sends what is due, oldest first, within the window.
    pub(super) fn dispatch(&mut self) {
        if !matches!(self.phase, Phase::Streaming | Phase::Scanning) {
            return;
        }
        let window = self.cfg.max_in_flight.max(1);
        let mut outstanding = self.outstanding();
        let now = self.now.mono_ms;
        let mut cmds = Vec::new();
        // Mutation: the window is not respected.
        let window = if self.mutated(M::IgnoreWindow) {
            usize::MAX
        } else {
            window
        };
        for e in self.queue.iter_mut() {
            if outstanding >= window {
                break;
            }
            match e.state {
                State::Ready { not_before } if not_before <= now => {
                    e.state = State::InFlight;
                    e.attempt += 1;
                    cmds.push(Command::Upload {
                        file: e.file,
                        spec: Arc::clone(&e.spec),
                        attempt: e.attempt,
                    });
                    outstanding += 1;
                }
                State::NeedsCheck { not_before } if not_before <= now => {
                    e.state = State::Checking;
                    e.check_attempt += 1;
                    cmds.push(Command::CheckUpload {
                        file: e.file,
                        spec: Arc::clone(&e.spec),
                        attempt: e.check_attempt,
                    });
                    outstanding += 1;
                }
                _ => {}
            }
        }
        self.out.extend(cmds);
    }

    pub(super) fn on_upload_done(&mut self, file: FileId, attempt: u32, result: UploadResult) {
        let now = self.now.mono_ms;
        if self.orphans.remove(&file) {
            return; // Its slot in the window is free again; the file itself was replaced.
        }
        let panic_unknown = self.mutated(M::PanicOnUnknownCompletion);
        let accept_any = self.mutated(M::AcceptAnyCompletion);
        let (drop_failed, never_retry) = (
            self.mutated(M::DropFailedUpload),
            self.mutated(M::NeverRetry),
        );
        let Some(e) = self.queue.get_mut(file) else {
            // Mutation: an `expect` on the lookup.
            assert!(!panic_unknown, "upload completion for {file}, not queued");
            return;
        };
        if (e.state != State::InFlight || e.attempt != attempt) && !accept_any {
            return; // A duplicate or late completion changes nothing.
        }
        match result {
            UploadResult::Stored => e.state = State::Stored,
            // Mutation: a failed upload is forgotten as if stored.
            UploadResult::Transient(_) | UploadResult::Permanent(_) if drop_failed => {
                e.state = State::Stored;
            }
            // Mutation: a failed upload is never sent again.
            UploadResult::Transient(_) | UploadResult::Permanent(_) if never_retry => {}
            UploadResult::AlreadyExists | UploadResult::Unknown(_) => {
                e.state = State::NeedsCheck { not_before: now };
            }
            UploadResult::Transient(err) | UploadResult::Permanent(err) => {
                let attempt = e.attempt;
                let delay = self.retry_delay(attempt);
                if let Some(e) = self.queue.get_mut(file) {
                    e.state = State::Ready {
                        not_before: now + delay,
                    };
                }
                self.emit(Event::UploadRetry {
                    file,
                    attempt,
                    delay_ms: delay,
                    error: err,
                });
            }
            UploadResult::SourceChanged(_) => {
                let min = file.min_txid;
                for dropped in self.queue.drain_from(min) {
                    if dropped.file != file
                        && matches!(dropped.state, State::InFlight | State::Checking)
                    {
                        self.orphans.insert(dropped.file);
                    }
                    self.out.push_back(Command::Forget { file: dropped.file });
                }
                self.follow.forget_generation();
                self.follow.clear_batch();
                self.chain_next = min;
                self.need_snapshot = Some((SnapshotReason::SourceChanged, min));
                // The full file needs a fresh read, even after the final read of a
                // shutdown (otherwise the shutdown waits forever for it).
                self.final_read_done = false;
                self.start_read();
            }
        }
        self.advance_durable();
    }

    pub(super) fn on_check_done(&mut self, file: FileId, attempt: u32, result: CheckResult) {
        let now = self.now.mono_ms;
        if self.orphans.remove(&file) {
            return;
        }
        let panic_unknown = self.mutated(M::PanicOnUnknownCompletion);
        let accept_any = self.mutated(M::AcceptAnyCompletion);
        let absent_stored = self.mutated(M::CheckAbsentAsStored);
        let Some(e) = self.queue.get_mut(file) else {
            // Mutation: an `expect` on the lookup.
            assert!(!panic_unknown, "check completion for {file}, not queued");
            return;
        };
        if (e.state != State::Checking || e.check_attempt != attempt) && !accept_any {
            return;
        }
        match result {
            CheckResult::Matches => e.state = State::Stored,
            // Mutation: nothing there is taken as stored.
            CheckResult::Absent if absent_stored => e.state = State::Stored,
            CheckResult::Absent => {
                let attempt = e.attempt;
                let delay = self.retry_delay(attempt);
                if let Some(e) = self.queue.get_mut(file) {
                    e.state = State::Ready {
                        not_before: now + delay,
                    };
                }
            }
            CheckResult::Failed(err) => {
                let attempt = e.check_attempt;
                let delay = self.retry_delay(attempt);
                if let Some(e) = self.queue.get_mut(file) {
                    e.state = State::NeedsCheck {
                        not_before: now + delay,
                    };
                }
                self.emit(Event::UploadRetry {
                    file,
                    attempt,
                    delay_ms: delay,
                    error: err,
                });
            }
            CheckResult::Differs => {
                self.halt(format!(
                    "another writer stored different contents under {file}: this database has two \
                     replicators writing one chain. Stop the other one (or use a different replica URL), \
                     then restart walvault"
                ));
                return;
            }
        }
        self.advance_durable();
    }

    /// How long a file waits before the next attempt after its `attempt`-th failure.
    fn retry_delay(&mut self, attempt: u32) -> u64 {
        if self.mutated(M::RetryWithoutBackoff) {
            return 0; // Mutation: no backoff.
        }
        self.backoff.delay(attempt)
    }

    pub(super) fn advance_durable(&mut self) {
        let done = if self.mutated(M::DurablePastHole) {
            // Mutation: every stored file counts, even past one still missing.
            self.queue.pop_stored()
        } else {
            self.queue.pop_durable()
        };
        let Some(last) = done.last() else { return };
        self.durable = last.position;
        for e in &done {
            self.out.push_back(Command::Forget { file: e.file });
        }
        // Mutation: the newest file cut is persisted as if durable.
        let persisted = if self.mutated(M::PersistNewestCut) {
            self.queue
                .iter_mut()
                .last()
                .map_or(self.durable, |e| e.position)
        } else {
            self.durable
        };
        self.out.push_back(Command::Persist(persisted));
        self.emit(Event::Durable {
            txid: self.durable.txid,
        });
        // A slot opened: cut what accumulated meanwhile (after a fresh read).
        if (!self.follow.batch.is_empty() || self.need_snapshot.is_some())
            && self.phase == Phase::Streaming
        {
            if self.final_read_done {
                // Shutting down: cut what the final read left behind, read nothing new.
                if self.reading.is_none() {
                    self.on_read_end();
                }
            } else {
                self.start_read();
            }
        } else {
            // Everything read is durable: the moment a checkpoint is safe.
            self.maybe_checkpoint();
            self.maybe_run_checkpoint();
        }
    }
}
