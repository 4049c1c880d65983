//! Asking the user in their MCP client (MCP 2026-07-28's input-required rounds): where a
//! call its user must confirm stands.

use super::limiter::Want;
use super::{sentence, Draft, Engine, Request};
use crate::asking::confirmation::{self, FIRST_REVISION};
use crate::counter::{CounterKey, UNITS_PER_CALL};
use crate::decision::{Code, Confirmation, Decision};
use crate::json::args::ArgValue;
use crate::kind::is_mcp_tool_name;
use crate::policy::compile::{CompiledConfirmation, CompiledRule};

/// What a call its user must confirm may do.
pub(super) enum Confirmed<'p> {
    /// The user confirmed it: it runs, using its confirmation's nonce once and one of its
    /// caller's confirmed calls (the wants).
    Run([Want<'p>; 2]),
    /// It is asked, or its answer is refused.
    Stop(Decision),
}

impl Engine {
    /// Where a call its user must confirm stands: asked (a new token and the question), its
    /// answer refused (not this call's, expired, declined), or confirmed: it runs, using
    /// the token's nonce once. A client that cannot be asked is denied (the fallback to an
    /// approval was routed to the approval gate).
    pub(super) fn confirmation_gate<'p, A: ArgValue + Clone>(
        &self,
        r: &'p CompiledRule,
        c: &'p CompiledConfirmation,
        req: &Request<'_, A>,
        out: &Draft<'_>,
    ) -> Confirmed<'p> {
        let policy = out.policy;
        let asked = sentence(policy.text(c.asked_reason));
        let Some(confirming) = req.confirm.filter(|k| k.can_ask) else {
            let reason = format!(
                "{asked} This request cannot ask the user: its client did not declare MCP \
                 {FIRST_REVISION} or later with form elicitation, or its gateway cannot \
                 answer in the server's place."
            );
            return Confirmed::Stop(out.finish(Code::ConfirmationUnavailable, reason, r.pointer));
        };
        // A person reads the tool's name in the question.
        if !is_mcp_tool_name(req.name) {
            let reason = "the tool name is not one MCP allows (1 to 128 of A-Z a-z 0-9 _ - .): \
                          the user is not asked about it";
            return Confirmed::Stop(out.finish(Code::InvalidRequest, reason, r.pointer));
        }
        let rule = policy.text(r.pointer);
        let args = req.args.as_ref();
        let s = &req.subject;
        let caller = [s.grant, s.session, s.agent];
        let call =
            confirmation::binding(&policy.revision, rule, req.server, req.name, caller, args);
        let Some(call) = call else {
            let reason = "the arguments hold a value JSON cannot hold: the user cannot be \
                          shown them";
            return Confirmed::Stop(out.finish(Code::InvalidRequest, reason, r.pointer));
        };
        let key = &self.confirm_key;
        let now_ms = self.clock.wall_ms();
        let Some(answer) = &confirming.answer else {
            let token = key.mint(&call, now_ms.saturating_add(c.timeout_ms));
            let question = match c.pieces.is_empty() {
                // The policy wrote none: the tool and the very arguments a yes runs.
                true => confirmation::default_question(req.name, args),
                false => confirmation::render(&c.pieces, args),
            };
            let left_s = c.timeout_ms.div_ceil(1000);
            let reason = format!(
                "{asked} The user is asked to confirm it in their MCP client (an answer is \
                 taken for {left_s} s)."
            );
            let mut d = out.finish(Code::ConfirmationRequired, reason, r.pointer);
            d.confirmation = Some(Box::new(Confirmation::Asked { token, question }));
            return Confirmed::Stop(d);
        };
        let again = "Send the call again without it to ask the user anew.";
        let Some(minted) = key.verify(&answer.token, &call) else {
            let reason = format!(
                "The confirmation this call carries is not for it: the tool, its arguments, \
                 its server, the caller or the policy changed since the user was asked, or \
                 the answer was altered. {again}"
            );
            return Confirmed::Stop(out.finish(Code::ConfirmationInvalid, reason, r.pointer));
        };
        if now_ms > minted.expires_ms {
            let reason = format!("The user's confirmation of this call has expired. {again}");
            return Confirmed::Stop(out.finish(Code::ConfirmationExpired, reason, r.pointer));
        }
        // Minted further ahead than a token lives: the asking replica's clock is more than a
        // timeout ahead of this one's, beyond what the used nonces are remembered for.
        if minted.expires_ms > now_ms.saturating_add(c.timeout_ms) {
            let reason = format!(
                "The confirmation this call carries was made by a sidecar whose clock is ahead \
                 of this one's by more than the time to answer. {again}"
            );
            return Confirmed::Stop(out.finish(Code::ConfirmationInvalid, reason, r.pointer));
        }
        if !answer.yes {
            let reason = format!("{asked} The user declined it in their MCP client.");
            return Confirmed::Stop(out.finish(Code::ConfirmationDeclined, reason, r.pointer));
        }
        let key = CounterKey::new(c.once.identity, &minted.nonce, c.once.granularity)
            // Clients mint as many as they ask for: bounded like keys they choose.
            .chosen_by_client(true);
        let grant = req.subject.grant.unwrap_or_default();
        let caller = CounterKey::new(
            c.per_caller.identity,
            grant.as_bytes(),
            c.per_caller.granularity,
        )
        .chosen_by_client(!self.grant_trusted_for_room(&req.subject));
        // The caller's cap before the nonce: a want refused leaves the slots the wants before
        // it took, so a caller at its cap takes none with each answer it sends.
        Confirmed::Run([
            Want {
                limit: &c.per_caller,
                key: caller,
                amount: UNITS_PER_CALL,
            },
            Want {
                limit: &c.once,
                key,
                amount: UNITS_PER_CALL,
            },
        ])
    }
}
