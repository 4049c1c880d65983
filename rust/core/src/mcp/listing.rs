//! Filtering a server's `tools/list` answer on its way to the agent: the tools this caller
//! can never call ([`crate::visibility`]) are taken out, so the agent neither tries them nor
//! learns that they exist.
//!
//! Fail closed: an answer that cannot be read as one JSON-RPC answer to the request (bad
//! JSON, keys a case-insensitive client reads differently, a tool without a string `name`,
//! a body over the limit) is not forwarded: the agent gets a JSON-RPC error instead.
//! Pagination is untouched (`nextCursor` is kept, even when a page is emptied), and an
//! answer that says how it may be cached (`cacheScope`, MCP 2026-07-28) is marked
//! `"private"` when the filtering depended on who asked.

use super::answer::{case_variant, error_message, is_answer, Framing};
use super::sse::{EventSplitter, MAX_EVENT_BYTES};
use super::strict_json;
use crate::visibility::Visibility;
use serde_json::{Map, Value};

/// JSON-RPC's "internal error": the proxy could not pass the answer on.
pub const INTERNAL_ERROR: i64 = -32603;

const MESSAGE_KEYS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
const RESULT_KEYS: [&str; 5] = ["tools", "nextCursor", "cacheScope", "ttlMs", "_meta"];
const TOOL_KEYS: [&str; 1] = ["name"];

/// What filtering one answer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListReport {
    /// The answer to the request was seen (filtered, passed on as an error, or refused).
    pub answered: bool,
    pub shown: usize,
    pub removed: usize,
    /// Some tool's visibility depended on the caller.
    pub per_subject: bool,
    /// Why the answer was refused: the agent got a JSON-RPC error in its place.
    pub refused: Option<String>,
}

/// One `tools/list` answer, filtered as its body arrives.
pub struct ListFilter<F> {
    /// `None`: a media type that carries no message (refused at the end).
    framing: Option<Framing>,
    id: Value,
    visibility: F,
    body: Vec<u8>,
    /// The JSON body went over the limit: what arrives is dropped, the answer refused.
    overflow: bool,
    events: EventSplitter,
    /// The answer has been passed on (or refused): nothing after it is.
    finished: bool,
    pub report: ListReport,
}

impl<F: FnMut(&str) -> Visibility> ListFilter<F> {
    /// A filter for the answer to request `id`, deciding each tool with `visibility`.
    pub fn new(framing: Option<Framing>, id: Value, visibility: F) -> Self {
        ListFilter {
            framing,
            id,
            visibility,
            body: Vec::new(),
            overflow: false,
            events: EventSplitter::default(),
            finished: false,
            report: ListReport::default(),
        }
    }

