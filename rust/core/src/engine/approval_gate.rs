//! Asking an approver: where an approval-gated call stands.

use super::{sentence, Draft, Engine, Request};
use crate::asking::approval::{
    ApprovalDesk, ApprovalEvent, ApprovalId, ApprovalKey, Ask, Call as ApprovalCall, Opened,
    Standing,
};
use crate::asking::approval_text::{preview, shown_id};
use crate::decision::{Code, Decision, Limits};
use crate::json::arg_json;
use crate::json::args::ArgValue;
use crate::policy::compile::CompiledRule;
use crate::trace_ids;

/// What an approval-gated call may do.
pub(super) enum Gate {
    /// It holds approval `id`: it runs like an allowed call, using the approval.
    Run { key: ApprovalKey, id: ApprovalId },
    /// It waits for an approver, was refused, or could not open an approval.
    Stop(Decision),
}

impl Engine {
    /// Where an approval-gated call stands: it may run on an approval it holds, or it
    /// stops, waiting for one (opened now if there was none), refused, or without room.
    pub(super) fn approval_gate<A: ArgValue + Clone>(
        &self,
        a: &dyn ApprovalDesk,
        r: &CompiledRule,
        req: &Request<'_, A>,
        out: &Draft<'_>,
    ) -> Gate {
        // (Its tool's name is one MCP allows: decide_in refused the others.)
        // An approval is for these exact arguments, as an approver sees them.
        let Some(arguments) = req
            .args
            .as_ref()
            .map_or(Some("null".to_owned()), arg_json::canonical)
        else {
            let reason = "the arguments cannot be shown to an approver as JSON: they hold a \
                          value JSON cannot hold";
            return Gate::Stop(out.finish(Code::InvalidRequest, reason, r.pointer));
        };
        let call = ApprovalCall {
            server: req.server,
            tool: req.name,
            grant: req.subject.grant,
            session: req.subject.session,
            agent: req.subject.agent,
            arguments: &arguments,
        };
        let settings = a.settings();
        let policy = out.policy;
        let rule = policy.text(r.pointer);
        let ask = Ask {
            key: settings.digests.key(&call),
            owner: settings.digests.owner(
                req.subject.grant,
                self.grant_trusted(&req.subject),
                rule,
            ),
            timeout_ms: r.approval_timeout_ms,
        };
        let now_ms = self.clock.wall_ms();
        let standing = a.request(&ask, now_ms);
        let asked = sentence(policy.text(r.approval_reason));
        let key = ask.key;
        let mut d = match standing {
            Ok(Standing::Approved { id, .. }) => return Gate::Run { key, id },
            Ok(Standing::Pending {
                id,
                created_ms,
                expires_ms,
                new,
            }) => {
                if new {
                    let (shown, cut) = preview(&arguments, settings.preview_bytes);
                    a.emit(ApprovalEvent::Opened(Box::new(Opened {
                        id,
                        key,
                        server: req.server.map(shown_id),
                        tool: req.name.to_owned(),
                        grant: req.subject.grant.map(str::to_owned),
                        grant_verified: req.subject.grant_verified,
                        session: req.subject.session.map(shown_id),
                        agent: req.subject.agent.map(shown_id),
                        arguments: shown.to_owned(),
                        arguments_cut: cut,
                        arguments_bytes: arguments.len() as u64,
                        arguments_digest: a.settings().digests.arguments_hex(&arguments),
                        owner: ask.owner,
                        rule: rule.to_owned(),
                        revision: policy.revision.to_string(),
                        created_ms,
                        expires_ms,
                        approvers: r.approvers.iter().map(|a| a.to_string()).collect(),
                        trace: trace_ids::current(),
                    })));
                }
                let left_s = expires_ms.saturating_sub(now_ms).div_ceil(1000);
                let reason = format!(
                    "{asked} Approval {id} is waiting for an approver (for up to {left_s} s); \
                     send the same call again once it is approved."
                );
                let mut d = out.finish(Code::ApprovalRequired, reason, r.pointer);
                d.approval = Some(id);
                d
            }
            Ok(Standing::Denied { id, .. }) => {
                let reason = format!("{asked} Approval {id} of this call was refused.");
                let mut d = out.finish(Code::ApprovalDenied, reason, r.pointer);
                d.approval = Some(id);
                d
            }
            Err(no_room) => {
                let reason = format!("{asked} No approval could be opened: {no_room}.");
                out.finish(Code::ApprovalRequired, reason, r.pointer)
            }
        };
        d.limits = Limits::new();
        Gate::Stop(d)
    }
}
