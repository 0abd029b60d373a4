/* TCP streams as futures: tn_tcp_connect, tn_tcp_listen and the tn_stream
 * reads and writes. Each test runs one loop on the test thread with a
 * tn_tcp_listen server in it and one coroutine that plays both ends (the
 * accepted stream and the connected one), so every step happens in a known
 * order. Sleeps between writes only make the bytes arrive in separate reads;
 * nothing asserts a timing. Everything stays on 127.0.0.1. */
#include "../tornado.h"
#include "tn_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* A listener in the test's loop: it keeps what it accepts.            */
/* ------------------------------------------------------------------ */

#define MAX_ACC 8

typedef struct tsrv {
    tn_loop *loop;
    int lfd, port;
    tn_stream *acc[MAX_ACC];
    int nacc;
    int echo; /* 1: each accepted stream gets an echo coroutine instead */
    int echoes_running;
} tsrv;

/* The echo server: a line in, the same line out, until the peer closes. */
struct echo_frame {
    tn_co co;
    tsrv *srv;
    tn_stream *s;
};

static int echo_fn(tn_co *co) {
    struct echo_frame *e = (struct echo_frame *)co;
    TN_BEGIN(co);
    e->srv->echoes_running++;
    for (;;) {
        TN_AWAIT(co, tn_stream_read_until(e->s, "\n", 65536));
        if (co->err) break;
        {
            tn_bytes *b = (tn_bytes *)co->value;
            tn_future *w = tn_stream_write(e->s, b->data, b->len); /* copies */
            tn_bytes_free(b);
            TN_AWAIT(co, w);
        }
        if (co->err) break;
    }
    tn_stream_close(e->s);
    e->srv->echoes_running--;
    TN_END(co);
}

static void on_accept(tn_stream *s, void *arg) {
    tsrv *srv = (tsrv *)arg;
    if (srv->echo) {
        struct echo_frame *e = TN_CO_NEW(srv->loop, struct echo_frame);
        REQUIRE(e != NULL);
        e->srv = srv;
        e->s = s;
        tn_future_release(tn_spawn(srv->loop, &e->co, echo_fn));
        srv->nacc++;
        return;
    }
    if (srv->nacc >= MAX_ACC) {
        tn_stream_close(s);
        return;
    }
    srv->acc[srv->nacc++] = s;
}

static void tsrv_start(tsrv *srv, int echo) {
    memset(srv, 0, sizeof *srv);
    srv->echo = echo;
    REQUIRE(test_loop_new(&srv->loop, NULL) == 0);
    REQUIRE(tn_tcp_listen(srv->loop, "127.0.0.1", 0, on_accept, srv, &srv->lfd, &srv->port) == 0);
    REQUIRE(srv->port > 0);
}

/* Closes what is left, checks that nothing is still registered with the
 * loop, and frees it. */
static void tsrv_stop(tsrv *srv) {
    tn_loop_stats st;
    int i;
    if (!srv->echo)
        for (i = 0; i < srv->nacc; i++)
            if (srv->acc[i]) tn_stream_close(srv->acc[i]);
    for (i = 0; i < 200 && srv->echoes_running; i++) tn_loop_step(srv->loop, 10);
    CHECK_EQ_INT(srv->echoes_running, 0);
    tn_tcp_unlisten(srv->loop, srv->lfd);
    tn_loop_get_stats(srv->loop, &st);
    CHECK_EQ_INT(st.handlers, 0);
    tn_loop_free(srv->loop);
}

/* Runs a coroutine frame (from TN_CO_NEW) to its end; returns its error. */
static int run_co(tn_loop *l, tn_co *co, tn_co_fn fn) {
    return tn_run_sync(l, tn_spawn(l, co, fn), 10000, NULL);
}

