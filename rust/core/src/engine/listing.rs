//! Filtering a server's list answers (`tools/list`, `resources/list`,
//! `resources/templates/list`, `prompts/list`) on their way to the agent: the tools this
//! caller can never call, and the resources and prompts it can never get
//! ([`super::visibility`]), are taken out, so the agent neither tries them nor learns that
//! they exist.
//!
//! Nothing passes unread: whatever the HTTP status, the body must be empty or read as
//! JSON-RPC messages, each answer among them filtered. Its framing (one JSON message or an
//! event stream) is read from its first bytes ([`Framing::sniff`]), not from its
//! `content-type`, and what goes to the agent is always an event stream, which every MCP
//! client reads (a client must accept either answer to a `POST`, and a `GET` stream is one):
//! a JSON answer goes on as one `message` event. So how a client reads the bytes is fixed by
//! the proxy, not by the server: the answer's media type is `text/event-stream` with no
//! charset (an event stream is UTF-8), and it has no content encoding. A server that names
//! another charset (in UTF-7 or EBCDIC, bytes the filter reads as a comment would be an event
//! to a client decoding by it) or compresses its answer changes nothing a client reads.
//! Fail closed: an answer that cannot be read as one JSON-RPC message (bad JSON, keys a
//! case-insensitive client reads differently, an entry without a string name (`name`, or
//! `uri`/`uriTemplate` for resources), one name listed with two definitions, a body over the limit, bytes that are neither JSON nor
//! events, a compressed body) is not forwarded: the agent gets a JSON-RPC error event
//! instead, and none of its tools is recorded. Pagination is untouched (`nextCursor` is kept, even when a page is emptied), and an answer that says how it may be cached (`cacheScope`, MCP 2026-07-28) is
//! marked `"private"` when the filtering depended on who asked.
//!
//! Two kinds of stream: the answer to one list request (its id known: that answer is
//! filtered, and must list what the method lists; the stream ends there), and a stream that
//! answers no request of its own (a `GET` stream, where a resumable server replays earlier
//! answers after `Last-Event-ID`): there every answer that lists something is filtered, and
//! the stream goes on.
//!
//! A server matches answers to requests by id, per session, and a client chooses its ids: a
//! `tools/list` and another request sent with the same id at once could have the list's
//! answer go out as the other request's, on a route this filter does not read. So the list
//! request reaches the server under an id of the proxy's own, which no client can guess
//! ([`ListRequest`]), and the answer goes back to the agent under the agent's id.

use super::visibility::Visibility;
use crate::definitions::listed::ListedTool;
use crate::json::strict;
use crate::kind::Listed;
use crate::mcp::answer::{case_variant, error_message, Framing};
use crate::mcp::known_answers::{KeptAnswer, KnownAnswers};
use crate::mcp::spans::{self, known, Keys, Kind, Listing};
use crate::mcp::sse::{message_event, EventSplitter, MAX_EVENT_BYTES};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// JSON-RPC's "internal error": the proxy could not pass the answer on.
pub const INTERNAL_ERROR: i64 = -32603;
/// Why a list request's cursor is refused: the same whatever it names.
pub const INVALID_CURSOR: &str = "the cursor is not one this caller was given";

const MESSAGE_KEYS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
/// A result's keys besides the lists' members (whose case variants are refused too).
const RESULT_KEYS: [&str; 4] = ["nextCursor", "cacheScope", "ttlMs", "_meta"];
/// A tool's members a client reads (MCP's schema): none may have a spelling that differs
/// only by case.
const TOOL_KEYS: [&str; 9] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
    "icons",
    "execution",
    "_meta",
];
/// A resource's, a template's and a prompt's members a client reads (MCP's schema).
const RESOURCE_KEYS: [&str; 8] = [
    "uri",
    "name",
    "title",
    "description",
    "mimeType",
    "size",
    "annotations",
    "icons",
];
const TEMPLATE_KEYS: [&str; 7] = [
    "uriTemplate",
    "name",
    "title",
    "description",
    "mimeType",
    "annotations",
    "icons",
];
const PROMPT_KEYS: [&str; 5] = ["name", "title", "description", "arguments", "icons"];
/// A task's members (the task extension's schema).
const TASK_KEYS: [&str; 7] = [
    "taskId",
    "status",
    "statusMessage",
    "createdAt",
    "lastUpdatedAt",
    "ttl",
    "pollInterval",
];
/// The keys of an entry of `listed`.
fn entry_keys(listed: Listed) -> &'static [&'static str] {
    match listed {
        Listed::Tools => &TOOL_KEYS,
        Listed::Resources => &RESOURCE_KEYS,
        Listed::ResourceTemplates => &TEMPLATE_KEYS,
        Listed::Prompts => &PROMPT_KEYS,
        Listed::Tasks => &TASK_KEYS,
    }
}

/// The keys the filter knows at each level, of which a case variant is refused.
pub const KEYS: Keys = Keys {
    message: &known(MESSAGE_KEYS),
    result: &known(RESULT_KEYS),
    entry: [
        &known(TOOL_KEYS),
        &known(RESOURCE_KEYS),
        &known(TEMPLATE_KEYS),
        &known(PROMPT_KEYS),
        &known(TASK_KEYS),
    ],
};

/// What filtering one answer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListReport {
    /// Answers that list something that were read (and filtered).
    pub lists: usize,
    pub shown: usize,
    pub removed: usize,
    /// Some tool's visibility depended on the caller.
    pub per_subject: bool,
    /// Why the answer was refused: the agent got a JSON-RPC error in its place.
    pub refused: Option<String>,
}

/// A `tools/list` request as the server gets it: under an id of the proxy's own.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    /// The body to send on.
    pub body: Vec<u8>,
    /// The id the server answers.
    pub upstream_id: Value,
}

/// Opens a sealed cursor for the caller: the server's cursor, or `None`.
pub type CursorOpener<'a> = &'a dyn Fn(&str) -> Option<String>;
/// Seals the server's cursor for the caller ([`crate::owners::cursors`]).
pub type CursorSealer = Box<dyn Fn(&str) -> String + Send>;

