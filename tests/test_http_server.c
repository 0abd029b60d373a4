/* The HTTP server, from the outside. Each test runs a tn_loop with a
 * tn_http_server (port 0) on a thread of its own and plays the client on the
 * test thread with blocking sockets: raw bytes out, raw responses in, parsed
 * here by a small independent reader (status, fields, Content-Length,
 * chunked or close-delimited body). Every socket has SO_RCVTIMEO/SO_SNDTIMEO,
 * so a server that fails to answer fails the test instead of hanging it.
 * Nothing asserts timings: sleeps only give a wrong server the chance to do
 * the wrong thing (a 100 sent to HTTP/1.0, a response out of order). State
 * the loop thread shares with the test thread goes through __atomic builtins
 * or through on_loop() (a call run on the loop thread, waited for). */
#include "../tornado.h"
#include "tn_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http_util.h"

/* ------------------------------------------------------------------ */
/* Handlers                                                            */
/* ------------------------------------------------------------------ */

static void h_hello(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_respond(req, 200, NULL, "Hello, world!", 13);
}

static void h_echo(tn_http_request *req, void *arg) {
    size_t len;
    const char *body = tn_http_body(req, &len);
    char *copy = (char *)malloc(len ? len : 1);
    (void)arg;
    if (!copy) return; /* 500 */
    /* The request's body goes when the handler returns, before the answer
     * is written: a copy, given by reference (a copy of more than
     * TN_HTTP_WRITE_HIGH into the output is refused). */
    memcpy(copy, body, len);
    tn_http_respond_ref(req, 200, "application/octet-stream", copy, len, free, copy);
}

static void h_status(tn_http_request *req, void *arg) {
    const char *code = tn_http_param(req, "code");
    (void)arg;
    /* a body the server must not send for 204/304 */
    tn_http_respond(req, atoi(code ? code : "500"), NULL, "must not be sent", 16);
}

static void h_param(tn_http_request *req, void *arg) {
    const char *v = tn_http_param(req, (const char *)arg);
    if (!v) v = "(null)";
    tn_http_respond(req, 200, NULL, v, strlen(v));
}

static void h_query(tn_http_request *req, void *arg) {
    char out[512];
    const char *a = tn_http_query(req, "name"), *b = tn_http_query(req, "x"), *z = tn_http_query(req, "zz");
    int n = snprintf(out, sizeof out, "name=[%s] x=[%s] zz=[%s] path=[%s]", a ? a : "(null)",
                     b ? b : "(null)", z ? z : "(null)", tn_http_path(req));
    (void)arg;
    tn_http_respond(req, 200, NULL, out, (size_t)n);
}

/* The path (and a param) after a body: the path is left in the head when
 * it has no '%' and no query, so it must follow the head when reading a
 * large body moves the input buffer. */
static void h_where(tn_http_request *req, void *arg) {
    char out[512];
    size_t len;
    const char *x = tn_http_param(req, "x");
    int n;
    (void)arg;
    (void)tn_http_body(req, &len);
    n = snprintf(out, sizeof out, "path=[%s] x=[%s] body=%zu", tn_http_path(req), x ? x : "(null)", len);
    tn_http_respond(req, 200, NULL, out, (size_t)n);
}

static void h_silent(tn_http_request *req, void *arg) {
    (void)req;
    (void)arg;
}

/* Tries to smuggle a header through CR/LF; answers with the results. */
static void h_badheader(tn_http_request *req, void *arg) {
    char out[128];
    int a = tn_http_set_header(req, "X-Bad", "ok\r\nX-Injected: 1");
    int b = tn_http_set_header(req, "X-Bad", "ok\nX-Injected: 2");
    int c = tn_http_set_header(req, "X-Bad\r\nX-Injected", "3");
    int d = tn_http_set_header(req, "X-Good", "fine");
    int n = snprintf(out, sizeof out, "%d %d %d %d", a == TN_EINVAL, b == TN_EINVAL, c == TN_EINVAL, d == 0);
    (void)arg;
    tn_http_respond(req, 200, NULL, out, (size_t)n);
}

/* A handler's framing fields are refused; "Connection: close" closes. */
static void h_framing(tn_http_request *req, void *arg) {
    char out[64];
    int a = tn_http_set_header(req, "Content-Length", "1");
    int b = tn_http_set_header(req, "transfer-encoding", "chunked");
    int c = tn_http_set_header(req, "Connection", "keep-alive");
    int d = tn_http_set_header(req, "Connection", "close");
    int n = snprintf(out, sizeof out, "%d %d %d %d", a == TN_EINVAL, b == TN_EINVAL, c == TN_EINVAL, d == 0);
    (void)arg;
    tn_http_respond(req, 200, NULL, out, (size_t)n);
}

/* Streams a body of unknown length (chunked, or close-delimited for
 * HTTP/1.0) in three pieces. */
static void h_pieces(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_begin(req, 200, "text/plain", -1);
    tn_http_write(req, "one ", 4);
    tn_http_write(req, "two ", 4);
    tn_http_write(req, "three", 5);
    tn_http_finish(req);
}

/* n bytes of pattern_byte(), with a Content-Length, written at once. */
static unsigned char pattern_byte(size_t i);
static void h_blob(tn_http_request *req, void *arg) {
    const char *ns = tn_http_param(req, "n");
    size_t n = (size_t)strtoul(ns ? ns : "0", NULL, 10), i;
    char *b = (char *)malloc(n ? n : 1);
    (void)arg;
    if (!b) return; /* 500 */
    for (i = 0; i < n; i++) b[i] = (char)pattern_byte(i);
    /* By reference: a copy of more than TN_HTTP_WRITE_HIGH is refused. */
    tn_http_respond_ref(req, 200, "application/octet-stream", b, n, free, b);
}

/* --- coroutine handlers --- */
static int g_started;   /* a coroutine handler began */
static int g_co_err;    /* what its long await ended with */
static int g_co_closed; /* tn_http_closed() after it */
static int g_co_ended;
static int g_co_cancelled; /* its long await has ended */
static int g_co_path_ok;   /* the request was still intact after that */
static int g_hold;         /* keep the cancelled handler busy meanwhile */

/* Sleeps (route arg: ms), then answers "slept". */
static int co_sleepy(tn_co *co) {
    tn_http_co *h = (tn_http_co *)co;
    TN_BEGIN(co);
    SET(g_started, 1);
    TN_SLEEP(co, (uint64_t)(uintptr_t)h->arg);
    if (co->err) TN_FAIL(co, co->err);
    tn_http_respond(h->req, 200, NULL, "slept", 5);
    TN_END(co);
}

/* Awaits a long sleep and records how it ended. Then, while g_hold, it
 * keeps busy (yields: a cancelled coroutine's awaits end at once), as a
 * handler cleaning up would, and still reads its request, which must stay
 * valid until the handler ends. Last, as a careless handler would, it
 * answers anyway: writes to a gone client must be dropped. */
static int co_hang(tn_co *co) {
    tn_http_co *h = (tn_http_co *)co;
    TN_BEGIN(co);
    SET(g_started, 1);
    TN_SLEEP(co, 20000);
    SET(g_co_err, co->err);
    SET(g_co_cancelled, 1);
    while (GET(g_hold)) TN_YIELD(co);
    SET(g_co_closed, tn_http_closed(h->req));
    SET(g_co_path_ok, strcmp(tn_http_path(h->req), "/hang") == 0);
    tn_http_respond(h->req, 200, NULL, "late", 4);
    SET(g_co_ended, 1);
    TN_END(co);
}

/* Sleeps a little (route arg), then ends without answering: the server
 * answers 500 for it. */
static int co_silent(tn_co *co) {
    TN_BEGIN(co);
    SET(g_started, 1);
    TN_SLEEP(co, 300);
    SET(g_co_err, co->err);
    SET(g_co_ended, 1);
    TN_END(co);
}

/* Starts a body (route arg: its length, or -1 for chunked), writes part of
 * it, then fails. */
static int co_cutoff(tn_co *co) {
    tn_http_co *h = (tn_http_co *)co;
    TN_BEGIN(co);
    tn_http_begin(h->req, 200, "text/plain", (int64_t)(intptr_t)h->arg);
    tn_http_write(h->req, "partial", 7);
    TN_YIELD(co);
    TN_FAIL(co, TN_EINVAL);
    TN_END(co);
}

static int co_fail(tn_co *co) {
    TN_BEGIN(co);
    TN_YIELD(co);
    TN_FAIL(co, TN_EINVAL);
    TN_END(co);
}

/* 20 MB in 64 KB pieces, awaiting tn_http_drain after each. */
#define BIG_TOTAL (20u * 1024 * 1024)
#define BIG_PIECE (64u * 1024)
static unsigned g_written;
static unsigned char pattern_byte(size_t i) { return (unsigned char)((i * 131u) ^ (i >> 11)); }
struct big_frame {
    tn_http_co h;
    size_t off;
};
static int co_big(tn_co *co) {
    struct big_frame *f = (struct big_frame *)co;
    TN_BEGIN(co);
    tn_http_begin(f->h.req, 200, "application/octet-stream", -1);
    for (f->off = 0; f->off < BIG_TOTAL; f->off += BIG_PIECE) {
        char piece[BIG_PIECE];
        size_t i;
        for (i = 0; i < BIG_PIECE; i++) piece[i] = (char)pattern_byte(f->off + i);
        if (tn_http_write(f->h.req, piece, BIG_PIECE)) TN_FAIL(co, TN_ECLOSED);
        SET(g_written, (unsigned)(f->off + BIG_PIECE));
        TN_AWAIT(co, tn_http_drain(f->h.req));
        if (co->err) TN_FAIL(co, co->err);
    }
    tn_http_finish(f->h.req);
    TN_END(co);
}

