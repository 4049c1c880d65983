//! An outside review of the gate on every MCP method: requests built to reach the server
//! past a rule (or under another name than the server acts on), list answers built to show
//! what is hidden, and inputs built to crash a reader. Every test here documents an attack
//! that holds on the current code.

use serde_json::{json, Value};
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::gate::{check, Follow, Gate, HttpCall};
use toolgate_core::engine::listing::{ListFilter, ListReport, INTERNAL_ERROR};
use toolgate_core::engine::visibility::Visibility;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::request::{parse_params, McpRequest};
use toolgate_core::mcp::sse::EventSplitter;
use toolgate_core::mcp::uri;
use toolgate_core::observing::stats::Api;
use toolgate_core::{Code, Engine, Kind, ManualClock, Policy, Subject};

const POLICY: &str = r#"
version: "1"
default: deny
hide:
  resources: ["file:///etc/shadow"]
  prompts: ["internal_*"]
resources:
  "file:///etc/*":
    action: deny
  "file:///public/*":
    limits: [{counter: reads, window: minute, max: 2, scope: grant}]
  "file:///open/*": {}
prompts:
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

fn post(body: &str) -> HttpCall<'_> {
    HttpCall {
        http_method: "POST",
        body: body.as_bytes(),
        truncated: false,
        server: None,
        subject: Subject {
            grant: Some("alice"),
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

fn read(uri: &str) -> String {
    request(json!(1), "resources/read", json!({"uri": uri}))
}

/// `Ok(code)`: forwarded (with the decision's code, if one was made); `Err((JSON-RPC error
/// code, the decision's code))`: answered in the server's place.
fn outcome_of(e: &Engine, call: &HttpCall<'_>) -> Result<Option<Code>, (i64, Option<Code>)> {
    match check(e, call) {
        Gate::Forward { decision, .. } => Ok(decision.map(|d| d.code)),
        Gate::Answer { reply, decision } => {
            let message: Value = serde_json::from_slice(&reply.body).unwrap();
            let code = message["error"]["code"].as_i64().unwrap_or(0);
            Err((code, decision.map(|d| d.code)))
        }
    }
}

fn outcome(e: &Engine, body: &str) -> Result<Option<Code>, (i64, Option<Code>)> {
    outcome_of(e, &post(body))
}

/// Refused as malformed, before any rule: never forwarded.
fn assert_refused(e: &Engine, body: &str) {
    match outcome(e, body) {
        Err((code, Some(Code::InvalidRequest))) if code == -32600 || code == -32602 => {}
        other => panic!("{body}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn keys_a_lenient_server_reads_as_mcp_s_are_refused_however_they_are_spelled() {
    let e = engine(POLICY);
    for body in [
        // Go's encoding/json binds "URI", "Uri", "uriſ"... to `uri` (and keeps the last).
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"URI":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///open/a","URI":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///open/a","\u0055RI":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///open/a","ur\u0131":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///open/a","urı":"file:///etc/shadow"}}"#,
        // Escapes make a duplicate, which decoders resolve first-wins or last-wins.
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///open/a","\u0075ri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///open/a"},"params":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///open/a"},"paramſ":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","paramſ":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x-vendor/exec","Method":"resources/read","params":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","ID":1,"method":"resources/read","params":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","ıd":1,"method":"resources/read","params":{"uri":"file:///etc/shadow"}}"#,
        // Params that are no object: a JSON-RPC decoder takes them, an MCP one does not.
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":["file:///etc/shadow"]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":"file:///etc/shadow"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":["file:///etc/shadow"]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":{"href":"file:///etc/shadow"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":null}}"#,
        // Prompts: the name, its case variants, arguments that are no object.
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"ok","Name":"internal_x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"nAme":"internal_x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"ok","arguments":["x"]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"ok","Arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":""}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":7}}"#,
        // Methods that differ from MCP's by case, in ASCII or by Unicode's simple folding.
        r#"{"jsonrpc":"2.0","id":1,"method":"Resources/Read","params":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"reſources/read","params":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/subſcribe","params":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/GET","params":{"name":"internal_x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"Completion/Complete","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"Subscriptions/Listen","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tasks/GET","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"Ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/\u004cist"}"#,
        r#"{"jsonrpc":"2.0","method":"Notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","method":"notificationſ/initialized"}"#,
        // Ids no MCP peer sends.
        r#"{"jsonrpc":"2.0","id":null,"method":"resources/read","params":{"uri":"file:///open/a"}}"#,
        r#"{"jsonrpc":"2.0","id":1.0,"method":"resources/read","params":{"uri":"file:///open/a"}}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"resources/read","params":{"uri":"file:///open/a"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"resources/read","params":{"uri":"file:///open/a"}}"#,
        // One message only.
        r#"[{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///open/a"}}]"#,
    ] {
        match outcome(&e, body) {
            Err((code, Some(Code::InvalidRequest))) => {
                assert!(code == -32600 || code == -32602 || code == -32700, "{body}");
            }
            other => panic!("{body}: expected a refusal, got {other:?}"),
        }
    }
    // An escape alone is the key it spells, to every decoder: read as that key.
    let escaped = r#"{"jsonrpc":"2.0","id":1,"method":"r\u0065sources/read","params":{"\u0075ri":"file:///etc/shadow"}}"#;
    assert_eq!(outcome(&e, escaped), Err((-32002, Some(Code::Hidden))));
    let escaped = r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:\/\/\/etc\/shadow"}}"#;
    assert_eq!(outcome(&e, escaped), Err((-32002, Some(Code::Hidden))));
}

#[test]
fn notifications_and_answers_pass_only_as_plumbing() {
    let e = engine(POLICY);
    let note = |method: &str| json!({"jsonrpc": "2.0", "method": method}).to_string();
    // A notification passes undecided: a server answers none and acts on none it does not
    // know (the Go server answers 202 and does nothing).
    for method in [
        "notifications/initialized",
        "notifications/../tools/call",
        "notifications/../resources/read",
        "notifications/",
    ] {
        assert_eq!(outcome(&e, &note(method)), Ok(None), "{method}");
    }
    // With an id it is a request: decided by its method's name.
    for method in ["notifications/../tools/call", "notifications/initialized"] {
        let body = request(json!(1), method, json!({}));
        assert_eq!(
            outcome(&e, &body),
            Err((-32001, Some(Code::DefaultDeny))),
            "{method}"
        );
    }
    // A method under notifications/ only after folding is a case variant: refused.
    assert_refused(&e, &note("NOTIFICATIONS/x"));
    // A call without an id is refused; other requests without one are still decided.
    let call = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "t"}});
    assert_refused(&e, &call.to_string());
    for (method, params, code) in [
        (
            "resources/read",
            json!({"uri": "file:///etc/shadow"}),
            Code::Hidden,
        ),
        (
            "resources/read",
            json!({"uri": "file:///etc/hosts"}),
            Code::RuleDeny,
        ),
        ("prompts/get", json!({"name": "internal_x"}), Code::Hidden),
        ("x-vendor/other", json!({}), Code::DefaultDeny),
    ] {
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string();
        assert_eq!(outcome(&e, &body).unwrap_err().1, Some(code), "{body}");
    }
    // A client's answer passes; an answer that also names a method, or no id, is refused.
    let answer = r#"{"jsonrpc":"2.0","id":"s-1","result":{"uri":"file:///etc/shadow"}}"#;
    assert_eq!(outcome(&e, answer), Ok(None));
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","result":{},"params":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"},"method":"x-vendor/exec"}"#,
        r#"{"jsonrpc":"2.0","result":{},"params":{"uri":"file:///etc/shadow"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"Method":"resources/read"}"#,
    ] {
        assert_refused(&e, body);
    }
}

