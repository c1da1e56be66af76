//! Encoder → decoder round trips over random files, and what single-byte corruption,
//! truncation and garbage do to the decoder.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(plan in plan()) {
        let (bytes, trailer) = encode(&plan);
        let (h, pages, t) = decode_all(&bytes).unwrap();
        prop_assert_eq!(h, plan.header);
        prop_assert_eq!(&pages, &plan.pages);
        prop_assert_eq!(t, trailer);
        prop_assert_eq!(t.post_apply_checksum, plan.post);
        prop_assert_eq!(peek_header(&bytes).unwrap(), plan.header);
        // The index as a random-access reader would find it.
        let idx = read_index(&bytes).unwrap();
        prop_assert_eq!(idx.iter().map(|e| e.pgno).collect::<Vec<_>>(), plan.pages.iter().map(|p| p.0).collect::<Vec<_>>());
        // File checksum = CRC of the logical stream, recomputed independently.
        let mut d = crc64().digest();
        d.update(&bytes[..HEADER_SIZE]);
        for (e, (_, data)) in idx.iter().zip(&plan.pages) {
            let o = e.offset as usize;
            prop_assert_eq!(&bytes[o + 4..o + 6], &PAGE_FLAG_BLOCK.to_be_bytes());
            d.update(&bytes[o..o + PAGE_HEADER_SIZE + 4]);
            d.update(data);
        }
        let idx_end = bytes.len() - TRAILER_SIZE;
        let first_after_pages = idx.last().map_or(HEADER_SIZE, |e| (e.offset + e.size) as usize);
        d.update(&bytes[first_after_pages..idx_end + 8]);
        prop_assert_eq!(CHECKSUM_FLAG | d.finalize(), trailer.file_checksum);
    }

    #[test]
    fn single_byte_corruption_is_caught(plan in plan(), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let (bytes, _) = encode(&plan);
        let at = pos.index(bytes.len());
        let mut bad = bytes.clone();
        bad[at] ^= x;
        match decode_all(&bad) {
            Err(_) => {}
            Ok((h, pages, t)) => {
                // Only a change inside compressed data that decodes to the very same
                // page can pass: the format checksums uncompressed bytes.
                let in_payload = payload_ranges(&bytes).iter().any(|r| r.contains(&at));
                prop_assert!(in_payload, "corruption at {} outside page data went unnoticed", at);
                prop_assert_eq!(decode_all(&bytes).unwrap(), (h, pages, t));
            }
        }
    }

    #[test]
    fn garbage_never_panics(
        plan in plan(),
        cut in any::<prop::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 0..600),
        legacy in any::<bool>(),
    ) {
        // A real prefix (valid header, maybe some pages) followed by random bytes,
        // some of them shaped like page headers and LZ4 frame starts.
        let (bytes, _) = encode(&plan);
        let mut bad = bytes[..cut.index(bytes.len())].to_vec();
        if legacy {
            bad.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0x04, 0x22, 0x4d, 0x18]);
        } else {
            bad.extend_from_slice(&[0, 0, 0, 1, 0, 1]);
        }
        bad.extend_from_slice(&junk);
        let _ = decode_all(&bad);
        let _ = decode_all(&junk);
        let _ = read_index(&bad);
    }

    #[test]
    fn legacy_round_trip(plan in plan()) {
        let bytes = build_raw(&plan.header.encode(), &plan.pages, Mode::Legacy, |_| {}, plan.post);
        let (h, pages, t) = decode_all(&bytes).unwrap();
        prop_assert_eq!(h, plan.header);
        prop_assert_eq!(&pages, &plan.pages);
        prop_assert_eq!(t.post_apply_checksum, plan.post);
        // The hand-built block-mode file is byte-identical to the encoder's.
        let raw = build_raw(&plan.header.encode(), &plan.pages, Mode::Block, |_| {}, plan.post);
        prop_assert_eq!(raw, encode(&plan).0);
    }
}

#[test]
fn every_truncation_fails() {
    let ps = 512usize;
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: 512,
        commit: 3,
        min_txid: 1,
        max_txid: 4,
        ..Header::default()
    };
    let pages = vec![
        (1, page(Kind::Noise(1), ps, 1)),
        (2, page(Kind::Runs(2), ps, 2)),
        (3, page(Kind::Zero, ps, 3)),
    ];
    let plan = Plan {
        header,
        pages,
        post: 0,
    };
    let (bytes, _) = encode(&plan);
    let legacy = build_raw(&header.encode(), &plan.pages, Mode::Legacy, |_| {}, 0);
    for file in [&bytes, &legacy] {
        decode_all(file).unwrap();
        for n in 0..file.len() {
            let err = decode_all(&file[..n]).unwrap_err();
            assert!(matches!(err, LtxError::Truncated(_)), "length {n}: {err:?}");
        }
    }
}

#[test]
fn every_byte_flip_fails_for_incompressible_and_constant_pages() {
    let header = Header {
        flags: 0,
        page_size: 512,
        commit: 3,
        min_txid: 1,
        max_txid: 1,
        ..Header::default()
    };
    let pages = vec![
        (1, page(Kind::Noise(9), 512, 1)),
        (2, page(Kind::Fill(0x33), 512, 2)),
        (3, page(Kind::Zero, 512, 3)),
    ];
    let mut c = DbChecksum::new();
    for (p, d) in &pages {
        c.add(*p, d);
    }
    let plan = Plan {
        header,
        pages,
        post: c.value(),
    };
    let (bytes, _) = encode(&plan);
    for at in 0..bytes.len() {
        for x in [0x01u8, 0x10, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= x;
            assert!(
                decode_all(&bad).is_err(),
                "flip {x:#x} at {at} went unnoticed"
            );
        }
    }
}

#[test]
fn trailing_bytes_and_streaming_misuse() {
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: 512,
        commit: 1,
        min_txid: 1,
        max_txid: 1,
        ..Header::default()
    };
    let plan = Plan {
        header,
        pages: vec![(1, vec![1; 512])],
        post: 0,
    };
    let (mut bytes, _) = encode(&plan);
    let mut dec = Decoder::new(&bytes[..]).unwrap();
    let mut buf = vec![0u8; 512];
    assert_eq!(
        dec.next_page(&mut buf[..100]),
        Err(LtxError::PageSizeMismatch {
            expected: 512,
            got: 100
        })
    );
    assert_eq!(dec.next_page(&mut buf), Ok(Some(1)));
    assert_eq!(dec.next_page(&mut buf), Ok(None));
    assert_eq!(dec.next_page(&mut buf), Ok(None));
    dec.finish().unwrap();
    let dec = Decoder::new(&bytes[..]).unwrap();
    assert!(matches!(dec.finish(), Err(LtxError::InvalidState(_))));
    bytes.push(0);
    assert!(matches!(decode_all(&bytes), Err(LtxError::Corrupt(_))));
    bytes.extend_from_slice(&[0u8; 1000]);
    assert!(matches!(decode_all(&bytes), Err(LtxError::Corrupt(_))));
}