impl ListRequest {
    /// `body`, the request whose id the proxy's check read as `id`, with a fresh id in its place;
    /// with `cursors`, its `params.cursor` (one the proxy sealed) opened again for the server
    /// ([`crate::owners::cursors`]). Refused if it is not that request (the check and the body
    /// disagree), or its cursor does not open for this caller.
    pub fn rewrite(
        body: &[u8],
        id: &Value,
        cursors: Option<CursorOpener<'_>>,
    ) -> Result<ListRequest, String> {
        let Ok(Value::Object(mut message)) = strict::parse(body) else {
            return Err("the request cannot be read as the check read it".into());
        };
        if message.get("id") != Some(id) {
            return Err("the request's id is not the one the check read".into());
        }
        if let Some(open) = cursors {
            if let Some(Value::Object(params)) = message.get_mut("params") {
                if let Some(cursor) = params.get_mut("cursor") {
                    let opened = cursor.as_str().and_then(open);
                    let Some(server_cursor) = opened else {
                        return Err(INVALID_CURSOR.into());
                    };
                    *cursor = Value::String(server_cursor);
                }
            }
        }
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).expect("the system's random source works");
        let mut upstream_id = String::from("toolgate-");
        crate::hex::push(&mut upstream_id, &random);
        let upstream_id = Value::String(upstream_id);
        message.insert("id".into(), upstream_id.clone());
        let body = serde_json::to_vec(&message).expect("JSON values always serialize");
        Ok(ListRequest { body, upstream_id })
    }
}

/// One answer stream, filtered as its body arrives.
pub struct ListFilter<F> {
    /// Read from the body's first bytes other than whitespace; until then, `body` holds the
    /// whitespace.
    framing: Option<Framing>,
    /// The request answered, by the id the server got; `None` for a stream that answers no
    /// request of its own.
    id: Option<Value>,
    /// What the answer to the request lists (its method's list); `None`: whatever it lists.
    listed: Option<Listed>,
    /// The answer lists nothing: it is only made the caller's own ([`Self::private`]).
    private: bool,
    /// The agent's own id for that request, written back in place of `id`.
    reply_id: Option<Value>,
    /// Answers read before, and `id` as serde_json writes it (how they are found again).
    known: Option<(Arc<KnownAnswers>, Vec<u8>)>,
    /// What the entries are judged under where every caller's judgement is the same
    /// ([`Self::judging_alike`]).
    judged_alike: Option<Box<[u8]>>,
    visibility: F,
    body: Vec<u8>,
    /// The JSON body went over the limit: what arrives is dropped, the answer refused.
    overflow: bool,
    events: EventSplitter,
    /// The answer has been passed on (or refused): nothing after it is, or is held.
    finished: bool,
    /// Seals a `tasks/list` answer's `nextCursor` for the caller ([`crate::owners::cursors`]).
    seal_cursor: Option<CursorSealer>,
    pub report: ListReport,
}

