//! The invariants that read the store: every file's claim, every TXID's restore, the
//! durable frontier, checkpoint safety and lag. Called incrementally by world.rs: when
//! an object lands or vanishes, when the engine reports durability, when a checkpoint
//! runs. Costs stay per-event small: a landing re-checks only the targets it can affect
//! and each restore is one step of [`Planner`].
//!
//! A file's *claim* is the source state it says it holds: the state ended by the WAL
//! position in its header (salts, offset + size), or, for a full file written without
//! a WAL, the state whose database checksum it matches (a torn snapshot matches none).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use walvault_engine::keys::{self, FileId, Layout};
use walvault_engine::replicator::Position;
use walvault_engine::restore_plan::{self, RemoteFile, Target};

use crate::invariant::{Inv, Violation};
use crate::oracle::Oracle;
use crate::restore::{Decoded, Planner, decode};
use crate::store::{Digest32, Object};

pub const DB_NAME: &str = "sim";

pub fn key_of(id: FileId) -> String {
    keys::ltx_key(Layout::S3, DB_NAME, id)
}

pub fn parse_key(key: &str) -> Option<FileId> {
    let prefix = keys::db_prefix(Layout::S3, DB_NAME);
    keys::parse_rel_key(Layout::S3, key.strip_prefix(&prefix)?)
}

struct FileInfo {
    bytes: Arc<Vec<u8>>,
    /// The stored bytes as the engine's decoder read them when they landed.
    decoded: Arc<Decoded>,
    claim: u32,
}

/// Decoded pages kept per run for restores to bytes (`Decoded::data`); past this,
/// files are decoded again when restored.
const KEPT_PAGES_MAX: usize = 64 << 20;

type Analysis = Result<(Arc<Decoded>, u32), String>;

pub struct Checker {
    pub lossy: bool,
    planner: Planner,
    info: BTreeMap<FileId, FileInfo>,
    /// The state each TXID is claimed to hold (by the files ending there).
    txid_claim: BTreeMap<u64, u32>,
    /// TXIDs the engine reported durable, with the state they must restore to.
    durable: BTreeMap<u64, u32>,
    /// TXIDs whose files the store lost (lossy profile): exempt from durability.
    lost: BTreeSet<u64>,
    /// The last byte-level restore: its files, image, commit and page size.
    byte_cache: Option<(Vec<FileId>, Vec<u8>, u32, usize)>,
    /// Decoded files and their claims, by content digest (claims never change).
    analyses: BTreeMap<Digest32, Analysis>,
    /// Bytes of decoded pages kept so far (`KEPT_PAGES_MAX`).
    kept_pages: usize,
    pub restore_checks: u64,
    pub plan_cross_checks: u64,
    pub byte_compares: u64,
    pub orphans: u64,
}

fn v(inv: Inv, at_ms: u64, detail: String) -> Violation {
    Violation { inv, at_ms, detail }
}

impl Checker {
    pub fn new(lossy: bool) -> Checker {
        Checker {
            lossy,
            planner: Planner::default(),
            info: BTreeMap::new(),
            txid_claim: BTreeMap::new(),
            durable: BTreeMap::new(),
            lost: BTreeSet::new(),
            analyses: BTreeMap::new(),
            kept_pages: 0,
            byte_cache: None,
            restore_checks: 0,
            plan_cross_checks: 0,
            byte_compares: 0,
            orphans: 0,
        }
    }

