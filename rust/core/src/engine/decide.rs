//! One decision, by the steps its trace names: screen (the name, `hide`, the rule, the
//! caller's tasks, pins, a rule that denies outright), key (the counters its limits and marks
//! use), judge (the rules' conditions), ask (an approval, the user's confirmation), reserve
//! (the counters) and finish (the answer).
//!
//! Rules in shadow mode are evaluated like the others, but what they would deny is only
//! noted: evaluation goes on, so the enforcing rules beside them still decide. The answer is
//! the first enforcing denial; failing that, an ALLOW that reports the first shadow finding
//! (`shadow: true`); failing that, a plain ALLOW.

use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;

use arrayvec::ArrayVec;

use super::condition::Facts;
use super::limiter::{self, Want};
use super::{
    check_conditions, denying, mark_key, rate_limited_reason, set_marks, unread, want, Checked,
    Confirmed, Draft, Engine, Gate, MarkReads, Reads, Request, MARK_UNITS,
};
use crate::asking::approval::{ApprovalEvent, ApprovalId, ApprovalKey};
use crate::counter::marks::{Denying, ReadBits};
use crate::counter::reservation::MAX_PARTS;
use crate::counter::Peer;
use crate::decision::{Code, Confirmation, Decision, Limits, Verdict};
use crate::definitions::definition::Definition;
use crate::json::args::ArgValue;
use crate::kind::is_mcp_tool_name;
use crate::kind::Kind;
use crate::observing::trace::{LimitsEnd, Trace};
use crate::policy::compile::{CompiledPolicy, CompiledRule, CompiledSection};
use crate::policy::{Action, Fallback};

/// A step's result: `Break` when the decision is made there (a denial, or an answer that
/// stops the call before it runs).
type Step<T> = ControlFlow<Decision, T>;

/// The rules that apply to a call: the one its name finds, and the section's `all_tools`
/// for a tool's call.
type Rules<'a> = [Option<&'a CompiledRule>; 2];

fn each<'a>(rules: Rules<'a>) -> impl Iterator<Item = &'a CompiledRule> + Clone {
    rules.into_iter().flatten()
}

/// Rules whose conditions wait for marks, each with the item its conditions stopped at:
/// those before it are not judged again.
type Deferred<'a> = ArrayVec<(&'a CompiledRule, usize), 2>;

/// The counters a call's limits and marks use, made before its conditions run, so that
/// their slots load from memory meanwhile (a large table misses the cache).
struct Keys<'a> {
    /// Enforcing limits, then the marks the call sets: set with them, given back with them.
    enforced: ArrayVec<Want<'a>, MAX_PARTS>,
    /// Shadow limits, reserved apart: one without room must not stop the enforcing ones
    /// from counting, nor the reverse.
    observed: ArrayVec<Want<'a>, MAX_PARTS>,
    /// How many of `enforced` are limits (the rest are marks).
    limit_count: usize,
    /// A key that could not be made: reported after the conditions.
    unkeyed: Option<Decision>,
}

/// Who is asked about the call, and what it holds of each.
#[derive(Default)]
struct Asked<'a> {
    /// The rule that needs an approval.
    approval: Option<&'a CompiledRule>,
    /// The rule that asks the user.
    confirming: Option<&'a CompiledRule>,
    /// The approval the call holds, kept apart from the gate (which holds a whole decision,
    /// copied at every move).
    gate: Option<(ApprovalKey, ApprovalId)>,
    /// Where the confirmation's nonce is among the enforced wants, once the user confirmed.
    once_at: Option<usize>,
}

/// What the steps found that the answer needs: filled in place as they go (moving it, or
/// the keys and the limits' states, from step to step would copy it each time).
#[derive(Default)]
struct Ready<'a> {
    /// The rule the call's name found.
    rule: Option<&'a CompiledRule>,
    rules: Rules<'a>,
    asked: Asked<'a>,
    /// What it reserved, to give back if it fails.
    reservation: Option<u64>,
}

