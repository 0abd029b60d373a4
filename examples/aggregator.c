/* aggregator: one answer from several upstreams, fetched at once; the slow
 * and the broken ones cost their timeout, never the whole answer.
 *
 *   aggregator [--port P] --upstream URL [--upstream URL ...] [--timeout MS]
 *
 *   GET /   {"upstreams": [{"url": U, "ok": true, "status": 200, "body": "..."},
 *                          {"url": U, "ok": false, "error": "timed out"}, ...],
 *            "elapsed_ms": N, "partial": true}
 *
 * Every upstream is fetched concurrently (tn_http_fetch), each under its
 * own tn_with_timeout (MS, 1000 by default), and the fetches are gathered
 * with tn_all_settled: every outcome is kept, failures included, where
 * tn_all would give up at the first. An upstream is ok when it answered
 * 2xx; one that answered otherwise keeps its status and body. partial is
 * true when any is not ok; the status is 200 when at least one is, else
 * 502. A body that is not UTF-8 is given as null (JSON strings are text).
 * If our own client leaves, the fetches still under way are cancelled. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_UPSTREAMS 32

struct app {
    tn_http_client *client;
    const char *urls[MAX_UPSTREAMS];
    int n;
    unsigned timeout_ms;
};

/* JSON out, into a growing malloc'd buffer (NULL once out of memory). */
struct out {
    char *p;
    size_t len, cap;
};
static int out_room(struct out *o, size_t n) {
    char *np;
    size_t cap;
    if (!o->p && o->cap) return 0;
    if (o->len + n + 1 <= o->cap) return 1;
    for (cap = o->cap ? o->cap * 2 : 1024; cap < o->len + n + 1; cap *= 2) {}
    if (!(np = (char *)realloc(o->p, cap))) {
        free(o->p);
        o->p = NULL;
        return 0;
    }
    o->p = np;
    o->cap = cap;
    return 1;
}
static void out_put(struct out *o, const char *s) {
    size_t n = strlen(s);
    if (!out_room(o, n)) return;
    memcpy(o->p + o->len, s, n + 1);
    o->len += n;
}
static void out_str(struct out *o, const char *s, size_t n) {
    size_t need = tn_json_escape(NULL, 0, s, n);
    if (!out_room(o, need)) return;
    tn_json_escape(o->p + o->len, need + 1, s, n);
    o->len += need;
}

/* Whether s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0, k, need;
    while (i < n) {
        unsigned long cp = s[i], min;
        if (cp < 0x80) {
            i++;
            continue;
        }
        if (cp < 0xc2 || cp > 0xf4) return 0; /* a stray continuation, an overlong lead, past U+10FFFF */
        need = cp >= 0xf0 ? 3 : cp >= 0xe0 ? 2 : 1;
        min = need == 3 ? 0x10000 : need == 2 ? 0x800 : 0x80;
        cp &= 0x3fu >> need;
        if (n - i <= need) return 0;
        for (k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += need + 1;
    }
    return 1;
}

/* One upstream's entry; returns whether it was ok. */
static int render_one(struct out *o, const char *url, const tn_settled *s) {
    const tn_http_response *r = (const tn_http_response *)s->value;
    int ok = !s->err && r->status >= 200 && r->status < 300;
    char num[32];
    out_put(o, "{\"url\":");
    out_str(o, url, strlen(url));
    out_put(o, ok ? ",\"ok\":true" : ",\"ok\":false");
    if (s->err) {
        out_put(o, ",\"error\":");
        out_str(o, tn_strerror(s->err), strlen(tn_strerror(s->err)));
    } else {
        snprintf(num, sizeof num, ",\"status\":%d,\"body\":", r->status);
        out_put(o, num);
        if (utf8_valid((const unsigned char *)r->body, r->body_len)) out_str(o, r->body, r->body_len);
        else out_put(o, "null");
    }
    out_put(o, "}");
    return ok;
}

struct gather_frame {
    tn_http_co h;
    uint64_t start;
    tn_future *fs[MAX_UPSTREAMS];
    tn_settled results[MAX_UPSTREAMS];
};

