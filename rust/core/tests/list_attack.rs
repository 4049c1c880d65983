//! A hostile server against the `tools/list` filter: hidden tools (`delete*`) must never reach
//! the agent, what goes on must read to a client as the filter judged it, and the span reader
//! must refuse what the request reader refuses. `a_long_integer_part_...` fails on the current
//! code (a flaw, failing closed); `multi_line_data_...` and `a_long_event_line_...` failed on
//! 8487679 and pass since f3eac09, which fixed what they show.

mod generated;

use generated::{object, word};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use toolgate_core::definitions::listed::ListedTool;
use toolgate_core::engine::listing::{filter_result, ListFilter, ListReport, INTERNAL_ERROR, KEYS};
use toolgate_core::engine::visibility::Visibility;
use toolgate_core::json::strict;
use toolgate_core::kind::Listed;
use toolgate_core::mcp::answer::Framing;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::mcp::spans;
use toolgate_core::mcp::sse::message_event;
use toolgate_core::Code;

/// Hides `delete*`; a tool whose name ends in `x` is shown or hidden by who asks. Reads the
/// tool's object, as a pin does: its text must read again.
fn hide(_: Listed, name: &str, tool: &ListedTool<'_>) -> Visibility {
    assert!(tool.object().get("name").is_some());
    let removed = name.starts_with("delete").then_some(Code::Hidden);
    let per_subject = name.ends_with('x');
    Visibility {
        removed,
        per_subject,
    }
}

fn filter(body: &[u8]) -> (Vec<u8>, ListReport) {
    let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide);
    let out = f.feed(body, true);
    (out, f.report)
}

/// Whether the span reader and the request reader read `body`: they must agree.
fn verdicts(body: &[u8]) -> (bool, bool) {
    let ours = spans::read(body, &KEYS).is_ok();
    (ours, strict::parse(body).is_ok())
}

/// The filter's answer to `body`: `None` if refused, else the result it sends (null for a
/// server's request or an error, which go on as they came). No hidden tool may be in it.
fn judged(body: &[u8]) -> Option<Value> {
    let (out, report) = filter(body);
    // The answer goes on as an event stream whatever its framing: one that does not open a
    // JSON message is read as one, refused unless it is only comments (no message).
    let message = client_events(&out).concat();
    if message.is_empty() && report.refused.is_none() {
        assert!(client_messages(&out).is_empty(), "{out:?}");
        return None;
    }
    let message: Value = serde_json::from_slice(&message).expect("the filter writes JSON");
    if report.refused.is_some() {
        assert_eq!(message["error"]["code"], INTERNAL_ERROR);
        return None;
    }
    if message.get("method").is_some() || message.get("error").is_some() {
        assert_eq!(
            out,
            as_came(body),
            "a request or an error goes on as it came"
        );
        return Some(Value::Null);
    }
    let tools = message["result"]["tools"].as_array().expect("a list");
    let names = tools.iter().filter_map(|t| t["name"].as_str());
    assert!(names.clone().all(|n| !n.starts_with("delete")), "{names:?}");
    Some(message["result"].clone())
}

/// What the filter sends for a body it passes unchanged: an event stream as it came, a JSON
/// message as one event.
fn as_came(body: &[u8]) -> Vec<u8> {
    match Framing::sniff(body) {
        Some(Framing::Json) => message_event(body),
        _ => body.to_vec(),
    }
}

fn only_read() -> Value {
    json!([{"name": "read"}])
}

fn list(tools: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{tools}]}}}}"#)
}

/// The data of each event a WHATWG client dispatches from `stream`.
fn client_events(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = stream.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stream);
    let (mut events, mut data) = (Vec::new(), Vec::new());
    while let Some(at) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
        let line = &rest[..at];
        rest = &rest[at + 1 + usize::from(rest[at..].starts_with(b"\r\n"))..];
        if line.is_empty() && !data.is_empty() {
            data.pop();
            events.push(std::mem::take(&mut data));
        }
        if let Some(value) = line
            .strip_prefix(b"data:")
            .or((line == b"data").then_some(&[][..]))
        {
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            data.push(b'\n');
        }
    }
    events
}

