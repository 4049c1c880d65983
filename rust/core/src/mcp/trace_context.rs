//! The trace context an MCP message carries in its params' `_meta` (W3C `traceparent` and
//! `tracestate`, as MCP clients propagate it), kept as text for whoever opens the span.

/// A request's own trace context, as it carried it: unchecked text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceCarrier {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// Longest `traceparent` kept (version 00's is 55 bytes; a later version may be longer).
pub const MAX_TRACEPARENT_BYTES: usize = 256;
/// Longest `tracestate` kept: the W3C limit that every vendor must carry.
pub const MAX_TRACESTATE_BYTES: usize = 512;