#[test]
fn a_method_that_is_not_mcp_s_by_more_than_case_is_decided_by_its_own_name() {
    let e = engine(POLICY);
    // Look-alikes (a trailing space, a NUL, a fullwidth letter, a dot segment) are other
    // methods to every server: decided as themselves, and under `default: deny` denied.
    for method in [
        "resources/read ",
        " resources/read",
        "resources/read\u{0}",
        "\u{ff52}esources/read",
        "resources/./read",
        "resources//read",
        "tools/call/",
        "x-vendor/exec ",
        "X-Vendor/Exec",
    ] {
        let body = request(json!(1), method, json!({"uri": "file:///etc/shadow"}));
        assert_eq!(
            outcome(&e, &body),
            Err((-32001, Some(Code::DefaultDeny))),
            "{method:?}"
        );
    }
    // A policy that allows every other method lets them through, named as what they are.
    let e = engine(
        r#"{"version": "1", "hide": {"resources": ["file:///etc/shadow"]},
            "methods": {"*": {}}}"#,
    );
    let body = request(
        json!(1),
        "resources/read ",
        json!({"uri": "file:///etc/shadow"}),
    );
    let Gate::Forward { decision, .. } = check(&e, &post(&body)) else {
        panic!("allowed as a method")
    };
    assert_eq!(decision.unwrap().code, Code::Allowed);
    // ...and never the method it looks like.
    assert_eq!(
        outcome(&e, &read("file:///etc/shadow")),
        Err((-32002, Some(Code::Hidden)))
    );
}

