//! Loading policies: PolicyLayer's example policies, every feature, and every kind of
//! validation error with its exact pointer and line.

use proptest::prelude::*;
use serde_json::{json, Value};
use toolgate_core::policy::source::{parse_json, parse_yaml};
use toolgate_core::policy::{
    Action, Condition, ConditionItem, DefaultAction, Mode, Op, PathRoot, Policy, PolicyError, Rule,
    Scope, Segment,
};

// --- PolicyLayer's example policies -------------------------------------------------------

mod policylayer;
use policylayer::EXAMPLES as POLICYLAYER_EXAMPLES;

/// The same policy as one of PolicyLayer's examples, written as YAML by hand.
fn example_as_yaml(tool: &str, counter: &str, max: u32) -> String {
    format!(
        "# recommended rule for {tool}
version: \"1\"
default: deny
tools:
  {tool}:
    limits:
      - counter: {counter}
        window: minute
        max: {max}
        scope: grant
"
    )
}

#[test]
fn every_policylayer_example_loads_unchanged() {
    for (text, tool, counter, max) in POLICYLAYER_EXAMPLES {
        let policy = Policy::from_json_str(text).unwrap_or_else(|e| panic!("{tool}: {e}"));
        let root = &policy.root;
        assert_eq!(root.pointer, "");
        assert_eq!(root.default, DefaultAction::Deny);
        assert_eq!(root.mode, Mode::Enforce);
        assert!(
            root.hide.tools.is_empty() && root.all_tools.is_none() && policy.servers.is_empty()
        );
        assert_eq!(root.tools.len(), 1);
        let (name, rule) = &root.tools[0];
        assert_eq!(name.text, tool);
        assert_eq!(name.pointer, format!("/tools/{tool}"));
        assert!(!name.is_glob());
        assert_eq!(rule.pointer, format!("/tools/{tool}"));
        assert_eq!(
            rule.action,
            Action::Allow,
            "a listed tool without action is allowed"
        );
        assert_eq!(rule.limits.len(), 1);
        let limit = &rule.limits[0];
        assert_eq!(limit.pointer, format!("/tools/{tool}/limits/0"));
        assert_eq!(limit.counter, counter);
        assert_eq!(limit.window_ms, 60_000);
        assert_eq!(limit.max, f64::from(max));
        assert_eq!(limit.scope, Scope::Grant);
        assert!(limit.cost.is_none());
        assert_eq!(policy.revision.len(), 16);
    }
}

#[test]
fn policylayer_examples_in_yaml_load_to_the_same_model() {
    for (text, tool, counter, max) in POLICYLAYER_EXAMPLES {
        let from_json = Policy::from_json_str(text).unwrap();
        let from_yaml = Policy::from_yaml_str(&example_as_yaml(tool, counter, max)).unwrap();
        // The model has no PartialEq (it holds compiled regexes); Debug shows every field.
        assert_eq!(format!("{from_json:?}"), format!("{from_yaml:?}"));
        assert_eq!(from_json.revision, from_yaml.revision);
    }
    let revisions: std::collections::HashSet<_> = POLICYLAYER_EXAMPLES
        .iter()
        .map(|(text, ..)| Policy::from_json_str(text).unwrap().revision)
        .collect();
    assert_eq!(
        revisions.len(),
        POLICYLAYER_EXAMPLES.len(),
        "different policies, different revisions"
    );
}

// --- every feature -----------------------------------------------------------------------------

const FULL_JSON: &str = r#"{
  "version": "1",
  "default": "allow",
  "mode": "shadow",
  "hide": ["internal_*", "debug", "rm[0-9]"],
  "all_tools": {
    "limits": [{"counter": "all_calls", "window": "second", "max": 100, "scope": "session"}]
  },
  "tools": {
    "github.*": {
      "action": "allow",
      "reason": "github is fine",
      "mode": "enforce",
      "limits": [
        {"counter": "gh_minute", "window": "minute", "max": 30, "scope": "grant"},
        {"counter": "gh_hour", "window": "hour", "max": 500, "scope": "agent"},
        {"counter": "gh_day", "window": "day", "max": 5000, "scope": "server"},
        {"counter": "gh_seconds", "window": 90, "max": 40.0},
        {"counter": "gh_fraction", "window": 0.5, "max": 5, "scope": "global"},
        {"counter": "gh_compound", "window": "1h30m", "max": 200, "scope": "session"},
        {"counter": "gh_millis", "window": "500ms", "max": 2}
      ]
    },
    "transfer_funds": {
      "action": "require_approval",
      "reason": "money moves",
      "approval": {"timeout": "10m", "approvers": ["finance", "ops"]},
      "limits": [
        {"counter": "spend", "window": "day", "max": 500.5, "scope": "agent", "cost": "args.amount"}
      ],
      "require": [
        {"path": "args.amount", "op": "gt", "value": 0},
        {"path": "args.amount", "op": "lte", "value": 10000},
        {"path": "args.currency", "op": "in", "value": ["USD", "EUR"]},
        {"conditions": [{"path": "subject.attributes.team", "op": "eq", "value": "finance"}],
         "on_deny": "Only finance may transfer."}
      ],
      "deny_if": [
        {"path": "args.memo", "op": "regex", "value": "(?i)bitcoin"},
        {"any": [
          {"path": "args.to", "op": "starts_with", "value": "ext-"},
          {"path": "args.to", "op": "ends_with", "value": ".xyz"}
        ]},
        {"conditions": [], "on_deny": "Requires human approval."},
        {"conditions": [{"path": "args.amount", "op": "gte", "value": 5000}]}
      ]
    },
    "delete_*": {"action": "deny", "reason": "no deletes"},
    "a/b~c*": {}
  },
  "servers": {
    "fs": {
      "version": "1",
      "default": "deny",
      "hide": ["write_*"],
      "all_tools": {
        "mode": "shadow",
        "limits": [{"counter": "fs_calls", "window": "90s", "max": 60}]
      },
      "tools": {
        "read_file": {
          "require": [
            {"path": "args.path", "op": "not_regex", "value": "^/etc/"},
            {"path": "args.path", "op": "glob", "value": "/home/*/docs/*"},
            {"path": "args[\"key.with.dots\"]", "op": "neq", "value": null},
            {"path": "args.items[0].name", "op": "contains", "value": "x"},
            {"path": "args.tags", "op": "not_contains", "value": 3},
            {"path": "args.kind", "op": "not_in", "value": ["secret"]},
            {"path": "args.size", "op": "lt", "value": 1048576},
            {"path": "args.size", "op": "gte", "value": 0.5},
            {"all": [
              {"path": "args.force", "op": "exists"},
              {"path": "args.force", "op": "eq", "value": true}
            ]},
            {"not": {"path": "args.dry_run", "op": "exists", "value": false}},
            {"path": "subject.grant", "op": "neq", "value": "revoked"},
            {"path": "subject.session", "op": "exists"},
            {"path": "subject.agent", "op": "glob", "value": "agent-?"},
            {"path": "server", "op": "eq", "value": "fs"},
            {"path": "tool", "op": "starts_with", "value": "read"}
          ]
        }
      }
    }
  }
}"#;

