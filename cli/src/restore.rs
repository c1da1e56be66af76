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
use walvault_engine::ltx::{self, Decoder};
use walvault_engine::restore_plan::{self, Plan, PlanError, RemoteFile, Target};

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
    let plan = plan_past_gaps(store, opts).await?;
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

/// Lists the database's files and plans the restore. A gap under a latest restore is
/// listed again (it may be an upload in flight) and, if it stays, fails with what the
/// user can do about it.
async fn plan_past_gaps(store: &Store, opts: &RestoreOptions) -> Result<Plan> {
    let files = remote::list_past_gaps(
        &opts.name,
        || async {
            match opts.target {
                // Litestream restores by the time stored with each file, not its upload time.
                Target::Timestamp(_) => remote::list_files_with_data_times(store, &opts.name).await,
                _ => remote::list_files(store, &opts.name).await,
            }
        },
        |files| match opts.target {
            Target::Latest => remote::latest_gap(files),
            _ => None,
        },
    )
    .await?;
    if files.is_empty() {
        bail!(
            "no backup of '{}' in this replica: check the name (`walvault list -b URL` shows what is there)",
            opts.name
        );
    }
    match restore_plan::plan(&files, opts.target) {
        Ok(plan) => Ok(plan),
        // Only a latest restore meets a gap: a --txid inside a hole can also be
        // Litestream's L0 retention (only file boundaries restorable), which no wait fixes.
        Err(err @ PlanError::Gap { after }) => {
            let newest = files.iter().map(|f| f.id.max_txid).max().unwrap_or(0);
            bail!(
                "cannot restore '{name}': {err}; files up to {newest:016x} exist above it. If \
                 walvault watch is running, an upload may still be in flight: try again. \
                 Otherwise that file is lost (`walvault verify` names it), and `--txid \
                 {after:016x}` restores the newest state before the gap",
                name = opts.name
            )
        }
        Err(err) => Err(err).with_context(|| format!("cannot restore '{}'", opts.name)),
    }
}

/// Downloads run up to this many at a time (to scratch files beside the output): a
/// replica of many small level-0 files restores in rounds of one round trip each.
const PARALLEL_DOWNLOADS: usize = 16;

/// ... and a round holds at most this many bytes of files (at least one file), so the
/// scratch files of a round of large files stay small on disk.
const ROUND_BYTES: u64 = 64 << 20;

