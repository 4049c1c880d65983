//! Open addressing from counter keys to slots.
//!
//! Lookups of existing keys take no lock: they scan the key's probe sequence up to the first
//! empty slot. Claiming a slot for a new key (an empty one, or one whose window has expired)
//! is serialised by an insert lock so a key can never end up in two slots. A key that finds
//! no slot within [`MAX_PROBE`] is refused: the
//! caller denies (fails closed).
//!
//! Keys a client chooses (an unverified credential, a session or agent id) may hold at most
//! half the slots ([`CLIENT_SHARE`]): a flood of made-up credentials fills that half and
//! no more, so trusted keys (verified identities, `server` and `global` counters) and every
//! key already counted keep their room. When the half is full, the table sweeps it (at
//! most once a second) for slots whose windows have expired before it refuses a new one.
//! Once three quarters of the half are taken, one network address's new keys find room
//! only within its part of it ([`super::peers`]).

use super::peers::{Peer, PeerRoom};
use super::region::{header, Region, HEADER_WORDS};
use super::reservation::{ReservationLog, LINE_WORDS, MAX_SLOTS};
use super::window::{Granularity, Slot, KEY, SLOT_WORDS};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;

/// Slots examined for one key before the table counts as full.
pub const MAX_PROBE: usize = 64;

/// Marks a slot being handed from an expired key to a new one.
const RECLAIMING: u64 = u64::MAX;

/// Fixed seeds: keys must hash the same in every process that shares a table.
const SEEDS: [u64; 4] = [
    0x7f4a_7c15_9e37_79b9,
    0x94d0_49bb_1331_11eb,
    0xbf58_476d_1ce4_e5b9,
    0x2545_f491_4f6c_dd1d,
];

/// Which part of the table client-chosen keys may hold: one slot in this many.
pub const CLIENT_SHARE: usize = 2;

/// A counter's identity (counter name, window, scope kind) plus the scope's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterKey {
    pub hash: u64,
    pub granularity: Granularity,
    /// The scope's value is one a client can make up at will: it may take only the
    /// client-chosen share of the table.
    pub client_chosen: bool,
}

impl CounterKey {
    /// Hash the counter's identity once, when the policy is compiled.
    pub fn identity(parts: &[&[u8]]) -> u64 {
        let mut h =
            ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]).build_hasher();
        for p in parts {
            h.write_usize(p.len());
            h.write(p);
        }
        h.finish()
    }

    /// The key for one scope value (a grant, a session, ...) of a counter.
    #[inline(always)]
    pub fn new(identity: u64, scope_value: &[u8], granularity: Granularity) -> CounterKey {
        let mut h =
            ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]).build_hasher();
        h.write_u64(identity);
        h.write(scope_value);
        let mut hash = h.finish();
        if hash == 0 || hash == RECLAIMING {
            hash = 0x9e37_79b9_7f4a_7c15;
        }
        CounterKey {
            hash,
            granularity,
            client_chosen: false,
        }
    }

    /// This key, marked as one a client chose (see [`CounterKey::client_chosen`]).
    pub fn chosen_by_client(self, client_chosen: bool) -> CounterKey {
        CounterKey {
            client_chosen,
            ..self
        }
    }
}

/// No slot could be found or claimed for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// Index of the slot that holds a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRef(pub u32);

/// A fixed-capacity table of sliding-window counters plus its reservation log.
pub struct CounterTable {
    region: Region,
    mask: usize,
    reservations: ReservationLog,
    /// Where a key's probe sequence starts: a hash of its hash, keyed with the table's own
    /// random secret, so no one can make up keys that all start at one place.
    placement: ahash::RandomState,
    /// Serialises claiming slots for new keys.
    insert: Mutex<()>,
    /// Which address's client-chosen key each slot holds.
    peers: PeerRoom,
}

impl CounterTable {
    /// Words a table of this size needs (capacity rounded up to a power of two).
    pub fn required_words(capacity: usize, reservations: usize) -> usize {
        HEADER_WORDS
            + capacity.max(1).next_power_of_two() * SLOT_WORDS
            + ReservationLog::lines_for_capacity(reservations) * LINE_WORDS
    }

