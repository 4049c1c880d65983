//! What one decision hands the writer: made on the deciding thread from what its line will
//! hold and nothing more (the arguments' summary, never their tree; text cut to a length),
//! so a queued record costs a few hundred bytes whatever the call carried.

use super::arguments::{log_paths, summarize};
use crate::asking::approval::ApprovalId;
use crate::asking::approval::CallDigests;
use crate::counter::marks::MarksSeen;
use crate::decision::{Code, Decision, Text, Verdict};
use crate::definitions::definition::Drift;
use crate::engine::condition::Subject;
use crate::json::args::ArgValue;
use crate::kind::Kind;
use crate::policy::compile::CompiledPolicy;
use crate::trace_ids::{self, TraceIds};
use std::sync::Arc;

/// Longest text of a line's tool, server, session, agent, verified grant or reason: a
/// longer one is cut (at a character boundary) and its length noted in `cut`.
pub const MAX_TEXT_BYTES: usize = 1024;

/// The call a decision was made on, as far as it is known.
pub struct Call<'a, A> {
    /// What `name` names: a tool, a resource, a prompt, a method.
    pub kind: Kind,
    pub name: Option<&'a str>,
    pub server: Option<&'a str>,
    pub subject: &'a Subject<'a>,
    pub args: Option<&'a A>,
}

/// One decision's line, before it is formatted.
pub struct Record {
    pub at_ms: u64,
    pub latency_ns: u64,
    pub verdict: Verdict,
    pub code: Code,
    pub shadow: bool,
    pub reservation: Option<u64>,
    pub approval: Option<ApprovalId>,
    /// The deciding policy: the rule, a reason of its own and its revision are read there.
    pub policy: Arc<CompiledPolicy>,
    pub rule: Text,
    pub reason: Text,
    /// The tool, resource, prompt or method decided: written under its kind's name.
    pub kind: Kind,
    pub name: Option<Box<str>>,
    pub server: Option<Box<str>>,
    /// Whole: the writer hashes it (a verified grant, written as it is, is cut).
    pub grant: Option<Box<str>>,
    pub grant_verified: bool,
    pub session: Option<Box<str>>,
    pub agent: Option<Box<str>>,
    /// The fields that were cut, with their whole length in bytes.
    pub cut: Vec<(&'static str, usize)>,
    /// The line's `args` object as written ([`summarize`]); None without arguments.
    pub args: Option<Box<[u8]>>,
    /// The marks the decision read and set.
    pub marks: Option<Box<MarksSeen>>,
    /// A tool list's tool that departs from its pin: both digests.
    pub drift: Option<Drift>,
    /// The user's confirmation: asked for, or given (never the question or its token).
    pub confirmation: Option<&'static str>,
    /// The span the sidecar exported for the decision ([`trace_ids`]), when tracing is on.
    pub trace: Option<TraceIds>,
}

impl Record {
    /// The record of decision `d` on `call`; `reason`, when given, is written instead of
    /// the decision's (which may quote what the caller sent).
    pub fn new<A: ArgValue + Clone>(
        at_ms: u64,
        latency_ns: u64,
        d: &Decision,
        reason: Option<&str>,
        call: &Call<'_, A>,
        digests: Option<&CallDigests>,
    ) -> Record {
        let mut cut = Vec::new();
        let mut text = |field: &'static str, value: Option<&str>| {
            value.map(|v| {
                if v.len() > MAX_TEXT_BYTES {
                    cut.push((field, v.len()));
                }
                Box::from(&v[..v.floor_char_boundary(MAX_TEXT_BYTES)])
            })
        };
        let name = text(call.kind.as_str(), call.name.filter(|t| !t.is_empty()));
        let server = text("server", call.server);
        let grant = match call.subject.grant_verified {
            true => text("grant", call.subject.grant),
            false => call.subject.grant.map(Box::from),
        };
        let session = text("session", call.subject.session);
        let agent = text("agent", call.subject.agent);
        let reason = match (reason, &d.reason) {
            (Some(r), _) => Text::Owned(text("reason", Some(r)).unwrap_or_default()),
            (None, Text::Owned(r)) => Text::Owned(text("reason", Some(r)).unwrap_or_default()),
            (None, policy_text) => policy_text.clone(),
        };
        let args = call.args.map(|a| {
            let name = call.name.unwrap_or_default();
            let paths = log_paths(&d.policy, call.kind, name, call.server);
            summarize(a, &paths, digests).into_boxed_slice()
        });
        Record {
            at_ms,
            latency_ns,
            verdict: d.verdict,
            code: d.code,
            shadow: d.shadow,
            reservation: d.reservation,
            approval: d.approval,
            policy: Arc::clone(&d.policy),
            rule: d.rule.clone(),
            reason,
            kind: call.kind,
            name,
            server,
            grant,
            grant_verified: call.subject.grant_verified,
            session,
            agent,
            cut,
            args,
            marks: d.marks.clone(),
            drift: None,
            confirmation: d.confirmation.as_deref().map(|c| c.as_str()),
            trace: trace_ids::current(),
        }
    }

    /// The bytes the record holds, itself and what it points to: what the queue counts.
    pub fn bytes(&self) -> usize {
        let text = |t: &Option<Box<str>>| t.as_ref().map_or(0, |t| t.len());
        let owned = |t: &Text| match t {
            Text::Owned(s) => s.len(),
            Text::Policy(_) => 0,
        };
        std::mem::size_of::<Record>()
            + text(&self.name)
            + text(&self.server)
            + text(&self.grant)
            + text(&self.session)
            + text(&self.agent)
            + owned(&self.rule)
            + owned(&self.reason)
            + self.cut.capacity() * std::mem::size_of::<(&str, usize)>()
            + self.args.as_ref().map_or(0, |a| a.len())
            + self.marks.as_ref().map_or(0, |m| {
                let names = m.read.iter().map(|(n, _)| n).chain(&m.set);
                std::mem::size_of::<MarksSeen>() + names.map(|n| n.len() + 24).sum::<usize>()
            })
    }

    /// A text of the deciding policy, or one of this record's.
    pub fn text<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            Text::Policy(id) => self.policy.text(*id),
            Text::Owned(s) => s,
        }
    }
}
