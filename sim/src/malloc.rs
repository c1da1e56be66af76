//! glibc's allocator, tuned for a simulator process: keep freed memory for the next
//! allocation instead of handing it back to the kernel. A run allocates and frees
//! megabyte buffers all the time (WAL reads, database images, LTX files, SQLite's page
//! caches); with glibc's defaults many of them were fresh mappings, and zeroing and
//! faulting in their pages was a visible share of a run. Only speed changes: nothing
//! here reaches a trace.

/// Raises the mmap threshold to its maximum (32 MiB) and never trims the heap.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        // SAFETY: mallopt only changes allocator parameters; called before any
        // simulation work, from the main thread.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}
