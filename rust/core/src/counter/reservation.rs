//! The reservation log: what each allowed call added, so a proxy can give it back.
//!
//! A ring of 64-byte lines in the table's region. Each line holds a control word and up to
//! two parts; a reservation takes as many consecutive lines as its parts need (one for the
//! usual call with one or two limits). Lines are taken in order from a cursor, so recording
//! writes memory sequentially, one line per call; a fixed entry sized for the largest
//! reservation took 264 bytes, and a log of the default length 17 MiB instead of 4.
//!
//! A reservation id is the sequence number of its first line plus one. Every line's control
//! word holds its own sequence number, so a line since reused by a later lap is recognised
//! and its reservation refused. A writer claims each line with a CAS before writing it and
//! never claims a line another writer is still writing, so the parts a line's control word
//! vouches for are that writer's alone. Releasing flips the first line from HELD to RELEASED
//! with one CAS, so a reservation is given back at most once.

use super::region::{header, Region};
use std::sync::atomic::{
    fence,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};

/// Most limits one call can touch (validated in the policy).
pub const MAX_PARTS: usize = 8;
/// Words per line: one cache line.
pub const LINE_WORDS: usize = 8;
const PART_WORDS: usize = 3;
const PARTS_PER_LINE: usize = (LINE_WORDS - 1) / PART_WORDS;
/// Most slots a table can have: a part's slot number shares a word with its amount (40 bits).
pub const MAX_SLOTS: usize = 1 << 24;
const AMOUNT_BITS: u32 = 40;
const AMOUNT_MASK: u64 = (1 << AMOUNT_BITS) - 1;

// Control word: `seq << 8 | parts << 3 | status`. Lines after the first are CONTINUED; the
// lines of a reservation given back, or given up while being recorded, are RELEASED.
const WRITING: u64 = 1;
const HELD: u64 = 2;
const RELEASED: u64 = 3;
const CONTINUED: u64 = 4;
const STATUS_MASK: u64 = 7;

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
    /// Lines in the ring, a power of two.
    lines: u64,
}

#[inline]
fn control(seq: u64, parts: usize, status: u64) -> u64 {
    (seq << 8) | ((parts as u64) << 3) | status
}

/// Lines a reservation of `parts` parts takes.
#[inline]
fn lines_for(parts: usize) -> u64 {
    parts.div_ceil(PARTS_PER_LINE).max(1) as u64
}

impl ReservationLog {
    /// Lines a log of at least `lines` lines has: rounded up to a power of two.
    pub fn lines_for_capacity(lines: usize) -> usize {
        lines.max(1).next_power_of_two()
    }

    /// A log of `lines` lines (a power of two) at word `base` (a multiple of 8).
    pub fn new(base: usize, lines: usize) -> ReservationLog {
        debug_assert!(lines.is_power_of_two() && base.is_multiple_of(LINE_WORDS));
        ReservationLog {
            base,
            lines: lines as u64,
        }
    }

    #[inline]
    fn line(&self, seq: u64) -> usize {
        self.base + (seq & (self.lines - 1)) as usize * LINE_WORDS
    }

    /// Start loading the line the next reservation will likely take, so that writing it
    /// does not wait for memory.
    #[inline]
    pub fn prefetch_next(&self, region: &Region) {
        region.prefetch(self.line(region.load(header::RESERVATION_CURSOR)));
    }

