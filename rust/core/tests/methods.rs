//! Every MCP method under the policy: resources by URI, prompts by name, any other method by
//! its name, and only the protocol's plumbing passing undecided; and the lists of
//! resources, templates and prompts filtered as tools' are.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::gate::{check, Follow, Gate, HttpCall};
use toolgate_core::engine::listing::{ListFilter, INTERNAL_ERROR};
use toolgate_core::engine::visibility::Visibility;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::request::PASSING;
use toolgate_core::mcp::sse::EventSplitter;
use toolgate_core::observing::stats::Api;
use toolgate_core::{Code, Engine, Kind, ManualClock, Policy, Subject};

/// A policy written as PolicyLayer's format writes one: `default: deny`, tools only.
const TOOLS_ONLY: &str = r#"{"version": "1", "default": "deny",
  "tools": {"create-ami": {}}}"#;

const POLICY: &str = r#"
version: "1"
default: deny
hide:
  tools: ["delete_*"]
  resources: ["file:///etc/shadow"]
  prompts: ["internal_*"]
tools:
  crm_read:
    marks: [{name: private_data, scope: grant, ttl: 1h}]
resources:
  "file:///etc/*":
    action: deny
    reason: "System files are not for agents."
  "file:///public/*":
    limits: [{counter: reads, window: minute, max: 2, scope: grant}]
  "crm://contacts/*":
    marks: [{name: private_data, scope: grant, ttl: 1h}]
  "mail://outbox":
    deny_if: [{path: marks.private_data, op: exists}]
    reason: "Mail may not leave a caller that has read private data."
prompts:
  review:
    require: [{path: args.lang, op: eq, value: en}]
    reason: "Reviews are in English."
  "*": {}
methods:
  x-vendor/exec: {}
"#;

fn engine(policy: &str) -> Engine {
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let policy = if policy.trim_start().starts_with('{') {
        Policy::from_json_str(policy)
    } else {
        Policy::from_yaml_str(policy)
    }
    .expect("valid policy");
    Engine::new(policy, Arc::new(CounterTable::new(1024, 1024)), clock).unwrap()
}

fn post<'a>(body: &'a str, grant: &'a str) -> HttpCall<'a> {
    HttpCall {
        http_method: "POST",
        body: body.as_bytes(),
        truncated: false,
        server: None,
        subject: Subject {
            grant: Some(grant),
            ..Default::default()
        },
        mcp_method: None,
        mcp_name: None,
        resumes: false,
        mcp_session: None,
        api: Api::ExtAuthz,
    }
}

fn request(id: Value, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// What the gate did: `Ok(code)` forwarded (with the decision's code, if one was made), or
/// `Err((JSON-RPC error code, code of the decision))` answered in the server's place.
fn outcome(e: &Engine, body: &str) -> Result<Option<Code>, (i64, Option<Code>, Value)> {
    match check(e, &post(body, "alice")) {
        Gate::Forward { decision, .. } => Ok(decision.map(|d| d.code)),
        Gate::Answer { reply, decision } => {
            let message: Value = serde_json::from_slice(&reply.body).unwrap();
            let code = message["error"]["code"].as_i64().unwrap_or(0);
            Err((code, decision.map(|d| d.code), message))
        }
    }
}

#[test]
fn a_tools_only_policy_under_default_deny_refuses_every_other_method() {
    let e = engine(TOOLS_ONLY);
    for (method, params) in [
        ("resources/read", json!({"uri": "file:///etc/shadow"})),
        ("resources/subscribe", json!({"uri": "file:///etc/shadow"})),
        ("prompts/get", json!({"name": "any"})),
        (
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "any"},
                   "argument": {"name": "a", "value": "b"}}),
        ),
        ("tasks/get", json!({"taskId": "t-1"})),
        ("tasks/result", json!({"taskId": "t-1"})),
        ("logging/setLevel", json!({"level": "debug"})),
        ("x-vendor/exec", json!({"cmd": "rm -rf /"})),
        (
            "subscriptions/listen",
            json!({"notifications": {"resourceSubscriptions": ["file:///etc/shadow"]}}),
        ),
    ] {
        let body = request(json!(1), method, params);
        let (code, decided, _) = outcome(&e, &body).expect_err(method);
        assert_eq!(code, -32001, "{method}");
        assert_eq!(decided, Some(Code::DefaultDeny), "{method}");
    }
    // A method sent as a notification is decided too; notifications of the protocol's pass.
    let vendor = json!({"jsonrpc": "2.0", "method": "x-vendor/exec"}).to_string();
    assert!(outcome(&e, &vendor).is_err());
    let tool = request(json!(2), "tools/call", json!({"name": "create-ami"}));
    assert_eq!(outcome(&e, &tool), Ok(Some(Code::Allowed)));
}

