//! Reading an MCP request out of a JSON-RPC request body, strictly: what it asks for, and
//! what the policy decides it by.
//!
//! Every method is decided, but the protocol's own plumbing: `tools/call` by its tool;
//! `resources/read` and `resources/subscribe` by their resource's URI (in one spelling:
//! [`super::uri`]); `prompts/get` by its prompt; `completion/complete` by the prompt or
//! resource it completes for; `subscriptions/listen` (MCP 2026-07-28) as a read of each
//! resource it asks updates of; any other method by its name. `ping`, `initialize`,
//! `server/discover`, `resources/unsubscribe`, notifications and the list methods pass
//! (their answers are filtered), and so do a client's answers to the server's requests.
//!
//! A proxy forwards the original bytes, so the body must mean one thing only: anything the
//! upstream server might read differently from us is refused rather than judged. Refused:
//! bodies that are not one JSON object (batches were removed from MCP in 2025-06-18), JSON
//! that decoders read differently ([`crate::json::strict`]: duplicate keys, keys that fold
//! alike, numbers beyond 2^53), keys that fold to a JSON-RPC or MCP key without being it
//! (`"METHOD"`, `"paramſ"`: a case-insensitive decoder reads them as that key), and `params`
//! or `arguments` that are not objects.

use crate::asking::confirmation::{Answer, Confirming, FIRST_REVISION, TOKEN_PREFIX};
use crate::json::fields::{self, Fields};
use crate::json::fold::{fold_eq, folded};
use crate::json::strict::{self, Ambiguity, StrictError};
use crate::kind::Kind;
use crate::mcp::revision::Revision;
use crate::mcp::trace_context::{TraceCarrier, MAX_TRACEPARENT_BYTES, MAX_TRACESTATE_BYTES};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// JSON-RPC error codes used when refusing.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;

/// The keys MCP defines, each with its case folding.
const REQUEST_KEYS: [(&str, &str); 6] = [
    ("jsonrpc", "jsonrpc"),
    ("id", "id"),
    ("method", "method"),
    ("params", "params"),
    ("result", "result"),
    ("error", "error"),
];
const CALL_KEYS: [(&str, &str); 6] = [
    ("name", "name"),
    ("arguments", "arguments"),
    ("_meta", "_meta"),
    ("inputResponses", "inputresponses"),
    ("requestState", "requeststate"),
    ("task", "task"),
];
/// The params of a request that reaches one task ([`crate::owners::tasks::METHODS`]).
const TASK_KEYS: [(&str, &str); 2] = [("taskId", "taskid"), ("_meta", "_meta")];
const RESOURCE_KEYS: [(&str, &str); 2] = [("uri", "uri"), ("_meta", "_meta")];
const PROMPT_KEYS: [(&str, &str); 3] = [
    ("name", "name"),
    ("arguments", "arguments"),
    ("_meta", "_meta"),
];
const COMPLETE_KEYS: [(&str, &str); 4] = [
    ("ref", "ref"),
    ("argument", "argument"),
    ("context", "context"),
    ("_meta", "_meta"),
];
const REF_KEYS: [(&str, &str); 3] = [("type", "type"), ("name", "name"), ("uri", "uri")];
const LISTEN_KEYS: [(&str, &str); 2] = [("notifications", "notifications"), ("_meta", "_meta")];
const LISTENED_KEYS: [(&str, &str); 1] = [("resourceSubscriptions", "resourcesubscriptions")];
const LISTEN: &str = "subscriptions/listen";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const TOOLS_CALL: &str = "tools/call";
const NOTIFICATIONS: &str = "notifications/";

/// The protocol's plumbing, which passes undecided: a list's answer is filtered for its
/// caller instead, and the others touch nothing a policy names.
pub const PASSING: [&str; 8] = [
    "ping",
    "initialize",
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "resources/unsubscribe",
];

/// The methods MCP defines for clients to send, besides notifications: a case variant of one
/// is refused (a lenient server could route it there).
const KNOWN_METHODS: &[&str] = &[
    "ping",
    "initialize",
    "server/discover",
    "subscriptions/listen",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "resources/unsubscribe",
    TOOLS_CALL,
    "resources/read",
    "resources/subscribe",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/result",
    "tasks/cancel",
    "tasks/list",
];

/// What a request body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum McpRequest {
    /// `tools/call`: the tool and its arguments, to be decided.
    ToolCall {
        id: Option<Value>,
        name: String,
        arguments: Option<Value>,
        /// Whether the client can confirm the call itself, and its answer if it carries one.
        confirm: Confirming,
        /// It asks for a task (the task extension): its server answers with a task to poll,
        /// whose id is noted as the caller's ([`crate::owners::tasks`]).
        task: bool,
    },
    /// A request decided by what it names: a resource, a prompt, or (for a method that names
    /// neither) the method itself. `args` are what conditions read as `args.*`: a prompt's
    /// arguments, or the request's params.
    Named {
        id: Option<Value>,
        method: String,
        kind: Kind,
        name: String,
        args: Option<Value>,
    },
    /// `subscriptions/listen` (MCP 2026-07-28) asking for updates of resources: decided as a
    /// read of each (a listen that names none is plumbing).
    Listen {
        id: Option<Value>,
        uris: Vec<String>,
    },
    /// The protocol's plumbing ([`PASSING`], notifications): not decided.
    Other { id: Option<Value>, method: String },
    /// The client's answer to a request of the server's (sampling, elicitation...).
    Response { id: Option<Value> },
}

