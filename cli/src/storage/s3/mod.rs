//! `s3://` backend on aws-sdk-s3: client construction (region, endpoint,
//! path-style, timeouts, **no SDK retries**) and the classification of every SDK
//! failure into a [`StoreError`] the replication engine can act on.
//!
//! # Client configuration
//! * `RetryConfig::disabled()`: exactly one HTTP attempt per call. The engine
//!   owns retrying, and a silent SDK retry of a PUT would hide ambiguity. (hyper
//!   may still resend a request whose pooled connection closed *before* the
//!   request was written; that is safe.)
//! * Timeouts: connect 5 s; operation attempt 60 s, and for PUT 60 s + 1 s per
//!   MiB of body (a large snapshot upload must not time out at a minute). GET
//!   bodies are streamed after the attempt ends and are guarded by the SDK's
//!   default stalled-stream protection (error when no progress for 5 s).
//! * Checksums `WhenRequired` (request and response): S3-compatible servers
//!   often reject the SDK's default aws-chunked CRC trailers.
//! * Region: `StoreOptions::region`, else env/profile, else (only when no
//!   custom endpoint is set) the rest of the default chain incl. IMDS, else
//!   `us-east-1`. Credentials: the standard AWS chain.
//!
//!
//! Error classification lives in [`classify`]; multipart uploads in [`multipart`].

mod classify;
use classify::{local_err, status_of, timeouts};
mod multipart;

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::io;
use std::path::Path;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use tokio::io::AsyncWriteExt;

use super::{
    Downloaded, ObjectInfo, PutBody, StoreError, StoreOptions, validate_key, validate_prefix,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Max keys per DeleteObjects request.
const DELETE_BATCH: usize = 1000;

/// A bucket + key prefix on an S3-compatible service.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// No leading/trailing `/`; empty = bucket root.
    prefix: String,
    /// Human description of where requests go, for error messages.
    endpoint_desc: String,
    region: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    /// Starting a multipart upload or sending one part: nothing is stored at the key yet.
    Part,
    Get,
    Head,
    List,
    Delete,
    Check,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Put => "upload",
            Op::Part => "upload part",
            Op::Get => "download",
            Op::Head => "stat",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Check => "check",
        }
    }
}

/// Resolve the endpoint: explicit option, else `AWS_ENDPOINT_URL_S3`, else
/// `AWS_ENDPOINT_URL`; a missing scheme becomes `https://`.
pub fn resolve_endpoint(opts: &StoreOptions) -> Option<String> {
    let raw = opts
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())?;
    Some(if raw.contains("://") {
        raw
    } else {
        format!("https://{raw}")
    })
}

