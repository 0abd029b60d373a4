/* The request/response layer a Tornado handler relies on, over real
 * sockets: arguments (query, urlencoded and multipart bodies, a streamed
 * multipart upload), cookies, basic auth, status, redirects, error pages
 * and the error hook, ETag / 304, Last-Modified, the access log, and the
 * JSON string escaper. */
#include "../tornado.h"
#include "tn_test.h"
#include "http_util.h"

#include <sys/stat.h>

/* ------------------------------------------------------------------ */
/* Handlers                                                            */
/* ------------------------------------------------------------------ */

/* Prints what the argument getters see of a, b and the files. */
static void h_args(tn_http_request *req, void *arg) {
    char out[4096];
    const char *vals[8];
    size_t n = tn_http_arguments(req, "a", vals, 8), i, o = 0, nf = tn_http_file_count(req);
    (void)arg;
    o += (size_t)snprintf(out + o, sizeof out - o, "a=%s b=%s q=%s body=%s n=%zu:", tn_http_argument(req, "a", "-"),
                          tn_http_argument(req, "b", "-"), tn_http_query_argument(req, "a", "-"),
                          tn_http_body_argument(req, "a", "-"), n);
    for (i = 0; i < n && i < 8; i++) o += (size_t)snprintf(out + o, sizeof out - o, " %s", vals[i]);
    for (i = 0; i < nf; i++) {
        const tn_http_file *f = tn_http_file_at(req, i);
        o += (size_t)snprintf(out + o, sizeof out - o, " file[%s %s %s %zu %.*s]", f->name, f->filename,
                              f->content_type, f->len, (int)f->len, f->data);
    }
    tn_http_respond(req, 200, NULL, out, o);
}

/* A streamed multipart upload: parts parsed as they arrive. */
struct up_frame {
    tn_http_co h;
    tn_multipart mp;
    int begun, err, parts;
    char log[512];
    size_t loglen;
    unsigned long sum, bytes;
};
static int on_mp(void *arg, int event, const tn_http_part *part, const char *data, size_t len) {
    struct up_frame *f = (struct up_frame *)arg;
    size_t i;
    if (event == TN_MP_BEGIN) {
        f->parts++;
        f->loglen += (size_t)snprintf(f->log + f->loglen, sizeof f->log - f->loglen, "[%s %s %s:", part->name,
                                      part->filename ? part->filename : "-", part->content_type ? part->content_type : "-");
    } else if (event == TN_MP_DATA) {
        for (i = 0; i < len; i++) f->sum = (f->sum * 31 + (unsigned char)data[i]) % 1000000007u;
        f->bytes += len;
    } else {
        f->loglen += (size_t)snprintf(f->log + f->loglen, sizeof f->log - f->loglen, " %lu]", f->bytes);
        f->bytes = 0;
    }
    return 0;
}
static int on_up_body(tn_http_request *req, const char *data, size_t len, void *arg) {
    struct up_frame *f = (struct up_frame *)tn_http_frame(req);
    (void)arg;
    if (!f->begun) {
        f->begun = 1;
        if ((f->err = tn_multipart_begin(&f->mp, tn_http_get_header(req, "Content-Type"))) != 0) return f->err;
    }
    return f->err = tn_multipart_feed(&f->mp, data, len, on_mp, f);
}
static int co_up(tn_co *co) {
    struct up_frame *f = (struct up_frame *)co;
    char out[768];
    int n;
    TN_BEGIN(co);
    if (!f->err) f->err = tn_multipart_end(&f->mp);
    n = snprintf(out, sizeof out, "err=%d parts=%d sum=%lu %s", f->err, f->parts, f->sum, f->log);
    tn_http_respond(f->h.req, f->err ? 400 : 200, NULL, out, (size_t)n);
    TN_END(co);
}

static void h_cookies(tn_http_request *req, void *arg) {
    char out[1024];
    size_t o = 0, i;
    tn_http_cookie_opts co;
    (void)arg;
    for (i = 0; i < tn_http_cookie_count(req); i++) {
        const char *n, *v;
        tn_http_cookie_at(req, i, &n, &v);
        o += (size_t)snprintf(out + o, sizeof out - o, "%s=%s;", n, v);
    }
    o += (size_t)snprintf(out + o, sizeof out - o, " last-a=%s", tn_http_cookie(req, "a") ? tn_http_cookie(req, "a") : "-");
    memset(&co, 0, sizeof co);
    co.max_age = 60;
    co.http_only = 1;
    co.same_site = "Lax";
    co.expires = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    tn_http_set_cookie(req, "s", "1", &co);
    tn_http_clear_cookie(req, "old", NULL, NULL);
    o += (size_t)snprintf(out + o, sizeof out - o, " inj=%d,%d,%d", tn_http_set_cookie(req, "x", "a;b", NULL),
                          tn_http_set_cookie(req, "x y", "1", NULL),
                          tn_http_set_cookie(req, "x", "1\r\nX-Evil: 1", NULL));
    tn_http_respond(req, 200, NULL, out, o);
}

