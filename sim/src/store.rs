//! The object store: an in-memory map of keys to immutable objects with conditional
//! PUT (`If-None-Match: *`), and the ground truth the invariants read. What clients see
//! is shaped by the request machinery in world.rs (latency, faults, out-of-order and
//! duplicate delivery); this module also answers LIST "as of" an earlier time (LIST
//! lag) and read-after-write staleness, and loses objects in the lossy profile.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub type Digest32 = [u8; 32];

pub fn digest(bytes: &[u8]) -> Digest32 {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize().into()
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
}
