/* httpbin: the test target of the suite, a tour of the server API, and an
 * imitation of httpbin.org (as Debian's python3-httpbin 0.7.0 answers;
 * tests/httpbin_diff.py compares the two, endpoint by endpoint).
 *
 *   httpbin [--host 127.0.0.1] [--port 8888] [--workers N] [--static DIR]
 *           [--tls-cert FILE --tls-key FILE [--tls-port PORT]] [LIMITS]
 *   (--port 0: any free port; --workers N: N processes, each with its own
 *   loop and SO_REUSEPORT socket on the same port, which must then be fixed;
 *   --static DIR: DIR served under /static/ by tn_http_static; --tls-cert
 *   and --tls-key: HTTPS too, on --tls-port (0, the default: any free port),
 *   in a TLS build: make builds it with -DTN_TLS_OPENSSL when libssl-dev is
 *   there; the second line of output says "listening on https://...")
 *   LIMITS, each a tn_http_server_opts field (0 or absent: its default):
 *   --max-connections N  --max-body BYTES  --max-buffered BYTES
 *   --header-timeout MS  --body-timeout MS  --idle-timeout MS
 *   --write-timeout MS  --linger-timeout MS
 *
 * Our own routes (the suite relies on them; where httpbin.org has the same
 * path, it answers otherwise, and the harness lists that as intended):
 *   GET|HEAD /         Hello, world!
 *   POST|PUT /echo     the decoded request body back
 *   GET /delay/{ms}    a coroutine sleeps ms MILLISECONDS (httpbin: seconds),
 *                      then answers "done"
 *   GET /stream/{n}    n lines "line N", streamed (chunked), with backpressure
 *                      (httpbin: at most 100 JSON lines)
 *   GET /bytes/{n}     n bytes (a pattern), Content-Length, streamed by a
 *                      coroutine that waits for the output to drain: memory
 *                      stays one buffer's worth whatever n (up to 100 MiB;
 *                      httpbin: random bytes, at most 100 KiB)
 *   GET /headers       the request's header fields back, one per line
 *                      (httpbin: JSON)
 *   GET /query?a=..    the decoded query parameters a and b
 *   POST /upload       a streamed body: its length and a checksum
 *   GET /proxy?url=U   fetches U with the HTTP client while serving: its
 *                      status and body; 502 if it fails, 504 if it times
 *                      out (&timeout=MS, default 10000, at most 30000).
 *                      Loopback targets only (127.0.0.0/8, ::1,
 *                      localhost): 403 for any other, so it is no open proxy
 *   GET /site/{page}   a small linked site for examples/crawler
 *
 * httpbin.org's routes (JSON compact, keys sorted, as Flask writes it):
 *   GET /get                   the request: args, headers, origin, url
 *   /post /put /patch /delete  (that method) also data, files, form, json
 *   /anything, /anything/{p*}  (GET POST PUT DELETE PATCH TRACE) all that, and method
 *   GET /ip, /user-agent, /uuid          origin, User-Agent, a random UUID
 *   GET /cookies                         the request's cookies
 *   GET /cookies/set?n=v, /cookies/set/{n}/{v}, /cookies/delete?n
 *                              set or expire cookies, then 302 to /cookies
 *   GET /redirect/{n}, /relative-redirect/{n}, /absolute-redirect/{n}
 *                              n 302s, the last to /get (?absolute=true)
 *   /redirect-to?url=U&status_code=3xx   (any method) a redirect to U
 *   GET|POST /response-headers?k=v       k: v as a response header, and
 *                              the response's headers as JSON
 *   GET /etag/{etag}           ETag: etag; If-None-Match -> 304, If-Match -> 412
 *   GET /cache, /cache/{n}     304 if conditional / Cache-Control max-age=n
 *   GET /basic-auth/{user}/{passwd}      200 with those credentials, else 401
 *   /status/{codes}            (any method) that status with httpbin's headers
 *                              and body; "a,b:w": one drawn, weighted
 *   GET /range/{n}             n <= 102400 bytes with Range (206, 416)
 *   GET /drip?numbytes=&duration=&delay=&code=   bytes spread over seconds
 *   GET /base64/{value}        URL-safe base64 decoded
 *   GET /gzip, /deflate        JSON with that Content-Encoding (deflate's
 *                              stored blocks: no compression library)
 *   GET /html, /json, /robots.txt, /deny, /encoding/utf8   fixed pages
 * Each also answers OPTIONS and sends CORS headers, as httpbin does. The
 * client's address ("origin") is X-Forwarded-For, else 127.0.0.1 or ::1
 * when we listen on loopback, else "unknown": tornado.h does not give a
 * handler its peer's address yet.
 *
 * SIGINT or SIGTERM shuts it down gracefully (requests in flight finish). */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <ctype.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
    uint32_t adler;
};

/* Adler-32 (RFC 1950) of s[0..n) continued from adler (1 to start), the
 * sums reduced once per 5552 bytes (the most that cannot overflow 32 bits)
 * and kept in locals, four bytes a step: reduced per byte, the checksum,
 * not the server, was the cost of a large upload (one byte a step, it was
 * still 3 cycles a byte: 108 ms for 100 MiB; 23-29 ms so). */
