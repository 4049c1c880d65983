//! Decision counts and latencies kept in atomics, so the hot path never touches a metrics
//! library; a Prometheus collector reads them at scrape time.

use crate::decision::{Code, Decision, Verdict};
use crate::definitions::definition::DriftKind;
use crate::kind::is_mcp_tool_name;
use crate::mcp::outcome::Failure;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::trace_ids::{self, TraceIds};

const VERDICTS: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::RequireApproval];

/// Upper bounds of the latency histogram's buckets, in nanoseconds (1 µs to 10 ms).
pub const DURATION_BUCKETS_NS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// The API a decision or an error was served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Asked of the engine directly (the Python library, the CLI without a sidecar).
    Engine,
    Decider,
    ExtAuthz,
    RateLimit,
    ExtProc,
    /// agentgateway's ExtMCP (`agentgateway.dev.ext_mcp.ExtMcp`).
    ExtMcp,
    /// toolgate's module in Envoy's own process.
    EnvoyModule,
    /// The OpenID AuthZEN Authorization API (`--authzen-listen`).
    AuthZen,
}

impl Api {
    pub const ALL: [Api; 8] = [
        Api::Engine,
        Api::Decider,
        Api::ExtAuthz,
        Api::RateLimit,
        Api::ExtProc,
        Api::ExtMcp,
        Api::EnvoyModule,
        Api::AuthZen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Api::Engine => "engine",
            Api::Decider => "decider",
            Api::ExtAuthz => "ext_authz",
            Api::RateLimit => "ratelimit",
            Api::ExtProc => "ext_proc",
            Api::ExtMcp => "extmcp",
            Api::EnvoyModule => "envoy_module",
            Api::AuthZen => "authzen",
        }
    }
}

/// gRPC status codes, by number (`OK` is 0 and never counted as an error).
pub const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The counters of one [`Stats`] block, as word offsets: decisions per (API, verdict, code),
/// shadow decisions, table-full denials, the latency histogram per bucket, and its sum.
mod cell {
    use super::{Api, Code, DURATION_BUCKETS_NS, VERDICTS};
    pub const SHADOW: usize = Api::ALL.len() * VERDICTS.len() * Code::ALL.len();
    pub const TABLE_FULL: usize = SHADOW + 1;
    /// Calls that ran on their user's confirmation.
    pub const CONFIRMED: usize = TABLE_FULL + 1;
    /// Per bucket (not cumulative); the last counts everything above the largest bound.
    pub const BUCKETS: usize = CONFIRMED + 1;
    pub const DURATION_SUM_NS: usize = BUCKETS + DURATION_BUCKETS_NS.len() + 1;
    /// Decisions handed to the decision log, and those it dropped (its queue full).
    pub const LOGGED: usize = DURATION_SUM_NS + 1;
    pub const LOG_DROPPED: usize = LOGGED + 1;
    /// The counter store's round trips (a histogram over [`DURATION_BUCKETS_NS`] and its
    /// sum), its failures by [`StoreError`](super::StoreError) kind, and the decisions it
    /// left to this process's own table (`--store-unavailable local`).
    pub const STORE_BUCKETS: usize = LOG_DROPPED + 1;
    pub const STORE_SUM_NS: usize = STORE_BUCKETS + DURATION_BUCKETS_NS.len() + 1;
    pub const STORE_ERRORS: usize = STORE_SUM_NS + 1;
    pub const STORE_FALLBACKS: usize = STORE_ERRORS + super::StoreError::ALL.len();
    /// Answers followed on their way back (Envoy's ext_proc): tool lists filtered, refused
    /// (unreadable), and the tools taken out of them; reservations given back because the
    /// call failed, by [`Failure`](crate::mcp::outcome::Failure) kind.
    pub const LISTS_FILTERED: usize = STORE_FALLBACKS + 1;
    pub const LISTS_REFUSED: usize = LISTS_FILTERED + 1;
    pub const TOOLS_UNLISTED: usize = LISTS_REFUSED + 1;
    pub const RELEASED_ON_FAILURE: usize = TOOLS_UNLISTED + 1;
    /// Calls answered with a gRPC error, per (API, status code).
    pub const ERRORS: usize = RELEASED_ON_FAILURE + super::FAILURES.len();
    pub const USED: usize = ERRORS + Api::ALL.len() * super::GRPC_STATUS.len();
}

/// The kinds of failed calls whose reservations are given back, in counting order.
pub const FAILURES: [&str; 3] = ["http_status", "jsonrpc_error", "tool_error"];

