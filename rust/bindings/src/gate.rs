//! A proxy gate's answer on one MCP HTTP request, as a Python object.

use crate::decision::PyDecision;
use pyo3::prelude::*;
use toolgate_core::mcp::Gate;

/// What the proxy must do with one HTTP request: forward it (adding `headers` to the
/// response), or send `status`, `headers` and `body` to the client in the server's place.
#[pyclass(name = "GateAnswer", module = "toolgate._core", frozen, get_all)]
pub struct PyGateAnswer {
    pub forward: bool,
    /// HTTP status of the answer; 200 when forwarding.
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// The JSON-RPC answer; empty when forwarding.
    pub body: Vec<u8>,
    /// The decision, when the request was a `tools/call` or was refused.
    pub decision: Option<Py<PyDecision>>,
}

impl PyGateAnswer {
    pub fn new(py: Python<'_>, gate: Gate) -> PyResult<PyGateAnswer> {
        let wrap = |d: Option<toolgate_core::Decision>| -> PyResult<_> {
            d.map(|d| Py::new(py, PyDecision(d))).transpose()
        };
        Ok(match gate {
            Gate::Forward { headers, decision } => PyGateAnswer {
                forward: true,
                status: 200,
                headers,
                body: Vec::new(),
                decision: wrap(decision)?,
            },
            Gate::Answer { reply, decision } => PyGateAnswer {
                forward: false,
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
                decision: wrap(decision)?,
            },
        })
    }
}

#[pymethods]
impl PyGateAnswer {
    fn __repr__(&self) -> String {
        format!(
            "GateAnswer(forward={}, status={}, headers={:?})",
            self.forward, self.status, self.headers
        )
    }
}