static uint32_t adler32_update(uint32_t adler, const unsigned char *s, size_t n) {
    uint32_t a = adler & 0xFFFF, b = adler >> 16;
    while (n) {
        size_t k = n < 5552 ? n : 5552;
        n -= k;
        for (; k >= 4; k -= 4, s += 4) { /* four bytes' steps at once: a shorter chain */
            b += 4 * a + 4u * s[0] + 3u * s[1] + 2u * s[2] + s[3];
            a += (uint32_t)s[0] + s[1] + s[2] + s[3];
        }
        for (; k; k--) {
            a += *s++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return b << 16 | a;
}

static int upload_body(tn_http_request *req, const char *data, size_t len, void *arg) {
    struct upload_frame *f = (struct upload_frame *)tn_http_frame(req);
    (void)arg;
    if (!f) return 0;
    if (f->len == 0) f->adler = 1;
    f->adler = adler32_update(f->adler, (const unsigned char *)data, len);
    f->len += len;
    return 0;
}
static int upload(tn_co *co) {
    struct upload_frame *f = (struct upload_frame *)co;
    char out[128];
    int n;
    TN_BEGIN(co);
    if (f->len == 0) f->adler = 1;
    n = snprintf(out, sizeof out, "length=%llu adler32=%08lx\n", f->len, (unsigned long)f->adler);
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

static void free_response(void *r) { tn_http_response_free((tn_http_response *)r); }

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
        /* The upstream's body goes by reference (any size: a copy is
         * capped at TN_HTTP_WRITE_HIGH), freed with the response. */
        tn_http_response *r = (tn_http_response *)co->value;
        const char *ctype = tn_http_response_header(r, "Content-Type");
        tn_http_respond_ref(f->h.req, r->status, ctype, r->body, r->body_len, free_response, r);
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


/* ===========================================================================
 * httpbin.org's endpoints, answering as Debian's python3-httpbin 0.7.0 does
 * (tests/httpbin_diff.py compares the two, case by case, and lists what
 * differs on purpose). JSON is written with tn_json_escape into a growing
 * buffer: this example needs nothing but libc.
 * ======================================================================== */

/* Where we listen: the authority of a request that names none (HTTP/1.0). */
static const char *listen_host = "127.0.0.1";
static int listen_port;

/* httpbin's after_request hook (it is a Flask app): every answer may be
 * read by any web page, with credentials. */
static void cors(tn_http_request *req) {
    const char *from = tn_http_get_header(req, "Origin");
    tn_http_set_header(req, "Access-Control-Allow-Origin", from ? from : "*");
    tn_http_set_header(req, "Access-Control-Allow-Credentials", "true");
}

/* --- a JSON writer ------------------------------------------------------- */
typedef struct jbuf {
    char *p;
    size_t len, cap;
    int oom; /* an allocation failed: the answer becomes a 503 */
} jbuf;

/* Room for n more bytes and a NUL, or NULL. */
static char *jb_room(jbuf *b, size_t n) {
    if (!b->oom && b->cap - b->len <= n) {
        size_t cap = b->cap ? b->cap : 1024;
        char *p;
        while (cap - b->len <= n) cap *= 2;
        if ((p = (char *)realloc(b->p, cap)) != NULL) {
            b->p = p;
            b->cap = cap;
        } else {
            b->oom = 1;
        }
    }
    return b->oom ? NULL : b->p + b->len;
}
static void jb_raw(jbuf *b, const char *s, size_t n) {
    char *d = jb_room(b, n);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0; /* b->p is a string too */
        b->len += n;
    }
}
static void jb_lit(jbuf *b, const char *s) { jb_raw(b, s, strlen(s)); }

/* s[0..n), UTF-8, as a JSON string: tn_json_escape, asked first for the
 * length it needs (it works like snprintf). */
static void jb_str(jbuf *b, const char *s, size_t n) {
    size_t need = tn_json_escape(NULL, 0, s, n);
    char *d = jb_room(b, need);
    if (d) b->len += tn_json_escape(d, need + 1, s, n);
}

/* "name": of an object's member, after a comma unless it is the first. */
static void jb_member(jbuf *b, int *count, const char *name) {
    if ((*count)++) jb_lit(b, ",");
    jb_str(b, name, strlen(name));
    jb_lit(b, ":");
}

/* --- text: UTF-8, Latin-1, base64 ----------------------------------------- */

/* The UTF-8 sequence at s (n > 0 bytes): its length if it is valid, else
 * -k, k the bytes of its maximal invalid part (Unicode 3.9: what Python's
 * decoder replaces with one U+FFFD). */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned lo = 0x80, hi = 0xBF;
    int len, i;
    if (s[0] < 0x80) return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) len = 2;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF) len = 3;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4) len = 4;
    else return -1;
    if (s[0] == 0xE0) lo = 0xA0; /* no overlong forms, */
    if (s[0] == 0xED) hi = 0x9F; /* no surrogates, */
    if (s[0] == 0xF0) lo = 0x90;
    if (s[0] == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    for (i = 1; i < len; i++, lo = 0x80, hi = 0xBF)
        if ((size_t)i >= n || s[i] < lo || s[i] > hi) return -i;
    return len;
}
static int utf8_valid(const char *s, size_t n) {
    size_t i = 0;
    int k;
    while (i < n) {
        if ((k = utf8_seq((const unsigned char *)s + i, n - i)) < 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

/* s[0..n) as a JSON string, made UTF-8 the way Werkzeug decodes it: from
 * Latin-1 (header values, as WSGI has them: each byte one character), or
 * from UTF-8 with each invalid sequence replaced by U+FFFD (arguments,
 * form fields, cookies). */
static void jb_text(jbuf *b, const char *s, size_t n, int latin1) {
    char *u;
    size_t i = 0, o = 0;
    if (!latin1 && utf8_valid(s, n)) {
        jb_str(b, s, n);
        return;
    }
    if (!(u = (char *)malloc(3 * n + 1))) {
        b->oom = 1;
        return;
    }
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        int k = c < 0x80 || latin1 ? 1 : utf8_seq((const unsigned char *)s + i, n - i);
        if (c >= 0x80 && latin1) {
            u[o++] = (char)(0xC0 | c >> 6);
            u[o++] = (char)(0x80 | (c & 0x3F));
        } else if (k > 0) {
            memcpy(u + o, s + i, (size_t)k);
            o += (size_t)k;
        } else {
            memcpy(u + o, "\xEF\xBF\xBD", 3); /* U+FFFD */
            o += 3;
        }
        i += (size_t)(k > 0 ? k : -k);
    }
    jb_str(b, u, o);
    free(u);
}

static const char b64_digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* s[0..n) in base64 with padding into out (room for 4 * ((n + 2) / 3));
 * returns the length written. */
static size_t b64_encode(char *out, const unsigned char *s, size_t n) {
    size_t i, o = 0;
    for (i = 0; i < n; i += 3) {
        unsigned long v = (unsigned long)s[i] << 16 | (i + 1 < n ? (unsigned long)s[i + 1] << 8 : 0) |
                          (i + 2 < n ? s[i + 2] : 0);
        out[o++] = b64_digits[v >> 18 & 63];
        out[o++] = b64_digits[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64_digits[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64_digits[v & 63] : '=';
    }
    return o;
}

/* Decodes base64 as Python's base64.urlsafe_b64decode: "-" and "_" (and
 * "+" and "/") are 62 and 63, other characters are skipped, padding is
 * required. out has room for strlen(s) bytes. The length, or -1. */
static long b64url_decode(char *out, const char *s) {
    unsigned long acc = 0;
    long o = 0, n = 0, pad = 0;
    int bits = 0;
    for (; *s; s++) {
        const char *d = strchr(b64_digits, *s);
        int v = *s == '-' ? 62 : *s == '_' ? 63 : d ? (int)(d - b64_digits) : -1;
        pad += *s == '=';
        if (v < 0) continue;
        acc = (acc << 6 | (unsigned long)v) & 0xFFFFFF;
        n++;
        if ((bits += 6) >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits & 0xFF);
        }
    }
    return n % 4 == 1 || (n % 4 && pad < 4 - n % 4) ? -1 : o;
}

/* Bytes as httpbin's json_safe gives them: the text if it is UTF-8, else a
 * data URL (RFC 2397) "data:TYPE;base64,...". */
static void jb_safe(jbuf *b, const char *type, const char *s, size_t n) {
    size_t tl = strlen(type), o;
    char *u;
    if (utf8_valid(s, n)) {
        jb_str(b, s, n);
        return;
    }
    if (!(u = (char *)malloc(13 + tl + 4 * ((n + 2) / 3)))) {
        b->oom = 1;
        return;
    }
    memcpy(u, "data:", 5);
    memcpy(u + 5, type, tl);
    memcpy(u + 5 + tl, ";base64,", 8);
    o = 13 + tl + b64_encode(u + 13 + tl, (const unsigned char *)s, n);
    jb_text(b, u, o, 0);
    free(u);
}

/* --- JSON validation: "json" is the body when it parses ------------------- */

/* Whether s[0..n) is one JSON text (RFC 8259), as Python's json.loads takes
 * it (minus its NaN and Infinity, which strict parsers refuse: they give
 * null here). Recursive descent, nesting bounded. */
#define JSON_MAX_DEPTH 512
static const char *json_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}
static const char *json_digits(const char *p, const char *e) {
    const char *start = p;
    while (p < e && *p >= '0' && *p <= '9') p++;
    return p > start ? p : NULL;
}
static const char *json_string(const char *p, const char *e) {
    for (p++; p < e; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c != '\\') continue;
        if (++p >= e) return NULL;
        if (*p == 'u') {
            int i;
            for (i = 1; i <= 4; i++)
                if (p + i >= e || !isxdigit((unsigned char)p[i])) return NULL;
            p += 4;
        } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
            return NULL;
        }
    }
    return NULL;
}
static const char *json_value(const char *p, const char *e, int depth) {
    static const char *const words[] = {"true", "false", "null"};
    size_t i;
    if ((p = json_ws(p, e)) >= e) return NULL;
    if (*p == '"') return json_string(p, e);
    if (*p == '[' || *p == '{') {
        char close = *p == '[' ? ']' : '}';
        if (depth >= JSON_MAX_DEPTH) return NULL;
        if ((p = json_ws(p + 1, e)) < e && *p == close) return p + 1;
        for (;;) {
            if (close == '}') { /* "key": */
                if ((p = json_ws(p, e)) >= e || *p != '"' || !(p = json_string(p, e))) return NULL;
                if ((p = json_ws(p, e)) >= e || *p++ != ':') return NULL;
            }
            if (!(p = json_value(p, e, depth + 1)) || (p = json_ws(p, e)) >= e) return NULL;
            if (*p == close) return p + 1;
            if (*p++ != ',') return NULL;
        }
    }
    for (i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(e - p) >= n && memcmp(p, words[i], n) == 0) return p + n;
    }
    if (*p == '-') p++; /* a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
    if (p < e && *p == '0') p++;
    else if (!(p = json_digits(p, e))) return NULL;
    if (p < e && *p == '.' && !(p = json_digits(p + 1, e))) return NULL;
    if (p < e && (*p == 'e' || *p == 'E')) {
        if (++p < e && (*p == '+' || *p == '-')) p++;
        if (!(p = json_digits(p, e))) return NULL;
    }
    return p;
}
static int json_valid(const char *s, size_t n) {
    const char *end;
    return utf8_valid(s, n) && (end = json_value(s, s + n, 0)) != NULL && json_ws(end, s + n) == s + n;
}

/* --- the request as httpbin's get_dict shows it ---------------------------- */

/* Fields a proxy adds (httpbin's ENV_HEADERS) and trackers' cookies
 * (ENV_COOKIES): left out unless the query has show_env. */
static const char *const env_headers[] = {
    "X-Varnish", "X-Request-Start", "X-Heroku-Queue-Depth", "X-Real-Ip", "X-Forwarded-Proto",
    "X-Forwarded-Protocol", "X-Forwarded-Ssl", "X-Heroku-Queue-Wait-Time", "X-Forwarded-For",
    "X-Heroku-Dynos-In-Use", "X-Forwarded-Port", "X-Request-Id", "Via", "Total-Route-Time", "Connect-Time"};
static const char *const env_cookies[] = {"_gauges_unique", "_gauges_unique_year", "_gauges_unique_month",
                                          "_gauges_unique_day", "_gauges_unique_hour", "__utmz", "__utma", "__utmb"};
static int in_list(const char *const *list, size_t n, const char *name) {
    size_t i;
    for (i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0) return 1;
    return 0;
}
#define IN_LIST(list, name) in_list(list, sizeof list / sizeof list[0], name)
static int show_env(tn_http_request *req) { return tn_http_query(req, "show_env") != NULL; }

/* A header name as Werkzeug's environ shows it: "_" is "-", and each word
 * capitalised as Python's str.title does (a letter after a non-letter is
 * upper case, the others lower: "x-b2b-ID" -> "X-B2B-Id"). */
static void title_case(char *dst, const char *name) {
    int after_letter = 0;
    for (; *name; name++, dst++) {
        int c = *name == '_' ? '-' : (unsigned char)*name, letter = isalpha(c) != 0;
        *dst = (char)(!letter ? c : after_letter ? tolower(c) : toupper(c));
        after_letter = letter;
    }
    *dst = 0;
}

/* The names and values the request dict's objects are made of. */
typedef struct pair {
    const char *name, *value;
    size_t len, order; /* order: where it came in the request */
    const char *type;  /* a file's Content-Type (for its data URL), else NULL */
} pair;
static int pair_cmp(const void *a, const void *b) {
    const pair *x = (const pair *)a, *y = (const pair *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

/* How jb_pairs writes a name given more than once: its first value only
 * (cookies, files), all of them joined with "," (header fields, as WSGI
 * joins them), or an array of them (httpbin's semiflatten). */
enum { PAIRS_FIRST, PAIRS_JOINED, PAIRS_ARRAY };

/* v[0..n) as a JSON object, keys sorted (as Flask's jsonify does). Joined
 * values are header values (Latin-1), the others UTF-8 or files. */
static void jb_pairs(jbuf *b, pair *v, size_t n, int how) {
    size_t i, j, k;
    int count = 0;
    qsort(v, n, sizeof *v, pair_cmp);
    jb_lit(b, "{");
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && strcmp(v[j].name, v[i].name) == 0; j++) {}
        if (count++) jb_lit(b, ",");
        jb_text(b, v[i].name, strlen(v[i].name), 0);
        jb_lit(b, how == PAIRS_ARRAY && j - i > 1 ? ":[" : ":");
        if (how == PAIRS_JOINED) {
            size_t len = 0, o = 0;
            char *s;
            for (k = i; k < j; k++) len += v[k].len + 1;
            if (!(s = (char *)malloc(len))) {
                b->oom = 1;
                return;
            }
            for (k = i; k < j; k++) {
                if (k > i) s[o++] = ',';
                memcpy(s + o, v[k].value, v[k].len);
                o += v[k].len;
            }
            jb_text(b, s, o, 1);
            free(s);
            continue;
        }
        for (k = i; k < (how == PAIRS_ARRAY ? j : i + 1); k++) {
            if (k > i) jb_lit(b, ",");
            if (v[k].type) jb_safe(b, v[k].type, v[k].value, v[k].len);
            else jb_text(b, v[k].value, v[k].len, 0);
        }
        if (how == PAIRS_ARRAY && j - i > 1) jb_lit(b, "]");
    }
    jb_lit(b, "}");
}

