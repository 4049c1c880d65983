//! The trace a decision belongs to, for its decision-log line: the ids of the span the
//! sidecar exports for it (W3C Trace Context), so a line and a trace can be joined.
//!
//! The protocol adapter that opens a decision's span sets its ids around the decision
//! ([`within`]); a record made meanwhile on that thread takes them ([`current`]). The
//! decision runs on one thread from start to end (a wait on Redis blocks that thread), so
//! the ids go where the record is made without a parameter through every step. Without
//! tracing nothing is set, and a record pays one thread-local read.

use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime};

/// A span's ids: the trace's 16 bytes and the span's 8, and whether its tracer keeps it
/// (sampled), so that a span made later under it (an approval's wait) is kept alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

thread_local! {
    static CURRENT: Cell<Option<TraceIds>> = const { Cell::new(None) };
    /// The decision span this thread ended last, when it is kept (sampled): the latency
    /// histogram's exemplar, taken by the duration's record that follows.
    static SAMPLED: Cell<Option<TraceIds>> = const { Cell::new(None) };
}

/// Most waits one decision's span shows (a decision makes a round trip or two).
pub const MAX_WAITS: usize = 8;

/// A traced decision waited on something outside the process: a counter store's round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// The operation, as the span names it (`EVALSHA`).
    pub operation: &'static str,
    /// What answered it (`redis`).
    pub system: &'static str,
    pub started: SystemTime,
    pub took: Duration,
    pub failed: bool,
}

thread_local! {
    static WAITS: RefCell<Vec<Wait>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread is deciding a traced request: only then is a wait worth noting.
#[inline]
pub fn tracing() -> bool {
    current().is_some()
}

/// Note a wait of the traced decision this thread is making (beyond [`MAX_WAITS`], not
/// noted): its span shows it ([`take_waits`]).
pub fn waited(wait: Wait) {
    WAITS.with(|w| {
        let mut waits = w.borrow_mut();
        if waits.len() < MAX_WAITS {
            waits.push(wait);
        }
    });
}

/// The waits noted since the last take.
pub fn take_waits() -> Vec<Wait> {
    WAITS.with(|w| std::mem::take(&mut *w.borrow_mut()))
}

/// The span of the decision this thread just served was sampled: its duration's record
/// names it ([`take_sampled`]).
pub fn sampled(ids: TraceIds) {
    SAMPLED.with(|s| s.set(Some(ids)));
}

/// The sampled span [`sampled`] named, once.
#[inline]
pub fn take_sampled() -> Option<TraceIds> {
    SAMPLED.with(Cell::take)
}

/// The ids set by the innermost [`within`] on this thread.
#[inline]
pub fn current() -> Option<TraceIds> {
    CURRENT.with(Cell::get)
}

/// Run `f` with `ids` as the decision's trace; the ids before are back afterwards, even if
/// `f` unwinds.
pub fn within<R>(ids: Option<TraceIds>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<TraceIds>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(ids)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: TraceIds = TraceIds {
        trace_id: [7; 16],
        span_id: [9; 8],
        sampled: true,
    };

    #[test]
    fn ids_hold_within_and_the_ones_before_come_back() {
        assert_eq!(current(), None);
        within(Some(IDS), || {
            assert_eq!(current(), Some(IDS));
            let inner = TraceIds {
                span_id: [1; 8],
                ..IDS
            };
            within(Some(inner), || assert_eq!(current(), Some(inner)));
            assert_eq!(current(), Some(IDS));
            within(None, || assert_eq!(current(), None));
            assert_eq!(current(), Some(IDS));
        });
        assert_eq!(current(), None);
    }

    #[test]
    fn an_unwinding_decision_leaves_no_ids_behind() {
        let unwound = std::panic::catch_unwind(|| within(Some(IDS), || panic!("decision")));
        assert!(unwound.is_err());
        assert_eq!(current(), None);
    }

    #[test]
    fn another_thread_sees_none_of_them() {
        within(Some(IDS), || {
            let seen = std::thread::spawn(current).join().unwrap();
            assert_eq!(seen, None);
        });
    }
}
