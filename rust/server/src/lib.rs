//! toolgate's gRPC services over the decision core: `toolgate.v1.Decider`, Envoy's external
//! authorization (`Check`), external processing and rate limit (`ShouldRateLimit`) APIs,
//! and agentgateway's ExtMCP;
//! [`native`], the server that serves them with tonic; and [`sidecar`], the whole sidecar
//! assembled from one options value; [`spans`], a span per decision over OTLP;
//! [`authzen`] and [`authzen_listener`], the OpenID AuthZEN Authorization API over HTTP.
//!
//! Each service reads a request message, decides it with a [`toolgate_core::Engine`] and
//! writes the response message.

pub mod answer;
pub mod approval_spans;
pub mod authz;
pub mod authzen;
pub mod authzen_listener;
pub mod codec;
pub mod connection;
pub mod credential;
pub mod decider;
pub mod ext_mcp;
pub mod ext_proc;
pub mod grpc;
pub mod held;
pub mod native;
pub mod ratelimit;
pub mod settings;
pub mod sidecar;
pub mod spans;
pub mod subject;
