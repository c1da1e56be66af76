//! Hand-built files (correct file checksum, wrong content) that the encoder would
//! refuse to write: the decoder's own checks must catch them. Also legacy files.

use super::*;

#[test]
fn decoder_rejects_bad_page_sequences() {
    let p = |n: u32| (n, vec![n as u8; 512]);
    let h = incr_header(10).encode();
    for mode in [Mode::Block, Mode::Legacy] {
        assert!(decode_all(&build_raw(&h, &[p(2), p(5)], mode, |_| {}, 0)).is_ok());
        assert_eq!(
            err_of(&build_raw(&h, &[p(5), p(2)], mode, |_| {}, 0)),
            LtxError::PageOutOfOrder { prev: 5, pgno: 2 }
        );
        assert_eq!(
            err_of(&build_raw(&h, &[p(5), p(5)], mode, |_| {}, 0)),
            LtxError::PageOutOfOrder { prev: 5, pgno: 5 }
        );
        assert_eq!(
            err_of(&build_raw(&h, &[p(11)], mode, |_| {}, 0)),
            LtxError::PageAboveCommit {
                pgno: 11,
                commit: 10
            }
        );
        let lock = lock_pgno(512);
        let hl = incr_header(lock + 1).encode();
        assert_eq!(
            err_of(&build_raw(&hl, &[p(lock)], mode, |_| {}, 0)),
            LtxError::LockPage(lock)
        );
        assert!(
            decode_all(&build_raw(
                &hl,
                &[p(lock - 1), p(lock + 1)],
                mode,
                |_| {},
                0
            ))
            .is_ok()
        );
        // Snapshots must be complete.
        let hs = Header {
            min_txid: 1,
            ..incr_header(3)
        }
        .encode();
        assert_eq!(
            err_of(&build_raw(&hs, &[p(1), p(3)], mode, |_| {}, 0)),
            LtxError::MissingPages { from: 2, to: 2 }
        );
        assert_eq!(
            err_of(&build_raw(&hs, &[p(1), p(2)], mode, |_| {}, 0)),
            LtxError::MissingPages { from: 3, to: 3 }
        );
        assert_eq!(
            err_of(&build_raw(&hs, &[p(2), p(3)], mode, |_| {}, 0)),
            LtxError::MissingPages { from: 1, to: 1 }
        );
        assert!(decode_all(&build_raw(&hs, &[p(1), p(2), p(3)], mode, |_| {}, 0)).is_ok());
    }
    // Page flags other than 0x0001 and a page number 0 with flags.
    let mut bad = build_raw(&h, &[p(2)], Mode::Block, |_| {}, 0);
    bad[HEADER_SIZE + 5] = 0x03;
    assert!(matches!(err_of(&bad), LtxError::Corrupt(_)));
    let mut bad = build_raw(&h, &[p(2)], Mode::Block, |_| {}, 0);
    bad[HEADER_SIZE + 3] = 0;
    assert!(matches!(err_of(&bad), LtxError::Corrupt(_)));
}

#[test]
fn decoder_rejects_bad_headers() {
    let ok = build_raw(&incr_header(4).encode(), &[], Mode::Block, |_| {}, 0);
    assert!(decode_all(&ok).is_ok());
    let patch = |at: usize, v: &[u8]| {
        let mut h = incr_header(4).encode();
        h[at..at + v.len()].copy_from_slice(v);
        build_raw(&h, &[], Mode::Block, |_| {}, 0)
    };
    assert_eq!(err_of(&patch(0, b"LTX2")), LtxError::BadMagic);
    assert_eq!(
        err_of(&patch(4, &3u32.to_be_bytes())),
        LtxError::InvalidFlags(3)
    );
    assert_eq!(
        err_of(&patch(4, &0x0100_0002u32.to_be_bytes())),
        LtxError::InvalidFlags(0x0100_0002)
    );
    assert_eq!(
        err_of(&patch(8, &1000u32.to_be_bytes())),
        LtxError::InvalidPageSize(1000)
    );
    assert_eq!(
        err_of(&patch(8, &131_072u32.to_be_bytes())),
        LtxError::InvalidPageSize(131_072)
    );
    assert!(matches!(
        err_of(&patch(16, &0u64.to_be_bytes())),
        LtxError::InvalidHeader(_)
    ));
    assert_eq!(peek_header(&ok[..50]), Err(LtxError::Truncated("header")));
}

