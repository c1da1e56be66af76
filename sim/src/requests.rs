//! Store traffic: every request the simulated process sends travels to the store and
//! back with latency from the latency stream and, in the chaotic phase, a fault from
//! the fault stream: transient errors and throttling bursts, 403s, ambiguous failures
//! before or after the write, lost responses (the client times out), writes that land
//! after the client gave up, duplicate delivery to the store, stalls, read-after-write
//! staleness, truncated and corrupted reads, LIST lag. Completions arrive in whatever
//! order their latencies give, and are handed to the engine as production's task does.

use std::sync::Arc;

use walvault_engine::keys::{self, FileId, Layout};
use walvault_engine::ltx::{HEADER_SIZE, Header};
use walvault_engine::replicator::{CheckResult, Input, RemoteTip, Replicator, UploadResult};
use walvault_engine::restore_plan::{self, RemoteFile};

use crate::checker::{DB_NAME, parse_key};
use crate::coverage::Cov;
use crate::invariant::Inv;
use crate::mutation::Mutation;
use crate::plan::{Fault, Site};
use crate::world::{Completion, Ev, OpKind, OpOutcome, Proc, Running, StoreOp, World};

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
    fn leg(&mut self) -> u64 {
        let l = &self.params.latency;
        let mut t = l.base_ms / 2 + self.lat.below(l.jitter_ms + 1) / 2;
        if !self.calm && l.tail > 0 && self.lat.chance(l.tail) {
            t += self.lat.range(0, l.tail_ms);
        }
        t
    }

    /// Sends a request to the store; returns its id.
    pub fn issue(&mut self, kind: OpKind, counted: bool, deliver: bool) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        let site = match kind {
            OpKind::Put { .. } => Site::Put,
            OpKind::Get { .. } | OpKind::Header { .. } => Site::Get,
            OpKind::List => Site::List,
        };
        let mut fault = self.decide(site);
        if let Some(Fault::Throttle { ms }) = fault {
            self.store.throttle_until = self.now + ms;
            self.cov.hit(Cov::Throttled);
        }
        if fault.is_none() && !self.calm && self.now < self.store.throttle_until {
            fault = Some(Fault::Throttle { ms: 0 });
        }
        let req = self.leg();
        let mut resp = self.leg();
        let l = &self.params.latency;
        let timeout = l.timeout_ms;
        if !self.calm && l.stall > 0 && self.lat.chance(l.stall) {
            resp += l.stall_ms;
            self.cov.hit(Cov::Stall);
        }
        let now = self.now;
        let (apply, respond) = match (&kind, &fault) {
            (_, None) => (Some(now + req), now + req + resp),
            (OpKind::Put { .. }, Some(f)) => match f {
                Fault::PutAmbiguousAfter | Fault::PutDuplicate { .. } => {
                    (Some(now + req), now + req + resp)
                }
                Fault::PutLostResponse => (Some(now + req), now + timeout.max(req + 1)),
                Fault::PutLateWrite => {
                    let late = self.lat.range(1, 2_000);
                    (Some(now + timeout + late), now + timeout)
                }
                _ => (None, now + req + resp),
            },
            (OpKind::Get { .. } | OpKind::Header { .. }, Some(f)) => match f {
                Fault::GetStale | Fault::GetCorrupt { .. } => (Some(now + req), now + req + resp),
                _ => (None, now + req + resp),
            },
            (OpKind::List, Some(_)) => (None, now + req + resp),
        };
        if let (Some(Fault::PutDuplicate { delay_ms }), Some(a)) = (&fault, apply) {
            self.q.push(a + delay_ms, Ev::DupApply(id));
        }
        if let Some(a) = apply {
            self.q.push(a, Ev::Apply(id));
        }
        self.q.push(respond, Ev::Respond(id));
        let (code, what) = match &kind {
            OpKind::Put { key, .. } => (1, key.clone()),
            OpKind::Get { key, .. } => (2, key.clone()),
            OpKind::List => (3, String::new()),
            OpKind::Header { key, .. } => (4, key.clone()),
        };
        let fault_s = fault
            .as_ref()
            .map(|f| format!(" fault={f:?}"))
            .unwrap_or_default();
        self.trace.record(
            self.now,
            "request",
            &[id, code, apply.unwrap_or(0), respond],
            what.as_bytes(),
            || {
                format!(
                    "#{id} {} {what}{fault_s} (arrives {}, answer {respond})",
                    ["", "PUT", "GET", "LIST", "GET-RANGE"][code as usize],
                    apply.map(|a| a.to_string()).unwrap_or("never".into())
                )
            },
        );
        if counted {
            self.outstanding += 1;
        }
        self.requests_issued += 1;
        let seq = id;
        self.ops.insert(
            id,
            StoreOp {
                inc: self.inc,
                kind,
                fault,
                outcome: None,
                counted,
                deliver,
                seq,
            },
        );
        id
    }

    /// The request reaches the store (or a second copy of a PUT does).
    pub fn apply(&mut self, id: u64, dup: bool) {
        let now = self.now;
        if dup {
            // The second copy of a PUT (the body is kept from the first).
            if let Some((key, bytes, d)) = self.dup_bodies.remove(&id) {
                if self.dup_inc.remove(&id).is_some_and(|i| i != self.inc) {
                    self.cov.hit(Cov::ZombieWrite);
                }
                self.put_now(&key, bytes, d, true);
            }
            return;
        }
        let Some(op) = self.ops.get(&id) else {
            return;
        };
        if op.inc != self.inc {
            // Its process died before the request arrived: it still lands, possibly
            // after the next process listed the store (a zombie write).
            self.cov.hit(Cov::ZombieWrite);
        }
        let fault = op.fault.clone();
        let outcome = match &op.kind {
            OpKind::Put {
                key, bytes, digest, ..
            } => {
                let (key, bytes, d) = (key.clone(), Arc::clone(bytes), *digest);
                if matches!(fault, Some(Fault::PutDuplicate { .. })) {
                    self.dup_bodies
                        .insert(id, (key.clone(), Arc::clone(&bytes), d));
                }
                OpOutcome::Put(self.put_now(&key, bytes, d, false))
            }
            OpKind::Get { key, expected, .. } => {
                let stale_ms = self.params.store.stale_ms;
                let obj = self.store.get(key);
                let r = match (obj, &fault) {
                    (Some(o), Some(Fault::GetStale)) if o.written_at + stale_ms > now => {
                        self.cov.hit(Cov::GetStale);
                        CheckResult::Absent
                    }
                    (None, _) => CheckResult::Absent,
                    (Some(o), f) => {
                        let mut body = o.bytes.as_ref().clone();
                        if let Some(Fault::GetCorrupt { at }) = f
                            && !body.is_empty()
                        {
                            let i = (*at % body.len() as u64) as usize;
                            body[i] ^= 1 << (at % 8);
                        }
                        match expected {
                            Ok(ours) if ours.as_slice() == body.as_slice() => CheckResult::Matches,
                            Ok(_) => CheckResult::Differs,
                            Err(e) => CheckResult::Failed(format!(
                                "cannot rebuild our file to compare: {e}"
                            )),
                        }
                    }
                };
                OpOutcome::Check(r)
            }
            OpKind::List => {
                let lag = if self.calm {
                    0
                } else {
                    self.params.store.list_lag_ms
                };
                let prefix = keys::db_prefix(Layout::S3, DB_NAME);
                let listing = self.store.list(&prefix, now.saturating_sub(lag));
                if listing.len() < self.store.list(&prefix, now).len() {
                    self.cov.hit(Cov::ListLagged);
                }
                OpOutcome::List(Ok(listing))
            }
            OpKind::Header { key, .. } => {
                let stale_ms = self.params.store.stale_ms;
                let r = match (self.store.get(key), &fault) {
                    (Some(o), Some(Fault::GetStale)) if o.written_at + stale_ms > now => {
                        self.cov.hit(Cov::GetStale);
                        Err(format!("404 NoSuchKey {key} (stale read)"))
                    }
                    (None, _) => Err(format!("404 NoSuchKey {key}")),
                    (Some(o), f) => {
                        let mut b = o.bytes[..o.bytes.len().min(HEADER_SIZE)].to_vec();
                        if let Some(Fault::GetCorrupt { at }) = f
                            && !b.is_empty()
                        {
                            let i = (*at % b.len() as u64) as usize;
                            b[i] ^= 1 << (at % 8);
                        }
                        Ok(b)
                    }
                };
                OpOutcome::Header(r)
            }
        };
        if let Some(op) = self.ops.get_mut(&id) {
            op.outcome = Some(outcome);
        }
    }

    /// A PUT with If-None-Match reaches the store now.
    fn put_now(&mut self, key: &str, bytes: Arc<Vec<u8>>, d: [u8; 32], dup: bool) -> bool {
        let stored = self.store.put_if_absent(key, bytes, d, self.now);
        if dup {
            self.cov.hit(Cov::PutDuplicateDelivery);
        }
        self.trace.record(
            self.now,
            "store-put",
            &[u64::from(stored), u64::from(dup)],
            key.as_bytes(),
            || {
                format!(
                    "{key} {}{}",
                    if stored { "stored" } else { "exists (412)" },
                    if dup { " [duplicate delivery]" } else { "" }
                )
            },
        );
        if stored {
            let obj = self.store.get(key).cloned();
            if let Some(obj) = obj
                && let Err(v) = self.checker.on_stored(self.now, key, &obj, &self.oracle)
            {
                self.set_violation(v);
            }
            if !self.calm && self.srng.chance(20_000) {
                self.sample_checks();
            }
        }
        stored
    }

    /// Occasional heavier checks: the product's planner against ours, and a
    /// byte-for-byte restore against the source.
    fn sample_checks(&mut self) {
        let top = self.checker.max_txid();
        if top == 0 {
            return;
        }
        let t = self.srng.range(1, top);
        if let Err(v) = self
            .checker
            .cross_check_plan(walvault_engine::restore_plan::Target::Txid(t), self.now)
        {
            self.set_violation(v);
            return;
        }
        match self.checker.byte_compare(t, &self.oracle, self.now) {
            Err(v) => self.set_violation(v),
            Ok(true) => self.cov.hit(Cov::ByteCompare),
            Ok(false) => {}
        }
    }

    /// The response reaches the process that sent the request.
    pub fn respond(&mut self, id: u64) {
        let Some(op) = self.ops.remove(&id) else {
            return;
        };
        let StoreOp {
            inc,
            kind,
            fault,
            outcome,
            counted,
            deliver,
            seq,
        } = op;
        if inc != self.inc {
            self.trace
                .record(self.now, "response-lost", &[id], &[], || {
                    format!("#{id}: its process is gone")
                });
            return;
        }
        if counted {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        match kind {
            OpKind::Put {
                id: file, attempt, ..
            } => {
                let result = match (&fault, outcome) {
                    (None | Some(Fault::PutDuplicate { .. }), Some(OpOutcome::Put(true))) => {
                        UploadResult::Stored
                    }
                    (None | Some(Fault::PutDuplicate { .. }), Some(OpOutcome::Put(false))) => {
                        UploadResult::AlreadyExists
                    }
                    (Some(Fault::PutPermanent), _) => {
                        self.cov.hit(Cov::PutPermanent);
                        UploadResult::Permanent("403 RequestTimeTooSkewed".into())
                    }
                    (Some(Fault::Throttle { .. }), _) => {
                        UploadResult::Transient("503 SlowDown".into())
                    }
                    (Some(Fault::PutTransient), _) => {
                        self.cov.hit(Cov::PutTransient);
                        UploadResult::Transient("503 ServiceUnavailable".into())
                    }
                    (Some(Fault::PutAmbiguousBefore), _) => {
                        UploadResult::Unknown("timeout before the request was processed".into())
                    }
                    (Some(Fault::PutAmbiguousAfter), _) => {
                        UploadResult::Unknown("500 InternalError after the write".into())
                    }
                    (Some(Fault::PutLostResponse), _) => {
                        self.cov.hit(Cov::PutLostResponse);
                        UploadResult::Unknown("no response (client timeout)".into())
                    }
                    (Some(Fault::PutLateWrite), _) => {
                        self.cov.hit(Cov::PutLateWrite);
                        UploadResult::Unknown("client timeout (the write lands later)".into())
                    }
                    (f, o) => {
                        let o = o.is_some();
                        self.fail(
                            Inv::Harness,
                            format!(
                                "PUT #{id} answered without an outcome (fault {f:?}, applied {o})"
                            ),
                        );
                        return;
                    }
                };
                if !deliver {
                    return;
                }
                if seq < self.max_delivered_seq {
                    self.cov.hit(Cov::OutOfOrderCompletion);
                }
                self.max_delivered_seq = self.max_delivered_seq.max(seq);
                let failed = matches!(
                    result,
                    UploadResult::Transient(_)
                        | UploadResult::Permanent(_)
                        | UploadResult::Unknown(_)
                );
                let result = match self.mutation {
                    Some(Mutation::DropFailedUpload) if failed => UploadResult::Stored,
                    Some(Mutation::LostCompletion) if failed => {
                        self.trace.record(self.now, "mutation", &[id], &[], || {
                            format!("#{id}: completion of a failed upload never delivered")
                        });
                        return;
                    }
                    _ => result,
                };
                self.deliver(Completion::Upload(file, attempt, result), true);
            }
            OpKind::Get {
                id: file, attempt, ..
            } => {
                let result = match (&fault, outcome) {
                    (Some(Fault::GetTransient | Fault::Throttle { .. }), _) => {
                        CheckResult::Failed("503 ServiceUnavailable".into())
                    }
                    (Some(Fault::GetTruncated), _) => {
                        self.cov.hit(Cov::GetTruncated);
                        CheckResult::Failed("unexpected EOF: body shorter than its length".into())
                    }
                    (_, Some(OpOutcome::Check(r))) => r,
                    _ => CheckResult::Failed("no answer".into()),
                };
                if deliver {
                    self.deliver(Completion::Check(file, attempt, result), true);
                }
            }
            OpKind::List => {
                let listing = match (&fault, outcome) {
                    (Some(_), _) => Err("503 ServiceUnavailable (LIST)".to_string()),
                    (None, Some(OpOutcome::List(l))) => l,
                    _ => Err("no answer".to_string()),
                };
                self.on_list(listing);
            }
            OpKind::Header { id: file, .. } => {
                let r = match (&fault, outcome) {
                    (Some(Fault::GetTransient | Fault::Throttle { .. }), _) => {
                        Err("503 ServiceUnavailable".to_string())
                    }
                    (Some(Fault::GetTruncated), _) => {
                        self.cov.hit(Cov::GetTruncated);
                        Err("unexpected EOF reading the header".to_string())
                    }
                    (_, Some(OpOutcome::Header(r))) => r,
                    _ => Err("no answer".to_string()),
                };
                self.on_header(file, r);
            }
        }
    }

    /// `remote::tip`, first half: the listing, the highest TXID, and how far a restore
    /// reaches (`restore_plan::plan(Latest)`: its TXID, or where a gap stops it).
    fn on_list(&mut self, listing: Result<Vec<(String, u64)>, String>) {
        if !matches!(self.proc, Proc::Starting(_)) {
            return;
        }
        let listing = match listing {
            Ok(l) => l,
            Err(e) => {
                self.startup_failed(format!("reading the replica: {e}"));
                return;
            }
        };
        let files: Vec<RemoteFile> = listing
            .iter()
            .filter_map(|(k, size)| {
                parse_key(k).map(|id| RemoteFile {
                    id,
                    size: *size,
                    timestamp_ms: None,
                })
            })
            .collect();
        let Some(restore_plan::ChainTip {
            max_txid: max,
            chain_end,
            newest,
        }) = restore_plan::chain_tip(&files)
        else {
            self.start_engine(RemoteTip::default(), 0);
            return;
        };
        if let Proc::Starting(s) = &mut self.proc {
            s.list_max = max;
            s.chain_end = chain_end;
        }
        match newest {
            Some(id) => {
                let key = crate::checker::key_of(id);
                self.issue(OpKind::Header { key, id }, false, true);
            }
            None => self.start_engine(
                RemoteTip {
                    max_txid: max,
                    chain_end,
                    newest: None,
                },
                max,
            ),
        }
    }

    /// `remote::tip`, second half: the header of the file where the chain ends.
    fn on_header(&mut self, id: FileId, r: Result<Vec<u8>, String>) {
        let Proc::Starting(s) = &self.proc else {
            return;
        };
        let (max, chain_end) = (s.list_max, s.chain_end);
        let h = match r
            .and_then(|b| Header::decode(&b).map_err(|e| format!("invalid LTX header: {e}")))
        {
            Ok(h) => h,
            Err(e) => {
                self.startup_failed(format!("reading the header of {id}: {e}"));
                return;
            }
        };
        if h.min_txid != id.min_txid || h.max_txid != id.max_txid {
            self.startup_failed(format!(
                "{id}: header says TXIDs {}-{}",
                h.min_txid, h.max_txid
            ));
            return;
        }
        self.start_engine(
            RemoteTip {
                max_txid: max,
                chain_end,
                newest: Some(h),
            },
            max,
        );
    }

    /// `Input::Start` with what was durable: the local position and the store's tip.
    fn start_engine(&mut self, mut tip: RemoteTip, list_max: u64) {
        let Proc::Starting(s) = std::mem::replace(&mut self.proc, Proc::Down) else {
            return;
        };
        let s = *s;
        let truth_max = self.checker.max_txid();
        if tip.max_txid < truth_max {
            self.cov.hit(Cov::StaleTip);
        }
        if self.mutation == Some(Mutation::TipSkipsTxid) && tip.max_txid > 0 {
            // The listing is misread as reaching one TXID further than it does.
            tip.max_txid += 1;
            tip.chain_end += 1;
        }
        let local = s.local;
        let page_size = s.db.page_size;
        let mut engine = Replicator::new(self.params.engine_config(self.inc));
        self.trace.record(
            self.now,
            "engine-start",
            &[tip.max_txid, local.map_or(0, |l| l.txid)],
            &[],
            || {
                format!(
                    "Input::Start remote tip {} local {:?}",
                    tip.max_txid,
                    local.map(|l| l.txid)
                )
            },
        );
        let now = self.now();
        engine.handle(
            now,
            Input::Start {
                page_size,
                local,
                remote: tip.clone(),
                unfinished_run: s.unfinished_run,
            },
        );
        self.disk.begin_run(engine.next_txid());
        self.proc = Proc::Running(Box::new(Running {
            engine,
            db: s.db,
            staged: Default::default(),
            stopping: false,
            first_header: None,
            last_cut_max: list_max,
            failures_seen: Default::default(),
            unknown_seen: Default::default(),
            exists_seen: Default::default(),
            idle_timer_at: None,
            requests: Default::default(),
        }));
        // Counted at the world level: a crash inside this drain must not hide a report
        // the engine already made.
        let reported_before = self.cov.get(Cov::RemoteBehind);
        self.drain();
        let behind = self.cov.get(Cov::RemoteBehind) > reported_before;
        let local_txid = local.map_or(0, |l| l.txid);
        if self.params.lossy {
            if local_txid > truth_max && local_txid > tip.max_txid && !behind {
                self.fail(
                    Inv::Detection,
                    format!(
                        "the store holds TXIDs up to {truth_max} but {local_txid} was acknowledged, and the restart did not report it"
                    ),
                );
            }
        } else if behind && local_txid > truth_max {
            self.fail(
                Inv::Durability,
                format!(
                    "the local position says TXID {local_txid} was durable but the store holds only up to {truth_max}"
                ),
            );
        }
    }

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
