//! MCP sessions (2025 revisions' `Mcp-Session-Id`): the first caller to use a session holds
//! it, and any other caller that names it, on any request, is answered as a server answers a
//! session it does not know.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::engine::gate::{check, Gate, HttpCall};
use toolgate_core::observing::stats::Api;
use toolgate_core::owners::per_caller;
use toolgate_core::owners::sessions::{KEEP_MS, MAX_PER_CALLER};
use toolgate_core::{Code, Engine, ManualClock, Policy, Subject};

const POLICY: &str = r#"
version: "1"
default: allow
"#;

fn engine_with(slots: usize) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let policy = Policy::from_yaml_str(POLICY).expect("valid policy");
    let table = Arc::new(CounterTable::new(slots, 1024));
    (Engine::new(policy, table, clock.clone()).unwrap(), clock)
}

fn engine() -> Engine {
    engine_with(4096).0
}

/// A caller: its grant, and whether the proxy verified it (a token's claim) or not (a header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Caller(&'static str, bool);

const CALLERS: [Caller; 5] = [
    Caller("alice", false),
    Caller("bob", false),
    Caller("alice", true),
    Caller("", false),
    Caller("mallory", false),
];

fn subject(c: Caller) -> Subject<'static> {
    Subject {
        grant: Some(c.0).filter(|g| !g.is_empty()),
        grant_verified: c.1,
        ..Default::default()
    }
}

/// A request of HTTP method `method` in session `session`: the JSON-RPC message a POST
/// carries, an empty body for a GET (the stream) or a DELETE (ending the session).
fn call<'a>(method: &'a str, body: &'a str, c: Caller, session: &'a str) -> HttpCall<'a> {
    HttpCall {
        http_method: method,
        body: body.as_bytes(),
        truncated: false,
        server: Some("crm"),
        subject: subject(c),
        mcp_method: None,
        mcp_name: None,
        resumes: false,
        mcp_session: Some(session),
        api: Api::ExtAuthz,
    }
}

/// Sent on, or the HTTP status, JSON-RPC error code and decision code it is answered with.
fn outcome(e: &Engine, call: &HttpCall<'_>) -> Result<(), (u16, i64, Code)> {
    match check(e, call) {
        Gate::Forward { .. } => Ok(()),
        Gate::Answer { reply, decision } => {
            let message: Value = serde_json::from_slice(&reply.body).unwrap();
            let code = message["error"]["code"].as_i64().unwrap_or(0);
            Err((
                reply.status,
                code,
                decision.map_or(Code::Allowed, |d| d.code),
            ))
        }
    }
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// The requests a session sees: a message, the answer to a server's request (an
/// elicitation's), the stream's GET, and the DELETE that ends it.
fn request(kind: u8) -> (&'static str, String) {
    match kind % 4 {
        0 => ("POST", PING.to_owned()),
        1 => (
            "POST",
            json!({"jsonrpc": "2.0", "id": 0, "result": {"action": "accept"}}).to_string(),
        ),
        2 => ("GET", String::new()),
        _ => ("DELETE", String::new()),
    }
}

/// Another caller's session is answered exactly as MCP servers answer one they do not know.
fn is_unknown_session(outcome: Result<(), (u16, i64, Code)>) -> bool {
    outcome == Err((404, -32001, Code::Hidden))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the order of requests, each session is reached only by the first caller that
    /// used it; every other caller is answered 404 on every kind of request. A caller is its
    /// grant and whether it was verified: a header spelling a verified caller's name is
    /// someone else.
    #[test]
    fn a_session_is_reached_by_the_first_caller_that_used_it_only(
        uses in proptest::collection::vec((0..CALLERS.len(), 0u8..4, 0u8..4), 1..60),
    ) {
        let e = engine();
        let mut holder: HashMap<String, Caller> = HashMap::new();
        for (who, session, kind) in uses {
            let caller = CALLERS[who];
            let session = format!("s-{session}");
            let (method, body) = request(kind);
            let got = outcome(&e, &call(method, &body, caller, &session));
            let first = *holder.entry(session.clone()).or_insert(caller);
            if first == caller {
                prop_assert_eq!(got, Ok(()), "{:?} holds {}", caller, session);
            } else {
                prop_assert!(is_unknown_session(got), "{:?} in {}: {:?}", caller, session, got);
            }
        }
    }

    /// The same session id on two servers is two sessions: each server's is held apart.
    #[test]
    fn a_session_is_held_per_server(session in "[a-z0-9-]{1,12}") {
        let e = engine();
        let alice = Caller("alice", false);
        let bob = Caller("bob", false);
        let on = |server: &'static str, c: Caller| {
            let mut call = call("POST", PING, c, &session);
            call.server = Some(server);
            outcome(&e, &call)
        };
        prop_assert_eq!(on("crm", alice), Ok(()));
        prop_assert_eq!(on("mail", bob), Ok(()));
        prop_assert!(is_unknown_session(on("crm", bob)));
        prop_assert!(is_unknown_session(on("mail", alice)));
    }
}

