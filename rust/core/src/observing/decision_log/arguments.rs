//! What is written of a call's arguments: their names, the digest of their canonical JSON,
//! and the values at the paths a rule names in `log`. Made on the deciding thread, straight
//! from the arguments where they live, and bounded: the argument tree itself is never
//! copied nor handed to the writer.

use super::push_hex_bytes;
use crate::asking::approval::CallDigests;
use crate::json::arg_json::{self, Stop};
use crate::json::args::ArgValue;
use crate::json::inert::push_json_string;
use crate::kind::Kind;
use crate::policy::arg_path::walk;
use crate::policy::compile::CompiledPolicy;
use crate::policy::Path as ArgPath;

/// Most argument names a line lists.
pub const MAX_NAMES: usize = 64;
/// Most bytes of argument names (as sent, before escaping) a line lists.
pub const MAX_NAMES_BYTES: usize = 2048;
/// Longest clear value (its JSON text, escaped); a longer one is named in `clear_omitted`.
pub const MAX_CLEAR_BYTES: usize = 1024;

/// The paths the deciding rules name in `log`: the rule's of `name` (of `kind`), then, for a
/// tool, `all_tools`'.
pub(super) fn log_paths<'p>(
    policy: &'p CompiledPolicy,
    kind: Kind,
    name: &str,
    server: Option<&str>,
) -> Vec<&'p ArgPath> {
    let section = policy.section(server);
    let all_tools = section.all_tools.as_ref().filter(|_| kind == Kind::Tool);
    [section.rule(kind, name), all_tools]
        .into_iter()
        .flatten()
        .flat_map(|r| r.log.iter())
        .collect()
}

/// The `args` object of a line: `names`, the top-level names sorted, the first of them up
/// to [`MAX_NAMES`] and [`MAX_NAMES_BYTES`] (`names_omitted`: how many more there are);
/// `digest`, the HMAC-SHA-256 of the arguments' canonical JSON under `digests`' key,
/// `hmac-sha256:` and 64 hex digits (without a key, their SHA-256 in hex; `null` if they are
/// not JSON);
/// and, when `clear` lists paths, `clear`: the value at each path that has one, if its JSON
/// takes at most [`MAX_CLEAR_BYTES`] (`clear_omitted`: the paths whose value did not).
pub fn summarize<A: ArgValue + Clone>(
    args: &A,
    clear: &[&ArgPath],
    digests: Option<&CallDigests>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    let mut members = args.entries();
    if let Some(m) = &mut members {
        m.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    // The members sorted once serve both the names and the digest.
    let key = digests.map(CallDigests::arguments);
    let digest = match (&members, &key) {
        (Some(m), Some(key)) => arg_json::keyed_digest_members(m, key),
        (None, Some(key)) => arg_json::keyed_digest(args, key),
        (Some(m), None) => arg_json::digest_members(m),
        (None, None) => arg_json::digest(args),
    };
    let members = members.unwrap_or_default();
    // The names, in order, while they fit the caps.
    let mut bytes = 0;
    let listed = members
        .iter()
        .take(MAX_NAMES)
        .take_while(|(name, _)| {
            bytes += name.len();
            bytes <= MAX_NAMES_BYTES
        })
        .count();
    out.extend_from_slice(b"{\"names\":");
    push_strings(&mut out, members[..listed].iter().map(|(name, _)| &**name));
    if listed < members.len() {
        out.extend_from_slice(b",\"names_omitted\":");
        out.extend_from_slice(
            itoa::Buffer::new()
                .format(members.len() - listed)
                .as_bytes(),
        );
    }
    match digest {
        Some(d) => {
            out.extend_from_slice(b",\"digest\":\"");
            if key.is_some() {
                out.extend_from_slice(b"hmac-sha256:");
            }
            push_hex_bytes(&mut out, &d);
            out.push(b'"');
        }
        None => out.extend_from_slice(b",\"digest\":null"),
    }
    if !clear.is_empty() {
        write_clear(&mut out, args, clear);
    }
    out.push(b'}');
    out
}

/// `,"clear":{...}` and, if any value was too long, `,"clear_omitted":[...]`.
fn write_clear<A: ArgValue + Clone>(out: &mut Vec<u8>, args: &A, clear: &[&ArgPath]) {
    out.extend_from_slice(b",\"clear\":{");
    let mut omitted: Vec<&str> = Vec::new();
    let mut first = true;
    for path in clear {
        let Some(value) = walk(args, &path.segments) else {
            continue;
        };
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        push_json_string(out, &path.text);
        out.push(b':');
        match arg_json::push_shown(out, &value, MAX_CLEAR_BYTES) {
            Ok(()) => first = false,
            Err(Stop::TooLong | Stop::NotJson) => {
                out.truncate(mark);
                omitted.push(&path.text);
            }
        }
    }
    out.push(b'}');
    if !omitted.is_empty() {
        out.extend_from_slice(b",\"clear_omitted\":");
        push_strings(out, omitted.into_iter());
    }
}

/// A JSON array of `items`, each written inert.
fn push_strings<'s>(out: &mut Vec<u8>, items: impl Iterator<Item = &'s str>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_string(out, item);
    }
    out.push(b']');
}

/// The value at a path, by exact keys.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::observing::decision_log::push_hex;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};

    fn arguments(args: &Value, clear: &[&ArgPath]) -> Value {
        serde_json::from_slice(&summarize(&args, clear, None)).expect("valid JSON")
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
        let mut digest = String::new();
        push_hex(&mut digest, &Sha256::digest(canonical.as_bytes()));
        assert_eq!(plain["digest"], digest);
        // Key order does not change the digest.
        let reordered = json!({"memo": {"text": "secret"}, "amount": 5000, "to": "acct-9"});
        assert_eq!(arguments(&reordered, &[])["digest"], plain["digest"]);
    }

    #[test]
    fn names_and_clear_values_are_bounded() {
        let many: serde_json::Map<String, Value> =
            (0..1000).map(|i| (format!("k{i:04}"), json!(i))).collect();
        let out = arguments(&Value::Object(many), &[]);
        let names = out["names"].as_array().unwrap();
        assert_eq!(names.len(), MAX_NAMES);
        assert_eq!(
            (names[0].as_str(), names[63].as_str()),
            (Some("k0000"), Some("k0063"))
        );
        assert_eq!(out["names_omitted"], 1000 - MAX_NAMES);
        let long: serde_json::Map<String, Value> = (0..10)
            .map(|i| (format!("{i}{}", "n".repeat(500)), json!(i)))
            .collect();
        let out = arguments(&Value::Object(long), &[]);
        assert_eq!(
            out["names"].as_array().unwrap().len(),
            4,
            "2048 bytes of names"
        );
        assert_eq!(out["names_omitted"], 6);

        let args = json!({"memo": "m".repeat(MAX_CLEAR_BYTES), "amount": 5, "list": [1, 2]});
        let memo = ArgPath::parse("args.memo").unwrap();
        let amount = ArgPath::parse("args.amount").unwrap();
        let list = ArgPath::parse("args.list").unwrap();
        let out = arguments(&args, &[&memo, &amount, &list]);
        assert_eq!(out["clear"], json!({"args.amount": 5, "args.list": [1, 2]}));
        assert_eq!(out["clear_omitted"], json!(["args.memo"]));
        assert!(out.get("names_omitted").is_none());
    }
}
