//! Turning a loaded [`Policy`] into the structures a decision runs on: name matchers built
//! once, counter identities hashed once, and every string a decision returns allocated once.

use crate::counter::{to_units, CounterKey, Granularity};
use crate::matcher::NameMatcher;
use crate::policy::{
    Action, ConditionItem, DefaultAction, Limit, Mode, Policy, Rule, Scope, Section, Segment,
};
use ahash::AHashMap;
use std::sync::Arc;

pub struct CompiledPolicy {
    pub revision: Arc<str>,
    pub root: CompiledSection,
    pub servers: AHashMap<Box<str>, CompiledSection>,
    /// Kept for introspection (`toolgate` prints it, tests compare it).
    pub source: Policy,
}

pub struct CompiledSection {
    pub default_allow: bool,
    pub shadow: bool,
    pub hide: NameMatcher<Arc<str>>,
    pub tools: NameMatcher<usize>,
    pub rules: Vec<CompiledRule>,
    pub all_tools: Option<CompiledRule>,
    pub default_rule: Arc<str>,
    pub default_deny_reason: Arc<str>,
    pub default_allow_reason: Arc<str>,
}

pub struct CompiledRule {
    pub pointer: Arc<str>,
    pub action: Action,
    pub shadow: Option<bool>,
    pub reason: Option<Arc<str>>,
    pub limits: Vec<CompiledLimit>,
    pub require: Vec<ConditionItem>,
    pub deny_if: Vec<ConditionItem>,
    pub allowed_reason: Arc<str>,
    pub denied_reason: Arc<str>,
    pub approval_reason: Arc<str>,
}

pub struct CompiledLimit {
    pub pointer: Arc<str>,
    pub counter: Arc<str>,
    pub identity: u64,
    pub granularity: Granularity,
    pub window_ms: u64,
    pub max: f64,
    pub max_units: u64,
    pub scope: Scope,
    pub cost: Option<Vec<Segment>>,
    pub cost_text: Option<Arc<str>>,
    pub cost_pointer: Arc<str>,
}

impl CompiledPolicy {
    pub fn compile(policy: Policy) -> Result<CompiledPolicy, String> {
        let root = compile_section(&policy.root)?;
        let mut servers = AHashMap::new();
        for (id, section) in &policy.servers {
            servers.insert(id.as_str().into(), compile_section(section)?);
        }
        Ok(CompiledPolicy {
            revision: policy.revision.as_str().into(),
            root,
            servers,
            source: policy,
        })
    }

    #[inline]
    pub fn section(&self, server: Option<&str>) -> &CompiledSection {
        server
            .and_then(|s| self.servers.get(s))
            .unwrap_or(&self.root)
    }
}

fn compile_section(section: &Section) -> Result<CompiledSection, String> {
    let hide = NameMatcher::new(
        section
            .hide
            .iter()
            .map(|h| (h.text.as_str(), Arc::<str>::from(h.pointer.as_str()))),
    )?;
    let mut rules = Vec::with_capacity(section.tools.len());
    let mut names = Vec::with_capacity(section.tools.len());
    for (i, (name, rule)) in section.tools.iter().enumerate() {
        rules.push(compile_rule(rule, Some(&name.text)));
        names.push((name.text.as_str(), i));
    }
    let default_rule: Arc<str> = format!("{}/default", section.pointer).into();
    Ok(CompiledSection {
        default_allow: section.default == DefaultAction::Allow,
        shadow: section.mode == Mode::Shadow,
        hide,
        tools: NameMatcher::new(names)?,
        rules,
        all_tools: section.all_tools.as_ref().map(|r| compile_rule(r, None)),
        default_deny_reason: "denied by default: the policy does not allow this tool".into(),
        default_allow_reason: "allowed by default".into(),
        default_rule,
    })
}

fn compile_rule(rule: &Rule, tool: Option<&str>) -> CompiledRule {
    let what = tool.map_or_else(|| "all tools".to_owned(), |t| format!("tool {t:?}"));
    CompiledRule {
        pointer: rule.pointer.as_str().into(),
        action: rule.action,
        shadow: rule.mode.map(|m| m == Mode::Shadow),
        reason: rule.reason.as_deref().map(Arc::from),
        limits: rule.limits.iter().map(compile_limit).collect(),
        require: rule.require.clone(),
        deny_if: rule.deny_if.clone(),
        allowed_reason: format!("allowed by {}", rule.pointer).into(),
        denied_reason: rule
            .reason
            .clone()
            .unwrap_or_else(|| format!("{what} is denied by policy"))
            .into(),
        approval_reason: rule
            .reason
            .clone()
            .unwrap_or_else(|| format!("{what} requires a human's approval"))
            .into(),
    }
}

fn compile_limit(limit: &Limit) -> CompiledLimit {
    let granularity = Granularity::for_window_ms(limit.window_ms);
    let identity = CounterKey::identity(&[
        limit.counter.as_bytes(),
        &limit.window_ms.to_le_bytes(),
        limit.scope.as_str().as_bytes(),
    ]);
    CompiledLimit {
        pointer: limit.pointer.as_str().into(),
        counter: limit.counter.as_str().into(),
        identity,
        granularity,
        window_ms: limit.window_ms,
        max: limit.max,
        // The loader bounds max, so this cannot overflow the 40-bit buckets.
        max_units: to_units(limit.max).unwrap_or(0),
        scope: limit.scope,
        cost: limit.cost.as_ref().map(|p| p.segments.clone()),
        cost_text: limit.cost.as_ref().map(|p| Arc::from(p.text.as_str())),
        cost_pointer: format!("{}/cost", limit.pointer).into(),
    }
}
