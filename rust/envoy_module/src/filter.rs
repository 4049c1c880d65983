//! One MCP exchange through the filter: the request's headers held until its body is whole,
//! then the core's gate decides, as it does for Envoy's ext_authz (`toolgate_server::authz`):
//! the request goes on (with the headers the answer gains), or the module answers in the
//! server's place with the same status, headers and JSON-RPC body. The answer is then
//! followed as the sidecar's ext_proc follows it (`toolgate_server::answer`): a list filtered
//! for its caller, a failed call's reservation given back.

use crate::abi::*;
use crate::ask_sidecar::{self, Asked, Said};
use crate::config::Config;
use crate::deciders::Deciders;
use crate::request_headers::Headers;
use crate::traced::{DecisionSpan, ListSpans, Naming};
use serde_json::Value;
use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use toolgate_core::decision::Code;
use toolgate_core::engine::gate::{self, Follow, Gate, HttpCall, SpanOpener};
use toolgate_core::mcp::reply;
use toolgate_core::observing::stats::Api;
use toolgate_core::trace_ids;
use toolgate_core::Engine;
use toolgate_server::answer::{
    release, Caller, Follower, RequestBody, LIST_ANSWER_DROPS, LIST_ANSWER_TYPE,
};
use toolgate_server::authz::unreadable_caller;
use toolgate_server::ext_proc::EXCHANGE_HEADER;
use toolgate_server::spans::Named;
use toolgate_server::subject::{
    single_header, AuthzConfig, CallerFacts, ReadSubject, MCP_SESSION_HEADER,
};

/// The filter state keys the decision is left under, for the access log and the filters after
/// this one (`%FILTER_STATE(toolgate.code:PLAIN)%`): `reply::told`'s, in its order, under
/// `toolgate.`. Filter state, not dynamic metadata: Envoy keeps a string there as it is, where
/// its metadata is a protobuf struct built and merged per request and looked up per field
/// (bench/RESULTS.md: about 39,000 of Envoy's instructions a request with the access log
/// printing the decision).
pub const DECISION_STATE: [&str; 4] = [
    "toolgate.verdict",
    "toolgate.code",
    "toolgate.rule",
    "toolgate.revision",
];

