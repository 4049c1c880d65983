//! The native data plane (tonic, its own threads) as a Python object the sidecar starts,
//! drains and stops.

use crate::engine::PyEngine;
use crate::envoy::PyEnvoyAuthz;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use std::sync::Mutex;
use std::time::Duration;
use toolgate_server::native::{Config, Listen, Server};

/// Serves toolgate.v1, Envoy's ext_authz and rate limit APIs, health and reflection from
/// `engine`, on threads of its own: no Python runs while it answers.
#[pyclass(name = "NativeServer", module = "toolgate._core", frozen)]
pub struct PyNativeServer {
    server: Mutex<Option<Server>>,
    address: String,
}

#[pymethods]
impl PyNativeServer {
    /// Bind `listen` (`HOST:PORT` or `unix:PATH`) and start serving. `authz` says how
    /// Check requests are read; `descriptors` are encoded FileDescriptorSets of the Envoy
    /// services, for reflection. ValueError for a bad address, OSError if it cannot bind.
    #[new]
    #[pyo3(signature = (engine, authz, listen, *, threads, descriptors = Vec::new(), max_message_bytes = 4 << 20))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        engine: PyRef<'_, PyEngine>,
        authz: PyRef<'_, PyEnvoyAuthz>,
        listen: &str,
        threads: usize,
        descriptors: Vec<Vec<u8>>,
        max_message_bytes: usize,
    ) -> PyResult<Self> {
        let listen = Listen::parse(listen).map_err(PyValueError::new_err)?;
        if threads == 0 {
            return Err(PyValueError::new_err("threads must be at least 1"));
        }
        let config = Config {
            listen,
            threads,
            max_argument_bytes: engine.max_argument_bytes,
            max_message_bytes,
            authz: authz.config.clone(),
            descriptors,
        };
        let engine = engine.inner.clone();
        let server = py
            .detach(|| Server::start(engine, config))
            .map_err(PyOSError::new_err)?;
        Ok(PyNativeServer {
            address: server.address().to_owned(),
            server: Mutex::new(Some(server)),
        })
    }

    /// The address it listens on.
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// Report SERVING (True) or NOT_SERVING (False) on grpc.health.v1; calls are answered
    /// either way.
    fn set_serving(&self, py: Python<'_>, serving: bool) {
        py.detach(|| {
            if let Some(server) = self.lock().as_ref() {
                server.set_serving(serving);
            }
        });
    }

    /// Stop accepting calls and wait up to `grace` seconds for those in flight. Idempotent.
    fn stop(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let grace = Duration::try_from_secs_f64(grace)
            .map_err(|_| PyValueError::new_err("grace must be a non-negative number"))?;
        let server = self.lock().take();
        match server {
            Some(server) => py.detach(|| server.stop(grace)).map_err(PyOSError::new_err),
            None => Ok(()),
        }
    }
}

impl PyNativeServer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Server>> {
        // A panic while holding the lock cannot leave the server half-changed: recover it.
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PyNativeServer {
    fn drop(&mut self) {
        if let Some(server) = self.lock().take() {
            let _ = server.stop(Duration::ZERO);
        }
    }
}
