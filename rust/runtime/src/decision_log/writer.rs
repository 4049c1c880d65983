//! The writer thread: formats each record as a line, chains it, writes it, and notes the
//! records that were dropped.

use super::sink::Sink;
use super::{now_ms, Head, Message, Queued};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolgate_core::json::inert::push_json_string;
use toolgate_core::observing::decision_log::{push_hex, push_hex_bytes, Record};

pub(super) struct Writer {
    pub(super) sink: Sink,
    pub(super) head: Arc<Mutex<Head>>,
    pub(super) key: Vec<u8>,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) written: Arc<AtomicU64>,
    /// The records queued and not yet formatted.
    pub(super) queued: Arc<Queued>,
    /// Drops already noted in the log.
    pub(super) noted_drops: u64,
    /// Grants hashed lately: a few credentials make most calls, and HMAC is the costliest
    /// part of a line.
    pub(super) labels: ahash::AHashMap<Box<str>, Box<str>>,
    /// The last policy seen (its address) and its revision's text.
    pub(super) revision: (usize, String),
}

/// How long the writer lets records gather while they keep coming: senders then find it
/// asleep, not waiting on the queue, and never pay for waking it.
const GATHER: Duration = Duration::from_millis(5);
const LABEL_CACHE: usize = 4096;

impl Writer {
    pub(super) fn run(mut self, rx: Receiver<Message>) {
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
                let size = record.bytes() as u64;
                drop(record);
                self.queued.remove(size);
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
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"\"time_ms\":");
        out.extend_from_slice(n.format(r.at_ms).as_bytes());
        out.extend_from_slice(b",\"time\":\"");
        rfc3339_into(out, r.at_ms);
        out.extend_from_slice(b"\",\"verdict\":\"");
        out.extend_from_slice(r.verdict.as_str().as_bytes());
        out.extend_from_slice(b"\",\"code\":\"");
        out.extend_from_slice(r.code.as_str().as_bytes());
        out.extend_from_slice(b"\",");
        field(out, "rule", Some(r.text(&r.rule)));
        field(out, "reason", Some(r.text(&r.reason)));
        field(out, r.kind.as_str(), r.name.as_deref());
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
        self.revision(out, r);
        out.extend_from_slice(if r.shadow {
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
        match r.reservation {
            Some(id) => out.extend_from_slice(n.format(id).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        match r.approval {
            Some(id) => {
                let _ = write!(out, ",\"approval_id\":\"{id}\",");
            }
            None => out.extend_from_slice(b",\"approval_id\":null,"),
        }
        out.extend_from_slice(b"\"args\":");
        match &r.args {
            Some(args) => out.extend_from_slice(args),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b',');
        if let Some(marks) = &r.marks {
            // Mark names are the policy's own, escaped as any string.
            out.extend_from_slice(b"\"marks\":{\"read\":{");
            for (i, (name, state)) in marks.read.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_string(out, name);
                out.push(b':');
                push_json_string(out, state.as_str());
            }
            out.extend_from_slice(b"},\"set\":[");
            for (i, name) in marks.set.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_string(out, name);
            }
            out.extend_from_slice(b"]},");
        }
        if let Some(step) = r.confirmation {
            let _ = write!(out, "\"confirmation\":\"{step}\",");
        }
        if let Some(drift) = &r.drift {
            out.extend_from_slice(b"\"drift\":{\"kind\":\"");
            out.extend_from_slice(drift.kind.as_str().as_bytes());
            out.extend_from_slice(b"\",\"pinned\":");
            match drift.pinned {
                Some(d) => {
                    let _ = write!(out, "\"{d}\"");
                }
                None => out.extend_from_slice(b"null"),
            }
            let _ = write!(out, ",\"listed\":\"{}\"}},", drift.listed);
        }
        if let Some(ids) = &r.trace {
            out.extend_from_slice(b"\"trace_id\":\"");
            push_hex_bytes(out, &ids.trace_id);
            out.extend_from_slice(b"\",\"span_id\":\"");
            push_hex_bytes(out, &ids.span_id);
            out.extend_from_slice(b"\",");
        }
        if !r.cut.is_empty() {
            out.extend_from_slice(b"\"cut\":{");
            for (i, (field, len)) in r.cut.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "\"{field}\":{len}");
            }
            out.extend_from_slice(b"},");
        }
    }

    /// The policy revision's text, kept while the policy stays the same.
    fn revision(&mut self, out: &mut Vec<u8>, r: &Record) {
        let id = Arc::as_ptr(&r.policy) as usize;
        if self.revision.0 != id {
            self.revision = (id, r.policy.revision.to_string());
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

/// `"key":"value",` (the value JSON-escaped, unsafe characters too: [`push_json_string`]),
/// or `"key":null,`.
fn field(out: &mut Vec<u8>, key: &str, value: Option<&str>) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    match value {
        Some(v) => push_json_string(out, v),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
}

/// A write that failed: the line is lost; nothing better to do from here than say so.
fn report(result: io::Result<()>) {
    if let Err(e) = result {
        eprintln!("toolgate decision log: {e}");
    }
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

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_351_179_346), "2026-11-22T12:39:39.346Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}
