//! The native transport's floor, for the benchmarks (bench/wire_bench.py): the sidecar's
//! stack (tonic on `--threads` serving threads, connections dealt out by one acceptor,
//! TCP_NODELAY: `toolgate_server::connection`)
//! serving `toolgate.v1.Decider/Decide` and Envoy's `Authorization/Check` with constant
//! answers, and Envoy's `ExternalProcessor/Process` by changing nothing (each message let
//! through, or in observability mode not answered; the stream ended with the answer, as
//! toolgate ends it). What `toolgate serve` adds over it is the decision, its bookkeeping and
//! the sidecar's extra services and layers.
//!
//! ```sh
//! cargo build --release -p toolgate-server --example floor
//! target/release/examples/floor --listen 127.0.0.1:50071 --threads 2 [--response FILE]
//! target/release/examples/floor --listen unix:/tmp/floor.sock    # a unix socket, as the sidecar's
//! ```
//!
//! `--response FILE`: a serialized `DecideResponse` to answer (the benchmark passes the
//! sidecar's own answer to its request, so the bytes on the wire match); default, an ALLOW
//! with one limit state shaped like it. `--check-response FILE`: a serialized
//! `CheckResponse` to answer `Check` with (default: OK, nothing else). `--list-answer FILE`:
//! an answer's body is replaced with the file's bytes (its last part carries them, the parts
//! before it are emptied), as a list filter sends back its answer: the benchmark passes
//! toolgate's own filtered list, so the bytes on the wire match (default: let through).
//! Runs until killed.
//!
//! It allocates with mimalloc, as the sidecar's extension does, so the two differ only in
//! what the sidecar does per call.

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ext_proc::v3::body_mutation::Mutation;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Part;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeadersResponse, ProcessingRequest,
    ProcessingResponse, TrailersResponse,
};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use toolgate_server::connection::{Bound, Serving};
use toolgate_server::decider::pb::{
    self, decider_server::Decider, decider_server::DeciderServer, DecideBatchRequest,
    DecideBatchResponse, DecideRequest, DecideResponse, ReleaseRequest, ReleaseResponse,
};
use toolgate_server::grpc::envoy::authorization_server::{Authorization, AuthorizationServer};
use toolgate_server::grpc::envoy::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use toolgate_server::native::Listen;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    answer: DecideResponse,
}

#[tonic::async_trait]
impl Decider for Floor {
    async fn decide(&self, _: Request<DecideRequest>) -> Result<Response<DecideResponse>, Status> {
        Ok(Response::new(self.answer.clone()))
    }

    async fn decide_batch(
        &self,
        request: Request<DecideBatchRequest>,
    ) -> Result<Response<DecideBatchResponse>, Status> {
        let responses = vec![self.answer.clone(); request.get_ref().requests.len()];
        Ok(Response::new(DecideBatchResponse { responses }))
    }

    async fn release(
        &self,
        _: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        Ok(Response::new(ReleaseResponse::default()))
    }
}

struct CheckFloor {
    answer: CheckResponse,
}

#[tonic::async_trait]
impl Authorization for CheckFloor {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.answer.clone()))
    }
}

struct ProcessFloor {
    /// What every answer's body is replaced with, if anything.
    list_answer: Option<Arc<[u8]>>,
}

#[tonic::async_trait]
impl ExternalProcessor for ProcessFloor {
    type ProcessStream = Replies;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Replies>, Status> {
        Ok(Response::new(Replies {
            messages: request.into_inner(),
            list_answer: self.list_answer.clone(),
            done: false,
        }))
    }
}

/// Lets every message through unchanged (or replaces the answer's body with `list_answer`),
/// and ends the stream after the answer's first part of body (its last, when replacing it),
/// or headers with nothing after them: the least an ext_proc server can do.
struct Replies {
    messages: Streaming<ProcessingRequest>,
    list_answer: Option<Arc<[u8]>>,
    done: bool,
}

impl Replies {
    /// The reply to one part of the answer's body.
    fn answer_body(&mut self, end_of_stream: bool) -> BodyResponse {
        let Some(answer) = &self.list_answer else {
            self.done = true;
            return BodyResponse::default();
        };
        self.done = end_of_stream;
        let body = if end_of_stream {
            answer.to_vec()
        } else {
            Vec::new()
        };
        BodyResponse {
            response: Some(CommonResponse {
                body_mutation: Some(BodyMutation {
                    mutation: Some(Mutation::Body(body)),
                }),
                ..Default::default()
            }),
        }
    }
}

