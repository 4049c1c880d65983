//! Policy language v1: the model a policy document loads into.
//!
//! `source` turns JSON or YAML text into a [`source::Node`] tree that remembers line numbers;
//! `load` validates that tree into a [`Policy`], reporting every error with its JSON pointer.
//! The model is plain data; [`compile`] turns it into the structures decisions run on
//! ([`matcher`] for names, with [`glob`]; [`evaluation`] and [`arg_path`] for what the
//! conditions read).

pub mod arg_path;
pub mod compile;
pub mod error;
pub mod evaluation;
pub mod glob;
pub mod keys;
pub mod load;
pub mod matcher;
pub mod pins;
pub mod self_asserted;
pub mod source;

pub use error::{PolicyError, PolicyErrors};
pub use load::{ReadFile, MAX_MAX};

use crate::kind::Kind;
use serde_json::Value;
use std::sync::Arc;

/// A whole policy document: the top-level section plus optional per-server sections.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The top-level section, used for servers without a section of their own.
    pub root: Section,
    /// `servers`: server id → full section, in document order.
    pub servers: Vec<(String, Section)>,
    /// Hex digest identifying the loaded document and the pins files it names (first 16 hex
    /// digits of a SHA-256).
    pub revision: String,
    /// The pins files the sections' `pins` name, read when the policy was loaded.
    pub pins: Vec<PinsFile>,
}

/// A pins file as a policy loaded it.
#[derive(Debug, Clone)]
pub struct PinsFile {
    /// As `pins.file` names it.
    pub file: String,
    /// Where it was read from.
    pub path: std::path::PathBuf,
    /// SHA-256 of its bytes, part of the policy's revision.
    pub digest: [u8; 32],
    pub pins: Arc<pins::Pins>,
}

/// One policy section: the top level, or `servers/<id>`.
#[derive(Debug, Clone)]
pub struct Section {
    /// JSON pointer of this section: `""` for the top level, `/servers/<id>` otherwise.
    pub pointer: String,
    pub default: DefaultAction,
    pub mode: Mode,
    /// `hide`: the tools, resources and prompts taken out of lists and denied first.
    pub hide: Hide,
    pub all_tools: Option<Rule>,
    /// `tools`: name or glob → rule, in document order.
    pub tools: Vec<(NamePattern, Rule)>,
    /// `resources`: URI or glob → rule, in document order.
    pub resources: Vec<(NamePattern, Rule)>,
    /// `prompts`: name or glob → rule, in document order.
    pub prompts: Vec<(NamePattern, Rule)>,
    /// `methods`: MCP method name or glob → rule, for the methods that name no tool,
    /// resource or prompt.
    pub methods: Vec<(NamePattern, Rule)>,
    /// `pins`: hold servers' tools to their pinned definitions. A server section without
    /// its own takes the top level's.
    pub pins: Option<PinsRule>,
    /// `trust_annotations`: the server's tool annotations are read as it gives them
    /// (`tool.annotations.*`); otherwise as MCP's defaults, whatever the server says. A
    /// server section without its own takes the top level's.
    pub trust_annotations: Option<bool>,
}

/// `hide`: a list of tool names and globs, or `{tools, resources, prompts}`, each such a
/// list; entries with their pointers (`/hide/0`, `/hide/resources/0`).
#[derive(Debug, Clone, Default)]
pub struct Hide {
    pub tools: Vec<NamePattern>,
    pub resources: Vec<NamePattern>,
    pub prompts: Vec<NamePattern>,
}

impl Hide {
    /// The entries that hide things of `kind` (none hides a method).
    pub fn of(&self, kind: Kind) -> &[NamePattern] {
        match kind {
            Kind::Tool => &self.tools,
            Kind::Resource => &self.resources,
            Kind::Prompt => &self.prompts,
            Kind::Method => &[],
        }
    }
}

impl Section {
    /// The rules for things of `kind`, by name or glob.
    pub fn rules(&self, kind: Kind) -> &[(NamePattern, Rule)] {
        match kind {
            Kind::Tool => &self.tools,
            Kind::Resource => &self.resources,
            Kind::Prompt => &self.prompts,
            Kind::Method => &self.methods,
        }
    }

    /// Every rule of the section: each kind's in order, then `all_tools`.
    pub fn every_rule(&self) -> impl Iterator<Item = &Rule> + Clone {
        Kind::ALL
            .into_iter()
            .flat_map(|kind| self.rules(kind).iter().map(|(_, rule)| rule))
            .chain(&self.all_tools)
    }
}

/// `pins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinsRule {
    pub pointer: String,
    /// The pins file, relative to the policy file's directory.
    pub file: String,
    /// `enforce` (the default): a changed or unpinned tool is withheld and its calls
    /// denied; `shadow`: only reported.
    pub mode: Mode,
    pub unpinned: Unpinned,
}

/// What happens to a tool with no pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unpinned {
    /// Withheld and denied (`TOOL_UNPINNED`), as a changed tool is.
    #[default]
    Hide,
    /// Judged by the policy alone.
    Allow,
}