    /// Take the next part of the body (`end`: the last); return what to send on now.
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        match self.framing {
            Some(Framing::EventStream) => self.feed_events(chunk, end),
            _ => self.feed_json(chunk, end),
        }
    }

    fn feed_json(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        if !self.overflow {
            self.body.extend_from_slice(chunk);
            if self.body.len() > MAX_EVENT_BYTES {
                self.overflow = true;
                self.body = Vec::new();
            }
        }
        if !end {
            return Vec::new();
        }
        let body = std::mem::take(&mut self.body);
        let outcome = if self.overflow {
            Err(format!("the answer is over {MAX_EVENT_BYTES} bytes"))
        } else if self.framing.is_none() {
            Err("the answer's content-type carries no MCP message".into())
        } else {
            self.answer(&body)
        };
        self.finished = true;
        match outcome {
            Ok(Some(filtered)) => filtered,
            Ok(None) => body,
            Err(why) => self.refuse(why),
        }
    }

    fn feed_events(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        let events = match self.events.feed(chunk, end) {
            Ok(events) => events,
            Err(_) if self.finished => return Vec::new(),
            Err(_) => {
                self.finished = true;
                let why = format!("an event of the answer is over {MAX_EVENT_BYTES} bytes");
                return event(&self.refuse(why));
            }
        };
        let mut out = Vec::new();
        for e in events {
            if self.finished {
                // The server should have closed the stream after its answer.
                continue;
            }
            // No data (a comment, an `id:` for resuming, a keep-alive): no message.
            let Some(data) = e.data.as_ref().filter(|d| !d.trim_ascii().is_empty()) else {
                out.extend_from_slice(&e.raw);
                continue;
            };
            let message = strict_json::parse(data);
            let theirs = matches!(&message, Ok(Value::Object(m)) if !is_answer(m));
            if theirs {
                // A request or notification of the server's, not the answer.
                out.extend_from_slice(&e.raw);
                continue;
            }
            self.finished = true;
            match self.answer(data) {
                Ok(Some(filtered)) => out.extend_from_slice(&e.with_data(&filtered)),
                Ok(None) => out.extend_from_slice(&e.raw),
                Err(why) => out.extend_from_slice(&event(&self.refuse(why))),
            }
        }
        out
    }

    /// Filter one answer: `None` to pass it on as it is, or the filtered message.
    fn answer(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.report.answered = true;
        let message = match strict_json::parse(bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("the answer is not a JSON object".into()),
            Err(e) => return Err(format!("the answer cannot be read: {e}")),
        };
        if let Some(key) = case_variant(&message, &MESSAGE_KEYS) {
            return Err(format!(
                "the answer's key {key:?} differs from a JSON-RPC key only by case"
            ));
        }
        if message.get("id") != Some(&self.id) {
            return Err(format!(
                "the answer's id {} is not the request's {}",
                message.get("id").unwrap_or(&Value::Null),
                self.id
            ));
        }
        match (message.get("result"), message.get("error")) {
            // An error lists no tools: it goes on as it is.
            (None, Some(_)) if !message.contains_key("method") => Ok(None),
            (Some(Value::Object(_)), None) if !message.contains_key("method") => {
                self.filter(message)
            }
            _ => Err("the answer must carry either a result object or an error".into()),
        }
    }

    fn filter(&mut self, mut message: Map<String, Value>) -> Result<Option<Vec<u8>>, String> {
        let Some(Value::Object(result)) = message.get_mut("result") else {
            unreachable!("checked by the caller");
        };
        if let Some(key) = case_variant(result, &RESULT_KEYS) {
            return Err(format!(
                "the result's key {key:?} differs from a known key only by case"
            ));
        }
        let Some(Value::Array(tools)) = result.get_mut("tools") else {
            return Err("the result has no \"tools\" list".into());
        };
        let mut keep = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            let Value::Object(tool) = tool else {
                return Err(format!("tools[{i}] is not an object"));
            };
            if let Some(key) = case_variant(tool, &TOOL_KEYS) {
                return Err(format!(
                    "tools[{i}] has a key {key:?} that differs from \"name\" only by case"
                ));
            }
            let Some(Value::String(name)) = tool.get("name") else {
                return Err(format!("tools[{i}] has no string \"name\""));
            };
            let seen = (self.visibility)(name);
            self.report.per_subject |= seen.per_subject;
            keep.push(seen.shown());
        }
        let removed = keep.iter().filter(|k| !**k).count();
        self.report.removed += removed;
        self.report.shown += keep.len() - removed;
        if removed > 0 {
            let mut keep = keep.into_iter();
            tools.retain(|_| keep.next().unwrap_or(false));
        }
        let mark_private =
            self.report.per_subject && result.get("cacheScope").is_some_and(|s| s != "private");
        if removed == 0 && !mark_private {
            return Ok(None);
        }
        if mark_private {
            result.insert("cacheScope".into(), "private".into());
        }
        Ok(Some(
            serde_json::to_vec(&message).expect("JSON values always serialize"),
        ))
    }

    /// The JSON-RPC error sent instead of a refused answer.
    fn refuse(&mut self, why: String) -> Vec<u8> {
        let message = format!(
            "the server's tools/list answer was refused by the proxy's policy check: {why}"
        );
        self.report.refused = Some(why);
        error_message(&self.id, INTERNAL_ERROR, &message)
    }
}

