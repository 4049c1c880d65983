//! Policy source text → a document tree that remembers where each value started.
//!
//! serde_json and yaml-rust2's loader both forget positions, and serde_json silently keeps the
//! last of two duplicate keys; validation needs the line of every value and must reject
//! duplicates, so JSON is parsed by hand here and YAML is built from yaml-rust2's events.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::{pointer_token, PolicyError};

/// Deepest nesting either parser accepts; keeps hostile input from exhausting the stack.
const MAX_DEPTH: usize = 128;

/// A value in a policy document, with the 1-based line where it starts (`None` when the
/// document did not come from text).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub line: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    /// Members in document order; keys are unique.
    Object(Vec<Member>),
}

/// One `key: value` member of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    /// Line of the key, which is where errors about the key itself (unknown, duplicate) point.
    pub key_line: Option<u32>,
    pub value: Node,
}

impl Node {
    fn new(value: NodeValue, line: Option<u32>) -> Node {
        Node { value, line }
    }

    /// Build a tree from a JSON value (policies handed over as Python dicts); no lines.
    pub fn from_json_value(value: &Value) -> Node {
        let value = match value {
            Value::Null => NodeValue::Null,
            Value::Bool(b) => NodeValue::Bool(*b),
            Value::Number(n) => NodeValue::Number(n.clone()),
            Value::String(s) => NodeValue::String(s.clone()),
            Value::Array(items) => {
                NodeValue::Array(items.iter().map(Node::from_json_value).collect())
            }
            Value::Object(map) => NodeValue::Object(
                map.iter()
                    .map(|(key, value)| Member {
                        key: key.clone(),
                        key_line: None,
                        value: Node::from_json_value(value),
                    })
                    .collect(),
            ),
        };
        Node::new(value, None)
    }

    /// The tree as a JSON value (condition operands are kept in this form).
    pub fn to_json_value(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Number(n) => Value::Number(n.clone()),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Array(items) => {
                Value::Array(items.iter().map(Node::to_json_value).collect())
            }
            NodeValue::Object(members) => {
                let mut map = Map::new();
                for m in members {
                    map.insert(m.key.clone(), m.value.to_json_value());
                }
                Value::Object(map)
            }
        }
    }

    /// Compact JSON with no whitespace, keys in document order, strings and numbers in
    /// serde_json's spelling. The same document written as JSON or YAML, with any layout or
    /// comments, gives the same text. Key order is kept rather than sorted because the order
    /// of `tools` breaks ties between equally specific globs, so it is part of the policy.
    pub fn to_canonical_json(&self) -> String {
        let mut out = String::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        match &self.value {
            NodeValue::Null => out.push_str("null"),
            NodeValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            NodeValue::Number(n) => {
                let _ = write!(out, "{n}");
            }
            NodeValue::String(s) => write_json_string(s, out),
            NodeValue::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_canonical(out);
                }
                out.push(']');
            }
            NodeValue::Object(members) => {
                out.push('{');
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(&m.key, out);
                    out.push(':');
                    m.value.write_canonical(out);
                }
                out.push('}');
            }
        }
    }

    /// The member named `key`, when this is an object that has one.
    pub fn get(&self, key: &str) -> Option<&Member> {
        match &self.value {
            NodeValue::Object(members) => members.iter().find(|m| m.key == key),
            _ => None,
        }
    }

    /// What kind of value this is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Number(_) => "a number",
            NodeValue::String(_) => "a string",
            NodeValue::Array(_) => "an array",
            NodeValue::Object(_) => "an object",
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    // serde_json's string escaping cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// The line is the error's own (every reader of it prints it once); the column is told.
fn syntax_error(line: u32, column: u32, message: impl std::fmt::Display) -> PolicyError {
    PolicyError {
        pointer: String::new(),
        line: Some(line),
        message: format!("{message} at column {column}"),
    }
}

fn duplicate_key(parent: &str, key: &str, line: Option<u32>) -> PolicyError {
    PolicyError {
        pointer: format!("{parent}/{}", pointer_token(key)),
        line,
        message: format!("duplicate key {key:?}"),
    }
}

