//! The sidecar's native data plane: tonic on threads of its own (one current-thread runtime
//! each, [`crate::connection`]), serving
//! every service on one listener (TCP, or a Unix socket for a proxy in the same pod):
//! `toolgate.v1.Decider`, Envoy's `Authorization`, `ExternalProcessor` and
//! `RateLimitService`, `grpc.health.v1`
//! and server reflection. No Python runs on the request path; the process that starts it
//! (the Python sidecar) keeps the engine, reloads its policy, reads its statistics, and
//! drives health and shutdown through [`Server::set_serving`] and [`Server::stop`].

use crate::connection::{Bound, Serving};
use crate::decider::{self, pb::decider_server::DeciderServer};
use crate::ext_mcp::{self, pb::ext_mcp_server::ExtMcpServer, ExtMcpConfig};
use crate::grpc::envoy::authorization_server::AuthorizationServer;
use crate::grpc::envoy::external_processor_server::ExternalProcessorServer;
use crate::grpc::envoy::rate_limit_service_server::RateLimitServiceServer;
use crate::grpc::{
    AnswerStatus, AuthorizationService, DeciderService, ExtMcpService, ExternalProcessorService,
    RateLimiter, StampArrival, SERVICES,
};
use crate::held::{HeldBytes, HoldCalls};
use crate::spans::Spans;
use crate::subject::AuthzConfig;
use prost::Message;
use prost_types::FileDescriptorSet;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::Engine;

/// The largest `arguments_json` a request may carry unless configured otherwise.
pub const DEFAULT_MAX_ARGUMENT_BYTES: usize = 1 << 20;
/// The largest request message by default (gRPC's own default).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Where to listen: `HOST:PORT` (`[::1]:PORT` for IPv6) or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    pub fn parse(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Listen::Unix(path.into()));
        }
        text.parse().map(Listen::Tcp).map_err(|_| {
            format!("expected HOST:PORT (an IP address and a port) or unix:PATH, got {text:?}")
        })
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    /// Serving threads: each serves the connections dealt to it, to the end.
    pub threads: usize,
    pub max_argument_bytes: usize,
    /// Largest request message (gRPC's default: 4 MiB).
    pub max_message_bytes: usize,
    pub authz: AuthzConfig,
}

/// A running server.
pub struct Server {
    /// Runs what the owner asks of the server (health); calls are served on other threads.
    control: Runtime,
    health: HealthReporter,
    serving: Serving,
    address: String,
    /// What its calls hold ([`HeldBytes`]), for the sidecar's gauge.
    held: Arc<HeldBytes>,
}

