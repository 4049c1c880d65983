//! A request body read the way every mainstream JSON decoder reads it, or refused.
//!
//! serde_json does the parsing (RFC 8259, no trailing data, no lone surrogates, at most 128
//! levels of nesting); this module refuses what serde_json accepts but other decoders read
//! differently:
//! - an object with two keys that fold alike ([`super::fold`]): a duplicate, which decoders
//!   resolve differently (first wins, last wins), or a case variant, which Go's
//!   `encoding/json` binds to the same struct field as its twin (and keeps the last);
//! - a number of magnitude 2^53 or more: JavaScript, and Go decoding into `any`, read it
//!   rounded to a double, Python exactly.
//!
//! It also caps the keys and values of one body, so work stays linear and bounded whatever
//! the body's shape: keys are checked through a hash of their folded form, never pairwise.

use super::fold::{fold_eq, folded};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

/// Most object keys one body may hold. A body of Envoy's default 1 MiB of ordinary records
/// holds about half as many; the caps bound the memory one request can take (~70 bytes a
/// key, ~30 a value) whatever the proxy's size limit.
pub const MAX_KEYS: usize = 100_000;
/// Most values (scalars, arrays and objects) one body may hold.
pub const MAX_VALUES: usize = 250_000;
/// Largest integer magnitude every decoder reads exactly (JavaScript's `MAX_SAFE_INTEGER`).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Objects with at most this many keys compare folded keys in a list instead of hashing.
const SMALL_OBJECT: usize = 8;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictError {
    /// Not one JSON value.
    Syntax(String),
    /// JSON that decoders read differently; `pointer` is where, `message` names the key or
    /// number.
    Ambiguous {
        pointer: String,
        message: String,
        what: Ambiguity,
    },
    /// Over [`MAX_KEYS`] or [`MAX_VALUES`].
    TooLarge(String),
}

impl fmt::Display for StrictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrictError::Syntax(m) | StrictError::TooLarge(m) => f.write_str(m),
            StrictError::Ambiguous {
                pointer, message, ..
            } if pointer.is_empty() => f.write_str(message),
            StrictError::Ambiguous {
                pointer, message, ..
            } => write!(f, "{message} at {pointer}"),
        }
    }
}

/// What decoders would read two ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    DuplicateKey,
    CaseVariantKeys,
    UnsafeNumber,
}

impl Ambiguity {
    /// What is wrong, naming no key or number.
    pub fn describe(self) -> &'static str {
        match self {
            Ambiguity::DuplicateKey => "a key appears twice in one object",
            Ambiguity::CaseVariantKeys => {
                "two keys of one object differ only by case: a case-insensitive decoder reads \
                 them as one key"
            }
            Ambiguity::UnsafeNumber => {
                "a number is beyond 2^53: some decoders read it rounded, others exactly"
            }
        }
    }
}

impl StrictError {
    /// The refusal as a log may hold it: what is wrong, never a key, a number or a place of
    /// the input (a syntax error's message quotes none: it names a line and column).
    pub fn unquoted(&self) -> &str {
        match self {
            StrictError::Syntax(m) | StrictError::TooLarge(m) => m,
            StrictError::Ambiguous { what, .. } => what.describe(),
        }
    }
}

/// Parse `body` as one JSON value, refusing what decoders could read two ways.
pub fn parse(body: &[u8]) -> Result<Value, StrictError> {
    let state = State::default();
    // Text that is UTF-8 throughout (nearly every body) is checked once, not string by
    // string; other bytes are read as bytes, to be refused where they stand.
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => read(&mut serde_json::Deserializer::from_str(text), &state),
        Err(_) => read(&mut serde_json::Deserializer::from_slice(body), &state),
    };
    parsed.map_err(|e| match state.refused.into_inner() {
        Some(mut refusal) => {
            if let StrictError::Ambiguous { pointer, .. } = &mut refusal {
                // Keys were pushed innermost first while the error unwound.
                let path = std::mem::take(&mut *state.path.borrow_mut());
                *pointer = path.iter().rev().fold(String::new(), |mut p, k| {
                    p.push('/');
                    p.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    p
                });
            }
            refusal
        }
        None => StrictError::Syntax(e.to_string()),
    })
}

