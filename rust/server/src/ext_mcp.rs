//! agentgateway's ExtMCP (`agentgateway.dev.ext_mcp.ExtMcp`): an MCP-aware policy hook
//! that agentgateway's `mcpGuardrails` calls before a method reaches an MCP server
//! (`CheckRequest`) and on its result (`CheckResponse`). agentgateway fronts Streamable HTTP
//! and stdio servers alike, and multiplexes several behind one endpoint; it hands toolgate
//! the method, the server's name in its own (unmuxed) namespace, the JSON-RPC `params` or
//! `result`, the client's headers, and `metadata_context`, values its configuration computes
//! in CEL (verified JWT claims among them).
//!
//! - Every method but the protocol's plumbing, request: decided as Envoy's `Check` decides
//!   it, from the same engine (policy, counters, approvals, decision log), the params read
//!   strictly (anything two decoders could read differently is refused): `tools/call` by its
//!   tool, `resources/read` by its URI, `prompts/get` by its prompt, any other method by its
//!   name ([`toolgate_core::mcp::request`]). A denial is an `AuthorizationError`:
//!   `RESOURCE_EXHAUSTED` for limits, `PERMISSION_DENIED` otherwise, its reason for the
//!   model and, as the JSON-RPC error's `data`, the decision's details under
//!   `toolgate/decision` (code, rule, retry-after, approval id), as the Envoy path gives
//!   them in `_meta`. A hidden tool (resource, prompt) is answered as an unknown one.
//! - The lists (`tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`),
//!   response: the (possibly merged) list filtered for the caller, as the ext_proc filter
//!   filters it; `nextCursor` kept, `cacheScope` made private when the filtering depended on
//!   the caller.
//! - `tools/call`, response: a result with `isError: true` gives the call's reservation back
//!   when its rule says `release_on_failure: tool_error`. The reservation travels from the
//!   request hook as `metadata` ([`RELEASE_KEY`]), which agentgateway's CEL exposes as
//!   `mcpGuardrails.toolgate_release` for the processor's own `metadata` to send back; it
//!   is signed with this process's key, so only a reservation this sidecar made is given
//!   back. Without it the call stays counted. JSON-RPC errors skip agentgateway's response
//!   hook, so they give nothing back.
//! - The protocol's plumbing (`ping`, `initialize`, notifications) passes.
//!
//! Who is calling comes from the headers agentgateway forwards, or, where it forwards none
//! (stdio upstreams, the response hook), from `metadata_context` entries named like those
//! headers ([`crate::subject`]).

use crate::spans::{self, DecisionSpan, Spans};
use crate::subject::{AuthzConfig, CallerFacts, ReadSubject};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value as ProtoValue};
use hmac::{Hmac, Mac};
use pb::authorization_error::Code as ErrorCode;
use pb::{mcp_request_result, mcp_response_result};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Instant;
use toolgate_core::counter::Peer;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::gate::SpanOpener;
use toolgate_core::engine::gate::{also_by_method, decide_reads};
use toolgate_core::engine::listing::{filter_result, ListReport};
use toolgate_core::engine::visibility::Visibility;
use toolgate_core::kind::{Kind as Named, Listed};
use toolgate_core::mcp::answer::case_variant;
use toolgate_core::mcp::outcome::Failure;
use toolgate_core::mcp::reply::{self, details, unknown_error, META_KEY};
use toolgate_core::mcp::request::{
    parse_params_related, McpRequest, Parsed, Refusal, INVALID_PARAMS, PASSING,
};
use toolgate_core::observing::stats::Api;
use toolgate_core::policy::compile::CompiledPolicy;
use toolgate_core::policy::Release;
use toolgate_core::trace_ids;
use toolgate_core::{Code, Decision, Engine, Request, Subject, Undecidable, Verdict};

pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/agentgateway.dev.ext_mcp.rs"));
}

/// Descriptors of the ExtMCP schema, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ext_mcp.bin"));

/// The request hook's `metadata` key carrying a call's signed reservation to the response
/// hook (configured as `metadata: {toolgate_release: "mcpGuardrails.toolgate_release"}`).
pub const RELEASE_KEY: &str = "toolgate_release";