#[test]
fn escapes_in_names_and_keys_are_decoded_before_judging() {
    let removed = [
        r#"{"name":"delete\u005fx"}"#,
        r#"{"n\u0061me":"delete_x"}"#,
        r#"{"\u006e\u0061\u006d\u0065":"\u0064elete"}"#,
        r#"{"name":"delete\ud83d\ude00"}"#,
        r#"{"name":"\u0064\u0065\u006c\u0065\u0074\u0065"}"#,
    ];
    for tool in removed {
        let body = list(&format!(r#"{tool},{{"name":"read"}}"#));
        let result = judged(body.as_bytes()).expect("read");
        assert_eq!(result["tools"], only_read(), "{body}");
    }
    let refused = [
        r#"{"name":"read","name":"delete"}"#,
        r#"{"name":"read","n\u0061me":"delete"}"#,
        r#"{"NAME":"delete","name":"read"}"#,
        r#"{"name":"read","Name":"delete"}"#,
        r#"{"name":"delete\ud83d"}"#,
        r#"{"name":"delete\udc00x"}"#,
        r#"{"name":"delete\ud800\u0041"}"#,
        r#"{"name":"read","deſcription":"x"}"#,
        r#"{"name":"delete"},{"name":"delete","x":1}"#,
        r#""delete""#,
    ];
    for tool in refused {
        let body = list(tool);
        assert_eq!(judged(body.as_bytes()), None, "{body}");
    }
}

#[test]
fn key_twins_are_refused_at_every_level_and_object_size() {
    let twins = [("k", "K"), ("k", "\u{212a}"), ("ks", "k\u{17f}")];
    for (a, b) in twins
        .into_iter()
        .chain([("a", r"\u0061"), ("id", "\u{131}d"), ("ǆ", "ǅ")])
    {
        // Up to 8 keys are compared in a list, past that by a hash set.
        for fillers in [0, 6, 7, 8, 9, 20] {
            for first in [0, fillers / 2, fillers] {
                let mut keys: Vec<String> = (0..fillers).map(|i| format!("\"f{i}\":{i}")).collect();
                keys.insert(first, format!("\"{a}\":1"));
                keys.push(format!("\"{b}\":2"));
                let object = format!("{{{}}}", keys.join(","));
                for body in [
                    format!(r#"{{"jsonrpc":"2.0","x":{object},"id":1,"result":{{"tools":[]}}}}"#),
                    format!(r#"{{"id":1,"result":{{"tools":[],"_meta":{object}}}}}"#),
                    list(&format!(r#"{{"name":"read","inputSchema":{object}}}"#)),
                    list(&format!(r#"{{"name":"read","x":[[{object}]]}}"#)),
                ] {
                    assert_eq!(verdicts(body.as_bytes()), (false, false), "{body}");
                    assert_eq!(judged(body.as_bytes()), None, "{body}");
                }
            }
        }
    }
}

#[test]
fn lists_in_odd_places_and_odd_messages_are_refused() {
    let (d, t) = (r#"{"name":"delete"}"#, r#"{"tools":[{"name":"delete_x"}]}"#);
    for body in [
        format!(r#"{{"id":1,"result":{t},"result":{t}}}"#),
        format!(r#"{{"id":1,"result":{{"tools":[],"Tools":[{d}]}}}}"#),
        format!(r#"{{"id":1,"result":{{"toolſ":[{d}],"tools":[]}}}}"#),
        format!(r#"{{"id":1,"result":{{"_meta":{t}}}}}"#),
        format!(r#"{{"id":1,"result":{{"tools":{{"0":{d}}}}}}}"#),
        format!(r#"{{"id":1,"result":{{"tools":[[{d}]]}}}}"#),
        format!(r#"{{"id":1,"result":{t},"error":{{"code":1,"message":"m"}}}}"#),
        format!(r#"{{"id":1,"result":{t},"error":null}}"#),
        format!(r#"{{"id":1,"method":"x","result":{t}}}"#),
        format!(r#"{{"id":1,"method":null,"result":{t}}}"#),
        format!(r#"{{"ID":1,"id":1,"result":{t}}}"#),
        format!(r#"{{"id":1,"Result":{t},"result":{{"tools":[]}}}}"#),
        format!(r#"{{"id":1.0,"result":{t}}}"#),
        format!(r#"{{"id":-0,"result":{t}}}"#),
        format!(r#"{{"id":"1","result":{t}}}"#),
        format!(r#"{{"id":{{"a":1}},"result":{t}}}"#),
        format!(r#"{{"result":{t}}}"#),
        format!(r#"[{{"id":1,"result":{t}}}]"#),
    ] {
        assert_eq!(judged(body.as_bytes()), None, "{body}");
    }
}

#[test]
fn text_that_is_not_one_strict_json_value_is_refused() {
    let list = list(r#"{"name":"delete_x"},{"name":"read"}"#).into_bytes();
    let at = list.iter().position(|b| *b == b'[').unwrap() + 1;
    let name = list.windows(6).position(|w| w == b"delete").unwrap() + 6;
    let key = list.windows(6).position(|w| w == b"\"name\"").unwrap() + 3;
    let mut bodies = Vec::new();
    for space in b"\x0c|\x0b|\xc2\xa0|\x00|\xe2\x80\xa8".split(|b| *b == b'|') {
        bodies.push([&list[..at], space, &list[at..]].concat());
    }
    let bytes = b"\xff|\xc0\xae|\xed\xa0\x80|\xf4\x90\x80\x80|\xc3|\x01|\t|\n|\\x|\\u00G0";
    for byte in bytes.split(|b| *b == b'|') {
        bodies.push([&list[..name], byte, &list[name..]].concat());
        bodies.push([&list[..key], byte, &list[key..]].concat());
    }
    bodies.push([&b"\xef\xbb\xbf"[..], &list].concat());
    bodies.push([&list[..], b" x"].concat());
    bodies.push([&list[..], &list].concat());
    bodies.push(list[..list.len() - 1].to_vec());
    for body in bodies {
        assert_eq!(verdicts(&body), (false, false), "{body:?}");
        assert_eq!(judged(&body), None, "{body:?}");
    }
}

/// The one place the two readers part: jiter refuses a number whose integer part runs to
/// 4,300 digits (its bound, as Python's on integers), however small the number:
/// `1000…0e-4300` is 1.0 to serde_json. The list filter refuses such an answer whole (fail
/// closed), one digit fewer passes.
#[test]
fn a_number_with_an_integer_part_of_4300_digits_refuses_the_list() {
    let one = format!("1{}e-4300", "0".repeat(4300));
    let body = list(&format!(r#"{{"name":"read","x":{one}}}"#));
    assert_eq!(verdicts(body.as_bytes()), (false, true));
    assert_eq!(judged(body.as_bytes()), None);
    let shorter = format!("1{}e-4299", "0".repeat(4299));
    let body = list(&format!(r#"{{"name":"read","x":{shorter}}}"#));
    assert_eq!(verdicts(body.as_bytes()), (true, true));
}

#[test]
fn nesting_inside_a_list_is_limited_as_serde_json_limits_it() {
    // The message, result, tools array and tool take four levels: 123 more reach 127.
    for k in 120..=126 {
        let deep = format!("{}{}", "[".repeat(k), "]".repeat(k));
        let error = format!(r#"{{"id":1,"error":{{"code":1,"message":"m","data":[[{deep}]]}}}}"#);
        let body = list(&format!(r#"{{"name":"read","x":{deep}}}"#));
        assert_eq!(verdicts(error.as_bytes()), (k <= 123, k <= 123), "{k}");
        assert_eq!(verdicts(body.as_bytes()), (k <= 123, k <= 123), "{k}");
        assert_eq!(judged(body.as_bytes()).is_some(), k <= 123, "{k}");
    }
}

/// This thread's CPU time, so a loaded machine does not skew what is measured. (Its
/// `schedstat` is only brought up to date at the scheduler's tick: a run shorter than a tick
/// could read as 0 ns.)
fn cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn many_tiny_tools_up_to_the_key_limit_take_linear_time() {
    let body = |n: usize| {
        let name = |i: usize| format!(r#"{{"name":"{}{i}"}}"#, ["delete", "r"][i % 2]);
        list(&(0..n).map(name).collect::<Vec<_>>().join(","))
    };
    // Three keys in the message, one in the result, one in each tool: 100,000 in all.
    let (most, over) = (body(99_996), body(99_997));
    assert_eq!(verdicts(over.as_bytes()), (false, false));
    assert_eq!(judged(over.as_bytes()), None);
    let result = judged(most.as_bytes()).expect("read");
    assert_eq!(result["tools"].as_array().unwrap().len(), 49_998);
    let time = |b: &str| {
        let start = cpu();
        filter(b.as_bytes());
        cpu() - start
    };
    // The least of a few runs: what the work costs, not what a busy machine added to it.
    let least = |b: &str| (0..3).map(|_| time(b)).min().unwrap();
    let (t1, t8) = (least(&body(12_000)), least(&most));
    assert!(t1 > Duration::ZERO, "the clock measured nothing");
    assert!(t8 < t1 * 40 + Duration::from_millis(50), "{t1:?} {t8:?}");
}

#[test]
fn the_answer_goes_back_under_the_agents_id_however_the_server_writes_ours() {
    let tools = r#""result":{"tools":[{"name":"delete"},{"name":"read"}]}"#;
    let answer = |id: &str| {
        let ours = ListFilter::new(Some(json!("toolgate-1")), Some(Listed::Tools), hide);
        let mut f = ours.replying_as(json!(7));
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},{tools}}}"#);
        let sent = client_events(&f.feed(body.as_bytes(), true));
        let out: Value = serde_json::from_slice(&sent[0]).unwrap();
        assert_eq!(out["id"], 7, "{body}");
        assert!(!out.to_string().contains("delete"), "{body}");
        (out["result"]["tools"].clone(), f.report.refused.is_some())
    };
    for id in r#""toolgate-1" "toolgate\u002d1" "\u0074oolgate-1""#.split(' ') {
        assert_eq!(answer(id), (only_read(), false), "{id}");
    }
    for id in r#"7 "toolgate-2" "toolgate-1","id":"toolgate-1" ["toolgate-1"]"#.split(' ') {
        assert_eq!(answer(id), (Value::Null, true), "{id}");
    }
}

#[test]
fn event_stream_framing_tricks_hide_nothing() {
    let answer = list(r#"{"name":"delete_x"},{"name":"read"}"#);
    let note = r#"{"jsonrpc":"2.0","method":"n"}"#;
    for s in [
        format!("event: message\r\ndata: {answer}\r\n\r\n"),
        format!("data:{answer}\r\r"),
        format!("\u{feff}: hi\nretry: 5\nid: 3\ndata: {answer}\n\n"),
        format!("data: {note}\n\ndata: {answer}\n\ndata: {answer}\n\n"),
    ] {
        for cut in 0..s.len() {
            let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide);
            let mut out = f.feed(&s.as_bytes()[..cut], false);
            out.extend(f.feed(&s.as_bytes()[cut..], true));
            let text = String::from_utf8_lossy(&out).into_owned();
            assert!(!text.contains("delete"), "{s:?}: {text:?}");
            let events = client_events(&out);
            let last: Value = serde_json::from_slice(events.last().unwrap()).unwrap_or_default();
            assert_eq!(last["result"]["tools"], only_read(), "{text:?}");
        }
    }
    for s in [
        format!("Data: {answer}\n\n"),
        format!("data: {answer}\n {answer}\n\n"),
        format!("data: {answer}\ndata: {answer}\n\n"),
        format!("data: {}\n\n", &answer[..answer.len() - 1]),
    ] {
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide);
        let out = f.feed(s.as_bytes(), true);
        assert!(f.report.refused.is_some(), "{s:?}");
        assert!(!String::from_utf8_lossy(&out).contains("delete"), "{s:?}");
    }
}

/// Failed before f3eac09: an answer whose JSON spans several `data:` lines (joined by LF, as
/// the format says) was filtered as one message, but its bytes, LFs and all, were written back
/// as one `data:` line (sse.rs `Event::with_data`): a client reads only the text before the
/// first LF, a message cut short. Every list answer is edited, if only for the agent's id.
#[test]
fn multi_line_data_events_reach_the_client_whole() {
    let ours = r#"{"jsonrpc":"2.0","id":"toolgate-1","result":{"tools":["#;
    let answer = [ours, r#"{"name":"delete_x"},"#, r#"{"name":"read"}]}}"#];
    for stream in [
        format!("data: {}\n\n", answer.join("\ndata: ")),
        // Nothing removed, but the id is the agent's; an empty data line makes the text's LF.
        format!("data\ndata: {ours}{}\n\n", answer[2]),
    ] {
        let ours = ListFilter::new(Some(json!("toolgate-1")), Some(Listed::Tools), hide);
        let out = ours.replying_as(json!(7)).feed(stream.as_bytes(), true);
        let text = String::from_utf8_lossy(&out).into_owned();
        let got: Value = serde_json::from_slice(&client_events(&out)[0]).unwrap_or_default();
        assert_eq!(got["id"], 7, "{text:?}");
        assert_eq!(got["result"]["tools"], only_read(), "{text:?}");
    }
}

/// Failed before f3eac09: the event splitter scanned the whole unfinished line again for
/// every chunk (sse.rs `EventSplitter::feed`), so a server sending one long line in small
/// chunks made the work quadratic: 16 MiB in 1 KiB chunks is ~128 GiB scanned.
#[test]
fn a_long_event_line_in_small_chunks_is_split_in_linear_time() {
    let mut line = b"data: ".to_vec();
    line.resize(256 << 10, b' ');
    let time = |chunk: usize| {
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide);
        let start = cpu();
        line.chunks(chunk).for_each(|c| drop(f.feed(c, false)));
        cpu() - start
    };
    let (whole, chunked) = (time(line.len()), time(64));
    let linear = whole * 20 + Duration::from_millis(100);
    assert!(chunked < linear, "{whole:?} {chunked:?}");
}

/// A tool: a name (escaped here and there) or none, keys that fold like known ones, numbers
/// at the limits (or not numbers), and up to 11 more keys (past 8, compared by hash).
fn tool() -> impl Strategy<Value = String> {
    let odd = r#"{"a":{"A":1}} 9007199254740992 1E400 0e999999999999 -1e309 9007199254740991
        -9007199254740992 9007199254740992e0 9007199254740991.4999999999999999 9007199254740991.5
        4e-324 18446744073709551616 1.7976931348623157e308 01 1. - +1 .5 1e 0x10 NaN -Infinity"#;
    let values = r#"1 -0 1e-400 1.5 "d" null [[1]] {"a":{"b":1}}"#;
    generated::tool("read delete_x delete list é x\u{1F600}", values, odd)
}

fn message() -> impl Strategy<Value = String> {
    let result = generated::result(tool());
    let id = word("1", r#"1.0 "1" {"a":1} -0"#);
    let top = word(
        r#""params":{} "_x":1"#,
        r#""method":"x" "error":{} "ID":1 "Result":{} "result":{}"#,
    );
    (result, id, prop::option::weighted(0.3, top)).prop_flat_map(|(r, id, top)| {
        let mut m = vec![r#""jsonrpc":"2.0""#.into(), format!("\"id\":{id}")];
        m.push(format!("\"result\":{r}"));
        m.extend(top.map(String::from));
        object(m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1500, failure_persistence: None, ..ProptestConfig::default()
    })]

    /// Generated answers, with white space or a stray byte added: both readers agree, no
    /// hidden tool goes on, what goes on is what the tree filter keeps (byte for byte when
    /// it keeps all), and an event stream carries exactly what the JSON body does.
    #[test]
    fn generated_answers_are_read_filtered_and_framed_alike(
        text in message(),
        ws in prop::collection::vec(prop::sample::select(vec![" ", "\n", "\t", "\r\n"]), 0..4),
        stray in prop::option::weighted(0.2, (any::<prop::sample::Index>(),
            prop::sample::select(b"\x0b\x0c\xa0\xc3\x00\"\\,:{}[]".to_vec()))),
    ) {
        let mut text = text.into_bytes();
        for (i, w) in ws.iter().enumerate() {
            let mut gaps = text.iter().enumerate().filter(|(_, b)| b",:[{".contains(b));
            if let Some((at, _)) = gaps.nth(i * 3) {
                text.splice(at + 1..at + 1, w.bytes());
            }
        }
        if let Some((at, byte)) = stray {
            text.insert(at.index(text.len() + 1), byte);
        }
        let (ours, theirs) = verdicts(&text);
        prop_assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(&text));
        let (out, report) = filter(&text);
        if let Some(result) = judged(&text).filter(|r| !r.is_null()) {
            let Ok(Value::Object(mut tree)) = strict::parse(&text) else { panic!("read") };
            let Some(Value::Object(mut kept)) = tree.remove("result") else { panic!("result") };
            let mut theirs = ListReport::default();
            let changed = filter_result(Listed::Tools, &mut kept, hide, &mut theirs);
            prop_assert_eq!(&report, &theirs);
            prop_assert_eq!(result, Value::Object(kept));
            prop_assert!(changed.is_ok());
            if changed == Ok(false) {
                prop_assert_eq!(&out, &as_came(&text));
            }
        }
        let line: Vec<u8> = text.iter().map(|&b| if b"\r\n".contains(&b) { b' ' } else { b }).collect();
        let stream = [&b"event: message\ndata: "[..], &line, b"\n\n"].concat();
        let (sse, _) = filter(&stream);
        if Framing::sniff(&line) == Some(Framing::Json) {
            prop_assert_eq!(client_events(&sse), client_events(&filter(&line).0));
        } else {
            prop_assert!(judged(&line).is_none());
            let sent: Value = serde_json::from_slice(&client_events(&sse)[0]).unwrap();
            prop_assert_eq!(&sent["error"]["code"], INTERNAL_ERROR);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1500, failure_persistence: None, ..ProptestConfig::default()
    })]

    /// A list answer read before is kept, and the same answer under the next request's id is
    /// not read again: whatever the answer, the next one (the same under another id, with any
    /// byte changed, or with an id of another length) is filtered exactly as if read anew.
    /// Padded, the answers share their middle bytes (the table's hint, away from the id), so
    /// the same answer is found again and one found by its hint must still be the same; a
    /// short one's hint covers its id, so it is read anew.
    #[test]
    fn an_answer_read_before_is_filtered_as_if_read_anew(
        text in message(),
        padded in any::<bool>(),
        change in prop::option::weighted(0.5, (any::<prop::sample::Index>(),
            prop::sample::select(b"ayz12\" ,{}[]:".to_vec()))),
        next_id in prop::sample::select(vec!["2", "1", "22"]),
    ) {
        let text = if padded {
            format!(r#"{{"_p":"{}",{}"#, "p".repeat(4000), &text[1..])
        } else {
            text
        };
        let known = Arc::new(KnownAnswers::default());
        let remembering = |id: &Value, bytes: &[u8]| {
            let mut f = ListFilter::new(Some(id.clone()), Some(Listed::Tools), hide).remembering(Arc::clone(&known));
            (f.feed(bytes, true), f.report)
        };
        let anew = |id: &Value, bytes: &[u8]| {
            let mut f = ListFilter::new(Some(id.clone()), Some(Listed::Tools), hide);
            (f.feed(bytes, true), f.report)
        };
        prop_assert_eq!(remembering(&json!(1), text.as_bytes()), anew(&json!(1), text.as_bytes()));
        let first_kept = known.held().0 == 1;
        let mut next = text.replacen(r#""id":1,"#, &format!(r#""id":{next_id},"#), 1);
        if !next.contains(&format!(r#""id":{next_id},"#)) {
            next = next.replacen(r#""id":1}"#, &format!(r#""id":{next_id}}}"#), 1);
        }
        let mut next = next.into_bytes();
        if let Some((at, byte)) = change {
            let at = at.index(next.len());
            next[at] = byte;
        }
        let id: Value = serde_json::from_str(next_id).unwrap();
        if padded && first_kept && change.is_none() && next_id != "22" {
            // The same answer under the next id (of the same length): found, not read.
            let written = next_id.as_bytes();
            prop_assert!(known.recall(&next, written).is_some(), "{}", text);
        }
        prop_assert_eq!(remembering(&id, &next), anew(&id, &next), "{}", text);
    }
}

/// What a client reading `sent` as one JSON message gets (a byte order mark skipped, as some
/// JSON readers do), and what one reading it as an event stream gets: the messages.
fn client_messages(sent: &[u8]) -> Vec<Value> {
    let json = sent.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(sent);
    let events = client_events(sent);
    let read = events.iter().map(|e| serde_json::from_slice(e));
    let whole = serde_json::from_slice(json);
    read.chain([whole]).filter_map(Result::ok).collect()
}

/// A body pieced together from parts of both framings, in any order: the framing the filter
/// reads is not the one some client reads.
fn mixed_body() -> impl Strategy<Value = Vec<u8>> {
    let answer = list(r#"{"name":"delete_x"},{"name":"read"}"#);
    let parts = vec![
        answer.clone(),
        format!("data: {answer}\n\n"),
        format!("data: {answer}\n"),
        "event: message\n".into(),
        ": comment\n".into(),
        "id: 4\n".into(),
        "\u{feff}".into(),
        " ".into(),
        "\t".into(),
        "\n".into(),
        "\r\n".into(),
        "\r".into(),
        "{".into(),
        "}".into(),
        "[".into(),
        "]".into(),
        ",".into(),
        "data".into(),
        "\x1f\u{8b}".into(),
    ];
    prop::collection::vec(prop::sample::select(parts), 1..8).prop_map(|p| p.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000, failure_persistence: None, ..ProptestConfig::default()
    })]

    /// Whatever the body's framing and whichever framing a client reads it in (the headers
    /// may say either, or the proxy may not send them), no client gets a hidden tool, however
    /// the body is cut.
    #[test]
    fn no_framing_a_client_reads_shows_a_hidden_tool(
        body in mixed_body(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
        at.sort_unstable();
        let mut f = ListFilter::new(Some(json!(1)), Some(Listed::Tools), hide);
        let (mut sent, mut from) = (Vec::new(), 0);
        for to in at {
            sent.extend(f.feed(&body[from..to], false));
            from = to;
        }
        sent.extend(f.feed(&body[from..], true));
        for message in client_messages(&sent) {
            prop_assert!(
                !message.to_string().contains("delete"),
                "{:?} sent {:?}", String::from_utf8_lossy(&body), String::from_utf8_lossy(&sent)
            );
        }
    }
}
