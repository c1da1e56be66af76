//! Completions: handing each request's outcome to the engine (as production's task
//! does), duplicating some, and checking that a duplicate or late one changes nothing.

use walvault_engine::replicator::{CheckResult, Input, Replicator, UploadResult};

use crate::coverage::Cov;
use crate::invariant::Inv;
use crate::mutation::Mutation;
use crate::plan::{Fault, Site};
use crate::world::{Completion, Ev, OpKind, Proc, World};

fn describe_upload(r: &UploadResult) -> (u64, String) {
    match r {
        UploadResult::Stored => (0, "stored".into()),
        UploadResult::AlreadyExists => (1, "412 already exists".into()),
        UploadResult::Transient(e) => (2, format!("transient: {e}")),
        UploadResult::Permanent(e) => (3, format!("permanent: {e}")),
        UploadResult::Unknown(e) => (4, format!("unknown: {e}")),
        UploadResult::SourceChanged(e) => (5, format!("source changed: {e}")),
    }
}

fn describe_check(r: &CheckResult) -> (u64, String) {
    match r {
        CheckResult::Matches => (0, "matches".into()),
        CheckResult::Absent => (1, "absent".into()),
        CheckResult::Differs => (2, "DIFFERS".into()),
        CheckResult::Failed(e) => (3, format!("failed: {e}")),
    }
}

impl World {
    /// Hands a completion to the engine, then carries out what it asks for.
    pub fn deliver(&mut self, c: Completion, from_store: bool) {
        let now = self.now();
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        let (code, what) = match &c {
            Completion::Upload(f, _, res) => {
                match res {
                    UploadResult::Unknown(_) => {
                        r.unknown_seen.insert(*f);
                    }
                    UploadResult::AlreadyExists => {
                        r.exists_seen.insert(*f);
                    }
                    UploadResult::Transient(_) | UploadResult::Permanent(_) => {
                        *r.failures_seen.entry(*f).or_insert(0) += 1;
                    }
                    _ => {}
                }
                let (k, s) = describe_upload(res);
                (k, format!("upload {f}: {s}"))
            }
            Completion::Check(f, _, res) => {
                match res {
                    CheckResult::Absent => {
                        *r.failures_seen.entry(*f).or_insert(0) += 1;
                        self.cov.hit(Cov::CheckAbsent);
                    }
                    CheckResult::Matches => {
                        if r.unknown_seen.contains(f) {
                            self.cov.hit(Cov::AmbiguousPutResolvedStored);
                        }
                        if r.exists_seen.contains(f) {
                            self.cov.hit(Cov::AlreadyExistsThenMatch);
                        }
                    }
                    CheckResult::Failed(_) => self.cov.hit(Cov::CheckFailed),
                    CheckResult::Differs => {}
                }
                let (k, s) = describe_check(res);
                (10 + k, format!("check {f}: {s}"))
            }
        };
        self.trace
            .record(self.now, "completion", &[code], what.as_bytes(), || {
                what.clone()
            });
        r.idle_timer_at = None;
        match &c {
            Completion::Upload(file, attempt, result) => r.engine.handle(
                now,
                Input::UploadDone {
                    file: *file,
                    attempt: *attempt,
                    result: result.clone(),
                },
            ),
            Completion::Check(file, attempt, result) => r.engine.handle(
                now,
                Input::CheckDone {
                    file: *file,
                    attempt: *attempt,
                    result: result.clone(),
                },
            ),
        }
        let file = match &c {
            Completion::Upload(f, ..) | Completion::Check(f, ..) => *f,
        };
        let req = match &self.proc {
            Proc::Running(r) => r.requests.get(&file).copied().unwrap_or(0),
            _ => 0,
        };
        self.drain();
        if from_store && let Some(Fault::Duplicate { delay_ms }) = self.decide(Site::Dup) {
            let inc = self.inc;
            self.q.push(self.now + delay_ms, Ev::Dup { inc, c, req });
        }
    }

    /// Invariant 5: a completion delivered again changes nothing and asks for nothing.
    /// A copy that arrives after another request for the same file was made is a late
    /// completion of an older attempt; the attempt number it carries tells the engine
    /// it is not the answer to the current one.
    pub fn deliver_duplicate(&mut self, c: Completion, req: u32) {
        let now = self.now();
        let file = match &c {
            Completion::Upload(f, ..) | Completion::Check(f, ..) => *f,
        };
        let late = match &self.proc {
            Proc::Running(r) => r.requests.get(&file).copied().unwrap_or(0) != req,
            _ => false,
        };
        if late {
            self.cov.hit(Cov::LateCompletion);
        }
        if let Proc::Running(r) = &mut self.proc
            && r.engine.poll_timeout().is_some_and(|t| t <= self.now)
        {
            r.engine.handle_timeout(now);
            self.drain();
        }
        if self.violation.is_some() {
            return;
        }
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        let snap = |e: &Replicator| {
            (
                e.durable(),
                e.next_txid(),
                e.pending_files(),
                e.unshipped_txns(),
                e.poll_timeout(),
                e.is_stopped(),
                e.window(),
            )
        };
        let before = snap(&r.engine);
        let req_before = self.requests_issued;
        let input = match &c {
            Completion::Upload(file, attempt, result) => Input::UploadDone {
                file: *file,
                attempt: *attempt,
                result: result.clone(),
            },
            Completion::Check(file, attempt, result) => Input::CheckDone {
                file: *file,
                attempt: *attempt,
                result: result.clone(),
            },
        };
        self.trace.record(self.now, "duplicate", &[], &[], || {
            format!("duplicate delivery: {c:?}")
        });
        r.engine.handle(now, input);
        let mut cmds = Vec::new();
        while let Some(cmd) = r.engine.poll_command() {
            cmds.push(cmd);
        }
        let after = snap(&r.engine);
        self.cov.hit(Cov::DuplicateCompletion);
        if self.mutation == Some(Mutation::DuplicateResend)
            && let Completion::Upload(file, attempt, _) = &c
            && let Some((bytes, d)) = r.staged.get(file).cloned()
        {
            let key = crate::checker::key_of(*file);
            self.issue(
                OpKind::Put {
                    key,
                    id: *file,
                    attempt: *attempt,
                    bytes,
                    digest: d,
                },
                false,
                false,
            );
        }
        if !cmds.is_empty() || before != after || self.requests_issued != req_before {
            self.fail(
                Inv::Duplicate,
                format!(
                    "a duplicate {c:?} changed something: commands {cmds:?}, state {before:?} -> {after:?}, requests {req_before} -> {}",
                    self.requests_issued
                ),
            );
        }
    }
}
