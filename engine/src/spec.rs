//! What goes into one LTX file, decided by the engine, and the one routine that turns
//! such a decision into bytes by pulling pages from the caller's WAL and database file.
//!
//! The engine never holds page contents: it records where each page lives (a WAL frame
//! or the database file) and the caller materializes the file through [`materialize`]
//! with its own [`PageReader`], streaming one page at a time.
//!
//! A whole-database file that continues a chain can instead be built *against* the page
//! checksums of the state it follows ([`materialize_against`]): only the pages that
//! differ go in, so a WAL restarted behind walvault's back costs a small file, not a
//! snapshot (decision 23).

use std::io::Write;

use crate::dbsum::PageSums;
use crate::ltx::{self, Encoder, Header, LtxError, Trailer};
use crate::wal::FRAME_HEADER_SIZE;

/// Where one page of a file comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSource {
    /// The page data of the WAL frame whose header starts at this offset.
    Wal(u64),
    /// The database file (zeros past its end, as SQLite reads it).
    Db,
}

/// The pages of a file, ascending by page number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageSet {
    /// Exactly these pages.
    List(Vec<(u32, PageSource)>),
    /// Every page `1..=commit` except the lock page: from the WAL where `overlay` names a
    /// frame (sorted by pgno), otherwise from the database file.
    Full { overlay: Vec<(u32, u64)> },
}

/// A complete description of one LTX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    pub header: Header,
    pub pages: PageSet,
    /// Commit size before this file, for the growth-page check of incremental files.
    pub prev_commit: Option<u32>,
}

impl FileSpec {
    pub fn page_count(&self) -> u64 {
        match &self.pages {
            PageSet::List(v) => v.len() as u64,
            PageSet::Full { .. } => {
                let lock = ltx::lock_pgno(self.header.page_size);
                let c = u64::from(self.header.commit);
                c - u64::from(c >= u64::from(lock))
            }
        }
    }
}

