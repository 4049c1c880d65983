//! Every counter store: the local table, and Redis (a real `redis-server`, Debian's package;
//! scripts/test installs it) in exact and cached mode.
//!
//! Each behaviour every store promises runs on every store (as Limitador runs each of its
//! scenarios on each storage): never more than `max` in any window, all of a call's limits
//! or none, a reservation given back once, threads racing on one key get exactly `max`.
//! Then Redis alone: the exact-mode script decides every call as the local table does (a
//! differential property test on generated calls, costs, times and releases), keys expire
//! and carry the prefix, two replicas racing on one key get exactly `max`, an unreachable
//! Redis is answered within the budget (denied, or counted locally), and a Redis that lost
//! its counts refuses for one window.

use proptest::prelude::*;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate_core::counter::marks::MarkState;
use toolgate_core::counter::CounterTable;
use toolgate_core::Kind;
use toolgate_core::{
    Code, Decision, Engine, EngineBuilder, ManualClock, Policy, Request, Subject, Verdict,
};
use toolgate_runtime::store::{Mode, RedisConfig, RedisStore, TimeSource, Unavailable};

struct RedisServer {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("toolgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is required for these tests (Debian: apt-get install redis-server; \
                 scripts/test installs it)",
            );
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while server.client().get_connection().is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port)).unwrap()
    }

    fn cmd(&self, cmd: &mut redis::Cmd) -> redis::Value {
        cmd.query(&mut self.client().get_connection().unwrap())
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn config(url: String, prefix: &str, time: TimeSource, unavailable: Unavailable) -> RedisConfig {
    RedisConfig {
        url,
        prefix: prefix.to_owned(),
        timeout: Duration::from_millis(500),
        unavailable,
        time,
        mode: Mode::Exact,
    }
}

/// An engine to be built on `json`, and the table it counts in (a store falls back to it).
fn builder(json: &str, clock: Arc<ManualClock>) -> (EngineBuilder, Arc<CounterTable>) {
    let policy = Policy::from_json_str(json).expect("valid policy");
    let table = Arc::new(CounterTable::new(1024, 1 << 14));
    (Engine::builder(policy, table.clone(), clock), table)
}

fn engine(json: &str, clock: Arc<ManualClock>) -> Engine {
    builder(json, clock).0.build().unwrap()
}

fn redis_builder(json: &str, clock: Arc<ManualClock>, config: RedisConfig) -> EngineBuilder {
    let (builder, table) = builder(json, clock);
    let store = RedisStore::connect(config, table, Duration::from_secs(5)).unwrap();
    assert!(store.connected(), "no connection to Redis");
    builder.store(Arc::new(store))
}

fn redis_engine(json: &str, clock: Arc<ManualClock>, config: RedisConfig) -> Engine {
    redis_builder(json, clock, config).build().unwrap()
}

fn call(engine: &Engine, tool: &str, grant: &str, hits: Option<u32>) -> Decision {
    engine.decide::<&serde_json::Value>(&Request {
        kind: Kind::Tool,
        name: tool,
        server: None,
        subject: Subject {
            grant: Some(grant),
            ..Default::default()
        },
        args: None,
        dry_run: false,
        hits,
        confirm: None,
    })
}

/// The stores every behaviour below runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Local,
    RedisExact,
    RedisCached,
}

const STORES: [Store; 3] = [Store::Local, Store::RedisExact, Store::RedisCached];

/// An engine on `json` counting on `store` (on `redis` for its Redis kinds), with time from
/// `clock` everywhere, so the stores are driven alike.
fn engine_on(store: Store, json: &str, clock: Arc<ManualClock>, redis: &RedisServer) -> Engine {
    let mut c = config(
        redis.url(),
        &format!("every{}:", unique()),
        TimeSource::Engine,
        Unavailable::Deny,
    );
    let e = match store {
        Store::Local => return engine(json, clock),
        Store::RedisExact => redis_engine(json, clock, c),
        Store::RedisCached => {
            c.mode = Mode::Cached {
                flush: Duration::from_millis(2),
            };
            redis_engine(json, clock, c)
        }
    };
    if store == Store::RedisCached {
        // The first merge, before which a cached replica does not decide.
        std::thread::sleep(Duration::from_millis(20));
    }
    e
}

#[test]
fn every_store_allows_at_most_max_in_any_window() {
    let redis = RedisServer::start();
    for store in STORES {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let e = engine_on(store, &two_counters(4, 100), clock.clone(), &redis);
        // A call every 0.3 s for 12 s: in any 3 s window, at most 4 of them.
        let mut allowed_at = Vec::new();
        for i in 0..40u64 {
            if call(&e, "a", "g", None).verdict == Verdict::Allow {
                allowed_at.push(i * 300);
            }
            clock.advance_ns(300_000_000);
        }
        for (i, start) in allowed_at.iter().enumerate() {
            let within = allowed_at[i..].iter().take_while(|t| **t < start + 3000);
            assert!(within.count() <= 4, "{store:?}: {allowed_at:?}");
        }
        // The window slides: calls are allowed again as old ones leave it.
        assert!(allowed_at.len() >= 12, "{store:?}: {allowed_at:?}");
    }
}