/// Why a body was refused, as a JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: i64,
    /// Told to the client: it may name a key or a number of the body.
    pub message: Box<str>,
    /// The request's id, when it could be read.
    pub id: Option<Value>,
    /// Why the body reads two ways, when that is the refusal: `message` then names a key or
    /// number of it, which [`Refusal::logged`] leaves out.
    pub ambiguity: Option<Ambiguity>,
    /// The tool the body names, when it was read before the refusal.
    pub tool: Option<Box<str>>,
}

fn refuse(code: i64, message: impl Into<Box<str>>, id: Option<Value>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        id,
        ambiguity: None,
        tool: None,
    }
}

impl Refusal {
    /// This refusal of a body that names `tool`.
    fn of_tool(self, tool: &str) -> Refusal {
        Refusal {
            tool: Some(tool.into()),
            ..self
        }
    }

    /// The message as the decision log writes it: no key, value or place of the body.
    pub fn logged(&self) -> Cow<'_, str> {
        match self.ambiguity {
            Some(what) => format!("the body could be read two ways: {}", what.describe()).into(),
            None => Cow::Borrowed(&self.message),
        }
    }
}

impl McpRequest {
    /// The message's id (`None`: a notification).
    pub fn id(&self) -> Option<Value> {
        match self {
            McpRequest::ToolCall { id, .. }
            | McpRequest::Named { id, .. }
            | McpRequest::Listen { id, .. }
            | McpRequest::Other { id, .. }
            | McpRequest::Response { id } => id.clone(),
        }
    }
}

/// Parse one JSON-RPC request body.
pub fn parse_request(body: &[u8]) -> Result<McpRequest, Refusal> {
    parse_message(body).map(|m| m.request)
}

/// A request as read: what it asks, and the task its params' `_meta` relates it to (MCP's
/// `io.modelcontextprotocol/related-task`): a server looks that task up and queues the
/// request's answer on it, so only the task's creator may send it ([`crate::owners::tasks`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub request: McpRequest,
    pub related_task: Option<String>,
    /// The trace context in its params' `_meta` (`traceparent`, `tracestate`).
    pub trace: Option<TraceCarrier>,
    /// The protocol revision it declares (its params' `_meta`, or an `initialize`'s
    /// `protocolVersion`): what a span says of it, never what decides it.
    pub revision: Option<Revision>,
}

/// Where a request's `_meta` names the task it relates to.
pub const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

/// [`parse_request`], with the task the request relates to.
pub fn parse_message(body: &[u8]) -> Result<Parsed, Refusal> {
    let root = strict::parse(body).map_err(|e| match e {
        StrictError::Syntax(m) => refuse(
            PARSE_ERROR,
            format!("body is not one JSON value: {m}"),
            None,
        ),
        StrictError::Ambiguous { what, .. } => Refusal {
            ambiguity: Some(what),
            ..refuse(
                INVALID_REQUEST,
                format!("the body could be read two ways: {e}"),
                readable_id(body),
            )
        },
        StrictError::TooLarge(m) => refuse(INVALID_REQUEST, m, readable_id(body)),
    })?;
    let members = match root {
        Value::Object(members) => members,
        Value::Array(_) => {
            return Err(refuse(
                INVALID_REQUEST,
                "batches are not accepted: send one request per message",
                None,
            ))
        }
        _ => {
            return Err(refuse(
                INVALID_REQUEST,
                "a request must be a JSON object",
                None,
            ))
        }
    };
    let id = members.field("id").cloned();
    if let Some(id_value) = &id {
        // MCP: "the ID MUST NOT be null"; a notification has no id at all.
        if !(id_value.is_string() || id_value.is_i64() || id_value.is_u64()) {
            return Err(refuse(
                INVALID_REQUEST,
                "id must be a string or an integer",
                None,
            ));
        }
    }
    check_known_keys(&members, &REQUEST_KEYS, "request", &id)?;
    match members.field("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return Err(refuse(INVALID_REQUEST, "jsonrpc must be \"2.0\"", id)),
    }
    let answers = members.has("result") || members.has("error");
    let method = match members.field("method") {
        Some(Value::String(m)) if !answers => m.clone(),
        Some(_) if answers => {
            return Err(refuse(
                INVALID_REQUEST,
                "a message with a method cannot also carry a result or an error",
                id,
            ))
        }
        None if answers && id.is_some() => {
            check_answer(&members, &id)?;
            return Ok(Parsed {
                request: McpRequest::Response { id },
                related_task: None,
                trace: None,
                revision: None,
            });
        }
        _ => return Err(refuse(INVALID_REQUEST, "method must be a string", id)),
    };
    // MCP's params are an object in every message (the SDKs refuse anything else), while
    // JSON-RPC decoders take any value: a body read two ways, whatever its method.
    if members.field("params").is_some_and(|p| !p.is_object()) {
        return Err(refuse(INVALID_PARAMS, "params must be an object", id));
    }
    // A call without an id would be a notification, which gets no answer to deny with.
    if method == TOOLS_CALL && id.is_none() {
        return Err(refuse(INVALID_REQUEST, "tools/call needs an id", None));
    }
    let params = match fields::take(members, "params") {
        Some(Value::Object(params)) => Some(params),
        Some(_) => return Err(refuse(INVALID_PARAMS, "params must be an object", id)),
        None => None,
    };
    // `_meta` looked up once for the three that read it.
    let meta = params.as_ref().and_then(|p| p.field("_meta"));
    let related_task = related_task(&method, params.as_ref(), meta, &id)?;
    let meta = meta.and_then(Value::as_object);
    let trace = meta.and_then(trace_carrier);
    let revision = declared_revision(&method, params.as_ref(), meta);
    let request = asked(id, method, params)?;
    Ok(Parsed {
        request,
        related_task,
        trace,
        revision,
    })
}

