//! The local state directory beside a database (`.<file>-walvault/`): the persisted
//! replication position (replaced atomically by rename after every durable advance,
//! fsynced at a clean stop: decision 19), the run mark, and the staging area where large
//! files are built before upload.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use walvault_engine::dbsum::PageSums;
use walvault_engine::replicator::Position;

#[derive(Serialize, Deserialize)]
struct Stored {
    txid: u64,
    salt1: u32,
    salt2: u32,
    wal_end: u64,
    commit: u32,
}

pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn for_db(db_path: &Path) -> StateDir {
        let name = db_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = db_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        StateDir {
            dir: parent.join(format!(".{name}-walvault")),
        }
    }

    pub fn staging(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// Creates the directories and empties the staging area (a crash leaves files
    /// there that the engine will rebuild from the WAL).
    pub fn prepare(&self) -> Result<()> {
        let staging = self.staging();
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("clearing {}", staging.display()))?;
        }
        fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
        Ok(())
    }

    pub fn load(&self) -> Result<Option<Position>> {
        let path = self.dir.join("position.json");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // A damaged position file is not fatal: the store is the authority.
        Ok(serde_json::from_str::<Stored>(&text)
            .ok()
            .map(|s| Position {
                txid: s.txid,
                salt1: s.salt1,
                salt2: s.salt2,
                wal_end: s.wal_end,
                commit: s.commit,
            }))
    }

    /// Replaces the position atomically (temp file, rename) without fsync: a process
    /// crash keeps it (the page cache survives), and a power loss can only leave an
    /// older or unreadable position, which start-up already treats as "behind the
    /// store" (decision 7). [`StateDir::sync_position`] makes it durable at a clean stop.
    pub fn save(&self, p: &Position) -> Result<()> {
        let s = Stored {
            txid: p.txid,
            salt1: p.salt1,
            salt2: p.salt2,
            wal_end: p.wal_end,
            commit: p.commit,
        };
        let path = self.dir.join("position.json");
        let tmp = temp_beside(&path)?;
        fs::write(&tmp, serde_json::to_string(&s)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }

    /// fsyncs the position file and the directory holding it.
    pub fn sync_position(&self) -> Result<()> {
        let path = self.dir.join("position.json");
        match File::open(&path) {
            Ok(f) => f
                .sync_all()
                .with_context(|| format!("syncing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        }
        sync_dir(&self.dir)
    }
}

impl StateDir {
    /// The mark a run that did not stop cleanly left behind: the first TXID it
    /// recorded (0 when unreadable). `None`: the previous run stopped cleanly, or
    /// there was none.
    pub fn unfinished_run(&self) -> Result<Option<u64>> {
        let path = self.dir.join("running");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().parse().unwrap_or(0))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Marks a run as started, durably and before its first upload, with the first
    /// TXID it will use: only a clean stop removes the mark.
    pub fn begin_run(&self, first_txid: u64) -> Result<()> {
        write_atomic(&self.dir.join("running"), first_txid.to_string().as_bytes())
    }

    /// Removes the run mark at a clean stop: every upload sent was answered.
    pub fn end_run(&self) -> Result<()> {
        let path = self.dir.join("running");
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// Saves the page checksums of the state at `txid` (at a clean stop), with the
    /// SHA-256 of the file that ends there, which a later start compares with the
    /// store's tip before trusting them.
    pub fn save_sums(&self, txid: u64, sha: &str, sums: &PageSums) -> Result<()> {
        let mut bytes = SUMS_MAGIC.to_vec();
        bytes.extend(txid.to_le_bytes());
        bytes.push(u8::try_from(sha.len()).context("digest too long")?);
        bytes.extend(sha.as_bytes());
        bytes.extend(sums.to_bytes());
        write_atomic(&self.dir.join(SUMS_FILE), &bytes)
    }

    /// Takes (and removes, so a later crash cannot reuse them) the saved checksums if
    /// they describe the state at `txid` reached by the file whose digest is `sha`:
    /// the store's tip is then exactly the file this machine uploaded last.
    pub fn take_sums(&self, txid: u64, sha: Option<&str>) -> Option<(u64, PageSums)> {
        let _ = fs::remove_file(self.dir.join("page-sums.bin")); // the older format, without a digest
        let path = self.dir.join(SUMS_FILE);
        let bytes = fs::read(&path).ok()?;
        let _ = fs::remove_file(&path);
        let rest = bytes.strip_prefix(SUMS_MAGIC)?;
        let saved = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let n = usize::from(*rest.get(8)?);
        let saved_sha = rest.get(9..9 + n)?;
        let sums = PageSums::from_bytes(rest.get(9 + n..)?)?;
        (saved == txid && txid > 0 && sha.is_some_and(|s| s.as_bytes() == saved_sha))
            .then_some((txid, sums))
    }
}

const SUMS_FILE: &str = "page-sums-v2.bin";
const SUMS_MAGIC: &[u8] = b"WVPS";

/// Temp file in the same directory, fsync, rename over the target, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent directory")?;
    let tmp = temp_beside(path)?;
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

/// `<dir>/.<name>.tmp`: the temporary name a file is written under before the rename.
fn temp_beside(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().context("path has no parent directory")?;
    let name = path.file_name().context("path has no file name")?;
    Ok(dir.join(format!(".{}.tmp", name.to_string_lossy())))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        let sd = StateDir::for_db(&db);
        sd.prepare().unwrap();
        assert_eq!(sd.load().unwrap(), None);
        let p = Position {
            txid: 42,
            salt1: 1,
            salt2: 2,
            wal_end: 4152,
            commit: 9,
        };
        sd.save(&p).unwrap();
        assert_eq!(sd.load().unwrap(), Some(p));
        assert!(sd.dir.ends_with(".app.db-walvault"));
        fs::write(sd.dir.join("position.json"), b"{garbage").unwrap();
        assert_eq!(sd.load().unwrap(), None);
    }
}
