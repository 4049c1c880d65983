//! What the engine decides, case by case: defaults, hiding, rule precedence, deny rules,
//! conditions (every operator, combinators, groups, reasons, paths), limits and spend
//! limits, all-or-nothing reservation, release, dry runs, shadow mode, approval, reload,
//! servers and revisions (docs/policy.md, docs/decisions.md, docs/counters.md).
//!
//! Each case of a `decisions!` table is one test: a policy (or several, each on an engine of
//! its own) and the calls made on its engine in order, each with what its decision must say.
//! The operators run from a table of their own (`operators!`). Cases a row cannot say (a
//! reservation given back, statistics, revisions, a clock moved by a decision's own
//! retry-after) are plain tests in their section. The Python binding's own tests (Python
//! values as arguments, its exceptions, its `reload` and `Policy` surface, threads) are in
//! tests/test_decisions.py.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::engine::{DEFAULT_CAPACITY, DEFAULT_RESERVATIONS};
use toolgate_core::json::args::parse_json_arguments;
use toolgate_core::policy::Op;
use toolgate_core::Kind;
use toolgate_core::{Code, Decision, Engine, ManualClock, Policy, Request, Subject, Verdict};
use Code::*;
use Verdict::*;

/// Where every engine's clock starts: 1000 s, far from zero, so windows never reach back
/// before the clock's origin (the Python tests' `START`).
const START_NS: u64 = 1_000_000_000_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

// --- policies, calls and what decisions must say -----------------------------------------------

/// A version-1 policy: `default: deny` and the `tools` map; other keys come `with` it.
fn policy(tools: Value) -> Value {
    json!({"version": "1", "default": "deny", "tools": tools})
}

/// One entry of `limits`: per minute and per grant unless `with` says otherwise.
fn limit(counter: &str, max: impl Into<Value>) -> Value {
    json!({"counter": counter, "window": "minute", "max": max.into(), "scope": "grant"})
}

/// A limit of `max` calls a minute that every caller shares.
fn global_limit(counter: &str, max: u32) -> Value {
    limit(counter, max).with(json!({"scope": "global"}))
}

/// A `{path, op, value}` condition.
fn cond(path: &str, op: &str, value: impl Into<Value>) -> Value {
    json!({"path": path, "op": op, "value": value.into()})
}

/// An `exists` condition without a value.
fn exists(path: &str) -> Value {
    json!({"path": path, "op": "exists"})
}

/// Tool `t`, with `condition` under `require`.
fn require_policy(condition: Value) -> Value {
    policy(json!({"t": {"require": [condition]}}))
}

/// Tool `t`, with `condition` under `deny_if`.
fn deny_if_policy(condition: Value) -> Value {
    policy(json!({"t": {"deny_if": [condition]}}))
}

/// An object with more members (replacing any of the same name, in place).
trait With {
    fn with(self, more: Value) -> Value;
}

impl With for Value {
    fn with(mut self, more: Value) -> Value {
        match (self.as_object_mut(), more) {
            (Some(members), Value::Object(more)) => members.extend(more),
            _ => panic!("`with` joins objects"),
        }
        self
    }
}

/// A policy, and the size of the counter table its engine counts in (the binding's default
/// sizes unless changed).
struct Setup {
    policy: Policy,
    capacity: usize,
    reservations: usize,
}

impl Setup {
    fn new(policy: Policy) -> Setup {
        Setup {
            policy,
            capacity: DEFAULT_CAPACITY,
            reservations: DEFAULT_RESERVATIONS,
        }
    }

    fn capacity(self, capacity: usize) -> Setup {
        Setup { capacity, ..self }
    }

    fn reservations(self, reservations: usize) -> Setup {
        Setup {
            reservations,
            ..self
        }
    }
}

impl From<Value> for Setup {
    fn from(doc: Value) -> Setup {
        Setup::new(Policy::from_json_value(&doc).expect("valid policy"))
    }
}

/// Pins files are read by whoever loads a policy; these policies name none.
fn no_files(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    panic!("no pins file is read here: {}", path.display())
}

/// A policy's text, JSON or YAML.
fn text(text: &str) -> Setup {
    Setup::new(Policy::from_text(text, "auto", None, &no_files).expect("valid policy"))
}

/// One of the repository's example policies (examples/).
fn example(name: &str) -> Setup {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("the example is there");
    let policy = Policy::from_text(&text, "auto", Some(&path), &no_files);
    Setup::new(policy.expect("valid example policy"))
}

/// An engine on `setup`'s policy, on a manual clock at [`START_NS`].
fn engine(setup: impl Into<Setup>) -> (Engine, Arc<ManualClock>) {
    let setup = setup.into();
    let clock = Arc::new(ManualClock::new(START_NS));
    let table = Arc::new(CounterTable::new(setup.capacity, setup.reservations));
    let engine = Engine::new(setup.policy, table, clock.clone()).unwrap();
    (engine, clock)
}

/// One call: its tool and what its request says besides.
#[derive(Debug, Clone, Default)]
struct Call {
    tool: String,
    server: Option<String>,
    grant: Option<String>,
    session: Option<String>,
    agent: Option<String>,
    attributes: Vec<(String, String)>,
    args: Option<Value>,
    dry_run: bool,
}

fn tool(name: &str) -> Call {
    Call {
        tool: name.into(),
        ..Default::default()
    }
}

/// Tool `t` with arguments `{"v": value}`.
fn arg_v(value: Value) -> Call {
    tool("t").args(json!({ "v": value }))
}

impl Call {
    fn server(self, server: &str) -> Call {
        let server = Some(server.into());
        Call { server, ..self }
    }

    fn grant(self, grant: &str) -> Call {
        let grant = Some(grant.into());
        Call { grant, ..self }
    }

    fn session(self, session: &str) -> Call {
        let session = Some(session.into());
        Call { session, ..self }
    }

    fn agent(self, agent: &str) -> Call {
        let agent = Some(agent.into());
        Call { agent, ..self }
    }

    fn attr(mut self, key: &str, value: &str) -> Call {
        self.attributes.push((key.into(), value.into()));
        self
    }

    fn args(self, args: Value) -> Call {
        let args = Some(args);
        Call { args, ..self }
    }

    fn dry_run(self) -> Call {
        Call {
            dry_run: true,
            ..self
        }
    }

    fn decide(&self, engine: &Engine) -> Decision {
        let attributes: Vec<(&str, &str)> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        engine.decide(&Request {
            kind: Kind::Tool,
            name: &self.tool,
            server: self.server.as_deref(),
            subject: Subject {
                grant: self.grant.as_deref(),
                session: self.session.as_deref(),
                agent: self.agent.as_deref(),
                attributes: &attributes,
                ..Default::default()
            },
            args: self.args.as_ref(),
            dry_run: self.dry_run,
            hits: None,
            confirm: None,
        })
    }

    /// Made once, its decision says `expect`.
    fn is(self, expect: Expect) -> Step {
        self.times(1).are(expect)
    }

    fn times(self, times: usize) -> Times {
        Times(self, times)
    }
}

/// A call made some times over.
struct Times(Call, usize);

impl Times {
    /// Each of the calls' decisions says `expect`.
    fn are(self, expect: Expect) -> Step {
        Step::Decide(Box::new((self.0, self.1, expect)))
    }
}

/// One step of a case.
enum Step {
    /// Make the call this many times; each decision must say what is expected.
    Decide(Box<(Call, usize, Expect)>),
    /// Move the clock on, in nanoseconds.
    Advance(u64),
    /// Swap in another policy.
    Reload(Value),
}

fn advance(ns: u64) -> Step {
    Step::Advance(ns)
}

fn reload(doc: Value) -> Step {
    Step::Reload(doc)
}

/// What a decision must say; what is left unset is not looked at.
#[derive(Debug, Default)]
struct Expect {
    code: Option<Code>,
    verdict: Option<Verdict>,
    rule: Option<String>,
    reason: Option<String>,
    reason_starts: Option<String>,
    reason_has: Vec<String>,
    reason_lacks: Vec<String>,
    some_reason: bool,
    /// `Some(None)`: no retry-after; `Some(Some(range))`: one within `range`.
    retry: Option<Option<RangeInclusive<u64>>>,
    reserved: Option<bool>,
    shadow: Option<bool>,
    /// Room left on each limit the decision touched, in order.
    remaining: Option<Vec<f64>>,
    /// The counter of each limit the decision touched, in order.
    counters: Option<Vec<String>>,
    /// Room left by counter, in any order.
    room: Option<Vec<(String, f64)>>,
}

/// A decision of any kind (its call is made for what it does to counters).
fn any() -> Expect {
    Expect::default()
}

fn code(code: Code) -> Expect {
    Expect {
        code: Some(code),
        ..any()
    }
}

fn verdict(verdict: Verdict) -> Expect {
    any().verdict(verdict)
}

impl Expect {
    fn verdict(self, verdict: Verdict) -> Expect {
        let verdict = Some(verdict);
        Expect { verdict, ..self }
    }

    fn rule(self, rule: &str) -> Expect {
        let rule = Some(rule.into());
        Expect { rule, ..self }
    }

    fn reason(self, reason: &str) -> Expect {
        let reason = Some(reason.into());
        Expect { reason, ..self }
    }

    fn reason_starts(self, start: &str) -> Expect {
        let reason_starts = Some(start.into());
        Expect {
            reason_starts,
            ..self
        }
    }

    /// The reason says `part`.
    fn has(mut self, part: &str) -> Expect {
        self.reason_has.push(part.into());
        self
    }

