//! The proxy gate on MCP Streamable HTTP requests: what is forwarded, and the exact JSON-RPC
//! answer an agent gets in the server's place.

use serde_json::{json, Value};
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::engine::gate::{check, Follow, Gate, HttpCall};
use toolgate_core::kind::Listed;
use toolgate_core::observing::stats::Api;
use toolgate_core::{Code, Engine, ManualClock, Policy, Subject};

const POLICY: &str = r#"{"version": "1", "default": "deny", "hide": ["delete_*"],
  "tools": {
    "create-ami": {"limits": [{"counter": "ami", "window": "minute", "max": 2, "scope": "grant"}]},
    "list_images": {},
    "transfer_funds": {"require": [{"path": "args.amount", "op": "lt", "value": 1000}],
                       "reason": "Transfers must stay under 1000."},
    "terminate_instances": {"action": "require_approval"},
    "wipe": {"action": "deny", "reason": "Never."}
  }}"#;

fn engine() -> Engine {
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let policy = Policy::from_json_str(POLICY).expect("valid policy");
    Engine::new(policy, Arc::new(CounterTable::new(256, 256)), clock).unwrap()
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

fn tool_call(id: Value, name: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
    .to_string()
}

fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

/// The answer's status, headers and parsed body; panics if the call was forwarded.
fn answered(gate: Gate) -> (u16, Vec<(&'static str, String)>, Value) {
    match gate {
        Gate::Answer { reply, .. } => {
            let body = serde_json::from_slice(&reply.body).expect("JSON body");
            assert_eq!(
                header(&reply.headers, "content-type"),
                Some("application/json")
            );
            (reply.status, reply.headers, body)
        }
        Gate::Forward { decision, .. } => panic!("forwarded: {decision:?}"),
    }
}

#[test]
fn an_allowed_call_is_forwarded_with_headers_naming_the_decision() {
    let e = engine();
    let body = tool_call(json!(1), "create-ami", json!({"name": "x"}));
    match check(&e, &post(&body, "alice")) {
        Gate::Forward {
            headers, decision, ..
        } => {
            assert_eq!(decision.unwrap().code, Code::Allowed);
            assert_eq!(
                headers,
                vec![
                    ("x-toolgate-code", "ALLOWED".to_owned()),
                    ("x-toolgate-rule", "/tools/create-ami".to_owned())
                ]
            );
        }
        Gate::Answer { reply, .. } => panic!("answered {reply:?}"),
    }
}

#[test]
fn a_policy_denial_is_a_tool_result_with_is_error_and_the_request_id() {
    let e = engine();
    let body = tool_call(json!("req-7"), "wipe", json!({}));
    let (status, headers, reply) = answered(check(&e, &post(&body, "alice")));
    assert_eq!(status, 200);
    assert_eq!(reply["id"], json!("req-7"));
    assert_eq!(reply["result"]["isError"], json!(true));
    assert_eq!(reply["result"]["content"][0]["text"], json!("Never."));
    let meta = &reply["result"]["_meta"]["toolgate/decision"];
    assert_eq!(meta["code"], json!("RULE_DENY"));
    assert_eq!(meta["rule"], json!("/tools/wipe"));
    assert_eq!(meta["verdict"], json!("DENY"));
    assert!(meta["revision"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(header(&headers, "x-toolgate-code"), Some("RULE_DENY"));
    assert!(reply.get("error").is_none());
}

#[test]
fn a_failed_condition_and_an_unknown_tool_are_denied_with_their_codes() {
    let e = engine();
    let body = tool_call(json!(3), "transfer_funds", json!({"amount": 5000}));
    let (_, _, reply) = answered(check(&e, &post(&body, "a")));
    let meta = &reply["result"]["_meta"]["toolgate/decision"];
    assert_eq!(meta["code"], json!("CONDITION_FAILED"));
    assert_eq!(
        reply["result"]["content"][0]["text"],
        json!("Transfers must stay under 1000.")
    );
    let body = tool_call(json!(4), "not_in_policy", json!({}));
    let (_, _, reply) = answered(check(&e, &post(&body, "a")));
    assert_eq!(
        reply["result"]["_meta"]["toolgate/decision"]["code"],
        json!("DEFAULT_DENY")
    );
}

#[test]
fn approval_required_is_denied_for_now() {
    let e = engine();
    let body = tool_call(json!(5), "terminate_instances", json!({"ids": ["i-1"]}));
    let (status, _, reply) = answered(check(&e, &post(&body, "a")));
    assert_eq!(status, 200);
    let meta = &reply["result"]["_meta"]["toolgate/decision"];
    assert_eq!(meta["code"], json!("APPROVAL_REQUIRED"));
    assert_eq!(meta["verdict"], json!("REQUIRE_APPROVAL"));
}

#[test]
fn rate_limited_per_grant_with_retry_after_and_ratelimit_headers() {
    let e = engine();
    let body = tool_call(json!(1), "create-ami", json!({}));
    for _ in 0..2 {
        assert!(matches!(
            check(&e, &post(&body, "alice")),
            Gate::Forward { .. }
        ));
    }
    let (status, headers, reply) = answered(check(&e, &post(&body, "alice")));
    assert_eq!(status, 200);
    let meta = &reply["result"]["_meta"]["toolgate/decision"];
    assert_eq!(meta["code"], json!("RATE_LIMITED"));
    let retry_ms = meta["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(retry_ms > 0 && retry_ms <= 65_000, "{retry_ms}");
    let retry_after: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    assert_eq!(retry_after, retry_ms.div_ceil(1000));
    assert_eq!(header(&headers, "ratelimit-remaining"), Some("0"));
    assert_eq!(header(&headers, "ratelimit-limit"), Some("2"));
    // Another grant has its own counter.
    assert!(matches!(
        check(&e, &post(&body, "bob")),
        Gate::Forward { .. }
    ));
}

#[test]
fn a_hidden_tool_is_unknown() {
    let e = engine();
    let body = tool_call(json!(9), "delete_image", json!({"id": "x"}));
    let (status, _, reply) = answered(check(&e, &post(&body, "a")));
    assert_eq!(status, 200);
    assert_eq!(
        reply,
        json!({"jsonrpc": "2.0", "id": 9,
               "error": {"code": -32602, "message": "Unknown tool: delete_image"}})
    );
}

#[test]
fn other_methods_and_bodiless_requests_pass_undecided() {
    let e = engine();
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
    ] {
        assert!(
            matches!(
                check(&e, &post(body, "a")),
                Gate::Forward { decision: None, .. }
            ),
            "{body}"
        );
    }
    for method in ["GET", "DELETE"] {
        let call = HttpCall {
            http_method: method,
            ..post("", "a")
        };
        assert!(matches!(check(&e, &call), Gate::Forward { .. }));
    }
    // A POST always carries a message; an empty one is refused.
    let (status, _, reply) = answered(check(&e, &post("", "a")));
    assert_eq!((status, &reply["error"]["code"]), (400, &json!(-32700)));
}

#[test]
fn unreadable_bodies_are_refused_with_json_rpc_errors_and_counted() {
    let e = engine();
    let cases = [
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create-ami"}}]"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","METHOD":"tools/call","params":{"name":"wipe"}}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create-ami","name":"wipe"}}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"create-ami"}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create-ami","arguments":[]}}"#,
            -32602,
        ),
    ];
    for (body, code) in cases {
        let (status, headers, reply) = answered(check(&e, &post(body, "a")));
        assert_eq!(status, 400, "{body}");
        assert_eq!(reply["error"]["code"], json!(code), "{body}");
        assert_eq!(header(&headers, "x-toolgate-code"), Some("INVALID_REQUEST"));
    }
    let invalid = e
        .stats()
        .by_code()
        .iter()
        .find(|(c, _)| *c == Code::InvalidRequest)
        .map(|(_, n)| *n);
    assert_eq!(invalid, Some(cases.len() as u64));
}

