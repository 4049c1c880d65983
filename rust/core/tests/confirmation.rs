//! `require_confirmation` through the ext_authz gate: the question, the answer, and every
//! way an answer can fail to be this call's yes. A confirmed call runs once, across threads;
//! limits count only calls that run; a client that cannot be asked gets the fallback.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use toolgate_core::asking::confirmation::TOKEN_PREFIX;
use toolgate_core::counter::CounterTable;
use toolgate_core::engine::gate::{check, Gate, HttpCall};
use toolgate_core::observing::stats::Api;
use toolgate_core::Kind;
use toolgate_core::{Code, Engine, ManualClock, Policy, Subject, Verdict};

const START_NS: u64 = 1_000_000_000_000_000;

fn engine(policy: Value) -> (Arc<Engine>, Arc<ManualClock>) {
    engine_keyed(policy, None)
}

/// An engine whose confirmation tokens are signed with a key derived from `secret` (else
/// its own).
fn engine_keyed(policy: Value, secret: Option<&[u8]>) -> (Arc<Engine>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START_NS));
    let policy = Policy::from_json_str(&policy.to_string()).expect("valid policy");
    let table = Arc::new(CounterTable::new(4096, 4096));
    let mut builder = Engine::builder(policy, table, clock.clone());
    if let Some(secret) = secret {
        builder = builder.confirmation_secret(secret);
    }
    (Arc::new(builder.build().unwrap()), clock)
}

fn policy() -> Value {
    json!({"version": "1", "default": "allow", "tools": {
        "delete_db": {"action": "require_confirmation",
                      "confirmation": {"message": "Delete {args.name}?", "timeout": "1m"}},
        "pay": {"action": "require_confirmation",
                "limits": [{"counter": "pay", "window": "1h", "max": 1, "scope": "grant"}]},
        "wipe": {"action": "require_confirmation", "mode": "shadow"},
    }})
}

const CAPABLE: &str = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}"#;

fn body(tool: &str, args: &Value, meta: &str, answers: Option<&Value>) -> Vec<u8> {
    let answers = answers.map_or(String::new(), |a| format!(",\"inputResponses\":{a}"));
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{args},"_meta":{meta}{answers}}}}}"#
    )
    .into_bytes()
}

/// What the gate answers, as (code, the JSON-RPC message back; `None` when forwarded).
fn send(engine: &Engine, grant: &str, body: &[u8]) -> (Code, Option<Value>) {
    let call = HttpCall {
        http_method: "POST",
        body,
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
    };
    match check(engine, &call) {
        Gate::Forward { decision, .. } => (decision.map_or(Code::Allowed, |d| d.code), None),
        Gate::Answer { reply, decision } => {
            let message: Value = serde_json::from_slice(&reply.body).unwrap();
            let code = decision.map_or(Code::InvalidRequest, |d| d.code);
            (code, Some(message))
        }
    }
}

