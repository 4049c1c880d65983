//! `toolgate._core`: the Rust decision core exposed to Python.

mod approvals;
mod arguments;
mod clock;
mod decision;
mod document;
mod engine;
mod eviction;
mod mcp;
mod metrics;
mod policy;
mod policy_watch;
mod settings;
mod sidecar;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The data plane's threads allocate and free across each other (the decision log's writer
/// frees what the serving threads built); glibc's arenas then contend on locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Text an agent sent, made safe to show a person: control, format and separator
/// characters written `\u{HEX}`, backslashes doubled (`toolgate_core::json::inert`).
#[pyfunction]
fn inert(text: &str) -> String {
    toolgate_core::json::inert::escape(text).into_owned()
}

/// Whether `name` is a tool name MCP allows (1 to 128 of `A-Z a-z 0-9 _ - .`): the rule
/// policies hold their tool keys to (`toolgate_core::asking::approval_text`).
#[pyfunction]
fn is_mcp_tool_name(name: &str) -> bool {
    toolgate_core::kind::is_mcp_tool_name(name)
}

/// Every key of the policy language, by object: `(heading, [(key, meaning)])`, as the
/// loader accepts them (`toolgate_core::policy::keys`); docs/policy-keys.md is made of them.
#[pyfunction]
fn policy_keys() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let objects = toolgate_core::policy::keys::OBJECTS.iter();
    let keys = |keys: &[toolgate_core::policy::keys::Key]| {
        keys.iter().map(|k| (k.name, k.meaning)).collect()
    };
    objects.map(|(heading, k)| (*heading, keys(k))).collect()
}

/// A window for people: `1m`, `90s`, `1500ms` (as the engine's reasons write it).
#[pyfunction]
fn format_window(ms: u64) -> String {
    toolgate_core::engine::Window(ms).to_string()
}

/// A wait for people, in seconds to a tenth: `1.5s` (as the engine's reasons write it).
#[pyfunction]
fn format_seconds(ms: u64) -> String {
    toolgate_core::engine::Seconds(ms).to_string()
}

/// JSON text an agent sent with each character `inert` would escape written as a JSON
/// `\uXXXX` escape instead: the same JSON value, safe to show (`toolgate_core::json::inert`).
#[pyfunction]
fn inert_json(json: &str) -> String {
    toolgate_core::json::inert::escape_in_json(json).into_owned()
}

/// The digest a pin records of one tool definition (JSON text of one tool object of a
/// `tools/list` answer): `sha256:` and 64 hex digits. ValueError if it is not one object,
/// read one way.
#[pyfunction]
fn tool_digest(tool: &str) -> PyResult<String> {
    match toolgate_core::json::strict::parse(tool.as_bytes()) {
        Ok(serde_json::Value::Object(t)) => toolgate_core::definitions::definition::digest(&t)
            .map(|d| d.to_string())
            .ok_or_else(|| PyValueError::new_err("the tool holds a value JSON cannot")),
        Ok(_) => Err(PyValueError::new_err("a tool definition is a JSON object")),
        Err(e) => Err(PyValueError::new_err(format!(
            "the tool cannot be read: {e}"
        ))),
    }
}

/// The digest of a call's arguments (JSON text) as the decision log, the approvals store
/// and webhooks write it under `key` (the state directory's `grant.key`):
/// `hmac-sha256:` and 64 hex digits, for an auditor to check a known value against a line.
/// ValueError if the text is not one JSON value, read one way.
#[pyfunction]
fn argument_digest(key: &[u8], arguments: &str) -> PyResult<String> {
    let value = toolgate_core::json::strict::parse(arguments.as_bytes())
        .map_err(|e| PyValueError::new_err(format!("the arguments cannot be read: {e}")))?;
    let mac = toolgate_core::asking::approval::CallDigests::new(key).arguments();
    toolgate_core::json::arg_json::keyed_digest(&&value, &mac)
        .map(|d| toolgate_core::asking::approval::keyed_hex(&d))
        .ok_or_else(|| PyValueError::new_err("the arguments hold a value JSON cannot"))
}