/* Checks a read's outcome: resolved with exactly `want`. Frees the bytes. */
static void check_bytes(int err, void *value, const char *want) {
    tn_bytes *b = (tn_bytes *)value;
    CHECK_EQ_INT(err, 0);
    if (err || !b) return;
    CHECK_EQ_INT(b->len, strlen(want));
    CHECK(b->len == strlen(want) && memcmp(b->data, want, b->len) == 0);
    CHECK(b->data[b->len] == 0); /* NUL-terminated, not counted */
    if (b->len != strlen(want) || memcmp(b->data, want, b->len) != 0)
        fprintf(stderr, "    got \"%s\", want \"%s\"\n", b->data, want);
    tn_bytes_free(b);
}

/* The frame the tests below share: c is the connecting end, s the
 * accepted one. */
struct t {
    tn_co co;
    tsrv *srv;
    tn_stream *c, *s;
    int i, n;
    char *big;
    size_t big_len;
    tn_future *fs[2];
    void *vals[2];
};

/* Connects c and waits until the server has accepted it as s. */
#define CONNECT_PAIR(co, t)                                                     \
    do {                                                                        \
        TN_AWAIT(co, tn_tcp_connect((co)->loop, "127.0.0.1", (t)->srv->port, 2000)); \
        REQUIRE((co)->err == 0);                                                \
        (t)->c = (tn_stream *)(co)->value;                                      \
        TN_WAIT_UNTIL(co, (t)->srv->nacc > 0);                                  \
        (t)->s = (t)->srv->acc[0];                                              \
    } while (0)

static int write_str(tn_stream *s, const char *str) {
    /* The write future is released unawaited: it resolves on its own. */
    tn_future *f = tn_stream_write(s, str, strlen(str));
    if (!f) return TN_ENOMEM;
    tn_future_release(f);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Echo server: connect, lines both ways, close.                       */
/* ------------------------------------------------------------------ */

static int echo_client(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, tn_tcp_connect(co->loop, "127.0.0.1", t->srv->port, 2000));
    REQUIRE(co->err == 0);
    t->c = (tn_stream *)co->value;
    CHECK(tn_stream_fd(t->c) >= 0);
    for (t->i = 0; t->i < 3; t->i++) {
        TN_AWAIT(co, tn_stream_write(t->c, "hello, echo\n", 12));
        CHECK_EQ_INT(co->err, 0);
        TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 100));
        check_bytes(co->err, co->value, "hello, echo\n");
    }
    /* two lines in one write come back as two reads */
    TN_AWAIT(co, tn_stream_write(t->c, "one\ntwo\n", 8));
    CHECK_EQ_INT(co->err, 0);
    TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 100));
    check_bytes(co->err, co->value, "one\n");
    TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 100));
    check_bytes(co->err, co->value, "two\n");
    tn_stream_close(t->c);
    TN_END(co);
}

TEST(tcp_connect_echo) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 1);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, echo_client), 0);
    CHECK_EQ_INT(srv.nacc, 1);
    tsrv_stop(&srv);
}

/* ------------------------------------------------------------------ */
/* read_until                                                          */
/* ------------------------------------------------------------------ */

