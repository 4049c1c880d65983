//! Decision counts and latencies kept in atomics, so the hot path never touches a metrics
//! library; a Prometheus collector reads them at scrape time.

use crate::decision::{Code, Decision, Verdict};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

const VERDICTS: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::RequireApproval];

/// Upper bounds of the latency histogram's buckets, in nanoseconds (1 µs to 10 ms).
pub const DURATION_BUCKETS_NS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

#[derive(Default)]
pub struct Stats {
    decisions: [[AtomicU64; Code::ALL.len()]; VERDICTS.len()],
    shadow: AtomicU64,
    table_full: AtomicU64,
    /// Per bucket (not cumulative); the last counts everything above the largest bound.
    duration_buckets: [AtomicU64; DURATION_BUCKETS_NS.len() + 1],
    duration_sum_ns: AtomicU64,
    per_tool_enabled: AtomicBool,
    per_tool: Mutex<ahash::AHashMap<Box<str>, [u64; VERDICTS.len()]>>,
}

/// Distinct tool names tracked per tool; the rest are counted under [`OTHER_TOOLS`], since
/// tool names come from agents and must not grow the metrics without bound.
pub const MAX_TRACKED_TOOLS: usize = 1000;
pub const OTHER_TOOLS: &str = "_other";

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationSnapshot {
    /// Cumulative counts per bound of [`DURATION_BUCKETS_NS`].
    pub cumulative: Vec<(u64, u64)>,
    pub count: u64,
    pub sum_ns: u64,
}

fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
        Verdict::RequireApproval => 2,
    }
}

impl Stats {
    #[inline]
    pub fn count(&self, d: &Decision) {
        self.decisions[verdict_index(d.verdict)][d.code.index()].fetch_add(1, Relaxed);
        if d.shadow {
            self.shadow.fetch_add(1, Relaxed);
        }
    }

    /// Count decisions per tool too (opt-in: it takes a lock per decision).
    pub fn set_per_tool(&self, enabled: bool) {
        self.per_tool_enabled.store(enabled, Relaxed);
    }

    #[inline]
    pub fn per_tool_enabled(&self) -> bool {
        self.per_tool_enabled.load(Relaxed)
    }

    pub fn count_tool(&self, tool: &str, verdict: Verdict) {
        let mut map = self.per_tool.lock().unwrap_or_else(|e| e.into_inner());
        let key = if map.contains_key(tool) || map.len() < MAX_TRACKED_TOOLS {
            tool
        } else {
            OTHER_TOOLS
        };
        if let Some(counts) = map.get_mut(key) {
            counts[verdict_index(verdict)] += 1;
        } else {
            let mut counts = [0; VERDICTS.len()];
            counts[verdict_index(verdict)] = 1;
            map.insert(key.into(), counts);
        }
    }

    /// Decisions per (tool, verdict), when enabled.
    pub fn per_tool(&self) -> Vec<(String, Verdict, u64)> {
        let map = self.per_tool.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .flat_map(|(tool, counts)| {
                VERDICTS
                    .iter()
                    .zip(counts)
                    .filter(|(_, n)| **n > 0)
                    .map(|(v, n)| (tool.to_string(), *v, *n))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn count_table_full(&self) {
        self.table_full.fetch_add(1, Relaxed);
    }

    /// Record how long serving one decision took.
    #[inline]
    pub fn record_duration(&self, ns: u64) {
        let bucket = DURATION_BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(DURATION_BUCKETS_NS.len());
        self.duration_buckets[bucket].fetch_add(1, Relaxed);
        self.duration_sum_ns.fetch_add(ns, Relaxed);
    }

    /// Decisions so far per (verdict, code), only the pairs that occurred.
    pub fn decisions(&self) -> Vec<(Verdict, Code, u64)> {
        let mut out = Vec::new();
        for v in VERDICTS {
            for c in Code::ALL {
                let n = self.decisions[verdict_index(v)][c.index()].load(Relaxed);
                if n > 0 {
                    out.push((v, c, n));
                }
            }
        }
        out
    }

    /// Decisions so far per code, whatever the verdict.
    pub fn by_code(&self) -> [(Code, u64); Code::ALL.len()] {
        Code::ALL.map(|c| {
            (
                c,
                VERDICTS
                    .iter()
                    .map(|v| self.decisions[verdict_index(*v)][c.index()].load(Relaxed))
                    .sum(),
            )
        })
    }

    pub fn shadow(&self) -> u64 {
        self.shadow.load(Relaxed)
    }

    /// Denials because the counter table had no free slot.
    pub fn table_full(&self) -> u64 {
        self.table_full.load(Relaxed)
    }

    pub fn durations(&self) -> DurationSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(DURATION_BUCKETS_NS.len());
        for (i, bound) in DURATION_BUCKETS_NS.iter().enumerate() {
            running += self.duration_buckets[i].load(Relaxed);
            cumulative.push((*bound, running));
        }
        let count = running + self.duration_buckets[DURATION_BUCKETS_NS.len()].load(Relaxed);
        DurationSnapshot {
            cumulative,
            count,
            sum_ns: self.duration_sum_ns.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_overflow() {
        let s = Stats::default();
        for ns in [500, 1_000, 3_000, 20_000_000] {
            s.record_duration(ns);
        }
        let d = s.durations();
        assert_eq!(d.count, 4);
        assert_eq!(d.sum_ns, 20_004_500);
        assert_eq!(d.cumulative[0], (1_000, 2));
        assert_eq!(d.cumulative[2], (5_000, 3));
        assert_eq!(d.cumulative.last().unwrap().1, 3);
    }
}
