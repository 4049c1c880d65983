//! How the native server reads Envoy's `Check` requests, as a Python object the sidecar
//! builds from its options.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use toolgate_server::subject::{AuthzConfig, SubjectSource, DEFAULT_MAX_REQUEST_BYTES};

/// The header names and payload key of `AuthzConfig::default()`, where they are written once:
/// the binding's defaults and the extension's `DEFAULT_*_HEADER` constants read them here.
pub struct Defaults {
    pub grant: String,
    pub agent: String,
    pub session: String,
    pub server: String,
    pub jwt_payload_key: String,
}

impl Defaults {
    pub fn new() -> Self {
        let config = AuthzConfig::default();
        Defaults {
            grant: default_header(config.grant),
            agent: default_header(config.agent),
            session: default_header(config.session),
            server: config.server_header,
            jwt_payload_key: config.jwt_payload_key,
        }
    }
}

fn default_header(source: SubjectSource) -> String {
    match source {
        SubjectSource::Header(name) => name,
        SubjectSource::JwtClaim(_) => unreachable!("by default the subject is read from headers"),
    }
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

/// How `envoy.service.auth.v3.Authorization/Check` requests are read.
#[pyclass(name = "EnvoyAuthz", module = "toolgate._core", frozen)]
pub struct PyEnvoyAuthz {
    pub(crate) config: AuthzConfig,
}

#[pymethods]
impl PyEnvoyAuthz {
    /// Headers are lower-case names. `grant_claim`/`session_claim`/`agent_claim` take the
    /// grant/session/agent from a claim of the JWT that Envoy's jwt_authn verified (stored
    /// under `jwt_payload_key`) instead of a header. `max_request_bytes` is Envoy's `with_request_body` limit.
    /// A name left out (None) is `AuthzConfig::default()`'s, as `DEFAULT_*_HEADER` and
    /// `DEFAULT_JWT_PAYLOAD_KEY` export it.
    #[new]
    #[pyo3(signature = (*, grant_header = None, session_header = None, agent_header = None, server_header = None, grant_claim = None, session_claim = None, agent_claim = None, jwt_payload_key = None, max_request_bytes = DEFAULT_MAX_REQUEST_BYTES))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        grant_header: Option<&str>,
        session_header: Option<&str>,
        agent_header: Option<&str>,
        server_header: Option<&str>,
        grant_claim: Option<&str>,
        session_claim: Option<&str>,
        agent_claim: Option<&str>,
        jwt_payload_key: Option<&str>,
        max_request_bytes: usize,
    ) -> PyResult<Self> {
        if max_request_bytes == 0 {
            return Err(PyValueError::new_err("max_request_bytes must be positive"));
        }
        let defaults = Defaults::new();
        let config = AuthzConfig {
            grant: source(
                "grant",
                grant_header.unwrap_or(&defaults.grant),
                grant_claim,
            )?,
            agent: source(
                "agent",
                agent_header.unwrap_or(&defaults.agent),
                agent_claim,
            )?,
            session: source(
                "session",
                session_header.unwrap_or(&defaults.session),
                session_claim,
            )?,
            server_header: header("server", server_header.unwrap_or(&defaults.server))?,
            jwt_payload_key: jwt_payload_key
                .unwrap_or(&defaults.jwt_payload_key)
                .to_owned(),
            max_request_bytes,
        };
        Ok(PyEnvoyAuthz { config })
    }
}
