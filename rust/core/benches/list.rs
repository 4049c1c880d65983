//! What holding a `tools/list` answer to pins costs the list filter: the same 100-tool
//! answer filtered by a policy without pins, by the same policy with a pins file pinning
//! every tool as listed (the steady state: each tool is found listed as last time, and its
//! definition as pinned), and with one tool listed other than pinned (withheld,
//! `TOOL_CHANGED`; its drift was counted on the first list, so later lists only withhold).
//! `definitions_only` reads the 100 definitions alone (digests, titles, hints): what pinning
//! would cost if each tool were digested again. `list/1000_tools` filters ten times the tools
//! (the same catalogue, renamed), which should take ten times as long. Those cases read each
//! answer anew, as the first list of a server's tools is read; `known` and `known_pinned`
//! find it among the answers read before (`KnownAnswers`, the ext_proc service's), as the sidecar finds a
//! list fetched again unchanged under a new request id: it is not read again, and where
//! nothing is pinned (`known`) its tools are not judged again either (every caller's
//! judgement of them is the same); the answer is still written.
//!
//! Each iteration is what the ext_proc filter (rust/server/src/ext_proc.rs) does with one
//! answer: a [`ListFilter`] fed the whole JSON body, every tool judged by
//! [`Engine::list_tool`], the filtered answer written. The answer is bench/ext_proc_bench.py's
//! catalogue (run_command and four families of cloud tools, each with a description and an
//! `inputSchema` of two described properties), with MCP annotations added to each tool; the
//! policy is that bench's (`delete_*` hidden, `describe_*` and `list_*` allowed, the rest
//! denied by default).
//!
//! Run: `cargo bench -p toolgate-core --bench list` (see bench/README.md).

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::definitions::definition::{digest, Definition};
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::listing::{ListFilter, ListReport};
use toolgate_core::kind::Listed;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::{Engine, Policy, Subject};

/// Pins files are read by whoever loads the policy (the core reads no file): here, from disk.
fn read_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// (verb, how many): bench/ext_proc_bench.py's families, interleaved as there.
const FAMILIES: [(&str, usize); 4] = [
    ("describe", 35),
    ("list", 30),
    ("delete", 20),
    ("create", 14),
];
const NOUNS: [&str; 7] = [
    "instance", "volume", "snapshot", "bucket", "queue", "table", "image",
];
const LIST_ID: &str = "bench-1";

fn tool(name: &str, description: &str, properties: &[(&str, &str)], annotations: Value) -> Value {
    let props: Map<String, Value> = properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!({"type": "string", "description": v})))
        .collect();
    json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": props, "required": [properties[0].0]},
        "annotations": annotations,
    })
}

/// The upstream's 100 tools.
fn catalogue() -> Vec<Value> {
    let mut tools = vec![tool(
        "run_command",
        "Run a shell command on the build host.",
        &[("command", "The command.")],
        json!({"openWorldHint": false}),
    )];
    for i in 0..35 {
        for (verb, count) in FAMILIES {
            if i >= count {
                continue;
            }
            let noun = NOUNS[i % NOUNS.len()];
            // What such a server says of its tools (the hints it leaves out keep MCP's
            // defaults).
            let annotations = match verb {
                "describe" | "list" => json!({"readOnlyHint": true}),
                "delete" => json!({"destructiveHint": true}),
                _ => json!({"readOnlyHint": false, "destructiveHint": false}),
            };
            tools.push(tool(
                &format!("{verb}_{noun}_{i:02}"),
                &format!(
                    "{}{} one {noun} of the current project (set {i}).",
                    verb[..1].to_uppercase(),
                    &verb[1..]
                ),
                &[
                    ("id", &format!("The {noun}'s id.")),
                    ("region", "Where it lives."),
                ],
                annotations,
            ));
        }
    }
    assert_eq!(tools.len(), 100);
    tools
}

fn answer(tools: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": LIST_ID, "result": {"tools": tools}}))
        .expect("JSON values always serialize")
}