#[test]
fn the_protocol_s_plumbing_passes_undecided_and_lists_are_followed() {
    let e = engine(TOOLS_ONLY);
    for method in PASSING {
        let body = request(json!(1), method, json!({}));
        match check(&e, &post(&body, "alice")) {
            Gate::Forward {
                decision, follow, ..
            } => {
                assert!(decision.is_none(), "{method}");
                let listed = Listed::of_method(method);
                let expected = match listed {
                    Some(listed) => Follow::List {
                        id: Some(json!(1)),
                        listed: Some(listed),
                    },
                    None => Follow::Nothing,
                };
                assert_eq!(follow, expected, "{method}");
            }
            Gate::Answer { .. } => panic!("{method} was answered"),
        }
    }
    for notification in [
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/x-vendor",
    ] {
        let body = json!({"jsonrpc": "2.0", "method": notification}).to_string();
        assert_eq!(outcome(&e, &body), Ok(None), "{notification}");
    }
    // A listen that asks no resource's updates is plumbing too.
    let listen = request(
        json!(3),
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    );
    assert_eq!(outcome(&e, &listen), Ok(None));
}

#[test]
fn resources_prompts_and_methods_are_decided_by_their_rules() {
    let e = engine(POLICY);
    let read = |uri: &str| request(json!(1), "resources/read", json!({"uri": uri}));
    // A rule's denial: its reason, as a JSON-RPC error with the decision's details.
    let (code, decided, message) = outcome(&e, &read("file:///etc/hosts")).unwrap_err();
    assert_eq!((code, decided), (-32001, Some(Code::RuleDeny)));
    assert_eq!(
        message["error"]["message"],
        "System files are not for agents."
    );
    assert_eq!(
        message["error"]["data"]["toolgate/decision"]["rule"],
        "/resources/file:~1~1~1etc~1*"
    );
    // Hidden: answered as a resource that does not exist, before any rule.
    let (code, decided, message) = outcome(&e, &read("file:///etc/shadow")).unwrap_err();
    assert_eq!((code, decided), (-32002, Some(Code::Hidden)));
    assert_eq!(
        message["error"]["message"],
        "Resource not found: file:///etc/shadow"
    );
    // Limits count reads like calls.
    for _ in 0..2 {
        assert_eq!(
            outcome(&e, &read("file:///public/a")),
            Ok(Some(Code::Allowed))
        );
    }
    let (_, decided, _) = outcome(&e, &read("file:///public/b")).unwrap_err();
    assert_eq!(decided, Some(Code::RateLimited));
    // No rule, default deny.
    let (_, decided, _) = outcome(&e, &read("s3://bucket/x")).unwrap_err();
    assert_eq!(decided, Some(Code::DefaultDeny));
    // Subscribing is reading.
    let sub = request(
        json!(2),
        "resources/subscribe",
        json!({"uri": "file:///etc/hosts"}),
    );
    assert_eq!(outcome(&e, &sub).unwrap_err().1, Some(Code::RuleDeny));

    // Prompts: conditions on their arguments; hidden ones unknown.
    let prompt = |name: &str, args: Value| {
        request(
            json!(3),
            "prompts/get",
            json!({"name": name, "arguments": args}),
        )
    };
    assert_eq!(
        outcome(&e, &prompt("review", json!({"lang": "en"}))),
        Ok(Some(Code::Allowed))
    );
    let (_, decided, message) = outcome(&e, &prompt("review", json!({"lang": "fr"}))).unwrap_err();
    assert_eq!(decided, Some(Code::ConditionFailed));
    assert_eq!(message["error"]["message"], "Reviews are in English.");
    let (code, decided, _) = outcome(&e, &prompt("internal_x", json!({}))).unwrap_err();
    assert_eq!((code, decided), (-32602, Some(Code::Hidden)));

    // Completion is use of what it completes for.
    let complete = |reference: Value| {
        request(
            json!(4),
            "completion/complete",
            json!({"ref": reference, "argument": {"name": "a", "value": "b"}}),
        )
    };
    let of_prompt = complete(json!({"type": "ref/prompt", "name": "internal_y"}));
    assert_eq!(outcome(&e, &of_prompt).unwrap_err().1, Some(Code::Hidden));
    let of_resource = complete(json!({"type": "ref/resource", "uri": "file:///etc/{name}"}));
    assert_eq!(
        outcome(&e, &of_resource).unwrap_err().1,
        Some(Code::RuleDeny)
    );
    // It counts as a use: the reads' limit, spent above, holds it too.
    let of_public = complete(json!({"type": "ref/resource", "uri": "file:///public/{name}"}));
    assert_eq!(
        outcome(&e, &of_public).unwrap_err().1,
        Some(Code::RateLimited)
    );
    assert_eq!(
        outcome(&engine(POLICY), &of_public),
        Ok(Some(Code::Allowed))
    );

    // A method the policy names by name; any other follows the default.
    let exec = request(json!(5), "x-vendor/exec", json!({}));
    assert_eq!(outcome(&e, &exec), Ok(Some(Code::Allowed)));
    let other = request(json!(6), "x-vendor/other", json!({}));
    let (code, decided, _) = outcome(&e, &other).unwrap_err();
    assert_eq!((code, decided), (-32001, Some(Code::DefaultDeny)));
}

