//! Validation of a policy document tree into the [`Policy`] model, by its parts: sections
//! and rules, pins and marks, limits (with windows and amounts), conditions, condition paths.
//!
//! Validation is strict and exhaustive: it walks the whole document, records every problem
//! with its JSON pointer and line, and only yields a policy when there were none. A part that
//! fails validation is left out of the model, which is then discarded anyway.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{PolicyError, PolicyErrors};
use super::keys;
use super::pins::Pins;
use super::source::{parse_json, parse_yaml, Format, Member, Node, NodeValue};
use super::{
    pointer_token, Action, Approval, Compare, Condition, ConditionItem, Confirmation,
    DefaultAction, Fallback, Hide, Limit, MarkRule, Mode, NamePattern, Op, Path, PathRoot,
    PinsFile, PinsRule, Policy, Release, Rule, Scope, Section, Segment, Unpinned,
};
use crate::definitions::definition::Hints;
use crate::kind::Kind;
use crate::kind::{is_mcp_tool_name, MAX_TOOL_NAME};

/// How a policy's pins files are read: the caller's (the core does no I/O), given the path
/// `pins.file` names, relative to the policy's directory. The core hashes the bytes it is
/// handed, so what a reload watches is what was loaded.
pub type ReadFile<'f> = &'f dyn Fn(&std::path::Path) -> std::io::Result<Vec<u8>>;

/// For documents that are not read with their files: a pins file they name is refused.
fn no_files(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let message = format!(
        "{} is not read: this policy was given without its files",
        path.display()
    );
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        message,
    ))
}

impl Policy {
    pub fn from_json_str(text: &str) -> Result<Policy, PolicyErrors> {
        Policy::from_node(&parse_json(text)?)
    }

    pub fn from_yaml_str(text: &str) -> Result<Policy, PolicyErrors> {
        Policy::from_node(&parse_yaml(text)?)
    }

    /// A policy given as a JSON value (e.g. a Python dict); errors carry no line.
    pub fn from_json_value(value: &Value) -> Result<Policy, PolicyErrors> {
        Policy::from_node(&Node::from_json_value(value))
    }

    /// A policy given as a JSON value, its pins files read by `read` (relative to the
    /// working directory).
    pub fn from_json_value_reading(value: &Value, read: ReadFile) -> Result<Policy, PolicyErrors> {
        Policy::load(
            &Node::from_json_value(value),
            std::path::Path::new(""),
            read,
        )
    }

    /// Load text: `format` is `json`, `yaml` or `auto`, chosen with `path` (the file the text
    /// was read from, if any: its name picks the format, its directory is where pins files
    /// are found) by [`Format::choose`]; `read` reads the pins files.
    pub fn from_text(
        text: &str,
        format: &str,
        path: Option<&std::path::Path>,
        read: ReadFile,
    ) -> Result<Policy, PolicyErrors> {
        let name = path.and_then(|p| p.file_name()?.to_str());
        let format = Format::choose(format, name, text).map_err(|message| PolicyError {
            pointer: String::new(),
            line: None,
            message,
        })?;
        let base = path
            .and_then(|p| p.parent())
            .unwrap_or(std::path::Path::new(""));
        Policy::load(&format.parse(text)?, base, read)
    }

    /// Validate a parsed document given without its files (a pins file it names is refused).
    pub fn from_node(node: &Node) -> Result<Policy, PolicyErrors> {
        Policy::load(node, std::path::Path::new(""), &no_files)
    }

    /// Validate a parsed document, its pins files read by `read` relative to `base`.
    fn load(node: &Node, base: &std::path::Path, read: ReadFile) -> Result<Policy, PolicyErrors> {
        let mut loader = Loader::default();
        let (root, servers) = loader.section(node, "", true);
        loader.check_mark_reads();
        let pins = loader.read_pins(&root, &servers, base, read);
        if !loader.errors.is_empty() {
            return Err(PolicyErrors(loader.errors));
        }
        Ok(Policy {
            root,
            servers,
            revision: revision(node, &pins),
            pins,
        })
    }
}

