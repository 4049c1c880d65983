//! Turning a loaded [`Policy`] into the structures a decision runs on: name matchers built
//! once, counter identities hashed once, and every string a decision returns allocated once.

use crate::counter::{to_units, CounterKey, Granularity};
use crate::matcher::NameMatcher;
use crate::policy::{
    Action, ConditionItem, DefaultAction, Limit, Mode, PathRoot, Policy, Release, Rule, Scope,
    Section, Segment,
};
use ahash::AHashMap;

pub struct CompiledPolicy {
    pub revision: Box<str>,
    pub root: CompiledSection,
    pub servers: AHashMap<Box<str>, CompiledSection>,
    /// Every string a decision can return, so a decision refers to them by index and keeps
    /// the policy alive with one reference count instead of one per string.
    texts: Vec<Box<str>>,
    /// What a decision reports of each limit besides its state, so a limit state is an
    /// index and two numbers (decisions are moved by value: their size is on the hot path).
    limits: Vec<LimitInfo>,
    /// Kept for introspection (`toolgate` prints it, tests compare it).
    pub source: Policy,
}

/// Index of a string in [`CompiledPolicy`]'s text table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextId(u32);

/// Index of a limit in [`CompiledPolicy`]'s limit table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitId(u32);

/// A limit as decisions report it.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitInfo {
    pub(crate) counter: TextId,
    pub(crate) rule: TextId,
    pub scope: Scope,
    pub max: f64,
    pub window_ms: u64,
}

/// Collects the strings and limits of a policy while it is compiled.
#[derive(Default)]
struct Tables {
    texts: Vec<Box<str>>,
    limits: Vec<LimitInfo>,
}

impl Tables {
    fn text(&mut self, text: impl Into<Box<str>>) -> TextId {
        self.texts.push(text.into());
        TextId((self.texts.len() - 1) as u32)
    }

    fn limit(&mut self, info: LimitInfo) -> LimitId {
        self.limits.push(info);
        LimitId((self.limits.len() - 1) as u32)
    }
}

pub struct CompiledSection {
    /// JSON pointer of the section: `""` for the top level, `/servers/<id>` otherwise.
    pub pointer: Box<str>,
    pub default_allow: bool,
    pub shadow: bool,
    pub hide: NameMatcher<TextId>,
    pub tools: NameMatcher<usize>,
    pub rules: Vec<CompiledRule>,
    pub all_tools: Option<CompiledRule>,
    pub default_rule: TextId,
    pub default_deny_reason: TextId,
    pub default_allow_reason: TextId,
}

/// An approval's timeout when the rule gives none: 15 minutes.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 15 * 60 * 1000;

pub struct CompiledRule {
    pub pointer: TextId,
    pub action: Action,
    pub shadow: Option<bool>,
    /// The rule's own `reason`, if written.
    pub reason: Option<Box<str>>,
    pub limits: Vec<CompiledLimit>,
    pub require: Vec<CompiledCondition>,
    pub deny_if: Vec<CompiledCondition>,
    pub allowed_reason: TextId,
    pub denied_reason: TextId,
    pub approval_reason: TextId,
    /// How long an approval waits for an approver, and how long an approved call may then
    /// take to run.
    pub approval_timeout_ms: u64,
    /// Who may approve; empty: anyone with an admin token.
    pub approvers: Vec<Box<str>>,
    /// Argument paths the decision log writes in clear.
    pub log: Vec<crate::policy::Path>,
    /// `release_on_failure` as written (`None`: not written).
    pub release_on_failure: Option<Release>,
    /// Some condition reads the caller (`subject.*`): the rule can treat callers apart.
    pub reads_subject: bool,
}

/// A `require` or `deny_if` item, with the denial it gives: when a `require` item does
/// not hold, or a `deny_if` item holds. Made once, not per denied call.
pub struct CompiledCondition {
    pub item: ConditionItem,
    pub denial: ConditionDenial,
}

#[derive(Debug, Clone, Copy)]
pub struct ConditionDenial {
    pub reason: TextId,
    pub pointer: TextId,
}

pub struct CompiledLimit {
    /// Where decisions find `info` (a copy of it, kept here for the engine's own use).
    pub id: LimitId,
    /// The rule pointer, counter, scope, max and window.
    pub info: LimitInfo,
    pub counter_name: Box<str>,
    pub identity: u64,
    pub granularity: Granularity,
    pub max_units: u64,
    pub cost: Option<Vec<Segment>>,
    pub cost_text: Option<Box<str>>,
    pub cost_pointer: TextId,
}

impl CompiledPolicy {
    pub fn compile(policy: Policy) -> Result<CompiledPolicy, String> {
        let mut tables = Tables::default();
        let root = compile_section(&policy.root, &mut tables)?;
        let mut servers = AHashMap::new();
        for (id, section) in &policy.servers {
            servers.insert(id.as_str().into(), compile_section(section, &mut tables)?);
        }
        Ok(CompiledPolicy {
            revision: policy.revision.as_str().into(),
            root,
            servers,
            texts: tables.texts,
            limits: tables.limits,
            source: policy,
        })
    }

    #[inline]
    pub fn text(&self, id: TextId) -> &str {
        &self.texts[id.0 as usize]
    }

    #[inline]
    pub fn limit(&self, id: LimitId) -> &LimitInfo {
        &self.limits[id.0 as usize]
    }

