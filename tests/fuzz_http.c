/* fuzz_http.c: libFuzzer target for the HTTP parsers (make check-fuzz).
 *
 * The first input byte picks the parser and how the rest is split:
 *   request head, response head (answering GET, HEAD or CONNECT), or a
 *   chunked body.
 * Each is run twice: on the whole input at once, and fed in pieces the way
 * the server and client feed them (a growing prefix with prev_len for a
 * head; "keep the unconsumed tail, append more" for a chunked body). The two
 * results must agree, field by field; the documentation promises that no
 * split changes the outcome. Every buffer handed to a parser is an
 * exact-size heap copy, so AddressSanitizer reports a read one byte past
 * `len`. Results are checked against what the API promises: a head length
 * within the input, fields pointing inside the head, negative codes that
 * tn_strerror names. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXH 16 /* few header slots, so TN_EHEADERS is reachable */

#define FUZZ_CHECK(cond)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "fuzz_http.c:%d: check failed: %s\n", __LINE__, #cond); \
            abort();                                                             \
        }                                                                        \
    } while (0)

static char *copy(const uint8_t *p, size_t n) {
    char *b = (char *)malloc(n ? n : 1);
    FUZZ_CHECK(b != NULL);
    if (n) memcpy(b, p, n);
    return b;
}

/* Split points from a seed: up to 7 cuts, increasing, inside (0, n). */
static size_t cuts(unsigned seed, size_t n, size_t *at) {
    size_t k = 0, pos = 0;
    while (k < 7 && n > 1) {
        size_t step = 1 + (seed % 37u);
        seed = seed * 1103515245u + 12345u;
        pos += step;
        if (pos >= n) break;
        at[k++] = pos;
    }
    return k;
}

static int inside(const char *p, size_t n, const char *base, size_t len) {
    return n == 0 || (p >= base && p + n <= base + len);
}

/* The head's strings as offsets, so two parses of copies compare. */
static void same_message(const tn_http_message *a, const char *ba, const tn_http_message *b,
                         const char *bb, size_t head) {
    size_t i;
    FUZZ_CHECK(a->version_minor == b->version_minor);
    FUZZ_CHECK(a->content_length == b->content_length);
    FUZZ_CHECK(a->chunked == b->chunked && a->close_delimited == b->close_delimited);
    FUZZ_CHECK(a->keep_alive == b->keep_alive && a->upgrade == b->upgrade);
    FUZZ_CHECK(a->expect_continue == b->expect_continue);
    FUZZ_CHECK(a->num_headers == b->num_headers && a->num_headers <= MAXH);
    FUZZ_CHECK(a->host_len == b->host_len);
    FUZZ_CHECK(!a->host == !b->host);
    if (a->host) {
        FUZZ_CHECK(inside(a->host, a->host_len, ba, head));
        FUZZ_CHECK(a->host - ba == b->host - bb);
    }
    for (i = 0; i < a->num_headers; i++) {
        const tn_http_header *x = &a->headers[i], *y = &b->headers[i];
        FUZZ_CHECK(x->name_len > 0);
        FUZZ_CHECK(inside(x->name, x->name_len, ba, head) && inside(x->value, x->value_len, ba, head));
        FUZZ_CHECK(x->name - ba == y->name - bb && x->name_len == y->name_len);
        FUZZ_CHECK(x->value - ba == y->value - bb && x->value_len == y->value_len);
    }
}

static int parse_head(int response, const char *buf, size_t len, size_t prev, tn_http_message *m,
                      tn_http_header *h, const char *method) {
    return response ? tn_http_parse_response(buf, len, prev, m, h, MAXH, NULL, method)
                    : tn_http_parse_request(buf, len, prev, m, h, MAXH, NULL);
}

