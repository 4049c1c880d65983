//! A policy's sections (the top level, `servers`), their name maps and rules.

use super::limits::duration_ms;
use super::*;

impl Loader {
    // --- sections ---------------------------------------------------------------------------

    /// The top level (`top`) or one `servers` entry. Returns the section and, for the top
    /// level, the server sections.
    pub(super) fn section(
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

    pub(super) fn version(&mut self, node: &Node, pointer: &str) {
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
    pub(super) fn hide(&mut self, node: &Node, pointer: &str) -> Hide {
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
        if crate::policy::glob::is_glob(text) {
            if let Err(e) = crate::policy::glob::compile(text) {
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
            } else if kind == Kind::Resource && !crate::policy::glob::is_glob(&m.key) {
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

    pub(super) fn servers(&mut self, node: &Node, pointer: &str) -> Vec<(String, Section)> {
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
    pub(super) fn rule(&mut self, node: &Node, pointer: &str, kind: Kind) -> Rule {
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
                    match crate::policy::parse_question(text) {
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

    pub(super) fn approval(&mut self, node: &Node, pointer: &str) -> Option<Approval> {
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
}

/// Why a key of `kind` would never find what its writer means, if it would not: a glob over
/// URIs whose `[...]` holds a `:` (an IPv6 host's brackets, read as a class of characters:
/// `[[]` is a literal `[`); a tool name MCP does not allow (most likely a typo); or a method
/// a `methods` rule never decides, as what it names decides it or it passes as the
/// protocol's plumbing.
fn never_matched(kind: Kind, key: &str) -> Option<String> {
    match kind {
        Kind::Tool if !crate::policy::glob::is_glob(key) && !is_mcp_tool_name(key) => {
            Some(format!(
                "{key:?} is not a tool name MCP allows (1 to {MAX_TOOL_NAME} of A-Z, a-z, 0-9, \
             '_', '-' and '.'), so a server that keeps to MCP lists no such tool: for one that \
             names its tools otherwise, match them with a glob"
            ))
        }
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
            (crate::policy::glob::is_glob(key) && ipv6).then(|| {
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
                || (key.starts_with("notifications/") && !crate::policy::glob::is_glob(key));
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
