/*
 * openloop: drive a unary gRPC method at a fixed arrival rate (open loop) and report latency
 * percentiles measured from each request's intended send time, so a slow server cannot slow
 * the generator down and hide its own queueing (no coordinated omission).
 *
 * Request i is scheduled at t0 + i/rate, whatever is still outstanding. A timerfd (absolute,
 * CLOCK_MONOTONIC, ns) wakes the loop at the next intended time; every request that is due is
 * then sent, and each one's latency counts from its own intended time. Requests go over
 * -conns HTTP/2 connections (h2c, prior knowledge), so the kernel can spread them over
 * SO_REUSEPORT workers: with -pick rr in turn; with -pick least (the default) on the
 * connection with the fewest requests outstanding, taking them in turn among equals, so a
 * connection whose server process is busier gets fewer (the kernel's split of connections
 * over workers is rarely even). Either way the send times are fixed in advance. The request
 * is the pre-encoded message from -body, framed once (a 0 byte, a 4-byte big-endian length).
 * Bounded: rate x duration requests, each cancelled (RST_STREAM) -timeout seconds after its
 * intended send time, which is also sent as grpc-timeout.
 *
 * One thread, epoll and nghttp2, like h2load: a grpc-go client measured 200-440 us of CPU
 * per request on the 2-vCPU VM this was written for (goroutine hand-offs and the runtime's
 * sysmon thread waking it), taking 0.4 of the 2 cores at 1-2k requests/s from the server it
 * measures; this loop costs a fraction of that (see bench/RESULTS.md).
 *
 *   openloop -target 127.0.0.1:50051 -method /toolgate.v1.Decider/Decide \
 *            -body request.bin -rate 1000 -duration 5 -conns 16
 *
 * Prints one JSON object: percentiles (us), errors by gRPC code, the achieved rate, the
 * scheduler's lag (actual - intended send time) and the generator's own CPU time.
 *
 * -http drives a plain HTTP/2 endpoint instead (a proxy's listener, h2c): each request POSTs
 * its body unframed to -method as the :path, with a content-length and every -header
 * 'name: value'. -body may be given several times: request i sends body i mod k, so a mix
 * with weights is the files repeated (the warm-up calls send body 0). Each request is then
 * tallied by its body, the value of the response header -tally-header (or "-"), its HTTP
 * status and how it ended (ok, timeout, reset), so a caller can check every answer against a
 * model; errors are by HTTP status (a 2xx answer is ok), "timeout" and "reset".
 *
 *   openloop -http -target 127.0.0.1:10000 -method /mcp -header 'content-type: application/json' \
 *            -body allowed.json -body allowed.json -body denied.json -tally-header x-toolgate-code
 *
 * Build: cc -O2 -Wall -Wextra -o openloop openloop.c -lnghttp2   (Debian: libnghttp2-dev)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define PREFIX_MAX 16
#define MAX_BODIES 256
#define MAX_HEADERS 32
#define MAX_VALUES 64 /* distinct values of -tally-header; the rest tallied as "?" */
#define VALUE_MAX 48

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "openloop: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- per request state ---------------------------------------------------------------- */

enum { ST_IDLE, ST_SENT, ST_DONE };

typedef struct {
    int64_t intended; /* ns, CLOCK_MONOTONIC */
    int64_t lat;      /* ns from intended to the stream's close */
    int64_t lag;      /* ns from intended to submission */
    int32_t stream_id;
    int16_t conn;
    int8_t state;
    int8_t grpc_status; /* -1: none seen */
    int16_t http_status;
    uint8_t seen;    /* response message bytes compared with the prefix so far */
    uint8_t bad;     /* the answer did not start with the prefix */
    uint8_t timeout; /* cancelled by us at its deadline */
    uint8_t reset;   /* closed with an HTTP/2 error code */
    uint16_t body;   /* which -body it sends */
    uint8_t value;   /* -tally-header's value: an index into values, 0 "-" (absent) */
} req_t;

typedef struct {
    int fd;
    nghttp2_session *session;
    int outstanding;
    int sent;
    int want_write;
    uint8_t *wbuf; /* bytes nghttp2 produced that the socket did not take yet */
    size_t wlen, wcap;
} conn_t;

