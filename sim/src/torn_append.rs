//! An application that died while appending a transaction to the WAL: frames after the
//! last commit whose checksums chain correctly, the last one (the commit frame) with
//! only the first half of its page written, as a crash in the middle of `write` leaves
//! them. SQLite never recorded the transaction in the WAL index, so no reader sees it
//! and the next writer overwrites it; the oracle, which validates the checksum chain as
//! SQLite's recovery does, ignores it too. A replicator that trusted the commit flag
//! without the checksum would ship a transaction that never happened (I2).

use crate::oracle::wal_sum;
use crate::rng::SplitMix;

/// Where the application's next transaction goes (`Oracle::append_point`).
#[derive(Clone, Copy, Debug)]
pub struct AppendPoint {
    pub salt1: u32,
    pub salt2: u32,
    pub big_endian: bool,
    /// WAL offset just past the last commit frame.
    pub offset: u64,
    /// The checksum chain at that offset.
    pub checksum: (u32, u32),
    pub page_size: usize,
    /// Database size in pages after the last commit.
    pub commit: u32,
}

/// The bytes of a torn transaction of `frames` frames, to be written at `p.offset`.
pub fn torn_frames(p: &AppendPoint, frames: u32, seed: u64) -> Vec<u8> {
    let mut g = SplitMix(seed);
    let commit = p.commit.max(1);
    let mut ck = p.checksum;
    let mut out = Vec::with_capacity((24 + p.page_size) * frames as usize);
    for i in 0..frames {
        let last = i + 1 == frames;
        let pgno = (g.next_u64() % u64::from(commit)) as u32 + 1;
        let page = g.bytes(p.page_size);
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&pgno.to_be_bytes());
        h[4..8].copy_from_slice(&(if last { commit } else { 0 }).to_be_bytes());
        h[8..12].copy_from_slice(&p.salt1.to_be_bytes());
        h[12..16].copy_from_slice(&p.salt2.to_be_bytes());
        ck = wal_sum(p.big_endian, &h[..8], ck.0, ck.1);
        ck = wal_sum(p.big_endian, &page, ck.0, ck.1);
        h[16..20].copy_from_slice(&ck.0.to_be_bytes());
        h[20..24].copy_from_slice(&ck.1.to_be_bytes());
        out.extend_from_slice(&h);
        if last {
            // Only the first half reached the file; the rest is what was there before.
            let half = p.page_size / 2;
            out.extend_from_slice(&page[..half]);
            out.extend_from_slice(&g.bytes(p.page_size - half));
        } else {
            out.extend_from_slice(&page);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the frames as a WAL reader does: the chain holds up to the last frame,
    /// whose checksum fails.
    #[test]
    fn every_frame_but_the_torn_commit_frame_checks_out() {
        for big_endian in [false, true] {
            let p = AppendPoint {
                salt1: 7,
                salt2: 9,
                big_endian,
                offset: 32,
                checksum: (11, 13),
                page_size: 512,
                commit: 5,
            };
            let bytes = torn_frames(&p, 3, 42);
            let fs = 24 + 512;
            assert_eq!(bytes.len(), 3 * fs);
            let mut ck = p.checksum;
            for (i, f) in bytes.chunks_exact(fs).enumerate() {
                let be = |at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
                assert_eq!((be(8), be(12)), (7, 9), "salts");
                assert!((1..=5).contains(&be(0)), "page number");
                assert_eq!(be(4) != 0, i == 2, "only the last frame commits");
                let c = wal_sum(big_endian, &f[..8], ck.0, ck.1);
                let c = wal_sum(big_endian, &f[24..], c.0, c.1);
                assert_eq!(c == (be(16), be(20)), i < 2, "frame {i}'s checksum");
                ck = c;
            }
        }
    }
}
