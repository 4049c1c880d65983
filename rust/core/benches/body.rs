//! What one MCP request body costs the gate, by shape: a plain body against bodies built to
//! be slow to read (many keys, deep nesting, long escaped strings, many numbers, keys that
//! need Unicode folding), all of the same size. The gate must stay linear in the body's
//! size whatever its shape: the figure to watch is each shape's time over `plain_records`.
//!
//! Each iteration is one `mcp::check`: read the body strictly, decide the call, write the
//! answer. Every case first asserts what the gate does with its body (forward or refuse),
//! so a shape that is refused early is reported as such, not mistaken for a fast read.
//!
//! Run: `cargo bench -p toolgate-core --bench body` (`BODY_BYTES` sets the size; 1 MiB,
//! Envoy's `max_request_bytes` in the shipped configs, by default).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::counter::CounterTable;
use toolgate_core::engine::gate::{self, Gate, HttpCall};
use toolgate_core::json::strict;
use toolgate_core::observing::stats::Api;
use toolgate_core::{Engine, MonotonicClock, Policy, Subject};

fn engine() -> Engine {
    let policy = Policy::from_json_str(
        r#"{"version": "1", "default": "deny", "tools": {"write_file": {
            "deny_if": [{"path": "args.path", "op": "starts_with", "value": "/etc"}]}}}"#,
    )
    .expect("bench policy is valid");
    let table = Arc::new(CounterTable::new(1 << 10, 1 << 10));
    Engine::new(policy, table, Arc::new(MonotonicClock)).expect("bench policy compiles")
}

/// A `write_file` call whose `arguments.data` is `data` (JSON text), padded with spaces to
/// exactly `size` bytes.
fn call(data: &str, size: usize) -> Vec<u8> {
    let mut body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"write_file","arguments":{{"path":"/tmp/out","data":{data}}}}}}}"#
    )
    .into_bytes();
    assert!(
        body.len() <= size,
        "shape overshoots: {} > {size}",
        body.len()
    );
    let close = body.len() - 3;
    body.splice(close..close, std::iter::repeat_n(b' ', size - body.len()));
    body
}