/// Splits `order` (indexes into `sizes`) into rounds of downloads.
fn download_rounds(order: &[usize], sizes: &[u64]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in order {
        match rounds.last_mut() {
            Some(r) if r.len() < PARALLEL_DOWNLOADS && bytes + sizes[i] <= ROUND_BYTES => {
                r.push(i);
                bytes += sizes[i];
            }
            _ => {
                rounds.push(vec![i]);
                bytes = sizes[i];
            }
        }
    }
    rounds
}

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
    // Filled from the GET responses: the metadata that came with the bytes checked.
    let mut metas: Vec<Option<BTreeMap<String, String>>> = vec![None; keys.len()];
    let mut state = ApplyState::default();
    let mut digests: Vec<Option<String>> = vec![None; keys.len()];
    let total_bytes: u64 = plan.files.iter().map(|f| f.size).sum();
    let mut progress = Progress::new(&opts.name, keys.len(), total_bytes);
    let newest_first: Vec<usize> = (0..keys.len()).rev().collect();
    let sizes: Vec<u64> = plan.files.iter().map(|f| f.size).collect();
    for round in download_rounds(&newest_first, &sizes) {
        let round = &round[..];
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
                    .and_then(|got| {
                        let sha = apply_file(&db, path, &keys[i], &plan.files[i], &mut state)?;
                        check_digest(&keys[i], Some(&got.metadata), &sha)?;
                        digests[i] = Some(sha);
                        metas[i] = Some(got.metadata);
                        progress.advance(got.len);
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
    let files: Vec<(&str, Option<&BTreeMap<String, String>>)> = keys
        .iter()
        .zip(&metas)
        .map(|(k, m)| (k.as_str(), m.as_ref()))
        .collect();
    if let Some(m) = state_mismatch(&files, state.plan.checksum()) {
        bail!(
            "the restored database does not have the checksum {} recorded for: expected {}, got {}: \
             a file of the plan was replaced or altered{}",
            m.key,
            m.expected,
            m.actual,
            m.suspects()
        );
    }
    db.set_len(u64::from(state.plan.commit) * u64::from(state.plan.page_size))?;
    db.sync_all()?;
    drop(db);
    if opts.integrity_check {
        integrity_check(tmp)?;
    }
    Ok(state.pages)
}

#[derive(Default)]
struct ApplyState {
    plan: PlanState,
    pages: u64,
    buf: Vec<u8>,
}

/// The database checksum of the state a restore plan builds, from the plan's pages
/// offered newest file first: the first copy of a page is the one the state holds, pages
/// above the newest file's size are not part of it, and pages no file holds read as
/// zeros. Restore feeds it as it writes pages; `verify --full` from the page checksums
/// it computed while decoding. Memory: a bitmap of the pages seen.
#[derive(Debug, Default)]
pub(crate) struct PlanState {
    page_size: u32,
    /// Database size after the newest file: pages above it are not part of the result.
    commit: u32,
    written: Vec<u64>,
    /// XOR of the page checksums of the pages claimed so far.
    xor: u64,
}

impl PlanState {
    /// Takes the page size and final size from the first (newest) file; later files
    /// must have the same page size: `Err(page size so far)` otherwise.
    pub(crate) fn begin_file(&mut self, page_size: u32, commit: u32) -> Result<(), u32> {
        if self.page_size == 0 {
            self.page_size = page_size;
            self.commit = commit;
            self.written = vec![0u64; (commit as usize).div_ceil(64)];
            Ok(())
        } else if self.page_size != page_size {
            Err(self.page_size)
        } else {
            Ok(())
        }
    }

    /// Whether this copy of `pgno` is the one the state holds (no newer file had it,
    /// and it is within the final size); then its checksum must be [`PlanState::add`]ed.
    pub(crate) fn claim(&mut self, pgno: u32) -> bool {
        if pgno == 0 || pgno > self.commit {
            return false;
        }
        let (word, bit) = ((pgno - 1) as usize / 64, 1u64 << ((pgno - 1) % 64));
        if self.written[word] & bit != 0 {
            return false;
        }
        self.written[word] |= bit;
        true
    }

    /// Adds the checksum ([`ltx::page_checksum`]) of a claimed page.
    pub(crate) fn add(&mut self, page_checksum: u64) {
        self.xor ^= page_checksum;
    }

    /// The LTX database checksum of the state (pages never claimed count as zeros,
    /// the lock page never counts).
    pub(crate) fn checksum(&self) -> u64 {
        let mut xor = self.xor;
        let zeros = vec![0u8; self.page_size as usize];
        let lock = ltx::lock_pgno(self.page_size);
        for pgno in 1..=self.commit {
            let i = (pgno - 1) as usize;
            if pgno != lock && self.written[i / 64] & (1 << (i % 64)) == 0 {
                xor ^= ltx::page_checksum(pgno, &zeros);
            }
        }
        ltx::CHECKSUM_FLAG | xor
    }
}

/// The state a plan builds differs from the one walvault recorded for its newest file.
#[derive(Debug)]
pub(crate) struct StateMismatch {
    /// The plan's newest file, which carries the recorded checksum.
    pub(crate) key: String,
    pub(crate) expected: String,
    pub(crate) actual: String,
    /// Files of the plan without walvault's digest (nothing checked their bytes): the
    /// likely replacements.
    pub(crate) foreign: Vec<String>,
}

impl StateMismatch {
    /// " (files without walvault's digest: ...)", or nothing.
    pub(crate) fn suspects(&self) -> String {
        if self.foreign.is_empty() {
            String::new()
        } else {
            format!(
                " (files without walvault's digest: {})",
                self.foreign.join(", ")
            )
        }
    }
}

/// Compares `actual`, the database checksum of the state a plan builds, with the
/// `walvault-db-checksum` recorded for the plan's newest file (`files`: the plan's keys
/// and metadata, oldest first). This catches an older file (a compaction or a
/// snapshot, which no hash link points at) that was replaced or altered. `None` when
/// they agree or nothing was recorded (Litestream's files, files after a crash).
pub(crate) fn state_mismatch(
    files: &[(&str, Option<&BTreeMap<String, String>>)],
    actual: u64,
) -> Option<StateMismatch> {
    let (key, meta) = files.last()?;
    let recorded = meta.and_then(|m| m.get(METADATA_DB_CHECKSUM))?;
    let actual = format!("{actual:016x}");
    if recorded.trim().eq_ignore_ascii_case(&actual) {
        return None;
    }
    Some(StateMismatch {
        key: key.to_string(),
        expected: recorded.trim().to_ascii_lowercase(),
        actual,
        foreign: files
            .iter()
            .filter(|(_, m)| m.is_none_or(|m| !m.contains_key(METADATA_SHA256)))
            .map(|(k, _)| k.to_string())
            .collect(),
    })
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
    if let Err(newer) = st.plan.begin_file(h.page_size, h.commit) {
        bail!(
            "{key}: page size {} differs from the newer files' {newer}",
            h.page_size
        );
    }
    if st.buf.len() != h.page_size as usize {
        st.buf = vec![0u8; h.page_size as usize];
    }
    while let Some(pgno) = dec
        .next_page(&mut st.buf)
        .with_context(|| format!("{key}: corrupt page data"))?
    {
        if !st.plan.claim(pgno) {
            continue;
        }
        db.write_all_at(&st.buf, u64::from(pgno - 1) * u64::from(h.page_size))?;
        st.plan.add(ltx::page_checksum(pgno, &st.buf));
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
                "{}: the hash chain is broken: it is not the file {} extends: SHA-256 expected {link} \
                 (that file's {METADATA_PREV_SHA256}), got {actual}: a file was replaced or reordered",
                keys[i - 1],
                keys[i]
            );
        }
    }
    Ok(())
}

