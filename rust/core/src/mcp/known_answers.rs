//! Answers read before. A server whose tools have not changed answers each `tools/list` with
//! the same bytes but for the id, and the id is toolgate's own, fresh for each request
//! ([`crate::engine::listing::ListRequest`]); agents fetch lists again on every `list_changed` and
//! every discovery round. Reading an answer strictly is most of what filtering it costs, so
//! what the reader found in an answer is kept with its bytes, and the same answer under
//! another request's id is not read again.
//!
//! Sameness is exact: a new answer is known when it is byte for byte a kept one with the kept
//! id's text replaced by the new id's, each as serde_json writes it, at the same length. The
//! strict reader would then find in it exactly what it found before, at the same places: the
//! id is one JSON string or integer either way, so no key, nesting or count differs (the list
//! filter looks up only answers to requests whose id is a string or an integer within 2^53,
//! whose text the reader takes as it takes the kept one's). A kept
//! answer is looked up by its length and a hash of bytes from its middle, where no id is
//! (servers write the id first or last): a hint only, since a wrong hint is a comparison that
//! fails. The table is bounded in answers and in memory (an answer's bytes and what was found
//! in it, which for a list of many tiny entries is the larger), and forgets the oldest first;
//! a server that sends ever new lists only makes its own lists read anew.
//!
//! A kept answer also holds which of its entries a list filter kept the last time it judged
//! them where every caller's judgement is the same, and under what (the policy, the server,
//! the list, as the filter writes them): the same answer judged under the same again keeps the
//! same entries without judging each one anew.

use super::spans::{Entry, Message, Name};
use ahash::RandomState;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Answers kept at most.
pub const MAX_ANSWERS: usize = 64;
/// Memory of kept answers at most, all together: their bytes and what was found in them.
pub const MAX_BYTES: usize = 8 << 20;
/// The largest answer kept, so counted (a list of 1,000 tools is about 320 KB, and 370 KB
/// with what was found in it).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// How many bytes from the middle of an answer its hint hashes.
const HINT_BYTES: usize = 256;

/// A table of answers read before: shared by every list filter of a process.
pub struct KnownAnswers {
    table: Mutex<Table>,
    hash: RandomState,
    /// Answers found again, not read.
    recalled: AtomicU64,
    /// Answers whose entries were kept as judged before, not judged again.
    judged_before: AtomicU64,
}

#[derive(Default)]
struct Table {
    by_hint: HashMap<Hint, Arc<Kept>>,
    /// The kept answers' hints, oldest first.
    order: VecDeque<Hint>,
    bytes: usize,
}

/// An answer's length, and a hash of the bytes at its middle.
type Hint = (usize, u64);

/// One answer as it came, and what the strict reader found in it (spans of its bytes, which
/// are those of the same answer under another id).
struct Kept {
    /// The memory it holds, as the table counts it.
    size: usize,
    bytes: Box<[u8]>,
    /// Where its id is: the text replaced when the answer comes again.
    id: Range<usize>,
    message: Message,
    /// What its entries were last judged under, and which were kept.
    judged: Mutex<Option<Judged>>,
}

/// What an answer's entries were judged under (as the list filter writes it), and which of
/// them were kept.
type Judged = (Box<[u8]>, Arc<[bool]>);

/// The longest description of what an answer was judged under that is kept with it (a
/// server's name is a few dozen bytes).
pub const MAX_JUDGED_UNDER: usize = 1024;

/// An answer the table keeps, as a list filter found or kept it.
#[derive(Clone)]
pub struct KeptAnswer {
    kept: Arc<Kept>,
    table: Arc<KnownAnswers>,
}

impl KeptAnswer {
    /// Which of its `entries` were kept when the answer was last judged under `under`, if it
    /// was.
    pub fn judged(&self, under: &[u8], entries: usize) -> Option<Arc<[bool]>> {
        let judged = self
            .kept
            .judged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let same = |(u, keep): &&Judged| **u == *under && keep.len() == entries;
        let keep = judged.as_ref().filter(same)?.1.clone();
        self.table.judged_before.fetch_add(1, Ordering::Relaxed);
        Some(keep)
    }

    /// Judged under `under` (every caller's judgement alike), the answer keeps `keep`.
    pub fn note_judged(&self, under: &[u8], keep: Arc<[bool]>) {
        if under.len() <= MAX_JUDGED_UNDER {
            let mut judged = self
                .kept
                .judged
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *judged = Some((under.into(), keep));
        }
    }
}

impl Default for KnownAnswers {
    fn default() -> Self {
        KnownAnswers {
            table: Mutex::default(),
            hash: RandomState::new(),
            recalled: AtomicU64::new(0),
            judged_before: AtomicU64::new(0),
        }
    }
}

