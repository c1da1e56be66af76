//! One database's files in the store: listing them into the engine's vocabulary,
//! finding the tip of the chain, reading headers without downloading whole files.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::info;
use walvault_engine::keys::{self, FileId, Layout};
use walvault_engine::ltx::{self, Header};
use walvault_engine::replicator::RemoteTip;
use walvault_engine::restore_plan::{self, ChainTip, PlanError, RemoteFile, Target};

use crate::storage::{self, METADATA_SHA256, METADATA_TIMESTAMP, Store, StoreError};

pub fn engine_layout(store: &Store) -> Layout {
    match store.layout() {
        storage::Layout::S3 => Layout::S3,
        storage::Layout::File => Layout::File,
    }
}

pub fn key(store: &Store, db: &str, id: FileId) -> String {
    keys::ltx_key(engine_layout(store), db, id)
}

/// Every LTX file of `db`, sorted by level then TXID. Other objects are ignored.
pub async fn list_files(store: &Store, db: &str) -> Result<Vec<RemoteFile>> {
    let layout = engine_layout(store);
    let prefix = keys::db_prefix(layout, db);
    let objects = store
        .list(&prefix)
        .await
        .with_context(|| format!("listing {prefix} in the replica"))?;
    let mut files: Vec<RemoteFile> = objects
        .into_iter()
        .filter_map(|o| {
            let rel = o.key.strip_prefix(&prefix)?;
            let id = keys::parse_rel_key(layout, rel)?;
            Some(RemoteFile {
                id,
                size: o.size,
                timestamp_ms: o.last_modified_ms,
            })
        })
        .collect();
    files.sort_by_key(|f| f.id);
    Ok(files)
}

/// A replicator with several uploads in flight per database (`--max-in-flight` above 1,
/// or another tool) can land them out of order, so while one is in flight the chain can
/// have a hole with files above it. Before such a hole counts as a gap, the listing is
/// repeated after each of these pauses (3 s in all).
pub const GAP_RELIST_AFTER: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(1),
];

/// Lists with `list` until `gap_after` finds no gap in the listing (it returns the TXID
/// the chain reaches before one) or [`GAP_RELIST_AFTER`] runs out; the last listing.
pub async fn list_past_gaps<F, Fut>(
    db: &str,
    mut list: F,
    gap_after: impl Fn(&[RemoteFile]) -> Option<u64>,
) -> Result<Vec<RemoteFile>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<RemoteFile>>>,
{
    let mut pauses = GAP_RELIST_AFTER.iter();
    loop {
        let files = list().await?;
        let (Some(after), Some(pause)) = (gap_after(&files), pauses.next()) else {
            return Ok(files);
        };
        let newest = files.iter().map(|f| f.id.max_txid).max().unwrap_or(0);
        info!(
            database = %db,
            "no file starts at {:016x} yet, though files up to {newest:016x} exist; \
             listing again in {} ms (an upload may be in flight)",
            after + 1,
            pause.as_millis()
        );
        tokio::time::sleep(*pause).await;
    }
}

/// Where a latest restore of `files` meets a gap, if it does.
pub fn latest_gap(files: &[RemoteFile]) -> Option<u64> {
    match restore_plan::plan(files, Target::Latest) {
        Err(PlanError::Gap { after }) => Some(after),
        _ => None,
    }
}

/// [`list_files`] with each file's time as Litestream restores by it: the
/// `litestream-timestamp` metadata (the time in the LTX header, for compacted files
/// the newest input's), not the S3 object's LastModified, which is the upload or
/// compaction time (and often truncated to seconds). One HEAD per file, a few dozen
/// at a time, as `litestream restore -timestamp` does; objects without the metadata
/// keep LastModified. The file backend needs nothing: its mtime is that timestamp.
pub async fn list_files_with_data_times(store: &Store, db: &str) -> Result<Vec<RemoteFile>> {
    let mut files = list_files(store, db).await?;
    if store.layout() == storage::Layout::File {
        return Ok(files);
    }
    for chunk in files.chunks_mut(32) {
        let keys: Vec<String> = chunk.iter().map(|f| key(store, db, f.id)).collect();
        let heads = join_all(keys.iter().map(|k| store.metadata(k)).collect()).await;
        for ((f, k), head) in chunk.iter_mut().zip(&keys).zip(heads) {
            let time = match head {
                Ok(Some(meta)) => meta
                    .get(METADATA_TIMESTAMP)
                    .and_then(|v| storage::parse_timestamp_ms(v)),
                // Gone since the listing: the plan may still name it, and the download
                // will then fail with a clear error.
                Ok(None) | Err(StoreError::NotFound(_)) => None,
                Err(e) => {
                    return Err(anyhow::anyhow!(e))
                        .with_context(|| format!("reading the metadata of {k}"));
                }
            };
            if time.is_some() {
                f.timestamp_ms = time;
            }
        }
    }
    Ok(files)
}

/// Runs the futures concurrently on this task; outputs in input order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Reads and validates the 100-byte header of one file.
pub async fn read_header(store: &Store, db: &str, id: FileId) -> Result<Header> {
    let k = key(store, db, id);
    let bytes = store
        .get_range(&k, 0, ltx::HEADER_SIZE as u64)
        .await
        .with_context(|| format!("reading the header of {k}"))?;
    let h =
        ltx::Header::decode(&bytes).with_context(|| format!("{k} has an invalid LTX header"))?;
    anyhow::ensure!(
        h.min_txid == id.min_txid && h.max_txid == id.max_txid,
        "{k}: header says TXIDs {:016x}-{:016x}, the key says otherwise",
        h.min_txid,
        h.max_txid
    );
    Ok(h)
}

/// The highest TXID in the store, the highest TXID a restore reaches (below it when
/// the chain has a hole), and the header of the file that ends at the latter.
pub async fn tip(store: &Store, db: &str) -> Result<RemoteTip> {
    Ok(tip_with_digest(store, db).await?.0)
}

/// The tip, plus the `walvault-sha256` of the file it ends in (when walvault wrote it):
/// the link the next file's `walvault-prev-sha256` carries.
pub async fn tip_with_digest(store: &Store, db: &str) -> Result<(RemoteTip, Option<String>)> {
    let files = list_files(store, db).await?;
    let Some(ChainTip {
        max_txid: max,
        chain_end,
        newest,
    }) = restore_plan::chain_tip(&files)
    else {
        return Ok((RemoteTip::default(), None));
    };
    let (header, digest) = match newest {
        Some(id) => {
            let header = read_header(store, db, id).await?;
            let k = key(store, db, id);
            let meta = store
                .metadata(&k)
                .await
                .with_context(|| format!("reading the metadata of {k}"))?;
            (
                Some(header),
                meta.and_then(|m| m.get(METADATA_SHA256).cloned()),
            )
        }
        None => (None, None),
    };
    Ok((
        RemoteTip {
            max_txid: max,
            chain_end,
            newest: header,
        },
        digest,
    ))
}
