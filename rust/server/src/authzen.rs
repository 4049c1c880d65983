//! The OpenID AuthZEN Authorization API 1.0 over the engine: an Access Evaluation (or a
//! batch of them) is decided as the MCP request it names, by the same gate Envoy's
//! `Check` goes through ([`toolgate_core::engine::gate`]), so every answer is the one the
//! other paths give.
//!
//! The mapping follows the COAZ-MCP binding's defaults:
//! - The subject is the principal the caller (a policy enforcement point that verified the
//!   client's token) names: the grant, as a verified identity, `TYPE:ID` (AuthZEN scopes an
//!   id to its type). `subject.properties` that are
//!   strings are the subject's attributes; `context.agent` the agent, `context.session` the
//!   session, `context.server` the policy's server. Nothing in the MCP params names the
//!   subject.
//! - An `action.name` that is an MCP method (it has a `/`, or is `initialize` or `ping`) is
//!   that method: `context.params` its params (the binding's `$params`), the resource its
//!   target (`tool`, `prompt`, `resource` or `task` by its `id`; `mcp_server` for the rest).
//!   A target named twice, differently (`resource.id` and `params.name`), is refused.
//! - Any other `action.name` is decided as a call of the tool of that name (a COAZ declared
//!   mapping's action), its arguments `{"action", "resource", "context"}` as sent: a
//!   policy reads `args.resource.properties.ownerID`.
//!
//! An allowed call that reserved limits its rule gives back on failure carries a release
//! token in its context (`context.toolgate.release`): the enforcement point gives it back
//! through [`AuthZen::release`] when the call failed. A list's answer is the caller's once
//! filtered ([`AuthZen::filter`]), which its allow says.

use crate::ext_mcp::visibility_in;
use crate::spans::{self, DecisionSpan, Spans};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use toolgate_core::counter::Peer;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::gate::{self, Follow, Gate, HttpCall};
use toolgate_core::engine::listing::{filter_result, ListReport};
use toolgate_core::json::strict;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::reply::details;
use toolgate_core::observing::stats::Api;
use toolgate_core::{Decision, Engine, Subject};

/// Most evaluations one request may batch, and the most bytes of MCP requests they may make.
pub const MAX_EVALUATIONS: usize = 256;
pub const MAX_BATCH_BYTES: usize = 2 << 20;
/// The most of a client's text an error quotes, and of a reason an answer carries.
const QUOTED_CHARS: usize = 64;
const REASON_BYTES: usize = 1024;
/// Most subject properties read as attributes, and the longest one read.
const MAX_ATTRIBUTES: usize = 32;
const MAX_ATTRIBUTE_BYTES: usize = 1024;
/// Where a list's answer is filtered for its caller.
pub const FILTER_PATH: &str = "/toolgate/v1/filter";
/// The context key the release token, the decision's details and reasons go under.
pub const CONTEXT_KEY: &str = "toolgate";

/// A request the API cannot take: answered 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// What is needed beside the engine: the key release tokens are signed with, and where
/// decisions' spans go.
pub struct AuthZen {
    release_key: Hmac<Sha256>,
    spans: Option<std::sync::Arc<Spans>>,
}

impl AuthZen {
    /// With a fresh random key: a release token is given back to this process only.
    pub fn new(spans: Option<std::sync::Arc<Spans>>) -> AuthZen {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the system's random source works");
        AuthZen {
            release_key: Hmac::new_from_slice(&key).expect("HMAC takes any key length"),
            spans,
        }
    }

    /// An opaque token of hex digits: the reservation, whether tool errors give it back, and
    /// the tag over both.
    fn sign(&self, reservation: u64, tool_errors: bool) -> String {
        let mut named = [0u8; 9];
        named[..8].copy_from_slice(&reservation.to_be_bytes());
        named[8] = u8::from(tool_errors);
        let mut mac = self.release_key.clone();
        mac.update(&named);
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        let mut token = toolgate_core::hex::lower(&named);
        toolgate_core::hex::push(&mut token, &tag[..16]);
        token
    }

