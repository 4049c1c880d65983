//! Deciding: the engine, a compiled policy (swapped atomically on reload), the counter table
//! (kept across reloads) and a clock; one decision by its steps (`decide`), the conditions it
//! judges, the limits it reserves and the store they are kept in, the gates that ask
//! someone, and what an MCP request body, a tool list and pinned tools come to.

use crate::asking::approval::ApprovalDesk;
use crate::asking::confirmation::{ConfirmKey, Confirming};
use crate::counter::clock::Clock;
use crate::counter::clock::MonotonicClock;
use crate::counter::marks::{
    Denying, MarkState, Marks, MarksSeen, Read, ReadBits, MAX_JUDGED_READS, MAX_READS,
};
use crate::counter::reservation::Part;
use crate::counter::{to_units, CounterKey, CounterTable, Peer, UNITS_PER_CALL};
use crate::decision::{Code, Decision, Limits, Text};
use crate::definitions::sightings::Sightings;
use crate::engine::condition::{Facts, Outcome, Problem, Subject};
use crate::engine::store::CounterStore;
use crate::json::args::ArgValue;
use crate::kind::is_mcp_tool_name;
use crate::kind::Kind;
use crate::observing::decision_log::{Call, DecisionSink, Record};
use crate::observing::stats::{Api, Stats, OTHER_TOOLS};
use crate::observing::trace::{List, NoTrace, Trace};
use crate::owners::cursors::{self, CursorKey};
use crate::owners::sessions;
use crate::owners::tasks;
use crate::owners::vouched::Vouched;
use crate::owners::{self, Owner};
use crate::policy::compile::{
    CompiledLimit, CompiledMark, CompiledPolicy, CompiledRule, ConditionDenial, Owned, TextId,
};
use crate::policy::{Compare, ConditionItem, Policy, Scope};
use arc_swap::ArcSwap;
use limiter::Want;
use smallvec::SmallVec;
use std::sync::Arc;

mod approval_gate;
pub mod condition;
mod confirmation_gate;
mod decide;
pub mod gate;
pub mod limiter;
pub mod listing;
mod metrics;
pub mod pinning;
pub mod store;
pub mod visibility;

use approval_gate::Gate;
use confirmation_gate::Confirmed;

/// Default counter-table size: slots and reservation-log entries.
pub const DEFAULT_CAPACITY: usize = 1 << 16;
pub const DEFAULT_RESERVATIONS: usize = 1 << 16;

/// A request refused before the policy could decide it: why, and what is known of its call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Undecidable<'a> {
    /// Why, as the caller is told: it may quote what the caller sent.
    pub reason: &'a str,
    /// Why, as the decision log writes it, when `reason` quotes the arguments: the log
    /// never holds an argument's key or value that a rule's `log` does not name.
    pub logged: Option<&'a str>,
    /// What the request named, when that was read: a tool, a resource...
    pub kind: Kind,
    pub name: Option<&'a str>,
    pub server: Option<&'a str>,
    pub subject: Subject<'a>,
}

impl<'a> Undecidable<'a> {
    /// Refused for `reason`, which quotes nothing of the arguments; nothing known of the call.
    pub fn new(reason: &'a str) -> Undecidable<'a> {
        Undecidable {
            reason,
            ..Undecidable::default()
        }
    }
}

/// One call to decide on: of a tool, or a request for a resource, a prompt or a method.
pub struct Request<'a, A> {
    /// What `name` names, and so which rules find it.
    pub kind: Kind,
    /// The tool's name, the resource's URI, the prompt's name, or the method.
    pub name: &'a str,
    pub server: Option<&'a str>,
    pub subject: Subject<'a>,
    pub args: Option<A>,
    /// Evaluate without consuming counters.
    pub dry_run: bool,
    /// What each limit counts for this call instead of 1 call or its `cost`: Envoy's
    /// rate-limit `hits_addend`, for proxies that weigh calls themselves.
    pub hits: Option<u32>,
    /// Whether the client can confirm the call itself, and its answer; `None`: it cannot
    /// (a `require_confirmation` rule's fallback decides).
    pub confirm: Option<&'a Confirming>,
}

pub struct Engine {
    /// Read by every decision, swapped by a reload: a decision in flight keeps the policy
    /// it started on.
    policy: ArcSwap<CompiledPolicy>,
    table: Arc<CounterTable>,
    clock: Arc<dyn Clock>,
    stats: Stats,
    /// Without it a `require_approval` call is only denied.
    approvals: Option<Arc<dyn ApprovalDesk>>,
    /// The sidecar's `--decision-log`.
    log: Option<Arc<dyn DecisionSink>>,
    /// The sidecar's `--store`: where counts are kept instead of `table`.
    store: Option<Arc<dyn CounterStore>>,
    /// The tool definitions servers last listed (kept across reloads, as counters are).
    sightings: Sightings,
    /// Sessions seen held lately, asked of a shared store once per [`sessions::SEEN_HELD_MS`].
    seen_held: sessions::SeenHeld,
    /// Grants a server accepted (kept across reloads), when
    /// [`EngineBuilder::trust_server_answers`] said such answers vouch.
    vouched: Vouched,
    vouching: bool,
    /// What confirmation tokens are signed with: derived from the sidecar's secret, else
    /// random.
    confirm_key: ConfirmKey,
    /// What task-list cursors are sealed with: derived from `confirm_key`.
    cursor_key: CursorKey,
}

