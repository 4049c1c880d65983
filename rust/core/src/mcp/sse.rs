//! Splitting a `text/event-stream` body (MCP Streamable HTTP's streamed answers) into
//! events as its bytes arrive, in chunks cut anywhere.
//!
//! The WHATWG event stream format: lines end with CRLF, LF or CR; an empty line ends an
//! event; a line `data:VALUE` adds VALUE (less one leading space) to the event's data,
//! several data lines joined by LF; lines starting with `:` are comments; other fields
//! (`event`, `id`, `retry`) are kept as they are. A CR at the end of a chunk may be the
//! first half of a CRLF, so it is only read once the next byte (or the end) is known.

/// A UTF-8 byte order mark, which may open a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Largest event the splitter holds; a longer one is refused rather than buffered.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's bytes as received, up to and including the empty line that ends it.
    pub raw: Vec<u8>,
    /// Its data lines joined, or `None` for an event without any (a comment, a keep-alive,
    /// an `id:`-only event).
    pub data: Option<Vec<u8>>,
    /// The first line that is neither empty, a comment nor one of the format's fields
    /// (`data`, `event`, `id`, `retry`): clients skip such lines, so bytes that are not an
    /// event stream at all (a JSON body, a compressed one) read as a few of them. Or the
    /// first line other than data that some clients split in two ([`splits_elsewhere`]).
    pub stray: Option<Vec<u8>>,
}

impl Event {
    /// The event with its data replaced by `data`: its other fields are kept in their order,
    /// and each line of `data` goes in a `data:` line of its own ([`data_lines`]).
    pub fn with_data(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len().max(data.len() + 16));
        // A byte order mark opening the stream stays where it is; the line after it is read
        // without it, as clients read it.
        let body = match self.raw.strip_prefix(BOM) {
            Some(rest) => {
                out.extend_from_slice(BOM);
                rest
            }
            None => &self.raw,
        };
        for line in lines(body) {
            if !line.is_empty() && field(line).0 != b"data" {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        data_lines(&mut out, data);
        out.push(b'\n');
        out
    }
}

/// `message` (one JSON-RPC message) as an event of type `message`, as MCP servers send them.
pub fn message_event(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 32);
    out.extend_from_slice(b"event: message\n");
    data_lines(&mut out, message);
    out.push(b'\n');
    out
}

/// Each line of `data` in a `data:` line of its own (one holding a line break would end the
/// field there: a client would read the message cut short). A client joins them with LF, so
/// a JSON text's line breaks come back as white space.
fn data_lines(out: &mut Vec<u8>, data: &[u8]) {
    let mut from = 0;
    for at in memchr::memchr2_iter(b'\n', b'\r', data).chain([data.len()]) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&data[from..at]);
        out.push(b'\n');
        from = at + 1;
    }
}

/// Where the first line end (LF or CR) in `bytes` is.
fn line_end(bytes: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', bytes)
}

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong;

/// An event stream read incrementally.
#[derive(Debug, Default)]
pub struct EventSplitter {
    pending: Vec<u8>,
    /// Where the next unread line of `pending` starts.
    line_start: usize,
    /// How far `pending` has been searched for the end of that line: each byte is looked at
    /// once, however small the chunks a long line comes in.
    searched: usize,
    /// A UTF-8 byte order mark, which may open a stream, has been looked for.
    started: bool,
}

