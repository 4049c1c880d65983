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

use crate::approval::canonical_json;
use crate::compile::CompiledPolicy;
use crate::decision::{Decision, Verdict};
use crate::policy::{Path as ArgPath, Segment};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
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

    /// Append one line (`body` is the line's JSON object without `seq`, `id` and `prev`).
    fn append(&mut self, body: Map<String, Value>) -> io::Result<()> {
        if self.rotate_bytes > 0 && self.bytes >= self.rotate_bytes {
            self.rotate()?;
        }
        self.seq += 1;
        let mut line = Map::with_capacity(body.len() + 2);
        line.insert("seq".into(), self.seq.into());
        line.insert("id".into(), format!("{}-{}", self.run, self.seq).into());
        line.extend(body);
        line.insert("prev".into(), std::mem::take(&mut self.prev).into());
        let mut text = serde_json::to_vec(&Value::Object(line)).expect("a map serializes");
        self.prev = hex(&Sha256::digest(&text));
        text.push(b'\n');
        self.out.write_all(&text)?;
        self.bytes += text.len() as u64;
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
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Writer {
    sink: Sink,
    head: Arc<Mutex<Head>>,
    key: Vec<u8>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    /// Drops already noted in the log.
    noted_drops: u64,
}

impl Writer {
    fn run(mut self, rx: Receiver<Message>) {
        loop {
            // Block only with everything written out; take what is queued without waiting.
            let message = match rx.try_recv() {
                Ok(m) => m,
                Err(_) => {
                    report(self.sink.flush());
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => {
                            self.note_drops();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            match message {
                Message::Line(record) => {
                    self.note_drops();
                    let line = self.line(&record);
                    let result = self.sink.append(line);
                    report(result);
                    self.publish_head();
                }
                Message::Sync(reply) => {
                    self.note_drops();
                    report(self.sink.flush());
                    let _ = reply.send(());
                }
            }
        }
        self.note_drops();
        report(self.sink.flush());
    }

    /// A line saying how many records were dropped since the last such line.
    fn note_drops(&mut self) {
        let dropped = self.dropped.load(Relaxed);
        if dropped > self.noted_drops {
            let mut body = Map::new();
            body.insert("time_ms".into(), now_ms().into());
            body.insert("dropped".into(), (dropped - self.noted_drops).into());
            let result = self.sink.append(body);
            report(result);
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

    fn line(&self, r: &Record) -> Map<String, Value> {
        self.written.fetch_add(1, Relaxed);
        let d = &r.decision;
        let mut m = Map::with_capacity(20);
        m.insert("time_ms".into(), r.at_ms.into());
        m.insert("time".into(), rfc3339(r.at_ms).into());
        m.insert("verdict".into(), d.verdict.as_str().into());
        m.insert("code".into(), d.code.as_str().into());
        m.insert("rule".into(), d.rule().into());
        m.insert("reason".into(), d.reason().into());
        m.insert("tool".into(), opt(Some(&*r.tool).filter(|t| !t.is_empty())));
        m.insert("server".into(), opt(r.server.as_deref()));
        m.insert(
            "subject".into(),
            json!({
                "grant": r.grant.as_deref().map(|g| self.grant_label(g, r.grant_verified)),
                "grant_verified": r.grant_verified,
                "session": r.session.as_deref(),
                "agent": r.agent.as_deref(),
            }),
        );
        m.insert("revision".into(), d.policy.revision.to_string().into());
        m.insert("shadow".into(), d.shadow.into());
        m.insert("latency_us".into(), json!((r.latency_ns as f64) / 1000.0));
        m.insert("reservation".into(), d.reservation.into());
        m.insert(
            "approval_id".into(),
            d.approval.map(|a| a.to_string()).into(),
        );
        m.insert(
            "args".into(),
            r.args.as_ref().map_or(Value::Null, |a| {
                arguments(a, &log_paths(&d.policy, &r.tool, r.server.as_deref()))
            }),
        );
        m
    }

    fn grant_label(&self, grant: &str, verified: bool) -> String {
        if verified {
            return grant.to_owned();
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(grant.as_bytes());
        let digest = hex(&mac.finalize().into_bytes());
        format!("hmac-sha256:{}", &digest[..32])
    }
}

/// A write that failed: the line is lost; nothing better to do from here than say so.
fn report(result: io::Result<()>) {
    if let Err(e) = result {
        eprintln!("toolgate decision log: {e}");
    }
}

fn opt(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::String(s.to_owned()))
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
/// the values at `clear` paths.
pub fn arguments(args: &Value, clear: &[&ArgPath]) -> Value {
    let names: Vec<&str> = match args.as_object() {
        Some(o) => {
            let mut names: Vec<&str> = o.keys().map(String::as_str).collect();
            names.sort_unstable();
            names
        }
        None => Vec::new(),
    };
    let canonical = canonical_json(args);
    let mut out = Map::new();
    out.insert("names".into(), json!(names));
    out.insert(
        "digest".into(),
        hex(&Sha256::digest(canonical.as_bytes())).into(),
    );
    if !clear.is_empty() {
        let mut values = Map::new();
        for path in clear {
            if let Some(v) = walk(args, &path.segments) {
                values.insert(path.text.clone(), v.clone());
            }
        }
        out.insert("clear".into(), Value::Object(values));
    }
    Value::Object(out)
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
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_351_179_346), "2026-11-22T12:39:39.346Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
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
        // Key order does not change the digest.
        let reordered = json!({"memo": {"text": "secret"}, "amount": 5000, "to": "acct-9"});
        assert_eq!(arguments(&reordered, &[])["digest"], plain["digest"]);
    }
}