/* "headers": every field under its Werkzeug name (see title_case), a
 * repeated one joined, the proxy's hidden unless show_env. */
static void jb_headers(jbuf *b, tn_http_request *req) {
    size_t n = tn_http_header_count(req), i, k = 0, room = 1;
    const char *name, *value;
    pair *v = (pair *)malloc((n + 1) * sizeof *v);
    char *names, *o;
    int env = show_env(req);
    for (i = 0; i < n; i++)
        if (tn_http_header_at(req, i, &name, &value) == 0) room += strlen(name) + 1;
    if (!v || !(names = (char *)malloc(room))) {
        free(v);
        b->oom = 1;
        return;
    }
    for (o = names, i = 0; i < n; i++) {
        if (tn_http_header_at(req, i, &name, &value) != 0) continue;
        title_case(o, name);
        if (!env && IN_LIST(env_headers, o)) continue;
        v[k].name = o;
        v[k].value = value;
        v[k].len = strlen(value);
        v[k].order = i;
        v[k++].type = NULL;
        o += strlen(o) + 1;
    }
    jb_pairs(b, v, k, PAIRS_JOINED);
    free(names);
    free(v);
}

/* "cookies" (of /cookies): the first value of each, trackers' hidden
 * unless show_env. */
static void jb_cookies(jbuf *b, tn_http_request *req) {
    size_t n = tn_http_cookie_count(req), i, k = 0;
    pair *v = (pair *)malloc((n + 1) * sizeof *v);
    int env = show_env(req);
    if (!v) {
        b->oom = 1;
        return;
    }
    for (i = 0; i < n; i++) {
        const char *name, *value;
        if (tn_http_cookie_at(req, i, &name, &value) != 0 || (!env && IN_LIST(env_cookies, name))) continue;
        v[k].name = name;
        v[k].value = value;
        v[k].len = strlen(value);
        v[k].order = i;
        v[k++].type = NULL;
    }
    jb_pairs(b, v, k, PAIRS_FIRST);
    free(v);
}

/* "files": the first file of each field (so does httpbin: its code for a
 * list of them never runs), as text or a data URL of its type. */
static void jb_files(jbuf *b, tn_http_request *req) {
    size_t n = tn_http_file_count(req), i;
    pair *v = (pair *)malloc((n + 1) * sizeof *v);
    if (!v) {
        b->oom = 1;
        return;
    }
    for (i = 0; i < n; i++) {
        const tn_http_file *f = tn_http_file_at(req, i);
        v[i].name = f->name;
        v[i].value = f->data;
        v[i].len = f->len;
        v[i].order = i;
        v[i].type = f->content_type; /* tornado.h: application/octet-stream if none */
    }
    jb_pairs(b, v, n, PAIRS_FIRST);
    free(v);
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Whether argument i is the first of its name (loops that take the query
 * as a dict see each name once, in the order of first appearance). */
static int first_of_name(tn_http_request *req, size_t i, const char *name) {
    size_t j;
    for (j = 0; j < i; j++) {
        const char *n, *v;
        if (tn_http_argument_at(req, j, &n, &v) == 0 && strcmp(n, name) == 0) return 0;
    }
    return 1;
}

/* A query argument by case-insensitive name (httpbin reads some through a
 * CaseInsensitiveDict), its first value; NULL if absent. */
static const char *query_ci(tn_http_request *req, const char *name) {
    size_t i, n = tn_http_argument_count(req);
    for (i = 0; i < n; i++) {
        const char *k, *v;
        if (tn_http_argument_at(req, i, &k, &v) == 0 && strcasecmp(k, name) == 0 && tn_http_query(req, k))
            return tn_http_query(req, k);
    }
    return NULL;
}

/* "args" (the query's) or "form" (a form body's): a name given once has a
 * string, a repeated one an array. tornado.h lists every argument in one
 * sequence, and each source's by name: the names come from the first, the
 * values from the second. */
static void jb_arguments(jbuf *b, tn_http_request *req, int form) {
    size_t n = tn_http_argument_count(req), i, j, k;
    const char **names = (const char **)malloc((n + 1) * sizeof *names);
    const char **vals = (const char **)malloc((n + 1) * sizeof *vals);
    int count = 0;
    if (!names || !vals) {
        free(names);
        free(vals);
        b->oom = 1;
        return;
    }
    for (i = 0; i < n; i++) {
        const char *value;
        if (tn_http_argument_at(req, i, &names[i], &value) != 0) names[i] = "";
    }
    qsort(names, n, sizeof *names, str_cmp);
    jb_lit(b, "{");
    for (i = 0; i < n; i++) {
        if (i && strcmp(names[i], names[i - 1]) == 0) continue;
        k = form ? tn_http_body_arguments(req, names[i], vals, n) : tn_http_query_arguments(req, names[i], vals, n);
        if (!k) continue;
        if (count++) jb_lit(b, ",");
        jb_text(b, names[i], strlen(names[i]), 0);
        jb_lit(b, k > 1 ? ":[" : ":");
        for (j = 0; j < k; j++) {
            if (j) jb_lit(b, ",");
            jb_text(b, vals[j], strlen(vals[j]), 0);
        }
        if (k > 1) jb_lit(b, "]");
    }
    jb_lit(b, "}");
    free(names);
    free(vals);
}

/* Whether the body is a form (urlencoded or multipart): Werkzeug then
 * parses it into "form" and "files", and "data" is empty. */
static int form_body(tn_http_request *req) {
    const char *ct = tn_http_get_header(req, "Content-Type");
    size_t n;
    if (!ct) return 0;
    n = strcspn(ct, "; \t");
    return (n == 33 && strncasecmp(ct, "application/x-www-form-urlencoded", n) == 0) ||
           (n == 19 && strncasecmp(ct, "multipart/form-data", n) == 0);
}

/* The authority the client asked for: its Host, else where we listen. */
static const char *authority(tn_http_request *req, char *buf, size_t cap) {
    const char *host = tn_http_get_header(req, "Host");
    if (host) return host;
    if (strchr(listen_host, ':')) snprintf(buf, cap, "[%s]:%d", listen_host, listen_port);
    else snprintf(buf, cap, "%s:%d", listen_host, listen_port);
    return buf;
}

/* The client's address: X-Forwarded-For as sent, else the peer's. A
 * handler cannot learn its peer from tornado.h yet, so a loopback listener
 * names the loopback address its clients come from (on Linux), another one
 * "unknown". */
static const char *origin(tn_http_request *req) {
    const char *xff = tn_http_get_header(req, "X-Forwarded-For");
    if (xff) return xff;
    if (strncmp(listen_host, "127.", 4) == 0 || strcmp(listen_host, "localhost") == 0) return "127.0.0.1";
    if (strcmp(listen_host, "::1") == 0) return "::1";
    return "unknown";
}

/* Werkzeug's safe URL characters (RFC 3986's unreserved and sub-delims
 * but "&" and "="), and those it keeps in a path or a query as well. */
static int url_safe(int c, const char *also) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && (strchr("-._~$!'()*+,;", c) || strchr(also, c)));
}
static void jb_pct(jbuf *b, unsigned char c) {
    char e[4];
    snprintf(e, sizeof e, "%%%02X", c);
    jb_raw(b, e, 3);
}

/* Appends the URL's path or query as Werkzeug shows it (get_current_url,
 * then uri_to_iri): quoted, but UTF-8 text shown as text (in a path, other
 * bytes as U+FFFD, jb_text's; in a query, %XX), and in a query an escape
 * of a safe character or of UTF-8 decoded ("?%7e%C3%A9" -> "?~é"). The
 * path comes decoded (tn_http_path), the query as sent. */
static void url_part(jbuf *u, const char *s, int query) {
    jbuf t = {0};
    size_t i, n = strlen(s);
    int k;
    for (i = 0; i < n; i++) { /* the escapes and unsafe characters */
        unsigned char c = (unsigned char)s[i];
        if (query && c == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) && isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            unsigned char v = (unsigned char)strtol(hex, NULL, 16);
            if (v >= 0x80 || url_safe(v, "")) jb_raw(&t, (const char *)&v, 1);
            else jb_raw(&t, s + i, 3);
            i += 2;
        } else if (c >= 0x80 || url_safe(c, query ? ":&%=+$!*'()," : "/:")) {
            jb_raw(&t, s + i, 1);
        } else {
            jb_pct(&t, c);
        }
    }
    for (i = 0; i < t.len; i += (size_t)(k > 0 ? k : -k)) { /* bytes that are not UTF-8 */
        k = utf8_seq((const unsigned char *)t.p + i, t.len - i);
        if (k > 0 || !query) jb_raw(u, t.p + i, (size_t)(k > 0 ? k : -k));
        else {
            int j;
            for (j = 0; j < -k; j++) jb_pct(u, (unsigned char)t.p[i + (size_t)j]);
        }
    }
    if (t.oom) u->oom = 1;
    free(t.p);
}

/* "url": the scheme (https if X-Forwarded-Proto, X-Forwarded-Protocol or
 * X-Forwarded-Ssl: on says so, or the request came over TLS), the
 * authority, the path and the query. */
