//! A hostile review of the table of known `tools/list` answers ([`KnownAnswers`]): for any
//! bytes and any request id, filtering with the table must give exactly the output and report
//! that reading anew gives, whatever went through the table before; and the table must stay
//! within its bounds.
//!
//! Found by that review, each failing before the table kept only answers to requests whose
//! id is a string or a safe integer, and counted what it found in an answer beside its bytes:
//! - `ids_of_any_json_value_recall_as_read_anew` and the cases under it
//!   (`an_unsafe_integer_id_...`, `a_float_id_...`, `an_id_object_with_case_twin_keys_...`,
//!   `an_id_nested_past_the_depth_limit_...`, `an_id_that_brings_the_answer_over_the_value_limit_...`):
//!   an id whose text the strict reader refuses or counts otherwise than the kept id's was
//!   filtered as the kept answer had been.
//! - `an_id_nested_deeper_than_serde_reads_panics_nothing`: the same, into a panic.
//! - `kept_answers_hold_no_more_memory_than_held_says`: what the table held beside the bytes
//!   (a 64-byte record a tool) was not counted: ~30x `held()`.

mod generated;

use generated::{enc, object, word};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::listing::{ListFilter, ListReport, KEYS};
use toolgate_core::engine::visibility::Visibility;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::known_answers::{KnownAnswers, MAX_ANSWERS, MAX_ANSWER_BYTES, MAX_BYTES};
use toolgate_core::mcp::spans;
use toolgate_core::Code;

// ---------------------------------------------------------------------------------------------
// Counting what this thread has live on the heap (for the memory test only).

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        count(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            count(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.with(|c| c.get())
}

// ---------------------------------------------------------------------------------------------
// Filtering with and without the table.

/// Hides `delete*`; a name ending in `x` depends on who asks.
fn hide(_: Listed, name: &str, tool: &ListedTool<'_>) -> Visibility {
    assert!(tool.object().get("name").is_some());
    Visibility {
        removed: name.starts_with("delete").then_some(Code::Hidden),
        per_subject: name.ends_with('x'),
    }
}

/// Bytes sent, compared as bytes, shown as text.
#[derive(PartialEq, Eq)]
struct Sent(Vec<u8>);

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.0);
        if text.len() > 400 {
            write!(
                f,
                "{:?}...{:?}",
                &text[..text.floor_char_boundary(200)],
                &text[text.ceil_char_boundary(text.len() - 200)..]
            )
        } else {
            write!(f, "{text:?}")
        }
    }
}

type Out = (Sent, ListReport);

/// Who judges a list, as a production filter has it: one of three policies (each its own
/// generation), for one of three servers (the third none), for one of two callers.
#[derive(Debug, Clone, Copy, Default)]
struct Judge {
    policy: u8,
    server: u8,
    caller: u8,
}

impl Judge {
    fn server(self) -> Option<&'static str> {
        [Some("a"), Some("b"), None][self.server as usize % 3]
    }

    /// Policy 0 hides `delete*` (as `hide`), 1 `read*`, 2 `é*`; server "b" also hides
    /// `list*`; a name ending in `x` depends on who asks (the second caller does not see it).
    fn seen(self, name: &str) -> Visibility {
        let hidden = ["delete", "read", "é"][self.policy as usize % 3];
        let removed = name.starts_with(hidden)
            || (self.server() == Some("b") && name.starts_with("list"))
            || (name.ends_with('x') && self.caller == 1);
        Visibility {
            removed: removed.then_some(Code::Hidden),
            per_subject: name.ends_with('x'),
        }
    }
}