/// First 16 hex digits of the SHA-256 of the document's canonical JSON and of each pins
/// file it read: a new pin is a new revision.
fn revision(node: &Node, pins: &[PinsFile]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(node.to_canonical_json().as_bytes());
    for file in pins {
        hasher.update([0]);
        hasher.update(file.file.as_bytes());
        hasher.update([0]);
        hasher.update(file.digest);
    }
    let digest = hasher.finalize();
    crate::hex::lower(&digest[..8])
}

/// Most limits one call can be checked against: a rule's own, and its rule plus `all_tools`.
const MAX_LIMITS: usize = 8;
/// Largest `max` of a limit.
pub const MAX_MAX: f64 = 1e9;
/// Longest window or timeout accepted, in ms (2^53, where f64 stops being exact).
const MAX_WINDOW_MS: u64 = 1 << 53;

/// Most marks one call may set, with its limits: what one reservation holds.
const MAX_SETS: usize = MAX_LIMITS;
/// What a confirmed call reserves besides its limits and marks: its nonce and its caller's
/// count of confirmed calls.
const CONFIRMATION_SETS: usize = 2;
/// Most distinct marks a policy names: what one call may read at once.
const MAX_MARKS: usize = crate::counter::marks::MAX_READS;
const FALLBACKS: &[(&str, Fallback)] =
    &[("deny", Fallback::Deny), ("approval", Fallback::Approval)];
/// Longest question a policy may write, in bytes (arguments shown in it come on top).
const MAX_QUESTION_BYTES: usize = 1024;
/// Longest a user may take to answer: a day.
const MAX_CONFIRMATION_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

const DEFAULTS: &[(&str, DefaultAction)] = &[
    ("allow", DefaultAction::Allow),
    ("deny", DefaultAction::Deny),
];
const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("shadow", Mode::Shadow)];
const ACTIONS: &[(&str, Action)] = &[
    ("allow", Action::Allow),
    ("deny", Action::Deny),
    ("require_approval", Action::RequireApproval),
    ("require_confirmation", Action::RequireConfirmation),
];
const UNPINNED: &[(&str, Unpinned)] = &[("hide", Unpinned::Hide), ("allow", Unpinned::Allow)];
/// Whose a mark is: the caller's, by one of the scopes limits count on.
const MARK_SCOPES: &[(&str, Scope)] = &[
    ("session", Scope::Session),
    ("grant", Scope::Grant),
    ("agent", Scope::Agent),
];
const SCOPES: &[(&str, Scope)] = &[
    ("grant", Scope::Grant),
    ("session", Scope::Session),
    ("agent", Scope::Agent),
    ("server", Scope::Server),
    ("global", Scope::Global),
];

fn child(pointer: &str, key: &str) -> String {
    format!("{pointer}/{}", pointer_token(key))
}

fn item(pointer: &str, index: usize) -> String {
    format!("{pointer}/{index}")
}

/// The first definition of a counter, which every later use must agree with.
struct CounterDef {
    pointer: String,
    window_ms: u64,
    max: f64,
    scope: Scope,
    has_cost: bool,
}

#[derive(Default)]
struct Loader {
    errors: Vec<PolicyError>,
    counters: HashMap<String, CounterDef>,
    /// Each mark's first definition, which every later one must agree with.
    marks: HashMap<String, MarkRule>,
    /// Marks conditions read (`marks.NAME`), with where: each must be set by some rule.
    mark_reads: Vec<(String, String, Option<u32>)>,
}

impl Loader {
    fn error(&mut self, pointer: impl Into<String>, line: Option<u32>, message: impl Into<String>) {
        self.errors.push(PolicyError {
            pointer: pointer.into(),
            line,
            message: message.into(),
        });
    }

    fn expected(&mut self, node: &Node, pointer: &str, what: &str) {
        self.error(
            pointer,
            node.line,
            format!("expected {what}, found {}", node.kind()),
        );
    }

