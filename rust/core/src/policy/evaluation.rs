//! What deciding evaluates, shared by the code that evaluates it ([`crate::engine::condition`],
//! [`crate::engine::limiter`]) and the code that listens to the evaluation
//! ([`crate::observing::trace`]), so that neither imports the other: a condition's outcome, and a
//! limit as it applies to a call.

use super::compile::CompiledLimit;
use super::Compare;
use crate::counter::CounterKey;
use crate::json::args::Kind;

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Missing,
    /// Another key of the object folds like the path's key (or, in a Python dict, is not a
    /// string): a case-insensitive decoder upstream could read it as the path, so the path's
    /// value is not known.
    CaseVariant,
    /// A value decoders read differently: an integer beyond 2^53 (rounded by JavaScript and
    /// by Go into `any`, exact in Python), an object in it with keys that fold alike, or a
    /// value JSON cannot hold.
    Ambiguous,
    WrongType(Kind),
    /// An argument path, read before there are arguments ([`Facts::args_unknown`]), or a
    /// mark, read before the marks are.
    NotYetKnown,
    /// A mark kept per session (agent, grant), read by a call that names none: whose mark
    /// it would be is not known.
    NoScope,
    /// A mark the counter store could not read yet (a cached copy that has not heard from
    /// the other replicas).
    Unread,
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome<'p> {
    Holds,
    Fails,
    Unevaluable(&'p Compare, Problem),
}

impl Problem {
    pub fn describe(self, c: &Compare) -> String {
        match self {
            Problem::Missing => format!("{} is missing", c.path.text),
            Problem::CaseVariant => format!(
                "{} cannot be read one way: the object holds another key that a decoder \
                 could read as it (one differing only by case, or one that is not a string)",
                c.path.text
            ),
            Problem::Ambiguous => format!(
                "{} could be read two ways: it holds a number beyond 2^53, which some \
                 decoders round, keys that differ only by case, or a value JSON cannot hold",
                c.path.text
            ),
            Problem::NotYetKnown => format!("{} is not known before the call", c.path.text),
            Problem::Unread => format!(
                "{} cannot be read yet: the counter store's copy has not heard from the other \
                 replicas",
                c.path.text
            ),
            Problem::NoScope => format!(
                "{} is kept per caller, and the call names none of its kind (session, agent \
                 or grant)",
                c.path.text
            ),
            Problem::WrongType(kind) => {
                format!(
                    "{} is {}, which `{}` cannot compare",
                    c.path.text,
                    kind.name(),
                    c.op.name()
                )
            }
        }
    }
}

/// One limit as it applies to one call.
pub struct Want<'p> {
    pub limit: &'p CompiledLimit,
    pub key: CounterKey,
    pub amount: u64,
}
