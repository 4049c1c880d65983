//! Grants a server vouched for take the counter table's trusted room once the share of keys
//! a client chose runs short: a flood of made-up credentials then keeps no real caller from
//! being counted. Nothing a client sends vouches; without the sidecar trusting servers'
//! answers, nothing does.

use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::{Code, Engine, Kind, ManualClock, Policy, Request, Subject};

/// An engine whose sidecar trusts servers' answers or not.
fn engine(trusted: bool) -> Arc<Engine> {
    let policy = json!({"version": "1", "default": "deny", "tools": {"t": {
        "limits": [{"counter": "t", "window": "day", "max": 5, "scope": "grant"}]}}});
    let policy = Policy::from_json_str(&policy.to_string()).unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    // 64 slots: 32 for keys a client chose.
    let builder = Engine::builder(policy, Arc::new(CounterTable::new(64, 64)), clock);
    let builder = match trusted {
        true => builder.trust_server_answers(),
        false => builder,
    };
    Arc::new(builder.build().unwrap())
}

fn call(e: &Engine, grant: &str) -> Code {
    e.decide::<&serde_json::Value>(&Request {
        kind: Kind::Tool,
        name: "t",
        server: None,
        subject: Subject {
            grant: Some(grant),
            ..Subject::default()
        },
        args: None,
        dry_run: false,
        hits: None,
        confirm: None,
    })
    .code
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// However many made-up grants came first, a vouched grant is counted (and held to its
    /// limit), while a grant nothing vouched for is refused once the share is full.
    #[test]
    fn a_vouched_grant_is_counted_past_a_flood(flood in 32usize..120, trusted in any::<bool>()) {
        let e = engine(trusted);
        for n in 0..flood {
            let expected = if n < 32 { Code::Allowed } else { Code::RateLimited };
            prop_assert_eq!(call(&e, &format!("made-up-{n}")), expected);
        }
        prop_assert_eq!(e.table().client_slots(), 32);
        // A client's own word vouches for nothing: only the server's answer does.
        prop_assert_eq!(e.vouch_for("real"), trusted);
        let expected = if trusted { Code::Allowed } else { Code::RateLimited };
        for _ in 0..5 {
            prop_assert_eq!(call(&e, "real"), expected);
        }
        if trusted {
            prop_assert_eq!(call(&e, "real"), Code::RateLimited, "held to its limit");
        }
        prop_assert_eq!(call(&e, "never-vouched"), Code::RateLimited);
        prop_assert_eq!(e.table().client_slots(), 32);
    }
}
