//! The sidecar's options by the names `toolgate serve` gives them (`--store-mode` is
//! `store_mode`), each with its type and default written here once, and checked here once
//! ([`Settings::options`]) into the [`Options`] a sidecar is assembled from. The command
//! line reads its defaults and choices from here and passes what it was given through.

use crate::authzen_listener::AuthZenOptions;
use crate::native::{Config, Listen, DEFAULT_MAX_ARGUMENT_BYTES, DEFAULT_MAX_MESSAGE_BYTES};
use crate::sidecar::{ApprovalOptions, Options, Store};
use crate::spans::TraceOptions;
use crate::subject::{header_name, AuthzConfig, SubjectSource, DEFAULT_MAX_REQUEST_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;
use toolgate_core::asking::approval::{
    ApprovalSettings, CallDigests, Caps, DEFAULT_PENDING_PER_GRANT, DEFAULT_PENDING_PER_RULE,
};
use toolgate_core::asking::approval_text::DEFAULT_PREVIEW_BYTES;
use toolgate_core::engine::{DEFAULT_CAPACITY, DEFAULT_RESERVATIONS};
use toolgate_core::observing::decision_log::Filter;
use toolgate_runtime::decision_log::{self, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES};
use toolgate_runtime::store::{self, Mode, RedisConfig, TimeSource, Unavailable};
use toolgate_runtime::tokens::{self, TokenDigests};

/// The fewest bytes of the key that digests calls for approvals.
pub const MIN_KEY_BYTES: usize = 32;

/// The sidecar's options. Those without a `toolgate serve` flag (`max_message_bytes`,
/// `store_connect_wait`, `store_clock`, the queues and `approvals_capacity`) are for
/// programs and tests that assemble a sidecar themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// gRPC: `HOST:PORT` or `unix:PATH`.
    pub listen: String,
    /// Serving threads; `None`: one per CPU this process may use.
    pub threads: Option<usize>,
    /// Counter-table slots and reservation-log lines.
    pub capacity: usize,
    pub reservations: usize,
    /// Larger arguments are refused; so are larger request messages.
    pub max_argument_bytes: usize,
    pub max_message_bytes: usize,
    pub metrics_per_tool: bool,
    /// `local`, or a Redis URL (docs/redis.md), and how the sidecar uses it.
    pub store: String,
    pub store_prefix: String,
    pub store_timeout_ms: u64,
    pub store_unavailable: String,
    pub store_mode: String,
    pub store_flush_ms: u64,
    /// Seconds to wait for Redis's first connection before serving anyway.
    pub store_connect_wait: f64,
    /// Whose clock counts: `redis`, or `engine` for tests on a manual clock.
    pub store_clock: String,
    /// A file, `-` for stdout, or none.
    pub decision_log: Option<String>,
    pub decision_log_filter: String,
    /// A file starts anew past this size (0: never).
    pub decision_log_rotate_mib: f64,
    pub decision_log_queue: usize,
    pub decision_log_queue_bytes: usize,
    pub approval_pending_per_grant: usize,
    pub approval_pending_per_rule: usize,
    pub approval_preview_bytes: usize,
    /// Slots of a new approvals table, and approval news waiting for the control plane.
    pub approvals_capacity: usize,
    pub approvals_queue: usize,
    /// How Envoy's `Check` requests are read: which header carries what, or which claim of
    /// the JWT Envoy verified (`jwt:CLAIM`), where those claims are, and Envoy's body limit.
    pub grant_header: String,
    pub session_header: String,
    pub agent_header: String,
    pub server_header: String,
    pub grant_from: String,
    pub session_from: String,
    pub agent_from: String,
    pub jwt_payload_key: String,
    pub max_request_bytes: usize,
    /// Let servers' answers vouch for grants.
    pub grant_vouched_by_server: bool,
    /// The OpenTelemetry collector's OTLP/gRPC address each decision's span is exported to;
    /// none: not traced.
    pub otlp_endpoint: Option<String>,
    /// The share of new traces sampled (a request with a parent follows its parent's choice).
    pub otlp_sample_ratio: f64,
    /// The AuthZEN Authorization API's HTTP address (`HOST:PORT` or `unix:PATH`); none: off.
    pub authzen_listen: Option<String>,
    /// The bearer tokens its callers present (`NAME TOKEN` per line, as `--admin-tokens`).
    pub authzen_tokens: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let authz = AuthzConfig::default();
        let header = |source: SubjectSource| match source {
            SubjectSource::Header(name) => name,
            SubjectSource::JwtClaim(_) => unreachable!("by default the subject is in headers"),
        };
        Settings {
            listen: "127.0.0.1:50051".into(),
            threads: None,
            capacity: DEFAULT_CAPACITY,
            reservations: DEFAULT_RESERVATIONS,
            max_argument_bytes: DEFAULT_MAX_ARGUMENT_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            metrics_per_tool: false,
            store: "local".into(),
            store_prefix: store::DEFAULT_PREFIX.into(),
            store_timeout_ms: store::DEFAULT_TIMEOUT_MS,
            store_unavailable: Unavailable::NAMES[0].into(),
            store_mode: Mode::NAMES[0].into(),
            store_flush_ms: store::DEFAULT_FLUSH_MS,
            store_connect_wait: 2.0,
            store_clock: TimeSource::NAMES[0].into(),
            decision_log: None,
            decision_log_filter: Filter::NAMES[0].into(),
            decision_log_rotate_mib: 100.0,
            decision_log_queue: DEFAULT_QUEUE,
            decision_log_queue_bytes: DEFAULT_QUEUE_BYTES,
            approval_pending_per_grant: DEFAULT_PENDING_PER_GRANT,
            approval_pending_per_rule: DEFAULT_PENDING_PER_RULE,
            approval_preview_bytes: DEFAULT_PREVIEW_BYTES,
            approvals_capacity: 4096,
            approvals_queue: 4096,
            grant_header: header(authz.grant),
            session_header: header(authz.session),
            agent_header: header(authz.agent),
            server_header: authz.server_header,
            grant_from: "header".into(),
            session_from: "header".into(),
            agent_from: "header".into(),
            jwt_payload_key: authz.jwt_payload_key,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            grant_vouched_by_server: false,
            otlp_endpoint: None,
            otlp_sample_ratio: 1.0,
            authzen_listen: None,
            authzen_tokens: None,
        }
    }
}

