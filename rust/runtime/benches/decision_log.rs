//! CPU per logged decision: what the deciding thread spends handing a decision to the
//! decision log, and what the process spends in all (the deciding thread and the log's
//! writer: formatting, hashing, writing).
//!
//! Each case decides calls of an allowed tool with every decision logged to `/dev/null`
//! (so the disk is not measured), by arguments: none, a small object, and a large one (1,000
//! keys of 100-byte strings, ~120 KB of JSON). Times are CPU times, not wall-clock: `thread`
//! is the deciding thread's (`CLOCK_THREAD_CPUTIME_ID`), `process` the whole process's
//! (`CLOCK_PROCESS_CPUTIME_ID`) up to the point every line is written, divided by the
//! decisions made.
//!
//! Run: `cargo bench -p toolgate-runtime --bench decision_log` (see bench/README.md).

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::counter::CounterTable;
use toolgate_core::observing::decision_log::Filter;
use toolgate_core::Kind;
use toolgate_core::{Code, Engine, MonotonicClock, Policy, Request, Subject};
use toolgate_runtime::decision_log::{DecisionLog, Settings};

fn engine() -> (Engine, Arc<DecisionLog>) {
    let doc = json!({"version": "1", "default": "deny", "tools": {"lookup": {}}});
    let policy = Policy::from_json_str(&doc.to_string()).expect("bench policy is valid");
    let table = Arc::new(CounterTable::new(1 << 16, 1 << 16));
    let log = DecisionLog::open(Settings {
        path: Some(PathBuf::from("/dev/null")),
        filter: Filter::All,
        rotate_bytes: 0,
        queue: 1 << 16,
        queue_bytes: 1 << 30,
        grant_key: vec![7; 32],
    })
    .expect("/dev/null opens");
    let log = Arc::new(log);
    let engine = Engine::builder(policy, table, Arc::new(MonotonicClock))
        .decision_log(log.clone())
        .build()
        .expect("compiles");
    (engine, log)
}

/// Decisions between waits for the writer: far fewer than the queue holds.
const BATCH: u64 = 256;

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn cases() -> Vec<(&'static str, Option<Value>)> {
    let large: serde_json::Map<String, Value> = (0..1000)
        .map(|i| (format!("key{i:04}"), Value::String("x".repeat(100))))
        .collect();
    vec![
        ("no_arguments", None),
        (
            "small_arguments",
            Some(json!({"query": "select 1", "limit": 10, "verbose": false})),
        ),
        ("large_arguments", Some(Value::Object(large))),
    ]
}

fn logged(c: &mut Criterion) {
    let (engine, log) = engine();
    let mut g = c.benchmark_group("decision_log");
    for (name, args) in cases() {
        let request = Request {
            kind: Kind::Tool,
            name: "lookup",
            server: None,
            subject: Subject {
                grant: Some("sk-bench"),
                ..Default::default()
            },
            args: args.as_ref(),
            dry_run: false,
            hits: None,
            confirm: None,
        };
        assert_eq!(engine.decide(&request).code, Code::Allowed);
        for (what, clock) in [
            ("thread", libc::CLOCK_THREAD_CPUTIME_ID),
            ("process", libc::CLOCK_PROCESS_CPUTIME_ID),
        ] {
            g.bench_function(format!("{name}/{what}"), |b| {
                b.iter_custom(|iters| {
                    assert!(log.sync(Duration::from_secs(60)));
                    let start = cpu_ns(clock);
                    for i in 1..=iters {
                        black_box(engine.decide(black_box(&request)));
                        // The writer is waited for now and then, so that nothing is ever
                        // dropped (a drop would skip the writer's work).
                        if i % BATCH == 0 {
                            assert!(log.sync(Duration::from_secs(60)));
                        }
                    }
                    assert!(log.sync(Duration::from_secs(60)));
                    let spent = cpu_ns(clock) - start;
                    assert_eq!(log.dropped(), 0, "the bench dropped lines");
                    Duration::from_nanos(spent)
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = logged
}
criterion_main!(benches);
