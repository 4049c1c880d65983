//! Decisions as Python objects.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use toolgate_core::{Decision, LimitState, Verdict};

/// The state of one limit a decision touched.
#[pyclass(name = "LimitState", module = "toolgate._core", frozen, get_all)]
#[derive(Clone)]
pub struct PyLimitState {
    pub counter: String,
    /// JSON pointer of the limit in the policy.
    pub rule: String,
    pub scope: &'static str,
    pub max: f64,
    /// The limit's sliding window in milliseconds.
    pub window_ms: u64,
    pub remaining: f64,
    pub reset_in_ms: u64,
}

impl PyLimitState {
    fn new(d: &Decision, l: &LimitState) -> PyLimitState {
        let limit = d.limit_of(l);
        PyLimitState {
            counter: d.counter_of(l).to_owned(),
            rule: d.rule_of(l).to_owned(),
            scope: limit.scope.as_str(),
            max: limit.max,
            window_ms: limit.window_ms,
            remaining: l.remaining(),
            reset_in_ms: l.reset_in_ms,
        }
    }
}

#[pymethods]
impl PyLimitState {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("counter", &self.counter)?;
        d.set_item("rule", &self.rule)?;
        d.set_item("scope", self.scope)?;
        d.set_item("max", self.max)?;
        d.set_item("window_ms", self.window_ms)?;
        d.set_item("remaining", self.remaining)?;
        d.set_item("reset_in_ms", self.reset_in_ms)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "LimitState({:?}, remaining={}, max={}, reset_in_ms={})",
            self.counter, self.remaining, self.max, self.reset_in_ms
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
        self.0.reason()
    }
    /// JSON pointer of the policy entry that decided.
    #[getter]
    fn rule(&self) -> &str {
        self.0.rule()
    }
    #[getter]
    fn retry_after_ms(&self) -> Option<u64> {
        self.0.retry_after_ms
    }
    #[getter]
    fn limits(&self) -> Vec<PyLimitState> {
        self.0
            .limits
            .iter()
            .map(|l| PyLimitState::new(&self.0, l))
            .collect()
    }
    #[getter]
    fn revision(&self) -> &str {
        self.0.revision()
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
    /// The human approval this decision is about (`apr_…`): waited for, used or refused.
    #[getter]
    fn approval_id(&self) -> Option<String> {
        self.0.approval.map(|id| id.to_string())
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
            .map(|l| PyLimitState::new(&self.0, l).to_dict(py))
            .collect();
        d.set_item("limits", limits?)?;
        d.set_item("revision", self.revision())?;
        d.set_item("shadow", self.0.shadow)?;
        d.set_item("reservation", self.0.reservation)?;
        d.set_item("approval_id", self.approval_id())?;
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

/// How one call was decided: the decision and the steps that led to it.
#[pyclass(name = "Explanation", module = "toolgate._core", frozen)]
pub struct PyExplanation {
    pub decision: Decision,
    pub steps: Vec<serde_json::Value>,
    pub dry_run: bool,
}

#[pymethods]
impl PyExplanation {
    #[getter]
    fn decision(&self) -> PyDecision {
        PyDecision(self.decision.clone())
    }
    /// True when nothing was counted.
    #[getter]
    fn dry_run(&self) -> bool {
        self.dry_run
    }
    /// The steps, in the order the engine took them: dicts with a `step` key (`section`,
    /// `hide`, `rule`, `rules`, `action`, `condition`, `limits`, `approval`, `shadow`,
    /// `decision`).
    #[getter]
    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = serde_json::to_string(&self.steps)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        py.import("json")?.getattr("loads")?.call1((text,))
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("decision", self.decision().to_dict(py)?)?;
        d.set_item("dry_run", self.dry_run)?;
        d.set_item("steps", self.steps(py)?)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "Explanation({}, code={}, steps={})",
            self.decision.verdict.as_str(),
            self.decision.code.as_str(),
            self.steps.len()
        )
    }
}
