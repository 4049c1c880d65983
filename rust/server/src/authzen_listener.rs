//! The AuthZEN listener (`--authzen-listen`): HTTP/1.1 on its own address, serving
//! [`crate::authzen`]'s API on the sidecar's engine.
//!
//! - `POST /access/v1/evaluation`, `POST /access/v1/evaluations`,
//!   `POST /toolgate/v1/release`, `POST /toolgate/v1/filter`,
//!   `GET /.well-known/authzen-configuration`.
//! - `Authorization: Bearer TOKEN`, a token of `--authzen-tokens`, on every request but the
//!   well-known configuration; without tokens (a loopback address only) none is asked.
//!   Refusals are 401 and never a decision.
//! - `X-Request-ID` is echoed (at most 256 visible ASCII characters, else 400).
//!
//! Bounded whatever a client sends: a connection's headers within [`HEADER_WAIT`] and
//! [`MAX_HEAD_BYTES`]; a body is read only once its caller is known, within [`BODY_WAIT`]
//! and [`MAX_BODY_BYTES`], all callers' together within [`BODY_BUDGET`] (503 past it); at most [`MAX_CONNECTIONS`] connections a serving thread: a new one
//! over it takes the place of the oldest whose caller has not shown a token yet (else it is
//! closed at once), so callers without one cannot crowd out those with one; a 401 closes its
//! connection.

use crate::authzen::{AuthZen, BadRequest};
use crate::connection::{Bound, Incoming, Serving, Signal};
use crate::native::Listen;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use toolgate_core::Engine;
use toolgate_runtime::tokens::TokenDigests;

/// The time a client has to send a request's headers.
pub const HEADER_WAIT: Duration = Duration::from_secs(10);
/// The time a caller has to send a request's body.
pub const BODY_WAIT: Duration = Duration::from_secs(10);
/// The largest request head (line and headers) and body.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Connections one serving thread holds open at most.
pub const MAX_CONNECTIONS: usize = 512;
/// The longest `X-Request-ID` echoed.
const MAX_REQUEST_ID: usize = 256;

pub const EVALUATION: &str = "/access/v1/evaluation";
pub const EVALUATIONS: &str = "/access/v1/evaluations";
pub const RELEASE: &str = "/toolgate/v1/release";
pub const FILTER: &str = crate::authzen::FILTER_PATH;
pub const CONFIGURATION: &str = "/.well-known/authzen-configuration";

/// How the listener runs.
#[derive(Clone)]
pub struct AuthZenOptions {
    pub listen: Listen,
    /// The tokens a caller must present; `None`: none (a loopback address or a socket only).
    pub tokens: Option<TokenDigests>,
}

/// What every connection shares.
struct Shared {
    engine: Arc<Engine>,
    api: AuthZen,
    tokens: Option<TokenDigests>,
    /// This listener as the well-known configuration names it (`http://ADDRESS`).
    base: String,
    /// Bytes of bodies being read or decided, as their senders announced them.
    bodies: AtomicUsize,
}

/// A running listener.
pub struct AuthZenListener {
    serving: Serving,
    address: String,
}

impl AuthZenListener {
    pub fn start(
        engine: Arc<Engine>,
        options: AuthZenOptions,
        spans: Option<Arc<crate::spans::Spans>>,
        threads: usize,
    ) -> Result<AuthZenListener, String> {
        let bound = match &options.listen {
            Listen::Tcp(addr) => Bound::tcp(*addr),
            Listen::Unix(path) => Bound::unix(path),
        }
        .map_err(|e| format!("--authzen-listen: {e}"))?;
        let address = bound.address()?;
        let base = match address.strip_prefix("unix:") {
            Some(_) => "http://localhost".to_owned(),
            None => format!("http://{address}"),
        };
        let shared = Arc::new(Shared {
            engine,
            api: AuthZen::new(spans),
            tokens: options.tokens,
            base,
            bodies: AtomicUsize::new(0),
        });
        let serving = Serving::start(bound, threads, move |incoming, signal| {
            serve(incoming, signal, Arc::clone(&shared))
        })?;
        Ok(AuthZenListener { serving, address })
    }

    /// The address it listens on (with the port the system chose, for port 0).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Stop accepting, let requests in flight finish for up to `grace`, then stop.
    pub fn stop(self, grace: Duration) -> Result<(), String> {
        self.serving.stop(grace)
    }
}

