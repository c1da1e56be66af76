//! Restoring from the simulated store, cheaply enough to do after every event.
//!
//! A restore is the chain of files Litestream's plan picks (the newest snapshot, then
//! the file reaching furthest at each step) applied in order. [`Planner`] computes that
//! chain for every target TXID incrementally: the chain for TXID `g` is a prefix of the
//! chain for `g - 1` plus one file ending at `g` (the first point where such a file
//! becomes a candidate), so each target costs one step and the restored state of each
//! chain node is kept as per-page checksums (8 bytes a page) rather than page bytes.
//! `restore_plan::plan` itself (the product code) is run on a sample of targets and at
//! the end of every run, and must pick exactly the same files.

use std::collections::BTreeMap;
use std::sync::Arc;

use walvault_engine::keys::{FileId, SNAPSHOT_LEVEL};
use walvault_engine::ltx::{Decoder, Header};

use crate::pagesum::page_checksum;

/// A decoded file: its header, (pgno, page checksum) in file order, and, when kept,
/// the pages' bytes in the same order (page `i` at `i * page_size`), which restores
/// to bytes reuse instead of decoding the stored file again.
pub struct Decoded {
    pub header: Header,
    pub pages: Vec<(u32, u64)>,
    pub data: Option<Vec<u8>>,
}

/// Fully decodes and validates an LTX file (page block, index, trailer, checksums);
/// `keep_pages`: keep the pages' bytes too.
pub fn decode(bytes: &[u8], keep_pages: bool) -> Result<Decoded, String> {
    let mut dec = Decoder::new(bytes).map_err(|e| e.to_string())?;
    let header = *dec.header();
    let mut buf = vec![0u8; header.page_size as usize];
    let mut pages = Vec::new();
    let mut data = keep_pages.then(Vec::new);
    while let Some(pgno) = dec.next_page(&mut buf).map_err(|e| e.to_string())? {
        pages.push((pgno, page_checksum(pgno, &buf)));
        if let Some(d) = data.as_mut() {
            d.extend_from_slice(&buf);
        }
    }
    dec.finish().map_err(|e| e.to_string())?;
    Ok(Decoded {
        header,
        pages,
        data,
    })
}

/// A restored database as per-page checksums.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub sums: Vec<u64>,
    pub xor: u64,
    pub page_size: u32,
}

impl Restored {
    pub fn commit(&self) -> u32 {
        self.sums.len() as u32
    }

    fn apply(&self, d: &Decoded, zero_sums: &mut ZeroSums) -> Restored {
        let ps = d.header.page_size;
        let lock = walvault_engine::ltx::lock_pgno(ps);
        let mut r = self.clone();
        r.page_size = ps;
        let commit = d.header.commit as usize;
        for &(pgno, s) in &d.pages {
            let i = pgno as usize - 1;
            while r.sums.len() <= i {
                let p = r.sums.len() as u32 + 1;
                let z = zero_sums.get(p, ps);
                r.sums.push(z);
                if p != lock {
                    r.xor ^= z;
                }
            }
            let old = std::mem::replace(&mut r.sums[i], s);
            if pgno != lock {
                r.xor ^= old ^ s;
            }
        }
        while r.sums.len() < commit {
            let p = r.sums.len() as u32 + 1;
            let z = zero_sums.get(p, ps);
            r.sums.push(z);
            if p != lock {
                r.xor ^= z;
            }
        }
        while r.sums.len() > commit {
            let p = r.sums.len() as u32;
            if let Some(s) = r.sums.pop()
                && p != lock
            {
                r.xor ^= s;
            }
        }
        r
    }
}

/// Checksums of all-zero pages (pages a restore never wrote read as zeros).
#[derive(Default)]
pub struct ZeroSums {
    cache: BTreeMap<(u32, u32), u64>,
    zero: Vec<u8>,
}

impl ZeroSums {
    fn get(&mut self, pgno: u32, ps: u32) -> u64 {
        if self.zero.len() != ps as usize {
            self.zero = vec![0u8; ps as usize];
        }
        let z = &self.zero;
        *self
            .cache
            .entry((pgno, ps))
            .or_insert_with(|| page_checksum(pgno, z))
    }
}

