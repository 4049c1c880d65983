//! Envoy's external processing API (`envoy.service.ext_proc.v3.ExternalProcessor/Process`)
//! on MCP servers' answers: a `tools/list` answer is filtered for its caller, and a
//! `tools/call` that failed upstream gives its reservation back ([`crate::answer`], which
//! this service feeds the answer's messages as Envoy streams them).
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

pub use crate::answer::{Caller, LIST_ANSWER_TYPE};
use crate::answer::{Follower, ListTrace, Refusal, RequestBody, LIST_ANSWER_DROPS};
use crate::held::{stream_buffer, HeldBytes, Room, STREAM_SHARE};
use crate::spans::ListSpans;
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
use toolgate_core::engine::gate::Follow;
use toolgate_core::engine::listing::INTERNAL_ERROR;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::answer::error_message;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::Engine;

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

/// Read back what [`exchange_metadata`] wrote, as Envoy forwards it.
fn read_metadata(metadata: Option<&Metadata>) -> Option<(Follow, Caller)> {
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
    // An id that is there must read back as the Check wrote it, a string or an integer (any
    // other value's text would be charged for far less than it takes read, so no other is
    // read at all: an array of zeros takes 16 times its text); a list stream may have none.
    let id: Option<Value> = match text("id") {
        Some(id) if id.starts_with('"') || id.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
            Some(serde_json::from_str(&id).ok()?)
        }
        Some(_) => return None,
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
            Some((Follow::List { id, listed }, caller))
        }
        READ => {
            let caller = Caller {
                server: text("server"),
                ..Caller::default()
            };
            Some((Follow::Private { id: id? }, caller))
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
            Some((follow, caller()))
        }
        INITIALIZE => Some((Follow::Opening, caller())),
        _ => None,
    }
}

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
    /// layer keeps for it); the follower holds what the exchange itself keeps against it.
    budget: Arc<HeldBytes>,
    /// Its MCP server's room ([`HeldBytes::room`]), once the Check's note has named it, and
    /// what the stream holds of it, each holding as the budget charges it: the gRPC layer's
    /// buffers for the stream's largest message each way (as long as it is open), and what
    /// the follower holds.
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
    /// Where the lists it filters are traced, if they are, until its follower is made.
    spans: Option<ListSpans>,
}

impl Default for Exchange {
    /// An exchange with a budget and known answers of its own.
    fn default() -> Self {
        Exchange::new(HeldBytes::new(HeldBytes::LIMIT), Arc::default())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.state = State::Unknown;
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
    /// No Check left a note (or the exchange has ended): nothing can be said of this answer.
    Unknown,
    Following(Box<Follower>),
}

impl Exchange {
    /// An exchange holding its unfinished messages against `budget`, remembering the lists
    /// it reads among `known`.
    pub fn new(budget: Arc<HeldBytes>, known: Arc<KnownAnswers>) -> Self {
        Exchange {
            state: State::default(),
            finished: false,
            budget,
            room: None,
            in_room: [0; 3],
            largest_in: 0,
            largest_out: 0,
            out_of_room: false,
            known,
            spans: None,
        }
    }

    /// The lists the exchange filters are spans of `spans`.
    pub fn traced(mut self, spans: Option<ListSpans>) -> Self {
        self.spans = spans;
        self
    }

    /// Whether the exchange's MCP server has filled its room ([`HeldBytes::room`]): the stream
    /// should end with `RESOURCE_EXHAUSTED` (Envoy then fails the exchange closed), freeing
    /// what it holds.
    pub fn out_of_room(&self) -> bool {
        self.out_of_room
    }