#[test]
fn two_requests_of_the_holder_racing_to_hold_a_session_both_pass() {
    let e = Arc::new(engine());
    let alice = Caller("alice", false);
    let results: Vec<_> = (0..8)
        .map(|_| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || outcome(&e, &call("POST", PING, alice, "raced")))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let mallory = outcome(&e, &call("GET", "", Caller("mallory", false), "raced"));
    assert!(is_unknown_session(mallory));
}

#[test]
fn callers_racing_for_one_session_leave_it_to_exactly_one() {
    let e = Arc::new(engine());
    let callers = ["a", "b", "c", "d", "e", "f"];
    let passed: Vec<bool> = callers
        .map(|g| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                let c = Caller(g, false);
                outcome(&e, &call("POST", PING, c, "contested")).is_ok()
            })
        })
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(passed.iter().filter(|p| **p).count(), 1, "{passed:?}");
}

#[test]
fn a_session_unused_past_its_keeping_is_held_by_the_next_caller() {
    let (e, clock) = engine_with(4096);
    let (alice, bob) = (Caller("alice", false), Caller("bob", false));
    assert_eq!(outcome(&e, &call("POST", PING, alice, "old")), Ok(()));
    clock.advance_ns(KEEP_MS / 2 * 1_000_000);
    assert!(is_unknown_session(outcome(
        &e,
        &call("POST", PING, bob, "old")
    )));
    // Twice the keeping after the last note, the session is no one's.
    clock.advance_ns(2 * KEEP_MS * 1_000_000);
    assert_eq!(outcome(&e, &call("POST", PING, bob, "old")), Ok(()));
    assert!(is_unknown_session(outcome(
        &e,
        &call("POST", PING, alice, "old")
    )));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the table's size, and verified or not, one caller holds its cap of sessions
    /// and no more: at most its share of the table, so that another caller always finds
    /// room for its own.
    #[test]
    fn one_caller_holds_a_bounded_number_of_sessions(
        bits in 6u32..18,
        verified in any::<bool>(),
    ) {
        let slots = 1usize << bits;
        let cap = per_caller(MAX_PER_CALLER, slots);
        prop_assert!(cap as usize * 2 <= slots / 32 || cap == 1, "a share of the table");
        let (e, _) = engine_with(slots);
        let alice = Caller("alice", verified);
        for i in 0..cap {
            let session = format!("a-{i}");
            prop_assert_eq!(outcome(&e, &call("POST", PING, alice, &session)), Ok(()), "{}", i);
        }
        // The next one is refused, as a limit is (not as an unknown session, which a client
        // would answer by opening another); the ones held still pass, and another caller is
        // not crowded out.
        let over = outcome(&e, &call("POST", PING, alice, "a-over"));
        prop_assert!(matches!(over, Err((429, _, Code::RateLimited))), "{:?}", over);
        prop_assert_eq!(outcome(&e, &call("POST", PING, alice, "a-0")), Ok(()));
        // Refused sessions take no slot, however many are asked for.
        let occupied = e.table().occupied();
        for i in 0..32 {
            let more = outcome(&e, &call("POST", PING, alice, &format!("a-more-{i}")));
            prop_assert!(matches!(more, Err((429, _, Code::RateLimited))), "{:?}", more);
        }
        prop_assert_eq!(e.table().occupied(), occupied, "refused sessions took slots");
        // Nor do another caller's sessions named by a caller: it takes one slot, its count
        // of sessions, once.
        let mallory = Caller("mallory", verified);
        for i in 0..cap {
            let named = outcome(&e, &call("POST", PING, mallory, &format!("a-{i}")));
            prop_assert!(is_unknown_session(named), "{:?}", named);
        }
        prop_assert!(e.table().occupied() <= occupied + 1);
        let bob = Caller("bob", verified);
        prop_assert_eq!(outcome(&e, &call("POST", PING, bob, "b-1")), Ok(()));
        // The refused session was not held for anyone.
        let carol = Caller("carol", verified);
        prop_assert_eq!(outcome(&e, &call("POST", PING, carol, "a-over")), Ok(()));
    }
}

#[test]
fn a_caller_in_a_large_table_holds_its_full_cap() {
    assert_eq!(per_caller(MAX_PER_CALLER, 1 << 20), MAX_PER_CALLER);
    assert_eq!(per_caller(MAX_PER_CALLER, 1 << 16), 1024);
    assert_eq!(per_caller(MAX_PER_CALLER, 1), 1);
}

#[test]
fn a_request_without_a_session_is_not_screened() {
    let e = engine();
    let mut anonymous = call("POST", PING, Caller("mallory", false), "");
    anonymous.mcp_session = None;
    assert_eq!(outcome(&e, &anonymous), Ok(()));
}