/// The protocol revision a request of `method` declares: in its params' `_meta` (MCP
/// 2026-07-28 sends it with every request), else an `initialize`'s `protocolVersion`.
fn declared_revision(
    method: &str,
    params: Option<&Map<String, Value>>,
    meta: Option<&Map<String, Value>>,
) -> Option<Revision> {
    let initialize = || match method {
        "initialize" => Revision::parse(params?.field("protocolVersion")?.as_str()?),
        _ => None,
    };
    meta_revision(meta).or_else(initialize)
}

/// The revision a request's `_meta` declares (`io.modelcontextprotocol/protocolVersion`).
fn meta_revision(meta: Option<&Map<String, Value>>) -> Option<Revision> {
    Revision::parse(meta?.field(META_VERSION)?.as_str()?)
}

/// The task `params` relate the request to, read in one spelling: `_meta`'s
/// [`RELATED_TASK`], an object whose `taskId` is a non-empty string. `_meta` is an object
/// in every request's params, whatever the method: anything else toolgate would read as no
/// task and no trace, and a server would refuse or read another way.
fn related_task(
    method: &str,
    params: Option<&Map<String, Value>>,
    meta: Option<&Value>,
    id: &Option<Value>,
) -> Result<Option<String>, Refusal> {
    let meta = match meta {
        None => return Ok(None),
        Some(Value::Object(meta)) => meta,
        Some(_) => {
            let refusal = refuse(INVALID_PARAMS, "params._meta must be an object", id.clone());
            let tool = params.and_then(|p| p.field("name")).and_then(Value::as_str);
            return Err(match tool {
                Some(name) if method == TOOLS_CALL && !name.is_empty() => refusal.of_tool(name),
                _ => refusal,
            });
        }
    };
    check_known_keys(meta, &META_KEYS, "params._meta", id)?;
    let Some(related) = meta.field(RELATED_TASK) else {
        return Ok(None);
    };
    let bad = || {
        let why = format!("params._meta[{RELATED_TASK:?}] must name its task in \"taskId\"");
        refuse(INVALID_PARAMS, why, id.clone())
    };
    let related = related.as_object().ok_or_else(bad)?;
    check_known_keys(related, &TASK_KEYS[..1], "the related task", id)?;
    match related.field("taskId") {
        Some(Value::String(t)) if !t.is_empty() => Ok(Some(t.clone())),
        _ => Err(bad()),
    }
}

/// The keys of `_meta` that toolgate reads: one spelled otherwise only by case would be read
/// by a server that folds keys and not by toolgate.
const META_KEYS: [(&str, &str); 3] = [
    (RELATED_TASK, "io.modelcontextprotocol/related-task"),
    ("traceparent", "traceparent"),
    ("tracestate", "tracestate"),
];

/// The trace context (W3C Trace Context) a request carries in its params' `_meta`, as MCP
/// clients propagate it: kept as text when `traceparent` is a string of a plausible length
/// (the span's opener checks it), else none. It never changes a decision.
fn trace_carrier(meta: &Map<String, Value>) -> Option<TraceCarrier> {
    let traceparent = meta.field("traceparent")?.as_str()?;
    if traceparent.len() > MAX_TRACEPARENT_BYTES {
        return None;
    }
    let tracestate = meta
        .field("tracestate")
        .and_then(Value::as_str)
        .filter(|s| s.len() <= MAX_TRACESTATE_BYTES)
        .map(str::to_owned);
    Some(TraceCarrier {
        traceparent: traceparent.to_owned(),
        tracestate,
    })
}

