//! The page index that follows the page-block terminator: for each page, ascending,
//! uvarints `pgno, offset, size`; then uvarint 0; then a big-endian u64 with the
//! index length in bytes (entries and the 0, not the u64 itself).

use super::varint::{MAX_VARINT_LEN, append_uvarint, read_uvarint};
use super::{LtxError, TRAILER_SIZE};

/// One page of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub pgno: u32,
    /// Absolute file offset of the page header.
    pub offset: u64,
    /// Bytes from the page header to the next page header (6 + 4 + compressed length
    /// for block pages, 6 + frame length for legacy pages).
    pub size: u64,
}

/// Longest encoding of one entry.
pub const MAX_ENTRY_LEN: usize = 3 * MAX_VARINT_LEN;

/// Appends the encoding of `e` to `out`.
pub fn append_entry(out: &mut Vec<u8>, e: &IndexEntry) {
    append_uvarint(out, u64::from(e.pgno));
    append_uvarint(out, e.offset);
    append_uvarint(out, e.size);
}

/// Parses the entries at the start of `b` up to and including the 0 terminator and
/// the u64 length, calling `f` for each entry in order. Returns the number of bytes
/// consumed (index length + 8). Checks that the stored length is right and that the
/// entries are strictly ascending.
pub fn parse_index(
    b: &[u8],
    mut f: impl FnMut(usize, IndexEntry) -> Result<(), LtxError>,
) -> Result<usize, LtxError> {
    let mut p = 0usize;
    let mut prev = 0u32;
    let mut i = 0usize;
    let next = |p: &mut usize| -> Result<u64, LtxError> {
        let rest = b.get(*p..).unwrap_or(&[]);
        let (v, n) = read_uvarint(rest).map_err(|e| match e {
            LtxError::Truncated(_) => LtxError::Truncated("page index"),
            other => other,
        })?;
        *p += n;
        Ok(v)
    };
    loop {
        let pgno = next(&mut p)?;
        if pgno == 0 {
            break;
        }
        let pgno = u32::try_from(pgno).map_err(|_| {
            LtxError::IndexMismatch(format!("entry {i}: page number {pgno} exceeds u32"))
        })?;
        if pgno <= prev {
            return Err(LtxError::IndexMismatch(format!(
                "entry {i}: page {pgno} does not follow page {prev}"
            )));
        }
        let offset = next(&mut p)?;
        let size = next(&mut p)?;
        f(i, IndexEntry { pgno, offset, size })?;
        prev = pgno;
        i += 1;
    }
    let stored = b
        .get(p..p + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or(LtxError::Truncated("page index length"))?;
    if stored != p as u64 {
        return Err(LtxError::IndexMismatch(format!(
            "stored index length {stored}, actual {p}"
        )));
    }
    Ok(p + 8)
}

/// Reads the index of a complete file held in memory, locating it through the u64
/// length that precedes the trailer (as Litestream's read-replica VFS does).
pub fn read_index(file: &[u8]) -> Result<Vec<IndexEntry>, LtxError> {
    let end = file
        .len()
        .checked_sub(TRAILER_SIZE + 8)
        .ok_or(LtxError::Truncated("file too short for an index"))?;
    let len = file
        .get(end..end + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or(LtxError::Truncated("page index length"))?;
    let start = usize::try_from(len)
        .ok()
        .and_then(|l| end.checked_sub(l))
        .filter(|&s| s >= super::HEADER_SIZE + super::PAGE_HEADER_SIZE)
        .ok_or_else(|| {
            LtxError::IndexMismatch(format!("index length {len} does not fit the file"))
        })?;
    let mut out = Vec::new();
    let used = parse_index(file.get(start..).unwrap_or(&[]), |_, e| {
        out.push(e);
        Ok(())
    })?;
    if start + used != end + 8 {
        return Err(LtxError::IndexMismatch(
            "index does not end at its length field".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(entries: &[IndexEntry]) -> Vec<u8> {
        let mut b = Vec::new();
        for e in entries {
            append_entry(&mut b, e);
        }
        b.push(0);
        let len = b.len() as u64;
        b.extend_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn round_trip() {
        let entries = [
            IndexEntry {
                pgno: 1,
                offset: 100,
                size: 300,
            },
            IndexEntry {
                pgno: 2,
                offset: 400,
                size: 4106,
            },
            IndexEntry {
                pgno: 70_000,
                offset: 4506,
                size: 10,
            },
        ];
        let b = encode(&entries);
        let mut got = Vec::new();
        let used = parse_index(&b, |_, e| {
            got.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(used, b.len());
        assert_eq!(got, entries);
        // read_index over a fake file: header + pages + terminator + index + trailer.
        let mut file = vec![0u8; 4506 + 10 + 6];
        file.extend_from_slice(&b);
        file.extend_from_slice(&[0u8; 16]);
        assert_eq!(read_index(&file).unwrap(), entries);
    }

    #[test]
    fn rejects_bad_indexes() {
        let ok = encode(&[IndexEntry {
            pgno: 3,
            offset: 100,
            size: 20,
        }]);
        // Wrong stored length.
        let mut bad = ok.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            parse_index(&bad, |_, _| Ok(())),
            Err(LtxError::IndexMismatch(_))
        ));
        // Truncations.
        for n in 0..ok.len() {
            assert!(
                matches!(
                    parse_index(&ok[..n], |_, _| Ok(())),
                    Err(LtxError::Truncated(_))
                ),
                "len {n}"
            );
        }
        // Descending entries.
        let desc = encode(&[
            IndexEntry {
                pgno: 3,
                offset: 100,
                size: 20,
            },
            IndexEntry {
                pgno: 2,
                offset: 120,
                size: 20,
            },
        ]);
        assert!(matches!(
            parse_index(&desc, |_, _| Ok(())),
            Err(LtxError::IndexMismatch(_))
        ));
        // Page number above u32.
        let mut big = Vec::new();
        append_uvarint(&mut big, 1 << 40);
        big.extend_from_slice(&[1, 1, 0]);
        assert!(matches!(
            parse_index(&big, |_, _| Ok(())),
            Err(LtxError::IndexMismatch(_))
        ));
        // read_index on garbage never panics.
        for n in 0..40 {
            let _ = read_index(&vec![0xffu8; n]);
            let _ = read_index(&vec![0u8; n]);
        }
    }
}