impl<F: FnMut(Listed, &str, &ListedTool<'_>) -> Visibility> ListFilter<F> {
    /// A filter for the answer to request `id`, which lists `listed` (`None`: every answer
    /// on the stream, whatever it lists), deciding each entry with `visibility`.
    pub fn new(id: Option<Value>, listed: Option<Listed>, visibility: F) -> Self {
        ListFilter {
            framing: None,
            id,
            listed,
            private: false,
            reply_id: None,
            known: None,
            judged_alike: None,
            visibility,
            body: Vec::new(),
            overflow: false,
            events: EventSplitter::default(),
            finished: false,
            seal_cursor: None,
            report: ListReport::default(),
        }
    }

    /// A `tasks/list` answer's `nextCursor` goes to the agent as `seal` makes it of the
    /// server's, which must then be a string.
    pub fn sealing_cursors(mut self, seal: CursorSealer) -> Self {
        self.seal_cursor = Some(seal);
        self
    }

    /// The answer to the request (a `resources/read`'s) lists nothing and is not filtered: if
    /// it says it may be cached for everyone (`cacheScope`), it is marked `"private"`, the
    /// caller's own. It is read as strictly as a list, and refused as one is.
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// The request was sent on under another id ([`ListRequest`]): the agent gets its answer
    /// under `agent_id`.
    pub fn replying_as(mut self, agent_id: Value) -> Self {
        self.reply_id = Some(agent_id);
        self
    }

    /// The answer to the request is looked up in `known` before it is read, and kept there
    /// once read: the same answer under another request's id is not read again. Only for a
    /// request whose id is a string or an integer the strict reader reads (toolgate's own are
    /// strings): another id's text could read otherwise than the text it replaces. (A stream
    /// that answers no request of its own reads every answer.)
    pub fn remembering(mut self, known: Arc<KnownAnswers>) -> Self {
        let plain = |id: &Value| match id {
            Value::String(_) => true,
            Value::Number(n) => n
                .as_i64()
                .is_some_and(|n| n.unsigned_abs() <= strict::MAX_SAFE_INTEGER),
            _ => false,
        };
        if let Some(id) = self.id.as_ref().filter(|id| plain(id)) {
            let text = serde_json::to_vec(id).expect("JSON values always serialize");
            self.known = Some((known, text));
        }
        self
    }

    /// Take the next part of the body (`end`: the last); return what to send on now.
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        if self.finished {
            // Nothing more goes on, so nothing more is read or held (a stream may go on).
            return Vec::new();
        }
        if let Some(framing) = self.framing {
            return self.feed_in(framing, chunk, end);
        }
        let framing = match Framing::sniff(chunk) {
            Some(framing) => framing,
            // Only whitespace to the end, or more of it than a message may hold: read as JSON,
            // which passes an empty body and refuses the rest.
            None if end || self.body.len() + chunk.len() > MAX_EVENT_BYTES => Framing::Json,
            None => {
                self.body.extend_from_slice(chunk);
                return Vec::new();
            }
        };
        self.framing = Some(framing);
        if framing == Framing::EventStream && !self.body.is_empty() {
            // The whitespace held goes to the event reader first.
            let mut held = std::mem::take(&mut self.body);
            held.extend_from_slice(chunk);
            return self.feed_in(framing, &held, end);
        }
        self.feed_in(framing, chunk, end)
    }

    fn feed_in(&mut self, framing: Framing, chunk: &[u8], end: bool) -> Vec<u8> {
        let out = match framing {
            Framing::Json => self.feed_json(chunk, end),
            Framing::EventStream => self.feed_events(chunk, end),
        };
        if self.finished {
            self.drop_held();
        }
        out
    }

    /// What was held after the answer goes nowhere.
    fn drop_held(&mut self) {
        self.events = EventSplitter::default();
        self.body = Vec::new();
    }

    /// Stop reading: the answer is refused (in the body's framing) unless it has gone on,
    /// and nothing more is held or passed. Empty if nothing is left to say.
    pub fn give_up(&mut self, why: String) -> Vec<u8> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        self.drop_held();
        message_event(&self.refuse(why))
    }

    /// Every caller's judgement of the answer's entries is the same under `policy` (a
    /// compiled policy's [generation](crate::policy::compile::CompiledPolicy::generation))
    /// for `server`, and judging them records nothing (nothing pinned, no definition read):
    /// an answer found among those read before keeps the entries it kept when judged so
    /// before, unless some entry's judgement depended on its caller. Only for a request that
    /// lists one kind of entry, not tasks (each caller's own).
    pub fn judging_alike(mut self, policy: u64, server: Option<&str>) -> Self {
        let Some(listed) = self.listed.filter(|l| *l != Listed::Tasks) else {
            return self;
        };
        let mut under = policy.to_le_bytes().to_vec();
        under.push(listed as u8);
        if let Some(server) = server {
            under.push(b'/');
            under.extend_from_slice(server.as_bytes());
        }
        self.judged_alike = Some(under.into());
        self
    }

    /// Bytes held until the rest of a message arrives.
    pub fn held(&self) -> usize {
        self.body.len() + self.events.held()
    }

    fn feed_json(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        if !self.overflow {
            self.body.extend_from_slice(chunk);
            if self.body.len() > MAX_EVENT_BYTES {
                self.overflow = true;
                self.body = Vec::new();
            }
        }
        if !end {
            return Vec::new();
        }
        let body = std::mem::take(&mut self.body);
        self.finished = true;
        if self.overflow {
            let why = format!("the answer is over {MAX_EVENT_BYTES} bytes");
            return message_event(&self.refuse(why));
        }
        // An empty body lists nothing (an accepted notification, a 204, a bare error status).
        if body.is_empty() {
            return body;
        }
        let message = match self.message(&body) {
            Ok(Some(filtered)) => filtered,
            Ok(None) => body,
            Err(why) => self.refuse(why),
        };
        message_event(&message)
    }

    fn feed_events(&mut self, chunk: &[u8], end: bool) -> Vec<u8> {
        let events = match self.events.feed(chunk, end) {
            Ok(events) => events,
            Err(_) => {
                self.finished = true;
                let why = format!("an event of the answer is over {MAX_EVENT_BYTES} bytes");
                return message_event(&self.refuse(why));
            }
        };
        let mut out = Vec::new();
        for e in events {
            if self.finished {
                // The server should have closed the stream after its answer.
                continue;
            }
            let outcome = match (&e.stray, &e.data) {
                (Some(line), _) => Err(format!(
                    "the event stream has a line that is no field of the format, or that \
                     some clients read as two: {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(40)])
                )),
                // No data (a comment, an `id:` for resuming, a keep-alive): no message.
                (None, None) => Ok(None),
                (None, Some(data)) if data.trim_ascii().is_empty() => Ok(None),
                (None, Some(data)) => self.message(data),
            };
            match outcome {
                Ok(Some(filtered)) => out.extend_from_slice(&e.with_data(&filtered)),
                Ok(None) => out.extend_from_slice(&e.raw),
                Err(why) => {
                    self.finished = true;
                    out.extend_from_slice(&message_event(&self.refuse(why)));
                }
            }
        }
        out
    }

    /// Read one message of the stream: `None` to pass it on as it is, or the filtered
    /// message. A request or notification of the server's passes; an answer is filtered.
    fn message(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let (message, kept) = match self.read(bytes)? {
            (m, kept) if m.object => (m, kept),
            _ => return Err("a message of the answer is not a JSON object".into()),
        };
        if let Some(key) = &message.variant {
            return Err(format!(
                "the answer's key {key:?} differs from a JSON-RPC key only by case"
            ));
        }
        let answers = message.result.is_some() || message.error.is_some();
        if message.method {
            if answers {
                return Err("a message carries both a method and a result or error".into());
            }
            return Ok(None);
        }
        if self.id.is_some() {
            // The answer to the request: it ends what this stream has to carry.
            self.finished = true;
        }
        let answer = Answer {
            bytes,
            id: message.id.clone().map(|span| {
                let id = serde_json::from_slice(&bytes[span.clone()]).expect("read strictly");
                (span, id)
            }),
            kept,
        };
        match (message.result, message.error) {
            // An error lists no tools: it goes on as it is, whatever id it names (under the
            // agent's own id when it answers the request).
            (None, Some(Kind::Object)) => Ok(self.reply(&answer, Vec::new())),
            (Some(Kind::Object), None) => self.result(&answer, &message.listing),
            _ => Err("the answer must carry either a result object or an error object".into()),
        }
    }

    /// One message as the strict reader finds it: found again if it is an answer read before
    /// under another id, else read (and kept); and the answer as kept, if it is.
    fn read(&self, bytes: &[u8]) -> Result<(spans::Message, Option<KeptAnswer>), String> {
        let known = self.known.as_ref();
        if let Some((message, kept)) = known.and_then(|(known, id)| known.recall(bytes, id)) {
            return Ok((message, Some(kept)));
        }
        let message =
            spans::read(bytes, &KEYS).map_err(|e| format!("the answer cannot be read: {e}"))?;
        let kept = known.and_then(|(known, id)| known.keep(bytes, &message, id));
        Ok((message, kept))
    }

    /// The answer as it goes to the agent, with `edits`: `None` (as it came) unless it was
    /// edited or answers the request under the proxy's id, which the agent's own replaces.
    fn reply(&self, answer: &Answer<'_>, mut edits: Vec<Edit>) -> Option<Vec<u8>> {
        if let (Some(agent), Some(ours), Some((span, id))) = (&self.reply_id, &self.id, &answer.id)
        {
            if id == ours {
                let agent = serde_json::to_vec(agent).expect("JSON values always serialize");
                edits.push((span.clone(), agent));
            }
        }
        (!edits.is_empty()).then(|| edit(answer.bytes, edits))
    }

    /// A result: for the request's answer it must list what its method lists; on a stream
    /// of earlier answers, only one that lists something is filtered.
    fn result(
        &mut self,
        answer: &Answer<'_>,
        listing: &Listing,
    ) -> Result<Option<Vec<u8>>, String> {
        let id = answer.id.as_ref().map(|(_, id)| id);
        match &self.id {
            Some(ours) if id != Some(ours) => Err(format!(
                "the answer's id {} is not the request's {ours}",
                id.unwrap_or(&Value::Null),
            )),
            _ if self.private => {
                // A client reading keys as a case-insensitive decoder does could take
                // `"CacheScope": "public"` for the hint.
                if let Some(key) = &listing.variant {
                    return Err(variant_in_result(key));
                }
                let edits = match &listing.cache_scope {
                    Some((span, false)) => vec![(span.clone(), b"\"private\"".to_vec())],
                    _ => Vec::new(),
                };
                Ok(self.reply(answer, edits))
            }
            None if listing.entries.is_none() && !listing.member_variant => Ok(None),
            _ => self.filter(answer, listing),
        }
    }

    fn filter(
        &mut self,
        answer: &Answer<'_>,
        listing: &Listing,
    ) -> Result<Option<Vec<u8>>, String> {
        if let Some(key) = &listing.variant {
            return Err(variant_in_result(key));
        }
        if listing.lists_twice {
            return Err(LISTS_TWICE.into());
        }
        let tools = match (&listing.entries, self.listed) {
            (Some((listed, Ok(tools))), None) => (*listed, tools),
            (Some((listed, Ok(tools))), Some(expected)) if *listed == expected => (expected, tools),
            (_, expected) => return Err(no_list(expected)),
        };
        let (listed, tools) = tools;
        let entries = tools.iter().map(|t| Entry {
            tool: t
                .object
                .then(|| ListedTool::from_text(&answer.bytes[t.span.clone()])),
            variant: t.variant.as_deref(),
            name: t.name.as_ref().map(|name| name.text(answer.bytes)),
        });
        let keep = self.judged(answer, listed, entries)?;
        let mut edits = Vec::new();
        if keep.iter().any(|k| !k) {
            let (first, last) = (&tools[0].span, &tools[tools.len() - 1].span);
            let mut kept = Vec::with_capacity(last.end - first.start);
            for (t, _) in tools.iter().zip(keep.iter()).filter(|(_, k)| **k) {
                if !kept.is_empty() {
                    kept.push(b',');
                }
                kept.extend_from_slice(&answer.bytes[t.span.clone()]);
            }
            edits.push((first.start..last.end, kept));
        }
        if let Some((span, false)) = &listing.cache_scope {
            if self.report.per_subject {
                edits.push((span.clone(), b"\"private\"".to_vec()));
            }
        }
        if let (Some(seal), Some(span), Listed::Tasks) =
            (&self.seal_cursor, &listing.next_cursor, listed)
        {
            let Ok(Value::String(cursor)) = serde_json::from_slice(&answer.bytes[span.clone()])
            else {
                return Err("the answer's nextCursor is not a string".into());
            };
            let sealed = serde_json::to_vec(&seal(&cursor)).expect("strings serialize");
            edits.push((span.clone(), sealed));
        }
        Ok(self.reply(answer, edits))
    }

    /// Which `entries` of `answer` (a list of `listed`) the caller sees: as judged under the
    /// same before, where every caller's judgement was the same; else judged now.
    fn judged<'t>(
        &mut self,
        answer: &Answer<'_>,
        listed: Listed,
        entries: impl ExactSizeIterator<Item = Entry<'t>>,
    ) -> Result<Arc<[bool]>, String> {
        let alike = (self.judged_alike.as_deref()).zip(answer.kept.as_ref());
        if let Some(keep) = alike.and_then(|(under, kept)| kept.judged(under, entries.len())) {
            count(&mut self.report, &keep);
            return Ok(keep);
        }
        let (keep, per_subject) = judge(listed, entries, &mut self.visibility, &mut self.report)?;
        let keep: Arc<[bool]> = keep.into();
        if let (false, Some((under, kept))) = (per_subject, alike) {
            kept.note_judged(under, Arc::clone(&keep));
        }
        Ok(keep)
    }

    /// The JSON-RPC error sent instead of a refused answer.
    fn refuse(&mut self, why: String) -> Vec<u8> {
        let method = match (self.private, self.listed) {
            (true, _) => "resources/read",
            (false, listed) => listed.map_or("list", Listed::method),
        };
        let message =
            format!("the server's {method} answer was refused by the proxy's policy check: {why}");
        self.report.refused = Some(why);
        let id = self.reply_id.as_ref().or(self.id.as_ref());
        error_message(id.unwrap_or(&Value::Null), INTERNAL_ERROR, &message)
    }
}