/// A stream's state, on its worker thread.
#[derive(Default)]
pub struct Filter {
    /// Headers to add to the answer the client gets (the decision's).
    pub answer_headers: Vec<(Cow<'static, str>, String)>,
    /// The request's decision, once made: a stream is decided once, whichever hook sees it
    /// whole first (or over its limit).
    decided: Option<Next>,
    /// What the decision left to do with the answer.
    follower: Option<Follower>,
    /// The module failed on a list's answer: nothing more of it goes to the client (an
    /// answer it did not filter must not).
    withheld: bool,
    /// The sidecar is being asked about the request.
    asking: Option<Asking>,
    /// A decider is deciding the request; its decision comes back here.
    waiting: Option<Arc<Mutex<Option<HandedBack>>>>,
    /// The decision's span, where Envoy traces the request.
    span: Option<DecisionSpan>,
    /// The spans of the lists the follower filters, where Envoy traces the request.
    lists: Option<ListSpans>,
}

/// What the module does with the request.
#[derive(Clone, Copy)]
pub enum Next {
    Continue,
    /// Answered in the server's place.
    Answered,
    /// Held while a decider decides it ([`Filter::resume`]) or the sidecar is asked
    /// ([`Filter::sidecar_said`]), which let it go on or answer it.
    Held,
}

/// A request refused because the process holds all it may of unfinished answers: tried again
/// later, it may pass (fail closed, as the sidecar's ext_proc stream ends).
fn busy(why: &str) -> (u16, [(&'static str, String); 1], Vec<u8>) {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32603, "message": why},
    });
    let headers = [("content-type", "application/json".to_owned())];
    (503, headers, body.to_string().into_bytes())
}

/// The body is not the length its header declares: decided as the core decides a body cut
/// at ext_authz's `max_request_bytes`.
fn was_cut(headers: &Headers, body: &[u8]) -> bool {
    headers
        .get("content-length")
        .is_some_and(|declared| declared.parse::<usize>() != Ok(body.len()))
}

/// A callout to the sidecar under way: its id, the request's JSON-RPC id (for an answer if the
/// sidecar cannot say), and its answer so far.
struct Asking {
    callout: u64,
    id: Option<Value>,
    answer: Answer,
    /// The module's decision, for the access log where the sidecar's answer does not say its
    /// own (filter state is set once, so it waits for that answer).
    told: ask_sidecar::Told,
}

/// The sidecar's answer as it comes: gRPC's status is in its trailers, after the message.
#[derive(Default)]
struct Answer {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
}

/// A part of the sidecar's answer, as a hook hands it over.
pub enum AnswerPart<'a> {
    Headers(Vec<(String, Vec<u8>)>),
    Data(Vec<&'a [u8]>),
    Trailers(Vec<(String, Vec<u8>)>),
}

/// What deciding a request gave: the gate, the request's MCP server, and the caller whose
/// answer is followed (only where the answer is).
pub struct Judged {
    gate: Gate,
    server: Option<String>,
    caller: Option<Caller>,
    /// What the request asked, as its span is named (where it is traced).
    named: Option<Named>,
}

/// The request, its decision, and what it was decided on, as a decider hands them back.
type HandedBack = Result<(Judged, Headers, Vec<u8>), ()>;

/// Whether `gate` sends the request on with its answer to follow.
fn follows(gate: &Gate) -> bool {
    matches!(gate, Gate::Forward { follow, .. } if !matches!(follow, Follow::Nothing))
}

/// Decide a request with `config`, traced where `naming` is given.
fn judge(config: &Config, headers: &Headers, body: &[u8], naming: Option<Naming>) -> Judged {
    judge_with(
        &config.engine,
        &config.authz,
        config.server.as_deref(),
        headers,
        body,
        naming,
    )
}

/// Decide a request, as ext_authz's gate does: on `engine`, its caller read as `authz` says,
/// for the MCP server `named` (else the one its header names); traced where `naming` is given
/// (its span's ids on the decision's log line, what the request asked noted for its name).
fn judge_with(
    engine: &Engine,
    authz: &AuthzConfig,
    named: Option<&str>,
    headers: &Headers,
    body: &[u8],
    naming: Option<Naming>,
) -> Judged {
    let started = Instant::now();
    let max = authz.max_request_bytes;
    let (body, cut) = match body.len() > max {
        true => (&body[..max], true),
        false => (body, false),
    };
    let facts = headers;
    let server_header = match named {
        Some(_) => Ok(None),
        None => single_header(&facts, &authz.server_header),
    };
    let server = named.or(server_header.as_ref().ok().copied().flatten());
    let read = ReadSubject::read(&facts, authz);
    let subject = read.subject();
    let mcp_session = single_header(&facts, MCP_SESSION_HEADER);
    let refused = (server_header.as_ref().err())
        .or(mcp_session.as_ref().err())
        .map(|r| r.0.as_str());
    let gate = match read.refused().or(refused) {
        Some(why) => {
            let credential = read.grant.is_err();
            let ids = naming.as_ref().and_then(|n| n.open(None));
            trace_ids::within(ids, || {
                unreadable_caller(
                    engine,
                    Api::EnvoyModule,
                    why,
                    credential,
                    body,
                    server,
                    subject,
                )
            })
        }
        None => {
            let call = HttpCall {
                http_method: headers.get(":method").unwrap_or("POST"),
                body,
                truncated: cut || was_cut(headers, body),
                server,
                subject,
                mcp_method: headers.get("mcp-method"),
                mcp_name: headers.get("mcp-name"),
                resumes: !facts.header_values("last-event-id").is_empty(),
                mcp_session: mcp_session.ok().flatten(),
                api: Api::EnvoyModule,
            };
            match &naming {
                Some(naming) => gate::check_traced(engine, &call, naming),
                None => gate::check(engine, &call),
            }
        }
    };
    engine
        .stats()
        .record_duration(started.elapsed().as_nanos() as u64);
    let caller = follows(&gate).then(|| Caller::of(server, &subject));
    Judged {
        gate,
        server: server.map(str::to_owned),
        caller,
        named: naming.and_then(Naming::named),
    }
}

impl Filter {
    /// Decide the request whose headers and whole body Envoy holds, and answer it or let it
    /// go on; a body sent on changed is put in as body of kind `into`. Where the decision may
    /// wait on the network, it is made by a decider thread and the request held meanwhile
    /// ([`Filter::resume`] goes on from there).
    pub fn decide(&mut self, config: &Config, stream: Stream, body: Vec<u8>, into: u32) -> Next {
        if let Some(next) = self.decided {
            return next;
        }
        let headers = Headers::read(stream, &config.authz);
        self.span = DecisionSpan::start(stream);
        self.lists = self.span.as_ref().map(|_| ListSpans::default());
        let next = match &config.deciders {
            Some(deciders) => self.hand_off(config, deciders, stream, headers, body),
            None => {
                let naming = (self.span.as_ref()).map(|s| Naming::new(s.ids, headers.revision()));
                let judged = judge(config, &headers, &body, naming);
                self.finish(config, stream, judged, &headers, &body, into)
            }
        };
        self.decided = Some(next);
        next
    }

