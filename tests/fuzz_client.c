/* fuzz_client.c: libFuzzer target for whole HTTP client fetches
 * (make check-fuzz).
 *
 * Each input is what a server sends. The harness listens on 127.0.0.1,
 * tn_http_fetch()es a URL there from a tn_http_client on the same loop, and
 * plays the server with plain non-blocking socket calls: it accepts, reads
 * (and checks) the requests, and writes the input in pieces, stepping the
 * loop between them, then ends the connection. Input layout:
 *
 *   byte 0   flags: bits 0-1 the method (GET, POST with a small body, HEAD,
 *            GET with headers of the user's); bit 2 stream the body to
 *            opts.on_chunk; bit 3 follow redirects (else no_redirects);
 *            bits 4-5 how the server ends (0 close after reading what the
 *            client sent, 1 shutdown(SHUT_WR), 2 close with a reset
 *            (SO_LINGER 0), 3 close without reading); bit 6 a small
 *            max_body_bytes (100); bit 7 with on_chunk, the callback fails
 *            once more than 64 bytes came.
 *   byte 1   k = byte % 8 cuts, then k bytes: piece sizes (byte + 1), the
 *            same for every connection. With bits 3-5 all set, the
 *            client's timeouts (connect, request, idle) are 2 ms and the
 *            loop waits for its next timer before a connection's last
 *            piece: the request timeout comes due mid-response.
 *   the rest what the server sends, one segment per connection the client
 *            opens, separated by "<NEXT>" (a redirect may open another; a
 *            connection beyond the last segment is closed at once).
 *
 * The run ends when the fetch's future is done; request_timeout_ms is
 * 100 ms, and a fetch not done after two seconds is a hang. Checks: the
 * future resolved with a response (its fields well formed) or failed with
 * one of the documented codes, never both; everything freed, the loop's
 * counters zero. The requests the client sent parse with
 * tn_http_parse_request. And the outcome is compared with a model: the
 * segment of a fetch that used one connection and no redirect, ended by a
 * FIN, is parsed whole with tn_http_parse_response and
 * tn_http_chunked_decode, and the client must agree on the status, the
 * headers, the body (buffered, or as the on_chunk pieces joined) or the
 * error code, whatever the split (a timeout the model does not expect is
 * run once more, to tell a hang from a stalled process). After a success a
 * second fetch (GET) follows on the same client: the pooled connection, or
 * the retry of an idempotent request when the server has closed it.
 * FUZZ_VERBOSE=1 prints each outcome.
 *
 * Isolation: the harness moves itself into a network namespace of its own
 * (unshare(CLONE_NEWNET), root only) with just a loopback, and listens on
 * port 80 there, so a Location anywhere (another port, another host, a
 * name) is refused or unreachable at once and never leaves the process.
 * Without that (not root), it listens on a free port and turns every "//"
 * in the input into "/_", so that a redirect can only be relative, to the
 * harness itself. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define FUZZ_CHECK(cond)                                                           \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "fuzz_client.c:%d: check failed: %s\n", __LINE__, #cond); \
            abort();                                                               \
        }                                                                          \
    } while (0)

#define F_METHOD 3u
#define F_STREAM 4u
#define F_REDIRECTS 8u
#define F_END_SHIFT 4
#define F_END_FIN 0u
#define F_END_HALF 1u
#define F_END_RESET 2u
#define F_END_NOREAD 3u
#define F_SMALL_MAX 64u
#define F_CHUNK_FAIL 128u

#define SMALL_MAX 100
#define CHUNK_FAIL_AFTER 64
#define CHUNK_FAIL_ERR TN_ENOTSUP /* what the failing on_chunk returns */
#define REQUEST_TIMEOUT_MS 100
#define MAXCONN 8
#define SEP "<NEXT>"
#define SEP_LEN 6

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------- the listener */
static int g_lfd = -1, g_port, g_netns;
static char g_url[64], g_url2[64];

