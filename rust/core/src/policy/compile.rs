//! Turning a loaded [`Policy`] into the structures a decision runs on: name matchers built
//! once, counter identities hashed once, and every string a decision returns allocated once.

use super::matcher::NameMatcher;
use super::pins::Pins;
use super::{
    Action, ConditionItem, DefaultAction, Limit, MarkRule, Mode, PathRoot, Policy, Release, Rule,
    Scope, Section, Segment, Unpinned,
};
use crate::counter::{to_units, CounterKey, Granularity};
use crate::definitions::definition::{Digest, DriftKind};
use crate::kind::{Kind, Listed};
use ahash::AHashMap;
use std::sync::Arc;

pub struct CompiledPolicy {
    pub revision: Box<str>,
    /// This compiled policy's own number in the process (no two share one, whatever their
    /// revision): what was judged under it is known to be judged under it again.
    pub generation: u64,
    pub root: CompiledSection,
    pub servers: AHashMap<Box<str>, CompiledSection>,
    /// Every mark some rule sets, by name: where a condition that reads it finds its counter.
    pub marks: AHashMap<Box<str>, Arc<CompiledMark>>,
    /// Whose each task is ([`crate::owners::tasks`]) and each session
    /// ([`crate::owners::sessions`]).
    pub tasks: Owned,
    pub sessions: Owned,
    /// The counter that holds a session for the first caller to use it: at most one unit.
    pub session_claim: CompiledLimit,
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
    /// The counter table's slots, of which one caller's notes hold a share.
    slots: usize,
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
    /// Each kind's names, in [`Kind::ALL`]'s order ([`CompiledSection::names`]).
    names: [Namespace; 4],
    /// Every kind's rules, which the namespaces' matchers index.
    pub rules: Vec<CompiledRule>,
    pub all_tools: Option<CompiledRule>,
    pub default_rule: TextId,
    pub default_allow_reason: TextId,
    /// `pins` (the section's own, else the top level's).
    pub pins: Option<SectionPins>,
    /// `trust_annotations` (the section's own, else the top level's, else false).
    pub trust_annotations: bool,
    /// Some rule reads a tool's definition (`tool.title`, `tool.annotations.*`).
    pub reads_definitions: bool,
    /// Some rule sets or reads marks: without, a decision skips them altogether.
    pub uses_marks: bool,
    /// Some rule asks a person (`require_approval`, `require_confirmation`): without, a
    /// decision skips looking for one.
    pub asks: bool,
}

/// What a section says of one kind's names: which are hidden, and which rule each finds.
pub struct Namespace {
    pub hide: NameMatcher<TextId>,
    /// Name or glob → index in [`CompiledSection::rules`].
    pub rules: NameMatcher<usize>,
    /// Why a name no rule finds is denied, under `default: deny`.
    pub default_deny_reason: TextId,
}

impl CompiledSection {
    /// Whether a listed tool is judged by its name alone: nothing is pinned and no rule reads
    /// a definition, so judging it reads and records no definition.
    pub fn judges_tools_by_name(&self) -> bool {
        self.pins.is_none() && !self.reads_definitions
    }

    #[inline]
    pub fn names(&self, kind: Kind) -> &Namespace {
        &self.names[kind as usize]
    }

    /// The rule `name` of `kind` finds, if any.
    #[inline]
    pub fn rule(&self, kind: Kind, name: &str) -> Option<&CompiledRule> {
        let index = self.names(kind).rules.lookup(name)?;
        Some(&self.rules[*index])
    }
}

/// A section's `pins`.
pub struct SectionPins {
    pub pins: Arc<Pins>,
    /// `mode: shadow`: a changed or unpinned tool is reported, not withheld.
    pub shadow: bool,
    pub unpinned_hidden: bool,
    /// The pointer of `pins`, the rule a pins denial names.
    pub pointer: TextId,
}

