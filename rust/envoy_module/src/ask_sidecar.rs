//! What only `toolgate serve` holds (a person's approval), asked of it from Envoy's process:
//! a call the module's engine finds needs an approval is sent to the sidecar as Envoy's
//! ext_authz would send it (a `Check` over gRPC), through Envoy's own HTTP callout to the
//! cluster the configuration names: a stream of its own, whose trailers carry gRPC's status.
//! The request waits, without holding Envoy's worker thread, and goes on or is answered as
//! the sidecar says: the approval it opens, its id, and the approved call allowed once. An
//! answer that is not one whole `CheckResponse` under `grpc-status: 0` (the sidecar down,
//! slow, failing, or answering something else) refuses the call (503), fail closed.

use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{address, Address, Metadata, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as ProtoValue};
use prost::Message;
use serde_json::Value;
use std::collections::HashMap;
use toolgate_core::mcp::reply;
use toolgate_server::credential::JWT_AUTHN_NAMESPACE;

/// The gRPC method the sidecar's ext_authz service answers.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// The largest answer read: a `CheckResponse` carries one JSON-RPC answer and its headers.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Where the sidecar is: a cluster of Envoy's configuration (HTTP/2), and how long a Check
/// may take.
#[derive(Debug, Clone)]
pub struct Sidecar {
    pub cluster: String,
    pub timeout_ms: u64,
}

impl Sidecar {
    /// `{"cluster": NAME, "timeout_ms": N}` (the timeout 1000 unless given).
    pub fn read(given: &Value) -> Result<Sidecar, String> {
        let wrong = || {
            "\"sidecar\" is {\"cluster\": NAME, \"timeout_ms\": N}: the cluster of Envoy's \
             configuration (HTTP/2) where toolgate serve answers ext_authz"
                .to_owned()
        };
        let Value::Object(given) = given else {
            return Err(wrong());
        };
        if given.keys().any(|k| k != "cluster" && k != "timeout_ms") {
            return Err(wrong());
        }
        let cluster = match given.get("cluster") {
            Some(Value::String(c)) if !c.is_empty() => c.clone(),
            _ => return Err(wrong()),
        };
        // Envoy's YAML reader hands a plain scalar of a `Struct` over as a string.
        let timeout_ms = match given.get("timeout_ms") {
            None => 1000,
            Some(Value::Number(n)) => n.as_u64().ok_or_else(wrong)?,
            Some(Value::String(s)) => s.parse().map_err(|_| wrong())?,
            Some(_) => return Err(wrong()),
        };
        if timeout_ms == 0 {
            return Err(wrong());
        }
        Ok(Sidecar {
            cluster,
            timeout_ms,
        })
    }

    /// The callout's headers.
    pub fn headers(&self) -> [(&str, &str); 5] {
        [
            (":method", "POST"),
            (":path", CHECK_PATH),
            ("host", &self.cluster),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    }
}

/// What is known of the request: its headers (one value per name, as ext_authz's `Check`
/// carries them), its whole body, the MCP server the configuration names, where it came from,
/// and the payload of the token Envoy verified, under the metadata key the sidecar reads it
/// from (`jwt_authn`'s, as ext_authz passes it with `metadata_context_namespaces`).
pub struct Asked<'a> {
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub server: Option<&'a str>,
    pub source: Option<&'a str>,
    pub verified: Option<(&'a str, &'a Struct)>,
}

/// The `Check` for `asked`, framed for gRPC: the request as Envoy's ext_authz sends it with
/// `with_request_body` and `pack_as_bytes`.
pub fn check_request(asked: &Asked<'_>) -> Vec<u8> {
    let header = |name: &str| {
        let found = asked.headers.iter().find(|(k, _)| *k == name);
        found.map(|(_, v)| v.to_string()).unwrap_or_default()
    };
    let http = HttpRequest {
        method: header(":method"),
        path: header(":path"),
        host: header(":authority"),
        headers: (asked.headers.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        size: asked.body.len() as i64,
        raw_body: asked.body.to_vec(),
        ..Default::default()
    };
    let mut context_extensions = HashMap::new();
    if let Some(server) = asked.server {
        context_extensions.insert("server".to_owned(), server.to_owned());
    }
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source: asked.source.and_then(socket_address).map(|address| Peer {
                address: Some(address),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            context_extensions,
            metadata_context: asked
                .verified
                .map(|(key, payload)| verified_metadata(key, payload)),
            ..Default::default()
        }),
    };
    let message = request.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0); // not compressed
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

