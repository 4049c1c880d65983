//! The filter's configuration: Envoy's `filter_config` (a JSON object: a `google.protobuf.Struct`
//! reaches the module as JSON text, a `StringValue` as its string) read once, on Envoy's main
//! thread, into an engine every worker thread shares.
//!
//! `{"policy": "examples/policy.json", "server": "images", "settings": {...}}`: the policy file
//! (and the pins files it names, read as `toolgate serve` reads them); the MCP server behind
//! the routes the filter runs on (else the `server_header`'s value); and the sidecar's
//! settings by their flags' names, of which the module takes the counter table's size and how
//! callers are read. A setting the module does not honour yet is refused, not ignored.

use crate::metrics::Metrics;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;
use toolgate_core::counter::CounterTable;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::{Engine, MonotonicClock};
use toolgate_server::held::HeldBytes;
use toolgate_server::settings::Settings;
use toolgate_server::subject::AuthzConfig;

/// The settings the module honours; any other given away from its default is refused.
/// (Callers are read from headers only: a JWT's claims, `--grant-from jwt:CLAIM`, are not
/// read yet.)
const HONOURED: [&str; 7] = [
    "capacity",
    "reservations",
    "grant_header",
    "session_header",
    "agent_header",
    "server_header",
    "max_request_bytes",
];

/// What every stream of the filter decides with.
pub struct Config {
    pub engine: Arc<Engine>,
    pub authz: AuthzConfig,
    /// The MCP server behind the filter's routes, when the configuration names it.
    pub server: Option<String>,
    /// What the streams' followers of answers may hold at once (unfinished list events, call
    /// answers read so far), as the sidecar's ext_proc streams do.
    pub budget: Arc<HeldBytes>,
    /// The `tools/list` answers read last, so that the same answer is not read again.
    pub known: Arc<KnownAnswers>,
    /// The engine's metrics as Envoy's stats, once Envoy has taken their definitions.
    pub metrics: Option<Metrics>,
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
        let policy = toolgate_runtime::policy_file::load_file(Path::new(&policy)).map_err(|e| {
            let errors: Vec<String> =
                e.0.iter()
                    .map(|e| format!("{}: {}", e.pointer, e.message))
                    .collect();
            format!("policy {policy}: {}", errors.join("; "))
        })?;
        let table = CounterTable::try_new(settings.capacity, settings.reservations)?;
        let engine = Engine::builder(policy, Arc::new(table), Arc::new(MonotonicClock)).build()?;
        Ok(Config {
            engine: Arc::new(engine),
            authz: settings.authz()?,
            server,
            budget: HeldBytes::new(HeldBytes::LIMIT),
            known: Arc::default(),
            metrics: None,
        })
    }
}
