//! The simulated shell: carries out the engine's commands with the semantics of
//! production's cli/src/replicate_task/ and cli/src/database.rs: WAL reads (header,
//! then data), building a file through `spec::materialize_tracked` (a running page
//! checksum table; whole-database files built as the pages that changed) into a
//! staging copy that retries reuse, PUT with If-None-Match, checks that compare the
//! stored bytes, persisted positions; the checkpoint steps are in shell_checkpoint.rs.
//! Between two commands, and between the steps of a checkpoint, the application may
//! run and the process may be killed. The engine's events are checked in shell_events.rs.
//!
//! Mutations (mutation.rs) break this contract on purpose; each is marked here.

use std::sync::Arc;

use walvault_engine::keys::FileId;
use walvault_engine::replicator::{Command, Input, UploadResult};
use walvault_engine::spec::{self, FileSpec};

use crate::checker::key_of;
use crate::coverage::Cov;
use crate::disk::{WriteFault, encode};
use crate::invariant::Inv;
use crate::mutation::Mutation;
use crate::plan::{Fault, Site};
use crate::replica_db::{Pages, read_wal_data, read_wal_head};
use crate::rng::SplitMix;
use crate::store::digest;
use crate::wal_stat;
use crate::world::MAX_INSTANT_COMMANDS;
use crate::world::{Completion, Ev, OpKind, Proc, World};

/// A command's trace record: its code and integer fields (at most 5 in all).
fn command_fields(c: &Command) -> ([u64; 5], usize) {
    let (code, f): (u64, &[u64]) = match c {
        Command::ReadWal { offset, max_len } => (1, &[*offset, *max_len]),
        Command::Upload {
            file,
            spec,
            attempt,
        } => (
            2,
            &[
                file.min_txid,
                file.max_txid,
                u64::from(*attempt),
                spec.page_count(),
            ],
        ),
        Command::CheckUpload { file, .. } => (3, &[file.min_txid, file.max_txid]),
        Command::Forget { file } => (4, &[file.max_txid]),
        Command::LockWriters => (5, &[]),
        Command::UnlockWriters => (6, &[]),
        Command::Checkpoint { mode } => (7, &[*mode as u64]),
        Command::Persist(p) => (
            8,
            &[p.txid, u64::from(p.salt1), p.wal_end, u64::from(p.commit)],
        ),
        Command::Event(_) => (9, &[]),
        Command::Stopped => (10, &[]),
        Command::Halt { .. } => (11, &[]),
        Command::StatWal => (12, &[]),
    };
    let mut out = [0u64; 5];
    out[0] = code;
    out[1..=f.len()].copy_from_slice(f);
    (out, f.len() + 1)
}

/// A command as text (the trace's printed line; hashed only in a crash record).
fn command_text(c: &Command) -> String {
    match c {
        Command::ReadWal { offset, max_len } => format!("ReadWal offset={offset} max={max_len}"),
        Command::Upload {
            file,
            spec,
            attempt,
        } => format!(
            "Upload {file} attempt {attempt} ({} pages)",
            spec.page_count()
        ),
        Command::CheckUpload { file, .. } => format!("CheckUpload {file}"),
        Command::Forget { file } => format!("Forget {file}"),
        Command::LockWriters => "LockWriters".into(),
        Command::UnlockWriters => "UnlockWriters".into(),
        Command::Checkpoint { mode } => format!("Checkpoint {mode:?}"),
        Command::Persist(p) => format!(
            "Persist TXID {} WAL {:08x}@{} commit {}",
            p.txid, p.salt1, p.wal_end, p.commit
        ),
        Command::Event(e) => format!("Event {e:?}"),
        Command::Stopped => "Stopped".into(),
        Command::Halt { reason } => format!("Halt: {reason}"),
        Command::StatWal => "StatWal".into(),
    }
}

