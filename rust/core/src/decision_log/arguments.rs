//! What is written of a call's arguments: their names, the digest of their canonical JSON,
//! and the values at the paths a rule names in `log`.

use super::push_hex_bytes;
use crate::approval::write_canonical;
use crate::compile::CompiledPolicy;
use crate::inert::push_json_string;
use crate::policy::{Path as ArgPath, Segment};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The paths the deciding rules name in `log`: the tool's rule's, then `all_tools`'.
pub(super) fn log_paths<'p>(
    policy: &'p CompiledPolicy,
    tool: &str,
    server: Option<&str>,
) -> Vec<&'p ArgPath> {
    let section = policy.section(server);
    let rule = section.tools.lookup(tool).map(|i| &section.rules[*i]);
    [rule, section.all_tools.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(|r| r.log.iter())
        .collect()
}

/// What is written of the arguments: their names, the digest of their canonical JSON, and
/// the values at `clear` paths, as a JSON object appended to `out`.
pub fn write_arguments(out: &mut Vec<u8>, args: &Value, clear: &[&ArgPath], scratch: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"names\":[");
    if let Some(o) = args.as_object() {
        let mut names: Vec<&str> = o.keys().map(String::as_str).collect();
        names.sort_unstable();
        for (i, name) in names.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_string(out, name);
        }
    }
    scratch.clear();
    write_canonical(scratch, args);
    out.extend_from_slice(b"],\"digest\":\"");
    push_hex_bytes(out, &Sha256::digest(&scratch[..]));
    out.push(b'"');
    if !clear.is_empty() {
        out.extend_from_slice(b",\"clear\":{");
        let mut first = true;
        for path in clear {
            if let Some(v) = walk(args, &path.segments) {
                if !first {
                    out.push(b',');
                }
                first = false;
                push_json_string(out, &path.text);
                out.push(b':');
                write_value(out, v);
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// `value` as JSON, its strings inert ([`push_json_string`]).
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => push_json_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, v);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_string(out, k);
                out.push(b':');
                write_value(out, v);
            }
            out.push(b'}');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn walk<'v>(mut v: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    for s in segments {
        v = match s {
            Segment::Key(k) => v.as_object()?.get(k)?,
            Segment::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision_log::hex;
    use serde_json::json;

    fn arguments(args: &Value, clear: &[&ArgPath]) -> Value {
        let mut out = Vec::new();
        write_arguments(&mut out, args, clear, &mut Vec::new());
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn arguments_are_named_and_digested_not_written() {
        let args = json!({"to": "acct-9", "amount": 5000, "memo": {"text": "secret"}});
        let amount = ArgPath::parse("args.amount").unwrap();
        let memo = ArgPath::parse("args.memo.text").unwrap();
        let absent = ArgPath::parse("args.nope").unwrap();
        let out = arguments(&args, &[&amount, &memo, &absent]);
        assert_eq!(out["names"], json!(["amount", "memo", "to"]));
        assert_eq!(
            out["clear"],
            json!({"args.amount": 5000, "args.memo.text": "secret"})
        );
        let plain = arguments(&args, &[]);
        assert!(!plain.to_string().contains("acct-9"));
        assert!(plain.get("clear").is_none());
        let canonical = r#"{"amount":5000,"memo":{"text":"secret"},"to":"acct-9"}"#;
        assert_eq!(plain["digest"], hex(&Sha256::digest(canonical.as_bytes())));
        // Key order does not change the digest.
        let reordered = json!({"memo": {"text": "secret"}, "amount": 5000, "to": "acct-9"});
        assert_eq!(arguments(&reordered, &[])["digest"], plain["digest"]);
    }
}
