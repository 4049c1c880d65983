//! Approvals as the sidecar runs them: the table (in a file, [`table`]), how they run, and a
//! bounded queue of their news for the control plane, which records them durably and tells
//! approvers.

mod mapping;
mod pid_lock;
pub mod table;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use table::ApprovalTable;
use toolgate_core::asking::approval::{
    ApprovalDesk, ApprovalEvent, ApprovalId, ApprovalKey, ApprovalSettings, Ask, NoRoom, Standing,
};

/// What an engine needs to run approvals: the table, how they run, and a bounded queue for
/// their news. Sending never waits: when the queue is full the news is dropped and counted
/// (the approval itself is in the table either way).
pub struct Approvals {
    pub table: Arc<ApprovalTable>,
    pub settings: ApprovalSettings,
    sender: std::sync::mpsc::SyncSender<ApprovalEvent>,
    dropped: std::sync::atomic::AtomicU64,
}

/// The receiving end of an engine's approval news.
pub struct ApprovalEvents(std::sync::Mutex<std::sync::mpsc::Receiver<ApprovalEvent>>);

impl Approvals {
    /// Approvals on a table private to this process ([`ApprovalSettings::private`]).
    pub fn new(table: Arc<ApprovalTable>, queue: usize) -> (Approvals, ApprovalEvents) {
        Approvals::with_settings(table, ApprovalSettings::private(queue))
    }

    pub fn with_settings(
        table: Arc<ApprovalTable>,
        settings: ApprovalSettings,
    ) -> (Approvals, ApprovalEvents) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let approvals = Approvals {
            table,
            settings,
            sender,
            dropped: std::sync::atomic::AtomicU64::new(0),
        };
        (approvals, ApprovalEvents(std::sync::Mutex::new(receiver)))
    }

    pub fn emit(&self, event: ApprovalEvent) {
        if self.sender.try_send(event).is_err() {
            self.dropped.fetch_add(1, SeqCst);
        }
    }

    /// News dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(SeqCst)
    }
}

impl ApprovalEvents {
    /// The next news, waiting up to `timeout`; `None` if there was none.
    pub fn next(&self, timeout: std::time::Duration) -> Option<ApprovalEvent> {
        let receiver = self.0.lock().unwrap_or_else(|p| p.into_inner());
        receiver.recv_timeout(timeout).ok()
    }
}

impl ApprovalDesk for Approvals {
    fn settings(&self) -> &ApprovalSettings {
        &self.settings
    }

    fn request(&self, ask: &Ask, now_ms: u64) -> Result<Standing, NoRoom> {
        self.table
            .request_as(ask, self.settings.caps, now_ms, ApprovalId::random)
    }

    fn consume(&self, key: ApprovalKey, id: ApprovalId, now_ms: u64) -> bool {
        self.table.consume(key, id, now_ms)
    }

    fn emit(&self, event: ApprovalEvent) {
        Approvals::emit(self, event)
    }
}
