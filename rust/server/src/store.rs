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
//! round trips are slow the native server decides under `block_in_place`, so other calls
//! go on.

use arrayvec::ArrayVec;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::Script;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use toolgate_core::counter::reservation::Part;
use toolgate_core::counter::reservation::MAX_PARTS;
use toolgate_core::counter::CounterTable;
use toolgate_core::decision::Limits;
use toolgate_core::limiter::{self, Outcome, Parts, Want};
use toolgate_core::stats::{Stats, StoreError};
use toolgate_core::store::{CounterStore, REMOTE_RESERVATION, REMOTE_SLOT};

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

/// Keys outlive their window by this much (and one sub-bucket), so Redis forgets idle
/// counters on its own.
const SLACK_MS: u64 = 1000;

/// Consecutive failures (timeouts or connection errors) after which the connection is
/// taken as dead (a peer that went silent without closing it, or one that is gone) and a
/// new one is made.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

const DENY_REASON: &str = "the counter store (Redis) did not answer within its time budget, \
     so this call's limits cannot be counted and it is denied";
const LOST_REASON: &str = "the counter store (Redis) lost its counts (it restarted empty); \
     until one window of this limit has passed since, its count is unknown and calls are denied";

/// Reserve (or check) every limit of one call; see the module's documentation.
///
/// KEYS: epoch, lost, then one hash per limit (field: sub-bucket number, value: units).
/// ARGV: now in µs ('' for Redis's TIME), consume ('1'/'0'), the epoch this replica knows
/// (0: none), the reservation to add to ('0': a new one), the key prefix, slack in ms, then
/// per limit: window µs, sub-bucket µs, max units, amount units.
///
/// Returns `{1, epoch, id, used, reset_us, ...}` when reserved (or, without consume,
/// when every limit would fit), `{0, epoch, used, reset_us, retry_us, ...}` when some limit
/// has no room (retry -1: never; 0: this limit fits), `{2, epoch, index}` when a limit
/// is within a window of a loss of counts.
pub const RESERVE: &str = r#"
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local consume = ARGV[2] == '1'
local known = tonumber(ARGV[3])
local born = tonumber(redis.call('GET', KEYS[1]))
local lost = tonumber(redis.call('GET', KEYS[2])) or -1
if not born then
  born = now
  redis.call('SET', KEYS[1], string.format('%.0f', born))
  if known ~= 0 then
    lost = now
    redis.call('SET', KEYS[2], string.format('%.0f', lost))
  end
elseif known ~= 0 and born ~= known and born > lost then
  lost = born
  redis.call('SET', KEYS[2], string.format('%.0f', lost))