impl Stream for Replies {
    type Item = Result<ProcessingResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let message = match std::task::ready!(Pin::new(&mut self.messages).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                Some(Ok(message)) => message,
            };
            let reply = match message.request {
                Some(Part::ResponseHeaders(h)) => {
                    self.done = h.end_of_stream;
                    Reply::ResponseHeaders(HeadersResponse::default())
                }
                Some(Part::ResponseBody(b)) => {
                    Reply::ResponseBody(self.answer_body(b.end_of_stream))
                }
                Some(Part::RequestHeaders(_)) => Reply::RequestHeaders(HeadersResponse::default()),
                Some(Part::RequestBody(_)) => Reply::RequestBody(BodyResponse::default()),
                Some(Part::RequestTrailers(_)) => {
                    Reply::RequestTrailers(TrailersResponse::default())
                }
                Some(Part::ResponseTrailers(_)) => {
                    self.done = true;
                    Reply::ResponseTrailers(TrailersResponse::default())
                }
                None => continue,
            };
            if !message.observability_mode {
                return Poll::Ready(Some(Ok(ProcessingResponse {
                    response: Some(reply),
                    ..Default::default()
                })));
            }
        }
    }
}

fn default_answer() -> DecideResponse {
    DecideResponse {
        verdict: pb::Verdict::Allow as i32,
        code: pb::Code::Allowed as i32,
        reason: "allowed by /tools/run_command".into(),
        rule: "/tools/run_command".into(),
        limits: vec![pb::LimitState {
            counter: "run_command_rate".into(),
            rule: "/tools/run_command/limits/0".into(),
            scope: "grant".into(),
            max: 1e9,
            remaining: 999_999_000.0,
            ..Default::default()
        }],
        revision: "0123456789abcdef".into(),
        reservation: 1,
        ..Default::default()
    }
}

struct Args {
    listen: Listen,
    threads: usize,
    answer: DecideResponse,
    check_answer: CheckResponse,
    list_answer: Option<Arc<[u8]>>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = Listen::Tcp("127.0.0.1:50071".parse().expect("a valid address"));
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut answer = default_answer();
    let mut check_answer = CheckResponse::default();
    let mut list_answer = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                listen = Listen::parse(&value()?).map_err(|e| format!("--listen: {e}"))?
            }
            "--threads" => threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--response" => {
                let path = value()?;
                let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
                answer = DecideResponse::decode(bytes.as_slice())
                    .map_err(|e| format!("{path}: not a DecideResponse: {e}"))?;
            }
            "--check-response" => {
                let path = value()?;
                let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
                check_answer = CheckResponse::decode(bytes.as_slice())
                    .map_err(|e| format!("{path}: not a CheckResponse: {e}"))?;
            }
            "--list-answer" => {
                let path = value()?;
                let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
                list_answer = Some(Arc::from(bytes));
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    Ok(Args {
        listen,
        threads,
        answer,
        check_answer,
        list_answer,
    })
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("floor: {e}");
        eprintln!(
            "usage: floor [--listen HOST:PORT | unix:PATH] [--threads N] [--response FILE] \
             [--check-response FILE] [--list-answer FILE]"
        );
        std::process::exit(2);
    });
    let router = tonic::transport::Server::builder()
        .add_service(DeciderServer::new(Floor {
            answer: args.answer,
        }))
        .add_service(AuthorizationServer::new(CheckFloor {
            answer: args.check_answer,
        }))
        .add_service(ExternalProcessorServer::new(ProcessFloor {
            list_answer: args.list_answer,
        }));
    let bound = match &args.listen {
        Listen::Tcp(address) => Bound::tcp(*address),
        Listen::Unix(path) => Bound::unix(path),
    };
    let result: Result<(), String> = bound.and_then(|bound| {
        let address = bound.address()?;
        let serving = Serving::start(bound, args.threads, move |incoming, signal| {
            router
                .clone()
                .serve_with_incoming_shutdown(incoming, signal)
        })?;
        println!("floor: listening on {address}, {} threads", args.threads);
        // Runs until killed.
        loop {
            std::thread::park();
            let _ = &serving;
        }
    });
    if let Err(e) = result {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
}
