//! Page checksums for the oracle and the checker: CRC-64/GO-ISO of
//! `be32(pgno) || page`, the value LTX's database checksum is built from, through
//! crc-fast's SIMD CRC (the oracle hashes every page the application writes and the
//! checker every page of every file). walvault-engine computes its page checksums with
//! the same crate when built with `simd-crc`, as here, so the test below holds both to
//! the `crc` crate's byte-table reference, an implementation neither of them uses.

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

    /// The `crc` crate's byte-at-a-time table: independent of crc-fast.
    fn reference(pgno: u32, data: &[u8]) -> u64 {
        let mut d = walvault_engine::ltx::crc64().digest();
        d.update(&pgno.to_be_bytes());
        d.update(data);
        d.finalize()
    }

    fn check(pgno: u32, data: &[u8]) {
        let want = reference(pgno, data);
        assert_eq!(page_checksum(pgno, data), want, "{} bytes", data.len());
        assert_eq!(
            walvault_engine::ltx::page_checksum(pgno, data),
            want,
            "engine, {} bytes",
            data.len()
        );
    }

    #[test]
    fn agrees_with_the_reference_and_the_engine() {
        let mut g = SplitMix(7);
        for shift in 9..=16 {
            let ps = 1usize << shift;
            for _ in 0..8 {
                let pgno = (g.next_u64() % 100_000) as u32 + 1;
                let page = g.bytes(ps);
                check(pgno, &page);
            }
            let zero = vec![0u8; ps];
            check(1, &zero);
        }
        // Odd lengths and the check value of the standard test vector.
        for len in [0, 1, 7, 15, 16, 17, 63, 64, 65, 255, 4097] {
            let b = g.bytes(len);
            check(3, &b);
        }
        let mut d = Digest::new(CrcAlgorithm::Crc64GoIso);
        d.update(b"123456789");
        assert_eq!(d.finalize(), 0xb909_56c7_75a4_1001);
    }
}
