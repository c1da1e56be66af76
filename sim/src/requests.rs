//! Store traffic: every request the simulated process sends travels to the store and
//! back with latency from the latency stream and, in the chaotic phase, a fault from
//! the fault stream: transient errors and throttling bursts, 403s, ambiguous failures
//! before or after the write, lost responses (the client times out), writes that land
//! after the client gave up, duplicate delivery to the store, stalls, read-after-write
//! staleness, truncated and corrupted reads, LIST lag. Completions arrive in whatever
//! order their latencies give, and are handed to the engine as production's task does.

use std::sync::Arc;

use walvault_engine::keys::{self, Layout};
use walvault_engine::ltx::HEADER_SIZE;
use walvault_engine::replicator::{CheckResult, UploadResult};

use crate::checker::DB_NAME;
use crate::coverage::Cov;
use crate::invariant::Inv;
use crate::mutation::Mutation;
use crate::plan::{Fault, Site};
use crate::world::{Completion, Ev, OpKind, OpOutcome, StoreOp, World};

impl World {
    pub(crate) fn leg(&mut self) -> u64 {
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
        let s = &self.params.store;
        if fault.is_none()
            && !self.calm
            && (s.outage_at_ms..s.outage_at_ms + s.outage_ms).contains(&self.now)
        {
            fault = Some(Fault::Throttle { ms: 0 });
            self.cov.hit(Cov::Outage);
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
                        // A copy only for the rare corrupted read.
                        let mut body = std::borrow::Cow::Borrowed(o.bytes.as_slice());
                        if let Some(Fault::GetCorrupt { at }) = f
                            && !body.is_empty()
                        {
                            let i = (*at % body.len() as u64) as usize;
                            body.to_mut()[i] ^= 1 << (at % 8);
                        }
                        match expected {
                            Ok(ours) if ours.as_slice() == &*body => CheckResult::Matches,
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
    pub(crate) fn put_now(
        &mut self,
        key: &str,
        bytes: Arc<Vec<u8>>,
        d: [u8; 32],
        dup: bool,
    ) -> bool {
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
    pub(crate) fn sample_checks(&mut self) {
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
}