/// What a request of `method` with `params` asks, its id being `id`: the protocol's
/// plumbing (it passes), or what the policy decides it by.
fn asked(
    id: Option<Value>,
    method: String,
    params: Option<Map<String, Value>>,
) -> Result<McpRequest, Refusal> {
    // A method MCP defines, spelled as MCP spells it (the usual case), is no case variant.
    let known = KNOWN_METHODS.contains(&method.as_str());
    if let Some(ours) = KNOWN_METHODS.iter().find(|m| !known && fold_eq(&method, m)) {
        return Err(refuse(
            INVALID_REQUEST,
            format!("method {method:?} differs from {ours} only by case"),
            id,
        ));
    }
    let notification = folded(&method).starts_with(NOTIFICATIONS);
    if notification && !method.starts_with(NOTIFICATIONS) {
        return Err(refuse(
            INVALID_REQUEST,
            format!("method {method:?} differs from a notification's only by case"),
            id,
        ));
    }
    // Plumbing passes; so does a notification (it gets no answer), unless it has an id.
    if PASSING.contains(&method.as_str()) || (notification && id.is_none()) {
        return Ok(McpRequest::Other { id, method });
    }
    if method == LISTEN {
        let uris = listened(params.as_ref(), &id)?;
        if uris.is_empty() {
            return Ok(McpRequest::Other { id, method });
        }
        return Ok(McpRequest::Listen { id, uris });
    }
    if method != TOOLS_CALL {
        let (kind, name, args) = named(&method, params, &id)?;
        return Ok(McpRequest::Named {
            id,
            method,
            kind,
            name,
            args,
        });
    }
    let Some(params) = params else {
        return Err(refuse(INVALID_PARAMS, "tools/call needs params", id));
    };
    let (name, arguments, confirm, task) = call_params(params, &id)?;
    Ok(McpRequest::ToolCall {
        id,
        name,
        arguments,
        confirm,
        task,
    })
}

/// What a request other than `tools/call` names, and the arguments its conditions read.
/// `resources/read`, `resources/subscribe`, `prompts/get` and `completion/complete` must
/// name their resource or prompt as MCP says, each key only as MCP spells it.
pub fn named(
    method: &str,
    params: Option<Map<String, Value>>,
    id: &Option<Value>,
) -> Result<(Kind, String, Option<Value>), Refusal> {
    let bad = |why: String| refuse(INVALID_PARAMS, why, id.clone());
    let needs = |what: &str| bad(format!("{method} needs params with {what}"));
    match method {
        "resources/read" | "resources/subscribe" => {
            let params = params.ok_or_else(|| needs("a \"uri\""))?;
            check_known_keys(&params, &RESOURCE_KEYS, "params", id)?;
            let uri = resource_uri(params.field("uri"), false, id)?;
            Ok((Kind::Resource, uri, Some(Value::Object(params))))
        }
        "prompts/get" => {
            let mut params = params.ok_or_else(|| needs("a \"name\""))?;
            check_known_keys(&params, &PROMPT_KEYS, "params", id)?;
            let name = match params.remove("name") {
                Some(Value::String(n)) if !n.is_empty() => n,
                _ => return Err(bad("params.name must be a non-empty string".into())),
            };
            let arguments = match params.remove("arguments") {
                None => None,
                Some(arguments @ Value::Object(_)) => Some(arguments),
                Some(_) => return Err(bad("params.arguments must be an object".into())),
            };
            Ok((Kind::Prompt, name, arguments))
        }
        "completion/complete" => {
            let params = params.ok_or_else(|| needs("a \"ref\""))?;
            check_known_keys(&params, &COMPLETE_KEYS, "params", id)?;
            let Some(Value::Object(reference)) = params.field("ref") else {
                return Err(bad("params.ref must be an object".into()));
            };
            check_known_keys(reference, &REF_KEYS, "params.ref", id)?;
            let (kind, name) = match reference.field("type").and_then(Value::as_str) {
                Some("ref/prompt") => match reference.field("name") {
                    Some(Value::String(n)) if !n.is_empty() => (Kind::Prompt, n.clone()),
                    _ => return Err(bad("params.ref.name must be a non-empty string".into())),
                },
                Some("ref/resource") => {
                    let template = resource_uri(reference.field("uri"), true, id)?;
                    (Kind::Resource, template)
                }
                _ => {
                    let why = "params.ref.type must be \"ref/prompt\" or \"ref/resource\"";
                    return Err(bad(why.into()));
                }
            };
            Ok((kind, name, Some(Value::Object(params))))
        }
        _ if crate::owners::tasks::METHODS.contains(&method) => {
            let params = params.ok_or_else(|| needs("a \"taskId\""))?;
            check_known_keys(&params, &TASK_KEYS, "params", id)?;
            match params.field("taskId") {
                Some(Value::String(t)) if !t.is_empty() => {}
                _ => return Err(bad("params.taskId must be a non-empty string".into())),
            }
            Ok((Kind::Method, method.to_owned(), Some(Value::Object(params))))
        }
        _ => Ok((Kind::Method, method.to_owned(), params.map(Value::Object))),
    }
}

/// The resources a `subscriptions/listen` asks updates of: its
/// `notifications.resourceSubscriptions`, each a URI in its one spelling.
fn listened(
    params: Option<&Map<String, Value>>,
    id: &Option<Value>,
) -> Result<Vec<String>, Refusal> {
    let bad = |why: &str| Err(refuse(INVALID_PARAMS, why, id.clone()));
    let Some(params) = params else {
        return Ok(Vec::new());
    };
    check_known_keys(params, &LISTEN_KEYS, "params", id)?;
    let notifications = match params.field("notifications") {
        None => return Ok(Vec::new()),
        Some(Value::Object(n)) => n,
        Some(_) => return bad("params.notifications must be an object"),
    };
    check_known_keys(notifications, &LISTENED_KEYS, "params.notifications", id)?;
    match notifications.field("resourceSubscriptions") {
        None => Ok(Vec::new()),
        Some(Value::Array(uris)) => uris
            .iter()
            .map(|u| resource_uri(Some(u), false, id))
            .collect(),
        Some(_) => bad("params.notifications.resourceSubscriptions must be an array"),
    }
}

