//! Whose an MCP session is (2025 revisions' `Mcp-Session-Id`). A server keeps a session's
//! state under its id alone: the requests it has sent the client and awaits answers to (an
//! elicitation), the events it replays after `Last-Event-ID`, the tasks it keeps per session.
//! Behind one proxy every caller reaches the same server, so a caller that sends another's
//! session id would answer for it, read its replayed stream, or end it.
//!
//! So the first caller to use a session holds it ([`crate::Engine::screen_session`]): its use
//! is noted under that caller's grant ([`crate::owner`]) and claimed for it (a counter of at
//! most one unit per session), and any other caller that names the session is answered as a
//! server answers a session it does not know (HTTP 404). The client the server handed the id
//! to uses it first, in the request that follows `initialize`; an id is a secret no one else
//! has seen by then.

/// How long a session is held by its caller at least (a counter's sliding window: the note
/// is gone within twice that, when the next caller to use the session holds it).
pub const KEEP_MS: u64 = 24 * 3600 * 1000;

/// Sessions one caller may hold within [`KEEP_MS`]: each holds slots of the counter table,
/// which one caller's may not crowd. A session over it is refused.
pub const MAX_PER_CALLER: u32 = 10_000;

/// Why another caller's session is not reached.
pub const FOREIGN: &str = "the MCP session is another caller's";
/// Why a request is denied when the store cannot say whose its session is.
pub const UNKNOWN_OWNER: &str =
    "the counter store could not say whose the MCP session is, so the request is denied";
/// Why a session could not be held for its caller.
pub const NOT_HELD: &str = "the caller holds as many MCP sessions as it may in a day, or the \
     counter table is full: a new session is refused";

pub use crate::owner::Owner;
