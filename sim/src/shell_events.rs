//! The engine's events as the simulated shell receives them (`Command::Event`): the
//! checks they allow at the moment they happen (durability against the checker, a
//! contiguous chain of cut files, the spacing of quiet cuts) and the coverage counters
//! they feed.

use walvault_engine::keys::SNAPSHOT_LEVEL;
use walvault_engine::replicator::{Event, SnapshotReason};

use crate::coverage::Cov;
use crate::invariant::Inv;
use crate::world::{Proc, World};

impl World {
    pub(crate) fn on_event(&mut self, e: Event) {
        let Proc::Running(r) = &mut self.proc else {
            return;
        };
        match e {
            Event::Durable { .. } => {
                let pos = r.engine.durable();
                if let Err(v) = self.checker.on_durable(pos, &self.oracle, self.now) {
                    self.set_violation(v);
                }
            }
            Event::FileCut { file, .. } => {
                self.files_cut += 1;
                if self.after_deadline {
                    self.idle_cuts += 1;
                }
                if file.level != SNAPSHOT_LEVEL {
                    // Contiguous (a file may span TXIDs the engine skipped, or re-cover
                    // dropped ones with a full file), and never ending on a used TXID.
                    let last = r.last_cut_max;
                    if file.min_txid > last + 1 || file.max_txid <= last {
                        self.fail(
                            Inv::Chain,
                            format!(
                                "{file} cut after TXID {last}: a TXID is {}",
                                if file.min_txid > last + 1 {
                                    "skipped (a gap in the chain)"
                                } else {
                                    "reused"
                                }
                            ),
                        );
                        return;
                    }
                    r.last_cut_max = file.max_txid;
                    r.last_cut_at = Some(self.now);
                }
            }
            Event::SnapshotStarted { reason, pages, .. } => {
                let bytes = u64::from(pages) * u64::from(self.params.page_size);
                if let Some(pinned) = r.release.decisions.on_whole_file(bytes) {
                    self.cov.hit(Cov::IdleWokeToSnapshot);
                    if pinned {
                        self.cov.hit(Cov::IdlePinned);
                    }
                }
                match reason {
                    SnapshotReason::NoResumePoint => self.cov.hit(Cov::SnapshotNoResume),
                    SnapshotReason::WalReset => self.cov.hit(Cov::WalResetDetected),
                    _ => {}
                }
            }
            Event::Resumed { .. } => self.cov.hit(Cov::Resumed),
            Event::ShippedWhenQuiet { .. } => {
                self.cov.hit(Cov::ShippedWhenQuiet);
                // Decision 24's cost promise: a quiet spell ships at most once per half
                // sync interval (a writer with pauses would otherwise cost a PUT per
                // pause instead of about one per interval).
                let spacing = self.params.sync_interval_ms / 2;
                if let Some(at) = r.last_cut_at
                    && self.now - at < spacing
                {
                    let since = self.now - at;
                    self.fail(
                        Inv::Bounds,
                        format!(
                            "shipped when quiet {since} ms after the previous file; quiet cuts are at least half a sync interval ({spacing} ms) apart"
                        ),
                    );
                }
            }
            Event::RemoteBehind { .. } => {
                self.cov.hit(Cov::RemoteBehind);
            }
            Event::TxidsFenced { .. } => self.cov.hit(Cov::TxidsFenced),
            Event::WalChanged {
                continues: true, ..
            } => self.cov.hit(Cov::CheckpointRestartContinued),
            _ => {}
        }
    }
}