/* A streamed request body: length and Adler-32 of what on_body saw. */
struct upload_frame {
    tn_http_co h;
    unsigned long long len;
    unsigned long a, b;
    unsigned long calls;
    size_t biggest; /* the largest piece on_body was given */
};
static int on_upload(tn_http_request *req, const char *data, size_t len, void *arg) {
    struct upload_frame *f = (struct upload_frame *)tn_http_frame(req);
    size_t i;
    (void)arg;
    if (!f) return TN_EINVAL;
    if (f->len == 0 && f->calls == 0) f->a = 1;
    f->calls++;
    if (len > f->biggest) f->biggest = len;
    for (i = 0; i < len; i++) {
        f->a = (f->a + (unsigned char)data[i]) % 65521;
        f->b = (f->b + f->a) % 65521;
    }
    f->len += len;
    return 0;
}
static int co_upload(tn_co *co) {
    struct upload_frame *f = (struct upload_frame *)co;
    char out[128];
    int n;
    TN_BEGIN(co);
    if (f->calls == 0) f->a = 1;
    n = snprintf(out, sizeof out, "len=%llu adler=%08lx", f->len, (f->b << 16) | f->a);
    tn_http_respond(f->h.req, 200, NULL, out, (size_t)n);
    TN_END(co);
}

static int co_upload_sizes(tn_co *co) {
    struct upload_frame *f = (struct upload_frame *)co;
    char out[128];
    int n;
    TN_BEGIN(co);
    n = snprintf(out, sizeof out, "len=%llu biggest=%zu", f->len, f->biggest);
    tn_http_respond(f->h.req, 200, NULL, out, (size_t)n);
    TN_END(co);
}

static unsigned long adler32(const unsigned char *p, size_t n) {
    unsigned long a = 1, b = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        a = (a + p[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (b << 16) | a;
}

static void std_routes(tn_http_server *srv) {
    tn_http_route_opts big = {0}, co = {0}, bigf = {0}, up = {0};
    big.max_body_bytes = 100000;
    co.frame_size = sizeof(tn_http_co);
    bigf.frame_size = sizeof(struct big_frame);
    up.frame_size = sizeof(struct upload_frame);
    up.on_body = on_upload;
    REQUIRE(tn_http_route(srv, "GET", "/hello", h_hello, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/echo", h_echo, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/big", h_echo, NULL, &big) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/where/{x}", h_where, NULL, &big) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/status/{code}", h_status, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/users/{id}", h_param, (void *)"id", NULL) == 0);
    REQUIRE(tn_http_route(srv, "DELETE", "/users/{id}", h_param, (void *)"id", NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/static/{path*}", h_param, (void *)"path", NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/q", h_query, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/silent", h_silent, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/badheader", h_badheader, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/framing", h_framing, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/pieces", h_pieces, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/blob/{n}", h_blob, NULL, NULL) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/silent-co", co_silent, NULL, &co) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/sleep100", co_sleepy, (void *)(uintptr_t)100, &co) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/sleep200", co_sleepy, (void *)(uintptr_t)200, &co) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/hang", co_hang, NULL, &co) == 0);
    {
        tn_http_route_opts cc = co;
        cc.cancel_on_close = 1;
        REQUIRE(tn_http_route_co(srv, "GET", "/hang-cancel", co_hang, NULL, &cc) == 0);
    }
    REQUIRE(tn_http_route_co(srv, "GET", "/fail", co_fail, NULL, &co) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/cutoff-chunked", co_cutoff, (void *)(intptr_t)-1, &co) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/cutoff-length", co_cutoff, (void *)(intptr_t)100, &co) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/big20", co_big, NULL, &bigf) == 0);
    REQUIRE(tn_http_route_co(srv, "POST", "/upload", co_upload, NULL, &up) == 0);
    REQUIRE(tn_http_route_co(srv, "POST", "/upload-sizes", co_upload_sizes, NULL, &up) == 0);
}

static server *start_std(void) { return server_start(NULL, std_routes); }

#define GET_HELLO "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"

/* ------------------------------------------------------------------ */
/* Connection management                                               */
/* ------------------------------------------------------------------ */

TEST(keep_alive_two_requests_one_connection) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.minor, 1);
    CHECK(body_is(&r, "Hello, world!"));
    CHECK(header_is(&r, "Content-Length", "13"));
    CHECK(resp_header(&r, "Connection") == NULL);
    CHECK(resp_header(&r, "Date") != NULL);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /users/7 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "7"));
    resp_free(&r);
    CHECK_EQ_INT(server_connections(s), 1);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

TEST(http10_closes_by_default) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /hello HTTP/1.0\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.minor, 0);
    CHECK(body_is(&r, "Hello, world!"));
    CHECK(resp_header(&r, "Connection") == NULL || header_is(&r, "Connection", "close"));
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(http10_keep_alive_when_asked) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Connection", "keep-alive"));
    CHECK(body_is(&r, "Hello, world!"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /users/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "2"));
    CHECK(header_is(&r, "Connection", "keep-alive"));
    resp_free(&r);
    /* and a streamed body of unknown length ends with the connection */
    REQUIRE(roundtrip(c, "GET /pieces HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(resp_header(&r, "Transfer-Encoding") == NULL);
    CHECK(body_is(&r, "one two three"));
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(connection_close_honoured) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Connection", "close"));
    CHECK(body_is(&r, "Hello, world!"));
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

/* Three requests in one write; the first goes to a coroutine that sleeps.
 * The answers must come back in request order. */
TEST(pipelining_keeps_order_behind_a_slow_coroutine) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(cli_sends(c, "GET /sleep100 HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /users/second HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /users/third HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "slept"));
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "second"));
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "third"));
    resp_free(&r);
    CHECK_EQ_INT(c->len, 0); /* nothing more */
    /* still usable */
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* Pipelined plain requests, with bodies, written one byte at a time
 * after a burst: framing survives every split. */
TEST(pipelining_with_bodies) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    int i;
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "2\r\nde\r\n1\r\nf\r\n0\r\n\r\n" GET_HELLO) == 0);
    for (i = 0; i < 3; i++) {
        REQUIRE(read_response(c, &r, 0) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(body_is(&r, i == 0 ? "abc" : i == 1 ? "def" : "Hello, world!"));
        resp_free(&r);
    }
    cli_close(c);
    server_stop(s);
}

TEST(head_same_length_no_body_connection_reusable) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    char get_len[32];
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    REQUIRE(resp_header(&r, "Content-Length") != NULL);
    snprintf(get_len, sizeof get_len, "%s", resp_header(&r, "Content-Length"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Content-Length", get_len));
    resp_free(&r);
    /* a body after the HEAD response would show up as garbage here */
    REQUIRE(roundtrip(c, "GET /users/after HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "after"));
    resp_free(&r);
    /* HEAD of a streamed (chunked) GET: no body, not even the last chunk */
    REQUIRE(roundtrip(c, "HEAD /pieces HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "Hello, world!"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(status_204_and_304_have_no_body) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 204);
    CHECK(resp_header(&r, "Content-Length") == NULL);
    CHECK(resp_header(&r, "Transfer-Encoding") == NULL);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /status/304 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    CHECK(resp_header(&r, "Transfer-Encoding") == NULL);
    resp_free(&r);
    /* had a body been sent, it would be read as this response */
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "Hello, world!"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Expect: 100-continue                                                */
/* ------------------------------------------------------------------ */

TEST(expect_continue_acceptable_body_gets_100_first) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                         "Expect: 100-continue\r\n\r\n") == 0);
    /* the body is not sent until the 100 is read */
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 100);
    CHECK(strncmp(r.head, "HTTP/1.1 100 Continue\r\n", 23) == 0);
    resp_free(&r);
    REQUIRE(cli_sends(c, "hello") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "hello"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(expect_continue_too_large_gets_413_without_100) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    o.max_body_bytes = 1000;
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                         "Expect: 100-continue\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(expect_continue_never_to_http10) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n") == 0);
    sleep_ms(50); /* room for a wrong 100 to arrive before the body */
    REQUIRE(cli_sends(c, "hello") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "hello"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Request bodies and framing errors                                   */
/* ------------------------------------------------------------------ */

TEST(chunked_request_body_with_extensions_and_trailers) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "5;name=value\r\nhello\r\n"
                         "6;a;b=\"q s\"\r\n world\r\n"
                         "0;last\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n",
                      &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "hello world"));
    resp_free(&r);
    /* the trailer was consumed: the connection carries the next request */
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "Hello, world!"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(content_length_and_transfer_encoding_is_400_and_close) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                      &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(header_is(&r, "Connection", "close"));
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* A coding we cannot decode is 501; a request whose last coding is not
 * chunked has no determinable length: 400 (RFC 9112 section 6.3). */
TEST(unknown_transfer_encoding_is_501) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                         "0\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 501);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(bad_version_is_505) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /hello HTTP/2.0\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 505);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(header_too_large_is_431) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    char req[2048];
    char filler[1001];
    memset(filler, 'a', 1000);
    filler[1000] = 0;
    o.max_head_bytes = 512;
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Filler: %s\r\n\r\n", filler);
    REQUIRE(roundtrip(c, req, &r) == 0);
    CHECK_EQ_INT(r.status, 431);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    /* a head under the limit is fine */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(target_too_long_is_414) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    size_t n = 9000;
    char *req = (char *)malloc(n + 64);
    REQUIRE(req != NULL);
    memcpy(req, "GET /", 5);
    memset(req + 5, 'x', n);
    strcpy(req + 5 + n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE(roundtrip(c, req, &r) == 0);
    CHECK_EQ_INT(r.status, 414);
    CHECK(cli_closed(c));
    resp_free(&r);
    free(req);
    cli_close(c);
    server_stop(s);
}

TEST(body_over_limit_is_413_and_route_limit_raises_it) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    char head[256];
    char *body = (char *)malloc(50000);
    REQUIRE(body != NULL);
    memset(body, 'b', 50000);
    o.max_body_bytes = 1000;
    s = server_start(&o, std_routes);
    /* over the server's limit: refused from the head, body unread */
    c = cli_open(s->port);
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", 2000);
    REQUIRE(cli_sends(c, head) == 0);
    (void)cli_send(c, body, 2000); /* a client that sends it anyway */
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    /* chunked over the limit: 413 as soon as the sizes pass it */
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "3e8\r\n") == 0);
    (void)cli_send(c, body, 1000);
    (void)cli_sends(c, "\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n");
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    cli_close(c);
    /* the same size on the route with a larger limit is accepted */
    c = cli_open(s->port);
    snprintf(head, sizeof head, "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", 50000);
    REQUIRE(cli_sends(c, head) == 0);
    REQUIRE(cli_send(c, body, 50000) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 50000);
    CHECK(r.body_len == 50000 && memcmp(r.body, body, 50000) == 0);
    resp_free(&r);
    /* and its connection goes on */
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    free(body);
    server_stop(s);
}

