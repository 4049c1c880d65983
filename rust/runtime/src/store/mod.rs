//! Counters on Redis: one count shared by every replica (`toolgate serve --store redis://`).
//!
//! **Exact mode.** Every decision runs one Lua script ([`RESERVE`]) that reads the windows of
//! all of the call's limits and, only if every one has room, adds the call to each and
//! records the reservation: all or nothing, atomically, with the sliding windows of the local
//! table (12 sub-buckets of `ceil(W / 12)`, docs/counters.md). Time is Redis's own (`TIME`
//! inside the script: Redis 7 replicates a script's effects, not the script), so every
//! replica counts on one clock. A second script ([`RELEASE`]) gives a reservation back, once.
//!
//! **Failures.** Each call to Redis has a time budget. Past it (or with no connection) the
//! decision is `STORE_UNAVAILABLE`, or, with [`Unavailable::Local`], counted in this
//! process's own table instead. A script whose answer did not come in time may still have
//! run: it is taken as having counted (the call was denied, so the count only errs towards
//! denying). A Redis that restarts empty is noticed through an epoch key, and each limit
//! then refuses for one window (plus a sub-bucket) after the loss, since the counts it lost
//! are unknown.
//!
//! Decisions are synchronous (the engine is): the deciding thread runs the script on a
//! connection of its own. This store's runtime keeps the link: it finds the primary (one
//! address, or Sentinel's answer), loads the scripts, resolves the address the deciding
//! threads connect to, reconnects with backoff, and runs the cached mode's merges. While
//! round trips are slow the native server decides on one of a few blocking threads, so other
//! calls go on.

mod cached;
pub mod eviction;
mod link;
pub mod scripts;

use cached::Cache;
use link::{Link, Source};
use redis::Script;
use scripts::{RELEASE, RESERVE};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use toolgate_core::counter::marks::{Denying, Read, ReadBits};
use toolgate_core::counter::reservation::Part;
use toolgate_core::counter::{CounterTable, Peer};
use toolgate_core::decision::Limits;
use toolgate_core::engine::limiter::{self, Outcome, Parts, Want};
use toolgate_core::engine::store::{CounterStore, REMOTE_RESERVATION, REMOTE_SLOT};
use toolgate_core::observing::stats::{Stats, StoreError};
use toolgate_core::trace_ids;

/// What goes before every Redis key by default.
pub const DEFAULT_PREFIX: &str = "toolgate:";
/// How long a decision waits for Redis by default, in milliseconds: Envoy's own rate-limit
/// filter's default wait for its service, a fifth of the deployed ext_authz timeout (so the
/// proxy gets toolgate's reasoned denial, not its own timeout), and wide enough for a busy
/// machine's slow spells (5 ms denied calls in an hour at half of saturation).
pub const DEFAULT_TIMEOUT_MS: u64 = 20;
/// How often the cached mode merges its counts by default, in milliseconds.
pub const DEFAULT_FLUSH_MS: u64 = 5;

/// What to do when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Deny the call: `STORE_UNAVAILABLE`.
    Deny,
    /// Count the call in this process's own table (each replica then allows up to the
    /// limit on its own while Redis is away).
    Local,
}

impl Unavailable {
    /// Every choice by its name (`--store-unavailable`), as [`Unavailable::parse`] reads it.
    pub const NAMES: [&'static str; 2] = ["deny", "local"];

    pub fn parse(text: &str) -> Result<Unavailable, String> {
        match text {
            "deny" => Ok(Unavailable::Deny),
            "local" => Ok(Unavailable::Local),
            _ => Err(format!("expected deny or local, got {text:?}")),
        }
    }
}

/// Whose clock decides which sub-bucket a call counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// Redis's `TIME`, read inside the script: one clock for every replica.
    Redis,
    /// The engine's clock (its `now_ns`, in microseconds): for tests with a manual clock.
    Engine,
}

/// How decisions use Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One script per decision: never over the limit, one round trip per decision.
    Exact,
    /// Decide on a local copy of the counts; merge this replica's counts into Redis and
    /// read everyone's back every `flush`. No round trip per decision; the overshoot is
    /// bounded in docs/redis.md.
    Cached { flush: Duration },
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, `rediss://` for TLS (the server's certificate
    /// checked against the system's roots, or `SSL_CERT_FILE`), or `unix:` / `redis+unix:`.
    pub url: String,
    /// Put before every key, so deployments can share one Redis.
    pub prefix: String,
    /// How long a decision waits for Redis.
    pub timeout: Duration,
    pub unavailable: Unavailable,
    pub time: TimeSource,
    pub mode: Mode,
}

