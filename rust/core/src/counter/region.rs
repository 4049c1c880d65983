//! The memory a counter table lives in: a flat array of `AtomicU64` words.
//!
//! Every piece of state is a 64-bit atomic at a fixed offset, with no pointers inside, so the
//! same layout works in process memory and in a file mapped into memory (the approvals table
//! keeps its state across restarts that way).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Words reserved at the start of a region for the header.
pub const HEADER_WORDS: usize = 16;

/// Header word offsets.
pub mod header {
    pub const CAPACITY: usize = 1;
    pub const RESERVATIONS: usize = 2;
    /// Next reservation sequence number.
    pub const RESERVATION_CURSOR: usize = 4;
    /// Slots that hold (or held) a key.
    pub const OCCUPIED: usize = 5;
    /// Times a key found no free slot.
    pub const FULL_EVENTS: usize = 6;
    /// Slots counted as holding a client-chosen key ([`super::super::table`]).
    pub const CLIENT_SLOTS: usize = 7;
    /// The second (plus one) of the last sweep for expired client-chosen slots.
    pub const LAST_SWEEP: usize = 8;
    /// Times a client-chosen key was refused for its address's part of the share.
    pub const PEER_FULL_EVENTS: usize = 9;
}

/// 128 bytes of words, aligned so that a 16-word slot (after the 16-word header) sits in
/// exactly two cache lines instead of straddling three.
#[repr(C, align(128))]
struct Block([AtomicU64; 16]);

/// Backing memory for a table.
pub struct Region {
    base: *const AtomicU64,
    words: usize,
    // Keeps process-local memory alive; `None` for memory owned elsewhere (a mapping).
    _owned: Option<Box<[Block]>>,
    // Keeps a mapping alive while any region inside it is in use.
    _mapping: Option<Arc<dyn Send + Sync>>,
}

// SAFETY: the region is only accessed through atomics.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// Zeroed process-local memory of `words` words.
    ///
    /// Asked of the allocator as zeroed memory rather than written: a large table then comes
    /// from fresh pages the kernel zeroes on first touch, so slots never used cost no memory
    /// (the default table is 12 MiB of address space, and an idle sidecar touches little of it).
    pub fn allocate(words: usize) -> Region {
        let blocks = words.div_ceil(16).max(1);
        let layout = std::alloc::Layout::array::<Block>(blocks).expect("table size overflows");
        // SAFETY: the layout's size is non-zero (at least one block); all-zero bytes are valid
        // `AtomicU64`s, so the zeroed memory is `blocks` initialised blocks, which the box then
        // owns and frees with the same layout.
        let owned: Box<[Block]> = unsafe {
            let ptr = std::alloc::alloc_zeroed(layout) as *mut Block;
            if ptr.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, blocks))
        };
        let base = owned.as_ptr() as *const AtomicU64;
        Region {
            base,
            words,
            _owned: Some(owned),
            _mapping: None,
        }
    }

    /// Part of a mapping, which stays mapped as long as this region (or another holding
    /// `mapping`) lives.
    ///
    /// # Safety
    /// `base` must point to `words` 8-byte-aligned, initialised `u64`s, owned by `mapping`,
    /// that are only ever accessed atomically.
    pub unsafe fn in_mapping(
        base: *mut u64,
        words: usize,
        mapping: Arc<dyn Send + Sync>,
    ) -> Region {
        Region {
            base: base as *const AtomicU64,
            words,
            _owned: None,
            _mapping: Some(mapping),
        }
    }

    pub fn words(&self) -> usize {
        self.words
    }

    #[inline(always)]
    pub fn word(&self, index: usize) -> &AtomicU64 {
        debug_assert!(index < self.words);
        // SAFETY: index is within the region (checked in debug, guaranteed by layout math).
        unsafe { &*self.base.add(index) }
    }

    /// Ask the CPU to start loading the cache line holding word `index`: a hint, with no
    /// effect on what any load returns.
    #[inline(always)]
    pub fn prefetch(&self, index: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let word = self.word(index) as *const AtomicU64;
            // SAFETY: a prefetch never faults; the address is inside the region anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(word.cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = index;
    }

    #[inline(always)]
    pub fn header(&self, field: usize) -> &AtomicU64 {
        self.word(field)
    }

    pub fn load(&self, index: usize) -> u64 {
        self.word(index).load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_on_a_128_byte_boundary() {
        let r = Region::allocate(HEADER_WORDS + 3 * 16);
        for slot in 0..3 {
            let address = r.word(HEADER_WORDS + slot * 16) as *const AtomicU64 as usize;
            assert_eq!(address % 128, 0);
        }
    }
}