/// Feed `body` (cut at `cut`) to a filter for `id` judged by `judge`, remembering in `known`
/// if given; `alike`: judged alike for every caller where it can be (the policy's generation
/// and the server said), as production filters are.
fn run_as(
    judge: Judge,
    alike: bool,
    id: &Value,
    reply: Option<&Value>,
    known: Option<&Arc<KnownAnswers>>,
    body: &[u8],
    cut: usize,
) -> Out {
    let seen = move |_: Listed, name: &str, tool: &ListedTool<'_>| {
        assert!(tool.object().get("name").is_some());
        judge.seen(name)
    };
    let mut f = ListFilter::new(Some(id.clone()), Some(Listed::Tools), seen);
    if let Some(r) = reply {
        f = f.replying_as(r.clone());
    }
    if let Some(k) = known {
        f = f.remembering(Arc::clone(k));
    }
    if alike {
        f = f.judging_alike(u64::from(judge.policy) + 1, judge.server());
    }
    let cut = cut.min(body.len());
    let mut out = f.feed(&body[..cut], false);
    out.extend(f.feed(&body[cut..], true));
    (Sent(out), f.report)
}

fn both(id: &Value, known: &Arc<KnownAnswers>, body: &[u8]) -> (Out, Out) {
    (
        run_as(
            Judge::default(),
            false,
            id,
            None,
            Some(known),
            body,
            body.len(),
        ),
        run_as(Judge::default(), false, id, None, None, body, body.len()),
    )
}

fn text(id: &Value) -> String {
    serde_json::to_string(id).unwrap()
}

fn toolgate(n: u128) -> Value {
    Value::String(format!("toolgate-{n:032x}"))
}

/// A list answer under `id` (its text as written), padded before it so the table's hint
/// (the answer's middle) is far from the id.
fn padded(id: &str, tools: &str) -> String {
    let pad = "p".repeat(3000);
    format!(r#"{{"_p":"{pad}","jsonrpc":"2.0","id":{id},"result":{{"tools":[{tools}]}}}}"#)
}

/// A string id whose text is `len` bytes (quotes included).
fn string_id_of(len: usize) -> Value {
    assert!(len >= 2);
    Value::String("k".repeat(len - 2))
}

/// Keep `template` (with `@ID@` for the id) under a string id of the same text length as
/// `id`'s, then filter it under `id`: with the table and anew.
fn kept_then_recalled(template: &str, id: &Value) -> (Out, Out, bool) {
    let known = Arc::new(KnownAnswers::default());
    let new = text(id);
    let old = string_id_of(new.len());
    let first = template.replace("@ID@", &text(&old));
    let (r, a) = both(&old, &known, first.as_bytes());
    assert_eq!(r, a);
    let again = template.replace("@ID@", &new);
    let hit = known.recall(again.as_bytes(), new.as_bytes()).is_some();
    let (r, a) = both(id, &known, again.as_bytes());
    (r, a, hit)
}

// ---------------------------------------------------------------------------------------------
// Findings: ids whose text is not read as the kept id's was.

const TEMPLATE_TOOLS: &str = r#"{"name":"read"},{"name":"delete_x"}"#;

#[test]
fn an_unsafe_integer_id_is_refused_as_read_anew() {
    // 2^53 + 1: a u64 the strict reader refuses in an answer (and read_metadata accepts).
    let template = padded("@ID@", TEMPLATE_TOOLS);
    let (recalled, anew, hit) = kept_then_recalled(&template, &json!(9007199254740993u64));
    assert!(hit);
    assert!(anew.1.refused.is_some(), "read anew: refused");
    assert_eq!(recalled, anew);
}

#[test]
fn a_float_id_past_2_53_is_refused_as_read_anew() {
    let template = padded("@ID@", TEMPLATE_TOOLS);
    let (recalled, anew, _) = kept_then_recalled(&template, &json!(1e16));
    assert!(anew.1.refused.is_some());
    assert_eq!(recalled, anew);
}

#[test]
fn an_id_object_with_case_twin_keys_is_refused_as_read_anew() {
    let mut m = Map::new();
    m.insert("a".into(), json!(0));
    m.insert("A".into(), json!(0));
    let template = padded("@ID@", TEMPLATE_TOOLS);
    let (recalled, anew, _) = kept_then_recalled(&template, &Value::Object(m));
    assert!(anew.1.refused.is_some());
    assert_eq!(recalled, anew);
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!([]), |v, _| json!([v]))
}

