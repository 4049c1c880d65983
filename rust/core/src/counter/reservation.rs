//! The reservation log: what each allowed call added, so a proxy can give it back.
//!
//! A ring of fixed-size entries in the table's region. A reservation id is the entry's
//! sequence number plus one; the entry records its lap (generation), so an id whose entry has
//! since been reused is refused. Releasing flips the entry from HELD to RELEASED with one
//! CAS, so a reservation is given back at most once.

use super::region::{header, Region};
use std::sync::atomic::{
    fence,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

/// Most limits one call can touch (validated in the policy).
pub const MAX_PARTS: usize = 8;
const PART_WORDS: usize = 4;
/// Words per entry: a state word and the parts.
pub const RES_WORDS: usize = 1 + MAX_PARTS * PART_WORDS;

const WRITING: u64 = 1;
const HELD: u64 = 2;
const RELEASED: u64 = 3;

/// One limit's share of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub slot: u32,
    pub key: u64,
    pub bucket: u64,
    pub amount: u64,
}

pub struct ReservationLog {
    base: usize,
    capacity: u64,
}

#[inline]
fn state(generation: u64, parts: usize, status: u64) -> u64 {
    (generation << 8) | ((parts as u64) << 2) | status
}

impl ReservationLog {
    pub fn new(base: usize, capacity: usize) -> ReservationLog {
        ReservationLog {
            base,
            capacity: capacity as u64,
        }
    }

    fn entry(&self, seq: u64) -> (usize, u64) {
        (
            self.base + (seq % self.capacity) as usize * RES_WORDS,
            seq / self.capacity + 1,
        )
    }

    /// Record the parts of one reservation; returns its id (never 0).
    pub fn record(&self, region: &Region, parts: &[Part]) -> u64 {
        debug_assert!(parts.len() <= MAX_PARTS);
        let seq = region
            .header(header::RESERVATION_CURSOR)
            .fetch_add(1, Relaxed);
        let (at, generation) = self.entry(seq);
        // A seqlock: mark the entry as being written, write the parts, publish. A releaser
        // that read parts while they changed sees the state word change and gives up.
        region
            .word(at)
            .store(state(generation, parts.len(), WRITING), Relaxed);
        fence(Release);
        for (i, p) in parts.iter().enumerate() {
            let w = at + 1 + i * PART_WORDS;
            region.word(w).store(p.slot as u64, Relaxed);
            region.word(w + 1).store(p.key, Relaxed);
            region.word(w + 2).store(p.bucket, Relaxed);
            region.word(w + 3).store(p.amount, Relaxed);
        }
        region
            .word(at)
            .store(state(generation, parts.len(), HELD), Release);
        seq + 1
    }

    /// Claim reservation `id` for release; `None` if unknown, reused or already released.
    pub fn take(&self, region: &Region, id: u64) -> Option<Vec<Part>> {
        let seq = id.checked_sub(1)?;
        if seq >= region.load(header::RESERVATION_CURSOR) {
            return None;
        }
        let (at, generation) = self.entry(seq);
        let current = region.word(at).load(Acquire);
        if current >> 8 != generation || current & 3 != HELD {
            return None;
        }
        let n = ((current >> 2) & 0x3f) as usize;
        let parts: Vec<Part> = (0..n.min(MAX_PARTS))
            .map(|i| {
                let w = at + 1 + i * PART_WORDS;
                Part {
                    slot: region.word(w).load(Relaxed) as u32,
                    key: region.word(w + 1).load(Relaxed),
                    bucket: region.word(w + 2).load(Relaxed),
                    amount: region.word(w + 3).load(Relaxed),
                }
            })
            .collect();
        // The parts are valid only if the entry was not rewritten while we read them.
        fence(Acquire);
        let released = (current & !3) | RELEASED;
        region
            .word(at)
            .compare_exchange(current, released, SeqCst, SeqCst)
            .ok()?;
        Some(parts)
    }
}
