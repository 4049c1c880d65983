//! Decision cost of the Rust core, without Python or a transport.
//!
//! Every case decides one call of a tool whose rule has one rate limit (scope `grant`,
//! `max` 1e9 per minute, so it never denies unless the case is about denying) and one
//! `deny_if` regex condition on `args.command`, except the `no_limit` references; the
//! `marks` cases add a session mark to that rule (read, or set); the `kinds` cases decide the
//! same rule for a tool, a resource and a prompt. Each
//! iteration is one `Engine::decide` on the real clock (`clock_gettime`), and includes
//! building and dropping the returned `Decision`; on the allow path it also writes a
//! reservation-log entry, as in production.
//!
//! Run: `cargo bench -p toolgate-core --bench decide` (see bench/README.md).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::{json, Value};
use std::cell::LazyCell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::counter::CounterTable;
use toolgate_core::Kind;
use toolgate_core::{Code, Engine, MonotonicClock, Policy, Request, Subject};

/// The regex condition every measured rule carries (the example policy's `run_command` one).
const REGEX: &str = r"(^|\s)(rm|mkfs|dd)\s";
/// A command the regex does not match, so the condition passes and the limit is consulted.
const SAFE_COMMAND: &str = "ls -la /var/log/nginx";
/// A command the regex matches: the call is denied by the condition.
const BAD_COMMAND: &str = "sudo rm -rf /";

/// Table size used unless a case needs a bigger one (the engine's default).
const CAPACITY: usize = 1 << 16;
const RESERVATIONS: usize = 1 << 16;

/// Active keys for the large-table case, and a table sized for them (load under 1/2).
const MANY_KEYS: usize = 1_000_000;
const MANY_KEYS_CAPACITY: usize = 1 << 21;

fn rule(counter: &str, max: u64) -> Value {
    json!({
        "deny_if": [{"path": "args.command", "op": "regex", "value": REGEX}],
        "limits": [{"counter": counter, "window": "minute", "max": max, "scope": "grant"}]
    })
}

fn policy(tools: serde_json::Map<String, Value>) -> Policy {
    let doc = json!({"version": "1", "default": "deny", "tools": tools});
    Policy::from_json_str(&doc.to_string()).expect("bench policy is valid")
}

fn engine(policy: Policy, capacity: usize) -> Engine {
    let table = Arc::new(CounterTable::new(capacity, RESERVATIONS));
    Engine::new(policy, table, Arc::new(MonotonicClock)).expect("bench policy compiles")
}

/// A policy with just `run_command`, carrying `rule`.
fn single(rule: Value) -> Policy {
    let mut tools = serde_json::Map::new();
    tools.insert("run_command".into(), rule);
    policy(tools)
}

fn request<'a>(tool: &'a str, grant: &'a str, args: &'a Value) -> Request<'a, &'a Value> {
    Request {
        kind: Kind::Tool,
        name: tool,
        server: None,
        subject: Subject {
            grant: Some(grant),
            ..Default::default()
        },
        args: Some(args),
        dry_run: false,
        hits: None,
        confirm: None,
    }
}

fn decide_one(engine: &Engine, tool: &str, grant: &str, args: &Value) -> Code {
    engine.decide(&request(tool, grant, args)).code
}

/// One limit + one regex, on the allow path and both deny paths.
fn one_limit_one_regex(c: &mut Criterion) {
    let safe = json!({"command": SAFE_COMMAND});
    let bad = json!({"command": BAD_COMMAND});
    let mut g = c.benchmark_group("decide/one_limit_one_regex");

    let allow = LazyCell::new(|| {
        let e = engine(single(rule("run_command_rate", 1_000_000_000)), CAPACITY);
        assert_eq!(decide_one(&e, "run_command", "g", &safe), Code::Allowed);
        assert_eq!(
            decide_one(&e, "run_command", "g", &bad),
            Code::ConditionFailed
        );
        e
    });
    g.bench_function("allow", |b| {
        let e = &*allow;
        b.iter(|| e.decide(black_box(&request("run_command", "g", &safe))))
    });

    // dry_run: the same checks, but the counter is only read (no CAS, no reservation log).
    g.bench_function("allow_dry_run", |b| {
        let e = &*allow;
        b.iter(|| {
            let mut req = request("run_command", "g", &safe);
            req.dry_run = true;
            e.decide(black_box(&req))
        })
    });

    // The regex matches: denied before any counter is touched.
    g.bench_function("deny_condition", |b| {
        let e = &*allow;
        b.iter(|| e.decide(black_box(&request("run_command", "g", &bad))))
    });

    // max 1 per minute, used up: every call is RATE_LIMITED (formats a reason, retry time).
    let limited = LazyCell::new(|| {
        let e = engine(single(rule("run_command_rate", 1)), CAPACITY);
        assert_eq!(decide_one(&e, "run_command", "g", &safe), Code::Allowed);
        assert_eq!(decide_one(&e, "run_command", "g", &safe), Code::RateLimited);
        e
    });
    g.bench_function("deny_rate_limited", |b| {
        let e = &*limited;
        b.iter(|| e.decide(black_box(&request("run_command", "g", &safe))))
    });
    g.finish();
}

