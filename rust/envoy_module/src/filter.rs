//! One MCP request through the filter: its headers held until its body is whole, then the
//! core's gate decides, as it does for Envoy's ext_authz (`toolgate_server::authz`): the
//! request goes on (with the headers the answer gains), or the module answers in the
//! server's place with the same status, headers and JSON-RPC body.

use crate::abi::{Stream, REQUEST_HEADER};
use crate::config::Config;
use envoy_types::pb::google::protobuf::Struct;
use std::time::Instant;
use toolgate_core::counter::Peer;
use toolgate_core::engine::gate::{self, Gate, HttpCall};
use toolgate_server::authz::unreadable_caller;
use toolgate_server::subject::{single_header, CallerFacts, ReadSubject, MCP_SESSION_HEADER};

/// A stream's state, on its worker thread.
#[derive(Default)]
pub struct Filter {
    /// Headers to add to the answer the client gets (the decision's).
    pub answer_headers: Vec<(&'static str, String)>,
    /// The request's decision, once made: a stream is decided once, whichever hook sees it
    /// whole first (or over its limit).
    decided: Option<Next>,
}

/// What the module does with the request.
#[derive(Clone, Copy)]
pub enum Next {
    Continue,
    /// Answered in the server's place.
    Answered,
}

/// The request's headers as Envoy holds them; a value that is not UTF-8 matches no name and
/// is read as a refusal by the subject's reader.
struct Headers(Vec<(String, Vec<u8>)>);

impl<'a> CallerFacts<'a> for &'a Headers {
    fn header_values(&self, name: &str) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap_or("\u{fffd}"))
            .collect()
    }

    fn verified_payload(&self, _key: &str) -> Option<&'a Struct> {
        None
    }

    fn peer(&self) -> Peer {
        Peer::UNKNOWN
    }
}

impl Headers {
    fn get(&self, name: &str) -> Option<&str> {
        (&self).header(name)
    }
}

/// The body is not the length its header declares: decided as the core decides a body cut
/// at ext_authz's `max_request_bytes`.
fn was_cut(headers: &Headers, body: &[u8]) -> bool {
    headers
        .get("content-length")
        .is_some_and(|declared| declared.parse::<usize>() != Ok(body.len()))
}

impl Filter {
    /// Decide the request whose headers and whole body Envoy holds, and answer it or let it
    /// go on.
    pub fn decide(&mut self, config: &Config, stream: Stream, body: &[u8]) -> Next {
        if let Some(next) = self.decided {
            return next;
        }
        let next = self.decide_once(config, stream, body);
        self.decided = Some(next);
        next
    }

    fn decide_once(&mut self, config: &Config, stream: Stream, body: &[u8]) -> Next {
        let started = Instant::now();
        let headers = Headers(stream.headers(REQUEST_HEADER));
        let max = config.authz.max_request_bytes;
        let (body, cut) = match body.len() > max {
            true => (&body[..max], true),
            false => (body, false),
        };
        let facts = &headers;
        let server_header = match &config.server {
            Some(_) => Ok(None),
            None => single_header(&facts, &config.authz.server_header),
        };
        let server = config
            .server
            .as_deref()
            .or(server_header.as_ref().ok().copied().flatten());
        let read = ReadSubject::read(&facts, &config.authz);
        let subject = read.subject();
        let mcp_session = single_header(&facts, MCP_SESSION_HEADER);
        let refused = (server_header.as_ref().err())
            .or(mcp_session.as_ref().err())
            .map(|r| r.0.as_str());
        let gate = match read.refused().or(refused) {
            Some(why) => {
                let credential = read.grant.is_err();
                unreadable_caller(&config.engine, why, credential, body, server, subject)
            }
            None => gate::check(
                &config.engine,
                &HttpCall {
                    http_method: headers.get(":method").unwrap_or("POST"),
                    body,
                    truncated: cut || was_cut(&headers, body),
                    server,
                    subject,
                    mcp_method: headers.get("mcp-method"),
                    mcp_name: headers.get("mcp-name"),
                    resumes: !(&headers).header_values("last-event-id").is_empty(),
                    mcp_session: mcp_session.ok().flatten(),
                },
            ),
        };
        let stats = config.engine.stats();
        stats.record_duration(started.elapsed().as_nanos() as u64);
        match gate {
            Gate::Forward { headers, .. } => {
                self.answer_headers = headers;
                Next::Continue
            }
            Gate::Answer { reply, .. } => {
                stream.send_response(reply.status, &reply.headers, &reply.body, "toolgate");
                Next::Answered
            }
        }
    }
}
