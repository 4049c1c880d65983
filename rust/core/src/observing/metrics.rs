//! Metrics as an exporter shows them: each family's name, help, kind, label names and
//! samples, described where the numbers are kept, so the exporter only writes them out.

use super::stats::DurationSnapshot;

/// How a family's samples are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (the exporter adds `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets of seconds, a count and a sum.
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// A histogram's samples: cumulative counts at each upper bound (seconds), then all.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub bounds: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
    /// Per bucket (each bound, then `+Inf`), a sampled decision in it, if any: its trace and
    /// span ids (hex), its duration and when (seconds since the epoch).
    pub exemplars: Vec<Option<ExemplarSample>>,
}

/// An exemplar as OpenMetrics writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarSample {
    pub trace_id: String,
    pub span_id: String,
    pub value: f64,
    pub timestamp: f64,
}

impl From<DurationSnapshot> for Buckets {
    fn from(d: DurationSnapshot) -> Buckets {
        Buckets {
            bounds: (d.cumulative.iter())
                .map(|(ns, n)| (*ns as f64 / 1e9, *n))
                .collect(),
            count: d.count,
            sum: d.sum_ns as f64 / 1e9,
            exemplars: (d.exemplars.iter())
                .map(|e| {
                    e.map(|e| ExemplarSample {
                        trace_id: crate::hex::lower(&e.ids.trace_id),
                        span_id: crate::hex::lower(&e.ids.span_id),
                        value: e.ns as f64 / 1e9,
                        timestamp: e.unix_ms as f64 / 1e3,
                    })
                })
                .collect(),
        }
    }
}

/// One metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub labels: &'static [&'static str],
    /// Each sample's label values (in `labels`' order) and value; empty for a histogram.
    pub samples: Vec<(Vec<String>, f64)>,
    pub buckets: Option<Buckets>,
}

impl Family {
    /// A family of one unlabelled sample.
    pub fn one(kind: MetricKind, name: &'static str, help: &'static str, value: f64) -> Family {
        Family::labelled(kind, name, help, &[], vec![(Vec::new(), value)])
    }

    pub fn labelled(
        kind: MetricKind,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        samples: Vec<(Vec<String>, f64)>,
    ) -> Family {
        Family {
            name,
            help,
            kind,
            labels,
            samples,
            buckets: None,
        }
    }

    pub fn histogram(name: &'static str, help: &'static str, buckets: Buckets) -> Family {
        Family {
            name,
            help,
            kind: MetricKind::Histogram,
            labels: &[],
            samples: Vec::new(),
            buckets: Some(buckets),
        }
    }
}