#[test]
fn an_id_nested_past_the_depth_limit_is_refused_as_read_anew() {
    let template = padded("@ID@", TEMPLATE_TOOLS);
    let (recalled, anew, _) = kept_then_recalled(&template, &nested(126));
    assert!(anew.1.refused.is_some());
    assert_eq!(recalled, anew);
}

#[test]
fn an_id_nested_deeper_than_serde_reads_panics_nothing() {
    // Read anew: refused (too deep). Recalled: `serde_json::from_slice(id).expect("read
    // strictly")` in `ListFilter::message` meets serde_json's recursion limit.
    let template = padded("@ID@", TEMPLATE_TOOLS);
    let id = nested(200);
    let result = std::panic::catch_unwind(|| kept_then_recalled(&template, &id));
    let (recalled, anew, _) = result.expect("no panic on a recalled answer");
    assert_eq!(recalled, anew);
}

#[test]
fn an_id_that_brings_the_answer_over_the_value_limit_is_refused_as_read_anew() {
    // An answer at exactly MAX_VALUES values under a string id: one more value (an id `[0]`
    // in place of `"k"`) is over the limit, read anew.
    let values = toolgate_core::json::strict::MAX_VALUES;
    // object, jsonrpc, id, result, tools, 1 tool (2 values), _m array: 8, then the zeros.
    let zeros = values - 8;
    let template = format!(
        r#"{{"jsonrpc":"2.0","id":@ID@,"result":{{"tools":[{{"name":"read"}}]}},"_m":[{}]}}"#,
        vec!["0"; zeros].join(",")
    );
    let with_string = template.replace("@ID@", r#""k""#);
    assert!(spans::read(with_string.as_bytes(), &KEYS).is_ok());
    assert!(spans::read(template.replace("@ID@", "[0]").as_bytes(), &KEYS).is_err());
    let (recalled, anew, hit) = kept_then_recalled(&template, &json!([0]));
    assert!(hit);
    assert_eq!(recalled, anew);
}

/// Any JSON value.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[aA\u{212a}k\"\\\u{0}é]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[aAkK\u{212a}]{1,2}", inner), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// The general property over request ids: a request under any JSON value, its answer
    /// kept before under a string id of the same text length.
    #[test]
    fn ids_of_any_json_value_recall_as_read_anew(id in any_json(), suffix in any::<bool>()) {
        let template = if suffix {
            format!(r#"{{"jsonrpc":"2.0","result":{{"tools":[{TEMPLATE_TOOLS}]}},"_p":"{}","id":@ID@}}"#, "p".repeat(3000))
        } else {
            padded("@ID@", TEMPLATE_TOOLS)
        };
        prop_assume!(text(&id).len() >= 2);
        let (recalled, anew, _) = kept_then_recalled(&template, &id);
        prop_assert_eq!(recalled, anew, "id {}", text(&id));
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests: ids as production has them (toolgate's strings, an agent's string or safe
// integer), and the attacks of the brief.

/// A tool as list_attack.rs generates them (names escaped, twin keys, odd numbers), the
/// request's id (`@ID@`) now and then among its values and its name (`@IDNAME@`).
fn tool() -> impl Strategy<Value = String> {
    let odd = r#"{"a":{"A":1}} 9007199254740992 1E400 -1e309 9007199254740991 01 1. NaN"#;
    let values = r#"1 -0 1.5 "d" null [[1]] {"a":{"b":1}} @ID@"#;
    generated::tool(
        "read delete_x delete list é x\u{1F600} @IDNAME@",
        values,
        odd,
    )
}

/// An answer with `@ID@` where its id goes (now and then another id, or none).
fn template() -> impl Strategy<Value = String> {
    let result = generated::result(tool());
    let id = word("@ID@", r#"1 "1" {"a":1} -0 [@ID@] @ID@,"ID":1"#);
    let top = word(
        r#""params":{} "_x":1 "_y":@ID@"#,
        r#""method":"x" "error":{} "ID":1 "Result":{} "result":{}"#,
    );
    let error = prop::bool::weighted(0.1);
    (result, id, prop::option::weighted(0.3, top), error).prop_flat_map(|(r, id, top, error)| {
        let mut m = vec![r#""jsonrpc":"2.0""#.into(), format!("\"id\":{id}")];
        if error {
            m.push(r#""error":{"code":-1,"message":"m"}"#.into());
        } else {
            m.push(format!("\"result\":{r}"));
        }
        m.extend(top.map(String::from));
        object(m)
    })
}

/// Where padding goes: none, before everything, after everything, inside, both sides.
fn lay_out(text: &str, layout: u8, pad: usize) -> String {
    let p = "p".repeat(pad);
    let inner = &text[1..text.len() - 1];
    match layout {
        0 => text.to_string(),
        1 => format!(r#"{{"_p":"{p}",{inner}}}"#),
        2 => format!(r#"{{{inner},"_p":"{p}"}}"#),
        3 => format!(r#"{{"_p":"{p}",{inner},"_q":"{p}"}}"#),
        _ => text.replacen(
            r#""jsonrpc":"2.0""#,
            &format!(r#""jsonrpc":"2.0","_p":"{p}""#),
            1,
        ),
    }
}

/// A production id: toolgate's (mostly), an agent's string (escapes to write) or a safe
/// integer.
fn prod_id() -> impl Strategy<Value = Value> {
    const SAFE: i64 = (1 << 53) - 1;
    prop_oneof![
        8 => any::<u128>().prop_map(toolgate),
        1 => (-SAFE..=SAFE).prop_map(|n| json!(n)),
        1 => (0i64..100).prop_map(|n| json!(n)),
        1 => "[\"\\\\\u{0}-\u{1f}é\u{2028}a-c]{0,6}".prop_map(Value::String),
        1 => "\\PC{0,8}".prop_map(Value::String),
    ]
}

/// One answer of a history.
#[derive(Debug, Clone)]
struct Step {
    template: usize,
    id: Value,
    /// How the server writes the id: 0 as serde_json does, 1 escaped, 2 the previous request's
    /// id, 3 one of the same length, changed.
    written: u8,
    mask: u64,
    change: Option<(prop::sample::Index, u8)>,
    /// 0 JSON, 1 one event, 2 a request and a notification first, 3 an answer to another id
    /// first (server's stream), 4 the answer then more.
    framing: u8,
    reply: bool,
    cut: prop::sample::Index,
    judge: Judge,
}

fn step(templates: usize) -> impl Strategy<Value = Step> {
    (
        0..templates,
        prod_id(),
        prop_oneof![8 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)],
        any::<u64>(),
        prop::option::weighted(
            0.15,
            (
                any::<prop::sample::Index>(),
                prop::sample::select(b"ayz12\" ,{}[]:\\\xff\xc3".to_vec()),
            ),
        ),
        0u8..5,
        any::<bool>(),
        any::<prop::sample::Index>(),
        // Mostly one policy and server, as a proxy has: answers judged alike before.
        (
            prop_oneof![7 => Just((0u8, 2u8)), 3 => (0u8..3, 0u8..3)],
            0u8..2,
        ),
    )
        .prop_map(
            |(template, id, written, mask, change, framing, reply, cut, ((p, s), c))| Step {
                template,
                id,
                written,
                mask,
                change,
                framing,
                reply,
                cut,
                judge: Judge {
                    policy: p,
                    server: s,
                    caller: c,
                },
            },
        )
}

fn history() -> impl Strategy<Value = (Vec<(String, u8, usize)>, Vec<Step>)> {
    let templates = prop::collection::vec(
        (
            template(),
            0u8..5,
            prop::sample::select(vec![300usize, 3000]),
        ),
        1..4,
    );
    templates.prop_flat_map(|t| {
        let n = t.len();
        (Just(t), prop::collection::vec(step(n), 2..10))
    })
}

/// The id as the server writes it in a step.
fn written(step: &Step, previous: &Value) -> String {
    let exact = text(&step.id);
    match step.written {
        1 => match &step.id {
            Value::String(s) => enc(s, step.mask | 1),
            _ => format!("{exact}.0"),
        },
        2 => text(previous),
        3 => {
            let mut b = exact.into_bytes();
            let at = b.len() / 2;
            b[at] = if b[at] == b'1' { b'2' } else { b'1' };
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => exact,
    }
}

fn framed(step: &Step, answer: &[u8], id_text: &str) -> Vec<u8> {
    let ev = |m: &[u8]| [&b"data: "[..], m, b"\n\n"].concat();
    match step.framing {
        0 => answer.to_vec(),
        1 => ev(answer),
        2 => [
            ev(format!(r#"{{"jsonrpc":"2.0","id":{id_text},"method":"ping"}}"#).as_bytes()),
            b": c\n\n".to_vec(),
            ev(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#),
            ev(answer),
        ]
        .concat(),
        3 => [
            ev(br#"{"jsonrpc":"2.0","id":"other","error":{"code":1,"message":"m"}}"#),
            ev(answer),
        ]
        .concat(),
        _ => [ev(answer), ev(answer)].concat(),
    }
}

static HITS: AtomicUsize = AtomicUsize::new(0);

/// Run a history through one table; every answer must be filtered as if read anew.
fn check_history(
    known: &Arc<KnownAnswers>,
    templates: &[(String, u8, usize)],
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut previous = toolgate(0);
    for s in steps {
        let (t, layout, pad) = &templates[s.template];
        let id_text = written(s, &previous);
        let name = match &s.id {
            Value::String(v) => serde_json::to_string(v).unwrap(),
            _ => "\"n\"".into(),
        };
        let answer = lay_out(t, *layout, *pad)
            .replace("\"@IDNAME@\"", &name)
            .replace("@ID@", &id_text);
        let mut answer = answer.into_bytes();
        if let Some((at, byte)) = &s.change {
            let at = at.index(answer.len());
            answer[at] = *byte;
        }
        let body = framed(s, &answer, &id_text);
        if known.recall(&answer, text(&s.id).as_bytes()).is_some() {
            HITS.fetch_add(1, Ordering::Relaxed);
        }
        let reply = s.reply.then(|| json!(7));
        let cut = s.cut.index(body.len() + 1);
        let (j, id) = (s.judge, &s.id);
        let remembering = run_as(j, true, id, reply.as_ref(), Some(known), &body, cut);
        let anew = run_as(j, false, id, reply.as_ref(), None, &body, cut);
        prop_assert_eq!(&remembering, &anew, "{:?}", Sent(body.clone()));
        let (n, bytes) = known.held();
        prop_assert!(n <= MAX_ANSWERS && bytes <= MAX_BYTES);
        previous = s.id.clone();
    }
    Ok(())
}

/// Histories of answers (a few servers' lists, answered again and again under production
/// ids, written exactly or not, framed as JSON or events, with a byte changed now and then,
/// judged under one of three policies, for one of three servers and two callers), all through
/// one table: each is filtered as if read and judged anew, and the table is found again, and
/// its entries kept as judged before, often enough for this to test something.
#[test]
fn histories_of_answers_under_production_ids_are_filtered_as_read_anew() {
    let mut runner = TestRunner::new(Config {
        cases: 2500,
        failure_persistence: None,
        ..Config::default()
    });
    let before = HITS.load(Ordering::Relaxed);
    let judged = AtomicUsize::new(0);
    runner
        .run(&history(), |(templates, steps)| {
            let known = Arc::new(KnownAnswers::default());
            let checked = check_history(&known, &templates, &steps);
            judged.fetch_add(known.judged_before() as usize, Ordering::Relaxed);
            checked
        })
        .unwrap();
    let hits = HITS.load(Ordering::Relaxed) - before;
    let judged = judged.into_inner();
    eprintln!("{hits} answers found again, {judged} kept as judged before");
    assert!(hits > 150, "only {hits} answers were found again");
    assert!(
        judged > 30,
        "only {judged} answers were kept as judged before"
    );
}

/// The same, the table shared by every history (answers from other "servers", under other
/// ids, kept before).
#[test]
fn histories_sharing_one_table_are_filtered_as_read_anew() {
    let known = Arc::new(KnownAnswers::default());
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&history(), |(templates, steps)| {
            check_history(&known, &templates, &steps)
        })
        .unwrap();
}

#[test]
fn a_stream_answering_no_request_keeps_nothing() {
    let known = Arc::new(KnownAnswers::default());
    let id = toolgate(1);
    let answer = padded(&text(&id), TEMPLATE_TOOLS);
    let body = format!("data: {answer}\n\ndata: {answer}\n\n");
    let mut f = ListFilter::new(None, None, hide).remembering(Arc::clone(&known));
    let out = f.feed(body.as_bytes(), true);
    let mut g = ListFilter::new(None, None, hide);
    assert_eq!(
        (Sent(out), f.report),
        (Sent(g.feed(body.as_bytes(), true)), g.report)
    );
    assert_eq!(known.held(), (0, 0));
}

/// Same length and middle (the hint), other bytes in the prefix or the suffix: read anew,
/// the hidden tool hidden, the refusal refused.
#[test]
fn a_hint_collision_is_read_anew() {
    let known = Arc::new(KnownAnswers::default());
    let pad = "p".repeat(3000);
    let make = |id: &Value, head: &str, tail: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[{head}],"_meta":{{"p":"{pad}"}},"x":[{tail}]}}}}"#,
            text(id)
        )
    };
    let heads = [
        r#"{"name":"read_x"}"#,
        r#"{"name":"delete"}"#,
        r#"{"name":"Delete"}"#,
        r#"{"Name":"delete"}"#,
    ];
    let tails = [
        r#"{"name":"read_x"}"#,
        r#"{"name":"delete"}"#,
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"A":2}"#,
        "9007199254740993",
    ];
    let mut n = 0u128;
    for _round in 0..2 {
        for h in heads {
            for t in tails {
                for h2 in heads {
                    n += 1;
                    let id = toolgate(n);
                    let (r, a) = both(&id, &known, make(&id, h, t).as_bytes());
                    assert_eq!(r, a, "{h} {t}");
                    n += 1;
                    let id = toolgate(n);
                    let (r, a) = both(&id, &known, make(&id, h2, t).as_bytes());
                    assert_eq!(r, a, "{h2} {t}");
                }
            }
        }
    }
}

/// The id's text appearing elsewhere (a name, a description, a key, next to the id), the id
/// in the middle (inside the hint's window), last, after the result.
#[test]
fn ids_next_to_names_and_in_the_middle_are_read_as_anew() {
    let known = Arc::new(KnownAnswers::default());
    for n in 1..40u128 {
        let id = toolgate(n % 3 + 1);
        let t = text(&id);
        let old = text(&toolgate(n % 3));
        let pad = "p".repeat(1500);
        let bodies = [
            format!(
                r#"{{"jsonrpc":"2.0","result":{{"tools":[{{"name":{t},"d":{old}}},{{"name":"delete"}}]}},"_p":"{pad}","id":{t}}}"#
            ),
            format!(
                r#"{{"_p":"{pad}","jsonrpc":"2.0","result":{{"tools":[{{"name":"read","d":{old}}}]}},"id":{t}}}"#
            ),
            format!(
                r#"{{"_a":"{pad}","id":{t},"_b":"{pad}","result":{{"tools":[{{"name":"delete_x"}},{{"name":"read_x"}}],"cacheScope":"public"}}}}"#
            ),
            format!(
                r#"{{"_a":"{pad}","id":{t},"_b":"{pad}","result":{{"tools":[{{"name":"read_x"}}],"cacheScope":{old}}}}}"#
            ),
            format!(r#"{{"_a":"{pad}","id":{t},"method":"x","_b":"{pad}"}}"#),
            format!(
                r#"{{"_a":"{pad}","id":{t},"error":{{"code":1,"message":{old}}},"_b":"{pad}"}}"#
            ),
            format!(r#"{{"_a":"{pad}","id":{t},{t}:1,"result":{{"tools":[]}},"_b":"{pad}"}}"#),
            format!(
                r#"{{"_a":"{pad}","id":{t},"result":{{"tools":[{{"name":{t}}}]}},"_b":"{pad}","Id":1}}"#
            ),
        ];
        for body in bodies {
            let (r, a) = both(&id, &known, body.as_bytes());
            assert_eq!(r, a, "{body}");
            let sse = format!("data: {body}\n\n");
            let (r, a) = both(&id, &known, sse.as_bytes());
            assert_eq!(r, a, "{body}");
        }
    }
}

/// Bytes that are not UTF-8, here and there, in answers otherwise found again.
#[test]
fn bytes_that_are_not_utf8_are_read_as_anew() {
    let known = Arc::new(KnownAnswers::default());
    let tools = r#"{"name":"read","d":"ab"},{"name":"delete"}"#;
    let mut n = 0;
    for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00"] {
        for at in [5usize, 1600, 3040, 3070] {
            n += 1;
            let id = toolgate(n);
            let good = padded(&text(&id), tools).into_bytes();
            let (r, a) = both(&id, &known, &good);
            assert_eq!(r, a);
            n += 1;
            let id = toolgate(n);
            let mut body = padded(&text(&id), tools).into_bytes();
            let at = at.min(body.len() - 1);
            body.splice(at..at + 1, bad.iter().copied());
            let (r, a) = both(&id, &known, &body);
            assert_eq!(r, a, "{at} {bad:?}");
        }
    }
}

fn big(seed: usize, size: usize, hidden: bool) -> impl Fn(&Value) -> String {
    move |id: &Value| {
        let name = if hidden { "delete" } else { "read" };
        let head = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[{{"name":"{name}"}},{{"name":"t{seed}"}}],"_meta":{{"p":""#,
            text(id)
        );
        let tail = r#""}}}"#;
        let fill = size.saturating_sub(head.len() + tail.len());
        format!("{head}{}{tail}", "d".repeat(fill))
    }
}

/// Answers at and around the largest kept (1 MiB), found again or not.
#[test]
fn answers_near_the_size_cap_are_read_as_anew() {
    let known = Arc::new(KnownAnswers::default());
    let mut n = 0;
    for size in [
        MAX_ANSWER_BYTES - 1,
        MAX_ANSWER_BYTES,
        MAX_ANSWER_BYTES + 1,
        2 * MAX_ANSWER_BYTES,
    ] {
        for hidden in [false, true] {
            let make = big(size, size, hidden);
            for _ in 0..2 {
                n += 1;
                let id = toolgate(n);
                let body = make(&id);
                assert_eq!(body.len(), size);
                let (r, a) = both(&id, &known, body.as_bytes());
                assert_eq!(r, a, "{size}");
            }
        }
    }
    let (answers, bytes) = known.held();
    assert!(answers <= MAX_ANSWERS && bytes <= MAX_BYTES);
}

/// One server floods the table with new lists, of every size, some hint-colliding with
/// another's: the other's answer is still filtered as read anew, and the table stays within
/// its bounds.
#[test]
fn a_flood_from_one_server_mishandles_no_other_answer() {
    let known = Arc::new(KnownAnswers::default());
    let victim = |id: &Value| padded(&text(id), r#"{"name":"read_x"},{"name":"delete"}"#);
    let mut n = 1u128;
    for i in 0..300usize {
        n += 1;
        let id = toolgate(n);
        let flood = match i % 4 {
            // Same length and middle as the victim's, another prefix.
            0 => victim(&id).replacen("read_x", "delete", 1).replacen(
                "\"delete\"}]",
                "\"read_x\"}]",
                1,
            ),
            1 => big(i, 1000 + i * 37, true)(&id),
            2 => big(i, MAX_ANSWER_BYTES - i, false)(&id),
            _ => big(i, 300_000 + i, i % 8 == 3)(&id),
        };
        let (r, a) = both(&id, &known, flood.as_bytes());
        assert_eq!(r, a, "flood {i}");
        let (answers, bytes) = known.held();
        assert!(
            answers <= MAX_ANSWERS && bytes <= MAX_BYTES,
            "{answers} {bytes}"
        );
        n += 1;
        let id = toolgate(n);
        let (r, a) = both(&id, &known, victim(&id).as_bytes());
        assert_eq!(r, a, "victim after {i}");
        assert_eq!(r.1.removed, 1);
    }
}

/// Threads filtering and keeping at once, sharing one table: each answer as read anew.
#[test]
fn threads_filtering_at_once_get_what_reading_anew_gives() {
    let known = Arc::new(KnownAnswers::default());
    let lists = [
        r#"{"name":"read"},{"name":"delete_x"}"#,
        r#"{"name":"read_x"}"#,
        r#"{"name":"delete"},{"name":"list","d":"x"}"#,
        r#"{"name":"a","n":1},{"name":"a","n":2}"#,
    ];
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let known = Arc::clone(&known);
            std::thread::spawn(move || {
                let mut x = 0x9e3779b97f4a7c15u64 ^ (t + 1);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                for i in 0..400 {
                    let r = next();
                    let id = toolgate(u128::from(r % 7));
                    let list = lists[(r >> 8) as usize % lists.len()];
                    let written = if r >> 16 & 7 == 0 {
                        toolgate(u128::from(r % 5))
                    } else {
                        id.clone()
                    };
                    let body = if r >> 20 & 15 == 0 {
                        big(i, 20_000 + (r >> 24) as usize % 200_000, r & 1 == 0)(&written)
                    } else {
                        padded(&text(&written), list)
                    };
                    let (rem, anew) = both(&id, &known, body.as_bytes());
                    assert_eq!(rem, anew, "{body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (answers, bytes) = known.held();
    assert!(answers <= MAX_ANSWERS && bytes <= MAX_BYTES);
}

/// What the table holds, all told, against what `held()` says it holds: lists of tiny
/// entries (each kept as a record of some 64 bytes) hold many times their bytes, and are
/// counted so (kept while that fits one answer's share, not kept past it).
#[test]
fn kept_answers_hold_no_more_memory_than_held_says() {
    let known = Arc::new(KnownAnswers::default());
    // Warm up what is allocated once (hasher seeds, the table's first allocations).
    let id = toolgate(0);
    let _ = both(
        &id,
        &known,
        padded(&text(&id), r#"{"name":"a"}"#).as_bytes(),
    );
    for (entries, kept) in [(5_000, true), (240_000, false)] {
        let before = live();
        let held_before = known.held();
        for i in 0..4u128 {
            let id = toolgate(i + 1);
            // Entries `0` (2 bytes each): under MAX_VALUES, kept though refused.
            let entries = vec![if i % 2 == 0 { "0" } else { "1" }; entries].join(",");
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[{entries}]}},"_{i}":0}}"#,
                text(&id)
            );
            let mut f = ListFilter::new(Some(id), Some(Listed::Tools), hide)
                .remembering(Arc::clone(&known));
            let _ = f.feed(body.as_bytes(), true);
        }
        let retained = (live() - before).max(0) as usize;
        let (answers, held) = known.held();
        let held = held - held_before.1;
        assert_eq!(answers > held_before.0, kept, "{entries} entries");
        assert!(
            retained <= 2 * held + (64 << 10),
            "{entries} entries: the table holds {retained} bytes, and says {held}"
        );
    }
}
