//! JSON text for the list filter's property tests (list_attack.rs, known_answers_attack.rs):
//! words picked now and then from an odd set, strings escaped here and there, objects with
//! their members shuffled, and tools built from them.

use proptest::prelude::*;

/// Mostly one of `plain`, now and then one of `odd` (each split at white space).
pub fn word(plain: &'static str, odd: &'static str) -> impl Strategy<Value = &'static str> {
    let pick = |s: &'static str| prop::sample::select(s.split_whitespace().collect::<Vec<_>>());
    prop_oneof![6 => pick(plain), 1 => pick(odd)]
}

/// A JSON string, each character written as an escape where `mask` says.
pub fn enc(s: &str, mask: u64) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        match mask >> (i % 64) & 1 {
            1 => c
                .encode_utf16(&mut [0; 2])
                .iter()
                .for_each(|u| out += &format!("\\u{u:04x}")),
            _ => out.push(c),
        }
    }
    out + "\""
}

/// Members, shuffled, as a JSON object.
pub fn object(members: Vec<String>) -> impl Strategy<Value = String> {
    Just(members)
        .prop_shuffle()
        .prop_map(|m| format!("{{{}}}", m.join(",")))
}

/// A tool: a name from `names` (escaped here and there) or none, keys that fold like known
/// ones, values mostly from `values` and now and then from `odd` (numbers at the limits, or
/// not numbers), and up to 11 more keys (past 8, compared by hash).
pub fn tool(
    names: &'static str,
    values: &'static str,
    odd: &'static str,
) -> impl Strategy<Value = String> {
    let name = (word(names, names), any::<u64>());
    let keys = word(
        "description title x k s a b c",
        "Description deſcription X \u{212a} ſ NAME",
    );
    let values = word(values, odd);
    let member = (keys, any::<u64>(), values).prop_map(|(k, m, v)| format!("{}:{v}", enc(k, m)));
    let name = name.prop_map(|(n, m)| format!("\"name\":{}", enc(n, m & m >> 7)));
    let members = prop::collection::vec(member, 0..3);
    (prop::option::weighted(0.95, name), members, 0usize..12).prop_flat_map(|(n, mut m, f)| {
        m.extend(n.into_iter().chain((0..f).map(|i| format!("\"f{i}\":{i}"))));
        object(m)
    })
}

/// A result object listing up to 5 of `tool`, with now and then other members (some of them
/// case variants of known ones).
pub fn result(tool: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let tools = prop::collection::vec(tool, 0..6);
    let extra = word(
        r#""nextCursor":"c" "cacheScope":"public" "_meta":{} "cacheScope":"private""#,
        r#""Tools":[] "toolſ":[] "tools":[] "ttlMS":1"#,
    );
    (tools, prop::collection::vec(extra, 0..2)).prop_flat_map(|(t, extra)| {
        let mut m: Vec<String> = extra.into_iter().map(String::from).collect();
        m.push(format!("\"tools\":[{}]", t.join(",")));
        object(m)
    })
}