/// An engine's parts, all given before it decides its first call: what the sidecar
/// assembles it from. [`Engine::new`] is an engine with none of the optional ones.
pub struct EngineBuilder {
    policy: Policy,
    table: Arc<CounterTable>,
    clock: Arc<dyn Clock>,
    approvals: Option<Arc<dyn ApprovalDesk>>,
    log: Option<Arc<dyn DecisionSink>>,
    store: Option<Arc<dyn CounterStore>>,
    confirmation_secret: Option<Vec<u8>>,
    vouching: bool,
}

impl EngineBuilder {
    /// Run human approvals for `require_approval` rules.
    pub fn approvals(mut self, approvals: Arc<dyn ApprovalDesk>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Write every decision (as `log` filters them) to `log`.
    pub fn decision_log(mut self, log: Arc<dyn DecisionSink>) -> Self {
        self.log = Some(log);
        self
    }

    /// Count in `store` instead of the engine's table (which it falls back to).
    pub fn store(mut self, store: Arc<dyn CounterStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Sign confirmation tokens with a key derived from `secret`: replicas given the same
    /// secret accept each other's. Without it, a key of this engine's own.
    pub fn confirmation_secret(mut self, secret: &[u8]) -> Self {
        self.confirmation_secret = Some(secret.to_vec());
        self
    }

    /// Let a server's answers vouch for the caller's grant ([`Engine::vouch_for`]): only where
    /// the MCP server checks the credential the client sent (a proxy that sends its own in its
    /// place would have every made-up credential vouched for).
    pub fn trust_server_answers(mut self) -> Self {
        self.vouching = true;
        self
    }

    pub fn build(self) -> Result<Engine, String> {
        let compiled = CompiledPolicy::compile(self.policy, self.table.capacity())?;
        let confirm_key = match &self.confirmation_secret {
            Some(secret) => ConfirmKey::derived(secret),
            None => ConfirmKey::random(),
        };
        let cursor_key = CursorKey::new(confirm_key.derive(b"toolgate task-list cursor v1"));
        Ok(Engine {
            policy: ArcSwap::from_pointee(compiled),
            table: self.table,
            clock: self.clock,
            stats: Stats::default(),
            approvals: self.approvals,
            log: self.log,
            store: self.store,
            sightings: Sightings::default(),
            seen_held: sessions::SeenHeld::default(),
            vouched: Vouched::default(),
            vouching: self.vouching,
            confirm_key,
            cursor_key,
        })
    }
}

impl Engine {
    /// An engine on `policy`, counting in `table` on `clock`, with nothing else.
    pub fn new(
        policy: Policy,
        table: Arc<CounterTable>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, String> {
        Engine::builder(policy, table, clock).build()
    }

    /// An engine to be given its optional parts ([`EngineBuilder`]) before it is built.
    pub fn builder(
        policy: Policy,
        table: Arc<CounterTable>,
        clock: Arc<dyn Clock>,
    ) -> EngineBuilder {
        EngineBuilder {
            policy,
            table,
            clock,
            approvals: None,
            log: None,
            store: None,
            confirmation_secret: None,
            vouching: false,
        }
    }

    /// `cursor`, a `tasks/list` answer's `nextCursor` from `server`, sealed for `subject`
    /// ([`crate::owners::cursors`]).
    pub fn seal_task_cursor(
        &self,
        server: Option<&str>,
        subject: &Subject<'_>,
        cursor: &str,
    ) -> String {
        let binding = cursors::binding(server, subject.grant, subject.grant_verified);
        self.cursor_key.seal(&binding, cursor)
    }

    /// The server's cursor inside `sealed`, if it was sealed for `subject` of `server`.
    pub fn open_task_cursor(
        &self,
        server: Option<&str>,
        subject: &Subject<'_>,
        sealed: &str,
    ) -> Option<String> {
        let binding = cursors::binding(server, subject.grant, subject.grant_verified);
        self.cursor_key.open(&binding, sealed)
    }

    pub fn decision_log(&self) -> Option<&dyn DecisionSink> {
        self.log.as_deref()
    }

    /// Whether a decision may wait on a remote counter store.
    pub fn store_blocks(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.blocks())
    }

    /// Whether a remote counter store answers slowly now ([`CounterStore::slow`]).
    pub fn store_slow(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.slow())
    }

    pub fn approvals(&self) -> Option<&dyn ApprovalDesk> {
        self.approvals.as_deref()
    }

    /// The clock decisions read.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// An engine with a process-local table of the default size and the monotonic clock.
    pub fn with_defaults(policy: Policy) -> Result<Engine, String> {
        let table = Arc::new(CounterTable::new(DEFAULT_CAPACITY, DEFAULT_RESERVATIONS));
        Engine::new(policy, table, Arc::new(MonotonicClock))
    }

    /// Swap in a new policy; decisions in flight finish on the old one, counters stay.
    pub fn reload(&self, policy: Policy) -> Result<(), String> {
        self.policy.store(Arc::new(CompiledPolicy::compile(
            policy,
            self.table.capacity(),
        )?));
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

    /// Give back the counters of a reservation (the upstream call failed). True if it was
    /// held; false if unknown, already released, or too old to find.
    pub fn release(&self, reservation: u64) -> bool {
        match self.store.as_ref() {
            None => limiter::release(&self.table, reservation),
            Some(s) => s.release(&self.stats, reservation),
        }
    }

    /// Refuse a request that cannot be decided (malformed before it reaches the policy),
    /// counted like any decision.
    pub fn refuse(&self, reason: &str) -> Decision {
        self.refuse_via(Api::Engine, &Undecidable::new(reason))
    }

    /// [`Engine::refuse`] of a request of `api`, logged with what is known of its call.
    pub fn refuse_via(&self, api: Api, request: &Undecidable<'_>) -> Decision {
        self.refuse_as(api, Code::InvalidRequest, request)
    }

    /// [`Engine::refuse_via`] with `code`: what refused it before any rule could.
    pub(crate) fn refuse_as(&self, api: Api, code: Code, request: &Undecidable<'_>) -> Decision {
        let policy = self.policy.load();
        let d = Draft { policy: &policy }.finish(code, request.reason, "");
        self.stats.count(api, &d);
        if let Some(log) = self.decision_log() {
            let call = Call::<&serde_json::Value> {
                kind: request.kind,
                name: request.name,
                server: request.server,
                subject: &request.subject,
                args: None,
            };
            self.write_log(log, &d, request.logged, &call, 0);
        }
        d
    }

    pub fn decide<A: ArgValue + Clone>(&self, req: &Request<'_, A>) -> Decision {
        self.decide_via(Api::Engine, req)
    }

    /// [`Engine::decide`], counted as served by `api`.
    pub fn decide_via<A: ArgValue + Clone>(&self, api: Api, req: &Request<'_, A>) -> Decision {
        self.decide_traced(api, req, &mut NoTrace)
    }

    /// [`Engine::decide_via`], telling `trace` each step of the decision as it is taken (see
    /// [`crate::observing::trace`]): an explanation is of this very decision.
    #[inline]
    pub fn decide_traced<A: ArgValue + Clone, T: Trace>(
        &self,
        api: Api,
        req: &Request<'_, A>,
        trace: &mut T,
    ) -> Decision {
        // A dry run authorizes nothing: it is not logged.
        let log = self.decision_log().filter(|_| !req.dry_run);
        let started = log.map(|_| self.clock.now_ns());
        let policy = self.policy.load();
        let decision = self.decide_in(&policy, req, trace);
        trace.decided(&decision);
        if self.stats.per_tool_enabled() && req.kind == Kind::Tool {
            // A label a dashboard shows: only names MCP allows, of tools a rule names; a name
            // a client made up (decided by the section's default, allowed or denied) is not
            // worth a series of its own, nor able to crowd out the real ones.
            let default = policy.section(req.server).default_rule;
            let by_default = matches!(decision.rule, Text::Policy(id) if id == default);
            let named = !by_default && is_mcp_tool_name(req.name);
            self.stats
                .count_tool(if named { req.name } else { OTHER_TOOLS }, decision.verdict);
        }
        drop(policy);
        self.stats.count(api, &decision);
        if let (Some(log), Some(started)) = (log, started) {
            let took = self.clock.now_ns().saturating_sub(started);
            let call = Call {
                kind: req.kind,
                name: Some(req.name),
                server: req.server,
                subject: &req.subject,
                args: req.args.as_ref(),
            };
            self.write_log(log, &decision, None, &call, took);
        }
        decision
    }

    /// Hand a decision's record to the log's writer (if its filter wants it), made here of
    /// what its line holds ([`Record::new`]); `reason` is logged instead of the decision's.
    pub(crate) fn write_log<A: ArgValue + Clone>(
        &self,
        log: &dyn DecisionSink,
        d: &Decision,
        reason: Option<&str>,
        call: &Call<'_, A>,
        latency_ns: u64,
    ) {
        self.write_drift(log, d, reason, call, latency_ns, None);
    }

    /// [`Engine::write_log`] of a tool list's drift from a pin (`drift`).
    pub(crate) fn write_drift<A: ArgValue + Clone>(
        &self,
        log: &dyn DecisionSink,
        d: &Decision,
        reason: Option<&str>,
        call: &Call<'_, A>,
        latency_ns: u64,
        drift: Option<crate::definitions::definition::Drift>,
    ) {
        if !log.wants(d) {
            return;
        }
        let digests = log.digests();
        let mut record = Record::new(self.clock.wall_ms(), latency_ns, d, reason, call, digests);
        record.drift = drift;
        self.stats.count_logged(log.submit(record));
    }

    /// Reserve one group of a call's wants and read `reads`, in the store (one step).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn reserve_group<T: Trace>(
        &self,
        wants: &[Want<'_>],
        peer: Peer,
        reads: &[Read],
        denying: Denying,
        now_ns: u64,
        consume: bool,
        parts: &mut limiter::Parts,
        limits: &mut Limits,
        trace: &mut T,
    ) -> (limiter::Outcome, ReadBits) {
        match self.store.as_ref() {
            None => {
                let outcome = limiter::reserve_traced(
                    &self.table,
                    wants,
                    peer,
                    now_ns,
                    consume,
                    parts,
                    limits,
                    trace,
                );
                // Checked here, not in `read`: so the call is left out (measured: inlining
                // `read` or checking inside it made the whole decision dearer).
                let read = if reads.is_empty() {
                    ReadBits::default()
                } else {
                    limiter::read(&self.table, reads, parts, now_ns)
                };
                (outcome, read)
            }
            Some(s) => s.reserve(
                &self.stats,
                wants,
                peer,
                reads,
                denying,
                now_ns,
                consume,
                parts,
                limits,
            ),
        }
    }

    /// A request its params' `_meta` relates to task `task_id` (a server looks the task up
    /// and queues the request's answer on it): refused as for a task that does not exist
    /// unless its caller created the task; `None` when it may go on to be decided.
    pub fn screen_related(
        &self,
        api: Api,
        task_id: &str,
        request: &Undecidable<'_>,
    ) -> Option<Decision> {
        let owner = self.task_owner(request.server, request.subject, task_id);
        let (code, reason) = refusal(owner)?;
        let request = Undecidable {
            reason,
            logged: None,
            ..*request
        };
        Some(self.refuse_as(api, code, &request))
    }

    /// Note task `task_id`, which `server` just created for `subject`'s call, as that
    /// caller's ([`crate::owners::tasks`]). False if it could not be noted (the caller has noted as
    /// many as it may, the table is full, the store is away): no one then reaches the task
    /// through the proxy.
    pub fn note_task(&self, server: Option<&str>, subject: Subject<'_>, task_id: &str) -> bool {
        let policy = self.policy();
        let note = owner_key(&policy.tasks, server, subject, task_id);
        self.note_owner(&policy.tasks, note, None, server, subject, task_id)
    }

    /// Whether `subject` created task `task_id` of `server`.
    pub fn task_owner(&self, server: Option<&str>, subject: Subject<'_>, task_id: &str) -> Owner {
        let policy = self.policy.load();
        self.holder(
            owner_key(&policy.tasks, server, subject, task_id),
            tasks::KEEP_MS,
        )
    }

    /// Whose MCP session `session` of `server` is ([`crate::owners::sessions`]): the caller's if it
    /// holds it or is the first to use it (it holds it from then on). With the refusal
    /// otherwise: as a session that does not exist (hidden), or for a store that did not
    /// answer, or a session that could not be held.
    pub fn screen_session(
        &self,
        api: Api,
        session: &str,
        request: &Undecidable<'_>,
    ) -> Option<Decision> {
        let (server, subject) = (request.server, request.subject);
        let policy = self.policy.load();
        let note = owner_key(&policy.sessions, server, subject, session);
        // With a shared store, a session seen held lately is not asked of it again.
        let (remote, now_ms) = (
            self.store.as_ref().is_some(),
            self.clock.now_ns() / 1_000_000,
        );
        if remote && self.seen_held.holds(note.hash, now_ms) {
            return None;
        }
        let Err((code, reason)) = self.hold_session(&policy, note, server, subject, session) else {
            if remote {
                self.seen_held.saw(note.hash, now_ms);
            }
            return None;
        };
        let request = Undecidable {
            reason,
            logged: None,
            ..*request
        };
        Some(self.refuse_as(api, code, &request))
    }

    /// Whether `subject` holds `session` of `server`, holding it if no one does; why not.
    fn hold_session(
        &self,
        policy: &CompiledPolicy,
        note: CounterKey,
        server: Option<&str>,
        subject: Subject<'_>,
        session: &str,
    ) -> Result<(), (Code, &'static str)> {
        let held = |e: &Self| e.holder(note, sessions::KEEP_MS);
        match held(self) {
            Owner::Caller => Ok(()),
            Owner::Unknown => Err((Code::StoreUnavailable, sessions::UNKNOWN_OWNER)),
            Owner::Other => {
                let claim = Some(&policy.session_claim);
                if self.note_owner(&policy.sessions, note, claim, server, subject, session) {
                    return Ok(());
                }
                // Claimed by another caller, or by this one's other request just now.
                match held(self) {
                    Owner::Caller => Ok(()),
                    Owner::Other if self.claimed(&policy.session_claim, server, session) => {
                        Err((Code::Hidden, sessions::FOREIGN))
                    }
                    Owner::Other => Err((Code::RateLimited, sessions::NOT_HELD)),
                    Owner::Unknown => Err((Code::StoreUnavailable, sessions::UNKNOWN_OWNER)),
                }
            }
        }
    }

    /// Note `id` of `server` as `subject`'s in `owned` (its counter `note`,
    /// [`owner_key`]), and, with `claim`, hold it there for no one else. False if it could
    /// not be: claimed already, over the caller's cap, no slot in the table, the store away.
    fn note_owner(
        &self,
        owned: &Owned,
        note: CounterKey,
        claim: Option<&CompiledLimit>,
        server: Option<&str>,
        subject: Subject<'_>,
        id: &str,
    ) -> bool {
        let cap = match subject.grant {
            Some(_) => &owned.per_caller,
            None => &owned.anonymous,
        };
        let owner = &owned.owner;
        // A grant a server vouched for keeps its notes where a verified one does, bounded
        // by its per-caller cap, a share of the table ([`owners::per_caller`]).
        let trusted = self.grant_trusted_for_room(&subject);
        // The cap first, then the claim, then the note: a want refused leaves the slots the
        // wants before it took (empty, for their window), so a caller at its cap, or naming
        // another's session, takes no slot at all, however often it asks.
        let mut wants = vec![Want {
            limit: cap,
            key: CounterKey::new(
                cap.identity,
                subject.grant.unwrap_or("").as_bytes(),
                cap.granularity,
            )
            .chosen_by_client(!trusted),
            amount: UNITS_PER_CALL,
        }];
        if let Some(claim) = claim {
            wants.push(Want {
                limit: claim,
                key: owners::key((claim.identity, claim.granularity), server, None, id)
                    .chosen_by_client(!trusted),
                amount: UNITS_PER_CALL,
            });
        }
        wants.push(Want {
            limit: owner,
            key: note.chosen_by_client(note.client_chosen && !trusted),
            amount: UNITS_PER_CALL,
        });
        let (outcome, _) = self.reserve_in_store(&wants, subject.peer, &[], true);
        matches!(outcome, limiter::Outcome::Reserved)
    }

    /// Whether the caller whose note is `note` ([`owner_key`]) holds its thing, noted within
    /// `keep_ms`.
    fn holder(&self, note: CounterKey, keep_ms: u64) -> Owner {
        match self.read_one(note, keep_ms) {
            None => Owner::Unknown,
            Some(true) => Owner::Caller,
            Some(false) => Owner::Other,
        }
    }

    /// Whether some caller holds session `id` of `server` (`claim`'s counter is spent).
    fn claimed(&self, claim: &CompiledLimit, server: Option<&str>, id: &str) -> bool {
        let key = owners::key((claim.identity, claim.granularity), server, None, id);
        self.read_one(key, sessions::KEEP_MS) != Some(false)
    }

    /// Whether counter `key` holds anything within `window_ms`; `None`: the store did not
    /// answer.
    fn read_one(&self, key: CounterKey, window_ms: u64) -> Option<bool> {
        let read = Read { key, window_ms };
        let (outcome, bits) = self.reserve_in_store(&[], Peer::UNKNOWN, &[read], false);
        // A store that did not answer tells nothing, whatever its bits say.
        let answered = !matches!(outcome, limiter::Outcome::Unavailable { .. });
        (answered && bits.unknown & 1 == 0).then_some(bits.set & 1 == 1)
    }

    /// Why a request that reaches one task may not, after its method's rule allowed it: it
    /// names none, or not one its caller created. `None`: it may go on.
    fn task_screen<A: ArgValue>(&self, req: &Request<'_, A>) -> Option<(Code, &'static str)> {
        if req.kind != Kind::Method || !tasks::METHODS.contains(&req.name) {
            return None;
        }
        let task_id = req.args.as_ref().and_then(|a| a.get_key("taskId"));
        let Some(task_id) = task_id.as_ref().and_then(ArgValue::as_str) else {
            let reason = "the request names no task (params.taskId)";
            return Some((Code::InvalidRequest, reason));
        };
        refusal(self.task_owner(req.server, req.subject, task_id))
    }

    /// Reserve `wants` (new client-chosen keys counted as `peer`'s) and read `reads` in the
    /// store now, with no marks to judge, nothing to trace and nothing to give back: for
    /// counters that are not a rule's (whose a session or task is, [`crate::owners`]).
    fn reserve_in_store(
        &self,
        wants: &[Want<'_>],
        peer: Peer,
        reads: &[Read],
        consume: bool,
    ) -> (limiter::Outcome, ReadBits) {
        let (parts, limits) = (&mut limiter::Parts::new(), &mut Limits::default());
        let (denying, trace, now_ns) = (Denying(0), &mut NoTrace, self.clock.now_ns());
        self.reserve_group(
            wants, peer, reads, denying, now_ns, consume, parts, limits, trace,
        )
    }

    /// Give back what a call reserved and then did not run.
    fn give_back(&self, parts: &[Part]) {
        match self.store.as_ref() {
            None => limiter::give_back(&self.table, parts),
            Some(s) => {
                if let Some(id) = s.record(parts) {
                    s.release(&self.stats, id);
                }
            }
        }
    }

    /// The tool definitions servers last listed.
    pub fn sightings(&self) -> &Sightings {
        &self.sightings
    }

    /// A server accepted `grant`: it answered its `initialize` with a success, or its list
    /// request with a list ([`crate::owners::vouched`]).
    /// Nothing unless the sidecar was told that servers check the credential they are sent
    /// ([`EngineBuilder::trust_server_answers`]). False when the grant is not vouched for.
    pub fn vouch_for(&self, grant: &str) -> bool {
        self.vouching && self.vouched.vouch(grant, self.clock.wall_ms())
    }

    /// Whether a server's answer to `s`'s request could vouch for its grant: one is told
    /// that answers vouch, and the grant is one the client could have made up.
    pub fn may_vouch_for(&self, s: &Subject<'_>) -> bool {
        self.vouching && !s.grant_verified && s.grant.is_some()
    }

    /// Grants vouched for now.
    pub fn vouched_grants(&self) -> usize {
        self.vouched.len()
    }

    /// Whether `s`'s grant is one a client could not have made up: verified by the proxy,
    /// or vouched for by a server.
    fn grant_trusted(&self, s: &Subject<'_>) -> bool {
        s.grant_verified
            || (self.vouching
                && s.grant
                    .is_some_and(|g| self.vouched.holds(g, self.clock.wall_ms())))
    }

    /// [`Engine::grant_trusted`] where only the counter table's room depends on it: asked
    /// only once the client-chosen share runs short (three quarters taken), so a decision
    /// pays nothing for it otherwise.
    fn grant_trusted_for_room(&self, s: &Subject<'_>) -> bool {
        s.grant_verified
            || (self.table.client_slots() * 4 >= self.table.client_cap() * 3
                && self.grant_trusted(s))
    }
}

/// `text` ending as a sentence does, so more sentences can follow it.
fn sentence(text: &str) -> String {
    match text.trim_end().chars().last() {
        Some('.' | '!' | '?') | None => text.trim_end().to_owned(),
        Some(_) => format!("{}.", text.trim_end()),
    }
}

/// Builds decisions that keep the deciding policy alive.
pub(crate) struct Draft<'a> {
    pub(crate) policy: &'a Arc<CompiledPolicy>,
}

impl Draft<'_> {
    pub(crate) fn finish(
        &self,
        code: Code,
        reason: impl Into<Text>,
        rule: impl Into<Text>,
    ) -> Decision {
        Decision {
            verdict: code.verdict(),
            code,
            reason: reason.into(),
            rule: rule.into(),
            retry_after_ms: None,
            limits: Limits::new(),
            shadow: false,
            reservation: None,
            approval: None,
            marks: None,
            confirmation: None,
            policy: Arc::clone(self.policy),
        }
    }
}

/// How a rule's conditions came out for a call.
enum Checked {
    Pass,
    Deny(Decision),
    /// They read marks, which are not read yet: judged again from this item once they are.
    AwaitMarks(usize),
}

#[inline(always)]
fn check_conditions<A: ArgValue + Clone, T: Trace>(
    out: &Draft<'_>,
    r: &CompiledRule,
    start: usize,
    facts: &Facts<'_, A>,
    trace: &mut T,
) -> Checked {
    let (conditions, at) = evaluate_conditions_from(out.policy, r, start, facts, trace);
    match conditions {
        Conditions::Pass => Checked::Pass,
        Conditions::Denied(d) => {
            Checked::Deny(out.finish(Code::ConditionFailed, d.reason, d.pointer))
        }
        Conditions::Unevaluable(_, Problem::NotYetKnown) if facts.marks.is_none() => {
            Checked::AwaitMarks(at)
        }
        Conditions::Unevaluable(c, p) => {
            let detail = format!("condition cannot be evaluated: {}", p.describe(c));
            let reason: Text = match &r.reason {
                Some(reason) => format!("{reason} ({detail})").into(),
                None => detail.into(),
            };
            Checked::Deny(out.finish(Code::ConditionFailed, reason, c.pointer.as_str()))
        }
    }
}

/// Which combinations of the marks read make one of `rules` deny the call (see [`Denying`]),
/// judged as [`check_conditions`] judges them once the marks are known: anything but a pass
/// denies.
fn denying<'r, A: ArgValue + Clone>(
    out: &Draft<'_>,
    rules: impl Iterator<Item = (&'r CompiledRule, usize)> + Clone,
    mark_reads: &mut MarkReads,
    reads: usize,
    facts: &Facts<'_, A>,
) -> Denying {
    if reads > MAX_JUDGED_READS {
        return Denying::default();
    }
    let mut mask = 0;
    for combo in 0..1u64 << reads {
        let found = ReadBits {
            set: combo,
            unknown: 0,
        };
        let known = facts.with_marks(mark_reads.fill(found));
        let passes = |(r, at): (&CompiledRule, usize)| {
            matches!(
                evaluate_conditions_from(out.policy, r, at, &known, &mut NoTrace).0,
                Conditions::Pass
            )
        };
        if !rules.clone().all(passes) {
            mask |= 1 << combo;
        }
    }
    Denying(mask)
}

/// A rule whose conditions still wait for marks once they were read: never allowed.
fn unread(out: &Draft<'_>, r: &CompiledRule) -> Decision {
    let reason = "the marks this rule reads could not be read, so the call is denied";
    out.finish(Code::ConditionFailed, reason, r.pointer)
}

/// Units a call that sets a mark adds to its counter.
const MARK_UNITS: u64 = 1;

/// The marks the deferred rules read: a counter read for each the call names a scope value
/// for, and what each was found to be. Built per decision that reads marks, so nothing in
/// it is copied from the policy but counter keys: names are shared, and the reads and marks
/// of a rule that reads one or two stay inline.
struct MarkReads {
    /// One per mark whose state is not [`MarkState::NoScope`], in the marks' order.
    reads: Reads,
    marks: Marks,
}

/// A call's mark reads (a rule reads few).
type Reads = SmallVec<[Read; 2]>;

impl MarkReads {
    fn of(rules: &[(&CompiledRule, usize)], subject: &Subject<'_>) -> MarkReads {
        let mut out = MarkReads {
            reads: Reads::new(),
            marks: Marks::default(),
        };
        for mark in rules.iter().flat_map(|(r, _)| &r.mark_reads) {
            if out.marks.0.iter().any(|(n, _)| *n == mark.name) {
                continue;
            }
            // Read, not counted: where its key would be kept does not matter.
            let state = match mark_key(mark, subject, subject.grant_verified) {
                Ok(key) => {
                    out.reads.push(Read {
                        key,
                        window_ms: mark.ttl_ms,
                    });
                    MarkState::Unset
                }
                Err(_) => MarkState::NoScope,
            };
            out.marks.0.push((Arc::clone(&mark.name), state));
        }
        out.reads.truncate(MAX_READS);
        out
    }