/// A resource URI (or, `template`, a URI template) as requests must write it: a string in
/// its one spelling.
fn resource_uri(
    uri: Option<&Value>,
    template: bool,
    id: &Option<Value>,
) -> Result<String, Refusal> {
    let Some(Value::String(uri)) = uri else {
        return Err(refuse(
            INVALID_PARAMS,
            "the resource URI must be a string",
            id.clone(),
        ));
    };
    let checked = match template {
        true => super::uri::check_template(uri),
        false => super::uri::check(uri),
    };
    checked.map_err(|why| refuse(INVALID_PARAMS, why, id.clone()))?;
    Ok(uri.clone())
}

/// Read a request's `params` alone, strictly, as a gateway that parsed the JSON-RPC message
/// itself hands them on with its method (agentgateway's ExtMCP): what the request asks. It
/// carries no id, and a gateway that cannot answer in the server's place cannot ask the
/// user to confirm a call.
pub fn parse_params(method: &str, params: Option<&[u8]>) -> Result<McpRequest, Refusal> {
    parse_params_related(method, params).map(|m| m.request)
}

/// [`parse_params`], with the task the request relates to.
pub fn parse_params_related(method: &str, params: Option<&[u8]>) -> Result<Parsed, Refusal> {
    let params = match params.map(strict::parse) {
        None => None,
        Some(Ok(Value::Object(params))) => Some(params),
        Some(Ok(_)) => return Err(refuse(INVALID_PARAMS, "params must be an object", None)),
        Some(Err(e @ StrictError::Ambiguous { what, .. })) => {
            return Err(Refusal {
                ambiguity: Some(what),
                ..refuse(
                    INVALID_PARAMS,
                    format!("the params could be read two ways: {e}"),
                    None,
                )
            })
        }
        Some(Err(StrictError::Syntax(m))) => {
            return Err(refuse(
                INVALID_PARAMS,
                format!("params are not one JSON value: {m}"),
                None,
            ))
        }
        Some(Err(StrictError::TooLarge(m))) => return Err(refuse(INVALID_PARAMS, m, None)),
    };
    let meta = params.as_ref().and_then(|p| p.field("_meta"));
    let related_task = related_task(method, params.as_ref(), meta, &None)?;
    let meta = meta.and_then(Value::as_object);
    let trace = meta.and_then(trace_carrier);
    let revision = declared_revision(method, params.as_ref(), meta);
    let request = match asked(None, method.to_owned(), params)? {
        McpRequest::ToolCall {
            id,
            name,
            arguments,
            task,
            ..
        } => McpRequest::ToolCall {
            id,
            name,
            arguments,
            confirm: Confirming::default(),
            task,
        },
        other => other,
    };
    Ok(Parsed {
        request,
        related_task,
        trace,
        revision,
    })
}

/// A call's `params`: only the keys MCP defines, a non-empty name, object arguments; and
/// what the client says of confirming it. Read in place first, then taken apart (no key of
/// them is hashed: [`fields`]).
fn call_params(
    params: Map<String, Value>,
    id: &Option<Value>,
) -> Result<(String, Option<Value>, Confirming, bool), Refusal> {
    let id = id.clone();
    check_known_keys(&params, &CALL_KEYS, "params", &id)?;
    let name = match params.field("name") {
        Some(Value::String(n)) if !n.is_empty() => n.as_str(),
        _ => {
            return Err(refuse(
                INVALID_PARAMS,
                "params.name must be a non-empty string",
                id,
            ))
        }
    };
    // A `_meta` that is not an object was refused with the request's task.
    if let Some(Value::Object(meta)) = params.field("_meta") {
        let token = meta.field("progressToken");
        if token.is_some_and(|t| !(t.is_string() || t.is_i64() || t.is_u64())) {
            let refusal = refuse(
                INVALID_PARAMS,
                "params._meta.progressToken must be a string or an integer",
                id,
            );
            return Err(refusal.of_tool(name));
        }
    }
    if params.field("arguments").is_some_and(|a| !a.is_object()) {
        let refusal = refuse(INVALID_PARAMS, "params.arguments must be an object", id);
        return Err(refusal.of_tool(name));
    }
    let task = match params.field("task") {
        None => false,
        Some(Value::Object(_)) => true,
        Some(_) => {
            let refusal = refuse(INVALID_PARAMS, "params.task must be an object", id);
            return Err(refusal.of_tool(name));
        }
    };
    let confirm = confirming(&params).map_err(|m| refuse(INVALID_PARAMS, m, id).of_tool(name))?;
    let (mut name, mut arguments) = (String::new(), None);
    for (key, value) in params {
        match (key.as_str(), value) {
            ("name", Value::String(n)) => name = n,
            ("arguments", value) => arguments = Some(value),
            _ => {}
        }
    }
    Ok((name, arguments, confirm, task))
}