static req_t *reqs;
static size_t nreq, nwarm;
static conn_t conns[MAX_CONNS];
static int nconns;
static int epfd;
static int http_mode;
static struct {
    uint8_t *data; /* what is sent: framed for gRPC, as read with -http */
    size_t len;
    char length[24]; /* content-length (-http) */
} bodies[MAX_BODIES];
static size_t nbodies;
static nghttp2_nv extra[MAX_HEADERS];
static size_t nextra;
static const char *tally_header = "";
static char values[MAX_VALUES][VALUE_MAX + 1] = {"-", "?"};
static size_t nvalues = 2;
static uint8_t prefix[PREFIX_MAX];
static size_t prefix_len;
static char path[512], authority[256];
static int64_t timeout_ns;
static size_t done_count;

/* --- nghttp2 callbacks ----------------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) {
    (void)ud;
    size_t *off = (size_t *)src->ptr;
    const req_t *r = nghttp2_session_get_stream_user_data(s, sid);
    const uint8_t *frame = bodies[r->body].data;
    size_t frame_len = bodies[r->body].len;
    size_t n = frame_len - *off < len ? frame_len - *off : len;
    memcpy(buf, frame + *off, n);
    *off += n;
    if (*off == frame_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static req_t *req_of(nghttp2_session *s, int32_t sid) {
    void *p = nghttp2_session_get_stream_user_data(s, sid);
    return p ? (req_t *)p : NULL;
}

/* The index of a -tally-header value in values, added if new; "?" once the table is full.
 * Bytes that JSON or a reader would trip on are kept as "_", so the table prints as it is. */
static uint8_t value_index(const uint8_t *value, size_t len) {
    char v[VALUE_MAX + 1];
    size_t n = len < VALUE_MAX ? len : VALUE_MAX;
    for (size_t k = 0; k < n; k++) {
        uint8_t c = value[k];
        v[k] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '_';
    }
    v[n] = 0;
    for (size_t k = 2; k < nvalues; k++)
        if (!strcmp(values[k], v)) return (uint8_t)k;
    if (nvalues == MAX_VALUES) return 1;
    memcpy(values[nvalues], v, n + 1);
    return (uint8_t)nvalues++;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
    (void)flags, (void)ud;
    req_t *r = req_of(s, f->hd.stream_id);
    if (!r) return 0;
    char v[16];
    size_t n = valuelen < sizeof v - 1 ? valuelen : sizeof v - 1;
    memcpy(v, value, n);
    v[n] = 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) r->http_status = (int16_t)atoi(v);
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) r->grpc_status = (int8_t)atoi(v);
    if (*tally_header && namelen == strlen(tally_header) &&
        memcmp(name, tally_header, namelen) == 0)
        r->value = value_index(value, valuelen);
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                   size_t len, void *ud) {
    (void)flags, (void)ud;
    req_t *r = req_of(s, sid);
    if (!r) return 0;
    /* The gRPC frame: 5 header bytes, then the message, whose first bytes must match (with
     * -http, the body's first bytes). */
    size_t skip = http_mode ? 0 : 5;
    for (size_t k = 0; k < len && r->seen < skip + prefix_len; k++, r->seen++) {
        if (r->seen >= skip && data[k] != prefix[r->seen - skip]) r->bad = 1;
    }
    return 0;
}

static int on_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *ud) {
    (void)ud;
    req_t *r = req_of(s, sid);
    if (!r || r->state == ST_DONE) return 0;
    r->lat = now_ns() - r->intended;
    r->state = ST_DONE;
    if (error_code) r->reset = 1;
    if (r->seen < (http_mode ? 0 : 5) + prefix_len) r->bad = 1;
    conns[r->conn].outstanding--;
    done_count++;
    return 0;
}

/* --- I/O ------------------------------------------------------------------------------- */

