//! One slot's sliding window.
//!
//! A window of length `W` is cut into [`BUCKETS`] sub-buckets of `g = ceil(W / BUCKETS)`.
//! A slot keeps the newest bucket in one *head* word (bucket tag + count) and the
//! [`BUCKETS`] buckets before it, once sealed, in a ring. A check at bucket `n` sums buckets
//! `n - BUCKETS ..= n`, which cover `[t - W, t]` because `BUCKETS * g >= W`.
//!
//! Exactness: every amount is added to the head with one compare-and-swap, so a successful
//! CAS proves nothing was added between the read and the write. Sealed buckets never grow.
//! Guarantee: in no interval of length `W` (of decision times) is more than `max` allowed.
//! Worst case of denying early: the sum may still hold calls up to `W + g` old, so a call is
//! denied only when the calls allowed in the last `W + g` leave no room for it.

use super::region::Region;
use std::sync::atomic::Ordering::SeqCst;

/// Sub-buckets per window.
pub const BUCKETS: u64 = 12;

/// Words per slot: key, granularity, head, the ring, the sealed sum (128 bytes).
pub const SLOT_WORDS: usize = 16;
pub(crate) const KEY: usize = 0;
pub(crate) const GRAN: usize = 1;
pub(crate) const HEAD: usize = 2;
const RING: usize = 3;
/// `pack(b, s)`: `s` is the sum of the sealed buckets `b - BUCKETS .. b`, written by the
/// caller that moved the head to `b`. Saves re-reading the ring on every call.
const SEALED: usize = RING + BUCKETS as usize;
const RING_LEN: u64 = BUCKETS;

/// In the granularity word: the slot's key is one a client chose (an unverified credential,
/// a session or agent id), which may take only part of the table. Bucket lengths stay far
/// below this bit.
const CLIENT_CHOSEN: u64 = 1 << 63;

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const TAG_BITS: u32 = 24;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const TAG_HALF: u64 = 1 << (TAG_BITS - 1);

/// Bucket length of one window, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Granularity {
    pub bucket_ns: u64,
}

impl Granularity {
    pub fn for_window_ms(window_ms: u64) -> Granularity {
        let window_ns = window_ms.max(1).saturating_mul(1_000_000);
        Granularity {
            bucket_ns: window_ns.div_ceil(BUCKETS),
        }
    }

    #[inline]
    pub fn bucket(self, now_ns: u64) -> u64 {
        now_ns / self.bucket_ns
    }

    /// When bucket `j` stops counting: once the window start has passed it.
    #[inline]
    pub fn leaves_at_ns(self, j: u64) -> u64 {
        (j + BUCKETS + 1).saturating_mul(self.bucket_ns)
    }
}

#[inline]
fn pack(bucket: u64, count: u64) -> u64 {
    ((bucket & TAG_MASK) << COUNT_BITS) | (count & COUNT_MASK)
}

#[inline]
fn tag_of(word: u64) -> u64 {
    word >> COUNT_BITS
}

#[inline]
fn count_of(word: u64) -> u64 {
    word & COUNT_MASK
}

#[inline]
pub(crate) fn tag(bucket: u64) -> u64 {
    bucket & TAG_MASK
}

/// The absolute bucket a head tag stands for, seen from bucket `n`. Tags are 24 bits; a tag
/// up to 2^23 buckets ahead of `n` is taken as the future (a clock read slightly later
/// than ours by another thread), anything else as the past.
#[inline]
fn absolute(n: u64, tag: u64) -> u64 {
    let behind = n.wrapping_sub(tag) & TAG_MASK;
    if behind < TAG_HALF {
        n.saturating_sub(behind)
    } else {
        n + (TAG_MASK + 1 - behind)
    }
}

/// The buckets a check sums, oldest first, and their total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    /// Bucket of the newest entry: `max(now's bucket, head's bucket)`.
    pub newest: u64,
    /// `counts[i]` is bucket `newest - BUCKETS + i`.
    pub counts: [u64; BUCKETS as usize + 1],
    pub used: u64,
}

