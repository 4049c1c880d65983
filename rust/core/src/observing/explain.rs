//! `toolgate explain`: a [`Trace`] that writes down each step of one decision as JSON.
//!
//! The steps, in the order the engine takes them:
//!
//! - `section`: which section applies (`servers/<id>` or the top level) and why;
//! - `hide`: the `hide` entry that matched, if any;
//! - `rule`: the `tools` entry that won and why (an exact name beats any glob; then the
//!   longest literal prefix; then more literal characters; then the one written first), with
//!   the other entries that matched and what each lost on; or none, and the `default`;
//! - `rules`: the rules that apply (the tool's and `all_tools`);
//! - `action`: a rule whose action is `deny`;
//! - `condition`: each `deny_if` and `require` item, with every comparison evaluated (its
//!   path, operator, operand, the value it saw, its result) inside its combinators;
//! - `limits`: each group of limits (enforcing, or shadow) with each limit's count before the
//!   call, its room, this call's amount, whether it fits, and what is left after;
//! - `approval`, `shadow` (a shadow rule's finding), and `decision`.
//!
//! Comparisons that short-circuiting skipped were not evaluated and are not listed.

use super::trace::{LimitsEnd, List, Trace};
use crate::counter::from_units;
use crate::decision::{Decision, LimitState};
use crate::engine::condition::{Outcome, Subject};
use crate::engine::limiter::Want;
use crate::kind::Kind;
use crate::policy::compile::{CompiledPolicy, CompiledRule, CompiledSection, TextId};
use crate::policy::matcher::{Found, MatchKind};
use crate::policy::{Action, Compare, Condition, ConditionItem, Scope};
use serde_json::{json, Map, Value};

/// Records the steps of one decision.
#[derive(Debug, Default)]
pub struct Recorder {
    steps: Vec<Value>,
    /// The scope values of the call, to say whose counter a limit is.
    grant: Option<String>,
    session: Option<String>,
    agent: Option<String>,
    server: Option<String>,
    /// Condition nodes being built: the item, then any open combinators.
    open: Vec<Map<String, Value>>,
    /// The group of limits being reserved.
    limits: Option<Map<String, Value>>,
}

impl Recorder {
    /// A recorder for a call by `subject` to `server`.
    pub fn new(subject: &Subject<'_>, server: Option<&str>) -> Recorder {
        Recorder {
            grant: subject.grant.map(str::to_owned),
            session: subject.session.map(str::to_owned),
            agent: subject.agent.map(str::to_owned),
            server: server.map(str::to_owned),
            ..Recorder::default()
        }
    }

    /// The steps recorded, in order.
    pub fn steps(&self) -> &[Value] {
        &self.steps
    }

    pub fn into_steps(self) -> Vec<Value> {
        self.steps
    }

    fn scope_value(&self, scope: Scope) -> Value {
        let value = match scope {
            Scope::Grant => &self.grant,
            Scope::Session => &self.session,
            Scope::Agent => &self.agent,
            Scope::Server => &self.server,
            Scope::Global => return Value::Null,
        };
        value.as_deref().map_or(Value::Null, Value::from)
    }
}