static void jb_url(jbuf *b, tn_http_request *req) {
    const char *proto = tn_http_get_header(req, "X-Forwarded-Proto");
    const char *ssl = tn_http_get_header(req, "X-Forwarded-Ssl"), *query = strchr(tn_http_target(req), '?');
    char host[80];
    jbuf u = {0};
    if (!proto || !*proto) proto = tn_http_get_header(req, "X-Forwarded-Protocol");
    if (!proto || !*proto) proto = ssl && strcmp(ssl, "on") == 0 ? "https" : tn_http_protocol(req);
    jb_lit(&u, proto);
    jb_lit(&u, "://");
    jb_lit(&u, authority(req, host, sizeof host));
    url_part(&u, tn_http_path(req), 0);
    if (query && query[1]) {
        jb_lit(&u, "?");
        url_part(&u, query + 1, 1);
    }
    if (u.oom) b->oom = 1;
    jb_text(b, u.p ? u.p : "", u.len, 0);
    free(u.p);
}

/* The members of httpbin's request dict that keys names, in its (sorted)
 * order, after count members already written. */
enum {
    R_ARGS = 1, R_DATA = 2, R_FILES = 4, R_FORM = 8, R_HEADERS = 16,
    R_JSON = 32, R_METHOD = 64, R_ORIGIN = 128, R_URL = 256
};
#define R_GET (R_ARGS | R_HEADERS | R_ORIGIN | R_URL)
#define R_BODY (R_GET | R_DATA | R_FILES | R_FORM | R_JSON)
static void jb_request(jbuf *b, tn_http_request *req, unsigned keys, int count) {
    size_t len = 0;
    const char *body = tn_http_body(req, &len), *o = origin(req);
    int form = form_body(req);
    if (!body) body = "";
    if (keys & R_ARGS) {
        jb_member(b, &count, "args");
        jb_arguments(b, req, 0);
    }
    if (keys & R_DATA) { /* the body, if it is no form; a data URL if it is not UTF-8 */
        jb_member(b, &count, "data");
        jb_safe(b, "application/octet-stream", body, form ? 0 : len);
    }
    if (keys & R_FILES) {
        jb_member(b, &count, "files");
        jb_files(b, req);
    }
    if (keys & R_FORM) {
        jb_member(b, &count, "form");
        jb_arguments(b, req, 1);
    }
    if (keys & R_HEADERS) {
        jb_member(b, &count, "headers");
        jb_headers(b, req);
    }
    if (keys & R_JSON) { /* the body itself when it is JSON, whatever its Content-Type */
        jb_member(b, &count, "json");
        if (!form && json_valid(body, len)) jb_raw(b, body, len);
        else jb_lit(b, "null");
    }
    if (keys & R_METHOD) {
        jb_member(b, &count, "method");
        jb_str(b, tn_http_method(req), strlen(tn_http_method(req)));
    }
    if (keys & R_ORIGIN) {
        jb_member(b, &count, "origin");
        jb_text(b, o, strlen(o), 1);
    }
    if (keys & R_URL) {
        jb_member(b, &count, "url");
        jb_url(b, req);
    }
}

/* Sends b's JSON (and frees it), a newline after it as Flask's jsonify;
 * ctype NULL: the Content-Type the handler set. */
static void finish_json(tn_http_request *req, int status, const char *ctype, jbuf *b) {
    jb_lit(b, "\n");
    if (b->oom) {
        free(b->p);
        tn_http_respond(req, 503, NULL, "out of memory\n", 14);
        return;
    }
    tn_http_respond_ref(req, status, ctype, b->p, b->len, free, b->p);
}
static void respond_json(tn_http_request *req, jbuf *b) { finish_json(req, 200, "application/json", b); }

static void respond_request(tn_http_request *req, unsigned keys) {
    jbuf b = {0};
    jb_lit(&b, "{");
    jb_request(&b, req, keys, 0);
    jb_lit(&b, "}");
    respond_json(req, &b);
}

/* --- request inspection ---------------------------------------------------- */

/* The route's arg is its entry in the route table (see dispatch). */
static void get(tn_http_request *req, void *arg) {
    (void)arg;
    respond_request(req, R_GET);
}
static void with_body(tn_http_request *req, void *arg) { /* /post, /put, /patch, /delete */
    (void)arg;
    respond_request(req, R_BODY);
}
static void anything(tn_http_request *req, void *arg) {
    (void)arg;
    respond_request(req, R_BODY | R_METHOD);
}

/* {"name":text}, text Latin-1 (a header value) or NULL (null). */
static void respond_member(tn_http_request *req, const char *name, const char *text) {
    jbuf b = {0};
    int count = 0;
    jb_lit(&b, "{");
    jb_member(&b, &count, name);
    if (text) jb_text(&b, text, strlen(text), 1);
    else jb_lit(&b, "null");
    jb_lit(&b, "}");
    respond_json(req, &b);
}
static void ip(tn_http_request *req, void *arg) {
    (void)arg;
    respond_member(req, "origin", origin(req));
}
static void user_agent(tn_http_request *req, void *arg) {
    (void)arg;
    respond_member(req, "user-agent", tn_http_get_header(req, "User-Agent"));
}

/* n random bytes: /dev/urandom, else rand(). */
static void random_bytes(unsigned char *p, size_t n) {
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(p, 1, n, f) : 0;
    if (f) fclose(f);
    while (got < n) p[got++] = (unsigned char)rand();
}
/* A random (version 4) UUID into out: 36 characters with dashes, else 32. */
static void uuid4(char *out, int dashes) {
    unsigned char r[16];
    int i;
    random_bytes(r, sizeof r);
    r[6] = (unsigned char)((r[6] & 0x0F) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3F) | 0x80);
    for (i = 0; i < 16; i++) {
        if (dashes && (i == 4 || i == 6 || i == 8 || i == 10)) *out++ = '-';
        out += sprintf(out, "%02x", r[i]);
    }
}
static void uuid(tn_http_request *req, void *arg) {
    char u[40];
    (void)arg;
    uuid4(u, 1);
    respond_member(req, "uuid", u);
}

/* --- cookies --------------------------------------------------------------- */
static void cookies(tn_http_request *req, void *arg) {
    jbuf b = {0};
    (void)arg;
    jb_lit(&b, "{\"cookies\":");
    jb_cookies(&b, req);
    jb_lit(&b, "}");
    respond_json(req, &b);
}

/* 302 to url, with httpbin's Content-Type (tn_http_redirect's body is empty). */
static void redirect(tn_http_request *req, const char *url) {
    tn_http_set_header(req, "Content-Type", "text/html; charset=utf-8");
    tn_http_redirect(req, url, 302);
}

static int is_token(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s)) return 0;
    return 1;
}

/* Sets a cookie as Werkzeug does: "name=value; Path=/". A value of other
 * characters than Werkzeug's safe ones goes in double quotes, with , ; "
 * and \ and bytes outside printable ASCII escaped (octal, as Python's
 * http.cookies): tn_http_set_cookie refuses such values (it cannot quote
 * them), so that line is written here; the escapes leave no byte that
 * could end the header. */
static void set_cookie(tn_http_request *req, const char *name, const char *value) {
    const char *p;
    char *line, *o;
    for (p = value; *p && (isalnum((unsigned char)*p) || strchr("/=!#$%&'*+-.^_`|~:", *p)); p++) {}
    if (!*p) {
        tn_http_set_cookie(req, name, value, NULL); /* path "/", no other attribute */
        return;
    }
    if (!is_token(name) || !(line = (char *)malloc(strlen(name) + 4 * strlen(value) + 12))) return;
    o = line + sprintf(line, "%s=\"", name);
    for (p = value; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') *o++ = '\\';
        if (c == ',' || c == ';' || c < 0x20 || c >= 0x7F) o += sprintf(o, "\\%03o", c);
        else *o++ = (char)c;
    }
    strcpy(o, "\"; Path=/");
    tn_http_add_header(req, "Set-Cookie", line);
    free(line);
}

/* /cookies/set?name=value...: a cookie per name (its first value). */
static void cookies_set(tn_http_request *req, void *arg) {
    size_t i, n = tn_http_argument_count(req);
    (void)arg;
    for (i = 0; i < n; i++) {
        const char *name, *value;
        if (tn_http_argument_at(req, i, &name, &value) == 0 && first_of_name(req, i, name) &&
            (value = tn_http_query(req, name)) != NULL)
            set_cookie(req, name, value);
    }
    redirect(req, "/cookies");
}
static void cookie_set(tn_http_request *req, void *arg) { /* /cookies/set/{name}/{value} */
    (void)arg;
    set_cookie(req, tn_http_param(req, "name"), tn_http_param(req, "value"));
    redirect(req, "/cookies");
}
/* /cookies/delete?name...: each named cookie expired (values ignored). */
static void cookies_delete(tn_http_request *req, void *arg) {
    size_t i, n = tn_http_argument_count(req);
    (void)arg;
    for (i = 0; i < n; i++) {
        const char *name, *value;
        if (tn_http_argument_at(req, i, &name, &value) == 0 && first_of_name(req, i, name) && tn_http_query(req, name))
            tn_http_clear_cookie(req, name, NULL, NULL);
    }
    redirect(req, "/cookies");
}

/* --- redirects --------------------------------------------------------------- */

/* {n} of the redirect routes: 1 or more, else (0 too: an assert there) 404. */
static long redirect_count(tn_http_request *req) {
    long n = param_num(req, "n", 1000000);
    if (n < 1) tn_http_send_error(req, 404);
    return n;
}
/* 302 to path, or to http(s)://HOST/path (the request's Host) if absolute. */
static void redirect_path(tn_http_request *req, const char *path, int absolute) {
    char url[1024], host[80];
    if (absolute) snprintf(url, sizeof url, "%s://%s%s", tn_http_protocol(req), authority(req, host, sizeof host), path);
    else snprintf(url, sizeof url, "%s", path);
    redirect(req, url);
}
/* /redirect/{n}: n 302s to /get, by way of /relative-redirect/{n-1} (not
 * /redirect/{n-1}: httpbin's way), or with ?absolute=true by way of
 * /absolute-redirect/{n-1}. */
