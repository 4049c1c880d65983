//! Envoy's external processing API (`envoy.service.ext_proc.v3.ExternalProcessor/Process`)
//! on MCP servers' answers: a `tools/list` answer is filtered for its caller, and a
//! `tools/call` that failed upstream gives its reservation back.
//!
//! Envoy opens one stream per HTTP exchange, so each stream is one request's answer and
//! needs no state shared with other streams. What to do with it was settled by the same
//! request's ext_authz Check ([`crate::authz`]), which leaves two things for later filters:
//! - dynamic metadata under [`METADATA_NAMESPACE`] / [`METADATA_KEY`] (which a client cannot
//!   set): what to follow, the JSON-RPC id, and for a list the caller, for a call its
//!   reservation. The ext_proc filter forwards it with `metadata_options`.
//! - the request header [`EXCHANGE_HEADER`] (always set, overwriting whatever the client
//!   sent), which the Envoy config routes on, so that processing is turned on only for the
//!   exchanges that need it and everything else pays nothing.

use crate::held::{stream_buffer, HeldBytes, Room, STREAM_SHARE};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    HeaderMap, HeaderValue, HeaderValueOption, Metadata,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::body_mutation::Mutation;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse, TrailersResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value as ProtoValue};
use prost::Message;
use serde_json::Value;
use std::collections::HashMap;
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
/// The deployed routes set it (`response_headers_to_add`) and take off `content-encoding`.
pub const LIST_ANSWER_TYPE: &str = "text/event-stream";

/// The request header the Envoy config routes on: [`exchange_header`]'s values.
pub const EXCHANGE_HEADER: &str = "x-toolgate-exchange";
/// Where ext_authz puts a Check's dynamic metadata.
pub const METADATA_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// toolgate's entry in that namespace.
pub const METADATA_KEY: &str = "toolgate";

/// The value of [`EXCHANGE_HEADER`] for an exchange.
pub fn exchange_header(follow: &Follow) -> &'static str {
    match follow {
        Follow::Nothing => "none",
        Follow::List { .. } | Follow::Private { .. } => "list",
        // Envoy waits for a task's answer, so that the task is noted before its id goes on.
        Follow::CallOutcome { task: true, .. } => "task",
        Follow::CallOutcome { .. } => "tools-call",
        Follow::Opening => "initialize",
    }
}

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
    fn subject(&self) -> Subject<'_> {
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

/// The Check's dynamic metadata for what the answer needs, or `None` if nothing: for a list
/// the caller, for a call its reservation, for both the MCP server (whose room the
/// exchange holds its answer in: [`HeldBytes::room`]).
pub fn exchange_metadata(follow: &Follow, caller: impl FnOnce() -> Caller) -> Option<Struct> {
    let mut note = Struct::default();
    let mut put = |key: &str, kind: Kind| {
        note.fields
            .insert(key.to_owned(), ProtoValue { kind: Some(kind) });
    };
    if matches!(follow, Follow::Nothing) {
        return None;
    }
    let caller = caller();
    if let Some(server) = &caller.server {
        put("server", Kind::StringValue(server.clone()));
    }
    match follow {
        Follow::Nothing => {}
        Follow::List { id, listed } => {
            // The list's method, or "list" for a stream of whatever lists.
            let exchange = listed.map_or(STREAM, Listed::method);
            put("exchange", Kind::StringValue(exchange.into()));
            if let Some(id) = id {
                put("id", Kind::StringValue(id.to_string()));
            }
            put_caller(&mut put, caller);
        }
        Follow::Private { id } => {
            put("exchange", Kind::StringValue(READ.into()));
            put("id", Kind::StringValue(id.to_string()));
        }
        Follow::CallOutcome {
            id,
            reservation,
            tool_errors,
            task,
        } => {
            put("exchange", Kind::StringValue("tools/call".into()));
            put("id", Kind::StringValue(id.to_string()));
            if let Some(reservation) = reservation {
                // A string: Struct numbers are doubles, and ids use all 64 bits.
                put("reservation", Kind::StringValue(reservation.to_string()));
            }
            put("tool_errors", Kind::BoolValue(*tool_errors));
            // Whose the task the answer creates will be.
            put("task", Kind::BoolValue(*task));
            if *task {
                put_caller(&mut put, caller);
            }
        }
        Follow::Opening => {
            put("exchange", Kind::StringValue(INITIALIZE.into()));
            put_caller(&mut put, caller);
        }
    }
    let mut metadata = Struct::default();
    metadata.fields.insert(
        METADATA_KEY.to_owned(),
        ProtoValue {
            kind: Some(Kind::StructValue(note)),
        },
    );
    Some(metadata)
}

