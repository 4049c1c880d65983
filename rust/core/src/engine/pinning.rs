//! Pinned tool definitions: each tool of a `tools/list` answer is held to its pin, and
//! every call to the definition its server last listed.
//!
//! A tool listed other than pinned (`TOOL_CHANGED`), or with no pin where a policy's `pins`
//! withholds unpinned tools (`TOOL_UNPINNED`), is taken out of the list, and its calls are denied
//! with the same code until it is pinned again
//! ([`SectionPins::withheld`](crate::policy::compile::SectionPins::withheld), which the engine
//! reads). Each drift is counted once per change of what the server lists (not once per list), and
//! logged with both digests.

use super::condition::Subject;
use super::visibility::Visibility;
use super::{Draft, Engine};
use crate::decision::{Code, Decision, Verdict};
use crate::definitions::definition::{Definition, Drift};
use crate::definitions::listed::ListedTool;
use crate::definitions::sightings::Seen;
use crate::kind::Kind;
use crate::observing::decision_log::Call;
use crate::policy::compile::CompiledPolicy;
use serde_json::Value;
use std::sync::Arc;

impl Engine {
    /// Whether `subject` sees tool `name` of `server`, as `tool` (its object in the
    /// answer) defines it. Where the server's section pins tools or reads definitions, the
    /// definition is recorded for the calls that follow, and held to its pin.
    pub fn list_tool(
        &self,
        policy: &Arc<CompiledPolicy>,
        server: Option<&str>,
        subject: Subject<'_>,
        name: &str,
        tool: &ListedTool<'_>,
    ) -> Visibility {
        self.judge_listed(policy, server, subject, name, tool, Owner::Known)
    }

    /// As [`list_tool`](Self::list_tool), for a tool of a list merged from several servers
    /// under its bare name, which any of them may have listed: it is held to `server`'s
    /// pin, but recorded for `server`'s calls only when it departs from that pin, so that
    /// one server cannot list another's pinned definition over a change recorded for it.
    pub fn list_tool_of_unknown_owner(
        &self,
        policy: &Arc<CompiledPolicy>,
        server: Option<&str>,
        subject: Subject<'_>,
        name: &str,
        tool: &ListedTool<'_>,
    ) -> Visibility {
        self.judge_listed(policy, server, subject, name, tool, Owner::Unknown)
    }

    fn judge_listed(
        &self,
        policy: &Arc<CompiledPolicy>,
        server: Option<&str>,
        subject: Subject<'_>,
        name: &str,
        tool: &ListedTool<'_>,
        owner: Owner,
    ) -> Visibility {
        let section = policy.section(server);
        // A policy that pins nothing and reads no definition pays nothing here.
        if section.judges_tools_by_name() {
            return policy.visibility(Kind::Tool, name, server, subject, None);
        }
        // Listed as last time (the usual case), the definition is the one recorded then.
        let alike = self.sightings().listed_alike(server, name, tool);
        let definition = match &alike {
            Some(known) => Arc::clone(known),
            None => match Definition::read_as(tool.object(), name) {
                Some(read) => Arc::new(read),
                None => {
                    return Visibility {
                        removed: Some(Code::InvalidRequest),
                        per_subject: false,
                    }
                }
            },
        };
        let pinned = section
            .pins
            .as_ref()
            .is_some_and(|p| p.pins.get(server, name).is_some());
        let departs = section
            .pins
            .as_ref()
            .and_then(|p| p.withheld(server, name, Some(&definition.digest)));
        let seen = match (owner, &departs) {
            (Owner::Unknown, None) => Seen::Same,
            _ if alike.is_some() => Seen::Same,
            _ => self
                .sightings()
                .record(server, name, &definition, tool, pinned),
        };
        let mut withheld = None;
        if let Some(p) = &section.pins {
            if let Some(w) = departs {
                let shadow = p.shadow || section.shadow;
                let code = Code::from(w.kind);
                if seen != Seen::Same {
                    let drift = Drift {
                        kind: w.kind,
                        pinned: w.pinned,
                        listed: definition.digest,
                    };
                    let mut d = Draft { policy }.finish(code, w.reason, p.pointer);
                    if shadow {
                        d.verdict = Verdict::Allow;
                        d.shadow = true;
                    }
                    self.note_drift(server, subject, name, drift, &d);
                }
                withheld = (!shadow).then_some(code);
            }
        }
        // In the order a call is checked: the policy's hiding and default, then the pins,
        // then the rules' actions and conditions; so a list and a call of the same tool
        // name the same code.
        let visibility = policy.visibility(Kind::Tool, name, server, subject, Some(&*definition));
        match withheld {
            Some(code) if !visibility.removed.is_some_and(checked_before_pins) => Visibility {
                removed: Some(code),
                per_subject: false,
            },
            _ => visibility,
        }
    }

    /// Count and log one drift (the first list that shows it), as decision `d` on the tool.
    fn note_drift(
        &self,
        server: Option<&str>,
        subject: Subject<'_>,
        name: &str,
        drift: Drift,
        d: &Decision,
    ) {
        self.stats()
            .count_drift(server.unwrap_or(""), name, drift.kind);
        let Some(log) = self.decision_log() else {
            return;
        };
        let call = Call::<&Value> {
            kind: Kind::Tool,
            name: Some(name),
            server,
            subject: &subject,
            args: None,
        };
        self.write_drift(log, d, None, &call, 0, Some(drift));
    }
}

/// Whether the server a listed tool came from is known.
#[derive(Clone, Copy)]
enum Owner {
    Known,
    Unknown,
}

/// Whether a call denied with `code` was denied before its pin was looked at
/// ([`Engine::decide`] checks the name, hiding and the default first).
fn checked_before_pins(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidRequest | Code::Hidden | Code::DefaultDeny
    )
}
