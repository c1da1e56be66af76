//! `walvault list`: the databases in a replica, or one database's files and the
//! window it can be restored to.

use std::fmt::Write as _;

use anyhow::Result;
use walvault_engine::restore_plan::{self, Target};
use walvault_engine::time::format_rfc3339_ms;

use crate::remote;
use crate::storage::Store;

pub async fn list_databases(store: &Store) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for dir in store.list_dirs("").await? {
        if !remote::list_files(store, &dir).await?.is_empty() {
            names.push(dir);
        }
    }
    Ok(names)
}

pub async fn describe(store: &Store, name: &str) -> Result<String> {
    let files = remote::list_files(store, name).await?;
    let mut out = String::new();
    if files.is_empty() {
        writeln!(out, "no backup of '{name}' in this replica")?;
        return Ok(out);
    }
    writeln!(
        out,
        "{:<5} {:<16} {:<16} {:>12}  time",
        "level", "min_txid", "max_txid", "bytes"
    )?;
    for f in &files {
        let time = f
            .timestamp_ms
            .map(format_rfc3339_ms)
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<5} {:016x} {:016x} {:>12}  {}",
            f.id.level, f.id.min_txid, f.id.max_txid, f.size, time
        )?;
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    writeln!(out, "{} files, {total} bytes", files.len())?;
    match restore_plan::plan(&files, Target::Latest) {
        Ok(p) => {
            let earliest = files
                .iter()
                .filter(|f| f.id.min_txid == 1)
                .map(|f| f.id.max_txid)
                .min()
                .unwrap_or(p.txid);
            writeln!(
                out,
                "restorable: TXID {earliest:016x} through {:016x}",
                p.txid
            )?;
        }
        Err(e) => writeln!(out, "NOT restorable to the latest TXID: {e}")?,
    }
    Ok(out)
}