#[test]
fn a_completion_is_decided_by_what_its_ref_s_type_names() {
    let e = engine(POLICY);
    let complete = |reference: Value| {
        request(
            json!(4),
            "completion/complete",
            json!({"ref": reference, "argument": {"name": "a", "value": "b"}}),
        )
    };
    // A prompt ref that also carries a URI is the prompt (as the SDKs read it, by `type`).
    let both = complete(json!({"type": "ref/prompt", "name": "internal_x",
                                "uri": "file:///open/{x}"}));
    assert_eq!(outcome(&e, &both), Err((-32602, Some(Code::Hidden))));
    let both = complete(json!({"type": "ref/resource", "uri": "file:///etc/{x}",
                                "name": "ok"}));
    assert_eq!(outcome(&e, &both), Err((-32001, Some(Code::RuleDeny))));
    let both = complete(json!({"type": "ref/prompt", "name": "ok", "uri": "file:///etc/shadow"}));
    assert_eq!(outcome(&e, &both), Ok(Some(Code::Allowed)));
    for reference in [
        json!({"type": "ref/resource", "name": "ok"}),
        json!({"type": "ref/resource", "uri": "FILE:///open/{x}"}),
        json!({"type": "ref/resource", "uri": "file:///open/../etc/{x}"}),
        json!({"type": "ref/prompt", "uri": "file:///open/{x}"}),
        json!({"type": "ref/prompt", "name": ""}),
        json!({"type": "Ref/Prompt", "name": "ok"}),
        json!({"type": "ref/tool", "name": "ok"}),
        json!({"name": "ok"}),
        json!({"type": "ref/prompt", "Type": "ref/resource", "name": "ok"}),
        json!({"type": "ref/prompt", "name": "ok", "URI": "file:///etc/{x}"}),
        json!([{"type": "ref/prompt", "name": "ok"}]),
        json!("ref/prompt"),
    ] {
        assert_refused(&e, &complete(reference));
    }
    for params in [
        json!({}),
        json!({"Ref": {"type": "ref/prompt", "name": "internal_x"}}),
        json!({"ref": {"type": "ref/prompt", "name": "ok"},
               "reF": {"type": "ref/prompt", "name": "internal_x"}}),
    ] {
        assert_refused(&e, &request(json!(1), "completion/complete", params));
    }
}

