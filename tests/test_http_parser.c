/* Tests of the HTTP/1.1 head parsers and the chunked decoder.
 *
 * Every table case is run
 *   - whole, placed at the very end of a page followed by a PROT_NONE page
 *     (any read past len faults) and at the very start of a page preceded
 *     by one (any read before buf faults), which must agree;
 *   - one byte at a time: growing prefixes, each again placed right before
 *     the PROT_NONE page, passing the previous length as prev_len;
 *   - split in two at every position (small cases).
 * All must give the same result and the same fields (pointers compared as
 * offsets from the buffer), and the result must match the table.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS under -std=c99 */
#include <sys/mman.h>
#include <unistd.h>

#include "../tornado.h"
#include "tn_test.h"

#define OK 1             /* expected: success */
#define DONE 1           /* chunked: done */
#define MORE 0           /* chunked: needs more input */
/* Designated, so table rows may leave the trailing fields out. */
#define R(s) .raw = s, .len = sizeof(s) - 1
#define MAXH 64
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ */
/* Guarded memory                                                      */
/* ------------------------------------------------------------------ */

static char *arena_lo, *arena_hi; /* writable [lo, hi), PROT_NONE around */

static void arena_init(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t size = ((160 * 1024 + page - 1) / page) * page;
    char *base;
    if (arena_lo) return;
    base = (char *)mmap(NULL, size + 2 * page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mprotect(base, page, PROT_NONE) ||
        mprotect(base + page + size, page, PROT_NONE)) {
        perror("mmap/mprotect");
        exit(2);
    }
    arena_lo = base + page;
    arena_hi = base + page + size;
}

/* Copies src so that its last byte is the last readable byte. */
static char *place_end(const char *src, size_t n) {
    arena_init();
    if (n) memmove(arena_hi - n, src, n);
    return arena_hi - n;
}

/* Copies src so that its first byte is the first readable byte. */
static char *place_start(const char *src, size_t n) {
    arena_init();
    if (n) memmove(arena_lo, src, n);
    return arena_lo;
}

/* ------------------------------------------------------------------ */
/* Reporting                                                           */
/* ------------------------------------------------------------------ */

static void print_escaped(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n && i < 160; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r') fputs("\\r", stderr);
        else if (c == '\n') fputs("\\n", stderr);
        else if (c == '\\') fputs("\\\\", stderr);
        else if (c < 0x20 || c >= 0x7f) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
    if (n > 160) fprintf(stderr, "...(%zu bytes)", n);
}

static int case_failed(const char *table, size_t idx, const char *raw, size_t len,
                       const char *why) {
    fprintf(stderr, "  %s[%zu] \"", table, idx);
    print_escaped(raw, len);
    fprintf(stderr, "\": %s\n", why);
    tn_test_fail(__FILE__, __LINE__, why);
    return 0;
}

static const char *err_name(int r) {
    switch (r) {
    case TN_EAGAIN: return "EAGAIN";
    case TN_EMALFORMED: return "EMALFORMED";
    case TN_ETOOLARGE: return "ETOOLARGE";
    case TN_EURILONG: return "EURILONG";
    case TN_EHEADERS: return "EHEADERS";
    case TN_ENOTIMPL: return "ENOTIMPL";
    case TN_EVERSION: return "EVERSION";
    default: return r >= 0 ? "ok" : "other error";
    }
}

/* ------------------------------------------------------------------ */
/* Spec strings: "key=value|key=value", checked against a result.      */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *key, *val;
    size_t key_len, val_len;
} spec_item;

/* Splits the next item off *sp; 0 at the end. */
static int spec_next(const char **sp, spec_item *it) {
    const char *s = *sp, *bar, *eq;
    if (!s || !*s) return 0;
    bar = strchr(s, '|');
    if (!bar) bar = s + strlen(s);
    eq = (const char *)memchr(s, '=', (size_t)(bar - s));
    if (!eq) eq = bar;
    it->key = s;
    it->key_len = (size_t)(eq - s);
    it->val = eq < bar ? eq + 1 : bar;
    it->val_len = (size_t)(bar - it->val);
    *sp = *bar ? bar + 1 : bar;
    return 1;
}

static int key_is(const spec_item *it, const char *k) {
    return strlen(k) == it->key_len && memcmp(it->key, k, it->key_len) == 0;
}

static long long val_int(const spec_item *it) {
    char tmp[32];
    size_t n = it->val_len < 31 ? it->val_len : 31;
    memcpy(tmp, it->val, n);
    tmp[n] = '\0';
    return strtoll(tmp, NULL, 10);
}

static int str_is(const char *p, size_t n, const char *v, size_t vn) {
    return p && n == vn && memcmp(p, v, n) == 0;
}

/* "name:value" against a header. */
static int header_is(const tn_http_header *h, const spec_item *it) {
    const char *colon = (const char *)memchr(it->val, ':', it->val_len);
    size_t nl;
    if (!colon) return 0;
    nl = (size_t)(colon - it->val);
    return str_is(h->name, h->name_len, it->val, nl) &&
           str_is(h->value, h->value_len, colon + 1, it->val_len - nl - 1);
}

/* ------------------------------------------------------------------ */
/* Head cases                                                          */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *raw;
    size_t len;
    int ret;          /* OK, or the expected error (TN_EAGAIN included) */
    const char *spec; /* m t v s r cl ch cd ka ec up host n h0.. rest */
    const char *req_method; /* responses: the request's method */
    size_t max_head, max_target, max_headers; /* limits, 0: default */
    size_t nh; /* header array size, 0: MAXH */
} hcase;

/* A parse result with pointers turned into offsets, comparable by memcmp. */
typedef struct {
    int ret;
    long method, target, reason, host;
    size_t method_len, target_len, reason_len, host_len;
    int status, minor, chunked, cd, ka, ec, up;
    long long cl;
    size_t nh;
    long hn[MAXH], hv[MAXH];
    size_t hnl[MAXH], hvl[MAXH];
} snap;

static long off(const char *p, const char *base) { return p ? (long)(p - base) : -1; }

static void take_snap(snap *s, int ret, const tn_http_message *m, const char *base) {
    size_t i;
    memset(s, 0, sizeof *s);
    s->ret = ret;
    if (ret <= 0) return; /* msg is unspecified unless the parse succeeded */
    s->method = off(m->method, base);
    s->method_len = m->method_len;
    s->target = off(m->target, base);
    s->target_len = m->target_len;
    s->reason = off(m->reason, base);
    s->reason_len = m->reason_len;
    s->host = off(m->host, base);
    s->host_len = m->host_len;
    s->status = m->status;
    s->minor = m->version_minor;
    s->chunked = m->chunked;
    s->cd = m->close_delimited;
    s->ka = m->keep_alive;
    s->ec = m->expect_continue;
    s->up = m->upgrade;
    s->cl = (long long)m->content_length;
    s->nh = m->num_headers;
    for (i = 0; i < m->num_headers && i < MAXH; i++) {
        s->hn[i] = off(m->headers[i].name, base);
        s->hnl[i] = m->headers[i].name_len;
        s->hv[i] = off(m->headers[i].value, base);
        s->hvl[i] = m->headers[i].value_len;
    }
}

static int do_parse(const hcase *c, int resp, const char *buf, size_t len,
                    size_t prev, tn_http_message *m, tn_http_header *hdrs, snap *s) {
    tn_http_limits lim;
    const tn_http_limits *lp = NULL;
    size_t nh = c->nh ? c->nh : MAXH;
    int r;
    lim.max_head = c->max_head;
    lim.max_target = c->max_target;
    lim.max_headers = c->max_headers;
    if (c->max_head || c->max_target || c->max_headers) lp = &lim;
    memset(m, 0xa5, sizeof *m); /* success must set every field */
    r = resp ? tn_http_parse_response(buf, len, prev, m, hdrs, nh, lp, c->req_method)
             : tn_http_parse_request(buf, len, prev, m, hdrs, nh, lp);
    take_snap(s, r, m, buf);
    return r;
}

