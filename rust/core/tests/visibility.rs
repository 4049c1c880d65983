//! Which tools a caller sees listed, against what deciding its calls says: for generated
//! policies, callers and arguments, a removed tool is denied whatever its arguments; where
//! no condition reads an argument, a tool is shown exactly when some call of it is not
//! denied by the policy's rules; and a caller-dependent answer says so.

mod policies;

use policies::{policy, TOOLS};
use proptest::prelude::*;
use serde_json::{json, Value};
use toolgate_core::Kind;
use toolgate_core::{Code, Engine, Policy, Request, Subject, Verdict};

const AGENTS: [Option<&str>; 3] = [None, Some("bot"), Some("a")];

fn args_reading(policy: &Value) -> bool {
    policy.to_string().contains("\"args.")
}

/// Denied by a rule of the policy (not by a limit, an approval, or a missing key).
fn denied_by_rules(
    engine: &Engine,
    tool: &str,
    server: Option<&str>,
    subject: Subject<'_>,
    args: Option<&Value>,
) -> bool {
    let d = engine.decide(&Request {
        kind: Kind::Tool,
        name: tool,
        server,
        subject,
        args,
        dry_run: true,
        hits: None,
        confirm: None,
    });
    d.verdict == Verdict::Deny
        && matches!(
            d.code,
            Code::Hidden | Code::DefaultDeny | Code::RuleDeny | Code::ConditionFailed
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_listing_agrees_with_deciding(policy in policy(), session in any::<bool>()) {
        let engine = Engine::with_defaults(Policy::from_json_str(&policy.to_string()).unwrap()).unwrap();
        let compiled = engine.policy();
        let argument_sets = [None, Some(json!({})), Some(json!({"force": true})),
            Some(json!({"x": 1})), Some(json!({"force": false, "x": "1"}))];
        for server in [None, Some("s1")] {
            for tool in TOOLS {
                let mut answers = Vec::new();
                for agent in AGENTS {
                    let subject = Subject {
                        agent,
                        session: session.then_some("s"),
                        grant: Some("g"),
                        ..Default::default()
                    };
                    let seen = compiled.visibility(Kind::Tool, tool, server, subject, None);
                    if !seen.shown() {
                        for args in &argument_sets {
                            prop_assert!(
                                denied_by_rules(&engine, tool, server, subject, args.as_ref()),
                                "{tool} removed for {agent:?} on {server:?} but {args:?} is not denied",
                            );
                        }
                    }
                    if !args_reading(&policy) {
                        let allowed = !denied_by_rules(&engine, tool, server, subject, None);
                        prop_assert_eq!(seen.shown(), allowed, "{} for {:?} on {:?}", tool, agent, server);
                    }
                    answers.push(seen);
                }
                // Callers told apart must be told that the answer is theirs.
                if answers.iter().any(|a| a.shown() != answers[0].shown()) {
                    prop_assert!(answers.iter().all(|a| a.per_subject), "{tool} on {server:?}: {answers:?}");
                }
            }
        }
    }
}

#[test]
fn argument_conditions_keep_a_tool_and_caller_conditions_remove_it() {
    let policy = json!({"version": "1", "default": "deny", "hide": ["secret_*"], "tools": {
        "run": {"deny_if": [{"path": "args.command", "op": "regex", "value": "rm -rf"}]},
        "admin": {"require": [{"path": "subject.agent", "op": "in", "value": ["ops"]}]},
        "wire": {"action": "require_approval"},
        "drop": {"action": "deny"}}});
    let engine =
        Engine::with_defaults(Policy::from_json_str(&policy.to_string()).unwrap()).unwrap();
    let p = engine.policy();
    let bot = Subject {
        agent: Some("bot"),
        ..Default::default()
    };
    let ops = Subject {
        agent: Some("ops"),
        ..Default::default()
    };
    let removed = |tool, s| p.visibility(Kind::Tool, tool, None, s, None).removed;
    assert_eq!(removed("run", bot), None);
    assert_eq!(removed("wire", bot), None);
    assert_eq!(removed("admin", ops), None);
    assert_eq!(removed("admin", bot), Some(Code::ConditionFailed));
    assert!(
        p.visibility(Kind::Tool, "admin", None, bot, None)
            .per_subject
    );
    assert_eq!(removed("secret_key", ops), Some(Code::Hidden));
    assert_eq!(removed("drop", ops), Some(Code::RuleDeny));
    assert_eq!(removed("other", ops), Some(Code::DefaultDeny));
    assert!(
        !p.visibility(Kind::Tool, "other", None, ops, None)
            .per_subject
    );
}
