//! The simulated source: a database file image and a WAL written by [`WalWriter`],
//! changed the way SQLite changes them, plus the history of every committed state.
//!
//! Modelled SQLite behaviour (from `wal.c` / `pager.c`):
//! - a transaction appends frames; its last frame carries the database size (commit);
//! - a reader sees, for each page up to the commit size, the newest committed frame
//!   of the current generation, else the database file (zeros past its end);
//! - a checkpoint copies committed frames into the database file in WAL order, up to
//!   the oldest reader's read mark, skipping pages beyond the current size; when it
//!   copied everything it truncates the database file to the commit size;
//! - the first write after a complete checkpoint restarts the WAL (checkpoint
//!   sequence + 1, salt-1 + 1, a new salt-2) unless a reader with a non-zero read mark
//!   still uses it; a TRUNCATE checkpoint empties the file and the next write
//!   restarts the same way;
//! - the shell's read transaction first writes a row (`_walvault_seq`, modelled as a
//!   rewrite of page 1) so that its read mark is never 0 (see cli/src/database.rs).
//!
//! Every committed state is recorded under its WAL position `(salt1, salt2, end)`,
//! the key LTX headers carry (`wal_salt1`, `wal_salt2`, `wal_offset + wal_size`).

use std::collections::BTreeMap;

use crate::wal::{FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalWriter};

/// Page size used by the tests (the smallest: cheap pages, many of them).
pub const PS: u32 = 512;
const PSU: usize = PS as usize;

/// A WAL position: `(salt1, salt2, offset just past the last commit frame)`.
pub type PosKey = (u32, u32, u64);