    /// What a decision reports of the marks `reading` read, and `set`: none where the
    /// section uses no marks, or none were read or set.
    fn seen(reading: Option<MarkReads>, set: Vec<Arc<str>>) -> Option<Box<MarksSeen>> {
        let read = reading.map(|r| r.marks.0).unwrap_or_default();
        if read.is_empty() && set.is_empty() {
            return None;
        }
        Some(Box::new(MarksSeen { read, set }))
    }

    /// The marks, as the reads found them: the `i`th mark with a read has bit `i`.
    fn fill(&mut self, bits: ReadBits) -> &Marks {
        let mut i = 0;
        for (_, state) in self.marks.0.iter_mut() {
            if *state == MarkState::NoScope {
                continue;
            }
            *state = if i >= MAX_READS || bits.unknown & (1 << i) != 0 {
                MarkState::Unread
            } else if bits.set & (1 << i) != 0 {
                MarkState::Set
            } else {
                MarkState::Unset
            };
            i += 1;
        }
        &self.marks
    }
}

/// Why a caller whose standing towards a task is `owner` may not reach it; `None`: it
/// created it. Another's task is answered as one that does not exist: whether it does is
/// the other caller's business.
/// The counter that notes `id` of `server` in `owned` as `subject`'s ([`crate::owners`]).
fn owner_key(owned: &Owned, server: Option<&str>, subject: Subject<'_>, id: &str) -> CounterKey {
    let (owner, grant) = (&owned.owner, (subject.grant, subject.grant_verified));
    owners::key((owner.identity, owner.granularity), server, Some(grant), id)
}

fn refusal(owner: Owner) -> Option<(Code, &'static str)> {
    match owner {
        Owner::Caller => None,
        Owner::Other => Some((Code::Hidden, tasks::FOREIGN)),
        Owner::Unknown => Some((Code::StoreUnavailable, tasks::UNKNOWN_OWNER)),
    }
}

/// The names of the marks `rules` set, once each.
fn set_marks<'r>(rules: impl Iterator<Item = &'r CompiledRule>) -> Vec<Arc<str>> {
    let mut names: Vec<Arc<str>> = Vec::new();
    for mark in rules.flat_map(|r| &r.marks) {
        if !names.contains(&mark.name) {
            names.push(Arc::clone(&mark.name));
        }
    }
    names
}