#[test]
fn a_body_cut_by_the_proxy_is_refused_even_if_what_arrived_parses() {
    let e = engine();
    let body = tool_call(json!(1), "list_images", json!({}));
    let call = HttpCall {
        truncated: true,
        ..post(&body, "a")
    };
    let (status, _, reply) = answered(check(&e, &call));
    assert_eq!(status, 413);
    assert_eq!(reply["error"]["code"], json!(-32600));
}

#[test]
fn mcp_headers_must_agree_with_the_body() {
    let e = engine();
    let body = tool_call(json!(2), "wipe", json!({}));
    let lying = HttpCall {
        mcp_method: Some("tools/call"),
        mcp_name: Some("list_images"),
        ..post(&body, "a")
    };
    let (status, _, reply) = answered(check(&e, &lying));
    assert_eq!(status, 400);
    assert_eq!(reply["id"], json!(2));
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Mcp-Name"));
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let wrong_method = HttpCall {
        mcp_method: Some("tools/call"),
        ..post(list, "a")
    };
    assert_eq!(answered(check(&e, &wrong_method)).0, 400);
    // Headers that agree change nothing.
    let body = tool_call(json!(3), "list_images", json!({}));
    let honest = HttpCall {
        mcp_method: Some("tools/call"),
        mcp_name: Some("list_images"),
        ..post(&body, "a")
    };
    assert!(matches!(check(&e, &honest), Gate::Forward { .. }));
}