/* Checks a successful result against the case's spec. */
static int check_head_spec(const hcase *c, const char *buf, const tn_http_message *m,
                           int r, char *why, size_t why_len) {
    const char *sp = c->spec;
    spec_item it;
    long long rest = 0;
    int want_ch = 0, want_cd = 0, want_ec = 0, want_up = 0;
    while (spec_next(&sp, &it)) {
        int good = 1;
        if (key_is(&it, "m")) good = str_is(m->method, m->method_len, it.val, it.val_len);
        else if (key_is(&it, "t")) good = str_is(m->target, m->target_len, it.val, it.val_len);
        else if (key_is(&it, "r")) good = str_is(m->reason, m->reason_len, it.val, it.val_len);
        else if (key_is(&it, "host"))
            good = (it.val_len == 4 && memcmp(it.val, "null", 4) == 0)
                       ? m->host == NULL
                       : str_is(m->host, m->host_len, it.val, it.val_len);
        else if (key_is(&it, "v")) good = m->version_minor == val_int(&it);
        else if (key_is(&it, "s")) good = m->status == val_int(&it);
        else if (key_is(&it, "cl")) good = (long long)m->content_length == val_int(&it);
        else if (key_is(&it, "ka")) good = m->keep_alive == val_int(&it);
        else if (key_is(&it, "n")) good = (long long)m->num_headers == val_int(&it);
        else if (key_is(&it, "ch")) want_ch = (int)val_int(&it);
        else if (key_is(&it, "cd")) want_cd = (int)val_int(&it);
        else if (key_is(&it, "ec")) want_ec = (int)val_int(&it);
        else if (key_is(&it, "up")) want_up = (int)val_int(&it);
        else if (key_is(&it, "rest")) rest = val_int(&it);
        else if (it.key_len == 2 && it.key[0] == 'h' && it.key[1] >= '0' && it.key[1] <= '9') {
            size_t i = (size_t)(it.key[1] - '0');
            good = i < m->num_headers && header_is(&m->headers[i], &it);
        } else {
            snprintf(why, why_len, "bad spec key %.*s", (int)it.key_len, it.key);
            return 0;
        }
        if (!good) {
            snprintf(why, why_len, "spec %.*s=%.*s not met", (int)it.key_len, it.key,
                     (int)it.val_len, it.val);
            return 0;
        }
    }
    if (m->chunked != want_ch || m->close_delimited != want_cd ||
        m->expect_continue != want_ec || m->upgrade != want_up) {
        snprintf(why, why_len, "flags ch=%d cd=%d ec=%d up=%d, want %d %d %d %d",
                 m->chunked, m->close_delimited, m->expect_continue, m->upgrade,
                 want_ch, want_cd, want_ec, want_up);
        return 0;
    }
    if ((long long)r != (long long)c->len - rest) {
        snprintf(why, why_len, "head length %d, want %lld", r, (long long)c->len - rest);
        return 0;
    }
    (void)buf;
    return 1;
}

/* Runs one head case every way; returns 1 when all agreed with the table. */
static int run_head_case(const char *table, size_t idx, const hcase *c, int resp) {
    static tn_http_header hdrs[MAXH];
    static snap whole, other;
    tn_http_message m;
    char why[200];
    const char *buf;
    size_t k, j;
    int r;

    buf = place_end(c->raw, c->len);
    r = do_parse(c, resp, buf, c->len, 0, &m, hdrs, &whole);
    if (c->ret == OK ? r <= 0 : r != c->ret) {
        snprintf(why, sizeof why, "got %s (%d), want %s", err_name(r), r,
                 c->ret == OK ? "ok" : err_name(c->ret));
        return case_failed(table, idx, c->raw, c->len, why);
    }
    if (c->ret == OK && !check_head_spec(c, buf, &m, r, why, sizeof why))
        return case_failed(table, idx, c->raw, c->len, why);

    do_parse(c, resp, place_start(c->raw, c->len), c->len, 0, &m, hdrs, &other);
    if (memcmp(&whole, &other, sizeof whole) != 0)
        return case_failed(table, idx, c->raw, c->len, "differs at page start");

    /* One byte at a time. Small inputs are re-placed before the guard page
     * for every prefix; big ones are fed from one placement (O(n) copies). */
    r = TN_EAGAIN;
    take_snap(&other, r, &m, buf);
    buf = place_end(c->raw, c->len);
    for (k = 1; k <= c->len && r == TN_EAGAIN; k++) {
        const char *b = c->len <= 16384 ? place_end(c->raw, k) : buf;
        r = do_parse(c, resp, b, k, k - 1, &m, hdrs, &other);
        if (r > 0 && (size_t)r != k)
            return case_failed(table, idx, c->raw, c->len, "completed early or late");
    }
    if (memcmp(&whole, &other, sizeof whole) != 0) {
        snprintf(why, sizeof why, "byte-by-byte gives %s, whole gives %s",
                 err_name(other.ret), err_name(whole.ret));
        return case_failed(table, idx, c->raw, c->len, why);
    }

    /* Every two-part split. */
    if (c->len <= 4096) {
        buf = place_end(c->raw, c->len);
        for (j = 1; j < c->len; j++) {
            r = do_parse(c, resp, buf, j, 0, &m, hdrs, &other);
            if (r == TN_EAGAIN) do_parse(c, resp, buf, c->len, j, &m, hdrs, &other);
            if (memcmp(&whole, &other, sizeof whole) != 0) {
                snprintf(why, sizeof why, "split at %zu gives %s", j, err_name(other.ret));
                return case_failed(table, idx, c->raw, c->len, why);
            }
        }
    }
    return 1;
}

static size_t run_head_table(const char *table, const hcase *t, size_t n, int resp) {
    size_t i, passed = 0;
    for (i = 0; i < n; i++) {
        tn_test_checks++;
        passed += (size_t)run_head_case(table, i, &t[i], resp);
    }
    return passed;
}

/* ------------------------------------------------------------------ */
/* Request table                                                       */
/* ------------------------------------------------------------------ */

#define H11 " HTTP/1.1\r\nHost: a\r\n"
#define POST "POST / HTTP/1.1\r\nHost: a\r\n"

