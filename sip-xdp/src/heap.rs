//! Gives the heap's free pages back to the kernel after a big job.
//!
//! glibc hands memory back on its own only from the top of its heap; what
//! is freed below the top stays resident for the next allocations. A
//! 100k-row sync or feed refresh allocates tens of MB for a moment, and
//! those pages then stayed resident for good though nothing used them: the
//! controller sat at 59.5–59.7 MB after loading a 100,000-line list, and
//! at 17–20 MB with a trim after it. `malloc_trim` returns every whole
//! free page of every arena.

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
