//! The policy loader on any text, as JSON and as YAML: never a panic; a policy that loads
//! compiles, and decides a call.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::Kind;
use toolgate_core::{Engine, ManualClock, Policy, Request, Subject};

fuzz_target!(|text: &str| {
    for loaded in [Policy::from_json_str(text), Policy::from_yaml_str(text)] {
        let Ok(policy) = loaded else { continue };
        let table = Arc::new(CounterTable::new(64, 64));
        let clock = Arc::new(ManualClock::new(1_000_000_000_000));
        let engine = Engine::new(policy, table, clock).expect("a loaded policy compiles");
        let args = serde_json::json!({"amount": 5, "path": "/tmp/x", "command": "ls"});
        let tools = ["create-ami", "transfer_funds", "delete_repo", "x"];
        for tool in tools {
            engine.decide(&Request {
                kind: Kind::Tool,
                name: tool,
                server: Some("seed"),
                subject: Subject {
                    grant: Some("g"),
                    session: Some("s"),
                    agent: Some("a"),
                    attributes: &[("team", "infra")],
                    ..Subject::default()
                },
                args: Some(&args),
                dry_run: false,
                hits: None,
                confirm: None,
            });
        }
    }
});