/// References without a counter: a bare allow rule, and the regex alone.
fn no_limit(c: &mut Criterion) {
    let safe = json!({"command": SAFE_COMMAND});
    let mut g = c.benchmark_group("decide/no_limit");
    for (name, rule) in [
        ("bare", json!({})),
        (
            "one_regex",
            json!({"deny_if": [{"path": "args.command", "op": "regex", "value": REGEX}]}),
        ),
    ] {
        let e = LazyCell::new(|| {
            let e = engine(single(rule), CAPACITY);
            assert_eq!(decide_one(&e, "run_command", "g", &safe), Code::Allowed);
            e
        });
        g.bench_function(name, |b| {
            let e = &*e;
            b.iter(|| e.decide(black_box(&request("run_command", "g", &safe))))
        });
    }
    g.finish();
}

/// 1 active counter key vs 1,000,000, in the same 2^21-slot table (256 MiB of slots).
/// With 1M keys each decision goes to the next grant in turn; keys hash to scattered slots,
/// so the slot a decision touches is almost never in cache: this is the cache-miss-heavy
/// path. Filling the table (1M decisions) happens once, before measuring.
fn keys(c: &mut Criterion) {
    let safe = json!({"command": SAFE_COMMAND});
    let mut g = c.benchmark_group("decide/keys");

    let one = LazyCell::new(|| {
        let e = engine(
            single(rule("run_command_rate", 1_000_000_000)),
            MANY_KEYS_CAPACITY,
        );
        assert_eq!(decide_one(&e, "run_command", "g", &safe), Code::Allowed);
        e
    });
    g.bench_with_input(BenchmarkId::from_parameter(1), &1, |b, _| {
        let e = &*one;
        b.iter(|| e.decide(black_box(&request("run_command", "g", &safe))))
    });

    let grants: Vec<String> = (0..MANY_KEYS).map(|i| format!("grant-{i:07}")).collect();
    let many = LazyCell::new(|| {
        let e = engine(
            single(rule("run_command_rate", 1_000_000_000)),
            MANY_KEYS_CAPACITY,
        );
        for grant in &grants {
            assert_eq!(decide_one(&e, "run_command", grant, &safe), Code::Allowed);
        }
        assert_eq!(e.table().occupied(), MANY_KEYS as u64);
        e
    });
    g.bench_with_input(
        BenchmarkId::from_parameter(MANY_KEYS),
        &MANY_KEYS,
        |b, _| {
            let e = &*many;
            let mut i = 0;
            b.iter(|| {
                i += 1;
                if i == MANY_KEYS {
                    i = 0;
                }
                e.decide(black_box(&request("run_command", &grants[i], &safe)))
            })
        },
    );
    if let Some(e) = LazyCell::get(&many) {
        assert_eq!(
            e.table().occupied(),
            MANY_KEYS as u64,
            "the bench added no keys"
        );
    }
    g.finish();
}

/// A policy of `n` tools named by `name(i)`, each with its own limit and the regex.
fn many_tools(n: usize, name: impl Fn(usize) -> String) -> Policy {
    policy(
        (0..n)
            .map(|i| (name(i), rule(&format!("rate_{i:05}"), 1_000_000_000)))
            .collect(),
    )
}

/// 10 vs 10,000 tools in the policy, each with its own limit and the regex; the call names
/// the tool in the middle. Exact names (`tool_00042`) are one hash lookup; globs
/// (`tool_00042_*`: distinct literal prefixes, all of one length) are one prefix lookup and
/// one glob match.
fn tools(c: &mut Criterion) {
    let safe = json!({"command": SAFE_COMMAND});
    let mut g = c.benchmark_group("decide/tools");
    for n in [10usize, 10_000] {
        let tool = format!("tool_{:05}", n / 2);
        let e = LazyCell::new(|| {
            let e = engine(many_tools(n, |i| format!("tool_{i:05}")), CAPACITY);
            assert_eq!(decide_one(&e, &tool, "g", &safe), Code::Allowed);
            e
        });
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let e = &*e;
            b.iter(|| e.decide(black_box(&request(&tool, "g", &safe))))
        });
    }
    for n in [10usize, 10_000] {
        let tool = format!("tool_{:05}_run", n / 2);
        let e = LazyCell::new(|| {
            let e = engine(many_tools(n, |i| format!("tool_{i:05}_*")), CAPACITY);
            assert_eq!(decide_one(&e, &tool, "g", &safe), Code::Allowed);
            e
        });
        g.bench_with_input(BenchmarkId::new("globs", n), &n, |b, _| {
            let e = &*e;
            b.iter(|| e.decide(black_box(&request(&tool, "g", &safe))))
        });
    }

    // The matcher's worst case: literal prefixes of 20 different lengths (`x…x00042_*`), and
    // a long name matched by a glob with the shortest prefix, so the lookup tries every
    // prefix length (bounded by the name's length, not by the number of tools).
    let n = 10_000;
    let tool = format!("{:05}_{}", n / 2, "s".repeat(40));
    let e = LazyCell::new(|| {
        let e = engine(
            many_tools(n, |i| format!("{}{i:05}_*", "x".repeat(i % 20))),
            CAPACITY,
        );
        assert_eq!(decide_one(&e, &tool, "g", &safe), Code::Allowed);
        e
    });
    g.bench_with_input(
        BenchmarkId::new("globs_20_prefix_lengths", n),
        &n,
        |b, _| {
            let e = &*e;
            b.iter(|| e.decide(black_box(&request(&tool, "g", &safe))))
        },
    );
    g.finish();
}

