//! Whose a thing a server handed out is: a task ([`tasks`]), a session ([`sessions`]), a task
//! list's cursor ([`cursors`]), or a grant a server vouched for ([`vouched`]). The proxy notes
//! each under the caller it was handed to (its grant, as limits count it), as one unit in a
//! counter of the engine's store, so replicas sharing Redis share the note; a request that
//! names it is then let through for that caller only.

pub mod cursors;
pub mod sessions;
pub mod tasks;
pub mod vouched;

use crate::counter::{CounterKey, Granularity};

/// One caller's notes of one kind number at most the counter table's slots over this: a
/// session holds two (its note and its claim), so one caller's hold at most 1/32 of them.
pub const TABLE_SHARE: usize = 64;

/// How many things one caller may have noted at once in a table of `slots`: `max`, and no
/// more than [`TABLE_SHARE`] of the table, so that no caller, however trusted, fills it and
/// leaves the next one no room.
pub fn per_caller(max: u32, slots: usize) -> u32 {
    let share = u32::try_from(slots / TABLE_SHARE).unwrap_or(u32::MAX);
    max.min(share.max(1))
}

/// Whether the thing is the caller's, or could not be told (the store did not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Caller,
    Other,
    Unknown,
}

/// The counter (of `identity`, `granularity`) that notes `id` of `server` as handed to
/// `grant` (every caller without one is one caller), kept apart from keys a client may choose
/// as limits' are. Without a grant (`None`): the counter of `id` whoever holds it.
pub fn key(
    (identity, granularity): (u64, Granularity),
    server: Option<&str>,
    grant: Option<(Option<&str>, bool)>,
    id: &str,
) -> CounterKey {
    let server = server.unwrap_or("");
    let (grant, verified) = grant.map_or(("", false), |(g, v)| (g.unwrap_or(""), v));
    let mut value = Vec::with_capacity(17 + server.len() + grant.len() + id.len());
    for part in [server, grant] {
        value.extend_from_slice(&(part.len() as u64).to_le_bytes());
        value.extend_from_slice(part.as_bytes());
    }
    // A grant a client sent is never the verified one of the same spelling.
    value.push(u8::from(verified));
    value.extend_from_slice(id.as_bytes());
    CounterKey::new(identity, &value, granularity).chosen_by_client(!verified)
}