/// Repeat `item(i)` separated by commas inside `open`/`close` until `budget` bytes.
fn fill(open: &str, close: &str, budget: usize, item: impl Fn(usize) -> String) -> String {
    let mut out = String::from(open);
    for i in 0.. {
        let next = item(i);
        if out.len() + next.len() + close.len() + 1 > budget {
            break;
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(&next);
    }
    out.push_str(close);
    out
}

/// `(name, data)`: the shapes, each as close to `budget` bytes as it gets.
fn shapes(budget: usize) -> Vec<(&'static str, String)> {
    let records = fill("[", "]", budget, |i| {
        format!(r#"{{"id":{i},"name":"item-{i}","price":12.5,"tags":["a","b"]}}"#)
    });
    let text = format!("\"{}\"", "lorem ipsum dolor sit amet ".repeat(budget / 28));
    let escapes = format!("\"{}\"", "\\u00e9\\n\\\"".repeat(budget / 12));
    let numbers = fill("[", "]", budget, |i| format!("-1.{i:015}e-{}", i % 300));
    let one_object = fill("{", "}", budget, |i| format!(r#""key{i}":0"#));
    // Upper-case ASCII keys: each is folded (lowered) to compare it with the others.
    let upper_keys = fill("{", "}", budget, |i| format!(r#""KEY{i}":0"#));
    let small_objects = fill("[", "]", budget, |i| {
        fill("{", "}", 200, |k| format!(r#""k{k}x{i}":1"#))
    });
    // Eight keys per object (compared in a list, not hashed), long and non-ASCII: the most
    // folding per byte.
    let folded_keys = fill("[", "]", budget, |i| {
        fill("{", "}", 400, |k| {
            format!("\"{}{k}x{i}\":1", "ſΣΚǅ".repeat(5))
        })
    });
    // The same with letters outside the Basic Multilingual Plane (Deseret, four bytes each),
    // whose folding is not in the BMP table.
    let folded_astral_keys = fill("[", "]", budget, |i| {
        fill("{", "}", 400, |k| {
            format!(
                "\"{}{k}x{i}\":1",
                "\u{10400}\u{10401}\u{10428}\u{10429}".repeat(3)
            )
        })
    });
    // 127 nested arrays (serde_json's limit is 128), side by side.
    let deep = fill("[", "]", budget, |_| {
        format!("{}0{}", "[".repeat(126), "]".repeat(126))
    });
    let keys_over_cap = fill("{", "}", budget, |i| format!(r#""k{i}":0"#));
    let values_over_cap = fill("[", "]", budget, |_| "0".into());
    vec![
        ("plain_records", records),
        ("long_text", text),
        ("escapes", escapes),
        ("numbers", numbers),
        ("one_object_many_keys", one_object),
        ("one_object_upper_keys", upper_keys),
        ("small_objects", small_objects),
        ("folded_keys", folded_keys),
        ("folded_astral_keys", folded_astral_keys),
        ("deep_nesting", deep),
        ("keys_over_cap", keys_over_cap),
        ("values_over_cap", values_over_cap),
    ]
}

fn check(engine: &Engine, body: &[u8]) -> Gate {
    check_in(engine, body, Subject::default(), None)
}

fn check_in(engine: &Engine, body: &[u8], subject: Subject, mcp_session: Option<&str>) -> Gate {
    gate::check(
        engine,
        &HttpCall {
            http_method: "POST",
            body,
            truncated: false,
            server: None,
            subject,
            mcp_method: None,
            mcp_name: None,
            resumes: false,
            mcp_session,
            api: Api::ExtAuthz,
        },
    )
}

/// What holding a session adds to a small allowed call: the read of who holds it.
fn sessions(c: &mut Criterion) {
    let engine = engine();
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/tmp/x"}}}"#;
    let alice = Subject {
        grant: Some("alice"),
        ..Subject::default()
    };
    let mut g = c.benchmark_group("session");
    for (name, session) in [
        ("none", None),
        ("held", Some("a1b2c3d4e5f60718293a4b5c6d7e8f90")),
    ] {
        assert!(matches!(
            check_in(&engine, body, alice, session),
            Gate::Forward { .. }
        ));
        g.bench_function(name, |b| {
            b.iter(|| check_in(&engine, black_box(body), alice, session))
        });
    }
    g.finish();
}

fn bodies(c: &mut Criterion) {
    let size: usize = std::env::var("BODY_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    let engine = engine();
    let mut g = c.benchmark_group("body");
    g.throughput(Throughput::Bytes(size as u64));
    for (name, data) in shapes(size - 200) {
        let body = call(&data, size);
        let outcome = match check(&engine, &body) {
            Gate::Forward { .. } => "forwarded".to_owned(),
            Gate::Answer { reply, .. } => {
                let text = String::from_utf8_lossy(&reply.body);
                format!("refused {}: {}", reply.status, &text[..text.len().min(160)])
            }
        };
        eprintln!("body/{name}: {} bytes, {outcome}", body.len());
        g.bench_function(name, |b| b.iter(|| check(&engine, black_box(&body))));
    }
    g.finish();
}

/// The strict reader beside serde_json reading the same bytes into a `Value` (the yardstick:
/// what reading JSON costs at all), by shape.
fn readers(c: &mut Criterion) {
    let size: usize = std::env::var("BODY_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    let mut g = c.benchmark_group("reader");
    g.throughput(Throughput::Bytes(size as u64));
    for (name, data) in shapes(size - 200) {
        let body = call(&data, size);
        if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
            continue;
        }
        g.bench_function(format!("{name}/serde_json"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)))
        });
        g.bench_function(format!("{name}/strict"), |b| {
            b.iter(|| strict::parse(black_box(&body)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = bodies, readers, sessions
}
criterion_main!(benches);