/// One position of a restore chain.
pub struct Node {
    /// The TXID reached.
    pub pos: u64,
    pub file: Option<FileId>,
    pub parent: Option<Arc<Node>>,
    pub restored: Arc<Restored>,
    /// Where the plan starts (the empty database or a snapshot): no earlier position.
    pub start: bool,
}

impl Node {
    /// The files of the chain, in order.
    pub fn files(&self) -> Vec<FileId> {
        let mut out = Vec::new();
        let mut n = Some(self);
        while let Some(node) = n {
            if let Some(f) = node.file {
                out.push(f);
            }
            n = node.parent.as_deref();
        }
        out.reverse();
        out
    }
}

/// Incremental restore planning over the files in the store.
#[derive(Default)]
pub struct Planner {
    files: BTreeMap<FileId, Arc<Decoded>>,
    /// Files by their max TXID.
    by_max: BTreeMap<u64, Vec<FileId>>,
    /// The chain tip of the plan for each target, valid from 1 up to its last key.
    tips: BTreeMap<u64, Arc<Node>>,
    root: Option<Arc<Node>>,
    zero_sums: ZeroSums,
}

/// Litestream's preference among candidates: furthest max, then smallest min, then
/// highest level.
fn better(a: FileId, b: FileId) -> bool {
    (a.max_txid, std::cmp::Reverse(a.min_txid), a.level)
        > (b.max_txid, std::cmp::Reverse(b.min_txid), b.level)
}

impl Planner {
    pub fn add(&mut self, id: FileId, d: Arc<Decoded>) {
        self.invalidate_from(id.max_txid);
        self.files.insert(id, d);
        let v = self.by_max.entry(id.max_txid).or_default();
        if !v.contains(&id) {
            v.push(id);
        }
    }

    pub fn remove(&mut self, id: FileId) {
        self.invalidate_from(id.max_txid);
        self.files.remove(&id);
        if let Some(v) = self.by_max.get_mut(&id.max_txid) {
            v.retain(|f| *f != id);
            if v.is_empty() {
                self.by_max.remove(&id.max_txid);
            }
        }
    }

    fn invalidate_from(&mut self, txid: u64) {
        let _ = self.tips.split_off(&txid);
    }

    pub fn contains(&self, id: FileId) -> bool {
        self.files.contains_key(&id)
    }

    pub fn max_txid(&self) -> u64 {
        self.by_max.keys().next_back().copied().unwrap_or(0)
    }

    /// Distinct max TXIDs at or above `from`.
    pub fn targets_from(&self, from: u64) -> Vec<u64> {
        self.by_max.range(from..).map(|(k, _)| *k).collect()
    }

    pub fn files_ending_at(&self, txid: u64) -> Vec<FileId> {
        self.by_max.get(&txid).cloned().unwrap_or_default()
    }

    pub fn all_files(&self) -> Vec<FileId> {
        self.files.keys().copied().collect()
    }

    fn root(&mut self) -> Arc<Node> {
        self.root
            .get_or_insert_with(|| {
                Arc::new(Node {
                    pos: 0,
                    file: None,
                    parent: None,
                    restored: Arc::new(Restored::default()),
                    start: true,
                })
            })
            .clone()
    }

    fn extend(&mut self, parent: &Arc<Node>, f: FileId, start: bool) -> Arc<Node> {
        let d = Arc::clone(&self.files[&f]);
        let restored = Arc::new(parent.restored.apply(&d, &mut self.zero_sums));
        Arc::new(Node {
            pos: f.max_txid,
            file: Some(f),
            parent: Some(Arc::clone(parent)),
            restored,
            start,
        })
    }

    /// The chain `restore_plan::plan(files, Txid(goal))` follows: its tip reaches
    /// `goal` when the plan succeeds, and stops short where the plan fails.
    pub fn plan(&mut self, goal: u64) -> Arc<Node> {
        if goal == 0 {
            return self.root();
        }
        if let Some(n) = self.tips.get(&goal) {
            return Arc::clone(n);
        }
        let start = self
            .tips
            .keys()
            .next_back()
            .copied()
            .filter(|&k| k < goal)
            .unwrap_or(0);
        let mut prev = if start == 0 {
            self.root()
        } else {
            Arc::clone(&self.tips[&start])
        };
        for g in start + 1..=goal {
            let tip = self.step(&prev, g);
            self.tips.insert(g, Arc::clone(&tip));
            prev = tip;
        }
        prev
    }

