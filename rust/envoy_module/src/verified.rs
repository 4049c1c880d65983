//! The payload of the token Envoy verified, as the module reads it. Envoy's `jwt_authn` filter
//! puts a verified token's payload in the stream's dynamic metadata as a struct, which the
//! module's ABI cannot read (it reads a namespace's top-level strings and numbers only). A
//! `set_filter_state` filter after `jwt_authn` writes it, as JSON, into the filter state object
//! [`FILTER_STATE_KEY`]:
//!
//! ```yaml
//! - object_key: toolgate.jwt_payload
//!   factory_key: envoy.string
//!   format_string:
//!     json_format: {payload: "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload)%"}
//! ```
//!
//! which is `{"payload":null}` for a request without a verified token. Only Envoy's filters set
//! filter state: a client cannot write it, as it could a header. The claims are then read by
//! the sidecar's own rules (`toolgate_server::subject`), so a caller is the same caller
//! through ext_authz and through the module.

use crate::abi::{log, LOG_WARN};
use crate::ask_sidecar::verified_metadata;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value as Proto};
use prost::Message;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};

/// The filter state object the payload is read from.
pub const FILTER_STATE_KEY: &str = "toolgate.jwt_payload";

/// The verified payload the filter state object's `bytes` hold; `None` for no verified token,
/// and for bytes that are not what `set_filter_state` writes as above (a request is then
/// refused as one without a token: fail closed; the first such is logged).
pub fn payload(bytes: Option<&[u8]>) -> Option<Struct> {
    let read = match bytes {
        None => Err(format!("no filter state object {FILTER_STATE_KEY:?}")),
        Some(bytes) => read(bytes),
    };
    read.unwrap_or_else(|why| {
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            log(
                LOG_WARN,
                &format!(
                    "toolgate: callers are read from a verified token, but {why}: every such \
                     request is refused (docs/envoy.md, \"Callers from verified JWTs in the module\")"
                ),
            );
        }
        None
    })
}

/// `{"payload": OBJECT}` or `{"payload": null}`, and nothing else.
fn read(bytes: &[u8]) -> Result<Option<Struct>, String> {
    let shape =
        || format!("the filter state object {FILTER_STATE_KEY:?} is not {{\"payload\": …}}");
    let Ok(Value::Object(mut outer)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(shape());
    };
    let payload = match (outer.remove("payload"), outer.is_empty()) {
        (Some(Value::Null), true) => return Ok(None),
        (Some(Value::Object(fields)), true) => structure(fields),
        _ => return Err(shape()),
    };
    let deep = depth(&payload);
    if deep > SHALLOW && !a_check_carries(&payload) {
        return Err(format!(
            "a token's payload is nested deeper than a Check to the sidecar can carry \
             ({deep} levels)"
        ));
    }
    Ok(Some(payload))
}

/// Payloads this shallow are carried by any Check; deeper ones are tried.
const SHALLOW: usize = 16;

/// How deep `payload`'s objects and lists nest (1: no object or list in it).
fn depth(payload: &Struct) -> usize {
    fn of(value: &Proto) -> usize {
        match &value.kind {
            Some(Kind::StructValue(s)) => depth(s),
            Some(Kind::ListValue(l)) => 1 + l.values.iter().map(of).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + payload.fields.values().map(of).max().unwrap_or(0)
}

/// Whether the sidecar reads a Check carrying `payload`: its decoder (prost's, as here)
/// refuses messages nested past its recursion limit, and ext_authz then fails the request
/// (503). Such a payload is refused here too, rather than decided here and not there.
fn a_check_carries(payload: &Struct) -> bool {
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            metadata_context: Some(verified_metadata("jwt_payload", payload)),
            ..Default::default()
        }),
    };
    CheckRequest::decode(check.encode_to_vec().as_slice()).is_ok()
}

/// A JSON object as the struct ext_authz's metadata carries for it.
fn structure(fields: serde_json::Map<String, Value>) -> Struct {
    Struct {
        fields: fields.into_iter().map(|(k, v)| (k, proto(v))).collect(),
    }
}

fn proto(value: Value) -> Proto {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(proto).collect(),
        }),
        Value::Object(fields) => Kind::StructValue(structure(fields)),
    };
    Proto { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_set_filter_state_writes_and_nothing_else() {
        let p = read(br#"{"payload":{"iss":"https://idp","sub":"alice","n":1.5,"l":["a"]}}"#)
            .unwrap()
            .unwrap();
        let kind = |k: &str| p.fields[k].kind.clone().unwrap();
        assert_eq!(kind("sub"), Kind::StringValue("alice".into()));
        assert_eq!(kind("n"), Kind::NumberValue(1.5));
        assert!(matches!(kind("l"), Kind::ListValue(_)));
        assert_eq!(read(br#"{"payload":null}"#), Ok(None));
        // As deep as a Check carries, and deeper.
        let nested = |n: usize| {
            let claim = "{\"a\":".repeat(n) + "1" + &"}".repeat(n);
            format!("{{\"payload\":{{\"sub\":\"a\",\"x\":{claim}}}}}")
        };
        let carried = (1..100)
            .filter(|&n| read(nested(n).as_bytes()).is_ok())
            .count();
        assert!((SHALLOW..60).contains(&carried), "{carried}");
        assert!(read(nested(carried + 1).as_bytes()).is_err());
        for wrong in [
            &br#"{"payload":"alice"}"#[..],
            br#"{"payload":{"sub":"a"},"more":1}"#,
            br#"{}"#,
            br#"[]"#,
            br#"-"#,
            b"",
            br#"{"payload":{"sub":"a"}"#,
        ] {
            assert!(read(wrong).is_err(), "{}", String::from_utf8_lossy(wrong));
        }
    }
}
