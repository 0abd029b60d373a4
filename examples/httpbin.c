/* httpbin: the test target of the suite and a tour of the server API.
 *
 *   httpbin [--host 127.0.0.1] [--port 8888] [--workers N] [LIMITS]
 *   (--port 0: any free port; --workers N: N processes, each with its own
 *   loop and SO_REUSEPORT socket on the same port, which must then be fixed)
 *   LIMITS, each a tn_http_server_opts field (0 or absent: its default):
 *   --max-connections N  --max-body BYTES  --max-buffered BYTES
 *   --header-timeout MS  --body-timeout MS  --idle-timeout MS
 *   --write-timeout MS  --linger-timeout MS
 *
 *   GET|HEAD /         Hello, world!
 *   POST|PUT /echo     the decoded request body back
 *   GET /status/{code} an empty response with that status
 *   GET /delay/{ms}    a coroutine sleeps, then answers
 *   GET /stream/{n}    n lines, streamed (chunked), with backpressure
 *   GET /bytes/{n}     n bytes (a pattern), Content-Length, streamed by a
 *                      coroutine that waits for the output to drain: memory
 *                      stays one buffer's worth whatever n (up to 100 MiB)
 *   GET /headers       the request's header fields back, one per line
 *   GET /query?a=..    the decoded query parameters a and b
 *   POST /upload       a streamed body: its length and a checksum
 *   GET /proxy?url=U   fetches U with the HTTP client while serving: its
 *                      status and body; 502 if it fails, 504 if it times
 *                      out (&timeout=MS, default 10000, at most 30000).
 *                      Loopback targets only (127.0.0.0/8, ::1,
 *                      localhost): 403 for any other, so it is no open proxy
 *   GET /site/{page}   a small linked site for examples/crawler
 *
 * SIGINT or SIGTERM shuts it down gracefully (requests in flight finish). */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* A number from a path parameter, or -1 if it is not one. */
static long param_num(tn_http_request *req, const char *name, long max) {
    const char *s = tn_http_param(req, name);
    char *end;
    long v;
    if (!s || !*s) return -1;
    v = strtol(s, &end, 10);
    return (*end || v < 0 || v > max) ? -1 : v;
}

static void hello(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_respond(req, 200, NULL, "Hello, world!", 13);
}

/* The body lives until the handler returns, and the answer is written
 * after that: a copy goes out by reference (the server frees it). Memory:
 * at most max_body_bytes per request, as the body itself. */
static void echo(tn_http_request *req, void *arg) {
    size_t len;
    const char *body = tn_http_body(req, &len);
    const char *ctype = tn_http_get_header(req, "Content-Type");
    char *copy = (char *)malloc(len ? len : 1);
    (void)arg;
    if (!copy) {
        tn_http_respond(req, 503, NULL, "out of memory\n", 14);
        return;
    }
    memcpy(copy, body, len);
    tn_http_respond_ref(req, 200, ctype ? ctype : "application/octet-stream", copy, len, free, copy);
}

static void status(tn_http_request *req, void *arg) {
    long code = param_num(req, "code", 999);
    (void)arg;
    if (code < 200 || code > 599) {
        tn_http_respond(req, 400, NULL, "status must be 200..599\n", 24);
        return;
    }
    tn_http_respond(req, (int)code, NULL, "", 0);
}

/* /bytes/{n}: a coroutine writes 16 KiB pieces and awaits tn_http_drain
 * every 64 KiB, so a slow reader holds at most the server's write buffer
 * (a plain handler could queue only TN_HTTP_WRITE_HIGH bytes of it). */
struct bytes_frame {
    tn_http_co h;
    long n, i;
};
static int bytes(tn_co *co) {
    struct bytes_frame *f = (struct bytes_frame *)co;
    static char chunk[16384];
    long k;
    TN_BEGIN(co);
    for (k = 0; k < (long)sizeof chunk; k++) chunk[k] = (char)('a' + k % 26);
    f->n = param_num(f->h.req, "n", 100L * 1024 * 1024);
    if (f->n < 0) {
        tn_http_respond(f->h.req, 400, NULL, "bad length\n", 11);
        TN_RETURN(co, NULL);
    }
    tn_http_begin(f->h.req, 200, "application/octet-stream", f->n);
    for (f->i = 0; f->i < f->n; f->i += (long)sizeof chunk) {
        size_t len = (size_t)(f->n - f->i < (long)sizeof chunk ? f->n - f->i : (long)sizeof chunk);
        if (tn_http_write(f->h.req, chunk, len)) TN_FAIL(co, TN_ECLOSED);
        if ((f->i / (long)sizeof chunk) % 4 == 3) {
            TN_AWAIT(co, tn_http_drain(f->h.req));
            if (co->err) TN_FAIL(co, co->err);
        }
    }
    tn_http_finish(f->h.req);
    TN_END(co);
}