/// Serve the connections dealt to one thread until `signal`.
async fn serve(
    mut incoming: Incoming,
    mut signal: Signal,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Open::default());
    loop {
        tokio::select! {
            () = &mut signal => break,
            next = incoming.next() => match next {
                None => break,
                Some(Err(_)) => continue,
                Some(Ok(io)) => {
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    let Some(held) = Held::new(&open, stop) else {
                        // Full of callers that showed a token: closed unread.
                        drop(io);
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    let proven = Arc::clone(&held.proven);
                    let service = service_fn(move |request| {
                        let (shared, proven) = (Arc::clone(&shared), Arc::clone(&proven));
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(&shared, &proven, request).await)
                        }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_WAIT)
                        .max_buf_size(MAX_HEAD_BYTES)
                        .serve_connection(TokioIo::new(io), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _held = held;
                        tokio::select! {
                            _ = connection => {}
                            // Its place taken by a new connection.
                            _ = stopped => {}
                        }
                    });
                }
            },
        }
    }
    // The requests in flight finish; the serving thread's grace cuts off the rest.
    graceful.shutdown().await;
    Ok(())
}

/// The connections a serving thread holds open, oldest first: whether its caller showed a
/// token, and how to close it.
#[derive(Default)]
struct Open {
    next: AtomicU64,
    held: Mutex<VecDeque<OpenConnection>>,
}

/// A connection's id, whether its caller showed a token, and how to close it.
type OpenConnection = (u64, Arc<AtomicBool>, oneshot::Sender<()>);

/// One open connection, counted while it lives.
struct Held {
    open: Arc<Open>,
    id: u64,
    /// Its caller showed a valid token (or none is asked for).
    proven: Arc<AtomicBool>,
}

impl Held {
    /// Counted, closed through `stop` if its place is taken: in place of the oldest
    /// connection whose caller has not shown a token, when there are [`MAX_CONNECTIONS`];
    /// `None` when all have.
    fn new(open: &Arc<Open>, stop: oneshot::Sender<()>) -> Option<Held> {
        let mut held = open.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= MAX_CONNECTIONS {
            let oldest = held
                .iter()
                .position(|(_, proven, _)| !proven.load(Ordering::Relaxed))?;
            let (_, _, stop) = held.remove(oldest).expect("found");
            let _ = stop.send(());
        }
        let id = open.next.fetch_add(1, Ordering::Relaxed);
        let proven = Arc::new(AtomicBool::new(false));
        held.push_back((id, Arc::clone(&proven), stop));
        Some(Held {
            open: Arc::clone(open),
            id,
            proven,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.open.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = held.iter().position(|(id, _, _)| *id == self.id) {
            held.remove(at);
        }
    }
}

/// Bytes of bodies all callers of a listener may have read or decided at once.
pub const BODY_BUDGET: usize = 64 << 20;

/// A body's share of [`BODY_BUDGET`], given back when its request is answered.
struct BodyRoom<'a>(&'a AtomicUsize, usize);

impl<'a> BodyRoom<'a> {
    fn take(used: &'a AtomicUsize, bytes: usize) -> Option<BodyRoom<'a>> {
        let before = used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > BODY_BUDGET {
            used.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        Some(BodyRoom(used, bytes))
    }
}

impl Drop for BodyRoom<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

type Answer = Response<Full<Bytes>>;

async fn answer(shared: &Arc<Shared>, proven: &AtomicBool, request: Request<Body>) -> Answer {
    let request_id = match request_id(request.headers()) {
        Ok(id) => id,
        Err(why) => return error(StatusCode::BAD_REQUEST, why, None),
    };
    let mut answer = route(shared, proven, request).await;
    if let Some(id) = request_id {
        answer.headers_mut().insert("x-request-id", id);
    }
    answer
}

/// The `X-Request-ID` to echo: sent at most once, short and visible ASCII.
fn request_id(headers: &HeaderMap) -> Result<Option<HeaderValue>, &'static str> {
    let mut sent = headers.get_all("x-request-id").iter();
    match (sent.next(), sent.next()) {
        (None, _) => Ok(None),
        (Some(id), None)
            if id.len() <= MAX_REQUEST_ID
                && !id.is_empty()
                && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(id.clone()))
        }
        _ => Err("X-Request-ID is sent once, at most 256 visible ASCII characters"),
    }
}