/// Put the caller a list is filtered for, or a task noted under, in the note.
fn put_caller(put: &mut impl FnMut(&str, Kind), caller: Caller) {
    for (key, value) in [
        ("grant", caller.grant),
        ("session", caller.session),
        ("agent", caller.agent),
    ] {
        if let Some(v) = value {
            put(key, Kind::StringValue(v));
        }
    }
    put("grant_verified", Kind::BoolValue(caller.grant_verified));
    if let Some(word) = caller.peer.word() {
        put("peer", Kind::StringValue(format!("{word:x}")));
    }
}

/// Read back what [`exchange_metadata`] wrote, as Envoy forwards it; with the bytes of its text
/// the exchange keeps (a caller's grant, session and agent come from its headers: tens of
/// kilobytes, each stream).
fn read_metadata(metadata: Option<&Metadata>) -> Option<(Follow, Caller, usize)> {
    let note = match &metadata?
        .filter_metadata
        .get(METADATA_NAMESPACE)?
        .fields
        .get(METADATA_KEY)?
        .kind
    {
        Some(Kind::StructValue(note)) => note,
        _ => return None,
    };
    let text = |key: &str| match note.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    };
    // The id twice: a list's filter answers under a copy of it.
    let kept = ["id", "id", "server", "grant", "session", "agent"]
        .iter()
        .filter_map(|key| match note.fields.get(*key)?.kind.as_ref()? {
            Kind::StringValue(s) => Some(s.len()),
            _ => None,
        })
        .sum();
    // An id that is there must read back as the Check wrote it, a string or an integer (any
    // other value's text would be charged for far less than it takes read); a list stream
    // may have none.
    let id: Option<Value> = match text("id") {
        Some(id) => Some(serde_json::from_str(&id).ok()?),
        None => None,
    };
    if let Some(id) = &id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return None;
        }
    }
    let flag = |key: &str| {
        let value = note.fields.get(key).and_then(|v| v.kind.as_ref());
        matches!(value, Some(Kind::BoolValue(true)))
    };
    let caller = || Caller {
        server: text("server"),
        grant: text("grant"),
        session: text("session"),
        agent: text("agent"),
        grant_verified: flag("grant_verified"),
        peer: (text("peer").and_then(|w| u128::from_str_radix(&w, 16).ok()))
            .map_or(Peer::UNKNOWN, Peer::from_word),
    };
    let exchange = text("exchange")?;
    let listed = Listed::of_method(&exchange);
    match exchange.as_str() {
        _ if listed.is_some() || exchange == STREAM => {
            let caller = caller();
            // A list's answer is to its request: with no id, a stream.
            let listed = listed.filter(|_| id.is_some());
            Some((Follow::List { id, listed }, caller, kept))
        }
        READ => {
            let caller = Caller {
                server: text("server"),
                ..Caller::default()
            };
            Some((Follow::Private { id: id? }, caller, kept))
        }
        "tools/call" => {
            // A reservation that is there must read back as written.
            let reservation = match text("reservation") {
                Some(r) => Some(r.parse().ok()?),
                None => None,
            };
            let follow = Follow::CallOutcome {
                id: id?,
                reservation,
                tool_errors: flag("tool_errors"),
                task: flag("task"),
            };
            Some((follow, caller(), kept))
        }
        INITIALIZE => Some((Follow::Opening, caller(), kept)),
        _ => None,
    }
}

