//! A decision as a span in Envoy's trace: where Envoy traces a request, its decision is a
//! child of Envoy's span for it, named and described as `toolgate serve`'s decision spans are
//! (`toolgate_server::spans`: `tools/call NAME`, the MCP conventions' and the guardrail
//! convention's attributes), exported by Envoy's own tracer, and sampled as Envoy samples.
//! The decision log's line names the span. Where Envoy does not trace, a request pays one
//! callback.
//!
//! The span is started on the stream's worker when the request is whole, and finished there
//! once the decision is applied; a decision made on a decider thread (Redis) is inside it.
//! Each list filtered for its caller is a span too ([`ListSpans`]), as behind ext_proc.

use crate::abi::{ChildSpan, Stream};
use opentelemetry::KeyValue;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolgate_core::decision::Decision;
use toolgate_core::engine::gate::SpanOpener;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::request::Parsed;
use toolgate_core::mcp::revision::Revision;
use toolgate_core::trace_ids::{self, TraceIds, Wait};
use toolgate_server::answer::ListTrace;
use toolgate_server::spans::{decided, guardrail, list_named, Asked, Named, UNNAMED};

/// A decision's span, on the stream's worker.
pub struct DecisionSpan {
    span: ChildSpan,
    /// Its ids, for the decision log (none if Envoy's tracer gave none it could read).
    pub ids: Option<TraceIds>,
}

impl DecisionSpan {
    /// The span of the request `stream` holds, if Envoy traces it.
    pub fn start(stream: Stream) -> Option<DecisionSpan> {
        let span = stream.child_span(UNNAMED)?;
        let ids = span.ids().and_then(|(trace, id)| ids_of(&trace, &id));
        Some(DecisionSpan { span, ids })
    }

    /// End the span of a request refused before it was decided (`why`: the proxy was busy,
    /// or the module failed deciding it), as an error of toolgate's.
    pub fn failed(self, why: &'static str) {
        described(
            &self.span,
            "input",
            [KeyValue::new("error.type", why)].iter(),
        );
    }

    /// Name the span after the request and say what was decided, and end it.
    pub fn finish(self, named: Option<&Named>, decision: Option<&Decision>) {
        let span = &self.span;
        if let Some(named) = named {
            span.set_operation(&named.name);
        }
        let request = named.into_iter().flat_map(|n| n.attributes.iter());
        described(span, "input", request.chain(&decided(decision)));
    }
}

/// `span` tagged as a guardrail span of `target`, with `attributes`.
fn described<'a>(
    span: &ChildSpan,
    target: &'static str,
    attributes: impl Iterator<Item = &'a KeyValue>,
) {
    let tag = |kv: &KeyValue| span.set_tag(kv.key.as_str(), &kv.value.as_str());
    guardrail(target).iter().for_each(tag);
    attributes.for_each(tag);
}

/// The lists a follower filters, as spans under Envoy's span for the request: the follower
/// (which runs where Envoy may not be called) notes each list it ended ([`ListSpans::noter`]),
/// and the stream's worker makes their spans after each part of the answer
/// ([`ListSpans::make`]), begun and ended then: Envoy starts a span when it is made.
#[derive(Default)]
pub struct ListSpans {
    ended: Arc<Mutex<Vec<Named>>>,
}

impl ListSpans {
    /// What the follower is given to note lists with.
    pub fn noter(&self) -> Box<dyn ListTrace> {
        Box::new(Noter(Arc::clone(&self.ended)))
    }

    /// The spans of the lists that ended since the last call.
    pub fn make(&self, stream: Stream) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        for named in ended.drain(..) {
            if let Some(span) = stream.child_span(&named.name) {
                described(&span, "output", named.attributes.iter());
            }
        }
    }
}

struct Noter(Arc<Mutex<Vec<Named>>>);

impl ListTrace for Noter {
    fn part(&mut self) {}

