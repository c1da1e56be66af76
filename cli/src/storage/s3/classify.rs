//! Classification of every aws-sdk-s3 failure into a [`StoreError`] the replication
//! engine can act on.
//!
//! # Error classification
//! Whether a failed PUT may have been stored decides between `Transient`
//! (safe to retry blindly) and `Ambiguous` (re-check before assuming), so it is
//! spelled out here. "Read ops" are GET, HEAD, LIST and the check; DELETE is
//! idempotent and classified like a read.
//!
//! | failure                                                          | PUT            | read ops / DELETE  |
//! |------------------------------------------------------------------|----------------|--------------------|
//! | 412 / `PreconditionFailed`                                       | AlreadyExists  | Permanent          |
//! | 409 `ConditionalRequestConflict`                                 | AlreadyExists  | Permanent          |
//! | `NoSuchKey`; 404 without code (HEAD/GET)                         | –              | NotFound           |
//! | `NoSuchBucket`; 404 without code on PUT/LIST/DELETE              | Permanent "bucket 'x' does not exist: create it or fix the URL" | same |
//! | 401/403, `AccessDenied`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`, expired/invalid token | Permanent "access denied …: check AWS credentials" | same |
//! | `RequestTimeTooSkewed`                                           | Permanent (fix the clock) | same    |
//! | 301 / `PermanentRedirect` / `AuthorizationHeaderMalformed`       | Permanent (wrong region)  | same    |
//! | 429; 503 with a throttling code (`SlowDown`, …); `RequestTimeout` | Transient     | Transient          |
//! | 501 / `NotImplemented` (e.g. no conditional-write support)       | Permanent      | Permanent          |
//! | other 5xx (incl. 503 without a code)                             | Ambiguous      | Transient          |
//! | other 4xx                                                        | Permanent      | Permanent          |
//! | credentials not found / misconfigured (never sent)               | Permanent      | Permanent          |
//! | credential provider timeout/error (never sent)                   | Transient      | Transient          |
//! | request construction failure (never sent)                        | Permanent      | Permanent          |
//! | dispatch failure in the connect phase: refused, unreachable, DNS, connect timeout, TLS handshake (hyper-util `is_connect`, or an io error of kind ConnectionRefused/HostUnreachable/NetworkUnreachable/AddrNotAvailable) | Transient "cannot reach endpoint …" | same |
//! | any other dispatch failure (reset, EOF, read error after sending) | Ambiguous     | Transient          |
//! | attempt timeout                                                  | Ambiguous      | Transient          |
//! | unparseable response (4xx status: by status as above)            | Ambiguous      | Transient          |
//! | 2xx status whose body does not parse                             | Ambiguous      | Transient          |
//! | error while streaming a GET body                                 | –              | Transient          |
//!
//! When in doubt whether a PUT was sent, the answer is `Ambiguous`.

use super::*;

