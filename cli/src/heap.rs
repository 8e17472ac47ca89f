//! Keeps glibc's allocator from handing freed memory back to the system at once.
//!
//! Why: a received file goes from the network thread to the writing thread in chunks
//! (48 KiB each), and the writer frees them. Each time it catches up, the freed
//! chunks join the top of the heap and glibc, past its default trim threshold
//! (128 KiB), returns them to the kernel; the next chunks then fault in fresh,
//! zeroed pages. A direct 512 MiB transfer took ~60,000 such page faults in the
//! receiver (a quarter of the data volume in new pages) and 10-15% of its time.
//!
//! glibc raises its thresholds by itself once a block it had mapped for one large
//! allocation is freed (`mallopt(3)`, "dynamic mmap threshold"): the mmap threshold
//! becomes that block's size and the trim threshold twice it. So one large block,
//! allocated and freed before any work, moves both thresholds the way
//! `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...`
//! would, without unsafe code or an environment variable. The block is never
//! written, so it costs two system calls and no memory. Other allocators (musl,
//! macOS) ignore it.

/// Size of the block: allocations up to it come from the heap, and up to twice it
/// of freed memory stays with the process for reuse (the relay's and a transfer's
/// working sets are a few MiB; an idle process holds no such memory).
const THRESHOLD: usize = 8 * 1024 * 1024;

/// Raises glibc's mmap and trim thresholds (see the module comment). Call once,
/// first thing in `main`.
pub fn keep_freed_memory() {
    let block: Vec<u8> = Vec::with_capacity(THRESHOLD);
    // Without this the compiler may drop the allocation altogether.
    drop(std::hint::black_box(block));
}