/// A message as one event of a stream.
fn event(message: &[u8]) -> Vec<u8> {
    let mut out = b"event: message\ndata: ".to_vec();
    out.extend_from_slice(message);
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Code;
    use serde_json::json;

    fn hide_delete(name: &str) -> Visibility {
        Visibility {
            removed: name.starts_with("delete").then_some(Code::Hidden),
            per_subject: false,
        }
    }

    fn filter_json(body: &Value, id: Value) -> (Value, ListReport) {
        let mut f = ListFilter::new(Some(Framing::Json), id, hide_delete);
        let out = f.feed(body.to_string().as_bytes(), true);
        (serde_json::from_slice(&out).unwrap(), f.report)
    }

    #[test]
    fn removes_tools_and_keeps_the_cursor() {
        let body = json!({"jsonrpc": "2.0", "id": 3, "result": {
            "tools": [{"name": "read"}, {"name": "delete_all"}], "nextCursor": "p2"}});
        let (out, report) = filter_json(&body, json!(3));
        assert_eq!(out["result"]["tools"], json!([{"name": "read"}]));
        assert_eq!(out["result"]["nextCursor"], "p2");
        assert_eq!((report.shown, report.removed), (1, 1));
    }

    #[test]
    fn an_emptied_page_keeps_its_cursor() {
        let body = json!({"jsonrpc": "2.0", "id": "a", "result": {
            "tools": [{"name": "delete_x"}], "nextCursor": "p3"}});
        let (out, _) = filter_json(&body, json!("a"));
        assert_eq!(out["result"], json!({"tools": [], "nextCursor": "p3"}));
    }

    #[test]
    fn refuses_what_a_client_could_read_otherwise() {
        let cases = [
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"Name": "delete_x"}]}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"Tools": [{"name": "delete_x"}]}}),
            json!({"jsonrpc": "2.0", "id": 1, "Result": {"tools": []}}),
            json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": 5}]}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": "x"}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
            json!([1]),
        ];
        for body in cases {
            let (out, report) = filter_json(&body, json!(1));
            assert_eq!(out["error"]["code"], INTERNAL_ERROR, "{body}");
            assert_eq!(out["id"], 1);
            assert!(report.refused.is_some(), "{body}");
        }
        let mut f = ListFilter::new(Some(Framing::Json), json!(1), hide_delete);
        let dup = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"delete"}]}}"#;
        let out: Value = serde_json::from_slice(&f.feed(dup, true)).unwrap();
        assert_eq!(out["error"]["code"], INTERNAL_ERROR);
    }

    #[test]
    fn passes_errors_and_untouched_lists_byte_for_byte() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#,
            r#"{"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "read", "x": 1.50}]}}"#,
        ] {
            let mut f = ListFilter::new(Some(Framing::Json), json!(1), hide_delete);
            let mut out = f.feed(&body.as_bytes()[..5], false);
            out.extend(f.feed(&body.as_bytes()[5..], true));
            assert_eq!(out, body.as_bytes());
        }
    }

    #[test]
    fn marks_a_per_caller_list_private_when_it_says_how_to_cache() {
        let per = |_: &str| Visibility {
            removed: None,
            per_subject: true,
        };
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "tools": [{"name": "a"}], "cacheScope": "public", "ttlMs": 60000}});
        let mut f = ListFilter::new(Some(Framing::Json), json!(1), per);
        let out: Value =
            serde_json::from_slice(&f.feed(body.to_string().as_bytes(), true)).unwrap();
        assert_eq!(out["result"]["cacheScope"], "private");
        assert_eq!(out["result"]["ttlMs"], 60000);
        // A legacy answer (no cache hints) gets none.
        let legacy = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "a"}]}});
        let mut f = ListFilter::new(Some(Framing::Json), json!(1), per);
        let out = f.feed(legacy.to_string().as_bytes(), true);
        assert_eq!(out, legacy.to_string().as_bytes());
    }

    #[test]
    fn filters_the_answer_event_of_a_stream_and_passes_the_rest() {
        let answer = json!({"jsonrpc": "2.0", "id": 9, "result": {
            "tools": [{"name": "delete_x"}, {"name": "read"}]}});
        let stream = format!(
            ": hi\n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\nevent: message\nid: e1\ndata: {answer}\n\n"
        );
        for cut in 0..stream.len() {
            let mut f = ListFilter::new(Some(Framing::EventStream), json!(9), hide_delete);
            let mut out = f.feed(&stream.as_bytes()[..cut], false);
            out.extend(f.feed(&stream.as_bytes()[cut..], true));
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.starts_with(": hi\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\"")
            );
            let last = text.rsplit("data: ").next().unwrap().trim();
            let filtered: Value = serde_json::from_str(last).unwrap();
            assert_eq!(filtered["result"]["tools"], json!([{"name": "read"}]));
            assert!(text.contains("id: e1\n"));
            assert_eq!(f.report.removed, 1);
        }
    }

    #[test]
    fn refuses_an_unreadable_answer_event_and_drops_what_follows() {
        let stream = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"a\"}],\"tools\":[]}}\n\ndata: more\n\n";
        let mut f = ListFilter::new(Some(Framing::EventStream), json!(9), hide_delete);
        let out = String::from_utf8(f.feed(stream.as_bytes(), true)).unwrap();
        let data = out.strip_prefix("event: message\ndata: ").unwrap();
        let error: Value = serde_json::from_str(data.trim()).unwrap();
        assert_eq!(error["error"]["code"], INTERNAL_ERROR);
        assert!(!out.contains("more"));
    }

    #[test]
    fn refuses_a_body_that_carries_no_message() {
        let mut f = ListFilter::new(None, json!(1), hide_delete);
        assert!(f.feed(b"<html>", false).is_empty());
        let out: Value = serde_json::from_slice(&f.feed(b"</html>", true)).unwrap();
        assert_eq!(out["error"]["code"], INTERNAL_ERROR);
    }
}