impl S3Store {
    /// Build the client. Issues no S3 requests (region/credential providers may
    /// read env and profile files; IMDS only without a custom endpoint).
    pub async fn new(
        bucket: String,
        prefix: String,
        opts: &StoreOptions,
    ) -> anyhow::Result<S3Store> {
        let endpoint = resolve_endpoint(opts);
        if let Some(ep) = &endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            anyhow::bail!("invalid S3 endpoint '{ep}': use http://host:port or https://host");
        }
        let explicit = opts
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .map(Region::new);
        let region_chain = if endpoint.is_some() {
            RegionProviderChain::first_try(explicit)
                .or_else(aws_config::environment::region::EnvironmentVariableRegionProvider::new())
                .or_else(aws_config::profile::ProfileFileRegionProvider::new())
                .or_else(Region::new("us-east-1"))
        } else {
            RegionProviderChain::first_try(explicit)
                .or_default_provider()
                .or_else(Region::new("us-east-1"))
        };
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region_chain)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts(ATTEMPT_TIMEOUT))
            .load()
            .await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts(ATTEMPT_TIMEOUT))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &endpoint {
            conf = conf.endpoint_url(ep);
        }
        conf = conf.force_path_style(opts.force_path_style.unwrap_or(endpoint.is_some()));
        let endpoint_desc = match &endpoint {
            Some(ep) => format!("endpoint {ep}"),
            None => format!("S3 in region {region}"),
        };
        Ok(S3Store {
            client: Client::from_conf(conf.build()),
            bucket,
            prefix,
            endpoint_desc,
            region,
        })
    }

    /// The underlying SDK client (e.g. for tests inspecting its configuration).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Full S3 prefix for a relative list prefix (`""` = everything under the
    /// store's prefix, never a sibling such as `prefix-other/`).
    fn full_prefix(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => format!("{}/", self.prefix),
            (false, false) => format!("{}/{rel}", self.prefix),
        }
    }

    fn rel_key<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    fn location(&self, key: &str) -> String {
        if key.is_empty() {
            format!("s3://{}/{}", self.bucket, self.prefix)
        } else {
            format!("s3://{}/{}", self.bucket, self.full_key(key))
        }
    }

    pub async fn check(&self) -> Result<(), StoreError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_prefix(""))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.classify(e, Op::Check, ""))?;
        Ok(())
    }

    pub async fn put(
        &self,
        key: &str,
        body: PutBody<'_>,
        metadata: &[(&str, String)],
        if_none_match: bool,
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        let meta: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let (stream, len) = match body {
            PutBody::Bytes(b) => (ByteStream::from(b.to_vec()), b.len() as u64),
            PutBody::File(p) => {
                let len = tokio::fs::metadata(p)
                    .await
                    .map_err(|e| local_err(&e, p))?
                    .len();
                if len > multipart::MULTIPART_THRESHOLD {
                    return self.put_multipart(key, p, len, meta, if_none_match).await;
                }
                let stream = ByteStream::read_from()
                    .path(p)
                    .length(aws_sdk_s3::primitives::Length::Exact(len))
                    .build()
                    .await
                    .map_err(|e| {
                        StoreError::Permanent(format!(
                            "cannot read upload source '{}': {e}",
                            p.display()
                        ))
                    })?;
                (stream, len)
            }
        };
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(stream)
            .content_length(len as i64);
        if !meta.is_empty() {
            req = req.set_metadata(Some(meta));
        }
        if if_none_match {
            req = req.if_none_match("*");
        }
        let attempt = ATTEMPT_TIMEOUT + Duration::from_secs(len / (1024 * 1024));
        req.customize()
            .config_override(aws_sdk_s3::config::Builder::new().timeout_config(timeouts(attempt)))
            .send()
            .await
            .map_err(|e| self.classify(e, Op::Put, key))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        validate_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.classify(e, Op::Get, key))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| self.body_err(key, &e))?;
        Ok(bytes.into_bytes().to_vec())
    }

    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        validate_key(key)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset.saturating_add(len - 1);
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={offset}-{end}"))
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            // Offset at or past the end: S3 answers 416 InvalidRange.
            Err(e) if status_of(&e) == Some(416) || e.code() == Some("InvalidRange") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.classify(e, Op::Get, key)),
        };
        let ranged = out.content_range().is_some();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| self.body_err(key, &e))?
            .into_bytes();
        if ranged {
            let n = bytes.len().min(len as usize);
            Ok(bytes[..n].to_vec())
        } else {
            // Server ignored Range and sent the whole object: slice it ourselves.
            let start = (offset as usize).min(bytes.len());
            let stop = start.saturating_add(len as usize).min(bytes.len());
            Ok(bytes[start..stop].to_vec())
        }
    }

    pub async fn get_to_file(&self, key: &str, dest: &Path) -> Result<Downloaded, StoreError> {
        validate_key(key)?;
        let mut out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.classify(e, Op::Get, key))?;
        let metadata = out.metadata().map(user_metadata).unwrap_or_default();
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| local_err(&e, dest))?;
        let result: Result<u64, StoreError> = async {
            let mut n = 0u64;
            while let Some(chunk) = out
                .body
                .try_next()
                .await
                .map_err(|e| self.body_err(key, &e))?
            {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| local_err(&e, dest))?;
                n += chunk.len() as u64;
            }
            file.flush().await.map_err(|e| local_err(&e, dest))?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            drop(file);
            let _ = tokio::fs::remove_file(dest).await;
        }
        result.map(|len| Downloaded { len, metadata })
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(self.head_raw(key).await?.map(|out| ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified_ms: out.last_modified().and_then(|t| t.to_millis().ok()),
        }))
    }

    pub async fn metadata(
        &self,
        key: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        Ok(self
            .head_raw(key)
            .await?
            .map(|out| out.metadata().map(user_metadata).unwrap_or_default()))
    }

    async fn head_raw(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, StoreError> {
        validate_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            // HEAD responses have no body, so a 404 cannot tell a missing key from a
            // missing bucket; `check()` is what reports the latter.
            Err(e)
                if status_of(&e) == Some(404)
                    || e.as_service_error().is_some_and(|s| s.is_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.classify(e, Op::Head, key)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        validate_prefix(prefix)?;
        let full = self.full_prefix(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.classify(e, Op::List, prefix))?;
            for obj in page.contents() {
                let Some(rel) = obj.key().and_then(|k| self.rel_key(k)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: rel.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    last_modified_ms: obj.last_modified().and_then(|t| t.to_millis().ok()),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) if !t.is_empty() => token = Some(t.to_string()),
                (Some(true), _) => {
                    return Err(StoreError::Transient(format!(
                        "listing {} returned a truncated page without a continuation token",
                        self.location(prefix)
                    )));
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let dir = prefix.trim_end_matches('/');
        let rel = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let full = self.full_prefix(&rel);
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.classify(e, Op::List, prefix))?;
            for cp in page.common_prefixes() {
                if let Some(name) = cp
                    .prefix()
                    .and_then(|p| p.strip_prefix(full.as_str()))
                    .map(|p| p.trim_end_matches('/'))
                    .filter(|p| !p.is_empty())
                {
                    names.push(name.to_string());
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) if !t.is_empty() => token = Some(t.to_string()),
                (Some(true), _) => {
                    return Err(StoreError::Transient(format!(
                        "listing {} returned a truncated page without a continuation token",
                        self.location(prefix)
                    )));
                }
                _ => break,
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for k in keys {
            validate_key(k)?;
        }
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Permanent(format!("cannot build delete request: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::Permanent(format!("cannot build delete request: {e}")))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.classify(e, Op::Delete, &batch[0]))?;
            // Per-key failures come back in a 200 response.
            if let Some(err) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                let code = err.code().unwrap_or("");
                let msg = format!(
                    "cannot delete s3://{}/{}: {code}: {}",
                    self.bucket,
                    err.key().unwrap_or("?"),
                    err.message().unwrap_or("")
                );
                return Err(match code {
                    "AccessDenied" => StoreError::Permanent(format!(
                        "{msg}: check AWS credentials and bucket policy"
                    )),
                    "SlowDown" | "InternalError" | "ServiceUnavailable" | "OperationAborted" => {
                        StoreError::Transient(msg)
                    }
                    _ => StoreError::Permanent(msg),
                });
            }
        }
        Ok(())
    }
}

/// The `x-amz-meta-*` map of a response, ordered (keys as the SDK gives them: without
/// the prefix, lower-case).
fn user_metadata(m: &HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
