//! One exchange's answer, followed once the request's decision let it go on: what the gate's
//! [`Follow`] leaves for later. A list's answer is filtered for its caller (and its request
//! sent on under an id of toolgate's own), a `tools/call` that failed gives its reservation
//! back and a task it created is noted as its caller's, an `initialize` answered vouches for
//! the caller's grant.
//!
//! It knows no transport: ext_proc ([`crate::ext_proc`]) feeds it the parts of an answer as
//! Envoy streams them to the sidecar, and Envoy's dynamic module as Envoy hands them to the
//! filter, so both do the same with every answer.

use crate::held::{HeldBytes, Room};
use serde_json::Value;
use std::sync::Arc;
use toolgate_core::counter::Peer;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::gate::Follow;
use toolgate_core::engine::listing::{
    CursorOpener, ListFilter, ListReport, ListRequest, INTERNAL_ERROR, INVALID_CURSOR,
};
use toolgate_core::engine::visibility::Visibility;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::answer::error_message;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::mcp::outcome::{CallWatcher, Failure, Outcome};
use toolgate_core::mcp::request::INVALID_PARAMS;
use toolgate_core::mcp::sse::message_event;
use toolgate_core::policy::compile::CompiledPolicy;
use toolgate_core::{Engine, Subject};

/// The media type of a filtered list's answer ([`ListFilter`] writes an event stream), which
/// fixes how a client reads it: UTF-8 (an event stream has no other charset), not compressed.
pub const LIST_ANSWER_TYPE: &str = "text/event-stream";

/// The headers of the server's answer that a filtered list's answer does not keep: its body
/// is the filter's.
pub const LIST_ANSWER_DROPS: [&str; 2] = ["content-length", "content-encoding"];

/// The caller and server a tool list is filtered for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub server: Option<String>,
    pub grant: Option<String>,
    pub session: Option<String>,
    pub agent: Option<String>,
    pub grant_verified: bool,
    pub peer: Peer,
}

impl Caller {
    /// The caller a decision was made for.
    pub fn of(server: Option<&str>, subject: &Subject<'_>) -> Caller {
        Caller {
            server: server.map(str::to_owned),
            grant: subject.grant.map(str::to_owned),
            session: subject.session.map(str::to_owned),
            agent: subject.agent.map(str::to_owned),
            grant_verified: subject.grant_verified,
            peer: subject.peer,
        }
    }

    /// The bytes of the caller's text.
    fn text_len(&self) -> usize {
        let texts = [&self.server, &self.grant, &self.session, &self.agent];
        texts
            .iter()
            .map(|t| t.as_ref().map_or(0, String::len))
            .sum()
    }

    pub fn subject(&self) -> Subject<'_> {
        Subject {
            grant: self.grant.as_deref(),
            session: self.session.as_deref(),
            agent: self.agent.as_deref(),
            attributes: &[],
            grant_verified: self.grant_verified,
            peer: self.peer,
        }
    }
}

/// An answer sent to the client in place of the server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Envoy's response code details.
    pub details: &'static str,
}

/// What becomes of the request's body.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestBody {
    Unchanged,
    /// Sent on as these bytes (its length is theirs).
    Replaced(Vec<u8>),
    /// Not sent on: the client gets this answer.
    Refused(Refusal),
}

