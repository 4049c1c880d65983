//! Envoy's external authorization API (`envoy.service.auth.v3.Authorization/Check`) on MCP
//! Streamable HTTP traffic.
//!
//! Envoy sends each request's headers and body (`with_request_body`, `pack_as_bytes`); the
//! core's MCP gate reads the JSON-RPC body and decides a `tools/call`, and when the call may
//! not run, its JSON-RPC answer goes back for Envoy to send instead of forwarding. Who is
//! calling comes from configured headers, or from the claims of a JWT that Envoy's
//! `jwt_authn` filter verified ([`SubjectSource`]).

use crate::credential::Refused;
use crate::ext_proc::{exchange_header, exchange_metadata, Caller, EXCHANGE_HEADER};
use crate::spans::{self, DecisionSpan, Spans};
use crate::subject::{single_header, AuthzConfig, CallerFacts, ReadSubject, MCP_SESSION_HEADER};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{address, HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer as EnvoyPeer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use envoy_types::pb::google::protobuf::{Struct, Value as ProtoValue};
use envoy_types::pb::google::rpc::Status;
use std::time::Instant;
use toolgate_core::counter::Peer;
use toolgate_core::engine::gate::{self, Gate, HttpCall, SpanOpener};
use toolgate_core::mcp::reply;
use toolgate_core::mcp::request::{readable_id, readable_tool, Refusal, INVALID_REQUEST};
use toolgate_core::observing::stats::Api;
use toolgate_core::trace_ids;
use toolgate_core::Kind;
use toolgate_core::{Decision, Engine, Subject, Undecidable};

/// The context extension (set per route in Envoy) naming the MCP server behind the route.
pub const SERVER_EXTENSION: &str = "server";
/// Envoy marks a body it cut at `max_request_bytes` (`allow_partial_message`) this way.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";
const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;

/// Answer one Check.
pub fn check(engine: &Engine, config: &AuthzConfig, request: &CheckRequest) -> CheckResponse {
    check_traced(engine, config, request, None)
}

/// [`check`], traced: `traced` is where spans go and the gRPC call's own metadata (Envoy's
/// trace context for its call to toolgate).
pub fn check_traced(
    engine: &Engine,
    config: &AuthzConfig,
    request: &CheckRequest,
    traced: Option<(&Spans, &dyn spans::Headers)>,
) -> CheckResponse {
    let started = Instant::now();
    let (gate, note) = gate(engine, config, request, traced);
    engine
        .stats()
        .record_duration(started.elapsed().as_nanos() as u64);
    response(gate, note)
}

/// The decision, and what it leaves in Envoy's dynamic metadata for the answer's filters.
fn gate(
    engine: &Engine,
    config: &AuthzConfig,
    request: &CheckRequest,
    traced: Option<(&Spans, &dyn spans::Headers)>,
) -> (Gate, Option<Struct>) {
    let attributes = request.attributes.as_ref();
    let default_http = HttpRequest::default();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .unwrap_or(&default_http);
    let headers = Headers(http);
    let span = traced.map(|(spans, call)| DecisionSpan::new(spans, &[&headers, call]));
    let (gate, note) = decide(engine, config, attributes, http, span.as_ref());
    if let Some(span) = span {
        span.finish(gate.decision());
    }
    (gate, note)
}

/// [`gate`]'s decision, under `span` if it is traced.
fn decide(
    engine: &Engine,
    config: &AuthzConfig,
    attributes: Option<&AttributeContext>,
    http: &HttpRequest,
    span: Option<&DecisionSpan<'_>>,
) -> (Gate, Option<Struct>) {
    let headers = Headers(http);
    let metadata = attributes.and_then(|a| a.metadata_context.as_ref());
    let source = attributes.and_then(|a| a.source.as_ref());
    let facts = CheckFacts {
        headers,
        metadata,
        peer: source.map_or(Peer::UNKNOWN, peer_of),
    };
    let extension = attributes
        .and_then(|a| a.context_extensions.get(SERVER_EXTENSION))
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let server_header = match extension {
        Some(_) => Ok(None),
        None => single_header(&facts, &config.server_header),
    };
    let server = extension.or(server_header.as_ref().ok().copied().flatten());
    let body = body_of(http);
    let read = ReadSubject::read(&facts, config);
    let subject = read.subject();
    // The protocol's session, whatever the limits count as one (`--session-from`): read as
    // its server reads it, from one header instance.
    let mcp_session = single_header(&facts, MCP_SESSION_HEADER);
    let refused = (server_header.as_ref().err())
        .or(mcp_session.as_ref().err())
        .map(|Refused(why)| why.as_str());
    if let Some(why) = read.refused().or(refused) {
        let credential = read.grant.is_err();
        let ids = span.and_then(|s| s.open(None));
        let gate = trace_ids::within(ids, || {
            unreadable_caller(
                engine,
                Api::ExtAuthz,
                why,
                credential,
                body,
                server,
                subject,
            )
        });
        return (gate, None);
    }
    let call = HttpCall {
        http_method: if http.method.is_empty() {
            "POST"
        } else {
            &http.method
        },
        body,
        truncated: was_cut(&headers, body, config.max_request_bytes),
        server,
        subject,
        mcp_method: headers.get("mcp-method"),
        mcp_name: headers.get("mcp-name"),
        resumes: headers.all("last-event-id").next().is_some(),
        mcp_session: mcp_session.ok().flatten(),
        api: Api::ExtAuthz,
    };
    let gate = match span {
        Some(span) => gate::check_traced(engine, &call, span),
        None => gate::check(engine, &call),
    };
    let note = match &gate {
        Gate::Forward { follow, .. } => {
            exchange_metadata(follow, || Caller::of(call.server, &call.subject))
        }
        Gate::Answer { .. } => None,
    };
    (gate, note)
}

/// The body, as bytes (`pack_as_bytes`) or as text.
fn body_of(http: &HttpRequest) -> &[u8] {
    if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        &http.raw_body
    }
}