static int until_split(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    /* "\r\n" split across two writes that arrive as two reads */
    write_str(t->s, "first\r");
    TN_SLEEP(co, 20);
    write_str(t->s, "\nsecond");
    TN_AWAIT(co, tn_stream_read_until(t->c, "\r\n", 100));
    check_bytes(co->err, co->value, "first\r\n");
    /* a 12-byte delimiter in three pieces, the read already waiting */
    t->fs[0] = tn_stream_read_until(t->c, "--boundary--", 100);
    TN_SLEEP(co, 10);
    write_str(t->s, "-text--bou");
    TN_SLEEP(co, 10);
    write_str(t->s, "nda");
    TN_SLEEP(co, 10);
    write_str(t->s, "ry--tail\n");
    TN_AWAIT(co, t->fs[0]);
    check_bytes(co->err, co->value, "second-text--boundary--");
    /* what followed the delimiter stays buffered for the next read */
    TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 100));
    check_bytes(co->err, co->value, "tail\n");
    /* a delimiter that matches the bytes already read but not the end */
    write_str(t->s, "aab");
    TN_SLEEP(co, 10);
    write_str(t->s, "aabc!");
    TN_AWAIT(co, tn_stream_read_until(t->c, "aabc", 100));
    check_bytes(co->err, co->value, "aabaabc");
    TN_AWAIT(co, tn_stream_read_bytes(t->c, 1));
    check_bytes(co->err, co->value, "!");
    /* one read at a time */
    t->fs[0] = tn_stream_read_until(t->c, "\n", 100);
    TN_AWAIT(co, tn_stream_read_bytes(t->c, 1));
    CHECK_EQ_INT(co->err, TN_ESTATE);
    write_str(t->s, "x\n");
    TN_AWAIT(co, t->fs[0]);
    check_bytes(co->err, co->value, "x\n");
    /* an empty or over-long delimiter */
    TN_AWAIT(co, tn_stream_read_until(t->c, "", 100));
    CHECK_EQ_INT(co->err, TN_EINVAL);
    TN_AWAIT(co, tn_stream_read_until(t->c, "0123456789abcdefg", 100));
    CHECK_EQ_INT(co->err, TN_EINVAL);
    tn_stream_close(t->c);
    TN_END(co);
}

TEST(tcp_read_until_delimiter_split_across_writes) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, until_split), 0);
    tsrv_stop(&srv);
}

static int until_max(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    /* 100 bytes and no delimiter: more than max 50 -> TN_ETOOLARGE, even
     * though the peer stays open (it must not wait for more) */
    t->big = (char *)malloc(101);
    memset(t->big, 'a', 100);
    t->big[100] = 0;
    write_str(t->s, t->big);
    TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 50));
    CHECK_EQ_INT(co->err, TN_ETOOLARGE);
    free(t->big);
    tn_stream_close(t->c);
    t->c = NULL;
    TN_END(co);
}

static int until_max_found_late(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    /* the delimiter is there, but only after max bytes: still too large */
    write_str(t->s, "0123456789abcdefghij\n");
    TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 10));
    CHECK_EQ_INT(co->err, TN_ETOOLARGE);
    tn_stream_close(t->c);
    TN_END(co);
}

static int until_max_exact(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    /* exactly max bytes including the delimiter is allowed */
    write_str(t->s, "012345678\n");
    TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 10));
    check_bytes(co->err, co->value, "012345678\n");
    /* arriving byte by byte past max without a delimiter fails too */
    for (t->i = 0; t->i < 12; t->i++) {
        write_str(t->s, "z");
        TN_SLEEP(co, 2);
    }
    TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 10));
    CHECK_EQ_INT(co->err, TN_ETOOLARGE);
    tn_stream_close(t->c);
    TN_END(co);
}

TEST(tcp_read_until_over_max_is_too_large) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, until_max), 0);
    tsrv_stop(&srv);

    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, until_max_found_late), 0);
    tsrv_stop(&srv);

    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, until_max_exact), 0);
    tsrv_stop(&srv);
}

/* ------------------------------------------------------------------ */
/* read_bytes, read_until_close, a peer that closes early              */
/* ------------------------------------------------------------------ */