/// An entry of a rule's `marks`: set on the caller's session, grant or agent when the rule
/// allows a call, for `ttl`, for conditions to read (`marks.NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRule {
    pub pointer: String,
    pub name: String,
    pub scope: Scope,
    pub ttl_ms: u64,
}

/// A tool name or glob as written in the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    pub text: String,
    /// JSON pointer of the entry (`/hide/2`, `/tools/delete_*`).
    pub pointer: String,
}

impl Policy {
    /// True when some call could wait for a person's approval: a `require_approval` rule
    /// in enforce mode (in shadow mode such a rule only notes what it would have asked), in
    /// any section.
    pub fn needs_approval(&self) -> bool {
        std::iter::once(&self.root)
            .chain(self.servers.iter().map(|(_, section)| section))
            .any(|section| {
                section.every_rule().any(|rule| {
                    rule.asks_approval() && rule.mode.unwrap_or(section.mode) == Mode::Enforce
                })
            })
    }
}

impl Rule {
    /// The rule can send a call to an approver: `require_approval`, or
    /// `require_confirmation` whose fallback is an approval.
    pub fn asks_approval(&self) -> bool {
        match self.action {
            Action::RequireApproval => true,
            Action::RequireConfirmation => {
                self.confirmation.as_ref().map(|c| c.fallback) == Some(Fallback::Approval)
            }
            Action::Allow | Action::Deny => false,
        }
    }
}

impl NamePattern {
    /// True when the text contains glob metacharacters (`*`, `?`, `[`).
    pub fn is_glob(&self) -> bool {
        crate::policy::glob::is_glob(&self.text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultAction {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Allow,
    Deny,
    RequireApproval,
    /// Ask the user in their own MCP client ([`Confirmation`]).
    RequireConfirmation,
}

/// A rule: `tools[name]` or `all_tools`.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// JSON pointer of the rule object (`/tools/create-ami`, `/all_tools`).
    pub pointer: String,
    pub action: Action,
    pub reason: Option<String>,
    /// Per-rule `mode`; `None` inherits the section's.
    pub mode: Option<Mode>,
    pub limits: Vec<Limit>,
    pub require: Vec<ConditionItem>,
    pub deny_if: Vec<ConditionItem>,
    pub approval: Option<Approval>,
    /// `confirmation` of a `require_confirmation` rule (its defaults when not written).
    pub confirmation: Option<Confirmation>,
    /// Argument paths the decision log writes in clear (`log: [args.amount]`).
    pub log: Vec<Path>,
    /// Which upstream failures give a call's limits back (a proxy that sees the answer
    /// releases the reservation); `None` inherits `all_tools`', then [`Release::Failed`].
    pub release_on_failure: Option<Release>,
    /// Marks the rule sets on the caller when it allows a call.
    pub marks: Vec<MarkRule>,
}

/// `release_on_failure`: which failed calls give their limits back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Release {
    /// `false`: none; a call counts once it was let through.
    Never,
    /// `true`, the default: calls the server did not run, by what the protocol says: an
    /// HTTP error status or a JSON-RPC error.
    #[default]
    Failed,
    /// `"tool_error"`: those, and a result with `isError: true`, which a tool may return
    /// after it acted.
    ToolError,
}

/// `approval` of a `require_approval` rule; enforced by a later component.
#[derive(Debug, Clone, Default)]
pub struct Approval {
    pub timeout_ms: Option<u64>,
    pub approvers: Vec<String>,
}

/// `confirmation` of a `require_confirmation` rule: the question the user is asked, how
/// long the answer may take, and what a client that cannot be asked gets.
#[derive(Debug, Clone, Default)]
pub struct Confirmation {
    /// The question, parsed from `message` (its `{args.…}` placeholders apart); empty: none
    /// was written, and the default one is asked.
    pub pieces: Vec<Piece>,
    pub timeout_ms: Option<u64>,
    pub fallback: Fallback,
}

/// One piece of a question: text of the policy's, or the value at an argument path.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Arg(Path),
}

/// Parse a question: `{args.PATH}` puts the argument there; `{{` and `}}` are braces.
pub fn parse_question(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            literal.push(c);
            rest = &rest[2..];
        } else if c == '{' {
            let end = rest
                .find('}')
                .ok_or_else(|| "a \"{\" is not closed (write \"{{\" for a brace)".to_owned())?;
            let inner = rest[1..end].trim();
            let path = Path::parse(inner).map_err(|e| format!("{{{inner}}}: {e}"))?;
            if path.root != PathRoot::Args {
                return Err(format!(
                    "{{{inner}}}: a question names argument paths (args.…) only"
                ));
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Arg(path));
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err("a \"}\" has no \"{\" (write \"}}\" for a brace)".to_owned());
        } else {
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// What a call gets when its client cannot be asked (an earlier MCP revision, no form
/// elicitation, or a gateway that cannot answer in the server's place).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Denied, saying why (`CONFIRMATION_UNAVAILABLE`).
    #[default]
    Deny,
    /// Out of band: the rule asks for a human's approval instead (its `approval`).
    Approval,
}