impl S3Store {
    pub(super) fn body_err(&self, key: &str, e: &(dyn StdError + 'static)) -> StoreError {
        StoreError::Transient(format!(
            "download of {} failed mid-stream: {}",
            self.location(key),
            chain_message(e)
        ))
    }

    /// Map an SDK error to a [`StoreError`]; see the module docs for the table.
    pub(super) fn classify<E>(
        &self,
        err: SdkError<E, HttpResponse>,
        op: Op,
        key: &str,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let loc = self.location(key);
        let detail = chain_message(&err);
        let put = op == Op::Put;

        if let Some(ce) = find_in_chain::<CredentialsError>(&err) {
            return match ce {
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) => {
                    StoreError::Transient(format!(
                        "could not load AWS credentials to {} {loc}: {detail}",
                        op.verb()
                    ))
                }
                _ => StoreError::Permanent(format!(
                    "no usable AWS credentials ({detail}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                     or configure an AWS profile"
                )),
            };
        }

        match &err {
            SdkError::ConstructionFailure(_) => StoreError::Permanent(format!(
                "cannot build the S3 request to {} {loc}: {detail}",
                op.verb()
            )),
            SdkError::TimeoutError(_) => {
                if put {
                    StoreError::Ambiguous(format!(
                        "upload of {loc} timed out after it was sent; it may or may not have been stored"
                    ))
                } else {
                    StoreError::Transient(format!(
                        "{} {loc} timed out ({})",
                        op.verb(),
                        self.endpoint_desc
                    ))
                }
            }
            SdkError::DispatchFailure(df) => {
                if never_sent(&err) {
                    let hint = if self.endpoint_desc.starts_with("endpoint") {
                        "is the server running?"
                    } else {
                        "check network connectivity"
                    };
                    StoreError::Transient(format!(
                        "cannot reach {}: {detail}: {hint}",
                        self.endpoint_desc
                    ))
                } else if df.is_user() {
                    StoreError::Permanent(format!(
                        "invalid S3 request to {} {loc}: {detail}",
                        op.verb()
                    ))
                } else if put {
                    StoreError::Ambiguous(format!(
                        "upload of {loc} failed after it was sent ({detail}); it may or may not have been stored"
                    ))
                } else {
                    StoreError::Transient(format!("{} {loc} failed: {detail}", op.verb()))
                }
            }
            SdkError::ResponseError(_) => match status_of(&err) {
                Some(s @ 400..=499) => self.classify_status(s, None, "", op, key),
                _ if put => StoreError::Ambiguous(format!(
                    "upload of {loc} got an unreadable response ({detail}); it may or may not have been stored"
                )),
                _ => StoreError::Transient(format!(
                    "{} {loc}: unreadable response: {detail}",
                    op.verb()
                )),
            },
            _ => {
                let status = status_of(&err).unwrap_or(0);
                let message = err.message().unwrap_or("").to_string();
                self.classify_status(status, err.code(), &message, op, key)
            }
        }
    }

    fn classify_status(
        &self,
        status: u16,
        code: Option<&str>,
        message: &str,
        op: Op,
        key: &str,
    ) -> StoreError {
        let loc = self.location(key);
        let code = code.unwrap_or("");
        let put = op == Op::Put;
        let bucket = &self.bucket;
        let what = if code.is_empty() {
            format!("HTTP {status}")
        } else if message.is_empty() {
            format!("HTTP {status} {code}")
        } else {
            format!("HTTP {status} {code}: {message}")
        };
        const AUTH: &[&str] = &[
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "TokenRefreshRequired",
            "AllAccessDisabled",
            "AccountProblem",
            "InvalidSecurity",
        ];
        const THROTTLE: &[&str] = &[
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TooManyRequests",
            "RequestThrottled",
            "ServiceUnavailable",
            "RequestTimeout",
        ];
        if (200..300).contains(&status) {
            // A success status whose body could not be understood: the request was
            // carried out as far as the server is concerned, but we cannot be sure.
            let msg = format!(
                "unreadable success response to {} {loc} ({what})",
                op.verb()
            );
            return if put {
                StoreError::Ambiguous(msg)
            } else {
                StoreError::Transient(msg)
            };
        }
        if put && (status == 412 || code == "PreconditionFailed") {
            return StoreError::AlreadyExists(key.to_string());
        }
        if put && code == "ConditionalRequestConflict" {
            return StoreError::AlreadyExists(key.to_string());
        }
        if code == "NoSuchKey" {
            return StoreError::NotFound(key.to_string());
        }
        if code == "NoSuchBucket"
            || (status == 404
                && code.is_empty()
                && matches!(op, Op::Put | Op::List | Op::Check | Op::Delete))
        {
            return StoreError::Permanent(format!(
                "bucket '{bucket}' does not exist ({}): create it or fix the URL",
                self.endpoint_desc
            ));
        }
        if status == 404 && matches!(op, Op::Get | Op::Head) {
            return StoreError::NotFound(key.to_string());
        }
        if code == "RequestTimeTooSkewed" {
            return StoreError::Permanent(format!(
                "S3 rejected the request because the system clock is off ({what}): sync the clock (NTP)"
            ));
        }
        if status == 301
            || matches!(
                code,
                "PermanentRedirect"
                    | "AuthorizationHeaderMalformed"
                    | "IllegalLocationConstraintException"
            )
        {
            return StoreError::Permanent(format!(
                "bucket '{bucket}' is not in region {} ({what}): set --region or AWS_REGION to the bucket's region",
                self.region
            ));
        }
        if status == 401 || status == 403 || AUTH.contains(&code) {
            return StoreError::Permanent(format!(
                "access denied to {loc} ({what}): check AWS credentials and the bucket's permissions"
            ));
        }
        if status == 429 || THROTTLE.contains(&code) {
            return StoreError::Transient(format!(
                "S3 is throttling requests ({what}) to {} {loc}",
                op.verb()
            ));
        }
        if status == 501 || code == "NotImplemented" {
            return StoreError::Permanent(format!(
                "the server at {} does not support this request ({what}) to {} {loc}: use an S3-compatible \
                 server that supports it (conditional writes need If-None-Match support)",
                self.endpoint_desc,
                op.verb()
            ));
        }
        if (500..=599).contains(&status) {
            return if put {
                StoreError::Ambiguous(format!(
                    "upload of {loc} failed with a server error ({what}); it may or may not have been stored"
                ))
            } else {
                StoreError::Transient(format!(
                    "{} {loc} failed with a server error ({what})",
                    op.verb()
                ))
            };
        }
        if status == 412 || code == "PreconditionFailed" || code == "ConditionalRequestConflict" {
            return StoreError::Permanent(format!(
                "unexpected precondition failure on {} {loc} ({what})",
                op.verb()
            ));
        }
        StoreError::Permanent(format!(
            "S3 rejected the request to {} {loc} ({what})",
            op.verb()
        ))
    }
}

