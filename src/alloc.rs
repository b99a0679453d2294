//! Process-wide tuning of the C allocator for tensor-sized buffers.
//!
//! A forward pass allocates and frees buffers of tens to hundreds of MiB, one or more per
//! layer. glibc's malloc serves every request above its mmap threshold (at most 32 MiB)
//! with a fresh `mmap` and returns it with `munmap` on free, so each such buffer is paid
//! for again in page faults and kernel zeroing: 3.3 million faults and 8 s of system time
//! for three forward passes of the paper-size DiNTS network (`perf stat`, README, speed).
//! Serving everything from the heap and keeping freed memory there lets the next layer
//! reuse the pages.

/// Keeps large allocations on the heap and freed memory in the process, up to 2 GiB of
/// free memory at the heap's top. Call once at start-up, before threads are spawned. Does
/// nothing where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other
    // thread exists, so no allocation runs concurrently.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