/// The caller's access to the bytes the spec points at.
pub trait PageReader {
    /// Reads the whole frame (24-byte header + page) at `offset` into `buf`
    /// (`buf.len() == 24 + page_size`).
    fn read_wal_frame(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// Reads page `pgno` of the database file into `buf`, zero-filling past the end.
    fn read_db_page(&mut self, pgno: u32, buf: &mut [u8]) -> std::io::Result<()>;
}

/// Reads database page `pgno` (1-based, pages of `buf.len()` bytes) through `read_at`
/// (a positional read such as `FileExt::read_at`), zero-filling what lies past the end
/// of the file: the shared body of [`PageReader::read_db_page`] implementations.
pub fn read_page_at(
    mut read_at: impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
    pgno: u32,
    buf: &mut [u8],
) -> std::io::Result<()> {
    let offset = u64::from(pgno).saturating_sub(1) * buf.len() as u64;
    let mut got = 0usize;
    while got < buf.len() {
        match read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf[got..].fill(0);
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error("reading source pages: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "WAL frame at offset {offset} changed underneath (expected page {pgno} of salts {salt1:08x}/{salt2:08x})"
    )]
    SourceChanged {
        offset: u64,
        pgno: u32,
        salt1: u32,
        salt2: u32,
    },
    #[error("encoding LTX: {0}")]
    Ltx(#[from] LtxError),
}

/// Streams the file described by `spec` into `out`, reusing one frame buffer.
pub fn materialize<W: Write>(
    spec: &FileSpec,
    src: &mut dyn PageReader,
    out: W,
) -> Result<(W, Trailer), MaterializeError> {
    materialize_observed(spec, src, out, &mut |_, _| {})
}

/// [`materialize`], showing every page written to `observe` (for running checksums).
pub fn materialize_observed<W: Write>(
    spec: &FileSpec,
    src: &mut dyn PageReader,
    out: W,
    observe: &mut dyn FnMut(u32, &[u8]),
) -> Result<(W, Trailer), MaterializeError> {
    let keep = &mut |pgno: u32, data: &[u8]| {
        observe(pgno, data);
        true
    };
    build(spec, src, out, spec.prev_commit, keep).map(|(w, t, _)| (w, t))
}

/// Whether `spec` may be built with [`materialize_against`]: a whole-database file
/// that continues a chain (TXIDs after 1) and names the WAL position it reaches. A file
/// without a WAL position stays a whole image, identifiable by its content alone.
pub fn diffable(spec: &FileSpec) -> bool {
    let h = &spec.header;
    matches!(spec.pages, PageSet::Full { .. }) && h.min_txid > 1 && h.wal_salt1 | h.wal_salt2 != 0
}

/// Builds a [`diffable`] file as an incremental one: `sums` holds the page checksums of
/// the state at TXID `min_txid - 1` on entry and of the file's state on return. Only
/// pages whose checksum changed go in, plus every page the database grew by and page 1
/// (a file always holds a page). Returns the pages written. For any other spec this
/// is [`materialize_observed`] recording into `sums` a fresh image.
pub fn materialize_against<W: Write>(
    spec: &FileSpec,
    src: &mut dyn PageReader,
    out: W,
    sums: &mut PageSums,
) -> Result<(W, Trailer, u64), MaterializeError> {
    let h = &spec.header;
    if !diffable(spec) {
        *sums = PageSums::new_image(h.commit);
        let keep = &mut |pgno: u32, data: &[u8]| {
            sums.set(pgno, data);
            true
        };
        return build(spec, src, out, spec.prev_commit, keep);
    }
    let base_commit = sums.len();
    sums.resize(h.commit, h.page_size);
    let keep = &mut |pgno: u32, data: &[u8]| {
        let changed = sums.set(pgno, data);
        changed || pgno == 1 || pgno > base_commit
    };
    build(spec, src, out, Some(base_commit), keep)
}

/// A file built by [`materialize_tracked`].
pub struct Tracked<W> {
    pub out: W,
    /// Page checksums of the state the file produces, when the state before it is
    /// known (always for whole-database files).
    pub sums: Option<PageSums>,
    /// `Some(pages written)` when a whole-database file was built against the previous
    /// state's checksums.
    pub diffed: Option<u64>,
}

/// Builds the file while keeping a caller's running checksum table: `prev` is the
/// table of the state at some TXID; when that is the state this file follows, an
/// incremental file updates it and a [`diffable`] whole-database file is built as the
/// pages that changed. The shell and the simulator both build through this.
pub fn materialize_tracked<W: Write>(
    spec: &FileSpec,
    src: &mut dyn PageReader,
    out: W,
    prev: Option<&(u64, PageSums)>,
) -> Result<Tracked<W>, MaterializeError> {
    let h = &spec.header;
    let base = prev
        .filter(|(txid, _)| txid.checked_add(1) == Some(h.min_txid))
        .map(|(_, s)| s);
    match (&spec.pages, base) {
        (PageSet::Full { .. }, Some(base)) if diffable(spec) => {
            let mut sums = base.clone();
            let (out, _, n) = materialize_against(spec, src, out, &mut sums)?;
            Ok(Tracked {
                out,
                sums: Some(sums),
                diffed: Some(n),
            })
        }
        (PageSet::Full { .. }, _) => {
            let mut sums = PageSums::new_image(h.commit);
            let (out, _) = materialize_observed(spec, src, out, &mut |p, d| {
                sums.set(p, d);
            })?;
            Ok(Tracked {
                out,
                sums: Some(sums),
                diffed: None,
            })
        }
        (PageSet::List(_), base) => {
            let mut sums = base.map(|s| {
                let mut s = s.clone();
                s.resize(h.commit, h.page_size);
                s
            });
            let (out, _) = materialize_observed(spec, src, out, &mut |p, d| {
                if let Some(s) = sums.as_mut() {
                    s.set(p, d);
                }
            })?;
            Ok(Tracked {
                out,
                sums,
                diffed: None,
            })
        }
    }
}

/// Streams the pages `keep` accepts (it sees every page of the spec) into an LTX file,
/// reusing one frame buffer; returns the pages written.
fn build<W: Write>(
    spec: &FileSpec,
    src: &mut dyn PageReader,
    out: W,
    growth_from: Option<u32>,
    keep: &mut dyn FnMut(u32, &[u8]) -> bool,
) -> Result<(W, Trailer, u64), MaterializeError> {
    let h = &spec.header;
    let ps = h.page_size as usize;
    let mut frame = vec![0u8; FRAME_HEADER_SIZE as usize + ps];
    let mut enc = Encoder::new(out, h)?;
    if let Some(prev) = growth_from {
        enc.require_growth_pages(prev);
    }
    let mut written = 0u64;
    let mut put =
        |enc: &mut Encoder<W>, pgno: u32, source: PageSource| -> Result<(), MaterializeError> {
            let page = match source {
                PageSource::Wal(offset) => {
                    src.read_wal_frame(offset, &mut frame)?;
                    check_frame(&frame, offset, pgno, h)?;
                    &frame[FRAME_HEADER_SIZE as usize..]
                }
                PageSource::Db => {
                    let page = &mut frame[FRAME_HEADER_SIZE as usize..];
                    src.read_db_page(pgno, page)?;
                    page
                }
            };
            if keep(pgno, page) {
                enc.write_page(pgno, page)?;
                written += 1;
            }
            Ok(())
        };
    match &spec.pages {
        PageSet::List(pages) => {
            for &(pgno, source) in pages {
                put(&mut enc, pgno, source)?;
            }
        }
        PageSet::Full { overlay } => {
            let lock = ltx::lock_pgno(h.page_size);
            let mut ov = overlay.iter().peekable();
            for pgno in 1..=h.commit {
                if pgno == lock {
                    continue;
                }
                while ov.peek().is_some_and(|(p, _)| *p < pgno) {
                    ov.next();
                }
                let source = match ov.peek() {
                    Some(&&(p, off)) if p == pgno => PageSource::Wal(off),
                    _ => PageSource::Db,
                };
                put(&mut enc, pgno, source)?;
            }
        }
    }
    let (w, t) = enc.finish(0)?;
    Ok((w, t, written))
}

/// A frame is what the spec expects only if it still names the same page and WAL
/// generation; anything else means the WAL was rewritten behind the engine's back.
fn check_frame(frame: &[u8], offset: u64, pgno: u32, h: &Header) -> Result<(), MaterializeError> {
    let be = |i: usize| u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
    if be(0) != pgno || be(8) != h.wal_salt1 || be(12) != h.wal_salt2 {
        return Err(MaterializeError::SourceChanged {
            offset,
            pgno,
            salt1: h.wal_salt1,
            salt2: h.wal_salt2,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbsum::ImageSum;
    use crate::ltx::{FLAG_NO_CHECKSUM, decode_all};

    const PS: usize = 512;

    /// A database file only (no WAL frames), pages `1..=n`.
    struct Db(Vec<Vec<u8>>);

    impl PageReader for Db {
        fn read_wal_frame(&mut self, _: u64, _: &mut [u8]) -> std::io::Result<()> {
            Err(std::io::Error::other("no WAL in this test"))
        }
        fn read_db_page(&mut self, pgno: u32, buf: &mut [u8]) -> std::io::Result<()> {
            match self.0.get(pgno as usize - 1) {
                Some(p) => buf.copy_from_slice(p),
                None => buf.fill(0),
            }
            Ok(())
        }
    }

    fn image(fill: &[u8]) -> Db {
        Db(fill.iter().map(|&b| vec![b; PS]).collect())
    }

    fn sums_of(db: &Db) -> PageSums {
        let mut s = PageSums::new_image(db.0.len() as u32);
        for (i, p) in db.0.iter().enumerate() {
            s.set(i as u32 + 1, p);
        }
        s
    }

    fn full_spec(commit: u32, min_txid: u64, salts: (u32, u32)) -> FileSpec {
        FileSpec {
            header: Header {
                flags: FLAG_NO_CHECKSUM,
                page_size: PS as u32,
                commit,
                min_txid,
                max_txid: min_txid,
                timestamp_ms: 1,
                wal_offset: 32,
                wal_size: 0,
                wal_salt1: salts.0,
                wal_salt2: salts.1,
                ..Header::default()
            },
            pages: PageSet::Full { overlay: vec![] },
            prev_commit: None,
        }
    }

    fn built(spec: &FileSpec, db: &mut Db, sums: &mut PageSums) -> Vec<u32> {
        let (bytes, _, n) = materialize_against(spec, db, Vec::new(), sums).unwrap();
        let (_, pages, _) = decode_all(&bytes).unwrap();
        assert_eq!(pages.len() as u64, n);
        for (pgno, data) in &pages {
            assert_eq!(
                data,
                &db.0[*pgno as usize - 1],
                "page {pgno} holds its content"
            );
        }
        pages.iter().map(|(p, _)| *p).collect()
    }

    #[test]
    fn a_whole_file_after_txid_1_carries_only_what_changed() {
        let base = image(&[1, 2, 3, 4, 5]);
        let mut sums = sums_of(&base);
        let mut now = image(&[1, 2, 9, 4, 5, 6, 0]);
        let spec = full_spec(7, 8, (0xa, 0xb));
        assert!(diffable(&spec));
        // Page 3 changed; 6 and 7 are growth (7 is all zeros yet must be there); page 1
        // is always present.
        assert_eq!(built(&spec, &mut now, &mut sums), vec![1, 3, 6, 7]);
        assert_eq!(
            sums,
            sums_of(&now),
            "the checksums now describe the new state"
        );
        let mut fresh = ImageSum::default();
        for (i, p) in now.0.iter().enumerate() {
            fresh.add(i as u32 + 1, p);
        }
        assert_eq!(sums.value(), fresh.value());
    }

    #[test]
    fn a_shrunk_database_keeps_only_its_changed_pages() {
        let base = image(&[1, 2, 3, 4, 5]);
        let mut sums = sums_of(&base);
        let mut now = image(&[1, 7, 3]);
        assert_eq!(
            built(&full_spec(3, 2, (1, 2)), &mut now, &mut sums),
            vec![1, 2]
        );
        assert_eq!(sums, sums_of(&now));
    }

    #[test]
    fn snapshots_and_files_without_a_wal_position_stay_whole() {
        for spec in [full_spec(3, 1, (1, 2)), full_spec(3, 5, (0, 0))] {
            assert!(!diffable(&spec));
            let mut sums = sums_of(&image(&[1, 2, 3]));
            let mut now = image(&[1, 2, 3]);
            assert_eq!(built(&spec, &mut now, &mut sums), vec![1, 2, 3]);
            assert_eq!(sums, sums_of(&now));
        }
    }

    #[test]
    fn a_database_that_only_shrank_gets_a_file_of_page_1() {
        // Restores drop the pages past the commit, so nothing else need be carried.
        let base = image(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut sums = sums_of(&base);
        let mut now = image(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            built(&full_spec(6, 3, (1, 2)), &mut now, &mut sums),
            vec![1]
        );
        assert_eq!(sums, sums_of(&now));
    }
}
