//! Envoy's rate limit service API (`envoy.service.ratelimit.v3.RateLimitService`), so
//! toolgate drops in where Limitador or envoyproxy/ratelimit run.
//!
//! Mapping: `domain` selects the policy's `servers` section (a domain without one uses the
//! top-level policy); each descriptor is one call, its entries supply the tool (`tool`) and
//! the subject (`grant`, `session`, `agent`; any other key becomes
//! `subject.attributes.<key>`); `hits_addend` (0 means 1) is what each limit counts.
//!
//! The whole request is checked before any counter is touched: a descriptor without a tool,
//! with an entry twice, with a cost beyond 2^32 − 1, asking to give hits back, or carrying a
//! limit override (the policy sets limits) makes the request invalid, and it changes nothing.
//! The answer is OK or OVER_LIMIT, never UNKNOWN (Envoy's filter lets UNKNOWN through):
//! a descriptor the policy denies is OVER_LIMIT, and so is an invalid request. Descriptors
//! are all-or-nothing: when one is over, what the others reserved is given back.

use crate::spans::{traced_decision, Asked, Traced};
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;
use std::time::Instant;
use toolgate_core::counter::Peer;
use toolgate_core::observing::stats::Api;
use toolgate_core::Kind;
use toolgate_core::{Decision, Engine, Request, Subject, Undecidable, Verdict};

/// One descriptor, read and checked.
struct Call<'a> {
    tool: &'a str,
    grant: Option<&'a str>,
    session: Option<&'a str>,
    agent: Option<&'a str>,
    attributes: Vec<(&'a str, &'a str)>,
    peer: Peer,
    hits: u32,
}

/// Answer one `ShouldRateLimit`.
pub fn should_rate_limit(engine: &Engine, request: &RateLimitRequest) -> RateLimitResponse {
    should_rate_limit_traced(engine, request, None)
}

/// Answer one `ShouldRateLimit`, each descriptor's decision a span of its own when `traced`
/// says so (under Envoy's span for the call, when Envoy traces).
pub fn should_rate_limit_traced(
    engine: &Engine,
    request: &RateLimitRequest,
    traced: Traced<'_>,
) -> RateLimitResponse {
    let started = Instant::now();
    let calls: Result<Vec<Call<'_>>, (usize, String)> = request
        .descriptors
        .iter()
        .enumerate()
        .map(|(i, d)| read(d, request.hits_addend).map_err(|why| (i, why)))
        .collect();
    let response = match calls {
        Ok(calls) => decide(engine, &request.domain, &calls, traced),
        Err((i, why)) => invalid(engine, request, i, &why, traced),
    };
    engine
        .stats()
        .record_duration(started.elapsed().as_nanos() as u64);
    response
}

fn read(d: &RateLimitDescriptor, request_hits: u32) -> Result<Call<'_>, String> {
    if d.is_negative_hits {
        return Err(
            "giving hits back is not accepted: the policy's counters only count calls \
                    (a proxy gives a call back through toolgate.v1 Release)"
                .into(),
        );
    }
    if d.limit.is_some() {
        return Err("a limit override is not accepted: the policy sets the limits".into());
    }
    let own = d.hits_addend.as_ref().map_or(0, |h| h.value);
    let hits = match own {
        0 => u64::from(request_hits.max(1)),
        n => n,
    };
    let hits = u32::try_from(hits).map_err(|_| format!("hits_addend {hits} is over 2^32 - 1"))?;
    let mut call = Call {
        tool: "",
        grant: None,
        session: None,
        agent: None,
        attributes: Vec::new(),
        peer: Peer::UNKNOWN,
        hits,
    };
    for (i, entry) in d.entries.iter().enumerate() {
        let key = entry.key.as_str();
        if d.entries[..i].iter().any(|e| e.key == key) {
            return Err(format!("entry {key:?} appears twice"));
        }
        let value = Some(entry.value.as_str()).filter(|v| !v.is_empty());
        match key {
            "tool" => call.tool = entry.value.as_str(),
            "grant" => call.grant = value,
            "session" => call.session = value,
            "agent" => call.agent = value,
            // Envoy's `remote_address` action: the client's address, also an attribute.
            "remote_address" => {
                call.peer = Peer::parse(&entry.value)
                    .ok_or_else(|| format!("entry {key:?} is not an IP address"))?;
                call.attributes.push((key, entry.value.as_str()));
            }
            _ => call.attributes.push((key, entry.value.as_str())),
        }
    }
    if call.tool.is_empty() {
        return Err("no non-empty 'tool' entry".into());
    }
    Ok(call)
}