    /// Record the parts of one reservation; returns its id (never 0), or `None` in the rare
    /// case that one of its lines is still being written by a writer a lap behind (it was
    /// descheduled while the ring went round): then the counts stay reserved until they leave
    /// the window, which errs towards denying.
    pub fn record(&self, region: &Region, parts: &[Part]) -> Option<u64> {
        debug_assert!(!parts.is_empty() && parts.len() <= MAX_PARTS);
        let first = region
            .header(header::RESERVATION_CURSOR)
            .fetch_add(lines_for(parts.len()), Relaxed);
        for (i, chunk) in parts.chunks(PARTS_PER_LINE).enumerate() {
            let seq = first + i as u64;
            let at = self.line(seq);
            if !self.claim(region, at, seq, parts.len()) {
                self.abandon(region, first, i as u64, parts.len());
                return None;
            }
            for (j, p) in chunk.iter().enumerate() {
                let w = at + 1 + j * PART_WORDS;
                debug_assert!((p.slot as usize) < MAX_SLOTS && p.amount <= AMOUNT_MASK);
                region
                    .word(w)
                    .store((u64::from(p.slot) << AMOUNT_BITS) | p.amount, Relaxed);
                region.word(w + 1).store(p.key, Relaxed);
                region.word(w + 2).store(p.bucket, Relaxed);
            }
            if i > 0 {
                region
                    .word(at)
                    .store(control(seq, parts.len(), CONTINUED), Release);
            }
        }
        // The first line last: a releaser that sees it HELD sees every line written.
        region
            .word(self.line(first))
            .store(control(first, parts.len(), HELD), Release);
        Some(first + 1)
    }