async fn route(shared: &Arc<Shared>, proven: &AtomicBool, request: Request<Body>) -> Answer {
    let path = request.uri().path();
    let post = match path {
        CONFIGURATION => {
            return match *request.method() {
                Method::GET | Method::HEAD => configuration(&shared.base),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET", Some("GET")),
            };
        }
        EVALUATION | EVALUATIONS | RELEASE | FILTER => request.method() == Method::POST,
        _ => return error(StatusCode::NOT_FOUND, "no such endpoint", None),
    };
    if !post {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST", Some("POST"));
    }
    if !authenticated(shared.tokens.as_ref(), request.headers()) {
        let mut refused = error(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
            None,
        );
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"toolgate\""),
        );
        // A caller without a token holds no connection open.
        refused
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return refused;
    }
    proven.store(true, Ordering::Relaxed);
    if !is_json(request.headers()) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request's Content-Type is application/json",
            None,
        );
    }
    let endpoint = path.to_owned();
    // Room for the body in the listener's budget, before a byte of it is read.
    let announced = (request.headers().get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .map_or(MAX_BODY_BYTES, |n| n.min(MAX_BODY_BYTES));
    let Some(_room) = BodyRoom::take(&shared.bodies, announced) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the listener holds as many bodies as it may: ask again",
            None,
        );
    };
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err((status, why)) => return error(status, why, None),
    };
    // A decision that may wait on a slow Redis waits on a blocking thread, so the other
    // connections this thread serves go on (as the gRPC services do).
    let answered = if shared.engine.store_slow() {
        let shared = Arc::clone(shared);
        let headers = parts.headers;
        tokio::task::spawn_blocking(move || decide(&shared, &endpoint, &body, &Headers(&headers)))
            .await
            .map_err(|_| ())
    } else {
        Ok(decide(shared, &endpoint, &body, &Headers(&parts.headers)))
    };
    match answered {
        Ok(Ok(value)) => json_answer(StatusCode::OK, &value),
        Ok(Err(BadRequest(why))) => error(StatusCode::BAD_REQUEST, &why, None),
        Err(()) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "toolgate could not decide this request",
            None,
        ),
    }
}

fn decide(
    shared: &Shared,
    endpoint: &str,
    body: &[u8],
    transport: &dyn crate::spans::Headers,
) -> Result<Value, BadRequest> {
    let (api, engine) = (&shared.api, &*shared.engine);
    match endpoint {
        EVALUATION => api.evaluation(engine, body, transport),
        EVALUATIONS => api.evaluations(engine, body, transport),
        FILTER => api.filter(engine, body),
        _ => api.release(engine, body),
    }
}

/// Whether the caller presents one of `tokens` (any caller, without tokens), as
/// `Authorization: Bearer TOKEN` sent once.
fn authenticated(tokens: Option<&TokenDigests>, headers: &HeaderMap) -> bool {
    let Some(tokens) = tokens else {
        return true;
    };
    let mut sent = headers.get_all(header::AUTHORIZATION).iter();
    let token = match (sent.next(), sent.next()) {
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        (Some(value), None) => {
            let value = value.as_bytes();
            (value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &value[7..])
        }
        _ => None,
    };
    token.and_then(|t| tokens.name_of(t)).is_some()
}

/// `application/json`, with at most a UTF-8 charset, sent once.
fn is_json(headers: &HeaderMap) -> bool {
    let mut sent = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (sent.next(), sent.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    media.eq_ignore_ascii_case("application/json")
        && parts.all(|p| {
            p.eq_ignore_ascii_case("charset=utf-8") || p.eq_ignore_ascii_case("charset=\"utf-8\"")
        })
}

async fn read_body(body: Body) -> Result<Bytes, (StatusCode, &'static str)> {
    let limited = Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_WAIT, limited.collect()).await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, "the body is over 1 MiB"))
        }
        Ok(Err(_)) => Err((StatusCode::BAD_REQUEST, "the body could not be read")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The PDP's metadata.
fn configuration(base: &str) -> Answer {
    json_answer(
        StatusCode::OK,
        &json!({
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}{EVALUATION}"),
            "access_evaluations_endpoint": format!("{base}{EVALUATIONS}"),
        }),
    )
}

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    let body = serde_json::to_vec(value).expect("JSON values serialize");
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    answer
}

fn error(status: StatusCode, why: &str, allow: Option<&'static str>) -> Answer {
    let mut answer = json_answer(status, &json!({ "error": why }));
    if let Some(allow) = allow {
        answer
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    answer
}

/// The request's headers, read as a trace context's carrier (a header sent twice is none).
struct Headers<'a>(&'a HeaderMap);

impl crate::spans::Headers for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        let mut sent = self.0.get_all(name).iter();
        match (sent.next(), sent.next()) {
            (Some(one), None) => one.to_str().ok(),
            _ => None,
        }
    }
}