#[test]
fn a_listen_names_its_resources_only_as_strings_in_their_one_spelling() {
    let e = engine(POLICY);
    let listen = |notifications: Value| {
        request(
            json!(7),
            "subscriptions/listen",
            json!({"notifications": notifications}),
        )
    };
    for notifications in [
        json!({"resourceSubscriptions": [5]}),
        json!({"resourceSubscriptions": [null]}),
        json!({"resourceSubscriptions": [["file:///etc/shadow"]]}),
        json!({"resourceSubscriptions": [{"uri": "file:///etc/shadow"}]}),
        json!({"resourceSubscriptions": ["file:///open/a", true]}),
        json!({"resourceSubscriptions": "file:///etc/shadow"}),
        json!({"resourceSubscriptions": {"0": "file:///etc/shadow"}}),
        json!({"resourceSubscriptions": ["file:///open/a", "file:///etc/./shadow"]}),
        json!({"resourceSubscriptions": ["file:///open/a", ""]}),
        json!({"resourcesubscriptions": ["file:///etc/shadow"]}),
        json!({"resourceSubscriptions": [], "resourceſubscriptions": ["file:///etc/shadow"]}),
        json!(["file:///etc/shadow"]),
    ] {
        assert_refused(&e, &listen(notifications));
    }
    let params = json!({"Notifications": {"resourceSubscriptions": ["file:///etc/shadow"]}});
    assert_refused(&e, &request(json!(7), "subscriptions/listen", params));
    // The hidden one among allowed ones decides, as a resource that does not exist.
    let mixed = listen(json!({"resourceSubscriptions": [
        "file:///open/a", "file:///etc/shadow", "file:///open/b"]}));
    assert_eq!(outcome(&e, &mixed), Err((-32002, Some(Code::Hidden))));
    // An empty list asks nothing: plumbing. Without an id it is still decided.
    assert_eq!(
        outcome(&e, &listen(json!({"resourceSubscriptions": []}))),
        Ok(None)
    );
    let silent = json!({"jsonrpc": "2.0", "method": "subscriptions/listen",
        "params": {"notifications": {"resourceSubscriptions": ["file:///etc/hosts"]}}});
    assert_eq!(
        outcome(&e, &silent.to_string()).unwrap_err().1,
        Some(Code::RuleDeny)
    );
    // Many entries: each is decided, none crashes, and the limit counts each read.
    let many: Vec<String> = (0..5000).map(|i| format!("file:///open/{i}")).collect();
    let body = listen(json!({ "resourceSubscriptions": many }));
    assert_eq!(outcome(&e, &body), Ok(Some(Code::Allowed)));
    let three = listen(json!({"resourceSubscriptions": [
        "file:///public/a", "file:///public/b", "file:///public/c"]}));
    assert_eq!(outcome(&e, &three).unwrap_err().1, Some(Code::RateLimited));
    // ...and gives back what the two before the third took.
    let two = listen(json!({"resourceSubscriptions": ["file:///public/a", "file:///public/b"]}));
    assert_eq!(outcome(&e, &two), Ok(Some(Code::Allowed)));
}

