//! Approvals through the engine: a gated call waits for its approval and runs exactly once,
//! on the sidecar's approvals table.

use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::Kind;
use toolgate_core::{Code, Engine, EngineBuilder, ManualClock, Policy, Request, Subject, Verdict};

fn builder(json: &str) -> (EngineBuilder, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let policy = Policy::from_json_str(json).expect("valid policy");
    let table = Arc::new(CounterTable::new(256, 256));
    (Engine::builder(policy, table, clock.clone()), clock)
}

fn engine(json: &str) -> (Engine, Arc<ManualClock>) {
    let (builder, clock) = builder(json);
    (builder.build().unwrap(), clock)
}

/// The engine `builder` makes, running approvals in a table of 64, with their news.
fn with_approvals(builder: EngineBuilder) -> (Engine, ApprovalEvents, Arc<ApprovalTable>) {
    let table = Arc::new(ApprovalTable::new(64));
    let (approvals, events) = Approvals::new(table.clone(), 64);
    let engine = builder.approvals(Arc::new(approvals)).build().unwrap();
    (engine, events, table)
}

fn decide_args(engine: &Engine, tool: &str, args: &serde_json::Value) -> toolgate_core::Decision {
    engine.decide(&Request {
        kind: Kind::Tool,
        name: tool,
        server: None,
        subject: Subject {
            grant: Some("g"),
            ..Default::default()
        },
        args: Some(args),
        dry_run: false,
        hits: None,
        confirm: None,
    })
}

use std::time::Duration;
use toolgate_core::asking::approval::ApprovalEvent;
use toolgate_core::Clock;
use toolgate_runtime::approvals::table::ApprovalTable;
use toolgate_runtime::approvals::{ApprovalEvents, Approvals};

const POLICY: &str = r#"{"version": "1", "tools": {
    "transfer": {"action": "require_approval",
                 "approval": {"timeout": "10m", "approvers": ["bob"]},
                 "limits": [{"counter": "t", "window": "hour", "max": 5, "scope": "grant"}]}}}"#;

fn approving_engine() -> (Engine, Arc<ManualClock>, ApprovalEvents, Arc<ApprovalTable>) {
    let (builder, clock) = builder(POLICY);
    let (engine, events, table) = with_approvals(builder);
    (engine, clock, events, table)
}

fn transfer(engine: &Engine, amount: i64) -> toolgate_core::Decision {
    decide_args(
        engine,
        "transfer",
        &serde_json::json!({"amount": amount, "to": "acct-1"}),
    )
}

