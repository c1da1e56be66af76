//! The CRC-64/GO-ISO the codec computes in bulk: the running checksum of a whole LTX
//! file (the trailer's file checksum), which the encoder and the decoder feed with every
//! byte they write or read, and each page checksum ([`super::checksum`]).
//!
//! Two implementations produce the same values: the `crc` crate's slice-by-16 table
//! (the default), and, with the `simd-crc` feature, crc-fast's carry-less-multiply
//! folding (several times faster; walvault-sim enables it, and the walvault binary
//! already links crc-fast through the AWS SDK). Tests hold both to the `crc` crate's
//! reference values, which is what keeps the simulator's checks independent of the
//! implementation under test (its oracle hashes with crc-fast too).

/// A running CRC-64/GO-ISO (file or page checksum).
#[derive(Clone)]
pub(crate) struct FileDigest(Inner);

#[cfg(feature = "simd-crc")]
type Inner = crc_fast::Digest;
#[cfg(not(feature = "simd-crc"))]
type Inner = crc::Digest<'static, u64, crc::Table<16>>;

impl FileDigest {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "simd-crc")]
        return FileDigest(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64GoIso));
        #[cfg(not(feature = "simd-crc"))]
        return FileDigest(super::fast_crc64().digest());
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The CRC of everything fed so far (bit 63 not forced).
    pub(crate) fn finalize(&self) -> u64 {
        #[cfg(feature = "simd-crc")]
        return self.0.finalize();
        #[cfg(not(feature = "simd-crc"))]
        return self.0.clone().finalize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_reference_crc_over_any_split() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 8, 15, 16, 17, 63, 64, 65, 100, 4096, 4124, 70_000] {
            let want = super::super::crc64().checksum(&data[..len]);
            for split in [0, 1, len / 3, len / 2, len.saturating_sub(1)] {
                let split = split.min(len);
                let mut d = FileDigest::new();
                d.update(&data[..split]);
                let snapshot = d.clone();
                d.update(&data[split..len]);
                assert_eq!(d.finalize(), want, "len {len}, split {split}");
                assert_eq!(
                    snapshot.finalize(),
                    super::super::crc64().checksum(&data[..split])
                );
            }
        }
    }
}
