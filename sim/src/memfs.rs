//! The simulated local file system: every file a run's SQLite connections use (the
//! database, its WAL, rollback journals during creation) lives here in memory, with
//! POSIX semantics where SQLite and the simulator can tell: a deleted file stays
//! readable through handles opened before, a path opened again after a delete is a new
//! file. Each file carries SQLite's lock state (the database's SHARED / RESERVED /
//! PENDING / EXCLUSIVE locks per open handle) and, for a database, the WAL index
//! ("-shm") that every connection of the run maps, with its eight lock slots, as the
//! unix VFS keeps them per inode. `memvfs.rs` is the SQLite side of it.
//!
//! Why: on tmpfs every WAL frame write, page read and lock was a system call, the
//! largest single cost of a run. Nothing here reads a clock or randomness; the one
//! global map is keyed by path (runs in one process take turns, `process_lock`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// SQLite's lock levels (`SQLITE_LOCK_*`).
pub const LOCK_NONE: i32 = 0;
pub const LOCK_SHARED: i32 = 1;
pub const LOCK_RESERVED: i32 = 2;
pub const LOCK_PENDING: i32 = 3;
pub const LOCK_EXCLUSIVE: i32 = 4;

/// One WAL-index region, allocated once and never moved while mapped (SQLite keeps the
/// pointer).
struct Region(*mut [u8]);

// SAFETY: a region is plain memory owned by its `Shm`; the simulator is
// single-threaded and runs in one process take turns (`process_lock`).
unsafe impl Send for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw in `Shm::map`, freed exactly once here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// A connection's hold on the WAL index: which of the 8 lock slots it holds.
#[derive(Clone, Copy)]
struct ShmHolder {
    id: u64,
    shared: u8,
    excl: u8,
}

#[derive(Default)]
struct Shm {
    regions: Vec<Region>,
    holders: Vec<ShmHolder>,
}

#[derive(Default)]
struct Inner {
    data: Vec<u8>,
    /// Writes and truncations so far: the file's modification stamp.
    writes: u64,
    /// Simulated time of the last write or truncation (see [`set_time`]).
    modified_ms: u64,
    /// Lock level per open handle (by handle id).
    locks: Vec<(u64, i32)>,
    shm: Shm,
}

/// One file (an inode).
#[derive(Default)]
pub struct Node(Mutex<Inner>);

/// A handle on a file: what a file descriptor is to the simulator's own reads.
#[derive(Clone)]
pub struct MemFile(Arc<Node>);

/// The simulated time writes are stamped with: set by the world as its clock moves
/// (runs in one process take turns, so one clock serves them all).
static TIME_MS: AtomicU64 = AtomicU64::new(0);

pub fn set_time(ms: u64) {
    TIME_MS.store(ms, Ordering::Relaxed);
}

fn now_ms() -> u64 {
    TIME_MS.load(Ordering::Relaxed)
}

fn fs() -> MutexGuard<'static, BTreeMap<String, Arc<Node>>> {
    static FS: Mutex<BTreeMap<String, Arc<Node>>> = Mutex::new(BTreeMap::new());
    FS.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The file at `path`, if there is one.
pub fn open(path: &Path) -> Option<MemFile> {
    lookup(&key(path))
}

pub(crate) fn lookup(path: &str) -> Option<MemFile> {
    fs().get(path).cloned().map(MemFile)
}

/// The file at `path`, created empty when missing.
pub(crate) fn open_or_create(path: &str) -> MemFile {
    MemFile(fs().entry(path.to_owned()).or_default().clone())
}

/// A file that no path names (SQLite's temporary files).
pub(crate) fn anonymous() -> MemFile {
    MemFile(Arc::default())
}

/// Unlinks `path`; open handles keep the contents.
pub(crate) fn delete(path: &str) -> bool {
    fs().remove(path).is_some()
}

/// The whole contents of the file at `path`.
pub fn read(path: &Path) -> Option<Vec<u8>> {
    open(path).map(|f| f.inner().data.clone())
}

/// Unlinks every file below `dir` (a run's directory at its start and end).
pub fn remove_dir(dir: &Path) {
    let prefix = format!("{}/", key(dir));
    fs().retain(|k, _| !k.starts_with(&prefix));
}

/// Writes every file below `dir` to the real file system, in `dir` (a failed run's
/// directory kept for inspection).
pub fn dump_dir(dir: &Path) -> std::io::Result<()> {
    let prefix = format!("{}/", key(dir));
    let files: Vec<(String, Vec<u8>)> = fs()
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, n)| (k.clone(), MemFile(n.clone()).inner().data.clone()))
        .collect();
    std::fs::create_dir_all(dir)?;
    for (k, data) in files {
        std::fs::write(k, data)?;
    }
    Ok(())
}

