//! Property tests of the sliding-window counters against a reference model (a log of every
//! allowed call).
//!
//! Guarantee: in no closed interval of length W are more than `max` units allowed.
//! Worst case of denying early: a call is denied only if the units allowed in the last
//! W + g (g = one sub-bucket, W/12) leave no room for it.

use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use toolgate_core::counter::window::Refused;
use toolgate_core::counter::{CounterKey, CounterTable, Granularity, Peer, BUCKETS};

const MS: u64 = 1_000_000;

/// One counter in its own table, reserving through the public slot API.
struct Counter {
    table: CounterTable,
    key: CounterKey,
    max: u64,
}

impl Counter {
    fn new(window_ms: u64, max: u64) -> Counter {
        let g = Granularity::for_window_ms(window_ms);
        Counter {
            table: CounterTable::new(16, 16),
            key: CounterKey::new(1, b"k", g),
            max,
        }
    }

    fn reserve(&self, now_ns: u64, amount: u64) -> bool {
        self.reserve_at(now_ns, amount).is_some()
    }

    /// The decision's effective time if allowed: the clock reading, or the start of the
    /// counter's newest bucket if another caller already moved the counter past the reading.
    fn reserve_at(&self, now_ns: u64, amount: u64) -> Option<u64> {
        loop {
            let slot = self
                .table
                .find_or_insert(&self.key, now_ns, Peer::UNKNOWN)
                .expect("table has room");
            match self.table.slot(slot).reserve(
                self.key.hash,
                self.key.granularity,
                now_ns,
                amount,
                self.max,
            ) {
                Ok(r) => return Some(now_ns.max(r.bucket * self.key.granularity.bucket_ns)),
                Err(Refused::Full) => return None,
                Err(Refused::Moved) => continue,
            }
        }
    }
}

/// Units allowed with timestamps in `[from, to]`.
fn allowed_between(log: &[(u64, u64)], from: u64, to: u64) -> u64 {
    log.iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .map(|(_, a)| a)
        .sum()
}

