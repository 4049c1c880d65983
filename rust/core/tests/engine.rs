//! Engine-level properties: all-or-nothing reservation across limits, release, reload and
//! name matching, each against a small reference model.

use proptest::prelude::*;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::policy::matcher::NameMatcher;
use toolgate_core::Kind;
use toolgate_core::{Code, Engine, ManualClock, Policy, Request, Subject, Verdict};

fn engine(json: &str) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let policy = Policy::from_json_str(json).expect("valid policy");
    let engine = Engine::new(policy, Arc::new(CounterTable::new(256, 256)), clock.clone()).unwrap();
    (engine, clock)
}

fn call(engine: &Engine, tool: &str) -> toolgate_core::Decision {
    call_with(engine, tool, None)
}

/// A call of grant `g` with these arguments.
fn call_with(
    engine: &Engine,
    tool: &str,
    args: Option<&serde_json::Value>,
) -> toolgate_core::Decision {
    let subject = Subject {
        grant: Some("g"),
        ..Default::default()
    };
    engine.decide(&Request {
        kind: Kind::Tool,
        name: tool,
        server: None,
        subject,
        args,
        dry_run: false,
        hits: None,
        confirm: None,
    })
}

/// Tool `a` counts on A, `b` on B, `ab` on both.
fn two_counters(max_a: u32, max_b: u32) -> String {
    format!(
        r#"{{"version": "1", "tools": {{
            "a": {{"limits": [{{"counter": "A", "window": "hour", "max": {max_a}, "scope": "grant"}}]}},
            "b": {{"limits": [{{"counter": "B", "window": "hour", "max": {max_b}, "scope": "grant"}}]}},
            "ab": {{"limits": [{{"counter": "A", "window": "hour", "max": {max_a}, "scope": "grant"}},
                               {{"counter": "B", "window": "hour", "max": {max_b}, "scope": "grant"}}]}}}}}}"#
    )
}

proptest! {
    /// At one instant the answer is exact: a call is allowed iff every counter it touches has
    /// room, and a denied call consumes nothing on any counter.
    #[test]
    fn limits_are_reserved_all_or_nothing(max_a in 1u32..8, max_b in 1u32..8, picks in prop::collection::vec(0usize..3, 1..60)) {
        let (engine, _) = engine(&two_counters(max_a, max_b));
        let (mut used_a, mut used_b) = (0u32, 0u32);
        for pick in picks {
            let (tool, needs_a, needs_b) = [("a", true, false), ("b", false, true), ("ab", true, true)][pick];
            let fits = (!needs_a || used_a < max_a) && (!needs_b || used_b < max_b);
            let d = call(&engine, tool);
            prop_assert_eq!(d.verdict == Verdict::Allow, fits, "{} with A={}/{} B={}/{}", tool, used_a, max_a, used_b, max_b);
            if fits {
                used_a += needs_a as u32;
                used_b += needs_b as u32;
            } else {
                prop_assert_eq!(d.code, Code::RateLimited);
                prop_assert!(d.retry_after_ms.is_some());
            }
        }
    }

    /// Releasing gives back exactly what a reservation took, once.
    #[test]
    fn release_gives_back_exactly_once(max in 1u32..6, ops in prop::collection::vec((any::<bool>(), 0usize..16), 1..80)) {
        let (engine, _) = engine(&two_counters(max, max));
        let mut held: Vec<u64> = Vec::new();
        let mut released: Vec<u64> = Vec::new();
        for (reserve, index) in ops {
            if reserve || held.is_empty() {
                let d = call(&engine, "ab");
                prop_assert_eq!(d.verdict == Verdict::Allow, (held.len() as u32) < max);
                if let Some(id) = d.reservation {
                    held.push(id);
                }
            } else {
                let id = held.remove(index % held.len());
                prop_assert!(engine.release(id));
                released.push(id);
            }
            if let Some(id) = released.last() {
                prop_assert!(!engine.release(*id), "a second release gives nothing back");
            }
        }
    }

    /// Name matching agrees with a direct reading of the precedence rules.
    #[test]
    fn matcher_agrees_with_reference(
        patterns in prop::collection::vec("[ab_]{0,3}[*?]?[ab_]{0,2}", 1..12),
        names in prop::collection::vec("[ab_]{0,6}", 1..20),
    ) {
        let m = NameMatcher::new(patterns.iter().enumerate().map(|(i, p)| (p.as_str(), i))).unwrap();
        for name in &names {
            prop_assert_eq!(m.lookup(name).copied(), reference_match(&patterns, name), "{} in {:?}", name, patterns);
        }
    }
}

