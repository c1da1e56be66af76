//! Restore planning: which files, in which order, rebuild a database at a target
//! point. Mirrors Litestream's plan (newest usable snapshot, then the files that
//! extend the TXID chain furthest) so both tools pick the same files; the one
//! difference is a timestamp target, which includes files written at exactly that
//! millisecond (see [`Target::Timestamp`]).

use crate::keys::{FileId, SNAPSHOT_LEVEL};

/// One file as listed in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub id: FileId,
    pub size: u64,
    /// Creation time of the data (header timestamp / `litestream-timestamp`), if known.
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Latest,
    Txid(u64),
    /// The newest state built only from files timestamped at or before this Unix time
    /// (ms), as far as those files reach contiguously: the newest TXID at or before the
    /// time. Litestream uses only files strictly before it (`CreatedAt.Before`), so
    /// for a time equal to a file's timestamp to the millisecond Litestream restores the
    /// state before that file and walvault the state after it; at any other time both
    /// pick the same files.
    Timestamp(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Files to apply in order; later files win.
    pub files: Vec<RemoteFile>,
    /// TXID of the restored state.
    pub txid: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no backup files found")]
    Empty,
    #[error("no snapshot (a file starting at TXID 1) is available for the target")]
    NoSnapshot,
    #[error("the TXID chain has a gap after {after:016x}: no file starts at or before {next:016x}", next = after + 1)]
    Gap { after: u64 },
    #[error("TXID {target:016x} is not restorable: the backup reaches {reached:016x}")]
    Unreachable { target: u64, reached: u64 },
    #[error("no file was written at or before the requested time")]
    TooEarly,
}

/// Where a store's chain stands, for a replicator starting on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainTip {
    /// Highest TXID of any file (new files go above it).
    pub max_txid: u64,
    /// How far a restore gets: through a snapshot and a contiguous chain. Anything
    /// above (files after a lost one) must not be extended.
    pub chain_end: u64,
    /// The file that ends at `chain_end`, at the lowest level holding it (level-0
    /// files carry the WAL position they end at).
    pub newest: Option<FileId>,
}

/// The tip of a store holding `files`; `None` when it holds none.
pub fn chain_tip(files: &[RemoteFile]) -> Option<ChainTip> {
    let max_txid = files.iter().map(|f| f.id.max_txid).max()?;
    let chain_end = match plan(files, Target::Latest) {
        Ok(p) => p.txid,
        Err(PlanError::Gap { after }) => after,
        Err(_) => 0,
    };
    let newest = files
        .iter()
        .filter(|f| chain_end > 0 && f.id.max_txid == chain_end)
        .min_by_key(|f| f.id.level)
        .map(|f| f.id);
    Some(ChainTip {
        max_txid,
        chain_end,
        newest,
    })
}

