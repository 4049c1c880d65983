//! toolgate's runtime: the parts of the sidecar that do I/O, behind the interfaces the core
//! defines, so the core stays pure (no threads, files or sockets).
//!
//! - [`decision_log`]: the writer thread behind `toolgate_core::decision_log::DecisionSink`.
//! - [`approvals`]: the approvals table in a file, behind `toolgate_core::approval::ApprovalDesk`.
//! - [`store`]: counters on Redis, behind `toolgate_core::store::CounterStore` (the local
//!   table, `toolgate_core::counter::CounterTable`, is the other store).

pub mod approvals;
pub mod decision_log;
pub mod store;