/// `FULL_JSON` in YAML, mixing block and flow styles, with keys in the same order.
const FULL_YAML: &str = r#"
# every feature of policy language v1
version: "1"
default: allow
mode: shadow
hide:
  - internal_*
  - debug
  - "rm[0-9]"
all_tools:
  limits:
    - {counter: all_calls, window: second, max: 100, scope: session}
tools:
  github.*:
    action: allow
    reason: github is fine
    mode: enforce
    limits:
      - counter: gh_minute
        window: minute
        max: 30
        scope: grant
      - {counter: gh_hour, window: hour, max: 500, scope: agent}
      - {counter: gh_day, window: day, max: 5000, scope: server}
      - {counter: gh_seconds, window: 90, max: 40.0}
      - {counter: gh_fraction, window: 0.5, max: 5, scope: global}
      - {counter: gh_compound, window: 1h30m, max: 200, scope: session}
      - {counter: gh_millis, window: 500ms, max: 2}
  transfer_funds:
    action: require_approval
    reason: money moves
    approval:
      timeout: 10m
      approvers: [finance, ops]
    limits:
      - counter: spend
        window: day
        max: 500.5
        scope: agent
        cost: args.amount
    require:
      - {path: args.amount, op: gt, value: 0}
      - {path: args.amount, op: lte, value: 10000}
      - {path: args.currency, op: in, value: [USD, EUR]}
      - conditions:
          - {path: subject.attributes.team, op: eq, value: finance}
        on_deny: Only finance may transfer.
    deny_if:
      - path: args.memo
        op: regex
        value: '(?i)bitcoin'
      - any:
          - {path: args.to, op: starts_with, value: ext-}
          - {path: args.to, op: ends_with, value: .xyz}
      - conditions: []
        on_deny: Requires human approval.
      - conditions:
          - {path: args.amount, op: gte, value: 5000}
  delete_*: {action: deny, reason: no deletes}
  a/b~c*: {}
