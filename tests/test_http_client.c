/* The HTTP client (tn_http_fetch), from the outside.
 *
 * Most tests talk to a scripted raw server: a pthread with blocking sockets
 * on 127.0.0.1 that reads each request head (and body) and answers with
 * canned bytes, split into separate writes where the split matters. It
 * counts the connections it accepted and logs every request it read, so a
 * test can tell a reused connection from a new one and a retried request
 * from a single one. The client runs its own loop on the test thread.
 * The last tests start real servers (nginx, Python's http.server, Python
 * Tornado) as child processes, and run Tornado's AsyncHTTPClient against
 * examples/httpbin; a missing tool is a SKIP (a failure under CI=true).
 * Nothing asserts a timing: sleeps only separate writes or give a wrong
 * client the chance to do the wrong thing; every wait has a deadline, so a
 * client that hangs fails its test instead of the run. */
#include "../tornado.h"
#include "tn_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define SET(var, v) __atomic_store_n(&(var), (v), __ATOMIC_SEQ_CST)
#define GET(var) __atomic_load_n(&(var), __ATOMIC_SEQ_CST)

static void sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* The scripted raw server                                             */
/* ------------------------------------------------------------------ */

#define RAW_MAXC 16
#define RAW_MAXLOG 64

typedef struct rawsrv rawsrv;
/* Serves one accepted connection (its index: 0 for the first accepted);
 * the connection is closed when it returns. */
typedef void (*raw_conn_fn)(rawsrv *rs, int fd, int idx);

typedef struct rreq {
    char method[16];
    char target[512];
    char head[16384];
    size_t head_len;
    char body[8192];
    size_t body_len;
    long cl; /* Content-Length, -1 when absent */
} rreq;

struct rawsrv {
    int lfd, port;
    raw_conn_fn fn;
    void *arg;
    int (*route)(rawsrv *rs, int fd, rreq *r); /* for router_conn */
    pthread_t accept_thr;
    pthread_t conn_thr[RAW_MAXC];
    int conn_fd[RAW_MAXC];
    int nconn; /* connections accepted (atomic) */
    int stop;
    pthread_mutex_t mu;
    char log[RAW_MAXLOG][600]; /* "METHOD target cl=N" per request read */
    int nlog;
};

struct raw_conn_arg {
    rawsrv *rs;
    int fd, idx;
};

static void *raw_conn_main(void *arg) {
    struct raw_conn_arg a = *(struct raw_conn_arg *)arg;
    free(arg);
    a.rs->fn(a.rs, a.fd, a.idx);
    pthread_mutex_lock(&a.rs->mu);
    a.rs->conn_fd[a.idx] = -1;
    close(a.fd);
    pthread_mutex_unlock(&a.rs->mu);
    return NULL;
}

static void *raw_accept_main(void *arg) {
    rawsrv *rs = (rawsrv *)arg;
    while (!GET(rs->stop)) {
        struct pollfd p;
        struct raw_conn_arg *ca;
        struct timeval tv;
        int fd, idx;
        p.fd = rs->lfd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, 20) <= 0) continue;
        fd = accept(rs->lfd, NULL, NULL);
        if (fd < 0) continue;
        tv.tv_sec = 5; /* a stalled script ends on its own */
        tv.tv_usec = 0;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        idx = GET(rs->nconn);
        if (idx >= RAW_MAXC) {
            close(fd);
            continue;
        }
        ca = (struct raw_conn_arg *)malloc(sizeof *ca);
        ca->rs = rs;
        ca->fd = fd;
        ca->idx = idx;
        pthread_mutex_lock(&rs->mu);
        rs->conn_fd[idx] = fd;
        pthread_mutex_unlock(&rs->mu);
        /* counted before the script runs: a test that saw its answer
         * must also see the connection counted */
        SET(rs->nconn, idx + 1);
        if (pthread_create(&rs->conn_thr[idx], NULL, raw_conn_main, ca) != 0) abort();
    }
    return NULL;
}

typedef int (*route_fn)(rawsrv *rs, int fd, rreq *r);
static rawsrv *raw_start_route(raw_conn_fn fn, void *arg, route_fn route) {
    rawsrv *rs = (rawsrv *)calloc(1, sizeof *rs);
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    int one = 1, i;
    REQUIRE(rs != NULL);
    rs->fn = fn;
    rs->arg = arg;
    rs->route = route;
    for (i = 0; i < RAW_MAXC; i++) rs->conn_fd[i] = -1;
    pthread_mutex_init(&rs->mu, NULL);
    rs->lfd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(rs->lfd >= 0);
    setsockopt(rs->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(rs->lfd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(listen(rs->lfd, 64) == 0);
    REQUIRE(getsockname(rs->lfd, (struct sockaddr *)&a, &sl) == 0);
    rs->port = ntohs(a.sin_port);
    REQUIRE(pthread_create(&rs->accept_thr, NULL, raw_accept_main, rs) == 0);
    return rs;
}
static rawsrv *raw_start(raw_conn_fn fn, void *arg) { return raw_start_route(fn, arg, NULL); }

/* Stops accepting, wakes every script still reading, joins them all. */
static void raw_stop(rawsrv *rs) {
    int i, n;
    SET(rs->stop, 1);
    pthread_join(rs->accept_thr, NULL);
    n = GET(rs->nconn);
    pthread_mutex_lock(&rs->mu);
    for (i = 0; i < n; i++)
        if (rs->conn_fd[i] >= 0) shutdown(rs->conn_fd[i], SHUT_RDWR);
    pthread_mutex_unlock(&rs->mu);
    for (i = 0; i < n; i++) pthread_join(rs->conn_thr[i], NULL);
    close(rs->lfd);
    pthread_mutex_destroy(&rs->mu);
    free(rs);
}

static int raw_nlog(rawsrv *rs) {
    int n;
    pthread_mutex_lock(&rs->mu);
    n = rs->nlog;
    pthread_mutex_unlock(&rs->mu);
    return n;
}

/* The i-th request line the server read ("" if none), copied into out. */
static const char *raw_log(rawsrv *rs, int i, char *out, size_t cap) {
    pthread_mutex_lock(&rs->mu);
    snprintf(out, cap, "%s", i < rs->nlog ? rs->log[i] : "");
    pthread_mutex_unlock(&rs->mu);
    return out;
}

/* Reads one request (head byte by byte, then a Content-Length body).
 * Returns 0, or -1 if the peer closed or timed out first. */
static int rd_req(rawsrv *rs, int fd, rreq *r) {
    const char *p;
    memset(r, 0, sizeof *r);
    r->cl = -1;
    while (r->head_len < 4 || memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4) != 0) {
        ssize_t n;
        if (r->head_len + 1 >= sizeof r->head) return -1;
        n = recv(fd, r->head + r->head_len, 1, 0);
        if (n <= 0) return -1;
        r->head_len++;
    }
    r->head[r->head_len] = 0;
    if (sscanf(r->head, "%15s %511s", r->method, r->target) != 2) return -1;
    p = strcasestr(r->head, "\r\nContent-Length:");
    if (p) r->cl = strtol(p + 17, NULL, 10);
    if (r->cl > 0) {
        if ((size_t)r->cl >= sizeof r->body) return -1;
        while (r->body_len < (size_t)r->cl) {
            ssize_t n = recv(fd, r->body + r->body_len, (size_t)r->cl - r->body_len, 0);
            if (n <= 0) return -1;
            r->body_len += (size_t)n;
        }
    }
    pthread_mutex_lock(&rs->mu);
    if (rs->nlog < RAW_MAXLOG)
        snprintf(rs->log[rs->nlog++], sizeof rs->log[0], "%s %s cl=%ld", r->method, r->target, r->cl);
    pthread_mutex_unlock(&rs->mu);
    return 0;
}

static void snd_n(int fd, const char *s, size_t n) {
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0) return; /* the client may have left: that is its right */
        s += k;
        n -= (size_t)k;
    }
}
static void snd(int fd, const char *s) { snd_n(fd, s, strlen(s)); }

/* Each piece in its own write, 10 ms apart: they arrive as separate reads. */
static void snd_parts(int fd, const char *const *parts) {
    for (; *parts; parts++) {
        snd(fd, *parts);
        sleep_ms(10);
    }
}

/* Waits until the client closes (or 5 s pass): a server that stalls. */
static void wait_close(int fd) {
    char b[4096];
    while (recv(fd, b, sizeof b, 0) > 0) {
    }
}

/* Closes with a reset (linger 0) instead of a FIN. */
static void set_rst(int fd) {
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

/* A server whose answers depend only on the request: route() writes the
 * response and returns 0 to keep the connection, 1 to close it. */
static void router_conn(rawsrv *rs, int fd, int idx) {
    rreq *r = (rreq *)malloc(sizeof *r);
    (void)idx;
    while (rd_req(rs, fd, r) == 0)
        if (rs->route(rs, fd, r)) break;
    free(r);
}

static rawsrv *raw_router(route_fn route) { return raw_start_route(router_conn, NULL, route); }

static void respond(int fd, int status, const char *extra, const char *body) {
    char head[1024];
    snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Length: %lu\r\n%s\r\n", status,
             (unsigned long)strlen(body), extra ? extra : "");
    snd(fd, head);
    snd(fd, body);
}

/* ------------------------------------------------------------------ */
/* The client side                                                     */
/* ------------------------------------------------------------------ */

typedef struct cli {
    tn_loop *loop;
    tn_http_client *c;
} cli;

static void cli_new(cli *k, const tn_http_client_opts *o) {
    REQUIRE(test_loop_new(&k->loop, NULL) == 0);
    REQUIRE(tn_http_client_new(k->loop, o, &k->c) == 0);
}

/* Frees the client and checks it left nothing in the loop. */
static void cli_free(cli *k) {
    tn_loop_stats st;
    tn_http_client_free(k->c);
    tn_loop_get_stats(k->loop, &st);
    CHECK_EQ_INT(st.handlers, 0);
    CHECK_EQ_INT(st.timers, 0);
    tn_loop_free(k->loop);
}

static void url_of(char *out, size_t cap, int port, const char *path) {
    snprintf(out, cap, "http://127.0.0.1:%d%s", port, path);
}

