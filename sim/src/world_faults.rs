//! Fault decisions: drawn from the seed's fault stream (and recorded into the plan)
//! or, in replay, taken from the plan; the small operations an interleaving runs.

use crate::plan::{AppOp, Fault, FaultEntry, Site};
use crate::rng::Stream;

use crate::world::*;

pub(crate) fn pick_small_op(r: &mut Stream, page_size: u32) -> AppOp {
    use crate::plan::CkptMode;
    let seed = r.u64();
    match r.below(7) {
        0 | 1 => AppOp::Insert {
            rows: r.range(1, 3) as u32,
            size: r.range(8, u64::from(page_size)) as u32,
            seed,
        },
        2 => AppOp::Update {
            rows: r.range(1, 3) as u32,
            size: r.range(8, u64::from(page_size)) as u32,
            seed,
        },
        3 => AppOp::Checkpoint {
            mode: CkptMode::Passive,
        },
        4 => AppOp::Checkpoint {
            mode: CkptMode::Full,
        },
        5 => AppOp::Checkpoint {
            mode: CkptMode::Restart,
        },
        _ => AppOp::Checkpoint {
            mode: CkptMode::Truncate,
        },
    }
}

/// Cumulative ppm table → the fault at the drawn index.
pub(crate) fn draw_table(r: &mut Stream, table: &[(u32, Fault)]) -> Option<Fault> {
    let total: u64 = table.iter().map(|(p, _)| u64::from(*p)).sum();
    if total == 0 {
        return None;
    }
    let mut x = r.below(1_000_000);
    for (p, f) in table {
        if x < u64::from(*p) {
            return Some(f.clone());
        }
        x -= u64::from(*p);
    }
    None
}

impl World {
    /// A fault decision at the next site of `site`: drawn from the seed's fault stream
    /// (and recorded into the plan) or, in replay, taken from the plan.
    pub fn decide(&mut self, site: Site) -> Option<Fault> {
        let n = self.site_n.entry(site).or_insert(0);
        let idx = *n;
        *n += 1;
        if self.calm {
            return None;
        }
        // The application takes time too: at most one interleaved operation per
        // simulated millisecond (a drain happens at one instant).
        if site == Site::Interleave && self.last_interleave_at == Some(self.now) {
            return None;
        }
        let f = if self.plan.replay_faults {
            self.fault_map.get(&(site, idx)).cloned()
        } else {
            self.draw(site)
        };
        if site == Site::Interleave && f.is_some() {
            self.last_interleave_at = Some(self.now);
        }
        if let Some(f) = &f {
            self.recorded.push(FaultEntry {
                site,
                n: idx,
                fault: f.clone(),
            });
        }
        f
    }

    pub(crate) fn draw(&mut self, site: Site) -> Option<Fault> {
        let p = &self.params;
        let s = &p.store;
        let h = &p.host;
        let r = &mut self.frng;
        match site {
            Site::Put => draw_table(
                r,
                &[
                    (s.put_transient, Fault::PutTransient),
                    (s.put_permanent, Fault::PutPermanent),
                    (s.put_ambiguous_after, Fault::PutAmbiguousAfter),
                    (s.put_ambiguous_before, Fault::PutAmbiguousBefore),
                    (s.put_lost_response, Fault::PutLostResponse),
                    (s.put_late_write, Fault::PutLateWrite),
                    (s.put_duplicate, Fault::PutDuplicate { delay_ms: 0 }),
                    (s.throttle_burst, Fault::Throttle { ms: s.throttle_ms }),
                ],
            )
            .map(|f| match f {
                Fault::PutDuplicate { .. } => Fault::PutDuplicate {
                    delay_ms: r.range(1, 3_000),
                },
                f => f,
            }),
            Site::Get => draw_table(
                r,
                &[
                    (s.get_transient, Fault::GetTransient),
                    (s.get_stale, Fault::GetStale),
                    (s.get_truncated, Fault::GetTruncated),
                    (s.get_corrupt, Fault::GetCorrupt { at: 0 }),
                ],
            )
            .map(|f| match f {
                Fault::GetCorrupt { .. } => Fault::GetCorrupt { at: r.u64() },
                f => f,
            }),
            Site::List => r.chance(s.list_transient).then_some(Fault::ListTransient),
            Site::WalRead => r.chance(h.torn_read).then(|| Fault::TornRead {
                cut: r.below(1_000_000) as u32,
                garbage: r.coin(),
            }),
            Site::Interleave => r.chance(h.interleave).then(|| Fault::App {
                op: pick_small_op(r, p.page_size),
            }),
            Site::Dup => r.chance(h.dup_completion).then(|| Fault::Duplicate {
                delay_ms: r.range(0, 500),
            }),
            Site::Staging => r.chance(h.staging_fail).then_some(Fault::StagingFail),
            Site::Persist => draw_table(
                r,
                &[
                    (h.fsync_lie, Fault::FsyncLie),
                    (h.torn_write, Fault::TornWrite),
                    (h.persist_fail, Fault::PersistFail),
                ],
            ),
            Site::Drain => r.chance(p.crashes.in_drain).then(|| Fault::Kill {
                down_ms: r.range(p.crashes.down_min_ms, p.crashes.down_max_ms),
            }),
            Site::TornAppend => r.chance(h.torn_append).then(|| Fault::TornAppend {
                frames: r.range(1, 4) as u32,
                seed: r.u64(),
            }),
        }
    }
}
