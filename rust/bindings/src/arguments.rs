//! Conditions read Python arguments in place: a dict is walked only along the paths a
//! policy names, instead of being converted to JSON on every call.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::RefCell;
use toolgate_core::json::args::{ArgValue, Kind, Num};
use toolgate_core::json::fold::fold_eq;

/// Keys a thread remembers as Python strings; the oldest is forgotten first.
const REMEMBERED_KEYS: usize = 32;

thread_local! {
    /// Argument keys already made into Python strings, by the address of the policy's own
    /// key text. A policy names few keys, and making a string per lookup costs an
    /// allocation, a UTF-8 decode and a hash (a remembered string keeps its hash).
    static KEY_STRINGS: RefCell<Vec<(usize, Py<PyString>)>> = const { RefCell::new(Vec::new()) };
}

/// `key` as a Python string, remembered per thread. An entry is used only if its text is
/// `key`'s, so an address reused by another policy's text cannot give a wrong key.
fn key_string<'py>(py: Python<'py>, key: &str) -> Bound<'py, PyString> {
    let address = key.as_ptr() as usize;
    let remembered = KEY_STRINGS.try_with(|keys| {
        let keys = keys.try_borrow().ok()?;
        keys.iter()
            .map(|(a, s)| (a, s.bind(py)))
            .find(|(a, s)| **a == address && s.to_str().is_ok_and(|t| t == key))
            .map(|(_, s)| s.clone())
    });
    if let Ok(Some(s)) = remembered {
        return s;
    }
    let s = PyString::new(py, key);
    let _ = KEY_STRINGS.try_with(|keys| {
        if let Ok(mut keys) = keys.try_borrow_mut() {
            if keys.len() >= REMEMBERED_KEYS {
                keys.remove(0);
            }
            keys.push((address, s.clone().unbind()));
        }
    });
    s
}

#[derive(Clone)]
pub struct PyArg<'py>(pub Bound<'py, PyAny>);

fn is_exactly(k: &Bound<'_, PyAny>, key: &str) -> bool {
    k.cast::<PyString>()
        .is_ok_and(|k| k.to_str().is_ok_and(|k| k == key))
}

/// Whether a decoder could read dict key `k` as `key`: it folds like `key`, or it is not a
/// string, which JSON would have to name some other way (`json.dumps` writes `1` as `"1"`).
fn could_read_as(k: &Bound<'_, PyAny>, key: &str) -> bool {
    match k.cast::<PyString>() {
        Ok(k) => k.to_str().is_ok_and(|k| fold_eq(k, key)),
        Err(_) => true,
    }
}