/// Filter one list result (of `listed`) in place, deciding each entry (by its name and
/// object) with `visibility` and counting in `report`: true if it changed. Refused (why) when
/// it cannot be read as such a list with names, as a client would read it.
pub fn filter_result<F: FnMut(Listed, &str, &ListedTool<'_>) -> Visibility>(
    listed: Listed,
    result: &mut Map<String, Value>,
    mut visibility: F,
    report: &mut ListReport,
) -> Result<bool, String> {
    if let Some(key) = case_variant(result, &RESULT_KEYS) {
        return Err(variant_in_result(key));
    }
    let members = Listed::ALL.map(|l| l.member());
    if let Some(key) = case_variant(result, &members) {
        return Err(variant_in_result(key));
    }
    if members.iter().filter(|m| result.contains_key(**m)).count() > 1 {
        return Err(LISTS_TWICE.into());
    }
    let Some(Value::Array(entries)) = result.get(listed.member()) else {
        return Err(no_list(Some(listed)));
    };
    let keys = entry_keys(listed);
    let entries = entries.iter().map(|entry| match entry {
        Value::Object(entry) => Entry {
            variant: case_variant(entry, keys),
            name: entry.get(listed.name_key()).and_then(Value::as_str),
            tool: Some(ListedTool::from(entry)),
        },
        _ => Entry {
            tool: None,
            variant: None,
            name: None,
        },
    });
    let (keep, _) = judge(listed, entries, &mut visibility, report)?;
    let removed = keep.iter().any(|k| !k);
    if removed {
        let Some(Value::Array(entries)) = result.get_mut(listed.member()) else {
            unreachable!("read above");
        };
        let mut keep = keep.into_iter();
        entries.retain(|_| keep.next().unwrap_or(false));
    }
    let mark_private =
        report.per_subject && result.get("cacheScope").is_some_and(|s| s != "private");
    if mark_private {
        result.insert("cacheScope".into(), "private".into());
    }
    Ok(removed || mark_private)
}

/// One entry of a list's array, as either reader found it.
struct Entry<'t> {
    /// The entry, when it is an object.
    tool: Option<ListedTool<'t>>,
    /// Its first key that is a known key of such an entry but for case.
    variant: Option<&'t str>,
    /// Its name (`name`, `uri`, `uriTemplate`), when that is a string.
    name: Option<&'t str>,
}

