//! The cached mode: decisions on a local copy of the counts, merged with Redis every flush
//! interval by one script (no round trip per decision; docs/redis.md bounds the overshoot).

use super::link::Link;
use super::scripts::MERGE;
use super::{wall_us, RedisStore, TimeSource, DENY_REASON, SLACK_MS, TIMEOUTS_BEFORE_RECONNECT};
use arrayvec::ArrayVec;
use redis::Script;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::counter::marks::{Denying, Read, ReadBits};
use toolgate_core::counter::reservation::MAX_PARTS;
use toolgate_core::counter::Peer;
use toolgate_core::decision::Limits;
use toolgate_core::engine::limiter::{self, Outcome, Parts, Want};
use toolgate_core::observing::stats::{Stats, StoreError};

/// One counter key as a cached replica sees it.
pub(super) struct Cached {
    key: String,
    window_us: u64,
    g_us: u64,
    /// Everyone's counts as of the last merge: sub-buckets `newest - 12 ..= newest`.
    newest: u64,
    merged: [u64; 13],
    /// This replica's counts not yet merged: (sub-bucket, units).
    pending: Vec<(u64, u64)>,
    /// Being merged now (counted until the merge's answer replaces `merged`).
    merging: Vec<(u64, u64)>,
    last_us: u64,
}

impl Cached {
    fn new(key: String, window_us: u64, g_us: u64, now_us: u64) -> Cached {
        Cached {
            key,
            window_us,
            g_us,
            newest: now_us / g_us,
            merged: [0; 13],
            pending: Vec::new(),
            merging: Vec::new(),
            last_us: now_us,
        }
    }

    /// The 13 sub-buckets ending at the newest one (this replica's and everyone's merged),
    /// and that newest sub-bucket.
    fn window(&self, now_us: u64) -> (u64, [u64; 13]) {
        let mut newest = (now_us / self.g_us).max(self.newest);
        for (b, _) in self.pending.iter().chain(&self.merging) {
            newest = newest.max(*b);
        }
        let mut counts = [0u64; 13];
        let lo = newest.saturating_sub(12);
        for (i, c) in self.merged.iter().enumerate() {
            let b = self.newest.saturating_sub(12) + i as u64;
            if b >= lo && b <= newest {
                counts[(b - lo) as usize] += c;
            }
        }
        for (b, c) in self.pending.iter().chain(&self.merging) {
            if *b >= lo {
                counts[(b - lo) as usize] += c;
            }
        }
        (newest, counts)
    }
}

/// The cached mode's state: the keys, and when a merge last succeeded.
pub(super) struct Cache {
    entries: std::sync::Mutex<std::collections::HashMap<u64, Cached>>,
    flush: Duration,
    /// Wall-clock µs of the last merge that answered (0: none yet).
    merged_at_us: AtomicU64,
    /// With [`TimeSource::Engine`]: the latest engine time a decision saw, for merges.
    clock_us: AtomicU64,
}

impl Cache {
    pub(super) fn new(flush: Duration) -> Cache {
        Cache {
            entries: Default::default(),
            flush,
            merged_at_us: AtomicU64::new(0),
            clock_us: AtomicU64::new(0),
        }
    }
}

