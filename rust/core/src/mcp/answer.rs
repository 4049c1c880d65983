//! What an MCP server's answer to one HTTP request looks like on the way back: one JSON
//! message (`application/json`) or an event stream (`text/event-stream`) whose events carry
//! messages, the answer to the request among them.

use super::fold::fold_eq;
use serde_json::{Map, Value};

/// How an answer's body is framed, from its `content-type`.
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
