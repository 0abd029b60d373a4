/* crawler: Tornado's web-spider demo in C. A queue and N concurrent worker
 * coroutines crawl every page linked under a base URL, once each, and print
 * each URL with its status.
 *
 *   crawler [-n WORKERS] [--cacert FILE] BASE_URL   e.g. crawler http://127.0.0.1:8888/site/
 *
 * (examples/httpbin serves a small linked site under /site/, over HTTPS
 * too with --tls-cert and --tls-key.) https:// needs a TLS build (make
 * builds it with OpenSSL when libssl-dev is there); --cacert FILE: the CA
 * to trust instead of the system's. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORKERS 64

/* The set of URLs seen: open addressing over owned strings. */
struct set {
    char **slots;
    size_t cap, n;
};
static unsigned long hash(const char *s) {
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}
/* Adds s (copied); returns 1 if it was new, 0 if present, -1 on no memory. */
static int set_add(struct set *st, const char *s) {
    size_t i;
    if (st->n * 2 >= st->cap) {
        struct set bigger = {0, 0, 0};
        bigger.cap = st->cap ? st->cap * 2 : 64;
        bigger.slots = calloc(bigger.cap, sizeof(char *));
        if (!bigger.slots) return -1;
        for (i = 0; i < st->cap; i++)
            if (st->slots[i]) {
                size_t j = hash(st->slots[i]) % bigger.cap;
                while (bigger.slots[j]) j = (j + 1) % bigger.cap;
                bigger.slots[j] = st->slots[i];
                bigger.n++;
            }
        free(st->slots);
        *st = bigger;
    }
    for (i = hash(s) % st->cap; st->slots[i]; i = (i + 1) % st->cap)
        if (strcmp(st->slots[i], s) == 0) return 0;
    if (!(st->slots[i] = strdup(s))) return -1;
    st->n++;
    return 1;
}

struct crawl {
    tn_loop *loop;
    tn_http_client *client;
    tn_queue *q;
    struct set seen;
    const char *base;
    size_t base_len;
    int failures;
};

/* Makes href absolute against the page it was found on; NULL if it is not
 * under the base (so not another scheme either). The result is malloc'd. */
