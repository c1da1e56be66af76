//! The S3 backend against a real S3-compatible server (moto_server): the shared
//! behaviour, conditional puts and metadata, a missing bucket, a closed port, multipart.

use super::*;

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
    assert_eq!(store.get_to_file(K1, &back).await.unwrap().len, len as u64);
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
