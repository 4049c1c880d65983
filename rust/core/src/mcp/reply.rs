//! The answers a proxy sends back in place of the upstream server's.
//!
//! A policy denial is a tool *result* with `isError: true`: MCP clients show it to the model,
//! which can adapt, where some clients fail on a JSON-RPC error they did not expect. The
//! machine-readable details sit under `_meta` (key [`META_KEY`]) so a client can tell a
//! denial from a tool failure. A hidden tool is reported exactly as an unknown one would be,
//! and a body that cannot be read is a JSON-RPC protocol error.

use super::request::{Refusal, INVALID_PARAMS};
use crate::asking::confirmation::FIELD;
use crate::decision::{Code, Confirmation, Decision};
use crate::kind::Kind;
use serde_json::{json, Map, Value};

/// The `_meta` key under which a denial's details travel.
pub const META_KEY: &str = "toolgate/decision";

/// An HTTP answer: status, headers and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

fn json_reply(status: u16, mut headers: Vec<(&'static str, String)>, message: &Value) -> Reply {
    headers.push(("content-type", "application/json".to_owned()));
    Reply {
        status,
        headers,
        body: serde_json::to_vec(message).expect("JSON values always serialize"),
    }
}

fn id_or_null(id: &Option<Value>) -> Value {
    id.clone().unwrap_or(Value::Null)
}

/// The names of what a gateway is told of a decision, in [`told`]'s order.
pub const TOLD: [&str; 4] = ["verdict", "code", "rule", "revision"];

/// What a gateway is told of a decision for its logs and rules (Envoy's dynamic metadata or
/// filter state, agentgateway's result metadata): verdict, code, rule and revision, as the
/// decision log writes them.
pub fn told(d: &Decision) -> [(&'static str, &str); 4] {
    let [verdict, code, rule, revision] = TOLD;
    [
        (verdict, d.verdict.as_str()),
        (code, d.code.as_str()),
        (rule, d.rule()),
        (revision, d.revision()),
    ]
}

/// A decision's details, as a program reads them: verdict, code, reason, rule, retry-after
/// for a limit, approval id for an approval, and the policy's revision.
pub fn details(d: &Decision) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("verdict".into(), d.verdict.as_str().into());
    details.insert("code".into(), d.code.as_str().into());
    details.insert("reason".into(), d.reason().into());
    details.insert("rule".into(), d.rule().into());
    if let Some(ms) = d.retry_after_ms {
        details.insert("retry_after_ms".into(), ms.into());
    }
    if let Some(id) = d.approval {
        details.insert("approval_id".into(), id.to_string().into());
    }
    details.insert("revision".into(), d.revision().into());
    details
}

/// A denied call: a tool result with `isError`, the reason as text, the details in `_meta`.
/// `resultType` is MCP 2026-07-28's (its clients refuse a result without it; older ones
/// ignore it).
pub fn denied(id: &Option<Value>, d: &Decision) -> Reply {
    let details = details(d);
    let message = json!({
        "jsonrpc": "2.0",
        "id": id_or_null(id),
        "result": {
            "resultType": "complete",
            "content": [{"type": "text", "text": d.reason()}],
            "isError": true,
            "_meta": {META_KEY: details},
        },
    });
    json_reply(200, decision_headers(d), &message)
}

/// A call its user must confirm: MCP 2026-07-28's input-required result, asking the client
/// to put a yes/no form to the user. The form's key is toolgate's token (the answer comes
/// back under it); there is no `requestState`, which the server would refuse when the
/// confirmed call reaches it.
pub fn input_required(id: &Option<Value>, d: &Decision) -> Reply {
    let Some(Confirmation::Asked { token, question }) = d.confirmation.as_deref() else {
        return denied(id, d);
    };
    let form = json!({
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": question,
            "requestedSchema": {
                "type": "object",
                "properties": {FIELD: {"type": "boolean", "title": "Allow this call?"}},
                "required": [FIELD],
            },
        },
    });
    let mut requests = Map::new();
    requests.insert(token.clone(), form);
    let message = json!({
        "jsonrpc": "2.0",
        "id": id_or_null(id),
        "result": {
            "resultType": "input_required",
            "inputRequests": requests,
            "_meta": {META_KEY: details(d)},
        },
    });
    json_reply(200, decision_headers(d), &message)
}

/// A hidden tool, answered as the protocol answers a tool that does not exist.
pub fn unknown_tool(id: &Option<Value>, name: &str) -> Reply {
    unknown(id, Kind::Tool, name)
}

/// A hidden tool, resource or prompt, answered as the protocol answers one that does not
/// exist: an invalid-params error for a tool or a prompt, "resource not found" (-32002) for
/// a resource.
pub fn unknown(id: &Option<Value>, kind: Kind, name: &str) -> Reply {
    let (code, message) = unknown_error(kind, name);
    let message = json!({
        "jsonrpc": "2.0",
        "id": id_or_null(id),
        "error": {"code": code, "message": message},
    });
    json_reply(200, Vec::new(), &message)
}