#[test]
fn other_spellings_of_a_file_uri_are_refused() {
    let e = engine(POLICY);
    for uri in [
        // An authority in a file URI: userinfo, an empty one, an address, a port.
        "file://user@/etc/shadow",
        "file://@/etc/shadow",
        "file://user:pw@localhost/etc/shadow",
        "file://127.0.0.1/etc/shadow",
        "file://[::1]/etc/shadow",
        "file://:0/etc/shadow",
        "file://./etc/shadow",
        "file://%2F/etc/shadow",
        "file://localhost./etc/shadow",
        "file:////etc/shadow",
        "file://///etc/shadow",
        // Dot segments, written or escaped; empty segments; separators escaped.
        "file:///open/../etc/shadow",
        "file:///open/..",
        "file:///open/.",
        "file:/open/../etc/shadow",
        "file:..",
        "file:///open/%2E%2E/etc/shadow",
        "file:///open/.%2E/etc/shadow",
        "file:///open/%2e%2e/etc/shadow",
        "file:///open/%2E/x",
        "file:///open//etc",
        "file:///open/..%2Fetc/shadow",
        "file:///open/..%5Cetc/shadow",
        "file:///open/..%5cetc/shadow",
        "file:///open/%252E%252E/etc/shadow",
        "file:///open/x%",
        "file:///open/x%4",
        "file:///open/x%G0",
        "file:///open/x%é0",
        // Escapes of characters that need none: the same URI unescaped.
        "file:///%65tc/shadow",
        "file:///etc/sha%64ow",
        "file:///open/%7E",
        "file:///open/%7e",
        "file:///open/%5F",
        "file:///open/%2D",
        // Backslashes, whitespace, controls (Unicode's too).
        "file:///open\\..\\etc\\shadow",
        "file:///open/..\\etc/shadow",
        "file:///etc/shadow\t",
        "file:///etc/sh adow",
        "file:///etc/sh\u{a0}adow",
        "file:///etc/sh\u{2028}adow",
        "file:///etc/sh\u{3000}adow",
        "file:///etc/sh\u{85}adow",
        "file:///etc/sh\u{7f}adow",
        "file:///etc/sh\u{0}adow",
        // The scheme, folded by every reader; none at all.
        "FILE:///etc/shadow",
        "fIle:///etc/shadow",
        "File:/etc/shadow",
        "/etc/shadow",
        "//etc/shadow",
        ":///etc/shadow",
        "1file:///etc/shadow",
        "fi le:///etc/shadow",
        "fi_le:///etc/shadow",
        "",
    ] {
        assert_refused(&e, &read(uri));
    }
}

