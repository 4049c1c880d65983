//! An outside review's attacks on `require_confirmation`, through the ext_authz gate
//! (`engine::gate::check`) as Envoy drives it. Each test asserts the SAFE behaviour: a failing
//! test is a hole.
//!
//! 1. a call run without a real yes (other spellings of the answer, of its key, of the
//!    member that carries it);
//! 2. one yes reused for another call (arguments, tool, server, caller, policy);
//! 3. replays (in a row, from many threads, after a limit's refusal, after a release, across
//!    clocks that disagree);
//! 4. the capability detection confused;
//! 5. floods, and what the question shows a person;
//! 6. shadow mode, dry runs, `all_tools` with a tool rule, approvals on and off.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use toolgate_core::asking::approval::{
    ApprovalDesk, ApprovalEvent, ApprovalId, ApprovalKey, ApprovalSettings, Ask, NoRoom, Standing,
};
use toolgate_core::asking::confirmation::{Answer, Confirming, TOKEN_PREFIX};
use toolgate_core::counter::CounterTable;
use toolgate_core::engine::gate::{check, Gate, HttpCall};
use toolgate_core::observing::stats::Api;
use toolgate_core::Kind;
use toolgate_core::{
    Clock, Code, Engine, EngineBuilder, ManualClock, Policy, Request, Subject, Verdict,
};

const START_NS: u64 = 1_800_000_000_000_000_000;

const CAPABLE: &str = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{"form":{}}}}"#;

fn engine_with(policy: &Value, clock: Arc<dyn Clock>) -> Arc<Engine> {
    Arc::new(builder(policy, clock).build().unwrap())
}

fn builder(policy: &Value, clock: Arc<dyn Clock>) -> EngineBuilder {
    let policy = Policy::from_json_str(&policy.to_string()).expect("valid policy");
    let table = Arc::new(CounterTable::new(4096, 4096));
    Engine::builder(policy, table, clock)
}

/// An engine on `policy` whose approvals `desk` runs.
fn approving(policy: &Value, desk: Arc<Desk>) -> Arc<Engine> {
    let clock = Arc::new(ManualClock::new(START_NS));
    Arc::new(builder(policy, clock).approvals(desk).build().unwrap())
}

fn engine(policy: &Value) -> (Arc<Engine>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START_NS));
    (engine_with(policy, clock.clone()), clock)
}

fn policy() -> Value {
    json!({"version": "1", "default": "allow", "tools": {
        "delete_db": {"action": "require_confirmation",
                      "confirmation": {"message": "Delete {args.name}?", "timeout": "1m"}},
        "other_db": {"action": "require_confirmation",
                     "confirmation": {"message": "Delete {args.name}?", "timeout": "1m"}},
        "pay": {"action": "require_confirmation",
                "release_on_failure": true,
                "limits": [{"counter": "pay", "window": "1h", "max": 1, "scope": "grant"}]},
    }})
}

/// Who sends a call, and to which server (the route's context extension).
#[derive(Clone, Copy)]
struct Who<'a> {
    grant: Option<&'a str>,
    session: Option<&'a str>,
    agent: Option<&'a str>,
    server: Option<&'a str>,
}

const G: Who<'static> = Who {
    grant: Some("g"),
    session: None,
    agent: None,
    server: None,
};

fn raw(tool: &str, args: &str, meta: &str, answers: Option<&str>) -> Vec<u8> {
    let answers = answers.map_or(String::new(), |a| format!(",\"inputResponses\":{a}"));
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{args},"_meta":{meta}{answers}}}}}"#
    )
    .into_bytes()
}

/// What the gate did: the decision's code, whether the call went on to the server, and the
/// message sent back instead.
fn send_as(engine: &Engine, who: Who<'_>, body: &[u8]) -> (Code, bool, Option<Value>) {
    let call = HttpCall {
        http_method: "POST",
        body,
        truncated: false,
        server: who.server,
        subject: Subject {
            grant: who.grant,
            session: who.session,
            agent: who.agent,
            ..Default::default()
        },
        mcp_method: None,
        mcp_name: None,
        resumes: false,
        mcp_session: None,
        api: Api::ExtAuthz,
    };
    match check(engine, &call) {
        Gate::Forward { decision, .. } => (decision.map_or(Code::Allowed, |d| d.code), true, None),
        Gate::Answer { reply, decision } => {
            let message: Value = serde_json::from_slice(&reply.body).unwrap();
            let code = decision.map_or(Code::InvalidRequest, |d| d.code);
            (code, false, Some(message))
        }
    }
}

fn send(engine: &Engine, body: &[u8]) -> (Code, bool) {
    let (code, forwarded, _) = send_as(engine, G, body);
    (code, forwarded)
}

/// Ask as `who`: the token, and the question.
fn ask_as(engine: &Engine, who: Who<'_>, tool: &str, args: &str) -> (String, String) {
    let (code, forwarded, message) = send_as(engine, who, &raw(tool, args, CAPABLE, None));
    assert_eq!((code, forwarded), (Code::ConfirmationRequired, false));
    let result = &message.unwrap()["result"];
    let requests = result["inputRequests"].as_object().unwrap();
    let (token, form) = requests.iter().next().unwrap();
    let question = form["params"]["message"].as_str().unwrap().to_owned();
    (token.clone(), question)
}

fn ask(engine: &Engine, tool: &str, args: &str) -> String {
    ask_as(engine, G, tool, args).0
}

