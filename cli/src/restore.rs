//! `walvault restore`: plan the files that rebuild a database at a target point,
//! stream them page by page into a temporary file beside the output, check the
//! result, and only then move it into place. Fails closed: the output path is never
//! touched by a failed restore, and an existing file is replaced only with `--force`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, IsTerminal};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tracing::info;
use walvault_engine::dbsum::ImageSum;
use walvault_engine::ltx::Decoder;
use walvault_engine::restore_plan::{self, Plan, RemoteFile, Target};

use crate::database::wal_path;
use crate::integrity::HashingReader;
use crate::position::sync_dir;
use crate::remote;
use crate::storage::{METADATA_DB_CHECKSUM, METADATA_PREV_SHA256, METADATA_SHA256, Store};

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
    let scratch = dir.join(format!(".{base}.walvault-download-{}", std::process::id()));
    let result = build(store, opts, &plan, &tmp, &scratch).await;
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

/// Downloads run this many at a time (to scratch files beside the output).
const PARALLEL_DOWNLOADS: usize = 4;

/// Applies the plan newest file first, writing each page once: the newest version of a
/// page is the first one seen, later (older) copies are skipped. Memory: one page, a
/// bitmap of written pages, and the scratch files of one round of downloads on disk.
async fn build(
    store: &Store,
    opts: &RestoreOptions,
    plan: &Plan,
    tmp: &Path,
    scratch: &Path,
) -> Result<u64> {
    let db = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let keys: Vec<String> = plan
        .files
        .iter()
        .map(|f| remote::key(store, &opts.name, f.id))
        .collect();
    let metas = remote::metadata_of(store, &keys).await?;
    let mut state = ApplyState::default();
    let mut digests: Vec<Option<String>> = vec![None; keys.len()];
    let total_bytes: u64 = plan.files.iter().map(|f| f.size).sum();
    let mut progress = Progress::new(&opts.name, keys.len(), total_bytes);
    let newest_first: Vec<usize> = (0..keys.len()).rev().collect();
    for round in newest_first.chunks(PARALLEL_DOWNLOADS) {
        let paths: Vec<PathBuf> = round
            .iter()
            .map(|i| scratch.with_extension(format!("{i}")))
            .collect();
        let downloads = remote::join_all(
            round
                .iter()
                .zip(&paths)
                .map(|(&i, p)| store.get_to_file(&keys[i], p))
                .collect(),
        )
        .await;
        let mut failure = None;
        for ((&i, path), got) in round.iter().zip(&paths).zip(downloads) {
            if failure.is_none() {
                failure = got
                    .with_context(|| format!("downloading {}", keys[i]))
                    .and_then(|bytes| {
                        let sha = apply_file(&db, path, &keys[i], &plan.files[i], &mut state)?;
                        check_digest(&keys[i], metas[i].as_ref(), &sha)?;
                        digests[i] = Some(sha);
                        progress.advance(bytes);
                        Ok(())
                    })
                    .err();
            }
            let _ = fs::remove_file(path);
        }
        if let Some(e) = failure {
            progress.clear();
            return Err(e);
        }
    }
    progress.finish();
    check_links(plan, &keys, &metas, &digests)?;
    check_state(plan, &keys, &metas, &state)?;
    db.set_len(u64::from(state.commit) * u64::from(state.page_size))?;
    db.sync_all()?;
    drop(db);
    if opts.integrity_check {
        integrity_check(tmp)?;
    }
    Ok(state.pages)
}

#[derive(Default)]
struct ApplyState {
    page_size: u32,
    /// Database size after the newest file: pages above it are not part of the result.
    commit: u32,
    written: Vec<u64>,
    pages: u64,
    buf: Vec<u8>,
    /// Database checksum of the pages written so far.
    sum: ImageSum,
}

/// The restored state must have the database checksum walvault recorded for the
/// newest file of the plan: this catches an older file (a compaction or snapshot, which
/// carry no hash link) that was replaced or altered. Pages no file wrote read as zeros.
fn check_state(
    plan: &Plan,
    keys: &[String],
    metas: &[Option<BTreeMap<String, String>>],
    st: &ApplyState,
) -> Result<()> {
    let Some(last) = plan.files.len().checked_sub(1) else {
        return Ok(());
    };
    let Some(recorded) = metas[last]
        .as_ref()
        .and_then(|m| m.get(METADATA_DB_CHECKSUM))
    else {
        return Ok(());
    };
    let mut sum = st.sum.clone();
    let zeros = vec![0u8; st.page_size as usize];
    let lock = walvault_engine::ltx::lock_pgno(st.page_size);
    for pgno in 1..=st.commit {
        let i = (pgno - 1) as usize;
        if pgno != lock && st.written[i / 64] & (1 << (i % 64)) == 0 {
            sum.add(pgno, &zeros);
        }
    }
    let actual = format!("{:016x}", sum.value());
    if !recorded.eq_ignore_ascii_case(&actual) {
        let foreign: Vec<&str> = keys
            .iter()
            .zip(metas)
            .filter(|(_, m)| m.as_ref().is_none_or(|m| !m.contains_key(METADATA_SHA256)))
            .map(|(k, _)| k.as_str())
            .collect();
        bail!(
            "the restored database does not have the checksum {} recorded for: expected {recorded}, got \
             {actual}: a file of the plan was replaced or altered{}",
            keys[last],
            if foreign.is_empty() {
                String::new()
            } else {
                format!(" (files without walvault's digest: {})", foreign.join(", "))
            }
        );
    }
    Ok(())
}