    /// The reservation a token this process signed names, and whether its rule gives it
    /// back on a tool's error result too.
    fn verify(&self, token: &str) -> Option<(u64, bool)> {
        if token.len() != 50 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let reservation = u64::from_str_radix(&token[..16], 16).ok()?;
        let tool_errors = match &token[16..18] {
            "00" => false,
            "01" => true,
            _ => return None,
        };
        let expected = self.sign(reservation, tool_errors);
        // Compared in full whatever the first difference (lower-case, as signed).
        let same = expected
            .bytes()
            .zip(token.bytes())
            .fold(true, |same, (a, b)| same & (a == b));
        same.then_some((reservation, tool_errors))
    }

    /// `POST /access/v1/evaluation`.
    pub fn evaluation(
        &self,
        engine: &Engine,
        body: &[u8],
        transport: &dyn spans::Headers,
    ) -> Result<Value, BadRequest> {
        let request = read_object(body)?;
        only_keys(&request, PARTS, "an evaluation")?;
        let asked = Asked::read(&request, None)?;
        Ok(self.decide(engine, &asked, transport))
    }

    /// `POST /access/v1/evaluations`: each of `evaluations` with the request's own subject,
    /// action, resource and context as defaults (an entry's key replaces the default's),
    /// run as `options.evaluations_semantic` says. Without entries, one evaluation.
    pub fn evaluations(
        &self,
        engine: &Engine,
        body: &[u8],
        transport: &dyn spans::Headers,
    ) -> Result<Value, BadRequest> {
        let request = read_object(body)?;
        let batch = [PARTS, &["evaluations", "options"]].concat();
        only_keys(&request, &batch, "an evaluations request")?;
        let semantic = Semantic::read(request.get("options"))?;
        let entries = match request.get("evaluations") {
            None => &[][..],
            Some(Value::Array(entries)) => &entries[..],
            Some(_) => return Err(bad("evaluations is an array of evaluations".into())),
        };
        if entries.is_empty() {
            let asked = Asked::read(&request, None)?;
            return Ok(self.decide(engine, &asked, transport));
        }
        if entries.len() > MAX_EVALUATIONS {
            return Err(bad(format!(
                "at most {MAX_EVALUATIONS} evaluations in one request, got {}",
                entries.len()
            )));
        }
        // The defaults' shapes are checked once: a default no entry could use is the whole
        // request's error, not one repeated in every answer.
        check_defaults(&request)?;
        // Every entry read before any is decided, within one budget of the MCP requests they
        // make: defaults repeated in every entry cannot multiply the work past it.
        let mut read = Vec::with_capacity(entries.len());
        let mut bytes = 0;
        for entry in entries {
            let asked = match entry {
                Value::Object(entry) => only_keys(entry, PARTS, "an evaluation")
                    .and_then(|()| Asked::read(&request, Some(entry))),
                _ => Err(bad("an evaluation is an object".into())),
            };
            bytes += asked.as_ref().map_or(0, Asked::bytes);
            if bytes > MAX_BATCH_BYTES {
                return Err(bad(format!(
                    "the evaluations make more than {} MiB of MCP requests",
                    MAX_BATCH_BYTES >> 20
                )));
            }
            read.push(asked);
        }
        let mut answers = Vec::with_capacity(read.len());
        for asked in read {
            let answer = match asked {
                Ok(asked) => self.decide(engine, &asked, transport),
                Err(BadRequest(why)) => refused_entry(&why),
            };
            let decision = answer["decision"] == Value::Bool(true);
            answers.push(answer);
            if semantic.stops_at(decision) {
                break;
            }
        }
        Ok(json!({ "evaluations": answers }))
    }

