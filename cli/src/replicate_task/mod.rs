//! One database's replication task: carries out the engine's commands (WAL reads,
//! building and uploading files, checkpoints, persisting the position) and feeds the
//! results back. Uploads run concurrently under a process-wide limit; everything else
//! happens on this task, in order.

mod wal_reads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, error, info, warn};
use walvault_engine::keys::FileId;
use walvault_engine::replicator::{
    CheckResult, Command, Config, Event, Input, Replicator, UploadResult,
};
use walvault_engine::spec::{self, FileSpec, MaterializeError};
use walvault_engine::time::format_rfc3339_ms;

use crate::clock::Clock;
use crate::completion_queue::{Completion, CompletionQueue};
use crate::database::{self, Database};
use crate::idle::{IdleRelease, IdleState};
use crate::integrity::{ChainLinks, HashingWriter};
use crate::position::StateDir;
use crate::remote;
use crate::storage::{METADATA_DB_CHECKSUM, METADATA_TIMESTAMP, PutBody, Store, StoreError};
use walvault_engine::dbsum::PageSums;
use walvault_engine::spec::PageSet;

/// Files whose pages add up to at most this many bytes are built in memory and uploaded
/// from there: no staging file to create, read back and unlink on every upload (most
/// level-0 files are a few kB). Larger ones go through the staging directory, so memory
/// stays bounded by the upload window whatever the transaction size.
const IN_MEMORY_BYTES: u64 = 1 << 20;

/// Local file work up to this size (a WAL read, building a small file) runs right on the
/// task: handing it to another thread costs more (futex wake-ups, thread start-up) than
/// the read itself. Larger work goes through `block_in_place`.
const INLINE_IO_BYTES: u64 = 1 << 20;

/// Runs `f` on this thread, or under `block_in_place` when `large`.
fn off_task_if<T>(large: bool, f: impl FnOnce() -> T) -> T {
    if large {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Whether `spec`'s pages add up to at most [`IN_MEMORY_BYTES`].
fn builds_in_memory(spec: &FileSpec) -> bool {
    let pages = match &spec.pages {
        PageSet::List(list) => list.len() as u64,
        PageSet::Full { .. } => u64::from(spec.header.commit),
    };
    pages * u64::from(spec.header.page_size) <= IN_MEMORY_BYTES
}

/// A built file waiting for its upload (and for retries).
#[derive(Clone)]
enum Staged {
    Memory(Arc<Vec<u8>>),
    Disk(PathBuf),
}

impl Staged {
    fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Staged::Memory(b) => Ok(b.to_vec()),
            Staged::Disk(p) => std::fs::read(p),
        }
    }
}

pub struct DbTask {
    pub name: String,
    db: Database,
    state: StateDir,
    store: Arc<Store>,
    engine: Replicator,
    clock: Clock,
    uploads: Arc<Semaphore>,
    /// Files built for upload: their bytes or where they are, and their SHA-256.
    staged: BTreeMap<FileId, (Staged, String)>,
    links: ChainLinks,
    /// Page checksums of the state the last built file produces (`None` until known:
    /// after a full file, or restored from a clean stop at the same TXID).
    sums: Option<(u64, PageSums)>,
    /// The database checksum each staged file's state has, for retries.
    staged_sums: BTreeMap<FileId, u64>,
    completions: Arc<CompletionQueue>,
    snapshot_on_stop: bool,
    idle: IdleState,
    /// A WAL read that had to take the lock again and found SQLite busy: tried again
    /// at this time (the engine waits for its answer meanwhile).
    retry_read: Option<(tokio::time::Instant, u64, u64)>,
}

