//! The engine as a Python class.

use crate::approvals::PyApprovals;
use crate::arguments::PyArg;
use crate::clock::PyManualClock;
use crate::decision::{PyDecision, PyExplanation};
use crate::policy::{coerce, PyPolicy};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::path::PathBuf;
use std::sync::Arc;
use toolgate_core::approval::{
    ApprovalSettings, ApprovalTable, Approvals, CallDigests, Caps, DEFAULT_PENDING_PER_GRANT,
    DEFAULT_PENDING_PER_RULE,
};
use toolgate_core::approval_text::DEFAULT_PREVIEW_BYTES;
use toolgate_core::args::parse_json_arguments;
use toolgate_core::clock::Clock;
use toolgate_core::counter::CounterTable;
use toolgate_core::decision_log::{
    DecisionLog, Filter, Settings, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES,
};
use toolgate_core::engine::{DEFAULT_CAPACITY, DEFAULT_RESERVATIONS};
use toolgate_core::explain::Recorder;
use toolgate_core::stats::Api;
use toolgate_core::trace::{NoTrace, Trace};
use toolgate_core::MonotonicClock;
use toolgate_core::{Decision, Engine, Request, Subject};

/// Decides tool calls against a policy, with counters that survive reloads.
#[pyclass(name = "Engine", module = "toolgate._core", frozen)]
pub struct PyEngine {
    /// Shared with the native server's threads, which decide on it.
    pub(crate) inner: Arc<Engine>,
    pub(crate) max_argument_bytes: usize,
}

/// Largest `arguments_json` a wire request may carry unless configured otherwise.
pub const DEFAULT_MAX_ARGUMENT_BYTES: usize = 1 << 20;

/// `use_store`'s defaults: what goes before every Redis key, how long a decision waits for
/// Redis, and how often cached mode merges its counts.
pub const DEFAULT_STORE_PREFIX: &str = "toolgate:";
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 5;
pub const DEFAULT_STORE_FLUSH_MS: u64 = 5;

/// Where an engine keeps its counters and statistics.
pub struct Storage<'a> {
    pub capacity: usize,
    pub reservations: usize,
    pub clock: Option<&'a Bound<'a, PyManualClock>>,
}

/// The parts of a call besides its attributes and arguments.
struct Call<'a> {
    tool: &'a str,
    server: Option<&'a str>,
    grant: Option<&'a str>,
    session: Option<&'a str>,
    agent: Option<&'a str>,
    dry_run: bool,
    hits: Option<u32>,
    grant_verified: bool,
}

impl PyEngine {
    /// Decide `call` with its attributes and arguments (a dict, JSON text or None), telling
    /// `trace` how.
    fn run<T: Trace>(
        &self,
        call: &Call<'_>,
        attributes: Option<&Bound<'_, PyDict>>,
        arguments: Option<&Bound<'_, PyAny>>,
        trace: &mut T,
    ) -> PyResult<Decision> {
        let attribute_objects = match attributes {
            Some(d) => d
                .iter()
                .map(|(k, v)| Ok((k.cast_into::<PyString>()?, v.cast_into::<PyString>()?)))
                .collect::<Result<Vec<_>, pyo3::CastIntoError<'_>>>()
                .map_err(|_| PyTypeError::new_err("attributes must map str to str"))?,
            None => Vec::new(),
        };
        let attribute_pairs: Vec<(&str, &str)> = attribute_objects
            .iter()
            .map(|(k, v)| Ok((k.to_str()?, v.to_str()?)))
            .collect::<PyResult<_>>()?;
        let subject = Subject {
            grant: call.grant,
            session: call.session,
            agent: call.agent,
            attributes: &attribute_pairs,
            grant_verified: call.grant_verified,
        };
        let (tool, server, dry_run, hits) = (call.tool, call.server, call.dry_run, call.hits);
        let decision = match arguments {
            None => self.inner.decide_traced::<PyArg<'_>, T>(
                Api::Engine,
                &Request {
                    tool,
                    server,
                    subject,
                    args: None,
                    dry_run,
                    hits,
                },
                trace,
            ),
            Some(a) if a.is_instance_of::<PyDict>() => self.inner.decide_traced(
                Api::Engine,
                &Request {
                    tool,
                    server,
                    subject,
                    args: Some(PyArg(a.clone())),
                    dry_run,
                    hits,
                },
                trace,
            ),
            Some(a) if a.is_instance_of::<PyString>() || a.is_instance_of::<PyBytes>() => {
                let text: &[u8] = match a.cast::<PyString>() {
                    Ok(s) => s.to_str()?.as_bytes(),
                    Err(_) => a.cast::<PyBytes>()?.as_bytes(),
                };
                let value =
                    parse_json_arguments(text).map_err(|e| PyValueError::new_err(e.told))?;
                self.inner.decide_traced(
                    Api::Engine,
                    &Request {
                        tool,
                        server,
                        subject,
                        args: Some(&value),
                        dry_run,
                        hits,
                    },
                    trace,
                )
            }
            Some(_) => {
                return Err(PyTypeError::new_err(
                    "arguments must be a dict, JSON text, or None",
                ))
            }
        };
        Ok(decision)
    }

    fn build(
        policy: toolgate_core::Policy,
        storage: Storage<'_>,
        max_argument_bytes: usize,
    ) -> PyResult<Self> {
        if storage.capacity == 0 || storage.reservations == 0 {
            return Err(PyValueError::new_err(
                "capacity and reservations must be positive",
            ));
        }
        let clock: Arc<dyn Clock> = match storage.clock {
            Some(c) => c.get().inner.clone(),
            None => Arc::new(MonotonicClock),
        };
        CounterTable::try_new(storage.capacity, storage.reservations)
            .and_then(|table| Engine::new(policy, Arc::new(table), clock))
            .map(|inner| PyEngine {
                inner: Arc::new(inner),
                max_argument_bytes,
            })
            .map_err(PyValueError::new_err)
    }
}

