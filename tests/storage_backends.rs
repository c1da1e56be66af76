//! Storage-layer integration tests: one shared body runs against the `file://`
//! backend and against a real S3-compatible server (moto_server), plus
//! backend-specific checks (mtime from `litestream-timestamp`, S3 metadata
//! headers, error classification against a missing bucket, a closed port and a
//! scripted fake server).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::s3_server::{S3Server, free_port, set_test_aws_env};
use walvault::storage::{
    Layout, METADATA_TIMESTAMP, PutBody, ReplicaUrl, Store, StoreError, StoreOptions,
    format_timestamp_ms, parse_timestamp_ms,
};

const TS: &str = "2024-01-02T03:04:05.678Z";
const TS_MS: i64 = 1_704_164_645_678;
const K1: &str = "ltx/0/0000000000000001-0000000000000001.ltx";
const K2: &str = "ltx/0/0000000000000002-0000000000000002.ltx";
const K3: &str = "ltx/1/0000000000000001-0000000000000002.ltx";
const K4: &str = "ltx/9/0000000000000001-0000000000000002.ltx";
const K5: &str = "snap/big.bin";

fn big_payload() -> Vec<u8> {
    // 3 MiB + a bit, not a multiple of any chunk size, not compressible to nothing.
    (0..(3 * 1024 * 1024 + 4321u32))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn keys(list: &[walvault::storage::ObjectInfo]) -> Vec<&str> {
    list.iter().map(|o| o.key.as_str()).collect()
}

/// The behaviour every backend must share.
async fn exercise(store: &Store, scratch: &Path) {
    store.check().await.expect("check on an empty store");
    assert!(store.list("").await.unwrap().is_empty());
    assert!(store.list_dirs("").await.unwrap().is_empty());

    let meta = [(METADATA_TIMESTAMP, TS.to_string())];
    store
        .put(K1, PutBody::Bytes(b"hello world"), &meta, true)
        .await
        .expect("put K1");
    store
        .put(K2, PutBody::Bytes(b"second"), &[], false)
        .await
        .unwrap();
    store.put(K3, PutBody::Bytes(b""), &[], true).await.unwrap();
    store
        .put(K4, PutBody::Bytes(b"nine"), &meta, false)
        .await
        .unwrap();
    let big = big_payload();
    let src = scratch.join("upload.bin");
    std::fs::write(&src, &big).unwrap();
    store
        .put(K5, PutBody::File(&src), &meta, true)
        .await
        .expect("put from file");

    // get / get_range
    assert_eq!(store.get(K1).await.unwrap(), b"hello world");
    assert_eq!(store.get(K3).await.unwrap(), b"");
    assert_eq!(store.get(K5).await.unwrap(), big);
    assert_eq!(store.get_range(K1, 6, 5).await.unwrap(), b"world");
    assert_eq!(store.get_range(K1, 0, 5).await.unwrap(), b"hello");
    assert_eq!(
        store.get_range(K1, 6, 100).await.unwrap(),
        b"world",
        "short read at EOF"
    );
    assert_eq!(
        store.get_range(K1, 11, 5).await.unwrap(),
        b"",
        "offset == size"
    );
    assert_eq!(
        store.get_range(K1, 500, 5).await.unwrap(),
        b"",
        "offset past EOF"
    );
    assert_eq!(store.get_range(K1, 3, 0).await.unwrap(), b"", "zero length");
    assert_eq!(
        store.get_range(K5, 1_000_000, 70_000).await.unwrap(),
        &big[1_000_000..1_070_000]
    );

    // get_to_file streams the whole object
    let dest = scratch.join("download.bin");
    assert_eq!(
        store.get_to_file(K5, &dest).await.unwrap(),
        big.len() as u64
    );
    assert_eq!(std::fs::read(&dest).unwrap(), big);
    let dest_small = scratch.join("small.bin");
    std::fs::write(&dest_small, b"previous longer content").unwrap();
    assert_eq!(store.get_to_file(K1, &dest_small).await.unwrap(), 11);
    assert_eq!(
        std::fs::read(&dest_small).unwrap(),
        b"hello world",
        "dest is truncated"
    );

    // head / metadata
    let h = store.head(K1).await.unwrap().expect("head K1");
    assert_eq!((h.key.as_str(), h.size), (K1, 11));
    assert!(h.last_modified_ms.is_some());
    assert_eq!(
        store.head(K5).await.unwrap().unwrap().size,
        big.len() as u64
    );
    assert!(store.head("ltx/0/missing.ltx").await.unwrap().is_none());
    let md = store.metadata(K1).await.unwrap().expect("metadata K1");
    assert_eq!(
        md.get(METADATA_TIMESTAMP).map(String::as_str),
        Some(TS),
        "{md:?}"
    );
    assert!(store.metadata("nope").await.unwrap().is_none());

    // list: all pages, sorted, relative keys, string-prefix semantics
    let all = store.list("").await.unwrap();
    assert_eq!(keys(&all), vec![K1, K2, K3, K4, K5]);
    assert_eq!(all[0].size, 11);
    assert_eq!(all[4].size, big.len() as u64);
    assert_eq!(keys(&store.list("ltx/0/").await.unwrap()), vec![K1, K2]);
    assert_eq!(keys(&store.list("ltx/0").await.unwrap()), vec![K1, K2]);
    assert_eq!(
        keys(&store.list("ltx/0/0000000000000002").await.unwrap()),
        vec![K2],
        "partial last segment"
    );
    assert_eq!(keys(&store.list("lt").await.unwrap()), vec![K1, K2, K3, K4]);
    assert!(store.list("nope/").await.unwrap().is_empty());
    assert!(store.list("ltx/0/1").await.unwrap().is_empty());

    // list_dirs: immediate children, names only, sorted
    assert_eq!(store.list_dirs("").await.unwrap(), vec!["ltx", "snap"]);
    assert_eq!(store.list_dirs("ltx").await.unwrap(), vec!["0", "1", "9"]);
    assert_eq!(store.list_dirs("ltx/").await.unwrap(), vec!["0", "1", "9"]);
    assert!(store.list_dirs("ltx/0").await.unwrap().is_empty());
    assert!(store.list_dirs("missing").await.unwrap().is_empty());

    // Conditional put on an existing key: AlreadyExists, original untouched.
    match store.put(K1, PutBody::Bytes(b"OVERWRITE"), &[], true).await {
        Err(StoreError::AlreadyExists(k)) => assert_eq!(k, K1),
        other => panic!("if_none_match on an existing key: expected AlreadyExists, got {other:?}"),
    }
    match store.put(K5, PutBody::File(&src), &[], true).await {
        Err(StoreError::AlreadyExists(_)) => {}
        other => panic!("if_none_match (file body) on an existing key: got {other:?}"),
    }
    assert_eq!(store.get(K1).await.unwrap(), b"hello world");
    // An unconditional put overwrites.
    store
        .put(K2, PutBody::Bytes(b"second v2"), &[], false)
        .await
        .unwrap();
    assert_eq!(store.get(K2).await.unwrap(), b"second v2");

    // Missing objects.
    match store.get("ltx/0/missing.ltx").await {
        Err(StoreError::NotFound(k)) => assert_eq!(k, "ltx/0/missing.ltx"),
        other => panic!("get missing: expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store.get_range("missing", 0, 10).await,
        Err(StoreError::NotFound(_))
    ));
    let never = scratch.join("never.bin");
    assert!(matches!(
        store.get_to_file("missing", &never).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!never.exists(), "no destination file for a missing object");

    // Invalid keys are rejected the same way by every backend.
    for bad in ["/abs", "a/../b", "a//b", "", "x/.tmp-123"] {
        assert!(
            matches!(
                store.put(bad, PutBody::Bytes(b"x"), &[], false).await,
                Err(StoreError::Permanent(_))
            ),
            "key {bad:?} must be rejected"
        );
    }

    // delete: batch, missing keys tolerated
    store
        .delete(&[
            K2.to_string(),
            K4.to_string(),
            "ltx/0/never-existed.ltx".to_string(),
        ])
        .await
        .unwrap();
    store.delete(&[]).await.unwrap();
    assert_eq!(keys(&store.list("").await.unwrap()), vec![K1, K3, K5]);
    assert!(matches!(store.get(K2).await, Err(StoreError::NotFound(_))));
    assert_eq!(
        store.list_dirs("ltx").await.unwrap(),
        vec!["0", "1"],
        "emptied dir disappears"
    );
    store.check().await.expect("check on a populated store");
}

// ---------------------------------------------------------------- file backend

async fn file_store(root: &Path) -> Store {
    let url = ReplicaUrl::parse(&format!("file://{}", root.display())).unwrap();
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.layout(), Layout::File);
    store
}

fn temp_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            found.extend(temp_files_under(&p));
        } else if p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp-")
        {
            found.push(p);
        }
    }
    found
}