static void h_auth(tn_http_request *req, void *arg) {
    const char *u, *p;
    char out[256];
    int rc = tn_http_basic_auth(req, &u, &p), n;
    (void)arg;
    if (rc || strcmp(u, "user") != 0 || strcmp(p, "pa:ss") != 0) {
        tn_http_auth_challenge(req, "the \"test\"");
        return;
    }
    n = snprintf(out, sizeof out, "hello %s", u);
    tn_http_respond(req, 200, NULL, out, (size_t)n);
}

static void h_created(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_set_status(req, 201);
    tn_http_set_header(req, "Location", "/items/7");
    tn_http_write(req, "made", 4);
}
static void h_redirect(tn_http_request *req, void *arg) {
    const char *st = tn_http_query(req, "s");
    (void)arg;
    if (tn_http_redirect(req, tn_http_query(req, "to"), st ? atoi(st) : 0)) tn_http_respond(req, 400, NULL, "bad", 3);
}
static void h_teapot(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_set_header(req, "X-Dropped", "1"); /* send_error drops it */
    tn_http_send_error(req, 418 + 4 * 0 == 418 ? 422 : 422);
}
static void h_etag(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_respond(req, 200, NULL, "same body", 9);
}
static void h_lastmod(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_set_header(req, "Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT");
    tn_http_respond(req, 200, NULL, "dated", 5);
}
static void h_catchall(tn_http_request *req, void *arg) {
    char out[256];
    int n = snprintf(out, sizeof out, "custom 404 for %s %s", tn_http_method(req), tn_http_path(req));
    (void)arg;
    tn_http_respond(req, 404, NULL, out, (size_t)n);
}
/* request.remote_ip: the socket's peer, and a buffer too small for it */
static void h_ip(tn_http_request *req, void *arg) {
    char ip[46], small[4], out[96];
    int rc = tn_http_remote_ip(req, ip, sizeof ip), rc_small = tn_http_remote_ip(req, small, sizeof small), n;
    (void)arg;
    n = snprintf(out, sizeof out, "rc=%d ip=%s small=%d", rc, ip, rc_small);
    tn_http_respond(req, 200, NULL, out, (size_t)n);
}
static void h_hello(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_respond(req, 200, "text/plain", "Hello, world!", 13);
}

/* The error hook: JSON error pages. */
static int g_hook_calls;
static void error_hook(tn_http_request *req, int status, void *arg) {
    char out[256];
    int n = snprintf(out, sizeof out, "{\"error\": %d, \"path\": \"%s\"}", status, tn_http_path(req) ? tn_http_path(req) : "");
    (void)arg;
    __atomic_add_fetch(&g_hook_calls, 1, __ATOMIC_SEQ_CST);
    tn_http_respond(req, status, "application/json", out, (size_t)n);
}

/* The access log: the combined line of the last finished request. */
static char g_log[1024];
static int g_log_n;
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static void access_hook(const tn_http_access *e, void *arg) {
    (void)arg;
    pthread_mutex_lock(&g_log_mu);
    tn_http_access_combined(e, g_log, sizeof g_log);
    g_log_n++;
    pthread_mutex_unlock(&g_log_mu);
}
static int log_count(char *copy, size_t cap) {
    int n;
    pthread_mutex_lock(&g_log_mu);
    n = g_log_n;
    snprintf(copy, cap, "%s", g_log);
    pthread_mutex_unlock(&g_log_mu);
    return n;
}

static void web_routes(tn_http_server *srv) {
    tn_http_route_opts up, noe;
    memset(&up, 0, sizeof up);
    memset(&noe, 0, sizeof noe);
    up.on_body = on_up_body;
    up.frame_size = sizeof(struct up_frame);
    up.max_body_bytes = 64u << 20;
    noe.no_etag = 1;
    REQUIRE(tn_http_route(srv, NULL, "/args", h_args, NULL, NULL) == 0);
    REQUIRE(tn_http_route_co(srv, "POST", "/upload", co_up, NULL, &up) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/cookies", h_cookies, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/auth", h_auth, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "POST", "/items", h_created, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/redirect", h_redirect, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/teapot", h_teapot, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/etag", h_etag, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/noetag", h_etag, NULL, &noe) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/lastmod", h_lastmod, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/hello", h_hello, NULL, NULL) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/ip", h_ip, NULL, NULL) == 0);
}
static void web_routes_catchall(tn_http_server *srv) {
    web_routes(srv);
    REQUIRE(tn_http_route(srv, NULL, "/{rest*}", h_catchall, NULL, NULL) == 0);
}

/* ------------------------------------------------------------------ */
/* Arguments and forms                                                 */
/* ------------------------------------------------------------------ */

