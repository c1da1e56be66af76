//! The object store: an in-memory map of keys to immutable objects with conditional
//! PUT (`If-None-Match: *`), and the ground truth the invariants read. What clients see
//! is shaped by the request machinery in world.rs (latency, faults, out-of-order and
//! duplicate delivery); this module also answers LIST "as of" an earlier time (LIST
//! lag) and read-after-write staleness, and loses objects in the lossy profile.

use std::collections::BTreeMap;
use std::sync::Arc;

use crc_fast::{CrcAlgorithm, Digest};

pub type Digest32 = [u8; 32];

/// The content key of a body the simulator built itself (the checker's analysis cache
/// is keyed by it): two SIMD CRC-64s with different polynomials and the length. Not a
/// defence against an adversary, which the store is not; two different files of a run
/// share a key with odds near 2^-128, and a body that differs from another in one bit
/// or one burst of up to 64 bits never does (a CRC catches those by construction).
/// SHA-256 here was 4 % of a run.
pub fn digest(bytes: &[u8]) -> Digest32 {
    let crc = |alg| {
        let mut d = Digest::new(alg);
        d.update(bytes);
        d.finalize().to_le_bytes()
    };
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&crc(CrcAlgorithm::Crc64Nvme));
    out[8..16].copy_from_slice(&crc(CrcAlgorithm::Crc64Ecma182));
    out[16..24].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    out
}

#[derive(Clone, Debug)]
pub struct Object {
    pub bytes: Arc<Vec<u8>>,
    pub digest: Digest32,
    pub written_at: u64,
}

#[derive(Default)]
pub struct Store {
    objects: BTreeMap<String, Object>,
    /// Objects the store lost, with the time they vanished (LIST lag may still show them).
    gone: Vec<(String, Object, u64)>,
    pub throttle_until: u64,
}

impl Store {
    /// `PUT` with `If-None-Match: *`: true when stored, false when the key was taken.
    pub fn put_if_absent(&mut self, key: &str, bytes: Arc<Vec<u8>>, d: Digest32, now: u64) -> bool {
        if self.objects.contains_key(key) {
            return false;
        }
        self.objects.insert(
            key.to_string(),
            Object {
                bytes,
                digest: d,
                written_at: now,
            },
        );
        true
    }

    pub fn get(&self, key: &str) -> Option<&Object> {
        self.objects.get(key)
    }

    /// Keys under `prefix` as a LIST would have returned them at time `as_of`.
    pub fn list(&self, prefix: &str, as_of: u64) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, o)| o.written_at <= as_of)
            .map(|(k, o)| (k.clone(), o.bytes.len() as u64))
            .collect();
        for (k, o, gone_at) in &self.gone {
            if k.starts_with(prefix) && o.written_at <= as_of && *gone_at > as_of {
                out.push((k.clone(), o.bytes.len() as u64));
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects.keys().cloned().collect()
    }

    /// The lossy profile: the object at `pick` (modulo the count) vanishes.
    pub fn lose(&mut self, pick: u64, now: u64) -> Option<String> {
        if self.objects.is_empty() {
            return None;
        }
        let i = (pick % self.objects.len() as u64) as usize;
        let key = self.objects.keys().nth(i)?.clone();
        let o = self.objects.remove(&key)?;
        self.gone.push((key.clone(), o, now));
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_put_list_lag_and_loss() {
        let mut s = Store::default();
        let b = Arc::new(vec![1u8]);
        assert!(s.put_if_absent("db/0000/a", b.clone(), digest(&b), 10));
        assert!(!s.put_if_absent("db/0000/a", b.clone(), digest(&b), 11));
        assert!(s.put_if_absent("db/0000/b", b.clone(), digest(&b), 20));
        assert_eq!(s.list("db/", 15).len(), 1);
        assert_eq!(s.list("db/", 25).len(), 2);
        assert_eq!(s.lose(0, 30).as_deref(), Some("db/0000/a"));
        assert_eq!(
            s.list("db/", 25).len(),
            2,
            "LIST lag still shows the lost key"
        );
        assert_eq!(s.list("db/", 35).len(), 1);
    }

    #[test]
    fn digests_tell_every_one_bit_change_and_length_apart() {
        let body: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let d = digest(&body);
        assert_eq!(d, digest(&body.clone()));
        let mut seen = std::collections::BTreeSet::from([d]);
        for bit in (0..body.len() * 8).step_by(61) {
            let mut b = body.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(seen.insert(digest(&b)), "bit {bit}");
        }
        // Trailing zeros change only the length.
        let mut longer = body.clone();
        longer.push(0);
        assert_ne!(digest(&longer), d);
        assert_ne!(digest(&[]), digest(&[0]));
    }
}
