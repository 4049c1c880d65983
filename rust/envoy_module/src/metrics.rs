//! toolgate's metrics through Envoy's own stats, so that Envoy's `/stats/prometheus` serves
//! them: the engine's counter and gauge families (`Engine::metrics`, as `toolgate serve`
//! exports them), with the same labels and names, which Envoy exports with its own prefix:
//! the sidecar's `toolgate_decisions_total` is `envoy_toolgate_decisions_total` (the filter's
//! `metrics_namespace` is `toolgate`).
//!
//! Envoy takes stats defined only while the filter's configuration is made, and changed only
//! from a stream's hooks; the engine keeps its own numbers. So each family is defined when
//! the configuration is read, and what changed is pushed from the hook that ends a stream, at
//! most once a second: a counter by what it grew, a gauge set. (Histograms are not pushed:
//! Envoy's have buckets of their own, and a histogram of decision times in Envoy's units
//! would not be the sidecar's `toolgate_decision_duration_seconds`.)

use crate::abi::*;
use crate::reload::ReloadCounts;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use toolgate_core::observing::metrics::{Family, MetricKind};
use toolgate_core::Engine;

/// The reloads' counter, as Envoy names it under the namespace.
const RELOADS: &str = "policy_reloads_total";

/// How often the numbers are pushed, at most.
const EVERY_NANOS: u64 = 1_000_000_000;

/// A family Envoy knows, by the id it gave.
struct Defined {
    name: &'static str,
    kind: MetricKind,
    id: usize,
}

/// The engine's families as Envoy's stats, and what was pushed last.
pub struct Metrics {
    defined: Vec<Defined>,
    /// `toolgate_policy_reloads_total{result}`, which the module counts, not the engine.
    reloads: Option<(usize, Arc<ReloadCounts>)>,
    /// Each counter sample's value when last pushed.
    pushed: Mutex<HashMap<(&'static str, Vec<String>), u64>>,
    started: Instant,
    /// Nanoseconds after `started` before which no stream pushes again.
    next: AtomicU64,
}

impl Metrics {
    /// Define the engine's counter and gauge families in Envoy (only while the filter's
    /// configuration is made). A family Envoy refuses is left out, and logged.
    pub fn define(envoy: ConfigEnvoyPtr, engine: &Engine, counts: Arc<ReloadCounts>) -> Metrics {
        let mut defined = Vec::new();
        for family in engine.metrics() {
            // Under the namespace `toolgate` (the filter's `metrics_namespace`), which Envoy
            // puts between its own prefix and the name: `envoy_toolgate_decisions_total`.
            let short = family.name.strip_prefix("toolgate_").unwrap_or(family.name);
            let name = match family.kind {
                MetricKind::Counter => format!("{short}_total"),
                MetricKind::Gauge => short.to_owned(),
                MetricKind::Histogram => continue,
            };
            match define(envoy, family.kind, &name, family.labels) {
                Some(id) => defined.push(Defined {
                    name: family.name,
                    kind: family.kind,
                    id,
                }),
                None => log(
                    LOG_ERROR,
                    &format!("toolgate: Envoy refused the stat {name}"),
                ),
            }
        }
        let reloads = define(envoy, MetricKind::Counter, RELOADS, &["result"]);
        if reloads.is_none() {
            log(
                LOG_ERROR,
                &format!("toolgate: Envoy refused the stat {RELOADS}"),
            );
        }
        Metrics {
            defined,
            reloads: reloads.map(|id| (id, counts)),
            pushed: Mutex::new(HashMap::new()),
            started: Instant::now(),
            next: AtomicU64::new(0),
        }
    }

    /// Push what changed since the last push, if a second has passed: from a stream's hook,
    /// by one stream at a time (the others go on).
    pub fn push(&self, stream: Stream, engine: &Engine) {
        let now = self.started.elapsed().as_nanos() as u64;
        let next = self.next.load(Ordering::Relaxed);
        if now < next {
            return;
        }
        let later = now + EVERY_NANOS;
        if (self.next)
            .compare_exchange(next, later, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let Ok(mut pushed) = self.pushed.try_lock() else {
            return;
        };
        for family in engine.metrics() {
            let Some(defined) = self.defined.iter().find(|d| d.name == family.name) else {
                continue;
            };
            push_family(stream, defined, &family, &mut pushed);
        }
        if let Some((id, counts)) = &self.reloads {
            for (result, count) in [("success", &counts.success), ("failure", &counts.failure)] {
                let labels = [result.to_owned()];
                let value = count.load(Ordering::Relaxed);
                push_counter(stream, *id, RELOADS, &labels, value, &mut pushed);
            }
        }
    }
}

fn push_family(
    stream: Stream,
    defined: &Defined,
    family: &Family,
    pushed: &mut HashMap<(&'static str, Vec<String>), u64>,
) {
    for (labels, value) in &family.samples {
        let value = value.max(0.0) as u64;
        match defined.kind {
            MetricKind::Counter => {
                push_counter(stream, defined.id, family.name, labels, value, pushed)
            }
            MetricKind::Gauge => stream.set_gauge(defined.id, labels, value),
            MetricKind::Histogram => {}
        }
    }
}

/// A counter's sample `value`, pushed to Envoy as what it grew since the last push.
fn push_counter(
    stream: Stream,
    id: usize,
    name: &'static str,
    labels: &[String],
    value: u64,
    pushed: &mut HashMap<(&'static str, Vec<String>), u64>,
) {
    let last = pushed.entry((name, labels.to_vec())).or_insert(0);
    if value > *last {
        stream.increment_counter(id, labels, value - *last);
        *last = value;
    }
}

/// Define one stat in Envoy: its id, or `None` if Envoy refused it.
fn define(envoy: ConfigEnvoyPtr, kind: MetricKind, name: &str, labels: &[&str]) -> Option<usize> {
    let labels: Vec<ModuleBuffer> = labels
        .iter()
        .map(|l| ModuleBuffer::of(l.as_bytes()))
        .collect();
    let mut id = 0usize;
    // SAFETY: on Envoy's main thread, in `config_new`; Envoy copies the names.
    let result = unsafe {
        let define = match kind {
            MetricKind::Counter => envoy_dynamic_module_callback_http_filter_config_define_counter,
            _ => envoy_dynamic_module_callback_http_filter_config_define_gauge,
        };
        define(
            envoy,
            ModuleBuffer::of(name.as_bytes()),
            labels.as_ptr(),
            labels.len(),
            &mut id,
        )
    };
    (result == METRICS_SUCCESS).then_some(id)
}
