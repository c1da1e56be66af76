//! Object-storage layer: the one [`Store`] type the replication engine talks to,
//! its error taxonomy ([`StoreError`]) and the shared vocabulary (keys, metadata,
//! the `litestream-timestamp` format).
//!
//! Backends (enum dispatch, no `dyn`):
//! * [`file::FileStore`] — `file:///dir`, the embedded default; no server needed.
//! * [`s3::S3Store`] — `s3://bucket/prefix` on AWS or any S3-compatible server.
//!
//! Keys are relative to the store root (the `file://` directory or the `s3://`
//! prefix), `/`-separated, never absolute, never containing `.`/`..` segments or
//! empty segments, and no segment may start with `.tmp-` (reserved for the file
//! backend's in-flight uploads). Both backends validate keys identically, so a
//! key accepted by one is accepted by the other.
//!
//! Retrying is the caller's job: no backend retries internally. The error kind
//! tells the caller what a failure means (see [`StoreError`]).

pub mod file;
pub mod s3;
pub mod url;

use std::collections::BTreeMap;
use std::path::Path;

pub use url::ReplicaUrl;

/// Object metadata key under which Litestream stores the LTX header timestamp
/// (S3 header `x-amz-meta-litestream-timestamp`), formatted as Go's
/// `time.RFC3339Nano` in UTC (see [`format_timestamp_ms`]).
pub const METADATA_TIMESTAMP: &str = "litestream-timestamp";

/// walvault's integrity metadata on each LTX object (ignored by Litestream): the
/// SHA-256 of the object, and that of the file it extends (a hash chain).
pub const METADATA_SHA256: &str = "walvault-sha256";
pub const METADATA_PREV_SHA256: &str = "walvault-prev-sha256";
/// walvault's database checksum (LTX algorithm) of the state after applying the file.
pub const METADATA_DB_CHECKSUM: &str = "walvault-db-checksum";

/// Name prefix of the file backend's in-flight temporary files.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// One object as listed or HEADed.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Relative to the store root, `/`-separated.
    pub key: String,
    pub size: u64,
    /// S3 `LastModified` or the file's mtime, in Unix milliseconds.
    pub last_modified_ms: Option<i64>,
}

/// An object streamed to a local file: its length and the user metadata that came
/// with the same response (so body and metadata are one version of the object).
#[derive(Clone, Debug, Default)]
pub struct Downloaded {
    pub len: u64,
    /// As [`Store::metadata`] returns it.
    pub metadata: BTreeMap<String, String>,
}

/// What went wrong, classified by what the caller may conclude.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist (GET of a missing key).
    #[error("object not found: {0}")]
    NotFound(String),
    /// A conditional put (`if_none_match`) found the key already present; the
    /// existing object was left unchanged.
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    /// Failed without effect; retrying later may succeed (throttling,
    /// unreachable endpoint, 5xx on reads).
    #[error("{0}")]
    Transient(String),
    /// Will not succeed by retrying: wrong bucket, bad credentials, invalid key,
    /// malformed request. The message says what to fix.
    #[error("{0}")]
    Permanent(String),
    /// A write that may or may not have taken effect (timeout or reset after the
    /// request was sent, 5xx on PUT). Re-check the object before assuming either.
    #[error("{0}")]
    Ambiguous(String),
}

impl StoreError {
    /// Worth retrying as-is (`Transient` or `Ambiguous`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Transient(_) | StoreError::Ambiguous(_))
    }
}

/// The body of a put.
#[derive(Clone, Copy, Debug)]
pub enum PutBody<'a> {
    Bytes(&'a [u8]),
    /// Streamed from disk (S3: `ByteStream::from_path`; file backend: copy).
    File(&'a Path),
}

/// Which backend family a store belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    S3,
    File,
}

/// Connection options for S3 (ignored by the file backend).
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// Custom endpoint (`--endpoint`). When `None`, `AWS_ENDPOINT_URL_S3` then
    /// `AWS_ENDPOINT_URL` are consulted; when still `None`, AWS itself. A value
    /// without a scheme gets `https://`.
    pub endpoint: Option<String>,
    /// Region; default from the AWS chain (env, profile; IMDS only when no custom
    /// endpoint is set), else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing; default `true` when a custom endpoint is set.
    pub force_path_style: Option<bool>,
}

/// One storage backend. Enum dispatch, no `dyn`.
pub enum Store {
    File(file::FileStore),
    S3(s3::S3Store),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::File($s) => $e,
            Store::S3($s) => $e,
        }
    };
}

impl Store {
    /// Build the backend for `url`. Issues no S3 requests (use [`Store::check`]).
    pub async fn open(url: &ReplicaUrl, opts: &StoreOptions) -> anyhow::Result<Store> {
        Ok(match url {
            ReplicaUrl::File { root } => Store::File(file::FileStore::new(root.clone())),
            ReplicaUrl::S3 { bucket, prefix } => {
                Store::S3(s3::S3Store::new(bucket.clone(), prefix.clone(), opts).await?)
            }
        })
    }

