//! The `toolgate.v1` gRPC messages, decoded and encoded in Rust: the sidecar hands each
//! request's bytes here and sends back the bytes it gets, so a decision costs Python one call.

use crate::spans::{traced_decision, Asked, Traced};
use std::time::Instant;
use toolgate_core::counter::Peer;
use toolgate_core::json::args::{parse_json_arguments, ArgumentsRefused};
use toolgate_core::observing::stats::Api;
use toolgate_core::Kind;
use toolgate_core::{Code, Decision, Engine, Request, Subject, Undecidable, Verdict};

pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/toolgate.v1.rs"));
}

/// Descriptors of the toolgate.v1 schema, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/toolgate.v1.bin"));

/// Decide one `DecideRequest`.
pub fn decide_message(
    engine: &Engine,
    max_argument_bytes: usize,
    req: &pb::DecideRequest,
    traced: Traced<'_>,
) -> pb::DecideResponse {
    let started = Instant::now();
    let response = respond(engine, max_argument_bytes, req, traced);
    engine
        .stats()
        .record_duration(started.elapsed().as_nanos() as u64);
    response
}

/// Decide every request of a `DecideBatchRequest`, in order (each its own span).
pub fn decide_batch_message(
    engine: &Engine,
    max_argument_bytes: usize,
    batch: &pb::DecideBatchRequest,
    traced: Traced<'_>,
) -> pb::DecideBatchResponse {
    let started = Instant::now();
    let responses = batch
        .requests
        .iter()
        .map(|r| respond(engine, max_argument_bytes, r, traced))
        .collect();
    engine
        .stats()
        .record_duration(started.elapsed().as_nanos() as u64);
    pb::DecideBatchResponse { responses }
}

/// Give back a reservation.
pub fn release_message(engine: &Engine, req: &pb::ReleaseRequest) -> pb::ReleaseResponse {
    let released = req.reservation != 0 && engine.release(req.reservation);
    pb::ReleaseResponse { released }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn respond(
    engine: &Engine,
    max_argument_bytes: usize,
    req: &pb::DecideRequest,
    traced: Traced<'_>,
) -> pb::DecideResponse {
    let asked = Asked::tool(&req.tool);
    encode(traced_decision(traced, &asked, || {
        decide(engine, max_argument_bytes, req)
    }))
}

fn decide(engine: &Engine, max_argument_bytes: usize, req: &pb::DecideRequest) -> Decision {
    let sent = req.subject.as_ref();
    let attributes: Vec<(&str, &str)> = sent
        .map(|s| {
            s.attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let address = sent.map_or("", |s| s.peer_address.as_str());
    let peer = peer_of(address);
    let subject = Subject {
        grant: sent.and_then(|s| non_empty(&s.grant)),
        session: sent.and_then(|s| non_empty(&s.session)),
        agent: sent.and_then(|s| non_empty(&s.agent)),
        attributes: &attributes,
        grant_verified: false,
        peer: *peer.as_ref().unwrap_or(&Peer::UNKNOWN),
    };
    let server = non_empty(&req.server);
    let read = peer.and_then(|_| parse_arguments(&req.arguments_json, max_argument_bytes));
    let arguments = match read {
        Ok(a) => a,
        Err(refused) => {
            let request = Undecidable {
                reason: &refused.told,
                logged: Some(&refused.logged),
                kind: Kind::Tool,
                name: non_empty(&req.tool),
                server,
                subject,
            };
            return engine.refuse_via(Api::Decider, &request);
        }
    };
    engine.decide_via(
        Api::Decider,
        &Request {
            kind: Kind::Tool,
            name: &req.tool,
            server,
            subject,
            args: arguments.as_ref(),
            dry_run: req.dry_run,
            hits: None,
            confirm: None,
        },
    )
}

/// The request's `peer_address`: empty for unknown, else an IP address.
fn peer_of(address: &str) -> Result<Peer, ArgumentsRefused> {
    if address.is_empty() {
        return Ok(Peer::UNKNOWN);
    }
    Peer::parse(address).ok_or_else(|| {
        ArgumentsRefused::plain("the subject's peer_address is not an IP address".into())
    })
}

fn parse_arguments(
    json: &[u8],
    max_bytes: usize,
) -> Result<Option<serde_json::Value>, ArgumentsRefused> {
    if json.is_empty() {
        return Ok(None);
    }
    if json.len() > max_bytes {
        return Err(ArgumentsRefused::plain(format!(
            "arguments are {} bytes, more than the limit of {max_bytes}",
            json.len()
        )));
    }
    parse_json_arguments(json).map(Some)
}

fn encode(d: Decision) -> pb::DecideResponse {
    pb::DecideResponse {
        verdict: verdict(d.verdict) as i32,
        code: code(d.code) as i32,
        reason: d.reason().to_owned(),
        rule: d.rule().to_owned(),
        retry_after_ms: d.retry_after_ms,
        limits: d
            .limits
            .iter()
            .map(|l| {
                let limit = d.limit_of(l);
                pb::LimitState {
                    counter: d.counter_of(l).to_owned(),
                    rule: d.rule_of(l).to_owned(),
                    scope: limit.scope.as_str().to_owned(),
                    max: limit.max,
                    window_ms: limit.window_ms,
                    remaining: l.remaining(),
                    reset_in_ms: l.reset_in_ms,
                }
            })
            .collect(),
        revision: d.revision().to_owned(),
        shadow: d.shadow,
        reservation: d.reservation.unwrap_or(0),
        approval_id: d.approval.map(|id| id.to_string()).unwrap_or_default(),
        marks_read: d
            .marks
            .iter()
            .flat_map(|m| &m.read)
            .map(|(name, state)| (name.to_string(), state.as_str().to_owned()))
            .collect(),
        marks_set: d
            .marks
            .iter()
            .flat_map(|m| &m.set)
            .map(|name| name.to_string())
            .collect(),
    }
}

fn verdict(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Allow => pb::Verdict::Allow,
        Verdict::Deny => pb::Verdict::Deny,
        Verdict::RequireApproval => pb::Verdict::RequireApproval,
    }
}

fn code(c: Code) -> pb::Code {
    match c {
        Code::Allowed => pb::Code::Allowed,
        Code::Hidden => pb::Code::Hidden,
        Code::DefaultDeny => pb::Code::DefaultDeny,
        Code::RuleDeny => pb::Code::RuleDeny,
        Code::ConditionFailed => pb::Code::ConditionFailed,
        Code::RateLimited => pb::Code::RateLimited,
        Code::ApprovalRequired => pb::Code::ApprovalRequired,
        Code::InvalidRequest => pb::Code::InvalidRequest,
        Code::ApprovalDenied => pb::Code::ApprovalDenied,
        Code::StoreUnavailable => pb::Code::StoreUnavailable,
        Code::ToolChanged => pb::Code::ToolChanged,
        Code::ToolUnpinned => pb::Code::ToolUnpinned,
        Code::ConfirmationRequired => pb::Code::ConfirmationRequired,
        Code::ConfirmationDeclined => pb::Code::ConfirmationDeclined,
        Code::ConfirmationExpired => pb::Code::ConfirmationExpired,
        Code::ConfirmationInvalid => pb::Code::ConfirmationInvalid,
        Code::ConfirmationUnavailable => pb::Code::ConfirmationUnavailable,
    }
}