static int bytes_exact(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    write_str(t->s, "0123456789");
    TN_AWAIT(co, tn_stream_read_bytes(t->c, 4));
    check_bytes(co->err, co->value, "0123");
    TN_AWAIT(co, tn_stream_read_bytes(t->c, 6));
    check_bytes(co->err, co->value, "456789");
    /* the read waits across several writes and takes no more than asked */
    t->fs[0] = tn_stream_read_bytes(t->c, 7);
    write_str(t->s, "abc");
    TN_SLEEP(co, 10);
    write_str(t->s, "def");
    TN_SLEEP(co, 10);
    CHECK(!tn_future_done(t->fs[0])); /* 6 of 7 bytes: still waiting */
    write_str(t->s, "ghij");
    TN_AWAIT(co, t->fs[0]);
    check_bytes(co->err, co->value, "abcdefg");
    TN_AWAIT(co, tn_stream_read_bytes(t->c, 3));
    check_bytes(co->err, co->value, "hij");
    /* zero bytes resolve at once */
    TN_AWAIT(co, tn_stream_read_bytes(t->c, 0));
    check_bytes(co->err, co->value, "");
    /* a large read: 3 MiB, more than any buffer of the stream */
    t->big_len = 3u << 20;
    t->big = (char *)malloc(t->big_len + 1);
    for (t->i = 0; (size_t)t->i < t->big_len; t->i++) t->big[t->i] = (char)('a' + t->i % 23);
    t->big[t->big_len] = 0;
    t->fs[0] = tn_stream_write(t->s, t->big, t->big_len);
    t->fs[1] = tn_stream_read_bytes(t->c, t->big_len);
    TN_AWAIT(co, tn_all(co->loop, t->fs, 2, t->vals));
    CHECK_EQ_INT(co->err, 0);
    if (!co->err) {
        tn_bytes *b = (tn_bytes *)t->vals[1];
        CHECK_EQ_INT(b->len, t->big_len);
        CHECK(b->len == t->big_len && memcmp(b->data, t->big, t->big_len) == 0);
        tn_bytes_free(b);
    }
    free(t->big);
    tn_stream_close(t->c);
    TN_END(co);
}

TEST(tcp_read_bytes_exact) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, bytes_exact), 0);
    tsrv_stop(&srv);
}

static int until_close(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    t->fs[0] = tn_stream_read_until_close(t->c, 1000);
    TN_AWAIT(co, tn_stream_write(t->s, "abc", 3));
    CHECK_EQ_INT(co->err, 0);
    TN_SLEEP(co, 10);
    TN_AWAIT(co, tn_stream_write(t->s, "def\n", 4));
    CHECK_EQ_INT(co->err, 0);
    TN_SLEEP(co, 10);
    CHECK(!tn_future_done(t->fs[0])); /* the peer is still open */
    /* both writes resolved (they are on the socket): now close */
    tn_stream_close(t->s);
    t->srv->acc[0] = NULL;
    TN_AWAIT(co, t->fs[0]);
    check_bytes(co->err, co->value, "abcdef\n");
    /* after the close, every read fails with TN_ECLOSED */
    TN_AWAIT(co, tn_stream_read_bytes(t->c, 1));
    CHECK_EQ_INT(co->err, TN_ECLOSED);
    tn_stream_close(t->c);
    TN_END(co);
}

static int until_close_max(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    write_str(t->s, "0123456789012345678901234567890123456789");
    TN_AWAIT(co, tn_stream_read_until_close(t->c, 16));
    CHECK_EQ_INT(co->err, TN_ETOOLARGE);
    tn_stream_close(t->c);
    TN_END(co);
}

TEST(tcp_read_until_close) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, until_close), 0);
    tsrv_stop(&srv);

    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, until_close_max), 0);
    tsrv_stop(&srv);
}

static int closed_early(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    /* 5 of 10 bytes, then the peer closes: TN_ECLOSED, not a short read */
    t->fs[0] = tn_stream_read_bytes(t->c, 10);
    write_str(t->s, "12345");
    TN_SLEEP(co, 10);
    tn_stream_close(t->s);
    t->srv->acc[0] = NULL;
    TN_AWAIT(co, t->fs[0]);
    CHECK_EQ_INT(co->err, TN_ECLOSED);
    tn_stream_close(t->c);
    TN_END(co);
}

static int closed_early_until(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    /* the same for read_until: the delimiter never comes */
    write_str(t->s, "no newline");
    tn_stream_close(t->s);
    t->srv->acc[0] = NULL;
    TN_AWAIT(co, tn_stream_read_until(t->c, "\n", 100));
    CHECK_EQ_INT(co->err, TN_ECLOSED);
    tn_stream_close(t->c);
    TN_END(co);
}

