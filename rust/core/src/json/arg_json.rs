//! An argument value written as JSON text straight from where it lives ([`ArgValue`]: a
//! parsed body, or a Python dict through the binding), with no JSON copy of it made first:
//! canonical (keys sorted, no whitespace; what an argument digest hashes), or as sent with
//! its strings inert (what the decision log shows), up to a length.

use super::args::{ArgValue, Kind, Num};
use super::inert::push_json_string;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Deepest nesting written, as serde_json reads JSON text: a deeper value is not JSON here.
pub const MAX_DEPTH: usize = 128;

/// Why the text stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The value holds what JSON cannot (a key that is not a string, NaN, a set...).
    NotJson,
    /// The text would be longer than it may be.
    TooLong,
}

/// How a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Object keys sorted, strings as serde_json writes them: the digest's form.
    Canonical,
    /// Members in their own order, strings inert ([`push_json_string`]): the log's form.
    Shown,
}

/// SHA-256 of `value`'s canonical JSON; `None` if it is not JSON. Streamed: the text is
/// hashed a block at a time, never held whole.
pub fn digest<A: ArgValue>(value: &A) -> Option<[u8; 32]> {
    hashed(Hash::Plain(Sha256::new()), |text| {
        text.value(value, MAX_DEPTH)
    })
}

/// [`digest`] under a key: `mac` (already fed its domain) over the canonical JSON. What
/// leaves the process of arguments, which may be secrets a plain digest gives away to
/// guesses.
pub fn keyed_digest<A: ArgValue>(value: &A, mac: &Hmac<Sha256>) -> Option<[u8; 32]> {
    hashed(Hash::Keyed(mac.clone()), |text| {
        text.value(value, MAX_DEPTH)
    })
}

/// `value`'s canonical JSON text (what [`digest`] hashes), whole; `None` if it is not JSON.
pub fn canonical<A: ArgValue>(value: &A) -> Option<String> {
    let mut text = Text {
        bytes: Vec::with_capacity(256),
        hasher: None,
        max: usize::MAX,
        style: Style::Canonical,
    };
    text.value(value, MAX_DEPTH).ok()?;
    Some(String::from_utf8(text.bytes).expect("JSON text is UTF-8"))
}

