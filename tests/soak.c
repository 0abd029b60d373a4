/* The SOAK test: a mixed workload against examples/httpbin for SOAK_SECS
 * seconds (default 60), from worker processes that each run one kind of
 * client in a loop:
 *
 *   keepalive  GET /, /headers, /query, /status/2xx on one connection
 *   pipeline   16 pipelined GET /query?a=N per write, answers checked in order
 *   echo       POST /echo bodies of 0..128 KiB, echoed byte for byte
 *   upload     chunked POST /upload of 0..2 MiB in random pieces (Adler-32)
 *   stream     GET /stream/N, N < 20000 (each line checked) and GET /bytes/N,
 *              N < 1 MiB (the pattern)
 *   delay      GET /delay/N, 0..200 ms
 *   early      clients that leave early: mid-head, mid-body, mid-response,
 *              during a coroutine handler, by reset or by close
 *   short      one request per connection (Connection: close): hundreds of
 *              connections a second, so that what a connection leaks shows
 *
 * After a warm-up (the first 20% of the time) the server's RSS must stay
 * within 1 MiB of its post-warm-up value; at the end its fd count must be
 * back at its baseline; and there must be no unexpected error (every
 * non-2xx or failed request the workload did not intend counts).
 *
 *   make soak               (SOAK_SECS=600 make soak for ten minutes) */
#include "tn_test.h"
#include "abuse.h"

enum { W_KEEPALIVE, W_PIPELINE, W_ECHO, W_UPLOAD, W_STREAM, W_DELAY, W_EARLY, W_SHORT, W_COUNT };
static const char *wnames[W_COUNT] = {"keepalive", "pipeline", "echo", "upload", "stream", "delay", "early", "short"};

struct wstats {
    long ok, err, intended;
    long long bytes;
    char first_err[200];
};

static unsigned long long rng_state;
static unsigned rnd(unsigned n) { /* xorshift64*: 0..n-1 */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (unsigned)((rng_state * 2685821657736338717ULL) >> 33) % (n ? n : 1);
}

static struct wstats st;
static int port;
static struct ab_cli cl;
static struct ab_resp rs;
static char pool[1 << 20]; /* request bodies are slices of this */

static void fail(const char *fmt, ...) {
    va_list ap;
    st.err++;
    if (st.first_err[0]) return;
    va_start(ap, fmt);
    vsnprintf(st.first_err, sizeof st.first_err, fmt, ap);
    va_end(ap);
}

#define FAIL(...)          \
    do {                   \
        fail(__VA_ARGS__); \
        return;            \
    } while (0)

/* The worker's connection, reconnected when it has none. */
static int conn(void) {
    if (cl.fd < 0) {
        int fd = ab_connect(port, 0);
        if (fd < 0) return -1;
        ab_cli_init(&cl, fd);
    }
    return 0;
}
static void drop(void) {
    if (cl.fd >= 0) close(cl.fd);
    cl.fd = -1;
}

/* Sends req (and body) on the connection and reads one answer. 0 or the
 * AB_* code; the connection is dropped on any failure. */
static int exchange(const char *req, const char *body, size_t blen, ab_body_fn fn, void *arg) {
    int rc;
    if (conn()) return AB_RESET;
    ab_resp_init(&rs, fn, arg);
    if (ab_sends(cl.fd, req) || (blen && ab_send(cl.fd, body, blen))) {
        drop();
        return AB_RESET;
    }
    rc = ab_read_resp(&cl, &rs, 15000);
    if (rc || rs.conn_close) drop();
    st.bytes += rs.body_len;
    return rc;
}

/* ---- body checkers */
struct cmp { const char *want; size_t len, at; int bad; };
static void cmp_body(void *arg, const char *p, size_t n) {
    struct cmp *c = (struct cmp *)arg;
    if (c->at + n > c->len || memcmp(c->want + c->at, p, n) != 0) c->bad = 1;
    c->at += n;
}
struct lines { long next; char part[32]; size_t plen; int bad; };
static void lines_body(void *arg, const char *p, size_t n) {
    struct lines *l = (struct lines *)arg;
    size_t i;
    for (i = 0; i < n; i++) {
        if (l->plen == sizeof l->part - 1) {
            l->bad = 1;
            l->plen = 0;
        }
        l->part[l->plen++] = p[i];
        if (p[i] == '\n') {
            char want[32];
            int k = snprintf(want, sizeof want, "line %ld\n", l->next++);
            if ((size_t)k != l->plen || memcmp(want, l->part, l->plen) != 0) l->bad = 1;
            l->plen = 0;
        }
    }
}
struct pat { long long at; int bad; };
static void pat_body(void *arg, const char *p, size_t n) { /* httpbin's /bytes pattern */
    struct pat *q = (struct pat *)arg;
    size_t i;
    for (i = 0; i < n; i++, q->at++)
        if (p[i] != (char)('a' + (q->at % 16384) % 26)) q->bad = 1;
}