/// How long to wait before taking the lock again after SQLite said busy.
const ATTACH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl DbTask {
    pub fn new(
        db: Database,
        store: Arc<Store>,
        cfg: Config,
        uploads: Arc<Semaphore>,
        snapshot_on_stop: bool,
        idle: IdleRelease,
    ) -> Result<DbTask> {
        let name = database::db_name(&db.path)?;
        let state = StateDir::for_db(&db.path);
        state.prepare()?;
        Ok(DbTask {
            name,
            db,
            state,
            store,
            engine: Replicator::new(cfg),
            clock: Clock::new(),
            uploads,
            staged: BTreeMap::new(),
            links: ChainLinks::default(),
            sums: None,
            staged_sums: BTreeMap::new(),
            completions: Arc::default(),
            snapshot_on_stop,
            idle: IdleState::new(idle),
            retry_read: None,
        })
    }

    /// Runs until the engine stops (after `shutdown` fires) or halts.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) -> Result<()> {
        // The start-up awaits the store's listing, whose future is large: boxed, so each
        // task keeps only the loop's small state for its lifetime (12 kB less per
        // database, measured with massif at 300 databases).
        Box::pin(self.start()).await?;
        self.replicate(shutdown).await
    }

    /// Waits for a place in the start-up gate, lists the replica, takes the read lock
    /// and starts the engine.
    async fn start(&mut self) -> Result<()> {
        let name = self.name.clone();
        self.idle.enter_start().await;
        let local = self.state.load()?;
        // A mark left by a run that did not stop cleanly: its requests may still land.
        let unfinished_run = self.state.unfinished_run()?;
        let (tip, tip_digest) = remote::tip_with_digest(&self.store, &name)
            .await
            .with_context(|| format!("{name}: reading the replica"))?;
        tokio::task::block_in_place(|| self.db.attach())
            .with_context(|| format!("{name}: taking the read lock"))?;
        info!(db = %name, remote_txid = format_args!("{:016x}", tip.max_txid), "starting replication");
        self.sums = self.state.take_sums(tip.chain_end, tip_digest.as_deref());
        self.links.seed(tip.chain_end, tip_digest);
        let page_size = self.db.page_size;
        self.engine.handle(
            self.clock.now(),
            Input::Start {
                page_size,
                local,
                remote: tip,
                unfinished_run,
            },
        );
        // Marks this run before any upload can be sent (Start only asks for WAL reads);
        // only a clean stop removes the mark.
        let first_txid = self.engine.next_txid();
        tokio::task::block_in_place(|| self.state.begin_run(first_txid))
            .with_context(|| format!("{name}: marking the run in the state directory"))?;
        Ok(())
    }

    async fn replicate(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut shutdown_sent = false;
        loop {
            if *shutdown.borrow() && !shutdown_sent {
                shutdown_sent = true;
                let snapshot = self.snapshot_on_stop;
                self.engine
                    .handle(self.clock.now(), Input::Shutdown { snapshot });
            }
            while let Some(cmd) = self.engine.poll_command() {
                if let Some(done) = self.execute(cmd)? {
                    return done;
                }
            }
            let quiescent = self.engine.is_quiescent();
            self.idle
                .note_progress(quiescent, std::time::Instant::now());
            if self.db.is_attached()
                && self.retry_read.is_none()
                && self.idle.release().last_read_was(self.engine.next_read())
                && self
                    .idle
                    .release()
                    .should_release(quiescent, self.clock.now().mono_ms)
            {
                self.release_idle();
            }
            let deadline = self.engine.poll_timeout().map(|t| self.clock.instant_at(t));
            let deadline = match (deadline, self.retry_read) {
                (Some(d), Some((r, ..))) => Some(d.min(r)),
                (d, r) => d.or(r.map(|(r, ..)| r)),
            };
            tokio::select! {
                batch = self.completions.next_batch() => {
                    let now = self.clock.now();
                    for c in batch {
                        match c {
                            Completion::Upload { file, attempt, result } => {
                                self.engine.handle(now, Input::UploadDone { file, attempt, result })
                            }
                            Completion::Check { file, attempt, result } => {
                                self.engine.handle(now, Input::CheckDone { file, attempt, result })
                            }
                        }
                    }
                }
                _ = sleep_until(deadline) => {
                    if let Some((at, offset, max_len)) = self.retry_read
                        && at <= tokio::time::Instant::now()
                    {
                        self.retry_read = None;
                        if let Some(done) = self.read_wal(offset, max_len)? {
                            return done;
                        }
                    }
                    self.engine.handle_timeout(self.clock.now())
                }
                r = shutdown.changed(), if !shutdown_sent => {
                    if r.is_err() {
                        // The sender is gone: treat it as a shutdown request.
                        shutdown_sent = true;
                        let snapshot = self.snapshot_on_stop;
                        self.engine.handle(self.clock.now(), Input::Shutdown { snapshot });
                    }
                }
            }
        }
    }

    /// Carries out one command. `Some(result)` ends the task.
    fn execute(&mut self, cmd: Command) -> Result<Option<Result<()>>> {
        match cmd {
            Command::ReadWal { offset, max_len } => {
                if let Some(done) = self.read_wal(offset, max_len)? {
                    return Ok(Some(done));
                }
            }
            Command::StatWal => {
                let (len, stamp, idle_ms) = crate::database::stat_wal(&self.db.wal_path);
                self.engine.handle(
                    self.clock.now(),
                    Input::WalStat {
                        len,
                        stamp,
                        idle_ms,
                    },
                );
            }
            Command::Upload {
                file,
                spec,
                attempt,
            } => self.upload(file, spec, attempt),
            Command::CheckUpload {
                file,
                spec,
                attempt,
            } => self.check(file, spec, attempt),
            Command::Forget { file } => {
                self.staged_sums.remove(&file);
                if let Some((Staged::Disk(path), _)) = self.staged.remove(&file) {
                    let _ = std::fs::remove_file(path);
                }
            }
            Command::LockWriters => {
                let t = std::time::Instant::now();
                let ok = tokio::task::block_in_place(|| self.db.lock_writers())
                    .with_context(|| format!("{}: blocking writers for a checkpoint", self.name))?;
                debug!(db = %self.name, ok, ms = t.elapsed().as_millis() as u64, "writers blocked for a checkpoint");
                self.engine
                    .handle(self.clock.now(), Input::WritersLocked { ok });
            }
            Command::UnlockWriters => {
                tokio::task::block_in_place(|| self.db.unlock_writers())
                    .with_context(|| format!("{}: letting writers go", self.name))?;
                debug!(db = %self.name, "checkpoint abandoned, writers released");
            }
            Command::Checkpoint { mode } => {
                let t = std::time::Instant::now();
                let result = tokio::task::block_in_place(|| self.db.checkpoint(mode))
                    .map_err(|e| format!("{e:#}"));
                debug!(db = %self.name, ?result, ms = t.elapsed().as_millis() as u64, "checkpoint ran");
                self.engine
                    .handle(self.clock.now(), Input::CheckpointDone { mode, result });
            }
            Command::Persist(pos) => {
                // A few dozen bytes, no fsync (decision 19): not worth a thread hand-off.
                self.state.save(&pos).with_context(|| {
                    format!("{}: persisting the replication position", self.name)
                })?;
            }
            Command::Event(e) => {
                if let Event::SnapshotStarted { pages, .. } = e {
                    let bytes = u64::from(pages) * u64::from(self.db.page_size);
                    match self.idle.release().on_whole_file(bytes) {
                        Some(true) => {
                            info!(db = %self.name, "the WAL was checkpointed away while the database was released: \
                            it keeps its connection from now on (each such wake reads the whole database)")
                        }
                        Some(false) => {
                            debug!(db = %self.name, "the WAL was checkpointed away while the database was released")
                        }
                        None => {}
                    }
                }
                self.log_event(e)
            }
            Command::Stopped => {
                // Everything is durable: the checksums describe the tip, so the next start
                // can keep recording them without reading the whole database.
                if let Some((txid, sums)) = &self.sums
                    && *txid == self.engine.durable().txid
                    && let Some(sha) = self.links.get(*txid)
                    && let Err(e) = self.state.save_sums(*txid, sha, sums)
                {
                    warn!(db = %self.name, "could not save page checksums: {e:#}");
                }
                // The position becomes durable before the mark that says the stop was
                // clean disappears.
                if let Err(e) = self.state.sync_position() {
                    warn!(db = %self.name, "could not make the position durable: {e:#}");
                } else if let Err(e) = self.state.end_run() {
                    warn!(db = %self.name, "could not record the clean stop: {e:#}");
                }
                info!(db = %self.name, txid = format_args!("{:016x}", self.engine.durable().txid), "stopped: everything committed is in the replica");
                let _ = self.db.release_read_lock();
                return Ok(Some(Ok(())));
            }
            Command::Halt { reason } => {
                error!(db = %self.name, "replication halted: {reason}");
                let _ = self.db.release_read_lock();
                return Ok(Some(Err(anyhow::anyhow!("{}: {reason}", self.name))));
            }
        }
        Ok(None)
    }

    /// Builds the file into the staging area (first attempt only), then uploads it on
    /// a separate task under the process-wide upload limit.
    fn upload(&mut self, file: FileId, spec: Arc<FileSpec>, attempt: u32) {
        let (staged, sha, db_sum) = match self.staged.get(&file) {
            Some((p, sha)) => (p.clone(), sha.clone(), None),
            None => match off_task_if(!builds_in_memory(&spec), || self.stage(file, &spec)) {
                Ok((p, sha, sums)) => {
                    self.links.record(file, &sha);
                    self.staged.insert(file, (p.clone(), sha.clone()));
                    let db_sum = sums.as_ref().map(PageSums::value);
                    if file.level == 0 {
                        self.sums = sums.map(|s| (file.max_txid, s));
                    }
                    (p, sha, db_sum)
                }
                Err(e) => {
                    warn!(db = %self.name, %file, "could not build file: {e:#}");
                    self.completions.send(Completion::Upload {
                        file,
                        attempt,
                        result: UploadResult::SourceChanged(format!("{e:#}")),
                    });
                    return;
                }
            },
        };
        let key = remote::key(&self.store, &self.name, file);
        let store = Arc::clone(&self.store);
        let tx = Arc::clone(&self.completions);
        let sem = Arc::clone(&self.uploads);
        let mut meta = vec![(
            METADATA_TIMESTAMP,
            format_rfc3339_ms(spec.header.timestamp_ms),
        )];
        meta.extend(self.links.metadata(file, &sha));
        if let Some(sum) = db_sum.or_else(|| self.staged_sums.get(&file).copied()) {
            self.staged_sums.insert(file, sum);
            meta.push((METADATA_DB_CHECKSUM, format!("{sum:016x}")));
        }
        debug!(db = %self.name, %key, attempt, "uploading");
        tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let body = match &staged {
                Staged::Memory(bytes) => PutBody::Bytes(bytes),
                Staged::Disk(path) => PutBody::File(path),
            };
            let r = store.put(&key, body, &meta, true).await;
            let result = match r {
                Ok(()) => UploadResult::Stored,
                Err(StoreError::AlreadyExists(_)) => UploadResult::AlreadyExists,
                Err(StoreError::Ambiguous(m)) => UploadResult::Unknown(m),
                Err(StoreError::Transient(m)) => UploadResult::Transient(m),
                Err(e @ (StoreError::Permanent(_) | StoreError::NotFound(_))) => {
                    UploadResult::Permanent(e.to_string())
                }
            };
            tx.send(Completion::Upload {
                file,
                attempt,
                result,
            });
        });
    }

    /// Builds the file (in memory when small, else in the staging area); returns it,
    /// its SHA-256 and the page checksums of the state it produces (when the state
    /// before it is known).
    fn stage(&self, file: FileId, spec: &FileSpec) -> Result<(Staged, String, Option<PageSums>)> {
        let mut pages = self.db.pages()?;
        if builds_in_memory(spec) {
            let out = HashingWriter::new(Vec::new());
            let (w, sums) = self.encode(spec, &mut pages, out)?;
            let (bytes, sha) = w.finish();
            return Ok((Staged::Memory(Arc::new(bytes)), sha, sums));
        }
        let path = self.state.staging().join(format!(
            "{:04x}-{:016x}-{:016x}.ltx",
            file.level, file.min_txid, file.max_txid
        ));
        let out = HashingWriter::new(std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        ));
        let (w, sums) = self.encode(spec, &mut pages, out)?;
        let (w, sha) = w.finish();
        let f = w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error()))?;
        // No fsync: a staged file only has to outlive this process (a restart empties
        // the staging area and rebuilds from the WAL), and the upload reads it back
        // through the page cache.
        drop(f);
        Ok((Staged::Disk(path), sha, sums))
    }

    /// Encodes the file against the running checksum table (a whole-database file after
    /// a WAL that restarted unseen goes out as the pages that changed, decision 23).
    fn encode<W: std::io::Write>(
        &self,
        spec: &FileSpec,
        pages: &mut dyn spec::PageReader,
        out: W,
    ) -> Result<(W, Option<PageSums>)> {
        let t = spec::materialize_tracked(spec, pages, out, self.sums.as_ref())
            .map_err(|e: MaterializeError| anyhow::anyhow!(e))?;
        if let Some(n) = t.diffed {
            info!(db = %self.name, txid = format_args!("{:016x}", spec.header.max_txid), pages = n,
                of = spec.page_count(), "whole-database file built as the pages that changed");
        }
        Ok((t.out, t.sums))
    }

    /// Does the store hold exactly our file? (After an ambiguous or refused upload.)
    fn check(&mut self, file: FileId, spec: Arc<FileSpec>, attempt: u32) {
        let staged = self.staged.get(&file).map(|(p, _)| p.clone());
        let expected = match staged.as_ref().map(Staged::read) {
            Some(Ok(bytes)) => Ok(bytes),
            // A file built against page checksums cannot be rebuilt from its spec alone
            // (its staged copy lives until the engine forgets the file).
            _ if spec::diffable(&spec) => Err(anyhow::anyhow!("its staged copy is gone")),
            _ => tokio::task::block_in_place(|| -> Result<Vec<u8>> {
                let mut pages = self.db.pages()?;
                Ok(spec::materialize(&spec, &mut pages, Vec::new())?.0)
            }),
        };
        let key = remote::key(&self.store, &self.name, file);
        let store = Arc::clone(&self.store);
        let tx = Arc::clone(&self.completions);
        let sem = Arc::clone(&self.uploads);
        tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let result = match (expected, store.get(&key).await) {
                (_, Err(StoreError::NotFound(_))) => CheckResult::Absent,
                (_, Err(e)) => CheckResult::Failed(e.to_string()),
                (Ok(ours), Ok(theirs)) if ours == theirs => CheckResult::Matches,
                (Ok(_), Ok(_)) => CheckResult::Differs,
                (Err(e), Ok(_)) => {
                    CheckResult::Failed(format!("cannot rebuild our file to compare: {e:#}"))
                }
            };
            tx.send(Completion::Check {
                file,
                attempt,
                result,
            });
        });
    }

    fn log_event(&self, e: Event) {
        let db = &self.name;
        match e {
            Event::SnapshotStarted {
                txid,
                reason,
                pages,
            } => {
                info!(%db, txid = format_args!("{txid:016x}"), ?reason, pages, "writing the whole database (only the pages that changed when the shipped state's checksums are known)")
            }
            Event::FileCut { file, pages, txns } => debug!(%db, %file, pages, txns, "file cut"),
            Event::ShippedWhenQuiet { quiet_ms, txns } => {
                debug!(%db, quiet_ms, txns, "the writer went quiet: shipping before the tick")
            }
            Event::Durable { txid } => debug!(%db, txid = format_args!("{txid:016x}"), "durable"),
            Event::UploadRetry {
                file,
                attempt,
                delay_ms,
                error,
            } => {
                warn!(%db, %file, attempt, delay_ms, "upload failed, will retry: {error}")
            }
            Event::Resumed { txid, wal_end } => {
                info!(%db, txid = format_args!("{txid:016x}"), wal_end, "resuming the existing chain")
            }
            Event::RemoteBehind {
                local_txid,
                remote_txid,
            } => error!(
                %db,
                "the replica lists TXIDs only up to {remote_txid:016x} but {local_txid:016x} was acknowledged \
                 earlier: the store lost acknowledged writes, the replica was reset, or its listing lags; \
                 continuing above {local_txid:016x} with a full snapshot"
            ),
            Event::TxidsFenced { known, next } => info!(
                %db,
                "the previous run did not stop cleanly: its last uploads may still land, so new files \
                 start at TXID {next:016x} (skipping those after {known:016x}); the first one continues \
                 the chain"
            ),
            Event::CheckpointDone {
                mode,
                busy,
                shipped_frames,
                log_frames,
                restart_expected,
            } => {
                debug!(%db, ?mode, busy, shipped_frames, log_frames, restart_expected, "checkpoint")
            }
            Event::WalChanged { change, continues } => {
                if continues {
                    debug!(%db, ?change, "WAL restarted after our checkpoint")
                } else {
                    warn!(%db, ?change, "the WAL changed behind walvault's back: writing a whole-database file")
                }
            }
            Event::CheckpointFailed { error } => warn!(%db, "checkpoint failed: {error}"),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Guards against two tasks replicating the same name.
pub fn check_unique_names(names: &[String]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            bail!(
                "two databases are named '{n}': each database needs a distinct file name (stem) in one replica"
            );
        }
    }
    Ok(())
}