    /// Cheap reachability / credentials / bucket check. S3: a one-key list under
    /// the prefix. File: the root exists (or is created) and is writable.
    pub async fn check(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.check().await)
    }

    /// Write `key`. With `if_none_match`, fails with [`StoreError::AlreadyExists`]
    /// (and leaves the existing object untouched) when the key exists.
    /// `metadata`: S3 user metadata (`x-amz-meta-*`); the file backend stores
    /// [`METADATA_TIMESTAMP`] as the file's mtime and the rest in a sidecar JSON file.
    pub async fn put(
        &self,
        key: &str,
        body: PutBody<'_>,
        metadata: &[(&str, String)],
        if_none_match: bool,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put(key, body, metadata, if_none_match).await)
    }

    /// Whole object in memory.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        dispatch!(self, s => s.get(key).await)
    }

    /// `len` bytes from `offset`; fewer (possibly none) at end of object.
    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        dispatch!(self, s => s.get_range(key, offset, len).await)
    }

    /// Stream the object into `dest` (created or truncated) with bounded memory;
    /// returns the byte count and the object's metadata (S3: from the GET response, no
    /// HEAD needed). A partial `dest` is removed on error. `dest` is scratch space
    /// (restore, verify), so it is not fsynced: the caller reads it back at once.
    pub async fn get_to_file(&self, key: &str, dest: &Path) -> Result<Downloaded, StoreError> {
        dispatch!(self, s => s.get_to_file(key, dest).await)
    }

    /// Size and mtime, or `None` when the key does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        dispatch!(self, s => s.head(key).await)
    }

    /// User metadata of `key`, or `None` when it does not exist. S3: the
    /// `x-amz-meta-*` map (keys without the prefix, lower-case). File: the sidecar's
    /// map plus [`METADATA_TIMESTAMP`], synthesised from the file's mtime.
    pub async fn metadata(
        &self,
        key: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        dispatch!(self, s => s.metadata(key).await)
    }

    /// Every object whose key starts with `prefix` (plain string prefix, S3
    /// semantics; `""` = everything), all pages, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        dispatch!(self, s => s.list(prefix).await)
    }

    /// Names (last segment only, no trailing `/`) of the immediate
    /// "subdirectories" of directory `prefix` (`""` = root; a trailing `/` is
    /// optional), sorted. Only directories that contain at least one object are
    /// reported, on both backends (S3 has no empty directories).
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.list_dirs(prefix).await)
    }

    /// Delete `keys`; missing keys are not an error.
    pub async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete(keys).await)
    }

    pub fn layout(&self) -> Layout {
        match self {
            Store::File(_) => Layout::File,
            Store::S3(_) => Layout::S3,
        }
    }
}

/// Validate an object key (see the module docs for the rules).
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Permanent(
            "invalid object key '': keys must not be empty".into(),
        ));
    }
    validate_path_like(key, false)
}

/// Validate a list prefix: like a key, but may be empty, may end with `/` and
/// its last segment may be partial.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_path_like(prefix.strip_suffix('/').unwrap_or(prefix), true)
}

fn validate_path_like(s: &str, is_prefix: bool) -> Result<(), StoreError> {
    let what = if is_prefix { "prefix" } else { "object key" };
    let bad = |why: &str| {
        Err(StoreError::Permanent(format!(
            "invalid {what} '{s}': {why}"
        )))
    };
    if s.starts_with('/') {
        return bad("must be relative (no leading '/')");
    }
    if s.contains(['\0', '\\']) {
        return bad("must not contain NUL or '\\'");
    }
    for seg in s.split('/') {
        if seg.is_empty() {
            return bad("must not contain empty segments ('//' or a trailing '/')");
        }
        if seg == "." || seg == ".." {
            return bad("must not contain '.' or '..' segments");
        }
        if seg.starts_with(TEMP_PREFIX) {
            return bad("segments starting with '.tmp-' are reserved");
        }
    }
    Ok(())
}

/// Parse an RFC 3339 timestamp (`2024-01-02T03:04:05.123456789Z`, optional
/// fraction of any length, `Z` or `±HH:MM`) into Unix milliseconds (fraction
/// truncated toward the past). Accepts what Go's `time.RFC3339Nano` produces.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *c == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec.min(59) - offset_s;
    Some(secs * 1000 + millis)
}

/// Format Unix milliseconds like Go's `t.UTC().Format(time.RFC3339Nano)`:
/// `2024-01-02T03:04:05.12Z` (trailing fractional zeros trimmed, no fraction at
/// all for whole seconds).
pub fn format_timestamp_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_go_format() {
        assert_eq!(format_timestamp_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_timestamp_ms(1_700_000_000_120),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(format_timestamp_ms(-1), "1969-12-31T23:59:59.999Z");
        for ms in [
            0,
            1,
            999,
            1_700_000_000_123,
            951_782_400_000,
            -86_400_001,
            4_102_444_800_000,
        ] {
            assert_eq!(
                parse_timestamp_ms(&format_timestamp_ms(ms)),
                Some(ms),
                "{ms}"
            );
        }
        assert_eq!(
            parse_timestamp_ms("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_timestamp_ms("2023-11-15T00:13:20.5+02:00"),
            Some(1_700_000_000_500)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-02-30T00:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20Zjunk",
        ] {
            assert_eq!(parse_timestamp_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_validation() {
        for ok in ["a", "ltx/0/0000000000000001-0000000000000001.ltx", "a.b/c"] {
            validate_key(ok).unwrap();
        }
        for bad in [
            "",
            "/a",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            ".tmp-x",
            "a/.tmp-1/b",
            "a\\b",
        ] {
            assert!(
                matches!(validate_key(bad), Err(StoreError::Permanent(_))),
                "{bad}"
            );
        }
        for ok in ["", "ltx/", "ltx/0/00000", "ltx"] {
            validate_prefix(ok).unwrap();
        }
        for bad in ["/", "../", "a//", "/a"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
