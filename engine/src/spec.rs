//! What goes into one LTX file, decided by the engine, and the one routine that turns
//! such a decision into bytes by pulling pages from the caller's WAL and database file.
//!
//! The engine never holds page contents: it records where each page lives (a WAL frame
//! or the database file) and the caller materializes the file through [`materialize`]
//! with its own [`PageReader`], streaming one page at a time.

use std::io::Write;

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
    let h = &spec.header;
    let ps = h.page_size as usize;
    let mut frame = vec![0u8; FRAME_HEADER_SIZE as usize + ps];
    let mut enc = Encoder::new(out, h)?;
    if let Some(prev) = spec.prev_commit {
        enc.require_growth_pages(prev);
    }
    let mut put =
        |enc: &mut Encoder<W>, pgno: u32, source: PageSource| -> Result<(), MaterializeError> {
            match source {
                PageSource::Wal(offset) => {
                    src.read_wal_frame(offset, &mut frame)?;
                    check_frame(&frame, offset, pgno, h)?;
                    enc.write_page(pgno, &frame[FRAME_HEADER_SIZE as usize..])?;
                    observe(pgno, &frame[FRAME_HEADER_SIZE as usize..]);
                }
                PageSource::Db => {
                    let page = &mut frame[FRAME_HEADER_SIZE as usize..];
                    src.read_db_page(pgno, page)?;
                    enc.write_page(pgno, page)?;
                    observe(pgno, page);
                }
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
    Ok(enc.finish(0)?)
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
