//! End-of-run checks: lag zero, an idle database costs nothing, the latest restore
//! equals the source, lossy stores are reported.

use walvault_engine::replicator::{RemoteTip, Replicator};

use crate::coverage::Cov;
use crate::invariant::Inv;

use crate::world::*;

impl World {
    /// End of the run: lag is zero, the idle database costs nothing, the latest
    /// restore equals the source byte for byte and passes integrity_check, and the
    /// oracle agrees with SQLite's own file.
    pub(crate) fn final_checks(&mut self) {
        self.trace
            .record(self.now, "end", &[], &[], || "final checks".into());
        let lossy = self.checker.lost_any();
        if !self.lag_zero_since_commit && !self.lag_zero_now() {
            self.fail(
                Inv::Liveness,
                "lag is not zero at the end of the idle window".into(),
            );
            return;
        }
        let durable = match &self.proc {
            Proc::Running(r) => r.engine.durable().txid,
            _ => {
                self.fail(
                    Inv::Liveness,
                    "the replicator is not running at the end".into(),
                );
                return;
            }
        };
        if self.idle_cuts > 1 {
            let n = self.idle_cuts;
            self.fail(
                Inv::Bounds,
                format!(
                    "{n} files cut while the database was idle (at most one, after a checkpoint)"
                ),
            );
            return;
        }
        let frames = self.oracle.wal_frames();
        if frames >= self.params.checkpoint_frames + 2 {
            self.fail(
                Inv::Liveness,
                format!(
                    "the WAL holds {frames} frames at the end of the idle window (checkpoint threshold {}): it keeps growing",
                    self.params.checkpoint_frames
                ),
            );
            return;
        }
        if !lossy {
            if let Err(e) = self.checker.lag_zero(durable, &self.oracle) {
                self.fail(Inv::Liveness, format!("at the end: {e}"));
                return;
            }
            if let Err(v) = self
                .checker
                .cross_check_plan(walvault_engine::restore_plan::Target::Latest, self.now)
            {
                self.set_violation(v);
                return;
            }
            match self.checker.restore_bytes(durable) {
                Err(e) => {
                    self.fail(
                        Inv::Durability,
                        format!("restore of the final TXID failed: {e}"),
                    );
                    return;
                }
                Ok((bytes, _)) => {
                    self.cov.hit(Cov::ByteCompare);
                    if !self.oracle.image().eq_bytes(&bytes) {
                        self.fail(
                            Inv::Restore,
                            format!(
                                "the final restore ({} bytes) differs from the source ({} bytes)",
                                bytes.len(),
                                self.oracle.image().len()
                            ),
                        );
                        return;
                    }
                    if let Err(e) = self.integrity_check(&bytes) {
                        self.fail(Inv::Restore, e);
                        return;
                    }
                    self.cov.hit(Cov::IntegrityCheck);
                }
            }
        }
        self.kill(0);
        self.restart_token += 1;
        match self.app.final_checkpoint() {
            Err(e) => self.fail(Inv::Harness, e),
            Ok((busy, log, done)) if !busy && log == done => {
                let len = self.db_file.len();
                let same = self
                    .db_file
                    .with_bytes(|file| self.oracle.image().eq_bytes(file));
                if !same {
                    self.fail(
                        Inv::Harness,
                        format!(
                            "the oracle's source image ({} bytes) differs from SQLite's own file ({len} bytes)",
                            self.oracle.image().len()
                        ),
                    );
                }
            }
            Ok(_) => {}
        }
        if self.params.lossy {
            self.final_detection();
        }
    }

    /// `PRAGMA integrity_check` on a restored image, as `walvault restore` runs it, on
    /// an in-memory copy (`sqlite3_deserialize`) instead of a file: the same check
    /// without writing and reading the image through the file system. An in-memory
    /// database cannot be in WAL mode, so the copy's header says "rollback journal"
    /// (bytes 18-19), which integrity_check does not look at.
    pub(crate) fn integrity_check(&self, bytes: &[u8]) -> Result<(), String> {
        integrity_check_image(bytes)
    }

    /// Lossy profile: after losses, a restart must report that the store is behind
    /// what was acknowledged (when the local position says so).
    pub(crate) fn final_detection(&mut self) {
        let truth = self.checker.max_txid();
        let local = self.disk.load();
        let Some(l) = local else { return };
        if l.txid <= truth {
            return;
        }
        let mut e = Replicator::new(self.params.engine_config(self.inc + 1));
        e.set_mutation(self.mutation.and_then(crate::mutation::Mutation::engine));
        e.handle(
            self.now(),
            walvault_engine::replicator::Input::Start {
                page_size: self.params.page_size,
                local,
                remote: RemoteTip {
                    max_txid: truth,
                    chain_end: truth,
                    newest: None,
                },
                unfinished_run: None,
            },
        );
        let mut reported = false;
        while let Some(c) = e.poll_command() {
            if matches!(
                c,
                walvault_engine::replicator::Command::Event(
                    walvault_engine::replicator::Event::RemoteBehind { .. }
                )
            ) {
                reported = true;
            }
        }
        if reported {
            self.cov.hit(Cov::RemoteBehind);
        } else {
            self.fail(
                Inv::Detection,
                format!("the store lost TXIDs above {truth} (acknowledged up to {}) and a restart does not report it", l.txid),
            );
        }
    }
}

/// See [`World::integrity_check`].
fn integrity_check_image(bytes: &[u8]) -> Result<(), String> {
    use std::io::Read;
    let verdict: Result<String, String> = (|| {
        let mut c = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
        let image: Box<dyn Read> = if bytes.len() >= 20 && bytes[18] == 2 && bytes[19] == 2 {
            Box::new(bytes[..18].chain(&[1u8, 1][..]).chain(&bytes[20..]))
        } else {
            Box::new(bytes)
        };
        c.deserialize_read_exact(rusqlite::MAIN_DB, image, bytes.len(), true)
            .map_err(|e| e.to_string())?;
        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| e.to_string())
    })();
    match verdict {
        Ok(v) if v == "ok" => Ok(()),
        Ok(v) => Err(format!("the final restore fails integrity_check: {v}")),
        Err(e) => Err(format!("the final restore does not open: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::integrity_check_image;

    /// A WAL-mode database image, as a restore writes it.
    fn image() -> Vec<u8> {
        // SQLite's PRNG is process-wide (WAL salts): not while a run is under way.
        let _turn = crate::process_lock();
        let dir = crate::app::run_dir(0, "integrity-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("db");
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch(
            "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); CREATE INDEX t_v ON t (v);",
        )
        .expect("schema");
        for i in 0..200 {
            c.execute("INSERT INTO t (v) VALUES (?1)", [vec![i as u8; 300]])
                .expect("insert");
        }
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
        drop(c);
        let bytes = std::fs::read(&path).expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    }

    #[test]
    fn checks_a_wal_mode_image_in_memory_and_finds_corruption() {
        let img = image();
        assert_eq!((img[18], img[19]), (2, 2), "a WAL-mode header");
        assert_eq!(integrity_check_image(&img), Ok(()));
        // Scribble over the middle of a b-tree page past the root pages.
        let mut bad = img.clone();
        let at = 1024 * 5 + 100;
        bad[at..at + 400].fill(0x5a);
        assert!(integrity_check_image(&bad).is_err());
    }
}