/// How a document is written. Every reader of policy text (files, strings, policy tests,
/// imports; in Rust and through the binding) chooses it here, so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// `asked` is `json`, `yaml` or `auto`. For `auto`, a file name ending `.json`, `.yaml` or
    /// `.yml` decides; otherwise the text is JSON when it starts (after a byte-order mark and
    /// whitespace) with `{` or `[`, and YAML when it does not.
    pub fn choose(asked: &str, name: Option<&str>, text: &str) -> Result<Format, String> {
        match asked {
            "json" => return Ok(Format::Json),
            "yaml" => return Ok(Format::Yaml),
            "auto" => {}
            other => return Err(format!("format must be json, yaml or auto, not {other:?}")),
        }
        let extension = name
            .and_then(|n| n.rsplit_once('.'))
            .map(|(_, e)| e.to_ascii_lowercase());
        Ok(match extension.as_deref() {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ => {
                let start = text.trim_start_matches('\u{feff}').trim_start();
                if start.starts_with('{') || start.starts_with('[') {
                    Format::Json
                } else {
                    Format::Yaml
                }
            }
        })
    }

    /// Parse `text` written this way.
    pub fn parse(self, text: &str) -> Result<Node, PolicyError> {
        match self {
            Format::Json => parse_json(text),
            Format::Yaml => parse_yaml(text),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

/// Parse strict JSON (RFC 8259) into a [`Node`] tree. Duplicate keys are an error; a leading
/// byte-order mark is skipped.
pub fn parse_json(text: &str) -> Result<Node, PolicyError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = JsonParser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
        line_start: 0,
    };
    parser.skip_ws();
    let node = parser.value(&mut String::new(), 0)?;
    parser.skip_ws();
    if parser.pos < parser.bytes.len() {
        return Err(parser.error("unexpected text after the JSON document"));
    }
    Ok(node)
}

struct JsonParser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: u32,
    /// Byte offset where the current line starts, for column numbers.
    line_start: usize,
}