/// One decision in progress: what its steps share.
struct Deciding<'a, A, T> {
    engine: &'a Engine,
    policy: &'a Arc<CompiledPolicy>,
    section: &'a CompiledSection,
    out: Draft<'a>,
    req: &'a Request<'a, A>,
    trace: &'a mut T,
    /// The first denial a shadow rule found.
    finding: Option<Decision>,
    /// The marks the deferred rules read (a section that uses marks).
    reading: Option<MarkReads>,
    ready: Ready<'a>,
}

impl Engine {
    pub(super) fn decide_in<A: ArgValue + Clone, T: Trace>(
        &self,
        policy: &Arc<CompiledPolicy>,
        req: &Request<'_, A>,
        trace: &mut T,
    ) -> Decision {
        let mut deciding = Deciding {
            engine: self,
            policy,
            section: policy.section(req.server),
            out: Draft { policy },
            req,
            trace,
            finding: None,
            reading: None,
            ready: Ready::default(),
        };
        let mut keys = Keys {
            enforced: ArrayVec::new(),
            observed: ArrayVec::new(),
            limit_count: 0,
            unkeyed: None,
        };
        let mut limits = Limits::new();
        if let Break(d) = deciding.steps(&mut keys, &mut limits) {
            return d;
        }
        deciding.finish(limits)
    }
}

impl<'a, A: ArgValue + Clone, T: Trace> Deciding<'a, A, T> {
    /// Every step but the answer; `Break` when one decides the call.
    #[inline(always)]
    fn steps(&mut self, keys: &mut Keys<'a>, limits: &mut Limits) -> Step<()> {
        let (rule, listed) = self.screen()?;
        let (req, section) = (self.req, self.section);
        let tool = req.kind == Kind::Tool;
        let definition = listed.as_deref().or_else(|| {
            let pins = section.pins.as_ref().filter(|_| tool)?;
            pins.pins.get(req.server, req.name)?.definition.as_ref()
        });
        // `all_tools` is for tools' calls.
        let all_tools = section.all_tools.as_ref().filter(|_| tool);
        self.trace.rules(self.policy, rule, all_tools);
        let rules: Rules<'a> = [rule, all_tools];
        let facts = Facts {
            tool: req.name,
            server: req.server,
            subject: req.subject,
            args: req.args.clone(),
            args_unknown: false,
            definition,
            trusted: section.trust_annotations,
            marks: None,
        };
        self.deny_by_action(rules)?;
        (self.ready.rule, self.ready.rules) = (rule, rules);
        self.key(rules, &facts, keys);
        let mut deferred = self.judge(rules, &facts, keys)?;
        self.ask(rules, &facts, keys, &mut deferred)?;
        self.ready.reservation = self.reserve(&facts, keys, &deferred, limits)?;
        Continue(())
    }

    /// A denial: the decision, unless `shadow`; then a finding, noted, and the steps go on.
    #[inline(always)]
    fn deny(&mut self, shadow: bool, d: Decision) -> Step<()> {
        if !shadow {
            return Break(d);
        }
        self.trace.shadow_finding(&d);
        self.finding.get_or_insert(d);
        Continue(())
    }

    /// A decision that stops the call before anything is counted, with the marks read.
    #[cold]
    fn stop(&mut self, mut d: Decision) -> Decision {
        // Waiting for a person sets nothing; what it read was read.
        d.marks = MarkReads::seen(self.reading.take(), Vec::new());
        d
    }

    #[inline(always)]
    fn shadowed(&self, r: &CompiledRule) -> bool {
        r.shadow.unwrap_or(self.section.shadow)
    }

    /// A rule that asks the user falls back, for a client that cannot be asked, to an
    /// approval (`fallback: approval`) or a denial.
    fn to_approver(&self, r: &CompiledRule) -> bool {
        let can_ask = self.req.confirm.is_some_and(|c| c.can_ask);
        let fallback = r.confirmation.as_ref().map(|c| c.fallback);
        !can_ask && fallback == Some(Fallback::Approval)
    }

