//! The process allocator: mimalloc, called through its plain API whenever the layout's
//! alignment is one every mimalloc block already has.
//!
//! Why not `mimalloc::MiMalloc`: it sends every allocation to `mi_malloc_aligned`, and
//! mimalloc v3 takes its over-allocating aligned path for any block over 1 KiB whose size
//! class is not a power of two (a connection's read buffer, a header map). That path cost
//! ~900 instructions per allocation, ~4 times per proxied connection (callgrind, BENCHMARKS.md).

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
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
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
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

#[cfg(test)]
mod tests {
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
}
