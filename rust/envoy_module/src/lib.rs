//! toolgate inside Envoy: the decision core as an HTTP filter dynamic module
//! (`envoy.filters.http.dynamic_modules`, module name `toolgate`). Each MCP request is decided
//! in Envoy's worker thread, with no hop to a sidecar: the same gate as the sidecar's
//! ext_authz service, the same answers, codes and reasons (docs/envoy.md, "In Envoy's
//! process").
//!
//! The hooks below are Envoy's entry points ([`abi`]); [`config`] reads the filter's
//! configuration into an engine the worker threads share, and [`filter`] decides one stream.
//! A panic never unwinds into Envoy: the stream is refused instead (fail closed).

mod abi;
mod ask_sidecar;
mod config;
mod deciders;
mod decision_logs;
mod filter;
mod metrics;
mod reload;
mod request_headers;
mod shared;
mod traced;
mod verified;

use abi::*;
use config::Config;
use filter::{AnswerPart, Filter, Next};
use metrics::Metrics;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What the module keeps for one stream: the configuration it decides with, and its state.
struct StreamState {
    config: *const Config,
    filter: Filter,
}

/// The state `filter_new` made for `filter`.
///
/// # Safety
/// `filter` is a live `StreamState`, reached only on its stream's worker.
unsafe fn state<'a>(filter: FilterModulePtr) -> &'a mut StreamState {
    &mut *(filter as *mut StreamState)
}

/// The module's ABI version, for Envoy to check against its own.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    ABI_VERSION.as_ptr()
}

/// A filter configuration, on Envoy's main thread: null (refused) when it cannot be read.
///
/// # Safety
/// Envoy's buffers are valid during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    let text = config.bytes();
    let read = catch_unwind(|| {
        let mut config = Config::read(text)?;
        config.metrics = Some(Metrics::define(
            envoy,
            &config.engine,
            config.reloads.clone(),
        ));
        Ok::<_, String>(config)
    });
    match read {
        Ok(Ok(config)) => {
            log(LOG_INFO, "toolgate: the filter's policy is loaded");
            Box::into_raw(Box::new(config)) as ConfigModulePtr
        }
        Ok(Err(why)) => {
            log(
                LOG_ERROR,
                &format!("toolgate: the filter_config is refused: {why}"),
            );
            std::ptr::null()
        }
        Err(_) => std::ptr::null(),
    }
}

/// # Safety
/// `config` is one `config_new` made, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: ConfigModulePtr,
) {
    drop(Box::from_raw(config as *mut Config));
}

/// # Safety
/// `config` is live while its filters are.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    let state = StreamState {
        config: config as *const Config,
        filter: Filter::default(),
    };
    Box::into_raw(Box::new(state)) as FilterModulePtr
}

/// # Safety
/// `filter` is one `filter_new` made, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
    drop(Box::from_raw(filter as *mut StreamState));
}

/// Decide, refusing the stream if the module panics: fail closed.
unsafe fn decide(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    body: impl FnOnce(Stream) -> Vec<u8>,
    into: u32,
) -> Next {
    let StreamState { config, filter } = state(filter);
    // Decided once: a later hook of the same stream copies no body.
    if let Some(next) = filter.decided() {
        return next;
    }
    let stream = Stream(envoy);
    let decided = catch_unwind(AssertUnwindSafe(|| {
        filter.decide(&**config, stream, body(stream), into)
    }));
    decided.unwrap_or_else(|_| {
        failed(stream, "toolgate: the module failed on a request; refused");
        Next::Answered
    })
}

/// The module panicked deciding the stream's request: it is refused (500), fail closed.
fn failed(stream: Stream, why: &str) {
    log(LOG_ERROR, why);
    let body = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"toolgate could not decide this request"}}"#;
    stream.send_response(
        500,
        &[("content-type", "application/json".into())],
        body,
        "toolgate_failed",
    );
}

/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    if !end_of_stream {
        // Held until the body is whole.
        return HEADERS_STOP_ITERATION;
    }
    match decide(envoy, filter, |_| Vec::new(), RECEIVED_REQUEST_BODY) {
        Next::Continue => HEADERS_CONTINUE,
        Next::Answered | Next::Held => HEADERS_STOP_ITERATION,
    }
}

/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    let max = (&*state(filter).config).authz.max_request_bytes;
    // A body over the limit is decided cut at it (and refused, as ext_authz's partial body
    // is) before Envoy's own buffer limit answers a bare 413.
    let over = Stream(envoy).request_body_size() > max;
    if !end_of_stream && !over {
        return BODY_STOP_ITERATION_AND_BUFFER;
    }
    match decide(envoy, filter, Stream::request_body, RECEIVED_REQUEST_BODY) {
        Next::Continue => BODY_CONTINUE,
        Next::Answered => BODY_STOP_ITERATION_NO_BUFFER,
        // The body stays in Envoy's buffer, to go on when the sidecar allows.
        Next::Held => BODY_STOP_ITERATION_AND_BUFFER,
    }
}