end
local n = #KEYS - 2
local out = {}
local fits = true
local newest = {}
local life = 0
for i = 1, n do
  local a = 6 + (i - 1) * 4
  local w = tonumber(ARGV[a + 1])
  local g = tonumber(ARGV[a + 2])
  local max = tonumber(ARGV[a + 3])
  local amt = tonumber(ARGV[a + 4])
  local key = KEYS[i + 2]
  if lost >= 0 and now < lost + w + g then
    return {2, born, i - 1}
  end
  local b = math.floor(now / g)
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    local k = tonumber(h[j])
    if k > b then b = k end
  end
  local lo = b - 12
  local used = 0
  local cnt = {}
  for j = 1, #h, 2 do
    local k = tonumber(h[j])
    if k >= lo then
      local c = tonumber(h[j + 1])
      used = used + c
      cnt[k - lo] = (cnt[k - lo] or 0) + c
    elseif consume then
      redis.call('HDEL', key, h[j])
    end
  end
  local reset = 0
  for k = 12, 0, -1 do
    if (cnt[k] or 0) > 0 then
      reset = math.max(0, (lo + k + 13) * g - now)
      break
    end
  end
  local retry = 0
  local need = used + amt - max
  if need > 0 then
    fits = false
    retry = -1
    if amt <= max then
      local freed = 0
      for k = 0, 12 do
        local c = cnt[k] or 0
        freed = freed + c
        if freed >= need and c > 0 then
          retry = math.max(1, (lo + k + 13) * g - now)
          break
        end
      end
    end
  end
  newest[i] = b
  life = math.max(life, math.ceil((w + g) / 1000) + tonumber(ARGV[6]))
  out[#out + 1] = used
  out[#out + 1] = reset
  out[#out + 1] = retry
end
if not fits then
  local r = {0, born}
  for _, v in ipairs(out) do r[#r + 1] = v end
  return r
end
local r = {1, born, 0}
if not consume then
  for i = 1, n do
    r[#r + 1] = out[(i - 1) * 3 + 1]
    r[#r + 1] = out[(i - 1) * 3 + 2]
  end
  return r
end
local id = ARGV[4]
if id == '0' then
  id = tostring(redis.call('INCR', ARGV[5] .. 'rid'))
end
local rkey = ARGV[5] .. 'r:' .. id
for i = 1, n do
  local a = 6 + (i - 1) * 4
  local key = KEYS[i + 2]
  local bucket = string.format('%.0f', newest[i])
  redis.call('HINCRBY', key, bucket, ARGV[a + 4])
  redis.call('PEXPIRE', key, string.format('%.0f', math.ceil((tonumber(ARGV[a + 1]) + tonumber(ARGV[a + 2])) / 1000) + tonumber(ARGV[6])))
  redis.call('RPUSH', rkey, key, bucket, ARGV[a + 4])
  local g = tonumber(ARGV[a + 2])
  r[#r + 1] = out[(i - 1) * 3 + 1] + tonumber(ARGV[a + 4])
  r[#r + 1] = math.max(0, (newest[i] + 13) * g - now)
end
local ttl = redis.call('PTTL', rkey)
redis.call('PEXPIRE', rkey, string.format('%.0f', math.max(life, ttl)))
r[3] = tonumber(id)
return r
"#;

/// Give reservation `KEYS[1]` back: each part's amount leaves its sub-bucket (if that still
/// holds it); the record is deleted, so a second release finds nothing. Returns {1} or {0}.
pub const RELEASE: &str = r#"
local parts = redis.call('LRANGE', KEYS[1], 0, -1)
if #parts == 0 then return {0} end
redis.call('DEL', KEYS[1])
for i = 1, #parts - 2, 3 do
  local c = tonumber(redis.call('HGET', parts[i], parts[i + 1]))
  local a = tonumber(parts[i + 2])
  if c and a > 0 and c >= a then
    redis.call('HINCRBY', parts[i], parts[i + 1], '-' .. parts[i + 2])
  end
end
return {1}
"#;

/// Merge this replica's counts (`ARGV`: now µs, slack ms, then per key: window µs,
/// sub-bucket µs, the number of (sub-bucket, units) pairs, the pairs) into each key, and
/// return each key's newest sub-bucket and the 13 sub-buckets ending there.
pub const MERGE: &str = r#"
local now = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local a = 3
local r = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local w = tonumber(ARGV[a])
  local g = tonumber(ARGV[a + 1])
  local pairs_n = tonumber(ARGV[a + 2])
  a = a + 3
  for j = 1, pairs_n do
    redis.call('HINCRBY', key, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  local b = math.floor(now / g)
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    local k = tonumber(h[j])
    if k > b then b = k end
  end
  local counts = {}
  for k = 0, 12 do counts[k] = 0 end
  for j = 1, #h, 2 do
    local k = tonumber(h[j])
    if k >= b - 12 then
      counts[k - b + 12] = counts[k - b + 12] + tonumber(h[j + 1])
    else
      redis.call('HDEL', key, h[j])
    end
  end
  if pairs_n > 0 then
    redis.call('PEXPIRE', key, string.format('%.0f', math.ceil((w + g) / 1000) + slack))
  end
  r[#r + 1] = b
  for k = 0, 12 do r[#r + 1] = counts[k] end
end
return r
"#;

/// One counter key as a cached replica sees it.
struct Cached {
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
struct Cache {
    entries: std::sync::Mutex<std::collections::HashMap<u64, Cached>>,
    flush: Duration,
    /// Wall-clock µs of the last merge that answered (0: none yet).
    merged_at_us: AtomicU64,
    /// With [`TimeSource::Engine`]: the latest engine time a decision saw, for merges.
    clock_us: AtomicU64,
}

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

struct Link {
    source: Source,
    reserve: Arc<Script>,
    release: Arc<Script>,
    /// How long one call waits for Redis.
    budget: Duration,
    /// Bumped when the link is found dead, so every thread makes a new connection.
    generation: AtomicU64,
    /// The client deciding threads connect with: `client` with its host name resolved
    /// by the background task, so no decision waits on DNS.
    direct: RwLock<Option<redis::Client>>,
    /// The last round trip was slow or failed.
    slow: AtomicBool,
    connection: RwLock<Option<ConnectionManager>>,
    reconnecting: AtomicBool,
    timeouts: AtomicU32,
}

impl Link {
    /// Make a new connection in the background (unless one is being made), retrying with
    /// backoff from 50 ms to 2 s; decisions meanwhile find no connection. The primary is
    /// looked up again each time (Sentinel may have promoted another).
    fn reconnect(link: &Arc<Link>, runtime: &tokio::runtime::Handle) {
        if link.reconnecting.swap(true, Relaxed) {
            return;
        }
        let link = Arc::clone(link);
        let budget = link.budget.max(Duration::from_millis(200));
        runtime.spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                if let Ok(Ok(client)) =
                    tokio::time::timeout(budget * 10, link.source.primary()).await
                {
                    if link.connect(&client, budget).await {
                        link.timeouts.store(0, Relaxed);
                        link.reconnecting.store(false, Relaxed);
                        return;
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }

    /// Connect to `client`, load the scripts and resolve its address: true when all done.
    async fn connect(&self, client: &redis::Client, budget: Duration) -> bool {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(2000)
            .set_connection_timeout(budget * 5);
        let Ok(Ok(mut c)) = tokio::time::timeout(
            budget * 10,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        else {
            return false;
        };
        // Load the scripts now, so a decision does not pay for it.
        let loaded = tokio::time::timeout(budget * 10, async {
            self.reserve.prepare_invoke().load_async(&mut c).await?;
            self.release.prepare_invoke().load_async(&mut c).await
        })
        .await;
        let direct = tokio::time::timeout(budget * 10, resolved(client)).await;
        let (Ok(Ok(_)), Ok(Some(direct))) = (loaded, direct) else {
            return false;
        };
        *self.direct.write().unwrap_or_else(|e| e.into_inner()) = Some(direct);
        *self.connection.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
        true
    }

    /// Take the connection as dead: every thread's goes too, and a new one is made.
    fn drop_connection(link: &Arc<Link>, runtime: &tokio::runtime::Handle) {
        *link.connection.write().unwrap_or_else(|e| e.into_inner()) = None;
        link.generation.fetch_add(1, Relaxed);
        Link::reconnect(link, runtime);
    }
}

/// Where the primary is: one address, or whichever server Sentinel names now.
pub(crate) enum Source {
    Direct(redis::Client),
    Sentinel {
        sentinel: tokio::sync::Mutex<Sentinel>,
        service: String,
        node: SentinelNodeConnectionInfo,
    },
}

impl Source {
    pub(crate) fn parse(url: &str) -> Result<Source, String> {
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            return redis::Client::open(url)
                .map(Source::Direct)
                .map_err(|e| format!("--store {}: {e}", redact(url)));
        };
        let bad = |why: &str| {
            format!(
                "--store {}: {why}; expected \
                 redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]",
                redact(url)
            )
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no service name"))?;
        let mut path = path.split('/');
        let service = path
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no service name"))?;
        let db = match path.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse::<i64>()
                .map_err(|_| bad("the database is not a number"))?,
        };
        if path.next().is_some() {
            return Err(bad("too many path parts"));
        }
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            match host.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                    sentinels.push(format!("redis://{host}"))
                }
                _ => return Err(bad(&format!("{host:?} is not HOST:PORT"))),
            }
        }
        let (username, password) = match auth.map(|a| a.split_once(':')) {
            None => (None, None),
            Some(None) => return Err(bad("credentials are [USER]:PASSWORD")),
            Some(Some((user, password))) => (
                Some(user.to_owned()).filter(|u| !u.is_empty()),
                Some(password.to_owned()),
            ),
        };
        let sentinel = Sentinel::build(sentinels).map_err(|e| bad(&e.to_string()))?;
        Ok(Source::Sentinel {
            sentinel: tokio::sync::Mutex::new(sentinel),
            service: service.to_owned(),
            node: SentinelNodeConnectionInfo {
                tls_mode: None,
                redis_connection_info: Some(redis::RedisConnectionInfo {
                    db,
                    username,
                    password,
                    ..Default::default()
                }),
            },
        })
    }

    /// A client for the primary as of now.
    pub(crate) async fn primary(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Source::Direct(client) => Ok(client.clone()),
            Source::Sentinel {
                sentinel,
                service,
                node,
            } => {
                let mut sentinel = sentinel.lock().await;
                sentinel.async_master_for(service, Some(node)).await
            }
        }
    }
}

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
                Mode::Cached { flush } => Some(Arc::new(Cache {
                    entries: Default::default(),
                    flush,
                    merged_at_us: AtomicU64::new(0),
                    clock_us: AtomicU64::new(0),
                })),
            },
        };
        store.reconnect();
        store.start_merging();
        let until = Instant::now() + wait;
        while !store.connected() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(store)
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

    /// The cached mode's merges: every flush interval, one script sends this replica's new
    /// counts and reads everyone's back, for every key used within its window.
    fn start_merging(&self) {
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
    fn reserve_cached(
        &self,
        cache: &Cache,
        stats: &Stats,
        wants: &[Want<'_>],
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
    ) -> Outcome {
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
            return self.unavailable(stats, wants, now_ns, consume, parts, limits, DENY_REASON);
        }
        let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Per limit: its sub-bucket now, units in its window, when it empties, and (if it
        // has no room) how long until it would have (None: never).
        let mut seen: ArrayVec<(u64, u64, u64, Option<Option<u64>>), MAX_PARTS> = ArrayVec::new();
        for w in wants {
            let window_us = w.limit.info.window_ms.max(1).saturating_mul(1000);
            let g = window_us.div_ceil(12);
            let e = entries.entry(w.key.hash).or_insert_with(|| Cached {
                key: self.counter_key(w),
                window_us,
                g_us: g,
                newest: now / g,
                merged: [0; 13],
                pending: Vec::new(),
                merging: Vec::new(),
                last_us: now,
            });
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

    fn counter_key(&self, want: &Want<'_>) -> String {
        format!("{}c:{:016x}", self.config.prefix, want.key.hash)
    }

    /// What to answer when Redis cannot be asked.
    #[allow(clippy::too_many_arguments)]
    fn unavailable(
        &self,
        stats: &Stats,
        wants: &[Want<'_>],
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
        reason: &'static str,
    ) -> Outcome {
        match self.config.unavailable {
            Unavailable::Deny => Outcome::Unavailable { failing: 0, reason },
            Unavailable::Local => {
                stats.count_store_fallback();
                limiter::reserve(&self.table, wants, now_ns, consume, parts, limits)
            }
        }
    }
}

/// `client` with its host name looked up now (None: it does not resolve), for connections
/// made where a DNS wait must not happen.
async fn resolved(client: &redis::Client) -> Option<redis::Client> {
    let info = client.get_connection_info();
    let redis::ConnectionAddr::Tcp(host, port) = &info.addr else {
        return Some(client.clone());
    };
    let ip = tokio::net::lookup_host((host.as_str(), *port))
        .await
        .ok()?
        .next()?
        .ip();
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(ip.to_string(), *port),
        redis: info.redis.clone(),
    };
    redis::Client::open(info).ok()
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl CounterStore for RedisStore {
    fn reserve(
        &self,
        stats: &Stats,
        wants: &[Want<'_>],
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
    ) -> Outcome {
        if let Some(cache) = &self.cache {
            return self.reserve_cached(cache, stats, wants, now_ns, consume, parts, limits);
        }
        let p = &self.config.prefix;
        let mut keys = Vec::with_capacity(wants.len() + 2);
        keys.push(format!("{p}epoch"));
        keys.push(format!("{p}lost"));
        keys.extend(wants.iter().map(|w| self.counter_key(w)));
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
        ];
        for w in wants {
            let window_us = w.limit.info.window_ms.max(1).saturating_mul(1000);
            args.push(window_us.to_string());
            args.push(window_us.div_ceil(12).to_string());
            args.push(w.limit.max_units.to_string());
            args.push(w.amount.to_string());
        }
        let values = match self.run(stats, &self.link.reserve, keys, args) {
            Ok(v) => v,
            Err(_) => {
                return self.unavailable(stats, wants, now_ns, consume, parts, limits, DENY_REASON)
            }
        };
        let n = wants.len();
        let us = |v: i64| (v.max(0) as u64).saturating_mul(1000);
        let malformed = |stats: &Stats| {
            stats.count_store_error(StoreError::Reply);
            Outcome::Unavailable {
                failing: 0,
                reason: DENY_REASON,
            }
        };
        match values.first() {
            Some(1) if values.len() == 3 + 2 * n => {
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
                if consume && join == 0 {
                    parts.push(Part {
                        slot: REMOTE_SLOT,
                        key: values[2] as u64,
                        bucket: 0,
                        amount: 0,
                    });
                }
                Outcome::Reserved
            }
            Some(0) if values.len() == 2 + 3 * n => {
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
                    Some(failing) => Outcome::Denied {
                        retry_after_ms: retry.map(|ns| ns.div_ceil(1_000_000).max(1)),
                        limits: states,
                        failing,
                    },
                    None => malformed(stats),
                }
            }
            Some(2) if values.len() == 3 => {
                self.known_epoch.store(values[1] as u64, Relaxed);
                let failing = (values[2].max(0) as usize).min(n.saturating_sub(1));
                Outcome::Unavailable {
                    failing,
                    reason: LOST_REASON,
                }
            }
            _ => malformed(stats),
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

#[cfg(test)]
mod tests {
    use super::Source;

    fn sentinel(url: &str) -> Result<(String, i64, Option<String>, Option<String>), String> {
        match Source::parse(url)? {
            Source::Sentinel { service, node, .. } => {
                let info = node.redis_connection_info.unwrap_or_default();
                Ok((service, info.db, info.username, info.password))
            }
            Source::Direct(_) => Err("not a sentinel source".into()),
        }
    }

    #[test]
    fn sentinel_urls_name_hosts_service_database_and_credentials() {
        let none = (None, None);
        let plain = sentinel("redis+sentinel://h1:26379,h2:26380/main/3").unwrap();
        assert_eq!(plain, ("main".into(), 3, none.0, none.1));
        let auth = sentinel("redis+sentinel://:s3cret@h1:26379/main").unwrap();
        assert_eq!(auth, ("main".into(), 0, None, Some("s3cret".into())));
        let user = sentinel("redis+sentinel://ops:pw@h1:26379/main/").unwrap();
        assert_eq!(
            user,
            ("main".into(), 0, Some("ops".into()), Some("pw".into()))
        );
    }

    #[test]
    fn malformed_sentinel_urls_are_refused_with_the_expected_form() {
        for url in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:26379/",
            "redis+sentinel://h1/main",
            "redis+sentinel://h1:port/main",
            "redis+sentinel://h1:26379,/main",
            "redis+sentinel://h1:26379/main/x",
            "redis+sentinel://h1:26379/main/0/extra",
            "redis+sentinel://user@h1:26379/main",
        ] {
            let err = sentinel(url).unwrap_err();
            assert!(err.contains("expected redis+sentinel://"), "{url}: {err}");
        }
        // A password never shows in the error.
        let err = sentinel("redis+sentinel://:s3cret@h1/main").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