static const hcase request_cases[] = {
    /* -- basics -- */
    {R("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), OK,
     "m=GET|t=/|v=1|host=example.com|n=1|cl=-1|ka=1|h0=Host:example.com"},
    {R("GET /index.html?q=1&r=%20 HTTP/1.1\r\nHost: a\r\n\r\n"), OK,
     "t=/index.html?q=1&r=%20|host=a"},
    {R("GET / HTTP/1.0\r\n\r\n"), OK, "v=0|ka=0|host=null|n=0|cl=-1"},
    {R("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), OK, "v=0|ka=1"},
    {R("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), OK, "ka=1"},
    {R("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), OK, "ka=0"},
    {R("GET /" H11 "Connection: close\r\n\r\n"), OK, "ka=0"},
    {R("GET /" H11 "Connection: CLOSE\r\n\r\n"), OK, "ka=0"},
    {R("GET /" H11 "Connection: keep-alive, close\r\n\r\n"), OK, "ka=0"},
    {R("GET /" H11 "Connection: foo\r\nConnection: close\r\n\r\n"), OK, "ka=0"},
    {R("GET /" H11 "Connection: closed\r\n\r\n"), OK, "ka=1"},
    {R("GET /" H11 "Connection: ,, close ,\r\n\r\n"), OK, "ka=0"},
    {R("GET /" H11 "Connection: keep-alive\r\n\r\n"), OK, "ka=1"},
    {R("get /" H11 "\r\n"), OK, "m=get"},
    {R("PURGE /x" H11 "\r\n"), OK, "m=PURGE|t=/x"},
    {R("M-SEARCH /x" H11 "\r\n"), OK, "m=M-SEARCH"},
    {R("!#$%&'*+-.^_`~09azAZ /" H11 "\r\n"), OK, "m=!#$%&'*+-.^_`~09azAZ"},
    {R("A|B /" H11 "\r\n"), OK, "n=1"}, /* '|' is the spec separator: not checked */
    {R("GET /" H11 "\r\nGET /2 HTTP/1.1\r\n"), OK, "rest=17"},
    {R("GET /" H11 "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n"), OK,
     "n=4|h1=X-A:1|h2=X-B:2|h3=X-C:3"},
    {R("GET /a/b/c;p?x=1/2?y#frag" H11 "\r\n"), OK, "t=/a/b/c;p?x=1/2?y#frag"},
    /* -- Content-Length -- */
    {R(POST "Content-Length: 5\r\n\r\nhello"), OK, "cl=5|rest=5|ka=1"},
    {R(POST "Content-Length: 0\r\n\r\n"), OK, "cl=0"},
    {R(POST "Content-Length:   42   \r\n\r\n"), OK, "cl=42"},
    {R(POST "Content-Length: 5, 5\r\n\r\n"), OK, "cl=5"},
    {R(POST "Content-Length: 5,5\r\n\r\n"), OK, "cl=5"},
    {R(POST "Content-Length: 5\r\nContent-Length: 5\r\n\r\n"), OK, "cl=5"},
    {R(POST "content-length: 007\r\n\r\n"), OK, "cl=7"},
    {R(POST "Content-Length: 9223372036854775807\r\n\r\n"), OK, "cl=9223372036854775807"},
    {R(POST "Content-Length: 9223372036854775808\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: 99999999999999999999999\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: -1\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: +5\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: 5 5\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length:\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: ,\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: 5, 6\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: 0x10\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: 5a\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: 1.5\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: \"5\"\r\n\r\n"), TN_EMALFORMED},
    /* -- Transfer-Encoding -- */
    {R(POST "Transfer-Encoding: chunked\r\n\r\n"), OK, "ch=1|cl=-1|ka=1"},
    {R(POST "Transfer-Encoding: CHUNKED\r\n\r\n"), OK, "ch=1"},
    {R(POST "Transfer-Encoding: chunked , \r\n\r\n"), OK, "ch=1"},
    {R(POST "Transfer-Encoding: gzip, chunked\r\n\r\n"), TN_ENOTIMPL},
    {R(POST "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"), TN_ENOTIMPL},
    {R(POST "Transfer-Encoding: deflate,chunked\r\n\r\n"), TN_ENOTIMPL},
    {R(POST "Transfer-Encoding: identity, chunked\r\n\r\n"), TN_ENOTIMPL},
    {R(POST "Transfer-Encoding: x-foo, chunked\r\n\r\n"), TN_ENOTIMPL},
    {R(POST "Transfer-Encoding: gzip;q=\"a,b\", chunked\r\n\r\n"), TN_ENOTIMPL},
    {R(POST "Transfer-Encoding: gzip\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: identity\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: chunked, gzip\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: chunked, chunked\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), TN_EMALFORMED},
    {R("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: chunked;foo=bar\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding:\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: @chunked\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: chunked x\r\n\r\n"), TN_EMALFORMED},
    {R(POST "Transfer-Encoding: \"chunked\"\r\n\r\n"), TN_EMALFORMED},
    /* -- Host -- */
    {R("GET / HTTP/1.1\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nX-Host: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.0\r\nHost: a.example\r\n\r\n"), OK, "host=a.example|v=0"},
    {R("GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"), OK, "host=example.com:8080"},
    {R("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), OK, "host=[::1]:80"},
    {R("GET / HTTP/1.1\r\nHost:\r\n\r\n"), OK, "host=|n=1"},
    {R("GET / HTTP/1.1\r\nHOST: X\r\n\r\n"), OK, "host=X"},
    {R("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: user@host\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: \xc3\xa9t\xc3\xa9\r\n\r\n"), TN_EMALFORMED},
    /* -- Expect, Upgrade -- */
    {R(POST "Expect: 100-continue\r\n\r\n"), OK, "ec=1"},
    {R(POST "Expect: 100-Continue\r\n\r\n"), OK, "ec=1"},
    {R("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), OK, "ec=0|v=0"},
    {R(POST "Expect: foo\r\n\r\n"), OK, "ec=0"},
    {R("GET /" H11 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"), OK, "up=1|ka=1"},
    {R("GET /" H11 "Upgrade: websocket\r\nConnection: keep-alive, upgrade\r\n\r\n"), OK, "up=1"},
    {R("GET /" H11 "Upgrade: websocket\r\n\r\n"), OK, "up=0"},
    {R("GET /" H11 "Connection: upgrade\r\n\r\n"), OK, "up=0"},
    {R("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"), OK, "up=0"},
    /* -- request line -- */
    {R("G(T /" H11 "\r\n"), TN_EMALFORMED},
    {R(" GET /" H11 "\r\n"), TN_EMALFORMED},
    {R("GET  /" H11 "\r\n"), TN_EMALFORMED},
    {R("GET\t/" H11 "\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET /\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / \r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / http/1.1\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1.1\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/12.0\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTPS/1.1\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.x\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), TN_EVERSION},
    {R("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), TN_EVERSION},
    {R("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), TN_EVERSION},
    {R("GET / HTTP/9.9\r\n\r\n"), TN_EVERSION},
    {R("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), OK, "v=1|ka=1"},
    {R("GET / HTTP/1.9\r\n\r\n"), TN_EMALFORMED}, /* 1.x is 1.1: Host needed */
    {R("GET /a b" H11 "\r\n"), TN_EMALFORMED},
    {R("GET /a\x01" "b" H11 "\r\n"), TN_EMALFORMED},
    {R("GET /a\x7f" H11 "\r\n"), TN_EMALFORMED},
    {R("GET /a\x80" H11 "\r\n"), TN_EMALFORMED},
    {R("GET /\xff" H11 "\r\n"), TN_EMALFORMED},
    {R("GET /a\tb" H11 "\r\n"), TN_EMALFORMED},
    /* -- target forms -- */
    {R("OPTIONS *" H11 "\r\n"), OK, "m=OPTIONS|t=*"},
    {R("GET *" H11 "\r\n"), TN_EMALFORMED},
    {R("OPTIONS *x" H11 "\r\n"), TN_EMALFORMED},
    {R("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), OK,
     "m=CONNECT|t=example.com:443|host=example.com:443"},
    {R("CONNECT [::1]:443" H11 "\r\n"), OK, "t=[::1]:443"},
    {R("CONNECT example.com" H11 "\r\n"), TN_EMALFORMED},
    {R("CONNECT /" H11 "\r\n"), TN_EMALFORMED},
    {R("CONNECT :443" H11 "\r\n"), TN_EMALFORMED},
    {R("CONNECT a:" H11 "\r\n"), TN_EMALFORMED},
    {R("CONNECT a:44x" H11 "\r\n"), TN_EMALFORMED},
    {R("CONNECT u@a:443" H11 "\r\n"), TN_EMALFORMED},
    {R("CONNECT http://a:443/" H11 "\r\n"), TN_EMALFORMED},
    {R("GET example.com:443" H11 "\r\n"), TN_EMALFORMED},
    {R("GET foo" H11 "\r\n"), TN_EMALFORMED},
    {R("GET http://example.com/path?x HTTP/1.1\r\nHost: other\r\n\r\n"), OK,
     "t=http://example.com/path?x|host=example.com"},
    {R("GET http://example.com" H11 "\r\n"), OK, "host=example.com"},
    {R("GET http://example.com:8080?x" H11 "\r\n"), OK, "host=example.com:8080"},
    {R("GET HTTPS://Example.COM/" H11 "\r\n"), OK, "host=Example.COM"},
    {R("GET ftp://files.example/x" H11 "\r\n"), OK, "host=files.example"},
    {R("GET http://user@evil.example/" H11 "\r\n"), TN_EMALFORMED},
    {R("GET http:///path" H11 "\r\n"), TN_EMALFORMED},
    {R("GET http://:80/" H11 "\r\n"), TN_EMALFORMED},
    {R("GET http:/x" H11 "\r\n"), TN_EMALFORMED},
    {R("GET 1http://a/" H11 "\r\n"), TN_EMALFORMED},
    {R("GET urn:isbn:123" H11 "\r\n"), TN_EMALFORMED},
    {R("GET http://a/ HTTP/1.1\r\n\r\n"), TN_EMALFORMED},
    /* -- line endings, control bytes, leading empty lines -- */
    {R("GET / HTTP/1.1\nHost: a\n\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: a\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: a\r\n\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: a\r\n\r\r"), TN_EMALFORMED},
    {R("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n"), TN_EMALFORMED},
    {R("G\0ET / HTTP/1.1\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost: a\r\n\0"), TN_EMALFORMED},
    {R("\r\nGET /" H11 "\r\n"), OK, "m=GET|t=/"},
    {R("\r\n\r\n\r\nGET /x" H11 "\r\n"), OK, "t=/x"},
    {R("\nGET /" H11 "\r\n"), TN_EMALFORMED},
    {R("\r\n GET /" H11 "\r\n"), TN_EMALFORMED},
    {R("\r\r\nGET /" H11 "\r\n"), TN_EMALFORMED},
    {R("\r\n\r\n"), TN_EAGAIN},
    {R(""), TN_EAGAIN},
    {R("GET / HT"), TN_EAGAIN},
    {R("GET /" H11), TN_EAGAIN},
    {R("GET /" H11 "\r"), TN_EAGAIN},
    {R("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), TN_EMALFORMED},
    {R("\x80GET /" H11 "\r\n"), TN_EMALFORMED},
    {R("{\"json\": 1}\r\n\r\n"), TN_EMALFORMED},
    /* -- field lines -- */
    {R("GET /" H11 "X-A: b\r\n c\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 "X-A: b\r\n\tc\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), TN_EMALFORMED},
    {R("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 ": v\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 "X-A v\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 "X@Y: z\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 "X(Y): z\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 "X-A: a\x01" "b\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 "X-A: a\x7f\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 "X-A: a\x1b[0m\r\n\r\n"), TN_EMALFORMED},
    {R("GET /" H11 "X-A: \x80\xff caf\xc3\xa9\r\n\r\n"), OK, "h1=X-A:\x80\xff caf\xc3\xa9"},
    {R("GET /" H11 "X-A: a\tb\r\n\r\n"), OK, "h1=X-A:a\tb"},
    {R("GET /" H11 "X-A: \t  hello world \t \r\n\r\n"), OK, "h1=X-A:hello world"},
    {R("GET /" H11 "X-A:\r\n\r\n"), OK, "h1=X-A:|n=2"},
    {R("GET /" H11 "X-A:   \r\n\r\n"), OK, "h1=X-A:"},
    {R("GET /" H11 "X-A:b:c\r\n\r\n"), OK, "h1=X-A:b:c"},
    {R("GET /" H11 "x-LoWeR: V\r\n\r\n"), OK, "h1=x-LoWeR:V"},
    {R("GET /" H11 "X-Q: \"a, b\" (c)\r\n\r\n"), OK, "h1=X-Q:\"a, b\" (c)"},
    {R("GET /" H11 "!#$%&'*+-.^_`~: v\r\n\r\n"), OK, "h1=!#$%&'*+-.^_`~:v"},
    {R("GET /" H11 "X|Y: v\r\n\r\n"), OK, "n=2"},
    /* -- limits -- */
    {R("GET /" H11 "B: 2\r\nC: 3\r\nD: 4\r\n\r\n"), TN_EHEADERS, NULL, NULL, 0, 0, 3},
    {R("GET /" H11 "B: 2\r\nC: 3\r\n\r\n"), OK, "n=3", NULL, 0, 0, 3},
    {R("GET /" H11 "B: 2\r\nC: 3\r\n\r\n"), TN_EHEADERS, NULL, NULL, 0, 0, 0, 2},
    {R("GET /" H11 "B: 2\r\n\r\n"), OK, "n=2|h1=B:2", NULL, 0, 0, 0, 2},
    {R("GET /" H11 "\r\n"), OK, "n=1", NULL, 27},
    {R("GET /" H11 "\r\n"), TN_EHEADERS, NULL, NULL, 26},
    {R("GET /" H11 "X-Long: 0123456789012345678901234567890123456789"), TN_EHEADERS,
     NULL, NULL, 40},
    {R("GET /" H11 "\r\n"), TN_EHEADERS, NULL, NULL, 20},
    {R("GET /0123456789" H11 "\r\n"), TN_EURILONG, NULL, NULL, 0, 10},
    {R("GET /012345678" H11 "\r\n"), OK, "t=/012345678", NULL, 0, 10},
    {R("GET /0123456789abcdef"), TN_EURILONG, NULL, NULL, 0, 10},
    {R("GET /012345678"), TN_EAGAIN, NULL, NULL, 0, 10},
    {R("\r\n\r\nGET /0123456789abcdef"), TN_EURILONG, NULL, NULL, 0, 10},
    {R("GET /0123456789\0"), TN_EURILONG, NULL, NULL, 0, 10},
    {R("GET /01234\0" "56789"), TN_EMALFORMED, NULL, NULL, 0, 10},
    {R("G@T /0123456789abcdef"), TN_EAGAIN, NULL, NULL, 0, 10},
    {R("G@T /0123456789abcdef HTTP/1.1\r\nHost: a\r\n\r\n"), TN_EMALFORMED, NULL, NULL, 0, 10},
    {R("G /0123456789abcdef"), TN_EURILONG, NULL, NULL, 0, 10},
    {R("GET /" H11 "X-A: a 0123456789abcdef\r\n\r\n"), OK, "h1=X-A:a 0123456789abcdef",
     NULL, 0, 10},
    {R("GET /" H11 "X 0123456789abcdef"), TN_EAGAIN, NULL, NULL, 0, 10},
    {R("GET /0123456789012345678901234567890123456789"), TN_EURILONG, NULL, NULL, 20},
    {R("GET /0123456789 HTTP/1.1\r\nHost: a\r\nX: 0123456789"), TN_EHEADERS, NULL, NULL, 40},
    {R("GET /\x01" "0123456789012345678901234567890123456789"), TN_EMALFORMED, NULL, NULL, 20},
    {R("GET /0123456789\r0123456789012345678901234567890123456789"), TN_EMALFORMED, NULL,
     NULL, 20},
};

TEST(http_request_table) {
    size_t n = NELEM(request_cases);
    CHECK_EQ_INT(run_head_table("request", request_cases, n, 0), n);
}

/* ------------------------------------------------------------------ */
/* Response table                                                      */
/* ------------------------------------------------------------------ */

static const hcase response_cases[] = {
    {R("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), OK,
     "s=200|r=OK|v=1|cl=5|ka=1|rest=5|n=1|h0=Content-Length:5"},
    {R("HTTP/1.1 200 OK\r\n\r\n"), OK, "cd=1|ka=0|cl=-1"},
    {R("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n"), OK, "v=0|ka=0|cl=3"},
    {R("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n"), OK,
     "ka=1|cl=3"},
    {R("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n"), OK, "cd=1|ka=0"},
    {R("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\n"), OK, "ka=0|cl=3"},
    {R("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n"), OK, "ka=1"},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), OK, "ch=1|ka=1|cl=-1"},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), OK, "ch=1|ka=1"},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), OK, "cd=1|ka=0|cl=-1"},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), OK, "cd=1|ka=0"},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n"), OK, "cd=1|ka=0"},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), OK,
     "ch=1|cl=-1|ka=0"},
    {R("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"), OK,
     "cd=1|ka=0"},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"), OK, "s=204|cl=0|ka=1"},
    {R("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n"), OK, "s=304|cl=0|ka=1"},
    {R("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"), OK, "cl=0|ch=0"},
    {R("HTTP/1.1 100 Continue\r\n\r\n"), OK, "s=100|cl=0|ka=1"},
    {R("HTTP/1.1 199 Whatever\r\nTransfer-Encoding: chunked\r\n\r\n"), OK, "s=199|cl=0"},
    {R("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
     OK, "s=101|up=1|ka=0|cl=0"},
    {R("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"), OK, "cl=0|ka=1", "HEAD"},
    {R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), OK, "cl=0|ch=0", "HEAD"},
    {R("HTTP/1.1 200 OK\r\n\r\n"), OK, "cl=0|cd=0|ka=1", "HEAD"},
    {R("HTTP/1.1 200 Connection established\r\n\r\n"), OK, "up=1|cl=0|ka=0", "CONNECT"},
    {R("HTTP/1.1 407 Proxy Auth\r\nContent-Length: 10\r\n\r\n"), OK, "cl=10|up=0",
     "CONNECT"},
    {R("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"), OK, "cl=10", "GET"},
    {R("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"), OK, "cl=10", "head"},
    {R("HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n"), OK, "up=0|cl=0"},
    {R("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), OK, "r=|s=200"},
    {R("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), OK, "r=|s=200"},
    {R("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), OK, "r=Not Found|s=404"},
    {R("HTTP/1.1 200 \xc3\x89tat\r\nContent-Length: 0\r\n\r\n"), OK, "r=\xc3\x89tat"},
    {R("HTTP/1.1 200 a\tb \r\nContent-Length: 0\r\n\r\n"), OK, "r=a\tb "},
    {R("HTTP/1.1 200  OK\r\nContent-Length: 0\r\n\r\n"), OK, "r= OK"},
    {R("HTTP/1.1 599 Edge\r\nContent-Length: 0\r\n\r\n"), OK, "s=599"},
    {R("HTTP/1.1 200 O\x01K\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 099 Low\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 600 High\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 999 High\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 20 OK\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 2000 OK\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 2x0 OK\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1  200 OK\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 -200 OK\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 \r\n\r\n"), TN_EMALFORMED},
    {R("http/1.1 200 OK\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1\t200 OK\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/2.0 200 OK\r\n\r\n"), TN_EVERSION},
    {R("HTTP/0.9 200 OK\r\n\r\n"), TN_EVERSION},
    {R("HTTP/1.5 200 OK\r\nContent-Length: 0\r\n\r\n"), OK, "v=1|ka=1"},
    {R("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n"), OK, "cl=7"},
    {R("HTTP/1.1 304 Not Modified\r\nContent-Length: -1\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n"), TN_EMALFORMED},
    {R("HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n"), TN_EMALFORMED},
    {R("\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), OK, "s=200|cl=0"},
    {R("HTTP/1.1 200 OK\nContent-Length: 0\n\n"), TN_EMALFORMED},
    {R("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"), TN_EAGAIN},
    {R("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"), TN_EHEADERS, NULL, NULL, 0, 0, 1},
    {R("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"), TN_EHEADERS, NULL, NULL, 30},
    {R("HTTP/1.1 200 OK 0123456789012345678901234567890\r\nContent-Length: 0\r\n\r\n"), OK,
     "s=200", NULL, 0, 5},
    {R("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n"), OK, "rest=17"},
    {R("HTTP/1.1 200 OK\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n"), OK,
     "host=null|n=3"},
};

TEST(http_response_table) {
    size_t n = NELEM(response_cases);
    CHECK_EQ_INT(run_head_table("response", response_cases, n, 1), n);
}

/* ------------------------------------------------------------------ */
/* Chunked table                                                       */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *raw;
    size_t len;
    int ret;          /* DONE, MORE or an error */
    const char *body; /* decoded body expected (DONE and MORE) */
    const char *spec; /* consumed=N (default: all, when DONE), nt=N, t0=name:value.. */
    uint64_t max_body;
    size_t max_head, max_headers, ntr; /* ntr: trailer array size, 0: 8 */
} ccase;

#define CH_MAXBODY 8192
typedef struct {
    int ret; /* DONE, MORE or error */
    size_t consumed;
    size_t body_n;
    char body[CH_MAXBODY];
    uint64_t body_len;
    size_t nt;
    char tn[8][32], tv[8][32];
} csnap;

static void copy_str(char *dst, const char *s, size_t n) {
    if (n > 31) n = 31;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Feeds input through the decoder in pieces: piece(k) gives the size of the
 * k-th piece. Bytes left unconsumed are passed again with the next piece,
 * always placed right before the guard page. */
static void chunked_feed(const ccase *c, size_t (*piece)(size_t k, size_t len),
                         csnap *s) {
    static char work[CH_MAXBODY + 64 * 1024];
    tn_http_header tr[8];
    tn_http_chunked d;
    tn_http_limits lim;
    size_t fed = 0, pending = 0, k, i;
    lim.max_head = c->max_head;
    lim.max_target = 0;
    lim.max_headers = c->max_headers;
    memset(&d, 0, sizeof d);
    d.trailers = tr;
    d.max_trailers = c->ntr ? c->ntr : 8;
    memset(s, 0, sizeof *s);
    s->ret = MORE;
    for (k = 0; fed < c->len || k == 0; k++) {
        size_t n = piece(k, c->len), out = 0;
        char *b;
        int r;
        if (n > c->len - fed) n = c->len - fed;
        memcpy(work + pending, c->raw + fed, n);
        fed += n;
        pending += n;
        b = place_end(work, pending);
        r = tn_http_chunked_decode(&d, b, pending, &out, c->max_body,
                                   (c->max_head || c->max_headers) ? &lim : NULL);
        if (r < 0) { /* the body decoded so far is moot */
            memset(s, 0, sizeof *s);
            s->ret = r;
            return;
        }
        if ((size_t)r > pending || out > (size_t)r) {
            s->ret = -9999; /* contract broken */
            return;
        }
        if (s->body_n + out <= CH_MAXBODY) memcpy(s->body + s->body_n, b, out);
        s->body_n += out;
        memmove(work, b + r, pending - (size_t)r);
        pending -= (size_t)r;
        if (d.done) {
            s->ret = DONE;
            s->consumed = fed - pending;
            s->nt = d.num_trailers;
            for (i = 0; i < d.num_trailers && i < 8; i++) {
                copy_str(s->tn[i], tr[i].name, tr[i].name_len);
                copy_str(s->tv[i], tr[i].value, tr[i].value_len);
            }
            break;
        }
        if (fed == c->len) break;
    }
    s->body_len = d.body_len;
}

static size_t piece_whole(size_t k, size_t len) { return k == 0 ? len : 0; }
static size_t piece_byte(size_t k, size_t len) { (void)k; (void)len; return 1; }
static size_t split_at;
static size_t piece_split(size_t k, size_t len) { return k == 0 ? split_at : len; }

static int check_chunked_spec(const ccase *c, const csnap *s, char *why, size_t why_len) {
    const char *sp = c->spec;
    spec_item it;
    size_t consumed = c->len, nt = 0;
    if (s->ret != c->ret) {
        snprintf(why, why_len, "got %s (%d), want %s", s->ret == DONE ? "done" : err_name(s->ret),
                 s->ret, c->ret == DONE ? "done" : c->ret == MORE ? "more" : err_name(c->ret));
        return 0;
    }
    if (c->ret < 0) return 1;
    if (s->body_n != strlen(c->body) || memcmp(s->body, c->body, s->body_n) != 0) {
        snprintf(why, why_len, "body of %zu bytes differs", s->body_n);
        return 0;
    }
    while (spec_next(&sp, &it)) {
        int good = 1;
        if (key_is(&it, "consumed")) consumed = (size_t)val_int(&it);
        else if (key_is(&it, "nt")) nt = (size_t)val_int(&it);
        else if (key_is(&it, "bl")) good = s->body_len == (uint64_t)val_int(&it);
        else if (it.key_len == 2 && it.key[0] == 't' && it.key[1] >= '0' && it.key[1] <= '7') {
            size_t i = (size_t)(it.key[1] - '0');
            const char *colon = (const char *)memchr(it.val, ':', it.val_len);
            good = colon && i < s->nt &&
                   str_is(s->tn[i], strlen(s->tn[i]), it.val, (size_t)(colon - it.val)) &&
                   str_is(s->tv[i], strlen(s->tv[i]), colon + 1,
                          it.val_len - (size_t)(colon - it.val) - 1);
        } else {
            snprintf(why, why_len, "bad spec key");
            return 0;
        }
        if (!good) {
            snprintf(why, why_len, "spec %.*s=%.*s not met", (int)it.key_len, it.key,
                     (int)it.val_len, it.val);
            return 0;
        }
    }
    if (c->ret == DONE && (s->consumed != consumed || s->nt != nt)) {
        snprintf(why, why_len, "consumed %zu (want %zu), %zu trailers (want %zu)", s->consumed,
                 consumed, s->nt, nt);
        return 0;
    }
    return 1;
}

static int run_chunked_case(size_t idx, const ccase *c) {
    static csnap whole, other;
    char why[200];
    size_t j;
    chunked_feed(c, piece_whole, &whole);
    if (!check_chunked_spec(c, &whole, why, sizeof why))
        return case_failed("chunked", idx, c->raw, c->len, why);
    chunked_feed(c, piece_byte, &other);
    if (memcmp(&whole, &other, sizeof whole) != 0)
        return case_failed("chunked", idx, c->raw, c->len, "byte-by-byte differs");
    for (j = 1; j < c->len && c->len <= 4096; j++) {
        split_at = j;
        chunked_feed(c, piece_split, &other);
        if (memcmp(&whole, &other, sizeof whole) != 0) {
            snprintf(why, sizeof why, "split at %zu differs", j);
            return case_failed("chunked", idx, c->raw, c->len, why);
        }
    }
    return 1;
}

static const ccase chunked_cases[] = {
    {R("5\r\nhello\r\n0\r\n\r\n"), DONE, "hello", "bl=5"},
    {R("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), DONE, "hello world", "bl=11"},
    {R("1\r\nx\r\n1\r\ny\r\n1\r\nz\r\n0\r\n\r\n"), DONE, "xyz"},
    {R("A\r\n0123456789\r\n0\r\n\r\n"), DONE, "0123456789"},
    {R("a\r\n0123456789\r\n0\r\n\r\n"), DONE, "0123456789"},
    {R("1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"), DONE, "abcdefghijklmnopqrstuvwxyz"},
    {R("1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"), DONE, "abcdefghijklmnopqrstuvwxyz"},
    {R("0005\r\nhello\r\n0\r\n\r\n"), DONE, "hello"},
    {R("0000000000000005\r\nhello\r\n0\r\n\r\n"), DONE, "hello"},
    {R("0\r\n\r\n"), DONE, "", "bl=0"},
    {R("000\r\n\r\n"), DONE, ""},
    {R("5;foo=bar\r\nhello\r\n0\r\n\r\n"), DONE, "hello"},
    {R("5;foo=\"a b;c\"\r\nhello\r\n0;last\r\n\r\n"), DONE, "hello"},
    {R("5 ; foo = bar\r\nhello\r\n0\r\n\r\n"), DONE, "hello"},
    {R("5\t;a;b=c\r\nhello\r\n0\r\n\r\n"), DONE, "hello"},
    {R("5 \r\nhello\r\n0\r\n\r\n"), DONE, "hello"},
    {R("5;\xc3\xa9\r\nhello\r\n0\r\n\r\n"), DONE, "hello"},
    {R("4\r\n\r\n\r\n\r\n0\r\n\r\n"), DONE, "\r\n\r\n"},
    {R("3\r\n0\r\n\r\n0\r\n\r\n"), DONE, "0\r\n"},
    {R("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), DONE, "abc", "consumed=13"},
    {R("0\r\n\r\n0\r\n\r\n"), DONE, "", "consumed=5"},
    {R("0\r\nX-T: 1\r\nX-U: two\r\n\r\n"), DONE, "", "nt=2|t0=X-T:1|t1=X-U:two"},
    {R("0\r\nX-T:   v  \r\n\r\n"), DONE, "", "nt=1|t0=X-T:v"},
    {R("0\r\nContent-Length: 5\r\n\r\nNEXT"), DONE, "", "nt=1|consumed=24"},
    {R("2\r\nhi\r\n0\r\nA: 1\r\n\r\n"), DONE, "hi", "nt=1|t0=A:1"},
    {R("7fffffffffffffff\r\nabc"), MORE, "abc", "bl=9223372036854775807"},
    {R("5\r\nhel"), MORE, "hel"},
    {R("5\r\nhello\r\n"), MORE, "hello"},
    {R("5\r\nhello\r"), MORE, "hello"},
    {R("5\r"), MORE, ""},
    {R("0\r\n"), MORE, ""},
    {R("0\r\n\r"), MORE, ""},
    {R("0\r\nX-T: 1\r\n"), MORE, ""},
    {R("1\r\na\r\n0\r\nX-T: 1\r\n"), MORE, "a"},
    {R(""), MORE, ""},
    {R("5 x\r\nhello\r\n0\r\n\r\n"), TN_EMALFORMED},
    {R("\r\nhello\r\n0\r\n\r\n"), TN_EMALFORMED},
    {R(";ext\r\nhello\r\n"), TN_EMALFORMED},
    {R(" 5\r\nhello\r\n"), TN_EMALFORMED},
    {R("g\r\n"), TN_EMALFORMED},
    {R("0x5\r\nhello\r\n"), TN_EMALFORMED},
    {R("-5\r\nhello\r\n"), TN_EMALFORMED},
    {R("+5\r\nhello\r\n"), TN_EMALFORMED},
    {R("00000000000000005\r\nhello\r\n"), TN_EMALFORMED},
    {R("8000000000000000\r\n"), TN_EMALFORMED},
    {R("ffffffffffffffff\r\n"), TN_EMALFORMED},
    {R("10000000000000000\r\n"), TN_EMALFORMED},
    {R("5\r\nhelloX\r\n0\r\n\r\n"), TN_EMALFORMED},
    {R("5\r\nhello\n0\r\n\r\n"), TN_EMALFORMED},
    {R("5\r\nhello\rX"), TN_EMALFORMED},
    {R("5\r\nhello\r\r\n"), TN_EMALFORMED},
    {R("5\r\nhello0\r\n\r\n"), TN_EMALFORMED},
    {R("5\nhello\r\n0\r\n\r\n"), TN_EMALFORMED},
    {R("5\rXhello"), TN_EMALFORMED},
    {R("5;a\x01" "b\r\nhello\r\n"), TN_EMALFORMED},
    {R("5;a\0b\r\nhello\r\n"), TN_EMALFORMED},
    {R("5;a\nhello\r\n"), TN_EMALFORMED},
    {R("0\r\nX-T: 1\r\n 2\r\n\r\n"), TN_EMALFORMED},
    {R("0\r\n X-T: 1\r\n\r\n"), TN_EMALFORMED},
    {R("0\r\nX T: 1\r\n\r\n"), TN_EMALFORMED},
    {R("0\r\nX-T : 1\r\n\r\n"), TN_EMALFORMED},
    {R("0\r\nX-T\r\n\r\n"), TN_EMALFORMED},
    {R("0\r\nX-T: 1\n\r\n"), TN_EMALFORMED},
    {R("0\r\nX-T: 1\r\n\n"), TN_EMALFORMED},
    {R("0\r\nX-T: a\0b\r\n\r\n"), TN_EMALFORMED},
    {R("0\r\nX-T: a\x7f\r\n\r\n"), TN_EMALFORMED},
    {R("0\r\n\n"), TN_EMALFORMED},
    {R("0\r\n\rX"), TN_EMALFORMED},
    {R("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), TN_EHEADERS, NULL, NULL, 0, 0, 2},
    {R("0\r\nA: 1\r\nB: 2\r\n\r\n"), DONE, "", "nt=2", 0, 0, 2},
    {R("0\r\nA: 1\r\nB: 2\r\n\r\n"), TN_EHEADERS, NULL, NULL, 0, 0, 0, 1},
    {R("0\r\nA: 0123456789\r\n\r\n"), TN_EHEADERS, NULL, NULL, 0, 16},
    {R("0\r\nA: 01234567\r\n\r\n"), DONE, "", "nt=1", 0, 16},
    {R("0\r\nA: 0123456789012345"), TN_EHEADERS, NULL, NULL, 0, 16},
    {R("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), TN_ETOOLARGE, NULL, NULL, 10},
    {R("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), DONE, "hello world", NULL, 11},
    {R("5\r\nhello"), TN_ETOOLARGE, NULL, NULL, 4},
    {R("ffffffff\r\n"), TN_ETOOLARGE, NULL, NULL, 1000000},
};

TEST(http_chunked_table) {
    size_t i, n = NELEM(chunked_cases), passed = 0;
    for (i = 0; i < n; i++) {
        tn_test_checks++;
        passed += (size_t)run_chunked_case(i, &chunked_cases[i]);
    }
    CHECK_EQ_INT(passed, n);
}

/* ------------------------------------------------------------------ */
/* Cases built at run time (too long for literals)                     */
/* ------------------------------------------------------------------ */

static char big[80 * 1024];

/* big = prefix + n copies of c + suffix; returns the length. */
static size_t build(const char *prefix, char c, size_t n, const char *suffix) {
    size_t a = strlen(prefix), b = strlen(suffix);
    memcpy(big, prefix, a);
    memset(big + a, c, n);
    memcpy(big + a + n, suffix, b);
    return a + n + b;
}

TEST(http_long_inputs) {
    hcase c;
    ccase cc;
    size_t passed = 0, total = 0;
    memset(&c, 0, sizeof c);
    c.raw = big;

    /* A target of exactly TN_HTTP_MAX_TARGET bytes is fine, one more is 414,
     * seen before the line ends. */
    c.len = build("GET /", 'a', TN_HTTP_MAX_TARGET - 1, " HTTP/1.1\r\nHost: a\r\n\r\n");
    c.ret = OK;
    c.spec = "n=1";
    total++, passed += (size_t)run_head_case("long", 0, &c, 0);
    c.len = build("GET /", 'a', TN_HTTP_MAX_TARGET, " HTTP/1.1\r\nHost: a\r\n\r\n");
    c.ret = TN_EURILONG;
    total++, passed += (size_t)run_head_case("long", 1, &c, 0);
    c.len = build("GET /", 'a', TN_HTTP_MAX_TARGET, "");
    total++, passed += (size_t)run_head_case("long", 2, &c, 0);
    /* A head of exactly TN_HTTP_MAX_HEAD bytes is fine, one more is 431. */
    c.len = build("GET / HTTP/1.1\r\nHost: a\r\nX: ", 'v', TN_HTTP_MAX_HEAD - 32, "\r\n\r\n");
    c.ret = OK;
    c.spec = "n=2";
    total++, passed += (size_t)run_head_case("long", 3, &c, 0);
    CHECK_EQ_INT(c.len, TN_HTTP_MAX_HEAD);
    c.len = build("GET / HTTP/1.1\r\nHost: a\r\nX: ", 'v', TN_HTTP_MAX_HEAD - 31, "\r\n\r\n");
    c.ret = TN_EHEADERS;
    total++, passed += (size_t)run_head_case("long", 4, &c, 0);
    /* Endless leading empty lines count toward max_head. */
    c.len = build("", '\n', TN_HTTP_MAX_HEAD + 2, "");
    { size_t i; for (i = 0; i < c.len; i += 2) big[i] = '\r'; }
    total++, passed += (size_t)run_head_case("long", 5, &c, 0);
    /* A target longer than max_head but under max_target: still 414. */
    c.max_target = 100000;
    c.len = build("GET /", 'a', TN_HTTP_MAX_HEAD, "");
    c.ret = TN_EURILONG;
    total++, passed += (size_t)run_head_case("long", 6, &c, 0);
    c.max_target = 0;
    /* Responses have no target: a long reason is just a long head. */
    c.len = build("HTTP/1.1 200 ", 'r', TN_HTTP_MAX_TARGET * 2, "\r\nContent-Length: 0\r\n\r\n");
    c.ret = OK;
    c.spec = "s=200|cl=0";
    total++, passed += (size_t)run_head_case("long", 7, &c, 1);

    /* chunk-ext bound: 4096 bytes after the size are fine, 4097 are not. */
    memset(&cc, 0, sizeof cc);
    cc.raw = big;
    cc.len = build("1;", 'e', TN_HTTP_MAX_CHUNK_EXT - 1, "\r\nx\r\n0\r\n\r\n");
    cc.ret = DONE;
    cc.body = "x";
    total++, passed += (size_t)run_chunked_case(100, &cc);
    cc.len = build("1;", 'e', TN_HTTP_MAX_CHUNK_EXT, "\r\nx\r\n0\r\n\r\n");
    cc.ret = TN_EMALFORMED;
    total++, passed += (size_t)run_chunked_case(101, &cc);
    CHECK_EQ_INT(passed, total);
}

/* ------------------------------------------------------------------ */
/* Focused tests                                                       */
/* ------------------------------------------------------------------ */

/* One byte per call over a ~60 KiB head must stay linear: this would take
 * minutes if every call rescanned from the start. No timing is asserted. */
TEST(http_one_byte_feed_of_60k_head_finishes) {
    static char head[64 * 1024];
    static tn_http_header hdrs[100];
    tn_http_message m;
    size_t len = 0, k;
    int i, r = TN_EAGAIN;
    len += (size_t)sprintf(head, "POST /upload HTTP/1.1\r\nHost: example.com\r\n");
    for (i = 0; i < 95; i++) {
        len += (size_t)sprintf(head + len, "X-Fill-%02d: ", i);
        memset(head + len, 'a' + i % 26, 650);
        len += 650;
        memcpy(head + len, "\r\n", 2);
        len += 2;
    }
    memcpy(head + len, "\r\n", 2);
    len += 2;
    CHECK(len > 60 * 1024 && len < TN_HTTP_MAX_HEAD);
    for (k = 1; k <= len && r == TN_EAGAIN; k++)
        r = tn_http_parse_request(head, k, k - 1, &m, hdrs, 100, NULL);
    CHECK_EQ_INT(r, len);
    CHECK_EQ_INT(m.num_headers, 96);
    CHECK_EQ_INT(m.headers[95].value_len, 650);
}

/* Same for a long target still under the limit: the early 414 check must
 * not rescan the target on every call either. */
TEST(http_one_byte_feed_of_long_target_finishes) {
    static char req[TN_HTTP_MAX_TARGET + 64];
    static tn_http_header hdrs[4];
    tn_http_message m;
    size_t len, k;
    int r = TN_EAGAIN;
    memcpy(req, "GET /", 5);
    memset(req + 5, 'p', TN_HTTP_MAX_TARGET - 1);
    len = 5 + TN_HTTP_MAX_TARGET - 1;
    memcpy(req + len, " HTTP/1.1\r\nHost: h\r\n\r\n", 22);
    len += 22;
    for (k = 1; k <= len && r == TN_EAGAIN; k++)
        r = tn_http_parse_request(req, k, k - 1, &m, hdrs, 4, NULL);
    CHECK_EQ_INT(r, len);
    CHECK_EQ_INT(m.target_len, TN_HTTP_MAX_TARGET);
}

/* Pipelining: the second head starts where the first one ended. */
TEST(http_pipelined_requests) {
    static const char two[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                              "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
    tn_http_header hdrs[8];
    tn_http_message m;
    size_t len = sizeof two - 1;
    int n1 = tn_http_parse_request(two, len, 0, &m, hdrs, 8, NULL), n2;
    REQUIRE(n1 > 0);
    CHECK(m.target_len == 2 && memcmp(m.target, "/1", 2) == 0);
    n2 = tn_http_parse_request(two + n1, len - (size_t)n1, 0, &m, hdrs, 8, NULL);
    CHECK_EQ_INT(n2, len - (size_t)n1 - 2);
    CHECK(m.method_len == 4 && memcmp(m.method, "POST", 4) == 0);
    CHECK_EQ_INT(m.content_length, 2);
}

/* A request head followed by its chunked body, decoded in place. */
TEST(http_request_with_chunked_body) {
    char msg[] = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 9\r\n\r\n";
    tn_http_header hdrs[8], tr[2];
    tn_http_message m;
    tn_http_chunked d;
    size_t len = sizeof msg - 1, out;
    int n = tn_http_parse_request(msg, len, 0, &m, hdrs, 8, NULL), used;
    REQUIRE(n > 0);
    CHECK(m.chunked);
    memset(&d, 0, sizeof d);
    d.trailers = tr;
    d.max_trailers = 2;
    used = tn_http_chunked_decode(&d, msg + n, len - (size_t)n, &out, 0, NULL);
    CHECK_EQ_INT(used, len - (size_t)n);
    CHECK(d.done);
    CHECK_EQ_INT(out, 23);
    CHECK(memcmp(msg + n, "Wikipedia in\r\n\r\nchunks.", 23) == 0);
    CHECK_EQ_INT(d.num_trailers, 1);
    CHECK(tn_http_header_eq(&tr[0], "x-sum"));
    /* After done nothing more is consumed; errors are sticky. */
    CHECK_EQ_INT(tn_http_chunked_decode(&d, msg, 3, &out, 0, NULL), 0);
    CHECK_EQ_INT(out, 0);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(tn_http_chunked_decode(&d, msg, 2, &out, 0, NULL), TN_EMALFORMED);
    memcpy(msg, "0\r\n\r\n", 5);
    CHECK_EQ_INT(tn_http_chunked_decode(&d, msg, 5, &out, 0, NULL), TN_EMALFORMED);
}

/* An empty buffer may be NULL (a stream with no input yet): both parsers
 * wait for more. fuzz_client found the response parser's one walk forming
 * buf + 13 on NULL (UBSan); an optimised build sinks that addition past the
 * early return, so this test keeps the contract and the fuzz target the UB. */
TEST(http_parsers_accept_a_null_empty_buffer) {
    tn_http_header h[4];
    tn_http_message m;
    CHECK_EQ_INT(tn_http_parse_response(NULL, 0, 0, &m, h, 4, NULL, "GET"), TN_EAGAIN);
    CHECK_EQ_INT(tn_http_parse_request(NULL, 0, 0, &m, h, 4, NULL), TN_EAGAIN);
}

TEST(http_helpers) {
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Token: t1\r\nx-token: t2\r\n\r\n";
    tn_http_header hdrs[8];
    tn_http_message m;
    const tn_http_header *h;
    REQUIRE(tn_http_parse_request(req, sizeof req - 1, 0, &m, hdrs, 8, NULL) > 0);
    h = tn_http_find_header(&m, "X-TOKEN");
    REQUIRE(h != NULL);
    CHECK(h->value_len == 2 && memcmp(h->value, "t1", 2) == 0);
    CHECK(tn_http_find_header(&m, "X-Tok") == NULL);
    CHECK(tn_http_find_header(&m, "X-Tokens") == NULL);
    CHECK(tn_http_header_eq(&hdrs[0], "host"));
    CHECK(!tn_http_header_eq(&hdrs[0], "hos"));
    CHECK(!tn_http_header_eq(&hdrs[0], "hostt"));
    CHECK_EQ_INT(tn_http_error_status(TN_EMALFORMED), 400);
    CHECK_EQ_INT(tn_http_error_status(TN_ETOOLARGE), 413);
    CHECK_EQ_INT(tn_http_error_status(TN_EURILONG), 414);
    CHECK_EQ_INT(tn_http_error_status(TN_EHEADERS), 431);
    CHECK_EQ_INT(tn_http_error_status(TN_ENOTIMPL), 501);
    CHECK_EQ_INT(tn_http_error_status(TN_EVERSION), 505);
    CHECK_EQ_INT(tn_http_error_status(TN_EAGAIN), 500);
    CHECK_EQ_INT(tn_http_error_status(-12), 500);
    /* No header array: any field is one too many. */
    CHECK_EQ_INT(tn_http_parse_request(req, sizeof req - 1, 0, &m, NULL, 0, NULL), TN_EHEADERS);
    /* A prev_len beyond len restarts the scan instead of trusting it. */
    CHECK_EQ_INT(tn_http_parse_request(req, sizeof req - 1, 1000, &m, hdrs, 8, NULL),
                 sizeof req - 1);
}

TEST(http_case_count) {
    size_t total = NELEM(request_cases) + NELEM(response_cases) + NELEM(chunked_cases) + 10;
    printf("  %zu request, %zu response, %zu chunked table cases + 10 long ones = %zu\n",
           NELEM(request_cases), NELEM(response_cases), NELEM(chunked_cases), total);
    CHECK(total >= 170);
}