/// The JSON-RPC error code and message of a `kind` named `name` that does not exist.
pub fn unknown_error(kind: Kind, name: &str) -> (i64, String) {
    match kind {
        Kind::Resource => (RESOURCE_NOT_FOUND, format!("Resource not found: {name}")),
        Kind::Prompt => (INVALID_PARAMS, format!("Unknown prompt: {name}")),
        // A task the caller did not create ([`crate::owners::tasks`]), as servers answer one that
        // does not exist.
        Kind::Method if crate::owners::tasks::METHODS.contains(&name) => {
            (INVALID_PARAMS, "Task not found".to_owned())
        }
        Kind::Method => (METHOD_NOT_FOUND, format!("Method not found: {name}")),
        Kind::Tool => (INVALID_PARAMS, format!("Unknown tool: {name}")),
    }
}

/// MCP's error for a resource that does not exist.
pub const RESOURCE_NOT_FOUND: i64 = -32002;
/// JSON-RPC's error for a method the server does not have.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The JSON-RPC error of a request the policy denied (what agentgateway answers for a
/// guardrail's refusal too): a request other than a tool's call has no result to carry it.
pub const DENIED: i64 = -32001;

/// A denied request for a resource, a prompt or a method: a JSON-RPC error whose message is
/// the reason and whose `data` holds the details, as a denied call's `_meta` does.
pub fn denied_request(id: &Option<Value>, d: &Decision) -> Reply {
    let message = json!({
        "jsonrpc": "2.0",
        "id": id_or_null(id),
        "error": {"code": DENIED, "message": d.reason(), "data": {META_KEY: details(d)}},
    });
    json_reply(200, decision_headers(d), &message)
}

/// A request in a session the caller does not hold ([`crate::owners::sessions`]): another caller's
/// is answered as MCP servers answer a session they do not know (HTTP 404, on which a client
/// starts a new session); one that could not be held or told, as a denied request (429, 503).
pub fn session_refused(d: &Decision) -> Reply {
    let (status, code, message, headers) = match d.code {
        Code::Hidden => (404, SESSION_NOT_FOUND, "Session not found", Vec::new()),
        Code::RateLimited => (429, DENIED, d.reason(), decision_headers(d)),
        _ => (503, DENIED, d.reason(), decision_headers(d)),
    };
    let message = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message},
    });
    json_reply(status, headers, &message)
}

/// The JSON-RPC code MCP's SDKs answer a session they do not know with.
pub const SESSION_NOT_FOUND: i64 = -32001;

/// A body refused before any decision: a JSON-RPC error. `status` is 400, or 413 when the
/// proxy cut the body.
pub fn refused(refusal: &Refusal, status: u16) -> Reply {
    let message = json!({
        "jsonrpc": "2.0",
        "id": id_or_null(&refusal.id),
        "error": {"code": refusal.code, "message": refusal.message},
    });
    let headers = vec![
        ("x-toolgate-verdict", "DENY".to_owned()),
        ("x-toolgate-code", Code::InvalidRequest.as_str().to_owned()),
    ];
    json_reply(status, headers, &message)
}

/// Headers on a forwarded call's response: the decision's code and rule, and whether it was
/// a shadow decision. Few on purpose: every allowed call pays for building them.
pub fn allowed_headers(d: &Decision) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("x-toolgate-code", d.code.as_str().to_owned()),
        ("x-toolgate-rule", d.rule().to_owned()),
    ];
    if d.shadow {
        headers.push(("x-toolgate-shadow", "true".to_owned()));
    }
    headers
}

/// Headers on a denial, for operators and proxies: the decision; when limits were touched,
/// `RateLimit-*` for the one that denied (or the tightest); `Retry-After` when rate-limited.
pub fn decision_headers(d: &Decision) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("x-toolgate-verdict", d.verdict.as_str().to_owned()),
        ("x-toolgate-code", d.code.as_str().to_owned()),
        ("x-toolgate-rule", d.rule().to_owned()),
    ];
    if d.shadow {
        headers.push(("x-toolgate-shadow", "true".to_owned()));
    }
    if let Some(limit) = d.reported_limit() {
        let info = d.limit_of(limit);
        let max = number(info.max);
        let window_s = info.window_ms.div_ceil(1000);
        headers.push(("ratelimit-limit", max.clone()));
        headers.push(("ratelimit-remaining", number(limit.remaining().floor())));
        headers.push((
            "ratelimit-reset",
            limit.reset_in_ms.div_ceil(1000).to_string(),
        ));
        headers.push(("ratelimit-policy", format!("{max};w={window_s}")));
    }
    if let Some(id) = d.approval {
        headers.push(("x-toolgate-approval", id.to_string()));
    }
    if d.code == Code::RateLimited {
        // No retry-after means the call can never fit; a day tells a client not to spin.
        let ms = d.retry_after_ms.unwrap_or(86_400_000);
        headers.push(("retry-after", ms.div_ceil(1000).max(1).to_string()));
    }
    headers
}

/// `30` for whole numbers, `12.5` otherwise.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}
