//! The filter's configuration: Envoy's `filter_config` (a JSON object: a `google.protobuf.Struct`
//! reaches the module as JSON text, a `StringValue` as its string) read once, on Envoy's main
//! thread, into an engine every worker thread shares.
//!
//! `{"policy": "examples/policy.json", "server": "images", "key": PATH, "settings": {...}}`:
//! the policy file (and the pins files it names, read as `toolgate serve` reads them); the MCP
//! server behind the routes the filter runs on (else the `server_header`'s value); the
//! deployment's key file (`toolgate serve`'s `STATE_DIR/grant.key`), which the decision log
//! labels grants with; and the sidecar's settings by their flags' names, of which the module
//! takes the counter table's size, how callers are read and the decision log's. A setting the
//! module does not honour yet is refused, not ignored.

use crate::ask_sidecar::Sidecar;
use crate::deciders::Deciders;
use crate::decision_logs;
use crate::metrics::Metrics;
use crate::reload::{policy_of, ReloadCounts, Reloader};
use crate::shared;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::{Engine, MonotonicClock};
use toolgate_runtime::policy_watch::{read_version, RELOAD_INTERVAL, RELOAD_SETTLE};
use toolgate_runtime::store::RedisStore;
use toolgate_server::held::HeldBytes;
use toolgate_server::settings::Settings;
use toolgate_server::sidecar::Store;
use toolgate_server::subject::AuthzConfig;

/// The settings the module honours; any other given away from its default is refused. A
/// verified token's claims (`grant_from: jwt:CLAIM` and the others) are read from the filter
/// state `set_filter_state` writes ([`crate::verified`]), not from `jwt_payload_key`'s metadata.
const HONOURED: [&str; 23] = [
    "capacity",
    "reservations",
    "grant_header",
    "grant_from",
    "session_header",
    "session_from",
    "agent_header",
    "agent_from",
    "server_header",
    "max_request_bytes",
    "decision_log",
    "decision_log_filter",
    "decision_log_rotate_mib",
    "decision_log_queue",
    "decision_log_queue_bytes",
    "store",
    "store_prefix",
    "store_timeout_ms",
    "store_unavailable",
    "store_mode",
    "store_flush_ms",
    "store_connect_wait",
    "store_clock",
];

/// Decider threads, where decisions may wait on Redis: each waits one round trip at a time.
const DECIDERS: usize = 8;

/// A key file's least size, as `toolgate serve` reads one.
const MIN_KEY_BYTES: usize = 32;

/// What every stream of the filter decides with.
pub struct Config {
    pub engine: Arc<Engine>,
    pub authz: Arc<AuthzConfig>,
    /// Where decisions are made when they may wait on the network (counters in Redis); on
    /// Envoy's worker threads otherwise.
    pub deciders: Option<Deciders>,
    /// The MCP server behind the filter's routes, when the configuration names it.
    pub server: Option<String>,
    /// What the streams' followers of answers may hold at once (unfinished list events, call
    /// answers read so far), as the sidecar's ext_proc streams do.
    pub budget: Arc<HeldBytes>,
    /// The `tools/list` answers read last, so that the same answer is not read again.
    pub known: Arc<KnownAnswers>,
    /// The engine's metrics as Envoy's stats, once Envoy has taken their definitions.
    pub metrics: Option<Metrics>,
    pub reloads: Arc<ReloadCounts>,
    /// Where `toolgate serve` is asked what only it holds (approvals), if anywhere.
    pub sidecar: Option<Sidecar>,
    /// The policy file's watch, stopped with the configuration.
    _reloader: Option<Reloader>,
}

