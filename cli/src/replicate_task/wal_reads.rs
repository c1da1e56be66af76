//! A database's WAL reads and idle release (decision 21): reads answered under the
//! read lock, or, while released, only when identical to the last locked one; taking
//! the lock again on a change; closing the connection of a quiescent database.

use std::collections::BTreeMap;

use anyhow::Result;
use tracing::{debug, error, warn};
use walvault_engine::replicator::Input;

use super::{ATTACH_RETRY, DbTask, INLINE_IO_BYTES, off_task_if};
use crate::database::{self, WalChunk};
use walvault_engine::release::ReadSignature;

impl DbTask {
    /// Answers a WAL read. While released, a read that shows anything other than the
    /// last read under the lock takes the lock again and reads again, so the engine
    /// never consumes bytes read without it. `Some(result)` ends the task.
    pub(super) fn read_wal(&mut self, offset: u64, max_len: u64) -> Result<Option<Result<()>>> {
        let mut chunk = match self.read_chunk(offset, max_len) {
            Ok(c) => c,
            Err(e) => return Ok(Some(self.halt_on(e.context("reading the WAL")))),
        };
        if !self.db.is_attached() {
            let sig = ReadSignature::of(offset, max_len, &chunk);
            if !self.idle.release().unchanged(&sig) {
                match tokio::task::block_in_place(|| self.db.attach()) {
                    Ok(()) => {
                        self.idle.release().woke();
                        debug!(db = %self.name, "the database changed: connection taken again");
                    }
                    Err(e) if database::is_busy(&e) => {
                        warn!(db = %self.name, "taking the read lock again: {e:#}; retrying");
                        self.retry_read =
                            Some((tokio::time::Instant::now() + ATTACH_RETRY, offset, max_len));
                        return Ok(None);
                    }
                    Err(e) => {
                        return Ok(Some(self.halt_on(e.context("taking the read lock again"))));
                    }
                }
                chunk = match self.read_chunk(offset, max_len) {
                    Ok(c) => c,
                    Err(e) => return Ok(Some(self.halt_on(e.context("reading the WAL")))),
                };
            }
        }
        self.engine.handle(
            self.clock.now(),
            Input::WalRead {
                header: chunk.header.as_ref().map(|h| &h[..]),
                file_len: chunk.file_len,
                db_len: chunk.db_len,
                offset,
                data: &chunk.data,
            },
        );
        if self.db.is_attached() {
            // Only a read that leaves the engine quiescent can precede a release, so only
            // such a read is hashed (an active database's reads are not).
            let quiescent = self.engine.is_quiescent();
            self.idle
                .release()
                .set_locked_read(quiescent.then(|| ReadSignature::of(offset, max_len, &chunk)));
        }
        Ok(None)
    }

    pub(super) fn read_chunk(&self, offset: u64, max_len: u64) -> Result<WalChunk> {
        // `watch` reads at most 256 kB at a time, so this stays on the task.
        off_task_if(max_len > INLINE_IO_BYTES, || {
            self.db.check_still_same_file()?;
            database::read_wal(&self.db.path, &self.db.wal_path, offset, max_len)
        })
    }

    /// Stops replicating this database with `e`, logged and returned.
    pub(super) fn halt_on(&mut self, e: anyhow::Error) -> Result<()> {
        error!(db = %self.name, "replication halted: {e:#}");
        let _ = self.db.release_read_lock();
        Err(e.context(self.name.clone()))
    }

    /// Closes the connection of a quiescent database (decision 21).
    pub(super) fn release_idle(&mut self) {
        self.engine
            .handle(self.clock.now(), Input::ReadLockReleased);
        if let Err(e) = self.db.release() {
            warn!(db = %self.name, "ending the read transaction while releasing: {e:#}");
        }
        self.idle.release().released();
        // Nothing is in flight: give back what the busy spell grew.
        self.engine.shrink_to_fit();
        self.links.keep_newest();
        if self.staged.is_empty() {
            self.staged = BTreeMap::new();
        }
        if self.staged_sums.is_empty() {
            self.staged_sums = BTreeMap::new();
        }
        debug!(db = %self.name, "idle: connection closed until the WAL changes");
    }
}
