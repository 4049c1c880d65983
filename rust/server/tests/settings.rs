//! The sidecar's settings: every option by its flag's name, refused when wrong (naming the
//! flag), and turned into the options a sidecar is made of.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::time::Duration;
use toolgate_core::observing::decision_log::Filter;
use toolgate_runtime::store::{Mode, TimeSource, Unavailable};
use toolgate_server::native::Listen;
use toolgate_server::settings::{Settings, CHOICES, MIN_KEY_BYTES};
use toolgate_server::sidecar::Store;
use toolgate_server::subject::SubjectSource;

fn defaults() -> Map<String, Value> {
    match serde_json::to_value(Settings::default()) {
        Ok(Value::Object(all)) => all,
        _ => unreachable!(),
    }
}

fn given(options: Value) -> Result<Settings, String> {
    let settings = Settings::from_json(options)?;
    settings.check()?;
    Ok(settings)
}

fn flag(option: &str) -> String {
    format!("--{}", option.replace('_', "-"))
}

/// The options that are counts of at least one.
const COUNTS: [&str; 11] = [
    "capacity",
    "reservations",
    "max_argument_bytes",
    "max_message_bytes",
    "store_timeout_ms",
    "store_flush_ms",
    "approval_pending_per_grant",
    "approval_pending_per_rule",
    "approval_preview_bytes",
    "approvals_capacity",
    "approvals_queue",
];

#[test]
fn the_defaults_check_and_read_back_the_same() {
    let settings = Settings::default();
    settings.check().unwrap();
    assert_eq!(given(json!({})).unwrap(), settings);
    assert_eq!(given(Value::Object(defaults())).unwrap(), settings);
    assert_eq!(settings.replace(Map::new()).unwrap(), settings);
}

#[test]
fn a_name_that_is_no_option_is_refused_naming_it() {
    let e = given(json!({"capacitty": 5})).unwrap_err();
    assert_eq!(e, "there is no option --capacitty");
    assert!(given(json!([1]))
        .unwrap_err()
        .contains("an object of options"));
}

#[test]
fn a_value_of_the_wrong_type_is_refused_naming_its_flag() {
    for (option, default) in defaults() {
        // Of no option's type.
        let e = given(json!({ option.clone(): [default] })).unwrap_err();
        assert!(
            e.starts_with(&format!("{}: invalid type", flag(&option))),
            "{e}"
        );
    }
    let e = given(json!({"capacity": -1})).unwrap_err();
    assert!(e.starts_with("--capacity: invalid value"), "{e}");
    let e = given(json!({"threads": true})).unwrap_err();
    assert!(e.starts_with("--threads: invalid type"), "{e}");
}

#[test]
fn a_count_of_zero_is_refused_naming_its_flag() {
    for option in COUNTS.iter().chain(&["threads"]) {
        let e = given(json!({ *option: 0 })).unwrap_err();
        assert_eq!(e, format!("{} must be at least 1", flag(option)));
    }
}

#[test]
fn every_choice_takes_its_words_and_nothing_else_whatever_the_store() {
    let names: [(&str, &[&str]); 4] = [
        ("store_unavailable", &Unavailable::NAMES),
        ("store_mode", &Mode::NAMES),
        ("store_clock", &TimeSource::NAMES),
        ("decision_log_filter", &Filter::NAMES),
    ];
    assert_eq!(CHOICES, names);
    for store in ["local", "redis://127.0.0.1:1/0"] {
        for (option, words) in CHOICES {
            for word in words {
                let settings = given(json!({ option: word, "store": store })).unwrap();
                assert!(settings.options(&[], None).is_ok());
            }
            for word in ["", "EXACT", "all ", "none"] {
                let e = given(json!({ option: word, "store": store })).unwrap_err();
                assert!(e.starts_with(&format!("{} is ", flag(option))), "{e}");
            }
        }
    }
    // The names are the ones their types read.
    assert!(Unavailable::NAMES
        .iter()
        .all(|n| Unavailable::parse(n).is_ok()));
    assert!(Filter::NAMES.iter().all(|n| Filter::parse(n).is_some()));
}