    fn held(&self) -> usize {
        match &self.state {
            State::Following(follower) => follower.held(),
            _ => 0,
        }
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
            self.held(),
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
        // The follower gives back what it holds of the budget.
        self.state = State::Unknown;
        if let Some(room) = &self.room {
            for held in &mut self.in_room {
                room.hold(held, 0);
            }
        }
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
        let decided = matches!(&self.state, State::Following(f) if f.outcome_known());
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
            self.state = State::Unknown;
            if let Some((follow, caller)) = read_metadata(request.metadata_context.as_ref()) {
                self.room = Some(self.budget.room(caller.server.as_deref().unwrap_or("")));
                let (budget, known) = (Arc::clone(&self.budget), Arc::clone(&self.known));
                match Follower::new(engine, follow, caller, budget, known) {
                    Some(follower) => {
                        let spans = self.spans.take().map(|s| Box::new(s) as Box<dyn ListTrace>);
                        let follower = follower.traced(spans);
                        self.state = State::Following(Box::new(follower))
                    }
                    None => {
                        self.end();
                        return None;
                    }
                }
            }
        } else if self.out_of_room {
            return None;
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
        if matches!(&self.state, State::Following(f) if f.changes_request()) {
            mutation.remove_headers.push("content-length".into());
        }
        Response::RequestHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(mutation),
                ..Default::default()
            }),
        })
    }

    /// A list request's whole body (buffered): sent on under an id of toolgate's own.
    fn request_body(&mut self, engine: &Arc<Engine>, body: &HttpBody) -> Response {
        let step = match &mut self.state {
            State::Following(follower) => follower.request_body(engine, &body.body),
            _ => RequestBody::Unchanged,
        };
        let body_mutation = match step {
            RequestBody::Unchanged => None,
            RequestBody::Replaced(body) => Some(BodyMutation {
                mutation: Some(Mutation::Body(body)),
            }),
            RequestBody::Refused(refusal) => {
                return Response::ImmediateResponse(immediate(refusal));
            }
        };
        Response::RequestBody(BodyResponse {
            response: Some(CommonResponse {
                body_mutation,
                ..Default::default()
            }),
        })
    }

    fn response_headers(&mut self, engine: &Arc<Engine>, headers: &HttpHeaders) -> Response {
        let State::Following(follower) = &mut self.state else {
            return Response::ImmediateResponse(no_decision());
        };
        let content_type = header(headers.headers.as_ref(), "content-type").unwrap_or("");
        let status = header(headers.headers.as_ref(), ":status").and_then(|s| s.parse().ok());
        follower.response_head(engine, status, content_type);
        let mut mutation = HeaderMutation::default();
        if follower.rewrites_answer() {
            // What goes to the agent is the filter's event stream, as it is: the server's
            // length, encoding and media type (with any charset) go. (The deployed routes
            // skip this message and do the same themselves: [`LIST_ANSWER_TYPE`].)
            mutation.remove_headers = LIST_ANSWER_DROPS.map(str::to_owned).to_vec();
            mutation
                .set_headers
                .push(set_header("content-type", LIST_ANSWER_TYPE));
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
        // Filtering was asked for, but no Check said for whom: the answer cannot be let
        // through unread (its headers may have gone on: Envoy then resets the stream).
        let State::Following(follower) = &mut self.state else {
            return Response::ImmediateResponse(no_decision());
        };
        // The headers may have come or not (the deployed routes skip them: one message fewer,
        // the route setting the media type and taking off any encoding itself; the status then
        // comes as an attribute of the first part of the body).
        let status = || response_code(attributes);
        let replaced = follower.response_body(engine, &body.body, body.end_of_stream, status);
        Response::ResponseBody(BodyResponse {
            response: Some(CommonResponse {
                body_mutation: replaced.map(|out| BodyMutation {
                    mutation: Some(Mutation::Body(out)),
                }),
                ..Default::default()
            }),
        })
    }
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

/// A refusal, as ext_proc sends it in the server's place.
fn immediate(refusal: Refusal) -> ImmediateResponse {
    ImmediateResponse {
        status: Some(HttpStatus {
            code: refusal.status.into(),
        }),
        headers: Some(HeaderMutation {
            set_headers: vec![set_header("content-type", refusal.content_type)],
            ..Default::default()
        }),
        body: refusal.body,
        details: refusal.details.into(),
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
