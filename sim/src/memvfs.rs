//! The SQLite VFS over [`crate::memfs`]: every connection of a run opens its database
//! through it (`app::open`), so SQLite's reads, writes, locks and WAL index are memory
//! operations instead of system calls on tmpfs. It behaves as the unix VFS does where
//! SQLite can see it: the same lock rules between connections, sector size (4096) and
//! device characteristics (powersafe overwrite, sub-page reads), so SQLite reads and
//! writes exactly as it does on disk (trace hashes are those of the unix VFS); an empty
//! file reads as absent (`xAccess`); `xSleep` returns at once (the simulation never
//! waits); randomness and time are not used by a run (the PRNG is pinned,
//! `app::pin_sqlite_prng`) and are taken from the default VFS when SQLite asks.
//!
//! Not the default VFS: connections elsewhere in the process (the in-memory
//! `integrity_check`, tests) keep the real file system.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

use crate::memfs::{self, MemFile};

/// The name connections pass to `Connection::open_with_flags_and_vfs`.
pub const NAME: &str = "walvault-sim-mem";

/// What SQLite allocates per open file (`szOsFile`): the base struct, then ours.
#[repr(C)]
struct SimFile {
    base: ffi::sqlite3_file,
    state: *mut State,
}

struct State {
    file: MemFile,
    id: u64,
    /// Unlink on close (SQLITE_OPEN_DELETEONCLOSE with a name).
    delete_path: Option<String>,
}

/// Registers the VFS (once per process) and returns its name.
pub fn name() -> &'static str {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default (unix) VFS, which lives
        // for the whole process; the struct we register is leaked, so it does too.
        unsafe {
            let dflt = ffi::sqlite3_vfs_find(std::ptr::null());
            let vfs = Box::into_raw(Box::new(ffi::sqlite3_vfs {
                iVersion: 2,
                szOsFile: std::mem::size_of::<SimFile>() as c_int,
                mxPathname: 1024,
                pNext: std::ptr::null_mut(),
                zName: c"walvault-sim-mem".as_ptr(),
                pAppData: dflt.cast::<c_void>(),
                xOpen: Some(x_open),
                xDelete: Some(x_delete),
                xAccess: Some(x_access),
                xFullPathname: Some(x_full_pathname),
                xDlOpen: None,
                xDlError: None,
                xDlSym: None,
                xDlClose: None,
                xRandomness: Some(x_randomness),
                xSleep: Some(x_sleep),
                xCurrentTime: Some(x_current_time),
                xGetLastError: Some(x_get_last_error),
                xCurrentTimeInt64: Some(x_current_time_int64),
                xSetSystemCall: None,
                xGetSystemCall: None,
                xNextSystemCall: None,
            }));
            let rc = ffi::sqlite3_vfs_register(vfs, 0);
            assert_eq!(rc, ffi::SQLITE_OK, "registering the in-memory VFS");
        }
    });
    NAME
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

/// # Safety
/// `f` is a file this VFS opened (pMethods set, state not yet freed).
unsafe fn state<'a>(f: *mut ffi::sqlite3_file) -> &'a State {
    // SAFETY: per the contract, `f` points at a SimFile whose state is live.
    unsafe { &*(*f.cast::<SimFile>()).state }
}