/// A tool a section's pins withhold: how it departs from its pin, and why, as the agent is
/// told.
pub struct Withheld {
    pub kind: DriftKind,
    pub pinned: Option<Digest>,
    pub reason: String,
}

impl SectionPins {
    /// Whether `tool` of `server` is withheld: listed (as `listed`, its definition's digest
    /// as last listed) other than pinned, or without a pin where unpinned tools are
    /// withheld. A tool not listed since this process started is judged by its pin alone.
    pub fn withheld(
        &self,
        server: Option<&str>,
        tool: &str,
        listed: Option<&Digest>,
    ) -> Option<Withheld> {
        let pin = self.pins.get(server, tool);
        match (pin, listed) {
            (Some(pin), Some(seen)) if pin.digest != *seen => Some(Withheld {
                kind: DriftKind::Changed,
                pinned: Some(pin.digest),
                reason: format!(
                    "tool {tool:?} changed since it was pinned (pinned {}, listed now as {}): it \
                     is withheld until someone reviews it and pins it again",
                    pin.digest.short(),
                    seen.short()
                ),
            }),
            (None, _) if self.unpinned_hidden => Some(Withheld {
                kind: DriftKind::Unpinned,
                pinned: None,
                reason: format!(
                    "tool {tool:?} has no pin: it is withheld until someone reviews it and pins it"
                ),
            }),
            _ => None,
        }
    }
}

/// A mark some rule sets: its counter (the mark's ttl is the window), and what the rule's
/// want of it reserves (one unit, never refused).
pub struct CompiledMark {
    pub name: Arc<str>,
    pub scope: Scope,
    pub ttl_ms: u64,
    pub identity: u64,
    pub granularity: Granularity,
    /// As a limit with no ceiling, for the reservation it joins.
    pub limit: CompiledLimit,
}

/// A `require_confirmation` rule's question (empty: the default one, made per call), its
/// time to answer and its fallback; and the counters that see each confirmation used once
/// (a limit of one call per nonce) and cap one caller's.
pub struct CompiledConfirmation {
    pub pieces: Vec<super::Piece>,
    pub timeout_ms: u64,
    pub fallback: super::Fallback,
    /// Why a call is asked: the rule's `reason`, or a default.
    pub asked_reason: TextId,
    pub once: CompiledLimit,
    /// At most [`MAX_CONFIRMED_PER_CALLER`] confirmed calls per grant while their nonces are
    /// remembered.
    pub per_caller: CompiledLimit,
}

/// Confirmed calls one grant may make while their nonces are remembered (twice the rule's
/// timeout), in a table large enough (else its share: [`crate::owners::per_caller`]); calls
/// without a grant share one count.
pub const MAX_CONFIRMED_PER_CALLER: u32 = 1000;

/// How long a user may take to answer when the rule gives no `timeout`: 5 minutes.
pub const DEFAULT_CONFIRMATION_TIMEOUT_MS: u64 = 5 * 60 * 1000;

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
    pub log: Vec<super::Path>,
    /// `release_on_failure` as written (`None`: not written).
    pub release_on_failure: Option<Release>,
    /// Some condition reads the caller (`subject.*`): the rule can treat callers apart.
    pub reads_subject: bool,
    /// Marks the rule sets when it allows a call.
    pub marks: Vec<Arc<CompiledMark>>,
    /// Some condition reads marks (`marks`, `marks.NAME`): known only once they are read.
    pub reads_marks: bool,
    /// Whether the rule lets one caller through where it could stop another, or counts or
    /// marks who passed: a condition on the caller or its marks, a limit, a mark. An answer
    /// it let through is then the caller's own, never to be served to another from a cache.
    pub per_caller: bool,
    /// The marks the conditions read (every mark of the policy for `marks`), once compiled.
    pub mark_reads: Vec<Arc<CompiledMark>>,
    /// A `require_confirmation` rule's.
    pub confirmation: Option<Box<CompiledConfirmation>>,
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
    /// A confirmation's nonce: counted on the shared store or not at all (never in a
    /// replica's own table while the store is away, where a second replica could count it
    /// again).
    pub once: bool,
    /// Counted in the shared store itself in every mode, never in a cached copy merged
    /// later: what another replica must see at its next decision (a confirmation's nonce, a
    /// mark, whose a task or a session is). A rule's limit may overshoot by a merge's lag.
    pub write_through: bool,
}