/// The request's headers, as Envoy sends them: in `headers`, or with `encode_raw_headers`
/// in `header_map`.
#[derive(Clone, Copy)]
struct Headers<'a>(&'a HttpRequest);

impl spans::Headers for Headers<'_> {
    /// Sent once, or it names no parent.
    fn header(&self, name: &str) -> Option<&str> {
        let mut sent = self.all(name);
        match (sent.next(), sent.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }
}

impl<'a> Headers<'a> {
    /// The value of header `name`, when it is sent once; empty values count as absent.
    fn get(&self, name: &str) -> Option<&'a str> {
        self.all(name).next().filter(|v| !v.is_empty())
    }

    /// Every value of `name` (Envoy joins repeated headers into one value in `headers`, and
    /// lists each in `header_map`).
    fn all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        let joined = self.0.headers.get(name).map(String::as_str);
        let listed = self.0.header_map.iter().flat_map(|m| &m.headers);
        let raw = listed.filter(move |h| h.key == name).map(|h| {
            if h.raw_value.is_empty() {
                h.value.as_str()
            } else {
                // Not UTF-8: a value no header name could match, so it is refused.
                std::str::from_utf8(&h.raw_value).unwrap_or("\u{fffd}")
            }
        });
        joined.into_iter().chain(raw)
    }
}

/// What a Check request tells of its caller: its headers, and the payload of the token
/// Envoy's `jwt_authn` verified (in the `envoy.filters.http.jwt_authn` metadata).
struct CheckFacts<'a> {
    headers: Headers<'a>,
    metadata: Option<&'a Metadata>,
    peer: Peer,
}

/// The request's source as Envoy gives it: the downstream connection's peer. An IPv6
/// address's zone is left out; an address that is no IP address (a pipe, an internal
/// listener) is one opaque address, bounded like any other.
fn peer_of(source: &EnvoyPeer) -> Peer {
    match source.address.as_ref().and_then(|a| a.address.as_ref()) {
        None => Peer::UNKNOWN,
        Some(address::Address::SocketAddress(s)) => {
            let ip = s
                .address
                .split_once('%')
                .map_or(s.address.as_str(), |(ip, _)| ip);
            Peer::parse(ip).unwrap_or(Peer::OPAQUE)
        }
        Some(_) => Peer::OPAQUE,
    }
}