    /// A table in process memory. Panics beyond [`MAX_SLOTS`] slots; see [`Self::try_new`].
    pub fn new(capacity: usize, reservations: usize) -> CounterTable {
        Self::try_new(capacity, reservations).expect("a valid table size")
    }

    /// A table in process memory, or why it cannot be made (too many slots).
    pub fn try_new(capacity: usize, reservations: usize) -> Result<CounterTable, String> {
        let capacity = capacity.max(1).next_power_of_two();
        // Checked before allocating, which a huge size would make fail.
        check_slots(capacity)?;
        let region = Region::allocate(Self::required_words(capacity, reservations));
        let reservations = ReservationLog::lines_for_capacity(reservations);
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret).map_err(|e| format!("no random source: {e}"))?;
        let word = |i: usize| u64::from_le_bytes(secret[i * 8..i * 8 + 8].try_into().expect("8"));
        region
            .header(header::CAPACITY)
            .store(capacity as u64, SeqCst);
        region
            .header(header::RESERVATIONS)
            .store(reservations as u64, SeqCst);
        let log_base = HEADER_WORDS + capacity * SLOT_WORDS;
        Ok(CounterTable {
            placement: ahash::RandomState::with_seeds(word(0), word(1), SEEDS[2], SEEDS[3]),
            region,
            mask: capacity - 1,
            reservations: ReservationLog::new(log_base, reservations),
            insert: Mutex::new(()),
            peers: PeerRoom::new(capacity, (word(0) ^ word(1), word(1).rotate_left(17))),
        })
    }

    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Slots that hold a key (live or expired but not yet reused).
    pub fn occupied(&self) -> u64 {
        self.region.load(header::OCCUPIED)
    }

    /// Times a new key found no slot.
    pub fn full_events(&self) -> u64 {
        self.region.load(header::FULL_EVENTS)
    }

    /// Slots counted as holding a client-chosen key (live, or expired and not yet swept).
    pub fn client_slots(&self) -> u64 {
        self.region.load(header::CLIENT_SLOTS)
    }

    /// The most slots client-chosen keys may hold.
    pub fn client_cap(&self) -> u64 {
        (self.capacity() / CLIENT_SHARE).max(1) as u64
    }

    /// Client-chosen slots held by keys `peer` brought (as counted: addresses share buckets).
    pub fn peer_slots(&self, peer: Peer) -> u64 {
        self.peers.held(peer)
    }

    /// Times a client-chosen key was refused because its address held its part of the share.
    pub fn peer_full_events(&self) -> u64 {
        self.region.load(header::PEER_FULL_EVENTS)
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    pub(crate) fn reservation_log(&self) -> &ReservationLog {
        &self.reservations
    }

    #[inline]
    pub fn slot(&self, slot: SlotRef) -> Slot<'_> {
        Slot::new(&self.region, HEADER_WORDS + slot.0 as usize * SLOT_WORDS)
    }

    #[inline]
    fn probe(&self, hash: u64) -> impl Iterator<Item = SlotRef> + '_ {
        let home = self.home(hash);
        (0..MAX_PROBE.min(self.capacity())).map(move |i| SlotRef(((home + i) & self.mask) as u32))
    }

    /// Start loading `key`'s home slot (both of its cache lines) into the cache, so that a
    /// later `find` in a table far larger than the cache need not wait the whole trip to
    /// memory. A hint: it changes nothing.
    #[inline]
    pub fn prefetch(&self, key: &CounterKey) {
        let home = HEADER_WORDS + (self.home(key.hash) & self.mask) * SLOT_WORDS;
        self.region.prefetch(home);
        self.region.prefetch(home + SLOT_WORDS / 2);
    }

    /// Start loading the reservation-log line the next recorded reservation will take.
    #[inline]
    pub fn prefetch_reservation(&self) {
        self.reservations.prefetch_next(&self.region);
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        self.placement.hash_one(hash) as usize
    }

    /// The slot holding `key`, if any. Never blocks.
    #[inline]
    pub fn find(&self, key: &CounterKey) -> Option<SlotRef> {
        for s in self.probe(key.hash) {
            match self.slot(s).word(KEY).load(SeqCst) {
                k if k == key.hash => return Some(s),
                0 => return None,
                _ => {}
            }
        }
        None
    }

    /// The slot holding `key`, claiming one if there is none; a new client-chosen key is
    /// counted as `peer`'s, the address of the request that brought it.
    pub fn find_or_insert(
        &self,
        key: &CounterKey,
        now_ns: u64,
        peer: Peer,
    ) -> Result<SlotRef, TableFull> {
        if let Some(s) = self.find(key) {
            return Ok(s);
        }
        // A panic under the lock leaves no half-made insert: every step is an atomic store.
        let _lock = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = self.find(key) {
            return Ok(s);
        }
        if key.client_chosen {
            if !self.client_room(now_ns) {
                self.region.header(header::FULL_EVENTS).fetch_add(1, SeqCst);
                return Err(TableFull);
            }
            if !self.peer_room(peer, now_ns) {
                self.region.header(header::FULL_EVENTS).fetch_add(1, SeqCst);
                self.region
                    .header(header::PEER_FULL_EVENTS)
                    .fetch_add(1, SeqCst);
                return Err(TableFull);
            }
        }
        for s in self.probe(key.hash) {
            let slot = self.slot(s);
            let current = slot.word(KEY).load(SeqCst);
            if current == 0 {
                slot.reset(key.granularity, now_ns, key.client_chosen);
                slot.word(KEY).store(key.hash, SeqCst);
                self.region.header(header::OCCUPIED).fetch_add(1, SeqCst);
                self.hold_client(s, key.client_chosen, peer);
                return Ok(s);
            }
            if (current == RECLAIMING || slot.expired(now_ns))
                && self.reclaim(s, current, key, now_ns, peer)
            {
                return Ok(s);
            }
        }
        self.region.header(header::FULL_EVENTS).fetch_add(1, SeqCst);
        Err(TableFull)
    }

    /// Hand an expired slot to `key`. Under the insert lock, so only this thread changes keys;
    /// users of the old key may still be adding, which the head CAS detects.
    fn reclaim(&self, s: SlotRef, old: u64, key: &CounterKey, now_ns: u64, peer: Peer) -> bool {
        let slot = self.slot(s);
        if !self.release_slot(s, old, key.granularity, now_ns) {
            return false;
        }
        slot.reset(key.granularity, now_ns, key.client_chosen);
        slot.word(KEY).store(key.hash, SeqCst);
        self.hold_client(s, key.client_chosen, peer);
        true
    }

    /// Take an expired slot from its key (whose users then see it moved), leaving it free
    /// (`RECLAIMING`) for the next key that probes through it. False if the key came back to
    /// life meanwhile. Under the insert lock.
    fn release_slot(&self, s: SlotRef, old: u64, g: Granularity, now_ns: u64) -> bool {
        let slot = self.slot(s);
        if old != RECLAIMING {
            // Users re-read the key after the head; from here on they see the slot moved.
            slot.word(KEY).store(RECLAIMING, SeqCst);
            let head = slot.head_word();
            if !slot.expired(now_ns) || !slot.try_replace_head(head, g, now_ns) {
                // Someone added to the old key meanwhile: it is live again.
                slot.word(KEY).store(old, SeqCst);
                return false;
            }
        }
        if slot.client_chosen() {
            slot.clear_client_chosen();
            self.region
                .header(header::CLIENT_SLOTS)
                .fetch_sub(1, SeqCst);
            self.peers.free(s.0 as usize);
        }
        true
    }

    /// Slot `s` now holds a new key: count it against the share if a client chose it.
    fn hold_client(&self, s: SlotRef, client_chosen: bool, peer: Peer) {
        if client_chosen {
            self.region
                .header(header::CLIENT_SLOTS)
                .fetch_add(1, SeqCst);
            self.peers.hold(s.0 as usize, peer);
        }
    }

    /// Whether a client-chosen key may take one more slot: under the share, or under it
    /// again once the client-chosen slots whose windows have expired are freed (looked for
    /// at most once a second: a flood is then refused at the cost of a load). Under the
    /// insert lock.
    fn client_room(&self, now_ns: u64) -> bool {
        self.client_slots() < self.client_cap()
            || (self.sweep(now_ns) && self.client_slots() < self.client_cap())
    }

    /// Whether `peer` may take one more client-chosen slot: the share is not pressed, or the
    /// address holds less than its part of it, counted again once expired slots are freed
    /// (as in [`Self::client_room`]: else keys whose windows have expired would press the
    /// share, and hold an address's part, until the share filled). Under the insert lock.
    fn peer_room(&self, peer: Peer, now_ns: u64) -> bool {
        let room = || {
            self.peers
                .room(peer, self.client_slots(), self.client_cap())
        };
        room() || (self.sweep(now_ns) && room())
    }

    /// Free the client-chosen slots whose windows have expired, at most once a second: false
    /// when one ran within this second already. Under the insert lock.
    fn sweep(&self, now_ns: u64) -> bool {
        let second = now_ns / 1_000_000_000 + 1;
        let last = self.region.header(header::LAST_SWEEP);
        if last.load(SeqCst) >= second {
            return false;
        }
        last.store(second, SeqCst);
        for i in 0..self.capacity() {
            let s = SlotRef(i as u32);
            let slot = self.slot(s);
            let key = slot.word(KEY).load(SeqCst);
            if key != 0 && key != RECLAIMING && slot.client_chosen() && slot.expired(now_ns) {
                let g = Granularity {
                    bucket_ns: slot.bucket_ns(),
                };
                self.release_slot(s, key, g, now_ns);
            }
        }
        true
    }
}