    /// Take line `at` for `seq`: a seqlock whose writers exclude each other, so a writer
    /// never writes into a line another is writing. A line still being written is never
    /// taken, however many laps ago it was claimed: its writer may only be descheduled, and
    /// would go on writing into it. (A writer that died leaves its line unusable: one call
    /// per lap then goes without a reservation id, which errs towards denying.)
    #[inline]
    fn claim(&self, region: &Region, at: usize, seq: u64, parts: usize) -> bool {
        let word = region.word(at);
        let mut current = word.load(Relaxed);
        loop {
            // 0: never written.
            let owner = current >> 8;
            let later = current != 0 && owner >= seq;
            if later || current & STATUS_MASK == WRITING {
                return false;
            }
            match word.compare_exchange_weak(current, control(seq, parts, WRITING), SeqCst, Relaxed)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        // Readers that see this line's new parts see its control word changed.
        fence(Release);
        true
    }

    /// Give up the `claimed` lines of a reservation that could not be recorded whole.
    #[cold]
    fn abandon(&self, region: &Region, first: u64, claimed: u64, parts: usize) {
        for seq in first..first + claimed {
            region
                .word(self.line(seq))
                .store(control(seq, parts, RELEASED), Release);
        }
    }

    /// Claim reservation `id` for release; `None` if unknown, reused or already released.
    pub fn take(&self, region: &Region, id: u64) -> Option<Vec<Part>> {
        let first = id.checked_sub(1)?;
        if first >= region.load(header::RESERVATION_CURSOR) || first >= 1 << 56 {
            return None;
        }
        let head = region.word(self.line(first)).load(Acquire);
        if head >> 8 != first || head & STATUS_MASK != HELD {
            return None;
        }
        let n = ((head >> 3) & 0x1f) as usize;
        if n == 0 || n > MAX_PARTS {
            return None;
        }
        let expected = |i: u64| control(first + i, n, if i == 0 { HELD } else { CONTINUED });
        let lines = lines_for(n);
        if (1..lines).any(|i| region.word(self.line(first + i)).load(Acquire) != expected(i)) {
            return None;
        }
        let parts: Vec<Part> = (0..n)
            .map(|k| {
                let at = self.line(first + (k / PARTS_PER_LINE) as u64);
                let w = at + 1 + (k % PARTS_PER_LINE) * PART_WORDS;
                let packed = region.word(w).load(Relaxed);
                Part {
                    slot: (packed >> AMOUNT_BITS) as u32,
                    key: region.word(w + 1).load(Relaxed),
                    bucket: region.word(w + 2).load(Relaxed),
                    amount: packed & AMOUNT_MASK,
                }
            })
            .collect();
        // The parts are valid only if no line was rewritten while we read them: the later
        // lines are checked again here, the first by the CAS.
        fence(Acquire);
        if (1..lines).any(|i| region.word(self.line(first + i)).load(Relaxed) != expected(i)) {
            return None;
        }
        let released = (head & !STATUS_MASK) | RELEASED;
        region
            .word(self.line(first))
            .compare_exchange(head, released, SeqCst, SeqCst)
            .ok()?;
        Some(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::region::HEADER_WORDS;
    use proptest::prelude::*;

    fn log(lines: usize) -> (Region, ReservationLog) {
        let region = Region::allocate(HEADER_WORDS + lines * LINE_WORDS);
        (region, ReservationLog::new(HEADER_WORDS, lines))
    }

    fn parts(n: usize, salt: u64) -> Vec<Part> {
        (0..n as u64)
            .map(|i| Part {
                slot: ((salt * 31 + i) % MAX_SLOTS as u64) as u32,
                key: salt ^ (i << 32) ^ 0xdead_beef,
                bucket: salt + i * 7,
                amount: (salt * 1000 + i) & AMOUNT_MASK,
            })
            .collect()
    }

    #[test]
    fn every_size_of_reservation_comes_back_whole_once() {
        let (region, log) = log(16);
        for n in 1..=MAX_PARTS {
            let want = parts(n, n as u64);
            let id = log.record(&region, &want).unwrap();
            assert_eq!(log.take(&region, id), Some(want), "{n} parts");
            assert_eq!(log.take(&region, id), None, "{n} parts, twice");
        }
    }

    #[test]
    fn extreme_fields_survive_packing() {
        let (region, log) = log(4);
        let want = vec![Part {
            slot: (MAX_SLOTS - 1) as u32,
            key: u64::MAX - 1,
            bucket: u64::MAX,
            amount: AMOUNT_MASK,
        }];
        let id = log.record(&region, &want).unwrap();
        assert_eq!(log.take(&region, id), Some(want));
    }

    #[test]
    fn a_reservation_whose_lines_were_reused_is_refused() {
        let (region, log) = log(4);
        // Lines 0-2, then 3 and 0 (wrapping over the ring's end), then 1.
        let old = log.record(&region, &parts(6, 1)).unwrap();
        let a = log.record(&region, &parts(3, 2)).unwrap();
        let b = log.record(&region, &parts(1, 3)).unwrap();
        assert_eq!(
            log.take(&region, old),
            None,
            "its first line was reused by a"
        );
        assert_eq!(log.take(&region, b), Some(parts(1, 3)));
        // Lines 2 and 3: a's first line.
        let c = log.record(&region, &parts(4, 4)).unwrap();
        assert_eq!(log.take(&region, a), None, "its first line was reused by c");
        assert_eq!(log.take(&region, c), Some(parts(4, 4)));
    }

    /// A writer descheduled between claiming a line and publishing it keeps the line: a
    /// writer laps ahead records nothing there rather than mix its parts into it, however
    /// many laps on (taking it over once let a slow writer tear a later reservation).
    #[test]
    fn a_line_still_being_written_is_not_taken_over() {
        let (region, log) = log(4);
        let slow = log.record(&region, &parts(1, 1)).unwrap() - 1;
        region
            .word(log.line(slow))
            .store(control(slow, 1, WRITING), Relaxed);
        for i in 1..3 {
            assert!(log.record(&region, &parts(1, 10 + i)).is_some());
        }
        // Lines 3 and 0, one lap after the slow writer's claim of line 0: nothing is
        // recorded, and the line already taken (3) is given up.
        let cursor = region.load(header::RESERVATION_CURSOR);
        assert_eq!(log.record(&region, &parts(3, 20)), None);
        assert_eq!(
            region.word(log.line(slow)).load(Relaxed),
            control(slow, 1, WRITING),
            "the slow writer's line is untouched"
        );
        assert_eq!(log.take(&region, cursor + 1), None, "given up, not held");
        for i in 0..3 {
            assert!(log.record(&region, &parts(1, 30 + i)).is_some());
        }
        // Two laps after the claim, the line is still the slow writer's.
        assert_eq!(log.record(&region, &parts(1, 50)), None);
        assert_eq!(
            region.word(log.line(slow)).load(Relaxed),
            control(slow, 1, WRITING)
        );
        // Its writer finishes: the next lap uses the line again.
        region
            .word(log.line(slow))
            .store(control(slow, 1, HELD), Relaxed);
        for i in 0..3 {
            assert!(log.record(&region, &parts(1, 60 + i)).is_some());
        }
        let id = log.record(&region, &parts(1, 70)).unwrap();
        assert_eq!(log.take(&region, id), Some(parts(1, 70)));
    }

    #[test]
    fn ids_never_issued_are_refused() {
        let (region, log) = log(4);
        let id = log.record(&region, &parts(1, 9)).unwrap();
        for bad in [0, id + 1, id + 4, u64::MAX] {
            assert_eq!(log.take(&region, bad), None, "{bad}");
        }
        assert!(log.take(&region, id).is_some());
    }

    /// Writers lapping a small ring while a reader releases recent ids: whatever comes back
    /// is one reservation whole (never parts of two), and no id comes back twice.
    #[test]
    fn releases_racing_writers_get_whole_reservations_once() {
        use std::collections::HashSet;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        const LINES: usize = 4;
        let region = Arc::new(Region::allocate(HEADER_WORDS + LINES * LINE_WORDS));
        let log = Arc::new(ReservationLog::new(HEADER_WORDS, LINES));
        let done = Arc::new(AtomicBool::new(false));
        // A reservation's parts all follow from its first key, so a mix of two shows.
        let whole = |salt: u64| parts(1 + (salt % MAX_PARTS as u64) as usize, salt);
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let (region, log) = (Arc::clone(&region), Arc::clone(&log));
                std::thread::spawn(move || {
                    for i in 0..300_000u64 {
                        log.record(&region, &whole((t << 40) | i));
                    }
                })
            })
            .collect();
        let reader = {
            let (region, log, done) = (Arc::clone(&region), Arc::clone(&log), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut taken = HashSet::new();
                let mut k = 0u64;
                while !done.load(Ordering::Acquire) {
                    k += 1;
                    let cursor = region.load(header::RESERVATION_CURSOR);
                    let id = cursor.saturating_sub(k % (LINES as u64 + 2));
                    if let Some(got) = log.take(&region, id) {
                        let salt = got[0].key ^ 0xdead_beef;
                        assert_eq!(got, whole(salt), "id {id} came back torn");
                        assert!(taken.insert(id), "id {id} came back twice");
                    }
                }
                taken.len()
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        assert!(reader.join().unwrap() > 0, "the reader released something");
    }

    proptest! {
        /// Against a model: an id comes back with exactly its parts while none of its lines
        /// has been taken by a later reservation, and at most once; otherwise it is refused.
        #[test]
        fn takes_match_a_model_of_the_ring(
            ops in prop::collection::vec((1usize..=MAX_PARTS, any::<bool>(), 0usize..8), 1..60),
        ) {
            const LINES: u64 = 8;
            let (region, log) = log(LINES as usize);
            // (id, parts, first line's sequence number, taken)
            let mut issued: Vec<(u64, Vec<Part>, u64, bool)> = Vec::new();
            let mut cursor = 0u64;
            for (step, (n, take, back)) in ops.into_iter().enumerate() {
                if take && !issued.is_empty() {
                    let k = issued.len() - 1 - back.min(issued.len() - 1);
                    let (id, want, first, taken) = issued[k].clone();
                    // Line `first` is reused once the cursor has passed `first + LINES`;
                    // its later lines only after that.
                    let expect = (!taken && cursor <= first + LINES).then_some(want);
                    prop_assert_eq!(log.take(&region, id), expect.clone(), "id {}", id);
                    if expect.is_some() {
                        issued[k].3 = true;
                    }
                } else {
                    let want = parts(n, step as u64);
                    let id = log.record(&region, &want).unwrap();
                    prop_assert_eq!(id, cursor + 1);
                    issued.push((id, want, cursor, false));
                    cursor += lines_for(n);
                }
            }
        }
    }
}