#[test]
fn every_store_takes_all_of_a_calls_limits_or_none() {
    let redis = RedisServer::start();
    for store in STORES {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let e = engine_on(store, &two_counters(2, 3), clock, &redis);
        assert_eq!(call(&e, "a", "g", None).code, Code::Allowed, "{store:?}");
        assert_eq!(call(&e, "a", "g", None).code, Code::Allowed, "{store:?}");
        // A is full: the call on A and B is denied, and B keeps its room.
        let d = call(&e, "ab", "g", None);
        assert_eq!(d.code, Code::RateLimited, "{store:?}");
        for _ in 0..3 {
            assert_eq!(call(&e, "b", "g", None).code, Code::Allowed, "{store:?}");
        }
        assert_eq!(
            call(&e, "b", "g", None).code,
            Code::RateLimited,
            "{store:?}"
        );
    }
}

#[test]
fn every_store_gives_a_reservation_back_once() {
    let redis = RedisServer::start();
    for store in STORES {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let e = engine_on(store, &two_counters(1, 100), clock, &redis);
        let d = call(&e, "a", "g", None);
        assert_eq!(d.code, Code::Allowed, "{store:?}");
        let Some(id) = d.reservation else {
            // The cached mode counts in its copy and merges later: there is no
            // reservation to give back, and it says so by giving none.
            assert_eq!(store, Store::RedisCached);
            continue;
        };
        assert_eq!(
            call(&e, "a", "g", None).code,
            Code::RateLimited,
            "{store:?}"
        );
        assert!(e.release(id), "{store:?}");
        assert!(!e.release(id), "{store:?}: given back twice");
        assert_eq!(call(&e, "a", "g", None).code, Code::Allowed, "{store:?}");
        assert_eq!(
            call(&e, "a", "g", None).code,
            Code::RateLimited,
            "{store:?}"
        );
    }
}

#[test]
fn every_store_gives_threads_racing_on_one_key_exactly_max() {
    let redis = RedisServer::start();
    let json = r#"{"version": "1", "tools": {"t": {"limits": [{"counter": "T", "window": "1m", "max": 37, "scope": "grant"}]}}}"#;
    for store in STORES {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let e = engine_on(store, json, clock, &redis);
        let allowed: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..20)
                            .filter(|_| call(&e, "t", "g", None).verdict == Verdict::Allow)
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 37, "{store:?}");
    }
}

/// Reading the CRM marks the caller's grant; mail may not leave a marked grant.
const TRIFECTA: &str = r#"{"version": "1", "tools": {
    "crm_read": {"marks": [{"name": "private_data", "scope": "grant", "ttl": "1m"}]},
    "send_email": {"deny_if": [{"path": "marks.private_data", "op": "exists"}]}}}"#;

#[test]
fn every_store_keeps_marks_and_gives_them_back() {
    let redis = RedisServer::start();
    for store in STORES {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let e = engine_on(store, TRIFECTA, clock.clone(), &redis);
        assert_eq!(
            call(&e, "send_email", "g", None).code,
            Code::Allowed,
            "{store:?}"
        );
        let read = call(&e, "crm_read", "g", None);
        assert_eq!(read.code, Code::Allowed, "{store:?}");
        let d = call(&e, "send_email", "g", None);
        assert_eq!(d.code, Code::ConditionFailed, "{store:?}");
        assert_eq!(
            call(&e, "send_email", "h", None).code,
            Code::Allowed,
            "{store:?}"
        );
        // A call that sets a mark is counted in the store at once in every mode (cached
        // too), and so may be given back.
        let id = read
            .reservation
            .expect("a call that sets a mark holds a reservation");
        assert!(e.release(id), "{store:?}");
        if store == Store::RedisCached {
            // A copy that merged the mark before it was given back shows it set (which can
            // only deny) until its next merge.
            std::thread::sleep(Duration::from_millis(20));
        }
        let d = call(&e, "send_email", "g", None);
        assert_eq!(d.code, Code::Allowed, "{store:?}: the mark was given back");
        // A mark is gone once its ttl (and at most a twelfth more) has passed.
        call(&e, "crm_read", "k", None);
        clock.advance_ns(60_000_000_000 + 5_000_000_001);
        if store == Store::RedisCached {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            call(&e, "send_email", "k", None).code,
            Code::Allowed,
            "{store:?}"
        );
    }
}

