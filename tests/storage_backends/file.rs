//! The `file://` backend: the shared behaviour, mtime as the Litestream timestamp,
//! metadata sidecars, temp files, conditional puts.

use super::*;

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