    fn listed(&mut self, listed: Option<Listed>, removed: usize, refused: bool) {
        let named = list_named(listed, removed, refused);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(named);
    }
}

/// Where a decision is traced, on whichever thread decides: the ids of its span, which the
/// decision's log line takes, and what the request asked, which names the span once back on
/// the worker.
pub struct Naming {
    ids: Option<TraceIds>,
    /// The revision the request's headers declared (`MCP-Protocol-Version`).
    revision: Option<Revision>,
    named: RefCell<Option<Named>>,
}

impl Naming {
    pub fn new(ids: Option<TraceIds>, revision: Option<Revision>) -> Naming {
        Naming {
            ids,
            revision,
            named: RefCell::new(None),
        }
    }

    /// What the request asked, once read, and what its decision waited on.
    pub fn named(self) -> Option<Named> {
        let waits = trace_ids::take_waits();
        let mut named = self.named.into_inner()?;
        named.attributes.extend(waited(&waits));
        Some(named)
    }
}

/// What a decision's round trips to its store took, as attributes of its span: Envoy's span
/// ABI starts a span when it is made, so a wait already over (on a decider thread) cannot be
/// a span of its own with its own times, as the sidecar's are.
fn waited(waits: &[Wait]) -> Vec<KeyValue> {
    let Some(first) = waits.first() else {
        return Vec::new();
    };
    let took: Duration = waits.iter().map(|w| w.took).sum();
    let mut out = vec![
        KeyValue::new("db.system.name", first.system),
        KeyValue::new("toolgate.store.round_trips", waits.len() as i64),
        KeyValue::new("toolgate.store.waited_ms", took.as_secs_f64() * 1e3),
    ];
    if waits.iter().any(|w| w.failed) {
        out.push(KeyValue::new("toolgate.store.failed", true));
    }
    out
}

impl SpanOpener for Naming {
    fn open(&self, read: Option<&Parsed>) -> Option<TraceIds> {
        let asked = read.map_or_else(Asked::default, Asked::read);
        let asked = Asked {
            revision: asked.revision.or(self.revision),
            ..asked
        };
        *self.named.borrow_mut() = Some(asked.named());
        self.ids
    }
}

/// Ids written as W3C Trace Context writes them (32 and 16 hex digits, not all zero); a trace
/// id of 16 digits (a tracer's 64-bit ids) is the 128-bit one with zeros in front, as W3C
/// Trace Context carries it.
fn ids_of(trace: &str, span: &str) -> Option<TraceIds> {
    let padded;
    let trace = match trace.len() {
        16 => {
            padded = format!("{:0>32}", trace);
            padded.as_str()
        }
        _ => trace,
    };
    fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
        let bytes = text.as_bytes();
        if bytes.len() != 2 * N || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut out = [0u8; N];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        (out != [0u8; N]).then_some(out)
    }
    // Envoy's span ABI does not say whether the span is sampled; only the log line reads it.
    Some(TraceIds {
        trace_id: hex(trace)?,
        span_id: hex(span)?,
        sampled: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_as_trace_context_writes_them() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let ids = ids_of(trace, "00f067aa0ba902b7").unwrap();
        assert_eq!(ids.trace_id[..2], [0x4b, 0xf9]);
        assert_eq!(ids.span_id[7], 0xb7);
        let short = ids_of(&trace[16..], "00f067aa0ba902b7").unwrap();
        assert_eq!(short.trace_id[..8], [0; 8]);
        assert_eq!(short.trace_id[8..], ids.trace_id[8..]);
        for (t, s) in [
            (trace, "00f067aa0ba902b"),
            (&trace[1..], "00f067aa0ba902b7"),
            ("0".repeat(32).as_str(), "00f067aa0ba902b7"),
            (trace, "0000000000000000"),
            (trace, "+0f067aa0ba902b7"),
            (trace, "00f067aa0ba902bé"),
        ] {
            assert_eq!(ids_of(t, s), None, "{t} {s}");
        }
    }
}