impl EventSplitter {
    /// Bytes held for events not yet complete.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Add `chunk`, returning the events it completes. With `end`, the stream is over: a
    /// last event left without its empty line is returned too (its bytes must not vanish).
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> Result<Vec<Event>, TooLong> {
        self.pending.extend_from_slice(chunk);
        if !self.started && (self.pending.len() >= 3 || end) {
            self.started = true;
            if self.pending.starts_with(BOM) {
                // Kept in the raw bytes of the first event, skipped for reading it.
                self.line_start = 3;
            }
        }
        let mut events = Vec::new();
        if !self.started {
            return Ok(events);
        }
        let mut consumed = 0;
        loop {
            let from = self.line_start.max(self.searched);
            let found = line_end(&self.pending[from..]);
            let Some(found) = found else {
                self.searched = self.pending.len();
                break;
            };
            let rest = &self.pending[self.line_start..];
            let at = from + found - self.line_start;
            let end_len = match (rest[at], rest.get(at + 1)) {
                (b'\r', Some(b'\n')) => 2,
                // A CR last in what has arrived: an LF may follow in the next chunk.
                (b'\r', None) if !end => {
                    self.searched = from + found;
                    break;
                }
                _ => 1,
            };
            let empty = at == 0;
            self.line_start += at + end_len;
            if empty {
                events.push(Event::read(&self.pending[consumed..self.line_start]));
                consumed = self.line_start;
            }
        }
        if end && consumed < self.pending.len() {
            events.push(Event::read(&self.pending[consumed..]));
            consumed = self.pending.len();
            // Its last line had no end: no line starts after it.
            self.line_start = consumed;
        }
        self.pending.drain(..consumed);
        // A stream that stays open keeps no room for its largest event.
        if self.pending.capacity() > (64 << 10).max(4 * self.pending.len()) {
            self.pending.shrink_to(2 * self.pending.len());
        }
        self.line_start -= consumed;
        self.searched = self.searched.saturating_sub(consumed);
        if self.pending.len() > MAX_EVENT_BYTES {
            return Err(TooLong);
        }
        Ok(events)
    }
}

impl Event {
    fn read(raw: &[u8]) -> Event {
        let mut data: Option<Vec<u8>> = None;
        let mut stray = None;
        let body = raw.strip_prefix(BOM).unwrap_or(raw);
        for line in lines(body) {
            let (name, value) = field(line);
            let known =
                line.is_empty() || matches!(name, b"" | b"data" | b"event" | b"id" | b"retry");
            // A data line is a JSON message, read strictly: one split inside a string reads
            // as no message. Any other line goes on as it came.
            let split = name != b"data" && splits_elsewhere(line);
            if (!known || split) && stray.is_none() {
                stray = Some(line.to_vec());
            }
            if name == b"data" && !line.is_empty() {
                match &mut data {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(value);
                    }
                    None => data = Some(value.to_vec()),
                }
            }
        }
        Event {
            raw: raw.to_vec(),
            data,
            stray,
        }
    }
}

/// Whether `line` holds a character some clients end a line at besides CR and LF: Python's
/// `str.splitlines` (httpx's `aiter_lines`, which event-stream readers have been built on)
/// also splits at VT, FF, FS, GS, RS, NEL, LS and PS, so a comment holding one could hide an
/// event from the filter and show it to such a client.
fn splits_elsewhere(line: &[u8]) -> bool {
    line.iter().enumerate().any(|(i, &b)| match b {
        0x0b | 0x0c | 0x1c..=0x1e => true,
        0xc2 => line.get(i + 1) == Some(&0x85),
        0xe2 => matches!(line.get(i + 1..i + 3), Some([0x80, 0xa8 | 0xa9])),
        _ => false,
    })
}

/// The lines of `raw`, without their ends (CRLF, LF or CR).
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let at = line_end(rest).unwrap_or(rest.len());
        let line = &rest[..at];
        let end_len = match (rest.get(at), rest.get(at + 1)) {
            (Some(b'\r'), Some(b'\n')) => 2,
            (Some(_), _) => 1,
            (None, _) => 0,
        };
        rest = &rest[at + end_len..];
        Some(line)
    })
}

