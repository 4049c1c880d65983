//! Whether a `tools/call` that was let through ran, read from the server's answer as it
//! passes back, so that a call which failed upstream can give back what it counted.
//!
//! A call did not run when the answer says the server refused it before running it: an HTTP
//! client-error status (4xx), or a JSON-RPC error of the kinds raised before a handler is
//! called (parse error, invalid request, unknown method, invalid params). A result with
//! `isError: true` is a tool error: the tool ran, and may have acted before it failed, so it
//! is told apart for a rule to decide. Anything else counts as having run: a server error
//! (5xx, `-32603`), a cancelled call (`-32800`, which a client can cause while its call
//! runs), an answer that cannot be read or never arrives. Giving counts back wrongly would
//! let calls over the limit; keeping them only errs towards denying.

use super::answer::Framing;
use super::sse::{EventSplitter, MAX_EVENT_BYTES};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

/// How a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The HTTP answer's status was a client error (4xx): the request was refused.
    HttpStatus(u16),
    /// The answer was a JSON-RPC error raised before any handler ran.
    JsonRpcError,
    /// The answer was a result with `isError: true`: the tool ran and reported an error.
    ToolError,
}

/// JSON-RPC errors a server raises before it calls a handler: parse error, invalid
/// request, method not found, invalid params.
const REFUSED_BEFORE_RUNNING: [i64; 4] = [-32700, -32600, -32601, -32602];

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::HttpStatus(_) => "http_status",
            Failure::JsonRpcError => "jsonrpc_error",
            Failure::ToolError => "tool_error",
        }
    }
}

/// What is known of the call so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ran,
    Failed(Failure),
}

/// How the answer's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Not known yet: from the content type when it is given, else from the body's first
    /// bytes ([`Framing::sniff`]).
    Unknown,
    Framed(Framing),
    /// A media type that carries no message.
    Nothing,
}

/// Follows one `tools/call` answer.
pub struct CallWatcher {
    reading: Reading,
    /// The status has been seen.
    headed: bool,
    id: Value,
    body: Vec<u8>,
    events: EventSplitter,
    outcome: Outcome,
    /// The id of the task the answer created (a call that asked for one).
    task: Option<String>,
}