impl World {
    /// Carries out the engine's commands until it has none (or the process died).
    pub fn drain(&mut self) {
        loop {
            if self.violation.is_some() {
                return;
            }
            let Proc::Running(r) = &mut self.proc else {
                return;
            };
            let Some(cmd) = r.engine.poll_command() else {
                self.maybe_release();
                return;
            };
            let (at, n) = &mut self.instant_commands;
            if *at != self.now {
                (*at, *n) = (self.now, 0);
            }
            *n += 1;
            if *n > MAX_INSTANT_COMMANDS {
                self.fail(
                    Inv::Liveness,
                    format!(
                        "busy loop: {MAX_INSTANT_COMMANDS} commands at one instant of simulated time, the engine never waits (last: {})",
                        command_text(&cmd)
                    ),
                );
                return;
            }
            r.idle_timer_at = None;
            if let Some(Fault::Kill { down_ms }) = self.decide(Site::Drain) {
                self.cov.hit(Cov::CrashInDrain);
                if matches!(cmd, Command::Persist(_)) {
                    self.cov.hit(Cov::CrashBetweenAckAndPersist);
                }
                let text = command_text(&cmd);
                self.trace
                    .record(self.now, "crash", &[down_ms], text.as_bytes(), || {
                        format!("SIGKILL right before {text}, down for {down_ms}ms")
                    });
                self.kill(down_ms);
                return;
            }
            if let Some(Fault::App { op }) = self.decide(Site::Interleave) {
                self.cov.hit(Cov::Interleaved);
                self.app_op(&op, "interleaved");
                if self.violation.is_some() || !matches!(self.proc, Proc::Running(_)) {
                    return;
                }
            }
            self.commands += 1;
            if self.mutation == Some(Mutation::PanicInShell) && self.commands == 50 {
                panic!("mutation panic-in-shell: the shell panics on its 50th command");
            }
            // The text is built only when the trace is printed.
            let (f, n) = command_fields(&cmd);
            self.trace
                .record(self.now, "command", &f[..n], &[], || command_text(&cmd));
            self.execute(cmd);
        }
    }

    fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::ReadWal { offset, max_len } => self.exec_read_wal(offset, max_len),
            Command::StatWal => self.exec_stat_wal(),
            Command::Upload {
                file,
                spec,
                attempt,
            } => self.exec_upload(file, spec, attempt),
            Command::CheckUpload {
                file,
                spec,
                attempt,
            } => self.exec_check(file, spec, attempt),
            Command::Forget { file } => {
                if let Proc::Running(r) = &mut self.proc {
                    r.staged.remove(&file);
                }
            }
            Command::LockWriters => self.exec_lock_writers(),
            Command::UnlockWriters => {
                self.cov.hit(Cov::CheckpointAbandoned);
                let Proc::Running(r) = &mut self.proc else {
                    return;
                };
                if let Some(Err(e)) = r.db.as_mut().map(|d| d.unlock_writers()) {
                    self.fatal(format!("letting writers go: {e}"));
                }
                self.observe();
            }
            Command::Checkpoint { mode } => self.exec_checkpoint(mode),
            Command::Persist(pos) => self.exec_persist(pos),
            Command::Event(e) => self.on_event(e),
            Command::Stopped => {
                if let Proc::Running(r) = std::mem::replace(&mut self.proc, Proc::Down) {
                    let r = *r;
                    if let Some(mut db) = r.db {
                        let _ = db.release_read_lock();
                        db.close();
                    }
                }
                self.outstanding = 0;
                self.disk.clean_exit();
                self.observe();
                let at = if self.calm {
                    self.now
                } else {
                    self.now + self.pending_down_ms
                };
                self.schedule_restart_pub(at);
            }
            Command::Halt { reason } => {
                self.fail(Inv::Liveness, format!("replication halted: {reason}"));
            }
        }
    }

    /// The task ends with an error (production: the process exits; it is restarted).
    /// A look: the WAL's length, stamp and idle time as production's `stat_wal` reports
    /// them (wal_stat.rs: exact, or under the seed's stat clock).
    fn exec_stat_wal(&mut self) {
        let now = self.now();
        let (len, stamp, idle_ms) = match self.wal.get() {
            None => (0, 0, 0),
            Some(f) => {
                let writes = f.stamp();
                let s = wal_stat::stat(
                    &self.params.stat_clock,
                    now.mono_ms,
                    f.modified_ms(),
                    writes,
                );
                if s.future {
                    self.cov.hit(Cov::StatFuture);
                }
                if let Some((w, st)) = self.last_wal_stat
                    && w != writes
                    && st == s.stamp
                {
                    self.cov.hit(Cov::StatMissedWrite);
                }
                self.last_wal_stat = Some((writes, s.stamp));
                (f.len(), s.stamp, s.idle_ms)
            }
        };
        if let Proc::Running(r) = &mut self.proc {
            r.engine.handle(
                now,
                Input::WalStat {
                    len,
                    stamp,
                    idle_ms,
                },
            );
        }
    }

    pub(crate) fn fatal(&mut self, why: String) {
        self.trace
            .record(self.now, "exit", &[], why.as_bytes(), || {
                format!("task failed: {why}")
            });
        let down = self.crng.range(100, 2_000);
        self.kill(down);
    }

    pub(crate) fn exec_read_wal(&mut self, offset: u64, max_len: u64) {
        let torn = self.decide(Site::WalRead);
        let between = self.decide(Site::Interleave);
        let chunk = read_wal_head(&self.db_file, self.wal.get()).and_then(|mut c| {
            if let Some(Fault::App { op }) = &between {
                self.cov.hit(Cov::Interleaved);
                self.app_op(op, "during WAL read");
            }
            read_wal_data(&mut c, self.wal.get(), offset, max_len).map(|()| c)
        });
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                self.fatal(format!("reading the WAL: {e}"));
                return;
            }
        };
        if self.last_oracle_spill > 0 {
            self.cov.hit(Cov::LongTxnSpill);
        }
        // Only a transaction committed a moment ago can still have been mid-append
        // when the read ran.
        // (Never while the replicator holds the write lock: then no append is running.)
        let locked = matches!(&self.proc, Proc::Running(r) if r.db.as_ref().is_some_and(|d| d.writers_locked()));
        let recent = !locked
            && self.last_app_commit.is_some_and(|(t, state)| {
                self.now.saturating_sub(t) <= 2 && state == self.oracle.current()
            });
        if let Some(Fault::TornRead { cut, garbage }) = torn
            && recent
            && let Some(h) = chunk.header
        {
            // The read caught the newest transaction while it was being appended.
            let s = self.oracle.state(self.oracle.current());
            let salts = (
                u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
                u32::from_be_bytes([h[20], h[21], h[22], h[23]]),
            );
            let lo = offset.max(s.start);
            let hi = s.end.min(offset + chunk.data.len() as u64);
            if salts == (s.salt1, s.salt2) && hi > lo {
                let at = lo + (hi - lo) * u64::from(cut) / 1_000_000;
                let idx = (at - offset) as usize;
                if garbage {
                    let mut g = SplitMix(u64::from(cut));
                    let junk = g.bytes(chunk.data.len() - idx);
                    chunk.data[idx..].copy_from_slice(&junk);
                } else {
                    chunk.data.truncate(idx);
                    chunk.file_len = offset + idx as u64;
                }
                self.cov.hit(Cov::TornWalRead);
                self.trace.record(
                    self.now,
                    "torn-read",
                    &[at, u64::from(garbage)],
                    &[],
                    || {
                        format!(
                            "WAL read torn at offset {at} ({})",
                            if garbage { "stale bytes" } else { "short" }
                        )
                    },
                );
            }
        }
        let now = self.now();
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        let ignore_change = self.mutation == Some(Mutation::ReleaseIgnoresChange);
        if r.db.is_none()
            && !ignore_change
            && !r
                .release
                .decisions
                .unchanged(&walvault_engine::release::ReadSignature::of(
                    offset, max_len, &chunk,
                ))
        {
            // Changed while released: the lock first, then the read again.
            if self.reattach(offset, max_len) {
                self.exec_read_wal(offset, max_len);
            }
            return;
        }
        let mut header = chunk.header;
        if self.mutation == Some(Mutation::SkipSaltCheck)
            && let Some(h) = header
        {
            // Mutation: whatever the WAL's generation now, present the first header.
            header = Some(*r.first_header.get_or_insert(h));
        }
        r.engine.handle(
            now,
            Input::WalRead {
                header: header.as_ref().map(|h| &h[..]),
                file_len: chunk.file_len,
                db_len: chunk.db_len,
                offset,
                data: &chunk.data,
            },
        );
        if r.db.is_some() {
            let quiescent = r.engine.is_quiescent();
            r.release.decisions.set_locked_read(
                quiescent
                    .then(|| walvault_engine::release::ReadSignature::of(offset, max_len, &chunk)),
            );
        }
    }

    /// Builds a file for its first upload against the running checksum table, as
    /// `DbTask::stage` does, and keeps the table up to date.
    fn stage(&mut self, file: FileId, spec: &FileSpec) -> Result<Vec<u8>, String> {
        let prev = match &self.proc {
            Proc::Running(r) => r.sums.as_ref(),
            _ => None,
        };
        let mut pages = Pages {
            wal: self.wal.get(),
            db: &self.db_file,
            page_size: u64::from(self.params.page_size),
            stale_page: self.mutation == Some(Mutation::StalePageRead),
        };
        let mut t = spec::materialize_tracked(spec, &mut pages, Vec::new(), prev)
            .map_err(|e| e.to_string())?;
        if self.mutation == Some(Mutation::DiffAgainstOwnState)
            && t.diffed.is_some()
            && let Some(after) = t.sums.clone()
        {
            // Mutation: built again against the table the first build left behind.
            let base = (spec.header.min_txid - 1, after);
            t = spec::materialize_tracked(spec, &mut pages, Vec::new(), Some(&base))
                .map_err(|e| e.to_string())?;
        }
        if let Some(n) = t.diffed {
            self.cov.hit(Cov::DiffedWholeFile);
            self.trace
                .record(self.now, "diffed", &[file.max_txid, n], &[], || {
                    format!("{file}: whole-database file built as {n} changed pages")
                });
        }
        if let Proc::Running(r) = &mut self.proc
            && file.level == 0
        {
            r.sums = t.sums.map(|s| (file.max_txid, s));
        }
        Ok(t.out)
    }

    /// Rebuilds a file to compare with the stored one (its staged copy is gone).
    fn materialize(&mut self, spec: &FileSpec) -> Result<Vec<u8>, String> {
        if spec::diffable(spec) {
            // As the shell: a file built against checksums cannot be rebuilt from its
            // spec alone.
            return Err("its staged copy is gone".into());
        }
        let mut pages = Pages {
            wal: self.wal.get(),
            db: &self.db_file,
            page_size: u64::from(self.params.page_size),
            stale_page: self.mutation == Some(Mutation::StalePageRead),
        };
        spec::materialize(spec, &mut pages, Vec::new())
            .map(|(v, _)| v)
            .map_err(|e| e.to_string())
    }

    fn local_completion(&mut self, c: Completion) {
        let inc = self.inc;
        self.q.push(self.now, Ev::Local { inc, c });
    }

    fn exec_upload(&mut self, file: FileId, spec: Arc<FileSpec>, attempt: u32) {
        let staged = match &self.proc {
            Proc::Running(r) => r.staged.get(&file).cloned(),
            _ => return,
        };
        let (bytes, d) = match staged {
            Some(x) => x,
            None => {
                if let Some(Fault::StagingFail) = self.decide(Site::Staging) {
                    self.cov.hit(Cov::SourceChanged);
                    self.local_completion(Completion::Upload(
                        file,
                        attempt,
                        UploadResult::SourceChanged(
                            "staging: No space left on device (os error 28)".into(),
                        ),
                    ));
                    return;
                }
                if matches!(&self.proc, Proc::Running(r) if r.db.is_none()) {
                    // Production: no pages are read without the lock.
                    self.local_completion(Completion::Upload(
                        file,
                        attempt,
                        UploadResult::SourceChanged("released (idle)".into()),
                    ));
                    return;
                }
                let bytes = match self.stage(file, &spec) {
                    Ok(b) => Arc::new(b),
                    Err(e) => {
                        self.local_completion(Completion::Upload(
                            file,
                            attempt,
                            UploadResult::SourceChanged(e),
                        ));
                        return;
                    }
                };
                let d = digest(&bytes);
                if let Err(v) = self
                    .checker
                    .check_new_file(file, &bytes, d, &self.oracle, self.now)
                {
                    self.set_violation(v);
                    return;
                }
                if let Proc::Running(r) = &mut self.proc {
                    r.staged.insert(file, (Arc::clone(&bytes), d));
                }
                (bytes, d)
            }
        };
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        let failures = r.failures_seen.get(&file).copied().unwrap_or(0);
        if attempt > failures + 1 {
            self.fail(
                Inv::Bounds,
                format!("{file} sent for the {attempt}th time after only {failures} failed attempts (a retry storm)"),
            );
            return;
        }
        *r.requests.entry(file).or_insert(0) += 1;
        if self.storm(file, false) {
            return;
        }
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        if attempt > 1 && r.unknown_seen.contains(&file) {
            self.cov.hit(Cov::AmbiguousPutThenRetry);
        }
        let key = key_of(file);
        let put = |bytes: &Arc<Vec<u8>>| OpKind::Put {
            key: key.clone(),
            id: file,
            attempt,
            bytes: Arc::clone(bytes),
            digest: d,
        };
        match self.mutation {
            Some(Mutation::AckBeforeStore) => {
                self.issue(put(&bytes), true, false);
                self.local_completion(Completion::Upload(file, attempt, UploadResult::Stored));
            }
            Some(Mutation::DoublePut) => {
                self.issue(put(&bytes), true, true);
                self.issue(put(&bytes), true, false);
            }
            _ => {
                self.issue(put(&bytes), true, true);
            }
        }
        self.check_window();
    }

    /// I6's storm check: records a request for `file` (an upload, or with `check` a
    /// check) and fails the run when more of them fall within the storm window than
    /// backoff allows. Returns whether it failed.
    fn storm(&mut self, file: FileId, check: bool) -> bool {
        let (window, most) = self.params.storm_bound();
        let now = self.now;
        let Proc::Running(r) = &mut self.proc else {
            return false;
        };
        let sent = r.sent_at.entry((file, check)).or_default();
        while sent.front().is_some_and(|&t| t + window <= now) {
            sent.pop_front();
        }
        sent.push_back(now);
        if sent.len() <= most {
            return false;
        }
        let what = if check { "checked" } else { "sent" };
        let n = sent.len();
        self.fail(
            Inv::Bounds,
            format!("{file} {what} {n} times within {window} ms, above the {most} backoff allows (a retry storm)"),
        );
        true
    }

    fn check_window(&mut self) {
        let window = self.params.max_in_flight.max(1);
        if self.outstanding == window {
            self.cov.hit(Cov::WindowFull);
        }
        if self.outstanding > window {
            self.fail(
                Inv::Bounds,
                format!(
                    "{} requests in flight, above the window of {window}",
                    self.outstanding
                ),
            );
        }
    }

    fn exec_check(&mut self, file: FileId, spec: Arc<FileSpec>, attempt: u32) {
        let staged = match &mut self.proc {
            Proc::Running(r) => {
                *r.requests.entry(file).or_insert(0) += 1;
                r.staged.get(&file).cloned()
            }
            _ => return,
        };
        if self.storm(file, true) {
            return;
        }
        let expected = match staged {
            Some((b, _)) => Ok(b),
            None => self.materialize(&spec).map(Arc::new),
        };
        self.issue(
            OpKind::Get {
                key: key_of(file),
                id: file,
                attempt,
                expected,
            },
            true,
            true,
        );
        self.check_window();
    }

    fn exec_persist(&mut self, pos: walvault_engine::replicator::Position) {
        let mut pos = pos;
        if self.mutation == Some(Mutation::PersistAhead) {
            pos.txid += 1;
        }
        if let Err(v) = self.checker.on_persist(pos, &self.oracle, self.now) {
            self.set_violation(v);
            return;
        }
        let fault = match self.decide(Site::Persist) {
            Some(Fault::PersistFail) => {
                self.cov.hit(Cov::PersistFailed);
                self.fatal("persisting the replication position: No space left on device".into());
                return;
            }
            Some(Fault::FsyncLie) => {
                self.cov.hit(Cov::PersistFsyncLie);
                WriteFault::FsyncLie
            }
            Some(Fault::TornWrite) => {
                self.cov.hit(Cov::PersistTorn);
                WriteFault::Torn
            }
            _ => WriteFault::None,
        };
        self.disk.save(encode(&pos), fault);
    }
}