/// The counter key of `mark` for this caller, or why there is none; `grant_trusted` when
/// the caller's grant is one a client could not have made up.
fn mark_key(
    mark: &CompiledMark,
    s: &Subject<'_>,
    grant_trusted: bool,
) -> Result<CounterKey, String> {
    let value = match mark.scope {
        Scope::Grant => s.grant,
        Scope::Session => s.session,
        Scope::Agent => s.agent,
        Scope::Server | Scope::Global => Some(""),
    };
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(format!(
            "mark {:?} is kept per {}, but the request names no {}",
            &*mark.name,
            mark.scope.as_str(),
            mark.scope.as_str()
        ));
    };
    let client_chosen = !matches!(mark.scope, Scope::Grant) || !grant_trusted;
    Ok(
        CounterKey::new(mark.identity, value.as_bytes(), mark.granularity)
            .chosen_by_client(client_chosen),
    )
}

/// How a rule's `deny_if` and `require` came out for a call.
pub(crate) enum Conditions<'p> {
    Pass,
    /// An item denied the call, with this denial.
    Denied(&'p ConditionDenial),
    /// A condition could not be evaluated (which denies the call).
    Unevaluable(&'p Compare, Problem),
}

/// Evaluate `deny_if` (any holding denies), then `require` (any not holding denies), each
/// left to right up to the first that decides, telling `trace` each item.
pub(crate) fn evaluate_conditions<'p, A: ArgValue + Clone, T: Trace>(
    policy: &CompiledPolicy,
    r: &'p CompiledRule,
    facts: &Facts<'_, A>,
    trace: &mut T,
) -> Conditions<'p> {
    evaluate_conditions_from(policy, r, 0, facts, trace).0
}