static void redirect_times(tn_http_request *req, void *arg) {
    const char *a = tn_http_query(req, "absolute");
    int absolute = a && strcasecmp(a, "true") == 0;
    long n = redirect_count(req);
    char path[64];
    (void)arg;
    if (n < 1) return;
    if (n == 1) snprintf(path, sizeof path, "/get");
    else snprintf(path, sizeof path, "/%s-redirect/%ld", absolute ? "absolute" : "relative", n - 1);
    redirect_path(req, path, absolute);
}
static void relative_redirect(tn_http_request *req, void *arg) {
    long n = redirect_count(req);
    char path[64];
    (void)arg;
    if (n < 1) return;
    if (n == 1) snprintf(path, sizeof path, "/get");
    else snprintf(path, sizeof path, "/relative-redirect/%ld", n - 1);
    redirect_path(req, path, 0);
}
static void absolute_redirect(tn_http_request *req, void *arg) {
    long n = redirect_count(req);
    char path[64];
    (void)arg;
    if (n < 1) return;
    if (n == 1) snprintf(path, sizeof path, "/get");
    else snprintf(path, sizeof path, "/absolute-redirect/%ld", n - 1);
    redirect_path(req, path, 1);
}

/* /redirect-to?url=U&status_code=N: to U with N if it is a 3xx, else 302
 * (argument names in any case). U goes as given but for spaces, control
 * bytes and non-ASCII, %XX-escaped as Werkzeug does when it sends the
 * header. tn_http_redirect takes the redirect statuses only, and httpbin
 * sends any 3xx, so Location is set here. */
static void redirect_to(tn_http_request *req, void *arg) {
    const char *url = query_ci(req, "url"), *sc = query_ci(req, "status_code"), *p;
    long code = 302;
    jbuf loc = {0};
    (void)arg;
    if (sc) {
        char *end;
        long v = strtol(sc, &end, 10);
        if (!*sc || *end) {
            tn_http_respond(req, 400, NULL, "status_code must be a number\n", 29);
            return;
        }
        if (v >= 300 && v < 400) code = v;
    }
    if (!url) {
        tn_http_respond(req, 400, NULL, "url= is required\n", 17);
        return;
    }
    for (p = url; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7F) jb_pct(&loc, (unsigned char)*p);
        else jb_raw(&loc, p, 1);
    }
    if (loc.oom || tn_http_set_header(req, "Location", loc.p ? loc.p : "") != 0) {
        free(loc.p);
        tn_http_respond(req, 503, NULL, "out of memory\n", 14);
        return;
    }
    free(loc.p);
    tn_http_respond(req, (int)code, "text/html; charset=utf-8", "", 0);
}

/* --- response headers, caching ---------------------------------------------- */

/* /response-headers?k=v... (GET, POST): each argument of the query becomes
 * a response header (in the order of each name's first appearance, a
 * repeated name repeated, as httpbin's MultiDict gives them), and the body
 * lists the response's headers as JSON, its own Content-Length included:
 * rendered again until that length stops changing. tn_http_add_header
 * refuses the fields tornado.h frames itself (Content-Length,
 * Transfer-Encoding, Connection) and a name or value that could inject;
 * those are left out. A Content-Type replaces application/json (httpbin
 * sends both). */
static void response_headers(tn_http_request *req, void *arg) {
    size_t n = tn_http_argument_count(req), i, j, k, m = 0, len = 0, prev, rounds = 0, ctype;
    pair *v = (pair *)malloc((n + 2) * sizeof *v);
    const char **vals = (const char **)malloc((n + 1) * sizeof *vals);
    char cl[24] = "0";
    jbuf b = {0};
    (void)arg;
    if (!v || !vals) {
        free(v);
        free(vals);
        tn_http_respond(req, 503, NULL, "out of memory\n", 14);
        return;
    }
    memset(v, 0, (n + 2) * sizeof *v);
    v[m].name = "Content-Length";
    v[m++].value = cl;
    ctype = m;
    v[m].name = "Content-Type";
    v[m].value = "application/json";
    v[m++].len = 16;
    tn_http_set_header(req, "Content-Type", "application/json");
    for (i = 0; i < n; i++) {
        const char *name, *value;
        if (tn_http_argument_at(req, i, &name, &value) != 0 || !first_of_name(req, i, name)) continue;
        k = tn_http_query_arguments(req, name, vals, n);
        for (j = 0; j < k; j++) {
            size_t at;
            if (tn_http_add_header(req, name, vals[j]) != 0) continue;
            at = strcasecmp(name, "Content-Type") == 0 ? ctype : m++; /* one Content-Type: the last */
            v[at].name = name;
            v[at].value = vals[j];
            v[at].len = strlen(vals[j]);
            v[at].order = at;
        }
    }
    do { /* until the Content-Length inside is the body's */
        prev = len;
        snprintf(cl, sizeof cl, "%lu", (unsigned long)prev);
        for (i = 0; i < m; i++)
            if (v[i].value == cl) v[i].len = strlen(cl); /* jb_pairs sorts v: find it */
        b.len = 0;
        jb_pairs(&b, v, m, PAIRS_ARRAY);
        len = b.len + 1; /* and finish_json's newline */
    } while (len != prev && !b.oom && ++rounds < 10);
    free(v);
    free(vals);
    finish_json(req, 200, NULL, &b);
}

/* Whether a list header (If-None-Match, If-Match) names etag, read as
 * httpbin reads it (parse_multi_value_header): items split at commas, each
 * without leading space, W/ and quotes; "*" names any. */
static int etag_listed(const char *list, const char *etag) {
    size_t el = strlen(etag);
    while (list) {
        const char *item = list, *end;
        list = strchr(list, ',');
        while (*item == ' ' || *item == '\t') item++;
        if (strncmp(item, "W/", 2) == 0) item += 2;
        if (*item == '"') item++;
        end = item + strcspn(item, "\",");
        if (((size_t)(end - item) == el && strncmp(item, etag, el) == 0) || (end - item == 1 && *item == '*'))
            return 1;
        if (list) list++;
    }
    return 0;
}

/* /etag/{etag}: the resource's ETag is etag (unquoted, as httpbin sends it).
 * A non-empty If-None-Match that names it is a 304 (one that does not
 * means 200, If-Match unread); else an If-Match that does not is a 412.
 * The route has no_etag, so tornado.h adds no ETag of its own, but it
 * still compares If-None-Match with the handler's: here it never
 * matches, this handler has answered those. */
static void etag(tn_http_request *req, void *arg) {
    const char *tag = tn_http_param(req, "etag");
    const char *inm = tn_http_get_header(req, "If-None-Match"), *im = tn_http_get_header(req, "If-Match");
    (void)arg;
    if (inm && *inm) {
        if (etag_listed(inm, tag)) {
            tn_http_set_header(req, "ETag", tag);
            tn_http_respond(req, 304, NULL, "", 0);
            return;
        }
    } else if (im && *im && !etag_listed(im, tag)) {
        tn_http_respond(req, 412, "text/html; charset=utf-8", "", 0);
        return;
    }
    tn_http_set_header(req, "ETag", tag);
    respond_request(req, R_GET);
}

/* /cache: a 304 if the request is conditional at all (a non-empty
 * If-Modified-Since, or any If-None-Match: neither is compared with
 * anything), else the /get answer with Last-Modified: now and a random
 * ETag. */
static void cache(tn_http_request *req, void *arg) {
    const char *ims = tn_http_get_header(req, "If-Modified-Since");
    char date[40], tag[40];
    time_t now = time(NULL);
    struct tm tm;
    (void)arg;
    if ((ims && *ims) || tn_http_get_header(req, "If-None-Match")) {
        tn_http_respond(req, 304, NULL, "", 0);
        return;
    }
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    uuid4(tag, 0);
    tn_http_set_header(req, "Last-Modified", date);
    tn_http_set_header(req, "ETag", tag);
    respond_request(req, R_GET);
}
/* /cache/{n}: the /get answer, Cache-Control: public, max-age=n. */
static void cache_control(tn_http_request *req, void *arg) {
    long n = param_num(req, "n", 1000000000L);
    char v[48];
    (void)arg;
    if (n < 0) {
        tn_http_send_error(req, 404);
        return;
    }
    snprintf(v, sizeof v, "public, max-age=%ld", n);
    tn_http_set_header(req, "Cache-Control", v);
    respond_request(req, R_GET);
}

/* --- auth ------------------------------------------------------------------ */

/* /basic-auth/{user}/{passwd}: 200 with exactly those Basic credentials,
 * else the 401 challenge. */
static void basic_auth(tn_http_request *req, void *arg) {
    const char *user, *pass;
    jbuf b = {0};
    (void)arg;
    if (tn_http_basic_auth(req, &user, &pass) != 0 || strcmp(user, tn_http_param(req, "user")) != 0 ||
        strcmp(pass, tn_http_param(req, "passwd")) != 0) {
        tn_http_auth_challenge(req, "Fake Realm");
        return;
    }
    jb_lit(&b, "{\"authenticated\":true,\"user\":");
    jb_text(&b, user, strlen(user), 0);
    jb_lit(&b, "}");
    respond_json(req, &b);
}

/* --- bodies ------------------------------------------------------------------ */

/* /range/{n}: n bytes ('a' + offset % 26) with ETag: range{n} and
 * Accept-Ranges. A Range is read as httpbin reads it (helpers.py): "bytes"
 * and "=A-B" where either number may be absent (or not a number: then it
 * is absent), so "bytes=-K" is the last K and several ranges are one open
 * one. The whole resource is a 200, a part a 206 (both with Content-Range),
 * anything outside it a 416. */
