//! The memory allocator the gateway's code runs on, and how it is tuned: mimalloc instead of
//! glibc's allocator. A message's way through the gateway allocates and frees many small buffers
//! on several threads, and glibc's malloc and free were 15% of the gateway's CPU under load.
//!
//! Every program that runs the gateway's code declares it as its global allocator and calls
//! [`tune`] first: the gateway itself, and the load tool, whose `store` benchmark runs the
//! message store in its own process and must measure it as the gateway runs it.

pub use mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v3): how long freed memory is kept before it
/// is returned to the system.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocator's options: call it first in `main`, before any other thread exists.
pub fn tune() {
    delay_returning_memory();
    without_huge_pages();
}

/// Freed memory is returned to the system after a second instead of mimalloc's 10 ms: under load
/// the gateway frees and reallocates the same memory (request buffers, batches, memtables) again
/// within milliseconds, and each return made the next use fault the pages in and zero them again,
/// ~6% of its CPU while routing notifications (+7% decisions/s in alternated runs, the same
/// resident memory). `MIMALLOC_PURGE_DELAY` in the environment still decides when set.
fn delay_returning_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option of the allocator this program runs on, before any thread
        // but this one exists; the option is read on every purge and may change at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
}

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set (then
/// mimalloc's own option decides). mimalloc asks the kernel for 2 MiB pages under its arenas, and
/// where the kernel honours that (THP `madvise` or `always`), a few bytes written in a fresh part
/// of an arena make 2 MiB resident: an idle connection with a persistent session held ~8.3 KB
/// with them and ~6.9 KB without (19,000 connections). Redis turns them off for itself as well.
/// Pages faulted in before this call (the runtime's own, before `main`) keep what they got.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integers only and sets a flag of this process, read
        // by the kernel when it backs a page.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}
