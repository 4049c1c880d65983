//! The decision log: one JSON line per decision, written by its own thread so a decision
//! never waits on the disk.
//!
//! A decision hands its record to a bounded queue (`try_send`: when the writer cannot keep
//! up, the record is dropped and counted, never waited for). The writer formats each line,
//! chains it to the one before (`prev`: the SHA-256 of the previous line's bytes), writes
//! it, and flushes whenever the queue is empty. Lines it never got are noted in the log
//! itself (a `dropped` line), so a reader knows how many are missing and the chain stays
//! whole. Files rotate by size; the chain and the sequence numbers go on across them.
//!
//! Privacy: argument values are not written, only the argument names and the SHA-256 of
//! their canonical JSON, and the values at the paths a rule names in `log`. A grant is
//! written only as a keyed hash (HMAC-SHA256 under the deployment's key), unless it is a
//! verified identity (a JWT claim).

use crate::approval::write_canonical;
use crate::compile::CompiledPolicy;
use crate::decision::{Decision, Verdict};
use crate::policy::{Path as ArgPath, Segment};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
    pub fn parse(text: &str) -> Option<Filter> {
        match text {
            "all" => Some(Filter::All),
            "denials" => Some(Filter::Denials),
            _ => None,
        }
    }
}

/// Where lines go, and when files rotate.
pub struct Settings {
    /// A file (appended to, the chain continued), or None for stdout.
    pub path: Option<PathBuf>,
    pub filter: Filter,
    /// Start a new file once the current one holds this many bytes (0: never).
    pub rotate_bytes: u64,
    /// Records waiting for the writer; more are dropped.
    pub queue: usize,
    /// The key grants are hashed with (the same as the approvals store's, so the two agree).
    pub grant_key: Vec<u8>,
}

/// What one decision's line is made from: copied on the decision's thread, formatted on
/// the writer's.
pub struct Record {
    pub at_ms: u64,
    pub latency_ns: u64,
    pub decision: Decision,
    pub tool: Box<str>,
    pub server: Option<Box<str>>,
    pub grant: Option<Box<str>>,
    pub grant_verified: bool,
    pub session: Option<Box<str>>,
    pub agent: Option<Box<str>>,
    /// None: the call had no arguments (or was refused before they were read).
    pub args: Option<Value>,
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
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    head: Arc<Mutex<Head>>,
    writer: Option<JoinHandle<()>>,
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
        let sink = Sink::open(settings.path.clone(), settings.rotate_bytes)?;
        let (tx, rx) = sync_channel(settings.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let head = Arc::new(Mutex::new(Head {
            seq: sink.seq,
            sha256: sink.prev.clone(),
        }));
        let writer = Writer {
            head: Arc::clone(&head),
            sink,
            key: settings.grant_key,
            dropped: Arc::clone(&dropped),
            written: Arc::clone(&written),
            noted_drops: 0,
            labels: ahash::AHashMap::new(),
            scratch: Vec::with_capacity(1024),
            revision: (0, String::new()),
        };
        let handle = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(DecisionLog {
            tx,
            filter: settings.filter,
            dropped,
            written,
            head,
            writer: Some(handle),
        })
    }

    /// The last line written out (flushed or not).
    pub fn head(&self) -> Head {
        self.head.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Whether `d` is to be written.
    #[inline]
    pub fn wants(&self, d: &Decision) -> bool {
        match self.filter {
            Filter::All => true,
            Filter::Denials => d.verdict != Verdict::Allow || d.approval.is_some(),
        }
    }

    /// Queue a record; false (and counted) if the queue is full.
    pub fn submit(&self, record: Record) -> bool {
        match self.tx.try_send(Message::Line(Box::new(record))) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
                false
            }
        }
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

/// The file (or stdout) being written, where the chain stands, and rotation.
struct Sink {
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
    bytes: u64,
    rotate_bytes: u64,
    seq: u64,
    prev: String,
    /// This writer's random prefix of decision ids: unique across restarts.
    run: String,
}

impl Sink {
    fn open(path: Option<PathBuf>, rotate_bytes: u64) -> io::Result<Sink> {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        let run = hex(&random);
        let Some(path) = path else {
            return Ok(Sink {
                path: None,
                out: BufWriter::new(Box::new(io::stdout())),
                bytes: 0,
                rotate_bytes: 0,
                seq: 0,
                prev: GENESIS.to_owned(),
                run,
            });
        };
        // The chain goes on from the last line written: this file's, else the newest
        // rotated file's (rotation happened, then a restart before any new line).
        let (seq, prev) = match last_line(&path)? {
            Some(line) => chain_point(&line),
            None => match newest_rotated(&path) {
                Some(rotated) => {
                    last_line(&rotated)?.map_or((0, GENESIS.to_owned()), |l| chain_point(&l))
                }
                None => (0, GENESIS.to_owned()),
            },
        };
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Sink {
            path: Some(path),
            out: BufWriter::with_capacity(1 << 16, Box::new(file)),
            bytes,
            rotate_bytes,
            seq,
            prev,
            run,
        })
    }