    /// `POST /toolgate/v1/release` `{"release": TOKEN, "failure": "error" | "tool_error"}`:
    /// the call an allowed evaluation let through failed; its limits are given back when its
    /// rule says they are for that failure (`release_on_failure`).
    pub fn release(&self, engine: &Engine, body: &[u8]) -> Result<Value, BadRequest> {
        let request = read_object(body)?;
        only_keys(&request, &["release", "failure"], "a release")?;
        let token = match request.get("release") {
            Some(Value::String(t)) => t,
            _ => {
                return Err(bad(
                    "release is the token an evaluation's context gave".into()
                ))
            }
        };
        let tool_error = match request.get("failure") {
            Some(Value::String(f)) if f == "error" => false,
            Some(Value::String(f)) if f == "tool_error" => true,
            _ => return Err(bad("failure is \"error\" or \"tool_error\"".into())),
        };
        let Some((reservation, tool_errors)) = self.verify(token) else {
            return Err(bad("not a release token this sidecar gave".into()));
        };
        let released = (!tool_error || tool_errors) && engine.release(reservation);
        Ok(json!({ "released": released }))
    }

    /// `POST /toolgate/v1/filter` `{"subject", "context"?, "method", "result"}`: a list's
    /// answer (`tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`,
    /// `tasks/list`) as the caller may see it, filtered as Envoy's and agentgateway's paths
    /// filter it. A result that cannot be read one way is refused (400): not to be forwarded.
    pub fn filter(&self, engine: &Engine, body: &[u8]) -> Result<Value, BadRequest> {
        let request = read_object(body)?;
        only_keys(
            &request,
            &["subject", "context", "method", "result"],
            "a filter",
        )?;
        let listed = match request.get("method") {
            Some(Value::String(m)) => Listed::of_method(m),
            _ => None,
        }
        .ok_or_else(|| bad("method is the list method whose result this is".into()))?;
        let (name, allowed, required) = ENTITIES[0];
        let subject = object(name, request.get(name), allowed, required)?;
        let grant = principal(subject)?;
        let context = match request.get("context") {
            None => None,
            Some(Value::Object(c)) => Some(c),
            Some(_) => return Err(bad("context is an object".into())),
        };
        let attributes = attributes(subject)?;
        let server = context_text(context, "server")?;
        let subject = Subject {
            grant: Some(&grant),
            session: context_text(context, "session")?,
            agent: context_text(context, "agent")?,
            attributes: &attributes,
            grant_verified: true,
            peer: Peer::UNKNOWN,
        };
        let mut result = match request.get("result") {
            Some(Value::Object(result)) => result.clone(),
            _ => return Err(bad("result is the list's JSON-RPC result object".into())),
        };
        let policy = engine.policy();
        let servers: Vec<String> = server.into_iter().map(str::to_owned).collect();
        let visible = |listed, name: &str, entry: &ListedTool<'_>| {
            visibility_in(engine, &policy, &servers, listed, name, entry, subject)
        };
        let mut report = ListReport::default();
        if let Err(why) = filter_result(listed, &mut result, visible, &mut report) {
            engine.stats().count_list(0, true);
            return Err(bad(format!("the result cannot be filtered: {why}")));
        }
        engine.stats().count_list(0, false);
        engine.stats().count_list_removed(report.removed);
        Ok(json!({ "result": result }))
    }

    /// One evaluation's answer: `{"decision": bool, "context"?}`.
    fn decide(&self, engine: &Engine, asked: &Asked<'_>, transport: &dyn spans::Headers) -> Value {
        let Some(body) = &asked.body else {
            // The protocol's plumbing passes undecided, as the binding says.
            return json!({ "decision": true });
        };
        let call = HttpCall {
            http_method: "POST",
            body,
            truncated: false,
            server: asked.server,
            subject: Subject {
                grant: Some(&asked.grant),
                session: asked.session,
                agent: asked.agent,
                attributes: &asked.attributes,
                grant_verified: true,
                peer: Peer::UNKNOWN,
            },
            mcp_method: None,
            mcp_name: None,
            resumes: false,
            mcp_session: None,
            api: Api::AuthZen,
        };
        let started = std::time::Instant::now();
        let gate = match &self.spans {
            None => gate::check(engine, &call),
            Some(spans) => {
                let span = DecisionSpan::new(spans, &[transport]);
                let gate = gate::check_traced(engine, &call, &span);
                span.finish(gate.decision());
                gate
            }
        };
        engine
            .stats()
            .record_duration(started.elapsed().as_nanos() as u64);
        self.answer(&gate)
    }

    fn answer(&self, gate: &Gate) -> Value {
        match gate {
            // A list's answer is the caller's only once filtered: said, with where.
            Gate::Forward {
                decision: None,
                follow: Follow::List { .. },
                ..
            } => json!({ "decision": true, "context": { CONTEXT_KEY: { "filter": FILTER_PATH } } }),
            Gate::Forward { decision: None, .. } => json!({ "decision": true }),
            Gate::Forward {
                decision: Some(d),
                follow,
                ..
            } => {
                let mut told = told(d);
                if let Follow::CallOutcome {
                    reservation: Some(r),
                    tool_errors,
                    ..
                } = follow
                {
                    told.insert("release".into(), self.sign(*r, *tool_errors).into());
                }
                json!({ "decision": true, "context": { CONTEXT_KEY: told } })
            }
            Gate::Answer {
                decision: Some(d), ..
            } => denied(d),
            Gate::Answer { decision: None, .. } => refused_entry("the request was refused"),
        }
    }
}