/// [`evaluate_conditions`] from the `start`th item on (`deny_if`'s, then `require`'s): the
/// items before it are known to pass whatever the marks (they passed before the marks
/// were read, and reading marks only settles items that waited for them). Also returns
/// the item it stopped at.
#[inline(always)]
fn evaluate_conditions_from<'p, A: ArgValue + Clone, T: Trace>(
    policy: &CompiledPolicy,
    r: &'p CompiledRule,
    start: usize,
    facts: &Facts<'_, A>,
    trace: &mut T,
) -> (Conditions<'p>, usize) {
    // A group holds when all its conditions hold; a bare condition is a group of one.
    let mut eval = |list: List, index: usize, item: &'p ConditionItem| {
        trace.item_begin(policy, r, list, index, item);
        let outcome = match item {
            ConditionItem::Condition(c) => facts.eval_traced(c, trace),
            ConditionItem::Group { conditions, .. } => facts.eval_all_traced(conditions, trace),
        };
        let denies = !matches!(
            (list, outcome),
            (List::DenyIf, Outcome::Fails) | (List::Require, Outcome::Holds)
        );
        trace.item_end(outcome, denies);
        outcome
    };
    let denying = r.deny_if.len();
    for (i, c) in r.deny_if.iter().enumerate().skip(start) {
        match eval(List::DenyIf, i, &c.item) {
            Outcome::Holds => return (Conditions::Denied(&c.denial), i),
            Outcome::Fails => {}
            Outcome::Unevaluable(c, p) => return (Conditions::Unevaluable(c, p), i),
        }
    }
    let skip = start.saturating_sub(denying);
    for (i, c) in r.require.iter().enumerate().skip(skip) {
        match eval(List::Require, i, &c.item) {
            Outcome::Holds => {}
            Outcome::Fails => return (Conditions::Denied(&c.denial), denying + i),
            Outcome::Unevaluable(c, p) => return (Conditions::Unevaluable(c, p), denying + i),
        }
    }
    (Conditions::Pass, denying + r.require.len())
}