    /// Which failures of a call of `tool` upstream give its limits back: the tool's rule's
    /// `release_on_failure`, else `all_tools`', else [`Release::Failed`].
    pub fn releases_on_failure(&self, server: Option<&str>, tool: &str) -> Release {
        let section = self.section(server);
        let rule = section.tools.lookup(tool).map(|i| &section.rules[*i]);
        rule.and_then(|r| r.release_on_failure)
            .or_else(|| section.all_tools.as_ref()?.release_on_failure)
            .unwrap_or_default()
    }

    #[inline]
    pub fn section(&self, server: Option<&str>) -> &CompiledSection {
        server
            .and_then(|s| self.servers.get(s))
            .unwrap_or(&self.root)
    }
}

fn compile_section(section: &Section, tables: &mut Tables) -> Result<CompiledSection, String> {
    let hide = NameMatcher::new(
        section
            .hide
            .iter()
            .map(|h| (h.text.as_str(), tables.text(h.pointer.as_str())))
            .collect::<Vec<_>>(),
    )?;
    let mut rules = Vec::with_capacity(section.tools.len());
    let mut names = Vec::with_capacity(section.tools.len());
    for (i, (name, rule)) in section.tools.iter().enumerate() {
        rules.push(compile_rule(rule, Some(&name.text), tables));
        names.push((name.text.as_str(), i));
    }
    Ok(CompiledSection {
        pointer: section.pointer.as_str().into(),
        default_allow: section.default == DefaultAction::Allow,
        shadow: section.mode == Mode::Shadow,
        hide,
        tools: NameMatcher::new(names)?,
        rules,
        all_tools: section
            .all_tools
            .as_ref()
            .map(|r| compile_rule(r, None, tables)),
        default_deny_reason: tables.text("denied by default: the policy does not allow this tool"),
        default_allow_reason: tables.text("allowed by default"),
        default_rule: tables.text(format!("{}/default", section.pointer)),
    })
}

fn compile_rule(rule: &Rule, tool: Option<&str>, tables: &mut Tables) -> CompiledRule {
    let what = tool.map_or_else(|| "all tools".to_owned(), |t| format!("tool {t:?}"));
    let own = |fallback: String| rule.reason.clone().unwrap_or(fallback);
    CompiledRule {
        pointer: tables.text(rule.pointer.as_str()),
        action: rule.action,
        shadow: rule.mode.map(|m| m == Mode::Shadow),
        reason: rule.reason.as_deref().map(Box::from),
        limits: rule
            .limits
            .iter()
            .map(|l| compile_limit(l, tables))
            .collect(),
        require: rule
            .require
            .iter()
            .map(|item| compile_condition(rule, item, "does not hold (required)", tables))
            .collect(),
        deny_if: rule
            .deny_if
            .iter()
            .map(|item| compile_condition(rule, item, "hold", tables))
            .collect(),
        allowed_reason: tables.text(format!("allowed by {}", rule.pointer)),
        denied_reason: tables.text(own(format!("{what} is denied by policy"))),
        approval_reason: tables.text(own(format!("{what} requires a human's approval"))),
        approval_timeout_ms: rule
            .approval
            .as_ref()
            .and_then(|a| a.timeout_ms)
            .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_MS),
        approvers: rule
            .approval
            .iter()
            .flat_map(|a| &a.approvers)
            .map(|a| Box::from(a.as_str()))
            .collect(),
        log: rule.log.clone(),
        release_on_failure: rule.release_on_failure,
        reads_subject: rule
            .require
            .iter()
            .chain(&rule.deny_if)
            .any(|item| item.reads(PathRoot::Subject)),
    }
}

/// The item, and what its denial says: the group's `on_deny`, else the rule's `reason`,
/// else which condition (or group) `verb`.
fn compile_condition(
    rule: &Rule,
    item: &ConditionItem,
    verb: &str,
    tables: &mut Tables,
) -> CompiledCondition {
    let (own, pointer, fallback) = match item {
        ConditionItem::Condition(c) => (
            None,
            c.pointer(),
            format!("denied: condition {} {verb}", c.pointer()),
        ),
        ConditionItem::Group {
            pointer, on_deny, ..
        } => (
            on_deny.as_deref(),
            pointer.as_str(),
            format!("denied: conditions of {pointer} {verb}"),
        ),
    };
    let reason = own
        .or(rule.reason.as_deref())
        .map_or(fallback, str::to_owned);
    CompiledCondition {
        item: item.clone(),
        denial: ConditionDenial {
            reason: tables.text(reason),
            pointer: tables.text(pointer),
        },
    }
}

fn compile_limit(limit: &Limit, tables: &mut Tables) -> CompiledLimit {
    let granularity = Granularity::for_window_ms(limit.window_ms);
    let identity = CounterKey::identity(&[
        limit.counter.as_bytes(),
        &limit.window_ms.to_le_bytes(),
        limit.scope.as_str().as_bytes(),
    ]);
    let info = LimitInfo {
        counter: tables.text(limit.counter.as_str()),
        rule: tables.text(limit.pointer.as_str()),
        scope: limit.scope,
        max: limit.max,
        window_ms: limit.window_ms,
    };
    CompiledLimit {
        id: tables.limit(info.clone()),
        info,
        counter_name: limit.counter.as_str().into(),
        identity,
        granularity,
        // The loader bounds max, so this cannot overflow the 40-bit buckets.
        max_units: to_units(limit.max).unwrap_or(0),
        cost: limit.cost.as_ref().map(|p| p.segments.clone()),
        cost_text: limit.cost.as_ref().map(|p| p.text.as_str().into()),
        cost_pointer: tables.text(format!("{}/cost", limit.pointer)),
    }
}
