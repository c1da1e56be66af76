//! What the encoder refuses: page order, bounds, the lock page, incomplete snapshots
//! and growth ranges, bad post-apply checksums, and writes after an I/O failure.

use crate::ltx::*;
use std::io::Write;

fn hdr(min: u64, commit: u32, page_size: u32) -> Header {
    Header {
        flags: FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid: min,
        max_txid: min.max(3),
        timestamp_ms: 1,
        ..Header::default()
    }
}

#[test]
fn page_rules() {
    let mut e = Encoder::new(Vec::new(), &hdr(2, 10, 512)).unwrap();
    assert_eq!(
        e.write_page(1, &[0; 100]),
        Err(LtxError::PageSizeMismatch {
            expected: 512,
            got: 100
        })
    );
    assert_eq!(
        e.write_page(0, &[0; 512]),
        Err(LtxError::PageOutOfOrder { prev: 0, pgno: 0 })
    );
    assert_eq!(
        e.write_page(11, &[0; 512]),
        Err(LtxError::PageAboveCommit {
            pgno: 11,
            commit: 10
        })
    );
    e.write_page(4, &[4; 512]).unwrap();
    assert_eq!(
        e.write_page(4, &[0; 512]),
        Err(LtxError::PageOutOfOrder { prev: 4, pgno: 4 })
    );
    assert_eq!(
        e.write_page(3, &[0; 512]),
        Err(LtxError::PageOutOfOrder { prev: 4, pgno: 3 })
    );
    e.write_page(9, &[9; 512]).unwrap();
    assert_eq!(e.pages_written(), 2);
    let before = e.bytes_written();
    // Rejected pages leave the output untouched.
    assert_eq!(
        e.write_page(2, &[0; 512]).unwrap_err(),
        LtxError::PageOutOfOrder { prev: 9, pgno: 2 }
    );
    assert_eq!(e.bytes_written(), before);
    let (bytes, trailer) = e.finish(0).unwrap();
    assert!(bytes.len() as u64 > before + 6 + 1 + 8 + 16);
    let (_, pages, t) = decode_all(&bytes).unwrap();
    assert_eq!(t, trailer);
    assert_eq!(pages.iter().map(|p| p.0).collect::<Vec<_>>(), [4, 9]);
}

#[test]
fn lock_page_rejected() {
    assert_eq!(lock_pgno(65536), 16385);
    let lock = lock_pgno(512);
    let mut e = Encoder::new(Vec::new(), &hdr(2, lock + 5, 512)).unwrap();
    assert_eq!(e.write_page(lock, &[0; 512]), Err(LtxError::LockPage(lock)));
    e.write_page(lock + 1, &[1; 512]).unwrap();
    e.finish(0).unwrap();
}

#[test]
fn snapshot_must_be_complete() {
    // Gap inside.
    let mut e = Encoder::new(Vec::new(), &hdr(1, 4, 512)).unwrap();
    e.write_page(1, &[1; 512]).unwrap();
    assert_eq!(
        e.write_page(3, &[3; 512]),
        Err(LtxError::MissingPages { from: 2, to: 2 })
    );
    // Must start at 1.
    let mut e = Encoder::new(Vec::new(), &hdr(1, 4, 512)).unwrap();
    assert_eq!(
        e.write_page(2, &[2; 512]),
        Err(LtxError::MissingPages { from: 1, to: 1 })
    );
    // Missing tail.
    let mut e = Encoder::new(Vec::new(), &hdr(1, 4, 512)).unwrap();
    e.write_page(1, &[1; 512]).unwrap();
    e.write_page(2, &[2; 512]).unwrap();
    assert_eq!(
        e.finish(0).unwrap_err(),
        LtxError::MissingPages { from: 3, to: 4 }
    );
    // Empty snapshot of a non-empty database.
    let e = Encoder::new(Vec::new(), &hdr(1, 2, 512)).unwrap();
    assert_eq!(
        e.finish(0).unwrap_err(),
        LtxError::MissingPages { from: 1, to: 2 }
    );
    // Empty database: fine.
    let e = Encoder::new(Vec::new(), &hdr(1, 0, 512)).unwrap();
    e.finish(0).unwrap();
}

#[test]
fn snapshot_skips_lock_page() {
    // 65536-byte pages: lock page 16385 is reachable, but keep it cheap by using
    // an incremental file growing across it.
    let lock = lock_pgno(65536);
    let page = vec![7u8; 65536];
    let mut e = Encoder::new(Vec::new(), &hdr(5, lock + 1, 65536)).unwrap();
    e.require_growth_pages(lock - 2);
    e.write_page(lock - 1, &page).unwrap();
    assert_eq!(e.write_page(lock, &page), Err(LtxError::LockPage(lock)));
    e.write_page(lock + 1, &page).unwrap();
    let (bytes, _) = e.finish(0).unwrap();
    let (_, pages, _) = decode_all(&bytes).unwrap();
    assert_eq!(
        pages.iter().map(|p| p.0).collect::<Vec<_>>(),
        [lock - 1, lock + 1]
    );
}