/// Exact name first; then longest literal prefix; then most literal characters; then the
/// first written.
fn reference_match(patterns: &[String], name: &str) -> Option<usize> {
    if let Some(i) = patterns
        .iter()
        .position(|p| !p.contains(['*', '?']) && p == name)
    {
        return Some(i);
    }
    let literal = |p: &str| p.chars().filter(|c| *c != '*' && *c != '?').count();
    let prefix = |p: &str| p.find(['*', '?']).unwrap_or(p.len());
    patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| p.contains(['*', '?']) && glob_match(p.as_bytes(), name.as_bytes()))
        .max_by(|(i, p), (j, q)| {
            prefix(p)
                .cmp(&prefix(q))
                .then(literal(p).cmp(&literal(q)))
                .then(j.cmp(i))
        })
        .map(|(i, _)| i)
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

#[test]
fn reload_keeps_counters_and_swaps_rules() {
    let (engine, _) = engine(&two_counters(3, 3));
    for _ in 0..3 {
        assert_eq!(call(&engine, "a").verdict, Verdict::Allow);
    }
    // Same counter A (same window and scope), a new max: the 3 calls still count.
    engine
        .reload(Policy::from_json_str(&two_counters(4, 3)).unwrap())
        .unwrap();
    assert_eq!(call(&engine, "a").verdict, Verdict::Allow);
    let d = call(&engine, "a");
    assert_eq!((d.verdict, d.code), (Verdict::Deny, Code::RateLimited));
    assert_eq!(d.limits[0].remaining(), 0.0);
}

#[test]
fn sliding_window_through_the_engine() {
    let (engine, clock) = engine(&two_counters(30, 30));
    for _ in 0..30 {
        assert_eq!(call(&engine, "a").verdict, Verdict::Allow);
    }
    let d = call(&engine, "a");
    assert_eq!(d.code, Code::RateLimited);
    let retry = d.retry_after_ms.unwrap();
    assert!((3_600_000..=3_900_000).contains(&retry), "{retry}");
    clock.advance_ns((retry - 1) * 1_000_000);
    assert_eq!(
        call(&engine, "a").code,
        Code::RateLimited,
        "not before retry-after"
    );
    clock.advance_ns(1_000_000);
    assert_eq!(
        call(&engine, "a").verdict,
        Verdict::Allow,
        "allowed at retry-after"
    );
}

/// Counter keys are made before the conditions run (so their slots can load meanwhile),
/// but a call the conditions deny is still answered by the condition, and a key that
/// cannot be made (no grant) is reported only for calls the conditions let through.
#[test]
fn a_condition_speaks_before_a_missing_scope_value() {
    let (engine, _) = engine(
        r#"{"version": "1", "tools": {"run": {
            "deny_if": [{"path": "args.command", "op": "regex", "value": "(^|\\s)rm\\s"}],
            "limits": [{"counter": "runs", "window": "minute", "max": 1, "scope": "grant"}]}}}"#,
    );
    let decide = |grant: Option<&str>, command: &str| {
        let args = serde_json::json!({ "command": command });
        engine.decide(&Request {
            kind: Kind::Tool,
            name: "run",
            server: None,
            subject: Subject {
                grant,
                ..Default::default()
            },
            args: Some(&args),
            dry_run: false,
            hits: None,
            confirm: None,
        })
    };
    assert_eq!(decide(None, "rm -rf /").code, Code::ConditionFailed);
    let d = decide(None, "ls /");
    assert_eq!(d.code, Code::InvalidRequest);
    assert!(d.reason().contains("names no grant"), "{}", d.reason());
    assert_eq!(decide(Some("g"), "rm -rf /").code, Code::ConditionFailed);
    assert_eq!(decide(Some("g"), "ls /").code, Code::Allowed);
    assert_eq!(decide(Some("g"), "ls /").code, Code::RateLimited);
}

/// Room left is counted in exact thousandths: a dry run of a 0.1 cost against 0.3 left says
/// 0.2 (subtracting the floats would say 0.19999999999999998).
#[test]
fn remaining_room_is_exact_to_a_thousandth() {
    let policy = r#"{"version": "1", "default": "deny", "tools": {"pay": {"limits": [
        {"counter": "spend", "window": "1h", "max": 0.3, "scope": "grant", "cost": "args.usd"}
    ]}}}"#;
    let (engine, _) = engine(policy);
    let args = serde_json::json!({"usd": 0.1});
    let decide = |dry_run| {
        engine.decide(&Request {
            kind: Kind::Tool,
            name: "pay",
            server: None,
            subject: Subject {
                grant: Some("g"),
                ..Default::default()
            },
            args: Some(&args),
            dry_run,
            hits: None,
            confirm: None,
        })
    };
    assert_eq!(decide(true).limits[0].remaining(), 0.2);
    assert_eq!(decide(false).limits[0].remaining(), 0.2);
    assert_eq!(decide(false).limits[0].remaining(), 0.1);
}

