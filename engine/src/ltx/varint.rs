//! Unsigned LEB128 varints exactly as Go's `binary.AppendUvarint` / `binary.ReadUvarint`
//! produce and accept them (used by the page index).

use super::LtxError;

/// Longest encoding of a u64.
pub const MAX_VARINT_LEN: usize = 10;

/// Encodes `v` into `out`, returning the number of bytes used.
pub fn put_uvarint(out: &mut [u8; MAX_VARINT_LEN], mut v: u64) -> usize {
    let mut n = 0;
    for slot in out.iter_mut() {
        n += 1;
        if v < 0x80 {
            *slot = v as u8;
            break;
        }
        *slot = (v as u8) | 0x80;
        v >>= 7;
    }
    n
}

/// Appends the encoding of `v` to `out`.
pub fn append_uvarint(out: &mut Vec<u8>, v: u64) {
    let mut tmp = [0u8; MAX_VARINT_LEN];
    let n = put_uvarint(&mut tmp, v);
    out.extend_from_slice(tmp.get(..n).unwrap_or(&[]));
}

/// Number of bytes the encoding of `v` takes.
pub fn uvarint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Decodes a uvarint from the start of `b`, returning the value and its length.
/// Rejects encodings that overflow a u64 (as Go does); an encoding cut short is
/// reported as truncation.
pub fn read_uvarint(b: &[u8]) -> Result<(u64, usize), LtxError> {
    let mut x: u64 = 0;
    let mut shift = 0u32;
    for (i, &byte) in b.iter().enumerate() {
        if i == MAX_VARINT_LEN {
            return Err(LtxError::Corrupt("uvarint overflows 64 bits".into()));
        }
        if byte < 0x80 {
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(LtxError::Corrupt("uvarint overflows 64 bits".into()));
            }
            return Ok((x | (u64::from(byte) << shift), i + 1));
        }
        x |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    if b.len() >= MAX_VARINT_LEN {
        return Err(LtxError::Corrupt("uvarint overflows 64 bits".into()));
    }
    Err(LtxError::Truncated("uvarint"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16384, &[0x80, 0x80, 0x01]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(v, enc) in cases {
            let mut out = Vec::new();
            append_uvarint(&mut out, v);
            assert_eq!(out, enc, "encoding {v}");
            assert_eq!(uvarint_len(v), enc.len());
            assert_eq!(read_uvarint(enc), Ok((v, enc.len())));
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(read_uvarint(&[]), Err(LtxError::Truncated("uvarint")));
        assert_eq!(read_uvarint(&[0x80]), Err(LtxError::Truncated("uvarint")));
        assert_eq!(
            read_uvarint(&[0x80, 0x80]),
            Err(LtxError::Truncated("uvarint"))
        );
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(read_uvarint(&too_big), Err(LtxError::Corrupt(_))));
        let too_long = [0x80u8; 11];
        assert!(matches!(read_uvarint(&too_long), Err(LtxError::Corrupt(_))));
        let ten_cont = [0x80u8; 10];
        assert!(matches!(read_uvarint(&ten_cont), Err(LtxError::Corrupt(_))));
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut out = Vec::new();
            append_uvarint(&mut out, v);
            prop_assert_eq!(out.len(), uvarint_len(v));
            let n = out.len();
            out.extend_from_slice(&tail);
            prop_assert_eq!(read_uvarint(&out), Ok((v, n)));
        }
    }
}
