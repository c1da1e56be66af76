//! The WAL checksum (a Fletcher-like sum over pairs of 32-bit words), in
//! both word byte orders. Owns [`wal_checksum`] and the streaming
//! [`ChecksumStream`] used by the scanner for data that arrives in pieces.

/// SQLite's WAL checksum over `data`, continuing from `(s1, s2)`.
///
/// `data` is read as 32-bit words, big-endian if `big_endian` (WAL magic
/// `0x377f0683`) else little-endian (magic `0x377f0682`). For each pair of
/// words `x0, x1`: `s1 += x0 + s2; s2 += x1 + s1` (wrapping).
///
/// `data.len()` should be a multiple of 8; any trailing partial pair is
/// ignored (SQLite never checksums such data; this keeps the function total).
pub fn wal_checksum(big_endian: bool, data: &[u8], s1: u32, s2: u32) -> (u32, u32) {
    let (mut s1, mut s2) = (s1, s2);
    // Two loops so the byte-order branch is outside the hot loop. The
    // `if let` never fails (chunks are exactly 8 bytes); it avoids indexing.
    if big_endian {
        for pair in data.chunks_exact(8) {
            if let (Some(x0), Some(x1)) = (pair.first_chunk::<4>(), pair.last_chunk::<4>()) {
                s1 = s1.wrapping_add(u32::from_be_bytes(*x0)).wrapping_add(s2);
                s2 = s2.wrapping_add(u32::from_be_bytes(*x1)).wrapping_add(s1);
            }
        }
    } else {
        for pair in data.chunks_exact(8) {
            if let (Some(x0), Some(x1)) = (pair.first_chunk::<4>(), pair.last_chunk::<4>()) {
                s1 = s1.wrapping_add(u32::from_le_bytes(*x0)).wrapping_add(s2);
                s2 = s2.wrapping_add(u32::from_le_bytes(*x1)).wrapping_add(s1);
            }
        }
    }
    (s1, s2)
}

/// Incremental [`wal_checksum`] for data split at arbitrary byte boundaries:
/// up to 7 bytes of an incomplete word pair are carried between calls.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ChecksumStream {
    big_endian: bool,
    sum: (u32, u32),
    carry: [u8; 8],
    carry_len: usize,
}

impl ChecksumStream {
    /// Start from `sum` with no carried bytes.
    pub(crate) fn start(big_endian: bool, sum: (u32, u32)) -> Self {
        ChecksumStream {
            big_endian,
            sum,
            carry: [0; 8],
            carry_len: 0,
        }
    }

    /// Absorb more bytes.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        if self.carry_len > 0 {
            let take = (8 - self.carry_len).min(data.len());
            let (head, rest) = data.split_at(take);
            if let Some(dst) = self.carry.get_mut(self.carry_len..self.carry_len + take) {
                dst.copy_from_slice(head);
            }
            self.carry_len += take;
            data = rest;
            if self.carry_len < 8 {
                return;
            }
            self.sum = wal_checksum(self.big_endian, &self.carry, self.sum.0, self.sum.1);
            self.carry_len = 0;
        }
        let whole = data.len() - data.len() % 8;
        let (pairs, tail) = data.split_at(whole);
        self.sum = wal_checksum(self.big_endian, pairs, self.sum.0, self.sum.1);
        if let Some(dst) = self.carry.get_mut(..tail.len()) {
            dst.copy_from_slice(tail);
        }
        self.carry_len = tail.len();
    }

    /// The checksum of everything absorbed so far (a carried partial pair,
    /// if any, is not included).
    pub(crate) fn sum(&self) -> (u32, u32) {
        self.sum
    }
}
