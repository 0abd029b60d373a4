/* fuzz_server.c: libFuzzer target for whole HTTP server connections
 * (make check-fuzz).
 *
 * Each input drives ONE connection of a tn_http_server over a
 * socketpair(AF_UNIX, SOCK_STREAM): the server gets one end with
 * tn_http_serve_fd, the harness plays the client on the other. Input layout:
 *
 *   byte 0   flags: bits 0-1 how the client ends (0 half-close with
 *            shutdown(SHUT_WR), 1 close, 2 keep the socket open until the
 *            server has closed or lingers (its timeouts fire: 408, idle),
 *            3 close with a reset (SO_LINGER 0)); bit 2 the server's default
 *            limits instead of small ones; bit 3 the client reads nothing
 *            until the end (output backpressure, the write-stall timeout);
 *            bit 4 tn_http_server_free while the connection is still open;
 *            bit 5 no loop step between pieces (they coalesce in the
 *            socket); bit 6 tn_http_server_shutdown once everything is sent;
 *            bit 7 an error hook (answers some statuses itself) and an
 *            access log hook (formats every entry).
 *   byte 1   k = byte % 8 cuts, then k bytes: piece sizes (byte + 1). With
 *            bits 3-5 all set, the server's timeouts are 1 ms and the loop
 *            waits for its next timer just before the client's end, so a
 *            timeout comes due with the end not yet read (timers run
 *            before I/O in a step): a 408 to a peer already gone.
 *   the rest the bytes the client sends: the pieces, then the remainder.
 *
 * Between pieces the loop steps (tn_loop_step(loop, 0)) and the client
 * reads, non-blocking, whatever the server wrote. Afterwards the loop runs
 * until the server has no connection left (a bound: a connection still open
 * after two seconds is a hang), the server and loop are freed, and the
 * loop's counters must be zero (futures, timers, coroutines, handlers,
 * callbacks); LeakSanitizer sees the rest.
 *
 * The server's output is checked against a model of the input: the input
 * is cut into requests with tn_http_parse_request and tn_http_chunked_decode
 * (the same limits as the server), and the output must be a sequence of
 * responses that tn_http_parse_response (the client's parser, given each
 * request's method) accepts, in request order: each handler tags its answer
 * with a hash of the request-target (X-T), the echo routes must return the
 * body the model decoded, byte for byte, and the streaming (on_body) routes
 * its length and hash. No byte may follow a response that closes the
 * connection. When the client half-closed and nothing was slow, every
 * request the model saw whole must be answered unless a response closed
 * the connection first. /upload feeds a multipart body to the incremental
 * parser (tn_multipart_feed) piece by piece as it arrives; the checker runs
 * it on the whole body and the two must agree. /static/ serves a directory
 * of known files with a secret file (and a symlink to it) just outside:
 * no answer may hold the secret, and a 200 or 206 must be a file or a
 * slice of one. The routes also read forms, files, cookies and Basic
 * credentials, and set cookies, redirects and errors from the query.
 *
 * FUZZ_VERBOSE=1 prints what the server wrote. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FUZZ_CHECK(cond)                                                           \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "fuzz_server.c:%d: check failed: %s\n", __LINE__, #cond); \
            abort();                                                               \
        }                                                                          \
    } while (0)

#define F_END_MASK 3u
#define F_END_HALF 0u
#define F_END_CLOSE 1u
#define F_END_OPEN 2u
#define F_END_RESET 3u
#define F_DEFAULTS 4u
#define F_NOREAD 8u
#define F_FREE_EARLY 16u
#define F_NOSTEP 32u
#define F_SHUTDOWN 64u
#define F_HOOKS 128u

#define SMALL_HEAD 512
#define SMALL_TARGET 96
#define SMALL_BODY 1024
#define TIMEOUT_MS 5        /* the server's timeouts, so that 408, idle and linger ends come fast */
#define LIVE_TIMEOUT_MS 1000 /* ... but for the liveness check, where none may fire */
#define ONBODY_MAX 3000 /* the streaming routes refuse more (400) */
#define BIG_LEN (100 * 1024)
#define OUT_MAX (4u << 20)

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t fnv(uint32_t h, const void *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}
#define FNV0 2166136261u
static uint32_t hash_str(uint32_t h, const char *s) {
    return s ? fnv(fnv(h, s, strlen(s)), "", 1) : fnv(h, "\xff", 1);
}

static int has_header(const tn_http_message *m, const char *name, const char **v, size_t *vl);

/* ------------------------------------------------------------ routes */
static char big_body[BIG_LEN];

/* Every handler's answer names the request it answers. */
static void tag(tn_http_request *req) {
    char v[16];
    const char *t = tn_http_target(req);
    snprintf(v, sizeof v, "%08x", (unsigned)fnv(FNV0, t, strlen(t)));
    FUZZ_CHECK(tn_http_set_header(req, "X-T", v) == 0);
}

static void h_root(tn_http_request *req, void *arg) {
    const char *h = tn_http_query(req, "h"), *name, *value;
    char body[64];
    uint32_t hh = FNV0;
    size_t i, n = tn_http_header_count(req);
    int len, rc, added = 0;
    (void)arg;
    tag(req);
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(tn_http_header_at(req, i, &name, &value) == 0);
        hh = fnv(hh, name, strlen(name));
        hh = fnv(hh, value, strlen(value));
    }
    FUZZ_CHECK(tn_http_header_at(req, n, &name, &value) == TN_ENOENT);
    if (h) { /* a decoded value: CR, LF or controls must be refused */
        size_t k;
        int bad = 0;
        for (k = 0; h[k]; k++)
            if (((unsigned char)h[k] < 0x20 && h[k] != '\t') || h[k] == 0x7f) bad = 1;
        rc = tn_http_add_header(req, "X-H", h);
        FUZZ_CHECK(bad ? rc == TN_EINVAL : rc == 0);
        added = rc == 0;
    }
    if (tn_http_query(req, "c")) {
        FUZZ_CHECK(tn_http_set_header(req, "Connection", "close") == 0);
        FUZZ_CHECK(tn_http_set_header(req, "X-C", "1") == 0); /* closed on purpose */
    }
    if (tn_http_query(req, "x")) FUZZ_CHECK(tn_http_clear_header(req, "X-H") == (added ? 0 : TN_ENOENT));
    len = snprintf(body, sizeof body, "hello %zu %08x\n", n, (unsigned)hh);
    tn_http_respond(req, 200, NULL, body, (size_t)len);
}