impl RedisStore {
    /// The cached mode's merges: every flush interval, one script sends this replica's new
    /// counts and reads everyone's back, for every key used within its window.
    pub(super) fn start_merging(&self) {
        let Some(cache) = self.cache.clone() else {
            return;
        };
        let link = Arc::clone(&self.link);
        let script = Arc::new(Script::new(MERGE));
        let budget = self.config.timeout.max(cache.flush);
        let time = self.config.time;
        self.runtime.spawn(async move {
            let mut tick = tokio::time::interval(cache.flush);
            let mut failures = 0;
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let connection = link
                    .connection
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let Some(mut connection) = connection else {
                    continue;
                };
                let now = match time {
                    TimeSource::Redis => wall_us(),
                    TimeSource::Engine => cache.clock_us.load(Relaxed),
                };
                let mut invocation = script.prepare_invoke();
                let mut hashes = Vec::new();
                invocation.arg(now).arg(SLACK_MS);
                {
                    let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
                    entries.retain(|_, e| now <= e.last_us + e.window_us + 2 * e.g_us);
                    for (hash, e) in entries.iter_mut() {
                        e.merging.append(&mut e.pending);
                        invocation.key(&e.key);
                        invocation.arg(e.window_us).arg(e.g_us).arg(e.merging.len());
                        for (b, c) in &e.merging {
                            invocation.arg(*b).arg(*c);
                        }
                        hashes.push(*hash);
                    }
                }
                if hashes.is_empty() {
                    cache.merged_at_us.store(wall_us(), Relaxed);
                    continue;
                }
                let answer = tokio::time::timeout(
                    budget,
                    invocation.invoke_async::<Vec<u64>>(&mut connection),
                )
                .await;
                let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
                match answer {
                    Ok(Ok(values)) if values.len() == 14 * hashes.len() => {
                        failures = 0;
                        for (i, hash) in hashes.iter().enumerate() {
                            if let Some(e) = entries.get_mut(hash) {
                                e.newest = values[14 * i];
                                e.merged.copy_from_slice(&values[14 * i + 1..14 * i + 14]);
                                e.merging.clear();
                            }
                        }
                        cache.merged_at_us.store(wall_us(), Relaxed);
                    }
                    // Not merged (or not known to be): the counts stay this replica's and
                    // are sent again with the next merge. One that did land is then
                    // counted twice: the error is towards denying.
                    _ => {
                        for e in entries.values_mut() {
                            let mut merging = std::mem::take(&mut e.merging);
                            e.pending.append(&mut merging);
                        }
                        failures += 1;
                    }
                }
                drop(entries);
                if failures >= TIMEOUTS_BEFORE_RECONNECT {
                    // A dead connection, or a primary demoted by a failover: find it anew.
                    failures = 0;
                    Link::drop_connection(&link, &tokio::runtime::Handle::current());
                }
            }
        });
    }

    /// The cached mode's decision: on the local copy, no round trip.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reserve_cached(
        &self,
        cache: &Cache,
        stats: &Stats,
        wants: &[Want<'_>],
        peer: Peer,
        reads: &[Read],
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
    ) -> (Outcome, ReadBits) {
        let now = match self.config.time {
            TimeSource::Redis => wall_us(),
            TimeSource::Engine => {
                cache.clock_us.fetch_max(now_ns / 1000, Relaxed);
                now_ns / 1000
            }
        };
        let merged_at = cache.merged_at_us.load(Relaxed);
        let stale = Duration::from_secs(1).max(cache.flush * 100).as_micros() as u64;
        if merged_at == 0 || wall_us().saturating_sub(merged_at) > stale {
            // Nothing merged for a long while: Redis is away, and this copy is stale.
            stats.count_store_error(StoreError::Connection);
            let reason = DENY_REASON;
            return self.unavailable(
                stats, wants, peer, reads, now_ns, consume, parts, limits, reason,
            );
        }
        let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut bits = self.read_copy(&mut entries, reads, now);
        if bits.unknown != 0 {
            // Counters this copy does not show set (a mark, whose a task or session is):
            // asked of Redis, in one round trip, without the copy's lock held meanwhile.
            drop(entries);
            bits = self.read_through(stats, reads, bits, now_ns);
            entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        }
        let outcome = self.reserve_copy(&mut entries, wants, now, consume, limits);
        (outcome, bits)
    }

    /// `bits` with its unknown reads asked of Redis; those it cannot answer stay unknown.
    fn read_through(&self, stats: &Stats, reads: &[Read], bits: ReadBits, now_ns: u64) -> ReadBits {
        let asked: Vec<(usize, Read)> = (0..reads.len())
            .filter(|i| bits.unknown & (1 << i) != 0)
            .map(|i| (i, reads[i]))
            .collect();
        let only: Vec<Read> = asked.iter().map(|(_, r)| *r).collect();
        let (parts, limits) = (&mut Parts::new(), &mut Limits::new());
        let (outcome, found) = self.reserve_exact(
            stats,
            &[],
            Peer::UNKNOWN,
            &only,
            Denying::default(),
            now_ns,
            false,
            parts,
            limits,
        );
        if matches!(outcome, Outcome::Unavailable { .. }) {
            return bits;
        }
        let mut out = ReadBits {
            set: bits.set,
            unknown: 0,
        };
        for (j, (i, _)) in asked.iter().enumerate() {
            out.set |= ((found.set >> j) & 1) << i;
        }
        out
    }

    /// What the local copy says of each counter read: set, or not known (to be asked of
    /// Redis). Each is merged from then on.
    fn read_copy(&self, entries: &mut HashMap<u64, Cached>, reads: &[Read], now: u64) -> ReadBits {
        let mut bits = ReadBits::default();
        for (i, read) in reads.iter().enumerate() {
            let window_us = read.window_ms.max(1).saturating_mul(1000);
            let g = window_us.div_ceil(12);
            let e = entries
                .entry(read.key.hash)
                .or_insert_with(|| Cached::new(self.key_of(read.key.hash), window_us, g, now));
            e.last_us = e.last_us.max(now);
            // Set here, it is set (what is read only ever grows, and is dropped by time
            // alike everywhere). Unset here, another replica may have set it since the last
            // merge: asked of Redis, where what sets it is counted at once (`write_through`).
            if e.window(now).1.iter().any(|c| *c > 0) {
                bits.set |= 1 << i;
            } else {
                bits.unknown |= 1 << i;
            }
        }
        bits
    }

    /// Reserve `wants` in the local copy.
    fn reserve_copy(
        &self,
        entries: &mut HashMap<u64, Cached>,
        wants: &[Want<'_>],
        now: u64,
        consume: bool,
        limits: &mut Limits,
    ) -> Outcome {
        // Per limit: its sub-bucket now, units in its window, when it empties, and (if it
        // has no room) how long until it would have (None: never).
        let mut seen: ArrayVec<(u64, u64, u64, Option<Option<u64>>), MAX_PARTS> = ArrayVec::new();
        for w in wants {
            let window_us = w.limit.info.window_ms.max(1).saturating_mul(1000);
            let g = window_us.div_ceil(12);
            let e = entries
                .entry(w.key.hash)
                .or_insert_with(|| Cached::new(self.key_of(w.key.hash), window_us, g, now));
            e.last_us = e.last_us.max(now);
            let (b, counts) = e.window(now);
            let used: u64 = counts.iter().sum();
            let lo = b.saturating_sub(12);
            let leaves = |k: usize| ((lo + k as u64 + 13) * g).saturating_sub(now) * 1000;
            let reset = counts.iter().rposition(|c| *c > 0).map_or(0, leaves);
            let wait = (used + w.amount > w.limit.max_units).then(|| {
                let need = used + w.amount - w.limit.max_units;
                let mut freed = 0;
                (w.amount <= w.limit.max_units)
                    .then(|| {
                        counts.iter().enumerate().find_map(|(k, c)| {
                            freed += c;
                            (freed >= need && *c > 0).then(|| leaves(k).max(1))
                        })
                    })
                    .flatten()
            });
            if seen.try_push((b, used, reset, wait)).is_err() {
                return Outcome::Unavailable {
                    failing: 0,
                    reason: DENY_REASON,
                };
            }
        }
        if let Some(failing) = seen.iter().position(|s| s.3.is_some()) {
            let mut retry: Option<u64> = Some(0);
            for (_, _, _, wait) in &seen {
                retry = match (retry, wait) {
                    (r, None) => r,
                    (Some(a), Some(Some(b))) => Some(a.max(*b)),
                    _ => None,
                };
            }
            return Outcome::Denied {
                retry_after_ms: retry.map(|ns| ns.div_ceil(1_000_000).max(1)),
                limits: wants
                    .iter()
                    .zip(&seen)
                    .map(|(w, (_, used, reset, _))| limiter::state_of(w, *used, *reset))
                    .collect(),
                failing,
            };
        }
        for (w, (b, used, reset, _)) in wants.iter().zip(&seen) {
            if !consume {
                limits.push(limiter::state_of(w, used + w.amount, *reset));
                continue;
            }
            let g = w
                .limit
                .info
                .window_ms
                .max(1)
                .saturating_mul(1000)
                .div_ceil(12);
            limits.push(limiter::state_of(
                w,
                used + w.amount,
                ((b + 13) * g).saturating_sub(now) * 1000,
            ));
            if let Some(e) = entries.get_mut(&w.key.hash) {
                match e.pending.iter_mut().find(|(bucket, _)| bucket == b) {
                    Some((_, c)) => *c += w.amount,
                    None => e.pending.push((*b, w.amount)),
                }
            }
        }
        Outcome::Reserved
    }
}
