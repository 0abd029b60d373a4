/* http_util.h: the HTTP suites' harness: a tn_http_server on a loop thread
 * of its own (server_start / on_loop / server_stop), a raw blocking client
 * (cli_*), and a small independent response reader (read_response). Every
 * socket has timeouts, so a server that fails to answer fails the test
 * instead of hanging it. Included by one suite file each (static inline:
 * what a file does not use costs nothing). */
#ifndef TN_HTTP_UTIL_H
#define TN_HTTP_UTIL_H
#include "../tornado.h"
#include "tn_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SET(var, v) __atomic_store_n(&(var), (v), __ATOMIC_SEQ_CST)
#define GET(var) __atomic_load_n(&(var), __ATOMIC_SEQ_CST)

static inline void sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* The server thread                                                   */
/* ------------------------------------------------------------------ */

typedef struct server {
    tn_loop *loop;
    tn_http_server *srv;
    pthread_t thread;
    int port;
    int call_pipe[2]; /* the test thread's calls into the loop (see on_loop) */
} server;

typedef void (*routes_fn)(tn_http_server *srv);

static inline void *server_main(void *arg) {
    server *s = (server *)arg;
    tn_loop_run(s->loop);
    return NULL;
}

static inline void call_pipe_io(tn_loop *l, int fd, unsigned events, void *arg);

static inline server *server_start(const tn_http_server_opts *opts, routes_fn routes) {
    server *s = (server *)calloc(1, sizeof *s);
    REQUIRE(s != NULL);
    REQUIRE(test_loop_new(&s->loop, NULL) == 0);
    REQUIRE(pipe(s->call_pipe) == 0);
    REQUIRE(tn_add_handler(s->loop, s->call_pipe[0], TN_READ, call_pipe_io, s) == 0);
    REQUIRE(tn_http_server_new(s->loop, opts, &s->srv) == 0);
    routes(s->srv);
    REQUIRE(tn_http_listen(s->srv, "127.0.0.1", 0) == 0);
    s->port = tn_http_server_port(s->srv);
    REQUIRE(s->port > 0);
    REQUIRE(pthread_create(&s->thread, NULL, server_main, s) == 0);
    return s;
}

/* Runs fn(s, arg) on the loop thread and waits for it. The call goes
 * through a pipe the loop watches (a pointer per write, atomic for a pipe):
 * not tn_add_callback_threadsafe, which under TN_NO_THREADS is the plain
 * tn_add_callback, so the suite runs in that configuration too. */