fn decide_args(engine: &Engine, tool: &str, args: &serde_json::Value) -> toolgate_core::Decision {
    engine.decide(&Request {
        kind: Kind::Tool,
        name: tool,
        server: None,
        subject: Subject {
            grant: Some("g"),
            ..Default::default()
        },
        args: Some(args),
        dry_run: false,
        hits: None,
        confirm: None,
    })
}

/// Where a path's key is missing but a case variant of it is present, a case-insensitive
/// decoder upstream (Go's `encoding/json` binding to a struct) reads a value the policy did
/// not see: every kind of condition, `exists` included, and a spend limit's cost deny. (A
/// variant beside the key itself never gets this far: the arguments' text is refused.)
#[test]
fn a_case_variant_of_a_path_is_never_read_as_missing() {
    let (engine, _) = engine(
        r#"{"version": "1", "tools": {
            "pay": {"deny_if": [{"path": "args.transfer.amount", "op": "gt", "value": 100}]},
            "push": {"deny_if": [{"path": "args.force", "op": "exists"}]},
            "push2": {"require": [{"not": {"path": "args.force", "op": "exists"}}]},
            "spend": {"limits": [{"counter": "s", "window": "day", "max": 1000,
                                  "scope": "grant", "cost": "args.amount"}]}}}"#,
    );
    let cases = [
        ("pay", serde_json::json!({"transfer": {"Amount": 5000}})),
        ("pay", serde_json::json!({"TRANSFER": {"amount": 5000}})),
        ("pay", serde_json::json!({"tranſfer": {"amount": 5000}})),
        ("push", serde_json::json!({"Force": true})),
        ("push2", serde_json::json!({"FORCE": true})),
        ("spend", serde_json::json!({"Amount": 5000})),
    ];
    for (tool, args) in cases {
        let d = decide_args(&engine, tool, &args);
        assert_eq!(d.verdict, Verdict::Deny, "{tool} {args}");
        assert!(
            d.reason().contains("only by case"),
            "{tool} {args}: {}",
            d.reason()
        );
    }
    // The exact spelling, and a key that is merely absent, decide as before.
    let ok = |tool, args| decide_args(&engine, tool, &args).verdict;
    assert_eq!(
        ok("pay", serde_json::json!({"transfer": {"amount": 5}})),
        Verdict::Allow
    );
    assert_eq!(
        ok("push", serde_json::json!({"other": true})),
        Verdict::Allow
    );
    assert_eq!(ok("push2", serde_json::json!({})), Verdict::Allow);
    assert_eq!(
        ok("spend", serde_json::json!({"amount": 5})),
        Verdict::Allow
    );
}