#[test]
fn other_spellings_of_an_http_uri_are_refused() {
    let e = engine(r#"{"version": "1", "resources": {"*": {}}}"#);
    for uri in [
        "https://API.example.com/x",
        "https://api.Example.com/x",
        "https://user@API.example.com/x",
        "HTTPS://api.example.com/x",
        "https://api.example.com:443/x",
        "http://api.example.com:80/x",
        "http://api.example.com:080/x",
        "https://api.example.com:0443/x",
        "http://api.example.com:/x",
        "https://[::1]:/x",
        "https://[::A]/x",
        "https://[::1]:443/x",
        "https://api.example.com/a/../b",
        "https://api.example.com//b",
        "https://api.example.com/%61",
        "https://api.example.com\\@evil.example/",
    ] {
        assert_refused(&e, &read(uri));
    }
    // Another port, or another scheme's default, is another resource: decided as written.
    for uri in [
        "https://api.example.com:8443/x",
        "http://api.example.com:443/x",
        "https://[::1]:8080/x",
        "https://api.example.com/x?a=1",
    ] {
        assert_eq!(outcome(&e, &read(uri)), Ok(Some(Code::Allowed)), "{uri}");
    }
}

#[test]
fn a_file_uri_has_no_query_and_no_uri_a_fragment() {
    let e = engine(POLICY);
    // A file server reads neither: each would be the file without them, so each is refused,
    // whatever follows (dot segments, an authority's look).
    for uri in [
        "file:///open/x?/../../etc/shadow",
        "file:///open/x#/../../etc/shadow",
        "file:///open/x?",
        "file:///open/x#",
    ] {
        assert_refused(&e, &read(uri));
    }
    assert!(uri::check("file://?x@localhost/etc/shadow").is_err());
    assert!(uri::check("file://#@localhost/").is_err());
    assert!(uri::check("file://localhost?x").is_err());
}

#[test]
fn no_uri_crashes_the_check() {
    let long_path = format!("file:///open/{}", "a/".repeat(200_000));
    let many_escapes = format!("file:///open/{}", "%20".repeat(100_000));
    let bad_tail = format!("file:///open/{}%", "%20".repeat(100_000));
    let at_signs = format!("https://{}api.example.com/", "@".repeat(100_000));
    let colons = format!("https://[{}]/", ":".repeat(100_000));
    let odd = [
        "file:",
        "file:/",
        "file://",
        "file:?",
        "file:#",
        "a:",
        "a:%",
        "a:%%",
        "a:%F",
        "a:%\u{e9}",
        "a:%\u{10ffff}",
        "https://[",
        "https://[::1",
        "https://]:80/",
        "https://@:",
        "https://@:/",
        "https://[]:",
        "http://:80",
        "http://:",
        "file:%2F",
        "x:.",
        "x:/./",
        "x:{a}/{b}",
        "\u{feff}file:///a",
        "file:///\u{200b}",
    ];
    for uri in [&long_path, &many_escapes, &bad_tail, &at_signs, &colons]
        .into_iter()
        .map(String::as_str)
        .chain(odd)
    {
        let _ = uri::check(uri);
        let body = read(uri);
        let _ = check(&engine(POLICY), &post(&body));
    }
    assert!(
        uri::check(&long_path).is_err(),
        "a trailing slash in a file URI is the file without it"
    );
    assert!(uri::check(&bad_tail).is_err());
}

#[test]
fn the_mcp_headers_must_mirror_the_body() {
    let e = engine(POLICY);
    let body = read("file:///etc/shadow");
    let with = |method: Option<&'static str>, name: Option<&'static str>| {
        let mut call = post(&body);
        call.mcp_method = method;
        call.mcp_name = name;
        outcome_of(&e, &call)
    };
    // A header that names an allowed resource does not carry the hidden one through.
    for (method, name) in [
        (Some("resources/read"), Some("file:///open/a")),
        (Some("x-vendor/exec"), None),
        (Some("Resources/Read"), None),
        (None, Some("file:///etc/shadow/")),
    ] {
        assert_eq!(
            with(method, name),
            Err((-32600, Some(Code::InvalidRequest))),
            "{method:?} {name:?}"
        );
    }
    assert_eq!(
        with(Some("resources/read"), Some("file:///etc/shadow")),
        Err((-32002, Some(Code::Hidden)))
    );
}

#[test]
fn a_read_whose_rule_counts_callers_is_followed_however_it_is_sent() {
    let e = engine(POLICY);
    let follow = |body: &str| match check(&e, &post(body)) {
        Gate::Forward { follow, .. } => follow,
        Gate::Answer { .. } => panic!("{body} was answered"),
    };
    // Within the limit of two: any id a client may choose.
    for id in [json!("r-1"), json!(-5)] {
        let body = request(
            id.clone(),
            "resources/read",
            json!({"uri": "file:///public/a"}),
        );
        assert_eq!(follow(&body), Follow::Private { id });
    }
    // Subscribing reads nothing back: not followed.
    let sub = request(
        json!(2),
        "resources/subscribe",
        json!({"uri": "file:///public/a"}),
    );
    let Gate::Forward { follow, .. } = check(&engine(POLICY), &post(&sub)) else {
        panic!("allowed")
    };
    assert_eq!(follow, Follow::Nothing);
}

#[test]
fn the_gateway_s_params_are_read_as_strictly_as_a_body() {
    for (method, params) in [
        ("resources/read", &br#"["file:///etc/shadow"]"#[..]),
        (
            "resources/read",
            br#"{"uri":"file:///a","URI":"file:///etc/shadow"}"#,
        ),
        ("resources/read", br#"{"uri":"file:/open/../etc/shadow"}"#),
        ("Resources/Read", br#"{"uri":"file:///etc/shadow"}"#),
        ("prompts/get", br#"{"name":"a","name":"internal_x"}"#),
        ("prompts/get", br#"{"name":"a"} x"#),
        ("completion/complete", br#"{"ref":{"type":"ref/prompt"}}"#),
    ] {
        assert!(parse_params(method, Some(params)).is_err(), "{method}");
    }
    let read = parse_params(
        "resources/read",
        Some(br#"{"\u0075ri":"file:///etc/shadow"}"#),
    );
    assert!(matches!(
        read,
        Ok(McpRequest::Named { kind: Kind::Resource, ref name, .. }) if name == "file:///etc/shadow"
    ));
}

/// A list answer as the filter passes it on: its one message.
fn filtered_text(listed: Listed, body: &str, per_subject: bool) -> (Value, ListReport) {
    let e = engine(POLICY);
    let policy = e.policy();
    let visible = |l: Listed, name: &str, _: &ListedTool<'_>| -> Visibility {
        let v = policy.visibility(l.kind(), name, None, Subject::default(), None);
        Visibility {
            per_subject: per_subject || v.per_subject,
            ..v
        }
    };
    let mut f = ListFilter::new(Some(json!(1)), Some(listed), visible);
    let out = f.feed(body.as_bytes(), true);
    let events = EventSplitter::default().feed(&out, true).unwrap();
    let data = events.into_iter().find_map(|e| e.data).unwrap();
    (serde_json::from_slice(&data).unwrap(), f.report)
}

#[test]
fn a_hidden_resource_or_prompt_is_not_listed_under_an_escape() {
    for (listed, body) in [
        (
            Listed::Resources,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///etc/\u0073hadow","name":"s"},{"uri":"file:///open/a","name":"a"}]}}"#,
        ),
        (
            Listed::Resources,
            r#"{"jsonrpc":"2.0","id":1,"result":{"re\u0073ources":[{"\u0075ri":"file:\/\/\/etc\/shadow","name":"s"},{"uri":"file:///open/a","name":"a"}]}}"#,
        ),
        (
            Listed::ResourceTemplates,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"file:///\u0065tc/{name}","name":"s"},{"uriTemplate":"file:///open/a","name":"a"}]}}"#,
        ),
        (
            Listed::Prompts,
            r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"internal\u005faudit"},{"name":"open/a"}]}}"#,
        ),
    ] {
        let (message, report) = filtered_text(listed, body, false);
        let text = message.to_string();
        assert!(
            !text.contains("shadow") && !text.contains("etc") && !text.contains("internal"),
            "{text}"
        );
        assert_eq!((report.removed, report.shown), (1, 1), "{body}");
        assert!(text.contains("open/a"), "{text}");
    }
}

