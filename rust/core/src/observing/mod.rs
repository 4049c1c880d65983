//! Watching decisions: counts and latencies, the decision log's record, the trace of
//! one decision's steps, and `toolgate explain` (the trace a decision belongs to is
//! [`crate::trace_ids`], which the approvals' news carries too).

pub mod decision_log;
pub mod explain;
pub mod metrics;
pub mod stats;
pub mod trace;