impl Config {
    /// The configuration `text` gives, or what is wrong with it.
    pub fn read(text: &[u8]) -> Result<Config, String> {
        let Ok(Value::Object(mut given)) = serde_json::from_slice::<Value>(text) else {
            return Err("the filter_config is a JSON object (a google.protobuf.Struct)".into());
        };
        let policy = match given.remove("policy") {
            Some(Value::String(path)) => path,
            _ => return Err("the filter_config names its policy file: \"policy\": PATH".into()),
        };
        let server = match given.remove("server") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(_) => return Err("\"server\" is the MCP server's name".into()),
        };
        let key = match given.remove("key") {
            // The process's own: grants get other labels after a restart.
            None => shared::own_key()?,
            Some(Value::String(path)) => read_key(Path::new(&path))?,
            Some(_) => return Err("\"key\" is the path of the deployment's key file".into()),
        };
        let sidecar = given
            .remove("sidecar")
            .map(|s| Sidecar::read(&s))
            .transpose()?;
        let interval = seconds(
            given.remove("reload_interval"),
            "reload_interval",
            RELOAD_INTERVAL,
        )?;
        if interval > 0.0 && interval < MIN_INTERVAL {
            return Err(format!(
                "\"reload_interval\" is 0 (never) or at least {MIN_INTERVAL} seconds"
            ));
        }
        let settle = seconds(
            given.remove("reload_settle"),
            "reload_settle",
            RELOAD_SETTLE,
        )?;
        let settings = match given.remove("settings") {
            None => Map::new(),
            Some(Value::Object(s)) => s,
            Some(_) => return Err("\"settings\" is an object of the sidecar's settings".into()),
        };
        if let Some(key) = given.keys().next() {
            return Err(format!("the filter_config has no {key:?}"));
        }
        if let Some(name) = settings.keys().find(|k| !HONOURED.contains(&k.as_str())) {
            return Err(format!(
                "the module does not take the setting {name:?} (it takes {})",
                HONOURED.join(", ")
            ));
        }
        let settings = Settings::from_json(Value::Object(settings))?;
        settings.check()?;
        let path = PathBuf::from(policy);
        // The bytes the policy is made of are the ones the reload compares the file with.
        let loaded = read_version(&path).map_err(|e| {
            format!(
                "policy {}: cannot read {}: {e}",
                path.display(),
                path.display()
            )
        })?;
        let policy = policy_of(&loaded, &path)
            .0
            .map_err(|e| format!("policy {}: {e}", path.display()))?;
        let options = settings.options(&key, None)?;
        let table = shared::counter_table(settings.capacity, settings.reservations)?;
        let mut engine = Engine::builder(policy, Arc::clone(&table), Arc::new(MonotonicClock));
        let mut deciders = None;
        if let Store::Redis {
            config,
            connect_wait,
        } = options.store
        {
            // The table is where the store falls back to.
            let store = RedisStore::connect(config, table, connect_wait)?;
            engine = engine.store(Arc::new(store));
            deciders = Some(Deciders::start(DECIDERS)?);
        }
        if let Some(log) = options.decision_log {
            engine = engine.decision_log(decision_logs::open(log)?);
        }
        let engine = Arc::new(engine.build()?);
        let reloads = Arc::new(ReloadCounts::default());
        // An interval of 0: the policy is the one read at start.
        let mut reloader = None;
        if interval > 0.0 {
            let counts = Arc::clone(&reloads);
            let engine = Arc::clone(&engine);
            reloader = Some(Reloader::start(
                path, engine, &loaded, interval, settle, counts,
            )?);
        }
        Ok(Config {
            engine,
            reloads,
            sidecar,
            _reloader: reloader,
            authz: Arc::new(settings.authz()?),
            deciders,
            server,
            budget: shared::budget(),
            known: shared::known_answers(),
            metrics: None,
        })
    }
}

/// The key in `path`: a regular file of at least [`MIN_KEY_BYTES`] bytes.
fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let key = toolgate_runtime::policy_file::read_regular(path)
        .map_err(|e| format!("key file {}: {e}", path.display()))?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "key file {}: a key file holds at least {MIN_KEY_BYTES} bytes",
            path.display()
        ));
    }
    Ok(key)
}

/// A number of seconds the configuration gives for `name` (`default` without one). Envoy's
/// YAML reader hands a plain scalar of a `Struct` over as a string, so `0.5` and `"0.5"` are
/// the same.
fn seconds(given: Option<Value>, name: &str, default: f64) -> Result<f64, String> {
    let Some(given) = given else {
        return Ok(default);
    };
    let read = match &given {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match read {
        Some(s) if (0.0..=MAX_SECONDS).contains(&s) => Ok(s),
        _ => Err(format!(
            "\"{name}\" is a number of seconds from 0 to {MAX_SECONDS}, not {given}"
        )),
    }
}

/// The longest reload interval or settle period taken: a day.
const MAX_SECONDS: f64 = 86_400.0;
/// The shortest reload interval taken, but 0 (never): a look at the file costs a read of it.
const MIN_INTERVAL: f64 = 0.01;