#[test]
fn a_list_a_client_could_read_otherwise_is_refused() {
    for (listed, result) in [
        // A key a case-insensitive client reads as the entry's name.
        (
            Listed::Resources,
            r#"{"resources":[{"uri":"file:///open/a","URI":"file:///etc/shadow"}]}"#,
        ),
        (
            Listed::Resources,
            r#"{"resources":[{"uri":"file:///open/a","urı":"file:///etc/shadow"}]}"#,
        ),
        (
            Listed::Resources,
            r#"{"resources":[{"uri":"file:///open/a","Uri":"file:///etc/shadow"}]}"#,
        ),
        (
            Listed::ResourceTemplates,
            r#"{"resourceTemplates":[{"uriTemplate":"file:///open/{a}","uritemplate":"file:///etc/{a}"}]}"#,
        ),
        (
            Listed::Prompts,
            r#"{"prompts":[{"name":"ok","NAME":"internal_x"}]}"#,
        ),
        // A duplicate, plain or escaped.
        (
            Listed::Resources,
            r#"{"resources":[{"uri":"file:///open/a","u\u0072i":"file:///etc/shadow"}]}"#,
        ),
        (
            Listed::Prompts,
            r#"{"prompts":[{"name":"ok"}],"prompts":[{"name":"internal_x"}]}"#,
        ),
        // The list's member in another case, or two lists.
        (
            Listed::Prompts,
            r#"{"Prompts":[{"name":"internal_x"}],"prompts":[]}"#,
        ),
        (
            Listed::Resources,
            r#"{"resources":[],"resourceTemplates":[{"uriTemplate":"file:///etc/{x}"}]}"#,
        ),
        // Names that are no string, entries that are no object.
        (
            Listed::Resources,
            r#"{"resources":[{"uri":["file:///etc/shadow"]}]}"#,
        ),
        (Listed::Resources, r#"{"resources":["file:///etc/shadow"]}"#),
        (
            Listed::Prompts,
            r#"{"prompts":{"0":{"name":"internal_x"}}}"#,
        ),
        // One name with two definitions, however escaped.
        (
            Listed::Prompts,
            r#"{"prompts":[{"name":"ok","description":"a"},{"name":"o\u006b","description":"b"}]}"#,
        ),
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#);
        let (message, report) = filtered_text(listed, &body, false);
        assert_eq!(message["error"]["code"], INTERNAL_ERROR, "{body}");
        assert!(report.refused.is_some(), "{body}");
        let text = message.to_string();
        assert!(
            !text.contains("shadow") && !text.contains("internal_x"),
            "{text}"
        );
    }
}

#[test]
fn a_list_that_depends_on_the_caller_is_made_private_however_its_scope_is_written() {
    for scope in [
        r#""public""#,
        r#""p\u0075blic""#,
        r#""PUBLIC""#,
        r#""""#,
        r#"null"#,
        r#"7"#,
        r#"{"private":true}"#,
        r#""private ""#,
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"prompts":[{{"name":"ok"}}],"cacheScope":{scope}}}}}"#
        );
        let (message, _) = filtered_text(Listed::Prompts, &body, true);
        assert_eq!(message["result"]["cacheScope"], "private", "{scope}");
    }
    // Written as "private", escaped or not: what every client reads as private.
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[],"cacheScope":"priv\u0061te"}}"#;
    let (message, _) = filtered_text(Listed::Prompts, body, true);
    assert_eq!(message["result"]["cacheScope"], "private");
    // A twin of the key is refused.
    for twin in ["CacheScope", "cacheſcope", "cachescope"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"prompts":[],"cacheScope":"private","{twin}":"public"}}}}"#
        );
        let (message, _) = filtered_text(Listed::Prompts, &body, true);
        assert_eq!(message["error"]["code"], INTERNAL_ERROR, "{twin}");
    }
}