static void h_param(tn_http_request *req, void *arg) {
    const char *v = tn_http_param(req, (const char *)arg);
    FUZZ_CHECK(v != NULL);
    FUZZ_CHECK(tn_http_param(req, "nope") == NULL);
    tag(req);
    tn_http_respond(req, 200, "text/plain", v, strlen(v));
}

static void h_echo(tn_http_request *req, void *arg) {
    size_t len;
    const char *b = tn_http_body(req, &len);
    (void)arg;
    FUZZ_CHECK(b[len] == 0); /* documented NUL-terminated */
    tag(req);
    FUZZ_CHECK(tn_http_set_header(req, "X-E", "1") == 0);
    if (len <= 256) {
        tn_http_respond(req, 200, "application/octet-stream", b, len);
    } else {
        char *copy = (char *)malloc(len);
        FUZZ_CHECK(copy != NULL);
        memcpy(copy, b, len);
        tn_http_respond_ref(req, 200, "application/octet-stream", copy, len, free, copy);
    }
}

/* /stream: a plain route whose body streams to on_body (one connection at a
 * time, so plain statics hold its state). */
static size_t g_sn;
static uint32_t g_sh = FNV0;
static int on_body_plain(tn_http_request *req, const char *data, size_t len, void *arg) {
    (void)req;
    (void)arg;
    FUZZ_CHECK(len > 0);
    g_sn += len;
    g_sh = fnv(g_sh, data, len);
    return g_sn > ONBODY_MAX ? TN_EINVAL : 0;
}
static void h_stream(tn_http_request *req, void *arg) {
    char body[64];
    int len = snprintf(body, sizeof body, "n=%zu h=%08x", g_sn, (unsigned)g_sh);
    (void)arg;
    g_sn = 0;
    g_sh = FNV0;
    tag(req);
    FUZZ_CHECK(tn_http_set_header(req, "X-S", "1") == 0);
    tn_http_respond(req, 200, NULL, body, (size_t)len);
}

static void h_chunked(tn_http_request *req, void *arg) {
    (void)arg;
    tag(req);
    tn_http_begin(req, 200, NULL, -1);
    tn_http_write(req, "one,", 4);
    tn_http_write(req, "", 0);
    tn_http_write_ref(req, "two,", 4, NULL, NULL);
    tn_http_write(req, "three", 5);
    tn_http_finish(req);
}

static void h_big(tn_http_request *req, void *arg) {
    (void)arg;
    tag(req);
    tn_http_respond_ref(req, 200, NULL, big_body, sizeof big_body, NULL, NULL);
}

static void h_cut(tn_http_request *req, void *arg) {
    (void)arg;
    tag(req);
    FUZZ_CHECK(tn_http_set_header(req, "X-Cut", "1") == 0);
    tn_http_begin(req, 200, NULL, 10);
    tn_http_write(req, "short", 5);
    tn_http_finish(req); /* TN_EINVAL: the connection closes, the body cut */
}

static void h_silent(tn_http_request *req, void *arg) { /* no answer: 500 */
    (void)req;
    (void)arg;
}

static void h_any(tn_http_request *req, void *arg) {
    const char *m = tn_http_method(req);
    (void)arg;
    tag(req);
    tn_http_respond(req, 200, NULL, m, strlen(m));
}

struct sleep_fr {
    tn_http_co h;
};
static int co_sleep(tn_co *co) {
    struct sleep_fr *f = (struct sleep_fr *)co;
    TN_BEGIN(co);
    TN_SLEEP(co, 1);
    if (co->err) TN_FAIL(co, co->err);
    tag(f->h.req);
    tn_http_respond(f->h.req, 200, NULL, "slept\n", 6);
    TN_END(co);
}

struct drain_fr {
    tn_http_co h;
    int i;
};
static int co_drain(tn_co *co) {
    struct drain_fr *f = (struct drain_fr *)co;
    TN_BEGIN(co);
    tag(f->h.req);
    if (tn_http_begin(f->h.req, 200, NULL, -1)) TN_FAIL(co, TN_ECLOSED);
    for (f->i = 0; f->i < 3; f->i++) {
        tn_http_write(f->h.req, "piece\n", 6);
        TN_AWAIT(co, tn_http_drain(f->h.req));
        if (co->err) TN_FAIL(co, co->err);
    }
    tn_http_finish(f->h.req);
    TN_END(co);
}

static int co_fail(tn_co *co) {
    TN_BEGIN(co);
    TN_YIELD(co);
    TN_FAIL(co, TN_EINVAL); /* 500 */
    TN_END(co);
}

/* PUT /upload: a coroutine route with on_body, its state in the frame. */
/* A multipart body also goes through the incremental parser, piece by
 * piece as it comes; the checker runs it on the whole body and compares. */
