//! Whose a task is (MCP's task extension): a `tools/call` that asks for a task is answered
//! with one to poll, and `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/list` then
//! reach it by its id. A server keeps tasks per session or not at all, and a 2026-07-28
//! client has no session: anyone who learns a task's id could read its result or cancel it.
//!
//! So the proxy that sees a created task's id pass back notes it under the caller who asked (its
//! grant, as limits count it: [`crate::Engine::note_task`], [`crate::owners`]), and a request for a
//! task is decided, after its method's rule, by whether the caller's note of that task is there:
//! one unit in a counter of the engine's store, kept [`KEEP_MS`], so replicas sharing Redis share
//! it too. A caller is shown nothing of another's task: it is answered as a task that does not
//! exist.

/// How long a task is known as its creator's at least (a counter's sliding window: it is
/// gone within twice that). A task its server keeps longer is then reached by no one
/// through the proxy (refused as unknown), never by another caller.
pub const KEEP_MS: u64 = 24 * 3600 * 1000;

/// Tasks one caller may have noted within [`KEEP_MS`], in a table large enough (else its
/// share of it: [`super::per_caller`]): each note holds a slot of the counter table,
/// which the caller's may not crowd. A task over it is noted for no one (its
/// requests are refused as for a task that does not exist).
pub const MAX_PER_CALLER: u32 = 1000;

/// The methods that reach one task by the `taskId` of their params.
pub const METHODS: [&str; 3] = ["tasks/get", "tasks/result", "tasks/cancel"];

/// Why another caller's task is not reached.
pub const FOREIGN: &str = "the task is not one this caller created";
/// Why a task's request is denied when the store cannot say whose the task is.
pub const UNKNOWN_OWNER: &str =
    "the counter store could not say whose the task is, so the request is denied";

pub use super::Owner;
