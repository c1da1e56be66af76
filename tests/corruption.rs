//! Corruption tests: a real backup (walvault watch + walvault snapshot, plus
//! Litestream-style compacted level-1 files and L0 retention) is damaged object by
//! object, at every level, on a real S3-compatible server (moto) and on `file://`.
//!
//! For every damage:
//! - `walvault restore` fails with a message naming the object, and leaves the disk as
//!   it was: an existing output (with `--force`) keeps its bytes, a new output path is
//!   not created, and no temporary file is left in the directory;
//! - where the error is a checksum or digest mismatch, it names the expected and the
//!   actual value;
//! - `walvault verify` exits 1 and names the object, in the mode the table below says
//!   catches it (`--full` always does, as it reads everything the default mode reads).
//!
//! | damage | how | caught by default `verify` through |
//! | --- | --- | --- |
//! | flip header TXID | byte 27 (max TXID) | header does not match the key |
//! | flip header time | byte 39 (timestamp) | header time differs from `litestream-timestamp` |
//! | flip page data | a byte of the first page's LZ4 block | - (`--full`: file checksum, SHA-256) |
//! | flip trailer | last byte (file checksum) | - (`--full`: file checksum, SHA-256) |
//! | truncate | keep the first 2/3 | index and trailer do not fit the object |
//! | delete | remove the object | TXIDs in no file (a gap) |
//! | reorder | swap two objects' contents (same level) | header does not match the key |
//! | replace | another valid LTX file under the key (one page differs), uploaded the way another writer would (only `litestream-timestamp`) | S3, level 0: the next file's hash link points at an object without walvault's digest; otherwise `--full` only (`file://`: the stale sidecar still carries the old digest; compactions and S3 snapshots: the database checksum, see below) |
//!
//! A compacted file written by Litestream carries no digest and no hash link points at
//! a compaction, and on S3 a replaced snapshot looks like a Litestream snapshot: the
//! default `verify` cannot tell such a replacement, but `verify --full` and restore do,
//! because walvault records the database checksum of the state after each of its files
//! and both compare the state the restore plan builds with that of the plan's newest
//! file (the report lists the plan's files without walvault's digest as the suspects).
//!
//! The backup: L0 files 1.. and an older snapshot L9 1..n1, the newest snapshot L9
//! 1..n2, two L1 files after it built from the L0 files they cover (as Litestream's
//! compaction does), and the remaining L0 tail. L0 files covered by a snapshot or an
//! L1 file are deleted (Litestream's retention), so every file of the restore plan is
//! needed: deleting any of them loses TXIDs.

mod e2e_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e_support::*;
use support::s3_server::{S3Server, set_test_aws_env};
use walvault::storage::{PutBody, ReplicaUrl, Store, StoreOptions};
use walvault_engine::keys::FileId;
use walvault_engine::ltx::{self, Encoder, Header};

type Env = Vec<(&'static str, String)>;
type Meta = BTreeMap<String, String>;

const NAME: &str = "vault";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    FlipHeaderTxid,
    FlipHeaderTime,
    FlipPage,
    FlipTrailer,
    Truncate,
    Delete,
    Reorder,
    Replace,
}

const DAMAGES: [Damage; 8] = [
    Damage::FlipHeaderTxid,
    Damage::FlipHeaderTime,
    Damage::FlipPage,
    Damage::FlipTrailer,
    Damage::Truncate,
    Damage::Delete,
    Damage::Reorder,
    Damage::Replace,
];

/// The objects damaged at one level: the victim, and the object it swaps contents
/// with for [`Damage::Reorder`].
struct Target {
    label: &'static str,
    victim: FileId,
    partner: FileId,
    /// Written by walvault (carries `walvault-sha256`).
    walvault: bool,
}

struct Rig {
    url: String,
    env: Env,
    s3: bool,
    rt: tokio::runtime::Runtime,
    store: Store,
    work: tempfile::TempDir,
    source: PathBuf,
    /// Every object of the finished backup: bytes and metadata.
    pristine: BTreeMap<FileId, (Vec<u8>, Meta)>,
}

impl Rig {
    fn new(url: String, env: Env, endpoint: Option<String>, work: tempfile::TempDir) -> Rig {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(async {
            let opts = StoreOptions {
                endpoint,
                ..Default::default()
            };
            Store::open(&ReplicaUrl::parse(&url).unwrap(), &opts)
                .await
                .unwrap()
        });
        let source = work.path().join(format!("{NAME}.db"));
        Rig {
            s3: url.starts_with("s3://"),
            url,
            env,
            rt,
            store,
            source,
            work,
            pristine: BTreeMap::new(),
        }
    }

    fn key(&self, id: FileId) -> String {
        walvault::remote::key(&self.store, NAME, id)
    }

    fn ids(&self) -> Vec<FileId> {
        self.rt
            .block_on(walvault::remote::list_files(&self.store, NAME))
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    }

