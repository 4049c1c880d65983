//! The MCP protocol as a proxy sees it: a JSON-RPC request body read strictly, the answers
//! and streams that come back, and the JSON-RPC answer the agent gets instead of the
//! upstream's when a call is refused. Deciding a request is the engine's (`engine::gate`).

pub mod answer;
pub mod known_answers;
pub mod outcome;
pub mod reply;
pub mod request;
pub mod revision;
pub mod spans;
pub mod sse;
pub mod trace_context;
pub mod uri;

pub use reply::Reply;
pub use request::{parse_request, McpRequest, Refusal};