impl<'py> ArgValue for PyArg<'py> {
    fn kind(&self) -> Kind {
        let v = &self.0;
        if v.is_none() {
            Kind::Null
        } else if v.is_instance_of::<PyBool>() {
            Kind::Bool
        } else if v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>() {
            Kind::Number
        } else if v.is_instance_of::<PyString>() {
            Kind::String
        } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
            Kind::Array
        } else {
            // Dicts, and anything that is not JSON: it never equals a scalar.
            Kind::Object
        }
    }

    /// A dict's value for `key`, unless another key of the dict could be read as `key` too:
    /// a key that folds like it (Go's `encoding/json` keeps the last of them), or a key that
    /// is not a string (`json.dumps` writes `1` and `"1"` both as `"1"`). Then the value a
    /// tool's server reads is not known, and the lookup misses, which
    /// [`ArgValue::has_case_variant`] turns into a condition that cannot be evaluated.
    fn get_key(&self, key: &str) -> Option<Self> {
        let dict = self.0.cast::<PyDict>().ok()?;
        let value = dict.get_item(key_string(dict.py(), key)).ok().flatten()?;
        let twin = dict.len() > 1
            && dict
                .iter()
                .any(|(k, _)| !is_exactly(&k, key) && could_read_as(&k, key));
        (!twin).then_some(PyArg(value))
    }

    fn has_case_variant(&self, key: &str) -> bool {
        let Ok(dict) = self.0.cast::<PyDict>() else {
            return false;
        };
        dict.iter().any(|(k, _)| could_read_as(&k, key))
    }

    fn is_opaque(&self) -> bool {
        self.kind() == Kind::Object && !self.0.is_instance_of::<PyDict>()
    }

    fn get_index(&self, index: usize) -> Option<Self> {
        if let Ok(list) = self.0.cast::<PyList>() {
            return list.get_item(index).ok().map(PyArg);
        }
        let tuple = self.0.cast::<PyTuple>().ok()?;
        tuple.get_item(index).ok().map(PyArg)
    }

    fn entries(&self) -> Option<Vec<(Cow<'_, str>, Self)>> {
        let dict = self.0.cast::<PyDict>().ok()?;
        dict.iter()
            .map(|(k, v)| {
                let key = k.cast::<PyString>().ok()?.to_str().ok()?.to_owned();
                Some((Cow::Owned(key), PyArg(v)))
            })
            .collect()
    }

    fn len(&self) -> usize {
        if self.kind() == Kind::Array || self.0.is_instance_of::<PyDict>() {
            self.0.len().unwrap_or(0)
        } else {
            0
        }
    }

    fn as_str(&self) -> Option<&str> {
        self.0.cast::<PyString>().ok()?.to_str().ok()
    }

    fn as_num(&self) -> Option<Num> {
        let v = &self.0;
        if v.is_instance_of::<PyBool>() {
            return None;
        }
        if v.is_instance_of::<PyInt>() {
            return Some(match v.extract::<i128>() {
                Ok(i) => Num::Int(i),
                // Beyond i128: an integer still, of the largest magnitude, so that it is never
                // compared as the double it would round to (see `Num::is_exact_everywhere`).
                Err(_) if v.lt(0).unwrap_or(false) => Num::Int(i128::MIN),
                Err(_) => Num::Int(i128::MAX),
            });
        }
        if v.is_instance_of::<PyFloat>() {
            return v.extract::<f64>().ok().map(Num::Float);
        }
        None
    }

    fn as_bool(&self) -> Option<bool> {
        self.0.cast::<PyBool>().ok().map(|b| b.is_true())
    }

    fn to_json(&self) -> Option<Value> {
        to_json(&self.0)
    }
}

/// Deepest nesting [`to_json`] converts, as serde_json reads JSON text: deeper is refused
/// rather than recursed into.
const MAX_DEPTH: usize = 128;

/// Convert a Python value to JSON; `None` for values JSON cannot hold (a key that is not a
/// string, NaN, a set, nesting deeper than [`MAX_DEPTH`]...).
pub fn to_json(v: &Bound<'_, PyAny>) -> Option<Value> {
    to_json_within(v, MAX_DEPTH)
}

fn to_json_within(v: &Bound<'_, PyAny>, depth: usize) -> Option<Value> {
    let depth = depth.checked_sub(1)?;
    let arg = PyArg(v.clone());
    Some(match arg.kind() {
        Kind::Null => Value::Null,
        Kind::Bool => Value::Bool(arg.as_bool()?),
        Kind::Number => match arg.as_num()? {
            Num::Int(i) => i64::try_from(i)
                .map(Value::from)
                .or_else(|_| u64::try_from(i).map(Value::from))
                .unwrap_or_else(|_| Value::from(i as f64)),
            Num::Float(f) => serde_json::Number::from_f64(f).map(Value::Number)?,
        },
        Kind::String => Value::String(arg.as_str()?.to_owned()),
        Kind::Array => Value::Array(
            (0..arg.len())
                .map(|i| arg.get_index(i).and_then(|a| to_json_within(&a.0, depth)))
                .collect::<Option<_>>()?,
        ),
        Kind::Object => {
            let dict = v.cast::<PyDict>().ok()?;
            let mut map = serde_json::Map::new();
            for (k, item) in dict.iter() {
                map.insert(
                    k.cast::<PyString>().ok()?.to_str().ok()?.to_owned(),
                    to_json_within(&item, depth)?,
                );
            }
            Value::Object(map)
        }
    })
}
