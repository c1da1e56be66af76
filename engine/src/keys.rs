//! Object key layout: where each LTX file of a database lives in the store, exactly
//! as Litestream 0.5 lays it out, and the parsing of keys back into file ids.
//!
//! S3-style stores: `<db>/<level %04x>/<min %016x>-<max %016x>.ltx`.
//! File-style stores (Litestream's file backend): `<db>/ltx/<level decimal>/<min>-<max>.ltx`.
//! Keys are relative to the replica URL's root (bucket prefix or directory).

use std::fmt;

/// The highest level Litestream uses (snapshots).
pub const SNAPSHOT_LEVEL: u8 = 9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    S3,
    File,
}

/// Identity of one LTX file in a database's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "L{} {}",
            self.level,
            file_name(self.min_txid, self.max_txid)
        )
    }
}

/// `<min %016x>-<max %016x>.ltx`
pub fn file_name(min: u64, max: u64) -> String {
    format!("{min:016x}-{max:016x}.ltx")
}

/// Directory (key prefix, with trailing '/') that holds one level of a database.
pub fn level_prefix(layout: Layout, db: &str, level: u8) -> String {
    match layout {
        Layout::S3 => format!("{db}/{level:04x}/"),
        Layout::File => format!("{db}/ltx/{level}/"),
    }
}

/// Key prefix (with trailing '/') under which all of a database's LTX files live.
pub fn db_prefix(layout: Layout, db: &str) -> String {
    match layout {
        Layout::S3 => format!("{db}/"),
        Layout::File => format!("{db}/ltx/"),
    }
}

pub fn ltx_key(layout: Layout, db: &str, id: FileId) -> String {
    format!(
        "{}{}",
        level_prefix(layout, db, id.level),
        file_name(id.min_txid, id.max_txid)
    )
}

/// Parses a key relative to [`db_prefix`] (e.g. `0000/0000000000000001-0000000000000001.ltx`).
/// Returns `None` for anything that is not an LTX file of this layout.
pub fn parse_rel_key(layout: Layout, rel: &str) -> Option<FileId> {
    let (level_s, name) = rel.split_once('/')?;
    let level = match layout {
        Layout::S3 => {
            if level_s.len() != 4 {
                return None;
            }
            u8::try_from(u32::from_str_radix(level_s, 16).ok()?).ok()?
        }
        Layout::File => {
            if level_s.is_empty() || !level_s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            level_s.parse::<u8>().ok()?
        }
    };
    let (min, max) = parse_file_name(name)?;
    if level > SNAPSHOT_LEVEL {
        return None;
    }
    Some(FileId {
        level,
        min_txid: min,
        max_txid: max,
    })
}

/// Parses `<min %016x>-<max %016x>.ltx`.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".ltx")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    let min = u64::from_str_radix(a, 16).ok()?;
    let max = u64::from_str_radix(b, 16).ok()?;
    (min >= 1 && max >= min).then_some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_layout_matches_litestream() {
        let id = FileId {
            level: 0,
            min_txid: 7,
            max_txid: 7,
        };
        assert_eq!(
            ltx_key(Layout::S3, "app", id),
            "app/0000/0000000000000007-0000000000000007.ltx"
        );
        let snap = FileId {
            level: 9,
            min_txid: 1,
            max_txid: 0x4d2,
        };
        assert_eq!(
            ltx_key(Layout::S3, "app", snap),
            "app/0009/0000000000000001-00000000000004d2.ltx"
        );
        assert_eq!(
            parse_rel_key(Layout::S3, "0009/0000000000000001-00000000000004d2.ltx"),
            Some(snap)
        );
    }

    #[test]
    fn file_layout_matches_litestream() {
        let id = FileId {
            level: 1,
            min_txid: 1,
            max_txid: 16,
        };
        assert_eq!(
            ltx_key(Layout::File, "db", id),
            "db/ltx/1/0000000000000001-0000000000000010.ltx"
        );
        assert_eq!(
            parse_rel_key(Layout::File, "1/0000000000000001-0000000000000010.ltx"),
            Some(id)
        );
    }

    #[test]
    fn rejects_foreign_keys() {
        for k in [
            "0000/x.ltx",
            "0000/0000000000000002-0000000000000001.ltx",
            "000a/0000000000000000-0000000000000001.ltx",
            "zz/0000000000000001-0000000000000001.ltx",
            "0000/0000000000000001-0000000000000001.ltx.tmp",
            "0000",
        ] {
            assert_eq!(parse_rel_key(Layout::S3, k), None, "{k}");
        }
    }
}