/// What a call says of confirming it in the client (MCP 2026-07-28): whether the client can
/// be asked (its revision and form elicitation, declared in the request's own `_meta`), and
/// its answer to toolgate's question, the one input response under a key toolgate minted.
/// Other input responses are the server's business and pass as they are.
fn confirming(params: &Map<String, Value>) -> Result<Confirming, &'static str> {
    let meta = params.field("_meta").and_then(Value::as_object);
    // Fails closed: no revision, or a first revision that did not read, is not recent.
    let recent = meta_revision(meta)
        .is_some_and(|r| Revision::parse(FIRST_REVISION).is_some_and(|first| r >= first));
    let elicitation = meta
        .and_then(|m| m.field(META_CAPABILITIES))
        .and_then(|c| c.get("elicitation"))
        .and_then(Value::as_object);
    // An empty elicitation capability means form; a client that names modes must name it.
    let form = elicitation.is_some_and(|e| e.has("form") || !e.has("url"));
    let answer = match params.field("inputResponses") {
        None => None,
        Some(Value::Object(responses)) => {
            let mut ours = responses
                .iter()
                .filter(|(k, _)| k.starts_with(TOKEN_PREFIX));
            let first = ours.next();
            if ours.next().is_some() {
                return Err("params.inputResponses answers more than one of toolgate's questions");
            }
            match first {
                None => None,
                Some((token, answer)) => Some(read_answer(token, answer)?),
            }
        }
        Some(_) => return Err("params.inputResponses must be an object"),
    };
    Ok(Confirming {
        can_ask: recent && form,
        answer,
    })
}

/// An answer to toolgate's form: `{"action": "accept", "content": {"approve": true}}` is a
/// yes; a decline, a cancel, or an accepted form without that tick is a no.
fn read_answer(token: &str, answer: &Value) -> Result<Answer, &'static str> {
    let bad = "an answer to toolgate's question must be {\"action\": \"accept\" | \"decline\" \
               | \"cancel\", \"content\": {\"approve\": true | false}}";
    let Value::Object(answer) = answer else {
        return Err(bad);
    };
    let action = match answer.field("action").and_then(Value::as_str) {
        Some(a @ ("accept" | "decline" | "cancel")) => a,
        _ => return Err(bad),
    };
    let approve = match answer.field("content") {
        None => None,
        Some(Value::Object(content)) => match content.field("approve") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(bad),
        },
        Some(_) => return Err(bad),
    };
    Ok(Answer {
        token: token.to_owned(),
        yes: action == "accept" && approve == Some(true),
    })
}

/// A client's answer to a server request: a `result`, or an `error` with an integer `code`
/// and a string `message`, never both (servers refuse anything else; it is not forwarded).
fn check_answer(members: &Map<String, Value>, id: &Option<Value>) -> Result<(), Refusal> {
    let bad = |why: &str| Err(refuse(INVALID_REQUEST, why, id.clone()));
    match (members.field("result"), members.field("error")) {
        (Some(_), Some(_)) => bad("an answer carries a result or an error, not both"),
        (None, Some(Value::Object(error))) => {
            let code = error
                .field("code")
                .is_some_and(|c| c.is_i64() || c.is_u64());
            let message = error.field("message").is_some_and(Value::is_string);
            if code && message {
                Ok(())
            } else {
                bad("an error needs an integer code and a string message")
            }
        }
        (None, Some(_)) => bad("an error must be an object"),
        _ => Ok(()),
    }
}

/// The request's `id`, for the answer to a body that is refused: read leniently (other keys
/// ignored), and only when the body is JSON with exactly one `id` that is a string or an
/// integer, so the client can match the refusal to its request.
pub fn readable_id(body: &[u8]) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        id: Option<Value>,
    }
    let id = serde_json::from_slice::<Envelope>(body).ok()?.id?;
    (id.is_string() || id.is_i64() || id.is_u64()).then_some(id)
}

/// The tool a body names, when it is read that far: to log a request refused for another
/// reason (its credential) with the call it made.
pub fn readable_tool(body: &[u8]) -> Option<Box<str>> {
    match parse_request(body) {
        Ok(McpRequest::ToolCall { name, .. }) => Some(name.into()),
        Err(refusal) => refusal.tool,
        Ok(_) => None,
    }
}