#define RANGE_MAX 102400
static long range_number(const char *s, const char *end) {
    long v = 0;
    while (s < end && (*s == ' ' || *s == '\t')) s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t')) end--;
    if (s == end) return -1;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v > RANGE_MAX ? v : v * 10 + (*s - '0'); /* past the end is past the end */
    }
    return v;
}
static void range_of(const char *h, long n, long *first, long *last) {
    const char *eq, *dash, *end;
    long a = -1, b = -1;
    while (h && (*h == ' ' || *h == '\t')) h++;
    if (h && strncmp(h, "bytes", 5) == 0 && (eq = strchr(h, '=')) != NULL && !strchr(eq + 1, '=')) {
        end = eq + 1 + strcspn(eq + 1, "-");
        a = range_number(eq + 1, end);
        if (*end == '-') {
            dash = end + 1;
            b = range_number(dash, dash + strcspn(dash, "-"));
        }
    }
    if (a < 0 && b >= 0) { /* the last b */
        *first = n - b > 0 ? n - b : 0;
        *last = n - 1;
    } else {
        *first = a < 0 ? 0 : a;
        *last = b < 0 ? n - 1 : b;
    }
}
static void range(tn_http_request *req, void *arg) {
    static char pattern[RANGE_MAX];
    long n = param_num(req, "n", LONG_MAX), first, last, i;
    char tag[32], cr[64];
    (void)arg;
    if (n < 0) {
        tn_http_send_error(req, 404);
        return;
    }
    snprintf(tag, sizeof tag, "range%ld", n);
    tn_http_set_header(req, "ETag", tag);
    tn_http_set_header(req, "Accept-Ranges", "bytes");
    if (n == 0 || n > RANGE_MAX) {
        tn_http_respond(req, 404, NULL, "number of bytes must be in the range (0, 102400]", 48);
        return;
    }
    range_of(tn_http_get_header(req, "Range"), n, &first, &last);
    if (first > last || first >= n || last >= n) {
        snprintf(cr, sizeof cr, "bytes */%ld", n);
        tn_http_set_header(req, "Content-Range", cr);
        tn_http_respond(req, 416, NULL, "", 0);
        return;
    }
    if (!pattern[0])
        for (i = 0; i < RANGE_MAX; i++) pattern[i] = (char)('a' + i % 26);
    snprintf(cr, sizeof cr, "bytes %ld-%ld/%ld", first, last, n);
    tn_http_set_header(req, "Content-Range", cr);
    tn_http_respond_ref(req, first == 0 && last == n - 1 ? 200 : 206, "application/octet-stream", pattern + first,
                        (size_t)(last - first + 1), NULL, NULL);
}

/* A number from the query (its first value), def if absent, -1 if it is
 * not one. */
static double query_number(tn_http_request *req, const char *name, double def) {
    const char *s = tn_http_query(req, name);
    char *end;
    double v;
    if (!s) return def;
    v = strtod(s, &end);
    return end == s || *end || v != v ? -1 : v;
}

/* /drip?numbytes=N&duration=S&delay=S&code=C: N bytes "*" (Content-Length
 * N, at most 10 MiB), spread over S seconds (byte i at delay + i * S / N),
 * status C. A coroutine: it sleeps between bytes while the loop serves
 * others, and writes the bytes that are due together when they come closer
 * than the loop's clock can tell. duration and delay: at most a minute. */
#define DRIP_MAX (10L * 1024 * 1024)
struct drip_frame {
    tn_http_co h;
    long n, sent;
    int code;
    double pause_ms; /* from one byte to the next */
    uint64_t start;
};
static int drip(tn_co *co) {
    struct drip_frame *f = (struct drip_frame *)co;
    static char stars[4096];
    double duration, delay, n, code;
    uint64_t now;
    TN_BEGIN(co);
    cors(f->h.req);
    duration = query_number(f->h.req, "duration", 2);
    delay = query_number(f->h.req, "delay", 0);
    n = query_number(f->h.req, "numbytes", 10);
    code = query_number(f->h.req, "code", 200);
    if (n < 1) {
        tn_http_respond(f->h.req, 400, NULL, "number of bytes must be positive", 32);
        TN_RETURN(co, NULL);
    }
    if (duration < 0 || duration > 60 || delay < 0 || delay > 60 || code < 200 || code > 599) {
        tn_http_respond(f->h.req, 400, NULL, "duration and delay: 0..60 s; code: 200..599\n", 45);
        TN_RETURN(co, NULL);
    }
    f->n = n > DRIP_MAX ? DRIP_MAX : (long)n;
    f->code = (int)code;
    f->pause_ms = duration * 1000 / (double)f->n;
    if (delay > 0) {
        TN_SLEEP(co, (uint64_t)(delay * 1000));
        if (co->err) TN_FAIL(co, co->err); /* the client left */
    }
    if (!stars[0]) memset(stars, '*', sizeof stars);
    tn_http_begin(f->h.req, f->code, "application/octet-stream", f->n);
    f->start = tn_time_ms(co->loop);
    while (f->sent < f->n) {
        long due = f->n; /* bytes due by now, one at least */
        now = tn_time_ms(co->loop);
        if (f->pause_ms > 0) due = (long)((double)(now - f->start) / f->pause_ms) + 1;
        if (due > f->n) due = f->n;
        if (due - f->sent > (long)sizeof stars) due = f->sent + (long)sizeof stars;
        if (due <= f->sent) due = f->sent + 1;
        if (tn_http_write(f->h.req, stars, (size_t)(due - f->sent))) TN_FAIL(co, TN_ECLOSED);
        f->sent = due;
        if (f->sent == f->n) break;
        now = f->start + (uint64_t)((double)f->sent * f->pause_ms); /* the next byte's time */
        if (now > tn_time_ms(co->loop)) TN_SLEEP(co, now - tn_time_ms(co->loop));
        else TN_AWAIT(co, tn_http_drain(f->h.req));
        if (co->err) TN_FAIL(co, co->err);
    }
    tn_http_finish(f->h.req);
    TN_END(co);
}

/* /base64/{value}: URL-safe base64 decoded, as text/html (httpbin's 500s,
 * for missing padding or bytes that are not UTF-8, are 400s here). */
static void base64(tn_http_request *req, void *arg) {
    const char *value = tn_http_param(req, "value");
    char *out = (char *)malloc(strlen(value) + 1);
    long n;
    (void)arg;
    if (!out) {
        tn_http_respond(req, 503, NULL, "out of memory\n", 14);
        return;
    }
    if ((n = b64url_decode(out, value)) < 0) {
        tn_http_respond(req, 400, NULL, "Incorrect padding\n", 18);
    } else if (!utf8_valid(out, (size_t)n)) {
        tn_http_respond(req, 400, NULL, "the decoded bytes are not UTF-8\n", 32);
    } else {
        tn_http_respond_ref(req, 200, "text/html; charset=utf-8", out, (size_t)n, free, out);
        return;
    }
    free(out);
}

/* CRC-32 (gzip's) of s[0..n); Adler-32 (zlib's): adler32_update. */
static uint32_t crc32_of(const unsigned char *s, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    int k;
    while (n--)
        for (c ^= *s++, k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    return ~c;
}
static unsigned char *put32(unsigned char *p, uint32_t v, int big_endian) {
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (big_endian ? 24 - 8 * i : 8 * i));
    return p + 4;
}

/* data framed as gzip (RFC 1952) or zlib (RFC 1950, what HTTP calls
 * "deflate") around deflate's stored blocks (RFC 1951 3.2.4: the bytes as
 * they are, at most 65535 a block), which every inflater reads: a valid
 * Content-Encoding without a compression library (nothing is smaller for
 * it). Returns a malloc'd buffer (*len its length), NULL if out of memory. */
static unsigned char *deflate_stored(const unsigned char *data, size_t n, int gzip, size_t *len) {
    static const unsigned char gzip_head[10] = {0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255}, zlib_head[2] = {0x78, 0x01};
    unsigned char *out = (unsigned char *)malloc(18 + 5 * (n / 65535 + 1) + n), *p;
    size_t i = 0;
    if (!(p = out)) return NULL;
    memcpy(p, gzip ? gzip_head : zlib_head, gzip ? 10 : 2);
    p += gzip ? 10 : 2;
    do {
        size_t k = n - i < 65535 ? n - i : 65535;
        *p++ = i + k == n; /* BFINAL on the last, BTYPE 00: stored */
        *p++ = (unsigned char)(k & 0xFF);
        *p++ = (unsigned char)(k >> 8);
        *p++ = (unsigned char)(~k & 0xFF);
        *p++ = (unsigned char)(~k >> 8 & 0xFF);
        memcpy(p, data + i, k);
        p += k;
        i += k;
    } while (i < n);
    if (gzip) p = put32(put32(p, crc32_of(data, n), 0), (uint32_t)n, 0);
    else p = put32(p, adler32_update(1, data, n), 1);
    *len = (size_t)(p - out);
    return out;
}

/* /gzip, /deflate: {"gzipped"|"deflated": true, headers, method, origin}
 * in that Content-Encoding, whatever Accept-Encoding says (as httpbin). */
static void respond_encoded(tn_http_request *req, int gzip) {
    jbuf b = {0};
    unsigned char *z;
    size_t len;
    jb_lit(&b, gzip ? "{\"gzipped\":true" : "{\"deflated\":true");
    jb_request(&b, req, R_HEADERS | R_METHOD | R_ORIGIN, 1);
    jb_lit(&b, "}\n");
    z = b.oom ? NULL : deflate_stored((const unsigned char *)b.p, b.len, gzip, &len);
    free(b.p);
    if (!z) {
        tn_http_respond(req, 503, NULL, "out of memory\n", 14);
        return;
    }
    tn_http_set_header(req, "Content-Encoding", gzip ? "gzip" : "deflate");
    tn_http_respond_ref(req, 200, "application/json", (const char *)z, len, free, z);
}
static void gzip_page(tn_http_request *req, void *arg) {
    (void)arg;
    respond_encoded(req, 1);
}
static void deflate_page(tn_http_request *req, void *arg) {
    (void)arg;
    respond_encoded(req, 0);
}

/* --- fixed texts: httpbin's, byte for byte ---------------------------------- */

/* helpers.py ASCII_ART: /status/418's body. */
static const char teapot[] =
    "\n"
    "    -=[ teapot ]=-\n"
    "\n"
    "       _...._\n"
    "     .'  _ _ `.\n"
    "    | .\"` ^ `\". _,\n"
    "    \\_;`\"---\"`|//\n"
    "      |       ;/\n"
    "      \\_     _/\n"
    "        `\"\"\"`\n";
/* /status/406's body (json.dumps: its spacing, its key order). */
static const char not_acceptable[] =
    "{\"message\": \"Client did not request a supported media type.\", \"accept\": [\"image/webp\", "
    "\"image/svg+xml\", \"image/jpeg\", \"image/png\", \"image/*\"]}";