impl CompiledPolicy {
    /// `policy` compiled for an engine whose counter table has `slots` (what one caller's
    /// notes may hold of it: [`crate::owners::per_caller`]).
    pub fn compile(policy: Policy, slots: usize) -> Result<CompiledPolicy, String> {
        let mut tables = Tables {
            slots,
            ..Tables::default()
        };
        let mut marks = AHashMap::new();
        let inherited = Inherited {
            pins: policy.root.pins.as_ref(),
            trust_annotations: policy.root.trust_annotations,
        };
        let ctx = Context {
            policy: &policy,
            inherited,
        };
        let mut root = compile_section(&policy.root, &ctx, &mut tables, &mut marks)?;
        let mut servers = AHashMap::new();
        for (id, section) in &policy.servers {
            let compiled = compile_section(section, &ctx, &mut tables, &mut marks)?;
            servers.insert(id.as_str().into(), compiled);
        }
        // Which marks each rule reads, now that every mark is known.
        fill_mark_reads(&policy.root, &mut root, &marks);
        for (id, section) in &policy.servers {
            if let Some(compiled) = servers.get_mut(id.as_str()) {
                fill_mark_reads(section, compiled, &marks);
            }
        }
        let tasks = Owned::compile(
            &mut tables,
            ["task owner", "tasks noted"],
            crate::owners::tasks::KEEP_MS,
            crate::owners::tasks::MAX_PER_CALLER,
        );
        let sessions = Owned::compile(
            &mut tables,
            ["session owner", "sessions held"],
            crate::owners::sessions::KEEP_MS,
            crate::owners::sessions::MAX_PER_CALLER,
        );
        let session_claim = internal_counter(
            &mut tables,
            "session claimed",
            1.0,
            crate::owners::sessions::KEEP_MS,
        );
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(CompiledPolicy {
            revision: policy.revision.as_str().into(),
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            root,
            servers,
            marks,
            tasks,
            sessions,
            session_claim,
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
        let rule = section.rule(Kind::Tool, tool);
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

    /// Whether every caller's judgement of a `listed` list from `server` can be taken as made
    /// before ([`crate::engine::listing::ListFilter::judging_alike`]): judging it records
    /// nothing (not a task list, each caller's own; for tools, nothing pinned and no definition
    /// read). A judgement that reads the caller is still never taken.
    pub fn judges_lists_alike(&self, listed: Listed, server: Option<&str>) -> bool {
        match listed {
            Listed::Tasks => false,
            Listed::Tools => self.section(server).judges_tools_by_name(),
            _ => true,
        }
    }
}

/// What a server section takes from the top level when it does not say, and the pins files
/// the policy read.
struct Context<'p> {
    policy: &'p Policy,
    inherited: Inherited<'p>,
}

struct Inherited<'p> {
    pins: Option<&'p super::PinsRule>,
    trust_annotations: Option<bool>,
}

type Marks = AHashMap<Box<str>, Arc<CompiledMark>>;

fn compile_section(
    section: &Section,
    ctx: &Context<'_>,
    tables: &mut Tables,
    marks: &mut Marks,
) -> Result<CompiledSection, String> {
    let mut rules = Vec::new();
    let mut namespace = |kind: Kind, rules: &mut Vec<CompiledRule>| {
        let hidden = section.hide.of(kind).iter();
        let hide = hidden.map(|h| (h.text.as_str(), tables.text(h.pointer.as_str())));
        let hide = NameMatcher::new(hide.collect::<Vec<_>>())?;
        let mut names = Vec::new();
        for (name, rule) in section.rules(kind) {
            names.push((name.text.as_str(), rules.len()));
            rules.push(compile_rule(rule, Some((kind, &name.text)), tables, marks));
        }
        let reason = format!("denied by default: the policy does not allow this {kind}");
        Ok::<_, String>(Namespace {
            hide,
            rules: NameMatcher::new(names)?,
            default_deny_reason: tables.text(reason),
        })
    };
    let names = [
        namespace(Kind::Tool, &mut rules)?,
        namespace(Kind::Resource, &mut rules)?,
        namespace(Kind::Prompt, &mut rules)?,
        namespace(Kind::Method, &mut rules)?,
    ];
    let all_tools = section
        .all_tools
        .as_ref()
        .map(|r| compile_rule(r, None, tables, marks));
    let pins = match section.pins.as_ref().or(ctx.inherited.pins) {
        None => None,
        Some(rule) => {
            let file = ctx.policy.pins.iter().find(|f| f.file == rule.file);
            let file = file.ok_or_else(|| format!("the pins file {:?} was not read", rule.file))?;
            Some(SectionPins {
                pins: Arc::clone(&file.pins),
                shadow: rule.mode == Mode::Shadow,
                unpinned_hidden: rule.unpinned == Unpinned::Hide,
                pointer: tables.text(rule.pointer.as_str()),
            })
        }
    };
    let reads = |root| {
        section
            .every_rule()
            .flat_map(|r| r.require.iter().chain(&r.deny_if))
            .any(|item| item.reads(root))
    };
    let every_rule = || section.every_rule();
    let uses_marks = reads(PathRoot::Marks) || every_rule().any(|r| !r.marks.is_empty());
    let asks = every_rule().any(|r| {
        matches!(
            r.action,
            Action::RequireApproval | Action::RequireConfirmation
        )
    });
    Ok(CompiledSection {
        pointer: section.pointer.as_str().into(),
        default_allow: section.default == DefaultAction::Allow,
        shadow: section.mode == Mode::Shadow,
        names,
        rules,
        all_tools,
        default_allow_reason: tables.text("allowed by default"),
        default_rule: tables.text(format!("{}/default", section.pointer)),
        pins,
        trust_annotations: section
            .trust_annotations
            .or(ctx.inherited.trust_annotations)
            .unwrap_or(false),
        reads_definitions: reads(PathRoot::Tool),
        uses_marks,
        asks,
    })
}

/// A rule of `named`'s kind and name (`None`: `all_tools`).
fn compile_rule(
    rule: &Rule,
    named: Option<(Kind, &str)>,
    tables: &mut Tables,
    marks: &mut Marks,
) -> CompiledRule {
    let what = named.map_or_else(|| "all tools".to_owned(), |(k, n)| format!("{k} {n:?}"));
    let own = |fallback: String| rule.reason.clone().unwrap_or(fallback);
    let conditions = || rule.require.iter().chain(&rule.deny_if);
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
        reads_subject: conditions().any(|item| item.reads(PathRoot::Subject)),
        marks: rule
            .marks
            .iter()
            .map(|m| compile_mark(m, tables, marks))
            .collect(),
        reads_marks: conditions().any(|item| item.reads(PathRoot::Marks)),
        per_caller: !rule.limits.is_empty()
            || !rule.marks.is_empty()
            || conditions()
                .any(|item| item.reads(PathRoot::Subject) || item.reads(PathRoot::Marks)),
        mark_reads: Vec::new(),
        confirmation: rule
            .confirmation
            .as_ref()
            .filter(|_| rule.action == Action::RequireConfirmation)
            .map(|c| compile_confirmation(rule, c, &what, tables)),
    }
}