typedef struct mpsum {
    tn_multipart mp;
    int on, rc, end;
    uint32_t h;
} mpsum;
static int mp_event(void *arg, int event, const tn_http_part *part, const char *data, size_t len) {
    mpsum *m = (mpsum *)arg;
    if (event != TN_MP_DATA) m->h = fnv(m->h, &event, sizeof event); /* DATA comes in any pieces */
    if (event == TN_MP_BEGIN) {
        FUZZ_CHECK(part != NULL);
        m->h = hash_str(hash_str(hash_str(m->h, part->name), part->filename), part->content_type);
    } else if (event == TN_MP_DATA) {
        FUZZ_CHECK(len > 0);
        m->h = fnv(m->h, data, len);
    }
    return 0;
}
static void mp_start(mpsum *m, const char *ctype) {
    m->h = FNV0;
    m->on = ctype && tn_multipart_begin(&m->mp, ctype) == 0;
}
static void mp_feed(mpsum *m, const char *data, size_t len) {
    if (m->on && !m->rc) m->rc = tn_multipart_feed(&m->mp, data, len, mp_event, m);
}
static void mp_finish(mpsum *m) {
    if (m->on && !m->rc) m->end = tn_multipart_end(&m->mp);
}

struct upload_fr {
    tn_http_co h;
    size_t n;
    uint32_t hash;
    int started;
    mpsum mp;
};
static int on_body_frame(tn_http_request *req, const char *data, size_t len, void *arg) {
    struct upload_fr *f = (struct upload_fr *)tn_http_frame(req);
    (void)arg;
    FUZZ_CHECK(f != NULL && len > 0 && !f->started);
    if (!f->n) {
        f->hash = FNV0;
        mp_start(&f->mp, tn_http_get_header(req, "Content-Type"));
    }
    f->n += len;
    f->hash = fnv(f->hash, data, len);
    mp_feed(&f->mp, data, len);
    return f->n > ONBODY_MAX ? TN_EINVAL : 0;
}
static int co_upload(tn_co *co) {
    struct upload_fr *f = (struct upload_fr *)co;
    char body[64];
    int len;
    TN_BEGIN(co);
    f->started = 1;
    if (!f->n) f->hash = FNV0;
    TN_YIELD(co);
    if (co->err) TN_FAIL(co, co->err);
    tag(f->h.req);
    FUZZ_CHECK(tn_http_set_header(f->h.req, "X-S", "1") == 0);
    if (f->mp.on) {
        mp_finish(&f->mp);
        snprintf(body, sizeof body, "%08x/%d/%d", (unsigned)f->mp.h, f->mp.rc, f->mp.end);
        FUZZ_CHECK(tn_http_set_header(f->h.req, "X-MP", body) == 0);
    }
    len = snprintf(body, sizeof body, "n=%zu h=%08x", f->n, (unsigned)f->hash);
    tn_http_respond(f->h.req, 201, NULL, body, (size_t)len);
    TN_END(co);
}

/* /form: a buffered body's arguments, files, cookies and credentials. */
static void h_form(tn_http_request *req, void *arg) {
    const char *name, *value, *vals[4], *user, *pass;
    uint32_t h = FNV0;
    size_t i, n = tn_http_argument_count(req), nf = tn_http_file_count(req), nv;
    char body[96];
    int len, rc;
    (void)arg;
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(tn_http_argument_at(req, i, &name, &value) == 0);
        h = hash_str(hash_str(h, name), value);
    }
    FUZZ_CHECK(tn_http_argument_at(req, n, &name, &value) == TN_ENOENT);
    for (i = 0; i < nf; i++) {
        const tn_http_file *f = tn_http_file_at(req, i);
        FUZZ_CHECK(f != NULL && f->name != NULL && f->content_type != NULL);
        h = hash_str(hash_str(hash_str(h, f->name), f->filename), f->content_type);
        h = fnv(h, f->data, f->len);
        FUZZ_CHECK(tn_http_get_file(req, f->name) != NULL);
    }
    FUZZ_CHECK(tn_http_file_at(req, nf) == NULL);
    nv = tn_http_arguments(req, "a", vals, 4);
    if (nv) FUZZ_CHECK(strcmp(tn_http_argument(req, "a", NULL), vals[nv < 4 ? nv - 1 : 3]) == 0 || nv > 4);
    h = hash_str(h, tn_http_body_argument(req, "a", "def"));
    h = hash_str(h, tn_http_query_argument(req, "a", NULL));
    (void)tn_http_body_arguments(req, "b", vals, 4);
    (void)tn_http_query_arguments(req, "b", vals, 4);
    n = tn_http_cookie_count(req);
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(tn_http_cookie_at(req, i, &name, &value) == 0);
        h = hash_str(hash_str(h, name), value);
    }
    h = hash_str(h, tn_http_cookie(req, "s"));
    rc = tn_http_basic_auth(req, &user, &pass);
    FUZZ_CHECK(rc == 0 || rc == TN_ENOENT || rc == TN_EMALFORMED);
    if (rc == 0) h = hash_str(hash_str(h, user), pass);
    tag(req);
    len = snprintf(body, sizeof body, "form %zu %zu %08x\n", tn_http_argument_count(req), nf, (unsigned)h);
    tn_http_respond(req, 200, NULL, body, (size_t)len);
}

