//! Decisions as Python objects.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use toolgate_core::{Decision, LimitState, Verdict};

/// The state of one limit a decision touched.
#[pyclass(name = "LimitState", module = "toolgate._core", frozen)]
pub struct PyLimitState(LimitState);

#[pymethods]
impl PyLimitState {
    #[getter]
    fn counter(&self) -> &str {
        &self.0.counter
    }
    /// JSON pointer of the limit in the policy.
    #[getter]
    fn rule(&self) -> &str {
        &self.0.rule
    }
    #[getter]
    fn scope(&self) -> &str {
        self.0.scope
    }
    #[getter]
    fn max(&self) -> f64 {
        self.0.max
    }
    #[getter]
    fn remaining(&self) -> f64 {
        self.0.remaining
    }
    #[getter]
    fn reset_in_ms(&self) -> u64 {
        self.0.reset_in_ms
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("counter", &*self.0.counter)?;
        d.set_item("rule", &*self.0.rule)?;
        d.set_item("scope", self.0.scope)?;
        d.set_item("max", self.0.max)?;
        d.set_item("remaining", self.0.remaining)?;
        d.set_item("reset_in_ms", self.0.reset_in_ms)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "LimitState({:?}, remaining={}, max={}, reset_in_ms={})",
            &*self.0.counter, self.0.remaining, self.0.max, self.0.reset_in_ms
        )
    }
}

/// The answer for one tool call.
#[pyclass(name = "Decision", module = "toolgate._core", frozen)]
pub struct PyDecision(pub Decision);

#[pymethods]
impl PyDecision {
    /// "ALLOW", "DENY" or "REQUIRE_APPROVAL" (always "ALLOW" in shadow mode).
    #[getter]
    fn verdict(&self) -> &'static str {
        self.0.verdict.as_str()
    }
    #[getter]
    fn allowed(&self) -> bool {
        self.0.verdict == Verdict::Allow
    }
    #[getter]
    fn code(&self) -> &'static str {
        self.0.code.as_str()
    }
    #[getter]
    fn reason(&self) -> &str {
        &self.0.reason
    }
    /// JSON pointer of the policy entry that decided.
    #[getter]
    fn rule(&self) -> &str {
        &self.0.rule
    }
    #[getter]
    fn retry_after_ms(&self) -> Option<u64> {
        self.0.retry_after_ms
    }
    #[getter]
    fn limits(&self) -> Vec<PyLimitState> {
        self.0.limits.iter().cloned().map(PyLimitState).collect()
    }
    #[getter]
    fn revision(&self) -> &str {
        &self.0.revision
    }
    #[getter]
    fn shadow(&self) -> bool {
        self.0.shadow
    }
    /// Id for `Engine.release`; `None` when nothing was reserved.
    #[getter]
    fn reservation(&self) -> Option<u64> {
        self.0.reservation
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("verdict", self.verdict())?;
        d.set_item("code", self.code())?;
        d.set_item("reason", self.reason())?;
        d.set_item("rule", self.rule())?;
        d.set_item("retry_after_ms", self.0.retry_after_ms)?;
        let limits: PyResult<Vec<_>> = self
            .0
            .limits
            .iter()
            .map(|l| PyLimitState(l.clone()).to_dict(py))
            .collect();
        d.set_item("limits", limits?)?;
        d.set_item("revision", self.revision())?;
        d.set_item("shadow", self.0.shadow)?;
        d.set_item("reservation", self.0.reservation)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "Decision({}, code={}, rule={:?}, reason={:?})",
            self.verdict(),
            self.code(),
            self.rule(),
            self.reason()
        )
    }
}