    /// Append one line: `body` is the line's fields as JSON (`"key":value,` pairs, each
    /// ending in a comma), to which `seq` and `id` are put before and `prev` after.
    fn append(&mut self, body: &[u8], line: &mut Vec<u8>) -> io::Result<()> {
        if self.rotate_bytes > 0 && self.bytes >= self.rotate_bytes {
            self.rotate()?;
        }
        self.seq += 1;
        line.clear();
        let _ = write!(
            line,
            "{{\"seq\":{},\"id\":\"{}-{}\",",
            self.seq, self.run, self.seq
        );
        line.extend_from_slice(body);
        line.extend_from_slice(b"\"prev\":\"");
        line.extend_from_slice(self.prev.as_bytes());
        line.extend_from_slice(b"\"}");
        self.prev.clear();
        push_hex(&mut self.prev, &Sha256::digest(&line[..]));
        line.push(b'\n');
        self.out.write_all(line)?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// The current file becomes `PATH.N` (N one more than the newest); a new PATH starts.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.out.flush()?;
        let n = rotated_files(&path).last().map_or(1, |(n, _)| n + 1);
        std::fs::rename(&path, numbered(&path, n))?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.out = BufWriter::with_capacity(1 << 16, Box::new(file));
        self.bytes = 0;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn numbered(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `PATH.1`, `PATH.2`, … that exist, oldest first.
pub fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let n = file.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn newest_rotated(path: &Path) -> Option<PathBuf> {
    rotated_files(path).pop().map(|(_, p)| p)
}

/// The last complete line of a file (None if it has none). A line cut by a crash is not
/// complete: the chain goes on from the line before it, which a verifier reports.
fn last_line(path: &Path) -> io::Result<Option<String>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Lines are short: the last 64 KiB hold the last whole one.
    let start = len.saturating_sub(1 << 16);
    file.seek(SeekFrom::Start(start))?;
    let mut last = None;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if !line.is_empty() {
            last = Some(line);
        }
    }
    let Some(last) = last else { return Ok(None) };
    Ok(Some(String::from_utf8_lossy(&last).into_owned()))
}

/// `(seq, hash)` of a written line: where the chain goes on from.
fn chain_point(line: &str) -> (u64, String) {
    let seq = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
        .unwrap_or(0);
    (seq, hex(&Sha256::digest(line.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

struct Writer {
    sink: Sink,
    head: Arc<Mutex<Head>>,
    key: Vec<u8>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    /// Drops already noted in the log.
    noted_drops: u64,
    /// Grants hashed lately: a few credentials make most calls, and HMAC is the costliest
    /// part of a line.
    labels: ahash::AHashMap<Box<str>, Box<str>>,
    /// The canonical arguments, hashed for their digest.
    scratch: Vec<u8>,
    /// The last policy seen (its address) and its revision's text.
    revision: (usize, String),
}

/// How long the writer lets records gather while they keep coming: senders then find it
/// asleep, not waiting on the queue, and never pay for waking it.
const GATHER: Duration = Duration::from_millis(5);
const LABEL_CACHE: usize = 4096;

impl Writer {
    fn run(mut self, rx: Receiver<Message>) {
        let (mut body, mut line) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
        loop {
            // Everything queued, then flush; wait for more only when there was none.
            let mut took = 0usize;
            loop {
                match rx.try_recv() {
                    Ok(m) => {
                        took += 1;
                        self.handle(m, &mut body, &mut line);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.note_drops(&mut line);
                        report(self.sink.flush());
                        return;
                    }
                }
            }
            self.note_drops(&mut line);
            report(self.sink.flush());
            if took > 0 {
                std::thread::sleep(GATHER);
                continue;
            }
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(m) => self.handle(m, &mut body, &mut line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn handle(&mut self, m: Message, body: &mut Vec<u8>, line: &mut Vec<u8>) {
        match m {
            Message::Line(record) => {
                self.note_drops(line);
                body.clear();
                self.format(&record, body);
                report(self.sink.append(body, line));
                self.written.fetch_add(1, Relaxed);
                self.publish_head();
            }
            Message::Sync(reply) => {
                self.note_drops(line);
                report(self.sink.flush());
                let _ = reply.send(());
            }
        }
    }

    /// A line saying how many records were dropped since the last such line.
    fn note_drops(&mut self, line: &mut Vec<u8>) {
        let dropped = self.dropped.load(Relaxed);
        if dropped > self.noted_drops {
            let body = format!(
                "\"time_ms\":{},\"dropped\":{},",
                now_ms(),
                dropped - self.noted_drops
            );
            report(self.sink.append(body.as_bytes(), line));
            self.written.fetch_add(1, Relaxed);
            self.noted_drops = dropped;
            self.publish_head();
        }
    }

    fn publish_head(&self) {
        if let Ok(mut head) = self.head.lock() {
            head.seq = self.sink.seq;
            head.sha256.clone_from(&self.sink.prev);
        }
    }

    /// The record's fields, in the documented order.
    fn format(&mut self, r: &Record, out: &mut Vec<u8>) {
        let d = &r.decision;
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"\"time_ms\":");
        out.extend_from_slice(n.format(r.at_ms).as_bytes());
        out.extend_from_slice(b",\"time\":\"");
        rfc3339_into(out, r.at_ms);
        out.extend_from_slice(b"\",\"verdict\":\"");
        out.extend_from_slice(d.verdict.as_str().as_bytes());
        out.extend_from_slice(b"\",\"code\":\"");
        out.extend_from_slice(d.code.as_str().as_bytes());
        out.extend_from_slice(b"\",");
        field(out, "rule", Some(d.rule()));
        field(out, "reason", Some(d.reason()));
        field(out, "tool", Some(&*r.tool).filter(|t| !t.is_empty()));
        field(out, "server", r.server.as_deref());
        out.extend_from_slice(b"\"subject\":{");
        let grant = r
            .grant
            .as_deref()
            .map(|g| self.grant_label(g, r.grant_verified));
        field(out, "grant", grant.as_deref());
        out.extend_from_slice(if r.grant_verified {
            b"\"grant_verified\":true,"
        } else {
            b"\"grant_verified\":false,"
        });
        field(out, "session", r.session.as_deref());
        field(out, "agent", r.agent.as_deref());
        out.pop(); // the last comma
        out.extend_from_slice(b"},\"revision\":\"");
        self.revision(out, d);
        out.extend_from_slice(if d.shadow {
            b"\",\"shadow\":true,\"latency_us\":"
        } else {
            b"\",\"shadow\":false,\"latency_us\":"
        });
        // Microseconds with three decimals, from integer nanoseconds.
        out.extend_from_slice(n.format(r.latency_ns / 1000).as_bytes());
        let frac = r.latency_ns % 1000;
        out.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
        out.extend_from_slice(b",\"reservation\":");
        match d.reservation {
            Some(id) => out.extend_from_slice(n.format(id).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        match d.approval {
            Some(id) => {
                let _ = write!(out, ",\"approval_id\":\"{id}\",");
            }
            None => out.extend_from_slice(b",\"approval_id\":null,"),
        }
        out.extend_from_slice(b"\"args\":");
        match &r.args {
            Some(args) => {
                let paths = log_paths(&d.policy, &r.tool, r.server.as_deref());
                write_arguments(out, args, &paths, &mut self.scratch);
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b',');
    }

    /// The policy revision's text, kept while the policy stays the same.
    fn revision(&mut self, out: &mut Vec<u8>, d: &Decision) {
        let id = Arc::as_ptr(&d.policy) as usize;
        if self.revision.0 != id {
            self.revision = (id, d.policy.revision.to_string());
        }
        out.extend_from_slice(self.revision.1.as_bytes());
    }

    fn grant_label(&mut self, grant: &str, verified: bool) -> Box<str> {
        if verified {
            return grant.into();
        }
        if let Some(label) = self.labels.get(grant) {
            return label.clone();
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(grant.as_bytes());
        let mut label = String::from("hmac-sha256:");
        push_hex(&mut label, &mac.finalize().into_bytes()[..16]);
        let label: Box<str> = label.into();
        if self.labels.len() >= LABEL_CACHE {
            self.labels.clear();
        }
        self.labels.insert(grant.into(), label.clone());
        label
    }
}

/// `"key":"value",` (the value JSON-escaped), or `"key":null,`.
fn field(out: &mut Vec<u8>, key: &str, value: Option<&str>) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    match value {
        Some(v) => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
}

fn push_hex_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// A write that failed: the line is lost; nothing better to do from here than say so.
fn report(result: io::Result<()>) {
    if let Err(e) = result {
        eprintln!("toolgate decision log: {e}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The paths the deciding rules name in `log`: the tool's rule's, then `all_tools`'.
fn log_paths<'p>(policy: &'p CompiledPolicy, tool: &str, server: Option<&str>) -> Vec<&'p ArgPath> {
    let section = policy.section(server);
    let rule = section.tools.lookup(tool).map(|i| &section.rules[*i]);
    [rule, section.all_tools.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(|r| r.log.iter())
        .collect()
}

/// What is written of the arguments: their names, the digest of their canonical JSON, and
/// the values at `clear` paths, as a JSON object appended to `out`.
pub fn write_arguments(out: &mut Vec<u8>, args: &Value, clear: &[&ArgPath], scratch: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"names\":[");
    if let Some(o) = args.as_object() {
        let mut names: Vec<&str> = o.keys().map(String::as_str).collect();
        names.sort_unstable();
        for (i, name) in names.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, name);
        }
    }
    scratch.clear();
    write_canonical(scratch, args);
    out.extend_from_slice(b"],\"digest\":\"");
    push_hex_bytes(out, &Sha256::digest(&scratch[..]));
    out.push(b'"');
    if !clear.is_empty() {
        out.extend_from_slice(b",\"clear\":{");
        let mut first = true;
        for path in clear {
            if let Some(v) = walk(args, &path.segments) {
                if !first {
                    out.push(b',');
                }
                first = false;
                let _ = serde_json::to_writer(&mut *out, &path.text);
                out.push(b':');
                let _ = serde_json::to_writer(&mut *out, v);
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
}

fn walk<'v>(mut v: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    for s in segments {
        v = match s {
            Segment::Key(k) => v.as_object()?.get(k)?,
            Segment::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    Some(v)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    rfc3339_into(&mut out, ms);
    String::from_utf8(out).expect("ASCII")
}

fn rfc3339_into(out: &mut Vec<u8>, ms: u64) {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let digits = |out: &mut Vec<u8>, n: u64, width: u32| {
        for p in (0..width).rev() {
            out.push(b'0' + (n / 10u64.pow(p) % 10) as u8);
        }
    };
    digits(out, year.max(0) as u64, 4);
    out.push(b'-');
    digits(out, month as u64, 2);
    out.push(b'-');
    digits(out, day as u64, 2);
    out.push(b'T');
    digits(out, h, 2);
    out.push(b':');
    digits(out, m, 2);
    out.push(b':');
    digits(out, s, 2);
    out.push(b'.');
    digits(out, milli, 3);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_351_179_346), "2026-11-22T12:39:39.346Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    fn arguments(args: &Value, clear: &[&ArgPath]) -> Value {
        let mut out = Vec::new();
        write_arguments(&mut out, args, clear, &mut Vec::new());
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn arguments_are_named_and_digested_not_written() {
        let args = json!({"to": "acct-9", "amount": 5000, "memo": {"text": "secret"}});
        let amount = ArgPath::parse("args.amount").unwrap();
        let memo = ArgPath::parse("args.memo.text").unwrap();
        let absent = ArgPath::parse("args.nope").unwrap();
        let out = arguments(&args, &[&amount, &memo, &absent]);
        assert_eq!(out["names"], json!(["amount", "memo", "to"]));
        assert_eq!(
            out["clear"],
            json!({"args.amount": 5000, "args.memo.text": "secret"})
        );
        let plain = arguments(&args, &[]);
        assert!(!plain.to_string().contains("acct-9"));
        assert!(plain.get("clear").is_none());
        let canonical = r#"{"amount":5000,"memo":{"text":"secret"},"to":"acct-9"}"#;
        assert_eq!(plain["digest"], hex(&Sha256::digest(canonical.as_bytes())));
        // Key order does not change the digest.
        let reordered = json!({"memo": {"text": "secret"}, "amount": 5000, "to": "acct-9"});
        assert_eq!(arguments(&reordered, &[])["digest"], plain["digest"]);
    }
}