/// One JSON value and nothing after it.
fn read<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    state: &State,
) -> Result<Value, serde_json::Error> {
    let value = ValueSeed { state }.deserialize(&mut *de)?;
    de.end()?;
    Ok(value)
}

/// Whether a value built some other way than by [`parse`] (from a Python dict, say) holds
/// what [`parse`] would refuse in its JSON text: keys that fold alike, or a number beyond
/// 2^53.
pub fn reads_two_ways(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                let exact = n.as_u64().or_else(|| n.as_i64().map(i64::unsigned_abs));
                let magnitude = exact.map_or_else(|| n.as_f64().unwrap_or(0.0).abs(), |m| m as f64);
                if magnitude > MAX_SAFE_INTEGER as f64 {
                    return true;
                }
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                let mut seen = HashSet::with_capacity(map.len());
                if !map.keys().all(|k| seen.insert(folded(k))) {
                    return true;
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    false
}

/// What one parse has counted and, when it refuses, why and where.
#[derive(Default)]
struct State {
    keys: Cell<usize>,
    values: Cell<usize>,
    refused: RefCell<Option<StrictError>>,
    /// The keys from the refused spot up to the root, pushed while unwinding.
    path: RefCell<Vec<String>>,
}

impl State {
    /// Record why the body is refused; the returned error stops serde_json.
    fn refuse<E: de::Error>(&self, refusal: StrictError) -> E {
        *self.refused.borrow_mut() = Some(refusal);
        E::custom("refused")
    }

    /// While an ambiguity unwinds, note the key or index it came through.
    fn locate(&self, step: impl FnOnce() -> String) {
        if matches!(*self.refused.borrow(), Some(StrictError::Ambiguous { .. })) {
            self.path.borrow_mut().push(step());
        }
    }

    fn count_value<E: de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_VALUES {
            return Err(self.refuse(StrictError::TooLarge(format!(
                "the JSON holds more than {MAX_VALUES} values"
            ))));
        }
        Ok(())
    }

    fn count_key<E: de::Error>(&self) -> Result<(), E> {
        let n = self.keys.get() + 1;
        self.keys.set(n);
        if n > MAX_KEYS {
            return Err(self.refuse(StrictError::TooLarge(format!(
                "the JSON holds more than {MAX_KEYS} object keys"
            ))));
        }
        Ok(())
    }

    fn number<E: de::Error>(&self, n: Number, magnitude: f64) -> Result<Value, E> {
        if magnitude > MAX_SAFE_INTEGER as f64 {
            return Err(self.refuse(StrictError::Ambiguous {
                pointer: String::new(),
                message: format!(
                    "the number {n} is beyond 2^53: some decoders read it rounded, others exactly"
                ),
                what: Ambiguity::UnsafeNumber,
            }));
        }
        Ok(Value::Number(n))
    }
}

struct ValueSeed<'s> {
    state: &'s State,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.state.count_value()?;
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.state.number(n.into(), n as f64)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.state.number(n.into(), n.unsigned_abs() as f64)
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        // serde_json refuses numbers out of the double range, so `f` is finite.
        match Number::from_f64(f) {
            Some(n) => self.state.number(n, f.abs()),
            None => Err(E::custom("number out of range")),
        }
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let state = self.state;
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(ValueSeed { state }) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    state.locate(|| items.len().to_string());
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let state = self.state;
        let mut map = Map::new();
        let mut folded = FoldedKeys::default();
        while let Some(key) = access.next_key::<String>()? {
            state.count_key()?;
            if let Some(twin) = folded.insert(&key, &map) {
                let (message, what) = if twin == key {
                    (format!("duplicate key {key:?}"), Ambiguity::DuplicateKey)
                } else {
                    let message = format!(
                        "keys {twin:?} and {key:?} differ only by case: a case-insensitive \
                         decoder reads them as one key"
                    );
                    (message, Ambiguity::CaseVariantKeys)
                };
                return Err(state.refuse(StrictError::Ambiguous {
                    pointer: String::new(),
                    message,
                    what,
                }));
            }
            match access.next_value_seed(ValueSeed { state }) {
                Ok(value) => {
                    map.insert(key, value);
                }
                Err(e) => {
                    state.locate(|| key);
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(map))
    }
}

