//! A run's plan: the swarm parameters, the application's workload (timed operations),
//! the crash schedule, the store's losses, and the fault decision taken at each fault
//! site. A seed generates a plan (workload and crashes up front, faults recorded as
//! they are drawn); a plan replays exactly; the shrinker edits plans. Plans are JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mutation::Mutation;
use crate::params::Params;
use crate::rng::{Purpose, Stream};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CkptMode {
    Passive,
    Full,
    Restart,
    Truncate,
}

impl CkptMode {
    pub fn sql(self) -> &'static str {
        match self {
            CkptMode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            CkptMode::Full => "PRAGMA wal_checkpoint(FULL)",
            CkptMode::Restart => "PRAGMA wal_checkpoint(RESTART)",
            CkptMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        }
    }
}

/// One operation of the application (its own connections, not the replicator's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AppOp {
    Insert {
        rows: u32,
        size: u32,
        seed: u64,
    },
    Update {
        rows: u32,
        size: u32,
        seed: u64,
    },
    Delete {
        rows: u32,
        seed: u64,
    },
    /// A blob spanning many overflow pages: the database grows by `pages` at once.
    Large {
        pages: u32,
        seed: u64,
    },
    Vacuum,
    IncrementalVacuum,
    Ddl {
        kind: u32,
        seed: u64,
    },
    /// BEGIN on the long-transaction connection and write enough to spill
    /// uncommitted frames into the WAL.
    LongBegin {
        rows: u32,
        size: u32,
        seed: u64,
    },
    LongEnd {
        commit: bool,
    },
    Checkpoint {
        mode: CkptMode,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedOp {
    pub t: u64,
    #[serde(flatten)]
    pub op: AppOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// SIGKILL: nothing more happens in that process.
    Kill,
    /// SIGTERM: Shutdown, ship what is committed, stop.
    Clean,
    /// SIGTERM with a level-9 snapshot before stopping.
    CleanSnapshot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crash {
    pub t: u64,
    pub kind: StopKind,
    pub down_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    pub t: u64,
    /// Which stored object vanishes (index modulo the number of objects).
    pub pick: u64,
}

/// Where a fault decision is taken; each kind counts its own sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    Put,
    Get,
    List,
    WalRead,
    Interleave,
    Dup,
    Staging,
    Persist,
    Drain,
    /// After an application operation (torn_append.rs).
    TornAppend,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    PutTransient,
    PutPermanent,
    PutAmbiguousAfter,
    PutAmbiguousBefore,
    PutLostResponse,
    PutLateWrite,
    PutDuplicate {
        delay_ms: u64,
    },
    Throttle {
        ms: u64,
    },
    GetTransient,
    GetStale,
    GetTruncated,
    GetCorrupt {
        at: u64,
    },
    ListTransient,
    /// The read catches an append in progress: bytes from `cut` (per million of the
    /// span of the newest transaction) are missing (`garbage: false`) or stale.
    TornRead {
        cut: u32,
        garbage: bool,
    },
    /// The application runs this operation now.
    App {
        op: AppOp,
    },
    /// The completion is delivered a second time after `delay_ms`.
    Duplicate {
        delay_ms: u64,
    },
    StagingFail,
    FsyncLie,
    TornWrite,
    PersistFail,
    /// Kill the replicator right before this command.
    Kill {
        down_ms: u64,
    },
    /// The application dies appending a transaction of `frames` frames (torn_append.rs);
    /// `seed` draws their pages and contents.
    TornAppend {
        frames: u32,
        seed: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEntry {
    pub site: Site,
    pub n: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// What a corpus entry expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Pass,
    /// Fails with this invariant (a known, unfixed bug or a canary).
    Fail {
        invariant: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub seed: u64,
    pub params: Params,
    #[serde(default)]
    pub mutation: Option<Mutation>,
    pub workload: Vec<TimedOp>,
    pub crashes: Vec<Crash>,
    #[serde(default)]
    pub losses: Vec<Loss>,
    /// When true, fault decisions come only from `faults` (replay); otherwise they are
    /// drawn from the seed's fault stream and recorded into `faults`.
    #[serde(default)]
    pub replay_faults: bool,
    #[serde(default)]
    pub faults: Vec<FaultEntry>,
}

impl Plan {
    /// The plan a seed generates (faults are drawn during the run).
    pub fn generate(seed: u64, params: Params) -> Plan {
        let mut w = Stream::new(seed, Purpose::Workload);
        let mut c = Stream::new(seed, Purpose::Crash);
        let mut workload = Vec::new();
        let chaos = params.chaos_ms;
        let calm_writes = (params.liveness_bound_ms() / 4).min(3_000);
        let n = params.workload_ops as u64;
        let calm_n = (n / 10).max(5);
        let mean_gap = (chaos / n.max(1)).max(1);
        let mut t = 0u64;
        let mut long_until = 0u64;
        while t < chaos {
            t += w.exp_ms(mean_gap).max(1);
            if let Some(ms) = params.release_idle_ms
                && w.chance(30_000)
            {
                // Quiet spells long enough for the shell to release the connection, so
                // the next write wakes it (only in seeds that release).
                let sync = params.sync_interval_ms.max(1);
                t += ms + 3 * sync + w.range(0, 2 * sync);
            }
            if t >= chaos {
                break;
            }
            let op = draw_op(&mut w, &params, true);
            if let AppOp::LongBegin { .. } = op {
                if t < long_until {
                    continue;
                }
                let end = t + w.range(10, 3 * params.sync_interval_ms.max(100));
                long_until = end + 1;
                workload.push(TimedOp { t, op });
                workload.push(TimedOp {
                    t: end,
                    op: AppOp::LongEnd {
                        commit: w.chance(800_000),
                    },
                });
                continue;
            }
            workload.push(TimedOp { t, op });
        }
        // Writes continue for a while after the faults stop, then the database idles.
        let calm_gap = (calm_writes / calm_n).max(1);
        let mut t = chaos;
        for _ in 0..calm_n {
            t += w.range(1, calm_gap);
            let op = draw_op(&mut w, &params, false);
            workload.push(TimedOp { t, op });
        }
        workload.sort_by_key(|o| o.t);
        let mut crashes = Vec::new();
        for _ in 0..params.crashes.count {
            let t = c.range(1, chaos.saturating_sub(1));
            let kind = if c.chance(params.crashes.clean) {
                if c.coin() {
                    StopKind::CleanSnapshot
                } else {
                    StopKind::Clean
                }
            } else {
                StopKind::Kill
            };
            let down_ms = c.range(params.crashes.down_min_ms, params.crashes.down_max_ms);
            crashes.push(Crash { t, kind, down_ms });
        }
        crashes.sort_by_key(|c| c.t);
        let losses = (0..params.losses)
            .map(|_| Loss {
                t: c.range(chaos / 4, chaos.saturating_sub(1)),
                pick: c.u64(),
            })
            .collect();
        Plan {
            seed,
            params,
            mutation: None,
            workload,
            crashes,
            losses,
            replay_faults: false,
            faults: Vec::new(),
        }
    }

    /// Time the faults stop and the calm phase begins.
    pub fn calm_at(&self) -> u64 {
        self.params.chaos_ms
    }

    /// By this time lag must be back to zero.
    pub fn liveness_deadline(&self) -> u64 {
        self.calm_at() + self.params.liveness_bound_ms()
    }

    /// The idle window after the deadline (no writes): at most one file may be cut.
    pub fn end(&self) -> u64 {
        self.liveness_deadline() + (20 * self.params.sync_interval_ms).max(5_000)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<Plan, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    pub fn fault_map(&self) -> BTreeMap<(Site, u64), Fault> {
        self.faults
            .iter()
            .map(|e| ((e.site, e.n), e.fault.clone()))
            .collect()
    }
}

/// Draws one application operation from the seed's mix.
pub fn draw_op(w: &mut Stream, params: &Params, chaos: bool) -> AppOp {
    let m = &params.mix;
    let weights = [
        m.insert,
        m.update,
        m.delete,
        m.large,
        m.vacuum,
        m.ddl,
        if chaos { m.long_txn } else { 0 },
        m.ckpt_passive,
        m.ckpt_full,
        m.ckpt_restart,
        m.ckpt_truncate,
        u32::from(params.auto_vacuum) * m.delete.min(3),
    ];
    let seed = w.u64();
    let ps = params.page_size;
    match w.weighted(&weights) {
        0 => AppOp::Insert {
            rows: w.range(1, 8) as u32,
            size: w.range(8, u64::from(ps) * 3 / 2) as u32,
            seed,
        },
        1 => AppOp::Update {
            rows: w.range(1, 6) as u32,
            size: w.range(8, u64::from(ps)) as u32,
            seed,
        },
        2 => AppOp::Delete {
            rows: w.range(1, 10) as u32,
            seed,
        },
        3 => AppOp::Large {
            pages: w.range(2, 16) as u32,
            seed,
        },
        4 => AppOp::Vacuum,
        5 => AppOp::Ddl {
            kind: w.below(3) as u32,
            seed,
        },
        6 => AppOp::LongBegin {
            rows: w.range(2, 40) as u32,
            size: w.range(64, u64::from(ps)) as u32,
            seed,
        },
        7 => AppOp::Checkpoint {
            mode: CkptMode::Passive,
        },
        8 => AppOp::Checkpoint {
            mode: CkptMode::Full,
        },
        9 => AppOp::Checkpoint {
            mode: CkptMode::Restart,
        },
        10 => AppOp::Checkpoint {
            mode: CkptMode::Truncate,
        },
        _ => AppOp::IncrementalVacuum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_and_are_reproducible() {
        let p = Plan::generate(11, Params::draw(11));
        assert_eq!(p, Plan::generate(11, Params::draw(11)));
        let back = Plan::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        assert!(p.workload.windows(2).all(|w| w[0].t <= w[1].t));
        assert!(p.end() > p.liveness_deadline());
    }
}
