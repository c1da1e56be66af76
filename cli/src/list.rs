//! `walvault list`: the databases in a replica, or one database's levels, files and
//! the window it can be restored to.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use walvault_engine::keys::FileId;
use walvault_engine::restore_plan::{self, PlanError, RemoteFile, Target};
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

/// The restorable window: from the oldest snapshot's end to the furthest TXID a
/// restore reaches, and why the newest TXID is out of reach when it is.
pub struct RestoreWindow {
    pub earliest: Option<u64>,
    pub latest: Option<u64>,
    pub newest_txid: u64,
    /// Why `newest_txid` cannot be restored, if it cannot.
    pub blocked: Option<PlanError>,
}

pub fn restore_window(files: &[RemoteFile]) -> RestoreWindow {
    let newest_txid = files.iter().map(|f| f.id.max_txid).max().unwrap_or(0);
    let earliest = files
        .iter()
        .filter(|f| f.id.min_txid == 1)
        .map(|f| f.id.max_txid)
        .min();
    let (latest, blocked) = match restore_plan::plan(files, Target::Latest) {
        Ok(p) => (Some(p.txid), None),
        Err(e @ PlanError::Gap { after }) => (Some(after), Some(e)),
        Err(e) => (None, Some(e)),
    };
    RestoreWindow {
        earliest: earliest.filter(|_| latest.is_some()),
        latest,
        newest_txid,
        blocked,
    }
}

pub async fn describe(store: &Store, name: &str) -> Result<String> {
    let files = remote::list_files(store, name).await?;
    let mut out = String::new();
    if files.is_empty() {
        writeln!(out, "no backup of '{name}' in this replica")?;
        return Ok(out);
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    writeln!(out, "{name}: {} files, {total} bytes", files.len())?;
    writeln!(
        out,
        "{:<5} {:>6} {:<16} {:<16} {:>12}",
        "level", "files", "min_txid", "max_txid", "bytes"
    )?;
    let mut levels: BTreeMap<u8, (usize, u64, u64, u64)> = BTreeMap::new();
    for f in &files {
        let l = levels.entry(f.id.level).or_insert((0, u64::MAX, 0, 0));
        l.0 += 1;
        l.1 = l.1.min(f.id.min_txid);
        l.2 = l.2.max(f.id.max_txid);
        l.3 += f.size;
    }
    for (level, (n, min, max, bytes)) in &levels {
        writeln!(out, "{level:<5} {n:>6} {min:016x} {max:016x} {bytes:>12}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<5} {:<16} {:<16} {:>12}  stored at",
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
    writeln!(out)?;
    let w = restore_window(&files);
    match (w.earliest, w.latest) {
        (Some(earliest), Some(latest)) => {
            let (t0, t1) = tokio::join!(
                txid_time(store, name, &files, earliest),
                txid_time(store, name, &files, latest)
            );
            writeln!(
                out,
                "restorable: TXID {earliest:016x} ({t0}) through {latest:016x} ({t1})"
            )?;
            if !level0_contiguous(&files, latest) {
                writeln!(
                    out,
                    "  (where level-0 files were retired after a compaction, only the compacted file's end can be restored)"
                )?;
            }
        }
        _ => writeln!(out, "restorable: nothing")?,
    }
    if let Some(e) = &w.blocked {
        writeln!(
            out,
            "NOT restorable to the newest TXID {:016x}: {e} (run `walvault verify {name} -b URL`)",
            w.newest_txid
        )?;
    }
    Ok(out)
}

/// Level-0 files alone hold every TXID from 1 to `latest` (so every TXID can be
/// restored, not only the ends of compacted files).
fn level0_contiguous(files: &[RemoteFile], latest: u64) -> bool {
    let mut l0: Vec<FileId> = files
        .iter()
        .filter(|f| f.id.level == 0)
        .map(|f| f.id)
        .collect();
    l0.sort_by_key(|id| id.min_txid);
    let mut covered = 0u64;
    for id in l0 {
        if id.min_txid > covered + 1 {
            break;
        }
        covered = covered.max(id.max_txid);
    }
    covered >= latest
}

/// The data time of `txid`: the header time of the lowest-level file ending there.
async fn txid_time(store: &Store, name: &str, files: &[RemoteFile], txid: u64) -> String {
    let Some(id): Option<FileId> = files
        .iter()
        .filter(|f| f.id.max_txid == txid)
        .map(|f| f.id)
        .min_by_key(|id| id.level)
    else {
        return "time unknown".into();
    };
    match remote::read_header(store, name, id).await {
        Ok(h) => format_rfc3339_ms(h.timestamp_ms),
        Err(e) => format!("time unknown: {e:#}"),
    }
}
