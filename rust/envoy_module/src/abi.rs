//! The part of Envoy's dynamic-module C ABI (`abi.h`, the ABI version [`ABI_VERSION`], Envoy 1.40) this
//! module uses, declared here: Envoy's Rust SDK is not on the crate registry, and a git
//! dependency would not build offline from a clean clone. Envoy resolves the callbacks
//! against its own exports when it loads the module; a released entry never changes its
//! signature, so these hold for every Envoy that reports the same ABI version.
#![allow(non_camel_case_types)]

use std::ffi::c_void;

/// What `envoy_dynamic_module_on_program_init` answers: Envoy warns when it is not its own.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Bytes Envoy owns, valid during the hook that gave them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// # Safety
    /// Only while Envoy keeps the bytes (the hook that gave them).
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.length)
        }
    }
}

/// Bytes the module owns, read by Envoy during the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }
}

#[repr(C)]
pub struct ModuleHeader {
    pub key: ModuleBuffer,
    pub value: ModuleBuffer,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHeader {
    pub key: EnvoyBuffer,
    pub value: EnvoyBuffer,
}

pub type ConfigEnvoyPtr = *mut c_void;
pub type ConfigModulePtr = *const c_void;
pub type FilterEnvoyPtr = *mut c_void;
pub type FilterModulePtr = *const c_void;

// C enums cross as 32-bit integers.
pub const REQUEST_HEADER: u32 = 0;
pub const RESPONSE_HEADER: u32 = 2;
pub const RECEIVED_REQUEST_BODY: u32 = 0;
pub const BUFFERED_REQUEST_BODY: u32 = 1;
pub const RECEIVED_RESPONSE_BODY: u32 = 2;
pub const BUFFERED_RESPONSE_BODY: u32 = 3;
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
pub const BODY_CONTINUE: u32 = 0;
pub const BODY_STOP_ITERATION_AND_BUFFER: u32 = 1;
pub const BODY_STOP_ITERATION_NO_BUFFER: u32 = 3;
pub const TRAILERS_CONTINUE: u32 = 0;
pub const TRAILERS_STOP_ITERATION: u32 = 1;
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
/// `envoy_dynamic_module_type_attribute_id_SourceAddress`: `source.address`.
pub const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;
pub const LOG_ERROR: u32 = 4;
/// `envoy_dynamic_module_type_metrics_result`'s success.
pub const METRICS_SUCCESS: u32 = 0;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    /// Envoy keeps the value as a read-only string object (`Router::StringAccessor`), for the
    /// filter chain's life; a key set before is left as it is, and Envoy logs why.
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        kind: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        kind: u32,
        headers: *mut EnvoyHeader,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        kind: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: FilterEnvoyPtr,
        kind: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterEnvoyPtr,
        kind: u32,
        chunks: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_body_size(
        filter: FilterEnvoyPtr,
        kind: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_append_body(
        filter: FilterEnvoyPtr,
        kind: u32,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(
        filter: FilterEnvoyPtr,
        kind: u32,
        bytes: usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter: FilterEnvoyPtr,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_start_http_stream(
        filter: FilterEnvoyPtr,
        stream_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        end_stream: bool,
        timeout_milliseconds: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_reset_http_stream(
        filter: FilterEnvoyPtr,
        stream_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoyPtr,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    pub fn envoy_dynamic_module_callback_http_get_active_span(filter: FilterEnvoyPtr) -> SpanPtr;
    pub fn envoy_dynamic_module_callback_http_span_spawn_child(
        filter: FilterEnvoyPtr,
        span: SpanPtr,
        operation: ModuleBuffer,
    ) -> SpanPtr;
    pub fn envoy_dynamic_module_callback_http_span_set_operation(
        span: SpanPtr,
        operation: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_span_set_tag(
        span: SpanPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_span_get_trace_id(
        span: SpanPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_span_get_span_id(
        span: SpanPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_child_span_finish(span: SpanPtr);
}

/// `envoy_dynamic_module_type_span_envoy_ptr` (and a child span the module owns,
/// `envoy_dynamic_module_type_child_span_module_ptr`).
pub type SpanPtr = *mut c_void;

/// A span the module started under the stream's (Envoy's tracer exports it): finished, and
/// so exported if its trace is sampled, when dropped. Only on the stream's worker.
pub struct ChildSpan(SpanPtr);

impl ChildSpan {
    pub fn set_operation(&self, name: &str) {
        // SAFETY: live until dropped; Envoy copies the name.
        unsafe {
            envoy_dynamic_module_callback_http_span_set_operation(
                self.0,
                ModuleBuffer::of(name.as_bytes()),
            )
        }
    }

    pub fn set_tag(&self, key: &str, value: &str) {
        let (key, value) = (
            ModuleBuffer::of(key.as_bytes()),
            ModuleBuffer::of(value.as_bytes()),
        );
        // SAFETY: live until dropped; Envoy copies both.
        unsafe { envoy_dynamic_module_callback_http_span_set_tag(self.0, key, value) }
    }

    /// Its trace's and its own id, as Envoy's tracer writes them (lower-case hex).
    pub fn ids(&self) -> Option<(String, String)> {
        let read = |get: unsafe extern "C" fn(SpanPtr, *mut EnvoyBuffer) -> bool| {
            let mut out = EnvoyBuffer::EMPTY;
            // SAFETY: Envoy's string lives until its next tracing call on this thread; it is
            // copied before that.
            unsafe { get(self.0, &mut out).then(|| String::from_utf8_lossy(out.bytes()).into()) }
        };
        Some((
            read(envoy_dynamic_module_callback_http_span_get_trace_id)?,
            read(envoy_dynamic_module_callback_http_span_get_span_id)?,
        ))
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        // SAFETY: made by `spawn_child`, finished (and freed by Envoy) once.
        unsafe { envoy_dynamic_module_callback_http_child_span_finish(self.0) }
    }
}

/// `envoy_dynamic_module_type_http_filter_scheduler_module_ptr`.
pub type SchedulerPtr = *mut std::ffi::c_void;

/// A way back to one stream's worker from any thread: [`Scheduler::wake`] has Envoy call
/// `on_http_filter_scheduled` there (or nothing, once the stream is gone). Deleted when
/// dropped, on whichever thread holds it last.
pub struct Scheduler(SchedulerPtr);

// SAFETY: Envoy documents the scheduler's commit as callable from any thread, and its
// deletion touches only the scheduler's own object.
unsafe impl Send for Scheduler {}

impl Scheduler {
    /// Have Envoy call the stream's `on_http_filter_scheduled` on its worker.
    pub fn wake(&self) {
        // SAFETY: the scheduler is live until dropped.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, 0) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: made by `scheduler_new`, deleted once.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

/// `envoy_dynamic_module_type_http_callout_init_result`'s success.
pub const CALLOUT_STARTED: u32 = 0;

/// Log `message` in Envoy's log (its `dynamic_modules` logger).
pub fn log(level: u32, message: &str) {
    // SAFETY: Envoy reads the message during the call.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// One stream, as Envoy's callbacks reach it: only on the stream's worker, during a hook.
#[derive(Clone, Copy)]
pub struct Stream(pub FilterEnvoyPtr);

impl Stream {
    /// Each of the request's (or the response's) headers, in order, as `each` reads it: names
    /// as Envoy keeps them (lower case), values as bytes, both Envoy's own (no copy).
    pub fn each_header(self, kind: u32, mut each: impl FnMut(&[u8], &[u8])) {
        // SAFETY: called on the stream's worker during a hook; the vector holds the size
        // Envoy gave, and the bytes are read before the hook returns.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(self.0, kind);
            let mut headers = vec![
                EnvoyHeader {
                    key: EnvoyBuffer::EMPTY,
                    value: EnvoyBuffer::EMPTY,
                };
                n
            ];
            if n == 0
                || !envoy_dynamic_module_callback_http_get_headers(
                    self.0,
                    kind,
                    headers.as_mut_ptr(),
                )
            {
                return;
            }
            for header in headers {
                each(header.key.bytes(), header.value.bytes());
            }
        }
    }

    /// The first value of header `name` (lower case), as text; None where there is none.
    /// Looked up where Envoy keeps the headers: nothing else is copied.
    pub fn header(self, kind: u32, name: &str) -> Option<String> {
        let mut value = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: as for `each_header`; the name is read during the call.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                0,
                &mut count,
            )
        };
        // SAFETY: the value is Envoy's until the hook returns, and copied here.
        (found && count > 0).then(|| String::from_utf8_lossy(unsafe { value.bytes() }).into_owned())
    }

    /// Append the chunks of body `kind` to `out`.
    pub fn body_into(self, kind: u32, out: &mut Vec<u8>) {
        // SAFETY: as for `each_header`.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, kind);
            let mut chunks = vec![EnvoyBuffer::EMPTY; n];
            if n > 0
                && envoy_dynamic_module_callback_http_get_body_chunks(
                    self.0,
                    kind,
                    chunks.as_mut_ptr(),
                )
            {
                // Grown once: a list's answer comes in many chunks.
                out.reserve(chunks.iter().map(|c| c.length).sum());
                for chunk in chunks {
                    out.extend_from_slice(chunk.bytes());
                }
            }
        }
    }

    /// The whole request body at its end: what Envoy buffered, then the last chunk (unless an
    /// earlier filter buffered it all and the buffer is that chunk).
    pub fn request_body(self) -> Vec<u8> {
        let mut body = Vec::new();
        self.body_into(BUFFERED_REQUEST_BODY, &mut body);
        // SAFETY: as for `each_header`.
        if !unsafe { envoy_dynamic_module_callback_http_received_buffered_request_body(self.0) } {
            self.body_into(RECEIVED_REQUEST_BODY, &mut body);
        }
        body
    }

    /// The chunk of the response body at hand.
    pub fn response_chunk(self) -> Vec<u8> {
        let mut chunk = Vec::new();
        self.body_into(RECEIVED_RESPONSE_BODY, &mut chunk);
        chunk
    }

    /// Put `bytes` in place of the body's parts of the kinds `drained`, as body of kind `into`
    /// (the chunk at hand, or in the trailers' hook, where there is none, the buffered body).
    pub fn replace_body(self, drained: &[u32], into: u32, bytes: &[u8]) {
        // SAFETY: as for `each_header`; Envoy copies the bytes.
        unsafe {
            for &kind in drained {
                let size = envoy_dynamic_module_callback_http_get_body_size(self.0, kind);
                if size > 0 {
                    envoy_dynamic_module_callback_http_drain_body(self.0, kind, size);
                }
            }
            if !bytes.is_empty() {
                envoy_dynamic_module_callback_http_append_body(
                    self.0,
                    into,
                    ModuleBuffer::of(bytes),
                );
            }
        }
    }

    /// Bytes of the request body so far: what Envoy buffered and the chunk at hand.
    pub fn request_body_size(self) -> usize {
        // SAFETY: as for `each_header`.
        unsafe {
            envoy_dynamic_module_callback_http_get_body_size(self.0, BUFFERED_REQUEST_BODY)
                + envoy_dynamic_module_callback_http_get_body_size(self.0, RECEIVED_REQUEST_BODY)
        }
    }

    /// The downstream connection's peer, `IP:PORT`, when Envoy knows it.
    pub fn source_address(self) -> Option<String> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: as for `each_header`; the bytes are copied before the hook returns.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.0,
                ATTRIBUTE_SOURCE_ADDRESS,
                &mut out,
            )
            .then(|| String::from_utf8_lossy(out.bytes()).into_owned())
        }
    }

    /// The stream's filter state object `key` as its bytes (what its `serializeAsString`
    /// gives: a string object's string), when the stream has one.
    pub fn filter_state(self, key: &str) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: as for `each_header`; the bytes are copied before the hook returns.
        unsafe {
            envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                &mut out,
            )
            .then(|| out.bytes().to_vec())
        }
    }

    /// Set header `key` to `value`, in place of every value it had.
    pub fn set_header(self, kind: u32, key: &str, value: &str) {
        // SAFETY: as for `each_header`; Envoy copies the bytes.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                kind,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    /// Set `key` in the stream's filter state to the string `value`, for the access log
    /// (`%FILTER_STATE(key:PLAIN)%`) and the filters after this one. False where Envoy has no
    /// stream to keep it on.
    pub fn set_filter_state(self, key: &str, value: &str) -> bool {
        // SAFETY: as for `each_header`; Envoy copies the bytes before it returns.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    /// Add `value` to the counter Envoy defined as `id`, its labels' values `labels`.
    pub fn increment_counter(self, id: usize, labels: &[String], value: u64) {
        self.change_stat(
            envoy_dynamic_module_callback_http_filter_increment_counter,
            id,
            labels,
            value,
        );
    }

    /// Set the gauge Envoy defined as `id`, its labels' values `labels`, to `value`.
    pub fn set_gauge(self, id: usize, labels: &[String], value: u64) {
        self.change_stat(
            envoy_dynamic_module_callback_http_filter_set_gauge,
            id,
            labels,
            value,
        );
    }

    fn change_stat(self, change: StatChange, id: usize, labels: &[String], value: u64) {
        let labels = buffers(labels);
        // SAFETY: as for `each_header`; Envoy copies the label values.
        unsafe { change(self.0, id, labels.as_ptr(), labels.len(), value) };
    }

    /// Take header `key` away.
    pub fn remove_header(self, kind: u32, key: &str) {
        let nothing = ModuleBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: as for `each_header`; a value without bytes removes the header.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                kind,
                ModuleBuffer::of(key.as_bytes()),
                nothing,
            );
        }
    }

    /// Answer in the upstream's place; Envoy copies everything.
    pub fn send_response(
        self,
        status: u16,
        headers: &[(&str, String)],
        body: &[u8],
        details: &str,
    ) {
        let mut headers = module_headers(headers);
        // SAFETY: as for `each_header`; the vectors outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details.as_bytes()),
            );
        }
    }
}

impl Stream {
    /// Send `body` (the whole request) to `cluster` with `headers` (`:method`, `:path` and
    /// `host` among them) on a stream of its own; Envoy calls `on_http_filter_http_stream_*`
    /// on this stream's worker with the answer's headers, data and trailers, then its end
    /// (`complete`, or `reset`). The stream's id, or what Envoy's refusal to start it says.
    pub fn start_stream(
        self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, u32> {
        let mut headers = module_headers(headers);
        let mut id = 0u64;
        // SAFETY: as for `each_header`; Envoy copies the headers and the body.
        let started = unsafe {
            envoy_dynamic_module_callback_http_filter_start_http_stream(
                self.0,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                true,
                timeout_ms,
            )
        };
        match started {
            CALLOUT_STARTED => Ok(id),
            refused => Err(refused),
        }
    }

    /// End stream `id` started by [`Stream::start_stream`].
    pub fn reset_stream(self, id: u64) {
        // SAFETY: on the stream's worker, in one of its hooks.
        unsafe { envoy_dynamic_module_callback_http_filter_reset_http_stream(self.0, id) }
    }

    /// A span named `operation` under Envoy's span for the request, where Envoy traces it.
    pub fn child_span(self, operation: &str) -> Option<ChildSpan> {
        // SAFETY: on the stream's worker during a hook; Envoy copies the name, and gives the
        // child to the module, which finishes it once (`ChildSpan`'s drop).
        unsafe {
            let active = envoy_dynamic_module_callback_http_get_active_span(self.0);
            if active.is_null() {
                return None;
            }
            let operation = ModuleBuffer::of(operation.as_bytes());
            let child =
                envoy_dynamic_module_callback_http_span_spawn_child(self.0, active, operation);
            (!child.is_null()).then_some(ChildSpan(child))
        }
    }

    /// A way back to this stream's worker from another thread.
    pub fn scheduler(self) -> Scheduler {
        // SAFETY: on the stream's worker, in one of its hooks.
        Scheduler(unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.0) })
    }

