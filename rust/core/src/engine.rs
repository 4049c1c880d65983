//! The engine: a compiled policy (swapped atomically on reload), the counter table (kept
//! across reloads), and a clock.

use crate::args::ArgValue;
use crate::clock::{Clock, MonotonicClock};
use crate::compile::{CompiledLimit, CompiledPolicy, CompiledRule, CompiledSection};
use crate::condition::{Facts, Outcome, Subject};
use crate::counter::{to_units, CounterKey, CounterTable, UNITS_PER_CALL};
use crate::decision::{Code, Decision, Verdict};
use crate::limiter::{self, Want};
use crate::policy::{Action, ConditionItem, Policy, Scope};
use crate::stats::Stats;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Default counter-table size: slots and reservation-log entries.
pub const DEFAULT_CAPACITY: usize = 1 << 16;
pub const DEFAULT_RESERVATIONS: usize = 1 << 16;

/// One call to decide on.
pub struct Request<'a, A> {
    pub tool: &'a str,
    pub server: Option<&'a str>,
    pub subject: Subject<'a>,
    pub args: Option<A>,
    /// Evaluate without consuming counters.
    pub dry_run: bool,
}

pub struct Engine {
    policy: ArcSwap<CompiledPolicy>,
    table: Arc<CounterTable>,
    clock: Arc<dyn Clock>,
    stats: Stats,
}

impl Engine {
    pub fn new(
        policy: Policy,
        table: Arc<CounterTable>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, String> {
        let compiled = CompiledPolicy::compile(policy)?;
        Ok(Engine {
            policy: ArcSwap::from_pointee(compiled),
            table,
            clock,
            stats: Stats::default(),
        })
    }

    /// An engine with a process-local table of the default size and the monotonic clock.
    pub fn with_defaults(policy: Policy) -> Result<Engine, String> {
        let table = Arc::new(CounterTable::new(DEFAULT_CAPACITY, DEFAULT_RESERVATIONS));
        Engine::new(policy, table, Arc::new(MonotonicClock))
    }

    /// Swap in a new policy; decisions in flight finish on the old one, counters stay.
    pub fn reload(&self, policy: Policy) -> Result<(), String> {
        self.policy
            .store(Arc::new(CompiledPolicy::compile(policy)?));
        Ok(())
    }

    pub fn policy(&self) -> Arc<CompiledPolicy> {
        self.policy.load_full()
    }

    pub fn table(&self) -> &CounterTable {
        &self.table
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Give back the counters of a reservation (the upstream call failed). True if it was
    /// held; false if unknown, already released, or too old to find.
    pub fn release(&self, reservation: u64) -> bool {
        limiter::release(&self.table, reservation)
    }

    pub fn decide<A: ArgValue + Clone>(&self, req: &Request<'_, A>) -> Decision {
        let policy = self.policy.load();
        let decision = self.decide_in(&policy, req, self.clock.now_ns());
        self.stats.count(&decision);
        decision
    }

    fn decide_in<A: ArgValue + Clone>(
        &self,
        policy: &CompiledPolicy,
        req: &Request<'_, A>,
        now_ns: u64,
    ) -> Decision {
        let section = policy.section(req.server);
        let out = Draft {
            revision: &policy.revision,
            section_shadow: section.shadow,
        };
        if req.tool.is_empty() {
            return out.finish(
                Code::InvalidRequest,
                "tool name is empty".into(),
                "".into(),
                None,
            );
        }
        if let Some(pointer) = section.hide.lookup(req.tool) {
            return out.finish(
                Code::Hidden,
                format!("tool {:?} is hidden by policy", req.tool).into(),
                pointer.clone(),
                None,
            );
        }
        let rule = section.tools.lookup(req.tool).map(|i| &section.rules[*i]);
        if rule.is_none() && !section.default_allow {
            return out.finish(
                Code::DefaultDeny,
                section.default_deny_reason.clone(),
                section.default_rule.clone(),
                None,
            );
        }
        let rules = [rule, section.all_tools.as_ref()];
        let rules = rules.iter().flatten().copied();
        let facts = Facts {
            tool: req.tool,
            server: req.server,
            subject: req.subject,
            args: req.args.clone(),
        };

        for r in rules.clone() {
            if r.action == Action::Deny {
                return out.finish(
                    Code::RuleDeny,
                    r.denied_reason.clone(),
                    r.pointer.clone(),
                    r.shadow,
                );
            }
        }
        for r in rules.clone() {
            if let Some(d) = check_conditions(&out, r, &facts) {
                return d;
            }
        }

        let mut wants: Vec<Want<'_>> = Vec::new();
        for r in rules.clone() {
            for limit in &r.limits {
                match want(limit, req, &facts) {
                    Ok(w) => wants.push(w),
                    Err((reason, pointer)) => {
                        return out.finish(Code::InvalidRequest, reason.into(), pointer, r.shadow)
                    }
                }
            }
        }

        let approval = rules.clone().find(|r| r.action == Action::RequireApproval);
        let deciding = approval.or(rule);
        let shadow = deciding.and_then(|r| r.shadow).unwrap_or(section.shadow);
        // An approval-gated call runs later, if at all: it consumes counters then.
        let consume = !req.dry_run && (approval.is_none() || shadow);
        match limiter::reserve(&self.table, &wants, now_ns, consume) {
            limiter::Outcome::Reserved {
                reservation,
                limits,
            } => {
                let (code, reason, pointer) = match (approval, rule) {
                    (Some(r), _) => (
                        Code::ApprovalRequired,
                        r.approval_reason.clone(),
                        r.pointer.clone(),
                    ),
                    (None, Some(r)) => (Code::Allowed, r.allowed_reason.clone(), r.pointer.clone()),
                    (None, None) => (
                        Code::Allowed,
                        section.default_allow_reason.clone(),
                        section.default_rule.clone(),
                    ),
                };
                let mut d = out.finish(code, reason, pointer, deciding.and_then(|r| r.shadow));
                d.limits = limits;
                d.reservation = reservation;
                d
            }
            limiter::Outcome::Denied {
                retry_after_ms,
                limits,
                failing,
            } => {
                let limit = wants[failing].limit;
                let owner = owner_of(section, rule, limit);
                let mut d = out.finish(
                    Code::RateLimited,
                    rate_limited_reason(limit, retry_after_ms).into(),
                    limit.pointer.clone(),
                    owner.and_then(|r| r.shadow),
                );
                d.retry_after_ms = retry_after_ms;
                d.limits = limits;
                d
            }
            limiter::Outcome::TableFull { failing } => {
                self.stats.count_table_full();
                let limit = wants[failing].limit;
                let owner = owner_of(section, rule, limit);
                let mut d = out.finish(
                    Code::RateLimited,
                    "counter table is full: no room to track this caller, so the call is denied"
                        .into(),
                    limit.pointer.clone(),
                    owner.and_then(|r| r.shadow),
                );
                d.retry_after_ms = Some(1000);
                d
            }
        }
    }
}

/// Builds decisions that share the policy revision and section mode.
struct Draft<'a> {
    revision: &'a Arc<str>,
    section_shadow: bool,
}

impl Draft<'_> {
    fn finish(
        &self,
        code: Code,
        reason: Arc<str>,
        rule: Arc<str>,
        rule_shadow: Option<bool>,
    ) -> Decision {
        // Malformed requests are refused even in shadow mode: there is nothing to evaluate.
        let shadow = code != Code::InvalidRequest && rule_shadow.unwrap_or(self.section_shadow);
        Decision {
            verdict: if shadow {
                Verdict::Allow
            } else {
                code.verdict()
            },
            code,
            reason,
            rule,
            retry_after_ms: None,
            limits: Vec::new(),
            revision: self.revision.clone(),
            shadow,
            reservation: None,
        }
    }
}