#[test]
fn the_options_are_what_the_settings_say() {
    let settings = given(json!({
        "store": "redis://127.0.0.1:1/0",
        "store_mode": "cached",
        "store_flush_ms": 7,
        "store_connect_wait": 0.0,
        "decision_log": "-",
        "decision_log_rotate_mib": 0.5,
        "grant_from": "jwt:sub",
        "session_from": "jwt:sid",
        "listen": "unix:/tmp/toolgate.sock",
        "threads": 3,
        "grant_vouched_by_server": true,
    }))
    .unwrap();
    let key = [7u8; MIN_KEY_BYTES];
    let options = settings
        .options(&key, Some("approvals.table".into()))
        .unwrap();
    let Store::Redis {
        config,
        connect_wait,
    } = &options.store
    else {
        panic!("a Redis URL counts on Redis")
    };
    assert_eq!(
        config.mode,
        Mode::Cached {
            flush: Duration::from_millis(7)
        }
    );
    assert_eq!(*connect_wait, Duration::ZERO);
    let log = options.decision_log.as_ref().unwrap();
    assert_eq!((log.path.as_ref(), log.rotate_bytes), (None, 1 << 19));
    assert_eq!(log.grant_key, key);
    // With Redis, replicas given one key accept each other's confirmations.
    assert_eq!(options.confirmation_secret.as_deref(), Some(&key[..]));
    assert!(options.trust_server_answers);
    let serve = options.serve.unwrap();
    assert_eq!(serve.threads, 3);
    assert!(matches!(serve.listen, Listen::Unix(_)));
    assert_eq!(serve.authz.grant, SubjectSource::JwtClaim("sub".into()));
    assert_eq!(serve.authz.session, SubjectSource::JwtClaim("sid".into()));
    assert_eq!(settings.verified(), (false, true));
    assert!(options.approvals.is_some());

    // Counting here: confirmations are this process's own, and no log without one.
    let local = Settings::default().options(&key, None).unwrap();
    assert!(local.confirmation_secret.is_none());
    assert!(local.decision_log.is_none() && local.approvals.is_none());
}

#[test]
fn approvals_need_a_key_of_32_bytes() {
    let settings = Settings::default();
    let short = [1u8; MIN_KEY_BYTES - 1];
    let Err(e) = settings.options(&short, Some("t".into())) else {
        panic!("a short key is refused")
    };
    assert!(e.contains("at least 32 bytes"), "{e}");
    // Without approvals the key's length is no one's business.
    settings.options(&short, None).unwrap();
}

#[test]
fn subjects_are_read_from_lower_case_headers_or_claims() {
    for (options, wrong) in [
        (json!({"grant_from": "jwt:"}), "--grant-from"),
        (json!({"agent_from": "cookie"}), "--agent-from"),
        (json!({"session_from": "jwt"}), "--session-from"),
        (json!({"agent_header": "X-Agent"}), "--agent-header"),
        (json!({"server_header": ""}), "--server-header"),
        (json!({"max_request_bytes": 0}), "--max-request-bytes"),
        (json!({"listen": "localhost:1"}), "--listen"),
        (json!({"store": "http://x"}), "--store"),
        (
            json!({"decision_log_rotate_mib": -1.0}),
            "--decision-log-rotate-mib",
        ),
        (json!({"store_connect_wait": -1.0}), "--store-connect-wait"),
    ] {
        let e = given(options.clone()).unwrap_err();
        assert!(e.starts_with(wrong), "{options}: {e}");
    }
    // A header is read only where the subject comes from it: a claim needs none.
    let claims = given(json!({"agent_from": "jwt:azp"})).unwrap();
    assert_eq!(claims.verified(), (true, false));
}

/// Any JSON value a caller could send for an option.
fn values() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..5).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z:/.0-9-]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "exact", "cached", "deny", "local", "all", "header", "jwt:sub"
        ])
        .prop_map(Value::from),
    ]
}

proptest! {
    /// Whatever options are given, the settings are refused with a message naming a flag,
    /// or make options; what was given reads back.
    #[test]
    fn any_options_are_refused_by_flag_or_read_back(
        picks in prop::collection::vec((prop::sample::select(defaults().keys().cloned().collect::<Vec<_>>()), values()), 0..6)
    ) {
        let options: Map<String, Value> = picks.into_iter().collect();
        match given(Value::Object(options.clone())) {
            Err(e) => prop_assert!(e.starts_with("--") || e.contains(" --"), "{}", e),
            Ok(settings) => {
                let back = serde_json::to_value(&settings).unwrap();
                for (option, value) in &options {
                    // Integers given as floats read back as floats of the same value.
                    prop_assert_eq!(back[option].as_f64(), value.as_f64(), "{}", option);
                    if !value.is_number() {
                        prop_assert_eq!(&back[option], value);
                    }
                }
                prop_assert!(settings.options(&[0; MIN_KEY_BYTES], Some("t".into())).is_ok());
                prop_assert_eq!(settings.replace(Map::new()).unwrap(), settings.clone());
            }
        }
    }
}
