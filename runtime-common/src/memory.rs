//! Handing the heap's free memory back to the system, when the server driver says the moment is
//! right ([`natter_core::driver::server::Output::ReleaseMemory`]: a quarter second of quiet after
//! activity).
//!
//! Why: glibc's malloc keeps the memory a burst freed (a join storm, a flood of lines, an outbox
//! written out) for its next allocations, and raises its own trim threshold after large frees. A
//! chat server spends most of its life idle after such bursts, so without this a room of idle
//! people kept its last storm resident: 2.5 to 4 KB per named connection where the connections
//! themselves hold under 1 KB (issue 12). `malloc_trim(0)` returns every free page, at the top of
//! the heap and inside it, at the cost of a walk over glibc's free lists; the driver asks for it
//! once per quiet spell, never while the server is busy.
//!
//! Other allocators (musl's, or a replaced global allocator) return memory on their own terms;
//! there this does nothing.

/// Returns the free pages of glibc's heap to the system; nothing elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // one of the workspace's three unsafe calls; see below
pub fn release_free_memory() {
    // SAFETY: `malloc_trim` takes a plain integer, has no preconditions, and only rearranges
    // glibc's own free lists (it is thread-safe, taking each arena's lock). No Rust value is
    // touched: memory in use stays where it is.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the free pages of glibc's heap to the system; nothing elsewhere.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
