//! `walvault demo`: the main job end to end on the embedded default. Creates a
//! database, writes to it while it is watched into a `file://` replica, restores the
//! replica and compares the result with the source page for page.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::Connection;
use walvault_engine::replicator::Config;
use walvault_engine::restore_plan::Target;

use crate::compare::compare_pages;
use crate::restore::{Outcome, RestoreOptions, restore};
use crate::storage::{ReplicaUrl, Store, StoreOptions};
use crate::watch::{WatchOptions, watch};

pub async fn run(dir: Option<PathBuf>, duration: Duration) -> Result<()> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("walvault-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = dir.join("app.db");
    let replica = dir.join("replica");
    let restored = dir.join("restored.db");
    for p in [&db, &restored] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&replica);
    eprintln!("demo: working in {}", dir.display());
    {
        let c = Connection::open(&db)?;
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, body BLOB);",
        )?;
    }
    let url = ReplicaUrl::parse(&format!("file://{}", replica.display()))?;
    let store = Store::open(&url, &StoreOptions::default()).await?;
    let config = Config {
        sync_interval_ms: 250,
        ..Config::default()
    };
    let opts = WatchOptions {
        config,
        shutdown_timeout: Duration::from_secs(30),
        max_uploads: 8,
        snapshot_and_exit: false,
        idle: crate::idle::IdleRelease::never(),
    };
    let writer_db = db.clone();
    let writer = tokio::task::spawn_blocking(move || write_for(&writer_db, duration));
    let stop = async {
        let _ = tokio::time::sleep(duration + Duration::from_millis(500)).await;
    };
    eprintln!("demo: writing for {duration:?} while `walvault watch` replicates to {url}");
    watch(std::slice::from_ref(&db), store, opts, stop).await?;
    let commits = writer.await??;
    // The source's final state, folded into the database file for comparison.
    Connection::open(&db)?.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let store = Store::open(&url, &StoreOptions::default()).await?;
    let opts = RestoreOptions {
        name: "app".into(),
        output: restored.clone(),
        target: Target::Latest,
        force: true,
        if_not_exists: false,
        dry_run: false,
        integrity_check: true,
    };
    let Outcome::Restored { txid, files, .. } = restore(&store, &opts).await? else {
        anyhow::bail!("restore did not run");
    };
    let page_size: usize =
        Connection::open(&db)?.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages = compare_pages(&db, &restored, page_size)?;
    println!(
        "demo: {commits} transactions replicated; restored TXID {txid:016x} from {files} files; \
         {pages} pages identical to the source; integrity_check ok"
    );
    println!(
        "demo: replica in {}, restored copy at {}",
        replica.display(),
        restored.display()
    );
    Ok(())
}

/// A small mixed workload: inserts, updates, deletes, some large rows.
fn write_for(db: &std::path::Path, duration: Duration) -> Result<u64> {
    let c = Connection::open(db)?;
    c.busy_timeout(Duration::from_secs(5))?;
    let start = Instant::now();
    let mut n = 0u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while start.elapsed() < duration {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = (x % 5_000) as i64;
        match x % 10 {
            0..=5 => c.execute(
                "INSERT OR REPLACE INTO items (id, name, body) VALUES (?1, ?2, zeroblob(?3))",
                rusqlite::params![id, format!("item {n}"), (x % 3_000) as i64],
            )?,
            6..=8 => c.execute(
                "UPDATE items SET name = ?2 WHERE id = ?1",
                rusqlite::params![id, format!("updated {n}")],
            )?,
            _ => c.execute("DELETE FROM items WHERE id = ?1", [id])?,
        };
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(n)
}
