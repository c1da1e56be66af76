//! Tests of the WAL reader. This file owns the shared test helpers: running
//! a scanner over bytes in chunks and collecting owned results, and an
//! independent, deliberately naive reference validator written straight from
//! the format description (whole-buffer, no streaming) that the streaming
//! scanner is compared against.

mod frames;
mod props;
mod unit;

use super::{FrameRef, ScanStop, Txn, WalHeader, WalScanner};

/// An owned copy of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct OwnedTxn {
    pub frames: Vec<FrameRef>,
    pub commit: u32,
    pub end_offset: u64,
    pub checksum: (u32, u32),
}

impl OwnedTxn {
    fn from_txn(t: &Txn<'_>) -> Self {
        OwnedTxn {
            frames: t.frames.to_vec(),
            commit: t.commit,
            end_offset: t.end_offset,
            checksum: t.checksum,
        }
    }
}

/// Everything observable about a finished scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    pub txns: Vec<OwnedTxn>,
    pub stop: ScanStop,
    pub committed_offset: u64,
    pub committed_checksum: (u32, u32),
    pub next_offset: u64,
    pub pending: Vec<FrameRef>,
}

fn outcome(s: &WalScanner, txns: Vec<OwnedTxn>, stop: ScanStop) -> Outcome {
    Outcome {
        txns,
        stop,
        committed_offset: s.committed_offset(),
        committed_checksum: s.committed_checksum(),
        next_offset: s.next_offset(),
        pending: s.pending_frames().to_vec(),
    }
}

/// Feed `wal[scanner.next_offset()..]` to `scanner` in chunks of the given
/// sizes (cycled; 0 is treated as 1) until a non-`NeedMore` stop or the end.
pub(super) fn scan_chunked(mut s: WalScanner, wal: &[u8], sizes: &[usize]) -> Outcome {
    let mut txns = Vec::new();
    let mut pos = usize::try_from(s.next_offset()).unwrap_or(usize::MAX);
    let mut stop = ScanStop::NeedMore;
    let mut i = 0;
    while pos < wal.len() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        let end = pos.saturating_add(n.max(1)).min(wal.len());
        stop = s.feed(&wal[pos..end], &mut |t| txns.push(OwnedTxn::from_txn(t)));
        if stop != ScanStop::NeedMore {
            break;
        }
        pos = end;
        i += 1;
    }
    outcome(&s, txns, stop)
}

/// Scan the whole WAL (header included in `wal`) with one `feed`.
pub(super) fn scan_once(header: WalHeader, wal: &[u8]) -> Outcome {
    scan_chunked(WalScanner::new(header), wal, &[usize::MAX])
}

/// Reference checksum: independent formulation with u64 arithmetic and
/// explicit byte assembly.
pub(super) fn ref_checksum(big_endian: bool, data: &[u8], mut s1: u64, mut s2: u64) -> (u32, u32) {
    const M: u64 = 0xffff_ffff;
    let word = |b: &[u8]| -> u64 {
        if big_endian {
            (u64::from(b[0]) << 24)
                | (u64::from(b[1]) << 16)
                | (u64::from(b[2]) << 8)
                | u64::from(b[3])
        } else {
            (u64::from(b[3]) << 24)
                | (u64::from(b[2]) << 16)
                | (u64::from(b[1]) << 8)
                | u64::from(b[0])
        }
    };
    let mut i = 0;
    while i + 8 <= data.len() {
        s1 = (s1 + word(&data[i..i + 4]) + s2) & M;
        s2 = (s2 + word(&data[i + 4..i + 8]) + s1) & M;
        i += 8;
    }
    (s1 as u32, s2 as u32)
}

fn rd(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Reference whole-buffer validator. Returns the same `Outcome` the streaming
/// scanner should produce when fed `wal` (which starts with the header).
pub(super) fn ref_scan(header: WalHeader, wal: &[u8]) -> Outcome {
    let be = header.big_endian_checksums;
    let fsz = 24 + header.page_size as usize;
    let mut txns = Vec::new();
    let mut pending: Vec<FrameRef> = Vec::new();
    let mut sum = (u64::from(header.checksum1), u64::from(header.checksum2));
    let (mut committed_offset, mut committed_checksum) = (32u64, header.checksum());
    let mut off = 32usize;
    let (stop, next) = loop {
        let rest = &wal[off.min(wal.len())..];
        if rest.len() < 24 {
            break (ScanStop::NeedMore, wal.len().max(off));
        }
        let (pgno, commit) = (rd(rest, 0), rd(rest, 4));
        if (rd(rest, 8), rd(rest, 12)) != (header.salt1, header.salt2) {
            break (ScanStop::SaltMismatch { offset: off as u64 }, off);
        }
        if pgno == 0 {
            break (ScanStop::InvalidFrame { offset: off as u64 }, off);
        }
        if rest.len() < fsz {
            break (ScanStop::NeedMore, wal.len());
        }
        let mut data = rest[..8].to_vec();
        data.extend_from_slice(&rest[24..fsz]);
        let c = ref_checksum(be, &data, sum.0, sum.1);
        if c != (rd(rest, 16), rd(rest, 20)) {
            break (ScanStop::ChecksumMismatch { offset: off as u64 }, off);
        }
        sum = (u64::from(c.0), u64::from(c.1));
        pending.push(FrameRef {
            offset: off as u64,
            pgno,
        });
        off += fsz;
        if commit != 0 {
            txns.push(OwnedTxn {
                frames: std::mem::take(&mut pending),
                commit,
                end_offset: off as u64,
                checksum: c,
            });
            committed_offset = off as u64;
            committed_checksum = c;
        }
    };
    Outcome {
        txns,
        stop,
        committed_offset,
        committed_checksum,
        next_offset: next as u64,
        pending,
    }
}

/// Deterministic page content for tests.
pub(super) fn page(page_size: u32, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..page_size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
