//! Deciding one HTTP request of MCP Streamable HTTP traffic, for a proxy's authorization
//! hook (Envoy ext_authz): forward it, or answer it in the server's place.
//!
//! Fail closed: a body that cannot be read as exactly one JSON-RPC message, a body the proxy
//! cut, and `Mcp-Method`/`Mcp-Name` headers that disagree with the body are all refused;
//! nothing is forwarded without having been read.

use super::condition::Subject;
use super::{Engine, Request, Undecidable};
use crate::decision::{Code, Decision, Verdict};
use crate::kind::Kind;
use crate::kind::Listed;
use crate::mcp::reply::{self, Reply};
use crate::mcp::request::{parse_message, McpRequest, Parsed, Refusal, INVALID_REQUEST};
use crate::policy::Release;
use crate::trace_ids::{self, TraceIds};
// The gate answers for a proxy's authorization hook: Envoy's ext_authz.
use crate::observing::stats::Api;
use serde_json::Value;
use std::ops::ControlFlow::{self, Break, Continue};

/// One HTTP request as the proxy saw it.
#[derive(Debug, Clone, Copy)]
pub struct HttpCall<'a> {
    /// The HTTP method: only POST carries JSON-RPC messages.
    pub http_method: &'a str,
    pub body: &'a [u8],
    /// The proxy sent only part of the body (it was over the proxy's size limit).
    pub truncated: bool,
    pub server: Option<&'a str>,
    pub subject: Subject<'a>,
    /// The `Mcp-Method` and `Mcp-Name` headers, when sent.
    pub mcp_method: Option<&'a str>,
    pub mcp_name: Option<&'a str>,
    /// The request carries `Last-Event-ID`: it asks the server to replay a stream's events.
    pub resumes: bool,
    /// The `Mcp-Session-Id` header (2025 revisions), sent once: the session is reached by
    /// the caller that holds it only ([`crate::owners::sessions`]).
    pub mcp_session: Option<&'a str>,
    /// Which API asked (Envoy's ext_authz, or toolgate's module in Envoy), for the metrics.
    pub api: Api,
}

/// What the proxy must do.
#[derive(Debug)]
pub enum Gate {
    /// Send the request on, adding `headers` to the response the client gets. `decision` is
    /// `None` when there was nothing to decide (the protocol's plumbing, a list).
    Forward {
        headers: Vec<(&'static str, String)>,
        decision: Option<Decision>,
        follow: Follow,
    },
    /// Do not forward: send `reply` to the client instead.
    Answer {
        reply: Reply,
        decision: Option<Decision>,
    },
}

impl Gate {
    /// What was decided, if anything was.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Gate::Forward { decision, .. } | Gate::Answer { decision, .. } => decision.as_ref(),
        }
    }
}

/// Opens the span a decision is traced under, once its request is read: the protocol
/// adapter's, which knows the transport's own trace context and exports the span.
pub trait SpanOpener {
    /// `read`: the request, when it was read as one message. The ids returned are written
    /// on the decision's log line.
    fn open(&self, read: Option<&Parsed>) -> Option<TraceIds>;
}

/// Decide one request.
pub fn check(engine: &Engine, call: &HttpCall<'_>) -> Gate {
    decide(engine, call, None)
}

/// [`check`], the decision traced under the span `spans` opens. The body is read first, so
/// that the span's parent may be the trace context the message carries.
pub fn check_traced(engine: &Engine, call: &HttpCall<'_>, spans: &dyn SpanOpener) -> Gate {
    let parsed = parse_message(call.body);
    let ids = spans.open(parsed.as_ref().ok());
    trace_ids::within(ids, || decide(engine, call, Some(parsed)))
}

