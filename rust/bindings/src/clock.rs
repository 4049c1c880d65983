//! A clock tests can drive, so limits can be checked without waiting.

use pyo3::prelude::*;
use std::sync::Arc;
use toolgate_core::counter::clock::{Clock, ManualClock};

/// A clock that moves only when told to; pass it to `Engine(..., clock=...)`.
#[pyclass(name = "ManualClock", module = "toolgate._core", frozen)]
pub struct PyManualClock {
    pub inner: Arc<ManualClock>,
}

fn ns(seconds: f64) -> PyResult<u64> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "seconds must be a non-negative number",
        ));
    }
    Ok((seconds * 1e9).round() as u64)
}

#[pymethods]
impl PyManualClock {
    #[new]
    #[pyo3(signature = (start = 0.0))]
    fn new(start: f64) -> PyResult<Self> {
        // Start well away from zero so windows never reach before the clock's origin.
        Ok(PyManualClock {
            inner: Arc::new(ManualClock::new(ns(start)?)),
        })
    }

    /// Move forward by `seconds`.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        self.inner.advance_ns(ns(seconds)?);
        Ok(())
    }

    /// The current time in seconds.
    #[getter]
    fn now(&self) -> f64 {
        self.inner.now_ns() as f64 / 1e9
    }
}
