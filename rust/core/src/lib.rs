//! toolgate core: policy language, compiled matching, sliding-window counters, decisions,
//! MCP reading, explanations.
//!
//! Pure: no threads, files or sockets, and no Python. What does I/O (the decision log's writer, the
//! approvals table's file, counters on Redis) is `toolgate_runtime`, behind the interfaces defined
//! here ([`observing::decision_log::DecisionSink`], [`asking::approval::ApprovalDesk`],
//! [`engine::store::CounterStore`]); a policy's pins files are read by whoever loads it
//! ([`policy::ReadFile`]).

pub mod asking;
pub mod counter;
pub mod decision;
pub mod definitions;
pub mod engine;
pub mod hex;
pub mod json;
pub mod kind;
pub mod mcp;
pub mod observing;
pub mod owners;
pub mod policy;
pub mod trace_ids;

pub use counter::clock::{Clock, ManualClock, MonotonicClock};
pub use decision::{Code, Decision, LimitState, Verdict};
pub use engine::condition::Subject;
pub use engine::{Engine, EngineBuilder, Request, Undecidable};
pub use kind::Kind;
pub use policy::{Policy, PolicyError, PolicyErrors};
