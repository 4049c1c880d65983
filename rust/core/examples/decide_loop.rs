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
//! does this per commit).

use serde_json::json;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::{Clock, Engine, Policy, Request, Subject, TscClock, Verdict};

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
    let engine = Engine::new(policy, table, Arc::new(TscClock::new())).expect("compiles");
    let args = json!({"command": "ls -la /var/log/nginx"});
    let subject = Subject {
        grant: Some("grant-1"),
        ..Default::default()
    };
    let request = Request {
        tool: "run_command",
        server: None,
        subject,
        args: Some(&args),
        dry_run: false,
        hits: None,
    };
    // The clock reads the kernel's time on every call until it has learned the TSC's rate
    // (10 ms); learn it first, so the counted loop sees only the steady state.
    let warm_up = std::time::Instant::now();
    while warm_up.elapsed() < std::time::Duration::from_millis(50) {
        std::hint::black_box(TscClock::new().now_ns());
    }
    assert_eq!(decide_all(&engine, &request, n), n);
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