static void fuzz_head(int response, unsigned seed, const uint8_t *data, size_t size) {
    static const char *const methods[] = {"GET", "HEAD", "CONNECT", NULL};
    const char *method = methods[seed % 4u];
    tn_http_header ha[MAXH], hb[MAXH];
    tn_http_message ma, mb;
    size_t at[8], n, k, prev = 0;
    char *whole = copy(data, size), *piece = NULL;
    int a, b = TN_EAGAIN;

    a = parse_head(response, whole, size, 0, &ma, ha, method);
    FUZZ_CHECK(a == TN_EAGAIN || (a > 0 && (size_t)a <= size) || (a < 0 && tn_strerror(a) != NULL));
    FUZZ_CHECK(a != 0);

    /* the same bytes, arriving in pieces */
    n = cuts(seed >> 2, size, at);
    at[n++] = size;
    for (k = 0; k < n && b == TN_EAGAIN; k++) {
        free(piece);
        piece = copy(data, at[k]);
        b = parse_head(response, piece, at[k], prev, &mb, hb, method);
        prev = at[k];
    }
    /* A result reached on a prefix is the whole input's too: an error a
     * prefix proves stays, and a complete head is complete. */
    FUZZ_CHECK(a == b);
    if (a > 0) {
        same_message(&ma, whole, &mb, piece, (size_t)a);
        if (!response) {
            FUZZ_CHECK(inside(ma.method, ma.method_len, whole, (size_t)a) && ma.method_len > 0);
            FUZZ_CHECK(inside(ma.target, ma.target_len, whole, (size_t)a) && ma.target_len > 0);
            FUZZ_CHECK(ma.method_len == mb.method_len && ma.target_len == mb.target_len);
            FUZZ_CHECK(ma.method - whole == mb.method - piece);
        } else {
            FUZZ_CHECK(ma.status >= 100 && ma.status <= 999 && ma.status == mb.status);
            FUZZ_CHECK(inside(ma.reason, ma.reason_len, whole, (size_t)a) && ma.reason_len == mb.reason_len);
        }
    }
    free(piece);
    free(whole);
}

/* Decodes data as a chunked body delivered in the given pieces; the decoded
 * bytes go to out (size bytes at most: decoding only shrinks). Returns the
 * final status: 0 done, TN_EAGAIN wanting more, or the error. */
static int dechunk(const uint8_t *data, size_t size, const size_t *at, size_t n, char *out,
                   size_t *out_len, tn_http_chunked *dec) {
    size_t k, tail = 0, given = 0;
    char *buf = NULL;
    int rc = 0;
    memset(dec, 0, sizeof *dec);
    *out_len = 0;
    for (k = 0; k < n; k++) {
        size_t add = at[k] - given, len = tail + add, got = 0;
        char *nb = (char *)malloc(len ? len : 1); /* exact size, as everywhere */
        FUZZ_CHECK(nb != NULL);
        if (tail) memcpy(nb, buf, tail);
        if (add) memcpy(nb + tail, data + given, add);
        free(buf);
        buf = nb;
        given = at[k];
        rc = tn_http_chunked_decode(dec, buf, len, &got, 1u << 20, NULL);
        if (rc < 0) break;
        FUZZ_CHECK((size_t)rc <= len && got <= (size_t)rc);
        FUZZ_CHECK(*out_len + got <= size);
        memcpy(out + *out_len, buf, got);
        *out_len += got;
        if (dec->done) {
            rc = 0;
            break;
        }
        memmove(buf, buf + rc, len - (size_t)rc); /* keep the unconsumed tail */
        tail = len - (size_t)rc;
        rc = TN_EAGAIN;
    }
    free(buf);
    return rc;
}

static void fuzz_chunked(unsigned seed, const uint8_t *data, size_t size) {
    size_t one[1], at[8], n, la, lb;
    char *oa = (char *)malloc(size ? size : 1), *ob = (char *)malloc(size ? size : 1);
    tn_http_chunked da, db;
    int a, b;
    FUZZ_CHECK(oa && ob);
    one[0] = size;
    a = dechunk(data, size, one, 1, oa, &la, &da);
    n = cuts(seed >> 2, size, at);
    at[n++] = size;
    b = dechunk(data, size, at, n, ob, &lb, &db);
    FUZZ_CHECK(a == b);
    FUZZ_CHECK(a == 0 || a == TN_EAGAIN || tn_strerror(a) != NULL);
    if (a != TN_EAGAIN && a < 0) {
        /* the same error, perhaps after less output in one of them */
    } else {
        FUZZ_CHECK(la == lb && memcmp(oa, ob, la) == 0);
        FUZZ_CHECK(da.body_len == db.body_len && da.num_trailers == db.num_trailers);
        if (a == 0) FUZZ_CHECK(da.body_len == la);
    }
    free(oa);
    free(ob);
}

#ifdef __cplusplus
extern "C"
#endif
    int
    LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned sel;
    if (size < 1) return 0;
    sel = data[0];
    data++;
    size--;
    switch (sel % 3u) {
    case 0: fuzz_head(0, sel, data, size); break;
    case 1: fuzz_head(1, sel, data, size); break;
    default: fuzz_chunked(sel, data, size); break;
    }
    return 0;
}
