//! Storage-layer integration tests: one shared body runs against the `file://`
//! backend and against a real S3-compatible server (moto_server), plus
//! backend-specific checks (mtime from `litestream-timestamp`, S3 metadata
//! headers, error classification against a missing bucket, a closed port and a
//! scripted fake server).

mod support;

#[path = "storage_backends/fake_s3.rs"]
mod fake_s3;
#[path = "storage_backends/file.rs"]
mod file;
#[path = "storage_backends/s3_moto.rs"]
mod s3_moto;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::s3_server::{S3Server, free_port, set_test_aws_env};
use walvault::storage::{
    Layout, METADATA_SHA256, METADATA_TIMESTAMP, PutBody, ReplicaUrl, Store, StoreError,
    StoreOptions, format_timestamp_ms, parse_timestamp_ms,
};

const TS: &str = "2024-01-02T03:04:05.678Z";
const TS_MS: i64 = 1_704_164_645_678;
const SHA: &str = "9a4e1bd0c3d5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";
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

    let meta = [
        (METADATA_TIMESTAMP, TS.to_string()),
        (METADATA_SHA256, SHA.to_string()),
    ];
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
    let got = store.get_to_file(K5, &dest).await.unwrap();
    assert_eq!(got.len, big.len() as u64);
    assert_eq!(
        got.metadata.get(METADATA_SHA256).map(String::as_str),
        Some(SHA)
    );
    let without = scratch.join("without.bin");
    let got = store.get_to_file(K2, &without).await.unwrap();
    assert_eq!(got.len, 6);
    assert!(
        !got.metadata.contains_key(METADATA_SHA256),
        "K2 was put without metadata: {:?}",
        got.metadata
    );
    assert_eq!(std::fs::read(&dest).unwrap(), big);
    let dest_small = scratch.join("small.bin");
    std::fs::write(&dest_small, b"previous longer content").unwrap();
    // The metadata comes with the bytes: restore checks digests without a HEAD.
    let got = store.get_to_file(K1, &dest_small).await.unwrap();
    assert_eq!(got.len, 11);
    assert_eq!(
        got.metadata.get(METADATA_SHA256).map(String::as_str),
        Some(SHA),
        "{:?}",
        got.metadata
    );
    assert_eq!(
        got.metadata.get(METADATA_TIMESTAMP).map(String::as_str),
        Some(TS),
        "{:?}",
        got.metadata
    );
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
    assert_eq!(
        md.get(METADATA_SHA256).map(String::as_str),
        Some(SHA),
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
