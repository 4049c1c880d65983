//! How the native server reads Envoy's `Check` requests, as a Python object the sidecar
//! builds from its options.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use toolgate_server::authz::{AuthzConfig, SubjectSource, DEFAULT_MAX_REQUEST_BYTES};

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

/// How `envoy.service.auth.v3.Authorization/Check` requests are read.
#[pyclass(name = "EnvoyAuthz", module = "toolgate._core", frozen)]
pub struct PyEnvoyAuthz {
    pub(crate) config: AuthzConfig,
}

#[pymethods]
impl PyEnvoyAuthz {
    /// Headers are lower-case names. `grant_claim`/`agent_claim` take the grant/agent from a
    /// claim of the JWT that Envoy's jwt_authn verified (stored under `jwt_payload_key`)
    /// instead of a header. `max_request_bytes` is Envoy's `with_request_body` limit.
    #[new]
    #[pyo3(signature = (*, grant_header = "authorization", session_header = "mcp-session-id", agent_header = "x-agent-id", server_header = "x-mcp-server", grant_claim = None, agent_claim = None, jwt_payload_key = "jwt_payload", max_request_bytes = DEFAULT_MAX_REQUEST_BYTES))]
    #[allow(clippy::too_many_arguments)]
    fn new(
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
        Ok(PyEnvoyAuthz { config })
    }
}