servers:
  fs:
    version: '1'
    default: deny
    hide: [write_*]
    all_tools:
      mode: shadow
      limits: [{counter: fs_calls, window: 90s, max: 60}]
    tools:
      read_file:
        require:
          - {path: args.path, op: not_regex, value: ^/etc/}
          - {path: args.path, op: glob, value: /home/*/docs/*}
          - {path: 'args["key.with.dots"]', op: neq, value: null}
          - {path: "args.items[0].name", op: contains, value: x}
          - {path: args.tags, op: not_contains, value: 3}
          - {path: args.kind, op: not_in, value: [secret]}
          - {path: args.size, op: lt, value: 1048576}
          - {path: args.size, op: gte, value: 0.5}
          - all:
              - {path: args.force, op: exists}
              - {path: args.force, op: eq, value: true}
          - not: {path: args.dry_run, op: exists, value: false}
          - {path: subject.grant, op: neq, value: revoked}
          - {path: subject.session, op: exists}
          - {path: subject.agent, op: glob, value: agent-?}
          - {path: server, op: eq, value: fs}
          - {path: tool, op: starts_with, value: read}
"#;

fn tool<'p>(tools: &'p [(toolgate_core::policy::NamePattern, Rule)], name: &str) -> &'p Rule {
    &tools
        .iter()
        .find(|(n, _)| n.text == name)
        .unwrap_or_else(|| panic!("no tool {name}"))
        .1
}

fn compare(c: &Condition) -> &toolgate_core::policy::Compare {
    match c {
        Condition::Compare(c) => c,
        other => panic!("expected a comparison, found {other:?}"),
    }
}

fn bare(item: &ConditionItem) -> &Condition {
    match item {
        ConditionItem::Condition(c) => c,
        other => panic!("expected a bare condition, found {other:?}"),
    }
}

fn collect_ops(condition: &Condition, out: &mut Vec<Op>) {
    match condition {
        Condition::Compare(c) => out.push(c.op),
        Condition::All { items, .. } | Condition::Any { items, .. } => {
            items.iter().for_each(|c| collect_ops(c, out))
        }
        Condition::Not { item, .. } => collect_ops(item, out),
    }
}

#[test]
fn a_policy_using_every_feature_loads() {
    let policy = Policy::from_json_str(FULL_JSON).unwrap_or_else(|e| panic!("{e}"));
    let root = &policy.root;
    assert_eq!(root.default, DefaultAction::Allow);
    assert_eq!(root.mode, Mode::Shadow);
    let hide: Vec<(&str, &str, bool)> = root
        .hide
        .tools
        .iter()
        .map(|h| (h.text.as_str(), h.pointer.as_str(), h.is_glob()))
        .collect();
    assert_eq!(
        hide,
        [
            ("internal_*", "/hide/0", true),
            ("debug", "/hide/1", false),
            ("rm[0-9]", "/hide/2", true)
        ]
    );
    let all_tools = root.all_tools.as_ref().unwrap();
    assert_eq!(all_tools.pointer, "/all_tools");
    assert_eq!(all_tools.limits[0].window_ms, 1_000);
    assert_eq!(all_tools.limits[0].scope, Scope::Session);

    let names: Vec<(&str, &str)> = root
        .tools
        .iter()
        .map(|(n, _)| (n.text.as_str(), n.pointer.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("github.*", "/tools/github.*"),
            ("transfer_funds", "/tools/transfer_funds"),
            ("delete_*", "/tools/delete_*"),
            ("a/b~c*", "/tools/a~1b~0c*"),
        ],
        "document order, pointer-escaped"
    );

    // Every window form, every scope, the default scope, and an integral float max.
    let github = tool(&root.tools, "github.*");
    assert_eq!(
        (github.reason.as_deref(), github.mode),
        (Some("github is fine"), Some(Mode::Enforce))
    );
    let windows: Vec<(u64, Scope, f64)> = github
        .limits
        .iter()
        .map(|l| (l.window_ms, l.scope, l.max))
        .collect();
    assert_eq!(
        windows,
        [
            (60_000, Scope::Grant, 30.0),
            (3_600_000, Scope::Agent, 500.0),
            (86_400_000, Scope::Server, 5000.0),
            (90_000, Scope::Global, 40.0),
            (500, Scope::Global, 5.0),
            (5_400_000, Scope::Session, 200.0),
            (500, Scope::Global, 2.0),
        ]
    );
    assert_eq!(github.limits[6].pointer, "/tools/github.*/limits/6");

    let transfer = tool(&root.tools, "transfer_funds");
    assert_eq!(transfer.action, Action::RequireApproval);
    let approval = transfer.approval.as_ref().unwrap();
    assert_eq!(approval.timeout_ms, Some(600_000));
    assert_eq!(approval.approvers, ["finance", "ops"]);
    let spend = &transfer.limits[0];
    assert_eq!((spend.max, spend.scope), (500.5, Scope::Agent));
    let cost = spend.cost.as_ref().unwrap();
    assert_eq!(
        (cost.root, cost.segments.as_slice()),
        (PathRoot::Args, [Segment::Key("amount".into())].as_slice())
    );

    assert_eq!(transfer.require.len(), 4);
    let gt = compare(bare(&transfer.require[0]));
    assert_eq!(
        (gt.op, &gt.value, gt.pointer.as_str()),
        (Op::Gt, &json!(0), "/tools/transfer_funds/require/0")
    );
    assert_eq!(
        compare(bare(&transfer.require[2])).value,
        json!(["USD", "EUR"])
    );
    match &transfer.require[3] {
        ConditionItem::Group {
            pointer,
            conditions,
            on_deny,
        } => {
            assert_eq!(pointer, "/tools/transfer_funds/require/3");
            assert_eq!(on_deny.as_deref(), Some("Only finance may transfer."));
            let team = compare(&conditions[0]);
            assert_eq!(team.pointer, "/tools/transfer_funds/require/3/conditions/0");
            assert_eq!(team.path.root, PathRoot::Subject);
            assert_eq!(
                team.path.segments,
                [
                    Segment::Key("attributes".into()),
                    Segment::Key("team".into())
                ]
            );
        }
        other => panic!("expected a group, found {other:?}"),
    }
    let memo = compare(bare(&transfer.deny_if[0]));
    assert!(memo.pattern.as_ref().unwrap().is_match("Buy BITCOIN now"));
    match bare(&transfer.deny_if[1]) {
        Condition::Any { pointer, items } => {
            assert_eq!(pointer, "/tools/transfer_funds/deny_if/1");
            assert_eq!(items[1].pointer(), "/tools/transfer_funds/deny_if/1/any/1");
            assert_eq!(compare(&items[1]).op, Op::EndsWith);
        }
        other => panic!("expected any, found {other:?}"),
    }
    match &transfer.deny_if[2] {
        ConditionItem::Group {
            conditions,
            on_deny,
            ..
        } => {
            assert!(conditions.is_empty());
            assert_eq!(on_deny.as_deref(), Some("Requires human approval."));
        }
        other => panic!("expected a group, found {other:?}"),
    }
    match &transfer.deny_if[3] {
        ConditionItem::Group {
            conditions,
            on_deny,
            ..
        } => assert_eq!((conditions.len(), on_deny), (1, &None)),
        other => panic!("expected a group, found {other:?}"),
    }

    assert_eq!(tool(&root.tools, "delete_*").action, Action::Deny);
    let empty = tool(&root.tools, "a/b~c*");
    assert_eq!(
        (empty.action, empty.limits.len(), empty.pointer.as_str()),
        (Action::Allow, 0, "/tools/a~1b~0c*")
    );

    // The server section.
    assert_eq!(policy.servers.len(), 1);
    let (id, fs) = &policy.servers[0];
    assert_eq!(
        (id.as_str(), fs.pointer.as_str(), fs.default, fs.mode),
        ("fs", "/servers/fs", DefaultAction::Deny, Mode::Enforce)
    );
    assert_eq!(fs.hide.tools[0].pointer, "/servers/fs/hide/0");
    let fs_all = fs.all_tools.as_ref().unwrap();
    assert_eq!(
        (fs_all.mode, fs_all.limits[0].window_ms),
        (Some(Mode::Shadow), 90_000)
    );
    let read = tool(&fs.tools, "read_file");
    assert_eq!(read.pointer, "/servers/fs/tools/read_file");
    let mut seen = Vec::new();
    for section in std::iter::once(root).chain(policy.servers.iter().map(|(_, s)| s)) {
        for (_, rule) in &section.tools {
            for item in rule.require.iter().chain(&rule.deny_if) {
                match item {
                    ConditionItem::Condition(c) => collect_ops(c, &mut seen),
                    ConditionItem::Group { conditions, .. } => {
                        conditions.iter().for_each(|c| collect_ops(c, &mut seen))
                    }
                }
            }
        }
    }
    for (name, op) in Op::ALL {
        assert!(seen.contains(&op), "op {name} not exercised");
    }
    let require = |i: usize| bare(&read.require[i]);
    assert!(compare(require(0))
        .pattern
        .as_ref()
        .unwrap()
        .is_match("/etc/passwd"));
    let glob = compare(require(1)).pattern.as_ref().unwrap();
    assert!(glob.is_match("/home/ann/docs/a.txt") && !glob.is_match("/tmp/x"));
    assert_eq!(
        compare(require(2)).path.segments,
        [Segment::Key("key.with.dots".into())]
    );
    assert_eq!(compare(require(2)).value, Value::Null);
    assert_eq!(
        compare(require(3)).path.segments,
        [
            Segment::Key("items".into()),
            Segment::Index(0),
            Segment::Key("name".into())
        ]
    );
    assert_eq!(compare(require(7)).value, json!(0.5));
    match require(8) {
        Condition::All { items, .. } => {
            assert_eq!(
                compare(&items[0]).value,
                json!(true),
                "exists defaults to true"
            );
            assert_eq!(
                items[1].pointer(),
                "/servers/fs/tools/read_file/require/8/all/1"
            );
        }
        other => panic!("expected all, found {other:?}"),
    }
    match require(9) {
        Condition::Not { pointer, item } => {
            assert_eq!(pointer, "/servers/fs/tools/read_file/require/9");
            assert_eq!(item.pointer(), "/servers/fs/tools/read_file/require/9/not");
            assert_eq!(compare(item).value, json!(false));
        }
        other => panic!("expected not, found {other:?}"),
    }
    assert_eq!(compare(require(13)).path.root, PathRoot::Server);
    assert_eq!(compare(require(14)).path.root, PathRoot::Tool);
}

#[test]
fn the_full_policy_in_yaml_loads_to_the_same_model() {
    let from_json = Policy::from_json_str(FULL_JSON).unwrap();
    let from_yaml = Policy::from_yaml_str(FULL_YAML).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(format!("{from_json:#?}"), format!("{from_yaml:#?}"));
}