/// Decide one request, whose body was read into `parsed` if it is given.
fn decide(engine: &Engine, call: &HttpCall<'_>, parsed: Option<Result<Parsed, Refusal>>) -> Gate {
    let request = match read(engine, call, parsed) {
        Continue(request) => request,
        Break(gate) => return gate,
    };
    let task = matches!(request, McpRequest::ToolCall { task: true, .. });
    let (id, method, kind, name, args, confirm) = match &request {
        McpRequest::ToolCall {
            id,
            name,
            arguments,
            confirm,
            ..
        } => (
            id,
            TOOLS_CALL,
            Kind::Tool,
            Some(name.as_str()),
            arguments.as_ref(),
            Some(confirm),
        ),
        McpRequest::Named {
            id,
            method,
            kind,
            name,
            args,
        } => (
            id,
            method.as_str(),
            *kind,
            Some(name.as_str()),
            args.as_ref(),
            None,
        ),
        McpRequest::Listen { id, uris } => {
            let (d, uri) = decide_reads(engine, call.api, uris, call.server, call.subject);
            return match d.verdict {
                Verdict::Allow => Gate::Forward {
                    headers: reply::allowed_headers(&d),
                    decision: Some(d),
                    follow: Follow::Nothing,
                },
                _ if d.code == Code::Hidden => Gate::Answer {
                    reply: reply::unknown(id, Kind::Resource, uri),
                    decision: Some(d),
                },
                _ => Gate::Answer {
                    reply: reply::denied_request(id, &d),
                    decision: Some(d),
                },
            };
        }
        McpRequest::Other { id, method } => (id, method.as_str(), Kind::Method, None, None, None),
        McpRequest::Response { id } => (id, "", Kind::Method, None, None, None),
    };
    if let Some(refusal) = header_mismatch(call, id, method, name) {
        return refuse(engine, call, &refusal, 400);
    }
    let Some(name) = name else {
        // A list's answer is filtered; a GET's body, if any, is not what its server answers:
        // it opens a stream, where every answer that lists something is filtered.
        return Gate::Forward {
            headers: Vec::new(),
            decision: None,
            follow: unnamed_follow(engine, call, id, method),
        };
    };
    let decision = engine.decide_via::<&Value>(
        call.api,
        &Request {
            kind,
            name,
            server: call.server,
            subject: call.subject,
            args,
            dry_run: false,
            hits: None,
            confirm,
        },
    );
    let (decision, kind, name) = also_by_method(
        engine,
        call.api,
        (decision, kind, name),
        method,
        args,
        call.server,
        call.subject,
    );
    let asked = Asked {
        id,
        method,
        kind,
        name,
        task,
    };
    answer(call, decision, &asked)
}

/// Read: the session, the request's shape and its one JSON-RPC message, and the task it is
/// related to. `Break`: what the proxy does instead of deciding (refuse the request, or
/// forward one that has no message to read).
fn read(
    engine: &Engine,
    call: &HttpCall<'_>,
    parsed: Option<Result<Parsed, Refusal>>,
) -> ControlFlow<Gate, McpRequest> {
    // Another caller's session is answered as one the server does not know, whatever the
    // request: a POST, the GET of its stream or its replay, the DELETE that ends it.
    if let Some(session) = call.mcp_session {
        let request = Undecidable {
            server: call.server,
            subject: call.subject,
            kind: Kind::Method,
            ..Undecidable::new("")
        };
        if let Some(d) = engine.screen_session(call.api, session, &request) {
            return Break(Gate::Answer {
                reply: reply::session_refused(&d),
                decision: Some(d),
            });
        }
    }
    let get = call.http_method.eq_ignore_ascii_case("GET");
    // Servers replay a stream on GET only: a replay on any other request would come back on
    // a route whose answer is not filtered.
    if call.resumes && !get {
        let refusal = Refusal {
            code: INVALID_REQUEST,
            message: "Last-Event-ID resumes a stream with GET only".into(),
            id: None,
            ambiguity: None,
            tool: None,
        };
        return Break(refuse(engine, call, &refusal, 400));
    }
    // GET opens the server's event stream and DELETE ends a session: no message to read.
    // The GET stream carries the server's own messages, and, resumed, replays earlier
    // answers: each one that lists something is filtered.
    if call.body.is_empty() && !call.http_method.eq_ignore_ascii_case("POST") {
        let follow = if get {
            Follow::List {
                id: None,
                listed: None,
            }
        } else {
            Follow::Nothing
        };
        return Break(Gate::Forward {
            headers: Vec::new(),
            decision: None,
            follow,
        });
    }
    if call.truncated {
        let refusal = Refusal {
            code: INVALID_REQUEST,
            message: "the proxy did not send the whole request body (it is over the proxy's \
                      size limit), so the request cannot be read"
                .into(),
            id: None,
            ambiguity: None,
            tool: None,
        };
        return Break(refuse(engine, call, &refusal, 413));
    }
    let (request, related_task) = match parsed.unwrap_or_else(|| parse_message(call.body)) {
        Ok(m) => (m.request, m.related_task),
        Err(refusal) => return Break(refuse(engine, call, &refusal, 400)),
    };
    // A request related to a task reaches it only for the task's creator.
    if let Some(task) = related_task {
        let request_id = request.id();
        let refused = Undecidable {
            server: call.server,
            subject: call.subject,
            kind: Kind::Method,
            ..Undecidable::new("")
        };
        if let Some(d) = engine.screen_related(call.api, &task, &refused) {
            return Break(Gate::Answer {
                reply: reply::unknown(&request_id, Kind::Method, crate::owners::tasks::METHODS[0]),
                decision: Some(d),
            });
        }
    }
    Continue(request)
}