/// Refuse a table of more slots than a reservation-log part can name.
pub(crate) fn check_slots(capacity: usize) -> Result<(), String> {
    if capacity > MAX_SLOTS {
        return Err(format!(
            "a counter table has at most {MAX_SLOTS} slots, not {capacity}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Peer;
    use super::*;
    use proptest::prelude::*;

    const NS: u64 = 1_000_000;

    fn key(id: u64, value: &str) -> CounterKey {
        CounterKey::new(id, value.as_bytes(), Granularity::for_window_ms(60_000))
    }

    #[test]
    fn finds_what_it_inserted_and_counts_occupancy() {
        let t = CounterTable::new(64, 16);
        let a = t.find_or_insert(&key(1, "a"), 0, Peer::UNKNOWN).unwrap();
        let b = t.find_or_insert(&key(1, "b"), 0, Peer::UNKNOWN).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.find(&key(1, "a")), Some(a));
        assert_eq!(t.find_or_insert(&key(1, "a"), 0, Peer::UNKNOWN), Ok(a));
        assert_eq!(t.occupied(), 2);
    }

    #[test]
    fn full_table_refuses_then_reuses_expired_slots() {
        let t = CounterTable::new(4, 16);
        let g = Granularity::for_window_ms(60_000);
        for i in 0..4 {
            let k = key(1, &i.to_string());
            let s = t.find_or_insert(&k, 0, Peer::UNKNOWN).unwrap();
            t.slot(s).reserve(k.hash, g, 0, 1, 10).unwrap();
        }
        assert_eq!(
            t.find_or_insert(&key(1, "late"), 1000 * NS, Peer::UNKNOWN),
            Err(TableFull)
        );
        assert_eq!(t.full_events(), 1);
        // Two minutes later every window has expired and the slots are reused.
        let k = key(1, "late");
        let s = t.find_or_insert(&k, 120_000 * NS, Peer::UNKNOWN).unwrap();
        assert_eq!(t.slot(s).peek(k.hash, g, 120_000 * NS).unwrap().used, 0);
        assert_eq!(t.occupied(), 4);
    }

    #[test]
    fn client_chosen_keys_fill_only_their_share() {
        let t = CounterTable::new(64, 16);
        let g = Granularity::for_window_ms(60_000);
        let made_up = |i: usize| key(1, &format!("tok-{i}")).chosen_by_client(true);
        // A flood of made-up credentials: half the table, then refused.
        let mut taken = 0;
        for i in 0..200 {
            if let Ok(s) = t.find_or_insert(&made_up(i), 0, Peer::UNKNOWN) {
                t.slot(s).reserve(made_up(i).hash, g, 0, 1, 10).unwrap();
                taken += 1;
            }
        }
        assert_eq!(taken, 32);
        assert_eq!(t.client_slots(), 32);
        // Keys already counted keep their slot; trusted keys still find room.
        assert!(t.find_or_insert(&made_up(0), 1, Peer::UNKNOWN).is_ok());
        for i in 0..16 {
            assert!(
                t.find_or_insert(&key(2, &i.to_string()), 1, Peer::UNKNOWN)
                    .is_ok(),
                "{i}"
            );
        }
        // Once the flood's windows have expired, its slots are swept for new callers...
        let later = 120_000 * NS;
        assert!(t
            .find_or_insert(&made_up(500), later, Peer::UNKNOWN)
            .is_ok());
        assert_eq!(t.client_slots(), 1);
        // ...and the sweep freed them for anyone: the old keys start again from nothing.
        let again = t.find_or_insert(&made_up(0), later, Peer::UNKNOWN).unwrap();
        assert_eq!(
            t.slot(again).peek(made_up(0).hash, g, later).unwrap().used,
            0
        );
    }

    #[test]
    fn the_share_is_swept_at_most_once_a_second() {
        let t = CounterTable::new(4, 4);
        let g = Granularity::for_window_ms(1000);
        let made_up =
            |i: usize| CounterKey::new(1, format!("t{i}").as_bytes(), g).chosen_by_client(true);
        for i in 0..2 {
            let s = t.find_or_insert(&made_up(i), 0, Peer::UNKNOWN).unwrap();
            t.slot(s).reserve(made_up(i).hash, g, 0, 1, 10).unwrap();
        }
        // Full at 5 s: the sweep runs (the windows expired) and frees both.
        assert!(t
            .find_or_insert(&made_up(2), 5_000 * NS, Peer::UNKNOWN)
            .is_ok());
        assert!(t
            .find_or_insert(&made_up(3), 5_000 * NS, Peer::UNKNOWN)
            .is_ok());
        // Full again within the same second: no second sweep, refused.
        assert_eq!(
            t.find_or_insert(&made_up(4), 5_500 * NS, Peer::UNKNOWN),
            Err(TableFull)
        );
        assert_eq!(t.client_slots(), 2);
    }
    /// Peers in buckets of their own, so that what one is given says nothing of another.
    fn apart(t: &CounterTable, n: usize) -> Vec<Peer> {
        let mut seen = std::collections::HashSet::new();
        (0u32..)
            .map(|i| Peer::of(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()))
            .filter(|p| seen.insert(t.peers.bucket(*p)))
            .take(n)
            .collect()
    }

    #[test]
    fn a_flood_from_one_address_leaves_the_last_quarter_to_others() {
        let t = CounterTable::new(2048, 16);
        let (cap, share) = (
            t.client_cap(),
            t.client_cap() / crate::counter::peers::PEER_SHARE,
        );
        let made_up = |who: usize, i: usize| key(1, &format!("{who}-{i}")).chosen_by_client(true);
        let peers = apart(&t, 18);
        let (flooder, others) = (peers[0], &peers[1..]);
        let taken = (0..cap as usize)
            .take_while(|i| t.find_or_insert(&made_up(0, *i), 0, flooder).is_ok())
            .count() as u64;
        assert_eq!(
            taken,
            cap - cap / 4,
            "the flood takes three quarters, no more"
        );
        assert_eq!(t.peer_slots(flooder), taken);
        // The last quarter: a share for each of 16 other addresses.
        for (n, peer) in others[..16].iter().enumerate() {
            for i in 0..share as usize {
                let k = made_up(n + 1, i);
                assert!(
                    t.find_or_insert(&k, 0, *peer).is_ok(),
                    "address {n}, key {i}"
                );
            }
            let over = made_up(n + 1, share as usize);
            assert_eq!(t.find_or_insert(&over, 0, *peer), Err(TableFull), "{n}");
        }
        assert_eq!(t.client_slots(), cap);
        // Full: the next address is refused, and so is the flood, with any address.
        assert!(t.find_or_insert(&made_up(17, 0), 0, others[16]).is_err());
        assert!(t
            .find_or_insert(&made_up(0, cap as usize), 0, flooder)
            .is_err());
        // Keys without an address are bounded by the share alone, and trusted keys by nothing.
        assert!(t.find_or_insert(&made_up(99, 0), 0, Peer::UNKNOWN).is_err());
        assert!(t.find_or_insert(&key(2, "trusted"), 0, flooder).is_ok());
        // Refused for their part: the flood once, and 15 addresses past theirs (the last
        // found the share itself full).
        assert_eq!(t.peer_full_events(), 1 + 15);
    }

    #[test]
    fn keys_whose_windows_expired_press_no_one() {
        let t = CounterTable::new(2048, 16);
        let made_up = |who: usize, i: usize| key(1, &format!("{who}-{i}")).chosen_by_client(true);
        let peers = apart(&t, 3);
        let flooded = (0..2048)
            .take_while(|i| t.find_or_insert(&made_up(0, *i), 0, peers[0]).is_ok())
            .count();
        assert_eq!(flooded as u64, t.client_cap() * 3 / 4);
        // The flood's minute has passed: the same address, and any other, finds room
        // again as if nothing had been there, once the expired keys are swept.
        let later = 200_000 * NS;
        let share = t.client_cap() / crate::counter::peers::PEER_SHARE;
        for (n, peer) in peers.iter().enumerate() {
            for i in 0..share as usize * 2 {
                let k = made_up(n + 10, i);
                assert!(
                    t.find_or_insert(&k, later, *peer).is_ok(),
                    "address {n}, key {i}"
                );
            }
        }
        assert_eq!(t.peer_slots(peers[0]), share * 2);
        assert_eq!(t.client_slots(), share * 2 * 3);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { peer: usize, id: u16, client: bool },
        Wait { ms: u32 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..6usize, 0..600u16, proptest::bool::weighted(0.8))
                .prop_map(|(peer, id, client)| Op::Insert { peer, id, client }),
            1 => (0..90_000u32).prop_map(|ms| Op::Wait { ms }),
        ]
    }

    proptest! {
        /// Whatever keys arrive from whichever addresses, and however windows expire: each
        /// address's count is the client-chosen slots it brought and still holds, the share
        /// is never passed, and an address is refused for its part only once the share is
        /// pressed and that part is taken.
        #[test]
        fn peer_counts_follow_the_slots(ops in proptest::collection::vec(op(), 1..400)) {
            let t = CounterTable::new(256, 16);
            let g = Granularity::for_window_ms(60_000);
            let (cap, share) = (t.client_cap(), t.client_cap() / crate::counter::peers::PEER_SHARE);
            let mut peers = apart(&t, 5);
            peers.push(Peer::UNKNOWN);
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Wait { ms } => now += u64::from(ms) * NS,
                    Op::Insert { peer, id, client } => {
                        let k = key(1, &id.to_string()).chosen_by_client(client);
                        let (pressed, held) = (
                            t.client_slots() >= cap - cap / 4,
                            t.peer_slots(peers[peer]),
                        );
                        let before = t.peer_full_events();
                        if let Ok(s) = t.find_or_insert(&k, now, peers[peer]) {
                            let _ = t.slot(s).reserve(k.hash, g, now, 1, u64::MAX >> 24);
                        }
                        if t.peer_full_events() > before {
                            prop_assert!(client && pressed && held >= share.max(1));
                            prop_assert!(peers[peer].word().is_some());
                        }
                    }
                }
                prop_assert!(t.client_slots() <= cap);
                let mut counted = vec![0u64; super::super::peers::PEER_BUCKETS];
                let mut client_slots = 0;
                for i in 0..t.capacity() {
                    let slot = t.slot(SlotRef(i as u32));
                    let k = slot.word(KEY).load(SeqCst);
                    if k != 0 && k != RECLAIMING && slot.client_chosen() {
                        client_slots += 1;
                        counted[t.peers.bucket_of_slot(i)] += 1;
                    }
                }
                prop_assert_eq!(client_slots, t.client_slots());
                for p in &peers[..5] {
                    prop_assert_eq!(counted[t.peers.bucket(*p)], t.peer_slots(*p));
                }
            }
        }
    }
}