static int closed_by_us(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    /* closing our own stream fails its pending read with TN_ECLOSED */
    t->fs[0] = tn_stream_read_bytes(t->c, 10);
    tn_stream_close(t->c);
    TN_AWAIT(co, t->fs[0]);
    CHECK_EQ_INT(co->err, TN_ECLOSED);
    TN_END(co);
}

TEST(tcp_peer_closes_before_read_completes) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, closed_early), 0);
    tsrv_stop(&srv);

    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, closed_early_until), 0);
    tsrv_stop(&srv);

    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, closed_by_us), 0);
    tsrv_stop(&srv);
}

/* ------------------------------------------------------------------ */
/* Writes                                                              */
/* ------------------------------------------------------------------ */

static void on_close_cb(tn_stream *s, void *arg) {
    (void)s;
    (*(int *)arg)++;
}

static int writes(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    /* a small write resolves once it is on the socket */
    TN_AWAIT(co, tn_stream_write(t->c, "ping", 4));
    CHECK_EQ_INT(co->err, 0);
    CHECK(co->value == NULL);
    TN_AWAIT(co, tn_stream_read_bytes(t->s, 4));
    check_bytes(co->err, co->value, "ping");
    /* 32 MiB cannot fit in the socket buffers (Linux autotunes them to a
     * few MiB): the write future stays pending until the reader has taken
     * most of it, then resolves */
    t->big_len = 32u << 20;
    t->big = (char *)malloc(t->big_len);
    for (t->i = 0; (size_t)t->i < t->big_len; t->i++) t->big[t->i] = (char)(t->i * 7 + 3);
    t->fs[0] = tn_stream_write(t->c, t->big, t->big_len);
    TN_SLEEP(co, 20);
    CHECK(!tn_future_done(t->fs[0])); /* nobody reads yet: cannot be written */
    TN_AWAIT(co, tn_stream_read_bytes(t->s, t->big_len));
    CHECK_EQ_INT(co->err, 0);
    if (!co->err) {
        tn_bytes *b = (tn_bytes *)co->value;
        CHECK(b->len == t->big_len && memcmp(b->data, t->big, t->big_len) == 0);
        tn_bytes_free(b);
    }
    TN_AWAIT(co, t->fs[0]);
    CHECK_EQ_INT(co->err, 0);
    free(t->big);
    /* writes resolve in order; a zero-length one too */
    t->fs[0] = tn_stream_write(t->c, "a", 1);
    t->fs[1] = tn_stream_write(t->c, "", 0);
    TN_AWAIT(co, tn_all(co->loop, t->fs, 2, NULL));
    CHECK_EQ_INT(co->err, 0);
    TN_AWAIT(co, tn_stream_read_bytes(t->s, 1));
    check_bytes(co->err, co->value, "a");
    /* on_close: the peer closing is reported to the stream's owner */
    t->n = 0;
    tn_stream_on_close(t->c, on_close_cb, &t->n);
    tn_stream_close(t->s);
    t->srv->acc[0] = NULL;
    TN_WAIT_UNTIL(co, t->n > 0);
    CHECK_EQ_INT(t->n, 1);
    tn_stream_close(t->c);
    TN_END(co);
}

TEST(tcp_write_future_resolves) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, writes), 0);
    tsrv_stop(&srv);
}

