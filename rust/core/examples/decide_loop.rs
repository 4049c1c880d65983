//! Decide N calls of the benchmark's main case (one limit + one regex condition), for
//! instruction counting under callgrind, which is repeatable on a busy machine:
//!
//! ```sh
//! cargo build --release -p toolgate-core --example decide_loop
//! valgrind --tool=callgrind --toggle-collect='decide_loop::decide_all' \
//!     --callgrind-out-file=/dev/null target/release/examples/decide_loop 20000
//! ```
//!
//! Instructions per decision = the instructions collected / N (`bench/instructions.sh`
//! does this per commit). It also prints the loop's time per decision, which
//! `bench/ab_loop.sh` compares between two builds taking turns.

use serde_json::json;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::{Engine, MonotonicClock, Policy, Request, Subject, Verdict};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let policy = json!({"version": "1", "default": "deny", "tools": {"run_command": {
        "deny_if": [{"path": "args.command", "op": "regex", "value": r"(^|\s)(rm|mkfs|dd)\s"}],
        "limits": [{"counter": "c", "window": "minute", "max": 1_000_000_000, "scope": "grant"}]
    }}});
    let policy = Policy::from_json_str(&policy.to_string()).expect("valid policy");
    let table = Arc::new(CounterTable::new(1 << 16, 1 << 16));
    let engine = Engine::new(policy, table, Arc::new(MonotonicClock)).expect("compiles");
    let args = json!({"command": "ls -la /var/log/nginx"});
    // Each thread decides for a grant of its own: different callers, one engine.
    let request = |grant| Request {
        tool: "run_command",
        server: None,
        subject: Subject {
            grant: Some(grant),
            ..Default::default()
        },
        args: Some(&args),
        dry_run: false,
        hits: None,
    };
    let grants: Vec<String> = (1..=8).map(|i| format!("grant-{i}")).collect();
    // DECIDE_THREADS=2: that many threads decide N calls each on the one engine, as a
    // sidecar's threads do, sharing its policy and counters.
    let threads: u64 = std::env::var("DECIDE_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .clamp(1, 8);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for grant in grants.iter().take(threads as usize).skip(1) {
            let (engine, request) = (&engine, request(grant));
            s.spawn(move || assert_eq!(decide_all(engine, &request, n), n));
        }
        assert_eq!(decide_all(&engine, &request(&grants[0]), n), n);
    });
    // For `bench/ab_loop.sh`: the loop's own time, without start-up (with
    // several threads, the wall time of each thread's N decisions).
    println!(
        "{:.1} ns per decision",
        start.elapsed().as_nanos() as f64 / n as f64
    );
}

/// The measured part: callgrind counts only inside it (`--toggle-collect`).
#[inline(never)]
fn decide_all(engine: &Engine, request: &Request<'_, &serde_json::Value>, n: u64) -> u64 {
    let mut allowed = 0u64;
    for _ in 0..n {
        allowed += (std::hint::black_box(engine.decide(request)).verdict == Verdict::Allow) as u64;
    }
    allowed
}
