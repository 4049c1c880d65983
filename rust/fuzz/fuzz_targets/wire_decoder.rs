//! The gRPC request messages on any bytes (toolgate.v1 Decide, DecideBatch and Release,
//! Envoy's Check and ShouldRateLimit), decoded as the server decodes them and answered: a
//! response or a decode error, never a panic. The first byte picks the method, the rest is
//! the message.
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::{Arc, LazyLock};
use toolgate_core::counter::CounterTable;
use toolgate_core::{Engine, ManualClock, Policy};
use toolgate_server::authz;
use toolgate_server::decider::{self, pb};
use toolgate_server::ratelimit;
use toolgate_server::subject::AuthzConfig;

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
    match method % 5 {
        0 => {
            if let Ok(req) = pb::DecideRequest::decode(message) {
                decider::decide_message(engine, 1 << 16, &req, None);
            }
        }
        1 => {
            if let Ok(req) = pb::DecideBatchRequest::decode(message) {
                decider::decide_batch_message(engine, 1 << 16, &req, None);
            }
        }
        2 => {
            if let Ok(req) = pb::ReleaseRequest::decode(message) {
                decider::release_message(engine, &req);
            }
        }
        3 => {
            if let Ok(req) = CheckRequest::decode(message) {
                authz::check(engine, &AuthzConfig::default(), &req);
            }
        }
        _ => {
            if let Ok(req) = RateLimitRequest::decode(message) {
                ratelimit::should_rate_limit(engine, &req);
            }
        }
    }
});