TEST(malformed_request_line_is_400_and_close) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /hello\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET  /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Timeouts and limits                                                 */
/* ------------------------------------------------------------------ */

TEST(header_timeout_slowloris_gets_408) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    o.header_timeout_ms = 200;
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "GET /hello HTTP/1.1\r\nHost: t\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 408);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

TEST(body_timeout_gets_408) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    o.body_timeout_ms = 200;
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 408);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

TEST(idle_keep_alive_connection_is_closed) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    o.idle_timeout_ms = 200;
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(resp_header(&r, "Connection") == NULL); /* kept alive... */
    resp_free(&r);
    CHECK(cli_closed(c)); /* ...until idle too long (no response: just close) */
    CHECK_EQ_INT(c->len, 0);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

TEST(max_connections_sheds_with_503) {
    tn_http_server_opts o = {0};
    server *s;
    client *a, *b, *c;
    response r;
    o.max_connections = 2;
    s = server_start(&o, std_routes);
    a = cli_open(s->port);
    b = cli_open(s->port);
    REQUIRE(roundtrip(a, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    REQUIRE(roundtrip(b, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    c = cli_open(s->port);
    REQUIRE(read_response(c, &r, 0) == 0); /* unasked: the server sheds it */
    CHECK_EQ_INT(r.status, 503);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    /* the first two still work */
    REQUIRE(roundtrip(a, "GET /users/a HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "a"));
    resp_free(&r);
    REQUIRE(roundtrip(b, "GET /users/b HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "b"));
    resp_free(&r);
    CHECK_EQ_INT(server_connections(s), 2);
    /* once one leaves, a new one is served */
    cli_close(a);
    CHECK_EQ_INT(wait_connections(s, 1), 1);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    cli_close(b);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Shutdown and disconnects                                            */
/* ------------------------------------------------------------------ */

static int g_shutdown_done = 0, g_shutdown_err = 1;
static void shutdown_done(tn_future *f, void *arg) {
    (void)arg;
    SET(g_shutdown_err, tn_future_error(f));
    SET(g_shutdown_done, 1);
    tn_future_release(f);
}
static void do_shutdown(server *s, void *arg) {
    tn_future *f = tn_http_server_shutdown(s->srv, *(unsigned *)arg);
    REQUIRE(f != NULL);
    tn_future_on_done(f, shutdown_done, NULL);
}

static int wait_flag(int *flag) {
    int i;
    for (i = 0; i < 500 && !GET(*flag); i++) sleep_ms(10);
    return GET(*flag);
}

TEST(graceful_shutdown_with_request_in_flight) {
    server *s = start_std();
    client *busy, *idle, *dl;
    response r;
    unsigned deadline = 5000;
    int fd;
    size_t i, bad = 0;
    idle = cli_open(s->port);
    REQUIRE(roundtrip(idle, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    /* a response still going out: 12 MB, more than the socket buffers hold,
     * and the client has read almost none of it */
    dl = cli_open2(s->port, 32768);
    REQUIRE(cli_sends(dl, "GET /blob/12000000 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(cli_fill(dl) > 0); /* it has begun */
    busy = cli_open(s->port);
    REQUIRE(cli_sends(busy, "GET /sleep200 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(wait_flag(&g_started));
    on_loop(s, do_shutdown, &deadline);
    /* new connections are refused */
    fd = tcp_connect(s->port, 0);
    CHECK(fd < 0);
    if (fd >= 0) close(fd);
    /* the idle keep-alive connection is closed */
    CHECK(cli_closed(idle));
    /* the request in flight completes, and then its connection closes */
    REQUIRE(read_response(busy, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "slept"));
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    CHECK(cli_closed(busy));
    /* the download is not cut: all of it, then the close */
    REQUIRE(read_response(dl, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 12000000);
    for (i = 0; i < r.body_len; i++)
        if ((unsigned char)r.body[i] != pattern_byte(i)) bad++;
    CHECK_EQ_INT(bad, 0);
    resp_free(&r);
    CHECK(cli_closed(dl));
    CHECK(wait_flag(&g_shutdown_done));
    CHECK_EQ_INT(GET(g_shutdown_err), 0);
    CHECK_EQ_INT(server_connections(s), 0);
    cli_close(idle);
    cli_close(busy);
    cli_close(dl);
    server_stop(s);
}

/* The shutdown deadline closes what is still running. */
TEST(shutdown_deadline_cancels_a_stuck_handler) {
    server *s = start_std();
    client *c = cli_open(s->port);
    unsigned deadline = 100;
    REQUIRE(cli_sends(c, "GET /hang HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(wait_flag(&g_started));
    on_loop(s, do_shutdown, &deadline);
    CHECK(cli_closed(c));
    CHECK(wait_flag(&g_shutdown_done));
    CHECK_EQ_INT(GET(g_shutdown_err), 0);
    CHECK(wait_flag(&g_co_ended));
    CHECK_EQ_INT(GET(g_co_err), TN_ECANCELLED);
    CHECK_EQ_INT(server_connections(s), 0);
    cli_close(c);
    server_stop(s);
}

/* The client leaves (a reset) while a coroutine handler awaits: the await
 * ends with TN_ECANCELLED, the request stays valid (closed) until the
 * handler ends, even while other requests come and go, and then the
 * connection goes. */
TEST(client_disconnect_cancels_coroutine_handler) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    SET(g_hold, 1);
    REQUIRE(cli_sends(c, "GET /hang HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(wait_flag(&g_started));
    cli_reset(c);
    cli_close(c);
    CHECK(wait_flag(&g_co_cancelled));
    CHECK_EQ_INT(GET(g_co_err), TN_ECANCELLED);
    /* other requests meanwhile (they would reuse a request object given
     * back too early) */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /users/zzzzzzzz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    SET(g_hold, 0);
    CHECK(wait_flag(&g_co_ended));
    CHECK_EQ_INT(GET(g_co_closed), 1);
    CHECK_EQ_INT(GET(g_co_path_ok), 1);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    /* the server goes on */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* A client that half-closes after sending its whole request (shutdown
 * SHUT_WR) still gets the answer from a coroutine route: only a request
 * not yet received whole is dropped at the client's EOF. */
TEST(half_close_after_a_whole_request_still_gets_the_answer) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(cli_sends(c, "GET /sleep100 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(shutdown(c->fd, SHUT_WR) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "slept"));
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    CHECK(cli_closed(c));
    cli_close(c);
    /* a plain route too, and a body sent whole before the half-close */
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc") == 0);
    REQUIRE(shutdown(c->fd, SHUT_WR) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "abc"));
    resp_free(&r);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

/* cancel_on_close: the client's EOF cancels the handler (Tornado's
 * on_connection_close: a query it awaits stops), as a reset does. */
TEST(cancel_on_close_route_is_cancelled_by_the_clients_eof) {
    server *s = start_std();
    client *c = cli_open(s->port);
    SET(g_started, 0);
    SET(g_co_ended, 0);
    SET(g_co_err, 0);
    SET(g_hold, 0);
    REQUIRE(cli_sends(c, "GET /hang-cancel HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CHECK(wait_flag(&g_started));
    REQUIRE(shutdown(c->fd, SHUT_WR) == 0);
    CHECK(wait_flag(&g_co_ended)); /* not after its 20 s sleep */
    CHECK_EQ_INT(GET(g_co_err), TN_ECANCELLED);
    CHECK(cli_closed(c)); /* nothing written to a gone client */
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Handlers that misbehave                                             */
/* ------------------------------------------------------------------ */

TEST(handler_that_does_not_respond_gets_500) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /silent HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 500);
    resp_free(&r);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0); /* framing intact */
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(coroutine_handler_that_fails_gets_500) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /fail HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 500);
    resp_free(&r);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* A coroutine that fails after its body began: the client must see a
 * cut-off body (no last chunk, or fewer bytes than announced) and a close,
 * never a complete-looking response. */
TEST(coroutine_failing_mid_body_cuts_the_response) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    CHECK_EQ_INT(roundtrip(c, "GET /cutoff-chunked HTTP/1.1\r\nHost: t\r\n\r\n", &r), -1);
    CHECK(r.chunked);
    CHECK(r.body && strcmp(r.body, "partial") == 0);
    resp_free(&r);
    cli_close(c);
    c = cli_open(s->port);
    CHECK_EQ_INT(roundtrip(c, "GET /cutoff-length HTTP/1.1\r\nHost: t\r\n\r\n", &r), -1);
    CHECK(header_is(&r, "Content-Length", "100"));
    resp_free(&r);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

TEST(set_header_rejects_cr_lf) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /badheader HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "1 1 1 1"));
    CHECK(strstr(r.head, "X-Injected") == NULL);
    CHECK(strstr(r.head, "X-Bad") == NULL);
    CHECK(header_is(&r, "X-Good", "fine"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Routing                                                             */
/* ------------------------------------------------------------------ */

TEST(routing_params_wildcard_404_405_501) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    const char *allow;
    REQUIRE(roundtrip(c, "GET /users/john%20doe HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "john doe"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/css/site%2Fmain.css HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "css/site/main.css"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/a/b/c?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "a/b/c"));
    resp_free(&r);
    /* {id} is one segment, never empty */
    REQUIRE(roundtrip(c, "GET /users/1/2 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /users/ HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    REQUIRE(roundtrip(c, "POST /users/1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 405);
    allow = resp_header(&r, "Allow");
    CHECK(allow != NULL);
    if (allow) {
        CHECK(strstr(allow, "GET") != NULL);
        CHECK(strstr(allow, "DELETE") != NULL);
        CHECK(strstr(allow, "HEAD") != NULL);
        CHECK(strstr(allow, "POST") == NULL);
    }
    resp_free(&r);
    /* HEAD is served by the GET route */
    REQUIRE(roundtrip(c, "HEAD /users/x HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Content-Length", "1"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "BREW /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 501);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(query_parameters_decoded) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /q?name=a%20b+c&x=%41%2b%3D&&empty= HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "name=[a b c] x=[A+=] zz=[(null)] path=[/q]"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /q HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "name=[(null)] x=[(null)] zz=[(null)] path=[/q]"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /q?zz&name=%zz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "name=[%zz] x=[(null)] zz=[] path=[/q]"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(path_survives_a_body_that_moves_the_input) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    size_t n = 90000; /* several times TN_BUF_SIZE: the input buffer grows, so it moves */
    char *body = (char *)malloc(n), head[160];
    static const char *const paths[] = {"/where/plain", "/where/a%2Fb", "/where/q?k=v", "http://t/where/abs"};
    static const char *const want[] = {"path=[/where/plain] x=[plain]", "path=[/where/a/b] x=[a/b]",
                                       "path=[/where/q] x=[q]", "path=[/where/abs] x=[abs]"};
    size_t i;
    char expect[128];
    REQUIRE(body != NULL);
    memset(body, 'b', n);
    for (i = 0; i < 8; i++) {
        /* Content-Length reserves the body's room before the path is
         * made; a chunked body grows the buffer after, in pieces. */
        if (i < 4) {
            snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", paths[i % 4], n);
        } else {
            snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n",
                     paths[i % 4], n);
        }
        REQUIRE(cli_sends(c, head) == 0);
        sleep_ms(20); /* the head alone first, so the body arrives into a buffer that must grow */
        REQUIRE(cli_send(c, body, n) == 0);
        if (i >= 4) REQUIRE(cli_sends(c, "\r\n0\r\n\r\n") == 0);
        REQUIRE(read_response(c, &r, 0) == 0);
        CHECK_EQ_INT(r.status, 200);
        snprintf(expect, sizeof expect, "%s body=%zu", want[i % 4], n);
        if (!body_is(&r, expect)) printf("    got [%.*s], want [%s]\n", (int)r.body_len, r.body, expect);
        CHECK(body_is(&r, expect));
        resp_free(&r);
    }
    free(body);
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Streaming                                                           */
/* ------------------------------------------------------------------ */

TEST(streaming_response_20mb_with_drain) {
    server *s = start_std();
    /* a small receive window, so the server's backpressure shows */
    client *c = cli_open2(s->port, 65536);
    response r;
    size_t i, bad = 0;
    int k;
    REQUIRE(cli_sends(c, "GET /big20 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    sleep_ms(300);
    /* Reading nothing, the client holds the server up: with drain working,
     * the handler cannot have written much more than the socket buffers,
     * the low watermark and a piece (not the whole 20 MB). */
    CHECK(GET(g_written) < BIG_TOTAL / 2);
    for (k = 0; k < 50; k++) { /* slowly at first */
        if (cli_fill_max(c, 4096) <= 0) break;
        sleep_ms(2);
    }
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.chunked);
    CHECK_EQ_INT(r.body_len, BIG_TOTAL);
    for (i = 0; i < r.body_len; i++)
        if ((unsigned char)r.body[i] != pattern_byte(i)) bad++;
    CHECK_EQ_INT(bad, 0);
    resp_free(&r);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* Writes body as chunks of varying sizes, some with extensions. */
static void send_chunked(client *c, const unsigned char *body, size_t n) {
    size_t off = 0, k = 0;
    char line[64];
    while (off < n) {
        size_t len = 1 + (k * 7919) % 9000;
        if (len > n - off) len = n - off;
        if (k % 3 == 0) snprintf(line, sizeof line, "%zx;k=%zu\r\n", len, k);
        else snprintf(line, sizeof line, "%zX\r\n", len);
        REQUIRE(cli_sends(c, line) == 0);
        REQUIRE(cli_send(c, (const char *)body + off, len) == 0);
        REQUIRE(cli_sends(c, "\r\n") == 0);
        off += len;
        k++;
    }
    REQUIRE(cli_sends(c, "0\r\nX-Done: 1\r\n\r\n") == 0);
}

/* A body that arrives faster than one buffer a turn is read in pieces
 * bigger than TN_BUF_SIZE (the input grows toward TN_BUF_BULK: a quarter
 * of the reads and polls), never bigger than TN_BUF_BULK. */
TEST(streamed_request_body_is_read_in_bulk_pieces) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    size_t n = 8u * 1024 * 1024, biggest = 0;
    unsigned long long len = 0;
    char *body = (char *)malloc(n), head[128];
    REQUIRE(body != NULL);
    memset(body, 'x', n);
    snprintf(head, sizeof head, "POST /upload-sizes HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    REQUIRE(cli_sends(c, head) == 0);
    REQUIRE(cli_send(c, body, n) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    REQUIRE(r.body && sscanf(r.body, "len=%llu biggest=%zu", &len, &biggest) == 2);
    CHECK(len == n);
    printf("    8 MiB body: largest piece %zu bytes\n", biggest);
    CHECK(biggest > TN_BUF_SIZE);
    CHECK(biggest <= TN_BUF_BULK);
    resp_free(&r);
    free(body);
    cli_close(c);
    server_stop(s);
}

TEST(streamed_request_body_5mb_chunked_in_order) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    size_t n = 5u * 1024 * 1024, i;
    unsigned char *body = (unsigned char *)malloc(n);
    char want[128];
    REQUIRE(body != NULL);
    for (i = 0; i < n; i++) body[i] = (unsigned char)((i * 2654435761u) >> 13);
    snprintf(want, sizeof want, "len=%zu adler=%08lx", n, adler32(body, n));
    REQUIRE(cli_sends(c, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
    send_chunked(c, body, n);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, want));
    if (!body_is(&r, want)) fprintf(stderr, "    got %s, want %s\n", r.body, want);
    resp_free(&r);
    /* the same with Content-Length (over the 1 MiB buffered limit: streamed
     * bodies are not buffered) */
    {
        char head[128];
        snprintf(head, sizeof head, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
        REQUIRE(cli_sends(c, head) == 0);
        REQUIRE(cli_send(c, (const char *)body, n) == 0);
        REQUIRE(read_response(c, &r, 0) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(body_is(&r, want));
        resp_free(&r);
    }
    /* and an empty one */
    REQUIRE(roundtrip(c, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "len=0 adler=00000001"));
    resp_free(&r);
    free(body);
    cli_close(c);
    server_stop(s);
}

TEST(one_byte_per_write_parses_the_same) {
    static const char req[] = "GET /q?name=a+b&x=%41 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\n";
    server *s = start_std();
    client *c = cli_open(s->port);
    response whole, split;
    size_t i;
    REQUIRE(roundtrip(c, req, &whole) == 0);
    for (i = 0; i < sizeof req - 1; i++) {
        REQUIRE(cli_send(c, req + i, 1) == 0);
        sleep_ms(1);
    }
    REQUIRE(read_response(c, &split, 0) == 0);
    CHECK_EQ_INT(whole.status, 200);
    CHECK_EQ_INT(split.status, 200);
    CHECK(body_is(&split, "name=[a b] x=[A] zz=[(null)] path=[/q]"));
    CHECK(whole.body_len == split.body_len && memcmp(whole.body, split.body, whole.body_len) == 0);
    resp_free(&whole);
    resp_free(&split);
    /* a body one byte per write too */
    {
        static const char post[] = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   "3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n";
        for (i = 0; i < sizeof post - 1; i++) {
            REQUIRE(cli_send(c, post + i, 1) == 0);
            if (i % 4 == 0) sleep_ms(1);
        }
        REQUIRE(read_response(c, &split, 0) == 0);
        CHECK_EQ_INT(split.status, 200);
        CHECK(body_is(&split, "abc"));
        resp_free(&split);
    }
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* More edges                                                          */
/* ------------------------------------------------------------------ */

/* Pipelined requests whose responses pass the write high-water mark: the
 * server stops reading them, and must pick them up again once its output
 * has drained, even when one flush drains it all at once. */
TEST(pipelined_large_responses_resume_after_backpressure) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    char reqs[4096];
    size_t o = 0, i, bad = 0;
    int k;
    for (k = 0; k < 12; k++)
        o += (size_t)snprintf(reqs + o, sizeof reqs - o, "GET /blob/100000 HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE(cli_send(c, reqs, o) == 0);
    for (k = 0; k < 12; k++) {
        REQUIRE(read_response(c, &r, 0) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_INT(r.body_len, 100000);
        for (i = 0; i < r.body_len; i++)
            if ((unsigned char)r.body[i] != pattern_byte(i)) bad++;
        resp_free(&r);
    }
    CHECK_EQ_INT(bad, 0);
    cli_close(c);
    server_stop(s);
}

/* Many small pipelined requests in one write, answered in order. */
TEST(pipelined_burst_of_small_requests) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    char *reqs = (char *)malloc(1000 * 64);
    size_t o = 0;
    int k, ok = 0;
    REQUIRE(reqs != NULL);
    for (k = 0; k < 1000; k++)
        o += (size_t)snprintf(reqs + o, 64, "GET /users/%d HTTP/1.1\r\nHost: t\r\n\r\n", k);
    REQUIRE(cli_send(c, reqs, o) == 0);
    for (k = 0; k < 1000; k++) {
        char want[16];
        REQUIRE(read_response(c, &r, 0) == 0);
        snprintf(want, sizeof want, "%d", k);
        ok += r.status == 200 && body_is(&r, want);
        resp_free(&r);
    }
    CHECK_EQ_INT(ok, 1000);
    free(reqs);
    cli_close(c);
    server_stop(s);
}

/* The idle timeout is for a connection waiting for its next request, not
 * for one whose response a slow client is still reading. */
TEST(idle_timeout_does_not_cut_a_response_being_read) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    size_t i, bad = 0;
    int k;
    o.idle_timeout_ms = 200;
    s = server_start(&o, std_routes);
    c = cli_open2(s->port, 32768);
    REQUIRE(cli_sends(c, "GET /blob/8000000 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    for (k = 0; k < 40; k++) { /* ~400 ms of slow reading */
        if (cli_fill_max(c, 16384) <= 0) break;
        sleep_ms(10);
    }
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 8000000);
    for (i = 0; i < r.body_len; i++)
        if ((unsigned char)r.body[i] != pattern_byte(i)) bad++;
    CHECK_EQ_INT(bad, 0);
    resp_free(&r);
    /* then, idle, it is closed */
    CHECK(cli_closed(c));
    cli_close(c);
    server_stop(s);
}

/* The client resets the connection while the server is not reading from
 * it (its read buffer is full of pipelined bytes and the request belongs to
 * a coroutine handler): the server must notice (not spin on the hang-up)
 * and cancel the handler. */
TEST(client_reset_while_not_reading_cancels_handler) {
    server *s = start_std();
    client *c = cli_open(s->port);
    struct linger lg;
    char *junk = (char *)malloc(40000);
    REQUIRE(junk != NULL);
    memset(junk, 'x', 40000);
    REQUIRE(cli_sends(c, "GET /hang HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(wait_flag(&g_started));
    (void)cli_send(c, junk, 40000);
    sleep_ms(50); /* let the server fill its buffer and stop reading */
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    cli_close(c); /* RST */
    CHECK(wait_flag(&g_co_ended));
    CHECK_EQ_INT(GET(g_co_err), TN_ECANCELLED);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    free(junk);
    server_stop(s);
}

/* The same with a handler that ends without answering: the server's own
 * 500 then meets a reset connection. */
TEST(client_reset_before_server_500) {
    server *s = start_std();
    client *c = cli_open(s->port);
    struct linger lg;
    char *junk = (char *)malloc(40000);
    REQUIRE(junk != NULL);
    memset(junk, 'x', 40000);
    REQUIRE(cli_sends(c, "GET /silent-co HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(wait_flag(&g_started));
    (void)cli_send(c, junk, 40000);
    sleep_ms(50);
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    cli_close(c);
    CHECK(wait_flag(&g_co_ended));
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    free(junk);
    server_stop(s);
}

TEST(more_request_errors) {
    server *s = start_std();
    client *c;
    response r;
    char req[8192];
    size_t o;
    int k;
    /* an encoded NUL in the path */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /users/a%00b HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    /* too many header fields */
    c = cli_open(s->port);
    o = (size_t)snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: t\r\n");
    for (k = 0; k < 120; k++) o += (size_t)snprintf(req + o, sizeof req - o, "X-%d: v\r\n", k);
    snprintf(req + o, sizeof req - o, "\r\n");
    REQUIRE(roundtrip(c, req, &r) == 0);
    CHECK_EQ_INT(r.status, 431);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    /* no Host in HTTP/1.1 */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /hello HTTP/1.1\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    resp_free(&r);
    cli_close(c);
    /* absolute-form is routed on its path */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET http://t/users/abs HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "abs"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET http://t/q?name=n HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "name=[n] x=[(null)] zz=[(null)] path=[/q]"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* Peak resident size of this process, in KiB (VmHWM), or -1. */
static long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* A buffered chunked body is bounded by its decoded size, not by its raw
 * size: the framing (here 4 KB of chunk extension per byte of data, 40 MB
 * in all for 10 KB of body) must not pile up in the read buffer. */
TEST(chunked_framing_is_not_buffered) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    char *chunk = (char *)malloc(8192);
    char want[10001];
    long before, after;
    int k, n = 10000;
    REQUIRE(chunk != NULL);
    before = peak_rss_kb();
    if (before < 0) {
        free(chunk);
        cli_close(c);
        server_stop(s);
        SKIP("no /proc/self/status");
    }
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
    for (k = 0; k < n; k++) {
        int len = snprintf(chunk, 64, "1;e=");
        memset(chunk + len, 'x', 4000);
        len += 4000;
        len += snprintf(chunk + len, 64, "\r\n%c\r\n", 'a' + k % 26);
        want[k] = (char)('a' + k % 26);
        REQUIRE(cli_send(c, chunk, (size_t)len) == 0);
    }
    want[n] = 0;
    REQUIRE(cli_sends(c, "0\r\n\r\n" GET_HELLO) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, want));
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0); /* the pipelined one after it */
    CHECK(body_is(&r, "Hello, world!"));
    resp_free(&r);
    after = peak_rss_kb();
    CHECK(after - before < 24 * 1024);
    if (after - before >= 24 * 1024) fprintf(stderr, "    peak RSS grew by %ld KiB\n", after - before);
    free(chunk);
    cli_close(c);
    server_stop(s);
}

/* Bodies that make the read buffer grow (and move) with a pipelined
 * request right behind them, for each kind of body. */
TEST(large_bodies_then_pipelined_request) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    size_t n = 900000, i;
    char *body = (char *)malloc(n), head[128];
    REQUIRE(body != NULL);
    for (i = 0; i < n; i++) body[i] = (char)pattern_byte(i);
    /* Content-Length */
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    REQUIRE(cli_sends(c, head) == 0);
    REQUIRE(cli_send(c, body, n) == 0);
    REQUIRE(cli_sends(c, "GET /users/after1 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body_len == n && memcmp(r.body, body, n) == 0);
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK(body_is(&r, "after1"));
    resp_free(&r);
    /* chunked, in 3 chunks */
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
    snprintf(head, sizeof head, "%zx\r\n", n / 3);
    for (i = 0; i < 3; i++) {
        REQUIRE(cli_sends(c, head) == 0);
        REQUIRE(cli_send(c, body + i * (n / 3), n / 3) == 0);
        REQUIRE(cli_sends(c, "\r\n") == 0);
    }
    REQUIRE(cli_sends(c, "0\r\n\r\nGET /users/after2 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body_len == n && memcmp(r.body, body, n) == 0);
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK(body_is(&r, "after2"));
    resp_free(&r);
    /* streamed (on_body), Content-Length and chunked */
    REQUIRE(cli_sends(c, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                         "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "3\r\nabc\r\n0\r\n\r\n"
                         "GET /users/after3 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    for (i = 0; i < 2; i++) {
        REQUIRE(read_response(c, &r, 0) == 0);
        CHECK(body_is(&r, "len=3 adler=024d0127"));
        resp_free(&r);
    }
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK(body_is(&r, "after3"));
    resp_free(&r);
    free(body);
    cli_close(c);
    server_stop(s);
}

/* The end of a connection: nothing after "Connection: close" is answered,
 * HEAD of a 404 and a 405 carry no body, OPTIONS * is answered. */
TEST(close_stops_the_pipeline_and_head_errors_have_no_body) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(cli_sends(c, "HEAD /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
                         "HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n"
                         "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 405);
    CHECK(header_is(&r, "Allow", "POST"));
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    REQUIRE(cli_sends(c, "GET /users/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                         "GET /users/2 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK(body_is(&r, "1"));
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    CHECK(cli_closed(c));
    cli_close(c);
    server_stop(s);
}

static int on_body_reject(tn_http_request *req, const char *data, size_t len, void *arg) {
    (void)req;
    (void)data;
    (void)arg;
    return len ? TN_EINVAL : 0;
}
static void reject_routes(tn_http_server *srv) {
    tn_http_route_opts o = {0};
    o.on_body = on_body_reject;
    std_routes(srv);
    REQUIRE(tn_http_route(srv, "POST", "/reject", h_hello, NULL, &o) == 0);
}

/* on_body refusing the body: 400 and close. Also: a client that sends a
 * large body after its 413 still reads the 413. */
TEST(on_body_error_is_400_and_413_with_body_sent) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    char *big = (char *)calloc(1, 300000);
    REQUIRE(big != NULL);
    o.max_body_bytes = 1000;
    s = server_start(&o, reject_routes);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "POST /reject HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(cli_closed(c));
    resp_free(&r);
    cli_close(c);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n") == 0);
    (void)cli_send(c, big, 300000); /* may fail once the server closes */
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    cli_close(c);
    free(big);
    server_stop(s);
}

/* After an error answer the server half-closes and reads on (nginx's
 * lingering close): a client still sending its body is not reset, so it
 * cannot lose the answer, and it sees a clean EOF. Its own EOF then ends
 * the connection. Without lingering the first send after the close draws
 * a reset and the next one fails. */
TEST(error_answer_lingers_until_the_client_closes) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    char tmp[16];
    char *big = (char *)calloc(1, 65536);
    int k;
    REQUIRE(big != NULL);
    o.max_body_bytes = 1000;
    o.linger_timeout_ms = 20000; /* longer than the test: the client's EOF must end it */
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    CHECK_EQ_INT((int)recv(c->fd, tmp, sizeof tmp, 0), 0); /* our FIN, not a reset */
    for (k = 0; k < 4; k++) { /* the body the client was sending anyway */
        CHECK_EQ_INT(cli_send(c, big, 65536), 0);
        sleep_ms(30);
    }
    CHECK_EQ_INT((int)wait_connections(s, 1), 1); /* still there, reading */
    shutdown(c->fd, SHUT_WR);
    CHECK_EQ_INT((int)wait_connections(s, 0), 0);
    cli_close(c);
    free(big);
    server_stop(s);
}

/* A client that neither sends nor closes after an error answer is
 * dropped after linger_timeout_ms; a 408 is not lingered on at all. */
TEST(linger_ends_after_linger_timeout) {
    tn_http_server_opts o = {0};
    server *s;
    client *c;
    response r;
    o.max_body_bytes = 1000;
    o.linger_timeout_ms = 200;
    o.header_timeout_ms = 200;
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    CHECK_EQ_INT((int)wait_connections(s, 0), 0);
    cli_close(c);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "GET / HTTP/1.1\r\nHost: t\r\n") == 0); /* and no more */
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 408);
    resp_free(&r);
    CHECK(cli_closed(c));
    CHECK_EQ_INT((int)wait_connections(s, 0), 0);
    cli_close(c);
    server_stop(s);
}

/* A connection that closes once its output is out, with more output than
 * the socket buffers hold: the close comes from the drain (a write event),
 * after which nothing of the connection may be touched (ASan checks). */
TEST(close_after_a_large_response) {
    server *s = start_std();
    int k;
    for (k = 0; k < 2; k++) {
        client *c = cli_open2(s->port, 32768);
        response r;
        size_t i, bad = 0;
        REQUIRE(cli_sends(c, k == 0 ? "GET /blob/12000000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                                    : "GET /blob/12000000 HTTP/1.0\r\n\r\n") == 0);
        REQUIRE(cli_fill(c) > 0);
        sleep_ms(50); /* the server's output backs up */
        REQUIRE(read_response(c, &r, 0) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_INT(r.body_len, 12000000);
        for (i = 0; i < r.body_len; i++)
            if ((unsigned char)r.body[i] != pattern_byte(i)) bad++;
        CHECK_EQ_INT(bad, 0);
        resp_free(&r);
        CHECK(cli_closed(c));
        cli_close(c);
    }
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

/* absolute-form targets route on their path; with no path at all, "/". */
TEST(absolute_form_targets_route_on_their_path) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET http://t/hello HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "Hello, world!"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET http://t/users/9?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "9"));
    resp_free(&r);
    /* no path: "/", which std_routes does not route (a 404, not a 400) */
    REQUIRE(roundtrip(c, "GET http://t HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    /* a 405 there still lists what is allowed */
    REQUIRE(roundtrip(c, "PUT http://t/hello HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 405);
    CHECK(resp_header(&r, "Allow") != NULL && strstr(resp_header(&r, "Allow"), "GET") != NULL);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(handler_framing_headers_refused_connection_close_honoured) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /framing HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "1 1 1 1"));
    CHECK(header_is(&r, "Content-Length", "7")); /* one length, ours */
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    CHECK_EQ_INT(wait_connections(s, 0), 0); /* and closed after it */
    cli_close(c);
    server_stop(s);
}

/* A client that asks for a large body and reads nothing is closed after
 * write_timeout_ms; one that reads slowly but steadily is not. */
TEST(write_timeout_closes_a_stalled_reader_not_a_slow_one) {
    tn_http_server_opts o;
    server *s;
    client *stalled, *slow;
    static char sink[65536];
    size_t got = 0, want = 6u * 1024 * 1024;
    int rounds = 0;
    memset(&o, 0, sizeof o);
    o.write_timeout_ms = 2000; /* generous: valgrind starves threads for long */
    s = server_start(&o, std_routes);
    stalled = cli_open2(s->port, 4096);
    slow = cli_open2(s->port, 65536);
    /* 6 MiB: more than the kernel's buffers hold, so output stays queued */
    REQUIRE(cli_sends(stalled, "GET /blob/6291456 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(cli_sends(slow, "GET /blob/6291456 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    /* The slow one reads at most 64 KiB every 5 ms: the peer keeps taking
     * bytes, which is what the stall clock watches (not our writes alone,
     * which the kernel's megabytes of buffer can hold back for seconds). */
    while (got < want && rounds++ < 5000) {
        ssize_t n = recv(slow->fd, sink, sizeof sink, 0);
        if (n <= 0) break;
        got += (size_t)n;
        sleep_ms(5);
    }
    CHECK(got >= want); /* the whole response arrived */
    if (got < want) fprintf(stderr, "    got %zu of %zu (%s)\n", got, want, strerror(errno));
    /* the stalled one was closed meanwhile: only the slow one is left */
    CHECK_EQ_INT(wait_connections(s, 1), 1);
    cli_close(stalled);
    cli_close(slow);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Bounds: what one peer can make the server hold                     */
/* ------------------------------------------------------------------ */

static int g_rc1, g_rc2, g_rc3;
static int g_ref_frees;
static void count_ref_free(void *p) {
    __atomic_add_fetch(&g_ref_frees, 1, __ATOMIC_SEQ_CST);
    free(p);
}

/* A copy over TN_HTTP_WRITE_HIGH is refused (and nothing was sent, so the
 * server answers 500); by reference the same body goes out. */
static void h_copy_too_big(tn_http_request *req, void *arg) {
    size_t n = TN_HTTP_WRITE_HIGH + 1;
    char *b = (char *)calloc(1, n);
    (void)arg;
    SET(g_rc1, tn_http_respond(req, 200, NULL, b, n));
    free(b);
}
static void h_write_until_full(tn_http_request *req, void *arg) {
    static char piece[4096];
    size_t total = 0;
    int rc = 0;
    (void)arg;
    tn_http_begin(req, 200, NULL, -1);
    while (total < 8 * TN_HTTP_WRITE_HIGH && (rc = tn_http_write(req, piece, sizeof piece)) == 0) total += sizeof piece;
    SET(g_rc2, rc);
    SET(g_rc3, (int)(total / 1024)); /* KiB queued before the refusal */
}
static void h_ref_big(tn_http_request *req, void *arg) {
    size_t n = 4 * TN_HTTP_WRITE_HIGH, i;
    char *b = (char *)malloc(n);
    (void)arg;
    for (i = 0; i < n; i++) b[i] = (char)pattern_byte(i);
    SET(g_rc1, tn_http_respond_ref(req, 200, NULL, b, n, count_ref_free, b));
}
/* Replace semantics and framing rules of the response headers. */
static void h_headers_set(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_set_header(req, "X-One", "a");
    tn_http_set_header(req, "x-one", "b"); /* replaces, whatever the case */
    tn_http_add_header(req, "X-Two", "1");
    tn_http_add_header(req, "X-Two", "2"); /* adds */
    tn_http_set_header(req, "Content-Type", "application/json");
    tn_http_set_header(req, "Content-Type", "text/html"); /* one Content-Type */
    tn_http_add_header(req, "X-Gone", "x");
    SET(g_rc2, tn_http_clear_header(req, "x-gone"));
    SET(g_rc3, tn_http_clear_header(req, "X-Never"));
    SET(g_rc1, tn_http_respond(req, 600, NULL, "", 0) == TN_EINVAL && tn_http_respond(req, 101, NULL, "", 0) == TN_EINVAL);
    tn_http_respond(req, 200, NULL, "{}", 2); /* NULL: the one set */
}
/* Tornado's clear_header("Content-Type"): no default type either. */
static void h_no_ctype(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_set_header(req, "Content-Type", "text/html");
    SET(g_rc2, tn_http_clear_header(req, "content-type"));
    SET(g_rc3, tn_http_clear_header(req, "Content-Type")); /* again: none was left, still 0 */
    tn_http_respond(req, 200, NULL, "raw", 3);
}
static void h_short_body(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_begin(req, 200, NULL, 100);
    tn_http_write(req, "0123456789", 10);
    SET(g_rc1, tn_http_finish(req));
}
/* The body is NUL-terminated even with a pipelined request right behind. */
static void h_body_strlen(tn_http_request *req, void *arg) {
    size_t len;
    const char *b = tn_http_body(req, &len);
    char out[64];
    int n = snprintf(out, sizeof out, "len=%zu strlen=%zu", len, strlen(b));
    (void)arg;
    tn_http_respond(req, 200, NULL, out, (size_t)n);
}
/* Streams n bytes (HEAD: none are sent) awaiting drain after each 16 KiB,
 * and counts the loop iterations that ran meanwhile. */
static volatile int g_turns, g_turning;
static int g_spin_done;
static void turn_cb(tn_loop *l, void *arg) {
    (void)arg;
    g_turns++;
    if (g_turning) tn_add_callback(l, turn_cb, NULL);
}
struct spin_frame {
    tn_http_co h;
    long n, i;
    int turns0;
};
static int co_spin(tn_co *co) {
    struct spin_frame *f = (struct spin_frame *)co;
    static char piece[16384];
    TN_BEGIN(co);
    f->n = atol(tn_http_param(f->h.req, "n"));
    g_turning = 1;
    tn_add_callback(co->loop, turn_cb, NULL);
    f->turns0 = g_turns;
    tn_http_begin(f->h.req, 200, NULL, f->n);
    for (f->i = 0; f->i < f->n; f->i += (long)sizeof piece) {
        if (tn_http_write(f->h.req, piece, sizeof piece)) TN_FAIL(co, TN_ECLOSED);
        TN_AWAIT(co, tn_http_drain(f->h.req));
        if (co->err) TN_FAIL(co, co->err);
    }
    g_turning = 0;
    SET(g_rc1, g_turns - f->turns0);
    SET(g_spin_done, 1);
    tn_http_finish(f->h.req);
    TN_END(co);
}

static void bounds_routes(tn_http_server *srv) {
    tn_http_route_opts spin = {0}, co = {0};
    spin.frame_size = sizeof(struct spin_frame);
    co.frame_size = sizeof(tn_http_co);
    REQUIRE(tn_http_route(srv, "GET", "/", h_hello, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/hello", h_hello, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/copy-too-big", h_copy_too_big, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/write-until-full", h_write_until_full, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/ref-big", h_ref_big, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/headers-set", h_headers_set, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/short", h_short_body, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/no-ctype", h_no_ctype, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/strlen", h_body_strlen, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/echo", h_echo, NULL, NULL) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/spin/{n}", co_spin, NULL, &spin) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/sleep200", co_sleepy, (void *)(uintptr_t)200, &co) == 0);
}

TEST(a_plain_handler_cannot_queue_more_than_the_write_high_water_mark) {
    server *s = server_start(NULL, bounds_routes);
    client *c = cli_open(s->port);
    response r;
    size_t i, bad = 0;
    REQUIRE(roundtrip(c, "GET /copy-too-big HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(GET(g_rc1), TN_EFULL);
    CHECK_EQ_INT(r.status, 500); /* it did not respond */
    resp_free(&r);
    /* A handler that stops at TN_EFULL and returns has left a hole: the
     * body is cut (no last chunk, then the close), never passed off as
     * whole. */
    REQUIRE(cli_sends(c, "GET /write-until-full HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    CHECK(read_response(c, &r, 0) != 0);
    resp_free(&r);
    CHECK_EQ_INT(GET(g_rc2), TN_EFULL);
    CHECK(GET(g_rc3) * 1024 <= TN_HTTP_WRITE_HIGH && GET(g_rc3) * 1024 > TN_HTTP_WRITE_HIGH / 2);
    cli_close(c);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /ref-big HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(GET(g_rc1), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 4 * TN_HTTP_WRITE_HIGH);
    for (i = 0; i < r.body_len; i++)
        if ((unsigned char)r.body[i] != pattern_byte(i)) bad++;
    CHECK_EQ_INT(bad, 0);
    resp_free(&r);
    for (i = 0; i < 500 && !GET(g_ref_frees); i++) sleep_ms(10); /* the server frees it after its last write */
    CHECK_EQ_INT(GET(g_ref_frees), 1); /* freed once written */
    cli_close(c);
    server_stop(s);
}

TEST(response_headers_replace_add_clear_and_final_statuses_only) {
    server *s = server_start(NULL, bounds_routes);
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /headers-set HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "X-One", "b"));
    CHECK(strstr(r.head, "X-One: a") == NULL);
    CHECK(strstr(r.head, "X-Two: 1\r\nX-Two: 2\r\n") != NULL);
    CHECK(header_is(&r, "Content-Type", "text/html"));
    CHECK(strstr(r.head, "application/json") == NULL);
    CHECK(strstr(r.head, "X-Gone") == NULL);
    CHECK_EQ_INT(GET(g_rc2), 0);
    CHECK_EQ_INT(GET(g_rc3), TN_ENOENT);
    CHECK_EQ_INT(GET(g_rc1), 1); /* 600 and 101 refused */
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /no-ctype HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.head, "Content-Type") == NULL);
    CHECK(r.body_len == 3 && memcmp(r.body, "raw", 3) == 0);
    CHECK_EQ_INT(GET(g_rc2), 0);
    CHECK_EQ_INT(GET(g_rc3), 0);
    resp_free(&r);
    /* a short body is an error, and the connection closes (the client
     * reads what came, then the close) */
    REQUIRE(cli_sends(c, "GET /short HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    while (cli_fill(c) > 0) {} /* the head and 10 bytes, then the close */
    CHECK(cli_find(c, 0, "\r\n\r\n0123456789") > 0); /* fill returned 0: closed */
    CHECK_EQ_INT(GET(g_rc1), TN_EINVAL);
    cli_close(c);
    server_stop(s);
}

TEST(a_buffered_body_is_nul_terminated) {
    server *s = server_start(NULL, bounds_routes);
    client *c = cli_open(s->port);
    response r;
    /* the body is followed by another request in the same write, and a
     * chunked body by the next request too */
    REQUIRE(cli_sends(c, "POST /strlen HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                         "POST /strlen HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                         "GET / HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK(body_is(&r, "len=5 strlen=5"));
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK(body_is(&r, "len=3 strlen=3"));
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0); /* the byte under the NUL was put back */
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "Hello, world!"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* A streaming handler whose drains all resolve at once (HEAD: nothing is
 * sent) still gives the loop a turn every TN_HTTP_WRITE_HIGH bytes. */
TEST(a_streaming_handler_yields_to_the_loop) {
    server *s = server_start(NULL, bounds_routes);
    client *c = cli_open(s->port);
    response r;
    long n = 40L * TN_HTTP_WRITE_HIGH;
    char req[128];
    snprintf(req, sizeof req, "HEAD /spin/%ld HTTP/1.1\r\nHost: t\r\n\r\n", n);
    REQUIRE(cli_sends(c, req) == 0);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    CHECK(wait_flag(&g_spin_done)); /* the head went out first: wait for the handler's end */
    CHECK(GET(g_rc1) >= 40);
    cli_close(c);
    server_stop(s);
}

/* Two uploads that each need more than their connection's first buffer,
 * with a budget for one: the second gets 503 while the first is in; once
 * the first is done, the budget is back. */
TEST(buffered_bodies_share_a_server_wide_budget) {
    tn_http_server_opts o;
    server *s;
    client *a, *b, *c;
    response r;
    size_t n = 200000;
    char *body = (char *)malloc(n), head[160];
    memset(&o, 0, sizeof o);
    o.max_buffered_bytes = 300000; /* one body (~184 KB beyond the first 16 KiB), not two */
    REQUIRE(body != NULL);
    memset(body, 'x', n);
    s = server_start(&o, bounds_routes);
    a = cli_open(s->port);
    b = cli_open(s->port);
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    REQUIRE(cli_sends(a, head) == 0);
    REQUIRE(cli_send(a, body, n / 2) == 0);
    sleep_ms(50);
    REQUIRE(cli_sends(b, head) == 0);
    REQUIRE(read_response(b, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 503);
    resp_free(&r);
    REQUIRE(cli_send(a, body + n / 2, n - n / 2) == 0);
    REQUIRE(read_response(a, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, n);
    resp_free(&r);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, head) == 0);
    REQUIRE(cli_send(c, body, n) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    /* a single body larger than max_body_bytes is still a 413 */
    REQUIRE(cli_sends(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    cli_close(a);
    cli_close(b);
    cli_close(c);
    free(body);
    server_stop(s);
}

/* A response written to a peer that is gone: without MSG_NOSIGNAL the
 * write raised SIGPIPE, which kills an application that did not ignore it
 * (the test runner ignores it; this test puts the default back). The peer
 * is a socketpair (an AF_UNIX peer closed: the first write is an EPIPE),
 * served with tn_http_serve_fd. */
static int g_pair_fd;
static void do_serve_fd(server *s, void *arg) {
    (void)arg;
    SET(g_rc1, tn_http_serve_fd(s->srv, GET(g_pair_fd)));
}
TEST(a_write_to_a_gone_client_raises_no_sigpipe) {
    server *s;
    client *c;
    response r;
    int sv[2], i;
    signal(SIGPIPE, SIG_DFL);
    s = server_start(NULL, bounds_routes);
    for (i = 0; i < 3; i++) {
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        REQUIRE(write(sv[1], "GET /ref-big HTTP/1.1\r\nHost: t\r\n\r\n", 35) == 35);
        close(sv[1]); /* gone before the answer */
        SET(g_pair_fd, sv[0]);
        on_loop(s, do_serve_fd, NULL);
        CHECK_EQ_INT(GET(g_rc1), 0);
    }
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0); /* alive */
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* Graceful shutdown lets a body that is still arriving finish (with
 * Connection: close); a connection that has sent nothing yet gets its
 * first request answered. */
TEST(graceful_shutdown_finishes_bodies_in_flight) {
    server *s = server_start(NULL, bounds_routes);
    client *up, *fresh;
    response r;
    unsigned deadline = 5000;
    size_t n = 100000;
    char *body = (char *)malloc(n), head[160];
    REQUIRE(body != NULL);
    memset(body, 'u', n);
    up = cli_open(s->port);
    fresh = cli_open(s->port);
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    REQUIRE(cli_sends(up, head) == 0);
    REQUIRE(cli_send(up, body, n / 3) == 0);
    sleep_ms(50);
    CHECK_EQ_INT(wait_connections(s, 2), 2);
    on_loop(s, do_shutdown, &deadline);
    REQUIRE(cli_send(up, body + n / 3, n - n / 3) == 0);
    REQUIRE(read_response(up, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, n);
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    REQUIRE(roundtrip(fresh, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    CHECK(wait_flag(&g_shutdown_done));
    CHECK_EQ_INT(server_connections(s), 0);
    cli_close(up);
    cli_close(fresh);
    free(body);
    server_stop(s);
}

/* At max_connections the 503 is readable by a client that sent its request
 * (and a body) before reading: the server reads and drops it (lingering)
 * instead of closing on unread bytes, which makes the kernel send a reset
 * that can destroy the answer. */
TEST(the_503_at_the_connection_limit_is_readable) {
    tn_http_server_opts o;
    server *s;
    client *held, *extra;
    response r;
    static char body[200000];
    int k;
    memset(&o, 0, sizeof o);
    o.max_connections = 1;
    s = server_start(&o, bounds_routes);
    held = cli_open(s->port);
    REQUIRE(roundtrip(held, GET_HELLO, &r) == 0);
    resp_free(&r);
    memset(body, 'b', sizeof body);
    for (k = 0; k < 5; k++) {
        extra = cli_open(s->port);
        cli_sends(extra, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n");
        cli_send(extra, body, sizeof body); /* may stop early: the server has answered */
        REQUIRE(read_response(extra, &r, 0) == 0);
        CHECK_EQ_INT(r.status, 503);
        CHECK(resp_header(&r, "Retry-After") != NULL);
        resp_free(&r);
        cli_close(extra);
    }
    /* the held connection is still served */
    REQUIRE(roundtrip(held, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(held);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A client that reads nothing is cut within 1.25 x write_timeout_ms of its
 * last progress (the clock looks every quarter): looking once per timeout,
 * it was cut at about twice the timeout. An upper bound, with slack for a
 * loaded machine (and more under valgrind), and a lower one: not early. */
TEST(write_timeout_is_not_doubled) {
    tn_http_server_opts o;
    server *s;
    client *stalled;
    uint64_t t0, took;
    unsigned bound;
    memset(&o, 0, sizeof o);
    o.write_timeout_ms = 1000;
    bound = getenv("TN_VALGRIND") ? 3000 : 1700;
    s = server_start(&o, std_routes);
    stalled = cli_open2(s->port, 4096);
    REQUIRE(cli_sends(stalled, "GET /blob/6291456 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(cli_fill_max(stalled, 1) > 0); /* the answer has begun: the clock runs */
    t0 = now_ms();
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    took = now_ms() - t0;
    CHECK(took >= 900);
    CHECK(took <= bound);
    if (took > bound || took < 900) fprintf(stderr, "    cut after %llu ms\n", (unsigned long long)took);
    cli_close(stalled);
    server_stop(s);
}

/* Puts the server's accept at EMFILE, deterministically: n client sockets
 * are made first and moved above the fd numbers a process may allocate,
 * then RLIMIT_NOFILE is lowered to the lowest free fd (every fd below it is
 * in use), then they connect (connect allocates no fd). The clients share
 * the process's fd table with the server, so every accept the server tries
 * fails with EMFILE until the limit is raised again. (Connecting until the
 * table was full raced the server's accepts: client and server fds could
 * alternate and the server hold as many connections as there were clients.)
 * Returns the number connected; *saved is the limit to restore. */
static int connect_at_emfile(int port, int *fds, int n, struct rlimit *saved) {
    struct rlimit low;
    int i, probe, connected = 0;
    REQUIRE(getrlimit(RLIMIT_NOFILE, saved) == 0);
    probe = dup(0); /* the lowest free fd */
    REQUIRE(probe >= 0);
    close(probe);
    REQUIRE((rlim_t)(probe + 64 + n) <= saved->rlim_cur);
    for (i = 0; i < n; i++) {
        int fd = tcp_socket(0);
        REQUIRE(fd >= 0);
        fds[i] = fcntl(fd, F_DUPFD, probe + 64); /* the options go with it */
        REQUIRE(fds[i] >= probe + 64);
        close(fd);
    }
    low = *saved;
    low.rlim_cur = (rlim_t)probe;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    for (i = 0; i < n; i++)
        if (tcp_connect_fd(fds[i], port) == 0) connected++;
    return connected;
}

/* At EMFILE the server pauses accepting on a timer (it does not spin), and
 * accepts again once fds are free. */
TEST(accept_at_emfile_pauses_then_resumes) {
    server *s = server_start(NULL, std_routes);
    struct rlimit rl;
    int fds[4], i;
    response r;
    client *c;
    CHECK_EQ_INT(connect_at_emfile(s->port, fds, 4, &rl), 4);
    sleep_ms(300); /* the server meets EMFILE, pauses, retries, pauses */
    CHECK_EQ_INT((int)server_connections(s), 0); /* all four wait in the backlog */
    REQUIRE(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    /* Accepting resumes: the four waiting, then a new one. (Not under
     * valgrind: it emulates RLIMIT_NOFILE by closing the fd the kernel's
     * accept returned, so the four are consumed from the backlog.) */
    if (!getenv("TN_VALGRIND")) CHECK_EQ_INT((int)wait_connections(s, 4), 4);
    for (i = 0; i < 4; i++) close(fds[i]);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, GET_HELLO, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

static void loop_timers(server *s, void *arg) {
    tn_loop_stats st;
    tn_loop_get_stats(s->loop, &st);
    *(size_t *)arg = st.timers;
}

/* Stops the loop if a timer is armed: with no connection, the server's only
 * timer is the accept pause. The loop then ends with this turn (its timers
 * ran before its I/O, this call), so the pause is still armed when the
 * server is freed. */
static void stop_if_paused(server *s, void *arg) {
    loop_timers(s, arg);
    if (*(size_t *)arg) tn_loop_stop(s->loop);
}

/* Freed while paused at EMFILE: the pause timer must go with the server (it
 * read the freed server before: server_free_stopped checks that no timer is
 * left). */
TEST(server_freed_while_accept_is_paused_leaves_no_timer) {
    server *s = server_start(NULL, std_routes);
    struct rlimit rl;
    int fds[4], i;
    size_t timers = 1;
    on_loop(s, loop_timers, &timers);
    CHECK_EQ_INT((int)timers, 0); /* so a timer below is the pause */
    CHECK_EQ_INT(connect_at_emfile(s->port, fds, 4, &rl), 4);
    for (i = 0, timers = 0; i < 500 && !timers; i++) {
        on_loop(s, stop_if_paused, &timers);
        if (!timers) sleep_ms(5);
    }
    CHECK_EQ_INT((int)timers, 1); /* stopped while paused */
    if (!timers) on_loop(s, do_stop, NULL);
    server_free_stopped(s);
    for (i = 0; i < 4; i++) close(fds[i]);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &rl) == 0);
}

/* ------------------------------------------------------------------ */
/* Found by the whole-server fuzzer (tests/fuzz_server.c)              */
/* ------------------------------------------------------------------ */

/* The access log reads an error answer's method and target: they must be
 * terminated strings even when the answer came before the handler's (a
 * 400 for %00 in the target read past the head, and past the buffer). */
static char g_log_method[64], g_log_target[256];
static int g_log_status;
static void access_record(const tn_http_access *e, void *arg) {
    (void)arg;
    snprintf(g_log_method, sizeof g_log_method, "%s", e->method ? e->method : "(null)");
    snprintf(g_log_target, sizeof g_log_target, "%s", e->target ? e->target : "(null)");
    g_log_status = e->status;
}
TEST(fuzz_access_log_of_an_early_error_has_terminated_strings) {
    tn_http_server_opts o;
    server *s;
    client *c;
    response r;
    memset(&o, 0, sizeof o);
    o.on_access = access_record;
    o.max_body_bytes = 100;
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    resp_free(&r);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    CHECK(strcmp(g_log_method, "GET") == 0);
    CHECK(strcmp(g_log_target, "/a%00b") == 0);
    CHECK_EQ_INT(g_log_status, 400);
    /* a 413 before the handler: the same */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "POST /echo?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    CHECK(strcmp(g_log_method, "POST") == 0);
    CHECK(strcmp(g_log_target, "/echo?x=1") == 0);
    server_stop(s);
}

/* Pipelined requests received whole before the client's half-close are
 * all answered, even when the EOF is read while a coroutine handler holds
 * the first (they were dropped); the last answer says Connection: close. */
TEST(fuzz_half_close_after_pipelined_requests_answers_them_all) {
    server *s = start_std();
    client *c = cli_open(s->port);
    response r;
    REQUIRE(cli_sends(c, "GET /sleep100 HTTP/1.1\r\nHost: t\r\n\r\n" GET_HELLO
                         "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(shutdown(c->fd, SHUT_WR) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "slept"));
    resp_free(&r);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    CHECK(cli_closed(c));
    cli_close(c);
    CHECK_EQ_INT(wait_connections(s, 0), 0);
    server_stop(s);
}

/* An error answer to HEAD has no body (RFC 9110 9.3.2), also before the
 * handler (a 413 for the declared length). */
TEST(fuzz_error_answer_to_head_has_no_body) {
    tn_http_server_opts o;
    server *s;
    client *c;
    response r;
    memset(&o, 0, sizeof o);
    o.max_body_bytes = 100;
    s = server_start(&o, std_routes);
    c = cli_open(s->port);
    REQUIRE(cli_sends(c, "HEAD /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    CHECK(cli_closed(c)); /* nothing after the head: no body bytes */
    cli_close(c);
    server_stop(s);
}

/* A body timeout (408) that fires once the client is gone: the answer's
 * write fails and frees the connection inside the error path, which then
 * read it (a use after free; ASan and valgrind builds catch it). Timers
 * run before I/O, so stepping a loop of our own makes it certain. */
static void echo_h(tn_http_request *req, void *arg) {
    size_t n;
    const char *b = tn_http_body(req, &n);
    (void)arg;
    tn_http_respond(req, 200, NULL, b, n);
}
TEST(fuzz_timeout_answer_to_a_gone_client_is_no_use_after_free) {
    static const char req[] = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"; /* body cut */
    tn_http_server_opts o;
    tn_http_server *srv;
    tn_loop *l;
    int sv[2], i;
    memset(&o, 0, sizeof o);
    o.body_timeout_ms = 5;
    REQUIRE(test_loop_new(&l, NULL) == 0);
    REQUIRE(tn_http_server_new(l, &o, &srv) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/echo", echo_h, NULL, NULL) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    REQUIRE(tn_http_serve_fd(srv, sv[0]) == 0);
    REQUIRE(write(sv[1], req, sizeof req - 1) == (ssize_t)(sizeof req - 1));
    for (i = 0; i < 5; i++) tn_loop_step(l, 0); /* the head is in: the body's clock runs */
    close(sv[1]);                               /* the client is gone... */
    sleep_ms(20);                               /* ...and the body timeout is due */
    tn_loop_step(l, 0);                         /* timers before I/O: a 408 to a dead peer */
    for (i = 0; i < 5; i++) tn_loop_step(l, 0);
    CHECK_EQ_INT(tn_http_server_connections(srv), 0);
    tn_http_server_free(srv);
    tn_loop_free(l);
}
