//! toolgate's gRPC services over the decision core: `toolgate.v1.Decider`, Envoy's external
//! authorization (`Check`) and rate limit (`ShouldRateLimit`) APIs, and [`native`], the
//! server that serves them with tonic.
//!
//! Each service reads a request message, decides it with a [`toolgate_core::Engine`] and
//! writes the response message; the `*_wire` functions do the same on serialized messages,
//! for a transport that carries bytes (the Python sidecar's grpcio server).

pub mod authz;
pub mod codec;
pub mod credential;
pub mod decider;
pub mod eviction;
pub mod ext_proc;
pub mod grpc;
pub mod native;
pub mod ratelimit;
pub mod store;

/// Why a request message could not be decoded at all (answered with a gRPC error status).
#[derive(Debug)]
pub struct Malformed(pub String);

impl From<prost::DecodeError> for Malformed {
    fn from(e: prost::DecodeError) -> Self {
        Malformed(format!("malformed request: {e}"))
    }
}