    fn get(&self, id: FileId) -> (Vec<u8>, Meta) {
        let k = self.key(id);
        self.rt.block_on(async {
            let bytes = self.store.get(&k).await.unwrap();
            let meta = self.store.metadata(&k).await.unwrap().unwrap();
            (bytes, meta)
        })
    }

    fn put(&self, id: FileId, bytes: &[u8], meta: &Meta) {
        let k = self.key(id);
        let meta: Vec<(&str, String)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        self.rt
            .block_on(self.store.put(&k, PutBody::Bytes(bytes), &meta, false))
            .unwrap();
    }

    fn delete(&self, id: FileId) {
        self.rt
            .block_on(self.store.delete(&[self.key(id)]))
            .unwrap();
    }

    /// Puts every object back as it was.
    fn heal(&self, ids: &[FileId]) {
        for id in ids {
            let (bytes, meta) = &self.pristine[id];
            self.put(*id, bytes, meta);
        }
    }

    fn walvault(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Work in short rounds so that each round ends up in its own level-0 file(s).
fn rounds(work: &mut Workload, n: usize) {
    for _ in 0..n {
        work.run(15, None);
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// A Litestream-style compaction of consecutive files into one level-1 file: newest
/// page wins, pages above the final commit dropped, WAL fields zero, the newest
/// input's timestamp.
fn compact(inputs: &[Vec<u8>]) -> (Vec<u8>, Header) {
    let mut pages: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut first: Option<Header> = None;
    let mut last = Header::default();
    for bytes in inputs {
        let (h, ps, _) = ltx::decode_all(bytes).unwrap();
        first.get_or_insert(h);
        for (pgno, data) in ps {
            pages.insert(pgno, data);
        }
        last = h;
    }
    let first = first.unwrap();
    let header = Header {
        flags: ltx::FLAG_NO_CHECKSUM,
        page_size: last.page_size,
        commit: last.commit,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        ..Header::default()
    };
    (encode(&header, pages.range(..=last.commit)), header)
}

fn encode<'a>(header: &Header, pages: impl Iterator<Item = (&'a u32, &'a Vec<u8>)>) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), header).unwrap();
    for (pgno, data) in pages {
        enc.write_page(*pgno, data).unwrap();
    }
    enc.finish(0).unwrap().0
}

/// Another valid LTX file with the same header: the last byte of its highest page differs.
fn replacement(original: &[u8]) -> Vec<u8> {
    let (h, pages, _) = ltx::decode_all(original).unwrap();
    let mut pages: BTreeMap<u32, Vec<u8>> = pages.into_iter().collect();
    let (_, last) = pages.iter_mut().next_back().unwrap();
    *last.last_mut().unwrap() ^= 0x01;
    let out = encode(&h, pages.iter());
    assert_ne!(out, original);
    out
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    b
}

/// Builds the backup described in the module docs and records it in `rig.pristine`.
/// Returns the targets (one per level).
fn build_backup(rig: &mut Rig) -> Vec<Target> {
    create_db(&rig.source);
    let log = rig.work.path().join("watch.log");
    let db = rig.source.clone();
    let mut work = Workload::open(&db, 11);
    let snapshot = |rig: &Rig| {
        let o = rig
            .walvault(&["snapshot", db.to_str().unwrap(), "-b", &rig.url])
            .output()
            .unwrap();
        assert!(o.status.success(), "walvault snapshot: {}", text(&o));
    };
    for n in [3, 3, 10] {
        let w = Watcher::start(&[&db], &rig.url, &rig.env, &log);
        rounds(&mut work, n);
        w.stop();
        if n == 3 {
            snapshot(rig);
        }
    }
    drop(work);

    let ids = rig.ids();
    let mut snaps: Vec<FileId> = ids.iter().filter(|id| id.level == 9).copied().collect();
    snaps.sort_by_key(|id| id.max_txid);
    assert_eq!(snaps.len(), 2, "two snapshots: {ids:?}");
    let n2 = snaps[1].max_txid;
    let tail: Vec<FileId> = ids
        .iter()
        .filter(|id| id.level == 0 && id.min_txid > n2)
        .copied()
        .collect();
    assert!(
        tail.len() >= 8,
        "too few level-0 files after the snapshot: {ids:?}"
    );
    // Two compactions of two L0 files each, then retention of every covered L0 file.
    let mut l1 = Vec::new();
    for pair in [&tail[0..2], &tail[2..4]] {
        let inputs: Vec<Vec<u8>> = pair.iter().map(|id| rig.get(*id).0).collect();
        let (bytes, h) = compact(&inputs);
        let id = FileId {
            level: 1,
            min_txid: h.min_txid,
            max_txid: h.max_txid,
        };
        let meta: Meta = [(
            walvault::storage::METADATA_TIMESTAMP.to_string(),
            walvault::storage::format_timestamp_ms(h.timestamp_ms),
        )]
        .into();
        rig.put(id, &bytes, &meta);
        l1.push(id);
    }
    let covered = l1[1].max_txid;
    for id in &ids {
        if id.level == 0 && id.max_txid <= covered {
            rig.delete(*id);
        }
    }
    for id in rig.ids() {
        let got = rig.get(id);
        rig.pristine.insert(id, got);
    }
    let tail = &tail[4..];
    vec![
        Target {
            label: "L0",
            victim: tail[1],
            partner: tail[2],
            walvault: true,
        },
        Target {
            label: "L1",
            victim: l1[0],
            partner: l1[1],
            walvault: false,
        },
        Target {
            label: "L9",
            victim: snaps[1],
            partner: snaps[0],
            walvault: true,
        },
    ]
}

#[path = "corruption/cases.rs"]
mod cases;
use cases::run_cases;

#[test]
fn corruption_s3() {
    let started = Instant::now();
    let Some(server) = S3Server::start() else {
        return;
    };
    set_test_aws_env();
    server.create_bucket("corrupt");
    let mut rig = Rig::new(
        "s3://corrupt/backups".into(),
        server.env_vars(),
        Some(server.endpoint.clone()),
        tempfile::tempdir().unwrap(),
    );
    let targets = build_backup(&mut rig);
    eprintln!("S3 backup built in {:?}", started.elapsed());
    run_cases(&rig, &targets);
    eprintln!("S3 corruption cases done in {:?}", started.elapsed());
}

#[test]
fn corruption_file() {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let url = format!("file://{}", work.path().join("replica").display());
    let mut rig = Rig::new(url, Vec::new(), None, work);
    let targets = build_backup(&mut rig);
    eprintln!("file:// backup built in {:?}", started.elapsed());
    run_cases(&rig, &targets);
    eprintln!("file:// corruption cases done in {:?}", started.elapsed());
}

#[test]
fn verify_cannot_verify_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("empty").display());
    for args in [
        vec!["verify", NAME, "-b", url.as_str()],
        vec!["verify", NAME, "-b", url.as_str(), "--json"],
        vec!["verify", NAME, "-b", "ftp://nowhere"],
    ] {
        let o = run(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
    let o = run(&["verify", NAME, "-b", url.as_str(), "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("no backup"), "{v}");
    // An unreachable S3 endpoint: cannot verify, not "problems found".
    let port = support::s3_server::free_port();
    let env: Env = vec![
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{port}")),
    ];
    let o = run(&["verify", NAME, "-b", "s3://nobucket/x"], &env);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// A damaged metadata sidecar is a problem in the backup (exit 1); a backup without a
/// snapshot cannot be verified (exit 2), and the report still lists what was found.
#[test]
fn verify_sidecar_damage_and_missing_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("replica");
    let url = format!("file://{}", root.display());
    let rig = Rig::new(url.clone(), Vec::new(), None, tempfile::tempdir().unwrap());
    let file = |min: u64, pages: &[u32]| {
        let header = Header {
            flags: ltx::FLAG_NO_CHECKSUM,
            page_size: 512,
            commit: 2,
            min_txid: min,
            max_txid: min,
            timestamp_ms: 1_700_000_000_000 + min as i64,
            ..Header::default()
        };
        let pages: BTreeMap<u32, Vec<u8>> =
            pages.iter().map(|&p| (p, vec![p as u8; 512])).collect();
        (
            FileId {
                level: 0,
                min_txid: min,
                max_txid: min,
            },
            encode(&header, pages.iter()),
            header,
        )
    };
    let mut prev: Option<String> = None;
    let mut ids = Vec::new();
    for (min, pages) in [(1, &[1u32, 2][..]), (2, &[2][..]), (3, &[1][..])] {
        let (id, bytes, h) = file(min, pages);
        let sha = walvault::integrity::sha256_hex(&bytes);
        let mut meta: Meta = [
            (
                walvault::storage::METADATA_TIMESTAMP.to_string(),
                walvault::storage::format_timestamp_ms(h.timestamp_ms),
            ),
            (walvault::storage::METADATA_SHA256.to_string(), sha.clone()),
        ]
        .into();
        if let Some(p) = prev.replace(sha) {
            meta.insert(walvault::storage::METADATA_PREV_SHA256.to_string(), p);
        }
        rig.put(id, &bytes, &meta);
        ids.push(id);
    }
    let verify = || run(&["verify", NAME, "-b", &url], &[]);
    let o = verify();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let key = rig.key(ids[1]);
    std::fs::write(
        root.join(".walvault-meta").join(format!("{key}.json")),
        "{not json",
    )
    .unwrap();
    let o = verify();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("bad_metadata") && out.contains(&key), "{out}");

    rig.delete(ids[0]);
    let o = verify();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("no_snapshot") && out.contains("bad_metadata"),
        "{out}"
    );
}
