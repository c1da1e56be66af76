//! A process's start-up against the store: LIST, read the tip's header, then
//! `Input::Start` with what was durable (the local position, the run mark).

use walvault_engine::keys::FileId;
use walvault_engine::ltx::Header;
use walvault_engine::replicator::{Input, RemoteTip, Replicator};
use walvault_engine::restore_plan::{self, RemoteFile};

use crate::checker::parse_key;
use crate::coverage::Cov;
use crate::invariant::Inv;
use crate::mutation::Mutation;
use crate::world::{OpKind, Proc, Running, World};

impl World {
    /// `remote::tip`, first half: the listing, the highest TXID, and how far a restore
    /// reaches (`restore_plan::plan(Latest)`: its TXID, or where a gap stops it).
    pub(crate) fn on_list(&mut self, listing: Result<Vec<(String, u64)>, String>) {
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
    pub(crate) fn on_header(&mut self, id: FileId, r: Result<Vec<u8>, String>) {
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
    pub(crate) fn start_engine(&mut self, mut tip: RemoteTip, list_max: u64) {
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
        engine.set_mutation(self.mutation.and_then(Mutation::engine));
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
            db: Some(s.db),
            release: crate::release::ReleaseState::new(
                self.params.release_idle_ms,
                self.params.release_pin_above,
            ),
            staged: Default::default(),
            sums: None,
            stopping: false,
            first_header: None,
            last_cut_max: list_max,
            last_cut_at: None,
            failures_seen: Default::default(),
            unknown_seen: Default::default(),
            exists_seen: Default::default(),
            idle_timer_at: None,
            requests: Default::default(),
            sent_at: Default::default(),
        }));
        // Counted at the world level: a crash inside this drain must not hide a report
        // the engine already made.
        let reported_before = self.cov.get(Cov::RemoteBehind);
        self.drain();
        let behind = self.cov.get(Cov::RemoteBehind) > reported_before;
        // A crash inside the drain can come before the shell reached the report: the
        // local position and the store are unchanged, so the next start (or the final
        // check's fresh engine) has to report it instead.
        let survived = matches!(self.proc, Proc::Running(_));
        let local_txid = local.map_or(0, |l| l.txid);
        if self.params.lossy {
            if local_txid > truth_max && local_txid > tip.max_txid && !behind && survived {
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
}
