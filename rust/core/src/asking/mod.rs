//! Asking people about a call: an approver (approval), the user in their MCP client
//! (confirmation), and the text each is shown.

pub mod approval;
pub mod approval_text;
pub mod confirmation;
