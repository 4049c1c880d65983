//! The services as tonic serves them: toolgate.v1 `Decider`, Envoy's `Authorization`,
//! `ExternalProcessor` and `RateLimitService`, agentgateway's `ExtMcp`, each deciding in the
//! request's own task (a decision takes about a microsecond: handing it to another thread
//! would cost more).
//!
//! A call whose deadline passed before its handler ran is answered `DEADLINE_EXCEEDED` and
//! not decided: the caller (a proxy that has already answered 503) has given up, so counting
//! it would spend a limit on a call that never runs. Arrival is stamped by [`StampArrival`]
//! when the connection reads the request, before the request waits for a thread.

use crate::authz;
use crate::decider::{self, pb};
use crate::ext_mcp::{self, ExtMcpConfig};
use crate::ext_proc::Exchange;
use crate::held::HeldBytes;
use crate::ratelimit;
use crate::spans::{Headers, ListSpans, Spans, Traced};
use crate::subject::AuthzConfig;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::observing::stats::Api;
use toolgate_core::Engine;

/// Envoy's services, generated over envoy-types' messages with [`crate::codec`].
pub mod envoy {
    include!(concat!(
        env!("OUT_DIR"),
        "/envoy.service.auth.v3.Authorization.rs"
    ));
    include!(concat!(
        env!("OUT_DIR"),
        "/envoy.service.ext_proc.v3.ExternalProcessor.rs"
    ));
    include!(concat!(
        env!("OUT_DIR"),
        "/envoy.service.ratelimit.v3.RateLimitService.rs"
    ));
}

/// When the request was read off its connection.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub Instant);

/// A tower layer that stamps each HTTP request with [`Arrived`] as it is read.
#[derive(Debug, Clone)]
pub struct StampArrival<S>(pub S);

impl<S, B> tower::Service<http::Request<B>> for StampArrival<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(Arrived(Instant::now()));
        self.0.call(request)
    }
}

/// The services a health check can name (besides `""`, the whole server), and the API their
/// calls are counted under.
pub const SERVICES: [(&str, Api); 5] = [
    ("toolgate.v1.Decider", Api::Decider),
    ("envoy.service.auth.v3.Authorization", Api::ExtAuthz),
    ("envoy.service.ext_proc.v3.ExternalProcessor", Api::ExtProc),
    (
        "envoy.service.ratelimit.v3.RateLimitService",
        Api::RateLimit,
    ),
    ("agentgateway.dev.ext_mcp.ExtMcp", Api::ExtMcp),
];

/// The API of a gRPC method path (`/package.Service/Method`) among [`SERVICES`].
pub fn api_of_path(path: &str) -> Option<Api> {
    let service = path.strip_prefix('/')?.split('/').next()?;
    SERVICES
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, api)| *api)
}

/// A tower layer over every call: the status it is answered with is made right (see
/// [`size_limit_status`]) and, when it is an error of one of toolgate's APIs, counted in the
/// engine's statistics. Errors come as trailers-only answers, whose status is a header; an
/// ext_proc stream that fails midway is counted by the service itself.
#[derive(Clone)]
pub struct AnswerStatus<S> {
    pub inner: S,
    pub engine: Arc<Engine>,
}

impl<S, B, R> tower::Service<http::Request<B>> for AnswerStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        Answered {
            api: api_of_path(request.uri().path()),
            engine: Arc::clone(&self.engine),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`AnswerStatus`]'s inner service, looked at when it is ready.
    pub struct Answered<F> {
        api: Option<Api>,
        engine: Arc<Engine>,
        #[pin]
        inner: F,
    }
}

impl<F, R, E> Future for Answered<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(answer.map(|response| {
            let response = size_limit_status(response);
            let status = response.headers().get("grpc-status");
            let code = status.and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
            if let (Some(api), Some(code)) = (*this.api, code) {
                this.engine.stats().count_error(api, code);
            }
            response
        }))
    }
}