    /// The state a file's bytes claim (see the module comment).
    pub fn claim_of(
        bytes: &[u8],
        oracle: &Oracle,
        keep_pages: bool,
    ) -> Result<(Decoded, u32), String> {
        let d = decode(bytes, keep_pages).map_err(|e| format!("not a valid LTX file: {e}"))?;
        let h = d.header;
        if h.wal_salt1 | h.wal_salt2 != 0 {
            let end = h.wal_offset + h.wal_size;
            let idx = oracle
                .lookup(h.wal_salt1, h.wal_salt2, end)
                .ok_or_else(|| {
                    format!(
                        "claims WAL position {:08x}/{:08x}@{end}, which never ended a commit",
                        h.wal_salt1, h.wal_salt2
                    )
                })?;
            return Ok((d, idx));
        }
        // A full file without a WAL: it must be some state of the source, exactly.
        let mut xor = 0u64;
        let lock = walvault_engine::ltx::lock_pgno(h.page_size);
        for &(p, s) in &d.pages {
            if p != lock {
                xor ^= s;
            }
        }
        match oracle.find_by_content(xor, h.commit).last() {
            Some(&idx) => Ok((d, idx)),
            None => Err(format!(
                "full file without a WAL position matches no state of the source ({} pages): a torn snapshot",
                h.commit
            )),
        }
    }

    /// The claim a file would have, checked against what is already stored for its
    /// TXID (TXID reuse with other contents is a chain violation).
    pub fn check_new_file(
        &mut self,
        id: FileId,
        bytes: &[u8],
        digest: Digest32,
        oracle: &Oracle,
        now: u64,
    ) -> Result<(Arc<Decoded>, u32), Violation> {
        let analysis = match self.analyses.get(&digest) {
            Some(a) => a.clone(),
            None => {
                let keep = self.kept_pages < KEPT_PAGES_MAX;
                let a = Self::claim_of(bytes, oracle, keep).map(|(d, c)| (Arc::new(d), c));
                if let Ok((d, _)) = &a {
                    self.kept_pages += d.data.as_ref().map_or(0, Vec::len);
                }
                if self.analyses.len() > 4096 {
                    self.analyses.clear();
                }
                self.analyses.insert(digest, a.clone());
                a
            }
        };
        let (d, claim) = analysis.map_err(|e| v(Inv::Restore, now, format!("{id}: {e}")))?;
        if d.header.min_txid != id.min_txid || d.header.max_txid != id.max_txid {
            return Err(v(
                Inv::Restore,
                now,
                format!(
                    "{id}: header TXIDs {}-{} differ from the key",
                    d.header.min_txid, d.header.max_txid
                ),
            ));
        }
        if let Some(&prev) = self.txid_claim.get(&id.max_txid)
            && prev != claim
            && !self.lost.contains(&id.max_txid)
        {
            return Err(v(
                Inv::Chain,
                now,
                format!(
                    "TXID {} reused: {id} holds source state #{claim} but the store already holds state #{prev} for that TXID",
                    id.max_txid
                ),
            ));
        }
        Ok((d, claim))
    }

    /// An object landed in the store.
    pub fn on_stored(
        &mut self,
        now: u64,
        key: &str,
        obj: &Object,
        oracle: &Oracle,
    ) -> Result<(), Violation> {
        let Some(id) = parse_key(key) else {
            return Err(v(Inv::Harness, now, format!("unexpected key {key}")));
        };
        let (d, claim) = self.check_new_file(id, &obj.bytes, obj.digest, oracle, now)?;
        // Claims never go back in time along the TXIDs.
        if !self.lost.contains(&id.max_txid) {
            if let Some((&t, &c)) = self.txid_claim.range(..id.max_txid).next_back()
                && c > claim
                && !self.lost.contains(&t)
            {
                return Err(v(
                    Inv::Chain,
                    now,
                    format!("{id} claims source state #{claim}, older than TXID {t}'s state #{c}"),
                ));
            }
            if let Some((&t, &c)) = self.txid_claim.range(id.max_txid + 1..).next()
                && c < claim
                && !self.lost.contains(&t)
            {
                return Err(v(
                    Inv::Chain,
                    now,
                    format!("{id} claims source state #{claim}, newer than TXID {t}'s state #{c}"),
                ));
            }
        }
        self.txid_claim.insert(id.max_txid, claim);
        self.info.insert(
            id,
            FileInfo {
                bytes: Arc::clone(&obj.bytes),
                decoded: Arc::clone(&d),
                claim,
            },
        );
        self.planner.add(id, d);
        for t in self.planner.targets_from(id.min_txid) {
            self.check_target(t, oracle, now)?;
        }
        Ok(())
    }