/* Cookie-octets (RFC 6265 4.1.1): what tn_http_set_cookie may accept. */
static int cookie_octets(const char *v) {
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == ';' || c == '\\') return 0;
    }
    return 1;
}
static int has_ctl(const char *v) {
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f) return 1;
    return 0;
}
/* /resp?...: the response-side helpers with the query's (decoded) values. */
static void h_resp(tn_http_request *req, void *arg) {
    const char *ck = tn_http_query(req, "ck"), *to = tn_http_query(req, "to"), *st = tn_http_query(req, "st");
    const char *ss = tn_http_query(req, "ss"), *realm = tn_http_query(req, "realm");
    int rc;
    (void)arg;
    tag(req);
    if (ck) {
        tn_http_cookie_opts co;
        memset(&co, 0, sizeof co);
        co.path = tn_http_query(req, "path");
        co.domain = tn_http_query(req, "domain");
        co.same_site = ss;
        co.max_age = st ? atoi(st) : 0;
        co.secure = co.http_only = 1;
        rc = tn_http_set_cookie(req, "c", ck, &co);
        if (rc == 0) {
            FUZZ_CHECK(cookie_octets(ck));
            FUZZ_CHECK(!co.path || (!has_ctl(co.path) && !strchr(co.path, ';')));
            FUZZ_CHECK(!co.domain || (!has_ctl(co.domain) && !strchr(co.domain, ';')));
        }
        FUZZ_CHECK(rc == 0 || rc == TN_EINVAL);
        rc = tn_http_clear_cookie(req, "d", co.path, co.domain);
        FUZZ_CHECK(rc == 0 || rc == TN_EINVAL);
    }
    if (realm) {
        rc = tn_http_auth_challenge(req, realm);
        FUZZ_CHECK(rc == 0 || rc == TN_EINVAL);
        if (rc == 0) return;
    }
    if (to) {
        rc = tn_http_redirect(req, to, st ? atoi(st) : 0);
        if (rc == 0) FUZZ_CHECK(!has_ctl(to));
        if (rc == 0) return;
    }
    if (st && !ck) {
        rc = tn_http_send_error(req, atoi(st));
        if (rc == 0) return;
    }
    tn_http_respond(req, 200, NULL, "resp\n", 5);
}

/* The error hook (flag F_HOOKS): answers some statuses itself. */
static void on_error_hook(tn_http_request *req, int status, void *arg) {
    char body[32];
    int len;
    (void)arg;
    FUZZ_CHECK(status >= 400 && status <= 599);
    if (status % 3 == 0) return; /* the server's own answer */
    len = snprintf(body, sizeof body, "hooked %d\n", status);
    tn_http_set_header(req, "X-Hook", "1");
    tn_http_respond(req, status, "text/x-hook", body, (size_t)len);
}
static size_t g_access;
static void on_access_hook(const tn_http_access *e, void *arg) {
    char small[16], *line;
    size_t n;
    (void)arg;
    g_access++;
    FUZZ_CHECK(e->method != NULL && e->target != NULL);
    FUZZ_CHECK(e->status >= 100 && e->status <= 599);
    n = tn_http_access_combined(e, small, sizeof small);
    FUZZ_CHECK(strlen(small) == (n < sizeof small ? n : sizeof small - 1));
    line = (char *)malloc(n + 1);
    FUZZ_CHECK(line != NULL);
    FUZZ_CHECK(tn_http_access_combined(e, line, n + 1) == n && strlen(line) == n);
    FUZZ_CHECK(memchr(line, '\n', n) == NULL || line[n - 1] == '\n');
    free(line);
}

/* /static/: a directory of known files next to a secret one outside it. */
static char g_root[256];
typedef struct sfile {
    const char *name, *data;
    size_t len;
} sfile;
static char big_file[3000];
static sfile g_files[] = {
    {"a.txt", "hello, static\n", 14},
    {"b.html", big_file, sizeof big_file},
    {"sub/index.html", "<p>index</p>\n", 13},
    {"e.css", "", 0},
};
#define NFILES (sizeof g_files / sizeof g_files[0])
#define SECRET "SECRET-OUTSIDE-THE-ROOT"
static char g_base[128];