impl<'a> CallerFacts<'a> for CheckFacts<'a> {
    fn header_values(&self, name: &str) -> Vec<&'a str> {
        self.headers.all(name).collect()
    }

    fn verified_payload(&self, key: &str) -> Option<&'a Struct> {
        crate::credential::jwt_payload(self.metadata, key)
    }

    fn peer(&self) -> Peer {
        self.peer
    }
}

/// Envoy sent less than the whole body: it says so, the body is shorter than its declared
/// length, or there is no declared length and the body fills Envoy's buffer exactly (Envoy
/// then reports the body as whole even when more followed).
fn was_cut(headers: &Headers<'_>, body: &[u8], max_request_bytes: usize) -> bool {
    if headers
        .get(PARTIAL_BODY_HEADER)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return true;
    }
    match headers.get("content-length") {
        Some(declared) => declared.parse::<usize>() != Ok(body.len()),
        None => body.len() >= max_request_bytes,
    }
}

/// A caller that cannot be read one way (a credential that is not one, an identity header
/// sent twice): refused, never counted; logged with what is known of the caller and, when the
/// body reads as a call, its tool.
pub fn unreadable_caller(
    engine: &Engine,
    api: Api,
    why: &str,
    credential: bool,
    body: &[u8],
    server: Option<&str>,
    known: Subject<'_>,
) -> Gate {
    let refusal = Refusal {
        code: INVALID_REQUEST,
        message: why.into(),
        id: readable_id(body),
        ambiguity: None,
        tool: readable_tool(body),
    };
    // A credential that is not one is a 401 that says how to authenticate; another part of
    // the caller (a session, an agent, the server) sent two ways, a bad request.
    let mut reply = reply::refused(&refusal, if credential { 401 } else { 400 });
    if credential {
        reply.headers.push((
            "www-authenticate",
            "Bearer error=\"invalid_request\"".into(),
        ));
    }
    let request = Undecidable {
        reason: why,
        logged: None,
        kind: Kind::Tool,
        name: refusal.tool.as_deref(),
        server,
        subject: known,
    };
    Gate::Answer {
        decision: Some(engine.refuse_via(api, &request)),
        reply,
    }
}

fn response(gate: Gate, note: Option<Struct>) -> CheckResponse {
    let dynamic_metadata = with_decision(note, gate.decision());
    match gate {
        Gate::Forward {
            headers, follow, ..
        } => CheckResponse {
            status: Some(Status {
                code: GRPC_OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                // Always set, so a client cannot pick the route that processes answers.
                headers: header_options(vec![(
                    EXCHANGE_HEADER,
                    exchange_header(&follow).to_owned(),
                )]),
                response_headers_to_add: header_options(headers),
                ..Default::default()
            })),
            dynamic_metadata,
        },
        Gate::Answer { reply, decision } => CheckResponse {
            status: Some(Status {
                code: GRPC_PERMISSION_DENIED,
                message: decision.map_or_else(|| "refused".into(), |d| d.reason().to_owned()),
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(reply.status),
                }),
                headers: header_options(reply.headers),
                // The core writes JSON, which is UTF-8.
                body: String::from_utf8(reply.body).unwrap_or_default(),
            })),
            dynamic_metadata,
        },
    }
}

/// The ext_proc exchange's `note` with the decision ([`reply::told`]), for Envoy's access log
/// (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:code)%`). Nothing decided: the note alone.
fn with_decision(note: Option<Struct>, d: Option<&Decision>) -> Option<Struct> {
    let Some(d) = d else {
        return note;
    };
    let mut metadata = note.unwrap_or_default();
    for (key, value) in reply::told(d) {
        let value = ProtoValue {
            kind: Some(ValueKind::StringValue(value.to_owned())),
        };
        metadata.fields.insert(key.to_owned(), value);
    }
    Some(metadata)
}