pub fn plan(files: &[RemoteFile], target: Target) -> Result<Plan, PlanError> {
    if files.is_empty() {
        return Err(PlanError::Empty);
    }
    let eligible: Vec<&RemoteFile> = match target {
        Target::Timestamp(ts) => files
            .iter()
            .filter(|f| f.timestamp_ms.is_some_and(|t| t <= ts))
            .collect(),
        _ => files.iter().collect(),
    };
    if eligible.is_empty() {
        return Err(PlanError::TooEarly);
    }
    let newest = eligible.iter().map(|f| f.id.max_txid).max().unwrap_or(0);
    let goal = match target {
        Target::Txid(t) => {
            if t > newest || t == 0 {
                return Err(PlanError::Unreachable {
                    target: t,
                    reached: newest,
                });
            }
            t
        }
        _ => newest,
    };
    let within: Vec<&RemoteFile> = eligible
        .into_iter()
        .filter(|f| f.id.max_txid <= goal)
        .collect();

    // Start from the newest snapshot-level file that fits, as Litestream does.
    let mut chosen: Vec<RemoteFile> = Vec::new();
    let mut current = 0u64;
    if let Some(snap) = within
        .iter()
        .filter(|f| f.id.level == SNAPSHOT_LEVEL && f.id.min_txid == 1)
        .max_by_key(|f| f.id.max_txid)
    {
        current = snap.id.max_txid;
        chosen.push((*snap).clone());
    }
    while current < goal {
        let next = within
            .iter()
            .filter(|f| f.id.min_txid <= current + 1 && f.id.max_txid > current)
            .max_by(|a, b| {
                a.id.max_txid
                    .cmp(&b.id.max_txid)
                    .then(b.id.min_txid.cmp(&a.id.min_txid))
                    .then(a.id.level.cmp(&b.id.level))
            });
        match next {
            Some(f) => {
                current = f.id.max_txid;
                chosen.push((*f).clone());
            }
            None if current == 0 => return Err(PlanError::NoSnapshot),
            // Like Litestream: the furthest contiguous state made of the files up to the
            // time (newer files are excluded, so a later gap is not an error).
            None if matches!(target, Target::Timestamp(_)) => break,
            None if matches!(target, Target::Txid(_)) => {
                return Err(PlanError::Unreachable {
                    target: goal,
                    reached: current,
                });
            }
            None => return Err(PlanError::Gap { after: current }),
        }
    }
    Ok(Plan {
        files: chosen,
        txid: current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64) -> RemoteFile {
        RemoteFile {
            id: FileId {
                level,
                min_txid: min,
                max_txid: max,
            },
            size: 1,
            timestamp_ms: Some(max as i64 * 1000),
        }
    }

    fn ids(p: &Plan) -> Vec<(u8, u64, u64)> {
        p.files
            .iter()
            .map(|f| (f.id.level, f.id.min_txid, f.id.max_txid))
            .collect()
    }

    #[test]
    fn chain_tip_stops_at_a_hole_and_prefers_level_0() {
        assert_eq!(chain_tip(&[]), None);
        // 4 is lost: 5 and 6 exist but no restore reaches them.
        let files = vec![
            f(0, 1, 1),
            f(0, 2, 2),
            f(1, 1, 3),
            f(0, 3, 3),
            f(0, 5, 5),
            f(0, 6, 6),
        ];
        let t = chain_tip(&files).unwrap();
        assert_eq!((t.max_txid, t.chain_end), (6, 3));
        assert_eq!(t.newest.map(|id| (id.level, id.min_txid)), Some((0, 3)));
        // A file spanning skipped TXIDs (a fence) continues the chain.
        let files = vec![f(0, 1, 1), f(0, 2, 2000), f(0, 2001, 2001)];
        let t = chain_tip(&files).unwrap();
        assert_eq!((t.max_txid, t.chain_end), (2001, 2001));
        // No snapshot at all: nothing is reachable.
        let t = chain_tip(&[f(0, 2, 2)]).unwrap();
        assert_eq!((t.max_txid, t.chain_end, t.newest), (2, 0, None));
    }

    #[test]
    fn latest_prefers_snapshot_then_highest_levels() {
        let files = vec![
            f(0, 1, 1),
            f(0, 2, 2),
            f(0, 3, 3),
            f(0, 4, 4),
            f(1, 1, 3),
            f(9, 1, 2),
        ];
        let p = plan(&files, Target::Latest).unwrap();
        assert_eq!(ids(&p), vec![(9, 1, 2), (1, 1, 3), (0, 4, 4)]);
        assert_eq!(p.txid, 4);
    }

    #[test]
    fn txid_target_stops_exactly() {
        let files = vec![f(0, 1, 1), f(0, 2, 2), f(0, 3, 3), f(1, 1, 3)];
        assert_eq!(
            ids(&plan(&files, Target::Txid(2)).unwrap()),
            vec![(0, 1, 1), (0, 2, 2)]
        );
        assert_eq!(
            plan(&files, Target::Txid(9)),
            Err(PlanError::Unreachable {
                target: 9,
                reached: 3
            })
        );
    }

    #[test]
    fn gap_is_an_error() {
        let files = vec![f(0, 1, 1), f(0, 2, 2), f(0, 4, 4)];
        assert_eq!(
            plan(&files, Target::Latest),
            Err(PlanError::Gap { after: 2 })
        );
        assert_eq!(
            plan(&[f(0, 2, 2)], Target::Latest),
            Err(PlanError::NoSnapshot)
        );
    }

    #[test]
    fn full_file_mid_chain_supersedes() {
        // A full-database file 3..5 written after a lost file: restore latest skips 4.
        let files = vec![f(0, 1, 1), f(0, 2, 2), f(0, 4, 4), f(0, 3, 5), f(0, 6, 6)];
        assert_eq!(
            ids(&plan(&files, Target::Latest).unwrap()),
            vec![(0, 1, 1), (0, 2, 2), (0, 3, 5), (0, 6, 6)]
        );
    }

    #[test]
    fn timestamp_picks_newest_at_or_before() {
        let files = vec![f(0, 1, 1), f(0, 2, 2), f(0, 3, 3)];
        assert_eq!(plan(&files, Target::Timestamp(2_500)).unwrap().txid, 2);
        // A file written at exactly the time is in (Litestream would leave it out).
        assert_eq!(plan(&files, Target::Timestamp(2_000)).unwrap().txid, 2);
        assert_eq!(plan(&files, Target::Timestamp(1_999)).unwrap().txid, 1);
        assert_eq!(plan(&files, Target::Timestamp(2_001)).unwrap().txid, 2);
        assert_eq!(plan(&files, Target::Timestamp(1_000)).unwrap().txid, 1);
        assert_eq!(plan(&files, Target::Timestamp(3_000)).unwrap().txid, 3);
        assert_eq!(
            plan(&files, Target::Timestamp(999)),
            Err(PlanError::TooEarly)
        );
        // A file without a known time never qualifies.
        let mut untimed = files.clone();
        untimed[2].timestamp_ms = None;
        assert_eq!(plan(&untimed, Target::Timestamp(9_000)).unwrap().txid, 2);
    }

    #[test]
    fn timestamp_stops_at_the_furthest_contiguous_file() {
        // L0 3 was retired; the L1 file covering 3-5 is newer than the target: the
        // state reachable from files before the time is TXID 2 (Litestream agrees).
        let mut l1 = f(1, 3, 5);
        l1.timestamp_ms = Some(5_000);
        let files = vec![f(9, 1, 2), f(0, 4, 4), l1, f(0, 5, 5)];
        let p = plan(&files, Target::Timestamp(4_500)).unwrap();
        assert_eq!((ids(&p), p.txid), (vec![(9, 1, 2)], 2));
        // At the L1 file's exact time it qualifies and the chain reaches 5.
        let p = plan(&files, Target::Timestamp(5_000)).unwrap();
        assert_eq!((ids(&p), p.txid), (vec![(9, 1, 2), (1, 3, 5)], 5));
        // Without a starting snapshot there is nothing to restore.
        assert_eq!(
            plan(&[f(0, 2, 2)], Target::Timestamp(9_000)),
            Err(PlanError::NoSnapshot)
        );
    }
}