/// Decodes one downloaded file (verifying its LTX checksums) and writes the pages no
/// newer file wrote. Returns the SHA-256 of the whole object.
fn apply_file(
    db: &File,
    path: &Path,
    key: &str,
    f: &RemoteFile,
    st: &mut ApplyState,
) -> Result<String> {
    let reader = HashingReader::new(
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let mut dec = Decoder::new(BufReader::with_capacity(256 * 1024, reader))
        .with_context(|| format!("{key}: not a valid LTX file"))?;
    let h = *dec.header();
    if h.min_txid != f.id.min_txid || h.max_txid != f.id.max_txid {
        bail!(
            "{key}: the header covers TXIDs {:016x}-{:016x}, the name says {:016x}-{:016x}",
            h.min_txid,
            h.max_txid,
            f.id.min_txid,
            f.id.max_txid
        );
    }
    if st.page_size == 0 {
        st.page_size = h.page_size;
        st.commit = h.commit;
        st.buf = vec![0u8; h.page_size as usize];
        st.written = vec![0u64; (h.commit as usize).div_ceil(64)];
    } else if st.page_size != h.page_size {
        bail!(
            "{key}: page size {} differs from the newer files' {}",
            h.page_size,
            st.page_size
        );
    }
    while let Some(pgno) = dec
        .next_page(&mut st.buf)
        .with_context(|| format!("{key}: corrupt page data"))?
    {
        if pgno > st.commit {
            continue;
        }
        let (word, bit) = ((pgno - 1) as usize / 64, 1u64 << ((pgno - 1) % 64));
        if st.written[word] & bit != 0 {
            continue;
        }
        st.written[word] |= bit;
        db.write_all_at(&st.buf, u64::from(pgno - 1) * u64::from(st.page_size))?;
        st.sum.add(pgno, &st.buf);
        st.pages += 1;
    }
    let reader = dec
        .finish_into_inner()
        .with_context(|| format!("{key}: failed its integrity check"))?;
    let (sha, _) = reader
        .into_inner()
        .finish()
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(sha)
}

/// The object must hash to what walvault recorded when it uploaded it.
fn check_digest(key: &str, meta: Option<&BTreeMap<String, String>>, actual: &str) -> Result<()> {
    match meta.and_then(|m| m.get(METADATA_SHA256)) {
        Some(expected) if expected != actual => bail!(
            "{key}: SHA-256 mismatch: expected {expected} (recorded at upload), got {actual}: the object \
             was altered or replaced after it was written"
        ),
        _ => Ok(()),
    }
}

/// Each file that records the digest of the file it extends must sit on exactly that
/// file: otherwise one was replaced, reordered or lost in between.
fn check_links(
    plan: &Plan,
    keys: &[String],
    metas: &[Option<BTreeMap<String, String>>],
    digests: &[Option<String>],
) -> Result<()> {
    for i in 1..plan.files.len() {
        let (prev, cur) = (&plan.files[i - 1], &plan.files[i]);
        let Some(link) = metas[i].as_ref().and_then(|m| m.get(METADATA_PREV_SHA256)) else {
            continue;
        };
        if prev.id.level != 0 || prev.id.max_txid + 1 != cur.id.min_txid {
            continue; // The plan skipped the predecessor via a compacted file.
        }
        if let Some(actual) = &digests[i - 1]
            && actual != link
        {
            bail!(
                "{}: the hash chain is broken: it extends a file with SHA-256 {link}, but {} has {actual}: \
                 a file was replaced or reordered",
                keys[i],
                keys[i - 1]
            );
        }
    }
    Ok(())
}

/// A one-line progress display on a terminal; silent when stderr is not one.
struct Progress<'a> {
    name: &'a str,
    on: bool,
    files: (usize, usize),
    bytes: (u64, u64),
    started: std::time::Instant,
    last: std::time::Instant,
}

impl<'a> Progress<'a> {
    fn new(name: &'a str, files: usize, bytes: u64) -> Self {
        let now = std::time::Instant::now();
        let on = std::io::stderr().is_terminal();
        Progress {
            name,
            on,
            files: (0, files),
            bytes: (0, bytes),
            started: now,
            last: now,
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.files.0 += 1;
        self.bytes.0 += bytes;
        if self.on && self.last.elapsed().as_millis() >= 200 {
            self.last = std::time::Instant::now();
            let done = self.bytes.0 as f64 / self.bytes.1.max(1) as f64;
            let elapsed = self.started.elapsed().as_secs_f64();
            let eta = if done > 0.0 {
                elapsed * (1.0 - done) / done
            } else {
                0.0
            };
            eprint!(
                "\rrestoring {}: {}/{} files, {:.1}/{:.1} MB, ETA {:.0}s   ",
                self.name,
                self.files.0,
                self.files.1,
                self.bytes.0 as f64 / 1e6,
                self.bytes.1 as f64 / 1e6,
                eta
            );
        }
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }

    fn finish(&self) {
        self.clear();
    }
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
