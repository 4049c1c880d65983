//! A read-only view of a call's arguments, so conditions can run on `serde_json::Value` or,
//! through the binding, directly on Python objects without converting them first.

use super::strict::{self, StrictError};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;

/// A call's arguments given as JSON text (an API's `arguments_json`), read the way every
/// mainstream decoder reads it or refused, as a proxied body is
/// ([`super::strict`]): the caller forwards this text to the tool's server, and a
/// duplicate key, a case variant of a key or a number beyond 2^53 would let that server read
/// other arguments than the ones decided.
pub fn parse_json_arguments(json: &[u8]) -> Result<Value, ArgumentsRefused> {
    let refused = |what: &str, e: &StrictError| ArgumentsRefused {
        told: format!("{what}: {e}"),
        logged: format!("{what}: {}", e.unquoted()),
    };
    match strict::parse(json) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(ArgumentsRefused::plain(
            "arguments must be a JSON object".into(),
        )),
        Err(e @ StrictError::Syntax(_)) => Err(refused("arguments are not valid JSON", &e)),
        Err(e @ StrictError::Ambiguous { .. }) => {
            Err(refused("arguments could be read two ways", &e))
        }
        Err(e @ StrictError::TooLarge(_)) => Err(refused("arguments are too large", &e)),
    }
}

/// Arguments refused: why, as the caller is told (naming the key or number at fault), and
/// as the decision log writes it (no key, value or place of the arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentsRefused {
    pub told: String,
    pub logged: String,
}

impl ArgumentsRefused {
    /// A refusal whose text quotes nothing of the arguments.
    pub fn plain(why: String) -> ArgumentsRefused {
        ArgumentsRefused {
            logged: why.clone(),
            told: why,
        }
    }
}

impl std::fmt::Display for ArgumentsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.told)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }

    pub fn of(v: &Value) -> Kind {
        match v {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }
}

/// A JSON number: integers stay exact, anything else is a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    pub fn from_json(n: &serde_json::Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::Int(i as i128)
        } else if let Some(u) = n.as_u64() {
            Num::Int(u as i128)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// Read as this number by every mainstream decoder: an integer within 2^53 (JavaScript,
    /// and Go decoding into `any`, round larger ones to a double), or a double.
    pub fn is_exact_everywhere(self) -> bool {
        match self {
            Num::Int(i) => i.unsigned_abs() <= u128::from(strict::MAX_SAFE_INTEGER),
            Num::Float(_) => true,
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Numeric comparison: integers exactly, mixed through f64. `None` for NaN.
    pub fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

/// What conditions need from an argument value.
pub trait ArgValue: Sized {
    fn kind(&self) -> Kind;
    /// The value at `key`; a miss where the object has another key that folds like `key` (a
    /// case-insensitive decoder could read that one as `key`), for values that can hold such
    /// keys (JSON text with them is refused before it gets here: [`parse_json_arguments`]).
    fn get_key(&self, key: &str) -> Option<Self>;
    /// Whether the object has a key that folds like `key`, which a case-insensitive decoder
    /// (Go's `encoding/json`) would read as `key`.
    fn has_case_variant(&self, key: &str) -> bool;
    /// A value that is not JSON and may hold keys or items a serializer writes out (a Python
    /// dataclass, a mapping that is not a dict, a set): what a server reads in it is unknown.
    fn is_opaque(&self) -> bool {
        false
    }
    fn get_index(&self, index: usize) -> Option<Self>;
    /// An object's members in its own order; `None` for any other value, or an object
    /// with a key JSON cannot hold (one that is not a string).
    fn entries(&self) -> Option<Vec<(Cow<'_, str>, Self)>>;
    /// Elements of an array (or entries of an object); 0 for scalars.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn as_str(&self) -> Option<&str>;
    fn as_num(&self) -> Option<Num>;
    fn as_bool(&self) -> Option<bool>;
    /// A JSON copy, for comparing whole arrays and objects (rare); `None` for a value that
    /// JSON cannot hold, or that decoders would read two ways.
    fn to_json(&self) -> Option<Value>;
}

impl ArgValue for &Value {
    fn kind(&self) -> Kind {
        Kind::of(self)
    }
    /// JSON text comes through [`parse_json_arguments`] or [`strict::parse`], which
    /// refuse keys that fold alike: a present key is the only one, and looking it up costs
    /// no pass over its object.
    fn get_key(&self, key: &str) -> Option<Self> {
        self.as_object()?.get(key)
    }
    fn has_case_variant(&self, key: &str) -> bool {
        self.as_object()
            .is_some_and(|o| o.keys().any(|k| super::fold::fold_eq(k, key)))
    }
    fn get_index(&self, index: usize) -> Option<Self> {
        self.as_array()?.get(index)
    }
    fn entries(&self) -> Option<Vec<(Cow<'_, str>, Self)>> {
        let members = self.as_object()?.iter();
        Some(
            members
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), v))
                .collect(),
        )
    }
    fn len(&self) -> usize {
        match self {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 0,
        }
    }
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn as_num(&self) -> Option<Num> {
        match self {
            Value::Number(n) => Some(Num::from_json(n)),
            _ => None,
        }
    }
    fn as_bool(&self) -> Option<bool> {
        Value::as_bool(self)
    }
    fn to_json(&self) -> Option<Value> {
        Some((*self).clone())
    }
}

/// Deep equality where numbers compare by value (`1 == 1.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            Num::from_json(x).compare(Num::from_json(y)) == Some(Ordering::Equal)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}