static char *absolute(const struct crawl *c, const char *page, const char *href, size_t n) {
    char *out = malloc(strlen(page) + n + 2), *hash_mark;
    const char *host = strstr(page, "://"); /* the page's scheme://host ends at the next '/' */
    host = host ? host + 3 : page;
    if (!out) return NULL;
    if ((n >= 7 && strncmp(href, "http://", 7) == 0) || (n >= 8 && strncmp(href, "https://", 8) == 0)) {
        memcpy(out, href, n);
        out[n] = 0;
    } else if (n && href[0] == '/') { /* scheme://host of the page + path */
        const char *p = strchr(host, '/');
        size_t hl = p ? (size_t)(p - page) : strlen(page);
        memcpy(out, page, hl);
        memcpy(out + hl, href, n);
        out[hl + n] = 0;
    } else { /* relative to the page's directory */
        const char *slash = strrchr(host, '/');
        size_t dl = slash ? (size_t)(slash - page) + 1 : strlen(page);
        memcpy(out, page, dl);
        memcpy(out + dl, href, n);
        out[dl + n] = 0;
    }
    if ((hash_mark = strchr(out, '#')) != NULL) *hash_mark = 0;
    if (strncmp(out, c->base, c->base_len) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* Queues every href="..." in body that is new and under the base. */
static void queue_links(struct crawl *c, const char *page, const char *body) {
    const char *p = body;
    while ((p = strstr(p, "href=\"")) != NULL) {
        const char *start = p + 6, *end = strchr(start, '"');
        char *url;
        if (!end) break;
        url = absolute(c, page, start, (size_t)(end - start));
        if (url && set_add(&c->seen, url) == 1 && tn_queue_try_put(c->q, url) == 0) url = NULL;
        free(url);
        p = end;
    }
}

struct worker {
    tn_co co;
    struct crawl *c;
    char *url;
};

static int worker(tn_co *co) {
    struct worker *w = (struct worker *)co;
    TN_BEGIN(co);
    for (;;) {
        TN_AWAIT(co, tn_queue_get(w->c->q));
        w->url = co->value;
        if (co->err || !w->url) break; /* NULL is the signal to stop */
        TN_AWAIT(co, tn_http_fetch(w->c->client, w->url, NULL));
        if (co->err) {
            printf("ERR %s (%s)\n", w->url, tn_strerror(co->err));
            w->c->failures++;
        } else {
            tn_http_response *r = (tn_http_response *)co->value;
            printf("%d %s\n", r->status, w->url);
            if (r->status == 200) queue_links(w->c, r->effective_url, r->body);
            tn_http_response_free(r);
        }
        free(w->url);
        w->url = NULL;
        tn_queue_task_done(w->c->q);
    }
    TN_END(co);
}

struct main_frame {
    tn_co co;
    struct crawl *c;
    int nworkers, i;
    tn_future *workers[MAX_WORKERS];
};

static int crawl_main(tn_co *co) {
    struct main_frame *m = (struct main_frame *)co;
    TN_BEGIN(co);
    set_add(&m->c->seen, m->c->base);
    tn_queue_try_put(m->c->q, strdup(m->c->base));
    for (m->i = 0; m->i < m->nworkers; m->i++) {
        struct worker *w = TN_CO_NEW(co->loop, struct worker);
        if (w) w->c = m->c;
        m->workers[m->i] = tn_spawn(co->loop, (tn_co *)w, worker);
    }
    TN_AWAIT(co, tn_with_timeout(co->loop, tn_queue_join(m->c->q), 300000));
    if (co->err) fprintf(stderr, "crawler: %s\n", tn_strerror(co->err));
    for (m->i = 0; m->i < m->nworkers; m->i++) tn_queue_try_put(m->c->q, NULL);
    TN_AWAIT(co, tn_all(co->loop, m->workers, (size_t)m->nworkers, NULL));
    TN_END(co);
}

int main(int argc, char **argv) {
    struct crawl c;
    struct main_frame m;
    tn_http_client_opts copts;
    const char *cacert = NULL;
    size_t i;
    int arg = 1, err;
    memset(&c, 0, sizeof c);
    memset(&m, 0, sizeof m);
    memset(&copts, 0, sizeof copts);
    m.nworkers = 10;
    for (; arg + 1 < argc; arg += 2) {
        if (strcmp(argv[arg], "-n") == 0) m.nworkers = atoi(argv[arg + 1]);
        else if (strcmp(argv[arg], "--cacert") == 0) cacert = argv[arg + 1];
        else break;
    }
    if (arg != argc - 1 || m.nworkers < 1 || m.nworkers > MAX_WORKERS) {
        fprintf(stderr, "usage: crawler [-n WORKERS(1..%d)] [--cacert FILE] BASE_URL\n", MAX_WORKERS);
        return 2;
    }
    if (cacert) {
#if defined(TN_TLS_OPENSSL) || defined(TN_TLS_MBEDTLS)
        tn_tls_opts t;
        memset(&t, 0, sizeof t);
        t.ca_file = cacert;
        if ((err = tn_tls_client_ctx_new(&t, &copts.tls)) != 0) {
            fprintf(stderr, "crawler: --cacert %s: %s\n", cacert, tn_strerror(err));
            return 2;
        }
#else
        fprintf(stderr, "crawler: built without TLS (see the Makefile)\n");
        return 2;
#endif
    }
    c.base = argv[arg];
    c.base_len = strlen(c.base);
    if (tn_loop_new(&c.loop, NULL) || tn_http_client_new(c.loop, &copts, &c.client) ||
        !(c.q = tn_queue_new(c.loop, 0)))
        return 1;
#if defined(TN_TLS_OPENSSL) || defined(TN_TLS_MBEDTLS)
    tn_tls_ctx_free(copts.tls); /* the client holds its reference (NULL: nothing) */
#endif
    m.c = &c;
    err = tn_run_sync(c.loop, tn_spawn(c.loop, &m.co, crawl_main), 0, NULL);
    printf("crawled %zu URLs, %d failed\n", c.seen.n, c.failures);
    tn_queue_free(c.q);
    tn_http_client_free(c.client);
    tn_loop_free(c.loop);
    for (i = 0; i < c.seen.cap; i++) free(c.seen.slots[i]);
    free(c.seen.slots);
    return err || c.failures ? 1 : 0;
}
