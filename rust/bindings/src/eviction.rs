//! Reading Redis's eviction policy for `toolgate serve --store` (toolgate_runtime::store::eviction).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::time::Duration;
use toolgate_runtime::store::eviction::{self, Reading};

/// The `maxmemory-policy` of the Redis primary `url` names (as `--store` finds it: Sentinel
/// asked, TLS verified), waiting at most `wait` seconds: `("policy", name)`, `("unreadable",
/// why)` when Redis refuses to say, `("unreachable", why)` when it does not answer.
/// ValueError for a URL that is not a store's.
#[pyfunction]
pub fn read_maxmemory_policy(
    py: Python<'_>,
    url: &str,
    wait: f64,
) -> PyResult<(&'static str, String)> {
    if !(wait.is_finite() && wait > 0.0) {
        return Err(PyValueError::new_err("wait must be a positive number"));
    }
    let wait = Duration::from_secs_f64(wait);
    let reading = py
        .detach(|| eviction::read_maxmemory_policy(url, wait))
        .map_err(PyValueError::new_err)?;
    Ok(match reading {
        Reading::Policy(name) => ("policy", name),
        Reading::Unreadable(why) => ("unreadable", why),
        Reading::Unreachable(why) => ("unreachable", why),
    })
}
