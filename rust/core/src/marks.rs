//! Session marks: what one call finds of the marks its rules read, what its decision
//! reports of them, and the counter reads that find them.
//!
//! A mark is a counter (its ttl the window) that a call adds one unit to when it is allowed
//! and gives back with its reservation; it is set while its counter counts anything. So a
//! mark is read in the same step, and on the same store, as the call's limits are reserved.

use crate::counter::CounterKey;

/// The marks one call read, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks(pub Vec<(Box<str>, MarkState)>);

/// What reading a mark found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkState {
    Set,
    Unset,
    /// Kept per session (agent, grant), and the call names none: whose mark is not known.
    NoScope,
    /// The store could not say (Redis did not answer a cached replica's read of it).
    Unread,
}

impl MarkState {
    /// As the decision log and explanations write it.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkState::Set => "set",
            MarkState::Unset => "unset",
            MarkState::NoScope => "no_scope",
            MarkState::Unread => "unread",
        }
    }
}

impl Marks {
    pub(crate) fn get(&self, name: &str) -> Option<MarkState> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, s)| *s)
    }
}

/// The session marks one decision read, as it found them, and those it set (the call was
/// allowed; a dry run's would be).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarksSeen {
    pub read: Vec<(Box<str>, MarkState)>,
    pub set: Vec<Box<str>>,
}

/// Most counters one call reads besides those it reserves (marks), one bit each.
pub const MAX_READS: usize = 64;

/// A counter one call only reads (a mark): whether it counts anything in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub key: CounterKey,
    pub window_ms: u64,
}

/// What the reads found, bit `i` for `reads[i]`: the counter counts something (`set`), or
/// the store cannot say (`unknown`: a cached copy not merged with the others' counts yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadBits {
    pub set: u64,
    pub unknown: u64,
}