fn outcome_name(outcome: Outcome<'_>) -> &'static str {
    match outcome {
        Outcome::Holds => "holds",
        Outcome::Fails => "fails",
        Outcome::Unevaluable(..) => "unevaluable",
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::RequireApproval => "require_approval",
        Action::RequireConfirmation => "require_confirmation",
    }
}

/// Why `loser` lost to `winner` in the `tools` (or `hide`) precedence.
fn lost_because<T>(winner: &Found<'_, T>, loser: &Found<'_, T>) -> String {
    match (winner.kind, loser.kind) {
        (MatchKind::Exact, _) => "an exact name beats any glob".to_owned(),
        (
            MatchKind::Glob {
                prefix: wp,
                literals: wl,
                ..
            },
            MatchKind::Glob {
                prefix: lp,
                literals: ll,
                ..
            },
        ) => {
            if lp != wp {
                format!(
                    "its literal prefix {:?} is shorter than {:?}",
                    &loser.pattern[..lp],
                    &winner.pattern[..wp]
                )
            } else if ll != wl {
                format!("same literal prefix, fewer literal characters ({ll} < {wl})")
            } else {
                "same literal prefix and literal characters, written later".to_owned()
            }
        }
        (MatchKind::Glob { .. }, MatchKind::Exact) => "an exact name beats any glob".to_owned(),
    }
}

fn found_json<T>(found: &Found<'_, T>, pointer: &str) -> Value {
    match found.kind {
        MatchKind::Exact => json!({"pattern": found.pattern, "pointer": pointer, "kind": "exact"}),
        MatchKind::Glob {
            prefix, literals, ..
        } => json!({
            "pattern": found.pattern,
            "pointer": pointer,
            "kind": "glob",
            "literal_prefix": &found.pattern[..prefix],
            "literals": literals,
        }),
    }
}

fn why_won<T>(found: &Found<'_, T>, others: usize) -> String {
    match (found.kind, others) {
        (MatchKind::Exact, 0) => "the tool's exact name".to_owned(),
        (MatchKind::Exact, _) => "the tool's exact name, which beats every glob".to_owned(),
        (MatchKind::Glob { .. }, 0) => "the only entry that matches".to_owned(),
        (MatchKind::Glob { prefix, .. }, _) => format!(
            "no exact name; of the globs that match, the longest literal prefix ({:?}) wins",
            &found.pattern[..prefix]
        ),
    }
}

fn rule_pointer(policy: &CompiledPolicy, rule: &CompiledRule) -> String {
    policy.text(rule.pointer).to_owned()
}

impl Trace for Recorder {
    fn section(&mut self, _: &CompiledPolicy, server: Option<&str>, section: &CompiledSection) {
        let why = match server {
            None => "the call names no server: the top level applies".to_owned(),
            Some(s) if !section.pointer.is_empty() => format!("server {s:?} has its own section"),
            Some(s) => format!("server {s:?} has no section of its own: the top level applies"),
        };
        self.steps.push(json!({
            "step": "section",
            "pointer": &*section.pointer,
            "server": server,
            "why": why,
            "default": if section.default_allow { "allow" } else { "deny" },
            "mode": if section.shadow { "shadow" } else { "enforce" },
        }));
    }

    fn hide(
        &mut self,
        policy: &CompiledPolicy,
        section: &CompiledSection,
        kind: Kind,
        name: &str,
        found: Option<&Found<'_, TextId>>,
    ) {
        let step = match found {
            Some(f) => {
                let others: Vec<Value> = section
                    .names(kind)
                    .hide
                    .matching(name)
                    .iter()
                    .filter(|o| o.value != f.value)
                    .map(|o| found_json(o, policy.text(*o.value)))
                    .collect();
                json!({
                    "step": "hide",
                    "matched": found_json(f, policy.text(*f.value)),
                    "others": others,
                    "why": format!("{:?} matches the {kind}: hidden before any rule is read", f.pattern),
                })
            }
            None => json!({"step": "hide", "matched": null, "why": "no hide entry matches"}),
        };
        self.steps.push(step);
    }

    fn rule(
        &mut self,
        policy: &CompiledPolicy,
        section: &CompiledSection,
        kind: Kind,
        name: &str,
        found: Option<&Found<'_, usize>>,
    ) {
        let pointer = |i: usize| rule_pointer(policy, &section.rules[i]);
        let mut step = match found {
            Some(f) => {
                let others: Vec<Value> = section
                    .names(kind)
                    .rules
                    .matching(name)
                    .iter()
                    .filter(|o| o.value != f.value)
                    .map(|o| {
                        let mut v = found_json(o, &pointer(*o.value));
                        v["lost_because"] = lost_because(f, o).into();
                        v
                    })
                    .collect();
                json!({
                    "step": "rule",
                    "matched": found_json(f, &pointer(*f.value)),
                    "why": why_won(f, others.len()),
                    "others": others,
                })
            }
            None => {
                let key = kind.section_key();
                let default = if section.default_allow {
                    format!("no {key} entry matches; default: allow")
                } else {
                    format!("no {key} entry matches; default: deny (DEFAULT_DENY)")
                };
                json!({
                    "step": "rule",
                    "matched": null,
                    "why": default,
                    "default": if section.default_allow { "allow" } else { "deny" },
                    "pointer": policy.text(section.default_rule),
                })
            }
        };
        // The name under what it names: "tool", "resource", "prompt", "method".
        step[kind.as_str()] = name.into();
        self.steps.push(step);
    }

    fn rules(
        &mut self,
        policy: &CompiledPolicy,
        rule: Option<&CompiledRule>,
        all_tools: Option<&CompiledRule>,
    ) {
        let describe = |r: &CompiledRule| {
            json!({
                "pointer": rule_pointer(policy, r),
                "action": action_name(r.action),
                "mode": match r.shadow {
                    Some(true) => "shadow",
                    Some(false) => "enforce",
                    None => "section",
                },
                "deny_if": r.deny_if.len(),
                "require": r.require.len(),
                "limits": r.limits.len(),
            })
        };
        let rules: Vec<Value> = [rule, all_tools]
            .into_iter()
            .flatten()
            .map(describe)
            .collect();
        self.steps.push(json!({"step": "rules", "rules": rules}));
    }

    fn action_deny(&mut self, policy: &CompiledPolicy, rule: &CompiledRule, shadow: bool) {
        self.steps.push(json!({
            "step": "action",
            "rule": rule_pointer(policy, rule),
            "action": "deny",
            "shadow": shadow,
        }));
    }

    fn item_begin(
        &mut self,
        policy: &CompiledPolicy,
        rule: &CompiledRule,
        list: List,
        index: usize,
        item: &ConditionItem,
    ) {
        let mut node = Map::new();
        node.insert("step".into(), "condition".into());
        node.insert("rule".into(), rule_pointer(policy, rule).into());
        node.insert("list".into(), list.as_str().into());
        node.insert("index".into(), index.into());
        let pointer = match item {
            ConditionItem::Condition(c) => c.pointer(),
            ConditionItem::Group {
                pointer, on_deny, ..
            } => {
                if let Some(message) = on_deny {
                    node.insert("on_deny".into(), message.as_str().into());
                }
                node.insert("group".into(), true.into());
                pointer
            }
        };
        node.insert("pointer".into(), pointer.into());
        node.insert("items".into(), Value::Array(Vec::new()));
        self.open.push(node);
    }

    fn item_end(&mut self, outcome: Outcome<'_>, denies: bool) {
        let Some(mut node) = self.open.pop() else {
            return;
        };
        // The open stack is balanced by the engine: only this item's node is left.
        self.open.clear();
        node.insert("result".into(), outcome_name(outcome).into());
        node.insert("denies".into(), denies.into());
        let items = node.remove("items").unwrap_or(Value::Null);
        let group = node.get("group").and_then(Value::as_bool).unwrap_or(false);
        match items {
            Value::Array(mut v) if !group && v.len() == 1 => {
                node.insert("condition".into(), v.remove(0));
            }
            other => {
                node.insert("conditions".into(), other);
            }
        }
        if let Outcome::Unevaluable(c, problem) = outcome {
            node.insert("problem".into(), problem.describe(c).into());
        }
        self.steps.push(Value::Object(node));
    }

    fn enter(&mut self, condition: &Condition) {
        let kind = match condition {
            Condition::All { .. } => "all",
            Condition::Any { .. } => "any",
            Condition::Not { .. } => "not",
            Condition::Compare(_) => "compare",
        };
        let mut node = Map::new();
        node.insert("kind".into(), kind.into());
        node.insert("pointer".into(), condition.pointer().into());
        node.insert("items".into(), Value::Array(Vec::new()));
        self.open.push(node);
    }

    fn leave(&mut self, outcome: Outcome<'_>) {
        let Some(mut node) = self.open.pop() else {
            return;
        };
        node.insert("result".into(), outcome_name(outcome).into());
        push_child(&mut self.open, Value::Object(node));
    }

    fn compare(&mut self, c: &Compare, seen: impl FnOnce() -> Option<Value>, outcome: Outcome<'_>) {
        let seen = seen();
        let mut node = json!({
            "kind": "compare",
            "pointer": &c.pointer,
            "path": &c.path.text,
            "op": c.op.name(),
            "value": &c.value,
            "present": seen.is_some(),
            "seen": seen,
            "result": outcome_name(outcome),
        });
        if let Outcome::Unevaluable(at, problem) = outcome {
            node["problem"] = problem.describe(at).into();
        }
        push_child(&mut self.open, node);
    }

    fn limits_begin(
        &mut self,
        policy: &CompiledPolicy,
        wants: &[Want<'_>],
        shadow: bool,
        consume: bool,
    ) {
        let limits: Vec<Value> = wants
            .iter()
            .map(|w| {
                let info = &w.limit.info;
                json!({
                    "counter": &*w.limit.counter_name,
                    "rule": policy.text(info.rule),
                    "scope": info.scope.as_str(),
                    "scope_value": self.scope_value(info.scope),
                    "window_ms": info.window_ms,
                    "max": info.max,
                    "cost": w.limit.cost_text.as_deref(),
                    "amount": from_units(w.amount),
                })
            })
            .collect();
        let mut group = Map::new();
        group.insert("step".into(), "limits".into());
        group.insert("shadow".into(), shadow.into());
        group.insert("consume".into(), consume.into());
        group.insert("limits".into(), Value::Array(limits));
        self.limits = Some(group);
    }

    fn limit(&mut self, index: usize, want: &Want<'_>, used: u64, fits: bool) {
        let Some(entry) = self
            .limits
            .as_mut()
            .and_then(|g| g.get_mut("limits"))
            .and_then(|l| l.get_mut(index))
        else {
            return;
        };
        let room = want.limit.max_units.saturating_sub(used);
        entry["used"] = from_units(used).into();
        entry["room"] = from_units(room).into();
        entry["fits"] = fits.into();
    }

    fn limits_end(&mut self, end: LimitsEnd, states: &[LimitState]) {
        let Some(mut group) = self.limits.take() else {
            return;
        };
        let consume = group.get("consume").and_then(Value::as_bool) == Some(true);
        let outcome = match end {
            LimitsEnd::Reserved if consume => "reserved: counted",
            LimitsEnd::Reserved => "would fit (not counted)",
            LimitsEnd::Denied { .. } => "denied: nothing counted",
            LimitsEnd::TableFull { .. } => "denied: the counter table is full",
            LimitsEnd::Unavailable { .. } => "denied: the counter store did not answer",
            LimitsEnd::MarksDeny => "not judged: the marks read deny the call, nothing counted",
        };
        group.insert("outcome".into(), outcome.into());
        match end {
            LimitsEnd::Denied {
                failing,
                retry_after_ms,
            } => {
                group.insert("failing".into(), failing.into());
                group.insert("retry_after_ms".into(), retry_after_ms.into());
            }
            LimitsEnd::TableFull { failing } | LimitsEnd::Unavailable { failing } => {
                group.insert("failing".into(), failing.into());
            }
            LimitsEnd::Reserved | LimitsEnd::MarksDeny => {}
        }
        if let Some(Value::Array(limits)) = group.get_mut("limits") {
            // Reserved: the group's states are the last ones; denied: one per limit.
            let n = limits.len();
            if states.len() >= n {
                for (entry, state) in limits.iter_mut().zip(&states[states.len() - n..]) {
                    entry["remaining"] = state.remaining().into();
                    entry["reset_in_ms"] = state.reset_in_ms.into();
                }
            }
        }
        self.steps.push(Value::Object(group));
    }

    fn shadow_finding(&mut self, d: &Decision) {
        self.steps.push(json!({
            "step": "shadow",
            "code": d.code.as_str(),
            "rule": d.rule(),
            "reason": d.reason(),
            "why": "in shadow mode: what enforcing would do is noted, and evaluation goes on",
        }));
    }

    fn approval(&mut self, policy: &CompiledPolicy, rule: &CompiledRule, running: bool) {
        self.steps.push(json!({
            "step": "approval",
            "rule": rule_pointer(policy, rule),
            "running": running,
            "why": if running {
                "the rule requires a human's approval: the call waits for one, or runs on one it holds"
            } else {
                "the rule requires a human's approval; approvals are not running here (or this is a dry run), so the call is only answered APPROVAL_REQUIRED"
            },
        }));
    }

    fn confirmation(&mut self, policy: &CompiledPolicy, rule: &CompiledRule, can_ask: bool) {
        let fallback = rule.confirmation.as_ref().map(|c| c.fallback);
        let why = if can_ask {
            "the rule asks the user to confirm the call in their MCP client: the call is answered with a question (input required) and runs when the user confirms it"
        } else if fallback == Some(crate::policy::Fallback::Approval) {
            "the rule asks the user to confirm the call, and this client cannot be asked: its fallback asks an approver instead"
        } else {
            "the rule asks the user to confirm the call, and this client cannot be asked (no MCP 2026-07-28 client with form elicitation here): its fallback denies the call (CONFIRMATION_UNAVAILABLE)"
        };
        self.steps.push(json!({
            "step": "confirmation",
            "rule": rule_pointer(policy, rule),
            "can_ask": can_ask,
            "why": why,
        }));
    }

    fn decided(&mut self, d: &Decision) {
        self.steps.push(json!({
            "step": "decision",
            "verdict": d.verdict.as_str(),
            "code": d.code.as_str(),
            "reason": d.reason(),
            "rule": d.rule(),
            "shadow": d.shadow,
            "retry_after_ms": d.retry_after_ms,
        }));
    }
}

/// Append `child` to the items of the innermost open node.
fn push_child(open: &mut [Map<String, Value>], child: Value) {
    if let Some(Value::Array(items)) = open.last_mut().and_then(|n| n.get_mut("items")) {
        items.push(child);
    }
}