/* Fetches path from port; returns the error, *out the response (or NULL). */
static int fetch(cli *k, int port, const char *path, const tn_http_fetch_opts *o, tn_http_response **out) {
    char url[600];
    void *v = NULL;
    int rc;
    url_of(url, sizeof url, port, path);
    rc = tn_run_sync(k->loop, tn_http_fetch(k->c, url, o), 20000, &v);
    *out = (tn_http_response *)v;
    if (rc && v) CHECK(!"a failed fetch gave a response");
    return rc;
}

/* Fetches and expects status and body; frees the response. */
static void fetch_ok(cli *k, int port, const char *path, const tn_http_fetch_opts *o, int status, const char *body) {
    tn_http_response *r = NULL;
    int rc = fetch(k, port, path, o, &r);
    CHECK_EQ_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "    fetch %s: %s\n", path, tn_strerror(rc));
        return;
    }
    CHECK_EQ_INT(r->status, status);
    if (body) {
        CHECK_EQ_INT(r->body_len, strlen(body));
        CHECK(r->body && strcmp(r->body, body) == 0);
        if (!r->body || strcmp(r->body, body) != 0)
            fprintf(stderr, "    %s: body \"%s\", want \"%s\"\n", path, r->body ? r->body : "(null)", body);
    }
    tn_http_response_free(r);
}

static void run_for(cli *k, int ms) { tn_run_sync(k->loop, tn_sleep(k->loop, (uint64_t)ms), 0, NULL); }

/* Runs the client's loop until the raw server has read n requests (or
 * 10 s pass, and the caller's check fails). */
static void run_until_nlog(cli *k, rawsrv *rs, int n) {
    int i;
    for (i = 0; i < 1000 && raw_nlog(rs) < n; i++) tn_loop_step(k->loop, 10);
}

/* Runs the client's loop until it watches no fd: its pooled connections
 * are all closed (or 10 s pass). */
static void run_until_no_handlers(cli *k) {
    tn_loop_stats st;
    int i;
    for (i = 0; i < 1000; i++) {
        tn_loop_get_stats(k->loop, &st);
        if (!st.handlers) return;
        tn_loop_step(k->loop, 10);
    }
}

/* ------------------------------------------------------------------ */
/* Framing: chunked, close-delimited, 1xx, bodiless responses          */
/* ------------------------------------------------------------------ */

static void chunked_conn(rawsrv *rs, int fd, int idx) {
    static const char *const parts[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n",
        "5;name=value\r\nhello\r\n",
        "7;quoted=\"a;b\\\"c\";flag\r\n, world\r\n",
        "1\r\n!\r\n1",         /* a chunk size split over two reads: 0x10 */
        "0\r\n0123456789abcdef\r\n",
        "0;last=1\r\nX-Trailer: done\r\n", /* trailers, split mid-section */
        "X-Another: 2\r\n\r\n",
        NULL};
    rreq r;
    (void)idx;
    if (rd_req(rs, fd, &r)) return;
    snd_parts(fd, parts);
    /* the same connection serves the next request: the trailers and the
     * final CRLF must have been consumed, not left to corrupt it */
    if (rd_req(rs, fd, &r)) return;
    respond(fd, 200, NULL, "next");
    wait_close(fd);
}

TEST(client_chunked_with_extensions_and_trailers) {
    rawsrv *rs = raw_start(chunked_conn, NULL);
    cli k;
    tn_http_response *r;
    int rc;
    cli_new(&k, NULL);
    rc = fetch(&k, rs->port, "/chunked", NULL, &r);
    REQUIRE(rc == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->body_len, 29);
    CHECK(strcmp(r->body, "hello, world!0123456789abcdef") == 0);
    CHECK(tn_http_response_header(r, "transfer-encoding") != NULL);
    CHECK(strcmp(tn_http_response_header(r, "Content-Type"), "text/plain") == 0);
    tn_http_response_free(r);
    fetch_ok(&k, rs->port, "/next", NULL, 200, "next");
    CHECK_EQ_INT(GET(rs->nconn), 1); /* kept alive and reused */
    cli_free(&k);
    raw_stop(rs);
}

/* Streaming mode: the pieces go to on_chunk, the body stays empty. */
struct chunks {
    char buf[256];
    size_t len;
    int calls;
};
static int on_chunk(const char *data, size_t len, void *arg) {
    struct chunks *c = (struct chunks *)arg;
    c->calls++;
    if (c->len + len >= sizeof c->buf) return TN_ETOOLARGE;
    memcpy(c->buf + c->len, data, len);
    c->len += len;
    c->buf[c->len] = 0;
    return 0;
}

