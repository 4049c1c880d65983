//! The MCP body reader on any bytes: never a panic, and whatever it accepts, serde_json reads
//! the same way (the reader only refuses more, never reads differently), with no two keys of
//! one object folding alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate_core::json::fold::folded;
use toolgate_core::json::strict;
use toolgate_core::mcp::{parse_request, McpRequest};

fuzz_target!(|body: &[u8]| {
    let strict = strict::parse(body);
    if let Ok(value) = &strict {
        let plain: Value = serde_json::from_slice(body).expect("serde_json reads what we read");
        assert_eq!(&plain, value);
        assert_unambiguous(value);
    }
    if let Ok(McpRequest::ToolCall { arguments, .. }) = parse_request(body) {
        assert!(strict.is_ok());
        assert!(arguments.is_none_or(|a| a.is_object()));
    }
});

fn assert_unambiguous(v: &Value) {
    match v {
        Value::Object(map) => {
            let mut seen = std::collections::HashSet::new();
            for (k, v) in map {
                assert!(
                    seen.insert(folded(k).into_owned()),
                    "two keys fold to {k:?}"
                );
                assert_unambiguous(v);
            }
        }
        Value::Array(items) => items.iter().for_each(assert_unambiguous),
        Value::Number(n) => assert!(n.as_f64().is_some_and(|f| f.abs() < 9007199254740992.0)),
        _ => {}
    }
}