const TOOLS_CALL: &str = "tools/call";
/// agentgateway's separator between a server's name and its tool's in a multiplexed list.
const MUX_DELIMITER: char = '_';
/// agentgateway's separator between a server's name and a resource's URI in a multiplexed
/// list (`everything+demo://...`).
const RESOURCE_MUX_DELIMITER: char = '+';

/// What the service needs beside the engine: how callers are read, and the key that signs
/// reservations handed to agentgateway.
pub struct ExtMcpConfig {
    pub authz: AuthzConfig,
    release_key: Hmac<Sha256>,
}

impl ExtMcpConfig {
    /// With a fresh random key: a reservation can be given back by this process only.
    pub fn new(authz: AuthzConfig) -> ExtMcpConfig {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the system's random source works");
        ExtMcpConfig {
            authz,
            release_key: Hmac::new_from_slice(&key).expect("HMAC takes any key length"),
        }
    }

    fn sign(&self, reservation: u64) -> String {
        let mut mac = self.release_key.clone();
        mac.update(&reservation.to_be_bytes());
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        format!("{reservation}.{}", toolgate_core::hex::lower(&tag[..16]))
    }

    /// The reservation a token this process signed names; `None` for anything else.
    fn verify(&self, token: &str) -> Option<u64> {
        let (reservation, _) = token.split_once('.')?;
        let reservation = reservation.parse::<u64>().ok()?;
        let expected = self.sign(reservation);
        // Same length by construction; compared in full whatever the first difference.
        let same = expected
            .bytes()
            .zip(token.bytes())
            .fold(expected.len() == token.len(), |same, (a, b)| {
                same & (a == b)
            });
        same.then_some(reservation)
    }
}

/// What an ExtMCP message tells of its caller: the forwarded headers (raw bytes; one that is
/// not UTF-8 can match no name and is read as the replacement character, so it is refused
/// where it matters), then `metadata_context`'s entries named like a header, and the
/// verified token's payload under the configured key.
struct McpFacts<'a> {
    headers: &'a [pb::McpHeader],
    metadata: Option<&'a Struct>,
}

impl<'a> CallerFacts<'a> for McpFacts<'a> {
    fn header_values(&self, name: &str) -> Vec<&'a str> {
        let sent: Vec<&'a str> = self
            .headers
            .iter()
            .filter(|h| h.key.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(&h.value).unwrap_or("\u{fffd}"))
            .collect();
        if !sent.is_empty() {
            return sent;
        }
        match self
            .metadata
            .and_then(|m| m.fields.get(name))
            .map(|v| &v.kind)
        {
            Some(Some(Kind::StringValue(s))) => vec![s.as_str()],
            // Present but not a string: read as a value no reader takes.
            Some(_) => vec!["\u{fffd}"],
            None => Vec::new(),
        }
    }

    fn verified_payload(&self, key: &str) -> Option<&'a Struct> {
        match self.metadata?.fields.get(key).map(|v| &v.kind) {
            Some(Some(Kind::StructValue(s))) => Some(s),
            _ => None,
        }
    }

    /// The client's address, as agentgateway's config puts it in [`PEER_METADATA`]
    /// (`source.address`): metadata is the gateway's, not the client's. Given but no IP
    /// address: one opaque address, bounded like any other.
    fn peer(&self) -> Peer {
        match self
            .metadata
            .and_then(|m| m.fields.get(PEER_METADATA))
            .map(|v| &v.kind)
        {
            None => Peer::UNKNOWN,
            Some(Some(Kind::StringValue(s))) => Peer::parse(s).unwrap_or(Peer::OPAQUE),
            Some(_) => Peer::OPAQUE,
        }
    }
}

/// The `metadata` entry agentgateway's config fills with the client's address.
pub const PEER_METADATA: &str = "toolgate_peer";

/// Answer one `CheckRequest`.
pub fn check_request(
    engine: &Engine,
    config: &ExtMcpConfig,
    request: &pb::McpRequest,
) -> pb::McpRequestResult {
    check_request_traced(engine, config, request, None)
}

