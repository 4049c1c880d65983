//! What an MCP server's answer to one HTTP request looks like on the way back: one JSON
//! message (`application/json`) or an event stream (`text/event-stream`) whose events carry
//! messages, the answer to the request among them.

use super::fold::fold_eq;
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

/// Whether a client decodes a body sent with `content_type` as UTF-8, as the filters read it:
/// no `charset`, or `utf-8` / `us-ascii`. Some clients decode an event stream by the charset
/// it names (the official Python SDK does), and in UTF-7 or EBCDIC, bytes the filters read as
/// one comment are an event to such a client. Parameters are read strictly: anything a MIME
/// parser might read a charset out of otherwise (RFC 2231's `charset*` and `charset*0`,
/// comments, quoted pairs, a parameter without a value, two charsets) is refused.
pub fn read_as_utf8(content_type: &str) -> bool {
    if content_type.contains(['(', ')', '\\', '\'']) {
        return false;
    }
    let mut charset = None;
    for parameter in content_type.split(';').skip(1) {
        let parameter = parameter.trim();
        if parameter.is_empty() {
            continue;
        }
        let Some((name, value)) = parameter.split_once('=') else {
            return false;
        };
        let name = name.trim();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"-_.+".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return false;
        }
        if name.eq_ignore_ascii_case("charset") && charset.replace(value.trim()).is_some() {
            return false;
        }
    }
    charset.is_none_or(|c| {
        let c = c
            .strip_prefix('"')
            .and_then(|c| c.strip_suffix('"'))
            .unwrap_or(c);
        c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii")
    })
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
    fn reads_only_utf8_charsets_as_utf8() {
        for plain in [
            "text/event-stream",
            "application/json; charset=utf-8",
            "text/event-stream;Charset=\"UTF-8\"",
            "text/event-stream; charset=us-ascii",
            "",
        ] {
            assert!(read_as_utf8(plain), "{plain}");
        }
        for other in [
            "text/event-stream; charset=utf-7",
            "text/event-stream; charset=cp037",
            "text/event-stream; charset=utf-16",
            "application/json; charset=latin1",
            "text/event-stream; charset=utf-8; charset=utf-7",
            "text/event-stream; charset=utf-8; Charset=utf-8",
            "text/event-stream; charset=",
            // What Python's email parser (and so httpx) reads a charset out of.
            "text/event-stream; charset*0=utf; charset*1=-7",
            "text/event-stream; charset*=utf-7''",
            "text/event-stream (c); charset=utf-7",
            "text/event-stream; charset='utf-8'",
            "text/event-stream; charset=\"utf\\-8\"",
            "text/event-stream; x=\"a;charset=utf-7\"",
            "text/event-stream; charset",
            "text/event-stream, text/html; charset=utf-7",
        ] {
            assert!(!read_as_utf8(other), "{other}");
        }
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
