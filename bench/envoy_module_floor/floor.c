/* The floor of an Envoy HTTP filter dynamic module that decides on a request's whole body:
 * it holds the request until its body is whole, reads nothing, and lets it go on. What Envoy
 * spends on a module's hooks, measured beside toolgate's module (bench/envoy_module_bench.py,
 * which builds this with the C compiler and names Envoy's ABI version with -DABI_VERSION, read
 * from rust/envoy_module/src/abi.rs). Every hook Envoy resolves is here; the unused ones do
 * nothing.
 *
 * Built with -DCALLBACKS (the bench's `callbacks`), it also makes, with constant values, the
 * calls into Envoy that toolgate's module makes for an allowed tools/call: the request's
 * headers, the client's address, the active span and the body read; four filter state
 * entries; two headers set on the answer and its body read. What those calls
 * cost Envoy, apart from what the module computes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct { const char *ptr; size_t length; } buffer;
typedef struct { buffer key; buffer value; } header;
#define B(s) ((buffer){s, sizeof(s) - 1})
bool envoy_dynamic_module_callback_http_set_header(void *e, uint32_t kind, buffer k, buffer v);
bool envoy_dynamic_module_callback_http_set_filter_state_bytes(void *e, buffer k, buffer v);
size_t envoy_dynamic_module_callback_http_get_headers_size(void *e, uint32_t kind);
bool envoy_dynamic_module_callback_http_get_headers(void *e, uint32_t kind, header *h);
bool envoy_dynamic_module_callback_http_filter_get_attribute_string(void *e, uint32_t a,
                                                                    buffer *r);
void *envoy_dynamic_module_callback_http_get_active_span(void *e);
size_t envoy_dynamic_module_callback_http_get_body_chunks_size(void *e, uint32_t kind);
bool envoy_dynamic_module_callback_http_get_body_chunks(void *e, uint32_t kind, buffer *c);
enum { REQUEST_HEADER = 0, RESPONSE_HEADER = 2, SOURCE_ADDRESS = 24, MAX_PARTS = 64 };

#ifdef CALLBACKS
/* Envoy's body chunks of `kind`, read (as toolgate's module copies them). */
static void read_body(void *e, uint32_t kind) {
  buffer chunks[MAX_PARTS];
  size_t n = envoy_dynamic_module_callback_http_get_body_chunks_size(e, kind);
  if (n > 0 && n <= MAX_PARTS) envoy_dynamic_module_callback_http_get_body_chunks(e, kind, chunks);
}
#endif

static const char token; /* any non-null pointer: Envoy refuses a null config or filter */

const char *envoy_dynamic_module_on_program_init(void) { return ABI_VERSION; }
const void *envoy_dynamic_module_on_http_filter_config_new(void *e, buffer n, buffer c) {
  return &token;
}
void envoy_dynamic_module_on_http_filter_config_destroy(const void *c) {}
const void *envoy_dynamic_module_on_http_filter_new(const void *c, void *e) { return &token; }
void envoy_dynamic_module_on_http_filter_destroy(const void *f) {}

/* Held until the body is whole (headers: StopIteration; body: StopIterationAndBuffer). */
uint32_t envoy_dynamic_module_on_http_filter_request_headers(void *e, const void *f, bool end) {
  return end ? 0 : 1;
}
uint32_t envoy_dynamic_module_on_http_filter_request_body(void *e, const void *f, bool end) {
  if (!end) return 1;
#ifdef CALLBACKS
  header headers[MAX_PARTS];
  size_t n = envoy_dynamic_module_callback_http_get_headers_size(e, REQUEST_HEADER);
  if (n > 0 && n <= MAX_PARTS) envoy_dynamic_module_callback_http_get_headers(e, REQUEST_HEADER, headers);
  buffer address = {0, 0};
  envoy_dynamic_module_callback_http_filter_get_attribute_string(e, SOURCE_ADDRESS, &address);
  envoy_dynamic_module_callback_http_get_active_span(e);
  read_body(e, 1);
  read_body(e, 0);
  envoy_dynamic_module_callback_http_set_filter_state_bytes(e, B("callbacks.verdict"), B("ALLOW"));
  envoy_dynamic_module_callback_http_set_filter_state_bytes(e, B("callbacks.code"), B("ALLOWED"));
  envoy_dynamic_module_callback_http_set_filter_state_bytes(e, B("callbacks.rule"),
                                                            B("/tools/run_command"));
  envoy_dynamic_module_callback_http_set_filter_state_bytes(e, B("callbacks.revision"),
                                                            B("0123abcd"));
#endif
  return 0;
}
uint32_t envoy_dynamic_module_on_http_filter_request_trailers(void *e, const void *f) { return 0; }
uint32_t envoy_dynamic_module_on_http_filter_response_headers(void *e, const void *f, bool end) {
#ifdef CALLBACKS
  envoy_dynamic_module_callback_http_set_header(e, RESPONSE_HEADER, B("x-callbacks-code"),
                                                B("ALLOWED"));
  envoy_dynamic_module_callback_http_set_header(e, RESPONSE_HEADER, B("x-callbacks-rule"),
                                                B("/tools/run_command"));
#endif
  return 0;
}
uint32_t envoy_dynamic_module_on_http_filter_response_body(void *e, const void *f, bool end) {
#ifdef CALLBACKS
  read_body(e, 2);
#endif
  return 0;
}
uint32_t envoy_dynamic_module_on_http_filter_response_trailers(void *e, const void *f) { return 0; }
void envoy_dynamic_module_on_http_filter_stream_complete(void *e, const void *f) {}
void envoy_dynamic_module_on_http_filter_scheduled(void *e, const void *f, uint64_t id) {}
void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    void *e, const void *f) {}
void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    void *e, const void *f) {}
void envoy_dynamic_module_on_http_filter_http_callout_done(void *e, const void *f, uint64_t id,
                                                           uint32_t r, const void *h, size_t n,
                                                           const void *b, size_t m) {}
void envoy_dynamic_module_on_http_filter_http_stream_headers(void *e, const void *f, uint64_t id,
                                                             const void *h, size_t n, bool end) {}
void envoy_dynamic_module_on_http_filter_http_stream_data(void *e, const void *f, uint64_t id,
                                                          const void *b, size_t n, bool end) {}
void envoy_dynamic_module_on_http_filter_http_stream_trailers(void *e, const void *f, uint64_t id,
                                                              const void *h, size_t n) {}
void envoy_dynamic_module_on_http_filter_http_stream_complete(void *e, const void *f,
                                                              uint64_t id) {}
void envoy_dynamic_module_on_http_filter_http_stream_reset(void *e, const void *f, uint64_t id,
                                                           uint32_t reason) {}