/* ---- one iteration of each kind */
static void do_keepalive(void) {
    char req[256], want[64];
    unsigned k = rnd(5), a = rnd(100000);
    int rc;
    switch (k) {
    case 0: snprintf(req, sizeof req, AB_GET("/")); break;
    case 1: snprintf(req, sizeof req, "GET /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Soak: %u\r\n\r\n", a); break;
    case 2: snprintf(req, sizeof req, "GET /query?a=%u&b=x%%20y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", a); break;
    case 3: snprintf(req, sizeof req, AB_GET("/status/204")); break;
    default: snprintf(req, sizeof req, AB_GET("/status/201")); break;
    }
    rc = exchange(req, NULL, 0, NULL, NULL);
    if (rc) FAIL("keepalive %u: error %d", k, rc);
    switch (k) {
    case 0:
        if (rs.status != 200 || strcmp(rs.body, "Hello, world!") != 0) FAIL("GET /: %d", rs.status);
        break;
    case 1:
        snprintf(want, sizeof want, "X-Soak: %u\n", a);
        if (rs.status != 200 || !strstr(rs.body, want)) FAIL("GET /headers: %d", rs.status);
        break;
    case 2:
        snprintf(want, sizeof want, "a=%u\nb=x y\n", a);
        if (rs.status != 200 || strcmp(rs.body, want) != 0) FAIL("GET /query: %d %s", rs.status, rs.body);
        break;
    case 3:
        if (rs.status != 204) FAIL("GET /status/204: %d", rs.status);
        break;
    default:
        if (rs.status != 201) FAIL("GET /status/201: %d", rs.status);
        break;
    }
    st.ok++;
}

