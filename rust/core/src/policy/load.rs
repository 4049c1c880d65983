//! Validation of a policy document tree into the [`Policy`] model.
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
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
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

    // --- sections ---------------------------------------------------------------------------

    /// The top level (`top`) or one `servers` entry. Returns the section and, for the top
    /// level, the server sections.
    fn section(
        &mut self,
        node: &Node,
        pointer: &str,
        top: bool,
    ) -> (Section, Vec<(String, Section)>) {
        let mut section = Section {
            pointer: pointer.to_owned(),
            default: DefaultAction::default(),
            mode: Mode::default(),
            hide: Hide::default(),
            all_tools: None,
            tools: Vec::new(),
            resources: Vec::new(),
            prompts: Vec::new(),
            methods: Vec::new(),
            pins: None,
            trust_annotations: None,
        };
        let mut servers = Vec::new();
        let Some(members) = self.strict_object(node, pointer, keys::SECTION) else {
            return (section, servers);
        };
        if top {
            self.required(members, node, pointer, "version");
        }
        for m in members {
            let at = child(pointer, &m.key);
            let value = &m.value;
            match m.key.as_str() {
                "version" => self.version(value, &at),
                "default" => {
                    section.default = self
                        .choice(value, &at, "default", DEFAULTS)
                        .unwrap_or_default()
                }
                "mode" => section.mode = self.choice(value, &at, "mode", MODES).unwrap_or_default(),
                "hide" => section.hide = self.hide(value, &at),
                "all_tools" => section.all_tools = Some(self.rule(value, &at, Kind::Tool)),
                "tools" => section.tools = self.named_rules(value, &at, Kind::Tool),
                "resources" => section.resources = self.named_rules(value, &at, Kind::Resource),
                "prompts" => section.prompts = self.named_rules(value, &at, Kind::Prompt),
                "methods" => section.methods = self.named_rules(value, &at, Kind::Method),
                "pins" => section.pins = self.pins(value, &at),
                "trust_annotations" => match &value.value {
                    NodeValue::Bool(b) => section.trust_annotations = Some(*b),
                    _ => self.expected(value, &at, "true or false"),
                },
                "servers" if top => servers = self.servers(value, &at),
                "servers" => self.error(
                    at,
                    m.key_line,
                    "\"servers\" cannot be nested inside a server section",
                ),
                _ => {} // reported by strict_object
            }
        }
        self.check_combined_limits(node, pointer);
        (section, servers)
    }

    fn version(&mut self, node: &Node, pointer: &str) {
        match &node.value {
            NodeValue::String(s) if s == "1" => {}
            NodeValue::String(s) => self.error(
                pointer,
                node.line,
                format!("unsupported version {s:?}; expected \"1\""),
            ),
            NodeValue::Number(_) => self.error(
                pointer,
                node.line,
                "expected the string \"1\", found a number (in YAML, quote it: version: \"1\")",
            ),
            _ => self.expected(node, pointer, "the string \"1\""),
        }
    }

    /// `hide`: a list of tools, or an object of lists by kind.
    fn hide(&mut self, node: &Node, pointer: &str) -> Hide {
        let mut hide = Hide::default();
        if !matches!(node.value, NodeValue::Object(_)) {
            hide.tools = self.hidden(node, pointer);
            return hide;
        }
        let Some(members) = self.strict_object(node, pointer, keys::HIDE) else {
            return hide;
        };
        for m in members {
            let at = child(pointer, &m.key);
            let list = self.hidden(&m.value, &at);
            if m.key == "resources" {
                for entry in &list {
                    if let Some(why) = never_matched(Kind::Resource, &entry.text) {
                        self.error(&entry.pointer, m.key_line, why);
                    }
                }
            }
            match m.key.as_str() {
                "tools" => hide.tools = list,
                "resources" => hide.resources = list,
                "prompts" => hide.prompts = list,
                _ => {} // reported by strict_object
            }
        }
        hide
    }

    /// One list of names and globs to hide.
    fn hidden(&mut self, node: &Node, pointer: &str) -> Vec<NamePattern> {
        let Some(items) = self.array(node, pointer) else {
            return Vec::new();
        };
        let mut hide = Vec::new();
        for (i, entry) in items.iter().enumerate() {
            let at = item(pointer, i);
            if let Some(text) = self.name_pattern(entry, &at) {
                hide.push(NamePattern {
                    text: text.to_owned(),
                    pointer: at,
                });
            }
        }
        hide
    }

    /// A non-empty tool name that, when it is a glob, compiles.
    fn name_pattern<'n>(&mut self, node: &'n Node, pointer: &str) -> Option<&'n str> {
        let text = self.non_empty_string(node, pointer)?;
        self.check_glob_name(text, pointer, node.line)
            .then_some(text)
    }

    fn check_glob_name(&mut self, text: &str, pointer: &str, line: Option<u32>) -> bool {
        if super::glob::is_glob(text) {
            if let Err(e) = super::glob::compile(text) {
                self.error(pointer, line, e);
                return false;
            }
        }
        true
    }

    /// `tools`, `resources`, `prompts` or `methods`: names or globs of `kind`, each with its
    /// rule.
    fn named_rules(&mut self, node: &Node, pointer: &str, kind: Kind) -> Vec<(NamePattern, Rule)> {
        let Some(members) = self.object(node, pointer) else {
            return Vec::new();
        };
        let mut rules = Vec::new();
        for m in members {
            let at = child(pointer, &m.key);
            let name_ok = if m.key.is_empty() {
                self.error(&at, m.key_line, format!("{kind} name must not be empty"));
                false
            } else if let Some(why) = never_matched(kind, &m.key) {
                self.error(&at, m.key_line, why);
                false
            } else if kind == Kind::Resource && !super::glob::is_glob(&m.key) {
                // Requests name resources in one spelling only: a key in another would
                // never match.
                match crate::mcp::uri::check_template(&m.key) {
                    Ok(()) => true,
                    Err(why) => {
                        let why = format!("{why}: requests naming it that way are refused");
                        self.error(&at, m.key_line, why);
                        false
                    }
                }
            } else {
                self.check_glob_name(&m.key, &at, m.key_line)
            };
            let rule = self.rule(&m.value, &at, kind);
            if name_ok {
                rules.push((
                    NamePattern {
                        text: m.key.clone(),
                        pointer: at,
                    },
                    rule,
                ));
            }
        }
        rules
    }

    fn servers(&mut self, node: &Node, pointer: &str) -> Vec<(String, Section)> {
        let Some(members) = self.object(node, pointer) else {
            return Vec::new();
        };
        let mut servers = Vec::new();
        for m in members {
            let at = child(pointer, &m.key);
            if m.key.is_empty() {
                self.error(&at, m.key_line, "server id must not be empty");
            }
            let (section, _) = self.section(&m.value, &at, false);
            servers.push((m.key.clone(), section));
        }
        servers
    }

    /// A call is checked against its tool rule's limits plus `all_tools`' limits; cap the sum.
    /// Counts come from the raw arrays so that invalid entries still count.
    fn check_combined_limits(&mut self, section: &Node, pointer: &str) {
        // What one call reserves: the limits and marks of its rule and of all_tools, and
        // where a rule lists them (its limits, else its marks).
        let sets_of = |rule: &Node| {
            let mut total = 0;
            let mut at = None;
            for key in ["limits", "marks"] {
                if let Some(Node {
                    value: NodeValue::Array(items),
                    line,
                }) = rule.get(key).map(|m| &m.value)
                {
                    total += items.len();
                    at = at.or(Some((key, *line)));
                }
            }
            if let Some(m) = rule.get("action") {
                if matches!(&m.value.value, NodeValue::String(a) if a == "require_confirmation") {
                    total += CONFIRMATION_SETS;
                    at = at.or(Some(("action", m.value.line)));
                }
            }
            at.map(|at| (total, at))
        };
        let Some((global, _)) = section.get("all_tools").and_then(|m| sets_of(&m.value)) else {
            return;
        };
        let Some(NodeValue::Object(tools)) = section.get("tools").map(|m| &m.value.value) else {
            return;
        };
        let tools_pointer = child(pointer, "tools");
        for tool in tools {
            let Some((own, (key, line))) = sets_of(&tool.value) else {
                continue;
            };
            // A rule or all_tools over the cap on its own is reported where it is defined.
            if own <= MAX_SETS && global <= MAX_SETS && own + global > MAX_SETS {
                self.error(
                    child(&child(&tools_pointer, &tool.key), key),
                    line,
                    format!(
                        "this rule has {own} limits and marks and all_tools has {global}; \
                         at most {MAX_SETS} limits and marks may apply to one call"
                    ),
                );
            }
        }
    }

    // --- rules ------------------------------------------------------------------------------

    /// A rule for things of `kind`: only a tool's call can be asked about, given back when
    /// it fails, or judged by its definition (`tool.*`).
    fn rule(&mut self, node: &Node, pointer: &str, kind: Kind) -> Rule {
        let mut rule = Rule {
            pointer: pointer.to_owned(),
            ..Rule::default()
        };
        let Some(members) = self.strict_object(node, pointer, keys::RULE) else {
            return rule;
        };
        let mut action_ok = true;
        let mut approval_member = None;
        let mut confirmation_member = None;
        for m in members {
            let at = child(pointer, &m.key);
            let value = &m.value;
            match m.key.as_str() {
                "action" => match self.choice(value, &at, "action", ACTIONS) {
                    Some(action) => rule.action = action,
                    None => action_ok = false,
                },
                "reason" => rule.reason = self.string(value, &at).map(str::to_owned),
                "mode" => rule.mode = self.choice(value, &at, "mode", MODES),
                "limits" => rule.limits = self.limits(value, &at),
                "require" => rule.require = self.condition_items(value, &at),
                "deny_if" => rule.deny_if = self.condition_items(value, &at),
                "approval" => {
                    approval_member = Some(m);
                    rule.approval = self.approval(value, &at);
                }
                "confirmation" => {
                    confirmation_member = Some(m);
                    rule.confirmation = self.confirmation(value, &at);
                }
                "log" => rule.log = self.log_paths(value, &at),
                "release_on_failure" => rule.release_on_failure = self.release(value, &at),
                "marks" => rule.marks = self.marks(value, &at),
                _ => {}
            }
        }
        // Over the limits' own cap is reported at `limits`.
        let confirming =
            CONFIRMATION_SETS * usize::from(rule.action == Action::RequireConfirmation);
        let sets = rule.limits.len() + rule.marks.len() + confirming;
        if rule.limits.len() <= MAX_LIMITS && sets > MAX_SETS {
            self.error(
                pointer,
                node.line,
                format!(
                    "a rule may set at most {MAX_SETS} limits and marks together (a \
                     confirmation takes {CONFIRMATION_SETS}), found {sets}"
                ),
            );
        }
        if kind != Kind::Tool {
            self.check_not_a_tool_rule(&rule, members, kind);
        }
        if rule.action == Action::RequireConfirmation && rule.confirmation.is_none() {
            rule.confirmation = Some(Confirmation::default());
        }
        if let Some(m) = approval_member {
            // With an invalid action the mismatch is already reported.
            if action_ok && !rule.asks_approval() {
                self.error(
                    child(pointer, "approval"),
                    m.key_line,
                    "\"approval\" is only valid with action \"require_approval\", or \
                     \"require_confirmation\" whose fallback is \"approval\"",
                );
            }
        }
        if let Some(m) = confirmation_member {
            if action_ok && rule.action != Action::RequireConfirmation {
                self.error(
                    child(pointer, "confirmation"),
                    m.key_line,
                    "\"confirmation\" is only valid with action \"require_confirmation\"",
                );
            }
        }
        rule
    }

    /// What a rule for a resource, a prompt or a method cannot say.
    fn check_not_a_tool_rule(&mut self, rule: &Rule, members: &[Member], kind: Kind) {
        for m in members {
            let at = child(&rule.pointer, &m.key);
            let why = match m.key.as_str() {
                "action" if rule.asks_approval() || rule.action == Action::RequireConfirmation => {
                    format!(
                        "a {kind} rule's action is \"allow\" or \"deny\": approvals and \
                         confirmations are for tool calls"
                    )
                }
                "release_on_failure" => {
                    format!("a {kind} rule gives nothing back: only a tool call's failure is read")
                }
                "require" | "deny_if" => {
                    let items = match m.key.as_str() {
                        "require" => &rule.require,
                        _ => &rule.deny_if,
                    };
                    if !items.iter().any(|item| item.reads(PathRoot::Tool)) {
                        continue;
                    }
                    format!("a {kind} rule's conditions cannot read tool.*: it names no tool")
                }
                _ => continue,
            };
            self.error(at, m.key_line, why);
        }
    }

    /// `log`: argument paths the decision log writes in clear.
    fn log_paths(&mut self, node: &Node, pointer: &str) -> Vec<Path> {
        let Some(items) = self.array(node, pointer) else {
            return Vec::new();
        };
        let mut paths = Vec::new();
        for (i, entry) in items.iter().enumerate() {
            let at = item(pointer, i);
            let Some(text) = self.non_empty_string(entry, &at) else {
                continue;
            };
            match Path::parse(text) {
                Ok(p) if p.root == PathRoot::Args => paths.push(p),
                Ok(_) => self.error(at, entry.line, "log names argument paths (args.…) only"),
                Err(e) => self.error(at, entry.line, e),
            }
        }
        paths
    }

    fn confirmation(&mut self, node: &Node, pointer: &str) -> Option<Confirmation> {
        let members = self.strict_object(node, pointer, keys::CONFIRMATION)?;
        let mut confirmation = Confirmation::default();
        for m in members {
            let at = child(pointer, &m.key);
            match m.key.as_str() {
                "message" => {
                    let Some(text) = self.non_empty_string(&m.value, &at) else {
                        continue;
                    };
                    if text.len() > MAX_QUESTION_BYTES {
                        let why = format!("a question has at most {MAX_QUESTION_BYTES} bytes");
                        self.error(at, m.value.line, why);
                        continue;
                    }
                    match super::parse_question(text) {
                        Ok(pieces) => confirmation.pieces = pieces,
                        Err(e) => self.error(at, m.value.line, e),
                    }
                }
                "timeout" => match duration_ms(&m.value) {
                    Ok(ms) if ms <= MAX_CONFIRMATION_TIMEOUT_MS => {
                        confirmation.timeout_ms = Some(ms)
                    }
                    Ok(_) => self.error(at, m.value.line, "at most a day (24h)"),
                    Err(e) => self.error(at, m.value.line, e),
                },
                "fallback" => {
                    if let Some(f) = self.choice(&m.value, &at, "fallback", FALLBACKS) {
                        confirmation.fallback = f;
                    }
                }
                _ => {}
            }
        }
        Some(confirmation)
    }

    fn approval(&mut self, node: &Node, pointer: &str) -> Option<Approval> {
        let members = self.strict_object(node, pointer, keys::APPROVAL)?;
        let mut approval = Approval::default();
        for m in members {
            let at = child(pointer, &m.key);
            match m.key.as_str() {
                "timeout" => match duration_ms(&m.value) {
                    Ok(ms) => approval.timeout_ms = Some(ms),
                    Err(e) => self.error(at, m.value.line, e),
                },
                "approvers" => {
                    let Some(items) = self.array(&m.value, &at) else {
                        continue;
                    };
                    for (i, approver) in items.iter().enumerate() {
                        if let Some(s) = self.non_empty_string(approver, &item(&at, i)) {
                            approval.approvers.push(s.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        Some(approval)
    }

    // --- pins and marks ---------------------------------------------------------------------

    fn pins(&mut self, node: &Node, pointer: &str) -> Option<PinsRule> {
        let members = self.strict_object(node, pointer, keys::PINS)?;
        let file = self
            .required(members, node, pointer, "file")
            .and_then(|m| self.non_empty_string(&m.value, &child(pointer, "file")))?;
        let mut rule = PinsRule {
            pointer: pointer.to_owned(),
            file: file.to_owned(),
            mode: Mode::Enforce,
            unpinned: Unpinned::Hide,
        };
        for m in members {
            let at = child(pointer, &m.key);
            match m.key.as_str() {
                "mode" => rule.mode = self.choice(&m.value, &at, "mode", MODES)?,
                "unpinned" => rule.unpinned = self.choice(&m.value, &at, "unpinned", UNPINNED)?,
                _ => {}
            }
        }
        Some(rule)
    }

    /// Read each pins file the sections name, once, relative to `base`, with `read`.
    fn read_pins(
        &mut self,
        root: &Section,
        servers: &[(String, Section)],
        base: &std::path::Path,
        read: ReadFile,
    ) -> Vec<PinsFile> {
        let mut files: Vec<PinsFile> = Vec::new();
        let sections = std::iter::once(root).chain(servers.iter().map(|(_, s)| s));
        for rule in sections.filter_map(|s| s.pins.as_ref()) {
            if files.iter().any(|f| f.file == rule.file) {
                continue;
            }
            let path = base.join(&rule.file);
            let at = child(&rule.pointer, "file");
            let text = match read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let message = format!("cannot read the pins file {}: {e}", path.display());
                    self.error(at, None, message);
                    continue;
                }
            };
            let parsed = std::str::from_utf8(&text)
                .map_err(|_| "the pins file is not UTF-8 text".to_owned())
                .and_then(|t| Pins::from_json_str(t).map_err(|e| e.to_string()));
            match parsed {
                Ok(pins) => files.push(PinsFile {
                    file: rule.file.clone(),
                    digest: Sha256::digest(&text).into(),
                    path,
                    pins: std::sync::Arc::new(pins),
                }),
                Err(e) => {
                    let message = format!("the pins file {} is not valid: {e}", path.display());
                    self.error(at, None, message);
                }
            }
        }
        files
    }

    fn marks(&mut self, node: &Node, pointer: &str) -> Vec<MarkRule> {
        let Some(items) = self.array(node, pointer) else {
            return Vec::new();
        };
        let mut marks = Vec::new();
        for (i, entry) in items.iter().enumerate() {
            let at = item(pointer, i);
            if let Some(mark) = self.clean(|l| l.mark(entry, &at)).flatten() {
                marks.push(mark);
            }
        }
        marks
    }

    fn mark(&mut self, node: &Node, pointer: &str) -> Option<MarkRule> {
        let members = self.strict_object(node, pointer, keys::MARK)?;
        let name = self
            .required(members, node, pointer, "name")
            .and_then(|m| self.non_empty_string(&m.value, &child(pointer, "name")));
        let scope = self
            .required(members, node, pointer, "scope")
            .and_then(|m| {
                self.choice(
                    &m.value,
                    &child(pointer, "scope"),
                    "mark scope",
                    MARK_SCOPES,
                )
            });
        let ttl_ms = self.required(members, node, pointer, "ttl").and_then(|m| {
            duration_ms(&m.value)
                .map_err(|e| self.error(child(pointer, "ttl"), m.value.line, e))
                .ok()
        });
        let mark = MarkRule {
            pointer: pointer.to_owned(),
            name: name?.to_owned(),
            scope: scope?,
            ttl_ms: ttl_ms?,
        };
        match self.marks.get(&mark.name) {
            None => {
                self.marks.insert(mark.name.clone(), mark.clone());
            }
            Some(first) if (first.scope, first.ttl_ms) != (mark.scope, mark.ttl_ms) => {
                let message = format!(
                    "mark {:?} conflicts with its first definition at {}: a mark has one scope \
                     and one ttl",
                    mark.name, first.pointer
                );
                self.error(pointer, node.line, message);
                return None;
            }
            Some(_) => {}
        }
        Some(mark)
    }

    /// Every mark a condition reads is one some rule sets.
    fn check_mark_reads(&mut self) {
        if self.marks.len() > MAX_MARKS {
            let message = format!(
                "a policy may name at most {MAX_MARKS} marks (a call reads them in one step), \
                 found {}",
                self.marks.len()
            );
            self.error("", None, message);
        }
        let reads = std::mem::take(&mut self.mark_reads);
        for (name, pointer, line) in reads {
            if !self.marks.contains_key(&name) {
                let message = format!("no rule sets the mark {name:?} (marks: [{{name: ...}}])");
                self.error(pointer, line, message);
            }
        }
    }

    // --- limits -----------------------------------------------------------------------------

    fn limits(&mut self, node: &Node, pointer: &str) -> Vec<Limit> {
        let Some(items) = self.array(node, pointer) else {
            return Vec::new();
        };
        if items.len() > MAX_LIMITS {
            self.error(
                pointer,
                node.line,
                format!(
                    "a rule may have at most {MAX_LIMITS} limits, found {}",
                    items.len()
                ),
            );
        }
        items
            .iter()
            .enumerate()
            .filter_map(|(i, limit)| self.limit(limit, &item(pointer, i)))
            .collect()
    }

    fn limit(&mut self, node: &Node, pointer: &str) -> Option<Limit> {
        let before = self.errors.len();
        let members = self.strict_object(node, pointer, keys::LIMIT)?;
        let counter_member = self.required(members, node, pointer, "counter");
        let window_member = self.required(members, node, pointer, "window");
        let max_member = self.required(members, node, pointer, "max");
        let field = |key: &str| members.iter().find(|m| m.key == key);

        let counter = counter_member
            .and_then(|m| self.non_empty_string(&m.value, &child(pointer, "counter")));
        let window_ms = window_member.and_then(|m| match duration_ms(&m.value) {
            Ok(ms) => Some(ms),
            Err(e) => {
                self.error(child(pointer, "window"), m.value.line, e);
                None
            }
        });
        let cost_member = field("cost");
        let max = max_member.and_then(|m| match limit_max(&m.value, cost_member.is_some()) {
            Ok(max) => Some(max),
            Err(e) => {
                self.error(child(pointer, "max"), m.value.line, e);
                None
            }
        });
        let scope = match field("scope") {
            Some(m) => self.choice(&m.value, &child(pointer, "scope"), "scope", SCOPES),
            None => Some(Scope::Global),
        };
        let cost = match cost_member {
            Some(m) => self.cost_path(&m.value, &child(pointer, "cost")).map(Some),
            None => Some(None),
        };
        if self.errors.len() > before {
            return None;
        }
        let limit = Limit {
            pointer: pointer.to_owned(),
            counter: counter?.to_owned(),
            window_ms: window_ms?,
            max: max?,
            scope: scope?,
            cost: cost?,
        };
        let counter_line = counter_member.and_then(|m| m.value.line);
        self.check_counter(&limit, counter_line).then_some(limit)
    }

    fn cost_path(&mut self, node: &Node, pointer: &str) -> Option<Path> {
        let text = self.string(node, pointer)?;
        match Path::parse(text) {
            Ok(path) if path.root == PathRoot::Args => Some(path),
            Ok(_) => {
                self.error(
                    pointer,
                    node.line,
                    format!("cost must be an argument path starting with args., found {text:?}"),
                );
                None
            }
            Err(e) => {
                self.error(pointer, node.line, e);
                None
            }
        }
    }

    /// Two uses of one counter name share one counter, so they must describe it identically.
    fn check_counter(&mut self, limit: &Limit, line: Option<u32>) -> bool {
        let (window_ms, max, scope, has_cost) = (
            limit.window_ms,
            limit.max,
            limit.scope,
            limit.cost.is_some(),
        );
        let Some(first) = self.counters.get(&limit.counter) else {
            let def = CounterDef {
                pointer: limit.pointer.clone(),
                window_ms,
                max,
                scope,
                has_cost,
            };
            self.counters.insert(limit.counter.clone(), def);
            return true;
        };
        let mut differences = Vec::new();
        if first.window_ms != window_ms {
            differences.push(format!(
                "window {window_ms} ms instead of {} ms",
                first.window_ms
            ));
        }
        if first.max != max {
            differences.push(format!("max {max} instead of {}", first.max));
        }
        if first.scope != scope {
            differences.push(format!(
                "scope {} instead of {}",
                scope.as_str(),
                first.scope.as_str()
            ));
        }
        if first.has_cost != has_cost {
            differences.push(
                if has_cost {
                    "a cost where the first has none"
                } else {
                    "no cost where the first has one"
                }
                .into(),
            );
        }
        if differences.is_empty() {
            return true;
        }
        let message = format!(
            "counter {:?} conflicts with its first definition at {}: {}",
            limit.counter,
            first.pointer,
            differences.join(", ")
        );
        self.error(child(&limit.pointer, "counter"), line, message);
        false
    }

    // --- conditions -------------------------------------------------------------------------

    /// `require` / `deny_if`: an array of conditions and `{conditions, on_deny}` groups.
    fn condition_items(&mut self, node: &Node, pointer: &str) -> Vec<ConditionItem> {
        let Some(items) = self.array(node, pointer) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| self.condition_item(entry, &item(pointer, i)))
            .collect()
    }

    fn condition_item(&mut self, node: &Node, pointer: &str) -> Option<ConditionItem> {
        if node.get("conditions").is_none() {
            return self.condition(node, pointer).map(ConditionItem::Condition);
        }
        self.clean(|this| {
            let members = this.strict_object(node, pointer, keys::GROUP)?;
            let mut conditions = Some(Vec::new());
            let mut on_deny = None;
            for m in members {
                let at = child(pointer, &m.key);
                match m.key.as_str() {
                    "conditions" => conditions = this.conditions(&m.value, &at),
                    "on_deny" => on_deny = this.string(&m.value, &at).map(str::to_owned),
                    _ => {}
                }
            }
            Some(ConditionItem::Group {
                pointer: pointer.to_owned(),
                conditions: conditions?,
                on_deny,
            })
        })
        .flatten()
    }

    /// An array of conditions; `None` when any of them is invalid (all are still checked).
    fn conditions(&mut self, node: &Node, pointer: &str) -> Option<Vec<Condition>> {
        let items = self.array(node, pointer)?;
        let parsed: Vec<Option<Condition>> = items
            .iter()
            .enumerate()
            .map(|(i, c)| self.condition(c, &item(pointer, i)))
            .collect();
        parsed.into_iter().collect()
    }

    fn condition(&mut self, node: &Node, pointer: &str) -> Option<Condition> {
        self.clean(|this| this.condition_inner(node, pointer))
            .flatten()
    }

    fn condition_inner(&mut self, node: &Node, pointer: &str) -> Option<Condition> {
        let members = self.object(node, pointer)?;
        let is = |known: &[keys::Key], m: &Member| keys::has(known, &m.key);
        let compare_keys = members.iter().filter(|m| is(keys::COMPARE, m)).count();
        let combinators: Vec<&Member> =
            members.iter().filter(|m| is(keys::COMBINATOR, m)).collect();
        for m in members
            .iter()
            .filter(|m| !is(keys::COMPARE, m) && !is(keys::COMBINATOR, m))
        {
            self.error(
                child(pointer, &m.key),
                m.key_line,
                format!(
                    "unknown key {:?}; a condition has path, op and value, or one of all, any, not",
                    m.key
                ),
            );
        }
        if !combinators.is_empty() && (compare_keys > 0 || combinators.len() > 1) {
            let keys: Vec<&str> = members.iter().map(|m| m.key.as_str()).collect();
            self.error(
                pointer,
                node.line,
                format!(
                    "a condition has either path/op/value or exactly one of all, any, not; \
                     found keys {}",
                    keys.join(", ")
                ),
            );
            return None;
        }
        let Some(combinator) = combinators.first() else {
            return self.compare(members, node, pointer);
        };
        let at = child(pointer, &combinator.key);
        let pointer = pointer.to_owned();
        match combinator.key.as_str() {
            "all" => Some(Condition::All {
                pointer,
                items: self.conditions(&combinator.value, &at)?,
            }),
            "any" => Some(Condition::Any {
                pointer,
                items: self.conditions(&combinator.value, &at)?,
            }),
            _ => Some(Condition::Not {
                pointer,
                item: Box::new(self.condition(&combinator.value, &at)?),
            }),
        }
    }

    fn compare(&mut self, members: &[Member], node: &Node, pointer: &str) -> Option<Condition> {
        let path_member = self.required(members, node, pointer, "path");
        let op_member = self.required(members, node, pointer, "op");
        let value_member = members.iter().find(|m| m.key == "value");

        let path = path_member.and_then(|m| {
            let at = child(pointer, "path");
            let text = self.string(&m.value, &at)?;
            let path = Path::parse(text)
                .map_err(|e| self.error(&at, m.value.line, e))
                .ok()?;
            if let (PathRoot::Marks, [Segment::Key(name)]) = (path.root, &path.segments[..]) {
                self.mark_reads.push((name.clone(), at, m.value.line));
            }
            Some(path)
        });
        let op = op_member.and_then(|m| {
            let at = child(pointer, "op");
            let text = self.string(&m.value, &at)?;
            let op = Op::parse(text);
            if op.is_none() {
                let names: Vec<&str> = Op::ALL.iter().map(|(name, _)| *name).collect();
                self.error(
                    at,
                    m.value.line,
                    format!("unknown op {text:?}; expected one of: {}", names.join(", ")),
                );
            }
            op
        })?;
        let (value, pattern) = self.operand(op, value_member, node, pointer)?;
        Some(Condition::Compare(Compare {
            pointer: pointer.to_owned(),
            path: path?,
            op,
            value,
            pattern,
        }))
    }

    /// Check `value` against what `op` needs; returns it with its compiled pattern, if any.
    fn operand(
        &mut self,
        op: Op,
        member: Option<&Member>,
        condition: &Node,
        pointer: &str,
    ) -> Option<(Value, Option<regex::Regex>)> {
        let Some(member) = member else {
            if op == Op::Exists {
                return Some((Value::Bool(true), None));
            }
            self.error(
                pointer,
                condition.line,
                format!(
                    "missing required key \"value\" (op {:?} needs one)",
                    op.name()
                ),
            );
            return None;
        };
        let node = &member.value;
        let at = child(pointer, "value");
        let mut pattern = None;
        let expected = match (op, &node.value) {
            (Op::Eq | Op::Neq, _) => None,
            // An empty list has no type to compare with, so it could only ever fail closed.
            (Op::In | Op::NotIn, NodeValue::Array(items)) if !items.is_empty() => None,
            (Op::In | Op::NotIn, _) => Some("a non-empty array"),
            (Op::Lt | Op::Lte | Op::Gt | Op::Gte, NodeValue::Number(_)) => None,
            (Op::Lt | Op::Lte | Op::Gt | Op::Gte, _) => Some("a number"),
            (Op::Regex | Op::NotRegex, NodeValue::String(s)) => {
                match Regex::new(s) {
                    Ok(re) => pattern = Some(re),
                    Err(e) => {
                        self.error(
                            at,
                            node.line,
                            format!("invalid regex {s:?}: {}", regex_error(&e)),
                        );
                        return None;
                    }
                }
                None
            }
            (Op::Glob, NodeValue::String(s)) => {
                match super::glob::compile(s) {
                    Ok(re) => pattern = Some(re),
                    Err(e) => {
                        self.error(at, node.line, e);
                        return None;
                    }
                }
                None
            }
            (Op::StartsWith | Op::EndsWith, NodeValue::String(_)) => None,
            (Op::Regex | Op::NotRegex | Op::Glob | Op::StartsWith | Op::EndsWith, _) => {
                Some("a string")
            }
            (Op::Contains | Op::NotContains, NodeValue::Array(_) | NodeValue::Object(_)) => {
                Some("a string, number, boolean or null")
            }
            (Op::Contains | Op::NotContains, _) => None,
            (Op::Exists, NodeValue::Bool(_)) => None,
            (Op::Exists, _) => Some("a boolean"),
        };
        if let Some(what) = expected {
            self.error(
                at,
                node.line,
                format!("op {:?} expects {what}, found {}", op.name(), node.kind()),
            );
            return None;
        }
        Some((node.to_json_value(), pattern))
    }
}

/// The regex crate's syntax errors span several lines (pattern, caret, message); policy
/// errors are one line each, so keep only the message.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

// --- windows and amounts ---------------------------------------------------------------------

const WINDOW_FORMS: &str = "second, minute, hour, day, a number of seconds, \
                            or a duration such as \"90s\", \"10m\", \"1h30m\"";

/// A window or timeout in ms: a unit name, a number of seconds, or a duration string.
/// Why a key of `kind` would never find what its writer means, if it would not: a glob over
/// URIs whose `[...]` holds a `:` (an IPv6 host's brackets, read as a class of characters:
/// `[[]` is a literal `[`); a tool name MCP does not allow (most likely a typo); or a method
/// a `methods` rule never decides, as what it names decides it or it passes as the
/// protocol's plumbing.
fn never_matched(kind: Kind, key: &str) -> Option<String> {
    match kind {
        Kind::Tool if !super::glob::is_glob(key) && !is_mcp_tool_name(key) => Some(format!(
            "{key:?} is not a tool name MCP allows (1 to {MAX_TOOL_NAME} of A-Z, a-z, 0-9, \
             '_', '-' and '.'), so a server that keeps to MCP lists no such tool: for one that \
             names its tools otherwise, match them with a glob"
        )),
        Kind::Resource => {
            // What requests must escape, a pattern must too: it is matched against their text.
            if let Some(c) = key.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
                return Some(format!(
                    "a resource pattern is matched against URIs in their one spelling, where \
                     {c:?} is percent-encoded (UTF-8, upper case hex): write it so"
                ));
            }
            let mut classes = key.split('[').skip(1);
            let ipv6 = classes.any(|c| c.split(']').next().unwrap_or(c).contains(':'));
            (super::glob::is_glob(key) && ipv6).then(|| {
                "a \"[...]\" in a resource pattern is a class of characters, not an IPv6 \
                 host's brackets: write \"[[]\" for \"[\" (and \"]\" as it is)"
                    .to_owned()
            })
        }
        Kind::Method => {
            let decided = [
                "tools/call",
                "resources/read",
                "prompts/get",
                "subscriptions/listen",
            ];
            let plumbing = crate::mcp::request::PASSING.contains(&key)
                || (key.starts_with("notifications/") && !super::glob::is_glob(key));
            if decided.contains(&key) {
                Some(format!(
                    "{key} is decided by what it names (tools, resources, prompts): a methods \
                     rule for it never applies"
                ))
            } else if plumbing {
                Some(format!(
                    "{key} is the protocol's plumbing and passes undecided (lists are filtered): \
                     a methods rule for it never applies"
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

fn duration_ms(node: &Node) -> Result<u64, String> {
    let ms = match &node.value {
        NodeValue::String(s) => match s.as_str() {
            "second" => 1_000,
            "minute" => 60_000,
            "hour" => 3_600_000,
            "day" => 86_400_000,
            _ => parse_duration(s)
                .ok_or_else(|| format!("invalid window {s:?}; expected {WINDOW_FORMS}"))?,
        },
        NodeValue::Number(n) => {
            let seconds = n.as_f64().unwrap_or(f64::NAN);
            if seconds.is_nan() || seconds <= 0.0 {
                return Err(format!("window must be positive, found {n}"));
            }
            let ms = seconds * 1000.0;
            if ms < 1.0 {
                return Err(format!(
                    "window must be at least 1 ms (0.001 seconds), found {n}"
                ));
            }
            if ms > MAX_WINDOW_MS as f64 {
                return Err(format!("window {n} seconds is too long"));
            }
            // Round fractional ms up, but not the float noise of exact values
            // (0.07 * 1000 = 70.00000000000001).
            let nearest = ms.round();
            (if (ms - nearest).abs() < 1e-6 {
                nearest
            } else {
                ms.ceil()
            }) as u64
        }
        _ => {
            return Err(format!(
                "expected a window ({WINDOW_FORMS}), found {}",
                node.kind()
            ))
        }
    };
    if ms == 0 {
        return Err("window must be positive, found 0".into());
    }
    if ms > MAX_WINDOW_MS {
        return Err("window is too long".into());
    }
    Ok(ms)
}

/// `<int><unit>` parts (units ms, s, m, h, d), e.g. `1h30m`; `None` when malformed.
fn parse_duration(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let amount: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            let unit = match rest.chars().next()? {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                _ => return None,
            };
            (unit, 1)
        };
        rest = &rest[unit_len..];
        total = total.checked_add(amount.checked_mul(unit_ms)?)?;
    }
    Some(total)
}

/// `max`: positive, at most 1e9, and a whole number unless the limit counts a cost.
fn limit_max(node: &Node, has_cost: bool) -> Result<f64, String> {
    let NodeValue::Number(n) = &node.value else {
        return Err(format!("expected a number, found {}", node.kind()));
    };
    let max = n.as_f64().unwrap_or(f64::NAN);
    if max.is_nan() || max <= 0.0 {
        return Err(format!("max must be greater than 0, found {n}"));
    }
    if max > MAX_MAX {
        return Err(format!("max must be at most 1000000000, found {n}"));
    }
    if !has_cost && max.fract() != 0.0 {
        return Err(format!(
            "max must be a whole number of calls when the limit has no cost, found {n}"
        ));
    }
    Ok(max)
}

// --- condition paths -------------------------------------------------------------------------

const ROOT_ERROR: &str = "path must start with args., subject., server, tool or marks";
const SUBJECT_FIELDS: &str =
    "subject.grant, subject.session, subject.agent or subject.attributes.<key>";

impl Path {
    /// Parse a condition path: `args.a.b`, `args.items[0]`, `args["key.with.dots"]`,
    /// `subject.grant|session|agent`, `subject.attributes.<key>`, `server`, `tool`.
    pub fn parse(text: &str) -> Result<Path, String> {
        let root_end = text.find(['.', '[']).unwrap_or(text.len());
        let (root_name, rest) = text.split_at(root_end);
        let root = match root_name {
            "args" => PathRoot::Args,
            "subject" => PathRoot::Subject,
            "server" => PathRoot::Server,
            "tool" => PathRoot::Tool,
            "marks" => PathRoot::Marks,
            _ => return Err(format!("{ROOT_ERROR}, found {text:?}")),
        };
        let segments = parse_segments(rest).map_err(|e| format!("invalid path {text:?}: {e}"))?;
        match root {
            PathRoot::Args if segments.is_empty() => {
                return Err("args needs at least one segment, e.g. args.amount".into());
            }
            PathRoot::Args => {}
            PathRoot::Subject => check_subject(&segments)?,
            PathRoot::Server if !segments.is_empty() => {
                return Err(format!(
                    "{root_name} takes no further segments, found {text:?}"
                ));
            }
            PathRoot::Server => {}
            PathRoot::Tool => check_tool(&segments)?,
            PathRoot::Marks => match &segments[..] {
                [] | [Segment::Key(_)] => {}
                _ => {
                    return Err(format!(
                        "marks takes at most one key, a mark's name, found {text:?}"
                    ))
                }
            },
        }
        Ok(Path {
            root,
            segments,
            text: text.to_owned(),
        })
    }
}

/// `tool` (its name), `tool.title`, `tool.annotations.HINT`.
fn check_tool(segments: &[Segment]) -> Result<(), String> {
    match segments {
        [] => Ok(()),
        [Segment::Key(k)] if k == "title" => Ok(()),
        [Segment::Key(k), Segment::Key(hint)] if k == "annotations" => {
            if Hints::NAMES.contains(&hint.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "unknown annotation {hint:?}; expected one of: {}",
                    Hints::NAMES.join(", ")
                ))
            }
        }
        _ => Err(format!(
            "tool takes no segment, title, or annotations.<hint> ({})",
            Hints::NAMES.join(", ")
        )),
    }
}

fn check_subject(segments: &[Segment]) -> Result<(), String> {
    match segments {
        [] => Err(format!("subject needs a field: {SUBJECT_FIELDS}")),
        [Segment::Key(field), rest @ ..]
            if matches!(field.as_str(), "grant" | "session" | "agent") =>
        {
            if rest.is_empty() {
                Ok(())
            } else {
                Err(format!("subject.{field} takes no further segments"))
            }
        }
        [Segment::Key(field), rest @ ..] if field == "attributes" => match rest {
            [Segment::Key(_)] => Ok(()),
            _ => {
                Err("subject.attributes takes exactly one key, e.g. subject.attributes.team".into())
            }
        },
        [Segment::Key(field), ..] => Err(format!(
            "unknown subject field {field:?}; expected {SUBJECT_FIELDS}"
        )),
        [Segment::Index(_), ..] => {
            Err(format!("subject has no indexes; expected {SUBJECT_FIELDS}"))
        }
    }
}

/// Segments after the root: `.key`, `[index]`, `["quoted key"]` (or single quotes).
fn parse_segments(mut rest: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[', ']']).unwrap_or(after.len());
            if end == 0 {
                return Err("empty segment".into());
            }
            segments.push(Segment::Key(after[..end].to_owned()));
            rest = &after[end..];
            if rest.starts_with(']') {
                return Err("unexpected ']'".into());
            }
        } else if let Some(after) = rest.strip_prefix('[') {
            let (segment, remaining) = bracket_segment(after)?;
            segments.push(segment);
            rest = remaining;
        } else {
            return Err(format!("expected '.' or '[' before {rest:?}"));
        }
    }
    Ok(segments)
}

/// The inside of `[...]` (after the `[`), and the text after the `]`.
fn bracket_segment(after: &str) -> Result<(Segment, &str), String> {
    let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        let end = after.find(']').ok_or("unclosed '['")?;
        let digits = &after[..end];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "bad index [{digits}]: expected a non-negative integer or a quoted key"
            ));
        }
        let index = digits
            .parse()
            .map_err(|_| format!("index [{digits}] is too large"))?;
        return Ok((Segment::Index(index), &after[end + 1..]));
    };
    // A quoted key: a backslash takes the next character literally.
    let mut key = String::new();
    let mut chars = after.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => key.push(chars.next().ok_or("unterminated quoted key")?.1),
            c if c == quote => {
                let remaining = &after[i + 1..];
                let remaining = remaining
                    .strip_prefix(']')
                    .ok_or("expected ']' after a quoted key")?;
                return Ok((Segment::Key(key), remaining));
            }
            c => key.push(c),
        }
    }
    Err("unterminated quoted key".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(path: &str) -> Vec<Segment> {
        Path::parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .segments
    }

    #[test]
    fn paths() {
        use Segment::{Index, Key};
        assert_eq!(keys("args.a.b"), [Key("a".into()), Key("b".into())]);
        assert_eq!(
            keys("args.items[0].name"),
            [Key("items".into()), Index(0), Key("name".into())]
        );
        assert_eq!(
            keys(r#"args["key.with.dots"]"#),
            [Key("key.with.dots".into())]
        );
        assert_eq!(keys(r#"args['it\'s'][2]"#), [Key("it's".into()), Index(2)]);
        assert_eq!(
            keys("subject.attributes.team"),
            [Key("attributes".into()), Key("team".into())]
        );
        assert_eq!(keys("subject.agent"), [Key("agent".into())]);
        assert!(keys("server").is_empty() && keys("tool").is_empty());
        assert_eq!(Path::parse("tool").unwrap().root, PathRoot::Tool);
        for bad in [
            "env.x",
            "",
            "args",
            "args.",
            "args..a",
            "args.a[",
            "args.a[-1]",
            "args.a[x]",
            "args.a[]",
            "args.a]",
            "args[\"a\"",
            "argsx.a",
            "subject",
            "subject.foo",
            "subject.attributes",
            "subject.attributes.a.b",
            "subject.agent.x",
            "server.x",
            "tool[0]",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            Path::parse("env.x").unwrap_err(),
            "path must start with args., subject., server, tool or marks, found \"env.x\""
        );
    }

    fn window(v: Value) -> Result<u64, String> {
        duration_ms(&Node::from_json_value(&v))
    }

    #[test]
    fn windows() {
        assert_eq!(window(json!("second")), Ok(1_000));
        assert_eq!(window(json!("minute")), Ok(60_000));
        assert_eq!(window(json!("hour")), Ok(3_600_000));
        assert_eq!(window(json!("day")), Ok(86_400_000));
        assert_eq!(window(json!(60)), Ok(60_000));
        assert_eq!(window(json!(1.5)), Ok(1_500));
        assert_eq!(window(json!(0.07)), Ok(70));
        assert_eq!(window(json!(0.0015)), Ok(2));
        assert_eq!(window(json!(0.001)), Ok(1));
        assert_eq!(window(json!("90s")), Ok(90_000));
        assert_eq!(window(json!("10m")), Ok(600_000));
        assert_eq!(window(json!("1h30m")), Ok(5_400_000));
        assert_eq!(window(json!("500ms")), Ok(500));
        assert_eq!(window(json!("2d")), Ok(172_800_000));
        for bad in [
            json!(0),
            json!(-5),
            json!(0.0005),
            json!("0s"),
            json!(""),
            json!("60"),
            json!("s"),
            json!("1x"),
            json!("1 h"),
            json!("1.5h"),
            json!("-1s"),
            json!("minutes"),
            json!("99999999999999999999d"),
            json!(true),
            json!(null),
        ] {
            assert!(window(bad.clone()).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn maxima() {
        let max = |v: Value, cost| limit_max(&Node::from_json_value(&v), cost);
        assert_eq!(max(json!(30), false), Ok(30.0));
        assert_eq!(max(json!(30.0), false), Ok(30.0));
        assert_eq!(max(json!(2.5), true), Ok(2.5));
        assert_eq!(max(json!(1e9), false), Ok(1e9));
        assert!(max(json!(2.5), false).is_err());
        assert!(max(json!(0), false).is_err());
        assert!(max(json!(-1), true).is_err());
        assert!(max(json!(1e9 + 1.0), false).is_err());
        assert!(max(json!("10"), false).is_err());
    }

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