#[test]
fn a_gated_call_waits_for_its_approval_then_runs_exactly_once() {
    let (engine, clock, events, table) = approving_engine();
    let first = transfer(&engine, 500);
    assert_eq!(
        (first.verdict, first.code),
        (Verdict::RequireApproval, Code::ApprovalRequired)
    );
    let id = first.approval.expect("names its approval");
    assert!(
        first.reason().contains(&id.to_string()),
        "{}",
        first.reason()
    );
    assert!(
        first.limits.is_empty() && first.reservation.is_none(),
        "nothing counted yet"
    );
    match events.next(Duration::ZERO) {
        Some(ApprovalEvent::Opened(o)) => {
            assert_eq!(
                (o.id, o.tool.as_str(), o.rule.as_str()),
                (id, "transfer", "/tools/transfer")
            );
            assert_eq!(o.arguments, r#"{"amount":500,"to":"acct-1"}"#);
            assert_eq!(o.approvers, vec!["bob".to_owned()]);
            assert_eq!(o.expires_ms - o.created_ms, 600_000);
        }
        other => panic!("{other:?}"),
    }
    // Asked again while pending: the same approval, no second one opened.
    assert_eq!(transfer(&engine, 500).approval, Some(id));
    assert_eq!(events.next(Duration::ZERO), None);

    clock.advance_ns(60_000_000_000);
    table.decide(id, true, clock.wall_ms()).unwrap();
    let ran = transfer(&engine, 500);
    assert_eq!(
        (ran.verdict, ran.code, ran.approval),
        (Verdict::Allow, Code::Allowed, Some(id))
    );
    assert_eq!(
        ran.limits[0].remaining(),
        4.0,
        "its limits count when it runs"
    );
    assert!(
        matches!(events.next(Duration::ZERO), Some(ApprovalEvent::Used { id: used, .. }) if used == id)
    );

    // The identical call again needs a new approval; other arguments their own.
    let again = transfer(&engine, 500);
    assert_eq!(again.code, Code::ApprovalRequired);
    assert_ne!(again.approval, Some(id));
    let other = transfer(&engine, 501);
    assert_ne!(other.approval, again.approval);
}

#[test]
fn refused_and_expired_approvals_never_allow() {
    let (engine, clock, _events, table) = approving_engine();
    let id = transfer(&engine, 1).approval.unwrap();
    table.decide(id, false, clock.wall_ms()).unwrap();
    let d = transfer(&engine, 1);
    assert_eq!(
        (d.verdict, d.code, d.approval),
        (Verdict::Deny, Code::ApprovalDenied, Some(id))
    );

    let id = transfer(&engine, 2).approval.unwrap();
    table.decide(id, true, clock.wall_ms()).unwrap();
    clock.advance_ns(11 * 60 * 1_000_000_000);
    let d = transfer(&engine, 2);
    assert_eq!(d.code, Code::ApprovalRequired);
    assert_ne!(
        d.approval,
        Some(id),
        "a new approval: the old one lapsed unused"
    );
}

#[test]
fn a_dry_run_opens_no_approval_and_uses_none() {
    let (engine, clock, events, table) = approving_engine();
    let id = transfer(&engine, 3).approval.unwrap();
    let _ = events.next(Duration::ZERO);
    table.decide(id, true, clock.wall_ms()).unwrap();
    let args = serde_json::json!({"amount": 3, "to": "acct-1"});
    let mut req = Request {
        kind: Kind::Tool,
        name: "transfer",
        server: None,
        subject: Subject {
            grant: Some("g"),
            ..Default::default()
        },
        args: Some(&args),
        dry_run: true,
        hits: None,
        confirm: None,
    };
    assert_eq!(engine.decide(&req).code, Code::ApprovalRequired);
    req.dry_run = false;
    assert_eq!(
        engine.decide(&req).code,
        Code::Allowed,
        "the dry run left it unused"
    );
}

#[test]
fn racing_copies_of_an_approved_call_run_once_and_count_once() {
    let (engine, clock, _events, table) = approving_engine();
    let id = transfer(&engine, 9).approval.unwrap();
    table.decide(id, true, clock.wall_ms()).unwrap();
    let decisions: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| transfer(&engine, 9))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ran: Vec<_> = decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Allow)
        .collect();
    assert_eq!(ran.len(), 1, "{decisions:?}");
    // The losers gave back what they reserved: only the one run is counted.
    let probe = decide_args(
        &engine,
        "transfer",
        &serde_json::json!({"amount": 9, "to": "acct-1"}),
    );
    assert_eq!(probe.code, Code::ApprovalRequired);
    let id = probe.approval.unwrap();
    table.decide(id, true, clock.wall_ms()).unwrap();
    assert_eq!(transfer(&engine, 9).limits[0].remaining(), 3.0);
}

#[test]
fn without_approvals_enabled_the_call_is_only_denied() {
    let (engine, _) = engine(POLICY);
    let d = transfer(&engine, 1);
    assert_eq!(
        (d.verdict, d.code, d.approval),
        (Verdict::RequireApproval, Code::ApprovalRequired, None)
    );
}

/// A gate behind a glob: any tool name an agent makes up can reach it.
const GLOB_POLICY: &str = r#"{"version": "1", "tools": {
    "term*": {"action": "require_approval"}}}"#;

#[test]
fn a_tool_name_mcp_does_not_allow_never_opens_an_approval() {
    let (engine, events, _) = with_approvals(builder(GLOB_POLICY).0);
    let args = serde_json::json!({});
    let long = format!("term{}", "x".repeat(125));
    for forged in [
        "terminate\n\u{1b}[2Kapr_0  PENDING  harmless",
        "term inate",
        "term<!channel>",
        "term\u{202e}",
        long.as_str(),
    ] {
        let d = decide_args(&engine, forged, &args);
        assert_eq!(d.code, Code::InvalidRequest, "{forged:?}");
        assert_eq!(d.approval, None);
    }
    assert_eq!(events.next(Duration::ZERO), None, "no approval was opened");
    let d = decide_args(&engine, "terminate.v2", &args);
    assert_eq!(d.code, Code::ApprovalRequired);
}