    fn needs_approval(&self, r: &CompiledRule) -> bool {
        r.action == Action::RequireApproval || self.to_approver(r)
    }

    fn asks_user(&self, r: &CompiledRule) -> bool {
        r.confirmation.is_some() && !self.to_approver(r)
    }

    /// Screen: the name, `hide`, the rule it finds (or the section's default), the caller's
    /// tasks and pins. Returns the rule and the tool's definition as its server listed it.
    #[inline(always)]
    fn screen(&mut self) -> Step<(Option<&'a CompiledRule>, Option<Arc<Definition>>)> {
        let (policy, section, req, out) = (self.policy, self.section, self.req, &self.out);
        let (kind, name) = (req.kind, req.name);
        if name.is_empty() {
            return Break(out.finish(Code::InvalidRequest, format!("{kind} name is empty"), ""));
        }
        self.trace.section(policy, req.server, section);
        let names = section.names(kind);
        let hidden = names.hide.find(name);
        self.trace
            .hide(policy, section, kind, name, hidden.as_ref());
        if let Some(found) = hidden {
            let reason = format!("{kind} {name:?} is hidden by policy");
            let d = self.out.finish(Code::Hidden, reason, *found.value);
            self.deny(section.shadow, d)?;
        }
        let found = names.rules.find(name);
        self.trace.rule(policy, section, kind, name, found.as_ref());
        let rule = found.map(|f| &section.rules[*f.value]);
        if rule.is_none() && !section.default_allow {
            let (reason, pointer) = (names.default_deny_reason, section.default_rule);
            let d = self.out.finish(Code::DefaultDeny, reason, pointer);
            self.deny(section.shadow, d)?;
        }
        // A task is reached only by the caller that created it.
        if let Some((code, reason)) = self.engine.task_screen(req) {
            let d = self.out.finish(code, reason, "");
            self.deny(section.shadow, d)?;
        }
        // Pinned definitions: a tool its server listed other than pinned, or one with no pin
        // (`unpinned: hide`), is withheld. Only tools have definitions.
        let tool = kind == Kind::Tool;
        let pins = section.pins.as_ref().filter(|_| tool);
        let listed = (pins.is_some() || (tool && section.reads_definitions))
            .then(|| self.engine.sightings.get(req.server, name))
            .flatten();
        if let Some(p) = pins {
            if let Some(w) = p.withheld(req.server, name, listed.as_ref().map(|d| &d.digest)) {
                let d = self.out.finish(Code::from(w.kind), w.reason, p.pointer);
                self.deny(p.shadow || section.shadow, d)?;
            }
        }
        Continue((rule, listed))
    }

    /// Screen, last: a rule whose action is `deny`.
    #[inline(always)]
    fn deny_by_action(&mut self, rules: Rules<'a>) -> Step<()> {
        for r in each(rules).filter(|r| r.action == Action::Deny) {
            let shadow = self.shadowed(r);
            self.trace.action_deny(self.policy, r, shadow);
            let d = self.out.finish(Code::RuleDeny, r.denied_reason, r.pointer);
            self.deny(shadow, d)?;
        }
        Continue(())
    }