/// [`check_request`], traced: `traced` is where spans go and the gRPC call's metadata. The
/// decision goes back in the result's `metadata` ([`DECISION_KEY`]) for agentgateway's CEL
/// and access log.
pub fn check_request_traced(
    engine: &Engine,
    config: &ExtMcpConfig,
    request: &pb::McpRequest,
    traced: Option<(&Spans, &dyn spans::Headers)>,
) -> pb::McpRequestResult {
    let method = request.method.as_str();
    if PASSING.contains(&method) || method.starts_with("notifications/") {
        return pass(None);
    }
    let started = Instant::now();
    let (mut answer, decision) = match traced {
        None => decide(engine, config, request, None),
        Some((spans, call)) => {
            let forwarded = Forwarded(&request.headers);
            let span = DecisionSpan::new(spans, &[&forwarded, call]);
            let parsed = parse_params_related(&request.method, request.mcp_request.as_deref());
            let ids = span.open(parsed.as_ref().ok());
            let decided = trace_ids::within(ids, || decide(engine, config, request, Some(parsed)));
            span.finish(decided.1.as_ref());
            decided
        }
    };
    if let Some(d) = &decision {
        tell_decision(&mut answer, d);
    }
    engine
        .stats()
        .record_duration(started.elapsed().as_nanos() as u64);
    answer
}

/// The result's `metadata` key under which the decision goes back to agentgateway
/// ([`reply::told`]).
pub const DECISION_KEY: &str = "toolgate_decision";

fn tell_decision(result: &mut pb::McpRequestResult, d: &Decision) {
    let fields = reply::told(d).map(|(k, v)| (k.to_owned(), string_value(v.to_owned())));
    let decision = ProtoValue {
        kind: Some(Kind::StructValue(Struct {
            fields: fields.into(),
        })),
    };
    let metadata = result.metadata.get_or_insert_with(Struct::default);
    metadata.fields.insert(DECISION_KEY.to_owned(), decision);
}

/// The client's headers agentgateway forwarded, read as a trace context's carrier.
struct Forwarded<'a>(&'a [pb::McpHeader]);

impl spans::Headers for Forwarded<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        let mut sent = self.0.iter().filter(|h| h.key.eq_ignore_ascii_case(name));
        // Sent once, or it names no parent.
        match (sent.next(), sent.next()) {
            (Some(one), None) => std::str::from_utf8(&one.value).ok(),
            _ => None,
        }
    }
}

/// What agentgateway is told, and the decision it follows (none: nothing was decided).
type Decided = (pb::McpRequestResult, Option<Decision>);

/// Decide a request, whose params were read into `parsed` if it is given.
fn decide(
    engine: &Engine,
    config: &ExtMcpConfig,
    request: &pb::McpRequest,
    parsed: Option<Result<Parsed, Refusal>>,
) -> Decided {
    let facts = McpFacts {
        headers: &request.headers,
        metadata: request.metadata_context.as_ref(),
    };
    let read = ReadSubject::read(&facts, &config.authz);
    let subject = read.subject();
    // A request goes to one server; its name is the policy's `servers` key.
    let server = match &request.service_names[..] {
        [one] => Some(one.as_str()).filter(|s| !s.is_empty()),
        _ => {
            let why = format!("a {} request must name exactly one server", request.method);
            return refuse(engine, &why, None, None, subject, ErrorCode::Invalid);
        }
    };
    if let Some(why) = read.refused() {
        return refuse(engine, why, None, server, subject, ErrorCode::Invalid);
    }
    let parsed = parsed
        .unwrap_or_else(|| parse_params_related(&request.method, request.mcp_request.as_deref()));
    let asked = match parsed {
        Ok(parsed) => parsed,
        Err(refusal) => return refuse_params(engine, &refusal, server, subject),
    };
    // A request related to a task reaches it only for the task's creator.
    if let Some(task) = &asked.related_task {
        let refused = Undecidable {
            server,
            subject,
            kind: Named::Method,
            ..Undecidable::new("")
        };
        if let Some(d) = engine.screen_related(Api::ExtMcp, task, &refused) {
            let method = toolgate_core::owners::tasks::METHODS[0];
            return (answer(config, &d, server, Named::Method, method), Some(d));
        }
    }
    let asked = asked.request;
    let (kind, name, args) = match &asked {
        McpRequest::ToolCall {
            name, arguments, ..
        } => (Named::Tool, name, arguments),
        McpRequest::Named {
            kind, name, args, ..
        } => (*kind, name, args),
        McpRequest::Listen { uris, .. } => {
            let (d, uri) = decide_reads(engine, Api::ExtMcp, uris, server, subject);
            return (answer(config, &d, server, Named::Resource, uri), Some(d));
        }
        McpRequest::Other { .. } | McpRequest::Response { .. } => return (pass(None), None),
    };
    let decision = engine.decide_via(
        Api::ExtMcp,
        &Request {
            kind,
            name,
            server,
            subject,
            args: args.as_ref(),
            dry_run: false,
            hits: None,
            confirm: None,
        },
    );
    let (decision, kind, name) = also_by_method(
        engine,
        Api::ExtMcp,
        (decision, kind, name),
        &request.method,
        args.as_ref(),
        server,
        subject,
    );
    (
        answer(config, &decision, server, kind, name),
        Some(decision),
    )
}