/// Judge every entry of a list of `listed`, counting in `report`: which to keep. Refused
/// (why) when an entry is no object with a name, or one name is listed with two definitions.
fn judge<'t, F: FnMut(Listed, &str, &ListedTool<'_>) -> Visibility>(
    listed: Listed,
    entries: impl ExactSizeIterator<Item = Entry<'t>>,
    visibility: &mut F,
    report: &mut ListReport,
) -> Result<(Vec<bool>, bool), String> {
    // Every tool is read before any is judged: judging records its definition for the
    // calls that follow, and nothing of an answer that is refused may count.
    let mut named: Vec<(&str, ListedTool<'t>)> = Vec::with_capacity(entries.len());
    let mut first: HashMap<&str, usize, ahash::RandomState> =
        HashMap::with_capacity_and_hasher(entries.len(), ahash::RandomState::new());
    let (member, name_key) = (listed.member(), listed.name_key());
    for (i, entry) in entries.enumerate() {
        let Some(tool) = entry.tool else {
            return Err(format!("{member}[{i}] is not an object"));
        };
        if let Some(key) = entry.variant {
            return Err(format!(
                "{member}[{i}] has a key {key:?} that differs from a known key only by case"
            ));
        }
        let Some(name) = entry.name else {
            return Err(format!("{member}[{i}] has no string {name_key:?}"));
        };
        // One name, two definitions: clients keep the first or the last, and calls would be
        // held to whichever was judged last. (The name is not quoted: a server chose it.)
        match first.get(name) {
            Some(&j) if !named[j].1.alike(&tool) => {
                return Err(format!(
                    "{member}[{i}] has the name of {member}[{j}] but another definition"
                ));
            }
            Some(_) => {}
            None => {
                first.insert(name, named.len());
            }
        }
        named.push((name, tool));
    }
    let mut keep = Vec::with_capacity(named.len());
    let mut per_subject = false;
    for (name, tool) in &named {
        let seen = visibility(listed, name, tool);
        per_subject |= seen.per_subject;
        keep.push(seen.shown());
    }
    report.per_subject |= per_subject;
    count(report, &keep);
    Ok((keep, per_subject))
}

/// A list whose entries `keep` says are kept, counted in `report`.
fn count(report: &mut ListReport, keep: &[bool]) {
    let removed = keep.iter().filter(|k| !**k).count();
    report.lists += 1;
    report.removed += removed;
    report.shown += keep.len() - removed;
}

/// Why a result is refused that lists nothing it should.
fn no_list(expected: Option<Listed>) -> String {
    match expected {
        Some(listed) => format!("the result has no {:?} list", listed.member()),
        None => "the result has no list".into(),
    }
}

const LISTS_TWICE: &str = "the result holds two lists (a client could read either)";

fn variant_in_result(key: &str) -> String {
    format!("the result's key {key:?} differs from a known key only by case")
}

/// One message as read: its bytes, its id's span and value, and the answer as the table of
/// answers read before keeps it.
struct Answer<'a> {
    bytes: &'a [u8],
    id: Option<(Range<usize>, Value)>,
    kept: Option<KeptAnswer>,
}

/// A span of a message and what replaces it.
type Edit = (Range<usize>, Vec<u8>);