    /// Let the request Envoy holds go on (after a hook returned a stop).
    pub fn continue_decoding(self) {
        // SAFETY: on the stream's worker, in one of its hooks.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }
}

/// Headers (or trailers) Envoy hands a hook, copied: names in lower case.
///
/// # Safety
/// `headers` is the array of `n` Envoy passed to the hook.
pub unsafe fn envoy_headers(headers: *const EnvoyHeader, n: usize) -> Vec<(String, Vec<u8>)> {
    if headers.is_null() {
        return Vec::new();
    }
    let headers = std::slice::from_raw_parts(headers, n);
    let header = |h: &EnvoyHeader| {
        let key = String::from_utf8_lossy(h.key.bytes()).to_ascii_lowercase();
        (key, h.value.bytes().to_vec())
    };
    headers.iter().map(header).collect()
}

/// The chunks of data Envoy hands a hook, as slices.
///
/// # Safety
/// `chunks` is the array of `n` Envoy passed to the hook; only during it.
pub unsafe fn envoy_chunks<'a>(chunks: *const EnvoyBuffer, n: usize) -> Vec<&'a [u8]> {
    if chunks.is_null() {
        return Vec::new();
    }
    std::slice::from_raw_parts(chunks, n)
        .iter()
        .map(|c| c.bytes())
        .collect()
}

/// `headers` as Envoy reads them during a call (borrowing their bytes).
fn module_headers<V: AsRef<str>>(headers: &[(&str, V)]) -> Vec<ModuleHeader> {
    let header = |(k, v): &(&str, V)| ModuleHeader {
        key: ModuleBuffer::of(k.as_bytes()),
        value: ModuleBuffer::of(v.as_ref().as_bytes()),
    };
    headers.iter().map(header).collect()
}

/// A callback that changes a stat: a counter's increment, a gauge's value.
type StatChange =
    unsafe extern "C" fn(FilterEnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32;

/// `texts` as buffers Envoy reads during a call.
fn buffers(texts: &[String]) -> Vec<ModuleBuffer> {
    texts
        .iter()
        .map(|t| ModuleBuffer::of(t.as_bytes()))
        .collect()
}
