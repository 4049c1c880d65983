//! The assembled sidecar (`toolgate_server::sidecar`) as a Python object: `toolgate serve`
//! builds one from its options, puts its approvals in order, then serves.

use crate::approvals::PyApprovals;
use crate::clock::PyManualClock;
use crate::engine::PyEngine;
use crate::envoy::PyEnvoyAuthz;
use crate::policy::coerce;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::asking::approval::{ApprovalSettings, CallDigests, Caps};
use toolgate_core::engine::{DEFAULT_CAPACITY, DEFAULT_RESERVATIONS};
use toolgate_core::observing::decision_log::Filter;
use toolgate_core::{Clock, MonotonicClock};
use toolgate_runtime::decision_log::{self, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES};
use toolgate_server::native::{Config, Listen, DEFAULT_MAX_ARGUMENT_BYTES};
use toolgate_server::sidecar::{ApprovalOptions, Error, Options, Sidecar, Store};

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
    /// Assemble a sidecar on `policy` (a Policy, dict or path). Counts in a table of
    /// `capacity` slots, or on Redis with `store` (a `redis://`, `rediss://` or
    /// `redis+sentinel://` URL and the `store_*` settings; `store_clock="engine"` takes time
    /// from the engine's clock, for tests). Writes decisions to `decision_log` (a path, or
    /// `-` for stdout) with grants hashed under `grant_key`, which also keys the tokens of
    /// users' confirmations (replicas given the same key accept each other's). Runs approvals with their table
    /// in the file `approvals_table`, every digest of a call keyed with `approvals_key`.
    /// Serves on `listen` (`HOST:PORT` or `unix:PATH`) once `serve()` is called; `authz`
    /// says how Check requests are read. `trust_server_answers`: let servers' answers vouch
    /// for grants (`--grant-vouched-by-server`). ValueError for wrong options, OSError for a
    /// file that cannot be opened.
    #[new]
    #[pyo3(signature = (
        policy, *, capacity = DEFAULT_CAPACITY, reservations = DEFAULT_RESERVATIONS,
        max_argument_bytes = DEFAULT_MAX_ARGUMENT_BYTES, per_tool_metrics = false,
        store = None, store_prefix = toolgate_runtime::store::DEFAULT_PREFIX,
        store_timeout_ms = toolgate_runtime::store::DEFAULT_TIMEOUT_MS,
        store_unavailable = "deny", store_mode = "exact",
        store_flush_ms = toolgate_runtime::store::DEFAULT_FLUSH_MS, store_connect_wait = 2.0,
        store_clock = "redis",
        decision_log = None, grant_key = Vec::new(), decision_log_filter = "all",
        decision_log_rotate_bytes = 0, decision_log_queue = DEFAULT_QUEUE,
        decision_log_queue_bytes = DEFAULT_QUEUE_BYTES,
        approvals_table = None, approvals_key = Vec::new(), approvals_capacity = 4096,
        approvals_queue = 4096,
        pending_per_grant = toolgate_core::asking::approval::DEFAULT_PENDING_PER_GRANT,
        pending_per_rule = toolgate_core::asking::approval::DEFAULT_PENDING_PER_RULE,
        preview_bytes = toolgate_core::asking::approval_text::DEFAULT_PREVIEW_BYTES,
        listen = None, threads = 1, authz = None,
        max_message_bytes = toolgate_server::native::DEFAULT_MAX_MESSAGE_BYTES,
        clock = None, trust_server_answers = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        policy: &Bound<'_, PyAny>,
        capacity: usize,
        reservations: usize,
        max_argument_bytes: usize,
        per_tool_metrics: bool,
        store: Option<&str>,
        store_prefix: &str,
        store_timeout_ms: u64,
        store_unavailable: &str,
        store_mode: &str,
        store_flush_ms: u64,
        store_connect_wait: f64,
        store_clock: &str,
        decision_log: Option<PathBuf>,
        grant_key: Vec<u8>,
        decision_log_filter: &str,
        decision_log_rotate_bytes: u64,
        decision_log_queue: usize,
        decision_log_queue_bytes: usize,
        approvals_table: Option<PathBuf>,
        approvals_key: Vec<u8>,
        approvals_capacity: usize,
        approvals_queue: usize,
        pending_per_grant: usize,
        pending_per_rule: usize,
        preview_bytes: usize,
        listen: Option<&str>,
        threads: usize,
        authz: Option<PyRef<'_, PyEnvoyAuthz>>,
        max_message_bytes: usize,
        clock: Option<&Bound<'_, PyManualClock>>,
        trust_server_answers: bool,
    ) -> PyResult<Self> {
        let policy = coerce(py, policy)?;
        if capacity == 0 || reservations == 0 {
            return Err(PyValueError::new_err(
                "capacity and reservations must be positive",
            ));
        }
        let store = match store {
            None | Some("local") => Store::Local,
            Some(url) => {
                let config = toolgate_runtime::store::RedisConfig::from_options(
                    url,
                    store_prefix,
                    store_timeout_ms,
                    store_unavailable,
                    store_mode,
                    store_flush_ms,
                    store_clock,
                )
                .map_err(PyValueError::new_err)?;
                let connect_wait =
                    Duration::try_from_secs_f64(store_connect_wait).map_err(|_| {
                        PyValueError::new_err("store_connect_wait must be a non-negative number")
                    })?;
                Store::Redis {
                    config,
                    connect_wait,
                }
            }
        };
        // Empty: a key of the engine's own. A used answer is known where its use was counted:
        // with counts in this process only, answers are this process's own (a key made at
        // start), so that a restart or another replica sharing the key file cannot run one
        // yes again; with Redis, every replica counts uses there and shares the key.
        let confirmation_secret = match store {
            Store::Local => Vec::new(),
            Store::Redis { .. } => grant_key.clone(),
        };
        let decision_log = match decision_log {
            None => None,
            Some(path) => Some(decision_log::Settings {
                // `-`: stdout.
                path: (path.as_os_str() != "-").then_some(path),
                filter: Filter::parse(decision_log_filter).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "the decision log's filter is all or denials, not {decision_log_filter:?}"
                    ))
                })?,
                rotate_bytes: decision_log_rotate_bytes,
                queue: decision_log_queue,
                queue_bytes: decision_log_queue_bytes,
                grant_key,
            }),
        };
        let approvals = match approvals_table {
            None => None,
            Some(table) => {
                if approvals_key.len() < 32 {
                    return Err(PyValueError::new_err(
                        "the approvals key has at least 32 bytes",
                    ));
                }
                Some(ApprovalOptions {
                    table,
                    capacity: approvals_capacity,
                    settings: ApprovalSettings {
                        digests: CallDigests::new(&approvals_key),
                        caps: Caps {
                            per_grant: pending_per_grant.max(1),
                            per_rule: pending_per_rule.max(1),
                        },
                        preview_bytes,
                        queue: approvals_queue,
                    },
                })
            }
        };
        let serve = match listen {
            None => None,
            Some(listen) => {
                if threads == 0 {
                    return Err(PyValueError::new_err("threads must be at least 1"));
                }
                Some(Config {
                    listen: Listen::parse(listen).map_err(PyValueError::new_err)?,
                    threads,
                    max_argument_bytes,
                    max_message_bytes,
                    authz: authz.map(|a| a.config.clone()).unwrap_or_default(),
                })
            }
        };
        let options = Options {
            capacity,
            reservations,
            per_tool_metrics,
            store,
            decision_log,
            approvals,
            confirmation_secret: Some(confirmation_secret).filter(|s| !s.is_empty()),
            trust_server_answers,
            serve,
        };
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