/// SplitMix64: deterministic page contents and salts.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Distinct contents for every page version.
pub fn page_bytes(version: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(PSU);
    let mut s = mix(version);
    while out.len() < PSU {
        s = mix(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(PSU);
    out
}

pub struct Source {
    /// The database file.
    pub db: Vec<u8>,
    wal: Option<WalWriter>,
    /// Committed frames of the current generation in WAL order: `(offset, pgno)`.
    frames: Vec<(u64, u32)>,
    /// Newest committed frame of each page in the current generation.
    index: BTreeMap<u32, u64>,
    /// Frames of the transaction in progress (written, not committed).
    open: Vec<(u64, u32)>,
    /// Database size in pages after the last commit (SQLite's `nPage`).
    pub commit: u32,
    /// Committed frames already copied into the database file (`nBackfill`).
    backfilled: usize,
    /// The shell's read transaction: committed frame count at its start.
    pub read_mark: Option<usize>,
    pub writers_locked: bool,
    history: BTreeMap<PosKey, Vec<u8>>,
    versions: u64,
    restarts: u64,
    seed: u64,
    /// Commits, including the shell's `_walvault_seq` writes.
    pub commits: u64,
    /// Let a transaction grow the database without writing the new pages. SQLite
    /// never does this (allocated pages are dirty and written in the growing
    /// transaction); with it, what such a page holds depends on checkpoint history, so
    /// only targeted tests of the engine's growth-page logic use it.
    pub raw_growth: bool,
}

impl Source {
    /// A database file of `pages` pages and no WAL file yet.
    pub fn new(pages: u32, seed: u64) -> Self {
        let mut s = Source {
            db: Vec::new(),
            wal: None,
            frames: Vec::new(),
            index: BTreeMap::new(),
            open: Vec::new(),
            commit: pages,
            backfilled: 0,
            read_mark: None,
            writers_locked: false,
            history: BTreeMap::new(),
            versions: seed << 32,
            restarts: 0,
            seed,
            commits: 0,
            raw_growth: false,
        };
        for _ in 0..pages {
            let p = s.next_page();
            s.db.extend_from_slice(&p);
        }
        s
    }

    fn next_page(&mut self) -> Vec<u8> {
        self.versions += 1;
        page_bytes(self.versions)
    }

    /// The WAL file's bytes (empty: no WAL file or a truncated one).
    pub fn wal_bytes(&self) -> &[u8] {
        self.wal.as_ref().map_or(&[], |w| w.bytes())
    }

    /// The current WAL header's salts, if the file has a header.
    pub fn salts(&self) -> Option<(u32, u32)> {
        self.wal
            .as_ref()
            .filter(|w| !w.bytes().is_empty())
            .map(|w| (w.header().salt1, w.header().salt2))
    }

    pub fn checkpoint_seq(&self) -> Option<u32> {
        self.wal
            .as_ref()
            .filter(|w| !w.bytes().is_empty())
            .map(|w| w.header().checkpoint_seq)
    }

    fn frame_size() -> u64 {
        FRAME_HEADER_SIZE + u64::from(PS)
    }

    /// Offset just past the last committed frame (32 with none; 0 without a header).
    pub fn committed_end(&self) -> u64 {
        match self.salts() {
            None => 0,
            Some(_) => WAL_HEADER_SIZE + self.frames.len() as u64 * Self::frame_size(),
        }
    }

    /// The position of the latest committed state.
    pub fn pos(&self) -> PosKey {
        match self.salts() {
            None => (0, 0, 0),
            Some((a, b)) => (a, b, self.committed_end()),
        }
    }

    pub fn frames_in_wal(&self) -> usize {
        self.frames.len()
    }

    pub fn txn_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// The state recorded at a WAL position, if that position was ever committed.
    pub fn state_at(&self, key: PosKey) -> Option<&Vec<u8>> {
        self.history.get(&key)
    }

    fn db_page(&self, pgno: u32) -> Vec<u8> {
        let start = (pgno as usize - 1) * PSU;
        let mut page = vec![0u8; PSU];
        if start < self.db.len() {
            let end = (start + PSU).min(self.db.len());
            page[..end - start].copy_from_slice(&self.db[start..end]);
        }
        page
    }

    fn frame_page(&self, offset: u64) -> Vec<u8> {
        let start = (offset + FRAME_HEADER_SIZE) as usize;
        self.wal_bytes()[start..start + PSU].to_vec()
    }

    /// What a reader sees now: pages `1..=commit` (WAL frame, else database file). With
    /// no WAL header it is the whole database file, as the engine then snapshots it.
    pub fn image(&self) -> Vec<u8> {
        if self.salts().is_none() {
            let pages = self.db.len().div_ceil(PSU);
            let mut v = self.db.clone();
            v.resize(pages * PSU, 0);
            return v;
        }
        let mut out = Vec::with_capacity(self.commit as usize * PSU);
        for pgno in 1..=self.commit {
            match self.index.get(&pgno) {
                Some(&off) => out.extend_from_slice(&self.frame_page(off)),
                None => out.extend_from_slice(&self.db_page(pgno)),
            }
        }
        out
    }

    /// Restarts (or creates) the WAL if the next write must: no file, a truncated
    /// file, or a completely checkpointed WAL no reader pins.
    fn prepare_write(&mut self) {
        let pinned = matches!(self.read_mark, Some(m) if m > 0);
        let restart = match &self.wal {
            None => true,
            Some(w) if w.bytes().is_empty() => true,
            Some(_) => !self.frames.is_empty() && self.backfilled == self.frames.len() && !pinned,
        };
        if !restart {
            return;
        }
        self.restarts += 1;
        let salt2 = mix(self.seed ^ (self.restarts << 8)) as u32;
        match &mut self.wal {
            None => {
                let salt1 = mix(self.seed.wrapping_add(77)) as u32;
                self.wal = Some(WalWriter::new(PS, false, salt1, salt2, 0));
            }
            Some(w) => {
                let salt1 = w.header().salt1.wrapping_add(1);
                w.restart(salt1, salt2);
            }
        }
        self.frames.clear();
        self.index.clear();
        self.backfilled = 0;
        // The state at the start of the new generation: the (checkpointed) database file.
        let key = self.pos();
        let image = self.image_of_db();
        self.history.insert(key, image);
    }

    fn image_of_db(&self) -> Vec<u8> {
        let mut v = self.db.clone();
        v.resize(self.db.len().div_ceil(PSU) * PSU, 0);
        v
    }

    /// Writes frames of a transaction that is not committed yet. Returns false when
    /// writers are blocked.
    pub fn write_uncommitted(&mut self, pages: &[u32]) -> bool {
        if self.writers_locked {
            return false;
        }
        if self.open.is_empty() {
            self.prepare_write();
        }
        for &pgno in pages {
            let data = self.next_page();
            let f = self.wal_mut().append_frame(pgno, &data, 0);
            self.open.push((f.offset, pgno));
        }
        true
    }

    fn wal_mut(&mut self) -> &mut WalWriter {
        self.wal.as_mut().expect("a WAL exists after prepare_write")
    }

    /// Commits a transaction writing `pages` (plus the frames written by
    /// [`Source::write_uncommitted`], plus every page it grows the database by unless
    /// `raw_growth`) with database size `commit`. Returns the new position, or `None`
    /// when writers are blocked.
    pub fn commit_txn(&mut self, pages: &[u32], commit: u32) -> Option<PosKey> {
        assert!(!pages.is_empty() && commit >= 1);
        if self.writers_locked {
            return None;
        }
        if self.open.is_empty() {
            self.prepare_write();
        }
        let mut pages = pages.to_vec();
        if !self.raw_growth {
            for p in self.commit + 1..=commit {
                if !pages.contains(&p) && !self.open.iter().any(|&(_, q)| q == p) {
                    pages.insert(pages.len() - 1, p);
                }
            }
        }
        let n = pages.len();
        for (i, &pgno) in pages.iter().enumerate() {
            let data = self.next_page();
            let c = if i + 1 == n { commit } else { 0 };
            let f = self.wal_mut().append_frame(pgno, &data, c);
            self.open.push((f.offset, pgno));
        }
        for (off, pgno) in std::mem::take(&mut self.open) {
            self.frames.push((off, pgno));
            self.index.insert(pgno, off);
        }
        self.commit = commit;
        self.commits += 1;
        let key = self.pos();
        let image = self.image();
        self.history.insert(key, image);
        Some(key)
    }

    /// Rolls back the transaction in progress (its frames stay in the file).
    pub fn rollback(&mut self) {
        if !self.open.is_empty() {
            self.wal_mut().rollback();
            self.open.clear();
        }
    }

    /// The shell's `_walvault_seq` write: rewrites page 1 in its own transaction.
    pub fn seq_write(&mut self) -> Option<PosKey> {
        let commit = self.commit.max(1);
        self.commit_txn(&[1], commit)
    }

    /// Takes the shell's read transaction (after the `_walvault_seq` write).
    pub fn acquire_read_lock(&mut self, seq_write: bool) {
        if seq_write {
            self.seq_write();
        }
        self.read_mark = Some(self.frames.len());
    }

    pub fn release_read_lock(&mut self) {
        self.read_mark = None;
    }

    /// A PASSIVE checkpoint as the application (or the shell's second connection) runs
    /// it: copies committed frames up to the reader's mark. Returns
    /// `(log_frames, checkpointed_frames)`.
    pub fn checkpoint(&mut self) -> (usize, usize) {
        let limit = match self.read_mark {
            None => self.frames.len(),
            // A read-mark-0 reader reads the database file: no backfill at all.
            Some(0) => self.backfilled,
            Some(m) => m.min(self.frames.len()),
        };
        if self.salts().is_none() {
            return (0, 0);
        }
        for i in self.backfilled..limit.max(self.backfilled) {
            let (off, pgno) = self.frames[i];
            if pgno > self.commit {
                continue;
            }
            let data = self.frame_page(off);
            let start = (pgno as usize - 1) * PSU;
            if self.db.len() < start + PSU {
                self.db.resize(start + PSU, 0);
            }
            self.db[start..start + PSU].copy_from_slice(&data);
        }
        self.backfilled = limit.max(self.backfilled);
        if self.backfilled == self.frames.len() {
            self.db.resize(self.commit as usize * PSU, 0);
        }
        (self.frames.len(), self.backfilled)
    }

    /// A TRUNCATE checkpoint's last step: after a complete backfill, empty the WAL file.
    pub fn truncate_wal(&mut self) -> bool {
        if self.backfilled != self.frames.len() || !self.open.is_empty() {
            return false;
        }
        if let Some(w) = self.wal.as_mut() {
            w.truncate(0);
        }
        self.frames.clear();
        self.index.clear();
        self.backfilled = 0;
        true
    }

    /// An application checkpoint while nothing pins the WAL, followed by a write that
    /// restarts it: the engine's frames are gone behind its back.
    pub fn external_checkpoint_and_restart(&mut self, pages: &[u32], commit: u32) {
        assert!(self.open.is_empty(), "a writer is in a transaction");
        let mark = self.read_mark.take();
        self.checkpoint();
        self.commit_txn(pages, commit);
        self.read_mark = mark.map(|_| self.frames.len());
    }
}

/// [`crate::spec::PageReader`] over the simulated files, as `FilePages` in the shell.
pub struct Pages<'a>(pub &'a Source);

impl crate::spec::PageReader for Pages<'_> {
    fn read_wal_frame(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let wal = self.0.wal_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match wal.get(start..start.saturating_add(buf.len())) {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(())
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short WAL read",
            )),
        }
    }

    fn read_db_page(&mut self, pgno: u32, buf: &mut [u8]) -> std::io::Result<()> {
        let start = (pgno as usize - 1) * buf.len();
        buf.fill(0);
        if start < self.0.db.len() {
            let end = (start + buf.len()).min(self.0.db.len());
            buf[..end - start].copy_from_slice(&self.0.db[start..end]);
        }
        Ok(())
    }
}