static int gather(tn_co *co) {
    struct gather_frame *f = (struct gather_frame *)co;
    struct app *a = (struct app *)f->h.arg;
    struct out o = {NULL, 0, 0};
    char tail[96];
    int i, oks = 0;
    TN_BEGIN(co);
    f->start = tn_time_ms(co->loop);
    for (i = 0; i < a->n; i++) {
        tn_http_fetch_opts opts = {0};
        opts.max_body_bytes = 1024 * 1024;
        f->fs[i] = tn_with_timeout(co->loop, tn_http_fetch(a->client, a->urls[i], &opts), a->timeout_ms);
        if (!f->fs[i]) { /* out of memory: give up on all of them */
            while (i--) {
                tn_future_cancel(f->fs[i]);
                tn_future_release(f->fs[i]);
            }
            tn_http_respond(f->h.req, 503, NULL, "out of memory\n", 14);
            TN_RETURN(co, NULL);
        }
    }
    TN_AWAIT(co, tn_all_settled(co->loop, f->fs, (size_t)a->n, f->results));
    if (co->err) TN_FAIL(co, co->err); /* cancelled: our client left (the fetches are cancelled) */
    out_put(&o, "{\"upstreams\":[");
    for (i = 0; i < a->n; i++) {
        if (i) out_put(&o, ",");
        oks += render_one(&o, a->urls[i], &f->results[i]);
        if (!f->results[i].err) tn_http_response_free(f->results[i].value);
    }
    snprintf(tail, sizeof tail, "],\"elapsed_ms\":%llu,\"partial\":%s}",
             (unsigned long long)(tn_time_ms(co->loop) - f->start), oks < a->n ? "true" : "false");
    out_put(&o, tail);
    if (!o.p) tn_http_respond(f->h.req, 503, NULL, "out of memory\n", 14);
    else tn_http_respond_ref(f->h.req, oks ? 200 : 502, "application/json", o.p, o.len, free, o.p);
    TN_END(co);
}

static tn_http_server *server;
static void on_signal(tn_loop *loop, int signo, void *arg) {
    (void)signo;
    (void)arg;
    tn_future_release(tn_http_server_shutdown(server, 5000));
    tn_loop_stop(loop);
}

int main(int argc, char **argv) {
    tn_loop *loop;
    struct app a;
    tn_http_client_opts co = {0};
    tn_http_route_opts ro = {0};
    int port = 8888, i, rc;
    memset(&a, 0, sizeof a);
    a.timeout_ms = 1000;
    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--timeout") == 0) a.timeout_ms = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--upstream") == 0 && a.n < MAX_UPSTREAMS) a.urls[a.n++] = argv[i + 1];
        else break;
    }
    if (i < argc || !a.n || !a.timeout_ms) {
        fprintf(stderr, "usage: aggregator [--port P] --upstream URL [--upstream URL ...] (at most %d) [--timeout MS]\n",
                MAX_UPSTREAMS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    co.max_clients = MAX_UPSTREAMS; /* per host:port: upstreams may share one */
    ro.frame_size = sizeof(struct gather_frame);
    if (tn_loop_new(&loop, NULL) || tn_http_client_new(loop, &co, &a.client) ||
        tn_http_server_new(loop, NULL, &server) || tn_http_route_co(server, "GET", "/", gather, &a, &ro))
        return 1;
    if ((rc = tn_http_listen(server, "127.0.0.1", port)) != 0) {
        fprintf(stderr, "aggregator: listen on port %d: %s\n", port, tn_strerror(rc));
        return 1;
    }
    tn_signal_add(loop, SIGINT, on_signal, NULL);
    tn_signal_add(loop, SIGTERM, on_signal, NULL);
    printf("listening on http://127.0.0.1:%d\n", tn_http_server_port(server));
    fflush(stdout);
    tn_loop_run(loop);
    while (tn_http_server_connections(server)) tn_loop_step(loop, 100);
    tn_http_server_free(server);
    tn_http_client_free(a.client);
    tn_loop_free(loop);
    return 0;
}
