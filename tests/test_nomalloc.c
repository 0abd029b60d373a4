/* TN_NO_MALLOC: every allocation from the loop's region (tn_loop_opts.heap).
 * A region is required (and must hold the loop), running out is a clean
 * NULL / TN_ENOMEM / 503, and what was freed serves again. The figures the
 * manual gives (bytes per object, a server's region for N connections) are
 * printed by nomalloc_figures (TN_TEST_FIGURES=1). In the ordinary build a
 * region is TN_ENOTSUP and tn_bytes_new works. */
#include "../tornado.h"
#include "tn_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TN_NO_MALLOC
TEST(nomalloc_region_is_not_supported_without_it) {
    static char mem[4096];
    tn_loop *l = NULL;
    tn_loop_opts o;
    tn_loop_stats st;
    tn_bytes *b;
    memset(&o, 0, sizeof o);
    o.heap = mem;
    o.heap_size = sizeof mem;
    CHECK_EQ_INT(tn_loop_new(&l, &o), TN_ENOTSUP);
    CHECK(l == NULL);
    REQUIRE((b = tn_bytes_new("abc", 3)) != NULL);
    CHECK(b->len == 3 && strcmp(b->data, "abc") == 0);
    tn_bytes_free(b);
    l = new_loop();
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.region_used, 0);
    CHECK_EQ_INT(st.region_peak, 0);
    REQUIRE((b = tn_bytes_new_in(l, "", 0)) != NULL);
    CHECK(b->len == 0 && b->data[0] == 0);
    tn_bytes_free(b);
    FREE_LOOP_CLEAN(l);
}
#else

static tn_loop *region_loop(void *mem, size_t size) {
    tn_loop *l = NULL;
    tn_loop_opts o;
    memset(&o, 0, sizeof o);
    o.heap = mem;
    o.heap_size = size;
    REQUIRE(tn_loop_new(&l, &o) == 0);
    return l;
}
static size_t region_used(tn_loop *l) {
    tn_loop_stats st;
    tn_loop_get_stats(l, &st);
    return st.region_used;
}
static size_t region_peak(tn_loop *l) {
    tn_loop_stats st;
    tn_loop_get_stats(l, &st);
    return st.region_peak;
}

TEST(nomalloc_loop_needs_a_region_that_holds_it) {
    static char tiny[64];
    tn_loop *l = NULL;
    tn_loop_opts o;
    tn_bytes *b;
    CHECK_EQ_INT(tn_loop_new(&l, NULL), TN_EINVAL);
    memset(&o, 0, sizeof o);
    CHECK_EQ_INT(tn_loop_new(&l, &o), TN_EINVAL);
    o.heap = tiny;
    o.heap_size = sizeof tiny;
    CHECK_EQ_INT(tn_loop_new(&l, &o), TN_EINVAL);
    CHECK(l == NULL);
    CHECK(tn_bytes_new("abc", 3) == NULL); /* no loop: no region */
    l = new_loop();
    REQUIRE((b = tn_bytes_new_in(l, "abc", 3)) != NULL);
    CHECK(b->len == 3 && strcmp(b->data, "abc") == 0);
    tn_bytes_free(b);
    CHECK(region_used(l) > 0 && region_peak(l) >= region_used(l));
    FREE_LOOP_CLEAN(l);
}

/* Futures until the region is spent, all freed, then as many again. */
TEST(nomalloc_futures_exhaust_cleanly_and_recover) {
    static char mem[64 * 1024];
    tn_loop *l = region_loop(mem, sizeof mem);
    tn_future **fs = (tn_future **)malloc(4096 * sizeof *fs);
    size_t n1 = 0, n2 = 0, i, base = region_used(l);
    REQUIRE(fs != NULL);
    while (n1 < 4096 && (fs[n1] = tn_future_new(l)) != NULL) n1++;
    CHECK(n1 > 100 && n1 < 4096);
    CHECK(tn_future_new(l) == NULL);
    for (i = 0; i < n1; i++) {
        tn_future_resolve(fs[i], NULL);
        tn_future_release(fs[i]);
    }
    tn_loop_step(l, 0);
    while (n2 < 4096 && (fs[n2] = tn_future_new(l)) != NULL) n2++;
    CHECK_EQ_INT(n2, n1); /* every freed block serves again */
    for (i = 0; i < n2; i++) {
        tn_future_fail(fs[i], TN_ECANCELLED);
        tn_future_release(fs[i]);
    }
    tn_loop_step(l, 0);
    CHECK(region_used(l) >= base);
    free(fs);
    FREE_LOOP_CLEAN(l);
}