static void do_pipeline(void) {
    static char reqs[16 * 128];
    size_t len = 0;
    unsigned base = rnd(1000000), i;
    if (conn()) FAIL("pipeline: connect");
    for (i = 0; i < 16; i++)
        len += (size_t)snprintf(reqs + len, sizeof reqs - len, "GET /query?a=%u HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                                base + i);
    if (ab_send(cl.fd, reqs, len)) {
        drop();
        FAIL("pipeline: send");
    }
    for (i = 0; i < 16; i++) {
        char want[64];
        int rc;
        ab_resp_init(&rs, NULL, NULL);
        rc = ab_read_resp(&cl, &rs, 15000);
        snprintf(want, sizeof want, "a=%u\nb=(none)\n", base + i);
        if (rc || rs.status != 200 || strcmp(rs.body, want) != 0) {
            drop();
            FAIL("pipeline: answer %u: rc %d status %d", i, rc, rs.status);
        }
        st.bytes += rs.body_len;
        st.ok++;
    }
}

static void do_echo(void) {
    char req[256];
    /* mostly within one input buffer; one in 8 up to 128 KiB (the budget's
     * path). Not larger: glibc serves bigger blocks by mmap and then moves
     * its threshold up, and the heap's trimming of such blocks swings the
     * RSS by a megabyte without any leak. */
    size_t len = rnd(8) == 0 ? rnd(128 * 1024 + 1) : rnd(16 * 1024), off = rnd((unsigned)(sizeof pool - len));
    struct cmp c;
    int rc;
    c.want = pool + off;
    c.len = len;
    c.at = 0;
    c.bad = 0;
    snprintf(req, sizeof req,
             "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-soak\r\nContent-Length: %zu\r\n\r\n",
             len);
    rc = exchange(req, pool + off, len, cmp_body, &c);
    if (rc || rs.status != 200 || c.bad || c.at != len) FAIL("echo %zu: rc %d status %d", len, rc, rs.status);
    st.ok++;
}

static void do_upload(void) {
    size_t total = rnd(4) == 0 ? rnd(2 * 1024 * 1024 + 1) : rnd(64 * 1024), sent = 0;
    unsigned long a = 1, b = 0;
    char want[96], hdr[32];
    size_t i;
    int rc;
    if (conn()) FAIL("upload: connect");
    if (ab_sends(cl.fd, "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")) {
        drop();
        FAIL("upload: send head");
    }
    while (sent < total) {
        size_t n = 1 + rnd(65536), off;
        if (n > total - sent) n = total - sent;
        off = rnd((unsigned)(sizeof pool - n));
        for (i = 0; i < n; i++) {
            a = (a + (unsigned char)pool[off + i]) % 65521;
            b = (b + a) % 65521;
        }
        snprintf(hdr, sizeof hdr, "%zx\r\n", n);
        if (ab_sends(cl.fd, hdr) || ab_send(cl.fd, pool + off, n) || ab_sends(cl.fd, "\r\n")) {
            drop();
            FAIL("upload: send chunk");
        }
        sent += n;
    }
    rc = exchange("0\r\n\r\n", NULL, 0, NULL, NULL);
    snprintf(want, sizeof want, "length=%zu adler32=%08lx\n", total, (b << 16) | a);
    if (rc || rs.status != 200 || strcmp(rs.body, want) != 0)
        FAIL("upload %zu: rc %d status %d %s", total, rc, rs.status, rs.body);
    st.ok++;
}

static void do_stream(void) {
    char req[128];
    int rc;
    if (rnd(2)) {
        struct lines l;
        long n = (long)rnd(20000);
        memset(&l, 0, sizeof l);
        snprintf(req, sizeof req, "GET /stream/%ld HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", n);
        rc = exchange(req, NULL, 0, lines_body, &l);
        if (rc || rs.status != 200 || l.bad || l.next != n || l.plen)
            FAIL("stream %ld: rc %d status %d lines %ld", n, rc, rs.status, l.next);
    } else {
        struct pat p = {0, 0};
        long n = (long)rnd(1024 * 1024);
        snprintf(req, sizeof req, "GET /bytes/%ld HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", n);
        rc = exchange(req, NULL, 0, pat_body, &p);
        if (rc || rs.status != 200 || p.bad || p.at != n)
            FAIL("bytes %ld: rc %d status %d got %lld", n, rc, rs.status, p.at);
    }
    st.ok++;
}

static void do_delay(void) {
    char req[128];
    unsigned ms = rnd(201);
    int rc;
    snprintf(req, sizeof req, "GET /delay/%u HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", ms);
    rc = exchange(req, NULL, 0, NULL, NULL);
    if (rc || rs.status != 200 || strcmp(rs.body, "done\n") != 0) FAIL("delay %u: rc %d status %d", ms, rc, rs.status);
    st.ok++;
}

/* One request on a new connection, which the server then closes. */
static void do_short(void) {
    static struct ab_cli c;
    static struct ab_resp r;
    int fd = ab_connect(port, 0), rc;
    if (fd < 0) FAIL("short: connect");
    ab_cli_init(&c, fd);
    ab_resp_init(&r, NULL, NULL);
    rc = ab_sends(fd, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") ? AB_RESET
                                                                                          : ab_read_resp(&c, &r, 15000);
    if (rc == 0 && c.off == c.len) rc = ab_drain_until_closed(fd, 15000, NULL); /* then its EOF */
    close(fd);
    if (rc || r.status != 200 || strcmp(r.body, "Hello, world!") != 0) FAIL("short: rc %d status %d", rc, r.status);
    st.bytes += r.body_len;
    st.ok++;
}

/* Leaves early, on purpose: none of these is an error of the server's. */
static void do_early(void) {
    static char junk[65536];
    int fd = ab_connect(port, 0), reset = (int)rnd(2);
    long long got = 0;
    if (fd < 0) FAIL("early: connect");
    switch (rnd(6)) {
    case 0: /* connect, leave */
        break;
    case 1: /* mid-head */
        ab_sends(fd, "GET /query?a=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ");
        break;
    case 2: /* mid-body */
        ab_sends(fd, "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000\r\n\r\n");
        ab_send(fd, pool, 1 + rnd(200000));
        break;
    case 3: /* mid-upload */
        ab_sends(fd, "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n8000\r\n");
        ab_send(fd, pool, 1 + rnd(32768));
        break;
    case 4: /* mid-response */
        ab_sends(fd, rnd(2) ? AB_GET("/bytes/50000000") : AB_GET("/stream/5000000"));
        while (got < (long long)rnd(1 << 20)) {
            long n = ab_recv(fd, junk, sizeof junk, 5000);
            if (n <= 0) break;
            got += n;
        }
        break;
    default: /* during a coroutine handler */
        ab_sends(fd, AB_GET("/delay/2000"));
        ab_sleep_ms(rnd(50));
        break;
    }
    if (reset) ab_rst(fd);
    else close(fd);
    st.intended++;
}

static void worker(int kind, long deadline, int out) {
    rng_state = 0x9E3779B97F4A7C15ULL ^ ((unsigned long long)getpid() << 16) ^ (unsigned long long)kind;
    cl.fd = -1;
    while (ab_now_ms() < deadline) {
        switch (kind) {
        case W_KEEPALIVE: do_keepalive(); break;
        case W_PIPELINE: do_pipeline(); break;
        case W_ECHO: do_echo(); break;
        case W_UPLOAD: do_upload(); break;
        case W_STREAM: do_stream(); break;
        case W_DELAY: do_delay(); break;
        case W_SHORT: do_short(); break;
        default: do_early(); ab_sleep_ms(2); break;
        }
        /* a breather: the machine is shared; the point is duration */
        if (kind == W_STREAM) ab_sleep_ms(5);
        else if (kind != W_DELAY) ab_sleep_ms(1);
    }
    drop();
    if (write(out, &st, sizeof st) != (ssize_t)sizeof st) _exit(3);
    _exit(0);
}

TEST(soak_mixed_workload) {
    const char *env = getenv("SOAK_SECS");
    long secs = env && atol(env) > 0 ? atol(env) : 60;
    long t0, deadline, warm_end, ref_rss = -1, max_rss = 0, min_rss = 1L << 40, next = 0, samples = 0;
    long max_fds = 0, end_fds, took;
    struct wstats total, ws[W_COUNT];
    pid_t pids[W_COUNT];
    int pipes[W_COUNT][2], i, rc;
    struct ab_srv s;
    alarm((unsigned)(secs + 60)); /* the runner's alarm is for short tests */
    for (i = 0; i < (int)sizeof pool; i++) pool[i] = (char)(i * 131 + (i >> 9));
    REQUIRE(ab_httpbin(&s, "--linger-timeout 1000", 0) == 0);
    printf("    soak: %ld s against httpbin pid %d port %d; baseline %d fds, %ld KiB RSS\n", secs, (int)s.pid,
           s.port, s.fds0, s.rss0);
    t0 = ab_now_ms();
    deadline = t0 + secs * 1000;
    warm_end = t0 + secs * 1000 / 5; /* the first 20% */
    for (i = 0; i < W_COUNT; i++) {
        REQUIRE(pipe(pipes[i]) == 0);
        port = s.port;
        fflush(stdout);
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(pipes[i][0]);
            worker(i, deadline, pipes[i][1]);
        }
        close(pipes[i][1]);
    }
    while (ab_now_ms() < deadline) {
        long now = ab_now_ms(), rss;
        int fds;
        if (now < next) {
            ab_sleep_ms(next - now);
            continue;
        }
        next = now + 250;
        rss = ab_rss_kb(s.pid);
        fds = ab_fds(s.pid);
        if (fds > max_fds) max_fds = fds;
        if (now < warm_end) continue;
        if (ref_rss < 0) {
            ref_rss = rss;
            printf("    post-warm-up RSS %ld KiB at %ld s\n", ref_rss, (now - t0) / 1000);
        }
        if (rss > max_rss) max_rss = rss;
        if (rss < min_rss) min_rss = rss;
        samples++;
        if (samples % 40 == 0)
            printf("    %3ld s: RSS %ld KiB, %d fds\n", (now - t0) / 1000, rss, fds);
    }
    memset(&total, 0, sizeof total);
    for (i = 0; i < W_COUNT; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        rc = ab_wait(pids[i], 30000, NULL);
        if (rc == -2) ab_kill(pids[i], 0);
        if (read(pipes[i][0], &ws[i], sizeof ws[i]) != (ssize_t)sizeof ws[i]) {
            ws[i].err++;
            snprintf(ws[i].first_err, sizeof ws[i].first_err, "worker did not report (exit %d)", rc);
        }
        close(pipes[i][0]);
        printf("    %-9s %8ld ok %6ld intended-early %4ld errors %10lld body bytes%s%s\n", wnames[i], ws[i].ok,
               ws[i].intended, ws[i].err, ws[i].bytes, ws[i].first_err[0] ? "  first: " : "", ws[i].first_err);
        total.ok += ws[i].ok;
        total.err += ws[i].err;
        total.intended += ws[i].intended;
        CHECK(ws[i].ok + ws[i].intended > 0); /* every kind of client ran */
    }
    end_fds = ab_wait_fds(s.pid, s.fds0, 5000, &took);
    printf("    RSS after warm-up: %ld..%ld KiB (reference %ld) over %ld samples; fds peak %ld, at the end %ld "
           "(after %ld ms)\n",
           min_rss, max_rss, ref_rss, samples, max_fds, end_fds, took);
    CHECK(samples > 0);
    /* RSS within 1 MiB of its post-warm-up value, either way */
    CHECK_LE(max_rss - ref_rss, 1024);
    CHECK_LE(ref_rss - min_rss, 1024);
    /* the fd count returns to its baseline: nothing is left open */
    CHECK_LE(end_fds, s.fds0);
    /* zero unexpected errors */
    CHECK_EQ_INT(total.err, 0);
    CHECK_EQ_INT(ab_httpbin_stop(&s, 8000), 0);
}
