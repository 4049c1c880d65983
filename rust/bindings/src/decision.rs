//! Decisions as Python objects: made by this process's engine, or read from a sidecar's
//! `toolgate.v1.DecideResponse` (so `toolgate.Client` answers with the same type as `Engine`).

use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use toolgate_core::{Code, Decision, LimitState, Verdict};
use toolgate_server::decider::pb;

/// The state of one limit a decision touched.
#[pyclass(name = "LimitState", module = "toolgate._core", frozen, get_all)]
#[derive(Clone)]
pub struct PyLimitState {
    pub counter: String,
    /// JSON pointer of the limit in the policy.
    pub rule: String,
    pub scope: String,
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
            scope: limit.scope.as_str().to_owned(),
            max: limit.max,
            window_ms: limit.window_ms,
            remaining: l.remaining(),
            reset_in_ms: l.reset_in_ms,
        }
    }

    fn from_wire(l: pb::LimitState) -> PyLimitState {
        PyLimitState {
            counter: l.counter,
            rule: l.rule,
            scope: l.scope,
            max: l.max,
            window_ms: l.window_ms,
            remaining: l.remaining,
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
        d.set_item("scope", &self.scope)?;
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

/// A decision a sidecar sent: its fields as read from the wire.
pub struct Received {
    verdict: Verdict,
    code: Code,
    reason: String,
    rule: String,
    retry_after_ms: Option<u64>,
    limits: Vec<PyLimitState>,
    revision: String,
    shadow: bool,
    reservation: Option<u64>,
    approval_id: Option<String>,
    marks_read: Vec<(String, String)>,
    marks_set: Vec<String>,
}

impl Received {
    /// Fails for a verdict or code this build does not know (unset, or from a newer
    /// sidecar): a caller must never read an unknown answer as some other one.
    fn from_wire(r: pb::DecideResponse) -> Result<Received, String> {
        let verdict = pb::Verdict::try_from(r.verdict)
            .ok()
            .and_then(|v| {
                known(
                    v.as_str_name(),
                    [Verdict::Allow, Verdict::Deny, Verdict::RequireApproval],
                    Verdict::as_str,
                )
            })
            .ok_or_else(|| {
                format!(
                    "the sidecar answered verdict {}, which this client does not know",
                    r.verdict
                )
            })?;
        let code = pb::Code::try_from(r.code)
            .ok()
            .and_then(|c| known(c.as_str_name(), Code::ALL, Code::as_str))
            .ok_or_else(|| {
                format!(
                    "the sidecar answered code {}, which this client does not know",
                    r.code
                )
            })?;
        Ok(Received {
            verdict,
            code,
            reason: r.reason,
            rule: r.rule,
            retry_after_ms: r.retry_after_ms,
            limits: r.limits.into_iter().map(PyLimitState::from_wire).collect(),
            revision: r.revision,
            shadow: r.shadow,
            reservation: (r.reservation != 0).then_some(r.reservation),
            approval_id: (!r.approval_id.is_empty()).then_some(r.approval_id),
            marks_read: {
                let mut read: Vec<_> = r.marks_read.into_iter().collect();
                read.sort();
                read
            },
            marks_set: r.marks_set,
        })
    }
}

/// The value among `all` whose name is `name`.
fn known<T: Copy, const N: usize>(
    name: &str,
    all: [T; N],
    name_of: fn(T) -> &'static str,
) -> Option<T> {
    all.into_iter().find(|&v| name_of(v) == name)
}

pub enum Source {
    /// Made here: strings are read through the policy that decided, on demand.
    Local(Decision),
    Received(Box<Received>),
}

/// The answer for one tool call.
#[pyclass(name = "Decision", module = "toolgate._core", frozen)]
pub struct PyDecision(pub Source);

impl PyDecision {
    pub fn local(d: Decision) -> PyDecision {
        PyDecision(Source::Local(d))
    }

    fn read(bytes: &[u8]) -> PyResult<pb::DecideResponse> {
        pb::DecideResponse::decode(bytes)
            .map_err(|e| PyValueError::new_err(format!("not a toolgate.v1.DecideResponse: {e}")))
    }

    fn received(r: pb::DecideResponse) -> PyResult<PyDecision> {
        let received = Received::from_wire(r).map_err(PyValueError::new_err)?;
        Ok(PyDecision(Source::Received(Box::new(received))))
    }
}

#[pymethods]
impl PyDecision {
    /// A decision from a serialized `toolgate.v1.DecideResponse` (what a sidecar answers).
    /// ValueError if the bytes are not one, or carry a verdict or code this build does not know.
    #[staticmethod]
    fn from_wire(response: &[u8]) -> PyResult<PyDecision> {
        PyDecision::received(PyDecision::read(response)?)
    }
    /// The decisions of a serialized `toolgate.v1.DecideBatchResponse`, in order.
    #[staticmethod]
    fn from_batch_wire(response: &[u8]) -> PyResult<Vec<PyDecision>> {
        let batch = pb::DecideBatchResponse::decode(response).map_err(|e| {
            PyValueError::new_err(format!("not a toolgate.v1.DecideBatchResponse: {e}"))
        })?;
        batch
            .responses
            .into_iter()
            .map(PyDecision::received)
            .collect()
    }
    /// "ALLOW", "DENY" or "REQUIRE_APPROVAL" (always "ALLOW" in shadow mode).
    #[getter]
    fn verdict(&self) -> &'static str {
        match &self.0 {
            Source::Local(d) => d.verdict.as_str(),
            Source::Received(r) => r.verdict.as_str(),
        }
    }
    #[getter]
    fn allowed(&self) -> bool {
        self.verdict() == Verdict::Allow.as_str()
    }
    #[getter]
    fn code(&self) -> &'static str {
        match &self.0 {
            Source::Local(d) => d.code.as_str(),
            Source::Received(r) => r.code.as_str(),
        }
    }
    #[getter]
    fn reason(&self) -> &str {
        match &self.0 {
            Source::Local(d) => d.reason(),
            Source::Received(r) => &r.reason,
        }
    }
    /// JSON pointer of the policy entry that decided.
    #[getter]
    fn rule(&self) -> &str {
        match &self.0 {
            Source::Local(d) => d.rule(),
            Source::Received(r) => &r.rule,
        }
    }
    #[getter]
    fn retry_after_ms(&self) -> Option<u64> {
        match &self.0 {
            Source::Local(d) => d.retry_after_ms,
            Source::Received(r) => r.retry_after_ms,
        }
    }
    #[getter]
    fn limits(&self) -> Vec<PyLimitState> {
        match &self.0 {
            Source::Local(d) => d.limits.iter().map(|l| PyLimitState::new(d, l)).collect(),
            Source::Received(r) => r.limits.clone(),
        }
    }
    #[getter]
    fn revision(&self) -> &str {
        match &self.0 {
            Source::Local(d) => d.revision(),
            Source::Received(r) => &r.revision,
        }
    }
    #[getter]
    fn shadow(&self) -> bool {
        match &self.0 {
            Source::Local(d) => d.shadow,
            Source::Received(r) => r.shadow,
        }
    }
    /// Id for `Engine.release` (or `Client.release`); `None` when nothing was reserved.
    #[getter]
    fn reservation(&self) -> Option<u64> {
        match &self.0 {
            Source::Local(d) => d.reservation,
            Source::Received(r) => r.reservation,
        }
    }
    /// The human approval this decision is about (`apr_…`): waited for, used or refused.
    #[getter]
    fn approval_id(&self) -> Option<String> {
        match &self.0 {
            Source::Local(d) => d.approval.map(|id| id.to_string()),
            Source::Received(r) => r.approval_id.clone(),
        }
    }
    /// The session marks the decision read (`{"read": {name: "set" | "unset" | "no_scope" |
    /// "unread"}, "set": [name, ...]}`); `None` when it read and set none.
    #[getter]
    fn marks<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let (read, set): (Vec<(&str, &str)>, Vec<&str>) = match &self.0 {
            Source::Local(d) => match &d.marks {
                None => return Ok(None),
                Some(m) => (
                    m.read.iter().map(|(n, s)| (&**n, s.as_str())).collect(),
                    m.set.iter().map(|n| &**n).collect(),
                ),
            },
            Source::Received(r) => {
                if r.marks_read.is_empty() && r.marks_set.is_empty() {
                    return Ok(None);
                }
                (
                    r.marks_read
                        .iter()
                        .map(|(n, s)| (n.as_str(), s.as_str()))
                        .collect(),
                    r.marks_set.iter().map(String::as_str).collect(),
                )
            }
        };
        let out = PyDict::new(py);
        let read_dict = PyDict::new(py);
        for (name, state) in read {
            read_dict.set_item(name, state)?;
        }
        out.set_item("read", read_dict)?;
        out.set_item("set", set)?;
        Ok(Some(out))
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("verdict", self.verdict())?;
        d.set_item("code", self.code())?;
        d.set_item("reason", self.reason())?;
        d.set_item("rule", self.rule())?;
        d.set_item("retry_after_ms", self.retry_after_ms())?;
        let limits: PyResult<Vec<_>> = self.limits().iter().map(|l| l.to_dict(py)).collect();
        d.set_item("limits", limits?)?;
        d.set_item("revision", self.revision())?;
        d.set_item("shadow", self.shadow())?;
        d.set_item("reservation", self.reservation())?;
        d.set_item("approval_id", self.approval_id())?;
        d.set_item("marks", self.marks(py)?)?;
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
        PyDecision::local(self.decision.clone())
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