/// What agentgateway is told of a decision on `name`, of `kind`.
fn answer(
    config: &ExtMcpConfig,
    d: &Decision,
    server: Option<&str>,
    kind: Named,
    name: &str,
) -> pb::McpRequestResult {
    match d.verdict {
        Verdict::Allow => {
            // Only a tool's call has an outcome to give limits back on.
            let release = match kind {
                Named::Tool => d.policy().releases_on_failure(server, name),
                _ => Release::Never,
            };
            let token = d
                .reservation
                .filter(|_| release == Release::ToolError)
                .map(|r| config.sign(r));
            pass(token)
        }
        // Answered as one that does not exist: no details to tell it apart.
        _ if d.code == Code::Hidden => {
            let (_, message) = unknown_error(kind, name);
            error(ErrorCode::Invalid, message, None)
        }
        _ => {
            let code = match d.code {
                Code::RateLimited | Code::StoreUnavailable => ErrorCode::ResourceExhausted,
                _ => ErrorCode::PermissionDenied,
            };
            let data = serde_json::json!({ META_KEY: details(d) });
            error(code, d.reason().to_owned(), Some(data))
        }
    }
}

fn pass(release: Option<String>) -> pb::McpRequestResult {
    let metadata = release.map(|token| Struct {
        fields: [(RELEASE_KEY.to_owned(), string_value(token))].into(),
    });
    pb::McpRequestResult {
        result: Some(mcp_request_result::Result::Pass(pb::Pass {})),
        header_mutation: None,
        metadata,
    }
}

fn error(code: ErrorCode, reason: String, data: Option<serde_json::Value>) -> pb::McpRequestResult {
    pb::McpRequestResult {
        result: Some(mcp_request_result::Result::Error(pb::AuthorizationError {
            code: code as i32,
            reason,
            mcp_error: data.map(|d| serde_json::to_vec(&d).expect("JSON values serialize")),
        })),
        header_mutation: None,
        metadata: None,
    }
}

/// A call refused before any decision: counted and logged as INVALID_REQUEST with what is
/// known of it.
fn refuse(
    engine: &Engine,
    why: &str,
    tool: Option<&str>,
    server: Option<&str>,
    subject: Subject<'_>,
    code: ErrorCode,
) -> Decided {
    let request = Undecidable {
        reason: why,
        logged: None,
        kind: Named::Tool,
        name: tool,
        server,
        subject,
    };
    let d = engine.refuse_via(Api::ExtMcp, &request);
    let data = serde_json::json!({ META_KEY: details(&d) });
    (error(code, why.to_owned(), Some(data)), Some(d))
}

fn refuse_params(
    engine: &Engine,
    refusal: &Refusal,
    server: Option<&str>,
    subject: Subject<'_>,
) -> Decided {
    let logged = refusal.logged();
    let request = Undecidable {
        reason: &refusal.message,
        logged: Some(&logged),
        kind: Named::Tool,
        name: refusal.tool.as_deref(),
        server,
        subject,
    };
    let d = engine.refuse_via(Api::ExtMcp, &request);
    let data = serde_json::json!({ META_KEY: details(&d), "jsonrpc_code": INVALID_PARAMS });
    let result = error(ErrorCode::Invalid, refusal.message.to_string(), Some(data));
    (result, Some(d))
}

