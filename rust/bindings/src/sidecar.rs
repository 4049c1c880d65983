//! The assembled sidecar (`toolgate_server::sidecar`) as a Python object: `toolgate serve`
//! builds one from its settings, puts its approvals in order, then serves.

use crate::approvals::PyApprovals;
use crate::clock::PyManualClock;
use crate::engine::PyEngine;
use crate::policy::coerce;
use crate::settings::PySidecarSettings;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::{Clock, MonotonicClock};
use toolgate_server::approval_spans::ApprovalSpans;
use toolgate_server::sidecar::{Error, Sidecar};

fn raise(e: Error) -> PyErr {
    match e {
        Error::Invalid(m) => PyValueError::new_err(m),
        Error::Io(m) => PyOSError::new_err(m),
    }
}

/// An engine with the parts the sidecar gives it, and the server that answers on them.
#[pyclass(name = "Sidecar", module = "toolgate._core", frozen)]
pub struct PySidecar {
    inner: Sidecar,
    /// One engine object for the sidecar's life (`sidecar.engine is sidecar.engine`).
    engine: Py<PyEngine>,
}

#[pymethods]
impl PySidecar {
    /// Assemble a sidecar on `policy` (a Policy, dict or path) as `settings` say (defaults
    /// if None). `key` keys every digest of a credential: the decision log's grants, the
    /// approvals' calls and, with Redis, users' confirmations (replicas given one key accept
    /// each other's). Approvals run with their table in the file `approvals_table` (none
    /// without one; the key then has at least 32 bytes). `clock`: a manual clock, for
    /// tests. ValueError for wrong options, OSError for a file that cannot be opened.
    #[new]
    #[pyo3(signature = (policy, settings = None, *, key = Vec::new(), approvals_table = None, clock = None))]
    fn new(
        py: Python<'_>,
        policy: &Bound<'_, PyAny>,
        settings: Option<PyRef<'_, PySidecarSettings>>,
        key: Vec<u8>,
        approvals_table: Option<PathBuf>,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let policy = coerce(py, policy)?;
        let settings = settings.map(|s| s.inner.clone()).unwrap_or_default();
        let options = settings
            .options(&key, approvals_table)
            .map_err(PyValueError::new_err)?;
        let clock: Arc<dyn Clock> = match clock {
            Some(c) => c.get().inner.clone(),
            None => Arc::new(MonotonicClock),
        };
        let inner = py
            .detach(|| Sidecar::assemble(policy, options, clock))
            .map_err(raise)?;
        let engine = Py::new(
            py,
            PyEngine {
                inner: inner.engine.clone(),
            },
        )?;
        Ok(PySidecar { inner, engine })
    }

    /// The engine that decides.
    #[getter]
    fn engine(&self, py: Python<'_>) -> Py<PyEngine> {
        self.engine.clone_ref(py)
    }

    /// The sidecar's metric families (the engine's, and its ext_proc service's), read now.
    fn metrics(&self) -> Vec<crate::metrics::PyMetricFamily> {
        crate::metrics::families(self.inner.metrics())
    }

    /// Whether the counter store was reached at assembly (always, for the local table).
    #[getter]
    fn store_connected(&self) -> bool {
        self.inner.store_connected
    }

    /// Tell the Redis store whether Redis may evict counter keys now (its `maxmemory-policy`
    /// read again, and not accepted): while it may, limits follow the store's outage
    /// behaviour. Nothing for the local table.
    fn set_store_evictable(&self, evictable: bool) {
        if let Some(store) = &self.inner.redis {
            store.set_evictable(evictable);
        }
    }

    /// The approvals, for the control plane (None without `approvals_table`). Once: their
    /// news can be drained by one owner only.
    fn take_approvals(&self) -> PyResult<Option<PyApprovals>> {
        let Some(approvals) = self.inner.approvals.clone() else {
            return Ok(None);
        };
        let events = self
            .inner
            .take_approval_events()
            .ok_or_else(|| PyValueError::new_err("the approvals were taken already"))?;
        Ok(Some(PyApprovals {
            approvals,
            events,
            clock: self.inner.engine.clock(),
            set_aside: self.inner.approvals_set_aside.clone(),
            spans: self.inner.spans().map(ApprovalSpans::new),
        }))
    }

    /// What the decision log held after its last line of the chain when it was opened, now
    /// accounted for by a break line (None: nothing, or no log).
    #[getter]
    fn decision_log_break(&self) -> Option<String> {
        self.inner
            .decision_log
            .as_ref()
            .and_then(|l| l.restart_break().map(str::to_owned))
    }

    /// Wait until every decision logged so far is written out; False on timeout (or no log).
    fn sync_decision_log(&self, py: Python<'_>, timeout: f64) -> bool {
        let Some(log) = self.inner.decision_log.as_ref() else {
            return false;
        };
        let wait = Duration::from_secs_f64(timeout.max(0.0));
        py.detach(|| log.sync(wait))
    }

    /// `(seq, sha256)` of the decision log's last line, or None without a log: published
    /// elsewhere, it anchors the chain (`toolgate log verify --head`).
    fn decision_log_head(&self) -> Option<(u64, String)> {
        self.inner.decision_log.as_ref().map(|l| {
            let h = l.head();
            (h.seq, h.sha256)
        })
    }

    /// Bind `listen` and answer calls (health says NOT_SERVING until `set_serving(True)`);
    /// the address it listens on. OSError if it cannot bind.
    fn serve(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.inner.serve()).map_err(raise)
    }

    /// The address the AuthZEN listener listens on (`--authzen-listen`), while it serves.
    fn authzen_address(&self) -> Option<String> {
        self.inner.authzen_address()
    }

    /// Report SERVING (True) or NOT_SERVING (False) on grpc.health.v1; calls are answered
    /// either way.
    fn set_serving(&self, py: Python<'_>, serving: bool) {
        py.detach(|| self.inner.set_serving(serving));
    }

    /// Stop accepting calls and wait up to `grace` seconds for those in flight. Idempotent.
    fn stop(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let grace = Duration::try_from_secs_f64(grace)
            .map_err(|_| PyValueError::new_err("grace must be a non-negative number"))?;
        py.detach(|| self.inner.stop(grace))
            .map_err(PyOSError::new_err)
    }
}