    /// The reason does not say `part`.
    fn lacks(mut self, part: &str) -> Expect {
        self.reason_lacks.push(part.into());
        self
    }

    fn some_reason(self) -> Expect {
        Expect {
            some_reason: true,
            ..self
        }
    }

    fn retry_never(self) -> Expect {
        Expect {
            retry: Some(None),
            ..self
        }
    }

    fn retry(self, within: RangeInclusive<u64>) -> Expect {
        let retry = Some(Some(within));
        Expect { retry, ..self }
    }

    /// Some retry-after, of any length.
    fn retries(self) -> Expect {
        self.retry(0..=u64::MAX)
    }

    fn reserved(self, reserved: bool) -> Expect {
        let reserved = Some(reserved);
        Expect { reserved, ..self }
    }

    fn shadow(self, shadow: bool) -> Expect {
        let shadow = Some(shadow);
        Expect { shadow, ..self }
    }

    fn remaining(self, remaining: &[f64]) -> Expect {
        let remaining = Some(remaining.to_vec());
        Expect { remaining, ..self }
    }

    fn counters(self, counters: &[&str]) -> Expect {
        let counters = Some(counters.iter().map(|c| c.to_string()).collect());
        Expect { counters, ..self }
    }

    fn room(self, room: &[(&str, f64)]) -> Expect {
        let room = Some(room.iter().map(|(c, r)| (c.to_string(), *r)).collect());
        Expect { room, ..self }
    }

    fn check(&self, d: &Decision, at: &str) {
        let at = format!("{at}: {d:?}");
        let reason = d.reason();
        if let Some(code) = self.code {
            assert_eq!(d.code, code, "{at}");
        }
        if let Some(verdict) = self.verdict {
            assert_eq!(d.verdict, verdict, "{at}");
        }
        if let Some(rule) = &self.rule {
            assert_eq!(d.rule(), rule, "{at}");
        }
        if let Some(expected) = &self.reason {
            assert_eq!(reason, expected, "{at}");
        }
        if let Some(start) = &self.reason_starts {
            assert!(reason.starts_with(start.as_str()), "{start:?} {at}");
        }
        for part in &self.reason_has {
            assert!(reason.contains(part.as_str()), "{part:?} {at}");
        }
        for part in &self.reason_lacks {
            assert!(!reason.contains(part.as_str()), "not {part:?} {at}");
        }
        assert!(!self.some_reason || !reason.is_empty(), "a reason {at}");
        match &self.retry {
            None => {}
            Some(None) => assert_eq!(d.retry_after_ms, None, "{at}"),
            Some(Some(within)) => assert!(
                d.retry_after_ms.is_some_and(|ms| within.contains(&ms)),
                "retry-after within {within:?} {at}"
            ),
        }
        if let Some(reserved) = self.reserved {
            assert_eq!(d.reservation.is_some(), reserved, "reserved {at}");
        }
        if let Some(shadow) = self.shadow {
            assert_eq!(d.shadow, shadow, "{at}");
        }
        if let Some(remaining) = &self.remaining {
            let got: Vec<f64> = d.limits.iter().map(|l| l.remaining()).collect();
            assert_eq!(&got, remaining, "{at}");
        }
        if let Some(counters) = &self.counters {
            let got: Vec<&str> = d.limits.iter().map(|l| d.counter_of(l)).collect();
            assert_eq!(&got, counters, "{at}");
        }
        if let Some(room) = &self.room {
            let mut got: Vec<(String, f64)> = d
                .limits
                .iter()
                .map(|l| (d.counter_of(l).to_owned(), l.remaining()))
                .collect();
            let mut room = room.clone();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            room.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, room, "{at}");
        }
    }
}

/// Run `steps` on an engine of `setup`'s.
fn run(setup: impl Into<Setup>, steps: impl IntoIterator<Item = Step>) {
    let (engine, clock) = engine(setup);
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Decide(decide) => {
                let (call, times, expect) = *decide;
                for n in 0..times {
                    let d = call.decide(&engine);
                    expect.check(&d, &format!("step {i}, call {n} of {call:?}"));
                }
            }
            Step::Advance(ns) => clock.advance_ns(ns),
            Step::Reload(doc) => {
                let policy = Policy::from_json_value(&doc).expect("valid policy");
                engine.reload(policy).unwrap();
            }
        }
    }
}