#[tokio::test]
async fn file_backend_shared_behaviour() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("replica/nested"); // created on demand
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let store = file_store(&root).await;
    exercise(&store, &scratch).await;
    assert!(root.join(K1).is_file(), "keys map to paths under the root");
    assert!(
        temp_files_under(&root).is_empty(),
        "no temp files left behind"
    );
}

#[tokio::test]
async fn file_backend_mtime_from_litestream_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let store = file_store(tmp.path()).await;
    let meta = [
        (METADATA_TIMESTAMP, TS.to_string()),
        ("other", "ignored".to_string()),
    ];
    store
        .put(K1, PutBody::Bytes(b"x"), &meta, false)
        .await
        .unwrap();
    let mtime = std::fs::metadata(tmp.path().join(K1))
        .unwrap()
        .modified()
        .unwrap();
    let ms = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(ms, TS_MS);
    assert_eq!(
        store.head(K1).await.unwrap().unwrap().last_modified_ms,
        Some(TS_MS)
    );
    assert_eq!(
        store.list("").await.unwrap()[0].last_modified_ms,
        Some(TS_MS)
    );
    // The timestamp lives in the mtime; other metadata in a sidecar outside the listing.
    let md = store.metadata(K1).await.unwrap().unwrap();
    assert_eq!(md.len(), 2);
    assert_eq!(md[METADATA_TIMESTAMP], TS);
    assert_eq!(md["other"], "ignored");
    assert_eq!(
        store.list("").await.unwrap().len(),
        1,
        "sidecars are not objects"
    );
    assert!(
        store
            .list_dirs("")
            .await
            .unwrap()
            .iter()
            .all(|d| !d.starts_with('.'))
    );
    // A refused conditional put leaves the existing object's metadata alone.
    let other = [("other", "changed".to_string())];
    assert!(matches!(
        store.put(K1, PutBody::Bytes(b"z"), &other, true).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        store.metadata(K1).await.unwrap().unwrap()["other"],
        "ignored"
    );
    // Deleting the object deletes its metadata.
    store.delete(&[K1.to_string()]).await.unwrap();
    assert_eq!(store.metadata(K1).await.unwrap(), None);
    store
        .put(
            K1,
            PutBody::Bytes(b"x"),
            &[(METADATA_TIMESTAMP, TS.to_string())],
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        store.metadata(K1).await.unwrap().unwrap().len(),
        1,
        "no stale sidecar after delete"
    );

    // The conditional path (hard link) keeps the mtime too.
    store
        .put(K2, PutBody::Bytes(b"y"), &meta, true)
        .await
        .unwrap();
    assert_eq!(
        store.head(K2).await.unwrap().unwrap().last_modified_ms,
        Some(TS_MS)
    );

    // A malformed timestamp is a caller bug: refuse, write nothing.
    let bad = [(METADATA_TIMESTAMP, "yesterday".to_string())];
    assert!(matches!(
        store.put(K3, PutBody::Bytes(b"z"), &bad, false).await,
        Err(StoreError::Permanent(_))
    ));
    assert!(store.head(K3).await.unwrap().is_none());
}