TEST(client_chunked_streaming_on_chunk) {
    rawsrv *rs = raw_start(chunked_conn, NULL);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    struct chunks ch;
    memset(&o, 0, sizeof o);
    memset(&ch, 0, sizeof ch);
    o.on_chunk = on_chunk;
    o.chunk_arg = &ch;
    cli_new(&k, NULL);
    REQUIRE(fetch(&k, rs->port, "/chunked", &o, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->body_len, 0);
    CHECK(r->body != NULL && r->body[0] == 0);
    CHECK(strcmp(ch.buf, "hello, world!0123456789abcdef") == 0);
    CHECK(ch.calls >= 2); /* the pieces came in separate reads */
    tn_http_response_free(r);
    cli_free(&k);
    raw_stop(rs);
}

static void close_delimited_conn(rawsrv *rs, int fd, int idx) {
    static const char *const p0[] = {"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", "part one, ", "part two",
                                     NULL};
    static const char *const p1[] = {"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n", "ten bytes!", NULL};
    rreq r;
    if (rd_req(rs, fd, &r)) return;
    snd_parts(fd, idx == 0 ? p0 : p1);
    /* the close ends the body */
}

TEST(client_close_delimited_body) {
    rawsrv *rs = raw_start(close_delimited_conn, NULL);
    cli k;
    cli_new(&k, NULL);
    fetch_ok(&k, rs->port, "/a", NULL, 200, "part one, part two");
    /* the connection could not be reused: a new one for the next */
    fetch_ok(&k, rs->port, "/b", NULL, 200, "ten bytes!");
    CHECK_EQ_INT(GET(rs->nconn), 2);
    cli_free(&k);
    raw_stop(rs);
}

static void continue_conn(rawsrv *rs, int fd, int idx) {
    static const char *const parts[] = {"HTTP/1.1 100 Continue\r\n\r\n",
                                        "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n",
                                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", NULL};
    rreq r;
    (void)idx;
    if (rd_req(rs, fd, &r)) return;
    snd_parts(fd, parts);
    if (rd_req(rs, fd, &r)) return;
    respond(fd, 200, NULL, "again");
    wait_close(fd);
}

TEST(client_skips_100_continue) {
    rawsrv *rs = raw_start(continue_conn, NULL);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    const char *hdrs[] = {"Expect: 100-continue", "Content-Type: text/plain", NULL};
    char line[600];
    memset(&o, 0, sizeof o);
    o.body = "data";
    o.body_len = 4;
    o.headers = hdrs;
    cli_new(&k, NULL);
    REQUIRE(fetch(&k, rs->port, "/continue", &o, &r) == 0);
    CHECK_EQ_INT(r->status, 200); /* the 1xx heads were skipped */
    CHECK(strcmp(r->body, "ok") == 0);
    CHECK(tn_http_response_header(r, "Link") == NULL); /* a 1xx's fields are not the response's */
    tn_http_response_free(r);
    CHECK(strcmp(raw_log(rs, 0, line, sizeof line), "POST /continue cl=4") == 0);
    fetch_ok(&k, rs->port, "/again", NULL, 200, "again");
    CHECK_EQ_INT(GET(rs->nconn), 1);
    cli_free(&k);
    raw_stop(rs);
}

/* Responses that have no body whatever their Content-Length says: the
 * client must not wait for one. The server keeps the connection open and
 * serves the next request on it. */
static int nobody_route(rawsrv *rs, int fd, rreq *r) {
    (void)rs;
    if (strcmp(r->target, "/304") == 0)
        snd(fd, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"v1\"\r\n\r\n");
    else if (strcmp(r->target, "/204") == 0)
        snd(fd, "HTTP/1.1 204 No Content\r\nX-Empty: yes\r\n\r\n");
    else if (strcmp(r->method, "HEAD") == 0 && strcmp(r->target, "/chunked") == 0)
        snd(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    else if (strcmp(r->method, "HEAD") == 0)
        snd(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n");
    else
        respond(fd, 200, NULL, r->target);
    return 0;
}

TEST(client_304_with_content_length_has_no_body) {
    rawsrv *rs = raw_router(nobody_route);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    memset(&o, 0, sizeof o);
    o.request_timeout_ms = 5000; /* waiting for 50 bytes would fail it */
    cli_new(&k, NULL);
    REQUIRE(fetch(&k, rs->port, "/304", &o, &r) == 0);
    CHECK_EQ_INT(r->status, 304);
    CHECK_EQ_INT(r->body_len, 0);
    CHECK(r->body != NULL && r->body[0] == 0); /* empty, still a string */
    CHECK(strcmp(tn_http_response_header(r, "ETag"), "\"v1\"") == 0);
    tn_http_response_free(r);
    fetch_ok(&k, rs->port, "/after-304", NULL, 200, "/after-304");
    REQUIRE(fetch(&k, rs->port, "/204", &o, &r) == 0);
    CHECK_EQ_INT(r->status, 204);
    CHECK_EQ_INT(r->body_len, 0);
    tn_http_response_free(r);
    fetch_ok(&k, rs->port, "/after-204", NULL, 200, "/after-204");
    CHECK_EQ_INT(GET(rs->nconn), 1); /* one connection throughout */
    cli_free(&k);
    raw_stop(rs);
}

TEST(client_head_with_content_length_has_no_body) {
    rawsrv *rs = raw_router(nobody_route);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    memset(&o, 0, sizeof o);
    o.method = "HEAD";
    o.request_timeout_ms = 5000;
    cli_new(&k, NULL);
    REQUIRE(fetch(&k, rs->port, "/", &o, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->body_len, 0);
    CHECK(r->body != NULL && r->body[0] == 0);
    CHECK(strcmp(tn_http_response_header(r, "Content-Length"), "1000") == 0);
    tn_http_response_free(r);
    REQUIRE(fetch(&k, rs->port, "/chunked", &o, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->body_len, 0);
    tn_http_response_free(r);
    fetch_ok(&k, rs->port, "/after-head", NULL, 200, "/after-head");
    CHECK_EQ_INT(GET(rs->nconn), 1);
    cli_free(&k);
    raw_stop(rs);
}

/* ------------------------------------------------------------------ */
/* Timeouts: each with its own error                                   */
/* ------------------------------------------------------------------ */

static void stall_conn(rawsrv *rs, int fd, int idx) {
    rreq r;
    (void)idx;
    if (rd_req(rs, fd, &r)) return;
    wait_close(fd); /* never answers */
}

TEST(client_request_timeout) {
    rawsrv *rs = raw_start(stall_conn, NULL);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    memset(&o, 0, sizeof o);
    o.request_timeout_ms = 200;
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch(&k, rs->port, "/stall", &o, &r), TN_ETIMEOUT);
    CHECK(r == NULL);
    CHECK_EQ_INT(raw_nlog(rs), 1); /* it was sent, and not retried */
    /* the client's default applies when the fetch sets none */
    cli_free(&k);
    {
        tn_http_client_opts co;
        memset(&co, 0, sizeof co);
        co.request_timeout_ms = 150;
        cli_new(&k, &co);
        CHECK_EQ_INT(fetch(&k, rs->port, "/stall", NULL, &r), TN_ETIMEOUT);
        cli_free(&k);
    }
    raw_stop(rs);
}

TEST(client_queue_timeout) {
    rawsrv *rs = raw_start(stall_conn, NULL);
    cli k;
    tn_http_client_opts co;
    tn_http_fetch_opts oa, ob;
    tn_future *fa, *fb;
    char url[600];
    void *v = NULL;
    memset(&co, 0, sizeof co);
    co.max_clients = 1;
    memset(&oa, 0, sizeof oa);
    oa.request_timeout_ms = 800;
    memset(&ob, 0, sizeof ob);
    ob.queue_timeout_ms = 150;
    ob.request_timeout_ms = 10000;
    cli_new(&k, &co);
    url_of(url, sizeof url, rs->port, "/stalled");
    fa = tn_http_fetch(k.c, url, &oa); /* takes the one connection, stalls */
    fb = tn_http_fetch(k.c, url, &ob); /* waits for it */
    REQUIRE(fa && fb);
    CHECK_EQ_INT(tn_run_sync(k.loop, fb, 20000, &v), TN_EQUEUETIMEOUT);
    CHECK(!tn_future_done(fa)); /* the first is still waiting for its answer */
    CHECK_EQ_INT(tn_run_sync(k.loop, fa, 20000, &v), TN_ETIMEOUT);
    CHECK_EQ_INT(GET(rs->nconn), 1);
    CHECK_EQ_INT(raw_nlog(rs), 1); /* the queued request never went out */
    cli_free(&k);
    raw_stop(rs);
}

/* request_timeout runs from leaving the queue: a fetch that waited longer
 * than its request timeout for a connection still succeeds. And the
 * response tells how long it waited. */
static int slow_route(rawsrv *rs, int fd, rreq *r) {
    (void)rs;
    if (strcmp(r->target, "/slow") == 0) sleep_ms(400);
    respond(fd, 200, NULL, r->target);
    return 0;
}

TEST(client_request_timeout_starts_after_the_queue) {
    rawsrv *rs = raw_router(slow_route);
    cli k;
    tn_http_client_opts co;
    tn_http_fetch_opts oa, ob;
    tn_future *fs[2];
    void *vals[2] = {NULL, NULL};
    char url[600], url2[600];
    memset(&co, 0, sizeof co);
    co.max_clients = 1;
    memset(&oa, 0, sizeof oa);
    memset(&ob, 0, sizeof ob);
    ob.request_timeout_ms = 300; /* less than it waits in the queue */
    ob.queue_timeout_ms = 10000;
    cli_new(&k, &co);
    url_of(url, sizeof url, rs->port, "/slow");
    url_of(url2, sizeof url2, rs->port, "/fast");
    fs[0] = tn_http_fetch(k.c, url, &oa);
    fs[1] = tn_http_fetch(k.c, url2, &ob);
    CHECK_EQ_INT(tn_run_sync(k.loop, tn_all(k.loop, fs, 2, vals), 20000, NULL), 0);
    if (vals[0] && vals[1]) {
        tn_http_response *a = (tn_http_response *)vals[0], *b = (tn_http_response *)vals[1];
        CHECK(strcmp(a->body, "/slow") == 0);
        CHECK(strcmp(b->body, "/fast") == 0);
        /* b could not leave the queue before a's answer, 400 ms after a
         * was sent: a lower bound that follows from the order of events */
        CHECK(b->queue_ms >= 100);
        CHECK(b->total_ms >= b->queue_ms);
        CHECK(a->queue_ms < 400);
        tn_http_response_free(a);
        tn_http_response_free(b);
    }
    CHECK_EQ_INT(GET(rs->nconn), 1);
    cli_free(&k);
    raw_stop(rs);
}

/* A connect timeout that stays on loopback: a listener whose accept queue
 * is full (backlog 0, filled by connects nobody accepts) drops new SYNs. */
#define NFILL 4
static int full_listener(int *port, int fills[NFILL]) {
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    int lfd = socket(AF_INET, SOCK_STREAM, 0), i, stuck = 0;
    REQUIRE(lfd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(listen(lfd, 0) == 0);
    REQUIRE(getsockname(lfd, (struct sockaddr *)&a, &sl) == 0);
    *port = ntohs(a.sin_port);
    for (i = 0; i < NFILL; i++) {
        struct pollfd p;
        fills[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        REQUIRE(fills[i] >= 0);
        if (connect(fills[i], (struct sockaddr *)&a, sizeof a) < 0) REQUIRE(errno == EINPROGRESS);
        p.fd = fills[i];
        p.events = POLLOUT;
        p.revents = 0;
        if (poll(&p, 1, 100) == 0) stuck++;
    }
    REQUIRE(stuck > 0); /* else SYNs are not dropped here: no timeout to test */
    return lfd;
}

TEST(client_connect_timeout) {
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    int lfd, port, fills[NFILL], i;
    lfd = full_listener(&port, fills);
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = 200;
    o.request_timeout_ms = 10000;
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch(&k, port, "/", &o, &r), TN_ECONNECTTIMEOUT);
    cli_free(&k);
    for (i = 0; i < NFILL; i++) close(fills[i]);
    close(lfd);
}

TEST(client_connect_refused_and_resolve_errors) {
    cli k;
    tn_http_response *r;
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0); /* bound, not listening */
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &sl) == 0);
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch(&k, ntohs(a.sin_port), "/", NULL, &r), TN_EREFUSED);
    {
        void *v = NULL;
        CHECK_EQ_INT(tn_run_sync(k.loop, tn_http_fetch(k.c, "http://nosuchhost.invalid/", NULL), 20000, &v),
                     TN_ERESOLVE);
    }
    cli_free(&k);
    close(fd);
}

/* ------------------------------------------------------------------ */
/* Broken responses                                                    */
/* ------------------------------------------------------------------ */

static void cut_conn(rawsrv *rs, int fd, int idx) {
    rreq r;
    if (rd_req(rs, fd, &r)) return;
    switch (idx) {
    case 0: /* Content-Length 100, 10 bytes, close */
        snd(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        break;
    case 1: /* chunked, cut inside a chunk */
        snd(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nabc");
        break;
    case 2: /* chunked, cut before the last chunk */
        snd(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
        break;
    case 3: /* cut inside the head */
        snd(fd, "HTTP/1.1 200 OK\r\nContent-Le");
        break;
    case 4: /* no answer at all on a fresh connection: not a stale one */
        break;
    case 5: /* Content-Length 100, 10 bytes, then a reset */
        snd(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        sleep_ms(20);
        set_rst(fd);
        break;
    }
    sleep_ms(20);
}

TEST(client_connection_closed_mid_body_fails) {
    rawsrv *rs = raw_start(cut_conn, NULL);
    cli k;
    tn_http_response *r;
    const char *paths[] = {"/cl", "/chunk-mid", "/chunk-last", "/head", "/nothing", "/reset"};
    int i;
    cli_new(&k, NULL);
    for (i = 0; i < 6; i++) {
        int rc = fetch(&k, rs->port, paths[i], NULL, &r);
        if (rc != TN_ECLOSED) fprintf(stderr, "    %s: %s\n", paths[i], rc ? tn_strerror(rc) : "success");
        CHECK_EQ_INT(rc, TN_ECLOSED); /* never a short body as a success */
        CHECK(r == NULL);
        if (r) tn_http_response_free(r);
    }
    CHECK_EQ_INT(GET(rs->nconn), 6); /* fresh connections are never retried */
    CHECK_EQ_INT(raw_nlog(rs), 6);
    cli_free(&k);
    raw_stop(rs);
}

static void malformed_conn(rawsrv *rs, int fd, int idx) {
    static const char *const answers[] = {
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "SPAM AND EGGS\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    };
    rreq r;
    if (rd_req(rs, fd, &r)) return;
    snd(fd, answers[idx % 5]);
    wait_close(fd); /* the error must come from parsing, not from a close */
}

TEST(client_malformed_status_line) {
    rawsrv *rs = raw_start(malformed_conn, NULL);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    int i;
    memset(&o, 0, sizeof o);
    o.request_timeout_ms = 5000;
    cli_new(&k, NULL);
    for (i = 0; i < 5; i++) {
        int rc = fetch(&k, rs->port, "/", &o, &r);
        if (rc != TN_EMALFORMED) fprintf(stderr, "    answer %d: %s\n", i, rc ? tn_strerror(rc) : "success");
        CHECK_EQ_INT(rc, TN_EMALFORMED);
    }
    cli_free(&k);
    raw_stop(rs);
}

static void big_head_conn(rawsrv *rs, int fd, int idx) {
    rreq r;
    int i;
    if (rd_req(rs, fd, &r)) return;
    snd(fd, "HTTP/1.1 200 OK\r\n");
    if (idx == 0) { /* one 70000-byte field: over the 64 KiB head limit */
        char *v = (char *)malloc(70001);
        memset(v, 'v', 70000);
        v[70000] = 0;
        snd(fd, "X-Big: ");
        snd(fd, v);
        snd(fd, "\r\n\r\n");
        free(v);
    } else { /* 150 small fields: over the field count limit */
        for (i = 0; i < 150; i++) {
            char line[64];
            snprintf(line, sizeof line, "X-F%d: %d\r\n", i, i);
            snd(fd, line);
        }
        snd(fd, "Content-Length: 0\r\n\r\n");
    }
    wait_close(fd);
}

TEST(client_oversized_headers) {
    rawsrv *rs = raw_start(big_head_conn, NULL);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    memset(&o, 0, sizeof o);
    o.request_timeout_ms = 5000;
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch(&k, rs->port, "/big", &o, &r), TN_EHEADERS);
    CHECK_EQ_INT(fetch(&k, rs->port, "/many", &o, &r), TN_EHEADERS);
    cli_free(&k);
    raw_stop(rs);
}

static int big_body_route(rawsrv *rs, int fd, rreq *r) {
    (void)rs;
    if (strcmp(r->target, "/cl") == 0) {
        char body[1001];
        memset(body, 'b', 1000);
        body[1000] = 0;
        respond(fd, 200, NULL, body);
    } else {
        snd(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n"
                "0123456789012345678901234567890123456789012345678901234567890123\r\n"
                "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n0\r\n\r\n");
    }
    return 0;
}

TEST(client_max_body_bytes) {
    rawsrv *rs = raw_router(big_body_route);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    memset(&o, 0, sizeof o);
    o.max_body_bytes = 100;
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch(&k, rs->port, "/cl", &o, &r), TN_ETOOLARGE);
    CHECK_EQ_INT(fetch(&k, rs->port, "/chunked", &o, &r), TN_ETOOLARGE);
    o.max_body_bytes = 1000; /* exactly the length is fine */
    REQUIRE(fetch(&k, rs->port, "/cl", &o, &r) == 0);
    CHECK_EQ_INT(r->body_len, 1000);
    tn_http_response_free(r);
    cli_free(&k);
    raw_stop(rs);
}

/* ------------------------------------------------------------------ */
/* Redirects                                                           */
/* ------------------------------------------------------------------ */

static int redirect_route(rawsrv *rs, int fd, rreq *r) {
    char loc[700], body[9000];
    if (strcmp(r->target, "/loop/a") == 0) {
        respond(fd, 302, "Location: /loop/b\r\n", "");
    } else if (strcmp(r->target, "/loop/b") == 0) {
        respond(fd, 302, "Location: /loop/a\r\n", "moved");
    } else if (strcmp(r->target, "/chain/r1") == 0) {
        snprintf(loc, sizeof loc, "Location: http://127.0.0.1:%d/chain/r2\r\n", rs->port);
        respond(fd, 301, loc, "gone");
    } else if (strcmp(r->target, "/chain/r2") == 0) {
        respond(fd, 302, "Location: final?x=1\r\n", ""); /* relative */
    } else if (strcmp(r->target, "/post303") == 0) {
        respond(fd, 303, "Location: /show\r\n", "");
    } else if (strcmp(r->target, "/post302") == 0) {
        respond(fd, 302, "Location: /show\r\n", "");
    } else if (strcmp(r->target, "/post307") == 0) {
        respond(fd, 307, "Location: /show\r\n", "");
    } else if (strcmp(r->target, "/tls") == 0) {
        respond(fd, 302, "Location: https://127.0.0.1/\r\n", "");
    } else if (strcmp(r->target, "/show") == 0) {
        snprintf(body, sizeof body, "%s cl=%ld body=%.*s", r->method, r->cl, (int)r->body_len, r->body);
        respond(fd, 200, NULL, body);
    } else {
        respond(fd, 200, NULL, r->target);
    }
    return 0;
}

TEST(client_redirect_loop) {
    rawsrv *rs = raw_router(redirect_route);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch(&k, rs->port, "/loop/a", NULL, &r), TN_EREDIRECTS);
    CHECK_EQ_INT(raw_nlog(rs), 6); /* the request and 5 redirects (the default) */
    memset(&o, 0, sizeof o);
    o.max_redirects = 2;
    CHECK_EQ_INT(fetch(&k, rs->port, "/loop/a", &o, &r), TN_EREDIRECTS);
    CHECK_EQ_INT(raw_nlog(rs), 9);
    CHECK_EQ_INT(GET(rs->nconn), 1); /* every hop reused the connection */
    cli_free(&k);
    raw_stop(rs);
}

TEST(client_redirect_chain) {
    rawsrv *rs = raw_router(redirect_route);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    char want[600], line[600];
    cli_new(&k, NULL);
    REQUIRE(fetch(&k, rs->port, "/chain/r1", NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK(strcmp(r->body, "/chain/final?x=1") == 0);
    CHECK_EQ_INT(r->redirects, 2);
    url_of(want, sizeof want, rs->port, "/chain/final?x=1");
    CHECK(r->effective_url && strcmp(r->effective_url, want) == 0);
    if (r->effective_url && strcmp(r->effective_url, want) != 0)
        fprintf(stderr, "    effective_url %s, want %s\n", r->effective_url, want);
    tn_http_response_free(r);
    CHECK(strcmp(raw_log(rs, 1, line, sizeof line), "GET /chain/r2 cl=-1") == 0);
    /* no_redirects: the 301 itself, with its body */
    memset(&o, 0, sizeof o);
    o.no_redirects = 1;
    REQUIRE(fetch(&k, rs->port, "/chain/r1", &o, &r) == 0);
    CHECK_EQ_INT(r->status, 301);
    CHECK_EQ_INT(r->redirects, 0);
    CHECK(strcmp(r->body, "gone") == 0);
    CHECK(strstr(tn_http_response_header(r, "Location"), "/chain/r2") != NULL);
    url_of(want, sizeof want, rs->port, "/chain/r1");
    CHECK(strcmp(r->effective_url, want) == 0);
    tn_http_response_free(r);
    /* a redirect to https:// cannot be followed */
    CHECK_EQ_INT(fetch(&k, rs->port, "/tls", NULL, &r), TN_ENOTLS);
    cli_free(&k);
    raw_stop(rs);
}

TEST(client_303_after_post_becomes_get) {
    rawsrv *rs = raw_router(redirect_route);
    cli k;
    tn_http_fetch_opts o;
    char line[600];
    memset(&o, 0, sizeof o);
    o.body = "hello";
    o.body_len = 5;
    cli_new(&k, NULL);
    /* 303: GET without the body */
    fetch_ok(&k, rs->port, "/post303", &o, 200, "GET cl=-1 body=");
    CHECK(strcmp(raw_log(rs, 0, line, sizeof line), "POST /post303 cl=5") == 0);
    CHECK(strcmp(raw_log(rs, 1, line, sizeof line), "GET /show cl=-1") == 0);
    /* 302 after POST: GET as well (browsers and Tornado do so) */
    fetch_ok(&k, rs->port, "/post302", &o, 200, "GET cl=-1 body=");
    /* 307: the same method and body again */
    fetch_ok(&k, rs->port, "/post307", &o, 200, "POST cl=5 body=hello");
    /* 303 after a PUT: GET too */
    o.method = "PUT";
    fetch_ok(&k, rs->port, "/post303", &o, 200, "GET cl=-1 body=");
    cli_free(&k);
    raw_stop(rs);
}

/* ------------------------------------------------------------------ */
/* A pooled connection the server closed                               */
/* ------------------------------------------------------------------ */

/* Connection 0 answers the first request (keep-alive), then reads the next
 * request's head and closes without a word: what a client sees when the
 * server's idle timeout closes a pooled connection just as it is reused.
 * arg: 0 = later connections answer; 1 = later connections also close. */
static void stale_conn(rawsrv *rs, int fd, int idx) {
    rreq r;
    if (rd_req(rs, fd, &r)) return;
    if (idx == 0) {
        respond(fd, 200, NULL, "first");
        if (rd_req(rs, fd, &r)) return;
        return; /* closed right after reading request 2 */
    }
    if (rs->arg) return;
    respond(fd, 200, NULL, "second");
    wait_close(fd);
}

TEST(client_stale_pooled_connection_get_is_retried_once) {
    rawsrv *rs = raw_start(stale_conn, NULL);
    cli k;
    char line[600];
    cli_new(&k, NULL);
    fetch_ok(&k, rs->port, "/1", NULL, 200, "first");
    fetch_ok(&k, rs->port, "/2", NULL, 200, "second"); /* transparently retried */
    CHECK_EQ_INT(GET(rs->nconn), 2);
    CHECK_EQ_INT(raw_nlog(rs), 3);
    CHECK(strcmp(raw_log(rs, 2, line, sizeof line), "GET /2 cl=-1") == 0);
    cli_free(&k);
    raw_stop(rs);

    /* only once: when the fresh connection fails too, the fetch fails */
    rs = raw_start(stale_conn, (void *)1);
    cli_new(&k, NULL);
    fetch_ok(&k, rs->port, "/1", NULL, 200, "first");
    {
        tn_http_response *r;
        CHECK_EQ_INT(fetch(&k, rs->port, "/2", NULL, &r), TN_ECLOSED);
    }
    CHECK_EQ_INT(GET(rs->nconn), 2);
    CHECK_EQ_INT(raw_nlog(rs), 3);
    cli_free(&k);
    raw_stop(rs);
}

TEST(client_stale_pooled_connection_post_is_not_retried) {
    rawsrv *rs = raw_start(stale_conn, NULL);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    memset(&o, 0, sizeof o);
    o.body = "payload";
    o.body_len = 7;
    cli_new(&k, NULL);
    fetch_ok(&k, rs->port, "/1", NULL, 200, "first");
    CHECK_EQ_INT(fetch(&k, rs->port, "/2", &o, &r), TN_ECLOSED); /* may have had effects: never resent */
    sleep_ms(50);
    CHECK_EQ_INT(GET(rs->nconn), 1);
    CHECK_EQ_INT(raw_nlog(rs), 2);
    /* PATCH neither */
    cli_free(&k);
    raw_stop(rs);
    rs = raw_start(stale_conn, NULL);
    cli_new(&k, NULL);
    o.method = "PATCH";
    fetch_ok(&k, rs->port, "/1", NULL, 200, "first");
    CHECK_EQ_INT(fetch(&k, rs->port, "/2", &o, &r), TN_ECLOSED);
    CHECK_EQ_INT(GET(rs->nconn), 1);
    cli_free(&k);
    raw_stop(rs);
}

/* The server closes the idle connection a little after answering: the
 * client notices while it sits in the pool and opens a new one. */
static void close_later_conn(rawsrv *rs, int fd, int idx) {
    rreq r;
    if (rd_req(rs, fd, &r)) return;
    respond(fd, 200, NULL, idx == 0 ? "first" : "second");
    if (idx == 0) {
        sleep_ms(50);
        return;
    }
    wait_close(fd);
}

TEST(client_pooled_connection_closed_while_idle) {
    rawsrv *rs = raw_start(close_later_conn, NULL);
    cli k;
    tn_http_fetch_opts o;
    memset(&o, 0, sizeof o);
    o.body = "x";
    o.body_len = 1;
    cli_new(&k, NULL);
    fetch_ok(&k, rs->port, "/1", NULL, 200, "first");
    run_until_no_handlers(&k); /* the close arrives while the connection is idle */
    fetch_ok(&k, rs->port, "/2", &o, 200, "second"); /* even a POST: nothing was stale */
    CHECK_EQ_INT(GET(rs->nconn), 2);
    cli_free(&k);
    raw_stop(rs);
}

/* The server resets the idle connection while the client's loop is not
 * running, so the client learns of it only when it writes the next
 * request: the write itself fails, inside tn_http_fetch. */
static void reset_idle_conn(rawsrv *rs, int fd, int idx) {
    rreq r;
    if (rd_req(rs, fd, &r)) return;
    respond(fd, 200, NULL, idx == 0 ? "first" : "second");
    if (idx == 0) {
        sleep_ms(20);
        set_rst(fd);
        return;
    }
    if (rd_req(rs, fd, &r)) return;
    respond(fd, 200, NULL, "third");
    wait_close(fd);
}

TEST(client_pooled_connection_reset_before_reuse) {
    rawsrv *rs = raw_start(reset_idle_conn, NULL);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    int rc;
    cli_new(&k, NULL);
    fetch_ok(&k, rs->port, "/1", NULL, 200, "first");
    sleep_ms(100); /* the reset arrives; the loop does not run meanwhile */
    fetch_ok(&k, rs->port, "/2", NULL, 200, "second"); /* retried on a new connection */
    CHECK_EQ_INT(GET(rs->nconn), 2);
    cli_free(&k);
    raw_stop(rs);

    /* the same for a POST: it fails (or, as nothing was sent, succeeds),
     * but never crashes or hangs */
    rs = raw_start(reset_idle_conn, NULL);
    cli_new(&k, NULL);
    memset(&o, 0, sizeof o);
    o.body = "p";
    o.body_len = 1;
    fetch_ok(&k, rs->port, "/1", NULL, 200, "first");
    sleep_ms(100);
    rc = fetch(&k, rs->port, "/2", &o, &r);
    CHECK(rc == TN_ECLOSED || (rc == 0 && strcmp(r->body, "second") == 0));
    if (!rc) tn_http_response_free(r);
    /* the client goes on working */
    fetch_ok(&k, rs->port, "/3", NULL, 200, rc ? "second" : "third");
    cli_free(&k);
    raw_stop(rs);
}

/* ------------------------------------------------------------------ */
/* Cancelling, and freeing the client with fetches in flight           */
/* ------------------------------------------------------------------ */

static int stall_route(rawsrv *rs, int fd, rreq *r) {
    (void)rs;
    if (strcmp(r->target, "/stall") == 0) {
        wait_close(fd);
        return 1;
    }
    respond(fd, 200, NULL, r->target);
    return 0;
}

TEST(client_cancel_and_free_with_fetches_pending) {
    rawsrv *rs = raw_router(stall_route);
    cli k;
    tn_http_client_opts co;
    tn_future *f1, *f2, *f3;
    tn_loop_stats st;
    char url[600], ok[600];
    int n;
    memset(&co, 0, sizeof co);
    co.max_clients = 1;
    cli_new(&k, &co);
    url_of(url, sizeof url, rs->port, "/stall");
    url_of(ok, sizeof ok, rs->port, "/ok");
    f1 = tn_http_fetch(k.c, url, NULL); /* sent, never answered */
    f2 = tn_http_fetch(k.c, ok, NULL);  /* queued behind it */
    REQUIRE(f1 && f2);
    run_until_nlog(&k, rs, 1);
    CHECK_EQ_INT(raw_nlog(rs), 1);
    CHECK_EQ_INT(tn_future_cancel(f2), 0); /* cancel the queued one */
    CHECK_EQ_INT(tn_future_error(f2), TN_ECANCELLED);
    tn_future_release(f2);
    CHECK_EQ_INT(tn_future_cancel(f1), 0); /* and the one in flight: its connection closes */
    CHECK_EQ_INT(tn_future_error(f1), TN_ECANCELLED);
    tn_future_release(f1);
    run_for(&k, 20);
    /* the slot is free again: the next fetch gets a new connection */
    fetch_ok(&k, rs->port, "/ok", NULL, 200, "/ok");
    CHECK_EQ_INT(GET(rs->nconn), 2);
    CHECK_EQ_INT(raw_nlog(rs), 2); /* the cancelled queued fetch was never sent */
    /* tn_with_timeout cancels the fetch it wraps */
    CHECK_EQ_INT(tn_run_sync(k.loop, tn_with_timeout(k.loop, tn_http_fetch(k.c, url, NULL), 100), 5000, NULL),
                 TN_ETIMEOUT);
    /* freeing the client fails what is still pending */
    run_for(&k, 20);
    n = raw_nlog(rs); /* the timed-out /stall may or may not have been sent */
    f3 = tn_http_fetch(k.c, url, NULL);
    REQUIRE(f3 != NULL);
    run_until_nlog(&k, rs, n + 1);
    CHECK(!tn_future_done(f3));
    tn_http_client_free(k.c);
    CHECK_EQ_INT(tn_future_error(f3), TN_ECANCELLED);
    tn_future_release(f3);
    tn_loop_get_stats(k.loop, &st);
    CHECK_EQ_INT(st.handlers, 0);
    CHECK_EQ_INT(st.timers, 0);
    tn_loop_free(k.loop);
    raw_stop(rs);
}

/* ------------------------------------------------------------------ */
/* Arguments                                                           */
/* ------------------------------------------------------------------ */

static int headers_route(rawsrv *rs, int fd, rreq *r) {
    (void)rs;
    respond(fd, 200, NULL, r->head);
    return 0;
}

TEST(client_rejects_bad_urls_and_headers) {
    rawsrv *rs = raw_router(headers_route);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    void *v = NULL;
    const char *crlf[] = {"X-Ok: 1", "X-Evil: a\r\nInjected: 1", NULL};
    const char *lf[] = {"X-Evil: a\nb", NULL};
    const char *cr[] = {"X-Evil: a\rb", NULL};
    const char *noname[] = {": v", NULL};
    const char *nocolon[] = {"NoColon", NULL};
    const char *space[] = {"Bad Name: v", NULL};
    const char *good[] = {"X-Good: yes", "User-Agent: tn-test", NULL};
    const char *const *bad[] = {crlf, lf, cr, noname, nocolon, space};
    const char *bad_urls[] = {"ftp://127.0.0.1/", "http://", "http:///x", "http://127.0.0.1:99999/",
                              "http://127.0.0.1:x/", "http://user@127.0.0.1/", "http://127.0.0.1/a b",
                              "127.0.0.1/", ""};
    size_t i;
    char url[600];
    cli_new(&k, NULL);
    /* https:// is not supported: TN_ENOTLS, before any connection */
    CHECK_EQ_INT(tn_run_sync(k.loop, tn_http_fetch(k.c, "https://127.0.0.1:1/", NULL), 5000, &v), TN_ENOTLS);
    CHECK_EQ_INT(tn_run_sync(k.loop, tn_http_fetch(k.c, "HTTPS://example.invalid/", NULL), 5000, &v), TN_ENOTLS);
    for (i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        int rc = tn_run_sync(k.loop, tn_http_fetch(k.c, bad_urls[i], NULL), 5000, &v);
        if (rc != TN_EINVAL) fprintf(stderr, "    url \"%s\": %s\n", bad_urls[i], tn_strerror(rc));
        CHECK_EQ_INT(rc, TN_EINVAL);
    }
    /* a header with CR or LF (or not a "Name: value") is refused */
    memset(&o, 0, sizeof o);
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        o.headers = bad[i];
        CHECK_EQ_INT(fetch(&k, rs->port, "/", &o, &r), TN_EINVAL);
    }
    o.headers = NULL;
    o.method = "GE T";
    CHECK_EQ_INT(fetch(&k, rs->port, "/", &o, &r), TN_EINVAL);
    o.method = "";
    CHECK_EQ_INT(fetch(&k, rs->port, "/", &o, &r), TN_EINVAL);
    sleep_ms(20);
    CHECK_EQ_INT(GET(rs->nconn), 0); /* nothing was sent anywhere */
    /* the good ones go out as given; the caller's User-Agent replaces ours */
    o.method = NULL;
    o.headers = good;
    url_of(url, sizeof url, rs->port, "/h?q=1");
    REQUIRE(fetch(&k, rs->port, "/h?q=1#frag", &o, &r) == 0);
    CHECK(strncmp(r->body, "GET /h?q=1 HTTP/1.1\r\n", 21) == 0);
    CHECK(strstr(r->body, "\r\nX-Good: yes\r\n") != NULL);
    CHECK(strstr(r->body, "\r\nUser-Agent: tn-test\r\n") != NULL);
    CHECK(strstr(r->body, "tornado.h") == NULL);
    {
        char host[64];
        snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", rs->port);
        CHECK(strstr(r->body, host) != NULL);
    }
    tn_http_response_free(r);
    cli_free(&k);
    raw_stop(rs);
}

TEST(client_fetch_sync) {
    rawsrv *rs = raw_router(slow_route);
    tn_http_response *r = NULL;
    char url[600];
    url_of(url, sizeof url, rs->port, "/sync");
#ifdef TN_NO_MALLOC
    /* its loop of its own would have no region */
    CHECK_EQ_INT(tn_http_fetch_sync(url, NULL, &r), TN_EINVAL);
    CHECK(r == NULL);
    raw_stop(rs);
    return;
#endif
    REQUIRE(tn_http_fetch_sync(url, NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK(strcmp(r->body, "/sync") == 0);
    tn_http_response_free(r);
    CHECK_EQ_INT(tn_http_fetch_sync("https://127.0.0.1/", NULL, &r), TN_ENOTLS);
    CHECK(r == NULL);
    raw_stop(rs);
}

#ifndef TN_HTTP_MINIMAL /* its server routes a pattern ("/slow/{i}") */
/* ------------------------------------------------------------------ */
/* Concurrency: 200 fetches, max_clients 10, against tn_http_server    */
/* ------------------------------------------------------------------ */

/* The server and client share one loop. Between them sits a small
 * counting proxy (tn_tcp_listen + tn_tcp_connect, HTTP-aware: a head, then
 * a Content-Length body), which counts the connections the client opened
 * over the whole run: with reuse, never more than max_clients. */
struct conc {
    tn_http_server *srv;
    int inflight, max_inflight, served;
    size_t max_srv_conns;
    int accepted, open, max_open; /* proxy: client connections */
    int upstream_port;
    tn_loop *loop;
};

struct slow_frame {
    tn_http_co h;
};
static int slow_handler(tn_co *co) {
    struct slow_frame *f = (struct slow_frame *)co;
    struct conc *x = (struct conc *)f->h.arg;
    TN_BEGIN(co);
    {
        size_t n = tn_http_server_connections(x->srv);
        if (n > x->max_srv_conns) x->max_srv_conns = n;
    }
    if (++x->inflight > x->max_inflight) x->max_inflight = x->inflight;
    TN_SLEEP(co, 20);
    x->inflight--;
    x->served++;
    tn_http_respond(f->h.req, 200, "text/plain", "ok", 2);
    TN_END(co);
}

struct proxy {
    tn_co co;
    struct conc *x;
    tn_stream *c, *u;
    long cl;
};

static long content_length(const char *head) {
    const char *p = strcasestr(head, "\r\nContent-Length:");
    return p ? strtol(p + 17, NULL, 10) : 0;
}

/* Forwards one message piece: read it (already awaited), write it on. */
static tn_future *forward(tn_stream *to, void *bytes) {
    tn_bytes *b = (tn_bytes *)bytes;
    tn_future *f = tn_stream_write(to, b->data, b->len); /* copies */
    tn_bytes_free(b);
    return f;
}

static int proxy_fn(tn_co *co) {
    struct proxy *p = (struct proxy *)co;
    TN_BEGIN(co);
    p->x->accepted++;
    if (++p->x->open > p->x->max_open) p->x->max_open = p->x->open;
    TN_AWAIT(co, tn_tcp_connect(co->loop, "127.0.0.1", p->x->upstream_port, 5000));
    if (!co->err) {
        p->u = (tn_stream *)co->value;
        for (;;) {
            TN_AWAIT(co, tn_stream_read_until(p->c, "\r\n\r\n", 65536)); /* request head (GET) */
            if (co->err) break;
            TN_AWAIT(co, forward(p->u, co->value));
            if (co->err) break;
            TN_AWAIT(co, tn_stream_read_until(p->u, "\r\n\r\n", 65536)); /* response head */
            if (co->err) break;
            p->cl = content_length(((tn_bytes *)co->value)->data);
            TN_AWAIT(co, forward(p->c, co->value));
            if (co->err) break;
            if (p->cl > 0) {
                TN_AWAIT(co, tn_stream_read_bytes(p->u, (size_t)p->cl));
                if (co->err) break;
                TN_AWAIT(co, forward(p->c, co->value));
                if (co->err) break;
            }
        }
        tn_stream_close(p->u);
    }
    tn_stream_close(p->c);
    p->x->open--;
    TN_END(co);
}

static void proxy_accept(tn_stream *s, void *arg) {
    struct conc *x = (struct conc *)arg;
    struct proxy *p = TN_CO_NEW(x->loop, struct proxy);
    REQUIRE(p != NULL);
    p->x = x;
    p->c = s;
    tn_future_release(tn_spawn(x->loop, &p->co, proxy_fn));
}

TEST(client_concurrency_200_fetches_max_clients_10) {
    enum { N = 200 };
    struct conc x;
    tn_loop *l;
    tn_http_client *c;
    tn_http_client_opts co;
    tn_http_route_opts ro;
    tn_future *fs[N];
    void *vals[N];
    char url[600];
    int i, lfd, pport, ok = 0;
    tn_loop_stats st;
    memset(&x, 0, sizeof x);
    memset(vals, 0, sizeof vals);
    REQUIRE(test_loop_new(&l, NULL) == 0);
    x.loop = l;
    REQUIRE(tn_http_server_new(l, NULL, &x.srv) == 0);
    memset(&ro, 0, sizeof ro);
    ro.frame_size = sizeof(struct slow_frame);
    REQUIRE(tn_http_route_co(x.srv, "GET", "/slow/{i}", slow_handler, &x, &ro) == 0);
    REQUIRE(tn_http_listen(x.srv, "127.0.0.1", 0) == 0);
    x.upstream_port = tn_http_server_port(x.srv);
    REQUIRE(tn_tcp_listen(l, "127.0.0.1", 0, proxy_accept, &x, &lfd, &pport) == 0);
    memset(&co, 0, sizeof co);
    co.max_clients = 10;
    REQUIRE(tn_http_client_new(l, &co, &c) == 0);
    for (i = 0; i < N; i++) {
        char path[32];
        snprintf(path, sizeof path, "/slow/%d", i);
        url_of(url, sizeof url, pport, path);
        fs[i] = tn_http_fetch(c, url, NULL);
        REQUIRE(fs[i] != NULL);
    }
    CHECK_EQ_INT(tn_run_sync(l, tn_all(l, fs, N, vals), 30000, NULL), 0);
    for (i = 0; i < N; i++) {
        tn_http_response *r = (tn_http_response *)vals[i];
        if (r && r->status == 200 && strcmp(r->body, "ok") == 0) ok++;
        tn_http_response_free(r);
    }
    CHECK_EQ_INT(ok, N);
    CHECK_EQ_INT(x.served, N);
    CHECK(x.max_inflight <= 10);
    CHECK(x.max_inflight >= 2); /* 200 waiting fetches did run side by side */
    CHECK(x.max_srv_conns <= 10);
    CHECK(x.max_open <= 10);
    CHECK(x.accepted <= 10); /* connections were reused, never re-opened */
    CHECK(x.accepted >= 1);
    fprintf(stderr, "    max in flight %d, server connections %zu, accepted %d\n", x.max_inflight,
            x.max_srv_conns, x.accepted);
    tn_http_client_free(c);
    for (i = 0; i < 500 && (x.open || tn_http_server_connections(x.srv)); i++) tn_loop_step(l, 10);
    CHECK_EQ_INT(x.open, 0);
    CHECK_EQ_INT(tn_http_server_connections(x.srv), 0);
    tn_tcp_unlisten(l, lfd);
    tn_http_server_free(x.srv);
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.handlers, 0);
    tn_loop_free(l);
}
#endif

/* ------------------------------------------------------------------ */
/* Real servers, started by the test                                   */
/* ------------------------------------------------------------------ */

#include "proc_util.h"

/* ------------------------------------------------------------------ */
/* Found by the whole-client fuzzer (tests/fuzz_client.c)              */
/* ------------------------------------------------------------------ */

/* A chunked body cut inside its trailer section fails at once with
 * TN_ECLOSED (it waited for the request timeout). */
static void trailer_cut_conn(rawsrv *rs, int fd, int idx) {
    rreq r;
    (void)idx;
    if (rd_req(rs, fd, &r)) return;
    snd(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n");
}
TEST(fuzz_client_body_cut_in_its_trailers_fails_at_once) {
    rawsrv *rs = raw_start(trailer_cut_conn, NULL);
    tn_http_response *r = NULL;
    tn_http_fetch_opts o;
    cli k;
    memset(&o, 0, sizeof o);
    o.request_timeout_ms = 10000;
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch(&k, rs->port, "/", &o, &r), TN_ECLOSED); /* not TN_ETIMEOUT after 10 s */
    cli_free(&k);
    raw_stop(rs);
}

/* After a redirect whose own body had bytes, an empty final body is "",
 * not the redirect's bytes unterminated. And a Location with UTF-8 is
 * requested percent-encoded (raw bytes >= 0x80 make a request line
 * servers refuse, ours included). */
static int stale_body_route(rawsrv *rs, int fd, rreq *r) {
    (void)rs;
    if (strcmp(r->target, "/moved") == 0) respond(fd, 301, "Location: /caf\xc3\xa9?q=\xc3\xa9\r\n", "a redirect's body");
    else if (strcmp(r->target, "/caf%C3%A9?q=%C3%A9") == 0) respond(fd, 200, NULL, "");
    else respond(fd, 404, NULL, r->target);
    return 0;
}
TEST(fuzz_client_redirect_to_an_empty_body_and_a_utf8_location) {
    rawsrv *rs = raw_router(stale_body_route);
    tn_http_response *r = NULL;
    cli k;
    cli_new(&k, NULL);
    REQUIRE(fetch(&k, rs->port, "/moved", NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->redirects, 1);
    CHECK_EQ_INT(r->body_len, 0);
    CHECK(r->body != NULL && r->body[0] == 0);
    tn_http_response_free(r);
    cli_free(&k);
    raw_stop(rs);
}


TEST(client_against_nginx) {
    char dir[] = "/tmp/tn_nginx_XXXXXX", conf[4096], path[600], *log, *sub, *want;
    char *argv[10];
    cli k;
    tn_http_response *r;
    pid_t pid;
    int port, i;
    if (access("/usr/sbin/nginx", X_OK) != 0) SKIP("nginx not installed");
    make_tmp_dir(dir);
    port = free_port();
    snprintf(conf, sizeof conf,
             "daemon off;\n"
             "master_process off;\n"
             "worker_processes 1;\n"
             "error_log %s/error.log info;\n"
             "pid %s/nginx.pid;\n"
             "events { worker_connections 64; }\n"
             "http {\n"
             "  log_format tn '$connection $connection_requests \"$request\" $status';\n"
             "  access_log %s/access.log tn;\n"
             "  client_body_temp_path %s/body;\n"
             "  proxy_temp_path %s/proxy;\n"
             "  fastcgi_temp_path %s/fastcgi;\n"
             "  uwsgi_temp_path %s/uwsgi;\n"
             "  scgi_temp_path %s/scgi;\n"
             "  default_type text/plain;\n"
             "  keepalive_timeout 30s;\n"
             "  server {\n"
             "    listen 127.0.0.1:%d;\n"
             "    root %s/www;\n"
             "    location = /old { return 301 /file.txt; }\n"
             /* sub_filter rewrites the body, so its length is unknown
              * up front: nginx sends it chunked */
             "    location /sub/ { sub_filter 'foo' 'bar'; sub_filter_once off; sub_filter_types text/plain; }\n"
             "  }\n"
             "}\n",
             dir, dir, dir, dir, dir, dir, dir, dir, port, dir);
    write_file(dir, "nginx.conf", conf);
    snprintf(path, sizeof path, "%s/www", dir);
    REQUIRE(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/www/sub", dir);
    REQUIRE(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/www", dir);
    write_file(path, "file.txt", "hello from nginx\n");
    /* 40000 bytes with "foo" throughout: more than one output buffer */
    sub = (char *)malloc(40001);
    want = (char *)malloc(40001);
    for (i = 0; i < 40000; i++) {
        sub[i] = "foo-line\n"[i % 9];
        want[i] = "bar-line\n"[i % 9];
    }
    sub[40000] = want[40000] = 0;
    snprintf(path, sizeof path, "%s/www/sub", dir);
    write_file(path, "page.txt", sub);
    argv[0] = (char *)"/usr/sbin/nginx";
    argv[1] = (char *)"-p";
    argv[2] = dir;
    argv[3] = (char *)"-c";
    snprintf(conf, sizeof conf, "%s/nginx.conf", dir);
    argv[4] = conf;
    argv[5] = (char *)"-e";
    snprintf(path, sizeof path, "%s/error.log", dir);
    argv[6] = path;
    argv[7] = NULL;
    pid = spawn(argv, NULL, path);
    if (wait_port(port, 10000, pid) != 0) {
        print_file(path);
        stop_child(pid);
        rm_rf(dir);
        REQUIRE(!"nginx did not start");
    }
    cli_new(&k, NULL);
    fetch_ok(&k, port, "/file.txt", NULL, 200, "hello from nginx\n");
    /* chunked */
    REQUIRE(fetch(&k, port, "/sub/page.txt", NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK(tn_http_response_header(r, "Transfer-Encoding") &&
          strcasecmp(tn_http_response_header(r, "Transfer-Encoding"), "chunked") == 0);
    CHECK(tn_http_response_header(r, "Content-Length") == NULL);
    CHECK_EQ_INT(r->body_len, 40000);
    CHECK(r->body_len == 40000 && memcmp(r->body, want, 40000) == 0);
    tn_http_response_free(r);
    /* a redirect */
    REQUIRE(fetch(&k, port, "/old", NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->redirects, 1);
    CHECK(strcmp(r->body, "hello from nginx\n") == 0);
    CHECK(strstr(r->effective_url, "/file.txt") != NULL);
    tn_http_response_free(r);
    /* a 404 is a response, not an error */
    REQUIRE(fetch(&k, port, "/missing", NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 404);
    tn_http_response_free(r);
    /* HEAD: no body */
    {
        tn_http_fetch_opts o;
        memset(&o, 0, sizeof o);
        o.method = "HEAD";
        REQUIRE(fetch(&k, port, "/file.txt", &o, &r) == 0);
        CHECK_EQ_INT(r->status, 200);
        CHECK_EQ_INT(r->body_len, 0);
        CHECK(strcmp(tn_http_response_header(r, "Content-Length"), "17") == 0);
        tn_http_response_free(r);
    }
    cli_free(&k);
    stop_child(pid); /* the access log is complete once it exits */
    /* keep-alive: every request carries the same $connection serial */
    snprintf(path, sizeof path, "%s/access.log", dir);
    log = read_file(path);
    REQUIRE(log != NULL);
    {
        char *line, *save = NULL;
        long first = -1;
        int lines = 0, same = 1;
        for (line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            long conn = strtol(line, NULL, 10);
            if (first < 0) first = conn;
            if (conn != first) same = 0;
            lines++;
        }
        CHECK_EQ_INT(lines, 6); /* file, sub, old, file (redirected), missing, HEAD */
        CHECK(same);
        if (!same || lines != 6) print_file(path);
    }
    free(log);
    free(sub);
    free(want);
    rm_rf(dir);
}

TEST(client_against_python_http_server) {
    char dir[] = "/tmp/tn_pyhttp_XXXXXX", portstr[16], *body;
    char *argv[10];
    cli k;
    tn_http_response *r;
    pid_t pid;
    int port, i;
    if (access("/usr/bin/python3", X_OK) != 0) SKIP("python3 not installed");
    make_tmp_dir(dir);
    /* 100 KB, so the body spans many reads */
    body = (char *)malloc(100001);
    for (i = 0; i < 100000; i++) body[i] = (char)('A' + i % 26);
    body[100000] = 0;
    write_file(dir, "big.txt", body);
    write_file(dir, "hello.txt", "hello from python\n");
    port = free_port();
    snprintf(portstr, sizeof portstr, "%d", port);
    argv[0] = (char *)"/usr/bin/python3";
    argv[1] = (char *)"-m";
    argv[2] = (char *)"http.server";
    argv[3] = portstr;
    argv[4] = (char *)"--bind";
    argv[5] = (char *)"127.0.0.1";
    argv[6] = (char *)"--directory";
    argv[7] = dir;
    argv[8] = NULL;
    pid = spawn(argv, NULL, NULL);
    if (wait_port(port, 10000, pid) != 0) {
        stop_child(pid);
        rm_rf(dir);
        REQUIRE(!"python3 -m http.server did not start");
    }
    cli_new(&k, NULL);
    fetch_ok(&k, port, "/hello.txt", NULL, 200, "hello from python\n");
    fetch_ok(&k, port, "/big.txt", NULL, 200, body);
    REQUIRE(fetch(&k, port, "/nope.txt", NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 404);
    tn_http_response_free(r);
    cli_free(&k);
    stop_child(pid);
    free(body);
    rm_rf(dir);
}

static const char tornado_app[] =
    "import asyncio, sys\n"
    "import tornado.web, tornado.httpserver, tornado.netutil\n"
    "class Hello(tornado.web.RequestHandler):\n"
    "    def get(self):\n"
    "        self.write('hello from tornado')\n"
    "class Chunked(tornado.web.RequestHandler):\n"
    "    async def get(self):\n"
    "        for i in range(5):\n"
    "            self.write('part %d\\n' % i)\n"
    "            await self.flush()\n"
    "class Echo(tornado.web.RequestHandler):\n"
    "    def post(self):\n"
    "        self.set_header('Content-Type', 'application/octet-stream')\n"
    "        self.write(self.request.body)\n"
    "class Redir(tornado.web.RequestHandler):\n"
    "    def get(self):\n"
    "        self.redirect('/hello')\n"
    "class Conn(tornado.web.RequestHandler):\n"
    "    def get(self):\n"
    "        self.write(str(id(self.request.connection.stream)))\n"
    "async def main():\n"
    "    app = tornado.web.Application([('/hello', Hello), ('/chunked', Chunked),\n"
    "                                   ('/echo', Echo), ('/redirect', Redir), ('/conn', Conn)])\n"
    "    socks = tornado.netutil.bind_sockets(0, '127.0.0.1')\n"
    "    server = tornado.httpserver.HTTPServer(app)\n"
    "    server.add_sockets(socks)\n"
    "    print('port %d' % socks[0].getsockname()[1], flush=True)\n"
    "    await asyncio.Event().wait()\n"
    "asyncio.run(main())\n";

TEST(client_against_python_tornado_server) {
    char dir[] = "/tmp/tn_tornado_XXXXXX", path[600], out[256], *big;
    char *argv[4];
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    pid_t pid;
    int port = 0, fd, i;
    if (!have_tornado()) SKIP("python3-tornado not installed");
    make_tmp_dir(dir);
    write_file(dir, "app.py", tornado_app);
    snprintf(path, sizeof path, "%s/app.py", dir);
    argv[0] = (char *)"/usr/bin/python3";
    argv[1] = path;
    argv[2] = NULL;
    pid = spawn(argv, &fd, NULL);
    read_until_str(fd, out, sizeof out, "\n", 20000);
    close(fd);
    if (sscanf(out, "port %d", &port) != 1 || wait_port(port, 10000, pid) != 0) {
        stop_child(pid);
        rm_rf(dir);
        REQUIRE(!"the Tornado app did not start");
    }
    cli_new(&k, NULL);
    fetch_ok(&k, port, "/hello", NULL, 200, "hello from tornado");
    REQUIRE(fetch(&k, port, "/chunked", NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK(strcmp(r->body, "part 0\npart 1\npart 2\npart 3\npart 4\n") == 0);
    CHECK(tn_http_response_header(r, "Transfer-Encoding") != NULL);
    tn_http_response_free(r);
    /* a POST body, larger than a socket buffer */
    big = (char *)malloc(300001);
    for (i = 0; i < 300000; i++) big[i] = (char)('a' + i % 26);
    big[300000] = 0;
    memset(&o, 0, sizeof o);
    o.body = big;
    o.body_len = 300000;
    fetch_ok(&k, port, "/echo", &o, 200, big);
    free(big);
    REQUIRE(fetch(&k, port, "/redirect", NULL, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(r->redirects, 1);
    CHECK(strcmp(r->body, "hello from tornado") == 0);
    tn_http_response_free(r);
    /* keep-alive: Tornado saw one connection for two requests */
    {
        tn_http_response *r2;
        REQUIRE(fetch(&k, port, "/conn", NULL, &r) == 0);
        REQUIRE(fetch(&k, port, "/conn", NULL, &r2) == 0);
        CHECK(strcmp(r->body, r2->body) == 0);
        tn_http_response_free(r);
        tn_http_response_free(r2);
    }
    cli_free(&k);
    stop_child(pid);
    rm_rf(dir);
}

static const char tornado_client[] =
    "import asyncio, sys\n"
    "from tornado.httpclient import AsyncHTTPClient\n"
    "async def main(base):\n"
    "    c = AsyncHTTPClient()\n"
    "    r = await c.fetch(base + '/')\n"
    "    assert r.code == 200 and r.body == b'Hello, world!', r.body\n"
    "    body = bytes(range(256)) * 400\n"
    "    r = await c.fetch(base + '/echo', method='POST', body=body,\n"
    "                      headers={'Content-Type': 'application/x-test'})\n"
    "    assert r.code == 200 and r.body == body, len(r.body)\n"
    "    assert r.headers['Content-Type'] == 'application/x-test', r.headers\n"
    "    r = await c.fetch(base + '/stream/100')\n"
    "    assert r.code == 200\n"
    "    assert r.headers.get('Transfer-Encoding', '').lower() == 'chunked', r.headers\n"
    "    assert r.body.decode().splitlines() == ['line %d' % i for i in range(100)], r.body[:200]\n"
    "    r = await c.fetch(base + '/status/404', raise_error=False)\n"
    "    assert r.code == 404, r.code\n"
    "    r = await c.fetch(base + '/query?a=1&b=x+y')\n"
    "    assert r.body == b'a=1\\nb=x y\\n', r.body\n"
    "    r = await c.fetch(base + '/', method='HEAD')\n"
    "    assert r.code == 200 and r.body == b'', r.body\n"
    "    print('OK', flush=True)\n"
    "asyncio.run(main(sys.argv[1]))\n";

TEST(python_tornado_client_against_httpbin) {
    char dir[] = "/tmp/tn_tornado_XXXXXX", path[600], out[4096], base[64];
    char *argv[4];
    pid_t bin, py;
    int port = 0, fd, status = 0;
    if (!have_tornado()) SKIP("python3-tornado not installed");
    if (access("examples/httpbin", X_OK) != 0) SKIP("examples/httpbin not built (make examples; run from the repo root)");
    {
        char *bargv[] = {(char *)"examples/httpbin", (char *)"--port", (char *)"0", NULL};
        const char *p;
        bin = spawn(bargv, &fd, NULL);
        read_until_str(fd, out, sizeof out, "\n", 10000);
        close(fd);
        p = strstr(out, "listening on http://127.0.0.1:");
        if (p) port = atoi(p + strlen("listening on http://127.0.0.1:"));
        if (port <= 0 || wait_port(port, 10000, bin) != 0) {
            stop_child(bin);
            REQUIRE(!"examples/httpbin did not start");
        }
    }
    make_tmp_dir(dir);
    write_file(dir, "client.py", tornado_client);
    snprintf(path, sizeof path, "%s/client.py", dir);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    argv[0] = (char *)"/usr/bin/python3";
    argv[1] = path;
    argv[2] = base;
    argv[3] = NULL;
    snprintf(out, sizeof out, "%s/client.err", dir);
    py = spawn(argv, &fd, out);
    read_until_str(fd, out, sizeof out, "OK\n", 30000);
    close(fd);
    CHECK(strstr(out, "OK") != NULL);
    if (wait_child(py, 10000, &status) != 0) {
        stop_child(py);
        CHECK(!"the Tornado client did not exit");
    } else {
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    if (!strstr(out, "OK")) {
        snprintf(path, sizeof path, "%s/client.err", dir);
        print_file(path);
    }
    status = stop_child(bin);
    /* httpbin shuts down gracefully on SIGTERM */
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    rm_rf(dir);
}

/* ------------------------------------------------------------------ */
/* Bounds and headers                                                  */
/* ------------------------------------------------------------------ */

/* Answers with the request head as the body (for header checks). */
static int route_echo_head(rawsrv *rs, int fd, rreq *r) {
    (void)rs;
    respond(fd, 200, NULL, r->head);
    return 0;
}

/* Counts lines of the head starting with name (case-insensitive). */
static int count_lines(const char *head, const char *name) {
    int n = 0;
    size_t nl = strlen(name);
    const char *p = head;
    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0) n++;
    }
    return n;
}

/* The user's Host and User-Agent replace the client's, whatever their case
 * and place; framing headers are the client's (TN_EINVAL); an empty list
 * is fine. */
TEST(client_header_overrides_replace_the_defaults) {
    rawsrv *rs = raw_router(route_echo_head);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    const char *ua_first[] = {"user-agent: mine/1", "X-A: 1", NULL};
    const char *host[] = {"X-B: 2", "HOST: example.test:81", NULL};
    const char *cl[] = {"Content-Length: 5", NULL};
    const char *te[] = {"transfer-encoding: chunked", NULL};
    const char *none[] = {NULL};
    char url[128];
    cli_new(&k, NULL);
    memset(&o, 0, sizeof o);
    o.headers = ua_first;
    REQUIRE(fetch(&k, rs->port, "/ua", &o, &r) == 0);
    CHECK_EQ_INT(count_lines(r->body, "User-Agent:"), 1);
    CHECK(strstr(r->body, "user-agent: mine/1\r\n") != NULL);
    tn_http_response_free(r);
    o.headers = host;
    REQUIRE(fetch(&k, rs->port, "/host", &o, &r) == 0);
    CHECK_EQ_INT(count_lines(r->body, "Host:"), 1);
    CHECK(strstr(r->body, "Host: example.test:81\r\n") != NULL);
    CHECK_EQ_INT(count_lines(r->body, "Content-Length:"), 0); /* a GET with no body */
    tn_http_response_free(r);
    o.headers = none;
    REQUIRE(fetch(&k, rs->port, "/none", &o, &r) == 0);
    CHECK_EQ_INT(count_lines(r->body, "User-Agent:"), 1);
    CHECK_EQ_INT(count_lines(r->body, "Host:"), 1);
    tn_http_response_free(r);
    o.headers = cl;
    url_of(url, sizeof url, rs->port, "/cl");
    CHECK_EQ_INT(tn_run_sync(k.loop, tn_http_fetch(k.c, url, &o), 5000, NULL), TN_EINVAL);
    o.headers = te;
    CHECK_EQ_INT(tn_run_sync(k.loop, tn_http_fetch(k.c, url, &o), 5000, NULL), TN_EINVAL);
    cli_free(&k);
    raw_stop(rs);
}

/* A server that sends interim responses without end: the client stops
 * after TN_HTTP_MAX_INTERIM of them with TN_EINTERIM (it skipped them
 * forever, its buffer growing). */
static void endless_1xx_conn(rawsrv *rs, int fd, int idx) {
    rreq r;
    int i;
    (void)idx;
    if (rd_req(rs, fd, &r)) return;
    for (i = 0; i < 10000; i++) {
        struct pollfd p;
        p.fd = fd;
        p.events = POLLOUT;
        if (poll(&p, 1, 1000) <= 0) return;
        if (send(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, MSG_NOSIGNAL) != 25) return;
    }
}
TEST(client_endless_interim_responses_end_with_einterim) {
    rawsrv *rs = raw_start(endless_1xx_conn, NULL);
    cli k;
    tn_http_response *r = NULL;
    cli_new(&k, NULL);
    CHECK_EQ_INT(fetch(&k, rs->port, "/", NULL, &r), TN_EINTERIM);
    CHECK(r == NULL);
    cli_free(&k);
    raw_stop(rs);
}

/* A body handed over by reference is sent as it is (no copy) and freed by
 * the client when the fetch ends: after a redirect that repeats it (307),
 * and when the fetch cannot even start. */
static int route_307_then_echo(rawsrv *rs, int fd, rreq *r) {
    (void)rs;
    if (strcmp(r->target, "/first") == 0) respond(fd, 307, "Location: /second\r\n", "");
    else respond(fd, 200, NULL, r->body);
    return 0;
}
static int g_body_frees;
static void body_free_count(void *p) {
    g_body_frees++;
    free(p);
}
TEST(client_body_by_reference_is_freed_when_the_fetch_ends) {
    rawsrv *rs = raw_router(route_307_then_echo);
    cli k;
    tn_http_response *r;
    tn_http_fetch_opts o;
    char *b = strdup("payload by reference");
    cli_new(&k, NULL);
    memset(&o, 0, sizeof o);
    o.method = "PUT";
    o.body = b;
    o.body_len = strlen(b);
    o.body_free = body_free_count;
    g_body_frees = 0;
    REQUIRE(fetch(&k, rs->port, "/first", &o, &r) == 0);
    CHECK_EQ_INT(r->status, 200);
    CHECK(strcmp(r->body, "payload by reference") == 0); /* repeated after the 307 */
    CHECK_EQ_INT(r->redirects, 1);
    tn_http_response_free(r);
    CHECK_EQ_INT(g_body_frees, 1);
    /* a fetch that fails at once (a bad URL) frees it too */
    o.body = strdup("x");
    o.body_len = 1;
    CHECK_EQ_INT(tn_run_sync(k.loop, tn_http_fetch(k.c, "ftp://nowhere/", &o), 1000, NULL), TN_EINVAL);
    CHECK_EQ_INT(g_body_frees, 2);
    cli_free(&k);
    raw_stop(rs);
}