type Visible = Box<dyn FnMut(Listed, &str, &ListedTool<'_>) -> Visibility + Send>;

/// Where a follower's lists are traced (a span each): told when a list's first part arrives,
/// and how it ended (what it lists, entries taken out, refused).
pub trait ListTrace: Send {
    fn part(&mut self);
    fn listed(&mut self, listed: Option<Listed>, removed: usize, refused: bool);
}

/// One exchange's answer, followed part by part.
pub struct Follower {
    state: State,
    /// What the follower holds of the budget ([`HeldBytes`]): the caller's text it keeps and
    /// the answer's unfinished message (a list's event not yet whole, or a call's answer
    /// read so far). A follower that would go over stops reading: a list is refused, a call
    /// counts as run.
    budget: Arc<HeldBytes>,
    held: usize,
    /// The bytes of the caller's text (its grant, session and agent, the list's id).
    note: usize,
    /// Its MCP server's room ([`HeldBytes::room`]) and what the follower holds of it, where
    /// nothing else charges the room for it ([`Follower::in_room`]).
    room: Option<(Arc<Room>, usize)>,
    /// The lists read last, shared by the followers of one process, so that the same answer
    /// is not read again.
    known: Arc<KnownAnswers>,
    /// Where the lists filtered are traced, if they are ([`Follower::traced`]).
    spans: Option<Box<dyn ListTrace>>,
}

enum State {
    List {
        id: Option<Value>,
        /// What the answer to `id` lists; `None` for a stream, or a read's answer.
        listed: Option<Listed>,
        /// A read's answer, made the caller's own ([`ListFilter::private`]).
        private: bool,
        /// The id the request went on with, when toolgate gave it one ([`ListRequest`]).
        upstream_id: Option<Value>,
        caller: Arc<Caller>,
        policy: Arc<CompiledPolicy>,
        /// Made at the answer's first part of the body, whether its headers came or not.
        filter: Option<Box<ListFilter<Visible>>>,
        /// What of the filter's report is already in the statistics: a stream that stays
        /// open (a server's GET stream) is counted answer by answer.
        counted: ListReport,
    },
    Call(CallAnswer),
    /// An `initialize`'s answer: a success vouches for the caller's grant.
    Opening(Caller),
    /// Nothing to follow.
    Nothing,
}

/// A `tools/call`'s answer, followed to give its reservation back if the call failed and to
/// note the task it created as its caller's.
struct CallAnswer {
    watcher: CallWatcher,
    reservation: Option<u64>,
    /// A result with `isError` gives the reservation back too.
    tool_errors: bool,
    released: bool,
    /// Whose the task the answer creates is; `None` once noted, or if the call asked for none.
    task_of: Option<Caller>,
    /// The give-back is left to the follower's owner ([`Follower::releasing_later`]): here
    /// once the call is known to have failed, until taken.
    later: Option<Option<(u64, Failure)>>,
}

impl CallAnswer {
    /// Act on what the answer has said so far: give the reservation back once the call is
    /// known to have failed (by a tool error only when the rule says so: a tool may report
    /// an error after it acted), and note a created task before its id reaches the client.
    fn settle(&mut self, engine: &Engine) {
        if let (Outcome::Failed(failure), Some(reservation)) =
            (self.watcher.outcome(), self.reservation)
        {
            if !self.released && (self.tool_errors || failure != Failure::ToolError) {
                self.released = true;
                match &mut self.later {
                    Some(later) => *later = Some((reservation, failure)),
                    None => release(engine, reservation, failure),
                }
            }
        }
        if let Some(task_id) = self.watcher.created_task() {
            if let Some(caller) = self.task_of.take() {
                let server = caller.server.as_deref();
                engine.note_task(server, caller.subject(), task_id);
            }
        }
    }
}

/// Give back `reservation`, for a call that failed as `failure` says.
pub fn release(engine: &Engine, reservation: u64, failure: Failure) {
    if engine.release(reservation) {
        engine.stats().count_released(failure);
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.budget.hold(&mut self.held, 0);
        if let Some((room, mut in_room)) = self.room.take() {
            room.hold(&mut in_room, 0);
            self.budget.leave(room);
        }
    }
}

impl Follower {
    /// Follow the answer as `follow` says, for `caller`, whose text it keeps against `budget`
    /// (a caller's grant, session and agent come from its headers: tens of kilobytes, each
    /// exchange); `None` if the budget has no room for it.
    pub fn new(
        engine: &Engine,
        follow: Follow,
        caller: Caller,
        budget: Arc<HeldBytes>,
        known: Arc<KnownAnswers>,
    ) -> Option<Follower> {
        let note = caller.text_len() + follow_id_len(&follow);
        let state = match follow {
            Follow::List { id, listed } => State::List {
                id,
                listed,
                private: false,
                upstream_id: None,
                caller: Arc::new(caller),
                policy: engine.policy(),
                filter: None,
                counted: ListReport::default(),
            },
            // A read's answer lists nothing: it is read as a list's is, and made private.
            Follow::Private { id } => State::List {
                id: Some(id),
                listed: None,
                private: true,
                upstream_id: None,
                caller: Arc::new(caller),
                policy: engine.policy(),
                filter: None,
                counted: ListReport::default(),
            },
            Follow::CallOutcome {
                id,
                reservation,
                tool_errors,
                task,
            } => State::Call(CallAnswer {
                watcher: CallWatcher::new(id),
                reservation,
                tool_errors,
                released: false,
                task_of: task.then_some(caller),
                later: None,
            }),
            Follow::Opening => State::Opening(caller),
            Follow::Nothing => State::Nothing,
        };
        let mut follower = Follower {
            state,
            budget,
            held: 0,
            note,
            room: None,
            known,
            spans: None,
        };
        let budget = Arc::clone(&follower.budget);
        budget.hold(&mut follower.held, note).then_some(follower)
    }

    /// A failed call's reservation is not given back by the follower but left for its owner
    /// to take ([`Follower::take_release`]) and give back where a round trip to the counter
    /// store may wait (the Envoy module's deciders, not Envoy's worker).
    pub fn releasing_later(mut self) -> Follower {
        if let State::Call(call) = &mut self.state {
            call.later = Some(None);
        }
        self
    }

    /// The reservation a failed call gives back, once known (with [`Follower::releasing_later`]).
    pub fn take_release(&mut self) -> Option<(u64, Failure)> {
        match &mut self.state {
            State::Call(CallAnswer {
                later: Some(later), ..
            }) => later.take(),
            _ => None,
        }
    }

    /// Each list the follower filters is traced by `spans`.
    pub fn traced(mut self, spans: Option<Box<dyn ListTrace>>) -> Follower {
        self.spans = spans;
        self
    }

    /// The follower also holds what it holds in the room of `server` (an adapter whose
    /// transport charges the room nothing itself: Envoy's module): when the room is full, it
    /// gives up as when the budget is.
    pub fn in_room(mut self, server: &str) -> Follower {
        let room = self.budget.room(server);
        let mut in_room = 0;
        room.hold(&mut in_room, self.held);
        self.room = Some((room, in_room));
        self
    }

    /// Hold `now` bytes, in the budget and the room: false, holding only the note, if either
    /// is full.
    fn hold(&mut self, now: usize) -> bool {
        let mut within = self.budget.hold(&mut self.held, now);
        if let Some((room, in_room)) = self.room.as_mut() {
            within &= room.hold(in_room, now);
        }
        if !within {
            self.budget.hold(&mut self.held, self.note);
            if let Some((room, in_room)) = self.room.as_mut() {
                room.hold(in_room, self.note);
            }
        }
        within
    }

    /// What the follower holds of the budget now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether the request's body is sent on changed (a list's, under toolgate's id): its
    /// length is then not the client's.
    pub fn changes_request(&self) -> bool {
        matches!(self.state, State::List { id: Some(_), .. })
    }

    /// Whether the answer's body is the follower's own (a list's, filtered): the server's
    /// [`LIST_ANSWER_DROPS`] go and its media type is [`LIST_ANSWER_TYPE`].
    pub fn rewrites_answer(&self) -> bool {
        matches!(self.state, State::List { .. })
    }

    /// Whether a call's outcome is known: nothing more of its answer needs reading.
    pub fn outcome_known(&self) -> bool {
        matches!(&self.state, State::Call(call) if call.watcher.outcome() != Outcome::Pending)
    }

    /// The request's whole body. A list request's is sent on under an id of toolgate's own, so
    /// that no other request of the client's can share the id the server answers.
    pub fn request_body(&mut self, engine: &Engine, body: &[u8]) -> RequestBody {
        let State::List {
            id: Some(id),
            listed,
            upstream_id,
            caller,
            ..
        } = &mut self.state
        else {
            return RequestBody::Unchanged;
        };
        // A task list's cursor is one toolgate sealed for this caller: opened again for the
        // server, or the request refused before it reaches the server.
        let server = caller.server.as_deref();
        let subject = caller.subject();
        let open = |sealed: &str| engine.open_task_cursor(server, &subject, sealed);
        let cursors = (*listed == Some(Listed::Tasks)).then_some(&open as CursorOpener<'_>);
        match ListRequest::rewrite(body, id, cursors) {
            Ok(request) => {
                *upstream_id = Some(request.upstream_id);
                RequestBody::Replaced(request.body)
            }
            // A cursor not this caller's is the caller's error, and says nothing more.
            Err(why) if why == INVALID_CURSOR => {
                let message = format!("Invalid params: {why}");
                RequestBody::Refused(list_refusal(id, INVALID_PARAMS, &message))
            }
            Err(why) => RequestBody::Refused(list_refusal(id, INTERNAL_ERROR, &why)),
        }
    }

    /// The answer's status and media type, as its headers say.
    pub fn response_head(&mut self, engine: &Engine, status: Option<u16>, content_type: &str) {
        match &mut self.state {
            State::Call(call) => {
                call.watcher.head(status.unwrap_or(0), Some(content_type));
                call.settle(engine);
            }
            State::Opening(caller) => {
                if status.is_some_and(|s| (200..300).contains(&s)) {
                    if let Some(grant) = caller.grant.as_deref() {
                        engine.vouch_for(grant);
                    }
                }
            }
            State::List { .. } | State::Nothing => {}
        }
    }

    /// A part of the answer's body, and whether it is the last: what goes to the client in
    /// its place, for a list (`None`: the part as it is). `status` is the answer's, for a
    /// transport that may send the body without its headers.
    pub fn response_body(
        &mut self,
        engine: &Arc<Engine>,
        part: &[u8],
        end: bool,
        status: impl FnOnce() -> Option<u16>,
    ) -> Option<Vec<u8>> {
        let mut state = std::mem::replace(&mut self.state, State::Nothing);
        let out = self.follow(&mut state, engine, part, end, status);
        self.state = state;
        out
    }

    fn follow(
        &mut self,
        state: &mut State,
        engine: &Arc<Engine>,
        part: &[u8],
        end: bool,
        status: impl FnOnce() -> Option<u16>,
    ) -> Option<Vec<u8>> {
        match state {
            State::List {
                id,
                listed,
                private,
                upstream_id,
                caller,
                policy,
                filter,
                counted,
            } => {
                let filter = filter.get_or_insert_with(|| {
                    let read = (*listed, *private);
                    list_filter(engine, &self.known, id, read, upstream_id, caller, policy)
                });
                if let Some(spans) = &mut self.spans {
                    spans.part();
                }
                let mut out = filter.feed(part, end);
                if !self.hold(filter.held() + self.note) {
                    let why = "the proxy holds as many unfinished answers as it may";
                    out.extend(filter.give_up(why.into()));
                }
                let (lists, removed, refused) =
                    count_lists(engine, &filter.report, counted, caller);
                if let Some(spans) = &mut self.spans {
                    if lists > 0 || refused {
                        spans.listed(*listed, removed, refused);
                    }
                }
                Some(out)
            }
            State::Call(call) => {
                let watcher = &mut call.watcher;
                if !watcher.headed() {
                    if let Some(status) = status() {
                        watcher.head(status, None);
                    }
                }
                watcher.feed(part, end);
                if !self.hold(watcher.held() + self.note) {
                    watcher.give_up();
                }
                call.settle(engine);
                None
            }
            State::Opening(_) | State::Nothing => None,
        }
    }
}

/// The bytes of the JSON-RPC id a follower keeps, twice: a list's filter answers under a copy
/// of it.
fn follow_id_len(follow: &Follow) -> usize {
    let id = match follow {
        Follow::List { id: Some(id), .. }
        | Follow::Private { id }
        | Follow::CallOutcome { id, .. } => id,
        _ => return 0,
    };
    2 * id.to_string().len()
}

/// Count what the filter did since it was last counted: each list it read, the tools it
/// took out, and a refusal; the three are returned. A list answered vouches for the caller's
/// grant (where the sidecar is told that servers check it: [`Engine::vouch_for`]).
fn count_lists(
    engine: &Engine,
    report: &ListReport,
    counted: &mut ListReport,
    caller: &Caller,
) -> (usize, usize, bool) {
    if report.lists > counted.lists && !caller.grant_verified {
        if let Some(grant) = caller.grant.as_deref() {
            engine.vouch_for(grant);
        }
    }
    let stats = engine.stats();
    for _ in counted.lists..report.lists {
        stats.count_list(0, false);
    }
    let refused = report.refused.is_some() && counted.refused.is_none();
    if refused {
        stats.count_list(0, true);
    }
    let (lists, removed) = (
        report.lists - counted.lists,
        report.removed - counted.removed,
    );
    stats.count_list_removed(removed);
    counted.clone_from(report);
    (lists, removed, refused)
}

/// The filter for a list's answer: the server answers the id the request went on with
/// (toolgate's, [`ListRequest`]), and the agent gets its own back.
fn list_filter(
    engine: &Arc<Engine>,
    known: &Arc<KnownAnswers>,
    id: &Option<Value>,
    (listed, private): (Option<Listed>, bool),
    upstream_id: &mut Option<Value>,
    caller: &Arc<Caller>,
    policy: &Arc<CompiledPolicy>,
) -> Box<ListFilter<Visible>> {
    let visible = visible(engine, caller, policy);
    let filter = match upstream_id.take() {
        Some(ours) => ListFilter::new(Some(ours), listed, visible)
            .replying_as(id.clone().unwrap_or(Value::Null)),
        None => ListFilter::new(id.clone(), listed, visible),
    };
    // A task list's cursor goes to the agent sealed for it ([`toolgate_core::owners::cursors`]), on
    // the request's own stream or any other that carries such an answer.
    let (sealer, sealed_for) = (Arc::clone(engine), Arc::clone(caller));
    let filter = filter.sealing_cursors(Box::new(move |cursor: &str| {
        let server = sealed_for.server.as_deref();
        sealer.seal_task_cursor(server, &sealed_for.subject(), cursor)
    }));
    // A read's answer (contents, not a list) is not kept among the lists read before.
    let filter = match private {
        true => filter.private(),
        false => filter.remembering(Arc::clone(known)),
    };
    // Judged alike for every caller where judging records nothing, unless a rule reads the
    // caller, which the judging reports.
    let server = caller.server.as_deref();
    Box::new(match listed {
        Some(l) if policy.judges_lists_alike(l, server) => {
            filter.judging_alike(policy.generation, server)
        }
        _ => filter,
    })
}

/// Whether `caller` may see each listed tool (resource, template, prompt), under the policy
/// of the decision that let the list request through.
fn visible(engine: &Arc<Engine>, caller: &Arc<Caller>, policy: &Arc<CompiledPolicy>) -> Visible {
    let (engine, caller, policy) = (Arc::clone(engine), Arc::clone(caller), Arc::clone(policy));
    Box::new(move |listed: Listed, name: &str, object: &ListedTool<'_>| {
        let server = caller.server.as_deref();
        match listed {
            // A tool's definition is recorded for its calls (pins, annotations).
            Listed::Tools => engine.list_tool(&policy, server, caller.subject(), name, object),
            // A caller is shown the tasks it created, whatever their rule.
            Listed::Tasks => engine
                .task_owner(server, caller.subject(), name)
                .visibility(),
            _ => policy.visibility(listed.kind(), name, server, caller.subject(), None),
        }
    })
}

/// A list's answer replaced before the request went on: an error event for `id`, in the
/// media type of every list's answer ([`LIST_ANSWER_TYPE`]), at status 200 (clients read
/// the body of an error status only when it is plain JSON).
fn list_refusal(id: &Value, code: i64, message: &str) -> Refusal {
    Refusal {
        status: 200,
        content_type: LIST_ANSWER_TYPE,
        body: message_event(&error_message(id, code, message)),
        details: "toolgate_list_refused",
    }
}