    /// Apply what deciding the request gave, and send it on as it goes on.
    fn finish(
        &mut self,
        config: &Config,
        stream: Stream,
        judged: Judged,
        headers: &Headers,
        body: &[u8],
        into: u32,
    ) -> Next {
        if let Some(span) = self.span.take() {
            span.finish(judged.named.as_ref(), judged.gate.decision());
        }
        match self.apply(config, stream, judged, headers, body) {
            Next::Continue => self.send_on(config, stream, body, into),
            other => other,
        }
    }

    /// Have a decider decide the request, holding it until the stream's worker is woken.
    fn hand_off(
        &mut self,
        config: &Config,
        deciders: &Deciders,
        stream: Stream,
        headers: Headers,
        body: Vec<u8>,
    ) -> Next {
        let slot: Arc<Mutex<Option<HandedBack>>> = Arc::default();
        let (engine, authz, server) = (
            config.engine.clone(),
            config.authz.clone(),
            config.server.clone(),
        );
        let scheduler = stream.scheduler();
        let back = Arc::clone(&slot);
        let traced = self.span.as_ref().map(|s| (s.ids, headers.revision()));
        let job = Box::new(move || {
            let judged = catch_unwind(AssertUnwindSafe(|| {
                let naming = traced.map(|(ids, revision)| Naming::new(ids, revision));
                judge_with(&engine, &authz, server.as_deref(), &headers, &body, naming)
            }));
            let handed = judged.map(|j| (j, headers, body)).map_err(|_| ());
            *back.lock().unwrap_or_else(|e| e.into_inner()) = Some(handed);
            scheduler.wake();
        });
        match deciders.run(job) {
            Ok(()) => {
                self.waiting = Some(slot);
                Next::Held
            }
            Err(_) => {
                if let Some(span) = self.span.take() {
                    span.failed("busy");
                }
                let why = "the proxy holds as many requests waiting for a decision as it may";
                let (status, headers, body) = busy(why);
                stream.send_response(status, &headers, &body, "toolgate_busy");
                Next::Answered
            }
        }
    }

    /// The stream's worker woken by its decider: the decision applied, and the request let go
    /// on or answered. True when the request is to go on.
    pub fn resume(&mut self, config: &Config, stream: Stream) -> bool {
        let Some(slot) = self.waiting.take() else {
            return false;
        };
        let handed = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let next = match handed {
            Some(Ok((judged, headers, body))) => {
                // The body waited in Envoy's buffer.
                self.finish(
                    config,
                    stream,
                    judged,
                    &headers,
                    &body,
                    BUFFERED_REQUEST_BODY,
                )
            }
            _ => {
                if let Some(span) = self.span.take() {
                    span.failed("failed");
                }
                log(
                    LOG_ERROR,
                    "toolgate: the module failed deciding a request; refused",
                );
                let (status, headers, body) = busy("toolgate could not decide this request");
                stream.send_response(status, &headers, &body, "toolgate_failed");
                Next::Answered
            }
        };
        self.decided = Some(next);
        matches!(next, Next::Continue)
    }