fn header_options(headers: Vec<(&'static str, String)>) -> Vec<HeaderValueOption> {
    headers
        .into_iter()
        .map(|(key, value)| HeaderValueOption {
            header: Some(HeaderValue {
                key: key.to_owned(),
                value,
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderMap;

    fn http(headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_body_is_cut_when_envoy_says_so_or_its_length_disagrees() {
        let max = 10;
        let cut = |h: &[(&str, &str)], body: &[u8]| was_cut(&Headers(&http(h)), body, max);
        assert!(cut(&[(PARTIAL_BODY_HEADER, "true")], b"{}"));
        assert!(cut(&[("content-length", "3")], b"{}"));
        assert!(cut(&[("content-length", "x")], b"{}"));
        assert!(!cut(&[("content-length", "2")], b"{}"));
        // No declared length: a body that fills the buffer may have been cut there.
        assert!(cut(&[], &[b' '; 10]));
        assert!(cut(&[], &[b' '; 11]));
        assert!(!cut(&[], &[b' '; 9]));
        assert!(!cut(&[("content-length", "10")], &[b' '; 10]));
    }

    #[test]
    fn repeated_authorization_headers_are_refused_in_either_encoding() {
        let config = AuthzConfig::default();
        let joined = http(&[("authorization", "Bearer a,Bearer b")]);
        let grant = |h: &HttpRequest| {
            let facts = CheckFacts {
                headers: Headers(h),
                metadata: None,
                peer: Peer::UNKNOWN,
            };
            ReadSubject::read(&facts, &config).grant
        };
        assert!(grant(&joined).is_err());
        let raw = HttpRequest {
            header_map: Some(HeaderMap {
                headers: ["Bearer a", "Bearer a"]
                    .iter()
                    .map(|v| HeaderValue {
                        key: "authorization".into(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        };
        assert!(grant(&raw).is_err());
        assert_eq!(
            grant(&http(&[("authorization", "bearer  a")])),
            Ok(Some("a".into()))
        );
        assert_eq!(grant(&http(&[])), Ok(None));
    }

    /// The protocol's session is read from one header instance and held by the first caller
    /// to send it, whatever `--session-from` makes the limits' session.
    #[test]
    fn an_mcp_session_is_read_once_and_held_by_its_first_caller() {
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::Request as Req;
        use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
        use std::sync::Arc;
        use toolgate_core::counter::CounterTable;
        use toolgate_core::{ManualClock, Policy};
        let policy = Policy::from_yaml_str("version: \"1\"\ndefault: allow\n").unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000_000_000));
        let engine = Engine::new(policy, Arc::new(CounterTable::new(1024, 64)), clock).unwrap();
        let config = AuthzConfig {
            session: crate::subject::SubjectSource::Header("x-session".into()),
            ..AuthzConfig::default()
        };
        let status = |headers: &[(&str, &str)]| {
            let request = CheckRequest {
                attributes: Some(AttributeContext {
                    request: Some(Req {
                        http: Some(HttpRequest {
                            method: "GET".into(),
                            ..http(headers)
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            };
            match gate(&engine, &config, &request, None).0 {
                Gate::Forward { .. } => 200,
                Gate::Answer { reply, .. } => reply.status,
            }
        };
        let alice = ("authorization", "Bearer alice");
        let mallory = ("authorization", "Bearer mallory");
        assert_eq!(status(&[alice, ("mcp-session-id", "s-1")]), 200);
        assert_eq!(
            status(&[alice, ("mcp-session-id", "s-1"), ("x-session", "x")]),
            200
        );
        assert_eq!(status(&[mallory, ("mcp-session-id", "s-1")]), 404);
        assert_eq!(status(&[mallory, ("mcp-session-id", "s-1,s-2")]), 400);
        assert_eq!(status(&[mallory, ("mcp-session-id", "s-2")]), 200);
    }
}