/// The digest of an object given as its members sorted by key, as [`digest`] of that
/// object would be; `None` if a value is not JSON.
pub fn digest_members<A: ArgValue>(sorted_members: &[(Cow<'_, str>, A)]) -> Option<[u8; 32]> {
    let plain = Hash::Plain(Sha256::new());
    hashed(plain, |text| text.members(sorted_members, MAX_DEPTH - 1))
}

/// [`digest_members`] under a key, as [`keyed_digest`].
pub fn keyed_digest_members<A: ArgValue>(
    sorted_members: &[(Cow<'_, str>, A)],
    mac: &Hmac<Sha256>,
) -> Option<[u8; 32]> {
    let keyed = Hash::Keyed(mac.clone());
    hashed(keyed, |text| text.members(sorted_members, MAX_DEPTH - 1))
}

/// What the canonical text is hashed with.
enum Hash {
    Plain(Sha256),
    Keyed(Hmac<Sha256>),
}

impl Hash {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hash::Plain(h) => Digest::update(h, bytes),
            Hash::Keyed(m) => Mac::update(m, bytes),
        }
    }

    fn finish(self) -> [u8; 32] {
        match self {
            Hash::Plain(h) => h.finalize().into(),
            Hash::Keyed(m) => m.finalize().into_bytes().into(),
        }
    }
}

fn hashed(hash: Hash, write: impl FnOnce(&mut Text) -> Result<(), Stop>) -> Option<[u8; 32]> {
    let mut text = Text {
        // Grown up to a block as the text needs: most arguments are a few hundred bytes.
        bytes: Vec::with_capacity(256),
        hasher: Some(hash),
        max: usize::MAX,
        style: Style::Canonical,
    };
    write(&mut text).ok()?;
    let mut hasher = text.hasher.take()?;
    hasher.update(&text.bytes);
    Some(hasher.finish())
}

/// `value` as JSON for people to read (its own member order, strings inert), appended to
/// `out` if it takes at most `max` bytes; else `out` is left as it was.
pub fn push_shown<A: ArgValue>(out: &mut Vec<u8>, value: &A, max: usize) -> Result<(), Stop> {
    let mut text = Text {
        bytes: std::mem::take(out),
        hasher: None,
        max: 0,
        style: Style::Shown,
    };
    let start = text.bytes.len();
    text.max = start.saturating_add(max);
    let written = text.value(value, MAX_DEPTH);
    *out = text.bytes;
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// How much text is gathered before it is hashed.
const BLOCK: usize = 4096;

/// Text being written: hashed a block at a time, or kept up to `max` bytes.
struct Text {
    bytes: Vec<u8>,
    hasher: Option<Hash>,
    max: usize,
    style: Style,
}

impl Text {
    /// Hash what has gathered, or stop if it is too long.
    fn check(&mut self) -> Result<(), Stop> {
        match &mut self.hasher {
            Some(h) if self.bytes.len() >= BLOCK => {
                h.update(&self.bytes);
                self.bytes.clear();
                Ok(())
            }
            Some(_) => Ok(()),
            None if self.bytes.len() > self.max => Err(Stop::TooLong),
            None => Ok(()),
        }
    }

    fn string(&mut self, s: &str) -> Result<(), Stop> {
        // An escaped string is never shorter than the string.
        if self.hasher.is_none() && self.bytes.len().saturating_add(s.len()) > self.max {
            return Err(Stop::TooLong);
        }
        match self.style {
            Style::Canonical => {
                let _ = serde_json::to_writer(&mut self.bytes, s);
            }
            Style::Shown => push_json_string(&mut self.bytes, s),
        }
        self.check()
    }

    fn value<A: ArgValue>(&mut self, v: &A, depth: usize) -> Result<(), Stop> {
        let depth = depth.checked_sub(1).ok_or(Stop::NotJson)?;
        match v.kind() {
            Kind::Null => self.bytes.extend_from_slice(b"null"),
            Kind::Bool => {
                let b = v.as_bool().ok_or(Stop::NotJson)?;
                self.bytes
                    .extend_from_slice(if b { b"true" } else { b"false" });
            }
            Kind::Number => self.number(v.as_num().ok_or(Stop::NotJson)?)?,
            Kind::String => return self.string(v.as_str().ok_or(Stop::NotJson)?),
            Kind::Array => {
                self.bytes.push(b'[');
                for i in 0..v.len() {
                    if i > 0 {
                        self.bytes.push(b',');
                    }
                    self.value(&v.get_index(i).ok_or(Stop::NotJson)?, depth)?;
                }
                self.bytes.push(b']');
            }
            Kind::Object => {
                if v.is_opaque() {
                    return Err(Stop::NotJson);
                }
                let mut members = v.entries().ok_or(Stop::NotJson)?;
                if self.style == Style::Canonical {
                    members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                }
                return self.members(&members, depth);
            }
        }
        self.check()
    }

    fn members<A: ArgValue>(
        &mut self,
        members: &[(Cow<'_, str>, A)],
        depth: usize,
    ) -> Result<(), Stop> {
        self.bytes.push(b'{');
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                self.bytes.push(b',');
            }
            self.string(key)?;
            self.bytes.push(b':');
            self.value(value, depth)?;
        }
        self.bytes.push(b'}');
        self.check()
    }

    /// A number as serde_json writes it: integers exactly, others as the shortest double. In
    /// the canonical form a number is its value: a double that is a whole number within 64
    /// bits is written as that integer (`320.0` as `320`, `-0.0` as `0`), so a client or
    /// server that writes integers as floats digests alike.
    fn number(&mut self, n: Num) -> Result<(), Stop> {
        let mut digits = itoa::Buffer::new();
        let float = match n {
            Num::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                (Ok(i), _) => return self.digits(digits.format(i)),
                (_, Ok(u)) => return self.digits(digits.format(u)),
                // Beyond 64 bits: written as the double it is nearest to, as JSON holds it.
                _ => i as f64,
            },
            Num::Float(f) if self.style == Style::Canonical && f.fract() == 0.0 => {
                // Exact: every double of this size is a whole number that fits.
                if (-(2f64.powi(63))..2f64.powi(63)).contains(&f) {
                    return self.digits(digits.format(f as i64));
                }
                if (0.0..2f64.powi(64)).contains(&f) {
                    return self.digits(digits.format(f as u64));
                }
                f
            }
            Num::Float(f) => f,
        };
        let n = serde_json::Number::from_f64(float).ok_or(Stop::NotJson)?;
        let _ = serde_json::to_writer(&mut self.bytes, &n);
        self.check()
    }

    fn digits(&mut self, text: &str) -> Result<(), Stop> {
        self.bytes.extend_from_slice(text.as_bytes());
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// The reference: `value` with its objects' keys sorted, written by serde_json.
    fn canonical_json(value: &Value) -> String {
        fn sorted(v: &Value) -> Value {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    Value::Object(
                        keys.into_iter()
                            .map(|k| (k.clone(), sorted(&m[k])))
                            .collect(),
                    )
                }
                Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
                // Numbers by value: a whole double within 64 bits is that integer.
                Value::Number(n) => match n.as_f64() {
                    Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 2f64.powi(63) => {
                        Value::from(f as i64)
                    }
                    Some(f)
                        if n.is_f64() && f.fract() == 0.0 && (0.0..2f64.powi(64)).contains(&f) =>
                    {
                        Value::from(f as u64)
                    }
                    _ => v.clone(),
                },
                scalar => scalar.clone(),
            }
        }
        serde_json::to_string(&sorted(value)).expect("JSON values serialize")
    }

    /// `v` with every integer written as a float of the same value where one holds it.
    fn floats_for_integers(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), floats_for_integers(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(floats_for_integers).collect()),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) if (i as f64) as i64 == i && i as f64 != 2f64.powi(63) => {
                    Value::from(i as f64)
                }
                (None, Some(u)) if (u as f64) as u64 == u && u as f64 != 2f64.powi(64) => {
                    Value::from(u as f64)
                }
                _ => v.clone(),
            },
            other => other.clone(),
        }
    }

    #[test]
    fn canonical_text_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [1, {"f": 2, "e": 3}], "c": null}});
        assert_eq!(
            canonical(&&v).as_deref(),
            Some(r#"{"a":{"c":null,"d":[1,{"e":3,"f":2}]},"b":1}"#)
        );
    }

    fn shown(v: &Value, max: usize) -> Result<String, Stop> {
        let mut out = b"x".to_vec();
        let r = push_shown(&mut out, &v, max);
        if r.is_err() {
            assert_eq!(out, b"x", "left as it was");
        }
        r.map(|()| String::from_utf8(out[1..].to_vec()).unwrap())
    }

    #[test]
    fn shown_values_keep_their_order_and_stop_at_their_length() {
        let v = json!({"b": [1, -2.5, "t\u{202e}"], "a": {"c": null, "d": true}});
        let text = r#"{"b":[1,-2.5,"t\u202e"],"a":{"c":null,"d":true}}"#;
        assert_eq!(shown(&v, 1000).as_deref(), Ok(text));
        assert_eq!(shown(&v, text.len()).as_deref(), Ok(text));
        assert_eq!(shown(&v, text.len() - 1), Err(Stop::TooLong));
        assert_eq!(shown(&json!("x".repeat(5000)), 1024), Err(Stop::TooLong));
    }

    #[test]
    fn deeper_than_json_is_read_is_not_json() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        assert_eq!(digest(&&deep), None);
        assert!(digest(&&deep[0]).is_some());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::vec((any::<String>(), inner), 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The digest is that of the canonical JSON the approvals hash, and a shown value
        /// reads back as the value.
        #[test]
        fn digests_match_canonical_json_and_shown_values_read_back(v in json_value()) {
            prop_assert_eq!(canonical(&&v), Some(canonical_json(&v)));
            let canonical = canonical_json(&v);
            let want: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
            prop_assert_eq!(digest(&&v), Some(want));
            let text = shown(&v, usize::MAX).unwrap();
            prop_assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        }

        /// Numbers by value, in every canonical form (pins, approvals, confirmations): an
        /// integer and the float of the same value digest alike; another value does not.
        #[test]
        fn an_integer_and_its_float_digest_alike(v in json_value(), n in any::<i32>()) {
            prop_assert_eq!(digest(&&floats_for_integers(&v)), digest(&&v));
            let (int, float) = (json!({"amount": n}), json!({"amount": f64::from(n)}));
            prop_assert_eq!(digest(&&int), digest(&&float));
            prop_assert_ne!(digest(&&int), digest(&&json!({"amount": f64::from(n) + 0.5})));
        }
    }
}