typedef void (*loop_fn)(server *s, void *arg);
struct loop_call {
    server *s;
    loop_fn fn;
    void *arg;
    int done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static inline void loop_call_run(struct loop_call *c) {
    c->fn(c->s, c->arg);
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static inline void call_pipe_io(tn_loop *l, int fd, unsigned events, void *arg) {
    struct loop_call *c;
    (void)l;
    (void)events;
    (void)arg;
    if (read(fd, &c, sizeof c) == (ssize_t)sizeof c) loop_call_run(c);
}

static inline void on_loop(server *s, loop_fn fn, void *arg) {
    struct loop_call c;
    struct timespec until;
    int rc = 0;
    c.s = s;
    c.fn = fn;
    c.arg = arg;
    c.done = 0;
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    {
        struct loop_call *cp = &c;
        REQUIRE(write(s->call_pipe[1], &cp, sizeof cp) == (ssize_t)sizeof cp);
    }
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&c.mu);
    while (!c.done && rc == 0) rc = pthread_cond_timedwait(&c.cv, &c.mu, &until);
    pthread_mutex_unlock(&c.mu);
    REQUIRE(c.done); /* the loop thread is stuck: nothing else is safe now */
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
}

static inline void get_conns(server *s, void *arg) { *(size_t *)arg = tn_http_server_connections(s->srv); }
static inline size_t server_connections(server *s) {
    size_t n = 0;
    on_loop(s, get_conns, &n);
    return n;
}
/* Polls (up to ~5 s) until the server has n connections; returns the last
 * count seen. */
static inline size_t wait_connections(server *s, size_t n) {
    size_t got = 0;
    int i;
    for (i = 0; i < 500; i++) {
        if ((got = server_connections(s)) == n) break;
        sleep_ms(10);
    }
    return got;
}

static inline void do_stop(server *s, void *arg) {
    (void)arg;
    tn_loop_stop(s->loop);
}

/* After the loop was stopped (tn_loop_stop on its thread): frees the server
 * and checks the loop is left clean. */
static inline void server_free_stopped(server *s) {
    tn_loop_stats st;
    REQUIRE(pthread_join(s->thread, NULL) == 0);
    tn_http_server_free(s->srv);
    tn_remove_handler(s->loop, s->call_pipe[0]);
    close(s->call_pipe[0]);
    close(s->call_pipe[1]);
    tn_loop_get_stats(s->loop, &st);
    CHECK_EQ_INT(st.handlers, 0);
    CHECK_EQ_INT(st.timers, 0);
    CHECK_EQ_INT(st.futures, 0);
    CHECK_EQ_INT(st.coroutines, 0);
    tn_loop_free(s->loop);
    free(s);
}

/* Stops the loop, frees the server and checks the loop is left clean. */
static inline void server_stop(server *s) {
    on_loop(s, do_stop, NULL);
    server_free_stopped(s);
}

/* ------------------------------------------------------------------ */
/* The client                                                          */
/* ------------------------------------------------------------------ */

typedef struct client {
    int fd;
    char *buf;
    size_t len, cap; /* received, not yet consumed: buf[0 .. len) */
} client;

static inline void set_timeouts(int fd, int ms) {
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* A client's TCP socket, not yet connected, or -errno: no Nagle, 5 s
 * timeouts, and rcvbuf > 0 shrinks the receive buffer (and so the window). */
static inline int tcp_socket(int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) return -errno;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_timeouts(fd, 5000);
    return fd;
}

/* Connects fd to 127.0.0.1:port: 0 or -errno. */
static inline int tcp_connect_fd(int fd, int port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ? -errno : 0;
}

/* A connected socket (see tcp_socket), or -errno. */
static inline int tcp_connect(int port, int rcvbuf) {
    int fd = tcp_socket(rcvbuf), rc;
    if (fd < 0) return fd;
    if ((rc = tcp_connect_fd(fd, port)) < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static client *cli_open2(int port, int rcvbuf) {
    client *c = (client *)calloc(1, sizeof *c);
    REQUIRE(c != NULL);
    c->fd = tcp_connect(port, rcvbuf);
    REQUIRE(c->fd >= 0);
    return c;
}
static inline client *cli_open(int port) { return cli_open2(port, 0); }

/* Closes with a reset (SO_LINGER 0): the client is gone, for sure. */
static inline void cli_reset(client *c) {
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

static inline void cli_close(client *c) {
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c->buf);
    free(c);
}

/* Sends everything; 0, or -errno (the server may close on us). */
static inline int cli_send(client *c, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}
static inline int cli_sends(client *c, const char *s) { return cli_send(c, s, strlen(s)); }

/* Reads once (at most max bytes, 0: as much as fits). > 0 bytes, 0 at EOF,
 * -1 on a timeout or an error (ECONNRESET counts as EOF). */
static inline int cli_fill_max(client *c, size_t max) {
    ssize_t n;
    size_t room;
    if (c->cap - c->len < 65536) {
        size_t ncap = c->cap ? c->cap * 2 : 131072;
        char *nb;
        while (ncap - c->len < 65536) ncap *= 2;
        nb = (char *)realloc(c->buf, ncap);
        REQUIRE(nb != NULL);
        c->buf = nb;
        c->cap = ncap;
    }
    room = c->cap - c->len;
    if (max && max < room) room = max;
    do
        n = recv(c->fd, c->buf + c->len, room, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) return errno == ECONNRESET ? 0 : -1;
    c->len += (size_t)n;
    return (int)(n > 0);
}
static inline int cli_fill(client *c) { return cli_fill_max(c, 0); }

static inline void cli_consume(client *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Makes sure buf holds n bytes: 0 or -1. */
static inline int cli_need(client *c, size_t n) {
    while (c->len < n)
        if (cli_fill(c) <= 0) return -1;
    return 0;
}

/* The offset of the first CRLF at or after from (reading more as needed),
 * or -1. */
static inline long cli_find(client *c, size_t from, const char *pat) {
    size_t pl = strlen(pat);
    for (;;) {
        size_t i;
        for (i = from; i + pl <= c->len; i++)
            if (memcmp(c->buf + i, pat, pl) == 0) return (long)i;
        if (c->len > (64u << 20)) return -1;
        if (cli_fill(c) <= 0) return -1;
    }
}

/* True once the server has closed the connection (read gives EOF or a
 * reset); false if bytes arrive instead or nothing does within the socket
 * timeout. Bytes still buffered mean "not closed". */
static inline int cli_closed(client *c) {
    int rc;
    if (c->len) return 0;
    rc = cli_fill(c);
    return rc == 0;
}

typedef struct response {
    int status, minor;
    char head[16384]; /* the status line and fields, NUL-terminated */
    char *body;
    size_t body_len;
    int chunked;
} response;

static inline void resp_free(response *r) {
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

/* The value of the first field name (case-insensitive) in the head, copied
 * to a static buffer; NULL when absent. */
static const char *resp_header(const response *r, const char *name) {
    static char val[4096];
    const char *p = strstr(r->head, "\r\n");
    size_t nl = strlen(name);
    while (p && p[2]) {
        const char *line = p + 2, *end = strstr(line, "\r\n");
        if (!end) end = line + strlen(line);
        if ((size_t)(end - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            size_t n;
            while (*v == ' ' || *v == '\t') v++;
            n = (size_t)(end - v);
            if (n >= sizeof val) n = sizeof val - 1;
            memcpy(val, v, n);
            val[n] = 0;
            return val;
        }
        p = *end ? end : NULL;
    }
    return NULL;
}

static inline void body_append(response *r, const char *p, size_t n, size_t *cap) {
    if (r->body_len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        char *nb;
        while (ncap < r->body_len + n + 1) ncap *= 2;
        nb = (char *)realloc(r->body, ncap);
        REQUIRE(nb != NULL);
        r->body = nb;
        *cap = ncap;
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = 0;
}

/* Reads one response. head_request: the request was HEAD (no body).
 * Returns 0, or -1 when the bytes do not make a response (or stop). */
static inline int read_response(client *c, response *r, int head_request) {
    long end = cli_find(c, 0, "\r\n\r\n");
    size_t cap = 0;
    const char *cl, *te;
    memset(r, 0, sizeof *r);
    r->status = -1;
    if (end < 0 || (size_t)end + 2 >= sizeof r->head) return -1;
    memcpy(r->head, c->buf, (size_t)end + 2);
    r->head[end + 2] = 0;
    cli_consume(c, (size_t)end + 4);
    if (sscanf(r->head, "HTTP/1.%d %d", &r->minor, &r->status) != 2) return -1;
    body_append(r, "", 0, &cap); /* body is never NULL */
    if (head_request || (r->status >= 100 && r->status < 200) || r->status == 204 || r->status == 304)
        return 0;
    te = resp_header(r, "Transfer-Encoding");
    if (te && strstr(te, "chunked")) {
        r->chunked = 1;
        for (;;) {
            long eol = cli_find(c, 0, "\r\n");
            unsigned long size;
            char *e;
            if (eol < 0) return -1;
            size = strtoul(c->buf, &e, 16);
            if (e == c->buf) return -1;
            cli_consume(c, (size_t)eol + 2);
            if (size == 0) { /* trailer section, up to an empty line */
                for (;;) {
                    eol = cli_find(c, 0, "\r\n");
                    if (eol < 0) return -1;
                    cli_consume(c, (size_t)eol + 2);
                    if (eol == 0) return 0;
                }
            }
            if (cli_need(c, size + 2)) return -1;
            if (c->buf[size] != '\r' || c->buf[size + 1] != '\n') return -1;
            body_append(r, c->buf, size, &cap);
            cli_consume(c, size + 2);
        }
    }
    cl = resp_header(r, "Content-Length");
    if (cl) {
        size_t n = (size_t)strtoull(cl, NULL, 10);
        if (cli_need(c, n)) return -1;
        body_append(r, c->buf, n, &cap);
        cli_consume(c, n);
        return 0;
    }
    for (;;) { /* close-delimited */
        int rc = cli_fill(c);
        if (rc < 0) return -1;
        body_append(r, c->buf, c->len, &cap);
        cli_consume(c, c->len);
        if (rc == 0) return 0;
    }
}

/* Sends req and reads its response. */
static inline int roundtrip(client *c, const char *req, response *r) {
    if (cli_sends(c, req)) return -1;
    return read_response(c, r, strncmp(req, "HEAD ", 5) == 0);
}

static inline int body_is(const response *r, const char *s) {
    return r->body && r->body_len == strlen(s) && memcmp(r->body, s, r->body_len) == 0;
}
static inline int header_is(const response *r, const char *name, const char *value) {
    const char *v = resp_header(r, name);
    return v && strcasecmp(v, value) == 0;
}


#endif
