//! The 100-byte LTX header and the 16-byte trailer: byte layout and the validation
//! rules Litestream's `ltx` Go package (v0.5.x) applies to them.

use super::{CHECKSUM_FLAG, FLAG_NO_CHECKSUM, HEADER_SIZE, LtxError, MAGIC, TRAILER_SIZE};

/// The file header. All integers are stored big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub flags: u32,
    pub page_size: u32,
    /// Database size in pages after applying this file.
    pub commit: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    pub pre_apply_checksum: u64,
    pub wal_offset: u64,
    pub wal_size: u64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
    /// 0 = unset.
    pub node_id: u64,
}

fn be32(b: &[u8; HEADER_SIZE], o: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(o..o + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

impl Header {
    /// Serializes the header; the 20 reserved bytes are zero.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let fields: [(usize, &[u8]); 13] = [
            (0, MAGIC),
            (4, &self.flags.to_be_bytes()),
            (8, &self.page_size.to_be_bytes()),
            (12, &self.commit.to_be_bytes()),
            (16, &self.min_txid.to_be_bytes()),
            (24, &self.max_txid.to_be_bytes()),
            (32, &self.timestamp_ms.to_be_bytes()),
            (40, &self.pre_apply_checksum.to_be_bytes()),
            (48, &self.wal_offset.to_be_bytes()),
            (56, &self.wal_size.to_be_bytes()),
            (64, &self.wal_salt1.to_be_bytes()),
            (68, &self.wal_salt2.to_be_bytes()),
            (72, &self.node_id.to_be_bytes()),
        ];
        for (off, bytes) in fields {
            if let Some(dst) = b.get_mut(off..off + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        b
    }

    /// Parses the first [`HEADER_SIZE`] bytes of `b` and validates the result.
    ///
    /// The reserved bytes (80..100) are not checked, like the Go reader: a later format
    /// revision may use them (node id once lived there), and the file checksum covers
    /// them anyway.
    pub fn decode(b: &[u8]) -> Result<Header, LtxError> {
        let b: &[u8; HEADER_SIZE] = b
            .get(..HEADER_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(LtxError::Truncated("header"))?;
        if b.get(..4) != Some(&MAGIC[..]) {
            return Err(LtxError::BadMagic);
        }
        let h = Header {
            flags: be32(b, 4),
            page_size: be32(b, 8),
            commit: be32(b, 12),
            min_txid: be64(b, 16),
            max_txid: be64(b, 24),
            timestamp_ms: be64(b, 32) as i64,
            pre_apply_checksum: be64(b, 40),
            wal_offset: be64(b, 48),
            wal_size: be64(b, 56),
            wal_salt1: be32(b, 64),
            wal_salt2: be32(b, 68),
            node_id: be64(b, 72),
        };
        h.validate()?;
        Ok(h)
    }

    /// Applies the header rules of the reference (and of Go's `Header.Validate`).
    pub fn validate(&self) -> Result<(), LtxError> {
        if self.flags & !FLAG_NO_CHECKSUM != 0 {
            return Err(LtxError::InvalidFlags(self.flags));
        }
        if !super::is_valid_page_size(self.page_size) {
            return Err(LtxError::InvalidPageSize(self.page_size));
        }
        if self.min_txid == 0 {
            return Err(LtxError::InvalidHeader("min TXID is zero"));
        }
        if self.max_txid == 0 {
            return Err(LtxError::InvalidHeader("max TXID is zero"));
        }
        if self.min_txid > self.max_txid {
            return Err(LtxError::InvalidHeader("min TXID is above max TXID"));
        }
        // Go keeps these as int64 and rejects negative values.
        if self.wal_offset > i64::MAX as u64 {
            return Err(LtxError::InvalidHeader("WAL offset is negative as int64"));
        }
        if self.wal_size > i64::MAX as u64 {
            return Err(LtxError::InvalidHeader("WAL size is negative as int64"));
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return Err(LtxError::InvalidHeader(
                "WAL salts set without a WAL offset",
            ));
        }
        if self.wal_offset == 0 && self.wal_size != 0 {
            return Err(LtxError::InvalidHeader("WAL size set without a WAL offset"));
        }
        if self.is_snapshot() {
            if self.pre_apply_checksum != 0 {
                return Err(LtxError::InvalidHeader("snapshot has a pre-apply checksum"));
            }
        } else if self.no_checksum() {
            if self.pre_apply_checksum != 0 {
                return Err(LtxError::InvalidHeader(
                    "pre-apply checksum set with the NoChecksum flag",
                ));
            }
        } else if self.pre_apply_checksum == 0 {
            return Err(LtxError::InvalidHeader("pre-apply checksum missing"));
        } else if self.pre_apply_checksum & CHECKSUM_FLAG == 0 {
            return Err(LtxError::InvalidHeader("pre-apply checksum lacks bit 63"));
        }
        Ok(())
    }

    /// A snapshot holds the whole database (its range starts at TXID 1).
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    /// Database checksums are not tracked in this file.
    pub fn no_checksum(&self) -> bool {
        self.flags & FLAG_NO_CHECKSUM != 0
    }

    /// The SQLite lock page for this file's page size.
    pub fn lock_pgno(&self) -> u32 {
        super::lock_pgno(self.page_size)
    }
}

/// The file trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub post_apply_checksum: u64,
    /// CRC-64 of everything before it, with bit 63 set.
    pub file_checksum: u64,
}

impl Trailer {
    /// Parses the first [`TRAILER_SIZE`] bytes of `b` (no validation: see [`Trailer::validate`]).
    pub fn decode(b: &[u8]) -> Result<Trailer, LtxError> {
        let b = b
            .get(..TRAILER_SIZE)
            .ok_or(LtxError::Truncated("trailer"))?;
        Ok(Trailer {
            post_apply_checksum: be64(b, 0),
            file_checksum: be64(b, 8),
        })
    }

    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        let (post, file) = b.split_at_mut(8);
        post.copy_from_slice(&self.post_apply_checksum.to_be_bytes());
        file.copy_from_slice(&self.file_checksum.to_be_bytes());
        b
    }

    /// Go's `Trailer.Validate`: with NoChecksum the post-apply checksum is zero,
    /// otherwise it is non-zero with bit 63 set; the file checksum has bit 63 set.
    pub fn validate(&self, header: &Header) -> Result<(), LtxError> {
        validate_post_apply(header, self.post_apply_checksum)?;
        if self.file_checksum & CHECKSUM_FLAG == 0 {
            return Err(LtxError::InvalidTrailer("file checksum lacks bit 63"));
        }
        Ok(())
    }
}

/// The post-apply checksum rule on its own (the encoder checks it before writing).
pub(crate) fn validate_post_apply(header: &Header, post: u64) -> Result<(), LtxError> {
    if header.no_checksum() {
        if post != 0 {
            return Err(LtxError::InvalidTrailer(
                "post-apply checksum set with the NoChecksum flag",
            ));
        }
    } else if post == 0 {
        return Err(LtxError::InvalidTrailer("post-apply checksum missing"));
    } else if post & CHECKSUM_FLAG == 0 {
        return Err(LtxError::InvalidTrailer("post-apply checksum lacks bit 63"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn layout_is_big_endian_at_reference_offsets() {
        let b = sample().encode();
        assert_eq!(&b[0..4], b"LTX1");
        assert_eq!(&b[4..8], &[0, 0, 0, 2]);
        assert_eq!(&b[8..12], &4096u32.to_be_bytes());
        assert_eq!(&b[12..16], &7u32.to_be_bytes());
        assert_eq!(&b[16..24], &5u64.to_be_bytes());
        assert_eq!(&b[24..32], &9u64.to_be_bytes());
        assert_eq!(&b[32..40], &1_700_000_000_123i64.to_be_bytes());
        assert_eq!(&b[48..56], &32u64.to_be_bytes());
        assert_eq!(&b[64..68], &0xdead_beefu32.to_be_bytes());
        assert_eq!(&b[72..80], &42u64.to_be_bytes());
        assert!(b[80..].iter().all(|&x| x == 0));
    }

    #[test]
    fn round_trip() {
        let mut h = sample();
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        h.flags = 0;
        h.pre_apply_checksum = CHECKSUM_FLAG | 0x1234;
        h.timestamp_ms = -5;
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        // Longer input: only the first 100 bytes count; reserved bytes are ignored.
        let mut long = h.encode().to_vec();
        long[90] = 0xff;
        long.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Header::decode(&long), Ok(h));
    }

    #[test]
    fn bad_magic_and_truncation() {
        let mut b = sample().encode();
        assert_eq!(Header::decode(&b[..99]), Err(LtxError::Truncated("header")));
        assert_eq!(Header::decode(&[]), Err(LtxError::Truncated("header")));
        b[3] = b'2';
        assert_eq!(Header::decode(&b), Err(LtxError::BadMagic));
    }

    #[test]
    fn trailer_round_trip_and_rules() {
        let t = Trailer {
            post_apply_checksum: 0,
            file_checksum: CHECKSUM_FLAG | 77,
        };
        assert_eq!(Trailer::decode(&t.encode()), Ok(t));
        assert_eq!(
            Trailer::decode(&t.encode()[..15]),
            Err(LtxError::Truncated("trailer"))
        );
        let mut h = sample();
        assert_eq!(t.validate(&h), Ok(()));
        let bad_file = Trailer {
            file_checksum: 77,
            ..t
        };
        assert!(matches!(
            bad_file.validate(&h),
            Err(LtxError::InvalidTrailer(_))
        ));
        let with_post = Trailer {
            post_apply_checksum: CHECKSUM_FLAG | 1,
            ..t
        };
        assert!(matches!(
            with_post.validate(&h),
            Err(LtxError::InvalidTrailer(_))
        ));
        h.flags = 0;
        assert_eq!(with_post.validate(&h), Ok(()));
        assert!(matches!(t.validate(&h), Err(LtxError::InvalidTrailer(_))));
        let no_flag = Trailer {
            post_apply_checksum: 1,
            ..t
        };
        assert!(matches!(
            no_flag.validate(&h),
            Err(LtxError::InvalidTrailer(_))
        ));
    }
}
