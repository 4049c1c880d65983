//! What a decision reports, step by step, to whoever wants to know how it was reached.
//!
//! The engine calls a [`Trace`] at each step it takes (the section, `hide`, the rule and why
//! it won, each condition with the value it saw, each limit with its count), so an
//! explanation comes from the code that decides, not from a second evaluator beside it.
//! [`NoTrace`], which `Engine::decide` passes, is a zero-sized type whose methods are all
//! empty and inlined: monomorphised for it, the engine is the code it was without tracing
//! (no call, no branch, no allocation; values to report are only computed inside closures
//! that `NoTrace` never calls). `super::explain::Recorder` is the one that listens.

use crate::decision::{Decision, LimitState};
use crate::kind::Kind;
use crate::policy::compile::{CompiledPolicy, CompiledRule, CompiledSection, TextId};
use crate::policy::evaluation::{Outcome, Want};
use crate::policy::matcher::Found;
use crate::policy::{Compare, Condition, ConditionItem};
use serde_json::Value;

/// Which list of a rule a condition item is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// Any item that holds denies.
    DenyIf,
    /// Any item that does not hold denies.
    Require,
}

impl List {
    pub fn as_str(self) -> &'static str {
        match self {
            List::DenyIf => "deny_if",
            List::Require => "require",
        }
    }
}

/// How reserving one group of limits (enforcing, or shadow) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsEnd {
    /// Every limit had room (and, when consuming, was counted).
    Reserved,
    /// Limit `failing` had no room; nothing was counted.
    Denied {
        failing: usize,
        retry_after_ms: Option<u64>,
    },
    /// Limit `failing` found no slot in the counter table.
    TableFull { failing: usize },
    /// The counter store did not answer for limit `failing`.
    Unavailable { failing: usize },
    /// The marks read deny the call: no limit was judged, nothing counted.
    MarksDeny,
}

/// Listens to a decision being made. Every method has an empty default.
#[allow(unused_variables)]
pub trait Trace {
    /// The section that applies to the call (`servers/<id>` or the top level).
    #[inline(always)]
    fn section(
        &mut self,
        policy: &CompiledPolicy,
        server: Option<&str>,
        section: &CompiledSection,
    ) {
    }

    /// The `hide` lookup of `name`, of `kind`, and the entry that matched, if any.
    #[inline(always)]
    fn hide(
        &mut self,
        policy: &CompiledPolicy,
        section: &CompiledSection,
        kind: Kind,
        name: &str,
        found: Option<&Found<'_, TextId>>,
    ) {
    }

    /// The lookup of `name` among `kind`'s rules (`tools`...) and the rule that won, if any.
    #[inline(always)]
    fn rule(
        &mut self,
        policy: &CompiledPolicy,
        section: &CompiledSection,
        kind: Kind,
        name: &str,
        found: Option<&Found<'_, usize>>,
    ) {
    }

    /// The rules that apply: the tool's (if any) and `all_tools` (if any).
    #[inline(always)]
    fn rules(
        &mut self,
        policy: &CompiledPolicy,
        rule: Option<&CompiledRule>,
        all_tools: Option<&CompiledRule>,
    ) {
    }

    /// A rule whose `action` is `deny`; `shadow` if it only reports.
    #[inline(always)]
    fn action_deny(&mut self, policy: &CompiledPolicy, rule: &CompiledRule, shadow: bool) {}

    /// A `require` or `deny_if` item is about to be evaluated.
    #[inline(always)]
    fn item_begin(
        &mut self,
        policy: &CompiledPolicy,
        rule: &CompiledRule,
        list: List,
        index: usize,
        item: &ConditionItem,
    ) {
    }

    /// The item's outcome, and whether it denies the call.
    #[inline(always)]
    fn item_end(&mut self, outcome: Outcome<'_>, denies: bool) {}

    /// A combinator (`all`, `any`, `not`) is about to evaluate its items.
    #[inline(always)]
    fn enter(&mut self, condition: &Condition) {}

    /// The combinator's outcome.
    #[inline(always)]
    fn leave(&mut self, outcome: Outcome<'_>) {}

    /// One comparison: `seen` gives the value its path resolved to (`None`: missing).
    #[inline(always)]
    fn compare(
        &mut self,
        compare: &Compare,
        seen: impl FnOnce() -> Option<Value>,
        outcome: Outcome<'_>,
    ) {
    }

    /// A group of limits is about to be reserved (`consume`) or only checked.
    #[inline(always)]
    fn limits_begin(
        &mut self,
        policy: &CompiledPolicy,
        wants: &[Want<'_>],
        shadow: bool,
        consume: bool,
    ) {
    }

    /// Limit `index` of the group: `used` units counted in its window before this call,
    /// and whether this call's amount fits. Reported by the process-local counter table.
    #[inline(always)]
    fn limit(&mut self, index: usize, want: &Want<'_>, used: u64, fits: bool) {}

    /// How the group ended, and the state of each limit the decision reports.
    #[inline(always)]
    fn limits_end(&mut self, end: LimitsEnd, states: &[LimitState]) {}

    /// A rule in shadow mode would have denied: noted, and evaluation goes on.
    #[inline(always)]
    fn shadow_finding(&mut self, decision: &Decision) {}

    /// The rule that asks for a human's approval, and whether approvals are running.
    #[inline(always)]
    fn approval(&mut self, policy: &CompiledPolicy, rule: &CompiledRule, running: bool) {}

    /// The rule that asks the user to confirm the call, and whether this client can be
    /// asked.
    #[inline(always)]
    fn confirmation(&mut self, policy: &CompiledPolicy, rule: &CompiledRule, can_ask: bool) {}

    /// The decision.
    #[inline(always)]
    fn decided(&mut self, decision: &Decision) {}
}

/// The trace of a decision nobody asked to explain: every step is a no-op.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTrace;

impl Trace for NoTrace {}

// A `NoTrace` is nothing: passing one by reference is the only trace of it in a decision.
const _: () = assert!(std::mem::size_of::<NoTrace>() == 0);