/// A denial's answer: the reason for the user, the decision's details, and, for a call
/// waiting on a person's approval, the access request profile's requestable denial (sent
/// again once approved, it runs).
fn denied(d: &Decision) -> Value {
    let reason = clip(d.reason(), REASON_BYTES);
    let mut context = Map::new();
    context.insert("reason_user".into(), json!({ "en": reason }));
    if let Some(id) = d.approval {
        context.insert(
            "access_request".into(),
            json!({ "template": "toolgate_approval", "approval_id": id.to_string(),
                    "display": { "title": reason } }),
        );
    }
    context.insert(CONTEXT_KEY.into(), Value::Object(told(d)));
    json!({ "decision": false, "context": context })
}

/// The decision's details, its reason (which may quote what the client sent) cut to
/// [`REASON_BYTES`].
fn told(d: &Decision) -> Map<String, Value> {
    let mut told = details(d);
    told.insert("reason".into(), clip(d.reason(), REASON_BYTES).into());
    told
}

/// `text` cut to at most `max` bytes, at a character's boundary, `…` marking a cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A client's text as an error quotes it: at most [`QUOTED_CHARS`] characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}…", &text[..end]),
    }
}

/// The request's own subject, action, resource and context, as entries would take them.
fn check_defaults(request: &Map<String, Value>) -> Result<(), BadRequest> {
    for (part, allowed, required) in ENTITIES {
        if request.contains_key(part) {
            object(part, request.get(part), allowed, required)?;
        }
    }
    match request.get("context") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(bad("context is an object".into())),
    }
}

/// The principal a subject names: its type and id, `TYPE:ID` (AuthZEN 1.0 scopes an id to
/// its type).
fn principal(subject: &Map<String, Value>) -> Result<String, BadRequest> {
    let kind = text(subject, "type");
    if kind.len() > QUOTED_CHARS
        || !kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(bad(
            "subject.type is a word of letters, digits, '_', '.' and '-' (at most 64)".into(),
        ));
    }
    Ok(format!("{kind}:{}", text(subject, "id")))
}

/// A subject's properties that are strings: its attributes.
fn attributes(subject: &Map<String, Value>) -> Result<Vec<(&str, &str)>, BadRequest> {
    let mut attributes = Vec::new();
    if let Some(Value::Object(properties)) = subject.get("properties") {
        for (key, value) in properties {
            let Value::String(value) = value else {
                continue;
            };
            if attributes.len() == MAX_ATTRIBUTES {
                return Err(bad(format!(
                    "at most {MAX_ATTRIBUTES} subject properties are read"
                )));
            }
            if key.len() + value.len() > MAX_ATTRIBUTE_BYTES {
                return Err(bad(format!(
                    "a subject property is at most {MAX_ATTRIBUTE_BYTES} bytes"
                )));
            }
            attributes.push((key.as_str(), value.as_str()));
        }
    }
    Ok(attributes)
}

