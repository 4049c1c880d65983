//! toolgate's runtime: the parts of the sidecar that do I/O, behind the interfaces the core
//! defines, so the core stays pure (no threads, files or sockets).
//!
//! - [`decision_log`]: the writer thread behind
//!   `toolgate_core::observing::decision_log::DecisionSink`.
//! - [`approvals`]: the approvals table in a file, behind
//!   `toolgate_core::asking::approval::ApprovalDesk`.
//! - [`store`]: counters on Redis, behind `toolgate_core::engine::store::CounterStore` (the local
//!   table, `toolgate_core::counter::CounterTable`, is the other store).
//! - [`policy_file`]: a policy file and its pins files, read for the core; [`policy_watch`]
//!   when to read them again (with [`file_writes`], what the kernel says of their writers).
//! - [`tokens`]: bearer tokens files, read and matched.

pub mod approvals;
pub mod decision_log;
pub mod file_writes;
pub mod policy_file;
pub mod policy_watch;
pub mod store;
pub mod tokens;
