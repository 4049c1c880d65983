//! One message of a server's answer, read as strictly as [`crate::json::strict`] reads a
//! request (the same refusals: not one JSON value, keys that fold alike, numbers beyond
//! 2^53, nesting past serde_json's limit, too many keys or values), but into where its parts
//! lie in the bytes instead of into a tree of values.
//!
//! A list's answer (`tools/list`, `resources/list`...) is mostly definitions that the filter
//! passes on untouched: it needs each entry's name and where the entry begins and ends, so it can write the kept ones
//! back as they came. Building a tree for all of it (maps, strings, then writing them out
//! again) was most of what filtering a list cost. jiter does the tokenizing; this module
//! walks every value, checks what [`crate::json::strict`] checks, and notes the spans. One
//! refusal is its own: jiter reads no number whose integer part runs to 4,300 digits (Python's
//! bound on integers), however small the number, so an answer holding one is refused whole.
//!
//! Keys of one object are compared by their folded form ([`Folded`]): the folded bytes
//! themselves when they fit in 16 (nearly every key a server writes), else a hash of them
//! (a per-process seed). A twin folds to the same bytes, so none is missed; two different
//! long keys hashing alike (odds of 2^-64 a pair, unpredictable to a sender) would only
//! refuse an answer, never pass one. A twin found, both keys are read again from where they
//! were written to say which it is.

use crate::json::fold::fold_char;
use crate::json::strict::{Ambiguity, StrictError, MAX_KEYS, MAX_SAFE_INTEGER, MAX_VALUES};
use crate::kind::Listed;
use ahash::{AHashMap, RandomState};
use arrayvec::ArrayString;
use jiter::{Jiter, JiterError, Peek};
use smallvec::SmallVec;
use std::collections::hash_map::Entry as MapEntry;
use std::ops::Range;
use std::sync::OnceLock;

/// Deepest nesting of arrays and objects read: serde_json's limit, so the request reader and
/// this one refuse alike.
const MAX_DEPTH: usize = 127;
/// Objects with at most this many keys compare hashes in a list instead of a set.
const SMALL_OBJECT: usize = 8;

/// What kind of JSON value a member holds, where only that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Other,
}

/// One message: its JSON-RPC members, and for a result object, what it lists.
#[derive(Debug, Default, Clone)]
pub struct Message {
    /// The message is a JSON object.
    pub object: bool,
    /// The first key that is a JSON-RPC key but for case.
    pub variant: Option<Box<str>>,
    pub method: bool,
    /// The span of `id`'s value.
    pub id: Option<Range<usize>>,
    pub result: Option<Kind>,
    pub error: Option<Kind>,
    /// What a result object holds (when `result` is one).
    pub listing: Listing,
}

/// What a result object holds that a list's filter reads.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// The first key that is a known result key (or a list's member) but for case.
    pub variant: Option<Box<str>>,
    /// Some key is a list's member (`tools`, `resources`...) but for case.
    pub member_variant: bool,
    /// What the result lists, by the member it has, with that member's entries if it is an
    /// array (`Err(())` if not). With two lists' members, the last.
    pub entries: Option<(Listed, Result<Vec<Entry>, ()>)>,
    /// The result has more than one list's member: it lists two things at once.
    pub lists_twice: bool,
    /// The span of `cacheScope`'s value, and whether that is the string `"private"`.
    pub cache_scope: Option<(Range<usize>, bool)>,
    /// The span of `nextCursor`'s value.
    pub next_cursor: Option<Range<usize>>,
}

/// One entry of a list's array (a tool, a resource, a template, a prompt).
#[derive(Debug, Clone)]
pub struct Entry {
    pub span: Range<usize>,
    pub object: bool,
    /// The first key that is a known key of the entry but for case.
    pub variant: Option<Box<str>>,
    /// Its name (`name`, `uri` or `uriTemplate`, as the list says), when it is a string.
    pub name: Option<Name>,
}

/// A string read: where its text is in the bytes (when it has no escapes), or its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    At(Range<usize>),
    Decoded(Box<str>),
}