#[test]
fn decoder_rejects_bad_indexes_and_trailers() {
    let p = |n: u32| (n, vec![n as u8; 512]);
    let h = incr_header(10).encode();
    let pages = [p(2), p(5), p(7)];
    for mode in [Mode::Block, Mode::Legacy] {
        let edits: [fn(&mut Vec<IndexEntry>); 6] = [
            |e| e[1].offset += 1,
            |e| e[1].size -= 1,
            |e| e[2].pgno = 8,
            |e| {
                e.pop();
            },
            |e| {
                e.push(IndexEntry {
                    pgno: 9,
                    offset: 1000,
                    size: 10,
                })
            },
            |e| e.clear(),
        ];
        for edit in edits {
            let bytes = build_raw(&h, &pages, mode, edit, 0);
            assert!(
                matches!(err_of(&bytes), LtxError::IndexMismatch(_)),
                "{:?}",
                err_of(&bytes)
            );
        }
        let good = build_raw(&h, &pages, mode, |_| {}, 0);
        // Wrong stored index length (caught before the file checksum is compared).
        let len_at = good.len() - TRAILER_SIZE - 8;
        let mut bad = good.clone();
        bad[len_at + 7] = bad[len_at + 7].wrapping_add(1);
        assert!(matches!(err_of(&bad), LtxError::IndexMismatch(_)));
        // Wrong file checksum.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x40;
        assert!(matches!(err_of(&bad), LtxError::ChecksumMismatch { .. }));
        // NoChecksum with a post-apply checksum.
        let bad = build_raw(&h, &pages, mode, |_| {}, CHECKSUM_FLAG | 5);
        assert!(matches!(err_of(&bad), LtxError::InvalidTrailer(_)));
    }
    // Checksummed snapshot whose post-apply checksum does not match its pages.
    let hs = Header {
        flags: 0,
        min_txid: 1,
        ..incr_header(2)
    };
    let pages = [p(1), p(2)];
    let mut c = DbChecksum::new();
    c.add(1, &pages[0].1);
    c.add(2, &pages[1].1);
    assert!(
        decode_all(&build_raw(
            &hs.encode(),
            &pages,
            Mode::Block,
            |_| {},
            c.value()
        ))
        .is_ok()
    );
    let bad = build_raw(&hs.encode(), &pages, Mode::Block, |_| {}, c.value() ^ 1);
    assert_eq!(
        err_of(&bad),
        LtxError::ChecksumMismatch {
            expected: c.value() ^ 1,
            actual: c.value()
        }
    );
}

#[test]
fn mixed_legacy_and_block_pages_decode() {
    let h = incr_header(10).encode();
    let a = build_raw(&h, &[(3, vec![3; 512])], Mode::Legacy, |_| {}, 0);
    // Splice: a legacy page followed by a block page, with a correct index/checksum.
    let pages = [(3u32, vec![3u8; 512]), (4, page(Kind::Noise(4), 512, 4))];
    let mut out = h.to_vec();
    let mut d = crc64().digest();
    d.update(&h);
    let mut entries = Vec::new();
    let frame = encode_frame(&pages[0].1);
    let head = [0, 0, 0, 3, 0, 0];
    entries.push(IndexEntry {
        pgno: 3,
        offset: out.len() as u64,
        size: (6 + frame.len()) as u64,
    });
    out.extend_from_slice(&head);
    out.extend_from_slice(&frame);
    d.update(&head);
    d.update(&pages[0].1);
    let block = lz4_flex::block::compress(&pages[1].1);
    let mut head = vec![0, 0, 0, 4, 0, 1];
    head.extend_from_slice(&(block.len() as u32).to_be_bytes());
    entries.push(IndexEntry {
        pgno: 4,
        offset: out.len() as u64,
        size: (10 + block.len()) as u64,
    });
    out.extend_from_slice(&head);
    out.extend_from_slice(&block);
    d.update(&head);
    d.update(&pages[1].1);
    let mut tail = vec![0u8; 6];
    for e in &entries {
        append_entry(&mut tail, e);
    }
    tail.push(0);
    let len = (tail.len() - 6) as u64;
    tail.extend_from_slice(&len.to_be_bytes());
    tail.extend_from_slice(&0u64.to_be_bytes());
    d.update(&tail);
    out.extend_from_slice(&tail);
    out.extend_from_slice(&(CHECKSUM_FLAG | d.finalize()).to_be_bytes());
    let (_, got, _) = decode_all(&out).unwrap();
    assert_eq!(got, pages);
    assert!(decode_all(&a).is_ok());
}
