//! An engine's approvals as a Python object: the sidecar's control plane drains their news
//! into its durable store, reconciles the two at start, and records approvers' decisions.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::asking::approval::{ApprovalEvent, ApprovalId, ApprovalKey, Owner};
use toolgate_core::Clock;
use toolgate_runtime::approvals::table::{ApprovalTable, Slot, State};
use toolgate_runtime::approvals::{ApprovalEvents, Approvals};
use toolgate_server::approval_spans::ApprovalSpans;

/// A sidecar's approvals (from `Sidecar.take_approvals`).
#[pyclass(name = "Approvals", module = "toolgate._core", frozen)]
pub struct PyApprovals {
    pub(crate) approvals: Arc<Approvals>,
    pub(crate) events: ApprovalEvents,
    /// The engine's clock.
    pub(crate) clock: Arc<dyn Clock>,
    /// A table file of another layout version that opening this one set aside.
    pub(crate) set_aside: Option<std::path::PathBuf>,
    /// Where the sidecar traces: approvers' decisions are spans in their calls' traces.
    pub(crate) spans: Option<ApprovalSpans>,
}

fn id_of(text: &str) -> PyResult<ApprovalId> {
    ApprovalId::parse(text)
        .ok_or_else(|| PyValueError::new_err(format!("not an approval id: {text:?}")))
}

fn state_of(text: &str) -> PyResult<State> {
    Ok(match text {
        "PENDING" => State::Pending,
        "APPROVED" => State::Approved,
        "DENIED" => State::Denied,
        "CONSUMED" => State::Consumed,
        other => {
            return Err(PyValueError::new_err(format!(
                "not an approval state: {other:?}"
            )))
        }
    })
}

fn slot_dict<'py>(py: Python<'py>, s: &Slot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", s.id.to_string())?;
    d.set_item("key", s.key.to_string())?;
    d.set_item("state", s.state.as_str())?;
    d.set_item("created_ms", s.created_ms)?;
    d.set_item("deadline_ms", s.deadline_ms)?;
    Ok(d)
}

impl PyApprovals {
    fn table(&self) -> &ApprovalTable {
        &self.approvals.table
    }
}

#[pymethods]
impl PyApprovals {
    /// News since the last call: `opened` (a new pending approval, with everything about
    /// the call) and `used` (an approved call ran). Waits up to `timeout` seconds for the
    /// first, without holding the GIL; returns at most `limit`.
    #[pyo3(signature = (timeout, limit = 256))]
    fn next_events<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        limit: usize,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let wait = Duration::try_from_secs_f64(timeout)
            .map_err(|_| PyValueError::new_err("timeout must be a non-negative number"))?;
        let events: Vec<ApprovalEvent> = py.detach(|| {
            let mut out = Vec::new();
            if let Some(first) = self.events.next(wait) {
                out.push(first);
                while out.len() < limit {
                    match self.events.next(Duration::ZERO) {
                        Some(e) => out.push(e),
                        None => break,
                    }
                }
            }
            out
        });
        events
            .into_iter()
            .map(|e| {
                let d = PyDict::new(py);
                match e {
                    ApprovalEvent::Opened(o) => {
                        if let Some(spans) = &self.spans {
                            spans.opened(&o);
                        }
                        d.set_item("event", "opened")?;
                        d.set_item("id", o.id.to_string())?;
                        d.set_item("key", o.key.to_string())?;
                        d.set_item("server", o.server)?;
                        d.set_item("tool", o.tool)?;
                        d.set_item("grant", o.grant)?;
                        d.set_item("grant_verified", o.grant_verified)?;
                        d.set_item("session", o.session)?;
                        d.set_item("agent", o.agent)?;
                        d.set_item("arguments", o.arguments)?;
                        d.set_item("arguments_cut", o.arguments_cut)?;
                        d.set_item("arguments_bytes", o.arguments_bytes)?;
                        d.set_item("arguments_digest", o.arguments_digest)?;
                        d.set_item("owner", o.owner.to_hex())?;
                        d.set_item("rule", o.rule)?;
                        d.set_item("revision", o.revision)?;
                        d.set_item("created_ms", o.created_ms)?;
                        d.set_item("expires_ms", o.expires_ms)?;
                        d.set_item("approvers", o.approvers)?;
                    }
                    ApprovalEvent::Used { id, at_ms } => {
                        d.set_item("event", "used")?;
                        d.set_item("id", id.to_string())?;
                        d.set_item("at_ms", at_ms)?;
                    }
                }
                Ok(d)
            })
            .collect()
    }

    /// An approver's decision on pending approval `id`; returns the approval as the table
    /// now holds it. ValueError (unknown, expired, already decided) otherwise.
    fn decide<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        approve: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let now = self.clock.wall_ms();
        let slot = self
            .table()
            .decide(id_of(id)?, approve, now)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        if let Some(spans) = &self.spans {
            spans.decided(slot.id, approve, now);
        }
        slot_dict(py, &slot)
    }

    /// Approval `id` as the table holds it, or None.
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.table()
            .get(id_of(id)?)
            .map(|s| slot_dict(py, &s))
            .transpose()
    }

    /// Every approval the table holds.
    fn slots<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.table()
            .slots()
            .iter()
            .map(|s| slot_dict(py, s))
            .collect()
    }

    /// Make the table hold this approval as the durable store knows it (see
    /// ApprovalTable.apply), counting against `owner` (as its news named it; None: no one).
    /// True if anything changed.
    #[pyo3(signature = (id, key, state, created_ms, deadline_ms, owner = None))]
    fn apply(
        &self,
        id: &str,
        key: &str,
        state: &str,
        created_ms: u64,
        deadline_ms: u64,
        owner: Option<&str>,
    ) -> PyResult<bool> {
        let key =
            ApprovalKey::parse(key).ok_or_else(|| PyValueError::new_err("bad approval key"))?;
        let owner = match owner {
            None => Owner::default(),
            Some(text) => {
                Owner::parse(text).ok_or_else(|| PyValueError::new_err("bad approval owner"))?
            }
        };
        let slot = Slot {
            key,
            id: id_of(id)?,
            state: state_of(state)?,
            created_ms,
            deadline_ms,
        };
        Ok(self.table().apply_owned(&slot, owner, self.clock.wall_ms()))
    }

    /// Drop an approval the durable store never heard of.
    fn forget(&self, id: &str) -> PyResult<bool> {
        Ok(self.table().forget(id_of(id)?))
    }

    /// Now, on the engine's clock, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    /// Where a table file of another layout version was set aside when this one was
    /// opened (its approvals are put back from the store), or None.
    #[getter]
    fn set_aside(&self) -> Option<std::path::PathBuf> {
        self.set_aside.clone()
    }

    /// News dropped because the queue was full (never drained fast enough).
    #[getter]
    fn dropped(&self) -> u64 {
        self.approvals.dropped()
    }
}