    /// The store lost an object (lossy profile).
    pub fn on_lost(&mut self, key: &str) {
        self.byte_cache = None;
        if let Some(id) = parse_key(key) {
            self.planner.remove(id);
            self.info.remove(&id);
            for t in id.min_txid..=id.max_txid {
                self.lost.insert(t);
            }
        }
    }

    pub fn lost_any(&self) -> bool {
        !self.lost.is_empty()
    }

    fn lossy_exempt(&self, txid: u64) -> bool {
        self.lossy && self.lost.range(..=txid).next().is_some()
    }

    /// Restore of `t` reaches `t` and equals the claim of its last file, or fails
    /// closed where that is allowed (not durable, or lost).
    pub fn check_target(&mut self, t: u64, oracle: &Oracle, now: u64) -> Result<(), Violation> {
        self.restore_checks += 1;
        let tip = self.planner.plan(t);
        if tip.pos != t {
            if let Some(&want) = self.durable.get(&t)
                && !self.lossy_exempt(t)
            {
                return Err(v(
                    Inv::Durability,
                    now,
                    format!(
                        "TXID {t} was reported durable (source state #{want}) but no longer restores: the chain stops at {}",
                        tip.pos
                    ),
                ));
            }
            self.orphans += 1;
            return Ok(());
        }
        let Some(last) = tip.file else {
            return Ok(());
        };
        let claim = self.info.get(&last).map(|i| i.claim).unwrap_or(0);
        let want = oracle.state(claim);
        let got = &tip.restored;
        if got.xor != want.checksum || got.commit() != want.commit {
            let files: Vec<String> = tip.files().iter().map(|f| f.to_string()).collect();
            return Err(v(
                Inv::Restore,
                now,
                format!(
                    "restore of TXID {t} (files {}) gives {} pages with checksum {:016x}; {last} claims source state #{claim}: {} pages, checksum {:016x}",
                    files.join(", "),
                    got.commit(),
                    got.xor,
                    want.commit,
                    want.checksum
                ),
            ));
        }
        if let Some(&d) = self.durable.get(&t)
            && d != claim
            && !self.lossy_exempt(t)
        {
            return Err(v(
                Inv::Durability,
                now,
                format!(
                    "TXID {t} was durable as source state #{d}, now restores to state #{claim}"
                ),
            ));
        }
        Ok(())
    }

    /// The engine reported `pos` durable: the store must restore it to the state at
    /// that WAL position (every commit at or below it).
    pub fn on_durable(
        &mut self,
        pos: Position,
        oracle: &Oracle,
        now: u64,
    ) -> Result<(), Violation> {
        let t = pos.txid;
        if self.lossy_exempt(t) {
            return Ok(());
        }
        let tip = self.planner.plan(t);
        if tip.pos != t {
            return Err(v(
                Inv::Durability,
                now,
                format!(
                    "the engine reports TXID {t} durable but the store cannot restore it (chain stops at {}; files ending at {t}: {:?})",
                    tip.pos,
                    self.planner.files_ending_at(t)
                ),
            ));
        }
        let claim = tip
            .file
            .and_then(|f| self.info.get(&f))
            .map(|i| i.claim)
            .unwrap_or(0);
        if pos.salt1 | pos.salt2 != 0 {
            match oracle.lookup(pos.salt1, pos.salt2, pos.wal_end) {
                Some(s) if s == claim => {}
                Some(s) => {
                    return Err(v(
                        Inv::Durability,
                        now,
                        format!(
                            "durable position TXID {t} at WAL {:08x}@{} is source state #{s}, but the store restores state #{claim}",
                            pos.salt1, pos.wal_end
                        ),
                    ));
                }
                None => {
                    return Err(v(
                        Inv::Durability,
                        now,
                        format!(
                            "durable position TXID {t} names WAL offset {} that never ended a commit",
                            pos.wal_end
                        ),
                    ));
                }
            }
        }
        self.check_target(t, oracle, now)?;
        self.durable.insert(t, claim);
        Ok(())
    }

