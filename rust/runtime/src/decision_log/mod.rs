//! The decision log's writer: one JSON line per decision, written by its own thread so a
//! decision never waits on the disk.
//!
//! A decision hands its record (`toolgate_core::observing::decision_log::Record`) to a queue
//! bounded in records and in bytes (`try_send`: when the writer cannot keep up, the record is
//! dropped and counted, never waited for). The writer formats each line, chains it to the one
//! before (`prev`: the SHA-256 of the previous line's bytes), writes it, and flushes whenever the
//! queue is empty. Lines it never got are noted in the log itself (a `dropped` line), so a reader
//! knows how many are missing and the chain stays whole. Files rotate by size; the chain and the
//! sequence numbers go on across them.

mod sink;
mod tail;
mod writer;

pub use sink::rotated_files;
pub use writer::rfc3339;

use sink::Sink;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use toolgate_core::asking::approval::CallDigests;
use toolgate_core::decision::Decision;
use toolgate_core::observing::decision_log::{push_hex, DecisionSink, Filter, Record};
use writer::Writer;

/// Records the queue holds by default.
pub const DEFAULT_QUEUE: usize = 1 << 16;
/// Bytes of records the queue holds by default: with records of a few hundred bytes the
/// record bound comes first; records near their caps fill it at a few thousand.
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;

/// Where lines go, and when files rotate.
pub struct Settings {
    /// A file (appended to, the chain continued), or None for stdout.
    pub path: Option<PathBuf>,
    pub filter: Filter,
    /// Start a new file once the current one holds this many bytes (0: never).
    pub rotate_bytes: u64,
    /// Records waiting for the writer; more are dropped.
    pub queue: usize,
    /// Bytes of the records waiting for the writer ([`Record::bytes`]); more are dropped.
    pub queue_bytes: usize,
    /// The key grants are hashed with (the same as the approvals store's, so the two agree).
    pub grant_key: Vec<u8>,
}

enum Message {
    Line(Box<Record>),
    /// Reply once every record sent before this one is written and flushed.
    Sync(SyncSender<()>),
}

/// The decision log of one process.
pub struct DecisionLog {
    tx: SyncSender<Message>,
    filter: Filter,
    /// What each line's arguments are digested under.
    digests: CallDigests,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    queued: Arc<Queued>,
    max_queued_bytes: u64,
    head: Arc<Mutex<Head>>,
    writer: Option<JoinHandle<()>>,
    restart_break: Option<String>,
}

/// The records waiting for the writer and their bytes, in one atomic word so that a
/// decision pays for one update: the count in the top bits, the bytes below.
#[derive(Default)]
struct Queued(AtomicU64);

impl Queued {
    const SHIFT: u32 = 40;
    const MAX_BYTES: u64 = (1 << Queued::SHIFT) - 1;
    const MAX_RECORDS: usize = (1 << (64 - Queued::SHIFT)) - 1;

    /// Count one more record of `bytes`; the records and bytes queued before it.
    fn add(&self, bytes: u64) -> (u64, u64) {
        Queued::split(self.0.fetch_add((1 << Queued::SHIFT) + bytes, Relaxed))
    }

    /// One record of `bytes` fewer.
    fn remove(&self, bytes: u64) {
        self.0.fetch_sub((1 << Queued::SHIFT) + bytes, Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        Queued::split(self.0.load(Relaxed))
    }

    fn split(word: u64) -> (u64, u64) {
        (word >> Queued::SHIFT, word & Queued::MAX_BYTES)
    }
}

/// The last line written: its `seq` and SHA-256. Published outside the log (the sidecar's
/// own log), it anchors the chain: without it, the newest lines could be cut or rewritten
/// unseen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub sha256: String,
}

impl DecisionLog {
    /// Open the log (continuing the chain of an existing file) and start its writer.
    pub fn open(settings: Settings) -> io::Result<DecisionLog> {
        let (sink, restart_break) = Sink::open(settings.path.clone(), settings.rotate_bytes)?;
        let (tx, rx) = sync_channel(settings.queue.clamp(1, Queued::MAX_RECORDS));
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(u64::from(restart_break.is_some())));
        let queued = Arc::new(Queued::default());
        let head = Arc::new(Mutex::new(Head {
            seq: sink.seq,
            sha256: sink.prev.clone(),
        }));
        // Arguments are digested under the same key as grants (a log given none: a key of
        // this process's own, so no digest of them can be checked against guesses).
        let digests = match settings.grant_key.is_empty() {
            true => CallDigests::random(),
            false => CallDigests::new(&settings.grant_key),
        };
        let writer = Writer {
            head: Arc::clone(&head),
            sink,
            key: settings.grant_key,
            dropped: Arc::clone(&dropped),
            written: Arc::clone(&written),
            queued: Arc::clone(&queued),
            noted_drops: 0,
            labels: ahash::AHashMap::new(),
            revision: (0, String::new()),
        };
        let handle = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(DecisionLog {
            tx,
            filter: settings.filter,
            digests,
            dropped,
            written,
            queued,
            max_queued_bytes: (settings.queue_bytes as u64).min(Queued::MAX_BYTES),
            head,
            writer: Some(handle),
            restart_break,
        })
    }

    /// What the log held after its last chain point when it was opened, which its first
    /// line now accounts for as a break (None: nothing; the chain went on as it was).
    pub fn restart_break(&self) -> Option<&str> {
        self.restart_break.as_deref()
    }

    /// The last line written out (flushed or not).
    pub fn head(&self) -> Head {
        self.head.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Queue a record; false (and counted) if the queue is full, in records or in bytes.
    fn queue(&self, record: Record) -> bool {
        let size = record.bytes() as u64;
        let (_, before) = self.queued.add(size);
        let sent = before + size <= self.max_queued_bytes
            && match self.tx.try_send(Message::Line(Box::new(record))) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            };
        if !sent {
            self.queued.remove(size);
            self.dropped.fetch_add(1, Relaxed);
        }
        sent
    }

    /// Wait until what was queued so far is on disk (flushed); false on timeout.
    pub fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Message::Sync(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Lines written (decisions and notes of drops).
    pub fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has written what is queued.
        let (tx, _) = sync_channel(0);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl DecisionSink for DecisionLog {
    #[inline]
    fn wants(&self, d: &Decision) -> bool {
        self.filter.wants(d)
    }

    fn submit(&self, record: Record) -> bool {
        self.queue(record)
    }

    /// At most the queue's bounds.
    fn queued(&self) -> (u64, u64) {
        self.queued.get()
    }

    fn digests(&self) -> Option<&CallDigests> {
        Some(&self.digests)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