static void write_file(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
}
static void remove_static(void) {
    char p[512];
    size_t i;
    for (i = 0; i < NFILES; i++) {
        snprintf(p, sizeof p, "%s/%s", g_root, g_files[i].name);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/link.txt", g_root);
    unlink(p);
    snprintf(p, sizeof p, "%s/sub", g_root);
    rmdir(p);
    rmdir(g_root);
    snprintf(p, sizeof p, "%s/secret.txt", g_base);
    unlink(p);
    rmdir(g_base);
}
static void make_static(void) {
    char p[512];
    size_t i;
    for (i = 0; i < sizeof big_file; i++) big_file[i] = (char)('A' + (i * 7 + i / 26) % 26);
    snprintf(g_base, sizeof g_base, "%s/tnfuzz-static-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    FUZZ_CHECK(mkdtemp(g_base) != NULL);
    snprintf(g_root, sizeof g_root, "%s/root", g_base);
    FUZZ_CHECK(mkdir(g_root, 0700) == 0);
    snprintf(p, sizeof p, "%s/sub", g_root);
    FUZZ_CHECK(mkdir(p, 0700) == 0);
    for (i = 0; i < NFILES; i++) {
        snprintf(p, sizeof p, "%s/%s", g_root, g_files[i].name);
        write_file(p, g_files[i].data, g_files[i].len);
    }
    snprintf(p, sizeof p, "%s/secret.txt", g_base);
    write_file(p, SECRET "\n", sizeof SECRET);
    {
        char l[512];
        snprintf(l, sizeof l, "%s/link.txt", g_root);
        FUZZ_CHECK(symlink("../secret.txt", l) == 0);
    }
    atexit(remove_static);
}

/* A static answer's body must be one of the files, or (206) a slice. */
static void check_static(const tn_http_message *m, const char *body, size_t len) {
    const char *v;
    size_t vl, i;
    if (m->status == 200) {
        for (i = 0; i < NFILES; i++)
            if (len == g_files[i].len && memcmp(body, g_files[i].data, len) == 0) return;
        fprintf(stderr, "fuzz_server: a static 200 whose %zu body bytes are no file of the root\n", len);
        FUZZ_CHECK(0);
    }
    if (m->status == 206) {
        unsigned long long a, b, n;
        char cr[80];
        FUZZ_CHECK(has_header(m, "Content-Range", &v, &vl) && vl < sizeof cr);
        memcpy(cr, v, vl);
        cr[vl] = 0;
        FUZZ_CHECK(sscanf(cr, "bytes %llu-%llu/%llu", &a, &b, &n) == 3);
        FUZZ_CHECK(a <= b && b < n && len == b - a + 1);
        for (i = 0; i < NFILES; i++)
            if (g_files[i].len == n && memcmp(body, g_files[i].data + a, len) == 0) return;
        fprintf(stderr, "fuzz_server: a 206 (%s) whose body is no slice of a file of the root\n", cr);
        FUZZ_CHECK(0);
    }
}

static void add_routes(tn_http_server *srv) {
    tn_http_route_opts o;
    memset(&o, 0, sizeof o);
    FUZZ_CHECK(tn_http_route(srv, "GET", "/", h_root, NULL, NULL) == 0);
    FUZZ_CHECK(tn_http_route(srv, "GET", "/p/{id}", h_param, (void *)"id", NULL) == 0);
    FUZZ_CHECK(tn_http_route(srv, "GET", "/s/{rest*}", h_param, (void *)"rest", NULL) == 0);
    FUZZ_CHECK(tn_http_route(srv, "POST", "/echo", h_echo, NULL, NULL) == 0);
    o.max_body_bytes = 16;
    FUZZ_CHECK(tn_http_route(srv, "POST", "/small", h_echo, NULL, &o) == 0);
    memset(&o, 0, sizeof o);
    o.on_body = on_body_plain;
    FUZZ_CHECK(tn_http_route(srv, "POST", "/stream", h_stream, NULL, &o) == 0);
    FUZZ_CHECK(tn_http_route(srv, "GET", "/chunked", h_chunked, NULL, NULL) == 0);
    FUZZ_CHECK(tn_http_route(srv, "GET", "/big", h_big, NULL, NULL) == 0);
    FUZZ_CHECK(tn_http_route(srv, "GET", "/cut", h_cut, NULL, NULL) == 0);
    FUZZ_CHECK(tn_http_route(srv, "GET", "/silent", h_silent, NULL, NULL) == 0);
    FUZZ_CHECK(tn_http_route(srv, NULL, "/any", h_any, NULL, NULL) == 0);
    memset(&o, 0, sizeof o);
    o.frame_size = sizeof(struct sleep_fr);
    FUZZ_CHECK(tn_http_route_co(srv, "GET", "/sleep", co_sleep, NULL, &o) == 0);
    o.frame_size = sizeof(struct drain_fr);
    FUZZ_CHECK(tn_http_route_co(srv, "GET", "/drain", co_drain, NULL, &o) == 0);
    o.frame_size = 0;
    FUZZ_CHECK(tn_http_route_co(srv, "GET", "/fail", co_fail, NULL, &o) == 0);
    o.frame_size = sizeof(struct upload_fr);
    o.on_body = on_body_frame;
    FUZZ_CHECK(tn_http_route_co(srv, "PUT", "/upload", co_upload, NULL, &o) == 0);
    FUZZ_CHECK(tn_http_route(srv, "POST", "/form", h_form, NULL, NULL) == 0);
    FUZZ_CHECK(tn_http_route(srv, "GET", "/resp", h_resp, NULL, NULL) == 0);
    {
        tn_http_static_opts st;
        memset(&st, 0, sizeof st);
        st.index = "index.html";
        st.max_age = 60;
        FUZZ_CHECK(tn_http_static(srv, "/static/", g_root, &st) == 0);
    }
}

/* ------------------------------------------------------------- model */
#define MAXREQ 256
typedef struct mreq {
    char method[16];
    uint32_t th;     /* hash of the target */
    size_t body_off; /* the decoded body, in model.bodies */
    size_t body_len;
    int keep_alive;
    char *ctype;     /* the first Content-Type (malloc'd), or NULL */
} mreq;

typedef struct model {
    mreq req[MAXREQ];
    size_t n;        /* requests seen whole */
    int err;         /* the parse error that ended the input, or 0 */
    int err_head_ok; /* ... found in the body: req[n] holds that head */
    int head_ok;     /* req[n] holds a head whose body is not all in (or bad):
                        an answer to it may come before its body */
    char *bodies;
    size_t bodies_len;
} model;

static void model_head(mreq *q, const tn_http_message *m) {
    size_t ml = m->method_len < sizeof q->method ? m->method_len : sizeof q->method - 1;
    memcpy(q->method, m->method, ml);
    q->method[ml] = 0;
    q->th = fnv(FNV0, m->target, m->target_len);
    q->keep_alive = m->keep_alive;
    {
        const tn_http_header *h = tn_http_find_header(m, "Content-Type");
        free(q->ctype);
        q->ctype = NULL;
        if (h) {
            q->ctype = (char *)malloc(h->value_len + 1);
            FUZZ_CHECK(q->ctype != NULL);
            memcpy(q->ctype, h->value, h->value_len);
            q->ctype[h->value_len] = 0;
        }
    }
}

/* Cuts the input into requests as the server's framing does. */
static void model_build(model *md, const uint8_t *in, size_t len, const tn_http_limits *lim) {
    size_t pos = 0;
    static tn_http_header hdr[TN_HTTP_MAX_HEADERS];
    memset(md->req, 0, sizeof md->req);
    md->n = 0;
    md->err = 0;
    md->err_head_ok = 0;
    md->head_ok = 0;
    md->bodies = (char *)malloc(len + 1);
    md->bodies_len = 0;
    FUZZ_CHECK(md->bodies != NULL);
    while (pos < len && md->n < MAXREQ) {
        tn_http_message m;
        mreq *q = &md->req[md->n];
        size_t rest = len - pos;
        char *copy = (char *)malloc(rest);
        int rc;
        FUZZ_CHECK(copy != NULL);
        memcpy(copy, in + pos, rest);
        rc = tn_http_parse_request(copy, rest, 0, &m, hdr, TN_HTTP_MAX_HEADERS, lim);
        if (rc == TN_EAGAIN) {
            free(copy);
            break;
        }
        if (rc < 0) {
            md->err = rc;
            free(copy);
            break;
        }
        model_head(q, &m);
        md->head_ok = 1;
        pos += (size_t)rc;
        q->body_off = md->bodies_len;
        if (m.chunked) {
            tn_http_chunked dec;
            size_t got = 0;
            int drc;
            memset(&dec, 0, sizeof dec);
            drc = tn_http_chunked_decode(&dec, copy + rc, rest - (size_t)rc, &got, 0, lim);
            if (drc < 0) {
                md->err = drc;
                md->err_head_ok = 1;
                free(copy);
                break;
            }
            if (!dec.done) {
                free(copy);
                break;
            }
            memcpy(md->bodies + md->bodies_len, copy + rc, got);
            q->body_len = got;
            pos += (size_t)drc;
        } else if (m.content_length > 0) {
            if ((uint64_t)(rest - (size_t)rc) < (uint64_t)m.content_length) {
                free(copy);
                break;
            }
            memcpy(md->bodies + md->bodies_len, copy + rc, (size_t)m.content_length);
            q->body_len = (size_t)m.content_length;
            pos += (size_t)m.content_length;
        }
        md->bodies_len += q->body_len;
        free(copy);
        md->n++;
        md->head_ok = 0;
        if (!q->keep_alive) break;
    }
}

/* ------------------------------------------------- checking the output */
static int has_header(const tn_http_message *m, const char *name, const char **v, size_t *vl) {
    const tn_http_header *h = tn_http_find_header(m, name);
    if (!h) return 0;
    if (v) *v = h->value;
    if (vl) *vl = h->value_len;
    return 1;
}


static void check_output(const model *md, const char *out, size_t len, int strict) {
    size_t pos = 0, j = 0;
    int closed_by_response = 0;
    static tn_http_header hdr[64];
    while (pos < len) {
        tn_http_message m;
        const char *method = "GET", *v;
        size_t vl, body_start, body_len = 0, need;
        int rc;
        char *body = NULL;
        if (j >= MAXREQ) return; /* past what the model holds */
        if (j < md->n || (j == md->n && md->head_ok)) method = md->req[j].method;
        else if (j > md->n) {
            /* the model saw no such request: only error answers may come */
            method = "GET";
        }
        rc = tn_http_parse_response(out + pos, len - pos, 0, &m, hdr, 64, NULL, method);
        if (rc == TN_EAGAIN) break; /* cut short: judged below */
        if (rc < 0) fprintf(stderr, "fuzz_server: response %zu at %zu does not parse (%s)\n", j, pos, tn_strerror(rc));
        FUZZ_CHECK(rc > 0);
        if (m.status >= 100 && m.status < 200) {
            FUZZ_CHECK(m.status == 100);
            pos += (size_t)rc;
            continue;
        }
        FUZZ_CHECK(m.status >= 200 && m.status <= 599);
        body_start = pos + (size_t)rc;
        if (m.chunked) {
            tn_http_chunked dec;
            size_t got = 0, rest = len - body_start;
            int drc;
            body = (char *)malloc(rest + 1);
            FUZZ_CHECK(body != NULL);
            memcpy(body, out + body_start, rest);
            memset(&dec, 0, sizeof dec);
            drc = tn_http_chunked_decode(&dec, body, rest, &got, 0, NULL);
            FUZZ_CHECK(drc >= 0);
            if (!dec.done) {
                free(body);
                break;
            }
            body_len = got;
            need = (size_t)drc;
        } else if (m.close_delimited) {
            body_len = need = len - body_start;
            body = (char *)malloc(need + 1);
            FUZZ_CHECK(body != NULL);
            memcpy(body, out + body_start, need);
            FUZZ_CHECK(!m.keep_alive);
        } else {
            need = m.content_length > 0 ? (size_t)m.content_length : 0;
            if (len - body_start < need) {
                /* Cut: only the route that cuts its body on purpose. */
                FUZZ_CHECK(has_header(&m, "X-Cut", NULL, NULL));
                FUZZ_CHECK(len - body_start == 5 && memcmp(out + body_start, "short", 5) == 0);
                return;
            }
            body_len = need;
            body = (char *)malloc(need + 1);
            FUZZ_CHECK(body != NULL);
            memcpy(body, out + body_start, need);
        }
        if (has_header(&m, "X-T", &v, &vl)) {
            char want[16];
            /* a handler answered: the model must have seen that request whole */
            if (!(j < md->n))
                fprintf(stderr, "fuzz_server: a handler answered request %zu; the model saw %zu whole\n", j,
                        md->n);
            FUZZ_CHECK(j < md->n);
            snprintf(want, sizeof want, "%08x", (unsigned)md->req[j].th);
            if (!(vl == 8 && memcmp(v, want, 8) == 0))
                fprintf(stderr, "fuzz_server: response %zu answers another request (X-T %.*s, want %s)\n", j,
                        (int)vl, v, want);
            FUZZ_CHECK(vl == 8 && memcmp(v, want, 8) == 0);
            if (has_header(&m, "X-E", NULL, NULL) && strcmp(method, "HEAD") != 0) {
                const mreq *q = &md->req[j];
                if (!(body_len == q->body_len && memcmp(body, md->bodies + q->body_off, body_len) == 0))
                    fprintf(stderr, "fuzz_server: echo of request %zu: %zu bytes back, %zu sent\n", j, body_len,
                            q->body_len);
                FUZZ_CHECK(body_len == q->body_len && memcmp(body, md->bodies + q->body_off, body_len) == 0);
            }
            if (has_header(&m, "X-S", NULL, NULL) && strcmp(method, "HEAD") != 0) {
                const mreq *q = &md->req[j];
                char want_s[64];
                int wl = snprintf(want_s, sizeof want_s, "n=%zu h=%08x", q->body_len,
                                  (unsigned)fnv(FNV0, md->bodies + q->body_off, q->body_len));
                if (!(body_len == (size_t)wl && memcmp(body, want_s, body_len) == 0))
                    fprintf(stderr, "fuzz_server: streamed body of request %zu: got \"%.*s\", want \"%s\"\n", j,
                            (int)body_len, body, want_s);
                FUZZ_CHECK(body_len == (size_t)wl && memcmp(body, want_s, body_len) == 0);
            }
            if (has_header(&m, "X-MP", &v, &vl)) {
                /* the incremental multipart parser, on the whole body now */
                const mreq *q = &md->req[j];
                static mpsum whole;
                char want_m[64];
                memset(&whole, 0, sizeof whole);
                FUZZ_CHECK(q->ctype != NULL);
                mp_start(&whole, q->ctype);
                FUZZ_CHECK(whole.on);
                mp_feed(&whole, md->bodies + q->body_off, q->body_len);
                mp_finish(&whole);
                snprintf(want_m, sizeof want_m, "%08x/%d/%d", (unsigned)whole.h, whole.rc, whole.end);
                if (!(vl == strlen(want_m) && memcmp(v, want_m, vl) == 0))
                    fprintf(stderr, "fuzz_server: multipart of request %zu in pieces: %.*s, whole: %s\n", j, (int)vl,
                            v, want_m);
                FUZZ_CHECK(vl == strlen(want_m) && memcmp(v, want_m, vl) == 0);
            }
        }
        if (body_len && !has_header(&m, "X-T", NULL, NULL) && /* (handlers echo the request) */
            memmem(body, body_len, SECRET, sizeof SECRET - 1)) {
            fprintf(stderr, "fuzz_server: response %zu holds the file outside the static root\n", j);
            FUZZ_CHECK(0);
        }
        if (has_header(&m, "Last-Modified", NULL, NULL) && strcmp(method, "HEAD") != 0) check_static(&m, body, body_len);
        free(body);
        pos = body_start + need;
        j++;
        if (!m.keep_alive && strict && j < md->n && md->req[j - 1].keep_alive &&
            has_header(&m, "X-T", NULL, NULL) && !has_header(&m, "X-C", NULL, NULL) && !m.close_delimited) {
            /* A handler's answer to a keep-alive request closed the
             * connection with more whole requests still to answer: the
             * client's EOF dropped requests it had sent whole. */
            fprintf(stderr, "fuzz_server: response %zu closed the connection; %zu whole requests after it dropped\n",
                    j - 1, md->n - j);
            FUZZ_CHECK(0);
        }
        if (!m.keep_alive) {
            if (pos != len)
                fprintf(stderr, "fuzz_server: %zu bytes after response %zu, which closed the connection\n",
                        len - pos, j - 1);
            FUZZ_CHECK(pos == len);
            closed_by_response = 1;
            break;
        }
    }
    /* Liveness: half-closed after whole requests, nothing slow, nothing
     * closed by a response: every whole request got its answer. */
    if (strict && pos == len && !closed_by_response) {
        if (j < md->n)
            fprintf(stderr, "fuzz_server: %zu of %zu whole requests answered, the connection closed quietly\n", j,
                    md->n);
        FUZZ_CHECK(j >= md->n);
    }
}

/* --------------------------------------------------------- the harness */
typedef struct client {
    int fd;
    int eof; /* the server's end is closed or shut for writing */
    char *out;
    size_t out_len, out_cap;
    int overflow;
} client;

static void client_read(client *c) {
    char buf[65536];
    while (c->fd >= 0 && !c->eof) {
        ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            if (c->out_len + (size_t)n > OUT_MAX) {
                c->overflow = 1;
                continue;
            }
            if (c->out_len + (size_t)n > c->out_cap) {
                size_t nc = c->out_cap ? c->out_cap : 65536;
                char *no;
                while (nc < c->out_len + (size_t)n) nc *= 2;
                no = (char *)realloc(c->out, nc);
                FUZZ_CHECK(no != NULL);
                c->out = no;
                c->out_cap = nc;
            }
            memcpy(c->out + c->out_len, buf, (size_t)n);
            c->out_len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) c->eof = 1;
        if (n < 0 && errno == EINTR) continue;
        break;
    }
}

static void step(tn_loop *loop, int wait_ms) { FUZZ_CHECK(tn_loop_step(loop, wait_ms) == 0); }

static void check_clean(tn_loop *loop) {
    tn_loop_stats st;
    tn_loop_get_stats(loop, &st);
    if (st.futures || st.timers || st.coroutines || st.handlers || st.callbacks || st.jobs)
        fprintf(stderr, "fuzz_server: left behind: futures %zu timers %zu coroutines %zu handlers %zu callbacks %zu\n",
                st.futures, st.timers, st.coroutines, st.handlers, st.callbacks);
    FUZZ_CHECK(st.futures == 0 && st.timers == 0 && st.coroutines == 0);
    FUZZ_CHECK(st.handlers == 0 && st.callbacks == 0 && st.jobs == 0);
}

#ifdef __cplusplus
extern "C"
#endif
    int
    LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned flags, end;
    size_t cut[8], ncut, k, pos, i;
    tn_loop *loop;
    tn_http_server *srv;
    tn_http_server_opts so;
    tn_http_limits lim;
    tn_future *shut = NULL;
    int sv[2], write_failed = 0, slow = 0, live, pause;
    client cl;
    model md;
    uint64_t t0, deadline;
    static int inited;

    if (!inited) {
        memset(big_body, 'b', sizeof big_body);
        make_static();
        inited = 1;
    }
    if (size < 2) return 0;
    flags = data[0];
    end = flags & F_END_MASK;
    ncut = data[1] % 8u;
    pause = (data[1] & 0x38u) == 0x38u;
    if (size < 2 + ncut) return 0;
    for (k = 0; k < ncut; k++) cut[k] = (size_t)data[2 + k] + 1;
    data += 2 + ncut;
    size -= 2 + ncut;
    g_sn = 0;
    g_sh = FNV0;

    memset(&so, 0, sizeof so);
    if (!(flags & F_DEFAULTS)) {
        so.max_head_bytes = SMALL_HEAD;
        so.max_target_bytes = SMALL_TARGET;
        so.max_body_bytes = SMALL_BODY;
    }
    /* A half-closing client that reads ends every wait with its EOF, so
     * there the timeouts are long: a stall of this process (a busy
     * machine) must not fire one and pass for a dropped request. */
    live = end == F_END_HALF && !(flags & (F_NOREAD | F_SHUTDOWN | F_FREE_EARLY));
    {
        unsigned t = live ? LIVE_TIMEOUT_MS : pause ? 1 : TIMEOUT_MS;
        so.header_timeout_ms = so.body_timeout_ms = so.idle_timeout_ms = t;
        so.write_timeout_ms = so.linger_timeout_ms = t;
    }
    if (flags & F_HOOKS) {
        so.on_error = on_error_hook;
        so.on_access = on_access_hook;
    }
    memset(&lim, 0, sizeof lim);
    lim.max_head = so.max_head_bytes ? so.max_head_bytes : TN_HTTP_MAX_HEAD;
    lim.max_target = so.max_target_bytes ? so.max_target_bytes : TN_HTTP_MAX_TARGET;
    lim.max_headers = TN_HTTP_MAX_HEADERS;

    t0 = now_ms();
    FUZZ_CHECK(tn_loop_new(&loop, NULL) == 0);
    FUZZ_CHECK(tn_http_server_new(loop, &so, &srv) == 0);
    add_routes(srv);
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    FUZZ_CHECK(tn_http_serve_fd(srv, sv[0]) == 0);
    FUZZ_CHECK(tn_http_server_connections(srv) == 1);
    memset(&cl, 0, sizeof cl);
    cl.fd = sv[1];
    FUZZ_CHECK(fcntl(cl.fd, F_SETFL, fcntl(cl.fd, F_GETFL) | O_NONBLOCK) == 0);

    /* The pieces, with a loop step and a read between them. */
    pos = 0;
    for (k = 0; k <= ncut && pos < size && !write_failed; k++) {
        size_t n = k < ncut ? cut[k] : size - pos, tries = 0;
        if (n > size - pos) n = size - pos;
        while (n > 0) {
            ssize_t w = send(cl.fd, data + pos, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                pos += (size_t)w;
                n -= (size_t)w;
                continue;
            }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && ++tries < 200) {
                step(loop, tries > 20 ? 1 : 0); /* the server reads on */
                if (!(flags & F_NOREAD)) client_read(&cl);
                continue;
            }
            write_failed = 1; /* the server closed, or stopped reading for good */
            break;
        }
        if (!(flags & F_NOSTEP) || k == ncut) step(loop, 0);
        if (!(flags & F_NOREAD)) client_read(&cl);
    }
    step(loop, 0);
    if (!(flags & F_NOREAD)) client_read(&cl);
    if (now_ms() - t0 >= LIVE_TIMEOUT_MS / 2) slow = 1;

    if (flags & F_SHUTDOWN) FUZZ_CHECK((shut = tn_http_server_shutdown(srv, 2 * TIMEOUT_MS)) != NULL);

    /* The loop waits for its next timer (1 ms), which then comes due
     * together with the client's end in the next step. */
    if (pause) step(loop, 2);
    /* The client's end. */
    switch (end) {
    case F_END_HALF: shutdown(cl.fd, SHUT_WR); break;
    case F_END_CLOSE:
        close(cl.fd);
        cl.fd = -1;
        break;
    case F_END_RESET: {
        struct linger lg;
        lg.l_onoff = 1;
        lg.l_linger = 0;
        setsockopt(cl.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(cl.fd);
        cl.fd = -1;
        break;
    }
    default: break; /* F_END_OPEN: until the server lets go */
    }

    if (flags & F_FREE_EARLY) {
        tn_http_server_free(srv);
        srv = NULL;
    } else {
        deadline = now_ms() + 2000;
        while (tn_http_server_connections(srv) > 0) {
            int t = tn_loop_next_timeout(loop);
            if (now_ms() > deadline) {
                fprintf(stderr, "fuzz_server: the connection is still open 2 s after the client's end (mode %u)\n",
                        end);
                FUZZ_CHECK(0);
            }
            step(loop, t < 0 || t > 2 ? 2 : t);
            client_read(&cl);
            if (end == F_END_OPEN && cl.eof && cl.fd >= 0) {
                /* the server closed or lingers: now the client goes */
                close(cl.fd);
                cl.fd = -1;
            }
        }
        if (shut) {
            for (i = 0; i < 100 && !tn_future_done(shut); i++) step(loop, 1);
            FUZZ_CHECK(tn_future_done(shut) && tn_future_error(shut) == 0);
        }
        client_read(&cl);
        if (getenv("FUZZ_VERBOSE"))
            fprintf(stderr, "fuzz_server: %zu bytes out%s:\n%.*s\n", cl.out_len, cl.overflow ? " (overflow)" : "",
                    (int)(cl.out_len < 4000 ? cl.out_len : 4000), cl.out ? cl.out : "");
        if (!cl.overflow && end != F_END_RESET) {
            model_build(&md, data, size, &lim);
            check_output(&md, cl.out, cl.out_len, live && !slow && !write_failed);
            free(md.bodies);
            for (i = 0; i < MAXREQ; i++) free(md.req[i].ctype);
        }
        tn_http_server_free(srv);
        srv = NULL;
    }
    if (shut) tn_future_release(shut);
    /* Coroutines unwind on later iterations; the last frees the server. */
    for (i = 0; i < 1000; i++) {
        tn_loop_stats st;
        tn_loop_get_stats(loop, &st);
        if (!st.futures && !st.coroutines && !st.timers && !st.callbacks) break;
        step(loop, i < 10 ? 0 : 1);
    }
    check_clean(loop);
    tn_loop_free(loop);
    if (cl.fd >= 0) close(cl.fd);
    free(cl.out);
    return 0;
}