type Visible = Box<dyn FnMut(Listed, &str, &ListedTool<'_>) -> Visibility + Send>;

/// The note's exchange for a stream that answers no request of its own (a `GET`).
const STREAM: &str = "list";
/// The note's exchange for a read whose answer is made the caller's own.
const READ: &str = "resources/read";
/// The note's exchange for an `initialize` whose answer may vouch for the caller's grant.
const INITIALIZE: &str = "initialize";

/// One exchange's answer, followed message by message.
pub struct Exchange {
    state: State,
    /// The answer's last message has been handled: the stream has nothing more to carry.
    finished: bool,
    /// The sidecar's budget ([`HeldBytes`], which also charges each stream what the gRPC
    /// layer keeps for it), here for what the exchange itself holds: a list's message or
    /// event not yet whole, or a call's answer read so far (up to 16 MiB each). An exchange
    /// that would go over stops reading: a list is refused, a call counts as run.
    budget: Arc<HeldBytes>,
    /// What this exchange holds of the budget: its answer's unfinished message and the text
    /// of the note it keeps.
    held: usize,
    /// The bytes of the note's text the exchange keeps.
    note: usize,
    /// Its MCP server's room ([`HeldBytes::room`]), once the Check's note has named it, and
    /// what the stream holds of it, each holding as the budget charges it: the gRPC layer's
    /// buffers for the stream's largest message each way (as long as it is open), and `held`.
    room: Option<Arc<Room>>,
    in_room: [usize; 3],
    largest_in: usize,
    largest_out: usize,
    /// The room (or the budget, for the note) was full: the stream is to end
    /// (`RESOURCE_EXHAUSTED`), which frees it all.
    out_of_room: bool,
    /// The `tools/list` answers read last, shared by the service's exchanges, so the same
    /// answer is not read again.
    known: Arc<KnownAnswers>,
}

impl Default for Exchange {
    /// An exchange with a budget and known answers of its own.
    fn default() -> Self {
        Exchange::new(HeldBytes::new(HeldBytes::LIMIT), Arc::default())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.budget.hold(&mut self.held, 0);
        if let Some(room) = self.room.take() {
            for held in &mut self.in_room {
                room.hold(held, 0);
            }
            self.budget.leave(room);
        }
    }
}

#[derive(Default)]
enum State {
    /// Nothing has arrived yet.
    #[default]
    New,
    /// No Check left a note: nothing can be said of this answer.
    Unknown,
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
                if engine.release(reservation) {
                    engine.stats().count_released(failure);
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

impl Exchange {
    /// An exchange holding its unfinished messages against `budget`, remembering the lists
    /// it reads among `known`.
    pub fn new(budget: Arc<HeldBytes>, known: Arc<KnownAnswers>) -> Self {
        Exchange {
            state: State::default(),
            finished: false,
            budget,
            held: 0,
            note: 0,
            room: None,
            in_room: [0; 3],
            largest_in: 0,
            largest_out: 0,
            out_of_room: false,
            known,
        }
    }

    /// Whether the exchange's MCP server has filled its room ([`HeldBytes::room`]): the stream
    /// should end with `RESOURCE_EXHAUSTED` (Envoy then fails the exchange closed), freeing
    /// what it holds.
    pub fn out_of_room(&self) -> bool {
        self.out_of_room
    }

    /// Charge the room what the stream holds now, as the budget does (so that what is large
    /// to one is large to the other); false, with the exchange ended, if the room is full.
    fn within_room(&mut self) -> bool {
        let Some(room) = &self.room else {
            return true;
        };
        let holdings = [
            STREAM_SHARE + stream_buffer(self.largest_in),
            stream_buffer(self.largest_out),
            self.held,
        ];
        // What shrinks is given back before what grows is taken (an event passed on moves
        // from the unfinished message to the answer's buffer).
        let mut within = true;
        for shrinking in [true, false] {
            for (held, now) in self.in_room.iter_mut().zip(holdings) {
                if (now < *held) == shrinking {
                    within &= room.hold(held, now);
                }
            }
        }
        if within {
            return true;
        }
        self.end();
        false
    }

    /// Give back all the exchange holds: its stream is to end.
    fn end(&mut self) {
        if let Some(room) = &self.room {
            for held in &mut self.in_room {
                room.hold(held, 0);
            }
        }
        self.budget.hold(&mut self.held, 0);
        self.out_of_room = true;
        self.finished = true;
    }

    /// Whether the stream has nothing more to do (the answer has ended, or a call's outcome is
    /// known): the server should end it then. Envoy does not end a stream in observability
    /// mode until its deferred close timeout (5 s), and every stream left open counts against
    /// the cluster's limit of open requests.
    pub fn finished(&self) -> bool {
        // A call's outcome is known as soon as its answer is read: a client that goes away
        // then never lets Envoy send the end of the body.
        let decided = matches!(&self.state, State::Call(call)
            if call.watcher.outcome() != Outcome::Pending);
        self.finished || decided
    }

    /// Answer one message of the stream (none in observability mode, or when the exchange's
    /// server has filled its room: [`Exchange::out_of_room`]).
    pub fn process(
        &mut self,
        engine: &Arc<Engine>,
        request: &ProcessingRequest,
    ) -> Option<ProcessingResponse> {
        if let State::New = self.state {
            let note = read_metadata(request.metadata_context.as_ref());
            if let Some((_, caller, kept)) = &note {
                self.room = Some(self.budget.room(caller.server.as_deref().unwrap_or("")));
                self.note = *kept;
                if !self.budget.hold(&mut self.held, self.note) {
                    self.end();
                    return None;
                }
            }
            self.state = match note {
                Some((Follow::List { id, listed }, caller, _)) => State::List {
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
                Some((Follow::Private { id }, caller, _)) => State::List {
                    id: Some(id),
                    listed: None,
                    private: true,
                    upstream_id: None,
                    caller: Arc::new(caller),
                    policy: engine.policy(),
                    filter: None,
                    counted: ListReport::default(),
                },
                Some((
                    Follow::CallOutcome {
                        id,
                        reservation,
                        tool_errors,
                        task,
                    },
                    caller,
                    _,
                )) => State::Call(CallAnswer {
                    watcher: CallWatcher::new(id),
                    reservation,
                    tool_errors,
                    released: false,
                    task_of: task.then_some(caller),
                }),
                Some((Follow::Opening, caller, _)) => State::Opening(caller),
                _ => State::Unknown,
            };
        }
        // A message past the room is not read.
        self.largest_in = self.largest_in.max(request.encoded_len());
        if !self.within_room() {
            return None;
        }
        let response = match request.request.as_ref()? {
            Request::ResponseHeaders(headers) => {
                self.finished |= headers.end_of_stream;
                self.response_headers(engine, headers)
            }
            Request::ResponseBody(body) => {
                self.finished |= body.end_of_stream;
                self.response_body(engine, body, &request.attributes)
            }
            Request::RequestHeaders(_) => self.request_headers(),
            Request::RequestBody(body) => self.request_body(engine, body),
            Request::RequestTrailers(_) => Response::RequestTrailers(TrailersResponse::default()),
            Request::ResponseTrailers(_) => Response::ResponseTrailers(TrailersResponse::default()),
        };
        if request.observability_mode {
            self.within_room();
            return None;
        }
        let response = ProcessingResponse {
            response: Some(response),
            ..Default::default()
        };
        self.largest_out = self.largest_out.max(response.encoded_len());
        self.within_room().then_some(response)
    }

    /// A list request's headers (the deployed configs do not send them: Envoy then drops the
    /// length itself): its body will change length.
    fn request_headers(&mut self) -> Response {
        let mut mutation = HeaderMutation::default();
        if let State::List { id: Some(_), .. } = self.state {
            mutation.remove_headers.push("content-length".into());
        }
        Response::RequestHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(mutation),
                ..Default::default()
            }),
        })
    }

    /// A list request's whole body (buffered): sent on under an id of toolgate's own, so
    /// that no other request of the client's can share the id the server answers.
    fn request_body(&mut self, engine: &Arc<Engine>, body: &HttpBody) -> Response {
        let mut body_mutation = None;
        if let State::List {
            id: Some(id),
            listed,
            upstream_id,
            caller,
            ..
        } = &mut self.state
        {
            // A task list's cursor is one toolgate sealed for this caller: opened again for
            // the server, or the request refused before it reaches the server.
            let server = caller.server.as_deref();
            let subject = caller.subject();
            let open = |sealed: &str| engine.open_task_cursor(server, &subject, sealed);
            let cursors = (*listed == Some(Listed::Tasks)).then_some(&open as CursorOpener<'_>);
            match ListRequest::rewrite(&body.body, id, cursors) {
                Ok(request) => {
                    *upstream_id = Some(request.upstream_id);
                    body_mutation = Some(BodyMutation {
                        mutation: Some(Mutation::Body(request.body)),
                    });
                }
                // A cursor not this caller's is the caller's error, and says nothing more.
                Err(why) if why == INVALID_CURSOR => {
                    let message = format!("Invalid params: {why}");
                    let refusal = list_refusal(id, INVALID_PARAMS, &message);
                    return Response::ImmediateResponse(refusal);
                }
                Err(why) => {
                    return Response::ImmediateResponse(list_refusal(id, INTERNAL_ERROR, &why))
                }
            }
        }
        Response::RequestBody(BodyResponse {
            response: Some(CommonResponse {
                body_mutation,
                ..Default::default()
            }),
        })
    }

    fn response_headers(&mut self, engine: &Arc<Engine>, headers: &HttpHeaders) -> Response {
        let content_type = header(headers.headers.as_ref(), "content-type").unwrap_or("");
        let mut mutation = HeaderMutation::default();
        match &mut self.state {
            State::New => unreachable!("set before the first message is handled"),
            State::Unknown => return Response::ImmediateResponse(no_decision()),
            State::List { .. } => {
                // What goes to the agent is the filter's event stream, as it is: the server's
                // length, encoding and media type (with any charset) go. (The deployed routes
                // skip this message and do the same themselves: [`LIST_ANSWER_TYPE`].)
                mutation.remove_headers.push("content-length".into());
                mutation.remove_headers.push("content-encoding".into());
                mutation
                    .set_headers
                    .push(set_header("content-type", LIST_ANSWER_TYPE));
            }
            State::Call(call) => {
                let status = header(headers.headers.as_ref(), ":status")
                    .and_then(|s| s.parse::<u16>().ok())
                    .unwrap_or(0);
                call.watcher.head(status, Some(content_type));
                call.settle(engine);
            }
            State::Opening(caller) => {
                let status = header(headers.headers.as_ref(), ":status");
                if status.is_some_and(|s| s.len() == 3 && s.starts_with('2')) {
                    if let Some(grant) = caller.grant.as_deref() {
                        engine.vouch_for(grant);
                    }
                }
            }
        }
        Response::ResponseHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(mutation),
                ..Default::default()
            }),
        })
    }

    fn response_body(
        &mut self,
        engine: &Arc<Engine>,
        body: &HttpBody,
        attributes: &HashMap<String, Struct>,
    ) -> Response {
        let mut body_mutation = None;
        match &mut self.state {
            // Filtering was asked for, but no Check said for whom: the answer cannot be let
            // through unread (its headers may have gone on: Envoy then resets the stream).
            State::Unknown => return Response::ImmediateResponse(no_decision()),
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
                // The headers may have come or not (the deployed routes skip them: one message
                // fewer, the route setting the media type and taking off any encoding itself).
                let filter = filter.get_or_insert_with(|| {
                    let read = (*listed, *private);
                    list_filter(engine, &self.known, id, read, upstream_id, caller, policy)
                });
                let mut out = filter.feed(&body.body, body.end_of_stream);
                if !self.budget.hold(&mut self.held, filter.held() + self.note) {
                    let why = "the proxy holds as many unfinished answers as it may";
                    out.extend(filter.give_up(why.into()));
                    self.budget.hold(&mut self.held, self.note);
                }
                count_lists(engine, &filter.report, counted, caller);
                body_mutation = Some(BodyMutation {
                    mutation: Some(Mutation::Body(out)),
                });
            }
            State::Call(call) => {
                let watcher = &mut call.watcher;
                // Without the headers (the deployed route skips them: one message fewer),
                // the status comes as an attribute of the first part of the body.
                if !watcher.headed() {
                    if let Some(status) = response_code(attributes) {
                        watcher.head(status, None);
                    }
                }
                watcher.feed(&body.body, body.end_of_stream);
                if !self.budget.hold(&mut self.held, watcher.held() + self.note) {
                    watcher.give_up();
                    self.budget.hold(&mut self.held, self.note);
                }
                call.settle(engine);
            }
            _ => {}
        }
        Response::ResponseBody(BodyResponse {
            response: Some(CommonResponse {
                body_mutation,
                ..Default::default()
            }),
        })
    }
}