fn owner_of<'p>(
    section: &'p CompiledSection,
    rule: Option<&'p CompiledRule>,
    limit: &CompiledLimit,
) -> Option<&'p CompiledRule> {
    let owns = |r: &&CompiledRule| r.limits.iter().any(|l| std::ptr::eq(l, limit));
    rule.filter(owns).or(section.all_tools.as_ref())
}

fn check_conditions<A: ArgValue + Clone>(
    out: &Draft<'_>,
    r: &CompiledRule,
    facts: &Facts<'_, A>,
) -> Option<Decision> {
    let deny = |reason: Arc<str>, pointer: &str| {
        Some(out.finish(Code::ConditionFailed, reason, pointer.into(), r.shadow))
    };
    let unevaluable = |c: &crate::policy::Compare, p: crate::condition::Problem| {
        let detail = format!("condition cannot be evaluated: {}", p.describe(c));
        let reason: Arc<str> = match &r.reason {
            Some(reason) => format!("{reason} ({detail})").into(),
            None => detail.into(),
        };
        Some(out.finish(
            Code::ConditionFailed,
            reason,
            c.pointer.as_str().into(),
            r.shadow,
        ))
    };
    let reason_or = |own: Option<&String>, fallback: String| -> Arc<str> {
        own.map(|s| Arc::from(s.as_str()))
            .or_else(|| r.reason.clone())
            .unwrap_or_else(|| fallback.into())
    };
    for item in &r.deny_if {
        match item {
            ConditionItem::Condition(c) => match facts.eval(c) {
                Outcome::Holds => {
                    return deny(
                        reason_or(None, format!("denied: condition {} holds", c.pointer())),
                        c.pointer(),
                    )
                }
                Outcome::Fails => {}
                Outcome::Unevaluable(c, p) => return unevaluable(c, p),
            },
            ConditionItem::Group {
                pointer,
                conditions,
                on_deny,
            } => {
                let mut fires = true;
                for c in conditions {
                    match facts.eval(c) {
                        Outcome::Holds => {}
                        Outcome::Fails => {
                            fires = false;
                            break;
                        }
                        Outcome::Unevaluable(c, p) => return unevaluable(c, p),
                    }
                }
                if fires {
                    return deny(
                        reason_or(
                            on_deny.as_ref(),
                            format!("denied: conditions of {pointer} hold"),
                        ),
                        pointer,
                    );
                }
            }
        }
    }
    for item in &r.require {
        match item {
            ConditionItem::Condition(c) => match facts.eval(c) {
                Outcome::Holds => {}
                Outcome::Fails => {
                    return deny(
                        reason_or(
                            None,
                            format!("denied: required condition {} does not hold", c.pointer()),
                        ),
                        c.pointer(),
                    )
                }
                Outcome::Unevaluable(c, p) => return unevaluable(c, p),
            },
            ConditionItem::Group {
                pointer,
                conditions,
                on_deny,
            } => {
                for c in conditions {
                    match facts.eval(c) {
                        Outcome::Holds => {}
                        Outcome::Fails => {
                            return deny(
                                reason_or(
                                    on_deny.as_ref(),
                                    format!(
                                        "denied: required condition {} does not hold",
                                        c.pointer()
                                    ),
                                ),
                                pointer,
                            )
                        }
                        Outcome::Unevaluable(c, p) => return unevaluable(c, p),
                    }
                }
            }
        }
    }
    None
}

