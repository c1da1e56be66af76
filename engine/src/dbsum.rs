//! walvault's running database checksum: the LTX database checksum (bit 63 | XOR over
//! pages of CRC-64(be32(pgno) || page)) kept up to date file by file, so every file
//! can record the checksum of the state it produces and a restore can check that it
//! produced exactly that state. Holds one u64 per page (8 bytes per page of database).
//!
//! The lock page is never part of a database image (SQLite never writes it, LTX files
//! never carry it) and so never part of the sum.

use crate::ltx::{self, page_checksum};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSums {
    /// Checksum of page `i + 1`, 0 for a page not present.
    pages: Vec<u64>,
    xor: u64,
}

impl PageSums {
    /// Starts a full image of `commit` pages (every page will be [`PageSums::set`]).
    pub fn new_image(commit: u32) -> PageSums {
        PageSums {
            pages: vec![0; commit as usize],
            xor: 0,
        }
    }

    /// Records the new content of `pgno` (growing the image when needed); returns
    /// whether the page's checksum changed.
    pub fn set(&mut self, pgno: u32, data: &[u8]) -> bool {
        let Some(i) = (pgno as usize).checked_sub(1) else {
            return false;
        };
        if i >= self.pages.len() {
            self.pages.resize(i + 1, 0);
        }
        let c = page_checksum(pgno, data);
        let old = self.pages[i];
        self.xor ^= old ^ c;
        self.pages[i] = c;
        old != c
    }

    /// Pages in the image (its database size in pages).
    pub fn len(&self) -> u32 {
        u32::try_from(self.pages.len()).unwrap_or(u32::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Sets the database size: pages above it leave the image; pages added and never
    /// set read as zeros, as SQLite reads them.
    pub fn resize(&mut self, commit: u32, page_size: u32) {
        let n = commit as usize;
        for c in self.pages.get(n..).unwrap_or(&[]) {
            self.xor ^= c;
        }
        self.pages.truncate(n);
        if self.pages.len() < n {
            let zeros = vec![0u8; page_size as usize];
            let lock = ltx::lock_pgno(page_size);
            let start = self.pages.len();
            self.pages.resize(n, 0);
            for i in start..n {
                let pgno = i as u32 + 1;
                if pgno != lock {
                    let c = page_checksum(pgno, &zeros);
                    self.pages[i] = c;
                    self.xor ^= c;
                }
            }
        }
    }

    /// Serializes the table (little-endian u64s: xor, then each page) for a restart.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * (self.pages.len() + 1));
        out.extend_from_slice(&self.xor.to_le_bytes());
        for c in &self.pages {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// The inverse of [`PageSums::to_bytes`]; `None` when the bytes are not consistent.
    pub fn from_bytes(b: &[u8]) -> Option<PageSums> {
        if b.len() < 8 || !b.len().is_multiple_of(8) {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let xor = word(0);
        let pages: Vec<u64> = (1..b.len() / 8).map(word).collect();
        let check = pages.iter().fold(0u64, |a, c| a ^ c);
        (check == xor).then_some(PageSums { pages, xor })
    }

    /// The checksum of the image (bit 63 set, as LTX stores checksums).
    pub fn value(&self) -> u64 {
        ltx::CHECKSUM_FLAG | self.xor
    }
}

/// Computes the same checksum over a finished image, page by page.
#[derive(Clone, Default)]
pub struct ImageSum {
    xor: u64,
}

impl ImageSum {
    pub fn add(&mut self, pgno: u32, data: &[u8]) {
        self.xor ^= page_checksum(pgno, data);
    }

    pub fn value(&self) -> u64 {
        ltx::CHECKSUM_FLAG | self.xor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(b: u8) -> Vec<u8> {
        vec![b; 512]
    }

    #[test]
    fn matches_the_reference_vector() {
        let mut s = PageSums::new_image(3);
        for (pgno, b) in [(1, 1u8), (2, 2), (3, 3)] {
            s.set(pgno, &page(b));
        }
        assert_eq!(s.value(), 0xefff_ffff_ecd9_9000);
    }

    #[test]
    fn incremental_updates_equal_a_fresh_sum() {
        let mut s = PageSums::new_image(3);
        for (pgno, b) in [(1, 1u8), (2, 2), (3, 3)] {
            s.set(pgno, &page(b));
        }
        s.set(2, &page(9));
        s.resize(5, 512); // pages 4 and 5 appear as zeros
        s.set(5, &page(5));
        let mut fresh = ImageSum::default();
        for (pgno, b) in [(1, 1u8), (2, 9), (3, 3), (4, 0), (5, 5)] {
            fresh.add(pgno, &page(b));
        }
        assert_eq!(s.value(), fresh.value());
        assert_eq!(PageSums::from_bytes(&s.to_bytes()), Some(s.clone()));
        s.resize(2, 512);
        let mut fresh = ImageSum::default();
        fresh.add(1, &page(1));
        fresh.add(2, &page(9));
        assert_eq!(s.value(), fresh.value());
    }
}
