//! walvault's integrity data beside the Litestream-compatible files: the SHA-256 of
//! every object it uploads and the SHA-256 of the file each one extends, so a missing,
//! reordered or replaced file breaks a visible hash chain. Stored as object metadata
//! (S3) or a sidecar (file://), where Litestream never looks.

use std::collections::BTreeMap;
use std::io::Write;

use sha2::{Digest, Sha256};
use walvault_engine::keys::FileId;

use crate::storage::{METADATA_PREV_SHA256, METADATA_SHA256};

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn finish(self) -> (W, String) {
        (self.inner, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: std::io::Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads whatever is left, then returns the digest of everything and its length.
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((hex(&self.hasher.finalize()), self.bytes))
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Digests of the newest level-0 files, to link each new file to the one it extends.
#[derive(Default)]
pub struct ChainLinks {
    by_max_txid: BTreeMap<u64, String>,
}

impl ChainLinks {
    const KEEP: usize = 256;

    /// Remembers the digest of a file just built (level-0 files only: they form the chain
    /// the next file extends; a level-9 snapshot ends at the same TXID as an L0 file).
    pub fn record(&mut self, file: FileId, sha: &str) {
        if file.level != 0 {
            return;
        }
        self.by_max_txid.insert(file.max_txid, sha.to_string());
        while self.by_max_txid.len() > Self::KEEP {
            self.by_max_txid.pop_first();
        }
    }

    /// Forgets all but the newest digest: once everything is durable the next file
    /// extends the newest one (an idle database keeps one digest, not 256).
    pub fn keep_newest(&mut self) {
        if let Some((txid, sha)) = self.by_max_txid.pop_last() {
            self.by_max_txid = BTreeMap::from([(txid, sha)]);
        }
    }

    /// The digest of the level-0 file ending at `max_txid`, if known.
    pub fn get(&self, max_txid: u64) -> Option<&str> {
        self.by_max_txid.get(&max_txid).map(String::as_str)
    }

    /// Seeds the chain with the store's tip at start-up.
    pub fn seed(&mut self, max_txid: u64, sha: Option<String>) {
        if let Some(sha) = sha {
            self.by_max_txid.insert(max_txid, sha);
        }
    }

    /// Metadata for uploading `file` whose content hashes to `sha`.
    pub fn metadata(&self, file: FileId, sha: &str) -> Vec<(&'static str, String)> {
        let mut meta = vec![(METADATA_SHA256, sha.to_string())];
        if file.min_txid > 1
            && let Some(prev) = self.by_max_txid.get(&(file.min_txid - 1))
        {
            meta.push((METADATA_PREV_SHA256, prev.clone()));
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_newest_still_links_the_next_file() {
        let f = |min, max| FileId {
            level: 0,
            min_txid: min,
            max_txid: max,
        };
        let mut links = ChainLinks::default();
        links.seed(3, Some("tip".into()));
        links.record(f(4, 4), "four");
        links.record(f(5, 6), "six");
        links.keep_newest();
        assert_eq!(links.by_max_txid.len(), 1);
        let meta = links.metadata(f(7, 7), "seven");
        assert!(meta.contains(&(METADATA_PREV_SHA256, "six".to_string())));
    }

    #[test]
    fn hashing_writer_matches_one_shot_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (bytes, sha) = w.finish();
        assert_eq!(sha, sha256_hex(b"hello world"));
        assert_eq!(
            sha,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(bytes, b"hello world");
    }

    #[test]
    fn links_follow_level_zero() {
        let mut c = ChainLinks::default();
        let f = |level, min, max| FileId {
            level,
            min_txid: min,
            max_txid: max,
        };
        c.seed(4, Some("aa".into()));
        assert_eq!(
            c.metadata(f(0, 5, 5), "bb"),
            vec![
                (METADATA_SHA256, "bb".into()),
                (METADATA_PREV_SHA256, "aa".into())
            ]
        );
        c.record(f(0, 5, 5), "bb");
        c.record(f(9, 1, 5), "cc");
        assert_eq!(c.metadata(f(0, 6, 6), "dd")[1].1, "bb");
        assert_eq!(
            c.metadata(f(9, 1, 6), "ee").len(),
            1,
            "a snapshot starts the chain"
        );
        assert_eq!(
            c.metadata(f(0, 9, 9), "ff").len(),
            1,
            "no link when the predecessor is unknown"
        );
    }
}
