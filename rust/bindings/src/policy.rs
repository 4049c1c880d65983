//! `Policy` objects and the `PolicyError` exception that carries every validation error.

use crate::arguments::to_json;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::path::PathBuf;
use toolgate_core::policy::source::Format;
use toolgate_core::policy::{Policy, PolicyErrors, Unpinned};

create_exception!(
    _core,
    PolicyError,
    PyValueError,
    "A policy failed validation; `errors` lists every problem (pointer, line, message)."
);

/// One validation problem: where it is and what is wrong.
#[pyclass(module = "toolgate._core", frozen, get_all)]
#[derive(Clone)]
pub struct ValidationError {
    pub pointer: String,
    pub line: Option<u32>,
    pub message: String,
}

#[pymethods]
impl ValidationError {
    fn __str__(&self) -> String {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        match self.line {
            Some(line) => format!("{pointer}: {} (line {line})", self.message),
            None => format!("{pointer}: {}", self.message),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "ValidationError({:?}, line={:?}, {:?})",
            self.pointer, self.line, self.message
        )
    }
}

pub use toolgate_runtime::policy_file::{hex, load_file, read_regular, MAX_FILE_BYTES};

/// Each pins file `policy` read, with the SHA-256 (hex) of the bytes it was handed.
pub fn pins_loaded(policy: &Policy) -> Vec<(PathBuf, String)> {
    let files = policy.pins.iter();
    files.map(|f| (f.path.clone(), hex(&f.digest))).collect()
}

/// `policy`'s limits, marks and conditions that rest on an identity the client asserts.
pub fn self_asserted(
    policy: &Policy,
    agent_verified: bool,
    session_verified: bool,
) -> Vec<ValidationError> {
    let verified = toolgate_core::policy::self_asserted::Verified {
        session: session_verified,
        agent: agent_verified,
    };
    toolgate_core::policy::self_asserted::self_asserted(policy, verified)
        .into_iter()
        .map(|n| ValidationError {
            pointer: n.pointer,
            line: None,
            message: n.message,
        })
        .collect()
}

pub fn policy_error(py: Python<'_>, errors: PolicyErrors) -> PyErr {
    let details: Vec<ValidationError> = errors
        .0
        .iter()
        .map(|e| ValidationError {
            pointer: e.pointer.clone(),
            line: e.line,
            message: e.message.clone(),
        })
        .collect();
    let text = details
        .iter()
        .map(ValidationError::__str__)
        .collect::<Vec<_>>()
        .join("\n");
    let n = details.len();
    let errors = if n == 1 { "error" } else { "errors" };
    let err = PolicyError::new_err(format!("invalid policy ({n} {errors}):\n{text}"));
    if let Ok(list) = PyList::new(py, details) {
        let _ = err.value(py).setattr("errors", list);
    }
    err
}

/// A validated policy document.
#[pyclass(name = "Policy", module = "toolgate._core", frozen)]
#[derive(Clone)]
pub struct PyPolicy {
    pub inner: Policy,
}

#[pymethods]
impl PyPolicy {
    /// Load a JSON or YAML file (by extension; otherwise by content).
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<PyPolicy> {
        load_file(&path)
            .map(|inner| PyPolicy { inner })
            .map_err(|e| policy_error(py, e))
    }

    /// Load from text: `format` is "json", "yaml", or "auto" (by `path`'s extension if given,
    /// the file the text was read from; else JSON if it starts with `{` or `[`).
    #[staticmethod]
    #[pyo3(signature = (text, format = "auto", *, path = None))]
    fn from_str(
        py: Python<'_>,
        text: &str,
        format: &str,
        path: Option<PathBuf>,
    ) -> PyResult<PyPolicy> {
        let name = path.as_deref().and_then(|p| p.file_name()?.to_str());
        Format::choose(format, name, text).map_err(PyValueError::new_err)?;
        Policy::from_text(text, format, path.as_deref(), &read_regular)
            .map(|inner| PyPolicy { inner })
            .map_err(|e| policy_error(py, e))
    }

    /// Every limit, mark and condition that rests on an identity the client asserts about
    /// itself (a session id unless `session_verified`, an agent id unless `agent_verified`),
    /// as `(pointer, message)` notes.
    #[pyo3(signature = (agent_verified = false, session_verified = false))]
    fn self_asserted(&self, agent_verified: bool, session_verified: bool) -> Vec<ValidationError> {
        self_asserted(&self.inner, agent_verified, session_verified)
    }

