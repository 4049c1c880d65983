//! Grants an MCP server vouched for: credentials whose own `initialize` the server answered
//! with a success, or whose own list request (`tools/list` and the other lists) it answered
//! with a list, as the answer passed Envoy's ext_proc.
//!
//! A bearer token toolgate cannot verify costs a client nothing to make up; a server that
//! checks credentials refuses a made-up one (HTTP 401), so an answer it gives a grant says
//! the grant is one it accepts. Such a grant is trusted where room is shared between
//! callers: its counters and session notes take the counter table's trusted part once the
//! client-chosen part runs short, and its approvals the part of a rule's room that made-up
//! credentials cannot fill. Every MCP client initializes or lists before it calls, so a
//! real caller is vouched for before it needs room.
//!
//! Only answers vouch: nothing a client sends does. Kept per process for [`KEEP_MS`] after
//! the last answer, at most [`MAX_VOUCHED`] grants (only grants a server accepted can be
//! added, so a flood of made-up ones adds none); when full, a new grant is not vouched for
//! and is treated as today, as one the client chose.

use ahash::AHashMap;
use std::sync::Mutex;

/// Most grants kept.
pub const MAX_VOUCHED: usize = 65_536;
/// How long a grant stays vouched for after the server last answered it.
pub const KEEP_MS: u64 = 86_400_000;

pub struct Vouched {
    /// Keyed with a secret of the process: a client cannot make up a grant whose hash is a
    /// vouched one's.
    hasher: ahash::RandomState,
    /// Grant hash -> when the server last answered it (ms).
    grants: Mutex<AHashMap<u64, u64>>,
}

impl Default for Vouched {
    fn default() -> Vouched {
        Vouched {
            hasher: ahash::RandomState::new(),
            grants: Mutex::new(AHashMap::new()),
        }
    }
}

impl Vouched {
    /// A server accepted `grant` at `now_ms`. False when there was no room for another
    /// grant.
    pub fn vouch(&self, grant: &str, now_ms: u64) -> bool {
        let h = self.hasher.hash_one(grant);
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = grants.get_mut(&h) {
            *at = (*at).max(now_ms);
            return true;
        }
        if grants.len() >= MAX_VOUCHED {
            grants.retain(|_, at| now_ms.saturating_sub(*at) < KEEP_MS);
            if grants.len() >= MAX_VOUCHED {
                return false;
            }
        }
        grants.insert(h, now_ms);
        true
    }

    /// Whether a server accepted `grant` within [`KEEP_MS`] of `now_ms`.
    pub fn holds(&self, grant: &str, now_ms: u64) -> bool {
        let h = self.hasher.hash_one(grant);
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants
            .get(&h)
            .is_some_and(|at| now_ms.saturating_sub(*at) < KEEP_MS)
    }

    pub fn len(&self) -> usize {
        self.grants.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_vouched_for_a_day_after_its_last_answer_and_the_room_is_bounded() {
        let v = Vouched::default();
        assert!(!v.holds("alice", 0));
        assert!(v.vouch("alice", 1_000));
        assert!(v.holds("alice", 1_000 + KEEP_MS - 1));
        assert!(!v.holds("alice", 1_000 + KEEP_MS));
        assert!(
            !v.holds("alice-other", 1_000),
            "another spelling is another grant"
        );
        assert!(v.vouch("alice", 5_000));
        assert!(v.holds("alice", 1_000 + KEEP_MS));
        for n in 1..MAX_VOUCHED {
            assert!(v.vouch(&format!("g{n}"), 10_000));
        }
        assert!(!v.vouch("late", 10_000), "full");
        assert!(!v.holds("late", 10_000));
        // Once the first ones have lapsed, there is room again.
        assert!(v.vouch("late", 10_000 + KEEP_MS));
        assert!(v.holds("late", 10_000 + KEEP_MS));
    }
}