static int bring_up_lo(void) {
    struct ifreq r;
    int s = socket(AF_INET, SOCK_DGRAM, 0), ok;
    if (s < 0) return 0;
    memset(&r, 0, sizeof r);
    strcpy(r.ifr_name, "lo");
    ok = ioctl(s, SIOCGIFFLAGS, &r) == 0;
    r.ifr_flags |= IFF_UP;
    ok = ok && ioctl(s, SIOCSIFFLAGS, &r) == 0;
    close(s);
    return ok;
}

static void setup(void) {
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    int one = 1;
    if (getenv("FUZZ_NO_NETNS") == NULL) {
        int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (home >= 0 && unshare(CLONE_NEWNET) == 0) {
            g_netns = bring_up_lo();
            if (!g_netns) FUZZ_CHECK(setns(home, CLONE_NEWNET) == 0); /* no loopback there: back */
        }
        if (home >= 0) close(home);
    }
    g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(g_lfd >= 0);
    setsockopt(g_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(g_netns ? 80 : 0);
    FUZZ_CHECK(bind(g_lfd, (struct sockaddr *)&a, sizeof a) == 0);
    FUZZ_CHECK(listen(g_lfd, 64) == 0);
    FUZZ_CHECK(getsockname(g_lfd, (struct sockaddr *)&a, &al) == 0);
    g_port = ntohs(a.sin_port);
    if (g_netns) snprintf(g_url, sizeof g_url, "http://127.0.0.1/d/f?q=1");
    else snprintf(g_url, sizeof g_url, "http://127.0.0.1:%d/d/f?q=1", g_port);
    if (g_netns) snprintf(g_url2, sizeof g_url2, "http://127.0.0.1/second");
    else snprintf(g_url2, sizeof g_url2, "http://127.0.0.1:%d/second", g_port);
    fprintf(stderr, "fuzz_client: serving on 127.0.0.1:%d (%s)\n", g_port,
            g_netns ? "own network namespace" : "no network namespace: \"//\" in inputs becomes \"/_\"");
}

/* What earlier runs left in the accept queue. */
static void drain_backlog(void) {
    int fd;
    while ((fd = accept4(g_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) close(fd);
}

/* ---------------------------------------------------------- the model */
#define M_RESOLVED 1
#define M_ERROR 2
#define M_REDIRECT 3

typedef struct outcome {
    int kind, err, status;
    size_t num_headers;
    char *body; /* malloc'd */
    size_t body_len;
    char reason[64];
    size_t reason_len;
} outcome;

static void model_fetch(const char *in, size_t len, const char *method, int streaming, size_t max_body,
                        int redirects, outcome *o) {
    static tn_http_header hdr[TN_HTTP_MAX_HEADERS];
    size_t pos = 0;
    int interim = 0;
    memset(o, 0, sizeof *o);
    for (;;) {
        tn_http_message m;
        tn_http_limits lim;
        char *copy = (char *)malloc(len - pos + 1);
        size_t rest;
        int rc;
        FUZZ_CHECK(copy != NULL);
        memcpy(copy, in + pos, len - pos);
        memset(&lim, 0, sizeof lim);
        rc = tn_http_parse_response(copy, len - pos, 0, &m, hdr, TN_HTTP_MAX_HEADERS, &lim, method);
        if (rc == TN_EAGAIN || rc < 0) {
            o->kind = M_ERROR;
            o->err = rc == TN_EAGAIN ? TN_ECLOSED : rc == TN_EHEADERS ? TN_EHEADERS : TN_EMALFORMED;
            free(copy);
            return;
        }
        pos += (size_t)rc;
        if (m.status >= 100 && m.status < 200 && m.status != 101) {
            free(copy);
            if (++interim > TN_HTTP_MAX_INTERIM) {
                o->kind = M_ERROR;
                o->err = TN_EINTERIM;
                return;
            }
            continue;
        }
        o->status = m.status;
        o->num_headers = m.num_headers;
        o->reason_len = m.reason_len < sizeof o->reason ? m.reason_len : sizeof o->reason;
        if (m.reason) memcpy(o->reason, m.reason, o->reason_len);
        if (redirects && (m.status == 301 || m.status == 302 || m.status == 303 || m.status == 307 ||
                          m.status == 308) && tn_http_find_header(&m, "Location")) {
            o->kind = M_REDIRECT;
            free(copy);
            return;
        }
        rest = len - pos;
        o->kind = M_ERROR;
        if (m.content_length > 0 && !streaming && (uint64_t)m.content_length > max_body) {
            o->err = TN_ETOOLARGE;
        } else if (m.chunked) {
            tn_http_chunked dec;
            size_t got = 0;
            int drc;
            memset(&dec, 0, sizeof dec);
            drc = tn_http_chunked_decode(&dec, copy + rc, rest, &got, streaming ? 0 : max_body, &lim);
            if (drc < 0) o->err = drc;
            else if (!dec.done) o->err = TN_ECLOSED; /* cut off by the EOF */
            else {
                o->kind = M_RESOLVED;
                o->body_len = got;
                o->body = (char *)malloc(got + 1);
                FUZZ_CHECK(o->body != NULL);
                memcpy(o->body, copy + rc, got);
            }
        } else if (m.close_delimited || m.content_length > 0) {
            size_t n = m.close_delimited ? rest : (size_t)m.content_length;
            if (!m.close_delimited && rest < n) o->err = TN_ECLOSED;
            else if (!streaming && n > max_body) o->err = TN_ETOOLARGE;
            else {
                o->kind = M_RESOLVED;
                o->body_len = n;
                o->body = (char *)malloc(n + 1);
                FUZZ_CHECK(o->body != NULL);
                memcpy(o->body, copy + rc, n);
            }
        } else {
            o->kind = M_RESOLVED;
        }
        free(copy);
        return;
    }
}

/* --------------------------------------------------- the harness side */
typedef struct sconn {
    int fd;
    const char *seg; /* what to send on it */
    size_t seg_len, sent;
    size_t piece;    /* index into the cuts */
    int ended, read_eof, paused;
    char *req;       /* what the client sent */
    size_t req_len, req_cap;
} sconn;

static void sconn_read(sconn *c) {
    char buf[16384];
    while (c->fd >= 0 && !c->read_eof) {
        ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            if (c->req_len + (size_t)n > c->req_cap) {
                size_t nc = c->req_cap ? 2 * c->req_cap : 4096;
                char *nr;
                while (nc < c->req_len + (size_t)n) nc *= 2;
                nr = (char *)realloc(c->req, nc);
                FUZZ_CHECK(nr != NULL);
                c->req = nr;
                c->req_cap = nc;
            }
            memcpy(c->req + c->req_len, buf, (size_t)n);
            c->req_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) c->read_eof = 1;
        break;
    }
}

/* The requests a connection carried: each parses; the last may be cut. */
static void check_requests(const sconn *c, const char *method0) {
    static tn_http_header hdr[TN_HTTP_MAX_HEADERS];
    size_t pos = 0;
    int first = 1;
    while (pos < c->req_len) {
        tn_http_message m;
        int rc = tn_http_parse_request(c->req + pos, c->req_len - pos, 0, &m, hdr, TN_HTTP_MAX_HEADERS, NULL);
        if (rc == TN_EAGAIN) return;
        if (rc < 0)
            fprintf(stderr, "fuzz_client: the client sent a request that does not parse (%s):\n%.*s\n", tn_strerror(rc),
                    (int)(c->req_len - pos < 600 ? c->req_len - pos : 600), c->req + pos);
        FUZZ_CHECK(rc > 0);
        FUZZ_CHECK(m.version_minor == 1 && m.host != NULL && !m.chunked);
        if (first && method0)
            FUZZ_CHECK(m.method_len == strlen(method0) && memcmp(m.method, method0, m.method_len) == 0);
        first = 0;
        pos += (size_t)rc;
        if (m.content_length > 0) {
            if ((uint64_t)(c->req_len - pos) < (uint64_t)m.content_length) return;
            pos += (size_t)m.content_length;
        }
    }
}

static void sconn_end(sconn *c, unsigned end) {
    if (c->ended || c->fd < 0) return;
    c->ended = 1;
    if (end == F_END_HALF) {
        shutdown(c->fd, SHUT_WR);
        return;
    }
    if (end == F_END_RESET) {
        struct linger lg;
        lg.l_onoff = 1;
        lg.l_linger = 0;
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    if (end == F_END_FIN) sconn_read(c); /* nothing unread: a FIN, not a reset */
    close(c->fd);
    c->fd = -1;
}

/* ------------------------------------------------------------ the run */
typedef struct sink {
    char *data;
    size_t len, cap;
    int fail;
    size_t calls;
} sink;

static int on_chunk(const char *data, size_t len, void *arg) {
    sink *s = (sink *)arg;
    FUZZ_CHECK(len > 0);
    s->calls++;
    if (s->len + len > s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 4096;
        char *nd;
        while (nc < s->len + len) nc *= 2;
        nd = (char *)realloc(s->data, nc);
        FUZZ_CHECK(nd != NULL);
        s->data = nd;
        s->cap = nc;
    }
    memcpy(s->data + s->len, data, len);
    s->len += len;
    return s->fail && s->len > CHUNK_FAIL_AFTER ? CHUNK_FAIL_ERR : 0;
}

static void step(tn_loop *loop, int wait_ms) { FUZZ_CHECK(tn_loop_step(loop, wait_ms) == 0); }

static int known_error(int err) {
    switch (err) {
    case TN_ETIMEOUT: case TN_ECLOSED: case TN_EMALFORMED: case TN_EHEADERS: case TN_ETOOLARGE:
    case TN_EREDIRECTS: case TN_EINTERIM: case TN_EREFUSED: case TN_ERESOLVE: case TN_ENOTLS:
    case TN_ECONNECTTIMEOUT: case TN_EINVAL: case CHUNK_FAIL_ERR:
        return 1;
    default:
        return err < 0 && err > -1000; /* -errno: a redirect to an unreachable address */
    }
}

/* What every fetch's outcome must be: a well-formed response, or one of
 * the documented errors, never both. */
static void check_fetch(tn_future *f, int streaming, size_t max_body) {
    int err = tn_future_error(f);
    tn_http_response *r = (tn_http_response *)tn_future_value(f);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_client: fetch done: err %d (%s) status %d\n", err, err ? tn_strerror(err) : "",
                r ? r->status : 0);
    FUZZ_CHECK(err != TN_ESTATE);
    if (err == 0) {
        size_t h;
        FUZZ_CHECK(r != NULL);
        FUZZ_CHECK(r->status >= 100 && r->status <= 999 && r->reason != NULL);
        FUZZ_CHECK(r->body != NULL);
        if (r->body[r->body_len] != 0)
            fprintf(stderr, "fuzz_client: the body (%zu bytes) is not NUL-terminated\n", r->body_len);
        FUZZ_CHECK(r->body[r->body_len] == 0);
        FUZZ_CHECK(r->effective_url != NULL);
        FUZZ_CHECK(r->num_headers <= TN_HTTP_MAX_HEADERS);
        FUZZ_CHECK(r->redirects >= 0 && r->redirects <= 5);
        if (streaming) FUZZ_CHECK(r->body_len == 0);
        else FUZZ_CHECK(r->body_len <= max_body);
        for (h = 0; h < r->num_headers; h++) {
            FUZZ_CHECK(r->headers[h].name_len > 0 && strlen(r->headers[h].name) == r->headers[h].name_len);
            FUZZ_CHECK(strlen(r->headers[h].value) == r->headers[h].value_len);
        }
    } else {
        FUZZ_CHECK(r == NULL);
        if (!known_error(err)) fprintf(stderr, "fuzz_client: the fetch failed with %d (%s)\n", err, tn_strerror(err));
        FUZZ_CHECK(known_error(err));
        FUZZ_CHECK(tn_strerror(err) != NULL);
    }
}

/* Plays the server until the fetch f is done: accepts, gives each new
 * connection the next segment, writes it a piece per loop step, ends it. */
typedef struct serve {
    sconn conns[MAXCONN];
    size_t nconns, nsegs, ncut;
    const char *const *segs;
    const size_t *seg_len, *cut;
    unsigned end;
    int write_failed; /* writing the first connection's segment failed */
    int pause;        /* the loop waits for its next timer before a last piece */
} serve;

static void pump(serve *sv, tn_loop *loop, tn_future *f) {
    uint64_t deadline;
    size_t i;
    deadline = now_ms() + 2000;
    while (!tn_future_done(f)) {
        int busy = 0, fd;
        if (now_ms() > deadline) {
            fprintf(stderr, "fuzz_client: the fetch is not done 2 s on (request_timeout_ms %d)\n", REQUEST_TIMEOUT_MS);
            FUZZ_CHECK(0);
        }
        step(loop, 0);
        while ((fd = accept4(g_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
            busy = 1;
            if (sv->nconns >= MAXCONN || sv->nconns >= sv->nsegs) {
                close(fd); /* nothing more to say */
                continue;
            }
            sv->conns[sv->nconns].fd = fd;
            sv->conns[sv->nconns].seg = sv->segs[sv->nconns];
            sv->conns[sv->nconns].seg_len = sv->seg_len[sv->nconns];
            sv->nconns++;
        }
        for (i = 0; i < sv->nconns; i++) {
            sconn *c = &sv->conns[i];
            if (c->fd < 0) continue;
            if (sv->end != F_END_NOREAD) sconn_read(c);
            if (c->ended) continue;
            if (c->sent < c->seg_len && sv->pause && !c->paused && c->piece >= sv->ncut && c->sent) {
                /* the client's 2 ms timers come due with the last piece */
                c->paused = 1;
                step(loop, 3);
            }
            if (c->sent < c->seg_len) {
                size_t n = c->piece < sv->ncut ? sv->cut[c->piece] : c->seg_len - c->sent;
                ssize_t w;
                if (n > c->seg_len - c->sent) n = c->seg_len - c->sent;
                w = send(c->fd, c->seg + c->sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0) {
                    c->sent += (size_t)w;
                    if ((size_t)w == n) c->piece++;
                    busy = 1;
                } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    if (i == 0) sv->write_failed = 1;
                    c->sent = c->seg_len; /* the client is gone */
                }
            }
            if (c->sent >= c->seg_len) {
                sconn_end(c, sv->end);
                busy = 1;
            }
        }
        if (!busy) step(loop, 1); /* nothing to do here: let the loop wait */
    }

}

/* One run; returns 1 when it should run once more to tell a hang from a
 * stall (final: no more runs, judge). */
static int run_one(const uint8_t *data, size_t size, int final) {
    static const char *const methods[] = {"GET", "POST", "HEAD", "GET"};
    static const char *const user_headers[] = {"Accept: */*", "X-Fuzz:  a b ", "user-agent: fuzz", NULL};
    unsigned flags, end;
    size_t cut[8], ncut, k, nsegs = 0, i;
    const char *segs[32];
    size_t seg_len[32];
    char *input;
    serve sv;
    tn_loop *loop;
    tn_http_client *cli;
    tn_http_client_opts co;
    tn_http_fetch_opts fo;
    tn_future *f;
    sink sk;
    int err, retry = 0, pause;
    const char *method;

    if (g_lfd < 0) setup();
    if (size < 2) return 0;
    flags = data[0];
    end = (flags >> F_END_SHIFT) & 3u;
    method = methods[flags & F_METHOD];
    ncut = data[1] % 8u;
    pause = (data[1] & 0x38u) == 0x38u;
    if (size < 2 + ncut) return 0;
    for (k = 0; k < ncut; k++) cut[k] = (size_t)data[2 + k] + 1;
    data += 2 + ncut;
    size -= 2 + ncut;

    /* The segments, in a private copy (made safe without a namespace). */
    input = (char *)malloc(size + 1);
    FUZZ_CHECK(input != NULL);
    if (size) memcpy(input, data, size);
    if (!g_netns)
        for (i = 0; i + 1 < size; i++)
            if (input[i] == '/' && input[i + 1] == '/') input[i + 1] = '_';
    {
        const char *p = input, *e = input + size;
        while (nsegs < 32) {
            const char *s = NULL, *q;
            for (q = p; q + SEP_LEN <= e; q++)
                if (memcmp(q, SEP, SEP_LEN) == 0) {
                    s = q;
                    break;
                }
            segs[nsegs] = p;
            seg_len[nsegs] = (size_t)((s ? s : e) - p);
            nsegs++;
            if (!s) break;
            p = s + SEP_LEN;
        }
    }
    drain_backlog();

    FUZZ_CHECK(tn_loop_new(&loop, NULL) == 0);
    memset(&co, 0, sizeof co);
    co.max_clients = 2;
    co.connect_timeout_ms = pause ? 2 : REQUEST_TIMEOUT_MS;
    co.request_timeout_ms = pause ? 2 : REQUEST_TIMEOUT_MS;
    co.idle_timeout_ms = pause ? 2 : REQUEST_TIMEOUT_MS;
    co.max_body_bytes = (flags & F_SMALL_MAX) ? SMALL_MAX : 1u << 20;
    FUZZ_CHECK(tn_http_client_new(loop, &co, &cli) == 0);
    memset(&fo, 0, sizeof fo);
    memset(&sk, 0, sizeof sk);
    fo.method = method;
    if ((flags & F_METHOD) == 1) {
        fo.body = "field=value&x=1";
        fo.body_len = 15;
    }
    if ((flags & F_METHOD) == 3) fo.headers = user_headers;
    if (!(flags & F_REDIRECTS)) fo.no_redirects = 1;
    if (flags & F_STREAM) {
        fo.on_chunk = on_chunk;
        fo.chunk_arg = &sk;
        sk.fail = (flags & F_CHUNK_FAIL) != 0;
    }
    f = tn_http_fetch(cli, g_url, &fo);
    FUZZ_CHECK(f != NULL);

    memset(&sv, 0, sizeof sv);
    sv.segs = segs;
    sv.seg_len = seg_len;
    sv.nsegs = nsegs;
    sv.cut = cut;
    sv.ncut = ncut;
    sv.end = end;
    sv.pause = pause;
    pump(&sv, loop, f);

    err = tn_future_error(f);
    {
        tn_http_response *r = (tn_http_response *)tn_future_value(f);
        outcome mo;
        int compare;
        check_fetch(f, (flags & F_STREAM) != 0, co.max_body_bytes);
        if (!(flags & F_STREAM)) FUZZ_CHECK(sk.calls == 0);
        if (getenv("FUZZ_VERBOSE"))
            fprintf(stderr, "fuzz_client: %zu connection(s); the fetch: err %d (%s) status %d body %zu redirects %d\n",
                    sv.nconns, err, err ? tn_strerror(err) : "", r ? r->status : 0, r ? r->body_len : sk.len,
                    r ? r->redirects : 0);
        /* The model: one connection, no redirect, ended by a FIN, all sent. */
        compare = !pause && sv.nconns == 1 && (end == F_END_FIN || end == F_END_HALF) && !sv.write_failed &&
                  sv.conns[0].sent == sv.conns[0].seg_len;
        if (compare) {
            model_fetch(segs[0], seg_len[0], method, (flags & F_STREAM) != 0, co.max_body_bytes,
                        (flags & F_REDIRECTS) != 0, &mo);
            if (mo.kind == M_REDIRECT) compare = 0;
        }
        if (compare && getenv("FUZZ_VERBOSE"))
            fprintf(stderr, "fuzz_client: model kind %d err %d status %d body %zu; client err %d status %d\n",
                    mo.kind, mo.err, mo.status, mo.body_len, err, r ? r->status : 0);
        if (compare && err == TN_ETIMEOUT && !final) {
            /* A timeout the model does not expect: a hang, or this process
             * stalled for request_timeout_ms on a busy machine. Once more
             * tells them apart. */
            retry = 1;
            compare = 0;
            free(mo.body);
        }
        if (compare) {
            int chunk_fail = (flags & F_STREAM) && (flags & F_CHUNK_FAIL);
            if (mo.kind == M_RESOLVED && chunk_fail && mo.body_len > CHUNK_FAIL_AFTER) {
                /* the callback refuses the body */
                mo.kind = M_ERROR;
                mo.err = CHUNK_FAIL_ERR;
            }
            if (mo.kind == M_ERROR) {
                /* A failing callback may see body bytes before the error
                 * a later piece holds, depending on the split. */
                int ok = err == mo.err || (chunk_fail && err == CHUNK_FAIL_ERR);
                if (!ok)
                    fprintf(stderr, "fuzz_client: the model fails with %d (%s), the client %s %d (%s)\n", mo.err,
                            tn_strerror(mo.err), err ? "fails with" : "resolves, status", err ? err : r->status,
                            err ? tn_strerror(err) : "");
                FUZZ_CHECK(ok);
            } else {
                if (err)
                    fprintf(stderr, "fuzz_client: the model resolves (status %d, %zu body bytes), the client fails: %d (%s)\n",
                            mo.status, mo.body_len, err, tn_strerror(err));
                FUZZ_CHECK(err == 0);
                FUZZ_CHECK(r->status == mo.status && r->num_headers == mo.num_headers);
                FUZZ_CHECK(strlen(r->reason) == mo.reason_len || mo.reason_len == sizeof mo.reason);
                FUZZ_CHECK(memcmp(r->reason, mo.reason, mo.reason_len) == 0);
                if (flags & F_STREAM) {
                    if (!(sk.len == mo.body_len && (!sk.len || memcmp(sk.data, mo.body, sk.len) == 0)))
                        fprintf(stderr, "fuzz_client: streamed %zu body bytes, the model %zu\n", sk.len, mo.body_len);
                    FUZZ_CHECK(sk.len == mo.body_len && (!sk.len || memcmp(sk.data, mo.body, sk.len) == 0));
                } else {
                    if (!(r->body_len == mo.body_len && (!mo.body_len || memcmp(r->body, mo.body, mo.body_len) == 0)))
                        fprintf(stderr, "fuzz_client: %zu body bytes, the model %zu\n", r->body_len, mo.body_len);
                    FUZZ_CHECK(r->body_len == mo.body_len && (!mo.body_len || memcmp(r->body, mo.body, mo.body_len) == 0));
                }
            }
            free(mo.body);
        }
    }
    /* A second fetch after a success: the pooled connection (or one the
     * server has closed meanwhile: the retry of an idempotent request). */
    if (err == 0) {
        tn_future *f2;
        tn_http_fetch_opts fo2;
        memset(&fo2, 0, sizeof fo2);
        fo2.no_redirects = fo.no_redirects;
        tn_future_release(f);
        f = tn_http_fetch(cli, g_url2, &fo2);
        FUZZ_CHECK(f != NULL);
        f2 = f;
        pump(&sv, loop, f2);
        check_fetch(f2, 0, co.max_body_bytes);
    }
    tn_future_release(f);
    for (i = 0; i < sv.nconns; i++) {
        sconn_read(&sv.conns[i]);
        check_requests(&sv.conns[i], i == 0 ? method : NULL);
    }
    tn_http_client_free(cli);
    for (i = 0; i < sv.nconns; i++) {
        if (sv.conns[i].fd >= 0) close(sv.conns[i].fd);
        free(sv.conns[i].req);
    }
    drain_backlog();
    for (i = 0; i < 100; i++) {
        tn_loop_stats st;
        tn_loop_get_stats(loop, &st);
        if (!st.futures && !st.timers && !st.callbacks && !st.handlers) break;
        step(loop, 0);
    }
    {
        tn_loop_stats st;
        tn_loop_get_stats(loop, &st);
        if (st.futures || st.timers || st.coroutines || st.handlers || st.callbacks || st.jobs)
            fprintf(stderr, "fuzz_client: left behind: futures %zu timers %zu coroutines %zu handlers %zu callbacks %zu\n",
                    st.futures, st.timers, st.coroutines, st.handlers, st.callbacks);
        FUZZ_CHECK(st.futures == 0 && st.timers == 0 && st.coroutines == 0);
        FUZZ_CHECK(st.handlers == 0 && st.callbacks == 0 && st.jobs == 0);
    }
    tn_loop_free(loop);
    free(sk.data);
    free(input);
    return retry;
}

#ifdef __cplusplus
extern "C"
#endif
    int
    LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (run_one(data, size, 0)) run_one(data, size, 1);
    return 0;
}