fn yes(token: &str) -> String {
    format!(r#"{{"{token}":{{"action":"accept","content":{{"approve":true}}}}}}"#)
}

const RAN: (Code, bool) = (Code::Allowed, true);

// ---------------------------------------------------------------------------------------
// 1. A call run without a real yes.

/// Answers that are not exactly `{"action":"accept","content":{"approve":true}}`: each is
/// refused or read as a no; none runs the call, and the real yes still runs it once after.
#[test]
fn other_spellings_of_the_answer_never_run_the_call() {
    let (e, _) = engine(&policy());
    let args = r#"{"name":"prod"}"#;
    let t = ask(&e, "delete_db", args);
    let answers = [
        // Case variants of the answer's members and of its values.
        format!(r#"{{"{t}":{{"Action":"accept","content":{{"approve":true}}}}}}"#),
        format!(r#"{{"{t}":{{"ACTION":"accept","content":{{"approve":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","Content":{{"approve":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"Approve":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"APPROVE":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"approvſ":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"ACCEPT","content":{{"approve":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"Accept","content":{{"approve":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept ","content":{{"approve":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accepted","content":{{"approve":true}}}}}}"#),
        // The tick as another type.
        format!(r#"{{"{t}":{{"action":"accept","content":{{"approve":1}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"approve":"true"}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"approve":[true]}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"approve":{{"value":true}}}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"approve":null}}}}}}"#),
        // Nested otherwise.
        format!(r#"{{"{t}":{{"action":"accept","approve":true}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept"}},"approve":true}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"content":{{"approve":true}}}}}}}}"#),
        format!(r#"{{"{t}":{{"result":{{"action":"accept","content":{{"approve":true}}}}}}}}"#),
        format!(r#"{{"{t}":[{{"action":"accept","content":{{"approve":true}}}}]}}"#),
        format!(r#"{{"{t}":{{"action":["accept"],"content":{{"approve":true}}}}}}"#),
        format!(r#"[{{"{t}":{{"action":"accept","content":{{"approve":true}}}}}}]"#),
        // Two readings of one answer: duplicates, and keys that fold alike.
        format!(
            r#"{{"{t}":{{"action":"decline","action":"accept","content":{{"approve":true}}}}}}"#
        ),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"approve":false,"approve":true}}}}}}"#),
        format!(r#"{{"{t}":{{"action":"accept","content":{{"approve":false,"Approve":true}}}}}}"#),
        format!(
            r#"{{"{t}":{{"action":"accept","Action":"decline","content":{{"approve":true}}}}}}"#
        ),
        format!(
            r#"{{"{t}":{{"action":"decline"}},"{t}":{{"action":"accept","content":{{"approve":true}}}}}}"#
        ),
        format!(
            r#"{{"{t}":{{"action":"decline"}},"{}":{{"action":"accept","content":{{"approve":true}}}}}}"#,
            t.to_uppercase()
        ),
    ];
    for a in &answers {
        let got = send(&e, &raw("delete_db", args, CAPABLE, Some(a)));
        assert!(!got.1, "forwarded: {a}");
        assert!(
            matches!(got.0, Code::InvalidRequest | Code::ConfirmationDeclined),
            "{a}: {got:?}"
        );
    }
    assert_eq!(
        send(&e, &raw("delete_db", args, CAPABLE, Some(&yes(&t)))),
        RAN
    );
}

/// The member carrying the answers, spelt otherwise or placed elsewhere: refused, or not
/// read as an answer (the user is asked again); never a run.
#[test]
fn the_answer_in_another_member_never_runs_the_call() {
    let (e, _) = engine(&policy());
    let args = r#"{"name":"prod"}"#;
    let t = ask(&e, "delete_db", args);
    let y = yes(&t);
    let bodies = [
        // Case variants (and a long s) of inputResponses; a duplicate.
        raw("delete_db", args, CAPABLE, None)
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .replace("\"_meta\"", &format!("\"inputresponses\":{y},\"_meta\"")),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{CAPABLE},"INPUTRESPONSES":{y}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{CAPABLE},"inputResponſes":{y}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{CAPABLE},"inputResponses":{{}},"inputResponses":{y}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{CAPABLE},"inputResponses":{y},"inputResponses":{{}}}}}}"#
        ),
        // Elsewhere: top level, _meta, arguments, requestState.
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","inputResponses":{y},"params":{{"name":"delete_db","arguments":{args},"_meta":{CAPABLE}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{"elicitation":{{}}}},"inputResponses":{y}}}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{{"name":"prod","inputResponses":{y}}},"_meta":{CAPABLE}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{CAPABLE},"requestState":"{t}"}}}}"#
        ),
    ];
    for b in &bodies {
        let got = send(&e, b.as_bytes());
        assert!(!got.1, "forwarded: {b}");
        assert!(
            matches!(got.0, Code::InvalidRequest | Code::ConfirmationRequired),
            "{b}: {got:?}"
        );
    }
    assert_eq!(send(&e, &raw("delete_db", args, CAPABLE, Some(&y))), RAN);
}

/// The token spelt otherwise: uppercase hex, an upper-case prefix, whitespace, cut, longer;
/// none runs the call. A key written with JSON `\u` escapes IS the token (every decoder reads
/// it so): it may run the call, but then the plain spelling finds it used.
#[test]
fn other_spellings_of_the_token_never_run_the_call_twice() {
    let (e, _) = engine(&policy());
    let args = r#"{"name":"prod"}"#;
    let t = ask(&e, "delete_db", args);
    let hex = &t[TOKEN_PREFIX.len()..];
    let spellings = [
        format!("{TOKEN_PREFIX}{}", hex.to_uppercase()),
        t.to_uppercase(),
        format!("Toolgate.Confirm.{hex}"),
        format!(" {t}"),
        format!("{t} "),
        format!("{t}\\n"),
        format!("{t}\\u0000"),
        format!("{t}0"),
        t[..t.len() - 1].to_owned(),
        format!("{TOKEN_PREFIX}{TOKEN_PREFIX}{hex}"),
        format!("toolgate.confirm{hex}"),
        format!("toolgate.confirm.0x{}", &hex[2..]),
        // Full-width digits / letters look alike but are not hex.
        format!("{TOKEN_PREFIX}{}\u{ff10}", &hex[..79]),
    ];
    for s in &spellings {
        let got = send(&e, &raw("delete_db", args, CAPABLE, Some(&yes(s))));
        assert!(!got.1, "forwarded: {s}");
        assert!(
            matches!(
                got.0,
                Code::InvalidRequest | Code::ConfirmationInvalid | Code::ConfirmationRequired
            ),
            "{s}: {got:?}"
        );
    }
    // JSON escapes in the key: the same string.
    let escaped: String = t.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    assert_eq!(
        send(&e, &raw("delete_db", args, CAPABLE, Some(&yes(&escaped)))),
        RAN
    );
    let again = send(&e, &raw("delete_db", args, CAPABLE, Some(&yes(&t))));
    assert_eq!(again, (Code::ConfirmationInvalid, false));
}

