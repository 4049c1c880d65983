//! Tasks (MCP's task extension): a task-augmented call is decided as the plain call, and a
//! task is reached (`tasks/get`, `tasks/result`, `tasks/cancel`, `tasks/list`) only by the
//! caller whose call created it.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::gate::{check, Follow, Gate, HttpCall};
use toolgate_core::engine::listing::ListFilter;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::outcome::{CallWatcher, Outcome};
use toolgate_core::mcp::request::RELATED_TASK;
use toolgate_core::mcp::sse::EventSplitter;
use toolgate_core::observing::stats::Api;
use toolgate_core::owners::per_caller;
use toolgate_core::owners::tasks::{Owner, KEEP_MS, MAX_PER_CALLER, METHODS};
use toolgate_core::{Code, Engine, ManualClock, Policy, Subject, Verdict};

const POLICY: &str = r#"
version: "1"
default: deny
tools:
  research:
    limits: [{counter: research, window: hour, max: 2, scope: grant}]
  lookup: {}
methods:
  "tasks/*": {}
servers:
  other:
    default: allow
"#;

fn engine() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let policy = Policy::from_yaml_str(POLICY).expect("valid policy");
    let table = Arc::new(CounterTable::new(4096, 1024));
    (Engine::new(policy, table, clock.clone()).unwrap(), clock)
}

fn subject(grant: &str) -> Subject<'_> {
    Subject {
        grant: Some(grant),
        ..Default::default()
    }
}

fn post<'a>(body: &'a str, grant: &'a str, server: Option<&'a str>) -> HttpCall<'a> {
    HttpCall {
        http_method: "POST",
        body: body.as_bytes(),
        truncated: false,
        server,
        subject: subject(grant),
        mcp_method: None,
        mcp_name: None,
        resumes: false,
        mcp_session: None,
        api: Api::ExtAuthz,
    }
}

fn request(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 5, "method": method, "params": params}).to_string()
}

/// Whether the request is sent on, or the JSON-RPC error and decision code it is answered
/// with.
fn outcome(
    e: &Engine,
    body: &str,
    grant: &str,
    server: Option<&str>,
) -> Result<Follow, (i64, Code)> {
    match check(e, &post(body, grant, server)) {
        Gate::Forward { follow, .. } => Ok(follow),
        Gate::Answer { reply, decision } => {
            let message: Value = serde_json::from_slice(&reply.body).unwrap();
            let code = message["error"]["code"].as_i64().unwrap_or(0);
            Err((code, decision.map_or(Code::InvalidRequest, |d| d.code)))
        }
    }
}

#[test]
fn a_task_reaches_only_the_caller_whose_call_created_it() {
    let (e, clock) = engine();
    assert!(e.note_task(None, subject("alice"), "t-1"));
    for method in METHODS {
        let body = request(method, json!({"taskId": "t-1"}));
        assert!(
            outcome(&e, &body, "alice", None).is_ok(),
            "{method}: its creator"
        );
        // Another caller is answered as for a task that does not exist.
        assert_eq!(
            outcome(&e, &body, "mallory", None),
            Err((-32602, Code::Hidden)),
            "{method}: another caller"
        );
        // The same id on another server is another task.
        assert_eq!(
            outcome(&e, &body, "alice", Some("other")),
            Err((-32602, Code::Hidden)),
            "{method}: another server"
        );
        let unknown = request(method, json!({"taskId": "t-2"}));
        assert_eq!(
            outcome(&e, &unknown, "alice", None),
            Err((-32602, Code::Hidden))
        );
    }
    // Kept for a day: still the caller's until then, gone a sliding window later.
    clock.advance_ns((KEEP_MS - 60_000) * 1_000_000);
    let body = request("tasks/get", json!({"taskId": "t-1"}));
    assert!(outcome(&e, &body, "alice", None).is_ok());
    clock.advance_ns((KEEP_MS + 120_000) * 1_000_000);
    let body = request("tasks/get", json!({"taskId": "t-1"}));
    assert_eq!(
        outcome(&e, &body, "alice", None),
        Err((-32602, Code::Hidden))
    );
}

#[test]
fn a_request_that_names_no_task_in_one_way_is_refused() {
    let (e, _) = engine();
    assert!(e.note_task(None, subject("alice"), "t-1"));
    for params in [
        json!({}),
        json!({"taskId": 1}),
        json!({"taskId": ""}),
        json!({"taskId": null}),
        json!({"taskid": "t-1"}),
        // Read as "t-1" by one decoder and as the other by a case-insensitive one.
        json!({"taskId": "t-1", "TaskId": "t-2"}),
    ] {
        for method in METHODS {
            let body = request(method, params.clone());
            let refused = outcome(&e, &body, "alice", None);
            assert!(
                matches!(refused, Err((-32602 | -32600, Code::InvalidRequest))),
                "{method} {params}: {refused:?}"
            );
        }
    }
    // Without its method's rule, a task's request follows the default first.
    let deny = Policy::from_yaml_str("version: \"1\"\ndefault: deny\n").unwrap();
    let strict = Engine::with_defaults(deny).unwrap();
    assert!(strict.note_task(None, subject("alice"), "t-1"));
    let body = request("tasks/get", json!({"taskId": "t-1"}));
    assert_eq!(
        outcome(&strict, &body, "alice", None),
        Err((-32001, Code::DefaultDeny))
    );
}