/* helpers.py ANGRY_ASCII: /deny. */
static const char angry[] =
    "\n"
    "          .-''''''-.\n"
    "        .' _      _ '.\n"
    "       /   O      O   \\\n"
    "      :                :\n"
    "      |                |\n"
    "      :       __       :\n"
    "       \\  .-\"`  `\"-.  /\n"
    "        '.          .'\n"
    "          '-......-'\n"
    "     YOU SHOULDN'T BE HERE\n";
static const char robots[] = "User-agent: *\nDisallow: /deny\n";
/* /json: upstream httpbin's (>= 0.9; Debian's 0.7.0 has no /json). */
static const char slideshow[] =
    "{\"slideshow\":{\"author\":\"Yours Truly\",\"date\":\"date of publication\",\"slides\":["
    "{\"title\":\"Wake up to WonderWidgets!\",\"type\":\"all\"},"
    "{\"items\":[\"Why <em>WonderWidgets</em> are great\",\"Who <em>buys</em> WonderWidgets\"],"
    "\"title\":\"Overview\",\"type\":\"all\"}],\"title\":\"Sample Slide Show\"}}\n";
/* /encoding/utf8: upstream serves Markus Kuhn's UTF-8 demo, which Debian's
 * package leaves out (its page says so); a few lines of our own. */
static const char utf8_demo[] =
    "UTF-8 sample text: every line below is valid UTF-8\n"
    "\n"
    "Accents:   café, naïve, façade, Ångström, smørrebrød\n"
    "Greek:     αβγδε ΑΒΓΔΕ\n"
    "Cyrillic:  Привет, мир\n"
    "Math:      ∀x ∈ ℝ: x² ≥ 0, ∑ 1/n² = π²/6\n"
    "Arrows:    ← ↑ → ↓ ↔\n"
    "CJK:       日本語, 中文, 한국어\n"
    "Astral:    🐍 𝄞 (four bytes each)\n";
/* /html: templates/moby.html as Jinja renders it (without its last
 * newline): a paragraph of Moby-Dick (public domain). */
static const char moby_html[] =
    "<!DOCTYPE html>\n"
    "<html>\n"
    "  <head>\n"
    "  </head>\n"
    "  <body>\n"
    "      <h1>Herman Melville - Moby-Dick</h1>\n"
    "\n"
    "      <div>\n"
    "        <p>\n"
    "          Availing himself of the mild, summer-cool weather that now reigned in these latitudes, "
    "and in preparation for the peculiarly active pursuits shortly to be anticipated, Perth, the "
    "begrimed, blistered old blacksmith, had not removed his portable forge to the hold again, after "
    "concluding his contributory work for Ahab's leg, but still retained it on deck, fast lashed "
    "to ringbolts by the foremast; being now almost incessantly invoked by the headsmen, and harpooneers, "
    "and bowsmen to do some little job for them; altering, or repairing, or new shaping their various "
    "weapons and boat furniture. Often he would be surrounded by an eager circle, all waiting to "
    "be served; holding boat-spades, pike-heads, harpoons, and lances, and jealously watching his "
    "every sooty movement, as he toiled. Nevertheless, this old man's was a patient hammer wielded "
    "by a patient arm. No murmur, no impatience, no petulance did come from him. Silent, slow, and "
    "solemn; bowing over still further his chronically broken back, he toiled away, as if toil were "
    "life itself, and the heavy beating of his hammer the heavy beating of his heart. And so it was.\342\200\224Most "
    "miserable! A peculiar walk in this old man, a certain slight but painful appearing yawing in "
    "his gait, had at an early period of the voyage excited the curiosity of the mariners. And to "
    "the importunity of their persisted questionings he had finally given in; and so it came to pass "
    "that every one now knew the shameful story of his wretched fate. Belated, and not innocently, "
    "one bitter winter's midnight, on the road running between two country towns, the blacksmith "
    "half-stupidly felt the deadly numbness stealing over him, and sought refuge in a leaning, dilapidated "
    "barn. The issue was, the loss of the extremities of both feet. Out of this revelation, part "
    "by part, at last came out the four acts of the gladness, and the one long, and as yet uncatastrophied "
    "fifth act of the grief of his life's drama. He was an old man, who, at the age of nearly sixty, "
    "had postponedly encountered that thing in sorrow's technicals called ruin. He had been an artisan "
    "of famed excellence, and with plenty to do; owned a house and garden; embraced a youthful, daughter-like, "
    "loving wife, and three blithe, ruddy children; every Sunday went to a cheerful-looking church, "
    "planted in a grove. But one night, under cover of darkness, and further concealed in a most "
    "cunning disguisement, a desperate burglar slid into his happy home, and robbed them all of everything. "
    "And darker yet to tell, the blacksmith himself did ignorantly conduct this burglar into his "
    "family's heart. It was the Bottle Conjuror! Upon the opening of that fatal cork, forth flew "
    "the fiend, and shrivelled up his home. Now, for prudent, most wise, and economic reasons, the "
    "blacksmith's shop was in the basement of his dwelling, but with a separate entrance to it; so "
    "that always had the young and loving healthy wife listened with no unhappy nervousness, but "
    "with vigorous pleasure, to the stout ringing of her young-armed old husband's hammer; whose "
    "reverberations, muffled by passing through the floors and walls, came up to her, not unsweetly, "
    "in her nursery; and so, to stout Labor's iron lullaby, the blacksmith's infants were rocked "
    "to slumber. Oh, woe on woe! Oh, Death, why canst thou not sometimes be timely? Hadst thou taken "
    "this old blacksmith to thyself ere his full ruin came upon him, then had the young widow had "
    "a delicious grief, and her orphans a truly venerable, legendary sire to dream of in their after "
    "years; and all of them a care-killing competency.\n"
    "        </p>\n"
    "      </div>\n"
    "  </body>\n"
    "</html>";

/* --- statuses ------------------------------------------------------------------ */

/* What httpbin answers with some statuses (helpers.py status_code): their
 * headers replace all others there, so that they have no Content-Type,
 * while tornado.h always sends one (text/plain here, type NULL). Any other
 * status: an empty text/html body. */
static const struct status_answer {
    int code;
    const char *header, *value, *type, *body;
} status_answers[] = {
    {301, "Location", "/redirect/1", NULL, ""},
    {302, "Location", "/redirect/1", NULL, ""},
    {303, "Location", "/redirect/1", NULL, ""},
    {304, NULL, NULL, NULL, ""},
    {305, "Location", "/redirect/1", NULL, ""},
    {307, "Location", "/redirect/1", NULL, ""},
    {401, "WWW-Authenticate", "Basic realm=\"Fake Realm\"", NULL, ""},
    {402, "X-More-Info", "http://vimeo.com/22053820", NULL, "Fuck you, pay me!"},
    {406, NULL, NULL, "application/json", not_acceptable},
    {407, "Proxy-Authenticate", "Basic realm=\"Fake Realm\"", NULL, ""},
    {418, "X-More-Info", "http://tools.ietf.org/html/rfc2324", NULL, teapot},
};

/* The status /status/{codes} names: one code, or a comma list of
 * code[:weight] from which one is drawn at random, each weight 1 unless
 * given (httpbin's weighted_choice). 0, or -1 if it is malformed. */
static int parse_status(const char *codes, long *code) {
    long list[64];
    double weight[64], total = 0, x;
    size_t n = 0, i;
    char *end;
    if (!strchr(codes, ',')) { /* one code: a number alone */
        long v = strtol(codes, &end, 10);
        if (!*codes || *end) return -1;
        *code = v;
        return 0;
    }
    for (;;) {
        if (n == 64) return -1;
        list[n] = strtol(codes, &end, 10);
        weight[n] = 1;
        if (end == codes) return -1;
        if (*end == ':') {
            codes = end + 1;
            weight[n] = strtod(codes, &end);
            if (end == codes) return -1;
        }
        total += weight[n++];
        if (*end != ',') break;
        codes = end + 1;
    }
    if (*end) return -1;
    x = total * (double)rand() / ((double)RAND_MAX + 1);
    for (i = 0; i + 1 < n && x >= weight[i]; i++) x -= weight[i];
    *code = list[i];
    return 0;
}

/* /status/{codes} (any method). tornado.h sends final statuses only, and
 * none above 599: httpbin would send any number it is given. */
static void status(tn_http_request *req, void *arg) {
    long code;
    size_t i;
    (void)arg;
    if (parse_status(tn_http_param(req, "codes"), &code) != 0) {
        tn_http_respond(req, 400, NULL, "Invalid status code", 19);
        return;
    }
    if (code < 200 || code > 599) {
        tn_http_respond(req, 400, NULL, "tornado.h sends statuses 200..599 only\n", 39);
        return;
    }
    for (i = 0; i < sizeof status_answers / sizeof status_answers[0]; i++) {
        const struct status_answer *a = &status_answers[i];
        if (a->code != code) continue;
        if (a->header) tn_http_set_header(req, a->header, a->value);
        tn_http_respond(req, (int)code, a->type, a->body, strlen(a->body));
        return;
    }
    tn_http_respond(req, (int)code, "text/html; charset=utf-8", "", 0);
}

/* --- the routes ------------------------------------------------------------------
 * httpbin is a Flask app, and Flask gives each route two things httpbin
 * relies on: its CORS hook (see cors) and an OPTIONS answer. tornado.h has
 * no per-server hooks, so these routes go through one dispatcher that does
 * both, then calls the route's handler with its table entry as arg (a
 * fixed page finds its text there). A coroutine route (/drip) is
 * registered as such and calls cors itself. */
typedef struct httpbin_route {
    const char *methods; /* the methods, separated by spaces */
    const char *pattern;
    tn_http_handler_fn fn; /* a plain handler, or */
    tn_co_fn co;           /* a coroutine handler and its frame's size */
    size_t frame_size;
    const char *type, *text; /* a fixed page */
} httpbin_route;

static void page(tn_http_request *req, void *arg) {
    const httpbin_route *rt = (const httpbin_route *)arg;
    tn_http_respond_ref(req, 200, rt->type, rt->text, strlen(rt->text), NULL, NULL); /* static: no free */
}