/// Why the counter store failed a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within the decision's budget (the script may still have counted).
    Timeout,
    /// No connection (refused, reset, not yet re-established).
    Connection,
    /// An answer that is an error or cannot be read.
    Reply,
}

impl StoreError {
    pub const ALL: [StoreError; 3] = [
        StoreError::Timeout,
        StoreError::Connection,
        StoreError::Reply,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Connection => "connection",
            StoreError::Reply => "reply",
        }
    }
}

/// Drifts per (server, tool), by [`DriftKind`].
type DriftCounts = ahash::AHashMap<(Box<str>, Box<str>), [u64; DriftKind::ALL.len()]>;

/// Decision statistics: one atomic cell per figure.
pub struct Stats {
    cells: Box<[AtomicU64]>,
    /// The last sampled decision of each latency bucket (and of the one past the last bound).
    exemplars: [Mutex<Option<Exemplar>>; DURATION_BUCKETS_NS.len() + 1],
    per_tool_enabled: AtomicBool,
    per_tool: Mutex<ahash::AHashMap<Box<str>, [u64; VERDICTS.len()]>>,
    /// Drifts from pins, per (server, tool): rare, so a lock is cheap.
    drift: Mutex<DriftCounts>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            cells: (0..cell::USED).map(|_| AtomicU64::new(0)).collect(),
            exemplars: Default::default(),
            per_tool_enabled: AtomicBool::new(false),
            per_tool: Mutex::new(Default::default()),
            drift: Mutex::new(Default::default()),
        }
    }
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
    /// Per bucket (each bound, then past the last), the last sampled decision in it.
    pub exemplars: Vec<Option<Exemplar>>,
}

/// One decision a latency bucket names, that a trace holds: OpenMetrics' exemplar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exemplar {
    pub ids: TraceIds,
    pub ns: u64,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

fn decision_cell(api: Api, v: Verdict, c: Code) -> usize {
    (api as usize * VERDICTS.len() + verdict_index(v)) * Code::ALL.len() + c.index()
}

fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
        Verdict::RequireApproval => 2,
    }
}

impl Stats {
    fn sum(&self, index: usize) -> u64 {
        self.cells[index].load(Relaxed)
    }

    #[inline]
    fn add(&self, index: usize, n: u64) {
        self.cells[index].fetch_add(n, Relaxed);
    }