/// Whose counter a limit counts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Grant,
    Session,
    Agent,
    Server,
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Grant => "grant",
            Scope::Session => "session",
            Scope::Agent => "agent",
            Scope::Server => "server",
            Scope::Global => "global",
        }
    }
}

/// One entry of `limits`.
#[derive(Debug, Clone)]
pub struct Limit {
    /// JSON pointer of the limit (`/tools/create-ami/limits/0`).
    pub pointer: String,
    pub counter: String,
    /// Window length in milliseconds (> 0).
    pub window_ms: u64,
    /// Calls allowed in any window, or the budget when `cost` is set. Positive, finite;
    /// an integer unless `cost` is set.
    pub max: f64,
    pub scope: Scope,
    /// Argument path whose numeric value is counted instead of 1.
    pub cost: Option<Path>,
}

/// An item of `require` / `deny_if`: a bare condition, or a group with its own message.
#[derive(Debug, Clone)]
pub enum ConditionItem {
    Condition(Condition),
    /// `{"conditions": [...], "on_deny": "..."}`.
    Group {
        pointer: String,
        conditions: Vec<Condition>,
        on_deny: Option<String>,
    },
}

impl ConditionItem {
    /// Whether any comparison in this item reads a path under `root`.
    pub fn reads(&self, root: PathRoot) -> bool {
        match self {
            ConditionItem::Condition(c) => c.reads(root),
            ConditionItem::Group { conditions, .. } => conditions.iter().any(|c| c.reads(root)),
        }
    }

    /// Every comparison in this item.
    pub fn compares(&self) -> Vec<&Compare> {
        let mut out = Vec::new();
        let mut stack: Vec<&Condition> = match self {
            ConditionItem::Condition(c) => vec![c],
            ConditionItem::Group { conditions, .. } => conditions.iter().collect(),
        };
        while let Some(c) = stack.pop() {
            match c {
                Condition::Compare(compare) => out.push(compare),
                Condition::All { items, .. } | Condition::Any { items, .. } => stack.extend(items),
                Condition::Not { item, .. } => stack.push(item),
            }
        }
        out
    }
}

/// A condition tree.
#[derive(Debug, Clone)]
pub enum Condition {
    Compare(Compare),
    All {
        pointer: String,
        items: Vec<Condition>,
    },
    Any {
        pointer: String,
        items: Vec<Condition>,
    },
    Not {
        pointer: String,
        item: Box<Condition>,
    },
}

impl Condition {
    /// Whether any comparison in this tree reads a path under `root`.
    pub fn reads(&self, root: PathRoot) -> bool {
        match self {
            Condition::Compare(c) => c.path.root == root,
            Condition::All { items, .. } | Condition::Any { items, .. } => {
                items.iter().any(|c| c.reads(root))
            }
            Condition::Not { item, .. } => item.reads(root),
        }
    }

    pub fn pointer(&self) -> &str {
        match self {
            Condition::Compare(c) => &c.pointer,
            Condition::All { pointer, .. }
            | Condition::Any { pointer, .. }
            | Condition::Not { pointer, .. } => pointer,
        }
    }
}

/// `{path, op, value}`.
#[derive(Debug, Clone)]
pub struct Compare {
    pub pointer: String,
    pub path: Path,
    pub op: Op,
    /// The operand as written. For `exists` it is `true` unless given as a boolean.
    pub value: Value,
    /// Compiled pattern for `regex`, `not_regex` and `glob` (anchored for `glob`).
    pub pattern: Option<regex::Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    In,
    NotIn,
    Lt,
    Lte,
    Gt,
    Gte,
    Regex,
    NotRegex,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    Glob,
    Exists,
}

impl Op {
    pub const ALL: [(&'static str, Op); 16] = [
        ("eq", Op::Eq),
        ("neq", Op::Neq),
        ("in", Op::In),
        ("not_in", Op::NotIn),
        ("lt", Op::Lt),
        ("lte", Op::Lte),
        ("gt", Op::Gt),
        ("gte", Op::Gte),
        ("regex", Op::Regex),
        ("not_regex", Op::NotRegex),
        ("contains", Op::Contains),
        ("not_contains", Op::NotContains),
        ("starts_with", Op::StartsWith),
        ("ends_with", Op::EndsWith),
        ("glob", Op::Glob),
        ("exists", Op::Exists),
    ];

    pub fn parse(text: &str) -> Option<Op> {
        Op::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, op)| *op)
    }

    pub fn name(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map(|(name, _)| *name)
            .unwrap_or("?")
    }
}

/// A parsed condition path such as `args.items[0].name` or `subject.attributes.team`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub root: PathRoot,
    /// Segments after the root. For `subject`, the first is `grant`, `session`, `agent` or
    /// `attributes` (then exactly one more key); for `server`, none; for `tool`, none (its
    /// name), `title`, or `annotations` and a hint; for `marks`, none (the names of the
    /// marks set) or one (a mark).
    pub segments: Vec<Segment>,
    /// The path as written, for messages.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRoot {
    Args,
    Subject,
    Server,
    Tool,
    Marks,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Escape one reference token for a JSON pointer (RFC 6901).
pub fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