/// Answer one `CheckResponse`.
pub fn check_response(
    engine: &Engine,
    config: &ExtMcpConfig,
    response: &pb::McpResponse,
) -> pb::McpResponseResult {
    let method = response.method.as_str();
    if let Some(listed) = Listed::of_method(method) {
        // A task list is a method's answer first: decided by the method's rule.
        if listed == Listed::Tasks {
            let decided = decide_answered(engine, config, response);
            if matches!(decided.result, Some(mcp_response_result::Result::Error(_))) {
                return decided;
            }
        }
        let started = Instant::now();
        let answer = filter_list(engine, config, response, listed);
        engine
            .stats()
            .record_duration(started.elapsed().as_nanos() as u64);
        return answer;
    }
    match method {
        TOOLS_CALL => {
            give_back_on_tool_error(engine, config, response);
            response_pass()
        }
        "resources/read" => private_read(response),
        _ if DECIDED_ON_THE_ANSWER.contains(&method) || method.starts_with("tasks/") => {
            decide_answered(engine, config, response)
        }
        _ => response_pass(),
    }
}

/// A read's answer that says it may be cached for everyone (`cacheScope`) made the caller's
/// own: the response hook does not know which rule let the read through, nor whether that
/// rule treats callers apart, so every read's is. An answer a case-insensitive client could
/// read another hint from is refused.
fn private_read(response: &pb::McpResponse) -> pb::McpResponseResult {
    let refused = |why: String| pb::McpResponseResult {
        result: Some(mcp_response_result::Result::Error(pb::AuthorizationError {
            code: ErrorCode::Unknown as i32,
            reason: format!(
                "the server's resources/read answer was refused by the proxy's policy check: {why}"
            ),
            mcp_error: None,
        })),
    };
    let mut result = match toolgate_core::json::strict::parse(&response.mcp_response) {
        Ok(serde_json::Value::Object(result)) => result,
        Ok(_) => return refused("the result is not a JSON object".into()),
        Err(e) => return refused(format!("the result cannot be read: {e}")),
    };
    if let Some(key) = case_variant(&result, &[CACHE_SCOPE]) {
        return refused(format!(
            "the result's key {key:?} differs from {CACHE_SCOPE:?} only by case"
        ));
    }
    if result.get(CACHE_SCOPE).is_none_or(|s| s == "private") {
        return response_pass();
    }
    result.insert(CACHE_SCOPE.into(), "private".into());
    pb::McpResponseResult {
        result: Some(mcp_response_result::Result::Mutated(
            serde_json::to_vec(&result).expect("JSON values serialize"),
        )),
    }
}

const CACHE_SCOPE: &str = "cacheScope";

/// Methods agentgateway (1.4) sends to their server without asking its request hook: they
/// are decided when their answer comes back, which it hands over without the request's
/// params. So each is decided by its method's name (the policy's `methods`), not by the
/// resource or prompt it names; a denial takes the answer's place.
const DECIDED_ON_THE_ANSWER: [&str; 2] = toolgate_core::engine::gate::ALSO_BY_METHOD;

/// Decide a request from its answer: by its method, for the caller the metadata names.
fn decide_answered(
    engine: &Engine,
    config: &ExtMcpConfig,
    response: &pb::McpResponse,
) -> pb::McpResponseResult {
    let facts = McpFacts {
        headers: &[],
        metadata: response.metadata_context.as_ref(),
    };
    let read = ReadSubject::read(&facts, &config.authz);
    let server = answering_server(response);
    let refused = |code: ErrorCode, reason: String| pb::McpResponseResult {
        result: Some(mcp_response_result::Result::Error(pb::AuthorizationError {
            code: code as i32,
            reason,
            mcp_error: None,
        })),
    };
    if let Some(why) = read.refused() {
        return refused(
            ErrorCode::Invalid,
            format!("the caller cannot be read: {why}"),
        );
    }
    // A task's request is decided by the task its answer is of.
    let args = answered_task(&response.method, &response.mcp_response);
    let d = engine.decide_via::<&serde_json::Value>(
        Api::ExtMcp,
        &Request {
            kind: Named::Method,
            name: &response.method,
            server,
            subject: read.subject(),
            args: args.as_ref(),
            dry_run: false,
            hits: None,
            confirm: None,
        },
    );
    match answer(config, &d, server, Named::Method, &response.method).result {
        Some(mcp_request_result::Result::Error(e)) => pb::McpResponseResult {
            result: Some(mcp_response_result::Result::Error(e)),
        },
        _ => response_pass(),
    }
}