/// What follows a request that names nothing to decide (a list, the protocol's plumbing).
fn unnamed_follow(
    engine: &Engine,
    call: &HttpCall<'_>,
    id: &Option<Value>,
    method: &str,
) -> Follow {
    let get = call.http_method.eq_ignore_ascii_case("GET");
    match Listed::of_method(method) {
        _ if get => Follow::List {
            id: None,
            listed: None,
        },
        // A list without an id is a notification, which no server should answer; if one
        // does, every answer on the stream is filtered.
        Some(listed) => Follow::List {
            id: id.clone(),
            listed: id.as_ref().map(|_| listed),
        },
        None if method == INITIALIZE && engine.may_vouch_for(&call.subject) => Follow::Opening,
        None => Follow::Nothing,
    }
}

/// What a decided request asked for: its id, its method, and what it names.
struct Asked<'a> {
    id: &'a Option<Value>,
    method: &'a str,
    kind: Kind,
    name: &'a str,
    /// A tool's call run as a task (its id is noted as the caller's).
    task: bool,
}

/// The proxy's part once a request is decided: forward an allowed one, with what to do
/// with its answer; answer any other in the server's place.
fn answer(call: &HttpCall<'_>, decision: Decision, asked: &Asked<'_>) -> Gate {
    let (id, method, kind, name, task) =
        (asked.id, asked.method, asked.kind, asked.name, asked.task);
    let tool = kind == Kind::Tool;
    match decision.verdict {
        Verdict::Allow => {
            let release = match tool {
                true => decision.policy().releases_on_failure(call.server, name),
                // Only a tool's call has an outcome to read.
                false => Release::Never,
            };
            let reservation = decision.reservation.filter(|_| release != Release::Never);
            let follow = match id {
                // A call that may give its limits back, or whose task is to be noted.
                Some(id) if reservation.is_some() || (tool && task) => Follow::CallOutcome {
                    id: id.clone(),
                    reservation,
                    tool_errors: release == Release::ToolError,
                    task,
                },
                // A read its caller may be let through where another would not: its answer
                // must not be cached for others.
                Some(id) if method == READ && per_caller(&decision, call.server, name) => {
                    Follow::Private { id: id.clone() }
                }
                // The caller is shown the tasks it created.
                Some(id) if method == Listed::Tasks.method() => Follow::List {
                    id: Some(id.clone()),
                    listed: Some(Listed::Tasks),
                },
                _ => Follow::Nothing,
            };
            Gate::Forward {
                headers: reply::allowed_headers(&decision),
                decision: Some(decision),
                follow,
            }
        }
        // The user is asked in their client: the question is the call's result.
        _ if decision.code == Code::ConfirmationRequired && decision.confirmation.is_some() => {
            Gate::Answer {
                reply: reply::input_required(id, &decision),
                decision: Some(decision),
            }
        }
        // Reported as the protocol reports a tool (resource, prompt) that does not exist.
        _ if decision.code == Code::Hidden => Gate::Answer {
            reply: reply::unknown(id, kind, name),
            decision: Some(decision),
        },
        _ if tool => Gate::Answer {
            reply: reply::denied(id, &decision),
            decision: Some(decision),
        },
        _ => Gate::Answer {
            reply: reply::denied_request(id, &decision),
            decision: Some(decision),
        },
    }
}

/// Methods decided by what they name and, where a `methods` rule matches the method too, by
/// that rule as well: agentgateway, which hands over no params for them, decides them by it
/// alone, so a rule written for it holds behind every proxy.
pub const ALSO_BY_METHOD: [&str; 2] = ["resources/subscribe", "completion/complete"];

/// `named`, the decision of a request of `method` on what it names (`kind`, `name`); for a
/// method of [`ALSO_BY_METHOD`] that it allowed and a `methods` rule matches, the decision
/// by that rule if it does not allow (what the first reserved is then given back). With
/// what the deciding decision is on.
#[allow(clippy::too_many_arguments)]
pub fn also_by_method<'n>(
    engine: &Engine,
    api: Api,
    named: (Decision, Kind, &'n str),
    method: &'n str,
    args: Option<&Value>,
    server: Option<&str>,
    subject: super::condition::Subject<'_>,
) -> (Decision, Kind, &'n str) {
    let (d, ..) = &named;
    let by_method = d.verdict == Verdict::Allow
        && ALSO_BY_METHOD.contains(&method)
        && d.policy()
            .section(server)
            .rule(Kind::Method, method)
            .is_some();
    if !by_method {
        return named;
    }
    let request = Request {
        kind: Kind::Method,
        name: method,
        server,
        subject,
        args,
        dry_run: false,
        hits: None,
        confirm: None,
    };
    let d = engine.decide_via(api, &request);
    if d.verdict == Verdict::Allow {
        return named;
    }
    if let Some(reservation) = named.0.reservation {
        engine.release(reservation);
    }
    (d, Kind::Method, method)
}

