/* The floor of an Envoy HTTP filter dynamic module that decides on a request's whole body:
 * it holds the request until its body is whole, reads nothing, and lets it go on. What Envoy
 * spends on a module's hooks, measured beside toolgate's module (bench/envoy_module_bench.py,
 * which builds this with the C compiler and names Envoy's ABI version with -DABI_VERSION, read
 * from rust/envoy_module/src/abi.rs). Every hook Envoy resolves is here; the unused ones do
 * nothing. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct { const char *ptr; size_t length; } buffer;

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
  return end ? 0 : 1;
}
uint32_t envoy_dynamic_module_on_http_filter_request_trailers(void *e, const void *f) { return 0; }
uint32_t envoy_dynamic_module_on_http_filter_response_headers(void *e, const void *f, bool end) {
  return 0;
}
uint32_t envoy_dynamic_module_on_http_filter_response_body(void *e, const void *f, bool end) {
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
