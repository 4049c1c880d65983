//! How toolgate reads an MCP request body, for tests and for debugging a refusal.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use toolgate_core::mcp::{parse_request, McpRequest};

/// Read one JSON-RPC request body as the Envoy gate does. Returns a dict whose `kind` is
/// `call` (with `id`, `method`, `name`, `arguments`), `named` (`id`, `method`, `named`: what
/// it names, `name`, `arguments`), `listen` (`id`, `method`, `uris`), `other` (`id`, `method`),
/// `response` (`id`) or `refused` (`code`, `message`, `id`).
#[pyfunction]
pub fn read_mcp_request<'py>(py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let loads = py.import("json")?.getattr("loads")?;
    // Through Python's own JSON reader: this is for tests and debugging, not the hot path.
    let json = |v: &Option<serde_json::Value>| -> PyResult<Bound<'py, PyAny>> {
        let text = v
            .as_ref()
            .map_or_else(|| "null".to_owned(), |v| v.to_string());
        loads.call1((text,))
    };
    match py.detach(|| parse_request(body)) {
        Ok(McpRequest::ToolCall {
            id,
            name,
            arguments,
            ..
        }) => {
            out.set_item("kind", "call")?;
            out.set_item("id", json(&id)?)?;
            out.set_item("method", "tools/call")?;
            out.set_item("name", name)?;
            out.set_item("arguments", json(&arguments)?)?;
        }
        Ok(McpRequest::Named {
            id,
            method,
            kind,
            name,
            args,
        }) => {
            out.set_item("kind", "named")?;
            out.set_item("id", json(&id)?)?;
            out.set_item("method", method)?;
            out.set_item("named", kind.as_str())?;
            out.set_item("name", name)?;
            out.set_item("arguments", json(&args)?)?;
        }
        Ok(McpRequest::Listen { id, uris }) => {
            out.set_item("kind", "listen")?;
            out.set_item("id", json(&id)?)?;
            out.set_item("method", "subscriptions/listen")?;
            out.set_item("uris", uris)?;
        }
        Ok(McpRequest::Other { id, method }) => {
            out.set_item("kind", "other")?;
            out.set_item("id", json(&id)?)?;
            out.set_item("method", method)?;
        }
        Ok(McpRequest::Response { id }) => {
            out.set_item("kind", "response")?;
            out.set_item("id", json(&id)?)?;
        }
        Err(refusal) => {
            out.set_item("kind", "refused")?;
            out.set_item("code", refusal.code)?;
            out.set_item("message", &*refusal.message)?;
            out.set_item("id", json(&refusal.id)?)?;
        }
    }
    Ok(out)
}