impl Mode {
    /// Every mode by its name (`--store-mode`), as [`RedisConfig::from_options`] reads it.
    pub const NAMES: [&'static str; 2] = ["exact", "cached"];
}

impl TimeSource {
    /// Every clock by its name, as [`RedisConfig::from_options`] reads it.
    pub const NAMES: [&'static str; 2] = ["redis", "engine"];
}

impl RedisConfig {
    /// A configuration from the sidecar's options (`--store`, `--store-prefix`,
    /// `--store-timeout-ms`, `--store-unavailable`, `--store-mode`, `--store-flush-ms`; `time`
    /// is `redis` or, for tests on a manual clock, `engine`), or what is wrong with them.
    pub fn from_options(
        url: &str,
        prefix: &str,
        timeout_ms: u64,
        unavailable: &str,
        mode: &str,
        flush_ms: u64,
        time: &str,
    ) -> Result<RedisConfig, String> {
        const SCHEMES: [&str; 5] = [
            "redis://",
            "rediss://",
            "redis+sentinel://",
            "redis+unix://",
            "unix://",
        ];
        if !SCHEMES.iter().any(|s| url.starts_with(s)) {
            return Err(format!(
                "--store is local, redis://HOST:PORT/DB, rediss://HOST:PORT/DB or \
                 redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE/DB, got {:?}",
                link::redact(url)
            ));
        }
        if timeout_ms == 0 {
            return Err("--store-timeout-ms must be at least 1".into());
        }
        let mode = match (mode, flush_ms) {
            ("exact", _) => Mode::Exact,
            ("cached", 1..) => Mode::Cached {
                flush: Duration::from_millis(flush_ms),
            },
            ("cached", 0) => return Err("--store-flush-ms must be at least 1".into()),
            _ => return Err(format!("--store-mode is exact or cached, got {mode:?}")),
        };
        let time = match time {
            "redis" => TimeSource::Redis,
            "engine" => TimeSource::Engine,
            _ => {
                return Err(format!(
                    "the store's clock is redis or engine, got {time:?}"
                ))
            }
        };
        Ok(RedisConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            timeout: Duration::from_millis(timeout_ms),
            unavailable: Unavailable::parse(unavailable)
                .map_err(|e| format!("--store-unavailable: {e}"))?,
            time,
            mode,
        })
    }
}

/// Keys outlive their window by this much (and one sub-bucket), so Redis forgets idle
/// counters on its own.
const SLACK_MS: u64 = 1000;

/// Consecutive failures (timeouts or connection errors) after which the connection is
/// taken as dead (a peer that went silent without closing it, or one that is gone) and a
/// new one is made.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

const DENY_REASON: &str = "the counter store (Redis) did not answer within its time budget, \
     so this call's limits cannot be counted and it is denied";
const EVICTABLE_REASON: &str = "the counter store's Redis may evict counter keys now (its \
     maxmemory-policy is not noeviction), and an evicted counter would allow its calls again: \
     until that is set back, this call's limits cannot be counted and it is denied";
const LOST_REASON: &str = "the counter store (Redis) lost its counts (it restarted empty); \
     until one window of this limit has passed since, its count is unknown and calls are denied";

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

thread_local! {
    /// This thread's own connection: (store id, its generation, connection).
    static PER_THREAD: std::cell::RefCell<Option<(u64, u64, redis::Connection)>> =
        const { std::cell::RefCell::new(None) };
}

/// Tells stores apart in [`PER_THREAD`] (tests run several in one process).
static STORE_IDS: AtomicU64 = AtomicU64::new(1);

/// A round trip longer than this marks the store [`CounterStore::slow`] until one is not.
const SLOW_ROUND_TRIP: Duration = Duration::from_micros(500);

/// The Redis counter store.
pub struct RedisStore {
    config: RedisConfig,
    id: u64,
    runtime: tokio::runtime::Runtime,
    link: Arc<Link>,
    /// The epoch (Redis's time when its counts began) this replica last saw; 0: none yet.
    known_epoch: AtomicU64,
    /// Counts here when Redis is unavailable and the choice is [`Unavailable::Local`].
    table: Arc<CounterTable>,
    /// The cached mode's local copy of the counts.
    cache: Option<Arc<Cache>>,
    /// Redis may evict counter keys now ([`RedisStore::set_evictable`]).
    evictable: AtomicBool,
}

impl RedisStore {
    /// A store for `config`, connecting in the background; waits up to `wait` for the first
    /// connection (a store that is not connected yet answers as Redis being unavailable).
    pub fn connect(
        config: RedisConfig,
        table: Arc<CounterTable>,
        wait: Duration,
    ) -> Result<RedisStore, String> {
        let source = Source::parse(&config.url)?;
        let budget = config.timeout;
        if config.timeout.is_zero() {
            return Err("the store's time budget must be positive".into());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("toolgate-redis")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Redis runtime: {e}"))?;
        let config_mode = config.mode;
        if let Mode::Cached { flush } = config_mode {
            if flush.is_zero() {
                return Err("the cached mode's flush interval must be positive".into());
            }
        }
        let store = RedisStore {
            config,
            id: STORE_IDS.fetch_add(1, Relaxed),

            runtime,
            link: Arc::new(Link {
                source,
                reserve: Arc::new(Script::new(RESERVE)),
                release: Arc::new(Script::new(RELEASE)),
                budget,
                generation: AtomicU64::new(0),
                direct: RwLock::new(None),
                slow: AtomicBool::new(false),
                connection: RwLock::new(None),
                reconnecting: AtomicBool::new(false),
                timeouts: AtomicU32::new(0),
            }),
            known_epoch: AtomicU64::new(0),
            table,
            cache: match config_mode {
                Mode::Exact => None,
                Mode::Cached { flush } => Some(Arc::new(Cache::new(flush))),
            },
            evictable: AtomicBool::new(false),
        };
        store.reconnect();
        store.start_merging();
        let until = Instant::now() + wait;
        while !store.connected() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(store)
    }

    /// Whether Redis may evict counter keys, as last read of its `maxmemory-policy`
    /// ([`eviction`]): while it may (and that was not accepted), limits follow the outage
    /// behaviour ([`Unavailable`]), as a counter evicted would allow its calls again.
    pub fn set_evictable(&self, evictable: bool) {
        self.evictable.store(evictable, Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.link
            .connection
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Make a new connection in the background; see [`Link::reconnect`].
    fn reconnect(&self) {
        Link::reconnect(&self.link, self.runtime.handle());
    }

    /// Run one script with the time budget, from any thread.
    fn run(
        &self,
        stats: &Stats,
        script: &Arc<Script>,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Vec<i64>, StoreError> {
        if !self.connected() {
            self.reconnect();
            stats.count_store_error(StoreError::Connection);
            return Err(StoreError::Connection);
        };
        let budget = self.config.timeout;
        let started = Instant::now();
        // The deciding thread asks Redis itself, on a connection of its own: a hand-off to
        // another thread and back costs more than the round trip on a small machine.
        let answer = PER_THREAD.with(|slot| {
            let mut slot = slot.borrow_mut();
            let mine = (self.id, self.link.generation.load(Relaxed));
            let (mut held, fresh) = match slot.take() {
                Some((id, generation, c)) if (id, generation) == mine => (c, false),
                _ => {
                    let direct = self.link.direct.read().unwrap_or_else(|e| e.into_inner());
                    let Some(client) = direct.as_ref() else {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::IoError,
                            "not connected yet",
                        )));
                    };
                    let c = client.get_connection_with_timeout(budget)?;
                    // This call has what the connecting left of its budget; later ones all.
                    let left = budget.saturating_sub(started.elapsed());
                    c.set_read_timeout(Some(left.max(Duration::from_micros(100))))?;
                    c.set_write_timeout(Some(budget))?;
                    (c, true)
                }
            };
            let mut invocation = script.prepare_invoke();
            for k in &keys {
                invocation.key(k);
            }
            for a in &args {
                invocation.arg(a);
            }
            let values = invocation.invoke::<Vec<i64>>(&mut held)?;
            if fresh {
                held.set_read_timeout(Some(budget))?;
            }
            // Kept only after a whole answer: one read past its budget would leave a late
            // reply on the connection for the next call to take as its own.
            *slot = Some((mine.0, mine.1, held));
            Ok::<_, redis::RedisError>(values)
        });
        if trace_ids::tracing() {
            let took = started.elapsed();
            trace_ids::waited(trace_ids::Wait {
                operation: "EVALSHA",
                system: "redis",
                started: std::time::SystemTime::now() - took,
                took,
                failed: answer.is_err(),
            });
        }
        let failed = match answer {
            Ok(values) => {
                let took = started.elapsed();
                stats.record_store_rtt(took.as_nanos() as u64);
                self.link.slow.store(took > SLOW_ROUND_TRIP, Relaxed);
                self.link.timeouts.store(0, Relaxed);
                return Ok(values);
            }
            Err(e) if e.is_timeout() => StoreError::Timeout,
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                StoreError::Connection
            }
            // A primary demoted by a failover: the store must find the new one.
            Err(e) if e.kind() == redis::ErrorKind::ReadOnly => StoreError::Connection,
            Err(_) => StoreError::Reply,
        };
        stats.count_store_error(failed);
        self.link.slow.store(failed != StoreError::Reply, Relaxed);
        if failed != StoreError::Reply
            && self.link.timeouts.fetch_add(1, Relaxed) + 1 >= TIMEOUTS_BEFORE_RECONNECT
        {
            // Silent (or refusing writes) several times in a row: make a new connection.
            Link::drop_connection(&self.link, self.runtime.handle());
        }
        Err(failed)
    }