fn compile_confirmation(
    rule: &Rule,
    c: &super::Confirmation,
    what: &str,
    tables: &mut Tables,
) -> Box<CompiledConfirmation> {
    let timeout_ms = c.timeout_ms.unwrap_or(DEFAULT_CONFIRMATION_TIMEOUT_MS);
    // A used nonce is remembered for twice a token's life: a replica whose clock (or the
    // store's) runs up to one timeout apart from the asking one still finds it used.
    let remembered_ms = timeout_ms.saturating_mul(2);
    let cap = crate::owners::per_caller(MAX_CONFIRMED_PER_CALLER, tables.slots);
    let mut limit = |counter: &str, scope: Scope, max: f64, once: bool| {
        let identity = CounterKey::identity(&[
            b"confirmation\0",
            counter.as_bytes(),
            &remembered_ms.to_le_bytes(),
        ]);
        let counted = Counted {
            counter,
            identity,
            scope,
            max,
            window_ms: remembered_ms,
            once,
        };
        internal_limit(tables, rule.pointer.as_str(), counted)
    };
    // One unit per nonce: a second use within the window finds no room.
    let once = limit("confirmation", Scope::Global, 1.0, true);
    // Each used nonce holds a counter slot; one caller's are capped, at a share of the
    // table, so that a client that confirms its own calls cannot crowd out everyone else's.
    let per_caller = limit("confirmations", Scope::Grant, f64::from(cap), false);
    let reason = rule.reason.clone().unwrap_or_else(|| {
        format!("{what} runs only once the user confirms it in their MCP client")
    });
    Box::new(CompiledConfirmation {
        pieces: c.pieces.clone(),
        timeout_ms,
        fallback: c.fallback,
        asked_reason: tables.text(reason),
        once,
        per_caller,
    })
}

