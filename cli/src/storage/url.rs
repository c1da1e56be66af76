//! Replica URL parsing: turns `file:///abs/path` and `s3://bucket[/prefix]` into a
//! [`ReplicaUrl`], with one-line errors that tell the user what to type instead.
//!
//! Deliberately strict: no query strings (endpoint and region are flags or AWS
//! environment variables), no relative `file:` paths, no `..` segments. A URL that
//! parses always displays back to a string that parses to the same value.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Result, bail};

/// Parsed replica URL: `file:///abs/path` or `s3://bucket[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaUrl {
    /// A directory on a local (or mounted) file system. `root` is absolute.
    File { root: PathBuf },
    /// An S3 (or S3-compatible) bucket. `prefix` has no leading or trailing `/`
    /// and is empty when the replica lives at the bucket root.
    S3 { bucket: String, prefix: String },
}

const HINT: &str = "use file:///path/to/dir or s3://bucket/prefix";

impl ReplicaUrl {
    /// Parse a replica URL. Errors are single lines that say what to do.
    pub fn parse(s: &str) -> Result<ReplicaUrl> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            bail!("empty replica URL: {HINT}");
        }
        let Some((scheme, rest)) = trimmed.split_once("://") else {
            if trimmed.starts_with('/') {
                bail!(
                    "replica URL '{s}' has no scheme: use file://{trimmed} for a local directory"
                );
            }
            bail!("unsupported replica URL '{s}': {HINT}");
        };
        if rest.contains(['?', '#']) {
            bail!(
                "replica URL '{s}' has a query or fragment, which walvault does not accept: \
                 pass the endpoint and region with --endpoint/--region (or AWS_ENDPOINT_URL_S3/AWS_REGION)"
            );
        }
        match scheme.to_ascii_lowercase().as_str() {
            "file" => parse_file(s, rest),
            "s3" => parse_s3(s, rest),
            _ => bail!("unsupported replica URL scheme '{scheme}' in '{s}': {HINT}"),
        }
    }

    /// `true` for `s3://` URLs.
    pub fn is_s3(&self) -> bool {
        matches!(self, ReplicaUrl::S3 { .. })
    }
}

fn parse_file(orig: &str, rest: &str) -> Result<ReplicaUrl> {
    // `file:///abs` -> rest = "/abs"; `file://localhost/abs` is also accepted.
    let path = if rest.starts_with('/') {
        rest
    } else if let Some(p) = rest.strip_prefix("localhost") {
        p
    } else {
        let host = rest.split('/').next().unwrap_or("");
        bail!(
            "replica URL '{orig}' names host '{host}' or a relative path: file URLs need an absolute path, \
             e.g. file:///{rest}"
        );
    };
    if !path.starts_with('/') {
        bail!("replica URL '{orig}' has no path: use file:///path/to/dir");
    }
    let root = PathBuf::from(path);
    if root.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("replica URL '{orig}' contains '..': give the directory as a plain absolute path");
    }
    // Normalise away `.` segments and trailing slashes so Display round-trips.
    let root: PathBuf = root
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if root == Path::new("/") {
        bail!(
            "replica URL '{orig}' points at the file-system root: use a dedicated directory, e.g. file:///var/backups/app"
        );
    }
    if root.to_str().is_none() {
        bail!("replica URL '{orig}' is not valid UTF-8");
    }
    Ok(ReplicaUrl::File { root })
}

fn parse_s3(orig: &str, rest: &str) -> Result<ReplicaUrl> {
    let (bucket, prefix) = match rest.split_once('/') {
        Some((b, p)) => (b, p),
        None => (rest, ""),
    };
    if bucket.is_empty() {
        bail!("replica URL '{orig}' has no bucket name: use s3://bucket/prefix");
    }
    if bucket.len() < 3
        || bucket.len() > 63
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        bail!(
            "invalid S3 bucket name '{bucket}' in '{orig}': bucket names are 3-63 characters of \
             letters, digits, '-', '.' or '_'"
        );
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|seg| seg == ".." || seg == ".") {
        bail!(
            "replica URL '{orig}' has a '.' or '..' path segment: give the prefix literally, e.g. s3://{bucket}/app/db"
        );
    }
    if prefix.contains("//") {
        bail!("replica URL '{orig}' has an empty path segment ('//'): remove the doubled slash");
    }
    Ok(ReplicaUrl::S3 {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    })
}

impl fmt::Display for ReplicaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaUrl::File { root } => write!(f, "file://{}", root.display()),
            ReplicaUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            ReplicaUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips() {
        for s in ["file:///a/b", "s3://bkt", "s3://bkt/a/b"] {
            let u = ReplicaUrl::parse(s).unwrap();
            assert_eq!(u.to_string(), s);
            assert_eq!(ReplicaUrl::parse(&u.to_string()).unwrap(), u);
        }
    }
}