#[pymethods]
impl PyEngine {
    /// `policy` is a Policy, a dict, or a path to a JSON/YAML file.
    #[new]
    #[pyo3(signature = (policy, *, capacity = DEFAULT_CAPACITY, reservations = DEFAULT_RESERVATIONS, clock = None, max_argument_bytes = DEFAULT_MAX_ARGUMENT_BYTES))]
    fn new(
        py: Python<'_>,
        policy: &Bound<'_, PyAny>,
        capacity: usize,
        reservations: usize,
        clock: Option<&Bound<'_, PyManualClock>>,
        max_argument_bytes: usize,
    ) -> PyResult<Self> {
        let storage = Storage {
            capacity,
            reservations,
            clock,
        };
        Self::build(coerce(py, policy)?, storage, max_argument_bytes)
    }

    #[staticmethod]
    #[pyo3(signature = (path, *, capacity = DEFAULT_CAPACITY, reservations = DEFAULT_RESERVATIONS, clock = None, max_argument_bytes = DEFAULT_MAX_ARGUMENT_BYTES))]
    fn from_file(
        py: Python<'_>,
        path: PathBuf,
        capacity: usize,
        reservations: usize,
        clock: Option<&Bound<'_, PyManualClock>>,
        max_argument_bytes: usize,
    ) -> PyResult<Self> {
        let policy = toolgate_core::Policy::from_path(&path)
            .map_err(|e| crate::policy::policy_error(py, e))?;
        let storage = Storage {
            capacity,
            reservations,
            clock,
        };
        Self::build(policy, storage, max_argument_bytes)
    }