impl Server {
    /// Bind and start serving; health reports NOT_SERVING until [`Server::set_serving`].
    /// The ext_proc streams remember the `tools/list` answers they read among `known`.
    /// Decisions are traced in `spans`, if given.
    pub fn start(
        engine: Arc<Engine>,
        config: Config,
        known: Arc<KnownAnswers>,
        spans: Option<Arc<Spans>>,
    ) -> Result<Server, String> {
        if config.threads == 0 {
            return Err("threads must be at least 1".into());
        }
        let bound = match &config.listen {
            Listen::Tcp(addr) => Bound::tcp(*addr)?,
            Listen::Unix(path) => Bound::unix(path)?,
        };
        let address = bound.address()?;
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the gRPC runtime: {e}"))?;
        // Both versions of server reflection: grpcurl asks for v1, older clients v1alpha.
        let files = reflected_files()?;
        let reflection = |files| {
            tonic_reflection::server::Builder::configure().register_file_descriptor_set(files)
        };
        let reflection_v1 = reflection(files.clone())
            .build_v1()
            .map_err(|e| format!("cannot build server reflection: {e}"))?;
        let reflection_v1alpha = reflection(files)
            .build_v1alpha()
            .map_err(|e| format!("cannot build server reflection: {e}"))?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let max = config.max_message_bytes;
        // One budget for all that calls hold: the gRPC layer's buffers, unfinished answers.
        let held = HeldBytes::new(HeldBytes::LIMIT);
        let router = tonic::transport::Server::builder()
            .layer(tower::layer::layer_fn(HoldCalls::layer(&held)))
            .layer(tower::layer::layer_fn(StampArrival))
            .layer(tower::layer::layer_fn({
                let engine = engine.clone();
                move |inner| AnswerStatus {
                    inner,
                    engine: engine.clone(),
                }
            }))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                DeciderServer::new(DeciderService {
                    engine: engine.clone(),
                    max_argument_bytes: config.max_argument_bytes,
                    spans: spans.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                AuthorizationServer::new(AuthorizationService {
                    engine: engine.clone(),
                    config: Arc::new(config.authz.clone()),
                    spans: spans.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                ExternalProcessorServer::new(ExternalProcessorService {
                    engine: engine.clone(),
                    held: held.clone(),
                    known,
                    spans: spans.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                ExtMcpServer::new(ExtMcpService {
                    engine: engine.clone(),
                    config: Arc::new(ExtMcpConfig::new(config.authz.clone())),
                    spans: spans.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                RateLimitServiceServer::new(RateLimiter { engine, spans })
                    .max_decoding_message_size(max),
            );
        let serving = Serving::start(bound, config.threads, move |incoming, signal| {
            router
                .clone()
                .serve_with_incoming_shutdown(incoming, signal)
        })?;
        let server = Server {
            control,
            health,
            serving,
            address,
            held,
        };
        // NOT_SERVING until the owner says it is ready (calls are answered meanwhile).
        server.set_serving(false);
        Ok(server)
    }

    /// The address it listens on (with the port the system chose, for port 0).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// What its calls hold now against the budget for what callers hold, in bytes.
    pub fn held_bytes(&self) -> usize {
        self.held.total()
    }

    /// Report SERVING or NOT_SERVING for the server and every service; calls are answered
    /// either way (NOT_SERVING is how a draining sidecar tells probes and proxies to stop).
    pub fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.control.block_on(async {
            for service in std::iter::once("").chain(SERVICES.map(|(name, _)| name)) {
                self.health.set_service_status(service, status).await;
            }
        });
    }

    /// Stop accepting calls, let those in flight finish for up to `grace`, then stop.
    pub fn stop(self, grace: Duration) -> Result<(), String> {
        self.serving.stop(grace)
    }
}

/// Envoy's ext_authz, ext_proc and rate limit services and the files they import, made from
/// the xds-protos package by scripts/gen_proto (envoy-types has their messages, not their
/// descriptors).
const ENVOY_SERVICES: &[u8] = include_bytes!("../envoy_services.binpb");

/// The descriptors reflection describes: toolgate.v1, ExtMCP, grpc.health.v1 and Envoy's
/// services (a file named twice is taken once).
fn reflected_files() -> Result<FileDescriptorSet, String> {
    let mut files = FileDescriptorSet::default();
    let mut seen = HashSet::new();
    let built_in = [
        decider::FILE_DESCRIPTOR_SET,
        ext_mcp::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        ENVOY_SERVICES,
    ];
    for encoded in built_in {
        let set = FileDescriptorSet::decode(encoded)
            .map_err(|e| format!("bad descriptor set for reflection: {e}"))?;
        for file in set.file {
            if seen.insert(file.name().to_owned()) {
                files.file.push(file);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            Listen::parse("127.0.0.1:50051"),
            Ok(Listen::Tcp("127.0.0.1:50051".parse().unwrap()))
        );
        assert_eq!(
            Listen::parse("[::1]:9191"),
            Ok(Listen::Tcp("[::1]:9191".parse().unwrap()))
        );
        assert_eq!(
            Listen::parse("unix:/run/toolgate.sock"),
            Ok(Listen::Unix("/run/toolgate.sock".into()))
        );
        for bad in [
            "",
            "unix:",
            "localhost:1",
            "127.0.0.1",
            "127.0.0.1:99999",
            ":80",
        ] {
            assert!(Listen::parse(bad).is_err(), "{bad:?}");
        }
    }
}
