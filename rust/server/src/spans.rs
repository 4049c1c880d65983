//! One OpenTelemetry span per decision, exported over OTLP (`toolgate serve
//! --otlp-endpoint`), so a trace shows where a call waited on toolgate and why it was
//! refused.
//!
//! A span's parent is the trace context the MCP message carries in its params' `_meta`
//! (`traceparent`, as MCP clients propagate it), else the HTTP request's `traceparent` header
//! that the proxy passed on, else the gRPC call's own (the proxy's span for the call to
//! toolgate), else none: a new trace. Its name and attributes follow OpenTelemetry's MCP
//! conventions (`tools/call get_weather`, `mcp.method.name`, `gen_ai.tool.name`,
//! `jsonrpc.request.id`, `mcp.resource.uri`) and its guardrail attributes (the verdict, the
//! rule), with toolgate's code and policy revision; never a reason, which may quote what the
//! agent sent, nor an argument.
//!
//! Spans are handed to the SDK's batch processor, whose queue is bounded (spans past it are
//! dropped, never waited for), and exported by its own thread through a small runtime of
//! their own: a decision never waits on the collector. Without an endpoint there is no
//! [`Spans`], and a decision pays one branch.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use toolgate_core::decision::{Code, Decision, Verdict};
use toolgate_core::engine::gate::SpanOpener;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::request::{McpRequest, Parsed};
use toolgate_core::mcp::revision::Revision;
use toolgate_core::mcp::trace_context::TraceCarrier;
use toolgate_core::trace_ids::{self, TraceIds};
use toolgate_core::Kind;

/// The name the spans' instrumentation scope and, unless `OTEL_SERVICE_NAME` says otherwise,
/// their service go by.
const NAME: &str = "toolgate";

/// Where and how much to trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOptions {
    /// The collector's OTLP/gRPC address (`http://HOST:4317`).
    pub endpoint: String,
    /// The share of new traces sampled (0 to 1); a request whose parent was sampled, or not,
    /// follows its parent.
    pub sample_ratio: f64,
}

/// The exporter and what it runs on.
pub struct Spans {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    /// Drives the exporter's connection (tonic's), off the serving threads.
    _runtime: tokio::runtime::Runtime,
}