impl Name {
    /// Its text, `body` being the bytes it was read from (or the same bytes again).
    pub fn text<'b>(&'b self, body: &'b [u8]) -> &'b str {
        match self {
            Name::At(span) => std::str::from_utf8(&body[span.clone()]).expect("read as text"),
            Name::Decoded(text) => text,
        }
    }
}

/// Read `body` as one message, noting the case variants of `keys` at each level.
pub fn read(body: &[u8], keys: &Keys) -> Result<Message, StrictError> {
    let mut r = Reader {
        jiter: Jiter::new(body),
        body,
        keys: 0,
        values: 0,
        known: keys,
        fold: Vec::new(),
    };
    let message = r.message()?;
    r.jiter.finish().map_err(syntax)?;
    Ok(message)
}

/// The known keys at each level of a message: of an entry, by what the list lists (in
/// [`Listed::ALL`]'s order). A list's member is known at the result's level, whatever
/// `result` says.
pub struct Keys {
    pub message: &'static [Known],
    pub result: &'static [Known],
    pub entry: [&'static [Known]; 5],
}

/// A known key (ASCII, at most 16 bytes), with its folded form made once.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    text: &'static str,
    folded: Folded,
}

/// `keys` with their folded forms, for a [`Keys`].
pub const fn known<const N: usize>(keys: [&'static str; N]) -> [Known; N] {
    let mut out = [Known {
        text: "",
        folded: Folded { bytes: 0, len: 0 },
    }; N];
    let mut i = 0;
    while i < N {
        let text = keys[i].as_bytes();
        assert!(
            text.len() <= 16 && text.is_ascii(),
            "a known key is short ASCII"
        );
        let mut packed = [0u8; 16];
        let mut j = 0;
        while j < text.len() {
            packed[j] = text[j].to_ascii_lowercase();
            j += 1;
        }
        out[i] = Known {
            text: keys[i],
            folded: Folded {
                bytes: u128::from_le_bytes(packed),
                len: text.len(),
            },
        };
        i += 1;
    }
    out
}

/// The lists' members (`tools`, `resources`, `resourceTemplates`, `prompts`, `tasks`)
/// folded, to tell a case variant of one (`resourceTemplates` is too long for a [`Known`]).
fn members() -> &'static [Folded; 5] {
    static MEMBERS: OnceLock<[Folded; 5]> = OnceLock::new();
    MEMBERS.get_or_init(|| Listed::ALL.map(|l| Folded::of(l.member().to_lowercase().as_bytes())))
}

/// A key as a case-insensitive decoder reads it: its folded bytes, packed, when there are at
/// most 16 of them (`len` ≤ 16), else a hash of them (`len` > 16). Keys that fold alike have
/// the same folded bytes, and so the same `Folded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Folded {
    bytes: u128,
    len: usize,
}

impl Folded {
    /// Folded bytes (already folded) as a `Folded`.
    fn of(folded: &[u8]) -> Folded {
        if folded.len() > 16 {
            return Folded {
                bytes: u128::from(hasher().hash_one(folded)),
                len: folded.len(),
            };
        }
        Folded {
            bytes: packed(folded),
            len: folded.len(),
        }
    }
}

struct Reader<'a, 'k> {
    jiter: Jiter<'a>,
    body: &'a [u8],
    keys: usize,
    values: usize,
    known: &'k Keys,
    /// Scratch for one key's folded form.
    fold: Vec<u8>,
}

/// The keys of one object seen so far: each one's folded form, and where it was written (to
/// tell a repeated key from a case variant, when one is found).
#[derive(Default)]
struct ObjectKeys {
    small: SmallVec<[(Folded, usize); SMALL_OBJECT]>,
    large: Option<AHashMap<Folded, usize>>,
}

