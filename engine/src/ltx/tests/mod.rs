//! Cross-module tests of the LTX codec. This module holds the shared fixtures (page
//! contents, file plans, a hand-built file writer that also writes legacy frame
//! pages); the submodules hold the tests:
//!
//! - `roundtrip`: encoder → decoder proptests, corruption and truncation.
//! - `raw_files`: hand-built files the encoder refuses to write (out-of-order pages,
//!   lock page, bad index...) and legacy files.
//! - `encoder_rules`, `header_rules`: what the encoder and header validation refuse.

mod encoder_rules;
mod header_rules;
mod raw_files;
mod roundtrip;

use proptest::prelude::*;

use super::index::{IndexEntry, append_entry, read_index};
use super::legacy::encode_frame;
use super::*;

/// Deterministic page contents of a few kinds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Zero,
    Fill(u8),
    Noise(u32),
    Runs(u32),
}

fn page(kind: Kind, page_size: usize, pgno: u32) -> Vec<u8> {
    let mut s = match kind {
        Kind::Noise(s) | Kind::Runs(s) => s ^ pgno.wrapping_mul(0x9e37_79b9),
        _ => 0,
    };
    let mut rnd = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 24) as u8
    };
    match kind {
        Kind::Zero => vec![0; page_size],
        Kind::Fill(b) => vec![b; page_size],
        Kind::Noise(_) => (0..page_size).map(|_| rnd()).collect(),
        Kind::Runs(_) => {
            let mut v = Vec::with_capacity(page_size);
            while v.len() < page_size {
                let (b, n) = (rnd() % 4, usize::from(rnd()) + 1);
                v.extend(std::iter::repeat_n(b, n.min(page_size - v.len())));
            }
            v
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Zero),
        any::<u8>().prop_map(Kind::Fill),
        any::<u32>().prop_map(Kind::Noise),
        any::<u32>().prop_map(Kind::Runs),
    ]
}

/// A file to encode: header, pages, post-apply checksum.
#[derive(Clone, Debug)]
struct Plan {
    header: Header,
    pages: Vec<(u32, Vec<u8>)>,
    post: u64,
}

fn plan() -> impl Strategy<Value = Plan> {
    let sizes = prop_oneof![
        Just(512u32),
        Just(1024),
        Just(2048),
        Just(4096),
        Just(8192),
        Just(16384),
        Just(32768),
        Just(65536)
    ];
    (
        sizes,
        any::<bool>(),
        any::<bool>(),
        0u32..12,
        any::<u64>(),
        proptest::collection::vec(kind(), 1..4),
    )
        .prop_flat_map(|(ps, snapshot, no_checksum, commit, seed, kinds)| {
            let max_pages = (262_144 / ps).clamp(1, 8);
            let commit = if snapshot {
                commit.min(max_pages)
            } else {
                commit.max(1)
            };
            let subset = proptest::collection::vec(any::<bool>(), commit as usize);
            (
                Just((ps, snapshot, no_checksum, commit, seed, kinds)),
                subset,
            )
        })
        .prop_map(
            |((ps, snapshot, no_checksum, commit, seed, kinds), subset)| {
                let max_pages = (262_144 / ps).clamp(1, 8) as usize;
                let pgnos: Vec<u32> = if snapshot {
                    (1..=commit).collect()
                } else {
                    (1..=commit)
                        .filter(|&p| subset[(p - 1) as usize])
                        .take(max_pages)
                        .collect()
                };
                let pages: Vec<(u32, Vec<u8>)> = pgnos
                    .iter()
                    .map(|&p| (p, page(kinds[p as usize % kinds.len()], ps as usize, p)))
                    .collect();
                let min_txid = if snapshot { 1 } else { 2 + seed % 1000 };
                let mut header = Header {
                    flags: if no_checksum { FLAG_NO_CHECKSUM } else { 0 },
                    page_size: ps,
                    commit,
                    min_txid,
                    max_txid: min_txid + seed % 7,
                    timestamp_ms: (seed >> 8) as i64,
                    node_id: seed % 3,
                    ..Header::default()
                };
                if seed % 2 == 0 {
                    header.wal_offset = 32;
                    header.wal_size = u64::from(ps + 24) * pages.len() as u64;
                    header.wal_salt1 = seed as u32;
                    header.wal_salt2 = (seed >> 32) as u32;
                }
                if !snapshot && !no_checksum {
                    header.pre_apply_checksum = CHECKSUM_FLAG | seed;
                }
                let post = if no_checksum {
                    0
                } else if snapshot {
                    let mut c = DbChecksum::new();
                    for (p, d) in &pages {
                        c.add(*p, d);
                    }
                    c.value()
                } else {
                    CHECKSUM_FLAG | seed.rotate_left(17)
                };
                Plan {
                    header,
                    pages,
                    post,
                }
            },
        )
}