    #[inline]
    pub fn count(&self, api: Api, d: &Decision) {
        self.add(decision_cell(api, d.verdict, d.code), 1);
        if d.shadow {
            self.add(cell::SHADOW, 1);
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

    /// A tool of `server` (`""`: none named) listed other than pinned. Tool names come from
    /// servers: past [`MAX_TRACKED_TOOLS`] pairs, and for names MCP does not allow, the
    /// tool is counted as [`OTHER_TOOLS`], and past that a new server too: the rows stay
    /// at most [`MAX_TRACKED_TOOLS`] + 1.
    pub fn count_drift(&self, server: &str, tool: &str, kind: DriftKind) {
        let mut map = self.drift.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (Box::<str>::from(server), Box::<str>::from(tool));
        if !is_mcp_tool_name(tool) || (!map.contains_key(&key) && map.len() >= MAX_TRACKED_TOOLS) {
            key.1 = OTHER_TOOLS.into();
            // Server ids may come from a client's header: once full, new ones share a row.
            if !map.contains_key(&key) && map.len() >= MAX_TRACKED_TOOLS {
                key.0 = OTHER_TOOLS.into();
            }
        }
        map.entry(key).or_default()[kind as usize] += 1;
    }

    /// Drifts per (server, tool, kind).
    pub fn drift(&self) -> Vec<(String, String, DriftKind, u64)> {
        let map = self.drift.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .flat_map(|((server, tool), counts)| {
                DriftKind::ALL
                    .iter()
                    .zip(counts)
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| (server.to_string(), tool.to_string(), *k, *n))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    pub fn count_table_full(&self) {
        self.add(cell::TABLE_FULL, 1);
    }

    pub fn count_confirmed(&self) {
        self.add(cell::CONFIRMED, 1);
    }

    /// A decision handed to the decision log (`queued`), or dropped (its queue full).
    pub fn count_logged(&self, queued: bool) {
        self.add(
            if queued {
                cell::LOGGED
            } else {
                cell::LOG_DROPPED
            },
            1,
        );
    }

    pub fn logged(&self) -> u64 {
        self.sum(cell::LOGGED)
    }

    pub fn log_dropped(&self) -> u64 {
        self.sum(cell::LOG_DROPPED)
    }

    /// Record one round trip to the counter store.
    pub fn record_store_rtt(&self, ns: u64) {
        let bucket = DURATION_BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(DURATION_BUCKETS_NS.len());
        self.add(cell::STORE_BUCKETS + bucket, 1);
        self.add(cell::STORE_SUM_NS, ns);
    }

    pub fn count_store_error(&self, kind: StoreError) {
        self.add(cell::STORE_ERRORS + kind as usize, 1);
    }

    pub fn count_store_fallback(&self) {
        self.add(cell::STORE_FALLBACKS, 1);
    }

    /// Counter-store failures so far, by kind.
    pub fn store_errors(&self) -> [(StoreError, u64); StoreError::ALL.len()] {
        StoreError::ALL.map(|k| (k, self.sum(cell::STORE_ERRORS + k as usize)))
    }

    /// Decisions counted in this process's table because the store was unavailable.
    pub fn store_fallbacks(&self) -> u64 {
        self.sum(cell::STORE_FALLBACKS)
    }

    /// The counter store's round trips.
    pub fn store_round_trips(&self) -> DurationSnapshot {
        self.histogram(cell::STORE_BUCKETS, cell::STORE_SUM_NS)
    }

    /// A tool list answer was filtered (`removed` tools taken out), or refused.
    pub fn count_list(&self, removed: usize, refused: bool) {
        self.add(
            if refused {
                cell::LISTS_REFUSED
            } else {
                cell::LISTS_FILTERED
            },
            1,
        );
        self.count_list_removed(removed);
    }

    /// Tools taken out of lists.
    pub fn count_list_removed(&self, removed: usize) {
        if removed > 0 {
            self.add(cell::TOOLS_UNLISTED, removed as u64);
        }
    }

    /// A reservation was given back because its call failed upstream.
    pub fn count_released(&self, failure: Failure) {
        let kind = FAILURES.iter().position(|k| *k == failure.as_str());
        self.add(cell::RELEASED_ON_FAILURE + kind.unwrap_or(0), 1);
    }

    /// Tool lists filtered, refused, and the tools taken out of them.
    pub fn lists(&self) -> (u64, u64, u64) {
        (
            self.sum(cell::LISTS_FILTERED),
            self.sum(cell::LISTS_REFUSED),
            self.sum(cell::TOOLS_UNLISTED),
        )
    }

    /// Reservations given back after failed calls, by kind.
    pub fn released_on_failure(&self) -> [(&'static str, u64); FAILURES.len()] {
        std::array::from_fn(|i| (FAILURES[i], self.sum(cell::RELEASED_ON_FAILURE + i)))
    }

    /// Record how long serving one decision took; a decision whose span was sampled
    /// ([`trace_ids::sampled`]) becomes its bucket's exemplar.
    #[inline]
    pub fn record_duration(&self, ns: u64) {
        let bucket = DURATION_BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(DURATION_BUCKETS_NS.len());
        self.add(cell::BUCKETS + bucket, 1);
        self.add(cell::DURATION_SUM_NS, ns);
        if let Some(ids) = trace_ids::take_sampled() {
            self.note_exemplar(bucket, ids, ns);
        }
    }

    #[cold]
    fn note_exemplar(&self, bucket: usize, ids: TraceIds, ns: u64) {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Another thread writing this bucket's: its exemplar is as good as this one.
        if let Ok(mut slot) = self.exemplars[bucket].try_lock() {
            *slot = Some(Exemplar { ids, ns, unix_ms });
        }
    }

    /// Decisions so far per (API, verdict, code), only those that occurred.
    pub fn decisions(&self) -> Vec<(Api, Verdict, Code, u64)> {
        let mut out = Vec::new();
        for api in Api::ALL {
            for v in VERDICTS {
                for c in Code::ALL {
                    let n = self.sum(decision_cell(api, v, c));
                    if n > 0 {
                        out.push((api, v, c, n));
                    }
                }
            }
        }
        out
    }

    /// Decisions so far per code, whatever the API and verdict.
    pub fn by_code(&self) -> [(Code, u64); Code::ALL.len()] {
        Code::ALL.map(|c| {
            let cells = Api::ALL
                .iter()
                .flat_map(|a| VERDICTS.iter().map(move |v| decision_cell(*a, *v, c)));
            (c, cells.map(|cell| self.sum(cell)).sum())
        })
    }

    /// A call of `api` answered with gRPC status `code` (not OK).
    pub fn count_error(&self, api: Api, code: usize) {
        if (1..GRPC_STATUS.len()).contains(&code) {
            self.add(cell::ERRORS + api as usize * GRPC_STATUS.len() + code, 1);
        }
    }

    /// Calls answered with a gRPC error so far, per (API, status), only those that occurred.
    pub fn errors(&self) -> Vec<(Api, &'static str, u64)> {
        let mut out = Vec::new();
        for api in Api::ALL {
            for (code, name) in GRPC_STATUS.iter().enumerate().skip(1) {
                let n = self.sum(cell::ERRORS + api as usize * GRPC_STATUS.len() + code);
                if n > 0 {
                    out.push((api, *name, n));
                }
            }
        }
        out
    }

    pub fn shadow(&self) -> u64 {
        self.sum(cell::SHADOW)
    }

    /// Denials because the counter table had no free slot.
    pub fn table_full(&self) -> u64 {
        self.sum(cell::TABLE_FULL)
    }

    /// Calls that ran on their user's confirmation (an ALLOWED decision each).
    pub fn confirmed(&self) -> u64 {
        self.sum(cell::CONFIRMED)
    }

    pub fn durations(&self) -> DurationSnapshot {
        let mut snapshot = self.histogram(cell::BUCKETS, cell::DURATION_SUM_NS);
        snapshot.exemplars = (self.exemplars.iter())
            .map(|slot| *slot.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        snapshot
    }

    fn histogram(&self, buckets: usize, sum: usize) -> DurationSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(DURATION_BUCKETS_NS.len());
        for (i, bound) in DURATION_BUCKETS_NS.iter().enumerate() {
            running += self.sum(buckets + i);
            cumulative.push((*bound, running));
        }
        let count = running + self.sum(buckets + DURATION_BUCKETS_NS.len());
        DurationSnapshot {
            cumulative,
            count,
            sum_ns: self.sum(sum),
            exemplars: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sampled_decision_is_its_latency_buckets_exemplar_once() {
        let stats = Stats::default();
        let ids = TraceIds {
            trace_id: [3; 16],
            span_id: [4; 8],
            sampled: true,
        };
        stats.record_duration(3_000);
        assert!(stats.durations().exemplars.iter().all(Option::is_none));
        trace_ids::sampled(ids);
        stats.record_duration(3_000);
        // The next decision, not sampled, names nothing.
        stats.record_duration(700);
        let exemplars = stats.durations().exemplars;
        assert_eq!(exemplars.len(), DURATION_BUCKETS_NS.len() + 1);
        let named: Vec<_> = exemplars
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i, (*e)?)))
            .collect();
        assert_eq!(named.len(), 1);
        let (bucket, exemplar) = named[0];
        assert_eq!(DURATION_BUCKETS_NS[bucket], 5_000);
        assert_eq!((exemplar.ids, exemplar.ns), (ids, 3_000));
        assert!(exemplar.unix_ms > 0);
    }

    #[test]
    fn drift_rows_stay_bounded_whatever_servers_and_tools_are_named() {
        let s = Stats::default();
        for i in 0..3 * MAX_TRACKED_TOOLS {
            s.count_drift(
                &format!("server-{i}"),
                &format!("tool_{i}"),
                DriftKind::Changed,
            );
        }
        let rows = s.drift();
        assert_eq!(rows.len(), MAX_TRACKED_TOOLS + 1);
        let total: u64 = rows.iter().map(|r| r.3).sum();
        assert_eq!(total, 3 * MAX_TRACKED_TOOLS as u64, "nothing uncounted");
        assert!(rows.contains(&(
            OTHER_TOOLS.into(),
            OTHER_TOOLS.into(),
            DriftKind::Changed,
            2 * MAX_TRACKED_TOOLS as u64
        )));
    }

    #[test]
    fn errors_are_counted_by_api_and_status_and_ok_is_none() {
        let s = Stats::default();
        let api = Api::ExtAuthz;
        s.count_error(api, 3);
        s.count_error(api, 3);
        s.count_error(Api::Decider, 4);
        s.count_error(Api::Decider, 0);
        s.count_error(Api::Decider, 99);
        assert_eq!(
            s.errors(),
            vec![
                (Api::Decider, "DEADLINE_EXCEEDED", 1),
                (Api::ExtAuthz, "INVALID_ARGUMENT", 2)
            ]
        );
    }

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
