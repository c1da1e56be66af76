//! Process-wide memory settings: keep glibc from holding on to memory walvault freed.
//!
//! glibc gives every thread that allocates its own arena (up to 8 per core) and keeps
//! freed memory in them; with tokio's worker and blocking threads that was ~15 MB of a
//! 36 MB process whose live heap peaked at 5 MB (bench/analysis.md). Two arenas and a
//! low trim threshold return it to the system.

/// Caps malloc arenas and lowers the trim threshold (glibc only; a no-op elsewhere),
/// unless the user set them through glibc's own `MALLOC_ARENA_MAX` /
/// `MALLOC_TRIM_THRESHOLD_`. Call before starting threads.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before any other
    // thread exists, and an unknown or rejected setting is ignored (returns 0).
    unsafe {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
        }
    }
}

/// glibc malloc arenas: tokio hands the worker role to a new thread on every
/// `block_in_place`, so with more than one arena the async code's allocations move
/// between arenas and each grows to the working set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// SQLite's process-wide defaults for walvault's own connections (one or two per
/// database, which only read a few pages and the WAL index): no lookaside buffer
/// (48 kB each), and no up-front bulk allocation of 20 page-cache slots (~85 kB each);
/// pages are allocated as they are used. Must run before SQLite is initialised, i.e.
/// before the first connection opens; afterwards SQLite refuses it (SQLITE_MISUSE),
/// which is harmless.
pub fn small_sqlite_connections() {
    use rusqlite::ffi;
    use std::ffi::{c_int, c_void};
    // SAFETY: sqlite3_config is called before any connection exists and takes the
    // documented arguments: LOOKASIDE (int size, int count), PAGECACHE (void* buffer,
    // int size, int count). A null buffer with zero slots means "no pre-allocation".
    unsafe {
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_LOOKASIDE, 0 as c_int, 0 as c_int);
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_PAGECACHE,
            std::ptr::null_mut::<c_void>(),
            0 as c_int,
            0 as c_int,
        );
    }
}
