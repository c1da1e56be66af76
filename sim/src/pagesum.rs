//! Page checksums for the oracle and the checker: CRC-64/GO-ISO of
//! `be32(pgno) || page`, the value LTX's database checksum is built from. Computed with
//! a SIMD CRC (crc-fast), not with walvault-engine's table-driven one: the oracle
//! hashes every page the application writes and the checker every page of every file,
//! which made the engine's implementation the single largest cost of a run, and an
//! independent implementation cannot share a bug with the code under test. A test
//! checks both agree.

use crc_fast::{CrcAlgorithm, Digest};

/// Raw CRC-64/GO-ISO of `be32(pgno) || data` (bit 63 not forced), as
/// `walvault_engine::ltx::page_checksum`.
pub fn page_checksum(pgno: u32, data: &[u8]) -> u64 {
    let mut d = Digest::new(CrcAlgorithm::Crc64GoIso);
    d.update(&pgno.to_be_bytes());
    d.update(data);
    d.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    #[test]
    fn agrees_with_the_engine() {
        let mut g = SplitMix(7);
        for shift in 9..=16 {
            let ps = 1usize << shift;
            for _ in 0..8 {
                let pgno = (g.next_u64() % 100_000) as u32 + 1;
                let page = g.bytes(ps);
                assert_eq!(
                    page_checksum(pgno, &page),
                    walvault_engine::ltx::page_checksum(pgno, &page),
                    "page size {ps}"
                );
            }
            let zero = vec![0u8; ps];
            assert_eq!(
                page_checksum(1, &zero),
                walvault_engine::ltx::page_checksum(1, &zero)
            );
        }
        // Odd lengths and the check value of the standard test vector.
        for len in [0, 1, 7, 15, 16, 17, 63, 64, 65, 255, 4097] {
            let b = g.bytes(len);
            assert_eq!(
                page_checksum(3, &b),
                walvault_engine::ltx::page_checksum(3, &b)
            );
        }
        let mut d = Digest::new(CrcAlgorithm::Crc64GoIso);
        d.update(b"123456789");
        assert_eq!(d.finalize(), 0xb909_56c7_75a4_1001);
    }
}
