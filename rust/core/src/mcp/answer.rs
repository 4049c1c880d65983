//! What an MCP server's answer to one HTTP request looks like on the way back: one JSON
//! message (`application/json`) or an event stream (`text/event-stream`) whose events carry
//! messages, the answer to the request among them.

use crate::json::fold::fold_eq;
use serde_json::{Map, Value};

/// How an answer's body is framed: from its `content-type`, or from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    EventStream,
}

impl Framing {
    /// `None` for a media type that carries no MCP message.
    pub fn of(content_type: &str) -> Option<Framing> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/json") {
            Some(Framing::Json)
        } else if media.eq_ignore_ascii_case("text/event-stream") {
            Some(Framing::EventStream)
        } else {
            None
        }
    }

    /// The framing `body`'s first bytes show: a JSON message opens with `{` (a batch with
    /// `[`), after any JSON whitespace; anything else is read as an event stream. `None`
    /// while only whitespace has come, which both framings allow.
    ///
    /// Read from the bytes, not the headers, the framing cannot differ from a client's:
    /// no valid JSON text holds an event (its lines start with whitespace or a JSON token,
    /// never `data`), and an event stream that is only events and comments is no valid JSON
    /// text, so a body that passes in the framing read here carries nothing to a client
    /// that reads the other.
    pub fn sniff(body: &[u8]) -> Option<Framing> {
        let first = body
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
        Some(match first {
            b'{' | b'[' => Framing::Json,
            _ => Framing::EventStream,
        })
    }
}

/// A message is an answer when it has a `result` or an `error` (and no `method`).
pub fn is_answer(message: &Map<String, Value>) -> bool {
    !message.contains_key("method")
        && (message.contains_key("result") || message.contains_key("error"))
}

/// The keys of `members` that a case-insensitive decoder would read as one of `known`
/// without being it: a message that says one thing to us and another to such a client.
pub fn case_variant<'a>(members: &'a Map<String, Value>, known: &[&str]) -> Option<&'a str> {
    members
        .keys()
        .find(|key| known.iter().any(|k| *k != key.as_str() && fold_eq(k, key)))
        .map(String::as_str)
}

/// A JSON-RPC error answering `id`, for a body that is refused on its way back.
pub fn error_message(id: &Value, code: i64, message: &str) -> Vec<u8> {
    let error = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    serde_json::to_vec(&error).expect("JSON values always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_media_types() {
        assert_eq!(
            Framing::of("application/json; charset=utf-8"),
            Some(Framing::Json)
        );
        assert_eq!(Framing::of("Text/Event-Stream"), Some(Framing::EventStream));
        assert_eq!(Framing::of("text/plain"), None);
        assert_eq!(Framing::of(""), None);
    }

    #[test]
    fn sniffs_the_framing_past_whitespace() {
        assert_eq!(Framing::sniff(b" \r\n\t{"), Some(Framing::Json));
        assert_eq!(Framing::sniff(b"["), Some(Framing::Json));
        assert_eq!(Framing::sniff(b"\n\ndata: {}"), Some(Framing::EventStream));
        // Not JSON whitespace: a form feed, a byte order mark (which an event stream may open
        // with, and the event reader strips).
        assert_eq!(Framing::sniff(b"\x0c{"), Some(Framing::EventStream));
        assert_eq!(Framing::sniff(b"\xEF\xBB\xBF{"), Some(Framing::EventStream));
        assert_eq!(Framing::sniff(b" \r\n"), None);
        assert_eq!(Framing::sniff(b""), None);
    }

    #[test]
    fn finds_case_variants_of_known_keys() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            case_variant(&m(json!({"Name": 1, "x": 2})), &["name"]),
            Some("Name")
        );
        assert_eq!(case_variant(&m(json!({"name": 1})), &["name"]), None);
        assert_eq!(
            case_variant(&m(json!({"nextcursor": 1})), &["nextCursor"]),
            Some("nextcursor")
        );
        assert_eq!(
            case_variant(&m(json!({"toolſ": 1})), &["tools"]),
            Some("toolſ")
        );
    }
}