struct tiny_co {
    tn_co co;
    int step;
};
static int tiny_co_fn(tn_co *co) {
    TN_BEGIN(co);
    TN_YIELD(co);
    TN_END(co);
}

/* Coroutine frames (and their futures) likewise: a spawn that cannot get
 * its memory is NULL, the frame is not leaked, and the loop goes on. */
TEST(nomalloc_coroutines_exhaust_cleanly_and_recover) {
    static char mem[128 * 1024];
    tn_loop *l = region_loop(mem, sizeof mem);
    tn_future **fs = (tn_future **)malloc(4096 * sizeof *fs);
    size_t round, n[2] = {0, 0}, i;
    REQUIRE(fs != NULL);
    for (round = 0; round < 2; round++) {
        for (;;) {
            struct tiny_co *c = TN_CO_NEW(l, struct tiny_co);
            if (!c) break;
            if (!(fs[n[round]] = tn_spawn(l, &c->co, tiny_co_fn))) break;
            if (++n[round] == 4096) break;
        }
        CHECK(n[round] > 50 && n[round] < 4096);
        for (i = 0; i < n[round]; i++) CHECK_EQ_INT(tn_run_sync(l, fs[i], 5000, NULL), 0);
    }
    CHECK(n[1] + 2 >= n[0]); /* the callback ring may have kept a grown array */
    free(fs);
    FREE_LOOP_CLEAN(l);
}

#ifndef TN_NO_HTTP_SERVER
static void h_ok(tn_http_request *req, void *arg) {
    (void)arg;
    tn_http_respond(req, 200, "text/plain", "ok", 2);
}

static int connect_to(int port) {
    struct sockaddr_in a;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0); /* the backlog completes it */
    return fd;
}
static void send_all(int fd, const char *s) { REQUIRE(send(fd, s, strlen(s), MSG_NOSIGNAL) == (ssize_t)strlen(s)); }

/* Steps the loop (this thread serves) until fd has a whole answer (head +
 * Content-Length bytes) or EOF, at most ~3 s. Returns its status, 0 for
 * EOF before a status line, -1 for nothing in time. */
