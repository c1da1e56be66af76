//! `litestream restore` of a walvault replica taken *while* a writer bursts: Litestream
//! does not wait out a gap in the TXID chain, so every restore succeeds only if each
//! database's files land in TXID order (walvault's default of one upload in flight per
//! database, decision 25). Each restore must be a committed prefix of the source, and
//! the final one equal to the source page for page. Real Litestream 0.5.17 and a real
//! S3-compatible server on 127.0.0.1; without the binary the test prints SKIPPED,
//! except under `CI`, where it fails.

mod e2e_support;
mod litestream_rig;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e_support::*;
use litestream_rig::*;
use rusqlite::Connection;

/// How long the writer bursts while restores run.
const BURST: Duration = Duration::from_secs(8);

#[test]
fn litestream_restores_a_replica_mid_burst() {
    let Some(rig) = Rig::new("ls-burst") else {
        return;
    };
    let db = rig.path("burst.db");
    create_db(&db);
    let log = rig.path("watch.log");
    let w = Watcher::start(&[&db], &rig.wv_url("p"), &rig.env(), &log);

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (db, stop, commits) = (db.clone(), Arc::clone(&stop), Arc::clone(&commits));
        std::thread::spawn(move || burst_writer(&db, &stop, &commits))
    };

    // Between restores, a gap can come and go unseen: a LIST every few ms looks for one.
    let lister = {
        let (url, stop) = (rig.wv_url("p"), Arc::clone(&stop));
        let endpoint = rig.server.endpoint.clone();
        std::thread::spawn(move || gaps_listed(&url, endpoint, &stop))
    };

    let (mut restores, mut failures, mut prefixes) = (0, Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < BURST {
        let out = rig.path(&format!("mid-{restores}.db"));
        restores += 1;
        let o = rig.ls_restore_output("p", "burst", &out, None);
        if !o.status.success() {
            failures.push(output_text(&o));
            continue;
        }
        integrity_ok(&out);
        prefixes.push(assert_committed_prefix(&db, &out));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let (listings, gaps) = lister.join().unwrap();
    w.stop();

    assert!(listings >= 20, "only {listings} listings during the burst");
    assert!(
        gaps.is_empty(),
        "{} of {listings} listings during the burst had a gap in the TXID chain; first: {}",
        gaps.len(),
        gaps[0]
    );

    assert!(
        failures.is_empty(),
        "{} of {restores} `litestream restore` runs during the burst failed; first:\n{}",
        failures.len(),
        failures[0]
    );
    // The check above only means something if the restores saw the burst move on.
    prefixes.dedup();
    assert!(
        prefixes.len() >= 3,
        "the restores saw only {prefixes:?} rows of a burst of {} commits",
        commits.load(Ordering::Relaxed)
    );

    checkpoint_truncate(&db);
    let last = rig.path("final.db");
    rig.ls_restore("p", "burst", &last, None);
    let pages = same_pages(&db, &last);
    assert!(
        pages > 100,
        "the burst should have grown the database: {pages} pages"
    );
}

/// Rounds of one large transaction (0.5-2.5 MiB of random bytes) followed by a few
/// one-row ones ~30 ms apart, so that a large file is cut right before small ones: the
/// small ones land first if uploads overlap.
fn burst_writer(db: &Path, stop: &AtomicBool, commits: &AtomicU64) {
    let mut c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let big = 64 + x % 256;
        for rows in std::iter::once(big).chain([1; 4]) {
            let tx = c.transaction().unwrap();
            for _ in 0..rows {
                tx.execute("INSERT INTO big (data) VALUES (randomblob(8192))", [])
                    .unwrap();
            }
            tx.commit().unwrap();
            commits.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

/// Lists the replica of `burst` until `stop`: how many listings, and a description of
/// each one whose chain from TXID 1 has a hole with files above it.
fn gaps_listed(url: &str, endpoint: String, stop: &AtomicBool) -> (usize, Vec<String>) {
    with_store(url, Some(endpoint), async |store| {
        let (mut listings, mut gaps) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let files = walvault::remote::list_files(&store, "burst").await.unwrap();
            listings += 1;
            if let Some(after) = walvault::remote::latest_gap(&files) {
                gaps.push(format!(
                    "{} files, none continues TXID {after}",
                    files.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (listings, gaps)
    })
}

/// The restored `big` table holds rows 1..=n with exactly the source's bytes: a state
/// the source went through (rows are only appended). Returns n.
fn assert_committed_prefix(source: &Path, restored: &Path) -> i64 {
    let rows = |path: &Path, n: i64| -> Vec<(i64, Vec<u8>)> {
        let c = Connection::open(path).unwrap();
        let mut st = c
            .prepare("SELECT id, data FROM big WHERE id <= ?1 ORDER BY id")
            .unwrap();
        st.query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let got = rows(restored, i64::MAX);
    let n = got.last().map_or(0, |r| r.0);
    assert_eq!(
        got.len() as i64,
        n,
        "{}: rows are not 1..={n}",
        restored.display()
    );
    assert!(
        rows(source, n) == got,
        "{}: rows 1..={n} differ from the source's",
        restored.display()
    );
    n
}
