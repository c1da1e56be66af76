//! The oracle: what the source database holds after every commit, known independently
//! of the engine. After each SQLite operation the simulator calls [`Oracle::observe`],
//! which follows the WAL with its own parser (header, salts, the cumulative checksum
//! chain, commit frames) and applies each newly committed transaction to a shadow
//! copy of the database: page bytes, per-page checksums, and the running LTX database
//! checksum (XOR of CRC-64 per page). Every commit becomes a numbered state, indexed by
//! the WAL position (salts, end offset) that ends it, which is exactly what an LTX
//! file's header claims. Full images are kept for a sample of states.
//!
//! Deliberately not built on walvault-engine's WAL code, so that a parser bug shared
//! by both cannot hide itself. Checkpoints and WAL restarts do not change the logical
//! state; only commits do.

use std::collections::BTreeMap;

use crate::image::Image;
use crate::memfs::MemFile;
use crate::pagesum::page_checksum;

use crate::rng::{Purpose, Stream};

const WAL_HDR: u64 = 32;
const FRAME_HDR: u64 = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRec {
    /// Raw XOR of page checksums (bit 63 not forced).
    pub checksum: u64,
    pub commit: u32,
    pub salt1: u32,
    pub salt2: u32,
    /// Offset just past the commit frame (0 for the initial state).
    pub end: u64,
    /// Offset of the transaction's first frame.
    pub start: u64,
}

struct Gen {
    salt1: u32,
    salt2: u32,
    big_endian: bool,
    commit_end: u64,
    commit_ck: (u32, u32),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub commits: u32,
    pub new_generation: bool,
    pub wal_gone: bool,
    /// Valid frames beyond the last commit (an open transaction spilled).
    pub uncommitted_frames: u64,
    pub shrank: bool,
}

