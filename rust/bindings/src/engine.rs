//! The engine as a Python class.

use crate::arguments::PyArg;
use crate::clock::PyManualClock;
use crate::decision::{PyDecision, PyExplanation};
use crate::policy::{coerce, PyPolicy};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::path::PathBuf;
use std::sync::Arc;
use toolgate_core::asking::confirmation::Confirming;
use toolgate_core::counter::clock::Clock;
use toolgate_core::counter::{CounterTable, Peer};
use toolgate_core::engine::{DEFAULT_CAPACITY, DEFAULT_RESERVATIONS};
use toolgate_core::json::args::parse_json_arguments;
use toolgate_core::observing::explain::Recorder;
use toolgate_core::observing::stats::Api;
use toolgate_core::observing::trace::{NoTrace, Trace};
use toolgate_core::Kind;
use toolgate_core::MonotonicClock;
use toolgate_core::{Decision, Engine, Request, Subject};

/// Decides tool calls against a policy, with counters that survive reloads.
/// What a reload made live: the revisions before and after, the pins files the new policy
/// read (each with the SHA-256 of the bytes it was handed), and its self-asserted notes.
#[pyclass(module = "toolgate._core", frozen, get_all)]
pub struct Reloaded {
    pub revision_before: String,
    pub revision: String,
    pub pins_loaded: Vec<(PathBuf, String)>,
    pub self_asserted: Vec<crate::policy::ValidationError>,
}

#[pyclass(name = "Engine", module = "toolgate._core", frozen)]
pub struct PyEngine {
    /// Shared with the sidecar's serving threads, which decide on it.
    pub(crate) inner: Arc<Engine>,
}

/// Where an engine keeps its counters and statistics.
pub struct Storage<'a> {
    pub capacity: usize,
    pub reservations: usize,
    pub clock: Option<&'a Bound<'a, PyManualClock>>,
}

/// The parts of a call besides its attributes and arguments.
struct Call<'a> {
    /// What `tool` names: a tool, or a resource's URI, a prompt, a method.
    kind: Kind,
    tool: &'a str,
    server: Option<&'a str>,
    grant: Option<&'a str>,
    session: Option<&'a str>,
    agent: Option<&'a str>,
    dry_run: bool,
    hits: Option<u32>,
    grant_verified: bool,
    /// The client can be asked to confirm a call (MCP 2026-07-28 with form elicitation).
    can_confirm: bool,
}

/// A kind as Python names it.
fn kind_of(kind: &str) -> PyResult<Kind> {
    Kind::parse(kind).ok_or_else(|| {
        PyValueError::new_err(format!(
            "kind must be \"tool\", \"resource\", \"prompt\" or \"method\", not {kind:?}"
        ))
    })
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
            // Decided in-process (authoring tools, tests): no network address.
            peer: Peer::UNKNOWN,
        };
        let (tool, server, dry_run, hits) = (call.tool, call.server, call.dry_run, call.hits);
        let asking = Confirming {
            can_ask: true,
            answer: None,
        };
        let confirm = call.can_confirm.then_some(&asking);
        let decision = match arguments {
            None => self.inner.decide_traced::<PyArg<'_>, T>(
                Api::Engine,
                &Request {
                    kind: call.kind,
                    name: tool,
                    server,
                    subject,
                    args: None,
                    dry_run,
                    hits,
                    confirm,
                },
                trace,
            ),
            Some(a) if a.is_instance_of::<PyDict>() => self.inner.decide_traced(
                Api::Engine,
                &Request {
                    kind: call.kind,
                    name: tool,
                    server,
                    subject,
                    args: Some(PyArg(a.clone())),
                    dry_run,
                    hits,
                    confirm,
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
                        kind: call.kind,
                        name: tool,
                        server,
                        subject,
                        args: Some(&value),
                        dry_run,
                        hits,
                        confirm,
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

    fn build(policy: toolgate_core::Policy, storage: Storage<'_>) -> PyResult<Self> {
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
            })
            .map_err(PyValueError::new_err)
    }
}

