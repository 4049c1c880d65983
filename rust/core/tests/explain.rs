//! `explain` is the decision: for generated policies and call sequences, an engine that
//! records a trace decides exactly as one that does not, and the trace's steps say what the
//! decision was. Also what the trace says about precedence, conditions and limits.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::observing::explain::Recorder;
use toolgate_core::observing::stats::Api;
use toolgate_core::policy::matcher::NameMatcher;
use toolgate_core::Kind;
use toolgate_core::{Decision, Engine, ManualClock, Policy, Request, Subject};

const TOOLS: [&str; 7] = [
    "read_file",
    "read_dir",
    "delete_repo",
    "run",
    "pay",
    "x",
    "zzz",
];
const PATTERNS: [&str; 11] = [
    "read_file",
    "read_dir",
    "delete_repo",
    "run",
    "pay",
    "read_*",
    "*",
    "*_repo",
    "d?lete_*",
    "r[a-z]*",
    "re*d_f*",
];

/// Counters: each name always with the same window, max, scope and cost, as the loader wants.
fn counter(i: usize) -> Value {
    [
        json!({"counter": "c1", "window": "10s", "max": 3, "scope": "grant"}),
        json!({"counter": "c2", "window": "minute", "max": 2, "scope": "global"}),
        json!({"counter": "c3", "window": "1s", "max": 5.5, "scope": "session", "cost": "args.n"}),
        json!({"counter": "c4", "window": "hour", "max": 4, "scope": "agent"}),
        json!({"counter": "c5", "window": "2s", "max": 1, "scope": "server"}),
    ][i]
        .clone()
}

fn operand_for(op: &'static str) -> BoxedStrategy<Value> {
    let scalar = prop_oneof![
        (-3i64..12).prop_map(Value::from),
        Just(json!(2.5)),
        prop::sample::select(vec!["a", "abc", "red", "x", ""]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ];
    match op {
        "in" | "not_in" => prop::collection::vec(scalar, 0..3)
            .prop_map(Value::from)
            .boxed(),
        "lt" | "lte" | "gt" | "gte" => {
            prop_oneof![(-3i64..12).prop_map(Value::from), Just(json!(4.5))].boxed()
        }
        "regex" | "not_regex" => prop::sample::select(vec!["^a", "c$", "x", "(^|\\s)rm\\s"])
            .prop_map(Value::from)
            .boxed(),
        "glob" => prop::sample::select(vec!["a*", "*", "r?d"])
            .prop_map(Value::from)
            .boxed(),
        "starts_with" | "ends_with" => prop::sample::select(vec!["a", "re", "c", ""])
            .prop_map(Value::from)
            .boxed(),
        "exists" => any::<bool>().prop_map(Value::from).boxed(),
        _ => scalar.boxed(),
    }
}

fn compare() -> impl Strategy<Value = Value> {
    let path = prop::sample::select(vec![
        "args.n",
        "args.s",
        "args.list",
        "args.missing",
        "args.obj.k",
        "args.list[0]",
        "subject.grant",
        "subject.attributes.team",
        "tool",
        "server",
    ]);
    let op = prop::sample::select(vec![
        "eq",
        "neq",
        "in",
        "not_in",
        "lt",
        "lte",
        "gt",
        "gte",
        "regex",
        "not_regex",
        "glob",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
        "exists",
    ]);
    (path, op).prop_flat_map(|(path, op)| {
        operand_for(op).prop_map(move |value| json!({"path": path, "op": op, "value": value}))
    })
}

fn condition() -> impl Strategy<Value = Value> {
    compare().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"all": v})),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"any": v})),
            inner.prop_map(|c| json!({"not": c})),
        ]
    })
}

fn item() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => condition(),
        1 => (prop::collection::vec(condition(), 0..3), any::<bool>()).prop_map(|(c, msg)| {
            if msg {
                json!({"conditions": c, "on_deny": "not like that"})
            } else {
                json!({"conditions": c})
            }
        }),
    ]
}

