//! The rolling database checksum LTX uses for pre-/post-apply checksums:
//! per page `crc64(be32(pgno) || page)`, database = bit 63 | XOR of all pages
//! (the lock page never takes part).

use super::CHECKSUM_FLAG;
use super::filecrc::FileDigest;

/// Raw CRC-64/GO-ISO of `be32(pgno) || data` (bit 63 not forced), through the same
/// implementation as the file checksum (the table, or SIMD with `simd-crc`).
pub fn page_checksum(pgno: u32, data: &[u8]) -> u64 {
    let mut d = FileDigest::new();
    d.update(&pgno.to_be_bytes());
    d.update(data);
    d.finalize()
}

/// XOR accumulator of page checksums. The field is the raw XOR; [`DbChecksum::value`]
/// is the stored form (bit 63 set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbChecksum(pub u64);

impl DbChecksum {
    /// The checksum of an empty database.
    pub fn new() -> Self {
        DbChecksum(0)
    }

    /// Adds page `pgno` with contents `data`.
    pub fn add(&mut self, pgno: u32, data: &[u8]) {
        self.0 ^= page_checksum(pgno, data);
    }

    /// Removes a page previously added with the same contents (XOR is its own inverse).
    pub fn remove(&mut self, pgno: u32, data: &[u8]) {
        self.0 ^= page_checksum(pgno, data);
    }

    /// XORs in an already computed page checksum (bit 63 is irrelevant here).
    pub fn xor_raw(&mut self, c: u64) {
        self.0 ^= c;
    }

    /// The raw XOR of all page checksums.
    pub fn raw(&self) -> u64 {
        self.0
    }

    /// The checksum as stored in a header or trailer: bit 63 | XOR.
    pub fn value(&self) -> u64 {
        CHECKSUM_FLAG | self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vector() {
        let mut c = DbChecksum::new();
        for (pgno, fill) in [(1u32, 1u8), (2, 2), (3, 3)] {
            c.add(pgno, &[fill; 512]);
        }
        assert_eq!(c.value(), 0xefff_ffff_ecd9_9000);
    }

    #[test]
    fn empty_database_and_inverse() {
        let mut c = DbChecksum::new();
        assert_eq!(c.value(), CHECKSUM_FLAG);
        c.add(1, &[9; 512]);
        let one = c;
        c.add(2, &[8; 512]);
        c.remove(2, &[8; 512]);
        assert_eq!(c, one);
        c.remove(1, &[9; 512]);
        assert_eq!(c.value(), CHECKSUM_FLAG);
        // xor_raw ignores bit 63 in the final value.
        c.xor_raw(page_checksum(1, &[9; 512]) | CHECKSUM_FLAG);
        assert_eq!(c.value(), one.value());
    }

    #[test]
    fn page_checksum_matches_plain_crc() {
        let data = [0x5a; 1024];
        let mut buf = 7u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&data);
        assert_eq!(page_checksum(7, &data), crate::ltx::crc64().checksum(&buf));
        assert_ne!(page_checksum(7, &data), page_checksum(8, &data));
    }
}