static void set_events(conn_t *c) {
    struct epoll_event ev = {.events = EPOLLIN | (c->want_write ? EPOLLOUT : 0)};
    ev.data.u32 = (uint32_t)(c - conns);
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

/* Write what nghttp2 has to send; keep the rest for EPOLLOUT. */
static void flush(conn_t *c) {
    for (;;) {
        if (c->wlen == 0) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->session, &data);
            if (n < 0) die("nghttp2_session_mem_send: %s", nghttp2_strerror((int)n));
            if (n == 0) break;
            if ((size_t)n > c->wcap) {
                c->wcap = (size_t)n * 2;
                c->wbuf = realloc(c->wbuf, c->wcap);
                if (!c->wbuf) die("out of memory");
            }
            memcpy(c->wbuf, data, (size_t)n);
            c->wlen = (size_t)n;
        }
        ssize_t w = write(c->fd, c->wbuf, c->wlen);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            die("write: %s", strerror(errno));
        }
        memmove(c->wbuf, c->wbuf + w, c->wlen - (size_t)w);
        c->wlen -= (size_t)w;
        if (c->wlen) break;
    }
    int want = c->wlen > 0;
    if (want != c->want_write) {
        c->want_write = want;
        set_events(c);
    }
}

static void on_readable(conn_t *c) {
    uint8_t buf[65536];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            die("read: %s", strerror(errno));
        }
        if (n == 0) die("connection %d closed by the server", (int)(c - conns));
        ssize_t used = nghttp2_session_mem_recv(c->session, buf, (size_t)n);
        if (used < 0) die("nghttp2_session_mem_recv: %s", nghttp2_strerror((int)used));
        if ((size_t)n < sizeof buf) break;
    }
    flush(c);
}

static void connect_one(conn_t *c, const char *host, int port) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("bad IPv4 address %s", host);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect %s:%d: %s", host, port, strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);

    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    if (nghttp2_session_client_new(&c->session, cb, NULL)) die("nghttp2_session_client_new");
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100000},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u32 = (uint32_t)(c - conns);
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    flush(c);
}

static size_t *body_offsets;

static void submit(size_t i, int ci, int64_t now) {
    req_t *r = &reqs[i];
    conn_t *c = &conns[ci];
    char tmo[32];
    int64_t left_ms = (r->intended + timeout_ns - now) / 1000000;
    snprintf(tmo, sizeof tmo, "%lldm", (long long)(left_ms > 1 ? left_ms : 1));
    r->body = (uint16_t)(i < nreq ? i % nbodies : 0);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[7 + MAX_HEADERS] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", path),
        NV(":authority", authority),
    };
    size_t nh = 4;
    if (http_mode) {
        hdrs[nh++] = (nghttp2_nv)NV("content-length", bodies[r->body].length);
    } else {
        hdrs[nh++] = (nghttp2_nv)NV("content-type", "application/grpc");
        hdrs[nh++] = (nghttp2_nv)NV("te", "trailers");
        hdrs[nh++] = (nghttp2_nv)NV("grpc-timeout", tmo);
    }
#undef NV
    for (size_t k = 0; k < nextra; k++) hdrs[nh++] = extra[k];
    body_offsets[i] = 0;
    nghttp2_data_provider prd = {.source.ptr = &body_offsets[i], .read_callback = read_body};
    int32_t sid = nghttp2_submit_request(c->session, NULL, hdrs, nh, &prd, r);
    if (sid < 0) die("nghttp2_submit_request: %s", nghttp2_strerror(sid));
    r->stream_id = sid;
    r->conn = (int16_t)ci;
    r->state = ST_SENT;
    r->grpc_status = -1;
    r->lag = now - r->intended;
    c->outstanding++;
    c->sent++;
}

static void cancel_overdue(size_t from, size_t to, int64_t now, size_t *oldest) {
    /* Requests are due in order: skip the finished ones at the front, cancel the overdue. */
    while (*oldest < to && reqs[*oldest].state == ST_DONE) (*oldest)++;
    for (size_t i = *oldest > from ? *oldest : from; i < to; i++) {
        req_t *r = &reqs[i];
        if (r->intended + timeout_ns > now) break;
        if (r->state == ST_SENT) {
            r->timeout = 1;
            nghttp2_submit_rst_stream(conns[r->conn].session, NGHTTP2_FLAG_NONE, r->stream_id,
                                      NGHTTP2_CANCEL);
            on_close(conns[r->conn].session, r->stream_id, NGHTTP2_CANCEL, NULL);
        }
    }
}