/// Ask: the token the question came under, and the question.
fn ask(engine: &Engine, grant: &str, tool: &str, args: &Value) -> (String, String) {
    let (code, message) = send(engine, grant, &body(tool, args, CAPABLE, None));
    assert_eq!(code, Code::ConfirmationRequired);
    let result = &message.unwrap()["result"];
    assert_eq!(result["resultType"], "input_required");
    assert!(
        result.get("requestState").is_none(),
        "the server would refuse it"
    );
    let requests = result["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1);
    let (token, form) = requests.iter().next().unwrap();
    assert!(token.starts_with(TOKEN_PREFIX));
    assert_eq!(form["method"], "elicitation/create");
    let schema = &form["params"]["requestedSchema"];
    assert_eq!(schema["properties"]["approve"]["type"], "boolean");
    let question = form["params"]["message"].as_str().unwrap().to_owned();
    (token.clone(), question)
}

fn answer(token: &str, action: &str, approve: Option<bool>) -> Value {
    let mut a = json!({"action": action});
    if let Some(b) = approve {
        a["content"] = json!({"approve": b});
    }
    json!({ token: a })
}

fn yes(token: &str) -> Value {
    answer(token, "accept", Some(true))
}

#[test]
fn asked_then_confirmed_runs_once() {
    let (e, _) = engine(policy());
    let args = json!({"name": "staging"});
    let (token, question) = ask(&e, "g", "delete_db", &args);
    assert_eq!(question, "Delete staging?");
    let retry = body("delete_db", &args, CAPABLE, Some(&yes(&token)));
    assert_eq!(send(&e, "g", &retry), (Code::Allowed, None));
    let (code, message) = send(&e, "g", &retry);
    assert_eq!(code, Code::ConfirmationInvalid);
    let text = message.unwrap()["result"]["content"][0]["text"].clone();
    assert!(text.as_str().unwrap().contains("already used"), "{text}");
}

#[test]
fn no_is_no_and_leaves_the_answer_unused() {
    let (e, _) = engine(policy());
    let args = json!({"name": "prod"});
    let (token, _) = ask(&e, "g", "delete_db", &args);
    for (action, approve) in [
        ("decline", None),
        ("cancel", None),
        ("accept", Some(false)),
        ("accept", None),
    ] {
        let b = body(
            "delete_db",
            &args,
            CAPABLE,
            Some(&answer(&token, action, approve)),
        );
        assert_eq!(send(&e, "g", &b).0, Code::ConfirmationDeclined, "{action}");
    }
}

#[test]
fn an_answer_is_for_its_call_caller_and_time_only() {
    let (e, clock) = engine(policy());
    let args = json!({"name": "a"});
    let (token, _) = ask(&e, "g", "delete_db", &args);
    let other_args = body(
        "delete_db",
        &json!({"name": "b"}),
        CAPABLE,
        Some(&yes(&token)),
    );
    assert_eq!(send(&e, "g", &other_args).0, Code::ConfirmationInvalid);
    let same = body("delete_db", &args, CAPABLE, Some(&yes(&token)));
    assert_eq!(send(&e, "h", &same).0, Code::ConfirmationInvalid);
    // Another engine (its own key) does not accept it either.
    let (other, _) = engine(policy());
    assert_eq!(send(&other, "g", &same).0, Code::ConfirmationInvalid);
    clock.advance_ns(61_000_000_000);
    assert_eq!(send(&e, "g", &same).0, Code::ConfirmationExpired);
}

#[test]
fn replicas_with_one_key_accept_each_others_answers() {
    let (a, _) = engine_keyed(policy(), Some(b"deployment secret"));
    let (b, _) = engine_keyed(policy(), Some(b"deployment secret"));
    let (other, _) = engine_keyed(policy(), Some(b"another deployment's secret"));
    let args = json!({"name": "x"});
    let (token, _) = ask(&a, "g", "delete_db", &args);
    let retry = body("delete_db", &args, CAPABLE, Some(&yes(&token)));
    assert_eq!(send(&other, "g", &retry).0, Code::ConfirmationInvalid);
    assert_eq!(send(&b, "g", &retry).0, Code::Allowed);
}

#[test]
fn a_confirmed_answer_runs_once_across_threads() {
    let (e, _) = engine(policy());
    let args = json!({"name": "race"});
    let (token, _) = ask(&e, "g", "delete_db", &args);
    let retry = Arc::new(body("delete_db", &args, CAPABLE, Some(&yes(&token))));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (e, retry, barrier) = (e.clone(), retry.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                send(&e, "g", &retry).0
            })
        })
        .collect();
    let codes: Vec<Code> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == Code::Allowed).count(), 1);
    assert!(codes
        .iter()
        .all(|c| matches!(c, Code::Allowed | Code::ConfirmationInvalid)));
}

#[test]
fn limits_count_only_confirmed_calls_and_a_limited_answer_stays_unused() {
    let (e, clock) = engine(policy());
    let args = json!({"to": "x"});
    // Asking twice counts nothing.
    ask(&e, "g", "pay", &args);
    let (token, _) = ask(&e, "g", "pay", &args);
    let retry = body("pay", &args, CAPABLE, Some(&yes(&token)));
    assert_eq!(send(&e, "g", &retry).0, Code::Allowed);
    let (second, _) = ask(&e, "g", "pay", &args);
    let retry2 = body("pay", &args, CAPABLE, Some(&yes(&second)));
    assert_eq!(send(&e, "g", &retry2).0, Code::RateLimited);
    // Once the window has room, the same answer (not used) still runs, within its time.
    clock.advance_ns(2 * 3_600_000_000_000);
    let (fresh, _) = ask(&e, "g", "pay", &args);
    let retry3 = body("pay", &args, CAPABLE, Some(&yes(&fresh)));
    assert_eq!(send(&e, "g", &retry3).0, Code::Allowed);
}