/// A line's field name and value (`name:value`, one leading space of the value dropped; a
/// line without a colon is a field with an empty value; a comment's name is empty).
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(stream: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut s = EventSplitter::default();
        let mut events = Vec::new();
        let mut from = 0;
        for &cut in cuts {
            events.extend(s.feed(&stream[from..cut], false).unwrap());
            from = cut;
        }
        events.extend(s.feed(&stream[from..], true).unwrap());
        events
    }

    #[test]
    fn reads_events_with_every_line_ending() {
        let stream =
            b"event: message\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\nid: 7\rdata:x\rdata: y\r\r";
        let events = split_all(stream, &[]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(events[1].data, None);
        assert_eq!(events[2].data.as_deref(), Some(&b"x\ny"[..]));
        let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(joined, stream);
    }

    #[test]
    fn a_trailing_cr_waits_for_the_next_byte() {
        let mut s = EventSplitter::default();
        assert!(s.feed(b"data: a\r\n\r", false).unwrap().is_empty());
        let events = s.feed(b"\n", false).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].raw, b"data: a\r\n\r\n");
    }

    #[test]
    fn replaces_data_after_a_byte_order_mark_too() {
        let mut s = EventSplitter::default();
        let events = s.feed(b"\xEF\xBB\xBFdata: {\"x\":1}\n\n", true).unwrap();
        assert_eq!(events[0].data.as_deref(), Some(&b"{\"x\":1}"[..]));
        assert_eq!(events[0].with_data(b"{}"), b"\xEF\xBB\xBFdata: {}\n\n");
    }

    #[test]
    fn replaces_data_keeping_the_other_fields() {
        let e = Event::read(b"event: message\nid: 3\ndata: {\"x\":\ndata: 1}\n\n");
        assert_eq!(e.with_data(b"{}"), b"event: message\nid: 3\ndata: {}\n\n");
    }

    #[test]
    fn data_of_several_lines_goes_out_as_as_many_data_lines() {
        let e = Event::read(b"id: 3\ndata: x\n\n");
        let out = e.with_data(b"{\"a\":\n1}");
        assert_eq!(out, b"id: 3\ndata: {\"a\":\ndata: 1}\n\n");
        assert_eq!(Event::read(&out).data.as_deref(), Some(&b"{\"a\":\n1}"[..]));
    }

    #[test]
    fn a_long_line_in_tiny_chunks_is_searched_once() {
        // Searched again from its start for every chunk, this line would take about 5 * 10^11
        // byte comparisons; once, 10^6.
        let mut s = EventSplitter::default();
        assert!(s.feed(b"data: ", false).unwrap().is_empty());
        for _ in 0..1 << 20 {
            assert!(s.feed(b"a", false).unwrap().is_empty());
        }
        let events = s.feed(b"\n\n", true).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.as_ref().map(Vec::len), Some(1 << 20));
    }

    #[test]
    fn notes_lines_that_are_no_field_of_the_format() {
        let e = Event::read(b": hi\nevent: m\nid: 1\nretry: 5\ndata\n\n");
        assert_eq!(e.stray, None);
        for raw in [
            &b"{\"jsonrpc\":\"2.0\"}\n\n"[..],
            b"Data: x\n\n",
            b"\x1f\x8b\x08\n\n",
        ] {
            assert!(Event::read(raw).stray.is_some(), "{raw:?}");
        }
    }

    #[test]
    fn refuses_an_event_over_the_limit() {
        let mut s = EventSplitter::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(s.feed(&big, false), Err(TooLong));
    }

    proptest! {
        /// Data written into an event reads back as it was, whatever lines it has.
        #[test]
        fn data_reads_back_as_written(
            data in prop::collection::vec(prop::sample::select(b"a{}: \n".to_vec()), 0..40),
        ) {
            let e = Event::read(b"event: message\ndata: x\n\n");
            prop_assert_eq!(Event::read(&e.with_data(&data)).data, Some(data));
        }

        /// Any bytes at all, cut anywhere, come out as events whose bytes are the input's
        /// (none lost, none made up), and the splitter never fails on them.
        #[test]
        fn any_bytes_split_into_their_own_bytes(
            stream in prop::collection::vec(prop::sample::select(b"ab:\r\n \xef\xbb\xbf".to_vec()), 0..64),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let joined: Vec<u8> = split_all(&stream, &cuts).iter().flat_map(|e| e.raw.clone()).collect();
            prop_assert_eq!(joined, stream);
        }

        /// Wherever the chunks are cut, the same events come out, and together they are
        /// the stream's bytes exactly.
        #[test]
        fn chunking_does_not_change_events(
            events in prop::collection::vec(
                (prop::sample::select(vec!["\n", "\r\n", "\r"]),
                 prop::collection::vec("[a-z{}\":, ]{0,12}", 0..4),
                 any::<bool>()),
                0..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut stream = Vec::new();
            for (eol, datas, comment) in &events {
                if *comment {
                    stream.extend_from_slice(format!(": c{eol}").as_bytes());
                }
                for d in datas {
                    stream.extend_from_slice(format!("data: {d}{eol}").as_bytes());
                }
                stream.extend_from_slice(eol.as_bytes());
            }
            let whole = split_all(&stream, &[]);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let chunked = split_all(&stream, &cuts);
            prop_assert_eq!(&chunked, &whole);
            let joined: Vec<u8> = chunked.iter().flat_map(|e| e.raw.clone()).collect();
            prop_assert_eq!(joined, stream);
        }
    }
}
