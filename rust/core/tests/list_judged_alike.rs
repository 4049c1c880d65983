//! Lists judged alike for every caller ([`ListFilter::judging_alike`]) under real compiled
//! policies: an answer found among those read before, its entries shown as last judged under
//! the same policy for the same server, must be filtered exactly as judging it anew would,
//! whatever reads the caller (rules on `subject.*`, nested in `any` and `not`), the server
//! (sections, `server` conditions) or the tool; across kinds of list, servers (none, `""`,
//! sections), callers and reloads; from threads sharing one table under different keys; and
//! the table stays within its bounds whatever the server's name. (From an outside review of
//! the change that made lists judged alike; each property fails with the store ignoring a
//! judgement that read the caller, or the lookup ignoring what a list was judged under.)

mod policies;

use policies::{policy, TOOLS};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::listing::{ListFilter, ListReport};
use toolgate_core::engine::visibility::Visibility;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::known_answers::{KnownAnswers, MAX_ANSWERS, MAX_BYTES};
use toolgate_core::policy::compile::CompiledPolicy;
use toolgate_core::{Code, Engine, Policy, Subject};

const SERVERS: [Option<&str>; 4] = [None, Some(""), Some("s1"), Some("s2")];
const AGENTS: [Option<&str>; 3] = [None, Some("bot"), Some("a")];

/// A list answer to request `id` naming `names`, padded so the table's hint is far from the id.
fn answer(id: &str, listed: Listed, names: &[&str]) -> Vec<u8> {
    let entries: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "description": "d"}))
        .collect();
    let (member, pad) = (listed.member(), "p".repeat(700));
    let entries = Value::Array(entries);
    format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","result":{{"{member}":{entries},"nextCursor":"{pad}"}}}}"#
    )
    .into_bytes()
}

/// Who asks: the server the list came from, the agent and the grant.
type Asker<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Filter `body` as the sidecar does (judged alike where the policy judges by name alone),
/// with `known` if given, else anew.
fn filter(
    p: &Arc<CompiledPolicy>,
    (server, agent, grant): Asker<'_>,
    listed: Listed,
    known: Option<&Arc<KnownAnswers>>,
    body: &[u8],
    id: &str,
) -> (Vec<u8>, ListReport) {
    let policy = Arc::clone(p);
    let (s, a, g) = (
        server.map(str::to_owned),
        agent.map(str::to_owned),
        grant.map(str::to_owned),
    );
    let seen = move |l: Listed, name: &str, _: &ListedTool<'_>| {
        let subject = Subject {
            agent: a.as_deref(),
            grant: g.as_deref(),
            ..Default::default()
        };
        policy.visibility(l.kind(), name, s.as_deref(), subject, None)
    };
    let mut f = ListFilter::new(Some(json!(id)), Some(listed), seen);
    if let Some(k) = known {
        f = f.remembering(Arc::clone(k));
        if p.judges_lists_alike(listed, server) {
            f = f.judging_alike(p.generation, server);
        }
    }
    let out = f.feed(body, true);
    (out, f.report)
}

#[test]
fn lists_judged_alike_under_real_policies_are_filtered_as_judged_anew() {
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let lists: [&[&str]; 3] = [&TOOLS, &["write", "x", "de"], &["run", "read"]];
    let step = (
        0usize..2,
        0usize..4,
        0usize..3,
        0usize..3,
        any::<bool>(),
        0usize..2,
    );
    let history = (
        prop::collection::vec(policy(), 1..3),
        prop::collection::vec(step, 1..40),
    );
    let judged = AtomicUsize::new(0);
    runner
        .run(&history, |(policies, steps)| {
            // Each policy compiled once: a reload is another compiled policy.
            let mut compiled = Vec::new();
            for p in &policies {
                let p = Policy::from_json_str(&p.to_string()).expect("a valid policy");
                compiled.push(Engine::with_defaults(p).unwrap().policy());
            }
            let known = Arc::new(KnownAnswers::default());
            for (i, (pi, si, ai, li, g2, kind)) in steps.iter().enumerate() {
                let p = &compiled[pi % compiled.len()];
                let listed = [Listed::Tools, Listed::Prompts][*kind];
                let id = format!("toolgate-{i:04}");
                let body = answer(&id, listed, lists[*li]);
                let asker = (
                    SERVERS[*si],
                    AGENTS[*ai],
                    Some(if *g2 { "g2" } else { "g1" }),
                );
                let remembered = filter(p, asker, listed, Some(&known), &body, &id);
                let anew = filter(p, asker, listed, None, &body, &id);
                prop_assert_eq!(remembered, anew, "{}", String::from_utf8_lossy(&body));
            }
            judged.fetch_add(known.judged_before() as usize, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let judged = judged.into_inner();
    assert!(
        judged > 50,
        "only {judged} lists were taken as judged before"
    );
}

#[test]
fn threads_sharing_one_table_under_different_keys_filter_as_anew() {
    let known = Arc::new(KnownAnswers::default());
    let lists: [&[&str]; 3] = [
        &["read", "write", "delete_all"],
        &["write", "x", "de"],
        &["run", "read", "zz"],
    ];
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let known = Arc::clone(&known);
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                for i in 0..1500u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let generation = 1 + (x % 3);
                    let server = ["s", "s/", "", "s/1"][(x >> 8) as usize % 4];
                    let server = (!(x >> 12).is_multiple_of(5)).then_some(server);
                    let id = format!("toolgate-{:04}", (i * 7 + t) % 10_000);
                    let body = answer(&id, Listed::Tools, lists[(x >> 16) as usize % 3]);
                    // What each (policy, server) hides: different for each key.
                    let seen = move |_: Listed, name: &str, _: &ListedTool<'_>| {
                        let n = name.len() as u64
                            + generation * 3
                            + server.map_or(7, |s| s.len() as u64 * 5);
                        Visibility {
                            removed: n.is_multiple_of(3).then_some(Code::Hidden),
                            per_subject: false,
                        }
                    };
                    let run = |alike: bool| {
                        let mut f = ListFilter::new(Some(json!(id)), Some(Listed::Tools), seen);
                        if alike {
                            f = f
                                .remembering(Arc::clone(&known))
                                .judging_alike(generation, server);
                        }
                        (f.feed(&body, true), f.report)
                    };
                    assert_eq!(run(true), run(false));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(known.judged_before() > 100, "{}", known.judged_before());
}

#[test]
fn a_server_of_any_name_keeps_the_table_within_its_bounds() {
    let known = Arc::new(KnownAnswers::default());
    let shown = |_: Listed, _: &str, _: &ListedTool<'_>| Visibility {
        removed: None,
        per_subject: false,
    };
    for i in 0..200usize {
        let id = format!("toolgate-{i:04}");
        let names: Vec<String> = (0..50).map(|k| format!("t{i}_{k}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let body = answer(&id, Listed::Tools, &names);
        for server in ["a".repeat(1014), "b".repeat(1015), "c".repeat(100_000)] {
            let mut f = ListFilter::new(Some(json!(id)), Some(Listed::Tools), shown)
                .remembering(Arc::clone(&known))
                .judging_alike(1, Some(&server));
            f.feed(&body, true);
        }
        let (n, bytes) = known.held();
        assert!(
            n <= MAX_ANSWERS && bytes <= MAX_BYTES,
            "{n} answers, {bytes} bytes"
        );
    }
}
