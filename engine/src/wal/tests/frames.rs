//! Example-based tests of the WAL reader past the happy path: stale, corrupt and
//! torn frames, rewinding and resuming a scanner, and classifying a WAL change.

use super::super::*;
use super::unit::{build, fr};
use super::{OwnedTxn, page, ref_scan, scan_chunked, scan_once};

// --------------------------------------------------------- invalid frames

#[test]
fn stale_generation_after_restart_gives_salt_mismatch() {
    // Generation 1: three txns, six frames.
    let mut w = build(512, false, &[&[1, 2], &[3, 4], &[5, 6]], &[]);
    let gen1 = *w.header();
    let gen1_end = w.next_offset();
    // SQLite checkpoints and restarts: new salts, frames overwritten from
    // the start, the tail of generation 1 left behind.
    w.restart(gen1.salt1.wrapping_add(1), 0x9999_0000);
    w.append_frame(7, &page(512, 100), 0);
    w.append_frame(1, &page(512, 101), 7);
    let gen2 = *w.header();
    assert_eq!(w.bytes().len() as u64, gen1_end);
    assert_eq!(gen2.checkpoint_seq, gen1.checkpoint_seq + 1);
    assert!(!gen1.same_generation(&gen2));
    assert_eq!(WalHeader::parse(w.bytes()), Ok(gen2));

    let out = scan_once(gen2, w.bytes());
    assert_eq!(out.txns.len(), 1);
    assert_eq!(out.txns[0].frames, vec![fr(32, 7), fr(568, 1)]);
    assert_eq!(
        out.stop,
        ScanStop::SaltMismatch {
            offset: 32 + 2 * 536
        }
    );
    assert_eq!(out.next_offset, 32 + 2 * 536);
    assert_eq!(out, ref_scan(gen2, w.bytes()));

    // The follower of generation 1 learns it was reset.
    assert_eq!(
        classify_change(&gen1, gen1_end, Some(&gen2), gen1_end),
        WalChange::Reset
    );
}

#[test]
fn wrong_salts_with_valid_checksum_are_rejected() {
    let mut w = build(512, false, &[&[1]], &[]);
    let h = *w.header();
    w.append_frame_with_salts(2, &page(512, 9), 2, h.salt1, h.salt2 ^ 1);
    let out = scan_once(h, w.bytes());
    assert_eq!(out.txns.len(), 1);
    assert_eq!(out.stop, ScanStop::SaltMismatch { offset: 568 });
    // Detected as soon as the frame header is complete.
    let mut s = WalScanner::resume(h, 568, out.committed_checksum);
    assert_eq!(
        s.feed(&w.bytes()[568..568 + 23], &mut |_| {}),
        ScanStop::NeedMore
    );
    assert_eq!(
        s.feed(&w.bytes()[568 + 23..568 + 24], &mut |_| {}),
        ScanStop::SaltMismatch { offset: 568 }
    );
    assert_eq!(s.next_offset(), 568);
}

#[test]
fn flipped_bit_in_last_txn_is_detected() {
    let w = build(1024, true, &[&[1, 2], &[3, 4, 5]], &[]);
    let h = *w.header();
    let f = 1048usize;
    let last_txn_start = 32 + 2 * f;
    // Flip a bit in the page data of each frame of the last txn in turn,
    // and in its frame headers' pgno and commit fields.
    for frame in 0..3 {
        let at = last_txn_start + frame * f;
        for (pos, bit) in [(at + 24 + 517, 0x04u8), (at + 3, 0x01), (at + 7, 0x80)] {
            let mut bytes = w.bytes().to_vec();
            bytes[pos] ^= bit;
            let out = scan_once(h, &bytes);
            assert_eq!(out.txns.len(), 1, "frame {frame} pos {pos}");
            assert_eq!(out.txns[0].end_offset, last_txn_start as u64);
            assert_eq!(
                out.stop,
                ScanStop::ChecksumMismatch { offset: at as u64 },
                "frame {frame} pos {pos}"
            );
            assert_eq!(out.committed_offset, last_txn_start as u64);
            assert_eq!(out.pending.len(), frame);
            assert_eq!(out.next_offset, at as u64);
            assert_eq!(out, ref_scan(h, &bytes));
            let bytewise = scan_chunked(WalScanner::new(h), &bytes, &[1]);
            assert_eq!(bytewise, out);
        }
    }
    // Corrupting a stored checksum is detected too.
    let mut bytes = w.bytes().to_vec();
    bytes[last_txn_start + 2 * f + 16] ^= 1;
    let out = scan_once(h, &bytes);
    assert_eq!(
        out.stop,
        ScanStop::ChecksumMismatch {
            offset: (last_txn_start + 2 * f) as u64
        }
    );
    assert_eq!(out.txns.len(), 1);
}

