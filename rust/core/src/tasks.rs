//! Whose a task is (MCP's task extension): a `tools/call` that asks for a task is answered
//! with one to poll, and `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/list` then
//! reach it by its id. A server keeps tasks per session or not at all, and a 2026-07-28
//! client has no session: anyone who learns a task's id could read its result or cancel it.
//!
//! So the proxy that sees a created task's id pass back notes it under the caller who asked
//! (its grant, as limits count it: [`note`]), and a request for a task is decided, after its
//! method's rule, by whether the caller's note of that task is there: one unit in a counter
//! of the engine's store, kept [`KEEP_MS`], so replicas sharing Redis share it too. A caller
//! is shown nothing of another's task: it is answered as a task that does not exist.

use crate::args::ArgValue;
use crate::condition::Subject;
use crate::counter::{CounterKey, UNITS_PER_CALL};
use crate::decision::Decision;
use crate::decision::{Code, Limits};
use crate::engine::{Engine, Request, Undecidable};
use crate::evaluation::Want;
use crate::kind::Kind;
use crate::limiter::{Outcome, Parts};
use crate::marks::Read;
use crate::stats::Api;
use crate::visibility::Visibility;

/// How long a task is known as its creator's at least (a counter's sliding window: it is
/// gone within twice that). A task its server keeps longer is then reached by no one
/// through the proxy (refused as unknown), never by another caller.
pub const KEEP_MS: u64 = 24 * 3600 * 1000;

/// Tasks one caller may have noted within [`KEEP_MS`]: each note holds a slot of the
/// counter table, which the caller's may not crowd. A task over it is noted for no one (its
/// requests are refused as for a task that does not exist).
pub const MAX_PER_CALLER: u32 = 1000;

/// The methods that reach one task by the `taskId` of their params.
pub const METHODS: [&str; 3] = ["tasks/get", "tasks/result", "tasks/cancel"];

const FOREIGN: &str = "the task is not one this caller created";
const UNKNOWN_OWNER: &str =
    "the counter store could not say whose the task is, so the request is denied";

/// Whether the caller created the task, or could not be told (the store did not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Caller,
    Other,
    Unknown,
}

impl Owner {
    /// Whether a task list shows the task: to its creator only, so the list is the caller's
    /// own (never cached for another).
    pub fn visibility(self) -> Visibility {
        let removed = match self {
            Owner::Caller => None,
            Owner::Other => Some(Code::Hidden),
            Owner::Unknown => Some(Code::StoreUnavailable),
        };
        Visibility {
            removed,
            per_subject: true,
        }
    }
}

/// The counter that notes `task_id` of `server` as `subject`'s: under its grant (every
/// caller without one is one caller), kept apart from keys a client may choose as limits'
/// are.
fn key(engine: &Engine, server: Option<&str>, subject: Subject<'_>, task_id: &str) -> CounterKey {
    let limit = &engine.policy().task_owner;
    let (server, grant) = (server.unwrap_or(""), subject.grant.unwrap_or(""));
    let mut value = Vec::with_capacity(16 + server.len() + grant.len() + task_id.len());
    for part in [server, grant] {
        value.extend_from_slice(&(part.len() as u64).to_le_bytes());
        value.extend_from_slice(part.as_bytes());
    }
    value.extend_from_slice(task_id.as_bytes());
    CounterKey::new(limit.identity, &value, limit.granularity)
        .chosen_by_client(!subject.grant_verified)
}

impl Engine {
    /// A request its params' `_meta` relates to task `task_id` (a server looks the task up
    /// and queues the request's answer on it): refused as for a task that does not exist
    /// unless its caller created the task; `None` when it may go on to be decided.
    pub fn screen_related(
        &self,
        api: Api,
        task_id: &str,
        request: &Undecidable<'_>,
    ) -> Option<Decision> {
        let (code, reason) = match self.task_owner(request.server, request.subject, task_id) {
            Owner::Caller => return None,
            Owner::Other => (Code::Hidden, FOREIGN),
            Owner::Unknown => (Code::StoreUnavailable, UNKNOWN_OWNER),
        };
        let request = Undecidable {
            reason,
            logged: None,
            ..*request
        };
        Some(self.refuse_as(api, code, &request))
    }

    /// Note task `task_id`, which `server` just created for `subject`'s call, as that
    /// caller's. False if it could not be noted (the table is full, the store is away): no
    /// one then reaches the task through the proxy.
    pub fn note_task(&self, server: Option<&str>, subject: Subject<'_>, task_id: &str) -> bool {
        let policy = self.policy();
        let cap = &policy.tasks_per_caller;
        let grant = subject.grant.unwrap_or("");
        let wants = [
            Want {
                limit: &policy.task_owner,
                key: key(self, server, subject, task_id),
                amount: UNITS_PER_CALL,
            },
            Want {
                limit: cap,
                key: CounterKey::new(cap.identity, grant.as_bytes(), cap.granularity)
                    .chosen_by_client(!subject.grant_verified),
                amount: UNITS_PER_CALL,
            },
        ];
        let (mut parts, mut limits) = (Parts::new(), Limits::default());
        let now_ns = self.clock().now_ns();
        let (outcome, _) =
            self.reserve_in_store(&wants, &[], now_ns, true, &mut parts, &mut limits);
        matches!(outcome, Outcome::Reserved)
    }

    /// Whether `subject` created task `task_id` of `server`.
    pub fn task_owner(&self, server: Option<&str>, subject: Subject<'_>, task_id: &str) -> Owner {
        let read = Read {
            key: key(self, server, subject, task_id),
            window_ms: KEEP_MS,
        };
        let (mut parts, mut limits) = (Parts::new(), Limits::default());
        let now_ns = self.clock().now_ns();
        let (_, bits) = self.reserve_in_store(&[], &[read], now_ns, false, &mut parts, &mut limits);
        match (bits.unknown & 1, bits.set & 1) {
            (1, _) => Owner::Unknown,
            (_, 1) => Owner::Caller,
            _ => Owner::Other,
        }
    }
}

/// Why a request that reaches one task may not, decided after its method's rule allowed
/// it: it names none, or not one its caller created. `None`: it may go on.
pub(crate) fn screen<A: ArgValue>(
    engine: &Engine,
    req: &Request<'_, A>,
) -> Option<(Code, &'static str)> {
    if req.kind != Kind::Method || !METHODS.contains(&req.name) {
        return None;
    }
    let task_id = req.args.as_ref().and_then(|a| a.get_key("taskId"));
    let Some(task_id) = task_id.as_ref().and_then(ArgValue::as_str) else {
        return Some((
            Code::InvalidRequest,
            "the request names no task (params.taskId)",
        ));
    };
    match engine.task_owner(req.server, req.subject, task_id) {
        Owner::Caller => None,
        // Answered as a task that does not exist: whether it does is another caller's.
        Owner::Other => Some((Code::Hidden, FOREIGN)),
        Owner::Unknown => Some((Code::StoreUnavailable, UNKNOWN_OWNER)),
    }
}