/// A pins file pinning `tools` (for calls that name no server).
fn pins_file(name: &str, tools: &[Value]) -> PathBuf {
    let entries: Map<String, Value> = tools
        .iter()
        .map(|t| {
            let object = t.as_object().expect("a tool is an object");
            let d = digest(object).expect("a tool digests");
            let name = t["name"].as_str().expect("a tool has a name");
            (
                name.to_owned(),
                json!({"digest": d.to_string(), "definition": t}),
            )
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("toolgate-bench-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(name);
    let file = json!({"version": "1", "tools": entries});
    std::fs::write(&path, file.to_string()).expect("the pins file is written");
    path
}

/// bench/ext_proc_bench.py's policy, with `pins` if given.
fn engine(pins: Option<&PathBuf>) -> Arc<Engine> {
    let mut doc = json!({"version": "1", "default": "deny",
        "hide": ["delete_*"],
        "tools": {
            "run_command": {
                "deny_if": [{"conditions": [{"path": "args.command", "op": "regex",
                                             "value": "(^|\\s)(rm|mkfs|dd)\\s"}],
                             "on_deny": "Destructive shell commands are not allowed."}],
                "limits": [{"counter": "run_command_rate", "window": "day",
                            "max": 1_000_000_000u64, "scope": "grant"}]},
            "describe_*": {}, "list_*": {}}});
    if let Some(file) = pins {
        doc["pins"] = json!({"file": file, "mode": "enforce", "unpinned": "hide"});
    }
    let policy = Policy::from_text(&doc.to_string(), "json", None, &read_file)
        .expect("bench policy is valid");
    Arc::new(Engine::with_defaults(policy).expect("bench policy compiles"))
}

/// Filter one answer as the ext_proc filter does: the filtered body and what it did.
/// `known`: the answers read before, among which this one may be found (the sidecar's way:
/// a list fetched again unchanged is not read again); `None`: it is read anew.
fn filter(
    engine: &Engine,
    body: &[u8],
    known: Option<&Arc<KnownAnswers>>,
) -> (Vec<u8>, ListReport) {
    let policy = engine.policy();
    let subject = Subject {
        grant: Some("g"),
        ..Default::default()
    };
    let visible = |_: Listed, name: &str, tool: &ListedTool<'_>| {
        engine.list_tool(&policy, None, subject, name, tool)
    };
    let mut f = ListFilter::new(Some(json!(LIST_ID)), Some(Listed::Tools), visible);
    if let Some(known) = known {
        f = f.remembering(Arc::clone(known));
    }
    // As the sidecar's.
    if policy.judges_lists_alike(Listed::Tools, None) {
        f = f.judging_alike(policy.generation, None);
    }
    let out = f.feed(body, true);
    (out, f.report)
}

fn list(c: &mut Criterion) {
    let tools = catalogue();
    let body = answer(&tools);
    let all = pins_file("all.json", &tools);
    // The pin of a tool the caller may see differs from what the server lists: a rug pull.
    let mut reviewed = tools.clone();
    reviewed[1]["description"] = "Describe one instance (reviewed wording).".into();
    let one_changed = pins_file("one-changed.json", &reviewed);

    let known = || Some(Arc::<KnownAnswers>::default());
    let cases = [
        ("no_pins", engine(None), 65 + 1, None),
        ("pinned", engine(Some(&all)), 65 + 1, None),
        ("one_changed", engine(Some(&one_changed)), 65, None),
        ("known", engine(None), 65 + 1, known()),
        ("known_pinned", engine(Some(&all)), 65 + 1, known()),
    ];
    let mut g = c.benchmark_group("list/100_tools");
    for (name, e, shown, known) in &cases {
        // The first list records every definition (and counts the drift); then each list
        // finds them as last listed (and, `known`, the answer as last read).
        for _ in 0..2 {
            let (out, report) = filter(e, &body, known.as_ref());
            assert_eq!(
                (report.lists, report.shown, report.removed),
                (1, *shown, 100 - shown),
                "{name}"
            );
            assert!(report.refused.is_none(), "{name}: {:?}", report.refused);
            assert!(out.len() < body.len());
        }
        g.bench_function(*name, |b| {
            b.iter(|| filter(e, black_box(&body), known.as_ref()))
        });
    }
    // Where pinning's time goes: reading the 100 definitions alone (canonical JSON and
    // SHA-256 of each tool, its title and hints), with no filter around it.
    let objects: Vec<Map<String, Value>> = tools
        .iter()
        .map(|t| t.as_object().expect("a tool is an object").clone())
        .collect();
    g.bench_function("definitions_only", |b| {
        b.iter(|| {
            for t in black_box(&objects) {
                black_box(Definition::read(t).expect("a tool reads"));
            }
        })
    });
    g.finish();

    // Ten times the tools: the filter's time must grow as the answer does.
    let many: Vec<Value> = (0..10)
        .flat_map(|k| {
            tools.iter().map(move |t| {
                let mut t = t.clone();
                t["name"] = format!("{}_r{k}", t["name"].as_str().expect("named")).into();
                t
            })
        })
        .collect();
    let many_body = answer(&many);
    let all_many = pins_file("all-1000.json", &many);
    let mut g = c.benchmark_group("list/1000_tools");
    for (name, e, known) in [
        ("no_pins", engine(None), None),
        ("pinned", engine(Some(&all_many)), None),
        ("known", engine(None), known()),
    ] {
        for _ in 0..2 {
            let (_, report) = filter(&e, &many_body, known.as_ref());
            // The renamed run_command has no rule of its own: denied by default, so hidden.
            assert_eq!((report.shown, report.removed), (650, 350), "{name}");
        }
        g.bench_function(name, |b| {
            b.iter(|| filter(&e, black_box(&many_body), known.as_ref()))
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(all.parent().expect("in a directory"));
    eprintln!(
        "list answers: {} tools, {} bytes; {} tools, {} bytes",
        tools.len(),
        body.len(),
        many.len(),
        many_body.len()
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = list
}
criterion_main!(benches);