/// Refuse a key that a case-insensitive decoder would read as one of `known` (each given
/// with its folding), without being it. (Two such keys in one object were already refused
/// as folding alike.)
fn check_known_keys(
    members: &Map<String, Value>,
    known: &[(&str, &str)],
    what: &str,
    id: &Option<Value>,
) -> Result<(), Refusal> {
    for key in members.keys() {
        // A key spelled as MCP spells it is no variant of another (known keys fold apart).
        if known.iter().any(|(k, _)| k == key) {
            continue;
        }
        let fold = folded(key);
        if let Some((k, _)) = known.iter().find(|(k, f)| *f == fold && k != key) {
            return Err(refuse(
                INVALID_REQUEST,
                format!("{what} key {key:?} differs from {k:?} only by case"),
                id.clone(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(body: &str) -> Result<McpRequest, Refusal> {
        parse_request(body.as_bytes())
    }

    #[test]
    fn reads_a_tools_call() {
        let r = call(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"create-ami","arguments":{"a":{"b":[1]}}}}"#,
        );
        assert_eq!(
            r,
            Ok(McpRequest::ToolCall {
                id: Some(json!(7)),
                name: "create-ami".into(),
                arguments: Some(json!({"a": {"b": [1]}})),
                confirm: Confirming::default(),
                task: false,
            })
        );
        let no_args = call(
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"t","_meta":{"progressToken":1}}}"#,
        );
        assert_eq!(
            no_args,
            Ok(McpRequest::ToolCall {
                id: Some(json!("x")),
                name: "t".into(),
                arguments: None,
                confirm: Confirming::default(),
                task: false,
            })
        );
    }

    #[test]
    fn other_methods_pass() {
        let r = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(
            r,
            Ok(McpRequest::Other {
                id: Some(json!(1)),
                method: "tools/list".into()
            })
        );
        let n = call(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(
            n,
            Ok(McpRequest::Other {
                id: None,
                method: "notifications/initialized".into()
            })
        );
    }

    #[test]
    fn answers_to_the_server_pass() {
        let r = call(r#"{"jsonrpc":"2.0","id":3,"result":{"action":"accept"}}"#);
        assert_eq!(r, Ok(McpRequest::Response { id: Some(json!(3)) }));
        let e = call(r#"{"jsonrpc":"2.0","id":"s-1","error":{"code":-1,"message":"no"}}"#);
        assert_eq!(
            e,
            Ok(McpRequest::Response {
                id: Some(json!("s-1"))
            })
        );
    }

    #[test]
    fn refuses_what_could_be_read_two_ways() {
        let cases = [
            ("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"t\"}}]", INVALID_REQUEST, "batches"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","METHOD":"tools/call","params":{"name":"t"}}"#, INVALID_REQUEST, "only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"t"}}"#, INVALID_REQUEST, "duplicate"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","paramſ":{"name":"x"},"params":{"name":"t"}}"#, INVALID_REQUEST, "differ only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","paramſ":{"name":"t"}}"#, INVALID_REQUEST, "only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","\u0061rgument\u017f":{}}}"#, INVALID_REQUEST, "only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"amount":5,"Amount":5000}}}"#, INVALID_REQUEST, "differ only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"n":9007199254740993}}}"#, INVALID_REQUEST, "beyond 2^53"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tool\u017f/caLL","params":{"name":"t"}}"#, INVALID_REQUEST, "only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"t"}}"#, INVALID_REQUEST, "only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"TOOLS/LIST"}"#, INVALID_REQUEST, "differs from tools/list only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tool\u017f/list"}"#, INVALID_REQUEST, "differs from tools/list only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","Name":"u"}}"#, INVALID_REQUEST, "only by case"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["t"]}"#, INVALID_PARAMS, "params must be an object"),
            (r#"{"jsonrpc":"2.0","id":"","method":"tools/call ","params":0}"#, INVALID_PARAMS, "params must be an object"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[]}"#, INVALID_PARAMS, "params must be an object"),
            (r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":null}"#, INVALID_PARAMS, "params must be an object"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[1]}}"#, INVALID_PARAMS, "arguments must be an object"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":1,"a":2}}}"#, INVALID_REQUEST, "duplicate"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}"#, INVALID_PARAMS, "non-empty"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}"#, PARSE_ERROR, "not one JSON value"),
            (r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"t"}}"#, INVALID_REQUEST, "2.0"),
            (r#"{"jsonrpc":"2.0","id":{"x":1},"method":"tools/call","params":{"name":"t"}}"#, INVALID_REQUEST, "id must"),
            ("\"tools/call\"", INVALID_REQUEST, "JSON object"),
            (r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}"#, INVALID_REQUEST, "needs an id"),
            (r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"t"}}"#, INVALID_REQUEST, "id must be"),
            (r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#, INVALID_REQUEST, "id must be"),
            (r#"{"jsonrpc":"2.0","id":null,"result":{}}"#, INVALID_REQUEST, "id must be"),
            (r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#, INVALID_REQUEST, "not both"),
            (r#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"m"}}"#, INVALID_REQUEST, "integer code"),
            (r#"{"jsonrpc":"2.0","id":1,"error":"no"}"#, INVALID_REQUEST, "must be an object"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":0}}"#, INVALID_PARAMS, "_meta must be"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a","_meta":[]}}"#, INVALID_PARAMS, "_meta must be"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","_meta":"x"}}"#, INVALID_PARAMS, "_meta must be"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"_meta":null}}"#, INVALID_PARAMS, "_meta must be"),
            (r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":{"_meta":1}}"#, INVALID_PARAMS, "_meta must be"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"progressToken":1.5}}}"#, INVALID_PARAMS, "progressToken"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","result":{},"params":{"name":"t"}}"#, INVALID_REQUEST, "cannot also carry"),
            (r#"{"jsonrpc":"2.0","id":1,"Result":{},"method":"tools/list"}"#, INVALID_REQUEST, "only by case"),
            (r#"{"jsonrpc":"2.0","result":{}}"#, INVALID_REQUEST, "method must be"),
        ];
        for (body, code, needle) in cases {
            let refusal = call(body).expect_err(body);
            assert_eq!(refusal.code, code, "{body}: {refusal:?}");
            assert!(refusal.message.contains(needle), "{body}: {refusal:?}");
        }
        assert_eq!(parse_request(b"\xff\xfe").unwrap_err().code, PARSE_ERROR);
    }

    proptest::proptest! {
        /// Any bytes at all: a request or a refusal, never a panic.
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_request(&body);
        }

        /// A well-formed call built from random parts reads back as the same call.
        #[test]
        fn reads_back_what_was_written(name in "[a-z_.-]{1,20}", n in -(1i64 << 53) + 1..(1i64 << 53), key in "[a-z]{1,8}") {
            let body = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                              "params": {"name": name, "arguments": {key.clone(): n}}});
            let parsed = parse_request(body.to_string().as_bytes());
            proptest::prop_assert_eq!(parsed, Ok(McpRequest::ToolCall {
                id: Some(json!(n)), name: name.clone(), arguments: Some(json!({key: n})),
                confirm: Confirming::default(), task: false }));
        }
    }

    #[test]
    fn known_keys_are_given_with_their_folding() {
        let lists: [&[(&str, &str)]; 10] = [
            &REQUEST_KEYS,
            &CALL_KEYS,
            &TASK_KEYS,
            &RESOURCE_KEYS,
            &PROMPT_KEYS,
            &COMPLETE_KEYS,
            &REF_KEYS,
            &LISTEN_KEYS,
            &LISTENED_KEYS,
            &META_KEYS,
        ];
        for list in lists {
            for (key, fold) in list {
                assert_eq!(folded(key), *fold);
            }
            // Known keys fold apart, so a key spelled as one of them is no variant of another.
            let folds: std::collections::HashSet<_> = list.iter().map(|(_, f)| f).collect();
            assert_eq!(folds.len(), list.len(), "{list:?}");
        }
        // Likewise the methods MCP defines.
        let folds: std::collections::HashSet<_> = KNOWN_METHODS.iter().map(|m| folded(m)).collect();
        assert_eq!(folds.len(), KNOWN_METHODS.len());
        for variant in [
            "inputresponses",
            "INPUTRESPONSES",
            "requeststate",
            "RequestState",
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","{variant}":{{}}}}}}"#
            );
            let refusal = call(&body).expect_err(&body);
            assert!(refusal.message.contains("only by case"), "{refusal:?}");
        }
    }

    #[test]
    fn a_refusal_of_an_ambiguous_body_echoes_its_one_id() {
        let twin = call(
            r#"{"jsonrpc":"2.0","id":"r-1","method":"tools/call","params":{"name":"t","arguments":{"a":1,"A":2}}}"#,
        );
        assert_eq!(twin.unwrap_err().id, Some(json!("r-1")));
        let two_ids = call(r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call"}"#);
        assert_eq!(two_ids.unwrap_err().id, None);
        assert_eq!(
            readable_id(br#"{"id": 5, "x": [1, {"y": 2}]}"#),
            Some(json!(5))
        );
        assert_eq!(readable_id(br#"{"id": 1.5}"#), None);
        assert_eq!(readable_id(br#"{"id": 5"#), None);
    }

    #[test]
    fn a_refusal_echoes_the_id_when_it_was_readable() {
        let r =
            call(r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":["t"]}"#).unwrap_err();
        assert_eq!(r.id, Some(json!(42)));
    }

    #[test]
    fn the_trace_context_in_meta_is_kept_as_sent_and_never_changes_what_is_asked() {
        let traced = |meta: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","_meta":{meta}}}}}"#
            );
            let parsed = parse_message(body.as_bytes()).expect(&body);
            assert!(matches!(parsed.request, McpRequest::ToolCall { ref name, .. } if name == "t"));
            parsed.trace
        };
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let both = traced(&format!(r#"{{"traceparent":"{tp}","tracestate":"a=1"}}"#)).unwrap();
        assert_eq!(
            (both.traceparent.as_str(), both.tracestate.as_deref()),
            (tp, Some("a=1"))
        );
        // Unchecked here: the span's opener reads it (and starts a new trace if it must).
        assert_eq!(traced(r#"{"traceparent":"x"}"#).unwrap().traceparent, "x");
        for none in [
            r#"{}"#,
            r#"{"traceparent":1}"#,
            r#"{"traceparent":null,"tracestate":"a=1"}"#,
            r#"{"tracestate":"a=1"}"#,
        ] {
            assert_eq!(traced(none), None, "{none}");
        }
        let long = "0".repeat(MAX_TRACEPARENT_BYTES + 1);
        assert_eq!(traced(&format!(r#"{{"traceparent":"{long}"}}"#)), None);
        let state = "a".repeat(MAX_TRACESTATE_BYTES + 1);
        let cut = traced(&format!(
            r#"{{"traceparent":"{tp}","tracestate":"{state}"}}"#
        ));
        assert_eq!(cut.unwrap().tracestate, None);
        // Read in params of ExtMCP too.
        let params = format!(r#"{{"name":"t","_meta":{{"traceparent":"{tp}"}}}}"#);
        let ext = parse_params_related("tools/call", Some(params.as_bytes())).unwrap();
        assert_eq!(ext.trace.unwrap().traceparent, tp);
    }

    #[test]
    fn a_trace_key_spelled_another_way_by_case_is_refused() {
        for key in ["TraceParent", "TRACESTATE", "traceParent"] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","_meta":{{"{key}":"x"}}}}}}"#
            );
            let refusal = parse_message(body.as_bytes()).expect_err(&body);
            assert!(refusal.message.contains("only by case"), "{refusal:?}");
        }
    }
}