/// A bearer tokens file (`--admin-tokens`, `--authzen-tokens`): `(name, token)` per token,
/// in the file's order. ValueError naming the file and line for a malformed one.
#[pyfunction]
fn load_tokens(path: std::path::PathBuf) -> PyResult<Vec<(String, String)>> {
    toolgate_runtime::tokens::load(&path).map_err(PyValueError::new_err)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<engine::Reloaded>()?;
    m.add_class::<metrics::PyMetricFamily>()?;
    m.add_class::<approvals::PyApprovals>()?;
    m.add_class::<policy::PyPolicy>()?;
    m.add_class::<policy::ValidationError>()?;
    m.add_class::<decision::PyDecision>()?;
    m.add_class::<decision::PyLimitState>()?;
    m.add_class::<decision::PyExplanation>()?;
    m.add_class::<settings::PySidecarSettings>()?;
    m.add_class::<sidecar::PySidecar>()?;
    m.add_class::<clock::PyManualClock>()?;
    m.add_class::<policy_watch::PyFileVersion>()?;
    m.add_class::<policy_watch::PyLook>()?;
    m.add_class::<policy_watch::PyPolicyWatch>()?;
    m.add_function(wrap_pyfunction!(policy_watch::read_version, m)?)?;
    m.add(
        "RELOAD_INTERVAL",
        toolgate_runtime::policy_watch::RELOAD_INTERVAL,
    )?;
    m.add(
        "RELOAD_SETTLE",
        toolgate_runtime::policy_watch::RELOAD_SETTLE,
    )?;
    m.add_function(wrap_pyfunction!(mcp::read_mcp_request, m)?)?;
    m.add_function(wrap_pyfunction!(document::read_document, m)?)?;
    m.add_function(wrap_pyfunction!(inert, m)?)?;
    m.add_function(wrap_pyfunction!(is_mcp_tool_name, m)?)?;
    m.add_function(wrap_pyfunction!(policy_keys, m)?)?;
    m.add_function(wrap_pyfunction!(inert_json, m)?)?;
    m.add_function(wrap_pyfunction!(tool_digest, m)?)?;
    m.add_function(wrap_pyfunction!(argument_digest, m)?)?;
    m.add_function(wrap_pyfunction!(load_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(eviction::read_maxmemory_policy, m)?)?;
    m.add_function(wrap_pyfunction!(format_window, m)?)?;
    m.add_function(wrap_pyfunction!(format_seconds, m)?)?;
    // The gRPC services a health check can name, besides "" (the whole server).
    m.add(
        "SERVICES",
        toolgate_server::grpc::SERVICES
            .map(|(name, _)| name)
            .to_vec(),
    )?;
    // The decision service's full name, as its schema (proto/toolgate/v1) gives it.
    m.add(
        "DECIDER",
        toolgate_server::decider::pb::decider_server::SERVICE_NAME,
    )?;
    // Every verdict and decision code, by name (the wire's and the decision log's).
    let names = |all: &[&'static str]| all.to_vec();
    m.add(
        "VERDICTS",
        names(&toolgate_core::Verdict::ALL.map(toolgate_core::Verdict::as_str)),
    )?;
    m.add(
        "CODES",
        names(&toolgate_core::Code::ALL.map(toolgate_core::Code::as_str)),
    )?;
    // The largest `max` a limit may have.
    m.add("MAX_MAX", toolgate_core::policy::MAX_MAX)?;
    // The largest file read whole.
    m.add("MAX_FILE_BYTES", policy::MAX_FILE_BYTES)?;
    m.add("PolicyError", m.py().get_type::<policy::PolicyError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The git commit built from, or "" if unknown (build.rs).
    m.add("__revision__", env!("TOOLGATE_REVISION"))?;
    // cargo's opt-level: "3" in a release build, "1" in scripts/test's (build.rs).
    m.add("OPT_LEVEL", env!("TOOLGATE_OPT_LEVEL"))?;
    Ok(())
}