proptest! {
    /// Any respelling of a looked-up key by case (ASCII or Unicode) denies.
    #[test]
    fn any_case_respelling_denies(flips in prop::collection::vec(0usize..4, 6), level in 0usize..2) {
        let (engine, _) = engine(
            r#"{"version": "1", "tools": {"pay": {"require": [
                {"path": "args.outer.kind", "op": "eq", "value": "ok"}]}}}"#,
        );
        let respell = |word: &str| -> String {
            word.chars().zip(flips.iter().cycle()).map(|(c, f)| match (c, f) {
                ('k', 1) => '\u{212a}',
                ('s', 1) => 'ſ',
                (c, 2) => c.to_ascii_uppercase(),
                (c, _) => c,
            }).collect()
        };
        let (outer, kind) = if level == 0 {
            (respell("outer"), "kind".to_owned())
        } else {
            ("outer".to_owned(), respell("kind"))
        };
        prop_assume!(outer != "outer" || kind != "kind");
        let (o, k) = (outer.clone(), kind.clone());
        let args = serde_json::json!({o: {k: "ok"}});
        let d = decide_args(&engine, "pay", &args);
        prop_assert_eq!(d.code, Code::ConditionFailed, "{}", args);
        // The exact spelling beside the respelled one, in either order: the text is refused.
        let text = if level == 0 {
            format!(r#"{{"outer": {{"kind": "ok"}}, {}: {{"kind": "bad"}}}}"#, serde_json::json!(outer))
        } else {
            format!(r#"{{"outer": {{{}: "bad", "kind": "ok"}}}}"#, serde_json::json!(kind))
        };
        let refused = toolgate_core::json::args::parse_json_arguments(text.as_bytes());
        prop_assert!(
            refused.as_ref().is_err_and(|e| e.told.contains("could be read two ways")),
            "{} {:?}", text, refused
        );
    }

    /// An integer beyond 2^53 that a condition reads is never compared: JavaScript, and Go
    /// decoding into `any`, read it rounded. Whole arrays and objects compared with `eq` or
    /// `in` are refused when they hold one, or keys that fold alike.
    #[test]
    fn an_integer_beyond_2_53_is_never_compared(
        beyond in (1u64 << 53)..u64::MAX, negative in any::<bool>(), op in 0usize..7,
    ) {
        let (engine, _) = engine(
            r#"{"version": "1", "tools": {
                "lte": {"deny_if": [{"path": "args.n", "op": "gt", "value": 9007199254740992}]},
                "eq": {"deny_if": [{"path": "args.n", "op": "neq", "value": 1}]},
                "in": {"deny_if": [{"path": "args.n", "op": "not_in", "value": [1, 2]}]},
                "contains": {"deny_if": [{"path": "args.n", "op": "not_contains", "value": 1}]},
                "array": {"deny_if": [{"path": "args.n", "op": "neq", "value": [1]}]},
                "object": {"deny_if": [{"path": "args.n", "op": "neq", "value": {"a": 1}}]},
                "member": {"deny_if": [{"path": "args.n", "op": "not_in", "value": [{"a": 1}]}]}}}"#,
        );
        let n: serde_json::Value = if negative {
            serde_json::Value::from(-(beyond.min(i64::MAX as u64) as i64))
        } else {
            serde_json::Value::from(beyond)
        };
        let (tool, value) = match op {
            0 => ("lte", n.clone()),
            1 => ("eq", n.clone()),
            2 => ("in", n.clone()),
            3 => ("contains", serde_json::json!([1, n])),
            4 => ("array", serde_json::json!([n])),
            5 => ("object", serde_json::json!({"a": n})),
            _ => ("member", serde_json::json!({"a": 1, "A": 1})),
        };
        let args = serde_json::json!({"n": value});
        let d = decide_args(&engine, tool, &args);
        prop_assert_eq!(d.code, Code::ConditionFailed, "{} {}", tool, args);
        prop_assert!(d.reason().contains("read two ways"), "{}", d.reason());
    }
}

/// The same tools decide integers within 2^53, and objects without twin keys, as usual.
#[test]
fn integers_within_2_53_compare_as_usual() {
    let (engine, _) = engine(
        r#"{"version": "1", "tools": {
            "lte": {"deny_if": [{"path": "args.n", "op": "gt", "value": 9007199254740991}]},
            "object": {"deny_if": [{"path": "args.n", "op": "neq", "value": {"a": 1}}]}}}"#,
    );
    let verdict = |tool, args| decide_args(&engine, tool, &args).verdict;
    let max = 9_007_199_254_740_991_i64;
    assert_eq!(
        verdict("lte", serde_json::json!({"n": max})),
        Verdict::Allow
    );
    assert_eq!(
        verdict("lte", serde_json::json!({"n": -max})),
        Verdict::Allow
    );
    assert_eq!(
        verdict("object", serde_json::json!({"n": {"a": 1}})),
        Verdict::Allow
    );
    assert_eq!(
        verdict("object", serde_json::json!({"n": {"a": 2}})),
        Verdict::Deny
    );
}

/// A rate-limited call's reason, word for word: the counter, its room, window and scope, and
/// when to retry (or that the call's cost alone is over the limit).
#[test]
fn a_rate_limited_reason_says_what_is_full_and_when_to_retry() {
    let policy = r#"{"version": "1", "tools": {
        "a": {"limits": [{"counter": "runs", "max": 1, "window": 90, "scope": "grant"}]},
        "b": {"limits": [{"counter": "spend", "max": 5, "window": 86400, "scope": "grant",
                          "cost": "args.amount"}]}}}"#;
    let (engine, _) = engine(policy);
    assert_eq!(call(&engine, "a").code, Code::Allowed);
    let d = call(&engine, "a");
    assert_eq!(
        d.reason(),
        "rate limit \"runs\" reached: at most 1 calls per 90s per grant; retry in 95.0s"
    );
    let d = call_with(&engine, "b", Some(&serde_json::json!({"amount": 6})));
    assert_eq!(
        d.reason(),
        "rate limit \"spend\" reached: at most 5 per 1d per grant; this call's cost exceeds \
         the limit itself"
    );
}
