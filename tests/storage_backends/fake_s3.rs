//! The S3 backend against a scripted fake endpoint: how each kind of failure is
//! classified (ambiguous, transient, permanent), and what the command line prints for
//! refused or missing credentials.

use super::*;

/// What the fake server does with each request after reading it in full.
#[derive(Clone, Copy)]
enum Script {
    Respond(u16, &'static str),
    /// Close the connection without answering.
    Hangup,
}

/// Minimal HTTP/1.1 server on 127.0.0.1 that reads each request (headers and
/// `Content-Length` body) and answers per `Script`; counts requests so tests
/// can prove the SDK made exactly one attempt.
struct FakeS3 {
    endpoint: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeS3 {
    fn start(script: Script) -> FakeS3 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (req2, stop2) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                if read_request(&mut conn).is_none() {
                    continue;
                }
                req2.fetch_add(1, Ordering::SeqCst);
                match script {
                    Script::Hangup => drop(conn),
                    Script::Respond(status, code) => {
                        let body = if code.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                                 <Message>scripted {code}</Message><RequestId>1</RequestId></Error>"
                            )
                        };
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {status} Scripted\r\nContent-Type: application/xml\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.flush();
                    }
                }
            }
        });
        FakeS3 {
            endpoint: format!("http://{addr}"),
            requests,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn take_requests(&self) -> usize {
        self.requests.swap(0, Ordering::SeqCst)
    }
}

impl Drop for FakeS3 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // unblock accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read one request: headers, then the body per Content-Length.
fn read_request(conn: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    if head.contains("expect: 100-continue") {
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).ok()?;
    Some(())
}

async fn fake_store(fake: &FakeS3) -> Store {
    s3_store(&fake.endpoint, "bkt", "p").await
}

#[tokio::test]
async fn s3_server_error_is_ambiguous_for_put_transient_for_get_and_never_retried() {
    let fake = FakeS3::start(Script::Respond(500, "InternalError"));
    let store = fake_store(&fake).await;
    match store.put(K1, PutBody::Bytes(b"payload"), &[], true).await {
        Err(StoreError::Ambiguous(msg)) => assert!(msg.contains("InternalError"), "{msg}"),
        other => panic!("PUT 500: expected Ambiguous, got {other:?}"),
    }
    assert_eq!(
        fake.take_requests(),
        1,
        "exactly one attempt: no SDK retries"
    );
    assert!(matches!(store.get(K1).await, Err(StoreError::Transient(_))));
    assert_eq!(
        fake.take_requests(),
        1,
        "exactly one attempt: no SDK retries"
    );
    assert!(matches!(
        store.list("").await,
        Err(StoreError::Transient(_))
    ));
    assert_eq!(fake.take_requests(), 1);
}

#[tokio::test]
async fn s3_throttling_is_transient_even_for_put() {
    for (status, code) in [(503, "SlowDown"), (429, "")] {
        let fake = FakeS3::start(Script::Respond(status, code));
        let store = fake_store(&fake).await;
        match store.put(K1, PutBody::Bytes(b"payload"), &[], false).await {
            Err(StoreError::Transient(_)) => {}
            other => panic!("PUT {status} {code}: expected Transient, got {other:?}"),
        }
        assert_eq!(fake.take_requests(), 1, "{status}: no SDK retries");
    }
}

#[tokio::test]
async fn s3_bare_503_on_put_is_ambiguous() {
    let fake = FakeS3::start(Script::Respond(503, ""));
    let store = fake_store(&fake).await;
    assert!(matches!(
        store.put(K1, PutBody::Bytes(b"p"), &[], false).await,
        Err(StoreError::Ambiguous(_))
    ));
    assert!(matches!(store.get(K1).await, Err(StoreError::Transient(_))));
}

#[tokio::test]
async fn s3_hangup_after_request_is_ambiguous_for_put() {
    let fake = FakeS3::start(Script::Hangup);
    let store = fake_store(&fake).await;
    match store.put(K1, PutBody::Bytes(b"payload"), &[], true).await {
        Err(StoreError::Ambiguous(_)) => {}
        other => panic!(
            "PUT with the connection dropped after sending: expected Ambiguous, got {other:?}"
        ),
    }
    assert_eq!(fake.take_requests(), 1);
    assert!(matches!(store.get(K1).await, Err(StoreError::Transient(_))));
}

#[tokio::test]
async fn s3_auth_and_precondition_errors() {
    let fake = FakeS3::start(Script::Respond(403, "InvalidAccessKeyId"));
    let store = fake_store(&fake).await;
    for res in [
        store.put(K1, PutBody::Bytes(b"p"), &[], false).await,
        store.get(K1).await.map(|_| ()),
        store.check().await,
    ] {
        match res {
            Err(StoreError::Permanent(msg)) => {
                assert!(
                    msg.contains("access denied") && msg.contains("credentials"),
                    "{msg}"
                )
            }
            other => panic!("403: expected Permanent, got {other:?}"),
        }
    }

    let fake = FakeS3::start(Script::Respond(412, "PreconditionFailed"));
    let store = fake_store(&fake).await;
    assert!(matches!(
        store.put(K1, PutBody::Bytes(b"p"), &[], true).await,
        Err(StoreError::AlreadyExists(_))
    ));

    let fake = FakeS3::start(Script::Respond(409, "ConditionalRequestConflict"));
    let store = fake_store(&fake).await;
    assert!(matches!(
        store.put(K1, PutBody::Bytes(b"p"), &[], true).await,
        Err(StoreError::AlreadyExists(_))
    ));

    let fake = FakeS3::start(Script::Respond(501, "NotImplemented"));
    let store = fake_store(&fake).await;
    assert!(matches!(
        store.put(K1, PutBody::Bytes(b"p"), &[], true).await,
        Err(StoreError::Permanent(_))
    ));

    let fake = FakeS3::start(Script::Respond(404, "NoSuchBucket"));
    let store = fake_store(&fake).await;
    match store.get(K1).await {
        Err(StoreError::Permanent(msg)) => assert!(msg.contains("does not exist"), "{msg}"),
        other => panic!("NoSuchBucket: expected Permanent, got {other:?}"),
    }
}

/// What a user sees from the command line when the store refuses the credentials, or
/// when there are none: exit 1 and one line that says what to do.
#[test]
fn cli_reports_wrong_and_missing_credentials_in_one_line() {
    let fake = FakeS3::start(Script::Respond(403, "InvalidAccessKeyId"));
    let run = |envs: &[(&str, &str)], clear: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_walvault"));
        cmd.args(["list", "-b", "s3://bkt/p", "--endpoint", &fake.endpoint]);
        for k in clear {
            cmd.env_remove(k);
        }
        cmd.envs(envs.iter().copied());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };

    let (code, stderr) = run(
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0"),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
            ("AWS_REGION", "us-east-1"),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("access denied") && lines[0].contains("check AWS credentials"),
        "{stderr}"
    );

    // No credentials anywhere: empty config files, no variables, no instance metadata.
    let none = tempfile::tempdir().unwrap();
    let empty = none.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    let (code, stderr) = run(
        &[
            ("AWS_CONFIG_FILE", empty),
            ("AWS_SHARED_CREDENTIALS_FILE", empty),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_REGION", "us-east-1"),
            ("HOME", none.path().to_str().unwrap()),
        ],
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("AWS credentials") && lines[0].contains("AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );
}