// ---------------------------------------------------------------------------------------
// 2. One yes, another call.

/// Arguments spelt otherwise but the same JSON (key order, whitespace, `\u` escapes) are the
/// same call: all decoders read them alike, so the user's yes covers them. But a yes runs
/// one call whichever spelling comes first. Numbers are by value, as in every canonical
/// form: `1.0` and `1e0` are `1` (a schema-validating server reads them alike), while
/// `"1"`, `true` or `[1]` are another call, refused.
#[test]
fn one_yes_runs_one_call_whatever_the_arguments_spelling() {
    let (e, _) = engine(&policy());
    let t = ask(&e, "delete_db", r#"{"name":"x","n":1,"tags":["a","b"]}"#);
    let same = [
        r#"{"tags":["a","b"],"n":1,"name":"x"}"#,
        r#"{ "name" : "\u0078" , "n" : 1 , "tags" : [ "a" , "b" ] }"#,
        r#"{"name":"x","n":1,"tags":["a","b"]}"#,
    ];
    let mut ran = 0;
    for args in same {
        let got = send(&e, &raw("delete_db", args, CAPABLE, Some(&yes(&t))));
        assert!(
            matches!(got, RAN | (Code::ConfirmationInvalid, false)),
            "{args}: {got:?}"
        );
        ran += usize::from(got.1);
    }
    assert_eq!(ran, 1, "one yes, one run");

    for by_value in [r#"{"name":"x","n":1.0}"#, r#"{"name":"x","n":1e0}"#] {
        let t = ask(&e, "delete_db", r#"{"name":"x","n":1}"#);
        let got = send(&e, &raw("delete_db", by_value, CAPABLE, Some(&yes(&t))));
        assert_eq!(got, RAN, "{by_value}: the same number");
    }
    let t = ask(&e, "delete_db", r#"{"name":"x","n":1}"#);
    for other in [
        r#"{"name":"x","n":1.5}"#,
        r#"{"name":"x","n":"1"}"#,
        r#"{"name":"x","n":true}"#,
        r#"{"name":"x","n":[1]}"#,
        r#"{"name":"x"}"#,
        r#"{"name":"x","n":1,"force":true}"#,
        r#"{"name":"X","n":1}"#,
        r#"{"name":"x ","n":1}"#,
        r#"{"name":"x\u0000","n":1}"#,
        r#"{"name":"x\u200b","n":1}"#,
        r#"{"name":"x","n":1,"extra":null}"#,
    ] {
        let got = send(&e, &raw("delete_db", other, CAPABLE, Some(&yes(&t))));
        assert_eq!(got, (Code::ConfirmationInvalid, false), "{other}");
    }
    // No arguments at all against empty arguments.
    let t = ask(&e, "delete_db", "{}");
    let none = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","_meta":{CAPABLE},"inputResponses":{}}}}}"#,
        yes(&t)
    );
    assert_eq!(
        send(&e, none.as_bytes()),
        (Code::ConfirmationInvalid, false)
    );
}

/// A yes for one tool, server, caller or policy: refused for any other.
#[test]
fn a_yes_is_for_its_tool_server_caller_and_policy() {
    let all_tools = json!({"version": "1", "default": "allow",
        "all_tools": {"action": "require_confirmation"}});
    let (e, _) = engine(&all_tools);
    let args = r#"{"name":"a"}"#;
    let asker = Who {
        grant: Some("g"),
        session: Some("s"),
        agent: Some("a"),
        server: Some("srv"),
    };
    let (t, _) = ask_as(&e, asker, "drop", args);
    let y = yes(&t);
    let others = [
        Who {
            server: Some("srv2"),
            ..asker
        },
        Who {
            server: None,
            ..asker
        },
        Who {
            server: Some("SRV"),
            ..asker
        },
        Who {
            server: Some("srv "),
            ..asker
        },
        Who {
            grant: Some("G"),
            ..asker
        },
        Who {
            grant: Some("g "),
            ..asker
        },
        Who {
            grant: None,
            ..asker
        },
        Who {
            session: Some("s2"),
            ..asker
        },
        Who {
            session: None,
            ..asker
        },
        Who {
            agent: Some("b"),
            ..asker
        },
        Who {
            agent: None,
            ..asker
        },
        // Parts moved from one field to another.
        Who {
            grant: Some("s"),
            session: Some("g"),
            ..asker
        },
        Who {
            session: Some("a"),
            agent: Some("s"),
            ..asker
        },
    ];
    for who in others {
        let got = send_as(&e, who, &raw("drop", args, CAPABLE, Some(&y)));
        assert_eq!((got.0, got.1), (Code::ConfirmationInvalid, false));
    }
    // Another tool, under the same all_tools rule.
    for tool in ["drop2", "Drop", "drop_"] {
        let got = send_as(&e, asker, &raw(tool, args, CAPABLE, Some(&y)));
        assert_eq!((got.0, got.1), (Code::ConfirmationInvalid, false), "{tool}");
    }
    // Another tool rule with the same message and timeout.
    let (e2, _) = engine(&policy());
    let t = ask(&e2, "delete_db", args);
    let got = send(&e2, &raw("other_db", args, CAPABLE, Some(&yes(&t))));
    assert_eq!(got, (Code::ConfirmationInvalid, false));

    // A reload to another policy: answers asked before are refused.
    let t = ask(&e2, "delete_db", args);
    let mut changed = policy();
    changed["tools"]["unrelated"] = json!({"action": "deny"});
    e2.reload(Policy::from_json_str(&changed.to_string()).unwrap())
        .unwrap();
    let got = send(&e2, &raw("delete_db", args, CAPABLE, Some(&yes(&t))));
    assert_eq!(got, (Code::ConfirmationInvalid, false));
    // And back: the first policy's answers hold again, still once.
    let t2 = ask(&e2, "delete_db", args);
    e2.reload(Policy::from_json_str(&policy().to_string()).unwrap())
        .unwrap();
    let got = send(&e2, &raw("delete_db", args, CAPABLE, Some(&yes(&t))));
    assert_eq!(got, RAN, "the revision is the policy's content");
    assert_eq!(
        send(&e2, &raw("delete_db", args, CAPABLE, Some(&yes(&t)))),
        (Code::ConfirmationInvalid, false)
    );
    let got = send(&e2, &raw("delete_db", args, CAPABLE, Some(&yes(&t2))));
    assert_eq!(got, (Code::ConfirmationInvalid, false));
}

// ---------------------------------------------------------------------------------------
// 3. Replays.

/// The same yes from 64 threads at once, each spelling its body another way: one run.
#[test]
fn a_yes_runs_once_from_many_threads_in_many_spellings() {
    let (e, _) = engine(&policy());
    let t = ask(&e, "delete_db", r#"{"name":"race","n":1}"#);
    let threads = 64;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (e, barrier) = (e.clone(), barrier.clone());
            let args = if i % 2 == 0 {
                r#"{"name":"race","n":1}"#
            } else {
                r#"{"n":1,"name":"r\u0061ce"}"#
            };
            let body = raw("delete_db", args, CAPABLE, Some(&yes(&t)));
            std::thread::spawn(move || {
                barrier.wait();
                send(&e, &body)
            })
        })
        .collect();
    let got: Vec<(Code, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got.iter().filter(|g| g.1).count(), 1, "{got:?}");
    assert!(got
        .iter()
        .all(|g| matches!(*g, RAN | (Code::ConfirmationInvalid, false))));
}

/// A yes refused by a limit stays unused (it may run once when the limit has room); a yes
/// that ran is used whatever the limit says later; a reservation given back (the server
/// proved the call never ran) frees it once more, within its time only.
#[test]
fn replays_after_a_limit_a_release_and_expiry() {
    let (e, _) = engine(&policy());
    let args = r#"{"to":"x"}"#;
    let t1 = ask(&e, "pay", args);
    let t2 = ask(&e, "pay", args);
    let (code, forwarded, _) = send_as(&e, G, &raw("pay", args, CAPABLE, Some(&yes(&t1))));
    assert_eq!((code, forwarded), RAN);
    // t2 is refused by the limit, twice: not used.
    for _ in 0..2 {
        let got = send(&e, &raw("pay", args, CAPABLE, Some(&yes(&t2))));
        assert_eq!(got, (Code::RateLimited, false));
    }
    // t1 again: used (reported as used or limited: never run).
    let got = send(&e, &raw("pay", args, CAPABLE, Some(&yes(&t1))));
    assert!(!got.1, "{got:?}");

    // A release: the call never ran; its yes may run it once more.
    let (e, clock) = engine(&policy());
    let t = ask(&e, "pay", args);
    let call = HttpCall {
        http_method: "POST",
        body: &raw("pay", args, CAPABLE, Some(&yes(&t))),
        truncated: false,
        server: None,
        subject: Subject {
            grant: Some("g"),
            ..Default::default()
        },
        mcp_method: None,
        mcp_name: None,
        resumes: false,
        mcp_session: None,
        api: Api::ExtAuthz,
    };
    let reservation = match check(&e, &call) {
        Gate::Forward { decision, .. } => decision.unwrap().reservation.unwrap(),
        Gate::Answer { decision, .. } => panic!("{:?}", decision.map(|d| d.code)),
    };
    assert!(e.release(reservation));
    assert!(!e.release(reservation), "a release is given once");
    assert_eq!(send(&e, call.body), RAN);
    // Refused by the limit or as used: not run.
    assert!(!send(&e, call.body).1);
    // A yes released after its time is over stays refused.
    let t = ask(&e, "delete_db", r#"{"name":"late"}"#);
    let body = raw("delete_db", r#"{"name":"late"}"#, CAPABLE, Some(&yes(&t)));
    let reservation = match check(
        &e,
        &HttpCall {
            body: &body,
            ..call
        },
    ) {
        Gate::Forward { decision, .. } => decision.unwrap().reservation,
        Gate::Answer { .. } => panic!("asked"),
    };
    clock.advance_ns(61_000_000_000);
    if let Some(r) = reservation {
        e.release(r);
    }
    assert_eq!(send(&e, &body), (Code::ConfirmationExpired, false));
}

/// A clock whose wall time and monotonic time are set apart: a host whose wall clock NTP
/// stepped back, or a replica whose wall clock lags the one that minted the token (the
/// counters then run on Redis's TIME, the expiry on each pod's wall clock).
struct SplitClock {
    mono_ns: AtomicU64,
    wall_ms: AtomicU64,
}

impl Clock for SplitClock {
    fn now_ns(&self) -> u64 {
        self.mono_ns.load(SeqCst)
    }
    fn wall_ms(&self) -> u64 {
        self.wall_ms.load(SeqCst)
    }
}

/// The one-use counter must outlive the token on any clock: a yes used once must not run
/// again while its expiry (wall clock) still admits it. Here the wall clock is 40 s behind
/// the counters' clock when the replay comes (a step back, or a lagging replica): the
/// counter has forgotten the nonce (its window is exactly the token's timeout), the token is
/// still within its time.
#[test]
fn a_used_yes_stays_used_while_its_token_is_valid_whatever_the_clocks() {
    let wall0 = 1_800_000_000_000u64;
    let clock = Arc::new(SplitClock {
        mono_ns: AtomicU64::new(1_000_000_000_000),
        wall_ms: AtomicU64::new(wall0),
    });
    let e = engine_with(&policy(), clock.clone());
    let args = r#"{"name":"skew"}"#;
    let t = ask(&e, "delete_db", args);
    let body = raw("delete_db", args, CAPABLE, Some(&yes(&t)));
    assert_eq!(send(&e, &body), RAN);
    assert_eq!(send(&e, &body), (Code::ConfirmationInvalid, false));
    // 70 s pass on the counters' clock; the wall clock reads 30 s after the mint.
    clock.mono_ns.fetch_add(70_000_000_000, SeqCst);
    clock.wall_ms.store(wall0 + 30_000, SeqCst);
    let replay = send(&e, &body);
    assert_eq!(
        replay,
        (Code::ConfirmationInvalid, false),
        "a used yes ran again: the nonce's window ended before the token's expiry"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Capability detection.

/// `_meta` shapes that do not declare a 2026-07-28 client with form elicitation: the rule's
/// fallback (deny), never a question, never a run; `_meta` spelt in two ways: refused.
#[test]
fn capability_shapes_that_are_not_a_capable_client_get_the_fallback() {
    let (e, _) = engine(&policy());
    let v = "io.modelcontextprotocol/protocolVersion";
    let c = "io.modelcontextprotocol/clientCapabilities";
    let metas = [
        format!(r#"{{"{v}":20260728,"{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":["2026-07-28"],"{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":{{"v":"2026-07-28"}},"{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":null,"{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":"2026-07-28T00:00:00Z","{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":"2026-7-28","{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":"2026/07/28","{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":" 2026-07-28","{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":"2025-11-25","{c}":{{"elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":"2026-07-28","{c}":{{"elicitation":true}}}}"#),
        format!(r#"{{"{v}":"2026-07-28","{c}":{{"elicitation":null}}}}"#),
        format!(r#"{{"{v}":"2026-07-28","{c}":{{"elicitation":["form"]}}}}"#),
        format!(r#"{{"{v}":"2026-07-28","{c}":{{"elicitation":"form"}}}}"#),
        format!(r#"{{"{v}":"2026-07-28","{c}":{{"elicitation":{{"url":{{}}}}}}}}"#),
        format!(r#"{{"{v}":"2026-07-28","{c}":{{"Elicitation":{{}}}}}}"#),
        format!(r#"{{"{v}":"2026-07-28","{c}":true}}"#),
        format!(r#"{{"{v}":"2026-07-28","{c}":[{{"elicitation":{{}}}}]}}"#),
        format!(r#"{{"{v}":"2026-07-28"}}"#),
        format!(r#"{{"{c}":{{"elicitation":{{}}}}}}"#),
        format!(
            r#"{{"IO.MODELCONTEXTPROTOCOL/PROTOCOLVERSION":"2026-07-28","{c}":{{"elicitation":{{}}}}}}"#
        ),
        r#"{"protocolVersion":"2026-07-28","clientCapabilities":{"elicitation":{}}}"#.to_owned(),
        "{}".to_owned(),
    ];
    let args = r#"{"name":"cap"}"#;
    for meta in &metas {
        let got = send(&e, &raw("delete_db", args, meta, None));
        assert_eq!(got, (Code::ConfirmationUnavailable, false), "{meta}");
    }
    // Two spellings of _meta or of its keys: refused before any decision.
    let twice = [
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{{}},"_META":{CAPABLE}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_META":{CAPABLE}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{{}},"_meta":{CAPABLE}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{{"{v}":"2025-11-25","{v}":"2026-07-28","{c}":{{"elicitation":{{}}}}}}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"delete_db","arguments":{args},"_meta":{{"{v}":"2026-07-28","IO.modelcontextprotocol/protocolVersion":"2025-11-25","{c}":{{"elicitation":{{}}}}}}}}}}"#
        ),
    ];
    for b in &twice {
        assert_eq!(send(&e, b.as_bytes()), (Code::InvalidRequest, false), "{b}");
    }
}

/// An answer from a request that does not declare the capability (the question was put to
/// a capable one): the fallback, never a run, and the yes stays unused.
#[test]
fn an_answer_from_a_client_that_cannot_be_asked_runs_nothing() {
    let (e, _) = engine(&json!({"version": "1", "default": "allow", "tools": {
        "deny_me": {"action": "require_confirmation"},
        "approve_me": {"action": "require_confirmation",
                       "confirmation": {"fallback": "approval"}}}}));
    let args = r#"{"id":1}"#;
    for (tool, fallback) in [
        ("deny_me", Code::ConfirmationUnavailable),
        ("approve_me", Code::ApprovalRequired),
    ] {
        let t = ask(&e, tool, args);
        for meta in [
            "{}",
            r#"{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}"#,
        ] {
            let got = send(&e, &raw(tool, args, meta, Some(&yes(&t))));
            assert_eq!(got, (fallback, false), "{tool} {meta}");
        }
        assert_eq!(send(&e, &raw(tool, args, CAPABLE, Some(&yes(&t)))), RAN);
    }
}

// ---------------------------------------------------------------------------------------
// 5. Floods, and the question a person reads.

/// Asking mints tokens and stores nothing: ten thousand questions leave the counter table
/// as it was. Answers under thousands of foreign keys are bounded by the body's caps, and
/// foreign keys never stand for toolgate's.
#[test]
fn questions_store_nothing_and_foreign_keys_do_not_count() {
    let (e, _) = engine(&policy());
    let before = (e.table().occupied(), e.table().client_slots());
    for i in 0..10_000 {
        let args = format!(r#"{{"name":"db{i}"}}"#);
        let body = raw("delete_db", &args, CAPABLE, None);
        assert_eq!(send(&e, &body), (Code::ConfirmationRequired, false));
    }
    assert_eq!((e.table().occupied(), e.table().client_slots()), before);

    let args = r#"{"name":"flood"}"#;
    let t = ask(&e, "delete_db", args);
    // 20,000 foreign answers, each a yes: the call is asked, not run.
    let mut foreign = String::from("{");
    for i in 0..20_000 {
        if i > 0 {
            foreign.push(',');
        }
        foreign.push_str(&format!(
            r#""q{i}":{{"action":"accept","content":{{"approve":true}}}}"#
        ));
    }
    foreign.push('}');
    let got = send(&e, &raw("delete_db", args, CAPABLE, Some(&foreign)));
    assert_eq!(got, (Code::ConfirmationRequired, false));
    // Over the body's caps: refused, whatever it carries.
    let mut huge = String::from("{");
    for i in 0..120_000 {
        huge.push_str(&format!(r#""q{i}":1,"#));
    }
    huge.push_str(&yes(&t)[1..]);
    let got = send(&e, &raw("delete_db", args, CAPABLE, Some(&huge)));
    assert_eq!(got, (Code::InvalidRequest, false));
    // The yes is still this call's, once.
    assert_eq!(
        send(&e, &raw("delete_db", args, CAPABLE, Some(&yes(&t)))),
        RAN
    );
}

/// A tool name no person should read (too long, control characters, bidi, ANSI): refused
/// before any question, never run.
#[test]
fn names_a_person_should_not_read_are_never_asked_about() {
    let (e, _) = engine(&json!({"version": "1", "default": "allow",
        "all_tools": {"action": "require_confirmation"}}));
    let names = [
        "a".repeat(129),
        "x\\u001b[31mred".to_owned(),
        "x\\u202eevil".to_owned(),
        "x\\nnew line".to_owned(),
        "x y".to_owned(),
        "x\\u0000".to_owned(),
    ];
    for name in &names {
        let got = send(&e, &raw(name, "{}", CAPABLE, None));
        assert_eq!(got, (Code::InvalidRequest, false), "{name}");
    }
}

/// What a display could act on, in an argument shown in the question, is written as text:
/// control characters, ANSI escapes, bidi overrides, zero-width and tag characters, and the
/// other invisible ("default ignorable") characters: the combining grapheme joiner,
/// variation selectors, Hangul fillers, Khmer and Mongolian invisible vowels and selectors.
/// The question stays bounded whatever the argument's size.
#[test]
fn the_question_is_bounded_and_inert() {
    let (e, _) = engine(&policy());
    let visible = [
        ("\\u001b[2J\\u001b[31mok", '\u{1b}'),
        ("a\\nb\\rc", '\n'),
        ("a\\u0085b", '\u{85}'),
        ("a\\u202eb", '\u{202e}'),
        ("a\\u2066b", '\u{2066}'),
        ("a\\u200bb", '\u{200b}'),
        ("a\\u2028b", '\u{2028}'),
        ("a\\udb40\\udc41b", '\u{e0041}'),
        ("a\\u034fb", '\u{34f}'),
        ("a\\ufe0fb", '\u{fe0f}'),
        ("a\\udb40\\udd00b", '\u{e0100}'),
        ("a\\u3164b", '\u{3164}'),
        ("a\\u115fb", '\u{115f}'),
        ("a\\u1160b", '\u{1160}'),
        ("a\\uffa0b", '\u{ffa0}'),
        ("a\\u17b4b", '\u{17b4}'),
        ("a\\u180bb", '\u{180b}'),
    ];
    // Bounded: a megabyte argument, a deep one, one of escapes.
    for value in [
        format!(r#""{}""#, "x".repeat(1 << 20)),
        format!(r#""{}""#, "\\u001b".repeat(50_000)),
        format!("{}1{}", "[".repeat(120), "]".repeat(120)),
        format!(r#"{{"k":"{}"}}"#, "\\u202e".repeat(10_000)),
    ] {
        let (_, question) = ask_as(&e, G, "delete_db", &format!(r#"{{"name":{value}}}"#));
        assert!(question.len() <= 3_000, "{} bytes", question.len());
        assert!(!question.chars().any(|c| c.is_control()));
    }
    let mut missed = Vec::new();
    for (value, c) in visible {
        let (_, question) = ask_as(&e, G, "delete_db", &format!(r#"{{"name":"{value}"}}"#));
        if question.contains(c) {
            missed.push(format!("U+{:04X}", c as u32));
        }
    }
    assert!(missed.is_empty(), "shown raw in the question: {missed:?}");
}

/// The question must say what the yes is for. With no `message`, the user is asked about
/// "the arguments the agent sent" without being shown them; on `all_tools` the tool is not
/// even named ("Allow all tools to run…"), and a `message` cannot name it either (no
/// `{tool}` placeholder): the user confirms blind.
#[test]
fn the_default_question_names_the_tool_and_shows_the_arguments() {
    let (e, _) = engine(&json!({"version": "1", "default": "allow",
        "all_tools": {"action": "require_confirmation"},
        "tools": {"send_mail": {"action": "require_confirmation"}}}));
    let args = r#"{"to":"boss@example.com","body":"I quit"}"#;
    let (_, q_all) = ask_as(&e, G, "delete_everything", args);
    let (_, q_tool) = ask_as(&e, G, "send_mail", args);
    let mut blind = Vec::new();
    if !q_all.contains("delete_everything") {
        blind.push(format!("all_tools does not name the tool: {q_all:?}"));
    }
    for q in [&q_all, &q_tool] {
        if !q.contains("boss@example.com") {
            blind.push(format!("arguments not shown: {q:?}"));
        }
    }
    assert!(blind.is_empty(), "{blind:#?}");
}

// ---------------------------------------------------------------------------------------
// 6. Shadow, dry runs, combinations with approvals.

/// A shadow confirmation on the tool does not lift an enforced one on `all_tools` (and the
/// other way round); a shadow section's enforced rule still asks.
#[test]
fn shadow_rules_neither_lift_nor_hide_a_confirmation() {
    let mut logged_otherwise = Vec::new();
    for p in [
        json!({"version": "1", "default": "allow",
               "all_tools": {"action": "require_confirmation"},
               "tools": {"t": {"action": "require_confirmation", "mode": "shadow"}}}),
        json!({"version": "1", "default": "allow",
               "all_tools": {"action": "require_confirmation", "mode": "shadow"},
               "tools": {"t": {"action": "require_confirmation"}}}),
        json!({"version": "1", "default": "allow", "mode": "shadow",
               "tools": {"t": {"action": "require_confirmation", "mode": "enforce"}}}),
        json!({"version": "1", "default": "allow",
               "all_tools": {"action": "require_confirmation"},
               "tools": {"t": {"action": "allow"}}}),
    ] {
        let (e, _) = engine(&p);
        let got = send(&e, &raw("t", "{}", CAPABLE, None));
        assert_eq!(got, (Code::ConfirmationRequired, false), "{p}");
        let t = ask(&e, "t", "{}");
        let (code, forwarded, _) = send_as(&e, G, &raw("t", "{}", CAPABLE, Some(&yes(&t))));
        assert!(forwarded, "{p}: {code:?}");
        if code != Code::Allowed {
            logged_otherwise.push(format!("{p}: {code:?}"));
        }
        assert_eq!(
            send(&e, &raw("t", "{}", CAPABLE, Some(&yes(&t)))),
            (Code::ConfirmationInvalid, false),
            "{p}"
        );
    }
    // The confirmed call ran: its decision (the log line, the code metric, the confirmed
    // counter) must say so, not that it would have needed a confirmation.
    assert!(
        logged_otherwise.is_empty(),
        "a confirmed call decided as something else: {logged_otherwise:#?}"
    );
}

/// A dry run with the user's yes says the call would run and uses nothing: the yes then
/// runs the call, once.
#[test]
fn a_dry_run_with_a_yes_uses_nothing() {
    let (e, _) = engine(&policy());
    let args = json!({"name": "dry"});
    let t = ask(&e, "delete_db", &args.to_string());
    let confirm = Confirming {
        can_ask: true,
        answer: Some(Answer {
            token: t.clone(),
            yes: true,
        }),
    };
    for _ in 0..3 {
        let d = e.decide(&Request {
            kind: Kind::Tool,
            name: "delete_db",
            server: None,
            subject: Subject {
                grant: Some("g"),
                ..Default::default()
            },
            args: Some(&args),
            dry_run: true,
            hits: None,
            confirm: Some(&confirm),
        });
        assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason());
        assert!(d.confirmation.is_none(), "a dry run confirms nothing");
    }
    let body = raw("delete_db", &args.to_string(), CAPABLE, Some(&yes(&t)));
    assert_eq!(send(&e, &body), RAN);
    assert_eq!(send(&e, &body), (Code::ConfirmationInvalid, false));
}

/// An approvals desk that approves once told, and counts the approvals used.
struct Desk {
    settings: ApprovalSettings,
    approved: std::sync::atomic::AtomicBool,
    id: ApprovalId,
    consumed: AtomicUsize,
    requested: AtomicUsize,
}

impl Desk {
    fn new() -> Arc<Desk> {
        Arc::new(Desk {
            settings: ApprovalSettings::private(16),
            approved: false.into(),
            id: ApprovalId::random(),
            consumed: AtomicUsize::new(0),
            requested: AtomicUsize::new(0),
        })
    }
}

impl ApprovalDesk for Desk {
    fn settings(&self) -> &ApprovalSettings {
        &self.settings
    }

    fn request(&self, _ask: &Ask, now_ms: u64) -> Result<Standing, NoRoom> {
        self.requested.fetch_add(1, SeqCst);
        Ok(if self.approved.load(SeqCst) {
            Standing::Approved {
                id: self.id,
                until_ms: now_ms + 60_000,
            }
        } else {
            Standing::Pending {
                id: self.id,
                created_ms: now_ms,
                expires_ms: now_ms + 60_000,
                new: false,
            }
        })
    }

    fn consume(&self, _key: ApprovalKey, _id: ApprovalId, _now_ms: u64) -> bool {
        // One approval, one use.
        self.consumed.fetch_add(1, SeqCst) == 0
    }

    fn emit(&self, _event: ApprovalEvent) {}
}

/// Confirmation on one rule, approval on the other (both ways round): both must pass, the
/// approval first; the question does not use the approval, and the approved, confirmed call
/// runs once. With approvals off, a confirmed call that also needs an approval never runs.
#[test]
fn confirmation_and_approval_together_need_both() {
    let both = [
        json!({"version": "1", "default": "allow",
               "all_tools": {"action": "require_confirmation"},
               "tools": {"t": {"action": "require_approval"}}}),
        json!({"version": "1", "default": "allow",
               "all_tools": {"action": "require_approval"},
               "tools": {"t": {"action": "require_confirmation"}}}),
    ];
    for p in &both {
        let desk = Desk::new();
        let e = approving(p, desk.clone());
        // Pending: no question yet, nothing runs.
        assert_eq!(
            send(&e, &raw("t", "{}", CAPABLE, None)),
            (Code::ApprovalRequired, false),
            "{p}"
        );
        desk.approved.store(true, SeqCst);
        // Approved: now the user is asked; the approval is not used by the question.
        let t = ask(&e, "t", "{}");
        assert_eq!(desk.consumed.load(SeqCst), 0);
        // A no: refused, the approval unused.
        let no = format!(r#"{{"{t}":{{"action":"decline"}}}}"#);
        assert_eq!(
            send(&e, &raw("t", "{}", CAPABLE, Some(&no))),
            (Code::ConfirmationDeclined, false)
        );
        assert_eq!(desk.consumed.load(SeqCst), 0);
        // A yes: runs, using both.
        assert_eq!(send(&e, &raw("t", "{}", CAPABLE, Some(&yes(&t)))), RAN);
        assert_eq!(desk.consumed.load(SeqCst), 1);
        // Again: the confirmation is used (and the approval too).
        let again = send(&e, &raw("t", "{}", CAPABLE, Some(&yes(&t))));
        assert!(!again.1, "{p}: {again:?}");
    }
    // Approvals off: a yes does not stand for the approval.
    for p in &both {
        let (e, _) = engine(p);
        let t = ask(&e, "t", "{}");
        let got = send(&e, &raw("t", "{}", CAPABLE, Some(&yes(&t))));
        assert_eq!(got, (Code::ApprovalRequired, false), "{p}");
    }
    // A fallback to an approval with approvals off: denied, for an old client, with or
    // without a (stale) answer.
    let (e, _) = engine(&json!({"version": "1", "default": "allow", "tools": {
        "t": {"action": "require_confirmation", "confirmation": {"fallback": "approval"}}}}));
    let t = ask(&e, "t", "{}");
    for answers in [None, Some(yes(&t))] {
        let got = send(&e, &raw("t", "{}", "{}", answers.as_deref()));
        assert_eq!(got, (Code::ApprovalRequired, false));
    }
}

/// Neither the decision's reason nor the `_meta` details of any answer carry the token or
/// the question (the log and metrics are built from those).
#[test]
fn no_reason_or_detail_carries_the_token_or_the_question() {
    let (e, clock) = engine(&policy());
    let args = r#"{"name":"SECRET-ARG"}"#;
    let (t, question) = ask_as(&e, G, "delete_db", args);
    assert!(question.contains("SECRET-ARG"));
    let hex = &t[TOKEN_PREFIX.len()..];
    let check_message = |m: &Value, what: &str| {
        let meta = m["result"]["_meta"]["toolgate/decision"].to_string();
        let content = m["result"]["content"].to_string();
        for part in [&meta, &content] {
            assert!(!part.contains(hex), "{what}: token in {part}");
            assert!(!part.contains("SECRET-ARG"), "{what}: question in {part}");
        }
    };
    let (_, _, asked) = send_as(&e, G, &raw("delete_db", args, CAPABLE, None));
    check_message(&asked.unwrap(), "asked");
    let no = format!(r#"{{"{t}":{{"action":"decline"}}}}"#);
    let (_, _, m) = send_as(&e, G, &raw("delete_db", args, CAPABLE, Some(&no)));
    check_message(&m.unwrap(), "declined");
    let other = r#"{"name":"other"}"#;
    let (_, _, m) = send_as(&e, G, &raw("delete_db", other, CAPABLE, Some(&yes(&t))));
    check_message(&m.unwrap(), "invalid");
    assert_eq!(
        send(&e, &raw("delete_db", args, CAPABLE, Some(&yes(&t)))),
        RAN
    );
    let (_, _, m) = send_as(&e, G, &raw("delete_db", args, CAPABLE, Some(&yes(&t))));
    check_message(&m.unwrap(), "used");
    let t2 = ask(&e, "delete_db", args);
    clock.advance_ns(61_000_000_000);
    let (_, _, m) = send_as(&e, G, &raw("delete_db", args, CAPABLE, Some(&yes(&t2))));
    check_message(&m.unwrap(), "expired");
}

/// `fallback: approval` with approvals running: a client that cannot be asked needs the
/// approver, whose approval runs the call once; a stale answer it carries changes nothing.
#[test]
fn a_fallback_approval_runs_once_on_the_approval() {
    let desk = Desk::new();
    let e = approving(
        &json!({"version": "1", "default": "allow", "tools": {
        "t": {"action": "require_confirmation", "confirmation": {"fallback": "approval"}}}}),
        desk.clone(),
    );
    let t = ask(&e, "t", "{}");
    let stale = yes(&t);
    for answers in [None, Some(stale.as_str())] {
        let got = send(&e, &raw("t", "{}", "{}", answers));
        assert_eq!(got, (Code::ApprovalRequired, false));
    }
    desk.approved.store(true, SeqCst);
    assert_eq!(send(&e, &raw("t", "{}", "{}", Some(&stale))), RAN);
    assert!(
        !send(&e, &raw("t", "{}", "{}", None)).1,
        "one approval, one run"
    );
}

/// Each confirmed call keeps one slot of the counter table's client-chosen half while its
/// nonce is remembered (up to twice 24 h): one caller who confirms its own calls quickly (an
/// automated client answering yes) could fill that half, and then every other caller's
/// confirmed call would be refused ("counter table is full"). One grant's confirmed calls
/// are capped (MAX_CONFIRMED_PER_CALLER): past it that caller is refused, others run.
#[test]
fn one_callers_confirmations_cannot_deny_another_callers() {
    use toolgate_core::policy::compile::MAX_CONFIRMED_PER_CALLER;
    let clock = Arc::new(ManualClock::new(START_NS));
    let p = json!({"version": "1", "default": "allow", "tools": {
        "t": {"action": "require_confirmation", "confirmation": {"timeout": "24h"}}}});
    let policy = Policy::from_json_str(&p.to_string()).unwrap();
    // The table a default sidecar has.
    let table = Arc::new(CounterTable::new(1 << 16, 1 << 16));
    let e = Engine::new(policy, table, clock).unwrap();
    let flooder = Who {
        grant: Some("flooder"),
        ..G
    };
    let mut flooder_ran = 0;
    let mut refused = None;
    for i in 0..MAX_CONFIRMED_PER_CALLER + 5 {
        let args = format!(r#"{{"i":{i}}}"#);
        let (t, _) = ask_as(&e, flooder, "t", &args);
        let got = send_as(&e, flooder, &raw("t", &args, CAPABLE, Some(&yes(&t))));
        flooder_ran += usize::from(got.1);
        if !got.1 {
            refused.get_or_insert(got.0);
        }
    }
    assert_eq!(flooder_ran, MAX_CONFIRMED_PER_CALLER as usize);
    assert_eq!(refused, Some(Code::RateLimited));
    let victim = Who {
        grant: Some("victim"),
        ..G
    };
    let (t, _) = ask_as(&e, victim, "t", "{}");
    let got = send_as(&e, victim, &raw("t", "{}", CAPABLE, Some(&yes(&t))));
    assert_eq!(
        (got.0, got.1),
        RAN,
        "after {flooder_ran} confirmed calls of one caller, another's yes is refused"
    );
}
