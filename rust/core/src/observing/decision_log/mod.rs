//! What the decision log records of a decision, and the interface its writer implements.
//!
//! A decision is made into a [`Record`] on the deciding thread: it holds what its line will
//! and no more. A [`DecisionSink`] takes records without ever waiting (the sidecar's is the
//! writer thread of `toolgate_runtime::decision_log`, which formats each record as a line,
//! hash-chains it to the one before and writes it to a file or stdout).
//!
//! Privacy: argument values are not recorded, only the argument names and the SHA-256 of
//! their canonical JSON, and the values at the paths a rule names in `log`. A grant is
//! written only as a keyed hash (HMAC-SHA256 under the deployment's key), unless it is a
//! verified identity (a JWT claim).

mod arguments;
mod record;

pub use arguments::{summarize, MAX_CLEAR_BYTES, MAX_NAMES, MAX_NAMES_BYTES};
pub use record::{Call, Record, MAX_TEXT_BYTES};

use crate::decision::{Decision, Verdict};

/// The `prev` of a log's first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which decisions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    /// Every decision that is not a plain ALLOW: denials, approvals asked for or refused,
    /// and calls that ran on an approval.
    Denials,
}

impl Filter {
    /// Every filter by its name (`--decision-log-filter`), as [`Filter::parse`] reads it.
    pub const NAMES: [&'static str; 2] = ["all", "denials"];

    pub fn parse(text: &str) -> Option<Filter> {
        match text {
            "all" => Some(Filter::All),
            "denials" => Some(Filter::Denials),
            _ => None,
        }
    }

    /// Whether `d` is to be written.
    #[inline]
    pub fn wants(self, d: &Decision) -> bool {
        match self {
            Filter::All => true,
            Filter::Denials => d.verdict != Verdict::Allow || d.approval.is_some(),
        }
    }
}

/// Where an engine hands the records of its decisions.
pub trait DecisionSink: Send + Sync {
    /// Whether `d` is to be recorded (the record is made only then).
    fn wants(&self, d: &Decision) -> bool;

    /// Take a record without waiting; false (and counted by the sink) if it was dropped.
    fn submit(&self, record: Record) -> bool;

    /// The records taken and not yet written, and their bytes ([`Record::bytes`]).
    fn queued(&self) -> (u64, u64);

    /// What a line's arguments are digested under (the deployment's key); `None`: a plain
    /// SHA-256 (a log no key was given for).
    fn digests(&self) -> Option<&crate::asking::approval::CallDigests> {
        None
    }
}

/// Lower-case hex of `bytes`, appended to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// [`push_hex`] onto bytes.
pub fn push_hex_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}