pub(super) fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .build()
}

pub(super) fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

pub(super) fn local_err(e: &io::Error, path: &Path) -> StoreError {
    let msg = format!("local file '{}': {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied
        | io::ErrorKind::NotFound
        | io::ErrorKind::ReadOnlyFilesystem => StoreError::Permanent(msg),
        _ => StoreError::Transient(msg),
    }
}

/// Every error in the chain, looking inside `io::Error` payloads (whose
/// `source()` skips the payload itself).
fn error_chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| match e.downcast_ref::<io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
}

fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    error_chain(err).find_map(|e| e.downcast_ref::<T>())
}

/// True when the failure happened while connecting, so the request was
/// certainly not sent.
fn never_sent(err: &(dyn StdError + 'static)) -> bool {
    error_chain(err).any(|e| {
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            return h.is_connect();
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            );
        }
        false
    })
}

/// One-line description: the distinct messages of the chain joined by ": ",
/// skipping the SDK's generic wrappers.
pub(super) fn chain_message(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in error_chain(err) {
        let s = e.to_string();
        if s.is_empty()
            || matches!(
                s.as_str(),
                "dispatch failure"
                    | "io error"
                    | "other"
                    | "timeout"
                    | "service error"
                    | "response error"
                    | "failed to construct request"
                    | "client error (Connect)"
                    | "client error (SendRequest)"
            )
        {
            continue;
        }
        if parts.last().is_some_and(|p| p.contains(&s)) {
            continue;
        }
        parts.push(s);
    }
    let text = if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    };
    one_line(&text)
}

/// Folds a multi-line SDK message (the credential chain lists one provider a line) into
/// one line, so every error walvault prints stays a single line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_has_no_retries_and_bounded_timeouts() {
        let opts = StoreOptions {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("eu-west-1".into()),
            force_path_style: None,
        };
        let s = S3Store::new("bkt".into(), "a/b".into(), &opts)
            .await
            .unwrap();
        let conf = s.client().config();
        assert_eq!(conf.retry_config().unwrap().max_attempts(), 1);
        let t = conf.timeout_config().unwrap();
        assert_eq!(t.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(t.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(conf.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(s.full_key("x/y"), "a/b/x/y");
        assert_eq!(s.full_prefix(""), "a/b/");
        assert_eq!(s.rel_key("a/b/x"), Some("x"));
        assert_eq!(s.rel_key("a/bx"), None);
    }

    #[test]
    fn endpoint_gets_a_scheme() {
        let opts = StoreOptions {
            endpoint: Some("minio.local:9000/".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve_endpoint(&opts).as_deref(),
            Some("https://minio.local:9000")
        );
    }
}