static void headers(tn_http_request *req, void *arg) {
    char out[8192];
    size_t o = 0, i;
    (void)arg;
    for (i = 0; i < tn_http_header_count(req); i++) {
        const char *name, *value;
        int n;
        tn_http_header_at(req, i, &name, &value);
        n = snprintf(out + o, sizeof out - o, "%s: %s\n", name, value);
        if (n < 0 || (size_t)n >= sizeof out - o) break;
        o += (size_t)n;
    }
    tn_http_respond(req, 200, NULL, out, o);
}

static void query(tn_http_request *req, void *arg) {
    char out[1024];
    const char *a = tn_http_query(req, "a"), *b = tn_http_query(req, "b");
    int n = snprintf(out, sizeof out, "a=%s\nb=%s\n", a ? a : "(none)", b ? b : "(none)");
    (void)arg;
    tn_http_respond(req, 200, NULL, out, (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
}

/* /delay/{ms}: a coroutine handler. Its frame holds what lives across the
 * await (nothing here but the framework's part). */
struct delay_frame {
    tn_http_co h;
};
static int delay(tn_co *co) {
    struct delay_frame *f = (struct delay_frame *)co;
    long ms;
    TN_BEGIN(co);
    ms = param_num(f->h.req, "ms", 60000);
    if (ms < 0) {
        tn_http_respond(f->h.req, 400, NULL, "bad delay\n", 10);
        TN_RETURN(co, NULL);
    }
    TN_SLEEP(co, (uint64_t)ms);
    if (co->err) TN_FAIL(co, co->err); /* cancelled: the client left */
    tn_http_respond(f->h.req, 200, NULL, "done\n", 5);
    TN_END(co);
}

/* /stream/{n}: n chunked lines, waiting for the output to drain. */
struct stream_frame {
    tn_http_co h;
    long i, n;
};
static int stream(tn_co *co) {
    struct stream_frame *f = (struct stream_frame *)co;
    TN_BEGIN(co);
    f->n = param_num(f->h.req, "n", 10000000);
    if (f->n < 0) {
        tn_http_respond(f->h.req, 400, NULL, "bad count\n", 10);
        TN_RETURN(co, NULL);
    }
    tn_http_begin(f->h.req, 200, "text/plain; charset=utf-8", -1);
    for (f->i = 0; f->i < f->n; f->i++) {
        char line[64];
        int len = snprintf(line, sizeof line, "line %ld\n", f->i);
        if (tn_http_write(f->h.req, line, (size_t)len)) TN_FAIL(co, TN_ECLOSED);
        if (f->i % 1024 == 1023) {
            TN_AWAIT(co, tn_http_drain(f->h.req));
            if (co->err) TN_FAIL(co, co->err);
        }
    }
    tn_http_finish(f->h.req);
    TN_END(co);
}

/* /upload: the body is streamed to on_upload; the handler answers at the
 * end. The running sums live in the coroutine frame of the request. */
struct upload_frame {
    tn_http_co h;
    unsigned long long len;
    unsigned long sum; /* Adler-32 */
    unsigned long a, b;
};
static int upload_body(tn_http_request *req, const char *data, size_t len, void *arg) {
    struct upload_frame *f = (struct upload_frame *)tn_http_frame(req);
    size_t i;
    (void)arg;
    if (!f) return 0;
    if (f->a == 0 && f->len == 0) f->a = 1;
    for (i = 0; i < len; i++) {
        f->a = (f->a + (unsigned char)data[i]) % 65521;
        f->b = (f->b + f->a) % 65521;
    }
    f->len += len;
    return 0;
}
static int upload(tn_co *co) {
    struct upload_frame *f = (struct upload_frame *)co;
    char out[128];
    int n;
    TN_BEGIN(co);
    if (f->len == 0) f->a = 1;
    n = snprintf(out, sizeof out, "length=%llu adler32=%08lx\n", f->len, (f->b << 16) | f->a);
    tn_http_respond(f->h.req, 200, NULL, out, (size_t)n);
    TN_END(co);
}

/* /proxy: the handler awaits the client's fetch, so the loop serves other
 * requests meanwhile. */
static tn_http_client *client;

/* Whether url names a loopback host: "http://127.x.y.z", "http://[::1]",
 * "http://localhost", with a port or not. */
static int loopback_url(const char *url) {
    const char *h, *end;
    size_t n;
    if (strncmp(url, "http://", 7) != 0) return 0;
    h = url + 7;
    if (strncmp(h, "[::1]", 5) == 0) return h[5] == ':' || h[5] == '/' || h[5] == 0;
    end = h + strcspn(h, ":/?#");
    n = (size_t)(end - h);
    if (n == 9 && strncmp(h, "localhost", 9) == 0) return 1;
    if (n >= 7 && strncmp(h, "127.", 4) == 0) {
        const char *p;
        for (p = h + 4; p < end; p++)
            if (!(*p == '.' || (*p >= '0' && *p <= '9'))) return 0;
        return 1;
    }
    return 0;
}

struct proxy_frame {
    tn_http_co h;
    tn_http_fetch_opts opts;
};
static int proxy(tn_co *co) {
    struct proxy_frame *f = (struct proxy_frame *)co;
    const char *url, *timeout;
    TN_BEGIN(co);
    url = tn_http_query(f->h.req, "url");
    timeout = tn_http_query(f->h.req, "timeout");
    if (!url) {
        tn_http_respond(f->h.req, 400, NULL, "url= is required\n", 17);
        TN_RETURN(co, NULL);
    }
    if (!loopback_url(url)) {
        tn_http_respond(f->h.req, 403, NULL, "loopback targets only\n", 22);
        TN_RETURN(co, NULL);
    }
    f->opts.request_timeout_ms = 10000;
    if (timeout) {
        long t = atol(timeout);
        f->opts.request_timeout_ms = t <= 0 ? 1 : t > 30000 ? 30000 : (unsigned)t;
    }
    f->opts.connect_timeout_ms = f->opts.request_timeout_ms;
    TN_AWAIT(co, tn_http_fetch(client, url, &f->opts));
    if (co->err) {
        char msg[160];
        int gateway_timeout = co->err == TN_ETIMEOUT || co->err == TN_ECONNECTTIMEOUT ||
                              co->err == TN_EQUEUETIMEOUT;
        int n = snprintf(msg, sizeof msg, "upstream: %s\n", tn_strerror(co->err));
        if (co->err == TN_ECANCELLED) TN_FAIL(co, co->err); /* our client left */
        tn_http_respond(f->h.req, gateway_timeout ? 504 : 502, NULL, msg, (size_t)n);
    } else {
        tn_http_response *r = (tn_http_response *)co->value;
        const char *ctype = tn_http_response_header(r, "Content-Type");
        tn_http_respond(f->h.req, r->status, ctype, r->body, r->body_len);
        tn_http_response_free(r);
    }
    TN_END(co);
}

/* /site/{page}: page n links to 2n+1 and 2n+2 (below SITE_PAGES), back to
 * the index, to a missing page (a 404 for the crawler to report) and to a
 * site elsewhere (which a crawler must not follow). */
#define SITE_PAGES 40
static void site(tn_http_request *req, void *arg) {
    const char *p = tn_http_param(req, "page");
    char html[1024], *end;
    long n = 0;
    int len;
    (void)arg;
    if (p && *p) {
        n = strtol(p, &end, 10);
        if (*end || n < 0 || n >= SITE_PAGES) {
            tn_http_respond(req, 404, "text/html", "<p>no such page</p>", 19);
            return;
        }
    }
    len = snprintf(html, sizeof html,
                   "<html><body><h1>page %ld</h1>\n"
                   "<a href=\"/site/\">index</a> <a href=\"http://elsewhere.invalid/\">away</a>\n",
                   n);
    if (2 * n + 1 < SITE_PAGES)
        len += snprintf(html + len, sizeof html - (size_t)len, "<a href=\"/site/%ld\">a</a>\n", 2 * n + 1);
    if (2 * n + 2 < SITE_PAGES)
        len += snprintf(html + len, sizeof html - (size_t)len, "<a href=\"%ld#top\">b</a>\n", 2 * n + 2);
    if (n == 0) len += snprintf(html + len, sizeof html - (size_t)len, "<a href=\"/site/missing\">x</a>\n");
    len += snprintf(html + len, sizeof html - (size_t)len, "</body></html>\n");
    tn_http_respond(req, 200, "text/html; charset=utf-8", html, (size_t)len);
}

static tn_http_server *server;
static void on_signal(tn_loop *loop, int signo, void *arg) {
    tn_future *done;
    (void)arg;
    fprintf(stderr, "httpbin: signal %d, shutting down\n", signo);
    done = tn_http_server_shutdown(server, 5000);
    tn_future_release(done);
    tn_loop_stop(loop);
}

/* Workers 1..n-1 are forked children; the parent is worker 0. A child
 * gets SIGTERM when the parent exits (Linux), so stopping the parent stops
 * them all, as with nginx's master. */
static void spawn_workers(int n) {
    pid_t parent = getpid();
    int i;
    for (i = 1; i < n; i++) {
        pid_t p = fork();
        if (p < 0) {
            perror("fork");
            return;
        }
        if (p == 0) {
#ifdef __linux__
            prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
            if (getppid() != parent) _exit(0); /* it is already gone */
            return;
        }
    }
}

int main(int argc, char **argv) {
    tn_loop *loop;
    const char *host = "127.0.0.1";
    int port = 8888, workers = 1, i, rc;
    tn_http_server_opts opts = {0};
    tn_http_route_opts up = {0}, str = {0}, del = {0}, prx = {0}, byt = {0};
    for (i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (strcmp(o, "--host") == 0) host = v;
        else if (strcmp(o, "--port") == 0) port = atoi(v);
        else if (strcmp(o, "--workers") == 0) workers = atoi(v);
        else if (strcmp(o, "--max-connections") == 0) opts.max_connections = strtoul(v, NULL, 10);
        else if (strcmp(o, "--max-body") == 0) opts.max_body_bytes = strtoul(v, NULL, 10);
        else if (strcmp(o, "--max-buffered") == 0) opts.max_buffered_bytes = strtoul(v, NULL, 10);
        else if (strcmp(o, "--header-timeout") == 0) opts.header_timeout_ms = (unsigned)atoi(v);
        else if (strcmp(o, "--body-timeout") == 0) opts.body_timeout_ms = (unsigned)atoi(v);
        else if (strcmp(o, "--idle-timeout") == 0) opts.idle_timeout_ms = (unsigned)atoi(v);
        else if (strcmp(o, "--write-timeout") == 0) opts.write_timeout_ms = (unsigned)atoi(v);
        else if (strcmp(o, "--linger-timeout") == 0) opts.linger_timeout_ms = (unsigned)atoi(v);
        else break;
    }
    if (i < argc) {
        fprintf(stderr, "usage: httpbin [--host HOST] [--port PORT] [--workers N] [--max-connections N]\n"
                        "  [--max-body B] [--max-buffered B] [--header-timeout MS] [--body-timeout MS]\n"
                        "  [--idle-timeout MS] [--write-timeout MS] [--linger-timeout MS]\n");
        return 2;
    }
    if (workers < 1 || (workers > 1 && port == 0)) {
        fprintf(stderr, "httpbin: --workers needs a fixed --port\n");
        return 2;
    }
    opts.reuseport = workers > 1;
    spawn_workers(workers);
    signal(SIGPIPE, SIG_IGN);
    if (tn_loop_new(&loop, NULL) || tn_http_server_new(loop, &opts, &server) ||
        tn_http_client_new(loop, NULL, &client))
        return 1;
    prx.frame_size = sizeof(struct proxy_frame);
    up.on_body = upload_body;
    up.frame_size = sizeof(struct upload_frame);
    str.frame_size = sizeof(struct stream_frame);
    byt.frame_size = sizeof(struct bytes_frame);
    del.frame_size = sizeof(struct delay_frame);
    tn_http_route(server, "GET", "/", hello, NULL, NULL);
    tn_http_route(server, "POST", "/echo", echo, NULL, NULL);
    tn_http_route(server, "PUT", "/echo", echo, NULL, NULL);
    tn_http_route(server, "GET", "/status/{code}", status, NULL, NULL);
    tn_http_route_co(server, "GET", "/bytes/{n}", bytes, NULL, &byt);
    tn_http_route(server, "GET", "/headers", headers, NULL, NULL);
    tn_http_route(server, "GET", "/query", query, NULL, NULL);
    tn_http_route_co(server, "GET", "/delay/{ms}", delay, NULL, &del);
    tn_http_route_co(server, "GET", "/stream/{n}", stream, NULL, &str);
    tn_http_route_co(server, "POST", "/upload", upload, NULL, &up);
    tn_http_route_co(server, "GET", "/proxy", proxy, NULL, &prx);
    tn_http_route(server, "GET", "/site/{page*}", site, NULL, NULL);
    if ((rc = tn_http_listen(server, host, port)) != 0) {
        fprintf(stderr, "httpbin: listen on %s:%d: %s\n", host, port, tn_strerror(rc));
        return 1;
    }
    tn_signal_add(loop, SIGINT, on_signal, NULL);
    tn_signal_add(loop, SIGTERM, on_signal, NULL);
    printf("listening on http://%s:%d\n", host, tn_http_server_port(server));
    fflush(stdout);
    tn_loop_run(loop);
    /* Let requests in flight finish (the shutdown's deadline bounds it). */
    while (tn_http_server_connections(server)) tn_loop_step(loop, 100);
    tn_http_server_free(server);
    tn_http_client_free(client);
    tn_loop_free(loop);
    return 0;
}
