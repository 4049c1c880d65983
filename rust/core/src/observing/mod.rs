//! Watching decisions: counts and latencies, the decision log's record, the trace of
//! one decision's steps, the trace a decision belongs to, and `toolgate explain`.

pub mod decision_log;
pub mod explain;
pub mod metrics;
pub mod stats;
pub mod trace;
pub mod trace_ids;