/// The options that take one of a few words, and those words.
pub const CHOICES: [(&str, &[&str]); 4] = [
    ("store_unavailable", &Unavailable::NAMES),
    ("store_mode", &Mode::NAMES),
    ("store_clock", &TimeSource::NAMES),
    ("decision_log_filter", &Filter::NAMES),
];

fn at_least_one<N: Copy + PartialEq + Default>(option: &str, n: N) -> Result<N, String> {
    match n == N::default() {
        true => Err(format!("--{option} must be at least 1")),
        false => Ok(n),
    }
}

fn seconds(option: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| format!("--{option} must be a non-negative number of seconds, got {s}"))
}

impl Settings {
    /// Settings from a JSON object of options by name; those left out keep their defaults.
    /// The first option of the wrong type, or one with no such name, is the error. The
    /// values are not checked yet ([`Settings::check`]).
    pub fn from_json(given: Value) -> Result<Settings, String> {
        if !given.is_object() {
            return Err("the sidecar's settings are an object of options by name".into());
        }
        serde_path_to_error::deserialize(given).map_err(|e| {
            let (path, inner) = (e.path().to_string(), e.into_inner());
            let flag = format!("--{}", path.replace('_', "-"));
            match inner.to_string() {
                _ if path == "." => inner.to_string(),
                m if m.starts_with("unknown field") => format!("there is no option {flag}"),
                m => format!("{flag}: {m}"),
            }
        })
    }

    /// These settings with `changes` (options by name) made.
    pub fn replace(&self, changes: Map<String, Value>) -> Result<Settings, String> {
        let Ok(Value::Object(mut all)) = serde_json::to_value(self) else {
            unreachable!("settings are an object")
        };
        all.extend(changes);
        Settings::from_json(Value::Object(all))
    }