fn rule() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "allow",
            "allow",
            "allow",
            "deny",
            "require_approval",
            "require_confirmation",
        ]),
        prop::option::weighted(0.2, any::<bool>()),
        prop::collection::vec(item(), 0..2),
        prop::collection::vec(item(), 0..2),
        prop::collection::btree_set(0usize..5, 0..3),
        any::<bool>(),
    )
        .prop_map(|(action, shadow, require, deny_if, limits, reason)| {
            let mut r = json!({"action": action});
            if let Some(shadow) = shadow {
                r["mode"] = if shadow { "shadow" } else { "enforce" }.into();
            }
            if !require.is_empty() {
                r["require"] = require.into();
            }
            if !deny_if.is_empty() {
                r["deny_if"] = deny_if.into();
            }
            if !limits.is_empty() {
                r["limits"] = limits.into_iter().map(counter).collect::<Vec<_>>().into();
            }
            if reason {
                r["reason"] = "because".into();
            }
            r
        })
}

fn section() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        prop::option::weighted(0.15, Just("shadow")),
        prop::collection::btree_set(prop::sample::select(PATTERNS.to_vec()), 0..3),
        prop::collection::btree_map(prop::sample::select(PATTERNS.to_vec()), rule(), 0..5),
        prop::option::of(rule()),
    )
        .prop_map(|(allow, mode, hide, tools, all_tools)| {
            let mut s = json!({
                "default": if allow { "allow" } else { "deny" },
                "hide": hide.into_iter().collect::<Vec<_>>(),
                "tools": tools,
            });
            if let Some(mode) = mode {
                s["mode"] = mode.into();
            }
            if let Some(all) = all_tools {
                s["all_tools"] = all;
            }
            s
        })
}

fn policy() -> impl Strategy<Value = Value> {
    (section(), prop::option::of(section())).prop_map(|(mut root, server)| {
        root["version"] = "1".into();
        if let Some(server) = server {
            root["servers"] = json!({"srv": server});
        }
        root
    })
}

#[derive(Debug, Clone)]
struct Call {
    tool: &'static str,
    server: Option<&'static str>,
    grant: Option<&'static str>,
    session: Option<&'static str>,
    agent: Option<&'static str>,
    team: bool,
    args: Option<Value>,
    dry_run: bool,
    advance_ms: u64,
}

fn args() -> impl Strategy<Value = Option<Value>> {
    let n = prop_oneof![
        (0i64..4).prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!(-1)),
        Just(json!("2")),
    ];
    let s = prop::sample::select(vec!["abc", "red", "x y", "rm -rf /"]).prop_map(Value::from);
    prop::option::weighted(
        0.8,
        (
            prop::option::of(n),
            prop::option::of(s),
            any::<bool>(),
            0u8..3,
        )
            .prop_map(|(n, s, list, extra)| {
                let mut a = serde_json::Map::new();
                if let Some(n) = n {
                    a.insert("n".into(), n);
                }
                if let Some(s) = s {
                    a.insert("s".into(), s);
                }
                if list {
                    a.insert("list".into(), json!(["a", 3, "red"]));
                }
                match extra {
                    1 => {
                        a.insert("obj".into(), json!({"k": "abc"}));
                    }
                    2 => {
                        a.insert("N".into(), json!(2));
                    }
                    _ => {}
                }
                Value::Object(a)
            }),
    )
}

fn call() -> impl Strategy<Value = Call> {
    (
        prop::sample::select(TOOLS.to_vec()),
        prop::option::of(prop::sample::select(vec!["srv", "other"])),
        prop::option::of(prop::sample::select(vec!["alice", "bob"])),
        prop::option::of(Just("s1")),
        prop::option::of(Just("a1")),
        any::<bool>(),
        args(),
        prop::bool::weighted(0.3),
        prop::sample::select(vec![0u64, 0, 300, 2_000, 11_000, 70_000]),
    )
        .prop_map(
            |(tool, server, grant, session, agent, team, args, dry_run, advance_ms)| Call {
                tool,
                server,
                grant,
                session,
                agent,
                team,
                args,
                dry_run,
                advance_ms,
            },
        )
}

fn engine(policy: &Value) -> Option<(Engine, Arc<ManualClock>)> {
    let policy = Policy::from_json_value(policy).ok()?;
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let table = Arc::new(CounterTable::new(1024, 1024));
    Some((Engine::new(policy, table, clock.clone()).ok()?, clock))
}

