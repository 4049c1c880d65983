//! Metric families as the core describes them, for the Python exporter to write out.

use pyo3::prelude::*;
use toolgate_core::observing::metrics::Family;

/// A histogram's cumulative counts at each upper bound (seconds), its count and its sum.
type Buckets = (Vec<(f64, u64)>, u64, f64);
/// An exemplar: trace id, span id (hex), value (seconds), timestamp (seconds since the epoch).
type Exemplar = (String, String, f64, f64);

/// One metric family: name, kind (`counter`, `gauge` or `histogram`), help, label names, and
/// samples (each label values and value); a histogram's `buckets` instead (cumulative counts
/// at each upper bound in seconds, then the count and the sum).
#[pyclass(name = "MetricFamily", module = "toolgate._core", frozen, get_all)]
pub struct PyMetricFamily {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub labels: Vec<&'static str>,
    pub samples: Vec<(Vec<String>, f64)>,
    pub buckets: Option<Buckets>,
    /// A histogram's exemplars, per bucket (each bound, then `+Inf`): a sampled decision's.
    pub exemplars: Vec<Option<Exemplar>>,
}

#[pymethods]
impl PyMetricFamily {
    fn __repr__(&self) -> String {
        format!("MetricFamily({:?}, {})", self.name, self.kind)
    }
}

pub fn families(families: Vec<Family>) -> Vec<PyMetricFamily> {
    (families.into_iter())
        .map(|f| PyMetricFamily {
            name: f.name,
            kind: f.kind.as_str(),
            help: f.help,
            labels: f.labels.to_vec(),
            samples: f.samples,
            exemplars: f.buckets.as_ref().map_or_else(Vec::new, |b| {
                (b.exemplars.iter())
                    .map(|e| {
                        e.as_ref()
                            .map(|e| (e.trace_id.clone(), e.span_id.clone(), e.value, e.timestamp))
                    })
                    .collect()
            }),
            buckets: f.buckets.map(|b| (b.bounds, b.count, b.sum)),
        })
        .collect()
}
