//! Each header validation rule, through both `Header::validate` and `Header::decode`.

use crate::ltx::*;

fn sample() -> Header {
    Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: 4096,
        commit: 7,
        min_txid: 5,
        max_txid: 9,
        timestamp_ms: 1_700_000_000_123,
        pre_apply_checksum: 0,
        wal_offset: 32,
        wal_size: 4120 * 3,
        wal_salt1: 0xdead_beef,
        wal_salt2: 0x0102_0304,
        node_id: 42,
    }
}

fn rejected(f: impl FnOnce(&mut Header)) -> LtxError {
    let mut h = sample();
    f(&mut h);
    let err = h.validate().expect_err("header should be invalid");
    assert_eq!(Header::decode(&h.encode()), Err(err.clone()));
    err
}

#[test]
fn each_rule_rejected() {
    assert_eq!(rejected(|h| h.flags = 0x1), LtxError::InvalidFlags(0x1));
    assert_eq!(
        rejected(|h| h.flags = 0x8000_0002),
        LtxError::InvalidFlags(0x8000_0002)
    );
    assert_eq!(
        rejected(|h| h.page_size = 1000),
        LtxError::InvalidPageSize(1000)
    );
    assert_eq!(
        rejected(|h| h.page_size = 256),
        LtxError::InvalidPageSize(256)
    );
    assert_eq!(
        rejected(|h| h.page_size = 131_072),
        LtxError::InvalidPageSize(131_072)
    );
    assert_eq!(rejected(|h| h.page_size = 0), LtxError::InvalidPageSize(0));
    assert!(matches!(
        rejected(|h| h.min_txid = 0),
        LtxError::InvalidHeader(_)
    ));
    assert!(matches!(
        rejected(|h| {
            h.min_txid = 0;
            h.max_txid = 0
        }),
        LtxError::InvalidHeader(_)
    ));
    assert!(matches!(
        rejected(|h| h.min_txid = 10),
        LtxError::InvalidHeader(_)
    ));
    assert!(matches!(
        rejected(|h| h.wal_offset = 1 << 63),
        LtxError::InvalidHeader(_)
    ));
    assert!(matches!(
        rejected(|h| h.wal_size = u64::MAX),
        LtxError::InvalidHeader(_)
    ));
    assert!(matches!(
        rejected(|h| {
            h.wal_offset = 0;
            h.wal_size = 0;
            h.wal_salt2 = 0
        }),
        LtxError::InvalidHeader(_)
    ));
    assert!(matches!(
        rejected(|h| {
            h.wal_offset = 0;
            h.wal_salt1 = 0;
            h.wal_salt2 = 0
        }),
        LtxError::InvalidHeader(_)
    ));
    // Snapshot with a pre-apply checksum, with or without NoChecksum.
    assert!(matches!(
        rejected(|h| {
            h.min_txid = 1;
            h.pre_apply_checksum = CHECKSUM_FLAG | 1
        }),
        LtxError::InvalidHeader(_)
    ));
    assert!(matches!(
        rejected(|h| {
            h.min_txid = 1;
            h.flags = 0;
            h.pre_apply_checksum = CHECKSUM_FLAG | 1
        }),
        LtxError::InvalidHeader(_)
    ));
    // NoChecksum incremental with a pre-apply checksum.
    assert!(matches!(
        rejected(|h| h.pre_apply_checksum = CHECKSUM_FLAG),
        LtxError::InvalidHeader(_)
    ));
    // Checksummed incremental: missing, or lacking bit 63.
    assert!(matches!(
        rejected(|h| h.flags = 0),
        LtxError::InvalidHeader(_)
    ));
    assert!(matches!(
        rejected(|h| {
            h.flags = 0;
            h.pre_apply_checksum = 0x1234
        }),
        LtxError::InvalidHeader(_)
    ));
}

#[test]
fn accepted_edge_cases() {
    let mut h = sample();
    h.wal_offset = 0;
    h.wal_size = 0;
    h.wal_salt1 = 0;
    h.wal_salt2 = 0;
    h.commit = 0;
    assert_eq!(h.validate(), Ok(()));
    h.min_txid = 1;
    assert!(h.is_snapshot());
    assert_eq!(h.validate(), Ok(()));
    h.flags = 0;
    assert!(!h.no_checksum());
    assert_eq!(h.validate(), Ok(()));
    h.min_txid = 9;
    assert_eq!(
        h.validate(),
        Err(LtxError::InvalidHeader("pre-apply checksum missing"))
    );
}