/// A call is judged before anything of it is counted, its own mark included: a tool that
/// marks the grant and may not run where the mark is set runs once a window, on every store.
#[test]
fn every_store_judges_a_call_before_its_own_mark() {
    const ONCE: &str = r#"{"version": "1", "tools": {
        "once": {"marks": [{"name": "done", "scope": "grant", "ttl": "1m"}],
                 "deny_if": [{"path": "marks.done", "op": "exists"}]}}}"#;
    let redis = RedisServer::start();
    for store in STORES {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let e = engine_on(store, ONCE, clock, &redis);
        let first = call(&e, "once", "g", None);
        assert_eq!(first.code, Code::Allowed, "{store:?}: {}", first.reason());
        let read = &first.marks.as_ref().expect("marks read").read;
        assert_eq!(&read[..], &[("done".into(), MarkState::Unset)], "{store:?}");
        assert_eq!(
            call(&e, "once", "g", None).code,
            Code::ConditionFailed,
            "{store:?}"
        );
    }
}

/// A mark one replica sets is seen by the next decision of another: exactly (the marks
/// travel in the script that reserves), or, cached, on the first read of it there (read
/// through to Redis, since that copy has not merged it yet).
#[test]
fn a_mark_set_on_one_replica_is_seen_on_another() {
    let redis = RedisServer::start();
    for mode in [
        Mode::Exact,
        Mode::Cached {
            flush: Duration::from_millis(2),
        },
    ] {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let prefix = format!("marks{}:", unique());
        let replica = || {
            let mut c = config(redis.url(), &prefix, TimeSource::Engine, Unavailable::Deny);
            c.mode = mode;
            redis_engine(TRIFECTA, clock.clone(), c)
        };
        let (a, b) = (replica(), replica());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(call(&a, "crm_read", "g", None).code, Code::Allowed);
        if mode != Mode::Exact {
            // The cached replica sends its counts at its next merge.
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            call(&b, "send_email", "g", None).code,
            Code::ConditionFailed,
            "{mode:?}"
        );
        assert_eq!(
            call(&b, "send_email", "h", None).code,
            Code::Allowed,
            "{mode:?}"
        );
    }
}

/// Cached mode: a replica whose copy merged a caller's mark counter (unset) sees the mark
/// another replica sets at its very next decision, not at its next merge: a mark is counted
/// in Redis at once, and a mark the copy does not show set is asked of Redis. Also whose a
/// session is: two replicas never let two callers hold one session.
#[test]
fn cached_a_mark_or_a_session_held_on_one_replica_is_seen_at_once_on_another() {
    let redis = RedisServer::start();
    let flush = Duration::from_millis(400);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let prefix = format!("marks-now{}:", unique());
    let replica = || {
        let mut c = config(redis.url(), &prefix, TimeSource::Engine, Unavailable::Deny);
        c.mode = Mode::Cached { flush };
        redis_engine(TRIFECTA, clock.clone(), c)
    };
    let (a, b) = (replica(), replica());
    // Each replica decides once it has merged once.
    for e in [&a, &b] {
        while call(e, "send_email", "warmup", None).code == Code::StoreUnavailable {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for grant in ["g1", "g2", "g3"] {
        // B reads the grant's (unset) mark, and merges that counter into its copy.
        assert_eq!(call(&b, "send_email", grant, None).code, Code::Allowed);
        std::thread::sleep(flush * 3);
        assert_eq!(call(&a, "crm_read", grant, None).code, Code::Allowed);
        assert_eq!(
            call(&b, "send_email", grant, None).code,
            Code::ConditionFailed,
            "{grant}"
        );
    }
    let subject = |grant: &'static str| toolgate_core::Subject {
        grant: Some(grant),
        ..Default::default()
    };
    let refused = |e: &Engine, grant: &'static str| {
        let request = toolgate_core::Undecidable {
            server: Some("crm"),
            subject: subject(grant),
            ..toolgate_core::Undecidable::new("")
        };
        e.screen_session(
            toolgate_core::observing::stats::Api::ExtAuthz,
            "s-1",
            &request,
        )
        .map(|d| d.code)
    };
    assert_eq!(refused(&a, "alice"), None);
    assert_eq!(refused(&b, "mallory"), Some(Code::Hidden));
    assert_eq!(refused(&b, "alice"), None);
}