/// The metadata ext_authz sends for a token `jwt_authn` verified: its payload under `key`.
pub fn verified_metadata(key: &str, payload: &Struct) -> Metadata {
    let value = ProtoValue {
        kind: Some(Kind::StructValue(payload.clone())),
    };
    let namespace = Struct {
        fields: [(key.to_owned(), value)].into(),
    };
    Metadata {
        filter_metadata: [(JWT_AUTHN_NAMESPACE.to_owned(), namespace)].into(),
        ..Default::default()
    }
}

/// `IP:PORT` or `[IPv6]:PORT` (Envoy's `source.address`) as a socket address.
fn socket_address(text: &str) -> Option<Address> {
    let (ip, port) = text.rsplit_once(':')?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(port.parse().ok()?)),
            ..Default::default()
        })),
    })
}

/// What the sidecar said of the call.
#[derive(Debug, PartialEq)]
pub enum Said {
    /// Send it on, with `request` headers set and `answer` headers for the client.
    Forward {
        request: Vec<(String, String)>,
        answer: Vec<(String, String)>,
    },
    /// Answer it in the server's place.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// What the sidecar decided, for the access log: the values of `reply::TOLD`'s names, as its
/// answer's dynamic metadata gives them (as Envoy's ext_authz would leave them).
pub type Told = [String; 4];

/// The sidecar's answer to a `Check`, and what it decided where the answer says it (`Told`):
/// a gRPC answer (HTTP 200, `application/grpc`, ending with `grpc-status: 0` in its trailers)
/// whose body is exactly one uncompressed `CheckResponse`. Anything else is why the call
/// cannot go on: a message under a failed or missing status decides nothing.
pub fn read_answer(
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    trailers: &[(String, Vec<u8>)],
) -> Result<(Said, Option<Told>), String> {
    let find = |all: &[(String, Vec<u8>)], name: &str| {
        let found = all.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let header = |name: &str| find(headers, name);
    if header(":status").as_deref() != Some("200") {
        return Err(format!(
            "HTTP status {}",
            header(":status").unwrap_or_default()
        ));
    }
    let grpc = header("content-type").unwrap_or_default();
    if !(grpc == "application/grpc" || grpc.starts_with("application/grpc+proto")) {
        return Err(format!("content-type {grpc:?}"));
    }
    // A failing call may answer with its status in the headers alone (trailers-only).
    if let Some(status) = header("grpc-status").filter(|s| s != "0") {
        return Err(format!("gRPC status {status}"));
    }
    match find(trailers, "grpc-status") {
        Some(status) if status == "0" => {}
        Some(status) => return Err(format!("gRPC status {status}")),
        None => return Err("an answer without its gRPC status".into()),
    }
    if body.len() > MAX_ANSWER_BYTES {
        return Err("an answer too long".into());
    }
    let message = match body {
        [0, a, b, c, d, rest @ ..]
            if u32::from_be_bytes([*a, *b, *c, *d]) as usize == rest.len() =>
        {
            rest
        }
        _ => return Err("an answer that is not one gRPC message".into()),
    };
    let response =
        CheckResponse::decode(message).map_err(|e| format!("an unreadable CheckResponse: {e}"))?;
    let options = |options: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        let header = options.iter().filter_map(|o| o.header.as_ref());
        header.map(|h| (h.key.clone(), h.value.clone())).collect()
    };
    let allowed = response.status.as_ref().is_some_and(|s| s.code == 0);
    let told = told(response.dynamic_metadata.as_ref());
    let said = match (allowed, response.http_response) {
        (true, Some(HttpResponse::OkResponse(ok))) => Ok(Said::Forward {
            request: options(&ok.headers),
            answer: options(&ok.response_headers_to_add),
        }),
        (true, None) => Ok(Said::Forward {
            request: Vec::new(),
            answer: Vec::new(),
        }),
        (false, Some(HttpResponse::DeniedResponse(denied))) => Ok(Said::Answer {
            status: denied
                .status
                .and_then(|s| u16::try_from(s.code).ok())
                .filter(|s| (200..600).contains(s))
                .unwrap_or(403),
            headers: options(&denied.headers),
            body: denied.body.into_bytes(),
        }),
        _ => Err("a CheckResponse that neither allows nor denies".into()),
    };
    said.map(|said| (said, told))
}

/// The decision in the sidecar's dynamic metadata, where it gives each of `reply::TOLD`'s
/// names as text.
fn told(metadata: Option<&Struct>) -> Option<Told> {
    let fields = &metadata?.fields;
    let text = |name: &str| match fields.get(name)?.kind.as_ref()? {
        Kind::StringValue(value) => Some(value.clone()),
        _ => None,
    };
    let [verdict, code, rule, revision] = reply::TOLD.map(text);
    Some([verdict?, code?, rule?, revision?])
}

/// The JSON-RPC error a client gets when the sidecar could not be asked: 503 (try again), as
/// Envoy's ext_authz configuration answers when toolgate is unavailable.
pub fn unavailable(id: Option<Value>) -> (u16, Vec<u8>) {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": {
            "code": -32000,
            "message": "toolgate, the policy check in front of this MCP server, is unavailable: \
                        the request was not forwarded. Try again later.",
        },
    });
    (503, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::envoy::service::auth::v3::DeniedHttpResponse;
    use envoy_types::pb::google::rpc::Status;

    fn ok_trailers() -> Vec<(String, Vec<u8>)> {
        grpc(&[("grpc-status", "0")])
    }

    fn grpc(headers: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        let h = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()));
        h.collect()
    }

    fn framed(response: &CheckResponse) -> Vec<u8> {
        let message = response.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(&message);
        out
    }

    fn denied() -> CheckResponse {
        CheckResponse {
            status: Some(Status {
                code: 7,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 200 }),
                headers: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "x-toolgate-approval".into(),
                        value: "apr-1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                body: "{}".into(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_denial_is_answered_as_the_sidecar_wrote_it() {
        let ok = grpc(&[(":status", "200"), ("content-type", "application/grpc")]);
        let (said, told) = read_answer(&ok, &framed(&denied()), &ok_trailers()).unwrap();
        assert_eq!(
            said,
            Said::Answer {
                status: 200,
                headers: vec![("x-toolgate-approval".into(), "apr-1".into())],
                body: b"{}".to_vec()
            }
        );
        // It said nothing of what it decided: the module logs its own decision.
        assert_eq!(told, None);
    }

    fn metadata(fields: &[(&str, Kind)]) -> Struct {
        let field = |(k, v): &(&str, Kind)| {
            (
                k.to_string(),
                ProtoValue {
                    kind: Some(v.clone()),
                },
            )
        };
        Struct {
            fields: fields.iter().map(field).collect(),
        }
    }

    #[test]
    fn what_the_sidecar_decided_is_read_from_its_metadata_where_it_gives_all_four() {
        let ok = grpc(&[(":status", "200"), ("content-type", "application/grpc")]);
        let text = |s: &str| Kind::StringValue(s.into());
        let four = [
            ("verdict", text("ALLOW")),
            ("code", text("ALLOWED")),
            ("rule", text("/tools/pay")),
            ("revision", text("abc")),
            // Others (the exchange's note) are not the decision.
            ("note", text("x")),
        ];
        let answer = |fields: &[(&str, Kind)]| CheckResponse {
            dynamic_metadata: Some(metadata(fields)),
            ..denied()
        };
        let (_, told) = read_answer(&ok, &framed(&answer(&four)), &ok_trailers()).unwrap();
        let want = ["ALLOW", "ALLOWED", "/tools/pay", "abc"].map(String::from);
        assert_eq!(told, Some(want));
        // One missing, or not text: nothing is taken from it.
        for broken in [
            &four[1..],
            &[
                four[0].clone(),
                four[1].clone(),
                four[2].clone(),
                ("revision", Kind::NumberValue(1.0)),
            ][..],
        ] {
            let (_, told) = read_answer(&ok, &framed(&answer(broken)), &ok_trailers()).unwrap();
            assert_eq!(told, None);
        }
    }

    #[test]
    fn anything_but_one_whole_check_response_is_refused() {
        let ok = grpc(&[(":status", "200"), ("content-type", "application/grpc")]);
        let body = framed(&denied());
        // Cut, lengthened, compressed, empty, or with a failing status.
        let mut longer = body.clone();
        longer.push(0);
        let mut compressed = body.clone();
        compressed[0] = 1;
        for wrong in [&body[..body.len() - 1], &longer, &compressed, &[][..]] {
            assert!(read_answer(&ok, wrong, &ok_trailers()).is_err());
        }
        // A whole message under a failed status, or with none.
        assert!(read_answer(&ok, &body, &grpc(&[("grpc-status", "13")])).is_err());
        assert!(read_answer(&ok, &body, &[]).is_err());
        let failed = grpc(&[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "14"),
        ]);
        assert!(read_answer(&failed, &body, &ok_trailers()).is_err());
        let html = grpc(&[(":status", "200"), ("content-type", "text/html")]);
        assert!(read_answer(&html, &body, &ok_trailers()).is_err());
        let gateway = grpc(&[(":status", "503"), ("content-type", "application/grpc")]);
        assert!(read_answer(&gateway, &body, &ok_trailers()).is_err());
        // A status that says allowed with a denial's body decides nothing.
        let mut mixed = denied();
        mixed.status = Some(Status::default());
        assert!(read_answer(&ok, &framed(&mixed), &ok_trailers()).is_err());
    }

    #[test]
    fn the_check_carries_the_request_as_ext_authz_sends_it() {
        let headers = [
            (":method", "POST"),
            (":path", "/mcp"),
            ("authorization", "Bearer a"),
        ];
        let payload = Struct {
            fields: [(
                "sub".to_owned(),
                ProtoValue {
                    kind: Some(Kind::StringValue("alice".into())),
                },
            )]
            .into(),
        };
        let asked = Asked {
            headers: &headers,
            body: b"{\"jsonrpc\":\"2.0\"}",
            server: Some("images"),
            source: Some("[::1]:5000"),
            verified: Some(("jwt_payload", &payload)),
        };
        let framed = check_request(&asked);
        let request = CheckRequest::decode(&framed[5..]).unwrap();
        let attributes = request.attributes.unwrap();
        // Where the sidecar reads a verified token's payload from, under the key it is told.
        let metadata = attributes.metadata_context.as_ref();
        assert_eq!(
            toolgate_server::credential::jwt_payload(metadata, "jwt_payload"),
            Some(&payload)
        );
        assert_eq!(
            toolgate_server::credential::jwt_payload(metadata, "other"),
            None
        );
        let http = attributes.request.unwrap().http.unwrap();
        assert_eq!(http.raw_body, asked.body);
        assert_eq!(http.method, "POST");
        assert_eq!(http.headers["authorization"], "Bearer a");
        assert_eq!(attributes.context_extensions["server"], "images");
        let source = attributes.source.unwrap().address.unwrap().address.unwrap();
        let address::Address::SocketAddress(s) = source else {
            panic!("a socket address")
        };
        assert_eq!(
            (s.address.as_str(), s.port_specifier),
            ("::1", Some(PortSpecifier::PortValue(5000)))
        );
    }
}
