//! Multipart uploads for files too large for one PutObject (S3 caps a single PUT at
//! 5 GiB). Parts go up one at a time, so memory holds one part (8 MiB or more) whatever
//! the file size.
//!
//! Failure semantics match a single PUT: a failure before `CompleteMultipartUpload`
//! stored nothing at the key (the upload is aborted, best effort, so no orphaned parts
//! are left to bill) and is `Transient`/`Permanent`; the completion itself is
//! classified like a PUT (412 → `AlreadyExists`, lost response → `Ambiguous`) and
//! carries `If-None-Match: *` when asked.

use std::collections::HashMap;
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

use super::classify::local_err;
use super::{Op, S3Store};
use crate::storage::StoreError;

/// Bodies above this go up in parts.
pub(super) const MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
const MIN_PART: u64 = 8 * 1024 * 1024;
const MAX_PARTS: u64 = 9_000;

pub(super) fn part_size(len: u64) -> u64 {
    MIN_PART.max(len.div_ceil(MAX_PARTS))
}

fn number_of_parts(len: u64) -> u64 {
    len.div_ceil(part_size(len)).max(1)
}

impl S3Store {
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        meta: HashMap<String, String>,
        if_none_match: bool,
    ) -> Result<(), StoreError> {
        let full = self.full_key(key);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(&full);
        if !meta.is_empty() {
            create = create.set_metadata(Some(meta));
        }
        let created = create
            .send()
            .await
            .map_err(|e| self.classify(e, Op::Part, key))?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(StoreError::Transient(format!(
                "{}: the server returned no multipart upload id",
                self.location(key)
            )));
        };
        let parts = match self.upload_parts(key, &full, &upload_id, path, len).await {
            Ok(parts) => parts,
            Err(e) => {
                self.abort(&full, &upload_id).await;
                return Err(e);
            }
        };
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(self.bucket())
            .key(&full)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if if_none_match {
            complete = complete.if_none_match("*");
        }
        let result = complete
            .send()
            .await
            .map_err(|e| self.classify(e, Op::Put, key));
        let result = match result {
            // Some S3-compatible servers (moto) answer with a body the SDK cannot parse
            // although the upload completed; HEAD tells: our size and our part count.
            Err(StoreError::Ambiguous(m)) => self
                .confirm_completed(key, len, number_of_parts(len))
                .await
                .map_err(|_| StoreError::Ambiguous(m)),
            other => other.map(|_| ()),
        };
        if let Err(StoreError::AlreadyExists(_) | StoreError::Permanent(_)) = &result {
            // Definitely not completed: do not leave the parts behind.
            self.abort(&full, &upload_id).await;
        }
        result
    }

    /// Does the key hold a completed multipart object of `len` bytes in `parts` parts?
    async fn confirm_completed(&self, key: &str, len: u64, parts: u64) -> Result<(), ()> {
        let full = self.full_key(key);
        let head = self
            .client
            .head_object()
            .bucket(self.bucket())
            .key(&full)
            .send()
            .await
            .map_err(|_| ())?;
        let etag = head
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        let size_ok = head.content_length().and_then(|l| u64::try_from(l).ok()) == Some(len);
        let parts_ok = etag
            .rsplit_once('-')
            .is_some_and(|(_, n)| n.parse::<u64>().ok() == Some(parts));
        if size_ok && parts_ok { Ok(()) } else { Err(()) }
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        path: &Path,
        len: u64,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let size = part_size(len);
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| local_err(&e, path))?;
        let mut parts = Vec::new();
        let mut sent = 0u64;
        let mut number = 1i32;
        while sent < len {
            let this = size.min(len - sent);
            let mut buf = vec![0u8; this as usize];
            file.read_exact(&mut buf)
                .await
                .map_err(|e| local_err(&e, path))?;
            let out = self
                .client
                .upload_part()
                .bucket(self.bucket())
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(this as i64)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| self.classify(e, Op::Part, key))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .part_number(number)
                    .build(),
            );
            sent += this;
            number += 1;
        }
        Ok(parts)
    }

    async fn abort(&self, full: &str, upload_id: &str) {
        let r = self
            .client
            .abort_multipart_upload()
            .bucket(self.bucket())
            .key(full)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(
                key = full,
                "could not abort a multipart upload (its parts may linger until a lifecycle rule removes them): {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_stay_within_s3_limits() {
        assert_eq!(part_size(100 * 1024 * 1024), MIN_PART);
        let huge = 5 * 1024 * 1024 * 1024 * 1024u64; // 5 TiB
        assert!(huge.div_ceil(part_size(huge)) <= 10_000);
        assert!(part_size(huge) <= 5 * 1024 * 1024 * 1024);
    }
}