/// The counter key and amount one limit needs for this call; `grant_trusted` when the
/// caller's grant is one a client could not have made up.
fn want<'p, A: ArgValue + Clone>(
    limit: &'p CompiledLimit,
    req: &Request<'_, A>,
    facts: &Facts<'_, A>,
    grant_trusted: bool,
) -> Result<Want<'p>, (String, TextId)> {
    let s = &req.subject;
    let value = match limit.info.scope {
        Scope::Grant => s.grant,
        Scope::Session => s.session,
        Scope::Agent => s.agent,
        Scope::Server => Some(req.server.unwrap_or("")),
        Scope::Global => Some(""),
    };
    let Some(value) = value
        .filter(|v| !v.is_empty() || matches!(limit.info.scope, Scope::Server | Scope::Global))
    else {
        return Err((
            format!(
                "limit {:?} counts per {}, but the request names no {}",
                &*limit.counter_name,
                limit.info.scope.as_str(),
                limit.info.scope.as_str()
            ),
            limit.info.rule,
        ));
    };
    let amount = match (&limit.cost, req.hits) {
        (_, Some(hits)) => u64::from(hits) * UNITS_PER_CALL,
        (None, None) => UNITS_PER_CALL,
        (Some(path), None) => {
            let text = limit.cost_text.as_deref().unwrap_or("cost");
            let bad = |what: &str| {
                (
                    format!("cost {text} {what}; a spend limit needs a non-negative number"),
                    limit.cost_pointer,
                )
            };
            let v = facts.arg(path).map_err(|p| match p {
                Problem::CaseVariant => {
                    bad("cannot be read one way (a key differing only by case is present)")
                }
                Problem::Ambiguous => bad("runs into a value that is not JSON"),
                _ => bad("is missing"),
            })?;
            let n = v
                .as_num()
                .ok_or_else(|| bad(&format!("is {}", v.kind().name())))?
                .as_f64();
            // The reason names what is wrong, not the value: it is logged.
            if n.is_nan() {
                return Err(bad("is not a number"));
            }
            if n < 0.0 {
                return Err(bad("is negative"));
            }
            to_units(n).ok_or_else(|| bad("is too large"))?
        }
    };
    Ok(Want {
        limit,
        key: CounterKey::new(limit.identity, value.as_bytes(), limit.granularity).chosen_by_client(
            match limit.info.scope {
                // What any client can make up at will: only its share of the table.
                Scope::Grant => !grant_trusted,
                Scope::Session | Scope::Agent => true,
                Scope::Server | Scope::Global => false,
            },
        ),
        amount,
    })
}