fn decide(
    engine: &Engine,
    domain: &str,
    calls: &[Call<'_>],
    traced: Traced<'_>,
) -> RateLimitResponse {
    let decisions: Vec<Decision> = calls
        .iter()
        .map(|c| {
            traced_decision(traced, &Asked::tool(c.tool), || {
                decide_call(engine, domain, c)
            })
        })
        .collect();
    let refused = decisions.iter().find(|d| d.verdict != Verdict::Allow);
    if refused.is_some() {
        // All or nothing: the descriptors that fitted give their counters back.
        for d in decisions.iter().filter(|d| d.verdict == Verdict::Allow) {
            if let Some(id) = d.reservation {
                engine.release(id);
            }
        }
    }
    let mut response = RateLimitResponse {
        overall_code: if refused.is_some() {
            Code::OverLimit
        } else {
            Code::Ok
        } as i32,
        statuses: decisions
            .iter()
            .map(|d| status(d, d.verdict != Verdict::Allow))
            .collect(),
        ..Default::default()
    };
    if let Some(first) = refused {
        explain(&mut response, first);
    }
    response
}

/// One descriptor's call, decided (counted with its hits).
fn decide_call(engine: &Engine, domain: &str, c: &Call<'_>) -> Decision {
    engine.decide_via::<&serde_json::Value>(
        Api::RateLimit,
        &Request {
            kind: Kind::Tool,
            name: c.tool,
            server: Some(domain).filter(|d| !d.is_empty()),
            subject: Subject {
                grant: c.grant,
                session: c.session,
                agent: c.agent,
                attributes: &c.attributes,
                grant_verified: false,
                peer: c.peer,
            },
            args: None,
            dry_run: false,
            hits: Some(c.hits),
            confirm: None,
        },
    )
}

/// An invalid request: every descriptor over the limit, nothing counted. It is logged with
/// the caller and tool the refused descriptor names (the first of each entry).
fn invalid(
    engine: &Engine,
    request: &RateLimitRequest,
    refused: usize,
    why: &str,
    traced: Traced<'_>,
) -> RateLimitResponse {
    let descriptors = request.descriptors.len();
    let why = format!("descriptor {refused}: {why}");
    let entry = |key: &str| {
        let entries = request.descriptors[refused].entries.iter();
        entries
            .filter(|e| e.key == key && !e.value.is_empty())
            .map(|e| e.value.as_str())
            .next()
    };
    let request = Undecidable {
        reason: &why,
        logged: None,
        kind: Kind::Tool,
        name: entry("tool"),
        server: Some(request.domain.as_str()).filter(|d| !d.is_empty()),
        subject: Subject {
            grant: entry("grant"),
            session: entry("session"),
            agent: entry("agent"),
            ..Subject::default()
        },
    };
    let asked = Asked::tool(request.name.unwrap_or(""));
    let decision = traced_decision(traced, &asked, || {
        engine.refuse_via(Api::RateLimit, &request)
    });
    let mut response = RateLimitResponse {
        overall_code: Code::OverLimit as i32,
        statuses: vec![
            DescriptorStatus {
                code: Code::OverLimit as i32,
                ..Default::default()
            };
            descriptors
        ],
        ..Default::default()
    };
    explain(&mut response, &decision);
    response
}

/// Headers and body that tell the client which decision refused the request.
fn explain(response: &mut RateLimitResponse, d: &Decision) {
    let header = |key: &str, value: &str| HeaderValue {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    response.response_headers_to_add = vec![
        header("x-toolgate-verdict", d.verdict.as_str()),
        header("x-toolgate-code", d.code.as_str()),
        header("x-toolgate-rule", d.rule()),
    ];
    if let Some(ms) = d.retry_after_ms {
        let seconds = ms.div_ceil(1000).max(1).to_string();
        response
            .response_headers_to_add
            .push(header("retry-after", &seconds));
    }
    response.raw_body = format!("{}\n", d.reason()).into_bytes();
}

fn status(d: &Decision, over: bool) -> DescriptorStatus {
    let mut status = DescriptorStatus {
        code: if over { Code::OverLimit } else { Code::Ok } as i32,
        ..Default::default()
    };
    let Some(limit) = d.reported_limit() else {
        return status;
    };
    let info = d.limit_of(limit);
    status.current_limit = Some(RateLimit {
        name: d.counter_of(limit).to_owned(),
        requests_per_unit: saturate(info.max),
        unit: unit(info.window_ms) as i32,
    });
    status.limit_remaining = saturate(limit.remaining().floor());
    let reset_ms = match d.retry_after_ms {
        Some(ms) if over && ms > 0 => ms,
        _ => limit.reset_in_ms,
    };
    status.duration_until_reset = Some(Duration {
        seconds: reset_ms.div_ceil(1000) as i64,
        nanos: 0,
    });
    status
}

fn saturate(n: f64) -> u32 {
    n.clamp(0.0, f64::from(u32::MAX)) as u32
}

fn unit(window_ms: u64) -> Unit {
    match window_ms {
        1_000 => Unit::Second,
        60_000 => Unit::Minute,
        3_600_000 => Unit::Hour,
        86_400_000 => Unit::Day,
        604_800_000 => Unit::Week,
        _ => Unit::Unknown,
    }
}