/// Decide a request that reads several resources (a `subscriptions/listen`): each is
/// decided as a read of it; the first one not allowed decides the request, and what the
/// reads before it reserved is given back. Allowed, the last read's decision. With the URI
/// the decision is on.
pub fn decide_reads<'u>(
    engine: &Engine,
    api: Api,
    uris: &'u [String],
    server: Option<&str>,
    subject: super::condition::Subject<'_>,
) -> (Decision, &'u str) {
    let mut reserved = Vec::new();
    let mut last = None;
    for uri in uris {
        let d = engine.decide_via::<&Value>(
            api,
            &Request {
                kind: Kind::Resource,
                name: uri,
                server,
                subject,
                args: None,
                dry_run: false,
                hits: None,
                confirm: None,
            },
        );
        if d.verdict != Verdict::Allow {
            for r in reserved {
                engine.release(r);
            }
            return (d, uri);
        }
        reserved.extend(d.reservation);
        last = Some((d, uri.as_str()));
    }
    last.expect("a listen that names no resource passes undecided")
}

/// What a proxy that also sees the server's answer should do with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Follow {
    Nothing,
    /// A list (`tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`),
    /// or a stream of the server's (`GET`): filter the answer for this caller
    /// ([`super::listing`]). `id`: the request's, whose answer must list what `listed`
    /// says; `None` for a stream that answers no request of its own, where every answer
    /// that lists something is filtered.
    List {
        id: Option<Value>,
        listed: Option<Listed>,
    },
    /// An allowed `resources/read` whose rule treats callers apart: the answer, should it
    /// say it may be cached for everyone (`cacheScope: "public"`), is made the caller's own
    /// (`"private"`), so that no shared cache hands it to a caller the rule would stop, or
    /// who would have been counted or marked.
    Private {
        id: Value,
    },
    /// An allowed `tools/call`. Holding `reservation`: give it back if the answer says the
    /// call failed ([`crate::mcp::outcome`]): by an HTTP or JSON-RPC error, or, with
    /// `tool_errors`, by a result with `isError` too (the rule's `release_on_failure`).
    /// Asking for a `task`: note the task its answer creates as the caller's
    /// ([`crate::owners::tasks`]).
    CallOutcome {
        id: Value,
        reservation: Option<u64>,
        tool_errors: bool,
        task: bool,
    },
    /// An `initialize` of a caller whose grant a server's answer may vouch for
    /// ([`crate::owners::vouched`]): the answer's status says whether the server accepted it.
    Opening,
}

const TOOLS_CALL: &str = "tools/call";
const INITIALIZE: &str = "initialize";
const READ: &str = "resources/read";

/// Whether the rule that allowed `name` (a resource of `server`) treats callers apart.
fn per_caller(d: &Decision, server: Option<&str>, name: &str) -> bool {
    let policy = d.policy();
    let section = policy.section(server);
    section
        .rule(Kind::Resource, name)
        .is_some_and(|r| r.per_caller)
}

fn refuse(engine: &Engine, call: &HttpCall<'_>, refusal: &Refusal, status: u16) -> Gate {
    let logged = refusal.logged();
    let request = Undecidable {
        reason: &refusal.message,
        logged: Some(&logged),
        kind: Kind::Tool,
        name: refusal.tool.as_deref(),
        server: call.server,
        subject: call.subject,
    };
    let decision = engine.refuse_via(call.api, &request);
    Gate::Answer {
        reply: reply::refused(refusal, status),
        decision: Some(decision),
    }
}

/// The headers mirror the body (MCP 2026-07-28): `Mcp-Method` the method, `Mcp-Name` the
/// tool's, prompt's or resource's name for a method that names one; decide on the body,
/// refuse a mismatch.
fn header_mismatch(
    call: &HttpCall<'_>,
    id: &Option<Value>,
    method: &str,
    name: Option<&str>,
) -> Option<Refusal> {
    let mirrored = [
        "tools/call",
        "prompts/get",
        "resources/read",
        "resources/subscribe",
    ];
    let tool = name.filter(|_| method == TOOLS_CALL);
    let name = name.filter(|_| mirrored.contains(&method));
    let mismatch = |header: &str, sent: &str, body: &str| Refusal {
        code: INVALID_REQUEST,
        message: format!("the {header} header {sent:?} does not match the body's {body:?}").into(),
        id: id.clone(),
        ambiguity: None,
        tool: tool.map(Box::from),
    };
    if let Some(sent) = call.mcp_method {
        if sent != method {
            return Some(mismatch("Mcp-Method", sent, method));
        }
    }
    match (call.mcp_name, name) {
        (Some(sent), Some(name)) if sent != name => Some(mismatch("Mcp-Name", sent, name)),
        _ => None,
    }
}
