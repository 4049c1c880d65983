//! The sidecar's settings (`toolgate_server::settings`) as a Python object: `toolgate serve`
//! reads their defaults and choices here, and passes the options it was given through,
//! checked once, in Rust.

use crate::arguments::to_json;
use pyo3::exceptions::{PyAttributeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use toolgate_server::settings::{Settings, CHOICES};

/// Options by name, as JSON; ValueError, naming the option's flag, for a value that is not
/// a string, number, bool or None.
fn given(options: Option<&Bound<'_, PyDict>>) -> PyResult<Map<String, Value>> {
    let mut given = Map::new();
    for (name, value) in options.into_iter().flat_map(|o| o.iter()) {
        let name: String = name.extract()?;
        match to_json(&value) {
            Some(v @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => {
                given.insert(name, v);
            }
            // JSON has no NaN or infinity: a float with neither is a number here.
            None if value.extract::<f64>().is_ok_and(|f| !f.is_finite()) => {
                return Err(PyValueError::new_err(format!(
                    "--{}: a number is finite, not {value}",
                    name.replace('_', "-"),
                )))
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "--{}: a setting is a str, int, float, bool or None, not {}",
                    name.replace('_', "-"),
                    value.get_type().name()?
                )))
            }
        }
    }
    Ok(given)
}

fn checked(settings: Result<Settings, String>) -> PyResult<PySidecarSettings> {
    let inner = settings.map_err(PyValueError::new_err)?;
    inner.check().map_err(PyValueError::new_err)?;
    Ok(PySidecarSettings { inner })
}

fn to_python(py: Python<'_>, value: Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.into_pyobject(py)?.into_any().unbind(),
            (None, Some(f)) => f.into_pyobject(py)?.into_any().unbind(),
            (None, None) => unreachable!("settings hold no negative integers"),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::Array(_) | Value::Object(_) => unreachable!("settings hold scalars"),
    })
}

/// `toolgate serve`'s options for the sidecar, by their flags' names (`--store-mode` is
/// `store_mode`), each read as an attribute; those not given are the defaults. ValueError
/// for an option with no such name, of the wrong type, or whose value the sidecar cannot
/// take, naming its flag.
#[pyclass(name = "SidecarSettings", module = "toolgate._core", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PySidecarSettings {
    pub(crate) inner: Settings,
}

#[pymethods]
impl PySidecarSettings {
    #[new]
    #[pyo3(signature = (**options))]
    fn new(options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        checked(Settings::from_json(Value::Object(given(options)?)))
    }

    /// These settings with `changes` made, checked again.
    #[pyo3(signature = (**changes))]
    fn replace(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        checked(self.inner.replace(given(changes)?))
    }

    /// Every option's name and value.
    fn as_dict(&self, py: Python<'_>) -> PyResult<BTreeMap<String, Py<PyAny>>> {
        let Ok(Value::Object(all)) = serde_json::to_value(&self.inner) else {
            unreachable!("settings are an object")
        };
        all.into_iter()
            .map(|(k, v)| Ok((k, to_python(py, v)?)))
            .collect()
    }

    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        match serde_json::to_value(&self.inner)
            .ok()
            .and_then(|mut v| v.get_mut(name).map(Value::take))
        {
            Some(value) => to_python(py, value),
            None => Err(PyAttributeError::new_err(format!(
                "'SidecarSettings' object has no attribute {name:?}"
            ))),
        }
    }

    fn __repr__(&self) -> String {
        let (Ok(Value::Object(all)), Ok(Value::Object(defaults))) = (
            serde_json::to_value(&self.inner),
            serde_json::to_value(Settings::default()),
        ) else {
            unreachable!("settings are an object")
        };
        let changed: Vec<String> = all
            .iter()
            .filter(|(k, v)| defaults.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("SidecarSettings({})", changed.join(", "))
    }

    /// The threads that serve: `threads`, or one per CPU this process may use (its affinity
    /// and its cgroup's CPU quota, in whole CPUs).
    fn serving_threads(&self) -> usize {
        self.inner.serving_threads()
    }

    /// Whether the agent, and the session, come from a claim of a JWT the proxy verified
    /// rather than from a header the client chooses.
    #[getter]
    fn verified(&self) -> (bool, bool) {
        self.inner.verified()
    }

    /// The options that take one of a few words, and those words.
    #[classattr]
    #[allow(non_snake_case)]
    fn CHOICES() -> BTreeMap<&'static str, Vec<&'static str>> {
        CHOICES.iter().map(|(k, v)| (*k, v.to_vec())).collect()
    }
}
