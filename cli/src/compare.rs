//! Page-for-page comparison of two database files, used by the demo and the tests.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Compares two database files page by page; returns the page count when identical,
/// otherwise an error naming the first differing page.
pub fn compare_pages(a: &Path, b: &Path, page_size: usize) -> Result<u64> {
    let mut fa = File::open(a).with_context(|| format!("opening {}", a.display()))?;
    let mut fb = File::open(b).with_context(|| format!("opening {}", b.display()))?;
    let (la, lb) = (fa.metadata()?.len(), fb.metadata()?.len());
    if la != lb {
        bail!(
            "{} is {la} bytes but {} is {lb} bytes",
            a.display(),
            b.display()
        );
    }
    let mut pa = vec![0u8; page_size];
    let mut pb = vec![0u8; page_size];
    let pages = la / page_size as u64;
    for pgno in 1..=pages {
        fa.read_exact(&mut pa)?;
        fb.read_exact(&mut pb)?;
        if pa != pb {
            let at = pa.iter().zip(&pb).position(|(x, y)| x != y).unwrap_or(0);
            bail!(
                "page {pgno} differs (first at byte {at}) between {} and {}",
                a.display(),
                b.display()
            );
        }
    }
    Ok(pages)
}