    /// A persisted position must never run ahead of what the store holds.
    pub fn on_persist(
        &mut self,
        pos: Position,
        oracle: &Oracle,
        now: u64,
    ) -> Result<(), Violation> {
        if self.lossy_exempt(pos.txid) || pos.txid == 0 {
            return Ok(());
        }
        let tip = self.planner.plan(pos.txid);
        if tip.pos != pos.txid {
            return Err(v(
                Inv::Durability,
                now,
                format!(
                    "position TXID {} persisted but the store restores only up to {}",
                    pos.txid, tip.pos
                ),
            ));
        }
        if pos.salt1 | pos.salt2 != 0 {
            let claim = tip.file.and_then(|f| self.info.get(&f)).map(|i| i.claim);
            let at = oracle.lookup(pos.salt1, pos.salt2, pos.wal_end);
            if at.is_none() || at != claim {
                return Err(v(
                    Inv::Durability,
                    now,
                    format!(
                        "persisted position TXID {} (WAL @{}) is source state {at:?}, the store holds {claim:?}",
                        pos.txid, pos.wal_end
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Invariant 4, checked as a checkpoint starts folding frames: every committed
    /// frame in the WAL is covered by the durable position, and the store has it.
    pub fn check_checkpoint(
        &mut self,
        durable: Position,
        oracle: &Oracle,
        now: u64,
    ) -> Result<(), Violation> {
        let Some((s1, s2, end)) = oracle.wal_position() else {
            return Ok(());
        };
        if end <= 32 {
            return Ok(());
        }
        if (durable.salt1, durable.salt2, durable.wal_end) != (s1, s2, end) {
            return Err(v(
                Inv::Checkpoint,
                now,
                format!(
                    "checkpoint while the WAL ({s1:08x}/{s2:08x}) holds commits up to offset {end} but the durable position is TXID {} at {:08x}@{}",
                    durable.txid, durable.salt1, durable.wal_end
                ),
            ));
        }
        if self.lossy_exempt(durable.txid) {
            return Ok(());
        }
        let tip = self.planner.plan(durable.txid);
        let want = oracle.lookup(s1, s2, end);
        let claim = tip.file.and_then(|f| self.info.get(&f)).map(|i| i.claim);
        if tip.pos != durable.txid || claim != want {
            return Err(v(
                Inv::Checkpoint,
                now,
                format!(
                    "checkpoint of the WAL up to state {want:?} but the store restores TXID {} only to state {claim:?} (chain at {})",
                    durable.txid, tip.pos
                ),
            ));
        }
        Ok(())
    }

    /// Lag is zero: the durable TXID restores to the source's current state.
    pub fn lag_zero(&mut self, durable_txid: u64, oracle: &Oracle) -> Result<(), String> {
        let tip = self.planner.plan(durable_txid);
        if tip.pos != durable_txid {
            return Err(format!("durable TXID {durable_txid} does not restore"));
        }
        let claim = tip.file.and_then(|f| self.info.get(&f)).map(|i| i.claim);
        let cur = oracle.current();
        if claim != Some(cur) {
            let s = oracle.state(cur);
            return Err(format!(
                "source is at state #{cur} ({} pages), the replica at TXID {durable_txid} holds state {claim:?}",
                s.commit
            ));
        }
        Ok(())
    }

    /// `restore_plan::plan` (the product's planner) must pick the files the
    /// incremental planner picked.
    pub fn cross_check_plan(&mut self, target: Target, now: u64) -> Result<(), Violation> {
        self.plan_cross_checks += 1;
        let files: Vec<RemoteFile> = self
            .info
            .iter()
            .map(|(id, i)| RemoteFile {
                id: *id,
                size: i.bytes.len() as u64,
                timestamp_ms: None,
            })
            .collect();
        let goal = match target {
            Target::Txid(t) => t,
            _ => self.planner.max_txid(),
        };
        let tip = self.planner.plan(goal);
        let ours = (tip.pos == goal && goal > 0).then(|| tip.files());
        let theirs = restore_plan::plan(&files, target)
            .ok()
            .map(|p| p.files.iter().map(|f| f.id).collect::<Vec<_>>());
        if ours != theirs {
            return Err(v(
                Inv::Harness,
                now,
                format!(
                    "restore_plan::plan({target:?}) chose {theirs:?}, the checker's planner {ours:?}"
                ),
            ));
        }
        Ok(())
    }

    /// A real restore of `t` into bytes: decode every file of the plan and write its
    /// pages in order, as `walvault restore` does. A file whose pages were kept when
    /// it landed is not decoded again: those are the pages the engine's decoder
    /// produced from exactly these stored bytes, fully checked then, and decoding the
    /// same bytes gives the same pages. The image of the last restore is kept, so a
    /// plan that extends it only writes the new files.
    pub fn restore_bytes(&mut self, t: u64) -> Result<(Vec<u8>, u32), String> {
        let tip = self.planner.plan(t);
        if tip.pos != t {
            return Err(format!(
                "TXID {t} does not restore (chain stops at {})",
                tip.pos
            ));
        }
        let files = tip.files();
        let (mut out, mut commit, mut page_size, skip) = match self.byte_cache.take() {
            Some((chain, img, c, ps))
                if chain.len() <= files.len() && files[..chain.len()] == chain[..] =>
            {
                let n = chain.len();
                (img, c, ps, n)
            }
            _ => (Vec::new(), 0u32, 0usize, 0),
        };
        for f in &files[skip..] {
            let Some(info) = self.info.get(f) else {
                return Err(format!("{f} vanished"));
            };
            let h = info.decoded.header;
            page_size = h.page_size as usize;
            let again;
            let d = match &info.decoded.data {
                Some(_) => &info.decoded,
                None => {
                    again = decode(&info.bytes, true)?;
                    &again
                }
            };
            let data = d.data.as_deref().unwrap_or_default();
            for (&(p, _), page) in d.pages.iter().zip(data.chunks_exact(page_size)) {
                let at = (p as usize - 1) * page_size;
                if out.len() < at + page_size {
                    out.resize(at + page_size, 0);
                }
                out[at..at + page_size].copy_from_slice(page);
            }
            commit = h.commit;
            out.resize(commit as usize * page_size, 0);
        }
        let claim = tip
            .file
            .and_then(|f| self.info.get(&f))
            .map(|i| i.claim)
            .unwrap_or(0);
        self.byte_cache = Some((files, out.clone(), commit, page_size));
        Ok((out, claim))
    }

    /// Byte-for-byte comparison of the restore of `t` with the source, when the
    /// oracle still has that state's bytes.
    pub fn byte_compare(&mut self, t: u64, oracle: &Oracle, now: u64) -> Result<bool, Violation> {
        // Most sampled targets are states whose bytes the oracle no longer has: find
        // that out from the plan before decoding the chain (every stored file was
        // already fully decoded and checked once, when it was built).
        let tip = self.planner.plan(t);
        let claim = tip
            .file
            .and_then(|f| self.info.get(&f))
            .map(|i| i.claim)
            .unwrap_or(0);
        if tip.pos != t || oracle.image_of(claim).is_none() {
            return Ok(false);
        }
        let (bytes, claim) = match self.restore_bytes(t) {
            Ok(x) => x,
            Err(_) => return Ok(false),
        };
        let Some(img) = oracle.image_of(claim) else {
            return Ok(false);
        };
        self.byte_compares += 1;
        if !img.eq_bytes(&bytes) {
            let first = img.differing_pages(&bytes).next();
            return Err(v(
                Inv::Restore,
                now,
                format!(
                    "restore of TXID {t} differs from source state #{claim} byte for byte ({} vs {} bytes, first differing page {first:?})",
                    bytes.len(),
                    img.len()
                ),
            ));
        }
        Ok(true)
    }

    pub fn max_txid(&self) -> u64 {
        self.planner.max_txid()
    }

    pub fn has_file(&self, id: FileId) -> bool {
        self.planner.contains(id)
    }

    pub fn durable_max(&self) -> u64 {
        self.durable.keys().next_back().copied().unwrap_or(0)
    }
}