#[test]
fn a_limit_without_its_subject_is_denied_not_forwarded() {
    let e = engine();
    let body = tool_call(json!(1), "create-ami", json!({}));
    let anonymous = HttpCall {
        subject: Subject::default(),
        ..post(&body, "a")
    };
    let (_, _, reply) = answered(check(&e, &anonymous));
    assert_eq!(
        reply["result"]["_meta"]["toolgate/decision"]["code"],
        json!("INVALID_REQUEST")
    );
}

/// How a lenient server might read a body: case-insensitive keys, the last duplicate winning,
/// the first element of a batch. True if some such reading finds a `tools/call`.
fn lenient_reading_calls_a_tool(body: &str) -> bool {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let message = match &value {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        v => v.clone(),
    };
    message.as_object().is_some_and(|m| {
        m.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("method")
                && v.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("tools/call"))
        })
    })
}

proptest::proptest! {
    /// Whatever the body, a message that any lenient reading takes for a tools/call is either
    /// decided or refused: it is never forwarded undecided.
    #[test]
    fn no_tool_call_is_forwarded_undecided(
        batch in proptest::bool::ANY,
        keys in proptest::collection::vec(
            proptest::sample::select(vec!["method", "METHOD", "Method", "jsonrpc", "id", "params", "result"]), 1..6),
        methods in proptest::collection::vec(
            proptest::sample::select(vec!["tools/call", "Tools/Call", "tools/list", "ping"]), 6),
        params in proptest::sample::select(vec![
            r#"{"name":"wipe"}"#, r#"{"name":"wipe","Name":"list_images"}"#, r#""wipe""#,
            r#"{"name":"list_images","arguments":[1]}"#, "null"]),
    ) {
        let mut members = vec![r#""jsonrpc":"2.0""#.to_owned(), r#""id":1"#.to_owned()];
        for (i, key) in keys.iter().enumerate() {
            let value = match *key {
                "params" => params.to_owned(),
                "id" => "2".to_owned(),
                "jsonrpc" => r#""2.0""#.to_owned(),
                "result" => "{}".to_owned(),
                _ => format!("{:?}", methods[i]),
            };
            members.push(format!("{key:?}:{value}"));
        }
        let object = format!("{{{}}}", members.join(","));
        let body = if batch { format!("[{object}]") } else { object };
        let e = engine();
        if let Gate::Forward { decision: None, .. } = check(&e, &post(&body, "a")) {
            proptest::prop_assert!(!lenient_reading_calls_a_tool(&body), "{}", body);
        }
    }
}

/// What a proxy that sees the answer is told to follow.
fn follow(e: &Engine, body: &str) -> Follow {
    match check(e, &post(body, "g")) {
        Gate::Forward { follow, .. } => follow,
        Gate::Answer { decision, .. } => panic!("answered: {decision:?}"),
    }
}

#[test]
fn the_answers_to_follow_are_lists_and_calls_that_hold_a_reservation() {
    let e = engine();
    let list = json!({"jsonrpc": "2.0", "id": "l", "method": "tools/list"}).to_string();
    assert_eq!(
        follow(&e, &list),
        Follow::List {
            id: Some(json!("l")),
            listed: Some(Listed::Tools),
        }
    );
    // A notification gets no answer; should a server send one, it is filtered all the same.
    let notification = json!({"jsonrpc": "2.0", "method": "tools/list"}).to_string();
    assert_eq!(
        follow(&e, &notification),
        Follow::List {
            id: None,
            listed: None
        }
    );
    // A server's GET stream (resumed or not) may replay earlier answers: each is filtered.
    for resumes in [false, true] {
        let stream = HttpCall {
            http_method: "GET",
            body: b"",
            resumes,
            ..post("", "g")
        };
        let Gate::Forward { follow, .. } = check(&e, &stream) else {
            panic!("a GET stream is forwarded")
        };
        assert_eq!(
            follow,
            Follow::List {
                id: None,
                listed: None
            }
        );
    }
    // A replay asked for on any other request would come back unfiltered: refused.
    for method in ["POST", "DELETE", "PUT"] {
        let body = if method == "POST" { list.as_str() } else { "" };
        let resumed = HttpCall {
            http_method: method,
            body: body.as_bytes(),
            resumes: true,
            mcp_session: None,
            ..post("", "g")
        };
        let Gate::Answer { reply, .. } = check(&e, &resumed) else {
            panic!("{method} with Last-Event-ID is refused")
        };
        assert_eq!(reply.status, 400);
    }
    let counted = tool_call(json!(3), "create-ami", json!({}));
    let Follow::CallOutcome {
        id,
        reservation: Some(reservation),
        tool_errors,
        task: false,
    } = follow(&e, &counted)
    else {
        panic!("a counted call is followed")
    };
    assert_eq!(id, json!(3));
    assert!(
        !tool_errors,
        "by default a tool error keeps the call counted"
    );
    assert!(e.release(reservation), "the reservation is the call's");
    // Nothing counted, nothing to give back.
    let uncounted = tool_call(json!(4), "list_images", json!({}));
    assert_eq!(follow(&e, &uncounted), Follow::Nothing);
}

#[test]
fn a_rule_can_keep_failed_calls_counted() {
    let policy = r#"{"version": "1", "all_tools": {"release_on_failure": false},
      "tools": {
        "kept": {"limits": [{"counter": "k", "window": "minute", "max": 5, "scope": "grant"}]},
        "given": {"release_on_failure": true,
                  "limits": [{"counter": "g", "window": "minute", "max": 5, "scope": "grant"}]},
        "tool": {"release_on_failure": "tool_error",
                  "limits": [{"counter": "t", "window": "minute", "max": 5, "scope": "grant"}]}
      }}"#;
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let policy = Policy::from_json_str(policy).expect("valid policy");
    let e = Engine::new(policy, Arc::new(CounterTable::new(256, 256)), clock).unwrap();
    assert_eq!(
        follow(&e, &tool_call(json!(1), "kept", json!({}))),
        Follow::Nothing
    );
    assert!(matches!(
        follow(&e, &tool_call(json!(2), "given", json!({}))),
        Follow::CallOutcome {
            tool_errors: false,
            ..
        }
    ));
    assert!(matches!(
        follow(&e, &tool_call(json!(3), "tool", json!({}))),
        Follow::CallOutcome {
            tool_errors: true,
            ..
        }
    ));
}