/// Run `step` on the stream's answer; after a panic, a list's answer is withheld
/// ([`Filter::withhold`]).
unsafe fn follow(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    step: impl FnOnce(&Config, &mut Filter, Stream),
) {
    let StreamState { config, filter } = state(filter);
    let stream = Stream(envoy);
    if catch_unwind(AssertUnwindSafe(|| step(&**config, filter, stream))).is_err() {
        log(LOG_ERROR, "toolgate: the module failed on an answer");
        filter.withhold(stream);
    }
}

/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    follow(envoy, filter, |config, filter, stream| {
        filter.response_headers(config, stream)
    });
    HEADERS_CONTINUE
}

/// A chunk of the answer's body, passed on as it comes (a list's filtered event by event).
///
/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    follow(envoy, filter, |config, filter, stream| {
        if filter.follows() {
            let chunk = stream.response_chunk();
            filter.response_body(config, stream, Some(chunk), end_of_stream);
        }
    });
    BODY_CONTINUE
}

/// An answer that ends with trailers ends its body here.
///
/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) -> u32 {
    follow(envoy, filter, |config, filter, stream| {
        filter.response_body(config, stream, None, true)
    });
    TRAILERS_CONTINUE
}

/// A request whose body ends with trailers (HTTP/2, chunked HTTP/1) never reaches its body's
/// end in the body hook: it is decided here, on the body Envoy holds.
///
/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) -> u32 {
    match decide(envoy, filter, Stream::request_body, BUFFERED_REQUEST_BODY) {
        Next::Continue => TRAILERS_CONTINUE,
        Next::Answered | Next::Held => TRAILERS_STOP_ITERATION,
    }
}

// The hooks Envoy requires whose events the module does not use yet.

/// A stream has ended: the engine's numbers go to Envoy's stats (at most once a second).
///
/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) {
    let config = &*state(filter).config;
    if let Some(metrics) = &config.metrics {
        let pushed = catch_unwind(AssertUnwindSafe(|| {
            metrics.push(Stream(envoy), &config.engine)
        }));
        if pushed.is_err() {
            log(LOG_ERROR, "toolgate: the module failed pushing its metrics");
        }
    }
}

/// A decider has decided the stream's request: it goes on, or is answered.
///
/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _: u64,
) {
    let StreamState { config, filter } = state(filter);
    let stream = Stream(envoy);
    match catch_unwind(AssertUnwindSafe(|| filter.resume(&**config, stream))) {
        Ok(true) => stream.continue_decoding(),
        Ok(false) => {}
        Err(_) => failed(stream, "toolgate: the module failed on a request; refused"),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) {
}

/// The one-shot callout is not used (the sidecar is asked on a stream of its own, whose
/// trailers carry gRPC's status).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _: u64,
    _: u32,
    _: *const EnvoyHeader,
    _: usize,
    _: *const EnvoyBuffer,
    _: usize,
) {
}

/// Run `step` on the sidecar's answer; a panic refuses the held request (fail closed).
unsafe fn sidecar(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    step: impl FnOnce(&mut Filter, Stream),
) {
    let StreamState { filter, .. } = state(filter);
    let stream = Stream(envoy);
    if catch_unwind(AssertUnwindSafe(|| step(filter, stream))).is_err() {
        failed(
            stream,
            "toolgate: the module failed on the sidecar's answer; refused",
        );
    }
}

/// # Safety
/// Called by Envoy on the stream's worker, with an array of the size it gives.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    callout: u64,
    headers: *const EnvoyHeader,
    n: usize,
    _end_stream: bool,
) {
    let headers = envoy_headers(headers, n);
    sidecar(envoy, filter, |f, s| {
        f.sidecar_sent(s, callout, AnswerPart::Headers(headers))
    });
}

/// # Safety
/// Called by Envoy on the stream's worker, with an array of the size it gives.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    callout: u64,
    chunks: *const EnvoyBuffer,
    n: usize,
    _end_stream: bool,
) {
    let chunks = envoy_chunks(chunks, n);
    sidecar(envoy, filter, |f, s| {
        f.sidecar_sent(s, callout, AnswerPart::Data(chunks))
    });
}

/// # Safety
/// Called by Envoy on the stream's worker, with an array of the size it gives.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    callout: u64,
    trailers: *const EnvoyHeader,
    n: usize,
) {
    let trailers = envoy_headers(trailers, n);
    sidecar(envoy, filter, |f, s| {
        f.sidecar_sent(s, callout, AnswerPart::Trailers(trailers))
    });
}

/// The sidecar's answer came whole.
///
/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    callout: u64,
) {
    sidecar(envoy, filter, |f, s| f.sidecar_done(s, callout, true));
}

/// The callout ended without a whole answer.
///
/// # Safety
/// Called by Envoy on the stream's worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    callout: u64,
    _reason: u32,
) {
    sidecar(envoy, filter, |f, s| f.sidecar_done(s, callout, false));
}