fn path_of(z: *const c_char) -> Option<String> {
    if z.is_null() {
        return None;
    }
    // SAFETY: SQLite passes NUL-terminated names.
    Some(unsafe { CStr::from_ptr(z) }.to_string_lossy().into_owned())
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    // SAFETY: SQLite hands us szOsFile bytes; until pMethods is set it will not call
    // xClose, so a failed open leaves it null.
    unsafe { (*f).pMethods = std::ptr::null() };
    let (file, delete_path) = match path_of(z_name) {
        None => (memfs::anonymous(), None),
        Some(p) => {
            let file = if flags & ffi::SQLITE_OPEN_CREATE != 0 {
                memfs::open_or_create(&p)
            } else {
                match memfs::lookup(&p) {
                    Some(f) => f,
                    None => return ffi::SQLITE_CANTOPEN,
                }
            };
            let del = (flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0).then_some(p);
            (file, del)
        }
    };
    let st = Box::new(State {
        file,
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        delete_path,
    });
    // SAFETY: `f` is ours to fill (see above); out_flags may be null.
    unsafe {
        (*f.cast::<SimFile>()).state = Box::into_raw(st);
        (*f).pMethods = &IO_METHODS;
        if !out_flags.is_null() {
            *out_flags = flags;
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    z: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    match path_of(z) {
        Some(p) if memfs::delete(&p) => ffi::SQLITE_OK,
        _ => ffi::SQLITE_IOERR_DELETE_NOENT,
    }
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    z: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let found = path_of(z).and_then(|p| memfs::lookup(&p));
    // unixAccess: for "exists", an empty regular file counts as absent.
    let yes = match found {
        Some(f) => flags != ffi::SQLITE_ACCESS_EXISTS || !f.is_empty(),
        None => false,
    };
    // SAFETY: SQLite passes a valid out pointer.
    unsafe { *out = c_int::from(yes) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    z: *const c_char,
    n_out: c_int,
    z_out: *mut c_char,
) -> c_int {
    // SAFETY: `z` is NUL-terminated; `z_out` has room for `n_out` bytes.
    unsafe {
        let bytes = CStr::from_ptr(z).to_bytes_with_nul();
        if bytes.len() > n_out as usize {
            return ffi::SQLITE_CANTOPEN;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), z_out, bytes.len());
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_randomness(
    _vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // Deterministic: SQLite's PRNG is seeded by the run (SQLITE_TESTCTRL_PRNG_SEED).
    // SAFETY: `out` has room for `n` bytes.
    unsafe { std::ptr::write_bytes(out, 0, n.max(0) as usize) };
    n
}

unsafe extern "C" fn x_sleep(_vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    micros
}

/// The default VFS, kept in pAppData (see `name`), for the clock.
fn default_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: `vfs` is the struct registered in `name`.
    unsafe { (*vfs).pAppData.cast::<ffi::sqlite3_vfs>() }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    let d = default_vfs(vfs);
    // SAFETY: the default VFS lives for the whole process; `out` is valid.
    unsafe { (*d).xCurrentTime.map_or(ffi::SQLITE_ERROR, |x| x(d, out)) }
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    let d = default_vfs(vfs);
    // SAFETY: as in x_current_time.
    unsafe {
        (*d).xCurrentTimeInt64
            .map_or(ffi::SQLITE_ERROR, |x| x(d, out))
    }
}

unsafe extern "C" fn x_get_last_error(
    _vfs: *mut ffi::sqlite3_vfs,
    _n: c_int,
    _z: *mut c_char,
) -> c_int {
    0
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: called once per opened file; the state is freed here and never again.
    let st = unsafe {
        let sf = f.cast::<SimFile>();
        let st = Box::from_raw((*sf).state);
        (*sf).state = std::ptr::null_mut();
        st
    };
    st.file.shm_unmap(st.id);
    st.file.release(st.id);
    if let Some(p) = &st.delete_path {
        memfs::delete(p);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_read(f: *mut ffi::sqlite3_file, p: *mut c_void, n: c_int, at: i64) -> c_int {
    // SAFETY: `p` has room for `n` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n as usize) };
    // SAFETY: `f` is open.
    let got = unsafe { state(f) }
        .file
        .read_at(buf, at as u64)
        .unwrap_or(0);
    if got < buf.len() {
        // As SQLite requires of a short read.
        buf[got..].fill(0);
        return ffi::SQLITE_IOERR_SHORT_READ;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    p: *const c_void,
    n: c_int,
    at: i64,
) -> c_int {
    // SAFETY: `p` holds `n` bytes; `f` is open.
    unsafe {
        state(f).file.write_at(
            std::slice::from_raw_parts(p.cast::<u8>(), n as usize),
            at as u64,
        )
    };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: `f` is open.
    unsafe { state(f) }.file.truncate(size.max(0) as u64);
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_sync(_f: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_size(f: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    // SAFETY: `f` is open; `out` is valid.
    unsafe { *out = state(f).file.len() as i64 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `f` is open.
    let st = unsafe { state(f) };
    if st.file.lock(st.id, level) {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_BUSY
    }
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `f` is open.
    let st = unsafe { state(f) };
    st.file.unlock(st.id, level);
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: `f` is open; `out` is valid.
    unsafe { *out = c_int::from(state(f).file.reserved()) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_control(
    _f: *mut ffi::sqlite3_file,
    _op: c_int,
    _arg: *mut c_void,
) -> c_int {
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn x_sector_size(_f: *mut ffi::sqlite3_file) -> c_int {
    4096
}

/// As the unix VFS answers for a file on Linux: SQLite then writes and reads the same
/// way (no WAL padding; overflow pages read straight from the file, past the cache).
unsafe extern "C" fn x_device_characteristics(_f: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE | ffi::SQLITE_IOCAP_SUBPAGE_READ
}

unsafe extern "C" fn x_shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    // SAFETY: `f` is open; `pp` is valid.
    unsafe {
        let st = state(f);
        *pp = match st
            .file
            .shm_map(st.id, region as usize, size as usize, extend != 0)
        {
            Some(p) => p.cast::<c_void>(),
            None => std::ptr::null_mut(),
        };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: `f` is open.
    let st = unsafe { state(f) };
    let lock = flags & ffi::SQLITE_SHM_LOCK != 0;
    let excl = flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
    if st.file.shm_lock(st.id, offset as u32, n as u32, lock, excl) {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_BUSY
    }
}

unsafe extern "C" fn x_shm_barrier(_f: *mut ffi::sqlite3_file) {
    std::sync::atomic::fence(Ordering::SeqCst);
}

unsafe extern "C" fn x_shm_unmap(f: *mut ffi::sqlite3_file, _delete: c_int) -> c_int {
    // SAFETY: `f` is open.
    let st = unsafe { state(f) };
    st.file.shm_unmap(st.id);
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::OpenFlags;

    use crate::app::{open, wal_path};
    use crate::memfs;

    fn count(c: &rusqlite::Connection) -> i64 {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    fn truncate(c: &rusqlite::Connection) -> i64 {
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .expect("checkpoint")
    }

    #[test]
    fn wal_mode_locks_and_checkpoints_between_connections() {
        let dir = Path::new("/walvault-memvfs-test");
        memfs::remove_dir(dir);
        let path = dir.join("db");
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let a = open(&path, rw | OpenFlags::SQLITE_OPEN_CREATE).expect("open a");
        let mode: String = a
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        a.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        let b = open(&path, rw).expect("open b");
        assert_eq!(count(&b), 1, "a commit is visible to another connection");
        // One writer at a time.
        a.execute_batch("BEGIN IMMEDIATE").expect("lock");
        assert!(b.execute_batch("BEGIN IMMEDIATE").is_err());
        a.execute_batch("COMMIT").expect("commit");
        // A reader's snapshot keeps a TRUNCATE checkpoint from finishing.
        b.execute_batch("BEGIN").expect("begin");
        assert_eq!(count(&b), 1);
        a.execute("INSERT INTO t VALUES (2)", []).expect("insert");
        assert_eq!(truncate(&a), 1, "busy while b reads");
        assert_eq!(count(&b), 1, "b's snapshot holds");
        b.execute_batch("COMMIT").expect("end read");
        assert_eq!(truncate(&a), 0);
        let wal = wal_path(&path);
        assert_eq!(memfs::open(&wal).map(|f| f.len()), Some(0));
        // The last connection to close checkpoints and deletes the WAL.
        drop(b);
        drop(a);
        assert!(memfs::open(&wal).is_none());
        let c = open(&path, rw).expect("reopen");
        assert_eq!(count(&c), 2);
        drop(c);
        memfs::remove_dir(dir);
    }
}
