//! The harness's invariant checks (restores against the source's recorded states, the
//! persisted and durable positions) and queries over the trace of the current instance.

use super::*;
use crate::replicator::SnapshotReason;

impl Harness {
    /// Restores a TXID from the store.
    pub fn restore(&self, target: Target) -> Result<(u64, Vec<u8>), String> {
        self.store.restore(target)
    }

    /// Asserts that the store restores `txid` to exactly the source state at `key`.
    pub fn assert_restores(&self, txid: u64, key: PosKey) {
        let (got, image) = self
            .restore(Target::Txid(txid))
            .unwrap_or_else(|e| panic!("TXID {txid} does not restore: {e}"));
        assert_eq!(got, txid);
        let want = self.src.state_at(key).expect("a committed position");
        if let Some(d) = first_diff(&image, want) {
            panic!("TXID {txid} restores to another state than {key:?}: {d}");
        }
    }

    /// Asserts that restoring the latest state gives the source's current state.
    pub fn assert_latest_is_source(&self) {
        let (_, image) = self.restore(Target::Latest).expect("latest restores");
        if let Some(d) = first_diff(&image, &self.src.image()) {
            panic!("latest restore differs from the source: {d}");
        }
    }

    /// The invariants that hold after every step.
    pub fn check(&mut self) {
        let d = self.engine.durable();
        assert!(
            d.txid <= self.store.max_txid(),
            "durable TXID {} beyond the store's {}",
            d.txid,
            self.store.max_txid()
        );
        assert!(
            d.txid >= self.last_durable,
            "durable went backwards: {} after {}",
            d.txid,
            self.last_durable
        );
        self.last_durable = d.txid;
        let holes = self.store.level0_holes(d.txid);
        assert!(
            holes.is_empty(),
            "TXIDs {holes:?} are missing below durable {}",
            d.txid
        );
        if d.txid > 0 {
            let (got, image) = self
                .restore(Target::Txid(d.txid))
                .unwrap_or_else(|e| panic!("durable TXID {} does not restore: {e}", d.txid));
            assert_eq!(got, d.txid);
            if d.wal_end > 0 {
                let want = self
                    .src
                    .state_at((d.salt1, d.salt2, d.wal_end))
                    .unwrap_or_else(|| panic!("durable position {d:?} was never committed"));
                if let Some(x) = first_diff(&image, want) {
                    panic!("durable {d:?} restores to another state: {x}");
                }
            }
        }
        let todo: Vec<u64> = self
            .claims
            .keys()
            .copied()
            .filter(|t| !self.verified.contains(t))
            .collect();
        for t in todo {
            match self.store.restore(Target::Txid(t)) {
                Ok((got, image)) => {
                    assert_eq!(got, t);
                    if let Some(x) = first_diff(&image, &self.claims[&t]) {
                        panic!("TXID {t} restores to another state than its file claims: {x}");
                    }
                    self.verified.insert(t);
                }
                Err(e) => assert!(
                    t > d.txid || self.store.superseded(t),
                    "TXID {t} (durable {}) does not restore: {e}",
                    d.txid
                ),
            }
        }
    }

    /// Commands of the current instance.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.trace.iter().map(|(_, c)| c)
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.commands().filter_map(|c| match c {
            Command::Event(e) => Some(e),
            _ => None,
        })
    }

    /// Files cut by the current instance, in order.
    pub fn cuts(&self) -> Vec<FileId> {
        self.events()
            .filter_map(|e| match e {
                Event::FileCut { file, .. } => Some(*file),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, f: impl Fn(&Command) -> bool) -> usize {
        self.commands().filter(|c| f(c)).count()
    }

    /// The full files started so far: `(first TXID, reason)`.
    pub fn snapshots(&self) -> Vec<(u64, SnapshotReason)> {
        self.events()
            .filter_map(|e| match e {
                Event::SnapshotStarted { txid, reason, .. } => Some((*txid, *reason)),
                _ => None,
            })
            .collect()
    }

    /// An application transaction that must not find writers blocked.
    pub fn commit_ok(&mut self, pages: &[u32], commit: u32) -> PosKey {
        self.commit(pages, commit).expect("writers are not blocked")
    }
}
