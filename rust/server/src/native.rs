//! The sidecar's native data plane: tonic on a tokio runtime with threads of its own, serving
//! every service on one listener (TCP, or a Unix socket for a proxy in the same pod):
//! `toolgate.v1.Decider`, Envoy's `Authorization`, `ExternalProcessor` and
//! `RateLimitService`, `grpc.health.v1`
//! and server reflection. No Python runs on the request path; the process that starts it
//! (the Python sidecar) keeps the engine, reloads its policy, reads its statistics, and
//! drives health and shutdown through [`Server::set_serving`] and [`Server::stop`].

use crate::authz::AuthzConfig;
use crate::decider::{self, pb::decider_server::DeciderServer};
use crate::grpc::envoy::authorization_server::AuthorizationServer;
use crate::grpc::envoy::external_processor_server::ExternalProcessorServer;
use crate::grpc::envoy::rate_limit_service_server::RateLimitServiceServer;
use crate::grpc::{
    AnswerStatus, AuthorizationService, DeciderService, ExternalProcessorService, RateLimiter,
    StampArrival,
};
use prost::Message;
use prost_types::FileDescriptorSet;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use toolgate_core::Engine;

/// The services a health check can name (besides `""`, the whole server).
pub const SERVICES: [&str; 4] = [
    "toolgate.v1.Decider",
    "envoy.service.auth.v3.Authorization",
    "envoy.service.ext_proc.v3.ExternalProcessor",
    "envoy.service.ratelimit.v3.RateLimitService",
];

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
    /// The runtime's threads: each decides the calls that land on it.
    pub threads: usize,
    /// Share the port with other processes (`--workers`): SO_REUSEPORT.
    pub reuse_port: bool,
    pub max_argument_bytes: usize,
    /// Largest request message (gRPC's default, as grpcio's: 4 MiB).
    pub max_message_bytes: usize,
    pub authz: AuthzConfig,
    /// Encoded `FileDescriptorSet`s of the Envoy services, for reflection (toolgate.v1's
    /// are built in).
    pub descriptors: Vec<Vec<u8>>,
}

/// A running server.
pub struct Server {
    runtime: Runtime,
    health: HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    address: String,
}

impl Server {
    /// Bind and start serving; health reports NOT_SERVING until [`Server::set_serving`].
    pub fn start(engine: Arc<Engine>, config: Config) -> Result<Server, String> {
        if config.threads == 0 {
            return Err("threads must be at least 1".into());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .thread_name("toolgate-grpc")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the gRPC runtime: {e}"))?;
        // Both versions of server reflection: grpcurl asks for v1, older clients v1alpha.
        let files = reflected_files(&config.descriptors)?;
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
        let router = tonic::transport::Server::builder()
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
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                AuthorizationServer::new(AuthorizationService {
                    engine: engine.clone(),
                    config: config.authz.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                ExternalProcessorServer::new(ExternalProcessorService {
                    engine: engine.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                RateLimitServiceServer::new(RateLimiter { engine }).max_decoding_message_size(max),
            );
        let (shutdown, stopped) = oneshot::channel::<()>();
        let signal = async {
            let _ = stopped.await;
        };
        let (serving, address) = match &config.listen {
            Listen::Tcp(addr) => {
                let listener = runtime.block_on(bind_tcp(*addr, config.reuse_port))?;
                let address = listener
                    .local_addr()
                    .map_err(|e| e.to_string())?
                    .to_string();
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                let task = router.serve_with_incoming_shutdown(incoming, signal);
                (runtime.spawn(task), address)
            }
            Listen::Unix(path) => {
                if config.reuse_port {
                    return Err("a unix socket cannot be shared by worker processes: use \
                                --threads, or listen on HOST:PORT"
                        .into());
                }
                let listener = runtime.block_on(bind_unix(path))?;
                let incoming = UnixListenerStream::new(listener);
                let task = router.serve_with_incoming_shutdown(incoming, signal);
                (runtime.spawn(task), format!("unix:{}", path.display()))
            }
        };
        let server = Server {
            runtime,
            health,
            shutdown: Some(shutdown),
            serving: Some(serving),
            address,
        };
        // NOT_SERVING until the owner says it is ready (calls are answered meanwhile).
        server.set_serving(false);
        Ok(server)
    }

    /// The address it listens on (with the port the system chose, for port 0).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Report SERVING or NOT_SERVING for the server and every service; calls are answered
    /// either way (NOT_SERVING is how a draining sidecar tells probes and proxies to stop).
    pub fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.runtime.block_on(async {
            for service in std::iter::once("").chain(SERVICES) {
                self.health.set_service_status(service, status).await;
            }
        });
    }

    /// Stop accepting calls, let those in flight finish for up to `grace`, then stop.
    pub fn stop(mut self, grace: Duration) -> Result<(), String> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let outcome = match self.serving.take() {
            Some(serving) => self
                .runtime
                .block_on(async { tokio::time::timeout(grace, serving).await }),
            None => return Ok(()),
        };
        self.runtime.shutdown_timeout(Duration::from_millis(100));
        match outcome {
            Ok(Ok(Ok(()))) | Err(_) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("the gRPC server failed: {e}")),
            Ok(Err(e)) => Err(format!("the gRPC server task failed: {e}")),
        }
    }
}

async fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> Result<tokio::net::TcpListener, String> {
    let fail = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    // Off for a lone sidecar: a second one on the same port must fail, not share it.
    socket.set_reuse_port(reuse_port).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    tokio::net::TcpListener::from_std(socket.into()).map_err(fail)
}

async fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::FileTypeExt;
    // A socket file left by a sidecar that is gone would make bind fail; anything else at
    // that path is not ours to remove.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
    tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))
}

/// The descriptors reflection describes: toolgate.v1, grpc.health.v1 and the given sets (a
/// file named twice is taken once).
fn reflected_files(extra: &[Vec<u8>]) -> Result<FileDescriptorSet, String> {
    let mut files = FileDescriptorSet::default();
    let mut seen = HashSet::new();
    let built_in = [
        decider::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    for encoded in built_in.into_iter().chain(extra.iter().map(Vec::as_slice)) {
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