impl ObjectKeys {
    /// Add a key by its folded form and where it was written: where a key that folds alike
    /// was, if one was.
    fn insert(&mut self, folded: Folded, at: usize) -> Option<usize> {
        if let Some(large) = &mut self.large {
            return match large.entry(folded) {
                MapEntry::Occupied(twin) => Some(*twin.get()),
                MapEntry::Vacant(slot) => {
                    slot.insert(at);
                    None
                }
            };
        }
        if let Some(&(_, twin)) = self.small.iter().find(|(f, _)| *f == folded) {
            return Some(twin);
        }
        if self.small.len() < SMALL_OBJECT {
            self.small.push((folded, at));
            return None;
        }
        let mut large: AHashMap<Folded, usize> = self.small.drain(..).collect();
        large.insert(folded, at);
        self.large = Some(large);
        None
    }
}

/// The hashing of keys: seeded once per process.
fn hasher() -> &'static RandomState {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    SEED.get_or_init(RandomState::new)
}

fn syntax(e: JiterError) -> StrictError {
    StrictError::Syntax(e.to_string())
}

fn ambiguous(what: Ambiguity) -> StrictError {
    StrictError::Ambiguous {
        pointer: String::new(),
        message: what.describe().into(),
        what,
    }
}

impl<'a> Reader<'a, '_> {
    fn count_value(&mut self) -> Result<(), StrictError> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(StrictError::TooLarge(format!(
                "the JSON holds more than {MAX_VALUES} values"
            )));
        }
        Ok(())
    }

    /// Note one key of an object: `key` as the reader last read it, written at `at` (where
    /// the reader was before it). Its folded form is returned.
    fn key(&mut self, seen: &mut ObjectKeys, key: &str, at: usize) -> Result<Folded, StrictError> {
        self.keys += 1;
        if self.keys > MAX_KEYS {
            return Err(StrictError::TooLarge(format!(
                "the JSON holds more than {MAX_KEYS} object keys"
            )));
        }
        let folded = self.folded(key);
        let Some(twin) = seen.insert(folded, at) else {
            return Ok(folded);
        };
        let what = if self.key_at(twin).as_deref() == Some(key) {
            Ambiguity::DuplicateKey
        } else {
            Ambiguity::CaseVariantKeys
        };
        Err(ambiguous(what))
    }

    /// `key` as a case-insensitive decoder reads it.
    fn folded(&mut self, key: &str) -> Folded {
        let text = key.as_bytes();
        if text.len() <= 16 {
            if let Some(bytes) = ascii_lowercase(packed(text)) {
                // Most keys: folded in place, all 16 bytes at once.
                return Folded {
                    bytes,
                    len: text.len(),
                };
            }
        }
        self.fold.clear();
        let mut utf8 = [0u8; 4];
        for c in key.chars() {
            self.fold
                .extend_from_slice(fold_char(c).encode_utf8(&mut utf8).as_bytes());
        }
        Folded::of(&self.fold)
    }

    /// The key written first after `at` (past white space and a `{` or `,`).
    fn key_at(&self, at: usize) -> Option<String> {
        let rest = self.body.get(at..)?;
        let start = rest.iter().position(|b| *b == b'"')?;
        let mut strings = serde_json::Deserializer::from_slice(&rest[start..]).into_iter();
        strings.next()?.ok()
    }

    /// Whether `key` (folded as `folded`) is one of `known` but for case.
    fn variant(key: &str, folded: Folded, known: &[Known]) -> bool {
        known.iter().any(|k| k.folded == folded && k.text != key)
    }

    /// Read the next value whatever it is; `depth` is the nesting it is in.
    fn value(&mut self, peek: Peek, depth: usize) -> Result<(), StrictError> {
        self.count_value()?;
        match peek {
            Peek::Null => self.jiter.known_null().map_err(syntax),
            Peek::True | Peek::False => self.jiter.known_bool(peek).map(drop).map_err(syntax),
            Peek::String => self.jiter.known_str().map(drop).map_err(syntax),
            Peek::Array => {
                let depth = deeper(depth)?;
                let mut next = self.jiter.known_array().map_err(syntax)?;
                while let Some(peek) = next {
                    self.value(peek, depth)?;
                    next = self.jiter.array_step().map_err(syntax)?;
                }
                Ok(())
            }
            Peek::Object => {
                let depth = deeper(depth)?;
                self.object(|r, _, _| {
                    let peek = r.jiter.peek().map_err(syntax)?;
                    r.value(peek, depth)
                })
            }
            _ => self.number(peek),
        }
    }

    /// A number, refused when some decoder would read it rounded.
    fn number(&mut self, peek: Peek) -> Result<(), StrictError> {
        let text = self.jiter.known_number_bytes(peek).map_err(syntax)?;
        let text = std::str::from_utf8(text).map_err(|e| StrictError::Syntax(e.to_string()))?;
        let digits = text.strip_prefix('-').unwrap_or(text);
        let magnitude = if digits.bytes().all(|b| b.is_ascii_digit()) {
            // An integer: exact while it fits 64 bits, and past them plainly too large.
            match digits.parse::<u64>() {
                Ok(n) => n as f64,
                Err(_) => f64::INFINITY,
            }
        } else {
            let f: f64 = text
                .parse()
                .map_err(|_| StrictError::Syntax(format!("{text:?} is not a number")))?;
            if !f.is_finite() {
                return Err(StrictError::Syntax("number out of range".into()));
            }
            f.abs()
        };
        if magnitude > MAX_SAFE_INTEGER as f64 {
            return Err(ambiguous(Ambiguity::UnsafeNumber));
        }
        Ok(())
    }

    /// The span of the value that starts at the next token, read whatever it is.
    fn spanned(&mut self, depth: usize) -> Result<(Range<usize>, Peek), StrictError> {
        let peek = self.jiter.peek().map_err(syntax)?;
        let start = self.jiter.current_index();
        self.value(peek, depth)?;
        Ok((start..self.jiter.current_index(), peek))
    }

    fn message(&mut self) -> Result<Message, StrictError> {
        let mut m = Message::default();
        let peek = self.jiter.peek().map_err(syntax)?;
        if peek != Peek::Object {
            self.value(peek, 0)?;
            return Ok(m);
        }
        m.object = true;
        self.count_value()?;
        self.object(|r, k, folded| {
            if m.variant.is_none() && Self::variant(k, folded, r.known.message) {
                m.variant = Some(k.into());
            }
            let peek = r.jiter.peek().map_err(syntax)?;
            match k {
                "result" if peek == Peek::Object => {
                    m.result = Some(Kind::Object);
                    m.listing = r.result()?;
                }
                "id" => m.id = Some(r.spanned(1)?.0),
                _ => {
                    r.value(peek, 1)?;
                    let kind = if peek == Peek::Object {
                        Kind::Object
                    } else {
                        Kind::Other
                    };
                    match k {
                        "method" => m.method = true,
                        "result" => m.result = Some(kind),
                        "error" => m.error = Some(kind),
                        _ => {}
                    }
                }
            }
            Ok(())
        })?;
        Ok(m)
    }

    /// A result object (depth 1 → 2).
    fn result(&mut self) -> Result<Listing, StrictError> {
        let mut listing = Listing::default();
        self.count_value()?;
        self.object(|r, k, folded| {
            let member = Listed::of_member(k);
            let member_variant = member.is_none() && members().contains(&folded);
            if member_variant || Self::variant(k, folded, r.known.result) {
                listing.member_variant |= member_variant;
                listing.variant.get_or_insert_with(|| k.into());
            }
            match (k, member) {
                (_, Some(listed)) => {
                    let peek = r.jiter.peek().map_err(syntax)?;
                    let entries = if peek == Peek::Array {
                        Ok(r.entries(listed)?)
                    } else {
                        r.value(peek, 2)?;
                        Err(())
                    };
                    listing.lists_twice |= listing.entries.is_some();
                    listing.entries = Some((listed, entries));
                }
                ("cacheScope", _) => {
                    let (span, _) = r.spanned(2)?;
                    let private = &r.body[span.clone()] == b"\"private\"";
                    listing.cache_scope = Some((span, private));
                }
                ("nextCursor", _) => {
                    let (span, _) = r.spanned(2)?;
                    listing.next_cursor = Some(span);
                }
                _ => {
                    r.spanned(2)?;
                }
            }
            Ok(())
        })?;
        Ok(listing)
    }

    /// A list's array (depth 2 → 3): each entry's span, and for an object its name.
    fn entries(&mut self, listed: Listed) -> Result<Vec<Entry>, StrictError> {
        self.count_value()?;
        let mut entries = Vec::new();
        let mut next = self.jiter.known_array().map_err(syntax)?;
        while let Some(peek) = next {
            let start = self.jiter.current_index();
            let mut entry = Entry {
                span: start..start,
                object: peek == Peek::Object,
                variant: None,
                name: None,
            };
            if entry.object {
                self.entry(&mut entry, listed)?;
            } else {
                self.value(peek, 3)?;
            }
            entry.span.end = self.jiter.current_index();
            entries.push(entry);
            next = self.jiter.array_step().map_err(syntax)?;
        }
        Ok(entries)
    }

    /// One entry object (depth 3 → 4).
    fn entry(&mut self, entry: &mut Entry, listed: Listed) -> Result<(), StrictError> {
        self.count_value()?;
        let known = self.known.entry[listed as usize];
        let name_key = listed.name_key();
        self.object(|r, k, folded| {
            if entry.variant.is_none() && Self::variant(k, folded, known) {
                entry.variant = Some(k.into());
            }
            let (span, peek) = r.spanned(4)?;
            if k == name_key && peek == Peek::String {
                entry.name = Some(r.string(span));
            }
            Ok(())
        })
    }

    /// An object's members (the reader at its `{`): each key checked against the others,
    /// then `member` reads its value.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &str, Folded) -> Result<(), StrictError>,
    ) -> Result<(), StrictError> {
        let mut seen = ObjectKeys::default();
        let mut at = self.jiter.current_index();
        let mut key = self.jiter.known_object().map_err(syntax)?.map(copy_small);
        while let Some(k) = key {
            let folded = self.key(&mut seen, &k, at)?;
            member(self, &k, folded)?;
            at = self.jiter.current_index();
            key = self.jiter.next_key().map_err(syntax)?.map(copy_small);
        }
        Ok(())
    }

    /// The string whose JSON text is at `span` (read already): where its text is when it
    /// has no escapes.
    fn string(&self, span: Range<usize>) -> Name {
        let inside = span.start + 1..span.end - 1;
        let text = &self.body[inside.clone()];
        if std::str::from_utf8(text).is_ok() && !text.contains(&b'\\') {
            return Name::At(inside);
        }
        let decoded: String =
            serde_json::from_slice(&self.body[span]).expect("a string read strictly reads");
        Name::Decoded(decoded.into())
    }
}