/// What a session mark costs beside the same call without it: `reference` is
/// `one_limit_one_regex/allow`'s rule; `read_unset` adds a `deny_if` on `marks.tainted`
/// (scope `grant`), which the call's grant has not set, so it is allowed; `read_set` the
/// same call from a grant that set the mark (denied, `CONDITION_FAILED`, after the read);
/// `set` is the reference rule setting a mark when it allows (one unit more reserved, on the
/// mark's counter, in the same step as the limit).
fn marks(c: &mut Criterion) {
    let safe = json!({"command": SAFE_COMMAND});
    let mut g = c.benchmark_group("decide/marks");
    let mark = json!({"name": "tainted", "scope": "grant", "ttl": "1h"});
    let with = |extra: Value| {
        let mut r = rule("run_command_rate", 1_000_000_000);
        for (k, v) in extra.as_object().expect("an object") {
            match (r.get_mut(k), v) {
                (Some(Value::Array(have)), Value::Array(more)) => have.extend(more.clone()),
                _ => {
                    r[k] = v.clone();
                }
            }
        }
        r
    };

    let reference = LazyCell::new(|| {
        let e = engine(single(rule("run_command_rate", 1_000_000_000)), CAPACITY);
        assert_eq!(decide_one(&e, "run_command", "g", &safe), Code::Allowed);
        e
    });
    g.bench_function("reference", |b| {
        let e = &*reference;
        b.iter(|| e.decide(black_box(&request("run_command", "g", &safe))))
    });

    let reads = LazyCell::new(|| {
        let mut tools = serde_json::Map::new();
        tools.insert(
            "run_command".into(),
            with(json!({"deny_if": [{"path": "marks.tainted", "op": "exists"}]})),
        );
        tools.insert("taint".into(), json!({"marks": [mark]}));
        let e = engine(policy(tools), CAPACITY);
        assert_eq!(decide_one(&e, "run_command", "g", &safe), Code::Allowed);
        assert_eq!(decide_one(&e, "taint", "t", &safe), Code::Allowed);
        assert_eq!(
            decide_one(&e, "run_command", "t", &safe),
            Code::ConditionFailed
        );
        e
    });
    g.bench_function("read_unset", |b| {
        let e = &*reads;
        b.iter(|| e.decide(black_box(&request("run_command", "g", &safe))))
    });
    g.bench_function("read_set", |b| {
        let e = &*reads;
        b.iter(|| e.decide(black_box(&request("run_command", "t", &safe))))
    });

    let sets = LazyCell::new(|| {
        let e = engine(single(with(json!({"marks": [mark]}))), CAPACITY);
        let d = e.decide(&request("run_command", "g", &safe));
        assert_eq!(d.code, Code::Allowed);
        let set = d.marks.expect("the decision reports its marks").set;
        assert_eq!(set, vec![std::sync::Arc::<str>::from("tainted")]);
        e
    });
    g.bench_function("set", |b| {
        let e = &*sets;
        b.iter(|| e.decide(black_box(&request("run_command", "g", &safe))))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The same rule (one limit, one regex on an argument, an exact key) for a tool's call, a
/// resource's read and a prompt's get: what a request costs by what it names.
fn kinds(c: &mut Criterion) {
    let rule = |counter: &str, path: &str| {
        json!({
            "deny_if": [{"path": path, "op": "regex", "value": REGEX}],
            "limits": [{"counter": counter, "window": "minute", "max": 1_000_000_000, "scope": "grant"}]
        })
    };
    let doc = json!({"version": "1", "default": "deny",
        "tools": {"run_command": rule("tool_rate", "args.command")},
        "resources": {"file:///srv/run": rule("resource_rate", "args.uri")},
        "prompts": {"run_command": rule("prompt_rate", "args.command")}});
    let e = engine(Policy::from_json_str(&doc.to_string()).unwrap(), CAPACITY);
    let command = json!({"command": SAFE_COMMAND});
    let read = json!({"uri": "file:///srv/run"});
    let cases = [
        ("tool", Kind::Tool, "run_command", &command),
        ("resource", Kind::Resource, "file:///srv/run", &read),
        ("prompt", Kind::Prompt, "run_command", &command),
    ];
    let mut g = c.benchmark_group("decide/kinds");
    for (label, kind, name, args) in cases {
        let req = Request {
            kind,
            ..request(name, "g", args)
        };
        assert_eq!(e.decide(&req).code, Code::Allowed, "{label}");
        g.bench_function(label, |b| b.iter(|| e.decide(black_box(&req))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = one_limit_one_regex, no_limit, keys, tools, marks, kinds
}
criterion_main!(benches);