/// Count what the filter did since it was last counted: each list it read, the tools it
/// took out, and a refusal. A list answered vouches for the caller's grant (where the
/// sidecar is told that servers check it: [`Engine::vouch_for`]).
fn count_lists(engine: &Engine, report: &ListReport, counted: &mut ListReport, caller: &Caller) {
    if report.lists > counted.lists && !caller.grant_verified {
        if let Some(grant) = caller.grant.as_deref() {
            engine.vouch_for(grant);
        }
    }
    let stats = engine.stats();
    for _ in counted.lists..report.lists {
        stats.count_list(0, false);
    }
    if report.refused.is_some() && counted.refused.is_none() {
        stats.count_list(0, true);
    }
    stats.count_list_removed(report.removed - counted.removed);
    counted.clone_from(report);
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
    Box::new(match private {
        true => filter.private(),
        false => filter.remembering(Arc::clone(known)),
    })
}

/// Whether `caller` may see each listed tool (resource, template, prompt), under the policy
/// of the Check that let the list request through.
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

/// The answer of an exchange that no Check followed, on a route that processes answers.
fn no_decision() -> ImmediateResponse {
    refusal(
        "the proxy has no toolgate decision for this exchange (ext_authz must run before \
         ext_proc, with its metadata forwarded)",
    )
}