#[test]
fn growth_pages_enforced() {
    let p = [5u8; 512];
    // Pages 2 (an update) and 6..=8 (growth from 5 to 8).
    let mut e = Encoder::new(Vec::new(), &hdr(4, 8, 512)).unwrap();
    e.require_growth_pages(5);
    e.write_page(2, &p).unwrap();
    assert_eq!(
        e.write_page(7, &p),
        Err(LtxError::MissingPages { from: 6, to: 6 })
    );
    e.write_page(6, &p).unwrap();
    e.write_page(7, &p).unwrap();
    assert_eq!(
        e.finish(0).unwrap_err(),
        LtxError::MissingPages { from: 8, to: 8 }
    );

    let mut e = Encoder::new(Vec::new(), &hdr(4, 8, 512)).unwrap();
    e.require_growth_pages(5);
    for pgno in [2, 6, 7, 8] {
        e.write_page(pgno, &p).unwrap();
    }
    e.finish(0).unwrap();

    // No growth: nothing required.
    let mut e = Encoder::new(Vec::new(), &hdr(4, 8, 512)).unwrap();
    e.require_growth_pages(8);
    e.write_page(3, &p).unwrap();
    e.finish(0).unwrap();

    // Requirement arriving after the pages.
    let mut e = Encoder::new(Vec::new(), &hdr(4, 8, 512)).unwrap();
    e.write_page(6, &p).unwrap();
    e.write_page(8, &p).unwrap();
    e.require_growth_pages(5);
    assert_eq!(
        e.finish(0).unwrap_err(),
        LtxError::MissingPages { from: 6, to: 7 }
    );
    let mut e = Encoder::new(Vec::new(), &hdr(4, 8, 512)).unwrap();
    e.write_page(6, &p).unwrap();
    e.write_page(7, &p).unwrap();
    e.require_growth_pages(5);
    e.write_page(8, &p).unwrap();
    e.finish(0).unwrap();
}

#[test]
fn post_apply_rules() {
    let p = [5u8; 512];
    // NoChecksum: must be zero.
    let e = Encoder::new(Vec::new(), &hdr(4, 8, 512)).unwrap();
    assert!(matches!(
        e.finish(CHECKSUM_FLAG | 1),
        Err(LtxError::InvalidTrailer(_))
    ));
    // Checksummed incremental: non-zero with bit 63.
    let mut h = hdr(4, 8, 512);
    h.flags = 0;
    h.pre_apply_checksum = CHECKSUM_FLAG | 9;
    let e = Encoder::new(Vec::new(), &h).unwrap();
    assert!(matches!(e.finish(0), Err(LtxError::InvalidTrailer(_))));
    let e = Encoder::new(Vec::new(), &h).unwrap();
    assert!(matches!(e.finish(1), Err(LtxError::InvalidTrailer(_))));
    let e = Encoder::new(Vec::new(), &h).unwrap();
    e.finish(CHECKSUM_FLAG | 1).unwrap();
    // Checksummed snapshot: must match the pages.
    let mut h = hdr(1, 2, 512);
    h.flags = 0;
    let mut want = DbChecksum::new();
    want.add(1, &p);
    want.add(2, &p);
    let mut e = Encoder::new(Vec::new(), &h).unwrap();
    e.write_page(1, &p).unwrap();
    e.write_page(2, &p).unwrap();
    assert_eq!(
        e.finish(CHECKSUM_FLAG | 1).unwrap_err(),
        LtxError::ChecksumMismatch {
            expected: want.value(),
            actual: CHECKSUM_FLAG | 1
        }
    );
    let mut e = Encoder::new(Vec::new(), &h).unwrap();
    e.write_page(1, &p).unwrap();
    e.write_page(2, &p).unwrap();
    let (bytes, t) = e.finish(want.value()).unwrap();
    assert_eq!(decode_all(&bytes).unwrap().2, t);
}

#[test]
fn invalid_header_rejected_and_io_errors_poison() {
    let mut h = hdr(2, 3, 512);
    h.flags = 1;
    assert_eq!(
        Encoder::new(Vec::new(), &h).err(),
        Some(LtxError::InvalidFlags(1))
    );

    struct Limited(usize);
    impl Write for Limited {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.0 < b.len() {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    assert!(matches!(
        Encoder::new(Limited(10), &hdr(2, 3, 512)).err(),
        Some(LtxError::Io(_))
    ));
    let mut e = Encoder::new(Limited(120), &hdr(2, 3, 512)).unwrap();
    assert!(matches!(e.write_page(1, &[1; 512]), Err(LtxError::Io(_))));
    assert!(matches!(
        e.write_page(2, &[1; 512]),
        Err(LtxError::InvalidState(_))
    ));
    assert!(matches!(e.finish(0), Err(LtxError::InvalidState(_))));
}
