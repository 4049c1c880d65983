//! MCP traffic as a proxy sees it: reading a JSON-RPC request body strictly, deciding it,
//! and the JSON-RPC answer the agent gets instead of the upstream's when a call is refused.

pub mod answer;
pub mod fold;
pub mod gate;
pub mod known_answers;
pub mod listing;
pub mod outcome;
pub mod reply;
pub mod request;
pub mod spans;
pub mod sse;
pub mod strict_json;
pub mod uri;

pub use gate::{check, Follow, Gate, HttpCall};
pub use reply::Reply;
pub use request::{parse_request, McpRequest, Refusal};