    /// Key: the counter keys of the call's limits and of the marks it sets. A key that
    /// cannot be made is reported after the conditions.
    #[inline(always)]
    fn key(&mut self, rules: Rules<'a>, facts: &Facts<'_, A>, keys: &mut Keys<'a>) {
        let (engine, req) = (self.engine, self.req);
        let grant_trusted = engine.grant_trusted_for_room(&req.subject);
        'keys: for r in each(rules) {
            for limit in &r.limits {
                let w = match want(limit, req, facts, grant_trusted) {
                    Ok(w) => w,
                    Err((reason, pointer)) => {
                        keys.unkeyed = Some(self.out.finish(Code::InvalidRequest, reason, pointer));
                        break 'keys;
                    }
                };
                engine.table.prefetch(&w.key);
                let group = match self.shadowed(r) {
                    true => &mut keys.observed,
                    false => &mut keys.enforced,
                };
                // The loader allows at most MAX_PARTS limits per call; refuse rather than
                // drop one if that ever changed.
                if group.try_push(w).is_err() {
                    let d = self
                        .out
                        .finish(Code::InvalidRequest, "too many limits", r.pointer);
                    keys.unkeyed = Some(d);
                    break 'keys;
                }
            }
        }
        keys.limit_count = keys.enforced.len();
        // A section whose rules use no marks pays nothing for them.
        if keys.unkeyed.is_none() && self.section.uses_marks {
            for mark in each(rules).flat_map(|r| &r.marks) {
                let w = match mark_key(mark, &req.subject, grant_trusted) {
                    Ok(key) => Want {
                        limit: &mark.limit,
                        key,
                        amount: MARK_UNITS,
                    },
                    Err(reason) => {
                        let d = self
                            .out
                            .finish(Code::InvalidRequest, reason, mark.limit.info.rule);
                        keys.unkeyed = Some(d);
                        break;
                    }
                };
                if keys.enforced.try_push(w).is_err() {
                    let d = self
                        .out
                        .finish(Code::InvalidRequest, "too many limits and marks", "");
                    keys.unkeyed = Some(d);
                    break;
                }
            }
        }
        if !keys.enforced.is_empty() && !req.dry_run {
            engine.table.prefetch_reservation();
        }
    }

    /// Judge: the rules' conditions, on what is known before anything is counted. A rule
    /// whose conditions read marks waits for them: they are read with the reservation, in
    /// one step (one round trip to a shared store).
    #[inline(always)]
    fn judge(
        &mut self,
        rules: Rules<'a>,
        facts: &Facts<'_, A>,
        keys: &mut Keys<'a>,
    ) -> Step<Deferred<'a>> {
        let mut deferred = Deferred::new();
        for r in each(rules) {
            match check_conditions(&self.out, r, 0, facts, &mut *self.trace) {
                Checked::Pass => {}
                Checked::Deny(d) => self.deny(self.shadowed(r), d)?,
                Checked::AwaitMarks(at) => deferred.push((r, at)),
            }
        }
        // (Taken only when there is one: a whole decision's copy.)
        if keys.unkeyed.is_some() {
            return Break(keys.unkeyed.take().expect("a key could not be made"));
        }
        // Only a section that uses marks has marks to read (its drop costs a decision too).
        if self.section.uses_marks {
            self.reading = Some(MarkReads::of(&deferred, &self.req.subject));
        }
        Continue(deferred)
    }

    /// Ask: an approval, or the user in their MCP client, before anything is counted. A call
    /// its approver approved, or its user confirmed, goes on to be counted.
    #[inline(always)]
    fn ask(
        &mut self,
        rules: Rules<'a>,
        facts: &Facts<'_, A>,
        keys: &mut Keys<'a>,
        deferred: &mut Deferred<'a>,
    ) -> Step<()> {
        let (engine, req, policy) = (self.engine, self.req, self.policy);
        let asks = self.section.asks;
        let approval = match asks {
            true => each(rules)
                .filter(|r| self.needs_approval(r))
                .find(|r| !self.shadowed(r)),
            false => None,
        };
        if let Some(r) = approval {
            let running = engine.approvals().is_some() && !req.dry_run;
            self.trace.approval(policy, r, running);
        }
        let mut confirming = None;
        if asks {
            confirming = each(rules)
                .filter(|r| self.asks_user(r))
                .find(|r| !self.shadowed(r));
            let enforced = each(rules).find(|r| r.confirmation.is_some() && !self.shadowed(r));
            if let Some(r) = enforced {
                let can_ask = req.confirm.is_some_and(|c| c.can_ask);
                self.trace.confirmation(policy, r, can_ask);
            }
        }
        let gated = !req.dry_run
            && ((approval.is_some() && engine.approvals().is_some()) || confirming.is_some());
        if gated && !deferred.is_empty() {
            self.judge_marks_first(facts, deferred)?;
        }
        // A person reads the tool's name: only names MCP allows reach an approval. Refused
        // whether or not approvals are served here, so that an engine without them (`toolgate
        // test`, a local `decide`) answers as the sidecar does.
        if let Some(r) = approval.filter(|_| !is_mcp_tool_name(req.name)) {
            let reason = "the tool name is not one MCP allows (1 to 128 of A-Z a-z 0-9 _ - .): \
                          no approval is opened for it";
            let d = self.out.finish(Code::InvalidRequest, reason, r.pointer);
            return Break(self.stop(d));
        }
        // An approval-gated call runs later, if at all: it consumes counters then. One that
        // holds an approval runs now, as an allowed call.
        let gate = match (approval, engine.approvals()) {
            (Some(r), Some(a)) if !req.dry_run => {
                match engine.approval_gate(a, r, req, &self.out) {
                    Gate::Stop(d) => return Break(self.stop(d)),
                    Gate::Run { key, id } => Some((key, id)),
                }
            }
            _ => None,
        };
        // The user is asked, or their answer refused, before anything is counted; a call
        // they confirmed uses its confirmation once, with its limits (a second use finds no
        // room). A dry run asks nothing and uses nothing, but says what the call would get.
        let mut once_at = None;
        let confirmation = confirming.and_then(|r| Some((r, r.confirmation.as_deref()?)));
        if let Some((r, c)) = confirmation {
            match engine.confirmation_gate(r, c, req, &self.out) {
                Confirmed::Stop(d) => return Break(self.stop(d)),
                Confirmed::Run(wants) => {
                    for w in wants {
                        if keys.enforced.try_push(w).is_err() {
                            let reason = "too many limits and marks with a confirmation";
                            return Break(self.out.finish(Code::InvalidRequest, reason, r.pointer));
                        }
                    }
                    // The nonce is the second of the two.
                    once_at = Some(keys.enforced.len() - 1);
                }
            }
        }
        self.ready.asked = Asked {
            approval,
            confirming,
            gate,
            once_at,
        };
        Continue(())
    }

    /// A call that will ask someone has its marks read and judged first: a person is asked
    /// about a call its conditions allow.
    #[inline(never)]
    fn judge_marks_first(&mut self, facts: &Facts<'_, A>, deferred: &mut Deferred<'a>) -> Step<()> {
        let engine = self.engine;
        let now_ns = engine.clock.now_ns();
        let (parts, limits) = (&mut limiter::Parts::new(), &mut Limits::new());
        let mut reading = self.reading.take();
        let reads = reading.as_ref().map_or(&[][..], |r| &r.reads[..]);
        let nothing = Denying::default();
        let (found, bits) = engine.reserve_group(
            &[],
            Peer::UNKNOWN,
            reads,
            nothing,
            now_ns,
            false,
            parts,
            limits,
            &mut *self.trace,
        );
        if let limiter::Outcome::Unavailable { reason, .. } = found {
            let mut d = self
                .out
                .finish(Code::StoreUnavailable, reason, self.section.default_rule);
            d.retry_after_ms = Some(1000);
            return Break(d);
        }
        let mark_reads = reading
            .as_mut()
            .expect("rules that read marks are in its section");
        let known = facts.with_marks(mark_reads.fill(bits));
        for (r, at) in std::mem::take(deferred) {
            let d = match check_conditions(&self.out, r, at, &known, &mut *self.trace) {
                Checked::Pass => continue,
                Checked::Deny(d) if self.shadowed(r) => {
                    self.deny(true, d)?;
                    continue;
                }
                Checked::Deny(d) => d,
                Checked::AwaitMarks(_) => unread(&self.out, r),
            };
            let mut d = d;
            d.marks = MarkReads::seen(reading.take(), Vec::new());
            return Break(d);
        }
        self.reading = reading;
        Continue(())
    }

    /// Reserve: the enforcing limits and the marks the call sets, then the shadow ones, and
    /// the marks its conditions read, in one step; then the conditions that waited for the
    /// marks, before a limit's denial (conditions come first).
    #[inline(always)]
    fn reserve(
        &mut self,
        facts: &Facts<'_, A>,
        keys: &Keys<'a>,
        deferred: &Deferred<'a>,
        limits: &mut Limits,
    ) -> Step<Option<u64>> {
        let (engine, req, section, policy) = (self.engine, self.req, self.section, self.policy);
        let asked = &self.ready.asked;
        let consume = !req.dry_run && (asked.approval.is_none() || asked.gate.is_some());
        let once_at = asked.once_at;
        let mut parts = limiter::Parts::new();
        // A limit's denial when marks are still to be judged: conditions come first.
        let mut held: Option<(Decision, bool)> = None;
        // (The marks' reads stay where they are, not moved in and out for every call.)
        let reads = match deferred.is_empty() {
            true => Reads::new(),
            false => self
                .reading
                .as_mut()
                .map(|r| std::mem::take(&mut r.reads))
                .unwrap_or_default(),
        };
        let mut bits = ReadBits::default();
        // Where giving a reservation back is a round trip of its own, the store is told which
        // marks deny the call, and reserves nothing for such a call.
        let judged = consume && !reads.is_empty() && engine.store_blocks();
        let denying = match (judged, self.reading.as_mut()) {
            (true, Some(mark_reads)) => {
                let shadow = section.shadow;
                let enforcing = deferred
                    .iter()
                    .copied()
                    .filter(|(r, _)| !r.shadow.unwrap_or(shadow));
                denying(&self.out, enforcing, mark_reads, reads.len(), facts)
            }
            _ => Denying::default(),
        };
        let mut marks_deny = false;
        let limit_count = keys.limit_count;
        if !keys.enforced.is_empty() || !keys.observed.is_empty() || !reads.is_empty() {
            // The clock is read only for calls that count.
            let now_ns = engine.clock.now_ns();
            limits.reserve(keys.enforced.len() + keys.observed.len());
            for (wants, shadow) in [(&keys.enforced, false), (&keys.observed, true)] {
                let group_reads = if shadow { &[][..] } else { &reads[..] };
                if wants.is_empty() && group_reads.is_empty() {
                    continue;
                }
                self.trace.limits_begin(policy, wants, shadow, consume);
                let before = limits.len();
                let (outcome, read) = engine.reserve_group(
                    wants,
                    req.subject.peer,
                    group_reads,
                    if shadow { Denying::default() } else { denying },
                    now_ns,
                    consume,
                    &mut parts,
                    limits,
                    &mut *self.trace,
                );
                if !shadow {
                    // What the marks set count is not a limit of the call's.
                    limits.truncate((before + limit_count).min(limits.len()));
                }
                if !group_reads.is_empty() {
                    bits = read;
                }
                // Nothing reserved: the conditions below deny the call.
                marks_deny |= matches!(outcome, limiter::Outcome::MarksDeny);
                let denial =
                    self.limit_denial(outcome, wants, shadow, once_at, limit_count, limits);
                match denial {
                    Some(d) if !shadow && !deferred.is_empty() => held = Some((d, shadow)),
                    Some(d) => self.deny(shadow, d)?,
                    None => {}
                }
                if held.is_some() || marks_deny {
                    break;
                }
            }
        }
        // The marks are known: the conditions that read them decide now, before a limit's
        // denial (conditions come first), and a call they deny gives back what it reserved.
        if !deferred.is_empty() {
            let mut reading = self.reading.take();
            let mark_reads = reading
                .as_mut()
                .expect("rules that read marks are in its section");
            mark_reads.reads = reads;
            let known = facts.with_marks(mark_reads.fill(bits));
            for (r, at) in deferred.iter().copied() {
                let d = match check_conditions(&self.out, r, at, &known, &mut *self.trace) {
                    Checked::Pass => continue,
                    Checked::Deny(d) => d,
                    Checked::AwaitMarks(_) => unread(&self.out, r),
                };
                if !self.shadowed(r) {
                    engine.give_back(&parts);
                    let mut d = d;
                    d.marks = MarkReads::seen(reading.take(), Vec::new());
                    return Break(d);
                }
                self.deny(true, d)?;
            }
            if marks_deny {
                // The store judged the marks as these rules do: not reached.
                let reason = "the counter store judged this call's marks otherwise than the \
                              policy does, so nothing was counted and the call is denied";
                return Break(self.out.finish(
                    Code::StoreUnavailable,
                    reason,
                    section.default_rule,
                ));
            }
            self.reading = reading;
        }
        if let Some((d, shadow)) = held {
            self.deny(shadow, d)?;
        }
        let reservation = match engine.store.as_ref() {
            None => limiter::record(&engine.table, &parts),
            Some(s) => s.record(&parts),
        };
        Continue(reservation)
    }

    /// What a group's reservation came to: `None` when it reserved (or the marks deny the
    /// call, which the conditions say), else the denial. A shadow group's limit states join
    /// `limits`; an enforcing one's denial carries its own.
    #[inline(always)]
    fn limit_denial(
        &mut self,
        outcome: limiter::Outcome,
        wants: &[Want<'a>],
        shadow: bool,
        once_at: Option<usize>,
        limit_count: usize,
        limits: &mut Limits,
    ) -> Option<Decision> {
        match outcome {
            limiter::Outcome::Reserved => {
                self.trace.limits_end(LimitsEnd::Reserved, limits);
                None
            }
            limiter::Outcome::MarksDeny => {
                self.trace.limits_end(LimitsEnd::MarksDeny, &[]);
                None
            }
            // Enforcing limits go first, so a denial here has consumed nothing.
            limiter::Outcome::Denied {
                retry_after_ms,
                limits: mut l,
                failing,
            } => {
                let limit = wants[failing].limit;
                let mut d = if !shadow && once_at == Some(failing) {
                    let reason = "This confirmation was already used: a confirmed call runs \
                                  once. Send the call again without it to ask the user anew.";
                    self.out
                        .finish(Code::ConfirmationInvalid, reason, limit.info.rule)
                } else {
                    let reason = rate_limited_reason(limit, retry_after_ms);
                    let mut d = self.out.finish(Code::RateLimited, reason, limit.info.rule);
                    d.retry_after_ms = retry_after_ms;
                    d
                };
                let end = LimitsEnd::Denied {
                    failing,
                    retry_after_ms,
                };
                self.trace.limits_end(end, &l);
                if shadow {
                    limits.extend(l);
                } else {
                    l.truncate(limit_count.min(l.len()));
                    d.limits = l;
                }
                Some(d)
            }
            limiter::Outcome::TableFull { failing } => {
                self.trace.limits_end(LimitsEnd::TableFull { failing }, &[]);
                self.engine.stats.count_table_full();
                let reason =
                    "counter table is full: no room to track this caller, so the call is denied";
                let rule = wants[failing].limit.info.rule;
                let mut d = self.out.finish(Code::RateLimited, reason, rule);
                d.retry_after_ms = Some(1000);
                Some(d)
            }
            limiter::Outcome::Unavailable { failing, reason } => {
                self.trace
                    .limits_end(LimitsEnd::Unavailable { failing }, &[]);
                let rule = wants
                    .get(failing)
                    .map_or(self.section.default_rule, |w| w.limit.info.rule);
                let mut d = self.out.finish(Code::StoreUnavailable, reason, rule);
                d.retry_after_ms = Some(1000);
                Some(d)
            }
        }
    }

    /// Finish: the approval the call holds is used, or another copy of the call used it
    /// first; the shadow rules that would have asked someone are noted; and the answer.
    #[inline(always)]
    fn finish(&mut self, limits: Limits) -> Decision {
        let (engine, req, policy, section) = (self.engine, self.req, self.policy, self.section);
        let Ready {
            rule,
            rules,
            ref asked,
            reservation,
        } = self.ready;
        let mut used = None;
        if let (Some((key, id)), Some(a), Some(r)) =
            (asked.gate, engine.approvals(), asked.approval)
        {
            let now_ms = engine.clock.wall_ms();
            if !a.consume(key, id, now_ms) {
                // Another copy of the call used the approval first: this one asks anew.
                if let Some(reservation) = reservation {
                    engine.release(reservation);
                }
                return match engine.approval_gate(a, r, req, &self.out) {
                    Gate::Stop(d) => d,
                    Gate::Run { .. } => {
                        self.out
                            .finish(Code::ApprovalRequired, r.approval_reason, r.pointer)
                    }
                };
            }
            a.emit(ApprovalEvent::Used { id, at_ms: now_ms });
            used = Some(id);
        }
        if section.asks {
            let shadow_approval = each(rules)
                .filter(|r| self.needs_approval(r))
                .find(|r| self.shadowed(r));
            if let Some(r) = shadow_approval {
                let d = self
                    .out
                    .finish(Code::ApprovalRequired, r.approval_reason, r.pointer);
                self.finding.get_or_insert(d);
            }
            // A call its user confirmed meets a shadow confirmation rule too.
            let confirmed = asked.once_at.is_some();
            let shadow_asks =
                each(rules).find(|r| !confirmed && self.asks_user(r) && self.shadowed(r));
            if let Some(r) = shadow_asks {
                let c = r.confirmation.as_deref().map(|c| c.asked_reason);
                let reason = c.unwrap_or(r.approval_reason);
                let d = self
                    .out
                    .finish(Code::ConfirmationRequired, reason, r.pointer);
                self.finding.get_or_insert(d);
            }
        }

        let out = &self.out;
        // (The finding is taken out only when there is one: a whole decision's copy.)
        let mut d = match (self.finding.is_some(), asked.approval) {
            (true, _) => {
                let mut d = self.finding.take().expect("a finding is there");
                d.verdict = Verdict::Allow;
                d.shadow = true;
                d
            }
            (false, Some(r)) => match used {
                Some(id) => {
                    let reason = format!("allowed by approval {id} ({})", policy.text(r.pointer));
                    out.finish(Code::Allowed, reason, r.pointer)
                }
                // Approvals are not running (or a dry run): the call is only denied.
                None => out.finish(Code::ApprovalRequired, r.approval_reason, r.pointer),
            },
            (false, None) => match asked.confirming.filter(|_| asked.once_at.is_some()) {
                Some(r) => {
                    let reason = format!(
                        "allowed: the user confirmed it in their MCP client ({})",
                        policy.text(r.pointer)
                    );
                    out.finish(Code::Allowed, reason, r.pointer)
                }
                None => {
                    let (reason, pointer) = match rule {
                        Some(r) => (r.allowed_reason, r.pointer),
                        None => (section.default_allow_reason, section.default_rule),
                    };
                    let mut d = out.finish(Code::Allowed, reason, pointer);
                    d.shadow = rule.map_or(section.shadow, |r| self.shadowed(r));
                    d
                }
            },
        };
        if asked.once_at.is_some() && d.verdict == Verdict::Allow && !req.dry_run {
            d.confirmation = Some(Box::new(Confirmation::Confirmed));
            engine.stats.count_confirmed();
        }
        d.limits = limits;
        d.reservation = reservation;
        d.approval = used;
        if section.uses_marks {
            let set = match d.verdict {
                Verdict::Allow => set_marks(each(rules)),
                _ => Vec::new(),
            };
            d.marks = MarkReads::seen(self.reading.take(), set);
        }
        d
    }
}