/// `bytes` with `edits` (spans that do not overlap) made.
fn edit(bytes: &[u8], mut edits: Vec<Edit>) -> Vec<u8> {
    edits.sort_by_key(|(span, _)| span.start);
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for (span, with) in edits {
        out.extend_from_slice(&bytes[at..span.start]);
        out.extend_from_slice(&with);
        at = span.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Code;
    use serde_json::json;

    fn hide_delete(_: Listed, name: &str, _: &ListedTool<'_>) -> Visibility {
        Visibility {
            removed: name.starts_with("delete").then_some(Code::Hidden),
            per_subject: false,
        }
    }

    /// The one message the filter wrote, read as a client reads an event stream.
    /// A task list's cursor reaches the server only as the proxy opened it for the caller,
    /// and the server's next one reaches the agent only as the proxy sealed it; anything
    /// that does not open is refused alike, and a cursor that is not a string is refused.
    #[test]
    fn a_task_lists_cursors_are_sealed_and_opened_again() {
        let open = |c: &str| c.strip_prefix("sealed-").map(str::to_owned);
        let request = |cursor: Value| {
            let sent = json!({"jsonrpc": "2.0", "id": 7, "method": "tasks/list",
                "params": {"cursor": cursor}});
            ListRequest::rewrite(sent.to_string().as_bytes(), &json!(7), Some(&open))
        };
        let forwarded = request(json!("sealed-t9")).unwrap();
        let body: Value = serde_json::from_slice(&forwarded.body).unwrap();
        assert_eq!(body["params"]["cursor"], "t9");
        for bad in [
            json!("t9"),
            json!(""),
            json!(5),
            json!(null),
            json!({"c": "sealed-t9"}),
        ] {
            assert_eq!(request(bad.clone()).unwrap_err(), INVALID_CURSOR, "{bad}");
        }
        let up = forwarded.upstream_id;
        let seal = |next: Value| {
            let answer = json!({"jsonrpc": "2.0", "id": up, "result": {
                "tasks": [{"taskId": "t10", "status": "working"}], "nextCursor": next}});
            let mut f = ListFilter::new(Some(up.clone()), Some(Listed::Tasks), hide_delete)
                .replying_as(json!(7))
                .sealing_cursors(Box::new(|c: &str| format!("sealed-{c}")));
            message_of(&f.feed(answer.to_string().as_bytes(), true))
        };
        let out = seal(json!("t10"));
        assert_eq!(out["result"]["nextCursor"], "sealed-t10", "{out}");
        assert_eq!(out["result"]["tasks"][0]["taskId"], "t10");
        let refused = seal(json!(10));
        assert_eq!(refused["error"]["code"], INTERNAL_ERROR, "{refused}");
    }

    fn message_of(out: &[u8]) -> Value {
        let events = EventSplitter::default().feed(out, true).unwrap();
        let data: Vec<Vec<u8>> = events.into_iter().filter_map(|e| e.data).collect();
        assert_eq!(data.len(), 1, "{:?}", String::from_utf8_lossy(out));
        serde_json::from_slice(&data[0]).unwrap()
    }

    fn filter_json(body: &Value, id: Value) -> (Value, ListReport) {
        let mut f = ListFilter::new(Some(id), Some(Listed::Tools), hide_delete);
        let out = f.feed(body.to_string().as_bytes(), true);
        (message_of(&out), f.report)
    }

    #[test]
    fn removes_tools_and_keeps_the_cursor() {
        let body = json!({"jsonrpc": "2.0", "id": 3, "result": {
            "tools": [{"name": "read"}, {"name": "delete_all"}], "nextCursor": "p2"}});
        let (out, report) = filter_json(&body, json!(3));
        assert_eq!(out["result"]["tools"], json!([{"name": "read"}]));
        assert_eq!(out["result"]["nextCursor"], "p2");
        assert_eq!((report.shown, report.removed), (1, 1));
    }

    #[test]
    fn an_emptied_page_keeps_its_cursor() {
        let body = json!({"jsonrpc": "2.0", "id": "a", "result": {
            "tools": [{"name": "delete_x"}], "nextCursor": "p3"}});
        let (out, _) = filter_json(&body, json!("a"));
        assert_eq!(out["result"], json!({"tools": [], "nextCursor": "p3"}));
    }

    #[test]
    fn refuses_what_a_client_could_read_otherwise() {
        let cases = [
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"Name": "delete_x"}]}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"Tools": [{"name": "delete_x"}]}}),
            json!({"jsonrpc": "2.0", "id": 1, "Result": {"tools": []}}),
            json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": 5}]}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": "x"}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
            json!([1]),
        ];
        for body in cases {
            let (out, report) = filter_json(&body, json!(1));
            assert_eq!(out["error"]["code"], INTERNAL_ERROR, "{body}");
            assert_eq!(out["id"], 1);
            assert!(report.refused.is_some(), "{body}");
        }
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide_delete);
        let dup = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"delete"}]}}"#;
        let out = message_of(&f.feed(dup, true));
        assert_eq!(out["error"]["code"], INTERNAL_ERROR);
    }

    #[test]
    fn passes_errors_and_untouched_lists_byte_for_byte() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#,
            r#"{"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "read", "x": 1.50}]}}"#,
        ] {
            let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide_delete);
            let mut out = f.feed(&body.as_bytes()[..5], false);
            out.extend(f.feed(&body.as_bytes()[5..], true));
            assert_eq!(out, message_event(body.as_bytes()));
        }
    }

    #[test]
    fn marks_a_per_caller_list_private_when_it_says_how_to_cache() {
        let per = |_: Listed, _: &str, _: &ListedTool<'_>| Visibility {
            removed: None,
            per_subject: true,
        };
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "tools": [{"name": "a"}], "cacheScope": "public", "ttlMs": 60000}});
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), per);
        let out = message_of(&f.feed(body.to_string().as_bytes(), true));
        assert_eq!(out["result"]["cacheScope"], "private");
        assert_eq!(out["result"]["ttlMs"], 60000);
        // A legacy answer (no cache hints) gets none.
        let legacy = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "a"}]}});
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), per);
        let out = f.feed(legacy.to_string().as_bytes(), true);
        assert_eq!(out, message_event(legacy.to_string().as_bytes()));
    }

    #[test]
    fn filters_the_answer_event_of_a_stream_and_passes_the_rest() {
        let answer = json!({"jsonrpc": "2.0", "id": 9, "result": {
            "tools": [{"name": "delete_x"}, {"name": "read"}]}});
        let stream = format!(
            ": hi\n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\nevent: message\nid: e1\ndata: {answer}\n\n"
        );
        for cut in 0..stream.len() {
            let mut f = ListFilter::new(Some(json!(9)), Some(Listed::Tools), hide_delete);
            let mut out = f.feed(&stream.as_bytes()[..cut], false);
            out.extend(f.feed(&stream.as_bytes()[cut..], true));
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.starts_with(": hi\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\"")
            );
            let last = text.rsplit("data: ").next().unwrap().trim();
            let filtered: Value = serde_json::from_str(last).unwrap();
            assert_eq!(filtered["result"]["tools"], json!([{"name": "read"}]));
            assert!(text.contains("id: e1\n"));
            assert_eq!(f.report.removed, 1);
        }
    }

    #[test]
    fn refuses_an_unreadable_answer_event_and_drops_what_follows() {
        let stream = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"a\"}],\"tools\":[]}}\n\ndata: more\n\n";
        let mut f = ListFilter::new(Some(json!(9)), Some(Listed::Tools), hide_delete);
        let out = String::from_utf8(f.feed(stream.as_bytes(), true)).unwrap();
        let data = out.strip_prefix("event: message\ndata: ").unwrap();
        let error: Value = serde_json::from_str(data.trim()).unwrap();
        assert_eq!(error["error"]["code"], INTERNAL_ERROR);
        assert!(!out.contains("more"));
    }

    fn stream(s: &str, id: Option<Value>) -> (String, ListReport) {
        let listed = id.as_ref().map(|_| Listed::Tools);
        let mut f = ListFilter::new(id, listed, hide_delete);
        let out = f.feed(s.as_bytes(), true);
        (String::from_utf8(out).unwrap(), f.report)
    }

    #[test]
    fn a_stream_of_earlier_answers_has_each_list_filtered_and_goes_on() {
        let list = |id: u32| json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "delete_x"}, {"name": "read"}]}});
        let call = json!({"jsonrpc": "2.0", "id": 2, "result": {"content": [], "isError": false}});
        let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        let s = format!(
            "id: a\ndata: {}\n\nid: b\ndata: {call}\n\ndata: {note}\n\nid: c\ndata: {}\n\n",
            list(1),
            list(3)
        );
        let (out, report) = stream(&s, None);
        assert!(!out.contains("delete_x"), "{out}");
        assert_eq!(out.matches("\"read\"").count(), 2, "{out}");
        assert!(out.contains(&call.to_string()) && out.contains(&note.to_string()));
        assert!(out.contains("id: c\n"));
        assert_eq!((report.removed, report.refused), (2, None));
        // A case variant of "tools" is read as it by some clients: refused.
        let variant =
            json!({"jsonrpc": "2.0", "id": 4, "result": {"Tools": [{"name": "delete_x"}]}});
        let (out, report) = stream(&format!("data: {variant}\n\n"), None);
        assert!(
            !out.contains("delete_x") && report.refused.is_some(),
            "{out}"
        );
    }

    #[test]
    fn bytes_that_are_no_event_stream_are_refused_not_passed() {
        let answer =
            json!({"jsonrpc": "2.0", "id": 9, "result": {"tools": [{"name": "delete_x"}]}});
        // Compressed bytes, a page, a JSON message after a line of something else.
        for body in [
            format!("\x1f\u{8b}\x08junk\n{answer}\n\n"),
            format!("<html>\ndata: {answer}\n\n"),
            format!("data: {{}}\n\n{answer}\n\n"),
        ] {
            for id in [Some(json!(9)), None] {
                let (out, report) = stream(&body, id);
                assert!(!out.contains("delete_x"), "{out}");
                assert!(report.refused.is_some(), "{body:?}");
            }
        }
        // A JSON body is read as JSON, whatever its headers said: filtered.
        for id in [Some(json!(9)), None] {
            let (out, report) = stream(&answer.to_string(), id);
            assert!(!out.contains("delete_x"), "{out}");
            assert_eq!((report.removed, report.refused), (1, None));
        }
    }

    /// Characters Python's `str.splitlines` ends a line at, beside CR and LF.
    const OTHER_LINE_ENDS: [&str; 8] = [
        "\u{b}", "\u{c}", "\u{1c}", "\u{1d}", "\u{1e}", "\u{85}", "\u{2028}", "\u{2029}",
    ];

    #[test]
    fn a_line_some_clients_split_is_refused_where_it_goes_on_as_it_came() {
        let hidden =
            json!({"jsonrpc": "2.0", "id": 9, "result": {"tools": [{"name": "delete_x"}]}});
        let answer = json!({"jsonrpc": "2.0", "id": 9, "result": {"tools": [{"name": "read"}]}});
        for end in OTHER_LINE_ENDS {
            // A comment, or a field that goes on as it came, holding a list for a client that
            // splits there.
            for line in [": c", "event: message", "id: 1", "retry: 1"] {
                let body = format!("{line}{end}data: {hidden}{end}{end}\n\ndata: {answer}\n\n");
                let (out, report) = stream(&body, Some(json!(9)));
                assert!(!out.contains("delete_x"), "{end:?} {line}: {out:?}");
                assert!(report.refused.is_some(), "{end:?} {line}");
            }
            // Inside a JSON string of the data, it stays there: no client reads a message in
            // what is left of the line.
            let kept = json!({"jsonrpc": "2.0", "id": 9, "result": {"tools": [
                {"name": "read", "description": format!("a{end}{end}data: {hidden}")}]}});
            let (out, report) = stream(&format!("data: {kept}\n\n"), Some(json!(9)));
            assert_eq!((report.refused, report.shown), (None, 1), "{end:?}");
            // (JSON writes the control characters escaped; NEL, LS and PS go raw.)
            assert_eq!(out.contains(end), !end.is_ascii(), "{end:?}");
        }
    }

    #[test]
    fn a_message_that_is_both_request_and_answer_is_refused() {
        let both = json!({"jsonrpc": "2.0", "id": 9, "method": "x", "result": {"tools": [{"name": "delete_x"}]}});
        let (out, report) = stream(&format!("data: {both}\n\n"), Some(json!(9)));
        assert!(
            !out.contains("delete_x") && report.refused.is_some(),
            "{out}"
        );
    }

    #[test]
    fn errors_and_empty_bodies_pass_whatever_id_they_name() {
        let error =
            r#"{"jsonrpc":"2.0","id":"server-error","error":{"code":-32600,"message":"Bad"}}"#;
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide_delete);
        assert_eq!(
            f.feed(error.as_bytes(), true),
            message_event(error.as_bytes())
        );
        // An empty body (a 202, a bare error status): nothing to list.
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide_delete);
        assert!(f.feed(b"", false).is_empty());
        assert!(f.feed(b"", true).is_empty());
        assert_eq!(f.report.refused, None);
    }

    #[test]
    fn the_server_gets_an_id_of_the_proxys_own_and_the_agent_its_own_back() {
        let sent = br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"c"}}"#;
        let request = ListRequest::rewrite(sent, &json!(7), None).unwrap();
        let forwarded: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(forwarded["params"], json!({"cursor": "c"}));
        assert_eq!(forwarded["id"], request.upstream_id);
        let fresh = ListRequest::rewrite(sent, &json!(7), None)
            .unwrap()
            .upstream_id;
        assert_ne!(fresh, request.upstream_id, "a new id each time");
        assert!(
            ListRequest::rewrite(sent, &json!(8), None).is_err(),
            "not the request checked"
        );
        // The answer, filtered or not, an error too, goes back under the agent's id.
        let up = request.upstream_id.clone();
        for answer in [
            json!({"jsonrpc": "2.0", "id": up, "result": {"tools": [{"name": "read"}]}}),
            json!({"jsonrpc": "2.0", "id": up, "result": {"tools": [{"name": "delete_x"}]}}),
            json!({"jsonrpc": "2.0", "id": up, "error": {"code": -32601, "message": "no"}}),
        ] {
            let mut f = ListFilter::new(Some(up.clone()), Some(Listed::Tools), hide_delete)
                .replying_as(json!(7));
            let out = message_of(&f.feed(answer.to_string().as_bytes(), true));
            assert_eq!(out["id"], 7, "{out}");
            assert!(!out.to_string().contains("delete_x"));
        }
        // The agent's own id on an answer is not the request's: refused, under its id.
        let mut f =
            ListFilter::new(Some(up), Some(Listed::Tools), hide_delete).replying_as(json!(7));
        let stray = json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": []}});
        let out = message_of(&f.feed(stray.to_string().as_bytes(), true));
        assert_eq!(
            (out["id"].clone(), out["error"]["code"].clone()),
            (json!(7), json!(INTERNAL_ERROR))
        );
    }

    #[test]
    fn refuses_a_body_that_carries_no_message() {
        // Neither JSON nor events (a page, compressed bytes): refused, as an event.
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide_delete);
        assert!(f.feed(b"<html>", false).is_empty());
        let out = f.feed(b"</html>\n", true);
        let data = out.strip_prefix(b"event: message\ndata: ").unwrap();
        let error: Value = serde_json::from_slice(data.trim_ascii()).unwrap();
        assert_eq!(error["error"]["code"], INTERNAL_ERROR);
        assert!(f.report.refused.unwrap().contains("no field of the format"));
    }

    #[test]
    fn nothing_is_held_once_the_answer_is_passed_on_or_refused() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}});
        let mib = vec![b'a'; 1 << 20];
        // A stream that goes on after its answer, after a refused event, after a refused
        // JSON body: a line without end, 40 MiB of it, is neither held nor passed on.
        for (id, opening) in [
            (Some(json!(1)), format!("data: {answer}\n\ndata: ")),
            (None, "data: ".to_owned()),
            (Some(json!(1)), "{".to_owned()),
        ] {
            let listed = id.as_ref().map(|_| Listed::Tools);
            let mut f = ListFilter::new(id, listed, hide_delete);
            let mut out = f.feed(opening.as_bytes(), false);
            let mut most = 0;
            for _ in 0..40 {
                out.extend(f.feed(&mib, false));
                most = most.max(f.held());
            }
            out.extend(f.feed(b"\n\n", true));
            assert!(most <= 2 * MAX_EVENT_BYTES, "{opening:?}: held {most}");
            assert!(out.len() < 1024, "{opening:?}: sent {}", out.len());
            assert_eq!(f.held(), 0, "{opening:?}");
        }
    }

    #[test]
    fn reads_the_framing_from_the_first_bytes_past_whitespace() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "tools": [{"name": "delete_x"}, {"name": "read"}]}});
        for body in [
            format!("\r\n \t{answer}"),
            format!("\n\nevent: message\ndata: {answer}\n\n"),
        ] {
            // Whitespace alone says nothing: it is held, in chunks cut anywhere.
            for cut in 0..body.len() {
                let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide_delete);
                let mut out = f.feed(&body.as_bytes()[..cut], false);
                out.extend(f.feed(&body.as_bytes()[cut..], true));
                let text = String::from_utf8(out).unwrap();
                assert!(!text.contains("delete"), "{text:?}");
                assert!(text.contains(r#""tools":[{"name":"read"}]"#), "{text:?}");
                // An event stream's events keep their bytes; a JSON answer becomes one.
                let opening = if body.starts_with("\n\nevent:") {
                    "\n\nevent: message\ndata: "
                } else {
                    "event: message\ndata: "
                };
                assert!(text.starts_with(opening), "{text:?}");
                assert_eq!((f.report.removed, f.report.refused), (1, None));
            }
        }
        // Whitespace alone, or too much of it, is refused.
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide_delete);
        assert!(f.feed(b"\r\n", false).is_empty());
        let out = message_of(&f.feed(b" ", true));
        assert_eq!(out["error"]["code"], INTERNAL_ERROR);
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide_delete);
        let spaces = vec![b' '; MAX_EVENT_BYTES / 2 + 1];
        assert!(f.feed(&spaces, false).is_empty());
        assert!(f.feed(&spaces, false).is_empty());
        assert!(f.feed(b"{}", false).is_empty());
        let out = message_of(&f.feed(b"", true));
        assert!(out["error"]["message"].as_str().unwrap().contains("bytes"));
    }

    /// A tool of a generated list: names that repeat (with the same definition, its
    /// members in another order, or another one), and now and then no tool at all, no
    /// name, or a key that differs from a known one only by case.
    fn listed_entry() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let names = proptest::sample::select(vec!["read", "delete_x", "list", "delete_y", "é"]);
        let words = proptest::sample::select(vec!["Reads.", "Reads!", "\u{2028}\"x\""]);
        let tool = (names, words, any::<bool>(), 0u8..12).prop_map(|(name, words, flip, odd)| {
            let mut t = Map::new();
            let members = [("name", json!(name)), ("description", json!(words))];
            for (k, v) in if flip { [1, 0] } else { [0, 1] }.map(|i| members[i].clone()) {
                t.insert(k.into(), v);
            }
            match odd {
                0 => {
                    t.insert("Description".into(), json!("x"));
                }
                1 => {
                    t.remove("name");
                }
                2 => {
                    t.insert("name".into(), json!(3));
                }
                3 => {
                    t.insert("inputSchema".into(), json!({"type": "object", "n": 1.5}));
                }
                _ => {}
            }
            Value::Object(t)
        });
        prop_oneof![10 => tool, 1 => Just(json!(5)), 1 => Just(json!([]))]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// The filter reads an answer's bytes, `filter_result` a tree of it: whatever the
        /// list, both keep the same tools, mark the same cache scope, count alike and refuse
        /// the same answers; and the answer goes back under the agent's id.
        #[test]
        fn filters_the_bytes_as_the_tree_is_filtered(
            tools in proptest::collection::vec(listed_entry(), 0..10),
            scope in proptest::option::of(proptest::sample::select(vec![json!("public"), json!("private"), json!(3)])),
            per_subject in proptest::prelude::any::<bool>(),
            pretty in proptest::prelude::any::<bool>(),
            renamed in proptest::prelude::any::<bool>(),
        ) {
            let mut result = Map::new();
            result.insert("tools".into(), Value::Array(tools));
            result.insert("nextCursor".into(), json!("n"));
            if let Some(scope) = scope {
                result.insert("cacheScope".into(), scope);
            }
            let ours = if renamed { json!("toolgate-1") } else { json!(5) };
            let message = json!({"jsonrpc": "2.0", "id": ours, "result": result});
            let text = if pretty {
                serde_json::to_string_pretty(&message).unwrap()
            } else {
                message.to_string()
            };
            let visible = |_: Listed, name: &str, _: &ListedTool<'_>| Visibility {
                removed: name.starts_with("delete").then_some(Code::Hidden),
                per_subject,
            };
            let mut f = ListFilter::new(Some(ours.clone()), Some(Listed::Tools), visible);
            if renamed {
                f = f.replying_as(json!(5));
            }
            let out = f.feed(text.as_bytes(), true);
            let mut tree = result.clone();
            let mut report = ListReport::default();
            let expected = filter_result(Listed::Tools, &mut tree, visible, &mut report);
            let got = message_of(&out);
            proptest::prop_assert_eq!(&got["id"], &json!(5));
            match expected {
                Err(why) => {
                    proptest::prop_assert!(f.report.refused.is_some(), "{} not refused: {}", text, why);
                    proptest::prop_assert_eq!(&got["error"]["code"], &json!(INTERNAL_ERROR));
                }
                Ok(changed) => {
                    proptest::prop_assert_eq!(&f.report, &report, "{}", text);
                    proptest::prop_assert_eq!(&got["result"], &Value::Object(tree), "{}", text);
                    // What is not changed goes on byte for byte.
                    if !changed && !renamed {
                        proptest::prop_assert_eq!(&out, &message_event(text.as_bytes()));
                    }
                }
            }
        }
    }
}