impl MemFile {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> u64 {
        self.inner().data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Like `pread`: as many bytes as there are at `offset`, 0 at or past the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let g = self.inner();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(g.data.len());
        let n = buf.len().min(g.data.len() - start);
        buf[..n].copy_from_slice(&g.data[start..start + n]);
        Ok(n)
    }

    /// Up to `max` bytes from `offset` (fewer at the end of the file), appended to
    /// `out` without zero-filling it first.
    pub fn read_into(&self, out: &mut Vec<u8>, offset: u64, max: u64) {
        let g = self.inner();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(g.data.len());
        let n = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(g.data.len() - start);
        out.extend_from_slice(&g.data[start..start + n]);
    }

    /// `f` over the file's bytes as they are now, without copying them.
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.inner().data)
    }

    /// All of `buf` from `offset`, or `UnexpectedEof`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if self.read_at(buf, offset)? == buf.len() {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ))
        }
    }

    /// Like `pwrite`: a gap before `offset` reads as zeros.
    pub fn write_at(&self, data: &[u8], offset: u64) {
        let mut g = self.inner();
        let at = offset as usize;
        // Appends (most writes: WAL frames, a growing database) extend the buffer
        // instead of zero-filling it and then overwriting the zeros.
        let old_len = g.data.len();
        if at >= old_len {
            g.data.resize(at, 0);
            g.data.extend_from_slice(data);
        } else {
            let inside = data.len().min(old_len - at);
            g.data[at..at + inside].copy_from_slice(&data[..inside]);
            g.data.extend_from_slice(&data[inside..]);
        }
        g.writes += 1;
        g.modified_ms = now_ms();
    }

    pub fn truncate(&self, len: u64) {
        let mut g = self.inner();
        g.data.resize(len as usize, 0);
        g.writes += 1;
        g.modified_ms = now_ms();
    }

    /// The simulated time of the last write: a stat's modification time.
    pub fn modified_ms(&self) -> u64 {
        self.inner().modified_ms
    }

    /// Changes with every write: what a modification time is to a stat (exact here,
    /// where production's can miss a write within the clock's granularity, which only
    /// delays a cut when the writer goes quiet).
    pub fn stamp(&self) -> u64 {
        self.inner().writes
    }

    /// The lock level handle `id` holds.
    fn level_of(g: &Inner, id: u64) -> i32 {
        g.locks
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(LOCK_NONE, |(_, l)| *l)
    }

    fn set_level(g: &mut Inner, id: u64, level: i32) {
        g.locks.retain(|(i, _)| *i != id);
        if level > LOCK_NONE {
            g.locks.push((id, level));
        }
    }

    /// `xLock` as the unix VFS does it between connections of one process (`unixLock`):
    /// `false` is SQLITE_BUSY.
    pub(crate) fn lock(&self, id: u64, want: i32) -> bool {
        let mut g = self.inner();
        let mine = Self::level_of(&g, id);
        if mine >= want {
            return true;
        }
        let others = g
            .locks
            .iter()
            .filter(|(i, _)| *i != id)
            .map(|(_, l)| *l)
            .max()
            .unwrap_or(LOCK_NONE);
        if others > mine && (others >= LOCK_PENDING || want > LOCK_SHARED) {
            return false;
        }
        if want >= LOCK_PENDING && others >= LOCK_SHARED {
            // Only a RESERVED holder takes PENDING on its way (and keeps it, which
            // keeps new readers out); from SHARED the request just fails.
            if mine >= LOCK_RESERVED {
                Self::set_level(&mut g, id, LOCK_PENDING);
            }
            return false;
        }
        Self::set_level(&mut g, id, want);
        true
    }

    /// `xUnlock` down to `level` (NONE or SHARED).
    pub(crate) fn unlock(&self, id: u64, level: i32) {
        let mut g = self.inner();
        if Self::level_of(&g, id) > level {
            Self::set_level(&mut g, id, level);
        }
    }

    /// `xCheckReservedLock`: does any handle hold RESERVED or more?
    pub(crate) fn reserved(&self) -> bool {
        self.inner().locks.iter().any(|(_, l)| *l >= LOCK_RESERVED)
    }

    /// `xShmMap`: region `i` of `size` bytes, created (zeroed) when `extend`, else
    /// `None` while it does not exist. Registers `id` as a user of the WAL index.
    pub(crate) fn shm_map(&self, id: u64, i: usize, size: usize, extend: bool) -> Option<*mut u8> {
        let mut g = self.inner();
        if !g.shm.holders.iter().any(|h| h.id == id) {
            g.shm.holders.push(ShmHolder {
                id,
                shared: 0,
                excl: 0,
            });
        }
        if i >= g.shm.regions.len() {
            if !extend {
                return None;
            }
            while g.shm.regions.len() <= i {
                let r = Box::into_raw(vec![0u8; size].into_boxed_slice());
                g.shm.regions.push(Region(r));
            }
        }
        Some(g.shm.regions[i].0.cast::<u8>())
    }

    /// `xShmLock` on slots `offset..offset + n`; `false` is SQLITE_BUSY.
    pub(crate) fn shm_lock(&self, id: u64, offset: u32, n: u32, lock: bool, excl: bool) -> bool {
        let mut g = self.inner();
        let mask = (((1u16 << n) - 1) << offset) as u8;
        let Some(me) = g.shm.holders.iter().position(|h| h.id == id) else {
            return !lock;
        };
        if !lock {
            let h = &mut g.shm.holders[me];
            if excl {
                h.excl &= !mask;
            } else {
                h.shared &= !mask;
            }
            return true;
        }
        let others = g.shm.holders.iter().filter(|h| h.id != id);
        let busy = if excl {
            others
                .clone()
                .any(|h| h.excl & mask != 0 || h.shared & mask != 0)
        } else {
            others.clone().any(|h| h.excl & mask != 0)
        };
        if busy {
            return false;
        }
        let h = &mut g.shm.holders[me];
        if excl {
            h.excl |= mask;
        } else {
            h.shared |= mask;
        }
        true
    }

    /// `xShmUnmap` (and a closing handle): `id` lets go of the WAL index; with its
    /// last user gone the index is dropped, as the unix VFS truncates an -shm file
    /// that nobody has open, and the next user rebuilds it from the WAL.
    pub(crate) fn shm_unmap(&self, id: u64) {
        let mut g = self.inner();
        g.shm.holders.retain(|h| h.id != id);
        if g.shm.holders.is_empty() {
            g.shm.regions.clear();
        }
    }

    /// A closing handle drops its locks.
    pub(crate) fn release(&self, id: u64) {
        let mut g = self.inner();
        Self::set_level(&mut g, id, LOCK_NONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_follow_sqlite_rules() {
        let f = anonymous();
        assert!(f.lock(1, LOCK_SHARED));
        assert!(f.lock(2, LOCK_SHARED));
        assert!(f.lock(1, LOCK_RESERVED));
        assert!(!f.lock(2, LOCK_RESERVED));
        assert!(f.reserved());
        // Readers: EXCLUSIVE waits at PENDING, and PENDING keeps new readers out.
        assert!(!f.lock(1, LOCK_EXCLUSIVE));
        assert!(!f.lock(3, LOCK_SHARED));
        f.unlock(2, LOCK_NONE);
        assert!(f.lock(1, LOCK_EXCLUSIVE));
        f.unlock(1, LOCK_SHARED);
        assert!(f.lock(3, LOCK_SHARED));
        f.release(1);
        f.release(3);
        assert!(!f.reserved());
    }

    #[test]
    fn shm_slots_and_regions() {
        let f = anonymous();
        assert_eq!(f.shm_map(1, 0, 32768, false), None);
        let p = f.shm_map(1, 0, 32768, true).expect("region");
        assert_eq!(f.shm_map(2, 0, 32768, false), Some(p));
        assert!(f.shm_lock(1, 3, 1, true, false));
        assert!(f.shm_lock(2, 3, 1, true, false));
        assert!(!f.shm_lock(2, 0, 4, true, true));
        assert!(f.shm_lock(2, 0, 3, true, true));
        assert!(!f.shm_lock(1, 1, 1, true, false));
        assert!(f.shm_lock(2, 0, 3, false, true));
        assert!(f.shm_lock(1, 1, 1, true, false));
        f.shm_unmap(1);
        f.shm_unmap(2);
        assert_eq!(f.shm_map(1, 0, 32768, false), None);
    }

    #[test]
    fn writes_fill_gaps_overwrite_and_extend_like_pwrite() {
        let p = "/walvault-memfs-test/w";
        let f = open_or_create(p);
        f.write_at(b"ab", 3); // gap: zeros before
        f.write_at(b"XYZW", 4); // half inside, half beyond the end
        f.write_at(b"q", 1); // inside
        f.write_at(b"end", 8); // exactly at the end
        let mut b = [9u8; 12];
        assert_eq!(f.read_at(&mut b, 0).expect("read"), 11);
        assert_eq!(&b[..11], b"\0q\0aXYZWend");
        delete(p);
    }

    #[test]
    fn deleted_files_stay_readable_through_open_handles() {
        let p = "/walvault-memfs-test/a";
        let f = open_or_create(p);
        f.write_at(b"xyz", 2);
        assert!(delete(p));
        let mut b = [9u8; 6];
        assert_eq!(f.read_at(&mut b, 0).expect("read"), 5);
        assert_eq!(&b[..5], b"\0\0xyz");
        assert!(lookup(p).is_none());
        assert_eq!(open_or_create(p).len(), 0);
        delete(p);
    }
}