/// The folded keys of one object seen so far.
#[derive(Default)]
struct FoldedKeys {
    /// While the object is small: each key's folding where it differs from the key, in the
    /// map's order (compared in a list: cheaper than hashing a handful).
    small: SmallVec<[Option<String>; SMALL_OBJECT]>,
    /// Past that, every folded key.
    hashed: Option<HashSet<String, ahash::RandomState>>,
}

impl FoldedKeys {
    /// Add `key`; if a key already in `map` folds alike, return that key instead.
    fn insert(&mut self, key: &str, map: &Map<String, Value>) -> Option<String> {
        let twin = || map.keys().find(|k| fold_eq(k, key)).cloned();
        let fold = folded(key);
        let hashed = match &mut self.hashed {
            Some(set) => set,
            None if self.small.len() < SMALL_OBJECT => {
                let mut seen = map.keys().zip(&self.small);
                if seen.any(|(k, f)| f.as_deref().unwrap_or(k) == fold) {
                    return twin();
                }
                self.small.push(match fold {
                    Cow::Owned(f) => Some(f),
                    Cow::Borrowed(_) => None,
                });
                return None;
            }
            None => {
                let seen = map.keys().zip(self.small.drain(..));
                let set = seen.map(|(k, f)| f.unwrap_or_else(|| k.clone())).collect();
                self.hashed.insert(set)
            }
        };
        if hashed.insert(fold.into_owned()) {
            None
        } else {
            twin()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ambiguous(body: &str) -> (String, String) {
        match parse(body.as_bytes()) {
            Err(StrictError::Ambiguous {
                pointer, message, ..
            }) => (pointer, message),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn reads_plain_json() {
        let v = parse(br#"{"a": [1, -2, 0.5, "x", null, true, {"b": {}}]}"#).unwrap();
        assert_eq!(v, json!({"a": [1, -2, 0.5, "x", null, true, {"b": {}}]}));
    }

    #[test]
    fn refuses_keys_that_fold_alike_at_any_depth() {
        let (p, m) = ambiguous(r#"{"a": 1, "a": 2}"#);
        assert_eq!((p.as_str(), m.as_str()), ("", "duplicate key \"a\""));
        let (p, m) = ambiguous(r#"{"params": {"arguments": {"amount": 5, "Amount": 5000}}}"#);
        assert_eq!(p, "/params/arguments");
        assert!(m.contains("\"amount\" and \"Amount\""), "{m}");
        let (p, _) = ambiguous(r#"{"x": [{"ok": 1}, {"k": 1, "\u212a": 2}]}"#);
        assert_eq!(p, "/x/1");
        let (p, _) = ambiguous(r#"{"a/b~": {"paramſ": 1, "params": 2}}"#);
        assert_eq!(p, "/a~1b~0");
    }

    #[test]
    fn large_objects_are_checked_by_hash_too() {
        let mut body = String::from("{");
        for i in 0..100 {
            body.push_str(&format!("\"key{i}\": {i},"));
        }
        body.push_str("\"KEY57\": 0}");
        let (_, m) = ambiguous(&body);
        assert!(m.contains("\"key57\" and \"KEY57\""), "{m}");
    }

    #[test]
    fn refuses_numbers_decoders_round_differently() {
        assert_eq!(
            parse(b"[9007199254740991, -9007199254740991, 1.5e15]").unwrap(),
            json!([9007199254740991u64, -9007199254740991i64, 1.5e15])
        );
        for n in [
            "9007199254740992",
            "-9007199254740992",
            "18446744073709551616",
            "1e300",
        ] {
            let (_, m) = ambiguous(&format!("{{\"n\": {n}}}"));
            assert!(m.contains("beyond 2^53"), "{n}: {m}");
        }
    }

    #[test]
    fn refuses_what_is_not_one_json_value() {
        for body in [
            &b"{\"a\":1} {}"[..],
            b"\xef\xbb\xbf{}",
            b"{\"a\":\"\\ud800\"}",
            b"[1,]",
            b"NaN",
            b"{\"a\":1e400}",
            b"",
        ] {
            assert!(
                matches!(parse(body), Err(StrictError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(StrictError::Syntax(_))
        ));
    }

    #[test]
    fn caps_keys_and_values() {
        let keys: Vec<String> = (0..=MAX_KEYS).map(|i| format!("\"k{i}\":0")).collect();
        let body = format!("{{{}}}", keys.join(","));
        assert!(
            matches!(parse(body.as_bytes()), Err(StrictError::TooLarge(m)) if m.contains("keys"))
        );
        let body = format!("[{}]", vec!["0"; MAX_VALUES].join(","));
        assert!(
            matches!(parse(body.as_bytes()), Err(StrictError::TooLarge(m)) if m.contains("values"))
        );
        let body = format!("[{}]", vec!["0"; MAX_VALUES - 1].join(","));
        assert!(parse(body.as_bytes()).is_ok());
    }

    proptest::proptest! {
        /// Whatever serde_json reads as a value without ambiguity reads back the same here.
        #[test]
        fn agrees_with_serde_json(v in arbitrary_json()) {
            let text = v.to_string();
            proptest::prop_assert_eq!(parse(text.as_bytes()), Ok(v));
        }

        /// Two keys of one object, at any depth, that fold alike are refused.
        #[test]
        fn refuses_every_folded_twin(
            v in arbitrary_json(),
            key in "[a-zA-Zſſ\u{212a}\u{212b}åÅσςΣ]{1,6}",
            twin_index in 0usize..6,
        ) {
            let twin = twin_of(&key, twin_index);
            let body = format!(
                "{{\"wrap\": [{}, {{\"{}\": 1, \"{}\": 2}}]}}",
                v, escape(&key), escape(&twin)
            );
            let refused = matches!(parse(body.as_bytes()), Err(StrictError::Ambiguous { .. }));
            proptest::prop_assert!(refused, "{}", body);
        }
    }

    proptest::proptest! {
        /// Objects of any size, past the few whose keys are compared in a list, are read in
        /// order, and the first key with an earlier twin is refused, naming that twin.
        #[test]
        fn objects_of_any_size_refuse_their_first_twin(
            keys in proptest::collection::vec("[aAkK\u{212a}sſ]{1,2}", 0..24),
        ) {
            let members: Vec<String> =
                keys.iter().enumerate().map(|(i, k)| format!("\"{k}\": {i}")).collect();
            let body = format!("{{{}}}", members.join(", "));
            let twins = keys.iter().enumerate().find_map(|(j, key)| {
                keys[..j].iter().find(|k| folded(k) == folded(key)).map(|twin| (twin, key))
            });
            match (parse(body.as_bytes()), twins) {
                (Ok(Value::Object(map)), None) => {
                    let read: Vec<(&String, u64)> =
                        map.iter().map(|(k, v)| (k, v.as_u64().unwrap())).collect();
                    let sent: Vec<(&String, u64)> = keys.iter().zip(0..).collect();
                    proptest::prop_assert_eq!(read, sent);
                }
                (Err(StrictError::Ambiguous { message, .. }), Some((twin, key))) => {
                    let expected = match twin == key {
                        true => format!("duplicate key {key:?}"),
                        false => format!("keys {twin:?} and {key:?} differ only by case"),
                    };
                    proptest::prop_assert!(message.starts_with(&expected), "{} / {}", message, expected);
                }
                (other, twins) => proptest::prop_assert!(false, "{}: {:?}, twins {:?}", body, other, twins),
            }
        }

        /// Text that is UTF-8 reads exactly as its bytes do, whatever it holds: a value, the
        /// same refusal, or the same syntax error.
        #[test]
        fn text_reads_as_its_bytes_do(
            v in twinned_json(),
            cut in 0usize..64,
            junk in proptest::prop_oneof![
                "[\\\"{}:,\u{0}-\u{1f}é]{0,2}",
                // Escapes of surrogates, lone or paired, and of other characters.
                r#"(\\u[dD][89abAB][0-9a-f]{2}|\\u[dD][c-fC-F][0-9a-f]{2}|\\u00[0-9a-f]{2}|\\["\\/bfnrtx]){1,3}"#,
            ],
        ) {
            let mut text = v.to_string();
            let at = text.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(text.len());
            text.insert_str(at, &junk);
            let state = State::default();
            let from_bytes = read(&mut serde_json::Deserializer::from_slice(text.as_bytes()), &state)
                .map_err(|e| state.refused.into_inner().unwrap_or(StrictError::Syntax(e.to_string())));
            let from_text = parse(text.as_bytes()).map_err(|e| match e {
                StrictError::Ambiguous { message, what, .. } => StrictError::Ambiguous { pointer: String::new(), message, what },
                e => e,
            });
            proptest::prop_assert_eq!(from_text, from_bytes);
        }

        /// A value built in memory reads two ways exactly when its JSON text is refused as
        /// ambiguous.
        #[test]
        fn reads_two_ways_as_parse_refuses(v in twinned_json()) {
            let refused = matches!(parse(v.to_string().as_bytes()), Err(StrictError::Ambiguous { .. }));
            proptest::prop_assert_eq!(reads_two_ways(&v), refused, "{}", v);
        }
    }

    /// JSON whose keys often fold alike (short, from a few letters and their partners) and
    /// whose numbers reach past 2^53.
    fn twinned_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-(MAX_SAFE_INTEGER as i64)..=MAX_SAFE_INTEGER as i64).prop_map(|n| json!(n)),
            (-1e17f64..1e17).prop_map(|f| json!(f)),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[aAsSkKſ\u{212a}]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A spelling of `key` that folds alike: one character swapped for another of its case.
    fn twin_of(key: &str, index: usize) -> String {
        let chars: Vec<char> = key.chars().collect();
        let i = index % chars.len();
        let c = chars[i];
        let swapped = match c {
            's' => 'ſ',
            'ſ' | 'S' => 's',
            'k' | 'K' => '\u{212a}',
            '\u{212a}' => 'k',
            'å' => '\u{212b}',
            '\u{212b}' | 'Å' => 'å',
            'σ' => 'ς',
            'ς' => 'Σ',
            'Σ' => 'σ',
            c if c.is_ascii_lowercase() => c.to_ascii_uppercase(),
            c => c.to_ascii_lowercase(),
        };
        chars
            .iter()
            .enumerate()
            .map(|(j, &d)| if j == i { swapped } else { d })
            .collect()
    }

    fn escape(s: &str) -> String {
        let quoted = serde_json::to_string(s).unwrap();
        quoted[1..quoted.len() - 1].to_owned()
    }

    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(MAX_SAFE_INTEGER as i64)..=MAX_SAFE_INTEGER as i64).prop_map(|n| json!(n)),
            (-1e15f64..1e15).prop_map(|f| json!(f)),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                // Keys unique under folding, so the object is unambiguous.
                proptest::collection::btree_map("[a-z0-9_]{1,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