impl JsonParser<'_> {
    fn error(&self, message: impl std::fmt::Display) -> PolicyError {
        let end = self.pos.min(self.bytes.len());
        // Columns count characters, not bytes; `pos` may sit inside a multi-byte character
        // only after a bug, so fall back to the byte count rather than panic.
        let column = self
            .text
            .get(self.line_start..end)
            .map_or(end - self.line_start, |s| s.chars().count());
        syntax_error(self.line, column as u32 + 1, message)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = self.pos;
                }
                _ => break,
            }
        }
    }

    fn expect_literal(&mut self, word: &str) -> Result<(), PolicyError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal (expected a JSON value)"))
        }
    }

    /// Parse one value at `pos` (whitespace already skipped). `pointer` is the value's JSON
    /// pointer, extended in place while descending.
    fn value(&mut self, pointer: &mut String, depth: usize) -> Result<Node, PolicyError> {
        let line = Some(self.line);
        let value = match self.peek() {
            None => return Err(self.error("unexpected end of input (expected a JSON value)")),
            Some(b'{') => self.object(pointer, depth)?,
            Some(b'[') => self.array(pointer, depth)?,
            Some(b'"') => NodeValue::String(self.string()?),
            Some(b't') => {
                self.expect_literal("true")?;
                NodeValue::Bool(true)
            }
            Some(b'f') => {
                self.expect_literal("false")?;
                NodeValue::Bool(false)
            }
            Some(b'n') => {
                self.expect_literal("null")?;
                NodeValue::Null
            }
            Some(b'-' | b'0'..=b'9') => NodeValue::Number(self.number()?),
            Some(_) => {
                let c = self.text[self.pos..].chars().next().unwrap_or('?');
                return Err(self.error(format!(
                    "unexpected character {c:?} (expected a JSON value)"
                )));
            }
        };
        Ok(Node::new(value, line))
    }

    fn enter(&self, depth: usize) -> Result<usize, PolicyError> {
        if depth >= MAX_DEPTH {
            Err(self.error(format!("document nested deeper than {MAX_DEPTH} levels")))
        } else {
            Ok(depth + 1)
        }
    }

    fn object(&mut self, pointer: &mut String, depth: usize) -> Result<NodeValue, PolicyError> {
        let depth = self.enter(depth)?;
        self.pos += 1; // '{'
        let mut members: Vec<Member> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(NodeValue::Object(members));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key_line = Some(self.line);
            let key = self.string()?;
            if members.iter().any(|m| m.key == key) {
                return Err(duplicate_key(pointer, &key, key_line));
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(&pointer_token(&key));
            let value = self.value(pointer, depth)?;
            pointer.truncate(len);
            members.push(Member {
                key,
                key_line,
                value,
            });
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(NodeValue::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, pointer: &mut String, depth: usize) -> Result<NodeValue, PolicyError> {
        let depth = self.enter(depth)?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(NodeValue::Array(items));
        }
        loop {
            let len = pointer.len();
            let _ = write!(pointer, "/{}", items.len());
            items.push(self.value(pointer, depth)?);
            pointer.truncate(len);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(NodeValue::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    /// A string literal at `pos` (which holds the opening quote).
    fn string(&mut self) -> Result<String, PolicyError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            // Copy the run of plain characters in one go; the input is valid UTF-8 and the
            // run ends on an ASCII byte, so the slice boundaries are character boundaries.
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.escape()?;
                    out.push(c);
                }
                Some(_) => return Err(self.error("control character in a string (escape it)")),
            }
        }
    }

    /// The character of an escape sequence; `pos` is just after the backslash.
    fn escape(&mut self) -> Result<char, PolicyError> {
        let Some(b) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                match first {
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return Err(self.error("unpaired surrogate in \\u escape"));
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.error("unpaired surrogate in \\u escape"));
                        }
                        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))?
                    }
                    0xDC00..=0xDFFF => return Err(self.error("unpaired surrogate in \\u escape")),
                    _ => char::from_u32(first).ok_or_else(|| self.error("invalid \\u escape"))?,
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape sequence"));
            }
        })
    }

    fn hex4(&mut self) -> Result<u32, PolicyError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit));
        let Some(digits) = digits else {
            return Err(self.error("\\u must be followed by four hex digits"));
        };
        // Checked above: four ASCII hex digits.
        let code = u32::from_str_radix(std::str::from_utf8(digits).unwrap_or("0"), 16).unwrap_or(0);
        self.pos += 4;
        Ok(code)
    }

    /// A number at `pos`, following RFC 8259's grammar and serde_json's choice of
    /// representation: integers that fit are u64/i64, everything else (and `-0`) is f64.
    fn number(&mut self) -> Result<Number, PolicyError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(self.error("leading zeros are not allowed in numbers"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit after the decimal point"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit in the exponent"));
            }
            self.digits();
        }
        let text = &self.text[start..self.pos];
        if integer {
            if negative {
                if let Ok(n) = text.parse::<i64>() {
                    if n != 0 {
                        return Ok(Number::from(n));
                    }
                }
            } else if let Ok(n) = text.parse::<u64>() {
                return Ok(Number::from(n));
            }
        }
        let f: f64 = text.parse().map_err(|_| self.error("invalid number"))?;
        Number::from_f64(f).ok_or_else(|| self.error(format!("number {text} is out of range")))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// YAML
// ---------------------------------------------------------------------------------------------

/// Parse a single YAML document into a [`Node`] tree. Plain scalars are typed with the YAML
/// 1.2 core schema; quoted and block scalars are strings. Duplicate keys, non-string keys,
/// aliases and multiple documents are errors. An empty document is `null`.
pub fn parse_yaml(text: &str) -> Result<Node, PolicyError> {
    // A leading byte-order mark is no part of the document (YAML 1.2, 5.2), as for JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut events = EventLog::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut events, true) {
        let mark = e.marker();
        return Err(syntax_error(
            mark.line() as u32,
            mark.col() as u32 + 1,
            e.info(),
        ));
    }
    TreeBuilder::build(events.0)
}

#[derive(Default)]
struct EventLog(Vec<(Event, Marker)>);

impl MarkedEventReceiver for EventLog {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.0.push((ev, mark));
    }
}

/// A collection under construction while replaying events.
struct Open {
    pointer: String,
    line: u32,
    kind: OpenKind,
}

enum OpenKind {
    Sequence(Vec<Node>),
    /// `key` holds a key whose value has not arrived yet.
    Mapping {
        members: Vec<Member>,
        key: Option<(String, u32)>,
    },
}

/// Replays parser events into a tree with an explicit stack (no recursion on document depth).
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Open>,
    root: Option<Node>,
    documents: usize,
}