#[test]
fn pgno_zero_is_invalid() {
    let mut w = build(512, false, &[&[1]], &[]);
    w.append_frame(0, &page(512, 3), 1);
    let out = scan_once(*w.header(), w.bytes());
    assert_eq!(out.txns.len(), 1);
    assert_eq!(out.stop, ScanStop::InvalidFrame { offset: 568 });
    assert_eq!(out.next_offset, 568);
}

#[test]
fn rolled_back_leftovers_are_not_committed() {
    let mut w = build(512, false, &[&[1, 2]], &[3, 4, 5]);
    w.rollback();
    w.append_frame(6, &page(512, 77), 6);
    // File: txn A (2 frames), txn B (1 frame over the first rolled-back
    // frame), then two rolled-back frames with our salts but a broken chain.
    assert_eq!(w.bytes().len(), 32 + 5 * 536);
    let out = scan_once(*w.header(), w.bytes());
    assert_eq!(out.txns.len(), 2);
    assert_eq!(out.txns[1].frames, vec![fr(32 + 2 * 536, 6)]);
    assert_eq!(
        out.stop,
        ScanStop::ChecksumMismatch {
            offset: 32 + 3 * 536
        }
    );
}

#[test]
fn torn_write_can_be_retried_after_completion() {
    let w = build(512, false, &[&[1], &[2, 3]], &[]);
    let h = *w.header();
    let good = w.bytes();
    // A reader sees the commit frame's header but stale page data.
    let mut torn = good.to_vec();
    let last = 32 + 2 * 536;
    torn[last + 24..].fill(0);
    let mut s = WalScanner::new(h);
    let mut n = 0;
    let stop = s.feed(&torn[32..], &mut |_| n += 1);
    assert_eq!(
        stop,
        ScanStop::ChecksumMismatch {
            offset: last as u64
        }
    );
    assert_eq!(n, 1);
    // Position kept at the bad frame with the pending frame retained.
    assert_eq!(s.next_offset(), last as u64);
    assert_eq!(s.pending_frames(), &[fr(32 + 536, 2)]);
    // Re-read once the write completed.
    let mut got = Vec::new();
    let stop = s.feed(&good[last..], &mut |t| got.push(OwnedTxn::from_txn(t)));
    assert_eq!(stop, ScanStop::NeedMore);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].frames, vec![fr(32 + 536, 2), fr(last as u64, 3)]);
    assert_eq!(s.committed_offset(), good.len() as u64);
}

// ------------------------------------------------------- rewind and resume

#[test]
fn rewind_to_commit_drops_pending_and_partial_frames() {
    let w = build(512, false, &[&[1], &[2, 3]], &[]);
    let b = w.bytes();
    let mut s = WalScanner::new(*w.header());
    // Txn 1, the first frame of txn 2 and half of its commit frame.
    let cut = 32 + 2 * 536 + 300;
    assert_eq!(s.feed(&b[32..cut], &mut |_| {}), ScanStop::NeedMore);
    assert_eq!(s.next_offset(), cut as u64);
    assert_eq!(s.pending_frames().len(), 1);
    s.rewind_to_commit();
    assert_eq!(s.next_offset(), 568);
    assert_eq!(s.committed_offset(), 568);
    assert!(s.pending_frames().is_empty());
    // Re-feeding from the committed offset completes txn 2.
    let mut got = Vec::new();
    assert_eq!(
        s.feed(&b[568..], &mut |t| got.push(OwnedTxn::from_txn(t))),
        ScanStop::NeedMore
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].frames, vec![fr(568, 2), fr(1104, 3)]);
    // Rewinding with nothing pending is a no-op.
    s.rewind_to_commit();
    assert_eq!(s.next_offset(), b.len() as u64);
}