#[test]
fn a_task_augmented_call_is_decided_and_counted_as_the_plain_call() {
    let (e, _) = engine();
    let call = |task: bool, name: &str| {
        let mut params = json!({"name": name, "arguments": {"q": "x"}});
        if task {
            params["task"] = json!({"ttl": 60000});
        }
        request("tools/call", params)
    };
    // The two forms share the limit: two calls an hour, whichever form.
    let first = outcome(&e, &call(true, "research"), "alice", None).unwrap();
    let Follow::CallOutcome {
        reservation, task, ..
    } = first
    else {
        panic!("a task-augmented call is followed: {first:?}")
    };
    assert!(task && reservation.is_some());
    assert!(outcome(&e, &call(false, "research"), "alice", None).is_ok());
    for task in [true, false] {
        let third = outcome(&e, &call(task, "research"), "alice", None);
        assert!(matches!(third, Err((_, Code::RateLimited))), "{third:?}");
    }
    // A call with no limit is followed only to note its task.
    assert!(matches!(
        outcome(&e, &call(true, "lookup"), "alice", None),
        Ok(Follow::CallOutcome {
            reservation: None,
            task: true,
            ..
        })
    ));
    assert_eq!(
        outcome(&e, &call(false, "lookup"), "alice", None),
        Ok(Follow::Nothing)
    );
    // What the policy denies stays denied in either form.
    assert!(matches!(
        outcome(&e, &call(true, "delete_all"), "alice", None),
        Err((_, Code::DefaultDeny))
    ));
    let bad = request("tools/call", json!({"name": "lookup", "task": true}));
    assert!(matches!(
        outcome(&e, &bad, "alice", None),
        Err((-32602, Code::InvalidRequest))
    ));
}

#[test]
fn a_created_task_is_read_from_the_answer_to_the_call_only() {
    let created = json!({"jsonrpc": "2.0", "id": 5, "result": {"task": {
        "taskId": "t-9", "status": "working", "createdAt": "2026-11-26T00:00:00Z",
        "lastUpdatedAt": "2026-11-26T00:00:00Z", "ttl": 60000}}})
    .to_string();
    let watch = |content_type: &str, body: &str| {
        let mut w = CallWatcher::new(json!(5));
        w.head(200, Some(content_type));
        let (a, b) = body.split_at(body.len() / 2);
        w.feed(a.as_bytes(), false);
        w.feed(b.as_bytes(), true);
        (w.outcome(), w.created_task().map(str::to_owned))
    };
    assert_eq!(
        watch("application/json", &created),
        (Outcome::Ran, Some("t-9".into()))
    );
    let events = format!("event: message\ndata: {created}\n\n");
    assert_eq!(
        watch("text/event-stream", &events),
        (Outcome::Ran, Some("t-9".into()))
    );
    // Another request's answer, a server's request and an error create no task of this call.
    let other = created.replace("\"id\":5", "\"id\":6");
    let asking = json!({"jsonrpc": "2.0", "id": 5, "method": "elicitation/create",
        "params": {"task": {"taskId": "t-9"}}})
    .to_string();
    let error =
        json!({"jsonrpc": "2.0", "id": 5, "error": {"code": -32602, "message": "no"}}).to_string();
    let twice = created.replace(
        "\"taskId\":\"t-9\"",
        "\"taskId\":\"t-9\",\"taskId\":\"t-8\"",
    );
    for body in [other, asking, error, twice] {
        assert_eq!(watch("application/json", &body).1, None, "{body}");
    }
}