#[test]
fn the_news_of_a_large_call_carries_a_bounded_preview_only() {
    let (engine, events, _) = with_approvals(builder(GLOB_POLICY).0);
    let preview = engine.approvals().unwrap().settings().preview_bytes;
    // Two-byte characters, so a cut at the byte bound would split one.
    let big = "é".repeat(1 << 19);
    let d = decide_args(&engine, "terminate", &serde_json::json!({"note": big}));
    assert_eq!(d.code, Code::ApprovalRequired);
    match events.next(Duration::ZERO) {
        Some(ApprovalEvent::Opened(o)) => {
            assert!(o.arguments.len() <= preview && o.arguments_cut);
            assert!(o.arguments.starts_with(r#"{"note":"éé"#));
            assert_eq!(
                o.arguments_bytes,
                (big.len() + r#"{"note":""}"#.len()) as u64
            );
            // Keyed: an argument may be a secret a plain digest gives away to guesses.
            let hex = o.arguments_digest.strip_prefix("hmac-sha256:").unwrap();
            assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        other => panic!("{other:?}"),
    }
}

/// An approval and a user's confirmation on one call: the approval first, then the user is
/// asked; the call runs once on both, and asking the user uses neither.
#[test]
fn a_call_needing_an_approval_and_a_confirmation_runs_once_on_both() {
    use toolgate_core::asking::confirmation::{Answer, Confirming};
    use toolgate_core::decision::Confirmation;
    let (builder, clock) = builder(
        r#"{"version": "1", "all_tools": {"action": "require_confirmation"}, "tools": {
            "wire": {"action": "require_approval"}}}"#,
    );
    let (engine, _events, table) = with_approvals(builder);
    let args = serde_json::json!({"to": "acct-9"});
    let decide = |confirm: &Confirming| {
        engine.decide(&Request {
            kind: Kind::Tool,
            name: "wire",
            server: None,
            subject: Subject {
                grant: Some("g"),
                ..Default::default()
            },
            args: Some(&args),
            dry_run: false,
            hits: None,
            confirm: Some(confirm),
        })
    };
    let asking = Confirming {
        can_ask: true,
        answer: None,
    };
    let pending = decide(&asking);
    assert_eq!(pending.code, Code::ApprovalRequired, "the approval first");
    let id = pending.approval.unwrap();
    table.decide(id, true, clock.wall_ms()).unwrap();
    let asked = decide(&asking);
    assert_eq!(asked.code, Code::ConfirmationRequired);
    let Some(Confirmation::Asked { token, .. }) = asked.confirmation.as_deref() else {
        panic!("{asked:?}");
    };
    // Asking the user did not use the approval: it is asked again, by the same approval.
    assert_eq!(decide(&asking).code, Code::ConfirmationRequired);
    let yes = Confirming {
        can_ask: true,
        answer: Some(Answer {
            token: token.clone(),
            yes: true,
        }),
    };
    let ran = decide(&yes);
    assert_eq!((ran.code, ran.approval), (Code::Allowed, Some(id)));
    // Both are used: the same answer again is refused, and a new call needs a new approval.
    assert_eq!(decide(&yes).code, Code::ApprovalRequired);
}

/// Made-up credentials hold at most half of the approvals table: a caller a server vouched
/// for still opens one after a flood of them, and a caller nothing vouched for does not.
#[test]
fn made_up_credentials_leave_room_for_a_vouched_caller() {
    let (engine, _events, table) = with_approvals(builder(POLICY).0.trust_server_answers());
    let as_grant = |grant: &str, n: i64| {
        engine.decide(&Request {
            kind: Kind::Tool,
            name: "transfer",
            server: None,
            subject: Subject {
                grant: Some(grant),
                ..Default::default()
            },
            args: Some(&serde_json::json!({"amount": n, "to": "acct-1"})),
            dry_run: false,
            hits: None,
            confirm: None,
        })
    };
    let opened = (0..48)
        .filter(|n| as_grant(&format!("made-up-{n}"), *n).approval.is_some())
        .count();
    assert_eq!(opened, table.capacity() / 2);
    let refused = as_grant("never-vouched", 1);
    assert!(refused.approval.is_none());
    assert!(
        refused.reason().contains("too many are waiting"),
        "{}",
        refused.reason()
    );
    assert!(engine.vouch_for("real"));
    let real = as_grant("real", 1);
    assert!(real.approval.is_some(), "{}", real.reason());
}