/// The table: each `name: { policy => [step, ...], ... }` is a test that runs each policy's
/// steps, in order, on an engine of its own.
macro_rules! decisions {
    ($(
        $(#[$meta:meta])*
        $name:ident: { $($setup:expr => $steps:expr),+ $(,)? }
    )*) => {
        $(
            $(#[$meta])*
            #[test]
            fn $name() {
                $( run($setup, $steps); )+
            }
        )*
    };
}

// --- defaults ----------------------------------------------------------------------------------

decisions! {
    default_deny_denies_an_unlisted_tool: {
        policy(json!({"listed": {}})) => [
            tool("other").is(
                code(DefaultDeny)
                    .verdict(Deny)
                    .rule("/default")
                    .some_reason()
                    .reserved(false)
                    .retry_never()
                    .remaining(&[])
                    .shadow(false),
            ),
        ],
    }

    default_is_deny_when_not_written: {
        json!({"version": "1", "tools": {"listed": {}}}) => [
            tool("other").is(code(DefaultDeny).verdict(Deny)),
        ],
    }

    default_allow_allows_an_unlisted_tool: {
        policy(json!({})).with(json!({"default": "allow"})) => [
            tool("anything").is(code(Allowed).verdict(Allow).rule("/default")),
        ],
    }

    listed_tool_without_action_is_allowed_by_its_rule: {
        policy(json!({"read_file": {}})) => [
            tool("read_file").is(code(Allowed).verdict(Allow).rule("/tools/read_file")),
        ],
    }

    tool_named_with_slash_and_tilde_gets_an_escaped_pointer: {
        policy(json!({"a/b~c*": {}})) => [
            tool("a/b~c").is(code(Allowed).rule("/tools/a~1b~0c*")),
        ],
    }
}

// --- hide --------------------------------------------------------------------------------------

fn hide_policy() -> Value {
    policy(json!({"delete_user": {}, "secret_*": {}, "read": {}})).with(json!({
        "default": "allow",
        "hide": ["delete_*", "internal", "*_destroy", "rm?"],
    }))
}

fn hidden(rule: &str) -> Expect {
    code(Hidden).verdict(Deny).rule(rule)
}

fn allowed_by(rule: &str) -> Expect {
    code(Allowed).verdict(Allow).rule(rule)
}

decisions! {
    hide_denies_the_names_it_matches_before_any_rule: {
        hide_policy() => [
            tool("delete_user").is(hidden("/hide/0")), // hide beats an exact tool rule
            tool("delete_").is(hidden("/hide/0")),
            tool("internal").is(hidden("/hide/1")),
            tool("vm_destroy").is(hidden("/hide/2")),
            tool("rm1").is(hidden("/hide/3")),
            tool("rm12").is(allowed_by("/default")), // ? is exactly one character
            tool("internals").is(allowed_by("/default")), // exact hide names are not prefixes
            tool("read").is(allowed_by("/tools/read")),
            tool("secret_x").is(allowed_by("/tools/secret_*")),
            tool("undelete_x").is(allowed_by("/default")), // globs are anchored
        ],
    }

    hidden_reason_names_the_tool: {
        hide_policy() => [tool("internal").is(code(Hidden).has("internal"))],
    }

    hide_beats_all_tools_and_limits_and_consumes_nothing: {
        policy(json!({"x_*": {"limits": [limit("c", 1)]}})).with(json!({"hide": ["x_hidden"]})) => [
            tool("x_hidden").grant("g").times(3).are(code(Hidden)),
            tool("x_other").grant("g").is(code(Allowed).remaining(&[0.0])),
        ],
    }
}

// --- matching precedence -----------------------------------------------------------------------

fn match_policy() -> Value {
    policy(json!({
        "*": {"reason": "star"},
        "delete_*": {},
        "delete_user*": {},
        "delete_user": {},
        "d?lete_*": {},
        "a*z": {},
        "a*": {},
        "a*y": {},
        "a?y": {},
    }))
}

decisions! {
    rule_precedence_exact_then_longest_prefix_then_most_literals_then_first: {
        match_policy() => [
            tool("delete_user").is(allowed_by("/tools/delete_user")), // exact beats every glob
            tool("delete_users").is(allowed_by("/tools/delete_user*")), // longest literal prefix
            tool("delete_repo").is(allowed_by("/tools/delete_*")),
            tool("dalete_x").is(allowed_by("/tools/d?lete_*")),
            tool("abz").is(allowed_by("/tools/a*z")), // same prefix: more literal characters
            tool("abc").is(allowed_by("/tools/a*")),
            tool("aby").is(allowed_by("/tools/a*y")), // a*y and a?y tie: the one written first
            tool("zzz").is(allowed_by("/tools/*")),
        ],
    }

    glob_tie_keeps_document_order_in_json_text: {
        text(r#"{"version": "1", "tools": {"a?y": {}, "a*y": {}}}"#) => [
            tool("aby").is(code(Allowed).rule("/tools/a?y")),
        ],
    }

    glob_tie_keeps_document_order_in_a_json_value: {
        json!({"version": "1", "tools": {"a?y": {}, "a*y": {}}}) => [
            tool("aby").is(code(Allowed).rule("/tools/a?y")),
        ],
    }
}

// --- action deny -------------------------------------------------------------------------------

decisions! {
    action_deny_with_reason: {
        policy(json!({"drop_table": {"action": "deny", "reason": "Never drop tables."}})) => [
            tool("drop_table").is(
                code(RuleDeny)
                    .verdict(Deny)
                    .rule("/tools/drop_table")
                    .reason("Never drop tables."),
            ),
        ],
    }

    action_deny_without_reason_names_the_tool: {
        policy(json!({"drop_table": {"action": "deny"}})) => [
            tool("drop_table").is(code(RuleDeny).has("drop_table")),
        ],
    }

    action_deny_by_glob_and_exact_allow_beside_it: {
        policy(json!({
            "delete_*": {"action": "deny", "reason": "no deletes"},
            "delete_tmp": {},
        })) => [
            tool("delete_db").is(code(RuleDeny).rule("/tools/delete_*")),
            tool("delete_tmp").is(code(Allowed)),
        ],
    }

    all_tools_deny_applies_to_every_listed_tool: {
        policy(json!({"a": {}})).with(json!({
            "default": "allow",
            "all_tools": {"action": "deny", "reason": "frozen"},
        })) => [
            tool("a").is(code(RuleDeny).rule("/all_tools").reason("frozen")),
            tool("unlisted").is(code(RuleDeny).rule("/all_tools").reason("frozen")),
        ],
    }

    action_deny_beats_conditions_and_limits: {
        policy(json!({"t": {
            "action": "deny",
            "require": [cond("args.missing", "eq", 1)],
            "limits": [limit("c", 1)],
        }})) => [
            tool("t").is(code(RuleDeny)), // no grant either: still RULE_DENY
        ],
    }
}

// --- conditions: every operator ----------------------------------------------------------------

/// One row of the operator table: an operator, its operand, a value it holds for, one it
/// fails for, and one of a type it cannot compare.
struct Row {
    op: &'static str,
    operand: Value,
    holds: Value,
    fails: Value,
    wrong: Value,
}

impl Row {
    fn condition(&self) -> Value {
        cond("args.v", self.op, self.operand.clone())
    }

    fn under_require(&self) {
        let denied = || code(ConditionFailed).verdict(Deny);
        run(
            require_policy(self.condition()),
            [
                arg_v(self.holds.clone()).is(allowed_by("/tools/t")),
                arg_v(self.fails.clone())
                    .is(denied().rule("/tools/t/require/0").has("does not hold")),
                tool("t")
                    .args(json!({"other": self.holds}))
                    .is(denied().rule("/tools/t/require/0").has("args.v is missing")),
                tool("t").is(denied()),
                arg_v(self.wrong.clone()).is(denied().has("cannot").has("args.v")),
            ],
        );
    }

    fn under_deny_if(&self) {
        let fired = || {
            code(ConditionFailed)
                .verdict(Deny)
                .rule("/tools/t/deny_if/0")
        };
        run(
            deny_if_policy(self.condition()),
            [
                arg_v(self.holds.clone()).is(fired()),
                arg_v(self.fails.clone()).is(code(Allowed)),
                // Fail closed: a missing path or a wrong type denies even where "holds"
                // means deny.
                tool("t").args(json!({})).is(fired().has("is missing")),
                arg_v(self.wrong.clone()).is(code(ConditionFailed).verdict(Deny)),
            ],
        );
    }

    fn under_not(&self) {
        for (place, inverted, held) in [
            ("require", Allowed, ConditionFailed),
            ("deny_if", ConditionFailed, Allowed),
        ] {
            let mut rule = serde_json::Map::new();
            rule.insert(place.into(), json!([{"not": self.condition()}]));
            let unknown = || {
                code(ConditionFailed)
                    .verdict(Deny)
                    .has("cannot be evaluated")
            };
            run(
                policy(json!({ "t": rule })),
                [
                    arg_v(self.fails.clone()).is(code(inverted)),
                    arg_v(self.holds.clone()).is(code(held)),
                    tool("t").args(json!({})).is(unknown()),
                    arg_v(self.wrong.clone()).is(unknown()),
                ],
            );
        }
    }
}

/// The operator table: each row is a module of three tests (under `require`, under
/// `deny_if`, and under `not`).
macro_rules! operators {
    ($($name:ident: ($op:literal, $operand:tt, $holds:tt, $fails:tt, $wrong:tt),)*) => {
        /// Every operator a row of the table is of.
        const TABLE_OPS: &[&str] = &[$($op),*];

        $(
            mod $name {
                use super::*;

                fn row() -> Row {
                    Row {
                        op: $op,
                        operand: json!($operand),
                        holds: json!($holds),
                        fails: json!($fails),
                        wrong: json!($wrong),
                    }
                }

                #[test]
                fn under_require() {
                    row().under_require();
                }

                #[test]
                fn under_deny_if() {
                    row().under_deny_if();
                }

                #[test]
                fn not_inverts_but_never_rescues_a_missing_path() {
                    row().under_not();
                }
            }
        )*
    };
}

mod operator {
    use super::*;

    operators! {
        eq_number: ("eq", 5, 5, 6, "5"),
        eq_string: ("eq", "prod", "prod", "dev", 1),
        eq_bool: ("eq", true, true, false, "true"),
        neq_string: ("neq", "a", "b", "a", 1),
        neq_number: ("neq", 5, 6, 5, "6"),
        in_strings: ("in", ["a", "b"], "a", "c", 1),
        not_in_strings: ("not_in", ["a", "b"], "c", "a", 1),
        in_numbers: ("in", [1, 2], 2.0, 3, "1"),
        lt_number: ("lt", 10, 9, 10, "9"),
        lte_number: ("lte", 10, 10, 11, "9"),
        gt_number: ("gt", 10, 11, 10, true),
        gte_number: ("gte", 10, 10, 9.5, null),
        regex_search: ("regex", "^ab+c$", "abbc", "ac", 5),
        not_regex_search: ("not_regex", "^rm", "ls", "rm -rf", ["rm"]),
        contains_in_a_string: ("contains", "foo", "xfooy", "bar", 5),
        contains_in_an_array: ("contains", "x", ["x", "y"], ["y"], {"x": 1}),
        not_contains_in_a_string: ("not_contains", "foo", "bar", "foo!", {"a": 1}),
        starts_with_string: ("starts_with", "prod/", "prod/x", "dev/x", 1),
        ends_with_string: ("ends_with", ".txt", "a.txt", "a.md", 1),
        glob_star: ("glob", "*.txt", "a.txt", "a.md", 1),
        glob_question_mark: ("glob", "f?o", "fao", "fo", false),
    }

    #[test]
    fn every_operator_is_covered() {
        let covered: BTreeSet<&str> = TABLE_OPS.iter().copied().chain(["exists"]).collect();
        let all: BTreeSet<&str> = Op::ALL.iter().map(|(name, _)| *name).collect();
        assert_eq!(covered, all);
    }
}

decisions! {
    exists_never_fails_closed: {
        require_policy(exists("args.v")) => [
            arg_v(json!(null)).is(code(Allowed)),
            arg_v(json!({"deep": [1]})).is(code(Allowed)),
            tool("t").args(json!({})).is(code(ConditionFailed).lacks("cannot be evaluated")),
        ],
        // Under deny_if a missing field simply does not fire.
        deny_if_policy(exists("args.v")) => [
            tool("t").args(json!({})).is(code(Allowed)),
            tool("t").is(code(Allowed)),
            arg_v(json!(0)).is(code(ConditionFailed)),
        ],
    }

    exists_false_requires_absence: {
        require_policy(cond("args.debug", "exists", false)) => [
            tool("t").args(json!({})).is(code(Allowed)),
            tool("t").args(json!({"debug": false})).is(code(ConditionFailed)),
        ],
    }

    eq_compares_numbers_by_value_and_never_coerces: {
        require_policy(cond("args.v", "eq", 1)) => [arg_v(json!(1.0)).is(code(Allowed))],
        require_policy(cond("args.v", "eq", 1.0)) => [arg_v(json!(1)).is(code(Allowed))],
        require_policy(cond("args.v", "eq", 0.5)) => [arg_v(json!(0.5)).is(code(Allowed))],
        require_policy(cond("args.v", "eq", 10)) => [
            arg_v(json!(10.000001)).is(code(ConditionFailed)),
        ],
        // strings are never coerced
        require_policy(cond("args.v", "eq", 5)) => [arg_v(json!("5")).is(code(ConditionFailed))],
        require_policy(cond("args.v", "eq", "5")) => [arg_v(json!(5)).is(code(ConditionFailed))],
        // booleans are not numbers
        require_policy(cond("args.v", "eq", 1)) => [arg_v(json!(true)).is(code(ConditionFailed))],
        require_policy(cond("args.v", "eq", true)) => [arg_v(json!(1)).is(code(ConditionFailed))],
        require_policy(cond("args.v", "eq", json!(null))) => [
            arg_v(json!(null)).is(code(Allowed)),
        ],
        require_policy(cond("args.v", "eq", json!(null))) => [
            arg_v(json!(0)).is(code(ConditionFailed)),
        ],
        require_policy(cond("args.v", "eq", json!([1, 2]))) => [
            arg_v(json!([1.0, 2])).is(code(Allowed)),
        ],
        require_policy(cond("args.v", "eq", json!({"a": 1}))) => [
            arg_v(json!({"a": 1.0})).is(code(Allowed)),
        ],
        require_policy(cond("args.v", "eq", json!({"a": 1}))) => [
            arg_v(json!([1])).is(code(ConditionFailed)),
        ],
        // integers compare exactly
        require_policy(cond("args.v", "eq", 9_007_199_254_740_991_u64)) => [
            arg_v(json!(9_007_199_254_740_991_u64)).is(code(Allowed)),
        ],
        require_policy(cond("args.v", "eq", 9_007_199_254_740_991_u64)) => [
            arg_v(json!(9_007_199_254_740_990_u64)).is(code(ConditionFailed)),
        ],
    }
}

/// An argument's JSON text around an integer's.
type Around = fn(&str) -> String;

/// JavaScript, and Go decoding into `any`, read an integer beyond 2^53 rounded: a condition
/// reading one, alone or inside an array or object, cannot be evaluated, and JSON text
/// holding one is refused.
#[test]
fn integers_beyond_2_53_are_never_compared() {
    let two_53 = 9_007_199_254_740_992_u64;
    // (op, operand, the argument's text around the integer)
    let ops: [(&str, Value, Around); 8] = [
        ("eq", json!(two_53), |n| n.to_owned()),
        ("neq", json!(two_53), |n| n.to_owned()),
        ("lt", json!(two_53), |n| n.to_owned()),
        ("gte", json!(two_53), |n| n.to_owned()),
        ("in", json!([1, two_53]), |n| n.to_owned()),
        ("contains", json!(1), |n| format!("[1, {n}]")),
        ("eq", json!([two_53]), |n| format!("[{n}]")),
        ("neq", json!({"a": 1}), |n| format!(r#"{{"a": {n}}}"#)),
    ];
    let beyond = ["9007199254740992", "9007199254740993", "-9007199254740993"];
    for (op, operand, around) in ops {
        let (engine, _) = engine(require_policy(cond("args.v", op, operand.clone())));
        for n in beyond {
            let value: Value = serde_json::from_str(&around(n)).unwrap();
            let d = arg_v(value).decide(&engine);
            let at = format!("{op} {operand} with {n}: {d:?}");
            assert_eq!(d.code, ConditionFailed, "{at}");
            assert!(d.reason().contains("could be read two ways"), "{at}");
        }
        for n in beyond.into_iter().chain(["18446744073709551616"]) {
            let text = format!(r#"{{"v": {}}}"#, around(n));
            let refused = parse_json_arguments(text.as_bytes());
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.told.contains("beyond 2^53")),
                "{text}: {refused:?}"
            );
        }
    }
}

decisions! {
    numeric_comparison_mixes_int_and_float: {
        require_policy(cond("args.v", "lt", 1000)) => [
            arg_v(json!(999.99)).is(code(Allowed)),
            arg_v(json!(1000.0)).is(code(ConditionFailed)),
        ],
        require_policy(cond("args.v", "gte", 0.5)) => [
            arg_v(json!(1)).is(code(Allowed)),
            arg_v(json!(0)).is(code(ConditionFailed)),
        ],
    }

    in_with_mixed_types_compares_within_the_type: {
        require_policy(cond("args.v", "in", json!(["a", 1]))) => [
            arg_v(json!("a")).is(code(Allowed)),
            arg_v(json!(1.0)).is(code(Allowed)),
            arg_v(json!("b")).is(code(ConditionFailed)),
            arg_v(json!(true)).is(code(ConditionFailed).has("cannot be evaluated")),
        ],
    }

    regex_is_unanchored_search_and_glob_is_anchored: {
        require_policy(cond("args.v", "regex", "rm")) => [
            arg_v(json!("sudo rm x")).is(code(Allowed)),
        ],
        require_policy(cond("args.v", "glob", "rm*")) => [
            arg_v(json!("sudo rm x")).is(code(ConditionFailed)),
        ],
    }

    string_ops_on_subject_fields: {
        require_policy(cond("subject.agent", "starts_with", "bot-")) => [
            tool("t").agent("bot-1").is(code(Allowed)),
            tool("t").agent("human").is(code(ConditionFailed)),
            tool("t").is(code(ConditionFailed).has("subject.agent is missing")),
        ],
    }

    numeric_op_on_a_request_string_is_a_type_mismatch: {
        deny_if_policy(cond("subject.grant", "gt", 5)) => [
            tool("t").grant("7").is(code(ConditionFailed).verdict(Deny).has("cannot")),
        ],
    }
}

// --- combinators -------------------------------------------------------------------------------

/// `args.force` is there and true.
fn force() -> Value {
    json!({"all": [exists("args.force"), cond("args.force", "eq", true)]})
}

decisions! {
    optional_field_idiom_under_deny_if: {
        deny_if_policy(force()) => [
            // exists fails first: eq is never evaluated
            tool("t").args(json!({})).is(code(Allowed)),
            tool("t").args(json!({"force": false})).is(code(Allowed)),
            tool("t")
                .args(json!({"force": true}))
                .is(code(ConditionFailed).rule("/tools/t/deny_if/0")),
            // wrong type: fail closed
            tool("t").args(json!({"force": "yes"})).is(code(ConditionFailed)),
        ],
    }

    optional_field_idiom_under_require: {
        require_policy(force()) => [
            // all fails because exists fails
            tool("t").args(json!({})).is(code(ConditionFailed)
                .rule("/tools/t/require/0")
                .lacks("cannot be evaluated")),
            tool("t").args(json!({"force": false})).is(code(ConditionFailed)
                .rule("/tools/t/require/0")
                .lacks("cannot be evaluated")),
            tool("t").args(json!({"force": true})).is(code(Allowed)),
        ],
    }

    any_short_circuits_on_the_first_holding_item: {
        require_policy(json!({"any": [
            cond("args.a", "eq", 1),
            cond("args.missing", "eq", 2),
        ]})) => [
            tool("t").args(json!({"a": 1})).is(code(Allowed)),
            // reaches the missing path
            tool("t").args(json!({"a": 2})).is(code(ConditionFailed)
                .rule("/tools/t/require/0/any/1")
                .has("args.missing is missing")),
        ],
    }

    all_short_circuits_on_the_first_failing_item: {
        deny_if_policy(json!({"all": [
            cond("args.a", "eq", 1),
            cond("args.missing", "eq", 2),
        ]})) => [
            tool("t").args(json!({"a": 2})).is(code(Allowed)),
            tool("t")
                .args(json!({"a": 1}))
                .is(code(ConditionFailed).rule("/tools/t/deny_if/0/all/1")),
        ],
    }

    empty_all_holds_and_empty_any_fails: {
        require_policy(json!({"all": []})) => [tool("t").is(code(Allowed))],
        require_policy(json!({"any": []})) => [tool("t").is(code(ConditionFailed))],
    }

    // deny when env is prod and not (user is admin or the change is forced)
    nested_combinators: {
        deny_if_policy(json!({"all": [
            cond("args.env", "eq", "prod"),
            {"not": {"any": [cond("subject.attributes.role", "eq", "admin"), force()]}},
        ]})) => [
            tool("t").args(json!({"env": "dev"})).is(code(Allowed)),
            tool("t").args(json!({"env": "prod"})).is(code(ConditionFailed)),
            tool("t").args(json!({"env": "prod"})).attr("role", "admin").is(code(Allowed)),
            tool("t")
                .args(json!({"env": "prod", "force": true}))
                .attr("role", "dev")
                .is(code(Allowed)),
            tool("t")
                .args(json!({"env": "prod"}))
                .attr("role", "dev")
                .is(code(ConditionFailed).rule("/tools/t/deny_if/0")),
        ],
    }
}

// --- conditions: items, groups, reasons --------------------------------------------------------

decisions! {
    deny_if_any_item_holding_denies_and_require_all_must_hold: {
        policy(json!({"t": {
            "deny_if": [cond("args.a", "eq", 1), cond("args.b", "eq", 1)],
            "require": [cond("args.c", "eq", 1), cond("args.d", "eq", 1)],
        }})) => [
            tool("t").args(json!({"a": 0, "b": 0, "c": 1, "d": 1})).is(code(Allowed)),
            tool("t")
                .args(json!({"a": 0, "b": 1, "c": 1, "d": 1}))
                .is(any().rule("/tools/t/deny_if/1")),
            tool("t")
                .args(json!({"a": 0, "b": 0, "c": 1, "d": 0}))
                .is(any().rule("/tools/t/require/1")),
            // deny_if is checked before require
            tool("t")
                .args(json!({"a": 1, "b": 0, "c": 0, "d": 1}))
                .is(any().rule("/tools/t/deny_if/0")),
        ],
    }

    rule_reason_is_the_reason_of_a_condition_denial: {
        policy(json!({"t": {
            "reason": "Only USD.",
            "require": [cond("args.currency", "eq", "USD")],
        }})) => [
            tool("t").args(json!({"currency": "EUR"})).is(any().reason("Only USD.")),
            tool("t")
                .args(json!({}))
                .is(any().reason_starts("Only USD. (").has("args.currency is missing")),
        ],
    }

    deny_if_group_fires_when_all_hold_and_gives_on_deny: {
        policy(json!({"t": {"reason": "rule reason", "deny_if": [{
            "conditions": [cond("args.env", "eq", "prod"), cond("args.size", "gt", 10)],
            "on_deny": "Big prod changes need a ticket.",
        }]}})) => [
            tool("t").args(json!({"env": "prod", "size": 11})).is(code(ConditionFailed)
                .rule("/tools/t/deny_if/0")
                .reason("Big prod changes need a ticket.")),
            tool("t").args(json!({"env": "prod", "size": 10})).is(code(Allowed)),
            // Short-circuit inside the group: size is never read when env differs.
            tool("t").args(json!({"env": "dev"})).is(code(Allowed)),
            // But a missing value the group reaches fails closed, at the condition's pointer.
            tool("t")
                .args(json!({"env": "prod"}))
                .is(code(ConditionFailed).rule("/tools/t/deny_if/0/conditions/1")),
        ],
    }

    empty_deny_if_group_always_fires: {
        policy(json!({"t": {"deny_if": [{
            "conditions": [],
            "on_deny": "Requires human approval.",
        }]}})) => [
            tool("t").is(code(ConditionFailed)
                .verdict(Deny)
                .rule("/tools/t/deny_if/0")
                .reason("Requires human approval.")),
        ],
    }

    require_group_fails_when_any_condition_fails: {
        policy(json!({"t": {"require": [{
            "conditions": [cond("args.a", "eq", 1), cond("args.b", "eq", 1)],
            "on_deny": "a and b must be 1",
        }]}})) => [
            tool("t").args(json!({"a": 1, "b": 1})).is(code(Allowed)),
            tool("t").args(json!({"a": 1, "b": 2})).is(code(ConditionFailed)
                .rule("/tools/t/require/0")
                .reason("a and b must be 1")),
        ],
    }

    condition_denials_without_any_reason_say_which_condition: {
        policy(json!({"t": {
            "require": [cond("args.b", "eq", 2)],
            "deny_if": [{"conditions": [cond("args.a", "eq", 1)]}],
        }})) => [
            tool("t").args(json!({"a": 1, "b": 2})).is(code(ConditionFailed)
                .rule("/tools/t/deny_if/0")
                .reason("denied: conditions of /tools/t/deny_if/0 hold")),
            tool("t").args(json!({"a": 0, "b": 3})).is(code(ConditionFailed)
                .rule("/tools/t/require/0")
                .reason("denied: condition /tools/t/require/0 does not hold (required)")),
            tool("t").args(json!({"a": 0, "b": 2})).is(code(Allowed)),
        ],
    }

    group_without_on_deny_uses_the_rule_reason: {
        policy(json!({"t": {
            "reason": "rule says no",
            "deny_if": [{"conditions": [cond("args.a", "eq", 1)]}],
        }})) => [
            tool("t").args(json!({"a": 1})).is(any().reason("rule says no")),
        ],
    }

    all_tools_conditions_apply_to_every_call: {
        policy(json!({"a": {}})).with(json!({
            "default": "allow",
            "all_tools": {"deny_if": [cond("subject.attributes.suspended", "eq", "yes")]},
        })) => [
            tool("a").attr("suspended", "no").is(code(Allowed)),
            tool("a")
                .attr("suspended", "yes")
                .is(code(ConditionFailed).rule("/all_tools/deny_if/0")),
            tool("a").is(code(ConditionFailed)), // fail closed: no such attribute at all
            tool("b").attr("suspended", "no").is(code(Allowed)),
            tool("b")
                .attr("suspended", "yes")
                .is(code(ConditionFailed).rule("/all_tools/deny_if/0")),
            tool("b").is(code(ConditionFailed)),
        ],
    }
}

// --- paths -------------------------------------------------------------------------------------

/// Tool `t`, requiring the value at `path` to be `value`.
fn path_is(path: &str, value: impl Into<Value>) -> Value {
    require_policy(cond(path, "eq", value))
}

decisions! {
    condition_paths: {
        path_is("args.a.b", 1) => [tool("t").args(json!({"a": {"b": 1}})).is(code(Allowed))],
        path_is("args.a.b", 1) => [
            tool("t").args(json!({"a": {"c": 1}})).is(code(ConditionFailed)),
        ],
        // not an object
        path_is("args.a.b", 1) => [tool("t").args(json!({"a": 5})).is(code(ConditionFailed))],
        path_is("args.items[0].name", "x") => [
            tool("t").args(json!({"items": [{"name": "x"}]})).is(code(Allowed)),
        ],
        path_is("args.items[1].name", "x") => [
            tool("t").args(json!({"items": [{"name": "x"}]})).is(code(ConditionFailed)),
        ],
        path_is("args.items[0]", 7) => [
            tool("t").args(json!({"items": {"0": 7}})).is(code(ConditionFailed)),
        ],
        path_is(r#"args["key.with.dots"]"#, 1) => [
            tool("t").args(json!({"key.with.dots": 1})).is(code(Allowed)),
        ],
        path_is("args.m[1][0]", 3) => [
            tool("t").args(json!({"m": [[1], [3]]})).is(code(Allowed)),
        ],
        path_is("subject.grant", "g1") => [tool("t").grant("g1").is(code(Allowed))],
        path_is("subject.grant", "g1") => [tool("t").grant("g2").is(code(ConditionFailed))],
        path_is("subject.session", "s1") => [tool("t").session("s1").is(code(Allowed))],
        path_is("subject.agent", "bot") => [tool("t").agent("bot").is(code(Allowed))],
        path_is("subject.agent", "bot") => [tool("t").grant("bot").is(code(ConditionFailed))],
        path_is("subject.attributes.team", "infra") => [
            tool("t").attr("team", "infra").is(code(Allowed)),
        ],
        path_is("subject.attributes.team", "infra") => [
            tool("t").attr("org", "infra").is(code(ConditionFailed)),
        ],
        path_is("server", "github") => [tool("t").server("github").is(code(Allowed))],
        path_is("server", "github") => [tool("t").is(code(ConditionFailed))],
        path_is("tool", "t") => [tool("t").is(code(Allowed))],
    }

    tool_path_under_a_glob_rule: {
        policy(json!({"db_*": {"deny_if": [cond("tool", "ends_with", "_drop")]}})) => [
            tool("db_read").is(code(Allowed)),
            tool("db_table_drop").is(code(ConditionFailed)),
        ],
    }
}

// --- limits: PolicyLayer's create-ami example --------------------------------------------------

#[test]
fn create_ami_thirty_per_minute_per_grant() {
    let (engine, clock) = engine(text(POLICYLAYER[0].0));
    let alice = tool("create-ami").grant("alice");
    for i in 0..30 {
        let d = alice.decide(&engine);
        let room = f64::from(29 - i);
        allowed_by("/tools/create-ami")
            .remaining(&[room])
            .check(&d, &format!("call {i}"));
    }

    let denied = alice.decide(&engine);
    // A minute plus at most one sub-bucket of 5 s.
    code(RateLimited)
        .verdict(Deny)
        .rule("/tools/create-ami/limits/0")
        .retry(1..=65_000)
        .reserved(false)
        .has("create-ami_rate")
        .counters(&["create-ami_rate"])
        .remaining(&[0.0])
        .check(&denied, "call 30");
    assert_eq!(denied.limit_of(&denied.limits[0]).max, 30.0);

    // Another grant has its own counter.
    assert_eq!(
        tool("create-ami").grant("bob").decide(&engine).code,
        Allowed
    );

    // Still full just before the retry-after, free again at it.
    let retry = denied.retry_after_ms.unwrap();
    clock.advance_ns((retry - 1) * MS);
    assert_eq!(alice.decide(&engine).code, RateLimited);
    clock.advance_ns(MS);
    assert_eq!(alice.decide(&engine).code, Allowed);
}

#[test]
fn limit_state_entries() {
    let doc = policy(json!({"t": {"limits": [
        limit("per_min", 3),
        limit("per_hour", 5).with(json!({"window": "hour"})),
    ]}}));
    let (engine, clock) = engine(doc);
    let t = tool("t").grant("g");
    let d = t.decide(&engine);
    let of = |d: &Decision| -> Vec<(String, String, &'static str, f64, u64)> {
        d.limits
            .iter()
            .map(|l| {
                let info = d.limit_of(l);
                let counter = d.counter_of(l).to_owned();
                (
                    counter,
                    d.rule_of(l).to_owned(),
                    info.scope.as_str(),
                    info.max,
                    info.window_ms,
                )
            })
            .collect()
    };
    let entry = |counter: &str, rule: &str, max, window_ms| {
        (counter.to_owned(), rule.to_owned(), "grant", max, window_ms)
    };
    assert_eq!(
        of(&d),
        [
            entry("per_min", "/tools/t/limits/0", 3.0, 60_000),
            entry("per_hour", "/tools/t/limits/1", 5.0, 3_600_000),
        ]
    );
    any().remaining(&[2.0, 4.0]).check(&d, "first call");
    assert!(
        (60_000..=65_000).contains(&d.limits[0].reset_in_ms),
        "{d:?}"
    );
    assert!(
        (3_600_000..=3_900_000).contains(&d.limits[1].reset_in_ms),
        "{d:?}"
    );

    clock.advance_ns(10 * S);
    let probe = t.clone().dry_run().decide(&engine);
    any().remaining(&[1.0, 3.0]).check(&probe, "dry run");
    // the one call counted leaves the window 60 s (plus at most a 5 s sub-bucket) after it
    assert!(
        (50_000..=55_000).contains(&probe.limits[0].reset_in_ms),
        "{probe:?}"
    );
    let d = t.decide(&engine);
    any().remaining(&[1.0, 3.0]).check(&d, "second call");
}

/// Tool `t` with one limit of `max` calls a minute, keyed by `scope`.
fn scoped(max: u32, scope: &str) -> Value {
    policy(json!({"t": {"limits": [limit("c", max).with(json!({"scope": scope}))]}}))
}

decisions! {
    window_slides_rather_than_resetting: {
        policy(json!({"t": {"limits": [limit("c", 4)]}})) => [
            tool("t").grant("g").times(2).are(verdict(Allow)),
            advance(30 * S),
            tool("t").grant("g").times(2).are(verdict(Allow)),
            advance(30 * S),
            // 60 s after the first two they may still count (for up to one 5 s sub-bucket) ...
            tool("t").grant("g").dry_run().is(code(RateLimited)),
            advance(5 * S),
            // ... 65 s after, they have left; the later two still count.
            tool("t").grant("g").is(verdict(Allow).remaining(&[1.0])),
            tool("t").grant("g").is(verdict(Allow)),
            tool("t").grant("g").is(code(RateLimited)),
        ],
    }

    scopes_key_the_counter: {
        scoped(2, "grant") => [
            tool("t").grant("a").times(2).are(code(Allowed)),
            tool("t").grant("a").is(code(RateLimited)),
            tool("t").grant("b").is(code(Allowed)),
        ],
        scoped(2, "session") => [
            tool("t").session("a").times(2).are(code(Allowed)),
            tool("t").session("a").is(code(RateLimited)),
            tool("t").session("b").is(code(Allowed)),
        ],
        scoped(2, "agent") => [
            tool("t").agent("a").times(2).are(code(Allowed)),
            tool("t").agent("a").is(code(RateLimited)),
            tool("t").agent("b").is(code(Allowed)),
        ],
        scoped(2, "server") => [
            tool("t").server("a").times(2).are(code(Allowed)),
            tool("t").server("a").is(code(RateLimited)),
            tool("t").server("b").is(code(Allowed)),
        ],
        // global: everyone shares it
        scoped(2, "global") => [
            tool("t").grant("a").times(2).are(code(Allowed)),
            tool("t").grant("a").is(code(RateLimited)),
            tool("t").grant("zzz").is(code(RateLimited)),
        ],
    }

    server_scope_without_a_server_counts_on_one_key: {
        scoped(1, "server") => [
            tool("t").is(code(Allowed)),
            tool("t").is(code(RateLimited)),
        ],
    }

    two_tools_sharing_a_counter: {
        policy(json!({
            "a": {"limits": [limit("writes", 5)]},
            "b": {"limits": [limit("writes", 5)]},
        })) => [
            tool("a").grant("g").times(3).are(code(Allowed)),
            tool("b").grant("g").times(2).are(code(Allowed)),
            tool("b").grant("g").is(code(RateLimited)),
            tool("a").grant("g").is(code(RateLimited)),
        ],
    }

    limit_by_grant_without_grant_is_an_invalid_request: {
        policy(json!({"t": {"limits": [limit("c", 5)]}})) => [
            tool("t").is(no_grant()),
            tool("t").grant("").is(no_grant()),
            tool("t").agent("a").session("s").is(no_grant()),
            tool("t").grant("g").is(any().remaining(&[4.0])),
        ],
    }

    limits_of_a_default_allowed_tool_come_from_all_tools: {
        policy(json!({})).with(json!({
            "default": "allow",
            "all_tools": {"limits": [limit("all", 2).with(json!({"scope": "session"}))]},
        })) => [
            tool("x").session("s").is(code(Allowed)),
            tool("y").session("s").is(code(Allowed)),
            tool("z").session("s").is(code(RateLimited)),
        ],
    }
}

fn no_grant() -> Expect {
    code(InvalidRequest)
        .verdict(Deny)
        .rule("/tools/t/limits/0")
        .has("grant")
}

#[test]
fn full_counter_table_fails_closed() {
    let doc = policy(json!({"t": {"limits": [limit("c", 5)]}}));
    let (engine, _) = engine(Setup::from(doc).capacity(1));
    assert_eq!(tool("t").grant("a").decide(&engine).code, Allowed);
    let d = tool("t").grant("b").decide(&engine);
    code(RateLimited)
        .verdict(Deny)
        .has("table is full")
        .check(&d, "second grant");
    assert_eq!(engine.stats().table_full(), 1);
}

// --- spend limits ------------------------------------------------------------------------------

/// `pay` spends `args.amount` of 500 a day per agent.
fn spend() -> Value {
    let budget = json!({"window": "day", "scope": "agent", "cost": "args.amount"});
    policy(json!({"pay": {"limits": [limit("spend", 500).with(budget)]}}))
}

/// A payment by agent `a` with these arguments.
fn pay(args: Value) -> Call {
    tool("pay").agent("a").args(args)
}

/// The whole budget is still there: a payment of all of it is allowed.
fn whole_budget_left() -> Step {
    pay(json!({"amount": 500})).is(code(Allowed).remaining(&[0.0]))
}

fn bad_cost() -> Expect {
    code(InvalidRequest)
        .verdict(Deny)
        .rule("/tools/pay/limits/0/cost")
        .reserved(false)
        .has("args.amount")
}

decisions! {
    spend_limit_counts_the_cost: {
        spend() => [
            pay(json!({"amount": 300})).is(code(Allowed).remaining(&[200.0])),
            pay(json!({"amount": 200})).is(code(Allowed).remaining(&[0.0])),
            pay(json!({"amount": 1})).is(code(RateLimited)
                .verdict(Deny)
                .retry(1..=u64::MAX)
                .lacks("calls")), // a budget, not a number of calls
            // a zero cost still fits
            pay(json!({"amount": 0})).is(code(Allowed)),
        ],
    }

    spend_limit_fractional_amounts: {
        spend() => [
            pay(json!({"amount": 0.5})).is(any().remaining(&[499.5])),
            pay(json!({"amount": 499.25})).is(any().remaining(&[0.25])),
            pay(json!({"amount": 0.5})).is(code(RateLimited)),
            pay(json!({"amount": 0.25})).is(code(Allowed)),
        ],
    }

    /// Costs are fixed-point thousandths (docs/counters.md): 2.007 counts 2007, not the 2008
    /// that ceil(2.007 * 1000.0) gives in floating point.
    spend_amounts_are_exact_to_a_thousandth: {
        spend() => [
            pay(json!({"amount": 497.993})).is(code(Allowed).remaining(&[2.007])),
            pay(json!({"amount": 2.007})).is(code(Allowed).remaining(&[0.0])),
        ],
    }

    /// A budget of 2.007 must not admit a cost of 2.008.
    fractional_budget_is_never_exceeded: {
        policy(json!({"pay": {"limits": [limit("s", 2.007).with(json!({
            "window": "day", "scope": "agent", "cost": "args.amount",
        }))]}})) => [
            pay(json!({"amount": 2.008})).is(code(RateLimited).verdict(Deny)),
        ],
    }

    cost_larger_than_the_limit_is_never_allowed: {
        spend() => [pay(json!({"amount": 501})).is(code(RateLimited).retry_never())],
    }

    bad_cost_is_an_invalid_request_and_consumes_nothing: {
        spend() => [pay(json!({"amount": -1})).is(bad_cost()), whole_budget_left()],
        spend() => [pay(json!({"amount": -0.01})).is(bad_cost()), whole_budget_left()],
        spend() => [pay(json!({})).is(bad_cost()), whole_budget_left()], // missing
        spend() => [pay(json!({"amount": "10"})).is(bad_cost()), whole_budget_left()],
        spend() => [pay(json!({"amount": true})).is(bad_cost()), whole_budget_left()],
        spend() => [pay(json!({"amount": null})).is(bad_cost()), whole_budget_left()],
        spend() => [pay(json!({"amount": [1]})).is(bad_cost()), whole_budget_left()],
        spend() => [tool("pay").agent("a").is(bad_cost()), whole_budget_left()], // no arguments
    }
}

#[test]
fn spend_limit_in_the_example_policy() {
    let (engine, _) = engine(example("policy.json"));
    let transfer = |amount: u32| {
        tool("transfer_funds")
            .grant("bot-1")
            .args(json!({"amount": amount, "currency": "USD"}))
            .decide(&engine)
    };
    let d = transfer(250);
    allowed_by("/tools/transfer_funds")
        .remaining(&[4750.0])
        .check(&d, "250");
    assert!(engine.release(d.reservation.unwrap()));
    code(ConditionFailed)
        .rule("/tools/transfer_funds/require/1")
        .check(&transfer(1000), "1000");
}

// --- all or nothing ----------------------------------------------------------------------------

/// Tool `t` counts on its own limit and on the one of `all_tools`; `u` on that one only.
fn all_or_nothing(tool_max: u32, all_max: u32) -> Value {
    let all = global_limit("all_c", all_max);
    policy(json!({"t": {"limits": [limit("tool_c", tool_max)]}, "u": {}}))
        .with(json!({"all_tools": {"limits": [all]}}))
}

decisions! {
    full_tool_limit_does_not_consume_all_tools: {
        all_or_nothing(2, 5) => [
            tool("t").grant("g").times(2).are(code(Allowed)),
            tool("t").grant("g").is(code(RateLimited)),
            tool("t").grant("g").is(any()
                .rule("/tools/t/limits/0")
                .room(&[("tool_c", 0.0), ("all_c", 3.0)])),
            tool("u").dry_run().is(any().remaining(&[2.0])), // 5 - 2 used - this call
            tool("u").times(3).are(code(Allowed)),
            tool("u").is(code(RateLimited)),
        ],
    }

    retry_after_is_the_longest_wait_among_full_limits: {
        policy(json!({"t": {"limits": [
            limit("m", 1),
            limit("h", 1).with(json!({"window": "hour"})),
        ]}})) => [
            tool("t").grant("g").is(verdict(Allow)),
            tool("t").grant("g").is(code(RateLimited).retry(3_600_000..=3_900_000)),
        ],
    }
}

#[test]
fn full_all_tools_limit_gives_back_the_tool_limit() {
    let (engine, _) = engine(all_or_nothing(10, 3));
    let reservations: Vec<u64> = (0..3)
        .map(|_| tool("u").decide(&engine).reservation.unwrap())
        .collect();
    for i in 0..4 {
        code(RateLimited)
            .rule("/all_tools/limits/0")
            .check(&tool("t").grant("g").decide(&engine), &format!("call {i}"));
    }
    for r in reservations {
        assert!(engine.release(r));
    }
    code(Allowed)
        .room(&[("tool_c", 9.0), ("all_c", 2.0)])
        .check(&tool("t").grant("g").decide(&engine), "after release");
}

// --- reservations and release ------------------------------------------------------------------

#[test]
fn release_gives_counts_back_once() {
    let (engine, _) = engine(policy(json!({"t": {"limits": [limit("c", 2)]}})));
    let t = tool("t").grant("g");
    let first = t.decide(&engine).reservation.unwrap();
    let second = t.decide(&engine).reservation.unwrap();
    assert_ne!(first, second);
    assert_eq!(t.decide(&engine).code, RateLimited);

    assert!(engine.release(first));
    assert!(!engine.release(first));
    code(Allowed)
        .remaining(&[0.0])
        .check(&t.decide(&engine), "after release");
    assert_eq!(t.decide(&engine).code, RateLimited);
}

#[test]
fn release_of_a_spend_gives_the_amount_back() {
    let (engine, _) = engine(spend());
    let d = pay(json!({"amount": 450})).decide(&engine);
    assert!(engine.release(d.reservation.unwrap()));
    code(Allowed)
        .remaining(&[0.0])
        .check(&pay(json!({"amount": 500})).decide(&engine), "500");
}

#[test]
fn release_of_unknown_ids_is_false() {
    let (engine, _) = engine(policy(json!({"t": {"limits": [limit("c", 2)]}})));
    assert!(!engine.release(0));
    assert!(!engine.release(123_456_789));
    let reservation = tool("t").grant("g").decide(&engine).reservation.unwrap();
    assert!(!engine.release(reservation + 1));
    assert!(engine.release(reservation));
}

decisions! {
    decisions_without_limits_reserve_nothing: {
        policy(json!({"t": {}})) => [tool("t").is(code(Allowed).reserved(false))],
    }
}

#[test]
fn old_reservations_are_refused_once_the_log_wraps() {
    let doc = policy(json!({"t": {"limits": [limit("c", 100)]}}));
    let (engine, _) = engine(Setup::from(doc).reservations(2));
    let t = tool("t").grant("g");
    let old = t.decide(&engine).reservation.unwrap();
    for _ in 0..3 {
        t.decide(&engine);
    }
    assert!(!engine.release(old));
}

// --- dry run -----------------------------------------------------------------------------------

decisions! {
    dry_run_does_not_consume: {
        policy(json!({"t": {"limits": [limit("c", 2)]}})) => [
            tool("t")
                .grant("g")
                .dry_run()
                .times(5)
                .are(code(Allowed).reserved(false).remaining(&[1.0])),
            tool("t").grant("g").times(2).are(code(Allowed)),
            tool("t").grant("g").is(code(RateLimited)),
            tool("t")
                .grant("g")
                .dry_run()
                .is(code(RateLimited).remaining(&[0.0]).retry(1..=u64::MAX)),
        ],
    }

    dry_run_still_evaluates_conditions: {
        require_policy(cond("args.x", "eq", 1)) => [
            tool("t").args(json!({"x": 2})).dry_run().is(code(ConditionFailed)),
        ],
    }
}

// --- shadow mode -------------------------------------------------------------------------------

/// What a shadow rule reports: allowed, and what enforcing would have said.
fn shadow(code_: Code) -> Expect {
    code(code_).verdict(Allow).shadow(true)
}

/// A rule enforcing beside a shadow one: `allowed` of `calls` calls allowed, the rest denied
/// by `rule` (and not in shadow).
fn enforced(call: Call, calls: usize, allowed: usize, rule: &str) -> [Step; 2] {
    [
        call.clone().times(allowed).are(verdict(Allow)),
        call.times(calls - allowed)
            .are(verdict(Deny).rule(rule).shadow(false)),
    ]
}

decisions! {
    top_level_shadow_reports_what_enforce_would_do: {
        policy(json!({"t": {"limits": [limit("c", 1)]}, "x": {"action": "deny"}}))
            .with(json!({"mode": "shadow"})) => [
            tool("unknown").grant("g").is(shadow(DefaultDeny)),
            tool("x").grant("g").is(shadow(RuleDeny)),
            tool("t").grant("g").is(shadow(Allowed)),
            tool("t").grant("g").is(shadow(RateLimited).retries()),
        ],
    }

    shadow_hidden_and_condition_failed: {
        policy(json!({"t": {"require": [cond("args.ok", "eq", true)]}}))
            .with(json!({"mode": "shadow", "hide": ["h*"]})) => [
            tool("hidden").is(shadow(Hidden).rule("/hide/0")),
            tool("t").args(json!({})).is(shadow(ConditionFailed)),
        ],
    }

    per_rule_shadow_in_an_enforcing_policy: {
        policy(json!({
            "new_rule": {"mode": "shadow", "action": "deny", "reason": "trying it out"},
            "limited": {"mode": "shadow", "limits": [limit("c", 1)]},
            "enforced": {"action": "deny"},
        })) => [
            tool("new_rule").is(shadow(RuleDeny).reason("trying it out")),
            tool("limited").grant("g").is(any()),
            tool("limited").grant("g").is(shadow(RateLimited)),
            tool("enforced").is(code(RuleDeny).verdict(Deny).shadow(false)),
            tool("unknown").is(code(DefaultDeny).verdict(Deny).shadow(false)),
        ],
    }

    per_rule_enforce_inside_a_shadow_policy: {
        policy(json!({"strict": {"mode": "enforce", "action": "deny"}}))
            .with(json!({"mode": "shadow"})) => [
            tool("strict").is(code(RuleDeny).verdict(Deny).shadow(false)),
        ],
    }

    shadow_require_approval_runs_and_consumes: {
        policy(json!({"t": {"action": "require_approval", "limits": [limit("c", 1)]}}))
            .with(json!({"mode": "shadow"})) => [
            // the call runs now, so it counts now
            tool("t").grant("g").is(shadow(ApprovalRequired).reserved(true)),
            tool("t").grant("g").is(shadow(RateLimited)),
        ],
    }

    // A rule in shadow mode reports what it would do; it must not switch off the rules beside
    // it that enforce.

    a_shadow_tool_deny_does_not_bypass_an_enforced_all_tools_deny: {
        policy(json!({"t": {"mode": "shadow", "action": "deny"}}))
            .with(json!({"all_tools": {"action": "deny"}}))
            => enforced(tool("t"), 1, 0, "/all_tools"),
    }

    a_shadow_tool_condition_does_not_bypass_an_enforced_all_tools_condition: {
        policy(json!({"t": {"mode": "shadow", "require": [cond("args.x", "eq", 1)]}}))
            .with(json!({"all_tools": {"require": [cond("args.y", "eq", 1)]}}))
            => enforced(tool("t").args(json!({"x": 0, "y": 0})), 1, 0, "/all_tools/require/0"),
    }

    a_shadow_tool_condition_does_not_bypass_an_enforced_all_tools_limit: {
        policy(json!({"t": {"mode": "shadow", "deny_if": [{"conditions": []}]}}))
            .with(json!({"all_tools": {"limits": [global_limit("all", 1)]}}))
            => enforced(tool("t"), 3, 1, "/all_tools/limits/0"),
    }

    a_shadow_tool_limit_does_not_bypass_an_enforced_all_tools_limit: {
        policy(json!({"t": {"mode": "shadow", "limits": [limit("own", 1)]}}))
            .with(json!({"all_tools": {"limits": [global_limit("all", 3)]}}))
            => enforced(tool("t").grant("g"), 5, 3, "/all_tools/limits/0"),
    }

    a_shadow_all_tools_limit_does_not_bypass_an_enforced_tool_limit: {
        policy(json!({"t": {"limits": [limit("own", 2)]}})).with(json!({"all_tools": {
            "mode": "shadow",
            "limits": [global_limit("all", 1)],
        }})) => enforced(tool("t").grant("g"), 4, 2, "/tools/t/limits/0"),
    }

    invalid_requests_are_refused_even_in_shadow_mode: {
        policy(json!({"t": {"limits": [limit("c", 1)]}})).with(json!({"mode": "shadow"})) => [
            // no grant
            tool("t").is(code(InvalidRequest).verdict(Deny).shadow(false)),
        ],
    }
}

#[test]
fn shadow_decisions_are_counted() {
    let (engine, _) = engine(policy(json!({})).with(json!({"mode": "shadow"})));
    tool("a").decide(&engine);
    tool("b").decide(&engine);
    assert_eq!(engine.stats().shadow(), 2);
    let by_code = engine.stats().by_code();
    assert_eq!(
        by_code.iter().find(|(c, _)| *c == DefaultDeny),
        Some(&(DefaultDeny, 2))
    );
}

// --- require approval --------------------------------------------------------------------------

decisions! {
    require_approval: {
        policy(json!({"terminate": {
            "action": "require_approval",
            "reason": "A human must approve.",
        }})) => [
            tool("terminate").is(code(ApprovalRequired)
                .verdict(RequireApproval)
                .rule("/tools/terminate")
                .reason("A human must approve.")
                .reserved(false)),
        ],
    }

    require_approval_does_not_consume_counters: {
        policy(json!({
            "terminate": {"action": "require_approval", "limits": [limit("ops", 2)]},
            "reboot": {"limits": [limit("ops", 2)]},
        })) => [
            // what it would leave; nothing taken
            tool("terminate")
                .grant("g")
                .times(5)
                .are(code(ApprovalRequired).reserved(false).remaining(&[1.0])),
            tool("reboot").grant("g").is(code(Allowed).remaining(&[1.0])),
        ],
    }

    require_approval_of_a_full_limit_is_rate_limited: {
        policy(json!({
            "t": {"action": "require_approval", "limits": [limit("c", 1)]},
            "u": {"limits": [limit("c", 1)]},
        })) => [
            tool("u").grant("g").is(code(Allowed)),
            tool("t").grant("g").is(code(RateLimited)),
        ],
    }

    conditions_are_checked_before_approval: {
        policy(json!({"t": {
            "action": "require_approval",
            "deny_if": [cond("args.x", "eq", 1)],
        }})) => [
            tool("t").args(json!({"x": 1})).is(code(ConditionFailed)),
            tool("t").args(json!({"x": 2})).is(code(ApprovalRequired)),
        ],
    }

    all_tools_require_approval_applies_to_every_call: {
        policy(json!({"a": {}})).with(json!({"all_tools": {"action": "require_approval"}})) => [
            tool("a").is(code(ApprovalRequired).rule("/all_tools")),
        ],
    }

    approval_section_is_accepted: {
        policy(json!({"t": {
            "action": "require_approval",
            "approval": {"timeout": "10m", "approvers": ["ops"]},
        }})) => [
            tool("t").is(code(ApprovalRequired)),
        ],
    }
}

// --- reload ------------------------------------------------------------------------------------

#[test]
fn reload_keeps_counters() {
    let (engine, _) = engine(policy(json!({"t": {"limits": [limit("c", 10)]}})));
    let before = engine.policy().revision.clone();
    let t = tool("t").grant("g");
    for i in 0..10 {
        code(Allowed).check(&t.decide(&engine), &format!("call {i}"));
    }

    let new = Policy::from_json_value(&policy(json!({
        "t": {"limits": [limit("c", 15)]},
        "other": {},
    })))
    .unwrap();
    let revision = new.revision.clone();
    engine.reload(new).unwrap();
    assert_eq!(*engine.policy().revision, revision);
    assert_ne!(*before, revision);

    let d = t.decide(&engine);
    code(Allowed).remaining(&[4.0]).check(&d, "after reload");
    assert_eq!(d.revision(), revision);
    for i in 0..4 {
        code(Allowed).check(&t.decide(&engine), &format!("call {i} after reload"));
    }
    assert_eq!(t.decide(&engine).code, RateLimited);
    assert_eq!(tool("other").decide(&engine).code, Allowed);
}

decisions! {
    reload_with_a_different_window_starts_a_new_counter: {
        policy(json!({"t": {"limits": [limit("c", 2)]}})) => [
            tool("t").grant("g").times(2).are(any()),
            reload(policy(json!({"t": {"limits": [
                limit("c", 2).with(json!({"window": "hour"})),
            ]}}))),
            tool("t").grant("g").is(any().remaining(&[1.0])),
        ],
    }
}

// --- servers -----------------------------------------------------------------------------------

fn servers_policy() -> Value {
    policy(json!({"shared": {}})).with(json!({"servers": {
        "github": {"default": "allow", "tools": {"github.delete_*": {"action": "deny"}}},
        "sandbox": {"mode": "shadow"},
        "locked": {"default": "deny", "hide": ["shared"]},
    }}))
}

fn decided(verdict: Verdict, code_: Code, rule: &str) -> Expect {
    code(code_).verdict(verdict).rule(rule)
}

decisions! {
    server_sections: {
        servers_policy() => [
            tool("github.create_issue")
                .server("github")
                .is(decided(Allow, Allowed, "/servers/github/default")),
            tool("github.delete_repo")
                .server("github")
                .is(decided(Deny, RuleDeny, "/servers/github/tools/github.delete_*")),
            // top level not used
            tool("shared").server("github").is(decided(Allow, Allowed, "/servers/github/default")),
            tool("anything")
                .server("sandbox")
                .is(decided(Allow, DefaultDeny, "/servers/sandbox/default")),
            tool("shared").server("locked").is(decided(Deny, Hidden, "/servers/locked/hide/0")),
            // no section: top level
            tool("shared").server("elsewhere").is(decided(Allow, Allowed, "/tools/shared")),
            tool("github.create_issue")
                .server("elsewhere")
                .is(decided(Deny, DefaultDeny, "/default")),
            tool("shared").is(decided(Allow, Allowed, "/tools/shared")),
        ],
    }

    the_example_yaml_policy_servers_share_a_counter: {
        example("policy.yaml") => [
            tool("github.create_pr").server("github").grant("g").is(code(Allowed)
                .rule("/servers/github/tools/github.*")
                .counters(&["github_writes"])),
            tool("create_issue")
                .grant("g")
                .session("s")
                .args(json!({"repo": "dev/x"}))
                .is(code(Allowed).room(&[("github_writes", 48.0), ("all_calls", 99.0)])),
            tool("anything").server("sandbox").is(shadow(DefaultDeny)),
        ],
    }
}

// --- malformed requests ------------------------------------------------------------------------

decisions! {
    empty_tool_name_is_an_invalid_request: {
        policy(json!({})).with(json!({"default": "allow"})) => [
            tool("").is(decided(Deny, InvalidRequest, "")),
        ],
    }
}

// --- revisions ---------------------------------------------------------------------------------

#[test]
fn revision_is_stable_for_the_same_document_and_changes_with_it() {
    let doc = policy(json!({"t": {"limits": [limit("c", 3)]}}));
    let a = Policy::from_json_value(&doc).unwrap().revision;
    let b = Policy::from_json_str(&doc.to_string()).unwrap().revision;
    assert_eq!(a, b);
    assert_eq!(a.len(), 16);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    let changed = policy(json!({"t": {"limits": [limit("c", 4)]}}));
    assert_ne!(Policy::from_json_value(&changed).unwrap().revision, a);
    let (engine, _) = engine(doc);
    assert_eq!(*engine.policy().revision, a);
    assert_eq!(tool("t").grant("g").decide(&engine).revision(), a);
}

#[test]
fn revision_ignores_whitespace_and_comments() {
    let revision = |text: &str| {
        Policy::from_text(text, "auto", None, &no_files)
            .unwrap()
            .revision
    };
    let a = revision(r#"{"version": "1", "tools": {"x": {}}}"#);
    let b = revision("{\n  \"version\":\"1\",\n  \"tools\":{\"x\":{}}\n}\n");
    let c = revision("# a comment\nversion: '1'\ntools:\n  x: {}\n");
    assert_eq!(a, b);
    assert_eq!(a, c);
}

// --- PolicyLayer's example policies ------------------------------------------------------------

mod policylayer;
use policylayer::EXAMPLES as POLICYLAYER;

#[test]
fn policylayer_example_policy_decisions() {
    for (policy_text, name, counter, max) in POLICYLAYER {
        let (engine, clock) = engine(text(policy_text));
        let g1 = tool(name).grant("g1");
        let decisions: Vec<Decision> = (0..=max).map(|_| g1.decide(&engine)).collect();
        let codes: Vec<Code> = decisions.iter().map(|d| d.code).collect();
        let mut expected = vec![Allowed; max as usize];
        expected.push(RateLimited);
        assert_eq!(codes, expected, "{name}");
        assert_eq!(decisions[0].rule(), format!("/tools/{name}"));
        let last = &decisions[max as usize];
        verdict(Deny)
            .rule(&format!("/tools/{name}/limits/0"))
            .counters(&[counter])
            .retry(1..=65_000)
            .check(last, name);
        assert_eq!(
            tool(name).grant("g2").decide(&engine).code,
            Allowed,
            "{name}"
        );
        // scope grant: a grant is needed
        assert_eq!(tool(name).decide(&engine).code, InvalidRequest, "{name}");
        let others = POLICYLAYER
            .iter()
            .map(|(_, other, _, _)| *other)
            .filter(|other| *other != name)
            .chain(["list_buckets", "delete_everything"]);
        for other in others {
            decided(Deny, DefaultDeny, "/default")
                .check(&tool(other).grant("g1").decide(&engine), other);
        }
        clock.advance_ns(last.retry_after_ms.unwrap() * MS);
        assert_eq!(g1.decide(&engine).code, Allowed, "{name}");
    }
}

#[test]
fn policylayer_example_policies_from_a_json_value_and_yaml_decide_alike() {
    for (policy_text, name, counter, max) in POLICYLAYER {
        let yaml = format!(
            "version: \"1\"\ndefault: deny\ntools:\n  {name}:\n    limits:\n      - {{counter: \
             {counter}, window: minute, max: {max}, scope: grant}}\n"
        );
        let value: Value = serde_json::from_str(policy_text).unwrap();
        for source in [
            Policy::from_json_value(&value).unwrap(),
            Policy::from_yaml_str(&yaml).unwrap(),
        ] {
            let (engine, _) = engine(Setup::new(source));
            let call = tool(name).grant("g");
            let codes: Vec<Code> = (0..=max).map(|_| call.decide(&engine).code).collect();
            let mut expected = vec![Allowed; max as usize];
            expected.push(RateLimited);
            assert_eq!(codes, expected, "{name}");
        }
    }
}
