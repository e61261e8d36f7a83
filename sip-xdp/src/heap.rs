//! Gives the heap's free pages back to the kernel after a big job.
//!
//! glibc keeps what a thread frees in that thread's arena for its next
//! allocations. A 100k-row sync or feed refresh allocates tens of MB for a
//! moment, on whichever tokio worker ran it, and those pages then stay
//! resident for good, though nothing uses them: the controller sat at
//! 55 MB after loading a 100,000-line list whose kernel state needs a
//! fraction of that. `malloc_trim` returns every free page of every arena.

/// Rows, entries or addresses a job must have handled to be worth a trim:
/// below this the pages freed are few and the next job reuses them.
pub const BIG_JOB: usize = 10_000;

/// Returns the free pages of every arena to the kernel (glibc only; other
/// allocators decide for themselves).
pub fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only takes the allocator's own locks and unmaps
    // pages it knows to be free.
    unsafe {
        libc::malloc_trim(0);
    }
}
