//! One resource, many spellings: every URI that names a resource otherwise is judged as that
//! resource, in calls, lists, patterns and `methods` rules.
//!
//! What an outside review of every-method decisions found, each now a test of the class it
//! opened: URIs that name one resource in several spellings (a `file:` without authority, a
//! trailing `/`, query or fragment, raw and escaped characters, hosts and addresses written
//! otherwise), lists showing entries in such spellings, resource patterns and `methods` rules
//! that could never apply.

use serde_json::json;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::engine::gate::{check, Gate, HttpCall};
use toolgate_core::observing::stats::Api;
use toolgate_core::{Engine, ManualClock, Policy, Subject};

fn engine(policy: &str) -> Engine {
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let policy = Policy::from_json_str(policy).expect("valid policy");
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

fn read(uri: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}})
        .to_string()
}

/// The URIs of `uris` that the gate forwards (each should have been refused or denied).
fn forwarded(e: &Engine, uris: &[&str]) -> Vec<String> {
    uris.iter()
        .filter(|uri| {
            let body = read(uri);
            matches!(check(e, &post(&body)), Gate::Forward { .. })
        })
        .map(|uri| uri.to_string())
        .collect()
}

/// The docs' own advice ("every resource, as before") with the docs' own hide and deny.
const EVERY_RESOURCE_BUT: &str = r#"{"version": "1", "default": "deny",
  "hide": {"resources": ["file:///etc/shadow"]},
  "resources": {"*": {}, "file:///etc/*": {"action": "deny"}}}"#;

/// The same resource as its one spelling, `file:///etc/shadow` (hidden) or `file:///etc/hosts`
/// (denied), to Go's url.Parse + path.Clean (tests/go_mcp_server), Python's urlparse and
/// WHATWG URL (Node's `new URL`, pydantic's AnyUrl): `file:` without an authority.
#[test]
fn finding_1_a_file_uri_without_authority_escapes_every_file_rule() {
    let e = engine(EVERY_RESOURCE_BUT);
    // The one spelling is hidden or denied...
    assert!(forwarded(&e, &["file:///etc/shadow", "file:///etc/hosts"]).is_empty());
    // ...the others are not refused.
    let escaped = forwarded(
        &e,
        &[
            "file:/etc/shadow", // Go: Path /etc/shadow; Python urlparse: /etc/shadow; WHATWG: file:///etc/shadow
            "file:/etc/hosts",  // past the `file:///etc/*` deny rule too
            "file:etc/shadow",  // WHATWG (Node URL, pydantic AnyUrl): file:///etc/shadow
        ],
    );
    assert_eq!(escaped, Vec::<String>::new());
}

/// Exact rules (and `hide` entries) on a file are escaped by spellings every file server
/// reads as that file: a trailing slash (Go path.Clean, os.path.normpath, Node
/// path.resolve), an empty or any query or fragment (outside the path to every URL parser).
#[test]
fn finding_2_a_trailing_slash_query_or_fragment_escapes_an_exact_rule() {
    let e = engine(
        r#"{"version": "1", "hide": {"resources": ["file:///etc/shadow"]},
            "resources": {"*": {}, "file:///etc/hosts": {"action": "deny"}}}"#,
    );
    assert!(forwarded(&e, &["file:///etc/shadow", "file:///etc/hosts"]).is_empty());
    let escaped = forwarded(
        &e,
        &[
            "file:///etc/shadow/",
            "file:///etc/shadow?",
            "file:///etc/shadow?x=1",
            "file:///etc/shadow#",
            "file:///etc/shadow#x",
            "file:///etc/hosts/",
            "file:///etc/hosts?raw",
        ],
    );
    assert_eq!(escaped, Vec::<String>::new());
}

/// A character that is not ASCII (or one of `"<>\`{}`) has two spellings that pass the check,
/// raw and percent-escaped: Go's url.Parse decodes the escape, WHATWG encodes the raw one
/// (`new URL("file:///café").href` is `file:///caf%C3%A9`).
#[test]
fn finding_3_escaped_and_raw_non_ascii_are_two_spellings() {
    // A pattern is written as requests must be: escaped. A raw one would never match them.
    for raw in ["file:///home/josé/*", "file:///home/josé/id"] {
        let doc = format!(r#"{{"version": "1", "resources": {{"{raw}": {{"action": "deny"}}}}}}"#);
        let err = Policy::from_json_str(&doc).expect_err(raw).to_string();
        assert!(err.contains("percent-encoded"), "{err}");
    }
    let e = engine(
        r#"{"version": "1", "resources": {"*": {},
            "file:///home/jos%C3%A9/*": {"action": "deny"},
            "file:///srv/a%7Bb%7D/*": {"action": "deny"}}}"#,
    );
    // The raw spellings are refused; the escaped ones meet the rules.
    let uris = [
        "file:///home/josé/.ssh/id_rsa",
        "file:///srv/a{b}/x",
        "file:///home/jos%C3%A9/.ssh/id_rsa",
        "file:///srv/a%7Bb%7D/x",
    ];
    assert_eq!(forwarded(&e, &uris), Vec::<String>::new());
}