#[test]
fn a_policy_given_as_a_json_value_loads() {
    let value: Value = serde_json::from_str(FULL_JSON).unwrap();
    let policy = Policy::from_json_value(&value).unwrap();
    assert_eq!(policy.root.tools.len(), 4);
    assert_eq!(policy.servers[0].0, "fs");
}

// --- errors ------------------------------------------------------------------------------------

fn json_errors(text: &str) -> Vec<PolicyError> {
    Policy::from_json_str(text)
        .expect_err("the policy should be rejected")
        .0
}

fn yaml_errors(text: &str) -> Vec<PolicyError> {
    Policy::from_yaml_str(text)
        .expect_err("the policy should be rejected")
        .0
}

#[track_caller]
fn assert_single(errors: Vec<PolicyError>, pointer: &str, line: u32, needle: &str) {
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error, got {errors:#?}"
    );
    let e = &errors[0];
    assert_eq!((e.pointer.as_str(), e.line), (pointer, Some(line)), "{e:?}");
    assert!(
        e.message.contains(needle),
        "message {:?} should contain {needle:?}",
        e.message
    );
}

/// A policy whose only tool is `t` with the given rule text, which starts on line 3.
fn with_rule(rule: &str) -> String {
    format!("{{\"version\": \"1\",\n\"tools\": {{\"t\":\n{rule}\n}}}}")
}

/// A policy whose only limit has `field` (e.g. `"window": 0`) on line 5, after the others.
fn with_limit(others: &str, field: &str) -> String {
    with_rule(&format!(
        "{{\"limits\": [\n  {{{others},\n   {field}}}\n]}}"
    ))
}

#[test]
fn unknown_keys_at_every_level() {
    assert_single(
        json_errors("{\"version\": \"1\",\n \"default\": \"deny\",\n \"extra\": true}"),
        "/extra",
        3,
        "unknown key \"extra\"",
    );
    assert_single(
        json_errors(&with_rule("{\"action\": \"deny\",\n \"colour\": \"red\"}")),
        "/tools/t/colour",
        4,
        "unknown key \"colour\"",
    );
    assert_single(
        json_errors(&with_limit(
            r#""counter": "c", "window": "minute", "max": 1"#,
            r#""burst": 5"#,
        )),
        "/tools/t/limits/0/burst",
        5,
        "unknown key \"burst\"",
    );
    assert_single(
        json_errors(&with_rule(
            r#"{"require": [
 {"path": "args.a", "op": "eq", "value": 1,
  "vaule": 2}]}"#,
        )),
        "/tools/t/require/0/vaule",
        5,
        "unknown key \"vaule\"",
    );
    assert_single(
        json_errors(&with_rule(
            "{\"deny_if\": [\n {\"conditions\": [],\n  \"message\": \"x\"}]}",
        )),
        "/tools/t/deny_if/0/message",
        5,
        "unknown key \"message\"",
    );
    assert_single(
        json_errors(&with_rule(
            "{\"action\": \"require_approval\",\n \"approval\": {\"timeout\": 60, \"who\": []}}",
        )),
        "/tools/t/approval/who",
        4,
        "unknown key \"who\"",
    );
    // Tool names are escaped in pointers.
    assert_single(
        json_errors("{\"version\": \"1\", \"tools\": {\"a/b*\": {\"x\": 1}}}"),
        "/tools/a~1b*/x",
        1,
        "unknown key \"x\"",
    );
}

#[test]
fn mixed_condition_forms_are_rejected() {
    assert_single(
        json_errors(&with_rule(
            "{\"require\": [\n {\"path\": \"args.a\", \"op\": \"exists\", \"all\": []}]}",
        )),
        "/tools/t/require/0",
        4,
        "either path/op/value or exactly one of all, any, not",
    );
    assert_single(
        json_errors(&with_rule("{\"require\": [\n {\"all\": [], \"any\": []}]}")),
        "/tools/t/require/0",
        4,
        "exactly one of all, any, not",
    );
}

#[test]
fn wrong_types() {
    let cases: &[(&str, &str, u32, &str)] = &[
        ("[1, 2]", "", 1, "expected an object, found an array"),
        (
            "{\"version\": \"1\",\n \"hide\": \"debug\"}",
            "/hide",
            2,
            "expected an array, found a string",
        ),
        (
            "{\"version\": \"1\",\n \"hide\": [\"ok\", 7]}",
            "/hide/1",
            2,
            "expected a string, found a number",
        ),
        (
            "{\"version\": \"1\",\n \"hide\": [\"\"]}",
            "/hide/0",
            2,
            "must not be empty",
        ),
        (
            "{\"version\": \"1\",\n \"tools\": []}",
            "/tools",
            2,
            "expected an object, found an array",
        ),
        (
            "{\"version\": \"1\",\n \"servers\": {\"s\": true}}",
            "/servers/s",
            2,
            "expected an object, found a boolean",
        ),
        (
            "{\"version\": \"1\",\n \"tools\": {\"t\": {\"release_on_failure\": \"no\"}}}",
            "/tools/t/release_on_failure",
            2,
            "expected true, false or \"tool_error\", found a string",
        ),
        (
            "{\"version\": \"1\",\n \"default\": \"maybe\"}",
            "/default",
            2,
            "unknown default \"maybe\"",
        ),
        (
            "{\"version\": \"1\",\n \"mode\": null}",
            "/mode",
            2,
            "expected a string, found null",
        ),
        (
            "{\"version\": \"1\",\n \"tools\": {\"\": {}}}",
            "/tools/",
            2,
            "tool name must not be empty",
        ),
    ];
    for (text, pointer, line, needle) in cases {
        assert_single(json_errors(text), pointer, *line, needle);
    }
    // Each rule text starts on line 3 (see `with_rule`).
    let rule_cases: &[(&str, &str, u32, &str)] = &[
        (
            r#""allow""#,
            "/tools/t",
            3,
            "expected an object, found a string",
        ),
        (
            "{\"reason\":\n 5}",
            "/tools/t/reason",
            4,
            "expected a string, found a number",
        ),
        (
            r#"{"action": "block"}"#,
            "/tools/t/action",
            3,
            "unknown action \"block\"; expected one of: allow, deny, require_approval",
        ),
        (
            r#"{"limits": {}}"#,
            "/tools/t/limits",
            3,
            "expected an array, found an object",
        ),
        (
            r#"{"require": ["args.a"]}"#,
            "/tools/t/require/0",
            3,
            "expected an object, found a string",
        ),
        (
            r#"{"deny_if": [{"conditions": {}}]}"#,
            "/tools/t/deny_if/0/conditions",
            3,
            "expected an array",
        ),
        (
            r#"{"require": [{"not": []}]}"#,
            "/tools/t/require/0/not",
            3,
            "expected an object, found an array",
        ),
        (
            r#"{"require": [{"path": 5, "op": "exists"}]}"#,
            "/tools/t/require/0/path",
            3,
            "expected a string",
        ),
        (
            r#"{"require": [{"path": "args.a", "op": "lt", "value": "5"}]}"#,
            "/tools/t/require/0/value",
            3,
            "op \"lt\" expects a number, found a string",
        ),
        (
            r#"{"require": [{"path": "args.a", "op": "in", "value": "x"}]}"#,
            "/tools/t/require/0/value",
            3,
            "expects a non-empty array",
        ),
        (
            r#"{"require": [{"path": "args.a", "op": "not_in", "value": []}]}"#,
            "/tools/t/require/0/value",
            3,
            "expects a non-empty array",
        ),
        (
            r#"{"require": [{"path": "args.a", "op": "contains", "value": [1]}]}"#,
            "/tools/t/require/0/value",
            3,
            "expects a string, number, boolean or null",
        ),
        (
            r#"{"require": [{"path": "args.a", "op": "starts_with", "value": 1}]}"#,
            "/tools/t/require/0/value",
            3,
            "expects a string",
        ),
        (
            r#"{"require": [{"path": "args.a", "op": "exists", "value": "yes"}]}"#,
            "/tools/t/require/0/value",
            3,
            "expects a boolean",
        ),
        (
            r#"{"limits": [{"counter": "", "window": 1, "max": 1}]}"#,
            "/tools/t/limits/0/counter",
            3,
            "must not be empty",
        ),
        (
            r#"{"limits": [{"counter": "c", "window": 1, "max": 1, "cost": "subject.agent"}]}"#,
            "/tools/t/limits/0/cost",
            3,
            "starting with args.",
        ),
        (
            r#"{"action": "require_approval", "approval": {"approvers": "ops"}}"#,
            "/tools/t/approval/approvers",
            3,
            "expected an array",
        ),
    ];
    for (rule, pointer, line, needle) in rule_cases {
        assert_single(json_errors(&with_rule(rule)), pointer, *line, needle);
    }
}