#[test]
fn a_mark_set_by_a_tool_is_read_by_a_resource_rule_and_the_reverse() {
    let e = engine(POLICY);
    let mail = request(json!(1), "resources/read", json!({"uri": "mail://outbox"}));
    assert_eq!(outcome(&e, &mail), Ok(Some(Code::Allowed)));
    let read = request(
        json!(2),
        "resources/read",
        json!({"uri": "crm://contacts/c-1"}),
    );
    assert_eq!(outcome(&e, &read), Ok(Some(Code::Allowed)));
    let (_, decided, message) = outcome(&e, &mail).unwrap_err();
    assert_eq!(decided, Some(Code::ConditionFailed));
    assert_eq!(
        message["error"]["message"],
        "Mail may not leave a caller that has read private data."
    );
}

#[test]
fn a_listen_is_allowed_only_when_every_resource_it_watches_may_be_read() {
    let e = engine(POLICY);
    let listen = |uris: Value| {
        request(
            json!(7),
            "subscriptions/listen",
            json!({"notifications": {"resourceSubscriptions": uris}}),
        )
    };
    assert_eq!(
        outcome(&e, &listen(json!(["file:///public/a"]))),
        Ok(Some(Code::Allowed))
    );
    // One of two denied: denied, and the first read's limit given back.
    let both = listen(json!(["file:///public/a", "file:///etc/hosts"]));
    assert_eq!(outcome(&e, &both).unwrap_err().1, Some(Code::RuleDeny));
    let read = request(
        json!(1),
        "resources/read",
        json!({"uri": "file:///public/c"}),
    );
    assert_eq!(outcome(&e, &read), Ok(Some(Code::Allowed)), "one read left");
    assert!(outcome(&e, &read).is_err(), "and none after it");
    let hidden = listen(json!(["file:///etc/shadow"]));
    assert_eq!(outcome(&e, &hidden).unwrap_err().0, -32002);
}