/// The entities of an evaluation: their keys, and those required.
type Entity = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);
const ENTITIES: [Entity; 3] = [
    ("subject", &["type", "id", "properties"], &["type", "id"]),
    ("action", &["name", "properties"], &["name"]),
    ("resource", &["type", "id", "properties"], &["type", "id"]),
];

/// An evaluation of a batch that cannot be made: denied, with why (the API's per-entry
/// error).
fn refused_entry(why: &str) -> Value {
    json!({ "decision": false, "context": { "error": { "status": 400, "message": why } } })
}

fn bad(why: String) -> BadRequest {
    BadRequest(why)
}

/// The parts of one evaluation.
const PARTS: &[&str] = &["subject", "action", "resource", "context"];

fn only_keys(object: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), BadRequest> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(bad(format!("{what} has no key {}", quoted(key)))),
        None => Ok(()),
    }
}

/// The request body: one JSON object, read one way.
fn read_object(body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    match strict::parse(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(bad("the request is a JSON object".into())),
        Err(e) => Err(bad(format!("the request cannot be read: {e}"))),
    }
}

/// How a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

impl Semantic {
    fn read(options: Option<&Value>) -> Result<Semantic, BadRequest> {
        let options = match options {
            None => return Ok(Semantic::ExecuteAll),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(bad("options is an object".into())),
        };
        match options.get("evaluations_semantic") {
            None => Ok(Semantic::ExecuteAll),
            Some(Value::String(s)) if s == "execute_all" => Ok(Semantic::ExecuteAll),
            Some(Value::String(s)) if s == "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
            Some(Value::String(s)) if s == "permit_on_first_permit" => {
                Ok(Semantic::PermitOnFirstPermit)
            }
            _ => Err(bad(
                "evaluations_semantic is execute_all, deny_on_first_deny or \
                 permit_on_first_permit"
                    .into(),
            )),
        }
    }

    fn stops_at(self, decision: bool) -> bool {
        match self {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !decision,
            Semantic::PermitOnFirstPermit => decision,
        }
    }
}

/// One evaluation, read: who asks, and the MCP message it is decided as (`None`: the
/// protocol's plumbing, which passes).
#[derive(Debug)]
struct Asked<'a> {
    /// The principal: `TYPE:ID`.
    grant: String,
    attributes: Vec<(&'a str, &'a str)>,
    agent: Option<&'a str>,
    session: Option<&'a str>,
    server: Option<&'a str>,
    body: Option<Vec<u8>>,
}

impl Asked<'_> {
    /// The bytes of the MCP request it is decided as.
    fn bytes(&self) -> usize {
        self.body.as_ref().map_or(0, Vec::len)
    }
}

/// The part of an evaluation named `key`: the entry's, else the request's default.
fn part<'a>(
    key: &str,
    defaults: &'a Map<String, Value>,
    entry: Option<&'a Map<String, Value>>,
) -> Option<&'a Value> {
    entry.and_then(|e| e.get(key)).or_else(|| defaults.get(key))
}

/// A part that must be an object with only `allowed` keys, the strings of `required`
/// non-empty.
fn object<'a>(
    what: &str,
    value: Option<&'a Value>,
    allowed: &[&str],
    required: &[&str],
) -> Result<&'a Map<String, Value>, BadRequest> {
    let Some(Value::Object(o)) = value else {
        return Err(bad(format!("{what} is a required object")));
    };
    if let Some(key) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "{what} has no key {} (its own attributes go under properties)",
            quoted(key)
        )));
    }
    for key in required {
        match o.get(*key) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(bad(format!("{what}.{key} is a required non-empty string"))),
        }
    }
    if !matches!(o.get("properties"), None | Some(Value::Object(_))) {
        return Err(bad(format!("{what}.properties is an object")));
    }
    Ok(o)
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> &'a str {
    o.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A context entry that, when given, is a string.