    /// Decide one call. `arguments` is a dict, JSON text, or None.
    /// `grant_verified`: the grant is a verified identity (a JWT claim) that approvals and
    /// logs may show as it is, not a credential.
    #[pyo3(signature = (tool, *, server = None, grant = None, session = None, agent = None, attributes = None, arguments = None, dry_run = false, hits = None, grant_verified = false))]
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        tool: &str,
        server: Option<&str>,
        grant: Option<&str>,
        session: Option<&str>,
        agent: Option<&str>,
        attributes: Option<&Bound<'_, PyDict>>,
        arguments: Option<&Bound<'_, PyAny>>,
        dry_run: bool,
        hits: Option<u32>,
        grant_verified: bool,
    ) -> PyResult<PyDecision> {
        let call = Call {
            tool,
            server,
            grant,
            session,
            agent,
            dry_run,
            hits,
            grant_verified,
        };
        self.run(&call, attributes, arguments, &mut NoTrace)
            .map(PyDecision::local)
    }

    /// Decide one call as `decide` does, and say how: the section, the rule and why it won,
    /// each condition with the value it saw, each limit with its count, the decision.
    /// A dry run unless `dry_run=False` (then it counts, like `decide`).
    #[pyo3(signature = (tool, *, server = None, grant = None, session = None, agent = None, attributes = None, arguments = None, dry_run = true, hits = None, grant_verified = false))]
    #[allow(clippy::too_many_arguments)]
    fn explain(
        &self,
        tool: &str,
        server: Option<&str>,
        grant: Option<&str>,
        session: Option<&str>,
        agent: Option<&str>,
        attributes: Option<&Bound<'_, PyDict>>,
        arguments: Option<&Bound<'_, PyAny>>,
        dry_run: bool,
        hits: Option<u32>,
        grant_verified: bool,
    ) -> PyResult<PyExplanation> {
        let call = Call {
            tool,
            server,
            grant,
            session,
            agent,
            dry_run,
            hits,
            grant_verified,
        };
        let subject = Subject {
            grant,
            session,
            agent,
            ..Default::default()
        };
        let mut recorder = Recorder::new(&subject, server);
        let decision = self.run(&call, attributes, arguments, &mut recorder)?;
        Ok(PyExplanation {
            decision,
            steps: recorder.into_steps(),
            dry_run,
        })
    }

    /// Run human approvals for `require_approval` rules, with the approvals table in the
    /// file at `path` (created with `capacity` slots if missing; it outlives the process, so an
    /// approval used before a crash stays used). `key` is the deployment's secret, which keys
    /// every digest of a call. At most `pending_per_grant` pending
    /// approvals per grant and `pending_per_rule` per rule; approvers are shown the first
    /// `preview_bytes` of a call's arguments. Returns the object the control plane drains
    /// news from and records decisions through. Once per engine.
    #[pyo3(signature = (
        path, *, key, capacity = 4096, queue = 4096,
        pending_per_grant = DEFAULT_PENDING_PER_GRANT,
        pending_per_rule = DEFAULT_PENDING_PER_RULE,
        preview_bytes = DEFAULT_PREVIEW_BYTES,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn enable_approvals(
        &self,
        path: PathBuf,
        key: Vec<u8>,
        capacity: usize,
        queue: usize,
        pending_per_grant: usize,
        pending_per_rule: usize,
        preview_bytes: usize,
    ) -> PyResult<PyApprovals> {
        if key.len() < 32 {
            return Err(PyValueError::new_err("the key has at least 32 bytes"));
        }
        let table = ApprovalTable::open_file(&path, capacity).map_err(PyValueError::new_err)?;
        let set_aside = table.set_aside().map(|p| p.to_path_buf());
        let settings = ApprovalSettings {
            digests: CallDigests::new(&key),
            caps: Caps {
                per_grant: pending_per_grant.max(1),
                per_rule: pending_per_rule.max(1),
            },
            preview_bytes,
            queue,
        };
        let (approvals, events) = Approvals::with_settings(Arc::new(table), settings);
        self.inner
            .enable_approvals(approvals)
            .map_err(PyValueError::new_err)?;
        Ok(PyApprovals {
            engine: self.inner.clone(),
            events,
            set_aside,
        })
    }

    /// Write decisions to a log: one JSON line each, hash-chained, by a writer thread
    /// (`path` None: stdout). `filter` is `all` or `denials`; files rotate past
    /// `rotate_bytes` (0: never); grants are hashed under `grant_key`. The writer's queue
    /// holds at most `queue` records and `queue_bytes` bytes of them; more are dropped (and
    /// counted, and noted in the log). Once per engine. Returns what the log held after its last line of the chain, now accounted for by a
    /// break line (None: nothing). OSError if it cannot be opened, or is not a decision log.
    #[pyo3(signature = (path, *, grant_key, filter = "all", rotate_bytes = 0, queue = DEFAULT_QUEUE, queue_bytes = DEFAULT_QUEUE_BYTES))]
    #[allow(clippy::too_many_arguments)]
    fn enable_decision_log(
        &self,
        path: Option<PathBuf>,
        grant_key: Vec<u8>,
        filter: &str,
        rotate_bytes: u64,
        queue: usize,
        queue_bytes: usize,
    ) -> PyResult<Option<String>> {
        let filter = Filter::parse(filter).ok_or_else(|| {
            PyValueError::new_err(format!("filter must be all or denials, not {filter:?}"))
        })?;
        let log = DecisionLog::open(Settings {
            path,
            filter,
            rotate_bytes,
            queue,
            queue_bytes,
            grant_key,
        })
        .map_err(|e| PyOSError::new_err(format!("cannot open the decision log: {e}")))?;
        let restart_break = log.restart_break().map(str::to_owned);
        self.inner
            .enable_decision_log(log)
            .map_err(PyValueError::new_err)?;
        Ok(restart_break)
    }

    /// Wait until every decision logged so far is written out; False on timeout (or no log).
    fn sync_decision_log(&self, py: Python<'_>, timeout: f64) -> bool {
        let Some(log) = self.inner.decision_log() else {
            return false;
        };
        let wait = std::time::Duration::from_secs_f64(timeout.max(0.0));
        py.detach(|| log.sync(wait))
    }

    /// `(seq, sha256)` of the decision log's last line, or None without a log: published
    /// elsewhere, it anchors the chain (`toolgate log verify --head`).
    fn decision_log_head(&self) -> Option<(u64, String)> {
        self.inner.decision_log().map(|l| {
            let h = l.head();
            (h.seq, h.sha256)
        })
    }

    /// An INVALID_REQUEST decision for a request that cannot be decided, counted like any.
    fn refuse(&self, reason: &str) -> PyDecision {
        PyDecision::local(self.inner.refuse(reason))
    }

    /// Give back a reservation's counters. True if it was held.
    fn release(&self, py: Python<'_>, reservation: u64) -> bool {
        py.detach(|| self.inner.release(reservation))
    }

    /// Count on Redis (`redis://[user:password@]host:port/db`) instead of this engine's
    /// table: every engine on the same Redis and `prefix` shares one count. A decision
    /// waits at most `timeout_ms` for Redis; past that (or without a connection) it is
    /// STORE_UNAVAILABLE (`unavailable="deny"`) or counted in this engine's table
    /// (`"local"`). Waits up to `connect_wait` seconds for the first connection and returns
    /// whether it was made (decisions answer as Redis being unavailable until it is).
    /// `clock="engine"` takes time from the engine's clock instead of Redis's (tests).
    /// `mode="cached"` decides on a local copy of the counts, merged with Redis every
    /// `flush_ms` (no round trip per decision; see docs/redis.md for its overshoot).
    #[pyo3(signature = (url, *, prefix = DEFAULT_STORE_PREFIX, timeout_ms = DEFAULT_STORE_TIMEOUT_MS, unavailable = "deny", connect_wait = 2.0, clock = "redis", mode = "exact", flush_ms = DEFAULT_STORE_FLUSH_MS))]
    #[allow(clippy::too_many_arguments)]
    fn use_store(
        &self,
        py: Python<'_>,
        url: &str,
        prefix: &str,
        timeout_ms: u64,
        unavailable: &str,
        connect_wait: f64,
        clock: &str,
        mode: &str,
        flush_ms: u64,
    ) -> PyResult<bool> {
        use toolgate_server::store::{Mode, RedisConfig, RedisStore, TimeSource, Unavailable};
        let mode = match (mode, flush_ms) {
            ("exact", _) => Mode::Exact,
            ("cached", 1..) => Mode::Cached {
                flush: std::time::Duration::from_millis(flush_ms),
            },
            ("cached", 0) => return Err(PyValueError::new_err("flush_ms must be positive")),
            _ => return Err(PyValueError::new_err("mode must be exact or cached")),
        };
        if !url.starts_with("redis://")
            && !url.starts_with("rediss://")
            && !url.starts_with("redis+sentinel://")
            && !url.starts_with("redis+unix://")
            && !url.starts_with("unix://")
        {
            return Err(PyValueError::new_err(format!(
                "a store is local, redis://[user:password@]host:port/db, rediss://... or \
                 redis+sentinel://host:port[,host:port...]/service/db, got {url:?}"
            )));
        }
        if timeout_ms == 0 {
            return Err(PyValueError::new_err(
                "the store's timeout must be positive",
            ));
        }
        if !(connect_wait.is_finite() && connect_wait >= 0.0) {
            return Err(PyValueError::new_err(
                "connect_wait must be a non-negative number",
            ));
        }
        let time = match clock {
            "redis" => TimeSource::Redis,
            "engine" => TimeSource::Engine,
            _ => return Err(PyValueError::new_err("clock must be redis or engine")),
        };
        let config = RedisConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            timeout: std::time::Duration::from_millis(timeout_ms),
            unavailable: Unavailable::parse(unavailable).map_err(PyValueError::new_err)?,
            time,
            mode,
        };
        let table = self.inner.table_arc();
        let wait = std::time::Duration::from_secs_f64(connect_wait);
        let store = py
            .detach(|| RedisStore::connect(config, table, wait))
            .map_err(PyValueError::new_err)?;
        let connected = store.connected();
        self.inner
            .enable_store(Arc::new(store))
            .map_err(PyValueError::new_err)?;
        Ok(connected)
    }

    /// Validate and swap in a new policy (a Policy, dict or path); counters are kept.
    /// Returns the new revision. On error the old policy stays and PolicyError is raised.
    fn reload(&self, py: Python<'_>, policy: &Bound<'_, PyAny>) -> PyResult<String> {
        let policy = coerce(py, policy)?;
        let revision = policy.revision.clone();
        self.inner.reload(policy).map_err(PyValueError::new_err)?;
        Ok(revision)
    }

    /// Count decisions per tool as well (for `--metrics-per-tool`).
    fn set_per_tool_metrics(&self, enabled: bool) {
        self.inner.stats().set_per_tool(enabled);
    }

    #[getter]
    fn revision(&self) -> String {
        self.inner.policy().revision.to_string()
    }

    #[getter]
    fn policy(&self) -> PyPolicy {
        PyPolicy {
            inner: self.inner.policy().source.clone(),
        }
    }

    /// Decisions so far by code, plus shadow decisions and table-full denials.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let codes = PyDict::new(py);
        for (code, n) in self.inner.stats().by_code() {
            codes.set_item(code.as_str(), n)?;
        }
        d.set_item("decisions", codes)?;
        d.set_item("shadow", self.inner.stats().shadow())?;
        d.set_item("table_full", self.inner.stats().table_full())?;
        d.set_item("logged", self.inner.stats().logged())?;
        d.set_item("log_dropped", self.inner.stats().log_dropped())?;
        let (records, bytes) = self
            .inner
            .decision_log()
            .map_or((0, 0), DecisionLog::queued);
        d.set_item("log_queued", records)?;
        d.set_item("log_queued_bytes", bytes)?;
        d.set_item("table_capacity", self.inner.table().capacity())?;
        d.set_item("table_occupied", self.inner.table().occupied())?;
        d.set_item("table_client_slots", self.inner.table().client_slots())?;
        let outcomes: Vec<(&str, &str, &str, u64)> = self
            .inner
            .stats()
            .decisions()
            .into_iter()
            .map(|(api, v, c, n)| (api.as_str(), v.as_str(), c.as_str(), n))
            .collect();
        d.set_item("outcomes", outcomes)?;
        let errors: Vec<(&str, &str, u64)> = self
            .inner
            .stats()
            .errors()
            .into_iter()
            .map(|(api, status, n)| (api.as_str(), status, n))
            .collect();
        d.set_item("errors", errors)?;
        let durations = self.inner.stats().durations();
        let buckets: Vec<(f64, u64)> = durations
            .cumulative
            .iter()
            .map(|(ns, n)| (*ns as f64 / 1e9, *n))
            .collect();
        d.set_item("duration_buckets", buckets)?;
        d.set_item("duration_count", durations.count)?;
        d.set_item("duration_sum", durations.sum_ns as f64 / 1e9)?;
        let stats = self.inner.stats();
        let errors = PyDict::new(py);
        for (kind, n) in stats.store_errors() {
            errors.set_item(kind.as_str(), n)?;
        }
        d.set_item("store_errors", errors)?;
        d.set_item("store_fallbacks", stats.store_fallbacks())?;
        let (filtered, refused, unlisted) = stats.lists();
        d.set_item("lists_filtered", filtered)?;
        d.set_item("lists_refused", refused)?;
        d.set_item("tools_unlisted", unlisted)?;
        let released = PyDict::new(py);
        for (kind, n) in stats.released_on_failure() {
            released.set_item(kind, n)?;
        }
        d.set_item("released_on_failure", released)?;
        let trips = stats.store_round_trips();
        let buckets: Vec<(f64, u64)> = trips
            .cumulative
            .iter()
            .map(|(ns, n)| (*ns as f64 / 1e9, *n))
            .collect();
        d.set_item("store_rtt_buckets", buckets)?;
        d.set_item("store_rtt_count", trips.count)?;
        d.set_item("store_rtt_sum", trips.sum_ns as f64 / 1e9)?;
        if self.inner.stats().per_tool_enabled() {
            let per_tool: Vec<(String, &str, u64)> = self
                .inner
                .stats()
                .per_tool()
                .into_iter()
                .map(|(t, v, n)| (t, v.as_str(), n))
                .collect();
            d.set_item("per_tool", per_tool)?;
        }
        Ok(d)
    }
}