/// The parts of a JSON-RPC message that say whether a call failed; the rest is skipped
/// unread. A duplicated field fails to deserialize, and such an answer counts as run.
#[derive(Deserialize)]
struct Message {
    id: Option<Value>,
    method: Option<IgnoredAny>,
    result: Option<ToolResult>,
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: Option<i64>,
    #[serde(flatten)]
    _rest: std::collections::HashMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct ToolResult {
    #[serde(rename = "isError")]
    is_error: Option<bool>,
    /// A task-augmented call's answer (`CreateTaskResult`).
    task: Option<CreatedTask>,
}

#[derive(Deserialize)]
struct CreatedTask {
    #[serde(rename = "taskId")]
    task_id: Option<String>,
}

impl CallWatcher {
    /// Follow the answer to request `id`.
    pub fn new(id: Value) -> CallWatcher {
        CallWatcher {
            reading: Reading::Unknown,
            headed: false,
            id,
            body: Vec::new(),
            events: EventSplitter::default(),
            outcome: Outcome::Pending,
            task: None,
        }
    }

    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The id of the task the answer created, once it is read (a call that asked for one is
    /// answered with one; a call that asked for none never is).
    pub fn created_task(&self) -> Option<&str> {
        self.task.as_deref()
    }

    /// Whether the answer's status has been seen.
    pub fn headed(&self) -> bool {
        self.headed
    }

    /// The answer's status arrived, and its content type when the proxy sent its headers
    /// (`None`: the body will say).
    pub fn head(&mut self, status: u16, content_type: Option<&str>) -> Outcome {
        self.headed = true;
        if let Some(content_type) = content_type {
            self.reading = Framing::of(content_type).map_or(Reading::Nothing, Reading::Framed);
        }
        if self.outcome == Outcome::Pending {
            if (400..500).contains(&status) {
                self.outcome = Outcome::Failed(Failure::HttpStatus(status));
            } else if status >= 500 {
                // A server error may come after the tool acted (the session ended mid-call).
                self.outcome = Outcome::Ran;
            } else if self.reading == Reading::Nothing {
                self.outcome = Outcome::Ran;
            }
        }
        self.outcome
    }

    /// Bytes held until the rest of the answer arrives.
    pub fn held(&self) -> usize {
        self.body.len() + self.events.held()
    }

    /// Stop reading: the call counts as run (its reservation kept), and nothing is held.
    pub fn give_up(&mut self) {
        if self.outcome == Outcome::Pending {
            self.outcome = Outcome::Ran;
        }
        self.body = Vec::new();
        self.events = EventSplitter::default();
    }

    /// The next part of the body (`end`: the last) arrived.
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> Outcome {
        if self.outcome != Outcome::Pending {
            return self.outcome;
        }
        if self.reading == Reading::Unknown {
            if let Some(framing) = Framing::sniff(chunk) {
                self.reading = Reading::Framed(framing);
            }
        }
        match self.reading {
            Reading::Framed(Framing::Json) => {
                self.body.extend_from_slice(chunk);
                // A message is whole when it ends with its closing brace: read it then, so the
                // outcome is known without waiting for the body's end.
                let closed = chunk.trim_ascii_end().ends_with(b"}");
                if self.body.len() > MAX_EVENT_BYTES {
                    self.outcome = Outcome::Ran;
                } else if end || closed {
                    match answer(&self.id, &self.body) {
                        Some((outcome, task)) => (self.outcome, self.task) = (outcome, task),
                        None if end => self.outcome = Outcome::Ran,
                        None => {}
                    }
                }
            }
            Reading::Framed(Framing::EventStream) => match self.events.feed(chunk, end) {
                Ok(events) => {
                    let answers = events.iter().filter_map(|e| e.data.as_deref());
                    for data in answers {
                        if let Some((outcome, task)) = answer(&self.id, data) {
                            (self.outcome, self.task) = (outcome, task);
                            break;
                        }
                    }
                }
                Err(_) => self.outcome = Outcome::Ran,
            },
            Reading::Unknown => {}
            Reading::Nothing => self.outcome = Outcome::Ran,
        }
        if end && self.outcome == Outcome::Pending {
            self.outcome = Outcome::Ran;
        }
        self.outcome
    }
}

/// The outcome if `data` is the answer to request `id`, with the id of the task it created;
/// `None` if it is another message.
fn answer(id: &Value, data: &[u8]) -> Option<(Outcome, Option<String>)> {
    let message: Message = serde_json::from_slice(data).ok()?;
    if message.method.is_some() || message.id.as_ref() != Some(id) {
        return None;
    }
    Some(match (message.error, message.result) {
        (Some(ErrorObject { code: Some(c), .. }), None) if REFUSED_BEFORE_RUNNING.contains(&c) => {
            (Outcome::Failed(Failure::JsonRpcError), None)
        }
        (
            None,
            Some(ToolResult {
                is_error: Some(true),
                ..
            }),
        ) => (Outcome::Failed(Failure::ToolError), None),
        (None, Some(ToolResult { task, .. })) => (Outcome::Ran, task.and_then(|t| t.task_id)),
        _ => (Outcome::Ran, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn watch(status: u16, content_type: &str, body: &str, id: Value) -> Outcome {
        let mut w = CallWatcher::new(id);
        w.head(status, Some(content_type));
        let (a, b) = body.split_at(body.len() / 2);
        w.feed(a.as_bytes(), false);
        w.feed(b.as_bytes(), true)
    }

    #[test]
    fn failures_are_errors_tool_errors_and_error_statuses() {
        let json = "application/json";
        let error = r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32602,"message":"Unknown tool"}}"#;
        let tool_error = r#"{"jsonrpc":"2.0","id":4,"result":{"content":[],"isError":true}}"#;
        let ok =
            r#"{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"isError"}]}}"#;
        assert_eq!(
            watch(200, json, error, json!(4)),
            Outcome::Failed(Failure::JsonRpcError)
        );
        assert_eq!(
            watch(200, json, tool_error, json!(4)),
            Outcome::Failed(Failure::ToolError)
        );
        assert_eq!(watch(200, json, ok, json!(4)), Outcome::Ran);
        for status in [400, 404, 429] {
            assert_eq!(
                watch(status, "text/plain", "refused", json!(4)),
                Outcome::Failed(Failure::HttpStatus(status))
            );
        }
        // What could come after the tool acted keeps the call counted: a server error, a
        // call cancelled while it ran (the client can ask for that), an internal error.
        assert_eq!(watch(503, "text/plain", "busy", json!(4)), Outcome::Ran);
        assert_eq!(watch(500, json, error, json!(4)), Outcome::Ran);
        for code in ["-32800", "-32603", "-32000", "0", "null"] {
            let late =
                format!(r#"{{"jsonrpc":"2.0","id":4,"error":{{"code":{code},"message":"x"}}}}"#);
            assert_eq!(watch(200, json, &late, json!(4)), Outcome::Ran, "{code}");
        }
        for code in REFUSED_BEFORE_RUNNING {
            let early =
                format!(r#"{{"jsonrpc":"2.0","id":4,"error":{{"code":{code},"message":"x"}}}}"#);
            assert_eq!(
                watch(200, json, &early, json!(4)),
                Outcome::Failed(Failure::JsonRpcError)
            );
        }
        // Another request's answer, or one that cannot be read, is not this call's failure.
        assert_eq!(watch(200, json, error, json!(5)), Outcome::Ran);
        assert_eq!(watch(200, json, "{not json", json!(4)), Outcome::Ran);
        let twice = r#"{"jsonrpc":"2.0","id":4,"error":{},"error":{}}"#;
        assert_eq!(watch(200, json, twice, json!(4)), Outcome::Ran);
    }

    #[test]
    fn finds_the_answer_among_a_streams_events() {
        let stream = concat!(
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n",
            "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"c\",\"result\":{\"isError\":true,\"content\":[]}}\n\n"
        );
        for cut in 0..stream.len() {
            let mut w = CallWatcher::new(json!("c"));
            w.head(200, Some("text/event-stream"));
            w.feed(&stream.as_bytes()[..cut], false);
            assert_eq!(
                w.feed(&stream.as_bytes()[cut..], true),
                Outcome::Failed(Failure::ToolError),
                "cut at {cut}"
            );
        }
        let mut w = CallWatcher::new(json!("c"));
        w.head(200, Some("text/event-stream"));
        assert_eq!(w.feed(b": only a comment\n\n", true), Outcome::Ran);
    }

    #[test]
    fn without_headers_the_body_says_how_it_is_framed() {
        let error = r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"x"}}"#;
        let event = format!("data: {error}\n\n");
        for body in [format!("  {error}"), event] {
            let mut w = CallWatcher::new(json!(4));
            w.head(200, None);
            assert_eq!(w.feed(b"", false), Outcome::Pending);
            assert_eq!(
                w.feed(body.as_bytes(), false),
                Outcome::Failed(Failure::JsonRpcError),
                "{body}"
            );
        }
    }

    #[test]
    fn a_json_answer_is_read_once_it_closes_not_before() {
        let tool_error =
            r#"{"jsonrpc":"2.0","id":4,"result":{"content":[{"text":"}"}],"isError":true}}"#;
        let mut w = CallWatcher::new(json!(4));
        w.head(200, Some("application/json"));
        // Cut after a brace inside a string: not yet a whole message.
        let cut = tool_error.find("\"}\"").unwrap() + 2;
        assert_eq!(
            w.feed(&tool_error.as_bytes()[..cut], false),
            Outcome::Pending
        );
        assert_eq!(
            w.feed(&tool_error.as_bytes()[cut..], false),
            Outcome::Failed(Failure::ToolError)
        );
    }
}