#[test]
fn a_private_read_s_answer_is_private_whatever_comes_with_it() {
    let nobody = |_: Listed, _: &str, _: &ListedTool<'_>| -> Visibility { unreachable!() };
    let private = |body: &str| {
        let mut f = ListFilter::new(Some(json!(1)), None, nobody).private();
        let out = f.feed(body.as_bytes(), true);
        let events = EventSplitter::default().feed(&out, true).unwrap();
        events
            .into_iter()
            .filter_map(|e| e.data)
            .map(|d| serde_json::from_slice::<Value>(&d).unwrap())
            .collect::<Vec<_>>()
    };
    // Escaped key, upper-case value, a stream with a notification first.
    let out =
        private(r#"{"jsonrpc":"2.0","id":1,"result":{"contents":[],"c\u0061cheScope":"public"}}"#);
    assert_eq!(out[0]["result"]["cacheScope"], "private");
    let out = private(r#"{"jsonrpc":"2.0","id":1,"result":{"contents":[],"cacheScope":"PUBLIC"}}"#);
    assert_eq!(out[0]["result"]["cacheScope"], "private");
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                          "params": {"progressToken": 1, "progress": 1}});
    let answer = json!({"jsonrpc": "2.0", "id": 1,
                        "result": {"contents": [], "cacheScope": "public"}});
    let second = json!({"jsonrpc": "2.0", "id": 1,
                        "result": {"contents": [{"uri": "x:y", "text": "t"}], "cacheScope": "public"}});
    let out = private(&format!(
        "data: {progress}\n\ndata: {answer}\n\ndata: {second}\n\n"
    ));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1]["result"]["cacheScope"], "private");
    // A twin of the key, at any case, is refused.
    for twin in ["CACHESCOPE", "cacheſcope"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"contents":[],"cacheScope":"private","{twin}":"public"}}}}"#
        );
        let out = private(&body);
        assert_eq!(out[0]["error"]["code"], INTERNAL_ERROR, "{twin}");
    }
}
