//! The value at an argument path (`args.to.account`, `args.items[0]`), where the decision
//! log and a confirmation's question show it. (Conditions read paths their own way: a key a
//! decoder could read otherwise is a problem there, not a miss.)

use super::Segment;
use crate::json::args::ArgValue;

/// The value `segments` lead to in `args`; `None` where a key or an index is missing.
pub fn walk<A: ArgValue + Clone>(args: &A, segments: &[Segment]) -> Option<A> {
    let mut v = args.clone();
    for s in segments {
        v = match s {
            Segment::Key(k) => v.get_key(k)?,
            Segment::Index(i) => v.get_index(*i)?,
        };
    }
    Some(v)
}