static void poll_once(int timeout_ms, int tfd, int *timer_fired) {
    struct epoll_event evs[64];
    int n = epoll_wait(epfd, evs, 64, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int k = 0; k < n; k++) {
        if (evs[k].data.u32 == UINT32_MAX) {
            uint64_t exp;
            if (read(tfd, &exp, sizeof exp) < 0 && errno != EAGAIN) die("timerfd read");
            *timer_fired = 1;
            continue;
        }
        conn_t *c = &conns[evs[k].data.u32];
        if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
        if (evs[k].events & EPOLLOUT) flush(c);
    }
}

/* --- statistics ------------------------------------------------------------------------ */

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void print_percentiles(const char *name, int64_t *v, size_t n, int last) {
    qsort(v, n, sizeof *v, cmp64);
    static const struct { const char *name; double q; } qs[] = {
        {"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p99.9", 0.999}, {"p99.99", 0.9999}};
    printf(" \"%s\": {", name);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)v[i];
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        /* nearest rank */
        size_t rank = (size_t)(qs[k].q * (double)n + 0.999999999);
        size_t idx = rank ? rank - 1 : 0;
        if (idx >= n) idx = n - 1;
        printf("\"%s\": %.3f, ", qs[k].name, n ? (double)v[idx] / 1e3 : 0.0);
    }
    printf("\"mean\": %.3f, \"max\": %.3f}%s\n", n ? sum / (double)n / 1e3 : 0.0,
           n ? (double)v[n - 1] / 1e3 : 0.0, last ? "" : ",");
}

static const char *code_name(int c) {
    static const char *names[] = {"OK", "Canceled", "Unknown", "InvalidArgument",
                                  "DeadlineExceeded", "NotFound", "AlreadyExists",
                                  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
                                  "Aborted", "OutOfRange", "Unimplemented", "Internal",
                                  "Unavailable", "DataLoss", "Unauthenticated"};
    return c >= 0 && c <= 16 ? names[c] : "Unknown";
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void usage(void) {
    die("usage: openloop -body FILE [-body FILE ...] [-target 127.0.0.1:50051] "
        "[-method /pkg.Svc/M] [-rate R] [-duration S] [-conns C] [-timeout S] [-warmup N] "
        "[-expect-prefix HEX] [-pick least|rr] [-max-requests N] "
        "[-http [-header 'NAME: VALUE' ...] [-tally-header NAME]]");
}

/* A -body file whole, framed for gRPC (a 0 byte, a 4-byte big-endian length) or, with -http,
 * as it is. */
static void read_body_file(const char *file) {
    if (nbodies == MAX_BODIES) die("-body: at most %d files", MAX_BODIES);
    FILE *f = fopen(file, "rb");
    if (!f) die("%s: %s", file, strerror(errno));
    size_t skip = http_mode ? 0 : 5, cap = 1 << 16, mlen = 0, n;
    uint8_t *data = malloc(skip + cap);
    if (!data) die("out of memory");
    while ((n = fread(data + skip + mlen, 1, cap - mlen, f)) > 0) {
        mlen += n;
        if (mlen == cap && !(data = realloc(data, skip + (cap *= 2)))) die("out of memory");
    }
    if (ferror(f)) die("%s: read error", file);
    fclose(f);
    if (!http_mode) {
        data[0] = 0;
        data[1] = (uint8_t)(mlen >> 24), data[2] = (uint8_t)(mlen >> 16);
        data[3] = (uint8_t)(mlen >> 8), data[4] = (uint8_t)mlen;
    }
    bodies[nbodies].data = data;
    bodies[nbodies].len = skip + mlen;
    snprintf(bodies[nbodies].length, sizeof bodies[nbodies].length, "%zu", mlen);
    nbodies++;
}

/* 'name: value' into an HTTP/2 header (the name lower case, as HTTP/2 requires). */
static void add_header(const char *spec) {
    if (nextra == MAX_HEADERS) die("-header: at most %d", MAX_HEADERS);
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec) die("-header: 'NAME: VALUE'");
    size_t nlen = (size_t)(colon - spec);
    char *name = malloc(nlen + 1);
    if (!name) die("out of memory");
    for (size_t k = 0; k < nlen; k++)
        name[k] = (char)(spec[k] >= 'A' && spec[k] <= 'Z' ? spec[k] + 32 : spec[k]);
    name[nlen] = 0;
    const char *value = colon + 1;
    while (*value == ' ') value++;
    extra[nextra++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, strlen(value),
                                   NGHTTP2_NV_FLAG_NONE};
}