/// A rate-limited call's reason, written into one allocation: the denial path of a flood of
/// calls makes one for each.
fn rate_limited_reason(limit: &CompiledLimit, retry_after_ms: Option<u64>) -> String {
    use std::fmt::Write;
    let unit = if limit.cost.is_some() { "" } else { " calls" };
    let mut reason = String::with_capacity(128);
    // Writing to a String cannot fail.
    let _ = write!(
        reason,
        "rate limit {:?} reached: at most {}{unit} per {} per {}",
        &*limit.counter_name,
        limit.info.max,
        Window(limit.info.window_ms),
        limit.info.scope.as_str()
    );
    let _ = match retry_after_ms {
        Some(ms) => write!(reason, "; retry in {}", Seconds(ms)),
        None => write!(reason, "; this call's cost exceeds the limit itself"),
    };
    reason
}

/// A window for people: `1m`, `90s`, `1500ms` (the extension's `format_window`).
pub struct Window(pub u64);

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ];
        let ms = self.0;
        match UNITS.iter().find(|(n, _)| ms.is_multiple_of(*n)) {
            Some((n, unit)) => write!(f, "{}{unit}", ms / n),
            None => write!(f, "{ms}ms"),
        }
    }
}

/// A wait for people, in seconds to a tenth: `1.5s` (the extension's `format_seconds`).
pub struct Seconds(pub u64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}s", self.0 as f64 / 1000.0)
    }
}
