//! Which tools a caller sees in a tool list (`tools/list`): the ones it could be allowed to
//! call at all; and so for resources and prompts in theirs.
//!
//! Decided with the compiled policy and the condition evaluator that decide calls, before
//! any call exists: a tool is removed only when every call of it by this caller would be
//! denied, whatever its arguments. So it is removed when it is hidden, denied by its rule
//! or by default, or when a `deny_if`/`require` condition settles the denial from what is
//! known now (the caller, the server, the tool's name). It stays when the answer depends
//! on the call: a condition that reaches an argument (evaluation goes left to right and
//! stops there, exactly as a call's would), a limit (room comes back), an approval, or a
//! rule in shadow mode (which never denies).

use super::condition::{Facts, Problem, Subject};
use super::{evaluate_conditions, Conditions};
use crate::decision::Code;
use crate::definitions::definition::Definition;
use crate::kind::Kind;
use crate::observing::trace::NoTrace;
use crate::policy::compile::{CompiledPolicy, CompiledRule};
use crate::policy::Action;
use serde_json::Value;

/// Whether one tool is shown to one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    /// `None`: shown; otherwise the code every call of it would be denied with.
    pub removed: Option<Code>,
    /// The answer read the caller's identity (a rule's `subject.*` condition), so another
    /// caller may get another answer: a list filtered with it is the caller's own.
    pub per_subject: bool,
}

impl Visibility {
    pub fn shown(&self) -> bool {
        self.removed.is_none()
    }
}

impl crate::owners::Owner {
    /// Whether a task list shows the task: to its creator only, so the list is the caller's
    /// own (never cached for another).
    pub fn visibility(self) -> Visibility {
        use crate::owners::Owner;
        let removed = match self {
            Owner::Caller => None,
            Owner::Other => Some(Code::Hidden),
            Owner::Unknown => Some(Code::StoreUnavailable),
        };
        Visibility {
            removed,
            per_subject: true,
        }
    }
}

impl CompiledPolicy {
    /// Whether `subject` sees `name`, of `kind`, of `server` listed; a tool defined as
    /// `definition` (for conditions that read its title or annotations).
    pub fn visibility(
        &self,
        kind: Kind,
        name: &str,
        server: Option<&str>,
        subject: Subject<'_>,
        definition: Option<&Definition>,
    ) -> Visibility {
        let section = self.section(server);
        let removed = |code, per_subject| Visibility {
            removed: Some(code),
            per_subject,
        };
        // A resource in a spelling its reads would be refused in is no resource to show.
        let unreadable = kind == Kind::Resource && crate::mcp::uri::check_template(name).is_err();
        if name.is_empty() || unreadable {
            return removed(Code::InvalidRequest, false);
        }
        // Hiding and the default follow the section's mode; a shadow section denies nothing.
        if !section.shadow && section.names(kind).hide.lookup(name).is_some() {
            return removed(Code::Hidden, false);
        }
        let rule = section.rule(kind, name);
        if rule.is_none() && !section.default_allow && !section.shadow {
            return removed(Code::DefaultDeny, false);
        }
        let enforcing = |r: &&CompiledRule| !r.shadow.unwrap_or(section.shadow);
        let all_tools = section.all_tools.as_ref().filter(|_| kind == Kind::Tool);
        let rules = [rule, all_tools];
        let rules = rules.into_iter().flatten().filter(enforcing);
        if rules.clone().any(|r| r.action == Action::Deny) {
            return removed(Code::RuleDeny, false);
        }
        let facts = Facts::<&Value> {
            tool: name,
            server,
            subject,
            args: None,
            args_unknown: true,
            definition,
            trusted: section.trust_annotations,
            marks: None,
        };
        let mut per_subject = false;
        for r in rules {
            per_subject |= r.reads_subject;
            match evaluate_conditions(self, r, &facts, &mut NoTrace) {
                Conditions::Pass | Conditions::Unevaluable(_, Problem::NotYetKnown) => {}
                Conditions::Denied(_) | Conditions::Unevaluable(..) => {
                    return removed(Code::ConditionFailed, per_subject)
                }
            }
        }
        Visibility {
            removed: None,
            per_subject,
        }
    }
}
