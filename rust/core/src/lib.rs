//! toolgate core: policy language, compiled matching, sliding-window counters, decisions,
//! MCP reading, explanations.
//!
//! Pure: no threads, files or sockets, and no Python. What does I/O (the decision log's
//! writer, the approvals table's file, counters on Redis) is `toolgate_runtime`, behind the
//! interfaces defined here ([`decision_log::DecisionSink`], [`approval::ApprovalDesk`],
//! [`store::CounterStore`]); a policy's pins files are read by whoever loads it
//! ([`policy::ReadFile`]).

pub mod approval;
pub mod approval_text;
pub mod arg_json;
pub mod arg_path;
pub mod args;
pub mod clock;
pub mod compile;
pub mod condition;
pub mod confirmation;
pub mod counter;
pub mod cursors;
pub mod decision;
pub mod decision_log;
pub mod definition;
pub mod engine;
pub mod evaluation;
pub mod explain;
pub mod glob;
pub mod inert;
pub mod kind;
pub mod limiter;
pub mod listed;
pub mod marks;
pub mod matcher;
pub mod mcp;
pub mod owner;
pub mod pinning;
pub mod policy;
pub mod sessions;
pub mod sightings;
pub mod stats;
pub mod store;
pub mod tasks;
pub mod trace;
pub mod visibility;
pub mod vouched;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use condition::Subject;
pub use decision::{Code, Decision, LimitState, Verdict};
pub use engine::{Engine, Request, Undecidable};
pub use kind::Kind;
pub use policy::{Policy, PolicyError, PolicyErrors};