fn context_text<'a>(
    context: Option<&'a Map<String, Value>>,
    key: &str,
) -> Result<Option<&'a str>, BadRequest> {
    match context.and_then(|c| c.get(key)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("context.{key} is a string"))),
    }
}

/// Whether an action names an MCP method rather than a tool.
fn is_method(action: &str) -> bool {
    action.contains('/') || action == "initialize" || action == "ping"
}

/// The resource type a method's target has, and the params key that names it.
fn target(method: &str) -> (&'static [&'static str], Option<&'static str>) {
    match method {
        "tools/call" => (&["tool"], Some("name")),
        "prompts/get" => (&["prompt"], Some("name")),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            (&["resource"], Some("uri"))
        }
        "tasks/get" | "tasks/result" | "tasks/cancel" => (&["task"], Some("taskId")),
        // Its target is in params.ref, as the binding maps it.
        "completion/complete" => (&["prompt", "resource"], None),
        _ => (&["mcp_server"], None),
    }
}

impl<'a> Asked<'a> {
    fn read(
        defaults: &'a Map<String, Value>,
        entry: Option<&'a Map<String, Value>>,
    ) -> Result<Asked<'a>, BadRequest> {
        let [subject, action, resource] = ENTITIES.map(|(name, allowed, required)| {
            object(name, part(name, defaults, entry), allowed, required)
        });
        let (subject, action, resource) = (subject?, action?, resource?);
        let grant = principal(subject)?;
        let context = match part("context", defaults, entry) {
            None => None,
            Some(Value::Object(c)) => Some(c),
            Some(_) => return Err(bad("context is an object".into())),
        };
        let attributes = attributes(subject)?;
        let action_name = text(action, "name");
        let body = if is_method(action_name) {
            method_body(action_name, resource, context)?
        } else {
            tool_body(action_name, action, resource, context)
        };
        Ok(Asked {
            grant,
            attributes,
            agent: context_text(context, "agent")?,
            session: context_text(context, "session")?,
            server: context_text(context, "server")?,
            body,
        })
    }
}

/// The JSON-RPC request an MCP method's evaluation is decided as; `None` for the plumbing.
fn method_body(
    method: &str,
    resource: &Map<String, Value>,
    context: Option<&Map<String, Value>>,
) -> Result<Option<Vec<u8>>, BadRequest> {
    if method == "ping" || method.starts_with("notifications/") {
        return Ok(None);
    }
    let (types, named_by) = target(method);
    let kind = text(resource, "type");
    if !types.contains(&kind) {
        return Err(bad(format!(
            "a {} evaluation's resource.type is {}, not {}",
            quoted(method),
            types.join(" or "),
            quoted(kind)
        )));
    }
    let mut params = match context.and_then(|c| c.get("params")) {
        None => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return Err(bad(
                "context.params is an object: the MCP request's params".into()
            ))
        }
    };
    if let Some(key) = named_by {
        let id = text(resource, "id");
        match params.get(key) {
            None => {
                params.insert(key.into(), id.into());
            }
            Some(Value::String(named)) if named == id => {}
            Some(_) => {
                return Err(bad(format!(
                    "resource.id and context.params.{key} name different targets"
                )))
            }
        }
    }
    Ok(Some(message(method, Value::Object(params))))
}

/// The `tools/call` an action that is no MCP method is decided as.
fn tool_body(
    name: &str,
    action: &Map<String, Value>,
    resource: &Map<String, Value>,
    context: Option<&Map<String, Value>>,
) -> Option<Vec<u8>> {
    let arguments = json!({
        "action": action,
        "resource": resource,
        "context": context.cloned().unwrap_or_default(),
    });
    Some(message(
        "tools/call",
        json!({ "name": name, "arguments": arguments }),
    ))
}