/// The counter key and amount one limit needs for this call.
fn want<'p, A: ArgValue + Clone>(
    limit: &'p CompiledLimit,
    req: &Request<'_, A>,
    facts: &Facts<'_, A>,
) -> Result<Want<'p>, (String, Arc<str>)> {
    let s = &req.subject;
    let value = match limit.scope {
        Scope::Grant => s.grant,
        Scope::Session => s.session,
        Scope::Agent => s.agent,
        Scope::Server => Some(req.server.unwrap_or("")),
        Scope::Global => Some(""),
    };
    let Some(value) =
        value.filter(|v| !v.is_empty() || matches!(limit.scope, Scope::Server | Scope::Global))
    else {
        return Err((
            format!(
                "limit {:?} counts per {}, but the request names no {}",
                &*limit.counter,
                limit.scope.as_str(),
                limit.scope.as_str()
            ),
            limit.pointer.clone(),
        ));
    };
    let amount = match &limit.cost {
        None => UNITS_PER_CALL,
        Some(path) => {
            let text = limit.cost_text.as_deref().unwrap_or("cost");
            let bad = |what: &str| {
                (
                    format!("cost {text} {what}; a spend limit needs a non-negative number"),
                    limit.cost_pointer.clone(),
                )
            };
            let v = facts.arg(path).ok_or_else(|| bad("is missing"))?;
            let n = v
                .as_num()
                .ok_or_else(|| bad(&format!("is {}", v.kind().name())))?
                .as_f64();
            if n.is_nan() || n < 0.0 {
                return Err(bad(&format!("is {n}")));
            }
            to_units(n).ok_or_else(|| bad("is too large"))?
        }
    };
    Ok(Want {
        limit,
        key: CounterKey::new(limit.identity, value.as_bytes(), limit.granularity),
        amount,
    })
}

fn rate_limited_reason(limit: &CompiledLimit, retry_after_ms: Option<u64>) -> String {
    let unit = if limit.cost.is_some() { "" } else { " calls" };
    let base = format!(
        "rate limit {:?} reached: at most {}{unit} per {} per {}",
        &*limit.counter,
        limit.max,
        format_window(limit.window_ms),
        limit.scope.as_str()
    );
    match retry_after_ms {
        Some(ms) => format!("{base}; retry in {:.1}s", ms as f64 / 1000.0),
        None => format!("{base}; this call's cost exceeds the limit itself"),
    }
}

/// A window for people: `1m`, `90s`, `1500ms`.
fn format_window(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    match UNITS.iter().find(|(n, _)| ms % n == 0) {
        Some((n, unit)) => format!("{}{unit}", ms / n),
        None => format!("{ms}ms"),
    }
}