    /// The request as it goes on: a list request under an id of toolgate's own (its length
    /// then that of its new body), or refused before it reaches the server.
    fn send_on(&mut self, config: &Config, stream: Stream, body: &[u8], into: u32) -> Next {
        let Some(follower) = self.follower.as_mut() else {
            return Next::Continue;
        };
        if follower.rewrites_answer() {
            // The filter reads plain bytes: the server is offered no encoding.
            stream.remove_header(REQUEST_HEADER, "accept-encoding");
        }
        match follower.request_body(&config.engine, body) {
            RequestBody::Unchanged => Next::Continue,
            RequestBody::Replaced(body) => {
                let drained = [BUFFERED_REQUEST_BODY, RECEIVED_REQUEST_BODY];
                stream.replace_body(&drained, into, &body);
                if stream.header(REQUEST_HEADER, "content-length").is_some() {
                    stream.set_header(REQUEST_HEADER, "content-length", &body.len().to_string());
                }
                Next::Continue
            }
            RequestBody::Refused(refusal) => {
                let headers = [("content-type", refusal.content_type.to_owned())];
                stream.send_response(refusal.status, &headers, &refusal.body, refusal.details);
                Next::Answered
            }
        }
    }

    /// The answer's headers: the decision's set in place of any the server sent (as
    /// ext_authz's are: the decision is toolgate's), and the answer's status and media type
    /// for its follower; a list's answer becomes the filter's event stream.
    pub fn response_headers(&mut self, config: &Config, stream: Stream) {
        for (key, value) in self.answer_headers.drain(..) {
            stream.set_header(RESPONSE_HEADER, &key, &value);
        }
        let Some(follower) = self.follower.as_mut() else {
            return;
        };
        let status = (stream.header(RESPONSE_HEADER, ":status")).and_then(|s| s.parse().ok());
        let content_type = (stream.header(RESPONSE_HEADER, "content-type")).unwrap_or_default();
        follower.response_head(&config.engine, status, &content_type);
        give_back(config, follower);
        if follower.rewrites_answer() {
            for name in LIST_ANSWER_DROPS {
                stream.remove_header(RESPONSE_HEADER, name);
            }
            stream.set_header(RESPONSE_HEADER, "content-type", LIST_ANSWER_TYPE);
        }
    }

    /// A chunk of the answer's body (or, `None`, its end at trailers): passed on as its
    /// follower says, a list's as the filter writes it.
    pub fn response_body(
        &mut self,
        config: &Config,
        stream: Stream,
        chunk: Option<Vec<u8>>,
        end: bool,
    ) {
        if self.withheld {
            stream.replace_body(&[RECEIVED_RESPONSE_BODY], RECEIVED_RESPONSE_BODY, &[]);
            return;
        }
        let Some(follower) = self.follower.as_mut() else {
            return;
        };
        let into = match chunk {
            Some(_) => RECEIVED_RESPONSE_BODY,
            None => BUFFERED_RESPONSE_BODY,
        };
        let part = chunk.unwrap_or_default();
        let out = follower.response_body(&config.engine, &part, end, || None);
        give_back(config, follower);
        if let Some(lists) = &self.lists {
            lists.make(stream);
        }
        if let Some(out) = out {
            let drained: &[u32] = match into {
                RECEIVED_RESPONSE_BODY => &[RECEIVED_RESPONSE_BODY],
                _ => &[],
            };
            stream.replace_body(drained, into, &out);
        }
    }

    /// Whether the answer's body must be read: it is followed.
    pub fn follows(&self) -> bool {
        self.follower.is_some()
    }

    /// The module failed on the answer: a list's goes no further (fail closed); any other
    /// goes on as the server sent it (its request was decided before it went on).
    pub fn withhold(&mut self, stream: Stream) {
        if self
            .follower
            .as_ref()
            .is_some_and(Follower::rewrites_answer)
        {
            self.withheld = true;
            stream.replace_body(&[RECEIVED_RESPONSE_BODY], RECEIVED_RESPONSE_BODY, &[]);
        }
    }

    /// The stream's decision, once made.
    pub fn decided(&self) -> Option<Next> {
        self.decided
    }