/// Decide `c`, recording a trace if `recorder` is given.
fn decide(engine: &Engine, c: &Call, recorder: Option<&mut Recorder>) -> Decision {
    let team = [("team", "red")];
    let subject = Subject {
        grant: c.grant,
        session: c.session,
        agent: c.agent,
        attributes: if c.team { &team } else { &[] },
        grant_verified: false,
        ..Subject::default()
    };
    let req = Request {
        kind: Kind::Tool,
        name: c.tool,
        server: c.server,
        subject,
        args: c.args.as_ref(),
        dry_run: c.dry_run,
        hits: None,
        confirm: None,
    };
    match recorder {
        Some(r) => engine.decide_traced(Api::Engine, &req, r),
        None => engine.decide(&req),
    }
}

fn recorder_for(c: &Call) -> Recorder {
    let subject = Subject {
        grant: c.grant,
        session: c.session,
        agent: c.agent,
        ..Default::default()
    };
    Recorder::new(&subject, c.server)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Two engines on one policy, one recording a trace of every call: the same decisions
    /// (verdict, code, rule, reason, retry, limit states, shadow), step after step, counters
    /// and all; and the trace ends in that decision.
    #[test]
    fn explain_decides_as_decide(doc in policy(), calls in prop::collection::vec(call(), 1..25)) {
        let loaded = engine(&doc);
        prop_assume!(loaded.is_some(), "the generated policy does not load");
        let (plain, plain_clock) = loaded.unwrap();
        let (traced, traced_clock) = engine(&doc).expect("the same policy loads twice");
        for c in &calls {
            plain_clock.advance_ns(c.advance_ms * 1_000_000);
            traced_clock.advance_ns(c.advance_ms * 1_000_000);
            let want = decide(&plain, c, None);
            let mut recorder = recorder_for(c);
            let got = decide(&traced, c, Some(&mut recorder));
            prop_assert_eq!(got.verdict, want.verdict, "{:?} on {}", c, doc);
            prop_assert_eq!(got.code, want.code);
            prop_assert_eq!(got.rule(), want.rule());
            prop_assert_eq!(got.reason(), want.reason());
            prop_assert_eq!(got.retry_after_ms, want.retry_after_ms);
            prop_assert_eq!(&got.limits, &want.limits);
            prop_assert_eq!(got.shadow, want.shadow);
            prop_assert_eq!(got.reservation.is_some(), want.reservation.is_some());

            let last = recorder.steps().last().expect("a decision step");
            prop_assert_eq!(&last["step"], "decision");
            prop_assert_eq!(&last["verdict"], want.verdict.as_str());
            prop_assert_eq!(&last["code"], want.code.as_str());
            prop_assert_eq!(&last["rule"], want.rule());
            // A limit group is reported complete: every limit with its count and fit.
            for step in recorder.steps().iter().filter(|s| s["step"] == "limits") {
                for limit in step["limits"].as_array().unwrap() {
                    prop_assert!(limit.get("fits").is_some(), "{}", step);
                    prop_assert!(limit.get("used").is_some(), "{}", step);
                }
            }
        }
    }

    /// What explain lists as matching, winner first, agrees with what the matcher picks.
    #[test]
    fn matching_lists_the_winner_first(
        patterns in prop::collection::btree_set(prop::sample::select(PATTERNS.to_vec()), 0..8),
        tool in prop::sample::select(TOOLS.to_vec()),
    ) {
        let patterns: Vec<&str> = patterns.into_iter().collect();
        let m = NameMatcher::new(patterns.iter().enumerate().map(|(i, p)| (*p, i))).unwrap();
        let all = m.matching(tool);
        prop_assert_eq!(all.first().map(|f| *f.value), m.lookup(tool).copied());
        prop_assert_eq!(all.first().copied(), m.find(tool));
        for p in &patterns {
            let matches = toolgate_core::policy::glob::compile(p).unwrap().is_match(tool);
            prop_assert_eq!(all.iter().any(|f| f.pattern == *p), matches, "{}", p);
        }
    }
}

fn explain(doc: &Value, c: &Call) -> (Decision, Vec<Value>) {
    let (engine, _) = engine(doc).expect("valid policy");
    let mut recorder = recorder_for(c);
    let d = decide(&engine, c, Some(&mut recorder));
    (d, recorder.into_steps())
}