impl Spans {
    pub fn start(options: &TraceOptions) -> Result<Spans, String> {
        let ratio = options.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "the trace sample ratio is {ratio}; give one from 0 to 1"
            ));
        }
        let endpoint = &options.endpoint;
        let uri = endpoint.parse::<http::Uri>().ok();
        // The URI's reader takes any digits for a port: one is 1 to 65535, or none is given.
        let port_ok = |u: &http::Uri| match u.authority().and_then(|a| a.as_str().rsplit_once(':'))
        {
            Some((_, port)) if !port.contains(']') => port.parse::<u16>().is_ok_and(|p| p > 0),
            _ => true,
        };
        if !uri.is_some_and(|u| u.scheme_str() == Some("http") && u.host().is_some() && port_ok(&u))
        {
            // No TLS in this build: a collector beside toolgate (an agent, a sidecar) or on
            // a network you trust takes plain OTLP/gRPC.
            return Err(format!(
                "the OTLP endpoint {endpoint:?} is not an http://HOST[:PORT] address (OTLP over \
                 gRPC, without TLS)"
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("toolgate-otlp")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the OTLP exporter's runtime: {e}"))?;
        // The channel's worker is spawned on the runtime entered here.
        let exporter = {
            let _entered = runtime.enter();
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| format!("cannot make the OTLP exporter for {endpoint}: {e}"))?
        };
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(NAME);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer_with_scope(
            opentelemetry::InstrumentationScope::builder(NAME)
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        Ok(Spans {
            tracer,
            provider,
            _runtime: runtime,
        })
    }

    /// Export what is queued, waiting for the collector up to its timeout.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for Spans {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// A request's headers, or a gRPC call's metadata, read as a trace context's carrier.
pub trait Headers {
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for tonic::metadata::MetadataMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Carried<'a, H: ?Sized>(&'a H);

impl<H: Headers + ?Sized> Extractor for Carried<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header(key)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

impl Headers for TraceCarrier {
    fn header(&self, name: &str) -> Option<&str> {
        match name {
            "traceparent" => Some(&self.traceparent),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }
}

/// The context `headers` carry, if it names a valid span.
fn parent_in<H: Headers + ?Sized>(headers: &H) -> Option<Context> {
    if !well_formed(headers.header("traceparent")?) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Carried(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The protocol revision an HTTP request declares in its `MCP-Protocol-Version` header.
pub fn revision_in<H: Headers + ?Sized>(headers: &H) -> Option<Revision> {
    Revision::parse(headers.header("mcp-protocol-version")?)
}

/// A `traceparent` as W3C Trace Context writes it: `VV-TRACE-PARENT-FF`, lowercase hex of 2,
/// 32, 16 and 2 digits, ids not all zero, version not `ff`; a later version may go on after
/// a dash. The SDK's reader takes shorter ids, a sign and surrounding spaces too: text that
/// another tracer would not read as the same parent is none.
fn well_formed(traceparent: &str) -> bool {
    let b = traceparent.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    let nonzero = |range: std::ops::Range<usize>| b[range].iter().any(|&c| c != b'0');
    let version_ok = hex(0..2) && &b[..2] != b"ff";
    let length_ok = match &b[..2.min(b.len())] {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b.get(55) == Some(&b'-'),
    };
    version_ok
        && length_ok
        && [b[2], b[35], b[52]] == [b'-'; 3]
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && nonzero(3..35)
        && nonzero(36..52)
}

/// Where a call's decisions are traced, if they are: the spans, and the call's transport
/// (its gRPC metadata: the caller's trace context).
pub type Traced<'a> = Option<(&'a Spans, &'a dyn Headers)>;

/// Decide with `decide`, a decision on what `asked` names: traced when `traced` says so, as
/// a span under the call's context, with the decision log's line naming it.
pub fn traced_decision(
    traced: Traced<'_>,
    asked: &Asked<'_>,
    decide: impl FnOnce() -> Decision,
) -> Decision {
    let Some((spans, call)) = traced else {
        return decide();
    };
    let span = DecisionSpan::new(spans, &[call]);
    let ids = span.start(asked, None);
    let decision = trace_ids::within(Some(ids), decide);
    span.finish(Some(&decision));
    decision
}

/// One decision's span: started when its request is read ([`SpanOpener::open`]), ended with
/// what was decided ([`DecisionSpan::finish`]).
pub struct DecisionSpan<'a> {
    spans: &'a Spans,
    arrived: SystemTime,
    /// The transport's parent: the HTTP request's, else the gRPC call's.
    transport: Option<Context>,
    /// The revision the HTTP request declared (`MCP-Protocol-Version`), for a message that
    /// declares none itself.
    transport_revision: Option<Revision>,
    span: RefCell<Option<Span>>,
}

impl<'a> DecisionSpan<'a> {
    /// A decision on a request that arrived now, whose transport carried `transports` (the
    /// first with a valid context is the parent).
    pub fn new(spans: &'a Spans, transports: &[&dyn Headers]) -> DecisionSpan<'a> {
        DecisionSpan {
            spans,
            arrived: SystemTime::now(),
            transport: transports.iter().find_map(|h| parent_in(*h)),
            transport_revision: transports.iter().find_map(|h| revision_in(*h)),
            span: RefCell::new(None),
        }
    }

    /// Start the span for a request named as `asked` says, under `carried` (the message's own
    /// context) or the transport's.
    pub fn start(&self, asked: &Asked<'_>, carried: Option<&TraceCarrier>) -> TraceIds {
        let parent = carried
            .and_then(parent_in)
            .or_else(|| self.transport.clone())
            .unwrap_or_default();
        let mut span = guardrail_span(self.spans, &parent, self.arrived, "input");
        // Named and described only if it is kept: a span not sampled costs no text.
        if span.is_recording() {
            let asked = Asked {
                revision: asked.revision.or(self.transport_revision),
                ..*asked
            };
            let named = asked.named();
            span.update_name(named.name);
            span.set_attributes(named.attributes);
        }
        let context = span.span_context();
        let ids = TraceIds {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            sampled: context.is_sampled(),
        };
        *self.span.borrow_mut() = Some(span);
        ids
    }

    /// End the span with `decision` (none: nothing was decided, the request passed).
    pub fn finish(self, decision: Option<&Decision>) {
        let Some(mut span) = self.span.into_inner() else {
            return;
        };
        // What the decision waited on, each a span of its own under the decision's.
        let waits = trace_ids::take_waits();
        if span.is_recording() {
            span.set_attributes(decided(decision));
            let parent = Context::new().with_remote_span_context(span.span_context().clone());
            for wait in waits {
                waited(self.spans, &parent, &wait);
            }
        }
        // A kept span names its decision in the latency histogram (an exemplar).
        let context = span.span_context();
        if context.is_sampled() {
            trace_ids::sampled(TraceIds {
                trace_id: context.trace_id().to_bytes(),
                span_id: context.span_id().to_bytes(),
                sampled: true,
            });
        }
        span.end();
    }
}

/// The name of a guardrail span whose request names no method.
pub const UNNAMED: &str = "run_guardrail toolgate";

/// A span of toolgate's as a guardrail (the guardrail convention: its component, and whether it
/// judged the request, `input`, or the answer, `output`), under `parent`, begun at `started`.
fn guardrail_span(
    spans: &Spans,
    parent: &Context,
    started: SystemTime,
    target: &'static str,
) -> Span {
    let tracer = &spans.tracer;
    let mut span = tracer
        .span_builder(NAME)
        .with_kind(SpanKind::Internal)
        .with_start_time(started)
        .start_with_context(tracer, parent);
    if span.is_recording() {
        span.set_attributes(guardrail(target));
    }
    span
}

/// The guardrail convention's attributes of every span of toolgate's: its component, and
/// whether it judged the request (`input`) or the answer (`output`).
pub fn guardrail(target: &'static str) -> [KeyValue; 2] {
    [
        KeyValue::new("gen_ai.guardrail.component.name", NAME),
        KeyValue::new("gen_ai.guardrail.target.type", target),
    ]
}

/// What a decision span says of what was decided (`None`: nothing was, the request passed):
/// the guardrail convention's verdict and rule, toolgate's code and policy revision, and the
/// person it waits on. Never a reason, which may quote what the agent sent.
pub fn decided(decision: Option<&Decision>) -> Vec<KeyValue> {
    let Some(d) = decision else {
        return vec![KeyValue::new("gen_ai.guardrail.verdict.type", "allow")];
    };
    let mut out = vec![
        KeyValue::new("gen_ai.guardrail.verdict.type", verdict_type(d)),
        KeyValue::new("toolgate.decision.code", d.code.as_str()),
    ];
    let rule = d.rule();
    if !rule.is_empty() {
        let rule = Value::from(rule.to_owned());
        out.push(KeyValue::new(
            "gen_ai.guardrail.security.policy.rule.id",
            rule,
        ));
    }
    out.push(KeyValue::new(
        "toolgate.policy.revision",
        d.revision().to_owned(),
    ));
    if d.shadow {
        out.push(KeyValue::new("toolgate.decision.shadow", true));
    }
    if let Some(id) = d.approval {
        out.push(KeyValue::new("toolgate.approval.id", id.to_string()));
    }
    if let Some(c) = &d.confirmation {
        out.push(KeyValue::new("toolgate.confirmation", c.as_str()));
    }
    out
}

/// A span for a wait of a decision's, under `parent` (OpenTelemetry's database client
/// conventions: `db.system.name`, `db.operation.name`).
fn waited(spans: &Spans, parent: &Context, wait: &trace_ids::Wait) {
    let tracer = &spans.tracer;
    let mut span = tracer
        .span_builder(wait.operation)
        .with_kind(SpanKind::Client)
        .with_start_time(wait.started)
        .with_attributes([
            KeyValue::new("db.system.name", wait.system),
            KeyValue::new("db.operation.name", wait.operation),
        ])
        .start_with_context(tracer, parent);
    if wait.failed {
        span.set_attribute(KeyValue::new("error.type", "store_unavailable"));
    }
    span.end_with_timestamp(wait.started + wait.took);
}

/// A span for a person's decision on a call ([`crate::approval_spans`]): `approval TOOL`,
/// from `opened_ms` to `decided_ms` (milliseconds since the Unix epoch), under `asked`, the
/// span of the decision that asked for it, kept as that span is.
pub fn approval_span(
    spans: &Spans,
    asked: TraceIds,
    tool: &str,
    id: &str,
    opened_ms: u64,
    decided_ms: u64,
    approved: bool,
) {
    let parent = SpanContext::new(
        TraceId::from_bytes(asked.trace_id),
        SpanId::from_bytes(asked.span_id),
        if asked.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    );
    let parent = Context::new().with_remote_span_context(parent);
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let tool = bounded(tool);
    let tracer = &spans.tracer;
    let mut span = tracer
        .span_builder(format!("approval {tool}"))
        .with_kind(SpanKind::Internal)
        .with_start_time(at(opened_ms))
        .with_attributes([
            KeyValue::new("gen_ai.guardrail.component.name", NAME),
            KeyValue::new("gen_ai.tool.name", tool),
            KeyValue::new("toolgate.approval.id", id.to_owned()),
            KeyValue::new(
                "toolgate.approval.outcome",
                if approved { "approved" } else { "denied" },
            ),
        ])
        .start_with_context(tracer, &parent);
    span.end_with_timestamp(at(decided_ms.max(opened_ms)));
}

impl SpanOpener for DecisionSpan<'_> {
    fn open(&self, read: Option<&Parsed>) -> Option<TraceIds> {
        Some(match read {
            Some(parsed) => self.start(&Asked::read(parsed), parsed.trace.as_ref()),
            None => self.start(&Asked::default(), None),
        })
    }
}

/// The spans of the lists a caller is answered through a follower (Envoy's ext_proc): one
/// per list filtered, named after the list's method (`tools/list`), under the transport's
/// context (Envoy's span for its ext_proc stream), with the guardrail's attributes for an
/// output: verdict `modify` when the caller was shown less than the server listed, `deny`
/// when the answer was refused, `allow` otherwise, and how many entries were taken out.
pub struct ListSpans {
    spans: Arc<Spans>,
    parent: Context,
    /// When the list being read began to arrive.
    started: Option<SystemTime>,
}

impl ListSpans {
    pub fn new(spans: Arc<Spans>, transport: &dyn Headers) -> ListSpans {
        ListSpans {
            parent: parent_in(transport).unwrap_or_default(),
            spans,
            started: None,
        }
    }

    /// A part of an answer arrived: the first of a list starts its span.
    pub fn part(&mut self) {
        self.started.get_or_insert_with(SystemTime::now);
    }

    /// A list (`listed`: its kind, where the request named it) was filtered, `removed`
    /// entries taken out, or refused: its span, ended now.
    pub fn listed(&mut self, listed: Option<Listed>, removed: usize, refused: bool) {
        let started = self.started.take().unwrap_or_else(SystemTime::now);
        let mut span = guardrail_span(&self.spans, &self.parent, started, "output");
        if span.is_recording() {
            let named = list_named(listed, removed, refused);
            span.update_name(named.name);
            span.set_attributes(named.attributes);
        }
        span.end();
    }
}

impl crate::answer::ListTrace for ListSpans {
    fn part(&mut self) {
        ListSpans::part(self)
    }

    fn listed(&mut self, listed: Option<Listed>, removed: usize, refused: bool) {
        ListSpans::listed(self, listed, removed, refused)
    }
}

/// A filtered list's span name (its method) and attributes: the guardrail's verdict on the
/// answer (`modify` when the caller was shown less than the server listed, `deny` when the
/// answer was refused, `allow` otherwise) and how many entries were taken out.
pub fn list_named(listed: Option<Listed>, removed: usize, refused: bool) -> Named {
    let method = listed.map(Listed::method);
    let mut attributes = Vec::new();
    if let Some(method) = method {
        attributes.push(KeyValue::new("mcp.method.name", method));
    }
    let verdict = match (refused, removed) {
        (true, _) => "deny",
        (false, 0) => "allow",
        (false, _) => "modify",
    };
    attributes.push(KeyValue::new("gen_ai.guardrail.verdict.type", verdict));
    let removed = i64::try_from(removed).unwrap_or(i64::MAX);
    attributes.push(KeyValue::new("toolgate.list.removed", removed));
    Named {
        name: method.unwrap_or(UNNAMED).to_owned(),
        attributes,
    }
}

/// What a request asks, as the span names it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Asked<'a> {
    /// `mcp.method.name`; empty when the message could not be read.
    pub method: &'a str,
    /// The tool, prompt or resource, and the attribute that names it.
    pub target: Option<&'a str>,
    pub target_key: Option<&'static str>,
    /// The request read, whose id is `jsonrpc.request.id`.
    pub request: Option<&'a McpRequest>,
    /// The protocol revision it declared (`mcp.protocol.version`).
    pub revision: Option<Revision>,
}

impl<'a> Asked<'a> {
    pub fn of(request: &'a McpRequest) -> Asked<'a> {
        let (method, target, target_key) = match request {
            McpRequest::ToolCall { name, .. } => ("tools/call", Some(name.as_str()), TOOL),
            McpRequest::Named {
                method, kind, name, ..
            } => match kind {
                Kind::Tool => (method.as_str(), Some(name.as_str()), TOOL),
                Kind::Prompt => (method.as_str(), Some(name.as_str()), PROMPT),
                Kind::Resource => (method.as_str(), Some(name.as_str()), RESOURCE),
                _ => (method.as_str(), None, None),
            },
            McpRequest::Listen { .. } => ("subscriptions/listen", None, None),
            McpRequest::Other { method, .. } => (method.as_str(), None, None),
            McpRequest::Response { .. } => ("", None, None),
        };
        Asked {
            method,
            target,
            target_key,
            request: Some(request),
            revision: None,
        }
    }

    /// [`Asked::of`] a request as read, with the revision it declared.
    pub fn read(parsed: &'a Parsed) -> Asked<'a> {
        Asked {
            revision: parsed.revision,
            ..Asked::of(&parsed.request)
        }
    }

    /// The span's name (`{mcp.method.name} {target}`, OpenTelemetry's MCP conventions) and
    /// the request's attributes. What the agent wrote is cut to a length, so spans hold
    /// bounded bytes.
    pub fn named(&self) -> Named {
        let (method, target) = (bounded(self.method), self.target.map(bounded));
        let name = match &target {
            Some(target) => format!("{method} {target}"),
            None if method.is_empty() => UNNAMED.to_owned(),
            None => method.clone(),
        };
        let mut attributes = Vec::new();
        if !method.is_empty() {
            attributes.push(KeyValue::new("mcp.method.name", method));
        }
        if let (Some(key), Some(target)) = (self.target_key, target) {
            attributes.push(KeyValue::new(key, target));
        }
        if let Some(id) = self.request.and_then(McpRequest::id) {
            let id = match id {
                serde_json::Value::String(s) => bounded(&s),
                other => bounded(&other.to_string()),
            };
            attributes.push(KeyValue::new("jsonrpc.request.id", id));
        }
        if let Some(revision) = self.revision {
            attributes.push(KeyValue::new(
                "mcp.protocol.version",
                revision.as_str().to_owned(),
            ));
        }
        Named { name, attributes }
    }

    /// A `toolgate.v1` decision on tool `tool`.
    pub fn tool(tool: &'a str) -> Asked<'a> {
        Asked {
            method: "tools/call",
            target: (!tool.is_empty()).then_some(tool),
            target_key: TOOL,
            request: None,
            revision: None,
        }
    }
}

/// A decision span's name and its request's attributes ([`Asked::named`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub name: String,
    pub attributes: Vec<KeyValue>,
}

const TOOL: Option<&str> = Some("gen_ai.tool.name");
const PROMPT: Option<&str> = Some("gen_ai.prompt.name");
const RESOURCE: Option<&str> = Some("mcp.resource.uri");

/// Longest text of the agent's a span keeps (a tool's name, a URI, an id), in bytes: MCP's
/// names are at most 128 characters; a longer text is cut at a character boundary.
pub const MAX_SPAN_TEXT_BYTES: usize = 256;

fn bounded(text: &str) -> String {
    text[..text.floor_char_boundary(MAX_SPAN_TEXT_BYTES)].to_owned()
}

/// The guardrail convention's verdict: a call a person must approve or confirm escalates.
fn verdict_type(d: &Decision) -> &'static str {
    match (d.verdict, d.code) {
        (Verdict::Allow, _) => "allow",
        (Verdict::RequireApproval, _) | (_, Code::ConfirmationRequired) => "escalate",
        (Verdict::Deny, _) => "deny",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    impl Headers for HashMap<&str, String> {
        fn header(&self, name: &str) -> Option<&str> {
            self.get(name).map(String::as_str)
        }
    }

    /// Spans to a collector nobody runs: the exporter connects lazily and drops what it
    /// cannot send, so the ids can be read.
    fn spans() -> Spans {
        Spans::start(&TraceOptions {
            endpoint: "http://127.0.0.1:9".into(),
            sample_ratio: 1.0,
        })
        .unwrap()
    }

    fn headers(traceparent: &str) -> HashMap<&'static str, String> {
        HashMap::from([("traceparent", traceparent.to_owned())])
    }

    fn carried(traceparent: &str) -> TraceCarrier {
        TraceCarrier {
            traceparent: traceparent.into(),
            tracestate: None,
        }
    }

    const BODY: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const HTTP: &str = "00-11111111111111111111111111111111-2222222222222222-01";
    const GRPC: &str = "00-33333333333333333333333333333333-4444444444444444-01";

    fn trace_of(traceparent: &str) -> [u8; 16] {
        let mut id = [0; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&traceparent[3 + 2 * i..5 + 2 * i], 16).unwrap();
        }
        id
    }

    #[test]
    fn the_message_s_context_comes_first_then_the_request_s_then_the_call_s() {
        let spans = spans();
        let (http, grpc) = (headers(HTTP), headers(GRPC));
        let opened = |transports: &[&dyn Headers], body: Option<&str>| {
            let span = DecisionSpan::new(&spans, transports);
            let ids = span.start(&Asked::tool("t"), body.map(carried).as_ref());
            span.finish(None);
            ids
        };
        assert_eq!(opened(&[&http, &grpc], Some(BODY)).trace_id, trace_of(BODY));
        assert_eq!(opened(&[&http, &grpc], None).trace_id, trace_of(HTTP));
        assert_eq!(
            opened(&[&http, &grpc], Some("junk")).trace_id,
            trace_of(HTTP)
        );
        assert_eq!(
            opened(&[&headers("junk"), &grpc], None).trace_id,
            trace_of(GRPC)
        );
        let new = opened(&[], None);
        assert!(![trace_of(BODY), trace_of(HTTP), trace_of(GRPC), [0; 16]].contains(&new.trace_id));
        assert_ne!(new.span_id, [0; 8]);
    }

    #[test]
    fn the_revision_a_message_declares_is_its_spans_protocol_version() {
        let version = |body: &str| {
            let parsed = toolgate_core::mcp::request::parse_message(body.as_bytes()).unwrap();
            let named = Asked::read(&parsed).named();
            let found = named
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "mcp.protocol.version");
            found.map(|kv| kv.value.as_str().into_owned())
        };
        let meta = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        assert_eq!(version(meta).as_deref(), Some("2026-07-28"));
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize",
            "params":{"protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":"c","version":"1"}}}"#;
        assert_eq!(version(init).as_deref(), Some("2025-06-18"));
        // A _meta revision that is no text hides nothing behind it.
        let shadowed = init.replacen(
            r#""capabilities""#,
            r#""_meta":{"io.modelcontextprotocol/protocolVersion":7},"capabilities""#,
            1,
        );
        assert_eq!(version(&shadowed).as_deref(), Some("2025-06-18"));
        // Only an initialize names it in protocolVersion; text that is no date is none.
        let other =
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"protocolVersion":"2025-06-18"}}"#;
        assert_eq!(version(other), None);
        let junk = meta.replace("2026-07-28", r"2026-07-28\n<b>");
        assert_eq!(version(&junk), None);
        let header = HashMap::from([("mcp-protocol-version", "2025-11-25".to_owned())]);
        assert_eq!(
            revision_in(&header)
                .map(|r| r.as_str().to_owned())
                .as_deref(),
            Some("2025-11-25")
        );
        assert_eq!(revision_in(&headers(HTTP)), None);
    }

    #[test]
    fn a_ratio_outside_zero_to_one_and_an_endpoint_that_is_no_url_are_refused() {
        for ratio in [-0.1, 1.5, f64::NAN] {
            let options = TraceOptions {
                endpoint: "http://127.0.0.1:4317".into(),
                sample_ratio: ratio,
            };
            assert!(Spans::start(&options).is_err(), "{ratio}");
        }
        for endpoint in [
            "",
            "127.0.0.1:4317",
            "grpc://x:1",
            "http://",
            "https://collector:4317",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "http://127.0.0.1:x",
        ] {
            let options = TraceOptions {
                endpoint: endpoint.into(),
                sample_ratio: 1.0,
            };
            assert!(Spans::start(&options).is_err(), "{endpoint:?}");
        }
    }

    #[test]
    fn text_the_sdk_would_stretch_into_a_parent_is_none() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        for lax in [
            format!(" 00-{id}-b7ad6b7169203331-01"),
            format!("00-{id}-b7ad6b7169203331-01 "),
            format!("00-+{}-b7ad6b7169203331-01", &id[1..]),
            format!("00-{}-b7ad6b7169203331-01", &id[4..]),
            format!("00-{id}-b7ad6b7169203331-1"),
            format!("0-{id}-b7ad6b7169203331-01"),
            format!("00-{id}-b7ad6b7169203331-01-00"),
            format!("ff-{id}-b7ad6b7169203331-01"),
            format!("01-{id}-b7ad6b7169203331-01x"),
        ] {
            assert!(!well_formed(&lax), "{lax:?}");
        }
        assert!(well_formed(&format!("00-{id}-b7ad6b7169203331-01")));
        assert!(well_formed(&format!("01-{id}-b7ad6b7169203331-01-later")));
    }

    #[test]
    fn an_endpoint_with_or_without_a_port_is_taken() {
        for endpoint in [
            "http://[::1]:4317",
            "http://collector",
            "http://127.0.0.1:4317/",
        ] {
            let options = TraceOptions {
                endpoint: endpoint.into(),
                sample_ratio: 0.5,
            };
            assert!(Spans::start(&options).is_ok(), "{endpoint}");
        }
    }

    #[test]
    fn the_agents_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_SPAN_TEXT_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_SPAN_TEXT_BYTES && cut.len() >= MAX_SPAN_TEXT_BYTES - 1);
        assert!(long.starts_with(&cut));
        assert_eq!(bounded("get_weather"), "get_weather");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_is_read_without_a_panic(text in ".{0,80}") {
            let _ = well_formed(&text);
            let _ = parent_in(&headers(&text));
        }

        /// Whatever text a caller sends as a traceparent, a span is opened; the caller's
        /// trace is joined only if the text is a valid W3C traceparent.
        #[test]
        fn only_a_valid_traceparent_is_a_parent(
            version in prop_oneof![Just("00".to_owned()), "[0-9a-f]{2}", ".{0,3}"],
            trace in prop_oneof!["[0-9a-f]{32}", Just("0".repeat(32)), "[0-9a-fA-F]{30,33}"],
            span in prop_oneof!["[0-9a-f]{16}", Just("0".repeat(16)), "[0-9A-F]{16}"],
            flags in prop_oneof![Just("01".to_owned()), Just("00".to_owned()), ".{0,3}"],
        ) {
            thread_local!(static SPANS: Spans = spans());
            let traceparent = format!("{version}-{trace}-{span}-{flags}");
            let ids = SPANS.with(|spans| {
                let opened = DecisionSpan::new(spans, &[]);
                let ids = opened.start(&Asked::tool("t"), Some(&carried(&traceparent)));
                opened.finish(None);
                ids
            });
            let lower_hex = |t: &str, n: usize| {
                t.len() == n && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            };
            let valid = lower_hex(&version, 2) && version != "ff"
                && lower_hex(&trace, 32) && trace.bytes().any(|b| b != b'0')
                && lower_hex(&span, 16) && span.bytes().any(|b| b != b'0')
                && lower_hex(&flags, 2);
            prop_assert_ne!(ids.trace_id, [0; 16]);
            if valid {
                prop_assert_eq!(ids.trace_id, trace_of(&traceparent));
            } else if trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()) {
                prop_assert_ne!(ids.trace_id, trace_of(&format!("00-{trace}")));
            }
        }
    }
}