    /// Answer the request or let it go on, as `judged` says.
    fn apply(
        &mut self,
        config: &Config,
        stream: Stream,
        judged: Judged,
        headers: &Headers,
        body: &[u8],
    ) -> Next {
        let Judged {
            gate,
            server,
            caller,
            ..
        } = judged;
        // What was decided, for the access log (as ext_authz leaves it in its metadata); for a
        // call the sidecar is asked about, what it decides, once it answers.
        let asks = match &gate {
            Gate::Answer {
                decision: Some(d), ..
            } if d.code == Code::ApprovalRequired => config.sidecar.as_ref(),
            _ => None,
        };
        if let (Some(d), None) = (gate.decision(), asks) {
            leave_decision(stream, &reply::told(d).map(|(_, value)| value));
        }
        // The module follows answers itself, so no route is picked on the exchange header:
        // the server gets none (a client's is taken out), as behind ext_authz with ext_proc,
        // whose route removes it.
        if headers.has(EXCHANGE_HEADER) {
            stream.remove_header(REQUEST_HEADER, EXCHANGE_HEADER);
        }
        let server = server.as_deref();
        match gate {
            Gate::Forward {
                headers: answer_headers,
                follow,
                ..
            } => {
                self.answer_headers = (answer_headers.into_iter())
                    .map(|(k, v)| (k.into(), v))
                    .collect();
                if matches!(follow, Follow::Nothing) {
                    return Next::Continue;
                }
                let reserved = match follow {
                    Follow::CallOutcome { reservation, .. } => reservation,
                    _ => None,
                };
                let (budget, known) = (config.budget.clone(), config.known.clone());
                // Made by `judge` wherever the answer is followed.
                let caller = caller.unwrap_or_default();
                match Follower::new(&config.engine, follow, caller, budget, known) {
                    // Held in its server's room too, shared with the server's other
                    // exchanges in this Envoy: one server whose answers mean harm fills its
                    // own room, not the process's budget.
                    Some(follower) => {
                        let noter = self.lists.as_ref().map(ListSpans::noter);
                        let follower = follower.in_room(server.unwrap_or("")).traced(noter);
                        // Where a give-back may wait on Redis, the deciders make it.
                        self.follower = Some(match config.deciders {
                            Some(_) => follower.releasing_later(),
                            None => follower,
                        });
                    }
                    None => {
                        // The call does not run: its reservation is given back.
                        if let Some(reservation) = reserved {
                            config.engine.release(reservation);
                        }
                        let why = "the proxy holds as many unfinished answers as it may";
                        let (status, headers, body) = busy(why);
                        stream.send_response(status, &headers, &body, "toolgate_busy");
                        return Next::Answered;
                    }
                }
                Next::Continue
            }
            Gate::Answer { reply, decision } => {
                if let (Some(sidecar), Some(d)) = (asks, &decision) {
                    let told = reply::told(d).map(|(_, value)| value.to_owned());
                    let source = stream.source_address();
                    let asked = Asked {
                        headers: &headers.pairs().collect::<Vec<_>>(),
                        body,
                        server,
                        source: source.as_deref(),
                        verified: (headers.verified.as_ref())
                            .map(|p| (config.authz.jwt_payload_key.as_str(), p)),
                    };
                    let check = ask_sidecar::check_request(&asked);
                    let id = reply_id(&reply.body);
                    return match stream.start_stream(
                        &sidecar.cluster,
                        &sidecar.headers(),
                        &check,
                        sidecar.timeout_ms,
                    ) {
                        Ok(callout) => {
                            self.asking = Some(Asking {
                                callout,
                                id,
                                answer: Answer::default(),
                                told,
                            });
                            Next::Held
                        }
                        Err(refused) => {
                            let why = format!("Envoy did not start the callout ({refused})");
                            self.cannot_ask(stream, id, &told, &why)
                        }
                    };
                }
                stream.send_response(reply.status, &reply.headers, &reply.body, "toolgate");
                Next::Answered
            }
        }
    }

