//! Envoy's ext_authz, ext_proc and rate limit services as Python objects, for the grpcio
//! transport: each takes a serialized request and returns the serialized response.

use crate::engine::PyEngine;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::Mutex;
use toolgate_server::authz::{self, AuthzConfig, SubjectSource, DEFAULT_MAX_REQUEST_BYTES};
use toolgate_server::ext_proc::Exchange;
use toolgate_server::{ratelimit, Malformed};

fn answer(py: Python<'_>, out: Result<Vec<u8>, Malformed>) -> PyResult<Bound<'_, PyBytes>> {
    out.map(|b| PyBytes::new(py, &b))
        .map_err(|e| PyValueError::new_err(e.0))
}

fn header(field: &str, name: &str) -> PyResult<String> {
    if name.is_empty() || name != name.to_ascii_lowercase() {
        return Err(PyValueError::new_err(format!(
            "header for {field} must be a non-empty lower-case name"
        )));
    }
    Ok(name.to_owned())
}

fn source(field: &str, header_name: &str, claim: Option<&str>) -> PyResult<SubjectSource> {
    match claim {
        Some("") => Err(PyValueError::new_err(format!(
            "the JWT claim for {field} must not be empty"
        ))),
        Some(claim) => Ok(SubjectSource::JwtClaim(claim.to_owned())),
        None => header(field, header_name).map(SubjectSource::Header),
    }
}

/// Answers `envoy.service.auth.v3.Authorization/Check` from an engine.
#[pyclass(name = "EnvoyAuthz", module = "toolgate._core", frozen)]
pub struct PyEnvoyAuthz {
    engine: Py<PyEngine>,
    pub(crate) config: AuthzConfig,
}

#[pymethods]
impl PyEnvoyAuthz {
    /// Headers are lower-case names. `grant_claim`/`agent_claim` take the grant/agent from a
    /// claim of the JWT that Envoy's jwt_authn verified (stored under `jwt_payload_key`)
    /// instead of a header. `max_request_bytes` is Envoy's `with_request_body` limit.
    #[new]
    #[pyo3(signature = (engine, *, grant_header = "authorization", session_header = "mcp-session-id", agent_header = "x-agent-id", server_header = "x-mcp-server", grant_claim = None, agent_claim = None, jwt_payload_key = "jwt_payload", max_request_bytes = DEFAULT_MAX_REQUEST_BYTES))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        engine: Py<PyEngine>,
        grant_header: &str,
        session_header: &str,
        agent_header: &str,
        server_header: &str,
        grant_claim: Option<&str>,
        agent_claim: Option<&str>,
        jwt_payload_key: &str,
        max_request_bytes: usize,
    ) -> PyResult<Self> {
        if max_request_bytes == 0 {
            return Err(PyValueError::new_err("max_request_bytes must be positive"));
        }
        let config = AuthzConfig {
            grant: source("grant", grant_header, grant_claim)?,
            agent: source("agent", agent_header, agent_claim)?,
            session_header: header("session", session_header)?,
            server_header: header("server", server_header)?,
            jwt_payload_key: jwt_payload_key.to_owned(),
            max_request_bytes,
        };
        Ok(PyEnvoyAuthz { engine, config })
    }

    /// Answer a serialized `CheckRequest` with a serialized `CheckResponse`. The GIL is let
    /// go while the body is read and decided, so a large body stalls no other handler.
    /// Raises ValueError if the bytes are not a CheckRequest.
    fn check_wire<'py>(&self, py: Python<'py>, request: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let engine = &self.engine.get().inner;
        let out = py.detach(|| authz::check_wire(engine, &self.config, request));
        answer(py, out)
    }
}

/// Answers `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` from an engine.
#[pyclass(name = "EnvoyRateLimit", module = "toolgate._core", frozen)]
pub struct PyEnvoyRateLimit {
    engine: Py<PyEngine>,
}

#[pymethods]
impl PyEnvoyRateLimit {
    #[new]
    fn new(engine: Py<PyEngine>) -> Self {
        PyEnvoyRateLimit { engine }
    }

    /// Answer a serialized `RateLimitRequest` with a serialized `RateLimitResponse`.
    /// Raises ValueError if the bytes are not a RateLimitRequest.
    fn should_rate_limit_wire<'py>(
        &self,
        py: Python<'py>,
        request: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let engine = &self.engine.get().inner;
        answer(py, ratelimit::should_rate_limit_wire(engine, request))
    }
}

/// Follows one `envoy.service.ext_proc.v3.ExternalProcessor/Process` stream (one HTTP
/// exchange's answer): make one per stream.
#[pyclass(name = "EnvoyExchange", module = "toolgate._core", frozen)]
pub struct PyEnvoyExchange {
    engine: Py<PyEngine>,
    exchange: Mutex<Exchange>,
}

#[pymethods]
impl PyEnvoyExchange {
    #[new]
    fn new(engine: Py<PyEngine>) -> Self {
        PyEnvoyExchange {
            engine,
            exchange: Mutex::new(Exchange::default()),
        }
    }

    /// Answer a serialized `ProcessingRequest`: the serialized `ProcessingResponse`, or None
    /// where Envoy expects no answer (observability mode). The GIL is let go meanwhile.
    /// Raises ValueError if the bytes are not a ProcessingRequest.
    fn process_wire<'py>(
        &self,
        py: Python<'py>,
        request: &[u8],
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let engine = &self.engine.get().inner;
        let out = py.detach(|| {
            let mut exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
            exchange.process_wire(engine, request)
        });
        match out {
            Ok(answer) => Ok(answer.map(|b| PyBytes::new(py, &b))),
            Err(e) => Err(PyValueError::new_err(e.0)),
        }
    }
}
