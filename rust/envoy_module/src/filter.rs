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
use toolgate_server::ext_proc::{exchange_header, EXCHANGE_HEADER};
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

/// The request's headers as ext_authz's `Check` carries them, so that both are read alike:
/// one value per name, a header sent more than once joined with `,` (a second `Mcp-Name` is
/// then no match for the body, and a second identity header one that holds a comma), bytes
/// that are not UTF-8 each read as U+FFFD. And where the request came from.
struct Headers {
    joined: Vec<(String, String)>,
    peer: Peer,
}

impl Headers {
    fn read(stream: Stream) -> Headers {
        let mut joined: Vec<(String, String)> = Vec::new();
        for (name, value) in stream.headers(REQUEST_HEADER) {
            let value = String::from_utf8_lossy(&value);
            match joined.iter_mut().find(|(k, _)| *k == name) {
                Some((_, all)) => {
                    all.push(',');
                    all.push_str(&value);
                }
                None => joined.push((name, value.into_owned())),
            }
        }
        Headers {
            joined,
            peer: stream
                .source_address()
                .map_or(Peer::UNKNOWN, |a| peer_of(&a)),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        (&self).header(name)
    }
}

/// The request's source as Envoy gives it (`source.address`, `IP:PORT` or `[IPv6]:PORT`): the
/// downstream connection's peer, read as ext_authz's `Check` source is. An IPv6 address's
/// zone is left out; an address that is no IP address (a pipe, an internal listener) is one
/// opaque address, bounded like any other.
fn peer_of(address: &str) -> Peer {
    let ip = match address.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(ip, _)| ip),
        None => address.rsplit_once(':').map_or(address, |(ip, _)| ip),
    };
    let ip = ip.split_once('%').map_or(ip, |(ip, _)| ip);
    Peer::parse(ip).unwrap_or(Peer::OPAQUE)
}

impl<'a> CallerFacts<'a> for &'a Headers {
    fn header_values(&self, name: &str) -> Vec<&'a str> {
        let found = self.joined.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.as_str()).into_iter().collect()
    }

    fn verified_payload(&self, _key: &str) -> Option<&'a Struct> {
        None
    }

    fn peer(&self) -> Peer {
        self.peer
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

    /// The stream's decision, once made.
    pub fn decided(&self) -> Option<Next> {
        self.decided
    }

    fn decide_once(&mut self, config: &Config, stream: Stream, body: &[u8]) -> Next {
        let started = Instant::now();
        let headers = Headers::read(stream);
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
            Gate::Forward {
                headers, follow, ..
            } => {
                // Always set, as ext_authz sets it: a client cannot choose what a route that
                // processes answers sees.
                stream.set_header(REQUEST_HEADER, EXCHANGE_HEADER, exchange_header(&follow));
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