/* A write queued just before the peer resets must fail, not hang. */
static int write_to_closed(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    CONNECT_PAIR(co, t);
    {
        /* RST instead of FIN: linger 0 */
        struct linger lg;
        lg.l_onoff = 1;
        lg.l_linger = 0;
        setsockopt(tn_stream_fd(t->s), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    tn_stream_close(t->s);
    t->srv->acc[0] = NULL;
    TN_SLEEP(co, 20);
    /* keep writing until the reset is noticed: then the futures fail */
    t->big_len = 1u << 20;
    t->big = (char *)calloc(1, t->big_len);
    for (t->i = 0; t->i < 50; t->i++) {
        TN_AWAIT(co, tn_stream_write(t->c, t->big, t->big_len));
        if (co->err) break;
    }
    CHECK(co->err != 0);
    free(t->big);
    tn_stream_close(t->c);
    TN_END(co);
}

TEST(tcp_write_after_peer_reset_fails) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, write_to_closed), 0);
    tsrv_stop(&srv);
}

/* ------------------------------------------------------------------ */
/* Connecting: refused, timed out, names                               */
/* ------------------------------------------------------------------ */

TEST(tcp_connect_refused) {
    tn_loop *l;
    struct sockaddr_in a;
    socklen_t sl = sizeof a;
    int fd, port;
    void *v = NULL;
    /* a port bound but not listening refuses connections (RST), and nobody
     * else can take it meanwhile */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &sl) == 0);
    port = ntohs(a.sin_port);
    REQUIRE(test_loop_new(&l, NULL) == 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_tcp_connect(l, "127.0.0.1", port, 2000), 5000, &v), TN_EREFUSED);
    CHECK(v == NULL);
    /* no timeout at all: the refusal still ends it */
    CHECK_EQ_INT(tn_run_sync(l, tn_tcp_connect(l, "127.0.0.1", port, 0), 5000, &v), TN_EREFUSED);
    /* a bad port is an argument error */
    CHECK_EQ_INT(tn_run_sync(l, tn_tcp_connect(l, "127.0.0.1", 0, 0), 5000, &v), TN_EINVAL);
    CHECK_EQ_INT(tn_run_sync(l, tn_tcp_connect(l, "127.0.0.1", 70000, 0), 5000, &v), TN_EINVAL);
    close(fd);
    tn_loop_free(l);
}

/* A listener whose accept queue is full drops new SYNs (Linux), so a
 * connect to it stays in SYN-SENT: a connect timeout that stays on
 * loopback. The listener never accepts; non-blocking connects fill its
 * queue (backlog 0 holds one) until one no longer completes. Returns the
 * listener fd and its port; fills[] receive the filler fds. */
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
        if (poll(&p, 1, 100) == 0) stuck++; /* this one hangs in SYN-SENT */
    }
    /* If even the last filler completed, the kernel is not dropping SYNs
     * and the caller's connect would not time out. */
    REQUIRE(stuck > 0);
    return lfd;
}

static void close_fills(int lfd, int fills[NFILL]) {
    int i;
    for (i = 0; i < NFILL; i++) close(fills[i]);
    close(lfd);
}

TEST(tcp_connect_timeout_backlog_full) {
    tn_loop *l;
    tn_loop_stats st;
    int lfd, port, fills[NFILL];
    void *v = NULL;
    lfd = full_listener(&port, fills);
    REQUIRE(test_loop_new(&l, NULL) == 0);
    CHECK_EQ_INT(tn_run_sync(l, tn_tcp_connect(l, "127.0.0.1", port, 200), 10000, &v), TN_ECONNECTTIMEOUT);
    CHECK(v == NULL);
    /* the timed-out attempt left nothing behind in the loop */
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.handlers, 0);
    CHECK_EQ_INT(st.timers, 0);
    /* cancelling a pending connect stops it as well */
    {
        tn_future *f = tn_tcp_connect(l, "127.0.0.1", port, 0);
        CHECK_EQ_INT(tn_run_sync(l, tn_with_timeout(l, f, 100), 10000, NULL), TN_ETIMEOUT);
        tn_loop_get_stats(l, &st);
        CHECK_EQ_INT(st.handlers, 0);
    }
    tn_loop_free(l);
    close_fills(lfd, fills);
}