/// At most 16 bytes in a `u128`, zeros after them.
fn packed(bytes: &[u8]) -> u128 {
    let mut packed = [0u8; 16];
    packed[..bytes.len()].copy_from_slice(bytes);
    u128::from_le_bytes(packed)
}

/// 16 bytes packed in a `u128`, each ASCII letter in lower case; `None` if a byte is not
/// ASCII. Per byte (all under 0x80, so no sum carries into the next): the top bit of
/// `b + 0x3f` is set when `b >= b'A'`, that of `b + 0x25` when `b > b'Z'`; a capital gains
/// 0x20.
fn ascii_lowercase(bytes: u128) -> Option<u128> {
    const ONES: u128 = u128::MAX / 0xff;
    const TOP: u128 = ONES * 0x80;
    if bytes & TOP != 0 {
        return None;
    }
    let from_a = bytes + ONES * u128::from(0x80 - b'A');
    let past_z = bytes + ONES * u128::from(0x80 - b'Z' - 1);
    let capital = from_a & !past_z & TOP;
    Some(bytes | (capital >> 2))
}

/// One level deeper than `depth`, or refused past serde_json's limit.
fn deeper(depth: usize) -> Result<usize, StrictError> {
    if depth >= MAX_DEPTH {
        return Err(StrictError::Syntax("recursion limit exceeded".into()));
    }
    Ok(depth + 1)
}