fn simple(tool: &'static str) -> Call {
    Call {
        tool,
        server: None,
        grant: Some("alice"),
        session: None,
        agent: None,
        team: false,
        args: None,
        dry_run: true,
        advance_ms: 0,
    }
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no {name} step in {steps:#?}"))
}

#[test]
fn the_confirmation_step_says_who_is_asked_and_what_follows() {
    let doc = json!({"version": "1", "tools": {
        "drop": {"action": "require_confirmation"},
        "wipe": {"action": "require_confirmation", "confirmation": {"fallback": "approval"}}}});
    let (d, steps) = explain(&doc, &simple("drop"));
    assert_eq!(d.code.as_str(), "CONFIRMATION_UNAVAILABLE");
    let confirmation = step(&steps, "confirmation");
    assert_eq!(confirmation["rule"], "/tools/drop");
    assert_eq!(confirmation["can_ask"], false);
    assert!(confirmation["why"]
        .as_str()
        .unwrap()
        .contains("denies the call"));
    let (d, steps) = explain(&doc, &simple("wipe"));
    assert_eq!(d.code.as_str(), "APPROVAL_REQUIRED");
    let why = step(&steps, "confirmation")["why"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("asks an approver instead"), "{why}");
}

#[test]
fn the_rule_step_says_why_the_winner_won() {
    let doc = json!({"version": "1", "tools": {
        "*": {}, "delete_*": {}, "delete_user*": {}, "delete_user": {}, "d?lete_*": {}}});
    let (_, steps) = explain(&doc, &simple("delete_user"));
    let rule = step(&steps, "rule");
    assert_eq!(rule["matched"]["pattern"], "delete_user");
    assert_eq!(rule["matched"]["kind"], "exact");
    let others = rule["others"].as_array().unwrap();
    assert_eq!(others.len(), 4, "{rule:#}");
    assert!(others
        .iter()
        .all(|o| o["lost_because"] == "an exact name beats any glob"));

    let (_, steps) = explain(&doc, &simple("delete_users"));
    let rule = step(&steps, "rule");
    assert_eq!(rule["matched"]["pattern"], "delete_user*");
    assert_eq!(rule["matched"]["literal_prefix"], "delete_user");
    let lost: Vec<(&str, &str)> = rule["others"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["pattern"].as_str().unwrap(),
                o["lost_because"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lost,
        [
            (
                "delete_*",
                "its literal prefix \"delete_\" is shorter than \"delete_user\""
            ),
            (
                "d?lete_*",
                "its literal prefix \"d\" is shorter than \"delete_user\""
            ),
            (
                "*",
                "its literal prefix \"\" is shorter than \"delete_user\""
            ),
        ]
    );

    let doc = json!({"version": "1", "tools": {"a*": {}, "a*z": {}, "a*y": {}, "a?y": {}}});
    let (_, steps) = explain(&doc, &simple("aby"));
    let rule = step(&steps, "rule");
    assert_eq!(rule["matched"]["pattern"], "a*y");
    let lost: Vec<&str> = rule["others"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["lost_because"].as_str().unwrap())
        .collect();
    assert_eq!(
        lost,
        [
            "same literal prefix and literal characters, written later",
            "same literal prefix, fewer literal characters (1 < 2)"
        ]
    );
}

#[test]
fn the_section_hide_and_default_steps() {
    let doc = json!({"version": "1", "default": "deny", "hide": ["x", "delete_*"],
        "servers": {"srv": {"default": "allow", "tools": {}}}});
    let mut c = simple("delete_repo");
    let (d, steps) = explain(&doc, &c);
    assert_eq!(d.code.as_str(), "HIDDEN");
    assert_eq!(step(&steps, "section")["pointer"], "");
    assert_eq!(step(&steps, "hide")["matched"]["pointer"], "/hide/1");
    assert!(
        steps.iter().all(|s| s["step"] != "rule"),
        "hidden: nothing after"
    );

    c.tool = "zzz";
    let (_, steps) = explain(&doc, &c);
    assert_eq!(step(&steps, "rule")["default"], "deny");
    assert_eq!(step(&steps, "rule")["pointer"], "/default");

    c.server = Some("srv");
    let (d, steps) = explain(&doc, &c);
    assert_eq!(d.code.as_str(), "ALLOWED");
    let section = step(&steps, "section");
    assert_eq!(section["pointer"], "/servers/srv");
    assert_eq!(section["why"], "server \"srv\" has its own section");
    c.server = Some("other");
    let (_, steps) = explain(&doc, &c);
    assert!(step(&steps, "section")["why"]
        .as_str()
        .unwrap()
        .contains("no section of its own"));
}

#[test]
fn conditions_show_the_values_they_saw() {
    let doc = json!({"version": "1", "tools": {"pay": {
    "deny_if": [{"path": "args.s", "op": "regex", "value": "^rm"}],
    "require": [
        {"any": [{"path": "args.n", "op": "lt", "value": 10}, {"path": "subject.grant", "op": "eq", "value": "root"}]},
        {"conditions": [{"path": "args.currency", "op": "eq", "value": "USD"}], "on_deny": "USD only"}
    ]}}});
    let mut c = simple("pay");
    c.grant = Some("root");
    c.args = Some(json!({"s": "ls", "n": 12, "currency": "EUR"}));
    let (d, steps) = explain(&doc, &c);
    assert_eq!(d.code.as_str(), "CONDITION_FAILED");
    assert_eq!(d.reason(), "USD only");
    let conditions: Vec<&Value> = steps.iter().filter(|s| s["step"] == "condition").collect();
    assert_eq!(conditions.len(), 3, "{steps:#?}");
    assert_eq!(conditions[0]["list"], "deny_if");
    assert_eq!(conditions[0]["condition"]["seen"], "ls");
    assert_eq!(conditions[0]["result"], "fails");
    assert_eq!(conditions[0]["denies"], false);
    let any = &conditions[1]["condition"];
    assert_eq!(any["kind"], "any");
    assert_eq!(any["result"], "holds");
    assert_eq!(any["items"][0]["seen"], 12);
    assert_eq!(any["items"][0]["result"], "fails");
    assert_eq!(any["items"][1]["seen"], "root");
    assert_eq!(any["items"][1]["result"], "holds");
    assert_eq!(conditions[2]["on_deny"], "USD only");
    assert_eq!(conditions[2]["conditions"][0]["seen"], "EUR");
    assert_eq!(conditions[2]["denies"], true);

    // Unevaluable: the problem is said, and the missing value is absent.
    c.args = Some(json!({"s": 5}));
    let (_, steps) = explain(&doc, &c);
    let first = step(&steps, "condition");
    assert_eq!(first["result"], "unevaluable");
    assert_eq!(first["condition"]["present"], true);
    assert!(first["problem"].as_str().unwrap().contains("is a number"));
}

#[test]
fn limits_show_count_room_and_fit() {
    let doc = json!({"version": "1", "tools": {"pay": {"limits": [
        {"counter": "spend", "window": "hour", "max": 100, "scope": "grant", "cost": "args.n"},
        {"counter": "calls", "window": "minute", "max": 2, "scope": "grant"}]}}});
    let (engine, _) = engine(&doc).unwrap();
    let mut c = simple("pay");
    c.dry_run = false;
    c.args = Some(json!({"n": 30}));
    decide(&engine, &c, None);
    c.args = Some(json!({"n": 80}));
    let mut recorder = recorder_for(&c);
    let d = decide(&engine, &c, Some(&mut recorder));
    assert_eq!(d.code.as_str(), "RATE_LIMITED");
    let limits = step(recorder.steps(), "limits");
    assert_eq!(limits["failing"], 0);
    assert_eq!(limits["limits"][0]["used"], 30.0);
    assert_eq!(limits["limits"][0]["room"], 70.0);
    assert_eq!(limits["limits"][0]["amount"], 80.0);
    assert_eq!(limits["limits"][0]["fits"], false);
    assert_eq!(limits["limits"][0]["scope_value"], "alice");
    assert_eq!(limits["limits"][1]["used"], 1.0);
    assert_eq!(limits["limits"][1]["fits"], true);

    // A dry run: would fit, counts nothing.
    c.args = Some(json!({"n": 10}));
    c.dry_run = true;
    let mut recorder = recorder_for(&c);
    decide(&engine, &c, Some(&mut recorder));
    let limits = step(recorder.steps(), "limits");
    assert_eq!(limits["outcome"], "would fit (not counted)");
    assert_eq!(limits["limits"][0]["remaining"], 60.0);
    let mut recorder = recorder_for(&c);
    decide(&engine, &c, Some(&mut recorder));
    assert_eq!(step(recorder.steps(), "limits")["limits"][0]["used"], 30.0);
}