    /// The Redis key of the counter whose key hash is `hash`.
    fn key_of(&self, hash: u64) -> String {
        format!("{}c:{:016x}", self.config.prefix, hash)
    }

    /// What to answer when Redis cannot be asked: denied, or counted (and read) in this
    /// process's own table.
    #[allow(clippy::too_many_arguments)]
    fn unavailable(
        &self,
        stats: &Stats,
        wants: &[Want<'_>],
        peer: Peer,
        reads: &[Read],
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
        reason: &'static str,
    ) -> (Outcome, ReadBits) {
        // A confirmation's nonce counted here would be unknown to the store once it is back:
        // the same answer would run again. Such a call waits for the store.
        let once = wants.iter().position(|w| w.limit.once);
        match (self.config.unavailable, once) {
            (Unavailable::Deny, _) => (
                Outcome::Unavailable { failing: 0, reason },
                ReadBits::default(),
            ),
            (Unavailable::Local, Some(failing)) => (
                Outcome::Unavailable { failing, reason },
                ReadBits::default(),
            ),
            (Unavailable::Local, None) => {
                stats.count_store_fallback();
                let outcome =
                    limiter::reserve(&self.table, wants, peer, now_ns, consume, parts, limits);
                (outcome, limiter::read(&self.table, reads, parts, now_ns))
            }
        }
    }

    /// The exact mode's decision: one script, one round trip, every replica's counts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reserve_exact(
        &self,
        stats: &Stats,
        wants: &[Want<'_>],
        peer: Peer,
        reads: &[Read],
        denying: Denying,
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
    ) -> (Outcome, ReadBits) {
        let p = &self.config.prefix;
        let mut keys = Vec::with_capacity(wants.len() + reads.len() + 2);
        keys.push(format!("{p}epoch"));
        keys.push(format!("{p}lost"));
        keys.extend(wants.iter().map(|w| self.key_of(w.key.hash)));
        keys.extend(reads.iter().map(|r| self.key_of(r.key.hash)));
        // A decision's shadow limits join the reservation its enforced limits made.
        let join = parts
            .iter()
            .find(|part| part.slot == REMOTE_SLOT)
            .map_or(0, |part| part.key);
        let now = match self.config.time {
            TimeSource::Redis => String::new(),
            TimeSource::Engine => (now_ns / 1000).to_string(),
        };
        let mut args = vec![
            now,
            if consume { "1" } else { "0" }.to_owned(),
            self.known_epoch.load(Relaxed).to_string(),
            join.to_string(),
            p.clone(),
            SLACK_MS.to_string(),
            reads.len().to_string(),
        ];
        for w in wants {
            let window_us = w.limit.info.window_ms.max(1).saturating_mul(1000);
            args.push(window_us.to_string());
            args.push(window_us.div_ceil(12).to_string());
            args.push(w.limit.max_units.to_string());
            args.push(w.amount.to_string());
        }
        for read in reads {
            let window_us = read.window_ms.max(1).saturating_mul(1000);
            args.push(window_us.to_string());
            args.push(window_us.div_ceil(12).to_string());
        }
        args.push(denying.as_flags(reads.len()));
        let values = match self.run(stats, &self.link.reserve, keys, args) {
            Ok(v) => v,
            Err(_) => {
                return self.unavailable(
                    stats,
                    wants,
                    peer,
                    reads,
                    now_ns,
                    consume,
                    parts,
                    limits,
                    DENY_REASON,
                );
            }
        };
        let (n, r) = (wants.len(), reads.len());
        let us = |v: i64| (v.max(0) as u64).saturating_mul(1000);
        let malformed = |stats: &Stats| {
            stats.count_store_error(StoreError::Reply);
            let failing = 0;
            (
                Outcome::Unavailable {
                    failing,
                    reason: DENY_REASON,
                },
                ReadBits::default(),
            )
        };
        // The reads come last, one 0/1 each.
        let seen = |tail: &[i64]| ReadBits {
            set: tail
                .iter()
                .enumerate()
                .fold(0u64, |bits, (i, v)| bits | (u64::from(*v == 1) << i)),
            unknown: 0,
        };
        match values.first() {
            Some(1) if values.len() == 3 + 2 * n + r => {
                self.known_epoch.store(values[1] as u64, Relaxed);
                for (i, w) in wants.iter().enumerate() {
                    let used = values[3 + 2 * i].max(0) as u64;
                    let reset = us(values[4 + 2 * i]);
                    if consume {
                        limits.push(limiter::state_of(w, used, reset));
                    } else {
                        limits.push(limiter::state_of(w, used + w.amount, reset));
                    }
                }
                if consume && join == 0 && n > 0 {
                    parts.push(Part {
                        slot: REMOTE_SLOT,
                        key: values[2] as u64,
                        bucket: 0,
                        amount: 0,
                    });
                }
                (Outcome::Reserved, seen(&values[3 + 2 * n..]))
            }
            Some(0) if values.len() == 2 + 3 * n + r => {
                self.known_epoch.store(values[1] as u64, Relaxed);
                let mut retry: Option<u64> = Some(0);
                let mut failing = None;
                let mut states = Limits::with_capacity(n);
                for (i, w) in wants.iter().enumerate() {
                    let (used, reset, wait) =
                        (values[2 + 3 * i], values[3 + 3 * i], values[4 + 3 * i]);
                    states.push(limiter::state_of(w, used.max(0) as u64, us(reset)));
                    if wait == 0 {
                        continue;
                    }
                    failing.get_or_insert(i);
                    retry = match (retry, wait) {
                        (Some(a), b) if b > 0 => Some(a.max(us(b))),
                        _ => None,
                    };
                }
                match failing {
                    Some(failing) => (
                        Outcome::Denied {
                            retry_after_ms: retry.map(|ns| ns.div_ceil(1_000_000).max(1)),
                            limits: states,
                            failing,
                        },
                        seen(&values[2 + 3 * n..]),
                    ),
                    None => malformed(stats),
                }
            }
            // The marks deny the call: nothing reserved, no limit judged.
            Some(3) if values.len() == 2 + r => {
                self.known_epoch.store(values[1] as u64, Relaxed);
                (Outcome::MarksDeny, seen(&values[2..]))
            }
            Some(2) if values.len() == 3 => {
                self.known_epoch.store(values[1] as u64, Relaxed);
                // A read's index comes after the limits': a mark the loss may have taken.
                let failing = (values[2].max(0) as usize).min(n.saturating_sub(1));
                let outcome = Outcome::Unavailable {
                    failing,
                    reason: LOST_REASON,
                };
                (outcome, ReadBits::default())
            }
            _ => malformed(stats),
        }
    }
}

impl CounterStore for RedisStore {
    fn reserve(
        &self,
        stats: &Stats,
        wants: &[Want<'_>],
        peer: Peer,
        reads: &[Read],
        denying: Denying,
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
    ) -> (Outcome, ReadBits) {
        if self.evictable.load(Relaxed) {
            let reason = EVICTABLE_REASON;
            return self.unavailable(
                stats, wants, peer, reads, now_ns, consume, parts, limits, reason,
            );
        }
        match &self.cache {
            // What another replica must see at its next decision is counted in Redis itself,
            // in every mode: a confirmation's nonce (a copy merged only every flush would let
            // two replicas each run the same answer once), a mark, whose a task or a session
            // is.
            Some(cache) if !wants.iter().any(|w| w.limit.write_through) => self.reserve_cached(
                cache, stats, wants, peer, reads, now_ns, consume, parts, limits,
            ),
            _ => self.reserve_exact(
                stats, wants, peer, reads, denying, now_ns, consume, parts, limits,
            ),
        }
    }

    fn record(&self, parts: &[Part]) -> Option<u64> {
        match parts.iter().find(|p| p.slot == REMOTE_SLOT) {
            Some(p) => Some(p.key | REMOTE_RESERVATION),
            None => limiter::record(&self.table, parts),
        }
    }

    fn blocks(&self) -> bool {
        self.cache.is_none()
    }

    fn slow(&self) -> bool {
        self.cache.is_none() && self.link.slow.load(Relaxed)
    }

    fn release(&self, stats: &Stats, id: u64) -> bool {
        if id & REMOTE_RESERVATION == 0 {
            return limiter::release(&self.table, id);
        }
        let key = format!("{}r:{}", self.config.prefix, id & !REMOTE_RESERVATION);
        let released = self.run(stats, &self.link.release, vec![key], Vec::new());
        matches!(released.as_deref(), Ok([1]))
    }
}
