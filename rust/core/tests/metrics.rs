//! The engine's metric families as the exporter gets them: one family per name, each
//! sample's labels matching the family's, and the numbers the decisions made.

use std::collections::HashSet;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::observing::metrics::{Family, MetricKind};
use toolgate_core::{Code, Engine, Kind, ManualClock, Policy, Request, Subject};

fn engine() -> Engine {
    let policy = r#"{"version": "1", "default": "deny", "tools": {"t": {"limits": [
        {"counter": "t", "window": "minute", "max": 2, "scope": "grant"}]}}}"#;
    let policy = Policy::from_json_str(policy).unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    Engine::new(policy, Arc::new(CounterTable::new(64, 64)), clock).unwrap()
}

fn decide(e: &Engine, tool: &str, grant: &str) -> Code {
    e.decide::<&serde_json::Value>(&Request {
        kind: Kind::Tool,
        name: tool,
        server: None,
        subject: Subject {
            grant: Some(grant),
            ..Subject::default()
        },
        args: None,
        dry_run: false,
        hits: None,
        confirm: None,
    })
    .code
}

fn family<'f>(families: &'f [Family], name: &str) -> &'f Family {
    let mut found = families.iter().filter(|f| f.name == name);
    let f = found.next().unwrap_or_else(|| panic!("no {name}"));
    assert!(found.next().is_none(), "{name} twice");
    f
}

#[test]
fn every_family_is_named_once_and_its_samples_carry_its_labels() {
    let e = engine();
    decide(&e, "t", "g");
    let families = e.metrics();
    let mut names = HashSet::new();
    for f in &families {
        assert!(names.insert(f.name), "{} twice", f.name);
        assert!(f.name.starts_with("toolgate_"), "{}", f.name);
        // The exporter adds `_total` to a counter's name.
        assert!(!f.name.ends_with("_total"), "{}", f.name);
        assert!(!f.help.is_empty(), "{}", f.name);
        match f.kind {
            MetricKind::Histogram => assert!(f.buckets.is_some() && f.samples.is_empty()),
            _ => assert!(f.buckets.is_none(), "{}", f.name),
        }
        for (values, _) in &f.samples {
            assert_eq!(values.len(), f.labels.len(), "{}", f.name);
        }
    }
}

#[test]
fn the_families_count_the_decisions_made() {
    let e = engine();
    let codes: Vec<Code> = (0..3).map(|_| decide(&e, "t", "g")).collect();
    assert_eq!(codes, [Code::Allowed, Code::Allowed, Code::RateLimited]);
    assert_eq!(decide(&e, "other", "g"), Code::DefaultDeny);
    let families = e.metrics();
    let decisions = family(&families, "toolgate_decisions");
    assert_eq!(decisions.labels, ["api", "verdict", "code"]);
    let count = |code: &str| -> f64 {
        (decisions.samples.iter())
            .filter(|(values, _)| values[2] == code)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(
        (
            count("ALLOWED"),
            count("RATE_LIMITED"),
            count("DEFAULT_DENY")
        ),
        (2.0, 1.0, 1.0)
    );
    let slots = family(&families, "toolgate_counter_table_slots_used");
    assert_eq!(slots.samples, [(Vec::<String>::new(), 1.0)]);
    let capacity = family(&families, "toolgate_counter_table_slots_capacity");
    assert_eq!(capacity.samples[0].1, 64.0);
    let info = family(&families, "toolgate_policy_info");
    assert_eq!(info.samples, [(vec![e.policy().revision.to_string()], 1.0)]);
    // Per tool only when asked for.
    assert!(families.iter().all(|f| f.name != "toolgate_tool_decisions"));
    e.stats().set_per_tool(true);
    decide(&e, "t", "h");
    let families = e.metrics();
    let per_tool = family(&families, "toolgate_tool_decisions");
    assert_eq!(per_tool.samples, [(vec!["t".into(), "ALLOW".into()], 1.0)]);
}

/// Per tool, a row is a tool a rule names: under `default: allow`, names a client makes up
/// count as `_other` and cannot crowd out the tools the policy knows.
#[test]
fn made_up_tool_names_do_not_crowd_out_the_named_ones() {
    let policy = r#"{"version": "1", "default": "allow", "tools": {"search": {}}}"#;
    let policy = Policy::from_json_str(policy).unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let e = Engine::new(policy, Arc::new(CounterTable::new(64, 64)), clock).unwrap();
    e.stats().set_per_tool(true);
    for n in 0..1100 {
        assert_eq!(decide(&e, &format!("made_up_{n}"), "g"), Code::Allowed);
    }
    assert_eq!(decide(&e, "search", "g"), Code::Allowed);
    let families = e.metrics();
    let mut rows = family(&families, "toolgate_tool_decisions").samples.clone();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let other = vec!["_other".to_owned(), "ALLOW".to_owned()];
    let search = vec!["search".to_owned(), "ALLOW".to_owned()];
    assert_eq!(rows, [(other, 1100.0), (search, 1.0)]);
}