/// No closed interval of length `window_ns` holds more than `max` units.
fn assert_never_over(log: &[(u64, u64)], window_ns: u64, max: u64) -> Result<(), TestCaseError> {
    for (start, _) in log {
        let n = allowed_between(log, *start, start + window_ns);
        prop_assert!(
            n <= max,
            "{n} units allowed in [{start}, {start}+{window_ns}], max {max}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random call times and amounts: never over the limit, never denied earlier than the
    /// documented worst case.
    #[test]
    fn sliding_window_matches_reference(
        window_ms in 1u64..5_000,
        max in 1u64..20,
        calls in prop::collection::vec((0u64..2_000, 1u64..4), 1..300),
    ) {
        let counter = Counter::new(window_ms, max);
        let window_ns = window_ms * MS;
        let g = Granularity::for_window_ms(window_ms).bucket_ns;
        let mut now = 1_000 * MS;
        let mut log: Vec<(u64, u64)> = Vec::new();
        for (gap_us, amount) in calls {
            now += gap_us * 1_000 * (window_ms / 200).max(1);
            if counter.reserve(now, amount) {
                log.push((now, amount));
            } else {
                // Denied: the last W + g (plus the rounding of g, at most BUCKETS ns) was full.
                let recent = allowed_between(&log, now.saturating_sub(window_ns + g + BUCKETS), now);
                prop_assert!(recent + amount > max, "denied at {now} with only {recent} recent of {max}");
            }
        }
        assert_never_over(&log, window_ns, max)?;
    }

    /// Bursts far apart: a full window's worth is allowed again once it has slid past.
    #[test]
    fn full_capacity_returns_after_window_plus_bucket(window_ms in 12u64..10_000, max in 1u64..50) {
        let counter = Counter::new(window_ms, max);
        let g = Granularity::for_window_ms(window_ms).bucket_ns;
        let start = 50_000 * MS;
        for _ in 0..max {
            prop_assert!(counter.reserve(start, 1));
        }
        prop_assert!(!counter.reserve(start, 1));
        prop_assert!(!counter.reserve(start + window_ms * MS - 1, 1), "still inside the window");
        let later = start + window_ms * MS + g;
        for _ in 0..max {
            prop_assert!(counter.reserve(later, 1));
        }
    }
}

/// Many threads on one key at one instant: exactly `max` allowed.
#[test]
fn threads_on_one_key_get_exactly_max() {
    for max in [1u64, 7, 100, 1000] {
        let counter = Arc::new(Counter::new(60_000, max));
        let allowed = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (counter, allowed) = (counter.clone(), allowed.clone());
                std::thread::spawn(move || {
                    for _ in 0..400 {
                        if counter.reserve(5_000 * MS, 1) {
                            allowed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(allowed.load(Ordering::SeqCst), max.min(8 * 400));
    }
}

/// Threads racing while the clock moves (bucket rotation under contention): the allowed
/// timestamps still never exceed `max` in any window.
#[test]
fn threads_with_a_moving_clock_never_exceed_the_limit() {
    let window_ms = 120;
    let max = 25;
    let counter = Arc::new(Counter::new(window_ms, max));
    let clock = Arc::new(AtomicU64::new(1_000 * MS));
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (counter, clock, log) = (counter.clone(), clock.clone(), log.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for step in 0..20_000u64 {
                    // One thread in six moves time forward, in small uneven steps.
                    let now = if i == 0 && step % 3 == 0 {
                        clock.fetch_add(37_000 + step % 11 * 1000, Ordering::SeqCst)
                    } else {
                        clock.load(Ordering::SeqCst)
                    };
                    if let Some(at) = counter.reserve_at(now, 1) {
                        mine.push((at, 1));
                    }
                }
                log.lock().unwrap().extend(mine);
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let mut log = Arc::try_unwrap(log).unwrap().into_inner().unwrap();
    log.sort_unstable();
    assert!(
        log.len() as u64 > max,
        "the clock moved across several windows"
    );
    // Times are effective decision times: a reading older than the counter's newest bucket
    // is judged as of that bucket (the caller decided after the counter moved on).
    assert_never_over(&log, window_ms * MS, max).unwrap();
}

/// Releases give counts back exactly once; the window then has room again.
#[test]
fn release_returns_counts() {
    let table = CounterTable::new(16, 16);
    let key = CounterKey::new(1, b"k", Granularity::for_window_ms(1000));
    let slot = table.find_or_insert(&key, 0, Peer::UNKNOWN).unwrap();
    let s = table.slot(slot);
    let r: Vec<_> = (0..3)
        .map(|i| {
            s.reserve(key.hash, key.granularity, i * 100 * MS, 1, 3)
                .unwrap()
        })
        .collect();
    assert!(matches!(
        s.reserve(key.hash, key.granularity, 300 * MS, 1, 3),
        Err(Refused::Full)
    ));
    assert!(s.release(key.hash, r[0].bucket, 1));
    assert!(s.reserve(key.hash, key.granularity, 300 * MS, 1, 3).is_ok());
}

/// A small table reuses slots of expired counters indefinitely, and a counter that moves to a
/// reused slot starts empty while live counters keep their counts.
#[test]
fn slots_are_reused_after_expiry() {
    let table = CounterTable::new(64, 16);
    let g = Granularity::for_window_ms(1000);
    for round in 0..50u64 {
        let now = round * 3_000 * MS;
        for k in 0..48u64 {
            let key = CounterKey::new(round, &k.to_le_bytes(), g);
            let slot = table
                .find_or_insert(&key, now, Peer::UNKNOWN)
                .expect("expired slots are reused");
            let s = table.slot(slot);
            assert_eq!(s.peek(key.hash, g, now).unwrap().used, 0);
            s.reserve(key.hash, g, now, 2, 5).unwrap();
            assert_eq!(s.peek(key.hash, g, now).unwrap().used, 2);
        }
    }
    assert_eq!(table.full_events(), 0);
    assert_eq!(table.occupied(), 64.min(table.occupied()));
}