#[test]
fn bad_regex() {
    let errors = json_errors(&with_rule(
        r#"{"deny_if": [
 {"path": "args.q", "op": "regex",
  "value": "(unclosed"}]}"#,
    ));
    assert_single(
        errors.clone(),
        "/tools/t/deny_if/0/value",
        5,
        "invalid regex \"(unclosed\"",
    );
    assert!(
        !errors[0].message.contains('\n'),
        "one line per error: {:?}",
        errors[0].message
    );
    assert_single(
        json_errors(&with_rule(
            "{\"require\": [{\"path\": \"args.q\", \"op\": \"not_regex\", \"value\": \"a{2,1}\"}]}",
        )),
        "/tools/t/require/0/value",
        3,
        "invalid regex",
    );
}

#[test]
fn bad_globs() {
    assert_single(
        json_errors("{\"version\": \"1\",\n\"tools\": {\"ok\": {},\n\"bad[\": {}}}"),
        "/tools/bad[",
        3,
        "unclosed '['",
    );
    assert_single(
        json_errors("{\"version\": \"1\",\n\"hide\": [\"fine\", \"x[y\"]}"),
        "/hide/1",
        2,
        "unclosed '['",
    );
    assert_single(
        json_errors(&with_rule(
            "{\"require\": [{\"path\": \"tool\", \"op\": \"glob\", \"value\": \"[abc\"}]}",
        )),
        "/tools/t/require/0/value",
        3,
        "unclosed '['",
    );
}