/// With a shared store, a session seen held is taken as held for a few seconds without
/// asking Redis again (a round trip per request otherwise); never a session no one was seen
/// holding, and never past that time.
#[test]
fn a_session_seen_held_is_not_asked_of_redis_again_for_a_while() {
    let mut redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let prefix = format!("seen{}:", unique());
    let c = config(redis.url(), &prefix, TimeSource::Engine, Unavailable::Deny);
    let e = redis_engine(TRIFECTA, clock.clone(), c);
    let refused = |grant: &'static str| {
        let request = toolgate_core::Undecidable {
            server: Some("crm"),
            subject: toolgate_core::Subject {
                grant: Some(grant),
                ..Default::default()
            },
            ..toolgate_core::Undecidable::new("")
        };
        e.screen_session(
            toolgate_core::observing::stats::Api::ExtAuthz,
            "s-1",
            &request,
        )
        .map(|d| d.code)
    };
    assert_eq!(refused("alice"), None);
    assert_eq!(refused("mallory"), Some(Code::Hidden));
    // Redis gone: alice's session was seen held just now; no one else's is taken as held.
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    assert_eq!(refused("alice"), None);
    assert_eq!(refused("mallory"), Some(Code::StoreUnavailable));
    clock.advance_ns(toolgate_core::owners::sessions::SEEN_HELD_MS * 1_000_000);
    assert_eq!(refused("alice"), Some(Code::StoreUnavailable));
}

/// The race across replicas: one marks a grant while the other checks it. A check that
/// starts after the marking call returned never runs.
#[test]
fn a_check_on_one_replica_racing_a_mark_on_another_never_runs_after_it() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new(0));
    let replica = || {
        let c = config(
            redis.url(),
            "markrace:",
            TimeSource::Redis,
            Unavailable::Deny,
        );
        Arc::new(redis_engine(TRIFECTA, clock.clone(), c))
    };
    let (a, b) = (replica(), replica());
    let rounds = 300;
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let marked: Arc<Vec<AtomicBool>> =
        Arc::new((0..rounds).map(|_| AtomicBool::new(false)).collect());
    let marker = {
        let (barrier, marked) = (Arc::clone(&barrier), Arc::clone(&marked));
        std::thread::spawn(move || {
            for i in 0..rounds {
                barrier.wait();
                assert_eq!(
                    call(&a, "crm_read", &format!("g{i}"), None).code,
                    Code::Allowed
                );
                marked[i].store(true, SeqCst);
            }
        })
    };
    let mut after = 0;
    for i in 0..rounds {
        barrier.wait();
        for _ in 0..(i * 37 % 20_000) {
            std::hint::spin_loop();
        }
        let started_after_mark = marked[i].load(SeqCst);
        let d = call(&b, "send_email", &format!("g{i}"), None);
        if started_after_mark {
            after += 1;
            assert_eq!(
                d.verdict,
                Verdict::Deny,
                "round {i}: checked after the mark, allowed"
            );
        }
    }
    marker.join().unwrap();
    for i in 0..rounds {
        let d = call(&b, "send_email", &format!("g{i}"), None);
        assert_eq!(d.verdict, Verdict::Deny, "round {i}");
    }
    eprintln!("checks after the mark: {after} of {rounds}");
}

/// A limit, and the same limit with a mark read, set, or both.
const LIMIT_AND_MARKS: &str = r#"{"version": "1", "tools": {
    "limited": {"limits": [{"counter": "L", "window": "1m", "max": 1000, "scope": "grant"}]},
    "reads": {"limits": [{"counter": "L", "window": "1m", "max": 1000, "scope": "grant"}],
              "deny_if": [{"path": "marks.private_data", "op": "exists"}]},
    "sets": {"limits": [{"counter": "L", "window": "1m", "max": 1000, "scope": "grant"}],
             "marks": [{"name": "private_data", "scope": "grant", "ttl": "1m"}]},
    "reads_and_sets": {"limits": [{"counter": "L", "window": "1m", "max": 1000, "scope": "grant"}],
                       "deny_if": [{"path": "marks.private_data", "op": "exists"}],
                       "marks": [{"name": "reviewed", "scope": "grant", "ttl": "1m"}]}}}"#;