impl WindowState {
    /// Nanoseconds from `now_ns` until `needed` units have left the window; `None` if they
    /// never will (more is needed than the window holds).
    pub fn retry_after_ns(&self, needed: u64, g: Granularity, now_ns: u64) -> Option<u64> {
        let mut freed = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            freed += count;
            if freed >= needed && *count > 0 {
                let j = (self.newest + i as u64).checked_sub(BUCKETS)?;
                return Some(g.leaves_at_ns(j).saturating_sub(now_ns).max(1));
            }
        }
        None
    }

    /// Nanoseconds from `now_ns` until the window is empty again.
    pub fn reset_in_ns(&self, g: Granularity, now_ns: u64) -> u64 {
        match self.counts.iter().rposition(|c| *c > 0) {
            Some(i) => {
                let j = (self.newest + i as u64).saturating_sub(BUCKETS);
                g.leaves_at_ns(j).saturating_sub(now_ns)
            }
            None => 0,
        }
    }
}

/// What a successful reservation recorded: enough to give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The bucket the amount was added to (the newest).
    pub bucket: u64,
    /// Units in the window, this reservation included.
    pub used: u64,
}

/// Why a reservation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No room (`peek` tells how the window stands).
    Full,
    /// The slot was reclaimed for another key meanwhile; look the key up again.
    Moved,
}

/// One slot of a table.
#[derive(Clone, Copy)]
pub struct Slot<'a> {
    region: &'a Region,
    base: usize,
}

impl<'a> Slot<'a> {
    pub(crate) fn new(region: &'a Region, base: usize) -> Slot<'a> {
        Slot { region, base }
    }

    #[inline(always)]
    pub(crate) fn word(&self, field: usize) -> &'a std::sync::atomic::AtomicU64 {
        self.region.word(self.base + field)
    }