static int answer_of(tn_loop *l, int fd) {
    char buf[4096];
    size_t len = 0;
    int i;
    for (i = 0; i < 3000; i++) {
        ssize_t k;
        char *end;
        tn_loop_step(l, 1);
        k = recv(fd, buf + len, sizeof buf - 1 - len, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return len >= 12 ? atoi(buf + 9) : 0;
        if (k > 0) len += (size_t)k;
        buf[len] = 0;
        if ((end = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strstr(buf, "Content-Length: ");
            size_t body = cl ? (size_t)atol(cl + 16) : 0;
            if (len >= (size_t)(end + 4 - buf) + body) return atoi(buf + 9);
        }
    }
    return -1;
}
static void pump(tn_loop *l, int ms) {
    int i;
    for (i = 0; i < ms; i++) tn_loop_step(l, 1);
}

/* A server whose region runs out: connections that each hold a buffer (a
 * head not finished) until a new one can get none; it is answered 503 or
 * closed, never crashes the server, and once those connections go the
 * region serves new ones again. */
TEST(nomalloc_server_out_of_region_sheds_and_recovers) {
    static char mem[512 * 1024];
    tn_loop *l = region_loop(mem, sizeof mem);
    tn_http_server *srv;
    int fds[200], n = 0, port, st = 200, i;
    REQUIRE(tn_http_server_new(l, NULL, &srv) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/", h_ok, NULL, NULL) == 0);
    REQUIRE(tn_http_listen(srv, "127.0.0.1", 0) == 0);
    port = tn_http_server_port(srv);
    fds[n] = connect_to(port);
    send_all(fds[n], "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_EQ_INT(answer_of(l, fds[n]), 200);
    close(fds[n]);
    /* half heads: each connection keeps its input buffer */
    while (n < 200) {
        fds[n] = connect_to(port);
        send_all(fds[n], "GET / HTTP/1.1\r\nHost: a\r\n");
        pump(l, 5);
        {
            char c;
            ssize_t k = recv(fds[n], &c, 1, MSG_DONTWAIT | MSG_PEEK);
            if (k >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) { /* answered or closed */
                st = k > 0 ? answer_of(l, fds[n]) : 0;
                n++;
                break;
            }
        }
        n++;
    }
    CHECK(n < 200);         /* the region ran out */
    CHECK(st == 503 || st == 0);
    CHECK(region_peak(l) <= sizeof mem);
    for (i = 0; i < n; i++) close(fds[i]);
    pump(l, 50);
    CHECK_EQ_INT(tn_http_server_connections(srv), 0);
    for (i = 0; i < 3; i++) { /* recovered */
        int fd = connect_to(port);
        send_all(fd, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        CHECK_EQ_INT(answer_of(l, fd), 200);
        close(fd);
    }
    tn_http_server_free(srv);
    tn_loop_step(l, 0);
    FREE_LOOP_CLEAN(l);
}

static void never(tn_loop *l, void *arg) {
    (void)l;
    (void)arg;
}

struct cdesc {
    tn_co co;
    tn_future *f;
};
static int sleeper(tn_co *co) {
    TN_BEGIN(co);
    TN_SLEEP(co, 1);
    TN_END(co);
}

/* The figures of the manual's MEMORY WITHOUT MALLOC: what each object takes
 * from the region (x86-64, this build), and a server's region for N idle
 * keep-alive connections (each has served one request). Checked loosely
 * (they are documented); printed with TN_TEST_FIGURES=1. */
TEST(nomalloc_figures) {
    static char mem[16 << 20];
    tn_loop *l = region_loop(mem, sizeof mem);
    tn_http_server *srv;
    size_t u0, loop_b, fut_b, co_b, timer_b, srv_b, p_idle[2], p_active;
    int fds[400], port, i, k, printing = getenv("TN_TEST_FIGURES") != NULL;
    tn_future *f;
    struct cdesc *c;
    loop_b = region_peak(l);
    u0 = region_used(l);
    f = tn_future_new(l);
    fut_b = region_used(l) - u0;
    tn_future_resolve(f, NULL);
    tn_future_release(f);
    u0 = region_used(l);
    c = TN_CO_NEW(l, struct cdesc);
    co_b = region_used(l) - u0; /* the frame alone */
    REQUIRE(c != NULL);
    CHECK_EQ_INT(tn_run_sync(l, tn_spawn(l, &c->co, sleeper), 5000, NULL), 0);
    {
        tn_timer t[1024];
        u0 = region_used(l);
        for (i = 0; i < 1024; i++) REQUIRE(tn_call_later(l, 100000, never, NULL, &t[i]) == 0);
        timer_b = (region_used(l) - u0) / 1024;
        for (i = 0; i < 1024; i++) tn_cancel_timer(l, t[i]);
    }
    FREE_LOOP_CLEAN(l);
    l = region_loop(mem, sizeof mem); /* the server's figures from a fresh loop */
    u0 = region_peak(l);
    REQUIRE(tn_http_server_new(l, NULL, &srv) == 0);
    REQUIRE(tn_http_route(srv, "GET", "/", h_ok, NULL, NULL) == 0);
    REQUIRE(tn_http_listen(srv, "127.0.0.1", 0) == 0);
    port = tn_http_server_port(srv);
    srv_b = region_peak(l) - u0;
    /* 100 then 300 idle keep-alive connections, each after one request */
    for (k = 0, i = 0; k < 2; k++) {
        for (; i < (k ? 300 : 100); i++) {
            fds[i] = connect_to(port);
            send_all(fds[i], "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            CHECK_EQ_INT(answer_of(l, fds[i]), 200);
        }
        p_idle[k] = region_peak(l);
    }
    /* 100 of them active at once: a head under way on each */
    for (i = 0; i < 100; i++) send_all(fds[i], "GET / HTTP/1.1\r\nHost: a\r\n");
    pump(l, 100);
    p_active = region_peak(l);
    for (i = 0; i < 300; i++) close(fds[i]);
    pump(l, 50);
    CHECK_EQ_INT(tn_http_server_connections(srv), 0);
    CHECK(loop_b > 0 && loop_b < 4096);
    CHECK(fut_b > 0 && fut_b <= 128);
    CHECK(co_b > 0 && co_b <= 128);
    CHECK(p_idle[1] > p_idle[0]);
    if (printing) {
        fprintf(stderr, "    region: loop %zu B (region bookkeeping included), future %zu B, frame of %zu B %zu B, timer %zu B\n",
                loop_b, fut_b, sizeof(struct cdesc), co_b, timer_b);
        size_t y = (p_idle[1] - p_idle[0]) / 200;
        fprintf(stderr, "    a loop and a server: %zu B + %zu B; peak with 100 idle connections %zu B, with 300 %zu B:"
                        " %zu B + N x %zu B; 100 of them active: %zu B (+%zu B each)\n",
                loop_b, srv_b, p_idle[0], p_idle[1], p_idle[0] - 100 * y, y, p_active,
                (p_active - p_idle[1]) / 100);
    }
    tn_http_server_free(srv);
    tn_loop_step(l, 0);
    FREE_LOOP_CLEAN(l);
}
#endif
#endif
