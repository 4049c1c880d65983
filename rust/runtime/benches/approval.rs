//! What a `require_approval` call costs the deciding thread, with the sidecar's approvals
//! table.
//!
//! Run: `cargo bench -p toolgate-runtime --bench approval` (see bench/README.md).

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::counter::CounterTable;
use toolgate_core::Kind;
use toolgate_core::{Code, Engine, MonotonicClock, Policy, Request, Subject};
use toolgate_runtime::approvals::table::ApprovalTable;
use toolgate_runtime::approvals::Approvals;

fn decide_one(engine: &Engine, tool: &str, grant: &str, args: &Value) -> Code {
    engine
        .decide(&Request {
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
        })
        .code
}

/// What a `require_approval` call costs over a plain denial: the approval gate hashes the
/// call's canonical arguments and looks it up in the shared approvals table (under its
/// lock). `pending`: the same call again while its approval waits (the usual retry);
/// `deny`: a rule with `action: deny`, the reference.
fn approval(c: &mut Criterion) {
    let mut tools = serde_json::Map::new();
    tools.insert(
        "terminate".into(),
        json!({"action": "require_approval", "reason": "needs a human"}),
    );
    tools.insert("forbidden".into(), json!({"action": "deny"}));
    let doc = json!({"version": "1", "default": "deny", "tools": tools});
    let policy = Policy::from_json_str(&doc.to_string()).expect("bench policy is valid");
    let table = Arc::new(CounterTable::new(1 << 16, 1 << 16));
    // Events are drained by nobody here: a full queue drops news, as it may in production,
    // and only the first call of the case opens an approval anyway.
    let (approvals, _events) = Approvals::new(Arc::new(ApprovalTable::new(4096)), 16);
    let engine = Engine::builder(policy, table, Arc::new(MonotonicClock))
        .approvals(Arc::new(approvals))
        .build()
        .expect("compiles");
    let args = json!({"ids": ["i-0123456789abcdef0"], "region": "eu-west-1"});
    let mut g = c.benchmark_group("decide/approval");
    g.bench_function("deny", |b| {
        b.iter(|| {
            let code = decide_one(&engine, black_box("forbidden"), "bench-grant", &args);
            assert_eq!(code, Code::RuleDeny);
        })
    });
    g.bench_function("pending", |b| {
        b.iter(|| {
            let code = decide_one(&engine, black_box("terminate"), "bench-grant", &args);
            assert_eq!(code, Code::ApprovalRequired);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = approval
}
criterion_main!(benches);