    #[inline(always)]
    fn ring(&self, bucket: u64) -> &'a std::sync::atomic::AtomicU64 {
        self.word(RING + (bucket % RING_LEN) as usize)
    }

    /// Units in the window ending at bucket `newest`: the head (if still inside) plus the
    /// sealed buckets before it. The hot path: no division inside the loop.
    #[inline]
    fn used(&self, head: u64, head_bucket: u64, newest: u64) -> u64 {
        if head_bucket == newest {
            let sealed = self.word(SEALED).load(SeqCst);
            if sealed != 0 && tag_of(sealed) == tag(newest) {
                return count_of(head) + count_of(sealed);
            }
        }
        self.sum_ring(head, head_bucket, newest)
    }

    /// [`Self::used`] the long way: the head plus every sealed bucket in the window.
    fn sum_ring(&self, head: u64, head_bucket: u64, newest: u64) -> u64 {
        let oldest = newest.saturating_sub(BUCKETS);
        let mut used = if head_bucket >= oldest {
            count_of(head)
        } else {
            0
        };
        let mut j = oldest;
        let mut at = (j % RING_LEN) as usize;
        while j < head_bucket {
            let sealed = self.word(RING + at).load(SeqCst);
            if tag_of(sealed) == tag(j) {
                used += count_of(sealed);
            }
            j += 1;
            at += 1;
            if at == RING_LEN as usize {
                at = 0;
            }
        }
        used
    }

    /// Sum the window seen from `now_ns`, given a head word already read.
    fn state(&self, head: u64, g: Granularity, now_ns: u64) -> WindowState {
        let n = g.bucket(now_ns);
        let head_bucket = absolute(n, tag_of(head));
        let newest = n.max(head_bucket);
        let mut counts = [0u64; BUCKETS as usize + 1];
        let mut used = 0;
        for (i, count) in counts.iter_mut().enumerate() {
            let Some(j) = (newest + i as u64).checked_sub(BUCKETS) else {
                continue;
            };
            let c = if j == head_bucket {
                count_of(head)
            } else if j < head_bucket {
                let sealed = self.ring(j).load(SeqCst);
                if tag_of(sealed) == tag(j) {
                    count_of(sealed)
                } else {
                    0
                }
            } else {
                0
            };
            *count = c;
            used += c;
        }
        WindowState {
            newest,
            counts,
            used,
        }
    }

    /// Read the window without changing it. `None` if the slot no longer holds `key`.
    pub fn peek(&self, key: u64, g: Granularity, now_ns: u64) -> Option<WindowState> {
        let head = self.word(HEAD).load(SeqCst);
        let state = self.state(head, g, now_ns);
        (self.word(KEY).load(SeqCst) == key).then_some(state)
    }

    /// Add `amount` if the window has room for it under `max`.
    pub fn reserve(
        &self,
        key: u64,
        g: Granularity,
        now_ns: u64,
        amount: u64,
        max: u64,
    ) -> Result<Reserved, Refused> {
        let head_word = self.word(HEAD);
        loop {
            let head = head_word.load(SeqCst);
            // The key is read after the head: a reclaim changes the key before the head, so
            // a head read while the key still matched belongs to this key.
            if self.word(KEY).load(SeqCst) != key {
                return Err(Refused::Moved);
            }
            let now_bucket = g.bucket(now_ns);
            let head_bucket = absolute(now_bucket, tag_of(head));
            let n = now_bucket.max(head_bucket);
            let used = self.used(head, head_bucket, n);
            if used + amount > max {
                return Err(Refused::Full);
            }
            let moved = head_bucket != n;
            let next = if !moved {
                pack(n, count_of(head) + amount)
            } else {
                // Seal the old head into the ring before moving on, so readers that see the
                // new head also see the old bucket.
                self.seal(head_bucket, count_of(head));
                pack(n, amount)
            };
            if head_word
                .compare_exchange(head, next, SeqCst, SeqCst)
                .is_ok()
            {
                return Ok(Reserved {
                    bucket: n,
                    used: used + amount,
                });
            }
        }
    }

    /// Write bucket `j`'s final count into the ring, unless a newer bucket or a larger count
    /// for `j` is already there (a slower thread sealing the same bucket from an older read).
    fn seal(&self, j: u64, count: u64) {
        if count == 0 {
            return;
        }
        let entry = self.ring(j);
        let mut current = entry.load(SeqCst);
        loop {
            let t = tag_of(current);
            if t == tag(j) && count_of(current) >= count {
                return;
            }
            if t != tag(j) && current != 0 && absolute(j, t) > j {
                return;
            }
            match entry.compare_exchange(current, pack(j, count), SeqCst, SeqCst) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Give back `amount` added to bucket `bucket`; nothing if that bucket has left the ring
    /// or the slot no longer holds `key`. Returns whether anything was given back.
    pub fn release(&self, key: u64, bucket: u64, amount: u64) -> bool {
        let head_word = self.word(HEAD);
        loop {
            let head = head_word.load(SeqCst);
            if self.word(KEY).load(SeqCst) != key {
                return false;
            }
            if tag_of(head) == tag(bucket) {
                let next = pack(bucket, count_of(head).saturating_sub(amount));
                if head_word
                    .compare_exchange(head, next, SeqCst, SeqCst)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            // Sealed: the head moved past `bucket` after sealing it.
            let entry = self.ring(bucket);
            let current = entry.load(SeqCst);
            if tag_of(current) != tag(bucket) {
                return false;
            }
            let next = pack(bucket, count_of(current).saturating_sub(amount));
            if entry
                .compare_exchange(current, next, SeqCst, SeqCst)
                .is_ok()
            {
                self.release_from_sealed_sum(bucket, amount);
                return true;
            }
        }
    }

    /// Take a released amount out of the cached sealed sum if that sum covers `bucket`. A
    /// sum computed concurrently may still hold it: an over-count, which only denies early.
    fn release_from_sealed_sum(&self, bucket: u64, amount: u64) {
        let word = self.word(SEALED);
        let mut current = word.load(SeqCst);
        loop {
            let newest = absolute(bucket, tag_of(current));
            if current == 0 || newest <= bucket || newest - bucket > BUCKETS {
                return;
            }
            let next = pack(newest, count_of(current).saturating_sub(amount));
            match word.compare_exchange(current, next, SeqCst, SeqCst) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// True when nothing in this slot can count any more at `now_ns`.
    pub(crate) fn expired(&self, now_ns: u64) -> bool {
        let bucket_ns = self.word(GRAN).load(SeqCst) & !CLIENT_CHOSEN;
        if bucket_ns == 0 {
            return true;
        }
        let g = Granularity { bucket_ns };
        let n = g.bucket(now_ns);
        let head = self.word(HEAD).load(SeqCst);
        // One spare bucket of margin, so threads whose clocks differ slightly agree.
        absolute(n, tag_of(head)) + BUCKETS + 2 <= n
    }

    /// Prepare the slot for a new key (`client_chosen`: one a client can make up); the
    /// caller publishes the key afterwards.
    pub(crate) fn reset(&self, g: Granularity, now_ns: u64, client_chosen: bool) {
        for i in 0..RING_LEN as usize {
            self.word(RING + i).store(0, SeqCst);
        }
        // A fresh window has nothing sealed.
        self.word(SEALED).store(pack(g.bucket(now_ns), 0), SeqCst);
        let class = if client_chosen { CLIENT_CHOSEN } else { 0 };
        self.word(GRAN).store(g.bucket_ns | class, SeqCst);
        self.word(HEAD).store(pack(g.bucket(now_ns), 0), SeqCst);
    }

    /// The slot's bucket length.
    pub(crate) fn bucket_ns(&self) -> u64 {
        self.word(GRAN).load(SeqCst) & !CLIENT_CHOSEN
    }

    /// Whether the slot's key is one a client chose ([`Self::reset`]).
    pub(crate) fn client_chosen(&self) -> bool {
        self.word(GRAN).load(SeqCst) & CLIENT_CHOSEN != 0
    }

    /// The slot no longer counts as a client's (it is being handed on).
    pub(crate) fn clear_client_chosen(&self) {
        self.word(GRAN).fetch_and(!CLIENT_CHOSEN, SeqCst);
    }

    pub(crate) fn head_word(&self) -> u64 {
        self.word(HEAD).load(SeqCst)
    }

    pub(crate) fn try_replace_head(&self, current: u64, g: Granularity, now_ns: u64) -> bool {
        self.word(HEAD)
            .compare_exchange(current, pack(g.bucket(now_ns), 0), SeqCst, SeqCst)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(region: &Region) -> Slot<'_> {
        let s = Slot::new(region, 0);
        s.word(KEY).store(7, SeqCst);
        s
    }

    const MIN: u64 = 60_000;
    const NS: u64 = 1_000_000;

    #[test]
    fn absolute_handles_wrap_and_future() {
        assert_eq!(absolute(100, 100), 100);
        assert_eq!(absolute(100, 90), 90);
        assert_eq!(absolute(100, 101), 101);
        let n = (1 << 24) + 5;
        assert_eq!(absolute(n, tag(n - 10)), n - 10);
    }

    #[test]
    fn thirty_per_minute_then_slides() {
        let region = Region::allocate(SLOT_WORDS);
        let s = slot(&region);
        let g = Granularity::for_window_ms(MIN);
        for i in 0..30 {
            assert!(s.reserve(7, g, i * 1000 * NS, 1, 30).is_ok(), "call {i}");
        }
        assert_eq!(s.reserve(7, g, 30_000 * NS, 1, 30), Err(Refused::Full));
        let Some(state) = s.peek(7, g, 30_000 * NS) else {
            panic!()
        };
        assert_eq!(state.used, 30);
        // The first call leaves the window at most W + g after it was made.
        let retry = state.retry_after_ns(1, g, 30_000 * NS).unwrap();
        assert!((30_000 * NS..=35_000 * NS).contains(&retry), "{retry}");
        assert!(s.reserve(7, g, 30_000 * NS + retry, 1, 30).is_ok());
    }

    #[test]
    fn release_gives_back_from_head_and_ring() {
        let region = Region::allocate(SLOT_WORDS);
        let s = slot(&region);
        let g = Granularity::for_window_ms(MIN);
        let a = s.reserve(7, g, 0, 3, 10).unwrap();
        let b = s.reserve(7, g, 10_000 * NS, 3, 10).unwrap();
        assert!(s.release(7, a.bucket, 3)); // sealed in the ring by now
        assert!(s.release(7, b.bucket, 3)); // still the head
        assert_eq!(s.peek(7, g, 10_000 * NS).unwrap().used, 0);
        assert!(!s.release(8, b.bucket, 3), "wrong key gives nothing back");
    }

    #[test]
    fn reclaimed_slot_refuses_old_key() {
        let region = Region::allocate(SLOT_WORDS);
        let s = slot(&region);
        let g = Granularity::for_window_ms(MIN);
        s.word(KEY).store(9, SeqCst);
        assert_eq!(s.reserve(7, g, 0, 1, 10), Err(Refused::Moved));
    }
}
