//! One database's files in the store: listing them into the engine's vocabulary,
//! finding the tip of the chain, reading headers without downloading whole files.

use anyhow::{Context, Result};
use walvault_engine::keys::{self, FileId, Layout};
use walvault_engine::ltx::{self, Header};
use walvault_engine::replicator::RemoteTip;
use walvault_engine::restore_plan::RemoteFile;

use crate::storage::{self, Store};

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

/// The highest TXID in the store and the header of the file that ends there.
pub async fn tip(store: &Store, db: &str) -> Result<RemoteTip> {
    let files = list_files(store, db).await?;
    let Some(max) = files.iter().map(|f| f.id.max_txid).max() else {
        return Ok(RemoteTip::default());
    };
    // Prefer the lowest level: level-0 files carry the WAL position they end at.
    let newest = files
        .iter()
        .filter(|f| f.id.max_txid == max)
        .min_by_key(|f| f.id.level)
        .map(|f| f.id);
    let header = match newest {
        Some(id) => Some(read_header(store, db, id).await?),
        None => None,
    };
    Ok(RemoteTip {
        max_txid: max,
        newest: header,
    })
}