fn fill_mark_reads(section: &Section, compiled: &mut CompiledSection, marks: &Marks) {
    // The rules were compiled in the order `every_rule` gives them, all_tools last.
    let compiled_rules = compiled.rules.iter_mut().chain(&mut compiled.all_tools);
    for (rule, c) in section.every_rule().zip(compiled_rules) {
        c.mark_reads = mark_reads(rule, marks);
    }
}

/// The marks `rule`'s conditions read: each `marks.NAME`, or every mark for `marks`.
fn mark_reads(rule: &Rule, marks: &Marks) -> Vec<Arc<CompiledMark>> {
    let compares: Vec<&super::Compare> = rule
        .require
        .iter()
        .chain(&rule.deny_if)
        .flat_map(|item| item.compares())
        .filter(|c| c.path.root == PathRoot::Marks)
        .collect();
    let mut out: Vec<Arc<CompiledMark>> = Vec::new();
    let mut add = |m: &Arc<CompiledMark>| {
        if !out.iter().any(|o| Arc::ptr_eq(o, m)) {
            out.push(Arc::clone(m));
        }
    };
    for c in compares {
        match &c.path.segments[..] {
            [Segment::Key(name)] => {
                if let Some(m) = marks.get(name.as_str()) {
                    add(m);
                }
            }
            // Every mark, by name: the order reads are made and reported in is the same
            // wherever the policy is compiled (a map's is not).
            _ => {
                let mut all: Vec<&Arc<CompiledMark>> = marks.values().collect();
                all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
                all.into_iter().for_each(&mut add);
            }
        }
    }
    out
}