    /// Runs `f` and keeps its result only if it reported no errors.
    fn clean<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        let before = self.errors.len();
        let value = f(self);
        (self.errors.len() == before).then_some(value)
    }

    // --- typed accessors: each reports a type error and returns None on mismatch ----------

    fn object<'n>(&mut self, node: &'n Node, pointer: &str) -> Option<&'n [Member]> {
        match &node.value {
            NodeValue::Object(members) => Some(members),
            _ => {
                self.expected(node, pointer, "an object");
                None
            }
        }
    }

    /// An object whose keys must all be in `known`; each unknown key is an error.
    fn strict_object<'n>(
        &mut self,
        node: &'n Node,
        pointer: &str,
        known: &[keys::Key],
    ) -> Option<&'n [Member]> {
        let members = self.object(node, pointer)?;
        for m in members.iter().filter(|m| !keys::has(known, &m.key)) {
            self.error(
                child(pointer, &m.key),
                m.key_line,
                format!(
                    "unknown key {:?}; expected one of: {}",
                    m.key,
                    keys::names(known)
                ),
            );
        }
        Some(members)
    }

    fn required<'n>(
        &mut self,
        members: &'n [Member],
        node: &Node,
        pointer: &str,
        key: &str,
    ) -> Option<&'n Member> {
        let found = members.iter().find(|m| m.key == key);
        if found.is_none() {
            self.error(pointer, node.line, format!("missing required key {key:?}"));
        }
        found
    }

    fn array<'n>(&mut self, node: &'n Node, pointer: &str) -> Option<&'n [Node]> {
        match &node.value {
            NodeValue::Array(items) => Some(items),
            _ => {
                self.expected(node, pointer, "an array");
                None
            }
        }
    }

    fn string<'n>(&mut self, node: &'n Node, pointer: &str) -> Option<&'n str> {
        match &node.value {
            NodeValue::String(s) => Some(s),
            _ => {
                self.expected(node, pointer, "a string");
                None
            }
        }
    }

    fn release(&mut self, node: &Node, pointer: &str) -> Option<Release> {
        match &node.value {
            NodeValue::Bool(true) => Some(Release::Failed),
            NodeValue::Bool(false) => Some(Release::Never),
            NodeValue::String(s) if s == "tool_error" => Some(Release::ToolError),
            _ => {
                self.expected(node, pointer, "true, false or \"tool_error\"");
                None
            }
        }
    }

    fn non_empty_string<'n>(&mut self, node: &'n Node, pointer: &str) -> Option<&'n str> {
        let s = self.string(node, pointer)?;
        if s.is_empty() {
            self.error(pointer, node.line, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A string naming one of `choices`.
    fn choice<T: Copy>(
        &mut self,
        node: &Node,
        pointer: &str,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let s = self.string(node, pointer)?;
        let found = choices.iter().find(|(name, _)| *name == s).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            self.error(
                pointer,
                node.line,
                format!(
                    "unknown {what} {s:?}; expected one of: {}",
                    names.join(", ")
                ),
            );
        }
        found
    }
}

mod conditions;
mod limits;
mod paths;
mod pins_marks;
mod sections;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let e = PolicyError {
            pointer: String::new(),
            line: Some(1),
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "/: boom");
        let e2 = PolicyError {
            pointer: "/tools/a".into(),
            line: None,
            message: "bad".into(),
        };
        assert_eq!(
            PolicyErrors(vec![e, e2]).to_string(),
            "/: boom\n/tools/a: bad"
        );
    }

    #[test]
    fn revision_ignores_layout() {
        let a = Policy::from_json_str(r#"{"version": "1", "tools": {"x": {}}}"#).unwrap();
        let b = Policy::from_yaml_str("# comment\nversion: '1'\ntools:\n  x: {}\n").unwrap();
        let c = Policy::from_json_str(r#"{"version": "1", "tools": {"y": {}}}"#).unwrap();
        assert_eq!(a.revision, b.revision);
        assert_ne!(a.revision, c.revision);
        assert_eq!(a.revision.len(), 16);
        assert!(a.revision.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