#[pymethods]
impl PyEngine {
    /// `policy` is a Policy, a dict, or a path to a JSON/YAML file.
    #[new]
    #[pyo3(signature = (policy, *, capacity = DEFAULT_CAPACITY, reservations = DEFAULT_RESERVATIONS, clock = None))]
    fn new(
        py: Python<'_>,
        policy: &Bound<'_, PyAny>,
        capacity: usize,
        reservations: usize,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let storage = Storage {
            capacity,
            reservations,
            clock,
        };
        Self::build(coerce(py, policy)?, storage)
    }

    #[staticmethod]
    #[pyo3(signature = (path, *, capacity = DEFAULT_CAPACITY, reservations = DEFAULT_RESERVATIONS, clock = None))]
    fn from_file(
        py: Python<'_>,
        path: PathBuf,
        capacity: usize,
        reservations: usize,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let policy =
            crate::policy::load_file(&path).map_err(|e| crate::policy::policy_error(py, e))?;
        let storage = Storage {
            capacity,
            reservations,
            clock,
        };
        Self::build(policy, storage)
    }

    /// Decide one call. `arguments` is a dict, JSON text, or None.
    /// `grant_verified`: the grant is a verified identity (a JWT claim) that approvals and
    /// logs may show as it is, not a credential. `kind`: what `tool` names, `"tool"` (the
    /// default), `"resource"` (a URI), `"prompt"` or `"method"`.
    #[pyo3(signature = (tool, *, server = None, grant = None, session = None, agent = None, attributes = None, arguments = None, dry_run = false, hits = None, grant_verified = false, kind = "tool"))]
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
        kind: &str,
    ) -> PyResult<PyDecision> {
        let call = Call {
            kind: kind_of(kind)?,
            tool,
            server,
            grant,
            session,
            agent,
            dry_run,
            hits,
            grant_verified,
            can_confirm: false,
        };
        self.run(&call, attributes, arguments, &mut NoTrace)
            .map(PyDecision::local)
    }

    /// Decide one call as `decide` does, and say how: the section, the rule and why it won,
    /// each condition with the value it saw, each limit with its count, the decision.
    /// A dry run unless `dry_run=False` (then it counts, like `decide`).
    #[pyo3(signature = (tool, *, server = None, grant = None, session = None, agent = None, attributes = None, arguments = None, dry_run = true, hits = None, grant_verified = false, can_confirm = false, kind = "tool"))]
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
        can_confirm: bool,
        kind: &str,
    ) -> PyResult<PyExplanation> {
        let call = Call {
            kind: kind_of(kind)?,
            tool,
            server,
            grant,
            session,
            agent,
            dry_run,
            hits,
            grant_verified,
            can_confirm,
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

    /// Filter a `tools/list` answer's `tools` (JSON text of the array, as a server lists
    /// them) as the sidecar does for this caller: each tool's name, and `None` if it is shown
    /// or the code every call of it would be denied with. Each definition is recorded, and
    /// held to its pin, for the calls that follow. ValueError if the text is not an array of
    /// tool objects with names, read one way.
    #[pyo3(signature = (tools, *, server = None, grant = None, session = None, agent = None, attributes = None, grant_verified = false))]
    #[allow(clippy::too_many_arguments)]
    fn list_tools(
        &self,
        tools: &str,
        server: Option<&str>,
        grant: Option<&str>,
        session: Option<&str>,
        agent: Option<&str>,
        attributes: Option<std::collections::HashMap<String, String>>,
        grant_verified: bool,
    ) -> PyResult<Vec<(String, Option<&'static str>)>> {
        let mut result = serde_json::Map::new();
        let parsed = toolgate_core::json::strict::parse(tools.as_bytes())
            .map_err(|e| PyValueError::new_err(format!("the tools cannot be read: {e}")))?;
        result.insert("tools".into(), parsed);
        let pairs: Vec<(&str, &str)> = attributes
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let subject = Subject {
            grant,
            session,
            agent,
            attributes: &pairs,
            grant_verified,
            peer: Peer::UNKNOWN,
        };
        let policy = self.inner.policy();
        let mut seen = Vec::new();
        let mut report = toolgate_core::engine::listing::ListReport::default();
        toolgate_core::engine::listing::filter_result(
            toolgate_core::kind::Listed::Tools,
            &mut result,
            |_, name, tool| {
                let v = self.inner.list_tool(&policy, server, subject, name, tool);
                seen.push((name.to_owned(), v.removed.map(|c| c.as_str())));
                v
            },
            &mut report,
        )
        .map_err(PyValueError::new_err)?;
        Ok(seen)
    }

    /// An INVALID_REQUEST decision for a request that cannot be decided, counted like any.
    fn refuse(&self, reason: &str) -> PyDecision {
        PyDecision::local(self.inner.refuse(reason))
    }

    /// Give back a reservation's counters. True if it was held.
    fn release(&self, py: Python<'_>, reservation: u64) -> bool {
        py.detach(|| self.inner.release(reservation))
    }

    /// Validate and swap in a new policy (a Policy, dict or path); counters are kept.
    /// Returns the new revision. On error the old policy stays and PolicyError is raised.
    fn reload(&self, py: Python<'_>, policy: &Bound<'_, PyAny>) -> PyResult<String> {
        let policy = coerce(py, policy)?;
        let revision = policy.revision.clone();
        self.inner.reload(policy).map_err(PyValueError::new_err)?;
        Ok(revision)
    }

    /// A policy file's bytes, as the reload read them, made the policy in one step: parsed
    /// (`path` picks the format and is where its pins files are read), validated and swapped
    /// in, counters kept. On error the old policy stays and PolicyError (or ValueError: not
    /// UTF-8) is raised; a PolicyError's `pins_read` then lists each pins file the policy
    /// named, with the SHA-256 of what was read (None: it could not be), for the watcher to
    /// watch until it can be loaded.
    #[pyo3(signature = (content, path, *, agent_verified = false, session_verified = false))]
    fn reload_file(
        &self,
        py: Python<'_>,
        content: &[u8],
        path: PathBuf,
        agent_verified: bool,
        session_verified: bool,
    ) -> PyResult<Reloaded> {
        let text = std::str::from_utf8(content)
            .map_err(|_| PyValueError::new_err(format!("{} is not UTF-8 text", path.display())))?;
        // Without the GIL: the files are read meanwhile, and the sidecar goes on serving.
        let (loaded, read) = py.detach(|| toolgate_runtime::policy_file::load_text(text, &path));
        let policy = loaded.map_err(|e| {
            let err = crate::policy::policy_error(py, e);
            let _ = err.value(py).setattr("pins_read", read);
            err
        })?;
        let before = self.inner.policy().revision.to_string();
        let reloaded = Reloaded {
            revision_before: before,
            revision: policy.revision.clone(),
            pins_loaded: crate::policy::pins_loaded(&policy),
            self_asserted: crate::policy::self_asserted(&policy, agent_verified, session_verified),
        };
        self.inner.reload(policy).map_err(PyValueError::new_err)?;
        Ok(reloaded)
    }

    #[getter]
    fn revision(&self) -> String {
        self.inner.policy().revision.to_string()
    }

    /// A server accepted ``grant``: True when it is vouched for now.
    fn vouch_for(&self, grant: &str) -> bool {
        self.inner.vouch_for(grant)
    }

    #[getter]
    fn policy(&self) -> PyPolicy {
        PyPolicy {
            inner: self.inner.policy().source.clone(),
        }
    }

    /// The engine's metric families, read now.
    fn metrics(&self) -> Vec<crate::metrics::PyMetricFamily> {
        crate::metrics::families(self.inner.metrics())
    }
}
