//! Policies for property tests (visibility.rs, list_judged_alike.rs): a top level and up to
//! two server sections (`s1`, `s2`), each with a default, now and then shadow mode, hidden
//! names, tool and prompt rules on names and globs, and an `all_tools` rule; rules allow,
//! deny or ask, with conditions on the caller (some nested in `any` and `not`), the arguments,
//! the server and the tool.

use proptest::prelude::*;
use serde_json::{json, Value};

/// The tools a listing or a call names.
pub const TOOLS: [&str; 7] = [
    "read",
    "write",
    "delete_all",
    "run",
    "secret_x",
    "x",
    "other",
];

/// The names and globs rules are written for.
pub const NAMES: [&str; 5] = ["read", "write", "delete_*", "run", "*"];

fn condition(i: usize) -> Value {
    [
        json!({"path": "subject.agent", "op": "eq", "value": "bot"}),
        json!({"path": "subject.agent", "op": "exists"}),
        json!({"path": "args.force", "op": "eq", "value": true}),
        json!({"path": "server", "op": "eq", "value": "s1"}),
        json!({"path": "tool", "op": "starts_with", "value": "de"}),
        json!({"any": [{"path": "args.x", "op": "eq", "value": 1},
                       {"path": "subject.agent", "op": "eq", "value": "a"}]}),
        json!({"not": {"path": "subject.session", "op": "exists"}}),
        json!({"path": "args.x", "op": "exists"}),
        json!({"path": "subject.attributes.team", "op": "exists"}),
        json!({"not": {"any": [{"path": "server", "op": "eq", "value": "s2"},
                               {"path": "subject.grant", "op": "eq", "value": "g2"}]}}),
    ][i]
        .clone()
}

/// A tool's rule, or (`prompt`) a prompt's, which only allows or denies and reads no tool.
fn rule(prompt: bool) -> impl Strategy<Value = Value> {
    let readable: Vec<usize> = (0..10).filter(|&i| !(prompt && i == 4)).collect();
    let conditions = move || prop::collection::vec(prop::sample::select(readable.clone()), 0..3);
    let actions: usize = if prompt { 2 } else { 3 };
    (
        0..actions,
        conditions(),
        conditions(),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(action, deny_if, require, shadow)| {
            let action = ["allow", "deny", "require_approval"][action];
            let mut r = json!({ "action": action });
            if !deny_if.is_empty() {
                r["deny_if"] = deny_if.into_iter().map(condition).collect();
            }
            if !require.is_empty() {
                r["require"] = require.into_iter().map(condition).collect();
            }
            if shadow {
                r["mode"] = "shadow".into();
            }
            r
        })
}

fn section() -> impl Strategy<Value = Value> {
    let names = || prop::sample::select(NAMES.to_vec());
    let rules = |n, prompt| prop::collection::btree_map(names(), rule(prompt), 0..n);
    let hide = prop::collection::vec(prop::sample::select(vec!["secret_*", "x", "run"]), 0..2);
    let all_tools = prop::option::weighted(0.4, rule(false));
    (
        any::<bool>(),
        prop::bool::weighted(0.1),
        hide,
        rules(4, false),
        rules(3, true),
        all_tools,
    )
        .prop_map(|(allow, shadow, hide, tools, prompts, all_tools)| {
            let default = if allow { "allow" } else { "deny" };
            let mut s = json!({"default": default, "tools": tools, "prompts": prompts});
            if shadow {
                s["mode"] = "shadow".into();
            }
            if !hide.is_empty() {
                s["hide"] = json!({"tools": hide.clone(), "prompts": hide});
            }
            if let Some(all) = all_tools {
                s["all_tools"] = all;
            }
            s
        })
}

/// A policy document.
pub fn policy() -> impl Strategy<Value = Value> {
    let sections = (
        section(),
        prop::option::of(section()),
        prop::option::of(section()),
    );
    sections.prop_map(|(mut root, s1, s2)| {
        root["version"] = "1".into();
        let mut servers = serde_json::Map::new();
        for (name, s) in [("s1", s1), ("s2", s2)] {
            if let Some(s) = s {
                servers.insert(name.into(), s);
            }
        }
        if !servers.is_empty() {
            root["servers"] = Value::Object(servers);
        }
        root
    })
}