/// tonic answers a request message over the size limit OUT_OF_RANGE; gRPC's own servers
/// answer RESOURCE_EXHAUSTED, as gRPC's status code guide asks. The status travels in a
/// trailers-only response's headers.
pub fn size_limit_status<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let over_limit = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .is_some_and(|m| m.as_bytes().windows(17).any(|w| w == b"length%20too%20la"));
    if over_limit {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// `DEADLINE_EXCEEDED` if the caller's `grpc-timeout` ran out before now.
fn check_deadline<T>(request: &Request<T>) -> Result<(), Status> {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout);
    let arrived = request.extensions().get::<Arrived>();
    match (timeout, arrived) {
        (Some(timeout), Some(Arrived(at))) if at.elapsed() >= timeout => Err(
            Status::deadline_exceeded("the caller's deadline has passed"),
        ),
        _ => Ok(()),
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H M S m u n`).
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Run a decision. A decision that asks Redis waits for its answer on this thread: for a
/// fast round trip that is cheaper than handing the call to another thread. While Redis is
/// slow, it waits on a blocking thread instead, so the other calls this thread serves (those
/// that need no count) go on.
async fn deciding<T, F>(engine: &Engine, decide: F) -> Result<T, Status>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if engine.store_slow() {
        tokio::task::spawn_blocking(decide)
            .await
            .map_err(|_| Status::internal("the decision failed"))
    } else {
        Ok(decide())
    }
}

/// `toolgate.v1.Decider`.
pub struct DeciderService {
    pub engine: Arc<Engine>,
    pub max_argument_bytes: usize,
    pub spans: Option<Arc<Spans>>,
}

/// Where a call's decisions are traced, if they are: the spans, and the call's metadata.
fn traced<'a, T>(spans: &'a Option<Arc<Spans>>, request: &'a Request<T>) -> Traced<'a> {
    spans
        .as_deref()
        .map(|s| (s, request.metadata() as &dyn Headers))
}

#[tonic::async_trait]
impl pb::decider_server::Decider for DeciderService {
    async fn decide(
        &self,
        request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::DecideResponse>, Status> {
        check_deadline(&request)?;
        let (engine, max, spans) = (
            self.engine.clone(),
            self.max_argument_bytes,
            self.spans.clone(),
        );
        let response = deciding(&self.engine, move || {
            decider::decide_message(&engine, max, request.get_ref(), traced(&spans, &request))
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn decide_batch(
        &self,
        request: Request<pb::DecideBatchRequest>,
    ) -> Result<Response<pb::DecideBatchResponse>, Status> {
        check_deadline(&request)?;
        let (engine, max, spans) = (
            self.engine.clone(),
            self.max_argument_bytes,
            self.spans.clone(),
        );
        let response = deciding(&self.engine, move || {
            let traced = traced(&spans, &request);
            decider::decide_batch_message(&engine, max, request.get_ref(), traced)
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        check_deadline(&request)?;
        let engine = self.engine.clone();
        let response = deciding(&self.engine, move || {
            decider::release_message(&engine, request.get_ref())
        })
        .await?;
        Ok(Response::new(response))
    }
}

/// `envoy.service.auth.v3.Authorization`.
pub struct AuthorizationService {
    pub engine: Arc<Engine>,
    pub config: Arc<AuthzConfig>,
    pub spans: Option<Arc<Spans>>,
}

#[tonic::async_trait]
impl envoy::authorization_server::Authorization for AuthorizationService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        check_deadline(&request)?;
        let (engine, config, spans) =
            (self.engine.clone(), self.config.clone(), self.spans.clone());
        let response = deciding(&self.engine, move || {
            authz::check_traced(
                &engine,
                &config,
                request.get_ref(),
                traced(&spans, &request),
            )
        })
        .await?;
        Ok(Response::new(response))
    }
}

/// `envoy.service.ext_proc.v3.ExternalProcessor`: one stream per HTTP exchange, each
/// message answered in turn on the stream's task.
pub struct ExternalProcessorService {
    pub engine: Arc<Engine>,
    /// What all streams hold between messages.
    pub held: Arc<HeldBytes>,
    /// The `tools/list` answers the streams read last (the service's own: only its list
    /// filters find them again).
    pub known: Arc<KnownAnswers>,
    pub spans: Option<Arc<Spans>>,
}

#[tonic::async_trait]
impl envoy::external_processor_server::ExternalProcessor for ExternalProcessorService {
    type ProcessStream = Answers;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        // Envoy's span for the stream, when it traces, is the parent of the lists' spans.
        let spans = (self.spans.clone()).map(|s| ListSpans::new(s, request.metadata()));
        let exchange = Exchange::new(Arc::clone(&self.held), Arc::clone(&self.known));
        Ok(Response::new(Answers {
            engine: Arc::clone(&self.engine),
            messages: request.into_inner(),
            exchange: Some(exchange.traced(spans)),
            off_thread: None,
        }))
    }
}

/// The answers of one ext_proc stream; it ends with the exchange's answer, not waiting for
/// Envoy to close its side.
pub struct Answers {
    engine: Arc<Engine>,
    messages: Streaming<ProcessingRequest>,
    /// None while a message is processed on a blocking thread (see [`deciding`]).
    exchange: Option<Exchange>,
    off_thread: Option<tokio::task::JoinHandle<(Exchange, Option<ProcessingResponse>)>>,
}

impl Stream for Answers {
    type Item = Result<ProcessingResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(processing) = &mut this.off_thread {
                let Ok((exchange, answer)) = std::task::ready!(Pin::new(processing).poll(cx))
                else {
                    this.off_thread = None;
                    return Poll::Ready(Some(Err(Status::internal("the exchange failed"))));
                };
                this.off_thread = None;
                if exchange.out_of_room() {
                    return Poll::Ready(Some(Err(this.out_of_room())));
                }
                this.exchange = Some(exchange);
                if let Some(answer) = answer {
                    return Poll::Ready(Some(Ok(answer)));
                }
            }
            let Some(exchange) = &mut this.exchange else {
                return Poll::Ready(None);
            };
            if exchange.finished() {
                return Poll::Ready(None);
            }
            let message = match std::task::ready!(Pin::new(&mut this.messages).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(message)) => message,
                Some(Err(status)) => {
                    this.engine
                        .stats()
                        .count_error(Api::ExtProc, status.code() as usize);
                    return Poll::Ready(Some(Err(status)));
                }
            };
            // A failed call may give its reservation back, which can ask Redis: while Redis
            // is slow, on a blocking thread (as `deciding` does).
            if this.engine.store_slow() {
                let (engine, mut exchange) = (this.engine.clone(), this.exchange.take());
                this.off_thread = Some(tokio::task::spawn_blocking(move || {
                    let mut exchange = exchange.take().unwrap_or_default();
                    let answer = exchange.process(&engine, &message);
                    (exchange, answer)
                }));
                continue;
            }
            let answer = exchange.process(&this.engine, &message);
            if exchange.out_of_room() {
                // Dropping the exchange gives back all it held.
                this.exchange = None;
                return Poll::Ready(Some(Err(this.out_of_room())));
            }
            if let Some(answer) = answer {
                return Poll::Ready(Some(Ok(answer)));
            }
        }
    }
}

impl Answers {
    /// The end of a stream whose MCP server has filled its room: counted as an error.
    fn out_of_room(&self) -> Status {
        let status = Status::resource_exhausted(
            "this MCP server's answers hold as much of the sidecar as one server may",
        );
        self.engine
            .stats()
            .count_error(Api::ExtProc, status.code() as usize);
        status
    }
}

/// `envoy.service.ratelimit.v3.RateLimitService`.
pub struct RateLimiter {
    pub engine: Arc<Engine>,
    pub spans: Option<Arc<Spans>>,
}

#[tonic::async_trait]
impl envoy::rate_limit_service_server::RateLimitService for RateLimiter {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        check_deadline(&request)?;
        let (engine, spans) = (self.engine.clone(), self.spans.clone());
        let response = deciding(&self.engine, move || {
            ratelimit::should_rate_limit_traced(
                &engine,
                request.get_ref(),
                traced(&spans, &request),
            )
        })
        .await?;
        Ok(Response::new(response))
    }
}

/// `agentgateway.dev.ext_mcp.ExtMcp`.
pub struct ExtMcpService {
    pub engine: Arc<Engine>,
    pub config: Arc<ExtMcpConfig>,
    pub spans: Option<Arc<Spans>>,
}

#[tonic::async_trait]
impl ext_mcp::pb::ext_mcp_server::ExtMcp for ExtMcpService {
    async fn check_request(
        &self,
        request: Request<ext_mcp::pb::McpRequest>,
    ) -> Result<Response<ext_mcp::pb::McpRequestResult>, Status> {
        check_deadline(&request)?;
        let (engine, config, spans) =
            (self.engine.clone(), self.config.clone(), self.spans.clone());
        let response = deciding(&self.engine, move || {
            let traced = traced(&spans, &request);
            ext_mcp::check_request_traced(&engine, &config, request.get_ref(), traced)
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn check_response(
        &self,
        request: Request<ext_mcp::pb::McpResponse>,
    ) -> Result<Response<ext_mcp::pb::McpResponseResult>, Status> {
        check_deadline(&request)?;
        let (engine, config) = (self.engine.clone(), self.config.clone());
        let response = deciding(&self.engine, move || {
            ext_mcp::check_response(&engine, &config, request.get_ref())
        })
        .await?;
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grpc_timeouts() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            grpc_timeout("99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        for bad in ["", "m", "100", "123456789m", "1x", "-1m", "1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
