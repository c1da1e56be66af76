//! `walvault restore`: plan the files that rebuild a database at a target point,
//! stream them page by page into a temporary file beside the output, check the
//! result, and only then move it into place. Fails closed: the output path is never
//! touched by a failed restore, and an existing file is replaced only with `--force`.

use std::fs::{self, File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tracing::info;
use walvault_engine::ltx::Decoder;
use walvault_engine::restore_plan::{self, Plan, Target};

use crate::database::wal_path;
use crate::position::sync_dir;
use crate::remote;
use crate::storage::Store;

pub struct RestoreOptions {
    pub name: String,
    pub output: PathBuf,
    pub target: Target,
    pub force: bool,
    pub if_not_exists: bool,
    pub dry_run: bool,
    pub integrity_check: bool,
}

pub enum Outcome {
    Restored { txid: u64, files: usize, pages: u64 },
    Skipped,
    DryRun(Plan),
}

pub async fn restore(store: &Store, opts: &RestoreOptions) -> Result<Outcome> {
    let out = &opts.output;
    if out.exists() {
        if opts.if_not_exists {
            info!(path = %out.display(), "output exists, nothing to do (--if-not-exists)");
            return Ok(Outcome::Skipped);
        }
        if !opts.force && !opts.dry_run {
            bail!(
                "refusing to overwrite {}: pass --force to replace it, or choose another -o path",
                out.display()
            );
        }
    }
    let files = match opts.target {
        // Litestream restores by the time stored with each file, not its upload time.
        Target::Timestamp(_) => remote::list_files_with_data_times(store, &opts.name).await?,
        _ => remote::list_files(store, &opts.name).await?,
    };
    if files.is_empty() {
        bail!(
            "no backup of '{}' in this replica: check the name (`walvault list -b URL` shows what is there)",
            opts.name
        );
    }
    let plan = restore_plan::plan(&files, opts.target)
        .with_context(|| format!("cannot restore '{}'", opts.name))?;
    if opts.dry_run {
        return Ok(Outcome::DryRun(plan));
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    let tmp = dir.join(format!(".{base}.walvault-restore-{}", std::process::id()));
    let download = dir.join(format!(".{base}.walvault-download-{}", std::process::id()));
    let result = build(store, opts, &plan, &tmp, &download).await;
    let _ = fs::remove_file(&download);
    let pages = match result {
        Ok(p) => p,
        Err(e) => {
            remove_db_files(&tmp);
            return Err(e);
        }
    };
    if opts.force {
        // A stale WAL beside the new file would be replayed over it.
        let _ = fs::remove_file(wal_path(out));
        let _ = fs::remove_file(shm_path(out));
    }
    fs::rename(&tmp, out)
        .with_context(|| format!("moving the restored database to {}", out.display()))?;
    sync_dir(dir)?;
    Ok(Outcome::Restored {
        txid: plan.txid,
        files: plan.files.len(),
        pages,
    })
}

async fn build(
    store: &Store,
    opts: &RestoreOptions,
    plan: &Plan,
    tmp: &Path,
    download: &Path,
) -> Result<u64> {
    let db = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut page_size = 0u32;
    let mut commit = 0u32;
    let mut pages = 0u64;
    let mut buf = Vec::new();
    for f in &plan.files {
        let key = remote::key(store, &opts.name, f.id);
        store
            .get_to_file(&key, download)
            .await
            .with_context(|| format!("downloading {key}"))?;
        let reader = BufReader::with_capacity(256 * 1024, File::open(download)?);
        let mut dec =
            Decoder::new(reader).with_context(|| format!("{key}: not a valid LTX file"))?;
        let h = *dec.header();
        if h.min_txid != f.id.min_txid || h.max_txid != f.id.max_txid {
            bail!(
                "{key}: header covers TXIDs {:016x}-{:016x}, not what its name says",
                h.min_txid,
                h.max_txid
            );
        }
        if page_size == 0 {
            page_size = h.page_size;
            buf = vec![0u8; page_size as usize];
        } else if page_size != h.page_size {
            bail!(
                "{key}: page size {} differs from the earlier files' {page_size}",
                h.page_size
            );
        }
        while let Some(pgno) = dec
            .next_page(&mut buf)
            .with_context(|| format!("{key}: corrupt page data"))?
        {
            db.write_all_at(&buf, u64::from(pgno - 1) * u64::from(page_size))?;
            pages += 1;
        }
        dec.finish()
            .with_context(|| format!("{key}: failed its integrity check"))?;
        commit = h.commit;
    }
    db.set_len(u64::from(commit) * u64::from(page_size))?;
    db.sync_all()?;
    drop(db);
    if opts.integrity_check {
        integrity_check(tmp)?;
    }
    Ok(pages)
}

/// `PRAGMA integrity_check` on the restored file before it is moved into place.
pub fn integrity_check(path: &Path) -> Result<()> {
    let result: Result<String> = (|| {
        let conn = rusqlite::Connection::open(path)?;
        Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    })();
    let _ = fs::remove_file(wal_path(path));
    let _ = fs::remove_file(shm_path(path));
    let verdict =
        result.with_context(|| format!("opening the restored database {}", path.display()))?;
    if verdict != "ok" {
        bail!("the restored database failed PRAGMA integrity_check: {verdict}");
    }
    Ok(())
}

fn shm_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-shm");
    PathBuf::from(s)
}

fn remove_db_files(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(wal_path(path));
    let _ = fs::remove_file(shm_path(path));
}
