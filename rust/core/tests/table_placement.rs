//! Where keys land in the counter table cannot be chosen by a client: a key's hash is public
//! (fixed seeds, so replicas agree on Redis key names), but where its probe sequence starts is
//! keyed with the table's own random secret. Made-up credentials ground to share the public
//! hash's home slot with a trusted key (a `global` counter, a verified grant) therefore do not
//! fill that key's probe window, and the trusted key still finds room.

use std::sync::Arc;
use toolgate_core::counter::{CounterKey, CounterTable, Granularity};
use toolgate_core::{Engine, Kind, ManualClock, Policy, Request, Subject, Verdict};

const CAP: usize = 4096;
const MINUTE: u64 = 60_000;

/// A limit's key as the engine makes it (counter, window, scope; then the scope's value).
fn key(counter: &str, scope: &str, value: &str) -> CounterKey {
    let identity =
        CounterKey::identity(&[counter.as_bytes(), &MINUTE.to_le_bytes(), scope.as_bytes()]);
    CounterKey::new(
        identity,
        value.as_bytes(),
        Granularity::for_window_ms(MINUTE),
    )
}

fn decide(engine: &Engine, tool: &str, grant: &str, verified: bool) -> Verdict {
    let request = Request::<&serde_json::Value> {
        kind: Kind::Tool,
        name: tool,
        server: None,
        subject: Subject {
            grant: Some(grant),
            grant_verified: verified,
            ..Default::default()
        },
        args: None,
        dry_run: false,
        hits: None,
        confirm: None,
    };
    engine.decide(&request).verdict
}

/// 64 made-up tokens (a whole probe window) whose keys share `target`'s public home slot.
fn squatters(target: &CounterKey) -> Vec<String> {
    let home = target.hash as usize & (CAP - 1);
    (0u64..)
        .map(|i| format!("made-up-{i}"))
        .filter(|t| key("ami", "grant", t).hash as usize & (CAP - 1) == home)
        .take(64)
        .collect()
}

#[test]
fn keys_ground_to_one_home_do_not_lock_out_a_trusted_key() {
    let policy = Policy::from_json_str(
        r#"{"version": "1", "default": "deny", "tools": {
            "create-ami": {"limits": [{"counter": "ami", "window": "minute", "max": 9, "scope": "grant"}]},
            "pay": {"limits": [{"counter": "all_pay", "window": "minute", "max": 9, "scope": "global"}]},
            "vpay": {"limits": [{"counter": "vpay", "window": "minute", "max": 9, "scope": "grant"}]}}}"#,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let engine = Engine::new(policy, Arc::new(CounterTable::new(CAP, 1024)), clock).unwrap();
    let global = key("all_pay", "global", "");
    let bob = key("vpay", "grant", "https://idp.example.com bob");
    for target in [&global, &bob] {
        for token in squatters(target) {
            // An unauthenticated client: any bearer token is a grant of its own.
            assert_eq!(decide(&engine, "create-ami", &token, false), Verdict::Allow);
        }
    }
    assert_eq!(engine.table().client_slots(), 128);
    assert_eq!(decide(&engine, "pay", "alice", false), Verdict::Allow);
    assert_eq!(
        decide(&engine, "vpay", "https://idp.example.com bob", true),
        Verdict::Allow
    );
}