fn message(method: &str, params: Value) -> Vec<u8> {
    let message = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    serde_json::to_vec(&message).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(body: Value) -> Result<Asked<'static>, BadRequest> {
        let body: &'static Map<String, Value> = Box::leak(Box::new(match body {
            Value::Object(o) => o,
            _ => unreachable!(),
        }));
        only_keys(body, PARTS, "an evaluation")?;
        Asked::read(body, None)
    }

    fn message_of(a: &Asked<'_>) -> Value {
        serde_json::from_slice(a.body.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn a_tool_call_evaluation_is_the_call_its_resource_names_with_its_params() {
        let a = asked(json!({
            "subject": {"type": "identity", "id": "alice", "properties": {"team": "ops", "n": 1}},
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "id": "run"},
            "context": {"agent": "bot", "params": {"arguments": {"cmd": "ls"}}}
        }))
        .unwrap();
        assert_eq!(a.grant, "identity:alice");
        assert_eq!(a.attributes, [("team", "ops")]);
        assert_eq!(a.agent, Some("bot"));
        assert_eq!(
            message_of(&a)["params"],
            json!({"arguments": {"cmd": "ls"}, "name": "run"})
        );
    }

    #[test]
    fn a_target_named_twice_differently_or_of_the_wrong_type_is_refused() {
        for (resource, params) in [
            (
                json!({"type": "tool", "id": "run"}),
                json!({"name": "other"}),
            ),
            (json!({"type": "tool", "id": "run"}), json!({"name": 1})),
            (json!({"type": "prompt", "id": "run"}), json!({})),
        ] {
            let e = asked(json!({
                "subject": {"type": "identity", "id": "alice"},
                "action": {"name": "tools/call"},
                "resource": resource,
                "context": {"params": params}
            }));
            assert!(e.is_err(), "{resource} {params}");
        }
    }

    #[test]
    fn another_action_is_a_call_of_the_tool_it_names() {
        let a = asked(json!({
            "subject": {"type": "user", "id": "morty"},
            "action": {"name": "can_update_todo"},
            "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "morty"}}
        }))
        .unwrap();
        let m = message_of(&a);
        assert_eq!(m["params"]["name"], "can_update_todo");
        assert_eq!(
            m["params"]["arguments"]["resource"]["properties"]["ownerID"],
            "morty"
        );
    }

    #[test]
    fn malformed_parts_are_refused_with_what_is_wrong() {
        let ok = json!({
            "subject": {"type": "user", "id": "a"},
            "action": {"name": "x"},
            "resource": {"type": "t", "id": "1"}
        });
        for (pointer, value, why) in [
            ("/subject/id", json!(""), "subject.id"),
            ("/subject/id", json!(7), "subject.id"),
            ("/subject/identity", json!("x"), "no key \"identity\""),
            ("/action/name", Value::Null, "action.name"),
            ("/resource/ownerID", json!("x"), "no key \"ownerID\""),
            ("/resource/properties", json!([]), "properties is an object"),
            ("/context", json!("x"), "context is an object"),
            ("/extra", json!(1), "no key \"extra\""),
        ] {
            let mut body = ok.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut body
            } else {
                body.pointer_mut(parent).unwrap()
            };
            target[key] = value;
            let e = asked(body).unwrap_err();
            assert!(e.0.contains(why), "{pointer}: {}", e.0);
        }
    }

    #[test]
    fn a_release_token_is_this_process_s_own_and_names_its_reservation_and_mode() {
        let a = AuthZen::new(None);
        let token = a.sign(42, true);
        assert_eq!(token.len(), 50);
        assert_eq!(a.verify(&token), Some((42, true)));
        assert_eq!(a.verify(&a.sign(7, false)), Some((7, false)));
        let mut flipped = token.clone();
        flipped.replace_range(16..18, "00");
        assert_eq!(a.verify(&flipped), None);
        assert_eq!(a.verify(&token.to_uppercase()), None);
        assert_eq!(AuthZen::new(None).verify(&token), None);
        for bad in [
            "",
            "42",
            &token[..49],
            &format!("{token}0"),
            &"z".repeat(50),
        ] {
            assert_eq!(a.verify(bad), None, "{bad}");
        }
    }
}