/// One mark (the first rule that sets it compiles it; the loader made sure every rule that
/// sets it agrees).
fn compile_mark(mark: &MarkRule, tables: &mut Tables, marks: &mut Marks) -> Arc<CompiledMark> {
    if let Some(m) = marks.get(mark.name.as_str()) {
        return Arc::clone(m);
    }
    let granularity = Granularity::for_window_ms(mark.ttl_ms);
    let identity = CounterKey::identity(&[
        b"mark\0",
        mark.name.as_bytes(),
        &mark.ttl_ms.to_le_bytes(),
        mark.scope.as_str().as_bytes(),
    ]);
    let info = LimitInfo {
        counter: tables.text(format!("mark:{}", mark.name)),
        rule: tables.text(mark.pointer.as_str()),
        scope: mark.scope,
        max: f64::INFINITY,
        window_ms: mark.ttl_ms,
    };
    let compiled = Arc::new(CompiledMark {
        name: mark.name.as_str().into(),
        scope: mark.scope,
        ttl_ms: mark.ttl_ms,
        identity,
        granularity,
        limit: CompiledLimit {
            id: tables.limit(info.clone()),
            info,
            counter_name: format!("mark:{}", mark.name).into(),
            identity,
            granularity,
            // Never refused: one unit per call that sets it, far below any bucket's capacity.
            max_units: MARK_CEILING,
            cost: None,
            cost_text: None,
            cost_pointer: tables.text(mark.pointer.as_str()),
            once: false,
            write_through: true,
        },
    });
    marks.insert(mark.name.as_str().into(), Arc::clone(&compiled));
    compiled
}

/// Where the proxy notes whose a thing a server handed out is ([`crate::owners`]): the
/// counter it is noted in under its caller, and the one that caps how many one caller has
/// noted (each note holds a slot of the table). The same in every policy, so a reload forgets
/// nothing.
pub struct Owned {
    pub owner: CompiledLimit,
    /// A caller with a grant: its share of the table ([`crate::owners::per_caller`]).
    pub per_caller: CompiledLimit,
    /// Every caller without a grant, one caller to the proxy: the whole cap (a share would
    /// leave a deployment without credentials a sixty-fourth of its sessions). Its notes are
    /// bounded as every key a client chooses is, by the table's client-chosen share.
    pub anonymous: CompiledLimit,
}

impl Owned {
    fn compile(tables: &mut Tables, names: [&str; 2], window_ms: u64, max: u32) -> Owned {
        let share = crate::owners::per_caller(max, tables.slots);
        let [owner, per_caller, anonymous] = [
            (names[0], f64::INFINITY),
            (names[1], f64::from(share)),
            (names[1], f64::from(max)),
        ]
        .map(|(counter, max)| internal_counter(tables, counter, max, window_ms));
        Owned {
            owner,
            per_caller,
            anonymous,
        }
    }
}

/// An internal counter named `counter`, of `max` units (infinite: never refused) in
/// `window_ms`.
fn internal_counter(tables: &mut Tables, counter: &str, max: f64, window_ms: u64) -> CompiledLimit {
    let identity = CounterKey::identity(&[counter.as_bytes(), &window_ms.to_le_bytes()]);
    let counted = Counted {
        counter,
        identity,
        scope: Scope::Grant,
        max,
        window_ms,
        once: false,
    };
    internal_limit(tables, "", counted)
}

/// A counter the engine keeps for itself, not one a rule names: a confirmation's nonces,
/// a task's creator, a session's holder.
struct Counted<'a> {
    counter: &'a str,
    identity: u64,
    scope: Scope,
    /// Infinite: never refused (one unit per use, far below a bucket's capacity).
    max: f64,
    window_ms: u64,
    once: bool,
}

fn internal_limit(tables: &mut Tables, pointer: &str, c: Counted<'_>) -> CompiledLimit {
    let info = LimitInfo {
        counter: tables.text(c.counter),
        rule: tables.text(pointer),
        scope: c.scope,
        max: c.max,
        window_ms: c.window_ms,
    };
    CompiledLimit {
        id: tables.limit(info.clone()),
        info,
        counter_name: c.counter.into(),
        identity: c.identity,
        granularity: Granularity::for_window_ms(c.window_ms),
        max_units: to_units(c.max).unwrap_or(MARK_CEILING),
        cost: None,
        cost_text: None,
        cost_pointer: tables.text(pointer),
        once: c.once,
        write_through: true,
    }
}

/// What a mark's counter may hold: a mark counts one unit per call that sets it.
pub const MARK_CEILING: u64 = 1 << 39;

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
        once: false,
        write_through: false,
    }
}
