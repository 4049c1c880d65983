//! Whose an MCP session is (2025 revisions' `Mcp-Session-Id`). A server keeps a session's
//! state under its id alone: the requests it has sent the client and awaits answers to (an
//! elicitation), the events it replays after `Last-Event-ID`, the tasks it keeps per session.
//! Behind one proxy every caller reaches the same server, so a caller that sends another's
//! session id would answer for it, read its replayed stream, or end it.
//!
//! So the first caller to use a session holds it ([`crate::Engine::screen_session`]): its use
//! is noted under that caller's grant ([`crate::owners`]) and claimed for it (a counter of at
//! most one unit per session), and any other caller that names the session is answered as a
//! server answers a session it does not know (HTTP 404). The client the server handed the id
//! to uses it first, in the request that follows `initialize`; an id is a secret no one else
//! has seen by then.

/// How long a session is held by its caller at least (a counter's sliding window: the note
/// is gone within twice that, when the next caller to use the session holds it).
pub const KEEP_MS: u64 = 24 * 3600 * 1000;

/// Sessions one caller may hold within [`KEEP_MS`], in a table large enough (else its share
/// of it: [`super::per_caller`]): each holds slots of the counter table, which one
/// caller's may not crowd. A session over it is refused.
pub const MAX_PER_CALLER: u32 = 10_000;

/// Why another caller's session is not reached.
pub const FOREIGN: &str = "the MCP session is another caller's";
/// Why a request is denied when the store cannot say whose its session is.
pub const UNKNOWN_OWNER: &str =
    "the counter store could not say whose the MCP session is, so the request is denied";
/// Why a session could not be held for its caller.
pub const NOT_HELD: &str = "the caller holds as many MCP sessions as it may in a day, or the \
     counter table is full: a new session is refused";

pub use super::Owner;

/// How long a session seen held by a caller is taken as held without asking a shared store
/// again: far below [`KEEP_MS`], so a holder changes under it only in the moments a note
/// runs out, or when Redis loses its counts.
pub const SEEN_HELD_MS: u64 = 5_000;

/// Sessions seen held, at most this many (forgotten all at once past it).
pub const SEEN_HELD_MAX: usize = 1 << 16;

/// The sessions this process saw held lately, by their note's counter key: with a shared
/// store, a request in a session its caller holds would otherwise wait on a Redis round trip
/// of its own.
#[derive(Default)]
pub struct SeenHeld(std::sync::Mutex<ahash::AHashMap<u64, u64>>);

impl SeenHeld {
    /// Whether note `key` was seen held within [`SEEN_HELD_MS`] before `now_ms`.
    pub fn holds(&self, key: u64, now_ms: u64) -> bool {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&key).is_some_and(|until| *until > now_ms)
    }

    /// Note `key` seen held at `now_ms`.
    pub fn saw(&self, key: u64, now_ms: u64) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= SEEN_HELD_MAX {
            seen.clear();
        }
        seen.insert(key, now_ms.saturating_add(SEEN_HELD_MS));
    }
}
