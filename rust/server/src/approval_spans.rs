//! A person's decision on a call as a span in the call's own trace: from when its approval
//! opened to when an approver approved or denied it, under the span of the decision that
//! asked, so a trace shows how long the call waited on a person and what came of it.
//!
//! The asking decision's ids come with the approval's news ([`Opened::trace`]); the sidecar
//! that opened the approval keeps them, for its most recent [`MAX_KEPT`] approvals, until an
//! approver decides it there. An approval that expires undecided, or is decided after a
//! restart, has no span (its wait is in the approvals' store and their `Watch` stream).

use crate::spans::{approval_span, Spans};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use toolgate_core::asking::approval::{ApprovalId, Opened};
use toolgate_core::trace_ids::TraceIds;

/// Approvals whose asking decision is kept at once: the approvals table's size.
pub const MAX_KEPT: usize = 4096;

/// The approvals opened by traced decisions, waiting for an approver.
pub struct ApprovalSpans {
    spans: Arc<Spans>,
    waiting: Mutex<VecDeque<Waiting>>,
}

struct Waiting {
    id: ApprovalId,
    asked: TraceIds,
    tool: String,
    opened_ms: u64,
}

impl ApprovalSpans {
    pub fn new(spans: Arc<Spans>) -> ApprovalSpans {
        ApprovalSpans {
            spans,
            waiting: Mutex::new(VecDeque::new()),
        }
    }

    /// An approval opened: kept if the decision that asked is a kept span.
    pub fn opened(&self, opened: &Opened) {
        let Some(asked) = opened.trace.filter(|t| t.sampled) else {
            return;
        };
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() == MAX_KEPT {
            waiting.pop_front();
        }
        waiting.push_back(Waiting {
            id: opened.id,
            asked,
            tool: opened.tool.clone(),
            opened_ms: opened.created_ms,
        });
    }

    /// An approver decided approval `id` at `decided_ms`: its span, if its asking was kept.
    pub fn decided(&self, id: ApprovalId, approved: bool, decided_ms: u64) {
        let found = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let at = waiting.iter().position(|w| w.id == id);
            at.and_then(|at| waiting.remove(at))
        };
        if let Some(w) = found {
            let id = id.to_string();
            approval_span(
                &self.spans,
                w.asked,
                &w.tool,
                &id,
                w.opened_ms,
                decided_ms,
                approved,
            );
        }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.waiting.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spans::TraceOptions;
    use toolgate_core::asking::approval::{ApprovalKey, Owner};

    fn spans() -> ApprovalSpans {
        // A collector nobody runs: the exporter connects lazily and drops what it cannot send.
        let options = TraceOptions {
            endpoint: "http://127.0.0.1:9".into(),
            sample_ratio: 1.0,
        };
        ApprovalSpans::new(Arc::new(Spans::start(&options).unwrap()))
    }

    fn opened(id: u128, sampled: Option<bool>) -> Opened {
        Opened {
            id: ApprovalId(id),
            key: ApprovalKey([1, 2]),
            server: None,
            tool: "terminate_instances".into(),
            grant: None,
            grant_verified: false,
            session: None,
            agent: None,
            arguments: "{}".into(),
            arguments_cut: false,
            arguments_bytes: 2,
            arguments_digest: String::new(),
            owner: Owner::default(),
            rule: "/tools/terminate_instances".into(),
            revision: "r".into(),
            created_ms: 1_000,
            expires_ms: 901_000,
            approvers: Vec::new(),
            trace: sampled.map(|sampled| TraceIds {
                trace_id: [7; 16],
                span_id: [9; 8],
                sampled,
            }),
        }
    }

    #[test]
    fn only_an_approval_a_kept_span_asked_for_waits_and_only_until_it_is_decided() {
        let s = spans();
        s.opened(&opened(1, None));
        s.opened(&opened(2, Some(false)));
        assert_eq!(s.kept(), 0);
        s.opened(&opened(3, Some(true)));
        s.opened(&opened(4, Some(true)));
        assert_eq!(s.kept(), 2);
        s.decided(ApprovalId(3), true, 5_000);
        assert_eq!(s.kept(), 1);
        // Decided again, or never opened here: nothing.
        s.decided(ApprovalId(3), false, 6_000);
        s.decided(ApprovalId(9), false, 6_000);
        assert_eq!(s.kept(), 1);
    }

    #[test]
    fn the_waiting_are_bounded_the_oldest_dropped_first() {
        let s = spans();
        for id in 0..(MAX_KEPT as u128 + 10) {
            s.opened(&opened(id, Some(true)));
        }
        assert_eq!(s.kept(), MAX_KEPT);
        s.decided(ApprovalId(0), true, 5_000);
        assert_eq!(s.kept(), MAX_KEPT, "the oldest went first");
        s.decided(ApprovalId(MAX_KEPT as u128 + 9), true, 5_000);
        assert_eq!(s.kept(), MAX_KEPT - 1);
    }
}