#define ANY_METHOD "GET POST PUT DELETE PATCH TRACE"
#define PLAIN(methods, pattern, fn) {methods, pattern, fn, NULL, 0, NULL, NULL}
#define PAGE(pattern, type, text) {"GET", pattern, page, NULL, 0, type, text}
static httpbin_route httpbin_routes[] = {
    PLAIN("GET", "/get", get),
    PLAIN("POST", "/post", with_body),
    PLAIN("PUT", "/put", with_body),
    PLAIN("PATCH", "/patch", with_body),
    PLAIN("DELETE", "/delete", with_body),
    PLAIN(ANY_METHOD, "/anything", anything),
    PLAIN(ANY_METHOD, "/anything/{path*}", anything),
    PLAIN("GET", "/ip", ip),
    PLAIN("GET", "/user-agent", user_agent),
    PLAIN("GET", "/uuid", uuid),
    PLAIN("GET", "/cookies", cookies),
    PLAIN("GET", "/cookies/set", cookies_set),
    PLAIN("GET", "/cookies/set/{name}/{value}", cookie_set),
    PLAIN("GET", "/cookies/delete", cookies_delete),
    PLAIN("GET", "/redirect/{n}", redirect_times),
    PLAIN("GET", "/relative-redirect/{n}", relative_redirect),
    PLAIN("GET", "/absolute-redirect/{n}", absolute_redirect),
    PLAIN(ANY_METHOD, "/redirect-to", redirect_to),
    PLAIN("GET POST", "/response-headers", response_headers),
    PLAIN("GET", "/etag/{etag}", etag),
    PLAIN("GET", "/cache", cache),
    PLAIN("GET", "/cache/{n}", cache_control),
    PLAIN("GET", "/basic-auth/{user}/{passwd}", basic_auth),
    PLAIN(ANY_METHOD, "/status/{codes}", status),
    PLAIN("GET", "/range/{n}", range),
    {"GET", "/drip", NULL, drip, sizeof(struct drip_frame), NULL, NULL},
    PLAIN("GET", "/base64/{value}", base64),
    PLAIN("GET", "/gzip", gzip_page),
    PLAIN("GET", "/deflate", deflate_page),
    PAGE("/html", "text/html; charset=utf-8", moby_html),
    PAGE("/json", "application/json", slideshow),
    PAGE("/robots.txt", "text/plain", robots),
    PAGE("/deny", "text/plain", angry),
    PAGE("/encoding/utf8", "text/html; charset=utf-8", utf8_demo),
};

/* Flask's OPTIONS answer: an empty 200 with Allow (the route's methods,
 * HEAD with GET, OPTIONS), and httpbin's CORS preflight fields. */
static void options(tn_http_request *req, const httpbin_route *rt) {
    const char *m, *asked = tn_http_get_header(req, "Access-Control-Request-Headers");
    char allow[128];
    size_t o = 0;
    for (m = rt->methods; *m && o + 2 < sizeof allow; m++) {
        if (*m == ' ') allow[o++] = ',';
        allow[o++] = *m;
    }
    snprintf(allow + o, sizeof allow - o, "%s, OPTIONS", strstr(rt->methods, "GET") ? ", HEAD" : "");
    tn_http_set_header(req, "Allow", allow);
    tn_http_set_header(req, "Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, PATCH, OPTIONS");
    tn_http_set_header(req, "Access-Control-Max-Age", "3600");
    if (asked) tn_http_set_header(req, "Access-Control-Allow-Headers", asked);
    tn_http_respond(req, 200, "text/html; charset=utf-8", "", 0);
}

static void dispatch(tn_http_request *req, void *arg) {
    const httpbin_route *rt = (const httpbin_route *)arg;
    cors(req);
    if (strcmp(tn_http_method(req), "OPTIONS") == 0) options(req, rt);
    else rt->fn(req, arg);
}

/* Registers the table: each route for its methods and OPTIONS, all without
 * tornado.h's automatic ETag (httpbin sends none; /etag, /cache and /range
 * set their own). 0 or the first error. */
static int add_httpbin_routes(tn_http_server *srv) {
    size_t i;
    int rc = 0;
    for (i = 0; i < sizeof httpbin_routes / sizeof httpbin_routes[0] && !rc; i++) {
        httpbin_route *rt = &httpbin_routes[i];
        const char *m = rt->methods;
        tn_http_route_opts o = {0};
        o.no_etag = 1;
        while (*m && !rc) {
            char method[16];
            size_t n = strcspn(m, " ");
            memcpy(method, m, n);
            method[n] = 0;
            o.frame_size = rt->frame_size;
            rc = rt->co ? tn_http_route_co(srv, method, rt->pattern, rt->co, rt, &o)
                        : tn_http_route(srv, method, rt->pattern, dispatch, rt, &o);
            m += n + (m[n] == ' ');
        }
        o.frame_size = 0;
        if (!rc) rc = tn_http_route(srv, "OPTIONS", rt->pattern, dispatch, rt, &o);
    }
    return rc;
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

/* HTTPS next to HTTP (the same routes): 0, or main's exit status. */
static int listen_tls(const char *host, int port, const char *cert, const char *key) {
#if defined(TN_TLS_OPENSSL) || defined(TN_TLS_MBEDTLS)
    tn_tls_opts t = {0};
    tn_tls_ctx *ctx;
    int rc;
    t.cert_file = cert;
    t.key_file = key;
    if ((rc = tn_tls_server_ctx_new(&t, &ctx)) != 0) {
        fprintf(stderr, "httpbin: --tls-cert %s --tls-key %s: %s\n", cert, key, tn_strerror(rc));
        return 2;
    }
    rc = tn_http_listen_tls(server, host, port, ctx);
    tn_tls_ctx_free(ctx); /* the server holds its reference */
    if (rc) {
        fprintf(stderr, "httpbin: listen on %s:%d: %s\n", host, port, tn_strerror(rc));
        return 1;
    }
    return 0;
#else
    (void)host, (void)port, (void)cert, (void)key;
    fprintf(stderr, "httpbin: built without TLS (see the Makefile)\n");
    return 2;
#endif
}

int main(int argc, char **argv) {
    tn_loop *loop;
    const char *host = "127.0.0.1";
    const char *static_dir = NULL, *tls_cert = NULL, *tls_key = NULL;
    int port = 8888, workers = 1, tls_port = 0, i, rc;
    tn_http_server_opts opts = {0};
    tn_http_route_opts up = {0}, str = {0}, del = {0}, prx = {0}, byt = {0};
    for (i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (strcmp(o, "--host") == 0) host = v;
        else if (strcmp(o, "--port") == 0) port = atoi(v);
        else if (strcmp(o, "--workers") == 0) workers = atoi(v);
        else if (strcmp(o, "--static") == 0) static_dir = v;
        else if (strcmp(o, "--tls-cert") == 0) tls_cert = v;
        else if (strcmp(o, "--tls-key") == 0) tls_key = v;
        else if (strcmp(o, "--tls-port") == 0) tls_port = atoi(v);
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
        fprintf(stderr, "usage: httpbin [--host HOST] [--port PORT] [--workers N] [--static DIR]\n"
                        "  [--tls-cert FILE --tls-key FILE [--tls-port PORT]]\n"
                        "  [--max-connections N] [--max-body B] [--max-buffered B] [--header-timeout MS]\n"
                        "  [--body-timeout MS] [--idle-timeout MS] [--write-timeout MS] [--linger-timeout MS]\n");
        return 2;
    }
    if (!tls_cert != !tls_key) {
        fprintf(stderr, "httpbin: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if (workers < 1 || (workers > 1 && (port == 0 || (tls_cert && tls_port == 0)))) {
        fprintf(stderr, "httpbin: --workers needs a fixed --port (and --tls-port)\n");
        return 2;
    }
    opts.reuseport = workers > 1;
    spawn_workers(workers);
    srand((unsigned)time(NULL) ^ (unsigned)getpid() << 16); /* each worker its own draws (/status lists) */
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
    tn_http_route_co(server, "GET", "/bytes/{n}", bytes, NULL, &byt);
    tn_http_route(server, "GET", "/headers", headers, NULL, NULL);
    tn_http_route(server, "GET", "/query", query, NULL, NULL);
    tn_http_route_co(server, "GET", "/delay/{ms}", delay, NULL, &del);
    tn_http_route_co(server, "GET", "/stream/{n}", stream, NULL, &str);
    tn_http_route_co(server, "POST", "/upload", upload, NULL, &up);
    tn_http_route_co(server, "GET", "/proxy", proxy, NULL, &prx);
    tn_http_route(server, "GET", "/site/{page*}", site, NULL, NULL);
    if ((rc = add_httpbin_routes(server)) != 0) {
        fprintf(stderr, "httpbin: routes: %s\n", tn_strerror(rc));
        return 1;
    }
    if (static_dir && (rc = tn_http_static(server, "/static/", static_dir, NULL)) != 0) {
        fprintf(stderr, "httpbin: --static %s: %s\n", static_dir, tn_strerror(rc));
        return 2;
    }
    if ((rc = tn_http_listen(server, host, port)) != 0) {
        fprintf(stderr, "httpbin: listen on %s:%d: %s\n", host, port, tn_strerror(rc));
        return 1;
    }
    listen_host = host;
    listen_port = tn_http_server_port(server);
    if (tls_cert && (rc = listen_tls(host, tls_port, tls_cert, tls_key)) != 0) return rc;
    tn_signal_add(loop, SIGINT, on_signal, NULL);
    tn_signal_add(loop, SIGTERM, on_signal, NULL);
    printf("listening on http://%s:%d\n", host, listen_port);
    if (tls_cert) printf("listening on https://%s:%d\n", host, tn_http_server_port(server));
    fflush(stdout);
    tn_loop_run(loop);
    /* Let requests in flight finish (the shutdown's deadline bounds it). */
    while (tn_http_server_connections(server)) tn_loop_step(loop, 100);
    tn_http_server_free(server);
    tn_http_client_free(client);
    tn_loop_free(loop);
    return 0;
}