/// A connection to Redis that speaks RESP itself, so that it sends nothing but what it is
/// told (a client library may greet the server with commands of its own).
struct Raw {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Raw {
    fn connect(redis: &RedisServer) -> Raw {
        let stream = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            reader: std::io::BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn addr(&self) -> String {
        self.writer.local_addr().unwrap().to_string()
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "a whole line from Redis: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// Send one command; its reply, a status or a bulk string.
    fn cmd(&mut self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(out.as_bytes()).unwrap();
        let head = self.line();
        match head.split_at(1) {
            ("+", status) => status.to_owned(),
            ("$", len) => {
                let mut body = vec![0; len.parse::<usize>().unwrap() + 2];
                self.reader.read_exact(&mut body).unwrap();
                body.truncate(body.len() - 2);
                String::from_utf8(body).unwrap()
            }
            _ => panic!("unexpected reply to {args:?}: {head:?}"),
        }
    }
}

/// Marks travel in the script that reserves a call's limits: on Redis in exact mode, a call
/// with a limit and a mark (read, set, or both) that is allowed costs the one round trip a
/// call with just the limit costs: the reserving script, once. Counted by Redis, not timed:
/// every command a client sent (`MONITOR`, where the scripts' own commands show as `lua`'s),
/// and `INFO commandstats`' count of scripts run.
///
/// A call denied by a mark it read costs that one round trip too: the engine tells the
/// script which marks deny the call, and the script, having read them, reserves nothing for
/// it, so there is nothing to give back (no release script).
#[test]
fn marks_ride_in_the_reserving_script() {
    use toolgate_runtime::store::scripts::{RELEASE, RESERVE};
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let c = config(
        redis.url(),
        "roundtrips:",
        TimeSource::Engine,
        Unavailable::Deny,
    );
    let e = redis_engine(LIMIT_AND_MARKS, clock, c);
    // The deciding thread's own connection is made, and the scripts loaded, by its first
    // calls: not what is counted.
    assert_eq!(call(&e, "limited", "warm", None).code, Code::Allowed);
    assert_eq!(call(&e, "sets", "warm", None).code, Code::Allowed);
    assert_eq!(call(&e, "reads", "warm", None).code, Code::ConditionFailed);
    let scripts = [
        (redis::Script::new(RESERVE).get_hash().to_owned(), "reserve"),
        (redis::Script::new(RELEASE).get_hash().to_owned(), "release"),
    ];

    let mut monitor = Raw::connect(&redis);
    assert_eq!(monitor.cmd(&["MONITOR"]), "OK");
    let mut control = Raw::connect(&redis);
    let ours = format!("[0 {}]", control.addr());
    // What the clients other than `control` sent while `decide` ran `n` decisions (a
    // script by its name), and how many scripts (EVALSHA, EVAL) Redis ran meanwhile.
    let mut count = |name: &str, n: usize, decide: &mut dyn FnMut()| -> (Vec<String>, u64) {
        assert_eq!(control.cmd(&["CONFIG", "RESETSTAT"]), "OK");
        for _ in 0..n {
            decide();
        }
        let end = format!("end-of-{name}");
        assert_eq!(control.cmd(&["ECHO", &end]), end);
        let mut sent = Vec::new();
        loop {
            let line = monitor.line();
            if line.contains(&ours) {
                if line.contains(&end) {
                    break;
                }
                continue;
            }
            if line.contains(" [0 lua] ") {
                continue;
            }
            // `+TIME [DB ADDR] "command" "argument" ...`
            let words: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
            let command = words.first().map_or(line.clone(), |c| c.to_lowercase());
            let script = scripts
                .iter()
                .find(|(sha, _)| words.get(1) == Some(&sha.as_str()));
            sent.push(match (command.as_str(), script) {
                ("evalsha", Some((_, script))) => format!("evalsha {script}"),
                _ => command,
            });
        }
        let stats = control.cmd(&["INFO", "commandstats"]);
        let scripts_run = stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .map(|l| {
                let calls = l.split(['=', ',']).nth(1).unwrap();
                calls.parse::<u64>().unwrap()
            })
            .sum();
        (sent, scripts_run)
    };

    const N: usize = 5;
    let one = vec!["evalsha reserve"];
    let cases = [
        ("limited", "a", Code::Allowed, &one),
        ("reads", "a", Code::Allowed, &one),
        ("sets", "b", Code::Allowed, &one),
        ("reads_and_sets", "c", Code::Allowed, &one),
        ("reads", "b", Code::ConditionFailed, &one),
        ("reads_and_sets", "b", Code::ConditionFailed, &one),
    ];
    for (tool, grant, code, per_call) in cases {
        let name = format!("{tool}-{grant}");
        let (sent, scripts_run) = count(&name, N, &mut || {
            let d = call(&e, tool, grant, None);
            assert_eq!(d.code, code, "{tool} for {grant}: {}", d.reason());
        });
        eprintln!(
            "{tool} ({grant}, {code:?}): {N} decisions, {scripts_run} scripts run, sent {sent:?}"
        );
        assert_eq!(sent, per_call.repeat(N), "{tool} for {grant}");
        assert_eq!(
            scripts_run,
            (per_call.len() * N) as u64,
            "{tool} for {grant}"
        );
    }
}

/// Marks set and read in every combination the conditions can take (alone, both, either,
/// a list that must hold one), each call also counting on one limit, with short ttls so
/// marks lapse as the clock moves.
const FLOWS: &str = r#"{"version": "1", "tools": {
    "set_a": {"limits": [{"counter": "L", "window": "1m", "max": 40, "scope": "grant"}],
              "marks": [{"name": "a", "scope": "grant", "ttl": "3s"}]},
    "set_b": {"marks": [{"name": "b", "scope": "grant", "ttl": "6s"}]},
    "not_a": {"limits": [{"counter": "L", "window": "1m", "max": 40, "scope": "grant"}],
              "deny_if": [{"path": "marks.a", "op": "exists"}]},
    "neither": {"limits": [{"counter": "M", "window": "3s", "max": 5, "scope": "grant"}],
                "deny_if": [{"any": [{"path": "marks.a", "op": "exists"},
                                     {"path": "marks.b", "op": "exists"}]}]},
    "b_not_both": {"limits": [{"counter": "L", "window": "1m", "max": 40, "scope": "grant"}],
                   "require": [{"path": "marks", "op": "contains", "value": "b"}],
                   "deny_if": [{"all": [{"path": "marks.a", "op": "exists"},
                                        {"path": "marks.b", "op": "exists"}]}],
                   "marks": [{"name": "c", "scope": "grant", "ttl": "3s"}]},
    "not_c": {"deny_if": [{"path": "marks.c", "op": "exists"}]}}}"#;

/// Marks on Redis decide as on the local table: for generated calls of tools that set and
/// read marks (the script, told which marks deny, reserves nothing for a call they deny),
/// every decision's verdict, code and limits are the same, and so are the counts that
/// later calls find, so a call its marks denied left nothing counted on either.
#[test]
fn marks_on_redis_decide_as_on_the_local_table() {
    let redis = RedisServer::start();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    let call_op = (0u64..2_500_000, 0usize..6, 0usize..2);
    let result = runner.run(&prop::collection::vec(call_op, 1..60), |calls| {
        let start = 1_700_000_000_000_000_000u64;
        let (lc, rc) = (
            Arc::new(ManualClock::new(start)),
            Arc::new(ManualClock::new(start)),
        );
        let local = engine(FLOWS, lc.clone());
        let prefix = format!("flows{}:", unique());
        let c = config(redis.url(), &prefix, TimeSource::Engine, Unavailable::Deny);
        let remote = redis_engine(FLOWS, rc.clone(), c);
        for (after_us, tool, grant) in calls {
            lc.advance_ns(after_us * 1000);
            rc.advance_ns(after_us * 1000);
            let tool = ["set_a", "set_b", "not_a", "neither", "b_not_both", "not_c"][tool];
            let grant = ["g", "h"][grant];
            let (l, r) = (
                call(&local, tool, grant, None),
                call(&remote, tool, grant, None),
            );
            same(&l, &r, false)?;
            prop_assert_eq!(l.reason(), r.reason(), "{} for {}", tool, grant);
            prop_assert_eq!(&l.marks, &r.marks);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Tool `a` counts on A (3 s windows), `b` on B (a minute), `ab` on both; windows are
/// whole multiples of 3 ms, so the table's nanosecond sub-buckets and the script's
/// microsecond ones are the same.
fn two_counters(max_a: u32, max_b: u32) -> String {
    format!(
        r#"{{"version": "1", "tools": {{
            "a": {{"limits": [{{"counter": "A", "window": "3s", "max": {max_a}, "scope": "grant"}}]}},
            "b": {{"limits": [{{"counter": "B", "window": "1m", "max": {max_b}, "scope": "grant"}}]}},
            "ab": {{"limits": [{{"counter": "A", "window": "3s", "max": {max_a}, "scope": "grant"}},
                               {{"counter": "B", "window": "1m", "max": {max_b}, "scope": "grant"}}]}}}}}}"#
    )
}

fn same(local: &Decision, remote: &Decision, cached: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(local.verdict, remote.verdict);
    prop_assert_eq!(local.code, remote.code);
    prop_assert_eq!(local.retry_after_ms, remote.retry_after_ms);
    prop_assert_eq!(local.limits.len(), remote.limits.len());
    for (l, r) in local.limits.iter().zip(&remote.limits) {
        prop_assert_eq!(l.remaining(), r.remaining());
        prop_assert_eq!(l.reset_in_ms, r.reset_in_ms);
    }
    if !cached {
        prop_assert_eq!(local.reservation.is_some(), remote.reservation.is_some());
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Call {
        after_us: u64,
        tool: usize,
        hits: Option<u32>,
    },
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..700_000, 0usize..3, prop::option::of(0u32..4))
            .prop_map(|(after_us, tool, hits)| Op::Call { after_us, tool, hits }),
        1 => (0usize..64).prop_map(Op::Release),
    ]
}