    /// The word an option of [`CHOICES`] holds.
    fn choice(&self, option: &str) -> &str {
        match option {
            "store_unavailable" => &self.store_unavailable,
            "store_mode" => &self.store_mode,
            "store_clock" => &self.store_clock,
            "decision_log_filter" => &self.decision_log_filter,
            _ => unreachable!("{option} is no choice"),
        }
    }

    /// Whether every option holds a value the sidecar can be made of; the first that does
    /// not, named by its flag.
    pub fn check(&self) -> Result<(), String> {
        self.options(&[], None).map(drop)
    }

    /// The threads that serve: `threads`, or one per CPU this process may use (its affinity
    /// and its cgroup's CPU quota, in whole CPUs, as the standard library counts them).
    pub fn serving_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Whether the agent, and the session, come from a claim of a JWT the proxy verified
    /// rather than from a header the client chooses (false for settings that do not check).
    pub fn verified(&self) -> (bool, bool) {
        let claim = |s| matches!(s, Ok(SubjectSource::JwtClaim(_)));
        let part = |from: &str, header: &str, name| SubjectSource::from_option(from, header, name);
        (
            claim(part(&self.agent_from, &self.agent_header, "agent")),
            claim(part(&self.session_from, &self.session_header, "session")),
        )
    }

    fn traces(&self) -> Result<Option<TraceOptions>, String> {
        let ratio = self.otlp_sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!("--otlp-sample-ratio is from 0 to 1, not {ratio}"));
        }
        Ok(self.otlp_endpoint.as_ref().map(|endpoint| TraceOptions {
            endpoint: endpoint.clone(),
            sample_ratio: ratio,
        }))
    }

    /// The AuthZEN listener, if there is one: on any address but a loopback one (or a unix
    /// socket) its callers must present a token.
    fn authzen(&self) -> Result<Option<AuthZenOptions>, String> {
        let Some(listen) = &self.authzen_listen else {
            return match self.authzen_tokens {
                Some(_) => {
                    Err("--authzen-tokens is for --authzen-listen, which is not given".into())
                }
                None => Ok(None),
            };
        };
        let parsed = Listen::parse(listen).map_err(|e| format!("--authzen-listen: {e}"))?;
        let tokens = match &self.authzen_tokens {
            None => None,
            Some(path) => {
                let tokens = tokens::load(std::path::Path::new(path))
                    .map_err(|e| format!("--authzen-tokens: {e}"))?;
                Some(TokenDigests::new(&tokens))
            }
        };
        let local = match &parsed {
            Listen::Unix(_) => true,
            Listen::Tcp(address) => address.ip().is_loopback(),
        };
        if tokens.is_none() && !local {
            return Err(format!(
                "--authzen-listen {listen} is not a loopback address: its callers must \
                 authenticate, with --authzen-tokens"
            ));
        }
        Ok(Some(AuthZenOptions {
            listen: parsed,
            tokens,
        }))
    }

    /// How `Check` requests are read.
    pub fn authz(&self) -> Result<AuthzConfig, String> {
        if self.max_request_bytes == 0 {
            return Err("--max-request-bytes must be at least 1".into());
        }
        Ok(AuthzConfig {
            grant: SubjectSource::from_option(&self.grant_from, &self.grant_header, "grant")?,
            agent: SubjectSource::from_option(&self.agent_from, &self.agent_header, "agent")?,
            session: SubjectSource::from_option(
                &self.session_from,
                &self.session_header,
                "session",
            )?,
            server_header: header_name(&self.server_header, "server")?,
            jwt_payload_key: self.jwt_payload_key.clone(),
            max_request_bytes: self.max_request_bytes,
        })
    }

    /// The options these settings give a sidecar keyed with `key` (the decision log's grants,
    /// the approvals' call digests and, with Redis, confirmations: replicas given one key
    /// accept each other's), with approvals in the table file `approvals_table` (none
    /// without one). The first wrong option is the error, named by its flag.
    pub fn options(&self, key: &[u8], approvals_table: Option<PathBuf>) -> Result<Options, String> {
        // Every choice whatever the store: a mistake is one before it matters.
        for (option, words) in CHOICES {
            let given = self.choice(option);
            if !words.contains(&given) {
                let flag = option.replace('_', "-");
                return Err(format!("--{flag} is {}, got {given:?}", words.join(" or ")));
            }
        }
        at_least_one("capacity", self.capacity)?;
        at_least_one("reservations", self.reservations)?;
        at_least_one("max-argument-bytes", self.max_argument_bytes)?;
        at_least_one("max-message-bytes", self.max_message_bytes)?;
        let threads = at_least_one("threads", self.serving_threads())?;
        let connect_wait = seconds("store-connect-wait", self.store_connect_wait)?;
        let store = match self.store.as_str() {
            "local" => Store::Local,
            url => Store::Redis {
                config: RedisConfig::from_options(
                    url,
                    &self.store_prefix,
                    self.store_timeout_ms,
                    &self.store_unavailable,
                    &self.store_mode,
                    self.store_flush_ms,
                    &self.store_clock,
                )?,
                connect_wait,
            },
        };
        at_least_one("store-timeout-ms", self.store_timeout_ms)?;
        at_least_one("store-flush-ms", self.store_flush_ms)?;
        let filter = Filter::parse(&self.decision_log_filter).ok_or_else(|| {
            format!(
                "--decision-log-filter is all or denials, not {:?}",
                self.decision_log_filter
            )
        })?;
        let mib = self.decision_log_rotate_mib;
        if !(mib.is_finite() && mib >= 0.0) {
            return Err(format!(
                "--decision-log-rotate-mib must be a non-negative number, got {mib}"
            ));
        }
        let decision_log = self
            .decision_log
            .as_ref()
            .map(|path| decision_log::Settings {
                path: (path != "-").then(|| path.into()),
                filter,
                rotate_bytes: (mib * f64::from(1 << 20)) as u64,
                queue: self.decision_log_queue,
                queue_bytes: self.decision_log_queue_bytes,
                grant_key: key.to_vec(),
            });
        let settings = ApprovalSettings {
            digests: CallDigests::new(key),
            caps: Caps {
                per_grant: at_least_one(
                    "approval-pending-per-grant",
                    self.approval_pending_per_grant,
                )?,
                per_rule: at_least_one(
                    "approval-pending-per-rule",
                    self.approval_pending_per_rule,
                )?,
            },
            preview_bytes: at_least_one("approval-preview-bytes", self.approval_preview_bytes)?,
            queue: at_least_one("approvals-queue", self.approvals_queue)?,
        };
        at_least_one("approvals-capacity", self.approvals_capacity)?;
        let approvals = match approvals_table {
            None => None,
            Some(_) if key.len() < MIN_KEY_BYTES => {
                return Err(format!(
                    "the approvals key has at least {MIN_KEY_BYTES} bytes"
                ))
            }
            Some(table) => Some(ApprovalOptions {
                table,
                capacity: self.approvals_capacity,
                settings,
            }),
        };
        // With counts in this process only, used answers are this process's own (a key
        // made at start), so that a restart or another replica sharing the key cannot run
        // one yes again; with Redis, every replica counts uses there and shares the key.
        let confirmation_secret = match store {
            Store::Redis { .. } if !key.is_empty() => Some(key.to_vec()),
            _ => None,
        };
        Ok(Options {
            capacity: self.capacity,
            reservations: self.reservations,
            per_tool_metrics: self.metrics_per_tool,
            store,
            decision_log,
            approvals,
            confirmation_secret,
            trust_server_answers: self.grant_vouched_by_server,
            traces: self.traces()?,
            authzen: self.authzen()?,
            serve: Some(Config {
                listen: Listen::parse(&self.listen).map_err(|e| format!("--listen: {e}"))?,
                threads,
                max_argument_bytes: self.max_argument_bytes,
                max_message_bytes: self.max_message_bytes,
                authz: self.authz()?,
            }),
        })
    }
}
