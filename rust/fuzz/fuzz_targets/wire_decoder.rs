//! The gRPC request messages on any bytes (toolgate.v1 Decide, DecideBatch and Release,
//! Envoy's Check and ShouldRateLimit): a response or a decode error, never a panic. The
//! first byte picks the method, the rest is the message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use toolgate_core::counter::CounterTable;
use toolgate_core::{Engine, ManualClock, Policy};
use toolgate_server::authz::{self, AuthzConfig};
use toolgate_server::{decider, ratelimit};

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let policy = Policy::from_json_str(include_str!("../../../examples/policy.json"))
        .expect("the example policy loads");
    let table = Arc::new(CounterTable::new(1 << 10, 1 << 10));
    Engine::new(policy, table, Arc::new(ManualClock::new(1_000_000_000_000))).unwrap()
});

fuzz_target!(|data: &[u8]| {
    let Some((&method, message)) = data.split_first() else {
        return;
    };
    let engine = &*ENGINE;
    let _ = match method % 5 {
        0 => decider::decide(engine, 1 << 16, message),
        1 => decider::decide_batch(engine, 1 << 16, message),
        2 => decider::release(engine, message),
        3 => authz::check_wire(engine, &AuthzConfig::default(), message),
        _ => ratelimit::should_rate_limit_wire(engine, message),
    };
});