#[test]
fn a_request_that_could_be_read_two_ways_is_refused() {
    let e = engine(POLICY);
    for body in [
        // Another spelling of a resource's URI.
        request(
            json!(1),
            "resources/read",
            json!({"uri": "file:///tmp/../etc/shadow"}),
        ),
        request(
            json!(1),
            "resources/read",
            json!({"uri": "FILE:///etc/shadow"}),
        ),
        request(
            json!(1),
            "resources/read",
            json!({"uri": "file:///%65tc/shadow"}),
        ),
        request(
            json!(1),
            "resources/read",
            json!({"uri": "file://localhost/etc/shadow"}),
        ),
        request(json!(1), "resources/read", json!({"uri": 5})),
        request(json!(1), "resources/read", json!({})),
        // Keys a lenient server reads as MCP's.
        request(
            json!(1),
            "resources/read",
            json!({"URI": "file:///etc/shadow", "uri": "file:///public/a"}),
        ),
        request(
            json!(1),
            "resources/read",
            json!({"Uri": "file:///etc/shadow"}),
        ),
        request(json!(1), "prompts/get", json!({"Name": "internal_x"})),
        request(
            json!(1),
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "Name": "internal_x", "name": "review"}}),
        ),
        // Methods a lenient server routes as MCP's.
        request(
            json!(1),
            "Resources/Read",
            json!({"uri": "file:///etc/shadow"}),
        ),
        request(json!(1), "prompts/GET", json!({"name": "internal_x"})),
        request(json!(1), "ſerver/discover", json!({})),
        json!({"jsonrpc": "2.0", "method": "Notifications/initialized"}).to_string(),
        request(
            json!(1),
            "subscriptions/listen",
            json!({"notifications": {"resourceSubscriptions": ["file:///a/./b"]}}),
        ),
    ] {
        let (code, decided, _) = outcome(&e, &body).expect_err(&body);
        assert!(
            code == -32600 || code == -32602,
            "{body}: refused as malformed, got {code}"
        );
        assert_eq!(decided, Some(Code::InvalidRequest), "{body}");
    }
}

/// Filter one list answer as the ext_proc filter does, with the engine's policy.
fn filtered(e: &Engine, listed: Listed, result: Value) -> Value {
    let policy = e.policy();
    let visible = |l: Listed, name: &str, _: &ListedTool<'_>| -> Visibility {
        policy.visibility(l.kind(), name, None, Subject::default(), None)
    };
    let mut f = ListFilter::new(Some(json!(1)), Some(listed), visible);
    let body = json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string();
    let out = f.feed(body.as_bytes(), true);
    let events = EventSplitter::default().feed(&out, true).unwrap();
    let data = events.into_iter().find_map(|e| e.data).unwrap();
    serde_json::from_slice(&data).unwrap()
}

#[test]
fn resource_template_and_prompt_lists_show_only_what_the_caller_may_get() {
    let e = engine(POLICY);
    let out = filtered(
        &e,
        Listed::Resources,
        json!({"resources": [
            {"uri": "file:///etc/hosts", "name": "hosts"},
            {"uri": "file:///etc/shadow", "name": "shadow"},
            {"uri": "file:///public/a", "name": "a"},
            {"uri": "s3://bucket/x", "name": "x"}],
         "nextCursor": "c2"}),
    );
    assert_eq!(
        out["result"],
        json!({"resources": [{"uri": "file:///public/a", "name": "a"}], "nextCursor": "c2"})
    );
    let out = filtered(
        &e,
        Listed::ResourceTemplates,
        json!({"resourceTemplates": [
            {"uriTemplate": "file:///public/{name}", "name": "p"},
            {"uriTemplate": "file:///etc/{name}", "name": "e"}]}),
    );
    assert_eq!(
        out["result"]["resourceTemplates"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        out["result"]["resourceTemplates"][0]["uriTemplate"],
        "file:///public/{name}"
    );
    let out = filtered(
        &e,
        Listed::Prompts,
        json!({"prompts": [{"name": "review"}, {"name": "internal_a"}, {"name": "other"}]}),
    );
    assert_eq!(
        out["result"]["prompts"],
        json!([{"name": "review"}, {"name": "other"}])
    );
    // The answer must list what its method lists, once, with names, each key as MCP spells it.
    for (listed, result) in [
        (Listed::Resources, json!({"tools": []})),
        (Listed::Resources, json!({"resources": [], "prompts": []})),
        (
            Listed::Resources,
            json!({"resources": [{"name": "no uri"}]}),
        ),
        (
            Listed::Resources,
            json!({"resources": [{"URI": "file:///etc/hosts", "uri": "file:///public/a"}]}),
        ),
        (
            Listed::ResourceTemplates,
            json!({"resourceTemplates": [{"uri": "file:///public/a"}]}),
        ),
        (
            Listed::Prompts,
            json!({"Prompts": [{"name": "internal_a"}]}),
        ),
        (
            Listed::Prompts,
            json!({"prompts": [{"name": "a", "description": "x"}, {"name": "a"}]}),
        ),
    ] {
        let out = filtered(&e, listed, result.clone());
        assert_eq!(out["error"]["code"], INTERNAL_ERROR, "{result}");
    }
}

#[test]
fn a_stream_filters_every_answer_that_lists_something() {
    let e = engine(POLICY);
    let policy = e.policy();
    let visible = |l: Listed, name: &str, _: &ListedTool<'_>| -> Visibility {
        policy.visibility(l.kind(), name, None, Subject::default(), None)
    };
    let mut f = ListFilter::new(None, None, visible);
    let mut stream = String::new();
    for (id, result) in [
        (
            1,
            json!({"tools": [{"name": "crm_read"}, {"name": "delete_x"}]}),
        ),
        (
            2,
            json!({"prompts": [{"name": "internal_a"}, {"name": "review"}]}),
        ),
        (
            3,
            json!({"resources": [{"uri": "file:///etc/hosts", "name": "h"}]}),
        ),
        (
            4,
            json!({"content": [{"type": "text", "text": "a call's result"}]}),
        ),
    ] {
        let message = json!({"jsonrpc": "2.0", "id": id, "result": result});
        stream.push_str(&format!("data: {message}\n\n"));
    }
    let out = f.feed(stream.as_bytes(), true);
    let events = EventSplitter::default().feed(&out, true).unwrap();
    let results: Vec<Value> = events
        .into_iter()
        .filter_map(|e| e.data)
        .map(|d| serde_json::from_slice::<Value>(&d).unwrap()["result"].clone())
        .collect();
    assert_eq!(results[0], json!({"tools": [{"name": "crm_read"}]}));
    assert_eq!(results[1], json!({"prompts": [{"name": "review"}]}));
    assert_eq!(results[2], json!({"resources": []}));
    assert_eq!(results[3]["content"][0]["text"], "a call's result");
}