TEST(remote_ip_is_the_peer_of_the_socket) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    char want[96];
    snprintf(want, sizeof want, "rc=0 ip=127.0.0.1 small=%d", TN_EINVAL);
    /* what a proxy would say is not taken for it */
    REQUIRE(roundtrip(c, "GET /ip HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.9.8.7\r\nX-Real-Ip: 10.9.8.7\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body_len == strlen(want) && memcmp(r.body, want, r.body_len) == 0);
    if (r.body_len != strlen(want) || memcmp(r.body, want, r.body_len)) fprintf(stderr, "    got %.*s\n", (int)r.body_len, r.body);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(arguments_from_query_and_urlencoded_body_last_wins) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /args?a=1&b=x%20y&a=2&a= HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "a= b=x y q= body=- n=3: 1 2 "));
    resp_free(&r);
    REQUIRE(roundtrip(c, "POST /args?a=q HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         "Content-Length: 15\r\n\r\na=b1&b=2+3&a=b2", &r) == 0);
    CHECK(body_is(&r, "a=b2 b=2 3 q=q body=b2 n=3: q b1 b2"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

static const char *MP_BODY =
    "preamble to ignore\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"a\"\r\n\r\n"
    "one\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"f\"; filename=\"hi \\\"there\\\".txt\"\r\n"
    "Content-Type: text/plain\r\n\r\n"
    "line1\r\n--XyNotTheBoundary\r\nline2\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"a\"\r\n\r\n"
    "two\r\n"
    "--XyZ--\r\nepilogue";

TEST(multipart_fields_and_files) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    char head[256];
    snprintf(head, sizeof head, "POST /args HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
                                "Content-Length: %zu\r\n\r\n", strlen(MP_BODY));
    REQUIRE(cli_sends(c, head) == 0);
    REQUIRE(cli_sends(c, MP_BODY) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "a=two b=- q=- body=two n=2: one two file[f hi \"there\".txt text/plain 32 "
                      "line1\r\n--XyNotTheBoundary\r\nline2]"));
    resp_free(&r);
    /* malformed: no closing delimiter; a part head without a name */
    snprintf(head, sizeof head, "POST /args HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
                                "Content-Length: 36\r\n\r\n");
    REQUIRE(cli_sends(c, head) == 0);
    REQUIRE(cli_sends(c, "--XyZ\r\nContent-Disposition: form-da") == 0);
    REQUIRE(cli_sends(c, "t") == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 400);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(multipart_too_many_parts_is_413) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    char head[256], *body = (char *)malloc(64 * 1024);
    size_t o = 0;
    int i;
    REQUIRE(body != NULL);
    for (i = 0; i < TN_HTTP_MAX_PARTS + 1; i++)
        o += (size_t)sprintf(body + o, "--B\r\nContent-Disposition: form-data; name=\"p%d\"\r\n\r\nv\r\n", i);
    o += (size_t)sprintf(body + o, "--B--\r\n");
    snprintf(head, sizeof head, "POST /args HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                                "Content-Length: %zu\r\n\r\n", o);
    REQUIRE(cli_sends(c, head) == 0);
    REQUIRE(cli_send(c, body, o) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    free(body);
    cli_close(c);
    server_stop(s);
}

/* A 2 MB file streamed through on_body, one byte at a time at first (so
 * every split of the delimiter is met), then in big pieces. */
TEST(multipart_streamed_upload_any_split) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    size_t n = 2u << 20, i, blen, cut;
    unsigned long sum = 0;
    char *body, head[256], want[256];
    const char *pre = "--b0undary\r\nContent-Disposition: form-data; name=\"up\"; filename=\"big.bin\"\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n";
    const char *post = "\r\n--b0undary\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b0undary--\r\n";
    body = (char *)malloc(strlen(pre) + n + strlen(post));
    REQUIRE(body != NULL);
    memcpy(body, pre, strlen(pre));
    for (i = 0; i < n; i++) {
        /* data full of near-delimiters: CR LF - - b 0 ... */
        static const char near[] = "\r\n--b0undar";
        body[strlen(pre) + i] = (i % 97 < sizeof near - 1) ? near[i % 97] : (char)('A' + i % 20); /* never the 'y' */
        sum = (sum * 31 + (unsigned char)body[strlen(pre) + i]) % 1000000007u;
    }
    sum = (sum * 31 + 'h') % 1000000007u;
    sum = (sum * 31 + 'i') % 1000000007u;
    memcpy(body + strlen(pre) + n, post, strlen(post));
    blen = strlen(pre) + n + strlen(post);
    snprintf(head, sizeof head, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
                                "Content-Length: %zu\r\n\r\n", blen);
    REQUIRE(cli_sends(c, head) == 0);
    cut = 400;
    for (i = 0; i < cut; i++) {
        REQUIRE(cli_send(c, body + i, 1) == 0);
        if (i % 50 == 0) sleep_ms(1);
    }
    REQUIRE(cli_send(c, body + cut, blen - cut) == 0);
    REQUIRE(read_response(c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    snprintf(want, sizeof want, "err=0 parts=2 sum=%lu [up big.bin application/octet-stream: %zu][note - -: 2]", sum, n);
    CHECK(body_is(&r, want));
    if (!body_is(&r, want)) fprintf(stderr, "    got %.*s\n    want %s\n", (int)r.body_len, r.body, want);
    resp_free(&r);
    free(body);
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* Cookies, auth, answers                                              */
/* ------------------------------------------------------------------ */

TEST(cookies_read_set_clear_and_injection_refused) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /cookies HTTP/1.1\r\nHost: t\r\nCookie: a=1; b=\"two\"\r\nCookie: a=3\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "a=1;b=two;a=3; last-a=3 inj=-1002,-1002,-1002"));
    CHECK(strstr(r.head, "Set-Cookie: s=1; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Max-Age=60; Path=/; HttpOnly; "
                         "SameSite=Lax\r\n") != NULL);
    CHECK(strstr(r.head, "Set-Cookie: old=; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; Path=/\r\n") != NULL);
    CHECK(strstr(r.head, "X-Evil") == NULL);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(basic_auth_and_the_401_challenge) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    /* user:pa:ss (the password may hold colons) */
    REQUIRE(roundtrip(c, "GET /auth HTTP/1.1\r\nHost: t\r\nAuthorization: Basic dXNlcjpwYTpzcw==\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "hello user"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /auth HTTP/1.1\r\nHost: t\r\nAuthorization: Basic !!!\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    CHECK(header_is(&r, "WWW-Authenticate", "Basic realm=\"the \\\"test\\\"\""));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /auth HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(set_status_redirects_and_send_error) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "POST /items HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 201);
    CHECK(header_is(&r, "Location", "/items/7"));
    CHECK(body_is(&r, "made"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /redirect?to=/elsewhere HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 302);
    CHECK(header_is(&r, "Location", "/elsewhere"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /redirect?to=http://example.com/x&s=308 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 308);
    CHECK(header_is(&r, "Location", "http://example.com/x"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /redirect?to=/x&s=200 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 400); /* not a redirect status: refused */
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /teapot HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 422);
    CHECK(resp_header(&r, "X-Dropped") == NULL);
    CHECK(body_is(&r, "422 Unprocessable Content\n"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* The error hook writes every error answer: no route, a wrong method, a
 * failed handler, a body too large, tn_http_send_error. */
TEST(error_hook_writes_every_error_answer) {
    tn_http_server_opts o;
    server *s;
    client *c;
    response r;
    memset(&o, 0, sizeof o);
    o.on_error = error_hook;
    o.max_body_bytes = 10;
    s = server_start(&o, web_routes);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /nowhere/%41 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(header_is(&r, "Content-Type", "application/json"));
    CHECK(body_is(&r, "{\"error\": 404, \"path\": \"/nowhere/A\"}"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "DELETE /etag HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 405);
    CHECK(header_is(&r, "Allow", "GET, HEAD"));
    CHECK(body_is(&r, "{\"error\": 405, \"path\": \"/etag\"}"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /teapot HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "{\"error\": 422, \"path\": \"/teapot\"}"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "POST /args HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(body_is(&r, "{\"error\": 413, \"path\": \"/args\"}"));
    CHECK(header_is(&r, "Connection", "close"));
    resp_free(&r);
    CHECK_EQ_INT(GET(g_hook_calls), 4);
    cli_close(c);
    server_stop(s);
}

/* A catch-all route for a custom 404 answers what no route does, and does
 * not take the HEAD requests of the GET routes before it. */
TEST(catch_all_route_keeps_head_of_get_routes) {
    server *s = server_start(NULL, web_routes_catchall);
    client *c = cli_open(s->port);
    response r;
    REQUIRE(cli_sends(c, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Content-Length", "13"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /missing HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(body_is(&r, "custom 404 for GET /missing"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* ETag, Last-Modified, 304                                            */
/* ------------------------------------------------------------------ */

TEST(etag_and_if_none_match_give_304) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    char tag[64], req[256];
    REQUIRE(roundtrip(c, "GET /etag HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    REQUIRE(resp_header(&r, "ETag") != NULL);
    snprintf(tag, sizeof tag, "%s", resp_header(&r, "ETag"));
    CHECK(tag[0] == '"' && strlen(tag) == 18);
    resp_free(&r);
    /* the same body, the same tag */
    REQUIRE(roundtrip(c, "GET /etag HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(header_is(&r, "ETag", tag));
    resp_free(&r);
    snprintf(req, sizeof req, "GET /etag HTTP/1.1\r\nHost: t\r\nIf-None-Match: %s\r\n\r\n", tag);
    REQUIRE(roundtrip(c, req, &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    CHECK_EQ_INT(r.body_len, 0);
    CHECK(header_is(&r, "ETag", tag));
    resp_free(&r);
    snprintf(req, sizeof req, "GET /etag HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"other\", W/%s\r\n\r\n", tag);
    REQUIRE(roundtrip(c, req, &r) == 0);
    CHECK_EQ_INT(r.status, 304); /* weak comparison, in a list */
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /etag HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /etag HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"nope\"\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "same body"));
    resp_free(&r);
    /* HEAD too; the opted-out route has no ETag */
    snprintf(req, sizeof req, "HEAD /etag HTTP/1.1\r\nHost: t\r\nIf-None-Match: %s\r\n\r\n", tag);
    REQUIRE(cli_sends(c, req) == 0);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 304);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /noetag HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(resp_header(&r, "ETag") == NULL);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

TEST(last_modified_and_if_modified_since) {
    server *s = server_start(NULL, web_routes);
    client *c = cli_open(s->port);
    response r;
    REQUIRE(roundtrip(c, "GET /lastmod HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
                      &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /lastmod HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sat, 05 Nov 1994 08:49:37 GMT\r\n\r\n",
                      &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "dated"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /lastmod HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: yesterday\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200); /* not a date: ignored */
    resp_free(&r);
    cli_close(c);
    server_stop(s);
}

/* ------------------------------------------------------------------ */
/* The access log, JSON                                                */
/* ------------------------------------------------------------------ */

TEST(access_log_once_per_request_in_combined_format) {
    tn_http_server_opts o;
    server *s;
    client *c;
    response r;
    char line[1024];
    int i, n = 0;
    memset(&o, 0, sizeof o);
    o.on_access = access_hook;
    s = server_start(&o, web_routes);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /hello?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: ua/1\r\nReferer: http://r/\r\n\r\n", &r) == 0);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    resp_free(&r);
    for (i = 0; i < 100 && (n = log_count(line, sizeof line)) < 2; i++) sleep_ms(10);
    CHECK_EQ_INT(n, 2);
    CHECK(strncmp(line, "127.0.0.1 - - [", 15) == 0);
    CHECK(strstr(line, "] \"GET /nowhere HTTP/1.1\" 404 14 \"-\" \"-\"") != NULL);
    cli_close(c);
    server_stop(s);
}

/* A head that does not parse is logged too (nginx: "-" for its request
 * line), and a server's own error answer with the bytes of its body; the
 * combined line keeps snprintf's contract when cut. */
TEST(access_log_has_unparsed_heads_and_error_bodies) {
    tn_http_server_opts o;
    server *s;
    client *c;
    response r;
    char line[1024], small[24];
    tn_http_access e;
    int i, n = 0;
    size_t need;
    memset(&o, 0, sizeof o);
    o.on_access = access_hook;
    o.max_body_bytes = 10;
    s = server_start(&o, web_routes);
    g_log_n = 0;
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GARBAGE\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    resp_free(&r);
    cli_close(c);
    for (i = 0; i < 100 && (n = log_count(line, sizeof line)) < 1; i++) sleep_ms(10);
    CHECK_EQ_INT(n, 1);
    CHECK(strstr(line, "] \"-\" 400 16 \"-\" \"-\"") != NULL); /* "400 Bad Request\n" */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "POST /args HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    cli_close(c);
    for (i = 0; i < 100 && (n = log_count(line, sizeof line)) < 2; i++) sleep_ms(10);
    CHECK_EQ_INT(n, 2);
    CHECK(strstr(line, "] \"POST /args HTTP/1.1\" 413 22 ") != NULL); /* "413 Content Too Large\n" */
    server_stop(s);
    memset(&e, 0, sizeof e);
    e.method = "GET";
    e.target = "/a-long-target";
    e.version_minor = 1;
    e.status = 200;
    need = tn_http_access_combined(&e, line, sizeof line);
    CHECK_EQ_INT(need, strlen(line));
    CHECK_EQ_INT(tn_http_access_combined(&e, small, sizeof small), need);
    CHECK(strlen(small) == sizeof small - 1 && memcmp(small, line, sizeof small - 1) == 0);
    CHECK_EQ_INT(tn_http_access_combined(&e, NULL, 0), need);
    /* Any int for the version, whole (it was cut at 7 digits). */
    e.version_minor = -2147483647 - 1;
    tn_http_access_combined(&e, line, sizeof line);
    CHECK(strstr(line, "\"GET /a-long-target HTTP/1.-2147483648\" 200 ") != NULL);
    /* An entry of the caller's with NULL strings (a zeroed struct) is
     * formatted, not a crash; no method means no request line. */
    memset(&e, 0, sizeof e);
    e.status = 400;
    tn_http_access_combined(&e, line, sizeof line);
    CHECK(strcmp(line, "- - - [01/Jan/1970:00:00:00 +0000] \"-\" 400 0 \"-\" \"-\"") == 0);
    e.target = "/x";
    tn_http_access_combined(&e, line, sizeof line);
    CHECK(strstr(line, "] \"-\" 400 ") != NULL); /* not "-/x" */
}

TEST(json_escape_is_rfc8259) {
    char out[64];
    size_t n = tn_json_escape(out, sizeof out, "a\"b\\c\n\x01\xc3\xa9", 9);
    CHECK_EQ_INT(n, strlen("\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\""));
    CHECK(strcmp(out, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"") == 0);
    /* snprintf rules: the length it needs, the output cut with a NUL */
    CHECK_EQ_INT(tn_json_escape(out, 4, "abcdef", 6), 8);
    CHECK(strcmp(out, "\"ab") == 0);
    CHECK_EQ_INT(tn_json_escape(NULL, 0, "x", 1), 3);
}

/* The multipart parser alone: the same events, with the same bytes, for
 * every split of the body in two and for one byte per call. */
struct mp_rec {
    char out[2048];
    size_t n;
};
static int mp_rec_fn(void *arg, int event, const tn_http_part *part, const char *data, size_t len) {
    struct mp_rec *m = (struct mp_rec *)arg;
    if (event == TN_MP_BEGIN)
        m->n += (size_t)snprintf(m->out + m->n, sizeof m->out - m->n, "<%s|%s|%s>", part->name,
                                 part->filename ? part->filename : "", part->content_type ? part->content_type : "");
    else if (event == TN_MP_DATA) {
        memcpy(m->out + m->n, data, len);
        m->n += len;
    } else
        m->n += (size_t)snprintf(m->out + m->n, sizeof m->out - m->n, "</>");
    return 0;
}
static int mp_run(const char *body, size_t len, size_t cut, int bytewise, struct mp_rec *m) {
    tn_multipart mp;
    size_t i;
    int rc;
    memset(m, 0, sizeof *m);
    if ((rc = tn_multipart_begin(&mp, "multipart/form-data; boundary=\"XyZ\"")) != 0) return rc;
    if (bytewise) {
        for (i = 0; i < len; i++)
            if ((rc = tn_multipart_feed(&mp, body + i, 1, mp_rec_fn, m)) != 0) return rc;
    } else {
        if ((rc = tn_multipart_feed(&mp, body, cut, mp_rec_fn, m)) != 0) return rc;
        if ((rc = tn_multipart_feed(&mp, body + cut, len - cut, mp_rec_fn, m)) != 0) return rc;
    }
    return tn_multipart_end(&mp);
}
TEST(multipart_parser_gives_the_same_events_for_any_split) {
    struct mp_rec whole, part;
    size_t len = strlen(MP_BODY), cut;
    const char *want = "<a||>one</><f|hi \"there\".txt|text/plain>line1\r\n--XyNotTheBoundary\r\nline2</><a||>two</>";
    int bad = 0;
    CHECK_EQ_INT(mp_run(MP_BODY, len, len, 0, &whole), 0);
    CHECK(whole.n == strlen(want) && memcmp(whole.out, want, whole.n) == 0);
    for (cut = 0; cut <= len; cut++) {
        if (mp_run(MP_BODY, len, cut, 0, &part) != 0 || part.n != whole.n || memcmp(part.out, whole.out, whole.n) != 0) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(mp_run(MP_BODY, len, 0, 1, &part), 0);
    CHECK(part.n == whole.n && memcmp(part.out, whole.out, whole.n) == 0);
    /* cut short: no closing delimiter */
    CHECK_EQ_INT(mp_run(MP_BODY, len - 12, len - 12, 0, &part), TN_EMALFORMED);
    {
        static tn_multipart mp;
        CHECK_EQ_INT(tn_multipart_begin(&mp, "text/plain"), TN_EMALFORMED);
        CHECK_EQ_INT(tn_multipart_begin(&mp, "multipart/form-data"), TN_EMALFORMED); /* no boundary */
    }
}

/* ------------------------------------------------------------------ */
/* Static files                                                        */
/* ------------------------------------------------------------------ */

static char g_root[256], g_outside[256];
static void put_file(const char *dir, const char *name, const char *data, size_t n) {
    char p[512];
    FILE *f;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    f = fopen(p, "wb");
    REQUIRE(f != NULL);
    REQUIRE(fwrite(data, 1, n, f) == n);
    fclose(f);
}
static void static_routes(tn_http_server *srv) {
    tn_http_static_opts o;
    memset(&o, 0, sizeof o);
    o.max_age = 3600;
    REQUIRE(tn_http_static(srv, "/static/", g_root, &o) == 0);
    REQUIRE(tn_http_static(srv, "/bad/", "/nonexistent/dir", NULL) == TN_EINVAL);
}
static void make_site(void) {
    char p[512];
    snprintf(g_root, sizeof g_root, "/tmp/tn-static-%d", (int)getpid());
    snprintf(g_outside, sizeof g_outside, "/tmp/tn-outside-%d", (int)getpid());
    REQUIRE(mkdir(g_root, 0755) == 0 && mkdir(g_outside, 0755) == 0);
    put_file(g_root, "a.txt", "0123456789abcdefghij", 20);
    put_file(g_root, "page.html", "<p>hi</p>", 9);
    put_file(g_root, "data.bin", "\x00\x01\x02", 3);
    put_file(g_outside, "secret", "secret", 6);
    snprintf(p, sizeof p, "%s/sub", g_root);
    REQUIRE(mkdir(p, 0755) == 0);
    put_file(p, "index.html", "<h1>index</h1>", 14);
    snprintf(p, sizeof p, "%s/noindex", g_root);
    REQUIRE(mkdir(p, 0755) == 0);
    snprintf(p, sizeof p, "%s/link", g_root);
    REQUIRE(symlink(g_outside, p) == 0);
    snprintf(p, sizeof p, "%s/inlink.txt", g_root);
    REQUIRE(symlink("a.txt", p) == 0);
}
static void remove_site(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", g_root, g_outside);
    CHECK_EQ_INT(system(cmd), 0);
}

TEST(static_files_types_conditionals_and_ranges) {
    server *s;
    client *c;
    response r;
    char tag[64], lm[64], req[256];
    make_site();
    s = server_start(NULL, static_routes);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "0123456789abcdefghij"));
    CHECK(header_is(&r, "Content-Type", "text/plain; charset=utf-8"));
    CHECK(header_is(&r, "Accept-Ranges", "bytes"));
    CHECK(header_is(&r, "Cache-Control", "max-age=3600"));
    REQUIRE(resp_header(&r, "ETag") && resp_header(&r, "Last-Modified"));
    snprintf(tag, sizeof tag, "%s", resp_header(&r, "ETag"));
    snprintf(lm, sizeof lm, "%s", resp_header(&r, "Last-Modified"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/page.html HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(header_is(&r, "Content-Type", "text/html; charset=utf-8"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/data.bin HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(header_is(&r, "Content-Type", "application/octet-stream"));
    CHECK_EQ_INT(r.body_len, 3);
    resp_free(&r);
    snprintf(req, sizeof req, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: %s\r\n\r\n", tag);
    REQUIRE(roundtrip(c, req, &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    CHECK_EQ_INT(r.body_len, 0);
    resp_free(&r);
    snprintf(req, sizeof req, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: %s\r\n\r\n", lm);
    REQUIRE(roundtrip(c, req, &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=2-5\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 206);
    CHECK(body_is(&r, "2345"));
    CHECK(header_is(&r, "Content-Range", "bytes 2-5/20"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=-3\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 206);
    CHECK(body_is(&r, "hij"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=15-\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "fghij"));
    CHECK(header_is(&r, "Content-Range", "bytes 15-19/20"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=10-1000\r\n\r\n", &r) == 0);
    CHECK(header_is(&r, "Content-Range", "bytes 10-19/20"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=20-\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 416);
    CHECK(header_is(&r, "Content-Range", "bytes */20"));
    resp_free(&r);
    /* several ranges: the whole file; a number past 2^64 is past the end
     * (a first byte there: 416; a last byte there: to the end) */
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1,4-5\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 20);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=99999999999999999999999-\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 416);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=2-99999999999999999999999\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 206);
    CHECK_EQ_INT(r.body_len, 18);
    resp_free(&r);
    /* If-Range with another tag: the whole file */
    REQUIRE(roundtrip(c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\nIf-Range: \"old\"\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    REQUIRE(cli_sends(c, "HEAD /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Content-Length", "20"));
    CHECK_EQ_INT(r.body_len, 0);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
    remove_site();
}

TEST(static_files_safe_paths) {
    static const struct {
        const char *target;
        int status;
    } cases[] = {
        {"/static/../etc/passwd", 404},      {"/static/%2e%2e/etc/passwd", 404}, {"/static/sub/../a.txt", 404},
        {"/static//a.txt", 404},             {"/static/./a.txt", 404},           {"/static/a.txt%00.png", 400},
        {"/static/link/secret", 403},        {"/static/missing", 404},           {"/static/sub/", 200},
        {"/static/sub", 301},                {"/static/noindex/", 403},          {"/static/inlink.txt", 200},
        {"/static/%2e%2e%2fa.txt", 404},     {"/static/..%2f..%2fetc%2fpasswd", 404},
    };
    server *s;
    client *c;
    response r;
    char req[256];
    size_t i;
    make_site();
    s = server_start(NULL, static_routes);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c = cli_open(s->port);
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", cases[i].target);
        REQUIRE(roundtrip(c, req, &r) == 0);
        CHECK_EQ_INT(r.status, cases[i].status);
        if (r.status != cases[i].status) fprintf(stderr, "    %s -> %d\n", cases[i].target, r.status);
        if (r.status == 200) CHECK(r.body_len == 14 || r.body_len == 20);
        if (r.status == 301) CHECK(header_is(&r, "Location", "/static/sub/"));
        CHECK(!(r.body_len == 6 && memcmp(r.body, "secret", 6) == 0));
        resp_free(&r);
        cli_close(c);
    }
    /* the directory's redirect keeps the query, and the raw (encoded) path */
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /static/s%75b?a=1&b=%20 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 301);
    CHECK(header_is(&r, "Location", "/static/s%75b/?a=1&b=%20"));
    resp_free(&r);
    cli_close(c);
    server_stop(s);
    remove_site();
}

/* A 64 MiB file, whole and as a range: every byte right (sent with
 * sendfile by reference: no copy in user space). */
TEST(static_large_file_whole_and_ranged) {
    server *s;
    client *c;
    response r;
    size_t n = 64u << 20, i, bad = 0;
    char *data = (char *)malloc(n), p[512];
    FILE *f;
    make_site();
    REQUIRE(data != NULL);
    for (i = 0; i < n; i++) data[i] = (char)((i * 2654435761u) >> 24);
    snprintf(p, sizeof p, "%s/big.bin", g_root);
    f = fopen(p, "wb");
    REQUIRE(f && fwrite(data, 1, n, f) == n);
    fclose(f);
    s = server_start(NULL, static_routes);
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, n);
    for (i = 0; i < r.body_len && i < n; i++) bad += r.body[i] != data[i];
    CHECK_EQ_INT(bad, 0);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /static/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=50000000-50000099\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 206);
    CHECK(r.body_len == 100 && memcmp(r.body, data + 50000000, 100) == 0);
    resp_free(&r);
    cli_close(c);
    server_stop(s);
    free(data);
    remove_site();
}

/* ------------------------------------------------------------------ */
/* The response cache                                                  */
/* ------------------------------------------------------------------ */

static int g_calls;
static tn_cache *g_cache;
static void h_counted(tn_http_request *req, void *arg) {
    char out[128];
    int n = __atomic_add_fetch(&g_calls, 1, __ATOMIC_SEQ_CST);
    const char *lang = tn_http_get_header(req, "Accept-Language");
    (void)arg;
    n = snprintf(out, sizeof out, "answer %d lang=%s", n, lang ? lang : "-");
    if (tn_http_query(req, "cookie")) tn_http_set_cookie(req, "c", "1", NULL);
    tn_http_respond(req, tn_http_query(req, "missing") ? 404 : 200, "text/x-test", out, (size_t)n);
}
struct cached_co {
    tn_http_co h;
};
static int co_counted(tn_co *co) {
    struct cached_co *f = (struct cached_co *)co;
    char out[64];
    int n;
    TN_BEGIN(co);
    TN_SLEEP(co, 2);
    n = snprintf(out, sizeof out, "co %d", __atomic_add_fetch(&g_calls, 1, __ATOMIC_SEQ_CST));
    tn_http_respond(f->h.req, 200, NULL, out, (size_t)n);
    TN_END(co);
}
static void cache_routes(tn_http_server *srv) {
    tn_http_route_opts o, co;
    REQUIRE(tn_cache_new(tn_http_server_loop(srv), NULL, &g_cache) == 0);
    memset(&o, 0, sizeof o);
    o.cache = g_cache;
    o.cache_ttl_ms = 300;
    o.cache_vary = "Accept-Language";
    co = o;
    co.frame_size = sizeof(struct cached_co);
    REQUIRE(tn_http_route(srv, "GET", "/c", h_counted, NULL, &o) == 0);
    REQUIRE(tn_http_route_co(srv, "GET", "/co", co_counted, NULL, &co) == 0);
}
static void free_cache(server *s, void *arg) {
    (void)s;
    (void)arg;
    tn_cache_free(g_cache);
    g_cache = NULL;
}
static void drop_cache_key(server *s, void *arg) {
    (void)s;
    tn_future_release(tn_cache_delete_prefix(g_cache, (const char *)arg));
}

TEST(route_response_cache_keys_vary_ttl_and_invalidation) {
    server *s = server_start(NULL, cache_routes);
    client *c;
    response r;
    char etag[64], req[256];
    c = cli_open(s->port);
    REQUIRE(roundtrip(c, "GET /c?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "answer 1 lang=-"));
    CHECK(header_is(&r, "Cache-Control", "max-age=0")); /* 300 ms, in whole seconds */
    snprintf(etag, sizeof etag, "%s", resp_header(&r, "ETag") ? resp_header(&r, "ETag") : "");
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /c?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "answer 1 lang=-")); /* from the cache: the handler did not run */
    CHECK(header_is(&r, "Content-Type", "text/x-test"));
    CHECK(header_is(&r, "ETag", etag));
    resp_free(&r);
    snprintf(req, sizeof req, "GET /c?x=1 HTTP/1.1\r\nHost: t\r\nIf-None-Match: %s\r\n\r\n", etag);
    REQUIRE(roundtrip(c, req, &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    resp_free(&r);
    REQUIRE(cli_sends(c, "HEAD /c?x=1 HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    REQUIRE(read_response(c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Content-Length", "15"));
    resp_free(&r);
    CHECK_EQ_INT(GET(g_calls), 1);
    /* another query, another Accept-Language: other keys */
    REQUIRE(roundtrip(c, "GET /c?x=2 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "answer 2 lang=-"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /c?x=1 HTTP/1.1\r\nHost: t\r\nAccept-Language: fr\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "answer 3 lang=fr"));
    resp_free(&r);
    /* never kept: a 404, a Set-Cookie */
    REQUIRE(roundtrip(c, "GET /c?missing=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /c?missing=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /c?cookie=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /c?cookie=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    resp_free(&r);
    CHECK_EQ_INT(GET(g_calls), 7);
    /* invalidation, then the TTL */
    on_loop(s, drop_cache_key, (void *)"tn:http /c?x=1");
    REQUIRE(roundtrip(c, "GET /c?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "answer 8 lang=-"));
    resp_free(&r);
    sleep_ms(400);
    REQUIRE(roundtrip(c, "GET /c?x=2 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "answer 9 lang=-"));
    resp_free(&r);
    /* a coroutine route */
    REQUIRE(roundtrip(c, "GET /co HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "co 10"));
    resp_free(&r);
    REQUIRE(roundtrip(c, "GET /co HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CHECK(body_is(&r, "co 10"));
    resp_free(&r);
    cli_close(c);
    on_loop(s, free_cache, NULL);
    server_stop(s);
}