fn encode(plan: &Plan) -> (Vec<u8>, Trailer) {
    let mut enc = Encoder::new(Vec::new(), &plan.header).unwrap();
    for (p, d) in &plan.pages {
        enc.write_page(*p, d).unwrap();
    }
    let n = enc.bytes_written();
    let (bytes, trailer) = enc.finish(plan.post).unwrap();
    assert!(bytes.len() as u64 > n);
    (bytes, trailer)
}

/// Byte ranges holding compressed page data (as opposed to structure and checksums).
fn payload_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    read_index(bytes)
        .unwrap()
        .iter()
        .map(|e| (e.offset as usize + PAGE_HEADER_SIZE + 4)..(e.offset + e.size) as usize)
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Block,
    Legacy,
}

/// Hand-built file with a correct file checksum, whatever the pages: lets the
/// decoder's own checks be exercised. `edit` may rewrite the index before it is
/// encoded (its stored length stays right).
fn build_raw(
    header: &[u8; HEADER_SIZE],
    pages: &[(u32, Vec<u8>)],
    mode: Mode,
    edit: impl FnOnce(&mut Vec<IndexEntry>),
    post: u64,
) -> Vec<u8> {
    let mut out = header.to_vec();
    let mut d = crc64().digest();
    d.update(header);
    let mut entries = Vec::new();
    for (pgno, data) in pages {
        let offset = out.len() as u64;
        let flags = if mode == Mode::Block {
            PAGE_FLAG_BLOCK
        } else {
            0
        };
        let mut head = pgno.to_be_bytes().to_vec();
        head.extend_from_slice(&flags.to_be_bytes());
        let body = if mode == Mode::Block {
            let b = lz4_flex::block::compress(data);
            head.extend_from_slice(&(b.len() as u32).to_be_bytes());
            b
        } else {
            encode_frame(data)
        };
        d.update(&head);
        d.update(data);
        out.extend_from_slice(&head);
        out.extend_from_slice(&body);
        entries.push(IndexEntry {
            pgno: *pgno,
            offset,
            size: out.len() as u64 - offset,
        });
    }
    out.extend_from_slice(&[0u8; PAGE_HEADER_SIZE]);
    edit(&mut entries);
    let mut idx = Vec::new();
    for e in &entries {
        append_entry(&mut idx, e);
    }
    idx.push(0);
    let len = idx.len() as u64;
    idx.extend_from_slice(&len.to_be_bytes());
    idx.extend_from_slice(&post.to_be_bytes());
    out.extend_from_slice(&idx);
    d.update(&[0u8; PAGE_HEADER_SIZE]);
    d.update(&idx);
    out.extend_from_slice(&(CHECKSUM_FLAG | d.finalize()).to_be_bytes());
    out
}

fn incr_header(commit: u32) -> Header {
    Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: 512,
        commit,
        min_txid: 5,
        max_txid: 5,
        ..Header::default()
    }
}

fn err_of(bytes: &[u8]) -> LtxError {
    decode_all(bytes).unwrap_err()
}