    /// Load from a dict (as `json.loads` would give).
    #[staticmethod]
    fn from_dict(py: Python<'_>, document: &Bound<'_, PyAny>) -> PyResult<PyPolicy> {
        let value = to_json(document)
            .ok_or_else(|| PyValueError::new_err("policy dict holds values that are not JSON (str keys, str/int/float/bool/None/list/dict only, nested at most 128 deep)"))?;
        Policy::from_json_value_reading(&value, &read_regular)
            .map(|inner| PyPolicy { inner })
            .map_err(|e| policy_error(py, e))
    }

    /// True when some call could wait for a person's approval: a `require_approval` rule in
    /// enforce mode, in any section.
    #[getter]
    fn needs_approval(&self) -> bool {
        self.inner.needs_approval()
    }

    /// Hex digest identifying this document.
    #[getter]
    fn revision(&self) -> &str {
        &self.inner.revision
    }

    /// The pins files the policy read (`pins.file`, relative to the policy's directory), each
    /// with the SHA-256 (hex) of the bytes it read: a reload watches them for a change from
    /// what was loaded, not from what a later read found.
    #[getter]
    fn pins_loaded(&self) -> Vec<(PathBuf, String)> {
        pins_loaded(&self.inner)
    }

    /// The tools each section's pins file pins, for the sections whose `pins` withhold a
    /// tool with no pin (`unpinned: hide`): `(server, pins file, names)`, `server` None for
    /// the top-level section. Such a file lists every tool the section can reach: what
    /// `toolgate validate` checks rule names against without a listing of its own.
    fn pinned_tools(&self) -> Vec<(Option<String>, String, Vec<String>)> {
        let policy = &self.inner;
        let root = policy.root.pins.as_ref();
        let sections = std::iter::once((None, root)).chain(
            (policy.servers.iter()).map(|(id, s)| (Some(id.as_str()), s.pins.as_ref().or(root))),
        );
        sections
            .filter_map(|(server, rule)| {
                let rule = rule.filter(|r| r.unpinned == Unpinned::Hide)?;
                let file = policy.pins.iter().find(|f| f.file == rule.file)?;
                let pinned = match server {
                    None => Some(&file.pins.tools),
                    Some(s) => file.pins.servers.get(s),
                };
                let mut names: Vec<String> = pinned
                    .into_iter()
                    .flat_map(|t| t.keys())
                    .map(|n| n.to_string())
                    .collect();
                names.sort();
                Some((server.map(str::to_owned), rule.file.clone(), names))
            })
            .collect()
    }

    /// The tools the policy names exactly (not by a glob), in its rules and its `hide`:
    /// `(server, name, pointer)`, `server` None for the top-level section. What `toolgate
    /// validate --tools` looks for in a server's listing.
    fn named_tools(&self) -> Vec<(Option<String>, String, String)> {
        let sections = std::iter::once((None, &self.inner.root)).chain(
            self.inner
                .servers
                .iter()
                .map(|(id, section)| (Some(id.clone()), section)),
        );
        sections
            .flat_map(|(server, section)| {
                let ruled = section.tools.iter().map(|(name, _)| name);
                ruled
                    .chain(section.hide.of(toolgate_core::Kind::Tool))
                    .filter(|name| !toolgate_core::policy::glob::is_glob(&name.text))
                    .map(move |name| (server.clone(), name.text.clone(), name.pointer.clone()))
            })
            .collect()
    }

    /// Server ids that have their own section.
    #[getter]
    fn servers(&self) -> Vec<String> {
        self.inner
            .servers
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn __repr__(&self) -> String {
        format!("Policy(revision={:?})", self.inner.revision)
    }
}

/// Accept a Policy, a dict, or a path.
pub fn coerce(py: Python<'_>, policy: &Bound<'_, PyAny>) -> PyResult<Policy> {
    if let Ok(p) = policy.cast::<PyPolicy>() {
        return Ok(p.get().inner.clone());
    }
    if policy.is_instance_of::<pyo3::types::PyDict>() {
        return PyPolicy::from_dict(py, policy).map(|p| p.inner);
    }
    if let Ok(path) = policy.extract::<PathBuf>() {
        return PyPolicy::from_file(py, path).map(|p| p.inner);
    }
    Err(pyo3::exceptions::PyTypeError::new_err(
        "policy must be a Policy, a dict, or a path",
    ))
}