/// A one-line progress display on a terminal (the first file, then at most every
/// 200 ms); silent when stderr is not one.
struct Progress<'a> {
    name: &'a str,
    on: bool,
    files: (usize, usize),
    bytes: (u64, u64),
    started: std::time::Instant,
    last: Option<std::time::Instant>,
}

impl<'a> Progress<'a> {
    fn new(name: &'a str, files: usize, bytes: u64) -> Self {
        let on = std::io::stderr().is_terminal();
        Progress {
            name,
            on,
            files: (0, files),
            bytes: (0, bytes),
            started: std::time::Instant::now(),
            last: None,
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.files.0 += 1;
        self.bytes.0 += bytes;
        if self.on && self.last.is_none_or(|t| t.elapsed().as_millis() >= 200) {
            self.last = Some(std::time::Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;
    use walvault_engine::dbsum::PageSums;

    fn page(b: u8) -> Vec<u8> {
        vec![b; 512]
    }

    #[test]
    fn download_rounds_bound_count_and_bytes_and_keep_the_order() {
        let mb = 1 << 20;
        // 40 small files: rounds of 16, 16, 8.
        let order: Vec<usize> = (0..40).rev().collect();
        let rounds = download_rounds(&order, &[mb; 40]);
        assert_eq!(rounds.iter().map(Vec::len).collect::<Vec<_>>(), [16, 16, 8]);
        assert_eq!(rounds.concat(), order);
        // Large files: at most 64 MiB a round, and a file larger than that alone.
        let sizes = [40 * mb, 30 * mb, 20 * mb, 100 * mb, 1];
        let rounds = download_rounds(&[0, 1, 2, 3, 4], &sizes);
        assert_eq!(rounds, [vec![0], vec![1, 2], vec![3], vec![4]]);
    }

    fn offer(st: &mut PlanState, pages: &[(u32, u8)]) {
        for &(pgno, b) in pages {
            if st.claim(pgno) {
                st.add(ltx::page_checksum(pgno, &page(b)));
            }
        }
    }

    /// Newest file first: its copy of a page wins, pages above its size are dropped,
    /// pages no file holds count as zeros; the result is the checksum of that image as
    /// the replicator's table computes it.
    #[test]
    fn plan_state_is_the_checksum_of_the_image_the_plan_builds() {
        let mut st = PlanState::default();
        st.begin_file(512, 5).unwrap();
        offer(&mut st, &[(2, 20), (7, 70)]);
        assert_eq!(st.begin_file(1024, 9), Err(512));
        st.begin_file(512, 9).unwrap();
        offer(&mut st, &[(1, 1), (2, 2), (3, 3)]);
        let mut image = PageSums::new_image(0);
        for (pgno, b) in [(1, 1), (2, 20), (3, 3)] {
            image.set(pgno, &page(b));
        }
        image.resize(5, 512);
        assert_eq!(st.checksum(), image.value());
        // The older copy of page 2 would give another state.
        image.set(2, &page(2));
        assert_ne!(st.checksum(), image.value());
    }

    #[test]
    fn state_mismatch_names_the_newest_file_and_the_files_without_a_digest() {
        let meta = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let sha = "a".repeat(64);
        let snap = meta(&[(METADATA_SHA256, &sha)]);
        let newest = meta(&[
            (METADATA_SHA256, &sha),
            (METADATA_DB_CHECKSUM, "80000000000000AB"),
        ]);
        let files = [
            ("snap", Some(&snap)),
            ("compacted", None),
            ("newest", Some(&newest)),
        ];
        assert!(state_mismatch(&files, 0x8000_0000_0000_00ab).is_none());
        let m = state_mismatch(&files, 0x8000_0000_0000_00ac).unwrap();
        assert_eq!(
            (m.key.as_str(), m.expected.as_str(), m.actual.as_str()),
            ("newest", "80000000000000ab", "80000000000000ac")
        );
        assert_eq!(m.foreign, vec!["compacted".to_string()]);
        // Nothing recorded (Litestream's files): nothing to compare.
        assert!(state_mismatch(&files[..2], 1).is_none());
    }
}