static int cmpu64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

enum { END_OK, END_TIMEOUT, END_RESET };
static const char *end_names[] = {"ok", "timeout", "reset"};

static int end_of(const req_t *r) {
    if (r->timeout) return END_TIMEOUT;
    if (r->reset || r->http_status <= 0) return END_RESET;
    return END_OK;
}

/* -http: how many requests of [from, to) ended each way, by (body, -tally-header's value,
 * HTTP status, end), as a JSON array. */
static void print_tally(const char *name, size_t from, size_t to, int last) {
    size_t n = to - from;
    uint64_t *keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys) die("out of memory");
    for (size_t i = from; i < to; i++) {
        const req_t *r = &reqs[i];
        int status = r->http_status > 0 ? r->http_status : 0;
        keys[i - from] = (uint64_t)r->body << 32 | (uint64_t)r->value << 24 |
                         (uint64_t)end_of(r) << 16 | (uint64_t)status;
    }
    qsort(keys, n, sizeof *keys, cmpu64);
    printf(" \"%s\": [", name);
    for (size_t i = 0, count; i < n; i += count) {
        for (count = 1; i + count < n && keys[i + count] == keys[i]; count++) {
        }
        uint64_t k = keys[i];
        printf("%s\n  {\"body\": %u, \"value\": \"%s\", \"status\": %u, \"end\": \"%s\", "
               "\"count\": %zu}",
               i ? "," : "", (unsigned)(k >> 32), values[(k >> 24) & 0xff],
               (unsigned)(k & 0xffff), end_names[(k >> 16) & 0xff], count);
    }
    printf("%s]%s\n", n ? "\n " : "", last ? "" : ",");
    free(keys);
}