impl KnownAnswers {
    fn hint(&self, bytes: &[u8]) -> Hint {
        let start = (bytes.len() / 2).saturating_sub(HINT_BYTES / 2);
        let end = (start + HINT_BYTES).min(bytes.len());
        (bytes.len(), self.hash.hash_one(&bytes[start..end]))
    }

    /// What the strict reader found in `bytes`, if they are a kept answer with its id's text
    /// replaced by `id` (the request's id as serde_json writes it), and the answer kept.
    pub fn recall(self: &Arc<Self>, bytes: &[u8], id: &[u8]) -> Option<(Message, KeptAnswer)> {
        let kept = {
            let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(table.by_hint.get(&self.hint(bytes))?)
        };
        let at = kept.id.clone();
        let same = bytes.len() == kept.bytes.len()
            && bytes.get(at.clone()) == Some(id)
            && bytes[..at.start] == kept.bytes[..at.start]
            && bytes[at.end..] == kept.bytes[at.end..];
        if !same {
            return None;
        }
        self.recalled.fetch_add(1, Ordering::Relaxed);
        let message = kept.message.clone();
        let table = Arc::clone(self);
        Some((message, KeptAnswer { kept, table }))
    }

    /// Keep `message`, read from `bytes`, whose id is `id` (as serde_json writes it) at the
    /// span the reader found: a later answer differing only in its id is not read again.
    /// The answer as kept, if it is.
    pub fn keep(
        self: &Arc<Self>,
        bytes: &[u8],
        message: &Message,
        id: &[u8],
    ) -> Option<KeptAnswer> {
        let at = message.id.clone()?;
        if !message.object || bytes.len() > MAX_ANSWER_BYTES || bytes.get(at.clone()) != Some(id) {
            return None;
        }
        // A list of many small entries holds more in what was found than in its bytes; what
        // its entries were judged under may come to hold one flag an entry, and its key.
        let entries = match &message.listing.entries {
            Some((_, Ok(entries))) => entries.len(),
            _ => 0,
        };
        let judged = MAX_JUDGED_UNDER + entries;
        let size = std::mem::size_of::<Kept>() + bytes.len() + held_by(message) + judged;
        if size > MAX_ANSWER_BYTES {
            return None;
        }
        let hint = self.hint(bytes);
        let kept = Arc::new(Kept {
            size,
            bytes: bytes.into(),
            id: at,
            message: message.clone(),
            judged: Mutex::new(None),
        });
        let answer = KeptAnswer {
            kept: Arc::clone(&kept),
            table: Arc::clone(self),
        };
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = table.by_hint.insert(hint, kept) {
            // The same hint: the new answer takes the old one's place in the order.
            table.bytes -= old.size;
            table.order.retain(|h| *h != hint);
        }
        table.bytes += size;
        table.order.push_back(hint);
        while table.order.len() > MAX_ANSWERS || table.bytes > MAX_BYTES {
            let Some(oldest) = table.order.pop_front() else {
                break;
            };
            if let Some(old) = table.by_hint.remove(&oldest) {
                table.bytes -= old.size;
            }
        }
        Some(answer)
    }

    /// How many answers were found again (and not read).
    pub fn recalled(&self) -> u64 {
        self.recalled.load(Ordering::Relaxed)
    }

    /// How many answers kept the entries judged before (and were not judged again).
    pub fn judged_before(&self) -> u64 {
        self.judged_before.load(Ordering::Relaxed)
    }

    /// Answers kept, and the memory they hold (their bytes and what was found in them).
    pub fn held(&self) -> (usize, usize) {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        (table.by_hint.len(), table.bytes)
    }
}