impl TreeBuilder {
    fn build(events: Vec<(Event, Marker)>) -> Result<Node, PolicyError> {
        let mut builder = TreeBuilder::default();
        for (event, mark) in events {
            builder.event(event, mark.line() as u32)?;
        }
        Ok(builder.root.unwrap_or(Node::new(NodeValue::Null, Some(1))))
    }

    /// The pointer the next value will get, for errors about it.
    fn next_pointer(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(open) => match &open.kind {
                OpenKind::Sequence(items) => format!("{}/{}", open.pointer, items.len()),
                OpenKind::Mapping {
                    key: Some((k, _)), ..
                } => {
                    format!("{}/{}", open.pointer, pointer_token(k))
                }
                OpenKind::Mapping { key: None, .. } => open.pointer.clone(),
            },
        }
    }

    fn error(&self, line: u32, message: impl Into<String>) -> PolicyError {
        PolicyError {
            pointer: self.next_pointer(),
            line: Some(line),
            message: message.into(),
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Open {
                kind: OpenKind::Mapping { key: None, .. },
                ..
            })
        )
    }

    fn event(&mut self, event: Event, line: u32) -> Result<(), PolicyError> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.error(line, "only one YAML document is allowed"));
                }
                Ok(())
            }
            Event::Alias(_) => Err(self.error(
                line,
                "YAML aliases (*name) are not supported in policies; write the value out",
            )),
            Event::Scalar(text, style, _anchor, tag) => {
                let tag = tag.as_ref().map(|t| (t.handle.as_str(), t.suffix.as_str()));
                let value = yaml_scalar(text, style, tag).map_err(|m| self.error(line, m))?;
                if self.expecting_key() {
                    self.key(value, line)
                } else {
                    self.attach(Node::new(value, Some(line)));
                    Ok(())
                }
            }
            Event::SequenceStart(_, tag) => self.open(tag, false, line),
            Event::MappingStart(_, tag) => self.open(tag, true, line),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    let value = match open.kind {
                        OpenKind::Sequence(items) => NodeValue::Array(items),
                        OpenKind::Mapping { members, .. } => NodeValue::Object(members),
                    };
                    self.attach(Node::new(value, Some(open.line)));
                }
                Ok(())
            }
        }
    }

    /// A scalar in key position: must be a string not seen before in this mapping.
    fn key(&mut self, value: NodeValue, line: u32) -> Result<(), PolicyError> {
        let NodeValue::String(key) = value else {
            let kind = Node::new(value, None).kind();
            let message = format!("mapping keys must be strings, found {kind} (quote the key)");
            return Err(self.error(line, message));
        };
        if let Some(Open {
            pointer,
            kind: OpenKind::Mapping { members, key: slot },
            ..
        }) = self.stack.last_mut()
        {
            if members.iter().any(|m| m.key == key) {
                return Err(duplicate_key(pointer, &key, Some(line)));
            }
            *slot = Some((key, line));
        }
        Ok(())
    }

    fn open(&mut self, tag: Option<Tag>, mapping: bool, line: u32) -> Result<(), PolicyError> {
        if self.expecting_key() {
            return Err(self.error(line, "mapping keys must be strings, found a collection"));
        }
        let standard = if mapping { "map" } else { "seq" };
        if let Some(t) = tag.filter(|t| !(t.handle == CORE_TAG && t.suffix == standard)) {
            let message = format!("unsupported YAML tag {}{}", t.handle, t.suffix);
            return Err(self.error(line, message));
        }
        if self.stack.len() >= MAX_DEPTH {
            let message = format!("document nested deeper than {MAX_DEPTH} levels");
            return Err(self.error(line, message));
        }
        let kind = if mapping {
            OpenKind::Mapping {
                members: Vec::new(),
                key: None,
            }
        } else {
            OpenKind::Sequence(Vec::new())
        };
        let pointer = self.next_pointer();
        self.stack.push(Open {
            pointer,
            line,
            kind,
        });
        Ok(())
    }

    /// Add a finished value to the open collection, or make it the document.
    fn attach(&mut self, node: Node) {
        let Some(open) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut open.kind {
            OpenKind::Sequence(items) => items.push(node),
            OpenKind::Mapping { members, key } => {
                if let Some((key, key_line)) = key.take() {
                    members.push(Member {
                        key,
                        key_line: Some(key_line),
                        value: node,
                    });
                }
            }
        }
    }
}

