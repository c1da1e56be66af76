//! A database image as pages shared between the oracle's current state and the states
//! it keeps a sample of: a sample costs a pointer per page instead of a copy of the
//! database, and a page is copied only when it changes while a sample shares it.
//! Compared with plain bytes (SQLite's own view, a restore) page by page.

use std::rc::Rc;

#[derive(Clone)]
pub struct Image {
    ps: usize,
    pages: Vec<Rc<[u8]>>,
    zero: Rc<[u8]>,
}

impl Image {
    /// The image of `bytes` (whole pages only).
    pub fn from_bytes(bytes: &[u8], page_size: usize) -> Image {
        Image {
            ps: page_size,
            pages: bytes.chunks_exact(page_size).map(Rc::from).collect(),
            zero: Rc::from(vec![0u8; page_size]),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.pages.len() * self.ps
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    pub fn page_count(&self) -> u32 {
        self.pages.len() as u32
    }

    /// Page `pgno` (1-based, at most `page_count`).
    pub fn page(&self, pgno: u32) -> &[u8] {
        &self.pages[pgno as usize - 1]
    }

    /// Overwrites page `pgno` (at most `page_count`), in place unless a sample shares it.
    pub fn set_page(&mut self, pgno: u32, data: &[u8]) {
        let slot = &mut self.pages[pgno as usize - 1];
        match Rc::get_mut(slot) {
            Some(p) => p.copy_from_slice(data),
            None => *slot = Rc::from(data),
        }
    }

    /// Appends a zeroed page.
    pub fn push_zero(&mut self) {
        self.pages.push(Rc::clone(&self.zero));
    }

    /// Drops the last page.
    pub fn pop(&mut self) {
        self.pages.pop();
    }

    /// Equal to `bytes`, byte for byte?
    pub fn eq_bytes(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.len()
            && self
                .pages
                .iter()
                .zip(bytes.chunks_exact(self.ps))
                .all(|(p, b)| **p == *b)
    }

    /// The (1-based) numbers of the pages that differ from `bytes`, over the pages
    /// both have.
    pub fn differing_pages<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        self.pages
            .iter()
            .zip(bytes.chunks_exact(self.ps))
            .enumerate()
            .filter(|(_, (p, b))| ***p != **b)
            .map(|(i, _)| i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_share_pages_and_comparisons_see_every_byte() {
        let bytes: Vec<u8> = (0..4 * 512u32).map(|i| (i % 251) as u8).collect();
        let mut img = Image::from_bytes(&bytes, 512);
        assert!(img.eq_bytes(&bytes));
        let sample = img.clone();
        img.set_page(2, &[7u8; 512]);
        img.push_zero();
        assert!(sample.eq_bytes(&bytes), "a sample keeps its pages");
        assert!(!img.eq_bytes(&bytes));
        assert_eq!(img.len(), 5 * 512);
        assert_eq!(img.page(5), &[0u8; 512][..]);
        assert_eq!(img.differing_pages(&bytes).collect::<Vec<_>>(), vec![2]);
        // A single byte anywhere, and a shorter or longer image, differ.
        for at in [0, 511, 512, 2047] {
            let mut b = bytes.clone();
            b[at] ^= 1;
            assert!(!sample.eq_bytes(&b), "byte {at}");
        }
        assert!(!sample.eq_bytes(&bytes[..1536]));
        img.pop();
        img.set_page(2, &bytes[512..1024]);
        assert!(img.eq_bytes(&bytes));
    }
}