/// http(s) URIs: spellings of one host or URL that WHATWG (Node, pydantic AnyUrl) and every
/// HTTP client read alike, none refused: the host by IDNA mapping (fullwidth letters,
/// non-ASCII upper case), an IPv4 address in another notation, an IPv6 address written
/// otherwise, an empty path (`/`), userinfo, and the special schemes ws/wss/ftp folding
/// their host's case.
#[test]
fn finding_4_http_hosts_and_paths_have_other_spellings() {
    let e = engine(
        r#"{"version": "1", "resources": {"*": {},
            "https://api.example.com/admin/*": {"action": "deny"},
            "https://api.example.com/": {"action": "deny"},
            "http://169.254.169.254/*": {"action": "deny"},
            "http://[[]::1]/*": {"action": "deny"},
            "ftp://files.example.com/*": {"action": "deny"}}}"#,
    );
    assert!(forwarded(
        &e,
        &[
            "https://api.example.com/admin/x",
            "https://api.example.com/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/x",
            "ftp://files.example.com/x",
        ]
    )
    .is_empty());
    let escaped = forwarded(
        &e,
        &[
            "https://\u{ff41}pi.example.com/admin/x", // fullwidth a: IDNA maps it to "a"
            "https://api.example.com./admin/x",       // the root's dot: the same host to DNS
            "https://user@api.example.com/admin/x",   // userinfo: the same resource
            "https://api.example.com",                // WHATWG: https://api.example.com/
            "http://2852039166/latest/meta-data/",    // 169.254.169.254
            "http://169.254.43518/latest/meta-data/", // 169.254.169.254
            "http://0xa9.0xfe.0xa9.0xfe/latest/",     // 169.254.169.254
            "http://[0:0::1]/x",                      // [::1]
            "ftp://FILES.example.com/x",              // special scheme: host folded
        ],
    );
    assert_eq!(escaped, Vec::<String>::new());
}

/// An IPv6 host in a `resources` key is read as a glob's character class: `[::1]` is one
/// character, ':' or '1', so the rule never matches the URI its author wrote, and the policy
/// loads without a word (the docs warn of `?` only). The request for it then falls to `*`.
#[test]
fn finding_5_an_ipv6_host_in_a_resource_key_is_a_character_class() {
    let doc =
        r#"{"version": "1", "resources": {"*": {}, "http://[::1]:8080/*": {"action": "deny"}}}"#;
    let err = Policy::from_json_str(doc)
        .expect_err("a class of characters")
        .to_string();
    assert!(err.contains("[[]"), "{err}");
    // Written as the error says, the rule meets the URI it means.
    let e = engine(
        r#"{"version": "1", "resources": {"*": {},
            "http://[[]::1]:8080/*": {"action": "deny"}}}"#,
    );
    assert_eq!(
        forwarded(&e, &["http://[::1]:8080/admin"]),
        Vec::<String>::new()
    );
}

/// A list shows a hidden file its server spells otherwise (Java's `File.toURI()` writes
/// `file:/etc/shadow`; a directory-style server `file:///etc/shadow/`), and the gate then
/// forwards its read: the list filter judges the text as given, without the one-spelling
/// check the gate applies, so it shows even entries whose every read the gate refuses
/// (`FILE:///etc/shadow`).
#[test]
fn finding_1b_a_list_shows_a_hidden_file_its_server_spells_otherwise() {
    use toolgate_core::definitions::listed::ListedTool;
    use toolgate_core::engine::listing::ListFilter;
    use toolgate_core::engine::visibility::Visibility;
    use toolgate_core::kind::Listed;
    use toolgate_core::mcp::sse::EventSplitter;
    let e = engine(EVERY_RESOURCE_BUT);
    let policy = e.policy();
    let visible = |l: Listed, name: &str, _: &ListedTool<'_>| -> Visibility {
        policy.visibility(l.kind(), name, None, Subject::default(), None)
    };
    let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Resources), visible);
    let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"resources": [
        {"uri": "file:/etc/shadow", "name": "shadow"},
        {"uri": "FILE:///etc/shadow", "name": "shadow"},
        {"uri": "file:///public/a", "name": "a"}]}});
    let out = f.feed(body.to_string().as_bytes(), true);
    let events = EventSplitter::default().feed(&out, true).unwrap();
    let data = events.into_iter().find_map(|e| e.data).unwrap();
    let message: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert!(!message.to_string().contains("shadow"), "{message}");
}

/// `methods` rules for methods that are never decided by their name (those decided as a
/// resource, prompt or tool, and the plumbing that passes) load without a word, and never
/// apply: `methods: {resources/subscribe: {action: deny}}` (what agentgateway's docs have a
/// policy write for subscribing) leaves every subscription behind Envoy allowed wherever a
/// read is. The docs make a `resources` key that could never match a policy error.
#[test]
fn finding_6_a_methods_rule_that_can_never_apply_loads_silently() {
    // What it means behind Envoy: the deny never applies.
    let e = engine(
        r#"{"version": "1", "resources": {"*": {}},
            "methods": {"resources/subscribe": {"action": "deny"}}}"#,
    );
    let sub = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe",
                     "params": {"uri": "file:///etc/hosts"}})
    .to_string();
    assert!(!matches!(check(&e, &post(&sub)), Gate::Forward { .. }));
    let rule = |method: &str| {
        let policy =
            format!(r#"{{"version": "1", "methods": {{"{method}": {{"action": "deny"}}}}}}"#);
        Policy::from_json_str(&policy)
    };
    for method in [
        "resources/read",
        "prompts/get",
        "subscriptions/listen",
        "tools/call",
        "tools/list",
        "resources/list",
        "ping",
        "initialize",
        "server/discover",
        "notifications/cancelled",
    ] {
        assert!(
            rule(method).is_err(),
            "{method}: a rule that never applies loaded"
        );
    }
    // These are decided by what they name and by a methods rule as well (agentgateway, which
    // hands over no params for them, by the rule alone); a glob over notifications may meet
    // one sent with an id.
    for method in [
        "resources/subscribe",
        "completion/complete",
        "notifications/*",
    ] {
        assert!(rule(method).is_ok(), "{method}");
    }
}
