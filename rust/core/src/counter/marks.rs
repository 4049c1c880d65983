//! Session marks: what one call finds of the marks its rules read, what its decision
//! reports of them, and the counter reads that find them.
//!
//! A mark is a counter (its ttl the window) that a call adds one unit to when it is allowed
//! and gives back with its reservation; it is set while its counter counts anything. So a
//! mark is read in the same step, and on the same store, as the call's limits are reserved.

use super::CounterKey;
use smallvec::SmallVec;
use std::sync::Arc;

/// The marks one call read, by name (the policy's, shared: a decision copies no name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks(pub MarksRead);

/// Marks by name and what reading each found: inline for the one or two a rule reads, so
/// a decision that reports them allocates only the report.
pub type MarksRead = SmallVec<[(Arc<str>, MarkState); 2]>;

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
    pub read: MarksRead,
    pub set: Vec<Arc<str>>,
}

/// Most counters one call reads besides those it reserves (marks), one bit each.
pub const MAX_READS: usize = 64;

/// A counter one call only reads (a mark): whether it counts anything in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub key: CounterKey,
    pub window_ms: u64,
}

/// The combinations of a call's reads that its conditions deny: bit `c` set when the call
/// is denied with the reads found as `c` (bit `i` of `c` for `reads[i]`). A store that sees
/// the reads before it reserves (the Redis script) then reserves nothing for a call its
/// marks deny, instead of reserving and giving back in a second round trip. Known for up
/// to [`MAX_JUDGED_READS`] reads; with more, or none known, nothing is skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Denying(pub u64);

/// Most reads whose combinations [`Denying`] covers (2^6 = 64 bits).
pub const MAX_JUDGED_READS: usize = 6;

impl Denying {
    /// Whether reads found as `set` deny the call.
    pub fn denies(self, set: u64) -> bool {
        set < 64 && self.0 & (1 << set) != 0
    }

    /// One character per combination, `1` where it denies ('' when none does): what the
    /// Redis script is given (a Lua number holds only 53 bits).
    pub fn as_flags(self, reads: usize) -> String {
        if self.0 == 0 || reads > MAX_JUDGED_READS {
            return String::new();
        }
        (0..1u64 << reads)
            .map(|c| if self.denies(c) { '1' } else { '0' })
            .collect()
    }
}

/// What the reads found, bit `i` for `reads[i]`: the counter counts something (`set`), or
/// the store cannot say (`unknown`: a cached copy not merged with the others' counts yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadBits {
    pub set: u64,
    pub unknown: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_name_each_combination_that_denies_in_order() {
        // Reads 0 and 1: denied where read 0 is set (combinations 1 and 3).
        let denying = Denying(0b1010);
        assert_eq!(denying.as_flags(2), "0101");
        assert!(denying.denies(3) && !denying.denies(2) && !denying.denies(64));
        assert_eq!(Denying(0).as_flags(2), "", "none denies: nothing to judge");
        assert_eq!(Denying(u64::MAX).as_flags(6).len(), 64);
        assert_eq!(
            Denying(1).as_flags(MAX_JUDGED_READS + 1),
            "",
            "too many reads"
        );
    }
}