/// The exact-mode script decides as the local table does: verdict, code, retry-after,
/// every limit's room and reset, for generated limits, costs (hits), times and releases
/// (given back once) — so the table's guarantees (never over in any window, all or
/// nothing, exact retry-after; rust/core/tests) hold on Redis too.
#[test]
fn the_script_decides_as_the_local_table() {
    differential(Mode::Exact);
}

/// A lone replica in cached mode decides as the table does too (its own counts are always
/// in its copy, merged or not); what several replicas may overshoot is measured by
/// tests/test_redis.py.
#[test]
fn a_lone_cached_replica_decides_as_the_local_table() {
    differential(Mode::Cached {
        flush: Duration::from_millis(2),
    });
}

fn differential(mode: Mode) {
    let cached = mode != Mode::Exact;
    let redis = RedisServer::start();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    });
    let strategy = (1u32..6, 1u32..12, prop::collection::vec(op(), 1..80));
    let result = runner.run(&strategy, |(max_a, max_b, ops)| {
        let json = two_counters(max_a, max_b);
        let start = 1_700_000_000_000_000_000u64;
        let (lc, rc) = (
            Arc::new(ManualClock::new(start)),
            Arc::new(ManualClock::new(start)),
        );
        let local = engine(&json, lc.clone());
        let prefix = format!("prop{}:", unique());
        let mut c = config(redis.url(), &prefix, TimeSource::Engine, Unavailable::Deny);
        c.mode = mode;
        let remote = redis_engine(&json, rc.clone(), c);
        if cached {
            // The first merge, before which a cached replica does not decide.
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut held: Vec<(u64, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Call {
                    after_us,
                    tool,
                    hits,
                } => {
                    lc.advance_ns(after_us * 1000);
                    rc.advance_ns(after_us * 1000);
                    let tool = ["a", "b", "ab"][tool];
                    let (l, r) = (
                        call(&local, tool, "g", hits),
                        call(&remote, tool, "g", hits),
                    );
                    same(&l, &r, cached)?;
                    if cached && after_us % 3 == 0 {
                        // Let a merge happen in between, now and then.
                        std::thread::sleep(Duration::from_millis(3));
                    }
                    if let (Some(a), Some(b)) = (l.reservation, r.reservation) {
                        held.push((a, b));
                    }
                }
                Op::Release(i) if !held.is_empty() && !cached => {
                    let (a, b) = held[i % held.len()];
                    prop_assert_eq!(local.release(a), remote.release(b));
                }
                Op::Release(_) => {}
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn keys_carry_the_prefix_and_expire_after_their_window() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let e = redis_engine(
        &two_counters(5, 5),
        clock,
        config(
            redis.url(),
            "tenant-a:",
            TimeSource::Redis,
            Unavailable::Deny,
        ),
    );
    let d = call(&e, "ab", "g", None);
    assert_eq!(d.verdict, Verdict::Allow);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.client().get_connection().unwrap())
        .unwrap();
    assert!(keys.iter().all(|k| k.starts_with("tenant-a:")), "{keys:?}");
    for key in keys
        .iter()
        .filter(|k| k.starts_with("tenant-a:c:") || k.starts_with("tenant-a:r:"))
    {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query(&mut redis.client().get_connection().unwrap())
            .unwrap();
        // A minute, one sub-bucket (5 s) and a second of slack, at most.
        assert!(ttl > 0 && ttl <= 66_000, "{key}: {ttl}");
    }
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("tenant-a:c:")).count(),
        2
    );
    // Given back once, across engines: another "replica" on the same Redis releases it.
    let other = redis_engine(
        &two_counters(5, 5),
        Arc::new(ManualClock::new(0)),
        config(
            redis.url(),
            "tenant-a:",
            TimeSource::Redis,
            Unavailable::Deny,
        ),
    );
    let id = d.reservation.unwrap();
    assert!(other.release(id));
    assert!(!e.release(id));
    let _ = redis.cmd(&mut redis::cmd("PING"));
}