/// Handle of the standard tags (`!!str` is `tag:yaml.org,2002:` + `str`).
const CORE_TAG: &str = "tag:yaml.org,2002:";

/// Type one scalar. Only plain scalars are resolved (YAML 1.2 core schema); an explicit
/// standard tag (`!!str`, `!!int`, ...) forces that type.
fn yaml_scalar(
    text: String,
    style: TScalarStyle,
    tag: Option<(&str, &str)>,
) -> Result<NodeValue, String> {
    if let Some((handle, suffix)) = tag {
        if handle != CORE_TAG {
            return Err(format!("unsupported YAML tag {handle}{suffix}"));
        }
        let resolved = match suffix {
            "str" => return Ok(NodeValue::String(text)),
            "null" | "bool" | "int" | "float" => resolve_plain(&text)?,
            _ => return Err(format!("unsupported YAML tag !!{suffix}")),
        };
        let matches = matches!(
            (&resolved, suffix),
            (NodeValue::Null, "null")
                | (NodeValue::Bool(_), "bool")
                | (NodeValue::Number(_), "int" | "float")
        );
        return if matches {
            Ok(resolved)
        } else {
            Err(format!("{text:?} is not a valid !!{suffix}"))
        };
    }
    if style == TScalarStyle::Plain {
        resolve_plain(&text)
    } else {
        Ok(NodeValue::String(text))
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: &str) -> Result<NodeValue, String> {
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => NodeValue::Null,
        "true" | "True" | "TRUE" => NodeValue::Bool(true),
        "false" | "False" | "FALSE" => NodeValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!(
                "{text} is not a finite number and cannot be used in a policy"
            ));
        }
        _ => match yaml_number(text) {
            Some(n) => NodeValue::Number(n),
            None => NodeValue::String(text.to_owned()),
        },
    })
}