/// The memory `message` holds beyond its own struct: its entries, and the texts it owns.
fn held_by(message: &Message) -> usize {
    let text = |t: &Option<Box<str>>| t.as_ref().map_or(0, |t| t.len());
    let entry = |t: &Entry| {
        let name = match &t.name {
            Some(Name::Decoded(name)) => name.len(),
            _ => 0,
        };
        std::mem::size_of::<Entry>() + text(&t.variant) + name
    };
    let tools = match &message.listing.entries {
        Some((_, Ok(entries))) => entries.iter().map(entry).sum(),
        _ => 0,
    };
    text(&message.variant) + text(&message.listing.variant) + tools
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::spans::{known, read, Keys};

    /// The keys whose case variants the reader notes (the list filter's are more).
    const KEYS: Keys = Keys {
        message: &known(["jsonrpc", "id", "result"]),
        result: &known(["nextCursor"]),
        entry: [&known(["name"]); 5],
    };

    /// A list answer of `tools` under `id` (written as given), padded so its id is far from
    /// its middle.
    fn answer(id: &str, tools: &str) -> Vec<u8> {
        let pad = "x".repeat(600);
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{tools}],"_meta":{{"p":"{pad}"}}}}}}"#)
            .into_bytes()
    }

    fn kept(known: &Arc<KnownAnswers>, bytes: &[u8], id: &str) {
        let message = read(bytes, &KEYS).expect("a readable answer");
        known.keep(bytes, &message, id.as_bytes());
    }

    /// What the reader finds, as text: spans, names and flags.
    fn shown(m: &Message) -> String {
        format!("{m:?}")
    }

    #[test]
    fn the_same_answer_under_another_id_is_found_as_read() {
        let known = Arc::new(KnownAnswers::default());
        let tools = r#"{"name":"read","description":"r"},{"name":"dele\u0074e","x":[1,{"a":2}]}"#;
        let first = answer(r#""toolgate-aaaa""#, tools);
        kept(&known, &first, r#""toolgate-aaaa""#);
        let again = answer(r#""toolgate-bbbb""#, tools);
        assert_eq!(known.recalled(), 0);
        let found = known
            .recall(&again, br#""toolgate-bbbb""#)
            .expect("found")
            .0;
        assert_eq!(known.recalled(), 1);
        assert_eq!(shown(&found), shown(&read(&again, &KEYS).unwrap()));
        // Its names read from the new bytes (or as decoded text).
        let tools = found.listing.entries.as_ref().unwrap().1.as_ref().unwrap();
        let name = |i: usize| tools[i].name.as_ref().map(|n| n.text(&again));
        assert_eq!(name(0), Some("read"));
        assert_eq!(name(1), Some("delete"));
    }

    #[test]
    fn any_other_byte_or_id_is_read_anew() {
        let known = Arc::new(KnownAnswers::default());
        let tools = r#"{"name":"read"},{"name":"delete_x"}"#;
        kept(
            &known,
            &answer(r#""toolgate-aaaa""#, tools),
            r#""toolgate-aaaa""#,
        );
        let id = br#""toolgate-bbbb""#;
        // Another byte anywhere but the id, at the same length (and so, mostly, the same hint).
        let again = answer(r#""toolgate-bbbb""#, tools);
        for at in 0..again.len() {
            let mut other = again.clone();
            other[at] = if other[at] == b'y' { b'z' } else { b'y' };
            let id_at = 23..23 + id.len();
            if !id_at.contains(&at) {
                assert!(known.recall(&other, id).is_none(), "{at}");
            }
        }
        // The id the request went on with, not another of the same length.
        assert!(known.recall(&again, br#""toolgate-cccc""#).is_none());
        // Another length of id: another length of answer.
        let longer = answer(r#""toolgate-bbbbb""#, tools);
        assert!(known.recall(&longer, br#""toolgate-bbbbb""#).is_none());
        assert_eq!(known.recalled(), 0, "nothing was found again");
    }

    #[test]
    fn only_an_answer_whose_id_is_written_as_the_request_was_is_kept() {
        let known = Arc::new(KnownAnswers::default());
        let tools = r#"{"name":"read"}"#;
        // The server wrote the id with an escape: the same value, other text.
        kept(
            &known,
            &answer(r#""toolgate-\u0061aaa""#, tools),
            r#""toolgate-aaaa""#,
        );
        // No id at all.
        let none = br#"{"jsonrpc":"2.0","result":{"tools":[]}}"#;
        kept(&known, none, r#""toolgate-aaaa""#);
        assert_eq!(known.held(), (0, 0));
    }

    #[test]
    fn the_table_is_bounded_in_answers_and_bytes() {
        let known = Arc::new(KnownAnswers::default());
        for i in 0..MAX_ANSWERS * 3 {
            let tools: Vec<String> = (0..40)
                .map(|k| format!(r#"{{"name":"t{i}_{k}"}}"#))
                .collect();
            kept(&known, &answer(r#""t""#, &tools.join(",")), r#""t""#);
        }
        assert_eq!(known.held().0, MAX_ANSWERS);
        // Large answers: no more bytes than the bound, and none over the largest kept.
        let big = |i: usize, size: usize| {
            let half = "d".repeat(size / 2);
            let tools = format!(r#"{{"name":"t","d":"{half}{i:08}{half}"}}"#);
            answer(r#""t""#, &tools)
        };
        for i in 0..40 {
            kept(&known, &big(i, MAX_ANSWER_BYTES / 2), r#""t""#);
            assert!(known.held().1 <= MAX_BYTES);
        }
        assert!(known.held().0 >= MAX_BYTES / MAX_ANSWER_BYTES);
        let before = known.held();
        kept(&known, &big(99, MAX_ANSWER_BYTES), r#""t""#);
        assert_eq!(known.held(), before);
    }
}