/// A `tasks/list` answer as the ext_proc filter passes it to `grant`.
fn listed(e: &Engine, grant: &str, tasks: &[&str]) -> Vec<String> {
    let visible = |l: Listed, name: &str, _: &ListedTool<'_>| {
        assert_eq!(l, Listed::Tasks);
        e.task_owner(None, subject(grant), name).visibility()
    };
    let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tasks), visible);
    let entries: Vec<Value> = tasks
        .iter()
        .map(|t| json!({"taskId": t, "status": "working", "ttl": null}))
        .collect();
    let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"tasks": entries}}).to_string();
    let out = f.feed(body.as_bytes(), true);
    let events = EventSplitter::default().feed(&out, true).unwrap();
    let data = events.into_iter().find_map(|e| e.data).unwrap();
    let message: Value = serde_json::from_slice(&data).unwrap();
    message["result"]["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {message}"))
        .iter()
        .map(|t| t["taskId"].as_str().unwrap().to_owned())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever tasks callers created, each caller's list and requests reach its own only.
    #[test]
    fn each_caller_reaches_its_own_tasks(
        created in proptest::collection::vec((0usize..3, "[a-z0-9-]{1,12}"), 0..12),
    ) {
        let (e, _) = engine();
        let grants = ["alice", "bob", "carol"];
        for (who, task) in &created {
            prop_assert!(e.note_task(None, subject(grants[*who]), task));
        }
        let all: Vec<&str> = created.iter().map(|(_, t)| t.as_str()).collect();
        for (i, grant) in grants.iter().enumerate() {
            let own: Vec<String> = all
                .iter()
                .filter(|t| created.iter().any(|(w, c)| *w == i && c == *t))
                .map(|t| t.to_string())
                .collect();
            prop_assert_eq!(listed(&e, grant, &all), own.clone());
            for task in &all {
                let owner = e.task_owner(None, subject(grant), task);
                prop_assert_eq!(owner == Owner::Caller, own.iter().any(|o| o == task));
                let body = request("tasks/result", json!({"taskId": task}));
                let decided = check(&e, &post(&body, grant, None));
                let allowed = matches!(decided, Gate::Forward { decision: Some(ref d), .. }
                    if d.verdict == Verdict::Allow);
                prop_assert_eq!(allowed, owner == Owner::Caller);
            }
        }
    }
}

#[test]
fn a_task_list_entry_in_two_spellings_is_refused() {
    let (e, _) = engine();
    assert!(e.note_task(None, subject("alice"), "t-1"));
    let visible = |_: Listed, name: &str, _: &ListedTool<'_>| {
        e.task_owner(None, subject("alice"), name).visibility()
    };
    let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tasks), visible);
    // A case-insensitive client could read the other caller's task as the entry's id.
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tasks":[{"taskId":"t-1","TASKID":"t-2"}]}}"#;
    let out = f.feed(body.as_bytes(), true);
    let events = EventSplitter::default().feed(&out, true).unwrap();
    let data = events.into_iter().find_map(|e| e.data).unwrap();
    let message: Value = serde_json::from_slice(&data).unwrap();
    assert!(message.get("error").is_some(), "{message}");
}

#[test]
fn a_request_related_to_a_task_reaches_it_only_for_its_creator() {
    let (e, _) = engine();
    assert!(e.note_task(None, subject("alice"), "t-1"));
    let related = |task: Value| json!({"_meta": {RELATED_TASK: {"taskId": task}}});
    // Whatever the method, plumbing or not: a server queues its answer on the task.
    for (method, mut params) in [
        ("ping", json!({})),
        ("tools/call", json!({"name": "lookup"})),
        ("tasks/list", json!({})),
        (
            "notifications/progress",
            json!({"progressToken": 1, "progress": 1}),
        ),
    ] {
        params["_meta"] = related(json!("t-1"))["_meta"].clone();
        let mut body = request(method, params);
        if method.starts_with("notifications/") {
            let mut message: Value = serde_json::from_str(&body).unwrap();
            message.as_object_mut().unwrap().remove("id");
            body = message.to_string();
        }
        assert!(
            outcome(&e, &body, "alice", None).is_ok(),
            "{method}: its creator"
        );
        assert_eq!(
            outcome(&e, &body, "mallory", None),
            Err((-32602, Code::Hidden)),
            "{method}: another caller"
        );
    }
    // Named in one spelling only.
    for meta in [
        json!({RELATED_TASK: "t-1"}),
        json!({RELATED_TASK: {"taskId": 1}}),
        json!({RELATED_TASK: {"taskid": "t-1"}}),
        json!({RELATED_TASK: {}}),
        json!({"io.modelcontextprotocol/Related-Task": {"taskId": "t-2"}}),
    ] {
        let body = request("ping", json!({"_meta": meta}));
        assert!(
            matches!(outcome(&e, &body, "alice", None), Err((-32602 | -32600, _))),
            "{meta}"
        );
    }
}

#[test]
fn one_caller_notes_a_bounded_number_of_tasks() {
    // A 4096-slot table: a caller's share of it (64 tasks) is below the cap.
    let (e, _) = engine();
    assert_eq!(per_caller(MAX_PER_CALLER, 4096), 64);
    for i in 0..per_caller(MAX_PER_CALLER, 4096) {
        assert!(e.note_task(None, subject("mallory"), &format!("m-{i}")));
    }
    assert!(!e.note_task(None, subject("mallory"), "m-over"));
    assert_eq!(
        e.task_owner(None, subject("mallory"), "m-over"),
        Owner::Other,
        "a task over the cap is no one's"
    );
    assert!(
        e.note_task(None, subject("alice"), "a-1"),
        "another caller's room"
    );
    assert_eq!(e.task_owner(None, subject("alice"), "a-1"), Owner::Caller);
}
