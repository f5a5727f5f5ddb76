//! A global allocator that keeps hostile element counts from aborting the broker.
//!
//! The `kafka-protocol` codec (0.18) reserves `Vec::with_capacity(count)` with the
//! array count read straight off the wire, before decoding any element. A request of a
//! dozen bytes that declares two billion elements asks for hundreds of GiB; the system
//! allocator refuses, and Rust aborts the whole process (an allocation failure is not a
//! panic). Kafka fixed the same class of bug in KAFKA-14063; the crate has open fixes.
//!
//! This allocator serves every allocation of [`HUGE_ALLOCATION`] bytes or more with an
//! anonymous `mmap(MAP_NORESERVE)`: it costs address space, not memory, until pages are
//! touched. The decoder then fails on the first missing element, the vector is dropped
//! and the mapping is returned, and the connection is closed as malformed. Nothing in
//! the broker legitimately allocates that much at once (frames are capped by
//! `socket.request.max.bytes`), so ordinary allocations are untouched.
//!
//! Limitation: with `vm.overcommit_memory=2` (strict accounting) or an address-space
//! rlimit, the kernel refuses such a mapping and the process would still abort.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped lazily instead of taken from the heap.
pub const HUGE_ALLOCATION: usize = 1 << 30;

/// The broker's global allocator: the system allocator, with lazy mappings for huge requests.
#[derive(Debug, Default)]
pub struct GuardedAllocator;

fn is_huge(layout: &Layout) -> bool {
    // mmap returns page-aligned memory; larger alignments go to the system allocator.
    layout.size() >= HUGE_ALLOCATION && layout.align() <= 4096
}

// SAFETY: every pointer handed out is either from `System` (and returned to `System`) or
// from `mmap` of at least `layout.size()` page-aligned bytes (and returned to `munmap`
// with the same size); which one is decided by the layout alone, the same at alloc and
// dealloc. Anonymous mappings are zero-filled, so they also satisfy `alloc_zeroed`.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            let p = libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                p.cast()
            }
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            self.alloc(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_huge(&layout) && !is_huge(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::HUGE_ALLOCATION;

    #[test]
    fn a_huge_untouched_reservation_costs_no_memory() {
        // 256 GiB: far more than this machine has. With the guard it is only address space.
        let v: Vec<[u8; 64]> = Vec::with_capacity((256usize << 30) / 64);
        assert!(v.capacity() * 64 >= HUGE_ALLOCATION);
    }

    #[test]
    fn huge_allocations_are_usable_and_zeroed() {
        let mut v = vec![0u8; HUGE_ALLOCATION + 4096];
        assert_eq!(v[HUGE_ALLOCATION], 0);
        v[HUGE_ALLOCATION] = 7;
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v.len(), 10);
    }
}