    /// The plan for `g` from the plan for `g - 1` (whose tip is `prev`).
    fn step(&mut self, prev: &Arc<Node>, g: u64) -> Arc<Node> {
        let ending: Vec<FileId> = self.files_ending_at(g);
        if ending.is_empty() {
            return Arc::clone(prev);
        }
        // A snapshot ending at g is where the plan starts, and it is complete.
        if let Some(s) = ending
            .iter()
            .copied()
            .filter(|f| f.level == SNAPSHOT_LEVEL && f.min_txid == 1)
            .max_by_key(|f| f.max_txid)
        {
            let root = self.root();
            return self.extend(&root, s, true);
        }
        // Positions of the previous chain, oldest first (the root or its snapshot).
        let mut path: Vec<Arc<Node>> = Vec::new();
        let mut n = Some(Arc::clone(prev));
        let lowest = ending.iter().map(|f| f.min_txid).min().unwrap_or(1);
        while let Some(node) = n {
            let stop = node.start || node.pos + 1 < lowest;
            n = node.parent.clone();
            path.push(node);
            if stop {
                break;
            }
        }
        path.reverse();
        for node in &path {
            let mut best: Option<FileId> = None;
            for &f in &ending {
                if f.min_txid <= node.pos + 1 && best.is_none_or(|b| better(f, b)) {
                    best = Some(f);
                }
            }
            if let Some(f) = best {
                return self.extend(node, f, false);
            }
        }
        Arc::clone(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walvault_engine::restore_plan::{RemoteFile, Target, plan};

    fn id(level: u8, min: u64, max: u64) -> FileId {
        FileId {
            level,
            min_txid: min,
            max_txid: max,
        }
    }

    fn dummy(commit: u32) -> Arc<Decoded> {
        Arc::new(Decoded {
            header: Header {
                page_size: 512,
                commit,
                ..Header::default()
            },
            pages: Vec::new(),
            data: None,
        })
    }

    /// The incremental planner picks exactly the files `restore_plan::plan` picks.
    #[test]
    fn matches_restore_plan() {
        let sets: Vec<Vec<FileId>> = vec![
            vec![id(0, 1, 1), id(0, 2, 2), id(0, 3, 3), id(0, 2, 3)],
            vec![
                id(0, 1, 1),
                id(0, 2, 2),
                id(0, 4, 4),
                id(0, 3, 5),
                id(0, 6, 6),
            ],
            vec![
                id(0, 1, 1),
                id(0, 2, 2),
                id(9, 1, 2),
                id(0, 3, 3),
                id(9, 1, 4),
                id(0, 4, 4),
                id(0, 5, 5),
            ],
            vec![id(0, 2, 2), id(0, 3, 3), id(0, 1, 3)],
            vec![
                id(9, 1, 2),
                id(1, 1, 3),
                id(0, 3, 3),
                id(0, 4, 4),
                id(0, 1, 1),
            ],
            vec![
                id(0, 1, 1),
                id(0, 3, 3),
                id(1, 1, 2),
                id(0, 2, 2),
                id(0, 4, 6),
                id(0, 5, 5),
            ],
        ];
        for files in sets {
            let mut p = Planner::default();
            for f in &files {
                p.add(*f, dummy(1));
            }
            let remote: Vec<RemoteFile> = files
                .iter()
                .map(|f| RemoteFile {
                    id: *f,
                    size: 1,
                    timestamp_ms: None,
                })
                .collect();
            for g in 1..=7 {
                let tip = p.plan(g);
                match plan(&remote, Target::Txid(g)) {
                    Ok(pl) => {
                        let want: Vec<FileId> = pl.files.iter().map(|f| f.id).collect();
                        assert_eq!(tip.pos, g, "{files:?} goal {g}");
                        assert_eq!(tip.files(), want, "{files:?} goal {g}");
                    }
                    Err(_) => assert_ne!(tip.pos, g, "{files:?} goal {g}"),
                }
            }
        }
    }
}
