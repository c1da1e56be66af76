//! Process-wide memory settings: keep glibc from holding on to memory walvault freed.
//!
//! glibc gives every thread that allocates its own arena (up to 8 per core) and keeps
//! freed memory in them; with tokio's worker and blocking threads that was ~15 MB of a
//! 36 MB process whose live heap peaked at 5 MB (bench/analysis.md). Two arenas and a
//! low trim threshold return it to the system.

/// Caps malloc arenas and lowers the trim threshold (glibc only; a no-op elsewhere).
/// Call before starting threads.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before any other
    // thread exists, and an unknown or rejected setting is ignored (returns 0).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}