#[test]
fn two_replicas_racing_on_one_key_get_exactly_max() {
    let redis = RedisServer::start();
    let json = r#"{"version": "1", "tools": {"t": {"limits": [{"counter": "T", "window": "1m", "max": 37, "scope": "grant"}]}}}"#;
    let clock = Arc::new(ManualClock::new(0));
    let engines: Vec<Arc<Engine>> = (0..2)
        .map(|_| {
            Arc::new(redis_engine(
                json,
                clock.clone(),
                config(redis.url(), "race:", TimeSource::Redis, Unavailable::Deny),
            ))
        })
        .collect();
    let allowed: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let e = engines[i % 2].clone();
                s.spawn(move || {
                    (0..20)
                        .filter(|_| call(&e, "t", "g", None).verdict == Verdict::Allow)
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(allowed, 37);
}

#[test]
fn an_unreachable_redis_denies_or_counts_locally() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let json = r#"{"version": "1", "tools": {"t": {"limits": [{"counter": "T", "window": "1m", "max": 2, "scope": "grant"}]}}}"#;
    for (unavailable, expect) in [
        (Unavailable::Deny, [Code::StoreUnavailable; 3]),
        (
            Unavailable::Local,
            [Code::Allowed, Code::Allowed, Code::RateLimited],
        ),
    ] {
        let (builder, table) = builder(json, Arc::new(ManualClock::new(1_000_000_000)));
        let mut c = config(url.clone(), "x:", TimeSource::Redis, unavailable);
        c.timeout = Duration::from_millis(20);
        let store = RedisStore::connect(c, table, Duration::ZERO).unwrap();
        let e = builder.store(Arc::new(store)).build().unwrap();
        // (A decision that waited on the store forever would hang here: the store's timeout
        // is shown by speed in the benches, not by a clock in a test.)
        for code in expect {
            let d = call(&e, "t", "g", None);
            assert_eq!(d.code, code, "{unavailable:?}: {}", d.reason());
            if code == Code::StoreUnavailable {
                assert_eq!(d.verdict, Verdict::Deny);
                assert!(d.reason().contains("counter store"), "{}", d.reason());
            }
        }
        let errors: u64 = e.stats().store_errors().iter().map(|(_, n)| n).sum();
        assert!(errors >= 3);
        let fallbacks = e.stats().store_fallbacks();
        assert_eq!(
            fallbacks,
            if unavailable == Unavailable::Local {
                3
            } else {
                0
            }
        );
    }
}

#[test]
fn a_redis_that_lost_its_counts_refuses_for_one_window() {
    let redis = RedisServer::start();
    let json = r#"{"version": "1", "tools": {"t": {"limits": [{"counter": "T", "window": "3s", "max": 2, "scope": "grant"}]}}}"#;
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let e = redis_engine(
        json,
        clock.clone(),
        config(redis.url(), "lost:", TimeSource::Engine, Unavailable::Deny),
    );
    assert_eq!(call(&e, "t", "g", None).code, Code::Allowed);
    assert_eq!(call(&e, "t", "g", None).code, Code::Allowed);
    assert_eq!(call(&e, "t", "g", None).code, Code::RateLimited);
    // As a restart without persistence would: every count gone.
    redis.cmd(&mut redis::cmd("FLUSHALL"));
    clock.advance_ns(1_000_000_000);
    let d = call(&e, "t", "g", None);
    assert_eq!(d.code, Code::StoreUnavailable, "{}", d.reason());
    assert!(d.reason().contains("lost its counts"), "{}", d.reason());
    // A replica that never knew the old counts is told too.
    let fresh = redis_engine(
        json,
        clock.clone(),
        config(redis.url(), "lost:", TimeSource::Engine, Unavailable::Deny),
    );
    assert_eq!(call(&fresh, "t", "g", None).code, Code::StoreUnavailable);
    // One window and one sub-bucket after the loss, counting starts again.
    clock.advance_ns(3_250_000_000);
    assert_eq!(call(&e, "t", "g", None).code, Code::Allowed);
    assert_eq!(call(&fresh, "t", "g", None).code, Code::Allowed);
    assert_eq!(call(&e, "t", "g", None).code, Code::RateLimited);
}

/// A user's yes is used once across replicas that share the key and the store (exact mode):
/// both replicas racing with the same answer run the call once between them.
#[test]
fn a_confirmation_runs_once_across_replicas() {
    use toolgate_core::asking::confirmation::{Answer, Confirming};
    let redis = RedisServer::start();
    let json = r#"{"version": "1", "default": "allow", "tools": {"drop_db": {"action": "require_confirmation"}}}"#;
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let replicas: Vec<Arc<Engine>> = (0..2)
        .map(|_| {
            let c = config(
                redis.url(),
                "confirm:",
                TimeSource::Engine,
                Unavailable::Deny,
            );
            let e =
                redis_builder(json, clock.clone(), c).confirmation_secret(b"one deployment secret");
            Arc::new(e.build().unwrap())
        })
        .collect();
    let args = serde_json::json!({"name": "prod"});
    let decide = |e: &Engine, confirm: &Confirming| {
        e.decide(&Request {
            kind: Kind::Tool,
            name: "drop_db",
            server: None,
            subject: Subject {
                grant: Some("g"),
                ..Default::default()
            },
            args: Some(&args),
            dry_run: false,
            hits: None,
            confirm: Some(confirm),
        })
    };
    // One grant's confirmed calls are capped at a 64th of the 1,024-slot table: 16.
    for round in 0..12 {
        let asking = Confirming {
            can_ask: true,
            answer: None,
        };
        let asked = decide(&replicas[round % 2], &asking);
        assert_eq!(asked.code, Code::ConfirmationRequired);
        let Some(toolgate_core::decision::Confirmation::Asked { token, .. }) =
            asked.confirmation.as_deref()
        else {
            panic!("no question: {asked:?}");
        };
        let yes = Confirming {
            can_ask: true,
            answer: Some(Answer {
                token: token.clone(),
                yes: true,
            }),
        };
        let codes: Vec<Code> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (e, yes) = (&replicas[i % 2], &yes);
                    s.spawn(move || decide(e, yes).code)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            codes.iter().filter(|c| **c == Code::Allowed).count(),
            1,
            "round {round}: {codes:?}"
        );
        assert!(codes
            .iter()
            .all(|c| matches!(c, Code::Allowed | Code::ConfirmationInvalid)));
    }
}