    /// The sidecar's answer so far, on callout `callout`: its headers (or trailers), a chunk
    /// of its body. An answer longer than a `CheckResponse` may be ends the callout.
    pub fn sidecar_sent(&mut self, stream: Stream, callout: u64, part: AnswerPart<'_>) {
        let Some(asking) = self.asking.as_mut().filter(|a| a.callout == callout) else {
            return;
        };
        let answer = &mut asking.answer;
        match part {
            AnswerPart::Headers(headers) => answer.headers = headers,
            AnswerPart::Trailers(trailers) => answer.trailers = trailers,
            AnswerPart::Data(chunks) => {
                let more: usize = chunks.iter().map(|c| c.len()).sum();
                if answer.body.len() + more > ask_sidecar::MAX_ANSWER_BYTES {
                    stream.reset_stream(callout);
                    return self.sidecar_done(stream, callout, false);
                }
                chunks.iter().for_each(|c| answer.body.extend_from_slice(c));
            }
        }
    }

    /// Callout `callout` has ended (`complete`: its answer came whole): the held request goes
    /// on or is answered as the sidecar said, or is refused if it said nothing that can be
    /// read.
    pub fn sidecar_done(&mut self, stream: Stream, callout: u64, complete: bool) {
        let Some(Asking {
            id, answer, told, ..
        }) = self.asking.take_if(|a| a.callout == callout)
        else {
            return;
        };
        let said = match complete {
            true => ask_sidecar::read_answer(&answer.headers, &answer.body, &answer.trailers),
            false => Err("the callout ended without an answer (reset, or over its time)".into()),
        };
        let said = said.map(|(said, sidecar_told)| {
            leave_decision(stream, sidecar_told.as_ref().unwrap_or(&told));
            said
        });
        self.decided = Some(match said {
            Ok(Said::Forward { request, answer }) => {
                // The exchange header picks ext_authz's routes; it has no use here.
                let routing = |k: &str| k.eq_ignore_ascii_case(EXCHANGE_HEADER);
                for (key, value) in request.iter().filter(|(k, _)| !routing(k)) {
                    stream.set_header(REQUEST_HEADER, key, value);
                }
                self.answer_headers = answer.into_iter().map(|(k, v)| (k.into(), v)).collect();
                stream.continue_decoding();
                Next::Continue
            }
            Ok(Said::Answer {
                status,
                headers,
                body,
            }) => {
                let headers: Vec<(&str, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                stream.send_response(status, &headers, &body, "toolgate_sidecar");
                Next::Answered
            }
            Err(why) => self.cannot_ask(stream, id, &told, &why),
        });
    }

    /// The sidecar cannot be asked: the call is refused, 503 (fail closed), and logged as the
    /// module decided it (`told`).
    fn cannot_ask(
        &mut self,
        stream: Stream,
        id: Option<Value>,
        told: &ask_sidecar::Told,
        why: &str,
    ) -> Next {
        leave_decision(stream, told);
        log(
            LOG_WARN,
            &format!("toolgate: the sidecar was not asked about a call: {why}"),
        );
        let (status, body) = ask_sidecar::unavailable(id);
        let headers = [("content-type", "application/json".to_owned())];
        stream.send_response(status, &headers, &body, "toolgate_sidecar_unavailable");
        Next::Answered
    }
}

/// Leave a decision's `reply::told` values in the stream's filter state, for the access log.
fn leave_decision<V: AsRef<str>>(stream: Stream, told: &[V; 4]) {
    for (key, value) in DECISION_STATE.iter().zip(told) {
        stream.set_filter_state(key, value.as_ref());
    }
}

/// A failed call's reservation, once its follower knows, given back by a decider (a round
/// trip to Redis, which Envoy's worker must not wait on). With the queue full it is not given
/// back: the call stays counted, as if it had run, which errs on the limit's side.
fn give_back(config: &Config, follower: &mut Follower) {
    let (Some(deciders), Some((reservation, failure))) =
        (&config.deciders, follower.take_release())
    else {
        return;
    };
    let engine = config.engine.clone();
    let job = Box::new(move || release(&engine, reservation, failure));
    let _ = deciders.run(job);
}

/// The JSON-RPC id of an answer the core wrote.
fn reply_id(body: &[u8]) -> Option<Value> {
    let answer = serde_json::from_slice::<Value>(body).ok()?;
    answer.get("id").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_is_left_under_toolgate_and_the_names_a_gateway_is_told() {
        let names = DECISION_STATE.map(|key| key.strip_prefix("toolgate."));
        assert_eq!(names, reply::TOLD.map(Some));
    }
}