/// The whole answer replaced by a JSON-RPC error (the request's id is not known here).
fn refusal(message: &str) -> ImmediateResponse {
    ImmediateResponse {
        status: Some(HttpStatus { code: 502 }),
        headers: Some(HeaderMutation {
            set_headers: vec![set_header("content-type", "application/json")],
            ..Default::default()
        }),
        body: error_message(&Value::Null, INTERNAL_ERROR, message),
        details: "toolgate_no_decision".into(),
        ..Default::default()
    }
}

/// A list's answer replaced before the request went on: an error event for `id`, in the
/// media type of every list's answer ([`LIST_ANSWER_TYPE`]), at status 200 (clients read
/// the body of an error status only when it is plain JSON).
fn list_refusal(id: &Value, code: i64, message: &str) -> ImmediateResponse {
    ImmediateResponse {
        status: Some(HttpStatus { code: 200 }),
        headers: Some(HeaderMutation {
            set_headers: vec![set_header("content-type", LIST_ANSWER_TYPE)],
            ..Default::default()
        }),
        body: message_event(&error_message(id, code, message)),
        details: "toolgate_list_refused".into(),
        ..Default::default()
    }
}

/// The answer's HTTP status, from the attribute `response.code` (the filter's
/// `response_attributes`), which Envoy sends with the first message of the answer.
fn response_code(attributes: &HashMap<String, Struct>) -> Option<u16> {
    let code = attributes
        .get("envoy.filters.http.ext_proc")?
        .fields
        .get("response.code")?;
    match code.kind {
        Some(Kind::NumberValue(n)) if (100.0..1000.0).contains(&n) => Some(n as u16),
        _ => None,
    }
}

/// A header set by ext_proc (its value travels in `raw_value`).
fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A header's value, from `value` or (as Envoy sends it to ext_proc) `raw_value`.
fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let h = headers?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))?;
    Some(header_value(h))
}

/// `h`'s value as text; one that is not UTF-8 reads as U+FFFD.
fn header_value(h: &HeaderValue) -> &str {
    if h.raw_value.is_empty() {
        &h.value
    } else {
        std::str::from_utf8(&h.raw_value).unwrap_or("\u{fffd}")
    }
}