#[tokio::test]
async fn file_backend_list_skips_temp_files_and_check_creates_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("does/not/exist/yet");
    let store = file_store(&root).await;
    store.check().await.unwrap();
    assert!(root.is_dir());
    store
        .put(K1, PutBody::Bytes(b"a"), &[], false)
        .await
        .unwrap();
    std::fs::write(root.join("ltx/0/.tmp-stray"), b"partial upload").unwrap();
    std::fs::create_dir_all(root.join("empty/dir")).unwrap();
    assert_eq!(keys(&store.list("").await.unwrap()), vec![K1]);
    assert_eq!(
        store.list_dirs("").await.unwrap(),
        vec!["ltx"],
        "empty dirs are not reported"
    );

    // A root that is a regular file is a permanent misconfiguration.
    let file_root = tmp.path().join("plainfile");
    std::fs::write(&file_root, b"").unwrap();
    let bad = file_store(&file_root).await;
    assert!(matches!(bad.check().await, Err(StoreError::Permanent(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_backend_conditional_put_race_has_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(file_store(tmp.path()).await);
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![i; 4096];
            store
                .put(K1, PutBody::Bytes(&body), &[], true)
                .await
                .map(|()| i)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("unexpected error in race: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one conditional put wins");
    assert_eq!(store.get(K1).await.unwrap(), vec![winners[0]; 4096]);
    assert!(temp_files_under(tmp.path()).is_empty());
}

// ------------------------------------------------------------------ S3 (moto)

async fn s3_store(endpoint: &str, bucket: &str, prefix: &str) -> Store {
    set_test_aws_env();
    let url = ReplicaUrl::S3 {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    };
    let opts = StoreOptions {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".to_string()),
        force_path_style: None,
    };
    let store = Store::open(&url, &opts).await.unwrap();
    assert_eq!(store.layout(), Layout::S3);
    store
}

#[tokio::test]
async fn s3_backend_shared_behaviour_on_moto() {
    set_test_aws_env();
    let Some(server) = S3Server::start() else {
        return;
    };
    server.create_bucket("walvault-test");
    let scratch = tempfile::tempdir().unwrap();

    // Under a prefix …
    let store = s3_store(&server.endpoint, "walvault-test", "team/app.db").await;
    // … with a sibling prefix that must stay invisible to it.
    let sibling = s3_store(&server.endpoint, "walvault-test", "team/app.db-other").await;
    sibling
        .put("ltx/0/x.ltx", PutBody::Bytes(b"sib"), &[], false)
        .await
        .unwrap();

    exercise(&store, scratch.path()).await;

    // The prefix is really applied: a root-level store sees full keys.
    let root = s3_store(&server.endpoint, "walvault-test", "").await;
    let all = keys(&root.list("").await.unwrap())
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    assert!(all.contains(&format!("team/app.db/{K1}")), "{all:?}");
    assert!(
        all.contains(&"team/app.db-other/ltx/0/x.ltx".to_string()),
        "{all:?}"
    );
    assert_eq!(
        root.list_dirs("team").await.unwrap(),
        vec!["app.db", "app.db-other"]
    );

    // And exercise() on the bucket root works as well.
    server.create_bucket("walvault-root");
    let at_root = s3_store(&server.endpoint, "walvault-root", "").await;
    exercise(&at_root, scratch.path()).await;
}

/// moto 5.2.1 implements `If-None-Match: *` on PutObject (responses.py: it
/// raises `PreconditionFailed`, HTTP 412, when the key exists). This test pins
/// that down at the HTTP level so a moto change that silently ignores the
/// header fails loudly here instead of weakening `exercise()`.
#[tokio::test]
async fn s3_moto_honours_if_none_match_and_stores_metadata_headers() {
    set_test_aws_env();
    let Some(server) = S3Server::start() else {
        return;
    };
    server.create_bucket("meta");
    let store = s3_store(&server.endpoint, "meta", "db").await;
    let meta = [
        (METADATA_TIMESTAMP, TS.to_string()),
        ("Walvault-Extra", "1".to_string()),
    ];
    store
        .put(K1, PutBody::Bytes(b"v1"), &meta, true)
        .await
        .unwrap();

    // Raw HEAD: the metadata travels as x-amz-meta-* headers.
    let head = server.raw_request("HEAD", &format!("/meta/db/{K1}"));
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("x-amz-meta-litestream-timestamp"),
        Some(TS),
        "{:?}",
        head.headers
    );
    assert_eq!(head.header("x-amz-meta-walvault-extra"), Some("1"));
    // And through the Store API (keys lower-cased, without the prefix).
    let md = store.metadata(K1).await.unwrap().unwrap();
    assert_eq!(md.get(METADATA_TIMESTAMP).map(String::as_str), Some(TS));
    assert_eq!(md.get("walvault-extra").map(String::as_str), Some("1"));

    // The conditional put is rejected by moto (HTTP 412) and the object is unchanged.
    match store.put(K1, PutBody::Bytes(b"v2"), &[], true).await {
        Err(StoreError::AlreadyExists(_)) => {}
        other => panic!(
            "moto did not reject If-None-Match:* on an existing key (got {other:?}); \
             this moto version ignores conditional writes: use a server that supports them (e.g. s3s-fs)"
        ),
    }
    assert_eq!(store.get(K1).await.unwrap(), b"v1");
    assert_eq!(
        store.metadata(K1).await.unwrap().unwrap()[METADATA_TIMESTAMP],
        TS
    );
}

#[tokio::test]
async fn s3_missing_bucket_is_permanent_and_says_so() {
    set_test_aws_env();
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = s3_store(&server.endpoint, "no-such-bucket", "p").await;
    for (what, res) in [
        ("check", store.check().await),
        ("put", store.put(K1, PutBody::Bytes(b"x"), &[], true).await),
        ("get", store.get(K1).await.map(|_| ())),
        ("list", store.list("").await.map(|_| ())),
        ("list_dirs", store.list_dirs("").await.map(|_| ())),
    ] {
        match res {
            Err(StoreError::Permanent(msg)) => {
                assert!(msg.contains("does not exist"), "{what}: {msg}");
                assert!(msg.contains("no-such-bucket"), "{what}: {msg}");
            }
            other => panic!("{what} on a missing bucket: expected Permanent, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn s3_closed_port_is_transient_cannot_reach() {
    let port = free_port(); // nothing listens here any more
    let store = s3_store(&format!("http://127.0.0.1:{port}"), "bkt", "p").await;
    let get = store.get(K1).await;
    match &get {
        Err(StoreError::Transient(msg)) => {
            assert!(msg.contains("cannot reach"), "{msg}");
            assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        }
        other => panic!("GET to a closed port: expected Transient, got {other:?}"),
    }
    // Refused before sending: a PUT is not ambiguous either.
    match store.put(K1, PutBody::Bytes(b"x"), &[], true).await {
        Err(StoreError::Transient(msg)) => assert!(msg.contains("cannot reach"), "{msg}"),
        other => panic!("PUT to a closed port: expected Transient, got {other:?}"),
    }
    assert!(matches!(store.check().await, Err(StoreError::Transient(_))));
    assert!(matches!(
        store.list("").await,
        Err(StoreError::Transient(_))
    ));
}

// ------------------------------------------------- scripted fake S3 endpoint

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

// ------------------------------------------------------------------ URL parsing

#[test]
fn replica_url_parsing() {
    assert_eq!(
        ReplicaUrl::parse("file:///var/lib/backups/app").unwrap(),
        ReplicaUrl::File {
            root: PathBuf::from("/var/lib/backups/app")
        }
    );
    assert_eq!(
        ReplicaUrl::parse("file:///var/lib/backups/app/").unwrap(),
        ReplicaUrl::File {
            root: PathBuf::from("/var/lib/backups/app")
        }
    );
    assert_eq!(
        ReplicaUrl::parse("s3://my-bucket").unwrap(),
        ReplicaUrl::S3 {
            bucket: "my-bucket".into(),
            prefix: String::new()
        }
    );
    assert_eq!(
        ReplicaUrl::parse("s3://my-bucket/").unwrap(),
        ReplicaUrl::S3 {
            bucket: "my-bucket".into(),
            prefix: String::new()
        }
    );
    assert_eq!(
        ReplicaUrl::parse("s3://my-bucket//db/app.db/").unwrap(),
        ReplicaUrl::S3 {
            bucket: "my-bucket".into(),
            prefix: "db/app.db".into()
        }
    );
    assert_eq!(
        ReplicaUrl::parse("S3://b.example/x").unwrap().to_string(),
        "s3://b.example/x"
    );
    assert_eq!(
        ReplicaUrl::parse("s3://bkt/a/b").unwrap().to_string(),
        "s3://bkt/a/b"
    );
    assert_eq!(
        ReplicaUrl::parse("s3://bkt").unwrap().to_string(),
        "s3://bkt"
    );
    assert_eq!(
        ReplicaUrl::parse("file:///a/b").unwrap().to_string(),
        "file:///a/b"
    );
    assert!(ReplicaUrl::parse("s3://bkt/a").unwrap().is_s3());

    for (bad, needle) in [
        ("", "file:///path/to/dir"),
        (
            "gs://bucket/x",
            "use file:///path/to/dir or s3://bucket/prefix",
        ),
        ("ftp://host/x", "unsupported"),
        ("bucket/prefix", "unsupported replica URL 'bucket/prefix'"),
        ("/var/backups", "file:///var/backups"),
        ("file://relative/dir", "absolute path"),
        ("file:///", "root"),
        ("file:///a/../b", ".."),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("s3://b/x", "bucket names"),
        ("s3://bad bucket/x", "bucket names"),
        ("s3://bkt/a/../b", ".."),
        ("s3://bkt/a//b", "//"),
        ("s3://bkt/x?endpoint=http://localhost:9000", "--endpoint"),
    ] {
        let err = ReplicaUrl::parse(bad).expect_err(bad).to_string();
        assert!(err.contains(needle), "{bad:?}: {err}");
        assert!(!err.contains('\n'), "{bad:?}: one-line error: {err}");
    }
}

#[test]
fn timestamp_helpers_are_public_and_consistent() {
    assert_eq!(parse_timestamp_ms(TS), Some(TS_MS));
    assert_eq!(format_timestamp_ms(TS_MS), TS);
}

/// Files above the multipart threshold go up in parts and come back byte for byte,
/// with their metadata; a conditional completion on an existing key is refused and
/// leaves the original in place.
#[tokio::test]
async fn s3_large_upload_goes_multipart_and_round_trips() {
    set_test_aws_env();
    let Some(server) = S3Server::start() else {
        return;
    };
    server.create_bucket("large");
    let store = s3_store(&server.endpoint, "large", "db").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.ltx");
    // 72 MiB + a ragged tail: more than one part, last part short.
    let len = 72 * 1024 * 1024 + 12_345;
    let body: Vec<u8> = (0..len)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &body).unwrap();
    let meta = [(METADATA_TIMESTAMP, TS.to_string())];
    store
        .put(K1, PutBody::File(&path), &meta, true)
        .await
        .unwrap();
    let back = dir.path().join("back.ltx");
    assert_eq!(store.get_to_file(K1, &back).await.unwrap(), len as u64);
    assert!(
        std::fs::read(&back).unwrap() == body,
        "multipart round trip changed the bytes"
    );
    assert_eq!(
        store.metadata(K1).await.unwrap().unwrap()[METADATA_TIMESTAMP],
        TS
    );

    let other = dir.path().join("other.ltx");
    std::fs::write(&other, vec![7u8; len]).unwrap();
    match store.put(K1, PutBody::File(&other), &[], true).await {
        Err(StoreError::AlreadyExists(_)) => {}
        r => panic!(
            "a conditional multipart completion over an existing key must be refused, got {r:?}"
        ),
    }
    assert_eq!(store.head(K1).await.unwrap().unwrap().size, len as u64);
    assert!(
        store.get(K1).await.unwrap() == body,
        "the original object must be unchanged"
    );
}

/// An object becomes visible only with its metadata sidecar already in place: a reader
/// (or a SIGKILL) between the two steps of a put never finds a listed object without its
/// digests. Before the sidecar was published first, a concurrent lister saw such objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_object_never_visible_without_its_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(file_store(tmp.path()).await);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200u64 {
                let key = format!("db/ltx/0/{i:016x}-{i:016x}.ltx");
                let meta = [("walvault-sha256", format!("{i:064x}"))];
                store
                    .put(&key, PutBody::Bytes(b"ltx"), &meta, true)
                    .await
                    .unwrap();
            }
        })
    };
    let mut checked = 0usize;
    while !writer.is_finished() {
        for obj in store.list("db/ltx/0").await.unwrap() {
            let md = store.metadata(&obj.key).await.unwrap().unwrap();
            assert!(
                md.contains_key("walvault-sha256"),
                "{} is listed without its metadata: {md:?}",
                obj.key
            );
            checked += 1;
        }
    }
    writer.await.unwrap();
    assert_eq!(store.list("db/ltx/0").await.unwrap().len(), 200);
    assert!(checked > 0, "the reader saw objects while the writer ran");
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