/// The server that answered, when agentgateway names one (where a created task is noted).
fn answering_server(response: &pb::McpResponse) -> Option<&str> {
    one_server(&response.service_names)
}

fn one_server(servers: &[String]) -> Option<&str> {
    match servers {
        [one] => Some(one.as_str()).filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// The params a task's request is decided with, `{"taskId": ...}`, read from its answer: a
/// task (`tasks/get`, `tasks/cancel`) or the result of one, which names its task in `_meta`
/// (`tasks/result`). `None` for any other answer, or one that names no task (then refused).
fn answered_task(method: &str, answer: &[u8]) -> Option<serde_json::Value> {
    use serde_json::Value;
    if !toolgate_core::owners::tasks::METHODS.contains(&method) {
        return None;
    }
    let Ok(Value::Object(result)) = toolgate_core::json::strict::parse(answer) else {
        return None;
    };
    let task = match method {
        "tasks/result" => result.get("_meta")?.get(RELATED_TASK)?,
        _ => &Value::Object(result.clone()),
    };
    let task_id = task.get("taskId")?.as_str()?;
    Some(serde_json::json!({ "taskId": task_id }))
}

/// Where a task's result names its task.
const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

fn response_pass() -> pb::McpResponseResult {
    pb::McpResponseResult {
        result: Some(mcp_response_result::Result::Pass(pb::Pass {})),
    }
}

/// The list (of `listed`) as this caller may see it; an answer that cannot be read is not
/// passed on.
fn filter_list(
    engine: &Engine,
    config: &ExtMcpConfig,
    response: &pb::McpResponse,
    listed: Listed,
) -> pb::McpResponseResult {
    let refused = |why: String| {
        engine.stats().count_list(0, true);
        let message = format!(
            "the server's {} answer was refused by the proxy's policy check: {why}",
            listed.method()
        );
        pb::McpResponseResult {
            result: Some(mcp_response_result::Result::Error(pb::AuthorizationError {
                code: ErrorCode::Unknown as i32,
                reason: message,
                mcp_error: None,
            })),
        }
    };
    let facts = McpFacts {
        headers: &[],
        metadata: response.metadata_context.as_ref(),
    };
    let read = ReadSubject::read(&facts, &config.authz);
    if let Some(why) = read.refused() {
        return refused(format!("the caller cannot be read: {why}"));
    }
    let mut result = match toolgate_core::json::strict::parse(&response.mcp_response) {
        Ok(serde_json::Value::Object(result)) => result,
        Ok(_) => return refused("the result is not a JSON object".into()),
        Err(e) => return refused(format!("the result cannot be read: {e}")),
    };
    let policy = engine.policy();
    let subject = read.subject();
    let servers = &response.service_names;
    let visible = |listed: Listed, name: &str, entry: &ListedTool<'_>| {
        visibility_in(engine, &policy, servers, listed, name, entry, subject)
    };
    let mut report = ListReport::default();
    let changed = match filter_result(listed, &mut result, visible, &mut report) {
        Ok(changed) => changed,
        Err(why) => return refused(why),
    };
    engine.stats().count_list(0, false);
    engine.stats().count_list_removed(report.removed);
    if !changed {
        return response_pass();
    }
    pb::McpResponseResult {
        result: Some(mcp_response_result::Result::Mutated(
            serde_json::to_vec(&result).expect("JSON values serialize"),
        )),
    }
}

/// Whether `subject` sees `name` (a tool, a resource, a template or a prompt, as `listed`
/// says) of a list agentgateway merged from `servers`: with one server, its own name; with
/// several, a tool or prompt as `SERVER_NAME` and a resource or template as `SERVER+URI`, as
/// agentgateway writes them. A name of no listed server (agentgateway's unprefixed modes,
/// and the UI resources it names its own way) is shown only if every listed server's section
/// would show it.
pub(crate) fn visibility_in(
    engine: &Engine,
    policy: &Arc<CompiledPolicy>,
    servers: &[String],
    listed: Listed,
    name: &str,
    tool: &ListedTool<'_>,
    subject: Subject<'_>,
) -> Visibility {
    if listed == Listed::Tasks {
        return engine
            .task_owner(one_server(servers), subject, name)
            .visibility();
    }
    if listed != Listed::Tools {
        let kind = listed.kind();
        let of =
            |server: Option<&str>, name: &str| policy.visibility(kind, name, server, subject, None);
        // agentgateway names a prompt `SERVER_NAME` and a resource `SERVER+URI`.
        let delimiter = match listed {
            Listed::Prompts => MUX_DELIMITER,
            _ => RESOURCE_MUX_DELIMITER,
        };
        let prefixed = match servers {
            [_, _, ..] => name
                .split_once(delimiter)
                .filter(|(server, _)| servers.iter().any(|s| s == server)),
            _ => None,
        };
        return match (servers, prefixed) {
            ([], _) => of(None, name),
            ([one], _) => of(Some(one), name),
            (_, Some((server, name))) => of(Some(server), name),
            (many, None) => {
                let mut seen = Visibility {
                    removed: None,
                    per_subject: false,
                };
                for server in many {
                    let v = of(Some(server), name);
                    seen.per_subject |= v.per_subject;
                    seen.removed = seen.removed.or(v.removed);
                }
                seen
            }
        };
    }
    let of =
        |server: Option<&str>, name: &str| engine.list_tool(policy, server, subject, name, tool);
    match servers {
        [] => of(None, name),
        [one] => of(Some(one), name),
        many => {
            let prefixed = name
                .split_once(MUX_DELIMITER)
                .filter(|(server, _)| many.iter().any(|s| s == server));
            if let Some((server, tool)) = prefixed {
                return of(Some(server), tool);
            }
            let mut seen = Visibility {
                removed: None,
                per_subject: false,
            };
            for server in many {
                let v =
                    engine.list_tool_of_unknown_owner(policy, Some(server), subject, name, tool);
                seen.per_subject |= v.per_subject;
                seen.removed = seen.removed.or(v.removed);
            }
            seen
        }
    }
}

/// A `tools/call` result with `isError: true`: give back the reservation the request hook
/// signed, if it came back.
fn give_back_on_tool_error(engine: &Engine, config: &ExtMcpConfig, response: &pb::McpResponse) {
    let token = response
        .metadata_context
        .as_ref()
        .and_then(|m| m.fields.get(RELEASE_KEY))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.as_str()),
            _ => None,
        });
    #[derive(serde::Deserialize)]
    struct ToolResult {
        #[serde(rename = "isError")]
        is_error: Option<bool>,
        task: Option<CreatedTask>,
    }
    #[derive(serde::Deserialize)]
    struct CreatedTask {
        #[serde(rename = "taskId")]
        task_id: String,
    }
    // A result that repeats `isError` (or `task`) fails to read, and counts as a success
    // (kept counted) that created no task.
    let result = serde_json::from_slice::<ToolResult>(&response.mcp_response).ok();
    if let Some(task) = result.as_ref().and_then(|r| r.task.as_ref()) {
        // Noted as the caller's before its id reaches the client.
        let facts = McpFacts {
            headers: &[],
            metadata: response.metadata_context.as_ref(),
        };
        let read = ReadSubject::read(&facts, &config.authz);
        if read.refused().is_none() {
            engine.note_task(answering_server(response), read.subject(), &task.task_id);
        }
    }
    let Some(reservation) = token.and_then(|t| config.verify(t)) else {
        return;
    };
    let failed = result.is_some_and(|r| r.is_error == Some(true));
    if failed && engine.release(reservation) {
        engine.stats().count_released(Failure::ToolError);
    }
}

fn string_value(s: String) -> ProtoValue {
    ProtoValue {
        kind: Some(Kind::StringValue(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_token_is_this_process_s_own_and_names_its_reservation() {
        let config = ExtMcpConfig::new(AuthzConfig::default());
        let token = config.sign(42);
        assert_eq!(config.verify(&token), Some(42));
        let other = ExtMcpConfig::new(AuthzConfig::default());
        assert_eq!(other.verify(&token), None, "another process's key");
        let (_, tag) = token.split_once('.').unwrap();
        for forged in [
            format!("43.{tag}"),
            "42".to_owned(),
            "42.".to_owned(),
            format!("42.{tag}0"),
            format!("042.{tag}"),
            String::new(),
        ] {
            assert_eq!(config.verify(&forged), None, "{forged:?}");
        }
    }
}