/// A key as read, kept while its value is read (jiter lends it only until then): on the
/// stack for the usual short key.
enum KeyText {
    Short(ArrayString<48>),
    Long(String),
}

impl KeyText {
    fn as_str(&self) -> &str {
        match self {
            KeyText::Short(s) => s,
            KeyText::Long(s) => s,
        }
    }
}

impl std::ops::Deref for KeyText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

fn copy_small(key: &str) -> KeyText {
    match ArrayString::from(key) {
        Ok(short) => KeyText::Short(short),
        Err(_) => KeyText::Long(key.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::strict;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    const KEYS: Keys = Keys {
        message: &known(["jsonrpc", "id", "method", "params", "result", "error"]),
        result: &known(["nextCursor", "cacheScope", "ttlMs", "_meta"]),
        entry: [
            &known(["name", "description"]),
            &known(["uri", "name"]),
            &known(["uriTemplate", "name"]),
            &known(["name", "arguments"]),
            &known(["taskId", "status"]),
        ],
    };

    /// The verdict of a reader: read, or refused as what.
    fn verdict<T>(r: Result<T, StrictError>) -> Result<(), Option<Ambiguity>> {
        match r {
            Ok(_) => Ok(()),
            Err(StrictError::Ambiguous { what, .. }) => Err(Some(what)),
            Err(_) => Err(None),
        }
    }

    /// Both read `body`, or both refuse it; when it is well-formed JSON, for the same
    /// ambiguity. (Broken text may be refused for another of its faults first: serde_json
    /// reads a key before the colon after it, jiter both at once.)
    fn agree(body: &[u8]) -> Result<(), TestCaseError> {
        let ours = verdict(read(body, &KEYS));
        let theirs = verdict(strict::parse(body));
        let text = String::from_utf8_lossy(body);
        prop_assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{:?}: {:?} {:?}",
            text,
            ours,
            theirs
        );
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            prop_assert_eq!(ours, theirs, "{:?}", text);
        }
        Ok(())
    }

    /// JSON whose keys often fold alike or repeat, whose numbers reach past 2^53, with
    /// strings that need escapes.
    fn tricky_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-(MAX_SAFE_INTEGER as i64)..=MAX_SAFE_INTEGER as i64).prop_map(|n| json!(n)),
            (-1e17f64..1e17).prop_map(|f| json!(f)),
            "\\PC{0,6}".prop_map(Value::String),
            "[\"\\\\\u{0}-\u{1f}\u{7f}é\u{2028}]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec(("[aAsSkKſ\u{212a}\"é]{1,3}", inner), 0..5).prop_map(
                    |members| {
                        // Written by hand below, so keys may repeat: a Map would merge them.
                        Value::Array(vec![Value::String("\u{0}obj".into()), json!(members)])
                    }
                ),
            ]
        })
    }

    /// `v` as JSON text; `[ "\0obj", [[k, v]...] ]` is written as an object with those members,
    /// repeated keys and all; `pretty` adds white space.
    fn write(v: &Value, pretty: bool, out: &mut String) {
        let gap = if pretty { "\n  " } else { "" };
        match v {
            Value::Array(items) if items.first() == Some(&json!("\u{0}obj")) => {
                out.push('{');
                for (i, m) in items[1].as_array().unwrap().iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(gap);
                    out.push_str(&m[0].to_string());
                    out.push_str(if pretty { ": " } else { ":" });
                    write(&m[1], pretty, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(gap);
                    write(item, pretty, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// Bytes that change what JSON text means where they land.
    fn stray_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            proptest::sample::select(b"{}[]\",:\\ \t\r\n0123456789eE.-+tfnulx".to_vec()),
            Just(0x00u8),
            Just(0x1f),
            Just(0x7f),
            Just(0x80),
            Just(0xc3),
            Just(0xef),
            Just(0xff),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the text, valid or broken by a few stray bytes, this reader reads it or
        /// refuses it as the request reader does (and for the same ambiguity).
        #[test]
        fn refuses_what_the_request_reader_refuses(
            v in tricky_json(),
            pretty in any::<bool>(),
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), stray_byte(), 0u8..3), 0..3),
        ) {
            let mut text = String::new();
            write(&v, pretty, &mut text);
            let mut body = text.into_bytes();
            for (at, byte, how) in edits {
                let i = at.index(body.len() + 1);
                match how {
                    0 => body.insert(i, byte),
                    1 if i < body.len() => body[i] = byte,
                    _ if i < body.len() => {
                        body.remove(i);
                    }
                    _ => {}
                }
            }
            agree(&body)?;
        }
    }

    #[test]
    fn refuses_at_the_same_limits() {
        for depth in [126, 127, 128, 129] {
            let deep = "[".repeat(depth) + &"]".repeat(depth);
            agree(deep.as_bytes()).unwrap();
            let objects = "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth);
            agree(objects.as_bytes()).unwrap();
        }
        assert!(read(("[".repeat(127) + &"]".repeat(127)).as_bytes(), &KEYS).is_ok());
        for n in [MAX_VALUES - 1, MAX_VALUES] {
            let body = format!("[{}]", vec!["0"; n].join(","));
            agree(body.as_bytes()).unwrap();
        }
        for n in [MAX_KEYS, MAX_KEYS + 1] {
            let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":0")).collect();
            agree(format!("{{{}}}", keys.join(",")).as_bytes()).unwrap();
        }
        for n in [
            "9007199254740991",
            "-9007199254740991",
            "9007199254740992",
            "9007199254740991.5",
            "9.007199254740991e15",
            "9.007199254740993e15",
            "18446744073709551616",
            "1e308",
            "1e309",
            "-0",
            "0.0e-400",
            "01",
            "1.",
            ".5",
            "+1",
            "-",
            "1e",
            "Infinity",
            "NaN",
        ] {
            agree(format!("{{\"n\": {n}}}").as_bytes()).unwrap();
        }
        for body in [
            &b"\xef\xbb\xbf{}"[..],
            b"{} x",
            b"",
            b" ",
            b"{\"a\":\"\\ud800\"}",
        ] {
            agree(body).unwrap();
        }
        // A twin among few keys and among many (hashed), written plainly or escaped: told
        // apart as a repeat or a case variant as the request reader tells them.
        for many in [2, 20] {
            let keys: Vec<String> = (0..many).map(|i| format!("\"k{i}\": {i}")).collect();
            for twin in [
                r#""k1""#,
                r#""K1""#,
                r#""\u006b1""#,
                r#""\u212a1""#,
                r#""k1 ""#,
            ] {
                let body = format!("{{{}, {twin}: [1]}}", keys.join(", "));
                agree(body.as_bytes()).unwrap();
            }
        }
    }

    proptest! {
        /// Folding 16 packed bytes at once is folding each byte, for every byte there is.
        #[test]
        fn packed_bytes_fold_as_each_byte_does(bytes in any::<[u8; 16]>()) {
            let each = bytes.map(|b| b.to_ascii_lowercase());
            let expected = bytes.is_ascii().then(|| u128::from_le_bytes(each));
            prop_assert_eq!(ascii_lowercase(u128::from_le_bytes(bytes)), expected);
        }
    }

    #[test]
    fn folds_every_ascii_byte_as_the_standard_library_does() {
        for b in 0u8..=0x7f {
            for at in [0, 7, 15] {
                let mut bytes = [b'a'; 16];
                bytes[at] = b;
                let folded = ascii_lowercase(u128::from_le_bytes(bytes)).unwrap();
                assert_eq!(folded.to_le_bytes()[at], b.to_ascii_lowercase(), "{b:#x}");
            }
        }
    }

    /// A twin is found whichever way each key's folded form is made: packed in place (short
    /// ASCII), packed after folding (non-ASCII folding to 16 bytes or fewer), or hashed (longer),
    /// at the lengths where one way gives way to the other.
    #[test]
    fn finds_twins_across_the_ways_keys_are_folded() {
        for len in [1, 15, 16, 17, 40] {
            let rest = "k".repeat(len - 1);
            let plain = format!("k{rest}");
            for twin in [
                format!("K{rest}"),
                format!("\u{212a}{rest}"),
                format!("\\u212a{rest}"),
                format!("\\u004b{rest}"),
                plain.clone(),
            ] {
                for others in [0, 12] {
                    let keys: Vec<String> = (0..others).map(|i| format!("\"o{i}\": {i}")).collect();
                    let body = format!(
                        "{{{}\"{plain}\": 1, \"{twin}\": 2}}",
                        keys.iter().map(|k| format!("{k}, ")).collect::<String>()
                    );
                    assert!(read(body.as_bytes(), &KEYS).is_err(), "{body}");
                    agree(body.as_bytes()).unwrap();
                }
            }
            // Keys one letter apart are not twins, at every length.
            let other = format!("{rest}j");
            let body = format!("{{\"{plain}\": 1, \"{other}\": 2}}");
            assert!(read(body.as_bytes(), &KEYS).is_ok(), "{body}");
        }
    }

    #[test]
    fn notes_where_a_list_lies() {
        let body =
            br#"{"jsonrpc": "2.0", "id": 7, "result": {"tools": [ {"name": "a", "x": [1]}, 5,
            {"Name": "b"}, {"name": "c\u0041"} ], "cacheScope": "public", "ttlMS": 1}}"#;
        let m = read(body, &KEYS).unwrap();
        assert!(m.object && !m.method && m.variant.is_none());
        assert_eq!(&body[m.id.unwrap()], b"7");
        assert_eq!(m.result, Some(Kind::Object));
        let (listed, tools) = m.listing.entries.unwrap();
        assert_eq!(listed, Listed::Tools);
        let tools = tools.unwrap();
        let text = |t: &Entry| {
            std::str::from_utf8(&body[t.span.clone()])
                .unwrap()
                .to_owned()
        };
        assert_eq!(text(&tools[0]), r#"{"name": "a", "x": [1]}"#);
        let name = |t: &Entry| t.name.as_ref().map(|n| n.text(body).to_owned());
        assert_eq!(name(&tools[0]).as_deref(), Some("a"));
        assert!(!tools[1].object && text(&tools[1]) == "5");
        assert_eq!(tools[2].variant.as_deref(), Some("Name"));
        assert_eq!(tools[2].name, None);
        assert_eq!(name(&tools[3]).as_deref(), Some("cA"), "escapes decoded");
        let (scope, private) = m.listing.cache_scope.unwrap();
        assert_eq!((&body[scope], private), (&b"\"public\""[..], false));
        assert_eq!(m.listing.variant.as_deref(), Some("ttlMS"));
        assert!(!m.listing.member_variant && !m.listing.lists_twice);
        let hidden = read(br#"{"id": 1, "result": {"ttlMS": 1, "Tools": []}}"#, &KEYS).unwrap();
        assert_eq!(hidden.listing.variant.as_deref(), Some("ttlMS"));
        assert!(hidden.listing.member_variant && hidden.listing.entries.is_none());
    }

    #[test]
    fn reads_every_list_by_its_member_and_name_key() {
        for listed in Listed::ALL {
            let (member, key) = (listed.member(), listed.name_key());
            let body = format!(
                r#"{{"id": 1, "result": {{"{member}": [{{"{key}": "x://a"}}, {{"name2": 1}}]}}}}"#
            );
            let m = read(body.as_bytes(), &KEYS).unwrap();
            let (found, entries) = m.listing.entries.unwrap();
            assert_eq!(found, listed);
            let entries = entries.unwrap();
            let name = entries[0].name.as_ref().map(|n| n.text(body.as_bytes()));
            assert_eq!(name, Some("x://a"), "{body}");
            assert_eq!(entries[1].name, None);
            // A case variant of the member, however it folds, is noted, not read.
            let upper = member.to_uppercase();
            let body = format!(r#"{{"id": 1, "result": {{"{upper}": []}}}}"#);
            let m = read(body.as_bytes(), &KEYS).unwrap();
            assert!(
                m.listing.member_variant && m.listing.entries.is_none(),
                "{body}"
            );
        }
        let body = r#"{"id": 1, "result": {"resourceTemplateſ": [], "x": 1}}"#;
        assert!(read(body.as_bytes(), &KEYS).unwrap().listing.member_variant);
        let twice = br#"{"id": 1, "result": {"tools": [], "prompts": []}}"#;
        assert!(read(twice, &KEYS).unwrap().listing.lists_twice);
    }
}
