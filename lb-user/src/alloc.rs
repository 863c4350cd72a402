//! The process allocator: mimalloc, called through its plain API whenever the layout's
//! alignment is one every mimalloc block already has, with a per-thread stash of 2-16 KiB
//! blocks on the threads that turn it on (those that run connections).
//!
//! Why not `mimalloc::MiMalloc`: it sends every allocation to `mi_malloc_aligned`, and
//! mimalloc v3 takes its over-allocating aligned path for any block over 1 KiB whose size
//! class is not a power of two (a connection's read buffer, a header map). That path cost
//! ~900 instructions per allocation, ~4 times per proxied connection (callgrind, BENCHMARKS.md).
//!
//! Why the stash: a connection's read and write buffers and its future are 4-9 KiB, a size
//! where a mimalloc page holds only a few blocks, so with connections opening and closing
//! nearly every such allocation took mimalloc's slow path (searching pages, retiring and
//! re-initialising them: ~250-400 instructions each, ~1.5k per connection) and came back cold.
//! The stash hands back the block this thread freed last, in ~20.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ffi::c_void;

/// Every mimalloc block is at least word-aligned: size classes are whole words and pages
/// start on a word boundary. Larger alignments go through the aligned API.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

pub struct Mimalloc;

// SAFETY: each method forwards to the mimalloc function with the same contract; the plain
// functions are used only when their guaranteed alignment satisfies the layout's.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(k) = stash::bucket(layout) {
            if let Some(p) = stash::take(k) {
                return p;
            }
            // Rounded up to the bucket's size so the block can serve any size in it later.
            return mi::mi_malloc(stash::bytes(k)).cast();
        }
        if layout.align() <= PLAIN_ALIGN {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(k) = stash::bucket(layout) {
            if stash::give(k, ptr) {
                return;
            }
        }
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

/// Turns the stash on for the calling thread (one that runs connections; other threads never
/// stash, so a thread that ends without [`release_thread_cache`] holds nothing).
pub fn cache_this_thread() {
    stash::set(true);
}

/// Frees what the calling thread's stash holds and turns it off (before a worker ends).
pub fn release_thread_cache() {
    stash::set(false);
}

mod stash {
    use super::{mi, Layout, UnsafeCell, PLAIN_ALIGN};
    use std::ffi::c_void;
    use std::ptr::null_mut;

    /// Buckets by whole KiB: bucket k holds blocks of at least k KiB for sizes in
    /// ((k-1) KiB, k KiB]; 3..=16 covers 2049 B to 16 KiB.
    const MIN_KIB: usize = 3;
    const MAX_KIB: usize = 16;
    /// Blocks kept per bucket, and in all (per thread).
    const DEPTH: usize = 16;
    const MAX_BYTES: usize = 512 * 1024;

    extern "C" {
        // In the mimalloc library libmimalloc-sys links (its `extended` feature declares it).
        pub(super) fn mi_usable_size(p: *const c_void) -> usize;
    }

    struct Stash {
        on: bool,
        bytes: usize,
        len: [usize; MAX_KIB + 1],
        blocks: [[*mut u8; DEPTH]; MAX_KIB + 1],
    }

    thread_local! {
        // No destructor: a global allocator may not use thread-locals that need one.
        static STASH: UnsafeCell<Stash> = const {
            UnsafeCell::new(Stash {
                on: false,
                bytes: 0,
                len: [0; MAX_KIB + 1],
                blocks: [[null_mut(); DEPTH]; MAX_KIB + 1],
            })
        };
    }

    /// The bucket of `layout` when it is one the stash serves.
    #[inline]
    pub(super) fn bucket(layout: Layout) -> Option<usize> {
        let k = layout.size().div_ceil(1024);
        ((MIN_KIB..=MAX_KIB).contains(&k) && layout.align() <= PLAIN_ALIGN).then_some(k)
    }

    pub(super) fn bytes(k: usize) -> usize {
        k << 10
    }

    /// Runs `f` on this thread's stash. Nothing `f` does allocates, so no call re-enters.
    #[inline]
    fn with<R>(f: impl FnOnce(&mut Stash) -> R) -> R {
        // SAFETY: the stash is this thread's own and no `f` calls back into the allocator,
        // so this is the only reference to it while `f` runs.
        STASH.with(|s| f(unsafe { &mut *s.get() }))
    }

    /// The block this thread freed last in bucket `k`, if the stash is on and holds one.
    #[inline]
    pub(super) fn take(k: usize) -> Option<*mut u8> {
        with(|s| {
            let n = s.len[k];
            if !s.on || n == 0 {
                return None;
            }
            s.len[k] = n - 1;
            s.bytes -= bytes(k);
            Some(s.blocks[k][n - 1])
        })
    }

    /// Keeps `p` (freed, in bucket `k`) when the stash is on, has room, and the block really
    /// is as large as the bucket promises (it may come from another thread or a realloc).
    #[inline]
    pub(super) fn give(k: usize, p: *mut u8) -> bool {
        with(|s| {
            let n = s.len[k];
            if !s.on || n == DEPTH || s.bytes + bytes(k) > MAX_BYTES {
                return false;
            }
            // SAFETY: `p` is a live mimalloc block (every block of this allocator is).
            if unsafe { mi_usable_size(p.cast::<c_void>()) } < bytes(k) {
                return false;
            }
            s.blocks[k][n] = p;
            s.len[k] = n + 1;
            s.bytes += bytes(k);
            true
        })
    }

    /// Blocks and bytes this thread's stash holds (tests).
    #[cfg(test)]
    pub(super) fn held() -> (usize, usize) {
        with(|s| (s.len.iter().sum(), s.bytes))
    }

    /// Turns the stash on or off; off frees what it holds.
    pub(super) fn set(on: bool) {
        with(|s| s.on = on);
        if on {
            return;
        }
        let mut held: [*mut u8; DEPTH] = [null_mut(); DEPTH];
        for k in MIN_KIB..=MAX_KIB {
            let n = with(|s| {
                let n = s.len[k];
                held[..n].copy_from_slice(&s.blocks[k][..n]);
                s.bytes -= bytes(k) * n;
                s.len[k] = 0;
                n
            });
            for &p in &held[..n] {
                // SAFETY: stashed blocks are live mimalloc blocks no one else refers to.
                unsafe { mi::mi_free(p.cast::<c_void>()) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stash::mi_usable_size;
    use super::*;

    /// Every alignment from 1 to 4 KiB, sizes around mimalloc's class edges: the block is
    /// aligned, fully writable, zeroed when asked, and keeps its bytes across reallocs.
    #[test]
    fn blocks_honour_the_layout_and_survive_realloc() {
        let a = Mimalloc;
        let sizes = [
            1,
            7,
            8,
            24,
            48,
            1000,
            1025,
            3000,
            8192,
            8200,
            70_000,
            1 << 20,
        ];
        for shift in 0..=12 {
            let align = 1usize << shift;
            for &size in &sizes {
                let at = |n: usize| Layout::from_size_align(n, align).expect("valid layout");
                let aligned = |p: *mut u8, what: &str| {
                    assert!(!p.is_null(), "{what}: size {size} align {align}");
                    assert_eq!(p as usize % align, 0, "{what}: size {size} align {align}");
                };
                let grown = size * 3 + 5;
                // SAFETY: non-zero sizes; each block is used within its size and freed once
                // with the layout it was last given.
                unsafe {
                    let z = a.alloc_zeroed(at(size));
                    aligned(z, "alloc_zeroed");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, at(size));

                    let p = a.alloc(at(size));
                    aligned(p, "alloc");
                    for i in 0..size {
                        p.add(i).write(i as u8);
                    }
                    let p = a.realloc(p, at(size), grown);
                    aligned(p, "realloc up");
                    p.add(grown - 1).write(1);
                    let p = a.realloc(p, at(grown), size);
                    aligned(p, "realloc down");
                    for i in 0..size {
                        assert_eq!(
                            p.add(i).read(),
                            i as u8,
                            "byte {i}, size {size} align {align}"
                        );
                    }
                    a.dealloc(p, at(size));
                }
            }
        }
    }

    /// On a stashing thread a freed 2-16 KiB block comes back for the next allocation in its
    /// bucket, whole and writable; a block smaller than its bucket (from alloc_zeroed or a
    /// realloc) is not kept; turning the stash off frees what it held.
    #[test]
    fn the_stash_returns_whole_blocks_and_only_those() {
        let a = Mimalloc;
        let at = |n: usize| Layout::from_size_align(n, 8).expect("valid layout");
        cache_this_thread();
        // SAFETY: non-zero sizes; each block is used within its size and freed once with the
        // layout it was allocated with.
        unsafe {
            let p = a.alloc(at(8192));
            std::ptr::write_bytes(p, 1, 8192);
            a.dealloc(p, at(8192));
            // Same bucket (8 KiB): the stashed block, writable to the bucket's full size.
            let q = a.alloc(at(7500));
            assert_eq!(p, q, "the block freed last comes back");
            std::ptr::write_bytes(q, 2, 7500);
            assert!(mi_usable_size(q.cast::<c_void>()) >= 8192);
            a.dealloc(q, at(7500));

            // mimalloc's class for 2100 B is below 3 KiB: not stashed in the 3 KiB bucket.
            let z = a.alloc_zeroed(at(2100));
            assert!(mi_usable_size(z.cast::<c_void>()) < 3072);
            a.dealloc(z, at(2100));
            let w = a.alloc(at(3000));
            assert_ne!(z, w, "a short block must not serve a larger size");
            std::ptr::write_bytes(w, 3, 3000);
            a.dealloc(w, at(3000));
        }
        release_thread_cache();
        // Off: a free goes straight back to mimalloc and nothing is handed out from the stash.
        unsafe {
            let p = a.alloc(at(8192));
            a.dealloc(p, at(8192));
            let (len, bytes) = stash::held();
            assert_eq!((len, bytes), (0, 0));
        }
    }
}