pub struct Oracle {
    ps: usize,
    lock_pgno: u32,
    image: Image,
    sums: Vec<u64>,
    xor: u64,
    commit: u32,
    generation: Option<Gen>,
    states: Vec<StateRec>,
    by_pos: BTreeMap<(u32, u32, u64), u32>,
    by_sum: BTreeMap<(u64, u32), Vec<u32>>,
    samples: BTreeMap<u32, Image>,
    sample_bytes: usize,
    sampler: Stream,
    zero: Vec<u8>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing (s1, s2).
pub(crate) fn wal_sum(big_endian: bool, data: &[u8], mut s1: u32, mut s2: u32) -> (u32, u32) {
    for c in data.chunks_exact(8) {
        let (a, b) = if big_endian {
            (be32(c, 0), be32(c, 4))
        } else {
            (
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        };
        s1 = s1.wrapping_add(a).wrapping_add(s2);
        s2 = s2.wrapping_add(b).wrapping_add(s1);
    }
    (s1, s2)
}

impl Oracle {
    /// Starts from the database file as it is (before any WAL frame), read through the
    /// run's one database handle.
    pub fn new(seed: u64, page_size: u32, db: &MemFile) -> Result<Oracle, String> {
        let ps = page_size as usize;
        let image = db.with_bytes(|b| Image::from_bytes(b, ps));
        let commit = image.page_count();
        let lock_pgno = walvault_engine::ltx::lock_pgno(page_size);
        let mut o = Oracle {
            ps,
            lock_pgno,
            image,
            sums: Vec::new(),
            xor: 0,
            commit: 0,
            generation: None,
            states: Vec::new(),
            by_pos: BTreeMap::new(),
            by_sum: BTreeMap::new(),
            samples: BTreeMap::new(),
            sample_bytes: 0,
            sampler: Stream::new(seed, Purpose::Sample),
            zero: vec![0u8; ps],
        };
        for p in 1..=commit {
            let s = page_checksum(p, o.page(p));
            o.sums.push(s);
            if p != lock_pgno {
                o.xor ^= s;
            }
        }
        o.commit = commit;
        o.by_sum.insert((o.xor, commit), vec![0]);
        o.states.push(StateRec {
            checksum: o.xor,
            commit,
            salt1: 0,
            salt2: 0,
            end: 0,
            start: 0,
        });
        Ok(o)
    }

    fn page(&self, pgno: u32) -> &[u8] {
        self.image.page(pgno)
    }

    fn set_page(&mut self, pgno: u32, data: &[u8]) {
        self.resize(pgno.max(self.commit));
        self.image.set_page(pgno, data);
        let s = page_checksum(pgno, data);
        let old = std::mem::replace(&mut self.sums[pgno as usize - 1], s);
        if pgno != self.lock_pgno {
            self.xor ^= old ^ s;
        }
    }

    fn resize(&mut self, commit: u32) {
        while self.commit < commit {
            self.commit += 1;
            let p = self.commit;
            self.image.push_zero();
            let s = page_checksum(p, &self.zero);
            self.sums.push(s);
            if p != self.lock_pgno {
                self.xor ^= s;
            }
        }
        while self.commit > commit {
            let p = self.commit;
            if let Some(s) = self.sums.pop()
                && p != self.lock_pgno
            {
                self.xor ^= s;
            }
            self.image.pop();
            self.commit -= 1;
        }
    }

    /// Follows the WAL from the last commit seen; applies new commits.
    pub fn observe(&mut self, wal: Option<&MemFile>) -> Result<Observed, String> {
        let mut out = Observed::default();
        let Some(f) = wal else {
            out.wal_gone = self.generation.take().is_some();
            return Ok(out);
        };
        let len = f.len();
        let mut h = [0u8; 32];
        if len < WAL_HDR || f.read_exact_at(&mut h, 0).is_err() {
            out.wal_gone = self.generation.take().is_some();
            return Ok(out);
        }
        let magic = be32(&h, 0);
        let big_endian = match magic {
            0x377f_0682 => false,
            0x377f_0683 => true,
            _ => {
                out.wal_gone = self.generation.take().is_some();
                return Ok(out);
            }
        };
        if wal_sum(big_endian, &h[..24], 0, 0) != (be32(&h, 24), be32(&h, 28))
            || be32(&h, 8) as usize != self.ps
        {
            out.wal_gone = self.generation.take().is_some();
            return Ok(out);
        }
        let (salt1, salt2) = (be32(&h, 16), be32(&h, 20));
        let same = self
            .generation
            .as_ref()
            .is_some_and(|g| g.salt1 == salt1 && g.salt2 == salt2);
        if !same {
            out.new_generation = true;
            // A new generation starts from the state the database file holds in full:
            // its position "no frame yet" (offset 32) is the current state.
            let cur = self.current();
            self.by_pos.insert((salt1, salt2, WAL_HDR), cur);
            self.generation = Some(Gen {
                salt1,
                salt2,
                big_endian,
                commit_end: WAL_HDR,
                commit_ck: (be32(&h, 24), be32(&h, 28)),
            });
        }
        // Until its first commit, a generation's header can be written again with the
        // same salts but another checkpoint sequence (each connection keeps its own):
        // a rolled-back transaction wrote it, the next writer rewrites it. The frame
        // checksums then chain from the new header.
        if let Some(g) = self.generation.as_mut()
            && g.commit_end == WAL_HDR
        {
            g.commit_ck = (be32(&h, 24), be32(&h, 28));
            g.big_endian = big_endian;
        }
        let Some(g) = self.generation.as_ref() else {
            return Ok(out);
        };
        let from = g.commit_end;
        if len < from {
            return Err(format!(
                "oracle: the WAL shrank below its last commit ({len} < {from}) without a new header"
            ));
        }
        let fs = FRAME_HDR as usize + self.ps;
        let total = ((len - from) as usize / fs) * fs;
        // Follow the chain in place and stop at the first frame that does not continue
        // it: a reused WAL file keeps megabytes of an older generation's frames past
        // the live ones.
        let (big_endian, mut ck) = (g.big_endian, g.commit_ck);
        let mut pending: Vec<usize> = Vec::new();
        let mut txn_start = from;
        f.with_bytes(|data| {
            let buf = &data[from as usize..from as usize + total];
            for (i, frame) in buf.chunks_exact(fs).enumerate() {
                if be32(frame, 8) != salt1 || be32(frame, 12) != salt2 {
                    break;
                }
                let c = wal_sum(big_endian, &frame[..8], ck.0, ck.1);
                let c = wal_sum(big_endian, &frame[FRAME_HDR as usize..], c.0, c.1);
                if c != (be32(frame, 16), be32(frame, 20)) || be32(frame, 0) == 0 {
                    break;
                }
                ck = c;
                if pending.is_empty() {
                    txn_start = from + (i * fs) as u64;
                }
                pending.push(i);
                let ntrunc = be32(frame, 4);
                if ntrunc != 0 {
                    let before = self.commit;
                    for &j in &pending {
                        let fr = &buf[j * fs..(j + 1) * fs];
                        self.set_page(be32(fr, 0), &fr[FRAME_HDR as usize..]);
                    }
                    self.resize(ntrunc);
                    if ntrunc < before {
                        out.shrank = true;
                    }
                    pending.clear();
                    let end = from + ((i + 1) * fs) as u64;
                    if let Some(g) = self.generation.as_mut() {
                        g.commit_end = end;
                        g.commit_ck = ck;
                    }
                    self.push_state(salt1, salt2, txn_start, end);
                    out.commits += 1;
                }
            }
        });
        out.uncommitted_frames = pending.len() as u64;
        Ok(out)
    }

    fn push_state(&mut self, salt1: u32, salt2: u32, start: u64, end: u64) {
        let idx = self.states.len() as u32;
        self.states.push(StateRec {
            checksum: self.xor,
            commit: self.commit,
            salt1,
            salt2,
            end,
            start,
        });
        self.by_pos.insert((salt1, salt2, end), idx);
        self.by_sum
            .entry((self.xor, self.commit))
            .or_default()
            .push(idx);
        if self.sampler.chance(31_250) {
            // At most 16 MiB of sampled images (counted as if copied, though they share
            // unchanged pages), oldest dropped first.
            while !self.samples.is_empty()
                && (self.samples.len() >= 16 || self.sample_bytes + self.image.len() > 16 << 20)
            {
                if let Some((&k, _)) = self.samples.iter().next()
                    && let Some(v) = self.samples.remove(&k)
                {
                    self.sample_bytes -= v.len();
                }
            }
            self.sample_bytes += self.image.len();
            self.samples.insert(idx, self.image.clone());
        }
    }

    /// Where the application's next transaction goes in the generation followed:
    /// `None` when no WAL generation is known.
    pub fn append_point(&self) -> Option<crate::torn_append::AppendPoint> {
        let g = self.generation.as_ref()?;
        Some(crate::torn_append::AppendPoint {
            salt1: g.salt1,
            salt2: g.salt2,
            big_endian: g.big_endian,
            offset: g.commit_end,
            checksum: g.commit_ck,
            page_size: self.ps,
            commit: self.commit,
        })
    }

    /// The newest state.
    pub fn current(&self) -> u32 {
        (self.states.len() - 1) as u32
    }

    pub fn state(&self, idx: u32) -> StateRec {
        self.states[idx as usize]
    }

    /// The state ended by the commit at this WAL position.
    pub fn lookup(&self, salt1: u32, salt2: u32, end: u64) -> Option<u32> {
        self.by_pos.get(&(salt1, salt2, end)).copied()
    }

    /// States whose database equals (checksum, size), oldest first.
    pub fn find_by_content(&self, xor: u64, commit: u32) -> &[u32] {
        self.by_sum
            .get(&(xor, commit))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// Bytes of a state, when known (the current one, or a sampled one).
    pub fn image_of(&self, idx: u32) -> Option<&Image> {
        if idx == self.current() {
            Some(&self.image)
        } else {
            self.samples.get(&idx)
        }
    }

    /// (salt1, salt2, offset just past the last commit) of the WAL as it is now.
    pub fn wal_position(&self) -> Option<(u32, u32, u64)> {
        self.generation
            .as_ref()
            .map(|g| (g.salt1, g.salt2, g.commit_end))
    }

    /// Committed frames in the current WAL generation.
    pub fn wal_frames(&self) -> u64 {
        self.generation.as_ref().map_or(0, |g| {
            (g.commit_end - WAL_HDR) / (FRAME_HDR + self.ps as u64)
        })
    }

    pub fn page_size(&self) -> u32 {
        self.ps as u32
    }

    pub fn image(&self) -> &Image {
        &self.image
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_engine_writer() {
        // The engine's WalWriter is independent code: both must agree on checksums.
        let mut w = walvault_engine::wal::WalWriter::new(512, false, 7, 9, 0);
        let page = [3u8; 512];
        w.append_frame(1, &page, 1);
        let b = w.bytes();
        let (h1, h2) = wal_sum(false, &b[..24], 0, 0);
        assert_eq!((h1, h2), (be32(b, 24), be32(b, 28)));
        let f = &b[32..32 + 24 + 512];
        let c = wal_sum(false, &f[..8], h1, h2);
        let c = wal_sum(false, &f[24..], c.0, c.1);
        assert_eq!(c, (be32(f, 16), be32(f, 20)));
    }
}