static int resolve_localhost(tn_co *co) {
    struct t *t = (struct t *)co;
    TN_BEGIN(co);
    TN_AWAIT(co, tn_tcp_connect(co->loop, "localhost", t->srv->port, 5000));
    CHECK_EQ_INT(co->err, 0);
    if (co->err) TN_RETURN(co, NULL);
    t->c = (tn_stream *)co->value;
    TN_WAIT_UNTIL(co, t->srv->nacc > 0);
    t->s = t->srv->acc[0];
    write_str(t->c, "via localhost\n");
    TN_AWAIT(co, tn_stream_read_until(t->s, "\n", 100));
    check_bytes(co->err, co->value, "via localhost\n");
    tn_stream_close(t->c);
    TN_END(co);
}

TEST(tcp_resolve_localhost) {
    tsrv srv;
    struct t *t;
    tsrv_start(&srv, 0);
    t = TN_CO_NEW(srv.loop, struct t);
    t->srv = &srv;
    CHECK_EQ_INT(run_co(srv.loop, &t->co, resolve_localhost), 0);
    CHECK_EQ_INT(srv.nacc, 1);
    tsrv_stop(&srv);
}

TEST(tcp_resolve_failure) {
    tn_loop *l;
    tn_loop_stats st;
    void *v = NULL;
    REQUIRE(test_loop_new(&l, NULL) == 0);
    /* .invalid never resolves (RFC 6761) */
    CHECK_EQ_INT(tn_run_sync(l, tn_tcp_connect(l, "nosuchhost.invalid", 80, 10000), 15000, &v), TN_ERESOLVE);
    CHECK(v == NULL);
    tn_loop_get_stats(l, &st);
    CHECK_EQ_INT(st.handlers, 0);
    CHECK_EQ_INT(st.timers, 0);
    tn_loop_free(l);
}

/* A listener at EMFILE: accept fails and the listener stays readable; the
 * loop must not spin on it (it pauses the listener 100 ms at a time), and
 * accepting resumes once fds are free. */
static int emfile_accepted;
static void emfile_on_accept(tn_stream *s, void *arg) {
    (void)arg;
    emfile_accepted++;
    tn_stream_close(s);
}
TEST(tcp_listener_at_emfile_does_not_spin) {
    tn_loop *l = new_loop();
    struct rlimit rl, low;
    int lfd, port, fds[64], n = 0, i, probe, steps = 0;
    struct timespec t0, t1;
    REQUIRE(tn_tcp_listen(l, "127.0.0.1", 0, emfile_on_accept, NULL, &lfd, &port) == 0);
    REQUIRE(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    probe = dup(0);
    REQUIRE(probe >= 0);
    close(probe);
    low = rl;
    low.rlim_cur = (rlim_t)probe + 4;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    for (i = 0; i < 64; i++) {
        struct sockaddr_in a;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) break;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            close(fd);
            break;
        }
        fds[n++] = fd;
    }
    REQUIRE(n > 0);
    /* The table is full: the accepts fail. 300 ms of steps of up to 50 ms
     * each: a spinning listener makes each return at once. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        CHECK_EQ_INT(tn_loop_step(l, 50), 0);
        steps++;
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 300);
    CHECK(steps < 100);
    if (steps >= 100) fprintf(stderr, "    %d steps in 300 ms\n", steps);
    for (i = 0; i < n; i++) close(fds[i]);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    for (i = 0; i < 40 && emfile_accepted < n; i++) CHECK_EQ_INT(tn_loop_step(l, 50), 0);
    /* The backlog drains once fds are free. Not under valgrind: its accept
     * takes the connection and closes the fd itself when it is over the
     * limit, so those clients are gone before we see them. */
    if (!getenv("TN_VALGRIND")) CHECK_EQ_INT(emfile_accepted, n);
    else CHECK(emfile_accepted >= 1);
    tn_tcp_unlisten(l, lfd);
    FREE_LOOP_CLEAN(l);
}