#[test]
fn bad_windows() {
    let others = r#""counter": "c", "max": 1"#;
    for (window, needle) in [
        (r#""60""#, "invalid window \"60\""),
        (r#""1x""#, "invalid window \"1x\""),
        (r#""""#, "invalid window \"\""),
        (r#""1.5h""#, "invalid window"),
        (r#""minutes""#, "invalid window"),
        (r#""0s""#, "window must be positive"),
        ("0", "window must be positive"),
        ("-5", "window must be positive"),
        ("0.0001", "at least 1 ms"),
        ("true", "expected a window"),
        ("null", "expected a window"),
    ] {
        assert_single(
            json_errors(&with_limit(others, &format!("\"window\": {window}"))),
            "/tools/t/limits/0/window",
            5,
            needle,
        );
    }
    assert_single(
        json_errors(&with_rule(
            "{\"action\": \"require_approval\",\n \"approval\": {\"timeout\": \"soon\"}}",
        )),
        "/tools/t/approval/timeout",
        4,
        "invalid window \"soon\"",
    );
}

#[test]
fn bad_maxima() {
    let others = r#""counter": "c", "window": "minute""#;
    for (max, needle) in [
        ("0", "max must be greater than 0, found 0"),
        ("-3", "max must be greater than 0, found -3"),
        ("-0.5", "max must be greater than 0"),
        (
            "2.5",
            "whole number of calls when the limit has no cost, found 2.5",
        ),
        ("1000000001", "at most 1000000000"),
        (r#""10""#, "expected a number, found a string"),
    ] {
        assert_single(
            json_errors(&with_limit(others, &format!("\"max\": {max}"))),
            "/tools/t/limits/0/max",
            5,
            needle,
        );
    }
    // A fractional budget is fine with a cost; an integral float is fine without.
    assert!(
        Policy::from_json_str(&with_limit(others, r#""max": 2.5, "cost": "args.amount""#)).is_ok()
    );
    assert!(Policy::from_json_str(&with_limit(others, r#""max": 30.0"#)).is_ok());
}

#[test]
fn missing_required_keys() {
    assert_single(
        json_errors(&with_rule(
            "{\"limits\": [\n  {\"window\": \"minute\", \"max\": 1}]}",
        )),
        "/tools/t/limits/0",
        4,
        "missing required key \"counter\"",
    );
    let errors = json_errors(&with_rule("{\"limits\": [\n  {}]}"));
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "missing required key \"counter\"",
            "missing required key \"window\"",
            "missing required key \"max\""
        ]
    );
    assert_single(
        json_errors(&with_rule("{\"require\": [\n  {\"op\": \"exists\"}]}")),
        "/tools/t/require/0",
        4,
        "missing required key \"path\"",
    );
}

#[test]
fn conflicting_counters() {
    let text = r#"{"version": "1",
 "tools": {
  "a": {"limits": [{"counter": "shared", "window": "minute", "max": 10}]},
  "b": {"limits": [{"counter": "shared", "window": 60, "max": 10.0, "scope": "global"}]},
  "c": {"limits": [
     {"counter": "shared",
      "window": "hour", "max": 10}]}},
 "servers": {"s": {"tools": {"d": {"limits": [
     {"counter": "shared", "window": "minute", "max": 10, "scope": "grant"},
     {"counter": "shared", "window": "minute", "max": 11, "cost": "args.n"}]}}}}
}"#;
    let errors = json_errors(text);
    let found: Vec<(&str, Option<u32>)> = errors
        .iter()
        .map(|e| (e.pointer.as_str(), e.line))
        .collect();
    assert_eq!(
        found,
        [
            ("/tools/c/limits/0/counter", Some(6)),
            ("/servers/s/tools/d/limits/0/counter", Some(9)),
            ("/servers/s/tools/d/limits/1/counter", Some(10)),
        ],
        "{errors:#?}"
    );
    for e in &errors {
        assert!(e.message.contains(
            "counter \"shared\" conflicts with its first definition at /tools/a/limits/0"
        ));
    }
    assert!(errors[0]
        .message
        .contains("window 3600000 ms instead of 60000 ms"));
    assert!(errors[1].message.contains("scope grant instead of global"));
    assert!(
        errors[2].message.contains("max 11 instead of 10")
            && errors[2]
                .message
                .contains("a cost where the first has none")
    );
}

#[test]
fn unknown_scope() {
    assert_single(
        json_errors(&with_limit(
            r#""counter": "c", "window": "minute", "max": 1"#,
            r#""scope": "user""#,
        )),
        "/tools/t/limits/0/scope",
        5,
        "unknown scope \"user\"; expected one of: grant, session, agent, server, global",
    );
}

#[test]
fn bad_paths() {
    let condition = |path: &str| {
        with_rule(&format!(
            "{{\"require\": [\n {{\"op\": \"exists\",\n  \"path\": {path:?}}}]}}"
        ))
    };
    for (path, needle) in [
        (
            "env.x",
            "path must start with args., subject., server, tool or marks",
        ),
        (
            "argument.x",
            "path must start with args., subject., server, tool or marks",
        ),
        ("args", "args needs at least one segment"),
        ("args..x", "empty segment"),
        ("args.items[-1]", "bad index"),
        ("subject.foo", "unknown subject field \"foo\""),
        ("subject.attributes", "exactly one key"),
        ("subject.attributes.a.b", "exactly one key"),
        ("server.x", "server takes no further segments"),
    ] {
        assert_single(
            json_errors(&condition(path)),
            "/tools/t/require/0/path",
            5,
            needle,
        );
    }
}

#[test]
fn unknown_op() {
    let errors = json_errors(&with_rule(
        "{\"require\": [\n {\"path\": \"args.a\",\n  \"op\": \"equals\", \"value\": 1}]}",
    ));
    assert_single(
        errors.clone(),
        "/tools/t/require/0/op",
        5,
        "unknown op \"equals\"; expected one of: eq, neq, in, not_in",
    );
    assert!(errors[0].message.ends_with("glob, exists"));
}

#[test]
fn missing_value() {
    for op in [
        "eq",
        "neq",
        "in",
        "not_in",
        "lt",
        "regex",
        "glob",
        "contains",
        "starts_with",
    ] {
        assert_single(
            json_errors(&with_rule(&format!(
                "{{\"require\": [\n {{\"path\": \"args.a\",\n  \"op\": \"{op}\"}}]}}"
            ))),
            "/tools/t/require/0",
            4,
            &format!("missing required key \"value\" (op \"{op}\" needs one)"),
        );
    }
}

#[test]
fn duplicate_json_key() {
    assert_single(
        json_errors(
            "{\"version\": \"1\",\n \"tools\": {\"a\": {},\n  \"a\": {\"action\": \"deny\"}}}",
        ),
        "/tools/a",
        3,
        "duplicate key \"a\"",
    );
}

#[test]
fn json_syntax_error() {
    let errors = json_errors("{\"version\": \"1\",\n \"tools\": {\n  \"a\": {},\n }}");
    assert_single(errors.clone(), "", 4, "column 2");
    assert_eq!(
        errors[0].to_string(),
        "/: expected a string key at column 2"
    );
    assert_single(
        json_errors("{\"version\":\n // comment\n \"1\"}"),
        "",
        2,
        "unexpected character '/'",
    );
}

#[test]
fn yaml_errors_have_lines() {
    assert_single(
        yaml_errors("version: '1'\ntools:\n  a: {}\n  a: {}\n"),
        "/tools/a",
        4,
        "duplicate key \"a\"",
    );
    assert_single(
        yaml_errors(
            "version: '1'
tools:
  t:
    limits:
      - counter: c
        window: 1x
        max: 1
",
        ),
        "/tools/t/limits/0/window",
        6,
        "invalid window \"1x\"",
    );
    assert_single(
        yaml_errors("version: '1'\ntools:\n  t:\n    actoin: deny\n"),
        "/tools/t/actoin",
        4,
        "unknown key",
    );
    assert_single(yaml_errors("version: '1'\ntools: [\n"), "", 3, "column");
    assert_single(
        yaml_errors("version: '1'\nhide: &h [a]\ntools: *h\n"),
        "/tools",
        3,
        "aliases",
    );
    assert_single(yaml_errors("version: 1\n"), "/version", 1, "quote it");
}

#[test]
fn wrong_version() {
    assert_single(
        json_errors("{\"version\": \"2\"}"),
        "/version",
        1,
        "unsupported version \"2\"; expected \"1\"",
    );
    assert_single(
        json_errors("{\n\"version\": 1}"),
        "/version",
        2,
        "expected the string \"1\", found a number",
    );
    assert_single(
        json_errors("{\n\"default\": \"deny\"}"),
        "",
        1,
        "missing required key \"version\"",
    );
    assert_single(
        json_errors("{\"version\": \"1\",\n \"servers\": {\"s\": {\"version\": \"1.0\"}}}"),
        "/servers/s/version",
        2,
        "unsupported version",
    );
    // A server section may leave the version out.
    assert!(Policy::from_json_str(
        "{\"version\": \"1\", \"servers\": {\"s\": {\"default\": \"allow\"}}}"
    )
    .is_ok());
}

#[test]
fn nested_servers_are_rejected() {
    assert_single(
        json_errors("{\"version\": \"1\",\n \"servers\": {\"s\": {\n   \"servers\": {}}}}"),
        "/servers/s/servers",
        3,
        "cannot be nested",
    );
}

#[test]
fn approval_without_require_approval() {
    assert_single(
        json_errors(&with_rule(
            "{\"action\": \"deny\",\n \"approval\": {\"timeout\": \"5m\"}}",
        )),
        "/tools/t/approval",
        4,
        "only valid with action \"require_approval\"",
    );
    assert_single(
        json_errors(&with_rule("{\n \"approval\": {\"approvers\": [\"ops\"]}}")),
        "/tools/t/approval",
        4,
        "only valid with action \"require_approval\"",
    );
}

fn limits_json(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"counter\": \"{prefix}{i}\", \"window\": \"minute\", \"max\": 1}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn too_many_limits() {
    assert_single(
        json_errors(&with_rule(&format!(
            "{{\n\"limits\":\n [{}]}}",
            limits_json("c", 9)
        ))),
        "/tools/t/limits",
        5,
        "at most 8 limits, found 9",
    );
    assert!(Policy::from_json_str(&with_rule(&format!(
        "{{\"limits\": [{}]}}",
        limits_json("c", 8)
    )))
    .is_ok());

    // A rule and its section's all_tools together.
    let text = format!(
        r#"{{"version": "1",
 "all_tools": {{"limits": [{}]}},
 "tools": {{
  "ok": {{"limits": [{}]}},
  "t": {{"limits":
   [{}]}}}}}}"#,
        limits_json("g", 3),
        limits_json("ok", 5),
        limits_json("t", 6)
    );
    assert_single(
        json_errors(&text),
        "/tools/t/limits",
        6,
        "this rule has 6 limits and marks and all_tools has 3",
    );
}

#[test]
fn five_different_errors_are_all_reported() {
    let text = r#"{
  "version": "1",
  "defualt": "deny",
  "hide": ["a["],
  "tools": {
    "t": {
      "action": "deny",
      "limits": [{"counter": "c", "window": "fortnight", "max": 0}],
      "deny_if": [{"path": "env.HOME", "op": "eq", "value": "/root"}]
    }
  }
}"#;
    let errors = json_errors(text);
    let found: Vec<(&str, Option<u32>)> = errors
        .iter()
        .map(|e| (e.pointer.as_str(), e.line))
        .collect();
    assert_eq!(
        found,
        [
            ("/defualt", Some(3)),
            ("/hide/0", Some(4)),
            ("/tools/t/limits/0/window", Some(8)),
            ("/tools/t/limits/0/max", Some(8)),
            ("/tools/t/deny_if/0/path", Some(9)),
        ],
        "{errors:#?}"
    );
    let all = Policy::from_json_str(text).unwrap_err().to_string();
    assert_eq!(all.lines().count(), 5);
    assert!(
        all.starts_with("/defualt: unknown key \"defualt\""),
        "{all}"
    );
}

#[test]
fn errors_of_a_json_value_have_no_line() {
    let errors = Policy::from_json_value(
        &json!({"version": "1", "tools": {"t": {"limits": [{"counter": "c"}]}}}),
    )
    .unwrap_err()
    .0;
    let found: Vec<(&str, Option<u32>)> = errors
        .iter()
        .map(|e| (e.pointer.as_str(), e.line))
        .collect();
    assert_eq!(
        found,
        [("/tools/t/limits/0", None), ("/tools/t/limits/0", None)]
    );
}

/// The core reads no file: the caller hands it the pins files' bytes.
fn no_files(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    panic!("no pins file is read here: {}", path.display())
}

#[test]
fn the_path_picks_the_format() {
    let (seed, tool, counter, max) = POLICYLAYER_EXAMPLES[0];
    let yaml = example_as_yaml(tool, counter, max);
    let cases = [
        ("p.json", seed),
        ("p.yaml", yaml.as_str()),
        ("p.yml", yaml.as_str()),
        ("p.conf", seed),
        ("p", yaml.as_str()),
    ];
    for (name, text) in cases {
        let path = std::path::Path::new("/policies").join(name);
        let policy = Policy::from_text(text, "auto", Some(&path), &no_files)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(policy.root.tools[0].0.text, tool, "{name}");
    }
    // JSON by extension even if it looks like YAML: a YAML document in a .json file fails.
    let path = std::path::Path::new("/policies/yaml-in.json");
    assert!(Policy::from_text(&yaml, "auto", Some(path), &no_files).is_err());
}

/// Pins files as the caller hands them: found beside the policy, each asked for once, its
/// digest the SHA-256 of the bytes handed; one the caller cannot read, or a policy given
/// without its files, is an error at `/pins/file`.
#[test]
fn pins_files_are_the_bytes_the_caller_hands() {
    use sha2::{Digest, Sha256};
    let pins = br#"{"version": "1", "tools": {}}"#;
    let asked = std::cell::RefCell::new(Vec::new());
    let read = |path: &std::path::Path| {
        asked.borrow_mut().push(path.to_owned());
        match path.file_name().and_then(|n| n.to_str()) {
            Some("pins.json") => Ok(pins.to_vec()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    };
    let text = r#"{"version": "1", "pins": {"file": "pins.json"},
                   "servers": {"crm": {"pins": {"file": "pins.json"}}}}"#;
    let path = std::path::Path::new("/policies/p.json");
    let policy = Policy::from_text(text, "auto", Some(path), &read).expect("valid");
    assert_eq!(
        *asked.borrow(),
        [std::path::Path::new("/policies/pins.json")]
    );
    assert_eq!(policy.pins.len(), 1);
    assert_eq!(
        policy.pins[0].digest,
        <[u8; 32]>::from(Sha256::digest(pins))
    );
    // Other bytes are another revision.
    let other = |_: &std::path::Path| Ok(br#"{"version": "1", "tools": {}} "#.to_vec());
    let again = Policy::from_text(text, "auto", Some(path), &other).expect("valid");
    assert_ne!(again.revision, policy.revision);

    let missing = r#"{"version": "1", "pins": {"file": "none.json"}}"#;
    let errors = Policy::from_text(missing, "auto", Some(path), &read)
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].pointer, "/pins/file");
    assert!(
        errors[0].message.contains("cannot read"),
        "{}",
        errors[0].message
    );
    let without = Policy::from_json_str(r#"{"version": "1", "pins": {"file": "pins.json"}}"#);
    let errors = without.unwrap_err().0;
    assert_eq!(errors[0].pointer, "/pins/file");
    assert!(
        errors[0].message.contains("without its files"),
        "{}",
        errors[0].message
    );
}

// --- the JSON parser agrees with serde_json ----------------------------------------------------

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text inserted into valid JSON to damage it (`""`: delete a character instead).
const DAMAGE: [&str; 11] = ["", ",", "]", "}", "\"", ":", "0", "-", "e", "\\", " "];

proptest! {
    #[test]
    fn parse_json_agrees_with_serde_json(value in arb_json(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value)
        } else {
            serde_json::to_string(&value)
        }
        .unwrap();
        let ours = parse_json(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        let theirs: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(ours.to_json_value(), theirs);
        // The compact form of an order-preserved document is serde_json's own compact output.
        prop_assert_eq!(ours.to_canonical_json(), serde_json::to_string(&value).unwrap());
        // YAML 1.2 is a superset of JSON: the same text gives the same tree. (Only for plain
        // ASCII: YAML folds Unicode line breaks inside quoted scalars and escapes differ.)
        if text.chars().all(|c| (c.is_ascii_graphic() && c != '\\') || c == ' ' || c == '\n') {
            let yaml = parse_yaml(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert_eq!(yaml.to_json_value(), ours.to_json_value());
        }
    }

    #[test]
    /// Damage valid JSON by one deletion or insertion; both parsers must agree on the result.
    fn parse_json_accepts_exactly_what_serde_json_accepts(
        value in arb_json(),
        cut in any::<prop::sample::Index>(),
        insert in prop::sample::select(DAMAGE.to_vec()),
    ) {
        let mut chars: Vec<char> = serde_json::to_string(&value).unwrap().chars().collect();
        let at = cut.index(chars.len() + 1);
        if insert.is_empty() && at < chars.len() {
            chars.remove(at);
        } else {
            for (i, c) in insert.chars().enumerate() {
                chars.insert(at + i, c);
            }
        }
        let text: String = chars.into_iter().collect();
        let ours = parse_json(&text);
        let theirs = serde_json::from_str::<Value>(&text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => prop_assert_eq!(&a.to_json_value(), b),
            // serde_json keeps the last of duplicate keys; we reject them.
            (Err(e), Ok(_)) => {
                prop_assert!(e.message.contains("duplicate key"), "{} for {}", e, text)
            }
            (Ok(_), Err(e)) => {
                prop_assert!(false, "we accepted {} which serde_json rejects: {}", text, e)
            }
            (Err(_), Err(_)) => {}
        }
    }
}

#[test]
fn every_error_inside_a_group_is_reported() {
    let errors = json_errors(&with_rule(
        r#"{"deny_if": [{"conditions": [
  {"path": "env.x", "op": "eq", "value": 1},
  {"path": "args.a", "op": "between", "value": [1, 2]}],
 "on_deny": 5}]}"#,
    ));
    let found: Vec<(&str, Option<u32>)> = errors
        .iter()
        .map(|e| (e.pointer.as_str(), e.line))
        .collect();
    assert_eq!(
        found,
        [
            ("/tools/t/deny_if/0/conditions/0/path", Some(4)),
            ("/tools/t/deny_if/0/conditions/1/op", Some(5)),
            ("/tools/t/deny_if/0/on_deny", Some(6)),
        ],
        "{errors:#?}"
    );
}

#[test]
fn an_empty_yaml_document_is_not_a_policy() {
    assert_single(yaml_errors(""), "", 1, "expected an object, found null");
    assert_single(
        yaml_errors("- a\n"),
        "",
        1,
        "expected an object, found an array",
    );
}

// --- what a policy can need ------------------------------------------------------------------

#[test]
fn a_policy_needs_approval_only_with_an_enforced_require_approval_rule() {
    let needs = |document: Value| Policy::from_json_value(&document).unwrap().needs_approval();
    let approval = json!({"action": "require_approval"});
    assert!(!needs(
        json!({"version": "1", "tools": {"a": {}, "b": {"action": "deny"}}})
    ));
    assert!(needs(json!({"version": "1", "tools": {"a": approval}})));
    assert!(needs(json!({"version": "1", "all_tools": approval})));
    let nested = json!({"version": "1", "tools": {"a": approval}});
    assert!(needs(json!({"version": "1", "servers": {"s": nested}})));
    // A rule in shadow mode, by itself or by its section, only notes what it would ask.
    let shadow_rule = json!({"action": "require_approval", "mode": "shadow"});
    assert!(!needs(json!({"version": "1", "tools": {"a": shadow_rule}})));
    assert!(!needs(
        json!({"version": "1", "mode": "shadow", "tools": {"a": approval}})
    ));
    let enforced = json!({"action": "require_approval", "mode": "enforce"});
    assert!(needs(
        json!({"version": "1", "mode": "shadow", "tools": {"a": enforced}})
    ));
}

proptest! {
    /// A tool rule's name is one MCP allows (1 to 128 of A-Z a-z 0-9 _ - .), or a glob: any
    /// other is refused at its pointer, as a name no server keeping to MCP lists (a typo, or
    /// a space where a dash was meant).
    #[test]
    fn a_tool_name_mcp_does_not_allow_is_refused(name in "[ -~]{0,12}|[a-z_.-]{120,136}|.{1,6}") {
        let policy = json!({"version": "1", "tools": {name.clone(): {"action": "allow"}}});
        let loaded = Policy::from_json_value(&policy);
        let glob = name.contains(['*', '?', '[']);
        let allowed = (1..=128).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        match loaded {
            Ok(_) => prop_assert!(allowed || glob, "{:?} loaded", name),
            Err(errors) => {
                prop_assert!(!allowed, "{:?} refused: {:?}", name, errors);
                let pointer = format!("/tools/{}", name.replace('~', "~0").replace('/', "~1"));
                prop_assert!(errors.0.iter().any(|e| e.pointer == pointer), "{:?}", errors);
            }
        }
    }
}

#[test]
fn a_misspelt_tool_name_with_a_space_is_refused_with_its_line() {
    let errors = json_errors("{\"version\": \"1\",\n\"tools\": {\n\"create ami\": {}}}");
    assert_single(errors, "/tools/create ami", 3, "not a tool name MCP allows");
}

/// Spellings of one pins file (`pins.json`, `./pins.json`, `.//pins.json`) are one file, read
/// once: every section that names it holds the same bytes, however the file changes between
/// reads, and a reload has one digest of it to watch.
#[test]
fn a_pins_file_spelt_two_ways_is_read_once() {
    let reads = std::cell::Cell::new(0u8);
    // Each read gets other bytes, as a file re-pinned between two reads would.
    let read = |_: &std::path::Path| {
        reads.set(reads.get() + 1);
        let bytes = format!(
            r#"{{"version": "1", "tools": {{}}}}{}"#,
            " ".repeat(reads.get().into())
        );
        Ok(bytes.into_bytes())
    };
    let text = r#"{"version": "1", "pins": {"file": "pins.json"}, "servers": {
        "crm": {"pins": {"file": "./pins.json"}}, "erp": {"pins": {"file": ".//pins.json"}}}}"#;
    let path = std::path::Path::new("/policies/p.json");
    let policy = Policy::from_text(text, "auto", Some(path), &read).expect("valid");
    assert_eq!(reads.get(), 1);
    let digests: std::collections::HashSet<_> = policy.pins.iter().map(|f| f.digest).collect();
    assert_eq!((policy.pins.len(), digests.len()), (3, 1));
}