/// Core-schema ints (`[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`) and floats
/// (`[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`); `None` for anything else.
fn yaml_number(text: &str) -> Option<Number> {
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8)
            .ok()
            .filter(|_| !oct.starts_with(['+', '-']))
            .map(Number::from);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16)
            .ok()
            .filter(|_| !hex.starts_with(['+', '-']))
            .map(Number::from);
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let valid_mantissa = match fraction {
        None => !whole.is_empty() && all_digits(whole),
        Some(f) => all_digits(whole) && all_digits(f) && !(whole.is_empty() && f.is_empty()),
    };
    let valid_exponent = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        !digits.is_empty() && all_digits(digits)
    });
    if !valid_mantissa || !valid_exponent {
        return None;
    }
    if fraction.is_none() && exponent.is_none() {
        let negative = text.starts_with('-');
        if negative {
            if let Ok(n) = text.parse::<i64>() {
                return Some(Number::from(n));
            }
        } else if let Ok(n) = unsigned.parse::<u64>() {
            return Some(Number::from(n));
        }
    }
    // Rust's float parser accepts every form matched above (`1.`, `.5`, `+1e3`).
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line_of<'a>(node: &'a Node, key: &str) -> &'a Member {
        node.get(key).unwrap_or_else(|| panic!("no key {key}"))
    }

    #[test]
    fn json_lines_and_order() {
        let text = "{\n  \"b\": 1,\n  \"a\":\n    [true, null, \"x\"]\n}";
        let node = parse_json(text).unwrap();
        assert_eq!(node.line, Some(1));
        let NodeValue::Object(members) = &node.value else {
            panic!()
        };
        assert_eq!(
            members.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(line_of(&node, "b").key_line, Some(2));
        assert_eq!(line_of(&node, "a").key_line, Some(3));
        assert_eq!(line_of(&node, "a").value.line, Some(4));
        assert_eq!(
            node.to_json_value(),
            json!({"a": [true, null, "x"], "b": 1})
        );
    }

    #[test]
    fn json_numbers_keep_integer_vs_float() {
        let v = parse_json("[1, -2, 3.0, 1e2, -0, 18446744073709551615, 18446744073709551616]")
            .unwrap();
        let serde: Value = serde_json::from_str(
            "[1, -2, 3.0, 1e2, -0, 18446744073709551615, 18446744073709551616]",
        )
        .unwrap();
        assert_eq!(v.to_json_value(), serde);
        let Value::Array(items) = v.to_json_value() else {
            panic!()
        };
        assert!(items[0].is_u64() && items[1].is_i64() && items[2].is_f64() && items[3].is_f64());
        assert!(items[4].is_f64(), "-0 is a float, as in serde_json");
    }

    #[test]
    fn json_string_escapes() {
        let v = parse_json(r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(
            v.value,
            NodeValue::String("a\"\\/\u{8}\u{c}\n\r\té😀".into())
        );
        for bad in [
            r#""\ud83d""#,
            r#""\ude00x""#,
            r#""\x""#,
            "\"a\nb\"",
            r#""\u12""#,
            "\"abc",
        ] {
            assert!(parse_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_rejects_non_rfc_syntax() {
        for bad in [
            "{\"a\": 1,}",
            "[1,]",
            "// c\n{}",
            "{a: 1}",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "'x'",
            "{} {}",
            "",
            "nul",
            "NaN",
            "1e400",
        ] {
            assert!(parse_json(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn json_syntax_error_has_line_and_column() {
        let e = parse_json("{\n  \"a\": 1\n  \"b\": 2\n}").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.pointer, "");
        assert!(e.message.contains("column 3"), "{}", e.message);
    }

    #[test]
    fn json_duplicate_key() {
        let e = parse_json("{\"t\": {\"a/b\": 1,\n \"a/b\": 2}}").unwrap_err();
        assert_eq!(e.pointer, "/t/a~1b");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("duplicate key"));
    }

    #[test]
    fn json_depth_limit() {
        let deep = "[".repeat(10_000);
        assert!(parse_json(&deep)
            .unwrap_err()
            .message
            .contains("nested deeper"));
    }

    #[test]
    fn yaml_core_schema() {
        let node = parse_yaml(
            "a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf:\ng: \"1\"\nh: yes\ni: 0x1f\nj: 1e3\nk: 'true'\nl: !!str 5\nm: [x, 2]\n",
        )
        .unwrap();
        assert_eq!(
            node.to_json_value(),
            json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": null, "g": "1", "h": "yes",
                   "i": 31, "j": 1000.0, "k": "true", "l": "5", "m": ["x", 2]})
        );
        assert_eq!(line_of(&node, "m").value.line, Some(13));
        assert_eq!(line_of(&node, "c").key_line, Some(3));
    }

    #[test]
    fn yaml_errors() {
        let e = parse_yaml("a:\n  b: 1\n  b: 2\n").unwrap_err();
        assert_eq!((e.pointer.as_str(), e.line), ("/a/b", Some(3)));
        let e = parse_yaml("a: &x 1\nb: *x\n").unwrap_err();
        assert_eq!((e.pointer.as_str(), e.line), ("/b", Some(2)));
        assert!(e.message.contains("alias"));
        let e = parse_yaml("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("one YAML document"));
        let e = parse_yaml("x:\n  1: a\n").unwrap_err();
        assert_eq!((e.pointer.as_str(), e.line), ("/x", Some(2)));
        assert!(e.message.contains("keys must be strings"));
        let e = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line.is_some() && e.message.contains("column"));
        assert!(parse_yaml("a: .inf\n").is_err());
    }

    #[test]
    fn yaml_and_json_agree_including_canonical_form() {
        let json =
            parse_json(r#"{"v": "1", "t": {"x": {"n": [1, 2.5, "s", null, false]}}}"#).unwrap();
        let yaml = parse_yaml("v: '1'\nt:\n  x:\n    n:\n      - 1\n      - 2.5\n      - s\n      - null\n      - false\n")
            .unwrap();
        assert_eq!(json.to_json_value(), yaml.to_json_value());
        assert_eq!(json.to_canonical_json(), yaml.to_canonical_json());
        assert_eq!(
            json.to_canonical_json(),
            r#"{"v":"1","t":{"x":{"n":[1,2.5,"s",null,false]}}}"#
        );
    }

    #[test]
    fn from_json_value_round_trips() {
        let v = json!({"a": [1, {"b": "c"}], "d": null});
        let node = Node::from_json_value(&v);
        assert_eq!(node.line, None);
        assert_eq!(node.to_json_value(), v);
    }
}