#[test]
fn resume_continues_the_chain() {
    let w = build(512, true, &[&[1, 2], &[3], &[4, 5], &[1]], &[2]);
    let h = *w.header();
    let b = w.bytes();
    let full = scan_once(h, b);
    assert_eq!(full.txns.len(), 4);
    for k in 0..4 {
        let t = &full.txns[k];
        let resumed = scan_chunked(WalScanner::resume(h, t.end_offset, t.checksum), b, &[100]);
        assert_eq!(resumed.txns, full.txns[k + 1..].to_vec());
        assert_eq!(resumed.committed_offset, full.committed_offset);
        assert_eq!(resumed.committed_checksum, full.committed_checksum);
        assert_eq!(resumed.next_offset, full.next_offset);
        assert_eq!(resumed.pending, full.pending);
    }
    // Resuming from the start equals new().
    let s = WalScanner::resume(h, 32, h.checksum());
    assert_eq!(scan_chunked(s, b, &[usize::MAX]), full);

    // A wrong checksum breaks the chain at the first frame after the resume
    // point.
    let t = &full.txns[1];
    let bad = (t.checksum.0 ^ 1, t.checksum.1);
    let out = scan_chunked(WalScanner::resume(h, t.end_offset, bad), b, &[usize::MAX]);
    assert!(out.txns.is_empty());
    assert_eq!(
        out.stop,
        ScanStop::ChecksumMismatch {
            offset: t.end_offset
        }
    );
}

#[test]
fn unusable_scanners_report_invalid_frame() {
    let h = WalHeader::new(512, false, 0, 1, 2);
    for off in [0u64, 31, 33, 32 + 535, 32 + 537] {
        let mut s = WalScanner::resume(h, off, (0, 0));
        assert_eq!(
            s.feed(&[0; 600], &mut |_| panic!("no txn")),
            ScanStop::InvalidFrame { offset: off }
        );
        assert_eq!(s.next_offset(), off);
    }
    let bad_page = WalHeader {
        page_size: 1000,
        ..h
    };
    let mut s = WalScanner::new(bad_page);
    assert_eq!(
        s.feed(&[0; 2000], &mut |_| {}),
        ScanStop::InvalidFrame { offset: 32 }
    );
}

#[test]
fn pending_buffer_is_reused() {
    // Many small transactions: the pending list never grows past the
    // largest transaction.
    let txn: &[u32] = &[1, 2, 3];
    let txns: Vec<&[u32]> = std::iter::repeat_n(txn, 200).collect();
    let w = build(512, false, &txns, &[]);
    let mut s = WalScanner::new(*w.header());
    let mut n = 0;
    let mut max_cap = 0;
    let b = w.bytes();
    for chunk in b[32..].chunks(536 * 3) {
        s.feed(chunk, &mut |_| n += 1);
        max_cap = max_cap.max(s.pending_capacity());
    }
    assert_eq!(n, 200);
    assert!(max_cap <= 4, "pending capacity grew to {max_cap}");
}

// --------------------------------------------------------- classify_change

#[test]
fn classify_change_cases() {
    let h = WalHeader::new(4096, false, 3, 10, 20);
    let committed = h.frame_offset(5);
    let same = WalHeader::new(4096, false, 3, 10, 20);
    let restarted = WalHeader::new(4096, false, 4, 11, 77);
    let resized = WalHeader::new(8192, false, 3, 10, 20);
    use WalChange::*;
    assert_eq!(classify_change(&h, committed, Some(&same), committed), Same);
    assert_eq!(
        classify_change(&h, committed, Some(&same), committed + 9),
        Same
    );
    assert_eq!(
        classify_change(&h, committed, Some(&same), committed - 1),
        Truncated
    );
    assert_eq!(classify_change(&h, committed, Some(&same), 32), Truncated);
    assert_eq!(
        classify_change(&h, committed, Some(&restarted), committed),
        Reset
    );
    // A restarted WAL is usually shorter than our offset: still a reset.
    assert_eq!(classify_change(&h, committed, Some(&restarted), 32), Reset);
    assert_eq!(
        classify_change(&h, committed, Some(&resized), committed),
        Reset
    );
    // Long enough for a header but it does not parse.
    assert_eq!(classify_change(&h, committed, None, 32), Truncated);
    assert_eq!(
        classify_change(&h, committed, None, committed * 2),
        Truncated
    );
    // Empty or shorter than a header.
    assert_eq!(classify_change(&h, committed, None, 0), Missing);
    assert_eq!(classify_change(&h, committed, None, 31), Missing);
    assert_eq!(classify_change(&h, committed, Some(&same), 0), Missing);
    // Nothing committed yet and the file is just a header.
    assert_eq!(classify_change(&h, 32, Some(&same), 32), Same);
}

#[test]
fn writer_truncate_models_a_torn_tail() {
    let mut w = build(512, false, &[&[1], &[2]], &[]);
    w.truncate(32 + 536 + 100);
    let out = scan_once(*w.header(), w.bytes());
    assert_eq!(out.txns.len(), 1);
    assert_eq!(out.stop, ScanStop::NeedMore);
    assert_eq!(out.next_offset, (32 + 536 + 100) as u64);
    assert_eq!(out.pending, vec![]);
}