int main(int argc, char **argv) {
    const char *target = "127.0.0.1:50051", *method = "/toolgate.v1.Decider/Decide";
    const char *body_files[MAX_BODIES], *expect = "", *pick = "least";
    size_t nbody_files = 0;
    double rate = 1000, duration = 5, timeout_s = 1.0;
    int warmup = 20;
    long max_requests = 2000000;
    nconns = 16;
    for (int a = 1; a < argc; a++) {
        const char *k = argv[a];
        if (!strcmp(k, "-http")) {
            http_mode = 1;
            continue;
        }
        if (a + 1 >= argc) usage();
        const char *v = argv[++a];
        if (!strcmp(k, "-target")) target = v;
        else if (!strcmp(k, "-method")) method = v;
        else if (!strcmp(k, "-body")) {
            if (nbody_files == MAX_BODIES) die("-body: at most %d files", MAX_BODIES);
            body_files[nbody_files++] = v;
        } else if (!strcmp(k, "-rate")) rate = atof(v);
        else if (!strcmp(k, "-duration")) duration = atof(v);
        else if (!strcmp(k, "-conns")) nconns = atoi(v);
        else if (!strcmp(k, "-timeout")) timeout_s = atof(v);
        else if (!strcmp(k, "-warmup")) warmup = atoi(v);
        else if (!strcmp(k, "-expect-prefix")) expect = v;
        else if (!strcmp(k, "-pick")) pick = v;
        else if (!strcmp(k, "-max-requests")) max_requests = atol(v);
        else if (!strcmp(k, "-header")) add_header(v);
        else if (!strcmp(k, "-tally-header")) tally_header = v;
        else usage();
    }
    int least = !strcmp(pick, "least");
    if (!least && strcmp(pick, "rr")) die("-pick: least or rr");
    if (!nbody_files || rate <= 0 || duration <= 0 || nconns < 1 || nconns > MAX_CONNS ||
        timeout_s <= 0 || warmup < 0)
        usage();
    if (*tally_header && !http_mode) die("-tally-header: with -http only");
    nreq = (size_t)(rate * duration);
    if (nreq < 1 || (long)nreq > max_requests)
        die("%zu requests: out of bounds (1 to -max-requests %ld)", nreq, max_requests);
    timeout_ns = (int64_t)(timeout_s * 1e9);

    /* The requests: each body read and framed once. */
    for (size_t k = 0; k < nbody_files; k++) read_body_file(body_files[k]);
    prefix_len = strlen(expect) / 2;
    if (prefix_len > PREFIX_MAX) die("-expect-prefix: at most %d bytes", PREFIX_MAX);
    for (size_t k = 0; k < prefix_len; k++) {
        unsigned x;
        if (sscanf(expect + 2 * k, "%2x", &x) != 1) die("-expect-prefix: not hex");
        prefix[k] = (uint8_t)x;
    }
    snprintf(path, sizeof path, "%s", method);
    snprintf(authority, sizeof authority, "%s", target);
    char host[64];
    const char *colon = strrchr(target, ':');
    if (!colon || (size_t)(colon - target) >= sizeof host) die("-target: HOST:PORT");
    memcpy(host, target, (size_t)(colon - target));
    host[colon - target] = 0;
    int port = atoi(colon + 1);

    nwarm = (size_t)warmup * (size_t)nconns;
    reqs = calloc(nreq + nwarm, sizeof *reqs);
    body_offsets = calloc(nreq + nwarm, sizeof *body_offsets);
    if (!reqs || !body_offsets) die("out of memory");
    epfd = epoll_create1(0);
    for (int c = 0; c < nconns; c++) connect_one(&conns[c], host, port);

    /* Warm-up: each connection, one call at a time (not measured; body 0). */
    int tf = 0;
    for (int c = 0; c < nconns; c++) {
        for (int w = 0; w < warmup; w++) {
            size_t i = nreq + (size_t)c * (size_t)warmup + (size_t)w;
            int64_t t = now_ns();
            reqs[i].intended = t;
            submit(i, c, t);
            flush(&conns[c]);
            while (reqs[i].state != ST_DONE) {
                poll_once(10, -1, &tf);
                if (now_ns() - t > 10 * (int64_t)1000000000) die("warm-up call timed out");
            }
            if (http_mode ? reqs[i].http_status / 100 != 2 || reqs[i].reset
                          : reqs[i].http_status != 200 || reqs[i].grpc_status != 0 ||
                                reqs[i].reset)
                die("warm-up call failed: HTTP %d, grpc-status %d", reqs[i].http_status,
                    reqs[i].grpc_status);
            conns[c].sent--;
        }
    }
    done_count = 0;
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);

    double interval = 1e9 / rate;
    double cpu0 = cpu_seconds();
    int64_t t0 = now_ns() + 20000000;
    for (size_t i = 0; i < nreq; i++) reqs[i].intended = t0 + (int64_t)((double)i * interval);
    size_t next = 0, oldest = 0;
    int64_t end_by = reqs[nreq - 1].intended + timeout_ns + 1000000000;
    static char touched[MAX_CONNS];
    while (done_count < nreq) {
        int64_t now = now_ns();
        /* Send everything that is due. */
        if (next < nreq && reqs[next].intended <= now) {
            memset(touched, 0, (size_t)nconns);
            for (; next < nreq && reqs[next].intended <= now; next++) {
                int c = (int)(next % (size_t)nconns);
                if (least) {
                    for (int j = 1, best = conns[c].outstanding; j < nconns && best > 0; j++) {
                        int k = (int)((next + (size_t)j) % (size_t)nconns);
                        if (conns[k].outstanding < best) c = k, best = conns[k].outstanding;
                    }
                }
                submit(next, c, now);
                touched[c] = 1;
            }
            for (int c = 0; c < nconns; c++)
                if (touched[c]) flush(&conns[c]);
        }
        cancel_overdue(0, next, now, &oldest);
        for (int c = 0; c < nconns; c++)
            if (nghttp2_session_want_write(conns[c].session)) flush(&conns[c]);
        if (done_count >= nreq) break;
        if (now > end_by) die("the run did not finish in time");
        int wait_ms = 10;
        if (next < nreq) {
            struct itimerspec its = {0};
            its.it_value.tv_sec = reqs[next].intended / 1000000000;
            its.it_value.tv_nsec = reqs[next].intended % 1000000000;
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int fired = 0;
        poll_once(wait_ms, tfd, &fired);
    }
    int64_t end = now_ns();
    double cpu = cpu_seconds() - cpu0;

    /* --- results --- */
    size_t ok = 0, bad = 0, late = 0;
    size_t errs[18] = {0}; /* by gRPC code; [17]: no status (reset, not HTTP 200) */
    size_t http_errs[600] = {0}; /* -http: [0] timeouts, [1] resets, [status] not 2xx */
    int64_t last_ok = 0;
    int64_t *lat = malloc(nreq * sizeof *lat), *lag = malloc(nreq * sizeof *lag);
    for (size_t i = 0; i < nreq; i++) {
        req_t *r = &reqs[i];
        int code;
        if (http_mode) {
            int end = end_of(r), status = r->http_status;
            code = end == END_OK && status / 100 == 2 ? 0 : 1;
            if (code) http_errs[end == END_TIMEOUT ? 0 : end == END_RESET ? 1 : status % 600]++;
        } else if (r->timeout) code = 4; /* DeadlineExceeded */
        else if (r->http_status == 200 && r->grpc_status >= 0 && !r->reset) code = r->grpc_status;
        else code = 17;
        if (code == 0) {
            ok++;
            if (r->bad) bad++;
            if (r->intended + r->lat > last_ok) last_ok = r->intended + r->lat;
        } else if (!http_mode) {
            errs[code > 17 ? 17 : code]++;
        }
        if (r->lag > 1000000) late++;
        lat[i] = r->lat;
        lag[i] = r->lag;
    }
    printf("{\n \"rate\": %.3f,\n \"duration_s\": %.3f,\n \"conns\": %d,\n \"pick\": \"%s\",\n",
           rate, duration, nconns, pick);
    printf(" \"per_conn\": [");
    for (int c = 0; c < nconns; c++) printf("%s%d", c ? ", " : "", conns[c].sent);
    printf("],\n \"warmup\": %zu,\n \"sent\": %zu,\n \"ok\": %zu,\n \"errors\": {", nwarm, nreq,
           ok);
    int first = 1;
    for (int k = 1; k < 18; k++) {
        if (!errs[k]) continue;
        printf("%s\"%s\": %zu", first ? "" : ", ", k == 17 ? "NoStatus" : code_name(k), errs[k]);
        first = 0;
    }
    for (int k = 0; k < 600; k++) {
        if (!http_errs[k]) continue;
        if (k < 2) printf("%s\"%s\": %zu", first ? "" : ", ", end_names[k + 1], http_errs[k]);
        else printf("%s\"HTTP %d\": %zu", first ? "" : ", ", k, http_errs[k]);
        first = 0;
    }
    printf("},\n \"bad_answers\": %zu,\n \"achieved_rps\": %.3f,\n", bad,
           last_ok > t0 ? (double)ok / ((double)(last_ok - t0) / 1e9) : 0.0);
    print_percentiles("latency_us", lat, nreq, 0);
    print_percentiles("lag_us", lag, nreq, 0);
    if (http_mode) {
        print_tally("tally", 0, nreq, 0);
        print_tally("warmup_tally", nreq, nreq + nwarm, 0);
    }
    printf(" \"late_over_1ms\": %zu,\n \"cpu_s\": %.6f,\n \"wall_s\": %.6f\n}\n", late, cpu,
           (double)(end - t0) / 1e9);
    for (int c = 0; c < nconns; c++) {
        nghttp2_session_del(conns[c].session);
        close(conns[c].fd);
    }
    return 0;
}