#[test]
fn a_resource_key_in_another_spelling_and_rules_resources_cannot_take_are_errors() {
    let bad = r#"
version: "1"
resources:
  "FILE:///etc/shadow": {}
  "file:///a/../b": {}
  "file:///ok":
    action: require_approval
  "file:///ok2":
    release_on_failure: tool_error
  "file:///ok3":
    deny_if: [{path: tool.annotations.readOnlyHint, op: eq, value: false}]
prompts:
  p:
    action: require_confirmation
methods:
  m:
    action: require_approval
hide:
  resources: [""]
  things: []
"#;
    let errors = Policy::from_yaml_str(bad).unwrap_err();
    let pointers: Vec<&str> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
    for expected in [
        "/resources/FILE:~1~1~1etc~1shadow",
        "/resources/file:~1~1~1a~1..~1b",
        "/resources/file:~1~1~1ok/action",
        "/resources/file:~1~1~1ok2/release_on_failure",
        "/resources/file:~1~1~1ok3/deny_if",
        "/prompts/p/action",
        "/methods/m/action",
        "/hide/resources/0",
        "/hide/things",
    ] {
        assert!(pointers.contains(&expected), "{expected} in {pointers:?}");
    }
    // PolicyLayer's format: hide as a list of tools, still.
    let listed = Policy::from_json_str(r#"{"version": "1", "hide": ["a", "b*"]}"#).unwrap();
    assert_eq!(listed.root.hide.tools.len(), 2);
    assert!(listed.root.hide.of(Kind::Resource).is_empty());
}

proptest! {
    /// Whatever the method: it passes undecided only when it is the protocol's plumbing, a
    /// case variant of one of MCP's is refused, and any other is decided (here, under
    /// `default: deny` with no rule for it, denied).
    #[test]
    fn every_method_is_plumbing_refused_or_decided(
        method in prop_oneof![
            "[a-zA-Z/_ſK-]{1,24}",
            proptest::sample::select(vec![
                "ping", "initialize", "server/discover", "tools/list", "resources/list",
                "tasks/get", "tasks/cancel", "logging/setLevel", "completion/complete",
                "notifications/x", "elicitation/create", "sampling/createMessage",
            ]).prop_map(str::to_owned),
        ],
        with_id in any::<bool>(),
    ) {
        let e = engine(TOOLS_ONLY);
        let mut message = json!({"jsonrpc": "2.0", "method": method.clone(), "params": {}});
        if with_id {
            message["id"] = json!(9);
        }
        let body = message.to_string();
        let plumbing = PASSING.contains(&method.as_str())
            || (method.starts_with("notifications/") && !with_id);
        match outcome(&e, &body) {
            Ok(None) => prop_assert!(plumbing, "{} passed undecided", method),
            Ok(Some(code)) => prop_assert!(false, "{} allowed: {:?}", method, code),
            Err((_, code, _)) => {
                prop_assert!(!plumbing, "{} is plumbing but was answered", method);
                prop_assert!(
                    code == Some(Code::DefaultDeny) || code == Some(Code::InvalidRequest),
                    "{}: {:?}", method, code
                );
            }
        }
    }

    /// A resource read allowed for a URI is allowed for no other spelling of it: each
    /// spelling is refused, or decided as the text it is.
    #[test]
    fn another_spelling_never_reaches_a_rule_it_would_escape(
        path in proptest::collection::vec("[a-z]{1,5}", 1..4),
        trick in 0usize..6,
    ) {
        let e = engine(POLICY);
        let plain = format!("file:///etc/{}", path.join("/"));
        let spelled = match trick {
            0 => format!("file:///tmp/../etc/{}", path.join("/")),
            1 => format!("FILE:///etc/{}", path.join("/")),
            2 => format!("file:///%65tc/{}", path.join("/")),
            3 => format!("file://localhost/etc/{}", path.join("/")),
            4 => format!("file:///etc//{}", path.join("/")),
            _ => format!("file:///etc/./{}", path.join("/")),
        };
        for uri in [plain, spelled] {
            let body = request(json!(1), "resources/read", json!({"uri": uri}));
            prop_assert!(outcome(&e, &body).is_err(), "{} was let through", uri);
        }
    }
}

#[test]
fn a_read_its_rule_treats_callers_apart_is_followed_to_make_its_answer_private() {
    let e = engine(POLICY);
    let follow = |uri: &str| {
        let body = request(json!("r-1"), "resources/read", json!({"uri": uri}));
        match check(&e, &post(&body, "alice")) {
            Gate::Forward { follow, .. } => follow,
            Gate::Answer { .. } => panic!("{uri} was answered"),
        }
    };
    // A limit (or a mark, or a condition on the caller) treats callers apart.
    assert_eq!(
        follow("file:///public/a"),
        Follow::Private { id: json!("r-1") }
    );
    assert_eq!(
        follow("crm://contacts/c-1"),
        Follow::Private { id: json!("r-1") }
    );
    // A rule that lets everyone through alike: nothing to follow.
    let plain = engine(r#"{"version": "1", "resources": {"*": {}}}"#);
    let body = request(json!(1), "resources/read", json!({"uri": "file:///a"}));
    let Gate::Forward { follow, .. } = check(&plain, &post(&body, "alice")) else {
        panic!("forwarded")
    };
    assert_eq!(follow, Follow::Nothing);
}

#[test]
fn a_private_answer_is_marked_so_whatever_else_it_says() {
    let nobody = |_: Listed, _: &str, _: &ListedTool<'_>| -> Visibility { unreachable!() };
    let answer = |result: Value| {
        let mut f = ListFilter::new(Some(json!(1)), None, nobody).private();
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string();
        let out = f.feed(body.as_bytes(), true);
        let events = EventSplitter::default().feed(&out, true).unwrap();
        let data = events.into_iter().find_map(|e| e.data).unwrap();
        serde_json::from_slice::<Value>(&data).unwrap()
    };
    let contents = json!([{"uri": "crm://contacts/c-1", "text": "Ada"}]);
    for (scope, seen) in [
        (json!("public"), json!("private")),
        (json!("private"), json!("private")),
        (json!(7), json!("private")),
    ] {
        let out = answer(json!({"contents": contents, "cacheScope": scope, "ttlMs": 60000}));
        assert_eq!(out["result"]["cacheScope"], seen);
        assert_eq!(out["result"]["contents"], contents);
    }
    // No hint, no hint added; a hint a case-insensitive client reads otherwise is refused.
    let out = answer(json!({"contents": contents}));
    assert_eq!(out["result"].get("cacheScope"), None);
    let out = answer(json!({"contents": contents, "CacheScope": "public"}));
    assert_eq!(out["error"]["code"], INTERNAL_ERROR);
    // An answer to another request is refused, as a list's is.
    let mut f = ListFilter::new(Some(json!(1)), None, nobody).private();
    let other = json!({"jsonrpc": "2.0", "id": 2, "result": {"contents": []}}).to_string();
    let out = f.feed(other.as_bytes(), true);
    assert!(String::from_utf8_lossy(&out).contains("is not the request's"));
}