#[test]
fn clients_that_cannot_be_asked_get_the_fallback() {
    let (e, _) = engine(json!({"version": "1", "default": "allow", "tools": {
        "deny_me": {"action": "require_confirmation"},
        "approve_me": {"action": "require_confirmation",
                       "confirmation": {"fallback": "approval"}},
    }}));
    let metas = [
        "{}",
        r#"{"io.modelcontextprotocol/protocolVersion":"2025-11-25","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-7-28x","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}"#,
    ];
    for meta in metas {
        let b = body("deny_me", &json!({}), meta, None);
        assert_eq!(send(&e, "g", &b).0, Code::ConfirmationUnavailable, "{meta}");
        // Approvals are not running in this engine: the approval is only asked for.
        let b = body("approve_me", &json!({}), meta, None);
        assert_eq!(send(&e, "g", &b).0, Code::ApprovalRequired, "{meta}");
    }
    // A later revision can be asked.
    let later = CAPABLE.replace("2026-07-28", "2027-01-01");
    let b = body("deny_me", &json!({}), &later, None);
    assert_eq!(send(&e, "g", &b).0, Code::ConfirmationRequired);
}

#[test]
fn a_shadow_confirmation_only_notes_it() {
    let (e, _) = engine(policy());
    let (code, forwarded) = send(&e, "g", &body("wipe", &json!({}), CAPABLE, None));
    assert_eq!((code, forwarded), (Code::ConfirmationRequired, None));
}

#[test]
fn a_dry_run_says_what_the_call_would_be_answered() {
    let (e, _) = engine(policy());
    let d = e.decide::<&Value>(&toolgate_core::Request {
        kind: Kind::Tool,
        name: "delete_db",
        server: None,
        subject: Subject::default(),
        args: None,
        dry_run: true,
        hits: None,
        confirm: None,
    });
    // This request cannot ask anyone: what the call would get.
    assert_eq!(
        (d.verdict, d.code),
        (Verdict::Deny, Code::ConfirmationUnavailable)
    );
}

#[test]
fn malformed_answers_are_refused_before_any_decision() {
    let (e, _) = engine(policy());
    let args = json!({"name": "m"});
    let (token, _) = ask(&e, "g", "delete_db", &args);
    let two = format!("{TOKEN_PREFIX}{}", "0".repeat(80));
    let cases = [
        json!([1]),
        json!({ token.clone(): "yes" }),
        json!({ token.clone(): {"action": "ok"} }),
        json!({ token.clone(): {"action": "accept", "content": {"approve": "true"}} }),
        json!({ token.clone(): {"action": "accept", "content": [true]} }),
        json!({ token.clone(): {"action": "accept", "content": {"approve": true}},
                two: {"action": "accept", "content": {"approve": true}} }),
    ];
    for answers in cases {
        let b = body("delete_db", &args, CAPABLE, Some(&answers));
        let (code, message) = send(&e, "g", &b);
        assert_eq!(code, Code::InvalidRequest, "{answers}");
        assert_eq!(message.unwrap()["error"]["code"], -32602, "{answers}");
    }
    // A case variant of the member is refused as any key that folds to MCP's.
    let folded = String::from_utf8(body("delete_db", &args, CAPABLE, None))
        .unwrap()
        .replace(
            "\"_meta\"",
            &format!("\"InputResponses\":{},\"_meta\"", yes(&token)),
        );
    assert_eq!(send(&e, "g", folded.as_bytes()).0, Code::InvalidRequest);
    // Answers to questions that are not toolgate's pass on, unread: the call is asked.
    let theirs = body(
        "delete_db",
        &args,
        CAPABLE,
        Some(&json!({"q": {"action": "accept"}})),
    );
    assert_eq!(send(&e, "g", &theirs).0, Code::ConfirmationRequired);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever arguments, caller or answer key a retry carries, only the very call that was
    /// asked, answered yes with its own token, runs.
    #[test]
    fn only_the_asked_call_runs(
        n in 0u32..4, m in 0u32..4, grant in "[gh]", retry_grant in "[gh]",
        flip in proptest::option::of(0usize..80),
    ) {
        let (e, _) = engine(policy());
        let asked = json!({"name": format!("db{n}")});
        let (token, _) = ask(&e, &grant, "delete_db", &asked);
        let mut sent = token.clone();
        if let Some(i) = flip {
            let at = TOKEN_PREFIX.len() + i;
            let c = if &sent[at..=at] == "0" { "1" } else { "0" };
            sent.replace_range(at..=at, c);
        }
        let args = json!({"name": format!("db{m}")});
        let b = body("delete_db", &args, CAPABLE, Some(&yes(&sent)));
        let (code, _) = send(&e, &retry_grant, &b);
        let same = n == m && grant == retry_grant && flip.is_none();
        prop_assert_eq!(code == Code::Allowed, same, "{:?}", code);
    }
}
