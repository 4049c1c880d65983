//! Where a policy counts or decides on what a client says about itself.
//!
//! Unless the sidecar takes them from a verified token (`--session-from jwt:CLAIM`,
//! `--agent-from jwt:CLAIM`), a session id (`Mcp-Session-Id`, which MCP 2026-07-28 clients do
//! not send at all) and an agent id (`x-agent-id`) are whatever the client sends: a limit
//! counted per session or per agent is reset by sending another id, a mark kept per session
//! or agent is shed by sending another (or none), and a condition on either is met by sending
//! the id it wants. Such uses are not errors (a per-session rate limit on a harmless tool is
//! a fine courtesy), but a reader must know, so `toolgate validate` and `toolgate serve`
//! point them out.

use super::{Condition, ConditionItem, Path, PathRoot, Policy, Scope, Segment};
use crate::kind::Kind;

/// One use of a self-asserted identity: where it is, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub pointer: String,
    pub message: String,
}

/// Which identities come from a verified token rather than from what the client sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    pub session: bool,
    pub agent: bool,
}

/// Every limit, mark and condition of `policy` that rests on an identity the client asserts.
pub fn self_asserted(policy: &Policy, verified: Verified) -> Vec<Note> {
    let mut notes = Vec::new();
    let sections = std::iter::once(&policy.root).chain(policy.servers.iter().map(|(_, s)| s));
    for section in sections {
        // `all_tools` first, as the document usually writes it.
        let kinds = Kind::ALL
            .into_iter()
            .flat_map(|k| section.rules(k).iter().map(|(_, r)| r));
        for rule in section.all_tools.iter().chain(kinds) {
            for mark in &rule.marks {
                if let Some(what) = asserted(mark.scope, verified) {
                    notes.push(Note {
                        pointer: mark.pointer.clone(),
                        message: format!(
                            "is kept per {what}: a client that sends another id, or none, \
                             sheds it; keep a mark that must hold per grant{}",
                            advice(mark.scope)
                        ),
                    });
                }
            }
            for limit in &rule.limits {
                if let Some(what) = asserted(limit.scope, verified) {
                    notes.push(Note {
                        pointer: limit.pointer.clone(),
                        message: format!(
                            "counts per {what}: a client that sends another id gets a new \
                             budget; count per grant, server or global for what must hold{}",
                            advice(limit.scope)
                        ),
                    });
                }
            }
            for item in rule.require.iter().chain(&rule.deny_if) {
                conditions(item, &mut |c| {
                    if let Some(scope) = subject_scope(&c.path) {
                        if let Some(what) = asserted(scope, verified) {
                            notes.push(Note {
                                pointer: c.pointer.clone(),
                                message: format!(
                                    "decides on the {what}: a client meets it by sending the \
                                     id it names{}",
                                    advice(scope)
                                ),
                            });
                        }
                    }
                });
            }
        }
    }
    notes
}

/// What the client asserts for `scope`, as a reader knows it.
fn asserted(scope: Scope, verified: Verified) -> Option<&'static str> {
    match scope {
        Scope::Session if !verified.session => {
            Some("session id the client sends (Mcp-Session-Id; MCP 2026-07-28 clients send none)")
        }
        Scope::Agent if !verified.agent => Some("agent id the client sends (x-agent-id)"),
        _ => None,
    }
}

fn advice(scope: Scope) -> &'static str {
    match scope {
        Scope::Agent => ", or take the agent from a verified token (--agent-from jwt:CLAIM)",
        Scope::Session => {
            ", or take the session from a verified token (--session-from jwt:CLAIM, e.g. sid)"
        }
        _ => "",
    }
}

/// `subject.session` and `subject.agent` as the scopes they name.
fn subject_scope(path: &Path) -> Option<Scope> {
    match (path.root, path.segments.first()) {
        (PathRoot::Subject, Some(Segment::Key(k))) if k == "session" => Some(Scope::Session),
        (PathRoot::Subject, Some(Segment::Key(k))) if k == "agent" => Some(Scope::Agent),
        _ => None,
    }
}

/// Every comparison in `item`, in order.
fn conditions<'p>(item: &'p ConditionItem, each: &mut impl FnMut(&'p super::Compare)) {
    fn walk<'p>(c: &'p Condition, each: &mut impl FnMut(&'p super::Compare)) {
        match c {
            Condition::Compare(c) => each(c),
            Condition::All { items, .. } | Condition::Any { items, .. } => {
                items.iter().for_each(|c| walk(c, each))
            }
            Condition::Not { item, .. } => walk(item, each),
        }
    }
    match item {
        ConditionItem::Condition(c) => walk(c, each),
        ConditionItem::Group { conditions, .. } => conditions.iter().for_each(|c| walk(c, each)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(json: &str, agent_verified: bool) -> Vec<String> {
        let policy = Policy::from_json_str(json).unwrap();
        let verified = Verified {
            session: false,
            agent: agent_verified,
        };
        self_asserted(&policy, verified)
            .into_iter()
            .map(|n| n.pointer)
            .collect()
    }

    #[test]
    fn points_out_session_and_agent_scopes_and_conditions() {
        let doc = r#"{"version": "1",
          "all_tools": {"limits": [{"counter": "c", "window": "1m", "max": 5, "scope": "session"}]},
          "tools": {
            "pay": {"limits": [{"counter": "p", "window": "day", "max": 9, "scope": "agent"},
                               {"counter": "g", "window": "day", "max": 9, "scope": "grant"}]},
            "admin": {"require": [{"any": [{"path": "subject.agent", "op": "eq", "value": "ops"},
                                           {"path": "subject.grant", "op": "eq", "value": "x"}]}]}},
          "servers": {"b": {"version": "1", "tools": {"t": {"deny_if": [
            {"conditions": [{"path": "subject.session", "op": "exists"}], "on_deny": "no"}]}}}}}"#;
        assert_eq!(
            notes(doc, false),
            [
                "/all_tools/limits/0",
                "/tools/pay/limits/0",
                "/tools/admin/require/0/any/0",
                "/servers/b/tools/t/deny_if/0/conditions/0",
            ]
        );
        assert_eq!(
            notes(doc, true),
            [
                "/all_tools/limits/0",
                "/servers/b/tools/t/deny_if/0/conditions/0"
            ]
        );
        let clean = r#"{"version": "1", "tools": {"t": {"limits": [
            {"counter": "g", "window": "day", "max": 9, "scope": "grant"}]}}}"#;
        assert!(notes(clean, false).is_empty());
    }

    #[test]
    fn points_out_marks_a_client_can_shed_in_every_kind_of_rule() {
        let doc = r#"{"version": "1",
          "tools": {"read": {"marks": [{"name": "p", "scope": "session", "ttl": "1h"}]}},
          "resources": {"crm://*": {"marks": [{"name": "q", "scope": "agent", "ttl": "1h"},
                                              {"name": "r", "scope": "grant", "ttl": "1h"}]}}}"#;
        assert_eq!(
            notes(doc, false),
            ["/tools/read/marks/0", "/resources/crm:~1~1*/marks/0"]
        );
        let policy = Policy::from_json_str(doc).unwrap();
        let both = Verified {
            session: true,
            agent: true,
        };
        assert!(self_asserted(&policy, both).is_empty());
    }
}
